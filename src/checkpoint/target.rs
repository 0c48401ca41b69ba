//! Which API a checkpoint belongs to. Its rows hold ids that exist in one Kustomer org (or
//! one rehearsal sandbox) only: a run against another API that trusted them would skip
//! every done row and send nothing. The target is the base URL normalised once here
//! (scheme, host, port, path; never credentials) or `sandbox`; it is recorded in the
//! checkpoint's `meta` table (migration 007) when the checkpoint is created and compared
//! by every `import` before anything is sent.

use std::fmt;
use std::path::PathBuf;

use rusqlite::{Connection, OptionalExtension, params};
use url::Url;

use super::CheckpointError;

/// The API a checkpoint's records were made in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiTarget(String);

/// The name of the built-in sandbox's target: one per rehearsal checkpoint, whatever port
/// the sandbox listens on in each run.
const SANDBOX: &str = "sandbox";

impl ApiTarget {
    /// The sandbox an import starts in its own process.
    pub fn sandbox() -> ApiTarget {
        ApiTarget(SANDBOX.to_string())
    }

    /// A base URL as the checkpoint records it: scheme and host lowercased, the port
    /// explicit (the scheme's default when the URL gives none), the path without its
    /// trailing slash; user name, password, query and fragment are dropped, so that two
    /// spellings of one API compare equal and no credential is ever written.
    pub fn of_base_url(url: &Url) -> ApiTarget {
        let scheme = url.scheme().to_ascii_lowercase();
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let port = url
            .port_or_known_default()
            .map(|port| format!(":{port}"))
            .unwrap_or_default();
        let path = url.path().trim_end_matches('/');
        ApiTarget(format!("{scheme}://{host}{port}{path}"))
    }

    /// A target as a checkpoint recorded it.
    pub fn recorded(text: String) -> ApiTarget {
        ApiTarget(text)
    }

    pub fn is_sandbox(&self) -> bool {
        self.0 == SANDBOX
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApiTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a run's target met the checkpoint's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetClaim {
    /// The checkpoint is new: it now belongs to the run's target.
    New,
    /// The checkpoint belongs to the run's target already.
    Same,
    /// The checkpoint was made before targets were recorded and has runs: it now belongs
    /// to this run's target (said once, by this run).
    Adopted,
    /// `--retarget`: the checkpoint moved from `from` to the run's target.
    Retargeted { from: ApiTarget },
    /// The checkpoint was written against `from` but holds nothing of it (its only run
    /// met a wrong base URL, or failed rows locally): no row can be skipped or linked
    /// wrongly, so it moves to the run's target.
    Unused { from: ApiTarget },
}

/// The checkpoint belongs to another API than the one this run would send to.
#[derive(Debug, thiserror::Error)]
#[error(
    "the checkpoint {path} belongs to {recorded}, and this run would send to {wanted}: its \
     done rows were made in {recorded} and would be skipped here, so nothing was sent. To \
     import into {wanted}, give the run a checkpoint of its own (--checkpoint NEW.sqlite); \
     if {wanted} is the same org under a new address, pass --retarget",
    path = path.display()
)]
pub struct OtherTarget {
    pub path: PathBuf,
    pub recorded: ApiTarget,
    pub wanted: ApiTarget,
}

const TARGET_KEY: &str = "target";

/// The target the checkpoint on `connection` records, if any. A checkpoint of an older
/// version has no `meta` table at all.
pub(super) fn recorded_target(connection: &Connection) -> rusqlite::Result<Option<ApiTarget>> {
    let has_meta: bool = connection.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        [],
        |row| row.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    connection
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [TARGET_KEY],
            |row| row.get(0),
        )
        .optional()
        .map(|found| found.map(ApiTarget))
}

