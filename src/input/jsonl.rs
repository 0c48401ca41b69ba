//! JSONL records: one JSON object per line. Blank lines are skipped; a line that is not
//! JSON, or not an object, or longer than the size limit, becomes a record error and
//! reading goes on. A line is never held past the limit: the rest of a longer one is read
//! and dropped as it comes.
//!
//! Lines are parsed as serde_json's `Value` is, with two refusals it does not make
//! ([`Strict`]): a key given twice in one object (a `Value` silently keeps the last), and
//! a NUL character in a string or a key (it would reach Kustomer as it is). Each names the
//! key's path in the object (`customer.emails[0].email`).
//!
//! A line that may hold a conversation's thread (see [`JsonlRecords::capturing_threads`])
//! is not parsed whole: its thread lists stay as the line's text, each item located but
//! parsed only when it is staged ([`NestedLists`]), so a 5,000-comment ticket costs its
//! bytes and two offsets an item rather than 5,000 values.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, BufRead};
use std::ops::Range;
use std::sync::LazyLock;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::value::RawValue;
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
    /// Thread lists are kept as text ([`NestedLists`]), for a mapping that reads them.
    capture_threads: bool,
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
            capture_threads: false,
        }
    }

    /// Keeps each line's thread lists (`messages`, `notes`, `comments`, at the top of the
    /// line or in its `ticket`) as text for [`NestedLists`], in their place in the object
    /// [`THREAD_MARKER`]: for the mappings that read a nested thread (the default columns'
    /// API shape and the Zendesk preset). A mapping file names its own keys, so its inputs
    /// are read as they are.
    pub fn capture_threads(&mut self) {
        self.capture_threads = true;
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
        if self.capture_threads && may_hold_thread(text) {
            return Some(self.parse_threaded(start..end, may_hold_nul));
        }
        let error = match parse_strict(text, may_hold_nul) {
            Ok(Value::Object(object)) => {
                return Some(Ok(SourceRecord {
                    line,
                    fields: SourceFields::Json(object),
                    threads: None,
                }));
            }
            Ok(other) => RecordError::whole(
                line,
                format!("is a JSON {}, not an object", json_kind(&other)),
                Value::Null,
            ),
            Err(refusal) => refusal.into_error(line),
        };
        Some(Err(RecordError {
            raw: self.take_line(start..end),
            ..error
        }))
    }

    /// A line that may hold thread lists: its object with each list's place marked, and the
    /// line itself handed over with where the lists' items are.
    fn parse_threaded(&mut self, range: Range<usize>, check_nul: bool) -> RecordResult {
        let line = self.line;
        let base = self.buffer.as_ptr() as usize;
        let mut lists = Vec::new();
        let parsed = entries_of(&self.buffer[range.clone()]).and_then(|entries| {
            threaded_object(
                entries,
                &mut ThreadScan {
                    base,
                    check_nul,
                    lists: &mut lists,
                },
                0,
            )
        });
        match parsed {
            Ok(object) => {
                let threads = (!lists.is_empty()).then(|| NestedLists {
                    text: std::mem::replace(&mut self.buffer, Vec::with_capacity(4096)),
                    lists,
                });
                Ok(SourceRecord {
                    line,
                    fields: SourceFields::Json(object),
                    threads,
                })
            }
            Err(refusal) => Err(RecordError {
                raw: self.take_line(range),
                ..refusal.into_error(line)
            }),
        }
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

impl Refusal {
    fn flaw(kind: FlawKind, at: String) -> Refusal {
        Refusal::Flaw(Flaw {
            kind,
            path: vec![at],
        })
    }

    /// The refusal of a value, as the refusal of the object that holds it under `key`.
    fn within(self, key: &str) -> Refusal {
        match self {
            Refusal::Flaw(mut flaw) => {
                flaw.path.push(key.to_string());
                Refusal::Flaw(flaw)
            }
            syntax => syntax,
        }
    }

    fn into_error(self, line: u64) -> RecordError {
        match self {
            Refusal::Flaw(flaw) => RecordError::in_field(
                line,
                flaw.path(),
                flaw.kind.rule(),
                flaw.kind.reason().to_string(),
                Value::Null,
            ),
            Refusal::Syntax(error) => {
                RecordError::whole(line, format!("is not valid JSON: {error}"), Value::Null)
            }
        }
    }
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

/// What a line's object holds in place of a thread list once the list is kept as text
/// ([`NestedLists`]): the errors file then names the source line rather than repeating a
/// list of 5,000 items, whose own failures it lists item by item.
pub const THREAD_MARKER: &str = "(staged: see the source line)";

/// The keys of a line's object that hold a thread list: an API-shaped row's `messages` and
/// `notes`, a Zendesk ticket's `comments`.
const TOP_THREAD_KEYS: [&str; 3] = ["messages", "notes", "comments"];

/// The key of a Zendesk ticket wrapped in its line (`{"ticket": {...}}`) and the key of its
/// thread list inside.
const TICKET_KEY: &str = "ticket";
const TICKET_THREAD_KEY: &str = "comments";

/// Finds each of [`TOP_THREAD_KEYS`] as a JSON key; made once, as [`NUL_FINDER`].
static THREAD_FINDERS: LazyLock<[memchr::memmem::Finder<'static>; 3]> = LazyLock::new(|| {
    TOP_THREAD_KEYS.map(|key| memchr::memmem::Finder::new(&format!("\"{key}\"")).into_owned())
});

/// Whether an object's line may hold a thread list: a list at all (one byte searched, which
/// settles most rows), and a thread list's key. The rare line that may is parsed by
/// [`threaded_object`], every other as it always was.
fn may_hold_thread(text: &[u8]) -> bool {
    text.first() == Some(&b'{')
        && memchr::memchr(b'[', text).is_some()
        && THREAD_FINDERS
            .iter()
            .any(|finder| finder.find(text).is_some())
}

/// The thread lists of one JSONL line, kept as the line's text: where each item of each
/// list is, found as the line was parsed (its syntax checked then); an item is parsed, with
/// the line's own refusals ([`Strict`]), only when it is read ([`NestedLists::items`]).
#[derive(Clone, PartialEq, Eq)]
pub struct NestedLists {
    /// The line as read (its buffer, handed over whole).
    text: Vec<u8>,
    lists: Vec<NestedList>,
}

#[derive(Clone, PartialEq, Eq)]
struct NestedList {
    key: &'static str,
    items: Vec<Range<usize>>,
}

/// Why an item of a thread list is refused: the line's refusals, at the item's own path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemFlaw {
    /// The path inside the item (`body`), empty for the item itself.
    pub path: String,
    pub rule: &'static str,
    pub reason: String,
}

