//! The Kustomer HTTP client: creates customers and conversations, looks them up, and turns
//! every answer into an id or a classified [`ApiError`].
//!
//! It accepts both shapes the API is seen in: the spec's (200, bare `{type, id,
//! attributes}`) and the live API's (201, `{"data": {...}}`). Every request passes the
//! shared [`RateGate`]; a 429 pauses every worker and the request is sent again here, so
//! callers never see one. A redirect is never followed: any 3xx, on any call, is
//! [`ApiError::WrongBaseUrl`]. The key lives in a [`SecretString`] and goes out only in a
//! header marked sensitive; no error or log line built here can contain it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use url::Url;

use super::error::{ApiError, server_message, trimmed};
use super::ratelimit::{Pass, RateGate};
use crate::mapping::{ConversationBody, CustomerBody};

/// How to reach the API.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub base_url: Url,
    pub api_key: SecretString,
    /// Whole-request timeout; an answer later than this is a lost answer.
    pub timeout: Duration,
    /// 429s in a row for one request before it counts as a transient failure.
    pub max_rate_limited: u32,
}

/// Counts of what the client sent, for the summary and the runs table, and the typical
/// latency of its requests, for the concurrency.
#[derive(Debug, Default)]
pub struct RequestStats {
    pub requests: AtomicU64,
    pub creates: AtomicU64,
    pub lookups: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Bulk jobs the API took (a submit answered with the job's id).
    pub bulk_jobs: AtomicU64,
    /// Single message creates sent (each also in `creates`).
    pub message_creates: AtomicU64,
    /// Single note creates sent (each also in `creates`).
    pub note_creates: AtomicU64,
    /// Requests that looked a message or a note up: message lookups and pages of notes
    /// listings (each also in `lookups`).
    pub thread_lookups: AtomicU64,
    /// `GET /v1/users?email=` requests (each also in `lookups`).
    pub user_lookups: AtomicU64,
    /// A moving average of answer latencies, in microseconds (0: none yet).
    latency_micros: AtomicU64,
}

impl RequestStats {
    /// Adds one answer's latency to the moving average (weight 1/8: it follows a change
    /// within a few dozen answers, and one slow answer moves it little).
    pub fn record_latency(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self
            .latency_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |average| {
                Some(if average == 0 {
                    sample
                } else {
                    average - average / 8 + sample / 8
                })
            });
    }

    /// The typical latency of an answer so far; None before the first.
    pub fn typical_latency(&self) -> Option<Duration> {
        match self.latency_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}

/// A field a customer can be looked up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupField {
    ExternalId,
    Email,
    Phone,
}

