//! The resume rules: from what the checkpoint holds of a row (and what this run learnt from
//! the bulk jobs earlier runs left) to what this run does with it. Pure functions, so that
//! every rule has a unit test that needs no server; the planner carries the decisions out.
//!
//! A row is decided in two steps: [`resume_row`] (skip it, report it failed again, hold it
//! for an earlier job, or send it, from which step), then, for a row whose customer is not
//! known, [`route_customer`] (which row creates the customer, and what the others wait for).

use crate::checkpoint::{CheckpointError, RowState, StepState, StoredCustomer, StoredRow};
use crate::fingerprint::Fingerprint;

/// What this run learnt of one row from the jobs earlier runs left unfinished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct EarlierJobFacts {
    /// Carried by a job this run could not finish: sent again, it could land twice.
    pub held: bool,
    /// Settled by such a job in this run; true when the job created its conversation.
    pub settled_now: Option<bool>,
}

/// What a run does with a row it reads, whose plan (what the mapping made of it) is a `P`,
/// or the mapping's refusal an `E`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum RowResume<P, E> {
    /// Held for an earlier run's job that is still unfinished: pending, not sent.
    Held,
    /// Failed in an earlier run and not sent again: reported with the reason recorded then.
    /// `now`: an earlier run's job failed it in this run, so it counts as this run's.
    FailedEarlier { now: bool },
    /// A row the mapping refuses: it fails now.
    Invalid(E),
    /// Done: nothing to create. `settled_now` as in [`EarlierJobFacts`]; `plan`, what the
    /// row maps to now, which [`sync_done_row`] compares with what was sent.
    Done { settled_now: Option<bool>, plan: P },
    /// To send, from the first step not done.
    Send(P, SendFrom),
}

/// Where a row to send takes up its chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct SendFrom {
    /// No run has seen it: recorded pending before anything else.
    pub first_seen: bool,
    /// Its customer step is done, with this id: it goes on to its conversation.
    pub customer_id: Option<String>,
    /// Its conversation step may have been sent (sent, or failed after an intent): looked
    /// up before it is sent again, by the externalId it went out with.
    pub reconcile_conversation: Option<Option<String>>,
    /// Its customer counts as reused (known, and not made by an earlier job in this run).
    pub customer_reused: bool,
    /// Its conversation step is done, with this id: it goes on to its history.
    pub conversation_id: Option<String>,
}

/// A done row read again with history the checkpoint has not recorded done (tomorrow's
/// export, with new messages on an old conversation): its conversation is made and its
/// thread is not, so it is taken up at its history, as `conversation_ok`. `stored` is the
/// row read whole (`Checkpoint::row`), `unfinished` whether its thread has items the
/// checkpoint does not hold as done.
pub(super) fn reopened_for_history(mut stored: StoredRow, unfinished: bool) -> StoredRow {
    if stored.state == RowState::Done && unfinished && stored.conversation_id.is_some() {
        stored.state = RowState::ConversationOk;
    }
    stored
}

/// The rules of resume for one row: `stored` is what the checkpoint holds of it (None: never
/// seen), `plan` what the mapping made of the row as read now.
pub(super) fn resume_row<P, E>(
    stored: Option<&StoredRow>,
    plan: Result<P, E>,
    retry_failed: bool,
    earlier: EarlierJobFacts,
) -> RowResume<P, E> {
    let Some(stored) = stored else {
        return match plan {
            Ok(plan) => RowResume::Send(
                plan,
                SendFrom {
                    first_seen: true,
                    ..SendFrom::default()
                },
            ),
            Err(error) => RowResume::Invalid(error),
        };
    };
    if earlier.held {
        return RowResume::Held;
    }
    let failed = stored.state == RowState::Failed;
    // A failed row whose create may have landed is never retried blindly; one that failed
    // just now, by an earlier job, is not retried in the same run.
    let failed_earlier =
        failed && (stored.outcome_unknown || !retry_failed || earlier.settled_now.is_some());
    if failed_earlier {
        return RowResume::FailedEarlier {
            now: earlier.settled_now.is_some(),
        };
    }
    let plan = match plan {
        Ok(plan) => plan,
        Err(error) => return RowResume::Invalid(error),
    };
    if stored.state == RowState::Done {
        return RowResume::Done {
            settled_now: earlier.settled_now,
            plan,
        };
    }
    // A conversation create left (or, for a failed row retried now, may have left).
    // Reconciled with the externalId that went out with the request, whatever this run
    // derives: the flags or the mapping may have changed since.
    let conversation_sent = stored.conversation_id.is_none()
        && (stored.state == RowState::ConversationSent
            || (failed && stored.conversation_external_id.is_some()));
    let from = SendFrom {
        first_seen: false,
        customer_id: stored.customer_id.clone(),
        reconcile_conversation: conversation_sent.then(|| stored.conversation_external_id.clone()),
        customer_reused: stored.customer_id.is_some() && earlier.settled_now.is_none(),
        // Made, and its history unfinished (or, for a row failed partly imported and
        // retried now, some of it refused).
        conversation_id: stored.conversation_id.clone(),
    };
    RowResume::Send(plan, from)
}

