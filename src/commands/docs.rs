//! `kustomer-import completions SHELL` and `kustomer-import man`: shell completions and the
//! man pages, generated from the same clap definition as `--help`, so they cannot drift.

use std::io::Write;
use std::path::Path;

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

/// With `dir`, one page per command (`kustomer-import.1`, `kustomer-import-import.1`, ...)
/// written there; without, one page on stdout that holds every command with its flags.
pub fn man(dir: Option<&Path>) -> anyhow::Result<Exit> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
        clap_mangen::generate_to(command, dir)?;
        return Ok(Exit::Success);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&one_page(&command)?)?;
    out.flush()?;
    Ok(Exit::Success)
}

/// The main page, then a section per command: its synopsis, description, flags (under
/// their groups) and examples, its own sections nested one level down.
fn one_page(command: &clap::Command) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = sub.get_display_name().unwrap_or_else(|| sub.get_name());
        writeln!(page, ".SH \"{}\"", name.to_uppercase())?;
        let man = clap_mangen::Man::new(sub.clone());
        let mut sections = Vec::new();
        man.render_synopsis_section(&mut sections)?;
        man.render_description_section(&mut sections)?;
        man.render_options_section(&mut sections)?;
        if sub.get_after_long_help().is_some() || sub.get_after_help().is_some() {
            man.render_extra_section(&mut sections)?;
        }
        let sections = String::from_utf8_lossy(&sections).replace(".SH ", ".SS ");
        page.extend_from_slice(sections.replace(".SS EXTRA", ".SS EXAMPLES").as_bytes());
    }
    Ok(page)
}
