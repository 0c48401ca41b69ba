//! Mapping files (`--mapping FILE`, TOML): which source column, list of columns, template
//! or constant feeds each body field, value maps applied before validation, and the CSV
//! settings of the export. README.md's "Mapping files" section is the user's contract;
//! this module reads a file into a [`MappingFile`] (every mistake in the file is reported
//! before any row is read), binds it to one input's header ([`MappingFile::bind`]: a
//! column the file lacks is an error that lists the columns it has) and maps records.
//!
//! A column is a CSV header (matched exactly after trimming) or, for JSONL, a key or a
//! dotted path into the object (`requester.email`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::checks::{
    CONVERSATION_EXTRA_FIELDS, CUSTOMER_EXTRA_FIELDS, EMAIL_TYPES, FieldType, PHONE_TYPES,
    custom_attribute_type, finish_plan,
};
use super::default::{FlatValue, contact_list};
use super::users::UsersTable;
use super::{ConversationBody, CustomerBody, EmailEntry, MappingError, PhoneEntry, Plan};
use crate::history::ItemKind;
use crate::input::{CsvSettings, SourceFields, parse_delimiter, parse_encoding};
use crate::rowkey::KeyColumns;

/// A mapping file that cannot be used (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum MappingConfigError {
    #[error("{path}: cannot read the mapping file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(
        "the mapping names {} the file does not have: {}. The file's columns are: {}",
        if missing.len() == 1 { "a column" } else { "columns" },
        quoted(missing),
        quoted(headers)
    )]
    MissingColumns {
        missing: Vec<String>,
        headers: Vec<String>,
    },
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a field's value comes from.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    /// A CSV header or a JSONL key or dotted path.
    Column(String),
    /// Text with `{column}` placeholders.
    Template(Vec<Piece>),
    /// The same value on every row.
    Constant(Value),
}

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Column(String),
}

/// One body field: its source and the value map applied to what the source gives.
#[derive(Clone, Debug)]
struct FieldSpec {
    source: Source,
    values: Option<Arc<HashMap<String, Value>>>,
}

impl FieldSpec {
    /// The columns this field reads: its column, or its template's placeholders.
    fn columns(&self) -> Vec<&str> {
        match &self.source {
            Source::Column(column) => vec![column.as_str()],
            Source::Template(pieces) => pieces
                .iter()
                .filter_map(|piece| match piece {
                    Piece::Column(column) => Some(column.as_str()),
                    Piece::Text(_) => None,
                })
                .collect(),
            Source::Constant(_) => Vec::new(),
        }
    }
}

/// One source of an emails or phones list, with the type its entries get.
#[derive(Clone, Debug)]
struct ListSpec {
    field: FieldSpec,
    kind: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct CustomerSpec {
    external_id: Option<FieldSpec>,
    name: Option<FieldSpec>,
    emails: Vec<ListSpec>,
    phones: Vec<ListSpec>,
    extra: Vec<(String, FieldSpec)>,
    custom: Vec<(String, FieldSpec)>,
}

#[derive(Clone, Debug, Default)]
struct ConversationSpec {
    external_id: Option<FieldSpec>,
    name: Option<FieldSpec>,
    channel: Option<FieldSpec>,
    status: Option<FieldSpec>,
    extra: Vec<(String, FieldSpec)>,
    /// `key = ["email", "created_at"]`: the source columns that identify a conversation
    /// without an id (see `rowkey::KeyColumns`).
    key: Option<KeyColumns>,
}

/// The fields a `[message]` section may set, as the API names them (`createdBy` is the
/// source's agent, mapped to its Kustomer user when sent).
const MESSAGE_FIELDS: [&str; 10] = [
    "externalId",
    "createdBy",
    "channel",
    "app",
    "direction",
    "preview",
    "subject",
    "sentAt",
    "createdAt",
    "status",
];
/// The fields a `[note]` section may set.
const NOTE_FIELDS: [&str; 4] = ["externalId", "body", "createdAt", "createdBy"];

/// A `[message]` or `[note]` section: each field's source, in the file's order.
#[derive(Clone, Debug, Default)]
struct ItemSpec {
    fields: Vec<(String, FieldSpec)>,
}

/// The `[history]` section: which kind a row is, and (for a child file) which column holds
/// its conversation's source id.
#[derive(Clone, Debug, Default)]
struct HistorySpec {
    kind: Option<FieldSpec>,
    conversation: Option<FieldSpec>,
}

/// Which parts of a mapping an input's records feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parts {
    /// Conversation rows: `[customer]`, `[conversation]`.
    Rows,
    /// Messages and notes: `[message]`, `[note]`, `[history]`.
    Items,
    Both,
}

/// A mapping file, read and checked.
#[derive(Clone, Debug)]
pub struct MappingFile {
    customer: CustomerSpec,
    conversation: ConversationSpec,
    message: Option<ItemSpec>,
    note: Option<ItemSpec>,
    history: HistorySpec,
    /// The `[users]` table: source agents mapped to Kustomer users by hand.
    pub users: UsersTable,
    /// The `[csv]` section: delimiter and encoding of the export.
    pub csv: CsvSettings,
}

const CUSTOMER_CORE: [&str; 4] = ["externalId", "name", "emails", "phones"];
const CONVERSATION_CORE: [&str; 4] = ["externalId", "name", "channel", "status"];

