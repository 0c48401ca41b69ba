//! The jobs earlier runs left unfinished, settled before this run plans any row: a queued
//! job is polled and its results applied to rows still in its intent (to messages and notes
//! still in theirs, for a job of history); a job whose submit
//! answer was lost is waited out until it would have run, and its rows left to lookup when
//! they are read. A job this run cannot settle holds its rows back, pending, so that nothing
//! it carries is sent again. A job of updates is released at once: its updates are sent
//! again (an update is idempotent).

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use super::EARLIER_JOB_WAIT;
use super::Jobs;
use super::companies;
use super::history::{RunVerdict, read_run_item, settled_change};
use super::poll::{JobRef, Started, WaitEnd, wait_for_results};
use super::results::{ItemVerdict, job_complete, read_item};
use super::submit::end_job;
use crate::api::BulkKind;
use crate::checkpoint::{
    BulkJobState, Change, Checkpoint, CheckpointError, CustomerOrigin, RecordChange, RowChange,
    RowState, StepState, StoredBulkItem, StoredBulkJob, StoredRecord,
};
use crate::pipeline::handles::Tools;
use crate::pipeline::row::{Halt, Step};

/// What a run learnt from the jobs earlier runs left unfinished.
#[derive(Debug, Default)]
pub(in crate::pipeline) struct EarlierJobs {
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
pub(in crate::pipeline) async fn finish_earlier_jobs(
    tools: &Tools,
    jobs: &Jobs,
    checkpoint: &Checkpoint,
) -> Result<EarlierJobs, CheckpointError> {
    let lost_since = SystemTime::now()
        .checked_sub(jobs.lost_wait)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let unfinished = checkpoint.unfinished_bulk_jobs(lost_since)?;
    let mut earlier = EarlierJobs::default();
    if unfinished.is_empty() {
        return Ok(earlier);
    }
    tracing::info!(
        "{} bulk jobs of an earlier run are unfinished: settling them first",
        unfinished.len()
    );
    let settled = futures_util::future::join_all(
        unfinished
            .iter()
            .map(|job| finish_earlier_job(tools, jobs, job)),
    )
    .await;
    let mut uncertain = false;
    for (job, outcome) in unfinished.iter().zip(settled) {
        match outcome {
            Some(EarlierOutcome::Applied(results)) => {
                uncertain |= results.uncertain;
                earlier.customers_created += results.customers_created;
                earlier.customers_linked += results.customers_linked;
                earlier.settled_rows.extend(results.settled_rows);
                earlier.failed_customers.extend(results.failed_customers);
                earlier.link_rows.extend(results.link_rows);
            }
            Some(EarlierOutcome::Released) => {}
            None if job.kind == BulkKind::Companies => {
                companies::hold_earlier_companies(tools, job).await;
            }
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
            () = tokio::time::sleep(tools.retry.reconcile_delay) => {}
            () = tools.control.soft().cancelled() => {}
        }
    }
    Ok(earlier)
}

enum EarlierOutcome {
    /// Its results are in the checkpoint.
    Applied(EarlierResults),
    /// Lost: its rows are left to reconciliation by lookup.
    Released,
}

/// What applying an earlier job's results came to.
#[derive(Default)]
struct EarlierResults {
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
async fn wait_out_lost_job(tools: &Tools, jobs: &Jobs, job: i64, since: SystemTime) -> bool {
    let age = SystemTime::now().duration_since(since).unwrap_or_default();
    let left = jobs.lost_wait.saturating_sub(age);
    if !left.is_zero() {
        tracing::info!(
            "bulk job {job} of an earlier run never got its answer: waiting {:.0} s before its \
             rows are looked up",
            left.as_secs_f64()
        );
        tokio::select! {
            () = tokio::time::sleep(left) => {}
            () = tools.control.soft().cancelled() => return false,
        }
    }
    true
}

/// One earlier job: polled (queued) or waited out (submitting, lost). None: still
/// unsettled, its rows held.
async fn finish_earlier_job(
    tools: &Tools,
    jobs: &Jobs,
    job: &StoredBulkJob,
) -> Option<EarlierOutcome> {
    if job.kind.updates() {
        // An update is idempotent: a job of updates an earlier run left (queued, or its
        // answer lost) is neither polled nor waited out, and its rows are not held. Nothing
        // was recorded as sent for them, so this run finds their records still changed and
        // sends the same updates again; the job, if it runs after all, writes the same
        // values. Lost: over, with what it did unknown (once: a lost job read again is
        // left as it is, so that it drops out of this query after `--bulk-lost-wait`).
        if job.state != BulkJobState::Lost {
            end_job(tools, job.id, BulkJobState::Lost).await;
        }
        return Some(EarlierOutcome::Released);
    }
    let job_id = match (&job.job_id, job.state) {
        (Some(job_id), BulkJobState::Queued) => job_id,
        (_, state) => {
            let waited = wait_out_lost_job(tools, jobs, job.id, job.since).await;
            if waited && state == BulkJobState::Submitting {
                let waited_out = Change::BulkJobWaitedOut { job: job.id };
                let _ = tools.journal.commit(vec![waited_out]).await;
            }
            return waited.then_some(EarlierOutcome::Released);
        }
    };
    let started = Started::Earlier;
    let give_up = tools.control.soft();
    let waited = JobRef {
        id: job_id,
        items: job.items.len() + job.companies.len(),
    };
    let outcomes =
        match wait_for_results(tools, jobs, waited, started, give_up, EARLIER_JOB_WAIT).await {
            Ok(outcomes) => outcomes,
            Err(WaitEnd::Vanished(reason)) => {
                // Lost from now on: it may be a job the API will know and run after all.
                tracing::warn!("bulk job {job_id}: {reason}; its rows are looked up later");
                end_job(tools, job.id, BulkJobState::Lost).await;
                return wait_out_lost_job(tools, jobs, job.id, SystemTime::now())
                    .await
                    .then_some(EarlierOutcome::Released);
            }
            Err(WaitEnd::Halted(_)) => return None,
        };
    let mut results = EarlierResults::default();
    let mut changes = Vec::new();
    if job.kind == BulkKind::Companies {
        // Done: what it made is found by the lookup each company's first row sends (its
        // intent is still recorded), now that the job can no longer make it behind it.
        tools
            .journal
            .commit(vec![job_complete(job.id)])
            .await
            .ok()?;
        return Some(EarlierOutcome::Applied(results));
    }
    let Some(step) = Step::of_job(job.kind) else {
        // Messages or notes: each record still in its intent takes its item's result.
        for item in &job.items {
            let Some(record) = item.record.as_ref().filter(|r| r.state == StepState::Sent) else {
                continue;
            };
            let verdict = read_run_item(outcomes.get(&item.client_ref).cloned());
            results.uncertain |= matches!(verdict, RunVerdict::Unknown);
            changes.extend(settled_change(&intent_of(item, record), &verdict));
        }
        changes.push(job_complete(job.id));
        tools.journal.commit(changes).await.ok()?;
        return Some(EarlierOutcome::Applied(results));
    };
    let policy = tools.rules.on_existing_customer;
    for item in &job.items {
        // A row that has moved on since (settled by lookup after all) is not touched.
        if item.state != step.intent() {
            continue;
        }
        let verdict = read_item(step, outcomes.get(&item.client_ref).cloned(), policy);
        changes.extend(results.apply(item, verdict));
    }
    changes.push(job_complete(job.id));
    tools.journal.commit(changes).await.ok()?;
    Some(EarlierOutcome::Applied(results))
}

/// The intent a record of an earlier job's item went out with, as the checkpoint holds it.
fn intent_of(item: &StoredBulkItem, record: &StoredRecord) -> RecordChange {
    RecordChange {
        row_key: item.row_key.clone(),
        kind: record.kind,
        external_id: record.external_id.clone(),
        position: record.position,
        state: record.state,
        kustomer_id: None,
        origin: None,
        attempts: 0,
        source_file: record.source_file.clone(),
        line: record.line,
        error: None,
        fingerprint: None,
    }
}

impl EarlierResults {
    /// What one item's verdict changes in the checkpoint (its row is not in hand: it is
    /// planned when read, from what is recorded here), and what it adds to the results.
    fn apply(&mut self, item: &StoredBulkItem, verdict: ItemVerdict) -> Vec<Change> {
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
        match (verdict, &item.customer_key) {
            (ItemVerdict::Refused(halt), customer_key) => {
                let reason = match halt {
                    Halt::Failed { reason, .. }
                    | Halt::Unresolved(reason)
                    | Halt::Pending(reason) => reason,
                };
                let mut changes = Vec::new();
                if let Some(customer_key) = customer_key {
                    changes.push(Change::CustomerWithdrawn {
                        customer_key: customer_key.clone(),
                    });
                    let reason = format!("its customer could not be created: {reason}");
                    self.failed_customers
                        .insert(customer_key.clone(), (None, reason));
                }
                let mut failed = row(RowState::Failed, None, None);
                failed.error = Some(reason);
                changes.push(Change::Row(failed));
                self.settled_rows.insert(item.row_key.clone(), false);
                changes
            }
            (ItemVerdict::Made(id, origin), Some(customer_key)) => {
                match origin {
                    CustomerOrigin::Created => self.customers_created += 1,
                    _ => self.customers_linked += 1,
                }
                self.settled_rows.insert(item.row_key.clone(), false);
                vec![
                    Change::CustomerResolved {
                        customer_key: customer_key.clone(),
                        customer_id: id.clone(),
                        origin,
                    },
                    Change::Row(row(RowState::CustomerOk, Some(id), None)),
                ]
            }
            (ItemVerdict::Made(id, origin), None) => {
                let created = origin == CustomerOrigin::Created;
                self.settled_rows.insert(item.row_key.clone(), created);
                vec![Change::Row(row(
                    RowState::Done,
                    item.customer_id.clone(),
                    Some(id),
                ))]
            }
            // A customer that exists (or refused in words only): linked when its row is
            // read, under the policy, or sent alone if no lookup finds it. The intent stays
            // until then.
            (ItemVerdict::Exists(message) | ItemVerdict::InWordsOnly(message), Some(_)) => {
                self.link_rows.insert(item.row_key.clone(), message);
                Vec::new()
            }
            // A conversation refused as a duplicate is looked up, as after a 409.
            (ItemVerdict::Exists(_), None) => Vec::new(),
            // No result, or an uncertain one: the intent stays, and planning looks the
            // record up, after the wait.
            (ItemVerdict::InWordsOnly(_) | ItemVerdict::Unknown, _) => {
                self.uncertain = true;
                Vec::new()
            }
        }
    }
}
