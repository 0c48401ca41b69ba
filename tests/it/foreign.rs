//! The binary against servers that are not our sandbox: one answering the spec's way (200,
//! a bare object) and one answering the live API's way (201, wrapped in "data").

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
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), received)
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
