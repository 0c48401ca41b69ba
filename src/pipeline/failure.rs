//! What a failed call means for the row or the bulk job that made it: the one place in the
//! pipeline that reads an [`ApiError`] which is not a create's own verdict on its record.
//! A refused key, a wrong base URL, a missing endpoint and an API that lets nothing through
//! stop the run, the row or job left pending; a transient failure is tried again after a
//! backoff, within the retry budget `--max-retries` sets, the same for rows and jobs (a
//! record's own update limit after at least the wait the server asked); a
//! refused lookup or poll settles nothing and leaves the row pending (failing it would
//! invite a blind re-send). No HTTP status is read here: [`ApiError`] says what it means.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::StopReason;
use super::handles::Tools;
use super::row::{Halt, Step};
use crate::api::{ApiError, Held};

/// The call a failure came from, for what a refusal of it means and what the next attempt
/// starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Call {
    /// A row's lookup, or a create whose failure was not a verdict (a lost answer): the next
    /// attempt may start with a lookup.
    Row,
    /// A bulk job's submit, status or results.
    Job,
}

/// Why [`Retries::backoff`] says not to try again.
pub(super) enum NoRetry {
    /// The retry budget is spent: why the caller gives up.
    Exhausted(String),
    Stopping,
}

/// The retries of one row or one bulk job: its transient failures so far, against the
/// budget, with a stop that cuts a backoff short.
pub(super) struct Retries<'a> {
    tools: &'a Tools,
    stop: &'a CancellationToken,
    failures: u32,
}

impl<'a> Retries<'a> {
    pub(super) fn new(tools: &'a Tools, stop: &'a CancellationToken) -> Retries<'a> {
        Retries {
            tools,
            stop,
            failures: 0,
        }
    }

    /// Waits out the backoff after a transient failure (at least `least`), within the
    /// budget.
    pub(super) async fn backoff(&mut self, reason: &str, least: Duration) -> Result<(), NoRetry> {
        let policy = &self.tools.retry;
        if self.failures >= policy.max_retries {
            return Err(NoRetry::Exhausted(format!(
                "gave up after {} attempts: {reason}",
                self.failures + 1
            )));
        }
        let delay = policy.backoff.delay(self.failures).max(least);
        self.failures += 1;
        tracing::debug!("retrying after: {reason}");
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.stop.cancelled() => Err(NoRetry::Stopping),
        }
    }

    /// After a failed call: waits out the backoff and says to try again, or why the row or
    /// job stops here.
    pub(super) async fn after_failure(&mut self, error: &ApiError, call: Call) -> Result<(), Halt> {
        if let Some(halt) = stops_the_run(self.tools, error) {
            return Err(halt);
        }
        let exhausted = |end| match end {
            NoRetry::Exhausted(reason) => Halt::Pending(reason),
            NoRetry::Stopping => Halt::stopping(),
        };
        // One record's own limit: this record waits what the server asked (at least), the
        // rest of the run goes on; it counts against the record's retries like any failure.
        if let ApiError::RecordLimited { wait, .. } = error {
            let reason = error.to_string();
            return self.backoff(&reason, *wait).await.map_err(exhausted);
        }
        let ApiError::Transient { reason, .. } = error else {
            return Err(Halt::Pending(refused(call, error)));
        };
        // A row whose write may have landed starts its next attempt with a lookup: give a
        // write still in progress (or an index that lags) time to show, or it is sent twice.
        let least = if call == Call::Row && error.maybe_applied() {
            self.tools.retry.reconcile_delay
        } else {
            Duration::ZERO
        };
        self.backoff(reason, least).await.map_err(exhausted)
    }
}

/// The failures that stop the run whatever call met them, as the halt of the row or job in
/// hand (pending, its intent kept for the next run); None for the others.
pub(super) fn stops_the_run(tools: &Tools, error: &ApiError) -> Option<Halt> {
    let (stop, halt) = match error {
        ApiError::Unauthorized { status, message } => (
            StopReason::Unauthorized(format!("{status}: {message}")),
            format!("the API refused the key ({status})"),
        ),
        // A redirect, or no answer ever because nothing listens there: the base URL is
        // wrong (exit 2).
        ApiError::WrongBaseUrl { .. } | ApiError::Unreachable { .. } => {
            (StopReason::Endpoint(error.to_string()), error.to_string())
        }
        ApiError::NotSent(Held::Stopping) => return Some(Halt::stopping()),
        ApiError::NotSent(Held::Stalled(reason)) => {
            (StopReason::Stalled(reason.clone()), reason.clone())
        }
        _ => return None,
    };
    tools.control.halt(stop);
    Some(Halt::Pending(halt))
}

/// A create or a bulk submit answered that its endpoint does not exist: the URL is wrong,
/// not the row. The run stops (configuration, exit 2) with the row pending, rather than
/// failing every row. `what` names the call, `hint` what to check.
pub(super) fn endpoint_missing(tools: &Tools, what: &str, error: &ApiError, hint: &str) -> Halt {
    let ApiError::NoSuchEndpoint { status, message } = error else {
        unreachable!("endpoint_missing is given NoSuchEndpoint only")
    };
    tools.control.halt(StopReason::Endpoint(format!(
        "{what} answered {status} ({message}): {hint}"
    )));
    Halt::Pending(format!("the API answered {status}"))
}

/// What a create's own refusal of its record means for the row: the run stops for a
/// missing endpoint; the row fails for a refusal of its data.
pub(super) fn create_refused(tools: &Tools, step: Step, error: &ApiError) -> Halt {
    match error {
        ApiError::NoSuchEndpoint { .. } => endpoint_missing(
            tools,
            &format!("creating a {}", step.noun()),
            error,
            "is the base URL right?",
        ),
        other => refusal(step, other),
    }
}

/// A refusal of the record `step` makes (by a create, or an item of a bulk job), as the
/// row's failure.
pub(super) fn refusal(step: Step, error: &ApiError) -> Halt {
    match error {
        ApiError::Rejected { status, message } => {
            Halt::refused(step, format_args!(" ({status}): {message}"))
        }
        // A bulk job refused whole with a 409.
        ApiError::Duplicate { message } => Halt::refused(step, format_args!(" (409): {message}")),
        other => Halt::refused(step, format_args!(": {other}")),
    }
}

/// A refused call that settles nothing, in words.
fn refused(call: Call, error: &ApiError) -> String {
    match (call, error) {
        (Call::Row, ApiError::Rejected { status, message }) => {
            format!("a lookup was refused ({status}): {message}")
        }
        (Call::Row, ApiError::Duplicate { message }) => {
            format!("a lookup was refused (409): {message}")
        }
        (Call::Row, other) => format!("a lookup was refused: {other}"),
        (Call::Job, other) => format!("a bulk job poll was refused: {other}"),
    }
}
