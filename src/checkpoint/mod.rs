//! The checkpoint: a SQLite file that records every row's state and Kustomer ids, every
//! customer the import made or linked, and every run. It is what makes a run resumable and
//! a re-run free: the pipeline asks it what is already done and tells it, through the one
//! [`writer`], what happens.
//!
//! Opening a checkpoint takes the run lock (one run per checkpoint at a time), makes the
//! file readable by its owner only (it holds customers' emails and phones), refuses a file
//! that is not a checkpoint or is damaged ([`integrity`]), and applies the migrations in
//! `migrations/`.

pub mod inspect;
pub mod integrity;
pub mod lock;
pub mod private;
pub mod resolve;
pub mod target;
pub mod undo;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};

pub use self::inspect::{
    CheckpointReader, ExportAgent, ExportCompany, ExportRow, ExportTag, Status, VerifyRow,
};
pub use self::lock::lock_path;
pub use self::lock::{LockHolder, RunLock};
pub use self::target::{ApiTarget, OtherTarget, TargetClaim};
pub use self::writer::{
    BulkItem, Change, CheckpointWriter, KnownTag, RecordChange, RowChange, WriterHandle,
};
/// The name [`RecordOrigin`] had when only customers were counted by it, kept for the
/// pipeline's code.
pub use crate::vocabulary::RecordOrigin as CustomerOrigin;
pub use crate::vocabulary::{BulkKind, RecordKind, RecordOrigin, StepState};

use crate::vocabulary::stored_words;

/// Why the checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("another run holds the checkpoint {path}: {holder}")]
    Locked { path: PathBuf, holder: LockHolder },
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("checkpoint {path}: cannot apply the schema: {reason}")]
    Migrate { path: PathBuf, reason: String },
    #[error("checkpoint write failed: {0}")]
    Write(String),
    #[error(transparent)]
    OtherTarget(Box<OtherTarget>),
    /// The file at the checkpoint's path is not a checkpoint; `reason` says what to do.
    #[error("{path} is not a kustomer-import checkpoint: {reason}")]
    NotACheckpoint { path: PathBuf, reason: String },
    /// The checkpoint is damaged: what it says can no longer be trusted, and a run that went
    /// on would send again what it recorded as done.
    #[error(
        "checkpoint {path} is damaged ({reason}). Restore it from your backup, then run the \
         import again; `kustomer-import export --checkpoint {path} --state all -o \
         readable.csv` writes out the rows that can still be read. Do not start over with a \
         new checkpoint: the rows it recorded as done would be created again"
    )]
    Damaged { path: PathBuf, reason: String },
}

impl CheckpointError {
    /// An SQLite error met on the checkpoint at `path`: damage when it means damage.
    pub fn of_sqlite(path: &Path, source: rusqlite::Error) -> CheckpointError {
        if integrity::is_damage(&source) {
            CheckpointError::Damaged {
                path: path.to_path_buf(),
                reason: integrity::damage_reason(&source),
            }
        } else {
            CheckpointError::Sqlite {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// Whether the checkpoint is damaged: no run of the same command gets past that.
    pub fn is_damage(&self) -> bool {
        matches!(self, CheckpointError::Damaged { .. })
    }
}

stored_words! {
    /// A row's state in the checkpoint (`rows.state`).
    pub enum RowState {
        Pending = "pending",
        CustomerSent = "customer_sent",
        /// The customer is known and no conversation intent came with it: a row whose
        /// conversation waits (a stop, the next bulk job) or that has none. A single
        /// create's id usually commits with the conversation intent, going straight to
        /// ConversationSent.
        CustomerOk = "customer_ok",
        ConversationSent = "conversation_sent",
        /// The conversation is made and its history (messages, notes: `records`) is still
        /// being written; the row is done once the whole thread is.
        ConversationOk = "conversation_ok",
        Done = "done",
        Failed = "failed",
    }
}

/// What the checkpoint holds of one message or note of a row's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub kind: RecordKind,
    pub external_id: String,
    /// Sent (its answer is not recorded), done or failed.
    pub state: StepState,
    pub kustomer_id: Option<String>,
    /// Its place in the row's chain, and where it was read.
    pub position: u64,
    pub source_file: String,
    pub line: u64,
    /// What its body was when last sent (see `crate::fingerprint`); None for a record made
    /// before migration 016.
    pub fingerprint: Option<String>,
}

/// What the checkpoint holds of one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRow {
    pub state: RowState,
    pub customer_id: Option<String>,
    pub conversation_id: Option<String>,
    /// The conversation externalId recorded with the row's intent, if any.
    pub conversation_external_id: Option<String>,
    pub field: Option<String>,
    pub last_error: Option<String>,
    /// A failed row whose create may have landed all the same: never retried blindly.
    pub outcome_unknown: bool,
    /// What its conversation was last sent as (`crate::fingerprint`); None when no run of
    /// this version recorded it.
    pub fingerprint: Option<String>,
    /// What its customer was last sent as, as this row saw it (rows of one customer may
    /// disagree); read by [`Checkpoint::rows_to_plan`] only.
    pub customer_fingerprint: Option<String>,
    /// The thread a run last read whole for it and left nothing to send for (migration
    /// 019, see `pipeline::thread_sync::thread_seen`); read by [`Checkpoint::rows_to_plan`]
    /// only.
    pub thread_seen: Option<i64>,
}

/// The columns [`stored_row`] reads, in its order.
const STORED_ROW_COLUMNS: &str = "row_key, state, customer_id, conversation_id, field, \
     last_error, conversation_external_id, outcome_unknown, fingerprint";

impl StoredRow {
    /// A row in `state` and nothing more known of it.
    pub fn in_state(state: RowState) -> StoredRow {
        StoredRow {
            state,
            customer_id: None,
            conversation_id: None,
            conversation_external_id: None,
            field: None,
            last_error: None,
            outcome_unknown: false,
            fingerprint: None,
            customer_fingerprint: None,
            thread_seen: None,
        }
    }

