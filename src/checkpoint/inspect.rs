//! Reading a checkpoint without importing: the counts `status` shows and the rows `export`
//! streams. It opens the file read-only and takes no lock, so it works while a run goes on
//! (a WAL reader sees the last commit). Where the checkpoint's directory cannot be written
//! (a read-only filesystem), a WAL reader cannot make the shared-memory file it needs, and
//! the file is read as immutable instead: as it is on disk, without the WAL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use serde::Serialize;

use super::integrity::{self, Stored};
use super::lock::{LockHolder, current_holder};
use super::{BulkJobState, CheckpointError, RecordOrigin, RowState};

/// `customers.state` while only a customer's intent is recorded; once its id is known, its
/// [`RecordOrigin`].
const CUSTOMER_SENT: &str = "sent";

/// The version of the `status --json` and `export --format jsonl` shapes.
pub const SCHEMA_VERSION: u32 = 1;

/// Row counts of one input file (or of all of them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RowCounts {
    pub rows: u64,
    pub done: u64,
    pub failed: u64,
    /// Not started, or the customer is known and the conversation not yet sent, or the
    /// conversation is made and its history not all written.
    pub pending: u64,
    /// A create left and its answer was never recorded: the next run looks it up.
    pub unknown: u64,
    /// Failed rows (counted in `failed`) whose create may have landed all the same: nothing
    /// can look them up, no run sends them again; a person must check Kustomer.
    pub unresolved: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileCounts {
    pub file: String,
    #[serde(flatten)]
    pub counts: RowCounts,
    pub failed_by_reason: Vec<ReasonCount>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub rows: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CustomerCounts {
    pub created: u64,
    pub linked: u64,
    pub reconciled: u64,
    /// A create left and its answer was never recorded.
    pub unknown: u64,
}

/// The source agents runs looked up (`GET /v1/users?email=`) and what they found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AgentCounts {
    /// Agents mapped to a user of the org.
    pub with_user: u64,
    /// Agents the org has no user for (their items fell back), by the email looked up.
    pub without_user: Vec<String>,
}

/// Bulk jobs by state (see migration 004).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BulkJobCounts {
    pub complete: u64,
    /// Taken by Kustomer and not yet applied: the next run polls them.
    pub queued: u64,
    /// Sent with no answer recorded: the next run waits them out, then looks their rows up.
    pub submitting: u64,
    pub refused: u64,
    pub lost: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub exit_code: Option<i64>,
    pub pid: i64,
    pub host: String,
    pub args: String,
    pub rows_read: Option<i64>,
    pub rows_done: Option<i64>,
    pub rows_failed: Option<i64>,
    pub rows_pending: Option<i64>,
    pub requests: Option<i64>,
    /// Done rows the run read again and updated, and those it found unchanged (None: a run
    /// of a version before nightly sync).
    pub rows_updated: Option<i64>,
    pub rows_unchanged: Option<i64>,
    /// Messages and notes done earlier that the run updated (None: a run of a version
    /// before migration 019).
    pub messages_updated: Option<i64>,
    pub notes_updated: Option<i64>,
    /// The API the run sent to (see [`super::ApiTarget`]); None for runs of a version that
    /// did not record it.
    pub target: Option<String>,
    /// Requests per minute over the run, when it ended and lasted a minute or more.
    pub requests_per_minute: Option<f64>,
    /// When an `undo` deleted everything the run made (None: never, or before 013).
    pub undone_at: Option<String>,
    /// `undo` for an undo's line (which counts the rows it put back as pending); None for
    /// an import.
    pub command: Option<String>,
}

impl RunRecord {
    pub fn is_undo(&self) -> bool {
        self.command.as_deref() == Some("undo")
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ActiveRun {
    pub pid: Option<u32>,
    pub host: Option<String>,
    pub started_at: Option<String>,
}

/// Everything `status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub version: u32,
    pub checkpoint: String,
    /// Read as immutable (see [`CheckpointReader::immutable_note`]).
    pub immutable: bool,
    /// The API the checkpoint belongs to: a normalised base URL or `sandbox`. None for a
    /// checkpoint of an older version that no run has opened since (its next run adopts
    /// its own).
    pub target: Option<String>,
    /// The run holding the checkpoint now, if any.
    pub active_run: Option<ActiveRun>,
    pub files: Vec<FileCounts>,
    pub total: RowCounts,
    /// Failed rows by reason, quoted values folded so that like reasons count together.
    pub failed_by_reason: Vec<ReasonCount>,
    pub customers: CustomerCounts,
    /// Companies by the same states as customers (migration 015).
    pub companies: CustomerCounts,
    pub history: HistoryCounts,
    /// The org's tags as the import knows them, and the names its rows went without
    /// (migration 017).
    pub tags: TagCounts,
    pub bulk_jobs: BulkJobCounts,
    /// The source agents looked up as Kustomer users (migration 014).
    pub agents: AgentCounts,
    /// The latest runs, newest first.
    pub runs: Vec<RunRecord>,
}

/// One line of `export`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportRow {
    pub file: String,
    pub line: i64,
    pub row_key: String,
    pub customer_external_id: Option<String>,
    pub customer_id: Option<String>,
    pub conversation_id: Option<String>,
    pub state: String,
    /// How the row's customer came to be: created, linked or reconciled.
    pub customer: Option<String>,
    pub error: Option<String>,
    /// A failed row whose create may have landed: check Kustomer by hand.
    pub outcome_unknown: bool,
    /// Messages and notes of the row's history with their Kustomer ids.
    pub messages: i64,
    pub notes: i64,
    /// When an update of its customer or conversation last landed (a nightly sync); None:
    /// unchanged since it was made.
    pub updated_at: Option<String>,
    /// The tag names its conversation went without (the org lacks them), as a JSON list.
    pub tags_missing: Option<String>,
    /// The Kustomer id of its customer's company (None: the row names none, or it is not
    /// made yet).
    pub company_id: Option<String>,
}

