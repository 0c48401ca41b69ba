//! The org's tags through the API (the docs, "Users, tags, companies"): every tag listed
//! with `GET /v1/tags?page=&pageSize=`, page after page, and names or ids appended to a
//! conversation with `POST /v1/conversations/{id}/tags`, which creates the names the org
//! lacks. Each page and each append is one request through the rate gate; the caller
//! retries as it retries every call (an append is idempotent: a lost answer is sent again).
//! Answers are taken in the envelope (`data`, fields in `attributes`) or bare: the docs give
//! no example of either answer.

use std::sync::atomic::Ordering;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::Value;

use super::client::{Call, KustomerClient, classify_failure};
use super::error::ApiError;
use super::read::record_of;

/// Tags asked for per page (the listings' most).
pub const TAGS_PAGE_SIZE: usize = 100;

/// Most pages listed before giving up (100,000 tags).
const MAX_TAG_PAGES: usize = 1_000;

/// One tag of the org as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgTag {
    pub id: String,
    pub name: String,
}

impl KustomerClient {
    /// Every tag of the org, page by page (each page one request, counted as a lookup).
    pub async fn list_tags(&self) -> Result<Vec<OrgTag>, ApiError> {
        let mut all = Vec::new();
        for page in 1..=MAX_TAG_PAGES {
            self.stats().lookups.fetch_add(1, Ordering::Relaxed);
            let mut url = self.url("v1/tags");
            url.set_query(Some(&format!("page={page}&pageSize={TAGS_PAGE_SIZE}")));
            let (status, answer) = self.send(Method::GET, url, None).await?;
            if status.as_u16() != 200 {
                return Err(classify_failure(Call::Write, status.as_u16(), &answer));
            }
            let Some((tags, more)) = tags_on_page(&answer, TAGS_PAGE_SIZE) else {
                return Err(ApiError::Transient {
                    reason: format!("the tags listing answered {status} with no list of tags"),
                    maybe_applied: false,
                });
            };
            all.extend(tags);
            if !more {
                return Ok(all);
            }
        }
        Err(ApiError::Transient {
            reason: format!("the org's tags did not end within {MAX_TAG_PAGES} pages"),
            maybe_applied: false,
        })
    }

    /// `POST /v1/conversations/{id}/tags` with `{"tags": names_or_ids}`: the conversation's
    /// tag ids as the answer gives them afterwards (None: the answer holds no list of them).
    /// Under the conversation's per-object limit, as an update is.
    pub async fn append_tags(
        &self,
        conversation_id: &str,
        names_or_ids: &[String],
    ) -> Result<Option<Vec<String>>, ApiError> {
        let encoded = utf8_percent_encode(conversation_id, NON_ALPHANUMERIC);
        let url = self.url(&format!("v1/conversations/{encoded}/tags"));
        let body =
            serde_json::to_vec(&serde_json::json!({ "tags": names_or_ids })).map_err(|error| {
                ApiError::Rejected {
                    status: 0,
                    message: format!("cannot encode the body: {error}"),
                }
            })?;
        let (status, answer) = self.send_update(Method::POST, url, body).await?;
        match status.as_u16() {
            200 | 201 | 204 => Ok(conversation_tags(&answer)),
            code => Err(classify_failure(Call::Update, code, &answer)),
        }
    }
}

/// The tags one page of the listing holds, and whether a later page may hold more; None
/// when the answer is not a list of tags. A page's `links.next` says whether there is more;
/// without links, a full page may be followed by another.
fn tags_on_page(answer: &[u8], size: usize) -> Option<(Vec<OrgTag>, bool)> {
    let value: Value = serde_json::from_slice(answer).ok()?;
    let items = value.get("data").unwrap_or(&value).as_array()?;
    let tags = items.iter().map(org_tag).collect::<Option<Vec<_>>>()?;
    let more = match value.get("links") {
        Some(links) => links.get("next").is_some_and(|next| match next {
            Value::String(next) => !next.is_empty(),
            Value::Null => false,
            _ => true,
        }),
        None => items.len() >= size,
    };
    Some((tags, more && !items.is_empty()))
}

/// One listed tag: `{id, attributes: {name}}` or `{id, name}`.
fn org_tag(item: &Value) -> Option<OrgTag> {
    let id = item.get("id")?.as_str().filter(|id| !id.is_empty())?;
    let name = item
        .pointer("/attributes/name")
        .or_else(|| item.get("name"))?
        .as_str()?;
    Some(OrgTag {
        id: id.to_string(),
        name: name.to_string(),
    })
}

/// The tag ids of a conversation as an answer holds it (a record, bare or in `data`).
fn conversation_tags(answer: &[u8]) -> Option<Vec<String>> {
    let record = record_of(answer)?;
    let tags = record.fields.get("tags")?.as_array()?;
    tags.iter()
        .map(|tag| tag.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_tags_is_read_in_the_envelope_and_bare() {
        let enveloped = br#"{"data":[{"type":"tag","id":"t1","attributes":{"name":"VIP"}}],
            "links":{"next":"/v1/tags?page=2&pageSize=1"}}"#;
        let (tags, more) = tags_on_page(enveloped, 100).unwrap();
        assert_eq!(
            tags,
            vec![OrgTag {
                id: "t1".into(),
                name: "VIP".into()
            }]
        );
        assert!(more);
        let last = br#"{"data":[{"id":"t2","attributes":{"name":"b"}}],"links":{"next":null}}"#;
        assert!(!tags_on_page(last, 100).unwrap().1);
        let bare = br#"[{"id":"t3","name":"c"},{"id":"t4","name":"d"}]"#;
        let (tags, more) = tags_on_page(bare, 2).unwrap();
        assert_eq!(tags.len(), 2);
        assert!(more, "a full page without links may have a next");
        assert_eq!(tags_on_page(br#"{"data":[{"id":"t1"}]}"#, 100), None);
        assert_eq!(tags_on_page(br#"{"data":{}}"#, 100), None);
    }

    #[test]
    fn an_appends_answer_gives_the_conversations_tag_ids_in_either_shape() {
        let live =
            br#"{"data":{"type":"conversation","id":"c1","attributes":{"tags":["t1","t2"]}}}"#;
        assert_eq!(
            conversation_tags(live),
            Some(vec!["t1".to_string(), "t2".to_string()])
        );
        let bare = br#"{"id":"c1","tags":["t1"]}"#;
        assert_eq!(conversation_tags(bare), Some(vec!["t1".to_string()]));
        assert_eq!(conversation_tags(br#"{"id":"c1"}"#), None);
        assert_eq!(conversation_tags(b""), None);
    }
}
