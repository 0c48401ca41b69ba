//! The single checkpoint writer: one thread, one connection, and every change of the run
//! sent to it in order over a channel. It commits whatever has queued up in one transaction
//! (group commit), so the fsync that makes an intent durable is shared by every worker that
//! was waiting at that moment.
//!
//! [`CheckpointWriter::commit`] waits until its changes are durable: intents go this way,
//! because a request may only leave once its intent survives a crash. [`CheckpointWriter::record`]
//! queues changes and returns: outcomes go this way, because losing one only means the
//! next run reconciles that row by lookup.

use std::path::PathBuf;

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::{BulkJobState, CheckpointError, RowState, integrity, now_rfc3339};
use crate::vocabulary::{BulkKind, RecordKind, RecordOrigin, StepState};

/// A change to one row. `None` fields keep what the checkpoint has.
#[derive(Clone, Debug)]
pub struct RowChange {
    pub row_key: String,
    pub source_file: String,
    pub line: u64,
    pub customer_key: Option<String>,
    pub conversation_external_id: Option<String>,
    pub state: RowState,
    pub customer_id: Option<String>,
    pub conversation_id: Option<String>,
    /// Requests sent for the row since the last change, added to its count.
    pub attempts: u32,
    /// The field a failure is about, and the reason (only for `failed`; cleared otherwise).
    pub field: Option<String>,
    pub error: Option<String>,
    /// With `failed`: the create may have landed all the same (see migration 003).
    pub outcome_unknown: bool,
    /// The checkpoint has no such row: the first write of a row no run has seen, inserted
    /// without first trying to update it where it is.
    pub unseen: bool,
}

impl RowChange {
    /// A change to `state` that keeps everything else the checkpoint holds of the row.
    pub fn new(row_key: String, source_file: String, line: u64, state: RowState) -> RowChange {
        RowChange {
            row_key,
            source_file,
            line,
            customer_key: None,
            conversation_external_id: None,
            state,
            customer_id: None,
            conversation_id: None,
            attempts: 0,
            field: None,
            error: None,
            outcome_unknown: false,
            unseen: false,
        }
    }
}

/// A change to one record of a conversation's history (a message or a note, see
/// migration 008): its intent (`Sent`), its id (`Done`) or its refusal (`Failed`).
#[derive(Clone, Debug, PartialEq)]
pub struct RecordChange {
    pub row_key: String,
    pub kind: RecordKind,
    pub external_id: String,
    /// Its place in the row's chain (0 and 1 are the customer and the conversation).
    pub position: u64,
    pub state: StepState,
    pub kustomer_id: Option<String>,
    pub origin: Option<RecordOrigin>,
    /// Requests sent for it since the last change, added to its count.
    pub attempts: u32,
    pub source_file: String,
    pub line: u64,
    /// With `Failed`: why (cleared otherwise).
    pub error: Option<String>,
    /// What its body is sent as (see `crate::fingerprint`); None keeps what is recorded
    /// (an item found after a lost answer keeps its intent's).
    pub fingerprint: Option<String>,
}

