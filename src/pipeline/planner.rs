//! The planner: the run's scheduler. It takes rows from the reader, asks the checkpoint what
//! each still needs ([`super::resume`] decides), holds the rows of a customer being created
//! behind the one row that creates it, gives rows to workers up to the concurrency or, in
//! bulk mode, gathers them into jobs, and counts what every row came to. It is the only
//! owner of the run's queues; workers and jobs report to it through [`Event`]s.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::agents;
use super::bulk::Jobs;
use super::bulk::{self, AfterJob, EarlierJobs};
use super::handles::Tools;
use super::resume::{
    CustomerFacts, CustomerRoute, EarlierJobFacts, OnChange, RowResume, SendFrom, Sync,
    reopened_for_history, resume_row, route_customer, sync_done_row,
};
use super::row::{
    CustomerStep, EarlierRecords, Halt, Owed, PlannedRow, RowOutcome, Settlement, failed_unplanned,
};
use super::tags::{RowTags, append_owed};
use super::thread_sync::thread_seen;
use super::update::{Of, RowUpdate, appends_missing_tags, fields_to_send, update_row};
use super::worker::{Attempts, process_row};
use super::{ImportMode, ImportSettings, StopReason};
use crate::api::BulkKind;
use crate::checkpoint::{
    Change, Checkpoint, CheckpointError, CustomerOrigin, RowChange, RowState, StoredCustomer,
    StoredRow,
};
use crate::fingerprint::Fingerprint;
use crate::history::store::ThreadSize;
use crate::mapping::{MappingError, Plan};
use crate::report::{ErrorsFile, Progress, Settled, Summary};
use crate::rows::{Original, ReadRow, RowOrigin};

/// What a done row's records came to, compared with what was last sent.
enum Compared {
    /// Nothing to send: unchanged, or (`adopt`) recorded by a version before this one, what
    /// it maps to now then taken as what was sent.
    Unchanged { adopt: bool },
    /// Changed or not, kept as it is: `--on-change skip` (None) or `fail` (why it is
    /// reported).
    Kept(Option<Halt>),
    /// These fields changed: to update.
    Changed {
        customer: Vec<String>,
        conversation: Vec<String>,
    },
}

/// A row as [`Planner::with_history`] read it.
struct WithHistory {
    stored: Option<StoredRow>,
    records: EarlierRecords,
    /// A done row taken up again at its history.
    reopened: bool,
}

pub(super) enum Event {
    CustomerSettled {
        customer_key: String,
        settlement: Settlement,
    },
    RowFinished {
        work: Box<PlannedRow>,
        outcome: RowOutcome,
        /// The worker was one of bulk mode's history writers.
        wrote_history: bool,
    },
    /// A worker panicked (a bug): its row stays as the checkpoint has it, pending, and the
    /// rows waiting for the customer it was creating are released as pending too.
    WorkerPanicked {
        creating: Option<String>,
        wrote_history: bool,
    },
    /// A bulk job ended: what becomes of each of its rows.
    BulkJobEnded {
        kind: BulkKind,
        rows: Vec<(PlannedRow, AfterJob)>,
    },
    /// A bulk job's task panicked (a bug): its rows are left pending, as the checkpoint
    /// has them, and so are the rows waiting for the customers it was creating.
    BulkJobPanicked {
        kind: BulkKind,
        rows: usize,
        creating: Vec<String>,
    },
}

