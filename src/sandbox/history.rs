//! The sandbox's conversation history endpoints: messages (`POST
//! /v1/conversations/{id}/messages`, `POST /v1/messages`, `GET /v1/messages/externalid={x}`,
//! bulk items) and notes (`POST` and `GET /v1/conversations/{id}/notes`, bulk items), on the
//! gate, envelopes and faults of `http.rs`.
//!
//! Where the live API is not known, the strictest plausible behaviour (README, "The
//! sandbox"): a repeated message externalId is taken (a blind re-send duplicates); 120
//! messages a window per customer unless the body carries `importedAt`, and 120 notes with
//! no exemption, beyond which a create is 429 (a bulk item an error); `createdAt` and
//! `createdBy` kept only when the sandbox is told the key holds `org.admin` (otherwise,
//! as the docs say of Kustomer, the key's user and the time of the create are used: the
//! fields are dropped from what is stored); the
//! message lookup answers only to the lower-case `externalid=` the spec writes. Notes are
//! listed oldest first, [`DEFAULT_PAGE_SIZE`] a page unless `pageSize` (1 to
//! [`MAX_PAGE_SIZE`]) says otherwise, `links.next` naming the next page while there is one.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::{HeaderValue, RETRY_AFTER};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::http::{
    App, ConnCtx, Inner, after_write, bulk_refusal, error, errors_response, invalid, read_object,
    refused_item, refused_write, roll_after, undefined_custom,
};
use super::store::percent_decode;
use super::thread::{ThreadKind, ThreadRecord};
use super::validate::{FieldError, ThreadRoute, validate_message, validate_note};

/// Notes a listing page holds when `pageSize` is not given.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most notes a listing page holds.
pub const MAX_PAGE_SIZE: usize = 100;

/// Why a checked message or note is not made.
enum Refusal {
    /// 429: the customer's limit; seconds until its window resets.
    Limited(u64, String),
}

/// The fields only a key whose user holds `org.admin` may set.
const ADMIN_FIELDS: [&str; 4] = ["createdAt", "createdBy", "modifiedAt", "modifiedBy"];

/// The body as stored: without `org.admin`, Kustomer sets `createdAt`, `createdBy`,
/// `modifiedAt` and `modifiedBy` itself (the time of the create, the key's user), so what
/// the body said is not kept.
pub(super) fn as_stored(app: &App, body: &Map<String, Value>) -> Map<String, Value> {
    let mut kept = body.clone();
    if !app.config.org_admin {
        for field in ADMIN_FIELDS {
            kept.remove(field);
        }
    }
    kept
}

/// What the API refuses in a message or note body: its shape, and a message's custom
/// attributes the org has not defined (strictest plausible: the docs do not say).
fn validate(
    app: &App,
    kind: ThreadKind,
    body: &Map<String, Value>,
    route: ThreadRoute,
) -> Vec<FieldError> {
    let object = Value::Object(body.clone());
    let mut errors = match kind {
        ThreadKind::Message => {
            let mut errors = validate_message(&object, route);
            errors.extend(undefined_custom(app, body));
            errors
        }
        ThreadKind::Note => validate_note(&object, route),
    };
    if app.config.org_admin {
        errors.extend(super::users::unknown_author(&app.users(), body));
    }
    errors
}

/// The checks that need the configuration and the counters: the admin role, then the
/// customer's limit (which counts the attempt).
fn admit(
    app: &App,
    inner: &mut Inner,
    kind: ThreadKind,
    customer: &str,
    body: &Map<String, Value>,
) -> Result<(), Refusal> {
    let exempt = kind == ThreadKind::Message && body.contains_key("importedAt");
    if exempt {
        return Ok(());
    }
    let elapsed = Instant::now().saturating_duration_since(app.started);
    let code = u8::from(kind == ThreadKind::Note);
    inner
        .per_customer
        .check(code, customer, elapsed)
        .map_err(|secs| {
            inner.counters.customer_limited += 1;
            let limit = app.config.per_customer_limit.unwrap_or_default();
            let exemption = match kind {
                ThreadKind::Message => " without importedAt",
                ThreadKind::Note => "",
            };
            Refusal::Limited(
                secs,
                format!(
                    "more than {limit} {}s{exemption} for customer {customer} in this \
                     window; retry after it resets",
                    kind.noun()
                ),
            )
        })
}

