//! Server-imposed pauses: a stop ends them at once, and a server that lets nothing through
//! stops the run. The API is the sandbox behind a small proxy that can hold every request
//! back: answer 429 itself, or pass the request on and say the budget is spent. The resume
//! goes to the sandbox itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use kustomer_import::sandbox::FaultConfig;

use crate::harness::*;

/// How the proxy treats the requests it receives.
#[derive(Clone, Debug)]
enum Stall {
    /// Answered 429 by the proxy, with these headers.
    TooMany(Vec<(&'static str, String)>),
    /// Passed on, and its answer's budget headers replaced by these.
    Spent(Vec<(&'static str, String)>),
}

struct Proxy {
    upstream: String,
    http: reqwest::Client,
    stall: Stall,
    received: Mutex<u64>,
}

/// Starts the proxy in front of the env's sandbox: its base URL, and what it has seen.
fn start_proxy(env: &TestEnv, stall: Stall) -> (String, Arc<Proxy>) {
    let proxy = Arc::new(Proxy {
        upstream: env.sandbox().base_url(),
        http: reqwest::Client::new(),
        stall,
        received: Mutex::new(0),
    });
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(Arc::clone(&proxy));
    let listener = env
        .runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    env.runtime
        .spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), proxy)
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    *proxy.received.lock().unwrap() += 1;
    if let Stall::TooMany(headers) = &proxy.stall {
        return with_headers(StatusCode::TOO_MANY_REQUESTS, Body::empty(), headers);
    }
    let (parts, body) = request.into_parts();
    let url = format!("{}{}", proxy.upstream, parts.uri);
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut upstream = proxy.http.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        if name != "host" {
            upstream = upstream.header(name, value);
        }
    }
    let answer = upstream.send().await.unwrap();
    let status = answer.status();
    let mut headers: Vec<(&'static str, String)> = Vec::new();
    if let Some(kind) = answer.headers().get("content-type") {
        headers.push(("content-type", kind.to_str().unwrap().to_string()));
    }
    if let Stall::Spent(spent) = &proxy.stall {
        headers.extend(spent.iter().cloned());
    }
    let body = answer.bytes().await.unwrap();
    with_headers(status, Body::from(body), &headers)
}

fn with_headers(status: StatusCode, body: Body, headers: &[(&'static str, String)]) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    response
}

/// Waits for the child to end, at most `limit`; kills it and panics past that.
fn finish_within(mut child: std::process::Child, limit: Duration, what: &str) -> Run {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let run = finish(child);
            panic!(
                "{what}: still running after {limit:?}\nstderr:\n{}",
                run.stderr
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    finish(child)
}

/// Starts an import of 5 customers' 10 rows through the proxy, and waits until the proxy
/// has seen a request.
fn spawn_through_proxy(
    env: &TestEnv,
    stall: Stall,
    args: &[&str],
) -> (std::process::Child, Arc<Proxy>) {
    let (base_url, proxy) = start_proxy(env, stall);
    let mut command = env.import_command(args);
    command.env("KUSTOMER_BASE_URL", &base_url);
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while *proxy.received.lock().unwrap() == 0 {
        assert!(Instant::now() < deadline, "no request reached the proxy");
        std::thread::sleep(Duration::from_millis(5));
    }
    (child, proxy)
}

/// Nothing failed for a held-back run, and the same command, against the API let free,
/// imports every row once.
fn nothing_failed_and_the_resume_is_exact(env: &TestEnv, args: &[&str], run: &Run) {
    assert_eq!(env.rows_in_state("failed"), 0, "{}", run.stderr);
    // The held-back run went through the proxy, the resume goes straight to the sandbox
    // behind it: the same org under another address.
    let resume = [args, &["--retarget"]].concat();
    env.import(&resume).assert_code(0);
    env.assert_exactly_once(5, 10);
}

/// One SIGTERM while every request is held back by `stall`: the run ends at once (the grace
/// is long, so only the pause ending at once gets it out in time), exit 4; the pause was
/// logged when it started, as `said`.
fn sigterm_ends_a_pause_at_once(stall: Stall, said: &str) {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(5, 2));
    let args = [file.to_str().unwrap(), "--grace", "120", "--mode", "single"];
    let (child, _proxy) = spawn_through_proxy(&env, stall, &args);
    // Every worker is in the pause by now.
    std::thread::sleep(Duration::from_millis(500));
    terminate(&child);
    let run = finish_within(
        child,
        Duration::from_secs(30),
        "after one SIGTERM in a pause",
    );
    run.assert_code(4);
    assert!(run.stderr.contains(said), "{}", run.stderr);
    assert_eq!(env.rows_in_state("done"), 0, "{}", run.stderr);
    nothing_failed_and_the_resume_is_exact(&env, &args, &run);
}

#[test]
fn sigterm_ends_a_retry_after_pause_at_once() {
    sigterm_ends_a_pause_at_once(
        Stall::TooMany(vec![("retry-after", "300".into())]),
        "the API holds every request back for 5 minutes: 429 with Retry-After: 300",
    );
}

#[test]
fn sigterm_ends_a_spent_budget_pause_at_once() {
    sigterm_ends_a_pause_at_once(
        Stall::Spent(vec![
            ("x-ratelimit-limit", "100".into()),
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", "300".into()),
        ]),
        "the API holds every request back for 5 minutes: its budget is spent \
         (x-ratelimit-remaining: 0) until its reset (x-ratelimit-reset: 300)",
    );
}

/// An API that lets nothing through (`stall`) stops the run once `--max-stall` seconds have
/// passed: exit 4, the reason said, as `said`.
fn a_stall_stops_the_run(stall: Stall, max_stall: &str, said: &[&str]) {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(5, 2));
    let args = [file.to_str().unwrap(), "--mode", "single"];
    let mut stalling = args.to_vec();
    stalling.extend(["--max-stall", max_stall]);
    let (child, _proxy) = spawn_through_proxy(&env, stall, &stalling);
    let run = finish_within(child, Duration::from_secs(60), "with --max-stall");
    run.assert_code(4);
    for words in said {
        assert!(run.stderr.contains(words), "{words}\n{}", run.stderr);
    }
    let stopped =
        format!("stopped: the API let no request through for {max_stall}.0 s (--max-stall)");
    assert!(run.stderr.contains(&stopped), "{}", run.stderr);
    nothing_failed_and_the_resume_is_exact(&env, &args, &run);
}

#[test]
fn endless_429s_without_headers_are_said_and_stop_the_run_at_the_stall_limit() {
    a_stall_stops_the_run(
        Stall::TooMany(vec![]),
        "8",
        &[
            "the API has let no request through for",
            "429 with neither Retry-After nor x-ratelimit-reset",
        ],
    );
}

#[test]
fn an_absurd_reset_is_named_as_such_and_waited_on_no_longer_than_the_stall_limit() {
    a_stall_stops_the_run(
        Stall::Spent(vec![
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", "1e300".into()),
        ]),
        "3",
        &[
            "the API holds every request back for 5 minutes",
            "1e300), which is absurd",
        ],
    );
}

/// The grace ends a run whose rows have all been read, and whose requests hang: the stop
/// used to wake the planner only while rows were still coming.
#[test]
fn the_grace_ends_a_run_whose_rows_are_all_read() {
    let env = TestEnv::plain();
    env.sandbox().set_faults(FaultConfig {
        hang_after_write_rate: 1.0,
        ..FaultConfig::default()
    });
    let file = env.write("export.csv", &generated_csv(3, 1));
    let args = [file.to_str().unwrap(), "--mode", "single"];
    let child = env
        .import_command(&args)
        .args(["--timeout", "600", "--grace", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_for("3 customers", |stats| stats.customers >= 3);
    terminate(&child);
    let run = finish_within(
        child,
        Duration::from_secs(30),
        "after one SIGTERM, grace 1 s",
    );
    run.assert_code(4);
    assert!(
        run.stderr.contains("the grace period is over"),
        "{}",
        run.stderr
    );
    env.sandbox().set_faults(FaultConfig::default());
    env.import(&args).assert_code(0);
    env.assert_exactly_once(3, 3);
}
