//! One file per command, each taking validated settings from `config.rs` and returning the
//! process's exit status.

pub mod docs;
pub mod export;
pub mod import;
pub mod mapping;
pub mod resolve;
pub mod sandbox;
pub mod status;
pub mod validate;
pub mod verify;

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

/// The version of the object `--json` prints for a command that could not start; the same
/// fields lead the summaries of `import`, which add their counts.
const NOT_STARTED_VERSION: u32 = 1;

/// Ends a command that could not start (a flag's value, a file it needs): the error on
/// stderr, last (through tracing, so JSON logs stay JSON), and with `json` one object on
/// stdout that says so, as every exit path of a `--json` command prints one.
pub fn not_started(
    json: bool,
    exit: Exit,
    stopped_because: &'static str,
    error: &dyn std::fmt::Display,
) -> Exit {
    tracing::error!("{error}");
    if json {
        print_not_started_json(exit, stopped_because, &error.to_string());
    }
    exit
}

/// `{"version", "exit_code", "stopped_because", "error"}` on stdout.
pub fn print_not_started_json(exit: Exit, stopped_because: &str, error: &str) {
    use std::io::Write;
    let object = serde_json::json!({
        "version": NOT_STARTED_VERSION,
        "exit_code": exit as i32,
        "stopped_because": stopped_because,
        "error": error,
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{object}").and_then(|()| out.flush());
}
