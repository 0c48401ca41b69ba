//! A done row whose records changed in the source since they were sent (a nightly export of
//! the user's own system): the customer and the conversation each get one update of only
//! the fields that changed (see `resume::sync_done_row`), then what they are now is
//! recorded as what was sent (`PlannedRow::sent_as`). An update is idempotent, so a lost
//! answer is sent again; one the API refuses (a bad value, a record deleted in Kustomer
//! since) is reported with the server's words and leaves the row done, with what was sent
//! before still recorded, so the next run tries again. Nothing else about the row changes.

use serde_json::{Map, Value};

use super::handles::Tools;
use super::row::{Halt, PlannedRow, RowOutcome};
use super::worker::Attempts;
use crate::api::ApiError;
use crate::checkpoint::Change;

/// The Kustomer ids of a done row and the fields of each record to update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RowUpdate {
    pub customer_id: String,
    pub conversation_id: Option<String>,
    pub customer_fields: Vec<String>,
    pub conversation_fields: Vec<String>,
}

/// Which record an update is of.
#[derive(Clone, Copy)]
enum Of {
    Customer,
    Conversation,
}

/// Sends the row's updates and records what was sent.
pub(super) async fn update_row(
    tools: &Tools,
    work: PlannedRow,
    update: RowUpdate,
) -> (PlannedRow, RowOutcome) {
    let mut attempts = Attempts::new(tools);
    let outcome = match send_updates(tools, &work, &update, &mut attempts).await {
        Ok(()) => {
            let updated = Change::RowUpdated {
                row_key: work.origin.key.clone(),
            };
            tools.journal.record(vec![work.sent_as(), updated]).await;
            RowOutcome::Updated {
                customer: !update.customer_fields.is_empty(),
                conversation: !update.conversation_fields.is_empty(),
            }
        }
        Err(halt) => RowOutcome::Halted(halt),
    };
    (work, outcome)
}

async fn send_updates(
    tools: &Tools,
    work: &PlannedRow,
    update: &RowUpdate,
    attempts: &mut Attempts<'_>,
) -> Result<(), Halt> {
    if !update.customer_fields.is_empty() {
        let mut fields = fields_of(&work.plan.customer, &update.customer_fields);
        // The docs: an update that omits `company` unlinks the customer from its company.
        if let Some(company) = body_field(&work.plan.customer, "company") {
            fields.insert("company".into(), company);
        }
        send(tools, Of::Customer, &update.customer_id, &fields, attempts).await?;
    }
    if let (Some(id), Some(conversation)) = (&update.conversation_id, &work.plan.conversation)
        && !update.conversation_fields.is_empty()
    {
        let fields = fields_of(conversation, &update.conversation_fields);
        send(tools, Of::Conversation, id, &fields, attempts).await?;
    }
    Ok(())
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

/// One update, sent again after transient failures (it is idempotent) within the row's
/// retry budget.
async fn send(
    tools: &Tools,
    of: Of,
    id: &str,
    fields: &Map<String, Value>,
    attempts: &mut Attempts<'_>,
) -> Result<(), Halt> {
    let record = match of {
        Of::Customer => "customer",
        Of::Conversation => "conversation",
    };
    loop {
        attempts.check_stop()?;
        attempts.requests += 1;
        let sent = match of {
            Of::Customer => tools.client.update_customer(id, fields).await,
            Of::Conversation => tools.client.update_conversation(id, fields).await,
        };
        match sent {
            Ok(()) => return Ok(()),
            Err(ApiError::Rejected { status, message }) => {
                return Err(Halt::Failed {
                    field: Some(record.into()),
                    reason: format!(
                        "{record} {id}: update refused ({status}): {message}; the row stays \
                         as it was last sent, and the next run tries again"
                    ),
                });
            }
            Err(ApiError::Duplicate { message }) => {
                return Err(Halt::Failed {
                    field: Some(record.into()),
                    reason: format!("{record} {id}: update refused (409): {message}"),
                });
            }
            Err(error) => attempts.after_failure(&error).await?,
        }
    }
}
