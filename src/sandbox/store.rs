//! The sandbox's records and their indexes: customers and conversations in creation order,
//! the uniqueness indexes that make a reused customer externalId, email (case-insensitive)
//! or phone (digits only) a duplicate, the lookups the API offers (`externalId=`, `email=`,
//! `phone=`, or a bare id), and id generation (24 lowercase hex characters, unique). Bodies
//! reaching this module have already passed `validate.rs`; conversions are tolerant anyway
//! and never panic.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::journal::{Entry, EntryRef, Journal};
use super::thread::{Thread, ThreadKind, ThreadRecord, Threads};
use super::validate::{FieldError, phone_digits};

/// One email of a customer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EmailEntry {
    pub email: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// One phone of a customer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PhoneEntry {
    pub phone: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A customer as the sandbox holds it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomerRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default)]
    pub emails: Vec<EmailEntry>,
    #[serde(default)]
    pub phones: Vec<PhoneEntry>,
    /// Every other accepted field (company, externalIds, importedAt, createdAt, tags, custom).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// A conversation as the sandbox holds it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConversationRecord {
    pub id: String,
    /// The customer's id.
    pub customer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// `open` when the body gave none, as the API does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Every other accepted field (importedAt, createdAt, tags, priority, direction).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// Everything the sandbox holds, in creation order (`GET /__records`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Records {
    pub customers: Vec<CustomerRecord>,
    pub conversations: Vec<ConversationRecord>,
    /// Each conversation's messages and notes in the order they were made, conversations
    /// in creation order; a conversation with neither is left out.
    #[serde(default)]
    pub threads: Vec<Thread>,
}

impl Records {
    /// A conversation's messages and notes, in the order they were made (empty when it has
    /// none, or is not held).
    pub fn thread(&self, conversation_id: &str) -> &[ThreadRecord] {
        self.threads
            .iter()
            .find(|t| t.conversation == conversation_id)
            .map_or(&[], |t| t.items.as_slice())
    }

    /// Messages held, in all threads.
    pub fn message_count(&self) -> usize {
        self.count(ThreadKind::Message)
    }

    /// Notes held, in all threads.
    pub fn note_count(&self) -> usize {
        self.count(ThreadKind::Note)
    }

    fn count(&self, kind: ThreadKind) -> usize {
        let items = self.threads.iter().flat_map(|t| &t.items);
        items.filter(|r| r.kind == kind).count()
    }
}

/// A customer body that reuses a key another customer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// `externalId`, `email` or `phone`.
    pub field: &'static str,
    /// The value as the body gave it.
    pub value: String,
    /// JSON pointer into the body.
    pub pointer: String,
    /// Id of the customer that holds it.
    pub existing_id: String,
}

impl Conflict {
    /// The words of the 409 answer.
    pub fn detail(&self) -> String {
        format!(
            "{} {} is already used by customer {}",
            self.field, self.value, self.existing_id
        )
    }
}

/// What a lookup path segment asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Id(String),
    ExternalId(String),
    Email(String),
    Phone(String),
}

/// Why a lookup segment could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// `key=value` with a key the endpoint does not know.
    UnknownKey(String),
    /// The value does not percent-decode to UTF-8.
    BadEncoding,
}

/// Reads a lookup path segment as the client sent it (still percent-encoded):
/// `externalId=X`, `email=X`, `phone=X` (customers only) or a bare id. The value is
/// percent-decoded; `+` stays a plus (it is a path, not a query).
pub fn parse_lookup(segment: &str, customer: bool) -> Result<Lookup, LookupError> {
    let Some((key, raw)) = segment.split_once('=') else {
        let id = percent_decode(segment).ok_or(LookupError::BadEncoding)?;
        return Ok(Lookup::Id(id));
    };
    let value = percent_decode(raw).ok_or(LookupError::BadEncoding)?;
    match key {
        "externalId" => Ok(Lookup::ExternalId(value)),
        "email" if customer => Ok(Lookup::Email(value)),
        "phone" if customer => Ok(Lookup::Phone(value)),
        _ => Err(LookupError::UnknownKey(key.to_owned())),
    }
}

