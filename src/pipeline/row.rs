//! What a row is: an ordered chain of records ([`Step`]: its customer, then its
//! conversation; later each message and note), and every transition of a row's state, with
//! what each writes to the checkpoint. Single mode ([`super::worker`]) and bulk mode
//! ([`super::bulk`]) move rows only through the transitions here, so the states a row can be
//! left in after a crash are decided in one place.
//!
//! A step goes `pending -> sent (its intent, durable before the request leaves) -> done(id)
//! | failed(reason) | unknown`. A sent step whose answer was lost is settled by looking the
//! record up by its key ([`Step::lookup_keys`]) before anything is sent again; a step that
//! has no key to be found by is never sent twice blindly: it fails as unresolved. Today the
//! chain's states live in the row's one `state` column (see `RowState`): `customer_sent` is
//! the customer step sent, `customer_ok` the customer done and the conversation pending,
//! `conversation_sent` the conversation sent, `done` every step done.
//!
//! To add a record kind: a [`Step`] variant (its place in the chain, the state its intent
//! is recorded as, its lookup keys), its body in the plan, and its transitions here.
//! See `docs/architecture.md`.

use crate::api::{BulkKind, LookupField};
use std::collections::HashMap;

use super::tags::RowTags;
use crate::checkpoint::{
    Change, CustomerOrigin, RecordChange, RecordKind, RowChange, RowState, StepState, StoredRecord,
};
use crate::fingerprint::{Fingerprint, ThreadDigest};
use crate::history::ItemKind;
use crate::history::store::{StagedItem, ThreadSize};
use crate::mapping::{ConversationBody, Plan};
use crate::rows::{Original, RowOrigin};

/// One record of a row's chain, in the order they are made: a step depends on the ones
/// before it (a conversation needs its customer's id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Customer,
    Conversation,
}

impl Step {
    /// The step of a row a bulk job of `kind` makes; None for messages and notes, whose
    /// jobs make records of the row's history (`records`), not a step of `rows`, and for
    /// updates, which make nothing (the row is done already), and for companies, which are
    /// no row's.
    pub(super) fn of_job(kind: BulkKind) -> Option<Step> {
        match kind {
            BulkKind::Customers => Some(Step::Customer),
            BulkKind::Conversations => Some(Step::Conversation),
            BulkKind::Messages
            | BulkKind::Notes
            | BulkKind::CustomerUpdates
            | BulkKind::ConversationUpdates
            | BulkKind::Companies => None,
        }
    }

    /// The state a row is in while this step's create is unanswered (its intent).
    pub(super) fn intent(self) -> RowState {
        match self {
            Step::Customer => RowState::CustomerSent,
            Step::Conversation => RowState::ConversationSent,
        }
    }

    /// What this step makes.
    pub(super) fn kind(self) -> RecordKind {
        match self {
            Step::Customer => RecordKind::Customer,
            Step::Conversation => RecordKind::Conversation,
        }
    }

    /// The record's name in messages ("customer refused (422): ...").
    pub(super) fn noun(self) -> &'static str {
        self.kind().as_str()
    }

    /// What a lookup finds this step's record by, in the order they are tried: a customer by
    /// its externalId, then each email, then each phone; a conversation by its externalId.
    /// Empty: a lost answer cannot be settled, and the step is not sent again.
    pub(super) fn lookup_keys(self, plan: &Plan) -> Vec<(LookupField, &str)> {
        match self {
            Step::Customer => {
                let customer = &plan.customer;
                let external = customer
                    .external_id
                    .iter()
                    .map(|id| (LookupField::ExternalId, id.as_str()));
                let emails = customer
                    .emails
                    .iter()
                    .map(|e| (LookupField::Email, e.email.as_str()));
                let phones = customer
                    .phones
                    .iter()
                    .map(|p| (LookupField::Phone, p.phone.as_str()));
                external.chain(emails).chain(phones).collect()
            }
            Step::Conversation => plan
                .conversation
                .as_ref()
                .and_then(|conversation| conversation.external_id.as_deref())
                .map(|id| (LookupField::ExternalId, id))
                .into_iter()
                .collect(),
        }
    }
}

