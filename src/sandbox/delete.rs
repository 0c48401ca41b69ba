//! The sandbox's deletes, from the docs' "Deletes": `DELETE /v1/customers/{id}` and
//! `DELETE /v1/conversations/{id}` answer 204 with no body; a record not held answers 404,
//! and a read of a deleted record answers 404 from then on. A conversation's messages and
//! notes go with it (the docs have no delete for them). Whether deleting a customer deletes
//! its conversations is unknown: the sandbox does the strictest plausible thing and refuses
//! (409) to delete a customer who still holds conversations. A delete passes the same gate
//! as every request (rate limit, 5xx before the write) and meets the same after-write faults
//! as a create (a 500, a dropped or hanging connection once the record is gone), so a client
//! learns what a lost answer to a delete means. The bulk delete of customers is not served.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::http::{App, ConnCtx, after_write, error, roll_after};
use super::store::DeleteError;

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

/// The record's id: the path's last segment, decoded.
fn id_in(req: &Request, prefix: &str) -> Option<String> {
    let segment = req.uri().path().strip_prefix(prefix).unwrap_or_default();
    super::store::percent_decode(segment)
}

/// Runs one delete under the lock and answers it: 204, or why not.
async fn delete(
    app: &App,
    req: Request,
    remove: impl FnOnce(&mut super::http::Inner) -> Result<(), DeleteError>,
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
}