impl LookupField {
    fn as_str(self) -> &'static str {
        match self {
            LookupField::ExternalId => "externalId",
            LookupField::Email => "email",
            LookupField::Phone => "phone",
        }
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the API key contains characters that cannot go in an HTTP header")]
    BadKey,
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

pub struct KustomerClient {
    http: reqwest::Client,
    base_url: Url,
    /// The create endpoints, joined once: joining parsed the URL again for every create.
    customers_url: Url,
    conversations_url: Url,
    authorization: HeaderValue,
    gate: Arc<RateGate>,
    stats: Arc<RequestStats>,
    max_rate_limited: u32,
    /// Whether any request has had an HTTP answer: until one has, a failure to connect
    /// says the target is wrong, not that the network hiccupped.
    answered: AtomicBool,
}

impl std::fmt::Debug for KustomerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KustomerClient")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl KustomerClient {
    pub fn new(
        settings: ClientSettings,
        gate: Arc<RateGate>,
        stats: Arc<RequestStats>,
    ) -> Result<KustomerClient, ClientError> {
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", settings.api_key.expose_secret()))
                .map_err(|_| ClientError::BadKey)?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("kustomer-import/", env!("CARGO_PKG_VERSION")))
            // A redirect would be a request the rate gate never saw.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| ClientError::Build(error.to_string()))?;
        let mut base_url = settings.base_url;
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        Ok(KustomerClient {
            http,
            customers_url: join(&base_url, "v1/customers"),
            conversations_url: join(&base_url, "v1/conversations"),
            base_url,
            authorization,
            gate,
            stats,
            max_rate_limited: settings.max_rate_limited.max(1),
            answered: AtomicBool::new(false),
        })
    }

    /// What this client has sent so far.
    pub fn stats(&self) -> &RequestStats {
        &self.stats
    }

    /// The rate gate every request of this client passes.
    pub fn gate(&self) -> &RateGate {
        &self.gate
    }

    /// `POST /v1/customers`; the new customer's id.
    pub async fn create_customer(&self, body: &CustomerBody) -> Result<String, ApiError> {
        self.create(&self.customers_url, body).await
    }

    /// `POST /v1/conversations`; the new conversation's id.
    pub async fn create_conversation(&self, body: &ConversationBody) -> Result<String, ApiError> {
        self.create(&self.conversations_url, body).await
    }

    /// `GET /v1/customers/{field}={value}`; None when there is no such customer.
    pub async fn find_customer(
        &self,
        field: LookupField,
        value: &str,
    ) -> Result<Option<String>, ApiError> {
        self.lookup("v1/customers", field.as_str(), value).await
    }

    /// `GET /v1/conversations/externalId={value}`; None when there is no such conversation.
    pub async fn find_conversation(&self, external_id: &str) -> Result<Option<String>, ApiError> {
        self.lookup("v1/conversations", "externalId", external_id)
            .await
    }

    /// `POST /v1/companies` with `{name, externalId}`; the new company's id.
    pub async fn create_company(&self, name: &str, external_id: &str) -> Result<String, ApiError> {
        let body = serde_json::json!({"name": name, "externalId": external_id});
        self.create(&self.url("v1/companies"), &body).await
    }

    /// `GET /v1/companies?externalId={value}`; None when no company holds it (an empty
    /// list or a 404; a 200 that cannot be read is an error, never "absent").
    pub async fn find_company(&self, external_id: &str) -> Result<Option<String>, ApiError> {
        let mut url = self.url("v1/companies");
        url.query_pairs_mut().append_pair("externalId", external_id);
        self.find_at(url, "company lookup").await
    }

    pub(super) async fn create(
        &self,
        url: &Url,
        body: &impl Serialize,
    ) -> Result<String, ApiError> {
        self.stats.creates.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(body).map_err(|error| ApiError::Rejected {
            status: 0,
            message: format!("cannot encode the body: {error}"),
        })?;
        let (status, answer) = self.send(Method::POST, url.clone(), Some(body)).await?;
        match status.as_u16() {
            200 | 201 => record_id(&answer).ok_or_else(|| ApiError::Transient {
                reason: format!("{status} with no id in the answer"),
                maybe_applied: true,
            }),
            409 => Err(ApiError::Duplicate {
                message: server_message(&answer),
            }),
            code => Err(classify_failure(Call::Write, code, &answer)),
        }
    }

    pub(super) async fn lookup(
        &self,
        collection: &str,
        field: &str,
        value: &str,
    ) -> Result<Option<String>, ApiError> {
        let encoded =
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC);
        let url = self.url(&format!("{collection}/{field}={encoded}"));
        self.find_at(url, "lookup").await
    }

    /// One lookup's request (`what` names it in an error): the id found, or None when the
    /// answer is a 404 or an empty list. Only those say "absent": a 200 we cannot read must
    /// not be taken for one, or the record would be created again.
    pub(super) async fn find_at(&self, url: Url, what: &str) -> Result<Option<String>, ApiError> {
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        let (status, answer) = self.send(Method::GET, url, None).await?;
        match status.as_u16() {
            200 | 201 => match found_id(&answer) {
                Found::Id(id) => Ok(Some(id)),
                Found::Empty => Ok(None),
                Found::Unreadable => Err(ApiError::Transient {
                    reason: format!("{what} answered {status} with no id in the answer"),
                    maybe_applied: false,
                }),
            },
            404 => Ok(None),
            code => Err(classify_failure(Call::Lookup, code, &answer)),
        }
    }

    pub(super) fn url(&self, path: &str) -> Url {
        join(&self.base_url, path)
    }

    /// Waits until the rate gate lets one request go, for a caller that must act between
    /// its turn and the request's departure (a bulk job is recorded as one that may exist
    /// only then: see `pipeline::bulk`). The request sent in the turn spends it; a turn
    /// dropped unused is a slot of the budget left unused.
    pub async fn turn(&self) -> Result<Turn, ApiError> {
        Ok(Turn(self.gate.acquire().await?))
    }

    /// Sends one request through the rate gate, sending it again after 429s.
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, bytes::Bytes), ApiError> {
        self.send_in(None, method, url, body).await
    }

    /// [`KustomerClient::send`], its first try in `turn` when the caller took one.
    pub(super) async fn send_in(
        &self,
        turn: Option<Turn>,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, bytes::Bytes), ApiError> {
        self.send_under(turn, method, url, body, false).await
    }

    /// [`KustomerClient::send`] for an update of one record, which is under its per-object
    /// limit too: a 429 that leaves the org's budget unspent pauses no one and comes back as
    /// [`ApiError::RecordLimited`], for the caller to send again after its wait.
    pub(super) async fn send_update(
        &self,
        method: Method,
        url: Url,
        body: Vec<u8>,
    ) -> Result<(StatusCode, bytes::Bytes), ApiError> {
        self.send_under(None, method, url, Some(body), true).await
    }

    async fn send_under(
        &self,
        mut turn: Option<Turn>,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        record_limits: bool,
    ) -> Result<(StatusCode, bytes::Bytes), ApiError> {
        let body = body.map(bytes::Bytes::from);
        let mut rate_limited = 0;
        loop {
            // A turn taken ahead left the gate earlier: its pass is dated now, when its
            // request leaves.
            let pass = match turn.take() {
                Some(Turn(pass)) => pass.leaving_now(),
                None => self.gate.acquire().await?,
            };
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let sent = std::time::Instant::now();
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, self.authorization.clone());
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let response = request.send().await.map_err(|error| {
                self.gate.answer_settled();
                self.not_answered(error)
            })?;
            self.answered.store(true, Ordering::Relaxed);
            let status = response.status();
            let record_wait = if record_limits {
                self.gate
                    .observe_record(&pass, status.as_u16(), response.headers())
            } else {
                self.gate
                    .observe(&pass, status.as_u16(), response.headers());
                None
            };
            if status.is_redirection() {
                return Err(wrong_base_url(status, response.headers()));
            }
            let answer = read_answer(response, &method).await?;
            self.stats.record_latency(sent.elapsed());
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                if let Some(wait) = record_wait {
                    return Err(ApiError::RecordLimited {
                        wait,
                        message: super::error::server_message(&answer),
                    });
                }
                rate_limited += 1;
                if rate_limited >= self.max_rate_limited {
                    return Err(ApiError::Transient {
                        reason: format!("still rate limited after {rate_limited} tries"),
                        maybe_applied: false,
                    });
                }
                continue;
            }
            return Ok((status, answer));
        }
    }
}

