//! The worker: takes one row from its customer to done, or to the reason it stopped.
//!
//! Every create is preceded by its durable intent in the checkpoint, and an answer that
//! may have been lost is settled by lookup before anything is sent again. A 409 on a
//! customer links the row to the customer that exists; a 401/403 stops the run; transient
//! failures back off and, past the retry budget, leave the row pending.

use super::bulk::HistoryJobs;
use super::company::customer_to_send;
use super::failure::{Call, Retries, create_refused};
use super::handles::Tools;
use super::planner::Event;
use super::row::{CustomerStep, Halt, Owed, PlannedRow, RowOutcome, Settlement, Step};
use super::tags::{append_owed, send_append};
use super::thread::send_thread;
use super::update::{RowUpdate, send_updates};
use crate::api::{ApiError, KustomerClient};
use crate::checkpoint::{Change, CustomerOrigin, RowChange};
use crate::mapping::{ConversationBody, CustomerBody};

/// Takes one row from its customer to done, or to the reason it stopped.
/// With `history_jobs`, the row's history goes in bulk jobs.
pub(super) async fn process_row(
    tools: &Tools,
    work: PlannedRow,
    step: CustomerStep,
    history_jobs: Option<&HistoryJobs>,
) -> (PlannedRow, RowOutcome) {
    let mut attempts = Attempts::new(tools);
    let outcome = match drive_row(tools, &work, step, &mut attempts, history_jobs).await {
        Ok(outcome) => outcome,
        Err(halt) => {
            record_halt(tools, &work, &halt, attempts.requests).await;
            RowOutcome::Halted(halt)
        }
    };
    (work, outcome)
}

/// Records in the checkpoint why a row stopped short of done (see [`PlannedRow::halted`]).
pub(super) async fn record_halt(tools: &Tools, work: &PlannedRow, halt: &Halt, requests: u32) {
    if let Some(change) = work.halted(halt, requests) {
        tools.journal.record(vec![Change::Row(change)]).await;
    }
}

async fn drive_row(
    tools: &Tools,
    work: &PlannedRow,
    step: CustomerStep,
    attempts: &mut Attempts<'_>,
    history_jobs: Option<&HistoryJobs>,
) -> Result<RowOutcome, Halt> {
    let (customer_id, intent_committed) = match step {
        CustomerStep::Known(id) => (id, false),
        CustomerStep::Create { reconcile_first } => {
            let settled = settle_customer(tools, work, reconcile_first, attempts).await;
            let resolved = announce_customer(tools, work, settled).await?;
            (resolved.id, resolved.intent_committed)
        }
        CustomerStep::Link { message } => {
            let settled = link_after_bulk(tools, work, &message, attempts).await;
            let resolved = announce_customer(tools, work, settled).await?;
            (resolved.id, resolved.intent_committed)
        }
    };
    let (conversation_id, origin) = match &work.conversation_id {
        Some(id) => (id.clone(), work.conversation_origin),
        None => {
            match conversation_step(tools, work, &customer_id, intent_committed, attempts).await? {
                Some((id, origin)) => (id, Some(origin)),
                None => {
                    let done = work.done_and_sent(customer_id, None, attempts.take_requests());
                    tools.journal.record(done.into()).await;
                    return Ok(RowOutcome::Done { conversation: None });
                }
            }
        }
    };
    let append = append_owed(
        &work.tags,
        tools.tags.creates_missing(),
        origin == Some(CustomerOrigin::Created),
    );
    // The conversation's id is recorded before anything more is sent for it: a run that
    // stops after goes on from it.
    if (append.is_some() || work.thread.items() > 0)
        && origin.is_some()
        && work.conversation_origin.is_none()
    {
        let made = work.conversation_made(&customer_id, &conversation_id, attempts.take_requests());
        tools.journal.record(vec![Change::Row(made)]).await;
    }
    // Before the thread: a done row taken up again for new history owes its records the
    // changes the same export brought.
    let owed = settle_owed(tools, work, attempts).await?;
    // Then the tags it owes its conversation: the row is not done before they are appended.
    let tagged = match &append {
        Some(append) => send_append(tools, &conversation_id, append, attempts).await?,
        None => None,
    };
    let tagged_as_sent = tagged
        .filter(|_| append.as_ref().is_some_and(|a| !a.missing.is_empty()))
        .and_then(|tags| work.sent_with_tags(&tags));
    let mut thread = None;
    if work.thread.items() > 0 {
        let written = send_thread(tools, work, &conversation_id, attempts, history_jobs).await?;
        tools.history.add(&written);
        if let Some(first) = &written.first_failure {
            let partly =
                work.partly_imported(&customer_id, &conversation_id, written.failed, first);
            let halt = Halt::Failed {
                field: partly.field.clone(),
                reason: partly.error.clone().unwrap_or_default(),
            };
            let mut changes = vec![Change::Row(partly)];
            changes.extend(owed.as_sent(work));
            changes.extend(tagged_as_sent.filter(|_| owed.records_as_mapped()));
            tools.journal.record(changes).await;
            return Ok(RowOutcome::Halted(halt));
        }
        thread = Some(written);
    }
    let done = work.done(customer_id, Some(conversation_id), attempts.take_requests());
    let as_mapped = owed.records_as_mapped();
    let (mut changes, mut outcome) = owed.done(work, done, origin);
    changes.extend(tagged_as_sent.filter(|_| as_mapped));
    if let Some(thread) = &thread {
        (changes, outcome) = with_items_synced(work, thread, changes, outcome);
        changes.extend(thread_seen(tools, work, thread));
    }
    tools.journal.record(changes).await;
    Ok(outcome)
}

