//! Tags by name: this module owns the rule that turns a conversation's `tags` as the source
//! gives them (names, or ids) into the ids of the org's tags, which is what the API takes
//! (the docs: "a conversation's `tags` is a list of tag ids"). The planner resolves a row's
//! tags once, before anything else is decided about it ([`TagBook::resolve`]), so that
//! creates, bulk items, updates and the fingerprint a re-run compares all see the same
//! sorted list of ids.
//!
//! A name matches a tag whatever its case; a text that is the id of an org tag passes as
//! it is. The org's tags are listed (`GET /v1/tags`, every page) only when a row names one
//! the book does not know: at most once per run for the rows, and once more after an append
//! made tags whose ids its answer cannot tell apart; a run with no tags lists none. What a listing finds is kept in the checkpoint (migration
//! 017), so a resumed run lists again only for a name it has never seen.
//!
//! A name the org lacks is left out of the conversation and counted for the summary; with
//! `--create-missing-tags` it is appended after the conversation is made
//! (`POST /v1/conversations/{id}/tags`, which creates it), as a step of the row: the row is
//! not done until the append is answered, and an append whose answer was lost is sent again
//! (appending is idempotent). A conversation this run did not create itself (found after a
//! lost answer, linked, or made by an earlier run that stopped before the row was done) is
//! sent all of the row's tags again, since what it holds is not known.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::handles::Tools;
use super::row::Halt;
use super::worker::Attempts;
use crate::api::ApiError;
use crate::checkpoint::{Change, KnownTag};
use crate::mapping::ConversationBody;

/// What the book knows of the org's tags.
#[derive(Debug, Default)]
struct Known {
    /// Name, lower-cased, to id.
    by_name: HashMap<String, String>,
    ids: HashSet<String>,
    /// Whether this run has listed the org: a name it did not find then is missing for
    /// the rest of the run, unless an append makes it.
    fresh: bool,
}

impl Known {
    fn learn(&mut self, name: &str, id: &str) {
        self.by_name.insert(name.to_lowercase(), id.to_string());
        self.ids.insert(id.to_string());
    }

    fn id_of(&self, name_or_id: &str) -> Option<&str> {
        if let Some(id) = self.ids.get(name_or_id) {
            return Some(id);
        }
        self.by_name
            .get(&name_or_id.to_lowercase())
            .map(String::as_str)
    }
}

/// The run's tags: what earlier runs and this one learnt, and what became of the names the
/// org lacks.
#[derive(Debug, Default)]
pub(super) struct TagBook {
    /// Held across a listing: rows planned meanwhile wait for it.
    known: tokio::sync::Mutex<Known>,
    /// `--create-missing-tags`.
    create_missing: bool,
    /// Names the org lacked (lower-cased), with the rows of this run sent without them.
    missing: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Names the org lacked that this run appended (and so made), in lower case.
    created: std::sync::Mutex<BTreeSet<String>>,
    /// Listings this run made (each every page of the org's tags).
    pub lists: AtomicU64,
}

/// A row's tags once resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RowTags {
    /// The row has a `tags` field: its ids are sent, and a conversation not made by this
    /// run is sent them again.
    pub any: bool,
    /// The ids the conversation goes out with, sorted.
    pub ids: Vec<String>,
    /// Names the org lacks, as the source first spells them.
    pub missing: Vec<String>,
    /// The conversation holds these ids already: a done row reopened for its history.
    pub settled: bool,
    /// `--create-missing-tags`: the missing names are appended, not left out.
    pub create_missing: bool,
}

impl RowTags {
    /// The names the conversation goes without for good, as the checkpoint records them
    /// (a JSON list); None when it goes with every one.
    pub(super) fn left_out(&self) -> Option<String> {
        (!self.create_missing && !self.missing.is_empty())
            .then(|| Value::from(self.missing.clone()).to_string())
    }
}

impl TagBook {
    /// The book as the checkpoint leaves it (`stored`: name and id).
    pub(super) fn new(stored: Vec<(String, String)>, create_missing: bool) -> TagBook {
        let mut known = Known::default();
        for (name, id) in &stored {
            known.learn(name, id);
        }
        TagBook {
            known: tokio::sync::Mutex::new(known),
            create_missing,
            ..TagBook::default()
        }
    }

    pub(super) fn creates_missing(&self) -> bool {
        self.create_missing
    }

    /// Names the org lacked, each with the rows sent without it.
    pub(super) fn missing(&self) -> BTreeMap<String, u64> {
        lock(&self.missing).clone()
    }

