//! Reading export files: opens a path or stdin, once ([`InputSource::open`]: a regular file
//! is then read by position, anything else kept as the stream it is), undoes gzip, decodes
//! the text encoding (UTF-8 by default, a byte-order mark skipped), picks CSV or JSONL and
//! the CSV delimiter, and streams records one at a time with the physical line each one
//! starts on.
//!
//! Nothing here knows about Kustomer: a record is a set of named source fields
//! ([`SourceRecord`]) or a reason it could not be read ([`RecordError`]). Readers never
//! hold more than the record being parsed, and never more of it than the size limit
//! ([`DEFAULT_MAX_RECORD_SIZE`], `--max-record-size`): a longer record is refused as soon
//! as it passes the limit and the rest of it read and dropped, so an input of any size, or
//! one that never ends, uses the same memory.

mod csv;
mod jsonl;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use std::sync::Arc;

use serde_json::{Map, Value};

pub use self::csv::CsvRecords;
#[cfg(test)]
pub(crate) use self::jsonl::read_line;
pub use self::jsonl::{ItemFlaw, JsonlRecords, NestedLists, THREAD_MARKER};

/// The two export formats we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    Csv,
    Jsonl,
}

impl InputFormat {
    /// The format a file name implies (`.csv`, `.jsonl`, `.ndjson`, each maybe `.gz`).
    pub fn from_path(path: &str) -> Option<InputFormat> {
        let lower = path.to_ascii_lowercase();
        let stem = lower.strip_suffix(".gz").unwrap_or(&lower);
        if stem.ends_with(".csv") || stem.ends_with(".tsv") || stem.ends_with(".txt") {
            Some(InputFormat::Csv)
        } else if stem.ends_with(".jsonl") || stem.ends_with(".ndjson") || stem.ends_with(".json") {
            Some(InputFormat::Jsonl)
        } else {
            None
        }
    }
}

/// How to read the text of an export: `--delimiter`, `--encoding`, or a mapping file's
/// `[csv]` section. None means the default: the delimiter sniffed from the header line,
/// UTF-8 (or UTF-16 when a byte-order mark says so).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CsvSettings {
    pub delimiter: Option<u8>,
    pub encoding: Option<&'static encoding_rs::Encoding>,
}

impl CsvSettings {
    /// These settings, with the other's filling what these leave unset.
    pub fn or(self, other: CsvSettings) -> CsvSettings {
        CsvSettings {
            delimiter: self.delimiter.or(other.delimiter),
            encoding: self.encoding.or(other.encoding),
        }
    }
}

/// The longest record read by default, in bytes: a CSV record (which may span lines inside
/// quotes) or a JSONL line. Rows of a help-desk export are a few hundred bytes; a record of
/// megabytes is a broken quote or not an export at all.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 4 << 20;

/// A reader's buffer larger than this after a long record is given back, not kept for the
/// rest of the input.
const KEPT_BUFFER: usize = 1 << 20;

/// How much of a record refused for its size is kept for the errors file.
const PREVIEW_BYTES: usize = 256;

/// The delimiters sniffed from a header line, in order of preference on a tie.
const SNIFFED_DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// A delimiter as a user writes it: one ASCII character, or `tab` / `\t`.
pub fn parse_delimiter(text: &str) -> Result<u8, String> {
    match text {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if text.len() == 1 && text.is_ascii() && !matches!(text, "\"" | "\n" | "\r") => {
            Ok(text.as_bytes()[0])
        }
        _ => Err(format!(
            "{text:?} is not a delimiter: give one character such as , ; | or tab"
        )),
    }
}

/// An encoding by its WHATWG label (`windows-1252`, `latin1`, `iso-8859-15`, `utf-16le`, ...).
pub fn parse_encoding(label: &str) -> Result<&'static encoding_rs::Encoding, String> {
    encoding_rs::Encoding::for_label(label.trim().as_bytes())
        .filter(|encoding| *encoding != encoding_rs::REPLACEMENT)
        .ok_or_else(|| {
            format!(
                "{label:?} is not an encoding this tool knows; try utf-8, windows-1252, \
                 iso-8859-15, utf-16le (see the WHATWG Encoding Standard for every label)"
            )
        })
}

