//! A row's history: once its conversation is made, each message and note of its thread, in
//! order, as a step of its own; one request each, or in bulk mode in runs of one kind that go
//! in bulk jobs with other rows' runs (`bulk::history`), the next run only once the last has
//! ended. The thread is read from the run's thread
//! store a page at a time (never whole); each item's intent is durable before its create
//! leaves, its id recorded after; an item an earlier run sent without an answer is looked up
//! (a message by `GET /v1/messages/externalid=`, a note by listing the conversation's notes)
//! and sent again only when not found. An item the API refuses fails alone, with the
//! server's words; the row then ends partly imported (see `PlannedRow::partly_imported`).

use serde_json::{Map, Value};

use super::agents;
use super::bulk::{HistoryJobs, RunEnd, RunItem, RunVerdict};
use super::failure::endpoint_missing;
use super::handles::Tools;
use super::resume::{ItemResume, resume_item};
use super::row::{Halt, PlannedRow};
use super::thread_sync::sync_done_item;
use super::worker::Attempts;
use crate::api::ApiError;
use crate::checkpoint::{Change, RecordOrigin, StepState};
use crate::history::ItemKind;
use crate::history::store::{PAGE, StagedItem};

/// Position of the first history step in a row's chain (0: customer, 1: conversation).
const FIRST_POSITION: u64 = 2;

/// What writing a row's thread came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ThreadOutcome {
    pub messages_created: u64,
    pub notes_created: u64,
    /// Found by lookup after an earlier answer was lost.
    pub reconciled: u64,
    /// Done in an earlier run.
    pub already_done: u64,
    pub failed: u64,
    /// Why the first refused item was refused, naming it.
    pub first_failure: Option<String>,
    /// Done earlier, edited in the source since, and updated now (see `thread_sync`).
    pub messages_updated: u64,
    pub notes_updated: u64,
    /// Fields of items done earlier that changed and were kept as they were
    /// (`--on-change fail`), named `message.preview`.
    pub kept_changes: Vec<String>,
    /// The first update of an item done earlier that the API refused: its kind and why.
    pub first_update_refusal: Option<(ItemKind, String)>,
}

/// How one item settled.
enum ItemVerdict {
    Made(String, RecordOrigin),
    Refused(String),
}

/// Writes the row's thread to the conversation `conversation_id`, in order: one request per
/// item, or, with `bulk`, in runs that go in bulk jobs (see [`crate::pipeline::bulk`]'s
/// history), an item whose earlier answer was lost still looked up alone first.
pub(super) async fn send_thread(
    tools: &Tools,
    work: &PlannedRow,
    conversation_id: &str,
    attempts: &mut Attempts<'_>,
    bulk: Option<&HistoryJobs>,
) -> Result<ThreadOutcome, Halt> {
    let _writing = bulk.map(HistoryJobs::writing);
    let mut writer = ThreadWriter {
        tools,
        work,
        conversation_id,
        outcome: ThreadOutcome::default(),
    };
    let mut cursor = None;
    let mut position = FIRST_POSITION;
    loop {
        let page = read_page(tools, &work.origin.key, cursor)?;
        let Some(last) = page.last() else {
            return Ok(writer.outcome);
        };
        cursor = Some(last.cursor);
        let mut run: Vec<(&StagedItem, u64)> = Vec::new();
        for item in &page {
            let earlier = work.earlier_records.of(item);
            match (resume_item(earlier.map(|record| record.state)), bulk) {
                (ItemResume::Skip, _) => {
                    writer.outcome.already_done += 1;
                    if let Some(record) = earlier {
                        let outcome = &mut writer.outcome;
                        sync_done_item(tools, work, (item, position), record, attempts, outcome)
                            .await?;
                    }
                }
                (ItemResume::Send { reconcile_first }, Some(bulk)) => {
                    // An earlier answer was lost: looked up alone, and if it is not there,
                    // sent with the others.
                    if !(reconcile_first && writer.found(item, position, attempts).await?) {
                        if run
                            .first()
                            .is_some_and(|(first, _)| first.kind != item.kind)
                        {
                            writer
                                .send_run(bulk, std::mem::take(&mut run), attempts)
                                .await?;
                        }
                        run.push((item, position));
                    }
                }
                (ItemResume::Send { reconcile_first }, None) => {
                    writer
                        .send_alone(item, position, reconcile_first, attempts)
                        .await?;
                }
            }
            position += 1;
        }
        if let Some(bulk) = bulk.filter(|_| !run.is_empty()) {
            writer.send_run(bulk, run, attempts).await?;
        }
    }
}

