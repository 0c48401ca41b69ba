//! The worker: takes one row from its customer to done, or to the reason it stopped.
//!
//! Every create is preceded by its durable intent in the checkpoint, and an answer that
//! may have been lost is settled by lookup before anything is sent again. A 409 on a
//! customer links the row to the customer that exists; a 401/403 stops the run; transient
//! failures back off and, past the retry budget, leave the row pending.

use super::failure::{Call, Retries, create_refused};
use super::planner::Event;
use super::row::{CustomerStep, Halt, PlannedRow, RowOutcome, Settlement, Step};
use super::{Shared, StopReason};
use crate::api::ApiError;
use crate::checkpoint::{Change, CustomerOrigin};
use crate::mapping::ConversationBody;

/// Takes one row from its customer to done, or to the reason it stopped.
pub(super) async fn process_row(
    shared: &Shared,
    work: PlannedRow,
    step: CustomerStep,
) -> (PlannedRow, RowOutcome) {
    let mut attempts = Attempts::new(shared);
    let outcome = match drive_row(shared, &work, step, &mut attempts).await {
        Ok(outcome) => outcome,
        Err(halt) => {
            record_halt(shared, &work, &halt, attempts.requests).await;
            RowOutcome::Halted(halt)
        }
    };
    (work, outcome)
}

/// Records in the checkpoint why a row stopped short of done (see [`PlannedRow::halted`]).
pub(super) async fn record_halt(shared: &Shared, work: &PlannedRow, halt: &Halt, requests: u32) {
    if let Some(change) = work.halted(halt, requests) {
        record_or_halt(shared, vec![Change::Row(change)]).await;
    }
}

/// The conversation as it is sent: its customer's id in, and `importedAt` stamped unless
/// the row has one or the user said not to (added here, not in the plan: the row's key must
/// not change with the clock).
pub(super) fn conversation_to_send(
    shared: &Shared,
    conversation: &ConversationBody,
    customer_id: &str,
) -> ConversationBody {
    let mut body = conversation.clone();
    body.customer = Some(customer_id.to_string());
    if shared.settings.stamp_imported_at && !body.extra.contains_key("importedAt") {
        body.extra.insert(
            "importedAt".into(),
            serde_json::Value::String(crate::checkpoint::now_rfc3339()),
        );
    }
    body
}

async fn drive_row(
    shared: &Shared,
    work: &PlannedRow,
    step: CustomerStep,
    attempts: &mut Attempts<'_>,
) -> Result<RowOutcome, Halt> {
    let (customer_id, intent_committed) = match step {
        CustomerStep::Known(id) => (id, false),
        CustomerStep::Create { reconcile_first } => {
            let settled = settle_customer(shared, work, reconcile_first, attempts).await;
            let resolved = announce_customer(shared, work, settled).await?;
            (resolved.id, resolved.intent_committed)
        }
        CustomerStep::Link { message } => {
            let settled = link_after_bulk(shared, work, &message, attempts).await;
            let resolved = announce_customer(shared, work, settled).await?;
            (resolved.id, resolved.intent_committed)
        }
    };
    let Some(conversation) = &work.plan.conversation else {
        let done = work.done(customer_id, None, attempts.take_requests());
        record_or_halt(shared, vec![Change::Row(done)]).await;
        return Ok(RowOutcome::Done { conversation: None });
    };
    let body = conversation_to_send(shared, conversation, &customer_id);
    // A stop is heeded before the intent, never between the intent and its request: a
    // drained run leaves no intent it did not act on. Between retries, the backoff heeds it.
    if !intent_committed {
        let intent = work.conversation_intent(&customer_id, attempts.take_requests());
        attempts.check_stop()?;
        commit_or_halt(shared, vec![Change::Row(intent)]).await?;
    }
    let (conversation_id, origin) = send_conversation(shared, work, &body, attempts).await?;
    let done = work.done(customer_id, Some(conversation_id), attempts.take_requests());
    record_or_halt(shared, vec![Change::Row(done)]).await;
    Ok(RowOutcome::Done {
        conversation: Some(origin),
    })
}