/// One change the writer applies.
#[derive(Clone, Debug)]
pub enum Change {
    Row(RowChange),
    Record(RecordChange),
    /// The intent to create a customer, with the values a lookup would find it by.
    CustomerSent {
        customer_key: String,
        external_id: Option<String>,
        email: Option<String>,
        phone: Option<String>,
    },
    CustomerResolved {
        customer_key: String,
        customer_id: String,
        origin: RecordOrigin,
    },
    /// The intent to create a company (see migration 015), with the externalId a lookup
    /// finds it by. Committed before the create leaves.
    CompanySent {
        company_key: String,
        external_id: String,
        name: String,
    },
    /// A company's id, and how it came to be.
    CompanyResolved {
        company_key: String,
        company_id: String,
        external_id: String,
        name: String,
        origin: RecordOrigin,
    },
    /// A company's create was refused for good: its intent is dropped.
    CompanyWithdrawn {
        company_key: String,
    },
    /// The customer (already recorded) belongs to the company: its updates carry the
    /// company's id.
    CustomerCompany {
        customer_key: String,
        company_key: String,
    },
    /// The create was refused for good (4xx, or the policy for existing customers): nothing
    /// was made, so the intent is dropped and the customer is no longer "unknown".
    CustomerWithdrawn {
        customer_key: String,
    },
    /// A bulk job about to be submitted, with the rows it carries (see migration 004).
    /// Committed with the rows' intents, before the request leaves.
    BulkJobSubmitting {
        job: i64,
        kind: BulkKind,
        items: Vec<BulkItem>,
    },
    /// The API took the job: its id, made durable before the job is polled.
    BulkJobQueued {
        job: i64,
        job_id: String,
    },
    /// What a row's conversation and customer were sent as (see `crate::fingerprint`),
    /// recorded when the row is done or updated; None leaves what is recorded. With a
    /// conversation's, the tag names it was sent without (a JSON list; None: none).
    Fingerprints {
        row_key: String,
        conversation: Option<String>,
        customer: Option<String>,
        tags_missing: Option<String>,
    },
    /// An update of the row's customer or conversation landed (a nightly sync): now is its
    /// `synced_at`.
    RowUpdated {
        row_key: String,
    },
    /// A done row's thread read again whole (see migration 019): what it was seen as when
    /// nothing was left to send for it, None when it was reported.
    ThreadSeen {
        row_key: String,
        seen: Option<i64>,
    },
    /// The job reached an end: complete, refused or lost (for a lost job, `updated_at` is
    /// when its answer was lost: the wait before its rows are looked up runs from then).
    BulkJobEnded {
        job: i64,
        state: BulkJobState,
    },
    /// A job an earlier run left without its submit's answer, waited out: lost as of when
    /// its request left (its `updated_at` is kept), so that a run soon after waits out only
    /// what is left of that time, not all of it again.
    BulkJobWaitedOut {
        job: i64,
    },
    /// Tags of the org as a listing or an append gave them (see migration 017): each kept
    /// under its name in lower case, replacing what was held under it (a tag this import
    /// made stays recorded as made).
    TagsKnown {
        tags: Vec<KnownTag>,
    },
    /// A source agent looked up by `email`: its user, None when the org has none.
    AgentResolved {
        agent: String,
        email: String,
        user_id: Option<String>,
    },
}

/// One tag of the org as [`Change::TagsKnown`] records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownTag {
    pub name: String,
    pub id: String,
    /// Made by an append of this import (`--create-missing-tags`).
    pub created: bool,
}

/// One item of a bulk job: the `_clientRef` it goes out with and what it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkItem {
    pub client_ref: String,
    pub row_key: String,
    /// In a customers job: the customer key the item creates.
    pub customer_key: Option<String>,
    /// In a job of messages or notes: the externalId of the record the item creates.
    pub record: Option<String>,
}

struct Batch {
    changes: Vec<Change>,
    done: Option<oneshot::Sender<Result<(), Failure>>>,
}

/// Why the writer stopped writing: told to every change that waits on it, and at the end.
#[derive(Clone, Debug)]
enum Failure {
    Damaged { path: PathBuf, reason: String },
    Write(String),
}

impl Failure {
    fn of(path: &std::path::Path, error: rusqlite::Error) -> Failure {
        if integrity::is_damage(&error) {
            Failure::Damaged {
                path: path.to_path_buf(),
                reason: integrity::damage_reason(&error),
            }
        } else {
            Failure::Write(error.to_string())
        }
    }
}

impl From<Failure> for CheckpointError {
    fn from(failure: Failure) -> CheckpointError {
        match failure {
            Failure::Damaged { path, reason } => CheckpointError::Damaged { path, reason },
            Failure::Write(message) => CheckpointError::Write(message),
        }
    }
}

/// The sending side of the writer; cheap to clone, one per worker.
#[derive(Clone)]
pub struct CheckpointWriter {
    sender: mpsc::Sender<Batch>,
}

/// Joins the writer thread once every [`CheckpointWriter`] is dropped.
pub struct WriterHandle {
    thread: std::thread::JoinHandle<Result<(), Failure>>,
}

