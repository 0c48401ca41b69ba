//! `kustomer-import import`: opens the checkpoint, starts the sandbox when asked, runs the
//! pipeline under signal handling, prints the summary and turns the outcome into an exit
//! status.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use secrecy::SecretString;

use kustomer_import::api::{ClientSettings, KustomerClient, RateGate, RequestStats};
use kustomer_import::checkpoint::{Checkpoint, CheckpointError, RunCounts};
use kustomer_import::input::OpenInput;
use kustomer_import::pipeline::{ImportOutcome, StopReason, StopSignals, run_import};
use kustomer_import::report::{ErrorsFile, Progress, Summary};
use kustomer_import::rows::{ReadError, open_inputs};
use kustomer_import::sandbox::{Sandbox, SandboxConfig};

use super::Exit;
use crate::config::{ImportConfig, Target};

/// The key used against the in-process sandbox, which accepts any non-empty token.
const SANDBOX_KEY: &str = "sandbox-key";

/// 429s in a row for one request before it counts as one transient failure.
const MAX_RATE_LIMITED_IN_A_ROW: u32 = 30;

pub fn run(config: ImportConfig) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let exit = runtime.block_on(import(config));
    // Not waiting for blocking threads still at work: after a stop, the reader (or an
    // input's open) may be blocked on a FIFO that sends nothing, and nothing it holds
    // needs finishing.
    runtime.shutdown_background();
    exit
}

async fn import(mut config: ImportConfig) -> anyhow::Result<Exit> {
    // Signals are watched from the start: opening a FIFO waits for its writer, and a
    // signal must end that wait as it ends a run.
    let signals = StopSignals::default();
    let signal_task = tokio::spawn(watch_signals(
        SignalStreams::install(),
        signals.clone(),
        config.settings.grace,
    ));
    let (inputs, estimated_rows) = match open_inputs_until_stopped(&mut config, &signals).await {
        Ok(opened) => opened,
        Err(exit) => return Ok(exit),
    };
    let checkpoint = match Checkpoint::open(&config.checkpoint) {
        Ok(checkpoint) => checkpoint,
        Err(error @ CheckpointError::Locked { .. }) => {
            return Ok(stop_early(&config, Exit::Locked, "locked", &error));
        }
        Err(error) => return Ok(stop_early(&config, Exit::Usage, "checkpoint", &error)),
    };
    let mut errors = match ErrorsFile::create(&config.errors) {
        Ok(errors) => errors,
        Err(error) => {
            let error = format!(
                "cannot create the errors file {}: {error}",
                config.errors.display()
            );
            return Ok(stop_early(&config, Exit::Usage, "errors_file", &error));
        }
    };

    let (sandbox, base_url, api_key) = match &config.target {
        Target::Remote { base_url, api_key } => (None, base_url.clone(), api_key.clone()),
        Target::Sandbox => {
            let sandbox = Sandbox::start(SandboxConfig::default(), 0)
                .await
                .context("starting the sandbox")?;
            tracing::info!(
                "importing into the built-in sandbox at {}",
                sandbox.base_url()
            );
            let url = url::Url::parse(&sandbox.base_url()).context("the sandbox's address")?;
            (Some(sandbox), url, SecretString::from(SANDBOX_KEY))
        }
    };
    let stats = Arc::new(RequestStats::default());
    let gate = Arc::new(match config.rate_share {
        Some(share) => RateGate::with_share(share, config.rpm, config.rate_window),
        None => RateGate::new(config.rpm, config.rate_window),
    });
    let client = KustomerClient::new(
        ClientSettings {
            base_url,
            api_key,
            timeout: config.timeout,
            max_rate_limited: MAX_RATE_LIMITED_IN_A_ROW,
        },
        gate,
        Arc::clone(&stats),
    )?;

    let budget_per_second = f64::from(config.rpm) / config.rate_window.as_secs_f64();
    let progress = Progress::new(config.progress, estimated_rows, stats, budget_per_second);
    let run_id = match checkpoint.begin_run(&command_line()) {
        Ok(run_id) => run_id,
        // An unwritable checkpoint: nothing can be recorded, so nothing is sent.
        Err(error) => return Ok(stop_early(&config, Exit::Stopped, "checkpoint", &error)),
    };

    let outcome = run_import(
        config.settings.clone(),
        inputs,
        &checkpoint,
        Arc::new(client),
        &mut errors,
        &progress,
        signals,
    )
    .await;
    progress.finish();
    signal_task.abort();
    let ImportOutcome { summary, stop } = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::error!("{error}");
            ImportOutcome {
                summary: Summary::default(),
                stop: StopReason::Checkpoint(error.to_string()),
            }
        }
    };
    let errors_path = errors.path().to_path_buf();
    let errors_written = errors.rows();
    if let Err(error) = errors.finish() {
        tracing::error!("writing the errors file {}: {error}", errors_path.display());
    }

    let exit = exit_status(&summary, &stop);
    // The run is recorded whatever happens to stdout.
    if let Err(error) = checkpoint.end_run(
        run_id,
        exit as i32,
        RunCounts {
            rows_read: summary.rows_read,
            rows_done: summary.rows_done + summary.rows_skipped_done,
            rows_failed: summary.all_failed(),
            rows_pending: summary.rows_pending,
            requests: summary.requests,
        },
    ) {
        tracing::error!("recording the end of the run: {error}");
    }
    print_summary(&config, exit, stop_words(&stop), &summary);
    explain(&stop, exit, errors_written, &errors_path, &summary);
    if let Some(sandbox) = sandbox {
        sandbox.shutdown().await;
    }
    Ok(exit)
}

