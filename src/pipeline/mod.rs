//! The import pipeline: reader -> planner -> workers -> checkpoint.
//!
//! - The reader (a blocking thread) streams records from every input, maps each to a plan
//!   and gives it its row key. It never holds more than the channel's few hundred rows.
//! - The planner (this module's loop) asks the checkpoint what each row still needs: a done
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
//! A soft stop (first signal, revoked key, an API that keeps failing) stops taking rows and
//! lets work in flight finish for the grace period; a hard stop aborts it. Either way the
//! checkpoint stays consistent: what was sent and not answered is an intent the next run
//! reconciles.

mod bulk;
mod concurrency;
mod reader;
mod worker;

pub use self::concurrency::Concurrency;

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::bulk::{EarlierJobs, JobPace, Next};
use self::reader::start_reader;
use self::worker::process_row;
use crate::api::{Backoff, BulkKind, KustomerClient};
use crate::checkpoint::{
    Change, Checkpoint, CheckpointError, CheckpointWriter, CustomerOrigin, RowChange, RowState,
    StoredRow,
};
use crate::input::OpenInput;
use crate::mapping::Plan;
use crate::report::{ErrorsFile, Progress, Settled, Summary};
use crate::rows::{Original, ReadRow, ReadSettings, RowOrigin};

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
    /// Bulk once a few hundred rows are waiting to be sent; single for fewer.
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
    pub mode: ImportMode,
    /// How long a bulk job whose submit answer was lost may still run: its rows are looked
    /// up only after this, so that a late job shows first.
    pub bulk_lost_wait: Duration,
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

/// What a run did.
#[derive(Clone, Debug)]
pub struct ImportOutcome {
    pub summary: Summary,
    pub stop: StopReason,
}

/// A row that will be sent.
#[derive(Debug)]
struct Work {
    origin: RowOrigin,
    original: Original,
    plan: Plan,
    /// The checkpoint says a conversation create left and its answer was not recorded.
    conversation_unknown: bool,
}

/// How a worker gets the row's customer id.
#[derive(Clone, Debug)]
enum CustomerStep {
    /// Already known (this run or an earlier one).
    Known(String),
    /// This row creates it; `reconcile_first` when an earlier run's create is unanswered.
    Create { reconcile_first: bool },
    /// A bulk job refused it as a duplicate, or in words with no status (`message`): find
    /// the customer that exists and link the row to it, or send it alone if none is found.
    Link { message: String },
}

impl CustomerStep {
    /// Whether the row that takes this step settles its customer for the rows waiting.
    fn settles_customer(&self) -> bool {
        !matches!(self, CustomerStep::Known(_))
    }
}

/// Why a row stopped short of done.
#[derive(Clone, Debug)]
enum Halt {
    /// Permanent for this data: recorded as failed.
    Failed {
        field: Option<String>,
        reason: String,
    },
    /// Left for the next run.
    Pending(String),
    /// A create's answer was lost and nothing can look the record up: recorded as failed,
    /// marked so that no later run sends it again. A person must check Kustomer.
    Unresolved(String),
}

/// What a worker reports about a row it finished with.
#[derive(Debug)]
enum RowOutcome {
    /// With how its conversation came to have its id (None: the row has none).
    Done {
        conversation: Option<CustomerOrigin>,
    },
    Halted(Halt),
}

/// A customer created or found by a worker, or why not.
#[derive(Clone, Debug)]
enum Settlement {
    Known(String, CustomerOrigin),
    Failed {
        field: Option<String>,
        reason: String,
    },
    Unsettled,
}

impl Settlement {
    /// How a customer settles when the row creating it stopped short (`halt`).
    fn of_halt(halt: &Halt) -> Settlement {
        match halt {
            Halt::Failed { field, reason } => Settlement::Failed {
                field: field.clone(),
                reason: reason.clone(),
            },
            Halt::Unresolved(reason) => Settlement::Failed {
                field: None,
                reason: reason.clone(),
            },
            Halt::Pending(_) => Settlement::Unsettled,
        }
    }
}

enum Event {
    CustomerSettled {
        customer_key: String,
        settlement: Settlement,
    },
    RowFinished {
        work: Box<Work>,
        outcome: RowOutcome,
    },
    /// A worker panicked (a bug): its row stays as the checkpoint has it, pending, and the
    /// rows waiting for the customer it was creating are released as pending too.
    WorkerPanicked { creating: Option<String> },
    /// A bulk job ended: what becomes of each of its rows.
    BulkJobEnded {
        kind: BulkKind,
        rows: Vec<(Work, Next)>,
    },
    /// A bulk job's task panicked (a bug): its rows are left pending, as the checkpoint
    /// has them, and so are the rows waiting for the customers it was creating.
    BulkJobPanicked {
        kind: BulkKind,
        rows: usize,
        creating: Vec<String>,
    },
}