impl NestedLists {
    /// How many items the line's list under `key` holds; None when the line has no such
    /// list.
    pub fn len(&self, key: &str) -> Option<usize> {
        self.list(key).map(|list| list.items.len())
    }

    /// Whether every list is empty.
    pub fn is_empty(&self) -> bool {
        self.lists.iter().all(|list| list.items.is_empty())
    }

    /// The items of the list under `key` (none when there is no such list), each parsed
    /// as it is reached.
    pub fn items<'a>(&'a self, key: &str) -> impl Iterator<Item = Result<Value, ItemFlaw>> + 'a {
        self.list(key)
            .map_or(&[][..], |list| &list.items[..])
            .iter()
            .map(|range| {
                let text = &self.text[range.clone()];
                parse_strict(text, NUL_FINDER.find(text).is_some()).map_err(|refusal| match refusal
                {
                    Refusal::Flaw(flaw) => ItemFlaw {
                        path: flaw.path(),
                        rule: flaw.kind.rule(),
                        reason: flaw.kind.reason().to_string(),
                    },
                    // The line's parse checked the syntax of every item.
                    Refusal::Syntax(error) => ItemFlaw {
                        path: String::new(),
                        rule: "not valid JSON",
                        reason: format!("is not valid JSON: {error}"),
                    },
                })
            })
    }

    fn list(&self, key: &str) -> Option<&NestedList> {
        self.lists.iter().find(|list| list.key == key)
    }
}

