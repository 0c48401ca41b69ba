//! `kustomer-import undo`: deletes what a run (`--run ID`) or every run (`--all`) of the
//! import made, as `kustomer_import::undo` decides, and prints what it deleted and kept, as
//! a report or one JSON object. Before anything is sent it refuses a checkpoint of another
//! API, one with writes still unsettled, and, without `--yes`, asks once on a terminal
//! (naming the API and the counts) or refuses when there is none to ask on. The undo is a
//! line of its own in `runs`; the runs it took back whole are marked undone. Exit 0 when
//! everything selected is gone or kept by rule, 1 when a delete failed, 2 for usage, 3 for
//! a refused key, 4 when it stopped before the end, 5 when another run holds the checkpoint.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::Ordering;

use anyhow::Context;
use serde::Serialize;

use kustomer_import::checkpoint::undo::UndoScope;
use kustomer_import::checkpoint::{Checkpoint, CheckpointError, RunCounts};
use kustomer_import::undo::{self, Selection, Undone};

use super::{Exit, ReportHead};
use crate::config::UndoConfig;

/// The version of the `undo --json` shape.
const VERSION: u32 = 1;

#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    head: ReportHead,
    dry_run: bool,
    /// The run undone, or null for --all.
    run: Option<i64>,
    /// What was selected: conversations and customers to delete, customers and companies
    /// kept.
    selected: &'a Selection,
    /// How many records undo keeps, by kind.
    kept: KeptCounts,
    /// What the deletes did (null for a dry run).
    undone: Option<&'a Undone>,
    requests: u64,
}

/// The counts of what undo keeps.
#[derive(Serialize)]
struct KeptCounts {
    customers: usize,
    /// Of `customers`: in Kustomer before the import, which only used them.
    linked_customers: usize,
    /// Every company of the customers considered: undo deletes none.
    companies: usize,
}

impl KeptCounts {
    fn of(selection: &Selection) -> KeptCounts {
        KeptCounts {
            customers: selection.kept.len(),
            linked_customers: selection.kept_linked(),
            companies: selection.kept_companies.len(),
        }
    }
}

pub fn run(config: UndoConfig) -> anyhow::Result<Exit> {
    let json = config.made.json;
    let mut checkpoint = match Checkpoint::open(&config.made.checkpoint) {
        Ok(checkpoint) => checkpoint,
        Err(error @ CheckpointError::Locked { .. }) => {
            return Ok(super::not_started(json, Exit::Locked, "locked", &error));
        }
        Err(error) => return Ok(super::not_started(json, Exit::Usage, "checkpoint", &error)),
    };
    let selection = match prepare(&checkpoint, &config) {
        Ok(selection) => selection,
        Err((because, error)) => return Ok(super::not_started(json, Exit::Usage, because, &error)),
    };
    let wanted = config.made.target.api_target();
    let mut report = Report {
        head: ReportHead::new(VERSION, Exit::Success, &config.made.checkpoint, &wanted),
        dry_run: config.dry_run,
        run: match config.scope {
            UndoScope::Run(id) => Some(id),
            UndoScope::All => None,
        },
        selected: &selection,
        kept: KeptCounts::of(&selection),
        undone: None,
        requests: 0,
    };
    if config.dry_run {
        return print(&report, json).map(|()| Exit::Success);
    }
    if !config.yes {
        let question = format!(
            "Delete {} conversations and {} customers from {wanted} (kept: {} customers, {} \
             companies)? This cannot be undone. [y/N] ",
            selection.conversations.len(),
            selection.customers.len(),
            selection.kept.len(),
            selection.kept_companies.len()
        );
        if !std::io::stdin().is_terminal() {
            let error = format!(
                "undo deletes records for good and stdin is not a terminal to ask on: pass \
                 --yes to delete, or --dry-run to list ({})",
                question.trim_end_matches(" [y/N] ")
            );
            return Ok(super::not_started(json, Exit::Usage, "usage", &error));
        }
        if !confirmed(&question)? {
            let error = "not confirmed: nothing was deleted";
            return Ok(super::not_started(json, Exit::Usage, "usage", &error));
        }
    }
    let undo_run = checkpoint.begin_undo(&super::import::command_line(), &wanted)?;
    let (undone, requests) = match delete(&mut checkpoint, &config, &selection, undo_run)? {
        Ok(done) => done,
        Err((exit, error)) => {
            checkpoint.end_run(undo_run, exit as i32, RunCounts::default())?;
            return Ok(super::not_started(json, exit, "api", &error));
        }
    };
    let exit = if undone.all_gone() {
        checkpoint.runs_undone(config.scope, undo_run)?;
        Exit::Success
    } else {
        Exit::RowsFailed
    };
    let counts = RunCounts {
        rows_pending: undone.rows_pending_again,
        rows_failed: undone.failures.len() as u64,
        requests,
        ..RunCounts::default()
    };
    checkpoint.end_run(undo_run, exit as i32, counts)?;
    report.head.exit_code = exit as i32;
    report.undone = Some(&undone);
    report.requests = requests;
    print(&report, json)?;
    Ok(exit)
}

