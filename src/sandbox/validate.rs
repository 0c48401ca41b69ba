//! Body validation for the sandbox's create and update endpoints: pure functions from a JSON body to
//! the list of problems found in it, one [`FieldError`] per problem, each with the JSON
//! pointer of the offending value. No state, no I/O: the checks that need the store
//! (duplicates, whether a conversation's customer exists) live in `store.rs`. The rules are
//! those of `shared/docs/kustomer-api.md`, read strictly: where the live API's tolerance is
//! unknown, the sandbox refuses, so that an importer that passes here also passes there.

use serde::Serialize;
use serde_json::{Map, Value};

use super::store::UpdateMode;

/// Longest `name` and `externalId` accepted, in characters.
pub const MAX_SHORT_STRING: usize = 255;

/// One problem with a request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON pointer (RFC 6901) to the offending value, `""` for the whole body.
    pub pointer: String,
    /// What is wrong, in words fit to show a user.
    pub detail: String,
}

impl FieldError {
    pub(crate) fn new(pointer: String, detail: impl Into<String>) -> Self {
        FieldError {
            pointer,
            detail: detail.into(),
        }
    }
}

/// Email `type` values the API takes.
pub const EMAIL_TYPES: &[&str] = &["home", "work", "other"];
/// Phone `type` values the API takes.
pub const PHONE_TYPES: &[&str] = &["mobile", "home", "work", "fax", "other"];
/// Conversation `status` values.
pub const STATUSES: &[&str] = &["open", "snoozed", "done"];
/// Conversation `direction` values.
pub const DIRECTIONS: &[&str] = &["in", "out"];
/// Suffixes a custom attribute name must end with, and the JSON type each one takes.
const CUSTOM_SUFFIXES: &[(&str, CustomType)] = &[
    ("Str", CustomType::String),
    ("Txt", CustomType::String),
    ("Url", CustomType::String),
    ("Num", CustomType::Number),
    ("Bool", CustomType::Bool),
    ("At", CustomType::Timestamp),
];

#[derive(Clone, Copy)]
enum CustomType {
    String,
    Number,
    Bool,
    Timestamp,
}

/// What a top-level field must hold.
#[derive(Clone, Copy)]
enum Rule {
    /// A string of at most [`MAX_SHORT_STRING`] characters.
    ShortString,
    /// A non-empty string of at most [`MAX_SHORT_STRING`] characters.
    Key,
    /// Any string.
    AnyString,
    /// An RFC 3339 timestamp string.
    Timestamp,
    /// An array of strings.
    Tags,
    /// An array of at most [`MAX_ASSIGNED_USERS`] strings (user ids).
    UserIds,
    /// An object of custom attributes.
    Custom,
    /// An array of `{email, type?}`.
    Emails,
    /// An array of `{phone, type?}`.
    Phones,
    /// An array of `{externalId}`.
    ExternalIds,
    /// One of a fixed set of strings.
    OneOf(&'static [&'static str]),
    /// An integer in 1..=5.
    Priority,
    /// Any JSON object (a message's `meta`).
    Object,
    /// Any JSON array (`attachments`).
    Array,
    /// `true` or `false`.
    Bool,
    /// A note's text: a non-empty string of at most [`MAX_NOTE_BODY`] characters.
    NoteBody,
    /// At most 20 mentions, each a user id or `{user}` / `{team}`.
    Mentions,
}

const CUSTOMER_FIELDS: &[(&str, Rule)] = &[
    ("name", Rule::ShortString),
    ("externalId", Rule::Key),
    ("emails", Rule::Emails),
    ("phones", Rule::Phones),
    ("company", Rule::AnyString),
    ("externalIds", Rule::ExternalIds),
    ("importedAt", Rule::Timestamp),
    ("createdAt", Rule::Timestamp),
    ("tags", Rule::Tags),
    ("custom", Rule::Custom),
];

