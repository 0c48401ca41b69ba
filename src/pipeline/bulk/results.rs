//! A finished job's results, item by item. [`read_item`] is the one reading of what an
//! item's outcome means for its record, for this run's jobs (applied here) and for the jobs
//! earlier runs left ([`super::recover`]); what follows from it differs only by where the
//! row is (in hand, or read later from the checkpoint).

use std::collections::HashMap;

use super::AfterJob;
use super::submit::finish_customers_with;
use crate::api::{ApiError, ItemOutcome};
use crate::checkpoint::{BulkJobState, Change, CustomerOrigin};
use crate::pipeline::OnExistingCustomer;
use crate::pipeline::failure::refusal;
use crate::pipeline::handles::Tools;
use crate::pipeline::planner::Event;
use crate::pipeline::row::{CustomerStep, Halt, PlannedRow, RowOutcome, Settlement, Step};
use crate::pipeline::tags::append_owed;

/// What one item's outcome says of its record.
#[derive(Debug)]
pub(super) enum ItemVerdict {
    /// The job made it (`Created`), or found it there and updated it (`Linked`).
    Made(String, CustomerOrigin),
    /// Refused for good, or (a customer that existed) refused by `--on-existing-customer`.
    Refused(Halt),
    /// It exists already (a duplicate): a customer is linked through single mode's path, a
    /// conversation looked up by its externalId.
    Exists(String),
    /// Refused in words only, with no status: whether the record exists or its body is bad
    /// is not said; the single endpoint's answer, which has a status, settles it.
    InWordsOnly(String),
    /// No result, or one that says only that something went wrong on the way: it may or
    /// may not have been made, so it is looked up.
    Unknown,
}

/// What `outcome` (None: the job gave the item no result) says of the `step` it made.
pub(super) fn read_item(
    step: Step,
    outcome: Option<ItemOutcome>,
    policy: OnExistingCustomer,
) -> ItemVerdict {
    match outcome {
        Some(ItemOutcome::Created(id)) => ItemVerdict::Made(id, CustomerOrigin::Created),
        Some(ItemOutcome::Updated(id)) if step == Step::Customer => match policy.settle(id) {
            Ok((id, origin)) => ItemVerdict::Made(id, origin),
            Err(halt) => ItemVerdict::Refused(halt),
        },
        Some(ItemOutcome::Updated(id)) => ItemVerdict::Made(id, CustomerOrigin::Linked),
        Some(ItemOutcome::Failed(ApiError::Duplicate { message })) => ItemVerdict::Exists(message),
        Some(ItemOutcome::Failed(error)) if error.maybe_applied() => ItemVerdict::Unknown,
        Some(ItemOutcome::Failed(error)) => ItemVerdict::Refused(refusal(step, &error)),
        Some(ItemOutcome::Unexplained(message)) => ItemVerdict::InWordsOnly(message),
        None => ItemVerdict::Unknown,
    }
}

/// Applies a customers job's results: customers made are recorded and their rows go on;
/// refused ones fail; duplicates go to single mode's linking; the unknown to lookup.
pub(super) async fn apply_customer_results(
    tools: &Tools,
    job: i64,
    works: Vec<PlannedRow>,
    mut outcomes: HashMap<String, ItemOutcome>,
) -> Vec<(PlannedRow, AfterJob)> {
    let policy = tools.rules.on_existing_customer;
    let mut changes = Vec::new();
    let mut settlements = Vec::new();
    let mut nexts = Vec::with_capacity(works.len());
    for (index, work) in works.iter().enumerate() {
        let verdict = read_item(Step::Customer, outcomes.remove(&index.to_string()), policy);
        let next = match verdict {
            ItemVerdict::Made(id, origin) => {
                changes.push(work.customer_resolved(&id, origin));
                settlements.push((work, Settlement::Known(id.clone(), origin)));
                if work.plan.conversation.is_some() {
                    changes.push(Change::Row(work.customer_known(&id, 0)));
                    AfterJob::Continue(CustomerStep::Known(id))
                } else {
                    changes.extend(work.done_and_sent(id, None, 0));
                    AfterJob::Finished(RowOutcome::Done { conversation: None })
                }
            }
            ItemVerdict::Refused(halt) => {
                changes.push(work.customer_withdrawn());
                changes.extend(work.halted(&halt, 0).map(Change::Row));
                settlements.push((work, Settlement::of_halt(&halt)));
                AfterJob::Finished(RowOutcome::Halted(halt))
            }
            // Kustomer says it exists, or only says no in words: single mode's linking,
            // which looks the customer up before anything fails.
            ItemVerdict::Exists(message) | ItemVerdict::InWordsOnly(message) => {
                AfterJob::Continue(CustomerStep::Link { message })
            }
            // Looked up, after the wait single mode gives a lost answer.
            ItemVerdict::Unknown => AfterJob::ContinueAfter(
                CustomerStep::Create {
                    reconcile_first: true,
                },
                reconcile_at(tools),
            ),
        };
        nexts.push(next);
    }
    let settlements: Vec<(String, Settlement)> = settlements
        .into_iter()
        .map(|(work, settlement)| (work.plan.customer_key.clone(), settlement))
        .collect();
    changes.push(job_complete(job));
    // Waited for: rows of these customers read next look their ids up in the checkpoint.
    if let Err(halt) = tools.journal.commit(changes).await {
        return finish_customers_with(tools, works, halt, Vec::new()).await;
    }
    for (customer_key, settlement) in settlements {
        let _ = tools.events.send(Event::CustomerSettled {
            customer_key,
            settlement,
        });
    }
    works.into_iter().zip(nexts).collect()
}

