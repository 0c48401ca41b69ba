//! Bulk mode: rows travel to Kustomer 100 at a time through bulk jobs, with every promise
//! of single mode kept (exactly once, resume, the same checkpoint, summary and errors).
//!
//! A job's life: once the rate gate lets its request go, the rows' intents and the job with
//! its items are committed (state `submitting`) and the request leaves at once, the job's id
//! is committed (`queued`) before anything else happens with it, the job is polled within
//! the shared rate budget until complete (when: [`pace`]), and its results are applied item
//! by item (`complete`). So a job the checkpoint holds unanswered is one whose request may
//! have left: a job that never left (the run stopped, or the checkpoint could not be
//! written, while it waited for its turn) is never recorded, and no run waits for it. What
//! cannot be settled from a job goes back to the planner for single mode's path: a
//! duplicate customer is linked, an item whose outcome is unknown is reconciled by lookup.
//! A job refused whole is split in halves until the bad item alone is refused.
//!
//! A job whose submit answer was lost may exist and may still run: its rows wait
//! `bulk_lost_wait` before they are looked up, so that a late job shows first. A run that
//! starts with jobs an earlier run left (killed while they were queued) polls them before
//! it plans any row ([`finish_earlier_jobs`]), and the rows of a job it cannot finish are
//! held back, pending, rather than sent again.

mod pace;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use self::pace::{FIRST_POLL, LEAST_POLL, MOST_POLL, Seen};
use super::worker::{
    RetryBudget, base_url_wrong, commit_or_halt, conversation_to_send, halt_change, key_refused,
    not_sent, record_halt, record_or_halt,
};
use super::{
    CustomerStep, Event, Halt, ImportMode, RowOutcome, Settlement, Shared, StopReason, Work,
    conversation_intent, row_change,
};
use crate::api::{ApiError, BulkKind, ItemOutcome, JobStatus, SubmittedJob};
use crate::checkpoint::{
    BulkItem, BulkJobState, Change, Checkpoint, CheckpointError, CustomerOrigin, RowChange,
    RowState, StoredBulkJob,
};

pub(super) use self::pace::JobPace;
pub use crate::api::bulk::MAX_ITEMS;

/// Bulk jobs in flight at once (submitted and not yet applied).
pub(super) const JOBS_IN_FLIGHT: usize = 8;
/// `--mode auto` goes bulk once this many rows are waiting to be sent.
pub(super) const AUTO_BULK_ROWS: usize = 300;
/// A partial batch goes out once its oldest row has waited this long (a slow input).
pub(super) const FLUSH_AFTER: Duration = Duration::from_secs(2);
/// The longest one run waits for a job; past it the job stays queued for the next run.
const MOST_JOB_WAIT: Duration = Duration::from_secs(15 * 60);
/// The same for a job an earlier run left queued, which holds up the start of this run.
const EARLIER_JOB_WAIT: Duration = Duration::from_secs(2 * 60);

/// What becomes of a row when its job ends.
#[derive(Debug)]
pub(super) enum Next {
    /// Settled (and recorded): done, failed or pending.
    Finished(RowOutcome),
    /// Back to the planner with this step: its conversation next, or single mode's path.
    Continue(CustomerStep),
    /// The same, once the job whose answer was lost would have run (`bulk_lost_wait`):
    /// the step looks the record up first.
    ContinueAfter(CustomerStep, tokio::time::Instant),
}

impl Next {
    fn after(step: CustomerStep, at: Option<tokio::time::Instant>) -> Next {
        match at {
            Some(at) => Next::ContinueAfter(step, at),
            None => Next::Continue(step),
        }
    }
}

/// A customers job: each work creates its row's customer.
pub(super) async fn run_customer_job(shared: &Shared, works: Vec<Work>) -> Vec<(Work, Next)> {
    let job = shared.next_job.fetch_add(1, Ordering::Relaxed);
    let mut intents = Vec::with_capacity(works.len() * 2 + 1);
    let mut bodies = Vec::with_capacity(works.len());
    let mut items = Vec::with_capacity(works.len());
    for (index, work) in works.iter().enumerate() {
        let plan = &work.plan;
        let client_ref = index.to_string();
        intents.push(Change::CustomerSent {
            customer_key: plan.customer_key.clone(),
            external_id: plan.customer.external_id.clone(),
            email: plan.customer.emails.first().map(|e| e.email.clone()),
            phone: plan.customer.phones.first().map(|p| p.phone.clone()),
        });
        let mut intent = row_change(&work.origin, plan, RowState::CustomerSent, None, None);
        intent.attempts = 1;
        intents.push(Change::Row(intent));
        bodies.push(with_client_ref(&plan.customer, &client_ref));
        items.push(BulkItem {
            client_ref,
            row_key: work.origin.key.clone(),
            customer_key: Some(plan.customer_key.clone()),
        });
    }
    let end = submit_and_wait(shared, job, BulkKind::Customers, bodies, items, intents).await;
    match end {
        JobEnd::Complete(outcomes) => apply_customer_results(shared, job, works, outcomes).await,
        JobEnd::Refused { status, message } if works.len() > 1 => {
            split_customers(shared, works, (status, &message)).await
        }
        JobEnd::Refused { status, message } => {
            let halt = Halt::Failed {
                field: None,
                reason: format!("customer refused ({status}): {message}"),
            };
            let changes = vec![Change::CustomerWithdrawn {
                customer_key: works[0].plan.customer_key.clone(),
            }];
            finish_customers_with(shared, works, halt, changes).await
        }
        JobEnd::NotSent(halt) => finish_customers_with(shared, works, halt, Vec::new()).await,
        JobEnd::NotTaken(halt) => {
            // Provably not applied: the intents are taken back, the rows stay pending.
            let changes = withdraw_customers(&works);
            finish_customers_with(shared, works, halt, changes).await
        }
        JobEnd::Unsupported => {
            record_or_halt(shared, withdraw_customers(&works)).await;
            let step = || CustomerStep::Create {
                reconcile_first: false,
            };
            works
                .into_iter()
                .map(|work| (work, Next::Continue(step())))
                .collect()
        }
        JobEnd::Unknown(after) => works
            .into_iter()
            .map(|work| {
                let step = CustomerStep::Create {
                    reconcile_first: true,
                };
                (work, Next::after(step, after))
            })
            .collect(),
        JobEnd::Unfinished(halt) => finish_customers_with(shared, works, halt, Vec::new()).await,
    }
}

