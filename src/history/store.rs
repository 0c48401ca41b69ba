//! The thread store: a scratch SQLite file (in TMPDIR, deleted when the store drops) that
//! holds every message and note a run has read, by thread, until the pipeline sends them.
//! Memory stays flat whatever the threads' lengths: the inputs stage items as they read
//! them ([`Stager`], one connection, one transaction per batch of rows) and the pipeline
//! reads a thread back a page at a time ([`Pages`], a connection of its own; WAL lets it
//! read while the stager writes). Nothing here is durable: the inputs are read again by the
//! next run, and what was sent is in the checkpoint's `records`.
//!
//! A thread's key is its conversation's row key. An input that only knows the row key
//! after the whole line is read stages under a provisional key and [`Stager::rekey`]s it.
//! Items without a source id are numbered per thread and kind in source order; their
//! externalIds are derived from the final key when read ([`crate::history::derived_item_id`]).

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{ItemKind, ThreadItem, derived_item_id, staged_identity};
use crate::fingerprint::{Fingerprint, THREAD_DIGEST_MODULUS, ThreadDigest};

/// Items read from a thread at a time: a page of a bulk job.
pub const PAGE: usize = 100;

/// The store could not be made, written or read (a full disk, say).
#[derive(Debug, thiserror::Error)]
#[error("the scratch store of conversation history in {dir} failed: {cause} (TMPDIR chooses another)", dir = std::env::temp_dir().display())]
pub struct StoreError {
    cause: String,
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        StoreError {
            cause: error.to_string(),
        }
    }
}

/// An item the store refuses: its thread already has an item of its kind with its id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("repeats the {kind} id {id:?} of {file} line {line}")]
pub struct RepeatedItem {
    pub kind: &'static str,
    pub id: String,
    pub file: String,
    pub line: u64,
}

/// What staging one item came to.
#[derive(Debug)]
pub enum Staged {
    Kept,
    Repeated(RepeatedItem),
}

/// The scratch file; every [`Stager`] and [`Pages`] opens its own connection to it.
#[derive(Debug)]
pub struct ThreadStore {
    /// Held locked while the store lives: a store whose lock another process can take
    /// belongs to a process that is gone (see [`sweep_abandoned_stores`]). Declared first, so
    /// dropped before the folder is removed.
    _owner: std::fs::File,
    /// Removed with the store.
    _dir: tempfile::TempDir,
    path: PathBuf,
}

/// How the scratch folders in TMPDIR are named.
const SCRATCH_PREFIX: &str = "kustomer-import-history";
/// The file in a scratch folder its store holds locked.
const OWNER_LOCK: &str = "owner.lock";

/// How many messages and notes a thread holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSize {
    pub messages: u64,
    pub notes: u64,
    /// What its items are, as one number (see [`ThreadDigest`]).
    pub digest: ThreadDigest,
}

impl ThreadSize {
    pub fn items(self) -> u64 {
        self.messages + self.notes
    }
}

/// One item read back, ready to be sent: its externalId decided.
#[derive(Clone, Debug, PartialEq)]
pub struct StagedItem {
    pub kind: ItemKind,
    pub external_id: String,
    /// Its body as staged, JSON text (see [`ThreadItem::body`]).
    pub body: String,
    /// Its body's fingerprint's text (see `crate::fingerprint`), made when it was staged.
    pub fingerprint: String,
    pub file: Arc<str>,
    pub line: u64,
    /// Where the thread's next page starts.
    pub cursor: Cursor,
}

