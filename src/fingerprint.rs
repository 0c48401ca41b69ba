//! What a record's body was when it was last sent, field by field, so that a run that reads
//! the row again (tomorrow's export) can tell which fields changed without keeping the body
//! itself: each top-level field the mapping set, with a 64-bit hash of its value as sent
//! (serde_json writes maps with sorted keys, so a value hashes the same however its source
//! ordered it). Fields the run adds, not the source (`importedAt`, the clock; a
//! conversation's `customer`, an id), are left out, so that nothing changes by itself.
//!
//! Stored as text, `field=hash` pairs in field order joined by `;`, after the version of the
//! hash (`2:`): two equal bodies have equal texts, so an unchanged row costs one string
//! comparison. Version 2 hashes with FNV-1a (64 bits, fixed by its definition, a few
//! nanoseconds a value); version 1, which the release before it wrote (no prefix), with the
//! first 8 bytes of SHA-256: eight of those a row were most of a nightly resume's time (a
//! re-run over 1M done rows, all unchanged, took 2.3 times a skip of them). A version 1
//! text is compared in version 1 ([`Fingerprint::like`]) and then rewritten in version 2.

use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

/// Fields no fingerprint holds: set by the run, not read from the source.
const ADDED_BY_THE_RUN: [&str; 2] = ["importedAt", "customer"];

/// The prefix of a version 2 text.
const VERSION_2: &str = "2:";

/// How a fingerprint's hashes were made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HashVersion {
    /// SHA-256's first 8 bytes (the release that brought fingerprints).
    V1,
    /// FNV-1a, 64 bits: what this version writes.
    #[default]
    V2,
}

/// A body's fields and their values' hashes, in field order (a body's fields come sorted
/// from serde_json's map: no map of our own is built, one a row being a resume's cost).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    version: HashVersion,
    fields: Vec<(String, u64)>,
}

impl Fingerprint {
    /// The fingerprint of a body as it is sent, as this version records it.
    pub fn of(body: &impl Serialize) -> Fingerprint {
        Fingerprint::in_version(body, HashVersion::V2)
    }

    /// The fingerprint of a body made as `stored` was (a text an earlier version wrote is
    /// compared in its own hash), so that the two can be compared.
    pub fn like(stored: Option<&str>, body: &impl Serialize) -> Fingerprint {
        let version = match stored {
            Some(text) if !text.is_empty() && !text.starts_with(VERSION_2) => HashVersion::V1,
            _ => HashVersion::V2,
        };
        Fingerprint::in_version(body, version)
    }

    fn in_version(body: &impl Serialize, version: HashVersion) -> Fingerprint {
        let Ok(Value::Object(fields)) = serde_json::to_value(body) else {
            return Fingerprint {
                version,
                ..Fingerprint::default()
            };
        };
        let fields = fields
            .into_iter()
            .filter(|(field, value)| {
                !ADDED_BY_THE_RUN.contains(&field.as_str()) && !value.is_null()
            })
            .map(|(field, value)| {
                let hash = match version {
                    HashVersion::V1 => crate::rowkey::fingerprint(&value.to_string()),
                    HashVersion::V2 => fnv1a(&value),
                };
                (field, hash)
            })
            .collect();
        Fingerprint { version, fields }
    }

    /// Whether its hashes are an earlier version's: what was recorded in it is rewritten.
    pub fn is_outdated(&self) -> bool {
        self.version != HashVersion::V2
    }

    /// The text the checkpoint keeps.
    pub fn to_text(&self) -> String {
        let mut text = String::with_capacity(2 + self.fields.len() * 24);
        if self.version == HashVersion::V2 {
            text.push_str(VERSION_2);
        }
        for (index, (field, hash)) in self.fields.iter().enumerate() {
            if index > 0 {
                text.push(';');
            }
            let _ = write!(text, "{field}={hash:016x}");
        }
        text
    }