/// A conversations job: each work's customer is known (`customer_id`).
pub(super) async fn run_conversation_job(
    shared: &Shared,
    works: Vec<(Work, String)>,
) -> Vec<(Work, Next)> {
    let job = shared.next_job.fetch_add(1, Ordering::Relaxed);
    let mut intents = Vec::with_capacity(works.len());
    let mut bodies = Vec::with_capacity(works.len());
    let mut items = Vec::with_capacity(works.len());
    for (index, (work, customer_id)) in works.iter().enumerate() {
        let client_ref = index.to_string();
        let Some(conversation) = &work.plan.conversation else {
            unreachable!("the planner sends only rows with a conversation")
        };
        intents.push(Change::Row(conversation_intent(work, customer_id, 1)));
        let body = conversation_to_send(shared, conversation, customer_id);
        bodies.push(with_client_ref(&body, &client_ref));
        items.push(BulkItem {
            client_ref,
            row_key: work.origin.key.clone(),
            customer_key: None,
        });
    }
    let end = submit_and_wait(shared, job, BulkKind::Conversations, bodies, items, intents).await;
    let (works, customer_ids): (Vec<Work>, Vec<String>) = works.into_iter().unzip();
    match end {
        JobEnd::Complete(outcomes) => {
            apply_conversation_results(shared, job, works, customer_ids, outcomes).await
        }
        JobEnd::Refused { status, message } if works.len() > 1 => {
            let works = works.into_iter().zip(customer_ids).collect();
            split_conversations(shared, works, (status, &message)).await
        }
        JobEnd::Refused { status, message } => {
            let halt = Halt::Failed {
                field: None,
                reason: format!("conversation refused ({status}): {message}"),
            };
            finish_all(shared, works, halt, Vec::new()).await
        }
        JobEnd::NotSent(halt) => finish_all(shared, works, halt, Vec::new()).await,
        JobEnd::NotTaken(halt) => {
            let changes = withdraw_conversations(&works, &customer_ids);
            finish_all(shared, works, halt, changes).await
        }
        JobEnd::Unsupported => {
            record_or_halt(shared, withdraw_conversations(&works, &customer_ids)).await;
            works
                .into_iter()
                .zip(customer_ids)
                .map(|(work, customer_id)| (work, Next::Continue(CustomerStep::Known(customer_id))))
                .collect()
        }
        JobEnd::Unknown(after) => works
            .into_iter()
            .zip(customer_ids)
            .map(|(mut work, customer_id)| {
                work.conversation_unknown = true;
                (work, Next::after(CustomerStep::Known(customer_id), after))
            })
            .collect(),
        JobEnd::Unfinished(halt) => finish_all(shared, works, halt, Vec::new()).await,
    }
}

/// The intents of a customers job that provably never ran, taken back: the customers are
/// unknown to Kustomer and the rows pending again.
fn withdraw_customers(works: &[Work]) -> Vec<Change> {
    let mut changes = Vec::with_capacity(works.len() * 2);
    for work in works {
        changes.push(Change::CustomerWithdrawn {
            customer_key: work.plan.customer_key.clone(),
        });
        changes.push(Change::Row(row_change(
            &work.origin,
            &work.plan,
            RowState::Pending,
            None,
            None,
        )));
    }
    changes
}

/// The intents of a conversations job that provably never ran, taken back: the rows are
/// back at their customer.
fn withdraw_conversations(works: &[Work], customer_ids: &[String]) -> Vec<Change> {
    works
        .iter()
        .zip(customer_ids)
        .map(|(work, customer_id)| {
            Change::Row(row_change(
                &work.origin,
                &work.plan,
                RowState::CustomerOk,
                Some(customer_id.clone()),
                None,
            ))
        })
        .collect()
}

/// A job refused whole: each half goes as a job of its own, until the bad item is alone.
/// (Two functions, not one generic: a recursive async fn's `Send` is only inferred when
/// each recursion names itself.)
async fn split_customers(
    shared: &Shared,
    mut works: Vec<Work>,
    (status, message): (u16, &str),
) -> Vec<(Work, Next)> {
    log_split(BulkKind::Customers, works.len(), status, message);
    let second = works.split_off(works.len() / 2);
    let mut ended = Box::pin(run_customer_job(shared, works)).await;
    ended.extend(Box::pin(run_customer_job(shared, second)).await);
    ended
}

async fn split_conversations(
    shared: &Shared,
    mut works: Vec<(Work, String)>,
    (status, message): (u16, &str),
) -> Vec<(Work, Next)> {
    log_split(BulkKind::Conversations, works.len(), status, message);
    let second = works.split_off(works.len() / 2);
    let mut ended = Box::pin(run_conversation_job(shared, works)).await;
    ended.extend(Box::pin(run_conversation_job(shared, second)).await);
    ended
}

fn log_split(kind: BulkKind, items: usize, status: u16, message: &str) {
    tracing::info!(
        "a {} bulk job of {items} items was refused whole ({status}: {message}); sending it \
         in halves",
        kind.as_str()
    );
}

