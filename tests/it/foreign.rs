//! The binary against servers that are not our sandbox: one answering the spec's way (200,
//! a bare object), one answering the live API's way (201, wrapped in "data"), and a bulk
//! API whose jobs are complete when their submit is answered.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::harness::*;

#[derive(Default)]
struct Received {
    customers: Vec<Value>,
    conversations: Vec<Value>,
}

/// Starts a minimal foreign API; `wrapped` picks the live shape.
fn start_foreign(
    runtime: &tokio::runtime::Runtime,
    wrapped: bool,
) -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let answer = move |kind: &str, id: String, body: Value| {
        let record = json!({"type": kind, "id": id, "attributes": body});
        if wrapped {
            (StatusCode::CREATED, Json(json!({"data": record})))
        } else {
            (StatusCode::OK, Json(record))
        }
    };
    let app = Router::new()
        .route(
            "/v1/customers",
            post(move |State(state): State<Arc<Mutex<Received>>>, Json(body): Json<Value>| async move {
                let mut state = state.lock().unwrap();
                state.customers.push(body.clone());
                answer("customer", format!("cus{}", state.customers.len()), body)
            }),
        )
        .route(
            "/v1/conversations",
            post(move |State(state): State<Arc<Mutex<Received>>>, Json(body): Json<Value>| async move {
                let mut state = state.lock().unwrap();
                state.conversations.push(body.clone());
                answer("conversation", format!("conv{}", state.conversations.len()), body)
            }),
        )
        .with_state(Arc::clone(&received));
    (serve(runtime, app), received)
}

/// Serves `app` on an ephemeral port of 127.0.0.1; its base URL.
fn serve(runtime: &tokio::runtime::Runtime, app: Router) -> String {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

fn import_into_foreign(wrapped: bool) {
    let env = TestEnv::plain();
    let (base_url, received) = start_foreign(&env.runtime, wrapped);
    let file = env.write("export.csv", &generated_csv(3, 2));
    let mut command = env.import_command(&[file.to_str().unwrap()]);
    command.env("KUSTOMER_BASE_URL", &base_url);
    run(command).assert_code(0);
    let received = received.lock().unwrap();
    assert_eq!(received.customers.len(), 3);
    assert_eq!(received.conversations.len(), 6);
    // Conversations name the ids the server gave their customers.
    for conversation in &received.conversations {
        let customer = conversation["customer"].as_str().unwrap();
        assert!(customer.starts_with("cus"), "{conversation}");
    }
    let ids: Vec<String> = env
        .checkpoint()
        .prepare("SELECT conversation_id FROM rows ORDER BY conversation_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids, ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6"]);
}

#[test]
fn a_server_answering_the_specs_way_200_bare() {
    import_into_foreign(false);
}

#[test]
fn a_server_answering_the_live_apis_way_201_wrapped() {
    import_into_foreign(true);
}

/// What a bulk API that finishes jobs while it answers their submit saw.
#[derive(Default)]
struct BulkSeen {
    /// Each job's items, by job id.
    jobs: Vec<Vec<Value>>,
    polls: u64,
}

/// A bulk API whose jobs are complete when their submit is answered, as an API that runs
/// small jobs at once may answer (the docs show `queued`; nothing says it must be).
fn start_bulk_foreign(runtime: &tokio::runtime::Runtime) -> (String, Arc<Mutex<BulkSeen>>) {
    use axum::extract::Path;
    use axum::routing::get;
    let seen = Arc::new(Mutex::new(BulkSeen::default()));
    let app = Router::new()
        .route(
            "/v1/customers/bulk",
            post(
                |State(seen): State<Arc<Mutex<BulkSeen>>>, Json(items): Json<Vec<Value>>| async move {
                    let mut seen = seen.lock().unwrap();
                    seen.jobs.push(items);
                    let id = format!("job{}", seen.jobs.len() - 1);
                    let job = json!({"type": "bulk", "id": id, "attributes": {"status": "complete"}});
                    (StatusCode::CREATED, Json(json!({ "data": job })))
                },
            ),
        )
        .route(
            "/v1/bulk/{id}",
            get(|State(seen): State<Arc<Mutex<BulkSeen>>>, Path(id): Path<String>| async move {
                seen.lock().unwrap().polls += 1;
                let job = json!({"type": "bulk", "id": id, "attributes": {"status": "complete"}});
                Json(json!({ "data": job }))
            }),
        )
        .route(
            "/v1/bulk/{id}/batches",
            get(|State(seen): State<Arc<Mutex<BulkSeen>>>, Path(id): Path<String>| async move {
                let seen = seen.lock().unwrap();
                let job: usize = id.trim_start_matches("job").parse().unwrap();
                let results: Vec<Value> = seen.jobs[job]
                    .iter()
                    .map(|item| {
                        let client_ref = item["_clientRef"].as_str().unwrap();
                        json!({
                            "_clientRef": client_ref,
                            "objectId": format!("cus-{job}-{client_ref}"),
                            "status": "created",
                        })
                    })
                    .collect();
                let batch = json!({"type": "batch", "id": "b", "attributes": {"results": results}});
                Json(json!({ "data": [batch] }))
            }),
        )
        .with_state(Arc::clone(&seen));
    (serve(runtime, app), seen)
}

#[test]
fn a_job_already_complete_when_submitted_is_read_without_a_poll() {
    let env = TestEnv::plain();
    let (base_url, seen) = start_bulk_foreign(&env.runtime);
    // 150 customers and no conversations: two customers jobs.
    let mut export = String::from("external_id,email\n");
    for customer in 0..150 {
        export.push_str(&format!("C{customer},c{customer}@example.com\n"));
    }
    let file = env.write("export.csv", &export);
    let mut command = env.import_command(&[file.to_str().unwrap(), "--mode", "bulk"]);
    command.env("KUSTOMER_BASE_URL", &base_url);
    run(command).assert_code(0);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.jobs.len(), 2);
    assert_eq!(seen.polls, 0, "a job the submit said complete was polled");
    assert_eq!(env.rows_in_state("done"), 150);
}