/// Applies a conversations job's results: done, failed with the item's error, or (a
/// duplicate, or no result) looked up by externalId through single mode's path.
pub(super) async fn apply_conversation_results(
    tools: &Tools,
    job: i64,
    works: Vec<PlannedRow>,
    customer_ids: Vec<String>,
    mut outcomes: HashMap<String, ItemOutcome>,
) -> Vec<(PlannedRow, AfterJob)> {
    let policy = tools.rules.on_existing_customer;
    let mut changes = Vec::new();
    let mut ended = Vec::with_capacity(works.len());
    for (index, (mut work, customer_id)) in works.into_iter().zip(customer_ids).enumerate() {
        let verdict = read_item(
            Step::Conversation,
            outcomes.remove(&index.to_string()),
            policy,
        );
        let next = match verdict {
            // A row with history goes on to a worker, which writes its thread; so does one
            // that owes its conversation an append of tags.
            ItemVerdict::Made(id, origin)
                if work.thread.items() > 0 || owes_tags(tools, &work, origin) =>
            {
                changes.push(Change::Row(work.conversation_made(&customer_id, &id, 0)));
                work.conversation_id = Some(id);
                work.conversation_origin = Some(origin);
                AfterJob::Continue(CustomerStep::Known(customer_id))
            }
            ItemVerdict::Made(id, origin) => {
                changes.extend(work.done_and_sent(customer_id, Some(id), 0));
                // An item the job updated was there already: linked, as after a 409.
                AfterJob::Finished(RowOutcome::Done {
                    conversation: Some(origin),
                })
            }
            ItemVerdict::Refused(halt) => {
                changes.extend(work.halted(&halt, 0).map(Change::Row));
                AfterJob::Finished(RowOutcome::Halted(halt))
            }
            // As after a 409: looked up at once.
            ItemVerdict::Exists(_) => {
                work.conversation_unknown = true;
                AfterJob::Continue(CustomerStep::Known(customer_id))
            }
            // Words only may hide trouble on the way after a write: looked up by its
            // externalId, then sent alone for the single endpoint's verdict. With nothing
            // to look it up by, sending it again could make it twice.
            ItemVerdict::InWordsOnly(message)
                if Step::Conversation.lookup_keys(&work.plan).is_empty() =>
            {
                let halt = Halt::refused(Step::Conversation, format_args!(": {message}"));
                changes.extend(work.halted(&halt, 0).map(Change::Row));
                AfterJob::Finished(RowOutcome::Halted(halt))
            }
            ItemVerdict::InWordsOnly(_) | ItemVerdict::Unknown => {
                work.conversation_unknown = true;
                let step = CustomerStep::Known(customer_id);
                AfterJob::ContinueAfter(step, reconcile_at(tools))
            }
        };
        ended.push((work, next));
    }
    changes.push(job_complete(job));
    // Outcomes: losing them only means the next run polls the job again.
    tools.journal.record(changes).await;
    ended
}

/// Whether a row whose conversation a job made (`origin`) owes it an append of tags (see
/// `tags::append_owed`).
fn owes_tags(tools: &Tools, work: &PlannedRow, origin: CustomerOrigin) -> bool {
    let made_here = origin == CustomerOrigin::Created;
    append_owed(&work.tags, tools.tags.creates_missing(), made_here).is_some()
}

/// The job's results are applied: committed with the changes they made.
pub(super) fn job_complete(job: i64) -> Change {
    Change::BulkJobEnded {
        job,
        state: BulkJobState::Complete,
    }
}

/// When an item whose outcome is unknown may be looked up: single mode's wait after a
/// lost answer, for a write still in progress (or an index that lags) to show.
fn reconcile_at(tools: &Tools) -> tokio::time::Instant {
    tokio::time::Instant::now() + tools.retry.reconcile_delay
}
