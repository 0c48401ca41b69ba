//! What a run tells its user: the progress while it goes (a bar on a terminal, plain log
//! lines elsewhere), the errors file with every failed row, and the summary at the end.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use crate::api::RequestStats;

/// The counts a run ends with.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub rows_read: u64,
    /// Lines of rows that are messages (`--rows-are-messages`) that are not rows: each a
    /// later message or note of a conversation whose first line is its row.
    pub lines_grouped: u64,
    /// Rows this run took to done.
    pub rows_done: u64,
    /// Rows an earlier run had already done, and unchanged since: skipped without a request.
    pub rows_skipped_done: u64,
    /// Of `rows_skipped_done`, those compared with what was sent and found the same (all
    /// of them but with `--on-change skip`, which compares nothing).
    pub rows_unchanged: u64,
    /// Rows an earlier run had done whose records changed in the source since: updated.
    pub rows_updated: u64,
    pub customers_updated: u64,
    pub conversations_updated: u64,
    /// Rows this run failed (local validation or the API's refusal).
    pub rows_failed: u64,
    /// Rows an earlier run had failed: not sent again.
    pub rows_failed_earlier: u64,
    /// Rows read and not finished (a stop, or retries ran out): the next run takes them.
    pub rows_pending: u64,
    pub customers_created: u64,
    /// Customers that already existed in Kustomer (409) and were used.
    pub customers_linked: u64,
    /// Customers whose create answer was lost and a lookup found.
    pub customers_reconciled: u64,
    /// Rows that used a customer already known to the checkpoint, with no request.
    pub customers_reused: u64,
    pub conversations_created: u64,
    /// Conversations that were in Kustomer already (a 409 on their externalId, or a bulk
    /// job's `updated`) and were used.
    pub conversations_linked: u64,
    /// Conversations whose create answer was lost and a lookup found.
    pub conversations_reconciled: u64,
    /// The conversations' history: messages and notes this run created, found after a lost
    /// answer, or saw refused.
    pub messages_created: u64,
    pub notes_created: u64,
    pub history_reconciled: u64,
    pub history_failed: u64,
    /// Messages and notes made earlier, edited in the source since, and updated now.
    pub messages_updated: u64,
    pub notes_updated: u64,
    /// Customers' companies this run created, found in Kustomer already (linked), found
    /// after a lost answer (reconciled), or saw refused.
    pub companies_created: u64,
    pub companies_linked: u64,
    pub companies_reconciled: u64,
    pub companies_failed: u64,
    pub requests: u64,
    /// Bulk jobs submitted (each one request, carrying up to 100 records).
    pub bulk_jobs: u64,
    pub rate_limited: u64,
    /// `GET /v1/users?email=` lookups this run sent (an agent is asked once per checkpoint).
    pub user_lookups: u64,
    /// Agents with no Kustomer user (or no email), each with the messages and notes of this
    /// run that fell back to `--default-author` or to no author.
    pub agents_unresolved: std::collections::BTreeMap<String, u64>,
    /// Listings of the org's tags this run made (`GET /v1/tags`, every page each).
    pub tag_lists: u64,
    /// Tag names the org lacked that this run made (`--create-missing-tags`).
    pub tags_created: u64,
    /// Tag names the org lacks, each with the rows whose conversation this run sent
    /// without it (without `--create-missing-tags`).
    pub tags_missing: std::collections::BTreeMap<String, u64>,
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
}