/// Compares `wanted` with the checkpoint's target and records it when the checkpoint has
/// none, or when `retarget` says the user means it. One transaction, so that two spellings
/// of the decision cannot interleave.
pub(super) fn claim(
    connection: &Connection,
    path: &std::path::Path,
    wanted: &ApiTarget,
    retarget: bool,
) -> Result<TargetClaim, CheckpointError> {
    let sqlite = |source| CheckpointError::of_sqlite(path, source);
    let transaction = connection.unchecked_transaction().map_err(sqlite)?;
    let claim = match recorded_target(&transaction).map_err(sqlite)? {
        Some(recorded) if &recorded == wanted => return Ok(TargetClaim::Same),
        Some(recorded) if retarget => TargetClaim::Retargeted { from: recorded },
        Some(recorded) if !holds_records(&transaction).map_err(sqlite)? => {
            TargetClaim::Unused { from: recorded }
        }
        Some(recorded) => {
            return Err(CheckpointError::OtherTarget(Box::new(OtherTarget {
                path: path.to_path_buf(),
                recorded,
                wanted: wanted.clone(),
            })));
        }
        None => {
            let ran_before: bool = transaction
                .query_row("SELECT count(*) > 0 FROM runs", [], |row| row.get(0))
                .map_err(sqlite)?;
            if ran_before {
                TargetClaim::Adopted
            } else {
                TargetClaim::New
            }
        }
    };
    transaction
        .execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![TARGET_KEY, wanted.as_str()],
        )
        .map_err(sqlite)?;
    transaction.commit().map_err(sqlite)?;
    Ok(claim)
}

