//! The sandbox's deletes, from the docs' "Deletes": `DELETE /v1/customers/{id}` and
//! `DELETE /v1/conversations/{id}` answer 204 with no body; a record not held answers 404,
//! and a read of a deleted record answers 404 from then on. A conversation's messages and
//! notes go with it (the docs have no delete for them). Whether deleting a customer deletes
//! its conversations is unknown: the sandbox does the strictest plausible thing and refuses
//! (409) to delete a customer who still holds conversations. A delete passes the same gate
//! as every request (rate limit, 5xx before the write) and meets the same after-write faults
//! as a create (a 500, a dropped or hanging connection once the record is gone), so a client
//! learns what a lost answer to a delete means.
//!
//! `DELETE /v1/customers/bulk?ids=a,b,c` runs as a bulk job (the docs' "Deletes"), queued
//! and polled as a bulk create is (`GET /v1/bulk/{id}`, then `/batches`). The docs say
//! nothing of what a delete job's results say, so the sandbox says the least a client could
//! be given: `ids` is 1 to 100 distinct ids (else 400, the request refused whole), each id
//! is deleted as its single delete would be when the job runs, and its batches count
//! successes and failures, list the ids deleted in `objectIds` and the failures in words
//! that name no id (`"not found"`, or a customer still holding conversations), with no
//! `results[]` (a query carries no `_clientRef`). A client learns what became of an id by
//! reading it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use serde_json::{Map, Value};

use super::http::{App, BulkKind, ConnCtx, Inner, after_write, error, queue_job, roll_after};
use super::store::DeleteError;

/// Most ids one bulk delete takes, as a bulk create's items.
const BULK_MAX_IDS: usize = 100;

/// `DELETE /v1/conversations/{id}`.
pub(super) async fn conversation(State(app): State<Arc<App>>, req: Request) -> Response {
    let Some(id) = id_in(&req, "/v1/conversations/") else {
        return error(
            StatusCode::BAD_REQUEST,
            "the id is not valid percent-encoded UTF-8",
        );
    };
    delete(&app, req, |inner| {
        let deleted = inner.store.delete_conversation(&id);
        if deleted.is_ok() {
            inner.counters.deleted.conversations += 1;
        }
        deleted
    })
    .await
}

/// `DELETE /v1/customers/{id}`.
pub(super) async fn customer(State(app): State<Arc<App>>, req: Request) -> Response {
    let Some(id) = id_in(&req, "/v1/customers/") else {
        return error(
            StatusCode::BAD_REQUEST,
            "the id is not valid percent-encoded UTF-8",
        );
    };
    delete(&app, req, |inner| {
        let deleted = inner.store.delete_customer(&id);
        if deleted.is_ok() {
            inner.counters.deleted.customers += 1;
        }
        deleted
    })
    .await
}

/// `DELETE /v1/customers/bulk?ids=a,b,c`: queues a job of one item per id.
pub(super) async fn customers_in_bulk(State(app): State<Arc<App>>, req: Request) -> Response {
    let conn = req.extensions().get::<ConnCtx>().cloned();
    let ids = match bulk_ids(req.uri().query()) {
        Ok(ids) => ids,
        Err(words) => return error(StatusCode::BAD_REQUEST, words),
    };
    let items = ids
        .into_iter()
        .map(|id| Map::from_iter([("id".to_string(), Value::String(id))]))
        .collect();
    queue_job(app, conn, BulkKind::CustomerDeletes, items).await
}

/// The query's `ids`: one parameter, 1 to [`BULK_MAX_IDS`] ids, comma-separated, each
/// percent-decoded, none empty, none twice; or why the request is refused.
fn bulk_ids(query: Option<&str>) -> Result<Vec<String>, String> {
    let mut lists = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.strip_prefix("ids="));
    let (Some(list), None) = (lists.next(), lists.next()) else {
        return Err("the query must carry one ids parameter (ids=a,b,c)".into());
    };
    let mut ids = Vec::new();
    for encoded in list.split(',') {
        let id = super::store::percent_decode(encoded)
            .filter(|id| !id.is_empty())
            .ok_or("ids: each id must be a non-empty, valid percent-encoded text")?;
        if ids.contains(&id) {
            return Err(format!("ids: {id} is named twice"));
        }
        ids.push(id);
    }
    if ids.len() > BULK_MAX_IDS {
        return Err(format!("ids: a bulk delete takes 1 to {BULK_MAX_IDS} ids"));
    }
    Ok(ids)
}

