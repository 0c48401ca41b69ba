//! Bulk jobs of history: the messages and notes of many rows' threads, 100 to a job
//! (`POST /v1/messages/bulk`, `POST /v1/notes/bulk`), one unit of the budget each.
//!
//! Each row's worker still writes its own thread in order ([`crate::pipeline::thread`]);
//! in bulk mode it hands over a *run* (the next items of one kind, at most a page) and waits
//! for its outcome before it reads on, so a thread never has two runs in flight and its
//! items are made in its order. The [`Batcher`] gathers runs from every worker into jobs of
//! one kind: a run is never split, a job is cut when the next run would not fit, when every
//! worker writing history is waiting on it (nothing more can come), or when its oldest run
//! has waited [`LINGER`]. A job goes the way every bulk job goes ([`super::submit`]): the
//! items' intents and the job with its items (each naming its record) are committed once
//! the rate gate gives its turn, the job is polled, and its results are applied: an item
//! made is recorded done, one refused for good failed, with the job's completion, in one
//! write. What a job cannot settle goes back to the worker, which has single mode's tools
//! for it: an item without a result (or a duplicate) is looked up, a job refused whole has
//! its items sent alone, and a job left unfinished leaves the row pending while the next
//! run polls it ([`super::recover`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::submit::{JobEnd, submit_and_wait};
use super::{JOBS_IN_FLIGHT, Jobs, MAX_ITEMS};
use crate::api::{BulkKind, ItemOutcome};
use crate::checkpoint::{BulkItem, Change, RecordChange, RecordOrigin, StepState};
use crate::history::ItemKind;
use crate::pipeline::handles::Tools;
use crate::pipeline::row::Halt;

/// The longest a run waits for others to fill its job.
pub(in crate::pipeline) const LINGER: Duration = Duration::from_millis(500);

/// One item of a run: its body as the bulk endpoint takes it (with `conversation`), and its
/// intent, recorded with the job.
#[derive(Debug)]
pub(in crate::pipeline) struct RunItem {
    pub body: Map<String, Value>,
    pub intent: RecordChange,
}

/// What became of one item of a run.
#[derive(Clone, Debug)]
pub(in crate::pipeline) enum RunVerdict {
    /// Made, and recorded done with its id.
    Made(String, RecordOrigin),
    /// Refused for good, and recorded failed with these words.
    Refused(String),
    /// The job gave no result, or one that does not settle it (a duplicate, trouble on the
    /// way, words only): the record may exist. The intent stands; the worker looks it up.
    Unknown,
}

/// How a run's job ended, as far as the worker must act on it.
#[derive(Clone, Debug)]
pub(in crate::pipeline) enum RunEnd {
    /// The job ended: each item's verdict, in the run's order.
    Settled(Vec<RunVerdict>),
    /// Nothing was made (the job was refused whole, or the API has no bulk jobs): each item
    /// is sent alone, whose answer settles it.
    SendAlone,
    /// The job's outcome is unknown (its answer was lost): each item is looked up, not
    /// before this instant, and sent alone when not found.
    LookUpAfter(Option<tokio::time::Instant>),
    /// The row stops here: pending (the job never left, or is queued for the next run to
    /// poll), or stopping.
    Halted(Halt),
}

enum Message {
    Run {
        kind: ItemKind,
        items: Vec<RunItem>,
        reply: oneshot::Sender<RunEnd>,
    },
    WriterJoined,
    WriterLeft,
}

/// A worker's handle on the batcher (cloned for each worker writing history in bulk).
#[derive(Clone)]
pub(in crate::pipeline) struct HistoryJobs {
    sender: mpsc::UnboundedSender<Message>,
}

/// Held while a worker writes its thread in bulk: the batcher knows how many runs may still
/// come, and cuts a partial job at once when every writer is waiting on it.
pub(in crate::pipeline) struct Writing {
    sender: mpsc::UnboundedSender<Message>,
}

impl Drop for Writing {
    fn drop(&mut self) {
        let _ = self.sender.send(Message::WriterLeft);
    }
}

impl HistoryJobs {
    /// Starts the batcher; it ends once every handle is gone and its jobs have ended.
    pub(in crate::pipeline) fn start(
        tools: Arc<Tools>,
        jobs: Arc<Jobs>,
    ) -> (HistoryJobs, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let batcher = Batcher {
            tools,
            jobs,
            waiting: [VecDeque::new(), VecDeque::new()],
            writers: 0,
            running: JoinSet::new(),
        };
        let handle = tokio::spawn(batcher.run(receiver));
        (HistoryJobs { sender }, handle)
    }