const CONVERSATION_FIELDS: &[(&str, Rule)] = &[
    ("customer", Rule::Key),
    ("name", Rule::ShortString),
    ("channel", Rule::AnyString),
    ("status", Rule::OneOf(STATUSES)),
    ("externalId", Rule::Key),
    ("importedAt", Rule::Timestamp),
    ("createdAt", Rule::Timestamp),
    ("tags", Rule::Tags),
    ("priority", Rule::Priority),
    ("direction", Rule::OneOf(DIRECTIONS)),
    ("assignedUsers", Rule::UserIds),
];

/// Most ids a conversation's `assignedUsers` takes (the docs: at most 10).
pub const MAX_ASSIGNED_USERS: usize = 10;

/// Message `channel` values.
pub const CHANNELS: &[&str] = &[
    "email",
    "sms",
    "chat",
    "facebook",
    "twitter-dm",
    "twitter-tweet",
    "voice",
    "instagram",
    "whatsapp",
];
/// Message `status` values.
pub const MESSAGE_STATUSES: &[&str] = &["sent", "received", "error"];
/// Longest note text, in characters (Kustomer's reference: 1 to 10,240).
pub const MAX_NOTE_BODY: usize = 10_240;
/// Most `userMentions` a note takes.
pub const MAX_MENTIONS: usize = 20;

const MESSAGE_FIELDS: &[(&str, Rule)] = &[
    ("conversation", Rule::Key),
    ("channel", Rule::OneOf(CHANNELS)),
    ("app", Rule::Key),
    ("direction", Rule::OneOf(DIRECTIONS)),
    ("status", Rule::OneOf(MESSAGE_STATUSES)),
    ("externalId", Rule::Key),
    ("sentAt", Rule::Timestamp),
    ("createdAt", Rule::Timestamp),
    ("importedAt", Rule::Timestamp),
    ("createdBy", Rule::Key),
    // The docs list modifiedAt and modifiedBy with createdAt/createdBy as what org.admin
    // may set.
    ("modifiedAt", Rule::Timestamp),
    ("modifiedBy", Rule::Key),
    ("preview", Rule::AnyString),
    ("subject", Rule::AnyString),
    ("meta", Rule::Object),
    ("custom", Rule::Custom),
    ("lang", Rule::ShortString),
    ("attachments", Rule::Array),
    ("auto", Rule::Bool),
];

const NOTE_FIELDS: &[(&str, Rule)] = &[
    ("conversation", Rule::Key),
    ("body", Rule::NoteBody),
    ("externalId", Rule::Key),
    ("userMentions", Rule::Mentions),
    ("attachments", Rule::Array),
    ("createdAt", Rule::Timestamp),
    ("createdBy", Rule::Key),
    ("modifiedAt", Rule::Timestamp),
    ("modifiedBy", Rule::Key),
    ("importedAt", Rule::Timestamp),
];

/// Where a message or note body came: what it must carry besides its own fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadRoute {
    /// `POST /v1/conversations/{id}/...`: the conversation is the path's.
    UnderConversation,
    /// `POST /v1/messages`, or an item of a bulk request: the body names its
    /// `conversation` (and a message its `direction`, which `/v1/messages` requires; a bulk
    /// item is held to the same body, strictest).
    Standalone,
}

/// Checks a message body: `channel` and `app` always required; `conversation` and
/// `direction` too when it is not posted under its conversation. Unknown fields are refused,
/// as for conversations.
pub fn validate_message(body: &Value, route: ThreadRoute) -> Vec<FieldError> {
    let required: &[&str] = match route {
        ThreadRoute::UnderConversation => &["channel", "app"],
        ThreadRoute::Standalone => &["conversation", "direction", "channel", "app"],
    };
    validate_object(body, MESSAGE_FIELDS, required)
}

