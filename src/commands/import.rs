//! `kustomer-import import`: opens the checkpoint, starts the sandbox when asked, runs the
//! pipeline under signal handling, prints the summary and turns the outcome into an exit
//! status.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use secrecy::SecretString;

use kustomer_import::api::{ClientSettings, KustomerClient, RateGate, RequestStats};
use kustomer_import::checkpoint::{ApiTarget, Checkpoint, CheckpointError, RunCounts, TargetClaim};
use kustomer_import::input::OpenInput;
use kustomer_import::pipeline::{ImportOutcome, StopReason, StopSignals, run_import};
use kustomer_import::report::{ErrorsFile, Progress, Summary};
use kustomer_import::rows::{ReadError, open_inputs};
use kustomer_import::sandbox::{Sandbox, SandboxConfig};
use kustomer_import::undo;

use super::Exit;
use crate::config::{ImportConfig, ImportOutput, Target};

/// The key used against the in-process sandbox, which accepts any non-empty token.
pub(super) const SANDBOX_KEY: &str = "sandbox-key";

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
    // Every input must open, and the mapping find its columns, before anything is sent.
    let (inputs, estimated_rows) = match open_inputs_until_stopped(&mut config, &signals).await {
        Ok(opened) => opened,
        Err(exit) => return Ok(exit),
    };
    let output = &config.output;
    let mut checkpoint = match Checkpoint::open(&output.checkpoint) {
        Ok(checkpoint) => checkpoint,
        Err(error @ CheckpointError::Locked { .. }) => {
            return Ok(not_started(output, Exit::Locked, "locked", &error));
        }
        Err(error) => {
            let stop = StopReason::of_checkpoint(&error);
            return Ok(not_started(output, Exit::Usage, stop_words(&stop), &error));
        }
    };
    // Before the errors file is truncated and before any request: a checkpoint of another
    // API would have every done row skipped and nothing sent.
    let api_target = config.target.api_target();
    match checkpoint.claim_target(&api_target, config.retarget) {
        Ok(claim) => explain_claim(&claim, &api_target, &output.checkpoint),
        Err(error @ CheckpointError::OtherTarget(_)) => {
            return Ok(not_started(output, Exit::Usage, "target", &error));
        }
        Err(error) => return Ok(not_started(output, Exit::Usage, "checkpoint", &error)),
    }
    let mut errors = match ErrorsFile::create(&output.errors) {
        Ok(errors) => errors,
        Err(error) => {
            let error = format!(
                "cannot create the errors file {}: {error}",
                output.errors.display()
            );
            return Ok(not_started(output, Exit::Usage, "errors_file", &error));
        }
    };

    let (sandbox, base_url, api_key) = match &config.target {
        Target::Remote { base_url, api_key } => (None, base_url.clone(), api_key.clone()),
        Target::Sandbox => {
            match start_sandbox(output.sandbox_records.clone(), config.settings.org_admin).await {
                Ok((sandbox, url)) => (Some(sandbox), url, SecretString::from(SANDBOX_KEY)),
                Err(error) => {
                    return Ok(not_started(
                        output,
                        Exit::Usage,
                        "sandbox",
                        &format!("{error:#}"),
                    ));
                }
            }
        }
    };
    let stats = Arc::new(RequestStats::default());
    let gate = Arc::new(
        match config.rate_share {
            Some(share) => RateGate::with_share(share, config.rpm, config.rate_window),
            None => RateGate::new(config.rpm, config.rate_window),
        }
        .with_max_stall(config.max_stall),
    );
    let client = KustomerClient::new(
        ClientSettings {
            base_url,
            api_key,
            timeout: config.timeout,
            max_rate_limited: MAX_RATE_LIMITED_IN_A_ROW,
        },
        gate,
        Arc::clone(&stats),
    );
    let client = match client {
        Ok(client) => client,
        Err(error) => return Ok(not_started(output, Exit::Usage, "usage", &error)),
    };

    // Before a row is read: a customer an unfinished undo deleted must not be linked to.
    if let Err((exit, because, error)) = settle_unfinished_undo(&client, &mut checkpoint).await {
        return Ok(not_started(output, exit, because, &error));
    }

    let budget_per_second = f64::from(config.rpm) / config.rate_window.as_secs_f64();
    let progress = Progress::new(config.progress, estimated_rows, stats, budget_per_second);
    let run_id = match checkpoint.begin_run(&command_line(), &api_target) {
        Ok(run_id) => run_id,
        // An unwritable checkpoint: nothing can be recorded, so nothing is sent.
        Err(error) => {
            let stop = StopReason::of_checkpoint(&error);
            let exit = exit_status(&Summary::default(), &stop);
            return Ok(not_started(output, exit, stop_words(&stop), &error));
        }
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
                stop: StopReason::of_checkpoint(&error),
            }
        }
    };
    let errors_path = errors.path().to_path_buf();
    let errors_written = errors.rows();
    let errors_complete = errors.finish();

    let exit = exit_status(&summary, &stop);
    if matches!(stop, StopReason::CheckpointDamaged(_)) {
        // Nothing more is written to a damaged file, and a run without an end makes the next
        // one check the checkpoint whole before it uses it.
        tracing::warn!("the end of this run is not recorded in the damaged checkpoint");
    } else if let Err(error) = checkpoint.end_run(
        run_id,
        exit as i32,
        RunCounts {
            rows_read: summary.rows_read,
            rows_done: summary.rows_done + summary.rows_skipped_done,
            rows_failed: summary.all_failed(),
            rows_pending: summary.rows_pending,
            requests: summary.requests,
            rows_updated: summary.rows_updated,
            rows_unchanged: summary.rows_unchanged,
            messages_updated: summary.messages_updated,
            notes_updated: summary.notes_updated,
        },
    ) {
        tracing::error!("recording the end of the run: {error}");
    }
    print_summary(output, exit, stop_words(&stop), stop.message(), &summary);
    explain(&stop, exit, &summary);
    explain_errors_file(errors_written, &errors_path, errors_complete);
    if let Some(sandbox) = sandbox {
        sandbox.shutdown().await;
    }
    Ok(exit)
}