/// A row read and planned, on its way to Kustomer.
#[derive(Debug)]
pub(super) struct PlannedRow {
    pub origin: RowOrigin,
    pub original: Original,
    pub plan: Plan,
    /// The checkpoint says a conversation create left and its answer was not recorded.
    pub conversation_unknown: bool,
    /// The conversation an earlier run (or a bulk job of this one) made: the row goes on
    /// with its history.
    pub conversation_id: Option<String>,
    /// How that conversation came to be, when a bulk job of this run made it (counted
    /// once the row is done).
    pub conversation_origin: Option<CustomerOrigin>,
    /// The row's history as staged (see `history::store`): its steps after the conversation.
    pub thread: ThreadSize,
    /// What earlier runs recorded of those steps (empty for a row no run has seen).
    pub earlier_records: EarlierRecords,
    /// What a done row taken up again for its history owes its customer and conversation
    /// (see [`Owed`]); [`Owed::Nothing`] for every other row.
    pub owed: Owed,
    /// Its conversation's tags, resolved to ids by the planner (see `tags`).
    pub tags: RowTags,
}

/// What a done row reopened for its history (tomorrow's export, new messages on an old
/// conversation) owes its customer and conversation, which may have changed in the same
/// export: the worker settles it before the thread, so that what the checkpoint records as
/// sent is what was sent.
#[derive(Clone, Debug, Default)]
pub(super) enum Owed {
    /// Nothing: its records are as they map now (or the row is not a done one).
    #[default]
    Nothing,
    /// An update of what changed, sent before its history.
    Update(super::update::RowUpdate),
    /// Changed, and kept as it is under `--on-change skip` (None) or `fail` (why it is
    /// reported): what was sent before stays recorded.
    Kept(Option<Halt>),
}

/// What the checkpoint holds of a row's history, by record: an item it lacks is pending.
/// With the digest of its done records' fingerprints (see [`ThreadDigest`]), which a
/// thread that reads as it was sent matches.
#[derive(Debug, Default)]
pub(super) struct EarlierRecords {
    records: HashMap<(ItemKind, String), StoredRecord>,
    digest: ThreadDigest,
    /// A done record has no fingerprint (made before migration 016): to adopt.
    unfingerprinted: bool,
}

impl EarlierRecords {
    /// The records of the row `row_key` (its thread's key).
    pub(super) fn new(row_key: &str, records: Vec<StoredRecord>) -> EarlierRecords {
        let prefix = crate::history::derived_item_prefix(row_key);
        let mut digest = ThreadDigest::default();
        let mut unfingerprinted = false;
        for record in records.iter().filter(|r| r.state == StepState::Done) {
            match &record.fingerprint {
                Some(print) => {
                    let identity = crate::history::item_identity(&record.external_id, &prefix);
                    digest.add(ThreadDigest::item(record.kind.as_str(), identity, print));
                }
                None => unfingerprinted = true,
            }
        }
        let records = records
            .into_iter()
            .filter_map(|record| {
                let kind = ItemKind::parse(record.kind.as_str())?;
                Some(((kind, record.external_id.clone()), record))
            })
            .collect();
        EarlierRecords {
            records,
            digest,
            unfingerprinted,
        }
    }

    pub(super) fn of(&self, item: &StagedItem) -> Option<&StoredRecord> {
        self.records.get(&(item.kind, item.external_id.clone()))
    }

    /// How many are done.
    pub(super) fn done(&self) -> u64 {
        self.records
            .values()
            .filter(|record| record.state == StepState::Done)
            .count() as u64
    }

    /// Whether every item of `thread` is done and recorded as sent as it reads now: one
    /// comparison, no item read back. False when an item is new, was edited in the source,
    /// or was made before fingerprints were kept.
    pub(super) fn as_sent(&self, thread: ThreadSize) -> bool {
        !self.unfingerprinted && self.done() == thread.items() && self.digest == thread.digest
    }
}

/// How a worker gets the row's customer id.
#[derive(Clone, Debug)]
pub(super) enum CustomerStep {
    /// Already known (this run or an earlier one).
    Known(String),
    /// This row creates it; `reconcile_first` when an earlier run's create is unanswered.
    Create { reconcile_first: bool },
    /// A bulk job refused it as a duplicate, or in words with no status (`message`): find
    /// the customer that exists and link the row to it, or send it alone if none is found.
    Link { message: String },
}

impl CustomerStep {
    /// Whether the row that takes this step settles its customer for the rows waiting.
    pub(super) fn settles_customer(&self) -> bool {
        !matches!(self, CustomerStep::Known(_))
    }
}

