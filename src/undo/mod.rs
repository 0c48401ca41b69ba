//! `undo`: deletes what the checkpoint says a run (or every run) of the import made, and
//! puts its rows back to pending so the same import command makes them again, once.
//!
//! Decisions, in one place (README, "Rehearse, check, undo", says the same):
//! - What a run made is `made_by_run` (migration 013): the run that recorded a row's
//!   conversation id or a customer's id as created. Records of runs before that migration
//!   carry none and are undone by `--all` only.
//! - Conversations go first, one by one (the API has no bulk delete of conversations), then
//!   customers (whether deleting a customer deletes its conversations is unknown, so none
//!   is deleted while the checkpoint still gives it a conversation). Messages and notes
//!   have no delete in the API: they go with their conversation, and their records in the
//!   checkpoint are cleared with it. With [`UndoMode::Bulk`] the customers go in bulk
//!   delete jobs, each customer read back after its job (`undo/bulk.rs`).
//! - A customer is deleted only when the import created it (`created`) in the scope and no
//!   row outside the scope still holds a conversation of it. A `linked` customer (already in
//!   Kustomer) is never deleted; a `reconciled` one (found by lookup after a lost answer) is
//!   kept too: a lookup cannot tell our create from a customer that was there before, and
//!   the read-back `createdAt` cannot either, since an import may send `createdAt` itself.
//!   Each kept customer is reported with its reason.
//! - Each delete's intent is recorded before it is sent and its result after; a 2xx is
//!   confirmed by a read that answers 404, a 404 to the delete counts as gone (a delete sent
//!   again after a lost answer). A refusal (a customer the API will not delete: the sandbox
//!   answers 409 while it holds conversations the import did not make) is recorded with
//!   the server's words and counted failed; the run goes on. A delete with no answer past
//!   the retries, or no confirming read, is counted failed but left `sent`: it may have
//!   landed.
//! - A `sent` delete (an undo killed midway, or an unknown outcome) is settled before an
//!   import uses the checkpoint's ids ([`settle_unfinished`]): read back, a record gone is
//!   recorded as the undo records it, so no conversation is linked to a deleted customer.

use std::sync::Mutex;

use futures_util::StreamExt;
use serde::Serialize;

use crate::api::delete::Deleted;
use crate::api::{ApiError, Backoff, KustomerClient};
use crate::checkpoint::undo::{UndoCustomer, UndoPlan, UndoScope};
use crate::checkpoint::{Checkpoint, CheckpointError};

mod bulk;

/// Deletes in flight at once: the rate gate sets the pace, this only hides latency.
const IN_FLIGHT: usize = 8;
/// Transient failures one request may meet before its record counts as failed.
const MAX_RETRIES: u32 = 5;

/// What undo would do with a customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delete,
    Keep(String),
}

/// Whether a customer the plan names is deleted, and if not, why.
pub fn verdict(customer: &UndoCustomer, scope: UndoScope) -> Verdict {
    match customer.origin.as_str() {
        "linked" => {
            Verdict::Keep("linked: it was in Kustomer before the import, which only used it".into())
        }
        "reconciled" => Verdict::Keep(
            "reconciled: found by lookup after a lost answer, it may have been in Kustomer \
             before the import (delete it by hand if it is the import's)"
                .into(),
        ),
        _ => match (scope, customer.made_by_run) {
            (UndoScope::Run(run), made) if made != Some(run) => Verdict::Keep(match made {
                Some(other) => format!("made by run {other}, not the run undone"),
                None => "made before runs were recorded (undo it with --all)".into(),
            }),
            _ if customer.used_elsewhere > 0 => Verdict::Keep(format!(
                "still used by {} row(s) of other runs",
                customer.used_elsewhere
            )),
            _ => Verdict::Delete,
        },
    }
}

/// A record undo leaves, and why.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Kept {
    pub record: &'static str,
    pub id: String,
    pub customer_key: String,
    /// created, linked or reconciled.
    pub origin: String,
    pub reason: String,
}

