//! kustomer-import's entry point: parse the command line, set up logging, run the command,
//! exit with its status. Everything else lives in the library and `commands/`.

mod cli;
mod commands;
mod config;

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
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet, cli.log_format);
    let result = match cli.command {
        Command::Import(args) => {
            let api_key = std::env::var(config::API_KEY_VAR).ok();
            config::import_config(args, api_key).map(commands::import::run)
        }
        Command::Validate(args) => config::validate_config(args).map(commands::validate::run),
        Command::Status(args) => Ok(commands::status::run(&args.read.checkpoint, args.json)),
        Command::Export(args) => Ok(commands::export::run(config::export_config(args))),
        Command::Completions { shell } => Ok(commands::docs::completions(shell)),
        Command::Man => Ok(commands::docs::man()),
        Command::Sandbox(args) => {
            config::sandbox_config(&args).map(|(config, port)| commands::sandbox::run(config, port))
        }
    };
    let exit = match result {
        Err(usage) => {
            eprintln!("error: {usage}");
            Exit::Usage
        }
        // The reader of our stdout went away (`| head`): nothing is wrong.
        Ok(Err(error)) if is_broken_pipe(&error) => Exit::Success,
        Ok(Err(error)) => {
            eprintln!("error: {error:#}");
            Exit::Usage
        }
        Ok(Ok(exit)) => exit,
    };
    exit.into()
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
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init()
        }
    }
}
