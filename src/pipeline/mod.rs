//! The import pipeline: reader -> planner -> workers -> checkpoint.
//!
//! - The reader (a blocking thread) streams records from every input, maps each to a plan
//!   and gives it its row key. It never holds more than the channel's few hundred rows.
//! - The planner ([`planner`]) asks the checkpoint what each row still needs: a done
//!   row is skipped without a request, a customer already known is reused, and rows of a
//!   customer being created wait behind the one row that creates it, so two rows never race
//!   to create the same customer.
//! - Workers (one task per row in progress, at most [`Concurrency`]) send the requests, each
//!   create preceded by its durable intent in the checkpoint; an answer that was lost is
//!   reconciled by lookup before anything is sent again.
//! - In bulk mode ([`ImportMode`], [`bulk`]) the planner gathers rows that create their
//!   customer, and rows whose customer is known, into batches of 100 and gives each batch to
//!   a job task; what a job cannot settle comes back to the planner for a worker (a link, a
//!   lookup). A run first settles the jobs an earlier run left unfinished.
//!
//! What a row is and how it moves lives in [`row`], the resume rules in [`resume`], the
//! scheduler in [`planner`], what a failed call means in [`failure`]; `docs/architecture.md`
//! draws the data flow and the row's state machine, and says where to add a record kind.
//!
//! A soft stop (first signal, revoked key, an API that keeps failing) stops taking rows and
//! lets work in flight finish for the grace period; a hard stop aborts it. Either way the
//! checkpoint stays consistent: what was sent and not answered is an intent the next run
//! reconciles.

mod agents;
pub use agents::{SourceAgent, agent_email, source_agent};
mod bulk;
mod company;
mod concurrency;
mod failure;
mod handles;
mod planner;
mod reader;
mod resume;
mod row;
mod tags;
mod thread;
mod thread_sync;
mod update;
mod worker;

pub use self::concurrency::Concurrency;
pub use self::resume::{OnChange, SyncRules};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::bulk::{HistoryJobs, Jobs};
use self::handles::{Journal, RunControl, Tools};
use self::planner::{Dispatch, Planner};
use self::reader::start_reader;
use self::row::Halt;
use crate::api::{Backoff, KustomerClient};
use crate::checkpoint::{Checkpoint, CheckpointError, CustomerOrigin};
use crate::history::store::{Pages, StoreError, ThreadStore};
use crate::input::OpenInput;
use crate::report::{ErrorsFile, Progress, Summary};
use crate::rows::ReadSettings;

/// What to do with a customer that already exists in Kustomer (the create answers 409).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExistingCustomer {
    /// Use it: the row's conversation goes to the existing customer.
    Link,
    /// Fail the row.
    Fail,
}

impl OnExistingCustomer {
    /// What becomes of a row whose customer turned out to exist already as `id`.
    fn settle(self, id: String) -> Result<(String, CustomerOrigin), Halt> {
        match self {
            OnExistingCustomer::Link => Ok((id, CustomerOrigin::Linked)),
            OnExistingCustomer::Fail => Err(Halt::Failed {
                field: None,
                reason: format!(
                    "the customer already exists in Kustomer as {id} (--on-existing-customer fail)"
                ),
            }),
        }
    }
}

/// How rows travel to Kustomer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportMode {
    /// One request per customer and per conversation.
    Single,
    /// Bulk jobs of up to 100 records, one request each (plus their polls).
    Bulk,
    /// Bulk once a few hundred rows are waiting to be sent or updated; single for fewer.
    Auto,
}

/// Settings of one import, validated (see `config.rs`).
#[derive(Clone, Debug)]
pub struct ImportSettings {
    pub concurrency: Concurrency,
    /// Transient failures one row may meet before it is left pending.
    pub max_retries: u32,
    pub backoff: Backoff,
    pub on_existing_customer: OnExistingCustomer,
    /// The mapping, derived conversation ids and --limit.
    pub read: ReadSettings,
    /// How long work in flight may go on after a soft stop.
    pub grace: Duration,
    /// The least wait between a lost answer and the lookup that reconciles it.
    pub reconcile_delay: Duration,
    /// Send again rows that failed in earlier runs (except those whose outcome is unknown).
    pub retry_failed: bool,
    /// Send `importedAt` with each conversation that has none.
    pub stamp_imported_at: bool,
    /// The key holds `org.admin`: history keeps its `createdAt`/`createdBy`.
    pub org_admin: bool,
    /// The user (an email) an item whose agent has no user is written by (None: no author).
    pub default_author: Option<String>,
    pub mode: ImportMode,
    /// How long a bulk job whose submit answer was lost may still run: its rows are looked
    /// up only after this, so that a late job shows first.
    pub bulk_lost_wait: Duration,
    /// What a done row whose records changed in the source gets (`--on-change`,
    /// `--update-fields`).
    pub sync: SyncRules,
    /// Tag names the org lacks are made, by appending them to the conversation
    /// (`--create-missing-tags`); else the conversation goes without them.
    pub create_missing_tags: bool,
}

