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
