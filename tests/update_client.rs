//! The client's updates (`api/update.rs`, `api/bulk.rs`) against the sandbox on 127.0.0.1: a
//! bulk update job merges (`?replace=false`: the fields it does not send are kept) and
//! reads back as `updated`; a 429 of one record's update limit, whose headers show the org's
//! budget not spent, comes back as that record's (`ApiError::RecordLimited`) without
//! holding any other request.

use std::sync::Arc;
use std::time::Duration;

use kustomer_import::api::{
    ApiError, BulkKind, ClientSettings, ItemOutcome, JobStatus, KustomerClient, RateGate,
    RequestStats,
};
use kustomer_import::mapping::{CustomerBody, EmailEntry};
use kustomer_import::sandbox::{Sandbox, SandboxConfig};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

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

async fn customer(client: &KustomerClient, key: &str) -> String {
    let body = CustomerBody {
        name: Some(format!("Customer {key}")),
        external_id: Some(format!("c-{key}")),
        emails: vec![EmailEntry {
            email: format!("{key}@example.com"),
            kind: None,
        }],
        ..CustomerBody::default()
    };
    client.create_customer(&body).await.expect("customer made")
}

fn fields(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("an object")
}

#[tokio::test]
async fn a_bulk_update_job_merges_and_its_items_read_back_as_updated() {
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
    let (one, two) = (customer(&client, "1").await, customer(&client, "2").await);
    let items = vec![
        json!({"_clientRef": "0", "id": one, "name": "One Renamed"}),
        json!({"_clientRef": "1", "id": "0123456789abcdef01234567", "name": "Nobody"}),
        json!({"_clientRef": "2", "id": two, "name": "Two Renamed"}),
    ];
    let turn = client.turn().await.unwrap();
    let job = client
        .submit_bulk(BulkKind::CustomerUpdates, &items, turn)
        .await
        .unwrap();
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
    assert_eq!(outcomes["0"], ItemOutcome::Updated(one.clone()));
    assert_eq!(outcomes["2"], ItemOutcome::Updated(two.clone()));
    assert!(
        matches!(&outcomes["1"], ItemOutcome::Unexplained(words) if words.contains("not found")),
        "{outcomes:?}"
    );
    let records = sandbox.records();
    let held = records.customers.iter().find(|c| c.id == one).unwrap();
    assert_eq!(held.name.as_deref(), Some("One Renamed"));
    // `replace=false`: what the items did not send is kept (a replace would drop them).
    assert_eq!(held.external_id.as_deref(), Some("c-1"));
    assert_eq!(held.emails.len(), 1);
    let stats = sandbox.stats();
    assert_eq!(stats.customers_updated, 2);
    assert_eq!(stats.updates_total, 0, "a job, not single updates");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_records_own_limit_comes_back_to_its_caller_and_holds_no_one_else() {
    let sandbox = Sandbox::start(
        SandboxConfig {
            rpm: Some(10_000),
            rate_window: Duration::from_secs(30),
            per_object_update_limit: Some(1),
            ..SandboxConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let settings = ClientSettings {
        base_url: url::Url::parse(&sandbox.base_url()).expect("url"),
        api_key: "k".to_string().into(),
        timeout: Duration::from_secs(10),
        max_rate_limited: 3,
    };
    // A ceiling of our own that cannot spend what the org's budget has left before its
    // window ends: the server's headers pace nothing, only a pause would hold a request.
    let gate = Arc::new(RateGate::new(600, Duration::from_secs(60)));
    let stop = CancellationToken::new();
    gate.stop_on(stop.clone());
    let client = KustomerClient::new(settings, Arc::clone(&gate), Arc::default()).unwrap();
    let (one, two) = (customer(&client, "1").await, customer(&client, "2").await);
    let rename = |name: &str| fields(json!({ "name": name }));
    client
        .update_customer(&one, &rename("One Renamed"))
        .await
        .unwrap();
    let limited = client.update_customer(&one, &rename("One Again")).await;
    let Err(ApiError::RecordLimited { wait, message }) = &limited else {
        panic!("{limited:?}");
    };
    assert!(
        *wait > Duration::ZERO && *wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    assert!(message.contains("updates of customer"), "{message}");
    // The gate holds no request for it: once the run is stopping, a request the server
    // held back (a pause) would not be sent at all; another record's update goes, and
    // succeeds.
    stop.cancel();
    client
        .update_customer(&two, &rename("Two Renamed"))
        .await
        .expect("not held back by the other record's limit");
    assert_eq!(sandbox.stats().object_limited, 1);
    sandbox.shutdown().await;
}
