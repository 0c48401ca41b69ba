//! A done row's history read again (tomorrow's export, see README "Running it from cron"):
//! each message and note made earlier is compared with what it was sent as (its record's
//! fingerprint against the one its staged body got: one string comparison), and one edited
//! in the source since gets one `PATCH /v1/messages/{id}` (or `/v1/notes/{id}`) of only the
//! fields that changed, then its new fingerprint is recorded. No bulk update of messages or
//! notes is documented, so in bulk mode too each goes alone. An update is idempotent: a
//! lost answer is sent again, and a run killed between the PATCH and its record sends it
//! again next time. The item's own update limit (a 429 while the org's budget is not spent)
//! makes this row wait, not the run. A refusal is reported with the server's words and
//! leaves the item recorded as it was last sent, for the next run to try again. A record
//! made before migration 016 has no fingerprint: what it reads as now is adopted as what
//! was sent, and nothing is sent for it.
//!
//! The planner reopens a done row for this only when its thread's digest says an item is
//! not recorded as sent as it reads now (`EarlierRecords::as_sent`): an unchanged thread
//! is never read back. Two threads differ from their records for good and would be read
//! back every night to send nothing: one whose export dropped an item an earlier run made
//! (its record stays, done), and one whose edit `--update-fields` leaves out (its record
//! keeps what was sent, so that a run that allows the field sends it). So a done row's
//! thread read whole with nothing left to send also records what it was seen as under the
//! rules of the run ([`thread_seen`], migration 019); the next run that stages the same
//! thread under the same rules does not read it again.

use super::handles::Tools;
use super::resume::{OnChange, SyncRules};
use super::row::{Halt, PlannedRow};
use super::thread::{ThreadOutcome, item_body};
use super::worker::Attempts;
use crate::api::ApiError;
use crate::checkpoint::{Change, StepState, StoredRecord};
use crate::fingerprint::{Fingerprint, ThreadDigest};
use crate::history::ItemKind;
use crate::history::store::StagedItem;

/// What a done item read again needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ItemSync {
    /// Nothing: as it was sent, or `--on-change skip`, or changed only in fields
    /// `--update-fields` leaves out (kept recorded as sent, so that a run that allows them
    /// sends them).
    AsSent,
    /// What it reads as now is recorded as sent, and nothing is sent: made before
    /// fingerprints were kept, or changed only by fields the source no longer sets (an
    /// update never clears a field).
    Adopt,
    /// These fields changed, as the API spells them: updated, or under `--on-change fail`
    /// reported.
    Changed(Vec<String>),
}

/// The rule for one done item: `stored`, its record's fingerprint (None: made before
/// migration 016), against `now`, its staged body's. `--update-fields` names an item's
/// fields by kind (`message.preview`, `note.body`, see [`qualified`]).
pub(super) fn compare_item(
    kind: ItemKind,
    stored: Option<&str>,
    now: &str,
    rules: &SyncRules,
) -> ItemSync {
    if rules.on_change == OnChange::Skip {
        return ItemSync::AsSent;
    }
    let Some(stored) = stored else {
        return ItemSync::Adopt;
    };
    if stored == now {
        return ItemSync::AsSent;
    }
    let (Some(before), Some(after)) = (Fingerprint::parse(stored), Fingerprint::parse(now)) else {
        return ItemSync::Adopt;
    };
    let mut fields = before.changed_in(&after);
    if fields.is_empty() {
        return ItemSync::Adopt;
    }
    if let Some(allowed) = &rules.update_fields {
        fields.retain(|field| allowed.contains(&qualified(kind, field)));
        if fields.is_empty() {
            return ItemSync::AsSent;
        }
    }
    ItemSync::Changed(fields)
}

/// What a done row's thread was seen as (`rows.thread_seen`): its staged `digest` under the
/// item fields `--update-fields` allows (all of them when it is not given), so that a run
/// that allows more reads the thread again and sends what the last one left out.
pub(super) fn thread_seen(digest: ThreadDigest, rules: &SyncRules) -> i64 {
    let allowed = match &rules.update_fields {
        None => "*".to_string(),
        Some(fields) => {
            let items = [ItemKind::Message, ItemKind::Note].map(|kind| qualified(kind, ""));
            let allowed: Vec<&str> = (fields.iter())
                .filter(|field| items.iter().any(|prefix| field.starts_with(prefix)))
                .map(String::as_str)
                .collect();
            allowed.join(",")
        }
    };
    let digest = digest.to_stored().to_string();
    ThreadDigest::item("thread-seen", &allowed, &digest) as i64
}

