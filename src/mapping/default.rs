//! The default mapping: the columns README.md lists, matched case-insensitively ignoring
//! spaces, `_` and `-`, for CSV and flat JSONL; and JSONL rows shaped like the API bodies
//! (`{"customer": {...}, "conversation": {...}}`), taken as they are.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::checks::{company_ref, finish_plan};
use super::{
    ConversationBody, CustomerBody, EmailEntry, MappingError, NestedThread, PhoneEntry, Plan,
    item_value, nested_list_present,
};
use crate::history::checks::finish_item;
use crate::history::{ItemKind, ThreadItem};
use crate::input::{ItemFlaw, NestedLists, SourceFields};

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
    CompanyName,
    CompanyExternalId,
}

const TARGET_COUNT: usize = 10;

/// For each target, the CSV column that feeds it.
type Columns = [Option<usize>; TARGET_COUNT];

impl Target {
    fn index(self) -> usize {
        self as usize
    }

    /// The target a column name feeds under the default mapping.
    fn for_column(name: &str) -> Option<Target> {
        let normalized = normalize(name);
        ALIASES
            .iter()
            .find(|(alias, _)| *alias == normalized)
            .map(|(_, target)| *target)
    }

    /// The body field it feeds, as `validate` and `import` name it.
    fn field(self) -> &'static str {
        match self {
            Target::CustomerExternalId => "customer.externalId",
            Target::CustomerName => "customer.name",
            Target::Emails => "customer.emails",
            Target::Phones => "customer.phones",
            Target::ConversationExternalId => "conversation.externalId",
            Target::ConversationName => "conversation.name",
            Target::Channel => "conversation.channel",
            Target::Status => "conversation.status",
            Target::CompanyName => "company.name",
            Target::CompanyExternalId => "company.externalId",
        }
    }
}

/// The default columns, normalised (lowercase, no spaces, `_` or `-`), and what each feeds.
const ALIASES: [(&str, Target); 19] = [
    ("externalid", Target::CustomerExternalId),
    ("customerexternalid", Target::CustomerExternalId),
    ("customerid", Target::CustomerExternalId),
    ("name", Target::CustomerName),
    ("customername", Target::CustomerName),
    ("email", Target::Emails),
    ("emails", Target::Emails),
    ("phone", Target::Phones),
    ("phones", Target::Phones),
    ("conversationexternalid", Target::ConversationExternalId),
    ("conversationid", Target::ConversationExternalId),
    ("subject", Target::ConversationName),
    ("conversationname", Target::ConversationName),
    ("channel", Target::Channel),
    ("status", Target::Status),
    ("company", Target::CompanyName),
    ("companyname", Target::CompanyName),
    ("companyexternalid", Target::CompanyExternalId),
    ("companyid", Target::CompanyExternalId),
];

/// A column name as the default mapping compares it: lowercase, without spaces, `_`, `-`.
pub(super) fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The body field a column feeds under the default mapping, if any.
pub(super) fn default_field(column: &str) -> Option<&'static str> {
    Target::for_column(column).map(Target::field)
}

/// The default columns a normalised name ends with or starts with (`ticketsubject` ends
/// with `subject`), with the field each feeds: the close names worth a warning.
pub(super) fn close_defaults(normalized: &str) -> Option<(&'static str, &'static str)> {
    ALIASES
        .iter()
        .filter(|(alias, _)| alias.len() >= 5 && *alias != normalized)
        .find(|(alias, _)| normalized.ends_with(alias) || normalized.starts_with(alias))
        .map(|(alias, target)| (*alias, target.field()))
}

/// Maps records with the default columns. Column positions are resolved once per CSV
/// header, not per row.
#[derive(Default)]
pub struct DefaultMapping {
    csv_columns: Option<(Arc<Vec<String>>, Columns)>,
    /// The target of each JSONL key seen so far: rows repeat their keys, and normalising a
    /// key for every target of every row was most of the time of mapping JSONL. Hashed by
    /// foldhash: SipHash on these short keys was 3% of reading JSONL (perf).
    json_keys: HashMap<String, Option<Target>, foldhash::fast::RandomState>,
}

