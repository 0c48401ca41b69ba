//! The reader: a blocking thread that streams the rows of every input ([`RowReader`]) to
//! the planner over a bounded channel, so reading never runs far ahead of sending.

use tokio::sync::mpsc;

use crate::input::InputSource;
use crate::rows::{ReadError, ReadRow, ReadSettings, RowReader};

/// Streams every input's rows on a blocking thread. Returns the error that ended reading
/// early, if any.
pub(super) fn start_reader(
    inputs: Vec<InputSource>,
    settings: ReadSettings,
    rows: mpsc::Sender<ReadRow>,
) -> tokio::task::JoinHandle<Option<ReadError>> {
    tokio::task::spawn_blocking(move || {
        let mut reader = match RowReader::new(inputs, settings) {
            Ok(reader) => reader,
            Err(error) => return Some(error),
        };
        for row in reader.by_ref() {
            match row {
                Ok(row) => {
                    if rows.blocking_send(row).is_err() {
                        return None; // the planner stopped taking rows
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
    })
}