/// A row waiting until it may be looked up (see [`Planner::deferred`]).
struct Deferred {
    at: tokio::time::Instant,
    arrival: u64,
    work: PlannedRow,
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

/// What the planner dispatches work with: the tools it hands to workers and jobs, the
/// jobs' shared book, the run's settings, and the most rows read and not yet settled.
pub(super) struct Dispatch {
    pub tools: Arc<Tools>,
    pub jobs: Arc<Jobs>,
    pub settings: ImportSettings,
    pub window: usize,
    /// Bulk mode's batcher of history jobs (None in single mode).
    pub history_jobs: Option<bulk::HistoryJobs>,
}

pub(super) struct Planner<'a> {
    tools: Arc<Tools>,
    jobs: Arc<Jobs>,
    settings: ImportSettings,
    checkpoint: &'a Checkpoint,
    errors: &'a mut ErrorsFile,
    progress: &'a Progress,
    summary: Summary,
    /// Rows whose customer step is decided, waiting for a worker.
    ready: VecDeque<(PlannedRow, CustomerStep)>,
    /// Customers being created, with the rows waiting for their id.
    waiting: HashMap<String, Vec<PlannedRow>>,
    waiting_rows: usize,
    /// Customers this run could not create, with the reason, so their other rows fail
    /// without sending the same doomed request again.
    failed_customers: HashMap<String, (Option<String>, String)>,
    tasks: JoinSet<()>,
    /// Rows given to a worker that has not reported yet.
    running: usize,
    /// Rows in a row that gave up after their retries; too many means the API is down.
    given_up_in_a_row: usize,
    /// How rows travel: `Undecided` while `--mode auto` has not seen enough rows.
    sending: Sending,
    /// Bulk mode: rows that take single mode's path, waiting for a worker.
    for_worker: VecDeque<(PlannedRow, CustomerStep)>,
    /// Bulk mode: rows whose conversation is made, waiting for a worker to write their
    /// history in bulk jobs (see `bulk::HistoryJobs`).
    for_history: VecDeque<(PlannedRow, CustomerStep)>,
    /// Done rows whose records changed, waiting to be sent: to the update batches in bulk
    /// mode, else to a worker each.
    updates: VecDeque<(PlannedRow, RowUpdate)>,
    /// Updates sent one request per record, waiting for a worker: single mode's, and what
    /// an update job could not settle.
    updates_alone: VecDeque<(PlannedRow, RowUpdate)>,
    /// Of the workers running, those writing history in bulk: they wait on jobs most of
    /// the time, and [`bulk::HISTORY_WRITERS`] of them may run besides the others.
    writing_history: usize,
    /// Bulk mode's batcher of history jobs.
    history_jobs: Option<bulk::HistoryJobs>,
    /// Rows that create their customer, for the next customers job.
    customer_batch: Vec<PlannedRow>,
    /// Rows whose customer is known, with its id, for the next conversations job.
    conversation_batch: Vec<(PlannedRow, String)>,
    /// Done rows whose customer changed, for the next customer updates job.
    customer_update_batch: Vec<(PlannedRow, RowUpdate)>,
    /// Done rows whose conversation changed (and whose customer, if it did too, is
    /// updated), for the next conversation updates job.
    conversation_update_batch: Vec<(PlannedRow, RowUpdate)>,
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

impl<'a> Planner<'a> {
    pub(super) fn new(
        dispatch: Dispatch,
        checkpoint: &'a Checkpoint,
        errors: &'a mut ErrorsFile,
        progress: &'a Progress,
        mut earlier: EarlierJobs,
    ) -> Planner<'a> {
        let mut summary = Summary::default();
        summary.customers_created += earlier.customers_created;
        summary.customers_linked += earlier.customers_linked;
        let failed_customers = std::mem::take(&mut earlier.failed_customers);
        let Dispatch {
            tools,
            jobs,
            settings,
            window,
            history_jobs,
        } = dispatch;
        let sending = match settings.mode {
            ImportMode::Single => Sending::OneByOne,
            ImportMode::Bulk => Sending::InJobs,
            ImportMode::Auto => Sending::Undecided,
        };
        Planner {
            tools,
            jobs,
            settings,
            checkpoint,
            errors,
            progress,
            summary,
            ready: VecDeque::new(),
            waiting: HashMap::new(),
            waiting_rows: 0,
            failed_customers,
            tasks: JoinSet::new(),
            running: 0,
            given_up_in_a_row: 0,
            sending,
            for_worker: VecDeque::new(),
            for_history: VecDeque::new(),
            updates: VecDeque::new(),
            updates_alone: VecDeque::new(),
            writing_history: 0,
            history_jobs,
            customer_batch: Vec::new(),
            conversation_batch: Vec::new(),
            customer_update_batch: Vec::new(),
            conversation_update_batch: Vec::new(),
            batch_since: None,
            jobs_running: 0,
            customer_jobs_running: 0,
            rows_in_jobs: 0,
            input_open: true,
            window,
            earlier,
            deferred: BinaryHeap::new(),
            deferred_count: 0,
        }
    }