pub(super) fn thread_object(record: &ThreadRecord) -> Value {
    let mut attributes = record.body.clone();
    if let Some(external_id) = &record.external_id {
        attributes.insert("externalId".into(), json!(external_id));
    }
    if let Some(updated_at) = &record.updated_at {
        attributes.insert("updatedAt".into(), json!(updated_at));
    }
    json!({
        "type": record.kind.noun(),
        "id": record.id,
        "attributes": attributes,
        "relationships": {
            "conversation": { "data": { "type": "conversation", "id": record.conversation } },
            "customer": { "data": { "type": "customer", "id": record.customer } }
        }
    })
}

pub(super) async fn create_message_under(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    create(app, req, ThreadKind::Message, Some(id)).await
}

pub(super) async fn create_note_under(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    create(app, req, ThreadKind::Note, Some(id)).await
}

/// `POST /v1/messages`: the body names its conversation.
pub(super) async fn create_message(State(app): State<Arc<App>>, req: Request) -> Response {
    create(app, req, ThreadKind::Message, None).await
}

/// What a single create answers before anything is made, if it is refused.
enum Verdict {
    Refused(Response),
    Made(Value, super::faults::AfterWrite),
}

/// One message or note through the single endpoints: 404 when the path's conversation is
/// not held, 422 for the body (or a `conversation` naming none), 429, then made.
async fn create(app: Arc<App>, req: Request, kind: ThreadKind, under: Option<String>) -> Response {
    let conn = req.extensions().get::<ConnCtx>().cloned();
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let route = match under {
        Some(_) => ThreadRoute::UnderConversation,
        None => ThreadRoute::Standalone,
    };
    let mut errors = validate(&app, kind, &body, route);
    let named = body.get("conversation").and_then(Value::as_str);
    if let (Some(path), Some(named)) = (&under, named)
        && path != named
    {
        errors.push(FieldError::new(
            "/conversation".into(),
            format!("conversation {named} is not the conversation of the path, {path}"),
        ));
    }
    let verdict = {
        let mut inner = app.lock();
        let conversation = (under.as_deref().or(named), under.is_some());
        decide(&app, &mut inner, kind, conversation, &body, errors)
    };
    match verdict {
        Verdict::Refused(response) => response,
        Verdict::Made(answer, fault) => {
            let response = (app.created_status(), Json(answer)).into_response();
            after_write(&app, conn, fault, response).await
        }
    }
}

/// Under the lock: every check that needs the store, then the record made.
fn decide(
    app: &App,
    inner: &mut Inner,
    kind: ThreadKind,
    (conversation, under): (Option<&str>, bool),
    body: &Map<String, Value>,
    mut errors: Vec<FieldError>,
) -> Verdict {
    let customer = conversation
        .and_then(|c| inner.store.conversation_customer(c))
        .map(str::to_owned);
    if let (None, Some(id)) = (&customer, conversation) {
        let words = format!("conversation {id} not found");
        if under {
            return Verdict::Refused(error(StatusCode::NOT_FOUND, words));
        }
        if !errors.iter().any(|e| e.pointer == "/conversation") {
            errors.push(FieldError::new("/conversation".into(), words));
        }
    }
    let (Some(customer), Some(conversation), true) = (customer, conversation, errors.is_empty())
    else {
        return Verdict::Refused(invalid(errors));
    };
    match admit(app, inner, kind, &customer, body) {
        Err(Refusal::Limited(secs, words)) => {
            inner.counters.rate_limited();
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, words);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
            Verdict::Refused(response)
        }
        Ok(()) => match inner
            .store
            .insert_thread_item(kind, conversation, &as_stored(app, body))
        {
            Ok(record) => {
                let answer = app.envelope(thread_object(record));
                Verdict::Made(answer, roll_after(inner))
            }
            Err(refusal) => {
                let (status, problems) = refused_write(refusal);
                Verdict::Refused(errors_response(status, problems))
            }
        },
    }
}

/// What a bulk request refused whole (`bulk_refuse_invalid`) finds in an item.
pub(super) fn item_errors(
    app: &App,
    kind: ThreadKind,
    body: &Map<String, Value>,
) -> Vec<FieldError> {
    validate(app, kind, body, ThreadRoute::Standalone)
}

