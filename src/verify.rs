//! `verify`: the records a checkpoint says an import made or linked, read back from the API
//! and compared with what was sent. For each done row: its conversation exists and belongs
//! to the row's customer, the customer exists, each field the fingerprints recorded is held
//! as it was sent (created and reconciled customers; a linked one was not made from the
//! row, so only its existence is checked), and its notes are as many as the checkpoint
//! made (the API lists a conversation's notes; it has no listing of messages, so those are
//! not counted). A customer is read once, however many rows it has, and compared with the
//! first checked row of it that holds its fingerprint. Every read goes through the client,
//! so through the one rate gate.

use std::collections::{BTreeMap, HashMap};

use futures_util::StreamExt;
use serde::Serialize;

use crate::api::read::ReadRecord;
use crate::api::{ApiError, Backoff, KustomerClient};
use crate::checkpoint::VerifyRow;
use crate::fingerprint::Fingerprint;

/// Reads in flight at once.
const IN_FLIGHT: usize = 8;
/// Transient failures one read may meet before verify stops.
const MAX_RETRIES: u32 = 5;

/// Which done rows are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    All,
    /// This many rows, spread evenly over the done rows in file and line order.
    Sample(usize),
}

/// The rows `selection` picks from `rows` (in file and line order): all, or `n` of them
/// spread evenly (row `i * len / n`), the same rows every time.
pub fn select(rows: Vec<VerifyRow>, selection: Selection) -> Vec<VerifyRow> {
    match selection {
        Selection::All => rows,
        Selection::Sample(n) if n >= rows.len() => rows,
        Selection::Sample(n) => {
            let len = rows.len();
            let picked: std::collections::BTreeSet<usize> = (0..n).map(|i| i * len / n).collect();
            rows.into_iter()
                .enumerate()
                .filter(|(index, _)| picked.contains(index))
                .map(|(_, row)| row)
                .collect()
        }
    }
}

/// One thing found not as the checkpoint says it was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub file: String,
    pub line: i64,
    pub row_key: String,
    /// `customer` or `conversation`.
    pub record: &'static str,
    pub id: String,
    /// `missing` (the API answers 404), `other_customer` (the conversation belongs to
    /// another customer), `field` (a field not as sent), `notes` (another count of notes),
    /// `unreadable` (the API refused the read).
    pub problem: &'static str,
    /// The field not as sent, for `field`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What the checkpoint says, and what the API holds, where a value says it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
}

/// What verify found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Findings {
    /// Done rows in the checkpoint.
    pub done_rows: u64,
    /// Rows checked (all done rows, or the sample).
    pub checked: u64,
    /// Rows whose records are all as made.
    pub matching: u64,
    /// Rows with a record not as made (a field, its customer, its notes), none missing.
    pub mismatched: u64,
    /// Rows with a record the API does not hold.
    pub missing: u64,
    /// Rows checked for existence and ownership only: made by a version that recorded no
    /// fingerprint.
    pub existence_only: u64,
    /// Customers read.
    pub customers_checked: u64,
    /// Every mismatch, in file and line order.
    pub mismatches: Vec<Mismatch>,
}