/// A body as a bulk item: the single endpoint's body plus its `_clientRef`.
fn with_client_ref(body: &impl serde::Serialize, client_ref: &str) -> Value {
    let mut value =
        serde_json::to_value(body).unwrap_or_else(|_| Value::Object(Default::default()));
    if let Value::Object(map) = &mut value {
        map.insert("_clientRef".into(), Value::String(client_ref.to_string()));
    }
    value
}

/// How a job ended, as far as this run can tell.
enum JobEnd {
    /// Complete: each item's outcome by `_clientRef` (an item absent is unknown).
    Complete(HashMap<String, ItemOutcome>),
    /// Refused whole with a 4xx: nothing was made.
    Refused { status: u16, message: String },
    /// Neither recorded nor sent (a stop while it waited for its turn, a checkpoint that
    /// could not record it): the rows stay as the checkpoint has them.
    NotSent(Halt),
    /// Sent and never taken, provably (refused key, wrong URL, transient failures that
    /// cannot have applied it): nothing was made, and the rows' intents are taken back.
    NotTaken(Halt),
    /// `--mode auto` and the API has no bulk endpoint: nothing was made, the rows go on
    /// one by one.
    Unsupported,
    /// The submit's answer was lost, or the API kept saying it does not know the job: it
    /// may exist and may still run, so its items are reconciled by lookup, not before the
    /// instant given (None: at once).
    Unknown(Option<tokio::time::Instant>),
    /// Taken, and its outcome not known in this run (polls kept failing, a stop): the job
    /// stays queued in the checkpoint and the next run polls it.
    Unfinished(Halt),
}

/// Submits the job, recording it with the rows' intents first, records its id, polls it to
/// the end and reads its results.
///
/// The job is recorded only once the rate gate lets its request go, and the request leaves
/// right after: a job the checkpoint holds without an answer is one whose request may have
/// left, and that is the only kind a later run waits out. A stop is heeded before the
/// record (and before a resend), never between the record and its request: a job still
/// waiting for its turn when the run stops, or whose record cannot be written (a full
/// disk), is neither recorded nor sent.
async fn submit_and_wait(
    shared: &Shared,
    job: i64,
    kind: BulkKind,
    bodies: Vec<Value>,
    items: Vec<BulkItem>,
    mut intents: Vec<Change>,
) -> JobEnd {
    intents.push(Change::BulkJobSubmitting { job, kind, items });
    let mut unrecorded = Some(intents);
    let mut retry = Retry::new(shared, &shared.stop.soft);
    let submitted = loop {
        let turn = tokio::select! {
            biased;
            () = shared.stop.soft.cancelled() => {
                let halt = Halt::Pending("the run is stopping".into());
                if unrecorded.is_some() {
                    return JobEnd::NotSent(halt);
                }
                end_job(shared, job, BulkJobState::Refused).await;
                return JobEnd::NotTaken(halt);
            }
            turn = shared.client.turn() => match turn {
                Ok(turn) => turn,
                // The gate let nothing through (a stop, a stall): the request never left.
                Err(error) => {
                    let halt = match &error {
                        ApiError::NotSent(held) => not_sent(shared, held),
                        other => Halt::Pending(other.to_string()),
                    };
                    if unrecorded.is_some() {
                        return JobEnd::NotSent(halt);
                    }
                    end_job(shared, job, BulkJobState::Refused).await;
                    return JobEnd::NotTaken(halt);
                }
            },
        };
        if let Some(record) = unrecorded.take()
            && let Err(halt) = commit_or_halt(shared, record).await
        {
            return JobEnd::NotSent(halt);
        }
        match shared.client.submit_bulk(kind, &bodies, turn).await {
            Ok(submitted) => break submitted,
            Err(error) => {
                let rows = bodies.len();
                if let Some(end) = submit_failed(shared, job, kind, rows, error, &mut retry).await {
                    return end;
                }
            }
        }
    };
    let answered = tokio::time::Instant::now();
    let SubmittedJob { id: job_id, status } = submitted;
    // Before anything else: a run killed from here on polls this job instead of sending
    // its rows again.
    let queued = Change::BulkJobQueued {
        job,
        job_id: job_id.clone(),
    };
    if let Err(halt) = commit_or_halt(shared, vec![queued]).await {
        return JobEnd::Unfinished(halt);
    }
    let started = Started::Submitted { answered, status };
    match wait_for_results(shared, &job_id, started, &shared.stop.hard, MOST_JOB_WAIT).await {
        Ok(outcomes) => JobEnd::Complete(outcomes),
        Err(WaitEnd::Vanished(reason)) => {
            // As for a lost answer: it may be a job the API will know and run after all.
            let wait = shared.settings.bulk_lost_wait;
            tracing::warn!(
                "bulk job {job_id}: {reason}; its rows are looked up in {:.0} s",
                wait.as_secs_f64()
            );
            end_job(shared, job, BulkJobState::Lost).await;
            JobEnd::Unknown(Some(tokio::time::Instant::now() + wait))
        }
        Err(WaitEnd::Halted(halt)) => JobEnd::Unfinished(halt),
    }
}