impl MappingFile {
    /// Reads and checks a mapping file.
    pub fn load(path: &Path) -> Result<MappingFile, MappingConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| MappingConfigError::Read {
            path: name.clone(),
            source,
        })?;
        MappingFile::parse(&text).map_err(|message| MappingConfigError::Invalid {
            path: name,
            message,
        })
    }

    /// Parses the text of a mapping file; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<MappingFile, String> {
        let table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
            format!("not valid TOML: {}", error.to_string().trim_end())
        })?;
        let mut mapping = MappingFile {
            customer: CustomerSpec::default(),
            conversation: ConversationSpec::default(),
            message: None,
            note: None,
            history: HistorySpec::default(),
            users: UsersTable::default(),
            csv: CsvSettings::default(),
        };
        for (section, value) in &table {
            let body = value
                .as_table()
                .ok_or_else(|| format!("{section} must be a section ([{section}])"))?;
            match section.as_str() {
                "customer" => mapping.customer = parse_customer(body)?,
                "conversation" => mapping.conversation = parse_conversation(body)?,
                "csv" => mapping.csv = parse_csv(body)?,
                "message" => mapping.message = Some(parse_item(body, "message", &MESSAGE_FIELDS)?),
                "note" => mapping.note = Some(parse_item(body, "note", &NOTE_FIELDS)?),
                "history" => mapping.history = parse_history(body)?,
                "users" => mapping.users = UsersTable::parse(body)?,
                other => {
                    return Err(format!(
                        "unknown section [{other}]: a mapping has [customer], [conversation], \
                         [message], [note], [history], [users] and [csv]"
                    ));
                }
            }
        }
        if mapping.customer.external_id.is_none()
            && mapping.customer.emails.is_empty()
            && mapping.customer.phones.is_empty()
        {
            return Err(
                "[customer] maps none of externalId, emails and phones: the importer \
                        needs one of them to find a customer again"
                    .into(),
            );
        }
        check_history(&mapping)?;
        Ok(mapping)
    }

    /// Whether `[history]` names the column a child file's records give their
    /// conversation's source id in.
    pub fn has_parent_column(&self) -> bool {
        self.history.conversation.is_some()
    }

    /// Whether the file can group rows that are messages (`--rows-are-messages`) into
    /// their conversations: by the source id `conversation.externalId` reads, which is also
    /// the row key of the conversation (`conv:<id>`). `history.conversation`, a child
    /// file's column, has no part then; given anyway, it must read the same columns, so
    /// that a mapping shared with a child file means one thing.
    pub fn check_rows_are_messages(&self) -> Result<(), String> {
        let columns = self
            .conversation
            .external_id
            .as_ref()
            .map(FieldSpec::columns)
            .unwrap_or_default();
        if columns.is_empty() {
            return Err(
                "--rows-are-messages groups rows by the conversation's source id: map \
                 conversation.externalId from its column in [conversation]"
                    .into(),
            );
        }
        if let Some(parent) = &self.history.conversation
            && parent.columns() != columns
        {
            return Err(format!(
                "--rows-are-messages groups rows by conversation.externalId ({}), and \
                 history.conversation reads other columns ({}): it names a child file's \
                 column, so drop it, or make it read the same column",
                columns.join(", "),
                parent.columns().join(", ")
            ));
        }
        Ok(())
    }

    /// The columns `[conversation] key` names, if any.
    pub fn key_columns(&self) -> Option<&KeyColumns> {
        self.conversation.key.as_ref()
    }

    /// Whether the file maps history (a `[message]` or `[note]` section).
    pub fn has_history(&self) -> bool {
        self.message.is_some() || self.note.is_some()
    }

    /// Every column the given parts of the mapping read, in the order the file names them.
    fn columns(&self, parts: Parts) -> Vec<&str> {
        self.fields()
            .into_iter()
            .filter(|(name, _)| {
                let body = name.split('.').next().unwrap_or_default();
                match body {
                    "customer" | "conversation" => parts != Parts::Items,
                    _ => parts != Parts::Rows,
                }
            })
            .flat_map(|(_, field)| field.columns())
            .collect()
    }

    /// Each body field the file sets, by its name in the body (`customer.emails`,
    /// `conversation.extra.priority`), with the columns it reads, in the file's order.
    pub fn field_columns(&self) -> Vec<(String, Vec<&str>)> {
        self.fields()
            .into_iter()
            .map(|(name, field)| (name, field.columns()))
            .collect()
    }

    fn fields(&self) -> Vec<(String, &FieldSpec)> {
        let named = |prefix: &str, name: &str| format!("{prefix}.{name}");
        let mut fields: Vec<(String, &FieldSpec)> = Vec::new();
        let customer = &self.customer;
        for (name, field) in [
            ("externalId", &customer.external_id),
            ("name", &customer.name),
        ] {
            fields.extend(field.as_ref().map(|f| (named("customer", name), f)));
        }
        for (name, list) in [("emails", &customer.emails), ("phones", &customer.phones)] {
            fields.extend(list.iter().map(|l| (named("customer", name), &l.field)));
        }
        fields.extend(
            customer
                .extra
                .iter()
                .map(|(n, f)| (named("customer", n), f)),
        );
        fields.extend(
            customer
                .custom
                .iter()
                .map(|(n, f)| (named("customer.custom", n), f)),
        );
        let conversation = &self.conversation;
        for (name, field) in [
            ("externalId", &conversation.external_id),
            ("name", &conversation.name),
            ("channel", &conversation.channel),
            ("status", &conversation.status),
        ] {
            fields.extend(field.as_ref().map(|f| (named("conversation", name), f)));
        }
        fields.extend(
            conversation
                .extra
                .iter()
                .map(|(n, f)| (named("conversation", n), f)),
        );
        for (body, spec) in [("message", &self.message), ("note", &self.note)] {
            if let Some(spec) = spec {
                fields.extend(spec.fields.iter().map(|(n, f)| (named(body, n), f)));
            }
        }
        for (name, field) in [
            ("kind", &self.history.kind),
            ("conversation", &self.history.conversation),
        ] {
            fields.extend(field.as_ref().map(|f| (named("history", name), f)));
        }
        fields
    }

    /// The mapping for one input of conversation rows: for CSV, finds every column of
    /// `[customer]` and `[conversation]` in the header once.
    pub fn bind(
        self: &Arc<Self>,
        csv_headers: Option<&Arc<Vec<String>>>,
    ) -> Result<BoundMapping, MappingConfigError> {
        self.bind_parts(csv_headers, Parts::Rows)
    }

    /// [`MappingFile::bind`] for an input whose records are messages or notes (a child
    /// file: `[message]`, `[note]`, `[history]` columns), or, with `rows_too`, both
    /// (one row per message, the conversation's columns repeated).
    pub fn bind_items(
        self: &Arc<Self>,
        csv_headers: Option<&Arc<Vec<String>>>,
        rows_too: bool,
    ) -> Result<BoundMapping, MappingConfigError> {
        let parts = if rows_too { Parts::Both } else { Parts::Items };
        self.bind_parts(csv_headers, parts)
    }

    fn bind_parts(
        self: &Arc<Self>,
        csv_headers: Option<&Arc<Vec<String>>>,
        parts: Parts,
    ) -> Result<BoundMapping, MappingConfigError> {
        let positions = match csv_headers {
            None => None,
            Some(headers) => {
                let mut positions = HashMap::new();
                for (index, header) in headers.iter().enumerate() {
                    positions.entry(header.trim().to_string()).or_insert(index);
                }
                let mut missing: Vec<String> = Vec::new();
                for column in self.columns(parts) {
                    if !positions.contains_key(column) && !missing.iter().any(|m| m == column) {
                        missing.push(column.to_string());
                    }
                }
                if !missing.is_empty() {
                    return Err(MappingConfigError::MissingColumns {
                        missing,
                        headers: headers.to_vec(),
                    });
                }
                Some(positions)
            }
        };
        Ok(BoundMapping {
            file: Arc::clone(self),
            positions,
            parts,
        })
    }
}