/// The delimiter a header line uses: the candidate seen most often outside quotes.
pub fn sniff_delimiter(header_line: &[u8]) -> u8 {
    let mut counts = [0usize; SNIFFED_DELIMITERS.len()];
    let mut quoted = false;
    for &byte in header_line {
        if byte == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(index) = SNIFFED_DELIMITERS.iter().position(|&d| d == byte) {
            counts[index] += 1;
        }
    }
    let best = (0..counts.len())
        .rev()
        .max_by_key(|&index| counts[index])
        .filter(|&index| counts[index] > 0)
        .unwrap_or(0);
    SNIFFED_DELIMITERS[best]
}

/// Where one input comes from, as the user named it (`-` is stdin), and how to read it.
#[derive(Clone, Debug)]
pub struct InputSource {
    pub name: String,
    pub format: InputFormat,
    pub settings: CsvSettings,
    /// The longest record read, in bytes; a longer one is refused.
    pub max_record_size: usize,
}

/// Why an input could not be opened at all (the run stops with exit 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{name}: cannot open: {source}")]
    Open { name: String, source: io::Error },
    #[error("{name}: cannot tell the format from the name; use --format csv|jsonl")]
    UnknownFormat { name: String },
    #[error("{name}: cannot read the CSV header: {reason}")]
    Header { name: String, reason: String },
    #[error(
        "{name}: cannot copy it to TMPDIR (TMPDIR chooses another place), where a stream \
         is kept to be read twice: {source}"
    )]
    Spool { name: String, source: io::Error },
    #[error("{name}: read failed at line {line}: {source}")]
    Read {
        name: String,
        line: u64,
        source: io::Error,
    },
}

impl InputSource {
    /// Names an input; `format` overrides what the extension says.
    pub fn new(
        name: &str,
        format: Option<InputFormat>,
        settings: CsvSettings,
    ) -> Result<InputSource, InputError> {
        let format = format
            .or_else(|| InputFormat::from_path(name))
            .ok_or_else(|| InputError::UnknownFormat {
                name: name.to_string(),
            })?;
        Ok(InputSource {
            name: name.to_string(),
            format,
            settings,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
        })
    }

    /// The same input with another size limit (at least one byte).
    pub fn with_max_record_size(self, max_record_size: usize) -> InputSource {
        InputSource {
            max_record_size: max_record_size.max(1),
            ..self
        }
    }

    /// Opens the input: the one time a run opens it. A regular file is read by position
    /// from then on, so reading its header here (and counting its lines for the progress
    /// bar) leaves it unread; anything else (stdin for `-`, a pipe such as `<(...)`'s
    /// `/dev/fd/N`, a FIFO, a device) can be read once only, so its stream is kept, past
    /// its CSV header. Opening a FIFO waits for a writer.
    pub fn open(self) -> Result<OpenInput, InputError> {
        if self.name == "-" {
            return self.streamed(Box::new(io::stdin()));
        }
        let path = Path::new(&self.name);
        if std::fs::metadata(path).is_ok_and(|meta| meta.file_type().is_fifo()) {
            tracing::info!(
                "{}: a FIFO or a pipe: waiting for a writer if it has none",
                self.name
            );
        }
        let file = File::open(path).map_err(|source| InputError::Open {
            name: self.name.clone(),
            source,
        })?;
        if !file.metadata().is_ok_and(|meta| meta.is_file()) {
            return self.streamed(Box::new(file));
        }
        self.positioned(file)
    }

