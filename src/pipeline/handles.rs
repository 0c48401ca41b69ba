//! The narrow handles the parts of a run work with, instead of one bag of everything: how
//! a run is stopped ([`RunControl`]), the checkpoint as the run writes it ([`Journal`]), the
//! retry policy ([`RetryPolicy`]), the rules every row follows ([`RowRules`]), and the
//! [`Tools`] a worker or a bulk job is given: the client (with its rate gate), the journal,
//! the control and the way back to the planner. The planner keeps the settings and the
//! queues; nothing here can touch them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::agents::Agents;
use super::company::CompanyBook;
use super::planner::Event;
use super::row::Halt;
use super::tags::TagBook;
use super::thread::ThreadOutcome;
use super::update::CustomerUpdates;
use super::{ImportSettings, OnExistingCustomer, StopReason, StopSignals};
use crate::api::{Backoff, KustomerClient};
use crate::checkpoint::{Change, CheckpointWriter};
use crate::history::store::Pages;

/// What stops a run: its two signals, and the first reason a part of the run gave to stop
/// it (a refused key, a wrong base URL, a checkpoint that cannot be written).
pub(super) struct RunControl {
    signals: StopSignals,
    reason: Mutex<Option<StopReason>>,
}

impl RunControl {
    pub(super) fn new(signals: StopSignals) -> RunControl {
        RunControl {
            signals,
            reason: Mutex::new(None),
        }
    }

    /// Stops the run softly for `reason`: the first reason given is the one it ends with.
    pub(super) fn halt(&self, reason: StopReason) {
        let mut first = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(reason);
        }
        self.signals.soft.cancel();
    }

    /// Take no more work; let requests in flight finish within the grace period.
    pub(super) fn soft(&self) -> &CancellationToken {
        &self.signals.soft
    }

    /// Stop now.
    pub(super) fn hard(&self) -> &CancellationToken {
        &self.signals.hard
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.signals.soft.is_cancelled()
    }

    /// The reason the run was halted for, if one was given.
    pub(super) fn take_reason(&self) -> Option<StopReason> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The checkpoint as the run writes it: a write that fails halts the run (for what
/// `commit` and `record` promise, see `checkpoint::writer`).
#[derive(Clone)]
pub(super) struct Journal {
    writer: CheckpointWriter,
    control: Arc<RunControl>,
}

impl Journal {
    pub(super) fn new(writer: CheckpointWriter, control: Arc<RunControl>) -> Journal {
        Journal { writer, control }
    }

    /// Writes `changes` (intents) and waits until they are durable; when they cannot be,
    /// the run halts and the row or job in hand is left pending, its request unsent.
    pub(super) async fn commit(&self, changes: Vec<Change>) -> Result<(), Halt> {
        self.writer.commit(changes).await.map_err(|error| {
            self.control.halt(StopReason::of_checkpoint(&error));
            Halt::Pending(format!("the checkpoint could not be written: {error}"))
        })
    }

    /// Queues `changes` (outcomes: losing one only means the next run looks the record up).
    pub(super) async fn record(&self, changes: Vec<Change>) {
        if let Err(error) = self.writer.record(changes).await {
            self.control.halt(StopReason::of_checkpoint(&error));
        }
    }
}

/// How a failed call is tried again (see `failure`).
#[derive(Clone, Copy, Debug)]
pub(super) struct RetryPolicy {
    /// Transient failures one row or job may meet before it is left pending.
    pub max_retries: u32,
    pub backoff: Backoff,
    /// The least wait between a lost answer and the lookup that reconciles it.
    pub reconcile_delay: Duration,
}

/// What the user's flags ask of every row.
#[derive(Clone, Copy, Debug)]
pub(super) struct RowRules {
    pub on_existing_customer: OnExistingCustomer,
    /// Send `importedAt` with each conversation that has none.
    pub stamp_imported_at: bool,
    /// Send the history's `createdAt`/`createdBy` (the key holds `org.admin`).
    pub org_admin: bool,
}

/// What a worker or a bulk job works with.
pub(super) struct Tools {
    pub client: Arc<KustomerClient>,
    pub journal: Journal,
    pub control: Arc<RunControl>,
    pub retry: RetryPolicy,
    pub rules: RowRules,
    /// `--on-change` and `--update-fields`: how done items edited in the source are synced
    /// (see `thread_sync`).
    pub sync: super::resume::SyncRules,
    /// Back to the planner: a customer settled, a row or a job ended.
    pub events: mpsc::UnboundedSender<Event>,
    /// The run's staged threads, read back a page at a time (None: no input has history).
    pub threads: Option<Arc<Mutex<Pages>>>,
    /// What the rows' histories came to, for the summary.
    pub history: HistoryCounts,
    /// The source agents met, mapped to users.
    pub agents: Agents,
    /// The run's companies, each resolved once (see `company`).
    pub companies: CompanyBook,
    /// The customer updates this run confirmed, each sent once (see `update`).
    pub customer_updates: CustomerUpdates,
    /// The org's tags, by name (see `tags`).
    pub tags: TagBook,
}

/// Counts of the history steps this run settled, added by every worker.
#[derive(Debug, Default)]
pub(super) struct HistoryCounts {
    pub messages_created: AtomicU64,
    pub notes_created: AtomicU64,
    pub reconciled: AtomicU64,
    pub failed: AtomicU64,
    /// Done earlier, edited in the source since, and updated now.
    pub messages_updated: AtomicU64,
    pub notes_updated: AtomicU64,
}

impl HistoryCounts {
    pub(super) fn add(&self, thread: &ThreadOutcome) {
        for (count, value) in [
            (&self.messages_created, thread.messages_created),
            (&self.notes_created, thread.notes_created),
            (&self.reconciled, thread.reconciled),
            (&self.failed, thread.failed),
            (&self.messages_updated, thread.messages_updated),
            (&self.notes_updated, thread.notes_updated),
        ] {
            count.fetch_add(value, Ordering::Relaxed);
        }
    }
}

impl Tools {
    pub(super) fn new(
        settings: &ImportSettings,
        client: Arc<KustomerClient>,
        journal: Journal,
        control: Arc<RunControl>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Tools {
        Tools {
            client,
            journal,
            control,
            retry: RetryPolicy {
                max_retries: settings.max_retries,
                backoff: settings.backoff,
                reconcile_delay: settings.reconcile_delay,
            },
            rules: RowRules {
                on_existing_customer: settings.on_existing_customer,
                stamp_imported_at: settings.stamp_imported_at,
                org_admin: settings.org_admin,
            },
            sync: settings.sync.clone(),
            events,
            threads: None,
            history: HistoryCounts::default(),
            agents: Agents::new(
                Default::default(),
                settings.default_author.clone(),
                settings.read.mapping.users_table(),
            ),
            companies: CompanyBook::default(),
            customer_updates: CustomerUpdates::default(),
            tags: TagBook::new(Vec::new(), settings.create_missing_tags),
        }
    }
}