/// What a failed submit means for its job: how the job ends, or None when it goes again
/// (after the backoff).
async fn submit_failed(
    shared: &Shared,
    job: i64,
    kind: BulkKind,
    rows: usize,
    error: ApiError,
    retry: &mut Retry<'_>,
) -> Option<JobEnd> {
    let end = match error {
        ApiError::Rejected { status, message }
            if matches!(status, 404 | 405) && shared.settings.mode == ImportMode::Auto =>
        {
            // Said once: the jobs in flight together all meet it.
            if !shared.bulk_unavailable.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the API has no bulk jobs here ({status}: {message}): this run goes on \
                     one request per record"
                );
            }
            end_job(shared, job, BulkJobState::Refused).await;
            JobEnd::Unsupported
        }
        ApiError::Rejected { status, message } if matches!(status, 404 | 405) => {
            shared.halt_run(StopReason::Endpoint(format!(
                "submitting a {} bulk job answered {status} ({message}): is the base URL \
                 right, and does the org have bulk jobs?",
                kind.as_str()
            )));
            end_job(shared, job, BulkJobState::Refused).await;
            JobEnd::NotTaken(Halt::Pending(format!("the API answered {status}")))
        }
        ApiError::Rejected { status, message } => {
            end_job(shared, job, BulkJobState::Refused).await;
            JobEnd::Refused { status, message }
        }
        ApiError::Duplicate { message } => {
            end_job(shared, job, BulkJobState::Refused).await;
            JobEnd::Refused {
                status: 409,
                message,
            }
        }
        error if error.maybe_applied() => {
            let wait = shared.settings.bulk_lost_wait;
            tracing::warn!(
                "the answer to a {} bulk job was lost ({error}); its {rows} rows are looked up \
                 in {:.0} s, once a job still queued would have run",
                kind.as_str(),
                wait.as_secs_f64()
            );
            // Lost now: a run that resumes before the lookups waits out the rest.
            end_job(shared, job, BulkJobState::Lost).await;
            JobEnd::Unknown(Some(tokio::time::Instant::now() + wait))
        }
        // Not taken (a 503, a refused connection): no job was made, so the same job goes
        // again after the backoff, within the job's retry budget.
        error => match retry.after_failure(&error).await {
            Ok(()) => return None,
            Err(halt) => {
                end_job(shared, job, BulkJobState::Refused).await;
                JobEnd::NotTaken(halt)
            }
        },
    };
    Some(end)
}

async fn end_job(shared: &Shared, job: i64, state: BulkJobState) {
    let _ = commit_or_halt(shared, vec![Change::BulkJobEnded { job, state }]).await;
}

/// Why polling a job ended without its results.
enum WaitEnd {
    /// The API kept answering 404 for the job: it does not know it.
    Vanished(String),
    Halted(Halt),
}

/// Where a job stood when the wait for its results began.
enum Started {
    /// Submitted in this run: its submit was answered then, saying this. Paced by
    /// [`JobPace`], and taught to it.
    Submitted {
        answered: tokio::time::Instant,
        status: JobStatus,
    },
    /// Left by an earlier run, most likely done: polled at once, and not taught to the
    /// pace (the time since its submit says nothing of how long jobs take).
    Earlier,
}

/// Waits until a job has ended (see [`poll_until_ended`]), then reads its results. Transient
/// failures back off within the retry budget, and so do 404s (a job store may lag behind the
/// submit's answer) until they are all there is; a job still not done after `most_wait`, or
/// `give_up`, ends the wait with the job left queued for the next run.
async fn wait_for_results(
    shared: &Shared,
    job_id: &str,
    started: Started,
    give_up: &CancellationToken,
    most_wait: Duration,
) -> Result<HashMap<String, ItemOutcome>, WaitEnd> {
    let mut retry = Retry::new(shared, give_up);
    poll_until_ended(shared, job_id, started, &mut retry, give_up, most_wait).await?;
    loop {
        match shared.client.bulk_results(job_id).await {
            // An ended job with no result at all may be one whose batches are not written
            // yet: ask again within the retry budget before taking every item for unknown.
            Ok(outcomes) if outcomes.is_empty() => {
                let reason = format!("bulk job {job_id} ended with no results");
                match retry.backoff(&reason).await {
                    Ok(()) => {}
                    Err(NoRetry::Exhausted(_)) => return Ok(outcomes),
                    Err(NoRetry::Stopping) => {
                        return Err(WaitEnd::Halted(Halt::Pending("the run is stopping".into())));
                    }
                }
            }
            Ok(outcomes) => return Ok(outcomes),
            Err(error) => poll_failed(&mut retry, job_id, &error).await?,
        }
    }
}

/// Polls a job until it has ended: not at all when its submit's answer said so already,
/// first when [`JobPace`] says it is due, then, while it is unfinished, a quarter of that
/// later and doubling (a probe looks again when the other jobs are due).
async fn poll_until_ended(
    shared: &Shared,
    job_id: &str,
    started: Started,
    retry: &mut Retry<'_>,
    give_up: &CancellationToken,
    most_wait: Duration,
) -> Result<(), WaitEnd> {
    let stopping = || WaitEnd::Halted(Halt::Pending("the run is stopping".into()));
    let (answered, paced) = match started {
        Started::Submitted {
            status: JobStatus::Complete | JobStatus::Ended(_),
            ..
        } => return Ok(()),
        Started::Submitted { answered, .. } => (answered, true),
        Started::Earlier => (tokio::time::Instant::now(), false),
    };
    let (mut next, probe) = if paced {
        let pace = &shared.job_pace;
        pace.first_poll(answered, give_up)
            .await
            .ok_or_else(stopping)?
    } else {
        (answered, None)
    };
    let first_wait = if paced {
        next.saturating_duration_since(answered)
    } else {
        FIRST_POLL
    };
    let mut interval = first_wait / 4;
    let mut last_unfinished = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = give_up.cancelled() => return Err(stopping()),
        }
        let asked = answered.elapsed();
        match shared.client.bulk_status(job_id).await {
            Ok(JobStatus::Complete) => break,
            Ok(JobStatus::Ended(status)) => {
                tracing::warn!(
                    "bulk job {job_id} ended {status}: what it made is read from its results, \
                     the rest is looked up"
                );
                break;
            }
            Ok(JobStatus::Waiting(status)) if answered.elapsed() >= most_wait => {
                tracing::warn!(
                    "bulk job {job_id} is still {status} after {} s: the next run polls it, \
                     and its rows stay pending until then",
                    most_wait.as_secs()
                );
                return Err(WaitEnd::Halted(Halt::Pending(format!(
                    "its bulk job {job_id} is still {status}"
                ))));
            }
            Ok(JobStatus::Waiting(status)) => {
                tracing::debug!("bulk job {job_id} is {status}");
                let first_miss = last_unfinished.is_none();
                last_unfinished = Some(asked);
                let now = tokio::time::Instant::now();
                next = match shared.job_pace.due() {
                    Some(due) if probe.is_some() && first_miss && answered + due > now => {
                        answered + due
                    }
                    _ => {
                        let wait = interval.clamp(LEAST_POLL, MOST_POLL);
                        interval = wait * 2;
                        now + wait
                    }
                };
            }
            Err(error) => {
                poll_failed(retry, job_id, &error).await?;
                next = tokio::time::Instant::now();
            }
        }
    }
    if paced {
        shared.job_pace.learn(Seen {
            complete_at: answered.elapsed(),
            last_unfinished,
            probed: probe.is_some(),
        });
    }
    Ok(())
}