/// Settles what an undo killed midway left unknown (`undo::settle_unfinished`) and says
/// what it found; Err(exit, stopped_because, words) when the import cannot start.
async fn settle_unfinished_undo(
    client: &KustomerClient,
    checkpoint: &mut Checkpoint,
) -> Result<(), (Exit, &'static str, String)> {
    match undo::settle_unfinished(client, checkpoint).await {
        Ok(settled) if settled.gone + settled.still_there > 0 => {
            tracing::warn!(
                "an undo stopped before its end: of its deletes with no recorded result, {} \
                 were gone ({} rows pending again, made anew by this run) and {} had not \
                 landed (kept, and used by this run)",
                settled.gone,
                settled.rows_pending_again,
                settled.still_there
            );
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(undo::Stopped::Api(error)) if super::exit_of_api(&error) == Exit::Unauthorized => {
            Err((Exit::Unauthorized, "unauthorized", error.to_string()))
        }
        Err(error) => Err((Exit::Stopped, "undo_unfinished", error.to_string())),
    }
}

/// Says what a run's target did to the checkpoint, when it changed anything the user
/// should know: a new checkpoint is simply recorded.
fn explain_claim(claim: &TargetClaim, target: &ApiTarget, checkpoint: &std::path::Path) {
    let checkpoint = checkpoint.display();
    match claim {
        TargetClaim::Same => {}
        TargetClaim::New => tracing::debug!("the checkpoint {checkpoint} belongs to {target}"),
        TargetClaim::Adopted => tracing::warn!(
            "the checkpoint {checkpoint} was made by an older version, which did not record \
             the API it was written against: it now belongs to {target}, and a run against \
             another API will be refused"
        ),
        TargetClaim::Unused { from } => tracing::warn!(
            "the checkpoint {checkpoint} was written against {from} but holds nothing made \
             there: it now belongs to {target}"
        ),
        TargetClaim::Retargeted { from } => tracing::warn!(
            "--retarget: the checkpoint {checkpoint} moves from {from} to {target}; its done \
             rows are taken as made in {target}"
        ),
    }
}

/// The in-process sandbox, on an ephemeral port of 127.0.0.1, holding the records the
/// rehearsal's earlier runs made (kept in `records`, beside the checkpoint). Its key holds
/// `org.admin` when the import says the real one does.
pub(super) async fn start_sandbox(
    records: Option<PathBuf>,
    org_admin: bool,
) -> anyhow::Result<(Sandbox, url::Url)> {
    let config = SandboxConfig {
        records: records.clone(),
        org_admin,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, 0)
        .await
        .with_context(|| match &records {
            Some(path) => format!(
                "starting the sandbox on its records file {}",
                path.display()
            ),
            None => "starting the sandbox".to_string(),
        })?;
    let held = sandbox.stats();
    let earlier = match &records {
        Some(path) if held.customers + held.conversations > 0 => format!(
            "; it holds the {} customers and {} conversations of this rehearsal's earlier \
             runs, from {}",
            held.customers,
            held.conversations,
            path.display()
        ),
        _ => String::new(),
    };
    tracing::info!(
        "rehearsing in the built-in sandbox at {} (nothing reaches Kustomer){earlier}",
        sandbox.base_url(),
    );
    let url = url::Url::parse(&sandbox.base_url()).context("the sandbox's address")?;
    Ok((sandbox, url))
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
    let read = config.settings.read.clone();
    let opening = tokio::task::spawn_blocking(move || {
        let inputs = open_inputs(sources, &read)?;
        // Lines are not rows when rows are messages: no estimate rather than a wrong one.
        let estimate = if read.rows_are_messages {
            None
        } else {
            inputs.iter().map(OpenInput::estimate_records).sum()
        };
        Ok::<_, ReadError>((inputs, estimate))
    });
    tokio::select! {
        opened = opening => match opened {
            Ok(Ok(opened)) => Ok(opened),
            Ok(Err(error)) => Err(not_started(&config.output, Exit::Usage, "input", &error)),
            Err(panic) => Err(not_started(&config.output, Exit::Usage, "input", &panic)),
        },
        () = signals.soft.cancelled() => Err(not_started(
            &config.output,
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
    /// checkpoint_damaged, or, for a run that could not start: usage, locked, target,
    /// errors_file, sandbox.
    stopped_because: &'static str,
    /// Why the run stopped or could not start, in the words the log gives; None when it
    /// finished.
    error: Option<String>,
    /// None only when the command line could not be read at all.
    checkpoint: Option<String>,
    errors_file: Option<String>,
    /// A rehearsal (--sandbox): nothing reached Kustomer.
    rehearsal: bool,
    #[serde(flatten)]
    summary: &'a Summary,
}

fn stop_words(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::Finished => "finished",
        StopReason::Interrupted => "interrupted",
        StopReason::Unauthorized(_) => "unauthorized",
        // A stalled API is unavailable to the run: the JSON keeps its documented words.
        StopReason::ApiUnavailable(_) | StopReason::Stalled(_) => "api_unavailable",
        StopReason::Endpoint(_) => "endpoint",
        StopReason::Input(_) => "input",
        StopReason::Checkpoint(_) => "checkpoint",
        StopReason::CheckpointDamaged(_) => "checkpoint_damaged",
    }
}

/// Ends a run that could not start: its error, last, on stderr (through tracing, so JSON
/// logs stay JSON), and with --json the summary object on stdout all the same, so a
/// scheduler always gets one. No all-zero table is printed after the error.
pub fn not_started(
    output: &ImportOutput,
    exit: Exit,
    stopped_because: &'static str,
    error: &dyn std::fmt::Display,
) -> Exit {
    tracing::error!("{error}");
    if output.json {
        print_summary(
            output,
            exit,
            stopped_because,
            Some(error.to_string()),
            &Summary::default(),
        );
    }
    exit
}

/// What `import --json` prints when not even the command line could be read (a bad flag
/// value): the summary's shape, no paths, every count zero.
pub fn print_unreadable_command_line(error: &str) {
    write_json(&JsonSummary {
        version: JSON_SUMMARY_VERSION,
        exit_code: Exit::Usage as i32,
        stopped_because: "usage",
        error: Some(error.to_string()),
        checkpoint: None,
        errors_file: None,
        rehearsal: false,
        summary: &Summary::default(),
    });
}

/// The summary on stdout: a table, or with --json one object. A stdout that cannot be
/// written (a closed pipe) does not change the run's exit status.
fn print_summary(
    output: &ImportOutput,
    exit: Exit,
    stopped_because: &'static str,
    error: Option<String>,
    summary: &Summary,
) {
    if output.json {
        write_json(&JsonSummary {
            version: JSON_SUMMARY_VERSION,
            exit_code: exit as i32,
            stopped_because,
            error,
            checkpoint: Some(output.checkpoint.display().to_string()),
            errors_file: Some(output.errors.display().to_string()),
            rehearsal: output.sandbox_records.is_some(),
            summary,
        });
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = summary
        .write_human(&mut out)
        .and_then(|()| write_rehearsal_note(&mut out, output))
        .and_then(|()| out.flush());
    if let Err(error) = written {
        tracing::warn!("the summary could not be written to stdout: {error}");
    }
}

/// After a rehearsal's summary: that nothing reached Kustomer, and where its state is.
fn write_rehearsal_note(out: &mut impl Write, output: &ImportOutput) -> std::io::Result<()> {
    let Some(records) = &output.sandbox_records else {
        return Ok(());
    };
    writeln!(
        out,
        "rehearsal: nothing reached Kustomer. The built-in sandbox keeps its records in {} \
         and the rehearsal's checkpoint is {}; the real import (without --sandbox, with \
         KUSTOMER_API_KEY) uses a checkpoint of its own.",
        records.display(),
        output.checkpoint.display()
    )
}

fn write_json(report: &JsonSummary) {
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut out, report)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    if let Err(error) = written {
        tracing::warn!("the summary could not be written to stdout: {error}");
    }
}

/// The exit status a run's outcome maps to.
fn exit_status(summary: &Summary, stop: &StopReason) -> Exit {
    match stop {
        StopReason::Unauthorized(_) => Exit::Unauthorized,
        StopReason::Input(_) | StopReason::Endpoint(_) | StopReason::CheckpointDamaged(_) => {
            Exit::Usage
        }
        StopReason::Interrupted
        | StopReason::ApiUnavailable(_)
        | StopReason::Stalled(_)
        | StopReason::Checkpoint(_) => Exit::Stopped,
        StopReason::Finished if summary.rows_pending > 0 => Exit::Stopped,
        StopReason::Finished if summary.all_failed() > 0 => Exit::RowsFailed,
        StopReason::Finished => Exit::Success,
    }
}

/// Tells the user, after the summary, what the exit status means for them.
fn explain(stop: &StopReason, exit: Exit, summary: &Summary) {
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
        StopReason::Stalled(message) => tracing::error!(
            "stopped: {message}. No row was marked failed for it; run the same command again \
             later, or give the API longer with --max-stall."
        ),
        StopReason::Input(message)
        | StopReason::Endpoint(message)
        | StopReason::Checkpoint(message)
        | StopReason::CheckpointDamaged(message) => tracing::error!("{message}"),
        StopReason::Interrupted | StopReason::Finished => {}
    }
    if exit == Exit::Stopped || (exit == Exit::Unauthorized && summary.rows_pending > 0) {
        tracing::warn!(
            "{} rows are pending. To resume, run the same command again: {}",
            summary.rows_pending,
            command_line()
        );
    }
}

/// Where this run's failed rows are, or, when the errors file could not be written whole
/// (a full disk), that it is not to be trusted and where the rows are kept all the same.
fn explain_errors_file(written: u64, path: &std::path::Path, complete: std::io::Result<()>) {
    match complete {
        Ok(()) if written > 0 => tracing::warn!(
            "{written} failed rows are in {} (file, line, field, reason, row)",
            path.display()
        ),
        Ok(()) => {}
        Err(error) => tracing::error!(
            "the errors file {} could not be written ({error}): it misses some of this \
             run's {written} failed rows. The checkpoint has every one: kustomer-import \
             export --state failed",
            path.display()
        ),
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
pub(super) fn command_line() -> String {
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