impl ExportRow {
    /// The CSV header of `export`: the fields above, in order.
    pub const COLUMNS: &[&str] = &[
        "file",
        "line",
        "row_key",
        "customer_external_id",
        "customer_id",
        "conversation_id",
        "state",
        "customer",
        "error",
        "outcome_unknown",
        "messages",
        "notes",
        "updated_at",
        "tags_missing",
        "company_id",
    ];
}

/// One line of `export --records agents`: a source agent a run looked up (migration 014).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportAgent {
    pub agent: String,
    /// The email it was looked up by.
    pub email: String,
    /// The org's user with that email; None: the org has none (its items fell back).
    pub user_id: Option<String>,
    pub resolved_at: String,
}

impl ExportAgent {
    pub const COLUMNS: &[&str] = &["agent", "email", "user_id", "resolved_at"];
}

/// One line of `export --records companies`: a company the import's customers belong to
/// (migration 015).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportCompany {
    /// `ext:<externalId>`, or `name:<name>` for a company known only by its name.
    pub company_key: String,
    pub external_id: String,
    pub name: String,
    /// None while its create's answer is unknown.
    pub company_id: Option<String>,
    /// created, linked (already in Kustomer), reconciled (found after a lost answer), or
    /// unknown (a create left and its answer was never recorded: the next run looks it up).
    pub company: String,
    pub updated_at: String,
}

impl ExportCompany {
    pub const COLUMNS: &[&str] = &[
        "company_key",
        "external_id",
        "name",
        "company_id",
        "company",
        "updated_at",
    ];
}

/// One line of `export --records tags`: a tag of the org the import knows (migration 017).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportTag {
    pub name: String,
    pub tag_id: String,
    /// listed (found in the org) or created (made by this import, `--create-missing-tags`).
    pub origin: String,
    /// When a listing found it, or an append made it.
    pub listed_at: String,
}

impl ExportTag {
    pub const COLUMNS: &[&str] = &["name", "tag_id", "origin", "listed_at"];
}

/// The org's tags the checkpoint knows (listed, or made by this import's appends), and the
/// tag names rows' conversations were sent without, each with its rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TagCounts {
    pub known: u64,
    /// Of `known`, those this import made (`--create-missing-tags`).
    pub created: u64,
    /// Rows whose conversation went without a tag the org lacks.
    pub rows_missing: u64,
    /// Each name the org lacks (lower-cased), with the rows that went without it.
    pub missing: std::collections::BTreeMap<String, u64>,
}

/// Where the conversations' history stands: steps by kind and state (migration 008's
/// `records`; all zero in a checkpoint older than it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HistoryCounts {
    pub messages_done: u64,
    pub notes_done: u64,
    /// Sent, their answers not recorded: the next run looks them up.
    pub sent: u64,
    /// Refused by the API.
    pub failed: u64,
}

/// Which rows `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    Done,
    Failed,
    All,
}

/// A checkpoint opened for reading only.
pub struct CheckpointReader {
    path: PathBuf,
    connection: Connection,
    /// Opened with `immutable=1`: see [`CheckpointReader::immutable_note`].
    immutable: bool,
}

/// How many runs `status` lists.
const RUNS_LISTED: usize = 10;