/// A record undo could not delete.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Failure {
    pub record: &'static str,
    pub id: String,
    pub reason: String,
}

/// A company undo keeps: every one (the API has no delete for companies).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct KeptCompany {
    pub id: String,
    pub company_key: String,
    /// created, linked or reconciled: how the import came to hold it.
    pub origin: String,
}

/// Why undo keeps every company, in the report's words.
pub const COMPANIES_KEPT: &str = "undo never deletes a company: the API has no delete for \
     companies, and the same import links its customers to them again";

/// What a plan deletes and keeps, before anything is sent.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Selection {
    pub conversations: Vec<String>,
    /// (customer key, customer id).
    pub customers: Vec<(String, String)>,
    /// Customers kept, each with its reason.
    pub kept: Vec<Kept>,
    /// The companies of the customers considered, all kept ([`COMPANIES_KEPT`]).
    pub kept_companies: Vec<KeptCompany>,
}

impl Selection {
    /// Kept customers that were linked (in Kustomer before the import).
    pub fn kept_linked(&self) -> usize {
        self.kept
            .iter()
            .filter(|kept| kept.origin == "linked")
            .count()
    }
}

/// The plan, sorted into deletes and keeps.
pub fn select(plan: UndoPlan, scope: UndoScope) -> Selection {
    let mut selection = Selection {
        conversations: plan.conversations,
        kept_companies: plan
            .companies
            .into_iter()
            .map(|company| KeptCompany {
                id: company.company_id,
                company_key: company.company_key,
                origin: company.origin,
            })
            .collect(),
        ..Selection::default()
    };
    for customer in plan.customers {
        match verdict(&customer, scope) {
            Verdict::Delete => selection
                .customers
                .push((customer.customer_key, customer.customer_id)),
            Verdict::Keep(reason) => selection.kept.push(Kept {
                record: "customer",
                id: customer.customer_id,
                customer_key: customer.customer_key,
                origin: customer.origin,
                reason,
            }),
        }
    }
    selection
}

/// Deleted now, found gone already, or failed: per kind of record.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub deleted: u64,
    pub already_gone: u64,
    pub failed: u64,
}

/// What an undo did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Undone {
    pub conversations: Counts,
    pub customers: Counts,
    pub failures: Vec<Failure>,
    /// Rows put back to pending.
    pub rows_pending_again: u64,
}

impl Undone {
    pub fn all_gone(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Undo stopped before the end: the key was refused, or the API cannot be reached, or the
/// checkpoint could not be written. What is recorded stands; the same command resumes.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("{0}")]
    Api(ApiError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// An unfinished undo's bulk delete job may still run: reading its customers back
    /// says nothing of what it will delete.
    #[error(
        "an undo stopped while a bulk delete job of its customers may still run: which \
         customers it deletes is not known yet, and an import now could link conversations to \
         them. Finish the undo first (`{command}`; it polls the job and reads its customers \
         back), then import"
    )]
    JobMayRun { command: String },
    /// An unfinished undo's delete whose record could not be read back.
    #[error(
        "an unfinished undo deleted {record} {id} or not, and it cannot be read back ({reason}): \
         run `kustomer-import undo` again to finish it, or this command once the API answers"
    )]
    Unreadable {
        record: &'static str,
        id: String,
        reason: String,
    },
}

/// Kinds of record, as `undo_deletes.kind` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Conversation,
    Customer,
}

impl Kind {
    /// The kind `undo_deletes.kind` names (its CHECK allows these two only).
    fn named(kind: &str) -> Kind {
        if kind == "customer" {
            Kind::Customer
        } else {
            Kind::Conversation
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Conversation => "conversation",
            Kind::Customer => "customer",
        }
    }
}

/// How one delete ended.
enum Ended {
    Gone(Deleted),
    /// Not deleted (refused, or still there after the delete was answered).
    Failed(String),
    /// Not known: no answer past the retries, or no confirming read. Left `sent`.
    Unknown(String),
}