    /// A done row as the planner sees it: done, nothing more to know.
    fn done() -> StoredRow {
        StoredRow::in_state(RowState::Done)
    }
}

/// The state of a row read with [`STORED_ROW_COLUMNS`]. A state no version writes is damage,
/// never a default: read as pending, a done row would be sent again.
fn read_state(row: &rusqlite::Row) -> rusqlite::Result<RowState> {
    read_row_state(row, 1, 0)
}

/// The row state in column `state` of `row`, whose key is in column `key`.
fn read_row_state(row: &rusqlite::Row, state: usize, key: usize) -> rusqlite::Result<RowState> {
    in_rows(row, "state", key).word(row, state, RowState::parse)
}

/// A value of `column` in the `rows` table, in the line of `row` whose key is in column
/// `key`: what a read says of it when it cannot be read back.
fn in_rows<'a>(
    row: &'a rusqlite::Row,
    column: &'a str,
    key: usize,
) -> integrity::Stored<'a, impl FnOnce() -> String + 'a> {
    integrity::Stored {
        table: "rows",
        column,
        whose: move || {
            let key = row.get_ref(key).map_or("?".into(), integrity::shown);
            format!("the row {key}")
        },
    }
}

/// A row read with [`STORED_ROW_COLUMNS`], whose state is `state`.
fn stored_row(row: &rusqlite::Row, state: RowState) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        state,
        customer_id: row.get(2)?,
        conversation_id: row.get(3)?,
        field: row.get(4)?,
        last_error: row.get(5)?,
        conversation_external_id: row.get(6)?,
        outcome_unknown: in_rows(row, "outcome_unknown", 0).flag(row, 7)?,
        fingerprint: row.get(8)?,
        customer_fingerprint: None,
        thread_seen: None,
    })
}

stored_words! {
    /// Where a bulk job stands (`bulk_jobs.state`, see migration 004).
    pub enum BulkJobState {
        Submitting = "submitting",
        Queued = "queued",
        Complete = "complete",
        Refused = "refused",
        Lost = "lost",
    }
}

/// A bulk job an earlier run left unfinished (submitting or queued), with its items.
#[derive(Clone, Debug)]
pub struct StoredBulkJob {
    pub id: i64,
    pub kind: BulkKind,
    /// Kustomer's id; None while the submit's answer is unknown.
    pub job_id: Option<String>,
    /// Submitting, queued, or lost not long ago.
    pub state: BulkJobState,
    /// When the job was last heard of: recorded just before its request left, or when its
    /// answer was lost.
    pub since: SystemTime,
    pub items: Vec<StoredBulkItem>,
    /// For a companies job (whose items carry no row: migration 020), the keys of the
    /// companies it makes.
    pub companies: Vec<String>,
}

/// One item of a [`StoredBulkJob`], with what a row change needs of its row.
#[derive(Clone, Debug)]
pub struct StoredBulkItem {
    pub client_ref: String,
    pub row_key: String,
    pub customer_key: Option<String>,
    pub source_file: String,
    pub line: u64,
    /// The row's state now: a job's result applies only to a row still in its intent.
    pub state: RowState,
    pub customer_id: Option<String>,
    /// In a job of messages or notes: the record the item creates, as the checkpoint holds
    /// it now (None when the record line is gone).
    pub record: Option<StoredRecord>,
}

