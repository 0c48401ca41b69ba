//! The sandbox's updates (`../shared/docs/kustomer-api.md`, "Updates"): `PATCH` and `PUT`
//! of `/v1/customers/{id}` and `/v1/conversations/{id}`, `PATCH` of `/v1/messages/{id}` and
//! `/v1/notes/{id}`, and the items of the bulk update jobs (`PUT /v1/customers/bulk`,
//! `PUT /v1/conversations/bulk`, queued and run by `http.rs` as bulk creates are). One path
//! for all: the body held to the create's rules (422 naming the pointer), the record found
//! (404), the per-object limit (429 with `Retry-After`, the org's budget not spent in the
//! `x-ratelimit-*` headers), the write (`store.rs`: 409 for a key another customer holds,
//! 422 for what an update cannot change), the after-write faults; answered as a create is,
//! but 200.
//!
//! Where the docs are silent, the strictest plausible reading (README, "The sandbox"): a
//! `PUT` without `replace` replaces the whole record, as `replace=true` does, and so does a
//! bulk `PUT` without `?replace=false`; a `replace` on a `PATCH` is refused (400); a field
//! given replaces the record's whole, lists and `custom` too.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::header::{HeaderValue, RETRY_AFTER};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::history;
use super::http::{
    App, ConnCtx, Inner, after_write, bulk_refusal, conversation_object, customer_errors,
    customer_object, error, errors_response, invalid, read_object, refused_item, refused_write,
    roll_after, undefined_custom,
};
use super::store::{Lookup, UpdateMode, WriteError};
use super::thread::ThreadKind;
use super::validate::{
    FieldError, validate_conversation_update, validate_message_update, validate_note_update,
};

/// What kind of record an update writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    Customer,
    Conversation,
    Message,
    Note,
}

impl Target {
    fn noun(self) -> &'static str {
        match self {
            Target::Customer => "customer",
            Target::Conversation => "conversation",
            Target::Message => "message",
            Target::Note => "note",
        }
    }
}

/// Whether a request to `path` with `method` is a single update (counted in
/// `updates_total`): `PATCH` or `PUT` of `/v1/{customers,conversations,messages,notes}/{id}`.
pub(super) fn is_update(method: &Method, path: &str) -> bool {
    if method != Method::PATCH && method != Method::PUT {
        return false;
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return false;
    };
    match rest.split_once('/') {
        Some((kind, id)) => {
            matches!(kind, "customers" | "conversations" | "messages" | "notes")
                && !id.is_empty()
                && !id.contains('/')
                && id != "bulk"
        }
        None => false,
    }
}

/// The mode a request asks for: a `PATCH` merges (and takes no `replace`); a `PUT`
/// replaces, unless its query says `replace=false`. The words of a 400 otherwise.
pub(super) fn mode(method: &Method, query: Option<&str>) -> Result<UpdateMode, String> {
    let replace = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == "replace")
        .map(|(_, value)| value);
    match (method == Method::PATCH, replace) {
        (true, None) => Ok(UpdateMode::Merge),
        (true, Some(_)) => Err("replace is a parameter of PUT; a PATCH always merges".into()),
        (false, None | Some("true")) => Ok(UpdateMode::Replace),
        (false, Some("false")) => Ok(UpdateMode::Merge),
        (false, Some(other)) => Err(format!("replace must be true or false, not {other:?}")),
    }
}

/// What the API refuses in an update's body, as it would in a create's.
fn problems(
    app: &App,
    target: Target,
    body: &Map<String, Value>,
    mode: UpdateMode,
) -> Vec<FieldError> {
    let object = Value::Object(body.clone());
    match target {
        Target::Customer => customer_errors(app, body),
        Target::Conversation => validate_conversation_update(&object, mode),
        Target::Message => {
            let mut errors = validate_message_update(&object);
            errors.extend(undefined_custom(app, body));
            errors
        }
        Target::Note => validate_note_update(&object),
    }
}

/// Why a checked update wrote nothing.
enum Refusal {
    /// The record's per-object limit: seconds until its window resets, and the words.
    Limited(u64, String),
    Write(WriteError),
}

/// Under the lock: the record found, its per-object limit counted, the record written and
/// counted as updated; the record as the API shows it.
fn apply(
    app: &App,
    inner: &mut Inner,
    target: Target,
    (id, mode): (&str, UpdateMode),
    body: &Map<String, Value>,
) -> Result<Value, Refusal> {
    let noun = target.noun();
    let held = match target {
        Target::Customer => inner.store.find_customer(&Lookup::Id(id.into())).is_some(),
        Target::Conversation => inner.store.conversation_customer(id).is_some(),
        Target::Message => thread_item_held(inner, id, ThreadKind::Message),
        Target::Note => thread_item_held(inner, id, ThreadKind::Note),
    };
    if !held {
        return Err(Refusal::Write(WriteError::NotFound(format!(
            "{noun} {id} not found"
        ))));
    }
    let elapsed = Instant::now().saturating_duration_since(app.started);
    if let Err(secs) = inner.per_object.check(0, id, elapsed) {
        inner.counters.object_limited += 1;
        let limit = app.config.per_object_update_limit.unwrap_or_default();
        return Err(Refusal::Limited(
            secs,
            format!(
                "more than {limit} updates of {noun} {id} in this window; retry after it \
                 resets (the organization's rate limit is not spent)"
            ),
        ));
    }
    if target == Target::Conversation
        && let Some(unknown) = super::http::unknown_references(app, inner, body)
            .into_iter()
            .next()
    {
        return Err(Refusal::Write(WriteError::Invalid(unknown)));
    }
    let store = &mut inner.store;
    let updated = &mut inner.counters.updated;
    let object = match target {
        Target::Customer => store.update_customer(id, body, mode).map(|record| {
            updated.customers += 1;
            customer_object(record)
        }),
        Target::Conversation => store.update_conversation(id, body, mode).map(|record| {
            updated.conversations += 1;
            conversation_object(record)
        }),
        Target::Message => store
            .update_thread_item(ThreadKind::Message, id, &history::as_stored(app, body))
            .map(|record| {
                updated.messages += 1;
                history::thread_object(record)
            }),
        Target::Note => store
            .update_thread_item(ThreadKind::Note, id, &history::as_stored(app, body))
            .map(|record| {
                updated.notes += 1;
                history::thread_object(record)
            }),
    };
    object.map_err(Refusal::Write)
}