/// Percent-decodes `s`; a `%` not followed by two hex digits stays as it is. `None` when the
/// result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// Makes ids shaped like Kustomer's (MongoDB ObjectIds): 4 bytes of Unix seconds, 5 random
/// bytes fixed per store, a 3-byte counter; 24 lowercase hex characters.
#[derive(Debug)]
struct IdGen {
    random: u64,
    counter: u32,
}

impl IdGen {
    fn new() -> Self {
        let mut rng = rand::rng();
        IdGen {
            random: rng.random::<u64>() & 0xff_ffff_ffff,
            counter: rng.random::<u32>() & 0xff_ffff,
        }
    }

    fn next(&mut self) -> String {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            & 0xffff_ffff;
        self.counter = (self.counter + 1) & 0xff_ffff;
        format!("{secs:08x}{:010x}{:06x}", self.random, self.counter)
    }
}

/// Why a create made no record.
#[derive(Debug)]
pub enum InsertError {
    /// A customer body reuses keys other customers hold (409).
    Conflicts(Vec<Conflict>),
    /// A conversation names no customer held here (422).
    MissingCustomer(FieldError),
    /// The records file could not be written: the record is not made, as if the request
    /// had failed before the write (503).
    Unrecorded(std::io::Error),
}

/// The records and their indexes.
#[derive(Debug)]
pub struct Store {
    customers: Vec<CustomerRecord>,
    conversations: Vec<ConversationRecord>,
    customer_by_id: HashMap<String, usize>,
    conversation_by_id: HashMap<String, usize>,
    /// Customer externalId, exact.
    by_external_id: HashMap<String, usize>,
    /// Customer email, lowercased.
    by_email: HashMap<String, usize>,
    /// Customer phone, digits only.
    by_phone: HashMap<String, usize>,
    /// Conversation externalId, exact: not unique, creation order.
    conversations_by_external_id: HashMap<String, Vec<usize>>,
    /// Messages and notes.
    threads: Threads,
    ids: IdGen,
    /// Where every record is written before it counts as made, if anywhere.
    journal: Option<Journal>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Store {
            customers: Vec::new(),
            conversations: Vec::new(),
            customer_by_id: HashMap::new(),
            conversation_by_id: HashMap::new(),
            by_external_id: HashMap::new(),
            by_email: HashMap::new(),
            by_phone: HashMap::new(),
            conversations_by_external_id: HashMap::new(),
            threads: Threads::default(),
            ids: IdGen::new(),
            journal: None,
        }
    }

    /// A store that keeps its records in the log at `path`, with the records it already
    /// holds, ids and all.
    pub fn with_journal(path: &Path) -> std::io::Result<Store> {
        let (journal, entries) = Journal::open(path)?;
        let mut store = Store::new();
        for entry in entries {
            match entry {
                Entry::Customer(record) => store.index_customer(record),
                Entry::Conversation(record) => store.index_conversation(record),
                Entry::Thread(record) => {
                    store.threads.add(record);
                    0
                }
            };
        }
        store.journal = Some(journal);
        Ok(store)
    }

    pub fn customer_count(&self) -> usize {
        self.customers.len()
    }

    pub fn conversation_count(&self) -> usize {
        self.conversations.len()
    }

    pub fn records(&self) -> Records {
        Records {
            customers: self.customers.clone(),
            conversations: self.conversations.clone(),
            threads: self
                .threads
                .threads(self.conversations.iter().map(|c| c.id.as_str())),
        }
    }

    /// A new id, unique among the records (bulk jobs take theirs from here too).
    pub fn new_id(&mut self) -> String {
        loop {
            let id = self.ids.next();
            if !self.customer_by_id.contains_key(&id)
                && !self.conversation_by_id.contains_key(&id)
                && !self.threads.holds_id(&id)
            {
                return id;
            }
        }
    }

    /// The keys of a customer body that another customer already holds.
    pub fn customer_conflicts(&self, body: &Map<String, Value>) -> Vec<Conflict> {
        let record = customer_from_body(String::new(), body);
        let mut conflicts = Vec::new();
        let mut push = |field, value: &str, pointer: String, index: Option<&usize>| {
            if let Some(existing) = index.and_then(|&i| self.customers.get(i)) {
                conflicts.push(Conflict {
                    field,
                    value: value.to_owned(),
                    pointer,
                    existing_id: existing.id.clone(),
                });
            }
        };
        if let Some(external_id) = &record.external_id {
            push(
                "externalId",
                external_id,
                "/externalId".into(),
                self.by_external_id.get(external_id),
            );
        }
        for (i, entry) in record.emails.iter().enumerate() {
            let index = self.by_email.get(&entry.email.to_lowercase());
            push("email", &entry.email, format!("/emails/{i}/email"), index);
        }
        for (i, entry) in record.phones.iter().enumerate() {
            let index = self.by_phone.get(&phone_digits(&entry.phone));
            push("phone", &entry.phone, format!("/phones/{i}/phone"), index);
        }
        conflicts
    }

    /// Creates a customer from a validated body, or says which keys are taken.
    pub fn insert_customer(
        &mut self,
        body: &Map<String, Value>,
    ) -> Result<&CustomerRecord, InsertError> {
        let conflicts = self.customer_conflicts(body);
        if !conflicts.is_empty() {
            return Err(InsertError::Conflicts(conflicts));
        }
        let record = customer_from_body(self.new_id(), body);
        self.record(EntryRef::Customer(&record))?;
        let index = self.index_customer(record);
        Ok(&self.customers[index])
    }

    /// Writes a record to the log, if the store keeps one, before it counts as made.
    fn record(&mut self, entry: EntryRef) -> Result<(), InsertError> {
        match &mut self.journal {
            Some(journal) => journal.append(entry).map_err(InsertError::Unrecorded),
            None => Ok(()),
        }
    }

    /// Adds a customer to the records and the indexes; returns its position.
    fn index_customer(&mut self, record: CustomerRecord) -> usize {
        let index = self.customers.len();
        if let Some(external_id) = &record.external_id {
            self.by_external_id.insert(external_id.clone(), index);
        }
        for entry in &record.emails {
            self.by_email.insert(entry.email.to_lowercase(), index);
        }
        for entry in &record.phones {
            self.by_phone.insert(phone_digits(&entry.phone), index);
        }
        self.customer_by_id.insert(record.id.clone(), index);
        self.customers.push(record);
        index
    }

    /// The problem with a conversation body's `customer`, if it names no customer held here.
    pub fn missing_customer(&self, body: &Map<String, Value>) -> Option<FieldError> {
        let customer = body.get("customer")?.as_str()?;
        (!self.customer_by_id.contains_key(customer)).then(|| FieldError {
            pointer: "/customer".into(),
            detail: format!("customer {customer} does not exist"),
        })
    }

    /// Creates a conversation from a validated body, or says its customer does not exist.
    pub fn insert_conversation(
        &mut self,
        body: &Map<String, Value>,
    ) -> Result<&ConversationRecord, InsertError> {
        if let Some(error) = self.missing_customer(body) {
            return Err(InsertError::MissingCustomer(error));
        }
        let record = conversation_from_body(self.new_id(), body);
        self.record(EntryRef::Conversation(&record))?;
        let index = self.index_conversation(record);
        Ok(&self.conversations[index])
    }

    /// Adds a conversation to the records and the index; returns its position.
    fn index_conversation(&mut self, record: ConversationRecord) -> usize {
        let index = self.conversations.len();
        if let Some(external_id) = &record.external_id {
            self.conversations_by_external_id
                .entry(external_id.clone())
                .or_default()
                .push(index);
        }
        self.conversation_by_id.insert(record.id.clone(), index);
        self.conversations.push(record);
        index
    }

    /// The customer of a conversation held here; None when there is no such conversation.
    pub fn conversation_customer(&self, conversation_id: &str) -> Option<&str> {
        let index = self.conversation_by_id.get(conversation_id)?;
        self.conversations.get(*index).map(|c| c.customer.as_str())
    }

    /// Creates a message or note of a conversation held here (the caller checked that it
    /// is), from a checked body.
    pub fn insert_thread_item(
        &mut self,
        kind: ThreadKind,
        conversation_id: &str,
        body: &Map<String, Value>,
    ) -> Result<&ThreadRecord, InsertError> {
        let customer = self
            .conversation_customer(conversation_id)
            .unwrap_or_default()
            .to_owned();
        let record = ThreadRecord::new(self.new_id(), kind, conversation_id, &customer, body);
        self.record(EntryRef::Thread(&record))?;
        Ok(self.threads.add(record))
    }

    /// Messages and notes.
    pub fn threads(&self) -> &Threads {
        &self.threads
    }

    /// Finds a customer; emails compare case-insensitively, phones by their digits.
    pub fn find_customer(&self, lookup: &Lookup) -> Option<&CustomerRecord> {
        let index = match lookup {
            Lookup::Id(id) => self.customer_by_id.get(id),
            Lookup::ExternalId(x) => self.by_external_id.get(x),
            Lookup::Email(x) => self.by_email.get(&x.to_lowercase()),
            Lookup::Phone(x) => {
                let digits = phone_digits(x);
                if digits.is_empty() {
                    None
                } else {
                    self.by_phone.get(&digits)
                }
            }
        }?;
        self.customers.get(*index)
    }

    /// Finds a conversation by id, or the first one created with an externalId.
    pub fn find_conversation(&self, lookup: &Lookup) -> Option<&ConversationRecord> {
        let index = match lookup {
            Lookup::Id(id) => self.conversation_by_id.get(id),
            Lookup::ExternalId(x) => self
                .conversations_by_external_id
                .get(x)
                .and_then(|all| all.first()),
            Lookup::Email(_) | Lookup::Phone(_) => None,
        }?;
        self.conversations.get(*index)
    }
}

