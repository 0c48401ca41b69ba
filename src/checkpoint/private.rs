//! Files that hold customers' emails and phones (the checkpoint and the files SQLite keeps
//! beside it, the lock, an `export` output) are readable by their owner only: mode 0600
//! when this tool creates them, and narrowed to 0600 when they already exist, since a mode
//! given at creation does nothing to a file that is already there.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Narrows an open file to its owner.
pub fn narrow_file(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}

/// Narrows the file at `path` to its owner, if it exists.
pub fn narrow_path(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    match std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        other => other?,
    }
    Ok(())
}

/// Opens `path` for writing, emptied, created 0600 or narrowed to 0600.
pub fn create_truncated(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    narrow_file(&file)?;
    Ok(file)
}

/// The files SQLite keeps beside a database while it is open: its write-ahead log and the
/// log's shared-memory index.
pub fn sqlite_companions(database: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}