impl WriterHandle {
    /// Waits for the writer to drain its queue; says whether every change was written.
    pub fn finish(self) -> Result<(), CheckpointError> {
        match self.thread.join() {
            Ok(result) => result.map_err(CheckpointError::from),
            Err(_) => Err(CheckpointError::Write("the writer thread panicked".into())),
        }
    }
}

/// Most changes applied in one transaction.
const MAX_BATCH: usize = 4096;

pub(super) fn start(mut connection: Connection, path: PathBuf) -> (CheckpointWriter, WriterHandle) {
    let (sender, mut receiver) = mpsc::channel::<Batch>(8192);
    let thread = std::thread::Builder::new()
        .name("checkpoint-writer".into())
        .spawn(move || {
            let mut failure: Option<Failure> = None;
            let mut pending: Vec<Batch> = Vec::new();
            while let Some(first) = receiver.blocking_recv() {
                pending.push(first);
                let mut count = pending[0].changes.len();
                while count < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(batch) => {
                            count += batch.changes.len();
                            pending.push(batch);
                        }
                        Err(_) => break,
                    }
                }
                if failure.is_none()
                    && let Err(error) = apply(&mut connection, &pending)
                {
                    failure = Some(Failure::of(&path, error));
                }
                for batch in pending.drain(..) {
                    if let Some(done) = batch.done {
                        let _ = done.send(match &failure {
                            None => Ok(()),
                            Some(error) => Err(error.clone()),
                        });
                    }
                }
            }
            failure.map_or(Ok(()), Err)
        })
        .expect("spawning the checkpoint writer thread");
    (CheckpointWriter { sender }, WriterHandle { thread })
}

impl CheckpointWriter {
    /// Writes `changes` and waits until they are durable.
    pub async fn commit(&self, changes: Vec<Change>) -> Result<(), CheckpointError> {
        let (done, wait) = oneshot::channel();
        self.sender
            .send(Batch {
                changes,
                done: Some(done),
            })
            .await
            .map_err(|_| CheckpointError::Write("the writer has stopped".into()))?;
        match wait.await {
            Ok(result) => result.map_err(CheckpointError::from),
            Err(_) => Err(CheckpointError::Write("the writer has stopped".into())),
        }
    }

    /// Queues `changes`, in order after everything queued before, without waiting.
    pub async fn record(&self, changes: Vec<Change>) -> Result<(), CheckpointError> {
        self.sender
            .send(Batch {
                changes,
                done: None,
            })
            .await
            .map_err(|_| CheckpointError::Write("the writer has stopped".into()))
    }
}

