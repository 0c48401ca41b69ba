//! The sandbox's HTTP face: the axum router, the gate every API request passes (arrival
//! count, rate limit, revoked key, auth, latency, before-write faults, answer counting,
//! `x-ratelimit-*` headers), the handlers of the API routes (single creates, lookups, bulk
//! jobs of creates and of updates) and the two admin routes, the after-write faults, and
//! the shape of every answer (envelopes and `errors` bodies).
//! The shared state [`App`] sits behind one `std::sync::Mutex`, never held across an await.
//! Messages and notes have their handlers in `history.rs`, updates (single, and the items
//! of bulk update jobs) in `update.rs`, on the helpers here.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, HeaderName, HeaderValue, RETRY_AFTER};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use rand::Rng;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::SandboxConfig;
use super::companies;
use super::delete;
use super::faults::{
    AfterWrite, BeforeWrite, FaultConfig, Faults, RateLimiter, RateVerdict, WindowLimiter,
};
use super::history;
use super::stats::{Arrival, Counters, Stats};
use super::store::UpdateMode;
use super::store::{Conflict, LookupError, Records, Store, WriteError, attributes, parse_lookup};
use super::tags;
use super::thread::ThreadKind;
use super::update::{self, Target};
use super::users::{self, SandboxUser};
use super::validate::{FieldError, validate_conversation, validate_customer};

/// How long a hanging answer hangs.
const HANG: Duration = Duration::from_secs(600);
/// Largest body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Per-connection context, put in every request's extensions by the accept loop: cancelling
/// `token` makes the accept loop drop the connection without an answer.
#[derive(Clone, Debug)]
pub(crate) struct ConnCtx {
    pub token: CancellationToken,
}

/// Everything behind the mutex.
pub(super) struct Inner {
    pub store: Store,
    pub counters: Counters,
    faults: Faults,
    rate: RateLimiter,
    /// The per-customer limits on messages and notes.
    pub per_customer: WindowLimiter,
    /// The per-object limits on updates, by record id.
    pub per_object: WindowLimiter,
    jobs: std::collections::HashMap<String, BulkJob>,
}

/// Which endpoint a bulk job came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BulkKind {
    Customers,
    Conversations,
    Messages,
    Notes,
    /// `PUT /v1/customers/bulk` or `PUT /v1/conversations/bulk`: items name their record
    /// by `id`, and its results say `updated`.
    Update(Target, UpdateMode),
    /// `DELETE /v1/customers/bulk?ids=`: one item `{"id"}` per id (see `delete.rs`).
    CustomerDeletes,
    /// `POST /v1/companies/bulk` (see `companies.rs`).
    Companies,
}

impl BulkKind {
    /// What a bulk result says of an item that succeeded.
    fn done_status(self) -> &'static str {
        match self {
            BulkKind::Update(..) => "updated",
            BulkKind::CustomerDeletes => "deleted",
            BulkKind::Customers
            | BulkKind::Conversations
            | BulkKind::Messages
            | BulkKind::Notes
            | BulkKind::Companies => "created",
        }
    }
}

/// A bulk job: queued for the first half of the configured delay, running for the second,
/// then run at once.
struct BulkJob {
    kind: BulkKind,
    items: Vec<Map<String, Value>>,
    running: bool,
    /// Filled when the job has run: one result per item, in order.
    results: Option<Vec<ItemResult>>,
}

/// What became of one item of a bulk job.
struct ItemResult {
    client_ref: Option<String>,
    /// The id made, or the error in words, as Kustomer's bulk reference shows it: a text
    /// with no status (`"duplicate detected"`), not the single endpoint's error object.
    outcome: Result<String, String>,
}

/// A bulk item refused as a duplicate, in the words of Kustomer's bulk reference.
const BULK_DUPLICATE: &str = "duplicate detected";

/// A bulk item refused for its body: the problem in words, with no status.
pub(super) fn bulk_refusal(problem: FieldError) -> String {
    format!("{}: {}", problem.pointer, problem.detail)
}

/// The sandbox's shared state.
pub(crate) struct App {
    pub(super) config: SandboxConfig,
    pub(super) started: Instant,
    pub shutdown: CancellationToken,
    inner: Mutex<Inner>,
    /// The org's users; never locked while `inner` is wanted (validation reads it with
    /// `inner` held).
    users: Mutex<Vec<SandboxUser>>,
}