/// Why a request gave no usable answer for its record.
enum Missed {
    /// The API refused it (4xx): its words.
    Refused(String),
    /// Transient failures past the retries: a delete may have landed.
    NoAnswer(String),
}

/// Deletes the selection's conversations, then its customers, recording each; `undo_run`
/// is the undo's own line in `runs`.
pub async fn undo(
    client: &KustomerClient,
    checkpoint: &mut Checkpoint,
    selection: &Selection,
    undo_run: i64,
    mode: UndoMode,
) -> Result<Undone, Stopped> {
    let checkpoint = Mutex::new(checkpoint);
    let undone = Mutex::new(Undone::default());
    // In every mode: a job an earlier undo left must be settled before its customers'
    // deletes are sent again.
    bulk::finish_earlier_jobs(client, &checkpoint, &undone).await?;
    let conversations = selection
        .conversations
        .iter()
        .map(|id| (Kind::Conversation, String::new(), id.clone()));
    run_deletes(client, &checkpoint, &undone, undo_run, conversations).await?;
    if mode.in_bulk(selection.customers.len()) {
        bulk::delete_customers(client, &checkpoint, &undone, undo_run, &selection.customers)
            .await?;
    } else {
        let customers = selection
            .customers
            .iter()
            .map(|(key, id)| (Kind::Customer, key.clone(), id.clone()));
        run_deletes(client, &checkpoint, &undone, undo_run, customers).await?;
    }
    Ok(undone.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// How undo deletes customers (conversations go one by one in every mode: the docs name no
/// bulk delete of conversations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UndoMode {
    /// `DELETE /v1/customers/{id}` each, and a confirming read: two requests a customer.
    Single,
    /// `DELETE /v1/customers/bulk?ids=`, up to 100 a job, then a read of each.
    Bulk,
    /// Bulk from [`AUTO_BULK_FROM`] customers, single below.
    Auto,
}

/// Customers from which `--mode auto` deletes in bulk: a job costs its submit, its polls
/// and a read per customer, against two requests a customer one by one.
pub const AUTO_BULK_FROM: usize = 3;

impl UndoMode {
    fn in_bulk(self, customers: usize) -> bool {
        match self {
            UndoMode::Single => false,
            UndoMode::Bulk => true,
            UndoMode::Auto => customers >= AUTO_BULK_FROM,
        }
    }
}

/// What settling an unfinished undo found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Read back 404: gone, recorded as the undo would have, their rows pending again.
    pub gone: u64,
    /// Still there: the delete did not land, and the record stays the import's.
    pub still_there: u64,
    pub rows_pending_again: u64,
}

/// Settles the deletes an undo sent and recorded no result of (killed mid-request, or its
/// answers lost), before an import uses the checkpoint's ids: each record is read back; one
/// that is gone is recorded gone as the undo records it (its rows pending, a customer's
/// line removed, so the import makes it anew and never links to it), one still there has
/// its intent dropped. Err when a record cannot be read back: the import must not start.
pub async fn settle_unfinished(
    client: &KustomerClient,
    checkpoint: &mut Checkpoint,
) -> Result<Settled, Stopped> {
    let mut settled = Settled::default();
    let deletes = checkpoint.unsettled_deletes()?;
    if let Some(waiting) = deletes.iter().find(|d| d.job_may_run) {
        return Err(Stopped::JobMayRun {
            command: waiting.undo_command.clone(),
        });
    }
    for delete in deletes {
        let kind = Kind::named(&delete.kind);
        let id = delete.kustomer_id.as_str();
        match still_there(client, kind, id).await? {
            Ok(true) => {
                checkpoint.delete_did_not_land(kind.as_str(), id)?;
                settled.still_there += 1;
            }
            Ok(false) => {
                let rows = match (kind, &delete.customer_key) {
                    (Kind::Conversation, _) => checkpoint.conversation_gone(id)?,
                    (Kind::Customer, Some(key)) => checkpoint.customer_gone(key, id)?,
                    (Kind::Customer, None) => {
                        checkpoint.delete_gone(kind.as_str(), id).map(|()| 0)?
                    }
                };
                settled.gone += 1;
                settled.rows_pending_again += rows as u64;
            }
            Err(Missed::Refused(reason) | Missed::NoAnswer(reason)) => {
                return Err(Stopped::Unreadable {
                    record: kind.as_str(),
                    id: id.to_string(),
                    reason,
                });
            }
        }
    }
    Ok(settled)
}