/// A done row's outcome once its thread's done items were synced (see `thread_sync`):
/// updated when any item was, reported (and kept done) when an edit was kept or refused.
fn with_items_synced(
    work: &PlannedRow,
    thread: &super::thread::ThreadOutcome,
    mut changes: Vec<Change>,
    outcome: RowOutcome,
) -> (Vec<Change>, RowOutcome) {
    let outcome = if thread.items_updated() == 0 {
        outcome
    } else {
        changes.push(Change::RowUpdated {
            row_key: work.origin.key.clone(),
        });
        match outcome {
            RowOutcome::Done { conversation: None } => RowOutcome::Updated {
                customer: false,
                conversation: false,
            },
            other => other,
        }
    };
    match (thread.sync_report(), outcome) {
        (Some(report), RowOutcome::Done { .. } | RowOutcome::Updated { .. }) => {
            (changes, RowOutcome::Halted(report))
        }
        (_, outcome) => (changes, outcome),
    }
}

/// What a done row's thread, read again whole (`thread`), is recorded as seen as (see
/// `thread_sync::thread_seen`): None for a row whose thread was new (its records are as
/// it reads), and no seen thread when it is reported (read again next time).
fn thread_seen(
    tools: &Tools,
    work: &PlannedRow,
    thread: &super::thread::ThreadOutcome,
) -> Option<Change> {
    if work.earlier_records.done() == 0 {
        return None;
    }
    let seen = thread.sync_report().is_none();
    Some(Change::ThreadSeen {
        row_key: work.origin.key.clone(),
        seen: seen.then(|| super::thread_sync::thread_seen(work.thread.digest, &tools.sync)),
    })
}

/// What a row's [`Owed`] came to, settled before its thread.
enum OwedSettled {
    /// Nothing was owed, or its update was sent now: what the row maps to is what was sent.
    AsMapped { updated: Option<RowUpdate> },
    /// Kept as it was (`--on-change skip` or `fail`, or its update refused): what was sent
    /// before stays recorded, and `report` says why the row is reported.
    Kept(Option<Halt>),
}

/// Sends what a reopened row owes its records (see [`Owed`]). A refused update is reported
/// and its row's history goes on: the next run sends the update again.
async fn settle_owed(
    tools: &Tools,
    work: &PlannedRow,
    attempts: &mut Attempts<'_>,
) -> Result<OwedSettled, Halt> {
    match &work.owed {
        Owed::Nothing => Ok(OwedSettled::AsMapped { updated: None }),
        Owed::Kept(report) => Ok(OwedSettled::Kept(report.clone())),
        Owed::Update(update) => match send_updates(tools, work, update.clone(), attempts).await {
            Ok(sent) => Ok(OwedSettled::AsMapped {
                updated: Some(sent),
            }),
            Err(refused @ Halt::Failed { .. }) => Ok(OwedSettled::Kept(Some(refused))),
            Err(halt) => Err(halt),
        },
    }
}