    pub(in crate::pipeline) fn writing(&self) -> Writing {
        let _ = self.sender.send(Message::WriterJoined);
        Writing {
            sender: self.sender.clone(),
        }
    }

    /// Sends a run (at most [`MAX_ITEMS`] items of one kind) and waits for its end.
    pub(in crate::pipeline) async fn send(&self, kind: ItemKind, items: Vec<RunItem>) -> RunEnd {
        debug_assert!(!items.is_empty() && items.len() <= MAX_ITEMS);
        let (reply, answer) = oneshot::channel();
        let sent = self.sender.send(Message::Run { kind, items, reply });
        match (sent, answer.await) {
            (Ok(()), Ok(end)) => end,
            // The batcher is gone (the run is ending): nothing of the run was recorded
            // unless its job was, and that job the next run polls.
            _ => RunEnd::Halted(Halt::stopping()),
        }
    }
}

/// A run waiting for its job.
struct WaitingRun {
    items: Vec<RunItem>,
    reply: oneshot::Sender<RunEnd>,
    since: tokio::time::Instant,
}

struct Batcher {
    tools: Arc<Tools>,
    jobs: Arc<Jobs>,
    /// Runs not yet in a job, by kind (messages, notes), oldest first.
    waiting: [VecDeque<WaitingRun>; 2],
    /// Workers writing history in bulk now.
    writers: usize,
    running: JoinSet<()>,
}

fn slot(kind: ItemKind) -> usize {
    match kind {
        ItemKind::Message => 0,
        ItemKind::Note => 1,
    }
}