/// An item's field as `--update-fields` and the errors file name it: `message.preview`.
pub(super) fn qualified(kind: ItemKind, field: &str) -> String {
    format!("{}.{field}", kind.as_str())
}

/// Syncs one item of the row's thread that an earlier run made (`record`), at `position`
/// in the row's chain: what it came to is added to `outcome`.
pub(super) async fn sync_done_item(
    tools: &Tools,
    work: &PlannedRow,
    (item, position): (&StagedItem, u64),
    record: &StoredRecord,
    attempts: &mut Attempts<'_>,
    outcome: &mut ThreadOutcome,
) -> Result<(), Halt> {
    let stored = record.fingerprint.as_deref();
    let fields = match compare_item(item.kind, stored, &item.fingerprint, &tools.sync) {
        ItemSync::AsSent => return Ok(()),
        ItemSync::Adopt => return record_as_sent(tools, work, (item, position), 0).await,
        ItemSync::Changed(fields) => fields,
    };
    if tools.sync.on_change == OnChange::Fail {
        for field in fields {
            let field = qualified(item.kind, &field);
            if !outcome.kept_changes.contains(&field) {
                outcome.kept_changes.push(field);
            }
        }
        return Ok(());
    }
    let Some(id) = &record.kustomer_id else {
        let words = format!("{}: no Kustomer id is recorded for it", named(item));
        outcome
            .first_update_refusal
            .get_or_insert((item.kind, words));
        return Ok(());
    };
    let mut body = item_body(tools, item, attempts).await?;
    body.retain(|field, _| fields.contains(field));
    if body.is_empty() {
        // Only fields this key may not set changed (`createdAt` without `org.admin`).
        return record_as_sent(tools, work, (item, position), attempts.take_requests()).await;
    }
    match send_update(tools, item, id, &body, attempts).await? {
        None => {
            match item.kind {
                ItemKind::Message => outcome.messages_updated += 1,
                ItemKind::Note => outcome.notes_updated += 1,
            }
            record_as_sent(tools, work, (item, position), attempts.take_requests()).await
        }
        Some(refusal) => {
            outcome
                .first_update_refusal
                .get_or_insert((item.kind, refusal));
            Ok(())
        }
    }
}

/// Records the item as sent as it reads now (an outcome: not waited for).
async fn record_as_sent(
    tools: &Tools,
    work: &PlannedRow,
    (item, position): (&StagedItem, u64),
    requests: u32,
) -> Result<(), Halt> {
    let change = work.item_change(item, position, StepState::Done, requests);
    tools.journal.record(vec![Change::Record(change)]).await;
    Ok(())
}

/// One item's update, sent again after transient failures (it is idempotent) and after
/// its own update limit, within the row's retry budget. Some(words) when the API refused it.
async fn send_update(
    tools: &Tools,
    item: &StagedItem,
    id: &str,
    fields: &serde_json::Map<String, serde_json::Value>,
    attempts: &mut Attempts<'_>,
) -> Result<Option<String>, Halt> {
    loop {
        attempts.check_stop()?;
        attempts.requests += 1;
        let sent = match item.kind {
            ItemKind::Message => tools.client.update_message(id, fields).await,
            ItemKind::Note => tools.client.update_note(id, fields).await,
        };
        let words = match sent {
            Ok(()) => return Ok(None),
            Err(ApiError::Rejected { status, message }) => format!("({status}): {message}"),
            Err(ApiError::Duplicate { message }) => format!("(409): {message}"),
            Err(error) => {
                attempts.after_failure(&error).await?;
                continue;
            }
        };
        return Ok(Some(format!(
            "{} ({id}): update refused {words}; it stays as it was last sent, and the next \
             run tries again",
            named(item)
        )));
    }
}

/// An item as the errors file names it: its kind, externalId and where it was read.
fn named(item: &StagedItem) -> String {
    format!(
        "{} {:?} ({} line {})",
        item.kind.as_str(),
        item.external_id,
        item.file,
        item.line
    )
}

impl ThreadOutcome {
    /// Items done earlier and updated now.
    pub(super) fn items_updated(&self) -> u64 {
        self.messages_updated + self.notes_updated
    }