    /// Opens the input so that it can be read more than once ([`OpenInput::records_again`]):
    /// a regular file as [`InputSource::open`] opens it; anything else (stdin, a pipe, a
    /// FIFO) is first copied whole, as its raw bytes, to an unnamed file in TMPDIR (gone
    /// when the run ends), which is then read by position under the input's own name.
    pub fn open_rereadable(self) -> Result<OpenInput, InputError> {
        let regular = self.name != "-"
            && std::fs::metadata(&self.name).is_ok_and(|meta| meta.file_type().is_file());
        if regular {
            return self.open();
        }
        let spool = |source: io::Error| InputError::Spool {
            name: self.name.clone(),
            source,
        };
        let mut copy = tempfile::tempfile().map_err(spool)?;
        if self.name == "-" {
            io::copy(&mut io::stdin().lock(), &mut copy).map_err(spool)?;
        } else {
            let mut stream = File::open(&self.name).map_err(|source| InputError::Open {
                name: self.name.clone(),
                source,
            })?;
            io::copy(&mut stream, &mut copy).map_err(spool)?;
        }
        tracing::info!(
            "{}: read whole into TMPDIR first, since a stream can be read only once",
            self.name
        );
        self.positioned(copy)
    }

    /// A regular file, read by position from now on (its CSV header read here).
    fn positioned(self, file: File) -> Result<OpenInput, InputError> {
        let file = Arc::new(file);
        let headers = match self.format {
            InputFormat::Csv => self
                .records_from(Box::new(ReadAt::start(&file)))?
                .csv_headers()
                .cloned(),
            InputFormat::Jsonl => None,
        };
        Ok(OpenInput {
            source: self,
            headers,
            body: Body::File(file),
        })
    }

    /// An input read as a stream, once: its records from now on.
    fn streamed(self, raw: Box<dyn Read + Send>) -> Result<OpenInput, InputError> {
        let records = self.records_from(raw)?;
        Ok(OpenInput {
            headers: records.csv_headers().cloned(),
            source: self,
            body: Body::Stream(Box::new(records)),
        })
    }

    /// The text of the raw bytes, as UTF-8: gunzipped (all members) when the name ends in
    /// `.gz`; decoded from the encoding of the settings, or from UTF-16 when a byte-order
    /// mark says so. A UTF-8 byte-order mark is dropped; bytes that are not UTF-8 in a
    /// UTF-8 input pass through, for the reader to report.
    fn decoded(&self, raw: Box<dyn Read + Send>) -> Box<dyn BufRead + Send> {
        let raw = BufReader::with_capacity(256 * 1024, raw);
        let bytes: Box<dyn Read + Send> = if self.name.to_ascii_lowercase().ends_with(".gz") {
            Box::new(flate2::bufread::MultiGzDecoder::new(raw))
        } else {
            Box::new(raw)
        };
        let decoded = encoding_rs_io::DecodeReaderBytesBuilder::new()
            .encoding(self.settings.encoding)
            .utf8_passthru(true)
            .strip_bom(true)
            .bom_override(true)
            .build(bytes);
        Box::new(BufReader::with_capacity(256 * 1024, decoded))
    }

    /// The records of the raw bytes, in order (a CSV input's header read).
    fn records_from(&self, raw: Box<dyn Read + Send>) -> Result<Records, InputError> {
        let mut reader = self.decoded(raw);
        let max = self.max_record_size;
        Ok(match self.format {
            InputFormat::Csv => {
                let delimiter = match self.settings.delimiter {
                    Some(delimiter) => delimiter,
                    None => {
                        // The header line is read whole (a decoder may hand over its first
                        // bytes alone), sniffed, then put back in front of the rest. No
                        // further than the size limit: the header is a record too.
                        let mut header = Vec::new();
                        let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
                        (&mut reader)
                            .take(limit)
                            .read_until(b'\n', &mut header)
                            .map_err(|source| InputError::Read {
                                name: self.name.clone(),
                                line: 1,
                                source,
                            })?;
                        let delimiter = sniff_delimiter(&header);
                        reader = Box::new(io::Cursor::new(header).chain(reader));
                        delimiter
                    }
                };
                Records::Csv(CsvRecords::new(&self.name, reader, delimiter, max)?)
            }
            InputFormat::Jsonl => Records::Jsonl(JsonlRecords::new(&self.name, reader, max)),
        })
    }
}

