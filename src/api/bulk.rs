//! Kustomer's bulk jobs: one request submits up to 100 customers or conversations, the job
//! runs on Kustomer's side, and its outcome is polled (`GET /v1/bulk/{id}`) then read item
//! by item (`GET /v1/bulk/{id}/batches`, results by `_clientRef`). Every call is one request
//! through the same rate gate as the single endpoints.
//!
//! Like the single endpoints, both shapes are accepted: 200 or 201, bare or in `data`.
//! An item's error becomes the [`ApiError`] its single create would have given (409 a
//! duplicate, any other status a refusal), so callers treat both paths alike.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::Value;

use super::client::{KustomerClient, Turn, classify_failure, record_id};
use super::error::{ApiError, server_message};

/// Most bodies one bulk request takes.
pub const MAX_ITEMS: usize = 100;

/// What a bulk job creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkKind {
    Customers,
    Conversations,
}

impl BulkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkKind::Customers => "customers",
            BulkKind::Conversations => "conversations",
        }
    }
}

/// Where a job stands on Kustomer's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Not finished: `queued`, `running`, or a status we do not know.
    Waiting(String),
    /// Finished (not necessarily succeeded): its batches hold the outcome of every item.
    Complete,
    /// Ended without completing (`failed`, `cancelled`): its batches hold what it did.
    Ended(String),
}

/// What became of one item of a finished job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    Created(String),
    /// The record existed and the job updated it.
    Updated(String),
    /// Refused: [`ApiError::Duplicate`] or [`ApiError::Rejected`], as the single create.
    Failed(ApiError),
}

/// A job the API took: its id, and where it stood when the submit was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmittedJob {
    pub id: String,
    /// `queued` as the docs show it; a job that says `complete` already needs no poll.
    pub status: JobStatus,
}

impl KustomerClient {
    /// `POST /v1/{kind}/bulk` with up to [`MAX_ITEMS`] bodies, sent in `turn` (see
    /// [`KustomerClient::turn`]).
    pub async fn submit_bulk(
        &self,
        kind: BulkKind,
        items: &[Value],
        turn: Turn,
    ) -> Result<SubmittedJob, ApiError> {
        let body = serde_json::to_vec(items).map_err(|error| ApiError::Rejected {
            status: 0,
            message: format!("cannot encode the body: {error}"),
        })?;
        let url = self.url(&format!("v1/{}/bulk", kind.as_str()));
        let (status, answer) = self
            .send_in(Some(turn), Method::POST, url, Some(body))
            .await?;
        let code = status.as_u16();
        if !(200..=202).contains(&code) {
            return Err(classify_failure(code, &answer));
        }
        let id = record_id(&answer).ok_or_else(|| ApiError::Transient {
            reason: format!("bulk submit answered {status} with no job id"),
            maybe_applied: true,
        })?;
        // Counted once taken: a submit sent again after a 503 is one job, not two.
        self.stats().bulk_jobs.fetch_add(1, Ordering::Relaxed);
        // An answer without a status is the docs' answer, which says queued.
        let status = job_status(&answer).unwrap_or_else(|| JobStatus::Waiting("queued".into()));
        Ok(SubmittedJob { id, status })
    }

    /// `GET /v1/bulk/{id}`.
    pub async fn bulk_status(&self, job_id: &str) -> Result<JobStatus, ApiError> {
        let (status, answer) = self
            .send(Method::GET, self.job_url(job_id, ""), None)
            .await?;
        if !matches!(status.as_u16(), 200 | 201) {
            return Err(classify_failure(status.as_u16(), &answer));
        }
        job_status(&answer).ok_or_else(|| ApiError::Transient {
            reason: format!("bulk job poll answered {status} with no status"),
            maybe_applied: false,
        })
    }

    /// `GET /v1/bulk/{id}/batches`: every item's outcome, by `_clientRef`. An item with no
    /// result there is absent from the map: its outcome is unknown.
    pub async fn bulk_results(
        &self,
        job_id: &str,
    ) -> Result<HashMap<String, ItemOutcome>, ApiError> {
        let (status, answer) = self
            .send(Method::GET, self.job_url(job_id, "/batches"), None)
            .await?;
        if !matches!(status.as_u16(), 200 | 201) {
            return Err(classify_failure(status.as_u16(), &answer));
        }
        item_outcomes(&answer).ok_or_else(|| ApiError::Transient {
            reason: format!("bulk job batches answered {status} with no batches"),
            maybe_applied: false,
        })
    }

    fn job_url(&self, job_id: &str, rest: &str) -> url::Url {
        let encoded =
            percent_encoding::utf8_percent_encode(job_id, percent_encoding::NON_ALPHANUMERIC);
        self.url(&format!("v1/bulk/{encoded}{rest}"))
    }
}

/// The `attributes` of a record, bare or in `data`.
fn attributes(record: &Value) -> Option<&Value> {
    let record = record
        .get("data")
        .filter(|d| d.is_object())
        .unwrap_or(record);
    record.get("attributes").or(Some(record))
}