/// Creates the row's conversation, whose intent is recorded: looks it up first when an
/// earlier answer was lost, and after a 409, which says an earlier attempt made it.
async fn send_conversation(
    shared: &Shared,
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
            match shared.client.find_conversation(external_id).await {
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
        match shared.client.create_conversation(body).await {
            Ok(id) => return Ok((id, CustomerOrigin::Created)),
            Err(error @ (ApiError::Rejected { .. } | ApiError::NoSuchEndpoint { .. })) => {
                return Err(create_refused(shared, Step::Conversation, &error));
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
    shared: &Shared,
    work: &PlannedRow,
    settled: Result<Resolved, Halt>,
) -> Result<Resolved, Halt> {
    let settlement = match &settled {
        Ok(resolved) => Settlement::Known(resolved.id.clone(), resolved.origin),
        Err(halt) => Settlement::of_halt(halt),
    };
    if let Settlement::Failed { .. } = settlement {
        record_or_halt(shared, vec![work.customer_withdrawn()]).await;
    }
    let _ = shared.events.send(Event::CustomerSettled {
        customer_key: work.plan.customer_key.clone(),
        settlement,
    });
    settled
}

/// Creates the row's customer (or finds the one an earlier lost answer created, or the one
/// that already existed), recording the intent first and the id after.
async fn settle_customer(
    shared: &Shared,
    work: &PlannedRow,
    reconcile_first: bool,
    attempts: &mut Attempts<'_>,
) -> Result<Resolved, Halt> {
    let intent = work.customer_intent(attempts.take_requests());
    attempts.check_stop()?;
    commit_or_halt(shared, intent.into()).await?;
    let (id, origin) = send_customer(shared, work, reconcile_first, attempts).await?;
    record_customer(shared, work, id, origin, attempts).await
}

/// Creates a customer whose intent is recorded (looking it up first when an earlier answer
/// was lost), or finds the one that already existed.
async fn send_customer(
    shared: &Shared,
    work: &PlannedRow,
    reconcile_first: bool,
    attempts: &mut Attempts<'_>,
) -> Result<(String, CustomerOrigin), Halt> {
    let mut unknown = reconcile_first;
    loop {
        if unknown {
            match find_customer(shared, work, attempts).await {
                Ok(Some(id)) => return Ok((id, CustomerOrigin::Reconciled)),
                Ok(None) => unknown = false,
                Err(error) => {
                    attempts.after_failure(&error).await?;
                    continue;
                }
            }
        }
        attempts.requests += 1;
        match shared.client.create_customer(&work.plan.customer).await {
            Ok(id) => return Ok((id, CustomerOrigin::Created)),
            Err(ApiError::Duplicate { message }) => {
                return link_existing(shared, work, &message, attempts).await;
            }
            Err(error @ (ApiError::Rejected { .. } | ApiError::NoSuchEndpoint { .. })) => {
                return Err(create_refused(shared, Step::Customer, &error));
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
    shared: &Shared,
    work: &PlannedRow,
    message: &str,
    attempts: &mut Attempts<'_>,
) -> Result<Resolved, Halt> {
    let found = loop {
        match find_customer(shared, work, attempts).await {
            Ok(found) => break found,
            Err(error) => attempts.after_failure(&error).await?,
        }
    };
    let (id, origin) = match found {
        Some(id) => shared.settings.on_existing_customer.settle(id)?,
        None => {
            tracing::debug!("a bulk job refused a customer ({message}) that no lookup finds");
            send_customer(shared, work, false, attempts).await?
        }
    };
    record_customer(shared, work, id, origin, attempts).await
}

/// Records the row's customer id, waited for: rows of this customer read next look its id
/// up in the checkpoint. When the row's conversation is to be sent next, the same commit
/// holds its intent (the row goes from `customer_sent` to `conversation_sent`): one fsync
/// group less per new customer than a `customer_ok` state committed on its own, and a
/// crash leaves the same states as before, since the two land together or not at all.
async fn record_customer(
    shared: &Shared,
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
    commit_or_halt(
        shared,
        vec![work.customer_resolved(&id, origin), Change::Row(row)],
    )
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
    shared: &Shared,
    work: &PlannedRow,
    message: &str,
    attempts: &mut Attempts<'_>,
) -> Result<(String, CustomerOrigin), Halt> {
    loop {
        match find_customer(shared, work, attempts).await {
            Ok(Some(id)) => return shared.settings.on_existing_customer.settle(id),
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
    shared: &Shared,
    work: &PlannedRow,
    attempts: &mut Attempts<'_>,
) -> Result<Option<String>, ApiError> {
    for (field, value) in Step::Customer.lookup_keys(&work.plan) {
        attempts.requests += 1;
        if let Some(id) = shared.client.find_customer(field, value).await? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// A row's retries and request count.
struct Attempts<'a> {
    shared: &'a Shared,
    retries: Retries<'a>,
    /// Requests sent for the row and not yet added to the checkpoint's count.
    requests: u32,
}

impl<'a> Attempts<'a> {
    fn new(shared: &'a Shared) -> Attempts<'a> {
        Attempts {
            shared,
            retries: Retries::new(shared, &shared.stop.soft),
            requests: 0,
        }
    }

    fn take_requests(&mut self) -> u32 {
        std::mem::take(&mut self.requests)
    }

    fn check_stop(&self) -> Result<(), Halt> {
        if self.shared.stop.soft.is_cancelled() {
            Err(Halt::stopping())
        } else {
            Ok(())
        }
    }

    /// After a failed call that is not a create's verdict on its record (see
    /// [`Retries::after_failure`]).
    async fn after_failure(&mut self, error: &ApiError) -> Result<(), Halt> {
        self.retries.after_failure(error, Call::Row).await
    }
}

pub(super) async fn commit_or_halt(shared: &Shared, changes: Vec<Change>) -> Result<(), Halt> {
    shared.writer.commit(changes).await.map_err(|error| {
        shared.halt_run(StopReason::of_checkpoint(&error));
        Halt::Pending(format!("the checkpoint could not be written: {error}"))
    })
}

pub(super) async fn record_or_halt(shared: &Shared, changes: Vec<Change>) {
    if let Err(error) = shared.writer.record(changes).await {
        shared.halt_run(StopReason::of_checkpoint(&error));
    }
}