/// An input opened (see [`InputSource::open`]), waiting for its turn to be read.
pub struct OpenInput {
    source: InputSource,
    /// The CSV header, as read when the input was opened; None for JSONL.
    headers: Option<Arc<Vec<String>>>,
    body: Body,
}

/// What an opened input reads from.
enum Body {
    /// A regular file, read by position: nothing has moved its offset.
    File(Arc<File>),
    /// A stream that can be read once, its CSV header read. Boxed: readers are large,
    /// and a run holds an open input for each of its files.
    Stream(Box<Records>),
}

impl OpenInput {
    /// The name the user gave it.
    pub fn name(&self) -> &str {
        &self.source.name
    }

    /// The CSV header row (trimmed); None for JSONL.
    pub fn csv_headers(&self) -> Option<&Arc<Vec<String>>> {
        self.headers.as_ref()
    }

    /// About how many records a plain file holds (its line count, less the CSV header),
    /// for the progress bar, counted by position in the same open file; None for a stream
    /// and for gzip, which cannot be read twice cheaply. A quoted field with newlines
    /// makes it an overestimate.
    pub fn estimate_records(&self) -> Option<u64> {
        let Body::File(file) = &self.body else {
            return None;
        };
        if self.source.name.to_ascii_lowercase().ends_with(".gz") {
            return None;
        }
        let mut file = ReadAt::start(file);
        let mut buffer = vec![0; 1 << 20];
        let (mut lines, mut last) = (0u64, b'\n');
        loop {
            let read = file.read(&mut buffer).ok()?;
            if read == 0 {
                break;
            }
            lines += memchr::memchr_iter(b'\n', &buffer[..read]).count() as u64;
            last = buffer[read - 1];
        }
        lines += u64::from(last != b'\n');
        Some(match self.source.format {
            InputFormat::Csv => lines.saturating_sub(1),
            InputFormat::Jsonl => lines,
        })
    }

    /// Its records from its start, leaving it to be read again; None for a stream, which
    /// can be read once only (see [`InputSource::open_rereadable`]).
    pub fn records_again(&self) -> Option<Result<Records, InputError>> {
        match &self.body {
            Body::File(file) => Some(self.source.records_from(Box::new(ReadAt::start(file)))),
            Body::Stream(_) => None,
        }
    }

    /// Its records, in order: a file's from its start, a stream's from after its header.
    pub fn into_records(self) -> Result<Records, InputError> {
        match self.body {
            Body::File(file) => self.source.records_from(Box::new(ReadAt::start(&file))),
            Body::Stream(records) => Ok(*records),
        }
    }
}

/// Reads a file by position (pread), from the start, leaving its descriptor's offset
/// alone: the header check, the line count and the records each read the one open file.
struct ReadAt {
    file: Arc<File>,
    offset: u64,
}

impl ReadAt {
    fn start(file: &Arc<File>) -> ReadAt {
        ReadAt {
            file: Arc::clone(file),
            offset: 0,
        }
    }
}

impl Read for ReadAt {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buffer, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

/// The fields of one input record, as the source named them.
#[derive(Clone, Debug)]
pub enum SourceFields {
    /// A CSV record: values in the order of the file's header, in one buffer.
    Csv {
        headers: Arc<Vec<String>>,
        values: CsvValues,
    },
    /// A JSONL object, as parsed.
    Json(Map<String, Value>),
}

impl SourceFields {
    /// The record as one JSON object (header -> value for CSV), for the errors file.
    pub fn to_json(&self) -> Value {
        match self {
            SourceFields::Csv { headers, values } => {
                let mut object = Map::new();
                for (index, value) in values.iter().enumerate() {
                    let name = headers
                        .get(index)
                        .cloned()
                        .unwrap_or_else(|| format!("column {}", index + 1));
                    object.insert(name, Value::String(value.to_string()));
                }
                Value::Object(object)
            }
            SourceFields::Json(object) => Value::Object(object.clone()),
        }
    }
}

/// The values of one CSV record: their text end to end, checked UTF-8 once, and where
/// each one ends. Two allocations a record, whatever its width (rows are many).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsvValues {
    text: String,
    ends: Box<[usize]>,
}

