//! The words the checkpoint stores and the API client speaks in: what a bulk job creates
//! ([`BulkKind`]), what a record of a row is ([`RecordKind`]), how a record came to have its
//! Kustomer id ([`RecordOrigin`]), and where one step of a row's chain of records stands
//! ([`StepState`]). Both `api` and `checkpoint` use them, so they live here, where neither
//! depends on the other for them.
//!
//! Each word has one spelling, `as_str`: the text sent and stored. `parse` reads a stored
//! text back and answers None for one no version of kustomer-import writes; the checkpoint
//! reports that as damage naming the table, the column and the value, never as a default
//! (read as another kind or state, a stored value would have a record sent again or a
//! result applied to the wrong record).

/// Defines an enum of stored words: its variants with their texts, `as_str`, `parse` and
/// `ALL` (every word, in order: for the tests that every word reads back).
macro_rules! stored_words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every word, in the order of the definition.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The text sent and stored.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The word a stored text spells; None for a text no version writes.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

pub(crate) use stored_words;

stored_words! {
    /// What a bulk job creates or updates: the checkpoint's `bulk_jobs.kind` (its endpoint:
    /// `api::bulk`).
    pub enum BulkKind {
        Customers = "customers",
        Conversations = "conversations",
        /// `/v1/messages/bulk`, which answers 200 (its spec says so).
        Messages = "messages",
        /// `/v1/notes/bulk`.
        Notes = "notes",
        /// `PUT /v1/customers/bulk?replace=false`: each item updates the customer its `id`
        /// names (migration 012).
        CustomerUpdates = "customer-updates",
        /// `PUT /v1/conversations/bulk?replace=false`.
        ConversationUpdates = "conversation-updates",
        /// `/v1/companies/bulk`: each item makes the company its `row_key` names (migration
        /// 020; a companies job carries no row).
        Companies = "companies",
    }
}

impl BulkKind {
    /// The kind of record a job of this kind creates, when it is one of a row's history
    /// (whose items are `records`, not `rows`).
    pub fn record_kind(self) -> Option<RecordKind> {
        match self {
            BulkKind::Customers
            | BulkKind::Conversations
            | BulkKind::CustomerUpdates
            | BulkKind::ConversationUpdates
            | BulkKind::Companies => None,
            BulkKind::Messages => Some(RecordKind::Message),
            BulkKind::Notes => Some(RecordKind::Note),
        }
    }

    /// Whether a job of this kind updates records made earlier (a nightly sync's changes)
    /// rather than creating them.
    pub fn updates(self) -> bool {
        matches!(
            self,
            BulkKind::CustomerUpdates | BulkKind::ConversationUpdates
        )
    }
}

stored_words! {
    /// What one record of a row's chain is (the pipeline's `Step`s name themselves by it): a
    /// row has a customer, then a conversation, then the conversation's history in order.
    /// The checkpoint's `records.kind` (migration 008) holds the history's two kinds.
    pub enum RecordKind {
        Customer = "customer",
        Conversation = "conversation",
        /// A message of the conversation (the customer's or an agent's).
        Message = "message",
        /// An internal note, never shown to the customer.
        Note = "note",
    }
}

stored_words! {
    /// How a record came to have its Kustomer id: stored as a customer's state in the
    /// checkpoint (`customers.state`, beside `sent` while only the intent is recorded), and
    /// counted for conversations in a run's summary.
    pub enum RecordOrigin {
        /// This import created it.
        Created = "created",
        /// It was in Kustomer already (a create answered 409, or a bulk job updated it): the
        /// row uses it as it is.
        Linked = "linked",
        /// A create's answer was lost and a lookup found it.
        Reconciled = "reconciled",
    }
}

stored_words! {
    /// Where one step of a row's chain stands: `pending -> sent -> done | failed | unknown`.
    /// Today a row's one `state` column holds its steps' states (see `pipeline::row`); a
    /// table of records that stores each is a proposal
    /// (`docs/proposals/008-records-mirrored.patch`).
    pub enum StepState {
        /// Not sent yet.
        Pending = "pending",
        /// The intent: its create left, or is about to, and no answer is recorded. The next
        /// run looks the record up before sending it again.
        Sent = "sent",
        /// Its Kustomer id is known.
        Done = "done",
        /// Refused, or not sent for a reason recorded with it.
        Failed = "failed",
        /// Failed, and its create may have landed all the same: nothing can look it up, so no
        /// run sends it again; a person must check Kustomer.
        Unknown = "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_and_a_word_no_version_writes_does_not() {
        for kind in BulkKind::ALL {
            assert_eq!(BulkKind::parse(kind.as_str()), Some(*kind));
        }
        for kind in RecordKind::ALL {
            assert_eq!(RecordKind::parse(kind.as_str()), Some(*kind));
        }
        for origin in RecordOrigin::ALL {
            assert_eq!(RecordOrigin::parse(origin.as_str()), Some(*origin));
        }
        for state in StepState::ALL {
            assert_eq!(StepState::parse(state.as_str()), Some(*state));
        }
        assert_eq!(
            BulkKind::parse("Customers"),
            None,
            "spelt as stored, exactly"
        );
        assert_eq!(RecordKind::parse("messages"), None, "singular, as stored");
        assert_eq!(
            RecordOrigin::parse("sent"),
            None,
            "an intent, not an origin"
        );
        assert_eq!(StepState::parse(""), None);
    }
}
