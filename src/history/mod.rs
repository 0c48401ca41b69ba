//! A conversation's history: its messages and internal notes, in order (its thread). This
//! module owns what one item of a thread is ([`ThreadItem`], as the inputs read it) and the
//! scratch store every thread of a run is staged in ([`store`]) between the reading of an
//! input and the sending of its rows, so that a thread of any length reaches its steps a
//! page at a time and is never held whole (Zendesk allows 5,000 comments a ticket).
//!
//! The three shapes history arrives in all end here: a thread nested in its conversation's
//! line, a child file joined by the conversation's source id, and one row per message. Each
//! item is staged under its thread's key (the row key of its conversation) with where it
//! was read; the pipeline reads the thread back in order (`createdAt`/`sentAt` when the
//! mapping has it, else source order) once the conversation is made.

pub mod checks;
pub mod child;
pub mod store;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::rowkey::DERIVED_ID_PREFIX;
use crate::vocabulary::RecordKind;

/// What one item of a thread is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// A message (`POST /v1/conversations/{id}/messages`), the customer's or an agent's.
    Message,
    /// An internal note (`POST /v1/conversations/{id}/notes`).
    Note,
}

impl ItemKind {
    /// The record kind the checkpoint stores it as.
    pub fn record_kind(self) -> RecordKind {
        match self {
            ItemKind::Message => RecordKind::Message,
            ItemKind::Note => RecordKind::Note,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.record_kind().as_str()
    }

    pub fn parse(text: &str) -> Option<ItemKind> {
        match RecordKind::parse(text)? {
            RecordKind::Message => Some(ItemKind::Message),
            RecordKind::Note => Some(ItemKind::Note),
            RecordKind::Customer | RecordKind::Conversation => None,
        }
    }

    /// The letter of a derived externalId (`kimp-<hash>-m3`).
    fn letter(self) -> char {
        match self {
            ItemKind::Message => 'm',
            ItemKind::Note => 'n',
        }
    }
}

/// One message or note as an input read it, before it is staged.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadItem {
    pub kind: ItemKind,
    /// The source's id for it: sent as its `externalId`, and what it is known by from run to
    /// run. None: one is derived from its thread's key and its position ([`derived_item_id`]).
    pub source_id: Option<String>,
    /// When it was written (`createdAt`/`sentAt`), if the mapping has it: the thread is sent
    /// in this order, then in source order.
    pub at: Option<jiff::Timestamp>,
    /// Its API body, without `conversation`, `externalId` and `importedAt`, which are set
    /// when it is sent. A message has at least `channel`, `app` and `direction`; a note
    /// has `body`.
    pub body: Map<String, Value>,
    /// Where it was read (for the errors file).
    pub file: Arc<str>,
    pub line: u64,
}

/// The externalId of an item the source gives no id: its thread's key hashed, its kind, and
/// its position among its thread's items of that kind in source order (1-based). A re-export
/// that inserts an earlier item of the same kind moves the positions after it: prefer a
/// source id when the export has one.
pub fn derived_item_id(thread: &str, kind: ItemKind, position: u64) -> String {
    format!(
        "{}{}",
        derived_item_prefix(thread),
        derived_item_suffix(kind, position)
    )
}

/// What every derived item id of `thread` starts with (`kimp-<hash>-`).
pub fn derived_item_prefix(thread: &str) -> String {
    let conversation = crate::rowkey::derived_conversation_id(thread);
    let hash = conversation
        .strip_prefix(DERIVED_ID_PREFIX)
        .unwrap_or(&conversation);
    format!("{DERIVED_ID_PREFIX}{hash}-")
}

/// What a derived item id ends with: its kind's letter and its position (`m3`).
fn derived_item_suffix(kind: ItemKind, position: u64) -> String {
    format!("{}{position}", kind.letter())
}

/// What an item is known by within its thread whatever the thread's key (a thread staged
/// under a provisional key is rekeyed): its source id, or, without one, its derived id's
/// suffix (`m3`). The identity of a record whose externalId is `external_id`, in the thread
/// whose derived ids start with `derived_prefix`, is the same text.
pub fn item_identity<'a>(external_id: &'a str, derived_prefix: &str) -> &'a str {
    external_id
        .strip_prefix(derived_prefix)
        .unwrap_or(external_id)
}

/// The identity ([`item_identity`]) of an item being staged at `position` of its kind.
pub fn staged_identity(source_id: Option<&str>, kind: ItemKind, position: u64) -> String {
    match source_id {
        Some(id) => id.to_string(),
        None => derived_item_suffix(kind, position),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_id_is_stable_and_names_its_kind_and_position() {
        let first = derived_item_id("conv:T-1", ItemKind::Message, 1);
        assert_eq!(first, derived_item_id("conv:T-1", ItemKind::Message, 1));
        assert!(
            first.starts_with("kimp-") && first.ends_with("-m1"),
            "{first}"
        );
        assert_ne!(first, derived_item_id("conv:T-2", ItemKind::Message, 1));
        assert!(derived_item_id("conv:T-1", ItemKind::Note, 1).ends_with("-n1"));
    }

    #[test]
    fn item_kinds_are_spelt_as_the_checkpoint_stores_them() {
        for kind in [ItemKind::Message, ItemKind::Note] {
            assert_eq!(ItemKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ItemKind::parse("customer"), None);
    }
}
