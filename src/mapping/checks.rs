//! Local validation: the shape rules the live API applies to a customer and a conversation
//! body (see `../shared/docs/kustomer-api.md`), checked before any request. Whatever a
//! mapping produced ends in [`finish_plan`], which validates both bodies, normalises what
//! is safe to normalise (phones toward E.164, timestamps to RFC 3339 in UTC, status and
//! types to lower case, tags from text to a list) and derives the customer's key.

use serde_json::{Map, Number, Value};

use super::{CompanyRef, ConversationBody, CustomerBody, MappingError, Plan};

/// Longest externalId or name the API takes.
pub const MAX_TEXT_LEN: usize = 255;

/// The conversation statuses the API accepts on create.
pub const STATUSES: [&str; 3] = ["open", "snoozed", "done"];
const DIRECTIONS: [&str; 2] = ["in", "out"];
pub(super) const EMAIL_TYPES: [&str; 3] = ["home", "work", "other"];
pub(super) const PHONE_TYPES: [&str; 5] = ["mobile", "home", "work", "fax", "other"];

/// The type the API expects of a body field beyond the core ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Text,
    /// RFC 3339; normalised to UTC.
    Timestamp,
    /// A list of strings; text is split on `,` and `;`.
    Tags,
    /// A list of at most [`MAX_ASSIGNED_USERS`] source agents (emails, or names the
    /// `[users]` table maps), split as tags are; made user ids when sent.
    Agents,
    /// An integer from 1 to 5.
    Priority,
    /// in or out.
    Direction,
    /// A list of `{externalId}`; text is one id.
    ExternalIds,
    /// An object of custom attributes, each typed by its name's suffix.
    Custom,
    /// A number (custom attributes ending in `Num`).
    Number,
    /// A boolean (custom attributes ending in `Bool`).
    Bool,
}

/// The fields a customer body takes besides name, externalId, emails and phones.
pub const CUSTOMER_EXTRA_FIELDS: &[(&str, FieldType)] = &[
    ("company", FieldType::Text),
    ("externalIds", FieldType::ExternalIds),
    ("importedAt", FieldType::Timestamp),
    ("createdAt", FieldType::Timestamp),
    ("tags", FieldType::Tags),
    ("custom", FieldType::Custom),
];

/// The fields a conversation body takes besides externalId, name, channel and status.
pub const CONVERSATION_EXTRA_FIELDS: &[(&str, FieldType)] = &[
    ("importedAt", FieldType::Timestamp),
    ("createdAt", FieldType::Timestamp),
    ("tags", FieldType::Tags),
    ("priority", FieldType::Priority),
    ("direction", FieldType::Direction),
    ("assignedUsers", FieldType::Agents),
];

/// Most agents a conversation's `assignedUsers` takes (the docs: at most 10).
pub const MAX_ASSIGNED_USERS: usize = 10;

/// Custom attribute name suffixes and the type each implies.
const CUSTOM_SUFFIXES: &[(&str, FieldType)] = &[
    ("Str", FieldType::Text),
    ("Txt", FieldType::Text),
    ("Url", FieldType::Text),
    ("Num", FieldType::Number),
    ("At", FieldType::Timestamp),
    ("Bool", FieldType::Bool),
];

/// The type of a custom attribute, from its name's suffix.
pub fn custom_attribute_type(name: &str) -> Option<FieldType> {
    CUSTOM_SUFFIXES
        .iter()
        .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix))
        .map(|(_, kind)| *kind)
}

