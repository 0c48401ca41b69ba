//! Mapping: turns one source record into a [`Plan`] (the customer body, the conversation
//! body, the customer's key) or into a [`MappingError`] that names the field and the reason.
//!
//! Three mappings exist: the default columns ([`default`], described in README.md), a
//! mapping file ([`file`], TOML, `--mapping`) and the Zendesk preset ([`zendesk`],
//! `--preset zendesk-json`). All end in the same local validation
//! ([`checks`]), so a row refused here costs no request and `validate` refuses exactly
//! what `import` would. Mapping is pure: no I/O, no clock, no randomness, so the same
//! record always gives the same plan (row keys and derived ids depend on that).

pub mod checks;
pub mod columns;
mod default;
pub mod file;
pub mod users;
pub mod zendesk;

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::history::ThreadItem;
use crate::input::{ItemFlaw, NestedLists, SourceFields};

pub use self::checks::{MAX_TEXT_LEN, STATUSES, is_valid_email, normalize_phone};
pub use self::default::DefaultMapping;
pub use self::file::{MappingConfigError, MappingFile};
pub use self::zendesk::{ZendeskDirectory, ZendeskFileError, ZendeskMapping};

/// What one row asks of Kustomer.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Identifies the customer across rows and runs: `ext:<externalId>`, else
    /// `email:<first email, lowercased>`, else `phone:<first phone>`. Empty, as mapped, for a
    /// customer with only a name, until the reader gives it a derived externalId
    /// ([`Plan::needs_derived_customer_id`]).
    pub customer_key: String,
    pub customer: CustomerBody,
    /// None when the row has no conversation field: the row imports only its customer.
    pub conversation: Option<ConversationBody>,
    /// The conversation's history read with the row (a thread nested in its line), still
    /// as the line's text; a child file's items and rows that are messages are staged by
    /// the history's pre-pass instead (`RowReader::stage_history`). The reader maps it item
    /// by item into the run's thread store (`history::store`) and leaves this None: the
    /// row travels through the pipeline without it.
    pub thread: Option<NestedThread>,
    /// The customer's company, found or created once per company before the customer and
    /// set as its `company` (None: the row names none).
    pub company: Option<CompanyRef>,
}

/// A customer's company as the source names it: by externalId, or by name alone (then
/// with an externalId derived from the name, so that a lost answer can be reconciled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompanyRef {
    /// `ext:<externalId>`: one company per key, across rows and runs.
    pub key: String,
    pub external_id: String,
    /// What it is created with (its externalId when the source gives no name).
    pub name: String,
}

impl Plan {
    /// Its customer has a name and no externalId, email or phone: the reader derives an
    /// externalId from the row's key, or refuses the row.
    pub fn needs_derived_customer_id(&self) -> bool {
        self.customer_key.is_empty()
    }
}

/// The body of `POST /v1/customers`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<EmailEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<PhoneEntry>,
    /// The other fields the API takes (company, tags, custom, ...), checked by
    /// [`checks`] against the types the live API expects.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EmailEntry {
    pub email: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhoneEntry {
    pub phone: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The body of `POST /v1/conversations`; `customer` is filled in once the customer's id
/// is known.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A thread nested in its row's line (an API-shaped row's `messages` then `notes`, a
/// Zendesk ticket's `comments`), kept as the line's text ([`NestedLists`]) with how its
/// items map: each item is parsed, mapped and checked only when it is reached
/// ([`NestedThread::items`]), so a thread of any length is never held whole.
#[derive(Clone, Debug, PartialEq)]
pub struct NestedThread {
    lists: NestedLists,
    reading: ThreadReading,
}

/// How a nested thread's items map.
#[derive(Clone, Debug, PartialEq)]
enum ThreadReading {
    /// API-shaped bodies (`messages[i]`, `notes[i]`), as the default mapping reads them.
    Api,
    /// A Zendesk ticket's comments, read against its requester and channel.
    Zendesk(zendesk::TicketThread),
}

impl NestedThread {
    fn api(lists: NestedLists) -> NestedThread {
        NestedThread {
            lists,
            reading: ThreadReading::Api,
        }
    }

    fn zendesk(lists: NestedLists, ticket: zendesk::TicketThread) -> NestedThread {
        NestedThread {
            lists,
            reading: ThreadReading::Zendesk(ticket),
        }
    }

    /// Whether it has no item at all.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Its items in source order, each mapped as it is reached, read at `line` of `file`
    /// (where the errors file names them). An item refused names its path in the line
    /// (`messages[3].direction`); the items after it are not read.
    pub fn items<'a>(
        &'a self,
        file: &'a Arc<str>,
        line: u64,
    ) -> Box<dyn Iterator<Item = Result<ThreadItem, MappingError>> + 'a> {
        match &self.reading {
            ThreadReading::Api => {
                Box::new(default::THREAD_KEYS.iter().flat_map(move |&(key, kind)| {
                    self.lists.items(key).enumerate().map(move |(index, item)| {
                        default::api_item(kind, item, &item_path(key, index), file, line)
                    })
                }))
            }
            ThreadReading::Zendesk(ticket) => Box::new(
                self.lists
                    .items(zendesk::THREAD_KEY)
                    .enumerate()
                    .map(move |(index, item)| ticket.comment_item(item, index, file, line)),
            ),
        }
    }
}