/// Why a row stopped short of done.
#[derive(Clone, Debug)]
pub(super) enum Halt {
    /// Permanent for this data: recorded as failed.
    Failed {
        field: Option<String>,
        reason: String,
    },
    /// Left for the next run.
    Pending(String),
    /// A create's answer was lost and nothing can look the record up: recorded as failed,
    /// marked so that no later run sends it again. A person must check Kustomer.
    Unresolved(String),
}

impl Halt {
    /// A run that is stopping: the row keeps the state (and intent) it reached.
    pub(super) fn stopping() -> Halt {
        Halt::Pending("the run is stopping".into())
    }

    /// A refusal of a step's record, in the words a single create gives ("customer
    /// refused" and `words`).
    pub(super) fn refused(step: Step, words: impl std::fmt::Display) -> Halt {
        Halt::Failed {
            field: None,
            reason: format!("{} refused{words}", step.noun()),
        }
    }
}

/// What a worker reports about a row it finished with.
#[derive(Debug)]
pub(super) enum RowOutcome {
    /// With how its conversation came to have its id (None: the row has none).
    Done {
        conversation: Option<CustomerOrigin>,
    },
    /// Done earlier, and updated now: which of its records were.
    Updated {
        customer: bool,
        conversation: bool,
    },
    Halted(Halt),
}

/// A customer created or found by a worker, or why not.
#[derive(Clone, Debug)]
pub(super) enum Settlement {
    Known(String, CustomerOrigin),
    Failed {
        field: Option<String>,
        reason: String,
    },
    Unsettled,
}

impl Settlement {
    /// How a customer settles when the row creating it stopped short (`halt`).
    pub(super) fn of_halt(halt: &Halt) -> Settlement {
        match halt {
            Halt::Failed { field, reason } => Settlement::Failed {
                field: field.clone(),
                reason: reason.clone(),
            },
            Halt::Unresolved(reason) => Settlement::Failed {
                field: None,
                reason: reason.clone(),
            },
            Halt::Pending(_) => Settlement::Unsettled,
        }
    }
}

/// The transitions: each returns what the checkpoint records for it.
impl PlannedRow {
    /// The row's conversation as it is sent (None: the row has none): its customer's id in,
    /// and `importedAt` stamped (`stamp`) unless the row has one (added here, not in the
    /// plan: the row's key must not change with the clock).
    pub(super) fn conversation_to_send(
        &self,
        customer_id: &str,
        stamp: bool,
    ) -> Option<ConversationBody> {
        let mut body = self.plan.conversation.clone()?;
        body.customer = Some(customer_id.to_string());
        if stamp && !body.extra.contains_key("importedAt") {
            body.extra.insert(
                "importedAt".into(),
                serde_json::Value::String(crate::checkpoint::now_rfc3339()),
            );
        }
        Some(body)
    }

    /// A row no run has seen: recorded pending before anything is sent for it.
    pub(super) fn first_seen(&self) -> RowChange {
        RowChange {
            unseen: true,
            ..self.change(RowState::Pending, None, None)
        }
    }

    /// The customer step sent: the customer's intent, with the values a lookup would find
    /// it by, and the row's. Committed before the create leaves.
    /// The customer's company (when it has one) is recorded with it, for its updates.
    pub(super) fn customer_intent(&self, attempts: u32) -> Vec<Change> {
        let plan = &self.plan;
        let customer = &plan.customer;
        let company = plan
            .company
            .as_ref()
            .map(|company| Change::CustomerCompany {
                customer_key: plan.customer_key.clone(),
                company_key: company.key.clone(),
            });
        let mut changes = vec![
            Change::CustomerSent {
                customer_key: plan.customer_key.clone(),
                external_id: customer.external_id.clone(),
                email: customer.emails.first().map(|e| e.email.clone()),
                phone: customer.phones.first().map(|p| p.phone.clone()),
            },
            Change::Row(RowChange {
                attempts,
                ..self.change(Step::Customer.intent(), None, None)
            }),
        ];
        changes.extend(company);
        changes
    }

    /// The customer step done: its id, under the row's customer key for the other rows.
    pub(super) fn customer_resolved(&self, id: &str, origin: CustomerOrigin) -> Change {
        Change::CustomerResolved {
            customer_key: self.plan.customer_key.clone(),
            customer_id: id.to_string(),
            origin,
        }
    }

    /// The customer step done and the conversation step still pending (it waits, or the run
    /// stops).
    pub(super) fn customer_known(&self, customer_id: &str, attempts: u32) -> RowChange {
        RowChange {
            attempts,
            ..self.change(RowState::CustomerOk, Some(customer_id.to_string()), None)
        }
    }