/// One row's thread being written, and what it has come to so far.
struct ThreadWriter<'a> {
    tools: &'a Tools,
    work: &'a PlannedRow,
    conversation_id: &'a str,
    outcome: ThreadOutcome,
}

impl ThreadWriter<'_> {
    /// Looks up an item an earlier attempt may have made; true when found (and recorded).
    async fn found(
        &mut self,
        item: &StagedItem,
        position: u64,
        attempts: &mut Attempts<'_>,
    ) -> Result<bool, Halt> {
        let id = loop {
            attempts.requests += 1;
            match find_item(self.tools, self.conversation_id, item).await {
                Ok(id) => break id,
                Err(error) => attempts.after_failure(&error).await?,
            }
        };
        let Some(id) = id else {
            return Ok(false);
        };
        let verdict = ItemVerdict::Made(id, RecordOrigin::Reconciled);
        tally(&mut self.outcome, item, &verdict);
        record_verdict(self.tools, self.work, item, position, verdict, attempts).await;
        Ok(true)
    }

    /// Sends one item by itself (its intent first) and records how it settled.
    async fn send_alone(
        &mut self,
        item: &StagedItem,
        position: u64,
        reconcile_first: bool,
        attempts: &mut Attempts<'_>,
    ) -> Result<(), Halt> {
        let (tools, work) = (self.tools, self.work);
        let verdict = send_item(
            tools,
            work,
            self.conversation_id,
            item,
            position,
            reconcile_first,
            attempts,
        )
        .await?;
        tally(&mut self.outcome, item, &verdict);
        record_verdict(tools, work, item, position, verdict, attempts).await;
        Ok(())
    }

    /// Sends a run of items of one kind in a bulk job and settles each item: recorded by
    /// the job when its result says, else looked up and sent alone as its job's end allows.
    async fn send_run(
        &mut self,
        bulk: &HistoryJobs,
        run: Vec<(&StagedItem, u64)>,
        attempts: &mut Attempts<'_>,
    ) -> Result<(), Halt> {
        let Some((first, _)) = run.first() else {
            return Ok(());
        };
        let kind = first.kind;
        let mut items = Vec::with_capacity(run.len());
        for (item, position) in &run {
            let mut body = item_body(self.tools, item, attempts).await?;
            body.insert(
                "conversation".into(),
                Value::String(self.conversation_id.to_string()),
            );
            let intent = self.work.item_change(item, *position, StepState::Sent, 1);
            items.push(RunItem { body, intent });
        }
        attempts.check_stop()?;
        match bulk.send(kind, items).await {
            RunEnd::Settled(verdicts) => {
                // Items the job left unsettled are looked up after single mode's wait after
                // a lost answer, for a write still in progress (or an index that lags) to
                // show.
                if verdicts.iter().any(|v| matches!(v, RunVerdict::Unknown)) {
                    let at = tokio::time::Instant::now() + self.tools.retry.reconcile_delay;
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.tools.control.soft().cancelled() => return Err(Halt::stopping()),
                    }
                }
                for ((item, position), verdict) in run.into_iter().zip(verdicts) {
                    let settled = match verdict {
                        RunVerdict::Made(id, origin) => ItemVerdict::Made(id, origin),
                        RunVerdict::Refused(reason) => ItemVerdict::Refused(reason),
                        RunVerdict::Unknown => {
                            self.send_alone(item, position, true, attempts).await?;
                            continue;
                        }
                    };
                    tally(&mut self.outcome, item, &settled);
                }
            }
            RunEnd::SendAlone => {
                for (item, position) in run {
                    self.send_alone(item, position, false, attempts).await?;
                }
            }
            RunEnd::LookUpAfter(at) => {
                if let Some(at) = at {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.tools.control.soft().cancelled() => return Err(Halt::stopping()),
                    }
                }
                for (item, position) in run {
                    self.send_alone(item, position, true, attempts).await?;
                }
            }
            RunEnd::Halted(halt) => return Err(halt),
        }
        Ok(())
    }
}