fn job_status(answer: &[u8]) -> Option<JobStatus> {
    let value: Value = serde_json::from_slice(answer).ok()?;
    let status = attributes(&value)?.get("status")?.as_str()?;
    let known = status.to_ascii_lowercase();
    Some(match known.as_str() {
        "complete" | "completed" => JobStatus::Complete,
        "failed" | "error" | "cancelled" | "canceled" => JobStatus::Ended(known),
        _ => JobStatus::Waiting(status.to_string()),
    })
}

/// Reads `{"data": [batch, ...]}` (or a bare list of batches) into outcomes by `_clientRef`.
fn item_outcomes(answer: &[u8]) -> Option<HashMap<String, ItemOutcome>> {
    let value: Value = serde_json::from_slice(answer).ok()?;
    let batches = value.get("data").unwrap_or(&value).as_array()?;
    let mut outcomes = HashMap::new();
    for batch in batches {
        let results = attributes(batch)
            .and_then(|a| a.get("results"))
            .and_then(|r| r.as_array());
        for result in results.into_iter().flatten() {
            let Some(client_ref) = result.get("_clientRef").and_then(|r| r.as_str()) else {
                continue;
            };
            let object_id = result
                .get("objectId")
                .and_then(|id| id.as_str())
                .filter(|id| !id.is_empty());
            let outcome = match (result.get("status").and_then(|s| s.as_str()), object_id) {
                (Some("created"), Some(id)) => ItemOutcome::Created(id.to_string()),
                (Some("updated"), Some(id)) => ItemOutcome::Updated(id.to_string()),
                (Some("error"), _) => ItemOutcome::Failed(item_error(result.get("error"))),
                // Anything else says nothing we can act on: the outcome stays unknown.
                _ => continue,
            };
            outcomes.insert(client_ref.to_string(), outcome);
        }
    }
    Some(outcomes)
}

/// An item's error object as the error its single create would have answered.
fn item_error(error: Option<&Value>) -> ApiError {
    let error = error.cloned().unwrap_or(Value::Null);
    let status = match error.get("status") {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let duplicate = error.get("code").and_then(|c| c.as_str()) == Some("duplicate");
    let message = server_message(
        serde_json::to_vec(&serde_json::json!({ "errors": [error] }))
            .unwrap_or_default()
            .as_slice(),
    );
    match status {
        _ if duplicate => ApiError::Duplicate { message },
        Some(409) => ApiError::Duplicate { message },
        // Trouble on the way, not a verdict on the item: it may or may not have been made.
        Some(status @ (408 | 429 | 500..=599)) => ApiError::Transient {
            reason: format!("item failed ({status}): {message}"),
            maybe_applied: true,
        },
        status => ApiError::Rejected {
            status: status.unwrap_or(422),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_status_is_read_wrapped_or_bare() {
        assert_eq!(
            job_status(br#"{"data":{"type":"bulk","id":"b1","attributes":{"status":"queued"}}}"#),
            Some(JobStatus::Waiting("queued".into()))
        );
        assert_eq!(
            job_status(br#"{"type":"bulk","id":"b1","attributes":{"status":"complete"}}"#),
            Some(JobStatus::Complete)
        );
        assert_eq!(
            job_status(br#"{"data":{"attributes":{"status":"Failed"}}}"#),
            Some(JobStatus::Ended("failed".into()))
        );
        assert_eq!(job_status(b"<html>"), None);
    }

    #[test]
    fn item_outcomes_are_read_by_client_ref_across_batches() {
        let answer = br#"{"data":[
            {"type":"batch","id":"b-1","attributes":{"results":[
                {"_clientRef":"0","objectId":"c1","status":"created"},
                {"_clientRef":"1","status":"error","error":{"status":"409","code":"duplicate","detail":"email taken"}}
            ]}},
            {"type":"batch","id":"b-2","attributes":{"results":[
                {"_clientRef":"2","status":"error","error":{"status":422,"detail":"bad","source":{"pointer":"/name"}}},
                {"_clientRef":"3","objectId":"c4","status":"updated"},
                {"_clientRef":"4","status":"running"},
                {"_clientRef":"5","status":"error","error":{"status":"503","detail":"busy"}}
            ]}}
        ]}"#;
        let outcomes = item_outcomes(answer).unwrap();
        assert_eq!(outcomes["0"], ItemOutcome::Created("c1".into()));
        assert!(matches!(
            &outcomes["1"],
            ItemOutcome::Failed(ApiError::Duplicate { message }) if message.contains("email taken")
        ));
        assert!(matches!(
            &outcomes["2"],
            ItemOutcome::Failed(ApiError::Rejected { status: 422, message }) if message == "/name: bad"
        ));
        assert_eq!(outcomes["3"], ItemOutcome::Updated("c4".into()));
        assert!(
            !outcomes.contains_key("4"),
            "an unknown status is no outcome"
        );
        assert!(
            matches!(&outcomes["5"], ItemOutcome::Failed(error) if error.maybe_applied()),
            "a 5xx item may have been made"
        );
        assert_eq!(item_outcomes(b"{}"), None);
    }
}