fn parse_customer(section: &toml::Table) -> Result<CustomerSpec, String> {
    let values = parse_value_maps(section, "customer")?;
    let mut spec = CustomerSpec::default();
    for (key, value) in section {
        let at = format!("customer.{key}");
        let field = |value: &toml::Value| parse_field(value, &at, values.get(key.as_str()));
        match key.as_str() {
            "externalId" => spec.external_id = Some(field(value)?),
            "name" => spec.name = Some(field(value)?),
            "emails" => spec.emails = parse_list(value, &at, &EMAIL_TYPES, values.get("emails"))?,
            "phones" => spec.phones = parse_list(value, &at, &PHONE_TYPES, values.get("phones"))?,
            "extra" => spec.extra = parse_extra(value, "customer", CUSTOMER_EXTRA_FIELDS, &values)?,
            "custom" => spec.custom = parse_custom(value, &values)?,
            "values" => {}
            other => {
                return Err(unknown_field(
                    other,
                    "customer",
                    &CUSTOMER_CORE,
                    CUSTOMER_EXTRA_FIELDS,
                ));
            }
        }
    }
    if !spec.custom.is_empty() && spec.extra.iter().any(|(name, _)| name == "custom") {
        return Err(
            "customer.extra.custom and [customer.custom] both set the custom \
                    attributes: keep one"
                .into(),
        );
    }
    Ok(spec)
}

fn parse_conversation(section: &toml::Table) -> Result<ConversationSpec, String> {
    let values = parse_value_maps(section, "conversation")?;
    let mut spec = ConversationSpec::default();
    for (key, value) in section {
        let at = format!("conversation.{key}");
        let field = |value: &toml::Value| parse_field(value, &at, values.get(key.as_str()));
        match key.as_str() {
            "externalId" => spec.external_id = Some(field(value)?),
            "name" => spec.name = Some(field(value)?),
            "channel" => spec.channel = Some(field(value)?),
            "status" => spec.status = Some(field(value)?),
            "extra" => {
                spec.extra = parse_extra(value, "conversation", CONVERSATION_EXTRA_FIELDS, &values)?
            }
            "values" => {}
            "key" => spec.key = Some(parse_key(value)?),
            "customer" => {
                return Err(
                    "conversation.customer is set by the importer from the row's \
                            customer; remove it"
                        .into(),
                );
            }
            other => {
                return Err(unknown_field(
                    other,
                    "conversation",
                    &CONVERSATION_CORE,
                    CONVERSATION_EXTRA_FIELDS,
                ));
            }
        }
    }
    Ok(spec)
}

