//! Building, recording and sending bulk jobs: a batch of rows becomes a job whose items
//! carry `_clientRef`s, recorded with the rows' intents once the rate gate gives its turn,
//! then sent; how the submit ended decides what becomes of every row ([`JobEnd`]). A job
//! refused whole is split in halves until the bad item alone is refused.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use serde_json::Value;

use super::MOST_JOB_WAIT;
use super::poll::{JobRef, Started, WaitEnd, wait_for_results};
use super::results::{apply_conversation_results, apply_customer_results};
use super::{AfterJob, Jobs};
use crate::api::{ApiError, BulkKind, ItemOutcome, SubmittedJob};
use crate::checkpoint::{BulkItem, BulkJobState, Change};
use crate::mapping::CustomerBody;
use crate::pipeline::company::customer_to_send;
use crate::pipeline::failure::{Call, Retries, endpoint_missing, refusal, stops_the_run};
use crate::pipeline::handles::Tools;
use crate::pipeline::planner::Event;
use crate::pipeline::row::{CustomerStep, Halt, PlannedRow, RowOutcome, Settlement, Step};
use crate::pipeline::worker::{Attempts, record_halt};

/// A customers job: each work creates its row's customer.
pub(in crate::pipeline) async fn run_customer_job(
    tools: &Tools,
    jobs: &Jobs,
    works: Vec<PlannedRow>,
) -> Vec<(PlannedRow, AfterJob)> {
    super::companies::make_companies(tools, jobs, &works).await;
    let (works, customers, mut ended) = with_companies(tools, works).await;
    ended.extend(submit_customers(tools, jobs, works, customers).await);
    ended
}

/// The customers of `works` as they are sent, each with its company's id (settled by
/// `make_companies` before, or now the single way); a row whose company cannot be had ends
/// here.
async fn with_companies(
    tools: &Tools,
    works: Vec<PlannedRow>,
) -> (
    Vec<PlannedRow>,
    Vec<CustomerBody>,
    Vec<(PlannedRow, AfterJob)>,
) {
    let mut attempts = Attempts::new(tools);
    let (mut ready, mut customers, mut ended) = (Vec::new(), Vec::new(), Vec::new());
    for work in works {
        match customer_to_send(tools, &work, &mut attempts).await {
            Ok(body) => {
                customers.push(body.into_owned());
                ready.push(work);
            }
            Err(halt) => {
                ended.extend(finish_customers_with(tools, vec![work], halt, Vec::new()).await);
            }
        }
    }
    (ready, customers, ended)
}

async fn submit_customers(
    tools: &Tools,
    jobs: &Jobs,
    works: Vec<PlannedRow>,
    customers: Vec<CustomerBody>,
) -> Vec<(PlannedRow, AfterJob)> {
    if works.is_empty() {
        return Vec::new();
    }
    let job = jobs.next_number();
    let mut intents = Vec::with_capacity(works.len() * 3 + 1);
    let mut bodies = Vec::with_capacity(works.len());
    let mut items = Vec::with_capacity(works.len());
    for (index, (work, customer)) in works.iter().zip(&customers).enumerate() {
        let plan = &work.plan;
        let client_ref = index.to_string();
        intents.extend(work.customer_intent(1));
        bodies.push(with_client_ref(customer, &client_ref));
        items.push(BulkItem {
            client_ref,
            row_key: work.origin.key.clone(),
            customer_key: Some(plan.customer_key.clone()),
            record: None,
        });
    }
    let end = submit_and_wait(
        tools,
        jobs,
        job,
        BulkKind::Customers,
        bodies,
        items,
        intents,
    )
    .await;
    match end {
        JobEnd::Complete(outcomes) => apply_customer_results(tools, job, works, outcomes).await,
        JobEnd::Refused(error) if works.len() > 1 => {
            split_customers(tools, jobs, works, &error).await
        }
        JobEnd::Refused(error) => {
            let halt = refusal(Step::Customer, &error);
            let changes = vec![works[0].customer_withdrawn()];
            finish_customers_with(tools, works, halt, changes).await
        }
        JobEnd::NotSent(halt) => finish_customers_with(tools, works, halt, Vec::new()).await,
        JobEnd::NotTaken(halt) => {
            // Provably not applied: the intents are taken back, the rows stay pending.
            let changes = withdraw_customers(&works);
            finish_customers_with(tools, works, halt, changes).await
        }
        JobEnd::Unsupported => {
            tools.journal.record(withdraw_customers(&works)).await;
            let step = || CustomerStep::Create {
                reconcile_first: false,
            };
            works
                .into_iter()
                .map(|work| (work, AfterJob::Continue(step())))
                .collect()
        }
        JobEnd::Unknown(after) => works
            .into_iter()
            .map(|work| {
                let step = CustomerStep::Create {
                    reconcile_first: true,
                };
                (work, AfterJob::after(step, after))
            })
            .collect(),
        JobEnd::Unfinished(halt) => finish_customers_with(tools, works, halt, Vec::new()).await,
    }
}