async fn poll_failed(retry: &mut Retry<'_>, job_id: &str, error: &ApiError) -> Result<(), WaitEnd> {
    if let ApiError::Rejected {
        status: 404,
        message,
    } = error
    {
        // A job store may lag behind the submit's answer: 404s are retried like transient
        // failures, and only when the budget is spent is the job taken for unknown.
        let reason = format!("the API does not know it (404: {message})");
        return retry.backoff(&reason).await.map_err(|end| match end {
            NoRetry::Exhausted(reason) => WaitEnd::Vanished(reason),
            NoRetry::Stopping => WaitEnd::Halted(Halt::Pending("the run is stopping".into())),
        });
    }
    retry.after_failure(error).await.map_err(|halt| {
        tracing::warn!("bulk job {job_id} could not be polled: {error}; the next run polls it");
        WaitEnd::Halted(halt)
    })
}

/// Applies a customers job's results: customers made (or updated) are recorded and their
/// rows go on; refused ones fail with the item's error; duplicates go to single mode's
/// linking; items with no result to reconciliation.
async fn apply_customer_results(
    shared: &Shared,
    job: i64,
    works: Vec<Work>,
    mut outcomes: HashMap<String, ItemOutcome>,
) -> Vec<(Work, Next)> {
    let mut changes = Vec::new();
    let mut settlements = Vec::new();
    let mut nexts = Vec::with_capacity(works.len());
    for (index, work) in works.iter().enumerate() {
        let customer_key = work.plan.customer_key.clone();
        let found = match outcomes.remove(&index.to_string()) {
            Some(ItemOutcome::Created(id)) => Ok((id, CustomerOrigin::Created)),
            Some(ItemOutcome::Updated(id)) => shared.settings.on_existing_customer.settle(id),
            // Kustomer says it exists, or only says no in words: single mode's linking,
            // which looks the customer up before anything fails.
            Some(
                ItemOutcome::Failed(ApiError::Duplicate { message })
                | ItemOutcome::Unexplained(message),
            ) => {
                nexts.push(Next::Continue(CustomerStep::Link { message }));
                continue;
            }
            Some(ItemOutcome::Failed(error)) if !error.maybe_applied() => {
                Err(item_refused("customer", &error))
            }
            // No result, or one that says only that something went wrong on the way:
            // looked up, after the wait single mode gives a lost answer.
            Some(ItemOutcome::Failed(_)) | None => {
                let step = CustomerStep::Create {
                    reconcile_first: true,
                };
                nexts.push(Next::ContinueAfter(step, reconcile_at(shared)));
                continue;
            }
        };
        match found {
            Ok((id, origin)) => {
                changes.push(Change::CustomerResolved {
                    customer_key: customer_key.clone(),
                    customer_id: id.clone(),
                    origin,
                });
                settlements.push((customer_key, Settlement::Known(id.clone(), origin)));
                if work.plan.conversation.is_some() {
                    let row = row_change(
                        &work.origin,
                        &work.plan,
                        RowState::CustomerOk,
                        Some(id.clone()),
                        None,
                    );
                    changes.push(Change::Row(row));
                    nexts.push(Next::Continue(CustomerStep::Known(id)));
                } else {
                    let row = row_change(&work.origin, &work.plan, RowState::Done, Some(id), None);
                    changes.push(Change::Row(row));
                    nexts.push(Next::Finished(RowOutcome::Done { conversation: None }));
                }
            }
            Err(halt) => {
                changes.push(Change::CustomerWithdrawn {
                    customer_key: customer_key.clone(),
                });
                changes.extend(halt_change(work, &halt, 0).map(Change::Row));
                settlements.push((customer_key, Settlement::of_halt(&halt)));
                nexts.push(Next::Finished(RowOutcome::Halted(halt)));
            }
        }
    }
    changes.push(Change::BulkJobEnded {
        job,
        state: BulkJobState::Complete,
    });
    // Waited for: rows of these customers read next look their ids up in the checkpoint.
    if let Err(halt) = commit_or_halt(shared, changes).await {
        return finish_customers_with(shared, works, halt, Vec::new()).await;
    }
    for (customer_key, settlement) in settlements {
        let _ = shared.events.send(Event::CustomerSettled {
            customer_key,
            settlement,
        });
    }
    works.into_iter().zip(nexts).collect()
}

