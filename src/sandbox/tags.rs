//! The org's tags as the sandbox holds them (the docs, "Users, tags, companies"): seeded
//! from [`SandboxConfig::tags`](super::SandboxConfig), listed with `GET
//! /v1/tags?page=&pageSize=` (oldest first, the envelope and `links` of the notes listing),
//! and appended to a conversation with `POST /v1/conversations/{id}/tags`, which takes names
//! or ids, creates the names the org lacks and adds each tag to the conversation once (a tag
//! it holds already is not added again: appending is idempotent).
//!
//! Where the docs are silent, the strictest plausible reading (README, "The sandbox"): the
//! append's body is `{"tags": [names or ids]}` (1 to 100 non-empty texts; anything else is
//! 400); a name is found whatever its case, so one name is never two tags; the append
//! answers the conversation as it now is (ids only: a client learns the ids of the tags it
//! made by listing again); with `SandboxConfig::tag_ids_only`, a conversation create or
//! update whose `tags` holds a text that is no id of an org tag is refused 422 naming
//! `/tags/{i}` ([`unknown_ids`]; on by default, as the importer sends ids); appends
//! count against the record's per-object update limit, as the live reference says. Tags
//! made by appends are kept in the records file; seeded ones are seeded again at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::{HeaderValue, RETRY_AFTER};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::http::{
    App, ConnCtx, after_write, conversation_object, error, errors_response, read_object,
    refused_write, roll_after,
};
use super::validate::FieldError;

/// Most names or ids one append takes.
const MAX_APPEND: usize = 100;

/// One tag of the org.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TagRecord {
    pub id: String,
    pub name: String,
}

impl TagRecord {
    pub fn new(id: &str, name: &str) -> TagRecord {
        TagRecord {
            id: id.into(),
            name: name.into(),
        }
    }

    fn object(&self) -> Value {
        json!({"type": "tag", "id": self.id, "attributes": {"name": self.name}})
    }
}

/// The org's tags, oldest first, with their indexes by id and by lower-cased name.
#[derive(Debug, Default)]
pub struct Tags {
    records: Vec<TagRecord>,
    by_id: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
}

impl Tags {
    /// Holds `record` (in its old place when its id is held).
    pub fn place(&mut self, record: TagRecord) {
        let index = match self.by_id.get(&record.id) {
            Some(&index) => {
                self.by_name
                    .remove(&self.records[index].name.to_lowercase());
                self.records[index] = record;
                index
            }
            None => {
                self.records.push(record);
                self.records.len() - 1
            }
        };
        let record = &self.records[index];
        self.by_id.insert(record.id.clone(), index);
        self.by_name.insert(record.name.to_lowercase(), index);
    }

    pub fn holds_id(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The tag a name or an id names: an id first, then a name whatever its case.
    pub fn find(&self, name_or_id: &str) -> Option<&TagRecord> {
        let index = self
            .by_id
            .get(name_or_id)
            .or_else(|| self.by_name.get(&name_or_id.to_lowercase()))?;
        self.records.get(*index)
    }

    pub fn all(&self) -> &[TagRecord] {
        &self.records
    }
}

/// The problems of a conversation body's `tags` that are texts but no id of an org tag
/// (their shape is `validate.rs`'s): `/tags/{i}` each.
pub fn unknown_ids(tags: &Tags, body: &Map<String, Value>) -> Vec<FieldError> {
    let Some(Value::Array(items)) = body.get("tags") else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| {
            let text = item.as_str()?;
            (!tags.holds_id(text)).then(|| {
                FieldError::new(
                    format!("/tags/{index}"),
                    format!("{text:?} is not the id of a tag of this org"),
                )
            })
        })
        .collect()
}

/// An append's names or ids: `{"tags": [...]}` with 1 to [`MAX_APPEND`] non-empty texts.
fn append_body(body: &Map<String, Value>) -> Result<Vec<String>, String> {
    let shape = || format!("the body must be {{\"tags\": [1 to {MAX_APPEND} tag names or ids]}}");
    let Some(Value::Array(items)) = body.get("tags") else {
        return Err(shape());
    };
    if items.is_empty() || items.len() > MAX_APPEND || body.len() != 1 {
        return Err(shape());
    }
    items
        .iter()
        .map(|item| match item.as_str() {
            Some(text) if !text.trim().is_empty() => Ok(text.to_owned()),
            _ => Err(shape()),
        })
        .collect()
}

