//! Local validation of one message or note: the shape rules the API applies to a message
//! and a note body (`../shared/docs/kustomer-api.md`, "Messages and notes"), checked before
//! any request, as `mapping::checks` does for a customer and a conversation. Every source of
//! history (a nested thread, a child file, one row per message, a preset) ends in
//! [`finish_item`], which refuses what the API would refuse with the field's path and the
//! reason, normalises what is safe to normalise (timestamps to UTC, channel, direction and
//! status to lower case), and makes the body a [`ThreadItem`].

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{ItemKind, ThreadItem};
use crate::mapping::MappingError;
use crate::mapping::checks::{
    FieldType, MAX_TEXT_LEN, normalize_timestamp, normalize_value, quoted, spell_as_known,
};
use crate::sandbox::validate::{CHANNELS, MAX_MENTIONS, MAX_NOTE_BODY, MESSAGE_STATUSES};

/// What a message's `app` is when the source gives none: one stable name per integration,
/// as the API asks.
pub const DEFAULT_APP: &str = "kustomer-import";

/// Longest note `body`, in characters: Kustomer's reference says 1 to 10,240.
pub const MAX_NOTE_TEXT: usize = MAX_NOTE_BODY;

/// Longest message `preview`, in characters. The docs do not say where a long or HTML body
/// goes nor how long it may be; the one limit they give a thread's text is the note's, so a
/// preview is held to the same 10,240 characters (the strictest plausible reading: an import
/// that passes here does not rely on the live API taking more). A longer one is refused,
/// never cut: a cut message would be reported as imported while its text is not.
pub const MAX_PREVIEW: usize = MAX_NOTE_BODY;

const DIRECTIONS: [&str; 2] = ["in", "out"];

/// How one field of a message or note body is checked.
#[derive(Clone, Copy)]
enum Rule {
    /// One of these words, in any case; spelt as the list spells it.
    OneOf(&'static [&'static str]),
    /// RFC 3339 with an offset, normalised to UTC.
    Timestamp,
    /// Text of at most this many characters.
    Text(usize),
    /// A non-empty text of at most this many characters.
    NonEmptyText(usize),
    /// Checked as `mapping::checks` checks a conversation's extra fields.
    Typed(FieldType),
    /// Any JSON object (`meta`).
    Object,
    /// A list of at most this many entries (`attachments`, `userMentions`).
    List(usize),
}

/// The fields a message body takes (`externalId` and `conversation` are taken out before).
const MESSAGE_FIELDS: &[(&str, Rule)] = &[
    ("channel", Rule::OneOf(CHANNELS)),
    ("app", Rule::NonEmptyText(MAX_TEXT_LEN)),
    ("direction", Rule::OneOf(&DIRECTIONS)),
    ("status", Rule::OneOf(MESSAGE_STATUSES)),
    ("sentAt", Rule::Timestamp),
    ("createdAt", Rule::Timestamp),
    ("modifiedAt", Rule::Timestamp),
    ("importedAt", Rule::Timestamp),
    ("createdBy", Rule::NonEmptyText(MAX_TEXT_LEN)),
    ("modifiedBy", Rule::NonEmptyText(MAX_TEXT_LEN)),
    ("preview", Rule::Text(MAX_PREVIEW)),
    ("subject", Rule::Typed(FieldType::Text)),
    ("meta", Rule::Object),
    ("custom", Rule::Typed(FieldType::Custom)),
    ("lang", Rule::Text(MAX_TEXT_LEN)),
    ("attachments", Rule::List(usize::MAX)),
    ("auto", Rule::Typed(FieldType::Bool)),
];

/// The fields a note body takes (`externalId` and `conversation` are taken out before).
const NOTE_FIELDS: &[(&str, Rule)] = &[
    ("body", Rule::NonEmptyText(MAX_NOTE_TEXT)),
    ("userMentions", Rule::List(MAX_MENTIONS)),
    ("attachments", Rule::List(usize::MAX)),
    ("createdAt", Rule::Timestamp),
    ("modifiedAt", Rule::Timestamp),
    ("importedAt", Rule::Timestamp),
    ("createdBy", Rule::NonEmptyText(MAX_TEXT_LEN)),
    ("modifiedBy", Rule::NonEmptyText(MAX_TEXT_LEN)),
];