/// Applies a conversations job's results: done, failed with the item's error, or (a
/// duplicate, or no result) looked up by externalId through single mode's path.
async fn apply_conversation_results(
    shared: &Shared,
    job: i64,
    works: Vec<Work>,
    customer_ids: Vec<String>,
    mut outcomes: HashMap<String, ItemOutcome>,
) -> Vec<(Work, Next)> {
    let mut changes = Vec::new();
    let mut ended = Vec::with_capacity(works.len());
    for (index, (mut work, customer_id)) in works.into_iter().zip(customer_ids).enumerate() {
        let (conversation_id, created) = match outcomes.remove(&index.to_string()) {
            Some(ItemOutcome::Created(id)) => (id, true),
            Some(ItemOutcome::Updated(id)) => (id, false),
            Some(ItemOutcome::Failed(ApiError::Duplicate { .. })) => {
                work.conversation_unknown = true;
                ended.push((work, Next::Continue(CustomerStep::Known(customer_id))));
                continue;
            }
            Some(ItemOutcome::Failed(error)) if error.maybe_applied() => {
                work.conversation_unknown = true;
                let step = CustomerStep::Known(customer_id);
                ended.push((work, Next::ContinueAfter(step, reconcile_at(shared))));
                continue;
            }
            // Refused in words only, which may hide trouble on the way after a write: looked
            // up by its externalId, then sent alone for the single endpoint's verdict.
            Some(ItemOutcome::Unexplained(message)) if has_external_id(&work) => {
                tracing::debug!("a bulk job refused a conversation ({message}): looked up");
                work.conversation_unknown = true;
                let step = CustomerStep::Known(customer_id);
                ended.push((work, Next::ContinueAfter(step, reconcile_at(shared))));
                continue;
            }
            None => {
                work.conversation_unknown = true;
                let step = CustomerStep::Known(customer_id);
                ended.push((work, Next::ContinueAfter(step, reconcile_at(shared))));
                continue;
            }
            // With nothing to look it up by, sending it again could make it twice.
            Some(ItemOutcome::Unexplained(message)) => {
                let halt = Halt::Failed {
                    field: None,
                    reason: format!("conversation refused: {message}"),
                };
                changes.extend(halt_change(&work, &halt, 0).map(Change::Row));
                ended.push((work, Next::Finished(RowOutcome::Halted(halt))));
                continue;
            }
            Some(ItemOutcome::Failed(error)) => {
                let halt = item_refused("conversation", &error);
                changes.extend(halt_change(&work, &halt, 0).map(Change::Row));
                ended.push((work, Next::Finished(RowOutcome::Halted(halt))));
                continue;
            }
        };
        changes.push(Change::Row(row_change(
            &work.origin,
            &work.plan,
            RowState::Done,
            Some(customer_id),
            Some(conversation_id),
        )));
        ended.push((
            work,
            Next::Finished(RowOutcome::Done {
                // An item the job updated was there already: linked, as after a 409.
                conversation: Some(if created {
                    CustomerOrigin::Created
                } else {
                    CustomerOrigin::Linked
                }),
            }),
        ));
    }
    changes.push(Change::BulkJobEnded {
        job,
        state: BulkJobState::Complete,
    });
    // Outcomes: losing them only means the next run polls the job again.
    if let Err(error) = shared.writer.record(changes).await {
        shared.halt_run(StopReason::of_checkpoint(&error));
    }
    ended
}

/// Whether a row's conversation can be looked up (by its externalId).
fn has_external_id(work: &Work) -> bool {
    work.plan
        .conversation
        .as_ref()
        .is_some_and(|conversation| conversation.external_id.is_some())
}

/// When an item whose outcome is unknown may be looked up: single mode's wait after a
/// lost answer, for a write still in progress (or an index that lags) to show.
fn reconcile_at(shared: &Shared) -> tokio::time::Instant {
    tokio::time::Instant::now() + shared.settings.reconcile_delay
}

/// An item's refusal as the row's failure, in the words a single create's would have.
fn item_refused(record: &str, error: &ApiError) -> Halt {
    let reason = match error {
        ApiError::Rejected { status, message } => format!("{record} refused ({status}): {message}"),
        other => format!("{record} refused: {other}"),
    };
    Halt::Failed {
        field: None,
        reason,
    }
}

/// Ends every row of a customers job the same way: `changes` and each row's halt recorded,
/// then the rows waiting for these customers told (in that order: a row of one of these
/// customers planned next must find the withdrawal queued before its own intent).
async fn finish_customers_with(
    shared: &Shared,
    works: Vec<Work>,
    halt: Halt,
    changes: Vec<Change>,
) -> Vec<(Work, Next)> {
    let keys: Vec<String> = works.iter().map(|w| w.plan.customer_key.clone()).collect();
    let ended = finish_all(shared, works, halt.clone(), changes).await;
    for customer_key in keys {
        let _ = shared.events.send(Event::CustomerSettled {
            customer_key,
            settlement: Settlement::of_halt(&halt),
        });
    }
    ended
}

async fn finish_all(
    shared: &Shared,
    works: Vec<Work>,
    halt: Halt,
    changes: Vec<Change>,
) -> Vec<(Work, Next)> {
    if !changes.is_empty() {
        record_or_halt(shared, changes).await;
    }
    let mut ended = Vec::with_capacity(works.len());
    for work in works {
        record_halt(shared, &work, &halt, 0).await;
        ended.push((work, Next::Finished(RowOutcome::Halted(halt.clone()))));
    }
    ended
}

/// Retries of one job's calls: the same budget and backoff as a row's, cut short by
/// `stop`.
struct Retry<'a> {
    shared: &'a Shared,
    budget: RetryBudget,
    stop: &'a CancellationToken,
}