/// A bulk job read as [`Checkpoint::unfinished_bulk_jobs`] selects it, without its items.
/// Values no version writes are damage, never a default: read as another kind, a job's
/// results would be applied to the wrong records.
fn stored_bulk_job(row: &rusqlite::Row) -> rusqlite::Result<StoredBulkJob> {
    let id: i64 = row.get(0)?;
    let in_jobs = |column| integrity::Stored {
        table: "bulk_jobs",
        column,
        whose: move || format!("the bulk job {id}"),
    };
    Ok(StoredBulkJob {
        id,
        kind: in_jobs("kind").word(row, 1, BulkKind::parse)?,
        job_id: row.get(2)?,
        since: in_jobs("updated_at").time(row, 3)?,
        state: in_jobs("state").word(row, 4, BulkJobState::parse)?,
        items: Vec::new(),
        companies: Vec::new(),
    })
}

/// The columns of `records` a [`StoredRecord`] is read from, in [`stored_record`]'s order.
const RECORD_COLUMNS: &str =
    "kind, external_id, state, kustomer_id, position, source_file, line, fingerprint";

fn stored_record(row: &rusqlite::Row, row_key: &str) -> rusqlite::Result<StoredRecord> {
    let whose = |column| integrity::Stored {
        table: "records",
        column,
        whose: move || format!("a record of the row {row_key}"),
    };
    Ok(StoredRecord {
        kind: whose("kind").word(row, 0, RecordKind::parse)?,
        external_id: row.get(1)?,
        state: whose("state").word(row, 2, StepState::parse)?,
        kustomer_id: row.get(3)?,
        position: whose("position").count(row, 4)?,
        source_file: row.get(5)?,
        line: whose("line").count(row, 6)?,
        fingerprint: row.get(7)?,
    })
}

/// What the checkpoint holds of one customer key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCustomer {
    /// None while only the intent (`sent`) is recorded.
    pub customer_id: Option<String>,
}

/// What the checkpoint holds of one company (migration 015).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCompany {
    pub company_key: String,
    /// None while only the intent (`sent`) is recorded: its answer was lost.
    pub company_id: Option<String>,
    /// How it came to have its id (None while only the intent is recorded).
    pub origin: Option<RecordOrigin>,
}

/// Counts a run ends with, kept in the `runs` table.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunCounts {
    pub rows_read: u64,
    pub rows_done: u64,
    pub rows_failed: u64,
    pub rows_pending: u64,
    pub requests: u64,
    /// Done rows read again whose records were updated, and those found unchanged.
    pub rows_updated: u64,
    pub rows_unchanged: u64,
    /// Messages and notes done earlier, edited in the source, and updated by the run.
    pub messages_updated: u64,
    pub notes_updated: u64,
}

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/001-initial/up.sql"),
    include_str!("../../migrations/002-rows-by-file/up.sql"),
    include_str!("../../migrations/003-outcome-unknown/up.sql"),
    include_str!("../../migrations/004-bulk-jobs/up.sql"),
    include_str!("../../migrations/005-checks-without-in/up.sql"),
    include_str!("../../migrations/006-failed-rows-index/up.sql"),
    include_str!("../../migrations/007-checkpoint-target/up.sql"),
    include_str!("../../migrations/008-records/up.sql"),
    include_str!("../../migrations/009-history-jobs/up.sql"),
    include_str!("../../migrations/010-fingerprints/up.sql"),
    include_str!("../../migrations/011-sync-counts/up.sql"),
    include_str!("../../migrations/012-bulk-updates/up.sql"),
    include_str!("../../migrations/013-undo/up.sql"),
    include_str!("../../migrations/014-agents/up.sql"),
    include_str!("../../migrations/015-companies/up.sql"),
    include_str!("../../migrations/016-history-fingerprints/up.sql"),
    include_str!("../../migrations/017-tags/up.sql"),
    include_str!("../../migrations/018-undo-bulk-deletes/up.sql"),
    include_str!("../../migrations/019-history-sync-seen/up.sql"),
    include_str!("../../migrations/020-company-jobs/up.sql"),
];

/// An open checkpoint, locked for this run. Reads go through this connection; writes go
/// through the [`CheckpointWriter`] from [`Checkpoint::start_writer`].
pub struct Checkpoint {
    path: PathBuf,
    connection: Connection,
    _lock: RunLock,
}