async fn run_deletes(
    client: &KustomerClient,
    checkpoint: &Mutex<&mut Checkpoint>,
    undone: &Mutex<Undone>,
    undo_run: i64,
    deletes: impl Iterator<Item = (Kind, String, String)>,
) -> Result<(), Stopped> {
    let mut results = futures_util::stream::iter(deletes.map(|(kind, key, id)| async move {
        one_delete(client, checkpoint, undone, undo_run, kind, &key, &id).await
    }))
    .buffer_unordered(IN_FLIGHT);
    while let Some(result) = results.next().await {
        result?;
    }
    Ok(())
}

/// One record: intent, delete (with its confirming read), result.
async fn one_delete(
    client: &KustomerClient,
    checkpoint: &Mutex<&mut Checkpoint>,
    undone: &Mutex<Undone>,
    undo_run: i64,
    kind: Kind,
    customer_key: &str,
    id: &str,
) -> Result<(), Stopped> {
    let lock = || checkpoint.lock().unwrap_or_else(|e| e.into_inner());
    if kind == Kind::Customer && holds_conversations(checkpoint, undone, customer_key, id)? {
        return Ok(());
    }
    lock().delete_intent(kind.as_str(), id, undo_run)?;
    let ended = delete_and_confirm(client, kind, id).await?;
    let mut undone = undone.lock().unwrap_or_else(|e| e.into_inner());
    let counts = match kind {
        Kind::Conversation => &mut undone.conversations,
        Kind::Customer => &mut undone.customers,
    };
    match ended {
        Ended::Gone(how) => {
            match how {
                Deleted::Now => counts.deleted += 1,
                Deleted::AlreadyGone => counts.already_gone += 1,
            }
            let rows = match kind {
                Kind::Conversation => lock().conversation_gone(id)?,
                Kind::Customer => lock().customer_gone(customer_key, id)?,
            };
            undone.rows_pending_again += rows as u64;
        }
        Ended::Failed(reason) => {
            counts.failed += 1;
            lock().delete_failed(kind.as_str(), id, &reason)?;
            undone.failures.push(Failure {
                record: kind.as_str(),
                id: id.to_string(),
                reason,
            });
        }
        Ended::Unknown(reason) => {
            counts.failed += 1;
            lock().delete_unknown(kind.as_str(), id, &reason)?;
            undone.failures.push(Failure {
                record: kind.as_str(),
                id: id.to_string(),
                reason: format!(
                    "{reason}: whether it is gone is not known (the next undo or import reads \
                     it back)"
                ),
            });
        }
    }
    Ok(())
}

/// Whether the checkpoint still gives the customer conversations (ones whose delete
/// failed): then it is not deleted, and its failure is recorded.
fn holds_conversations(
    checkpoint: &Mutex<&mut Checkpoint>,
    undone: &Mutex<Undone>,
    customer_key: &str,
    id: &str,
) -> Result<bool, Stopped> {
    let left = checkpoint
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .conversations_of(customer_key)?;
    if left > 0 {
        let reason =
            format!("not deleted: {left} of its conversations could not be deleted (see above)");
        record_failure(undone, Kind::Customer, id, reason);
    }
    Ok(left > 0)
}

fn record_failure(undone: &Mutex<Undone>, kind: Kind, id: &str, reason: String) {
    let mut undone = undone.lock().unwrap_or_else(|e| e.into_inner());
    match kind {
        Kind::Conversation => undone.conversations.failed += 1,
        Kind::Customer => undone.customers.failed += 1,
    }
    undone.failures.push(Failure {
        record: kind.as_str(),
        id: id.to_string(),
        reason,
    });
}