impl fmt::Debug for NestedLists {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        let mut lists = formatter.debug_map();
        for list in &self.lists {
            lists.entry(&list.key, &format_args!("{} items", list.items.len()));
        }
        lists.finish()
    }
}

/// An object's entries, each value as its JSON text, in the order of the line.
struct Entries<'de>(Vec<(String, &'de RawValue)>);

impl<'de> de::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

fn entries_of(text: &[u8]) -> Result<Entries<'_>, Refusal> {
    serde_json::from_slice(text).map_err(Refusal::Syntax)
}

/// What [`threaded_object`] gathers: where the line's buffer starts (items are found by
/// their offset in it), whether strings may hold a NUL, and the lists found.
struct ThreadScan<'a> {
    base: usize,
    check_nul: bool,
    lists: &'a mut Vec<NestedList>,
}

/// An object whose thread lists are kept as text: at the top of the line (`depth` 0) the
/// lists of [`TOP_THREAD_KEYS`] and a `ticket` object's own `comments` (`depth` 1). Every
/// other value is parsed as [`parse_strict`] parses a line, with the same refusals at the
/// same paths; a thread key holding anything but a list is parsed too, for the mapping to
/// refuse.
fn threaded_object(
    entries: Entries<'_>,
    scan: &mut ThreadScan<'_>,
    depth: u8,
) -> Result<Map<String, Value>, Refusal> {
    let mut object = Map::new();
    for (key, raw) in entries.0 {
        if scan.check_nul && key.contains('\0') {
            return Err(Refusal::flaw(FlawKind::Nul, key));
        }
        let text = raw.get();
        let thread_key = match depth {
            0 => TOP_THREAD_KEYS.into_iter().find(|thread| *thread == key),
            _ => (key == TICKET_THREAD_KEY).then_some(TICKET_THREAD_KEY),
        };
        let value = match thread_key {
            Some(thread_key) if text.starts_with('[') => {
                let items: Vec<&RawValue> = serde_json::from_str(text).map_err(Refusal::Syntax)?;
                let items = items
                    .iter()
                    .map(|item| {
                        let start = item.get().as_ptr() as usize - scan.base;
                        start..start + item.get().len()
                    })
                    .collect();
                scan.lists.push(NestedList {
                    key: thread_key,
                    items,
                });
                Value::String(THREAD_MARKER.to_string())
            }
            _ if depth == 0 && key == TICKET_KEY && text.starts_with('{') => Value::Object(
                entries_of(text.as_bytes())
                    .and_then(|inner| threaded_object(inner, scan, 1))
                    .map_err(|refusal| refusal.within(&key))?,
            ),
            _ => parse_strict(text.as_bytes(), scan.check_nul)
                .map_err(|refusal| refusal.within(&key))?,
        };
        match object.entry(key) {
            Entry::Vacant(entry) => {
                entry.insert(value);
            }
            Entry::Occupied(entry) => {
                return Err(Refusal::flaw(FlawKind::RepeatedKey, entry.key().clone()));
            }
        }
    }
    Ok(object)
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

/// One line read as a run whose mapping reads nested threads reads it (for the mappings'
/// tests).
#[cfg(test)]
pub(crate) fn read_line(line: &str) -> SourceRecord {
    let mut records = JsonlRecords::new(
        "test.jsonl",
        Box::new(io::Cursor::new(line.as_bytes().to_vec())),
        super::DEFAULT_MAX_RECORD_SIZE,
    );
    records.capture_threads();
    match records.next() {
        Some(Ok(Ok(record))) => record,
        other => panic!("{line}: {other:?}"),
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

    fn threaded(line: &str) -> Result<SourceRecord, RecordError> {
        let mut records = JsonlRecords::new(
            "t.jsonl",
            Box::new(io::Cursor::new(line.as_bytes().to_vec())),
            1 << 20,
        );
        records.capture_threads();
        records.next().unwrap().unwrap()
    }

    #[test]
    fn thread_lists_are_kept_as_text_and_their_items_read_as_serde_json_reads_them() {
        let line = r#"{"customer":{"externalId":"c"},"messages":[{"a":1}, {"b":[2,{"c":"é"}]}],"notes":[],"x":[1]}"#;
        let record = threaded(line).unwrap();
        let SourceFields::Json(object) = &record.fields else {
            unreachable!()
        };
        assert_eq!(object["messages"], THREAD_MARKER);
        assert_eq!(object["notes"], THREAD_MARKER);
        assert_eq!(
            object["x"],
            serde_json::json!([1]),
            "other lists are values"
        );
        let threads = record.threads.unwrap();
        assert_eq!(
            (threads.len("messages"), threads.len("notes")),
            (Some(2), Some(0))
        );
        assert_eq!(threads.len("comments"), None);
        let items: Vec<Value> = threads.items("messages").map(Result::unwrap).collect();
        let expected: Value = serde_json::from_str(line).unwrap();
        assert_eq!(Value::Array(items), expected["messages"]);
        // A ticket's comments, wrapped or not.
        let wrapped = threaded(r#"{"ticket":{"id":1,"comments":[{"id":2}]}}"#).unwrap();
        assert_eq!(wrapped.threads.unwrap().len("comments"), Some(1));
        let SourceFields::Json(object) = &wrapped.fields else {
            unreachable!()
        };
        assert_eq!(object["ticket"]["comments"], THREAD_MARKER);
        // A thread key holding something else is a value, for the mapping to refuse.
        let odd = threaded(r#"{"messages":{"channel":"email"}}"#).unwrap();
        assert!(odd.threads.is_none());
        // Without capture, a line is parsed whole.
        let mut plain = JsonlRecords::new(
            "t.jsonl",
            Box::new(io::Cursor::new(line.as_bytes().to_vec())),
            1 << 20,
        );
        let record = plain.next().unwrap().unwrap().unwrap();
        assert!(record.threads.is_none());
        let SourceFields::Json(object) = record.fields else {
            unreachable!()
        };
        assert_eq!(Value::Object(object), expected);
    }

    #[test]
    fn a_threaded_line_is_refused_as_a_whole_line_is_and_its_items_when_read() {
        let repeated = threaded(r#"{"customer":{"a":1,"a":2},"messages":[]}"#).unwrap_err();
        assert_eq!(
            (repeated.field.as_deref(), repeated.rule),
            (Some("customer.a"), "repeated key")
        );
        let twice = threaded(r#"{"messages":[],"messages":[]}"#).unwrap_err();
        assert_eq!(twice.field.as_deref(), Some("messages"));
        let nul = threaded(r#"{"ticket":{"subject":"a\u0000","comments":[]}}"#).unwrap_err();
        assert_eq!(nul.field.as_deref(), Some("ticket.subject"));
        let broken = threaded(r#"{"messages":[{"a":1},{"b":]}"#).unwrap_err();
        assert!(
            broken.reason.starts_with("is not valid JSON"),
            "{}",
            broken.reason
        );
        // An item's own flaws are found when it is read, at its path inside the item.
        let record =
            threaded(r#"{"notes":[{"ok":1},{"body":"x","body":"y"},{"t":["\u0000"]}]}"#).unwrap();
        let items: Vec<Result<Value, ItemFlaw>> = record.threads.unwrap().items("notes").collect();
        assert!(items[0].is_ok());
        assert_eq!(items[1].as_ref().unwrap_err().path, "body");
        assert_eq!(items[2].as_ref().unwrap_err().path, "t[0]");
    }
}
