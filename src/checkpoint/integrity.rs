//! Telling a checkpoint from any other file, and a sound checkpoint from a damaged one.
//!
//! A checkpoint carries [`APPLICATION_ID`] in its SQLite header. A file without it is a
//! checkpoint only if it holds a checkpoint's tables: one made before the marker, which is
//! adopted (marked) when a run opens it. Anything else at the checkpoint's path (an empty
//! file, another program's database, a file that is not SQLite) is refused, never
//! initialised: a new checkpoint is made under a temporary name and renamed into place
//! with its schema and marker, so no checkpoint is ever seen half made.
//!
//! Damage is what SQLite reports as such (`SQLITE_CORRUPT`, `SQLITE_NOTADB`), a value no
//! version of this tool writes (a state, a job kind), and what SQLite's integrity check
//! finds. The check reads the whole file (see README, "Performance"), so it runs when
//! there is a reason to doubt the file: its last run did not end, the last process to use
//! it did not close it, or this version opens it for the first time.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row};

use super::CheckpointError;

/// The marker in a checkpoint's SQLite header (`PRAGMA application_id`): "KImp".
pub const APPLICATION_ID: i32 = i32::from_be_bytes(*b"KImp");

/// The tables every checkpoint has held since its first schema.
const FIRST_TABLES: [&str; 3] = ["rows", "customers", "runs"];

/// What kind of checkpoint a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Identity {
    /// A checkpoint, marked.
    Marked,
    /// A checkpoint made before the marker: the tables, no marker.
    Unmarked,
}

/// What kind of checkpoint the file at `path` is, from its size and, when it has content,
/// its header and tables; refused when it is not a checkpoint.
pub(super) fn identify(path: &Path, connection: &Connection) -> Result<Identity, CheckpointError> {
    let refused = |reason: String| {
        Err(CheckpointError::NotACheckpoint {
            path: path.to_path_buf(),
            reason,
        })
    };
    let sqlite = |source| CheckpointError::of_sqlite(path, source);
    if std::fs::metadata(path).is_ok_and(|file| file.len() == 0) {
        return refused(
            "it is empty (0 bytes), and a checkpoint never is. If no import has used it, \
             delete it; if one has, it was damaged: restore it from your backup"
                .into(),
        );
    }
    let application_id: i32 = match connection.query_row("PRAGMA application_id", [], |r| r.get(0))
    {
        Ok(id) => id,
        Err(error) if error.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
            return refused(
                "it is not an SQLite database, or its header is damaged. If it is the \
                     checkpoint your imports used, restore it from your backup; otherwise \
                     give another --checkpoint"
                    .into(),
            );
        }
        Err(error) => return Err(sqlite(error)),
    };
    if application_id == APPLICATION_ID {
        return Ok(Identity::Marked);
    }
    if application_id != 0 {
        return refused(format!(
            "it is another program's SQLite database (its header's application id is \
             {application_id:#010x}): give another --checkpoint"
        ));
    }
    let tables: i64 = connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?1, ?2, ?3)",
            FIRST_TABLES,
            |r| r.get(0),
        )
        .map_err(sqlite)?;
    if tables != FIRST_TABLES.len() as i64 {
        return refused(
            "it is an SQLite database without a checkpoint's tables: give another \
             --checkpoint"
                .into(),
        );
    }
    Ok(Identity::Unmarked)
}

/// Why the checkpoint must be checked whole before a run uses it, if it must. `hot_wal`:
/// a `-wal` file with content was beside it before it was opened, which the last
/// connection to close removes.
pub(super) fn reason_to_check(
    connection: &Connection,
    identity: Identity,
    hot_wal: bool,
) -> rusqlite::Result<Option<&'static str>> {
    if identity == Identity::Unmarked {
        return Ok(Some("this version opens it for the first time"));
    }
    if hot_wal {
        return Ok(Some("the last process to use it did not close it"));
    }
    let last_run_ended: Option<bool> = connection
        .query_row(
            "SELECT ended_at IS NOT NULL FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok((last_run_ended == Some(false)).then_some("its last run did not end"))
}

/// Most problems the integrity check lists before it stops.
const PROBLEMS_LISTED: u32 = 5;

/// SQLite's integrity check: every page and record, the CHECK and NOT NULL constraints, and
/// every index against its table (`quick_check` skips the indexes, and would not see a
/// changed byte in a row's key, which the key's index still holds as it was). What it
/// found, if anything.
pub fn integrity_problems(connection: &Connection) -> rusqlite::Result<Option<String>> {
    let mut statement =
        connection.prepare(&format!("PRAGMA integrity_check({PROBLEMS_LISTED})"))?;
    let problems = statement
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((problems != ["ok"]).then(|| problems.join("; ")))
}

/// Whether an error met reading or writing a checkpoint means the file is damaged: what
/// SQLite says of a malformed file, and a value that is not of the type this tool wrote in
/// its column (bytes changed under SQLite, which its record format cannot tell).
pub fn is_damage(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    ) || matches!(
        error,
        rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..)
    )
}