/// Opens every input once and checks its header against the mapping (before anything is
/// sent), with the progress bar's estimate of the rows, on a blocking thread: opening a
/// FIFO waits for its writer. A signal that comes first ends the run (exit 4); an input
/// that cannot be used ends it with exit 2. Either way nothing was sent.
async fn open_inputs_until_stopped(
    config: &mut ImportConfig,
    signals: &StopSignals,
) -> Result<(Vec<OpenInput>, Option<u64>), Exit> {
    let sources = std::mem::take(&mut config.inputs);
    let mapping = config.settings.read.mapping.clone();
    let opening = tokio::task::spawn_blocking(move || {
        let inputs = open_inputs(sources, &mapping)?;
        let estimate = inputs.iter().map(OpenInput::estimate_records).sum();
        Ok::<_, ReadError>((inputs, estimate))
    });
    tokio::select! {
        opened = opening => match opened {
            Ok(Ok(opened)) => Ok(opened),
            Ok(Err(error)) => Err(stop_early(config, Exit::Usage, "input", &error)),
            Err(panic) => Err(stop_early(config, Exit::Usage, "input", &panic)),
        },
        () = signals.soft.cancelled() => Err(stop_early(
            config,
            Exit::Stopped,
            "interrupted",
            &"stopped by a signal while opening the inputs (a FIFO waits for its writer); \
              nothing was sent",
        )),
    }
}

/// The version of the `--json` summary's shape (README, "Running it from cron").
const JSON_SUMMARY_VERSION: u32 = 1;

/// What `import --json` prints: the summary's counts, flattened, and how the run ended.
#[derive(serde::Serialize)]
struct JsonSummary<'a> {
    version: u32,
    exit_code: i32,
    /// finished, interrupted, unauthorized, api_unavailable, endpoint, input, checkpoint,
    /// or, for a run that could not start: locked, errors_file.
    stopped_because: &'static str,
    checkpoint: String,
    errors_file: String,
    #[serde(flatten)]
    summary: &'a Summary,
}

fn stop_words(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::Finished => "finished",
        StopReason::Interrupted => "interrupted",
        StopReason::Unauthorized(_) => "unauthorized",
        StopReason::ApiUnavailable(_) => "api_unavailable",
        StopReason::Endpoint(_) => "endpoint",
        StopReason::Input(_) => "input",
        StopReason::Checkpoint(_) => "checkpoint",
    }
}

/// Ends a run that could not start: says why (through tracing, so JSON logs stay JSON) and,
/// with --json, prints the summary object all the same, so a scheduler always gets one.
fn stop_early(
    config: &ImportConfig,
    exit: Exit,
    stopped_because: &'static str,
    error: &dyn std::fmt::Display,
) -> Exit {
    tracing::error!("{error}");
    print_summary(config, exit, stopped_because, &Summary::default());
    exit
}