/// The two ways a run is told to stop.
#[derive(Clone, Default)]
pub struct StopSignals {
    /// Take no more rows; let requests in flight finish within the grace period.
    pub soft: CancellationToken,
    /// Stop now.
    pub hard: CancellationToken,
}

/// Why a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Every row was read and settled (done, failed, or pending after retries).
    Finished,
    /// A signal stopped it.
    Interrupted,
    /// The API refused the key.
    Unauthorized(String),
    /// The API kept failing: rows in a row gave up after their retries.
    ApiUnavailable(String),
    /// The API let no request through (429s, a spent budget) for the longest a run waits.
    Stalled(String),
    /// The API answered as if the base URL were wrong (404/405 on a create, a redirect on
    /// any call).
    Endpoint(String),
    /// An input could not be read to its end.
    Input(String),
    /// The checkpoint could not be written.
    Checkpoint(String),
    /// The checkpoint is damaged: no run of the same command gets past it.
    CheckpointDamaged(String),
}

impl StopReason {
    /// How a checkpoint error stops the run.
    pub fn of_checkpoint(error: &CheckpointError) -> StopReason {
        if error.is_damage() {
            StopReason::CheckpointDamaged(error.to_string())
        } else {
            StopReason::Checkpoint(error.to_string())
        }
    }
}

impl StopReason {
    /// What stopped the run, in words; None for a run that finished or was interrupted.
    pub fn message(&self) -> Option<String> {
        match self {
            StopReason::Finished | StopReason::Interrupted => None,
            StopReason::Unauthorized(message)
            | StopReason::ApiUnavailable(message)
            | StopReason::Stalled(message)
            | StopReason::Endpoint(message)
            | StopReason::Input(message)
            | StopReason::Checkpoint(message)
            | StopReason::CheckpointDamaged(message) => Some(message.clone()),
        }
    }
}