fn read_page(
    tools: &Tools,
    thread: &str,
    cursor: Option<crate::history::store::Cursor>,
) -> Result<Vec<StagedItem>, Halt> {
    let Some(pages) = &tools.threads else {
        return Ok(Vec::new());
    };
    let pages = pages
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    pages.page(thread, cursor, PAGE).map_err(|error| {
        tools
            .control
            .halt(super::StopReason::Input(error.to_string()));
        Halt::Pending(error.to_string())
    })
}

fn tally(outcome: &mut ThreadOutcome, item: &StagedItem, verdict: &ItemVerdict) {
    match verdict {
        ItemVerdict::Made(_, RecordOrigin::Created) => match item.kind {
            ItemKind::Message => outcome.messages_created += 1,
            ItemKind::Note => outcome.notes_created += 1,
        },
        ItemVerdict::Made(..) => outcome.reconciled += 1,
        ItemVerdict::Refused(reason) => {
            outcome.failed += 1;
            outcome.first_failure.get_or_insert_with(|| {
                format!(
                    "{} {:?} ({} line {}): {reason}",
                    item.kind.as_str(),
                    item.external_id,
                    item.file,
                    item.line
                )
            });
        }
    }
}

/// Records how an item settled (an outcome: not waited for).
async fn record_verdict(
    tools: &Tools,
    work: &PlannedRow,
    item: &StagedItem,
    position: u64,
    verdict: ItemVerdict,
    attempts: &mut Attempts<'_>,
) {
    let mut change = work.item_change(item, position, StepState::Done, attempts.take_requests());
    match verdict {
        ItemVerdict::Made(id, origin) => {
            change.kustomer_id = Some(id);
            change.origin = Some(origin);
            // Found after a lost answer, it holds the body its intent went out with, whose
            // fingerprint is kept: the next run sends what was edited since, if anything.
            if origin != RecordOrigin::Created {
                change.fingerprint = None;
            }
        }
        ItemVerdict::Refused(reason) => {
            change.state = StepState::Failed;
            change.error = Some(reason);
            change.fingerprint = None;
        }
    }
    tools.journal.record(vec![Change::Record(change)]).await;
}