/// The words for the damage an error stands for.
pub(super) fn damage_reason(error: &rusqlite::Error) -> String {
    match error {
        rusqlite::Error::SqliteFailure(_, Some(message)) => message.clone(),
        other => other.to_string(),
    }
}

/// The error a read returns for a value no version of this tool writes: damage that
/// structural checks cannot see, reported as SQLite reports damage so that every caller
/// treats it alike.
pub(super) fn damaged_value(what: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(what),
    )
}

/// A value no version of this tool writes in `table.column`, in the line `whose` ("the row
/// \"conv:T1\"", "the bulk job 3"): damage, named so that the user can find it.
pub(super) fn unwritten_value(
    table: &str,
    column: &str,
    whose: &str,
    value: ValueRef,
) -> rusqlite::Error {
    damaged_value(format!(
        "{table}.{column} of {whose} is {}, which no version of kustomer-import writes",
        shown(value)
    ))
}

/// Where a stored value is: its table and column, and the line it is in (told only when the
/// value cannot be read back).
pub(super) struct Stored<'a, W: FnOnce() -> String> {
    pub table: &'a str,
    pub column: &'a str,
    pub whose: W,
}

impl<W: FnOnce() -> String> Stored<'_, W> {
    fn unwritten(self, value: ValueRef) -> rusqlite::Error {
        unwritten_value(self.table, self.column, &(self.whose)(), value)
    }

    /// The word in column `index` of `row`, read back by `parse` (a vocabulary's `parse`).
    pub fn word<T>(
        self,
        row: &Row,
        index: usize,
        parse: fn(&str) -> Option<T>,
    ) -> rusqlite::Result<T> {
        let value = row.get_ref(index)?;
        match value.as_str().ok().and_then(parse) {
            Some(word) => Ok(word),
            None => Err(self.unwritten(value)),
        }
    }

    /// The flag (0 or 1) in column `index` of `row`.
    pub fn flag(self, row: &Row, index: usize) -> rusqlite::Result<bool> {
        match row.get_ref(index)? {
            ValueRef::Integer(0) => Ok(false),
            ValueRef::Integer(1) => Ok(true),
            value => Err(self.unwritten(value)),
        }
    }

    /// The count or line number (an integer from 0) in column `index` of `row`.
    pub fn count(self, row: &Row, index: usize) -> rusqlite::Result<u64> {
        let value = row.get_ref(index)?;
        match value {
            ValueRef::Integer(number) if number >= 0 => Ok(number as u64),
            value => Err(self.unwritten(value)),
        }
    }

    /// The time (RFC 3339, as [`super::now_rfc3339`] writes it) in column `index` of `row`.
    pub fn time(self, row: &Row, index: usize) -> rusqlite::Result<SystemTime> {
        let value = row.get_ref(index)?;
        match value.as_str().ok().map(humantime::parse_rfc3339) {
            Some(Ok(time)) => Ok(time),
            _ => Err(self.unwritten(value)),
        }
    }
}

/// A stored value as the user is told it.
pub(super) fn shown(value: ValueRef) -> String {
    match value {
        ValueRef::Text(text) => format!("{:?}", String::from_utf8_lossy(text)),
        other => format!("{other:?}"),
    }
}

/// Whether a `-wal` file with content is beside the database at `path`.
pub(super) fn has_hot_wal(path: &Path) -> bool {
    let [wal, _]: [PathBuf; 2] = super::private::sqlite_companions(path);
    std::fs::metadata(wal).is_ok_and(|wal| wal.len() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Checkpoint, RunCounts};

    #[test]
    fn a_checkpoint_is_checked_whole_only_when_there_is_a_reason_to_doubt_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let reason = || {
            let hot_wal = has_hot_wal(&path);
            let connection = Connection::open(&path).unwrap();
            reason_to_check(&connection, Identity::Marked, hot_wal).unwrap()
        };
        {
            let checkpoint = Checkpoint::open(&path).unwrap();
            let run = checkpoint
                .begin_run("import", &super::super::target::ApiTarget::sandbox())
                .unwrap();
            checkpoint.end_run(run, 0, RunCounts::default()).unwrap();
        }
        assert_eq!(reason(), None, "its last run ended, and it was closed");
        {
            let checkpoint = Checkpoint::open(&path).unwrap();
            checkpoint
                .begin_run("import", &super::super::target::ApiTarget::sandbox())
                .unwrap();
        }
        assert_eq!(reason(), Some("its last run did not end"));
        // A process that wrote and never closed (killed) leaves its -wal behind.
        let killed = Connection::open(&path).unwrap();
        killed
            .execute("UPDATE runs SET ended_at = 't', exit_code = 0", [])
            .unwrap();
        std::mem::forget(killed);
        assert_eq!(
            reason(),
            Some("the last process to use it did not close it")
        );
    }
}