/// The run's thread store (see `history::store`), and the pipeline's way to read it back.
fn stage_threads() -> Result<(Arc<ThreadStore>, Pages), StoreError> {
    let store = Arc::new(ThreadStore::create()?);
    let pages = store.pages()?;
    Ok((store, pages))
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct ImportOutcome {
    pub summary: Summary,
    pub stop: StopReason,
}

/// Runs one import of the inputs (opened by [`crate::rows::open_inputs`]) to its end or to
/// a stop. Errors only when the checkpoint cannot be read.
pub async fn run_import(
    mut settings: ImportSettings,
    inputs: Vec<OpenInput>,
    checkpoint: &Checkpoint,
    client: Arc<KustomerClient>,
    errors: &mut ErrorsFile,
    progress: &Progress,
    stop: StopSignals,
) -> Result<ImportOutcome, CheckpointError> {
    let started = Instant::now();
    let (writer, writer_handle) = checkpoint.start_writer()?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let control = Arc::new(RunControl::new(stop.clone()));
    let journal = Journal::new(writer, Arc::clone(&control));
    let mut tools = Tools::new(&settings, client, journal, Arc::clone(&control), events_tx);
    tools.agents = agents::Agents::new(
        checkpoint.agents()?,
        settings.default_author.clone(),
        settings.read.mapping.users_table(),
    );
    tools.companies = company::CompanyBook::new(checkpoint.companies()?);
    tools.tags = tags::TagBook::new(checkpoint.tags()?, settings.create_missing_tags);
    match stage_threads() {
        Ok((store, pages)) => {
            settings.read.history = Some(store);
            tools.threads = Some(Arc::new(std::sync::Mutex::new(pages)));
        }
        // Nothing is read: every row stays pending for a run that can stage them.
        Err(error) => control.halt(StopReason::Input(error.to_string())),
    }
    let tools = Arc::new(tools);
    let auto = settings.mode == ImportMode::Auto;
    let jobs = Arc::new(Jobs::new(
        checkpoint.next_bulk_job()?,
        auto,
        settings.bulk_lost_wait,
    ));
    // From the stop on, no request waits for the server: not here, not in the planner.
    tools.client.gate().stop_on(stop.soft.clone());
    let earlier = bulk::finish_earlier_jobs(&tools, &jobs, checkpoint).await?;
    let window = rows_in_flight(&settings);
    // Read-ahead: enough to keep the planner fed, no more (a bulk window of rows in
    // flight needs no read-ahead of the same size).
    let read_ahead = settings.concurrency.most() * 4;
    let (rows_tx, rows) = mpsc::channel(read_ahead.div_ceil(reader::READ_BATCH).max(2));
    let reader = start_reader(inputs, settings.read.clone(), rows_tx);
    // Bulk jobs of history gather the runs of every row's thread (see `bulk::history`).
    let (history_jobs, batcher) = match settings.mode {
        ImportMode::Single => (None, None),
        ImportMode::Bulk | ImportMode::Auto => {
            let (handle, batcher) = HistoryJobs::start(Arc::clone(&tools), Arc::clone(&jobs));
            (Some(handle), Some(batcher))
        }
    };
    let dispatch = Dispatch {
        tools: Arc::clone(&tools),
        jobs,
        settings,
        window,
        history_jobs,
    };
    let mut planner = Planner::new(dispatch, checkpoint, errors, progress, earlier);
    planner.run(rows, &mut events).await;
    // Every clone of the writer must be gone before the writer thread can end: abandoned
    // workers hold one, and so do the planner and the batcher of history jobs, which ends
    // once the planner's handle on it is gone. Workers that report while being shut down
    // are still counted.
    let mut summary = planner.finish(&mut events).await;
    if let Some(batcher) = batcher {
        // After a stop the workers are gone (at the latest when the grace period ended):
        // the jobs still being polled stay queued in the checkpoint for the next run, as
        // jobs of rows do, rather than hold the run past its grace.
        if stop.soft.is_cancelled() {
            batcher.abort();
        }
        let _ = batcher.await;
    }
    // A run told to stop does not wait for a reader still at work: it may be blocked on an
    // input that sends nothing (a FIFO whose writer is idle), and its rows are not wanted.
    let read = if stop.soft.is_cancelled() && !reader.is_finished() {
        reader::ReaderEnd::default()
    } else {
        reader.await.unwrap_or_default()
    };
    summary.lines_grouped = read.grouped_lines;
    let reader_error = read.error;
    let stats = tools.client.stats();
    summary.requests = stats.requests.load(Ordering::Relaxed);
    summary.rate_limited = stats.rate_limited.load(Ordering::Relaxed);
    summary.bulk_jobs = stats.bulk_jobs.load(Ordering::Relaxed);
    summary.elapsed = started.elapsed();
    let fatal = control.take_reason();
    // The last clone of the writer: the writer thread ends once it has drained its queue.
    drop(tools);
    let writer_result = tokio::task::spawn_blocking(move || writer_handle.finish())
        .await
        .unwrap_or_else(|_| {
            Err(CheckpointError::Write(
                "the writer could not be joined".into(),
            ))
        });
    let reader_error = reader_error.map(|error| error.to_string());
    let stop_reason = why_it_ended(writer_result, fatal, reader_error, stop.soft.is_cancelled());
    Ok(ImportOutcome {
        summary,
        stop: stop_reason,
    })
}

/// The most rows read and not yet settled: the reader waits while the planner holds this
/// many.
fn rows_in_flight(settings: &ImportSettings) -> usize {
    let window = settings.concurrency.most() * 4;
    if settings.mode == ImportMode::Single {
        window
    } else {
        // Room for every job in flight to be full, and for the next batches to fill.
        window.max(bulk::MAX_ITEMS * bulk::JOBS_IN_FLIGHT * 2)
    }
}

/// Why a run ended, from the writer's end, the first reason a part of the run gave to
/// halt it, the reader's error and whether it was told to stop.
fn why_it_ended(
    writer: Result<(), CheckpointError>,
    fatal: Option<StopReason>,
    reader_error: Option<String>,
    stopped: bool,
) -> StopReason {
    let writer_stop = writer.err().map(|error| StopReason::of_checkpoint(&error));
    match (writer_stop, fatal) {
        // Damage outranks the write failure it may have caused: running again won't help.
        (_, Some(damage @ StopReason::CheckpointDamaged(_))) => damage,
        (Some(writer), _) => writer,
        (None, Some(fatal)) => fatal,
        (None, None) => match reader_error {
            Some(error) => StopReason::Input(error),
            None if stopped => StopReason::Interrupted,
            None => StopReason::Finished,
        },
    }
}
