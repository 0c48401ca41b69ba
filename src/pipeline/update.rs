//! A done row whose records changed in the source since they were sent (a nightly export of
//! the user's own system): the customer and the conversation each get one update of only
//! the fields that changed (see `resume::sync_done_row`), then what they are now is
//! recorded as what was sent (`PlannedRow::sent_as`). An update is idempotent, so a lost
//! answer is sent again; one the API refuses (a bad value, a record deleted in Kustomer
//! since) is reported with the server's words and leaves the row done, with what was sent
//! before still recorded, so the next run tries again. Nothing else about the row changes.
//! A 429 of the record's own update limit makes this row wait, not the run.
//!
//! In bulk mode the same updates go as bulk jobs (`bulk::run_update_job`), and what a job
//! cannot settle comes back here, one request per record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::handles::Tools;
use super::row::{Halt, PlannedRow, RowOutcome};
use super::worker::Attempts;
use crate::api::ApiError;
use crate::checkpoint::{Change, StoredRow};

/// The Kustomer ids of a done row and the fields of each record to update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RowUpdate {
    pub customer_id: String,
    pub conversation_id: Option<String>,
    pub customer_fields: Vec<String>,
    pub conversation_fields: Vec<String>,
    /// The customer's update is done already (by a bulk job, whose row goes on with its
    /// conversation's): `customer_fields` is then empty.
    pub customer_updated: bool,
    /// The id of the company the checkpoint says the customer belongs to: sent with every
    /// update of it, or the update would unlink it.
    pub company_id: Option<String>,
    /// The customer's update was another row's of this run (the same customer, changed
    /// alike: see [`CustomerUpdates`]): this row sent none, and does not count it.
    pub customer_by_another_row: bool,
}

impl RowUpdate {
    /// The update of a done row (`whole`, read whole) whose records changed in these fields;
    /// None for a row with no customer id (no version writes that: nothing to update).
    pub(super) fn of_done(
        whole: StoredRow,
        company_id: Option<String>,
        customer_fields: Vec<String>,
        conversation_fields: Vec<String>,
    ) -> Option<RowUpdate> {
        Some(RowUpdate {
            customer_id: whole.customer_id?,
            conversation_id: whole.conversation_id,
            customer_fields,
            conversation_fields,
            customer_updated: false,
            company_id,
            customer_by_another_row: false,
        })
    }

    /// Whether the row's customer is (or was) updated.
    pub(super) fn updates_customer(&self) -> bool {
        self.customer_updated || !self.customer_fields.is_empty()
    }

    /// The row's outcome once every update it has is done.
    pub(super) fn outcome(&self) -> RowOutcome {
        RowOutcome::Updated {
            customer: self.updates_customer() && !self.customer_by_another_row,
            conversation: !self.conversation_fields.is_empty(),
        }
    }
}

/// Which record an update is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Of {
    Customer,
    Conversation,
}

impl Of {
    pub(super) fn noun(self) -> &'static str {
        match self {
            Of::Customer => "customer",
            Of::Conversation => "conversation",
        }
    }
}

/// Sends the row's updates and records what was sent.
pub(super) async fn update_row(
    tools: &Tools,
    work: PlannedRow,
    update: RowUpdate,
) -> (PlannedRow, RowOutcome) {
    let mut attempts = Attempts::new(tools);
    let sent = match send_updates(tools, &work, update, &mut attempts).await {
        Ok(update) => append_missing_tags(tools, &work, &update, &mut attempts)
            .await
            .map(|tagged| (update, tagged)),
        Err(halt) => Err(halt),
    };
    let outcome = match sent {
        Ok((update, tagged)) => {
            let updated = Change::RowUpdated {
                row_key: work.origin.key.clone(),
            };
            let mut changes = vec![work.sent_as(), updated];
            changes.extend(tagged.and_then(|tags| work.sent_with_tags(&tags)));
            tools.journal.record(changes).await;
            update.outcome()
        }
        Err(halt) => RowOutcome::Halted(halt),
    };
    (work, outcome)
}

/// Whether a done row's update is followed by an append of the tag names the org lacks
/// (`--create-missing-tags`): such an update is sent one request per record.
pub(super) fn appends_missing_tags(tools: &Tools, work: &PlannedRow, update: &RowUpdate) -> bool {
    tools.tags.creates_missing()
        && !work.tags.missing.is_empty()
        && update.conversation_id.is_some()
        && !update.conversation_fields.is_empty()
}

/// After a conversation's update, the names it lacks appended (which makes them), under
/// `--create-missing-tags`: the conversation's tag ids after (None: no append, or an answer
/// without them).
async fn append_missing_tags(
    tools: &Tools,
    work: &PlannedRow,
    update: &RowUpdate,
    attempts: &mut Attempts<'_>,
) -> Result<Option<Vec<String>>, Halt> {
    let (true, Some(id)) = (
        appends_missing_tags(tools, work, update),
        &update.conversation_id,
    ) else {
        return Ok(None);
    };
    let Some(append) = super::tags::append_owed(&work.tags, true, true) else {
        return Ok(None);
    };
    super::tags::send_append(tools, id, &append, attempts).await
}