/// What a run does when a done row's record changed in the source (`--on-change`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnChange {
    /// Update the fields that changed (PATCH), and nothing else.
    #[default]
    Update,
    /// Send nothing: a done row stays as it was made.
    Skip,
    /// Report the row failed (the checkpoint keeps it done): a person decides.
    Fail,
}

/// The rules a nightly run syncs done rows by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncRules {
    pub on_change: OnChange,
    /// `--update-fields`: the only fields an update may set (None: any).
    pub update_fields: Option<std::collections::BTreeSet<String>>,
}

/// What a done row read again needs, its records compared with what was last sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Sync {
    /// Nothing changed (or `--on-change skip`): no request.
    Unchanged,
    /// No fingerprint was recorded for a record (a version before this one made it): what
    /// it maps to now is taken as what was sent, and nothing is sent.
    Adopt,
    /// Fields changed; under `--on-change update` they are sent, under `fail` reported.
    Changed {
        customer: Vec<String>,
        conversation: Vec<String>,
    },
}

/// Compares a done row's records as last sent (`stored_*`, the checkpoint's texts) with
/// what they map to now, under `rules`. A field `--update-fields` leaves out does not count
/// as changed.
pub(super) fn sync_done_row(
    stored_customer: Option<&str>,
    stored_conversation: Option<&str>,
    customer_now: &Fingerprint,
    conversation_now: Option<&Fingerprint>,
    rules: &SyncRules,
) -> Sync {
    if rules.on_change == OnChange::Skip {
        return Sync::Unchanged;
    }
    let changed = |stored: Option<&str>, now: Option<&Fingerprint>| -> Option<Vec<String>> {
        let (stored, now) = (stored?, now?);
        if !now.is_outdated() && now.is_text(stored) {
            return Some(Vec::new()); // the nightly case: one comparison, no parse
        }
        let before = Fingerprint::parse(stored)?;
        let mut fields = before.changed_in(now);
        if let Some(allowed) = &rules.update_fields {
            fields.retain(|field| allowed.contains(field));
        }
        Some(fields)
    };
    let customer = changed(stored_customer, Some(customer_now));
    let conversation = changed(stored_conversation, conversation_now);
    // Recorded in an earlier version's hash: compared in it, then recorded anew.
    let outdated =
        customer_now.is_outdated() || conversation_now.is_some_and(Fingerprint::is_outdated);
    let unrecorded =
        outdated || customer.is_none() || (conversation.is_none() && conversation_now.is_some());
    let customer = customer.unwrap_or_default();
    let conversation = conversation.unwrap_or_default();
    match (customer.is_empty() && conversation.is_empty(), unrecorded) {
        (true, false) => Sync::Unchanged,
        (true, true) => Sync::Adopt,
        (false, _) => Sync::Changed {
            customer,
            conversation,
        },
    }
}

/// What a run does with one message or note of a row's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ItemResume {
    /// Done in an earlier run.
    Skip,
    /// To send; `reconcile_first` when an earlier run sent it and its answer was lost.
    Send { reconcile_first: bool },
}

/// The rule for one item, from what the checkpoint holds of it (None: never sent). A
/// refused item is sent again: its row is retried only with `--retry-failed`, and a refusal
/// made nothing.
pub(super) fn resume_item(stored: Option<StepState>) -> ItemResume {
    match stored {
        Some(StepState::Done) => ItemResume::Skip,
        Some(StepState::Sent | StepState::Unknown) => ItemResume::Send {
            reconcile_first: true,
        },
        Some(StepState::Failed | StepState::Pending) | None => ItemResume::Send {
            reconcile_first: false,
        },
    }
}

