//! A local fake of the Kustomer API, faithful to `shared/docs/kustomer-api.md` and the
//! OpenAPI contract, to rehearse imports against: `POST /v1/customers`,
//! `POST /v1/conversations`, a conversation's messages and notes (`history.rs`, held in
//! `thread.rs`), bulk jobs of each, updates of each (`PATCH`/`PUT`, bulk `PUT`s, with a
//! per-object limit: `update.rs`), lookups by externalId, email and phone, bearer auth, the
//! org-wide rate limit with its headers, duplicates refused with 409, validation with 422,
//! and injectable faults (5xx before or after the write, a connection dropped or left hanging
//! after the write, a revoked key). `GET /__stats` and `GET /__records` let tests see what
//! the server saw and holds; a records file keeps the records across runs of a rehearsal. This file owns the public API, server start and stop, and the
//! accept loop (custom, so that a connection can be closed without any answer).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use kustomer_import::sandbox::{Sandbox, SandboxConfig};
//! let sandbox = Sandbox::start(SandboxConfig::default(), 0).await?;
//! println!("{}", sandbox.base_url());
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```

mod companies;
mod delete;
mod faults;
mod history;
mod http;
mod journal;
mod stats;
mod store;
mod tags;
mod thread;
mod update;
mod users;
pub mod validate;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower::util::MapRequestLayer;

pub use faults::FaultConfig;
// The rate gate's tests send against the same windows as the sandbox's clients.
#[cfg(test)]
pub(crate) use faults::RateLimiter;
pub use stats::{FaultCounts, Stats};
pub use store::{
    ConversationRecord, CustomerRecord, EmailEntry, Lookup, LookupError, PhoneEntry, Records,
    UpdateMode, parse_lookup, percent_decode,
};
pub use tags::TagRecord;
pub use thread::{Thread, ThreadKind, ThreadRecord};
pub use users::SandboxUser;
pub use validate::{
    FieldError, ThreadRoute, is_rfc3339, is_valid_email, is_valid_phone, phone_digits,
    validate_conversation, validate_customer, validate_message, validate_note,
};

use http::{App, ConnCtx};
use store::Store;

/// How the sandbox behaves.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Bearer token the server accepts. None: any non-empty bearer token is accepted.
    pub token: Option<String>,
    /// Org-wide request limit per window (all endpoints except /__*). None: unlimited.
    pub rpm: Option<u32>,
    /// Length of the rate window (Kustomer: 60 s; tests shorten it).
    pub rate_window: Duration,
    /// Added before answering every API request.
    pub latency: Duration,
    /// Uniform random extra latency in [0, jitter].
    pub jitter: Duration,
    pub faults: FaultConfig,
    /// Answer the way the spec says (200 and a bare {type,id,attributes}) instead of the
    /// live API's way (201 and {"data": {...}}).
    pub spec_style: bool,
    /// The org's custom attributes. When set, a customer whose `custom` names any other is
    /// refused (422), as the live API refuses attributes the org has not defined: a
    /// refusal no local validation can foresee. None: any name with a type suffix.
    pub custom_attributes: Option<Vec<String>>,
    /// How long a bulk job stays queued before it runs.
    pub bulk_delay: Duration,
    /// Validate every item of a bulk request when it is submitted and refuse the whole
    /// request (400, naming the item) if one is invalid, as an API that checks bodies up
    /// front would. Off: items are validated when the job runs, each on its own.
    pub bulk_refuse_invalid: bool,
    /// Serve no bulk routes, as an API without bulk jobs (their paths answer 404 or 405).
    pub without_bulk: bool,
    /// The records file (see `journal.rs`): every record is written there before its
    /// create answers, and a sandbox started on the file holds the records it kept, so a
    /// rehearsal resumes. None: the records live in memory only. Bulk jobs are not kept: a
    /// resumed run that asks for a job of the sandbox before gets 404 and looks its rows
    /// up.
    pub records: Option<PathBuf>,
    /// Whether the key's user holds `org.admin`, the role Kustomer requires to set a
    /// message's or note's `createdAt` or `createdBy` (and `modifiedAt`, `modifiedBy`).
    /// Off (the default): a message or note carrying them is taken, and they are not kept,
    /// as the docs say of the live API (the key's user and the current time stand
    /// instead): `GET /__records` shows the item without them.
    pub org_admin: bool,
    /// Messages (without `importedAt`) and notes (any) one customer may have created per
    /// rate window, each kind counted apart; beyond, 429 (a bulk item: an error). Kustomer:
    /// 120 a minute. None: no such limit.
    pub per_customer_limit: Option<u32>,
    /// Updates of one record (customer, conversation, message or note, by id) per rate
    /// window, single updates and bulk items alike; beyond, 429 with `Retry-After` and the
    /// org's `x-ratelimit-*` headers showing its budget not spent, which is how a client
    /// tells a record's limit from the org's (a bulk item: an error). Kustomer has such
    /// limits and does not publish them. None: no such limit.
    pub per_object_update_limit: Option<u32>,
    /// The org's users (agents), found by `GET /v1/users?email=` (see `users.rs`).
    pub users: Vec<SandboxUser>,
    /// The org's tags (id and name), listed by `GET /v1/tags` (see `tags.rs`): a
    /// conversation's `tags` must name their ids (or those of tags appends made).
    pub tags: Vec<TagRecord>,
    /// Refuse (422, naming `/tags/{i}`) a conversation create or update whose `tags` holds
    /// a text that is not the id of an org tag: the strictest reading of the docs ("a
    /// conversation's `tags` is a list of tag ids"). On by default: the importer sends
    /// ids (it maps the source's names to the org's tags); off only to see what a client
    /// that sends names would get from a lenient API.
    pub tag_ids_only: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            token: None,
            rpm: None,
            rate_window: Duration::from_secs(60),
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            faults: FaultConfig::default(),
            spec_style: false,
            custom_attributes: None,
            bulk_delay: Duration::from_millis(500),
            bulk_refuse_invalid: false,
            without_bulk: false,
            records: None,
            org_admin: false,
            per_customer_limit: Some(120),
            per_object_update_limit: None,
            users: Vec::new(),
            tags: Vec::new(),
            tag_ids_only: true,
        }
    }
}

/// A running sandbox. Dropping it stops the server too; [`Sandbox::shutdown`] also waits
/// for the end.
pub struct Sandbox {
    addr: SocketAddr,
    app: Arc<App>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("addr", &self.addr).finish()
    }
}

impl Sandbox {
    /// Binds 127.0.0.1:port (0 = ephemeral) and serves in a background tokio task. Must be
    /// called inside a tokio runtime.
    pub async fn start(config: SandboxConfig, port: u16) -> std::io::Result<Sandbox> {
        let mut store = match &config.records {
            Some(path) => Store::with_journal(path)?,
            None => Store::new(),
        };
        store.seed_tags(&config.tags);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let app = Arc::new(App::new(config, store, shutdown.clone()));
        let router = http::router(app.clone());
        let task = tokio::spawn(accept_loop(listener, router, shutdown.clone()));
        tracing::debug!(target: "sandbox", %addr, "sandbox listening");
        Ok(Sandbox {
            addr,
            app,
            shutdown,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Same content as `GET /__stats`.
    pub fn stats(&self) -> Stats {
        self.app.stats()
    }

    /// Same content as `GET /__records`.
    pub fn records(&self) -> Records {
        self.app.records()
    }

    /// Requests the org's limit let through, by fixed window (0: the one the sandbox
    /// started in; windows that let none through are left out). Empty without a limit.
    pub fn allowed_by_window(&self) -> std::collections::BTreeMap<u64, u64> {
        self.app.allowed_by_window()
    }

    /// Changes faults at run time (tests turn faults on/off between runs). Re-seeds the
    /// dice and restarts the `revoke_after` count.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.app.set_faults(faults);
    }

    /// Test-only: changes a conversation's fields as an agent would (a merge, as `PATCH`
    /// does), with no request and no fault; false when no conversation has the id.
    pub fn edit_conversation(&self, id: &str, fields: serde_json::Value) -> bool {
        let Some(fields) = fields.as_object() else {
            return false;
        };
        let mut inner = self.app.lock();
        inner
            .store
            .update_conversation(id, fields, store::UpdateMode::Merge)
            .is_ok()
    }

    /// Test-only: deletes a conversation behind the import's back (not written to the
    /// records file); later reads of it answer 404. False when no conversation has the id.
    pub fn delete_conversation(&self, id: &str) -> bool {
        self.app.lock().store.forget_conversation(id)
    }

    /// Stops accepting, closes connections, ends the task.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(target: "sandbox", "sandbox task ended badly: {e}");
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept_loop(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone(), shutdown.child_token()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: let some connections end.
                    tracing::warn!(target: "sandbox", "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Serves one connection until it ends, or until its token is cancelled (by a handler that
/// wants the connection dropped without an answer, or by shutdown): then the connection
/// future is dropped, which closes the socket.
async fn serve_connection(stream: TcpStream, router: Router, token: CancellationToken) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(target: "sandbox", "set_nodelay: {e}");
    }
    let ctx = ConnCtx {
        token: token.clone(),
    };
    let service = MapRequestLayer::new(move |mut req: axum::http::Request<Incoming>| {
        req.extensions_mut().insert(ctx.clone());
        req
    })
    .layer(router);
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    // Biased towards the token: once it is cancelled the connection is dropped before it
    // can write anything more, even if a handler finished in the same wake-up.
    tokio::select! {
        biased;
        () = token.cancelled() => {}
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(target: "sandbox", "connection ended: {e}");
            }
        }
    }
}
