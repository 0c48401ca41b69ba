//! Talking to Kustomer: the HTTP client ([`client`]), what its errors mean to a caller
//! ([`error`]), the one rate gate every request of the process passes ([`ratelimit`]), and
//! the backoff between retries ([`retry`]); the org's tags ([`tags`]).

pub mod bulk;
pub mod client;
pub mod delete;
pub mod error;
pub mod history;
pub mod ratelimit;
pub mod read;
pub mod retry;
pub mod tags;
pub mod update;
pub mod users;

pub use bulk::{BulkKind, ItemOutcome, JobStatus, SubmittedJob};
pub use client::{ClientSettings, KustomerClient, LookupField, RequestStats, Turn};
pub use error::ApiError;
pub use ratelimit::{DEFAULT_MAX_STALL, Held, Pass, RateGate};
pub use retry::Backoff;

/// An answer body as Kustomer's docs show it (`tests/fixtures/kustomer-docs/`), for the
/// parsers' tests.
#[cfg(test)]
pub(crate) fn documented(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/kustomer-docs/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}