/// Shared by the workers of a run.
struct Shared {
    client: Arc<KustomerClient>,
    writer: CheckpointWriter,
    settings: ImportSettings,
    stop: StopSignals,
    events: mpsc::UnboundedSender<Event>,
    /// Set once, by whichever worker first hears of it.
    fatal: Mutex<Option<StopReason>>,
    /// The number the next bulk job is recorded under in the checkpoint.
    next_job: AtomicI64,
    job_pace: JobPace,
    /// `--mode auto` met an API without bulk endpoints: the rest of the run goes single.
    bulk_unavailable: AtomicBool,
}

impl Shared {
    fn halt_run(&self, reason: StopReason) {
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if fatal.is_none() {
            *fatal = Some(reason);
        }
        self.stop.soft.cancel();
    }
}

/// Runs one import of the inputs (opened by [`crate::rows::open_inputs`]) to its end or to
/// a stop. Errors only when the checkpoint cannot be read.
pub async fn run_import(
    settings: ImportSettings,
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
    let shared = Arc::new(Shared {
        client,
        writer,
        settings: settings.clone(),
        stop: stop.clone(),
        events: events_tx,
        fatal: Mutex::new(None),
        next_job: AtomicI64::new(checkpoint.next_bulk_job()?),
        job_pace: JobPace::default(),
        bulk_unavailable: AtomicBool::new(false),
    });
    // From the stop on, no request waits for the server: not here, not in the planner.
    shared.client.gate().stop_on(stop.soft.clone());
    let earlier = bulk::finish_earlier_jobs(&shared, checkpoint).await?;
    let mut window = settings.concurrency.most() * 4;
    if settings.mode != ImportMode::Single {
        // Room for every job in flight to be full, and for the next batches to fill.
        window = window.max(bulk::MAX_ITEMS * bulk::JOBS_IN_FLIGHT * 2);
    }
    // Read-ahead: enough to keep the planner fed, no more (a bulk window of rows in
    // flight needs no read-ahead of the same size).
    let read_ahead = settings.concurrency.most() * 4;
    let (rows_tx, rows) = mpsc::channel(read_ahead.div_ceil(reader::READ_BATCH).max(2));
    let reader = start_reader(inputs, settings.read.clone(), rows_tx);
    let mut planner = Planner {
        shared: Arc::clone(&shared),
        checkpoint,
        errors,
        progress,
        summary: Summary::default(),
        ready: VecDeque::new(),
        waiting: HashMap::new(),
        waiting_rows: 0,
        failed_customers: HashMap::new(),
        tasks: JoinSet::new(),
        running: 0,
        given_up_in_a_row: 0,
        bulk: match settings.mode {
            ImportMode::Single => Some(false),
            ImportMode::Bulk => Some(true),
            ImportMode::Auto => None,
        },
        for_worker: VecDeque::new(),
        customer_batch: Vec::new(),
        conversation_batch: Vec::new(),
        batch_since: None,
        jobs_running: 0,
        customer_jobs_running: 0,
        rows_in_jobs: 0,
        input_open: true,
        window,
        earlier,
        deferred: BinaryHeap::new(),
        deferred_count: 0,
    };
    planner.summary.customers_created += planner.earlier.customers_created;
    planner.summary.customers_linked += planner.earlier.customers_linked;
    planner.failed_customers = std::mem::take(&mut planner.earlier.failed_customers);
    planner.run(rows, &mut events).await;
    // Every clone of the writer must be gone before the writer thread can end: abandoned
    // workers hold one, and so does the planner. Workers that report while being shut
    // down are still counted.
    planner.tasks.shutdown().await;
    planner.settle_the_rest(&mut events).await;
    let mut summary = std::mem::take(&mut planner.summary);
    drop(planner);
    // A run told to stop does not wait for a reader still at work: it may be blocked on an
    // input that sends nothing (a FIFO whose writer is idle), and its rows are not wanted.
    let reader_error = if stop.soft.is_cancelled() && !reader.is_finished() {
        None
    } else {
        reader.await.unwrap_or(None)
    };
    let stats = shared.client_stats();
    summary.requests = stats.0;
    summary.rate_limited = stats.1;
    summary.bulk_jobs = shared.client.stats().bulk_jobs.load(Ordering::Relaxed);
    summary.elapsed = started.elapsed();
    let fatal = shared
        .fatal
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    drop(shared);
    let writer_result = tokio::task::spawn_blocking(move || writer_handle.finish())
        .await
        .unwrap_or_else(|_| {
            Err(CheckpointError::Write(
                "the writer could not be joined".into(),
            ))
        });
    let writer_stop = writer_result
        .err()
        .map(|error| StopReason::of_checkpoint(&error));
    let stop_reason = match (writer_stop, fatal) {
        // Damage outranks the write failure it may have caused: running again won't help.
        (_, Some(damage @ StopReason::CheckpointDamaged(_))) => damage,
        (Some(writer), _) => writer,
        (None, Some(fatal)) => fatal,
        (None, None) => {
            if let Some(error) = reader_error {
                StopReason::Input(error.to_string())
            } else if stop.soft.is_cancelled() {
                StopReason::Interrupted
            } else {
                StopReason::Finished
            }
        }
    };
    Ok(ImportOutcome {
        summary,
        stop: stop_reason,
    })
}

