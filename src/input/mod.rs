//! Reading export files: opens a path or stdin, undoes gzip, decodes the text encoding
//! (UTF-8 by default, a byte-order mark skipped), picks CSV or JSONL and the CSV delimiter,
//! and streams records one at a time with the physical line each one starts on.
//!
//! Nothing here knows about Kustomer: a record is a set of named source fields
//! ([`SourceRecord`]) or a reason it could not be read ([`RecordError`]). Readers never
//! hold more than the record being parsed, so a file of any size uses the same memory.

mod csv;
mod jsonl;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use std::sync::Arc;

use serde_json::{Map, Value};

pub use self::csv::CsvRecords;
pub use self::jsonl::JsonlRecords;

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
        })
    }

    /// Opens the text stream, as UTF-8: stdin for `-`, else the file; gzip (all members)
    /// when the name ends in `.gz`; decoded from the encoding of the settings, or from
    /// UTF-16 when a byte-order mark says so. A UTF-8 byte-order mark is dropped; bytes
    /// that are not UTF-8 in a UTF-8 input pass through, for the reader to report.
    pub fn open(&self) -> Result<Box<dyn BufRead + Send>, InputError> {
        let bytes = self.open_bytes()?;
        let decoded = encoding_rs_io::DecodeReaderBytesBuilder::new()
            .encoding(self.settings.encoding)
            .utf8_passthru(true)
            .strip_bom(true)
            .bom_override(true)
            .build(bytes);
        Ok(Box::new(BufReader::with_capacity(256 * 1024, decoded)))
    }

    /// The raw bytes: the file or stdin, gunzipped.
    fn open_bytes(&self) -> Result<Box<dyn Read + Send>, InputError> {
        let raw: Box<dyn Read + Send> = if self.name == "-" {
            Box::new(io::stdin())
        } else {
            let file = File::open(Path::new(&self.name)).map_err(|source| InputError::Open {
                name: self.name.clone(),
                source,
            })?;
            Box::new(file)
        };
        let raw = BufReader::with_capacity(256 * 1024, raw);
        if self.name.to_ascii_lowercase().ends_with(".gz") {
            Ok(Box::new(flate2::bufread::MultiGzDecoder::new(raw)))
        } else {
            Ok(Box::new(raw))
        }
    }

    /// About how many records a plain file holds (its line count, less the CSV header),
    /// for the progress bar; None for stdin and gzip, which cannot be read twice cheaply.
    /// A quoted field with newlines makes it an overestimate.
    pub fn estimate_records(&self) -> Option<u64> {
        if self.name == "-" || self.name.to_ascii_lowercase().ends_with(".gz") {
            return None;
        }
        let mut file = File::open(&self.name).ok()?;
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
        Some(match self.format {
            InputFormat::Csv => lines.saturating_sub(1),
            InputFormat::Jsonl => lines,
        })
    }

    /// Opens the input and returns its records in order.
    pub fn records(&self) -> Result<Records, InputError> {
        let mut reader = self.open()?;
        Ok(match self.format {
            InputFormat::Csv => {
                let delimiter = match self.settings.delimiter {
                    Some(delimiter) => delimiter,
                    None => {
                        // The header line is read whole (a decoder may hand over its first
                        // bytes alone), sniffed, then put back in front of the rest.
                        let mut header = Vec::new();
                        reader.read_until(b'\n', &mut header).map_err(|source| {
                            InputError::Read {
                                name: self.name.clone(),
                                line: 1,
                                source,
                            }
                        })?;
                        let delimiter = sniff_delimiter(&header);
                        reader = Box::new(io::Cursor::new(header).chain(reader));
                        delimiter
                    }
                };
                Records::Csv(CsvRecords::new(&self.name, reader, delimiter)?)
            }
            InputFormat::Jsonl => Records::Jsonl(JsonlRecords::new(&self.name, reader)),
        })
    }
}

/// The fields of one input record, as the source named them.
#[derive(Clone, Debug)]
pub enum SourceFields {
    /// A CSV record: values in the order of the file's header, in one buffer.
    Csv {
        headers: Arc<Vec<String>>,
        values: ::csv::StringRecord,
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

/// One record read from an input, with the physical line it starts on (1-based).
#[derive(Clone, Debug)]
pub struct SourceRecord {
    pub line: u64,
    pub fields: SourceFields,
}

/// A record that could not be read as a record (wrong field count, not an object, ...).
/// The run records it as failed and goes on.
#[derive(Clone, Debug)]
pub struct RecordError {
    pub line: u64,
    pub reason: String,
    /// What was read of it, kept for the errors file.
    pub raw: Value,
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
            .records()
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