impl Checkpoint {
    /// Locks the checkpoint at `path`, makes it (see [`create_new`]) or opens it, refuses it
    /// when it is not a checkpoint or is damaged, narrows it to its owner, and migrates it.
    pub fn open(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let lock = RunLock::acquire(path)?;
        let existed = path.try_exists().map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if !existed {
            create_new(path)?;
        }
        // Before SQLite opens the file: opening does not remove the -wal, closing does.
        let hot_wal = integrity::has_hot_wal(path);
        let sqlite = |source| CheckpointError::of_sqlite(path, source);
        let mut connection = open_existing(path).map_err(sqlite)?;
        let identity = integrity::identify(path, &connection)?;
        narrow_to_owner(path)?;
        check_if_in_doubt(path, &connection, identity, hot_wal)?;
        configure(&connection).map_err(sqlite)?;
        migrate(path, &mut connection)?;
        if identity == integrity::Identity::Unmarked {
            connection
                .pragma_update(None, "application_id", integrity::APPLICATION_ID)
                .map_err(sqlite)?;
            tracing::info!(
                "adopted {}, a checkpoint of an earlier version: it was checked whole and is \
                 now marked as a kustomer-import checkpoint",
                path.display()
            );
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            connection,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self, source: rusqlite::Error) -> CheckpointError {
        CheckpointError::of_sqlite(&self.path, source)
    }

    /// Starts the single writer thread, on a connection of its own.
    pub fn start_writer(&self) -> Result<(CheckpointWriter, WriterHandle), CheckpointError> {
        let connection = open_existing(&self.path)
            .and_then(|connection| configure(&connection).map(|()| connection))
            .map_err(|e| self.sqlite(e))?;
        Ok(writer::start(connection, self.path.clone()))
    }

    /// What the checkpoint holds of one row, if it has seen it, ids and all.
    pub fn row(&self, row_key: &str) -> Result<Option<StoredRow>, CheckpointError> {
        let mut statement = self
            .connection
            .prepare_cached(&format!(
                "SELECT {STORED_ROW_COLUMNS} FROM rows WHERE row_key = ?1"
            ))
            .map_err(|e| self.sqlite(e))?;
        statement
            .query_row([row_key], |row| stored_row(row, read_state(row)?))
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// What the planner needs of a batch of distinct rows, in the order of `row_keys`; None for a
    /// row the checkpoint has not seen. A resume skips a million done rows through here, so
    /// a done row comes back as its state alone: reading its ids too, and keying the answer
    /// by fresh copies of the keys, was a sixth of the lookup's instructions (callgrind, a
    /// resume of 100k done rows).
    pub fn rows_to_plan(
        &self,
        row_keys: &[&str],
    ) -> Result<Vec<Option<StoredRow>>, CheckpointError> {
        let mut found = vec![None; row_keys.len()];
        if row_keys.is_empty() {
            return Ok(found);
        }
        // The positions of the keys in key order, to place each answer by binary search.
        let mut by_key: Vec<usize> = (0..row_keys.len()).collect();
        by_key.sort_unstable_by_key(|&index| row_keys[index]);
        let placeholders = vec!["?"; row_keys.len()].join(",");
        // With what each row's records were last sent as: a done row read again is compared
        // with what it maps to now.
        let mut statement = self
            .connection
            .prepare_cached(&format!(
                "SELECT {STORED_ROW_COLUMNS}, customer_fingerprint, thread_seen FROM rows
                 WHERE row_key IN ({placeholders})"
            ))
            .map_err(|e| self.sqlite(e))?;
        let mut rows = statement
            .query(rusqlite::params_from_iter(row_keys))
            .map_err(|e| self.sqlite(e))?;
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let read = || -> rusqlite::Result<Option<(usize, StoredRow)>> {
                let key = row.get_ref(0)?.as_str()?;
                let at = by_key.partition_point(|&index| row_keys[index] < key);
                let Some(&index) = by_key.get(at).filter(|&&index| row_keys[index] == key) else {
                    return Ok(None);
                };
                let state = read_state(row)?;
                let mut stored = if state == RowState::Done {
                    StoredRow {
                        fingerprint: row.get(8)?,
                        ..StoredRow::done()
                    }
                } else {
                    stored_row(row, state)?
                };
                stored.customer_fingerprint = row.get(9)?;
                stored.thread_seen = row.get(10)?;
                Ok(Some((index, stored)))
            };
            if let Some((index, stored)) = read().map_err(|e| self.sqlite(e))? {
                found[index] = Some(stored);
            }
        }
        Ok(found)
    }

    /// The messages and notes of one row's history the checkpoint holds (those it does not
    /// hold are pending), in chain order.
    pub fn records_of(&self, row_key: &str) -> Result<Vec<StoredRecord>, CheckpointError> {
        let mut statement = self
            .connection
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE row_key = ?1 ORDER BY position"
            ))
            .map_err(|e| self.sqlite(e))?;
        statement
            .query_map([row_key], |row| stored_record(row, row_key))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sqlite(e))
    }

    /// One message or note of a row's history, if the checkpoint holds it.
    pub fn record(
        &self,
        row_key: &str,
        kind: RecordKind,
        external_id: &str,
    ) -> Result<Option<StoredRecord>, CheckpointError> {
        let mut statement = self
            .connection
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE row_key = ?1 AND kind = ?2 AND external_id = ?3"
            ))
            .map_err(|e| self.sqlite(e))?;
        statement
            .query_row(params![row_key, kind.as_str(), external_id], |row| {
                stored_record(row, row_key)
            })
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// Every agent an earlier run resolved: its user id, None when the org has no user by
    /// its email.
    pub fn agents(&self) -> Result<HashMap<String, Option<String>>, CheckpointError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT agent, user_id FROM agents")
            .map_err(|e| self.sqlite(e))?;
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sqlite(e))
    }

    /// Every tag of the org an earlier run listed or learnt: (name, id), the name as the org
    /// spells it.
    pub fn tags(&self) -> Result<Vec<(String, String)>, CheckpointError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT name, tag_id FROM tags")
            .map_err(|e| self.sqlite(e))?;
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sqlite(e))
    }

    /// The customer recorded under a customer key, if any.
    pub fn customer(&self, customer_key: &str) -> Result<Option<StoredCustomer>, CheckpointError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT customer_id FROM customers WHERE customer_key = ?1")
            .map_err(|e| self.sqlite(e))?;
        statement
            .query_row([customer_key], |row| {
                Ok(StoredCustomer {
                    customer_id: row.get(0)?,
                })
            })
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// Every company the checkpoint holds (a run reads them once: an import has few).
    pub fn companies(&self) -> Result<Vec<StoredCompany>, CheckpointError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT company_key, state, company_id FROM companies")
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map([], |row| {
                let state: String = row.get(1)?;
                Ok((row.get::<_, String>(0)?, state, row.get(2)?))
            })
            .map_err(|e| self.sqlite(e))?;
        let mut companies = Vec::new();
        for row in rows {
            let (company_key, state, company_id) = row.map_err(|e| self.sqlite(e))?;
            let origin =
                match state.as_str() {
                    "sent" => None,
                    other => Some(RecordOrigin::parse(other).ok_or_else(|| {
                        CheckpointError::Damaged {
                            path: self.path.clone(),
                            reason: format!(
                                "companies.state holds {other:?}, which no version writes"
                            ),
                        }
                    })?),
                };
            companies.push(StoredCompany {
                company_key,
                company_id,
                origin,
            });
        }
        Ok(companies)
    }

    /// The id of the company the customer `customer_key` belongs to, if it has one whose
    /// id is known: every update of the customer carries it.
    pub fn customer_company(&self, customer_key: &str) -> Result<Option<String>, CheckpointError> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT companies.company_id FROM customers
                 JOIN companies ON companies.company_key = customers.company_key
                 WHERE customers.customer_key = ?1 AND companies.company_id IS NOT NULL",
            )
            .map_err(|e| self.sqlite(e))?;
        statement
            .query_row([customer_key], |row| row.get(0))
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// The bulk jobs earlier runs left submitting or queued, and those lost since
    /// `lost_since` (a job whose answer was lost may still run), oldest first, with their
    /// items.
    pub fn unfinished_bulk_jobs(
        &self,
        lost_since: SystemTime,
    ) -> Result<Vec<StoredBulkJob>, CheckpointError> {
        // RFC 3339 in UTC to the second sorts as text in time order. Every job but those
        // known to be over: one in a state no version writes is read, and is damage.
        let cutoff = humantime::format_rfc3339_seconds(lost_since).to_string();
        let mut jobs = Vec::new();
        {
            let mut statement = self
                .connection
                .prepare(
                    "SELECT id, kind, job_id, updated_at, state FROM bulk_jobs
                     WHERE NOT (state = 'complete' OR state = 'refused'
                                OR (state = 'lost' AND updated_at < ?1))
                     ORDER BY id",
                )
                .map_err(|e| self.sqlite(e))?;
            let mut rows = statement.query([&cutoff]).map_err(|e| self.sqlite(e))?;
            while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
                jobs.push(stored_bulk_job(row).map_err(|e| self.sqlite(e))?);
            }
        }
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT i.client_ref, i.row_key, i.customer_key, r.source_file, r.line,
                        r.customer_id, r.state, i.record
                 FROM bulk_items i JOIN rows r ON r.row_key = i.row_key
                 WHERE i.job = ?1",
            )
            .map_err(|e| self.sqlite(e))?;
        let mut companies = self
            .connection
            .prepare_cached("SELECT row_key FROM bulk_items WHERE job = ?1")
            .map_err(|e| self.sqlite(e))?;
        for job in &mut jobs {
            if job.kind == BulkKind::Companies {
                job.companies = companies
                    .query_map([job.id], |row| row.get(0))
                    .and_then(Iterator::collect)
                    .map_err(|e| self.sqlite(e))?;
                continue;
            }
            let items = statement
                .query_map([job.id], |row| {
                    Ok((
                        StoredBulkItem {
                            client_ref: row.get(0)?,
                            row_key: row.get(1)?,
                            customer_key: row.get(2)?,
                            source_file: row.get(3)?,
                            line: in_rows(row, "line", 1).count(row, 4)?,
                            customer_id: row.get(5)?,
                            state: read_row_state(row, 6, 1)?,
                            record: None,
                        },
                        row.get::<_, Option<String>>(7)?,
                    ))
                })
                .map_err(|e| self.sqlite(e))?;
            let mut items = items
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| self.sqlite(e))?;
            if let Some(kind) = job.kind.record_kind() {
                for (item, record) in &mut items {
                    if let Some(external_id) = record.take() {
                        item.record = self.record(&item.row_key, kind, &external_id)?;
                    }
                }
            }
            job.items.extend(items.into_iter().map(|(item, _)| item));
        }
        Ok(jobs)
    }

    /// The number the next bulk job of this checkpoint is recorded under.
    pub fn next_bulk_job(&self) -> Result<i64, CheckpointError> {
        self.connection
            .query_row(
                "SELECT coalesce(max(id), 0) + 1 FROM bulk_jobs",
                [],
                |row| row.get(0),
            )
            .map_err(|e| self.sqlite(e))
    }

    /// Makes sure the checkpoint belongs to `target` before anything is sent: records it in
    /// a new checkpoint (or one made before targets were recorded), refuses another one
    /// unless `retarget` says the user means it (then records the new one).
    pub fn claim_target(
        &self,
        target: &ApiTarget,
        retarget: bool,
    ) -> Result<TargetClaim, CheckpointError> {
        target::claim(&self.connection, &self.path, target, retarget)
    }

    /// Records the start of a run against `target`; `args` must not hold the API key.
    pub fn begin_run(&self, args: &str, target: &ApiTarget) -> Result<i64, CheckpointError> {
        self.connection
            .execute(
                "INSERT INTO runs (started_at, pid, host, args, target)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    now_rfc3339(),
                    std::process::id(),
                    lock::host_name(),
                    args,
                    target.as_str()
                ],
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(self.connection.last_insert_rowid())
    }

    /// Records how a run ended.
    pub fn end_run(
        &self,
        run_id: i64,
        exit_code: i32,
        counts: RunCounts,
    ) -> Result<(), CheckpointError> {
        self.connection
            .execute(
                "UPDATE runs SET ended_at = ?2, exit_code = ?3, rows_read = ?4, rows_done = ?5,
                     rows_failed = ?6, rows_pending = ?7, requests = ?8, rows_updated = ?9,
                     rows_unchanged = ?10, messages_updated = ?11, notes_updated = ?12
                 WHERE id = ?1",
                params![
                    run_id,
                    now_rfc3339(),
                    exit_code,
                    counts.rows_read as i64,
                    counts.rows_done as i64,
                    counts.rows_failed as i64,
                    counts.rows_pending as i64,
                    counts.requests as i64,
                    counts.rows_updated as i64,
                    counts.rows_unchanged as i64,
                    counts.messages_updated as i64,
                    counts.notes_updated as i64
                ],
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(())
    }
}

