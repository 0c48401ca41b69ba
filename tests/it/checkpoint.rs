//! The checkpoint file itself: what an import does with one that is damaged or is not a
//! checkpoint, the permissions of the files that hold customers' data, and reading a
//! checkpoint on a read-only filesystem.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn an_existing_checkpoint_its_companions_and_an_export_file_are_narrowed_to_0600() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(2, 1));
    let file = file.to_str().unwrap();
    env.import(&[file]).assert_code(0);
    let checkpoint = env.path("kustomer-import.sqlite");
    let lock = env.path("kustomer-import.sqlite.lock");
    set_mode(&checkpoint, 0o644);
    set_mode(&lock, 0o644);
    // A connection held open keeps the -wal and -shm files, which SQLite makes with the
    // database's mode: 0644 now.
    let held = rusqlite::Connection::open(&checkpoint).unwrap();
    held.query_row("SELECT count(*) FROM rows", [], |r| r.get::<_, i64>(0))
        .unwrap();
    let wal = env.path("kustomer-import.sqlite-wal");
    let shm = env.path("kustomer-import.sqlite-shm");
    assert_eq!((mode(&wal), mode(&shm)), (0o644, 0o644));
    let more = env.write("more.csv", &generated_csv(3, 1));
    env.import(&[more.to_str().unwrap()]).assert_code(0);
    for path in [&checkpoint, &lock, &wal, &shm] {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
    drop(held);

    let ids = env.write("ids.csv", "");
    set_mode(&ids, 0o644);
    env.command(&["export", "-o", "ids.csv"]).assert_code(0);
    assert_eq!(mode(&ids), 0o600, "the id map names customers");
}

/// Stderr's first line when the namespace below is set up and its directory is read-only.
const READ_ONLY_MARK: &str = "read-only filesystem ready";

/// Runs the binary with `args` in the working directory, that directory mounted read-only:
/// in a user and mount namespace of its own (`unshare -r -m`, which needs no privileges
/// where the kernel allows it) with a read-only bind mount over it. File modes would not
/// do: tests may run as root, whom modes do not stop. Panics, saying so, when this machine
/// cannot make such a namespace: without one the test would prove nothing.
fn on_a_read_only_filesystem(env: &TestEnv, args: &[&str]) -> Run {
    let script = r#"dir="$1"; shift
        mount --bind "$dir" "$dir" && mount -o remount,bind,ro "$dir" || exit 97
        if touch "$dir/probe" 2>/dev/null; then echo "$dir is still writable" >&2; exit 97; fi
        echo "$MARK" >&2
        cd "$dir" && exec "$@""#;
    let mut command = std::process::Command::new("unshare");
    command
        .env("MARK", READ_ONLY_MARK)
        .args(["-r", "-m", "sh", "-c", script, "sh"])
        .arg(env.dir.path())
        .arg(binary())
        .args(args);
    let run = run(command);
    assert!(
        run.stderr.starts_with(READ_ONLY_MARK),
        "this machine cannot give the test a read-only filesystem (unshare -r -m and a \
         read-only bind mount; user namespaces may be disabled): exit {}, {}",
        run.code,
        run.stderr
    );
    run
}

#[test]
fn status_and_export_read_a_checkpoint_on_a_read_only_filesystem() {
    let env = TestEnv::plain();
    let sample = sample("tickets.csv");
    env.import(&[sample.to_str().unwrap()]).assert_code(1);
    let status = on_a_read_only_filesystem(&env, &["status", "--json"]);
    status.assert_code(0);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["total"]["done"], 51);
    assert_eq!(status["total"]["failed"], 5);
    assert_eq!(status["immutable"], true);
    let table = on_a_read_only_filesystem(&env, &["status"]);
    table.assert_code(0);
    assert!(
        table.stdout.contains("a run going on elsewhere"),
        "{}",
        table.stdout
    );
    let export = on_a_read_only_filesystem(&env, &["export", "--state", "all"]);
    export.assert_code(0);
    assert_eq!(export.stdout.lines().count(), 1 + 56, "{}", export.stdout);
    assert!(export.stderr.contains("immutable"), "{}", export.stderr);
    // Where the directory can be written, nothing changes.
    let status = env.command(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["immutable"], false);

    // A change a killed run left in the -wal, without the -shm file: an immutable read
    // does not see it, and says so.
    let killed = rusqlite::Connection::open(env.path("kustomer-import.sqlite")).unwrap();
    killed
        .execute("UPDATE rows SET state = 'pending' WHERE line = 2", [])
        .unwrap();
    std::mem::forget(killed);
    std::fs::remove_file(env.path("kustomer-import.sqlite-shm")).unwrap();
    let table = on_a_read_only_filesystem(&env, &["status"]);
    table.assert_code(0);
    assert!(
        table
            .stdout
            .contains("kustomer-import.sqlite-wal are not seen"),
        "{}",
        table.stdout
    );
    let total = table
        .stdout
        .lines()
        .find(|line| line.starts_with("total"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>());
    assert_eq!(
        total,
        Some(vec!["total", "56", "51", "5", "0", "0"]),
        "the file as it is on disk"
    );
}