/// `GET /v1/tags?page=N&pageSize=M`: the org's tags, oldest first, in the envelope of the
/// sandbox's other listings.
pub(super) async fn list(State(app): State<Arc<App>>, req: Request) -> Response {
    let (page, size) = match super::history::paging(req.uri().query()) {
        Ok(paging) => paging,
        Err(words) => return error(StatusCode::BAD_REQUEST, words),
    };
    let mut inner = app.lock();
    if page == 1 {
        inner.counters.tag_lists += 1;
    }
    let all = inner.store.tags().all();
    let start = (page - 1).saturating_mul(size).min(all.len());
    let end = start.saturating_add(size).min(all.len());
    let data: Vec<Value> = all[start..end].iter().map(TagRecord::object).collect();
    let more = end < all.len();
    super::history::page_answer("/v1/tags", data, (page, size), more)
}

/// `POST /v1/conversations/{id}/tags`: the names the org lacks made tags, every tag added
/// to the conversation once; 200 with the conversation as it now is.
pub(super) async fn append(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let conn = req.extensions().get::<ConnCtx>().cloned();
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let wanted = match append_body(&body) {
        Ok(wanted) => wanted,
        Err(words) => return error(StatusCode::BAD_REQUEST, words),
    };
    let outcome = {
        let mut inner = app.lock();
        if inner.store.conversation_customer(&id).is_none() {
            return error(
                StatusCode::NOT_FOUND,
                format!("conversation {id} not found"),
            );
        }
        let elapsed = Instant::now().saturating_duration_since(app.started);
        if let Err(secs) = inner.per_object.check(0, &id, elapsed) {
            inner.counters.object_limited += 1;
            inner.counters.rate_limited();
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many updates of conversation {id} in this window"),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
            return response;
        }
        let appended = inner.store.append_tags(&id, &wanted);
        appended.map(|(record, created)| {
            inner.counters.tags_created += created;
            let answer = app.envelope(conversation_object(&record));
            (answer, roll_after(&mut inner))
        })
    };
    match outcome {
        Ok((answer, fault)) => {
            let response = (StatusCode::OK, Json(answer)).into_response();
            after_write(&app, conn, fault, response).await
        }
        Err(refusal) => {
            let (status, problems) = refused_write(refusal);
            errors_response(status, problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_tag_is_found_by_its_id_or_by_its_name_whatever_the_case() {
        let mut tags = Tags::default();
        tags.place(TagRecord::new("t1", "VIP"));
        tags.place(TagRecord::new("t2", "billing"));
        assert_eq!(tags.find("t1").map(|t| t.name.as_str()), Some("VIP"));
        assert_eq!(tags.find("vip").map(|t| t.id.as_str()), Some("t1"));
        assert_eq!(tags.find("BILLING").map(|t| t.id.as_str()), Some("t2"));
        assert_eq!(tags.find("other"), None);
        tags.place(TagRecord::new("t1", "gold"));
        assert_eq!(
            tags.find("vip"),
            None,
            "a renamed tag is not found by its old name"
        );
        assert_eq!(tags.all().len(), 2);
    }

    #[test]
    fn a_conversations_tags_must_be_ids_of_org_tags() {
        let mut tags = Tags::default();
        tags.place(TagRecord::new("t1", "vip"));
        assert!(unknown_ids(&tags, &body(json!({"tags": ["t1"]}))).is_empty());
        let errors = unknown_ids(&tags, &body(json!({"tags": ["t1", "vip"]})));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].pointer, "/tags/1");
    }

    #[test]
    fn an_append_takes_a_list_of_names_or_ids_and_nothing_else() {
        assert_eq!(
            append_body(&body(json!({"tags": ["vip", "t2"]}))),
            Ok(vec!["vip".to_string(), "t2".to_string()])
        );
        for bad in [
            json!({}),
            json!({"tags": []}),
            json!({"tags": "vip"}),
            json!({"tags": ["vip", 3]}),
            json!({"tags": [" "]}),
            json!({"tags": ["vip"], "other": 1}),
        ] {
            assert!(append_body(&body(bad.clone())).is_err(), "{bad}");
        }
    }
}
