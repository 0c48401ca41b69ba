//! The client's history calls (`api/history.rs`) against the sandbox on 127.0.0.1: messages
//! and notes created on their conversation, a message found by its externalId, a note found
//! by listing its conversation's notes across pages (one request a page), and bulk jobs of
//! messages (answered 200) and notes submitted and read by `_clientRef`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kustomer_import::api::{
    ApiError, BulkKind, ClientSettings, ItemOutcome, JobStatus, KustomerClient, RateGate,
    RequestStats,
};
use kustomer_import::mapping::{ConversationBody, CustomerBody};
use kustomer_import::sandbox::{Sandbox, SandboxConfig};
use serde_json::{Map, Value, json};

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("an object")
}

fn client(sandbox: &Sandbox) -> KustomerClient {
    let settings = ClientSettings {
        base_url: url::Url::parse(&sandbox.base_url()).expect("url"),
        api_key: "k".to_string().into(),
        timeout: Duration::from_secs(10),
        max_rate_limited: 3,
    };
    let gate = Arc::new(RateGate::new(0, Duration::from_secs(60)));
    KustomerClient::new(settings, gate, Arc::new(RequestStats::default())).expect("client")
}

/// A conversation of a new customer, made through the client; its id.
async fn conversation(client: &KustomerClient, key: &str) -> String {
    let customer = CustomerBody {
        external_id: Some(format!("c-{key}")),
        ..CustomerBody::default()
    };
    let customer = client
        .create_customer(&customer)
        .await
        .expect("customer made");
    let body = ConversationBody {
        customer: Some(customer),
        external_id: Some(format!("t-{key}")),
        ..ConversationBody::default()
    };
    client
        .create_conversation(&body)
        .await
        .expect("conversation made")
}

fn message(external_id: &str) -> Map<String, Value> {
    object(json!({
        "channel": "email", "app": "kustomer-import", "direction": "in",
        "preview": "hello", "externalId": external_id, "importedAt": "2024-06-01T00:00:00Z"
    }))
}

#[tokio::test]
async fn messages_are_made_and_found_and_a_missing_conversation_is_a_refusal() {
    let sandbox = Sandbox::start(SandboxConfig::default(), 0).await.unwrap();
    let client = client(&sandbox);
    let id = conversation(&client, "1").await;
    let made = client.create_message(&id, &message("m/1 ?")).await.unwrap();
    assert_eq!(client.find_message("m/1 ?").await, Ok(Some(made.clone())));
    assert_eq!(client.find_message("m-2").await, Ok(None));
    let missing = client
        .create_message("0123456789abcdef01234567", &message("m-3"))
        .await;
    // The conversation is not found: this message fails, the run does not stop.
    assert!(
        matches!(&missing, Err(ApiError::Rejected { status: 404, message }) if message.contains("not found")),
        "{missing:?}"
    );
    let mut bad = message("m-4");
    bad.insert("channel".into(), json!("pigeon"));
    let refused = client.create_message(&id, &bad).await;
    assert!(
        matches!(&refused, Err(ApiError::Rejected { status: 422, message }) if message.contains("channel"))
    );
    let stats = client.stats();
    assert_eq!(stats.message_creates.load(Ordering::Relaxed), 3);
    assert_eq!(stats.thread_lookups.load(Ordering::Relaxed), 2);
    assert_eq!(sandbox.records().thread(&id).len(), 1);
}

#[tokio::test]
async fn a_note_is_found_by_listing_its_conversation_page_by_page() {
    let sandbox = Sandbox::start(
        SandboxConfig {
            per_customer_limit: None,
            ..SandboxConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let client = client(&sandbox);
    let id = conversation(&client, "1").await;
    let mut ids = Vec::new();
    for i in 0..230 {
        let note = object(json!({"body": format!("n{i}"), "externalId": format!("n-{i}")}));
        ids.push(client.create_note(&id, &note).await.unwrap());
    }
    let requests = || client.stats().requests.load(Ordering::Relaxed);
    let before = requests();
    assert_eq!(client.find_note(&id, "n-5").await, Ok(Some(ids[5].clone())));
    assert_eq!(requests() - before, 1, "found on the first page");
    let before = requests();
    assert_eq!(
        client.find_note(&id, "n-229").await,
        Ok(Some(ids[229].clone()))
    );
    assert_eq!(requests() - before, 3, "on the third page of 100");
    let before = requests();
    assert_eq!(client.find_note(&id, "n-999").await, Ok(None));
    assert_eq!(requests() - before, 3, "every page, then the end");
    let other = conversation(&client, "2").await;
    assert_eq!(client.find_note(&other, "n-5").await, Ok(None));
    assert_eq!(
        client.find_note("0123456789abcdef01234567", "n-5").await,
        Ok(None)
    );
}

#[tokio::test]
async fn bulk_jobs_of_messages_and_notes_are_submitted_and_read_by_client_ref() {
    let sandbox = Sandbox::start(
        SandboxConfig {
            bulk_delay: Duration::from_millis(20),
            ..SandboxConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let client = client(&sandbox);
    let id = conversation(&client, "1").await;
    let mut item = message("b-1");
    item.insert("conversation".into(), json!(id));
    item.insert("_clientRef".into(), json!("r1"));
    let note = json!({"_clientRef": "r2", "conversation": id, "body": ""});
    for (kind, items) in [
        (BulkKind::Messages, vec![Value::Object(item)]),
        (BulkKind::Notes, vec![note]),
    ] {
        let turn = client.turn().await.unwrap();
        let job = client.submit_bulk(kind, &items, turn).await.unwrap();
        let mut status = job.status;
        for _ in 0..100 {
            if status == JobStatus::Complete {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            status = client.bulk_status(&job.id).await.unwrap();
        }
        assert_eq!(status, JobStatus::Complete);
        let outcomes = client.bulk_results(&job.id).await.unwrap();
        match kind {
            BulkKind::Messages => assert_eq!(
                outcomes["r1"],
                ItemOutcome::Created(sandbox.records().thread(&id)[0].id.clone())
            ),
            _ => assert!(
                matches!(&outcomes["r2"], ItemOutcome::Unexplained(words) if words.starts_with("/body")),
                "{outcomes:?}"
            ),
        }
    }
    assert_eq!(client.stats().bulk_jobs.load(Ordering::Relaxed), 2);
}
