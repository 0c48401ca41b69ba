//! CSV records: a header row, then one record per row. Quoted fields, embedded newlines and
//! CRLF line ends are csv-core's job; ours is to keep the physical line each record starts
//! on, to turn a malformed record into data, not a stop, and to hold no record longer than
//! the size limit.
//!
//! csv-core, not the csv crate's reader: the reader grows a record's buffer without bound
//! and cannot drop the rest of a record it has started, while csv-core parses into buffers
//! we give it, so a record past the limit is refused at once and the rest of it read into
//! the same buffers and dropped. csv-core counts the line breaks it reads, in quotes or
//! not, and we add those we skip before a record: that gives the physical line a record
//! starts on (the csv crate's record positions drift: a CRLF counts late, blank lines not
//! at all).

use std::io::{self, BufRead};
use std::sync::Arc;

use csv_core::ReadRecordResult;
use serde_json::{Map, Value};

use super::{
    CsvValues, InputError, Oversized, RecordError, RecordResult, SourceFields, SourceRecord,
    preview,
};

/// Streams the records of one CSV input.
pub struct CsvRecords {
    name: String,
    input: Box<dyn BufRead + Send>,
    /// Boxed: its state tables are most of a reader's size.
    parser: Box<csv_core::Reader>,
    delimiter: u8,
    headers: Arc<Vec<String>>,
    max_record: usize,
    /// The fields of the record being read, end to end, and where each one ends.
    fields: Vec<u8>,
    ends: Vec<usize>,
    /// A record refused for its size whose rest is still to be read and dropped.
    skipping: Option<Oversized>,
}

/// What reading one record came to.
enum Raw {
    End,
    /// A whole record: its line, and its fields in `fields[..len]`, `ends[..count]`.
    Record {
        line: u64,
        len: usize,
        count: usize,
    },
    /// A record that passed the size limit; its rest is being skipped.
    TooLong(Oversized),
}

impl CsvRecords {
    /// Reads the header row; an input with no header row, or one longer than
    /// `max_record` bytes, is an error.
    pub fn new(
        name: &str,
        input: Box<dyn BufRead + Send>,
        delimiter: u8,
        max_record: usize,
    ) -> Result<CsvRecords, InputError> {
        let mut records = CsvRecords {
            name: name.to_string(),
            input,
            parser: Box::new(csv_core::ReaderBuilder::new().delimiter(delimiter).build()),
            delimiter,
            headers: Arc::default(),
            max_record,
            fields: vec![0; 1024.min(max_record + 1)],
            ends: vec![0; 32],
            skipping: None,
        };
        let header_error = |reason: String| InputError::Header {
            name: name.to_string(),
            reason,
        };
        let (len, count) = match records.read_raw() {
            Err(source) => {
                return Err(InputError::Read {
                    name: name.to_string(),
                    line: records.parser.line(),
                    source,
                });
            }
            Ok(Raw::End) => {
                return Err(header_error(
                    "the file is empty or has no header row".into(),
                ));
            }
            Ok(Raw::TooLong(_)) => {
                return Err(header_error(format!(
                    "the header row is longer than {} (--max-record-size)",
                    super::size_text(max_record as u64)
                )));
            }
            Ok(Raw::Record { len, count, .. }) => (len, count),
        };
        let mut headers = Vec::with_capacity(count);
        for (index, header) in records.split(len, count).enumerate() {
            if header.contains(&0) {
                return Err(header_error(format!(
                    "column {} holds a NUL character: is the file UTF-16 without a byte-order \
                     mark? (see --encoding)",
                    index + 1
                )));
            }
            let header = std::str::from_utf8(header)
                .map_err(|_| header_error(format!("column {} is not valid UTF-8", index + 1)))?;
            headers.push(header.trim_start_matches('\u{feff}').trim().to_string());
        }
        if headers.iter().all(|h| h.is_empty()) {
            return Err(header_error(
                "the file is empty or has no header row".into(),
            ));
        }
        records.headers = Arc::new(headers);
        Ok(records)
    }

    /// The header row, trimmed.
    pub fn headers(&self) -> &Arc<Vec<String>> {
        &self.headers
    }

    /// The fields of the record just read.
    fn split(&self, len: usize, count: usize) -> impl Iterator<Item = &[u8]> {
        let fields = &self.fields[..len];
        let mut start = 0;
        self.ends[..count].iter().map(move |&end| {
            let field = &fields[start..end];
            start = end;
            field
        })
    }

