//! The binary against servers that are not our sandbox: one answering the spec's way (200,
//! a bare object), one answering the live API's way (201, wrapped in "data"), one that
//! redirects every request (a wrong base URL), one whose create answers never end, an org
//! that holds every record already, and a bulk API whose jobs are complete when their
//! submit is answered.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header::LOCATION};
use axum::response::IntoResponse;
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
    assert_eq!(
        conversation_ids(&env),
        ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6"]
    );
}

/// The conversation ids of the checkpoint's done rows, in order.
fn conversation_ids(env: &TestEnv) -> Vec<String> {
    env.checkpoint()
        .prepare("SELECT conversation_id FROM rows WHERE state = 'done' ORDER BY conversation_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_server_answering_the_specs_way_200_bare() {
    import_into_foreign(false);
}

#[test]
fn a_server_answering_the_live_apis_way_201_wrapped() {
    import_into_foreign(true);
}

/// The host a redirecting server sends every request to. Never reached: the client does
/// not follow redirects.
const MOVED_TO: &str = "http://127.0.0.1:9/moved";

/// A server that answers every request with `status` and a Location under [`MOVED_TO`].
fn start_redirecting(runtime: &tokio::runtime::Runtime, status: StatusCode) -> String {
    let app = Router::new().fallback(move |uri: Uri| async move {
        let location = format!("{MOVED_TO}{}", uri.path());
        let mut answer = status.into_response();
        answer
            .headers_mut()
            .insert(LOCATION, HeaderValue::from_str(&location).unwrap());
        answer
    });
    serve(runtime, app)
}

/// Asserts that a run stopped on a redirect: exit 2, the Location named, no row failed,
/// every row pending.
fn assert_stopped_on_redirect(env: &TestEnv, run: &Run, rows: u64) {
    run.assert_code(2);
    assert!(run.stderr.contains(MOVED_TO), "{}", run.stderr);
    assert!(run.stderr.contains("base URL"), "{}", run.stderr);
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["stopped_because"], "endpoint", "{summary}");
    assert_eq!(summary["rows_failed"], 0, "{summary}");
    // Every row read is pending; a stop may come before the reader has read them all.
    assert_eq!(summary["rows_pending"], summary["rows_read"], "{summary}");
    assert!(summary["rows_read"].as_u64().unwrap() <= rows, "{summary}");
    assert_eq!(env.rows_in_state("failed"), 0);
    assert_eq!(env.rows_in_state("done"), 0);
}

#[test]
fn a_redirect_stops_the_run_as_a_wrong_base_url_and_the_fixed_url_imports_every_row() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(3, 2));
    let file = file.to_str().unwrap();
    // Creates meet a 301; the next run's lookups (of the customers whose creates left)
    // meet a 307.
    for status in [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::TEMPORARY_REDIRECT,
    ] {
        let mut command = env.import_command(&[file, "--json"]);
        command.env("KUSTOMER_BASE_URL", start_redirecting(&env.runtime, status));
        assert_stopped_on_redirect(&env, &run(command), 6);
    }
    assert_eq!(env.stats().requests_total, 0);
    // The same command with the base URL fixed.
    env.import(&[file]).assert_code(0);
    env.assert_exactly_once(3, 6);
}

#[test]
fn a_redirect_stops_a_bulk_run_with_every_row_pending() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(150, 2));
    let file = file.to_str().unwrap();
    let mut command = env.import_command(&[file, "--mode", "bulk", "--json"]);
    command.env(
        "KUSTOMER_BASE_URL",
        start_redirecting(&env.runtime, StatusCode::PERMANENT_REDIRECT),
    );
    assert_stopped_on_redirect(&env, &run(command), 300);
    env.import(&[file, "--mode", "bulk"]).assert_code(0);
    env.assert_exactly_once(150, 300);
}

/// Records by externalId, as a server that pads its create answers holds them.
#[derive(Default)]
struct Padded {
    customers: std::collections::HashMap<String, String>,
    conversations: std::collections::HashMap<String, String>,
    creates: usize,
}

/// More padding than the client reads of an answer (a few MiB).
const PADDING: usize = 6 * 1024 * 1024;

/// A create answer: the record's id first, as JSON, then [`PADDING`] bytes of whitespace,
/// which leaves it valid JSON. Customers' answers are streamed with no length, the
/// conversations' say their length up front.
fn padded_answer(kind: &str, id: &str) -> axum::response::Response {
    let head = serde_json::to_vec(&json!({"data": {"type": kind, "id": id}})).unwrap();
    if kind == "customer" {
        let chunks = std::iter::once(head)
            .chain(std::iter::repeat_n(
                vec![b' '; 64 * 1024],
                PADDING / (64 * 1024),
            ))
            .map(Ok::<_, std::io::Error>);
        let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
        (StatusCode::CREATED, body).into_response()
    } else {
        let mut body = head;
        body.resize(body.len() + PADDING, b' ');
        (StatusCode::CREATED, body).into_response()
    }
}