impl App {
    pub fn new(config: SandboxConfig, store: Store, shutdown: CancellationToken) -> Self {
        let inner = Inner {
            store,
            counters: Counters::new(config.rate_window),
            faults: Faults::new(config.faults.clone()),
            rate: RateLimiter::new(config.rpm, config.rate_window),
            per_customer: WindowLimiter::new(config.per_customer_limit, config.rate_window),
            per_object: WindowLimiter::new(config.per_object_update_limit, config.rate_window),
            jobs: std::collections::HashMap::new(),
        };
        App {
            users: Mutex::new(config.users.clone()),
            config,
            started: Instant::now(),
            shutdown,
            inner: Mutex::new(inner),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn users(&self) -> MutexGuard<'_, Vec<SandboxUser>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        let threads = inner.store.threads();
        inner.counters.snapshot([
            inner.store.customer_count(),
            inner.store.conversation_count(),
            threads.message_count(),
            threads.note_count(),
        ])
    }

    pub fn records(&self) -> Records {
        self.lock().store.records()
    }

    pub fn allowed_by_window(&self) -> std::collections::BTreeMap<u64, u64> {
        self.lock().rate.allowed_by_window()
    }

    pub fn set_faults(&self, faults: FaultConfig) {
        self.lock().faults.set(faults);
    }

    /// Latency plus uniform jitter in `[0, jitter]`.
    fn delay(&self) -> Duration {
        let jitter = u64::try_from(self.config.jitter.as_nanos()).unwrap_or(u64::MAX);
        let extra = if jitter == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter)
        };
        self.config
            .latency
            .saturating_add(Duration::from_nanos(extra))
    }

    /// A record in the envelope of the configured style.
    pub(super) fn envelope(&self, object: Value) -> Value {
        if self.config.spec_style {
            object
        } else {
            json!({ "data": object })
        }
    }

    pub(super) fn created_status(&self) -> StatusCode {
        if self.config.spec_style {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        }
    }
}

pub(crate) fn router(app: Arc<App>) -> Router {
    let mut router = Router::new()
        .route("/v1/customers", post(create_customer))
        .route(
            "/v1/customers/{lookup}",
            get(lookup_customer)
                .patch(update::customer)
                .put(update::customer)
                .delete(delete::customer),
        )
        .route("/v1/conversations", post(create_conversation))
        .route(
            "/v1/conversations/{lookup}",
            get(lookup_conversation)
                .patch(update::conversation)
                .put(update::conversation)
                .delete(delete::conversation),
        )
        .route(
            "/v1/conversations/{id}/messages",
            post(history::create_message_under),
        )
        .route(
            "/v1/conversations/{id}/notes",
            post(history::create_note_under).get(history::list_notes),
        )
        .route("/v1/conversations/{id}/tags", post(tags::append))
        .route("/v1/tags", get(tags::list))
        .route("/v1/messages", post(history::create_message))
        .route(
            "/v1/messages/{lookup}",
            get(history::lookup_message).patch(update::message),
        )
        .route("/v1/notes/{id}", patch(update::note))
        .route("/v1/users", get(users::list_users).post(users::create_user))
        .route(
            "/v1/companies",
            post(companies::create).get(companies::lookup),
        );
    if !app.config.without_bulk {
        router = router
            .route(
                "/v1/customers/bulk",
                post(submit_customers)
                    .put(update_customers)
                    .delete(delete::customers_in_bulk),
            )
            .route(
                "/v1/conversations/bulk",
                post(submit_conversations).put(update_conversations),
            )
            .route("/v1/messages/bulk", post(submit_messages))
            .route("/v1/notes/bulk", post(submit_notes))
            .route("/v1/companies/bulk", post(submit_companies))
            .route("/v1/bulk/{id}", get(bulk_status))
            .route("/v1/bulk/{id}/batches", get(bulk_batches));
    }
    router
        .route("/__stats", get(admin_stats))
        .route("/__records", get(admin_records))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), api_gate))
        .with_state(app)
}

/// One problem in an `errors` body.
pub(super) struct ApiError {
    pub detail: String,
    pub pointer: Option<String>,
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError {
            detail: e.detail,
            pointer: Some(e.pointer),
        }
    }
}

