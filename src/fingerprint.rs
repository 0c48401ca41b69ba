//! What a record's body was when it was last sent, field by field, so that a run that reads
//! the row again (tomorrow's export) can tell which fields changed without keeping the body
//! itself: each top-level field the mapping set, with a 64-bit hash of its value as sent
//! (serde_json writes maps with sorted keys, so a value hashes the same however its source
//! ordered it). Fields the run adds, not the source (`importedAt`, the clock; a
//! conversation's `customer`, an id), are left out, so that nothing changes by itself.
//!
//! Stored as text, `field=hash` pairs in field order joined by `;`: two equal bodies have
//! equal texts, so an unchanged row costs one string comparison.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

/// Fields no fingerprint holds: set by the run, not read from the source.
const ADDED_BY_THE_RUN: [&str; 2] = ["importedAt", "customer"];

/// A body's fields and their values' hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(BTreeMap<String, u64>);

impl Fingerprint {
    /// The fingerprint of a body as it is sent.
    pub fn of(body: &impl Serialize) -> Fingerprint {
        let Ok(Value::Object(fields)) = serde_json::to_value(body) else {
            return Fingerprint::default();
        };
        Fingerprint(
            fields
                .into_iter()
                .filter(|(field, value)| {
                    !ADDED_BY_THE_RUN.contains(&field.as_str()) && !value.is_null()
                })
                .map(|(field, value)| {
                    let hash = crate::rowkey::fingerprint(&value.to_string());
                    (field, hash)
                })
                .collect(),
        )
    }

    /// The text the checkpoint keeps.
    pub fn to_text(&self) -> String {
        let mut text = String::with_capacity(self.0.len() * 24);
        for (index, (field, hash)) in self.0.iter().enumerate() {
            if index > 0 {
                text.push(';');
            }
            let _ = write!(text, "{field}={hash:016x}");
        }
        text
    }

    /// A text [`Fingerprint::to_text`] wrote; None for one it cannot have.
    pub fn parse(text: &str) -> Option<Fingerprint> {
        if text.is_empty() {
            return Some(Fingerprint::default());
        }
        text.split(';')
            .map(|pair| {
                let (field, hash) = pair.split_once('=')?;
                Some((field.to_string(), u64::from_str_radix(hash, 16).ok()?))
            })
            .collect::<Option<BTreeMap<_, _>>>()
            .map(Fingerprint)
    }

    /// The fields `now` sets to a value other than this one's, in field order. A field the
    /// source no longer sets is not among them: an update never clears what the record
    /// holds (an agent may have set it since).
    pub fn changed_in(&self, now: &Fingerprint) -> Vec<String> {
        now.0
            .iter()
            .filter(|(field, hash)| self.0.get(*field) != Some(hash))
            .map(|(field, _)| field.clone())
            .collect()
    }
}

impl Fingerprint {
    /// The fields of this fingerprint that a record read back does not hold as they were
    /// sent, in field order: a field absent from `read`, or whose value hashes otherwise.
    /// The value is hashed as [`Fingerprint::of`] hashed the body's (serde_json text, maps
    /// with sorted keys); an API that answers a list of objects (emails, phones) with
    /// members of its own (an id, nulls) is read as the body's members only, once the
    /// plain value does not match.
    pub fn fields_differing(&self, read: &serde_json::Map<String, Value>) -> Vec<String> {
        self.0
            .keys()
            .filter(|field| !self.holds(field, read.get(field.as_str())))
            .cloned()
            .collect()
    }

    /// The fields this fingerprint holds, in field order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether `value`, read back, is what this fingerprint says `field` was sent as
    /// (false for an absent value, or a field this fingerprint does not hold).
    pub fn holds(&self, field: &str, value: Option<&Value>) -> bool {
        let (Some(hash), Some(value)) = (self.0.get(field), value) else {
            return false;
        };
        let hashed = |value: &Value| crate::rowkey::fingerprint(&value.to_string());
        hashed(value) == *hash || as_sent(field, value).is_some_and(|sent| hashed(&sent) == *hash)
    }

    /// Whether the fingerprint holds no field (a record made by an older version).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A value read back, as a body would have held it, where the API may add to it: the
/// members of `emails` and `phones` that a body sends (`email`/`phone`, `type`), without
/// nulls. None when there is nothing to take away.
fn as_sent(field: &str, value: &Value) -> Option<Value> {
    let key = match field {
        "emails" => "email",
        "phones" => "phone",
        _ => return None,
    };
    let items = value.as_array()?;
    let items = items
        .iter()
        .map(|item| {
            let object = item.as_object()?;
            let kept = object
                .iter()
                .filter(|(name, value)| {
                    (name.as_str() == key || *name == "type") && !value.is_null()
                })
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            Some(Value::Object(kept))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_bodies_have_equal_texts_whatever_the_order_of_their_maps() {
        let one = json!({"name": "Ann", "custom": {"aStr": "x", "bNum": 2}, "importedAt": "t1"});
        let two = json!({"custom": {"bNum": 2, "aStr": "x"}, "importedAt": "t2", "name": "Ann"});
        let (one, two) = (Fingerprint::of(&one), Fingerprint::of(&two));
        assert_eq!(
            one.to_text(),
            two.to_text(),
            "importedAt is the clock's, not the source's"
        );
        assert!(one.to_text().starts_with("custom="));
        assert_eq!(Fingerprint::parse(&one.to_text()), Some(one));
    }

    #[test]
    fn the_fields_changed_are_those_now_set_to_another_value() {
        let before = Fingerprint::of(&json!({"name": "Ann", "status": "open", "phone": "1"}));
        let now = Fingerprint::of(&json!({"name": "Ann", "status": "done", "tags": ["a"]}));
        assert_eq!(before.changed_in(&now), ["status", "tags"]);
        assert!(now.changed_in(&now).is_empty());
        let customer_id_only = Fingerprint::of(&json!({"name": "Ann", "customer": "c2"}));
        assert!(
            Fingerprint::of(&json!({"name": "Ann"}))
                .changed_in(&customer_id_only)
                .is_empty()
        );
    }

    #[test]
    fn a_record_read_back_differs_in_the_fields_not_held_as_sent() {
        let sent = Fingerprint::of(&json!({
            "name": "Ann", "status": "open", "tags": ["a", "b"],
            "emails": [{"email": "a@x.org", "type": "work"}], "importedAt": "t"
        }));
        let read = json!({
            "name": "Ann", "status": "done", "importedAt": "t2", "createdAt": "t3",
            "emails": [{"email": "a@x.org", "type": "work", "verified": null}]
        });
        let read = read.as_object().unwrap();
        assert_eq!(sent.fields_differing(read), ["status", "tags"]);
        let held = json!({"name": "Ann", "status": "open", "tags": ["a", "b"],
            "emails": [{"type": "work", "email": "a@x.org"}]});
        assert!(sent.fields_differing(held.as_object().unwrap()).is_empty());
        assert!(Fingerprint::default().is_empty());
    }

    #[test]
    fn a_text_no_version_writes_is_not_read_as_a_fingerprint() {
        assert_eq!(Fingerprint::parse("name=zz"), None);
        assert_eq!(Fingerprint::parse("name"), None);
        assert_eq!(Fingerprint::parse(""), Some(Fingerprint::default()));
    }
}