/// Validates and normalises one message or note body read from a source and makes it a
/// ThreadItem. `path` is how errors name the item's fields ("messages[3]", "message",
/// "comments[2]"): a refusal is `MappingError::new(&format!("{path}.direction"), rule,
/// reason)`.
///
/// `externalId` (text or number) becomes the item's `source_id` and leaves the body, as
/// does a `conversation` (both are set when it is sent); a message without `app` gets
/// [`DEFAULT_APP`]; `at` is `sentAt`, else `createdAt`, for a message and `createdAt` for a
/// note. A field the API does not take on that body is refused, as on a conversation.
pub fn finish_item(
    kind: ItemKind,
    mut body: Map<String, Value>,
    path: &str,
    file: &Arc<str>,
    line: u64,
) -> Result<ThreadItem, MappingError> {
    let source_id = take_source_id(&mut body, path)?;
    body.remove("conversation");
    let (fields, required): (&[(&str, Rule)], &[&str]) = match kind {
        ItemKind::Message => {
            if body.get("app").is_none_or(Value::is_null) {
                body.insert("app".into(), Value::String(DEFAULT_APP.into()));
            }
            (MESSAGE_FIELDS, &["channel", "direction"])
        }
        ItemKind::Note => (NOTE_FIELDS, &["body"]),
    };
    check_fields(&mut body, fields, path, kind)?;
    for name in required {
        if !body.contains_key(*name) {
            return Err(MappingError::new(
                &format!("{path}.{name}"),
                "missing",
                format!("is missing: a {} needs one", kind.as_str()),
            ));
        }
    }
    let at_fields: &[&str] = match kind {
        ItemKind::Message => &["sentAt", "createdAt"],
        ItemKind::Note => &["createdAt"],
    };
    let at = at_fields
        .iter()
        .find_map(|name| body.get(*name).and_then(Value::as_str))
        .and_then(|text| text.parse::<jiff::Timestamp>().ok());
    Ok(ThreadItem {
        kind,
        source_id,
        at,
        body,
        file: Arc::clone(file),
        line,
    })
}

/// Takes `externalId` out of the body: text or a number, 1 to 255 characters; null or
/// absent is None (one is derived when it is sent).
fn take_source_id(
    body: &mut Map<String, Value>,
    path: &str,
) -> Result<Option<String>, MappingError> {
    let field = || format!("{path}.externalId");
    let id = match body.remove("externalId") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text.trim().to_string(),
        Some(Value::Number(number)) => number.to_string(),
        Some(other) => {
            return Err(MappingError::new(
                &field(),
                "not text or a number",
                format!("{} is not text or a number", quoted(&other.to_string())),
            ));
        }
    };
    if id.is_empty() {
        return Err(MappingError::new(&field(), "empty", "is empty"));
    }
    check_length(&id, MAX_TEXT_LEN, &field())?;
    Ok(Some(id))
}

/// Checks each field of `body` against the ones the API takes on it; a null field is
/// dropped, as the absence it means.
fn check_fields(
    body: &mut Map<String, Value>,
    fields: &[(&str, Rule)],
    path: &str,
    kind: ItemKind,
) -> Result<(), MappingError> {
    let keys: Vec<String> = body.keys().cloned().collect();
    for key in keys {
        let field = format!("{path}.{key}");
        let Some((_, rule)) = fields.iter().find(|(name, _)| *name == key) else {
            let known: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
            return Err(MappingError::new(
                &field,
                "not a field the API takes",
                format!(
                    "is not a field the API takes on a {} (it takes externalId, {})",
                    kind.as_str(),
                    known.join(", ")
                ),
            ));
        };
        if let Some(value) = body.remove(&key)
            && !value.is_null()
        {
            body.insert(key, check_value(*rule, &field, value)?);
        }
    }
    Ok(())
}

