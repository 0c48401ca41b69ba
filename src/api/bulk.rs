//! Kustomer's bulk jobs: one request submits up to 100 customers or conversations (to create,
//! or, each item naming its record by `id`, to update), the job
//! runs on Kustomer's side, and its outcome is polled (`GET /v1/bulk/{id}`) then read item
//! by item (`GET /v1/bulk/{id}/batches`, results by `_clientRef`). Every call is one request
//! through the same rate gate as the single endpoints.
//!
//! Like the single endpoints, both shapes are accepted: 200 or 201, bare or in `data`.
//! An item's error may be a text (Kustomer's reference shows `"error": "duplicate
//! detected"`), an object or a list. One that states a status becomes the [`ApiError`] its
//! single create would have given (409 a duplicate, any other status a refusal), so
//! callers treat both paths alike; one that states none is [`ItemOutcome::Unexplained`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::Value;

use super::client::{Call, KustomerClient, Turn, classify_failure, record_id};
use super::error::{ApiError, error_says_duplicate, error_status, error_words, trimmed};

/// Most bodies one bulk request takes.
pub const MAX_ITEMS: usize = 100;

/// What a bulk job creates: a word the checkpoint stores too, so it is defined with the
/// checkpoint's vocabulary.
pub use crate::vocabulary::BulkKind;

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
    /// Refused with a status (or a `duplicate` code): [`ApiError::Duplicate`],
    /// [`ApiError::Rejected`] or, for trouble on the way, [`ApiError::Transient`], as the
    /// single create would have answered.
    Failed(ApiError),
    /// Refused in words only, with no status (`"duplicate detected"`): the item was not
    /// made, and whether the record exists or the body is bad is not said. The single
    /// endpoint's answer, which has a status, is what settles it.
    Unexplained(String),
}

/// A job the API took: its id, and where it stood when the submit was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmittedJob {
    pub id: String,
    /// `queued` as the docs show it; a job that says `complete` already needs no poll.
    pub status: JobStatus,
}