fn seconds<S: serde::Serializer>(elapsed: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64((elapsed.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl Summary {
    /// Rows that are failed, now or from an earlier run.
    pub fn all_failed(&self) -> u64 {
        self.rows_failed + self.rows_failed_earlier
    }

    /// The summary as a person reads it.
    pub fn write_human(&self, out: &mut impl Write) -> io::Result<()> {
        let elapsed = self.elapsed.as_secs_f64();
        // A rate per minute over a shorter run would extrapolate the limiter's burst.
        let rate = if elapsed >= 60.0 {
            format!(" ({:.0}/min)", self.requests as f64 / elapsed * 60.0)
        } else {
            String::new()
        };
        writeln!(out, "rows read:              {}", self.rows_read)?;
        writeln!(out, "  done now:             {}", self.rows_done)?;
        writeln!(
            out,
            "  already done:         {} (skipped, no request)",
            self.rows_skipped_done
        )?;
        if self.rows_updated > 0 {
            writeln!(
                out,
                "  updated:              {} (done earlier, changed since: {} customers, {} \
                 conversations, {} messages, {} notes)",
                self.rows_updated,
                self.customers_updated,
                self.conversations_updated,
                self.messages_updated,
                self.notes_updated
            )?;
        }
        writeln!(out, "  failed:               {}", self.rows_failed)?;
        if self.rows_failed_earlier > 0 {
            writeln!(
                out,
                "  failed earlier:       {} (not sent again)",
                self.rows_failed_earlier
            )?;
        }
        writeln!(out, "  pending:              {}", self.rows_pending)?;
        if self.lines_grouped > 0 {
            writeln!(
                out,
                "lines grouped:          {} (later lines of a conversation: items of its \
                 thread, not rows)",
                self.lines_grouped
            )?;
        }
        writeln!(out, "customers created:      {}", self.customers_created)?;
        writeln!(
            out,
            "customers linked:       {} (already in Kustomer)",
            self.customers_linked
        )?;
        if self.customers_reconciled > 0 {
            writeln!(
                out,
                "customers reconciled:   {} (found after a lost answer)",
                self.customers_reconciled
            )?;
        }
        writeln!(
            out,
            "customers reused:       {} (rows whose customer was known)",
            self.customers_reused
        )?;
        writeln!(
            out,
            "conversations created:  {}",
            self.conversations_created
        )?;
        if self.conversations_linked > 0 {
            writeln!(
                out,
                "conversations linked:   {} (already in Kustomer)",
                self.conversations_linked
            )?;
        }
        if self.conversations_reconciled > 0 {
            writeln!(
                out,
                "conversations reconciled: {} (found after a lost answer)",
                self.conversations_reconciled
            )?;
        }
        self.write_companies(out)?;
        self.write_history(out)?;
        self.write_agents(out)?;
        self.write_tags(out)?;
        writeln!(out, "requests sent:          {}{rate}", self.requests)?;
        if self.bulk_jobs > 0 {
            writeln!(
                out,
                "  bulk jobs:            {} (up to 100 records each)",
                self.bulk_jobs
            )?;
        }
        writeln!(out, "429s seen:              {}", self.rate_limited)?;
        writeln!(out, "elapsed:                {elapsed:.1} s")?;
        Ok(())
    }
}

impl Summary {
    /// The agents lines, for a run that looked a user up or met an agent with none.
    fn write_agents(&self, out: &mut impl Write) -> io::Result<()> {
        if self.user_lookups > 0 {
            writeln!(
                out,
                "users looked up:        {} (one per new agent)",
                self.user_lookups
            )?;
        }
        if self.agents_unresolved.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "agents without a user:  {} (never created; their items fell back)",
            self.agents_unresolved.len()
        )?;
        for (agent, items) in &self.agents_unresolved {
            writeln!(out, "  {agent}: {items} items")?;
        }
        Ok(())
    }

    /// The tags lines, for a run that listed the org's tags, made any, or met a name the
    /// org lacks.
    fn write_tags(&self, out: &mut impl Write) -> io::Result<()> {
        if self.tag_lists + self.tags_created > 0 {
            writeln!(
                out,
                "tags:                   {} created, {} listings of the org's tags",
                self.tags_created, self.tag_lists
            )?;
        }
        if self.tags_missing.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "tags missing:           {} (the org lacks them; sent without them, see \
             --create-missing-tags)",
            self.tags_missing.len()
        )?;
        for (name, rows) in &self.tags_missing {
            writeln!(out, "  {name}: {rows} rows")?;
        }
        Ok(())
    }

    /// The companies line, for a run that settled any.
    fn write_companies(&self, out: &mut impl Write) -> io::Result<()> {
        let all = self.companies_created
            + self.companies_linked
            + self.companies_reconciled
            + self.companies_failed;
        if all == 0 {
            return Ok(());
        }
        writeln!(
            out,
            "companies:              {} created, {} linked, {} reconciled, {} refused",
            self.companies_created,
            self.companies_linked,
            self.companies_reconciled,
            self.companies_failed
        )
    }

    /// The history lines, for a run that wrote any.
    fn write_history(&self, out: &mut impl Write) -> io::Result<()> {
        let items = self.messages_created + self.notes_created + self.history_reconciled;
        if items + self.history_failed == 0 {
            return Ok(());
        }
        writeln!(out, "messages created:       {}", self.messages_created)?;
        writeln!(out, "notes created:          {}", self.notes_created)?;
        if self.history_reconciled > 0 {
            writeln!(
                out,
                "history reconciled:     {} (found after a lost answer)",
                self.history_reconciled
            )?;
        }
        writeln!(out, "history refused:        {}", self.history_failed)?;
        if items > 0 {
            writeln!(
                out,
                "requests per item:      {:.3} (messages and notes, all requests of the run)",
                self.requests as f64 / items as f64
            )?;
        }
        Ok(())
    }
}

/// The errors file: one CSV line per failed row with its file, line, field, reason and
/// the row as it was read (a JSON object of its source fields).
pub struct ErrorsFile {
    path: PathBuf,
    writer: io::BufWriter<File>,
    rows: u64,
    failure: Option<io::Error>,
}

impl ErrorsFile {
    /// Creates (truncates) the file, readable by its owner only (it holds the rows as
    /// read: customers' emails and phones), and writes its header.
    pub fn create(path: &Path) -> io::Result<ErrorsFile> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file: File = options.open(path)?;
        // The mode above applies to a new file only; an older one is narrowed here. Only a
        // regular file: `--errors /dev/stderr` must not change the mode of the terminal.
        #[cfg(unix)]
        if file.metadata()?.is_file() {
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
        let mut writer = io::BufWriter::new(file);
        write_csv_record(&mut writer, &["file", "line", "field", "reason", "row"])?;
        Ok(ErrorsFile {
            path: path.to_path_buf(),
            writer,
            rows: 0,
            failure: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Failed rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends one failed row. A write error is kept and reported by [`ErrorsFile::finish`].
    pub fn write(&mut self, file: &str, line: u64, field: Option<&str>, reason: &str, row: &Value) {
        self.rows += 1;
        let result = write_csv_record(
            &mut self.writer,
            &[
                file,
                &line.to_string(),
                field.unwrap_or(""),
                reason,
                &row.to_string(),
            ],
        );
        if let Err(error) = result
            && self.failure.is_none()
        {
            self.failure = Some(error);
        }
    }

    /// Flushes the file; says whether every line reached it.
    pub fn finish(mut self) -> io::Result<()> {
        if let Some(error) = self.failure.take() {
            return Err(error);
        }
        self.writer.flush()
    }
}

/// Writes one CSV record (RFC 4180: a field holding a quote, a comma or a line break is
/// quoted, its quotes doubled) in time linear in its length. The csv crate's writer scans
/// the rest of a field for a quote each time its 8 KiB buffer fills: a refused 100 MB row
/// took minutes to write.
fn write_csv_record(out: &mut impl Write, fields: &[&str]) -> io::Result<()> {
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            out.write_all(b",")?;
        }
        let bytes = field.as_bytes();
        let quoted = memchr::memchr3(b'"', b',', b'\n', bytes).is_some()
            || memchr::memchr(b'\r', bytes).is_some();
        if !quoted {
            out.write_all(bytes)?;
            continue;
        }
        out.write_all(b"\"")?;
        let mut rest = bytes;
        while let Some(at) = memchr::memchr(b'"', rest) {
            out.write_all(&rest[..=at])?;
            out.write_all(b"\"")?;
            rest = &rest[at + 1..];
        }
        out.write_all(rest)?;
        out.write_all(b"\"")?;
    }
    out.write_all(b"\n")
}

/// How one row settled, as the progress display counts it: the same four counts the
/// summary gives, so that the bar and the summary agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Taken to done by this run.
    Done,
    /// Done by an earlier run: skipped without a request.
    AlreadyDone,
    /// Failed in this run.
    Failed,
    /// Failed in an earlier run, not sent again.
    FailedEarlier,
}

/// Progress while the run goes: an indicatif bar on a terminal, a log line every few
/// seconds otherwise (cron, CI, a pipe), never escape codes where no one sees them. While
/// the bar is shown, log lines are written around it ([`LogWriter`]).
pub struct Progress {
    bar: Option<ProgressBar>,
    estimated_rows: Option<u64>,
    requests: Arc<RequestStats>,
    budget_per_second: f64,
    /// Rows settled, by [`Settled`] in its order.
    settled: [AtomicU64; 4],
    started: std::time::Instant,
    /// When the bar's message or the log line is next refreshed, in ms since `started`.
    next_refresh_ms: AtomicU64,
}

/// Seconds between progress log lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Time between refreshes of the bar's message.
const BAR_MESSAGE_EVERY: Duration = Duration::from_millis(100);
/// The request rate is shown once the run has gone this long: over a shorter time it would
/// show the rate limiter's initial burst, not the pace.
const RATE_AFTER: Duration = Duration::from_secs(5);

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Progress {
    /// A bar sized to the inputs' estimated rows when stderr is a terminal and `enabled`
    /// (rows counted without a total when it is unknown: stdin, gzip).
    ///
    /// `requests` counts what the run has sent; `budget_per_second` is the rate ceiling.
    /// Together with the rows left they give the ETA: rows left x requests per row so far,
    /// at the budget's pace (or the pace seen, when that is slower).
    pub fn new(
        enabled: bool,
        estimated_rows: Option<u64>,
        requests: Arc<RequestStats>,
        budget_per_second: f64,
    ) -> Progress {
        let bar = (enabled && io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(estimated_rows, ProgressDrawTarget::stderr());
            let template = if estimated_rows.is_some() {
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {pos} rows {msg}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            show_bar(Some(bar.clone()));
            bar
        });
        let bar_shown = bar.is_some();
        Progress {
            estimated_rows,
            requests,
            budget_per_second,
            settled: Default::default(),
            started: std::time::Instant::now(),
            next_refresh_ms: AtomicU64::new(if bar_shown { 0 } else { millis(LOG_EVERY) }),
            bar,
        }
    }

    /// Counts one settled row and refreshes the display when it is due: the bar's message
    /// every 100 ms, the log line every 10 s. (Formatting the message for every row was 18%
    /// of the instructions of a resume with the bar shown.)
    pub fn row_finished(&self, settled: Settled) {
        self.settled[settled as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        let elapsed = self.started.elapsed();
        let due = self.next_refresh_ms.load(Ordering::Relaxed);
        let every = if self.bar.is_some() {
            BAR_MESSAGE_EVERY
        } else {
            LOG_EVERY
        };
        if millis(elapsed) < due
            || self
                .next_refresh_ms
                .compare_exchange(
                    due,
                    millis(elapsed).saturating_add(millis(every)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let words = self.words(elapsed);
        match &self.bar {
            Some(bar) => bar.set_message(words),
            None => tracing::info!("progress: {words}"),
        }
    }

    /// The counts in the summary's words, the request rate against the budget, the ETA.
    fn words(&self, elapsed: Duration) -> String {
        let count = |settled: Settled| self.settled[settled as usize].load(Ordering::Relaxed);
        let (done, already) = (count(Settled::Done), count(Settled::AlreadyDone));
        let (failed, earlier) = (count(Settled::Failed), count(Settled::FailedEarlier));
        let mut words = format!("{done} done");
        if already > 0 {
            words.push_str(&format!(", {already} already done"));
        }
        words.push_str(&format!(", {failed} failed"));
        if earlier > 0 {
            words.push_str(&format!(", {earlier} failed earlier"));
        }
        let seconds = elapsed.as_secs_f64().max(0.001);
        if elapsed >= RATE_AFTER {
            let per_minute = self.requests.requests.load(Ordering::Relaxed) as f64 / seconds;
            words.push_str(&format!(
                ", {:.0} of {:.0} requests/min",
                per_minute * 60.0,
                self.budget_per_second * 60.0
            ));
        }
        if let Some(eta) = self.eta(done + already + failed + earlier, seconds) {
            words.push_str(&format!(", ETA {}", indicatif::HumanDuration(eta)));
        }
        words
    }

    /// Time left: the rows left, at the requests per row seen so far (2 before there is
    /// anything to go by), paced by the rate budget, or by the pace seen if slower.
    fn eta(&self, settled: u64, elapsed: f64) -> Option<Duration> {
        let left = self.estimated_rows?.saturating_sub(settled) as f64;
        let requests = self.requests.requests.load(Ordering::Relaxed) as f64;
        let per_row = if settled >= 10 {
            requests / settled as f64
        } else {
            2.0
        };
        let by_budget = left * per_row / self.budget_per_second.max(f64::MIN_POSITIVE);
        let by_pace = left / (settled as f64 / elapsed).max(f64::MIN_POSITIVE);
        let seconds = if settled >= 10 {
            by_budget.max(by_pace)
        } else {
            by_budget
        };
        seconds
            .is_finite()
            .then(|| Duration::from_secs_f64(seconds))
    }

    /// Removes the bar before the summary is printed; log lines go straight to stderr again.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            show_bar(None);
            bar.finish_and_clear();
        }
    }
}

/// The bar on the terminal now, if any: [`LogWriter`] writes log lines around it.
static SHOWN_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn show_bar(bar: Option<ProgressBar>) {
    *SHOWN_BAR.lock().unwrap_or_else(|p| p.into_inner()) = bar;
}

/// Where log lines go: stderr, with the progress bar (when one is shown) cleared while a
/// line is written and drawn again below it, so that no line lands on top of the bar and no
/// stale frame of it is left in the scrollback.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine
    }
}