    /// Why a row whose thread was written in full is reported all the same: items edited
    /// in the source kept as they were (`--on-change fail`), or an update refused. The row
    /// stays done in the checkpoint, as it is in Kustomer.
    pub(super) fn sync_report(&self) -> Option<Halt> {
        if let Some(first) = self.kept_changes.first() {
            return Some(Halt::Failed {
                field: Some(first.clone()),
                reason: format!(
                    "changed since it was imported ({}); not updated (--on-change fail)",
                    self.kept_changes.join(", ")
                ),
            });
        }
        let (kind, refusal) = self.first_update_refusal.as_ref()?;
        Some(Halt::Failed {
            field: Some(kind.as_str().to_string()),
            reason: refusal.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn print(body: serde_json::Value) -> String {
        Fingerprint::of(&body).to_text()
    }

    #[test]
    fn a_done_item_as_sent_sends_nothing_and_one_edited_names_the_fields_that_changed() {
        let rules = SyncRules::default();
        let sent = print(json!({"channel": "email", "direction": "in", "preview": "Hi"}));
        let edited = print(json!({"channel": "email", "direction": "in", "preview": "Hello"}));
        let message = ItemKind::Message;
        assert_eq!(
            compare_item(message, Some(&sent), &sent, &rules),
            ItemSync::AsSent
        );
        assert_eq!(
            compare_item(message, Some(&sent), &edited, &rules),
            ItemSync::Changed(vec!["preview".into()])
        );
        let dropped = print(json!({"channel": "email", "direction": "in"}));
        assert_eq!(
            compare_item(message, Some(&sent), &dropped, &rules),
            ItemSync::Adopt,
            "a field no longer set is not cleared: recorded, not sent"
        );
    }

    #[test]
    fn an_item_made_before_fingerprints_were_kept_is_adopted_and_skip_compares_nothing() {
        let now = print(json!({"body": "a note"}));
        let mut rules = SyncRules::default();
        assert_eq!(
            compare_item(ItemKind::Note, None, &now, &rules),
            ItemSync::Adopt
        );
        rules.on_change = OnChange::Skip;
        assert_eq!(
            compare_item(ItemKind::Note, None, &now, &rules),
            ItemSync::AsSent
        );
        let before = print(json!({"body": "the note"}));
        assert_eq!(
            compare_item(ItemKind::Note, Some(&before), &now, &rules),
            ItemSync::AsSent
        );
    }

    #[test]
    fn update_fields_names_an_items_fields_by_its_kind() {
        let before = print(json!({"direction": "in", "preview": "Hi", "meta": {"a": 1}}));
        let now = print(json!({"direction": "out", "preview": "Ho", "meta": {"a": 1}}));
        let rules = SyncRules {
            update_fields: Some(["message.preview".to_string(), "status".to_string()].into()),
            ..SyncRules::default()
        };
        assert_eq!(
            compare_item(ItemKind::Message, Some(&before), &now, &rules),
            ItemSync::Changed(vec!["preview".into()])
        );
        let rules = SyncRules {
            update_fields: Some(["preview".to_string(), "note.body".to_string()].into()),
            ..SyncRules::default()
        };
        assert_eq!(
            compare_item(ItemKind::Message, Some(&before), &now, &rules),
            ItemSync::AsSent,
            "a bare name is a customer's or conversation's field"
        );
    }

    #[test]
    fn a_thread_seen_is_another_when_its_digest_or_the_item_fields_allowed_change() {
        let mut digest = ThreadDigest::default();
        digest.add(ThreadDigest::item("message", "m1", "2:preview=00"));
        let rules = |fields: Option<&[&str]>| SyncRules {
            update_fields: fields.map(|f| f.iter().map(|f| f.to_string()).collect()),
            ..SyncRules::default()
        };
        let status = thread_seen(digest, &rules(Some(&["status"])));
        assert_eq!(
            status,
            thread_seen(digest, &rules(Some(&["status", "name"]))),
            "a customer's or conversation's field is not the thread's"
        );
        assert_ne!(status, thread_seen(digest, &rules(None)));
        assert_ne!(status, thread_seen(digest, &rules(Some(&["note.body"]))));
        let mut other = digest;
        other.add(ThreadDigest::item("note", "n1", "2:body=01"));
        assert_ne!(status, thread_seen(other, &rules(Some(&["status"]))));
    }

    #[test]
    fn a_thread_kept_under_fail_is_reported_naming_the_items_fields() {
        let outcome = ThreadOutcome {
            kept_changes: vec!["message.preview".into(), "note.body".into()],
            ..ThreadOutcome::default()
        };
        let Some(Halt::Failed { field, reason }) = outcome.sync_report() else {
            panic!("reported");
        };
        assert_eq!(field.as_deref(), Some("message.preview"));
        assert!(reason.contains("message.preview, note.body"), "{reason}");
        assert!(ThreadOutcome::default().sync_report().is_none());
    }
}
