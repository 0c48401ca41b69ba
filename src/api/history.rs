//! A conversation's history through the API: creating its messages and notes, and finding
//! one whose create's answer was lost. A message is found by its externalId
//! (`GET /v1/messages/externalid={x}`, lower-case as the spec writes it); a note has no
//! lookup, so the conversation's notes are listed page by page until one carries the
//! externalId. Answers are read and failures classified as every other create and lookup
//! (`client.rs`): both shapes, bare or in `data`, are taken.

use std::sync::atomic::Ordering;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::{Map, Value};

use super::client::{Call, KustomerClient, classify_failure};
use super::error::ApiError;

/// Notes asked for per page of a listing (Kustomer's largest page).
pub const NOTES_PAGE_SIZE: usize = 100;
/// Most pages of one conversation's notes read before giving up: 1,000 pages of 100 is
/// 100,000 notes, far beyond a real thread (Zendesk allows 5,000 comments a ticket).
const MAX_NOTES_PAGES: usize = 1_000;

impl KustomerClient {
    /// `POST /v1/conversations/{id}/messages`; the new message's id.
    pub async fn create_message(
        &self,
        conversation_id: &str,
        body: &Map<String, Value>,
    ) -> Result<String, ApiError> {
        self.stats().message_creates.fetch_add(1, Ordering::Relaxed);
        let url = self.thread_url(conversation_id, "messages", None);
        self.create(&url, body)
            .await
            .map_err(conversation_not_found)
    }

    /// `POST /v1/conversations/{id}/notes`; the new note's id.
    pub async fn create_note(
        &self,
        conversation_id: &str,
        body: &Map<String, Value>,
    ) -> Result<String, ApiError> {
        self.stats().note_creates.fetch_add(1, Ordering::Relaxed);
        let url = self.thread_url(conversation_id, "notes", None);
        self.create(&url, body)
            .await
            .map_err(conversation_not_found)
    }

    /// `GET /v1/messages/externalid={x}`; None when absent (404 or an empty list).
    pub async fn find_message(&self, external_id: &str) -> Result<Option<String>, ApiError> {
        self.stats().thread_lookups.fetch_add(1, Ordering::Relaxed);
        self.lookup("v1/messages", "externalid", external_id).await
    }

    /// Lists `GET /v1/conversations/{id}/notes` page by page until a note with this
    /// externalId is found (its id) or the list ends (None; also when the conversation is
    /// not found, 404: a note of it cannot exist). Each page is one request through the gate.
    pub async fn find_note(
        &self,
        conversation_id: &str,
        external_id: &str,
    ) -> Result<Option<String>, ApiError> {
        for page in 1..=MAX_NOTES_PAGES {
            self.stats().lookups.fetch_add(1, Ordering::Relaxed);
            self.stats().thread_lookups.fetch_add(1, Ordering::Relaxed);
            let url = self.thread_url(conversation_id, "notes", Some(page));
            let (status, answer) = self.send(Method::GET, url, None).await?;
            let read = match status.as_u16() {
                200 => notes_page(&answer, external_id, NOTES_PAGE_SIZE),
                404 => return Ok(None),
                code => return Err(classify_failure(Call::Lookup, code, &answer)),
            };
            match read {
                Some(NotesPage::Found(id)) => return Ok(Some(id)),
                Some(NotesPage::More) => {}
                Some(NotesPage::End) => return Ok(None),
                // A 200 we cannot read must not be taken for "absent", or the note would
                // be created again.
                None => {
                    return Err(ApiError::Transient {
                        reason: format!("notes listing answered {status} with no list of notes"),
                        maybe_applied: false,
                    });
                }
            }
        }
        Err(ApiError::Transient {
            reason: format!(
                "the notes of conversation {conversation_id} did not end within \
                 {MAX_NOTES_PAGES} pages"
            ),
            maybe_applied: false,
        })
    }

    /// `v1/conversations/{id}/{what}`, with `?page=N&pageSize=100` for a listing's page.
    fn thread_url(&self, conversation_id: &str, what: &str, page: Option<usize>) -> url::Url {
        let id = utf8_percent_encode(conversation_id, NON_ALPHANUMERIC);
        let mut url = self.url(&format!("v1/conversations/{id}/{what}"));
        if let Some(page) = page {
            url.set_query(Some(&format!("page={page}&pageSize={NOTES_PAGE_SIZE}")));
        }
        url
    }
}

