//! CSV records: a header row, then one record per row. Quoted fields, embedded newlines,
//! CRLF line ends and a UTF-8 byte-order mark are the csv crate's job; ours is to keep the
//! physical line each record starts on and to turn a malformed record into data, not a stop.
//!
//! The csv crate's own line count drifts (a CRLF counts late, blank lines not at all), so
//! [`LineTracker`] watches the bytes the parser pulls and turns a record's byte offset into
//! the physical line a text editor shows.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, BufRead, Read};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{InputError, RecordError, RecordResult, SourceFields, SourceRecord};

/// Streams the records of one CSV input.
pub struct CsvRecords {
    name: String,
    reader: csv::Reader<LineTracker<Box<dyn BufRead + Send>>>,
    headers: Arc<Vec<String>>,
    record: csv::ByteRecord,
}

impl CsvRecords {
    /// Reads the header row; an input with no header row is an error.
    pub fn new(
        name: &str,
        input: Box<dyn BufRead + Send>,
        delimiter: u8,
    ) -> Result<CsvRecords, InputError> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(true)
            .from_reader(LineTracker::new(input));
        let header_error = |reason: String| InputError::Header {
            name: name.to_string(),
            reason,
        };
        let raw_headers = reader
            .byte_headers()
            .map_err(|error| header_error(error.to_string()))?
            .clone();
        if raw_headers.is_empty() || raw_headers.iter().all(|h| h.is_empty()) {
            return Err(header_error(
                "the file is empty or has no header row".into(),
            ));
        }
        let mut headers = Vec::with_capacity(raw_headers.len());
        for (index, header) in raw_headers.iter().enumerate() {
            let header = std::str::from_utf8(header)
                .map_err(|_| header_error(format!("column {} is not valid UTF-8", index + 1)))?;
            headers.push(header.trim_start_matches('\u{feff}').trim().to_string());
        }
        Ok(CsvRecords {
            name: name.to_string(),
            reader,
            headers: Arc::new(headers),
            record: csv::ByteRecord::new(),
        })
    }

    /// The header row, trimmed.
    pub fn headers(&self) -> &Arc<Vec<String>> {
        &self.headers
    }

    fn convert(&self, line: u64) -> RecordResult {
        let lossy = || -> Value {
            let mut object = Map::new();
            for (index, value) in self.record.iter().enumerate() {
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
        };
        if self.record.len() != self.headers.len() {
            return Err(RecordError {
                line,
                reason: format!(
                    "has {} fields, the header has {}",
                    self.record.len(),
                    self.headers.len()
                ),
                raw: lossy(),
            });
        }
        // One allocation for the whole record, not one per field: rows are many.
        match csv::StringRecord::from_byte_record(self.record.clone()) {
            Ok(values) => Ok(SourceRecord {
                line,
                fields: SourceFields::Csv {
                    headers: Arc::clone(&self.headers),
                    values,
                },
            }),
            Err(error) => Err(RecordError {
                line,
                reason: format!(
                    "field {:?} is not valid UTF-8: is the file in another encoding? (see \
                     --encoding)",
                    self.headers[error.utf8_error().field()]
                ),
                raw: lossy(),
            }),
        }
    }
}

impl Iterator for CsvRecords {
    type Item = Result<RecordResult, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let offset = self.record.position().map_or(0, |p| p.byte());
                let line = self.reader.get_ref().line_at(offset);
                Some(Ok(self.convert(line)))
            }
            Err(error) => {
                let offset = error.position().map_or(0, |p| p.byte());
                let line = self.reader.get_ref().line_at(offset);
                match error.into_kind() {
                    csv::ErrorKind::Io(source) => Some(Err(InputError::Read {
                        name: self.name.clone(),
                        line,
                        source,
                    })),
                    other => Some(Ok(Err(RecordError {
                        line,
                        reason: format!("{other:?}"),
                        raw: Value::Null,
                    }))),
                }
            }
        }
    }
}

/// Remembers where the line breaks are in the bytes read so far, to turn a byte offset
/// into a physical line number. Offsets are asked for in increasing order, so the breaks
/// before the last one asked for are forgotten: memory stays at the parser's read-ahead.
pub struct LineTracker<R> {
    inner: R,
    consumed: u64,
    breaks: RefCell<Breaks>,
}

#[derive(Default)]
struct Breaks {
    /// Offsets of `\r` and `\n` bytes not yet passed, with whether each is a `\n`.
    pending: VecDeque<(u64, bool)>,
    /// `\n` bytes before the last offset asked for.
    newlines_before: u64,
}

impl<R> LineTracker<R> {
    pub fn new(inner: R) -> LineTracker<R> {
        LineTracker {
            inner,
            consumed: 0,
            breaks: RefCell::default(),
        }
    }

    /// The 1-based line of the first byte of a record that starts at `offset`: a record
    /// "starts" after any line-break bytes at its offset (the parser reports a CRLF's `\n`
    /// and blank lines as part of the next record).
    pub fn line_at(&self, offset: u64) -> u64 {
        let mut breaks = self.breaks.borrow_mut();
        let mut start = offset;
        while let Some(&(at, newline)) = breaks.pending.front() {
            if at < start {
                breaks.newlines_before += u64::from(newline);
            } else if at == start {
                breaks.newlines_before += u64::from(newline);
                start += 1;
            } else {
                break;
            }
            breaks.pending.pop_front();
        }
        breaks.newlines_before + 1
    }
}

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        let breaks = self.breaks.get_mut();
        for index in memchr::memchr2_iter(b'\r', b'\n', &buffer[..read]) {
            breaks
                .pending
                .push_back((self.consumed + index as u64, buffer[index] == b'\n'));
        }
        self.consumed += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &str) -> Vec<u64> {
        let input: Box<dyn BufRead + Send> = Box::new(io::Cursor::new(data.as_bytes().to_vec()));
        let records = CsvRecords::new("t.csv", input, b',').unwrap();
        records
            .map(|record| match record.unwrap() {
                Ok(record) => record.line,
                Err(error) => error.line,
            })
            .collect()
    }

    #[test]
    fn lines_are_physical_whatever_the_line_ends() {
        assert_eq!(lines("a,b\n1,2\n3,4\n"), [2, 3]);
        assert_eq!(lines("a,b\r\n1,2\r\n3,4"), [2, 3]);
        assert_eq!(lines("\"a\nx\",b\n1,2\n\n\n3,4\n"), [3, 6]);
        assert_eq!(lines("a,b\r\n\"1\r\n\r\n\",2\r\n\r\n3,4\r\n"), [2, 6]);
    }
}
