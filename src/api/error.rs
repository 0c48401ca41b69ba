//! What can go wrong with one API call, sorted by what the caller must do about it.

use super::ratelimit::Held;

/// The outcome of a failed call, classified. 429s never reach callers: the client pauses
/// every worker and sends again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 401/403: the key is wrong, revoked or lacks a role. Stop the run; fail no row.
    #[error("the API refused the key ({status}): {message}")]
    Unauthorized { status: u16, message: String },
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

/// The server's own words from an error body (`{"errors": [{detail|title|message, source}]}`),
/// or the start of the body when it is not JSON.
pub fn server_message(body: &[u8]) -> String {
    const MAX: usize = 300;
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => {
            let errors = value.get("errors").and_then(|e| e.as_array());
            let messages: Vec<String> = errors
                .into_iter()
                .flatten()
                .map(|error| {
                    let words = ["detail", "title", "message"]
                        .iter()
                        .find_map(|key| error.get(*key).and_then(|v| v.as_str()))
                        .unwrap_or("no message");
                    match error.pointer("/source/pointer").and_then(|p| p.as_str()) {
                        Some(pointer) => format!("{pointer}: {words}"),
                        None => words.to_string(),
                    }
                })
                .collect();
            if messages.is_empty() {
                value
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| value.to_string())
            } else {
                messages.join("; ")
            }
        }
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    let mut text = text.trim().to_string();
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    if text.is_empty() {
        "no message".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_error_bodies_are_read() {
        let live = br#"{"errors":[{"status":"422","title":"Invalid","detail":"bad email","source":{"pointer":"/emails/0/email"}}]}"#;
        assert_eq!(server_message(live), "/emails/0/email: bad email");
        let other = br#"{"errors":[{"code":"duplicate","message":"exists"}]}"#;
        assert_eq!(server_message(other), "exists");
        assert_eq!(server_message(b"  Bad Gateway \n"), "Bad Gateway");
        assert_eq!(server_message(b""), "no message");
    }
}
