//! Mapping: turns one source record into a [`Plan`] (the customer body, the conversation
//! body, the customer's key) or into a [`MappingError`] that names the field and the reason.
//!
//! It is pure: no I/O, no clock, no randomness, so the same record always gives the same
//! plan (row keys and derived ids depend on that). Local validation lives here too: a row
//! refused here costs no request. The default columns are the ones in README.md; column
//! names compare case-insensitively, ignoring spaces, `_` and `-`.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::input::SourceFields;

/// Longest externalId or name the API takes.
pub const MAX_TEXT_LEN: usize = 255;

/// The conversation statuses the API accepts on create.
pub const STATUSES: [&str; 3] = ["open", "snoozed", "done"];
const EMAIL_TYPES: [&str; 3] = ["home", "work", "other"];
const PHONE_TYPES: [&str; 5] = ["mobile", "home", "work", "fax", "other"];

/// What one row asks of Kustomer.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Identifies the customer across rows and runs: `ext:<externalId>`, else
    /// `email:<first email, lowercased>`, else `phone:<first phone>`.
    pub customer_key: String,
    pub customer: CustomerBody,
    /// None when the row has no conversation field: the row imports only its customer.
    pub conversation: Option<ConversationBody>,
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
    /// Other fields of an API-shaped JSONL row (company, tags, custom, ...), passed through.
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

/// Why a row was refused before any request: the field (as the API names it) and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingError {
    pub field: Option<String>,
    pub reason: String,
}

impl MappingError {
    fn new(field: &str, reason: impl Into<String>) -> MappingError {
        MappingError {
            field: Some(field.to_string()),
            reason: reason.into(),
        }
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

/// The default columns and what they feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    CustomerExternalId,
    CustomerName,
    Emails,
    Phones,
    ConversationExternalId,
    ConversationName,
    Channel,
    Status,
}

const TARGET_COUNT: usize = 8;

/// For each target, the CSV column that feeds it.
type Columns = [Option<usize>; TARGET_COUNT];

impl Target {
    fn index(self) -> usize {
        self as usize
    }

    /// The target a column name feeds under the default mapping.
    fn for_column(name: &str) -> Option<Target> {
        let normalized: String = name
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect();
        Some(match normalized.as_str() {
            "externalid" | "customerexternalid" | "customerid" => Target::CustomerExternalId,
            "name" | "customername" => Target::CustomerName,
            "email" | "emails" => Target::Emails,
            "phone" | "phones" => Target::Phones,
            "conversationexternalid" | "conversationid" => Target::ConversationExternalId,
            "subject" | "conversationname" => Target::ConversationName,
            "channel" => Target::Channel,
            "status" => Target::Status,
            _ => return None,
        })
    }
}

/// Maps records with the default columns. Column positions are resolved once per CSV
/// header, not per row.
#[derive(Default)]
pub struct DefaultMapping {
    csv_columns: Option<(Arc<Vec<String>>, Columns)>,
}

impl DefaultMapping {
    pub fn new() -> DefaultMapping {
        DefaultMapping::default()
    }

    /// Maps and validates one record.
    pub fn map(&mut self, fields: &SourceFields) -> Result<Plan, MappingError> {
        match fields {
            SourceFields::Csv { headers, values } => {
                let columns = self.columns_for(headers);
                let get = |target: Target| -> Option<&str> {
                    columns[target.index()]
                        .and_then(|index| values.get(index))
                        .map(|value| value.trim())
                        .filter(|value| !value.is_empty())
                };
                plan_from_flat(&|target| get(target).map(|v| FlatValue::Text(v.to_string())))
            }
            SourceFields::Json(object) => {
                match (object.get("customer"), object.get("conversation")) {
                    (Some(Value::Object(customer)), conversation) => {
                        plan_from_api_shape(customer, conversation)
                    }
                    _ => plan_from_flat(&|target| flat_json_value(object, target)),
                }
            }
        }
    }

