//! The run lock: one run per checkpoint at a time. An OS file lock on `<checkpoint>.lock`
//! (`flock`), which the kernel drops when its process dies however it dies, so a lock left
//! by a crashed or killed run never blocks the next one. The file also names its holder
//! (pid, host, start time) for the run that is turned away.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::CheckpointError;

/// Who holds a checkpoint, as its lock file says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: Option<u32>,
    pub host: Option<String>,
    pub started_at: Option<String>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unknown = || "?".to_string();
        write!(
            f,
            "pid {} on {}, started {}",
            self.pid.map_or_else(unknown, |pid| pid.to_string()),
            self.host.clone().unwrap_or_else(unknown),
            self.started_at.clone().unwrap_or_else(unknown),
        )
    }
}

/// Held for as long as the run goes on; dropping it releases the lock.
pub struct RunLock {
    _file: File,
}

/// The lock file that goes with a checkpoint.
pub fn lock_path(checkpoint: &Path) -> PathBuf {
    let mut name = checkpoint.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl RunLock {
    /// Takes the lock of the checkpoint at `checkpoint`, or says who holds it.
    pub fn acquire(checkpoint: &Path) -> Result<RunLock, CheckpointError> {
        let path = lock_path(checkpoint);
        let io = |source| CheckpointError::Io {
            path: path.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(io)?;
        super::private::narrow_file(&file).map_err(io)?;
        // `status` takes a shared lock for an instant to see whether a run is going on: a
        // run starting at that instant tries again for a moment before it gives up.
        let mut attempt = 0;
        let locked = loop {
            match file.try_lock() {
                Err(TryLockError::WouldBlock) if attempt < 10 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(CheckpointError::Locked {
                    path: checkpoint.to_path_buf(),
                    holder: parse_holder(&text),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(
            file,
            "pid={}\nhost={}\nstarted={}\n",
            std::process::id(),
            host_name(),
            super::now_rfc3339()
        )
        .map_err(io)?;
        file.flush().map_err(io)?;
        Ok(RunLock { _file: file })
    }
}

/// Who holds the checkpoint's lock right now, if anyone, without taking it: a shared lock
/// is refused while a run holds the exclusive one.
pub fn current_holder(checkpoint: &Path) -> std::io::Result<Option<LockHolder>> {
    let mut file = match File::open(lock_path(checkpoint)) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            Ok(Some(parse_holder(&text)))
        }
        Err(TryLockError::Error(error)) => Err(error),
    }
}

fn parse_holder(text: &str) -> LockHolder {
    let mut holder = LockHolder::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("pid", value)) => holder.pid = value.trim().parse().ok(),
            Some(("host", value)) => holder.host = Some(value.trim().to_string()),
            Some(("started", value)) => holder.started_at = Some(value.trim().to_string()),
            _ => {}
        }
    }
    holder
}

/// This machine's name, for lock files and the runs table.
pub fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_names_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().join("c.sqlite");
        let first = RunLock::acquire(&checkpoint).unwrap();
        match RunLock::acquire(&checkpoint) {
            Err(CheckpointError::Locked { holder, .. }) => {
                assert_eq!(holder.pid, Some(std::process::id()));
                assert_eq!(holder.host, Some(host_name()));
            }
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        assert_eq!(
            current_holder(&checkpoint).unwrap().and_then(|h| h.pid),
            Some(std::process::id())
        );
        drop(first);
        assert_eq!(current_holder(&checkpoint).unwrap(), None);
        RunLock::acquire(&checkpoint).unwrap();
    }
}
