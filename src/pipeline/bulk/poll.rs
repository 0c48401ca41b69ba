//! Waiting for a bulk job's end: polls within the shared rate budget, paced by
//! [`super::pace`], then its results read item by item. A job still not done after the most
//! a run waits, or a stop, leaves it queued for the next run; an API that keeps saying it
//! does not know the job makes it lost (it may still run: its rows are looked up later).

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Jobs;
use super::pace::{FIRST_POLL, LEAST_POLL, MOST_POLL, Seen};
use crate::api::{ApiError, ItemOutcome, JobStatus};
use crate::pipeline::failure::{Call, NoRetry, Retries};
use crate::pipeline::handles::Tools;
use crate::pipeline::row::Halt;

/// Why polling a job ended without its results.
pub(super) enum WaitEnd {
    /// The API kept answering 404 for the job: it does not know it.
    Vanished(String),
    Halted(Halt),
}

/// Where a job stood when the wait for its results began.
pub(super) enum Started {
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

/// A job to wait for: Kustomer's id for it, and how many items it carries.
#[derive(Clone, Copy)]
pub(super) struct JobRef<'a> {
    pub id: &'a str,
    pub items: usize,
}

/// Waits until a job has ended (see [`poll_until_ended`]), then reads its results. Transient
/// failures back off within the retry budget, and so do 404s (a job store may lag behind the
/// submit's answer) until they are all there is; a job still not done after `most_wait`, or
/// `give_up`, ends the wait with the job left queued for the next run.
pub(super) async fn wait_for_results(
    tools: &Tools,
    jobs: &Jobs,
    job: JobRef<'_>,
    started: Started,
    give_up: &CancellationToken,
    most_wait: Duration,
) -> Result<HashMap<String, ItemOutcome>, WaitEnd> {
    let mut retry = Retries::new(tools, give_up);
    let job_id = job.id;
    let read = poll_until_ended(tools, jobs, job, started, &mut retry, give_up, most_wait).await?;
    if let Some(outcomes) = read {
        return Ok(outcomes);
    }
    loop {
        match tools.client.bulk_results(job_id).await {
            // An ended job with no result at all may be one whose batches are not written
            // yet: ask again within the retry budget before taking every item for unknown.
            Ok(outcomes) if outcomes.is_empty() => {
                let reason = format!("bulk job {job_id} ended with no results");
                match retry.backoff(&reason, Duration::ZERO).await {
                    Ok(()) => {}
                    Err(NoRetry::Exhausted(_)) => return Ok(outcomes),
                    Err(NoRetry::Stopping) => return Err(WaitEnd::Halted(Halt::stopping())),
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
///
/// Each poll reads the job's results first: when they hold an outcome for every item, the
/// job is done and they are its results (one request, where asking its status and then
/// reading them takes two). Only when some are missing is its status asked, which tells
/// a job still running from one that ended without them. Some(results): read on the way.
async fn poll_until_ended(
    tools: &Tools,
    jobs: &Jobs,
    job: JobRef<'_>,
    started: Started,
    retry: &mut Retries<'_>,
    give_up: &CancellationToken,
    most_wait: Duration,
) -> Result<Option<HashMap<String, ItemOutcome>>, WaitEnd> {
    let job_id = job.id;
    let stopping = || WaitEnd::Halted(Halt::stopping());
    let (answered, paced) = match started {
        Started::Submitted {
            status: JobStatus::Complete | JobStatus::Ended(_),
            ..
        } => return Ok(None),
        Started::Submitted { answered, .. } => (answered, true),
        Started::Earlier => (tokio::time::Instant::now(), false),
    };
    // When the first poll is due, and whether it is a probe: paced by what jobs took so far;
    // an earlier run's job, most likely done, at once.
    let (mut next, probe, first_wait) = if paced {
        let (next, probe) = jobs
            .pace
            .first_poll(answered, give_up)
            .await
            .ok_or_else(stopping)?;
        (next, probe, next.saturating_duration_since(answered))
    } else {
        (answered, None, FIRST_POLL)
    };
    let mut interval = first_wait / 4;
    let mut last_unfinished = None;
    let mut read = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = give_up.cancelled() => return Err(stopping()),
        }
        let asked = answered.elapsed();
        if let Some(outcomes) = all_results(tools, job).await {
            read = Some(outcomes);
            break;
        }
        match tools.client.bulk_status(job_id).await {
            Ok(JobStatus::Complete) => break,
            Ok(JobStatus::Ended(status)) => {
                tracing::warn!(
                    "bulk job {job_id} ended {status}: what it made is read from its results, \
                     the rest is looked up"
                );
                break;
            }
            Ok(JobStatus::Waiting(status)) if answered.elapsed() >= most_wait => {
                return Err(waited_too_long(job_id, &status, most_wait));
            }
            Ok(JobStatus::Waiting(status)) => {
                tracing::debug!("bulk job {job_id} is {status}");
                let first_miss = last_unfinished.is_none();
                last_unfinished = Some(asked);
                let now = tokio::time::Instant::now();
                next = match jobs.pace.due() {
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
        jobs.pace.learn(Seen {
            complete_at: answered.elapsed(),
            last_unfinished,
            probed: probe.is_some(),
        });
    }
    Ok(read)
}

/// The job's results when they hold an outcome for every item; None when some are missing
/// (the job may still be running) or they could not be read (its status is asked next,
/// whose failure is the one handled).
async fn all_results(tools: &Tools, job: JobRef<'_>) -> Option<HashMap<String, ItemOutcome>> {
    match tools.client.bulk_results(job.id).await {
        Ok(outcomes) if job.items > 0 && outcomes.len() >= job.items => Some(outcomes),
        Ok(_) => None,
        Err(error) => {
            tracing::debug!(
                "bulk job {}: its results could not be read: {error}",
                job.id
            );
            None
        }
    }
}

/// A job still not done after the most a run waits: queued for the next run to poll.
fn waited_too_long(job_id: &str, status: &str, most_wait: Duration) -> WaitEnd {
    tracing::warn!(
        "bulk job {job_id} is still {status} after {} s: the next run polls it, and its rows \
         stay pending until then",
        most_wait.as_secs()
    );
    WaitEnd::Halted(Halt::Pending(format!(
        "its bulk job {job_id} is still {status}"
    )))
}

async fn poll_failed(
    retry: &mut Retries<'_>,
    job_id: &str,
    error: &ApiError,
) -> Result<(), WaitEnd> {
    if let ApiError::UnknownJob { .. } = error {
        // A job store may lag behind the submit's answer: asked again like a transient
        // failure, and only when the budget is spent is the job taken for unknown.
        let reason = error.to_string();
        return retry
            .backoff(&reason, Duration::ZERO)
            .await
            .map_err(|end| match end {
                NoRetry::Exhausted(reason) => WaitEnd::Vanished(reason),
                NoRetry::Stopping => WaitEnd::Halted(Halt::stopping()),
            });
    }
    retry.after_failure(error, Call::Job).await.map_err(|halt| {
        tracing::warn!("bulk job {job_id} could not be polled: {error}; the next run polls it");
        WaitEnd::Halted(halt)
    })
}