/// Why [`Retry::backoff`] says not to try again.
enum NoRetry {
    /// The retry budget is spent.
    Exhausted(String),
    Stopping,
}

impl<'a> Retry<'a> {
    fn new(shared: &'a Shared, stop: &'a CancellationToken) -> Retry<'a> {
        Retry {
            shared,
            budget: RetryBudget::default(),
            stop,
        }
    }

    /// Waits out the backoff after a transient failure, within the budget.
    async fn backoff(&mut self, reason: &str) -> Result<(), NoRetry> {
        let delay = self
            .budget
            .next_delay(&self.shared.settings, reason)
            .map_err(NoRetry::Exhausted)?;
        tracing::debug!("bulk job: retrying after: {reason}");
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.stop.cancelled() => Err(NoRetry::Stopping),
        }
    }

    /// Waits out the backoff after a failure that is not the job's, or says why not.
    async fn after_failure(&mut self, error: &ApiError) -> Result<(), Halt> {
        match error {
            ApiError::Unauthorized { status, message } => {
                Err(key_refused(self.shared, *status, message))
            }
            ApiError::WrongBaseUrl { .. } | ApiError::Unreachable { .. } => {
                Err(base_url_wrong(self.shared, error))
            }
            ApiError::NotSent(held) => Err(not_sent(self.shared, held)),
            ApiError::Transient { reason, .. } => {
                self.backoff(reason).await.map_err(|end| match end {
                    NoRetry::Exhausted(reason) => Halt::Pending(reason),
                    NoRetry::Stopping => Halt::Pending("the run is stopping".into()),
                })
            }
            other => Err(Halt::Pending(format!(
                "a bulk job poll was refused: {other}"
            ))),
        }
    }
}

/// What a run learnt from the jobs earlier runs left unfinished.
#[derive(Debug, Default)]
pub(super) struct EarlierJobs {
    /// Rows of jobs still unfinished: not planned in this run (pending), so that nothing a
    /// queued job carries is sent again.
    pub held_rows: HashSet<String>,
    /// Customers those jobs create: their other rows wait too.
    pub held_customers: HashSet<String>,
    /// Rows those jobs settled now, counted as this run's work, not as skipped or failed
    /// earlier; true for a row whose conversation the job created.
    pub settled_rows: HashMap<String, bool>,
    /// Customers those jobs could not create, with the reason: their other rows fail
    /// without sending the same doomed create again.
    pub failed_customers: HashMap<String, (Option<String>, String)>,
    /// Rows whose customer those jobs refused as a duplicate, with the server's words: they
    /// are linked as a single create's 409 would be, under `--on-existing-customer`.
    pub link_rows: HashMap<String, String>,
    pub customers_created: u64,
    pub customers_linked: u64,
}

/// Before any row is planned: polls the jobs earlier runs left queued and applies their
/// results; waits out jobs whose submit answer was lost (their rows are then reconciled by
/// lookup when they are read). A stop, or a job that cannot be polled, leaves its rows held.
pub(super) async fn finish_earlier_jobs(
    shared: &Shared,
    checkpoint: &Checkpoint,
) -> Result<EarlierJobs, CheckpointError> {
    let lost_since = SystemTime::now()
        .checked_sub(shared.settings.bulk_lost_wait)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let jobs = checkpoint.unfinished_bulk_jobs(lost_since)?;
    let mut earlier = EarlierJobs::default();
    if jobs.is_empty() {
        return Ok(earlier);
    }
    tracing::info!(
        "{} bulk jobs of an earlier run are unfinished: settling them first",
        jobs.len()
    );
    let settled =
        futures_util::future::join_all(jobs.iter().map(|job| finish_earlier_job(shared, job)))
            .await;
    let mut uncertain = false;
    for (job, outcome) in jobs.iter().zip(settled) {
        match outcome {
            Some(EarlierOutcome::Applied(applied)) => {
                uncertain |= applied.uncertain;
                earlier.customers_created += applied.customers_created;
                earlier.customers_linked += applied.customers_linked;
                earlier.settled_rows.extend(applied.settled_rows);
                earlier.failed_customers.extend(applied.failed_customers);
                earlier.link_rows.extend(applied.link_rows);
            }
            Some(EarlierOutcome::Released) => {}
            None => {
                earlier
                    .held_rows
                    .extend(job.items.iter().map(|i| i.row_key.clone()));
                earlier
                    .held_customers
                    .extend(job.items.iter().filter_map(|i| i.customer_key.clone()));
            }
        }
    }
    // Items with no result, or an uncertain one, are looked up when their rows are read:
    // not before single mode's wait after a lost answer.
    if uncertain {
        tokio::select! {
            () = tokio::time::sleep(shared.settings.reconcile_delay) => {}
            () = shared.stop.soft.cancelled() => {}
        }
    }
    Ok(earlier)
}

enum EarlierOutcome {
    /// Its results are in the checkpoint.
    Applied(Applied),
    /// Lost: its rows are left to reconciliation by lookup.
    Released,
}

#[derive(Default)]
struct Applied {
    customers_created: u64,
    customers_linked: u64,
    settled_rows: HashMap<String, bool>,
    failed_customers: HashMap<String, (Option<String>, String)>,
    link_rows: HashMap<String, String>,
    /// Some item had no result, or an uncertain one: its row keeps its intent.
    uncertain: bool,
}

/// Waits until a job whose answer was lost (`since`) would have run, so that its rows'
/// lookups find what it made. False: the run is stopping.
async fn wait_out_lost_job(shared: &Shared, job: i64, since: SystemTime) -> bool {
    let age = SystemTime::now().duration_since(since).unwrap_or_default();
    let left = shared.settings.bulk_lost_wait.saturating_sub(age);
    if !left.is_zero() {
        tracing::info!(
            "bulk job {job} of an earlier run never got its answer: waiting {:.0} s before its \
             rows are looked up",
            left.as_secs_f64()
        );
        tokio::select! {
            () = tokio::time::sleep(left) => {}
            () = shared.stop.soft.cancelled() => return false,
        }
    }
    true
}