    fn columns_for(&mut self, headers: &Arc<Vec<String>>) -> Columns {
        if let Some((known, columns)) = &self.csv_columns
            && Arc::ptr_eq(known, headers)
        {
            return *columns;
        }
        let mut columns = [None; TARGET_COUNT];
        for (index, header) in headers.iter().enumerate() {
            if let Some(target) = Target::for_column(header) {
                columns[target.index()].get_or_insert(index);
            }
        }
        self.csv_columns = Some((Arc::clone(headers), columns));
        columns
    }
}

/// A value of a flat record: text (CSV, or a JSON scalar) or a JSON list.
enum FlatValue {
    Text(String),
    List(Vec<Value>),
}

fn flat_json_value(object: &Map<String, Value>, target: Target) -> Option<FlatValue> {
    let value = object
        .iter()
        .find(|(key, value)| Target::for_column(key) == Some(target) && !value.is_null())
        .map(|(_, value)| value)?;
    match value {
        Value::String(text) => {
            let text = text.trim();
            (!text.is_empty()).then(|| FlatValue::Text(text.to_string()))
        }
        Value::Number(number) => Some(FlatValue::Text(number.to_string())),
        Value::Bool(flag) => Some(FlatValue::Text(flag.to_string())),
        Value::Array(items) => Some(FlatValue::List(items.clone())),
        Value::Object(_) | Value::Null => Some(FlatValue::List(vec![value.clone()])),
    }
}

fn plan_from_flat(get: &dyn Fn(Target) -> Option<FlatValue>) -> Result<Plan, MappingError> {
    let text = |target: Target, field: &str| -> Result<Option<String>, MappingError> {
        match get(target) {
            None => Ok(None),
            Some(FlatValue::Text(text)) => Ok(Some(text)),
            Some(FlatValue::List(_)) => Err(MappingError::new(field, "must be text, not a list")),
        }
    };
    let customer = CustomerBody {
        name: text(Target::CustomerName, "name")?,
        external_id: text(Target::CustomerExternalId, "externalId")?,
        emails: contact_list(get(Target::Emails), "emails", "email")?
            .into_iter()
            .map(|(email, kind)| EmailEntry { email, kind })
            .collect(),
        phones: contact_list(get(Target::Phones), "phones", "phone")?
            .into_iter()
            .map(|(phone, kind)| PhoneEntry { phone, kind })
            .collect(),
        extra: Map::new(),
    };
    let conversation = ConversationBody {
        customer: None,
        external_id: text(Target::ConversationExternalId, "conversation.externalId")?,
        name: text(Target::ConversationName, "conversation.name")?,
        channel: text(Target::Channel, "conversation.channel")?,
        status: text(Target::Status, "conversation.status")?,
        extra: Map::new(),
    };
    finish_plan(customer, conversation)
}

/// Splits `a@x; b@y` (or a JSON list of strings or `{email, type}` objects) into entries.
fn contact_list(
    value: Option<FlatValue>,
    field: &str,
    inner: &str,
) -> Result<Vec<(String, Option<String>)>, MappingError> {
    let mut entries = Vec::new();
    match value {
        None => {}
        Some(FlatValue::Text(text)) => {
            for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                entries.push((part.to_string(), None));
            }
        }
        Some(FlatValue::List(items)) => {
            for (index, item) in items.iter().enumerate() {
                let at = format!("{field}[{index}]");
                match item {
                    Value::String(text) if text.trim().is_empty() => {}
                    Value::String(text) => entries.push((text.trim().to_string(), None)),
                    Value::Object(object) => {
                        let value = match object.get(inner) {
                            Some(Value::String(text)) => text.trim().to_string(),
                            _ => {
                                return Err(MappingError::new(
                                    &format!("{at}.{inner}"),
                                    "is missing or not text",
                                ));
                            }
                        };
                        let kind = match object.get("type") {
                            None | Some(Value::Null) => None,
                            Some(Value::String(kind)) => Some(kind.trim().to_string()),
                            Some(_) => {
                                return Err(MappingError::new(
                                    &format!("{at}.type"),
                                    "is not text",
                                ));
                            }
                        };
                        if !value.is_empty() {
                            entries.push((value, kind));
                        }
                    }
                    _ => {
                        return Err(MappingError::new(
                            &at,
                            format!("must be text or an object with {inner:?}"),
                        ));
                    }
                }
            }
        }
    }
    Ok(entries)
}