/// The most of an answer the client reads. Every answer it needs is small: a create's or a
/// lookup's record (its id comes first), a bulk job's status, its batches of at most 100
/// results (tens of KiB). 4 MiB leaves a record with many attributes room and bounds what
/// one answer can cost: read whole, a 50 MB create answer cost 588 MB of RSS in the
/// hardening report of issue 15, and a 1.5 GB one 3.1 GB, even at concurrency 1.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Reads an answer's body, chunk by chunk, up to [`MAX_ANSWER_BYTES`]. A longer one is
/// not an answer this client can use: a protocol error for this request, which for a
/// request that writes may have been applied, so it goes the way of a lost answer
/// (reconciled by lookup), never that of a refusal.
async fn read_answer(
    mut response: reqwest::Response,
    method: &Method,
) -> Result<bytes::Bytes, ApiError> {
    let too_long = || ApiError::Transient {
        reason: format!(
            "the answer is longer than {} MiB: not read",
            MAX_ANSWER_BYTES / (1024 * 1024)
        ),
        maybe_applied: method != Method::GET,
    };
    let announced = response.content_length().unwrap_or(0);
    if announced > MAX_ANSWER_BYTES as u64 {
        return Err(too_long());
    }
    let mut chunks = Vec::new();
    let mut length = 0;
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        length += chunk.len();
        if length > MAX_ANSWER_BYTES {
            return Err(too_long());
        }
        chunks.push(chunk);
    }
    // Most answers come in one chunk: that one is kept as it is, with no copy.
    Ok(match chunks.len() {
        1 => chunks.swap_remove(0),
        _ => chunks.concat().into(),
    })
}

