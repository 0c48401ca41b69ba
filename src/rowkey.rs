//! Row identity: the key under which the checkpoint remembers a row, stable across runs and
//! re-exports, and the conversation externalId derived from it.
//!
//! A row whose conversation has a source externalId is `conv:<externalId>`: that survives
//! any re-export. Otherwise the key is a hash of the mapped bodies plus the number of
//! identical rows seen before it in this run (`row:<hash>`, `row:<hash>#1`, ...), so two
//! identical tickets stay two rows and tomorrow's export, holding today's rows in the same
//! order, maps them to the same keys. Changing the mapping changes such keys: prefer a
//! source conversation id when the export has one.
//!
//! An export with no conversation id column can name the columns that identify a
//! conversation instead ([`KeyColumns`]: `--key-columns`, a mapping file's
//! `[conversation] key`): such a row is `key:<hash of those columns' values>`, so a row
//! whose status or subject changed overnight keeps its key and is updated, not created again.

use std::fmt::Write;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::input::SourceFields;
use crate::mapping::Plan;
use crate::tally::{Tally, TallyError};

/// Prefix of the key of a row known by its content alone (no conversation id, no key
/// columns): a change to the row changes its key.
pub const CONTENT_KEY: &str = "row:";

/// Prefix of the conversation externalIds the importer derives.
pub const DERIVED_ID_PREFIX: &str = "kimp-";

/// Hands out row keys for one run, counting repeated identities (on disk: see [`Tally`]).
#[derive(Default)]
pub struct RowKeys {
    occurrences: Tally,
}

/// The key of one row and whether it repeats a source conversation id seen earlier in the
/// run (such a row is refused: the id is meant to be unique).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowKey {
    pub key: String,
    pub repeats_source_id: bool,
}

impl RowKeys {
    /// The key of a mapped row.
    pub fn for_plan(&mut self, plan: &Plan) -> Result<RowKey, TallyError> {
        if let Some(id) = plan
            .conversation
            .as_ref()
            .and_then(|c| c.external_id.as_ref())
        {
            let identity = ["conv:", id].concat();
            let seen = self.count(&identity)?;
            // A repeat gets a key no source id can produce (`conv:A#1` could be one).
            let key = if seen == 0 {
                identity
            } else {
                format!("conv-repeat:{seen}:{id}")
            };
            return Ok(RowKey {
                key,
                repeats_source_id: seen > 0,
            });
        }
        let mut hasher = Sha256::new();
        // Both bodies serialise deterministically (struct order, sorted maps).
        hasher.update(serde_json::to_vec(&plan.customer).unwrap_or_default());
        hasher.update([0]);
        if let Some(conversation) = &plan.conversation {
            hasher.update(serde_json::to_vec(conversation).unwrap_or_default());
        }
        let identity = format!("{CONTENT_KEY}{}", hex(&hasher.finalize()[..12]));
        let seen = self.count(&identity)?;
        Ok(RowKey {
            key: with_occurrence(identity, seen),
            repeats_source_id: false,
        })
    }

    /// The key of a conversation read as one row per message (`--rows-are-messages`), by
    /// its source id: `conv:<id>` for the first line of the run that names it, whichever
    /// that is, so the key is the one the same conversation gets from a conversation file;
    /// None for every later line, which is an item of its thread, not a row.
    pub fn for_grouped(&mut self, conversation_id: &str) -> Result<Option<String>, TallyError> {
        let identity = ["conv:", conversation_id].concat();
        Ok((self.count(&identity)? == 0).then_some(identity))
    }

    /// The key of a row identified by its key columns' values (see [`KeyColumns`]): every
    /// row with the same values is the same conversation, so a repeat is reported as one
    /// (`repeats_source_id`), as a repeated conversation id is.
    pub fn for_key_values(&mut self, values: &[String]) -> Result<RowKey, TallyError> {
        let mut hasher = Sha256::new();
        for value in values {
            // Each value's length first: ("a,b", "c") and ("a", "b,c") differ.
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(value.as_bytes());
        }
        let key = format!("key:{}", hex(&hasher.finalize()[..12]));
        let seen = self.count(&key)?;
        Ok(RowKey {
            key: with_occurrence(key, seen),
            repeats_source_id: seen > 0,
        })
    }