/// Checks a note body: `body` always required, `conversation` too when it is not posted
/// under its conversation.
pub fn validate_note(body: &Value, route: ThreadRoute) -> Vec<FieldError> {
    let required: &[&str] = match route {
        ThreadRoute::UnderConversation => &["body"],
        ThreadRoute::Standalone => &["conversation", "body"],
    };
    validate_object(body, NOTE_FIELDS, required)
}

/// Checks a `POST /v1/customers` body. Empty when the body is acceptable (duplicates aside).
/// An update's body (merged or replacing, less a bulk item's `id`) is held to the same
/// rules: none requires a field.
pub fn validate_customer(body: &Value) -> Vec<FieldError> {
    validate_object(body, CUSTOMER_FIELDS, &[])
}

/// Checks a `POST /v1/conversations` body. Empty when the body is acceptable (whether the
/// customer exists aside).
pub fn validate_conversation(body: &Value) -> Vec<FieldError> {
    validate_object(body, CONVERSATION_FIELDS, &["customer"])
}

/// Checks the body of an update of a conversation: the create's rules; a merge requires
/// no field, a replace is a whole record and requires `customer` as a create does.
pub fn validate_conversation_update(body: &Value, mode: UpdateMode) -> Vec<FieldError> {
    match mode {
        UpdateMode::Merge => validate_object(body, CONVERSATION_FIELDS, &[]),
        UpdateMode::Replace => validate_conversation(body),
    }
}

/// Checks the body of a `PATCH /v1/messages/{id}`: the create's rules, no field required.
pub fn validate_message_update(body: &Value) -> Vec<FieldError> {
    validate_object(body, MESSAGE_FIELDS, &[])
}

/// Checks the body of a `PATCH /v1/notes/{id}`: the create's rules, no field required.
pub fn validate_note_update(body: &Value) -> Vec<FieldError> {
    validate_object(body, NOTE_FIELDS, &[])
}

fn validate_object(body: &Value, fields: &[(&str, Rule)], required: &[&str]) -> Vec<FieldError> {
    let Some(object) = body.as_object() else {
        return vec![FieldError::new(
            String::new(),
            "the body must be a JSON object",
        )];
    };
    let mut errors = Vec::new();
    for name in required {
        if !object.contains_key(*name) {
            errors.push(FieldError::new(
                pointer(&[name]),
                format!("{name} is required"),
            ));
        }
    }
    for (name, value) in object {
        let path = pointer(&[name]);
        match fields.iter().find(|(field, _)| field == name) {
            Some((_, rule)) => check_rule(*rule, name, value, &path, &mut errors),
            None => errors.push(FieldError::new(path, format!("unknown field {name}"))),
        }
    }
    errors
}