    /// Reads the next record, or as much of it as the size limit allows.
    fn read_raw(&mut self) -> io::Result<Raw> {
        if let Some(skipped) = self.skipping.take() {
            self.skip_rest(skipped)?;
        }
        if self.fields.len() > super::KEPT_BUFFER {
            self.fields = vec![0; 1024];
        }
        if self.ends.len() > super::KEPT_BUFFER / size_of::<usize>() {
            self.ends = vec![0; 32];
        }
        if !self.skip_line_breaks()? {
            return Ok(Raw::End);
        }
        self.read_fields()
    }

    /// Skips the line breaks before a record, as the parser would skip them, so that the
    /// record's line is the line of its first byte; false at the end of the input. The
    /// parser counts the line breaks it reads, in quotes or not: its count is the physical
    /// line.
    fn skip_line_breaks(&mut self) -> io::Result<bool> {
        loop {
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                return Ok(false);
            }
            let breaks = available
                .iter()
                .position(|&byte| byte != b'\n' && byte != b'\r');
            let skip = breaks.unwrap_or(available.len());
            let newlines = available[..skip]
                .iter()
                .filter(|&&byte| byte == b'\n')
                .count();
            self.parser.set_line(self.parser.line() + newlines as u64);
            self.input.consume(skip);
            if breaks.is_some() {
                return Ok(true);
            }
        }
    }

    /// Parses the record that starts here into `fields` and `ends`, growing them up to the
    /// size limit; a record that passes it is refused at once, its rest left to skip.
    fn read_fields(&mut self) -> io::Result<Raw> {
        let line = self.parser.line();
        let (mut size, mut len, mut count) = (0usize, 0usize, 0usize);
        loop {
            let input = self.input.fill_buf()?;
            let at_end = input.is_empty();
            let (result, read, written, ended) =
                self.parser
                    .read_record(input, &mut self.fields[len..], &mut self.ends[count..]);
            self.input.consume(read);
            size += read;
            len += written;
            count += ended;
            let complete = result == ReadRecordResult::Record;
            // A complete record's size leaves out the line break that ended it.
            let content = if complete && !at_end { size - 1 } else { size };
            let full =
                result == ReadRecordResult::OutputFull && self.fields.len() > self.max_record;
            if content > self.max_record || full {
                let oversized = Oversized {
                    line,
                    size: content as u64,
                    ended: complete,
                    preview: preview(&self.joined(len, count)),
                };
                if !complete {
                    self.skipping = Some(oversized.clone());
                }
                return Ok(Raw::TooLong(oversized));
            }
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    let grown = (self.fields.len() * 2).min(self.max_record + 1);
                    self.fields.resize(grown, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let grown = self.ends.len() * 2;
                    self.ends.resize(grown, 0);
                }
                ReadRecordResult::Record => return Ok(Raw::Record { line, len, count }),
                ReadRecordResult::End => return Ok(Raw::End),
            }
        }
    }

    /// Reads the rest of a record refused for its size into the same buffers, dropping it,
    /// so that memory stays at the limit however long the record goes on.
    fn skip_rest(&mut self, mut skipped: Oversized) -> io::Result<()> {
        loop {
            let input = self.input.fill_buf()?;
            let at_end = input.is_empty();
            let (result, read, _, _) =
                self.parser
                    .read_record(input, &mut self.fields, &mut self.ends);
            let newline_ended = read > 0 && input[read - 1] == b'\n';
            self.input.consume(read);
            skipped.size += read as u64;
            if matches!(result, ReadRecordResult::Record | ReadRecordResult::End) {
                skipped.size -= u64::from(!at_end && result == ReadRecordResult::Record);
                skipped.log_end(&self.name, self.parser.line() - u64::from(newline_ended));
                return Ok(());
            }
        }
    }

    /// The first fields of the record read so far, with their delimiters, for a preview.
    fn joined(&self, len: usize, count: usize) -> Vec<u8> {
        let mut joined = Vec::new();
        for field in self.split(len, count) {
            if joined.len() > super::PREVIEW_BYTES {
                break;
            }
            if !joined.is_empty() {
                joined.push(self.delimiter);
            }
            joined.extend_from_slice(field);
        }
        if joined.is_empty() {
            joined.extend_from_slice(&self.fields[..len.min(super::PREVIEW_BYTES + 1)]);
        }
        joined
    }

    /// The record just read as a row of the header's columns, or why it is not one.
    fn convert(&self, line: u64, len: usize, count: usize) -> RecordResult {
        if count != self.headers.len() {
            return Err(RecordError::whole(
                line,
                format!("has {count} fields, the header has {}", self.headers.len()),
                self.lossy(len, count),
            ));
        }
        // A NUL would reach Kustomer as it is; one search of the whole record finds it.
        if let Some(at) = memchr::memchr(0, &self.fields[..len]) {
            let column = self.ends[..count].partition_point(|&end| end <= at);
            let name = match self.headers[column].as_str() {
                "" => format!("column {}", column + 1),
                name => name.to_string(),
            };
            return Err(RecordError::in_field(
                line,
                name,
                "holds a NUL character",
                format!("holds a NUL character (column {})", column + 1),
                self.lossy(len, count),
            ));
        }
        match CsvValues::from_parts(&self.fields[..len], &self.ends[..count]) {
            Ok(values) => Ok(SourceRecord {
                line,
                fields: SourceFields::Csv {
                    headers: Arc::clone(&self.headers),
                    values,
                },
                threads: None,
            }),
            Err(error) => Err(RecordError::whole(
                line,
                format!(
                    "field {:?} is not valid UTF-8: is the file in another encoding? (see \
                     --encoding)",
                    self.headers[error]
                ),
                self.lossy(len, count),
            )),
        }
    }

    /// The record just read as an object of its columns, for the errors file.
    fn lossy(&self, len: usize, count: usize) -> Value {
        let mut object = Map::new();
        for (index, value) in self.split(len, count).enumerate() {
            let name = self
                .headers
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("column {}", index + 1));
            object.insert(
                name,
                Value::String(String::from_utf8_lossy(value).into_owned()),
            );
        }
        Value::Object(object)
    }
}

