//! Tallies of what a run has seen (row identities, customer keys), kept in a private
//! temporary SQLite database rather than in memory, so that reading a file of any size uses
//! the same memory: a million distinct rows cost disk pages, not a growing hash map. The
//! database lives in the system's temporary directory and is deleted when the tally drops.

use rusqlite::{Connection, OptionalExtension};

/// Bumps between commits: large enough that commits cost nothing, small enough that the
/// page cache stays bounded.
const BUMPS_PER_COMMIT: u32 = 50_000;

/// The scratch database could not be created or written (a full disk, say).
#[derive(Debug, thiserror::Error)]
#[error("the scratch database in the temporary directory failed: {0}")]
pub struct TallyError(#[from] rusqlite::Error);

/// Counts of 64-bit fingerprints.
pub struct Tally {
    connection: Connection,
    uncommitted: u32,
}

impl Tally {
    /// A new, empty tally.
    pub fn new() -> Result<Tally, TallyError> {
        // An empty path is a private on-disk temporary database.
        let connection = Connection::open("")?;
        connection.execute_batch(
            "PRAGMA journal_mode = OFF;
             PRAGMA synchronous = OFF;
             PRAGMA cache_size = -8192;
             CREATE TABLE tally (fingerprint INTEGER PRIMARY KEY, count INTEGER NOT NULL);
             BEGIN;",
        )?;
        Ok(Tally {
            connection,
            uncommitted: 0,
        })
    }

    /// Counts one more sighting; returns how many there were before this one.
    ///
    /// A read, then an insert or an update: an upsert with RETURNING would be one
    /// statement, but SQLite runs it through an ephemeral table whose open and close take a
    /// process-wide mutex, which made it the slowest step of a resume (perf).
    pub fn bump(&mut self, fingerprint: u64) -> Result<u32, TallyError> {
        let fingerprint = fingerprint as i64;
        let seen: Option<u32> = self
            .connection
            .prepare_cached("SELECT count FROM tally WHERE fingerprint = ?1")?
            .query_row([fingerprint], |row| row.get(0))
            .optional()?;
        let statement = match seen {
            None => "INSERT INTO tally (fingerprint, count) VALUES (?1, 1)",
            Some(_) => "UPDATE tally SET count = count + 1 WHERE fingerprint = ?1",
        };
        self.connection
            .prepare_cached(statement)?
            .execute([fingerprint])?;
        self.uncommitted += 1;
        if self.uncommitted >= BUMPS_PER_COMMIT {
            self.connection.execute_batch("COMMIT; BEGIN;")?;
            self.uncommitted = 0;
        }
        Ok(seen.unwrap_or(0))
    }

    /// How many distinct fingerprints were seen, and the most sightings of one.
    pub fn distinct_and_most(&self) -> Result<(u64, u32), TallyError> {
        let (distinct, most): (i64, u32) = self.connection.query_row(
            "SELECT COUNT(*), COALESCE(MAX(count), 0) FROM tally",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok((distinct.unsigned_abs(), most))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_commits() {
        let mut tally = Tally::new().unwrap();
        assert_eq!(tally.bump(7).unwrap(), 0);
        for fingerprint in 0..(u64::from(BUMPS_PER_COMMIT) + 10) {
            tally
                .bump(fingerprint.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .unwrap();
        }
        assert_eq!(tally.bump(7).unwrap(), 1);
        assert_eq!(tally.bump(u64::MAX).unwrap(), 0);
        let (distinct, most) = tally.distinct_and_most().unwrap();
        assert_eq!(distinct, u64::from(BUMPS_PER_COMMIT) + 12);
        assert_eq!(most, 2);
    }
}
