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

use serde::Serialize;
use serde_json::Value;

use std::sync::LazyLock;

use serde::ser::{Impossible, SerializeMap, SerializeStruct};

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
        if version == HashVersion::V2 {
            return Fingerprint::v2(body);
        }
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
            .map(|(field, value)| (field, crate::rowkey::fingerprint(&value.to_string())))
            .collect();
        Fingerprint { version, fields }
    }

    /// Version 2: each top-level value of the body written as JSON straight into its hash
    /// ([`FieldHasher`]): no tree of values is built and nothing is parsed back (a resume
    /// compares every done row).
    fn v2(body: &impl Serialize) -> Fingerprint {
        let mut fields = Vec::new();
        if body.serialize(FieldHasher(&mut fields)).is_err() {
            fields.clear();
        }
        fields.retain(|(field, hash)| {
            !ADDED_BY_THE_RUN.contains(&field.as_str()) && *hash != *NULL_HASH
        });
        fields.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Fingerprint {
            version: HashVersion::V2,
            fields,
        }
    }

    /// Whether its hashes are an earlier version's: what was recorded in it is rewritten.
    pub fn is_outdated(&self) -> bool {
        self.version != HashVersion::V2
    }

    /// Whether `text` is what [`Fingerprint::to_text`] gives, found without writing it (a
    /// resume asks this of every done row's two records).
    pub fn is_text(&self, text: &str) -> bool {
        let mut rest = text.as_bytes();
        if self.version == HashVersion::V2 {
            let Some(pairs) = rest.strip_prefix(VERSION_2.as_bytes()) else {
                return false;
            };
            rest = pairs;
        }
        for (index, (field, hash)) in self.fields.iter().enumerate() {
            if index > 0 {
                let Some(after) = rest.strip_prefix(b";") else {
                    return false;
                };
                rest = after;
            }
            let Some(after) = rest.strip_prefix(field.as_bytes()) else {
                return false;
            };
            let Some((b'=', after)) = after.split_first() else {
                return false;
            };
            let Some((digits, after)) = after.split_at_checked(16) else {
                return false;
            };
            if digits != hex16(*hash) {
                return false;
            }
            rest = after;
        }
        rest.is_empty()
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
            text.push_str(field);
            text.push('=');
            let digits = hex16(*hash);
            text.push_str(std::str::from_utf8(&digits).unwrap_or_default());
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

/// `{:016x}` of a hash, without the formatting machinery.
fn hex16(hash: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    std::array::from_fn(|at| HEX[((hash >> ((15 - at) * 4)) & 0xf) as usize])
}

/// The hash of a JSON `null`, which a fingerprint leaves out like an absent field.
static NULL_HASH: LazyLock<u64> = LazyLock::new(|| {
    let mut hash = Fnv1a::default();
    hash.write(b"null");
    hash.0
});

/// Serializes a body (a struct or a map, its flattened fields included) into its fields'
/// names and the FNV-1a hashes of their values' JSON texts, each value written by
/// serde_json into its hash. Anything but a struct or a map is not a body: an error.
struct FieldHasher<'a>(&'a mut Vec<(String, u64)>);

impl FieldHasher<'_> {
    fn field(&mut self, name: String, value: &(impl Serialize + ?Sized)) -> Result<(), BodyError> {
        let mut hash = Fnv1a::default();
        serde_json::to_writer(&mut hash, value)
            .map_err(<BodyError as serde::ser::Error>::custom)?;
        self.0.push((name, hash.0));
        Ok(())
    }
}

