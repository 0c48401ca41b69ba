//! Bulk update jobs: in bulk mode the updates of done rows whose records changed (a nightly
//! sync, see `pipeline::update`) go 100 at a time as `PUT /v1/customers/bulk` and
//! `PUT /v1/conversations/bulk` jobs (`?replace=false`: see `api::bulk`), each item the
//! single update's body (only the fields that changed, `company` whenever the customer has
//! one) with the record's `id`. They take the row jobs' path ([`submit_and_wait`]): one
//! request of the budget to submit, results-first polls, the job recorded (with its rows)
//! once the rate gate lets it go and before its request leaves, its id before it is polled.
//!
//! An update is idempotent, which makes every doubt cheap: a job whose answer was lost, an
//! item with no result or one whose outcome the job does not tell, and a job an earlier run
//! left queued (see `recover`) need no lookup: their updates are simply sent again (here
//! one request per record, by `pipeline::update`; for an earlier run's job, by this run,
//! which finds their rows still changed since nothing was recorded for them). A job that
//! runs late writes the same values. Only what a job confirmed (`updated`) is recorded as
//! sent, record by record; a row whose customer and conversation both changed goes in a
//! customers job, then in a conversations job. An item the job refuses (a value the API does
//! not take, a record deleted since) fails that row's update with the server's words and
//! leaves the row done, as the single path does, so the next run tries again; one refused
//! in words only (which may be the record's own update limit) is sent alone, and the single
//! endpoint's answer, which has a status, settles it. A job refused whole is split in halves
//! until the bad item is alone.

use std::collections::HashMap;

use serde_json::Value;

use super::submit::{JobEnd, log_split, submit_and_wait};
use super::{AfterJob, Jobs};
use crate::api::{ApiError, BulkKind, ItemOutcome};
use crate::checkpoint::{BulkItem, Change};
use crate::fingerprint::Fingerprint;
use crate::pipeline::handles::Tools;
use crate::pipeline::row::{PlannedRow, RowOutcome};
use crate::pipeline::update::{Of, RowUpdate, fields_to_send, update_refused};

/// What becomes of a row's update once a job ends and its row does not.
#[derive(Debug)]
pub(in crate::pipeline) enum UpdateNext {
    /// Its customer's update confirmed: its conversation's goes in a conversations job.
    InJobs(RowUpdate),
    /// Sent again one request per record (an update is idempotent: no lookup first).
    Alone(RowUpdate),
}

/// The kind of job that updates records of `of`.
pub(in crate::pipeline) fn kind_of(of: Of) -> BulkKind {
    match of {
        Of::Customer => BulkKind::CustomerUpdates,
        Of::Conversation => BulkKind::ConversationUpdates,
    }
}

/// One job of updates of `of`: each row's update of that record, as one item. Rows of one
/// customer changed alike share one item, and a customer update this run confirmed already
/// goes in no job (see `update::CustomerUpdates`).
pub(in crate::pipeline) async fn run_update_job(
    tools: &Tools,
    jobs: &Jobs,
    of: Of,
    works: Vec<(PlannedRow, RowUpdate)>,
) -> Vec<(PlannedRow, AfterJob)> {
    let (works, mut ended) = take_confirmed(tools, of, works).await;
    if !works.is_empty() {
        ended.extend(submit_update_job(tools, jobs, of, works).await);
    }
    ended
}

/// The rows whose customer update this run confirmed already (another row's, the same
/// customer changed alike): recorded as sent and handed back, the others left to send.
async fn take_confirmed(
    tools: &Tools,
    of: Of,
    works: Vec<(PlannedRow, RowUpdate)>,
) -> (Vec<(PlannedRow, RowUpdate)>, Vec<(PlannedRow, AfterJob)>) {
    if of != Of::Customer {
        return (works, Vec::new());
    }
    let (mut changes, mut ended, mut left) = (Vec::new(), Vec::new(), Vec::new());
    for (work, update) in works {
        let confirmed = fields_to_send(&work, &update, of).is_some_and(|fields| {
            tools
                .customer_updates
                .confirmed(&update.customer_id, &fields)
        });
        if confirmed {
            let next = confirmed_item(&work, update, of, true, &mut changes);
            ended.push((work, next));
        } else {
            left.push((work, update));
        }
    }
    if !changes.is_empty() {
        tools.journal.record(changes).await;
    }
    (left, ended)
}

