//! One file per command, each taking validated settings from `config.rs` and returning the
//! process's exit status.

pub mod docs;
pub mod export;
pub mod import;
pub mod sandbox;
pub mod status;
pub mod validate;

/// The exit codes, as `--help` and README.md document them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Every row is done.
    Success = 0,
    /// The run finished; some rows failed (see the errors file).
    RowsFailed = 1,
    /// Usage, configuration or unreadable input.
    Usage = 2,
    /// The API refused the key (401/403).
    Unauthorized = 3,
    /// Stopped before the end: run the same command again to resume.
    Stopped = 4,
    /// Another run holds the checkpoint.
    Locked = 5,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> std::process::ExitCode {
        std::process::ExitCode::from(exit as u8)
    }
}