/// A 404 to a create under `/v1/conversations/{id}/`: the path names a record, so the 404
/// says that conversation is not found (this message or note fails, with the server's
/// words), not that the route is missing, as it says for the fixed routes (a wrong base URL
/// is caught by the customers and conversations before any history is sent).
fn conversation_not_found(error: ApiError) -> ApiError {
    match error {
        ApiError::NoSuchEndpoint {
            status: 404,
            message,
        } => ApiError::Rejected {
            status: 404,
            message,
        },
        other => other,
    }
}

/// What one page of a notes listing says about the note sought.
#[derive(Debug, PartialEq, Eq)]
enum NotesPage {
    /// A note on this page carries the externalId: its id.
    Found(String),
    /// Not here; a later page may hold it.
    More,
    /// Not here, and this is the last page.
    End,
}

/// Reads a page of notes: `{"data": [note, ...], "links": {"next": ...}}` or a bare list.
/// A note carries its externalId in `attributes` (or bare, at its top). With `links`, a
/// non-null `links.next` says more pages follow (the next page is asked for by number, never
/// by following the link, which could name another host); without, a full page (`size`
/// notes) may be followed by another. None: not a list of notes.
fn notes_page(answer: &[u8], external_id: &str, size: usize) -> Option<NotesPage> {
    let value: Value = serde_json::from_slice(answer).ok()?;
    let notes = value.get("data").unwrap_or(&value).as_array()?;
    let found = notes.iter().find_map(|note| {
        let fields = note.get("attributes").unwrap_or(note);
        (fields.get("externalId").and_then(Value::as_str) == Some(external_id))
            .then(|| note.get("id").and_then(Value::as_str))
            .flatten()
            .filter(|id| !id.is_empty())
    });
    if let Some(id) = found {
        return Some(NotesPage::Found(id.to_owned()));
    }
    let more = match value.get("links") {
        Some(links) => links.get("next").is_some_and(|next| match next {
            Value::String(next) => !next.is_empty(),
            Value::Null => false,
            _ => true,
        }),
        None => notes.len() >= size,
    };
    Some(if more && !notes.is_empty() {
        NotesPage::More
    } else {
        NotesPage::End
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(id: &str, external_id: &str) -> String {
        format!(
            r#"{{"type":"note","id":"{id}","attributes":{{"body":"b","externalId":"{external_id}"}}}}"#
        )
    }

    #[test]
    fn a_note_is_found_by_its_external_id_in_the_data_shape() {
        let page = format!(
            r#"{{"data":[{},{}],"links":{{"self":"/x?page=1","next":"/x?page=2"}},"meta":{{"page":1}}}}"#,
            note("n1", "a"),
            note("n2", "b")
        );
        let read = |x| notes_page(page.as_bytes(), x, 2);
        assert_eq!(read("b"), Some(NotesPage::Found("n2".into())));
        assert_eq!(read("c"), Some(NotesPage::More));
        assert_eq!(
            read("B"),
            Some(NotesPage::More),
            "externalIds match exactly"
        );
    }

    #[test]
    fn the_last_page_says_so_by_a_null_or_absent_next_link() {
        for links in [r#""next":null"#, r#""self":"/x""#, r#""next":"""#] {
            let page = format!(r#"{{"data":[{}],"links":{{{links}}}}}"#, note("n1", "a"));
            assert_eq!(
                notes_page(page.as_bytes(), "z", 1),
                Some(NotesPage::End),
                "{links}"
            );
        }
        // An empty page ends the listing, whatever its links say.
        let empty = br#"{"data":[],"links":{"next":"/x?page=9"}}"#;
        assert_eq!(notes_page(empty, "z", 100), Some(NotesPage::End));
    }

    #[test]
    fn a_bare_list_goes_on_while_its_pages_are_full() {
        let bare = format!(r#"[{},{{"id":"n2","externalId":"b"}}]"#, note("n1", "a"));
        assert_eq!(
            notes_page(bare.as_bytes(), "b", 100),
            Some(NotesPage::Found("n2".into()))
        );
        assert_eq!(notes_page(bare.as_bytes(), "z", 2), Some(NotesPage::More));
        assert_eq!(notes_page(bare.as_bytes(), "z", 3), Some(NotesPage::End));
    }

    #[test]
    fn an_answer_that_is_no_list_of_notes_is_not_taken_for_absent() {
        for unreadable in [
            &b"<html>Bad Gateway</html>"[..],
            br#"{"data":{"id":"x"}}"#,
            b"{}",
        ] {
            assert_eq!(notes_page(unreadable, "a", 100), None);
        }
        // A matching note with no id is no answer either: the listing goes on.
        let no_id = br#"{"data":[{"attributes":{"externalId":"a"}}],"links":{"next":null}}"#;
        assert_eq!(notes_page(no_id, "a", 100), Some(NotesPage::End));
    }
}
