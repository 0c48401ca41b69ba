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

use std::sync::atomic::Ordering;

use kustomer_import::history::store::Pages;
use kustomer_import::report::ErrorsFile;
use kustomer_import::rowkey::{CONTENT_KEY, fingerprint};
use kustomer_import::rows::{ReadError, ReadRow, ReadSettings, RowReader, open_inputs};
use kustomer_import::tally::Tally;
use kustomer_import::users_check::{AgentTally, MapsBy, SeenAgent};

use super::Exit;
use crate::config::{ApiConfig, ValidateConfig};

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
    /// The distinct source agents the valid rows name (authors of messages and notes,
    /// conversations' assignees), after the mapping's `[users]` table: by email, then
    /// `[users]` ids, then those that can never map.
    agents: Vec<SeenAgent>,
    /// Whether `--check-users` looked every one up (each agent's `user` is then set; after
    /// a check that stopped, only those of the agents looked up before).
    users_checked: bool,
    /// With `--check-users`: the requests the lookups took.
    #[serde(skip_serializing_if = "Option::is_none")]
    user_lookups: Option<u64>,
    /// Why `--check-users` stopped before the end, if it did (exit 3 or 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    users_check_stopped: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct RowsPerCustomer {
    mean: f64,
    most: u32,
}

/// Rows whose threads' authors are read back from the thread store at once: what is
/// staged must be published first, and one commit a row would cost a write each.
const THREADS_AT_ONCE: usize = 64;

/// What validate counts as it reads, kept in constant memory: the report's counts, the
/// errors file, the customers on disk ([`Tally`]), and the distinct agents with the keys
/// of the few rows whose authors are still to be counted.
struct Counting {
    report: ValidationReport,
    errors: ErrorsFile,
    customers: Tally,
    agents: AgentTally,
    /// Valid rows with a thread, not yet read back (at most [`THREADS_AT_ONCE`]).
    threads: Vec<String>,
    pages: Option<Pages>,
}

pub fn run(config: ValidateConfig) -> anyhow::Result<Exit> {
    let errors = ErrorsFile::create(&config.errors)
        .with_context(|| format!("cannot create the errors file {}", config.errors.display()))?;
    let mut counting = Counting {
        report: ValidationReport {
            errors_file: config.errors.display().to_string(),
            ..ValidationReport::default()
        },
        errors,
        customers: Tally::default(),
        agents: AgentTally::new(config.mapping.users_table()),
        threads: Vec::with_capacity(THREADS_AT_ONCE),
        pages: None,
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
            if let Err(error) = counting.read_rows(&mut reader) {
                tracing::error!("{error}");
                counting.report.stopped = Some(error.to_string());
            }
            counting.report.lines_grouped = reader.grouped_lines();
        }
        Err(error) => {
            tracing::error!("{error}");
            counting.report.stopped = Some(error.to_string());
        }
    }
    let Counting {
        mut report,
        errors,
        mut customers,
        mut agents,
        ..
    } = counting;
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
    let mut check_exit = None;
    if let Some(api) = &config.check_users
        && report.stopped.is_none()
    {
        check_exit = check_users(api, &mut agents, &mut report)?;
    }
    report.agents = agents.into_agents();

    let mut out = std::io::stdout().lock();
    if config.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_human(&report, &mut out)?;
    }
    Ok(if report.stopped.is_some() {
        Exit::Usage
    } else if let Some(exit) = check_exit {
        exit
    } else if report.invalid > 0 {
        Exit::RowsFailed
    } else {
        Exit::Success
    })
}

/// `--check-users`: every distinct agent looked up once through the command's client (the
/// same target, key and rate gate as `verify`'s). The exit it forces when it stopped: 3 for
/// a refused key, 4 for lookups that could not finish.
fn check_users(
    api: &ApiConfig,
    agents: &mut AgentTally,
    report: &mut ValidationReport,
) -> anyhow::Result<Option<Exit>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let checked = runtime.block_on(async {
        let (_, client, stats) =
            super::made_records_client(&api.target, None, api.rpm, api.timeout).await?;
        let checked = agents.check_users(&client).await;
        anyhow::Ok((checked, stats.requests.load(Ordering::Relaxed)))
    });
    runtime.shutdown_background();
    let (checked, requests) = checked?;
    report.users_checked = checked.is_ok();
    report.user_lookups = Some(requests);
    Ok(match checked {
        Ok(()) => None,
        Err(stopped) => {
            let error =
                format!("--check-users stopped before every agent was looked up: {stopped}");
            tracing::error!("{error}");
            report.users_check_stopped = Some(error);
            Some(if stopped.is_unauthorized() {
                Exit::Unauthorized
            } else {
                Exit::Stopped
            })
        }
    })
}

