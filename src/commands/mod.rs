//! One file per command, each taking validated settings from `config.rs` and returning the
//! process's exit status.

pub mod docs;
pub mod export;
pub mod import;
pub mod mapping;
pub mod resolve;
pub mod sandbox;
pub mod status;
pub mod undo;
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

/// The exit of a command stopped by the API: 3 for a refused key, 4 for anything else.
pub fn exit_of_api(error: &kustomer_import::api::ApiError) -> Exit {
    match error {
        kustomer_import::api::ApiError::Unauthorized { .. } => Exit::Unauthorized,
        _ => Exit::Stopped,
    }
}

/// The fields that lead the report of a command on what an import made (`verify`, `undo`):
/// the version of its `--json` shape, its exit code, the checkpoint and the API it read.
/// Each command's report flattens it in before its own fields.
#[derive(serde::Serialize)]
pub struct ReportHead {
    pub version: u32,
    pub exit_code: i32,
    pub checkpoint: String,
    pub target: String,
}

impl ReportHead {
    pub fn new(
        version: u32,
        exit: Exit,
        checkpoint: &std::path::Path,
        target: &kustomer_import::checkpoint::ApiTarget,
    ) -> ReportHead {
        ReportHead {
            version,
            exit_code: exit as i32,
            checkpoint: checkpoint.display().to_string(),
            target: target.to_string(),
        }
    }

    /// The report's first words: `checkpoint: <path> (target <api>)`.
    pub fn headline(&self) -> String {
        format!("checkpoint: {} (target {})", self.checkpoint, self.target)
    }
}

/// Prints a report on stdout: one JSON object with `json`, else its text as `write_text`
/// writes it.
pub fn print_report<R: serde::Serialize>(
    report: &R,
    json: bool,
    write_text: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, report)?;
        writeln!(out)?;
    } else {
        write_text(&mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// Why a command that reads back or deletes what an import made refuses a checkpoint
/// written against another API (`wanted` is where this command would send): the records'
/// ids exist in the API the checkpoint belongs to and nowhere else. None when it is the same
/// API or the checkpoint records none.
pub fn other_target(
    checkpoint: &std::path::Path,
    recorded: Option<&kustomer_import::checkpoint::ApiTarget>,
    wanted: &kustomer_import::checkpoint::ApiTarget,
    command: &str,
    done_here: &str,
) -> Option<String> {
    let recorded = recorded.filter(|recorded| *recorded != wanted)?;
    Some(format!(
        "the checkpoint {} belongs to {recorded}, and {command} would send to {wanted}: its \
         records were made in {recorded} and cannot be {done_here} here{}",
        checkpoint.display(),
        if recorded.is_sandbox() {
            format!(" (a rehearsal's checkpoint: {command} it with --sandbox)")
        } else {
            " (give the import's --base-url)".to_string()
        }
    ))
}

/// A client of the command's target through a rate gate of `rpm`: the remote API with the
/// key, or the built-in sandbox (started on the rehearsal's records file), which the caller
/// shuts down once done.
pub async fn made_records_client(
    target: &crate::config::Target,
    sandbox_records: Option<std::path::PathBuf>,
    rpm: u32,
    timeout: std::time::Duration,
) -> anyhow::Result<(
    Option<kustomer_import::sandbox::Sandbox>,
    kustomer_import::api::KustomerClient,
    std::sync::Arc<kustomer_import::api::RequestStats>,
)> {
    use kustomer_import::api::{ClientSettings, KustomerClient, RateGate, RequestStats};
    use std::sync::Arc;
    /// 429s in a row for one request before it counts as one transient failure.
    const MAX_RATE_LIMITED_IN_A_ROW: u32 = 30;
    let (sandbox, base_url, api_key) = match target {
        crate::config::Target::Remote { base_url, api_key } => {
            (None, base_url.clone(), api_key.clone())
        }
        crate::config::Target::Sandbox => {
            let (sandbox, url) = import::start_sandbox(sandbox_records, false).await?;
            (
                Some(sandbox),
                url,
                secrecy::SecretString::from(import::SANDBOX_KEY),
            )
        }
    };
    let stats = Arc::new(RequestStats::default());
    let gate = Arc::new(RateGate::new(rpm, std::time::Duration::from_secs(60)));
    let client = KustomerClient::new(
        ClientSettings {
            base_url,
            api_key,
            timeout,
            max_rate_limited: MAX_RATE_LIMITED_IN_A_ROW,
        },
        gate,
        Arc::clone(&stats),
    )?;
    Ok((sandbox, client, stats))
}