/// Runs the integrity check when there is a reason to doubt the checkpoint (see
/// [`integrity::reason_to_check`]), and refuses it when the check finds damage.
fn check_if_in_doubt(
    path: &Path,
    connection: &Connection,
    identity: integrity::Identity,
    hot_wal: bool,
) -> Result<(), CheckpointError> {
    let sqlite = |source| CheckpointError::of_sqlite(path, source);
    let Some(why) = integrity::reason_to_check(connection, identity, hot_wal).map_err(sqlite)?
    else {
        return Ok(());
    };
    tracing::info!("checking the checkpoint {} whole: {why}", path.display());
    match integrity::integrity_problems(connection).map_err(sqlite)? {
        None => Ok(()),
        Some(problems) => Err(CheckpointError::Damaged {
            path: path.to_path_buf(),
            reason: format!("the integrity check, run because {why}, found: {problems}"),
        }),
    }
}

/// Makes a new checkpoint at `path`, where there is no file: under a temporary name in the
/// same directory (mode 0600), with its schema and marker, then renamed into place. A file
/// at `path` is thus a whole checkpoint or not one of ours, never one half made: an empty
/// file there is refused, not taken for a new checkpoint.
fn create_new(path: &Path) -> Result<(), CheckpointError> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let temporary = tempfile::Builder::new()
        .prefix(".kustomer-import-new-")
        .suffix(".sqlite")
        .tempfile_in(directory)
        .map_err(io)?;
    {
        let sqlite = |source| CheckpointError::of_sqlite(temporary.path(), source);
        let mut connection = Connection::open(temporary.path()).map_err(sqlite)?;
        migrate(temporary.path(), &mut connection)?;
        connection
            .pragma_update(None, "application_id", integrity::APPLICATION_ID)
            .map_err(sqlite)?;
    }
    // A rename that is not durable could leave no checkpoint after a power loss, and the
    // next run would start a new one while Kustomer has the records.
    temporary.as_file().sync_all().map_err(io)?;
    temporary
        .persist_noclobber(path)
        .map_err(|error| io(error.error))?;
    std::fs::File::open(directory)
        .and_then(|directory| directory.sync_all())
        .map_err(io)
}