fn check_value(rule: Rule, field: &str, value: Value) -> Result<Value, MappingError> {
    match rule {
        Rule::OneOf(known) => match value {
            Value::String(mut text) => {
                if spell_as_known(&mut text, known) {
                    return Ok(Value::String(text));
                }
                Err(not_one_of(field, &Value::String(text), known))
            }
            other => Err(not_one_of(field, &other, known)),
        },
        Rule::Timestamp => check_timestamp(field, value),
        Rule::Text(limit) | Rule::NonEmptyText(limit) => {
            let text = match value {
                Value::String(text) => text,
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                _ => return Err(MappingError::new(field, "must be text", "must be text")),
            };
            if matches!(rule, Rule::NonEmptyText(_)) && text.trim().is_empty() {
                return Err(MappingError::new(field, "empty", "is empty"));
            }
            check_length(&text, limit, field)?;
            Ok(Value::String(text))
        }
        Rule::Typed(kind) => normalize_value(kind, field, value),
        Rule::Object => match value {
            Value::Object(_) => Ok(value),
            _ => Err(MappingError::new(
                field,
                "not an object",
                "must be an object",
            )),
        },
        Rule::List(limit) => match value {
            Value::Array(items) if items.len() <= limit => Ok(Value::Array(items)),
            Value::Array(items) => Err(MappingError::new(
                field,
                "too many entries",
                format!("has {} entries; the API takes at most {limit}", items.len()),
            )),
            _ => Err(MappingError::new(field, "not a list", "must be a list")),
        },
    }
}

/// RFC 3339 with an offset, as UTC (`Z`). A date and time without an offset is refused as
/// such: its zone would be a guess.
fn check_timestamp(field: &str, value: Value) -> Result<Value, MappingError> {
    if let Some(normalized) = value.as_str().and_then(normalize_timestamp) {
        return Ok(Value::String(normalized));
    }
    let without_offset = value
        .as_str()
        .is_some_and(|text| text.trim().parse::<jiff::civil::DateTime>().is_ok());
    if without_offset {
        return Err(MappingError::new(
            field,
            "a date without an offset",
            format!(
                "{} is a date without an offset: its zone would be a guess; give one, such \
                 as 2024-01-31T12:00:00Z or 2024-01-31T14:00:00+02:00",
                quoted_value(&value)
            ),
        ));
    }
    Err(MappingError::new(
        field,
        "not an RFC 3339 timestamp",
        format!(
            "{} is not an RFC 3339 timestamp with an offset, such as 2024-01-31T12:00:00Z",
            quoted_value(&value)
        ),
    ))
}

fn not_one_of(field: &str, value: &Value, known: &[&str]) -> MappingError {
    MappingError::new(
        field,
        "not a known value",
        format!("{} is not one of {}", quoted_value(value), known.join(", ")),
    )
}

fn quoted_value(value: &Value) -> String {
    match value {
        Value::String(text) => quoted(text),
        other => quoted(&other.to_string()),
    }
}