    /// The conversation step sent, to the customer `customer_id`. Committed before the
    /// create leaves.
    pub(super) fn conversation_intent(&self, customer_id: &str, attempts: u32) -> RowChange {
        RowChange {
            attempts,
            ..self.change(
                Step::Conversation.intent(),
                Some(customer_id.to_string()),
                None,
            )
        }
    }

    /// Every step done (`conversation_id` None: the row has no conversation).
    pub(super) fn done(
        &self,
        customer_id: String,
        conversation_id: Option<String>,
        attempts: u32,
    ) -> RowChange {
        RowChange {
            attempts,
            ..self.change(RowState::Done, Some(customer_id), conversation_id)
        }
    }

    /// Done, and what its conversation and customer were sent as, so that a run that reads
    /// the row again can tell what changed since (see `crate::fingerprint`).
    pub(super) fn done_and_sent(
        &self,
        customer_id: String,
        conversation_id: Option<String>,
        attempts: u32,
    ) -> [Change; 2] {
        [
            Change::Row(self.done(customer_id, conversation_id, attempts)),
            self.sent_as(),
        ]
    }

    /// What the row's conversation was sent as once an append left it holding `tags` (ids):
    /// recorded after [`PlannedRow::sent_as`], so that a re-run that resolves the same names
    /// to those ids finds it unchanged.
    pub(super) fn sent_with_tags(&self, tags: &[String]) -> Option<Change> {
        let mut conversation = self.plan.conversation.clone()?;
        let ids = tags
            .iter()
            .cloned()
            .map(serde_json::Value::String)
            .collect();
        conversation
            .extra
            .insert("tags".into(), serde_json::Value::Array(ids));
        Some(Change::Fingerprints {
            row_key: self.origin.key.clone(),
            conversation: Some(Fingerprint::of(&conversation).to_text()),
            customer: None,
            tags_missing: None,
        })
    }

    /// What the row's conversation and customer are, as the checkpoint keeps them to tell
    /// tomorrow's changes by.
    pub(super) fn sent_as(&self) -> Change {
        Change::Fingerprints {
            row_key: self.origin.key.clone(),
            conversation: self
                .plan
                .conversation
                .as_ref()
                .map(|conversation| Fingerprint::of(conversation).to_text()),
            customer: Some(Fingerprint::of(&self.plan.customer).to_text()),
            tags_missing: self.tags.left_out(),
        }
    }

    /// The conversation step done and the row's history still to write: the conversation's
    /// id is recorded before the first message's intent.
    pub(super) fn conversation_made(
        &self,
        customer_id: &str,
        conversation_id: &str,
        attempts: u32,
    ) -> RowChange {
        RowChange {
            attempts,
            ..self.change(
                RowState::ConversationOk,
                Some(customer_id.to_string()),
                Some(conversation_id.to_string()),
            )
        }
    }

    /// Its history written, but not all of it: `failed` items were refused (`first` says
    /// why the first was). The row fails, its ids kept: the conversation is partly
    /// imported, never reported complete; `--retry-failed` sends the refused items again.
    pub(super) fn partly_imported(
        &self,
        customer_id: &str,
        conversation_id: &str,
        failed: u64,
        first: &str,
    ) -> RowChange {
        let items = if failed == 1 { "item" } else { "items" };
        RowChange {
            field: Some("history".into()),
            error: Some(format!(
                "partly imported: {failed} {items} of its history refused; first: {first}"
            )),
            ..self.change(
                RowState::Failed,
                Some(customer_id.to_string()),
                Some(conversation_id.to_string()),
            )
        }
    }

    /// A step of the history, `position` in the chain, moved to `state`.
    pub(super) fn item_change(
        &self,
        item: &StagedItem,
        position: u64,
        state: StepState,
        attempts: u32,
    ) -> RecordChange {
        RecordChange {
            row_key: self.origin.key.clone(),
            kind: item.kind.record_kind(),
            external_id: item.external_id.clone(),
            position,
            state,
            kustomer_id: None,
            origin: None,
            attempts,
            source_file: item.file.to_string(),
            line: item.line,
            error: None,
            fingerprint: Some(item.fingerprint.clone()),
        }
    }

    /// A row that failed before any step was sent (it could not be planned or its customer
    /// could not be made).
    pub(super) fn failed(&self, field: Option<String>, reason: String) -> RowChange {
        RowChange {
            field,
            error: Some(reason),
            ..self.change(RowState::Failed, None, None)
        }
    }

