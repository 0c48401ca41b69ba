//! The child file's pre-pass (`--messages FILE`): before any row of the conversation file is
//! sent, every record of the child file is mapped through the mapping's `[message]`/`[note]`
//! sections, checked, and staged in the run's thread store under its conversation's row key
//! (`conv:<history.conversation>`), so the join with the conversation rows is on disk, in
//! whatever order either file is in. A record that fails its checks poisons its thread
//! ([`Stager::poison`]): the conversation row that claims it fails with the record's file,
//! line and field. A record whose conversation cannot be told (no id, or unreadable) is a
//! failed row of its own, at its file and line, reported with the orphans.
//!
//! Rows that are messages (`--rows-are-messages`) go through this same pre-pass, each input
//! read as its own child file: their conversation is the one `conversation.externalId`
//! names ([`BoundMapping::parent_conversation`]), whose row key is `conv:<that id>`.

use std::sync::Arc;

use super::checks::finish_item;
use super::store::{Staged, Stager, StoreError};
use crate::input::{InputError, RecordResult};
use crate::mapping::file::BoundMapping;

/// The prefix of the thread a child file's record that names no conversation is poisoned
/// under, alone: no row claims it, so it is reported as a failed row at its line.
pub const UNPLACED: &str = "unplaced:";

/// What the pre-pass of one child file came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChildCounts {
    /// Items staged.
    pub staged: u64,
    /// Records that failed their checks; each poisons its conversation's thread.
    pub failed: u64,
    /// Records that name no conversation (empty `history.conversation`, or unreadable):
    /// each a failed row at its line (with rows that are messages: failed when read as
    /// rows).
    pub unplaced: u64,
}

/// The pre-pass stopped: the child file or the store failed as a whole (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stages every record of a child file (read as `file`) and publishes them.
pub fn stage_child_file(
    records: impl Iterator<Item = Result<RecordResult, InputError>>,
    file: &Arc<str>,
    mapping: &BoundMapping,
    stager: &mut Stager,
) -> Result<ChildCounts, ChildError> {
    let mut counts = ChildCounts::default();
    // Rows that are messages are read again as rows, and one that belongs to no
    // conversation fails there, in the errors file: said once, there.
    for record in records {
        let record = match record? {
            Ok(record) => record,
            Err(error) => {
                unplaced(stager, mapping, file, error.line, &error.reason)?;
                counts.unplaced += 1;
                continue;
            }
        };
        let parent = match mapping.parent_conversation(&record.fields) {
            Ok(Some(parent)) => parent,
            Ok(None) => {
                let why = format!(
                    "{} is empty: the record belongs to no conversation",
                    mapping.parent_field()
                );
                unplaced(stager, mapping, file, record.line, &why)?;
                counts.unplaced += 1;
                continue;
            }
            Err(error) => {
                unplaced(stager, mapping, file, record.line, &error)?;
                counts.unplaced += 1;
                continue;
            }
        };
        let thread = ["conv:", &parent].concat();
        let item = mapping
            .item(&record.fields)
            .and_then(|(kind, body)| finish_item(kind, body, kind.as_str(), file, record.line));
        let refusal = match item {
            Err(error) => Some(error.to_string()),
            Ok(item) => match stager.stage(&thread, &item)? {
                Staged::Kept => None,
                Staged::Repeated(repeated) => {
                    Some(format!("{}.externalId: {repeated}", item.kind.as_str()))
                }
            },
        };
        match refusal {
            None => counts.staged += 1,
            Some(reason) => {
                stager.poison(&thread, file, record.line, &reason)?;
                counts.failed += 1;
            }
        }
    }
    stager.publish()?;
    Ok(counts)
}

