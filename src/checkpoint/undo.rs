//! What `undo` reads and writes in the checkpoint: which records a run (or every run) made,
//! chosen by `made_by_run` (migration 013); each delete's intent before its request and its
//! result after (`undo_deletes`); and the rows a delete frees, put back to `pending` with
//! their ids, fingerprints and history records cleared, so that the same import command
//! makes them again, once. A record's deletion and its rows' return to pending commit
//! together: a kill -9 between two deletes leaves nothing half undone, and the next undo
//! sends again only deletes whose result it had not recorded (a 404 then means gone).

use rusqlite::{OptionalExtension, params};

use super::{Checkpoint, CheckpointError, now_rfc3339};

/// Which runs' records an undo takes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UndoScope {
    /// The records one run made (`runs.id`).
    Run(i64),
    /// Everything the checkpoint says the import made, rows from before migration 013 too.
    All,
}

impl UndoScope {
    /// The run id a query compares `made_by_run` with; NULL for all.
    fn run(self) -> Option<i64> {
        match self {
            UndoScope::Run(id) => Some(id),
            UndoScope::All => None,
        }
    }
}

/// A customer the undo considers: one its runs made, or one its rows use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UndoCustomer {
    pub customer_key: String,
    pub customer_id: String,
    /// created, linked or reconciled.
    pub origin: String,
    pub made_by_run: Option<i64>,
    /// Rows outside the scope whose conversations this customer holds.
    pub used_elsewhere: i64,
}

/// A company a customer the undo considers belongs to: never deleted (the API has no
/// delete for companies), listed as kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UndoCompany {
    pub company_key: String,
    pub company_id: String,
    /// created, linked or reconciled.
    pub origin: String,
}

/// What the checkpoint says the scope made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UndoPlan {
    /// Conversation ids, each once, in file and line order of their first row.
    pub conversations: Vec<String>,
    pub customers: Vec<UndoCustomer>,
    pub companies: Vec<UndoCompany>,
}

/// Writes that have not settled: while any is there, undo cannot know everything that was
/// made (a create whose answer was not recorded), so it refuses to start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unsettled {
    pub rows: i64,
    pub customers: i64,
    pub records: i64,
    pub bulk_jobs: i64,
}

impl Unsettled {
    pub fn any(&self) -> bool {
        self.rows + self.customers + self.records + self.bulk_jobs > 0
    }
}

/// A delete an undo sent and whose result it did not record (it was killed, or the answer
/// and the confirming read were lost): the record may be gone or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsettledDelete {
    /// conversation or customer.
    pub kind: String,
    pub kustomer_id: String,
    /// The customer's key, while the checkpoint still holds its line.
    pub customer_key: Option<String>,
    /// It rides on a bulk delete job that may still run (submitting, queued or lost): a
    /// read that finds the record says nothing of what the job will do.
    pub job_may_run: bool,
    /// The command line of the undo that sent it.
    pub undo_command: String,
}

/// A bulk delete job an undo left: its line in `undo_jobs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteJob {
    pub id: i64,
    /// Kustomer's id for it, once its submit was answered.
    pub job_id: Option<String>,
}

/// What a row goes back to once its records are gone: pending, as if never sent.
const ROW_BACK_TO_PENDING: &str = "state = 'pending', customer_id = NULL, conversation_id = NULL,
    attempts = 0, field = NULL, last_error = NULL, outcome_unknown = 0, fingerprint = NULL,
    customer_fingerprint = NULL, synced_at = NULL, made_by_run = NULL";

impl Checkpoint {
    /// The API the checkpoint was written against, if it records one.
    pub fn recorded_target(&self) -> Result<Option<super::ApiTarget>, CheckpointError> {
        super::target::recorded_target(&self.connection).map_err(|e| self.sqlite(e))
    }