/// `conversation.key`: a list of source column names.
fn parse_key(value: &toml::Value) -> Result<KeyColumns, String> {
    let names = value
        .as_array()
        .and_then(|names| {
            names
                .iter()
                .map(|name| name.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or(
            "conversation.key must be a list of column names, e.g. [\"email\", \"created_at\"]",
        )?;
    KeyColumns::new(names).map_err(|reason| format!("conversation.key: {reason}"))
}

/// A `[message]` or `[note]` section: each key one of `allowed`, plus `values`.
fn parse_item(section: &toml::Table, body: &str, allowed: &[&str]) -> Result<ItemSpec, String> {
    let values = parse_value_maps(section, body)?;
    let mut spec = ItemSpec::default();
    for (key, value) in section {
        if key == "values" {
            continue;
        }
        if !allowed.contains(&key.as_str()) {
            return Err(format!(
                "{body}.{key} is not a field of a {body}: [{body}] takes {}",
                allowed.join(", ")
            ));
        }
        let at = format!("{body}.{key}");
        spec.fields.push((
            key.clone(),
            field_or_constant(value, &at, values.get(key.as_str()))?,
        ));
    }
    Ok(spec)
}

/// `[history]`: `kind` (a row's kind through `[history.values.kind]`) and `conversation`
/// (the column of a child file holding its conversation's source id).
fn parse_history(section: &toml::Table) -> Result<HistorySpec, String> {
    let values = parse_value_maps(section, "history")?;
    let mut spec = HistorySpec::default();
    for (key, value) in section {
        let at = format!("history.{key}");
        let field = |value: &toml::Value| parse_field(value, &at, values.get(key.as_str()));
        match key.as_str() {
            "kind" => spec.kind = Some(field(value)?),
            "conversation" => spec.conversation = Some(field(value)?),
            "values" => {}
            other => {
                return Err(format!(
                    "history.{other} is not a setting: [history] takes kind and conversation"
                ));
            }
        }
    }
    Ok(spec)
}

/// The sections fit together: a kind's map names only kinds the file has sections for,
/// and a file with both `[message]` and `[note]` says which a row is.
fn check_history(mapping: &MappingFile) -> Result<(), String> {
    let history = &mapping.history;
    if !mapping.has_history() {
        if history.kind.is_some() || history.conversation.is_some() {
            return Err("[history] is set but the file has no [message] or [note] section".into());
        }
        return Ok(());
    }
    let Some(kind) = &history.kind else {
        if mapping.message.is_some() && mapping.note.is_some() {
            return Err(
                "[message] and [note] are both set: say which a row is with \
                        history.kind (a column) and [history.values.kind]"
                    .into(),
            );
        }
        return Ok(());
    };
    let mut kinds: Vec<&Value> = kind.values.iter().flat_map(|map| map.values()).collect();
    if let Source::Constant(value) = &kind.source {
        kinds.push(value);
    }
    for value in kinds {
        let named = value.as_str().and_then(ItemKind::parse);
        let has = match named {
            Some(ItemKind::Message) => mapping.message.is_some(),
            Some(ItemKind::Note) => mapping.note.is_some(),
            None => {
                return Err(format!(
                    "history.kind: {value} is not a kind: a row is \"message\" or \"note\""
                ));
            }
        };
        if !has {
            return Err(format!(
                "history.kind maps a row to {value}, but the file has no [{}] section",
                value.as_str().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn unknown_field(key: &str, body: &str, core: &[&str], extra: &[(&str, FieldType)]) -> String {
    let extras: Vec<&str> = extra.iter().map(|(name, _)| *name).collect();
    if extras.contains(&key) {
        format!("{body}.{key} goes under [{body}.extra]")
    } else {
        format!(
            "{body}.{key} is not a field of a {body}: [{body}] takes {}, and [{body}.extra] \
             takes {}",
            core.join(", "),
            extras.join(", ")
        )
    }
}

/// `[<body>.values.<field>]` tables: source value (any case) -> value sent.
fn parse_value_maps(
    section: &toml::Table,
    body: &str,
) -> Result<HashMap<String, Arc<HashMap<String, Value>>>, String> {
    let mut maps = HashMap::new();
    let Some(tables) = section.get("values") else {
        return Ok(maps);
    };
    let tables = tables
        .as_table()
        .ok_or_else(|| format!("{body}.values must be a section of value maps"))?;
    for (field, table) in tables {
        let at = format!("{body}.values.{field}");
        let table = table
            .as_table()
            .ok_or_else(|| format!("{at} must be a table of source value = value sent"))?;
        let known = section.contains_key(field)
            || section
                .get("extra")
                .and_then(toml::Value::as_table)
                .is_some_and(|extra| extra.contains_key(field));
        if !known {
            return Err(format!(
                "{at} maps the values of {field}, which the [{body}] section does not set"
            ));
        }
        let mut map = HashMap::new();
        for (from, to) in table {
            let to = toml_to_json(to)
                .filter(|to| !to.is_array() && !to.is_object())
                .ok_or_else(|| format!("{at}.{from} must be a text, number or boolean"))?;
            map.insert(from.trim().to_lowercase(), to);
        }
        maps.insert(field.clone(), Arc::new(map));
    }
    Ok(maps)
}

/// A field's source: `"Column"`, `"{template}"`, `{column = "..."}` or `{value = ...}`.
fn parse_field(
    value: &toml::Value,
    at: &str,
    values: Option<&Arc<HashMap<String, Value>>>,
) -> Result<FieldSpec, String> {
    let source = match value {
        toml::Value::String(text) => parse_source_text(text, at)?,
        toml::Value::Table(table) => parse_source_table(table, at, &[])?.0,
        _ => {
            return Err(format!(
                "{at} must be a column name, a template with {{column}} placeholders, \
                 {{column = \"...\"}} or {{value = ...}}"
            ));
        }
    };
    Ok(FieldSpec {
        source,
        values: values.cloned(),
    })
}

fn parse_source_text(text: &str, at: &str) -> Result<Source, String> {
    if !text.contains(['{', '}']) {
        let column = text.trim();
        if column.is_empty() {
            return Err(format!("{at} names an empty column"));
        }
        return Ok(Source::Column(column.to_string()));
    }
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut column = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => column.push(c),
                        None => return Err(format!("{at}: a {{ is not closed in {text:?}")),
                    }
                }
                let column = column.trim();
                if column.is_empty() {
                    return Err(format!("{at}: an empty {{}} in {text:?}"));
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Column(column.to_string()));
            }
            '}' => {
                return Err(format!(
                    "{at}: a }} without its {{ in {text:?} (write }}}} for a literal }})"
                ));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    if !pieces.iter().any(|piece| matches!(piece, Piece::Column(_))) {
        // Only escaped braces: a constant text.
        let text = pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Text(text) | Piece::Column(text) => text,
            })
            .collect::<String>();
        return Ok(Source::Constant(Value::String(text)));
    }
    Ok(Source::Template(pieces))
}

/// `{column = "...", type = "..."}` or `{value = ...}`; `extra_keys` names other keys the
/// table may hold (a list entry's `type`). Returns the source and the table's `type`.
fn parse_source_table(
    table: &toml::Table,
    at: &str,
    extra_keys: &[&str],
) -> Result<(Source, Option<String>), String> {
    let mut source = None;
    let mut kind = None;
    for (key, value) in table {
        match (key.as_str(), value) {
            ("column", toml::Value::String(column)) if !column.trim().is_empty() => {
                source = Some(Source::Column(column.trim().to_string()));
            }
            ("template", toml::Value::String(template)) => {
                source = Some(parse_source_text(template, at)?);
            }
            ("value", value) => {
                let value = toml_to_json(value)
                    .ok_or_else(|| format!("{at}.value cannot be sent as JSON"))?;
                source = Some(Source::Constant(value));
            }
            ("type", toml::Value::String(text)) if extra_keys.contains(&"type") => {
                kind = Some(text.trim().to_lowercase());
            }
            _ => {
                return Err(format!(
                    "{at}: unexpected {key} = {value}; a field table holds column = \"...\", \
                     template = \"...\" or value = ...{}",
                    if extra_keys.contains(&"type") {
                        ", and type = \"...\""
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    let source = source.ok_or_else(|| format!("{at} needs column, template or value"))?;
    Ok((source, kind))
}

/// emails / phones: one source, or a list of sources (`"Column"` or
/// `{column = "...", type = "work"}`), every non-empty one used, in order.
fn parse_list(
    value: &toml::Value,
    at: &str,
    types: &[&str],
    values: Option<&Arc<HashMap<String, Value>>>,
) -> Result<Vec<ListSpec>, String> {
    let items: Vec<&toml::Value> = match value {
        toml::Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    let mut list = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let here = format!("{at}[{index}]");
        let (source, kind) = match item {
            toml::Value::String(text) => (parse_source_text(text, &here)?, None),
            toml::Value::Table(table) => parse_source_table(table, &here, &["type"])?,
            _ => {
                return Err(format!(
                    "{here} must be a column name or {{column = \"...\", type = \"...\"}}"
                ));
            }
        };
        if let Some(kind) = &kind
            && !types.contains(&kind.as_str())
        {
            return Err(format!(
                "{here}: type {kind:?} is not one of {}",
                types.join(", ")
            ));
        }
        list.push(ListSpec {
            field: FieldSpec {
                source,
                values: values.cloned(),
            },
            kind,
        });
    }
    Ok(list)
}

/// `[<body>.extra]`: other body fields. A text is a column or a template, a table a field
/// table, any other value (a list, a number, a boolean, a date) is sent as it is.
fn parse_extra(
    value: &toml::Value,
    body: &str,
    fields: &[(&str, FieldType)],
    values: &HashMap<String, Arc<HashMap<String, Value>>>,
) -> Result<Vec<(String, FieldSpec)>, String> {
    let table = value
        .as_table()
        .ok_or_else(|| format!("{body}.extra must be a section ([{body}.extra])"))?;
    let mut extra = Vec::new();
    for (key, value) in table {
        let at = format!("{body}.extra.{key}");
        if !fields.iter().any(|(name, _)| name == key) {
            let known: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
            return Err(format!(
                "{at}: the API takes no field {key} on a {body}; [{body}.extra] takes {}",
                known.join(", ")
            ));
        }
        // `custom` here is the whole object of custom attributes: a constant.
        let spec = if key == "custom" {
            constant(value, &at)?
        } else {
            field_or_constant(value, &at, values.get(key.as_str()))?
        };
        extra.push((key.clone(), spec));
    }
    Ok(extra)
}

/// A text or a table is a field's source; any other value (a list, a number, a boolean, a
/// date) is a constant sent as it is.
fn field_or_constant(
    value: &toml::Value,
    at: &str,
    values: Option<&Arc<HashMap<String, Value>>>,
) -> Result<FieldSpec, String> {
    match value {
        toml::Value::String(_) | toml::Value::Table(_) => parse_field(value, at, values),
        other => constant(other, at),
    }
}

fn constant(value: &toml::Value, at: &str) -> Result<FieldSpec, String> {
    Ok(FieldSpec {
        source: Source::Constant(
            toml_to_json(value).ok_or_else(|| format!("{at} cannot be sent as JSON"))?,
        ),
        values: None,
    })
}

/// `[customer.custom]`: custom attributes, each typed by its name's suffix.
fn parse_custom(
    value: &toml::Value,
    values: &HashMap<String, Arc<HashMap<String, Value>>>,
) -> Result<Vec<(String, FieldSpec)>, String> {
    let table = value
        .as_table()
        .ok_or("customer.custom must be a section ([customer.custom])")?;
    let mut custom = Vec::new();
    for (name, value) in table {
        let at = format!("customer.custom.{name}");
        if custom_attribute_type(name).is_none() {
            return Err(format!(
                "{at}: a custom attribute's name must end in its type: Str, Txt, Num, At, \
                 Bool or Url"
            ));
        }
        custom.push((
            name.clone(),
            field_or_constant(value, &at, values.get(name.as_str()))?,
        ));
    }
    Ok(custom)
}

fn parse_csv(section: &toml::Table) -> Result<CsvSettings, String> {
    let mut settings = CsvSettings::default();
    for (key, value) in section {
        let text = value
            .as_str()
            .ok_or_else(|| format!("csv.{key} must be text"))?;
        match key.as_str() {
            "delimiter" => {
                settings.delimiter = Some(
                    parse_delimiter(text).map_err(|reason| format!("csv.delimiter: {reason}"))?,
                )
            }
            "encoding" => {
                settings.encoding =
                    Some(parse_encoding(text).map_err(|reason| format!("csv.encoding: {reason}"))?)
            }
            other => {
                return Err(format!(
                    "csv.{other} is not a setting: [csv] takes delimiter and encoding"
                ));
            }
        }
    }
    Ok(settings)
}

fn toml_to_json(value: &toml::Value) -> Option<Value> {
    Some(match value {
        toml::Value::String(text) => Value::String(text.clone()),
        toml::Value::Integer(integer) => Value::from(*integer),
        toml::Value::Float(float) => Value::Number(serde_json::Number::from_f64(*float)?),
        toml::Value::Boolean(flag) => Value::Bool(*flag),
        toml::Value::Datetime(datetime) => Value::String(datetime.to_string()),
        toml::Value::Array(items) => {
            Value::Array(items.iter().map(toml_to_json).collect::<Option<_>>()?)
        }
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(key, value)| Some((key.clone(), toml_to_json(value)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

/// A mapping file bound to one input.
pub struct BoundMapping {
    file: Arc<MappingFile>,
    /// For CSV: each header's position.
    positions: Option<HashMap<String, usize>>,
    /// What the input's records are: conversation rows, items, or both.
    parts: Parts,
}

/// One source value as read: CSV text, or a JSON value.
enum Cell<'a> {
    Text(&'a str),
    Json(&'a Value),
}

impl BoundMapping {
    /// Maps and validates one record.
    pub fn map(&self, fields: &SourceFields) -> Result<Plan, MappingError> {
        let spec = &self.file.customer;
        let mut customer = CustomerBody {
            name: self.text(spec.name.as_ref(), fields, "name")?,
            external_id: self.text(spec.external_id.as_ref(), fields, "externalId")?,
            emails: self
                .contacts(&spec.emails, fields, "emails", "email")?
                .into_iter()
                .map(|(email, kind)| EmailEntry { email, kind })
                .collect(),
            phones: self
                .contacts(&spec.phones, fields, "phones", "phone")?
                .into_iter()
                .map(|(phone, kind)| PhoneEntry { phone, kind })
                .collect(),
            extra: self.extra(&spec.extra, fields, "")?,
        };
        let custom = self.extra(&spec.custom, fields, "custom.")?;
        if !custom.is_empty() {
            customer
                .extra
                .insert("custom".into(), Value::Object(custom));
        }
        let spec = &self.file.conversation;
        let conversation = ConversationBody {
            customer: None,
            external_id: self.conversation_id(fields)?,
            name: self.text(spec.name.as_ref(), fields, "conversation.name")?,
            channel: self.text(spec.channel.as_ref(), fields, "conversation.channel")?,
            status: self.text(spec.status.as_ref(), fields, "conversation.status")?,
            extra: self.extra(&spec.extra, fields, "conversation.")?,
        };
        finish_plan(customer, conversation)
    }

    /// The kind and raw API body of the message or note one record is, per `[history]`
    /// and the record's `[message]`/`[note]` section. Errors name the field
    /// (`message.direction`, `history.kind`). The caller makes it a `ThreadItem` with
    /// `history::checks::finish_item(kind, body, kind.as_str(), file, line)`, which
    /// validates and normalises the body.
    pub fn item(
        &self,
        fields: &SourceFields,
    ) -> Result<(ItemKind, Map<String, Value>), MappingError> {
        let file = &self.file;
        let kind = match &file.history.kind {
            Some(spec) => {
                let value = self.value(spec, fields, "history.kind")?;
                let named = value
                    .as_ref()
                    .and_then(Value::as_str)
                    .and_then(ItemKind::parse);
                named.ok_or_else(|| {
                    MappingError::new(
                        "history.kind",
                        "unknown kind",
                        match &value {
                            None => "is empty: a row must be a message or a note".to_string(),
                            Some(value) => format!(
                                "{value} is neither message nor note: map it in \
                                 [history.values.kind]"
                            ),
                        },
                    )
                })?
            }
            None if file.message.is_some() => ItemKind::Message,
            None if file.note.is_some() => ItemKind::Note,
            None => {
                return Err(MappingError::new(
                    "message",
                    "no history",
                    "the mapping file has no [message] or [note] section",
                ));
            }
        };
        let spec = match kind {
            ItemKind::Message => file.message.as_ref(),
            ItemKind::Note => file.note.as_ref(),
        };
        let Some(spec) = spec else {
            return Err(MappingError::new(
                "history.kind",
                "no section",
                format!(
                    "the row is a {} but the file has no [{0}] section",
                    kind.as_str()
                ),
            ));
        };
        let body = self.extra(&spec.fields, fields, &format!("{}.", kind.as_str()))?;
        Ok((kind, body))
    }

    /// The source id of the conversation an item record belongs to: for a child file's
    /// record, `history.conversation`; for a row that is a message (bound with `rows_too`),
    /// its conversation's own id, `conversation.externalId`. None when the mapping has no
    /// such column or the record's is empty.
    pub fn parent_conversation(
        &self,
        fields: &SourceFields,
    ) -> Result<Option<String>, MappingError> {
        match self.parts {
            Parts::Both => self.conversation_id(fields),
            Parts::Rows | Parts::Items => self.text(
                self.file.history.conversation.as_ref(),
                fields,
                "history.conversation",
            ),
        }
    }

    /// The field that [`BoundMapping::parent_conversation`] reads, as errors name it.
    pub fn parent_field(&self) -> &'static str {
        if self.groups_rows() {
            "conversation.externalId"
        } else {
            "history.conversation"
        }
    }

    /// Whether the records are rows that are messages, their conversation's columns
    /// repeated (bound with `rows_too`).
    pub fn groups_rows(&self) -> bool {
        self.parts == Parts::Both
    }

    /// The record's conversation's source id (`conversation.externalId`), read as
    /// [`BoundMapping::map`] reads it; None when it is empty.
    pub fn conversation_id(&self, fields: &SourceFields) -> Result<Option<String>, MappingError> {
        self.text(
            self.file.conversation.external_id.as_ref(),
            fields,
            "conversation.externalId",
        )
    }

    fn cell<'a>(&self, fields: &'a SourceFields, column: &str) -> Option<Cell<'a>> {
        match fields {
            SourceFields::Csv { values, .. } => {
                let index = *self.positions.as_ref()?.get(column)?;
                values.get(index).map(|value| Cell::Text(value.trim()))
            }
            SourceFields::Json(object) => json_path(object, column).map(Cell::Json),
        }
    }

    /// A field's value after its value map; None when the source is empty.
    fn value(
        &self,
        spec: &FieldSpec,
        fields: &SourceFields,
        field: &str,
    ) -> Result<Option<Value>, MappingError> {
        let value = match &spec.source {
            Source::Constant(value) => Some(value.clone()),
            Source::Column(column) => match self.cell(fields, column) {
                None | Some(Cell::Json(Value::Null)) => None,
                Some(Cell::Text(text)) => {
                    (!text.is_empty()).then(|| Value::String(text.to_string()))
                }
                Some(Cell::Json(Value::String(text))) => {
                    let text = text.trim();
                    (!text.is_empty()).then(|| Value::String(text.to_string()))
                }
                Some(Cell::Json(value)) => Some(value.clone()),
            },
            Source::Template(pieces) => self.render(pieces, fields, field)?.map(Value::String),
        };
        Ok(match (value, &spec.values) {
            (Some(value), Some(map)) => {
                let key = match &value {
                    Value::String(text) => Some(text.trim().to_lowercase()),
                    Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
                    _ => None,
                };
                Some(key.and_then(|key| map.get(&key).cloned()).unwrap_or(value))
            }
            (value, _) => value,
        })
    }

    /// Renders a template; the spaces an empty placeholder leaves collapse, and a template
    /// whose placeholders are all empty gives nothing.
    fn render(
        &self,
        pieces: &[Piece],
        fields: &SourceFields,
        field: &str,
    ) -> Result<Option<String>, MappingError> {
        let mut out = String::new();
        let mut any_value = false;
        let mut after_empty = false;
        for piece in pieces {
            match piece {
                Piece::Text(text) => {
                    if after_empty && (out.is_empty() || out.ends_with(char::is_whitespace)) {
                        out.push_str(text.trim_start());
                    } else {
                        out.push_str(text);
                    }
                    after_empty = false;
                }
                Piece::Column(column) => {
                    let value = match self.cell(fields, column) {
                        None | Some(Cell::Json(Value::Null)) => String::new(),
                        Some(Cell::Text(text)) => text.to_string(),
                        Some(Cell::Json(Value::String(text))) => text.trim().to_string(),
                        Some(Cell::Json(value @ (Value::Number(_) | Value::Bool(_)))) => {
                            value.to_string()
                        }
                        Some(Cell::Json(_)) => {
                            return Err(MappingError::new(
                                field,
                                "template column not text",
                                format!("{{{column}}} is a list or an object, not text"),
                            ));
                        }
                    };
                    if value.is_empty() {
                        after_empty = true;
                        if out.ends_with(char::is_whitespace) {
                            out.truncate(out.trim_end().len());
                            out.push(' ');
                        }
                    } else {
                        any_value = true;
                        out.push_str(&value);
                    }
                }
            }
        }
        let out = out.trim();
        Ok((any_value && !out.is_empty()).then(|| out.to_string()))
    }

    fn text(
        &self,
        spec: Option<&FieldSpec>,
        fields: &SourceFields,
        field: &str,
    ) -> Result<Option<String>, MappingError> {
        let Some(spec) = spec else { return Ok(None) };
        match self.value(spec, fields, field)? {
            None => Ok(None),
            Some(Value::String(text)) => {
                let text = text.trim();
                Ok((!text.is_empty()).then(|| text.to_string()))
            }
            Some(value @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(value.to_string())),
            Some(_) => Err(MappingError::new(
                field,
                "not text",
                "must be text, not a list or an object",
            )),
        }
    }

    fn contacts(
        &self,
        specs: &[ListSpec],
        fields: &SourceFields,
        field: &str,
        inner: &str,
    ) -> Result<Vec<(String, Option<String>)>, MappingError> {
        let mut entries = Vec::new();
        for spec in specs {
            let value = match self.value(&spec.field, fields, field)? {
                None => continue,
                Some(Value::String(text)) => FlatValue::Text(text),
                Some(value @ (Value::Number(_) | Value::Bool(_))) => {
                    FlatValue::Text(value.to_string())
                }
                Some(Value::Array(items)) => FlatValue::List(items),
                Some(value) => FlatValue::List(vec![value]),
            };
            for (contact, kind) in contact_list(Some(value), field, inner)? {
                entries.push((contact, kind.or_else(|| spec.kind.clone())));
            }
        }
        // The same address from two columns is one entry.
        let mut seen = std::collections::HashSet::new();
        entries.retain(|(contact, _)| seen.insert(contact.to_lowercase()));
        Ok(entries)
    }

    fn extra(
        &self,
        specs: &[(String, FieldSpec)],
        fields: &SourceFields,
        prefix: &str,
    ) -> Result<Map<String, Value>, MappingError> {
        let mut extra = Map::new();
        for (name, spec) in specs {
            if let Some(value) = self.value(spec, fields, &format!("{prefix}{name}"))? {
                extra.insert(name.clone(), value);
            }
        }
        Ok(extra)
    }
}

/// A key of the object, else a dotted path into it (`requester.email`, `emails.0`).
fn json_path<'a>(object: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = object.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut current = object.get(parts.next()?)?;
    for part in parts {
        current = match current {
            Value::Object(object) => object.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HELPDESK: &str = r#"
[customer]
externalId = "Requester ID"
name = "{Requester First} {Requester Last}"
emails = ["Requester Email", {column = "Requester Alt Email", type = "work"}]
phones = ["Requester Phone"]

[conversation]
externalId = "Ticket ID"
name = "Subject"
channel = "Via"
status = "Ticket Status"

[conversation.values.status]
solved = "done"
closed = "done"
pending = "snoozed"
hold = "snoozed"
new = "open"

[conversation.extra]
importedAt = "{Created At}"
tags = ["migrated"]

[csv]
delimiter = ";"
encoding = "windows-1252"
"#;

    const HEADERS: [&str; 11] = [
        "Ticket ID",
        "Subject",
        "Via",
        "Ticket Status",
        "Created At",
        "Requester ID",
        "Requester First",
        "Requester Last",
        "Requester Email",
        "Requester Alt Email",
        "Requester Phone",
    ];

    fn bound(text: &str) -> BoundMapping {
        let file = Arc::new(MappingFile::parse(text).unwrap());
        let headers = Arc::new(HEADERS.iter().map(|h| h.to_string()).collect());
        file.bind(Some(&headers)).unwrap()
    }

    fn row(values: [&str; 11]) -> SourceFields {
        SourceFields::Csv {
            headers: Arc::new(HEADERS.iter().map(|h| h.to_string()).collect()),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn the_issue_example_maps_a_help_desk_row() {
        let plan = bound(HELPDESK)
            .map(&row([
                "T-1",
                "Refund",
                "email",
                "Solved",
                "2024-03-01 10:00:00+01:00",
                "R-9",
                "",
                "Lovelace",
                "ada@x.io",
                "ADA@x.io",
                "",
            ]))
            .unwrap();
        assert_eq!(plan.customer_key, "ext:R-9");
        assert_eq!(plan.customer.name.as_deref(), Some("Lovelace"));
        assert_eq!(
            plan.customer.emails.len(),
            1,
            "the same address twice is one"
        );
        let conversation = plan.conversation.unwrap();
        assert_eq!(conversation.status.as_deref(), Some("done"));
        assert_eq!(
            conversation.extra["importedAt"],
            json!("2024-03-01T09:00:00Z")
        );
        assert_eq!(conversation.extra["tags"], json!(["migrated"]));
    }

    #[test]
    fn an_unmapped_status_passes_through_and_is_validated() {
        let error = bound(HELPDESK)
            .map(&row([
                "T-1", "", "", "waiting", "", "R-9", "", "", "", "", "",
            ]))
            .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("conversation.status"));
    }

    #[test]
    fn list_entries_take_their_column_type() {
        let plan = bound(HELPDESK)
            .map(&row([
                "",
                "",
                "",
                "",
                "",
                "R-9",
                "Ada",
                "",
                "",
                "a@work.io",
                "+44 20 7946 0958",
            ]))
            .unwrap();
        assert_eq!(plan.customer.emails[0].kind.as_deref(), Some("work"));
        assert_eq!(plan.customer.phones[0].phone, "+442079460958");
        assert!(plan.conversation.is_none() || plan.conversation.unwrap().extra.len() == 1);
    }

    #[test]
    fn a_column_the_file_lacks_is_named_with_the_columns_it_has() {
        let file = Arc::new(MappingFile::parse(HELPDESK).unwrap());
        let headers = Arc::new(vec!["Ticket ID".to_string(), "Subject".to_string()]);
        let error = file.bind(Some(&headers)).err().unwrap().to_string();
        assert!(error.contains("\"Via\""), "{error}");
        assert!(error.contains("The file's columns are: \"Ticket ID\", \"Subject\""));
    }

    #[test]
    fn mistakes_in_the_file_are_named() {
        let cases = [
            ("[customer]\nemail = \"E\"", "customer.email is not a field"),
            (
                "[customer]\nexternalId = \"I\"\ncompany = \"C\"",
                "goes under [customer.extra]",
            ),
            ("[customer]\nexternalId = \"{I\"", "is not closed"),
            (
                "[customer]\nexternalId = \"I\"\n[conversation.extra]\nmood = \"M\"",
                "takes no field mood",
            ),
            ("[customer]\nname = \"N\"", "maps none of externalId"),
            (
                "[customer]\nexternalId = \"I\"\n[csv]\nencoding = \"klingon\"",
                "csv.encoding",
            ),
            (
                "[customer]\nexternalId = \"I\"\n[conversation.values.status]\nx = \"done\"",
                "does not set",
            ),
            ("[customer\n", "not valid TOML"),
        ];
        for (text, expected) in cases {
            let error = MappingFile::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn jsonl_uses_dotted_paths_and_keeps_lists() {
        let file = Arc::new(
            MappingFile::parse(
                "[customer]\nexternalId = \"requester.id\"\nemails = \"requester.emails\"\n\
                 [conversation]\nname = \"subject\"\n[conversation.extra]\ntags = \"labels\"\n",
            )
            .unwrap(),
        );
        let record = json!({"requester": {"id": 7, "emails": ["a@x.io", "b@x.io"]},
                            "subject": "Hi", "labels": ["x", "y"]});
        let plan = file
            .bind(None)
            .unwrap()
            .map(&SourceFields::Json(record.as_object().unwrap().clone()))
            .unwrap();
        assert_eq!(plan.customer_key, "ext:7");
        assert_eq!(plan.customer.emails.len(), 2);
        assert_eq!(plan.conversation.unwrap().extra["tags"], json!(["x", "y"]));
    }

    #[test]
    fn templates_collapse_the_spaces_of_empty_placeholders() {
        let mapping = bound(
            "[customer]\nexternalId = \"Requester ID\"\n\
             name = \"{Requester First} {Ticket ID} {Requester Last}\"\n",
        );
        let plan = mapping
            .map(&row(["", "", "", "", "", "R", "Ada", "King", "", "", ""]))
            .unwrap();
        assert_eq!(plan.customer.name.as_deref(), Some("Ada King"));
        let plan = mapping
            .map(&row(["", "", "", "", "", "R", "", "King", "", "", ""]))
            .unwrap();
        assert_eq!(plan.customer.name.as_deref(), Some("King"));
        let plan = mapping
            .map(&row(["", "", "", "", "", "R", "", "", "", "", ""]))
            .unwrap();
        assert_eq!(plan.customer.name, None);
    }
}

#[cfg(test)]
mod history_tests {
    use super::*;
    use serde_json::json;

    const COMMENTS: &str = r#"
[customer]
externalId = "requester"

[conversation]
externalId = "ticket"

[history]
conversation = "ticket_id"
kind = "public"

[history.values.kind]
true = "message"
false = "note"

[message]
externalId = "id"
channel = { value = "email" }
direction = "author_type"
createdAt = "created"
preview = "text"

[message.values.direction]
agent = "out"
end-user = "in"

[note]
externalId = "id"
body = "text"
createdAt = "created"
"#;

    const CHILD: [&str; 6] = [
        "ticket_id",
        "id",
        "public",
        "author_type",
        "created",
        "text",
    ];

    fn child(values: [&str; 6]) -> SourceFields {
        SourceFields::Csv {
            headers: Arc::new(CHILD.iter().map(|h| h.to_string()).collect()),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn bound_child() -> BoundMapping {
        let file = Arc::new(MappingFile::parse(COMMENTS).unwrap());
        let headers = Arc::new(CHILD.iter().map(|h| h.to_string()).collect());
        file.bind_items(Some(&headers), false).unwrap()
    }

    #[test]
    fn a_child_row_maps_to_a_message_or_a_note_by_its_kind_column() {
        let mapping = bound_child();
        let message = child(["T-1", "c1", "true", "Agent", "2024-03-01T10:00:00Z", "Hi"]);
        let (kind, body) = mapping.item(&message).unwrap();
        assert_eq!(kind, ItemKind::Message);
        assert_eq!(
            Value::Object(body),
            json!({"externalId": "c1", "channel": "email", "direction": "out",
                   "createdAt": "2024-03-01T10:00:00Z", "preview": "Hi"})
        );
        assert_eq!(
            mapping.parent_conversation(&message).unwrap().as_deref(),
            Some("T-1")
        );
        let note = child([
            "T-1",
            "c2",
            "FALSE",
            "agent",
            "2024-03-01T11:00:00Z",
            "Call back",
        ]);
        let (kind, body) = mapping.item(&note).unwrap();
        assert_eq!(kind, ItemKind::Note);
        assert_eq!(
            Value::Object(body),
            json!({"externalId": "c2", "body": "Call back", "createdAt": "2024-03-01T11:00:00Z"})
        );
    }

    #[test]
    fn the_users_table_maps_agents_to_emails_or_ids_and_a_message_carries_its_author() {
        use crate::mapping::users::UserRef;
        let text = "[customer]\nexternalId = \"requester\"\n\
                    [message]\nexternalId = \"id\"\ncreatedBy = \"author\"\n\
                    [users]\n\"Support Bot\" = \"Cy@Example.com\"\n\
                    \"ann\" = \"5f3a9c0e1b2d4c6a8e0f1a2b\"\n";
        let file = MappingFile::parse(text).unwrap();
        assert_eq!(
            file.users.get("support bot"),
            Some(&UserRef::Email("cy@example.com".into())),
            "matched in any case, the email lower-cased"
        );
        assert_eq!(
            file.users.get(" Ann "),
            Some(&UserRef::Id("5f3a9c0e1b2d4c6a8e0f1a2b".into()))
        );
        assert_eq!(file.users.get("dee@example.com"), None);
        let headers = Arc::new(vec!["id".to_string(), "author".to_string()]);
        let bound = Arc::new(file).bind_items(Some(&headers), false).unwrap();
        let row = SourceFields::Csv {
            headers,
            values: ["m1", "Support Bot"]
                .iter()
                .map(|v| v.to_string())
                .collect(),
        };
        let (_, body) = bound.item(&row).unwrap();
        assert_eq!(body["createdBy"], json!("Support Bot"), "mapped when sent");
    }

    #[test]
    fn mistakes_in_the_users_table_are_named() {
        let head = "[customer]\nexternalId = \"I\"\n[users]\n";
        for (entry, expected) in [
            (
                "bot = \"Cy\"",
                "users.\"bot\" = \"Cy\" is neither an email nor",
            ),
            (
                "bot = \"5f3a9c0e1b2d4c6a8e0f1a2\"",
                "is neither an email nor",
            ),
            ("bot = 7", "must be text"),
            ("Bot = \"a@x.io\"\nbot = \"b@x.io\"", "given twice"),
        ] {
            let error = MappingFile::parse(&format!("{head}{entry}\n")).unwrap_err();
            assert!(error.contains(expected), "{entry}: {error}");
        }
    }

    #[test]
    fn a_kind_the_map_does_not_know_names_the_field() {
        let row = child(["T-1", "c1", "maybe", "agent", "", "Hi"]);
        let error = bound_child().item(&row).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("history.kind") && text.contains("maybe"),
            "{text}"
        );
    }

    #[test]
    fn a_child_file_binds_only_the_item_columns_and_a_row_file_only_its_own() {
        let file = Arc::new(MappingFile::parse(COMMENTS).unwrap());
        let rows = Arc::new(vec!["requester".to_string(), "ticket".to_string()]);
        assert!(file.bind(Some(&rows)).is_ok());
        let error = file
            .bind_items(Some(&rows), true)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("\"ticket_id\""), "{error}");
        let error = file
            .bind_items(Some(&rows), false)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("\"author_type\""), "{error}");
    }

    #[test]
    fn mistakes_in_the_history_sections_are_named() {
        let base = "[customer]\nexternalId = \"c\"\n";
        for (extra, expected) in [
            (
                "[message]\nbody = \"x\"\n",
                "message.body is not a field of a message",
            ),
            (
                "[note]\ndirection = \"x\"\n",
                "note.direction is not a field of a note",
            ),
            (
                "[message]\nchannel = \"c\"\n[note]\nbody = \"b\"\n",
                "both set",
            ),
            (
                "[history]\nconversation = \"p\"\n",
                "no [message] or [note]",
            ),
            (
                "[history]\nfoo = \"p\"\n[note]\nbody = \"b\"\n",
                "history.foo is not a setting",
            ),
            (
                "[note]\nbody = \"b\"\n[history]\nkind = \"k\"\n[history.values.kind]\nx = \"message\"\n",
                "no [message] section",
            ),
            (
                "[note]\nbody = \"b\"\n[history]\nkind = \"k\"\n[history.values.kind]\nx = \"mail\"\n",
                "is not a kind",
            ),
            (
                "[message]\nchannel = \"c\"\n[message.values.direction]\nx = \"in\"\n",
                "message.values.direction maps the values of direction",
            ),
        ] {
            let error = MappingFile::parse(&format!("{base}{extra}")).unwrap_err();
            assert!(error.contains(expected), "{extra}: {error}");
        }
    }

    #[test]
    fn one_section_alone_needs_no_kind() {
        let text = "[customer]\nexternalId = \"c\"\n[note]\nbody = \"text\"\n";
        let file = Arc::new(MappingFile::parse(text).unwrap());
        let headers = Arc::new(vec!["text".to_string()]);
        let mapping = file.bind_items(Some(&headers), false).unwrap();
        let row = SourceFields::Csv {
            headers,
            values: ["hello"].iter().map(|v| v.to_string()).collect(),
        };
        let (kind, body) = mapping.item(&row).unwrap();
        assert_eq!(kind, ItemKind::Note);
        assert_eq!(Value::Object(body), json!({"body": "hello"}));
    }
}