    /// Why a row stopped short of done, as recorded: failed (with the reason, and marked
    /// when its create may have landed), or, for a pending row, nothing: it keeps the state
    /// (and intent) it reached.
    pub(super) fn halted(&self, halt: &Halt, attempts: u32) -> Option<RowChange> {
        let mut change = self.change(RowState::Failed, None, None);
        change.attempts = attempts;
        match halt {
            Halt::Failed { field, reason } => {
                change.field = field.clone();
                change.error = Some(reason.clone());
            }
            Halt::Unresolved(reason) => {
                change.error = Some(reason.clone());
                change.outcome_unknown = true;
            }
            Halt::Pending(_) => return None,
        }
        Some(change)
    }

    /// The customer's intent dropped: its create was refused for good (nothing was made).
    pub(super) fn customer_withdrawn(&self) -> Change {
        Change::CustomerWithdrawn {
            customer_key: self.plan.customer_key.clone(),
        }
    }

    /// The customer step taken back to pending: its create provably never ran.
    pub(super) fn customer_intent_taken_back(&self) -> [Change; 2] {
        [
            self.customer_withdrawn(),
            Change::Row(self.change(RowState::Pending, None, None)),
        ]
    }

    /// The conversation step taken back to pending: its create provably never ran.
    pub(super) fn conversation_intent_taken_back(&self, customer_id: &str) -> RowChange {
        self.customer_known(customer_id, 0)
    }

    fn change(
        &self,
        state: RowState,
        customer_id: Option<String>,
        conversation_id: Option<String>,
    ) -> RowChange {
        let plan = &self.plan;
        RowChange {
            customer_key: Some(plan.customer_key.clone()),
            conversation_external_id: plan
                .conversation
                .as_ref()
                .and_then(|c| c.external_id.clone()),
            customer_id,
            conversation_id,
            ..RowChange::new(
                self.origin.key.clone(),
                self.origin.file.to_string(),
                self.origin.line,
                state,
            )
        }
    }
}