impl CheckpointReader {
    /// Opens an existing checkpoint read-only.
    pub fn open(path: &Path) -> Result<CheckpointReader, CheckpointError> {
        if !path.exists() {
            return Err(CheckpointError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such checkpoint (give the one the import used with --checkpoint or \
                     KUSTOMER_IMPORT_CHECKPOINT, or --sandbox for a rehearsal's; the default \
                     is relative to the directory the import ran in)",
                ),
            });
        }
        let sqlite = |source| CheckpointError::of_sqlite(path, source);
        let (connection, immutable) = match open_read_only(path) {
            Ok(connection) => (connection, false),
            Err(error) if error.sqlite_error_code() == Some(ErrorCode::CannotOpen) => {
                // The file exists; what cannot be opened is the shared-memory file beside
                // it, which a read-only filesystem does not let SQLite create.
                (open_immutable(path).map_err(sqlite)?, true)
            }
            Err(error) => return Err(sqlite(error)),
        };
        // A checkpoint made before the marker is read as it is; a run adopts it.
        integrity::identify(path, &connection)?;
        Ok(CheckpointReader {
            path: path.to_path_buf(),
            connection,
            immutable,
        })
    }

    /// What reading the checkpoint as immutable means, when it was: said to the user beside
    /// what is read.
    pub fn immutable_note(&self) -> Option<String> {
        if !self.immutable {
            return None;
        }
        let [wal, _] = super::private::sqlite_companions(&self.path);
        let mut note = format!(
            "read as immutable (the directory of {} cannot be written, as on a read-only \
             filesystem): the file as it is on disk, without what a run going on elsewhere \
             writes",
            self.path.display()
        );
        if integrity::has_hot_wal(&self.path) {
            note.push_str(&format!(
                "; the changes the last run left in {} are not seen either (copy the \
                 checkpoint and that file to a writable directory to read them)",
                wal.display()
            ));
        }
        Some(note)
    }

    fn sqlite(&self, source: rusqlite::Error) -> CheckpointError {
        CheckpointError::of_sqlite(&self.path, source)
    }

    /// The counts `status` shows.
    pub fn status(&self) -> Result<Status, CheckpointError> {
        let active_run = current_holder(&self.path)
            .map_err(|source| CheckpointError::Io {
                path: self.path.clone(),
                source,
            })?
            .map(
                |LockHolder {
                     pid,
                     host,
                     started_at,
                 }| ActiveRun {
                    pid,
                    host,
                    started_at,
                },
            );
        let mut files = self.file_counts().map_err(|e| self.sqlite(e))?;
        let mut reasons = self.failed_by_reason().map_err(|e| self.sqlite(e))?;
        for file in &mut files {
            file.failed_by_reason = reasons.remove(&file.file).unwrap_or_default();
        }
        let mut total = RowCounts::default();
        for file in &files {
            total.rows += file.counts.rows;
            total.done += file.counts.done;
            total.failed += file.counts.failed;
            total.pending += file.counts.pending;
            total.unknown += file.counts.unknown;
            total.unresolved += file.counts.unresolved;
        }
        let failed_by_reason = fold_reasons(files.iter().flat_map(|f| f.failed_by_reason.clone()));
        Ok(Status {
            version: SCHEMA_VERSION,
            checkpoint: self.path.display().to_string(),
            immutable: self.immutable,
            target: super::target::recorded_target(&self.connection)
                .map_err(|e| self.sqlite(e))?
                .map(|target| target.to_string()),
            active_run,
            files,
            total,
            failed_by_reason,
            customers: self.customer_counts().map_err(|e| self.sqlite(e))?,
            companies: self.company_counts().map_err(|e| self.sqlite(e))?,
            history: self.history_counts().map_err(|e| self.sqlite(e))?,
            tags: self.tag_counts().map_err(|e| self.sqlite(e))?,
            bulk_jobs: self.bulk_job_counts().map_err(|e| self.sqlite(e))?,
            agents: self.agent_counts().map_err(|e| self.sqlite(e))?,
            runs: self
                .runs()
                .and_then(|runs| runs.into_iter().map(with_rate).collect())
                .map_err(|e| self.sqlite(e))?,
        })
    }

    fn file_counts(&self) -> rusqlite::Result<Vec<FileCounts>> {
        let mut statement = self.connection.prepare(
            "SELECT source_file, count(*),
                    sum(state = 'done'), sum(state = 'failed'),
                    sum(state IN ('pending', 'customer_ok', 'conversation_ok')),
                    sum(state IN ('customer_sent', 'conversation_sent')),
                    sum(state = 'failed' AND outcome_unknown),
                    sum(outcome_unknown <> 0 AND outcome_unknown <> 1)
             FROM rows GROUP BY source_file ORDER BY source_file",
        )?;
        let counted = statement
            .query_map([], |row| {
                let count = |index| row.get::<_, i64>(index).map(|n| n.max(0) as u64);
                let file: String = row.get(0)?;
                let counts = RowCounts {
                    rows: count(1)?,
                    done: count(2)?,
                    failed: count(3)?,
                    pending: count(4)?,
                    unknown: count(5)?,
                    unresolved: count(6)?,
                };
                let in_a_state = counts.done + counts.failed + counts.pending + counts.unknown;
                let whole = in_a_state == counts.rows && count(7)? == 0;
                Ok((whole, file, counts))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut files = Vec::with_capacity(counted.len());
        for (whole, file, counts) in counted {
            if !whole {
                return Err(self.unwritten_in_rows(&file));
            }
            files.push(FileCounts {
                failed_by_reason: Vec::new(),
                file,
                counts,
            });
        }
        Ok(files)
    }

    /// The damage in the rows of `file` that [`Self::file_counts`] could not count: the
    /// first state or flag there that no version writes, named.
    fn unwritten_in_rows(&self, file: &str) -> rusqlite::Error {
        let found = self.connection.query_row(
            "SELECT state, outcome_unknown <> 0 AND outcome_unknown <> 1, count(*) FROM rows
             WHERE source_file = ?1
               AND NOT (state = 'pending' OR state = 'customer_sent' OR state = 'customer_ok'
                        OR state = 'conversation_sent' OR state = 'conversation_ok'
                        OR state = 'done' OR state = 'failed')
                OR (source_file = ?1 AND outcome_unknown <> 0 AND outcome_unknown <> 1)
             GROUP BY 1, 2 LIMIT 1",
            [file],
            |row| {
                let state = integrity::shown(row.get_ref(0)?);
                let flag: bool = row.get(1)?;
                let count: i64 = row.get(2)?;
                Ok(if flag {
                    format!("outcome_unknown is neither 0 nor 1 in {count} rows of {file}")
                } else {
                    format!("state is {state} in {count} rows of {file}")
                })
            },
        );
        match found {
            Ok(what) => integrity::damaged_value(format!(
                "in its rows table, {what}, which no version of kustomer-import writes"
            )),
            Err(error) => error,
        }
    }

    /// Failed rows by file, then by reason.
    fn failed_by_reason(&self) -> rusqlite::Result<BTreeMap<String, Vec<ReasonCount>>> {
        let mut statement = self.connection.prepare(
            "SELECT source_file,
                    coalesce(field || ': ', '') || coalesce(last_error, 'no reason recorded'),
                    count(*)
             FROM rows WHERE state = 'failed' GROUP BY 1, 2",
        )?;
        let mut by_file: BTreeMap<String, Vec<ReasonCount>> = BTreeMap::new();
        for row in statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })? {
            let (file, reason, rows) = row?;
            by_file.entry(file).or_default().push(ReasonCount {
                reason,
                rows: rows.max(0) as u64,
            });
        }
        Ok(by_file
            .into_iter()
            .map(|(file, reasons)| (file, fold_reasons(reasons)))
            .collect())
    }

    /// `(state, count)` of a table's lines, by state.
    fn count_by_state(&self, table: &str) -> rusqlite::Result<Vec<(String, u64)>> {
        let mut statement = self.connection.prepare(&format!(
            "SELECT state, count(*) FROM {table} GROUP BY state"
        ))?;
        statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?.max(0) as u64,
                ))
            })?
            .collect()
    }

    fn customer_counts(&self) -> rusqlite::Result<CustomerCounts> {
        self.origin_counts("customers")
    }

    /// Companies by state (migration 015; none in a checkpoint no run of this version has
    /// opened).
    fn company_counts(&self) -> rusqlite::Result<CustomerCounts> {
        if !self.has_table("companies")? {
            return Ok(CustomerCounts::default());
        }
        self.origin_counts("companies")
    }

    /// A table of records by how they came to have their ids (`customers`, `companies`).
    fn origin_counts(&self, table: &str) -> rusqlite::Result<CustomerCounts> {
        let mut counts = CustomerCounts::default();
        for (state, count) in self.count_by_state(table)? {
            match (state.as_str(), RecordOrigin::parse(&state)) {
                (_, Some(RecordOrigin::Created)) => counts.created = count,
                (_, Some(RecordOrigin::Linked)) => counts.linked = count,
                (_, Some(RecordOrigin::Reconciled)) => counts.reconciled = count,
                (CUSTOMER_SENT, None) => counts.unknown = count,
                (other, None) => return Err(unwritten_state(table, other, count)),
            }
        }
        Ok(counts)
    }

    fn bulk_job_counts(&self) -> rusqlite::Result<BulkJobCounts> {
        let mut counts = BulkJobCounts::default();
        // A checkpoint no run of this version has opened has no such table: no jobs.
        if !self.has_table("bulk_jobs")? {
            return Ok(counts);
        }
        for (state, count) in self.count_by_state("bulk_jobs")? {
            let counted = match BulkJobState::parse(&state) {
                Some(BulkJobState::Complete) => &mut counts.complete,
                Some(BulkJobState::Queued) => &mut counts.queued,
                Some(BulkJobState::Submitting) => &mut counts.submitting,
                Some(BulkJobState::Refused) => &mut counts.refused,
                Some(BulkJobState::Lost) => &mut counts.lost,
                None => return Err(unwritten_state("bulk_jobs", &state, count)),
            };
            *counted = count;
        }
        Ok(counts)
    }

    /// `select` when `table` has `column`, else NULL: a checkpoint no run of this version
    /// has opened lacks the columns of later migrations (it is read as it is).
    fn column_or_null(
        &self,
        table: &str,
        column: &str,
        select: &'static str,
    ) -> rusqlite::Result<&'static str> {
        let present: bool = self.connection.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
            [table, column],
            |row| row.get(0),
        )?;
        Ok(if present { select } else { "NULL" })
    }

    fn runs(&self) -> rusqlite::Result<Vec<RunRecord>> {
        let target = self.column_or_null("runs", "target", "target")?;
        let updated = self.column_or_null("runs", "rows_updated", "rows_updated")?;
        let unchanged = self.column_or_null("runs", "rows_unchanged", "rows_unchanged")?;
        let undone = self.column_or_null("runs", "undone_at", "undone_at")?;
        let command = self.column_or_null("runs", "command", "command")?;
        let messages = self.column_or_null("runs", "messages_updated", "messages_updated")?;
        let notes = self.column_or_null("runs", "notes_updated", "notes_updated")?;
        let mut statement = self.connection.prepare(&format!(
            "SELECT id, started_at, ended_at, exit_code, pid, host, args, rows_read, rows_done,
                    rows_failed, rows_pending, requests, {target}, {updated}, {unchanged},
                    {undone}, {command}, {messages}, {notes}
             FROM runs ORDER BY id DESC LIMIT ?1"
        ))?;
        statement
            .query_map([RUNS_LISTED as i64], |row| {
                Ok(RunRecord {
                    id: row.get(0)?,
                    started_at: row.get(1)?,
                    ended_at: row.get(2)?,
                    exit_code: row.get(3)?,
                    pid: row.get(4)?,
                    host: row.get(5)?,
                    args: row.get(6)?,
                    rows_read: row.get(7)?,
                    rows_done: row.get(8)?,
                    rows_failed: row.get(9)?,
                    rows_pending: row.get(10)?,
                    requests: row.get(11)?,
                    target: row.get(12)?,
                    rows_updated: row.get(13)?,
                    rows_unchanged: row.get(14)?,
                    requests_per_minute: None,
                    undone_at: row.get(15)?,
                    command: row.get(16)?,
                    messages_updated: row.get(17)?,
                    notes_updated: row.get(18)?,
                })
            })?
            .collect()
    }

    /// Whether the checkpoint has migration 008's `records` (one older than it, read as it
    /// is, has no history).
    /// The tags known and missing (none in a checkpoint no run of this version has opened).
    fn tag_counts(&self) -> rusqlite::Result<TagCounts> {
        let mut counts = TagCounts::default();
        let has_table: bool = self.connection.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'tags'",
            [],
            |row| row.get(0),
        )?;
        if !has_table {
            return Ok(counts);
        }
        let (known, created): (i64, i64) = self.connection.query_row(
            "SELECT count(*), count(*) FILTER (WHERE origin = 'created') FROM tags",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        (counts.known, counts.created) = (known as u64, created as u64);
        let mut statement = self
            .connection
            .prepare("SELECT row_key, tags_missing FROM rows WHERE tags_missing IS NOT NULL")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let text: String = row.get(1)?;
            let names: Vec<String> = serde_json::from_str(&text).map_err(|_| {
                let key = row.get_ref(0).map_or("?".into(), integrity::shown);
                integrity::damaged_value(format!(
                    "rows.tags_missing of the row {key} is {text:?}, which is no JSON list of \
                     names: no version of kustomer-import writes that"
                ))
            })?;
            counts.rows_missing += 1;
            for name in names {
                *counts.missing.entry(name.to_lowercase()).or_default() += 1;
            }
        }
        Ok(counts)
    }

    fn has_records(&self) -> rusqlite::Result<bool> {
        self.has_table("records")
    }

    /// Whether the checkpoint has this table: one older than the migration that made it,
    /// read as it is (`--read-only`), has not.
    fn has_table(&self, name: &str) -> rusqlite::Result<bool> {
        self.connection.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |row| row.get(0),
        )
    }

    /// The agents runs looked up (migration 014): how many have a user, and those without.
    fn agent_counts(&self) -> rusqlite::Result<AgentCounts> {
        let mut counts = AgentCounts::default();
        if !self.has_table("agents")? {
            return Ok(counts);
        }
        let mut statement = self
            .connection
            .prepare("SELECT agent, user_id IS NOT NULL FROM agents ORDER BY agent")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            match row.get::<_, bool>(1)? {
                true => counts.with_user += 1,
                false => counts.without_user.push(row.get(0)?),
            }
        }
        Ok(counts)
    }

    /// Steps of the history by kind and state.
    fn history_counts(&self) -> rusqlite::Result<HistoryCounts> {
        let mut counts = HistoryCounts::default();
        if !self.has_records()? {
            return Ok(counts);
        }
        let mut statement = self
            .connection
            .prepare("SELECT kind, state, count(*) FROM records GROUP BY kind, state")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let kind: String = row.get(0)?;
            let state: String = row.get(1)?;
            let count = row.get::<_, i64>(2)? as u64;
            match (kind.as_str(), state.as_str()) {
                ("message", "done") => counts.messages_done += count,
                ("note", "done") => counts.notes_done += count,
                (_, "sent") => counts.sent += count,
                (_, "failed") => counts.failed += count,
                _ => return Err(unwritten_state("records", &state, count)),
            }
        }
        Ok(counts)
    }

    /// Calls `write` for every row in the filter, file by file in line order, one row in
    /// memory at a time. Returns how many rows were written.
    pub fn export<E>(
        &self,
        filter: StateFilter,
        write: impl FnMut(&ExportRow) -> Result<(), E>,
    ) -> Result<Result<u64, E>, CheckpointError> {
        let state = match filter {
            StateFilter::Done => "done",
            StateFilter::Failed => "failed",
            StateFilter::All => "",
        };
        let history = if self.has_records().map_err(|e| self.sqlite(e))? {
            "(SELECT count(*) FROM records x WHERE x.row_key = r.row_key
                  AND x.kind = 'message' AND x.state = 'done'),
             (SELECT count(*) FROM records x WHERE x.row_key = r.row_key
                  AND x.kind = 'note' AND x.state = 'done')"
        } else {
            "0, 0"
        };
        let synced_at = self
            .column_or_null("rows", "synced_at", "r.synced_at")
            .map_err(|e| self.sqlite(e))?;
        let tags_missing = self
            .column_or_null("rows", "tags_missing", "r.tags_missing")
            .map_err(|e| self.sqlite(e))?;
        // The customer's company: one more lookup by primary key, beside the customer's.
        let (company_id, company_join) =
            if self.has_table("companies").map_err(|e| self.sqlite(e))? {
                (
                    "co.company_id",
                    "LEFT JOIN companies co ON co.company_key = c.company_key",
                )
            } else {
                ("NULL", "")
            };
        let statement = self
            .connection
            .prepare(&format!(
                "SELECT r.source_file, r.line, r.row_key, c.external_id, r.customer_id,
                        r.conversation_id, r.state, c.state,
                        coalesce(r.field || ': ', '') || r.last_error, r.outcome_unknown,
                        r.customer_key, {history}, {synced_at}, {tags_missing}, {company_id}
                 FROM rows r LEFT JOIN customers c ON c.customer_key = r.customer_key
                      {company_join}
                 WHERE ?1 = '' OR r.state = ?1
                 ORDER BY r.source_file, r.line",
            ))
            .map_err(|e| self.sqlite(e))?;
        self.stream_lines(statement, [state], write, export_row)
    }
}

