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
pub mod zendesk;

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::history::ThreadItem;
use crate::input::SourceFields;

pub use self::checks::{MAX_TEXT_LEN, STATUSES, is_valid_email, normalize_phone};
pub use self::default::DefaultMapping;
pub use self::file::{MappingConfigError, MappingFile};
pub use self::zendesk::{ZendeskMapping, ZendeskUsers, ZendeskUsersError};

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
    /// The conversation's history read with the row (a thread nested in its line), in
    /// source order; a child file's items and rows that are messages are staged by the
    /// history's pre-pass instead (`RowReader::stage_history`). The
    /// reader stages it in the run's thread store (`history::store`) and leaves this empty:
    /// the row travels through the pipeline without it.
    pub thread: Vec<ThreadItem>,
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
    Zendesk(Arc<ZendeskUsers>),
}

impl Mapping {
    /// The mapping for one input. A CSV input passes its header: a mapping file's columns
    /// are found in it once, and one it lacks is an error that lists what the file has.
    pub fn for_input(
        &self,
        csv_headers: Option<&Arc<Vec<String>>>,
    ) -> Result<InputMapping, MappingConfigError> {
        Ok(match self {
            Mapping::Default => InputMapping::Default(DefaultMapping::new()),
            Mapping::File(file) => InputMapping::File(file.bind(csv_headers)?),
            Mapping::Zendesk(users) => {
                InputMapping::Zendesk(ZendeskMapping::new(Arc::clone(users)))
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
    /// Maps and validates one record, read at `line` of `file` (what its thread's items
    /// are named by in the errors file).
    pub fn map(
        &mut self,
        fields: &SourceFields,
        file: &Arc<str>,
        line: u64,
    ) -> Result<Plan, MappingError> {
        match self {
            InputMapping::Default(mapping) => mapping.map(fields),
            InputMapping::File(mapping) => mapping.map(fields),
            InputMapping::Zendesk(mapping) => mapping.map(fields, file, line),
        }
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