/// A place in a thread's order: after the item with this time and sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    at: Option<i64>,
    seq: i64,
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = OFF;
    CREATE TABLE items (
        thread    TEXT NOT NULL,
        seq       INTEGER NOT NULL,
        at        INTEGER,
        kind      TEXT NOT NULL,
        position  INTEGER NOT NULL,
        source_id TEXT,
        body      TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        file      TEXT NOT NULL,
        line      INTEGER NOT NULL,
        PRIMARY KEY (thread, seq)
    ) WITHOUT ROWID;
    CREATE INDEX items_in_order ON items (thread, at, seq);
    CREATE UNIQUE INDEX items_by_source_id ON items (thread, kind, source_id)
        WHERE source_id IS NOT NULL;
    CREATE TABLE threads (
        thread   TEXT PRIMARY KEY,
        messages INTEGER NOT NULL DEFAULT 0,
        notes    INTEGER NOT NULL DEFAULT 0,
        -- ThreadDigest: the sum of its items' terms, modulo 2^62.
        digest   INTEGER NOT NULL DEFAULT 0,
        claimed  INTEGER NOT NULL DEFAULT 0,
        -- The first item of the thread that failed its checks (a child file's bad row):
        -- where it was read and why. The claiming row fails with it.
        error      TEXT,
        error_file TEXT,
        error_line INTEGER
    ) WITHOUT ROWID;
";

impl ThreadStore {
    /// A new, empty store in TMPDIR (first removing those that killed runs left there).
    pub fn create() -> Result<ThreadStore, StoreError> {
        let temp = std::env::temp_dir();
        sweep_abandoned_stores(&temp);
        let io = |error: std::io::Error| StoreError {
            cause: error.to_string(),
        };
        let dir = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempdir_in(&temp)
            .map_err(io)?;
        // Locked before it takes its name, so that no sweep ever finds it unlocked.
        let unnamed = dir.path().join("owner.lock.new");
        let owner = std::fs::File::create(&unnamed).map_err(io)?;
        owner.lock().map_err(io)?;
        std::fs::rename(&unnamed, dir.path().join(OWNER_LOCK)).map_err(io)?;
        let path = dir.path().join("threads.sqlite");
        Connection::open(&path)?.execute_batch(SCHEMA)?;
        Ok(ThreadStore {
            _owner: owner,
            _dir: dir,
            path,
        })
    }

    /// A connection that stages items (the input side holds one).
    pub fn stager(&self) -> Result<Stager, StoreError> {
        let connection = self.open()?;
        let held_before =
            connection.query_row("SELECT EXISTS (SELECT 1 FROM threads)", [], |row| {
                row.get(0)
            })?;
        let seq = connection.query_row("SELECT coalesce(max(seq), 0) FROM items", [], |row| {
            row.get(0)
        })?;
        connection.execute_batch("BEGIN")?;
        Ok(Stager {
            connection,
            seq,
            held_before,
        })
    }

    /// A connection that reads threads back (the pipeline holds one per reader).
    pub fn pages(&self) -> Result<Pages, StoreError> {
        Ok(Pages {
            connection: self.open()?,
        })
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let connection = Connection::open(&self.path)?;
        connection.busy_timeout(std::time::Duration::from_secs(60))?;
        connection.execute_batch("PRAGMA synchronous = OFF;")?;
        Ok(connection)
    }
}

/// Stages items; what it staged is visible to [`Pages`] after [`Stager::publish`].
pub struct Stager {
    connection: Connection,
    /// Source order across every thread of the run.
    seq: i64,
    /// The store held threads when this stager was made (a child file staged first).
    held_before: bool,
}

impl Stager {
    /// Adds `item` to the end of `thread` (in source order).
    pub fn stage(&mut self, thread: &str, item: &ThreadItem) -> Result<Staged, StoreError> {
        if let Some(id) = &item.source_id
            && let Some((file, line)) = self.holder_of(thread, item.kind, id)?
        {
            return Ok(Staged::Repeated(RepeatedItem {
                kind: item.kind.as_str(),
                id: id.clone(),
                file,
                line,
            }));
        }
        let count = match item.kind {
            ItemKind::Message => "messages",
            ItemKind::Note => "notes",
        };
        let position: i64 = self.connection.query_row(
            &format!(
                "INSERT INTO threads (thread, {count}) VALUES (?1, 1)
                 ON CONFLICT (thread) DO UPDATE SET {count} = {count} + 1
                 RETURNING {count}"
            ),
            [thread],
            |row| row.get(0),
        )?;
        self.seq += 1;
        let body = serde_json::to_string(&item.body).expect("a JSON map always encodes");
        let fingerprint = Fingerprint::of(&item.body).to_text();
        let identity = staged_identity(item.source_id.as_deref(), item.kind, position as u64);
        let term = ThreadDigest::item(item.kind.as_str(), &identity, &fingerprint);
        self.connection
            .prepare_cached(
                "INSERT INTO items (thread, seq, at, kind, position, source_id, body, fingerprint,
                                    file, line)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                thread,
                self.seq,
                item.at.map(|at| at.as_millisecond()),
                item.kind.as_str(),
                position,
                item.source_id,
                body,
                fingerprint,
                &*item.file,
                item.line as i64,
            ])?;
        self.connection
            .prepare_cached("UPDATE threads SET digest = (digest + ?2) % ?3 WHERE thread = ?1")?
            .execute(params![thread, term as i64, THREAD_DIGEST_MODULUS])?;
        Ok(Staged::Kept)
    }

    fn holder_of(
        &self,
        thread: &str,
        kind: ItemKind,
        id: &str,
    ) -> Result<Option<(String, u64)>, StoreError> {
        Ok(self
            .connection
            .prepare_cached(
                "SELECT file, line FROM items
                 WHERE thread = ?1 AND kind = ?2 AND source_id = ?3",
            )?
            .query_row(params![thread, kind.as_str(), id], |row| {
                Ok((row.get(0)?, row.get::<_, i64>(1)? as u64))
            })
            .optional()?)
    }

    /// Moves everything staged under `from` to `to` (a thread staged under a provisional
    /// key before its row's key was known). `to` must not have items yet.
    pub fn rekey(&mut self, from: &str, to: &str) -> Result<(), StoreError> {
        self.connection
            .prepare_cached("UPDATE items SET thread = ?2 WHERE thread = ?1")?
            .execute([from, to])?;
        self.connection
            .prepare_cached("UPDATE threads SET thread = ?2 WHERE thread = ?1")?
            .execute([from, to])?;
        Ok(())
    }

    /// Marks `thread` as belonging to a conversation row: a thread never claimed by the end
    /// of the run is an orphan (its conversation matched no row). Its size, if it has items.
    pub fn claim(&mut self, thread: &str) -> Result<Option<ThreadSize>, StoreError> {
        Ok(self
            .connection
            .prepare_cached(
                "UPDATE threads SET claimed = 1 WHERE thread = ?1
                 RETURNING messages, notes, digest",
            )?
            .query_row([thread], read_size)
            .optional()?)
    }

    /// Whether any thread is staged: when none is, no row has one to claim.
    pub fn holds_any(&self) -> bool {
        self.held_before || self.seq > 0
    }

    /// Records that an item of `thread` failed its checks (read at `file` `line`, for
    /// `reason`, which names the field): the thread's conversation must not be reported
    /// complete. The first failure of a thread is kept.
    pub fn poison(
        &mut self,
        thread: &str,
        file: &str,
        line: u64,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.connection
            .prepare_cached(
                "INSERT INTO threads (thread, error, error_file, error_line)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (thread) DO UPDATE SET
                     error = coalesce(error, excluded.error),
                     error_file = coalesce(error_file, excluded.error_file),
                     error_line = coalesce(error_line, excluded.error_line)",
            )?
            .execute(params![thread, reason, file, line as i64])?;
        Ok(())
    }

    /// The first failure recorded against `thread` ([`Stager::poison`]), if any.
    pub fn failure(&self, thread: &str) -> Result<Option<ThreadFailure>, StoreError> {
        Ok(self
            .connection
            .prepare_cached(
                "SELECT error, error_file, error_line FROM threads
                 WHERE thread = ?1 AND error IS NOT NULL",
            )?
            .query_row([thread], |row| {
                Ok(ThreadFailure {
                    reason: row.get(0)?,
                    file: row.get(1)?,
                    line: row.get::<_, i64>(2)? as u64,
                })
            })
            .optional()?)
    }

    /// Commits what was staged, so that [`Pages`] see it.
    pub fn publish(&mut self) -> Result<(), StoreError> {
        self.connection.execute_batch("COMMIT; BEGIN")?;
        Ok(())
    }
}