impl Counting {
    /// Counts every row as import would read it: the history's pre-pass first (a messages
    /// file, or rows that are messages), then the rows, then the threads no row claimed.
    fn read_rows(&mut self, reader: &mut RowReader) -> Result<(), ReadError> {
        reader.stage_history()?;
        // Not `for`: the authors are read back through the reader between rows.
        while let Some(row) = reader.next() {
            self.count_row(row?)?;
            if self.threads.len() == THREADS_AT_ONCE {
                self.count_authors(reader)?;
            }
        }
        self.count_authors(reader)?;
        for orphan in reader.orphans()? {
            self.count_row(orphan)?;
        }
        let report = &self.report;
        if report.conversations_keyed_by_content > 0 {
            tracing::warn!(
                "{} conversations have no conversation id, and no --key-columns say what \
                 identifies them: each is keyed by its content, so for a recurring (nightly) \
                 run a row that changes in tomorrow's export is a new row and makes a second \
                 conversation. Map a conversation id, or give --key-columns (a mapping file's \
                 [conversation] key) with the columns that identify a conversation",
                report.conversations_keyed_by_content
            );
        }
        Ok(())
    }

    /// Counts one row, and writes it to the errors file when it is invalid.
    fn count_row(&mut self, row: ReadRow) -> Result<(), ReadError> {
        let report = &mut self.report;
        report.rows += 1;
        match &row.plan {
            Ok(plan) => {
                report.valid += 1;
                report.conversations += u64::from(plan.conversation.is_some());
                report.conversations_keyed_by_content += u64::from(
                    plan.conversation.is_some() && row.origin.key.starts_with(CONTENT_KEY),
                );
                report.messages += row.thread.messages;
                report.notes += row.thread.notes;
                self.customers.bump(fingerprint(&plan.customer_key))?;
                if let Some(conversation) = &plan.conversation {
                    self.agents.note_assignees(conversation);
                }
                if row.thread.items() > 0 {
                    self.threads.push(row.origin.key);
                }
            }
            Err(error) => {
                report.invalid += 1;
                *report
                    .invalid_by_reason
                    .entry(error.category())
                    .or_default() += 1;
                self.errors.write(
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

    /// Counts the authors of the valid rows' threads read since the last call, from the
    /// thread store (published first, so that its reader sees them).
    fn count_authors(&mut self, reader: &mut RowReader) -> Result<(), ReadError> {
        if self.threads.is_empty() {
            return Ok(());
        }
        reader.publish()?;
        let pages = match (&mut self.pages, reader.history()) {
            (Some(pages), _) => pages,
            (None, Some(store)) => self.pages.insert(store.pages()?),
            // A row's thread is staged in the reader's store: without one, none has any.
            (None, None) => {
                self.threads.clear();
                return Ok(());
            }
        };
        for key in self.threads.drain(..) {
            self.agents.note_authors(pages.authors(&key)?);
        }
        Ok(())
    }
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
    write_agents(report, out)?;
    if let Some(stopped) = &report.stopped {
        writeln!(out, "stopped early:      {stopped}")?;
    }
    Ok(())
}

/// The agents, grouped by what the import would make of them: before `--check-users`, by
/// how each maps; after it, by whether it has a user.
fn write_agents(report: &ValidationReport, out: &mut impl Write) -> std::io::Result<()> {
    if report.agents.is_empty() {
        return Ok(());
    }
    let checked = report.users_checked;
    let groups: [Group; 3] = if checked {
        [
            ("mapped to users", |a| matches!(a.user, Some(Some(_)))),
            (
                "without a user (never created: their items fall back to --default-author or \
                 to no author, their conversations go without them)",
                |a| a.maps_by == MapsBy::Email && a.user == Some(None),
            ),
            (NEVER_MAP, |a| a.maps_by == MapsBy::Nothing),
        ]
    } else {
        [
            (
                "looked up by email when imported (--check-users looks them up now)",
                |a| a.maps_by == MapsBy::Email,
            ),
            ("Kustomer user ids from [users] (used as they are)", |a| {
                a.maps_by == MapsBy::UserId
            }),
            (NEVER_MAP, |a| a.maps_by == MapsBy::Nothing),
        ]
    };
    let count =
        |in_group: fn(&SeenAgent) -> bool| report.agents.iter().filter(|a| in_group(a)).count();
    let mut line = format!("agents:             {}", report.agents.len());
    if checked {
        let without = report.agents.iter().filter(|a| a.without_user()).count();
        line.push_str(&format!(
            " ({} mapped to users, {without} without)",
            report.agents.len() - without
        ));
    }
    writeln!(out, "{line}")?;
    for (title, in_group) in groups {
        if count(in_group) == 0 {
            continue;
        }
        writeln!(out, "  {title}:")?;
        for agent in report.agents.iter().filter(|a| in_group(a)) {
            let mut line = format!(
                "    {:<32} {} items, {} conversations",
                agent.agent, agent.items, agent.conversations
            );
            if let Some(Some(user)) = &agent.user
                && agent.maps_by == MapsBy::Email
            {
                line.push_str(&format!(" -> user {user}"));
            }
            writeln!(out, "{line}")?;
        }
    }
    if let Some(requests) = report.user_lookups {
        writeln!(out, "users looked up:    {requests} requests")?;
    }
    if let Some(stopped) = &report.users_check_stopped {
        writeln!(out, "users not all checked: {stopped}")?;
    }
    Ok(())
}

/// A group of the agents' report: its title, and which agents are in it.
type Group = (&'static str, fn(&SeenAgent) -> bool);

/// The group of agents with no email and no `[users]` entry.
const NEVER_MAP: &str = "never map (no email, no [users] entry: their items fall back)";

fn is_zero(count: &u64) -> bool {
    *count == 0
}