impl CsvValues {
    /// The values whose bytes are `bytes`, ending at `ends`; else the index of the first
    /// value that is not UTF-8.
    fn from_parts(bytes: &[u8], ends: &[usize]) -> Result<CsvValues, usize> {
        let first_bad = |at: usize| ends.partition_point(|&end| end <= at);
        let text = std::str::from_utf8(bytes).map_err(|error| first_bad(error.valid_up_to()))?;
        // Valid as a whole, a record may still split a character between two values.
        if let Some(&end) = ends.iter().find(|&&end| !text.is_char_boundary(end)) {
            return Err(first_bad(end - 1));
        }
        Ok(CsvValues {
            text: text.to_string(),
            ends: ends.into(),
        })
    }

    /// The value at `index`, if the record has one there.
    pub fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)?;
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        Some(&self.text[start..end])
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The values in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).filter_map(|index| self.get(index))
    }
}

impl<T: AsRef<str>> FromIterator<T> for CsvValues {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> CsvValues {
        let (mut text, mut ends) = (String::new(), Vec::new());
        for value in values {
            text.push_str(value.as_ref());
            ends.push(text.len());
        }
        CsvValues {
            text,
            ends: ends.into(),
        }
    }
}

impl<T: AsRef<str>> From<Vec<T>> for CsvValues {
    fn from(values: Vec<T>) -> CsvValues {
        values.into_iter().collect()
    }
}

/// One record read from an input, with the physical line it starts on (1-based).
#[derive(Clone, Debug)]
pub struct SourceRecord {
    pub line: u64,
    pub fields: SourceFields,
    /// The thread lists of a JSONL line read by a mapping that reads a nested thread
    /// ([`JsonlRecords::capture_threads`]), kept as the line's text; their places in
    /// `fields` hold [`THREAD_MARKER`]. None for every other record.
    pub threads: Option<NestedLists>,
}

/// A record that could not be read as a record (wrong field count, not an object, ...).
/// The run records it as failed and goes on.
#[derive(Clone, Debug)]
pub struct RecordError {
    pub line: u64,
    /// The source field at fault (a CSV column, a JSON key path), when one is.
    pub field: Option<String>,
    /// The rule it broke, a short phrase to count refusals by.
    pub rule: &'static str,
    pub reason: String,
    /// What was read of it, kept for the errors file.
    pub raw: Value,
}

impl RecordError {
    /// A record that is not a record as a whole (`reason` follows "the record").
    fn whole(line: u64, reason: String, raw: Value) -> RecordError {
        RecordError {
            line,
            field: None,
            rule: "unreadable record",
            reason,
            raw,
        }
    }

    /// A record refused for what one of its fields holds.
    fn in_field(
        line: u64,
        field: String,
        rule: &'static str,
        reason: String,
        raw: Value,
    ) -> RecordError {
        RecordError {
            line,
            field: Some(field),
            rule,
            reason,
            raw,
        }
    }
}

/// A record that passed the size limit: where it starts, how long it was found to be, and
/// its first bytes. Both readers refuse it as soon as it passes the limit, then read the
/// rest of it into nothing.
#[derive(Clone, Debug)]
struct Oversized {
    line: u64,
    /// Bytes read of it so far (the whole record once it has been skipped to its end).
    size: u64,
    /// Whether it had ended when it was refused (else its rest is skipped).
    ended: bool,
    preview: Value,
}

impl Oversized {
    /// The record error, said at once in the log too: the record may never end.
    fn refusal(&self, name: &str, max_record: usize) -> RecordError {
        if !self.ended {
            tracing::warn!(
                "{name}: line {}: a record longer than {} (--max-record-size) is refused; \
                 reading on to its end",
                self.line,
                size_text(max_record as u64)
            );
        }
        let limit = size_text(max_record as u64);
        // A record refused before its end has no known size yet (it may never end): the
        // log says it once the rest has been read.
        let size = if self.ended {
            format!("{} bytes long, over", self.size)
        } else {
            "longer than".to_string()
        };
        RecordError::whole(
            self.line,
            format!("is {size} the limit of {limit}: raise --max-record-size to read it"),
            self.preview.clone(),
        )
    }