impl Drop for Stager {
    fn drop(&mut self) {
        let _ = self.connection.execute_batch("COMMIT");
    }
}

/// Removes the scratch folders in `temp` whose store's process is gone: a run killed (kill
/// -9, a crash, a power cut) cannot remove its own, and a thread store holds every message
/// a run read. A folder is abandoned when the lock its store held can be taken: the kernel
/// drops a lock when its process dies, however it dies, and a lock is seen across
/// containers sharing the folder, which process ids are not. A folder without the lock
/// file (being made right now, or left by an earlier version) is left alone.
fn sweep_abandoned_stores(temp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(SCRATCH_PREFIX)
        {
            continue;
        }
        let Ok(lock) = std::fs::File::open(entry.path().join(OWNER_LOCK)) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            drop(lock);
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::debug!("removed {}, left by a run killed", entry.path().display())
                }
                Err(error) => {
                    tracing::debug!("could not remove {}: {error}", entry.path().display())
                }
            }
        }
    }
}

fn read_size(row: &rusqlite::Row) -> rusqlite::Result<ThreadSize> {
    Ok(ThreadSize {
        messages: row.get::<_, i64>(0)? as u64,
        notes: row.get::<_, i64>(1)? as u64,
        digest: ThreadDigest::from_stored(row.get(2)?),
    })
}