impl From<&Conflict> for ApiError {
    fn from(c: &Conflict) -> Self {
        ApiError {
            detail: c.detail(),
            pointer: Some(c.pointer.clone()),
        }
    }
}

/// Why a create made no record, as its answer's status and problems: the first problem is
/// what a bulk item's result says.
pub(super) fn refused_write(refusal: WriteError) -> (StatusCode, Vec<ApiError>) {
    match refusal {
        WriteError::Conflicts(conflicts) => (
            StatusCode::CONFLICT,
            conflicts.iter().map(ApiError::from).collect(),
        ),
        WriteError::Invalid(problem) => (StatusCode::UNPROCESSABLE_ENTITY, vec![problem.into()]),
        // Nothing was made: to the client it is a failure before the write, to retry.
        WriteError::NotFound(words) => (
            StatusCode::NOT_FOUND,
            vec![ApiError {
                detail: words,
                pointer: None,
            }],
        ),
        WriteError::Unrecorded(cause) => (
            StatusCode::SERVICE_UNAVAILABLE,
            vec![ApiError {
                detail: format!("the sandbox could not write its records file: {cause}"),
                pointer: None,
            }],
        ),
    }
}

/// A bulk item's error for a create that made no record, in words with no status, as
/// Kustomer's reference shows them (`"duplicate detected"`).
pub(super) fn refused_item(refusal: WriteError) -> String {
    match refusal {
        WriteError::Conflicts(_) => BULK_DUPLICATE.to_string(),
        WriteError::Invalid(problem) => bulk_refusal(problem),
        WriteError::NotFound(words) => words,
        WriteError::Unrecorded(cause) => {
            format!("the sandbox could not write its records file: {cause}")
        }
    }
}

/// `{"errors": [{status, code, title, detail, source?}, ...]}`.
pub(super) fn errors_response(status: StatusCode, items: Vec<ApiError>) -> Response {
    let errors: Vec<Value> = items
        .into_iter()
        .map(|item| error_object(status, item))
        .collect();
    (status, Json(json!({ "errors": errors }))).into_response()
}

/// One `{status, code, title, detail, source?}` error object.
fn error_object(status: StatusCode, item: ApiError) -> Value {
    let (code, title) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", "Bad Request"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "Unauthorized"),
        StatusCode::FORBIDDEN => ("forbidden", "Forbidden"),
        StatusCode::NOT_FOUND => ("not_found", "Not Found"),
        StatusCode::CONFLICT => ("duplicate", "Duplicate"),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid", "Validation failed"),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "Too Many Requests"),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "Service Unavailable"),
        _ => ("internal", "Internal Server Error"),
    };
    let mut error = json!({
        "status": status.as_u16().to_string(),
        "code": code,
        "title": title,
        "detail": item.detail,
    });
    if let Some(pointer) = item.pointer {
        error["source"] = json!({ "pointer": pointer });
    }
    error
}

pub(super) fn error(status: StatusCode, detail: impl Into<String>) -> Response {
    errors_response(
        status,
        vec![ApiError {
            detail: detail.into(),
            pointer: None,
        }],
    )
}

/// Whether the request carries an acceptable bearer token. Compares in constant time.
fn authorized(expected: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return false;
    }
    match expected {
        None => true,
        Some(expected) => {
            let (a, b) = (expected.as_bytes(), token.as_bytes());
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        }
    }
}

enum Gate {
    RateLimited,
    Revoked,
    Unauthorized,
    Pass,
}