    /// Says how long the refused record turned out to be.
    fn log_end(&self, name: &str, last_line: u64) {
        let lines = if last_line > self.line {
            format!("lines {} to {last_line}", self.line)
        } else {
            format!("line {}", self.line)
        };
        tracing::warn!(
            "{name}: the record refused for its size ({lines}) was {} bytes long",
            self.size
        );
    }
}

/// The first bytes of a record, as text, for the errors file.
fn preview(bytes: &[u8]) -> Value {
    let cut = bytes.len().min(PREVIEW_BYTES);
    let mut text = String::from_utf8_lossy(&bytes[..cut]).into_owned();
    if cut < bytes.len() {
        text.push('…');
    }
    Value::String(text)
}

/// A size as people write it: `4 MiB`, `512 KiB`, or bytes.
fn size_text(bytes: u64) -> String {
    match bytes {
        0 => "0 bytes".into(),
        _ if bytes.is_multiple_of(1 << 30) => format!("{} GiB", bytes >> 30),
        _ if bytes.is_multiple_of(1 << 20) => format!("{} MiB", bytes >> 20),
        _ if bytes.is_multiple_of(1 << 10) => format!("{} KiB", bytes >> 10),
        _ => format!("{bytes} bytes"),
    }
}

/// What a reader yields for each record.
pub type RecordResult = Result<SourceRecord, RecordError>;

/// The records of one input, whichever its format.
pub enum Records {
    Csv(CsvRecords),
    Jsonl(JsonlRecords),
}

impl Records {
    /// The CSV header row (trimmed); None for JSONL.
    pub fn csv_headers(&self) -> Option<&Arc<Vec<String>>> {
        match self {
            Records::Csv(records) => Some(records.headers()),
            Records::Jsonl(_) => None,
        }
    }

    /// Keeps JSONL lines' thread lists as text (see [`JsonlRecords::capture_threads`]); a
    /// CSV record has none.
    pub fn capture_threads(&mut self) {
        if let Records::Jsonl(records) = self {
            records.capture_threads();
        }
    }
}