fn apply(connection: &mut Connection, batches: &[Batch]) -> rusqlite::Result<()> {
    let now = now_rfc3339();
    let transaction = connection.transaction()?;
    {
        let mut upsert_row = transaction.prepare_cached(
            "INSERT INTO rows (row_key, source_file, line, customer_key, conversation_external_id,
                               state, customer_id, conversation_id, attempts, field, last_error,
                               updated_at, outcome_unknown)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (row_key) DO UPDATE SET
                 source_file = excluded.source_file,
                 line = excluded.line,
                 customer_key = coalesce(excluded.customer_key, customer_key),
                 conversation_external_id =
                     coalesce(excluded.conversation_external_id, conversation_external_id),
                 state = excluded.state,
                 customer_id = coalesce(excluded.customer_id, customer_id),
                 conversation_id = coalesce(excluded.conversation_id, conversation_id),
                 attempts = attempts + excluded.attempts,
                 field = excluded.field,
                 last_error = excluded.last_error,
                 updated_at = excluded.updated_at,
                 outcome_unknown = excluded.outcome_unknown",
        )?;
        // The same change to a row already recorded at this file and line: most changes
        // are, and an UPDATE that leaves source_file and line out of its SET does not touch
        // their index, where the upsert tried an insert, then updated both b-trees. Its SET
        // is the upsert's DO UPDATE less those two: change one, change both.
        let mut update_row = transaction.prepare_cached(
            "UPDATE rows SET
                 customer_key = coalesce(?4, customer_key),
                 conversation_external_id = coalesce(?5, conversation_external_id),
                 state = ?6,
                 customer_id = coalesce(?7, customer_id),
                 conversation_id = coalesce(?8, conversation_id),
                 attempts = attempts + ?9,
                 field = ?10,
                 last_error = ?11,
                 updated_at = ?12,
                 outcome_unknown = ?13
             WHERE row_key = ?1 AND source_file = ?2 AND line = ?3",
        )?;
        let mut record = transaction.prepare_cached(
            "INSERT INTO records (row_key, kind, external_id, position, state, kustomer_id,
                                  origin, attempts, source_file, line, last_error, updated_at,
                                  fingerprint)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (row_key, kind, external_id) DO UPDATE SET
                 position = excluded.position,
                 state = excluded.state,
                 kustomer_id = coalesce(excluded.kustomer_id, kustomer_id),
                 origin = coalesce(excluded.origin, origin),
                 attempts = attempts + excluded.attempts,
                 source_file = excluded.source_file,
                 line = excluded.line,
                 last_error = excluded.last_error,
                 updated_at = excluded.updated_at,
                 fingerprint = coalesce(excluded.fingerprint, fingerprint)",
        )?;
        let mut customer_sent = transaction.prepare_cached(
            "INSERT INTO customers (customer_key, state, external_id, email, phone, updated_at)
             VALUES (?1, 'sent', ?2, ?3, ?4, ?5)
             ON CONFLICT (customer_key) DO UPDATE SET updated_at = excluded.updated_at
             WHERE customer_id IS NULL",
        )?;
        let mut customer_resolved = transaction.prepare_cached(
            "INSERT INTO customers (customer_key, state, customer_id, updated_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (customer_key) DO UPDATE SET
                 state = excluded.state, customer_id = excluded.customer_id,
                 updated_at = excluded.updated_at",
        )?;
        let mut company_sent = transaction.prepare_cached(
            "INSERT INTO companies (company_key, state, external_id, name, updated_at)
             VALUES (?1, 'sent', ?2, ?3, ?4)
             ON CONFLICT (company_key) DO UPDATE SET updated_at = excluded.updated_at
             WHERE company_id IS NULL",
        )?;
        let mut company_resolved = transaction.prepare_cached(
            "INSERT INTO companies (company_key, state, company_id, external_id, name, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (company_key) DO UPDATE SET
                 state = excluded.state, company_id = excluded.company_id,
                 updated_at = excluded.updated_at",
        )?;
        let mut company_withdrawn = transaction.prepare_cached(
            "DELETE FROM companies WHERE company_key = ?1 AND company_id IS NULL",
        )?;
        let mut customer_company = transaction
            .prepare_cached("UPDATE customers SET company_key = ?2 WHERE customer_key = ?1")?;
        let mut fingerprints = transaction.prepare_cached(
            "UPDATE rows SET fingerprint = coalesce(?2, fingerprint),
                 customer_fingerprint = coalesce(?3, customer_fingerprint),
                 tags_missing = CASE WHEN ?2 IS NULL THEN tags_missing ELSE ?4 END
             WHERE row_key = ?1",
        )?;
        let mut row_updated =
            transaction.prepare_cached("UPDATE rows SET synced_at = ?2 WHERE row_key = ?1")?;
        let mut thread_seen =
            transaction.prepare_cached("UPDATE rows SET thread_seen = ?2 WHERE row_key = ?1")?;
        let mut customer_withdrawn = transaction.prepare_cached(
            "DELETE FROM customers WHERE customer_key = ?1 AND customer_id IS NULL",
        )?;
        let mut job_submitting = transaction.prepare_cached(
            "INSERT INTO bulk_jobs (id, kind, state, items, created_at, updated_at)
             VALUES (?1, ?2, 'submitting', ?3, ?4, ?4)",
        )?;
        let mut job_item = transaction.prepare_cached(
            "INSERT INTO bulk_items (job, client_ref, row_key, customer_key, record)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut job_queued = transaction.prepare_cached(
            "UPDATE bulk_jobs SET job_id = ?2, state = 'queued', updated_at = ?3 WHERE id = ?1",
        )?;
        let mut job_ended = transaction
            .prepare_cached("UPDATE bulk_jobs SET state = ?2, updated_at = ?3 WHERE id = ?1")?;
        let mut job_waited_out = transaction.prepare_cached(
            "UPDATE bulk_jobs SET state = 'lost' WHERE id = ?1 AND state = 'submitting'",
        )?;

        let mut agent_resolved = transaction.prepare_cached(
            "INSERT INTO agents (agent, email, user_id, resolved_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (agent) DO UPDATE SET email = excluded.email,
                 user_id = excluded.user_id, resolved_at = excluded.resolved_at",
        )?;

        let mut tag_known = transaction.prepare_cached(
            "INSERT INTO tags (name_key, name, tag_id, origin, listed_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name_key) DO UPDATE SET name = excluded.name,
                 tag_id = excluded.tag_id, listed_at = excluded.listed_at,
                 origin = CASE WHEN tags.tag_id = excluded.tag_id AND tags.origin = 'created'
                     THEN 'created' ELSE excluded.origin END",
        )?;

        for change in batches.iter().flat_map(|batch| &batch.changes) {
            match change {
                Change::Row(row) => {
                    let values = params![
                        row.row_key,
                        row.source_file,
                        row.line as i64,
                        row.customer_key,
                        row.conversation_external_id,
                        row.state.as_str(),
                        row.customer_id,
                        row.conversation_id,
                        row.attempts,
                        row.field,
                        row.error,
                        now,
                        row.outcome_unknown,
                    ];
                    if row.unseen || update_row.execute(values)? == 0 {
                        upsert_row.execute(values)?;
                    }
                }
                Change::Record(change) => {
                    record.execute(params![
                        change.row_key,
                        change.kind.as_str(),
                        change.external_id,
                        change.position as i64,
                        change.state.as_str(),
                        change.kustomer_id,
                        change.origin.map(RecordOrigin::as_str),
                        change.attempts,
                        change.source_file,
                        change.line as i64,
                        change.error,
                        now,
                        change.fingerprint,
                    ])?;
                }
                Change::CustomerSent {
                    customer_key,
                    external_id,
                    email,
                    phone,
                } => {
                    customer_sent.execute(params![customer_key, external_id, email, phone, now])?;
                }
                Change::CompanySent {
                    company_key,
                    external_id,
                    name,
                } => {
                    company_sent.execute(params![company_key, external_id, name, now])?;
                }
                Change::CompanyResolved {
                    company_key,
                    company_id,
                    external_id,
                    name,
                    origin,
                } => {
                    company_resolved.execute(params![
                        company_key,
                        origin.as_str(),
                        company_id,
                        external_id,
                        name,
                        now
                    ])?;
                }
                Change::CompanyWithdrawn { company_key } => {
                    company_withdrawn.execute([company_key])?;
                }
                Change::CustomerCompany {
                    customer_key,
                    company_key,
                } => {
                    customer_company.execute([customer_key, company_key])?;
                }
                Change::CustomerWithdrawn { customer_key } => {
                    customer_withdrawn.execute([customer_key])?;
                }
                Change::BulkJobSubmitting { job, kind, items } => {
                    job_submitting.execute(params![job, kind.as_str(), items.len() as i64, now])?;
                    for item in items {
                        job_item.execute(params![
                            job,
                            item.client_ref,
                            item.row_key,
                            item.customer_key,
                            item.record
                        ])?;
                    }
                }
                Change::Fingerprints {
                    row_key,
                    conversation,
                    customer,
                    tags_missing,
                } => {
                    fingerprints.execute(params![row_key, conversation, customer, tags_missing])?;
                }
                Change::RowUpdated { row_key } => {
                    row_updated.execute(params![row_key, now])?;
                }
                Change::ThreadSeen { row_key, seen } => {
                    thread_seen.execute(params![row_key, seen])?;
                }
                Change::BulkJobQueued { job, job_id } => {
                    job_queued.execute(params![job, job_id, now])?;
                }
                Change::BulkJobEnded { job, state } => {
                    job_ended.execute(params![job, state.as_str(), now])?;
                }
                Change::BulkJobWaitedOut { job } => {
                    job_waited_out.execute([job])?;
                }
                Change::AgentResolved {
                    agent,
                    email,
                    user_id,
                } => {
                    agent_resolved.execute(params![agent, email, user_id, now])?;
                }
                Change::TagsKnown { tags } => {
                    for tag in tags {
                        let origin = if tag.created { "created" } else { "listed" };
                        let key = tag.name.to_lowercase();
                        tag_known.execute(params![key, tag.name, tag.id, origin, now])?;
                    }
                }

                Change::CustomerResolved {
                    customer_key,
                    customer_id,
                    origin,
                } => {
                    customer_resolved.execute(params![
                        customer_key,
                        origin.as_str(),
                        customer_id,
                        now
                    ])?;
                }
            }
        }
    }
    transaction.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;

    fn row(key: &str, state: RowState) -> RowChange {
        RowChange {
            row_key: key.into(),
            source_file: "f.csv".into(),
            line: 2,
            customer_key: Some("ext:1".into()),
            conversation_external_id: None,
            state,
            customer_id: None,
            conversation_id: None,
            attempts: 1,
            field: None,
            error: None,
            outcome_unknown: false,
            unseen: false,
        }
    }

    #[tokio::test]
    async fn changes_are_applied_in_order_and_ids_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(&dir.path().join("c.sqlite")).unwrap();
        let (writer, handle) = checkpoint.start_writer().unwrap();
        let mut ok = row("r1", RowState::CustomerOk);
        ok.customer_id = Some("cust".into());
        writer
            .commit(vec![
                Change::Row(row("r1", RowState::CustomerSent)),
                Change::Row(ok),
            ])
            .await
            .unwrap();
        let mut done = row("r1", RowState::Done);
        done.conversation_id = Some("conv".into());
        writer.record(vec![Change::Row(done)]).await.unwrap();
        drop(writer);
        handle.finish().unwrap();
        let stored = checkpoint.row("r1").unwrap().unwrap();
        assert_eq!(stored.state, RowState::Done);
        assert_eq!(stored.customer_id.as_deref(), Some("cust"));
        assert_eq!(stored.conversation_id.as_deref(), Some("conv"));
    }

    #[tokio::test]
    async fn a_row_found_at_another_file_and_line_moves_there_and_keeps_its_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(&dir.path().join("c.sqlite")).unwrap();
        let (writer, handle) = checkpoint.start_writer().unwrap();
        let mut moved = row("r1", RowState::CustomerSent);
        (moved.source_file, moved.line) = ("g.csv".into(), 7);
        let mut sent = moved.clone();
        sent.state = RowState::ConversationSent;
        sent.customer_key = None;
        writer
            .commit(vec![
                Change::Row(row("r1", RowState::Pending)),
                Change::Row(moved),
                Change::Row(sent),
            ])
            .await
            .unwrap();
        drop(writer);
        handle.finish().unwrap();
        let (file, line, state, customer_key, attempts): (String, i64, String, String, i64) =
            checkpoint
                .connection
                .query_row(
                    "SELECT source_file, line, state, customer_key, attempts FROM rows
                     WHERE row_key = 'r1'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .unwrap();
        assert_eq!((file.as_str(), line), ("g.csv", 7));
        assert_eq!(state, "conversation_sent");
        assert_eq!(
            customer_key, "ext:1",
            "a change without a customer key keeps it"
        );
        assert_eq!(attempts, 3);
    }

    #[tokio::test]
    async fn a_write_that_meets_a_damaged_page_is_damage_not_a_write_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        {
            let checkpoint = Checkpoint::open(&path).unwrap();
            let (writer, handle) = checkpoint.start_writer().unwrap();
            writer
                .commit(vec![Change::Row(row("r1", RowState::Pending))])
                .await
                .unwrap();
            drop(writer);
            handle.finish().unwrap();
        }
        // The rows table's root page gets a header no b-tree page has.
        let (root, page_size): (i64, i64) = {
            let connection = Connection::open(&path).unwrap();
            let root = connection
                .query_row(
                    "SELECT rootpage FROM sqlite_master WHERE name = 'rows'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            let page_size = connection
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap();
            (root, page_size)
        };
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[((root - 1) * page_size) as usize..][..16].fill(0xff);
        std::fs::write(&path, bytes).unwrap();

        let checkpoint = Checkpoint::open(&path).unwrap();
        let (writer, handle) = checkpoint.start_writer().unwrap();
        let written = writer
            .commit(vec![Change::Row(row("r1", RowState::CustomerSent))])
            .await;
        assert!(
            matches!(written, Err(CheckpointError::Damaged { .. })),
            "{written:?}"
        );
        drop(writer);
        assert!(matches!(
            handle.finish(),
            Err(CheckpointError::Damaged { .. })
        ));
    }

    #[tokio::test]
    async fn a_customer_intent_never_overwrites_a_known_id() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(&dir.path().join("c.sqlite")).unwrap();
        let (writer, handle) = checkpoint.start_writer().unwrap();
        let sent = || Change::CustomerSent {
            customer_key: "ext:1".into(),
            external_id: Some("1".into()),
            email: None,
            phone: None,
        };
        writer.commit(vec![sent()]).await.unwrap();
        assert_eq!(
            checkpoint.customer("ext:1").unwrap().unwrap().customer_id,
            None
        );
        writer
            .commit(vec![
                Change::CustomerResolved {
                    customer_key: "ext:1".into(),
                    customer_id: "c1".into(),
                    origin: RecordOrigin::Created,
                },
                sent(),
            ])
            .await
            .unwrap();
        drop(writer);
        handle.finish().unwrap();
        assert_eq!(
            checkpoint
                .customer("ext:1")
                .unwrap()
                .unwrap()
                .customer_id
                .as_deref(),
            Some("c1")
        );
    }

    fn record(external_id: &str, position: u64, state: StepState) -> Change {
        Change::Record(RecordChange {
            row_key: "r1".into(),
            kind: RecordKind::Message,
            external_id: external_id.into(),
            position,
            state,
            kustomer_id: (state == StepState::Done).then(|| format!("id-{external_id}")),
            origin: (state == StepState::Done).then_some(RecordOrigin::Created),
            attempts: 1,
            source_file: "f.jsonl".into(),
            line: 2,
            error: None,
            fingerprint: None,
        })
    }

    #[tokio::test]
    async fn a_history_record_goes_from_intent_to_id_and_every_step_shows_in_one_view() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(&dir.path().join("c.sqlite")).unwrap();
        let (writer, handle) = checkpoint.start_writer().unwrap();
        let mut made = row("r1", RowState::ConversationOk);
        made.customer_id = Some("c1".into());
        made.conversation_id = Some("v1".into());
        made.conversation_external_id = Some("T-1".into());
        writer
            .commit(vec![
                Change::Row(made),
                record("m1", 2, StepState::Sent),
                record("m2", 3, StepState::Sent),
            ])
            .await
            .unwrap();
        writer
            .commit(vec![record("m1", 2, StepState::Done)])
            .await
            .unwrap();
        let records = checkpoint.records_of("r1").unwrap();
        let states: Vec<(&str, StepState, Option<&str>)> = records
            .iter()
            .map(|r| (r.external_id.as_str(), r.state, r.kustomer_id.as_deref()))
            .collect();
        assert_eq!(
            states,
            [
                ("m1", StepState::Done, Some("id-m1")),
                ("m2", StepState::Sent, None)
            ]
        );
        drop(writer);
        handle.finish().unwrap();
        let connection = rusqlite::Connection::open(checkpoint.path()).unwrap();
        let steps: Vec<(i64, String, String)> = connection
            .prepare(
                "SELECT position, kind, state FROM steps WHERE row_key = 'r1' ORDER BY position",
            )
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected = [
            (0, "customer", "done"),
            (1, "conversation", "done"),
            (2, "message", "done"),
            (3, "message", "sent"),
        ];
        assert_eq!(
            steps,
            expected.map(|(p, k, s)| (p, k.to_string(), s.to_string()))
        );
    }
}
