//! Undo's bulk deletes of customers: `DELETE /v1/customers/bulk?ids=` (the docs'
//! "Deletes"), one job per up to [`MAX_ITEMS`] customers, recorded before it is sent
//! (`undo_jobs`, migration 018, with its customers' intents in `undo_deletes` naming it),
//! polled until it ends, then every customer read back: the docs say nothing of what a
//! delete job's results hold, so a read that answers 404 is the only word that a customer is
//! gone. A customer still there after the job (refused by it, or a job lost or not yet run)
//! gets the single delete, whose answer says why when it is refused. Deletes are idempotent,
//! so a job lost or left by a killed undo is settled by reading and deleting again: a job that
//! runs later finds nothing to delete.

use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;

use super::{
    IN_FLIGHT, Kind, MAX_RETRIES, Missed, Stopped, Undone, holds_conversations, one_delete,
    still_there, with_retries,
};
use crate::api::bulk::MAX_ITEMS;
use crate::api::{ApiError, Backoff, JobStatus, KustomerClient, SubmittedJob};
use crate::checkpoint::Checkpoint;

/// The first wait before a job is polled, and the longest between two polls.
const FIRST_POLL: Duration = Duration::from_millis(200);
const MOST_POLL: Duration = Duration::from_secs(5);
/// The longest an undo waits for one job before it deletes the job's customers one by one
/// (the job, left queued, is polled again by the next undo).
const MOST_WAIT: Duration = Duration::from_secs(600);

/// How waiting for a job ended.
enum JobEnd {
    /// Ended (complete, failed or cancelled): its customers are read back.
    Ended,
    /// The API does not know the job (404s past the retries): it may have run, or not.
    Vanished,
    /// Still running after [`MOST_WAIT`], or polls failing past the retries: left queued.
    GaveUp,
}

/// Deletes `customers` (key, id) in jobs of up to [`MAX_ITEMS`], each then read back.
pub(super) async fn delete_customers(
    client: &KustomerClient,
    checkpoint: &Mutex<&mut Checkpoint>,
    undone: &Mutex<Undone>,
    undo_run: i64,
    customers: &[(String, String)],
) -> Result<(), Stopped> {
    let mut ready = Vec::with_capacity(customers.len());
    for (key, id) in customers {
        if !holds_conversations(checkpoint, undone, key, id)? {
            ready.push((key.clone(), id.clone()));
        }
    }
    for chunk in ready.chunks(MAX_ITEMS) {
        let job = lock(checkpoint).delete_job_intent(chunk, undo_run)?;
        let ids: Vec<&str> = chunk.iter().map(|(_, id)| id.as_str()).collect();
        let submitted = with_retries(|| client.submit_customer_deletes(&ids)).await;
        let state = match submitted? {
            Ok(submitted) => {
                lock(checkpoint).delete_job_queued(job, &submitted.id)?;
                match wait_for_job(client, &submitted).await? {
                    JobEnd::Ended => Some("complete"),
                    JobEnd::Vanished => Some("lost"),
                    JobEnd::GaveUp => None,
                }
            }
            Err(Missed::Refused(reason)) => {
                tracing::warn!("the bulk delete was refused whole ({reason}): one by one");
                Some("refused")
            }
            Err(Missed::NoAnswer(reason)) => {
                tracing::warn!("the bulk delete's answer was lost ({reason}): one by one");
                Some("lost")
            }
        };
        if let Some(state) = state {
            lock(checkpoint).delete_job_ended(job, state)?;
        }
        read_back(client, checkpoint, undone, undo_run, chunk).await?;
    }
    Ok(())
}

/// The jobs an earlier undo left (killed while they were submitted or polled): a queued
/// one is polled to its end, one never answered is lost; then each of their customers is
/// read back, and one that is gone is recorded gone. One still there stays `sent`: this
/// undo's plan deletes it again. Nothing is counted here (the plan counts its customers).
pub(super) async fn finish_earlier_jobs(
    client: &KustomerClient,
    checkpoint: &Mutex<&mut Checkpoint>,
    undone: &Mutex<Undone>,
) -> Result<(), Stopped> {
    let jobs = lock(checkpoint).unfinished_delete_jobs()?;
    for job in jobs {
        let end = match &job.job_id {
            Some(id) => {
                let earlier = SubmittedJob {
                    id: id.clone(),
                    status: JobStatus::Waiting("queued".into()),
                };
                wait_for_job(client, &earlier).await?
            }
            None => JobEnd::Vanished,
        };
        match end {
            JobEnd::Ended => lock(checkpoint).delete_job_ended(job.id, "complete")?,
            JobEnd::Vanished => lock(checkpoint).delete_job_ended(job.id, "lost")?,
            JobEnd::GaveUp => {}
        }
        let customers = lock(checkpoint).delete_job_customers(job.id)?;
        for (key, id) in customers {
            if matches!(still_there(client, Kind::Customer, &id).await?, Ok(false)) {
                let rows = if key.is_empty() {
                    lock(checkpoint).delete_gone(Kind::Customer.as_str(), &id)?;
                    0
                } else {
                    lock(checkpoint).customer_gone(&key, &id)?
                };
                lock_undone(undone).rows_pending_again += rows as u64;
            }
        }
    }
    Ok(())
}