impl Iterator for CsvRecords {
    type Item = Result<RecordResult, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.read_raw() {
            Ok(Raw::End) => None,
            Ok(Raw::Record { line, len, count }) => Some(Ok(self.convert(line, len, count))),
            Ok(Raw::TooLong(oversized)) => {
                Some(Ok(Err(oversized.refusal(&self.name, self.max_record))))
            }
            Err(source) => Some(Err(InputError::Read {
                name: self.name.clone(),
                line: self.parser.line(),
                source,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(data: &str, max_record: usize) -> Vec<Result<u64, (u64, String)>> {
        let input: Box<dyn BufRead + Send> = Box::new(io::Cursor::new(data.as_bytes().to_vec()));
        let records = CsvRecords::new("t.csv", input, b',', max_record).unwrap();
        records
            .map(|record| match record.unwrap() {
                Ok(record) => Ok(record.line),
                Err(error) => Err((error.line, error.reason)),
            })
            .collect()
    }

    fn lines(data: &str) -> Vec<u64> {
        records(data, 1 << 20)
            .into_iter()
            .map(|record| record.unwrap_or_else(|(line, _)| line))
            .collect()
    }

    #[test]
    fn lines_are_physical_whatever_the_line_ends() {
        assert_eq!(lines("a,b\n1,2\n3,4\n"), [2, 3]);
        assert_eq!(lines("a,b\r\n1,2\r\n3,4"), [2, 3]);
        assert_eq!(lines("\"a\nx\",b\n1,2\n\n\n3,4\n"), [3, 6]);
        assert_eq!(lines("a,b\r\n\"1\r\n\r\n\",2\r\n\r\n3,4\r\n"), [2, 6]);
    }

    #[test]
    fn values_are_utf8_one_by_one() {
        let values = CsvValues::from_parts("aéb".as_bytes(), &[1, 3, 4]).unwrap();
        assert_eq!(values.iter().collect::<Vec<_>>(), ["a", "é", "b"]);
        assert_eq!((values.get(1), values.get(3)), (Some("é"), None));
        // Valid as a whole, but "é" split between the first two values.
        assert_eq!(CsvValues::from_parts("aéb".as_bytes(), &[2, 4]), Err(0));
        assert_eq!(CsvValues::from_parts(b"ab\xff", &[1, 3]), Err(1));
        let empty = CsvValues::from_parts(b"", &[0, 0]).unwrap();
        assert_eq!(empty.iter().collect::<Vec<_>>(), ["", ""]);
    }

    #[test]
    fn the_size_limit_counts_a_record_without_its_line_break() {
        // "1,22" is 4 bytes: at a limit of 4 it is read, at 3 refused; so is the last
        // record, which has no line break.
        assert_eq!(records("a,b\n1,22\r\n1,22", 4), [Ok(2), Ok(3)]);
        let refused = records("a,b\n1,22\r\n3,4\n", 3);
        assert!(matches!(&refused[0], Err((2, reason)) if reason.contains("4 bytes")));
        assert_eq!(refused[1], Ok(3));
    }
}
