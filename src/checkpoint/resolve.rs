//! What only a person can settle (`kustomer-import resolve`): a row whose conversation create
//! may have landed and which nothing can look up (no externalId went with it) fails with its
//! outcome unknown, is never sent again, and keeps a nightly run exiting 1. Whoever checks
//! Kustomer records what they found: the conversation is there ([`Resolution::Found`], the
//! row is done with its id) or it is not ([`Resolution::Absent`], the row goes back to its
//! conversation step, so the next run sends it). Only such rows can be resolved: any other
//! row's state is the importer's to decide.

use rusqlite::{OptionalExtension, params};

use super::{Checkpoint, CheckpointError, RowState, now_rfc3339};

/// What the person found in Kustomer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The conversation exists, with this id.
    Found { conversation_id: String },
    /// No such conversation: the next run sends it.
    Absent,
}

/// Why a row could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "the checkpoint has no row {0:?} (`kustomer-import export --state failed` lists the \
         failed rows with their keys)"
    )]
    NoSuchRow(String),
    #[error(
        "row {row_key:?} is {state}, not a row whose outcome is unknown: the importer settles \
         it itself"
    )]
    NotUnknown { row_key: String, state: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// The row resolved: where it was read, and the state it is in now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub source_file: String,
    pub line: u64,
    pub state: RowState,
}

impl Checkpoint {
    /// Records what a person found for the row `row_key`, whose outcome is unknown.
    pub fn resolve(
        &self,
        row_key: &str,
        resolution: &Resolution,
    ) -> Result<Resolved, ResolveError> {
        let found = self
            .connection
            .query_row(
                "SELECT state, outcome_unknown, customer_id, source_file, line FROM rows
                 WHERE row_key = ?1",
                [row_key],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.sqlite(e))?;
        let Some((state, unknown, customer_id, source_file, line)) = found else {
            return Err(ResolveError::NoSuchRow(row_key.to_string()));
        };
        // A customer always has a key to be looked up by, so only a conversation's create
        // can end unknown; a row without its customer's id is not one of those.
        if state != RowState::Failed.as_str() || unknown != 1 || customer_id.is_none() {
            let state = if state == RowState::Failed.as_str() {
                "failed with a reason".to_string()
            } else {
                state
            };
            return Err(ResolveError::NotUnknown {
                row_key: row_key.to_string(),
                state,
            });
        }
        let (state, conversation_id) = match resolution {
            Resolution::Found { conversation_id } => (RowState::Done, Some(conversation_id)),
            Resolution::Absent => (RowState::CustomerOk, None),
        };
        self.connection
            .execute(
                "UPDATE rows SET state = ?2, conversation_id = ?3, outcome_unknown = 0,
                     field = NULL, last_error = NULL, updated_at = ?4
                 WHERE row_key = ?1",
                params![row_key, state.as_str(), conversation_id, now_rfc3339()],
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(Resolved {
            source_file,
            line: line.max(0) as u64,
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_rows(sql: &str) -> (tempfile::TempDir, Checkpoint) {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(&dir.path().join("c.sqlite")).unwrap();
        checkpoint.connection.execute_batch(sql).unwrap();
        (dir, checkpoint)
    }

    const ROWS: &str = "
        INSERT INTO rows (row_key, source_file, line, state, customer_id, outcome_unknown,
                          field, last_error, attempts, updated_at)
        VALUES ('row:u', 'a.csv', 7, 'failed', 'c1', 1, 'conversation', 'may exist', 1, 't'),
               ('row:f', 'a.csv', 8, 'failed', 'c1', 0, 'status', 'bad status', 0, 't'),
               ('row:d', 'a.csv', 9, 'done', 'c1', 0, NULL, NULL, 2, 't');";

    #[test]
    fn a_conversation_found_makes_its_row_done_with_its_id() {
        let (_dir, checkpoint) = with_rows(ROWS);
        let found = Resolution::Found {
            conversation_id: "v9".into(),
        };
        let resolved = checkpoint.resolve("row:u", &found).unwrap();
        assert_eq!(
            resolved,
            Resolved {
                source_file: "a.csv".into(),
                line: 7,
                state: RowState::Done
            }
        );
        let row = checkpoint.row("row:u").unwrap().unwrap();
        assert_eq!(row.state, RowState::Done);
        assert_eq!(row.conversation_id.as_deref(), Some("v9"));
        assert!(!row.outcome_unknown && row.last_error.is_none());
    }

    #[test]
    fn a_conversation_absent_sends_the_row_again_from_its_conversation() {
        let (_dir, checkpoint) = with_rows(ROWS);
        checkpoint.resolve("row:u", &Resolution::Absent).unwrap();
        let row = checkpoint.row("row:u").unwrap().unwrap();
        assert_eq!(row.state, RowState::CustomerOk);
        assert_eq!(row.customer_id.as_deref(), Some("c1"));
        assert!(!row.outcome_unknown);
    }

    #[test]
    fn only_a_row_whose_outcome_is_unknown_can_be_resolved() {
        let (_dir, checkpoint) = with_rows(ROWS);
        for (key, words) in [("row:f", "failed with a reason"), ("row:d", "done")] {
            match checkpoint.resolve(key, &Resolution::Absent) {
                Err(ResolveError::NotUnknown { state, .. }) => assert_eq!(state, words),
                other => panic!("{key}: {other:?}"),
            }
        }
        assert!(matches!(
            checkpoint.resolve("row:x", &Resolution::Absent),
            Err(ResolveError::NoSuchRow(_))
        ));
        assert_eq!(
            checkpoint.row("row:d").unwrap().unwrap().state,
            RowState::Done
        );
    }
}