/// The summary on stdout: a table, or with --json one object. A stdout that cannot be
/// written (a closed pipe) does not change the run's exit status.
fn print_summary(
    config: &ImportConfig,
    exit: Exit,
    stopped_because: &'static str,
    summary: &Summary,
) {
    let mut out = std::io::stdout().lock();
    let written = if config.json {
        let report = JsonSummary {
            version: JSON_SUMMARY_VERSION,
            exit_code: exit as i32,
            stopped_because,
            checkpoint: config.checkpoint.display().to_string(),
            errors_file: config.errors.display().to_string(),
            summary,
        };
        serde_json::to_writer(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        summary.write_human(&mut out)
    };
    if let Err(error) = written.and_then(|()| out.flush()) {
        tracing::warn!("the summary could not be written to stdout: {error}");
    }
}

/// The exit status a run's outcome maps to.
fn exit_status(summary: &Summary, stop: &StopReason) -> Exit {
    match stop {
        StopReason::Unauthorized(_) => Exit::Unauthorized,
        StopReason::Input(_) | StopReason::Endpoint(_) => Exit::Usage,
        StopReason::Interrupted | StopReason::ApiUnavailable(_) | StopReason::Checkpoint(_) => {
            Exit::Stopped
        }
        StopReason::Finished if summary.rows_pending > 0 => Exit::Stopped,
        StopReason::Finished if summary.all_failed() > 0 => Exit::RowsFailed,
        StopReason::Finished => Exit::Success,
    }
}

/// Tells the user, after the summary, what the exit status means for them.
fn explain(
    stop: &StopReason,
    exit: Exit,
    errors_written: u64,
    errors_path: &std::path::Path,
    summary: &Summary,
) {
    // Through tracing, so that with --log-format json every line on stderr is JSON.
    match stop {
        StopReason::Unauthorized(message) => tracing::error!(
            "the API refused the key ({message}). Check KUSTOMER_API_KEY, its roles and \
             the base URL's region; no row was marked failed for it, and the same command \
             resumes once the key works."
        ),
        StopReason::ApiUnavailable(message) => {
            tracing::error!("stopped because the API keeps failing: {message}")
        }
        StopReason::Input(message)
        | StopReason::Endpoint(message)
        | StopReason::Checkpoint(message) => tracing::error!("{message}"),
        StopReason::Interrupted | StopReason::Finished => {}
    }
    if errors_written > 0 {
        tracing::warn!(
            "{errors_written} failed rows are in {} (file, line, field, reason, row)",
            errors_path.display()
        );
    }
    if exit == Exit::Stopped || (exit == Exit::Unauthorized && summary.rows_pending > 0) {
        tracing::warn!(
            "{} rows are pending. To resume, run the same command again: {}",
            summary.rows_pending,
            command_line()
        );
    }
}

/// Ctrl-C and SIGTERM, caught from the moment they are installed.
struct SignalStreams {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl SignalStreams {
    /// Installs the handlers now (not when a task first runs): a signal that comes while
    /// the inputs open must find them. None if the OS refuses.
    fn install() -> Option<SignalStreams> {
        use tokio::signal::unix::{SignalKind, signal};
        Some(SignalStreams {
            interrupt: signal(SignalKind::interrupt()).ok()?,
            terminate: signal(SignalKind::terminate()).ok()?,
        })
    }
}

/// First signal: stop taking rows and let requests in flight finish for the grace period.
/// Second signal: stop at once.
async fn watch_signals(
    streams: Option<SignalStreams>,
    signals: StopSignals,
    grace: std::time::Duration,
) {
    let Some(SignalStreams {
        mut interrupt,
        mut terminate,
    }) = streams
    else {
        tracing::warn!("cannot watch for signals; Ctrl-C will stop the run abruptly");
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::warn!(
        "stopping: no new rows; requests in flight may finish within {:.0} s. \
         Signal again to stop at once.",
        grace.as_secs_f64()
    );
    signals.soft.cancel();
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::warn!("stopping at once; the checkpoint's intents let the next run reconcile");
    signals.hard.cancel();
}

/// The command line as typed, shell-quoted, to show how to resume. It never holds the
/// key, which only travels in the environment.
fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            let safe = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c));
            if safe {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