/// A record that belongs to no conversation. A child file's is a failed row of its own (a
/// thread of its own that no row claims, reported with the orphans), so that it reaches the
/// errors file and the checkpoint; a row that is a message is read again as a row, and fails
/// there.
fn unplaced(
    stager: &mut Stager,
    mapping: &BoundMapping,
    file: &str,
    line: u64,
    why: &dyn std::fmt::Display,
) -> Result<(), StoreError> {
    if mapping.groups_rows() {
        tracing::debug!("{file} line {line}: {why}");
        return Ok(());
    }
    let thread = format!("{UNPLACED}{file}:{line}");
    stager.poison(&thread, file, line, &why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ItemKind;
    use crate::history::store::ThreadStore;
    use crate::input::{SourceFields, SourceRecord};
    use crate::mapping::file::MappingFile;

    const MAPPING: &str = r#"
[customer]
externalId = "requester"
[history]
conversation = "parent"
kind = "public"
[history.values.kind]
true = "message"
false = "note"
[message]
externalId = "id"
channel = { value = "email" }
direction = "dir"
[note]
externalId = "id"
body = "text"
"#;
    const HEADERS: [&str; 5] = ["parent", "id", "public", "dir", "text"];

    fn records(rows: &[[&str; 5]]) -> Vec<Result<RecordResult, InputError>> {
        let headers = Arc::new(HEADERS.iter().map(|h| h.to_string()).collect::<Vec<_>>());
        rows.iter()
            .enumerate()
            .map(|(index, row)| {
                Ok(Ok(SourceRecord {
                    line: index as u64 + 2,
                    fields: SourceFields::Csv {
                        headers: Arc::clone(&headers),
                        values: row.iter().map(|v| v.to_string()).collect(),
                    },
                    threads: None,
                }))
            })
            .collect()
    }

    #[test]
    fn child_records_are_staged_under_their_conversation_in_order_and_bad_ones_poison_it() {
        let file = Arc::new(MappingFile::parse(MAPPING).unwrap());
        let headers = Arc::new(HEADERS.iter().map(|h| h.to_string()).collect());
        let mapping = file.bind_items(Some(&headers), false).unwrap();
        let store = ThreadStore::create().unwrap();
        let mut stager = store.stager().unwrap();
        let name: Arc<str> = Arc::from("messages.csv");
        let rows = [
            ["B", "b1", "true", "in", ""],
            ["A", "a1", "true", "out", ""],
            ["B", "b2", "false", "", "a note"],
            ["A", "a2", "true", "sideways", ""],
            ["Z", "z1", "false", "", "lost"],
            ["", "x", "true", "in", ""],
            ["B", "b1", "true", "in", ""],
        ];
        let counts =
            stage_child_file(records(&rows).into_iter(), &name, &mapping, &mut stager).unwrap();
        assert_eq!(
            counts,
            ChildCounts {
                staged: 4,
                failed: 2,
                unplaced: 1
            }
        );
        let pages = store.pages().unwrap();
        let b: Vec<(ItemKind, String, u64)> = pages
            .page("conv:B", None, 10)
            .unwrap()
            .into_iter()
            .map(|item| (item.kind, item.external_id, item.line))
            .collect();
        assert_eq!(
            b,
            [
                (ItemKind::Message, "b1".to_string(), 2),
                (ItemKind::Note, "b2".to_string(), 4)
            ]
        );
        let failure = stager.failure("conv:A").unwrap().unwrap();
        assert_eq!((failure.file.as_str(), failure.line), ("messages.csv", 5));
        assert!(
            failure.reason.starts_with("message.direction"),
            "{failure:?}"
        );
        let repeat = stager.failure("conv:B").unwrap().unwrap();
        assert_eq!(repeat.line, 8);
        assert!(repeat.reason.contains("line 2"), "{repeat:?}");
        stager.claim("conv:A").unwrap();
        stager.claim("conv:B").unwrap();
        stager.publish().unwrap();
        // The orphan thread, then the record that named no conversation: a failed row of
        // its own at its line.
        let orphans = pages.orphans().unwrap();
        let seen: Vec<(&str, u64)> = orphans
            .iter()
            .map(|orphan| (orphan.thread.as_str(), orphan.line))
            .collect();
        assert_eq!(seen, [("conv:Z", 6), ("unplaced:messages.csv:7", 7)]);
        assert!(
            orphans[1]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("is empty")),
            "{orphans:?}"
        );
    }
}