/// Submits one job of updates of `of` and applies what it says.
async fn submit_update_job(
    tools: &Tools,
    jobs: &Jobs,
    of: Of,
    works: Vec<(PlannedRow, RowUpdate)>,
) -> Vec<(PlannedRow, AfterJob)> {
    let job = jobs.next_number();
    let mut bodies = Vec::with_capacity(works.len());
    let mut items = Vec::with_capacity(works.len());
    // Each row's item's `_clientRef`: the first row's of the rows sending the same update.
    let mut refs = Vec::with_capacity(works.len());
    let mut first_of: HashMap<String, String> = HashMap::new();
    for (index, (work, update)) in works.iter().enumerate() {
        let Some(mut body) = fields_to_send(work, update, of) else {
            unreachable!("the planner puts a row in a job of the records it updates")
        };
        let same = format!("{}\n{}", record_id(update, of), Value::Object(body.clone()));
        let client_ref = first_of.entry(same).or_insert_with(|| index.to_string());
        refs.push(client_ref.clone());
        if *client_ref != index.to_string() {
            continue;
        }
        let client_ref = client_ref.clone();
        body.insert(
            "id".into(),
            Value::String(record_id(update, of).to_string()),
        );
        body.insert("_clientRef".into(), Value::String(client_ref.clone()));
        bodies.push(Value::Object(body));
        items.push(BulkItem {
            client_ref,
            row_key: work.origin.key.clone(),
            customer_key: None,
            record: None,
        });
    }
    // No intents: the rows stay done whatever becomes of the job.
    let end = submit_and_wait(tools, jobs, job, kind_of(of), bodies, items, Vec::new()).await;
    match end {
        JobEnd::Complete(outcomes) => {
            apply_update_results(tools, job, of, works, &refs, outcomes).await
        }
        JobEnd::Refused(error) if works.len() > 1 => split(tools, jobs, of, works, &error).await,
        JobEnd::Refused(error) => works
            .into_iter()
            .map(|(work, update)| {
                let next = match update_refused(of, record_id(&update, of), &error) {
                    Some(halt) => AfterJob::Finished(RowOutcome::Halted(halt)),
                    None => AfterJob::Update(UpdateNext::Alone(update)),
                };
                (work, next)
            })
            .collect(),
        // Nothing was updated, or the job stays queued for the next run to release: the
        // rows are done, their changes not recorded as sent, so the next run sends them.
        JobEnd::NotSent(halt) | JobEnd::NotTaken(halt) | JobEnd::Unfinished(halt) => works
            .into_iter()
            .map(|(work, _)| (work, AfterJob::Finished(RowOutcome::Halted(halt.clone()))))
            .collect(),
        // `--mode auto` and no bulk endpoint, or a job whose answer was lost or that the API
        // never knew: sent again one by one, at once (idempotent: no wait, no lookup).
        JobEnd::Unsupported | JobEnd::Unknown(_) => works
            .into_iter()
            .map(|(work, update)| (work, AfterJob::Update(UpdateNext::Alone(update))))
            .collect(),
    }
}

/// The Kustomer id of the record `of` a row's update writes.
fn record_id(update: &RowUpdate, of: Of) -> &str {
    match of {
        Of::Customer => &update.customer_id,
        Of::Conversation => update.conversation_id.as_deref().unwrap_or_default(),
    }
}

/// A job refused whole: each half goes as a job of its own, until the bad item is alone.
async fn split(
    tools: &Tools,
    jobs: &Jobs,
    of: Of,
    mut works: Vec<(PlannedRow, RowUpdate)>,
    error: &ApiError,
) -> Vec<(PlannedRow, AfterJob)> {
    log_split(kind_of(of), works.len(), error);
    let second = works.split_off(works.len() / 2);
    let mut ended = Box::pin(run_update_job(tools, jobs, of, works)).await;
    ended.extend(Box::pin(run_update_job(tools, jobs, of, second)).await);
    ended
}

/// What one item's outcome says of its update.
#[derive(Debug, PartialEq, Eq)]
enum UpdateVerdict {
    /// The job updated the record.
    Confirmed,
    /// Refused, with a status: the row's update fails with the server's words.
    Refused(ApiError),
    /// No result, trouble on the way, or a refusal in words only (which may be the
    /// record's own update limit): sent again alone, whose answer has a status.
    SendAlone,
}

/// The one reading of an update job's item outcome (None: the job gave it no result).
fn read_update_item(outcome: Option<ItemOutcome>) -> UpdateVerdict {
    match outcome {
        // `updated` as the docs' results say; a `created` for an item that names its
        // record by id can only be the same record written.
        Some(ItemOutcome::Updated(_) | ItemOutcome::Created(_)) => UpdateVerdict::Confirmed,
        Some(ItemOutcome::Failed(error)) if error.is_retriable() => UpdateVerdict::SendAlone,
        Some(ItemOutcome::Failed(error)) => UpdateVerdict::Refused(error),
        Some(ItemOutcome::Unexplained(_)) | None => UpdateVerdict::SendAlone,
    }
}