/// Distinct JSONL keys remembered; beyond, a key's target is worked out each time.
const MAX_REMEMBERED_KEYS: usize = 1024;

impl DefaultMapping {
    pub fn new() -> DefaultMapping {
        DefaultMapping::default()
    }

    /// Maps and validates one record that has no thread.
    pub fn map(&mut self, fields: &SourceFields) -> Result<Plan, MappingError> {
        self.map_with_thread(fields, None)
    }

    /// Maps and validates one record, with the thread lists of its line.
    pub fn map_with_thread(
        &mut self,
        fields: &SourceFields,
        threads: Option<NestedLists>,
    ) -> Result<Plan, MappingError> {
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
                        let mut plan = plan_from_api_shape(customer, conversation)?;
                        plan.thread = api_thread(object, threads)?;
                        if plan
                            .thread
                            .as_ref()
                            .is_some_and(|thread| !thread.is_empty())
                            && plan.conversation.is_none()
                        {
                            return Err(MappingError::new(
                                "conversation",
                                "history without a conversation",
                                "is missing: the row has messages or notes, and history needs \
                                 its conversation",
                            ));
                        }
                        Ok(plan)
                    }
                    _ => {
                        let mut found: [Option<&Value>; TARGET_COUNT] = [None; TARGET_COUNT];
                        for (key, value) in object.iter().filter(|(_, value)| !value.is_null()) {
                            if let Some(target) = self.target_of_key(key) {
                                found[target.index()].get_or_insert(value);
                            }
                        }
                        plan_from_flat(&|target| found[target.index()].and_then(flat_json_value))
                    }
                }
            }
        }
    }

    fn target_of_key(&mut self, key: &str) -> Option<Target> {
        if let Some(target) = self.json_keys.get(key) {
            return *target;
        }
        let target = Target::for_column(key);
        if self.json_keys.len() < MAX_REMEMBERED_KEYS {
            self.json_keys.insert(key.to_string(), target);
        }
        target
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
pub(super) enum FlatValue {
    Text(String),
    List(Vec<Value>),
}

/// A flat JSONL value as the mapping takes it: text, or a list.
fn flat_json_value(value: &Value) -> Option<FlatValue> {
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
            Some(FlatValue::List(_)) => Err(MappingError::new(
                field,
                "not text",
                "must be text, not a list",
            )),
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
    let company = company_ref(
        text(Target::CompanyName, "company.name")?.as_deref(),
        text(Target::CompanyExternalId, "company.externalId")?.as_deref(),
    )?;
    Ok(Plan {
        company,
        ..finish_plan(customer, conversation)?
    })
}

/// Splits `a@x; b@y` (or a JSON list of strings or `{email, type}` objects) into entries.
pub(super) fn contact_list(
    value: Option<FlatValue>,
    field: &str,
    inner: &str,
) -> Result<Vec<(String, Option<String>)>, MappingError> {
    let mut entries = Vec::new();
    match value {
        None => {}
        // One address, the common case, keeps its text; a list is split.
        Some(FlatValue::Text(text)) if !text.contains(';') => entries.push((text, None)),
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
                                    "missing or not text",
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
                                    "not text",
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
                            "not text or an object",
                            format!("must be text or an object with {inner:?}"),
                        ));
                    }
                }
            }
        }
    }
    Ok(entries)
}

/// The keys of an API-shaped row that hold its thread, and the kind of their items.
pub(crate) const THREAD_KEYS: [(&str, ItemKind); 2] =
    [("messages", ItemKind::Message), ("notes", ItemKind::Note)];

/// One item of the thread nested in an API-shaped row (`messages[3]`): an API-shaped body
/// checked by [`finish_item`] under its path.
pub(super) fn api_item(
    kind: ItemKind,
    item: Result<Value, ItemFlaw>,
    path: &str,
    file: &Arc<str>,
    line: u64,
) -> Result<ThreadItem, MappingError> {
    let Value::Object(body) = item_value(item, path)? else {
        return Err(MappingError::new(
            path,
            "not an object",
            "must be an object",
        ));
    };
    finish_item(kind, body, path, file, line)
}