/// A conversations job: each work's customer is known (`customer_id`).
pub(in crate::pipeline) async fn run_conversation_job(
    tools: &Tools,
    jobs: &Jobs,
    works: Vec<(PlannedRow, String)>,
) -> Vec<(PlannedRow, AfterJob)> {
    let job = jobs.next_number();
    let mut intents = Vec::with_capacity(works.len());
    let mut bodies = Vec::with_capacity(works.len());
    let mut items = Vec::with_capacity(works.len());
    for (index, (work, customer_id)) in works.iter().enumerate() {
        let client_ref = index.to_string();
        let stamp = tools.rules.stamp_imported_at;
        let Some(body) = work.conversation_to_send(customer_id, stamp) else {
            unreachable!("the planner sends only rows with a conversation")
        };
        intents.push(Change::Row(work.conversation_intent(customer_id, 1)));
        bodies.push(with_client_ref(&body, &client_ref));
        items.push(BulkItem {
            client_ref,
            row_key: work.origin.key.clone(),
            customer_key: None,
            record: None,
        });
    }
    let end = submit_and_wait(
        tools,
        jobs,
        job,
        BulkKind::Conversations,
        bodies,
        items,
        intents,
    )
    .await;
    let (works, customer_ids): (Vec<PlannedRow>, Vec<String>) = works.into_iter().unzip();
    match end {
        JobEnd::Complete(outcomes) => {
            apply_conversation_results(tools, job, works, customer_ids, outcomes).await
        }
        JobEnd::Refused(error) if works.len() > 1 => {
            let works = works.into_iter().zip(customer_ids).collect();
            split_conversations(tools, jobs, works, &error).await
        }
        JobEnd::Refused(error) => {
            let halt = refusal(Step::Conversation, &error);
            finish_all(tools, works, halt, Vec::new()).await
        }
        JobEnd::NotSent(halt) => finish_all(tools, works, halt, Vec::new()).await,
        JobEnd::NotTaken(halt) => {
            let changes = withdraw_conversations(&works, &customer_ids);
            finish_all(tools, works, halt, changes).await
        }
        JobEnd::Unsupported => {
            tools
                .journal
                .record(withdraw_conversations(&works, &customer_ids))
                .await;
            works
                .into_iter()
                .zip(customer_ids)
                .map(|(work, customer_id)| {
                    (work, AfterJob::Continue(CustomerStep::Known(customer_id)))
                })
                .collect()
        }
        JobEnd::Unknown(after) => works
            .into_iter()
            .zip(customer_ids)
            .map(|(mut work, customer_id)| {
                work.conversation_unknown = true;
                (
                    work,
                    AfterJob::after(CustomerStep::Known(customer_id), after),
                )
            })
            .collect(),
        JobEnd::Unfinished(halt) => finish_all(tools, works, halt, Vec::new()).await,
    }
}

/// The intents of a customers job that provably never ran, taken back: the customers are
/// unknown to Kustomer and the rows pending again.
fn withdraw_customers(works: &[PlannedRow]) -> Vec<Change> {
    works
        .iter()
        .flat_map(PlannedRow::customer_intent_taken_back)
        .collect()
}

/// The intents of a conversations job that provably never ran, taken back: the rows are
/// back at their customer.
fn withdraw_conversations(works: &[PlannedRow], customer_ids: &[String]) -> Vec<Change> {
    works
        .iter()
        .zip(customer_ids)
        .map(|(work, customer_id)| Change::Row(work.conversation_intent_taken_back(customer_id)))
        .collect()
}

