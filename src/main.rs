//! kustomer-import's entry point: take the key out of the environment, parse the command
//! line, set up logging, run the command, exit with its status. Everything else lives in the
//! library and `commands/`.

mod cli;
mod commands;
mod config;
mod process;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, LogFormat};
use commands::Exit;

/// mimalloc instead of glibc's malloc: rows are allocated on the reader thread and freed on
/// the planner's, and glibc's arena lock made those frees a third of a resume's time
/// (perf: futex waits under __lll_lock_wait_private, _int_free, malloc_consolidate).
/// Built with `no_thp` (Cargo.toml): mimalloc otherwise asks for transparent huge pages,
/// and 2 MiB pages, partly used, were 18 MiB of a 1M-row import's 59 MiB peak.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // First, while the process has one thread: the key leaves the environment and the
    // process becomes non-dumpable, before anything could copy or show either.
    let api_key = process::take_api_key();
    let dumps_forbidden = process::forbid_core_dumps();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return refuse_command_line(error).into(),
    };
    init_logging(cli.verbose, cli.quiet, cli.log_format);
    if let Err(error) = dumps_forbidden {
        tracing::warn!(
            "could not make the process non-dumpable ({error}): a core dump of it could \
             hold the API key"
        );
    }
    run(cli.command, api_key).into()
}

/// Runs one command to its exit status.
fn run(command: Command, api_key: Option<String>) -> Exit {
    let json = command.wants_json();
    let result = match command {
        Command::Import(args) => {
            let output = config::import_output(&args);
            match config::import_config(*args, api_key) {
                Ok(config) => commands::import::run(config),
                Err(error) => {
                    return commands::import::not_started(&output, Exit::Usage, "usage", &error);
                }
            }
        }
        Command::Validate(args) => match config::validate_config(args, api_key) {
            Ok(config) => commands::validate::run(config),
            Err(error) => return commands::not_started(json, Exit::Usage, "usage", &error),
        },
        Command::Status(args) => commands::status::run(
            &config::checkpoint_path(args.read.checkpoint.as_deref(), args.read.sandbox),
            args.json,
        ),
        Command::Export(args) => match config::export_config(args) {
            Ok(config) => commands::export::run(config),
            Err(error) => return commands::not_started(false, Exit::Usage, "usage", &error),
        },
        Command::Resolve(args) => match config::resolve_config(args) {
            Ok(config) => commands::resolve::run(&config),
            Err(error) => return commands::not_started(false, Exit::Usage, "usage", &error),
        },
        Command::Verify(args) => match config::verify_config(args, api_key) {
            Ok(config) => commands::verify::run(config),
            Err(error) => return commands::not_started(json, Exit::Usage, "usage", &error),
        },
        Command::Undo(args) => match config::undo_config(args, api_key) {
            Ok(config) => commands::undo::run(config),
            Err(error) => return commands::not_started(json, Exit::Usage, "usage", &error),
        },
        Command::Mapping(cli::MappingCommand::Init(args)) => {
            match config::mapping_init_config(args) {
                Ok(config) => commands::mapping::init(config),
                Err(error) => return commands::not_started(false, Exit::Usage, "usage", &error),
            }
        }
        Command::Completions { shell } => commands::docs::completions(shell),
        Command::Man { dir } => commands::docs::man(dir.as_deref()),
        Command::Sandbox(args) => match config::sandbox_config(&args) {
            Ok((config, port)) => commands::sandbox::run(config, port),
            Err(error) => return commands::not_started(false, Exit::Usage, "usage", &error),
        },
    };
    match result {
        Ok(exit) => exit,
        // The reader of our stdout went away (`| head`): nothing is wrong.
        Err(error) if is_broken_pipe(&error) => Exit::Success,
        Err(error) => commands::not_started(json, Exit::Usage, "error", &format!("{error:#}")),
    }
}

/// A command line clap refused: its message as clap words it (or as one JSON log line),
/// and with `--json` the command's summary object with the error, so a scheduler that
/// reads stdout gets one on this path too. Help and version are not refusals.
fn refuse_command_line(error: clap::Error) -> Exit {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        error.exit();
    }
    let wanted = Wanted::from_args(std::env::args_os().skip(1));
    let log_format = if wanted.json_logs {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    init_logging(0, 0, log_format);
    let message = error.render().to_string();
    let message = message.trim_end();
    match log_format {
        LogFormat::Json => tracing::error!("{message}"),
        LogFormat::Text => {
            let _ = error.print();
        }
    }
    if wanted.json {
        match wanted.command.as_deref() {
            Some("import") => commands::import::print_unreadable_command_line(message),
            _ => commands::print_not_started_json(Exit::Usage, "usage", message),
        }
    }
    Exit::Usage
}

/// What a command line clap could not parse still says of how to report: which command
/// it was for, and whether it asked for a JSON summary or JSON logs (by flag or by the
/// environment variables the flags read).
#[derive(Debug, Default, PartialEq)]
struct Wanted {
    command: Option<String>,
    json: bool,
    json_logs: bool,
}

impl Wanted {
    fn from_args(args: impl Iterator<Item = OsString>) -> Wanted {
        let truthy = |name: &str| {
            std::env::var(name).is_ok_and(|value| {
                !matches!(
                    value.trim().to_ascii_lowercase().as_str(),
                    "" | "0" | "false" | "no" | "n" | "off"
                )
            })
        };
        let mut wanted = Wanted {
            json: truthy("KUSTOMER_IMPORT_JSON"),
            json_logs: std::env::var("KUSTOMER_IMPORT_LOG_FORMAT")
                .is_ok_and(|format| format.eq_ignore_ascii_case("json")),
            ..Wanted::default()
        };
        let args: Vec<String> = args
            .map(|arg| arg.to_string_lossy().into_owned())
            .take_while(|arg| arg != "--")
            .collect();
        for (index, arg) in args.iter().enumerate() {
            match arg.as_str() {
                "--json" => wanted.json = true,
                "--log-format=json" => wanted.json_logs = true,
                "--log-format" => {
                    wanted.json_logs = args.get(index + 1).is_some_and(|v| v == "json");
                }
                _ if wanted.command.is_none()
                    && !arg.starts_with('-')
                    && args
                        .get(index.wrapping_sub(1))
                        .is_none_or(|p| p != "--log-format") =>
                {
                    wanted.command = Some(arg.clone());
                }
                _ => {}
            }
        }
        wanted
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<csv::Error>()
                .is_some_and(|csv| matches!(csv.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe))
    })
}

/// Log lines on stderr, for people or (`--log-format json`) for log shippers; `-v`/`-q`
/// or RUST_LOG pick the level; colour only on a terminal and never with NO_COLOR.
fn init_logging(verbose: u8, quiet: u8, format: LogFormat) {
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (_, q) if q > 0 => "warn",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("warn,kustomer_import={level}"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(kustomer_import::report::LogWriter)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(args: &[&str]) -> Wanted {
        Wanted::from_args(args.iter().map(OsString::from))
    }

    #[test]
    fn a_refused_command_line_still_tells_how_to_report() {
        let seen = wanted(&[
            "--log-format",
            "json",
            "import",
            "x.csv",
            "--rpm",
            "z",
            "--json",
        ]);
        assert_eq!(seen.command.as_deref(), Some("import"));
        assert!(seen.json && seen.json_logs);
        let seen = wanted(&["-v", "status", "--", "--json"]);
        assert_eq!(seen.command.as_deref(), Some("status"));
        assert!(!seen.json, "after -- it is a value, not a flag");
    }
}