/// What the planner knows of a customer key, asked in the order of the rules (each only
/// when the ones before it did not decide).
pub(super) trait CustomerFacts {
    /// This run could not create it: the field and reason its rows fail with.
    fn failed(&self, customer_key: &str) -> Option<(Option<String>, String)>;
    /// A row of this run is creating it now.
    fn being_created(&self, customer_key: &str) -> bool;
    /// A job an earlier run left unfinished is creating it.
    fn held_by_earlier_job(&self, customer_key: &str) -> bool;
    /// What the checkpoint holds of it.
    fn stored(&self, customer_key: &str) -> Result<Option<StoredCustomer>, CheckpointError>;
    /// The server's words, when an earlier run's job refused this row's customer as a
    /// duplicate (taken: asked once per row).
    fn take_link(&mut self, row_key: &str) -> Option<String>;
}

/// How a row whose customer is not known to it gets one.
#[derive(Debug)]
pub(super) enum CustomerRoute {
    /// Failed for the reason its customer did.
    Fail(Option<String>, String),
    /// Waits behind the row creating it.
    WaitBehind,
    /// Pending: a job an earlier run left is creating it.
    Held,
    /// Known to the checkpoint: reused.
    Known(String),
    /// This row creates it; `reconcile_first` when an earlier create's answer was lost.
    Create { reconcile_first: bool },
    /// This row links the customer an earlier job found existing.
    Link(String),
    /// The checkpoint could not be read: the run stops, the row pending.
    Unreadable(CheckpointError),
}

