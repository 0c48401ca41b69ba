//! The sandbox's records and their indexes: customers and conversations in creation order
//! (their messages and notes in `thread.rs`, held here and kept in the same records file),
//! the uniqueness indexes that make a reused customer externalId, email (case-insensitive)
//! or phone (digits only) a duplicate, the lookups the API offers (`externalId=`, `email=`,
//! `phone=`, or a bare id), id generation (24 lowercase hex characters, unique), and
//! updates: a record merged with or replaced by an update's body ([`UpdateMode`]), its
//! indexes moved with it, `createdAt` kept and `updatedAt` advanced. Bodies reaching this
//! module have already passed `validate.rs`; conversions are tolerant anyway and never
//! panic.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::companies::{Companies, CompanyRecord, company_from_body};
use super::journal::{Deleted, Entry, EntryRef, Journal};
use super::tags::{TagRecord, Tags};
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
    /// When the last update wrote it (RFC 3339, milliseconds); None until one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
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
    /// When the last update wrote it (RFC 3339, milliseconds); None until one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
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
    /// Companies in creation order.
    #[serde(default)]
    pub companies: Vec<CompanyRecord>,
    /// The org's tags, seeded ones first, then those appends made, in creation order.
    #[serde(default)]
    pub tags: Vec<TagRecord>,
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

/// How an update treats the fields its body leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    /// `PATCH`, and `PUT ?replace=false`: each field the body gives replaces the record's
    /// whole (a list, `tags`, `custom` too); the others are kept, but for a customer's
    /// `company`, which an update that omits it unlinks (the docs, "Updates").
    Merge,
    /// `PUT ?replace=true`, and a `PUT` without `replace`: the body is the whole record, as
    /// a create's is; only the id and `createdAt` are kept.
    Replace,
}

/// Why a create or an update wrote nothing.
#[derive(Debug)]
pub enum WriteError {
    /// A customer body reuses keys other customers hold (409).
    Conflicts(Vec<Conflict>),
    /// A conversation names no customer held here, or an update would change what cannot
    /// change (422).
    Invalid(FieldError),
    /// An update names no record held here (404); the words say which.
    NotFound(String),
    /// The records file could not be written: the record is not made, as if the request
    /// had failed before the write (503).
    Unrecorded(std::io::Error),
}