    pub(super) async fn run(
        &mut self,
        mut rows: mpsc::Receiver<Vec<ReadRow>>,
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) {
        let soft = self.tools.control.soft().clone();
        let hard = self.tools.control.hard().clone();
        let mut grace_ends: Option<tokio::time::Instant> = None;
        loop {
            if soft.is_cancelled() {
                if grace_ends.is_none() {
                    self.input_open = false;
                    rows.close();
                    grace_ends = Some(tokio::time::Instant::now() + self.settings.grace);
                }
                // Nothing starts after a stop: rows that became ready since (a bulk job's
                // rows going on to their conversation) stay pending too.
                self.settle_unstarted_as_pending();
            }
            self.start_ready_work();
            if !self.input_open && self.nothing_in_flight() {
                break;
            }
            let take_rows = self.input_open && !self.reading_blocked();
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
                                self.tools
                                    .control
                                    .halt(StopReason::of_checkpoint(&error));
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

    /// Whether the reader waits: the rows read and not yet settled are at the window, or
    /// the rows whose threads are being written (or wait to be) are. The two are counted
    /// apart so that a run whose conversations wait on their threads still reads on and
    /// fills its row jobs (counted together, they cut row jobs at a quarter of their size
    /// in a bulk import of threads: 0.026 requests a message instead of 0.021). A row in
    /// the history stage holds its plan only: its thread is on disk, and the writers hold
    /// a page each.
    fn reading_blocked(&self) -> bool {
        self.in_progress() >= self.window || self.history_backlog() >= self.window
    }

    /// Rows read and not yet settled, but those of [`Planner::history_backlog`].
    fn in_progress(&self) -> usize {
        self.running - self.writing_history
            + self.ready.len()
            + self.for_worker.len()
            + self.waiting_rows
            + self.customer_batch.len()
            + self.conversation_batch.len()
            + self.rows_in_jobs
            + self.deferred.len()
            + self.updates_waiting()
    }

    /// Rows whose conversation is made and whose thread is being written, or waits to be.
    fn history_backlog(&self) -> usize {
        self.for_history.len() + self.writing_history
    }

    /// Updates read and not yet sent.
    fn updates_waiting(&self) -> usize {
        self.updates.len()
            + self.updates_alone.len()
            + self.customer_update_batch.len()
            + self.conversation_update_batch.len()
    }

    fn nothing_in_flight(&self) -> bool {
        self.running == 0
            && self.ready.is_empty()
            && self.for_worker.is_empty()
            && self.for_history.is_empty()
            && self.jobs_running == 0
            && self.customer_batch.is_empty()
            && self.conversation_batch.is_empty()
            && self.deferred.is_empty()
            && self.updates_waiting() == 0
    }

    /// Ends the planner once its loop is over: shuts the workers down (every clone of the
    /// writer must be gone before the writer thread can end), counts what they reported
    /// last, and gives the run's counts.
    pub(super) async fn finish(mut self, events: &mut mpsc::UnboundedReceiver<Event>) -> Summary {
        self.tasks.shutdown().await;
        self.settle_the_rest(events).await;
        let history = &self.tools.history;
        let count =
            |value: &std::sync::atomic::AtomicU64| value.load(std::sync::atomic::Ordering::Relaxed);
        self.summary.messages_created = count(&history.messages_created);
        self.summary.notes_created = count(&history.notes_created);
        self.summary.history_reconciled = count(&history.reconciled);
        self.summary.history_failed = count(&history.failed);
        self.summary.messages_updated = count(&history.messages_updated);
        self.summary.notes_updated = count(&history.notes_updated);
        self.summary.user_lookups = count(&self.tools.client.stats().user_lookups);
        self.summary.agents_unresolved = self.tools.agents.unresolved();
        let companies = &self.tools.companies.counts;
        self.summary.companies_created = count(&companies.created);
        self.summary.companies_linked = count(&companies.linked);
        self.summary.companies_reconciled = count(&companies.reconciled);
        self.summary.companies_failed = count(&companies.failed);
        let tags = &self.tools.tags;
        self.summary.tag_lists = count(&tags.lists);
        self.summary.tags_created = tags.created();
        self.summary.tags_missing = tags.missing();
        std::mem::take(&mut self.summary)
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
        self.writing_history = 0;
        self.rows_in_jobs = 0;
    }

    /// Gives ready rows to workers, up to the concurrency, or, in bulk mode, to the next
    /// batches, and sends the batches that are due as jobs.
    fn start_ready_work(&mut self) {
        if self.tools.control.is_stopping() {
            return;
        }
        if self.sending == Sending::Undecided {
            // --mode auto: enough rows waiting to be sent (or updated) makes bulk worth it;
            // an input that ends with fewer goes single.
            let waiting = self.ready.len() + self.waiting_rows + self.updates.len();
            if waiting >= bulk::AUTO_BULK_ROWS {
                tracing::info!("{waiting} rows or more to send: bulk mode");
                self.sending = Sending::InJobs;
            } else if !self.input_open || self.reading_blocked() {
                self.sending = Sending::OneByOne;
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
        if self.sending == Sending::InJobs && !self.jobs.unavailable() {
            self.divert_to_batches();
        } else {
            self.updates_alone.extend(self.updates.drain(..));
        }
        // Each row moves once, from `ready` (or, in bulk mode, `for_worker`) to a worker,
        // not on every event: the rows waiting stay where they are.
        let limit = self.concurrency_limit();
        while self.running - self.writing_history < limit {
            let Some((work, step)) = self
                .for_worker
                .pop_front()
                .or_else(|| self.ready.pop_front())
            else {
                break;
            };
            self.spawn_worker(work, step, None);
        }
        while self.running - self.writing_history < limit {
            let Some((work, update)) = self.updates_alone.pop_front() else {
                break;
            };
            self.spawn_updater(work, update);
        }
        while self.writing_history < bulk::HISTORY_WRITERS {
            let Some((work, step)) = self.for_history.pop_front() else {
                break;
            };
            let history_jobs = self.history_jobs.clone();
            self.spawn_worker(work, step, history_jobs);
        }
        self.start_due_jobs();
    }

    /// Bulk mode: each ready row joins a batch, or, when it takes single mode's path (a
    /// link, a lookup, a row with no conversation, a row whose conversation is made and
    /// whose history is to write), the queue for a worker.
    fn divert_to_batches(&mut self) {
        while let Some((work, step)) = self.ready.pop_front() {
            match step {
                CustomerStep::Create {
                    reconcile_first: false,
                } if !work.conversation_unknown => self.customer_batch.push(work),
                CustomerStep::Known(id)
                    if !work.conversation_unknown
                        && work.conversation_id.is_none()
                        && work.plan.conversation.is_some() =>
                {
                    self.conversation_batch.push((work, id));
                }
                // A row with no thread but an append of tags owed takes a worker.
                step if work.conversation_id.is_some()
                    && work.thread.items() > 0
                    && self.history_jobs.is_some() =>
                {
                    self.for_history.push_back((work, step));
                }
                step => self.for_worker.push_back((work, step)),
            }
        }
        // A row whose customer and conversation both changed goes in a customers job
        // first, then (`AfterJob::Update`) in a conversations job.
        while let Some((work, update)) = self.updates.pop_front() {
            if appends_missing_tags(&self.tools, &work, &update) {
                // An append follows the update: both go from one worker.
                self.updates_alone.push_back((work, update));
            } else if fields_to_send(&work, &update, Of::Customer).is_some() {
                self.customer_update_batch.push((work, update));
            } else if fields_to_send(&work, &update, Of::Conversation).is_some() {
                self.conversation_update_batch.push((work, update));
            } else {
                // Nothing a job could carry (a conversation with no id): the single path
                // settles it, as it always has.
                self.updates_alone.push_back((work, update));
            }
        }
        if self.batch_since.is_none() && self.batched() > 0 {
            self.batch_since = Some(tokio::time::Instant::now());
        }
    }

    /// Rows in the batches not yet sent as jobs.
    fn batched(&self) -> usize {
        self.customer_batch.len()
            + self.conversation_batch.len()
            + self.customer_update_batch.len()
            + self.conversation_update_batch.len()
    }

    /// Starts a worker that sends a done row's updates one request per record.
    fn spawn_updater(&mut self, work: PlannedRow, update: RowUpdate) {
        self.running += 1;
        self.spawn_row_task(None, false, move |tools| {
            Box::pin(async move { update_row(&tools, work, update).await })
        });
    }

    /// Starts a worker on a row; with `history_jobs`, one that writes the row's history in
    /// bulk jobs.
    fn spawn_worker(
        &mut self,
        work: PlannedRow,
        step: CustomerStep,
        history_jobs: Option<bulk::HistoryJobs>,
    ) {
        self.running += 1;
        let wrote_history = history_jobs.is_some();
        self.writing_history += usize::from(wrote_history);
        let creating = step
            .settles_customer()
            .then(|| work.plan.customer_key.clone());
        self.spawn_row_task(creating, wrote_history, move |tools| {
            Box::pin(async move { process_row(&tools, work, step, history_jobs.as_ref()).await })
        });
    }

    /// Runs one row's task and reports how it ended (a panic, a bug, as a row left pending).
    fn spawn_row_task(
        &mut self,
        creating: Option<String>,
        wrote_history: bool,
        task: impl FnOnce(
            Arc<Tools>,
        )
            -> std::pin::Pin<Box<dyn Future<Output = (PlannedRow, RowOutcome)> + Send>>
        + Send
        + 'static,
    ) {
        let tools = Arc::clone(&self.tools);
        self.tasks.spawn(async move {
            let processed = AssertUnwindSafe(task(Arc::clone(&tools)))
                .catch_unwind()
                .await;
            let event = match processed {
                Ok((work, outcome)) => Event::RowFinished {
                    work: Box::new(work),
                    outcome,
                    wrote_history,
                },
                Err(_) => Event::WorkerPanicked {
                    creating,
                    wrote_history,
                },
            };
            let _ = tools.events.send(event);
        });
    }

    /// Sends full batches as jobs, and partial ones when waiting cannot fill them: the
    /// input is over or the window is full, or the oldest row waited [`bulk::FLUSH_AFTER`].
    /// Conversations also wait for customers jobs in flight, which add to their batch.
    fn start_due_jobs(&mut self) {
        let stalled = !self.input_open
            || self.reading_blocked()
            || self
                .batch_since
                .is_some_and(|since| since.elapsed() >= bulk::FLUSH_AFTER);
        while self.jobs_running < bulk::JOBS_IN_FLIGHT {
            let customers = self.customer_batch.len();
            let conversations = self.conversation_batch.len();
            if customers >= bulk::MAX_ITEMS || (customers > 0 && stalled) {
                let take = customers.min(bulk::MAX_ITEMS);
                let works: Vec<PlannedRow> = self.customer_batch.drain(..take).collect();
                let creating = works.iter().map(|w| w.plan.customer_key.clone()).collect();
                self.spawn_job(BulkKind::Customers, works.len(), creating, |tools, jobs| {
                    Box::pin(async move { bulk::run_customer_job(&tools, &jobs, works).await })
                });
            } else if conversations >= bulk::MAX_ITEMS
                || (conversations > 0 && stalled && self.customer_jobs_running == 0)
            {
                let take = conversations.min(bulk::MAX_ITEMS);
                let works: Vec<(PlannedRow, String)> =
                    self.conversation_batch.drain(..take).collect();
                self.spawn_job(
                    BulkKind::Conversations,
                    works.len(),
                    Vec::new(),
                    |tools, jobs| {
                        Box::pin(
                            async move { bulk::run_conversation_job(&tools, &jobs, works).await },
                        )
                    },
                );
            } else if let Some(of) = self.update_batch_due(stalled) {
                let batch = match of {
                    Of::Customer => &mut self.customer_update_batch,
                    Of::Conversation => &mut self.conversation_update_batch,
                };
                let take = batch.len().min(bulk::MAX_ITEMS);
                let works: Vec<(PlannedRow, RowUpdate)> = batch.drain(..take).collect();
                let kind = bulk::kind_of(of);
                self.spawn_job(kind, works.len(), Vec::new(), move |tools, jobs| {
                    Box::pin(async move { bulk::run_update_job(&tools, &jobs, of, works).await })
                });
            } else {
                break;
            }
        }
        if self.batched() == 0 {
            self.batch_since = None;
        } else if stalled {
            // What is left waits for a job slot or for customers: restart its clock.
            self.batch_since = Some(tokio::time::Instant::now());
        }
    }

    /// Which update batch is due as a job: a full one, or, when waiting cannot fill them,
    /// any. Updates wait for nothing else.
    fn update_batch_due(&self, stalled: bool) -> Option<Of> {
        let customers = self.customer_update_batch.len();
        let conversations = self.conversation_update_batch.len();
        if customers >= bulk::MAX_ITEMS || (customers > 0 && stalled) {
            Some(Of::Customer)
        } else if conversations >= bulk::MAX_ITEMS || (conversations > 0 && stalled) {
            Some(Of::Conversation)
        } else {
            None
        }
    }

    fn spawn_job(
        &mut self,
        kind: BulkKind,
        rows: usize,
        creating: Vec<String>,
        job: impl FnOnce(
            Arc<Tools>,
            Arc<Jobs>,
        )
            -> std::pin::Pin<Box<dyn Future<Output = Vec<(PlannedRow, AfterJob)>> + Send>>,
    ) {
        self.jobs_running += 1;
        self.rows_in_jobs += rows;
        if kind == BulkKind::Customers {
            self.customer_jobs_running += 1;
        }
        let events = self.tools.events.clone();
        let job = job(Arc::clone(&self.tools), Arc::clone(&self.jobs));
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
            + self.for_history.len()
            + self.waiting_rows
            + self.customer_batch.len()
            + self.conversation_batch.len()
            + self.deferred.len()
            + self.updates_waiting();
        self.summary.rows_pending += unstarted as u64;
        self.ready.clear();
        self.for_worker.clear();
        self.for_history.clear();
        self.deferred.clear();
        self.customer_batch.clear();
        self.conversation_batch.clear();
        self.updates.clear();
        self.updates_alone.clear();
        self.customer_update_batch.clear();
        self.conversation_update_batch.clear();
        self.batch_since = None;
        self.waiting.clear();
        self.waiting_rows = 0;
    }

    /// Decides what one row needs (see [`resume_row`]), from `stored`: what the checkpoint
    /// holds of it, read with its batch (a checkpoint that cannot be read stops the run, the
    /// batch left pending).
    async fn plan(&mut self, row: ReadRow, stored: Option<StoredRow>) {
        self.summary.rows_read += 1;
        let ReadRow {
            origin,
            original,
            mut plan,
            thread,
        } = row;
        let Some(mut tags) = self.resolve_references(&origin, &mut plan).await else {
            self.summary.rows_pending += 1;
            return;
        };
        let WithHistory {
            stored,
            records: earlier_records,
            reopened,
        } = match self.with_history(&origin.key, stored, thread) {
            Ok(known) => known,
            Err(error) => {
                self.summary.rows_pending += 1;
                self.tools.control.halt(StopReason::of_checkpoint(&error));
                return;
            }
        };
        tags.settled = reopened;
        let facts = self.earlier_job_facts(&origin.key, stored.is_some());
        let retry_failed = self.settings.retry_failed;
        match resume_row(stored.as_ref(), plan, retry_failed, facts) {
            RowResume::Held => self.summary.rows_pending += 1,
            RowResume::FailedEarlier { now } => {
                self.report_failed_earlier(&origin, &original, stored.as_ref(), now);
            }
            RowResume::Invalid(error) => {
                let change = failed_unplanned(&origin, error.field.clone(), error.reason.clone());
                self.fail(&origin, &original, error.field, error.reason, change)
                    .await;
            }
            // An earlier run's job made its conversation, without the tags the org lacked:
            // a worker appends them before the row counts as done.
            RowResume::Done {
                settled_now: Some(created),
                plan,
            } if append_owed(&tags, self.tools.tags.creates_missing(), true).is_some()
                && let Some(whole) = stored.as_ref()
                && let (Some(customer_id), Some(conversation_id)) =
                    (&whole.customer_id, &whole.conversation_id) =>
            {
                let work = PlannedRow {
                    origin,
                    original,
                    plan,
                    conversation_unknown: false,
                    conversation_id: Some(conversation_id.clone()),
                    conversation_origin: Some(if created {
                        CustomerOrigin::Created
                    } else {
                        CustomerOrigin::Linked
                    }),
                    thread,
                    earlier_records,
                    owed: Owed::Nothing,
                    tags,
                };
                self.ready
                    .push_back((work, CustomerStep::Known(customer_id.clone())));
            }
            RowResume::Done {
                settled_now: Some(created),
                ..
            } => {
                self.summary.rows_done += 1;
                self.summary.conversations_created += u64::from(created);
                self.progress.row_finished(Settled::Done);
            }
            RowResume::Done {
                settled_now: None,
                plan,
            } => {
                let work = PlannedRow {
                    origin,
                    original,
                    plan,
                    conversation_unknown: false,
                    conversation_id: None,
                    conversation_origin: None,
                    thread,
                    earlier_records,
                    owed: Owed::Nothing,
                    tags: tags.clone(),
                };
                self.sync_done(work, stored.as_ref()).await;
            }
            RowResume::Send(plan, from) => {
                let mut work = PlannedRow {
                    origin,
                    original,
                    plan,
                    conversation_unknown: from.reconcile_conversation.is_some(),
                    conversation_id: from.conversation_id.clone(),
                    conversation_origin: None,
                    thread,
                    earlier_records,
                    owed: Owed::Nothing,
                    tags: tags.clone(),
                };
                if reopened && let Some(whole) = &stored {
                    work.owed = match self.owed_by_reopened(&work, whole) {
                        Ok(owed) => owed,
                        Err(error) => {
                            self.summary.rows_pending += 1;
                            self.tools.control.halt(StopReason::of_checkpoint(&error));
                            return;
                        }
                    };
                }
                self.plan_send(work, from).await
            }
        }
    }

    /// The row's conversation's tag names and assigned agents made ids, in the plan itself
    /// (see `tags` and [`agents::assign`]): the one place a row's references to the org are
    /// resolved, before its creates, bulk items, updates and fingerprint are made. None:
    /// the org's tags or users could not be read (a stop, or retries spent), and the row
    /// stays as the checkpoint has it, pending.
    async fn resolve_references(
        &mut self,
        origin: &RowOrigin,
        plan: &mut Result<Plan, MappingError>,
    ) -> Option<RowTags> {
        let Some(conversation) = plan.as_mut().ok().and_then(|p| p.conversation.as_mut()) else {
            return Some(RowTags::default());
        };
        let tools = Arc::clone(&self.tools);
        let mut attempts = Attempts::new(&tools);
        let resolved = async {
            let tags = tools
                .tags
                .resolve(&tools, conversation, &mut attempts)
                .await?;
            agents::assign(&tools, conversation, &mut attempts).await?;
            Ok::<_, Halt>(tags)
        };
        match resolved.await {
            Ok(tags) => Some(tags),
            Err(halt) => {
                let reason = match halt {
                    Halt::Pending(reason) | Halt::Unresolved(reason) => reason,
                    Halt::Failed { reason, .. } => reason,
                };
                self.note_given_up(&format!(
                    "{}:{}: left pending for the next run: the org's tags or users could not \
                     be read: {reason}",
                    origin.file, origin.line
                ));
                None
            }
        }
    }

    /// A done row read again: compared with what was sent (see [`Planner::compare_done`]),
    /// it is skipped, adopted, reported, or queued to update what changed (in bulk jobs in
    /// bulk mode, else by a worker).
    async fn sync_done(&mut self, work: PlannedRow, stored: Option<&StoredRow>) {
        let (customer_fields, conversation_fields) = match self.compare_done(&work, stored) {
            Compared::Kept(None) => {
                self.summary.rows_skipped_done += 1;
                self.progress.row_finished(Settled::AlreadyDone);
                return;
            }
            // Reported only: the checkpoint keeps the row done, as it is in Kustomer.
            Compared::Kept(Some(halt)) => return self.finish_row(work, RowOutcome::Halted(halt)),
            Compared::Unchanged { adopt } => {
                if adopt {
                    self.record(vec![work.sent_as()]).await;
                }
                self.summary.rows_skipped_done += 1;
                self.summary.rows_unchanged += 1;
                self.progress.row_finished(Settled::AlreadyDone);
                return;
            }
            Compared::Changed {
                customer,
                conversation,
            } => (customer, conversation),
        };
        let update = self
            .checkpoint
            .row(&work.origin.key)
            .and_then(|whole| match whole {
                Some(whole) => {
                    self.update_of_done(&work, whole, customer_fields, conversation_fields)
                }
                None => Ok(None),
            });
        let update = match update {
            Ok(update) => update,
            Err(error) => {
                self.summary.rows_pending += 1;
                self.tools.control.halt(StopReason::of_checkpoint(&error));
                return;
            }
        };
        match update {
            // Sent as the run's rows are: in update jobs in bulk mode, else by a worker.
            Some(update) => self.updates.push_back((work, update)),
            None => {
                // Done without a customer id: no version writes that; nothing to update.
                self.summary.rows_skipped_done += 1;
                self.progress.row_finished(Settled::AlreadyDone);
            }
        }
    }

    /// What a done row reopened for its history owes its records, which tomorrow's export
    /// may have changed too: settled by its worker before the thread (see [`Owed`]).
    /// `whole` is the row read whole.
    fn owed_by_reopened(
        &self,
        work: &PlannedRow,
        whole: &StoredRow,
    ) -> Result<Owed, CheckpointError> {
        Ok(match self.compare_done(work, Some(whole)) {
            // Its worker records what it maps to now as sent, adopted or unchanged alike.
            Compared::Unchanged { .. } => Owed::Nothing,
            Compared::Kept(report) => Owed::Kept(report),
            Compared::Changed {
                customer,
                conversation,
            } => (self.update_of_done(work, whole.clone(), customer, conversation)?)
                .map_or(Owed::Kept(None), Owed::Update),
        })
    }

    /// The update of a done row (`whole`, read whole) whose records changed in these
    /// fields, carrying the company the checkpoint links its customer to (an update of the
    /// customer without it would unlink it); None for a row with no customer id.
    fn update_of_done(
        &self,
        work: &PlannedRow,
        whole: StoredRow,
        customer_fields: Vec<String>,
        conversation_fields: Vec<String>,
    ) -> Result<Option<RowUpdate>, CheckpointError> {
        let company_id = self.checkpoint.customer_company(&work.plan.customer_key)?;
        Ok(RowUpdate::of_done(
            whole,
            company_id,
            customer_fields,
            conversation_fields,
        ))
    }

    /// A done row's customer and conversation as last sent (the checkpoint's fingerprints
    /// in `stored`) against what they map to now, under `--on-change` and
    /// `--update-fields` (see [`sync_done_row`]).
    fn compare_done(&self, work: &PlannedRow, stored: Option<&StoredRow>) -> Compared {
        let rules = &self.settings.sync;
        if rules.on_change == OnChange::Skip {
            return Compared::Kept(None);
        }
        let stored_customer = stored.and_then(|row| row.customer_fingerprint.as_deref());
        let stored_conversation = stored.and_then(|row| row.fingerprint.as_deref());
        let customer_now = Fingerprint::like(stored_customer, &work.plan.customer);
        let conversation_now = (work.plan.conversation.as_ref())
            .map(|conversation| Fingerprint::like(stored_conversation, conversation));
        let sync = sync_done_row(
            stored_customer,
            stored_conversation,
            &customer_now,
            conversation_now.as_ref(),
            rules,
        );
        let (customer, conversation) = match sync {
            Sync::Unchanged => return Compared::Unchanged { adopt: false },
            Sync::Adopt => return Compared::Unchanged { adopt: true },
            Sync::Changed {
                customer,
                conversation,
            } => (customer, conversation),
        };
        if rules.on_change == OnChange::Fail {
            let fields: Vec<String> = (customer.iter().map(|f| format!("customer.{f}")))
                .chain(conversation.iter().map(|f| format!("conversation.{f}")))
                .collect();
            return Compared::Kept(Some(Halt::Failed {
                field: fields.first().cloned(),
                reason: format!(
                    "changed since it was imported ({}); not updated (--on-change fail)",
                    fields.join(", ")
                ),
            }));
        }
        Compared::Changed {
            customer,
            conversation,
        }
    }

    /// For a row with history that a run has seen: the row read whole, reopened when its
    /// thread has items not done or not recorded as sent as they read now (see
    /// [`reopened_for_history`] and `EarlierRecords::as_sent`; `reopened` says it was),
    /// and what the checkpoint holds of its thread. A row without history keeps what
    /// `rows_to_plan` read.
    fn with_history(
        &self,
        row_key: &str,
        stored: Option<StoredRow>,
        thread: ThreadSize,
    ) -> Result<WithHistory, CheckpointError> {
        let stored = match stored {
            Some(stored) if thread.items() > 0 => stored,
            stored => {
                return Ok(WithHistory {
                    stored,
                    records: EarlierRecords::default(),
                    reopened: false,
                });
            }
        };
        let records = EarlierRecords::new(row_key, self.checkpoint.records_of(row_key)?);
        // An item edited in the source since it was sent reopens its row as a new one does
        // (its worker compares each done item), unless no item update may be sent or a run
        // under these rules read this very thread whole and left nothing to send for it.
        let compare_items = self.settings.sync.on_change != OnChange::Skip;
        let seen = stored.thread_seen == Some(thread_seen(thread.digest, &self.settings.sync));
        let unfinished =
            records.done() < thread.items() || (compare_items && !records.as_sent(thread) && !seen);
        let whole = self.checkpoint.row(row_key)?.map(|whole| {
            reopened_for_history(
                StoredRow {
                    // Read by `rows_to_plan` only: kept to compare the reopened row's.
                    customer_fingerprint: stored.customer_fingerprint.clone(),
                    ..whole
                },
                unfinished,
            )
        });
        let reopened = stored.state == RowState::Done
            && whole
                .as_ref()
                .is_some_and(|row| row.state != RowState::Done);
        Ok(WithHistory {
            stored: whole,
            records,
            reopened,
        })
    }

    /// What this run learnt of a row from earlier runs' jobs (asked only of a row the
    /// checkpoint holds: a job's rows are recorded before it is sent). A row those jobs
    /// settled is taken from them: counted once.
    fn earlier_job_facts(&mut self, row_key: &str, stored: bool) -> EarlierJobFacts {
        let earlier = &mut self.earlier;
        if !stored || (earlier.held_rows.is_empty() && earlier.settled_rows.is_empty()) {
            return EarlierJobFacts::default();
        }
        EarlierJobFacts {
            held: earlier.held_rows.contains(row_key),
            settled_now: earlier.settled_rows.remove(row_key),
        }
    }

    /// A row to send: to a worker's queue with its customer known, or to the rules for its
    /// customer ([`route_customer`]).
    async fn plan_send(&mut self, mut work: PlannedRow, from: SendFrom) {
        if let Some(external_id) = &from.reconcile_conversation
            && let Some(conversation) = &mut work.plan.conversation
        {
            conversation.external_id = external_id.clone();
        }
        if from.first_seen {
            self.record(vec![Change::Row(work.first_seen())]).await;
        }
        if let Some(customer_id) = from.customer_id {
            self.summary.customers_reused += u64::from(from.customer_reused);
            self.ready
                .push_back((work, CustomerStep::Known(customer_id)));
            return;
        }
        let customer_key = work.plan.customer_key.clone();
        let step = match route_customer(self, &customer_key, &work.origin.key) {
            CustomerRoute::Fail(field, reason) => {
                let change = work.failed(field.clone(), reason.clone());
                self.fail(&work.origin, &work.original, field, reason, change)
                    .await;
                return;
            }
            CustomerRoute::WaitBehind => {
                self.waiting.entry(customer_key).or_default().push(work);
                self.waiting_rows += 1;
                return;
            }
            CustomerRoute::Held => {
                self.summary.rows_pending += 1;
                return;
            }
            CustomerRoute::Unreadable(error) => {
                self.summary.rows_pending += 1;
                self.tools.control.halt(StopReason::of_checkpoint(&error));
                return;
            }
            CustomerRoute::Known(id) => {
                self.summary.customers_reused += 1;
                self.ready.push_back((work, CustomerStep::Known(id)));
                return;
            }
            CustomerRoute::Create { reconcile_first } => CustomerStep::Create { reconcile_first },
            CustomerRoute::Link(message) => CustomerStep::Link { message },
        };
        // The rows of this customer read next wait behind this one.
        self.waiting.insert(customer_key, Vec::new());
        self.ready.push_back((work, step));
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

    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::CustomerSettled {
                customer_key,
                settlement,
            } => self.customer_settled(customer_key, settlement).await,
            Event::RowFinished {
                work,
                outcome,
                wrote_history,
            } => {
                self.running -= 1;
                self.writing_history -= usize::from(wrote_history);
                self.finish_row(*work, outcome);
            }
            Event::BulkJobEnded { kind, rows } => self.bulk_job_ended(kind, rows),
            Event::BulkJobPanicked {
                kind,
                rows,
                creating,
            } => {
                tracing::error!("a bulk job's task panicked (a bug); its rows are left pending");
                self.job_ended(kind, rows);
                self.summary.rows_pending += rows as u64;
                for customer_key in creating {
                    self.customer_settled(customer_key, Settlement::Unsettled)
                        .await;
                }
            }
            Event::WorkerPanicked {
                creating,
                wrote_history,
            } => {
                tracing::error!("a worker panicked (a bug); its row is left pending");
                self.running -= 1;
                self.writing_history -= usize::from(wrote_history);
                self.summary.rows_pending += 1;
                if let Some(customer_key) = creating {
                    self.customer_settled(customer_key, Settlement::Unsettled)
                        .await;
                }
            }
        }
    }

    /// A customer settled: the rows waiting for it go on with its id, fail with its reason,
    /// or (unsettled) stay pending.
    async fn customer_settled(&mut self, customer_key: String, settlement: Settlement) {
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
                    let change = work.failed(field.clone(), reason.clone());
                    let (origin, original) = (&work.origin, &work.original);
                    self.fail(origin, original, field.clone(), reason.clone(), change)
                        .await;
                }
                self.failed_customers.insert(customer_key, (field, reason));
            }
            Settlement::Unsettled => {
                self.summary.rows_pending += waiting.len() as u64;
            }
        }
    }