/// The checks before anything is sent, and the selection: Err names why undo cannot start.
fn prepare(
    checkpoint: &Checkpoint,
    config: &UndoConfig,
) -> Result<Selection, (&'static str, String)> {
    let text = |error: CheckpointError| ("checkpoint", error.to_string());
    let wanted = config.made.target.api_target();
    match checkpoint.recorded_target().map_err(text)? {
        None => {
            return Err((
                "target",
                format!(
                    "the checkpoint {} records no API (an older version made it, or no import \
                     has run): undo deletes only in the API a checkpoint names; run the \
                     import once against {wanted} to record it",
                    config.made.checkpoint.display()
                ),
            ));
        }
        recorded => {
            if let Some(error) = super::other_target(
                &config.made.checkpoint,
                recorded.as_ref(),
                &wanted,
                "undo",
                "deleted",
            ) {
                return Err(("target", error));
            }
        }
    }
    if let Some(records) = &config.made.sandbox_records
        && !records.exists()
    {
        let error = format!(
            "the rehearsal's sandbox records {} are not there: nothing to delete",
            records.display()
        );
        return Err(("sandbox", error));
    }
    if let UndoScope::Run(id) = config.scope
        && !checkpoint.has_run(id).map_err(text)?
    {
        let error = format!("the checkpoint has no run {id} (`status` lists the runs)");
        return Err(("usage", error));
    }
    let unsettled = checkpoint.unsettled().map_err(text)?;
    if unsettled.any() {
        let error = format!(
            "the checkpoint holds writes whose outcome is not recorded ({} rows, {} customers, \
             {} messages or notes, {} bulk jobs): what they made cannot be deleted until it \
             is known. Run the same import command again (it settles them), then undo",
            unsettled.rows, unsettled.customers, unsettled.records, unsettled.bulk_jobs
        );
        return Err(("unsettled", error));
    }
    let plan = checkpoint.undo_plan(config.scope).map_err(text)?;
    Ok(undo::select(plan, config.scope))
}

/// The deletes, on a runtime of their own; Err(exit, words) when undo stopped before the end.
#[allow(clippy::type_complexity)]
fn delete(
    checkpoint: &mut Checkpoint,
    config: &UndoConfig,
    selection: &Selection,
    undo_run: i64,
) -> anyhow::Result<Result<(Undone, u64), (Exit, String)>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let made = &config.made;
    let result = runtime.block_on(async {
        let (sandbox, client, stats) = super::made_records_client(
            &made.target,
            made.sandbox_records.clone(),
            made.rpm,
            made.timeout,
        )
        .await?;
        let undone = undo::undo(&client, checkpoint, selection, undo_run, config.mode).await;
        if let Some(sandbox) = sandbox {
            sandbox.shutdown().await;
        }
        anyhow::Ok((undone, stats.requests.load(Ordering::Relaxed)))
    });
    runtime.shutdown_background();
    let (undone, requests) = result?;
    Ok(match undone {
        Ok(undone) => Ok((undone, requests)),
        Err(undo::Stopped::Api(error)) => {
            let exit = super::exit_of_api(&error);
            Err((
                exit,
                format!("undo stopped before the end (run it again to resume): {error}"),
            ))
        }
        Err(
            error @ (undo::Stopped::Checkpoint(_)
            | undo::Stopped::Unreadable { .. }
            | undo::Stopped::JobMayRun { .. }),
        ) => Err((Exit::Stopped, error.to_string())),
    })
}

/// Asks once on the terminal; true for y or yes.
fn confirmed(question: &str) -> anyhow::Result<bool> {
    let mut err = std::io::stderr().lock();
    write!(err, "{question}")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    super::print_report(report, json, |out| write_report(out, report))
}

fn write_report(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let selected = report.selected;
    let scope = match report.run {
        Some(id) => format!("run {id}"),
        None => "every run".to_string(),
    };
    writeln!(out, "{}, undoing {scope}", report.head.headline())?;
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleting"
    };
    writeln!(
        out,
        "{verb} {} conversations (their messages and notes go with them) and {} customers",
        selected.conversations.len(),
        selected.customers.len()
    )?;
    if report.dry_run {
        for id in &selected.conversations {
            writeln!(out, "  conversation {id}")?;
        }
        for (key, id) in &selected.customers {
            writeln!(out, "  customer {id} ({key})")?;
        }
    }
    for kept in &selected.kept {
        writeln!(
            out,
            "kept customer {} ({}): {}",
            kept.id, kept.customer_key, kept.reason
        )?;
    }
    for company in &selected.kept_companies {
        writeln!(
            out,
            "kept company {} ({}, {})",
            company.id, company.company_key, company.origin
        )?;
    }
    let kept = &report.kept;
    writeln!(
        out,
        "kept {} customers ({} linked) and {} companies ({})",
        kept.customers,
        kept.linked_customers,
        kept.companies,
        undo::COMPANIES_KEPT
    )?;
    let Some(undone) = report.undone else {
        return writeln!(out, "dry run: nothing was deleted");
    };
    for (what, counts) in [
        ("conversations", undone.conversations),
        ("customers", undone.customers),
    ] {
        writeln!(
            out,
            "{what}: {} deleted, {} already gone, {} failed",
            counts.deleted, counts.already_gone, counts.failed
        )?;
    }
    for failure in &undone.failures {
        writeln!(
            out,
            "could not delete {} {}: {}",
            failure.record, failure.id, failure.reason
        )?;
    }
    writeln!(
        out,
        "{} rows are pending again ({} requests): the same import command makes them anew",
        undone.rows_pending_again, report.requests
    )
}
