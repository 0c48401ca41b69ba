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
use kustomer_import::rowkey::{CONTENT_KEY, fingerprint};
use kustomer_import::rows::{ReadError, ReadRow, ReadSettings, RowReader, open_inputs};
use kustomer_import::tally::Tally;

use super::Exit;
use crate::config::ValidateConfig;

/// What validate found.
#[derive(Debug, Default, Serialize)]
struct ValidationReport {
    rows: u64,
    /// Lines of rows that are messages that are not rows: later lines of a conversation
    /// (listed only when there are some).
    #[serde(skip_serializing_if = "is_zero")]
    lines_grouped: u64,
    valid: u64,
    invalid: u64,
    /// `field: rule` -> rows, list positions left out (`emails[].email: not an email address`).
    invalid_by_reason: BTreeMap<String, u64>,
    /// Valid rows that carry a conversation.
    conversations: u64,
    /// Of those, the ones with no conversation id and no key columns: keyed by their
    /// content, so a change in tomorrow's export makes them new rows (listed only when
    /// there are some, and warned of once).
    #[serde(skip_serializing_if = "is_zero")]
    conversations_keyed_by_content: u64,
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
        derive_customer_ids: config.derive_customer_ids,
        limit: None,
        history: None,
        child: config.history.messages.clone(),
        rows_are_messages: config.history.rows_are_messages,
        key_columns: config.key_columns,
    };
    // Every input opens, and its header fits the mapping, before a row is read.
    match open_inputs(config.inputs, &settings) {
        Ok(inputs) => {
            let mut reader = RowReader::new(inputs, settings);
            if let Err(error) = read_rows(&mut reader, &mut report, &mut errors, &mut customers) {
                tracing::error!("{error}");
                report.stopped = Some(error.to_string());
            }
            report.lines_grouped = reader.grouped_lines();
        }
        Err(error) => {
            tracing::error!("{error}");
            report.stopped = Some(error.to_string());
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

/// Counts every row as import would read it: the history's pre-pass first (a messages
/// file, or rows that are messages), then the rows, then the threads no row claimed.
fn read_rows(
    reader: &mut RowReader,
    report: &mut ValidationReport,
    errors: &mut ErrorsFile,
    customers: &mut Tally,
) -> Result<(), ReadError> {
    reader.stage_history()?;
    for row in reader.by_ref() {
        count_row(row?, report, errors, customers)?;
    }
    for orphan in reader.orphans()? {
        count_row(orphan, report, errors, customers)?;
    }
    if report.conversations_keyed_by_content > 0 {
        tracing::warn!(
            "{} conversations have no conversation id, and no --key-columns say what \
             identifies them: each is keyed by its content, so for a recurring (nightly) run \
             a row that changes in tomorrow's export is a new row and makes a second \
             conversation. Map a conversation id, or give --key-columns (a mapping file's \
             [conversation] key) with the columns that identify a conversation",
            report.conversations_keyed_by_content
        );
    }
    Ok(())
}

/// Counts one row, and writes it to the errors file when it is invalid.
fn count_row(
    row: ReadRow,
    report: &mut ValidationReport,
    errors: &mut ErrorsFile,
    customers: &mut Tally,
) -> Result<(), ReadError> {
    report.rows += 1;
    match &row.plan {
        Ok(plan) => {
            report.valid += 1;
            report.conversations += u64::from(plan.conversation.is_some());
            report.conversations_keyed_by_content +=
                u64::from(plan.conversation.is_some() && row.origin.key.starts_with(CONTENT_KEY));
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
    Ok(())
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
    if report.lines_grouped > 0 {
        writeln!(
            out,
            "lines grouped:      {} (later lines of a conversation: items of its thread)",
            report.lines_grouped
        )?;
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