fn string_field(body: &Map<String, Value>, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn entries(body: &Map<String, Value>, list: &str, key: &str) -> Vec<(String, Option<String>)> {
    body.get(list)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    let value = item.get(key)?.as_str()?.to_owned();
                    let kind = item.get("type").and_then(Value::as_str).map(str::to_owned);
                    Some((value, kind))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn rest(body: &Map<String, Value>, known: &[&str]) -> Map<String, Value> {
    body.iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn customer_from_body(id: String, body: &Map<String, Value>) -> CustomerRecord {
    CustomerRecord {
        id,
        name: string_field(body, "name"),
        external_id: string_field(body, "externalId"),
        emails: entries(body, "emails", "email")
            .into_iter()
            .map(|(email, kind)| EmailEntry { email, kind })
            .collect(),
        phones: entries(body, "phones", "phone")
            .into_iter()
            .map(|(phone, kind)| PhoneEntry { phone, kind })
            .collect(),
        extra: rest(body, &["name", "externalId", "emails", "phones"]),
    }
}

fn conversation_from_body(id: String, body: &Map<String, Value>) -> ConversationRecord {
    ConversationRecord {
        id,
        customer: string_field(body, "customer").unwrap_or_default(),
        name: string_field(body, "name"),
        channel: string_field(body, "channel"),
        status: string_field(body, "status").or_else(|| Some("open".into())),
        external_id: string_field(body, "externalId"),
        extra: rest(
            body,
            &["customer", "name", "channel", "status", "externalId"],
        ),
    }
}

/// The `attributes` of a record in an API answer: its fields without the id, `extra` merged
/// in at the top level.
pub fn attributes<T: Serialize>(record: &T) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.remove("id");
        if let Some(Value::Object(extra)) = object.remove("extra") {
            for (k, v) in extra {
                object.entry(k).or_insert(v);
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conflicts_of(error: InsertError) -> Vec<Conflict> {
        match error {
            InsertError::Conflicts(conflicts) => conflicts,
            _ => Vec::new(),
        }
    }

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn ids_are_24_lowercase_hex_and_unique() {
        let mut store = Store::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let body = obj(json!({"externalId": format!("c{i}")}));
            let id = store.insert_customer(&body).map(|r| r.id.clone());
            let id = id.unwrap_or_default();
            assert_eq!(id.len(), 24);
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            );
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn duplicate_keys_are_conflicts() {
        let mut store = Store::new();
        let first = store
            .insert_customer(&obj(json!({
                "externalId": "c-1",
                "emails": [{"email": "Ada@Example.com"}],
                "phones": [{"phone": "+1 (555) 123-4567"}]
            })))
            .map(|r| r.id.clone())
            .unwrap_or_default();

        let conflicts = store
            .insert_customer(&obj(
                json!({"emails": [{"email": "x@y.co"}, {"email": "ada@EXAMPLE.com"}]}),
            ))
            .err()
            .map(conflicts_of)
            .unwrap_or_default();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].pointer, "/emails/1/email");
        assert_eq!(
            conflicts[0].detail(),
            format!("email ada@EXAMPLE.com is already used by customer {first}")
        );

        let conflicts = store
            .insert_customer(&obj(
                json!({"externalId": "c-1", "phones": [{"phone": "15551234567"}]}),
            ))
            .err()
            .map(conflicts_of)
            .unwrap_or_default();
        let fields: Vec<_> = conflicts.iter().map(|c| c.field).collect();
        assert_eq!(fields, vec!["externalId", "phone"]);

        // externalIds differ in case: not a duplicate; refused bodies left no trace.
        assert!(
            store
                .insert_customer(&obj(json!({"externalId": "C-1"})))
                .is_ok()
        );
        assert!(
            store
                .insert_customer(&obj(json!({"emails": [{"email": "x@y.co"}]})))
                .is_ok()
        );
        assert_eq!(store.customer_count(), 3);
    }

    #[test]
    fn conversations_need_a_customer_and_repeat_external_ids() {
        let mut store = Store::new();
        let missing = store.insert_conversation(&obj(json!({"customer": "nobody"})));
        let pointer = match missing {
            Err(InsertError::MissingCustomer(error)) => Some(error.pointer),
            _ => None,
        };
        assert_eq!(pointer, Some("/customer".into()));
        let customer = store
            .insert_customer(&obj(json!({"name": "A"})))
            .map(|r| r.id.clone())
            .unwrap_or_default();
        let body = obj(json!({"customer": customer, "externalId": "t-1", "priority": 2}));
        let a = store.insert_conversation(&body).map(|r| r.id.clone()).ok();
        let b = store.insert_conversation(&body).map(|r| r.id.clone()).ok();
        assert!(a.is_some() && b.is_some() && a != b);
        assert_eq!(store.conversation_count(), 2);
        let found = store.find_conversation(&Lookup::ExternalId("t-1".into()));
        assert_eq!(found.map(|r| r.id.clone()), a);
        let record = &store.records().conversations[1];
        assert_eq!(record.status.as_deref(), Some("open"));
        assert_eq!(record.extra.get("priority"), Some(&json!(2)));
    }

    #[test]
    fn a_store_on_a_records_file_holds_what_an_earlier_store_made_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let (customer, conversation) = {
            let mut store = Store::with_journal(&path).unwrap();
            let body = json!({"externalId": "c-1", "emails": [{"email": "a@b.co"}]});
            let customer = store.insert_customer(&obj(body)).unwrap().id.clone();
            let body = json!({"customer": customer, "externalId": "t-1"});
            let conversation = store.insert_conversation(&obj(body)).unwrap().id.clone();
            let refused = store.insert_customer(&obj(json!({"externalId": "c-1"})));
            assert!(matches!(refused, Err(InsertError::Conflicts(_))));
            (customer, conversation)
        };
        let mut store = Store::with_journal(&path).unwrap();
        assert_eq!(store.customer_count(), 1, "a refused body was not kept");
        let found = store.find_customer(&Lookup::Email("A@B.co".into()));
        assert_eq!(found.map(|r| r.id.clone()), Some(customer.clone()));
        let found = store.find_conversation(&Lookup::ExternalId("t-1".into()));
        assert_eq!(found.map(|r| r.id.clone()), Some(conversation));
        let again = store.insert_customer(&obj(json!({"emails": [{"email": "a@B.co"}]})));
        assert!(matches!(again, Err(InsertError::Conflicts(_))));
        let body = json!({"customer": customer, "externalId": "t-2"});
        assert!(store.insert_conversation(&obj(body)).is_ok());
        assert_eq!(Store::with_journal(&path).unwrap().conversation_count(), 2);
    }

    #[test]
    fn a_record_the_file_cannot_keep_is_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new();
        store.journal = Some(Journal::unwritable(&dir.path().join("r.jsonl")).unwrap());
        let refused = store.insert_customer(&obj(json!({"externalId": "c-1"})));
        assert!(matches!(refused, Err(InsertError::Unrecorded(_))));
        assert_eq!(store.customer_count(), 0);
        assert!(
            store
                .find_customer(&Lookup::ExternalId("c-1".into()))
                .is_none()
        );
    }

    #[test]
    fn lookups() {
        let mut store = Store::new();
        let id = store
            .insert_customer(&obj(json!({
                "externalId": "c 1/2",
                "emails": [{"email": "A+B@x.com", "type": "work"}],
                "phones": [{"phone": "+1 555 123 4567"}]
            })))
            .map(|r| r.id.clone())
            .unwrap_or_default();
        for segment in [
            "externalId=c%201%2F2",
            "email=a%2Bb%40x.com",
            "email=a+b@X.COM",
            "phone=%2B15551234567",
            "phone=1-555-123-4567",
            id.as_str(),
        ] {
            let lookup = parse_lookup(segment, true);
            let found = lookup.ok().and_then(|l| store.find_customer(&l));
            assert_eq!(found.map(|r| r.id.as_str()), Some(id.as_str()), "{segment}");
        }
        for segment in [
            "externalId=C%201%2F2",
            "email=ab%40x.com",
            "phone=",
            "email=",
        ] {
            let lookup = parse_lookup(segment, true);
            let found = lookup.ok().and_then(|l| store.find_customer(&l));
            assert!(found.is_none(), "{segment}");
        }
    }

    #[test]
    fn lookup_decoding() {
        assert_eq!(
            parse_lookup("email=a%2Bb%40x.com", true),
            Ok(Lookup::Email("a+b@x.com".into()))
        );
        assert_eq!(
            parse_lookup("externalId=a%3Db=c", false),
            Ok(Lookup::ExternalId("a=b=c".into()))
        );
        assert_eq!(
            parse_lookup("externalId=100%", true),
            Ok(Lookup::ExternalId("100%".into()))
        );
        assert_eq!(
            parse_lookup("externalId=caf%C3%A9", true),
            Ok(Lookup::ExternalId("café".into()))
        );
        assert_eq!(
            parse_lookup("externalId=%FF", true),
            Err(LookupError::BadEncoding)
        );
        assert_eq!(
            parse_lookup("email=a@b.co", false),
            Err(LookupError::UnknownKey("email".into()))
        );
        assert_eq!(
            parse_lookup("name=x", true),
            Err(LookupError::UnknownKey("name".into()))
        );
        assert_eq!(parse_lookup("abc", true), Ok(Lookup::Id("abc".into())));
    }

    #[test]
    fn attributes_merge_extra_and_drop_id() {
        let record = CustomerRecord {
            id: "x".into(),
            name: Some("A".into()),
            external_id: Some("e".into()),
            emails: vec![],
            phones: vec![],
            extra: obj(json!({"company": "C"})),
        };
        assert_eq!(
            attributes(&record),
            json!({"name": "A", "externalId": "e", "emails": [], "phones": [], "company": "C"})
        );
    }
}