impl KustomerClient {
    /// `POST /v1/{kind}/bulk` (an update job: `PUT ...?replace=false`, see [`endpoint`])
    /// with up to [`MAX_ITEMS`] bodies, sent in `turn` (see [`KustomerClient::turn`]).
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
        let (method, path) = endpoint(kind);
        let (status, answer) = self
            .send_in(Some(turn), method, self.url(path), Some(body))
            .await?;
        let code = status.as_u16();
        if !(200..=202).contains(&code) {
            return Err(classify_failure(Call::Write, code, &answer));
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

    /// `DELETE /v1/customers/bulk?ids=a,b,c` with 1 to [`MAX_ITEMS`] ids: a bulk job (the
    /// docs' "Deletes"), polled as a create's is. Its results name no id that a caller can
    /// rely on: what became of each is learnt by reading it back.
    pub async fn submit_customer_deletes(&self, ids: &[&str]) -> Result<SubmittedJob, ApiError> {
        let encoded: Vec<String> = ids
            .iter()
            .map(|id| {
                percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect();
        let url = self.url(&format!("v1/customers/bulk?ids={}", encoded.join(",")));
        let (status, answer) = self.send(Method::DELETE, url, None).await?;
        let code = status.as_u16();
        if !(200..=202).contains(&code) {
            return Err(classify_failure(Call::Write, code, &answer));
        }
        let id = record_id(&answer).ok_or_else(|| ApiError::Transient {
            reason: format!("bulk delete answered {status} with no job id"),
            maybe_applied: true,
        })?;
        self.stats().bulk_jobs.fetch_add(1, Ordering::Relaxed);
        let status = job_status(&answer).unwrap_or_else(|| JobStatus::Waiting("queued".into()));
        Ok(SubmittedJob { id, status })
    }

    /// `GET /v1/bulk/{id}`.
    pub async fn bulk_status(&self, job_id: &str) -> Result<JobStatus, ApiError> {
        let (status, answer) = self
            .send(Method::GET, self.job_url(job_id, ""), None)
            .await?;
        if !matches!(status.as_u16(), 200 | 201) {
            return Err(classify_failure(Call::Job, status.as_u16(), &answer));
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
            return Err(classify_failure(Call::Job, status.as_u16(), &answer));
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

/// Where a job of `kind` is submitted. Updates are `PUT`s with `replace=false`: the docs
/// give a single `PUT ?replace=false` a PATCH's meaning (only the fields sent change) and
/// `replace=true` the whole record's, and say nothing of a bulk `PUT` without it; the
/// sandbox reads that as a replace, the destructive reading, so the merge is asked for.
fn endpoint(kind: BulkKind) -> (Method, &'static str) {
    match kind {
        BulkKind::Customers => (Method::POST, "v1/customers/bulk"),
        BulkKind::Conversations => (Method::POST, "v1/conversations/bulk"),
        BulkKind::Messages => (Method::POST, "v1/messages/bulk"),
        BulkKind::Notes => (Method::POST, "v1/notes/bulk"),
        BulkKind::CustomerUpdates => (Method::PUT, "v1/customers/bulk?replace=false"),
        BulkKind::ConversationUpdates => (Method::PUT, "v1/conversations/bulk?replace=false"),
        BulkKind::Companies => (Method::POST, "v1/companies/bulk"),
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
                (Some("error"), _) => item_failure(result.get("error").unwrap_or(&Value::Null)),
                // Anything else says nothing we can act on: the outcome stays unknown.
                _ => continue,
            };
            outcomes.insert(client_ref.to_string(), outcome);
        }
    }
    Some(outcomes)
}

/// What an item's `error` (a text, an object or a list) says: the one place that decides
/// how a bulk item's error is read, statuses stated or not.
fn item_failure(error: &Value) -> ItemOutcome {
    let message = trimmed(&error_words(error).unwrap_or_default());
    let status = error_status(error);
    if status == Some(409) || error_says_duplicate(error) {
        return ItemOutcome::Failed(ApiError::Duplicate { message });
    }
    ItemOutcome::Failed(match status {
        None => return ItemOutcome::Unexplained(message),
        // Trouble on the way, not a verdict on the item: it may or may not have been made.
        Some(status @ (408 | 429 | 500..=599)) => ApiError::Transient {
            reason: format!("item failed ({status}): {message}"),
            maybe_applied: true,
        },
        Some(status) => ApiError::Rejected { status, message },
    })
}

/// The outcomes of a documented batches answer (`tests/fixtures/kustomer-docs`), for the
/// tests of what reads them.
#[cfg(test)]
pub(crate) fn documented_outcomes(name: &str) -> HashMap<String, ItemOutcome> {
    item_outcomes(&crate::api::documented(name)).expect("a documented batches answer")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::documented;

    #[test]
    fn the_documented_bulk_answers_are_read() {
        assert_eq!(
            record_id(&documented("bulk-submitted.json")).as_deref(),
            Some("6a1f0c2e9b3d4e5f60718293")
        );
        assert_eq!(
            job_status(&documented("bulk-submitted.json")),
            Some(JobStatus::Waiting("queued".into()))
        );
        assert_eq!(
            job_status(&documented("bulk-complete.json")),
            Some(JobStatus::Complete)
        );
        let outcomes = item_outcomes(&documented("bulk-batches.json")).unwrap();
        assert_eq!(
            outcomes["crm-001"],
            ItemOutcome::Created("6a1f0c2e9b3d4e5f607182a1".into())
        );
        assert_eq!(
            outcomes["crm-003"],
            ItemOutcome::Updated("6a1f0c2e9b3d4e5f607182a3".into())
        );
        // The reference's failed item: an error in words, with no status. Read as a
        // refusal (422, "no message") it failed every row of a customer that existed.
        assert_eq!(
            outcomes["crm-002"],
            ItemOutcome::Unexplained("duplicate detected".into())
        );
    }

    #[test]
    fn an_items_error_is_read_as_a_text_an_object_or_a_list() {
        let read = |error: &str| item_failure(&serde_json::from_str(error).unwrap());
        assert_eq!(
            read(r#""duplicate detected""#),
            ItemOutcome::Unexplained("duplicate detected".into())
        );
        assert_eq!(read("null"), ItemOutcome::Unexplained("no message".into()));
        assert!(matches!(
            read(r#"{"status": 409, "detail": "email taken"}"#),
            ItemOutcome::Failed(ApiError::Duplicate { message }) if message == "email taken"
        ));
        assert!(matches!(
            read(r#"{"code": "duplicate", "title": "Duplicate"}"#),
            ItemOutcome::Failed(ApiError::Duplicate { .. })
        ));
        assert!(matches!(
            read(r#"[{"status": "422", "detail": "bad", "source": {"pointer": "/name"}}, "also this"]"#),
            ItemOutcome::Failed(ApiError::Rejected { status: 422, message })
                if message == "/name: bad; also this"
        ));
        assert!(matches!(
            read(r#"["one", {"message": "two"}]"#),
            ItemOutcome::Unexplained(message) if message == "one; two"
        ));
        assert!(matches!(
            read(r#"{"status": "503", "message": "busy"}"#),
            ItemOutcome::Failed(error) if error.maybe_applied()
        ));
        // An object that states no status says no more than a text.
        assert!(matches!(
            read(r#"{"code": "invalid", "detail": "bad"}"#),
            ItemOutcome::Unexplained(message) if message == "bad"
        ));
    }

    #[test]
    fn updates_are_put_with_replace_false_and_creates_posted() {
        assert_eq!(
            endpoint(BulkKind::CustomerUpdates),
            (Method::PUT, "v1/customers/bulk?replace=false")
        );
        assert_eq!(
            endpoint(BulkKind::ConversationUpdates),
            (Method::PUT, "v1/conversations/bulk?replace=false")
        );
        assert_eq!(
            endpoint(BulkKind::Customers),
            (Method::POST, "v1/customers/bulk")
        );
        // The query survives the join onto the base URL.
        let base = url::Url::parse("https://acme.api.kustomerapp.com/").unwrap();
        let joined = base.join(endpoint(BulkKind::CustomerUpdates).1).unwrap();
        assert_eq!(joined.path(), "/v1/customers/bulk");
        assert_eq!(joined.query(), Some("replace=false"));
    }

    #[test]
    fn batches_are_read_bare_or_in_data() {
        let bare = br#"[{"successCount": 1, "failureCount": 0, "objectIds": ["c1"],
            "errors": [], "results": [{"_clientRef": "a", "objectId": "c1", "status": "created"}]}]"#;
        assert_eq!(
            item_outcomes(bare).unwrap()["a"],
            ItemOutcome::Created("c1".into())
        );
    }

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
