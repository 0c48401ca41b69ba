//! JSONL records: one JSON object per line. Blank lines are skipped; a line that is not
//! JSON, or not an object, or longer than the size limit, becomes a record error and
//! reading goes on. A line is never held past the limit: the rest of a longer one is read
//! and dropped as it comes.
//!
//! Lines are parsed as serde_json's `Value` is, with two refusals it does not make
//! ([`Strict`]): a key given twice in one object (a `Value` silently keeps the last), and
//! a NUL character in a string or a key (it would reach Kustomer as it is). Each names the
//! key's path in the object (`customer.emails[0].email`).

use std::cell::RefCell;
use std::fmt;
use std::io::{self, BufRead};
use std::sync::LazyLock;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use super::{
    InputError, Oversized, RecordError, RecordResult, SourceFields, SourceRecord, preview,
};

/// How a NUL character is written in JSON (a raw NUL byte is not valid JSON at all).
const ESCAPED_NUL: &[u8] = b"\\u0000";

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

/// Finds [`ESCAPED_NUL`]; made once, as its searcher's set-up costs more than a line.
static NUL_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(ESCAPED_NUL));

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
        let text = &self.buffer[start..end];
        // Strings are searched for a NUL only on the rare line that may hold one.
        let may_hold_nul = NUL_FINDER.find(text).is_some();
        let error = match parse_strict(text, may_hold_nul) {
            Ok(Value::Object(object)) => {
                return Some(Ok(SourceRecord {
                    line,
                    fields: SourceFields::Json(object),
                }));
            }
            Ok(other) => RecordError::whole(
                line,
                format!("is a JSON {}, not an object", json_kind(&other)),
                Value::Null,
            ),
            Err(Refusal::Flaw(flaw)) => RecordError::in_field(
                line,
                flaw.path(),
                flaw.kind.rule(),
                flaw.kind.reason().to_string(),
                Value::Null,
            ),
            Err(Refusal::Syntax(error)) => {
                RecordError::whole(line, format!("is not valid JSON: {error}"), Value::Null)
            }
        };
        Some(Err(RecordError {
            raw: self.take_line(start..end),
            ..error
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

/// Why a line was not taken as JSON.
enum Refusal {
    Syntax(serde_json::Error),
    Flaw(Flaw),
}

/// What [`Strict`] refuses in JSON that serde_json accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlawKind {
    RepeatedKey,
    Nul,
}

impl FlawKind {
    fn rule(self) -> &'static str {
        match self {
            FlawKind::RepeatedKey => "repeated key",
            FlawKind::Nul => "holds a NUL character",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            FlawKind::RepeatedKey => {
                "is given twice in one object: which value is meant cannot be told"
            }
            FlawKind::Nul => "holds a NUL character",
        }
    }
}

/// A flaw and where it is: the keys and list positions from the value at fault out to the
/// line's object, innermost first (an error is passed outward through them).
#[derive(Debug)]
struct Flaw {
    kind: FlawKind,
    path: Vec<String>,
}

impl Flaw {
    /// The path as the errors file names a field: `customer.emails[0].email`.
    fn path(&self) -> String {
        let mut text = String::new();
        for step in self.path.iter().rev() {
            if !text.is_empty() && !step.starts_with('[') {
                text.push('.');
            }
            text.push_str(&step.replace('\0', "\\u0000"));
        }
        text
    }
}

/// Parses one line as serde_json would into a [`Value`], refusing what [`Strict`] refuses.
fn parse_strict(text: &[u8], check_nul: bool) -> Result<Value, Refusal> {
    let flaw = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let parsed = Strict {
        flaw: &flaw,
        check_nul,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, flaw.into_inner()) {
        (_, Some(flaw)) => Err(Refusal::Flaw(flaw)),
        (Ok(value), None) => Ok(value),
        (Err(error), None) => Err(Refusal::Syntax(error)),
    }
}

/// A JSON value built as serde_json's own `Value` visitor builds it, but refusing a key
/// repeated in one object and, with `check_nul`, a NUL in a string or a key. What it
/// refuses is kept in `flaw`; the error it returns only unwinds the parse.
#[derive(Clone, Copy)]
struct Strict<'a> {
    flaw: &'a RefCell<Option<Flaw>>,
    check_nul: bool,
}