impl CheckpointReader {
    /// Calls `write` for every agent runs looked up, in order of the agent. Returns how
    /// many were written (none in a checkpoint older than migration 014).
    pub fn export_agents<E>(
        &self,
        write: impl FnMut(&ExportAgent) -> Result<(), E>,
    ) -> Result<Result<u64, E>, CheckpointError> {
        let sql = "SELECT agent, email, user_id, resolved_at FROM agents ORDER BY agent";
        self.stream("agents", sql, write, |row| {
            Ok(ExportAgent {
                agent: row.get(0)?,
                email: row.get(1)?,
                user_id: row.get(2)?,
                resolved_at: row.get(3)?,
            })
        })
    }

    /// Calls `write` for every company of the import, in order of its key (none in a
    /// checkpoint older than migration 015). A state no version writes is damage.
    pub fn export_companies<E>(
        &self,
        write: impl FnMut(&ExportCompany) -> Result<(), E>,
    ) -> Result<Result<u64, E>, CheckpointError> {
        let sql = "SELECT company_key, external_id, name, company_id, state, updated_at
                   FROM companies ORDER BY company_key";
        self.stream("companies", sql, write, |row| {
            let company = match row.get_ref(4)?.as_str_or_null()? {
                Some(CUSTOMER_SENT) => "unknown".to_string(),
                _ => Stored {
                    table: "companies",
                    column: "state",
                    whose: || {
                        let key = row.get_ref(0).map_or("?".into(), integrity::shown);
                        format!("the company {key}")
                    },
                }
                .word(row, 4, RecordOrigin::parse)?
                .as_str()
                .to_string(),
            };
            Ok(ExportCompany {
                company_key: row.get(0)?,
                external_id: row.get(1)?,
                name: row.get(2)?,
                company_id: row.get(3)?,
                company,
                updated_at: row.get(5)?,
            })
        })
    }