/// A foreign API whose creates make the record and answer [`padded_answer`]s; its lookups
/// by externalId answer as the docs say.
fn start_padding(runtime: &tokio::runtime::Runtime) -> (String, Arc<Mutex<Padded>>) {
    use axum::extract::Path;
    use axum::routing::get;
    type Shared = State<Arc<Mutex<Padded>>>;
    let create = |kind: &'static str| {
        move |State(state): Shared, Json(body): Json<Value>| async move {
            let mut state = state.lock().unwrap();
            state.creates += 1;
            let id = format!("{kind}{}", state.creates);
            let external_id = body["externalId"].as_str().unwrap().to_string();
            let records = match kind {
                "customer" => &mut state.customers,
                _ => &mut state.conversations,
            };
            records.insert(external_id, id.clone());
            padded_answer(kind, &id)
        }
    };
    let lookup = |kind: &'static str| {
        move |State(state): Shared, Path(lookup): Path<String>| async move {
            let state = state.lock().unwrap();
            let records = match kind {
                "customer" => &state.customers,
                _ => &state.conversations,
            };
            let found = lookup
                .strip_prefix("externalId=")
                .and_then(|external_id| records.get(external_id));
            match found {
                Some(id) => Json(json!({"data": {"type": kind, "id": id}})).into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    let padded = Arc::new(Mutex::new(Padded::default()));
    let app = Router::new()
        .route("/v1/customers", post(create("customer")))
        .route("/v1/customers/{lookup}", get(lookup("customer")))
        .route("/v1/conversations", post(create("conversation")))
        .route("/v1/conversations/{lookup}", get(lookup("conversation")))
        .with_state(Arc::clone(&padded));
    (serve(runtime, app), padded)
}

#[test]
fn a_create_answer_longer_than_the_cap_is_reconciled_by_lookup_not_read_whole() {
    let env = TestEnv::plain();
    let (base_url, padded) = start_padding(&env.runtime);
    let file = env.write("export.csv", &generated_csv(3, 2));
    let mut command = env.import_command(&[
        file.to_str().unwrap(),
        "--json",
        "--reconcile-delay",
        "0.05",
    ]);
    command.env("KUSTOMER_BASE_URL", &base_url);
    let run = run(command);
    run.assert_code(0);
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    // Each answer was cut off at the cap: a lost answer, so each record was found by
    // lookup, and none was created twice.
    assert_eq!(summary["customers_reconciled"], 3, "{summary}");
    assert_eq!(summary["customers_created"], 0, "{summary}");
    assert_eq!(summary["rows_done"], 6, "{summary}");
    let padded = padded.lock().unwrap();
    assert_eq!(padded.creates, 3 + 6);
    assert_eq!(padded.customers.len(), 3);
    assert_eq!(padded.conversations.len(), 6);
    let mut made: Vec<String> = padded.conversations.values().cloned().collect();
    made.sort();
    assert_eq!(conversation_ids(&env), made);
}

/// An org that holds every customer and conversation already, and refuses a repeated
/// externalId (409) for both, as the docs allow: every create is refused, every lookup
/// finds the record.
fn start_org_with_everything(runtime: &tokio::runtime::Runtime) -> String {
    use axum::extract::Path;
    use axum::routing::get;
    let duplicate = || {
        (
            StatusCode::CONFLICT,
            Json(json!({"errors": [{"status": "409", "detail": "duplicate detected"}]})),
        )
    };
    let found = |kind: &'static str, lookup: String| {
        Json(json!({"data": {"type": kind, "id": format!("{kind}-{lookup}")}}))
    };
    let app = Router::new()
        .route("/v1/customers", post(move || async move { duplicate() }))
        .route(
            "/v1/conversations",
            post(move || async move { duplicate() }),
        )
        .route(
            "/v1/customers/{lookup}",
            get(move |Path(lookup): Path<String>| async move { found("customer", lookup) }),
        )
        .route(
            "/v1/conversations/{lookup}",
            get(move |Path(lookup): Path<String>| async move { found("conversation", lookup) }),
        );
    serve(runtime, app)
}

#[test]
fn conversations_that_were_there_already_are_counted_as_linked_not_created() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(3, 2));
    let mut command = env.import_command(&[file.to_str().unwrap(), "--json", "--mode", "single"]);
    command.env("KUSTOMER_BASE_URL", start_org_with_everything(&env.runtime));
    let run = run(command);
    run.assert_code(0);
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["rows_done"], 6, "{summary}");
    assert_eq!(summary["customers_created"], 0, "{summary}");
    assert_eq!(summary["customers_linked"], 3, "{summary}");
    assert_eq!(summary["conversations_created"], 0, "{summary}");
    assert_eq!(summary["conversations_linked"], 6, "{summary}");
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