impl Iterator for Records {
    /// An `Err(InputError)` ends the input: the stream itself failed (I/O, bad gzip).
    type Item = Result<RecordResult, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Records::Csv(records) => records.next(),
            Records::Jsonl(records) => records.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(name: &str, bytes: &[u8]) -> Vec<Result<(u64, Value), (u64, String)>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let source =
            InputSource::new(path.to_str().unwrap(), None, CsvSettings::default()).unwrap();
        source
            .open()
            .and_then(OpenInput::into_records)
            .unwrap()
            .map(|record| match record.unwrap() {
                Ok(record) => Ok((record.line, record.fields.to_json())),
                Err(error) => Err((error.line, error.reason)),
            })
            .collect()
    }

    #[test]
    fn csv_keeps_physical_lines_through_bom_crlf_and_quoted_newlines() {
        let file = "\u{feff}email,subject\r\na@x.io,\"two\r\nlines\r\nhere\"\r\nb@x.io,plain\r\nc@x.io\r\n";
        let records = read_all("t.csv", file.as_bytes());
        assert_eq!(records.len(), 3);
        let (line, first) = records[0].clone().unwrap();
        assert_eq!(line, 2);
        assert_eq!(first["email"], "a@x.io");
        assert_eq!(first["subject"], "two\r\nlines\r\nhere");
        assert_eq!(records[1].clone().unwrap().0, 5);
        assert_eq!(
            records[2],
            Err((6, "has 1 fields, the header has 2".into()))
        );
    }

    #[test]
    fn jsonl_refuses_what_is_not_an_object_and_goes_on() {
        let records = read_all(
            "t.jsonl",
            b"{\"email\":\"a@x.io\"}\n\n[1,2]\nnot json\n{\"email\":\"b@x.io\"}\n",
        );
        assert_eq!(records.len(), 4);
        assert_eq!(records[0].clone().unwrap().0, 1);
        assert_eq!(
            records[1],
            Err((3, "is a JSON array, not an object".into()))
        );
        assert!(matches!(&records[2], Err((4, reason)) if reason.starts_with("is not valid JSON")));
        assert_eq!(records[3].clone().unwrap().0, 5);
    }

    /// One line of `x` that never ends.
    struct Endless;

    impl Read for Endless {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            buffer.fill(b'x');
            Ok(buffer.len())
        }
    }

    #[test]
    fn an_endless_record_is_refused_as_soon_as_it_passes_the_limit() {
        let stream = |start: &'static [u8]| -> Box<dyn BufRead + Send> {
            Box::new(BufReader::new(io::Cursor::new(start).chain(Endless)))
        };
        let limit = 1 << 20;
        let csv = CsvRecords::new("endless.csv", stream(b"a,b\n1,2\n"), b',', limit).unwrap();
        let jsonl = JsonlRecords::new("endless.jsonl", stream(b"{\"a\":1}\n"), limit);
        for mut records in [Records::Csv(csv), Records::Jsonl(jsonl)] {
            let first = records.next().unwrap().unwrap().unwrap();
            let refused = records.next().unwrap().unwrap().unwrap_err();
            let expected_line = first.line + 1;
            assert_eq!(refused.line, expected_line);
            assert_eq!(
                refused.reason,
                "is longer than the limit of 1 MiB: raise --max-record-size to read it"
            );
            // What is kept of it for the errors file is its start, not the megabyte.
            assert_eq!(refused.raw, Value::String(format!("{}…", "x".repeat(256))));
        }
        let header = CsvRecords::new("endless.csv", stream(b""), b',', limit);
        assert!(
            matches!(header, Err(InputError::Header { reason, .. }) if reason.contains("longer than 1 MiB"))
        );
    }

    #[test]
    fn a_record_that_ends_past_the_limit_is_refused_with_its_size_and_reading_goes_on() {
        let long = format!("{{\"subject\":\"{}\"}}", "x".repeat(3000));
        let text = format!("{{\"a\":1}}\n{long}\n{{\"a\":2}}\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, &text).unwrap();
        let source = InputSource::new(path.to_str().unwrap(), None, CsvSettings::default())
            .unwrap()
            .with_max_record_size(2048);
        let records: Vec<_> = source
            .open()
            .and_then(OpenInput::into_records)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(records.len(), 3);
        // The whole file is in the reader's buffer, so the long line's end is seen at once.
        let refused = records[1].as_ref().unwrap_err();
        assert_eq!(refused.line, 2);
        assert_eq!(
            refused.reason,
            format!(
                "is {} bytes long, over the limit of 2 KiB: raise --max-record-size to read it",
                long.len()
            )
        );
        assert_eq!(records[2].as_ref().unwrap().line, 3);
    }

    #[test]
    fn gzip_with_several_members_is_read_whole() {
        let mut bytes = Vec::new();
        for part in ["email\na@x.io\n", "b@x.io\n"] {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(part.as_bytes()).unwrap();
            bytes.extend(encoder.finish().unwrap());
        }
        let records = read_all("t.csv.gz", &bytes);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].clone().unwrap().1["email"], "b@x.io");
    }

    #[test]
    fn the_format_comes_from_the_name() {
        assert_eq!(InputFormat::from_path("x.CSV.gz"), Some(InputFormat::Csv));
        assert_eq!(InputFormat::from_path("x.ndjson"), Some(InputFormat::Jsonl));
        assert!(matches!(
            InputSource::new("-", None, CsvSettings::default()),
            Err(InputError::UnknownFormat { .. })
        ));
        assert!(InputSource::new("-", Some(InputFormat::Csv), CsvSettings::default()).is_ok());
    }
}
