//! What can go wrong with one API call, sorted by what the caller must do about it, and
//! the server's words read from an error in whichever shape it comes.

use std::time::Duration;

use serde_json::Value;

use super::ratelimit::Held;

/// The outcome of a failed call, classified. A 429 of the org's budget never reaches
/// callers: the client pauses every worker and sends again. One of a record's own limit does
/// ([`ApiError::RecordLimited`]), so that only that record waits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 401/403: the key is wrong, revoked or lacks a role. Stop the run; fail no row.
    #[error("the API refused the key ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    /// 3xx: the API does not redirect, so the base URL is wrong (an old host, a proxy, a
    /// login page). The redirect is not followed: the key would go with it, to a host the
    /// user never named, in a request the rate gate never saw. Nothing was made. Stop the
    /// run; fail no row.
    #[error(
        "the API answered {status}, a redirect to {}: the base URL is wrong (the redirect \
         was not followed, so the key went nowhere else); fix --base-url",
        location.as_deref().unwrap_or("nowhere (no Location header)")
    )]
    WrongBaseUrl {
        status: u16,
        location: Option<String>,
    },
    /// No request has had an answer yet, and this one could not connect (refused, no such
    /// host, TLS failed): the base URL names no API that can be reached. Nothing was sent.
    /// Stop the run; fail no row.
    #[error(
        "cannot reach the API at {base_url} ({reason}): check --base-url (and, for a real \
         org, the network); no request was answered, so nothing was sent"
    )]
    Unreachable { base_url: String, reason: String },
    /// 404/405 on a create or a bulk submit: the API has no such route here, so the base URL
    /// is wrong (or, for a bulk submit, the org has no bulk jobs). Nothing was made. Stop the
    /// run, or go on one request per record; fail no row.
    #[error("the API has no such endpoint ({status}): {message}")]
    NoSuchEndpoint { status: u16, message: String },
    /// 404 on a bulk job's status or results: the API does not know the job, or not yet (a
    /// job store may lag behind the submit's answer). Ask again; past the retries, the job
    /// may or may not exist.
    #[error("the API does not know it (404: {message})")]
    UnknownJob { message: String },
    /// 409: a record with the same externalId, email or phone exists.
    #[error("duplicate (409): {message}")]
    Duplicate { message: String },
    /// Any other 4xx: this request will never succeed as it is. The row fails.
    #[error("refused ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// Worth another try: 5xx, timeouts, dropped connections, too many 429s in a row.
    /// `maybe_applied`: the server may have acted on the request before the answer was
    /// lost, so a create must be reconciled by lookup before it is sent again.
    #[error("{reason}")]
    Transient { reason: String, maybe_applied: bool },
    /// 429 on an update, with the org's budget not spent: this record's per-object limit
    /// (see `ratelimit::Spent`). Nothing was written. Only this record waits `wait` before
    /// it is sent again, within its row's retry budget; the run goes on at full rate.
    #[error("this record's update limit (429, the org's budget not spent): {message}")]
    RecordLimited { wait: Duration, message: String },
    /// The rate gate held the request back and it was not sent (see [`Held`]).
    #[error(transparent)]
    NotSent(#[from] Held),
}

impl ApiError {
    /// Whether another attempt may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, ApiError::Transient { .. })
    }

    /// Whether a create that failed this way may nevertheless have created its record.
    pub fn maybe_applied(&self) -> bool {
        matches!(
            self,
            ApiError::Transient {
                maybe_applied: true,
                ..
            }
        )
    }
}

/// The server's own words from an error body, in any shape it comes in: `{"errors":
/// [objects or texts]}`, `{"errors": "text"}`, `{"error": "text" | {...}}`, `{"message":
/// "..."}`; the start of the body when it is not JSON.
pub fn server_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(value) => ["errors", "error"]
            .iter()
            .find_map(|key| value.get(*key).and_then(error_words))
            .or_else(|| error_words(&value))
            .unwrap_or_else(|| value.to_string()),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    trimmed(&text)
}