/// Checks one value against the type its field expects, turning text into the type where
/// the text says it unambiguously ("3" for a priority, "a, b" for tags).
pub fn normalize_value(kind: FieldType, field: &str, value: Value) -> Result<Value, MappingError> {
    let text = |value: &Value| -> Option<String> {
        match value {
            Value::String(text) => Some(text.trim().to_string()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    };
    match kind {
        FieldType::Text => match value {
            Value::String(_) => Ok(value),
            Value::Number(_) | Value::Bool(_) => Ok(Value::String(value.to_string())),
            _ => Err(MappingError::new(field, "must be text", "must be text")),
        },
        FieldType::Timestamp => {
            let raw = text(&value).unwrap_or_default();
            normalize_timestamp(&raw).map(Value::String).ok_or_else(|| {
                MappingError::new(
                    field,
                    "not an RFC 3339 timestamp",
                    format!(
                        "{value} is not an RFC 3339 timestamp with a UTC offset, such as \
                         2024-01-31T12:00:00Z"
                    ),
                )
            })
        }
        FieldType::Agents => {
            let agents = normalize_value(FieldType::Tags, field, value)?;
            let count = agents.as_array().map_or(0, Vec::len);
            if count > MAX_ASSIGNED_USERS {
                return Err(MappingError::new(
                    field,
                    "more than 10 agents",
                    format!(
                        "names {count} agents: a conversation takes at most {MAX_ASSIGNED_USERS}"
                    ),
                ));
            }
            Ok(agents)
        }
        FieldType::Tags => {
            let items: Vec<Value> = match value {
                Value::String(text) => text
                    .split([',', ';'])
                    .map(str::trim)
                    .filter(|tag| !tag.is_empty())
                    .map(|tag| Value::String(tag.to_string()))
                    .collect(),
                Value::Array(items) => items,
                _ => Vec::new(),
            };
            if items.iter().all(Value::is_string) {
                Ok(Value::Array(items))
            } else {
                Err(MappingError::new(
                    field,
                    "not a list of tags",
                    "must be a list of strings",
                ))
            }
        }
        FieldType::Priority => text(&value)
            .and_then(|text| text.parse::<i64>().ok())
            .filter(|priority| (1..=5).contains(priority))
            .map(Value::from)
            .ok_or_else(|| {
                MappingError::new(
                    field,
                    "not a priority from 1 to 5",
                    format!("{value} is not an integer from 1 to 5"),
                )
            }),
        FieldType::Direction => text(&value)
            .map(|text| text.to_lowercase())
            .filter(|direction| DIRECTIONS.contains(&direction.as_str()))
            .map(Value::String)
            .ok_or_else(|| {
                MappingError::new(
                    field,
                    "not in or out",
                    format!("{value} is not one of in, out"),
                )
            }),
        FieldType::ExternalIds => normalize_external_ids(field, value),
        FieldType::Custom => normalize_custom(field, value),
        FieldType::Number => {
            let number = match &value {
                Value::Number(_) => Some(value.clone()),
                Value::String(text) => parse_number(text.trim()),
                _ => None,
            };
            number.ok_or_else(|| {
                MappingError::new(field, "not a number", format!("{value} is not a number"))
            })
        }
        FieldType::Bool => {
            let flag = match &value {
                Value::Bool(flag) => Some(*flag),
                Value::String(text) => match text.trim().to_lowercase().as_str() {
                    "true" | "yes" | "y" | "1" => Some(true),
                    "false" | "no" | "n" | "0" => Some(false),
                    _ => None,
                },
                _ => None,
            };
            flag.map(Value::Bool).ok_or_else(|| {
                MappingError::new(
                    field,
                    "not a boolean",
                    format!("{value} is not true or false"),
                )
            })
        }
    }
}

fn parse_number(text: &str) -> Option<Value> {
    if let Ok(integer) = text.parse::<i64>() {
        return Some(Value::from(integer));
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

/// An RFC 3339 timestamp with an offset (`T` or a space between date and time), as UTC
/// RFC 3339; None for anything else, a time without an offset included: its zone would
/// be a guess.
pub fn normalize_timestamp(text: &str) -> Option<String> {
    let timestamp: jiff::Timestamp = text.trim().parse().ok()?;
    let normalized = timestamp.to_string();
    // Years outside 0001-9999 print with a sign, which RFC 3339 does not allow.
    (!normalized.starts_with(['-', '+'])).then_some(normalized)
}

fn normalize_external_ids(field: &str, value: Value) -> Result<Value, MappingError> {
    let bad = |reason: &str| MappingError::new(field, "not a list of externalIds", reason);
    let items = match value {
        Value::String(text) if !text.trim().is_empty() => {
            vec![Value::Object(Map::from_iter([(
                "externalId".to_string(),
                Value::String(text.trim().to_string()),
            )]))]
        }
        Value::Array(items) => items,
        _ => return Err(bad("must be a list of {\"externalId\": text}")),
    };
    for item in &items {
        let ok = item.as_object().is_some_and(|entry| {
            entry.len() == 1
                && entry
                    .get("externalId")
                    .and_then(Value::as_str)
                    .is_some_and(|id| !id.is_empty() && id.chars().count() <= MAX_TEXT_LEN)
        });
        if !ok {
            return Err(bad(
                "must be a list of {\"externalId\": text of 1 to 255 characters}",
            ));
        }
    }
    Ok(Value::Array(items))
}

fn normalize_custom(field: &str, value: Value) -> Result<Value, MappingError> {
    let Value::Object(attributes) = value else {
        return Err(MappingError::new(
            field,
            "not an object",
            "must be an object of custom attributes",
        ));
    };
    let mut normalized = Map::new();
    for (name, value) in attributes {
        let at = format!("{field}.{name}");
        let kind = custom_attribute_type(&name).ok_or_else(|| {
            MappingError::new(
                &at,
                "custom attribute without a type suffix",
                "a custom attribute's name must end in Str, Txt, Num, At, Bool or Url",
            )
        })?;
        normalized.insert(name, normalize_value(kind, &at, value)?);
    }
    Ok(Value::Object(normalized))
}

/// Checks the fields of `extra` against the ones the API takes on that body.
fn normalize_extra(
    extra: &mut Map<String, Value>,
    fields: &[(&str, FieldType)],
    prefix: &str,
    body: &str,
) -> Result<(), MappingError> {
    let keys: Vec<String> = extra.keys().cloned().collect();
    for key in keys {
        let field = format!("{prefix}{key}");
        let Some((_, kind)) = fields.iter().find(|(name, _)| *name == key) else {
            let known: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
            return Err(MappingError::new(
                &field,
                "not a field the API takes",
                format!(
                    "is not a field the API takes on a {body} (besides the core fields it takes {})",
                    known.join(", ")
                ),
            ));
        };
        if let Some(value) = extra.remove(&key)
            && !value.is_null()
        {
            extra.insert(key, normalize_value(*kind, &field, value)?);
        }
    }
    Ok(())
}

/// Validates both bodies, normalises what is safe to normalise, and derives the key.
pub fn finish_plan(
    mut customer: CustomerBody,
    mut conversation: ConversationBody,
) -> Result<Plan, MappingError> {
    check_length(customer.name.as_deref(), "name")?;
    check_length(customer.external_id.as_deref(), "externalId")?;
    for (index, entry) in customer.emails.iter_mut().enumerate() {
        if !is_valid_email(&entry.email) {
            return Err(MappingError::new(
                &format!("emails[{index}].email"),
                "not an email address",
                format!("{} is not an email address", quoted(&entry.email)),
            ));
        }
        check_kind(&mut entry.kind, &EMAIL_TYPES, || {
            format!("emails[{index}].type")
        })?;
    }
    for (index, entry) in customer.phones.iter_mut().enumerate() {
        entry.phone = normalize_phone(&entry.phone).ok_or_else(|| {
            MappingError::new(
                &format!("phones[{index}].phone"),
                "not a phone number",
                format!("{} is not a phone number", quoted(&entry.phone)),
            )
        })?;
        check_kind(&mut entry.kind, &PHONE_TYPES, || {
            format!("phones[{index}].type")
        })?;
    }
    normalize_extra(&mut customer.extra, CUSTOMER_EXTRA_FIELDS, "", "customer")?;
    let customer_key = match customer_key(&customer) {
        Some(key) => key,
        // A name and nothing to find it by: its externalId is derived from its row's key
        // once the row has one (`rows`), unless that is turned off.
        None if customer
            .name
            .as_deref()
            .is_some_and(|name| !name.trim().is_empty()) =>
        {
            String::new()
        }
        None => return Err(no_customer_key("")),
    };

    check_length(conversation.name.as_deref(), "conversation.name")?;
    check_length(
        conversation.external_id.as_deref(),
        "conversation.externalId",
    )?;
    if let Some(status) = &mut conversation.status
        && !spell_as_known(status, &STATUSES)
    {
        return Err(MappingError::new(
            "conversation.status",
            "not open, snoozed or done",
            format!("{} is not one of open, snoozed, done", quoted(status)),
        ));
    }
    normalize_extra(
        &mut conversation.extra,
        CONVERSATION_EXTRA_FIELDS,
        "conversation.",
        "conversation",
    )?;
    let has_conversation = conversation != ConversationBody::default();
    Ok(Plan {
        customer_key,
        customer,
        conversation: has_conversation.then_some(conversation),
        thread: None,
        company: None,
    })
}

/// The prefix of the externalId given to a company the source knows only by its name.
pub const DERIVED_COMPANY_PREFIX: &str = "kimp-co-";

/// The company a row names by `name` and/or `external_id` (None: neither), or why it
/// cannot be made: a name (or, without one, the externalId it is created with) of fewer
/// than 3 or more than 255 characters, as the API refuses. A company known only by name
/// gets `kimp-co-` and 24 hex digits of a hash of the name (trimmed, lowercased), so every
/// row naming it finds the same one, in this run and the next.
pub fn company_ref(
    name: Option<&str>,
    external_id: Option<&str>,
) -> Result<Option<CompanyRef>, MappingError> {
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let external_id = external_id.map(str::trim).filter(|x| !x.is_empty());
    let (external_id, name, field) = match (external_id, name) {
        (None, None) => return Ok(None),
        (Some(id), Some(name)) => (id.to_string(), name, "company.name"),
        (Some(id), None) => (id.to_string(), id, "company.externalId"),
        (None, Some(name)) => (derived_company_id(name), name, "company.name"),
    };
    check_length(Some(external_id.as_str()), "company.externalId")?;
    let chars = name.chars().count();
    if !(3..=255).contains(&chars) {
        return Err(MappingError::new(
            field,
            "not 3 to 255 characters",
            format!(
                "{} is {chars} characters: a company name must be 3 to 255 (the row is not \
                 imported, so that no customer loses its company)",
                quoted(name)
            ),
        ));
    }
    Ok(Some(CompanyRef {
        key: format!("ext:{external_id}"),
        external_id,
        name: name.to_string(),
    }))
}

/// `kimp-co-` and 24 hex digits of the SHA-256 of the name, trimmed and lowercased.
fn derived_company_id(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.trim().to_lowercase().as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{DERIVED_COMPANY_PREFIX}{hex}")
}

/// Characters of a refused value a reason quotes; the row itself is in the errors file.
const QUOTED_CHARS: usize = 100;

/// A refused value, quoted for a reason, its middle left out when it is long: a reason is
/// kept in the checkpoint for every failed row, and a value may be megabytes.
pub(crate) fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

fn check_length(value: Option<&str>, field: &str) -> Result<(), MappingError> {
    match value {
        // No more bytes than the limit, no more characters: most texts need no count.
        Some(text) if text.len() > MAX_TEXT_LEN && text.chars().count() > MAX_TEXT_LEN => {
            Err(MappingError::new(
                field,
                "longer than 255 characters",
                format!("is longer than {MAX_TEXT_LEN} characters"),
            ))
        }
        _ => Ok(()),
    }
}

/// Lowercases a contact's type if it is one of `allowed`; `field` names it in the error.
fn check_kind(
    kind: &mut Option<String>,
    allowed: &[&str],
    field: impl FnOnce() -> String,
) -> Result<(), MappingError> {
    if let Some(value) = kind
        && !spell_as_known(value, allowed)
    {
        return Err(MappingError::new(
            &field(),
            "not a known type",
            format!("{} is not one of {}", quoted(value), allowed.join(", ")),
        ));
    }
    Ok(())
}

/// Whether `value` is one of `known` in any ASCII case; if so it is spelt as `known` spells
/// it (lowercase), copied only when it differs.
pub(crate) fn spell_as_known(value: &mut String, known: &[&str]) -> bool {
    match known.iter().find(|word| word.eq_ignore_ascii_case(value)) {
        Some(word) => {
            if value != word {
                *value = word.to_string();
            }
            true
        }
        None => false,
    }
}

/// The refusal of a customer nothing can find again (`why` says more, or is empty).
pub fn no_customer_key(why: &str) -> MappingError {
    MappingError::new(
        "customer",
        "no externalId, email or phone",
        format!(
            "has no externalId, email or phone{why}: the importer needs one to find the \
             customer again"
        ),
    )
}

/// The key that identifies a customer across rows and runs.
pub fn customer_key(customer: &CustomerBody) -> Option<String> {
    if let Some(id) = &customer.external_id {
        return Some(["ext:", id].concat());
    }
    if let Some(entry) = customer.emails.first() {
        return Some(["email:", &entry.email.to_lowercase()].concat());
    }
    customer
        .phones
        .first()
        .map(|entry| ["phone:", &entry.phone].concat())
}

/// A strict email syntax check: at most 254 bytes, `local@domain` with an ASCII dot-atom
/// local part and a domain of at least two DNS labels whose last is alphabetic. Quoted local parts and
/// address literals are refused: real exports do not hold them and the API may not either.
pub fn is_valid_email(address: &str) -> bool {
    if address.len() > 254 {
        return false;
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let atext = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&c);
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(atext));
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-')
    };
    let domain_ok = domain.len() <= 253
        && domain.split('.').all(label_ok)
        && domain.rsplit_once('.').is_some_and(|(_, tld)| {
            tld.len() >= 2
                && (tld.bytes().all(|c| c.is_ascii_alphabetic()) || tld.starts_with("xn--"))
        });
    local_ok && domain_ok
}

/// Brings a phone number toward E.164 where that is unambiguous: strips the punctuation
/// people put in numbers and turns the international prefix `00` into `+`. Refuses a
/// value with letters, or with too few or too many digits to be a phone number. A national
/// number stays as it is: its country would be a guess.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let (mut plus, rest) = match raw.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    // The number as `+` and digits, built in place: a leading `00` becomes the `+`.
    let mut number = String::with_capacity(rest.len() + 1);
    if plus {
        number.push('+');
    }
    for c in rest.chars() {
        match c {
            '0'..='9' => number.push(c),
            ' ' | '-' | '.' | '(' | ')' | '/' => {}
            _ => return None,
        }
        if !plus && number == "00" {
            number.replace_range(.., "+");
            plus = true;
        }
    }
    let digits = number.trim_start_matches('+');
    let count = digits.len();
    if plus && (digits.starts_with('0') || !(8..=15).contains(&count)) {
        return None;
    }
    if !(7..=15).contains(&count) {
        return None;
    }
    Some(number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_text_is_limited_in_characters_not_bytes() {
        assert!(check_length(Some(&"é".repeat(255)), "name").is_ok());
        assert!(check_length(Some(&"x".repeat(255)), "name").is_ok());
        assert!(check_length(Some(&"x".repeat(256)), "name").is_err());
        let error = check_length(Some(&"é".repeat(256)), "name").unwrap_err();
        assert!(error.to_string().contains("longer than 255"), "{error}");
    }

    #[test]
    fn a_reason_quotes_a_long_value_in_part() {
        assert_eq!(quoted("a\"b"), r#""a\"b""#);
        let long = format!("{}@x.io", "é".repeat(1_000_000));
        let error = finish_plan(
            CustomerBody {
                emails: vec![crate::mapping::EmailEntry {
                    email: long.clone(),
                    kind: None,
                }],
                ..CustomerBody::default()
            },
            ConversationBody::default(),
        )
        .unwrap_err();
        assert_eq!(
            error.reason,
            format!(
                "\"{}\"… ({} bytes) is not an email address",
                "é".repeat(100),
                long.len()
            )
        );
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
    fn phones_move_toward_e164_where_unambiguous() {
        assert_eq!(
            normalize_phone("+44 20 7946 0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            normalize_phone("0044 20 7946 0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            normalize_phone("(555) 010-0000").as_deref(),
            Some("5550100000")
        );
        assert_eq!(normalize_phone("call me"), None);
        assert_eq!(normalize_phone("12345"), None);
        assert_eq!(normalize_phone("+0 555 0100"), None);
        assert_eq!(normalize_phone("+1234567890123456"), None);
    }

    #[test]
    fn timestamps_are_normalised_to_utc() {
        assert_eq!(
            normalize_timestamp("2024-03-01 10:00:00+02:00").as_deref(),
            Some("2024-03-01T08:00:00Z")
        );
        assert_eq!(
            normalize_timestamp("2024-03-01T10:00:00.5Z").as_deref(),
            Some("2024-03-01T10:00:00.5Z")
        );
        for bad in [
            "2024-03-01 10:00:00",
            "2024-02-30T00:00:00Z",
            "yesterday",
            "",
        ] {
            assert_eq!(normalize_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn typed_fields_take_text_that_says_their_type() {
        let check = |kind, value| normalize_value(kind, "f", value);
        assert_eq!(check(FieldType::Priority, json!("3")).unwrap(), json!(3));
        assert!(check(FieldType::Priority, json!(9)).is_err());
        assert_eq!(
            check(FieldType::Tags, json!("vip, billing;;")).unwrap(),
            json!(["vip", "billing"])
        );
        assert_eq!(
            check(FieldType::Direction, json!("IN")).unwrap(),
            json!("in")
        );
        assert_eq!(
            check(FieldType::Agents, json!("ann@example.com; Bo")).unwrap(),
            json!(["ann@example.com", "Bo"])
        );
        let eleven = ["a@example.com"; 11].join(",");
        assert!(check(FieldType::Agents, json!(eleven)).is_err());
        assert_eq!(
            check(
                FieldType::Custom,
                json!({"sizeNum": "12", "paidBool": "yes"})
            )
            .unwrap(),
            json!({"sizeNum": 12, "paidBool": true})
        );
        let error = check(FieldType::Custom, json!({"size": 1})).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("f.size"));
    }

    #[test]
    fn fields_the_api_does_not_take_are_refused_locally() {
        let conversation = ConversationBody {
            name: Some("Hi".into()),
            extra: Map::from_iter([("mood".to_string(), json!("good"))]),
            ..Default::default()
        };
        let customer = CustomerBody {
            external_id: Some("1".into()),
            ..Default::default()
        };
        let error = finish_plan(customer, conversation).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("conversation.mood"));
        assert_eq!(error.rule, "not a field the API takes");
    }
}