impl KustomerClient {
    /// A request that got no HTTP answer. A failure to connect (refused, no such host, a
    /// TLS handshake that failed) before the API has ever answered says the target cannot
    /// work: [`ApiError::Unreachable`], and the run stops rather than retry. Once an answer
    /// has come, the same failure is a network hiccup like any other.
    fn not_answered(&self, error: reqwest::Error) -> ApiError {
        let unreachable = error.is_connect() && !self.answered.load(Ordering::Relaxed);
        match transport_error(error) {
            ApiError::Transient { reason, .. } if unreachable => ApiError::Unreachable {
                base_url: self.base_url.as_str().trim_end_matches('/').to_string(),
                reason,
            },
            other => other,
        }
    }
}

/// A request's turn at the rate gate, taken ahead with [`KustomerClient::turn`].
#[derive(Debug)]
#[must_use = "a turn is a slot of the rate budget: send a request in it"]
pub struct Turn(Pass);

/// `path` under `base`, which ends in '/': joining a relative path onto it cannot fail.
fn join(base: &Url, path: &str) -> Url {
    base.join(path).unwrap_or_else(|_| base.clone())
}

/// The id of the record in a create or lookup answer: `data`'s when `data` is an object,
/// else the answer's own. Only the ids are read; every other field is skipped unparsed
/// (parsing the whole answer into a `Value` was 7% of the importer's instructions, by
/// callgrind on an import of 10k rows).
pub(super) fn record_id(answer: &[u8]) -> Option<String> {
    serde_json::from_slice::<IdsOfAnswer>(answer)
        .ok()?
        .record_id()
}

/// What an answer's object holds of ids: its own `id`, and `data`'s if `data` is an object.
#[derive(Default)]
struct IdsOfAnswer {
    own: Option<serde_json::Value>,
    data: Option<Option<serde_json::Value>>,
}

impl IdsOfAnswer {
    fn record_id(self) -> Option<String> {
        match self.data.unwrap_or(self.own)? {
            serde_json::Value::String(id) if !id.is_empty() => Some(id),
            serde_json::Value::Number(id) => Some(id.to_string()),
            _ => None,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum AnswerField {
    Id,
    Data,
    #[serde(other)]
    Other,
}

impl<'de> serde::Deserialize<'de> for IdsOfAnswer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ids = deserializer.deserialize_map(IdsVisitor { nested: false })?;
        Ok(ids.unwrap_or_default())
    }
}

/// Reads an answer's object (`nested: false`) or its `data` (`nested: true`: a `data`
/// inside `data` is just another field). `data` that is not an object reads as None.
struct IdsVisitor {
    nested: bool,
}

impl<'de> serde::de::Visitor<'de> for IdsVisitor {
    type Value = Option<IdsOfAnswer>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::IgnoredAny;
        let mut ids = IdsOfAnswer::default();
        while let Some(field) = map.next_key::<AnswerField>()? {
            match field {
                AnswerField::Id => ids.own = Some(map.next_value()?),
                AnswerField::Data if !self.nested => {
                    ids.data = map.next_value_seed(DataSeed)?.map(|data| data.own);
                }
                AnswerField::Data | AnswerField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(ids))
    }