/// Whether the checkpoint holds anything of its target's that another API would take
/// wrongly: an id (of a customer, a row's customer or conversation), a done row, a failed
/// row whose create may have landed there (never sent again), a bulk job the API took or
/// may have taken. An intent without an id is not: the next run looks it up in the API
/// it talks to before sending, wherever that is (a run stopped by a wrong base URL's 404
/// leaves such intents).
fn holds_records(connection: &Connection) -> rusqlite::Result<bool> {
    connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE customer_id IS NOT NULL)
             OR EXISTS (SELECT 1 FROM rows WHERE state = 'done'
                            OR customer_id IS NOT NULL OR conversation_id IS NOT NULL
                            OR (state = 'failed' AND outcome_unknown))
             OR EXISTS (SELECT 1 FROM bulk_jobs WHERE state <> 'refused')",
        [],
        |row| row.get(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> String {
        ApiTarget::of_base_url(&Url::parse(url).unwrap()).0
    }

    #[test]
    fn a_base_url_is_normalised_to_scheme_host_port_and_path() {
        assert_eq!(
            target("https://api.kustomerapp.com"),
            "https://api.kustomerapp.com:443"
        );
        for same in [
            "HTTPS://API.KustomerApp.com/",
            "https://api.kustomerapp.com:443",
            "https://api.kustomerapp.com/?x=1#top",
        ] {
            assert_eq!(target(same), "https://api.kustomerapp.com:443", "{same}");
        }
        assert_eq!(target("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert_eq!(target("http://localhost"), "http://localhost:80");
        assert_eq!(target("http://[::1]:9/"), "http://[::1]:9");
        assert_eq!(
            target("https://Acme.api.kustomerapp.com/proxy/kustomer/"),
            "https://acme.api.kustomerapp.com:443/proxy/kustomer"
        );
        assert_ne!(
            target("https://acme.api.kustomerapp.com"),
            target("https://acme.api.kustomerapp.com:8443")
        );
    }

    #[test]
    fn a_target_never_holds_credentials() {
        assert_eq!(
            target("https://user:secret-key@api.kustomerapp.com/v1"),
            "https://api.kustomerapp.com:443/v1"
        );
    }

    #[test]
    fn the_sandbox_is_a_target_of_its_own() {
        assert!(ApiTarget::sandbox().is_sandbox());
        assert_ne!(
            ApiTarget::sandbox(),
            ApiTarget::of_base_url(&Url::parse("http://127.0.0.1:1").unwrap())
        );
    }

    fn remote(url: &str) -> ApiTarget {
        ApiTarget::of_base_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn a_checkpoint_keeps_the_target_it_was_made_for_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let org = remote("https://acme.api.kustomerapp.com");
        let other = remote("https://other.api.kustomerapp.com");
        let checkpoint = super::super::Checkpoint::open(&path).unwrap();
        assert_eq!(
            checkpoint.claim_target(&org, false).unwrap(),
            TargetClaim::New
        );
        assert_eq!(
            checkpoint.claim_target(&org, false).unwrap(),
            TargetClaim::Same
        );
        checkpoint
            .connection
            .execute_batch(
                "INSERT INTO rows (row_key, source_file, line, state, field, last_error,
                                   updated_at)
                 VALUES ('conv:T0', 'a.csv', 2, 'failed', 'emails[0].email', 'bad', 't');",
            )
            .unwrap();
        // Nothing of the target's yet (a wrong base URL, a row refused locally): it moves.
        assert_eq!(
            checkpoint.claim_target(&other, false).unwrap(),
            TargetClaim::Unused { from: org.clone() }
        );
        assert_eq!(
            checkpoint.claim_target(&org, false).unwrap(),
            TargetClaim::Unused {
                from: other.clone()
            }
        );
        checkpoint
            .connection
            .execute_batch(
                "INSERT INTO rows (row_key, source_file, line, customer_key, state,
                                   updated_at)
                 VALUES ('conv:T1', 'a.csv', 3, 'ext:C1', 'customer_sent', 't');
                 INSERT INTO customers (customer_key, state, updated_at)
                 VALUES ('ext:C1', 'sent', 't');",
            )
            .unwrap();
        // An intent without an id is looked up wherever the next run sends.
        assert_eq!(
            checkpoint.claim_target(&other, false).unwrap(),
            TargetClaim::Unused { from: org.clone() }
        );
        checkpoint.claim_target(&org, false).unwrap();
        checkpoint
            .connection
            .execute_batch(
                "UPDATE rows SET state = 'customer_ok', customer_id = 'c1';
                 UPDATE customers SET state = 'created', customer_id = 'c1';",
            )
            .unwrap();
        match checkpoint.claim_target(&other, false) {
            Err(CheckpointError::OtherTarget(refused)) => {
                assert_eq!(refused.recorded, org);
                assert_eq!(refused.wanted, other);
                let words = refused.to_string();
                assert!(words.contains("--checkpoint") && words.contains("--retarget"));
            }
            answer => panic!("{answer:?}"),
        }
        assert!(
            checkpoint
                .claim_target(&ApiTarget::sandbox(), false)
                .is_err(),
            "a rehearsal never uses a real checkpoint"
        );
        assert_eq!(
            checkpoint.claim_target(&other, true).unwrap(),
            TargetClaim::Retargeted { from: org }
        );
        assert_eq!(
            recorded_target(&checkpoint.connection).unwrap(),
            Some(other)
        );
    }

    #[test]
    fn a_checkpoint_made_before_targets_adopts_its_next_runs_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            // As a version with migrations 001-006 left it, after one run.
            let mut connection = Connection::open(&path).unwrap();
            rusqlite_migration::Migrations::new(
                super::super::MIGRATIONS[..6]
                    .iter()
                    .map(|sql| rusqlite_migration::M::up(sql))
                    .collect(),
            )
            .to_latest(&mut connection)
            .unwrap();
            assert_eq!(recorded_target(&connection).unwrap(), None);
            connection
                .execute_batch(
                    "INSERT INTO runs (started_at, pid, host, args)
                     VALUES ('t', 1, 'h', 'kustomer-import import a.csv')",
                )
                .unwrap();
        }
        let org = remote("https://acme.api.kustomerapp.com");
        let checkpoint = super::super::Checkpoint::open(&path).unwrap();
        assert_eq!(
            checkpoint.claim_target(&org, false).unwrap(),
            TargetClaim::Adopted
        );
        assert_eq!(
            checkpoint.claim_target(&org, false).unwrap(),
            TargetClaim::Same
        );
    }
}