    /// A bulk job ended: each of its rows is finished, goes on, or waits until it may be
    /// looked up.
    fn bulk_job_ended(&mut self, kind: BulkKind, rows: Vec<(PlannedRow, AfterJob)>) {
        self.job_ended(kind, rows.len());
        let mut gave_up = None;
        let carried = rows.len();
        for (work, next) in rows {
            match next {
                AfterJob::Finished(RowOutcome::Halted(Halt::Pending(reason))) => {
                    self.summary.rows_pending += 1;
                    gave_up = Some(reason);
                }
                AfterJob::Finished(outcome) => self.finish_row(work, outcome),
                AfterJob::Continue(step) => self.ready.push_back((work, step)),
                AfterJob::Update(bulk::UpdateNext::InJobs(update)) => {
                    self.updates.push_back((work, update));
                }
                AfterJob::Update(bulk::UpdateNext::Alone(update)) => {
                    self.updates_alone.push_back((work, update));
                }
                AfterJob::ContinueAfter(step, at) => {
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

    fn job_ended(&mut self, kind: BulkKind, rows: usize) {
        self.jobs_running -= 1;
        self.rows_in_jobs -= rows;
        if kind == BulkKind::Customers {
            self.customer_jobs_running -= 1;
        }
    }

    fn finish_row(&mut self, work: PlannedRow, outcome: RowOutcome) {
        self.count_missing_tags(&work, &outcome);
        match outcome {
            RowOutcome::Updated {
                customer,
                conversation,
            } => {
                self.given_up_in_a_row = 0;
                self.summary.rows_updated += 1;
                self.summary.customers_updated += u64::from(customer);
                self.summary.conversations_updated += u64::from(conversation);
                self.progress.row_finished(Settled::Done);
            }
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

    /// A row whose conversation was sent (made or updated) without the tags the org lacks
    /// counts for each of them, unless `--create-missing-tags` appended them.
    fn count_missing_tags(&self, work: &PlannedRow, outcome: &RowOutcome) {
        let sent = match outcome {
            RowOutcome::Done { conversation } => conversation.is_some(),
            RowOutcome::Updated { conversation, .. } => *conversation,
            RowOutcome::Halted(_) => false,
        };
        let tags = &self.tools.tags;
        if sent && !tags.creates_missing() && !work.tags.missing.is_empty() {
            tags.sent_without(&work.tags.missing);
        }
    }

    /// A row (or a bulk job) left pending after its retries; too many in a row stop the run.
    fn note_given_up(&mut self, what: &str) {
        if self.tools.control.is_stopping() {
            return;
        }
        tracing::warn!("{what}");
        self.given_up_in_a_row += 1;
        let limit = (self.concurrency_limit() * 2).max(10);
        if self.given_up_in_a_row >= limit {
            self.tools.control.halt(StopReason::ApiUnavailable(format!(
                "{limit} rows in a row gave up after their retries; last: {what}"
            )));
        }
    }

    /// Records a row as failed (`change`), in the checkpoint and the errors file.
    async fn fail(
        &mut self,
        origin: &RowOrigin,
        original: &Original,
        field: Option<String>,
        reason: String,
        change: RowChange,
    ) {
        self.summary.rows_failed += 1;
        self.errors.write(
            &origin.file,
            origin.line,
            field.as_deref(),
            &reason,
            &original.to_json(),
        );
        self.record(vec![Change::Row(change)]).await;
        self.progress.row_finished(Settled::Failed);
    }

    async fn record(&self, changes: Vec<Change>) {
        self.tools.journal.record(changes).await;
    }

    /// The most rows in flight now (it follows the latency seen unless fixed).
    fn concurrency_limit(&self) -> usize {
        self.settings
            .concurrency
            .limit(self.tools.client.stats().typical_latency())
    }
}

/// How a run's rows travel to Kustomer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sending {
    /// `--mode auto`, until enough rows wait (bulk) or the input ends first (single).
    Undecided,
    /// One request per record, by workers.
    OneByOne,
    /// In bulk jobs, with workers for what a job cannot settle.
    InJobs,
}

/// The planner's own knowledge of customers, for [`route_customer`].
impl CustomerFacts for Planner<'_> {
    fn failed(&self, customer_key: &str) -> Option<(Option<String>, String)> {
        self.failed_customers.get(customer_key).cloned()
    }

    fn being_created(&self, customer_key: &str) -> bool {
        self.waiting.contains_key(customer_key)
    }

    fn held_by_earlier_job(&self, customer_key: &str) -> bool {
        self.earlier.held_customers.contains(customer_key)
    }

    fn stored(&self, customer_key: &str) -> Result<Option<StoredCustomer>, CheckpointError> {
        self.checkpoint.customer(customer_key)
    }

    fn take_link(&mut self, row_key: &str) -> Option<String> {
        self.earlier.link_rows.remove(row_key)
    }
}

async fn sleep_until_option(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