/// The thread an API-shaped row's line holds, if any (a thread key holding anything but a
/// list is refused).
fn api_thread(
    object: &Map<String, Value>,
    threads: Option<NestedLists>,
) -> Result<Option<NestedThread>, MappingError> {
    let mut present = false;
    for (key, _) in THREAD_KEYS {
        present |= nested_list_present(object, threads.as_ref(), key)?;
    }
    Ok(threads.filter(|_| present).map(NestedThread::api))
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
            Some(_) => return Err(MappingError::new(key, "not a list", "must be a list")),
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
                    "set by the importer",
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
        Some(_) => {
            return Err(MappingError::new(
                "conversation",
                "not an object",
                "must be an object",
            ));
        }
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
        Some(_) => Err(MappingError::new(field, "not text", "must be text")),
    }
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

    /// A row with `thread`'s lists, read as a run reads it: the plan and its thread.
    fn nested(thread: Value) -> Result<(Plan, Vec<ThreadItem>), MappingError> {
        let mut row = json!({
            "customer": {"externalId": "c-1"},
            "conversation": {"externalId": "t-1", "name": "Late order"}
        });
        for (key, value) in thread.as_object().unwrap() {
            row[key] = value.clone();
        }
        let record = crate::input::read_line(&row.to_string());
        let plan = DefaultMapping::new().map_with_thread(&record.fields, record.threads)?;
        let thread = plan.mapped_thread()?;
        Ok((plan, thread))
    }

    #[test]
    fn a_nested_thread_is_mapped_in_source_order() {
        let (plan, thread) = nested(json!({
            "messages": [
                {"externalId": "m-1", "channel": "email", "direction": "in",
                 "createdAt": "2024-01-01T10:00:00+01:00", "preview": "Where is it?"},
                {"channel": "email", "direction": "out"}
            ],
            "notes": [{"externalId": 7, "body": "Courier called"}]
        }))
        .unwrap();
        let kinds: Vec<(ItemKind, Option<&str>)> = thread
            .iter()
            .map(|item| (item.kind, item.source_id.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            [
                (ItemKind::Message, Some("m-1")),
                (ItemKind::Message, None),
                (ItemKind::Note, Some("7")),
            ]
        );
        assert_eq!(thread[0].body["createdAt"], "2024-01-01T09:00:00Z");
        assert_eq!(thread[1].body["app"], "kustomer-import");
        assert!(plan.conversation.is_some());
    }

    #[test]
    fn a_bad_thread_element_fails_the_row_naming_its_path() {
        let error = nested(json!({"messages": [
            {"channel": "email", "direction": "in"},
            {"channel": "email", "direction": "sideways"}
        ]}))
        .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("messages[1].direction"));
        let error = nested(json!({"notes": [{"body": ""}]})).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("notes[0].body"));
        let error = nested(json!({"messages": {"channel": "email"}})).unwrap_err();
        assert_eq!(
            (error.field.as_deref(), error.rule),
            (Some("messages"), "not a list")
        );
        let error = nested(json!({"messages": ["hello"]})).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("messages[0]"));
    }

    #[test]
    fn a_thread_without_its_conversation_is_refused() {
        let row = json!({
            "customer": {"externalId": "c-1"},
            "notes": [{"body": "no conversation to hold me"}]
        });
        let map = |row: Value| {
            let record = crate::input::read_line(&row.to_string());
            DefaultMapping::new().map_with_thread(&record.fields, record.threads)
        };
        let error = map(row).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("conversation"));
        assert_eq!(error.rule, "history without a conversation");
        let empty = json!({"customer": {"externalId": "c-1"}, "messages": []});
        assert!(map(empty).is_ok());
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
        // A name alone maps, its key left for the reader to derive from the row's key.
        let plan = mapping.map(&csv(&["name"], &["Somebody"])).unwrap();
        assert!(plan.needs_derived_customer_id());
        let error = mapping
            .map(&csv(&["name", "status"], &["", "open"]))
            .unwrap_err();
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
}