impl Shared {
    /// The most rows in flight now (it follows the latency seen unless fixed).
    fn concurrency_limit(&self) -> usize {
        self.settings
            .concurrency
            .limit(self.client.stats().typical_latency())
    }

    fn client_stats(&self) -> (u64, u64) {
        let stats = self.client.stats();
        (
            stats.requests.load(Ordering::Relaxed),
            stats.rate_limited.load(Ordering::Relaxed),
        )
    }
}

/// A row waiting until it may be looked up (see [`Planner::deferred`]).
struct Deferred {
    at: tokio::time::Instant,
    arrival: u64,
    work: Work,
    step: CustomerStep,
}

/// The soonest first in a [`BinaryHeap`] (a max-heap), then the first to arrive.
impl Ord for Deferred {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.arrival).cmp(&(self.at, self.arrival))
    }
}

impl PartialOrd for Deferred {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Deferred {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.arrival) == (other.at, other.arrival)
    }
}

impl Eq for Deferred {}

struct Planner<'a> {
    shared: Arc<Shared>,
    checkpoint: &'a Checkpoint,
    errors: &'a mut ErrorsFile,
    progress: &'a Progress,
    summary: Summary,
    /// Rows whose customer step is decided, waiting for a worker.
    ready: VecDeque<(Work, CustomerStep)>,
    /// Customers being created, with the rows waiting for their id.
    waiting: HashMap<String, Vec<Work>>,
    waiting_rows: usize,
    /// Customers this run could not create, with the reason, so their other rows fail
    /// without sending the same doomed request again.
    failed_customers: HashMap<String, (Option<String>, String)>,
    tasks: JoinSet<()>,
    /// Rows given to a worker that has not reported yet.
    running: usize,
    /// Rows in a row that gave up after their retries; too many means the API is down.
    given_up_in_a_row: usize,
    /// Whether rows go in bulk jobs; None while `--mode auto` has not decided.
    bulk: Option<bool>,
    /// Bulk mode: rows that take single mode's path, waiting for a worker.
    for_worker: VecDeque<(Work, CustomerStep)>,
    /// Rows that create their customer, for the next customers job.
    customer_batch: Vec<Work>,
    /// Rows whose customer is known, with its id, for the next conversations job.
    conversation_batch: Vec<(Work, String)>,
    /// When the oldest row of either batch joined it.
    batch_since: Option<tokio::time::Instant>,
    jobs_running: usize,
    customer_jobs_running: usize,
    /// Rows carried by the jobs running.
    rows_in_jobs: usize,
    /// Whether more rows may come from the reader.
    input_open: bool,
    /// The most rows read and not yet settled.
    window: usize,
    /// What the jobs earlier runs left unfinished came to.
    earlier: EarlierJobs,
    /// Rows whose bulk job's outcome is unknown, each with the instant it may be looked up,
    /// soonest first (a lost job's rows wait longer than an item with no result).
    deferred: BinaryHeap<Deferred>,
    /// Order of arrival, to keep rows due at the same instant in order.
    deferred_count: u64,
}

