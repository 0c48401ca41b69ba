//! The sandbox's conversation threads: every message and note made, in creation order, by
//! conversation, with the lookup of a message by its externalId (exact; not unique: the
//! docs do not say the live API refuses a repeated one, so the sandbox takes it, and a
//! blind re-send makes a duplicate) and the page-by-page listing of a conversation's notes.
//! Bodies reaching this module have passed `validate.rs` and the store's checks.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Whether a thread item is a message or an internal note.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ThreadKind {
    Message,
    Note,
}

impl ThreadKind {
    /// `message` or `note`, as the API's `type` says.
    pub fn noun(self) -> &'static str {
        match self {
            ThreadKind::Message => "message",
            ThreadKind::Note => "note",
        }
    }
}

/// A message or a note as the sandbox holds it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ThreadRecord {
    pub id: String,
    pub kind: ThreadKind,
    /// The conversation's id.
    pub conversation: String,
    /// The conversation's customer's id.
    pub customer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Every other accepted field, as sent (a note's text is `body["body"]`, a message's
    /// `body["preview"]`).
    #[serde(default)]
    pub body: Map<String, Value>,
    /// When the last update wrote it (RFC 3339, milliseconds); None until one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

impl ThreadRecord {
    /// Made from a checked body (`conversation` and `_clientRef` are not kept in `body`).
    pub fn new(
        id: String,
        kind: ThreadKind,
        conversation: &str,
        customer: &str,
        body: &Map<String, Value>,
    ) -> Self {
        let external_id = body
            .get("externalId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let body = body
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "conversation" | "externalId" | "_clientRef"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ThreadRecord {
            id,
            kind,
            conversation: conversation.to_owned(),
            customer: customer.to_owned(),
            external_id,
            body,
            updated_at: None,
        }
    }

    /// The item's text: a note's `body`, a message's `preview`.
    pub fn text(&self) -> Option<&str> {
        let field = match self.kind {
            ThreadKind::Message => "preview",
            ThreadKind::Note => "body",
        };
        self.body.get(field).and_then(Value::as_str)
    }
}

/// One conversation's thread in `GET /__records`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Thread {
    pub conversation: String,
    /// Its messages and notes, in the order they were made.
    pub items: Vec<ThreadRecord>,
}

/// Every message and note, and their indexes.
#[derive(Debug, Default)]
pub struct Threads {
    items: Vec<ThreadRecord>,
    by_conversation: HashMap<String, Vec<usize>>,
    by_id: HashMap<String, usize>,
    /// Message externalId, exact: not unique, creation order.
    messages_by_external_id: HashMap<String, Vec<usize>>,
    messages: usize,
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page<'a> {
    pub items: Vec<&'a ThreadRecord>,
    /// Whether a later page holds more.
    pub more: bool,
}

impl Threads {
    /// Adds an item at the end of its conversation's thread, or, when one with its id is
    /// held (an update, or a later line of the records file), puts it in that one's place
    /// (of the same kind and conversation: updates move neither).
    pub fn add(&mut self, record: ThreadRecord) -> &ThreadRecord {
        if let Some(&index) = self.by_id.get(&record.id) {
            let old = std::mem::replace(&mut self.items[index], record);
            if let Some(all) = old
                .external_id
                .and_then(|x| self.messages_by_external_id.get_mut(&x))
            {
                all.retain(|&i| i != index);
            }
            self.index_external_id(index);
            return &self.items[index];
        }
        let index = self.items.len();
        self.by_conversation
            .entry(record.conversation.clone())
            .or_default()
            .push(index);
        self.by_id.insert(record.id.clone(), index);
        if record.kind == ThreadKind::Message {
            self.messages += 1;
        }
        self.items.push(record);
        self.index_external_id(index);
        &self.items[index]
    }

    /// Indexes the externalId of the item at `index`, if it is a message with one, in
    /// creation order.
    fn index_external_id(&mut self, index: usize) {
        let record = &self.items[index];
        if let (ThreadKind::Message, Some(external_id)) = (record.kind, &record.external_id) {
            let all = self
                .messages_by_external_id
                .entry(external_id.clone())
                .or_default();
            if let Err(at) = all.binary_search(&index) {
                all.insert(at, index);
            }
        }
    }

    /// Drops the messages and notes of a deleted conversation: the API has no delete of
    /// its own for them, and a conversation's history is taken to go with it. Rebuilds the
    /// indexes (a test's sandbox holds few records). How many were dropped.
    pub fn remove_conversation(&mut self, conversation: &str) -> usize {
        let before = self.items.len();
        let kept: Vec<ThreadRecord> = std::mem::take(&mut self.items)
            .into_iter()
            .filter(|item| item.conversation != conversation)
            .collect();
        *self = Threads::default();
        for item in kept {
            self.add(item);
        }
        before - self.items.len()
    }

    /// A message or note by id.
    pub fn get(&self, id: &str) -> Option<&ThreadRecord> {
        self.by_id.get(id).and_then(|&i| self.items.get(i))
    }

    pub fn holds_id(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn message_count(&self) -> usize {
        self.messages
    }

    pub fn note_count(&self) -> usize {
        self.items.len() - self.messages
    }

    /// A message by id, or the first one made with an externalId.
    pub fn find_message(
        &self,
        id: Option<&str>,
        external_id: Option<&str>,
    ) -> Option<&ThreadRecord> {
        let index = match (id, external_id) {
            (Some(id), _) => self.by_id.get(id).copied(),
            (None, Some(x)) => self
                .messages_by_external_id
                .get(x)
                .and_then(|all| all.first().copied()),
            (None, None) => None,
        }?;
        self.items
            .get(index)
            .filter(|r| r.kind == ThreadKind::Message)
    }

    /// Page `page` (from 1) of `size` of a conversation's notes, oldest first.
    pub fn notes_page(&self, conversation: &str, page: usize, size: usize) -> Page<'_> {
        let notes = self
            .by_conversation
            .get(conversation)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.items.get(i))
            .filter(|r| r.kind == ThreadKind::Note);
        let skip = page.saturating_sub(1).saturating_mul(size);
        let mut rest = notes.skip(skip);
        let items: Vec<_> = rest.by_ref().take(size).collect();
        let more = rest.next().is_some();
        Page { items, more }
    }

    /// The threads of `conversations`, in that order; those with no item are left out.
    pub fn threads<'a>(&self, conversations: impl Iterator<Item = &'a str>) -> Vec<Thread> {
        conversations
            .filter_map(|conversation| {
                let indexes = self.by_conversation.get(conversation)?;
                Some(Thread {
                    conversation: conversation.to_owned(),
                    items: indexes
                        .iter()
                        .filter_map(|&i| self.items.get(i).cloned())
                        .collect(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: &str, kind: ThreadKind, conversation: &str, external_id: &str) -> ThreadRecord {
        let body = json!({"externalId": external_id, "body": id, "conversation": conversation});
        let body = body.as_object().cloned().unwrap_or_default();
        ThreadRecord::new(id.into(), kind, conversation, "cust", &body)
    }

    #[test]
    fn an_item_added_again_under_its_id_takes_its_place_and_its_new_external_id() {
        let mut threads = Threads::default();
        threads.add(record("m0", ThreadKind::Message, "c1", "x"));
        threads.add(record("m1", ThreadKind::Message, "c1", "y"));
        threads.add(record("m0", ThreadKind::Message, "c1", "y"));
        assert_eq!(threads.message_count(), 2);
        assert!(threads.find_message(None, Some("x")).is_none());
        let first = threads.find_message(None, Some("y"));
        assert_eq!(first.map(|r| r.id.as_str()), Some("m0"), "the first made");
        let all = threads.threads(["c1"].into_iter());
        let ids: Vec<_> = all[0].items.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["m0", "m1"]);
    }

    #[test]
    fn notes_are_paged_oldest_first_and_messages_found_by_their_first_external_id() {
        let mut threads = Threads::default();
        for i in 0..5 {
            threads.add(record(
                &format!("n{i}"),
                ThreadKind::Note,
                "c1",
                &format!("x{i}"),
            ));
            threads.add(record(&format!("m{i}"), ThreadKind::Message, "c1", "same"));
        }
        threads.add(record("other", ThreadKind::Note, "c2", "x0"));
        let ids = |page: &Page| page.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let first = threads.notes_page("c1", 1, 2);
        assert_eq!(
            (ids(&first), first.more),
            (vec!["n0".into(), "n1".into()], true)
        );
        let last = threads.notes_page("c1", 3, 2);
        assert_eq!((ids(&last), last.more), (vec!["n4".to_string()], false));
        assert!(threads.notes_page("c1", 4, 2).items.is_empty());
        assert!(threads.notes_page("nobody", 1, 2).items.is_empty());
        let found = threads.find_message(None, Some("same"));
        assert_eq!(found.map(|r| r.id.as_str()), Some("m0"));
        assert!(
            threads.find_message(None, Some("x1")).is_none(),
            "a note is no message"
        );
        assert_eq!((threads.message_count(), threads.note_count()), (5, 6));
        let all = threads.threads(["c2", "c1", "c3"].into_iter());
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].items.len(), 10);
        assert!(!all[1].items[0].body.contains_key("conversation"));
        assert_eq!(all[1].items[0].text(), Some("n0"));
    }
}