    /// Calls `write` for every tag the import knows, in order of its name (none in a
    /// checkpoint older than migration 017). An origin no version writes is damage.
    pub fn export_tags<E>(
        &self,
        write: impl FnMut(&ExportTag) -> Result<(), E>,
    ) -> Result<Result<u64, E>, CheckpointError> {
        let sql = "SELECT name, tag_id, origin, listed_at, name_key FROM tags ORDER BY name_key";
        self.stream("tags", sql, write, |row| {
            let origin = Stored {
                table: "tags",
                column: "origin",
                whose: || {
                    let key = row.get_ref(4).map_or("?".into(), integrity::shown);
                    format!("the tag {key}")
                },
            }
            .word(row, 2, |word| {
                matches!(word, "listed" | "created").then(|| word.to_string())
            })?;
            Ok(ExportTag {
                name: row.get(0)?,
                tag_id: row.get(1)?,
                origin,
                listed_at: row.get(3)?,
            })
        })
    }

    /// Streams the lines `sql` selects from `table` (nothing when the checkpoint predates
    /// the table), as [`CheckpointReader::stream_lines`] does.
    fn stream<T, E>(
        &self,
        table: &str,
        sql: &str,
        write: impl FnMut(&T) -> Result<(), E>,
        read: impl Fn(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Result<u64, E>, CheckpointError> {
        if !self.has_table(table).map_err(|e| self.sqlite(e))? {
            return Ok(Ok(0));
        }
        let statement = self.connection.prepare(sql).map_err(|e| self.sqlite(e))?;
        self.stream_lines(statement, [], write, read)
    }

    /// Runs `statement`, each line made by `read` and handed to `write`, one in memory at a
    /// time; stops at the first error of `write`. Returns how many lines were written.
    fn stream_lines<T, E>(
        &self,
        mut statement: rusqlite::Statement<'_>,
        params: impl rusqlite::Params,
        mut write: impl FnMut(&T) -> Result<(), E>,
        read: impl Fn(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Result<u64, E>, CheckpointError> {
        let sqlite = |e| self.sqlite(e);
        let mut rows = statement.query(params).map_err(sqlite)?;
        let mut written = 0;
        while let Some(row) = rows.next().map_err(sqlite)? {
            if let Err(error) = write(&read(row).map_err(sqlite)?) {
                return Ok(Err(error));
            }
            written += 1;
        }
        Ok(Ok(written))
    }
}

impl CheckpointReader {
    /// The API the checkpoint belongs to; None for one made before targets were recorded.
    pub fn target(&self) -> Result<Option<super::ApiTarget>, CheckpointError> {
        super::target::recorded_target(&self.connection).map_err(|e| self.sqlite(e))
    }

    /// Every done row with what `verify` reads back and compares, file by file in line
    /// order.
    pub fn verify_rows(&self) -> Result<Vec<VerifyRow>, CheckpointError> {
        let sqlite = |e| self.sqlite(e);
        let fingerprint = self
            .column_or_null("rows", "fingerprint", "r.fingerprint")
            .map_err(sqlite)?;
        let customer_fingerprint = self
            .column_or_null("rows", "customer_fingerprint", "r.customer_fingerprint")
            .map_err(sqlite)?;
        let notes = if self.has_records().map_err(sqlite)? {
            "(SELECT count(*) FROM records x WHERE x.row_key = r.row_key
                  AND x.kind = 'note' AND x.state = 'done')"
        } else {
            "0"
        };
        let mut statement = self
            .connection
            .prepare(&format!(
                "SELECT r.source_file, r.line, r.row_key, r.customer_key, r.customer_id,
                        c.state, r.conversation_id, {fingerprint}, {customer_fingerprint},
                        {notes}
                 FROM rows r LEFT JOIN customers c ON c.customer_key = r.customer_key
                 WHERE r.state = 'done'
                 ORDER BY r.source_file, r.line",
            ))
            .map_err(sqlite)?;
        let rows = statement
            .query_map([], |row| {
                Ok(VerifyRow {
                    file: row.get(0)?,
                    line: row.get(1)?,
                    row_key: row.get(2)?,
                    customer_key: row.get(3)?,
                    customer_id: row.get(4)?,
                    customer_origin: row.get(5)?,
                    conversation_id: row.get(6)?,
                    fingerprint: row.get(7)?,
                    customer_fingerprint: row.get(8)?,
                    notes: row.get(9)?,
                })
            })
            .map_err(sqlite)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sqlite)
    }
}

/// A done row as `verify` reads it: where it came from, the ids it recorded, and what its
/// records were sent as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyRow {
    pub file: String,
    pub line: i64,
    pub row_key: String,
    pub customer_key: Option<String>,
    pub customer_id: Option<String>,
    /// `customers.state`: created, linked, reconciled (None: no line for the customer).
    pub customer_origin: Option<String>,
    /// None for a row that makes a customer only.
    pub conversation_id: Option<String>,
    /// The conversation's fingerprint (None: made by a version before fingerprints).
    pub fingerprint: Option<String>,
    pub customer_fingerprint: Option<String>,
    /// Notes of the row's history with their Kustomer ids.
    pub notes: i64,
}

/// One line of `export`, from a row of its query. A state or flag no version writes is
/// damage, never written out as it is.
fn export_row(row: &rusqlite::Row) -> rusqlite::Result<ExportRow> {
    let in_rows = |column| Stored {
        table: "rows",
        column,
        whose: || {
            format!(
                "the row {}",
                row.get_ref(2).map_or("?".into(), integrity::shown)
            )
        },
    };
    let customer = match row.get_ref(7)?.as_str_or_null()? {
        None | Some(CUSTOMER_SENT) => None,
        Some(_) => {
            let in_customers = Stored {
                table: "customers",
                column: "state",
                whose: || {
                    let key = row.get_ref(10).map_or("?".into(), integrity::shown);
                    format!("the customer {key}")
                },
            };
            let origin = in_customers.word(row, 7, RecordOrigin::parse)?;
            Some(origin.as_str().to_string())
        }
    };
    Ok(ExportRow {
        file: row.get(0)?,
        line: row.get(1)?,
        row_key: row.get(2)?,
        customer_external_id: row.get(3)?,
        customer_id: row.get(4)?,
        conversation_id: row.get(5)?,
        state: in_rows("state")
            .word(row, 6, RowState::parse)?
            .as_str()
            .to_string(),
        customer,
        error: row.get(8)?,
        outcome_unknown: in_rows("outcome_unknown").flag(row, 9)?,
        messages: row.get(11)?,
        notes: row.get(12)?,
        updated_at: row.get(13)?,
        tags_missing: row.get(14)?,
        company_id: row.get(15)?,
    })
}

/// Lines of a table in a state no version writes: damage, not a count to show as another.
fn unwritten_state(table: &str, state: &str, count: u64) -> rusqlite::Error {
    integrity::damaged_value(format!(
        "{table}.state is {state:?} in {count} lines of its {table} table, which no version \
         of kustomer-import writes"
    ))
}

/// Opens `path` read-only, and reads it once: SQLite opens lazily, and the first read is what
/// needs a WAL database's shared-memory file.
fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.query_row("PRAGMA schema_version", [], |_| Ok(()))?;
    Ok(connection)
}