    /// Records the start of an undo: a line of `runs` of its own, marked as one.
    pub fn begin_undo(
        &self,
        args: &str,
        target: &super::ApiTarget,
    ) -> Result<i64, CheckpointError> {
        let id = self.begin_run(args, target)?;
        self.connection
            .execute("UPDATE runs SET command = 'undo' WHERE id = ?1", [id])
            .map_err(|e| self.sqlite(e))?;
        Ok(id)
    }

    /// Whether the run `id` is in the checkpoint.
    pub fn has_run(&self, id: i64) -> Result<bool, CheckpointError> {
        self.connection
            .query_row("SELECT count(*) > 0 FROM runs WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(|e| self.sqlite(e))
    }

    /// Intents whose outcome no run has recorded.
    pub fn unsettled(&self) -> Result<Unsettled, CheckpointError> {
        let count = |sql: &str| -> Result<i64, CheckpointError> {
            self.connection
                .query_row(sql, [], |r| r.get(0))
                .map_err(|e| self.sqlite(e))
        };
        Ok(Unsettled {
            rows: count(
                "SELECT count(*) FROM rows
                 WHERE state = 'customer_sent' OR state = 'conversation_sent'",
            )?,
            customers: count("SELECT count(*) FROM customers WHERE state = 'sent'")?,
            records: count("SELECT count(*) FROM records WHERE state = 'sent'")?,
            bulk_jobs: count(
                "SELECT count(*) FROM bulk_jobs WHERE state = 'submitting' OR state = 'queued'",
            )?,
        })
    }

    /// The conversations and customers `scope` made, with the customers its rows use.
    pub fn undo_plan(&self, scope: UndoScope) -> Result<UndoPlan, CheckpointError> {
        let run = scope.run();
        let conversations = self.rows_of(
            "SELECT conversation_id FROM rows
             WHERE conversation_id IS NOT NULL AND (?1 IS NULL OR made_by_run = ?1)
             GROUP BY conversation_id ORDER BY min(source_file), min(line)",
            [run],
            |r| r.get(0),
        )?;
        let customers = self.rows_of(
            "SELECT c.customer_key, c.customer_id, c.state, c.made_by_run,
                    (SELECT count(*) FROM rows o WHERE o.customer_key = c.customer_key
                       AND o.conversation_id IS NOT NULL
                       AND ?1 IS NOT NULL AND o.made_by_run IS NOT ?1)
             FROM customers c
             WHERE c.customer_id IS NOT NULL AND (?1 IS NULL OR c.made_by_run = ?1
                 OR EXISTS (SELECT 1 FROM rows r WHERE r.customer_key = c.customer_key
                            AND r.made_by_run = ?1))
             ORDER BY c.customer_key",
            [run],
            |r| {
                Ok(UndoCustomer {
                    customer_key: r.get(0)?,
                    customer_id: r.get(1)?,
                    origin: r.get(2)?,
                    made_by_run: r.get(3)?,
                    used_elsewhere: r.get(4)?,
                })
            },
        )?;
        Ok(UndoPlan {
            conversations,
            customers,
            companies: self.undo_companies(run)?,
        })
    }

    /// The companies of the customers `run` (None: every run) considers.
    fn undo_companies(&self, run: Option<i64>) -> Result<Vec<UndoCompany>, CheckpointError> {
        self.rows_of(
            "SELECT co.company_key, co.company_id, co.state FROM companies co
                 WHERE co.company_id IS NOT NULL AND EXISTS (
                     SELECT 1 FROM customers c
                     WHERE c.company_key = co.company_key AND c.customer_id IS NOT NULL
                       AND (?1 IS NULL OR c.made_by_run = ?1
                         OR EXISTS (SELECT 1 FROM rows r WHERE r.customer_key = c.customer_key
                                    AND r.made_by_run = ?1)))
                 ORDER BY co.company_key",
            [run],
            |r| {
                Ok(UndoCompany {
                    company_key: r.get(0)?,
                    company_id: r.get(1)?,
                    origin: r.get(2)?,
                })
            },
        )
    }

    /// Conversations the checkpoint still gives to rows of this customer (a customer is
    /// deleted only once none is left).
    pub fn conversations_of(&self, customer_key: &str) -> Result<i64, CheckpointError> {
        self.connection
            .query_row(
                "SELECT count(*) FROM rows WHERE customer_key = ?1 AND conversation_id IS NOT NULL",
                [customer_key],
                |r| r.get(0),
            )
            .map_err(|e| self.sqlite(e))
    }

    /// The delete's intent, before its request leaves; the previous result, if an earlier
    /// undo recorded one for the same record.
    pub fn delete_intent(
        &self,
        kind: &str,
        kustomer_id: &str,
        undo_run: i64,
    ) -> Result<Option<String>, CheckpointError> {
        let sqlite = |e| self.sqlite(e);
        let before: Option<String> = self
            .connection
            .query_row(
                "SELECT state FROM undo_deletes WHERE kind = ?1 AND kustomer_id = ?2",
                [kind, kustomer_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite)?;
        self.connection
            .execute(
                "INSERT INTO undo_deletes (kind, kustomer_id, state, run, updated_at)
                 VALUES (?1, ?2, 'sent', ?3, ?4)
                 ON CONFLICT (kind, kustomer_id) DO UPDATE SET state = 'sent',
                     run = excluded.run, last_error = NULL, updated_at = excluded.updated_at",
                params![kind, kustomer_id, undo_run, now_rfc3339()],
            )
            .map_err(sqlite)?;
        Ok(before)
    }

    /// The deletes whose result no undo recorded, conversations first (a customer is read
    /// back after the conversations its rows held).
    pub fn unsettled_deletes(&self) -> Result<Vec<UnsettledDelete>, CheckpointError> {
        self.rows_of(
            "SELECT d.kind, d.kustomer_id, c.customer_key,
                        j.state IS NOT NULL AND j.state != 'complete' AND j.state != 'refused',
                        coalesce((SELECT args FROM runs WHERE id = d.run), 'kustomer-import undo')
                 FROM undo_deletes d
                 LEFT JOIN customers c ON d.kind = 'customer' AND c.customer_id = d.kustomer_id
                 LEFT JOIN undo_jobs j ON j.id = d.job
                 WHERE d.state = 'sent' ORDER BY d.kind = 'customer', d.kustomer_id",
            [],
            |r| {
                Ok(UnsettledDelete {
                    kind: r.get(0)?,
                    kustomer_id: r.get(1)?,
                    customer_key: r.get(2)?,
                    job_may_run: r.get(3)?,
                    undo_command: r.get(4)?,
                })
            },
        )
    }

    /// A delete whose outcome is unknown (no answer, or no confirming read): the intent
    /// stays `sent` with the words, so the next undo or import reads the record back.
    pub fn delete_unknown(
        &self,
        kind: &str,
        kustomer_id: &str,
        reason: &str,
    ) -> Result<(), CheckpointError> {
        self.connection
            .execute(
                "UPDATE undo_deletes SET last_error = ?3, updated_at = ?4
                 WHERE kind = ?1 AND kustomer_id = ?2",
                params![kind, kustomer_id, reason, now_rfc3339()],
            )
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    /// An unsettled delete whose record reads back: it did not land, and the undo that sent
    /// it is over, so its intent is dropped (the record stays the import's, as before).
    pub fn delete_did_not_land(
        &self,
        kind: &str,
        kustomer_id: &str,
    ) -> Result<(), CheckpointError> {
        self.connection
            .execute(
                "DELETE FROM undo_deletes WHERE kind = ?1 AND kustomer_id = ?2 AND state = 'sent'",
                [kind, kustomer_id],
            )
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    /// A record confirmed gone that the checkpoint holds no line of (a customer whose line
    /// an earlier settle removed): only the result is recorded.
    pub fn delete_gone(&self, kind: &str, kustomer_id: &str) -> Result<(), CheckpointError> {
        gone(&self.connection, kind, kustomer_id).map_err(|e| self.sqlite(e))
    }

    /// A bulk delete job's intent, before its request leaves: its line, and each of its
    /// customers' (key, id) deletes `sent` naming it, in one commit. The job's line id.
    pub fn delete_job_intent(
        &mut self,
        customers: &[(String, String)],
        undo_run: i64,
    ) -> Result<i64, CheckpointError> {
        let path = self.path.clone();
        let sqlite = |e| CheckpointError::of_sqlite(&path, e);
        let now = now_rfc3339();
        let transaction = self.connection.transaction().map_err(sqlite)?;
        transaction
            .execute(
                "INSERT INTO undo_jobs (state, ids, run, created_at, updated_at)
                 VALUES ('submitting', ?1, ?2, ?3, ?3)",
                params![customers.len() as i64, undo_run, now],
            )
            .map_err(sqlite)?;
        let job = transaction.last_insert_rowid();
        for (_, id) in customers {
            transaction
                .execute(
                    "INSERT INTO undo_deletes (kind, kustomer_id, state, run, updated_at, job)
                     VALUES ('customer', ?1, 'sent', ?2, ?3, ?4)
                     ON CONFLICT (kind, kustomer_id) DO UPDATE SET state = 'sent',
                         run = excluded.run, last_error = NULL,
                         updated_at = excluded.updated_at, job = excluded.job",
                    params![id, undo_run, now, job],
                )
                .map_err(sqlite)?;
        }
        transaction.commit().map_err(sqlite)?;
        Ok(job)
    }

    /// A bulk delete job the API took: its id, so the next undo polls it if this one stops.
    pub fn delete_job_queued(&self, job: i64, job_id: &str) -> Result<(), CheckpointError> {
        self.connection
            .execute(
                "UPDATE undo_jobs SET state = 'queued', job_id = ?2, updated_at = ?3 WHERE id = ?1",
                params![job, job_id, now_rfc3339()],
            )
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    /// A bulk delete job's end: complete, refused or lost.
    pub fn delete_job_ended(&self, job: i64, state: &str) -> Result<(), CheckpointError> {
        self.connection
            .execute(
                "UPDATE undo_jobs SET state = ?2, updated_at = ?3 WHERE id = ?1",
                params![job, state, now_rfc3339()],
            )
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    /// The bulk delete jobs an earlier undo left submitting or queued.
    pub fn unfinished_delete_jobs(&self) -> Result<Vec<DeleteJob>, CheckpointError> {
        self.rows_of(
            "SELECT id, job_id FROM undo_jobs
                 WHERE state = 'submitting' OR state = 'queued' ORDER BY id",
            [],
            |r| {
                Ok(DeleteJob {
                    id: r.get(0)?,
                    job_id: r.get(1)?,
                })
            },
        )
    }

    /// The customers of a bulk delete job whose delete has no result yet: (key, id), the
    /// key empty when the checkpoint no longer holds the customer's line.
    pub fn delete_job_customers(&self, job: i64) -> Result<Vec<(String, String)>, CheckpointError> {
        self.rows_of(
            "SELECT coalesce(c.customer_key, ''), d.kustomer_id FROM undo_deletes d
                 LEFT JOIN customers c ON c.customer_id = d.kustomer_id
                 WHERE d.job = ?1 AND d.state = 'sent' ORDER BY d.kustomer_id",
            [job],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// A delete refused: recorded with the reason; the rows stay as they are.
    pub fn delete_failed(
        &self,
        kind: &str,
        kustomer_id: &str,
        reason: &str,
    ) -> Result<(), CheckpointError> {
        self.connection
            .execute(
                "UPDATE undo_deletes SET state = 'failed', last_error = ?3, updated_at = ?4
                 WHERE kind = ?1 AND kustomer_id = ?2",
                params![kind, kustomer_id, reason, now_rfc3339()],
            )
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    /// A conversation confirmed gone: its rows go back to pending and their history's
    /// records are cleared (the API deletes no message or note on its own: they went with
    /// the conversation), in one commit with the result. How many rows went back.
    pub fn conversation_gone(&mut self, conversation_id: &str) -> Result<usize, CheckpointError> {
        let path = self.path.clone();
        let sqlite = |e| CheckpointError::of_sqlite(&path, e);
        let transaction = self.connection.transaction().map_err(sqlite)?;
        transaction
            .execute(
                "DELETE FROM records WHERE row_key IN
                     (SELECT row_key FROM rows WHERE conversation_id = ?1)",
                [conversation_id],
            )
            .map_err(sqlite)?;
        let rows = transaction
            .execute(
                &format!("UPDATE rows SET {ROW_BACK_TO_PENDING} WHERE conversation_id = ?1"),
                [conversation_id],
            )
            .map_err(sqlite)?;
        gone(&transaction, "conversation", conversation_id).map_err(sqlite)?;
        transaction.commit().map_err(sqlite)?;
        Ok(rows)
    }

    /// A customer confirmed gone: its line in `customers` is removed (the next import makes
    /// it anew), and its rows without a conversation go back to pending, in one commit with
    /// the result. A failed row keeps its failure and loses the customer's id. How many
    /// rows went back.
    pub fn customer_gone(
        &mut self,
        customer_key: &str,
        customer_id: &str,
    ) -> Result<usize, CheckpointError> {
        let path = self.path.clone();
        let sqlite = |e| CheckpointError::of_sqlite(&path, e);
        let transaction = self.connection.transaction().map_err(sqlite)?;
        let rows = transaction
            .execute(
                &format!(
                    "UPDATE rows SET {ROW_BACK_TO_PENDING}
                     WHERE customer_key = ?1 AND conversation_id IS NULL
                       AND state != 'failed' AND state != 'pending'"
                ),
                [customer_key],
            )
            .map_err(sqlite)?;
        transaction
            .execute(
                "UPDATE rows SET customer_id = NULL, customer_fingerprint = NULL
                 WHERE customer_key = ?1 AND state = 'failed'",
                [customer_key],
            )
            .map_err(sqlite)?;
        transaction
            .execute(
                "DELETE FROM customers WHERE customer_key = ?1",
                [customer_key],
            )
            .map_err(sqlite)?;
        gone(&transaction, "customer", customer_id).map_err(sqlite)?;
        transaction.commit().map_err(sqlite)?;
        Ok(rows)
    }

    /// Marks the runs an undo took back whole: `scope`'s run, or every run before the undo.
    pub fn runs_undone(&self, scope: UndoScope, undo_run: i64) -> Result<(), CheckpointError> {
        self.connection
            .execute(
                "UPDATE runs SET undone_at = ?3
                 WHERE id < ?2 AND (?1 IS NULL OR id = ?1) AND undone_at IS NULL",
                params![scope.run(), undo_run, now_rfc3339()],
            )
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }
}

impl Checkpoint {
    /// Every row `sql` answers with `params`, each made a `T` by `map`.
    fn rows_of<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, CheckpointError> {
        let sqlite = |e| self.sqlite(e);
        let mut statement = self.connection.prepare(sql).map_err(sqlite)?;
        statement
            .query_map(params, map)
            .and_then(Iterator::collect)
            .map_err(sqlite)
    }
}

fn gone(connection: &rusqlite::Connection, kind: &str, id: &str) -> rusqlite::Result<()> {
    connection
        .execute(
            "UPDATE undo_deletes SET state = 'gone', last_error = NULL, updated_at = ?3
             WHERE kind = ?1 AND kustomer_id = ?2",
            params![kind, id, now_rfc3339()],
        )
        .map(drop)
}
