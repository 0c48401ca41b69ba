//! Talking to Kustomer: the HTTP client ([`client`]), what its errors mean to a caller
//! ([`error`]), the one rate gate every request of the process passes ([`ratelimit`]), and
//! the backoff between retries ([`retry`]).

pub mod bulk;
pub mod client;
pub mod error;
pub mod ratelimit;
pub mod retry;

pub use bulk::{BulkKind, ItemOutcome, JobStatus, SubmittedJob};
pub use client::{ClientSettings, KustomerClient, LookupField, RequestStats, Turn};
pub use error::ApiError;
pub use ratelimit::RateGate;
pub use retry::Backoff;