/// The path every API request takes before and after its handler; `/__*` goes straight
/// through.
async fn api_gate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/__") {
        return next.run(req).await;
    }
    let route = match req.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", req.method(), path.as_str()),
        None => "other".to_owned(),
    };
    let path = req.uri().path();
    let arrival = if req.method() == Method::POST && is_create_path(path) {
        Arrival::Create
    } else if update::is_update(req.method(), path) {
        Arrival::Update
    } else {
        Arrival::Other
    };
    let authorized = authorized(app.config.token.as_deref(), req.headers());

    let (gate, rate) = {
        let mut inner = app.lock();
        let now = Instant::now();
        inner.counters.arrive(now, arrival);
        inner.faults.arrive();
        let rate = inner.rate.check(now.saturating_duration_since(app.started));
        let gate = if rate.is_some_and(|r| !r.allowed) {
            inner.counters.rate_limited();
            Gate::RateLimited
        } else if inner.faults.revoked() {
            inner.counters.faults.revoked += 1;
            Gate::Revoked
        } else if !authorized {
            Gate::Unauthorized
        } else {
            Gate::Pass
        };
        (gate, rate)
    };

    let mut response = match gate {
        Gate::RateLimited => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded for this organization; retry after the window resets",
            );
            let wait = rate.map_or(1, |r| r.reset_secs.max(1));
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(wait));
            response
        }
        Gate::Revoked => error(StatusCode::UNAUTHORIZED, "the API key has been revoked"),
        Gate::Unauthorized => error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid API key: send Authorization: Bearer <API key>",
        ),
        Gate::Pass => {
            let delay = app.delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let before = {
                let mut inner = app.lock();
                let fault = inner.faults.roll_before();
                match fault {
                    BeforeWrite::Busy => inner.counters.faults.busy += 1,
                    BeforeWrite::Fail => inner.counters.faults.fail += 1,
                    BeforeWrite::None => {}
                }
                fault
            };
            match before {
                BeforeWrite::Busy => {
                    let mut response = error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the service is temporarily unavailable",
                    );
                    response
                        .headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from(1u32));
                    response
                }
                BeforeWrite::Fail => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
                BeforeWrite::None => next.run(req).await,
            }
        }
    };
    if let Some(rate) = rate {
        add_rate_headers(response.headers_mut(), rate);
    }
    let status = response.status().as_u16();
    app.lock().counters.answered(&route, status);
    tracing::debug!(target: "sandbox", %route, status, "answered");
    response
}

/// Whether a POST to `path` is a single create (counted in `creates_total`).
fn is_create_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/customers" | "/v1/conversations" | "/v1/messages" | "/v1/companies"
    ) || (path.starts_with("/v1/conversations/")
        && (path.ends_with("/messages") || path.ends_with("/notes")))
}

fn add_rate_headers(headers: &mut HeaderMap, rate: RateVerdict) {
    headers.insert(
        HeaderName::from_static("x-ratelimit-limit"),
        HeaderValue::from(rate.limit),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-remaining"),
        HeaderValue::from(rate.remaining),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-reset"),
        HeaderValue::from(rate.reset_secs),
    );
}

/// Reads the body as a JSON object, or answers 400.
pub(super) async fn read_object(body: Body) -> Result<Map<String, Value>, Response> {
    let bytes = to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| error(StatusCode::BAD_REQUEST, "the body could not be read"))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

pub(super) fn invalid(errors: Vec<FieldError>) -> Response {
    errors_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        errors.into_iter().map(ApiError::from).collect(),
    )
}

pub(super) fn customer_object(record: &super::store::CustomerRecord) -> Value {
    json!({ "type": "customer", "id": record.id, "attributes": attributes(record) })
}

pub(super) fn conversation_object(record: &super::store::ConversationRecord) -> Value {
    json!({
        "type": "conversation",
        "id": record.id,
        "attributes": attributes(record),
        "relationships": {
            "customer": { "data": { "type": "customer", "id": record.customer } }
        }
    })
}

/// What the API refuses in a customer body: its shape, and custom attributes the org has
/// not defined.
pub(super) fn customer_errors(app: &App, body: &Map<String, Value>) -> Vec<FieldError> {
    let mut errors = validate_customer(&Value::Object(body.clone()));
    errors.extend(undefined_custom(app, body));
    errors
}

/// Custom attributes of a body that the org has not defined (when it defines a list):
/// customers, and messages, whose `custom` is the org's as well.
pub(super) fn undefined_custom(app: &App, body: &Map<String, Value>) -> Vec<FieldError> {
    let (Some(known), Some(Value::Object(custom))) =
        (&app.config.custom_attributes, body.get("custom"))
    else {
        return Vec::new();
    };
    custom
        .keys()
        .filter(|name| !known.contains(name))
        .map(|name| {
            FieldError::new(
                format!("/custom/{}", super::validate::escape_pointer(name)),
                format!("custom attribute {name} is not defined for this org"),
            )
        })
        .collect()
}