/// Opens `path` with `immutable=1`: SQLite then takes no lock, needs no shared memory, and
/// ignores the WAL, reading the file as it is on disk.
fn open_immutable(path: &Path) -> rusqlite::Result<Connection> {
    let absolute = std::path::absolute(path)
        .map_err(|error| rusqlite::Error::InvalidPath(PathBuf::from(error.to_string())))?;
    let mut uri = url::Url::from_file_path(&absolute)
        .map_err(|()| rusqlite::Error::InvalidPath(absolute.clone()))?;
    uri.set_query(Some("immutable=1"));
    let connection = Connection::open_with_flags(
        uri.as_str(),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.query_row("PRAGMA schema_version", [], |_| Ok(()))?;
    Ok(connection)
}

/// Adds up reasons that are the same once quoted values are folded, most rows first.
fn fold_reasons(reasons: impl IntoIterator<Item = ReasonCount>) -> Vec<ReasonCount> {
    let mut folded: BTreeMap<String, u64> = BTreeMap::new();
    for reason in reasons {
        *folded.entry(fold_quoted(&reason.reason)).or_default() += reason.rows;
    }
    let mut reasons: Vec<ReasonCount> = folded
        .into_iter()
        .map(|(reason, rows)| ReasonCount { reason, rows })
        .collect();
    reasons.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| a.reason.cmp(&b.reason)));
    reasons
}

