//! JSONL records: one JSON object per line. Blank lines are skipped; a line that is not
//! JSON, or not an object, or longer than the size limit, becomes a record error and
//! reading goes on. A line is never held past the limit: the rest of a longer one is read
//! and dropped as it comes.

use std::io::{self, BufRead};

use serde_json::Value;

use super::{
    InputError, Oversized, RecordError, RecordResult, SourceFields, SourceRecord, preview,
};

/// Streams the records of one JSONL input.
pub struct JsonlRecords {
    name: String,
    input: Box<dyn BufRead + Send>,
    max_record: usize,
    line: u64,
    buffer: Vec<u8>,
    /// A line refused for its size whose rest is still to be read and dropped.
    skipping: Option<Oversized>,
}

/// What reading one line came to.
enum Line {
    End,
    /// A whole line, in `buffer` (with its line break, if it had one).
    Whole,
    TooLong(Oversized),
}

impl JsonlRecords {
    pub fn new(name: &str, input: Box<dyn BufRead + Send>, max_record: usize) -> JsonlRecords {
        JsonlRecords {
            name: name.to_string(),
            input,
            max_record,
            line: 0,
            buffer: Vec::with_capacity(4096),
            skipping: None,
        }
    }

    /// Reads the next line into `buffer`, or as much of it as the size limit allows.
    fn read_line(&mut self) -> io::Result<Line> {
        if let Some(skipped) = self.skipping.take() {
            self.skip_rest(skipped)?;
        }
        self.buffer.clear();
        if self.buffer.capacity() > super::KEPT_BUFFER {
            self.buffer = Vec::with_capacity(4096);
        }
        loop {
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                return Ok(if self.buffer.is_empty() {
                    Line::End
                } else {
                    self.line += 1;
                    Line::Whole
                });
            }
            let (taken, complete) = match memchr::memchr(b'\n', available) {
                Some(at) => (at + 1, true),
                None => (available.len(), false),
            };
            let content = self.buffer.len() + taken - usize::from(complete);
            if content > self.max_record {
                // Only what the limit allows is kept: the line may never end.
                let kept = (self.max_record - self.buffer.len()).min(taken);
                self.buffer.extend_from_slice(&available[..kept]);
                self.input.consume(taken);
                self.line += 1;
                let oversized = Oversized {
                    line: self.line,
                    size: content as u64,
                    ended: complete,
                    preview: preview(&self.buffer),
                };
                if !complete {
                    self.skipping = Some(oversized.clone());
                }
                return Ok(Line::TooLong(oversized));
            }
            self.buffer.extend_from_slice(&available[..taken]);
            self.input.consume(taken);
            if complete {
                self.line += 1;
                return Ok(Line::Whole);
            }
        }
    }

    /// Reads the rest of a line refused for its size and drops it.
    fn skip_rest(&mut self, mut skipped: Oversized) -> io::Result<()> {
        loop {
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                break;
            }
            match memchr::memchr(b'\n', available) {
                Some(at) => {
                    skipped.size += at as u64;
                    self.input.consume(at + 1);
                    break;
                }
                None => {
                    let taken = available.len();
                    skipped.size += taken as u64;
                    self.input.consume(taken);
                }
            }
        }
        skipped.log_end(&self.name, self.line);
        Ok(())
    }

    fn parse(&mut self) -> Option<RecordResult> {
        let bom = if self.line == 1 && self.buffer.starts_with(b"\xef\xbb\xbf") {
            3
        } else {
            0
        };
        let start = bom
            + self.buffer[bom..]
                .iter()
                .position(|byte| !byte.is_ascii_whitespace())?;
        let end = 1 + self
            .buffer
            .iter()
            .rposition(|byte| !byte.is_ascii_whitespace())?;
        let line = self.line;
        let reason = match serde_json::from_slice::<Value>(&self.buffer[start..end]) {
            Ok(Value::Object(object)) => {
                return Some(Ok(SourceRecord {
                    line,
                    fields: SourceFields::Json(object),
                }));
            }
            Ok(other) => format!("is a JSON {}, not an object", json_kind(&other)),
            Err(error) => format!("is not valid JSON: {error}"),
        };
        Some(Err(RecordError {
            line,
            reason,
            raw: self.take_line(start..end),
        }))
    }

    /// The line in the buffer, as text, for the errors file: the buffer itself is handed
    /// over, not copied (a refused line may be as long as the size limit).
    fn take_line(&mut self, range: std::ops::Range<usize>) -> Value {
        let mut bytes = std::mem::replace(&mut self.buffer, Vec::with_capacity(4096));
        bytes.truncate(range.end);
        bytes.drain(..range.start);
        Value::String(
            String::from_utf8(bytes)
                .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned()),
        )
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Iterator for JsonlRecords {
    type Item = Result<RecordResult, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.read_line() {
                Ok(Line::End) => return None,
                Ok(Line::Whole) => {
                    if let Some(record) = self.parse() {
                        return Some(Ok(record));
                    }
                }
                Ok(Line::TooLong(oversized)) => {
                    return Some(Ok(Err(oversized.refusal(&self.name, self.max_record))));
                }
                Err(source) => {
                    return Some(Err(InputError::Read {
                        name: self.name.clone(),
                        line: self.line + 1,
                        source,
                    }));
                }
            }
        }
    }
}