impl OwedSettled {
    /// The row done (`done`): what the checkpoint records and what the worker reports.
    fn done(
        self,
        work: &PlannedRow,
        done: RowChange,
        conversation: Option<CustomerOrigin>,
    ) -> (Vec<Change>, RowOutcome) {
        let mut changes = vec![Change::Row(done)];
        changes.extend(self.as_sent(work));
        let outcome = match self {
            OwedSettled::AsMapped { updated: None } => RowOutcome::Done { conversation },
            OwedSettled::AsMapped {
                updated: Some(update),
            } => {
                changes.push(Change::RowUpdated {
                    row_key: work.origin.key.clone(),
                });
                update.outcome()
            }
            OwedSettled::Kept(None) => RowOutcome::Done { conversation },
            OwedSettled::Kept(Some(report)) => RowOutcome::Halted(report),
        };
        (changes, outcome)
    }

    /// What the row's records are recorded as sent as: what it maps to, unless kept.
    fn as_sent(&self, work: &PlannedRow) -> Option<Change> {
        self.records_as_mapped().then(|| work.sent_as())
    }

    /// Whether what the row maps to is recorded as what was sent.
    fn records_as_mapped(&self) -> bool {
        matches!(self, OwedSettled::AsMapped { .. })
    }
}

/// The row's conversation, made (None: the row has none).
async fn conversation_step(
    tools: &Tools,
    work: &PlannedRow,
    customer_id: &str,
    intent_committed: bool,
    attempts: &mut Attempts<'_>,
) -> Result<Option<(String, CustomerOrigin)>, Halt> {
    let stamp = tools.rules.stamp_imported_at;
    let Some(body) = work.conversation_to_send(customer_id, stamp) else {
        return Ok(None);
    };
    // A stop is heeded before the intent, never between the intent and its request: a
    // drained run leaves no intent it did not act on. Between retries, the backoff heeds it.
    if !intent_committed {
        let intent = work.conversation_intent(customer_id, attempts.take_requests());
        attempts.check_stop()?;
        tools.journal.commit(vec![Change::Row(intent)]).await?;
    }
    send_conversation(tools, work, &body, attempts)
        .await
        .map(Some)
}

/// Creates the row's conversation, whose intent is recorded: looks it up first when an
/// earlier answer was lost, and after a 409, which says an earlier attempt made it.
async fn send_conversation(
    tools: &Tools,
    work: &PlannedRow,
    body: &ConversationBody,
    attempts: &mut Attempts<'_>,
) -> Result<(String, CustomerOrigin), Halt> {
    let mut unknown = work.conversation_unknown;
    // Whether a create of this row (in this run or an earlier one) may have made it: a
    // conversation found after a 409 is then ours, reconciled, not one that was there.
    let mut ours_may_exist = work.conversation_unknown;
    let mut refused_as_duplicate = false;
    loop {
        if unknown {
            let Some(external_id) = &body.external_id else {
                return Err(Halt::Unresolved(
                    "the answer to an earlier conversation create was lost and the \
                     conversation has no externalId to look it up by; not sent again, to \
                     avoid a duplicate: check Kustomer for it"
                        .into(),
                ));
            };
            attempts.requests += 1;
            match tools.client.find_conversation(external_id).await {
                Ok(Some(id)) if refused_as_duplicate && !ours_may_exist => {
                    return Ok((id, CustomerOrigin::Linked));
                }
                Ok(Some(id)) => return Ok((id, CustomerOrigin::Reconciled)),
                Ok(None) if refused_as_duplicate => {
                    return Err(Halt::Failed {
                        field: Some("conversation.externalId".into()),
                        reason: format!(
                            "conversation refused as a duplicate of {external_id:?}, \
                             which no lookup finds"
                        ),
                    });
                }
                Ok(None) => unknown = false,
                Err(error) => {
                    attempts.after_failure(&error).await?;
                    continue;
                }
            }
        }
        attempts.requests += 1;
        match tools.client.create_conversation(body).await {
            Ok(id) => return Ok((id, CustomerOrigin::Created)),
            Err(error @ (ApiError::Rejected { .. } | ApiError::NoSuchEndpoint { .. })) => {
                return Err(create_refused(tools, Step::Conversation, &error));
            }
            // An API that refuses repeated conversation externalIds says the conversation
            // exists: an earlier attempt's answer was lost after all. Find it.
            Err(ApiError::Duplicate { message }) if body.external_id.is_some() => {
                unknown = true;
                refused_as_duplicate = true;
                tracing::debug!("conversation create answered 409 ({message}); looking it up");
            }
            Err(ApiError::Duplicate { message }) => {
                return Err(Halt::Failed {
                    field: None,
                    reason: format!("conversation refused as a duplicate: {message}"),
                });
            }
            Err(error) => {
                unknown |= error.maybe_applied();
                ours_may_exist |= error.maybe_applied();
                attempts.after_failure(&error).await?;
            }
        }
    }
}