/// Why [`FieldHasher`] could not read a body.
#[derive(Debug)]
struct BodyError(String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

impl serde::ser::Error for BodyError {
    fn custom<T: std::fmt::Display>(message: T) -> BodyError {
        BodyError(message.to_string())
    }
}

/// Only a struct or a map is a body.
fn not_a_body<T>() -> Result<T, BodyError> {
    Err(BodyError("a body is a struct or a map".into()))
}

impl<'a> serde::Serializer for FieldHasher<'a> {
    type Ok = ();
    type Error = BodyError;
    type SerializeSeq = Impossible<(), BodyError>;
    type SerializeTuple = Impossible<(), BodyError>;
    type SerializeTupleStruct = Impossible<(), BodyError>;
    type SerializeTupleVariant = Impossible<(), BodyError>;
    type SerializeMap = BodyFields<'a>;
    type SerializeStruct = BodyFields<'a>;
    type SerializeStructVariant = Impossible<(), BodyError>;

    fn serialize_map(self, _: Option<usize>) -> Result<BodyFields<'a>, BodyError> {
        Ok(BodyFields {
            hasher: self,
            key: None,
        })
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<BodyFields<'a>, BodyError> {
        self.serialize_map(None)
    }

    fn serialize_bool(self, _: bool) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_i8(self, _: i8) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_i16(self, _: i16) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_i32(self, _: i32) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_i64(self, _: i64) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_u8(self, _: u8) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_u16(self, _: u16) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_u32(self, _: u32) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_u64(self, _: u64) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_f32(self, _: f32) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_f64(self, _: f64) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_char(self, _: char) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_str(self, _: &str) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_none(self) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_unit(self) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), BodyError> {
        not_a_body()
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, BodyError> {
        not_a_body()
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, BodyError> {
        not_a_body()
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, BodyError> {
        not_a_body()
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, BodyError> {
        not_a_body()
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, BodyError> {
        not_a_body()
    }
}

/// The fields of a body being hashed; a map's key waits for its value.
struct BodyFields<'a> {
    hasher: FieldHasher<'a>,
    key: Option<String>,
}

impl SerializeMap for BodyFields<'_> {
    type Ok = ();
    type Error = BodyError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), BodyError> {
        match serde_json::to_value(key) {
            Ok(Value::String(key)) => {
                self.key = Some(key);
                Ok(())
            }
            _ => Err(BodyError("a body's keys are text".into())),
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), BodyError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| BodyError("a value without its key".into()))?;
        self.hasher.field(key, value)
    }

    fn end(self) -> Result<(), BodyError> {
        Ok(())
    }
}

impl SerializeStruct for BodyFields<'_> {
    type Ok = ();
    type Error = BodyError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), BodyError> {
        self.hasher.field(name.to_string(), value)
    }

    fn end(self) -> Result<(), BodyError> {
        Ok(())
    }
}

/// FNV-1a, 64 bits, as its definition gives it.
struct Fnv1a(u64);

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl std::io::Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        Fnv1a::write(self, bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
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
        self.fields()
            .filter(|field| !self.holds(field, read.get(*field)))
            .map(str::to_string)
            .collect()
    }

    /// The fields this fingerprint holds, in field order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(field, _)| field.as_str())
    }

    /// Whether `value`, read back, is what this fingerprint says `field` was sent as
    /// (false for an absent value, or a field this fingerprint does not hold).
    pub fn holds(&self, field: &str, value: Option<&Value>) -> bool {
        let (Some(hash), Some(value)) = (self.hash_of(field), value) else {
            return false;
        };
        self.hash_value(value) == hash
            || as_sent(field, value).is_some_and(|sent| self.hash_value(&sent) == hash)
    }

    /// A value's hash in this fingerprint's version.
    fn hash_value(&self, value: &Value) -> u64 {
        match self.version {
            HashVersion::V1 => crate::rowkey::fingerprint(&value.to_string()),
            HashVersion::V2 => {
                let mut hash = Fnv1a::default();
                // Writing a Value into a hash cannot fail.
                let _ = serde_json::to_writer(&mut hash, value);
                hash.0
            }
        }
    }

    /// Whether the fingerprint holds no field (a record made by an older version).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// What a thread's items were, as one number: the sum (modulo 2^62, so that SQLite's