/// Sends the row's updates, customer first (once per customer and change in a run: see
/// [`CustomerUpdates`]); a refusal or a stop ends them. Gives the update as it went.
pub(super) async fn send_updates(
    tools: &Tools,
    work: &PlannedRow,
    mut update: RowUpdate,
    attempts: &mut Attempts<'_>,
) -> Result<RowUpdate, Halt> {
    if let Some(fields) = fields_to_send(work, &update, Of::Customer) {
        let id = &update.customer_id;
        let mut sent_here = false;
        let sent = tools.customer_updates.cell(id, &fields);
        sent.get_or_try_init(|| {
            sent_here = true;
            send(tools, Of::Customer, id, &fields, attempts)
        })
        .await?;
        update.customer_by_another_row = !sent_here;
    }
    if let (Some(id), Some(fields)) = (
        &update.conversation_id,
        fields_to_send(work, &update, Of::Conversation),
    ) {
        send(tools, Of::Conversation, id, &fields, attempts).await?;
    }
    Ok(update)
}

/// The customer updates this run has confirmed, each by its customer's id and body. The
/// rows of one customer (its tickets) that tomorrow's export changed alike would each send
/// the same update: the first sends it, a row that finds it in flight waits for it, and a
/// row that finds it confirmed records it as sent and sends nothing. One that failed is
/// tried again by the next row that needs it. Kept for the run only: an update is
/// idempotent, so a run killed between two such rows costs the next run one more.
#[derive(Debug, Default)]
pub(super) struct CustomerUpdates {
    sent: Mutex<HashMap<String, Arc<OnceCell<()>>>>,
}

impl CustomerUpdates {
    /// The cell that says whether this update of customer `id` is confirmed.
    fn cell(&self, id: &str, fields: &Map<String, Value>) -> Arc<OnceCell<()>> {
        let key = Self::key(id, fields);
        let mut sent = self
            .sent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(sent.entry(key).or_default())
    }

    /// Whether this update of customer `id` is confirmed already in this run.
    pub(super) fn confirmed(&self, id: &str, fields: &Map<String, Value>) -> bool {
        let sent = self
            .sent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sent.get(&Self::key(id, fields))
            .is_some_and(|cell| cell.initialized())
    }

    /// Records this update of customer `id` as confirmed (by a bulk job).
    pub(super) fn confirm(&self, id: &str, fields: &Map<String, Value>) {
        // Set already: another row's confirmation of the same update.
        let _ = self.cell(id, fields).set(());
    }

    fn key(id: &str, fields: &Map<String, Value>) -> String {
        format!("{id}\n{}", Value::Object(fields.clone()))
    }
}

/// The body of the update of `of`, or None when it has none to send: only the fields that
/// changed, and a customer's `company` whenever it has one (the docs: an update that omits
/// `company` unlinks the customer from its company): the id of the company the import
/// resolved for it, else the mapping's own `company`. A bulk job's item is this body with
/// the record's `id`.
pub(super) fn fields_to_send(
    work: &PlannedRow,
    update: &RowUpdate,
    of: Of,
) -> Option<Map<String, Value>> {
    match of {
        Of::Customer if !update.customer_fields.is_empty() => {
            let mut fields = fields_of(&work.plan.customer, &update.customer_fields);
            let resolved = update.company_id.clone().map(Value::String);
            if let Some(company) = resolved.or_else(|| body_field(&work.plan.customer, "company")) {
                fields.insert("company".into(), company);
            }
            Some(fields)
        }
        Of::Conversation if !update.conversation_fields.is_empty() => {
            update.conversation_id.as_ref()?;
            let conversation = work.plan.conversation.as_ref()?;
            Some(fields_of(conversation, &update.conversation_fields))
        }
        Of::Customer | Of::Conversation => None,
    }
}

/// The `fields` of a body as it would be sent.
fn fields_of(body: &impl serde::Serialize, fields: &[String]) -> Map<String, Value> {
    let Ok(Value::Object(mut all)) = serde_json::to_value(body) else {
        return Map::new();
    };
    fields
        .iter()
        .filter_map(|field| Some((field.clone(), all.remove(field)?)))
        .collect()
}

fn body_field(body: &impl serde::Serialize, field: &str) -> Option<Value> {
    fields_of(body, &[field.to_string()]).remove(field)
}

/// What the API's refusal of an update (by the single endpoint, or an item of a bulk job)
/// means for the row: its update fails with the server's words, the row stays done; None
/// for a failure that is no verdict on the update.
pub(super) fn update_refused(of: Of, id: &str, error: &ApiError) -> Option<Halt> {
    let record = of.noun();
    let reason = match error {
        ApiError::Rejected { status, message } => format!(
            "{record} {id}: update refused ({status}): {message}; the row stays as it was last \
             sent, and the next run tries again"
        ),
        ApiError::Duplicate { message } => {
            format!("{record} {id}: update refused (409): {message}")
        }
        _ => return None,
    };
    Some(Halt::Failed {
        field: Some(record.into()),
        reason,
    })
}

/// One update, sent again after transient failures (it is idempotent) and after its
/// record's own limit, within the row's retry budget.
async fn send(
    tools: &Tools,
    of: Of,
    id: &str,
    fields: &Map<String, Value>,
    attempts: &mut Attempts<'_>,
) -> Result<(), Halt> {
    loop {
        attempts.check_stop()?;
        attempts.requests += 1;
        let sent = match of {
            Of::Customer => tools.client.update_customer(id, fields).await,
            Of::Conversation => tools.client.update_conversation(id, fields).await,
        };
        match sent {
            Ok(()) => return Ok(()),
            Err(error) => match update_refused(of, id, &error) {
                Some(halt) => return Err(halt),
                None => attempts.after_failure(&error).await?,
            },
        }
    }
}