    /// The key of a row that could not be read or mapped, from what was read of it.
    pub fn for_unmapped(&mut self, raw: &Value) -> Result<String, TallyError> {
        let mut hasher = Sha256::new();
        // The JSON text goes straight into the hash: a refused record may be as long as
        // the size limit, and its text need not exist a second time.
        serde_json::to_writer(Hashing(&mut hasher), raw).unwrap_or_default();
        let digest = hasher.finalize();
        let identity = format!("bad:{}", hex(&digest[..12]));
        let seen = self.count(&identity)?;
        Ok(with_occurrence(identity, seen))
    }

    fn count(&mut self, identity: &str) -> Result<u32, TallyError> {
        self.occurrences.bump(fingerprint(identity))
    }
}

/// The source columns (a CSV header's names, a JSONL line's keys, dotted for nested ones)
/// whose values identify a conversation when the export has no conversation id: e.g. the
/// customer's email and the ticket's creation time. A row whose conversation has a source
/// externalId is keyed by that all the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyColumns(Arc<[String]>);

impl KeyColumns {
    /// Names as given (`--key-columns email,created_at`, or a mapping file's list): at least
    /// one, none empty or given twice.
    pub fn new(names: Vec<String>) -> Result<KeyColumns, String> {
        let names: Vec<String> = names.iter().map(|name| name.trim().to_string()).collect();
        if names.is_empty() || names.iter().any(String::is_empty) {
            return Err("name one or more columns, separated by commas".into());
        }
        if let Some(repeated) = names
            .iter()
            .enumerate()
            .find(|(at, name)| names[..*at].contains(name))
        {
            return Err(format!("{:?} is named twice", repeated.1));
        }
        Ok(KeyColumns(names.into()))
    }