/// A JSONL row shaped like the API bodies: `{"customer": {...}, "conversation": {...}}`.
fn plan_from_api_shape(
    customer: &Map<String, Value>,
    conversation: Option<&Value>,
) -> Result<Plan, MappingError> {
    let mut extra = customer.clone();
    let name = take_text(&mut extra, "name", "name")?;
    let external_id = take_text(&mut extra, "externalId", "externalId")?;
    let list = |extra: &mut Map<String, Value>, key: &str, inner: &str| {
        let value = match extra.remove(key) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(FlatValue::List(items)),
            Some(Value::String(text)) => Some(FlatValue::Text(text)),
            Some(_) => return Err(MappingError::new(key, "must be a list")),
        };
        contact_list(value, key, inner)
    };
    let emails = list(&mut extra, "emails", "email")?;
    let phones = list(&mut extra, "phones", "phone")?;
    let customer = CustomerBody {
        name,
        external_id,
        emails: emails
            .into_iter()
            .map(|(email, kind)| EmailEntry { email, kind })
            .collect(),
        phones: phones
            .into_iter()
            .map(|(phone, kind)| PhoneEntry { phone, kind })
            .collect(),
        extra,
    };
    let conversation = match conversation {
        None | Some(Value::Null) => ConversationBody::default(),
        Some(Value::Object(object)) => {
            let mut extra = object.clone();
            if extra.contains_key("customer") {
                return Err(MappingError::new(
                    "conversation.customer",
                    "is set by the importer from the row's customer; remove it",
                ));
            }
            ConversationBody {
                customer: None,
                external_id: take_text(&mut extra, "externalId", "conversation.externalId")?,
                name: take_text(&mut extra, "name", "conversation.name")?,
                channel: take_text(&mut extra, "channel", "conversation.channel")?,
                status: take_text(&mut extra, "status", "conversation.status")?,
                extra,
            }
        }
        Some(_) => return Err(MappingError::new("conversation", "must be an object")),
    };
    finish_plan(customer, conversation)
}

fn take_text(
    object: &mut Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<String>, MappingError> {
    match object.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            let text = text.trim();
            Ok((!text.is_empty()).then(|| text.to_string()))
        }
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(_) => Err(MappingError::new(field, "must be text")),
    }
}

/// Validates both bodies, normalises what is safe to normalise, and derives the key.
fn finish_plan(
    mut customer: CustomerBody,
    mut conversation: ConversationBody,
) -> Result<Plan, MappingError> {
    check_length(customer.name.as_deref(), "name")?;
    check_length(customer.external_id.as_deref(), "externalId")?;
    for (index, entry) in customer.emails.iter_mut().enumerate() {
        if !is_valid_email(&entry.email) {
            return Err(MappingError::new(
                &format!("emails[{index}].email"),
                format!("{:?} is not an email address", entry.email),
            ));
        }
        check_kind(
            &mut entry.kind,
            &EMAIL_TYPES,
            &format!("emails[{index}].type"),
        )?;
    }
    for (index, entry) in customer.phones.iter_mut().enumerate() {
        entry.phone = normalize_phone(&entry.phone).ok_or_else(|| {
            MappingError::new(
                &format!("phones[{index}].phone"),
                format!("{:?} is not a phone number", entry.phone),
            )
        })?;
        check_kind(
            &mut entry.kind,
            &PHONE_TYPES,
            &format!("phones[{index}].type"),
        )?;
    }
    let customer_key = customer_key(&customer).ok_or_else(|| {
        MappingError::new(
            "customer",
            "has no externalId, email or phone: the importer needs one to find the customer again",
        )
    })?;

    check_length(conversation.name.as_deref(), "conversation.name")?;
    check_length(
        conversation.external_id.as_deref(),
        "conversation.externalId",
    )?;
    if let Some(status) = &mut conversation.status {
        let lower = status.to_lowercase();
        if !STATUSES.contains(&lower.as_str()) {
            return Err(MappingError::new(
                "conversation.status",
                format!("{status:?} is not one of open, snoozed, done"),
            ));
        }
        *status = lower;
    }
    let has_conversation = conversation != ConversationBody::default();
    Ok(Plan {
        customer_key,
        customer,
        conversation: has_conversation.then_some(conversation),
    })
}

fn check_length(value: Option<&str>, field: &str) -> Result<(), MappingError> {
    match value {
        Some(text) if text.chars().count() > MAX_TEXT_LEN => Err(MappingError::new(
            field,
            format!("is longer than {MAX_TEXT_LEN} characters"),
        )),
        _ => Ok(()),
    }
}

fn check_kind(
    kind: &mut Option<String>,
    allowed: &[&str],
    field: &str,
) -> Result<(), MappingError> {
    if let Some(value) = kind {
        let lower = value.to_lowercase();
        if !allowed.contains(&lower.as_str()) {
            return Err(MappingError::new(
                field,
                format!("{value:?} is not one of {}", allowed.join(", ")),
            ));
        }
        *value = lower;
    }
    Ok(())
}

/// The key that identifies a customer across rows and runs.
pub fn customer_key(customer: &CustomerBody) -> Option<String> {
    if let Some(id) = &customer.external_id {
        return Some(format!("ext:{id}"));
    }
    if let Some(entry) = customer.emails.first() {
        return Some(format!("email:{}", entry.email.to_lowercase()));
    }
    customer
        .phones
        .first()
        .map(|entry| format!("phone:{}", entry.phone))
}

