//! `kustomer-import completions SHELL` and `kustomer-import man`: shell completions and the
//! man page, generated from the same clap definition as `--help`, so they cannot drift.

use clap::CommandFactory;

use super::Exit;
use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<Exit> {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "kustomer-import",
        &mut std::io::stdout(),
    );
    Ok(Exit::Success)
}

pub fn man() -> anyhow::Result<Exit> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(Exit::Success)
}