    /// How many names the org lacked this run appended to a conversation (and so made).
    pub(super) fn created(&self) -> u64 {
        lock(&self.created).len() as u64
    }

    /// Counts a row sent without `names` (the org lacks them), each in lower case: the
    /// case a source spells a name in does not make it another.
    pub(super) fn sent_without(&self, names: &[String]) {
        let mut missing = lock(&self.missing);
        for name in names {
            *missing.entry(name.to_lowercase()).or_default() += 1;
        }
    }

    /// The conversation's tags as ids, in `conversation` itself; what it names that the org
    /// lacks is left out and given back. Lists the org first when a name is unknown and
    /// no listing since the last append has looked for it.
    pub(super) async fn resolve(
        &self,
        tools: &Tools,
        conversation: &mut ConversationBody,
        attempts: &mut Attempts<'_>,
    ) -> Result<RowTags, Halt> {
        let Some(Value::Array(items)) = conversation.extra.get("tags") else {
            return Ok(RowTags::default());
        };
        let wanted: Vec<String> = items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_string))
            .collect();
        let mut known = self.known.lock().await;
        let unknown = wanted.iter().any(|name| known.id_of(name).is_none());
        if unknown && !known.fresh {
            self.list(tools, &mut known, attempts).await?;
        }
        let tags = RowTags {
            create_missing: self.create_missing,
            ..split(&known, &wanted)
        };
        drop(known);
        let ids = tags.ids.iter().cloned().map(Value::String).collect();
        conversation.extra.insert("tags".into(), Value::Array(ids));
        Ok(tags)
    }

    /// Lists every tag of the org (retried as every read is) and keeps what it finds, here
    /// and in the checkpoint.
    async fn list(
        &self,
        tools: &Tools,
        known: &mut Known,
        attempts: &mut Attempts<'_>,
    ) -> Result<(), Halt> {
        let listed = loop {
            attempts.check_stop()?;
            attempts.requests += 1;
            match tools.client.list_tags().await {
                Ok(listed) => break listed,
                Err(error) => attempts.after_failure(&error).await?,
            }
        };
        self.lists.fetch_add(1, Ordering::Relaxed);
        let mut by_name = HashMap::new();
        let mut ids = HashSet::new();
        for tag in &listed {
            by_name.insert(tag.name.to_lowercase(), tag.id.clone());
            ids.insert(tag.id.clone());
        }
        *known = Known {
            by_name,
            ids,
            fresh: true,
        };
        let created = lock(&self.created).clone();
        let tags = (listed.into_iter())
            .map(|tag| KnownTag {
                created: created.contains(&tag.name.to_lowercase()),
                name: tag.name,
                id: tag.id,
            })
            .collect();
        tools.journal.record(vec![Change::TagsKnown { tags }]).await;
        Ok(())
    }

    /// Learns the ids an append of `names` (missing) made, for the rest of the run and the
    /// next: from the conversation's ids it answered (`after`) when one name added one id
    /// to those the row knew (`before`), else by listing the org again, unless another
    /// row's append or listing taught them meanwhile.
    async fn learn(
        &self,
        tools: &Tools,
        names: &[String],
        before: &[String],
        after: Option<&[String]>,
        attempts: &mut Attempts<'_>,
    ) -> Result<(), Halt> {
        lock(&self.created).extend(names.iter().map(|name| name.to_lowercase()));
        let new: Vec<&String> = (after.unwrap_or_default().iter())
            .filter(|id| !before.contains(id))
            .collect();
        let mut known = self.known.lock().await;
        if let ([name], [id]) = (names, new.as_slice()) {
            known.learn(name, id);
        } else if names.iter().any(|name| known.id_of(name).is_none()) {
            self.list(tools, &mut known, attempts).await?;
        }
        // Recorded as made by this import, whatever listing taught them first.
        let tags = (names.iter())
            .filter_map(|name| {
                Some(KnownTag {
                    id: known.id_of(name)?.to_string(),
                    name: name.clone(),
                    created: true,
                })
            })
            .collect();
        tools.journal.record(vec![Change::TagsKnown { tags }]).await;
        Ok(())
    }
}

/// The ids of `wanted` as `known` holds them (sorted, each once), and the names it lacks
/// (each once whatever its case, as first spelt).
fn split(known: &Known, wanted: &[String]) -> RowTags {
    let mut ids = BTreeSet::new();
    let mut missing: Vec<String> = Vec::new();
    for name in wanted {
        match known.id_of(name) {
            Some(id) => {
                ids.insert(id.to_string());
            }
            None if missing
                .iter()
                .any(|seen| seen.to_lowercase() == name.to_lowercase()) => {}
            None => missing.push(name.clone()),
        }
    }
    RowTags {
        any: true,
        ids: ids.into_iter().collect(),
        missing,
        settled: false,
        create_missing: false,
    }
}

