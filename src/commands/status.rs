//! `kustomer-import status`: where an import stands, read from its checkpoint (also while a
//! run goes on), as a table or one JSON object.

use std::io::Write;
use std::path::Path;

use kustomer_import::checkpoint::inspect::RunRecord;
use kustomer_import::checkpoint::{ApiTarget, CheckpointReader, Status};

use super::Exit;

pub fn run(checkpoint: &Path, json: bool) -> anyhow::Result<Exit> {
    let read = CheckpointReader::open(checkpoint)
        .and_then(|reader| Ok((reader.status()?, reader.immutable_note())));
    let (status, note) = match read {
        Ok(read) => read,
        Err(error) => return Ok(super::not_started(json, Exit::Usage, "checkpoint", &error)),
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &status)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &status, note.as_deref())?;
    }
    out.flush()?;
    Ok(Exit::Success)
}

fn write_table(out: &mut impl Write, status: &Status, note: Option<&str>) -> std::io::Result<()> {
    writeln!(out, "checkpoint: {}", status.checkpoint)?;
    match &status.target {
        Some(target) if ApiTarget::recorded(target.clone()).is_sandbox() => writeln!(
            out,
            "target: sandbox (a rehearsal: nothing in it reached Kustomer)"
        )?,
        Some(target) => writeln!(out, "target: {target}")?,
        None => writeln!(
            out,
            "target: not recorded (an older checkpoint; its next import adopts its own)"
        )?,
    }
    match &status.active_run {
        Some(run) => writeln!(
            out,
            "a run is going on now: pid {} on {}, started {}",
            run.pid.map_or("?".into(), |pid| pid.to_string()),
            run.host.as_deref().unwrap_or("?"),
            run.started_at.as_deref().unwrap_or("?"),
        )?,
        None => writeln!(out, "no run is going on now")?,
    }
    if let Some(note) = note {
        writeln!(out, "({note})")?;
    }
    writeln!(out)?;
    let width = status
        .files
        .iter()
        .map(|file| file.file.chars().count())
        .chain([5])
        .max()
        .unwrap_or(5);
    writeln!(
        out,
        "{:<width$}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
        "file", "rows", "done", "failed", "pending", "unknown"
    )?;
    let rows = status
        .files
        .iter()
        .map(|file| (file.file.as_str(), &file.counts))
        .chain([("total", &status.total)]);
    for (name, counts) in rows {
        writeln!(
            out,
            "{name:<width$}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
            counts.rows, counts.done, counts.failed, counts.pending, counts.unknown
        )?;
    }
    if status.total.unresolved > 0 {
        writeln!(
            out,
            "({} failed rows may have been created all the same (an answer was lost with \
             nothing to look the record up by): check Kustomer for them; \
             `export --state failed` marks them outcome_unknown)",
            status.total.unresolved
        )?;
    }
    if status.total.unknown > 0 {
        let note = if status.active_run.is_some() {
            "unknown: a create is in flight, or a stopped run left it unanswered"
        } else {
            "unknown: a create left and its answer was not recorded; the next run looks it up"
        };
        writeln!(out, "({note})")?;
    }
    for file in status
        .files
        .iter()
        .filter(|f| !f.failed_by_reason.is_empty())
    {
        writeln!(out, "\nfailed rows of {} by reason:", file.file)?;
        for reason in &file.failed_by_reason {
            writeln!(out, "{:>8}  {}", reason.rows, reason.reason)?;
        }
    }
    let customers = &status.customers;
    writeln!(
        out,
        "\ncustomers: {} created, {} linked (already in Kustomer), {} reconciled, {} unknown",
        customers.created, customers.linked, customers.reconciled, customers.unknown
    )?;
    let companies = &status.companies;
    if companies != &Default::default() {
        writeln!(
            out,
            "companies: {} created, {} linked (already in Kustomer), {} reconciled, {} unknown",
            companies.created, companies.linked, companies.reconciled, companies.unknown
        )?;
    }
    let history = &status.history;
    if history != &Default::default() {
        writeln!(
            out,
            "history: {} messages, {} notes made; {} sent and unanswered (looked up next run), \
             {} refused",
            history.messages_done, history.notes_done, history.sent, history.failed
        )?;
    }
    let jobs = &status.bulk_jobs;
    if jobs != &Default::default() {
        writeln!(
            out,
            "bulk jobs: {} complete, {} queued, {} unanswered, {} refused, {} lost",
            jobs.complete, jobs.queued, jobs.submitting, jobs.refused, jobs.lost
        )?;
        if jobs.queued + jobs.submitting > 0 && status.active_run.is_none() {
            writeln!(
                out,
                "(queued and unanswered jobs are settled by the next run before it sends \
                 anything)"
            )?;
        }
    }
    if !status.runs.is_empty() {
        writeln!(out, "\nlast runs (newest first):")?;
        for run in &status.runs {
            let ended = match (&run.ended_at, run.exit_code) {
                (Some(ended), Some(code)) => format!("ended {ended}, exit {code}"),
                _ => "did not finish (killed, or going on now)".to_string(),
            };
            let count = |value: Option<i64>| value.map_or("-".to_string(), |n| n.to_string());
            let rate = run
                .requests_per_minute
                .map(|rate| format!(" ({rate:.0}/min)"))
                .unwrap_or_default();
            let target = run
                .target
                .as_deref()
                .map(|target| format!(", to {target}"))
                .unwrap_or_default();
            let sync = sync_counts(run);
            if run.is_undo() {
                writeln!(
                    out,
                    "  #{} undo started {}, {ended}: rows pending again {}, deletes failed {}, \
                     requests {}{target}",
                    run.id,
                    run.started_at,
                    count(run.rows_pending),
                    count(run.rows_failed),
                    count(run.requests),
                )?;
                continue;
            }
            let undone = run
                .undone_at
                .as_deref()
                .map(|at| format!(" (undone {at})"))
                .unwrap_or_default();
            writeln!(
                out,
                "  #{} started {}, {ended}: read {}, done {}{sync}, failed {}, pending {}, requests {}{rate}{target}{undone}",
                run.id,
                run.started_at,
                count(run.rows_read),
                count(run.rows_done),
                count(run.rows_failed),
                count(run.rows_pending),
                count(run.requests),
            )?;
        }
    }
    Ok(())
}

/// What a run's line says of its sync, when it read done rows again: the rows it updated
/// and found unchanged, and the messages and notes it updated (a run of a version before
/// migration 019 did not record those).
fn sync_counts(run: &RunRecord) -> String {
    let (Some(updated), Some(unchanged)) = (run.rows_updated, run.rows_unchanged) else {
        return String::new();
    };
    if updated + unchanged == 0 {
        return String::new();
    }
    let items = match (run.messages_updated, run.notes_updated) {
        (Some(messages), Some(notes)) if messages + notes > 0 => {
            format!(": {messages} messages, {notes} notes")
        }
        _ => String::new(),
    };
    format!(" (updated {updated}{items}, unchanged {unchanged})")
}