async fn create_customer(State(app): State<Arc<App>>, req: Request) -> Response {
    let conn = req.extensions().get::<ConnCtx>().cloned();
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let errors = customer_errors(&app, &body);
    if !errors.is_empty() {
        return invalid(errors);
    }
    let outcome = {
        let mut inner = app.lock();
        let created = inner
            .store
            .insert_customer(&body)
            .map(|record| app.envelope(customer_object(record)));
        created.map(|answer| (answer, roll_after(&mut inner)))
    };
    match outcome {
        Ok((answer, fault)) => {
            let response = (app.created_status(), Json(answer)).into_response();
            after_write(&app, conn, fault, response).await
        }
        Err(refusal) => {
            let (status, problems) = refused_write(refusal);
            errors_response(status, problems)
        }
    }
}

/// What a valid conversation body names that the org does not hold: with `tag_ids_only`,
/// `tags` that are no ids of its tags; `assignedUsers` that are no ids of its users.
pub(super) fn unknown_references(
    app: &App,
    inner: &Inner,
    body: &Map<String, Value>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if app.config.tag_ids_only {
        errors.extend(tags::unknown_ids(inner.store.tags(), body));
    }
    errors.extend(super::users::unknown_assignees(&app.users(), body));
    errors
}

async fn create_conversation(State(app): State<Arc<App>>, req: Request) -> Response {
    let conn = req.extensions().get::<ConnCtx>().cloned();
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut errors = validate_conversation(&Value::Object(body.clone()));
    let outcome = {
        let mut inner = app.lock();
        if !errors.iter().any(|e| e.pointer == "/customer") {
            errors.extend(inner.store.missing_customer(&body));
        }
        if errors.is_empty() {
            errors.extend(unknown_references(&app, &inner, &body));
        }
        if errors.is_empty() {
            let created = inner
                .store
                .insert_conversation(&body)
                .map(|record| app.envelope(conversation_object(record)));
            Some(created.map(|answer| (answer, roll_after(&mut inner))))
        } else {
            None
        }
    };
    match outcome {
        None => invalid(errors),
        Some(Err(refusal)) => {
            let (status, problems) = refused_write(refusal);
            errors_response(status, problems)
        }
        Some(Ok((answer, fault))) => {
            let response = (app.created_status(), Json(answer)).into_response();
            after_write(&app, conn, fault, response).await
        }
    }
}

/// Most items a bulk request takes.
const BULK_MAX_ITEMS: usize = 100;

async fn submit_customers(State(app): State<Arc<App>>, req: Request) -> Response {
    submit_bulk(app, req, BulkKind::Customers).await
}

async fn submit_conversations(State(app): State<Arc<App>>, req: Request) -> Response {
    submit_bulk(app, req, BulkKind::Conversations).await
}

async fn submit_messages(State(app): State<Arc<App>>, req: Request) -> Response {
    submit_bulk(app, req, BulkKind::Messages).await
}

async fn submit_notes(State(app): State<Arc<App>>, req: Request) -> Response {
    submit_bulk(app, req, BulkKind::Notes).await
}

async fn submit_companies(State(app): State<Arc<App>>, req: Request) -> Response {
    submit_bulk(app, req, BulkKind::Companies).await
}

async fn update_customers(State(app): State<Arc<App>>, req: Request) -> Response {
    submit_updates(app, req, Target::Customer).await
}

async fn update_conversations(State(app): State<Arc<App>>, req: Request) -> Response {
    submit_updates(app, req, Target::Conversation).await
}

/// Queues a bulk update job, in the mode its query asks for (as a single `PUT`'s).
async fn submit_updates(app: Arc<App>, req: Request, target: Target) -> Response {
    match update::mode(req.method(), req.uri().query()) {
        Ok(mode) => submit_bulk(app, req, BulkKind::Update(target, mode)).await,
        Err(words) => error(StatusCode::BAD_REQUEST, words),
    }
}