/// The rules for a row's customer, when the row does not know it.
pub(super) fn route_customer(
    facts: &mut impl CustomerFacts,
    customer_key: &str,
    row_key: &str,
) -> CustomerRoute {
    if let Some((field, reason)) = facts.failed(customer_key) {
        return CustomerRoute::Fail(field, reason);
    }
    if facts.being_created(customer_key) {
        return CustomerRoute::WaitBehind;
    }
    if facts.held_by_earlier_job(customer_key) {
        return CustomerRoute::Held;
    }
    let reconcile_first = match facts.stored(customer_key) {
        Err(error) => return CustomerRoute::Unreadable(error),
        Ok(Some(StoredCustomer {
            customer_id: Some(id),
            ..
        })) => return CustomerRoute::Known(id),
        // Only its intent: a create left and its answer was not recorded.
        Ok(Some(StoredCustomer {
            customer_id: None, ..
        })) => true,
        Ok(None) => false,
    };
    match facts.take_link(row_key) {
        Some(message) => CustomerRoute::Link(message),
        None => CustomerRoute::Create { reconcile_first },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(state: RowState) -> StoredRow {
        StoredRow::in_state(state)
    }

    fn with_customer(state: RowState, id: &str) -> StoredRow {
        StoredRow {
            customer_id: Some(id.into()),
            ..stored(state)
        }
    }

    const NONE: EarlierJobFacts = EarlierJobFacts {
        held: false,
        settled_now: None,
    };

    /// A row as the mapping accepts it, or refuses it.
    const PLANNED: Result<(), ()> = Ok(());
    const REFUSED: Result<(), ()> = Err(());

    fn send(resume: RowResume<(), ()>) -> SendFrom {
        match resume {
            RowResume::Send((), send) => send,
            other => panic!("expected a send, got {other:?}"),
        }
    }

    #[test]
    fn an_item_done_is_skipped_one_sent_is_looked_up_first_and_the_others_are_sent() {
        assert_eq!(resume_item(Some(StepState::Done)), ItemResume::Skip);
        assert_eq!(
            resume_item(Some(StepState::Sent)),
            ItemResume::Send {
                reconcile_first: true
            }
        );
        for fresh in [None, Some(StepState::Failed)] {
            assert_eq!(
                resume_item(fresh),
                ItemResume::Send {
                    reconcile_first: false
                }
            );
        }
    }

    #[test]
    fn a_row_whose_conversation_is_made_goes_on_with_its_history() {
        let stored = StoredRow {
            conversation_id: Some("v1".into()),
            ..with_customer(RowState::ConversationOk, "c1")
        };
        let from = send(resume_row(Some(&stored), PLANNED, false, NONE));
        assert_eq!(from.customer_id.as_deref(), Some("c1"));
        assert_eq!(from.conversation_id.as_deref(), Some("v1"));
        assert_eq!(from.reconcile_conversation, None);
    }

    #[test]
    fn a_done_row_with_new_history_is_taken_up_at_its_history_and_one_without_is_done() {
        let done = StoredRow {
            conversation_id: Some("v1".into()),
            ..with_customer(RowState::Done, "c1")
        };
        let reopened = reopened_for_history(done.clone(), true);
        assert_eq!(reopened.state, RowState::ConversationOk);
        let from = send(resume_row(Some(&reopened), PLANNED, false, NONE));
        assert_eq!(from.conversation_id.as_deref(), Some("v1"));
        assert_eq!(reopened_for_history(done.clone(), false), done);
        let no_conversation = with_customer(RowState::Done, "c1");
        assert_eq!(
            reopened_for_history(no_conversation.clone(), true),
            no_conversation,
            "a row with no conversation has no history to go on with"
        );
    }

    #[test]
    fn a_row_partly_imported_is_retried_at_its_history_only_when_asked() {
        let partly = StoredRow {
            conversation_id: Some("v1".into()),
            ..with_customer(RowState::Failed, "c1")
        };
        assert_eq!(
            resume_row(Some(&partly), PLANNED, false, NONE),
            RowResume::FailedEarlier { now: false }
        );
        let from = send(resume_row(Some(&partly), PLANNED, true, NONE));
        assert_eq!(from.conversation_id.as_deref(), Some("v1"));
        assert_eq!(
            from.reconcile_conversation, None,
            "its conversation is made"
        );
    }

    #[test]
    fn a_row_never_seen_is_recorded_first_and_sent_from_its_customer() {
        let from = send(resume_row(None, PLANNED, false, NONE));
        assert!(from.first_seen);
        assert_eq!(from.customer_id, None);
        assert_eq!(from.reconcile_conversation, None);
    }

    #[test]
    fn a_bad_row_never_seen_fails_now() {
        assert_eq!(
            resume_row(None, REFUSED, false, NONE),
            RowResume::Invalid(())
        );
    }

    #[test]
    fn a_done_row_is_skipped_with_no_request() {
        let done = stored(RowState::Done);
        assert_eq!(
            resume_row(Some(&done), PLANNED, false, NONE),
            RowResume::Done {
                settled_now: None,
                plan: ()
            }
        );
    }

    #[test]
    fn a_row_an_earlier_job_finished_in_this_run_counts_as_this_runs() {
        let done = stored(RowState::Done);
        let facts = EarlierJobFacts {
            held: false,
            settled_now: Some(true),
        };
        assert_eq!(
            resume_row(Some(&done), PLANNED, false, facts),
            RowResume::Done {
                settled_now: Some(true),
                plan: ()
            }
        );
    }

    #[test]
    fn a_row_an_unfinished_earlier_job_carries_is_held_whatever_its_state() {
        let facts = EarlierJobFacts {
            held: true,
            settled_now: None,
        };
        for state in [
            RowState::CustomerSent,
            RowState::ConversationSent,
            RowState::Done,
        ] {
            assert_eq!(
                resume_row(Some(&stored(state)), PLANNED, false, facts),
                RowResume::Held
            );
        }
    }

    #[test]
    fn a_failed_row_is_reported_again_unless_retried() {
        let failed = stored(RowState::Failed);
        assert_eq!(
            resume_row(Some(&failed), PLANNED, false, NONE),
            RowResume::FailedEarlier { now: false }
        );
        assert!(matches!(
            resume_row(Some(&failed), PLANNED, true, NONE),
            RowResume::Send(..)
        ));
    }

    #[test]
    fn a_failed_row_of_the_same_bad_input_is_failed_earlier_not_a_new_failure() {
        let failed = stored(RowState::Failed);
        assert_eq!(
            resume_row(Some(&failed), REFUSED, false, NONE),
            RowResume::FailedEarlier { now: false }
        );
    }

    #[test]
    fn a_failed_row_whose_create_may_have_landed_is_never_retried() {
        let unknown = StoredRow {
            outcome_unknown: true,
            ..stored(RowState::Failed)
        };
        assert_eq!(
            resume_row(Some(&unknown), PLANNED, true, NONE),
            RowResume::FailedEarlier { now: false }
        );
    }

    #[test]
    fn a_row_an_earlier_job_failed_in_this_run_is_not_retried_in_it() {
        let failed = stored(RowState::Failed);
        let facts = EarlierJobFacts {
            held: false,
            settled_now: Some(false),
        };
        assert_eq!(
            resume_row(Some(&failed), PLANNED, true, facts),
            RowResume::FailedEarlier { now: true }
        );
    }

    #[test]
    fn a_row_whose_customer_is_known_goes_on_to_its_conversation() {
        let from = send(resume_row(
            Some(&with_customer(RowState::CustomerOk, "c1")),
            PLANNED,
            false,
            NONE,
        ));
        assert_eq!(from.customer_id.as_deref(), Some("c1"));
        assert!(from.customer_reused && !from.first_seen);
        assert_eq!(from.reconcile_conversation, None);
    }

    #[test]
    fn a_sent_conversation_is_looked_up_by_the_externalid_it_went_out_with() {
        let sent = StoredRow {
            conversation_external_id: Some("T-1".into()),
            ..with_customer(RowState::ConversationSent, "c1")
        };
        let from = send(resume_row(Some(&sent), PLANNED, false, NONE));
        assert_eq!(from.reconcile_conversation, Some(Some("T-1".into())));
        // One sent with no externalId is still reconciled: it fails as unresolved, never
        // sent blindly again.
        let bare = with_customer(RowState::ConversationSent, "c1");
        let from = send(resume_row(Some(&bare), PLANNED, false, NONE));
        assert_eq!(from.reconcile_conversation, Some(None));
    }

    #[test]
    fn a_failed_row_retried_after_its_conversation_intent_is_looked_up_first() {
        let failed = StoredRow {
            conversation_external_id: Some("T-1".into()),
            ..with_customer(RowState::Failed, "c1")
        };
        let from = send(resume_row(Some(&failed), PLANNED, true, NONE));
        assert_eq!(from.reconcile_conversation, Some(Some("T-1".into())));
    }

    #[test]
    fn a_row_whose_customer_was_sent_starts_from_its_customer() {
        let from = send(resume_row(
            Some(&stored(RowState::CustomerSent)),
            PLANNED,
            false,
            NONE,
        ));
        assert_eq!(from.customer_id, None);
        assert!(!from.first_seen && !from.customer_reused);
    }

    #[derive(Default)]
    struct Facts {
        failed: Option<(Option<String>, String)>,
        being_created: bool,
        held: bool,
        stored: Option<StoredCustomer>,
        link: Option<String>,
    }

    impl CustomerFacts for Facts {
        fn failed(&self, _: &str) -> Option<(Option<String>, String)> {
            self.failed.clone()
        }
        fn being_created(&self, _: &str) -> bool {
            self.being_created
        }
        fn held_by_earlier_job(&self, _: &str) -> bool {
            self.held
        }
        fn stored(&self, _: &str) -> Result<Option<StoredCustomer>, CheckpointError> {
            Ok(self.stored.clone())
        }
        fn take_link(&mut self, _: &str) -> Option<String> {
            self.link.take()
        }
    }

    fn route(mut facts: Facts) -> CustomerRoute {
        route_customer(&mut facts, "ext:C1", "conv:T1")
    }

    #[test]
    fn a_customer_that_could_not_be_made_fails_its_other_rows_without_a_request() {
        let facts = Facts {
            failed: Some((None, "refused".into())),
            being_created: true,
            ..Facts::default()
        };
        assert!(matches!(route(facts), CustomerRoute::Fail(None, reason) if reason == "refused"));
    }

    #[test]
    fn rows_of_a_customer_being_created_wait_behind_the_row_creating_it() {
        let facts = Facts {
            being_created: true,
            ..Facts::default()
        };
        assert!(matches!(route(facts), CustomerRoute::WaitBehind));
    }

    #[test]
    fn a_customer_an_earlier_job_is_creating_holds_its_rows() {
        let facts = Facts {
            held: true,
            ..Facts::default()
        };
        assert!(matches!(route(facts), CustomerRoute::Held));
    }

    #[test]
    fn a_customer_the_checkpoint_knows_is_reused() {
        let facts = Facts {
            stored: Some(StoredCustomer {
                customer_id: Some("c1".into()),
            }),
            link: Some("words".into()),
            ..Facts::default()
        };
        assert!(matches!(route(facts), CustomerRoute::Known(id) if id == "c1"));
    }

    #[test]
    fn a_customer_whose_create_was_unanswered_is_looked_up_before_it_is_sent() {
        let facts = Facts {
            stored: Some(StoredCustomer { customer_id: None }),
            ..Facts::default()
        };
        assert!(matches!(
            route(facts),
            CustomerRoute::Create {
                reconcile_first: true
            }
        ));
        assert!(matches!(
            route(Facts::default()),
            CustomerRoute::Create {
                reconcile_first: false
            }
        ));
    }

    #[test]
    fn a_customer_an_earlier_job_found_existing_is_linked() {
        let facts = Facts {
            stored: Some(StoredCustomer { customer_id: None }),
            link: Some("duplicate detected".into()),
            ..Facts::default()
        };
        assert!(
            matches!(route(facts), CustomerRoute::Link(words) if words == "duplicate detected")
        );
    }

    fn print(body: serde_json::Value) -> Fingerprint {
        Fingerprint::of(&body)
    }

    #[test]
    fn a_done_row_whose_records_map_as_they_were_sent_sends_nothing() {
        let customer = print(serde_json::json!({"name": "Ann"}));
        let conversation = print(serde_json::json!({"status": "open"}));
        let rules = SyncRules::default();
        let (c, v) = (customer.to_text(), conversation.to_text());
        let sync = sync_done_row(Some(&c), Some(&v), &customer, Some(&conversation), &rules);
        assert_eq!(sync, Sync::Unchanged);
    }

    #[test]
    fn the_fields_that_changed_are_named_and_update_fields_narrows_them() {
        let before_customer = print(serde_json::json!({"name": "Ann"})).to_text();
        let before = print(serde_json::json!({"status": "open", "name": "T"})).to_text();
        let customer = print(serde_json::json!({"name": "Ann B"}));
        let conversation = print(serde_json::json!({"status": "done", "name": "T"}));
        let mut rules = SyncRules::default();
        let sync = |rules: &SyncRules| {
            sync_done_row(
                Some(&before_customer),
                Some(&before),
                &customer,
                Some(&conversation),
                rules,
            )
        };
        assert_eq!(
            sync(&rules),
            Sync::Changed {
                customer: vec!["name".into()],
                conversation: vec!["status".into()]
            }
        );
        rules.update_fields = Some(["status".to_string()].into());
        assert_eq!(
            sync(&rules),
            Sync::Changed {
                customer: vec![],
                conversation: vec!["status".into()]
            }
        );
        rules.update_fields = Some(["tags".to_string()].into());
        assert_eq!(sync(&rules), Sync::Unchanged);
        rules.on_change = OnChange::Skip;
        rules.update_fields = None;
        assert_eq!(
            sync(&rules),
            Sync::Unchanged,
            "--on-change skip sends nothing"
        );
    }

    #[test]
    fn a_fingerprint_of_the_release_before_is_compared_in_its_hash_then_recorded_anew() {
        let v1 = |body: serde_json::Value| {
            let text = Fingerprint::of(&body).to_text();
            // The release before wrote SHA-256 hashes without a version: rebuild its text.
            let pairs: Vec<String> = body
                .as_object()
                .unwrap()
                .iter()
                .map(|(field, value)| {
                    format!(
                        "{field}={:016x}",
                        crate::rowkey::fingerprint(&value.to_string())
                    )
                })
                .collect();
            assert!(text.starts_with("2:"));
            pairs.join(";")
        };
        let (customer, conversation) = (
            serde_json::json!({"name": "Ann"}),
            serde_json::json!({"status": "open"}),
        );
        let (stored_customer, stored) = (v1(customer.clone()), v1(conversation.clone()));
        let rules = SyncRules::default();
        let sync = |customer_now: &serde_json::Value, conversation_now: &serde_json::Value| {
            sync_done_row(
                Some(&stored_customer),
                Some(&stored),
                &Fingerprint::like(Some(&stored_customer), customer_now),
                Some(&Fingerprint::like(Some(&stored), conversation_now)),
                &rules,
            )
        };
        assert_eq!(
            sync(&customer, &conversation),
            Sync::Adopt,
            "unchanged: rewritten"
        );
        assert_eq!(
            sync(&customer, &serde_json::json!({"status": "done"})),
            Sync::Changed {
                customer: vec![],
                conversation: vec!["status".into()]
            }
        );
    }

    #[test]
    fn a_record_made_before_fingerprints_were_kept_is_adopted_not_updated() {
        let customer = print(serde_json::json!({"name": "Ann"}));
        let conversation = print(serde_json::json!({"status": "open"}));
        let rules = SyncRules::default();
        assert_eq!(
            sync_done_row(None, None, &customer, Some(&conversation), &rules),
            Sync::Adopt
        );
        // One record recorded and changed: updated; the other adopted with it.
        let before = print(serde_json::json!({"status": "done"})).to_text();
        assert_eq!(
            sync_done_row(None, Some(&before), &customer, Some(&conversation), &rules),
            Sync::Changed {
                customer: vec![],
                conversation: vec!["status".into()]
            }
        );
    }
}