impl Strict<'_> {
    fn refuse<E: de::Error>(self, kind: FlawKind, at: String) -> E {
        *self.flaw.borrow_mut() = Some(Flaw {
            kind,
            path: vec![at],
        });
        E::custom(kind.reason())
    }

    /// Adds the step an error came out of to the flaw's path, if it is one of ours.
    fn through<E>(self, step: impl FnOnce() -> String, error: E) -> E {
        if let Some(flaw) = self.flaw.borrow_mut().as_mut() {
            flaw.path.push(step());
        }
        error
    }

    fn text<E: de::Error>(self, text: String) -> Result<Value, E> {
        if self.check_nul && text.contains('\0') {
            // The value's key (or position) is added as the error passes out through it.
            *self.flaw.borrow_mut() = Some(Flaw {
                kind: FlawKind::Nul,
                path: Vec::new(),
            });
            return Err(E::custom(FlawKind::Nul.reason()));
        }
        Ok(Value::String(text))
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        self.text(value.to_string())
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        self.text(value)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut list = Vec::with_capacity(items.size_hint().unwrap_or(0));
        loop {
            match items.next_element_seed(self) {
                Ok(Some(item)) => list.push(item),
                Ok(None) => return Ok(Value::Array(list)),
                Err(error) => return Err(self.through(|| format!("[{}]", list.len()), error)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            if self.check_nul && key.contains('\0') {
                return Err(self.refuse(FlawKind::Nul, key));
            }
            let value = match entries.next_value_seed(self) {
                Ok(value) => value,
                Err(error) => return Err(self.through(|| key, error)),
            };
            match object.entry(key) {
                Entry::Vacant(entry) => {
                    entry.insert(value);
                }
                Entry::Occupied(entry) => {
                    return Err(self.refuse(FlawKind::RepeatedKey, entry.key().clone()));
                }
            }
        }
        Ok(Value::Object(object))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn flaw(text: &str) -> (FlawKind, String) {
        let check_nul = memchr::memmem::find(text.as_bytes(), ESCAPED_NUL).is_some();
        match parse_strict(text.as_bytes(), check_nul) {
            Err(Refusal::Flaw(flaw)) => (flaw.kind, flaw.path()),
            other => panic!("{text}: {:?}", other.map_err(|_| "not a flaw")),
        }
    }

    #[test]
    fn what_serde_json_takes_parses_to_the_same_value() {
        for text in [
            r#"{"a":1,"b":-2,"c":1.5e3,"d":18446744073709551615,"e":null,"f":true}"#,
            r#"{"nested":{"list":[1,"two",{"three":[]}],"empty":{}},"é\u00e9":"\ud83d\ude00"}"#,
            r#"[1,2,3]"#,
            r#""text""#,
            r#"{"escaped":"not a NUL: \\u0000"}"#,
        ] {
            let expected: Value = serde_json::from_str(text).unwrap();
            for check_nul in [false, true] {
                match parse_strict(text.as_bytes(), check_nul) {
                    Ok(value) => assert_eq!(value, expected, "{text}"),
                    Err(_) => panic!("{text} was refused"),
                }
            }
        }
        for broken in [r#"{"a":1"#, r#"{"a":1} x"#, "{\"a\":\"\0\"}"] {
            assert!(matches!(
                parse_strict(broken.as_bytes(), true),
                Err(Refusal::Syntax(_))
            ));
        }
    }

    #[test]
    fn a_repeated_key_or_a_nul_is_refused_at_its_path() {
        assert_eq!(
            flaw(r#"{"a":1,"a":2}"#),
            (FlawKind::RepeatedKey, "a".into())
        );
        assert_eq!(
            flaw(r#"{"customer":{"emails":[{"email":"x"},{"email":"y","email":"z"}]}}"#),
            (FlawKind::RepeatedKey, "customer.emails[1].email".into())
        );
        assert_eq!(
            flaw(r#"{"tags":["a",["b","c\u0000"]]}"#),
            (FlawKind::Nul, "tags[1][1]".into())
        );
        assert_eq!(
            flaw(r#"{"x":{"ke\u0000y":1}}"#),
            (FlawKind::Nul, "x.ke\\u0000y".into())
        );
    }
}
