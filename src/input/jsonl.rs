//! JSONL records: one JSON object per line. Blank lines are skipped; a line that is not
//! JSON, or not an object, becomes a record error and reading goes on.

use std::io::BufRead;

use serde_json::Value;

use super::{InputError, RecordError, RecordResult, SourceFields, SourceRecord};

/// Streams the records of one JSONL input.
pub struct JsonlRecords {
    name: String,
    input: Box<dyn BufRead + Send>,
    line: u64,
    buffer: Vec<u8>,
}

impl JsonlRecords {
    pub fn new(name: &str, input: Box<dyn BufRead + Send>) -> JsonlRecords {
        JsonlRecords {
            name: name.to_string(),
            input,
            line: 0,
            buffer: Vec::with_capacity(4096),
        }
    }

    fn parse(&self) -> Option<RecordResult> {
        let mut text = self.buffer.as_slice();
        if self.line == 1 {
            text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
        }
        let text = text.trim_ascii();
        if text.is_empty() {
            return None;
        }
        let line = self.line;
        let raw = || Value::String(String::from_utf8_lossy(text).into_owned());
        Some(match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(object)) => Ok(SourceRecord {
                line,
                fields: SourceFields::Json(object),
            }),
            Ok(other) => Err(RecordError {
                line,
                reason: format!("is a JSON {}, not an object", json_kind(&other)),
                raw: raw(),
            }),
            Err(error) => Err(RecordError {
                line,
                reason: format!("is not valid JSON: {error}"),
                raw: raw(),
            }),
        })
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
            self.buffer.clear();
            match self.input.read_until(b'\n', &mut self.buffer) {
                Ok(0) => return None,
                Ok(_) => {
                    self.line += 1;
                    if let Some(record) = self.parse() {
                        return Some(Ok(record));
                    }
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