/// Sends one item whose intent it records first: looked up first when an earlier answer was
/// lost, and after a 409.
async fn send_item(
    tools: &Tools,
    work: &PlannedRow,
    conversation_id: &str,
    item: &StagedItem,
    position: u64,
    reconcile_first: bool,
    attempts: &mut Attempts<'_>,
) -> Result<ItemVerdict, Halt> {
    let body = item_body(tools, item, attempts).await?;
    attempts.check_stop()?;
    let mut intent = work.item_change(item, position, StepState::Sent, attempts.take_requests());
    if reconcile_first {
        // An earlier intent's body may have landed: its fingerprint is kept until a
        // create of this one does.
        intent.fingerprint = None;
    }
    tools.journal.commit(vec![Change::Record(intent)]).await?;
    let mut unknown = reconcile_first;
    let mut refused_as_duplicate = false;
    loop {
        if unknown {
            attempts.requests += 1;
            match find_item(tools, conversation_id, item).await {
                Ok(Some(id)) => return Ok(ItemVerdict::Made(id, RecordOrigin::Reconciled)),
                Ok(None) if refused_as_duplicate => {
                    return Ok(ItemVerdict::Refused(format!(
                        "refused as a duplicate of {:?}, which no lookup finds",
                        item.external_id
                    )));
                }
                Ok(None) => unknown = false,
                Err(error) => {
                    attempts.after_failure(&error).await?;
                    continue;
                }
            }
        }
        attempts.requests += 1;
        match create_item(tools, conversation_id, item.kind, &body).await {
            Ok(id) => return Ok(ItemVerdict::Made(id, RecordOrigin::Created)),
            Err(error @ ApiError::NoSuchEndpoint { .. }) => {
                let what = format!("creating a {}", item.kind.as_str());
                return Err(endpoint_missing(
                    tools,
                    &what,
                    &error,
                    "does this API have the conversation history endpoints?",
                ));
            }
            Err(ApiError::Rejected { status, message }) => {
                return Ok(ItemVerdict::Refused(format!(
                    "refused ({status}): {message}"
                )));
            }
            Err(ApiError::Duplicate { message }) => {
                tracing::debug!(
                    "{} create answered 409 ({message}); looking it up",
                    item.kind.as_str()
                );
                unknown = true;
                refused_as_duplicate = true;
            }
            Err(error) => {
                unknown |= error.maybe_applied();
                attempts.after_failure(&error).await?;
            }
        }
    }
}

/// Fields only a key holding `org.admin` may set (see the docs' "Messages and notes").
const ADMIN_FIELDS: [&str; 4] = ["createdAt", "createdBy", "modifiedAt", "modifiedBy"];

/// The item's body as sent: its externalId in, its source author (`createdBy`) mapped to a
/// user (see `agents`), `importedAt` stamped unless the source gave one (a message with it
/// is exempt from the per-customer limit), and the fields only an `org.admin` key may set
/// left out unless the key holds it (the author is resolved all the same, to be reported).
pub(super) async fn item_body(
    tools: &Tools,
    item: &StagedItem,
    attempts: &mut Attempts<'_>,
) -> Result<Map<String, Value>, Halt> {
    let rules = tools.rules;
    let mut body: Map<String, Value> =
        serde_json::from_str(&item.body).map_err(|error| Halt::Failed {
            field: Some(item.kind.as_str().into()),
            reason: format!("its staged body cannot be read back: {error}"),
        })?;
    body.insert("externalId".into(), Value::String(item.external_id.clone()));
    let source_author = body.remove("createdBy");
    if let Some(user) = agents::author(tools, source_author.as_ref(), attempts).await? {
        body.insert("createdBy".into(), Value::String(user));
    }
    if !rules.org_admin {
        for field in ADMIN_FIELDS {
            body.remove(field);
        }
    }
    if rules.stamp_imported_at && !body.contains_key("importedAt") {
        body.insert(
            "importedAt".into(),
            Value::String(crate::checkpoint::now_rfc3339()),
        );
    }
    Ok(body)
}

async fn create_item(
    tools: &Tools,
    conversation_id: &str,
    kind: ItemKind,
    body: &Map<String, Value>,
) -> Result<String, ApiError> {
    match kind {
        ItemKind::Message => tools.client.create_message(conversation_id, body).await,
        ItemKind::Note => tools.client.create_note(conversation_id, body).await,
    }
}

async fn find_item(
    tools: &Tools,
    conversation_id: &str,
    item: &StagedItem,
) -> Result<Option<String>, ApiError> {
    match item.kind {
        ItemKind::Message => tools.client.find_message(&item.external_id).await,
        ItemKind::Note => {
            tools
                .client
                .find_note(conversation_id, &item.external_id)
                .await
        }
    }
}