/// What a row's conversation is sent in an append, and why.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Append {
    pub names_or_ids: Vec<String>,
    /// Of those, the names the org lacked.
    pub missing: Vec<String>,
    /// The ids of the org's tags the row names (what the append adds besides is new).
    pub held: Vec<String>,
}

/// The append a row owes its conversation (None: none): the missing names under
/// `--create-missing-tags`, and all of its ids too when this run did not create the
/// conversation with them (`made_here` false) and it is not known to hold them.
pub(super) fn append_owed(tags: &RowTags, create_missing: bool, made_here: bool) -> Option<Append> {
    let made_here = made_here || tags.settled;
    let missing = if create_missing {
        tags.missing.clone()
    } else {
        Vec::new()
    };
    let ids = if made_here { &[][..] } else { &tags.ids[..] };
    let names_or_ids: Vec<String> = ids.iter().chain(&missing).cloned().collect();
    (!names_or_ids.is_empty()).then(|| Append {
        names_or_ids,
        missing,
        held: tags.ids.clone(),
    })
}

/// Appends `append` to the conversation (sent again after a lost answer: it is idempotent)
/// and gives the conversation's tag ids after it, sorted (None: the answer holds none).
/// A refusal fails the row, its conversation kept: the next run sends the append again.
pub(super) async fn send_append(
    tools: &Tools,
    conversation_id: &str,
    append: &Append,
    attempts: &mut Attempts<'_>,
) -> Result<Option<Vec<String>>, Halt> {
    let answered = loop {
        attempts.check_stop()?;
        attempts.requests += 1;
        match tools
            .client
            .append_tags(conversation_id, &append.names_or_ids)
            .await
        {
            Ok(answered) => break answered,
            Err(ApiError::Rejected { status, message }) => {
                return Err(Halt::Failed {
                    field: Some("tags".into()),
                    reason: format!(
                        "conversation {conversation_id}: tags {:?} refused ({status}): {message}",
                        append.names_or_ids
                    ),
                });
            }
            Err(error) => attempts.after_failure(&error).await?,
        }
    };
    let after = answered.map(|ids| {
        let sorted: BTreeSet<String> = ids.into_iter().collect();
        sorted.into_iter().collect::<Vec<_>>()
    });
    if !append.missing.is_empty() {
        let tags = &tools.tags;
        (tags.learn(
            tools,
            &append.missing,
            &append.held,
            after.as_deref(),
            attempts,
        ))
        .await?;
    }
    Ok(after)
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(tags: &[(&str, &str)]) -> Known {
        let mut known = Known::default();
        for (name, id) in tags {
            known.learn(name, id);
        }
        known
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn names_become_sorted_ids_in_any_case_and_ids_pass_as_they_are() {
        let known = known(&[("VIP", "t2"), ("billing", "t1")]);
        let tags = split(
            &known,
            &names(&["vip", "t1", "Billing", "new", "NEW", "other"]),
        );
        assert_eq!(tags.ids, names(&["t1", "t2"]));
        assert_eq!(tags.missing, names(&["new", "other"]));
        assert!(tags.any);
    }

    #[test]
    fn an_append_is_owed_for_missing_names_only_when_they_are_to_be_made() {
        let tags = RowTags {
            any: true,
            ids: names(&["t1"]),
            missing: names(&["new"]),
            settled: false,
            create_missing: true,
        };
        let made_here = append_owed(&tags, true, true).unwrap();
        assert_eq!(made_here.names_or_ids, names(&["new"]));
        assert_eq!(made_here.held, names(&["t1"]));
        assert_eq!(made_here.missing, names(&["new"]));
        assert_eq!(append_owed(&tags, false, true), None);
        let found = append_owed(&tags, false, false).unwrap();
        assert_eq!(found.names_or_ids, names(&["t1"]), "ids again, no name");
        let all = append_owed(&tags, true, false).unwrap();
        assert_eq!(all.names_or_ids, names(&["t1", "new"]));
        assert_eq!(append_owed(&RowTags::default(), true, false), None);
        let reopened = RowTags {
            settled: true,
            ..tags
        };
        assert_eq!(append_owed(&reopened, false, false), None, "done already");
    }
}