/// Narrows the checkpoint and the `-wal` and `-shm` files beside it to their owner: they may
/// be left wider by an earlier version or by hand. SQLite gives the `-wal` and `-shm` files
/// it makes the database's mode.
fn narrow_to_owner(path: &Path) -> Result<(), CheckpointError> {
    let [wal, shm] = private::sqlite_companions(path);
    for file in [path, &wal, &shm] {
        private::narrow_path(file).map_err(|source| CheckpointError::Io {
            path: file.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Applies the migrations a checkpoint lacks.
fn migrate(path: &Path, connection: &mut Connection) -> Result<(), CheckpointError> {
    Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect())
        .to_latest(connection)
        .map_err(|error| match error {
            rusqlite_migration::Error::RusqliteError { err, .. } if integrity::is_damage(&err) => {
                CheckpointError::of_sqlite(path, err)
            }
            error => CheckpointError::Migrate {
                path: path.to_path_buf(),
                reason: error.to_string(),
            },
        })
}

/// Each connection's page cache, in KiB (SQLite's default is 2,000). The caches fill as the
/// checkpoint grows, so their size is most of the difference between the peak memory of a
/// small import and a large one: with the default a 1M-row import peaked 32% above a 100k
/// one (45.9 against 34.9 MiB), with 1 MiB 17% (39.4 against 33.7). On a large checkpoint
/// lookups and writes miss either cache, and the operating system's file cache serves them.
const PAGE_CACHE_KIB: i64 = 1024;

/// Opens the checkpoint at `path`, which must exist: a checkpoint removed during a run is
/// not made again empty.
fn open_existing(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Sets a connection up for the run (see below).
fn configure(connection: &Connection) -> rusqlite::Result<()> {
    // WAL: the writer commits without blocking readers (the planner, `status` while a run
    // goes on), and a commit is one sequential append. synchronous=FULL: each commit is
    // fsynced before it returns, so an intent that was acknowledged survives a power loss,
    // not only a killed process. NORMAL would be enough against kill -9 but may lose the
    // last commits on power loss, and a lost intent is a request we would send twice. The
    // writer batches many changes per commit, so the fsync cost is paid per batch.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)?;
    connection.busy_timeout(std::time::Duration::from_secs(10))
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_lookup_answers_in_the_order_asked_and_a_done_row_with_its_state_only() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(&dir.path().join("c.sqlite")).unwrap();
        checkpoint
            .connection
            .execute_batch(
                "INSERT INTO rows (row_key, source_file, line, customer_key, state, customer_id,
                                   conversation_id, conversation_external_id, updated_at)
                 VALUES ('conv:b', 'a.csv', 2, 'ext:C1', 'done', 'c1', 'v1', 'b', 't'),
                        ('conv:a', 'a.csv', 3, 'ext:C1', 'conversation_sent', 'c1', NULL, 'a', 't');",
            )
            .unwrap();
        let found = checkpoint
            .rows_to_plan(&["conv:z", "conv:b", "conv:a"])
            .unwrap();
        assert_eq!(found[0], None, "a row never seen");
        assert_eq!(found[1], Some(StoredRow::done()));
        let sent = found[2].as_ref().unwrap();
        assert_eq!(sent.state, RowState::ConversationSent);
        assert_eq!(sent.customer_id.as_deref(), Some("c1"));
        assert_eq!(sent.conversation_external_id.as_deref(), Some("a"));
        // One row alone is read whole, done or not.
        let done = checkpoint.row("conv:b").unwrap().unwrap();
        assert_eq!(done.conversation_id.as_deref(), Some("v1"));
    }

    #[test]
    fn a_bulk_job_of_a_kind_no_version_writes_is_damage_not_a_conversations_job() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(&dir.path().join("c.sqlite")).unwrap();
        checkpoint
            .connection
            .execute_batch(
                "PRAGMA ignore_check_constraints = ON;
                 INSERT INTO bulk_jobs (id, kind, state, items, created_at, updated_at)
                 VALUES (1, 'cust0mers', 'queued', 0, 't', '2026-12-01T10:00:00Z');",
            )
            .unwrap();
        match checkpoint.unfinished_bulk_jobs(SystemTime::UNIX_EPOCH) {
            Err(CheckpointError::Damaged { reason, .. }) => {
                assert!(reason.contains("\"cust0mers\""), "{reason}");
            }
            other => panic!("expected damage, got {:?}", other.map(|jobs| jobs.len())),
        }
    }

    /// A checkpoint at `dir` holding what `sql` writes, CHECK constraints off: values no
    /// version writes, as damage or a hand's edit would leave them.
    fn with_unwritten_values(dir: &tempfile::TempDir, sql: &str) -> Checkpoint {
        let checkpoint = Checkpoint::open(&dir.path().join("c.sqlite")).unwrap();
        checkpoint
            .connection
            .execute_batch(&format!("PRAGMA ignore_check_constraints = ON; {sql}"))
            .unwrap();
        checkpoint
    }

    /// The reason of a damage error, or a panic naming what came instead.
    fn damage<T: std::fmt::Debug>(result: Result<T, CheckpointError>) -> String {
        match result {
            Err(CheckpointError::Damaged { reason, .. }) => reason,
            other => panic!("expected damage, got {other:?}"),
        }
    }

    #[test]
    fn a_row_state_or_flag_no_version_writes_is_damage_naming_table_column_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = with_unwritten_values(
            &dir,
            "INSERT INTO rows (row_key, source_file, line, state, updated_at, outcome_unknown)
             VALUES ('conv:A', 'a.csv', 2, 'gone', 't', 0),
                    ('conv:B', 'a.csv', 3, 'failed', 't', 2);",
        );
        let reason = damage(checkpoint.row("conv:A"));
        assert!(
            reason.contains("rows.state of the row \"conv:A\" is \"gone\""),
            "{reason}"
        );
        let reason = damage(checkpoint.rows_to_plan(&["conv:A"]));
        assert!(reason.contains("\"gone\""), "{reason}");
        let reason = damage(checkpoint.row("conv:B"));
        assert!(
            reason.contains("rows.outcome_unknown of the row \"conv:B\" is Integer(2)"),
            "{reason}"
        );
    }

    #[test]
    fn a_bulk_job_state_time_or_item_line_no_version_writes_is_damage_not_a_finished_job() {
        let unfinished = |sql: &str| {
            let dir = tempfile::tempdir().unwrap();
            let checkpoint = with_unwritten_values(&dir, sql);
            damage(checkpoint.unfinished_bulk_jobs(SystemTime::UNIX_EPOCH))
        };
        // Read as over (complete, refused), the job's rows would be sent again.
        let reason = unfinished(
            "INSERT INTO bulk_jobs (id, kind, state, items, created_at, updated_at)
             VALUES (1, 'customers', 'qeued', 0, 't', '2026-12-01T10:00:00Z');",
        );
        assert!(
            reason.contains("bulk_jobs.state of the bulk job 1 is \"qeued\""),
            "{reason}"
        );
        let reason = unfinished(
            "INSERT INTO bulk_jobs (id, kind, state, items, created_at, updated_at)
             VALUES (2, 'customers', 'queued', 0, 't', 'yesterday');",
        );
        assert!(
            reason.contains("bulk_jobs.updated_at of the bulk job 2 is \"yesterday\""),
            "{reason}"
        );
        let reason = unfinished(
            "INSERT INTO bulk_jobs (id, kind, state, items, created_at, updated_at)
             VALUES (3, 'customers', 'queued', 1, 't', '2026-12-01T10:00:00Z');
             INSERT INTO bulk_items (job, client_ref, row_key) VALUES (3, 'r0', 'conv:A');
             INSERT INTO rows (row_key, source_file, line, state, updated_at)
             VALUES ('conv:A', 'a.csv', -2, 'customer_sent', 't');",
        );
        assert!(
            reason.contains("rows.line of the row \"conv:A\" is Integer(-2)"),
            "{reason}"
        );
    }

    #[test]
    fn a_checkpoint_of_the_older_schema_keeps_its_rows_and_its_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            // A checkpoint as a version with migrations 001-004 left it.
            let mut connection = Connection::open(&path).unwrap();
            Migrations::new(MIGRATIONS[..4].iter().map(|sql| M::up(sql)).collect())
                .to_latest(&mut connection)
                .unwrap();
            connection
                .execute_batch(
                    "INSERT INTO rows (row_key, source_file, line, customer_key, state,
                                       customer_id, conversation_id, updated_at, outcome_unknown)
                     VALUES ('conv:T1', 'a.csv', 2, 'ext:C1', 'done', 'c1', 'v1', 't', 0),
                            ('conv:T2', 'a.csv', 3, 'ext:C1', 'failed', NULL, NULL, 't', 1);
                     INSERT INTO customers (customer_key, state, customer_id, updated_at)
                     VALUES ('ext:C1', 'created', 'c1', 't');",
                )
                .unwrap();
        }
        let checkpoint = Checkpoint::open(&path).unwrap();
        let done = checkpoint.row("conv:T1").unwrap().unwrap();
        assert_eq!(done.state, RowState::Done);
        assert_eq!(done.conversation_id.as_deref(), Some("v1"));
        assert!(checkpoint.row("conv:T2").unwrap().unwrap().outcome_unknown);
        assert_eq!(
            checkpoint.customer("ext:C1").unwrap().unwrap().customer_id,
            Some("c1".into())
        );
        let refused = checkpoint.connection.execute(
            "UPDATE rows SET state = 'nonsense' WHERE row_key = 'conv:T1'",
            [],
        );
        assert!(refused.is_err(), "the state check holds after the rebuild");
    }
}