/// Applies an update job's results (`refs`: each row's item): what the job confirmed is
/// recorded as sent (that record only), and its row is updated or goes on with its
/// conversation; a refused item fails its row's update; the rest are sent again alone.
async fn apply_update_results(
    tools: &Tools,
    job: i64,
    of: Of,
    works: Vec<(PlannedRow, RowUpdate)>,
    refs: &[String],
    outcomes: HashMap<String, ItemOutcome>,
) -> Vec<(PlannedRow, AfterJob)> {
    let mut changes = Vec::new();
    let mut ended = Vec::with_capacity(works.len());
    for (index, (work, update)) in works.into_iter().enumerate() {
        let next = match read_update_item(outcomes.get(&refs[index]).cloned()) {
            UpdateVerdict::Confirmed => {
                if of == Of::Customer
                    && let Some(fields) = fields_to_send(&work, &update, of)
                {
                    tools.customer_updates.confirm(&update.customer_id, &fields);
                }
                let by_another_row = refs[index] != index.to_string();
                confirmed_item(&work, update, of, by_another_row, &mut changes)
            }
            UpdateVerdict::Refused(error) => {
                match update_refused(of, record_id(&update, of), &error) {
                    Some(halt) => AfterJob::Finished(RowOutcome::Halted(halt)),
                    None => AfterJob::Update(UpdateNext::Alone(update)),
                }
            }
            UpdateVerdict::SendAlone => AfterJob::Update(UpdateNext::Alone(update)),
        };
        ended.push((work, next));
    }
    changes.push(super::results::job_complete(job));
    // Outcomes: losing them only means the next run sends these updates again.
    tools.journal.record(changes).await;
    ended
}

/// A row whose update of `of` is confirmed (by its item, or another row's of the same
/// update: `by_another_row`): what it was sent as goes in `changes`, and the row is updated
/// or goes on with its conversation's update.
fn confirmed_item(
    work: &PlannedRow,
    mut update: RowUpdate,
    of: Of,
    by_another_row: bool,
    changes: &mut Vec<Change>,
) -> AfterJob {
    changes.push(sent_as(work, of));
    changes.push(Change::RowUpdated {
        row_key: work.origin.key.clone(),
    });
    match of {
        Of::Customer => {
            update.customer_by_another_row = by_another_row;
            if fields_to_send(work, &update, Of::Conversation).is_some() {
                update.customer_fields.clear();
                update.customer_updated = true;
                return AfterJob::Update(UpdateNext::InJobs(update));
            }
            AfterJob::Finished(update.outcome())
        }
        Of::Conversation => AfterJob::Finished(update.outcome()),
    }
}

/// What the record `of` of a row was sent as, now that a job confirmed it: that record's
/// fingerprint only (the other's is left as recorded, see `Change::Fingerprints`).
fn sent_as(work: &PlannedRow, of: Of) -> Change {
    let (customer, conversation) = match of {
        Of::Customer => (Some(Fingerprint::of(&work.plan.customer).to_text()), None),
        Of::Conversation => (
            None,
            work.plan
                .conversation
                .as_ref()
                .map(|conversation| Fingerprint::of(conversation).to_text()),
        ),
    };
    Change::Fingerprints {
        row_key: work.origin.key.clone(),
        conversation,
        customer,
        tags_missing: work.tags.left_out(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_items_outcome_is_confirmed_refused_or_sent_again_alone() {
        assert_eq!(
            read_update_item(Some(ItemOutcome::Updated("c1".into()))),
            UpdateVerdict::Confirmed
        );
        let refusal = ApiError::Rejected {
            status: 422,
            message: "/status: bad".into(),
        };
        assert_eq!(
            read_update_item(Some(ItemOutcome::Failed(refusal.clone()))),
            UpdateVerdict::Refused(refusal)
        );
        // Words only: the record's own limit, or a bad value; the single endpoint says.
        assert_eq!(
            read_update_item(Some(ItemOutcome::Unexplained(
                "more than 2 updates of customer c1 in this window".into()
            ))),
            UpdateVerdict::SendAlone
        );
        let busy = ApiError::Transient {
            reason: "item failed (503): busy".into(),
            maybe_applied: true,
        };
        assert_eq!(
            read_update_item(Some(ItemOutcome::Failed(busy))),
            UpdateVerdict::SendAlone
        );
        assert_eq!(read_update_item(None), UpdateVerdict::SendAlone);
    }

    #[test]
    fn the_documented_results_read_as_updates() {
        // The docs' batches answer (`GET /v1/bulk/{id}/batches`), read as an update job's:
        // its `updated` item confirmed, its error in words sent again alone.
        let outcomes = crate::api::bulk::documented_outcomes("bulk-batches.json");
        let read = |client_ref: &str| read_update_item(outcomes.get(client_ref).cloned());
        assert_eq!(read("crm-003"), UpdateVerdict::Confirmed);
        assert_eq!(read("crm-002"), UpdateVerdict::SendAlone);
        assert_eq!(read("crm-004"), UpdateVerdict::SendAlone, "no result");
    }
}