/// Fills in a finished run's request rate. A time no version writes is damage, not a run
/// without a rate.
fn with_rate(mut run: RunRecord) -> rusqlite::Result<RunRecord> {
    let time = |column, text: &str| {
        humantime::parse_rfc3339(text).map_err(|_| {
            let value = rusqlite::types::ValueRef::Text(text.as_bytes());
            integrity::unwritten_value("runs", column, &format!("the run {}", run.id), value)
        })
    };
    let started = time("started_at", &run.started_at)?;
    let ended = match &run.ended_at {
        Some(ended) => Some(time("ended_at", ended)?),
        None => None,
    };
    // A run that ended before it started (a clock set back) has no rate.
    let seconds = ended.and_then(|ended| ended.duration_since(started).ok());
    run.requests_per_minute = match (seconds, run.requests) {
        // Over less than a minute the rate would extrapolate the limiter's burst.
        (Some(seconds), Some(requests)) if seconds.as_secs() >= 60 => {
            Some((requests as f64 / seconds.as_secs_f64() * 60.0).round())
        }
        _ => None,
    };
    Ok(run)
}

/// Replaces each quoted value in a reason by `"…"`, so `"a@" is not an email address` and
/// `"b@" is not an email address` count as one reason.
fn fold_quoted(reason: &str) -> String {
    let mut folded = String::with_capacity(reason.len());
    let mut inside = false;
    for c in reason.chars() {
        if c == '"' {
            if !inside {
                folded.push_str("\"…\"");
            }
            inside = !inside;
        } else if !inside {
            folded.push(c);
        }
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of a checkpoint holding what `sql` writes (CHECK constraints off: values no
    /// version writes, as damage or a hand's edit would leave them).
    fn reader_of(dir: &tempfile::TempDir, sql: &str) -> CheckpointReader {
        let path = dir.path().join("c.sqlite");
        super::super::Checkpoint::open(&path)
            .unwrap()
            .connection
            .execute_batch(&format!("PRAGMA ignore_check_constraints = ON; {sql}"))
            .unwrap();
        CheckpointReader::open(&path).unwrap()
    }

    fn damage<T>(result: Result<T, CheckpointError>) -> String {
        match result {
            Err(CheckpointError::Damaged { reason, .. }) => reason,
            Err(other) => panic!("expected damage, got {other}"),
            Ok(_) => panic!("expected damage, got an answer"),
        }
    }

    /// What `status` and `export` say of a checkpoint holding what `sql` writes.
    fn damage_told(sql: &str) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let reader = reader_of(&dir, sql);
        let status = damage(reader.status());
        let export = damage(reader.export(StateFilter::All, |_| Ok::<_, ()>(())));
        (status, export)
    }

    /// What `status` says of a checkpoint holding what `sql` writes.
    fn status_damage(sql: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        damage(reader_of(&dir, sql).status())
    }

    const ROW: &str = "INSERT INTO rows (row_key, source_file, line, customer_key, state,
                                         updated_at, outcome_unknown)";

    #[test]
    fn a_row_state_or_flag_no_version_writes_is_damage_in_status_and_export() {
        let (status, export) = damage_told(&format!(
            "{ROW} VALUES ('conv:A', 'a.csv', 2, NULL, 'gone', 't', 0)"
        ));
        assert!(
            status.contains("state is \"gone\" in 1 rows of a.csv"),
            "{status}"
        );
        assert!(
            export.contains("rows.state of the row \"conv:A\" is \"gone\""),
            "{export}"
        );
        let (status, export) = damage_told(&format!(
            "{ROW} VALUES ('conv:A', 'a.csv', 2, NULL, 'failed', 't', 7)"
        ));
        assert!(
            status.contains("outcome_unknown is neither 0 nor 1 in 1 rows of a.csv"),
            "{status}"
        );
        assert!(
            export.contains("rows.outcome_unknown of the row \"conv:A\" is Integer(7)"),
            "{export}"
        );
    }

    #[test]
    fn a_customer_origin_no_version_writes_is_damage_in_status_and_export() {
        let (status, export) = damage_told(&format!(
            "{ROW} VALUES ('conv:A', 'a.csv', 2, 'ext:C1', 'done', 't', 0);
             INSERT INTO customers (customer_key, state, customer_id, updated_at)
             VALUES ('ext:C1', 'borrowed', 'c1', 't');"
        ));
        assert!(
            status.contains("customers.state is \"borrowed\" in 1 lines"),
            "{status}"
        );
        assert!(
            export.contains("customers.state of the customer \"ext:C1\" is \"borrowed\""),
            "{export}"
        );
    }

    #[test]
    fn a_bulk_job_state_or_a_run_time_no_version_writes_is_damage_in_status() {
        let status = status_damage(
            "INSERT INTO bulk_jobs (id, kind, state, items, created_at, updated_at)
             VALUES (1, 'customers', 'qeued', 0, 't', 't');",
        );
        assert!(
            status.contains("bulk_jobs.state is \"qeued\" in 1 lines"),
            "{status}"
        );
        let status = status_damage(
            "INSERT INTO runs (id, started_at, ended_at, pid, host, args)
             VALUES (4, '2026-12-01T10:00:00Z', 'teatime', 1, 'h', 'import');",
        );
        assert!(
            status.contains("runs.ended_at of the run 4 is \"teatime\""),
            "{status}"
        );
    }

    /// The header serde gives a line of `T`, as `export`'s CSV would have it.
    fn header_of<T: Serialize>(line: &T) -> Vec<String> {
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.serialize(line).unwrap();
        let text = String::from_utf8(csv.into_inner().unwrap()).unwrap();
        let header = text.lines().next().unwrap();
        header.split(',').map(str::to_string).collect()
    }

    #[test]
    fn each_exports_columns_are_its_fields_in_order() {
        let row = ExportRow {
            file: "a.csv".into(),
            line: 2,
            row_key: "k".into(),
            customer_external_id: None,
            customer_id: None,
            conversation_id: None,
            state: "done".into(),
            customer: None,
            error: None,
            outcome_unknown: false,
            messages: 0,
            notes: 0,
            updated_at: None,
            tags_missing: None,
            company_id: None,
        };
        assert_eq!(header_of(&row), ExportRow::COLUMNS);
        let agent = ExportAgent {
            agent: "a@x.io".into(),
            email: "a@x.io".into(),
            user_id: None,
            resolved_at: "t".into(),
        };
        assert_eq!(header_of(&agent), ExportAgent::COLUMNS);
        let company = ExportCompany {
            company_key: "ext:A".into(),
            external_id: "A".into(),
            name: "Acme".into(),
            company_id: None,
            company: "unknown".into(),
            updated_at: "t".into(),
        };
        assert_eq!(header_of(&company), ExportCompany::COLUMNS);
        let tag = ExportTag {
            name: "VIP".into(),
            tag_id: "t1".into(),
            origin: "listed".into(),
            listed_at: "t".into(),
        };
        assert_eq!(header_of(&tag), ExportTag::COLUMNS);
    }

    #[test]
    fn a_tag_origin_or_company_state_no_version_writes_is_damage_and_a_missing_table_none() {
        let dir = tempfile::tempdir().unwrap();
        let reader = reader_of(
            &dir,
            "INSERT INTO tags (name_key, name, tag_id, origin, listed_at)
             VALUES ('vip', 'VIP', 't1', 'guessed', 't');
             INSERT INTO companies (company_key, state, company_id, external_id, name,
                                    updated_at)
             VALUES ('ext:A', 'borrowed', 'co1', 'A', 'Acme', 't');",
        );
        let tags = damage(reader.export_tags(|_| Ok::<_, ()>(())));
        assert!(
            tags.contains("tags.origin of the tag \"vip\" is \"guessed\""),
            "{tags}"
        );
        let companies = damage(reader.export_companies(|_| Ok::<_, ()>(())));
        assert!(
            companies.contains("companies.state of the company \"ext:A\" is \"borrowed\""),
            "{companies}"
        );
        let dir = tempfile::tempdir().unwrap();
        let older = reader_of(&dir, "DROP TABLE agents;");
        assert_eq!(older.export_agents(|_| Ok::<_, ()>(())).unwrap(), Ok(0));
    }

    #[test]
    fn quoted_values_fold_together() {
        assert_eq!(
            fold_quoted(r#"emails[0].email: "x@" is not an email address"#),
            r#"emails[0].email: "…" is not an email address"#
        );
        assert_eq!(fold_quoted("no quotes"), "no quotes");
    }
}
