//! Reading records back by id, for `verify`: `GET /v1/customers/{id}` and
//! `GET /v1/conversations/{id}` (the plain-id form of the lookup routes), and the count of a
//! conversation's notes from `GET /v1/conversations/{id}/notes`. Each request goes through
//! the rate gate as every other does; answers are taken bare or in `data`, with the fields
//! at the top or in JSON:API `attributes`.

use std::sync::atomic::Ordering;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::{Map, Value};

use super::client::{Call, KustomerClient, classify_failure};
use super::error::ApiError;
use super::history::NOTES_PAGE_SIZE;

/// Most pages of one conversation's notes counted before giving up (100,000 notes).
const MAX_NOTES_PAGES: usize = 1_000;

/// A record as read back: its id and its fields.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadRecord {
    pub id: String,
    /// The record's fields (`attributes`, or the object itself without `id`/`type`).
    pub fields: Map<String, Value>,
    /// The customer a conversation belongs to: `attributes.customer`, or JSON:API
    /// `relationships.customer.data.id`.
    pub customer: Option<String>,
}

impl KustomerClient {
    /// `GET /v1/customers/{id}`; None when the API answers 404.
    pub async fn read_customer(&self, id: &str) -> Result<Option<ReadRecord>, ApiError> {
        self.read_record("v1/customers", id).await
    }

    /// `GET /v1/conversations/{id}`; None when the API answers 404.
    pub async fn read_conversation(&self, id: &str) -> Result<Option<ReadRecord>, ApiError> {
        self.read_record("v1/conversations", id).await
    }

    async fn read_record(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<ReadRecord>, ApiError> {
        self.stats().lookups.fetch_add(1, Ordering::Relaxed);
        let encoded = utf8_percent_encode(id, NON_ALPHANUMERIC);
        let url = self.url(&format!("{collection}/{encoded}"));
        let (status, answer) = self.send(Method::GET, url, None).await?;
        match status.as_u16() {
            200 => record_of(&answer)
                .map(Some)
                .ok_or_else(|| ApiError::Transient {
                    reason: format!("reading {collection}/{id} answered {status} with no record"),
                    maybe_applied: false,
                }),
            404 => Ok(None),
            code => Err(classify_failure(Call::Lookup, code, &answer)),
        }
    }

    /// How many notes `GET /v1/conversations/{id}/notes` lists, page by page (each page one
    /// request); None when the conversation is not found (404).
    pub async fn count_notes(&self, conversation_id: &str) -> Result<Option<u64>, ApiError> {
        let id = utf8_percent_encode(conversation_id, NON_ALPHANUMERIC).to_string();
        let mut counted = 0;
        for page in 1..=MAX_NOTES_PAGES {
            self.stats().lookups.fetch_add(1, Ordering::Relaxed);
            let mut url = self.url(&format!("v1/conversations/{id}/notes"));
            url.set_query(Some(&format!("page={page}&pageSize={NOTES_PAGE_SIZE}")));
            let (status, answer) = self.send(Method::GET, url, None).await?;
            match status.as_u16() {
                200 => {}
                404 => return Ok(None),
                code => return Err(classify_failure(Call::Lookup, code, &answer)),
            }
            let Some((on_page, more)) = notes_on_page(&answer, NOTES_PAGE_SIZE) else {
                return Err(ApiError::Transient {
                    reason: format!("notes listing answered {status} with no list of notes"),
                    maybe_applied: false,
                });
            };
            counted += on_page;
            if !more {
                return Ok(Some(counted));
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
}

/// Reads one record: `{"data": {...}}` or the object bare; its fields in `attributes` or at
/// its top. A `data` list is read as its first item (a lookup's shape).
pub fn record_of(answer: &[u8]) -> Option<ReadRecord> {
    let value: Value = serde_json::from_slice(answer).ok()?;
    let object = match value.get("data") {
        Some(Value::Array(items)) => items.first()?,
        Some(data @ Value::Object(_)) => data,
        _ => &value,
    };
    let id = match object.get("id")? {
        Value::String(id) if !id.is_empty() => id.clone(),
        Value::Number(id) => id.to_string(),
        _ => return None,
    };
    let mut fields = match object.get("attributes") {
        Some(Value::Object(attributes)) => attributes.clone(),
        _ => {
            let mut fields = object.as_object()?.clone();
            for envelope in ["id", "type", "relationships", "links"] {
                fields.remove(envelope);
            }
            fields
        }
    };
    let related = object
        .pointer("/relationships/customer/data/id")
        .and_then(Value::as_str);
    let customer = match fields.get("customer") {
        Some(Value::String(id)) => Some(id.clone()),
        _ => related.map(str::to_owned),
    };
    fields.remove("customer");
    Some(ReadRecord {
        id,
        fields,
        customer,
    })
}

/// The notes one page of a listing holds, and whether a later page may hold more; None when
/// the answer is not a list of notes.
fn notes_on_page(answer: &[u8], size: usize) -> Option<(u64, bool)> {
    let value: Value = serde_json::from_slice(answer).ok()?;
    let notes = value.get("data").unwrap_or(&value).as_array()?;
    let more = match value.get("links") {
        Some(links) => links.get("next").is_some_and(|next| match next {
            Value::String(next) => !next.is_empty(),
            Value::Null => false,
            _ => true,
        }),
        None => notes.len() >= size,
    };
    Some((notes.len() as u64, more && !notes.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_read_in_the_live_shape_and_in_the_spec_shape() {
        let live = br#"{"data":{"type":"conversation","id":"c1","attributes":{"status":"open"},
            "relationships":{"customer":{"data":{"type":"customer","id":"k1"}}}}}"#;
        let read = record_of(live).unwrap();
        assert_eq!(read.id, "c1");
        assert_eq!(read.fields["status"], "open");
        assert_eq!(read.customer.as_deref(), Some("k1"));
        let spec =
            br#"{"type":"conversation","id":"c1","attributes":{"status":"done","customer":"k2"}}"#;
        let read = record_of(spec).unwrap();
        assert_eq!(read.customer.as_deref(), Some("k2"));
        assert!(!read.fields.contains_key("customer"));
        let bare = br#"{"id":"c1","status":"snoozed","customer":"k3"}"#;
        let read = record_of(bare).unwrap();
        assert_eq!(read.fields["status"], "snoozed");
        assert_eq!(read.customer.as_deref(), Some("k3"));
        assert_eq!(record_of(br#"{"data":{"type":"x"}}"#), None);
    }

    #[test]
    fn notes_are_counted_page_by_page() {
        assert_eq!(
            notes_on_page(br#"{"data":[{},{}],"links":{"next":null}}"#, 100),
            Some((2, false))
        );
        assert_eq!(
            notes_on_page(br#"{"data":[{}],"links":{"next":"/p2"}}"#, 100),
            Some((1, true))
        );
        assert_eq!(notes_on_page(br#"[{},{}]"#, 2), Some((2, true)));
        assert_eq!(notes_on_page(br#"{"data":{}}"#, 2), None);
    }
}