/// Why a delete was refused.
#[derive(Debug)]
pub enum DeleteError {
    /// No record has the id (404).
    NotFound,
    /// A customer who still holds this many conversations (409).
    HoldsConversations(usize),
    /// The records file could not be written: nothing is deleted (503).
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
    companies: Companies,
    tags: Tags,
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
            companies: Companies::default(),
            tags: Tags::default(),
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
                // A later line of a record held is the record as an update left it.
                Entry::Customer(record) => {
                    store.place_customer(record);
                }
                Entry::Conversation(record) => {
                    store.place_conversation(record);
                }
                Entry::Thread(record) => {
                    store.threads.add(record);
                }
                Entry::Deleted(deleted) => store.replay_delete(&deleted),
                Entry::Company(record) => store.companies.place(record),
                Entry::Tag(record) => store.tags.place(record),
            }
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
            companies: self.companies.all().to_vec(),
            tags: self.tags.all().to_vec(),
        }
    }

    /// A new id, unique among the records (bulk jobs take theirs from here too).
    pub fn new_id(&mut self) -> String {
        loop {
            let id = self.ids.next();
            if !self.customer_by_id.contains_key(&id)
                && !self.conversation_by_id.contains_key(&id)
                && !self.threads.holds_id(&id)
                && !self.companies.holds_id(&id)
                && !self.tags.holds_id(&id)
            {
                return id;
            }
        }
    }

    /// The keys of a customer body that another customer already holds.
    pub fn customer_conflicts(&self, body: &Map<String, Value>) -> Vec<Conflict> {
        self.conflicts_with(body, None)
    }

    /// The keys of a customer body that a customer other than the one at `except` holds.
    fn conflicts_with(&self, body: &Map<String, Value>, except: Option<usize>) -> Vec<Conflict> {
        let record = customer_from_body(String::new(), body);
        let mut conflicts = Vec::new();
        let mut push = |field, value: &str, pointer: String, index: Option<&usize>| {
            let other = index.filter(|&&i| Some(i) != except);
            if let Some(existing) = other.and_then(|&i| self.customers.get(i)) {
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
    ) -> Result<&CustomerRecord, WriteError> {
        let conflicts = self.customer_conflicts(body);
        if !conflicts.is_empty() {
            return Err(WriteError::Conflicts(conflicts));
        }
        let record = customer_from_body(self.new_id(), body);
        self.record(EntryRef::Customer(&record))?;
        let index = self.place_customer(record);
        Ok(&self.customers[index])
    }

    /// Writes a record to the log, if the store keeps one, before it counts as made.
    fn record(&mut self, entry: EntryRef) -> Result<(), WriteError> {
        match &mut self.journal {
            Some(journal) => journal.append(entry).map_err(WriteError::Unrecorded),
            None => Ok(()),
        }
    }

    /// Puts a customer in the records and the indexes (in its old place when one with its
    /// id is held: an update, or a later line of the records file); returns its position.
    fn place_customer(&mut self, record: CustomerRecord) -> usize {
        let index = match self.customer_by_id.get(&record.id) {
            Some(&index) => {
                self.index_keys(index, false);
                self.customers[index] = record;
                index
            }
            None => {
                self.customer_by_id
                    .insert(record.id.clone(), self.customers.len());
                self.customers.push(record);
                self.customers.len() - 1
            }
        };
        self.index_keys(index, true);
        index
    }

    /// Adds (`on`) or removes the uniqueness keys of the customer at `index`.
    fn index_keys(&mut self, index: usize, on: bool) {
        let record = &self.customers[index];
        let toggle = |map: &mut HashMap<String, usize>, key: String| {
            if on {
                map.insert(key, index);
            } else if map.get(&key) == Some(&index) {
                map.remove(&key);
            }
        };
        for key in record.external_id.iter().cloned() {
            toggle(&mut self.by_external_id, key);
        }
        for entry in &record.emails {
            toggle(&mut self.by_email, entry.email.to_lowercase());
        }
        for entry in &record.phones {
            toggle(&mut self.by_phone, phone_digits(&entry.phone));
        }
    }

    /// Updates a customer from a validated body: 404 when it is not held, 409 when the
    /// record it would become holds a key another customer holds, 422 for `createdAt`.
    pub fn update_customer(
        &mut self,
        id: &str,
        body: &Map<String, Value>,
        mode: UpdateMode,
    ) -> Result<&CustomerRecord, WriteError> {
        let index = *self
            .customer_by_id
            .get(id)
            .ok_or_else(|| WriteError::NotFound(format!("customer {id} not found")))?;
        let current = &self.customers[index];
        let merged = updated_body(as_body(current), body, mode, &["company"])?;
        let conflicts = self.conflicts_with(&merged, Some(index));
        if !conflicts.is_empty() {
            return Err(WriteError::Conflicts(conflicts));
        }
        let mut record = customer_from_body(id.to_owned(), &merged);
        record.updated_at = Some(next_stamp(current.updated_at.as_deref()));
        self.record(EntryRef::Customer(&record))?;
        let index = self.place_customer(record);
        Ok(&self.customers[index])
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
    ) -> Result<&ConversationRecord, WriteError> {
        if let Some(error) = self.missing_customer(body) {
            return Err(WriteError::Invalid(error));
        }
        let record = conversation_from_body(self.new_id(), body);
        self.record(EntryRef::Conversation(&record))?;
        let index = self.place_conversation(record);
        Ok(&self.conversations[index])
    }

    /// Puts a conversation in the records and the index (in its old place when one with
    /// its id is held); returns its position.
    fn place_conversation(&mut self, record: ConversationRecord) -> usize {
        let index = match self.conversation_by_id.get(&record.id) {
            Some(&index) => {
                let old = std::mem::replace(&mut self.conversations[index], record);
                if let Some(all) = old
                    .external_id
                    .and_then(|x| self.conversations_by_external_id.get_mut(&x))
                {
                    all.retain(|&i| i != index);
                }
                index
            }
            None => {
                self.conversation_by_id
                    .insert(record.id.clone(), self.conversations.len());
                self.conversations.push(record);
                self.conversations.len() - 1
            }
        };
        if let Some(external_id) = &self.conversations[index].external_id {
            let all = self
                .conversations_by_external_id
                .entry(external_id.clone())
                .or_default();
            // Creation order, so that a lookup finds the first one made.
            if let Err(at) = all.binary_search(&index) {
                all.insert(at, index);
            }
        }
        index
    }

    /// Updates a conversation from a validated body: 404 when it is not held, 422 when the
    /// body names another customer (a conversation is not moved by an update) or changes
    /// `createdAt`.
    pub fn update_conversation(
        &mut self,
        id: &str,
        body: &Map<String, Value>,
        mode: UpdateMode,
    ) -> Result<&ConversationRecord, WriteError> {
        let index = *self
            .conversation_by_id
            .get(id)
            .ok_or_else(|| WriteError::NotFound(format!("conversation {id} not found")))?;
        let current = &self.conversations[index];
        check_same(body, "customer", &current.customer, "conversation", id)?;
        let merged = updated_body(as_body(current), body, mode, &[])?;
        let mut record = conversation_from_body(id.to_owned(), &merged);
        record.updated_at = Some(next_stamp(current.updated_at.as_deref()));
        self.record(EntryRef::Conversation(&record))?;
        let index = self.place_conversation(record);
        Ok(&self.conversations[index])
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
    ) -> Result<&ThreadRecord, WriteError> {
        let customer = self
            .conversation_customer(conversation_id)
            .unwrap_or_default()
            .to_owned();
        let record = ThreadRecord::new(self.new_id(), kind, conversation_id, &customer, body);
        self.record(EntryRef::Thread(&record))?;
        Ok(self.threads.add(record))
    }

    /// Updates a message or note from a checked body (a merge: the API offers only
    /// `PATCH`): 404 when no item of that kind has the id, 422 when the body names another
    /// conversation or changes `createdAt`.
    pub fn update_thread_item(
        &mut self,
        kind: ThreadKind,
        id: &str,
        body: &Map<String, Value>,
    ) -> Result<&ThreadRecord, WriteError> {
        let noun = kind.noun();
        let current = self
            .threads
            .get(id)
            .filter(|r| r.kind == kind)
            .ok_or_else(|| WriteError::NotFound(format!("{noun} {id} not found")))?;
        check_same(body, "conversation", &current.conversation, noun, id)?;
        let mut fields = current.body.clone();
        if let Some(external_id) = &current.external_id {
            fields.insert("externalId".into(), Value::String(external_id.clone()));
        }
        let merged = updated_body(fields, body, UpdateMode::Merge, &[])?;
        let (conversation, customer) = (&current.conversation, &current.customer);
        let mut record = ThreadRecord::new(id.to_owned(), kind, conversation, customer, &merged);
        record.updated_at = Some(next_stamp(current.updated_at.as_deref()));
        self.record(EntryRef::Thread(&record))?;
        Ok(self.threads.add(record))
    }

    /// Messages and notes.
    pub fn threads(&self) -> &Threads {
        &self.threads
    }

    pub fn companies(&self) -> &Companies {
        &self.companies
    }

    /// Creates a company from a validated body, or says that its externalId is taken (the
    /// strictest reading: the docs do not say whether a repeated one is refused).
    pub fn insert_company(
        &mut self,
        body: &Map<String, Value>,
    ) -> Result<&CompanyRecord, WriteError> {
        let external_id = string_field(body, "externalId");
        if let Some(existing) = external_id.as_deref().and_then(|x| self.companies.find(x)) {
            return Err(WriteError::Conflicts(vec![Conflict {
                field: "externalId",
                value: external_id.clone().unwrap_or_default(),
                pointer: "/externalId".into(),
                existing_id: existing.id.clone(),
            }]));
        }
        let record = company_from_body(self.new_id(), body);
        self.record(EntryRef::Company(&record))?;
        self.companies.place(record);
        let all = self.companies.all();
        Ok(&all[all.len() - 1])
    }

    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// Holds the org's tags the sandbox is started with (not written to the records file:
    /// they are seeded on every start).
    pub fn seed_tags(&mut self, seeded: &[TagRecord]) {
        for record in seeded {
            self.tags.place(record.clone());
        }
    }

    /// Appends tags (names or ids) to a held conversation: each name the org lacks is
    /// made a tag (written to the records file first), and each tag the conversation does
    /// not hold is added to its `tags`. The conversation as it now is, and how many tags
    /// were made.
    pub fn append_tags(
        &mut self,
        conversation_id: &str,
        wanted: &[String],
    ) -> Result<(ConversationRecord, u64), WriteError> {
        let index = *self
            .conversation_by_id
            .get(conversation_id)
            .ok_or_else(|| {
                WriteError::NotFound(format!("conversation {conversation_id} not found"))
            })?;
        let mut ids: Vec<Value> = match self.conversations[index].extra.get("tags") {
            Some(Value::Array(held)) => held.clone(),
            _ => Vec::new(),
        };
        let mut created = 0;
        for name_or_id in wanted {
            let id = match self.tags.find(name_or_id) {
                Some(tag) => tag.id.clone(),
                None => {
                    let record = TagRecord::new(&self.new_id(), name_or_id.trim());
                    self.record(EntryRef::Tag(&record))?;
                    let id = record.id.clone();
                    self.tags.place(record);
                    created += 1;
                    id
                }
            };
            if !ids.iter().any(|held| held.as_str() == Some(id.as_str())) {
                ids.push(Value::String(id));
            }
        }
        let mut body = Map::new();
        body.insert("tags".into(), Value::Array(ids));
        let record = self
            .update_conversation(conversation_id, &body, UpdateMode::Merge)?
            .clone();
        Ok((record, created))
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

    /// `DELETE /v1/conversations/{id}`: the conversation and its messages and notes (the
    /// API has no delete for those) are gone, written to the records file first.
    pub fn delete_conversation(&mut self, id: &str) -> Result<(), DeleteError> {
        if !self.conversation_by_id.contains_key(id) {
            return Err(DeleteError::NotFound);
        }
        self.record_delete("conversation", id)?;
        self.forget_conversation(id);
        self.threads.remove_conversation(id);
        Ok(())
    }

    /// `DELETE /v1/customers/{id}`. The docs leave unknown whether deleting a customer
    /// deletes its conversations; the strictest plausible answer is that a customer who
    /// still holds conversations cannot be deleted ([`DeleteError::HoldsConversations`], a
    /// 409), so a client must delete those first and never loses one it did not mean to.
    pub fn delete_customer(&mut self, id: &str) -> Result<(), DeleteError> {
        if !self.customer_by_id.contains_key(id) {
            return Err(DeleteError::NotFound);
        }
        let held = self
            .conversations
            .iter()
            .filter(|c| c.customer == id)
            .count();
        if held > 0 {
            return Err(DeleteError::HoldsConversations(held));
        }
        self.record_delete("customer", id)?;
        self.forget_customer(id);
        Ok(())
    }

    fn record_delete(&mut self, kind: &str, id: &str) -> Result<(), DeleteError> {
        let deleted = Deleted {
            kind: kind.to_string(),
            id: id.to_string(),
        };
        match &mut self.journal {
            Some(journal) => journal
                .append(EntryRef::Deleted(&deleted))
                .map_err(DeleteError::Unrecorded),
            None => Ok(()),
        }
    }

    /// A delete read back from the records file.
    fn replay_delete(&mut self, deleted: &Deleted) {
        if deleted.kind == "customer" {
            self.forget_customer(&deleted.id);
        } else {
            self.forget_conversation(&deleted.id);
            self.threads.remove_conversation(&deleted.id);
        }
    }

    /// Removes a customer and rebuilds the customers' indexes (positions move).
    fn forget_customer(&mut self, id: &str) {
        let Some(index) = self.customer_by_id.get(id).copied() else {
            return;
        };
        self.customers.remove(index);
        self.customer_by_id.clear();
        self.by_external_id.clear();
        self.by_email.clear();
        self.by_phone.clear();
        for at in 0..self.customers.len() {
            self.customer_by_id
                .insert(self.customers[at].id.clone(), at);
            self.index_keys(at, true);
        }
    }

    /// Test-only: forgets a conversation (and its messages and notes stay, unreachable
    /// through it), as if it had been deleted in Kustomer behind the import's back. Not
    /// written to the records file. False when no conversation has the id.
    pub fn forget_conversation(&mut self, id: &str) -> bool {
        let Some(index) = self.conversation_by_id.remove(id) else {
            return false;
        };
        self.conversations.remove(index);
        self.conversation_by_id.clear();
        self.conversations_by_external_id.clear();
        for (at, record) in self.conversations.iter().enumerate() {
            self.conversation_by_id.insert(record.id.clone(), at);
            if let Some(external_id) = &record.external_id {
                self.conversations_by_external_id
                    .entry(external_id.clone())
                    .or_default()
                    .push(at);
            }
        }
        true
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
        updated_at: None,
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
        updated_at: None,
    }
}

/// A record's fields as a body (without its id and `updatedAt`): what a merge starts from.
fn as_body<T: Serialize>(record: &T) -> Map<String, Value> {
    match attributes(record) {
        Value::Object(mut fields) => {
            fields.remove("updatedAt");
            fields
        }
        _ => Map::new(),
    }
}

/// Refuses (422) an update body whose `field` names another record than the one `held`.
fn check_same(
    body: &Map<String, Value>,
    field: &str,
    held: &str,
    noun: &str,
    id: &str,
) -> Result<(), WriteError> {
    match body.get(field).and_then(Value::as_str) {
        Some(named) if named != held => Err(WriteError::Invalid(FieldError::new(
            format!("/{field}"),
            format!("{noun} {id} belongs to {field} {held}; an update cannot move it to {named}"),
        ))),
        _ => Ok(()),
    }
}

/// The fields a record takes from an update: `current` merged with `body` (less the
/// `unlink` fields the body omits), or `body` alone with `current`'s `createdAt`. A body
/// whose `createdAt` is not the record's is refused: it is set when the record is made.
fn updated_body(
    current: Map<String, Value>,
    body: &Map<String, Value>,
    mode: UpdateMode,
    unlink: &[&str],
) -> Result<Map<String, Value>, WriteError> {
    let created = current.get("createdAt").cloned();
    if let Some(given) = body.get("createdAt")
        && !created
            .as_ref()
            .is_some_and(|held| same_instant(held, given))
    {
        return Err(WriteError::Invalid(FieldError::new(
            "/createdAt".into(),
            "createdAt is set when the record is made; an update cannot change it",
        )));
    }
    let mut fields = match mode {
        UpdateMode::Merge => {
            let mut fields = current;
            for field in unlink.iter().filter(|f| !body.contains_key(**f)) {
                fields.remove(*field);
            }
            fields
        }
        UpdateMode::Replace => created
            .map(|at| Map::from_iter([("createdAt".to_owned(), at)]))
            .unwrap_or_default(),
    };
    fields.extend(body.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(fields)
}

/// Whether two timestamps name the same instant (`...Z` and `...+00:00` alike).
fn same_instant(a: &Value, b: &Value) -> bool {
    let instant = |v: &Value| v.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok());
    a == b || matches!((instant(a), instant(b)), (Some(x), Some(y)) if x == y)
}

/// An `updatedAt` for now (RFC 3339, milliseconds), later than `previous` even when the
/// clock has not moved a millisecond since.
fn next_stamp(previous: Option<&str>) -> String {
    let millisecond = jiff::SignedDuration::from_millis(1);
    let now = jiff::Timestamp::now();
    let now = now.round(jiff::Unit::Millisecond).unwrap_or(now);
    let floor = previous
        .and_then(|p| p.parse::<jiff::Timestamp>().ok())
        .and_then(|p| p.checked_add(millisecond).ok());
    let at = floor.map_or(now, |floor| now.max(floor));
    format!("{at:.3}")
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

    fn conflicts_of(error: WriteError) -> Vec<Conflict> {
        match error {
            WriteError::Conflicts(conflicts) => conflicts,
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
            Err(WriteError::Invalid(error)) => Some(error.pointer),
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
            assert!(matches!(refused, Err(WriteError::Conflicts(_))));
            (customer, conversation)
        };
        let mut store = Store::with_journal(&path).unwrap();
        assert_eq!(store.customer_count(), 1, "a refused body was not kept");
        let found = store.find_customer(&Lookup::Email("A@B.co".into()));
        assert_eq!(found.map(|r| r.id.clone()), Some(customer.clone()));
        let found = store.find_conversation(&Lookup::ExternalId("t-1".into()));
        assert_eq!(found.map(|r| r.id.clone()), Some(conversation));
        let again = store.insert_customer(&obj(json!({"emails": [{"email": "a@B.co"}]})));
        assert!(matches!(again, Err(WriteError::Conflicts(_))));
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
        assert!(matches!(refused, Err(WriteError::Unrecorded(_))));
        assert_eq!(store.customer_count(), 0);
        assert!(
            store
                .find_customer(&Lookup::ExternalId("c-1".into()))
                .is_none()
        );
    }

    #[test]
    fn an_update_moves_the_customers_keys_with_it() {
        let mut store = Store::new();
        let body = json!({"externalId": "c-1", "emails": [{"email": "old@x.co"}]});
        let id = store.insert_customer(&obj(body)).unwrap().id.clone();
        let other = json!({"externalId": "c-2"});
        let other = store.insert_customer(&obj(other)).unwrap().id.clone();
        let body = obj(json!({"emails": [{"email": "New@x.co"}]}));
        let updated = store
            .update_customer(&id, &body, UpdateMode::Merge)
            .unwrap();
        assert_eq!(updated.external_id.as_deref(), Some("c-1"), "kept");
        let first = updated.updated_at.clone().unwrap();
        // The old email is free again, the new one is taken, the externalId still is.
        assert!(
            store
                .find_customer(&Lookup::Email("old@x.co".into()))
                .is_none()
        );
        let found = store.find_customer(&Lookup::Email("new@X.co".into()));
        assert_eq!(found.map(|r| r.id.clone()), Some(id.clone()));
        let taken = store.update_customer(&other, &body, UpdateMode::Merge);
        let conflicts = taken.err().map(conflicts_of).unwrap_or_default();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].existing_id, id);
        // A record's own keys are no conflict; a replace drops what it does not give.
        let again = obj(json!({"externalId": "c-1"}));
        let replaced = store
            .update_customer(&id, &again, UpdateMode::Replace)
            .unwrap();
        assert!(replaced.emails.is_empty());
        assert!(
            replaced.updated_at.clone().unwrap() > first,
            "updatedAt advances"
        );
        assert!(
            store
                .find_customer(&Lookup::Email("new@x.co".into()))
                .is_none()
        );
        let missing = store.update_customer("nobody", &again, UpdateMode::Merge);
        assert!(matches!(missing, Err(WriteError::NotFound(_))));
        assert_eq!(store.customer_count(), 2);
    }

    #[test]
    fn updates_are_kept_in_the_records_file_in_the_records_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let (customer, conversation) = {
            let mut store = Store::with_journal(&path).unwrap();
            let customer = obj(json!({"externalId": "c-1", "company": "co-1"}));
            let customer = store.insert_customer(&customer).unwrap().id.clone();
            let body = json!({"customer": customer, "externalId": "t-1", "tags": ["a", "b"]});
            let conversation = store.insert_conversation(&obj(body)).unwrap().id.clone();
            let body = json!({"customer": customer, "externalId": "t-2"});
            store.insert_conversation(&obj(body)).unwrap();
            let body = obj(json!({"externalId": "t-9", "tags": ["c"]}));
            let mode = UpdateMode::Merge;
            store
                .update_conversation(&conversation, &body, mode)
                .unwrap();
            let body = obj(json!({"name": "Ada"}));
            store.update_customer(&customer, &body, mode).unwrap();
            (customer, conversation)
        };
        let store = Store::with_journal(&path).unwrap();
        let records = store.records();
        assert_eq!(
            (records.customers.len(), records.conversations.len()),
            (1, 2)
        );
        let held = &records.customers[0];
        assert_eq!(
            (held.id.as_str(), held.name.as_deref()),
            (customer.as_str(), Some("Ada"))
        );
        assert!(
            !held.extra.contains_key("company"),
            "omitting company unlinked it"
        );
        let first = &records.conversations[0];
        assert_eq!(first.id, conversation, "in its place");
        assert_eq!(first.extra.get("tags"), Some(&json!(["c"])));
        assert!(first.updated_at.is_some());
        assert!(
            store
                .find_conversation(&Lookup::ExternalId("t-1".into()))
                .is_none()
        );
        let found = store.find_conversation(&Lookup::ExternalId("t-9".into()));
        assert_eq!(found.map(|r| r.id.clone()), Some(conversation));
    }

    #[test]
    fn an_update_keeps_created_at_and_the_conversations_customer() {
        let mut store = Store::new();
        let customer = store.insert_customer(&obj(json!({}))).unwrap().id.clone();
        let body = json!({"customer": customer, "createdAt": "2024-01-01T00:00:00Z"});
        let id = store.insert_conversation(&obj(body)).unwrap().id.clone();
        let same = obj(json!({"customer": customer, "createdAt": "2024-01-01T00:00:00+00:00"}));
        let replaced = store.update_conversation(&id, &same, UpdateMode::Replace);
        assert_eq!(replaced.unwrap().status.as_deref(), Some("open"));
        let mut refused =
            |body: Value| match store.update_conversation(&id, &obj(body), UpdateMode::Merge) {
                Err(WriteError::Invalid(problem)) => problem.pointer,
                _ => String::new(),
            };
        assert_eq!(
            refused(json!({"createdAt": "2023-01-01T00:00:00Z"})),
            "/createdAt"
        );
        assert_eq!(refused(json!({"customer": "someone-else"})), "/customer");
        let kept = store.find_conversation(&Lookup::Id(id)).unwrap();
        assert_eq!(
            kept.extra.get("createdAt"),
            Some(&json!("2024-01-01T00:00:00+00:00"))
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
            updated_at: None,
        };
        assert_eq!(
            attributes(&record),
            json!({"name": "A", "externalId": "e", "emails": [], "phones": [], "company": "C"})
        );
    }
}