/// Sends the delete (again after transient failures: a lost answer's delete may have
/// landed, and a 404 then says so), then reads the record back: gone only once a read
/// answers 404.
async fn delete_and_confirm(
    client: &KustomerClient,
    kind: Kind,
    id: &str,
) -> Result<Ended, Stopped> {
    let deleted = with_retries(|| async {
        match kind {
            Kind::Conversation => client.delete_conversation(id).await,
            Kind::Customer => client.delete_customer(id).await,
        }
    })
    .await?;
    let how = match deleted {
        Ok(how) => how,
        Err(Missed::Refused(reason)) => return Ok(Ended::Failed(reason)),
        Err(Missed::NoAnswer(reason)) => return Ok(Ended::Unknown(reason)),
    };
    if how == Deleted::AlreadyGone {
        return Ok(Ended::Gone(how));
    }
    Ok(match still_there(client, kind, id).await? {
        Ok(false) => Ended::Gone(how),
        Ok(true) => Ended::Failed(format!(
            "the delete was answered, but the {} still reads back",
            kind.as_str()
        )),
        Err(Missed::Refused(reason) | Missed::NoAnswer(reason)) => {
            Ended::Unknown(format!("the confirming read failed: {reason}"))
        }
    })
}

/// Reads the record back: true while the API holds it.
async fn still_there(
    client: &KustomerClient,
    kind: Kind,
    id: &str,
) -> Result<Result<bool, Missed>, Stopped> {
    with_retries(|| async {
        match kind {
            Kind::Conversation => client.read_conversation(id).await.map(|r| r.is_some()),
            Kind::Customer => client.read_customer(id).await.map(|r| r.is_some()),
        }
    })
    .await
}

/// One request, sent again after transient failures with the import's backoff. A refusal,
/// or a transient failure past the retries, is the record's (Ok(Err(missed))); a refused
/// key or an API that cannot be reached stops the undo.
async fn with_retries<T, F, Fut>(mut send: F) -> Result<Result<T, Missed>, Stopped>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let backoff = Backoff::default();
    let mut attempt = 0;
    loop {
        match send().await {
            Ok(found) => return Ok(Ok(found)),
            Err(error @ ApiError::Transient { .. }) if attempt < MAX_RETRIES => {
                tracing::debug!("a delete or its read failed ({error}); trying again");
                tokio::time::sleep(backoff.delay(attempt)).await;
                attempt += 1;
            }
            Err(ApiError::Rejected { status, message }) => {
                return Ok(Err(Missed::Refused(format!(
                    "refused ({status}): {message}"
                ))));
            }
            Err(error @ ApiError::Transient { .. }) => {
                return Ok(Err(Missed::NoAnswer(error.to_string())));
            }
            Err(error) => return Err(Stopped::Api(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(origin: &str, made_by_run: Option<i64>, used_elsewhere: i64) -> UndoCustomer {
        UndoCustomer {
            customer_key: "k".into(),
            customer_id: "c".into(),
            origin: origin.into(),
            made_by_run,
            used_elsewhere,
        }
    }

    #[test]
    fn only_a_customer_the_scope_created_and_nothing_else_uses_is_deleted() {
        let run = UndoScope::Run(2);
        assert_eq!(
            verdict(&customer("created", Some(2), 0), run),
            Verdict::Delete
        );
        assert_eq!(
            verdict(&customer("created", None, 0), UndoScope::All),
            Verdict::Delete
        );
        for kept in [
            customer("linked", Some(2), 0),
            customer("reconciled", Some(2), 0),
            customer("created", Some(1), 0),
            customer("created", None, 0),
            customer("created", Some(2), 3),
        ] {
            assert!(matches!(verdict(&kept, run), Verdict::Keep(_)), "{kept:?}");
        }
        let Verdict::Keep(reason) = verdict(&customer("created", Some(2), 3), run) else {
            unreachable!()
        };
        assert_eq!(reason, "still used by 3 row(s) of other runs");
    }
}