/// Tells the planner how the row's customer settled (the rows waiting for it go on or
/// fail), withdrawing the intent of a customer that will not be made.
async fn announce_customer(
    tools: &Tools,
    work: &PlannedRow,
    settled: Result<Resolved, Halt>,
) -> Result<Resolved, Halt> {
    let settlement = match &settled {
        Ok(resolved) => Settlement::Known(resolved.id.clone(), resolved.origin),
        Err(halt) => Settlement::of_halt(halt),
    };
    if let Settlement::Failed { .. } = settlement {
        tools.journal.record(vec![work.customer_withdrawn()]).await;
    }
    let _ = tools.events.send(Event::CustomerSettled {
        customer_key: work.plan.customer_key.clone(),
        settlement,
    });
    settled
}

/// Creates the row's customer (or finds the one an earlier lost answer created, or the one
/// that already existed), recording the intent first and the id after.
async fn settle_customer(
    tools: &Tools,
    work: &PlannedRow,
    reconcile_first: bool,
    attempts: &mut Attempts<'_>,
) -> Result<Resolved, Halt> {
    let body = customer_to_send(tools, work, attempts).await?;
    let intent = work.customer_intent(attempts.take_requests());
    attempts.check_stop()?;
    tools.journal.commit(intent).await?;
    let (id, origin) = send_customer(tools, work, &body, reconcile_first, attempts).await?;
    record_customer(tools, work, id, origin, attempts).await
}

/// Creates a customer whose intent is recorded (looking it up first when an earlier answer
/// was lost), or finds the one that already existed.
async fn send_customer(
    tools: &Tools,
    work: &PlannedRow,
    body: &CustomerBody,
    reconcile_first: bool,
    attempts: &mut Attempts<'_>,
) -> Result<(String, CustomerOrigin), Halt> {
    let mut unknown = reconcile_first;
    loop {
        if unknown {
            match find_customer(&tools.client, work, attempts).await {
                Ok(Some(id)) => return Ok((id, CustomerOrigin::Reconciled)),
                Ok(None) => unknown = false,
                Err(error) => {
                    attempts.after_failure(&error).await?;
                    continue;
                }
            }
        }
        attempts.requests += 1;
        match tools.client.create_customer(body).await {
            Ok(id) => return Ok((id, CustomerOrigin::Created)),
            Err(ApiError::Duplicate { message }) => {
                return link_existing(tools, work, &message, attempts).await;
            }
            Err(error @ (ApiError::Rejected { .. } | ApiError::NoSuchEndpoint { .. })) => {
                return Err(create_refused(tools, Step::Customer, &error));
            }
            Err(error) => {
                unknown |= error.maybe_applied();
                attempts.after_failure(&error).await?;
            }
        }
    }
}