fn check_length(text: &str, limit: usize, field: &str) -> Result<(), MappingError> {
    // No more bytes than the limit, no more characters: most texts need no count.
    if text.len() > limit && text.chars().count() > limit {
        return Err(MappingError::new(
            field,
            "too long",
            format!("is longer than {limit} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("a test body is an object"),
        }
    }

    fn message(value: Value) -> Result<ThreadItem, MappingError> {
        finish_item(
            ItemKind::Message,
            body(value),
            "messages[3]",
            &Arc::from("t.jsonl"),
            7,
        )
    }

    fn note(value: Value) -> Result<ThreadItem, MappingError> {
        finish_item(
            ItemKind::Note,
            body(value),
            "notes[0]",
            &Arc::from("t.jsonl"),
            7,
        )
    }

    fn field_of(result: Result<ThreadItem, MappingError>) -> String {
        result.unwrap_err().field.unwrap()
    }

    #[test]
    fn the_external_id_becomes_the_source_id_and_leaves_the_body() {
        let item =
            message(json!({"externalId": 42, "channel": "email", "direction": "in"})).unwrap();
        assert_eq!(item.source_id.as_deref(), Some("42"));
        assert!(!item.body.contains_key("externalId"));
        assert_eq!((item.file.as_ref(), item.line), ("t.jsonl", 7));
        let item = note(json!({"externalId": " c-1 ", "body": "x"})).unwrap();
        assert_eq!(item.source_id.as_deref(), Some("c-1"));
        assert_eq!(note(json!({"body": "x"})).unwrap().source_id, None);
        assert_eq!(
            field_of(note(json!({"externalId": {"a": 1}, "body": "x"}))),
            "notes[0].externalId"
        );
        assert_eq!(
            field_of(note(json!({"externalId": "x".repeat(256), "body": "x"}))),
            "notes[0].externalId"
        );
    }

    #[test]
    fn a_message_needs_a_known_channel() {
        assert_eq!(
            field_of(message(json!({"direction": "in"}))),
            "messages[3].channel"
        );
        let error = message(json!({"channel": "fax", "direction": "in"})).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("messages[3].channel"));
        assert!(
            error.reason.starts_with("\"fax\" is not one of email, sms"),
            "{error}"
        );
        let item = message(json!({"channel": "WhatsApp", "direction": "in"})).unwrap();
        assert_eq!(item.body["channel"], "whatsapp");
    }

    #[test]
    fn a_message_needs_a_direction_in_or_out() {
        let error = message(json!({"channel": "email"})).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("messages[3].direction"));
        assert_eq!(error.rule, "missing");
        let error = message(json!({"channel": "email", "direction": "sideways"})).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("messages[3].direction"));
        assert_eq!(error.reason, "\"sideways\" is not one of in, out");
        let item = message(json!({"channel": "email", "direction": "OUT"})).unwrap();
        assert_eq!(item.body["direction"], "out");
    }

    #[test]
    fn a_message_without_app_gets_the_importers() {
        let item = message(json!({"channel": "chat", "direction": "in"})).unwrap();
        assert_eq!(item.body["app"], DEFAULT_APP);
        let item =
            message(json!({"channel": "chat", "direction": "in", "app": "zendesk"})).unwrap();
        assert_eq!(item.body["app"], "zendesk");
        let empty = message(json!({"channel": "chat", "direction": "in", "app": " "}));
        assert_eq!(field_of(empty), "messages[3].app");
    }

    #[test]
    fn a_message_status_is_sent_received_or_error() {
        let ok = message(json!({"channel": "sms", "direction": "in", "status": "Received"}));
        assert_eq!(ok.unwrap().body["status"], "received");
        let bad = message(json!({"channel": "sms", "direction": "in", "status": "read"}));
        assert_eq!(field_of(bad), "messages[3].status");
    }

    #[test]
    fn dates_need_an_offset_and_are_normalised_to_utc() {
        let item = message(json!({
            "channel": "email", "direction": "in",
            "createdAt": "2024-03-01T10:00:00+02:00", "modifiedAt": "2024-03-02 10:00:00Z"
        }))
        .unwrap();
        assert_eq!(item.body["createdAt"], "2024-03-01T08:00:00Z");
        assert_eq!(item.body["modifiedAt"], "2024-03-02T10:00:00Z");
        let error = message(json!({
            "channel": "email", "direction": "in", "sentAt": "2024-03-01T10:00:00"
        }))
        .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("messages[3].sentAt"));
        assert_eq!(error.rule, "a date without an offset");
        assert!(
            error
                .reason
                .starts_with("\"2024-03-01T10:00:00\" is a date without an offset")
        );
        let error = note(json!({"body": "x", "createdAt": "yesterday"})).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("notes[0].createdAt"));
        assert_eq!(error.rule, "not an RFC 3339 timestamp");
    }

    #[test]
    fn a_message_is_at_its_sent_time_else_its_creation() {
        let both = message(json!({
            "channel": "email", "direction": "in",
            "createdAt": "2024-03-01T10:00:00Z", "sentAt": "2024-03-01T09:00:00Z"
        }));
        assert_eq!(
            both.unwrap().at,
            Some("2024-03-01T09:00:00Z".parse().unwrap())
        );
        let created = message(json!({
            "channel": "email", "direction": "in", "createdAt": "2024-03-01T10:00:00Z"
        }));
        assert_eq!(
            created.unwrap().at,
            Some("2024-03-01T10:00:00Z".parse().unwrap())
        );
        let neither = message(json!({"channel": "email", "direction": "in"}));
        assert_eq!(neither.unwrap().at, None);
    }

    #[test]
    fn a_note_is_at_its_creation() {
        let item = note(json!({"body": "x", "createdAt": "2024-03-01T10:00:00-05:00"})).unwrap();
        assert_eq!(item.at, Some("2024-03-01T15:00:00Z".parse().unwrap()));
    }

    #[test]
    fn a_note_needs_a_body() {
        let error = note(json!({"createdAt": "2024-03-01T10:00:00Z"})).unwrap_err();
        assert_eq!(
            (error.field.as_deref(), error.rule),
            (Some("notes[0].body"), "missing")
        );
        let error = note(json!({"body": "  "})).unwrap_err();
        assert_eq!(
            (error.field.as_deref(), error.rule),
            (Some("notes[0].body"), "empty")
        );
    }

    #[test]
    fn imported_at_given_by_the_source_is_kept() {
        let item = note(json!({"body": "x", "importedAt": "2024-01-01T00:00:00+01:00"})).unwrap();
        assert_eq!(item.body["importedAt"], "2023-12-31T23:00:00Z");
    }

    #[test]
    fn texts_longer_than_the_api_takes_are_refused_not_cut() {
        assert!(note(json!({"body": "é".repeat(MAX_NOTE_TEXT)})).is_ok());
        let error = note(json!({"body": "é".repeat(MAX_NOTE_TEXT + 1)})).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("notes[0].body"));
        assert_eq!(error.reason, "is longer than 10240 characters");
        let long = message(json!({
            "channel": "email", "direction": "in", "preview": "x".repeat(MAX_PREVIEW + 1)
        }));
        assert_eq!(field_of(long), "messages[3].preview");
    }

    #[test]
    fn fields_the_api_does_not_take_are_refused() {
        let error = message(json!({"channel": "email", "direction": "in", "mood": 1})).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("messages[3].mood"));
        assert_eq!(error.rule, "not a field the API takes");
        // A note takes no channel; a message no body.
        assert_eq!(
            field_of(note(json!({"body": "x", "channel": "email"}))),
            "notes[0].channel"
        );
        let body = message(json!({"channel": "email", "direction": "in", "body": "x"}));
        assert_eq!(field_of(body), "messages[3].body");
    }

    #[test]
    fn typed_fields_are_checked_and_null_is_absence() {
        let item = message(json!({
            "channel": "email", "direction": "in", "auto": "yes", "meta": {"from": "a@x.io"},
            "subject": null, "conversation": "0123456789abcdef01234567"
        }))
        .unwrap();
        assert_eq!(item.body["auto"], true);
        assert!(!item.body.contains_key("subject"));
        assert!(!item.body.contains_key("conversation"));
        let meta = message(json!({"channel": "email", "direction": "in", "meta": "x"}));
        assert_eq!(field_of(meta), "messages[3].meta");
        let mentions: Vec<Value> = (0..=MAX_MENTIONS).map(|n| json!(format!("u{n}"))).collect();
        let error = note(json!({"body": "x", "userMentions": mentions})).unwrap_err();
        assert_eq!(error.rule, "too many entries");
    }
}
