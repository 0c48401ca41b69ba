//! `kustomer-import validate`: reads every input through the same rows, mapping and local
//! validation as `import` ([`RowReader`]), sends nothing, and reports what an import would
//! refuse before its first request: counts, invalid rows by reason (each one in the errors
//! file with its file, line, field and reason) and how rows spread over customers. Memory
//! stays flat whatever the size of the inputs: the only per-row state is on disk
//! ([`Tally`]).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use serde::Serialize;

use kustomer_import::report::ErrorsFile;
use kustomer_import::rowkey::fingerprint;
use kustomer_import::rows::{ReadSettings, RowReader, open_inputs};
use kustomer_import::tally::Tally;

use super::Exit;
use crate::config::ValidateConfig;

/// What validate found.
#[derive(Debug, Default, Serialize)]
struct ValidationReport {
    rows: u64,
    valid: u64,
    invalid: u64,
    /// `field: rule` -> rows, list positions left out (`emails[].email: not an email address`).
    invalid_by_reason: BTreeMap<String, u64>,
    /// Valid rows that carry a conversation.
    conversations: u64,
    /// Messages and notes of the valid rows' threads (listed only when there are some).
    #[serde(skip_serializing_if = "is_zero")]
    messages: u64,
    #[serde(skip_serializing_if = "is_zero")]
    notes: u64,
    /// Distinct customers among the valid rows.
    customers: u64,
    rows_per_customer: RowsPerCustomer,
    errors_file: String,
    /// Why reading stopped before the end, if it did (exit 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct RowsPerCustomer {
    mean: f64,
    most: u32,
}

pub fn run(config: ValidateConfig) -> anyhow::Result<Exit> {
    // One row per message (its grouping pre-pass) is not built: refused, rather than
    // import conversations without the history the user asked for.
    if config.history.rows_are_messages {
        anyhow::bail!(
            "--rows-are-messages: this build checks the flag but does not group rows yet"
        );
    }
    let mut errors = ErrorsFile::create(&config.errors)
        .with_context(|| format!("cannot create the errors file {}", config.errors.display()))?;
    let mut customers = Tally::default();
    let mut report = ValidationReport {
        errors_file: config.errors.display().to_string(),
        ..ValidationReport::default()
    };
    let settings = ReadSettings {
        mapping: config.mapping,
        derive_conversation_ids: false,
        limit: None,
        history: None,
        child: config.history.messages.clone(),
    };
    // Every input opens, and its header fits the mapping, before a row is read.
    let rows = match open_inputs(config.inputs, &settings.mapping) {
        Ok(inputs) => Some(RowReader::new(inputs, settings)),
        Err(error) => {
            tracing::error!("{error}");
            report.stopped = Some(error.to_string());
            None
        }
    };
    for row in rows.into_iter().flatten() {
        let row = match row {
            Ok(row) => row,
            Err(error) => {
                tracing::error!("{error}");
                report.stopped = Some(error.to_string());
                break;
            }
        };
        report.rows += 1;
        match &row.plan {
            Ok(plan) => {
                report.valid += 1;
                report.conversations += u64::from(plan.conversation.is_some());
                report.messages += row.thread.messages;
                report.notes += row.thread.notes;
                customers.bump(fingerprint(&plan.customer_key))?;
            }
            Err(error) => {
                report.invalid += 1;
                *report
                    .invalid_by_reason
                    .entry(error.category())
                    .or_default() += 1;
                errors.write(
                    &row.origin.file,
                    row.origin.line,
                    error.field.as_deref(),
                    &error.reason,
                    &row.original.to_json(),
                );
            }
        }
    }
    errors
        .finish()
        .with_context(|| format!("writing the errors file {}", config.errors.display()))?;
    let (distinct, most) = customers.distinct_and_most()?;
    report.customers = distinct;
    report.rows_per_customer = RowsPerCustomer {
        mean: if distinct == 0 {
            0.0
        } else {
            (report.valid as f64 / distinct as f64 * 100.0).round() / 100.0
        },
        most,
    };

    let mut out = std::io::stdout().lock();
    if config.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_human(&report, &mut out)?;
    }
    Ok(if report.stopped.is_some() {
        Exit::Usage
    } else if report.invalid > 0 {
        Exit::RowsFailed
    } else {
        Exit::Success
    })
}

fn write_human(report: &ValidationReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "rows read:          {}", report.rows)?;
    writeln!(out, "  valid:            {}", report.valid)?;
    if report.invalid > 0 {
        writeln!(
            out,
            "  invalid:          {} (each in {})",
            report.invalid, report.errors_file
        )?;
        let mut reasons: Vec<_> = report.invalid_by_reason.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (reason, rows) in reasons {
            writeln!(out, "    {rows:>8}  {reason}")?;
        }
    } else {
        writeln!(out, "  invalid:          0")?;
    }
    writeln!(out, "conversations:      {}", report.conversations)?;
    if report.messages + report.notes > 0 {
        writeln!(
            out,
            "history:            {} messages, {} notes",
            report.messages, report.notes
        )?;
    }
    writeln!(
        out,
        "customers:          {} (rows per customer: {:.2} on average, {} at most)",
        report.customers, report.rows_per_customer.mean, report.rows_per_customer.most
    )?;
    if let Some(stopped) = &report.stopped {
        writeln!(out, "stopped early:      {stopped}")?;
    }
    Ok(())
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}