    // Anything but an object, as `data`: no record there.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// `data`'s value, read with [`IdsVisitor`].
struct DataSeed;

impl<'de> serde::de::DeserializeSeed<'de> for DataSeed {
    type Value = Option<IdsOfAnswer>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(IdsVisitor { nested: true })
    }
}

/// What a lookup's 200 answer holds.
pub(super) enum Found {
    Id(String),
    /// `{"data": []}`: a search that matched nothing.
    Empty,
    Unreadable,
}

/// Reads a lookup answer: one record, bare or in `data`, or a `data` list (first match).
pub(super) fn found_id(answer: &[u8]) -> Found {
    let list = serde_json::from_slice::<serde_json::Value>(answer)
        .ok()
        .and_then(|value| value.get("data").and_then(|d| d.as_array()).cloned());
    match list {
        Some(items) if items.is_empty() => Found::Empty,
        Some(items) => items[0]
            .get("id")
            .and_then(|id| id.as_str())
            .map_or(Found::Unreadable, |id| Found::Id(id.to_string())),
        None => record_id(answer).map_or(Found::Unreadable, Found::Id),
    }
}

/// What an HTTP answer other than success means for the caller. This and
/// [`transport_error`] are where the client decides which failures prove that the request
/// was not taken (`maybe_applied: false`: sent again as it is, with no lookup first): a 503,
/// a refused connection, and 429s (which reach callers only as "still rate limited").
/// Every other failure on the way may hide a write.
pub(super) fn classify_failure(call: Call, code: u16, answer: &[u8]) -> ApiError {
    let message = server_message(answer);
    match (call, code) {
        (Call::Write, 404 | 405) | (Call::Update, 405) => ApiError::NoSuchEndpoint {
            status: code,
            message,
        },
        (Call::Job, 404) => ApiError::UnknownJob { message },
        (_, code) => classify_status(code, message),
    }
}

/// Which kind of call an answer came to: what a 404 means depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Call {
    /// A create or a bulk submit: its route is fixed, so a 404/405 means no such route.
    Write,
    /// A lookup: a 404 is an answer ("no such record"), read by the caller before this.
    Lookup,
    /// A bulk job's status or results: a 404 means no such job (yet).
    Job,
    /// An update of one record: a 404 means no such record (deleted since), a 405 no such
    /// route.
    Update,
}

/// What a status says, whatever the call.
fn classify_status(code: u16, message: String) -> ApiError {
    match code {
        401 | 403 => ApiError::Unauthorized {
            status: code,
            message,
        },
        // 503 Service Unavailable: the server says it cannot handle the request now
        // (overload, maintenance), so it did not: nothing was made. A proxy that forwarded
        // the request and lost the answer says 502 or 504, not 503. The live API's docs say
        // no more than "5xx server trouble": README states this assumption.
        503 => ApiError::Transient {
            reason: format!("server unavailable (503): {message}"),
            maybe_applied: false,
        },
        // 408: the server gave up reading; 500, 502, 504: the server or a proxy failed,
        // perhaps after the write. Either may have applied the request.
        408 | 500..=599 => ApiError::Transient {
            reason: format!("server error {code}: {message}"),
            maybe_applied: true,
        },
        _ => ApiError::Rejected {
            status: code,
            message,
        },
    }
}

/// What any 3xx means, for every call: the base URL is wrong. The Location is kept as the
/// server gave it (trimmed: it is shown to the user), so that the user can see where the
/// host sends requests.
fn wrong_base_url(status: StatusCode, headers: &reqwest::header::HeaderMap) -> ApiError {
    let location = headers
        .get(reqwest::header::LOCATION)
        .map(|location| trimmed(&String::from_utf8_lossy(location.as_bytes())));
    ApiError::WrongBaseUrl {
        status: status.as_u16(),
        location,
    }
}