    /// A text [`Fingerprint::to_text`] (of this version or the one before) wrote; None for
    /// one it cannot have.
    pub fn parse(text: &str) -> Option<Fingerprint> {
        let (version, pairs) = match text.strip_prefix(VERSION_2) {
            Some(pairs) => (HashVersion::V2, pairs),
            None => (HashVersion::V1, text),
        };
        if pairs.is_empty() {
            return Some(Fingerprint {
                version,
                fields: Vec::new(),
            });
        }
        let fields: Vec<(String, u64)> = pairs
            .split(';')
            .map(|pair| {
                let (field, hash) = pair.split_once('=')?;
                Some((field.to_string(), u64::from_str_radix(hash, 16).ok()?))
            })
            .collect::<Option<_>>()?;
        // Written in field order, once each; anything else no version wrote.
        let ordered = fields.windows(2).all(|pair| pair[0].0 < pair[1].0);
        ordered.then_some(Fingerprint { version, fields })
    }

    /// The fields `now` sets to a value other than this one's, in field order. A field the
    /// source no longer sets is not among them: an update never clears what the record
    /// holds (an agent may have set it since). Both must be of one version (see
    /// [`Fingerprint::like`]); of two, every field `now` sets is taken as changed.
    pub fn changed_in(&self, now: &Fingerprint) -> Vec<String> {
        now.fields
            .iter()
            .filter(|(field, hash)| {
                self.version != now.version || self.hash_of(field) != Some(*hash)
            })
            .map(|(field, _)| field.clone())
            .collect()
    }

    fn hash_of(&self, field: &str) -> Option<u64> {
        let at = self
            .fields
            .binary_search_by(|(name, _)| name.as_str().cmp(field))
            .ok()?;
        Some(self.fields[at].1)
    }
}

/// FNV-1a (64 bits) of a value's JSON text, written straight into the hash.
fn fnv1a(value: &Value) -> u64 {
    let mut hash = Fnv1a::default();
    // Writing a Value into memory cannot fail.
    let _ = serde_json::to_writer(&mut hash, value);
    hash.0
}

/// FNV-1a, 64 bits, as its definition gives it.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl std::io::Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
        assert!(one.to_text().starts_with("2:custom="));
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
    fn a_text_no_version_writes_is_not_read_as_a_fingerprint() {
        assert_eq!(Fingerprint::parse("name=zz"), None);
        assert_eq!(Fingerprint::parse("2:name"), None);
        assert_eq!(
            Fingerprint::parse("2:"),
            Some(Fingerprint::default()),
            "a body with no field"
        );
    }

    #[test]
    fn a_text_of_the_release_before_is_compared_in_its_own_hash() {
        let body = json!({"name": "Ann", "status": "open"});
        // What the release before wrote for it: SHA-256's first 8 bytes of each value.
        let v1 = format!(
            "name={:016x};status={:016x}",
            crate::rowkey::fingerprint("\"Ann\""),
            crate::rowkey::fingerprint("\"open\"")
        );
        let stored = Fingerprint::parse(&v1).unwrap();
        let now = Fingerprint::like(Some(&v1), &body);
        assert!(now.is_outdated());
        assert!(stored.changed_in(&now).is_empty(), "unchanged in version 1");
        let changed = Fingerprint::like(Some(&v1), &json!({"name": "Ann", "status": "done"}));
        assert_eq!(stored.changed_in(&changed), ["status"]);
        // Compared across versions, every field counts as changed: never silently equal.
        assert_eq!(
            stored.changed_in(&Fingerprint::of(&body)),
            ["name", "status"]
        );
        let v2 = Fingerprint::of(&body).to_text();
        assert!(!Fingerprint::like(Some(&v2), &body).is_outdated());
        assert_ne!(v2.trim_start_matches("2:"), v1, "another hash");
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        use std::io::Write;
        let of = |bytes: &[u8]| {
            let mut hash = Fnv1a::default();
            hash.write_all(bytes).unwrap();
            hash.0
        };
        // The test vectors of its definition.
        assert_eq!(of(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(of(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(of(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a(&json!("a")), of(b"\"a\""));
    }
}