/// A bulk request's items: 1 to 100 objects, each `_clientRef` a text of 1 to 255
/// characters unique in the request; or the 400 that refuses the request whole.
async fn bulk_items(body: Body) -> Result<Vec<Map<String, Value>>, Response> {
    let items = match to_bytes(body, MAX_BODY).await {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Array(items)) => items,
            _ => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "the body must be a JSON array",
                ));
            }
        },
        Err(_) => return Err(error(StatusCode::BAD_REQUEST, "the body could not be read")),
    };
    if items.is_empty() || items.len() > BULK_MAX_ITEMS {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("a bulk request takes 1 to {BULK_MAX_ITEMS} items"),
        ));
    }
    let mut bodies = Vec::with_capacity(items.len());
    let mut refs = std::collections::HashSet::new();
    for (index, item) in items.into_iter().enumerate() {
        let Value::Object(body) = item else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("item {index} must be a JSON object"),
            ));
        };
        match body.get("_clientRef") {
            None => {}
            Some(Value::String(reference))
                if !reference.is_empty()
                    && reference.chars().count() <= 255
                    && refs.insert(reference.clone()) => {}
            Some(_) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "item {index}: _clientRef must be a text of 1 to 255 characters, \
                         unique in the request"
                    ),
                ));
            }
        }
        bodies.push(body);
    }
    Ok(bodies)
}

/// Queues a bulk job: an array of 1 to 100 bodies, each with an optional `_clientRef`
/// (unique in the request, at most 255 characters). Items are validated when the job runs,
/// each on its own; only a request that is not such an array is refused whole (400). The
/// job runs after the configured delay whether or not anyone polls. After-write faults
/// strike after the job is queued, as for a single create.
async fn submit_bulk(app: Arc<App>, req: Request, kind: BulkKind) -> Response {
    let conn = req.extensions().get::<ConnCtx>().cloned();
    let bodies = match bulk_items(req.into_body()).await {
        Ok(bodies) => bodies,
        Err(response) => return response,
    };
    if app.config.bulk_refuse_invalid
        && let Some((index, problem)) = bodies.iter().enumerate().find_map(|(index, body)| {
            let mut body = body.clone();
            body.remove("_clientRef");
            let problems = match kind {
                BulkKind::Customers => customer_errors(&app, &body),
                BulkKind::Conversations => validate_conversation(&Value::Object(body)),
                BulkKind::Messages => history::item_errors(&app, ThreadKind::Message, &body),
                BulkKind::Notes => history::item_errors(&app, ThreadKind::Note, &body),
                BulkKind::Update(target, mode) => update::item_errors(&app, target, mode, &body).1,
                BulkKind::CustomerDeletes => Vec::new(),
                BulkKind::Companies => companies::validate_company(&body),
            };
            problems.into_iter().next().map(|problem| (index, problem))
        })
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("item {index}: {}: {}", problem.pointer, problem.detail),
        );
    }
    queue_job(app, conn, kind, bodies).await
}

/// Queues a job of these items and answers its submit (201 queued, or 200 for messages);
/// the job runs after the configured delay whether or not anyone polls. After-write faults
/// strike after the job is queued, as for a single create.
pub(super) async fn queue_job(
    app: Arc<App>,
    conn: Option<ConnCtx>,
    kind: BulkKind,
    bodies: Vec<Map<String, Value>>,
) -> Response {
    let (id, count, fault) = {
        let mut inner = app.lock();
        // An id like a record's: unique across sandboxes, so that a resumed rehearsal
        // that polls a job of the sandbox before never finds another job under its id.
        let id = inner.store.new_id();
        let count = bodies.len();
        inner.jobs.insert(
            id.clone(),
            BulkJob {
                kind,
                items: bodies,
                results: None,
                running: false,
            },
        );
        (id, count, roll_after(&mut inner))
    };
    let runner = Arc::clone(&app);
    let job = id.clone();
    tokio::spawn(async move {
        let half = runner.config.bulk_delay / 2;
        tokio::select! {
            () = tokio::time::sleep(half) => {}
            () = runner.shutdown.cancelled() => return,
        }
        if let Some(job) = runner.lock().jobs.get_mut(&job) {
            job.running = true;
        }
        tokio::select! {
            () = tokio::time::sleep(runner.config.bulk_delay - half) => run_bulk_job(&runner, &job),
            () = runner.shutdown.cancelled() => {}
        }
    });
    let answer = app.envelope(json!({
        "type": "bulk",
        "id": id,
        "attributes": { "status": "queued", "count": count },
    }));
    // The message bulk endpoint's spec says 200 where the other bulk creates say 201.
    let status = if kind == BulkKind::Messages {
        StatusCode::OK
    } else {
        app.created_status()
    };
    let response = (status, Json(answer)).into_response();
    after_write(&app, conn, fault, response).await
}