/// 64-bit integers add it without overflow) of each item's hash of its kind, its identity
/// in the thread (`history::item_identity`) and its fingerprint's text. The thread store
/// adds up what it stages; the planner adds up the done records the checkpoint holds of the
/// row: equal sums say that every item is recorded as sent as it reads now, with no item
/// read back (an unchanged thread costs one comparison), and unequal ones that an item is
/// new, edited, or recorded by a version before migration 016.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadDigest(u64);

impl ThreadDigest {
    const MODULUS_MASK: u64 = (1 << 62) - 1;

    /// One item's term.
    pub fn item(kind: &str, identity: &str, fingerprint: &str) -> u64 {
        let mut hash = Fnv1a::default();
        for part in [kind, identity, fingerprint] {
            hash.write(part.as_bytes());
            hash.write(&[0]);
        }
        hash.0 & ThreadDigest::MODULUS_MASK
    }

    /// Adds one item's term.
    pub fn add(&mut self, term: u64) {
        self.0 = (self.0 + (term & ThreadDigest::MODULUS_MASK)) & ThreadDigest::MODULUS_MASK;
    }

    /// As SQLite keeps it (below 2^62: never negative).
    pub fn to_stored(self) -> i64 {
        self.0 as i64
    }

    pub fn from_stored(stored: i64) -> ThreadDigest {
        ThreadDigest(stored as u64 & ThreadDigest::MODULUS_MASK)
    }
}

/// The modulus of [`ThreadDigest`]'s sum, as SQL adds a term to it.
pub const THREAD_DIGEST_MODULUS: i64 = 1 << 62;

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
        assert!(one.to_text().starts_with("2:custom="));
        assert!(one.is_text(&one.to_text()) && one.is_text(&two.to_text()));
        let other = Fingerprint::of(&json!({"name": "Ann B", "custom": {"aStr": "x", "bNum": 2}}));
        assert!(!one.is_text(&other.to_text()));
        assert!(
            !one.is_text(&one.to_text()[2..]),
            "a version 1 text is another"
        );
        assert!(!one.is_text(&format!("{};x=0000000000000000", one.to_text())));
        assert_eq!(format!("{:016x}", 0x0abc_u64).as_bytes(), hex16(0x0abc));
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
    fn a_thread_digest_is_its_items_sum_in_any_order_and_changes_with_any_item() {
        let terms = [
            ThreadDigest::item("message", "m1", "2:preview=00"),
            ThreadDigest::item("message", "m2", "2:preview=01"),
            ThreadDigest::item("note", "n1", "2:body=02"),
        ];
        let (mut forward, mut backward) = (ThreadDigest::default(), ThreadDigest::default());
        terms.iter().for_each(|term| forward.add(*term));
        terms.iter().rev().for_each(|term| backward.add(*term));
        assert_eq!(forward, backward);
        assert_eq!(ThreadDigest::from_stored(forward.to_stored()), forward);
        assert!(forward.to_stored() >= 0 && forward.to_stored() < THREAD_DIGEST_MODULUS);
        // The bodies of two messages swapped: another digest.
        let mut swapped = ThreadDigest::default();
        swapped.add(ThreadDigest::item("message", "m1", "2:preview=01"));
        swapped.add(ThreadDigest::item("message", "m2", "2:preview=00"));
        swapped.add(terms[2]);
        assert_ne!(swapped, forward);
        // SQL's `(digest + term) % 2^62` is the same sum.
        let sql = terms.iter().fold(0i64, |sum, term| {
            (sum + *term as i64) % THREAD_DIGEST_MODULUS
        });
        assert_eq!(ThreadDigest::from_stored(sql), forward);
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        let of = |bytes: &[u8]| {
            let mut hash = Fnv1a::default();
            hash.write(bytes);
            hash.0
        };
        // The test vectors of its definition.
        assert_eq!(of(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(of(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(of(b"foobar"), 0x8594_4171_f739_67e8);
        // A field's hash is that of its value's JSON text.
        let print = Fingerprint::of(&json!({"name": "a", "importedAt": "now", "x": null}));
        assert_eq!(print.fields, [("name".to_string(), of(b"\"a\""))]);
    }
}