impl Findings {
    pub fn all_match(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// A read that stopped verify: the key was refused, or the API could not be read within the
/// retries.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Stopped(pub ApiError);

/// What each customer was sent as, by the rows of it: rows of one customer may see it
/// differently (one lists a second email), and the customer was made from one of them, so
/// a field of it is as sent when it is as one of its rows sent it.
pub fn customer_views(rows: &[VerifyRow]) -> HashMap<String, Vec<Fingerprint>> {
    let mut views: HashMap<String, Vec<Fingerprint>> = HashMap::new();
    for row in rows {
        let (Some(id), Some(fingerprint)) = (
            &row.customer_id,
            row.customer_fingerprint
                .as_deref()
                .and_then(Fingerprint::parse),
        ) else {
            continue;
        };
        let seen = views.entry(id.clone()).or_default();
        if !seen.contains(&fingerprint) {
            seen.push(fingerprint);
        }
    }
    views
}

/// The fields of a customer read back that none of its rows' views holds as it is.
fn customer_fields_differing(
    views: &[Fingerprint],
    read: &serde_json::Map<String, serde_json::Value>,
) -> Vec<String> {
    let fields: std::collections::BTreeSet<&str> = views.iter().flat_map(|v| v.fields()).collect();
    fields
        .into_iter()
        .filter(|field| !views.iter().any(|view| view.holds(field, read.get(*field))))
        .map(str::to_owned)
        .collect()
}

/// Reads back and compares the records of `rows` (already selected); `views` are the
/// customers' views of every done row ([`customer_views`]).
pub async fn verify(
    client: &KustomerClient,
    done_rows: u64,
    rows: &[VerifyRow],
    views: &HashMap<String, Vec<Fingerprint>>,
) -> Result<Findings, Stopped> {
    let backoff = Backoff::default();
    // Customers first, each once.
    let mut customer_ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.customer_id.as_deref())
        .collect();
    customer_ids.sort_unstable();
    customer_ids.dedup();
    let customers: HashMap<&str, Outcome<ReadRecord>> =
        futures_util::stream::iter(customer_ids.iter().copied())
            .map(|id| async move {
                let read = with_retries(&backoff, || client.read_customer(id)).await;
                read.map(|read| (id, read))
            })
            .buffered(IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
    type Notes = Option<Result<Option<u64>, String>>;
    let conversations: Vec<Option<(Outcome<ReadRecord>, Notes)>> = futures_util::stream::iter(rows)
        .map(|row| async move {
            let Some(id) = row.conversation_id.as_deref() else {
                return Ok(None);
            };
            let read = with_retries(&backoff, || client.read_conversation(id)).await?;
            let notes = match &read {
                Outcome::Held(_) if row.notes > 0 => Some(
                    match with_retries(&backoff, || client.count_notes(id)).await? {
                        Outcome::Held(count) => Ok(Some(count)),
                        Outcome::Absent => Ok(None),
                        Outcome::Refused(words) => Err(words),
                    },
                ),
                _ => None,
            };
            Ok::<_, Stopped>(Some((read, notes)))
        })
        .buffered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;

    let mut findings = Findings {
        done_rows,
        checked: rows.len() as u64,
        customers_checked: customers.len() as u64,
        ..Findings::default()
    };
    // The customers already compared (or found missing), by id.
    let mut customers_seen: BTreeMap<&str, bool> = BTreeMap::new();
    for (row, conversation) in rows.iter().zip(conversations) {
        let mut problems = Vec::new();
        let mismatch = |record, id: &str, problem| Mismatch {
            file: row.file.clone(),
            line: row.line,
            row_key: row.row_key.clone(),
            record,
            id: id.to_string(),
            problem,
            field: None,
            expected: None,
            found: None,
        };
        let fingerprint = row.fingerprint.as_deref().and_then(Fingerprint::parse);
        let customer_fingerprint = row
            .customer_fingerprint
            .as_deref()
            .and_then(Fingerprint::parse);
        let recorded = match &row.conversation_id {
            Some(_) => fingerprint.is_some(),
            None => customer_fingerprint.is_some(),
        };
        if !recorded {
            findings.existence_only += 1;
        }
        let conversation_id = row.conversation_id.as_deref().unwrap_or_default();
        let (conversation, notes) = match conversation {
            Some((read, notes)) => (Some(read), notes),
            None => (None, None),
        };
        match &conversation {
            None => {}
            Some(Outcome::Absent) => {
                problems.push(mismatch("conversation", conversation_id, "missing"))
            }
            Some(Outcome::Refused(words)) => problems.push(Mismatch {
                found: Some(words.clone()),
                ..mismatch("conversation", conversation_id, "unreadable")
            }),
            Some(Outcome::Held(record)) => {
                if let (Some(held), Some(made)) = (&record.customer, &row.customer_id)
                    && held != made
                {
                    problems.push(Mismatch {
                        expected: Some(made.clone()),
                        found: Some(held.clone()),
                        ..mismatch("conversation", conversation_id, "other_customer")
                    });
                }
                for field in fingerprint
                    .as_ref()
                    .map(|f| f.fields_differing(&record.fields))
                    .unwrap_or_default()
                {
                    problems.push(Mismatch {
                        found: Some(shown(record.fields.get(&field))),
                        field: Some(field),
                        ..mismatch("conversation", conversation_id, "field")
                    });
                }
                match notes {
                    Some(Ok(Some(count))) if count as i64 == row.notes => {}
                    Some(Ok(count)) => problems.push(Mismatch {
                        expected: Some(row.notes.to_string()),
                        found: Some(count.unwrap_or(0).to_string()),
                        ..mismatch("conversation", conversation_id, "notes")
                    }),
                    Some(Err(words)) => problems.push(Mismatch {
                        field: Some("notes".into()),
                        found: Some(words),
                        ..mismatch("conversation", conversation_id, "unreadable")
                    }),
                    None => {}
                }
            }
        }
        if let Some(customer_id) = row.customer_id.as_deref() {
            let compared = customers_seen.get(customer_id).copied();
            // Compared with this row: the first checked row of it (the first with a
            // fingerprint, for a customer this import made).
            let made_here = matches!(
                row.customer_origin.as_deref(),
                Some("created" | "reconciled")
            );
            let customer_views = views
                .get(customer_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let compare_fields = made_here && !customer_views.is_empty();
            if compared != Some(true) {
                match customers.get(customer_id) {
                    Some(Outcome::Absent) if compared.is_none() => {
                        problems.push(mismatch("customer", customer_id, "missing"));
                    }
                    Some(Outcome::Refused(words)) if compared.is_none() => {
                        problems.push(Mismatch {
                            found: Some(words.clone()),
                            ..mismatch("customer", customer_id, "unreadable")
                        })
                    }
                    Some(Outcome::Held(record)) if compare_fields => {
                        for field in customer_fields_differing(customer_views, &record.fields) {
                            problems.push(Mismatch {
                                found: Some(shown(record.fields.get(&field))),
                                field: Some(field),
                                ..mismatch("customer", customer_id, "field")
                            });
                        }
                    }
                    _ => {}
                }
                let settled =
                    compare_fields || !matches!(customers.get(customer_id), Some(Outcome::Held(_)));
                customers_seen.insert(customer_id, settled);
            }
        }
        if problems.is_empty() {
            findings.matching += 1;
        } else if problems.iter().any(|p| p.problem == "missing") {
            findings.missing += 1;
        } else {
            findings.mismatched += 1;
        }
        findings.mismatches.extend(problems);
    }
    Ok(findings)
}

/// A value as a report shows it: its JSON, cut at 80 characters; `absent` for none.
fn shown(value: Option<&serde_json::Value>) -> String {
    match value {
        None => "absent".to_string(),
        Some(value) => {
            let text = value.to_string();
            match text.char_indices().nth(80) {
                Some((at, _)) => format!("{}...", &text[..at]),
                None => text,
            }
        }
    }
}

/// One read, sent again after transient failures (with the import's backoff); a refusal
/// other than 404 is the row's finding, a refused key or a failure past the retries stops
/// verify.
pub(crate) async fn with_retries<T, F, Fut>(
    backoff: &Backoff,
    mut read: F,
) -> Result<Outcome<T>, Stopped>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, ApiError>>,
{
    let mut attempt = 0;
    loop {
        match read().await {
            Ok(Some(found)) => return Ok(Outcome::Held(found)),
            Ok(None) => return Ok(Outcome::Absent),
            Err(ApiError::Rejected { status, message }) => {
                return Ok(Outcome::Refused(format!("{status}: {message}")));
            }
            Err(error @ ApiError::Transient { .. }) if attempt < MAX_RETRIES => {
                tracing::debug!("a read failed ({error}); trying again");
                tokio::time::sleep(backoff.delay(attempt)).await;
                attempt += 1;
            }
            Err(error) => return Err(Stopped(error)),
        }
    }
}

/// A read: held (what it read), absent (404), or refused (the server's words).
pub(crate) enum Outcome<T> {
    Held(T),
    Absent,
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: i64) -> VerifyRow {
        VerifyRow {
            file: "a.csv".into(),
            line,
            row_key: format!("k{line}"),
            customer_key: None,
            customer_id: None,
            customer_origin: None,
            conversation_id: Some(format!("c{line}")),
            fingerprint: None,
            customer_fingerprint: None,
            notes: 0,
        }
    }

    #[test]
    fn verify_samples_rows_spread_evenly_and_the_same_each_time() {
        let rows: Vec<_> = (0..10).map(row).collect();
        let lines = |picked: Vec<VerifyRow>| picked.iter().map(|r| r.line).collect::<Vec<_>>();
        assert_eq!(lines(select(rows.clone(), Selection::Sample(3))), [0, 3, 6]);
        assert_eq!(
            lines(select(rows.clone(), Selection::Sample(5))),
            [0, 2, 4, 6, 8]
        );
        assert_eq!(select(rows.clone(), Selection::Sample(20)).len(), 10);
        assert_eq!(select(rows.clone(), Selection::All).len(), 10);
        assert_eq!(
            select(rows.clone(), Selection::Sample(4)),
            select(rows, Selection::Sample(4))
        );
    }
}