/// A customer a bulk job refused as a duplicate, or in words with no status: its intent is
/// recorded already. The customer that exists is found and the row linked to it, as a
/// single create's 409 would; when no lookup finds one, the customer is sent alone, and the
/// single endpoint's answer, which has a status, settles it (created, linked or refused in
/// the words single mode would give), rather than the row failing on words.
async fn link_after_bulk(
    tools: &Tools,
    work: &PlannedRow,
    message: &str,
    attempts: &mut Attempts<'_>,
) -> Result<Resolved, Halt> {
    let found = loop {
        match find_customer(&tools.client, work, attempts).await {
            Ok(found) => break found,
            Err(error) => attempts.after_failure(&error).await?,
        }
    };
    let (id, origin) = match found {
        Some(id) => tools.rules.on_existing_customer.settle(id)?,
        None => {
            tracing::debug!("a bulk job refused a customer ({message}) that no lookup finds");
            let body = customer_to_send(tools, work, attempts).await?;
            send_customer(tools, work, &body, false, attempts).await?
        }
    };
    record_customer(tools, work, id, origin, attempts).await
}

/// Records the row's customer id, waited for: rows of this customer read next look its id
/// up in the checkpoint. When the row's conversation is to be sent next, the same commit
/// holds its intent (the row goes from `customer_sent` to `conversation_sent`): one fsync
/// group less per new customer than a `customer_ok` state committed on its own, and a
/// crash leaves the same states as before, since the two land together or not at all.
async fn record_customer(
    tools: &Tools,
    work: &PlannedRow,
    id: String,
    origin: CustomerOrigin,
    attempts: &mut Attempts<'_>,
) -> Result<Resolved, Halt> {
    // A stop is heeded before an intent: a stopping run records only the customer.
    let with_intent = work.plan.conversation.is_some() && attempts.check_stop().is_ok();
    let row = if with_intent {
        work.conversation_intent(&id, attempts.take_requests())
    } else {
        work.customer_known(&id, attempts.take_requests())
    };
    tools
        .journal
        .commit(vec![work.customer_resolved(&id, origin), Change::Row(row)])
        .await?;
    Ok(Resolved {
        id,
        origin,
        intent_committed: with_intent,
    })
}

/// A customer this row settled and recorded.
struct Resolved {
    id: String,
    origin: CustomerOrigin,
    /// Whether the row's conversation intent was committed with it.
    intent_committed: bool,
}

/// After a 409: finds the customer that holds the row's externalId, email or phone.
async fn link_existing(
    tools: &Tools,
    work: &PlannedRow,
    message: &str,
    attempts: &mut Attempts<'_>,
) -> Result<(String, CustomerOrigin), Halt> {
    loop {
        match find_customer(&tools.client, work, attempts).await {
            Ok(Some(id)) => return tools.rules.on_existing_customer.settle(id),
            Ok(None) => {
                return Err(Halt::Failed {
                    field: None,
                    reason: format!(
                        "customer refused as a duplicate ({message}) but no lookup by \
                         externalId, email or phone finds it"
                    ),
                });
            }
            Err(error) => attempts.after_failure(&error).await?,
        }
    }
}

/// Looks the row's customer up by each of its keys in turn (see [`Step::lookup_keys`]).
async fn find_customer(
    client: &KustomerClient,
    work: &PlannedRow,
    attempts: &mut Attempts<'_>,
) -> Result<Option<String>, ApiError> {
    for (field, value) in Step::Customer.lookup_keys(&work.plan) {
        attempts.requests += 1;
        if let Some(id) = client.find_customer(field, value).await? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// A row's retries and request count.
pub(super) struct Attempts<'a> {
    tools: &'a Tools,
    retries: Retries<'a>,
    /// Requests sent for the row and not yet added to the checkpoint's count.
    pub(super) requests: u32,
}

impl<'a> Attempts<'a> {
    pub(super) fn new(tools: &'a Tools) -> Attempts<'a> {
        Attempts {
            tools,
            retries: Retries::new(tools, tools.control.soft()),
            requests: 0,
        }
    }

    pub(super) fn take_requests(&mut self) -> u32 {
        std::mem::take(&mut self.requests)
    }

    pub(super) fn check_stop(&self) -> Result<(), Halt> {
        if self.tools.control.is_stopping() {
            Err(Halt::stopping())
        } else {
            Ok(())
        }
    }

    /// After a failed call that is not a create's verdict on its record (see
    /// [`Retries::after_failure`]).
    pub(super) async fn after_failure(&mut self, error: &ApiError) -> Result<(), Halt> {
        self.retries.after_failure(error, Call::Row).await
    }
}