/// After a job: each customer read back, 404 gone (deleted by the job); one still there
/// gets its single delete, whose answer (a refusal's words) is what the report shows.
async fn read_back(
    client: &KustomerClient,
    checkpoint: &Mutex<&mut Checkpoint>,
    undone: &Mutex<Undone>,
    undo_run: i64,
    customers: &[(String, String)],
) -> Result<(), Stopped> {
    let mut reads = futures_util::stream::iter(customers.iter().map(|(key, id)| async move {
        match still_there(client, Kind::Customer, id).await? {
            Ok(false) => {
                let rows = lock(checkpoint).customer_gone(key, id)?;
                let mut undone = lock_undone(undone);
                undone.customers.deleted += 1;
                undone.rows_pending_again += rows as u64;
                Ok(())
            }
            Ok(true) => {
                one_delete(
                    client,
                    checkpoint,
                    undone,
                    undo_run,
                    Kind::Customer,
                    key,
                    id,
                )
                .await
            }
            Err(Missed::Refused(reason) | Missed::NoAnswer(reason)) => {
                let reason = format!("the read after its bulk delete failed: {reason}");
                lock(checkpoint).delete_unknown(Kind::Customer.as_str(), id, &reason)?;
                super::record_failure(
                    undone,
                    Kind::Customer,
                    id,
                    format!(
                        "{reason}: whether it is gone is not known (the next undo reads it back)"
                    ),
                );
                Ok(())
            }
        }
    }))
    .buffer_unordered(IN_FLIGHT);
    while let Some(result) = reads.next().await {
        result?;
    }
    Ok(())
}

/// Polls the job (each poll one request of the budget) until it ends, with waits growing
/// from [`FIRST_POLL`] to [`MOST_POLL`]. A 404 (a job store behind the submit's answer) and
/// a transient failure are asked again up to [`MAX_RETRIES`] times in a row; a refused key
/// stops the undo.
async fn wait_for_job(client: &KustomerClient, job: &SubmittedJob) -> Result<JobEnd, Stopped> {
    if !matches!(job.status, JobStatus::Waiting(_)) {
        return Ok(JobEnd::Ended);
    }
    let backoff = Backoff::default();
    let started = tokio::time::Instant::now();
    let mut wait = FIRST_POLL;
    let mut misses = 0;
    loop {
        tokio::time::sleep(wait).await;
        match client.bulk_status(&job.id).await {
            Ok(JobStatus::Waiting(_)) => misses = 0,
            Ok(JobStatus::Complete | JobStatus::Ended(_)) => return Ok(JobEnd::Ended),
            Err(ApiError::UnknownJob { .. }) if misses >= MAX_RETRIES => {
                return Ok(JobEnd::Vanished);
            }
            Err(ApiError::Transient { .. }) if misses >= MAX_RETRIES => {
                return Ok(JobEnd::GaveUp);
            }
            Err(error @ (ApiError::UnknownJob { .. } | ApiError::Transient { .. })) => {
                tracing::debug!("polling bulk delete job {}: {error}", job.id);
                tokio::time::sleep(backoff.delay(misses)).await;
                misses += 1;
            }
            Err(error @ ApiError::Rejected { .. }) => {
                tracing::warn!("polling bulk delete job {}: {error}", job.id);
                return Ok(JobEnd::GaveUp);
            }
            Err(error) => return Err(Stopped::Api(error)),
        }
        if started.elapsed() > MOST_WAIT {
            return Ok(JobEnd::GaveUp);
        }
        wait = (wait * 2).min(MOST_POLL);
    }
}

fn lock<'a, 'b>(
    checkpoint: &'a Mutex<&'b mut Checkpoint>,
) -> std::sync::MutexGuard<'a, &'b mut Checkpoint> {
    checkpoint.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_undone(undone: &Mutex<Undone>) -> std::sync::MutexGuard<'_, Undone> {
    undone.lock().unwrap_or_else(|e| e.into_inner())
}
