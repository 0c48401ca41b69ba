//! The reader: a blocking thread that streams the rows of every input ([`RowReader`]) to
//! the planner over a bounded channel, so reading never runs far ahead of sending. Rows
//! travel in batches: one hand-over per row cost more in thread wake-ups than reading and
//! mapping the row (profiled on a resume that skips 100k done rows: a third of the time was
//! the scheduler).

use tokio::sync::mpsc;

use crate::input::OpenInput;
use crate::rows::{ReadError, ReadRow, ReadSettings, RowReader};

/// Rows handed to the planner at once.
pub(super) const READ_BATCH: usize = 64;

/// How reading ended.
#[derive(Debug, Default)]
pub(super) struct ReaderEnd {
    /// The error that ended reading early, if any.
    pub error: Option<ReadError>,
    /// Lines that were items of a conversation read earlier, not rows
    /// (`--rows-are-messages`).
    pub grouped_lines: u64,
}

/// Streams every input's rows on a blocking thread.
pub(super) fn start_reader(
    inputs: Vec<OpenInput>,
    settings: ReadSettings,
    rows: mpsc::Sender<Vec<ReadRow>>,
) -> tokio::task::JoinHandle<ReaderEnd> {
    tokio::task::spawn_blocking(move || {
        let mut reader = RowReader::new(inputs, settings);
        let error = read_all(&mut reader, &rows);
        ReaderEnd {
            error,
            grouped_lines: reader.grouped_lines(),
        }
    })
}

/// Hands every row over, the history's pre-pass first. Returns the error that ended
/// reading early, if any.
fn read_all(reader: &mut RowReader, rows: &mpsc::Sender<Vec<ReadRow>>) -> Option<ReadError> {
    if let Err(error) = reader.stage_history() {
        return Some(error);
    }
    let mut batch = Vec::with_capacity(READ_BATCH);
    let mut failure = None;
    // Not `for`: the loop publishes through the reader between rows.
    while let Some(row) = reader.next() {
        match row {
            Ok(row) => batch.push(row),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
        if batch.len() == READ_BATCH {
            // The planner reads these rows' threads back: they must be visible first.
            if let Err(error) = reader.publish() {
                failure = Some(error.into());
                break;
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(READ_BATCH));
            if rows.blocking_send(full).is_err() {
                return None; // the planner stopped taking rows
            }
        }
    }
    // The rows read before a failure are sent too: they are good rows.
    if let Err(error) = reader.publish() {
        failure.get_or_insert(error.into());
        batch.clear();
    }
    if !batch.is_empty() && rows.blocking_send(batch).is_err() {
        return None;
    }
    if failure.is_some() {
        return failure;
    }
    if !reader.limit_reached() {
        match reader.orphans() {
            Ok(orphans) if orphans.is_empty() => {}
            Ok(orphans) => {
                if rows.blocking_send(orphans).is_err() {
                    return None;
                }
            }
            Err(error) => return Some(error),
        }
    }
    if reader.limit_reached() {
        tracing::info!(
            "--limit reached: the rows after it were not read; a run without --limit \
             imports them (and skips those done)"
        );
    }
    None
}