/// One earlier job: polled (queued) or waited out (submitting, lost). None: still
/// unsettled, its rows held.
async fn finish_earlier_job(shared: &Shared, job: &StoredBulkJob) -> Option<EarlierOutcome> {
    let job_id = match (&job.job_id, job.state) {
        (Some(job_id), BulkJobState::Queued) => job_id,
        (_, state) => {
            let waited = wait_out_lost_job(shared, job.id, job.since).await;
            if waited && state == BulkJobState::Submitting {
                let waited_out = Change::BulkJobWaitedOut { job: job.id };
                let _ = commit_or_halt(shared, vec![waited_out]).await;
            }
            return waited.then_some(EarlierOutcome::Released);
        }
    };
    let started = Started::Earlier;
    let give_up = &shared.stop.soft;
    let outcomes = match wait_for_results(shared, job_id, started, give_up, EARLIER_JOB_WAIT).await
    {
        Ok(outcomes) => outcomes,
        Err(WaitEnd::Vanished(reason)) => {
            // Lost from now on: it may be a job the API will know and run after all.
            tracing::warn!("bulk job {job_id}: {reason}; its rows are looked up later");
            end_job(shared, job.id, BulkJobState::Lost).await;
            return wait_out_lost_job(shared, job.id, SystemTime::now())
                .await
                .then_some(EarlierOutcome::Released);
        }
        Err(WaitEnd::Halted(_)) => return None,
    };
    let mut changes = Vec::new();
    let mut applied = Applied::default();
    for item in &job.items {
        let (intent, record) = match job.kind {
            BulkKind::Customers => (RowState::CustomerSent, "customer"),
            BulkKind::Conversations => (RowState::ConversationSent, "conversation"),
        };
        // A row that has moved on since (settled by lookup after all) is not touched.
        if item.state != intent {
            continue;
        }
        let row = |state: RowState, customer_id: Option<String>, conversation_id| RowChange {
            customer_id,
            conversation_id,
            ..RowChange::new(
                item.row_key.clone(),
                item.source_file.clone(),
                item.line,
                state,
            )
        };
        let outcome = outcomes.get(&item.client_ref);
        // A refusal that fails the row; None for every other outcome.
        let refusal = match (outcome, &item.customer_key) {
            (Some(ItemOutcome::Updated(id)), Some(_)) => shared
                .settings
                .on_existing_customer
                .settle(id.clone())
                .err(),
            (Some(ItemOutcome::Failed(error)), _)
                if !matches!(error, ApiError::Duplicate { .. }) && !error.maybe_applied() =>
            {
                Some(item_refused(record, error))
            }
            _ => None,
        };
        let refusal = match refusal {
            Some(Halt::Failed { reason, .. }) => Some(reason),
            _ => None,
        };
        if let Some(reason) = refusal {
            if let Some(customer_key) = &item.customer_key {
                changes.push(Change::CustomerWithdrawn {
                    customer_key: customer_key.clone(),
                });
                let reason = format!("its customer could not be created: {reason}");
                applied
                    .failed_customers
                    .insert(customer_key.clone(), (None, reason));
            }
            let mut failed = row(RowState::Failed, None, None);
            failed.error = Some(reason);
            changes.push(Change::Row(failed));
            applied.settled_rows.insert(item.row_key.clone(), false);
            continue;
        }
        match (outcome, &item.customer_key) {
            (Some(ItemOutcome::Created(id) | ItemOutcome::Updated(id)), Some(customer_key)) => {
                let origin = if matches!(outcome, Some(ItemOutcome::Created(_))) {
                    applied.customers_created += 1;
                    CustomerOrigin::Created
                } else {
                    applied.customers_linked += 1;
                    CustomerOrigin::Linked
                };
                changes.push(Change::CustomerResolved {
                    customer_key: customer_key.clone(),
                    customer_id: id.clone(),
                    origin,
                });
                changes.push(Change::Row(row(
                    RowState::CustomerOk,
                    Some(id.clone()),
                    None,
                )));
                applied.settled_rows.insert(item.row_key.clone(), false);
            }
            (Some(ItemOutcome::Created(id) | ItemOutcome::Updated(id)), None) => {
                changes.push(Change::Row(row(
                    RowState::Done,
                    item.customer_id.clone(),
                    Some(id.clone()),
                )));
                let created = matches!(outcome, Some(ItemOutcome::Created(_)));
                applied.settled_rows.insert(item.row_key.clone(), created);
            }
            // A customer that exists (or refused in words only): linked when its row is
            // read, under the policy, or sent alone if no lookup finds it. The intent stays
            // until then.
            (
                Some(
                    ItemOutcome::Failed(ApiError::Duplicate { message })
                    | ItemOutcome::Unexplained(message),
                ),
                Some(_),
            ) => {
                applied
                    .link_rows
                    .insert(item.row_key.clone(), message.clone());
            }
            // A conversation refused as a duplicate is looked up, as after a 409.
            (Some(ItemOutcome::Failed(ApiError::Duplicate { .. })), None) => {}
            // No result, or an uncertain one: the intent stays, and planning looks the
            // record up, after the wait.
            _ => applied.uncertain = true,
        }
    }
    changes.push(Change::BulkJobEnded {
        job: job.id,
        state: BulkJobState::Complete,
    });
    commit_or_halt(shared, changes).await.ok()?;
    Some(EarlierOutcome::Applied(applied))
}