    /// `email,created_at`.
    pub fn parse(list: &str) -> Result<KeyColumns, String> {
        KeyColumns::new(list.split(',').map(str::to_string).collect())
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// The columns in one input: a CSV header must hold every one (the error lists what it
    /// has); a JSONL line is searched by key.
    pub fn bind(&self, csv_headers: Option<&Arc<Vec<String>>>) -> Result<BoundKey, String> {
        let indices = match csv_headers {
            None => None,
            Some(headers) => Some(
                self.0
                    .iter()
                    .map(|name| {
                        headers
                            .iter()
                            .position(|header| header == name)
                            .ok_or_else(|| {
                                format!(
                                    "key column {name:?} is not in the header (it has {})",
                                    headers.join(", ")
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(BoundKey {
            columns: self.clone(),
            indices,
        })
    }
}

impl std::fmt::Display for KeyColumns {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0.join(","))
    }
}

/// [`KeyColumns`] found in one input.
#[derive(Clone, Debug)]
pub struct BoundKey {
    columns: KeyColumns,
    /// Where each column is in a CSV record; None for JSONL.
    indices: Option<Vec<usize>>,
}

impl BoundKey {
    pub fn columns(&self) -> &KeyColumns {
        &self.columns
    }

    /// The record's values of the key columns, trimmed (an absent or null one is empty);
    /// None when every one is empty: such a row cannot be told apart from another.
    pub fn values(&self, fields: &SourceFields) -> Option<Vec<String>> {
        let values: Vec<String> = match (fields, &self.indices) {
            (SourceFields::Csv { values, .. }, Some(indices)) => indices
                .iter()
                .map(|&index| values.get(index).unwrap_or("").trim().to_string())
                .collect(),
            (SourceFields::Json(object), _) => self
                .columns
                .names()
                .iter()
                .map(|name| json_text(object, name))
                .collect(),
            (SourceFields::Csv { .. }, None) => Vec::new(),
        };
        values
            .iter()
            .any(|value| !value.is_empty())
            .then_some(values)
    }
}

/// The text of a JSON key, dotted for a nested one (`customer.email`): a string as it is,
/// trimmed; a number or a boolean as written; an object or a list as its JSON.
fn json_text(object: &serde_json::Map<String, Value>, path: &str) -> String {
    let mut parts = path.split('.');
    let first = parts.next().and_then(|part| object.get(part));
    let value = parts.fold(first, |value, part| value.and_then(|value| value.get(part)));
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.trim().to_string(),
        Some(other) => other.to_string(),
    }
}

/// Writes into a hash.
struct Hashing<'a>(&'a mut Sha256);

impl std::io::Write for Hashing<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A 64-bit fingerprint of a text (the first bytes of its SHA-256).
pub fn fingerprint(text: &str) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
}

fn with_occurrence(identity: String, seen: u32) -> String {
    if seen == 0 {
        identity
    } else {
        format!("{identity}#{seen}")
    }
}

/// The conversation externalId given to a row whose source has none: a function of the
/// row key only, so a resumed run derives the same one and can look the conversation up.
pub fn derived_conversation_id(row_key: &str) -> String {
    let digest = Sha256::digest(row_key.as_bytes());
    format!("{DERIVED_ID_PREFIX}{}", hex(&digest[..12]))
}

/// The customer externalId given to a customer with a name and nothing to find it by (an
/// anonymous visitor): a function of its row's key only, as for a conversation, so a
/// resumed run looks it up by the same one. Each such row is a customer of its own.
pub fn derived_customer_id(row_key: &str) -> String {
    let digest = Sha256::digest(["customer:", row_key].concat().as_bytes());
    format!("{DERIVED_ID_PREFIX}cust-{}", hex(&digest[..12]))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{ConversationBody, CustomerBody};

    fn plan(conversation_id: Option<&str>, subject: &str) -> Plan {
        Plan {
            customer_key: "ext:1".into(),
            customer: CustomerBody {
                external_id: Some("1".into()),
                ..Default::default()
            },
            conversation: Some(ConversationBody {
                external_id: conversation_id.map(str::to_string),
                name: Some(subject.into()),
                ..Default::default()
            }),
            thread: None,
            company: None,
        }
    }

    #[test]
    fn identical_rows_get_distinct_keys_that_repeat_across_runs() {
        let run = || {
            let mut keys = RowKeys::default();
            [plan(None, "a"), plan(None, "a"), plan(None, "b")]
                .map(|p| keys.for_plan(&p).unwrap().key)
        };
        let first = run();
        assert_eq!(first, run());
        assert_ne!(first[0], first[1]);
        assert!(first[1].ends_with("#1"));
    }

    #[test]
    fn source_ids_win_and_repeats_are_flagged() {
        let mut keys = RowKeys::default();
        let first = keys.for_plan(&plan(Some("T-1"), "a")).unwrap();
        assert_eq!(first.key, "conv:T-1");
        assert!(!first.repeats_source_id);
        assert!(
            keys.for_plan(&plan(Some("T-1"), "other"))
                .unwrap()
                .repeats_source_id
        );
    }

    #[test]
    fn a_grouped_conversation_is_keyed_by_its_id_on_its_first_line_only() {
        let mut keys = RowKeys::default();
        assert_eq!(
            keys.for_grouped("T-2").unwrap().as_deref(),
            Some("conv:T-2")
        );
        assert_eq!(
            keys.for_grouped("T-1").unwrap().as_deref(),
            Some("conv:T-1")
        );
        assert_eq!(keys.for_grouped("T-2").unwrap(), None);
        assert_eq!(keys.for_grouped("T-1").unwrap(), None);
        // The key a conversation file gives the same conversation.
        let mut file = RowKeys::default();
        assert_eq!(
            file.for_plan(&plan(Some("T-2"), "a")).unwrap().key,
            "conv:T-2"
        );
    }

    #[test]
    fn an_unmapped_rows_key_is_the_hash_of_its_json_text() {
        // Keys stay what earlier versions gave, so a checkpoint knows its refused rows.
        let raw = serde_json::json!({"email": "nope", "note": "say \"hi\""});
        let digest = Sha256::digest(raw.to_string().as_bytes());
        let expected = format!("bad:{}", hex(&digest[..12]));
        let mut keys = RowKeys::default();
        assert_eq!(keys.for_unmapped(&raw).unwrap(), expected);
        assert_eq!(keys.for_unmapped(&raw).unwrap(), format!("{expected}#1"));
    }

    #[test]
    fn derived_ids_are_stable_and_short() {
        let id = derived_conversation_id("row:abc");
        assert_eq!(id, derived_conversation_id("row:abc"));
        assert!(id.starts_with(DERIVED_ID_PREFIX) && id.len() < 40);
    }

    #[test]
    fn a_derived_customer_id_follows_the_row_key_alone_and_is_not_the_conversations() {
        let id = derived_customer_id("conv:T-1");
        assert_eq!(
            id,
            derived_customer_id("conv:T-1"),
            "a resumed run derives the same"
        );
        assert!(id.starts_with("kimp-cust-") && id.len() == "kimp-cust-".len() + 24);
        assert_ne!(id, derived_customer_id("conv:T-2"));
        assert_ne!(id[10..], derived_conversation_id("conv:T-1")[5..]);
    }

    #[test]
    fn key_columns_are_named_once_each_and_found_in_a_header() {
        assert_eq!(
            KeyColumns::parse(" email , created_at").unwrap().names(),
            ["email", "created_at"]
        );
        assert!(KeyColumns::parse("email,,x").is_err());
        assert!(
            KeyColumns::parse("email,email")
                .unwrap_err()
                .contains("twice")
        );
        let columns = KeyColumns::parse("email,created_at").unwrap();
        let headers = Arc::new(vec!["email".to_string(), "subject".to_string()]);
        let missing = columns.bind(Some(&headers)).unwrap_err();
        assert!(
            missing.contains("\"created_at\"") && missing.contains("email, subject"),
            "{missing}"
        );
    }

    #[test]
    fn rows_with_the_same_key_values_have_one_key_whatever_else_they_hold() {
        let columns = KeyColumns::parse("email,created_at").unwrap();
        let headers = Arc::new(
            ["created_at", "status", "email"]
                .map(str::to_string)
                .to_vec(),
        );
        let bound = columns.bind(Some(&headers)).unwrap();
        let csv = |values: [&str; 3]| SourceFields::Csv {
            headers: Arc::clone(&headers),
            values: values.to_vec().into(),
        };
        let today = bound
            .values(&csv(["2024-01-01", "open", " a@x.io "]))
            .unwrap();
        let tomorrow = bound
            .values(&csv(["2024-01-01", "done", "a@x.io"]))
            .unwrap();
        assert_eq!(today, tomorrow);
        assert_eq!(bound.values(&csv(["", "open", ""])), None);
        let (mut day1, mut day2) = (RowKeys::default(), RowKeys::default());
        let key = day1.for_key_values(&today).unwrap();
        assert!(key.key.starts_with("key:") && !key.repeats_source_id);
        assert_eq!(
            day2.for_key_values(&tomorrow).unwrap(),
            key,
            "the same tomorrow"
        );
        assert!(day1.for_key_values(&today).unwrap().repeats_source_id);
        let shifted = ["a@x.io2".to_string(), "024-01-01".to_string()];
        assert_ne!(
            RowKeys::default().for_key_values(&shifted).unwrap().key,
            key.key
        );
        // JSONL: dotted keys, numbers as written.
        let json = KeyColumns::parse("customer.email,created")
            .unwrap()
            .bind(None)
            .unwrap();
        let serde_json::Value::Object(object) =
            serde_json::json!({"customer": {"email": "a@x.io"}, "created": 1704067200})
        else {
            unreachable!()
        };
        assert_eq!(
            json.values(&SourceFields::Json(object)).unwrap(),
            ["a@x.io", "1704067200"]
        );
    }
}
