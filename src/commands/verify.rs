//! `kustomer-import verify`: reads back from the API what a checkpoint says an import made
//! or linked and compares it with what was sent (see `kustomer_import::verify`), as a report
//! or one JSON object. Exit 0 when everything matches, 1 when something does not, 2 for a
//! checkpoint that cannot be read or belongs to another API, 3 for a refused key, 4 when the
//! API could not be read to the end.

use std::io::Write;
use std::sync::atomic::Ordering;

use anyhow::Context;
use serde::Serialize;

use kustomer_import::checkpoint::CheckpointReader;
use kustomer_import::verify::{self, Findings};

use super::{Exit, ReportHead};
use crate::config::VerifyConfig;

/// The version of the `verify --json` shape.
const VERSION: u32 = 1;

#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    head: ReportHead,
    #[serde(flatten)]
    findings: &'a Findings,
    requests: u64,
}

pub fn run(config: VerifyConfig) -> anyhow::Result<Exit> {
    let json = config.json;
    let reader = match CheckpointReader::open(&config.checkpoint) {
        Ok(reader) => reader,
        Err(error) => return Ok(super::not_started(json, Exit::Usage, "checkpoint", &error)),
    };
    // As import does: a checkpoint's ids exist in the API it was written against only.
    let wanted = config.target.api_target();
    match reader.target() {
        Ok(recorded @ Some(_)) => {
            if let Some(error) = super::other_target(
                &config.checkpoint,
                recorded.as_ref(),
                &wanted,
                "verify",
                "checked",
            ) {
                return Ok(super::not_started(json, Exit::Usage, "target", &error));
            }
        }
        Ok(None) => tracing::warn!(
            "the checkpoint {} records no API (an older version made it): reading from {wanted}",
            config.checkpoint.display()
        ),
        Err(error) => return Ok(super::not_started(json, Exit::Usage, "checkpoint", &error)),
    }
    if let Some(records) = &config.sandbox_records
        && !records.exists()
    {
        let error = format!(
            "the rehearsal's sandbox records {} are not there: nothing to read back",
            records.display()
        );
        return Ok(super::not_started(json, Exit::Usage, "sandbox", &error));
    }
    let rows = match reader.verify_rows() {
        Ok(rows) => rows,
        Err(error) => return Ok(super::not_started(json, Exit::Usage, "checkpoint", &error)),
    };
    let done_rows = rows.len() as u64;
    let views = verify::customer_views(&rows);
    let rows = verify::select(rows, config.selection);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let checked = runtime.block_on(async {
        let (sandbox, client, stats) = super::made_records_client(
            &config.target,
            config.sandbox_records.clone(),
            config.rpm,
            config.timeout,
        )
        .await?;
        let findings = verify::verify(&client, done_rows, &rows, &views).await;
        if let Some(sandbox) = sandbox {
            sandbox.shutdown().await;
        }
        anyhow::Ok((findings, stats.requests.load(Ordering::Relaxed)))
    });
    runtime.shutdown_background();
    let (findings, requests) = checked?;
    let findings = match findings {
        Ok(findings) => findings,
        Err(verify::Stopped(error)) => {
            let exit = super::exit_of_api(&error);
            let error = format!("verify stopped before the end: {error}");
            return Ok(super::not_started(json, exit, "api", &error));
        }
    };
    let exit = if findings.all_match() {
        Exit::Success
    } else {
        Exit::RowsFailed
    };
    let report = Report {
        head: ReportHead::new(VERSION, exit, &config.checkpoint, &wanted),
        findings: &findings,
        requests,
    };
    super::print_report(&report, json, |out| write_report(out, &report))?;
    Ok(exit)
}

fn write_report(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let findings = report.findings;
    writeln!(out, "{}", report.head.headline())?;
    writeln!(
        out,
        "checked {} of {} done rows ({} customers, {} requests): {} matching, {} mismatched, \
         {} missing",
        findings.checked,
        findings.done_rows,
        findings.customers_checked,
        report.requests,
        findings.matching,
        findings.mismatched,
        findings.missing
    )?;
    if findings.existence_only > 0 {
        writeln!(
            out,
            "({} rows were made by a version that recorded no fingerprint: checked for \
             existence and ownership only)",
            findings.existence_only
        )?;
    }
    if findings.mismatches.is_empty() {
        return writeln!(out, "everything checked is as the import made it");
    }
    writeln!(out, "\nmismatches:")?;
    for m in &findings.mismatches {
        let what = match (m.problem, &m.field) {
            ("missing", _) => "is missing (the API answers 404)".to_string(),
            ("other_customer", _) => format!(
                "belongs to customer {}, not {}",
                m.found.as_deref().unwrap_or("?"),
                m.expected.as_deref().unwrap_or("?")
            ),
            ("notes", _) => format!(
                "has {} notes, the import made {}",
                m.found.as_deref().unwrap_or("?"),
                m.expected.as_deref().unwrap_or("?")
            ),
            ("field", Some(field)) => format!(
                "field {field} is not as sent (now {})",
                m.found.as_deref().unwrap_or("?")
            ),
            _ => format!("could not be read: {}", m.found.as_deref().unwrap_or("?")),
        };
        writeln!(
            out,
            "{} line {} (row {}): {} {} {what}",
            m.file, m.line, m.row_key, m.record, m.id
        )?;
    }
    Ok(())
}