/// The words of one error, whatever its shape: a text; an object's `detail`, `title` or
/// `message` (else its `code`), after its `source.pointer`; a list of either, joined.
/// None when it holds no words.
pub(super) fn error_words(error: &Value) -> Option<String> {
    match error {
        Value::String(text) => Some(text.trim().to_string()).filter(|text| !text.is_empty()),
        Value::Array(errors) => {
            let words: Vec<String> = errors.iter().filter_map(error_words).collect();
            (!words.is_empty()).then(|| words.join("; "))
        }
        Value::Object(fields) => {
            let words = ["detail", "title", "message", "code"]
                .iter()
                .find_map(|key| fields.get(*key).and_then(Value::as_str))
                .map(str::trim)
                .filter(|words| !words.is_empty())?;
            Some(
                match error.pointer("/source/pointer").and_then(Value::as_str) {
                    Some(pointer) => format!("{pointer}: {words}"),
                    None => words.to_string(),
                },
            )
        }
        _ => None,
    }
}

/// The HTTP status an error states (`status`, as a number or a text), or, for a list, its
/// first error's that states one. A text states none.
pub(super) fn error_status(error: &Value) -> Option<u16> {
    match error {
        Value::Array(errors) => errors.iter().find_map(error_status),
        Value::Object(fields) => match fields.get("status")? {
            Value::Number(status) => status.as_u64().and_then(|s| u16::try_from(s).ok()),
            Value::String(status) => status.trim().parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Whether an error's `code` (or, for a list, any error's) names a duplicate.
pub(super) fn error_says_duplicate(error: &Value) -> bool {
    match error {
        Value::Array(errors) => errors.iter().any(error_says_duplicate),
        Value::Object(fields) => fields.get("code").and_then(Value::as_str) == Some("duplicate"),
        _ => false,
    }
}

/// The server's words as shown to the user: trimmed, at most 300 bytes, never empty.
pub(super) fn trimmed(text: &str) -> String {
    const MAX: usize = 300;
    let text = text.trim();
    if text.is_empty() {
        return "no message".to_string();
    }
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut cut = MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::documented;

    #[test]
    fn both_spellings_of_error_bodies_are_read() {
        let live = br#"{"errors":[{"status":"422","title":"Invalid","detail":"bad email","source":{"pointer":"/emails/0/email"}}]}"#;
        assert_eq!(server_message(live), "/emails/0/email: bad email");
        let other = br#"{"errors":[{"code":"duplicate","message":"exists"}]}"#;
        assert_eq!(server_message(other), "exists");
        assert_eq!(server_message(b"  Bad Gateway \n"), "Bad Gateway");
        assert_eq!(server_message(b""), "no message");
    }

    #[test]
    fn the_documented_error_bodies_are_read() {
        assert_eq!(
            server_message(&documented("errors-live.json")),
            "/emails/0/email: email is invalid"
        );
        assert_eq!(
            server_message(&documented("errors-other.json")),
            "a customer with this email exists"
        );
    }

    #[test]
    fn errors_are_read_as_texts_objects_or_lists_wherever_they_appear() {
        assert_eq!(
            server_message(
                br#"{"errors": ["taken", {"detail": "bad", "source": {"pointer": "/name"}}]}"#
            ),
            "taken; /name: bad"
        );
        assert_eq!(
            server_message(br#"{"errors": "duplicate detected"}"#),
            "duplicate detected"
        );
        assert_eq!(
            server_message(br#"{"error": "not allowed"}"#),
            "not allowed"
        );
        assert_eq!(
            server_message(br#"{"error": {"status": 400, "message": "bad body"}}"#),
            "bad body"
        );
        assert_eq!(server_message(br#"{"message": "Not Found"}"#), "Not Found");
        // Words nowhere: the body itself, rather than nothing.
        assert_eq!(server_message(br#"{"errors": [{}]}"#), r#"{"errors":[{}]}"#);
        let long = format!(r#"{{"error": "{}"}}"#, "é".repeat(400));
        assert!(server_message(long.as_bytes()).ends_with('…'));
        assert!(server_message(long.as_bytes()).len() <= 303);
    }

    #[test]
    fn a_status_is_read_from_an_object_or_a_list_never_from_a_text() {
        let status = |error: &str| error_status(&serde_json::from_str(error).unwrap());
        assert_eq!(status(r#"{"status": "409"}"#), Some(409));
        assert_eq!(status(r#"{"status": 422}"#), Some(422));
        assert_eq!(status(r#"["x", {"status": 500}]"#), Some(500));
        assert_eq!(status(r#""duplicate detected""#), None);
        assert_eq!(status(r#"{"status": "error"}"#), None);
    }
}