/// Runs a queued job: each item as the single endpoint would take it.
fn run_bulk_job(app: &App, id: &str) {
    let mut inner = app.lock();
    let Some(job) = inner.jobs.get_mut(id) else {
        return;
    };
    let kind = job.kind;
    let items = std::mem::take(&mut job.items);
    let mut results = Vec::with_capacity(items.len());
    for mut body in items {
        let client_ref = match body.remove("_clientRef") {
            Some(Value::String(reference)) => Some(reference),
            _ => None,
        };
        let outcome = match kind {
            BulkKind::Messages => history::run_item(app, &mut inner, ThreadKind::Message, &body),
            BulkKind::Notes => history::run_item(app, &mut inner, ThreadKind::Note, &body),
            BulkKind::Update(target, mode) => {
                update::run_item(app, &mut inner, (target, mode), &body)
            }
            BulkKind::CustomerDeletes => delete::run_item(&mut inner, &body),
            BulkKind::Companies => companies::run_item(&mut inner, &body),
            BulkKind::Customers => {
                let errors = customer_errors(app, &body);
                if let Some(first) = errors.into_iter().next() {
                    Err(bulk_refusal(first))
                } else {
                    inner
                        .store
                        .insert_customer(&body)
                        .map(|record| record.id.clone())
                        .map_err(refused_item)
                }
            }
            BulkKind::Conversations => {
                let mut errors = validate_conversation(&Value::Object(body.clone()));
                if !errors.iter().any(|e| e.pointer == "/customer") {
                    errors.extend(inner.store.missing_customer(&body));
                }
                if errors.is_empty() {
                    errors.extend(unknown_references(app, &inner, &body));
                }
                if let Some(first) = errors.into_iter().next() {
                    Err(bulk_refusal(first))
                } else {
                    inner
                        .store
                        .insert_conversation(&body)
                        .map(|record| record.id.clone())
                        .map_err(refused_item)
                }
            }
        };
        results.push(ItemResult {
            client_ref,
            outcome,
        });
    }
    if let Some(job) = inner.jobs.get_mut(id) {
        job.results = Some(results);
    }
}

/// `GET /v1/bulk/{id}`: queued until the job has run, then complete (finished, not
/// necessarily succeeded).
async fn bulk_status(
    State(app): State<Arc<App>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let inner = app.lock();
    let Some(job) = inner.jobs.get(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no bulk job {id}"));
    };
    let status = if job.results.is_some() {
        "complete"
    } else if job.running {
        "running"
    } else {
        "queued"
    };
    Json(app.envelope(json!({
        "type": "bulk",
        "id": id,
        "attributes": { "status": status },
    })))
    .into_response()
}

/// Items per batch of a job's results: a job of more items has several batches.
const BULK_BATCH_ITEMS: usize = 50;

/// `GET /v1/bulk/{id}/batches`: the job's batches (of [`BULK_BATCH_ITEMS`] items), each with
/// counts, the ids made, the errors (in words, as the reference shows a result's) and, when
/// every item of the job carried a `_clientRef`, a result per item. Empty while the job has
/// not run.
async fn bulk_batches(
    State(app): State<Arc<App>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let inner = app.lock();
    let Some(job) = inner.jobs.get(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no bulk job {id}"));
    };
    let Some(results) = &job.results else {
        return Json(json!({ "data": [] })).into_response();
    };
    let with_refs = results.iter().all(|r| r.client_ref.is_some());
    let done = job.kind.done_status();
    let batches: Vec<Value> = results
        .chunks(BULK_BATCH_ITEMS)
        .enumerate()
        .map(|(index, batch)| {
            let object_ids: Vec<&String> =
                batch.iter().filter_map(|r| r.outcome.as_ref().ok()).collect();
            let errors: Vec<&String> =
                batch.iter().filter_map(|r| r.outcome.as_ref().err()).collect();
            let mut attributes = json!({
                "successCount": object_ids.len(),
                "failureCount": errors.len(),
                "objectIds": object_ids,
                "errors": errors,
            });
            if with_refs {
                attributes["results"] = batch
                    .iter()
                    .map(|r| match &r.outcome {
                        Ok(object_id) => json!({
                            "_clientRef": r.client_ref, "objectId": object_id, "status": done
                        }),
                        Err(problem) => json!({
                            "_clientRef": r.client_ref, "status": "error", "error": problem
                        }),
                    })
                    .collect();
            }
            json!({ "type": "batch", "id": format!("{id}-{}", index + 1), "attributes": attributes })
        })
        .collect();
    Json(json!({ "data": batches })).into_response()
}