impl Batcher {
    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Message>) {
        let mut open = true;
        while open || !self.running.is_empty() {
            // With every slot taken no job can start, so the linger would only wake the loop
            // for nothing (over and over, once the oldest run has waited it out).
            let deadline = self
                .oldest()
                .filter(|_| self.running.len() < JOBS_IN_FLIGHT)
                .map(|since| since + LINGER);
            tokio::select! {
                message = receiver.recv(), if open => match message {
                    Some(Message::Run { kind, items, reply }) => {
                        let since = tokio::time::Instant::now();
                        self.waiting[slot(kind)].push_back(WaitingRun { items, reply, since });
                    }
                    Some(Message::WriterJoined) => self.writers += 1,
                    Some(Message::WriterLeft) => self.writers = self.writers.saturating_sub(1),
                    None => open = false,
                },
                Some(_) = self.running.join_next(), if !self.running.is_empty() => {}
                () = sleep_until(deadline) => {}
                () = self.tools.control.hard().cancelled() => return,
            }
            self.start_due_jobs();
        }
    }

    fn oldest(&self) -> Option<tokio::time::Instant> {
        self.waiting
            .iter()
            .filter_map(|runs| runs.front().map(|run| run.since))
            .min()
    }

    /// Cuts and starts every job that is due, while there are slots.
    fn start_due_jobs(&mut self) {
        let parked: usize = self.waiting.iter().map(VecDeque::len).sum();
        // Every writer is waiting on a job: no run can come to fill one.
        let nothing_more = parked >= self.writers;
        for kind in [ItemKind::Message, ItemKind::Note] {
            while self.running.len() < JOBS_IN_FLIGHT {
                let runs = &mut self.waiting[slot(kind)];
                let items: usize = runs.iter().map(|run| run.items.len()).sum();
                let lingered = runs
                    .front()
                    .is_some_and(|run| run.since.elapsed() >= LINGER);
                if runs.is_empty() || !(items >= MAX_ITEMS || nothing_more || lingered) {
                    break;
                }
                let job = cut_job(runs);
                let tools = Arc::clone(&self.tools);
                let jobs = Arc::clone(&self.jobs);
                self.running
                    .spawn(async move { run_history_job(&tools, &jobs, kind, job).await });
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The oldest runs that fit in one job, whole.
fn cut_job(runs: &mut VecDeque<WaitingRun>) -> Vec<WaitingRun> {
    let mut job = Vec::new();
    let mut items = 0;
    while let Some(run) = runs.front() {
        if !job.is_empty() && items + run.items.len() > MAX_ITEMS {
            break;
        }
        items += run.items.len();
        job.extend(runs.pop_front());
    }
    job
}

/// Sends one job of runs and tells each run how it ended. A job of several runs refused
/// whole is sent again in halves, until the run with the bad item is alone; its items are
/// then sent one by one, whose answers say which is bad.
async fn run_history_job(tools: &Tools, jobs: &Jobs, kind: ItemKind, mut runs: Vec<WaitingRun>) {
    let bulk_kind = match kind {
        ItemKind::Message => BulkKind::Messages,
        ItemKind::Note => BulkKind::Notes,
    };
    let job = jobs.next_number();
    let mut bodies = Vec::new();
    let mut items = Vec::new();
    let mut intents = Vec::new();
    for item in runs.iter().flat_map(|run| &run.items) {
        let client_ref = items.len().to_string();
        let mut body = item.body.clone();
        body.insert("_clientRef".into(), Value::String(client_ref.clone()));
        bodies.push(Value::Object(body));
        items.push(BulkItem {
            client_ref,
            row_key: item.intent.row_key.clone(),
            customer_key: None,
            record: Some(item.intent.external_id.clone()),
        });
        intents.push(Change::Record(item.intent.clone()));
    }
    let end = submit_and_wait(tools, jobs, job, bulk_kind, bodies, items, intents).await;
    let ends = match end {
        JobEnd::Refused(error) if runs.len() > 1 => {
            tracing::info!(
                "a {} bulk job of {} runs was refused whole ({error}); sending it in halves",
                bulk_kind.as_str(),
                runs.len()
            );
            let second = runs.split_off(runs.len() / 2);
            Box::pin(run_history_job(tools, jobs, kind, runs)).await;
            Box::pin(run_history_job(tools, jobs, kind, second)).await;
            return;
        }
        JobEnd::Complete(mut outcomes) => {
            let mut changes = Vec::new();
            let mut index = 0usize;
            let mut settled = Vec::with_capacity(runs.len());
            for run in &runs {
                let verdicts = run
                    .items
                    .iter()
                    .map(|item| {
                        let outcome = outcomes.remove(&index.to_string());
                        index += 1;
                        let verdict = read_run_item(outcome);
                        changes.extend(settled_change(&item.intent, &verdict));
                        verdict
                    })
                    .collect();
                settled.push(RunEnd::Settled(verdicts));
            }
            changes.push(super::results::job_complete(job));
            // Outcomes: losing them only means the next run polls the job again.
            tools.journal.record(changes).await;
            settled
        }
        end => {
            let end = unsettled(end);
            runs.iter().map(|_| end.clone()).collect()
        }
    };
    for (run, end) in runs.into_iter().zip(ends) {
        let _ = run.reply.send(end);
    }
}

/// What one item's result in a history job says of its record.
pub(super) fn read_run_item(outcome: Option<ItemOutcome>) -> RunVerdict {
    match outcome {
        Some(ItemOutcome::Created(id)) => RunVerdict::Made(id, RecordOrigin::Created),
        // There already (an earlier attempt's, by its externalId): reconciled.
        Some(ItemOutcome::Updated(id)) => RunVerdict::Made(id, RecordOrigin::Reconciled),
        Some(ItemOutcome::Failed(error)) if error.maybe_applied() => RunVerdict::Unknown,
        Some(ItemOutcome::Failed(crate::api::ApiError::Duplicate { .. })) => RunVerdict::Unknown,
        Some(ItemOutcome::Failed(error)) => RunVerdict::Refused(format!("refused: {error}")),
        // Words only ("duplicate detected"): whether it exists is not said; a lookup, then
        // the single endpoint, settles it.
        Some(ItemOutcome::Unexplained(_)) | None => RunVerdict::Unknown,
    }
}

/// The record change a verdict makes (None: the intent stands).
pub(super) fn settled_change(intent: &RecordChange, verdict: &RunVerdict) -> Option<Change> {
    let mut change = RecordChange {
        attempts: 0,
        ..intent.clone()
    };
    match verdict {
        RunVerdict::Made(id, origin) => {
            change.state = StepState::Done;
            change.kustomer_id = Some(id.clone());
            change.origin = Some(*origin);
        }
        RunVerdict::Refused(reason) => {
            change.state = StepState::Failed;
            change.error = Some(reason.clone());
        }
        RunVerdict::Unknown => return None,
    }
    Some(Change::Record(change))
}

/// What a job that did not complete means for each of its runs.
fn unsettled(end: JobEnd) -> RunEnd {
    match end {
        JobEnd::Complete(_) => unreachable!("a complete job settles its runs item by item"),
        // Refused whole (a 4xx), or no bulk jobs here (`--mode auto`): nothing was made.
        JobEnd::Refused(_) | JobEnd::Unsupported => RunEnd::SendAlone,
        JobEnd::Unknown(at) => RunEnd::LookUpAfter(at),
        // Never sent; sent and provably not taken; or queued, for the next run to poll.
        JobEnd::NotSent(halt) | JobEnd::NotTaken(halt) | JobEnd::Unfinished(halt) => {
            RunEnd::Halted(halt)
        }
    }
}