fn check_rule(rule: Rule, name: &str, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    match rule {
        Rule::ShortString => check_string(value, name, path, false, errors),
        Rule::Key => check_string(value, name, path, true, errors),
        Rule::AnyString => {
            if !value.is_string() {
                errors.push(FieldError::new(
                    path.into(),
                    format!("{name} must be a string"),
                ));
            }
        }
        Rule::Timestamp => check_timestamp(value, name, path, errors),
        Rule::Tags => check_strings(value, name, path, errors),
        Rule::UserIds => {
            if value
                .as_array()
                .is_some_and(|ids| ids.len() > MAX_ASSIGNED_USERS)
            {
                errors.push(FieldError::new(
                    path.into(),
                    format!("{name} takes at most {MAX_ASSIGNED_USERS} user ids"),
                ));
            } else {
                check_strings(value, name, path, errors);
            }
        }
        Rule::Custom => check_custom(value, path, errors),
        Rule::Emails => check_list(value, name, path, "email", EMAIL_TYPES, errors),
        Rule::Phones => check_list(value, name, path, "phone", PHONE_TYPES, errors),
        Rule::ExternalIds => check_list(value, name, path, "externalId", &[], errors),
        Rule::OneOf(allowed) => match value.as_str() {
            Some(s) if allowed.contains(&s) => {}
            _ => errors.push(FieldError::new(
                path.into(),
                format!("{name} must be one of {}", allowed.join(", ")),
            )),
        },
        Rule::Priority => match value.as_i64() {
            Some(1..=5) => {}
            _ => errors.push(FieldError::new(
                path.into(),
                "priority must be an integer from 1 to 5",
            )),
        },
        Rule::Object if !value.is_object() => {
            errors.push(FieldError::new(
                path.into(),
                format!("{name} must be an object"),
            ));
        }
        Rule::Array if !value.is_array() => {
            errors.push(FieldError::new(
                path.into(),
                format!("{name} must be an array"),
            ));
        }
        Rule::Bool if !value.is_boolean() => {
            errors.push(FieldError::new(
                path.into(),
                format!("{name} must be true or false"),
            ));
        }
        Rule::NoteBody => match value.as_str() {
            Some(s) if !s.trim().is_empty() && s.chars().count() <= MAX_NOTE_BODY => {}
            _ => errors.push(FieldError::new(
                path.into(),
                format!("body must be a non-empty string of at most {MAX_NOTE_BODY} characters"),
            )),
        },
        Rule::Mentions => check_mentions(value, path, errors),
        Rule::Object | Rule::Array | Rule::Bool => {}
    }
}