/// A request that got no HTTP answer. Only a failure to connect proves the server never
/// saw it; a timeout or a connection dropped after sending may hide a write.
fn transport_error(error: reqwest::Error) -> ApiError {
    let maybe_applied = !error.is_connect();
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "connection lost"
    };
    let error = error.without_url();
    let mut reason = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    ApiError::Transient {
        reason,
        maybe_applied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_both_shapes() {
        assert_eq!(
            record_id(br#"{"type":"customer","id":"abc","attributes":{}}"#).as_deref(),
            Some("abc")
        );
        assert_eq!(
            record_id(br#"{"data":{"type":"customer","id":"abc"}}"#).as_deref(),
            Some("abc")
        );
        assert_eq!(record_id(br#"{"data":{"type":"customer"}}"#), None);
        assert_eq!(record_id(b"not json"), None);
        // Numbers, escapes, nesting and a `data` that is no record, as the Value read them.
        assert_eq!(record_id(br#"{"id":42}"#).as_deref(), Some("42"));
        assert_eq!(record_id(br#"{"i\u0064":"esc"}"#).as_deref(), Some("esc"));
        assert_eq!(record_id(br#"{"id":""}"#), None);
        assert_eq!(
            record_id(br#"{"data":{"attributes":{"id":"inner"},"id":"x","data":{"id":"y"}}}"#)
                .as_deref(),
            Some("x")
        );
        assert_eq!(
            record_id(br#"{"data":[{"id":"a"}],"id":"own"}"#).as_deref(),
            Some("own")
        );
        assert_eq!(
            record_id(br#"{"data":null,"id":"own"}"#).as_deref(),
            Some("own")
        );
        assert_eq!(record_id(br#"[{"id":"a"}]"#), None);
    }

    #[test]
    fn a_lookup_answer_without_an_id_is_not_taken_for_absent() {
        assert!(matches!(found_id(br#"{"data":{"id":"a"}}"#), Found::Id(id) if id == "a"));
        assert!(matches!(found_id(br#"{"data":[{"id":"b"}]}"#), Found::Id(id) if id == "b"));
        assert!(matches!(found_id(br#"{"data":[]}"#), Found::Empty));
        assert!(matches!(
            found_id(b"<html>Bad Gateway</html>"),
            Found::Unreadable
        ));
        assert!(matches!(found_id(br#"{"data":null}"#), Found::Unreadable));
    }

    #[test]
    fn failures_are_classified_by_what_the_caller_must_do() {
        assert!(matches!(
            classify_failure(Call::Lookup, 401, b""),
            ApiError::Unauthorized { .. }
        ));
        assert!(matches!(
            classify_failure(Call::Lookup, 403, b""),
            ApiError::Unauthorized { .. }
        ));
        for maybe in [408, 500, 502, 504] {
            let error = classify_failure(Call::Write, maybe, b"");
            assert!(error.is_retriable() && error.maybe_applied(), "{maybe}");
        }
        // The server says it did not handle the request: sent again, nothing looked up.
        let busy = classify_failure(
            Call::Write,
            503,
            br#"{"errors":[{"status":"503","detail":"busy"}]}"#,
        );
        assert!(busy.is_retriable() && !busy.maybe_applied());
        assert!(busy.to_string().contains("busy"), "{busy}");
        assert!(matches!(
            classify_failure(Call::Write, 422, b"{}"),
            ApiError::Rejected { status: 422, .. }
        ));
        // What a 404 means depends on the call: no route, no job, or (read before this) no
        // such record.
        assert!(matches!(
            classify_failure(Call::Write, 405, b""),
            ApiError::NoSuchEndpoint { status: 405, .. }
        ));
        assert!(matches!(
            classify_failure(Call::Job, 404, b""),
            ApiError::UnknownJob { .. }
        ));
        assert!(matches!(
            classify_failure(Call::Lookup, 405, b""),
            ApiError::Rejected { status: 405, .. }
        ));
    }

    #[test]
    fn a_redirect_says_the_base_url_is_wrong_and_where_it_points() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::LOCATION,
            HeaderValue::from_static("https://acme.api.kustomerapp.com/v1/customers"),
        );
        let error = wrong_base_url(StatusCode::MOVED_PERMANENTLY, &headers);
        let words = error.to_string();
        assert!(words.contains("301"), "{words}");
        assert!(words.contains("https://acme.api.kustomerapp.com/v1/customers"));
        assert!(words.contains("base URL is wrong"), "{words}");
        assert!(!error.is_retriable() && !error.maybe_applied());
        let bare = wrong_base_url(StatusCode::TEMPORARY_REDIRECT, &Default::default());
        assert!(bare.to_string().contains("no Location"), "{bare}");
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let client = KustomerClient::new(
            ClientSettings {
                base_url: Url::parse("http://127.0.0.1:1").unwrap(),
                api_key: SecretString::from("super-secret-key"),
                timeout: Duration::from_secs(1),
                max_rate_limited: 3,
            },
            Arc::new(RateGate::new(0, Duration::from_secs(60))),
            Arc::default(),
        )
        .unwrap();
        assert!(!format!("{client:?}").contains("super-secret-key"));
    }
}
