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
//!
//! Seven rooms: [`submit`] builds a job from rows, records it and sends it; [`poll`] waits
//! for its end within the shared budget, paced by [`pace`]; [`results`] reads each created
//! item's outcome (the one interpreter of create results, for this run's jobs and earlier
//! ones) and applies it; [`history`] gathers the messages and notes of many rows' threads into jobs
//! of their own; [`updates`] sends done rows' changes (a nightly sync) as update jobs through
//! the same submit and poll; [`companies`] makes the companies a customers job needs in jobs
//! of their own; [`recover`] settles the jobs earlier runs left unfinished.

mod companies;
mod history;
mod pace;
mod poll;
mod recover;
mod results;
mod submit;
mod updates;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use super::row::{CustomerStep, RowOutcome};

pub(super) use self::history::{HistoryJobs, RunEnd, RunItem, RunVerdict};
pub(super) use self::pace::JobPace;
pub(super) use self::recover::{EarlierJobs, finish_earlier_jobs};
pub(super) use self::submit::{run_conversation_job, run_customer_job};
pub(super) use self::updates::{UpdateNext, kind_of, run_update_job};
pub use crate::api::bulk::MAX_ITEMS;

/// Bulk jobs in flight at once (submitted and not yet applied).
pub(super) const JOBS_IN_FLIGHT: usize = 8;
/// Workers that may write history in bulk jobs at once, besides the others: enough runs of
/// short threads (6 items) to fill four jobs, and each holds at most a page of its thread
/// (its bodies twice while its run waits), so that 4 KB emails cost some 60 MB at most.
pub(super) const HISTORY_WRITERS: usize = 64;
/// `--mode auto` goes bulk once this many rows are waiting to be sent.
pub(super) const AUTO_BULK_ROWS: usize = 300;
/// A partial batch goes out once its oldest row has waited this long (a slow input).
pub(super) const FLUSH_AFTER: Duration = Duration::from_secs(2);
/// The longest one run waits for a job; past it the job stays queued for the next run.
pub(super) const MOST_JOB_WAIT: Duration = Duration::from_secs(15 * 60);
/// The same for a job an earlier run left queued, which holds up the start of this run.
pub(super) const EARLIER_JOB_WAIT: Duration = Duration::from_secs(2 * 60);

/// What the bulk jobs of one run share: their numbers in the checkpoint, their pace, and
/// whether the API has them at all.
pub(in crate::pipeline) struct Jobs {
    /// The number the next job is recorded under.
    next: AtomicI64,
    pace: JobPace,
    /// `--mode auto` met an API without bulk endpoints: the rest of the run goes single.
    unavailable: AtomicBool,
    /// `--mode auto`: an API without bulk jobs sends the rows one by one, rather than
    /// stopping the run.
    auto: bool,
    /// How long a job whose submit answer was lost may still run (`--bulk-lost-wait`).
    lost_wait: Duration,
}

impl Jobs {
    pub(in crate::pipeline) fn new(first_number: i64, auto: bool, lost_wait: Duration) -> Jobs {
        Jobs {
            next: AtomicI64::new(first_number),
            pace: JobPace::default(),
            unavailable: AtomicBool::new(false),
            auto,
            lost_wait,
        }
    }

    fn next_number(&self) -> i64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `--mode auto` found the API has no bulk jobs.
    pub(in crate::pipeline) fn unavailable(&self) -> bool {
        self.unavailable.load(Ordering::Relaxed)
    }
}

/// What becomes of a row when its job ends.
#[derive(Debug)]
pub(super) enum AfterJob {
    /// Settled (and recorded): done, failed or pending.
    Finished(RowOutcome),
    /// Back to the planner with this step: its conversation next, or single mode's path.
    Continue(CustomerStep),
    /// The same, once the job whose answer was lost would have run (`bulk_lost_wait`):
    /// the step looks the record up first.
    ContinueAfter(CustomerStep, tokio::time::Instant),
    /// A done row's update goes on: in the next update job, or one request per record.
    Update(UpdateNext),
}

impl AfterJob {
    fn after(step: CustomerStep, at: Option<tokio::time::Instant>) -> AfterJob {
        match at {
            Some(at) => AfterJob::ContinueAfter(step, at),
            None => AfterJob::Continue(step),
        }
    }
}