#[cfg(test)]
impl Plan {
    /// Its nested thread mapped whole, as the reader stages it item by item (tests).
    pub(crate) fn mapped_thread(&self) -> Result<Vec<ThreadItem>, MappingError> {
        let file: Arc<str> = Arc::from("test.jsonl");
        match &self.thread {
            Some(thread) => thread.items(&file, 1).collect(),
            None => Ok(Vec::new()),
        }
    }
}

/// An item's path in its line: `messages[3]`.
fn item_path(key: &str, index: usize) -> String {
    format!("{key}[{index}]")
}

/// An item of a nested thread as a value, or its refusal as a mapping error at `path`.
fn item_value(item: Result<Value, ItemFlaw>, path: &str) -> Result<Value, MappingError> {
    item.map_err(|flaw| {
        let field = match flaw.path.as_str() {
            "" => path.to_string(),
            inner if inner.starts_with('[') => format!("{path}{inner}"),
            inner => format!("{path}.{inner}"),
        };
        MappingError::new(&field, flaw.rule, flaw.reason)
    })
}

/// A thread key of a line: the list the line holds under it, if any; else a refusal
/// when the key holds anything but null (a thread is a list).
fn nested_list_present(
    object: &Map<String, Value>,
    lists: Option<&NestedLists>,
    key: &str,
) -> Result<bool, MappingError> {
    if lists.is_some_and(|lists| lists.len(key).is_some()) {
        return Ok(true);
    }
    match object.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(_) => Err(MappingError::new(key, "not a list", "must be a list")),
    }
}

/// Why a row was refused before any request: the field (as the API names it), the rule it
/// broke (a short phrase without the value, for counting by reason) and the reason in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingError {
    pub field: Option<String>,
    pub rule: &'static str,
    pub reason: String,
}

impl MappingError {
    pub(crate) fn new(field: &str, rule: &'static str, reason: impl Into<String>) -> MappingError {
        MappingError {
            field: Some(field.to_string()),
            rule,
            reason: reason.into(),
        }
    }

    /// A refusal that is about the whole record, not one field.
    pub fn record(rule: &'static str, reason: impl Into<String>) -> MappingError {
        MappingError {
            field: None,
            rule,
            reason: reason.into(),
        }
    }

    /// The field without list positions (`emails[1].email` is `emails[].email`) and the
    /// rule: what `validate` counts invalid rows by.
    pub fn category(&self) -> String {
        let mut field = String::new();
        let mut in_index = false;
        for c in self.field.as_deref().unwrap_or("record").chars() {
            match c {
                '[' => {
                    in_index = true;
                    field.push('[');
                }
                ']' => {
                    in_index = false;
                    field.push(']');
                }
                _ if in_index => {}
                _ => field.push(c),
            }
        }
        format!("{field}: {}", self.rule)
    }
}

impl std::fmt::Display for MappingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// The mapping a run uses: the default columns, a mapping file, or the Zendesk preset
/// with its users.
#[derive(Clone, Debug, Default)]
pub enum Mapping {
    #[default]
    Default,
    File(Arc<MappingFile>),
    Zendesk(Arc<ZendeskDirectory>),
}

impl Mapping {
    /// The source agents its `[users]` table maps by hand (none without a mapping file).
    pub fn users_table(&self) -> users::UsersTable {
        match self {
            Mapping::File(file) => file.users.clone(),
            Mapping::Default | Mapping::Zendesk(_) => users::UsersTable::default(),
        }
    }

    /// The mapping for one input. A CSV input passes its header: a mapping file's columns
    /// are found in it once, and one it lacks is an error that lists what the file has.
    pub fn for_input(
        &self,
        csv_headers: Option<&Arc<Vec<String>>>,
    ) -> Result<InputMapping, MappingConfigError> {
        Ok(match self {
            Mapping::Default => InputMapping::Default(DefaultMapping::new()),
            Mapping::File(file) => InputMapping::File(file.bind(csv_headers)?),
            Mapping::Zendesk(directory) => {
                InputMapping::Zendesk(ZendeskMapping::new(Arc::clone(directory)))
            }
        })
    }
}

/// A mapping ready for the records of one input.
pub enum InputMapping {
    Default(DefaultMapping),
    File(file::BoundMapping),
    Zendesk(ZendeskMapping),
}

impl InputMapping {
    /// Maps and validates one record, with the thread lists its line holds (see
    /// [`InputMapping::reads_nested_threads`]): the plan's thread is mapped later, item by
    /// item ([`NestedThread::items`]).
    pub fn map(
        &mut self,
        fields: &SourceFields,
        threads: Option<NestedLists>,
    ) -> Result<Plan, MappingError> {
        match self {
            InputMapping::Default(mapping) => mapping.map_with_thread(fields, threads),
            InputMapping::File(mapping) => mapping.map(fields),
            InputMapping::Zendesk(mapping) => mapping.map(fields, threads),
        }
    }

    /// Whether its records' thread lists are read from their lines (the default columns'
    /// API shape and the Zendesk preset): their inputs then keep those lists as text
    /// (`Records::capture_threads`). A mapping file reads the keys it names.
    pub fn reads_nested_threads(&self) -> bool {
        !matches!(self, InputMapping::File(_))
    }

    /// The record's conversation's source id, as a mapping file's `conversation.externalId`
    /// reads it (what `--rows-are-messages` groups rows by); None when it is empty, and for
    /// the default columns and the preset, which group no rows.
    pub fn conversation_id(&self, fields: &SourceFields) -> Result<Option<String>, MappingError> {
        match self {
            InputMapping::File(mapping) => mapping.conversation_id(fields),
            InputMapping::Default(_) | InputMapping::Zendesk(_) => Ok(None),
        }
    }
}