/// Why a thread cannot be complete: an item of it failed its checks where it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadFailure {
    /// What was wrong, naming the field (`message.direction: ...`).
    pub reason: String,
    pub file: String,
    pub line: u64,
}

/// Reads threads back, in order, a page at a time.
pub struct Pages {
    connection: Connection,
}

/// A thread whose conversation matched no row: where its first item was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub thread: String,
    pub size: ThreadSize,
    pub file: String,
    pub line: u64,
    /// The first failure recorded against it ([`Stager::poison`]), if any.
    pub error: Option<String>,
}

impl Pages {
    /// How many items `thread` holds; zero for a thread with none.
    pub fn size(&self, thread: &str) -> Result<ThreadSize, StoreError> {
        Ok(self
            .connection
            .prepare_cached("SELECT messages, notes, digest FROM threads WHERE thread = ?1")?
            .query_row([thread], read_size)
            .optional()?
            .unwrap_or_default())
    }

    /// Up to `limit` items of `thread` after `after` (from its start when None), in order.
    pub fn page(
        &self,
        thread: &str,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<StagedItem>, StoreError> {
        // NULL times sort first, as SQLite orders them; (at, seq) is unique per thread.
        let (at, seq, started) = match after {
            Some(cursor) => (cursor.at, cursor.seq, true),
            None => (None, 0, false),
        };
        let mut statement = self.connection.prepare_cached(
            "SELECT seq, at, kind, position, source_id, body, file, line, fingerprint FROM items
             WHERE thread = ?1 AND (NOT ?4 OR (at IS ?2 AND seq > ?3)
                 OR (?2 IS NULL AND at IS NOT NULL) OR at > ?2)
             ORDER BY at, seq LIMIT ?5",
        )?;
        let mut rows = statement.query(params![thread, at, seq, started, limit as i64])?;
        let mut items = Vec::with_capacity(limit.min(PAGE));
        while let Some(row) = rows.next()? {
            let kind_text: String = row.get(2)?;
            let kind = ItemKind::parse(&kind_text).expect("the stager writes only item kinds");
            let position = row.get::<_, i64>(3)? as u64;
            let source_id: Option<String> = row.get(4)?;
            let file: String = row.get(6)?;
            let cursor = Cursor {
                seq: row.get(0)?,
                at: row.get(1)?,
            };
            items.push(StagedItem {
                kind,
                external_id: source_id.unwrap_or_else(|| derived_item_id(thread, kind, position)),
                body: row.get(5)?,
                fingerprint: row.get(8)?,
                file: Arc::from(file),
                line: row.get::<_, i64>(7)? as u64,
                cursor,
            });
        }
        Ok(items)
    }

    /// The authors `thread`'s items name (each one's `createdBy` as staged, the source's
    /// value), each with how many items it wrote; items without one are not counted.
    pub fn authors(&self, thread: &str) -> Result<Vec<(Value, u64)>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT body -> '$.createdBy' AS author, count(*) FROM items
             WHERE thread = ?1 AND author IS NOT NULL GROUP BY author",
        )?;
        let mut rows = statement.query([thread])?;
        let mut authors = Vec::new();
        while let Some(row) = rows.next()? {
            let text: String = row.get(0)?;
            let author = serde_json::from_str(&text).map_err(|error| StoreError {
                cause: format!("an item's createdBy cannot be read back: {error}"),
            })?;
            authors.push((author, row.get::<_, i64>(1)? as u64));
        }
        Ok(authors)
    }

    /// Every thread no row claimed, with where its first item was read, in source order.
    pub fn orphans(&self) -> Result<Vec<Orphan>, StoreError> {
        let mut statement = self.connection.prepare(
            "SELECT t.thread, t.messages, t.notes,
                    coalesce((SELECT file FROM items i WHERE i.thread = t.thread
                              ORDER BY seq LIMIT 1), t.error_file),
                    (SELECT min(seq) FROM items i WHERE i.thread = t.thread) AS first,
                    coalesce((SELECT line FROM items i WHERE i.thread = t.thread
                              ORDER BY seq LIMIT 1), t.error_line),
                    t.error
             FROM threads t WHERE NOT claimed ORDER BY first IS NULL, first, t.error_line",
        )?;
        let orphans = statement
            .query_map([], |row| {
                Ok(Orphan {
                    thread: row.get(0)?,
                    size: ThreadSize {
                        messages: row.get::<_, i64>(1)? as u64,
                        notes: row.get::<_, i64>(2)? as u64,
                        digest: ThreadDigest::default(),
                    },
                    file: row.get(3)?,
                    line: row.get::<_, i64>(5)? as u64,
                    error: row.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(orphans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(kind: ItemKind, id: Option<&str>, at: Option<&str>, line: u64) -> ThreadItem {
        let body = match kind {
            ItemKind::Message => json!({"channel": "email", "app": "kustomer-import",
                                        "direction": "in", "preview": format!("line {line}")}),
            ItemKind::Note => json!({"body": format!("line {line}")}),
        };
        ThreadItem {
            kind,
            source_id: id.map(str::to_string),
            at: at.map(|at| at.parse().unwrap()),
            body: body.as_object().unwrap().clone(),
            file: Arc::from("messages.csv"),
            line,
        }
    }

    fn lines(items: &[StagedItem]) -> Vec<u64> {
        items.iter().map(|item| item.line).collect()
    }

    #[test]
    fn a_thread_reads_back_in_time_order_then_source_order_a_page_at_a_time() {
        let store = ThreadStore::create().unwrap();
        let mut stager = store.stager().unwrap();
        for (line, at) in [
            (2, "2024-01-03T00:00:00Z"),
            (3, "2024-01-01T00:00:00Z"),
            (4, "2024-01-02T00:00:00Z"),
            (5, "2024-01-02T00:00:00Z"),
        ] {
            stager
                .stage("conv:A", &item(ItemKind::Message, None, Some(at), line))
                .unwrap();
        }
        stager
            .stage("conv:B", &item(ItemKind::Note, None, None, 6))
            .unwrap();
        stager.publish().unwrap();
        let pages = store.pages().unwrap();
        let first = pages.page("conv:A", None, 2).unwrap();
        assert_eq!(lines(&first), [3, 4]);
        let rest = pages.page("conv:A", Some(first[1].cursor), 10).unwrap();
        assert_eq!(lines(&rest), [5, 2]);
        assert!(
            pages
                .page("conv:A", Some(rest[1].cursor), 10)
                .unwrap()
                .is_empty()
        );
        let size = pages.size("conv:A").unwrap();
        assert_eq!((size.messages, size.notes), (4, 0));
        assert_ne!(size.digest, ThreadDigest::default(), "its items add up");
        assert_eq!(pages.size("conv:none").unwrap(), ThreadSize::default());
    }

    #[test]
    fn a_threads_authors_are_counted_by_their_source_value() {
        let store = ThreadStore::create().unwrap();
        let mut stager = store.stager().unwrap();
        let by = |author: Value, line| {
            let mut item = item(ItemKind::Note, None, None, line);
            item.body.insert("createdBy".into(), author);
            item
        };
        stager.stage("conv:A", &by(json!("ann@x.io"), 2)).unwrap();
        stager.stage("conv:A", &by(json!("Bot"), 3)).unwrap();
        stager.stage("conv:A", &by(json!("ann@x.io"), 4)).unwrap();
        stager.stage("conv:A", &by(json!(7), 5)).unwrap();
        stager
            .stage("conv:A", &item(ItemKind::Note, None, None, 6))
            .unwrap();
        stager.stage("conv:B", &by(json!("cy@x.io"), 7)).unwrap();
        stager.publish().unwrap();
        let mut authors = store.pages().unwrap().authors("conv:A").unwrap();
        authors.sort_by_key(|(author, _)| author.to_string());
        assert_eq!(
            authors,
            [(json!("Bot"), 1), (json!("ann@x.io"), 2), (json!(7), 1)]
        );
    }

    #[test]
    fn items_without_ids_are_numbered_in_source_order_by_kind_under_their_final_key() {
        let store = ThreadStore::create().unwrap();
        let mut stager = store.stager().unwrap();
        stager
            .stage("line:7", &item(ItemKind::Message, None, None, 7))
            .unwrap();
        stager
            .stage("line:7", &item(ItemKind::Note, None, None, 7))
            .unwrap();
        stager
            .stage("line:7", &item(ItemKind::Message, Some("c-9"), None, 7))
            .unwrap();
        stager
            .stage("line:7", &item(ItemKind::Message, None, None, 7))
            .unwrap();
        stager.rekey("line:7", "conv:T").unwrap();
        stager.publish().unwrap();
        let ids: Vec<String> = store
            .pages()
            .unwrap()
            .page("conv:T", None, 10)
            .unwrap()
            .into_iter()
            .map(|item| item.external_id)
            .collect();
        assert_eq!(
            ids,
            [
                derived_item_id("conv:T", ItemKind::Message, 1),
                derived_item_id("conv:T", ItemKind::Note, 1),
                "c-9".to_string(),
                derived_item_id("conv:T", ItemKind::Message, 3),
            ]
        );
    }

    #[test]
    fn a_repeated_source_id_in_one_thread_is_refused_naming_the_first() {
        let store = ThreadStore::create().unwrap();
        let mut stager = store.stager().unwrap();
        stager
            .stage("conv:A", &item(ItemKind::Message, Some("m1"), None, 2))
            .unwrap();
        let again = stager
            .stage("conv:A", &item(ItemKind::Message, Some("m1"), None, 9))
            .unwrap();
        match again {
            Staged::Repeated(repeated) => {
                assert_eq!(repeated.line, 2);
                assert_eq!(
                    repeated.to_string(),
                    "repeats the message id \"m1\" of messages.csv line 2"
                );
            }
            Staged::Kept => panic!("a repeated id was kept"),
        }
        // The same id on a note, or in another thread, is another item.
        assert!(matches!(
            stager
                .stage("conv:A", &item(ItemKind::Note, Some("m1"), None, 3))
                .unwrap(),
            Staged::Kept
        ));
        assert!(matches!(
            stager
                .stage("conv:B", &item(ItemKind::Message, Some("m1"), None, 4))
                .unwrap(),
            Staged::Kept
        ));
    }

    #[test]
    fn threads_no_row_claims_are_orphans_in_source_order() {
        let store = ThreadStore::create().unwrap();
        let mut stager = store.stager().unwrap();
        stager
            .stage("conv:Z", &item(ItemKind::Message, None, None, 2))
            .unwrap();
        stager
            .stage("conv:A", &item(ItemKind::Note, None, None, 3))
            .unwrap();
        stager
            .stage("conv:Y", &item(ItemKind::Note, None, None, 4))
            .unwrap();
        let claimed = stager.claim("conv:A").unwrap().unwrap();
        assert_eq!((claimed.messages, claimed.notes), (0, 1));
        assert_eq!(stager.claim("conv:none").unwrap(), None);
        stager.publish().unwrap();
        let orphans = store.pages().unwrap().orphans().unwrap();
        let found: Vec<(&str, u64)> = orphans
            .iter()
            .map(|orphan| (orphan.thread.as_str(), orphan.line))
            .collect();
        assert_eq!(found, [("conv:Z", 2), ("conv:Y", 4)]);
    }

    #[test]
    fn a_poisoned_thread_keeps_its_first_failure_and_an_unclaimed_one_is_an_orphan() {
        let store = ThreadStore::create().unwrap();
        let mut stager = store.stager().unwrap();
        stager
            .stage("conv:T-1", &item(ItemKind::Message, Some("a"), None, 2))
            .unwrap();
        stager
            .poison(
                "conv:T-1",
                "messages.csv",
                3,
                "message.direction: \"sideways\"",
            )
            .unwrap();
        stager
            .poison("conv:T-1", "messages.csv", 7, "note.body: is missing")
            .unwrap();
        stager
            .poison("conv:T-9", "messages.csv", 5, "message.channel: is missing")
            .unwrap();
        assert_eq!(stager.failure("conv:T-2").unwrap(), None);
        let failure = stager.failure("conv:T-1").unwrap().unwrap();
        assert_eq!(
            (failure.file.as_str(), failure.line, failure.reason.as_str()),
            ("messages.csv", 3, "message.direction: \"sideways\"")
        );
        // The good item before the bad one is still staged and counted.
        let size = stager.claim("conv:T-1").unwrap().unwrap();
        assert_eq!(size.items(), 1);
        stager.publish().unwrap();
        let orphans = store.pages().unwrap().orphans().unwrap();
        assert_eq!(orphans.len(), 1, "{orphans:?}");
        assert_eq!(
            (
                orphans[0].thread.as_str(),
                orphans[0].file.as_str(),
                orphans[0].line
            ),
            ("conv:T-9", "messages.csv", 5)
        );
        assert_eq!(orphans[0].size.items(), 0);
    }

    #[test]
    fn a_store_left_by_a_process_gone_is_swept_and_a_live_one_is_not() {
        let temp = tempfile::tempdir().unwrap();
        let folder = |name: &str| {
            let path = temp.path().join(name);
            std::fs::create_dir(&path).unwrap();
            std::fs::write(path.join("threads.sqlite"), b"items").unwrap();
            path
        };
        let abandoned = folder("kustomer-import-historyAAAA");
        std::fs::File::create(abandoned.join(OWNER_LOCK)).unwrap();
        let live = folder("kustomer-import-historyBBBB");
        let held = std::fs::File::create(live.join(OWNER_LOCK)).unwrap();
        held.lock().unwrap();
        let unlocked_yet = folder("kustomer-import-historyCCCC");
        let other = folder("someone-elses");
        std::fs::File::create(other.join(OWNER_LOCK)).unwrap();

        sweep_abandoned_stores(temp.path());
        assert!(
            !abandoned.exists(),
            "its lock could be taken: its process is gone"
        );
        assert!(live.exists() && unlocked_yet.exists() && other.exists());
        drop(held);
    }
}