/// One item of a bulk job of messages or notes, as `POST /v1/messages` would take it: the
/// id made, or the error in words.
pub(super) fn run_item(
    app: &App,
    inner: &mut Inner,
    kind: ThreadKind,
    body: &Map<String, Value>,
) -> Result<String, String> {
    if let Some(first) = validate(app, kind, body, ThreadRoute::Standalone)
        .into_iter()
        .next()
    {
        return Err(bulk_refusal(first));
    }
    let conversation = body
        .get("conversation")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(customer) = inner.store.conversation_customer(conversation) else {
        return Err(format!(
            "/conversation: conversation {conversation} not found"
        ));
    };
    let customer = customer.to_owned();
    match admit(app, inner, kind, &customer, body) {
        Err(Refusal::Limited(_, words)) => Err(words),
        Ok(()) => inner
            .store
            .insert_thread_item(kind, conversation, &as_stored(app, body))
            .map(|record| record.id.clone())
            .map_err(refused_item),
    }
}

/// `GET /v1/messages/externalid={x}` (the value percent-decoded), or a bare id.
pub(super) async fn lookup_message(State(app): State<Arc<App>>, req: Request) -> Response {
    let segment = req
        .uri()
        .path()
        .strip_prefix("/v1/messages/")
        .unwrap_or_default();
    let (id, external_id) = match segment.split_once('=') {
        Some(("externalid", raw)) => (None, percent_decode(raw)),
        Some((key, _)) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("messages cannot be looked up by {key} (the lookup is externalid=)"),
            );
        }
        None => (percent_decode(segment), None),
    };
    if id.is_none() && external_id.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "the lookup value is not valid percent-encoded UTF-8",
        );
    }
    let found = app
        .lock()
        .store
        .threads()
        .find_message(id.as_deref(), external_id.as_deref())
        .map(thread_object);
    match found {
        Some(object) => (StatusCode::OK, Json(app.envelope(object))).into_response(),
        None => error(StatusCode::NOT_FOUND, "message not found"),
    }
}

/// `page` and `pageSize` of a listing's query; the words of a 400 when they are not
/// whole numbers in range.
pub(super) fn paging(query: Option<&str>) -> Result<(usize, usize), String> {
    let (mut page, mut size) = (1, DEFAULT_PAGE_SIZE);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = value.parse::<usize>();
        match (key, number) {
            ("page", Ok(n)) if n >= 1 => page = n,
            ("pageSize", Ok(n)) if (1..=MAX_PAGE_SIZE).contains(&n) => size = n,
            ("page", _) => return Err(format!("page must be a whole number from 1: {value}")),
            ("pageSize", _) => {
                return Err(format!(
                    "pageSize must be a whole number from 1 to {MAX_PAGE_SIZE}: {value}"
                ));
            }
            _ => {}
        }
    }
    Ok((page, size))
}

/// `GET /v1/conversations/{id}/notes?page=N&pageSize=M`: the conversation's notes, oldest
/// first, `{"data": [...], "links": {self, first, prev, next}, "meta": {page, pageSize}}`;
/// `links.next` is null on the last page. 404 when the conversation is not held.
pub(super) async fn list_notes(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (page, size) = match paging(req.uri().query()) {
        Ok(paging) => paging,
        Err(words) => return error(StatusCode::BAD_REQUEST, words),
    };
    let inner = app.lock();
    if inner.store.conversation_customer(&id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("conversation {id} not found"),
        );
    }
    let listed = inner.store.threads().notes_page(&id, page, size);
    let data: Vec<Value> = listed.items.iter().map(|r| thread_object(r)).collect();
    let path = format!("/v1/conversations/{id}/notes");
    page_answer(&path, data, (page, size), listed.more)
}

/// One page of a listing at `path`: `{"data": [...], "links": {self, first, prev, next},
/// "meta": {page, pageSize}}`, `links.next` null on the last page; 200.
pub(super) fn page_answer(
    path: &str,
    data: Vec<Value>,
    (page, size): (usize, usize),
    more: bool,
) -> Response {
    let link = |page: usize| format!("{path}?page={page}&pageSize={size}");
    let answer = json!({
        "data": data,
        "links": {
            "self": link(page),
            "first": link(1),
            "prev": (page > 1).then(|| link(page - 1)),
            "next": more.then(|| link(page + 1)),
        },
        "meta": { "page": page, "pageSize": size },
    });
    (StatusCode::OK, Json(answer)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_reads_page_and_size_and_refuses_what_is_out_of_range() {
        assert_eq!(paging(None), Ok((1, DEFAULT_PAGE_SIZE)));
        assert_eq!(paging(Some("page=3&pageSize=2&sort=x")), Ok((3, 2)));
        for bad in [
            "page=0",
            "page=x",
            "pageSize=0",
            "pageSize=101",
            "pageSize=",
        ] {
            assert!(paging(Some(bad)).is_err(), "{bad}");
        }
    }
}