/// Rolls and counts the after-write fault of a successful create.
pub(super) fn roll_after(inner: &mut Inner) -> AfterWrite {
    let fault = inner.faults.roll_after();
    let counts = &mut inner.counters.faults;
    match fault {
        AfterWrite::Fail => counts.fail_after_write += 1,
        AfterWrite::Drop => counts.drop_after_write += 1,
        AfterWrite::Hang => counts.hang_after_write += 1,
        AfterWrite::None => {}
    }
    fault
}

pub(super) async fn after_write(
    app: &App,
    conn: Option<ConnCtx>,
    fault: AfterWrite,
    answer: Response,
) -> Response {
    match fault {
        AfterWrite::None => answer,
        AfterWrite::Fail => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        AfterWrite::Drop => drop_connection(app, conn).await,
        AfterWrite::Hang => {
            tokio::select! {
                () = tokio::time::sleep(HANG) => {}
                () = app.shutdown.cancelled() => {}
            }
            drop_connection(app, conn).await
        }
    }
}

/// Has the accept loop close the connection, then waits for the end: the future is dropped
/// with the connection. A 500 comes out only when there is no connection to drop (the
/// router served outside the accept loop) or at shutdown.
async fn drop_connection(app: &App, conn: Option<ConnCtx>) -> Response {
    if let Some(conn) = conn {
        conn.token.cancel();
        app.shutdown.cancelled().await;
    }
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

pub(super) fn lookup_error(e: LookupError, what: &str) -> Response {
    match e {
        LookupError::BadEncoding => error(
            StatusCode::BAD_REQUEST,
            "the lookup value is not valid percent-encoded UTF-8",
        ),
        LookupError::UnknownKey(key) => error(
            StatusCode::NOT_FOUND,
            format!("{what} cannot be looked up by {key}"),
        ),
    }
}

async fn lookup_customer(State(app): State<Arc<App>>, req: Request) -> Response {
    let segment = req
        .uri()
        .path()
        .strip_prefix("/v1/customers/")
        .unwrap_or_default();
    let lookup = match parse_lookup(segment, true) {
        Ok(lookup) => lookup,
        Err(e) => return lookup_error(e, "customers"),
    };
    let found = app.lock().store.find_customer(&lookup).map(customer_object);
    match found {
        Some(object) => (StatusCode::OK, Json(app.envelope(object))).into_response(),
        None => error(StatusCode::NOT_FOUND, "customer not found"),
    }
}

async fn lookup_conversation(State(app): State<Arc<App>>, req: Request) -> Response {
    let segment = req
        .uri()
        .path()
        .strip_prefix("/v1/conversations/")
        .unwrap_or_default();
    let lookup = match parse_lookup(segment, false) {
        Ok(lookup) => lookup,
        Err(e) => return lookup_error(e, "conversations"),
    };
    let found = app
        .lock()
        .store
        .find_conversation(&lookup)
        .map(conversation_object);
    match found {
        Some(object) => (StatusCode::OK, Json(app.envelope(object))).into_response(),
        None => error(StatusCode::NOT_FOUND, "conversation not found"),
    }
}

async fn not_found(method: Method, req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", req.uri().path()),
    )
}

async fn admin_stats(State(app): State<Arc<App>>) -> Json<Stats> {
    Json(app.stats())
}

async fn admin_records(State(app): State<Arc<App>>) -> Json<Records> {
    Json(app.records())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(AUTHORIZATION, value);
        }
        headers
    }

    #[test]
    fn bearer_tokens() {
        assert!(authorized(None, &headers("Bearer anything")));
        assert!(authorized(None, &headers("bearer  x ")));
        assert!(!authorized(None, &headers("Bearer ")));
        assert!(!authorized(None, &headers("Basic abc")));
        assert!(!authorized(None, &HeaderMap::new()));
        assert!(authorized(Some("k-1"), &headers("Bearer k-1")));
        assert!(!authorized(Some("k-1"), &headers("Bearer k-2")));
        assert!(!authorized(Some("k-1"), &headers("Bearer k-10")));
        assert!(!authorized(Some("k-1"), &headers("k-1")));
    }
}