/// A strict email syntax check: `local@domain` with an ASCII dot-atom local part and a
/// domain of at least two DNS labels whose last is alphabetic. Quoted local parts and
/// address literals are refused: real exports do not hold them and the API may not either.
pub fn is_valid_email(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(atext));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| {
            tld.len() >= 2
                && (tld.chars().all(|c| c.is_ascii_alphabetic()) || tld.starts_with("xn--"))
        });
    local_ok && domain_ok
}

/// Strips the punctuation people put in phone numbers, keeping a leading `+`; refuses a
/// value with letters or with too few or too many digits to be a phone number.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let (plus, rest) = match raw.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let mut digits = String::with_capacity(rest.len() + 1);
    if plus {
        digits.push('+');
    }
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    let count = digits.len() - usize::from(plus);
    (7..=15).contains(&count).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn csv(headers: &[&str], values: &[&str]) -> SourceFields {
        SourceFields::Csv {
            headers: Arc::new(headers.iter().map(|h| h.to_string()).collect()),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn json_row(value: Value) -> SourceFields {
        match value {
            Value::Object(object) => SourceFields::Json(object),
            _ => unreachable!(),
        }
    }

    #[test]
    fn default_columns_ignore_case_spaces_and_separators() {
        let plan = DefaultMapping::new()
            .map(&csv(
                &[
                    "Customer-External ID",
                    "Customer Name",
                    "EMAILS",
                    "Phone",
                    "Conversation_ID",
                    "Subject",
                    "Channel",
                    "Status",
                ],
                &[
                    " c1 ",
                    "Ada",
                    "a@x.io; b@y.io",
                    "+1 (555) 010-0000",
                    "t1",
                    "Hi",
                    "email",
                    "Done",
                ],
            ))
            .unwrap();
        assert_eq!(plan.customer_key, "ext:c1");
        assert_eq!(plan.customer.name.as_deref(), Some("Ada"));
        assert_eq!(plan.customer.emails.len(), 2);
        assert_eq!(plan.customer.phones[0].phone, "+15550100000");
        let conversation = plan.conversation.unwrap();
        assert_eq!(conversation.external_id.as_deref(), Some("t1"));
        assert_eq!(conversation.status.as_deref(), Some("done"));
    }

    #[test]
    fn a_row_without_conversation_fields_imports_only_its_customer() {
        let plan = DefaultMapping::new()
            .map(&csv(&["email", "subject"], &["A@X.io", ""]))
            .unwrap();
        assert_eq!(plan.customer_key, "email:a@x.io");
        assert!(plan.conversation.is_none());
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut mapping = DefaultMapping::new();
        let error = mapping
            .map(&csv(&["email", "status"], &["not-an-email", "open"]))
            .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("emails[0].email"));
        let error = mapping
            .map(&csv(&["email", "status"], &["a@x.io", "pending"]))
            .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("conversation.status"));
        let error = mapping.map(&csv(&["name"], &["Nobody"])).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("customer"));
    }

    #[test]
    fn jsonl_rows_may_be_flat_or_shaped_like_the_api() {
        let mut mapping = DefaultMapping::new();
        let flat = mapping
            .map(&json_row(
                json!({"customer_id": 42, "email": ["a@x.io"], "subject": "Hi"}),
            ))
            .unwrap();
        assert_eq!(flat.customer_key, "ext:42");
        let shaped = mapping
            .map(&json_row(json!({
                "customer": {"externalId": "42", "emails": [{"email": "a@x.io", "type": "work"}], "company": "ACME"},
                "conversation": {"name": "Hi", "status": "open", "priority": 2}
            })))
            .unwrap();
        assert_eq!(shaped.customer_key, "ext:42");
        assert_eq!(shaped.customer.extra["company"], json!("ACME"));
        assert_eq!(shaped.conversation.unwrap().extra["priority"], json!(2));
    }

    #[test]
    fn email_syntax() {
        for good in [
            "a@x.io",
            "first.last+tag@mail.example.co.uk",
            "o'neil@x-y.com",
        ] {
            assert!(is_valid_email(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "a@",
            "@x.io",
            "a@x",
            "a@@x.io",
            "a..b@x.io",
            "a@-x.io",
            "a b@x.io",
            "a@x.c0m",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn phones() {
        assert_eq!(
            normalize_phone("+44 20 7946 0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            normalize_phone("(555) 010-0000").as_deref(),
            Some("5550100000")
        );
        assert_eq!(normalize_phone("call me"), None);
        assert_eq!(normalize_phone("12345"), None);
    }
}
