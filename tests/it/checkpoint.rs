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