/// A row that failed before it could be planned (bad input): recorded with its place alone.
pub(super) fn failed_unplanned(
    origin: &RowOrigin,
    field: Option<String>,
    reason: String,
) -> RowChange {
    RowChange {
        field,
        error: Some(reason),
        ..RowChange::new(
            origin.key.clone(),
            origin.file.to_string(),
            origin.line,
            RowState::Failed,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{CustomerBody, EmailEntry, PhoneEntry};

    fn row(conversation_external_id: Option<&str>) -> PlannedRow {
        PlannedRow {
            origin: RowOrigin {
                file: "a.csv".into(),
                line: 7,
                key: "conv:T1".into(),
            },
            original: Original::Raw(serde_json::Value::Null),
            plan: Plan {
                customer_key: "ext:C1".into(),
                customer: CustomerBody {
                    external_id: Some("C1".into()),
                    emails: vec![EmailEntry {
                        email: "a@example.com".into(),
                        kind: None,
                    }],
                    phones: vec![PhoneEntry {
                        phone: "+15550001".into(),
                        kind: None,
                    }],
                    ..CustomerBody::default()
                },
                conversation: Some(ConversationBody {
                    external_id: conversation_external_id.map(str::to_string),
                    ..ConversationBody::default()
                }),
                thread: None,
                company: None,
            },
            conversation_unknown: false,
            conversation_id: None,
            conversation_origin: None,
            thread: ThreadSize::default(),
            earlier_records: EarlierRecords::default(),
            owed: Owed::Nothing,
            tags: RowTags::default(),
        }
    }

    fn only_row(change: &Change) -> &RowChange {
        match change {
            Change::Row(row) => row,
            other => panic!("expected a row change, got {other:?}"),
        }
    }

    #[test]
    fn a_customer_intent_records_what_a_lookup_finds_it_by_and_the_row_as_sent() {
        let Ok([customer, row_change]) =
            <[Change; 2]>::try_from(row(Some("T1")).customer_intent(2))
        else {
            panic!("a customer without a company has two changes")
        };
        match customer {
            Change::CustomerSent {
                customer_key,
                external_id,
                email,
                phone,
            } => {
                assert_eq!(customer_key, "ext:C1");
                assert_eq!(external_id.as_deref(), Some("C1"));
                assert_eq!(email.as_deref(), Some("a@example.com"));
                assert_eq!(phone.as_deref(), Some("+15550001"));
            }
            other => panic!("expected the customer's intent, got {other:?}"),
        }
        let change = only_row(&row_change);
        assert_eq!(change.state, RowState::CustomerSent);
        assert_eq!(change.attempts, 2);
        assert_eq!(change.conversation_external_id.as_deref(), Some("T1"));
        assert_eq!((change.source_file.as_str(), change.line), ("a.csv", 7));
    }

    #[test]
    fn a_conversation_intent_carries_its_customer_and_the_externalid_it_goes_out_with() {
        let change = row(Some("T1")).conversation_intent("c1", 1);
        assert_eq!(change.state, RowState::ConversationSent);
        assert_eq!(change.customer_id.as_deref(), Some("c1"));
        assert_eq!(change.conversation_external_id.as_deref(), Some("T1"));
        assert_eq!(change.conversation_id, None);
    }

    #[test]
    fn done_records_both_ids() {
        let change = row(None).done("c1".into(), Some("v1".into()), 3);
        assert_eq!(change.state, RowState::Done);
        assert_eq!(change.customer_id.as_deref(), Some("c1"));
        assert_eq!(change.conversation_id.as_deref(), Some("v1"));
        assert_eq!(change.attempts, 3);
    }

    #[test]
    fn a_halt_is_recorded_as_failed_marked_when_unresolved_and_not_at_all_when_pending() {
        let work = row(Some("T1"));
        let failed = work
            .halted(
                &Halt::Failed {
                    field: Some("email".into()),
                    reason: "bad".into(),
                },
                1,
            )
            .unwrap();
        assert_eq!(failed.state, RowState::Failed);
        assert_eq!(
            (failed.field.as_deref(), failed.error.as_deref()),
            (Some("email"), Some("bad"))
        );
        assert!(!failed.outcome_unknown);
        let unresolved = work.halted(&Halt::Unresolved("lost".into()), 0).unwrap();
        assert!(unresolved.outcome_unknown, "never sent again");
        assert!(
            work.halted(&Halt::stopping(), 0).is_none(),
            "keeps its intent"
        );
    }

    #[test]
    fn intents_that_provably_never_ran_are_taken_back_a_step() {
        let work = row(None);
        let [withdrawn, back] = work.customer_intent_taken_back();
        assert!(
            matches!(withdrawn, Change::CustomerWithdrawn { customer_key } if customer_key == "ext:C1")
        );
        assert_eq!(only_row(&back).state, RowState::Pending);
        let back = work.conversation_intent_taken_back("c1");
        assert_eq!(back.state, RowState::CustomerOk);
        assert_eq!(back.customer_id.as_deref(), Some("c1"));
    }

    #[test]
    fn a_row_first_seen_is_inserted_pending_without_trying_an_update() {
        let change = row(None).first_seen();
        assert_eq!(change.state, RowState::Pending);
        assert!(change.unseen);
    }

    #[test]
    fn lookups_try_a_customers_externalid_then_emails_then_phones() {
        let work = row(Some("T1"));
        let keys: Vec<(LookupField, &str)> = Step::Customer.lookup_keys(&work.plan);
        assert_eq!(
            keys,
            vec![
                (LookupField::ExternalId, "C1"),
                (LookupField::Email, "a@example.com"),
                (LookupField::Phone, "+15550001"),
            ]
        );
        assert_eq!(
            Step::Conversation.lookup_keys(&work.plan),
            vec![(LookupField::ExternalId, "T1")]
        );
        // No key: a lost answer cannot be settled, and the row is not sent again.
        assert!(Step::Conversation.lookup_keys(&row(None).plan).is_empty());
    }

    #[test]
    fn a_conversation_goes_out_with_its_customer_and_a_stamp_unless_it_has_one() {
        let work = row(Some("T1"));
        let body = work.conversation_to_send("c1", true).unwrap();
        assert_eq!(body.customer.as_deref(), Some("c1"));
        assert!(body.extra.contains_key("importedAt"));
        let unstamped = work.conversation_to_send("c1", false).unwrap();
        assert!(!unstamped.extra.contains_key("importedAt"));
    }

    #[test]
    fn a_step_is_sent_in_the_state_of_its_intent() {
        assert_eq!(Step::Customer.intent(), RowState::CustomerSent);
        assert_eq!(Step::Conversation.intent(), RowState::ConversationSent);
        assert_eq!(Step::of_job(BulkKind::Customers), Some(Step::Customer));
        assert_eq!(
            Step::of_job(BulkKind::Conversations),
            Some(Step::Conversation)
        );
    }
}