/// One log line's writer (see [`LogWriter`]). The formatter hands it a whole line at once.
#[derive(Debug)]
pub struct LogLine;

impl Write for LogLine {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let bar = SHOWN_BAR.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| io::stderr().write_all(line))?,
            None => io::stderr().write_all(line)?,
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_words_count_as_the_summary_does() {
        let progress = Progress::new(false, Some(100), Arc::default(), 10.0);
        for settled in [
            Settled::Done,
            Settled::Done,
            Settled::AlreadyDone,
            Settled::Failed,
            Settled::FailedEarlier,
        ] {
            progress.row_finished(settled);
        }
        let words = progress.words(Duration::from_secs(1));
        assert!(
            words.starts_with("2 done, 1 already done, 1 failed, 1 failed earlier"),
            "{words}"
        );
        assert!(
            !words.contains("requests/min"),
            "no rate over the first seconds"
        );
        let words = progress.words(Duration::from_secs(60));
        assert!(words.contains("0 of 600 requests/min"), "{words}");
    }

    #[test]
    fn the_errors_file_reads_back_as_csv_whatever_its_fields_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("errors.csv");
        let mut errors = ErrorsFile::create(&path).unwrap();
        let row = serde_json::json!({"subject": "say \"hi\", twice\r\nthen go", "big": "x".repeat(100_000)});
        errors.write("a,b.csv", 7, Some("subject"), "plain", &row);
        errors.write("c.csv", 8, None, "\"quoted\"", &Value::Null);
        errors.finish().unwrap();
        let mut reader = csv::Reader::from_path(&path).unwrap();
        assert_eq!(
            reader.headers().unwrap(),
            vec!["file", "line", "field", "reason", "row"]
        );
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(&records[0][0], "a,b.csv");
        assert_eq!(&records[0][1], "7");
        assert_eq!(serde_json::from_str::<Value>(&records[0][4]).unwrap(), row);
        assert_eq!(
            records[1].iter().collect::<Vec<_>>(),
            ["c.csv", "8", "", "\"quoted\"", "null"]
        );
    }
}