/// Replaces every `from` in the file's bytes by `to` (as long), returning how many. The
/// live record is among them; others are old copies in a page's free space, which SQLite
/// leaves as they were when a record is rewritten, and which no read sees.
fn overwrite_bytes(path: &Path, from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let mut found = 0;
    let mut at = 0;
    while let Some(offset) = bytes[at..].windows(from.len()).position(|w| w == from) {
        let start = at + offset;
        bytes[start..start + to.len()].copy_from_slice(to);
        found += 1;
        at = start + to.len();
    }
    std::fs::write(path, bytes).unwrap();
    found
}

/// A finished import of three rows (C0 to C2, conversations T0-0 to T2-0) into the
/// default checkpoint; returns the export's path.
fn finished_checkpoint(env: &TestEnv) -> String {
    let file = env.write("export.csv", &generated_csv(3, 1));
    let file = file.to_str().unwrap().to_string();
    env.import(&[&file]).assert_code(0);
    file
}

/// Asserts that an import was refused for a damaged checkpoint, the way the user is told,
/// and sent nothing.
fn assert_refused_as_damaged(env: &TestEnv, requests_before: u64, run: &Run) {
    run.assert_code(2);
    assert_eq!(
        env.stats().requests_total,
        requests_before,
        "no request with a damaged checkpoint"
    );
    for words in ["is damaged", "backup", "export"] {
        assert!(run.stderr.contains(words), "{words}: {}", run.stderr);
    }
    assert!(
        !run.stderr.contains("run the same command again"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_checkpoint_with_a_stored_state_overwritten_is_refused_not_read_as_pending() {
    let env = TestEnv::plain();
    let file = finished_checkpoint(&env);
    let before = env.stats().requests_total;
    // The row's record holds its conversation externalId, then its state.
    let checkpoint = env.path("kustomer-import.sqlite");
    assert!(overwrite_bytes(&checkpoint, b"T1-0done", b"T1-0gone") >= 1);
    let run = env.import(&[&file]);
    assert_refused_as_damaged(&env, before, &run);
    assert!(
        run.stderr.contains("gone"),
        "names what it found: {}",
        run.stderr
    );
    // Met mid-run, the damage leaves the run without an end: the next run checks the whole
    // file before it reads a row (the state's CHECK constraint fails).
    let run = env.import(&[&file]);
    assert_refused_as_damaged(&env, before, &run);
    assert!(run.stderr.contains("integrity check"), "{}", run.stderr);
    assert!(run.stderr.contains("CHECK constraint"), "{}", run.stderr);
}

#[test]
fn a_checkpoint_with_a_damaged_b_tree_page_is_refused_mid_run_with_exit_2() {
    let env = TestEnv::plain();
    let file = finished_checkpoint(&env);
    let before = env.stats().requests_total;
    let checkpoint = env.path("kustomer-import.sqlite");
    let (root, page_size): (i64, i64) = {
        let connection = env.checkpoint();
        (
            connection
                .query_row(
                    "SELECT rootpage FROM sqlite_master WHERE name = 'rows'",
                    [],
                    |r| r.get(0),
                )
                .unwrap(),
            connection
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap(),
        )
    };
    // The rows table's root page gets a header no b-tree page has.
    let mut bytes = std::fs::read(&checkpoint).unwrap();
    let start = ((root - 1) * page_size) as usize;
    bytes[start..start + 16].fill(0xff);
    std::fs::write(&checkpoint, bytes).unwrap();
    let run = env.import(&[&file]);
    assert_refused_as_damaged(&env, before, &run);
    assert!(
        !run.stderr.contains("integrity check"),
        "found by the planner's read, mid-run: {}",
        run.stderr
    );
}

#[test]
fn an_empty_file_or_a_file_of_another_program_is_refused_as_a_checkpoint() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(2, 1));
    let file = file.to_str().unwrap();
    let checkpoint = env.path("kustomer-import.sqlite");

    std::fs::write(&checkpoint, "").unwrap();
    let run = env.import(&[file]);
    run.assert_code(2);
    assert!(run.stderr.contains("empty"), "{}", run.stderr);
    assert_eq!(
        std::fs::metadata(&checkpoint).unwrap().len(),
        0,
        "left as it is"
    );

    std::fs::write(&checkpoint, "name,notes\nnot,sqlite\n").unwrap();
    let run = env.import(&[file]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("not a kustomer-import checkpoint"),
        "{}",
        run.stderr
    );

    std::fs::remove_file(&checkpoint).unwrap();
    {
        let foreign = rusqlite::Connection::open(&checkpoint).unwrap();
        foreign
            .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
            .unwrap();
    }
    let run = env.import(&[file]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("not a kustomer-import checkpoint"),
        "{}",
        run.stderr
    );
    let status = env.command(&["status"]);
    status.assert_code(2);
    assert!(
        status.stderr.contains("not a kustomer-import checkpoint"),
        "{}",
        status.stderr
    );
    let tables: Vec<String> = rusqlite::Connection::open(&checkpoint)
        .unwrap()
        .prepare("SELECT name FROM sqlite_master ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tables, ["notes"], "the foreign file is left as it is");
    assert_eq!(env.stats().requests_total, 0);
}

#[test]
fn a_checkpoint_made_before_the_marker_is_adopted_once() {
    let env = TestEnv::plain();
    let file = finished_checkpoint(&env);
    let application_id = || -> i64 {
        env.checkpoint()
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .unwrap()
    };
    assert_ne!(application_id(), 0, "a new checkpoint carries the marker");
    // As a version before the marker left it: the same tables, application id 0.
    rusqlite::Connection::open(env.path("kustomer-import.sqlite"))
        .unwrap()
        .pragma_update(None, "application_id", 0)
        .unwrap();
    let run = env.import(&[&file]);
    run.assert_code(0);
    assert_eq!(
        run.stderr.matches("adopted").count(),
        1,
        "said once: {}",
        run.stderr
    );
    assert_ne!(application_id(), 0);
    let run = env.import(&[&file]);
    run.assert_code(0);
    assert!(!run.stderr.contains("adopted"), "{}", run.stderr);
    env.assert_exactly_once(3, 3);
}

#[test]
fn after_a_run_that_did_not_end_the_checkpoint_is_checked_whole_before_it_is_used() {
    let env = TestEnv::plain();
    let file = finished_checkpoint(&env);
    let before = env.stats().requests_total;
    let checkpoint = env.path("kustomer-import.sqlite");
    // As a run killed before its end leaves it.
    rusqlite::Connection::open(&checkpoint)
        .unwrap()
        .execute("UPDATE runs SET ended_at = NULL, exit_code = NULL", [])
        .unwrap();
    // One byte of a row's key in the table changes, not in the index that holds the key
    // too (there it comes last, not before the file's name): no read sees anything wrong,
    // and the row's key is no longer found, so without the check it would be sent again.
    let mut table_key = b"conv:T1-0".to_vec();
    table_key.extend_from_slice(file.as_bytes());
    let mut changed = table_key.clone();
    changed[8] = b'5';
    // A freed page may still hold an older copy of the row: changed too, which is no harm.
    assert!(overwrite_bytes(&checkpoint, &table_key, &changed) >= 1);
    let run = env.import(&[&file]);
    assert_refused_as_damaged(&env, before, &run);
    assert!(run.stderr.contains("integrity check"), "{}", run.stderr);
}