/// A job refused whole: each half goes as a job of its own, until the bad item is alone.
/// (Two functions, not one generic: a recursive async fn's `Send` is only inferred when
/// each recursion names itself.)
async fn split_customers(
    tools: &Tools,
    jobs: &Jobs,
    mut works: Vec<PlannedRow>,
    error: &ApiError,
) -> Vec<(PlannedRow, AfterJob)> {
    log_split(BulkKind::Customers, works.len(), error);
    let second = works.split_off(works.len() / 2);
    let mut ended = Box::pin(run_customer_job(tools, jobs, works)).await;
    ended.extend(Box::pin(run_customer_job(tools, jobs, second)).await);
    ended
}

async fn split_conversations(
    tools: &Tools,
    jobs: &Jobs,
    mut works: Vec<(PlannedRow, String)>,
    error: &ApiError,
) -> Vec<(PlannedRow, AfterJob)> {
    log_split(BulkKind::Conversations, works.len(), error);
    let second = works.split_off(works.len() / 2);
    let mut ended = Box::pin(run_conversation_job(tools, jobs, works)).await;
    ended.extend(Box::pin(run_conversation_job(tools, jobs, second)).await);
    ended
}

pub(super) fn log_split(kind: BulkKind, items: usize, error: &ApiError) {
    tracing::info!(
        "a {} bulk job of {items} items was refused whole ({error}); sending it in halves",
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
pub(super) enum JobEnd {
    /// Complete: each item's outcome by `_clientRef` (an item absent is unknown).
    Complete(HashMap<String, ItemOutcome>),
    /// Refused whole with a 4xx (a refusal or a duplicate): nothing was made.
    Refused(ApiError),
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
pub(super) async fn submit_and_wait(
    tools: &Tools,
    jobs: &Jobs,
    job: i64,
    kind: BulkKind,
    bodies: Vec<Value>,
    items: Vec<BulkItem>,
    mut intents: Vec<Change>,
) -> JobEnd {
    intents.push(Change::BulkJobSubmitting { job, kind, items });
    let mut unrecorded = Some(intents);
    let mut retry = Retries::new(tools, tools.control.soft());
    let submitted = loop {
        let turn = tokio::select! {
            biased;
            () = tools.control.soft().cancelled() => {
                let halt = Halt::stopping();
                if unrecorded.is_some() {
                    return JobEnd::NotSent(halt);
                }
                end_job(tools, job, BulkJobState::Refused).await;
                return JobEnd::NotTaken(halt);
            }
            turn = tools.client.turn() => match turn {
                Ok(turn) => turn,
                // The gate let nothing through (a stop, a stall): the request never left.
                Err(error) => {
                    let halt = stops_the_run(tools, &error)
                        .unwrap_or_else(|| Halt::Pending(error.to_string()));
                    if unrecorded.is_some() {
                        return JobEnd::NotSent(halt);
                    }
                    end_job(tools, job, BulkJobState::Refused).await;
                    return JobEnd::NotTaken(halt);
                }
            },
        };
        if let Some(record) = unrecorded.take()
            && let Err(halt) = tools.journal.commit(record).await
        {
            return JobEnd::NotSent(halt);
        }
        match tools.client.submit_bulk(kind, &bodies, turn).await {
            Ok(submitted) => break submitted,
            Err(error) => {
                let rows = bodies.len();
                if let Some(end) =
                    submit_failed(tools, jobs, job, kind, rows, error, &mut retry).await
                {
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
    if let Err(halt) = tools.journal.commit(vec![queued]).await {
        return JobEnd::Unfinished(halt);
    }
    let started = Started::Submitted { answered, status };
    let waited = JobRef {
        id: &job_id,
        items: bodies.len(),
    };
    match wait_for_results(
        tools,
        jobs,
        waited,
        started,
        tools.control.hard(),
        MOST_JOB_WAIT,
    )
    .await
    {
        Ok(outcomes) => JobEnd::Complete(outcomes),
        Err(WaitEnd::Vanished(reason)) => {
            // As for a lost answer: it may be a job the API will know and run after all.
            let wait = jobs.lost_wait;
            tracing::warn!(
                "bulk job {job_id}: {reason}; its rows are looked up in {:.0} s",
                wait.as_secs_f64()
            );
            end_job(tools, job, BulkJobState::Lost).await;
            JobEnd::Unknown(Some(tokio::time::Instant::now() + wait))
        }
        Err(WaitEnd::Halted(halt)) => JobEnd::Unfinished(halt),
    }
}

/// What a failed submit means for its job: how the job ends, or None when it goes again
/// (after the backoff).
async fn submit_failed(
    tools: &Tools,
    jobs: &Jobs,
    job: i64,
    kind: BulkKind,
    rows: usize,
    error: ApiError,
    retry: &mut Retries<'_>,
) -> Option<JobEnd> {
    let end = match error {
        ApiError::NoSuchEndpoint {
            ref status,
            ref message,
        } if jobs.auto => {
            // Said once: the jobs in flight together all meet it.
            if !jobs.unavailable.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the API has no bulk jobs here ({status}: {message}): this run goes on \
                     one request per record"
                );
            }
            end_job(tools, job, BulkJobState::Refused).await;
            JobEnd::Unsupported
        }
        ApiError::NoSuchEndpoint { .. } => {
            let what = format!("submitting a {} bulk job", kind.as_str());
            let hint = "is the base URL right, and does the org have bulk jobs?";
            let halt = endpoint_missing(tools, &what, &error, hint);
            end_job(tools, job, BulkJobState::Refused).await;
            JobEnd::NotTaken(halt)
        }
        ApiError::Rejected { .. } | ApiError::Duplicate { .. } => {
            end_job(tools, job, BulkJobState::Refused).await;
            JobEnd::Refused(error)
        }
        error if error.maybe_applied() => {
            let wait = jobs.lost_wait;
            tracing::warn!(
                "the answer to a {} bulk job was lost ({error}); its {rows} rows are looked up \
                 in {:.0} s, once a job still queued would have run",
                kind.as_str(),
                wait.as_secs_f64()
            );
            // Lost now: a run that resumes before the lookups waits out the rest.
            end_job(tools, job, BulkJobState::Lost).await;
            JobEnd::Unknown(Some(tokio::time::Instant::now() + wait))
        }
        // Not taken (a 503, a refused connection): no job was made, so the same job goes
        // again after the backoff, within the job's retry budget.
        error => match retry.after_failure(&error, Call::Job).await {
            Ok(()) => return None,
            Err(halt) => {
                end_job(tools, job, BulkJobState::Refused).await;
                JobEnd::NotTaken(halt)
            }
        },
    };
    Some(end)
}

pub(super) async fn end_job(tools: &Tools, job: i64, state: BulkJobState) {
    let _ = tools
        .journal
        .commit(vec![Change::BulkJobEnded { job, state }])
        .await;
}

/// Ends every row of a customers job the same way: `changes` and each row's halt recorded,
/// then the rows waiting for these customers told (in that order: a row of one of these
/// customers planned next must find the withdrawal queued before its own intent).
pub(super) async fn finish_customers_with(
    tools: &Tools,
    works: Vec<PlannedRow>,
    halt: Halt,
    changes: Vec<Change>,
) -> Vec<(PlannedRow, AfterJob)> {
    let keys: Vec<String> = works.iter().map(|w| w.plan.customer_key.clone()).collect();
    let ended = finish_all(tools, works, halt.clone(), changes).await;
    for customer_key in keys {
        let _ = tools.events.send(Event::CustomerSettled {
            customer_key,
            settlement: Settlement::of_halt(&halt),
        });
    }
    ended
}

async fn finish_all(
    tools: &Tools,
    works: Vec<PlannedRow>,
    halt: Halt,
    changes: Vec<Change>,
) -> Vec<(PlannedRow, AfterJob)> {
    if !changes.is_empty() {
        tools.journal.record(changes).await;
    }
    let mut ended = Vec::with_capacity(works.len());
    for work in works {
        record_halt(tools, &work, &halt, 0).await;
        ended.push((work, AfterJob::Finished(RowOutcome::Halted(halt.clone()))));
    }
    ended
}