/// One id of a bulk delete job, deleted as its single delete would be: the id, or the
/// failure in words that name no id.
pub(super) fn run_item(inner: &mut Inner, item: &Map<String, Value>) -> Result<String, String> {
    let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
    match inner.store.delete_customer(id) {
        Ok(()) => {
            inner.counters.deleted.customers += 1;
            Ok(id.to_string())
        }
        Err(DeleteError::NotFound) => Err("not found".into()),
        Err(DeleteError::HoldsConversations(held)) => Err(format!(
            "the customer still holds {held} conversation(s): delete them first"
        )),
        Err(DeleteError::Unrecorded(reason)) => {
            Err(format!("the delete could not be recorded: {reason}"))
        }
    }
}

/// The record's id: the path's last segment, decoded.
fn id_in(req: &Request, prefix: &str) -> Option<String> {
    let segment = req.uri().path().strip_prefix(prefix).unwrap_or_default();
    super::store::percent_decode(segment)
}

/// Runs one delete under the lock and answers it: 204, or why not.
async fn delete(
    app: &App,
    req: Request,
    remove: impl FnOnce(&mut Inner) -> Result<(), DeleteError>,
) -> Response {
    let conn = req.extensions().get::<ConnCtx>().cloned();
    let outcome = {
        let mut inner = app.lock();
        remove(&mut inner).map(|()| roll_after(&mut inner))
    };
    match outcome {
        Ok(fault) => after_write(app, conn, fault, StatusCode::NO_CONTENT.into_response()).await,
        Err(DeleteError::NotFound) => error(StatusCode::NOT_FOUND, "no record has this id"),
        Err(DeleteError::HoldsConversations(held)) => error(
            StatusCode::CONFLICT,
            format!("the customer still holds {held} conversation(s): delete them first"),
        ),
        Err(DeleteError::Unrecorded(reason)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the delete could not be recorded: {reason}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::sandbox::{Sandbox, SandboxConfig};

    async fn send(method: reqwest::Method, url: String) -> (u16, String) {
        let answer = reqwest::Client::new()
            .request(method, url)
            .bearer_auth("test")
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    }

    async fn post(url: String, body: serde_json::Value) -> String {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(url)
            .bearer_auth("test")
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = answer["data"]["id"].as_str();
        id.unwrap_or_else(|| panic!("{answer}")).to_string()
    }

    /// The docs' facts: 204 for a delete, 404 for a read after it and for a second delete;
    /// a customer who holds a conversation is refused (409) until it is gone.
    #[tokio::test]
    async fn a_delete_answers_204_and_the_record_reads_404_after_it() {
        let sandbox = Sandbox::start(SandboxConfig::default(), 0).await.unwrap();
        let base = sandbox.base_url();
        // Bodies of the docs' fields (kustomer-api.md, "Customers" and "Conversations").
        let customer = post(
            format!("{base}/v1/customers"),
            serde_json::json!({"name": "Ada Lovelace", "emails": [{"type": "work",
                "email": "ada@example.com"}], "externalId": "crm-1"}),
        )
        .await;
        let conversation = post(
            format!("{base}/v1/conversations"),
            serde_json::json!({"customer": customer, "name": "Order #1001",
                "channel": "email", "status": "open", "externalId": "t-1"}),
        )
        .await;
        let delete = reqwest::Method::DELETE;
        let customer_url = format!("{base}/v1/customers/{customer}");
        let conversation_url = format!("{base}/v1/conversations/{conversation}");
        let (status, words) = send(delete.clone(), customer_url.clone()).await;
        assert_eq!(status, 409, "{words}");
        assert!(words.contains("delete them first"), "{words}");
        assert_eq!(
            send(delete.clone(), conversation_url.clone()).await,
            (204, String::new())
        );
        assert_eq!(
            send(reqwest::Method::GET, conversation_url.clone()).await.0,
            404
        );
        assert_eq!(send(delete.clone(), conversation_url).await.0, 404);
        assert_eq!(send(delete.clone(), customer_url.clone()).await.0, 204);
        assert_eq!(send(reqwest::Method::GET, customer_url).await.0, 404);
        let stats = sandbox.stats();
        assert_eq!((stats.customers, stats.conversations), (0, 0));
        assert_eq!(
            (stats.customers_deleted, stats.conversations_deleted),
            (1, 1)
        );
        // The email is free again: the same customer can be made anew.
        post(
            format!("{base}/v1/customers"),
            serde_json::json!({"name": "Ada", "emails": [{"type": "work",
                "email": "ada@example.com"}]}),
        )
        .await;
        sandbox.shutdown().await;
    }

    /// The docs' `DELETE /v1/customers/bulk?ids=a,b,c` runs as a job: each id deleted as a
    /// single delete would be, the batches listing the ids deleted and failures in words
    /// that name no id; a request of no ids, a repeated id or more than 100 is refused whole.
    #[tokio::test]
    async fn a_bulk_delete_runs_as_a_job_and_reports_counts_and_the_ids_deleted() {
        let config = SandboxConfig {
            bulk_delay: std::time::Duration::from_millis(20),
            ..SandboxConfig::default()
        };
        let sandbox = Sandbox::start(config, 0).await.unwrap();
        let base = sandbox.base_url();
        let mut ids = Vec::new();
        for n in 0..3 {
            let body =
                serde_json::json!({"name": format!("Ada {n}"), "externalId": format!("crm-{n}")});
            ids.push(post(format!("{base}/v1/customers"), body).await);
        }
        post(
            format!("{base}/v1/conversations"),
            serde_json::json!({"customer": ids[2], "name": "Order #1001", "channel": "email"}),
        )
        .await;
        let delete = reqwest::Method::DELETE;
        for bad in ["", "ids=", "ids=a,a", "other=1"] {
            let (status, words) =
                send(delete.clone(), format!("{base}/v1/customers/bulk?{bad}")).await;
            assert_eq!(status, 400, "{bad}: {words}");
        }
        let many: Vec<String> = (0..101).map(|n| format!("x{n}")).collect();
        let url = format!("{base}/v1/customers/bulk?ids={}", many.join(","));
        assert_eq!(send(delete.clone(), url).await.0, 400);

        let url = format!("{base}/v1/customers/bulk?ids={},missing", ids.join(","));
        let (status, answer) = send(delete, url).await;
        assert_eq!(status, 201, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["data"]["attributes"]["status"], "queued");
        let job = answer["data"]["id"].as_str().unwrap().to_string();
        loop {
            let (_, status) = send(reqwest::Method::GET, format!("{base}/v1/bulk/{job}")).await;
            if status.contains("complete") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (_, batches) = send(
            reqwest::Method::GET,
            format!("{base}/v1/bulk/{job}/batches"),
        )
        .await;
        let batches: serde_json::Value = serde_json::from_str(&batches).unwrap();
        let batch = &batches["data"][0]["attributes"];
        assert_eq!(batch["successCount"], 2, "{batches}");
        assert_eq!(batch["failureCount"], 2, "{batches}");
        assert_eq!(batch["objectIds"], serde_json::json!([ids[0], ids[1]]));
        assert_eq!(
            batch["errors"],
            serde_json::json!([
                "the customer still holds 1 conversation(s): delete them first",
                "not found"
            ])
        );
        assert!(batch.get("results").is_none(), "{batches}");
        for (id, status) in [(&ids[0], 404), (&ids[1], 404), (&ids[2], 200)] {
            let (read, _) = send(reqwest::Method::GET, format!("{base}/v1/customers/{id}")).await;
            assert_eq!(read, status, "{id}");
        }
        assert_eq!(sandbox.stats().customers_deleted, 2);
        sandbox.shutdown().await;
    }
}