impl Planner<'_> {
    async fn run(
        &mut self,
        mut rows: mpsc::Receiver<Vec<ReadRow>>,
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) {
        let soft = self.shared.stop.soft.clone();
        let hard = self.shared.stop.hard.clone();
        let mut grace_ends: Option<tokio::time::Instant> = None;
        loop {
            if soft.is_cancelled() {
                if grace_ends.is_none() {
                    self.input_open = false;
                    rows.close();
                    grace_ends = Some(tokio::time::Instant::now() + self.shared.settings.grace);
                }
                // Nothing starts after a stop: rows that became ready since (a bulk job's
                // rows going on to their conversation) stay pending too.
                self.settle_unstarted_as_pending();
            }
            self.start_ready_work();
            if !self.input_open && self.nothing_in_flight() {
                break;
            }
            let take_rows = self.input_open && self.in_progress() < self.window;
            tokio::select! {
                biased;
                _ = hard.cancelled() => {
                    self.tasks.abort_all();
                    break;
                }
                _ = sleep_until_option(grace_ends) => {
                    tracing::warn!(
                        "the grace period is over: {} rows still in flight are left to the \
                         next run, which reconciles them",
                        self.running + self.rows_in_jobs
                    );
                    self.tasks.abort_all();
                    break;
                }
                Some(event) = events.recv() => self.handle_event(event).await,
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                // The stop starts the grace timer even when every row has been read
                // already and nothing but the workers is left to wake the loop.
                _ = soft.cancelled(), if grace_ends.is_none() => {}
                // A partial batch that has waited long enough, and rows whose lost job has
                // had its time, are taken up by start_ready_work.
                _ = sleep_until_option(self.batch_since.map(|since| since + bulk::FLUSH_AFTER)) => {}
                _ = sleep_until_option(self.deferred.peek().map(|row| row.at)) => {}
                batch = rows.recv(), if take_rows => match batch {
                    Some(batch) => {
                        let keys: Vec<&str> =
                            batch.iter().map(|row| row.origin.key.as_str()).collect();
                        let stored = match self.checkpoint.rows_to_plan(&keys) {
                            Ok(stored) => stored,
                            Err(error) => {
                                // Nothing of this batch is planned: it stays for next time.
                                self.summary.rows_read += batch.len() as u64;
                                self.summary.rows_pending += batch.len() as u64;
                                self.shared
                                    .halt_run(StopReason::of_checkpoint(&error));
                                continue;
                            }
                        };
                        for (row, known) in batch.into_iter().zip(stored) {
                            self.plan(row, known).await;
                        }
                    }
                    None => self.input_open = false,
                },
            }
        }
    }

    /// Rows read and not yet settled: the reader waits while this is at the window.
    fn in_progress(&self) -> usize {
        self.running
            + self.ready.len()
            + self.for_worker.len()
            + self.waiting_rows
            + self.customer_batch.len()
            + self.conversation_batch.len()
            + self.rows_in_jobs
            + self.deferred.len()
    }

    fn nothing_in_flight(&self) -> bool {
        self.running == 0
            && self.ready.is_empty()
            && self.for_worker.is_empty()
            && self.jobs_running == 0
            && self.customer_batch.is_empty()
            && self.conversation_batch.is_empty()
            && self.deferred.is_empty()
    }

    /// After the workers are gone: counts what they reported last, and leaves every row
    /// not settled pending. Abandoned rows keep their last state (and intent) for next time.
    async fn settle_the_rest(&mut self, events: &mut mpsc::UnboundedReceiver<Event>) {
        while let Ok(event) = events.try_recv() {
            self.handle_event(event).await;
        }
        self.settle_unstarted_as_pending();
        self.summary.rows_pending += (self.running + self.rows_in_jobs) as u64;
        self.running = 0;
        self.rows_in_jobs = 0;
    }

    /// Gives ready rows to workers, up to the concurrency, or, in bulk mode, to the next
    /// batches, and sends the batches that are due as jobs.
    fn start_ready_work(&mut self) {
        if self.shared.stop.soft.is_cancelled() {
            return;
        }
        if self.bulk.is_none() {
            // --mode auto: enough rows waiting to be sent makes bulk worth it; an input
            // that ends with fewer goes single.
            let waiting = self.ready.len() + self.waiting_rows;
            if waiting >= bulk::AUTO_BULK_ROWS {
                tracing::info!("{waiting} rows or more to send: bulk mode");
                self.bulk = Some(true);
            } else if !self.input_open || self.in_progress() >= self.window {
                self.bulk = Some(false);
            } else {
                return;
            }
        }
        let now = tokio::time::Instant::now();
        while self.deferred.peek().is_some_and(|row| row.at <= now) {
            if let Some(Deferred { work, step, .. }) = self.deferred.pop() {
                self.ready.push_back((work, step));
            }
        }
        if self.bulk == Some(true) && !self.shared.bulk_unavailable.load(Ordering::Relaxed) {
            self.divert_to_batches();
        }
        // Each row moves once, from `ready` (or, in bulk mode, `for_worker`) to a worker,
        // not on every event: the rows waiting stay where they are.
        let limit = self.shared.concurrency_limit();
        while self.running < limit {
            let Some((work, step)) = self
                .for_worker
                .pop_front()
                .or_else(|| self.ready.pop_front())
            else {
                break;
            };
            self.spawn_worker(work, step);
        }
        self.start_due_jobs();
    }

    /// Bulk mode: each ready row joins a batch, or, when it takes single mode's path (a
    /// link, a lookup, a row with no conversation), the queue for a worker.
    fn divert_to_batches(&mut self) {
        while let Some((work, step)) = self.ready.pop_front() {
            match step {
                CustomerStep::Create {
                    reconcile_first: false,
                } if !work.conversation_unknown => self.customer_batch.push(work),
                CustomerStep::Known(id)
                    if !work.conversation_unknown && work.plan.conversation.is_some() =>
                {
                    self.conversation_batch.push((work, id));
                }
                step => self.for_worker.push_back((work, step)),
            }
        }
        if self.batch_since.is_none()
            && !(self.customer_batch.is_empty() && self.conversation_batch.is_empty())
        {
            self.batch_since = Some(tokio::time::Instant::now());
        }
    }

    fn spawn_worker(&mut self, work: Work, step: CustomerStep) {
        self.running += 1;
        let shared = Arc::clone(&self.shared);
        let creating = step
            .settles_customer()
            .then(|| work.plan.customer_key.clone());
        self.tasks.spawn(async move {
            let processed = AssertUnwindSafe(process_row(&shared, work, step))
                .catch_unwind()
                .await;
            let event = match processed {
                Ok((work, outcome)) => Event::RowFinished {
                    work: Box::new(work),
                    outcome,
                },
                Err(_) => Event::WorkerPanicked { creating },
            };
            let _ = shared.events.send(event);
        });
    }

    /// Sends full batches as jobs, and partial ones when waiting cannot fill them: the
    /// input is over or the window is full, or the oldest row waited [`bulk::FLUSH_AFTER`].
    /// Conversations also wait for customers jobs in flight, which add to their batch.
    fn start_due_jobs(&mut self) {
        let stalled = !self.input_open
            || self.in_progress() >= self.window
            || self
                .batch_since
                .is_some_and(|since| since.elapsed() >= bulk::FLUSH_AFTER);
        while self.jobs_running < bulk::JOBS_IN_FLIGHT {
            let customers = self.customer_batch.len();
            let conversations = self.conversation_batch.len();
            if customers >= bulk::MAX_ITEMS || (customers > 0 && stalled) {
                let take = customers.min(bulk::MAX_ITEMS);
                let works: Vec<Work> = self.customer_batch.drain(..take).collect();
                let creating = works.iter().map(|w| w.plan.customer_key.clone()).collect();
                self.spawn_job(BulkKind::Customers, works.len(), creating, |shared| {
                    Box::pin(async move { bulk::run_customer_job(&shared, works).await })
                });
            } else if conversations >= bulk::MAX_ITEMS
                || (conversations > 0 && stalled && self.customer_jobs_running == 0)
            {
                let take = conversations.min(bulk::MAX_ITEMS);
                let works: Vec<(Work, String)> = self.conversation_batch.drain(..take).collect();
                self.spawn_job(BulkKind::Conversations, works.len(), Vec::new(), |shared| {
                    Box::pin(async move { bulk::run_conversation_job(&shared, works).await })
                });
            } else {
                break;
            }
        }
        if self.customer_batch.is_empty() && self.conversation_batch.is_empty() {
            self.batch_since = None;
        } else if stalled {
            // What is left waits for a job slot or for customers: restart its clock.
            self.batch_since = Some(tokio::time::Instant::now());
        }
    }

    fn spawn_job(
        &mut self,
        kind: BulkKind,
        rows: usize,
        creating: Vec<String>,
        job: impl FnOnce(
            Arc<Shared>,
        ) -> std::pin::Pin<Box<dyn Future<Output = Vec<(Work, Next)>> + Send>>,
    ) {
        self.jobs_running += 1;
        self.rows_in_jobs += rows;
        if kind == BulkKind::Customers {
            self.customer_jobs_running += 1;
        }
        let shared = Arc::clone(&self.shared);
        let events = shared.events.clone();
        let job = job(shared);
        self.tasks.spawn(async move {
            let event = match AssertUnwindSafe(job).catch_unwind().await {
                Ok(rows) => Event::BulkJobEnded { kind, rows },
                Err(_) => Event::BulkJobPanicked {
                    kind,
                    rows,
                    creating,
                },
            };
            let _ = events.send(event);
        });
    }

    /// Rows read but never started stay pending for the next run.
    fn settle_unstarted_as_pending(&mut self) {
        let unstarted = self.ready.len()
            + self.for_worker.len()
            + self.waiting_rows
            + self.customer_batch.len()
            + self.conversation_batch.len()
            + self.deferred.len();
        self.summary.rows_pending += unstarted as u64;
        self.ready.clear();
        self.for_worker.clear();
        self.deferred.clear();
        self.customer_batch.clear();
        self.conversation_batch.clear();
        self.batch_since = None;
        self.waiting.clear();
        self.waiting_rows = 0;
    }

    /// Decides what one row needs, from `stored`: what the checkpoint holds of it, read with
    /// its batch (a checkpoint that cannot be read stops the run, the batch left pending).
    async fn plan(&mut self, row: ReadRow, stored: Option<StoredRow>) {
        self.summary.rows_read += 1;
        let ReadRow {
            origin,
            original,
            plan,
        } = row;
        let failed_earlier = matches!(&stored, Some(stored)
            if stored.state == RowState::Failed
                && (stored.outcome_unknown || !self.shared.settings.retry_failed));
        // Carried by a job an earlier run left queued and this one could not finish: sent
        // again, it could land twice. The next run polls the job again.
        if stored.is_some()
            && !self.earlier.held_rows.is_empty()
            && self.earlier.held_rows.contains(&origin.key)
        {
            self.summary.rows_pending += 1;
            return;
        }
        // Settled just now by such a job: this run's work, not an earlier run's (and not
        // retried in this run if it failed).
        let settled_now = match stored {
            Some(_) if !self.earlier.settled_rows.is_empty() => {
                self.earlier.settled_rows.remove(&origin.key)
            }
            _ => None,
        };
        let failed_earlier = failed_earlier
            || (settled_now.is_some()
                && matches!(&stored, Some(stored) if stored.state == RowState::Failed));
        let mut plan = match plan {
            Ok(plan) => plan,
            // The same bad row as last night: failed earlier, not a new failure.
            Err(_) if failed_earlier => {
                self.report_failed_earlier(
                    &origin,
                    &original,
                    stored.as_ref(),
                    settled_now.is_some(),
                );
                return;
            }
            Err(error) => {
                self.fail(&origin, &original, error.field, error.reason, None)
                    .await;
                return;
            }
        };
        let stored_customer_id = match &stored {
            Some(_) if failed_earlier => {
                self.report_failed_earlier(
                    &origin,
                    &original,
                    stored.as_ref(),
                    settled_now.is_some(),
                );
                return;
            }
            Some(stored) if stored.state == RowState::Done => {
                let settled = match settled_now {
                    Some(created) => {
                        self.summary.rows_done += 1;
                        self.summary.conversations_created += u64::from(created);
                        Settled::Done
                    }
                    None => {
                        self.summary.rows_skipped_done += 1;
                        Settled::AlreadyDone
                    }
                };
                self.progress.row_finished(settled);
                return;
            }
            Some(stored) => stored.customer_id.clone(),
            None => None,
        };
        let conversation_unknown = match &stored {
            // A conversation create left (or, for a failed row retried now, may have left):
            // look before sending again.
            Some(stored)
                if stored.state == RowState::ConversationSent
                    || (stored.state == RowState::Failed
                        && stored.conversation_external_id.is_some()) =>
            {
                // Reconcile with the externalId that went out with the request, whatever
                // this run would derive: the flags or the mapping may have changed since.
                if let Some(conversation) = &mut plan.conversation {
                    conversation.external_id = stored.conversation_external_id.clone();
                }
                true
            }
            _ => false,
        };
        if stored.is_none() {
            let pending = RowChange {
                unseen: true,
                ..row_change(&origin, &plan, RowState::Pending, None, None)
            };
            self.record(vec![Change::Row(pending)]).await;
        }
        let work = Work {
            origin,
            original,
            plan,
            conversation_unknown,
        };
        if let Some(customer_id) = stored_customer_id {
            // The row whose job created its customer just now did not reuse it.
            if settled_now.is_none() {
                self.summary.customers_reused += 1;
            }
            self.ready
                .push_back((work, CustomerStep::Known(customer_id)));
            return;
        }
        let customer_key = work.plan.customer_key.clone();
        if let Some((field, reason)) = self.failed_customers.get(&customer_key).cloned() {
            self.fail(
                &work.origin,
                &work.original,
                field,
                reason,
                Some(&work.plan),
            )
            .await;
            return;
        }
        if let Some(waiting) = self.waiting.get_mut(&customer_key) {
            waiting.push(work);
            self.waiting_rows += 1;
            return;
        }
        if self.earlier.held_customers.contains(&customer_key) {
            // Its customer is in a job an earlier run left queued: wait for that job.
            self.summary.rows_pending += 1;
            return;
        }
        let stored_customer = match self.checkpoint.customer(&customer_key) {
            Ok(stored_customer) => stored_customer,
            Err(error) => {
                self.summary.rows_pending += 1;
                self.shared.halt_run(StopReason::of_checkpoint(&error));
                return;
            }
        };
        match stored_customer {
            Some(customer) => match customer.customer_id {
                Some(id) => {
                    self.summary.customers_reused += 1;
                    self.ready.push_back((work, CustomerStep::Known(id)));
                }
                None => self.create_customer_with(work, true),
            },
            None => self.create_customer_with(work, false),
        }
    }

    /// A row an earlier run failed, not sent again: counted, and in the errors file again
    /// with the reason recorded then.
    fn report_failed_earlier(
        &mut self,
        origin: &RowOrigin,
        original: &Original,
        stored: Option<&StoredRow>,
        failed_now: bool,
    ) {
        let settled = if failed_now {
            self.summary.rows_failed += 1;
            Settled::Failed
        } else {
            self.summary.rows_failed_earlier += 1;
            Settled::FailedEarlier
        };
        let reason = stored
            .and_then(|s| s.last_error.clone())
            .unwrap_or_else(|| "failed in an earlier run".into());
        let field = stored.and_then(|s| s.field.as_deref());
        self.errors.write(
            &origin.file,
            origin.line,
            field,
            &reason,
            &original.to_json(),
        );
        self.progress.row_finished(settled);
    }

    fn create_customer_with(&mut self, work: Work, reconcile_first: bool) {
        self.waiting
            .insert(work.plan.customer_key.clone(), Vec::new());
        // A job of an earlier run found the customer already in Kustomer: link it.
        let step = match self.earlier.link_rows.remove(&work.origin.key) {
            Some(message) => CustomerStep::Link { message },
            None => CustomerStep::Create { reconcile_first },
        };
        self.ready.push_back((work, step));
    }

    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::CustomerSettled {
                customer_key,
                settlement,
            } => {
                let waiting = self.waiting.remove(&customer_key).unwrap_or_default();
                self.waiting_rows -= waiting.len();
                match settlement {
                    Settlement::Known(id, origin) => {
                        match origin {
                            CustomerOrigin::Created => self.summary.customers_created += 1,
                            CustomerOrigin::Linked => self.summary.customers_linked += 1,
                            CustomerOrigin::Reconciled => self.summary.customers_reconciled += 1,
                        }
                        self.summary.customers_reused += waiting.len() as u64;
                        for work in waiting {
                            self.ready
                                .push_back((work, CustomerStep::Known(id.clone())));
                        }
                    }
                    Settlement::Failed { field, reason } => {
                        let reason = format!("its customer could not be created: {reason}");
                        for work in &waiting {
                            self.fail(
                                &work.origin,
                                &work.original,
                                field.clone(),
                                reason.clone(),
                                Some(&work.plan),
                            )
                            .await;
                        }
                        self.failed_customers.insert(customer_key, (field, reason));
                    }
                    Settlement::Unsettled => {
                        self.summary.rows_pending += waiting.len() as u64;
                    }
                }
            }
            Event::RowFinished { work, outcome } => {
                self.running -= 1;
                self.finish_row(*work, outcome);
            }
            Event::BulkJobEnded { kind, rows } => {
                self.job_ended(kind, rows.len());
                let mut gave_up = None;
                let carried = rows.len();
                for (work, next) in rows {
                    match next {
                        Next::Finished(RowOutcome::Halted(Halt::Pending(reason))) => {
                            self.summary.rows_pending += 1;
                            gave_up = Some(reason);
                        }
                        Next::Finished(outcome) => self.finish_row(work, outcome),
                        Next::Continue(step) => self.ready.push_back((work, step)),
                        Next::ContinueAfter(step, at) => {
                            self.deferred_count += 1;
                            self.deferred.push(Deferred {
                                at,
                                arrival: self.deferred_count,
                                work,
                                step,
                            });
                        }
                    }
                }
                // A job left pending counts once towards "the API keeps failing", as a row.
                if let Some(reason) = gave_up {
                    self.note_given_up(&format!(
                        "a bulk job of {carried} rows: left pending for the next run: {reason}"
                    ));
                }
            }
            Event::BulkJobPanicked {
                kind,
                rows,
                creating,
            } => {
                tracing::error!("a bulk job's task panicked (a bug); its rows are left pending");
                self.job_ended(kind, rows);
                self.summary.rows_pending += rows as u64;
                for customer_key in creating {
                    Box::pin(self.handle_event(Event::CustomerSettled {
                        customer_key,
                        settlement: Settlement::Unsettled,
                    }))
                    .await;
                }
            }
            Event::WorkerPanicked { creating } => {
                tracing::error!("a worker panicked (a bug); its row is left pending");
                self.running -= 1;
                self.summary.rows_pending += 1;
                if let Some(customer_key) = creating {
                    Box::pin(self.handle_event(Event::CustomerSettled {
                        customer_key,
                        settlement: Settlement::Unsettled,
                    }))
                    .await;
                }
            }
        }
    }

    fn job_ended(&mut self, kind: BulkKind, rows: usize) {
        self.jobs_running -= 1;
        self.rows_in_jobs -= rows;
        if kind == BulkKind::Customers {
            self.customer_jobs_running -= 1;
        }
    }

    fn finish_row(&mut self, work: Work, outcome: RowOutcome) {
        match outcome {
            RowOutcome::Done { conversation } => {
                self.given_up_in_a_row = 0;
                self.summary.rows_done += 1;
                match conversation {
                    Some(CustomerOrigin::Created) => self.summary.conversations_created += 1,
                    Some(CustomerOrigin::Linked) => self.summary.conversations_linked += 1,
                    Some(CustomerOrigin::Reconciled) => {
                        self.summary.conversations_reconciled += 1;
                    }
                    None => {}
                }
                self.progress.row_finished(Settled::Done);
            }
            RowOutcome::Halted(halt @ (Halt::Failed { .. } | Halt::Unresolved(_))) => {
                let (field, reason) = match halt {
                    Halt::Failed { field, reason } => (field, reason),
                    Halt::Unresolved(reason) | Halt::Pending(reason) => (None, reason),
                };
                self.given_up_in_a_row = 0;
                self.summary.rows_failed += 1;
                self.errors.write(
                    &work.origin.file,
                    work.origin.line,
                    field.as_deref(),
                    &reason,
                    &work.original.to_json(),
                );
                self.progress.row_finished(Settled::Failed);
            }
            RowOutcome::Halted(Halt::Pending(reason)) => {
                self.summary.rows_pending += 1;
                let what = format!(
                    "{}:{}: left pending for the next run: {reason}",
                    work.origin.file, work.origin.line
                );
                self.note_given_up(&what);
            }
        }
    }

    /// A row (or a bulk job) left pending after its retries; too many in a row stop the run.
    fn note_given_up(&mut self, what: &str) {
        if self.shared.stop.soft.is_cancelled() {
            return;
        }
        tracing::warn!("{what}");
        self.given_up_in_a_row += 1;
        let limit = (self.shared.concurrency_limit() * 2).max(10);
        if self.given_up_in_a_row >= limit {
            self.shared.halt_run(StopReason::ApiUnavailable(format!(
                "{limit} rows in a row gave up after their retries; last: {what}"
            )));
        }
    }

    /// Records a row as failed, in the checkpoint and the errors file.
    async fn fail(
        &mut self,
        origin: &RowOrigin,
        original: &Original,
        field: Option<String>,
        reason: String,
        plan: Option<&Plan>,
    ) {
        self.summary.rows_failed += 1;
        self.errors.write(
            &origin.file,
            origin.line,
            field.as_deref(),
            &reason,
            &original.to_json(),
        );
        let mut change = match plan {
            Some(plan) => row_change(origin, plan, RowState::Failed, None, None),
            None => RowChange::new(
                origin.key.clone(),
                origin.file.to_string(),
                origin.line,
                RowState::Failed,
            ),
        };
        change.field = field;
        change.error = Some(reason);
        self.record(vec![Change::Row(change)]).await;
        self.progress.row_finished(Settled::Failed);
    }

    async fn record(&self, changes: Vec<Change>) {
        if let Err(error) = self.shared.writer.record(changes).await {
            self.shared.halt_run(StopReason::of_checkpoint(&error));
        }
    }
}

async fn sleep_until_option(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The intent recorded, and made durable, before a row's conversation create leaves.
fn conversation_intent(work: &Work, customer_id: &str, attempts: u32) -> RowChange {
    RowChange {
        attempts,
        ..row_change(
            &work.origin,
            &work.plan,
            RowState::ConversationSent,
            Some(customer_id.to_string()),
            None,
        )
    }
}

fn row_change(
    origin: &RowOrigin,
    plan: &Plan,
    state: RowState,
    customer_id: Option<String>,
    conversation_id: Option<String>,
) -> RowChange {
    RowChange {
        customer_key: Some(plan.customer_key.clone()),
        conversation_external_id: plan
            .conversation
            .as_ref()
            .and_then(|c| c.external_id.clone()),
        customer_id,
        conversation_id,
        ..RowChange::new(
            origin.key.clone(),
            origin.file.to_string(),
            origin.line,
            state,
        )
    }
}