/// `userMentions`: at most [`MAX_MENTIONS`] entries, each a user id or an object naming
/// one `user` or `team` (the reference shows both spellings).
fn check_mentions(value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(items) = value.as_array() else {
        errors.push(FieldError::new(
            path.into(),
            "userMentions must be an array",
        ));
        return;
    };
    if items.len() > MAX_MENTIONS {
        errors.push(FieldError::new(
            path.into(),
            format!("userMentions takes at most {MAX_MENTIONS} entries"),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        let ok = match item {
            Value::String(id) => !id.is_empty(),
            Value::Object(entry) => {
                entry.len() == 1
                    && ["user", "team"].iter().any(|k| {
                        entry
                            .get(*k)
                            .and_then(Value::as_str)
                            .is_some_and(|v| !v.is_empty())
                    })
            }
            _ => false,
        };
        if !ok {
            errors.push(FieldError::new(
                format!("{path}/{i}"),
                "a mention must be a user id or {\"user\": id} or {\"team\": id}",
            ));
        }
    }
}

fn check_string(
    value: &Value,
    name: &str,
    path: &str,
    non_empty: bool,
    errors: &mut Vec<FieldError>,
) {
    match value.as_str() {
        None => errors.push(FieldError::new(
            path.into(),
            format!("{name} must be a string"),
        )),
        Some("") if non_empty => errors.push(FieldError::new(
            path.into(),
            format!("{name} must not be empty"),
        )),
        Some(s) if s.chars().count() > MAX_SHORT_STRING => errors.push(FieldError::new(
            path.into(),
            format!("{name} is longer than {MAX_SHORT_STRING} characters"),
        )),
        Some(_) => {}
    }
}

fn check_timestamp(value: &Value, name: &str, path: &str, errors: &mut Vec<FieldError>) {
    if !value.as_str().is_some_and(is_rfc3339) {
        errors.push(FieldError::new(
            path.into(),
            format!("{name} must be an RFC 3339 timestamp such as 2024-01-31T12:00:00Z"),
        ));
    }
}

fn check_strings(value: &Value, name: &str, path: &str, errors: &mut Vec<FieldError>) {
    let words = || format!("{name} must be an array of strings");
    let Some(items) = value.as_array() else {
        errors.push(FieldError::new(path.into(), words()));
        return;
    };
    for (i, item) in items.iter().enumerate() {
        if !item.is_string() {
            errors.push(FieldError::new(format!("{path}/{i}"), words()));
        }
    }
}

fn check_custom(value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(object) = value.as_object() else {
        errors.push(FieldError::new(path.into(), "custom must be an object"));
        return;
    };
    for (key, value) in object {
        let here = format!("{path}/{}", escape_pointer(key));
        let kind = CUSTOM_SUFFIXES
            .iter()
            .find(|(suffix, _)| key.len() > suffix.len() && key.ends_with(suffix));
        let Some((_, kind)) = kind else {
            errors.push(FieldError::new(
                here,
                format!(
                    "custom attribute {key} must end in a type suffix (Str, Txt, Num, At, Bool, Url)"
                ),
            ));
            continue;
        };
        let ok = match kind {
            CustomType::String => value.is_string(),
            CustomType::Number => value.is_number(),
            CustomType::Bool => value.is_boolean(),
            CustomType::Timestamp => value.as_str().is_some_and(is_rfc3339),
        };
        if !ok {
            let wanted = match kind {
                CustomType::String => "a string",
                CustomType::Number => "a number",
                CustomType::Bool => "a boolean",
                CustomType::Timestamp => "an RFC 3339 timestamp",
            };
            errors.push(FieldError::new(
                here,
                format!("custom attribute {key} must be {wanted}"),
            ));
        }
    }
}

/// Checks an array of objects `{<key>: ..., type?: ...}` (emails, phones, externalIds).
fn check_list(
    value: &Value,
    name: &str,
    path: &str,
    key: &str,
    types: &[&str],
    errors: &mut Vec<FieldError>,
) {
    let Some(items) = value.as_array() else {
        errors.push(FieldError::new(
            path.into(),
            format!("{name} must be an array of objects"),
        ));
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let here = format!("{path}/{i}");
        let Some(entry) = item.as_object() else {
            errors.push(FieldError::new(
                here,
                format!("{name}[{i}] must be an object"),
            ));
            continue;
        };
        check_entry(entry, &here, key, types, errors);
    }
}

fn check_entry(
    entry: &Map<String, Value>,
    here: &str,
    key: &str,
    types: &[&str],
    errors: &mut Vec<FieldError>,
) {
    match entry.get(key) {
        None => errors.push(FieldError::new(
            format!("{here}/{key}"),
            format!("{key} is required"),
        )),
        Some(value) => {
            let ok = match (key, value.as_str()) {
                ("email", Some(s)) => is_valid_email(s),
                ("phone", Some(s)) => is_valid_phone(s),
                (_, Some(s)) => !s.is_empty() && s.chars().count() <= MAX_SHORT_STRING,
                (_, None) => false,
            };
            if !ok {
                let detail = match key {
                    "email" => "email must be a valid email address",
                    "phone" => {
                        "phone must be a string of digits, '+', spaces, dashes, dots or parentheses"
                    }
                    _ => "externalId must be a non-empty string of at most 255 characters",
                };
                errors.push(FieldError::new(format!("{here}/{key}"), detail));
            }
        }
    }
    for (field, value) in entry {
        if field == key {
            continue;
        }
        let at = format!("{here}/{}", escape_pointer(field));
        if field == "type" && !types.is_empty() {
            if !value.as_str().is_some_and(|t| types.contains(&t)) {
                errors.push(FieldError::new(
                    at,
                    format!("type must be one of {}", types.join(", ")),
                ));
            }
        } else {
            errors.push(FieldError::new(at, format!("unknown field {field}")));
        }
    }
}

/// A syntactic email check: `local@domain`, dot-atom local part of at most 64 bytes, a
/// domain of at least two dot-separated labels of letters, digits and inner hyphens, whose
/// last label is not all digits; at most 254 bytes in all. Non-ASCII letters are allowed.
pub fn is_valid_email(s: &str) -> bool {
    if s.len() > 254 {
        return false;
    }
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    if !local_ok {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()))
}

/// A phone is a string of digits, `+`, spaces, dashes, dots and parentheses with at least
/// one digit.
pub fn is_valid_phone(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'))
        && s.chars().any(|c| c.is_ascii_digit())
}

/// The digits of a phone number: the key phones are compared by.
pub fn phone_digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Whether `s` is an RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)`,
/// with real calendar dates (leap years) and a leap second allowed.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0u32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    let separators = b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't')
        && b[13] == b':'
        && b[16] == b':';
    if !separators
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = &frac[digits..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let all_digits = [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit());
            all_digits
                && (h1 - b'0') * 10 + (h2 - b'0') <= 23
                && (m1 - b'0') * 10 + (m2 - b'0') <= 59
        }
        _ => false,
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        _ => 28,
    }
}

/// Escapes one JSON pointer reference token (`~` as `~0`, `/` as `~1`).
pub fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn pointer(tokens: &[&str]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", escape_pointer(t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointers(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.pointer.as_str()).collect()
    }

    #[test]
    fn a_full_customer_passes() {
        let body = json!({
            "name": "Ada Lovelace",
            "externalId": "c-1",
            "emails": [{"email": "ada@example.com", "type": "work"}, {"email": "a+b@x.co"}],
            "phones": [{"phone": "+1 (555) 123-4567", "type": "mobile"}, {"phone": "555.1234"}],
            "company": "Analytical Engines",
            "externalIds": [{"externalId": "legacy-1"}],
            "importedAt": "2024-01-31T12:00:00Z",
            "createdAt": "2020-02-29T23:59:60.123+05:30",
            "tags": ["vip", "import"],
            "custom": {"planStr": "gold", "seatsNum": 3, "activeBool": true, "renewedAt": "2024-01-01T00:00:00Z"}
        });
        assert_eq!(validate_customer(&body), vec![]);
        assert_eq!(validate_customer(&json!({})), vec![]);
    }

    #[test]
    fn customer_problems_are_each_reported_with_their_pointer() {
        let body = json!({
            "name": "x".repeat(256),
            "externalId": "",
            "emails": [{"email": "not-an-address"}, {"email": "ok@example.com", "type": "personal"}, {}],
            "phones": [{"phone": "call me"}],
            "tags": ["a", 1],
            "custom": {"plan": "gold", "seatsNum": "three"},
            "importedAt": "2024-13-01T00:00:00Z",
            "favouriteColour": "blue"
        });
        let errors = validate_customer(&body);
        let mut got = pointers(&errors);
        got.sort_unstable();
        let mut want = vec![
            "/name",
            "/externalId",
            "/emails/0/email",
            "/emails/1/type",
            "/emails/2/email",
            "/phones/0/phone",
            "/tags/1",
            "/custom/plan",
            "/custom/seatsNum",
            "/importedAt",
            "/favouriteColour",
        ];
        want.sort_unstable();
        assert_eq!(got, want);
        let unknown = errors.iter().find(|e| e.pointer == "/favouriteColour");
        assert_eq!(
            unknown.map(|e| e.detail.as_str()),
            Some("unknown field favouriteColour")
        );
    }

    #[test]
    fn wrong_types_are_refused() {
        let body = json!({"name": null, "emails": "a@b.co", "phones": [5], "custom": []});
        let mut got = pointers(&validate_customer(&body))
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        got.sort();
        assert_eq!(got, vec!["/custom", "/emails", "/name", "/phones/0"]);
        assert_eq!(pointers(&validate_customer(&json!([1]))), vec![""]);
    }

    #[test]
    fn nested_unknown_fields_and_pointer_escaping() {
        let body = json!({"emails": [{"email": "a@b.co", "verified": true}], "a/b~c": 1});
        let errors = validate_customer(&body);
        let mut got = pointers(&errors);
        got.sort_unstable();
        assert_eq!(got, vec!["/a~1b~0c", "/emails/0/verified"]);
    }

    #[test]
    fn conversation_rules() {
        let ok = json!({
            "customer": "0123456789abcdef01234567", "name": "Order late", "channel": "email",
            "status": "snoozed", "externalId": "t-9", "importedAt": "2024-01-01T00:00:00Z",
            "createdAt": "2024-01-01T00:00:00-08:00", "tags": [], "priority": 5, "direction": "in"
        });
        assert_eq!(validate_conversation(&ok), vec![]);

        let errors = validate_conversation(&json!({
            "status": "closed", "priority": 0, "direction": "sideways", "externalId": "", "extra": 1
        }));
        let mut got = pointers(&errors);
        got.sort_unstable();
        assert_eq!(
            got,
            vec![
                "/customer",
                "/direction",
                "/externalId",
                "/extra",
                "/priority",
                "/status"
            ]
        );
        for bad in [json!(6), json!(2.5), json!("3"), json!(-1)] {
            let errors = validate_conversation(&json!({"customer": "c", "priority": bad}));
            assert_eq!(pointers(&errors), vec!["/priority"]);
        }
    }

    #[test]
    fn message_and_note_rules() {
        let ok = json!({"channel": "whatsapp", "app": "kustomer-import", "auto": true,
            "meta": {"from": "a@b.co"}, "attachments": [], "status": "error"});
        assert_eq!(
            validate_message(&ok, ThreadRoute::UnderConversation),
            vec![]
        );
        let errors = validate_message(&ok, ThreadRoute::Standalone);
        let mut got = pointers(&errors);
        got.sort_unstable();
        assert_eq!(got, vec!["/conversation", "/direction"]);
        let note = json!({"body": "ok", "userMentions": ["u1", {"team": "t1"}]});
        assert_eq!(validate_note(&note, ThreadRoute::UnderConversation), vec![]);
        let bad = json!({"body": "   ", "userMentions": [{"user": "u", "team": "t"}, 3, ""]});
        assert_eq!(
            pointers(&validate_note(&bad, ThreadRoute::UnderConversation)),
            vec![
                "/body",
                "/userMentions/0",
                "/userMentions/1",
                "/userMentions/2"
            ]
        );
        let many = json!({"body": "b", "userMentions": vec!["u"; MAX_MENTIONS + 1]});
        assert_eq!(
            pointers(&validate_note(&many, ThreadRoute::UnderConversation)),
            vec!["/userMentions"]
        );
    }

    #[test]
    fn emails() {
        for good in [
            "a@b.co",
            "A.B+tag@Example.COM",
            "o'brien@sub.example.org",
            "jörg@müller.de",
            "x@1.example",
        ] {
            assert!(is_valid_email(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "a@",
            "@b.co",
            "a@b",
            "a@b.",
            "a@.b.co",
            "a..b@c.co",
            ".a@c.co",
            "a.@c.co",
            "a b@c.co",
            "a@b@c.co",
            "a@-b.co",
            "a@b-.co",
            "a@1.2.3.4",
            "a@b_c.co",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
        assert!(!is_valid_email(&format!("{}@b.co", "a".repeat(65))));
    }

    #[test]
    fn phones() {
        assert!(is_valid_phone("+15551234567"));
        assert!(is_valid_phone("(555) 123-4567"));
        assert!(is_valid_phone("555.123.4567"));
        for bad in ["", "+", "()", "555-CALL", "555\t123", "５５５"] {
            assert!(!is_valid_phone(bad), "{bad:?}");
        }
        assert_eq!(phone_digits("+1 (555) 123-4567"), "15551234567");
    }

    #[test]
    fn timestamps() {
        for good in [
            "2024-01-31T12:00:00Z",
            "2024-02-29T00:00:00z",
            "2000-02-29t23:59:59.999999+14:00",
            "1999-12-31T23:59:60-00:00",
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "",
            "2024-01-31",
            "2024-01-31 12:00:00Z",
            "2024-01-31T12:00:00",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-00-10T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+2400",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00ZZ",
            "２０２4-01-01T00:00:00Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