/// Whether a message or note of `kind` has the id (a message's id is no note's).
fn thread_item_held(inner: &Inner, id: &str, kind: ThreadKind) -> bool {
    inner
        .store
        .threads()
        .get(id)
        .is_some_and(|r| r.kind == kind)
}

pub(super) async fn customer(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    update(app, req, Target::Customer, id).await
}

pub(super) async fn conversation(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    update(app, req, Target::Conversation, id).await
}

pub(super) async fn message(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    update(app, req, Target::Message, id).await
}

pub(super) async fn note(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    update(app, req, Target::Note, id).await
}

/// One update through a single endpoint: 400 for the query or a body that is no object,
/// 422, 404, 429, 409, then 200 with the record as it now is (in the configured envelope)
/// unless an after-write fault strikes.
async fn update(app: Arc<App>, req: Request, target: Target, id: String) -> Response {
    let conn = req.extensions().get::<ConnCtx>().cloned();
    let mode = match mode(req.method(), req.uri().query()) {
        Ok(mode) => mode,
        Err(words) => return error(StatusCode::BAD_REQUEST, words),
    };
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let problems = problems(&app, target, &body, mode);
    if !problems.is_empty() {
        return invalid(problems);
    }
    let outcome = {
        let mut inner = app.lock();
        let applied = apply(&app, &mut inner, target, (&id, mode), &body);
        applied.map(|object| (object, roll_after(&mut inner)))
    };
    match outcome {
        Ok((object, fault)) => {
            let response = (StatusCode::OK, Json(app.envelope(object))).into_response();
            after_write(&app, conn, fault, response).await
        }
        Err(Refusal::Limited(secs, words)) => {
            app.lock().counters.rate_limited();
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, words);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
            response
        }
        Err(Refusal::Write(refusal)) => {
            let (status, problems) = refused_write(refusal);
            errors_response(status, problems)
        }
    }
}

/// The id a bulk update's item names, and the problems of the rest of it; the problems
/// refuse the whole request under `bulk_refuse_invalid`.
pub(super) fn item_errors(
    app: &App,
    target: Target,
    mode: UpdateMode,
    item: &Map<String, Value>,
) -> (Option<String>, Vec<FieldError>) {
    let mut body = item.clone();
    let id = match body.remove("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id),
        Some(_) => Err("id must be the id of the record to update"),
        None => Err("id is required: a bulk update's item names its record"),
    };
    let mut errors = problems(app, target, &body, mode);
    match id {
        Ok(id) => (Some(id), errors),
        Err(words) => {
            errors.insert(0, FieldError::new("/id".into(), words));
            (None, errors)
        }
    }
}

/// One item of a bulk update job, as the single endpoint would take it: the record's id,
/// or the error in words.
pub(super) fn run_item(
    app: &App,
    inner: &mut Inner,
    (target, mode): (Target, UpdateMode),
    item: &Map<String, Value>,
) -> Result<String, String> {
    let (id, errors) = item_errors(app, target, mode, item);
    if let Some(first) = errors.into_iter().next() {
        return Err(bulk_refusal(first));
    }
    let id = id.unwrap_or_default();
    let mut body = item.clone();
    body.remove("id");
    match apply(app, inner, target, (&id, mode), &body) {
        Ok(_) => Ok(id),
        Err(Refusal::Limited(_, words)) => Err(words),
        Err(Refusal::Write(refusal)) => Err(refused_item(refusal)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_replaces_unless_told_not_to_and_a_patch_merges() {
        let (patch, put) = (Method::PATCH, Method::PUT);
        assert_eq!(mode(&patch, None), Ok(UpdateMode::Merge));
        assert!(mode(&patch, Some("replace=false")).is_err());
        assert_eq!(mode(&put, None), Ok(UpdateMode::Replace));
        assert_eq!(
            mode(&put, Some("a=1&replace=true")),
            Ok(UpdateMode::Replace)
        );
        assert_eq!(mode(&put, Some("replace=false")), Ok(UpdateMode::Merge));
        assert!(mode(&put, Some("replace=no")).is_err());
        assert!(mode(&put, Some("replace")).is_err());
    }

    #[test]
    fn updates_are_patch_and_put_of_one_record() {
        for path in ["/v1/customers/abc", "/v1/notes/abc", "/v1/messages/x"] {
            assert!(is_update(&Method::PATCH, path), "{path}");
            assert!(is_update(&Method::PUT, path), "{path}");
        }
        for path in [
            "/v1/customers/bulk",
            "/v1/customers",
            "/v1/conversations/abc/notes",
            "/v1/users/abc",
        ] {
            assert!(!is_update(&Method::PUT, path), "{path}");
        }
        assert!(!is_update(&Method::POST, "/v1/customers/abc"));
    }
}
