//! The sandbox over real HTTP on 127.0.0.1: each test starts its own sandbox on an
//! ephemeral port and drives it with a small reqwest client, asserting on answers, headers,
//! `/__stats` and `/__records`. Faults use rates of 0 or 1 so outcomes are certain.

use std::time::Duration;

use kustomer_import::sandbox::{
    FaultConfig, Records, Sandbox, SandboxConfig, SandboxUser, Stats, TagRecord,
};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const TOKEN: &str = "test-key-0123";

/// A tiny client bound to one sandbox.
struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Api {
    fn new(sandbox: &Sandbox) -> Self {
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            base: sandbox.base_url(),
            token: Some(TOKEN.into()),
        }
    }

    fn with_token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_owned);
        self
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn try_post(&self, path: &str, body: &Value) -> Result<Answer, reqwest::Error> {
        let url = format!("{}{path}", self.base);
        self.send(self.client.post(url).json(body)).await
    }

    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.try_post(path, body).await.expect("POST answered")
    }

    async fn try_update(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Answer, reqwest::Error> {
        let url = format!("{}{path}", self.base);
        self.send(self.client.request(method, url).json(body)).await
    }

    async fn patch(&self, path: &str, body: &Value) -> Answer {
        let answer = self.try_update(reqwest::Method::PATCH, path, body).await;
        answer.expect("PATCH answered")
    }

    async fn put(&self, path: &str, body: &Value) -> Answer {
        let answer = self.try_update(reqwest::Method::PUT, path, body).await;
        answer.expect("PUT answered")
    }

    async fn get(&self, path: &str) -> Answer {
        let url = format!("{}{path}", self.base);
        self.send(self.client.get(url)).await.expect("GET answered")
    }

    async fn stats(&self) -> Stats {
        let url = format!("{}/__stats", self.base);
        let response = self.client.get(url).send().await.expect("stats");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("stats json")
    }

    async fn records(&self) -> Records {
        let url = format!("{}/__records", self.base);
        let response = self.client.get(url).send().await.expect("records");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("records json")
    }
}

async fn start(config: SandboxConfig) -> Sandbox {
    Sandbox::start(
        SandboxConfig {
            token: Some(TOKEN.into()),
            ..config
        },
        0,
    )
    .await
    .expect("sandbox starts")
}

fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.headers.get(name).and_then(|v| v.to_str().ok())
}

fn header_num(answer: &Answer, name: &str) -> Option<u64> {
    header(answer, name).and_then(|v| v.parse().ok())
}

fn first_error(answer: &Answer) -> &Value {
    &answer.body["errors"][0]
}

fn is_object_id(id: &Value) -> bool {
    id.as_str().is_some_and(|s| {
        s.len() == 24
            && s.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

fn stat(stats: &Stats, route: &str, status: u16) -> u64 {
    stats
        .requests
        .get(route)
        .and_then(|by_status| by_status.get(&status))
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn live_style_create_is_201_wrapped() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let body = json!({
        "name": "Ada", "externalId": "c-1",
        "emails": [{"email": "ada@example.com", "type": "work"}],
        "phones": [{"phone": "+15551234567"}],
        "company": "Engines", "tags": ["vip"]
    });
    let answer = api.post("/v1/customers", &body).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let data = &answer.body["data"];
    assert_eq!(data["type"], "customer");
    assert!(is_object_id(&data["id"]), "{}", data["id"]);
    assert_eq!(data["attributes"]["externalId"], "c-1");
    assert_eq!(data["attributes"]["emails"][0]["email"], "ada@example.com");
    assert_eq!(data["attributes"]["company"], "Engines");
    assert!(header(&answer, "x-ratelimit-limit").is_none());

    let conversation = api
        .post(
            "/v1/conversations",
            &json!({"customer": data["id"], "name": "Hello", "channel": "email", "externalId": "t-1"}),
        )
        .await;
    assert_eq!(conversation.status, StatusCode::CREATED);
    assert_eq!(conversation.body["data"]["type"], "conversation");
    assert_eq!(conversation.body["data"]["attributes"]["status"], "open");
    assert_eq!(
        conversation.body["data"]["attributes"]["customer"],
        data["id"]
    );

    let records = api.records().await;
    assert_eq!(records.customers.len(), 1);
    assert_eq!(Some(records.customers[0].id.as_str()), data["id"].as_str());
    assert_eq!(records.customers[0].external_id.as_deref(), Some("c-1"));
    assert_eq!(
        records.customers[0].extra.get("company"),
        Some(&json!("Engines"))
    );
    assert_eq!(records.conversations.len(), 1);
    assert_eq!(records.conversations[0].customer, records.customers[0].id);
    assert_eq!(sandbox.records(), records);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn spec_style_create_is_200_bare() {
    let sandbox = start(SandboxConfig {
        spec_style: true,
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let answer = api
        .post("/v1/customers", &json!({"externalId": "s-1"}))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.get("data").is_none());
    assert_eq!(answer.body["type"], "customer");
    assert!(is_object_id(&answer.body["id"]));
    assert_eq!(answer.body["attributes"]["externalId"], "s-1");

    let found = api.get("/v1/customers/externalId=s-1").await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.body["id"], answer.body["id"]);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn bad_missing_or_empty_token_is_401_and_never_echoed() {
    let sandbox = start(SandboxConfig::default()).await;
    let body = json!({"externalId": "c-1"});
    for token in [Some("wrong-key-987"), None, Some("")] {
        let api = Api::new(&sandbox).with_token(token);
        let answer = api.post("/v1/customers", &body).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(first_error(&answer)["code"], "unauthorized");
        assert_eq!(first_error(&answer)["status"], "401");
        let text = answer.body.to_string();
        assert!(!text.contains("wrong-key-987") && !text.contains(TOKEN));
    }
    assert!(sandbox.records().customers.is_empty());
    let ok = Api::new(&sandbox).post("/v1/customers", &body).await;
    assert_eq!(ok.status, StatusCode::CREATED);

    // Without a configured token any non-empty bearer token passes.
    let open = Sandbox::start(SandboxConfig::default(), 0)
        .await
        .expect("start");
    let api = Api::new(&open).with_token(Some("whatever"));
    assert_eq!(
        api.post("/v1/customers", &body).await.status,
        StatusCode::CREATED
    );
    open.shutdown().await;
    sandbox.shutdown().await;
}

#[tokio::test]
async fn invalid_bodies_are_422_with_pointers_or_400() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let answer = api
        .post(
            "/v1/customers",
            &json!({"emails": [{"email": "not-an-email"}], "phones": [{"phone": "+1555", "type": "pager"}], "color": "red"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let errors = answer.body["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut pointers: Vec<&str> = errors
        .iter()
        .filter_map(|e| e["source"]["pointer"].as_str())
        .collect();
    pointers.sort_unstable();
    assert_eq!(
        pointers,
        vec!["/color", "/emails/0/email", "/phones/0/type"]
    );
    assert!(
        errors
            .iter()
            .all(|e| e["status"] == "422" && e["code"] == "invalid")
    );

    let answer = api
        .post(
            "/v1/conversations",
            &json!({"customer": "000000000000000000000000"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_error(&answer)["source"]["pointer"], "/customer");

    let answer = api.post("/v1/conversations", &json!({"name": "x"})).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_error(&answer)["source"]["pointer"], "/customer");

    let answer = api.post("/v1/customers", &json!([1, 2])).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let url = format!("{}/v1/customers", sandbox.base_url());
    let raw = api
        .send(api.client.post(url).body("{not json"))
        .await
        .expect("answered");
    assert_eq!(raw.status, StatusCode::BAD_REQUEST);
    assert_eq!(first_error(&raw)["status"], "400");

    assert!(sandbox.records().customers.is_empty());
    let stats = sandbox.stats();
    assert_eq!(stat(&stats, "POST /v1/customers", 422), 1);
    assert_eq!(stat(&stats, "POST /v1/customers", 400), 2);
    assert_eq!(stat(&stats, "POST /v1/conversations", 422), 2);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn reused_email_is_409_case_insensitively() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let first = api
        .post(
            "/v1/customers",
            &json!({"emails": [{"email": "Ada@Example.com"}]}),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let id = first.body["data"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let again = api
        .post(
            "/v1/customers",
            &json!({"externalId": "new", "emails": [{"email": "ada@EXAMPLE.COM"}]}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let error = first_error(&again);
    assert_eq!(error["status"], "409");
    assert_eq!(error["code"], "duplicate");
    assert_eq!(
        error["detail"],
        format!("email ada@EXAMPLE.COM is already used by customer {id}")
    );
    // Phones compare by digits, externalIds exactly.
    api.post(
        "/v1/customers",
        &json!({"externalId": "p", "phones": [{"phone": "+1 (555) 000-1111"}]}),
    )
    .await;
    let phone = api
        .post(
            "/v1/customers",
            &json!({"phones": [{"phone": "15550001111"}]}),
        )
        .await;
    assert_eq!(phone.status, StatusCode::CONFLICT);
    let external = api.post("/v1/customers", &json!({"externalId": "p"})).await;
    assert_eq!(external.status, StatusCode::CONFLICT);
    assert_eq!(sandbox.records().customers.len(), 2);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn lookups_decode_the_path_and_404_when_absent() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let created = api
        .post(
            "/v1/customers",
            &json!({"externalId": "ext 1", "emails": [{"email": "A+B@x.com"}], "phones": [{"phone": "+15551234567"}]}),
        )
        .await;
    let id = created.body["data"]["id"].clone();
    for path in [
        "/v1/customers/email=a%2Bb%40x.com",
        "/v1/customers/externalId=ext%201",
        "/v1/customers/phone=%2B15551234567",
    ] {
        let found = api.get(path).await;
        assert_eq!(found.status, StatusCode::OK, "{path}");
        assert_eq!(found.body["data"]["id"], id, "{path}");
        assert_eq!(found.body["data"]["type"], "customer");
    }
    for path in [
        "/v1/customers/email=nobody%40x.com",
        "/v1/customers/externalId=ext%202",
        "/v1/conversations/externalId=t-1",
        "/v1/nothing",
    ] {
        let missing = api.get(path).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(first_error(&missing)["status"], "404");
    }

    // A known path with the wrong method is a 404 too, not a 405.
    let wrong_method = api.get("/v1/customers").await;
    assert_eq!(wrong_method.status, StatusCode::NOT_FOUND);
    assert_eq!(first_error(&wrong_method)["code"], "not_found");

    // Conversation externalIds are not unique: a repeat makes a second conversation, and
    // the lookup finds the first.
    let body = json!({"customer": id, "externalId": "t-1"});
    let a = api.post("/v1/conversations", &body).await;
    let b = api.post("/v1/conversations", &body).await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_ne!(a.body["data"]["id"], b.body["data"]["id"]);
    let found = api.get("/v1/conversations/externalId=t-1").await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.body["data"]["id"], a.body["data"]["id"]);
    assert_eq!(sandbox.records().conversations.len(), 2);

    let stats = sandbox.stats();
    assert_eq!(stat(&stats, "GET /v1/customers/{lookup}", 200), 3);
    assert_eq!(stat(&stats, "GET /v1/customers/{lookup}", 404), 2);
    assert_eq!(stat(&stats, "GET /v1/conversations/{lookup}", 404), 1);
    assert_eq!(stat(&stats, "other", 404), 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn over_budget_is_429_with_headers() {
    let sandbox = start(SandboxConfig {
        rpm: Some(2),
        rate_window: Duration::from_secs(1),
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    // Windows are fixed from server start; a slow machine could cross a boundary, so send
    // until refused rather than counting on exactly the third request.
    let mut answers = Vec::new();
    for i in 0..20 {
        let answer = api.get(&format!("/v1/customers/externalId=x{i}")).await;
        let refused = answer.status == StatusCode::TOO_MANY_REQUESTS;
        answers.push(answer);
        if refused {
            break;
        }
    }
    let refused = answers.last().expect("some answer");
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(answers.len() >= 3);
    for answer in &answers {
        assert_eq!(header_num(answer, "x-ratelimit-limit"), Some(2));
        let reset = header_num(answer, "x-ratelimit-reset");
        // Seconds until the 1 s window resets, rounded up.
        assert_eq!(reset, Some(1));
        assert!(header_num(answer, "x-ratelimit-remaining").is_some_and(|r| r <= 1));
    }
    assert_eq!(header_num(refused, "x-ratelimit-remaining"), Some(0));
    assert_eq!(header_num(refused, "retry-after"), Some(1));
    assert_eq!(first_error(refused)["status"], "429");
    // The two before the refusal were allowed in that same window.
    let before: Vec<_> = answers
        .iter()
        .rev()
        .skip(1)
        .take(2)
        .map(|a| a.status)
        .collect();
    assert_eq!(before, vec![StatusCode::NOT_FOUND, StatusCode::NOT_FOUND]);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = api.get("/v1/customers/externalId=later").await;
    assert_eq!(after.status, StatusCode::NOT_FOUND);

    // Admin routes are neither limited nor counted.
    let stats = api.stats().await;
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.requests_total as usize, answers.len() + 1);
    assert!(stats.max_requests_in_window >= 3);
    assert_eq!(stat(&stats, "GET /v1/customers/{lookup}", 429), 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn revoked_key_is_401_forever() {
    let sandbox = start(SandboxConfig {
        faults: FaultConfig {
            revoke_after: Some(2),
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let statuses = {
        let mut statuses = Vec::new();
        for i in 0..4 {
            let body = json!({ "externalId": format!("r{i}") });
            statuses.push(api.post("/v1/customers", &body).await.status);
        }
        statuses
    };
    assert_eq!(
        statuses,
        vec![
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED
        ]
    );
    assert_eq!(sandbox.stats().faults.revoked, 2);
    assert_eq!(sandbox.records().customers.len(), 2);
    sandbox.set_faults(FaultConfig::default());
    let answer = api
        .post("/v1/customers", &json!({"externalId": "r9"}))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn drop_after_write_closes_the_connection_but_keeps_the_record() {
    let sandbox = start(SandboxConfig {
        faults: FaultConfig {
            drop_after_write_rate: 1.0,
            seed: Some(7),
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let sent = api
        .try_post("/v1/customers", &json!({"externalId": "lost-1"}))
        .await;
    let error = sent.err().expect("no answer at all");
    assert!(!error.is_timeout(), "{error}");
    assert!(error.status().is_none());

    let records = api.records().await;
    assert_eq!(records.customers.len(), 1);
    assert_eq!(records.customers[0].external_id.as_deref(), Some("lost-1"));
    let stats = api.stats().await;
    assert_eq!(stats.faults.drop_after_write, 1);
    assert_eq!(stats.creates_total, 1);
    assert!(!stats.requests.contains_key("POST /v1/customers"));

    // Lookups are not writes: the reconcile path works while the fault is on.
    let found = api.get("/v1/customers/externalId=lost-1").await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(
        found.body["data"]["id"].as_str(),
        Some(records.customers[0].id.as_str())
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn fail_after_write_is_500_and_a_resend_is_a_duplicate() {
    let sandbox = start(SandboxConfig {
        faults: FaultConfig {
            fail_after_write_rate: 1.0,
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let body = json!({"externalId": "f-1", "emails": [{"email": "f@x.com"}]});
    let answer = api.post("/v1/customers", &body).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(first_error(&answer)["status"], "500");
    assert_eq!(sandbox.records().customers.len(), 1);

    let resend = api.post("/v1/customers", &body).await;
    assert_eq!(resend.status, StatusCode::CONFLICT);
    assert_eq!(resend.body["errors"].as_array().map(Vec::len), Some(2));
    let stats = sandbox.stats();
    assert_eq!(stats.faults.fail_after_write, 1);
    assert_eq!(stat(&stats, "POST /v1/customers", 500), 1);
    assert_eq!(stat(&stats, "POST /v1/customers", 409), 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn before_write_faults_write_nothing() {
    let sandbox = start(SandboxConfig {
        faults: FaultConfig {
            busy_rate: 1.0,
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let body = json!({"externalId": "b-1"});
    let busy = api.post("/v1/customers", &body).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    let lookup = api.get("/v1/customers/externalId=b-1").await;
    assert_eq!(lookup.status, StatusCode::SERVICE_UNAVAILABLE);
    sandbox.set_faults(FaultConfig {
        fail_rate: 1.0,
        ..FaultConfig::default()
    });
    let fail = api.post("/v1/customers", &body).await;
    assert_eq!(fail.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(sandbox.records().customers.is_empty());
    let stats = sandbox.stats();
    assert_eq!((stats.faults.busy, stats.faults.fail), (2, 1));
    sandbox.shutdown().await;
}

async fn wait_for_hangs(sandbox: &Sandbox, n: u64) {
    let wait = async {
        while sandbox.stats().faults.hang_after_write < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the server reached the hang");
}

#[tokio::test]
async fn hang_after_write_gives_no_answer_and_shutdown_ends_it() {
    let sandbox = start(SandboxConfig {
        faults: FaultConfig {
            hang_after_write_rate: 1.0,
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    let sent = client
        .post(format!("{}/v1/customers", sandbox.base_url()))
        .bearer_auth(TOKEN)
        .json(&json!({"externalId": "h-1"}))
        .send()
        .await;
    assert!(sent.err().is_some_and(|e| e.is_timeout()));
    // On a loaded machine the client may give up before the server wrote: wait for it.
    wait_for_hangs(&sandbox, 1).await;
    assert_eq!(sandbox.records().customers.len(), 1);

    // Another request hangs on the server side; shutdown must not wait ten minutes.
    let base = sandbox.base_url();
    let pending = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/v1/customers"))
            .bearer_auth(TOKEN)
            .json(&json!({"externalId": "h-2"}))
            .send()
            .await
    });
    wait_for_hangs(&sandbox, 2).await;
    let base = sandbox.base_url();
    tokio::time::timeout(Duration::from_secs(5), sandbox.shutdown())
        .await
        .expect("shutdown is prompt");
    let outcome = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("client released");
    assert!(outcome.expect("task").is_err());
    let after = reqwest::Client::new()
        .get(format!("{base}/__stats"))
        .send()
        .await;
    assert!(after.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
async fn stats_count_routes_statuses_and_creates() {
    let sandbox = start(SandboxConfig {
        rpm: Some(1000),
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    for i in 0..3 {
        let answer = api
            .post("/v1/customers", &json!({ "externalId": format!("s{i}") }))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED);
        assert_eq!(header_num(&answer, "x-ratelimit-limit"), Some(1000));
        assert_eq!(header_num(&answer, "x-ratelimit-remaining"), Some(999 - i));
    }
    api.post("/v1/customers", &json!({"externalId": "s0"}))
        .await;
    let unauthorized = Api::new(&sandbox).with_token(None);
    unauthorized
        .post("/v1/conversations", &json!({"customer": "x"}))
        .await;
    api.get("/v1/customers/externalId=s1").await;
    api.get("/__records").await;

    let stats = api.stats().await;
    assert_eq!(stats, sandbox.stats());
    assert_eq!(stat(&stats, "POST /v1/customers", 201), 3);
    assert_eq!(stat(&stats, "POST /v1/customers", 409), 1);
    assert_eq!(stat(&stats, "POST /v1/conversations", 401), 1);
    assert_eq!(stat(&stats, "GET /v1/customers/{lookup}", 200), 1);
    assert_eq!(stats.requests_total, 6);
    assert_eq!(stats.creates_total, 5);
    assert_eq!((stats.customers, stats.conversations), (3, 0));
    assert_eq!(stats.rate_limited, 0);
    assert_eq!(stats.max_requests_in_window, 6);
    assert_eq!(stats.faults, Default::default());

    let raw = api.get("/__stats").await;
    assert_eq!(raw.body["requests"]["POST /v1/customers"]["201"], 3);
    assert_eq!(raw.body["faults"]["drop_after_write"], 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn latency_delays_api_answers_but_not_admin_ones() {
    let sandbox = start(SandboxConfig {
        latency: Duration::from_millis(1000),
        jitter: Duration::from_millis(50),
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let started = std::time::Instant::now();
    let answer = api.get("/v1/customers/externalId=none").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(started.elapsed() >= Duration::from_millis(1000));

    // Admin routes skip the gate: no latency. Generous bound for a loaded machine.
    let started = std::time::Instant::now();
    api.stats().await;
    assert!(started.elapsed() < Duration::from_millis(1000));
    sandbox.shutdown().await;
}

/// Polls a bulk job until it is complete (at most 5 s).
async fn completed(api: &Api, id: &str) -> Answer {
    for _ in 0..100 {
        let status = api.get(&format!("/v1/bulk/{id}")).await;
        assert_eq!(status.status, StatusCode::OK);
        if status.body["data"]["attributes"]["status"] == "complete" {
            return api.get(&format!("/v1/bulk/{id}/batches")).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("bulk job {id} never completed");
}

#[tokio::test]
async fn a_bulk_job_is_queued_then_runs_each_item_as_the_single_endpoint_would() {
    let sandbox = start(SandboxConfig {
        bulk_delay: Duration::from_millis(200),
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    api.post("/v1/customers", &json!({"externalId": "taken"}))
        .await;
    let submitted = api
        .post(
            "/v1/customers/bulk",
            &json!([
                {"_clientRef": "a", "externalId": "new-1", "name": "Ada"},
                {"_clientRef": "b", "externalId": "new-2", "emails": [{"email": "nope"}]},
                {"_clientRef": "c", "externalId": "taken"}
            ]),
        )
        .await;
    assert_eq!(submitted.status, StatusCode::CREATED);
    let job = &submitted.body["data"];
    assert_eq!(job["type"], "bulk");
    assert_eq!(job["attributes"]["status"], "queued");
    let id = job["id"].as_str().unwrap().to_string();
    // Nothing is made before the delay.
    assert_eq!(api.records().await.customers.len(), 1);
    let batches = completed(&api, &id).await;
    let batch = &batches.body["data"][0]["attributes"];
    assert_eq!(batch["successCount"], 1);
    assert_eq!(batch["failureCount"], 2);
    assert!(is_object_id(&batch["objectIds"][0]));
    let results = batch["results"].as_array().unwrap();
    assert_eq!(results[0]["_clientRef"], "a");
    assert_eq!(results[0]["status"], "created");
    assert_eq!(results[0]["objectId"], batch["objectIds"][0]);
    // Errors in words, as Kustomer's bulk reference shows them: no status, no object.
    assert_eq!(results[1]["status"], "error");
    let invalid = results[1]["error"].as_str().unwrap();
    assert!(invalid.starts_with("/emails/0/email: "), "{invalid}");
    assert_eq!(
        results[2],
        json!({"_clientRef": "c", "status": "error", "error": "duplicate detected"})
    );
    assert_eq!(batch["errors"], json!([invalid, "duplicate detected"]));
    let records = api.records().await;
    assert_eq!(records.customers.len(), 2);
    assert!(
        records
            .customers
            .iter()
            .all(|c| !c.extra.contains_key("_clientRef"))
    );

    // Conversations in bulk: the customer must exist; without _clientRef, no results.
    let customer = batch["objectIds"][0].as_str().unwrap();
    let submitted = api
        .post(
            "/v1/conversations/bulk",
            &json!([{"customer": customer, "name": "Hi"}, {"customer": "nobody", "name": "Lost"}]),
        )
        .await;
    let id = submitted.body["data"]["id"].as_str().unwrap().to_string();
    let batches = completed(&api, &id).await;
    let batch = &batches.body["data"][0]["attributes"];
    assert_eq!(
        (batch["successCount"].clone(), batch["failureCount"].clone()),
        (json!(1), json!(1))
    );
    assert!(batch.get("results").is_none());
    assert_eq!(api.records().await.conversations.len(), 1);
    // A bulk request is one request against the budget, as is each poll.
    let stats = api.stats().await;
    assert_eq!(stat(&stats, "POST /v1/customers/bulk", 201), 1);
    assert_eq!(stat(&stats, "POST /v1/conversations/bulk", 201), 1);
}

#[tokio::test]
async fn a_companies_bulk_job_makes_each_company_as_the_single_create_would() {
    // The docs ("Users, tags, companies"): `name` 3 to 255 characters, `externalId`, bulk at
    // /v1/companies/bulk; a bulk result's error is a string.
    let sandbox = start(SandboxConfig {
        bulk_delay: Duration::from_millis(100),
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let taken = api
        .post(
            "/v1/companies",
            &json!({"name": "Analytical Engines", "externalId": "org-1"}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CREATED);
    let submitted = api
        .post(
            "/v1/companies/bulk",
            &json!([
                {"_clientRef": "a", "name": "Difference Engines", "externalId": "org-2"},
                {"_clientRef": "b", "name": "Ab", "externalId": "org-3"},
                {"_clientRef": "c", "name": "Engines again", "externalId": "org-1"}
            ]),
        )
        .await;
    assert_eq!(submitted.status, StatusCode::CREATED);
    let id = submitted.body["data"]["id"].as_str().unwrap().to_string();
    let batches = completed(&api, &id).await;
    let batch = &batches.body["data"][0]["attributes"];
    assert_eq!(
        (batch["successCount"].clone(), batch["failureCount"].clone()),
        (json!(1), json!(2))
    );
    let results = batch["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "created");
    assert_eq!(results[0]["objectId"], batch["objectIds"][0]);
    assert_eq!(results[1]["status"], "error");
    assert!(
        results[1]["error"].as_str().unwrap().starts_with("/name: "),
        "{}",
        results[1]
    );
    assert_eq!(
        results[2],
        json!({"_clientRef": "c", "status": "error", "error": "duplicate detected"})
    );
    let found = api.get("/v1/companies?externalId=org-2").await;
    assert_eq!(found.body["data"][0]["id"], batch["objectIds"][0]);
    assert_eq!(api.records().await.companies.len(), 2);
    assert_eq!(stat(&api.stats().await, "POST /v1/companies/bulk", 201), 1);
}

#[tokio::test]
async fn a_large_bulk_job_runs_through_running_and_answers_in_batches() {
    let sandbox = start(SandboxConfig {
        bulk_delay: Duration::from_millis(600),
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let items: Vec<_> = (0..100)
        .map(|i| json!({"_clientRef": format!("r{i}"), "externalId": format!("big-{i}")}))
        .collect();
    let submitted = api.post("/v1/customers/bulk", &json!(items)).await;
    let id = submitted.body["data"]["id"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.last() != Some(&"complete".to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "statuses seen: {seen:?}"
        );
        let status = api.get(&format!("/v1/bulk/{id}")).await;
        let status = status.body["data"]["attributes"]["status"]
            .as_str()
            .unwrap()
            .to_string();
        if seen.last() != Some(&status) {
            seen.push(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, ["queued", "running", "complete"]);
    let batches = api.get(&format!("/v1/bulk/{id}/batches")).await;
    let batches = batches.body["data"].as_array().unwrap().clone();
    let sizes: Vec<u64> = batches
        .iter()
        .map(|b| b["attributes"]["successCount"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [50, 50]);
    assert_eq!(batches[1]["attributes"]["results"][49]["_clientRef"], "r99");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn bulk_requests_can_be_refused_whole_or_not_served() {
    let strict = start(SandboxConfig {
        bulk_refuse_invalid: true,
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&strict);
    let refused = api
        .post(
            "/v1/customers/bulk",
            &json!([{"externalId": "ok"}, {"externalId": "bad", "emails": [{"email": "nope"}]}]),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let detail = refused.body["errors"][0]["detail"].as_str().unwrap();
    assert!(detail.starts_with("item 1: /emails/0/email"), "{detail}");
    assert!(api.records().await.customers.is_empty());
    strict.shutdown().await;

    let without = start(SandboxConfig {
        without_bulk: true,
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&without);
    let answer = api
        .post("/v1/customers/bulk", &json!([{"externalId": "x"}]))
        .await;
    assert!(
        matches!(answer.status.as_u16(), 404 | 405),
        "{}",
        answer.status
    );
    assert!(api.records().await.customers.is_empty());
    without.shutdown().await;
}

#[tokio::test]
async fn a_bulk_request_that_is_not_1_to_100_objects_with_unique_refs_is_refused_whole() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"externalId": format!("x{i}")}))
        .collect();
    for body in [
        json!({"externalId": "not-a-list"}),
        json!([]),
        Value::Array(many),
        json!([1]),
        json!([{"_clientRef": "same"}, {"_clientRef": "same"}]),
    ] {
        let answer = api.post("/v1/customers/bulk", &body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(
        api.get("/v1/bulk/bulk99999999").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_bulk_job_whose_answer_is_lost_still_runs() {
    let sandbox = start(SandboxConfig {
        bulk_delay: Duration::from_millis(50),
        faults: FaultConfig {
            fail_after_write_rate: 1.0,
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let answer = api
        .post("/v1/customers/bulk", &json!([{"externalId": "lost-1"}]))
        .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(api.records().await.customers.len(), 1);
}

/// An answer body as Kustomer's docs show it (`tests/fixtures/kustomer-docs/`).
fn documented(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/kustomer-docs/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&path).expect(&path)).expect(&path)
}

/// Whether `answer` has the shape of the documented `example`: every field the example
/// has, with the same JSON type, recursively (more fields are allowed); every element of
/// an array shaped like one of the example's elements. Where it differs, the path to it.
fn shape_differs(answer: &Value, example: &Value, path: &str) -> Option<String> {
    match (answer, example) {
        (Value::Object(answer), Value::Object(example)) => {
            example.iter().find_map(|(key, value)| {
                let path = format!("{path}/{key}");
                match answer.get(key) {
                    Some(field) => shape_differs(field, value, &path),
                    None => Some(format!("{path} is missing")),
                }
            })
        }
        (Value::Array(answer), Value::Array(example)) => {
            answer.iter().enumerate().find_map(|(index, element)| {
                let path = format!("{path}/{index}");
                let fits = example
                    .iter()
                    .any(|e| shape_differs(element, e, &path).is_none());
                (!fits && !example.is_empty())
                    .then(|| format!("{path}: {element} fits no documented element"))
            })
        }
        (Value::String(_), Value::String(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Null, Value::Null) => None,
        _ => Some(format!("{path}: {answer} where the docs show {example}")),
    }
}

#[tokio::test]
async fn bulk_answers_have_the_shapes_kustomers_docs_show() {
    let sandbox = start(SandboxConfig {
        bulk_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    api.post("/v1/customers", &json!({"externalId": "crm-2"}))
        .await;
    let submitted = api
        .post(
            "/v1/customers/bulk",
            &json!([
                {"_clientRef": "crm-001", "externalId": "crm-1"},
                {"_clientRef": "crm-002", "externalId": "crm-2"}
            ]),
        )
        .await;
    assert_eq!(submitted.status, StatusCode::CREATED);
    assert_eq!(
        shape_differs(&submitted.body, &documented("bulk-submitted.json"), ""),
        None
    );
    let id = submitted.body["data"]["id"].as_str().unwrap().to_string();
    let batches = completed(&api, &id).await;
    let status = api.get(&format!("/v1/bulk/{id}")).await;
    assert_eq!(
        shape_differs(&status.body, &documented("bulk-complete.json"), ""),
        None
    );
    assert_eq!(
        shape_differs(&batches.body, &documented("bulk-batches.json"), ""),
        None
    );
    // The reference's failed item, to the byte.
    assert_eq!(
        batches.body["data"][0]["attributes"]["results"][1],
        documented("bulk-batches.json")["data"][0]["attributes"]["results"][1]
    );
    // And the single endpoints' error bodies, in the docs' live spelling.
    let refused = api
        .post("/v1/customers", &json!({"emails": [{"email": "nope"}]}))
        .await;
    assert_eq!(
        shape_differs(&refused.body, &documented("errors-live.json"), ""),
        None
    );
    sandbox.shutdown().await;
}

/// A customer and a conversation of it; the conversation's id.
async fn conversation(api: &Api, key: &str) -> String {
    let customer = api
        .post(
            "/v1/customers",
            &json!({"externalId": format!("cust-{key}")}),
        )
        .await;
    let customer = customer.body["data"]["id"].as_str().unwrap().to_string();
    let answer = api
        .post(
            "/v1/conversations",
            &json!({"customer": customer, "externalId": format!("conv-{key}")}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    answer.body["data"]["id"].as_str().unwrap().to_string()
}

/// A message as the docs' "Messages and notes" describe one.
fn message(external_id: &str) -> Value {
    json!({
        "channel": "email", "app": "kustomer-import", "direction": "in",
        "preview": "Where is my order?", "subject": "Order 1001", "externalId": external_id,
        "sentAt": "2024-01-31T12:00:00Z", "importedAt": "2024-06-01T00:00:00Z",
        "status": "received", "meta": {"from": "ada@example.com", "to": ["help@acme.com"]},
        "lang": "en", "attachments": [], "auto": false
    })
}

#[tokio::test]
async fn a_message_is_made_on_its_conversation_and_found_by_its_externalid() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let id = conversation(&api, "1").await;
    let made = api
        .post(
            &format!("/v1/conversations/{id}/messages"),
            &message("z-1/a b"),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED);
    let data = &made.body["data"];
    assert_eq!(data["type"], "message");
    assert!(is_object_id(&data["id"]));
    assert_eq!(data["attributes"]["externalId"], "z-1/a b");
    assert_eq!(
        data["relationships"]["conversation"]["data"]["id"],
        id.as_str()
    );

    // The lookup decodes the path; the spec's lower-case `externalid` only.
    let found = api.get("/v1/messages/externalid=z-1%2Fa%20b").await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.body["data"]["id"], data["id"]);
    for absent in [
        "/v1/messages/externalid=z-2",
        "/v1/messages/externalId=z-1%2Fa%20b",
    ] {
        assert_eq!(
            api.get(absent).await.status,
            StatusCode::NOT_FOUND,
            "{absent}"
        );
    }
    // A repeated externalId is not refused: a blind re-send duplicates.
    let again = api
        .post(
            &format!("/v1/conversations/{id}/messages"),
            &message("z-1/a b"),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    let found = api.get("/v1/messages/externalid=z-1%2Fa%20b").await;
    assert_eq!(
        found.body["data"]["id"], data["id"],
        "the first one is found"
    );

    // POST /v1/messages needs its conversation and a direction.
    let mut body = message("z-3");
    body["conversation"] = json!(id);
    assert_eq!(
        api.post("/v1/messages", &body).await.status,
        StatusCode::CREATED
    );
    let refused = api
        .post("/v1/messages", &json!({"channel": "sms", "app": "x"}))
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut pointers: Vec<_> = refused.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"]["pointer"].as_str().unwrap().to_string())
        .collect();
    pointers.sort();
    assert_eq!(pointers, ["/conversation", "/direction"]);

    let records = sandbox.records();
    let thread = records.thread(&id);
    assert_eq!(thread.len(), 3);
    assert_eq!(thread[0].external_id.as_deref(), Some("z-1/a b"));
    assert_eq!(thread[0].text(), Some("Where is my order?"));
    assert_eq!(thread[2].external_id.as_deref(), Some("z-3"));
    assert_eq!(
        api.records().await,
        records,
        "/__records shows the same threads"
    );
    assert_eq!(api.stats().await.messages, 3);
}

#[tokio::test]
async fn a_message_for_a_missing_conversation_is_404_and_bad_fields_are_422() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let missing = api
        .post(
            "/v1/conversations/0123456789abcdef01234567/messages",
            &message("m"),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let mut body = message("m");
    body["conversation"] = json!("0123456789abcdef01234567");
    let missing = api.post("/v1/messages", &body).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_error(&missing)["source"]["pointer"], "/conversation");

    let id = conversation(&api, "1").await;
    let path = format!("/v1/conversations/{id}/messages");
    for (field, bad) in [
        ("channel", json!("pigeon")),
        ("direction", json!("sideways")),
        ("status", json!("read")),
        ("sentAt", json!("2024-01-31 12:00")),
        ("importedAt", json!("2024-01-31T12:00:00")),
        ("auto", json!("yes")),
        ("meta", json!([])),
        ("externalId", json!("")),
        ("colour", json!("red")),
    ] {
        let mut body = message("m");
        body[field] = bad;
        let answer = api.post(&path, &body).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert_eq!(
            first_error(&answer)["source"]["pointer"],
            format!("/{field}")
        );
    }
    let answer = api
        .post(&path, &json!({"preview": "no channel, no app"}))
        .await;
    assert_eq!(answer.body["errors"].as_array().map(Vec::len), Some(2));
    // A note needs a body that says something.
    for body in [
        json!({}),
        json!({"body": ""}),
        json!({"body": "x".repeat(10_241)}),
    ] {
        let answer = api
            .post(&format!("/v1/conversations/{id}/notes"), &body)
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(first_error(&answer)["source"]["pointer"], "/body");
    }
    assert!(sandbox.records().thread(&id).is_empty());
}

#[tokio::test]
async fn created_and_modified_fields_are_kept_only_for_an_org_admin_key() {
    // The docs: setting createdAt/createdBy/modifiedAt/modifiedBy needs org.admin;
    // "otherwise the key's machine user and the current time are used": taken, the body's
    // values not kept.
    let mut body = message("m");
    body["createdAt"] = json!("2024-01-31T12:00:00Z");
    body["modifiedAt"] = json!("2024-02-01T12:00:00Z");
    let note = json!({"body": "checked", "createdBy": "0123456789abcdef01234567",
                      "modifiedBy": "0123456789abcdef01234567"});
    for org_admin in [false, true] {
        let sandbox = start(SandboxConfig {
            org_admin,
            users: vec![SandboxUser::new(
                "0123456789abcdef01234567",
                "agent@example.com",
            )],
            ..SandboxConfig::default()
        })
        .await;
        let api = Api::new(&sandbox);
        let id = conversation(&api, "1").await;
        let path = format!("/v1/conversations/{id}/messages");
        assert_eq!(api.post(&path, &body).await.status, StatusCode::CREATED);
        let made = api
            .post(&format!("/v1/conversations/{id}/notes"), &note)
            .await;
        assert_eq!(made.status, StatusCode::CREATED);
        let records = sandbox.records();
        let thread = records.thread(&id);
        assert_eq!(thread.len(), 2);
        assert_eq!(thread[0].body.contains_key("createdAt"), org_admin);
        assert_eq!(thread[0].body.contains_key("modifiedAt"), org_admin);
        assert_eq!(thread[1].body.contains_key("createdBy"), org_admin);
        assert_eq!(thread[1].body.contains_key("modifiedBy"), org_admin);
        sandbox.shutdown().await;
    }
}

#[tokio::test]
async fn with_org_admin_a_created_by_that_names_no_user_is_refused_and_users_are_found_by_email() {
    let sandbox = start(SandboxConfig {
        org_admin: true,
        users: vec![SandboxUser::new("u-ann", "ann@example.com")],
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let found = api.get("/v1/users?email=Ann%40example.com").await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.body["data"][0]["id"], "u-ann");
    let none = api.get("/v1/users?email=dee%40example.com").await;
    assert_eq!(none.body["data"], json!([]));
    let combined = api.get("/v1/users?email=ann%40example.com&name=Ann").await;
    assert_eq!(combined.status, StatusCode::BAD_REQUEST);
    let id = conversation(&api, "1").await;
    let note = |author: &str| json!({"body": "checked", "createdBy": author});
    let path = format!("/v1/conversations/{id}/notes");
    assert_eq!(
        api.post(&path, &note("u-ann")).await.status,
        StatusCode::CREATED
    );
    let refused = api.post(&path, &note("ann@example.com")).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(sandbox.records().thread(&id).len(), 1);
    assert_eq!(sandbox.stats().invitations, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_message_with_a_custom_attribute_the_org_does_not_define_is_refused() {
    let sandbox = start(SandboxConfig {
        custom_attributes: Some(vec!["tierStr".into()]),
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let id = conversation(&api, "1").await;
    let path = format!("/v1/conversations/{id}/messages");
    let mut body = message("m1");
    body["custom"] = json!({"tierStr": "gold"});
    assert_eq!(api.post(&path, &body).await.status, StatusCode::CREATED);
    let mut body = message("m2");
    body["custom"] = json!({"levelStr": "gold"});
    let answer = api.post(&path, &body).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        first_error(&answer)["source"]["pointer"],
        "/custom/levelStr"
    );
    assert_eq!(sandbox.records().thread(&id).len(), 1);
}

#[tokio::test]
async fn notes_are_listed_page_by_page_with_their_external_ids() {
    let sandbox = start(SandboxConfig {
        per_customer_limit: None,
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let id = conversation(&api, "1").await;
    let other = conversation(&api, "2").await;
    for i in 0..5 {
        let note = json!({"body": format!("note {i}"), "externalId": format!("n-{i}"),
            "userMentions": [{"user": "0123456789abcdef01234567"}], "attachments": [],
            "importedAt": "2024-06-01T00:00:00Z"});
        let made = api
            .post(&format!("/v1/conversations/{id}/notes"), &note)
            .await;
        assert_eq!(made.status, StatusCode::CREATED);
        assert_eq!(made.body["data"]["type"], "note");
    }
    api.post(
        &format!("/v1/conversations/{other}/notes"),
        &json!({"body": "elsewhere"}),
    )
    .await;
    api.post(&format!("/v1/conversations/{id}/messages"), &message("m"))
        .await;

    let all = api.get(&format!("/v1/conversations/{id}/notes")).await;
    assert_eq!(all.status, StatusCode::OK);
    let listed: Vec<_> = all.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["attributes"]["externalId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        ["n-0", "n-1", "n-2", "n-3", "n-4"],
        "notes only, oldest first"
    );
    assert_eq!(all.body["links"]["next"], Value::Null);

    let first = api
        .get(&format!("/v1/conversations/{id}/notes?pageSize=2"))
        .await;
    assert_eq!(first.body["data"].as_array().map(Vec::len), Some(2));
    let next = first.body["links"]["next"].as_str().unwrap().to_string();
    assert_eq!(
        next,
        format!("/v1/conversations/{id}/notes?page=2&pageSize=2")
    );
    let last = api
        .get(&format!("/v1/conversations/{id}/notes?page=3&pageSize=2"))
        .await;
    assert_eq!(last.body["data"][0]["attributes"]["externalId"], "n-4");
    assert_eq!(last.body["links"]["next"], Value::Null);
    assert_eq!(
        api.get(&format!("/v1/conversations/{id}/notes?pageSize=500"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.get("/v1/conversations/0123456789abcdef01234567/notes")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let thread = sandbox.records().thread(&id).to_vec();
    let kinds: Vec<_> = thread.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds.last(),
        Some(&kustomer_import::sandbox::ThreadKind::Message)
    );
    assert_eq!(thread[0].text(), Some("note 0"));
}

#[tokio::test]
async fn a_customer_gets_120_messages_a_window_unless_imported_and_120_notes_in_any_case() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let id = conversation(&api, "1").await;
    let messages = format!("/v1/conversations/{id}/messages");
    let notes = format!("/v1/conversations/{id}/notes");
    let mut live = message("m");
    live.as_object_mut().unwrap().remove("importedAt");
    for i in 0..120 {
        let answer = api.post(&messages, &live).await;
        assert_eq!(answer.status, StatusCode::CREATED, "message {i}");
    }
    let limited = api.post(&messages, &live).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(header_num(&limited, "retry-after").is_some_and(|s| s >= 1));
    // Imported messages are exempt; notes are counted on their own, with no exemption.
    assert_eq!(
        api.post(&messages, &message("old")).await.status,
        StatusCode::CREATED
    );
    let note = json!({"body": "n", "importedAt": "2024-06-01T00:00:00Z"});
    for i in 0..120 {
        assert_eq!(
            api.post(&notes, &note).await.status,
            StatusCode::CREATED,
            "note {i}"
        );
    }
    assert_eq!(
        api.post(&notes, &note).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another customer has a budget of its own.
    let other = conversation(&api, "2").await;
    let answer = api
        .post(&format!("/v1/conversations/{other}/messages"), &live)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let stats = api.stats().await;
    assert_eq!(
        (stats.messages, stats.notes, stats.customer_limited),
        (122, 120, 2)
    );
    assert_eq!(stats.rate_limited, 2);
}

#[tokio::test]
async fn bulk_messages_and_notes_answer_by_client_ref_with_errors_in_words() {
    let sandbox = start(SandboxConfig {
        bulk_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let id = conversation(&api, "1").await;
    let item = |reference: &str, external_id: &str| {
        let mut body = message(external_id);
        body["conversation"] = json!(id);
        body["_clientRef"] = json!(reference);
        body
    };
    let mut lost = item("r-3", "m-3");
    lost["conversation"] = json!("0123456789abcdef01234567");
    let mut bad = item("r-2", "m-2");
    bad["channel"] = json!("pigeon");
    let submitted = api
        .post("/v1/messages/bulk", &json!([item("r-1", "m-1"), bad, lost]))
        .await;
    assert_eq!(
        submitted.status,
        StatusCode::OK,
        "the message bulk spec says 200"
    );
    assert_eq!(
        shape_differs(&submitted.body, &documented("bulk-submitted.json"), ""),
        None
    );
    let job = submitted.body["data"]["id"].as_str().unwrap().to_string();
    let batches = completed(&api, &job).await;
    assert_eq!(
        shape_differs(&batches.body, &documented("bulk-batches.json"), ""),
        None
    );
    let results = &batches.body["data"][0]["attributes"]["results"];
    assert_eq!(results[0]["_clientRef"], "r-1");
    assert_eq!(results[0]["status"], "created");
    for (index, pointer) in [(1, "/channel: "), (2, "/conversation: ")] {
        assert_eq!(results[index]["status"], "error");
        let words = results[index]["error"].as_str().expect("an error in words");
        assert!(words.starts_with(pointer), "{words}");
    }
    let thread = sandbox.records().thread(&id).to_vec();
    assert_eq!(thread.len(), 1);
    assert_eq!(results[0]["objectId"], thread[0].id.as_str());
    assert!(!thread[0].body.contains_key("_clientRef"));

    let notes = json!([
        {"_clientRef": "a", "conversation": id, "body": "first", "externalId": "n-1"},
        {"_clientRef": "b", "conversation": id, "body": ""}
    ]);
    let submitted = api.post("/v1/notes/bulk", &notes).await;
    assert_eq!(submitted.status, StatusCode::CREATED);
    let job = submitted.body["data"]["id"].as_str().unwrap().to_string();
    let batches = completed(&api, &job).await;
    let batch = &batches.body["data"][0]["attributes"];
    assert_eq!(
        (batch["successCount"].clone(), batch["failureCount"].clone()),
        (json!(1), json!(1))
    );
    assert!(
        batch["results"][1]["error"]
            .as_str()
            .unwrap()
            .starts_with("/body: ")
    );
    let thread = sandbox.records().thread(&id).to_vec();
    assert_eq!(thread.len(), 2);
    assert_eq!(thread[1].external_id.as_deref(), Some("n-1"));
}

#[tokio::test]
async fn faults_strike_message_and_note_creates_as_they_do_conversations() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let id = conversation(&api, "1").await;
    sandbox.set_faults(FaultConfig {
        fail_after_write_rate: 1.0,
        ..FaultConfig::default()
    });
    let answer = api
        .post(&format!("/v1/conversations/{id}/messages"), &message("m"))
        .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    let answer = api
        .post(
            &format!("/v1/conversations/{id}/notes"),
            &json!({"body": "n"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        sandbox.records().thread(&id).len(),
        2,
        "written before the 500"
    );
    sandbox.set_faults(FaultConfig {
        busy_rate: 1.0,
        ..FaultConfig::default()
    });
    let answer = api
        .post(
            &format!("/v1/conversations/{id}/notes"),
            &json!({"body": "n"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        sandbox.records().thread(&id).len(),
        2,
        "nothing written before a 503"
    );
    sandbox.set_faults(FaultConfig {
        drop_after_write_rate: 1.0,
        ..FaultConfig::default()
    });
    let dropped = api
        .try_post(
            &format!("/v1/conversations/{id}/messages"),
            &message("lost"),
        )
        .await;
    assert!(dropped.is_err(), "no answer at all");
    assert_eq!(sandbox.records().thread(&id).len(), 3);
    let stats = api.stats().await;
    assert_eq!(stats.faults.fail_after_write, 2);
    assert_eq!(stats.faults.drop_after_write, 1);
}

#[tokio::test]
async fn threads_survive_a_restart_on_the_records_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = || SandboxConfig {
        records: Some(dir.path().join("records.jsonl")),
        ..SandboxConfig::default()
    };
    let sandbox = start(config()).await;
    let api = Api::new(&sandbox);
    let id = conversation(&api, "1").await;
    api.post(&format!("/v1/conversations/{id}/messages"), &message("m-1"))
        .await;
    api.post(
        &format!("/v1/conversations/{id}/notes"),
        &json!({"body": "n", "externalId": "n-1"}),
    )
    .await;
    let before = sandbox.records();
    sandbox.shutdown().await;

    let sandbox = start(config()).await;
    let api = Api::new(&sandbox);
    assert_eq!(sandbox.records(), before);
    let found = api.get("/v1/messages/externalid=m-1").await;
    assert_eq!(found.body["data"]["id"], before.thread(&id)[0].id.as_str());
    let listed = api.get(&format!("/v1/conversations/{id}/notes")).await;
    assert_eq!(listed.body["data"][0]["attributes"]["externalId"], "n-1");
}

/// A customer as the docs' "Customers" section describes one (a company id, typed emails
/// and phones in E.164, externalIds, tags, a custom attribute with its type suffix).
fn documented_customer(key: &str) -> Value {
    json!({
        "name": "Ada Lovelace", "externalId": format!("crm-{key}"),
        "emails": [{"email": format!("ada-{key}@example.com"), "type": "work"}],
        "phones": [{"phone": "+15551234567", "type": "mobile"}],
        "company": "5f2a0c2e9b3d4e5f60718200",
        "externalIds": [{"externalId": format!("zd-{key}")}],
        "importedAt": "2024-06-01T00:00:00Z", "createdAt": "2019-03-04T10:00:00Z",
        "tags": ["vip"], "custom": {"tierStr": "gold"}
    })
}

/// Creates a customer from `body`; its id.
async fn customer_id(api: &Api, body: &Value) -> String {
    let answer = api.post("/v1/customers", body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    answer.body["data"]["id"].as_str().unwrap().to_string()
}

/// The customer held under `id`, as `/__records` shows it, as one JSON object (its `extra`
/// fields at the top, as the API's attributes show them).
async fn held_customer(api: &Api, id: &str) -> Value {
    let records = api.records().await;
    let record = records.customers.iter().find(|c| c.id == id);
    let mut held = serde_json::to_value(record.expect("held")).unwrap();
    if let Some(Value::Object(extra)) = held.as_object_mut().and_then(|h| h.remove("extra")) {
        held.as_object_mut().unwrap().extend(extra);
    }
    held
}

#[tokio::test]
async fn a_patch_merges_the_fields_it_gives_and_omitting_company_unlinks_it() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let id = customer_id(&api, &documented_customer("1")).await;
    let path = format!("/v1/customers/{id}");
    let company = "5f2a0c2e9b3d4e5f60718200";
    let answer = api
        .patch(&path, &json!({"name": "Ada King", "company": company}))
        .await;
    // Answered as a create is, but 200: the live API's wrapped object.
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let data = &answer.body["data"];
    assert_eq!(
        (data["type"].clone(), data["id"].clone()),
        (json!("customer"), json!(id))
    );
    assert_eq!(data["attributes"]["name"], "Ada King");
    assert_eq!(
        data["attributes"]["emails"][0]["email"],
        "ada-1@example.com"
    );
    let updated_at = data["attributes"]["updatedAt"]
        .as_str()
        .unwrap()
        .to_string();
    let held = held_customer(&api, &id).await;
    assert_eq!(held["name"], "Ada King");
    assert_eq!(held["company"], company);
    assert_eq!(held["createdAt"], "2019-03-04T10:00:00Z", "createdAt kept");
    assert_eq!(
        held["tags"],
        json!(["vip"]),
        "what the patch did not give is kept"
    );

    // An update that omits company unlinks the customer from it (the docs, "Updates").
    let answer = api.patch(&path, &json!({"tags": ["vip", "late"]})).await;
    assert_eq!(answer.status, StatusCode::OK);
    let held = held_customer(&api, &id).await;
    assert!(held.get("company").is_none(), "{held}");
    assert_eq!(held["name"], "Ada King");
    assert_eq!(held["tags"], json!(["vip", "late"]));
    assert!(
        held["updatedAt"].as_str().unwrap() > updated_at.as_str(),
        "advanced"
    );
    let stats = api.stats().await;
    assert_eq!((stats.customers_updated, stats.updates_total), (2, 2));
    assert_eq!(stat(&stats, "PATCH /v1/customers/{lookup}", 200), 2);
    assert_eq!((stats.creates_total, stats.customers), (1, 1));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_put_merges_with_replace_false_and_replaces_with_replace_true_or_without_replace() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let id = customer_id(&api, &documented_customer("1")).await;
    let path = format!("/v1/customers/{id}");
    let merged = api
        .put(
            &format!("{path}?replace=false"),
            &json!({"name": "Ada King", "company": "c-2"}),
        )
        .await;
    assert_eq!(merged.status, StatusCode::OK, "{}", merged.body);
    let held = held_customer(&api, &id).await;
    assert_eq!(
        (held["name"].clone(), held["company"].clone()),
        (json!("Ada King"), json!("c-2"))
    );
    assert_eq!(held["externalId"], "crm-1");
    assert_eq!(held["phones"][0]["phone"], "+15551234567");

    let replaced = api
        .put(
            &format!("{path}?replace=true"),
            &json!({"externalId": "crm-1", "name": "A. K."}),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK);
    let held = held_customer(&api, &id).await;
    assert_eq!(held["name"], "A. K.");
    assert_eq!(
        held["emails"],
        json!([]),
        "a replace drops what it does not give"
    );
    assert!(
        held.get("tags").is_none() && held.get("custom").is_none(),
        "{held}"
    );
    assert_eq!(
        held["createdAt"], "2019-03-04T10:00:00Z",
        "but keeps createdAt"
    );
    // Its old email is free for another customer now.
    customer_id(&api, &json!({"emails": [{"email": "ada-1@example.com"}]})).await;

    // A PUT that does not say replace replaces (the strict reading: the docs do not say).
    let bare = api.put(&path, &json!({"name": "Only a name"})).await;
    assert_eq!(bare.status, StatusCode::OK);
    let held = held_customer(&api, &id).await;
    assert_eq!(held["name"], "Only a name");
    assert!(held.get("externalId").is_none(), "{held}");
    assert_eq!(
        api.get("/v1/customers/externalId=crm-1").await.status,
        StatusCode::NOT_FOUND
    );
    let bad = api.put(&format!("{path}?replace=yes"), &json!({})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let patch_with_replace = api
        .patch(&format!("{path}?replace=false"), &json!({}))
        .await;
    assert_eq!(patch_with_replace.status, StatusCode::BAD_REQUEST);
    assert_eq!(api.stats().await.customers_updated, 3);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_spec_style_sandbox_answers_an_update_200_bare() {
    let sandbox = start(SandboxConfig {
        spec_style: true,
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let created = api.post("/v1/customers", &json!({"name": "Ada"})).await;
    let id = created.body["id"].as_str().unwrap().to_string();
    let answer = api
        .patch(&format!("/v1/customers/{id}"), &json!({"name": "Ada King"}))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["type"], "customer");
    assert_eq!(answer.body["id"], id.as_str());
    assert_eq!(answer.body["attributes"]["name"], "Ada King");
    assert!(answer.body.get("data").is_none());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_conversation_update_replaces_tags_whole_and_keeps_its_customer() {
    // A conversation's tags are ids of the org's tags.
    let tags = ["tag-a", "tag-b", "tag-c"].map(|id| TagRecord::new(id, &id.replace('-', " ")));
    let sandbox = start(SandboxConfig {
        tags: tags.to_vec(),
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let customer = customer_id(&api, &json!({"externalId": "c-1"})).await;
    let body = json!({
        "customer": customer, "name": "Order 1001", "channel": "email", "status": "open",
        "externalId": "T-1", "importedAt": "2024-06-01T00:00:00Z",
        "createdAt": "2024-01-31T12:00:00Z", "tags": ["tag-a", "tag-b"], "priority": 2,
        "direction": "in"
    });
    let id = api.post("/v1/conversations", &body).await.body["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/conversations/{id}");
    let answer = api
        .patch(&path, &json!({"status": "done", "tags": ["tag-c"]}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["data"]["type"], "conversation");
    assert_eq!(
        answer.body["data"]["relationships"]["customer"]["data"]["id"],
        customer.as_str()
    );
    let held = &api.records().await.conversations[0];
    assert_eq!(held.status.as_deref(), Some("done"));
    assert_eq!(
        held.extra["tags"],
        json!(["tag-c"]),
        "tags replace the whole list"
    );
    assert_eq!(held.name.as_deref(), Some("Order 1001"));
    assert_eq!(held.extra["priority"], 2);
    assert!(held.updated_at.is_some());

    let merged = api
        .put(&format!("{path}?replace=false"), &json!({"priority": 4}))
        .await;
    assert_eq!(merged.status, StatusCode::OK);
    assert_eq!(
        api.records().await.conversations[0].status.as_deref(),
        Some("done")
    );
    // A replace is a whole record: it names its customer, as a create does.
    let without_customer = api.put(&path, &json!({"name": "Order 1001"})).await;
    assert_eq!(without_customer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        first_error(&without_customer)["source"]["pointer"],
        "/customer"
    );
    let replaced = api
        .put(&path, &json!({"customer": customer, "name": "Again"}))
        .await;
    assert_eq!(replaced.status, StatusCode::OK);
    let held = &api.records().await.conversations[0];
    assert_eq!(
        held.status.as_deref(),
        Some("open"),
        "as a create without status"
    );
    assert!(held.external_id.is_none() && !held.extra.contains_key("tags"));
    assert_eq!(held.extra["createdAt"], "2024-01-31T12:00:00Z");
    // An update does not move a conversation to another customer, nor change createdAt.
    let other = customer_id(&api, &json!({"externalId": "c-2"})).await;
    let moved = api.patch(&path, &json!({"customer": other})).await;
    assert_eq!(moved.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_error(&moved)["source"]["pointer"], "/customer");
    let redated = api
        .patch(&path, &json!({"createdAt": "2020-01-01T00:00:00Z"}))
        .await;
    assert_eq!(first_error(&redated)["source"]["pointer"], "/createdAt");
    let stats = api.stats().await;
    assert_eq!((stats.conversations_updated, stats.updates_total), (3, 6));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn updates_are_404_for_an_unknown_id_409_for_a_taken_email_and_422_for_a_bad_field() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let ada = customer_id(&api, &documented_customer("1")).await;
    // Bob as Ada, without her phone (it is unique too).
    let mut bob = documented_customer("2");
    bob.as_object_mut().unwrap().remove("phones");
    let bob = customer_id(&api, &bob).await;
    let before = api.records().await;
    for path in [
        "/v1/customers/5f2a0c2e9b3d4e5f60718299",
        "/v1/conversations/5f2a0c2e9b3d4e5f60718299",
        "/v1/messages/5f2a0c2e9b3d4e5f60718299",
        "/v1/notes/5f2a0c2e9b3d4e5f60718299",
    ] {
        let answer = api.patch(path, &json!({})).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(first_error(&answer)["status"], "404");
    }
    // Uniqueness holds on update: Bob may not take Ada's email, whatever its case.
    let taken = json!({"emails": [{"email": "other@example.com"}, {"email": "ADA-1@example.com"}]});
    let answer = api.patch(&format!("/v1/customers/{bob}"), &taken).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(first_error(&answer)["source"]["pointer"], "/emails/1/email");
    let detail = first_error(&answer)["detail"].as_str().unwrap();
    assert!(detail.contains(&ada), "{detail}");
    // Nor her phone, by a PUT that merges.
    let phone = json!({"phones": [{"phone": "+1 555 123 4567"}]});
    let answer = api
        .put(&format!("/v1/customers/{bob}?replace=false"), &phone)
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    // Ada keeping her own keys is no conflict.
    let own = json!({"emails": [{"email": "ada-1@example.com", "type": "home"}]});
    assert_eq!(
        api.patch(&format!("/v1/customers/{ada}"), &own)
            .await
            .status,
        StatusCode::OK
    );
    // The create's rules, pointer by pointer.
    let bad = json!({"emails": [{"email": "ada@example.com", "type": "office"}], "nickname": "A"});
    let answer = api.patch(&format!("/v1/customers/{bob}"), &bad).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let pointers: Vec<&Value> = answer.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["source"]["pointer"])
        .collect();
    assert_eq!(pointers, [&json!("/emails/0/type"), &json!("/nickname")]);
    let after = api.records().await;
    let bob_before = before.customers.iter().find(|c| c.id == bob);
    assert_eq!(
        after.customers.iter().find(|c| c.id == bob),
        bob_before,
        "Bob untouched"
    );
    assert_eq!(api.stats().await.customers_updated, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn messages_and_notes_are_patched_in_their_place_in_the_thread() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let conversation_id = conversation(&api, "1").await;
    let made = api
        .post(
            &format!("/v1/conversations/{conversation_id}/messages"),
            &message("m-1"),
        )
        .await;
    let message_id = made.body["data"]["id"].as_str().unwrap().to_string();
    let note = json!({"body": "Called the customer", "externalId": "n-1"});
    let made = api
        .post(&format!("/v1/conversations/{conversation_id}/notes"), &note)
        .await;
    let note_id = made.body["data"]["id"].as_str().unwrap().to_string();

    let answer = api
        .patch(
            &format!("/v1/messages/{message_id}"),
            &json!({"preview": "Where is order 1001?", "externalId": "m-1b"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["data"]["type"], "message");
    assert_eq!(
        answer.body["data"]["attributes"]["subject"], "Order 1001",
        "kept"
    );
    assert!(answer.body["data"]["attributes"]["updatedAt"].is_string());
    let found = api.get("/v1/messages/externalid=m-1b").await;
    assert_eq!(found.body["data"]["id"], message_id.as_str());
    assert_eq!(
        api.get("/v1/messages/externalid=m-1").await.status,
        StatusCode::NOT_FOUND
    );

    let answer = api
        .patch(
            &format!("/v1/notes/{note_id}"),
            &json!({"body": "Called twice"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let empty = api
        .patch(&format!("/v1/notes/{note_id}"), &json!({"body": ""}))
        .await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_error(&empty)["source"]["pointer"], "/body");
    // A message's id is no note's.
    let crossed = api
        .patch(&format!("/v1/notes/{message_id}"), &json!({"body": "x"}))
        .await;
    assert_eq!(crossed.status, StatusCode::NOT_FOUND);

    let records = api.records().await;
    let thread = records.thread(&conversation_id);
    assert_eq!(thread.len(), 2);
    assert_eq!(
        (thread[0].id.as_str(), thread[0].text()),
        (message_id.as_str(), Some("Where is order 1001?"))
    );
    assert_eq!(
        (thread[1].id.as_str(), thread[1].text()),
        (note_id.as_str(), Some("Called twice"))
    );
    assert_eq!(thread[1].external_id.as_deref(), Some("n-1"));
    let stats = api.stats().await;
    assert_eq!((stats.messages_updated, stats.notes_updated), (1, 1));
    assert_eq!((stats.messages, stats.notes), (1, 1));
    assert_eq!(stat(&stats, "PATCH /v1/notes/{id}", 200), 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn bulk_update_jobs_answer_updated_per_item_with_errors_in_words() {
    let sandbox = start(SandboxConfig {
        bulk_delay: Duration::from_millis(50),
        // A conversation's tags are ids of the org's tags.
        tags: vec![TagRecord::new("a", "tag a")],
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let ada = customer_id(&api, &documented_customer("1")).await;
    let bob = customer_id(&api, &json!({"externalId": "crm-2", "name": "Bob"})).await;
    let items = json!([
        {"_clientRef": "crm-001", "id": ada, "name": "Ada King", "company": "5f2a0c2e9b3d4e5f60718200"},
        {"_clientRef": "crm-002", "id": bob, "externalId": "crm-1"},
        {"_clientRef": "crm-003", "id": "5f2a0c2e9b3d4e5f60718299", "name": "Nobody"},
        {"_clientRef": "crm-004", "name": "No id"},
        {"_clientRef": "crm-005", "id": bob, "emails": [{"email": "bob"}]}
    ]);
    let submitted = api.put("/v1/customers/bulk?replace=false", &items).await;
    assert_eq!(submitted.status, StatusCode::CREATED, "{}", submitted.body);
    assert_eq!(
        shape_differs(&submitted.body, &documented("bulk-submitted.json"), ""),
        None
    );
    let job = submitted.body["data"]["id"].as_str().unwrap().to_string();
    let batches = completed(&api, &job).await;
    assert_eq!(
        shape_differs(&batches.body, &documented("bulk-batches.json"), ""),
        None
    );
    let batch = &batches.body["data"][0]["attributes"];
    assert_eq!(
        (batch["successCount"].clone(), batch["failureCount"].clone()),
        (json!(1), json!(4))
    );
    let results = batch["results"].as_array().unwrap();
    assert_eq!(
        results[0],
        json!({"_clientRef": "crm-001", "objectId": ada, "status": "updated"})
    );
    assert_eq!(
        results[1],
        json!({"_clientRef": "crm-002", "status": "error", "error": "duplicate detected"})
    );
    let words = |i: usize| results[i]["error"].as_str().unwrap_or_default().to_string();
    assert!(words(2).contains("not found"), "{}", words(2));
    assert!(words(3).starts_with("/id: "), "{}", words(3));
    assert!(words(4).starts_with("/emails/0/email: "), "{}", words(4));
    let held = held_customer(&api, &ada).await;
    assert_eq!(
        (held["name"].clone(), held["tags"].clone()),
        (json!("Ada King"), json!(["vip"]))
    );
    assert_eq!(held_customer(&api, &bob).await["name"], "Bob");

    // Conversations in bulk; a bulk PUT without replace=false replaces, as a single one.
    let body = json!({"customer": bob, "name": "Hi", "tags": ["a"], "status": "open"});
    let conv = api.post("/v1/conversations", &body).await.body["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let items = json!([{"_clientRef": "t-1", "id": conv, "customer": bob, "status": "done"}]);
    let submitted = api.put("/v1/conversations/bulk", &items).await;
    let batches = completed(&api, submitted.body["data"]["id"].as_str().unwrap()).await;
    let result = &batches.body["data"][0]["attributes"]["results"][0];
    assert_eq!(result["status"], "updated", "{result}");
    let held = &api.records().await.conversations[0];
    assert_eq!(
        (held.status.as_deref(), held.name.as_deref()),
        (Some("done"), None)
    );
    assert!(!held.extra.contains_key("tags"));
    let stats = api.stats().await;
    assert_eq!(
        (stats.customers_updated, stats.conversations_updated),
        (1, 1)
    );
    // A bulk request is one request against the budget, and no single update.
    assert_eq!(stat(&stats, "PUT /v1/customers/bulk", 201), 1);
    assert_eq!(stat(&stats, "PUT /v1/conversations/bulk", 201), 1);
    assert_eq!(stats.updates_total, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_bulk_update_with_an_item_without_id_is_refused_whole_when_the_sandbox_checks_up_front() {
    let sandbox = start(SandboxConfig {
        bulk_refuse_invalid: true,
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let ada = customer_id(&api, &json!({"name": "Ada"})).await;
    let items = json!([{"id": ada, "name": "Ada King"}, {"name": "No id"}]);
    let refused = api.put("/v1/customers/bulk?replace=false", &items).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let detail = first_error(&refused)["detail"].as_str().unwrap();
    assert!(detail.starts_with("item 1: /id"), "{detail}");
    assert_eq!(held_customer(&api, &ada).await["name"], "Ada");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn one_records_update_limit_is_429_with_the_orgs_budget_not_spent() {
    let sandbox = start(SandboxConfig {
        rpm: Some(1000),
        per_object_update_limit: Some(2),
        bulk_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let ada = customer_id(&api, &json!({"name": "Ada"})).await;
    let bob = customer_id(&api, &json!({"name": "Bob"})).await;
    let path = format!("/v1/customers/{ada}");
    for name in ["Ada 1", "Ada 2"] {
        assert_eq!(
            api.patch(&path, &json!({"name": name})).await.status,
            StatusCode::OK
        );
    }
    let limited = api.patch(&path, &json!({"name": "Ada 3"})).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(header_num(&limited, "retry-after").is_some_and(|s| (1..=60).contains(&s)));
    // The org's budget is not spent: that is how a client tells the two 429s apart.
    assert_eq!(header_num(&limited, "x-ratelimit-limit"), Some(1000));
    assert!(header_num(&limited, "x-ratelimit-remaining").is_some_and(|r| r > 0));
    assert_eq!(first_error(&limited)["status"], "429");
    assert_eq!(held_customer(&api, &ada).await["name"], "Ada 2");
    // Another record is not held back, nor are reads of this one.
    assert_eq!(
        api.patch(&format!("/v1/customers/{bob}"), &json!({"name": "Bob 1"}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        api.get(&format!("/v1/customers/{ada}")).await.status,
        StatusCode::OK
    );
    // A bulk item over the limit is an error in words; the others go through.
    let items = json!([
        {"_clientRef": "a", "id": ada, "name": "Ada 4"},
        {"_clientRef": "b", "id": bob, "name": "Bob 2"}
    ]);
    let submitted = api.put("/v1/customers/bulk?replace=false", &items).await;
    let batches = completed(&api, submitted.body["data"]["id"].as_str().unwrap()).await;
    let results = &batches.body["data"][0]["attributes"]["results"];
    assert_eq!(results[0]["status"], "error");
    assert!(
        results[0]["error"]
            .as_str()
            .unwrap()
            .contains("updates of customer")
    );
    assert_eq!(results[1]["status"], "updated");
    let stats = api.stats().await;
    assert_eq!((stats.object_limited, stats.rate_limited), (2, 1));
    assert_eq!(stats.customers_updated, 4);
    assert_eq!(stat(&stats, "PATCH /v1/customers/{lookup}", 429), 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn faults_strike_updates_as_they_do_creates() {
    let sandbox = start(SandboxConfig::default()).await;
    let api = Api::new(&sandbox);
    let ada = customer_id(&api, &json!({"name": "Ada", "externalId": "c-1"})).await;
    let path = format!("/v1/customers/{ada}");
    sandbox.set_faults(FaultConfig {
        fail_after_write_rate: 1.0,
        ..FaultConfig::default()
    });
    let answer = api.patch(&path, &json!({"name": "Ada King"})).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        held_customer(&api, &ada).await["name"],
        "Ada King",
        "written all the same"
    );

    sandbox.set_faults(FaultConfig {
        drop_after_write_rate: 1.0,
        ..FaultConfig::default()
    });
    let sent = api
        .try_update(reqwest::Method::PATCH, &path, &json!({"name": "Ada K."}))
        .await;
    assert!(
        sent.err().is_some_and(|e| e.status().is_none()),
        "no answer at all"
    );
    assert_eq!(held_customer(&api, &ada).await["name"], "Ada K.");

    sandbox.set_faults(FaultConfig {
        busy_rate: 1.0,
        ..FaultConfig::default()
    });
    let answer = api.patch(&path, &json!({"name": "Never"})).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        held_customer(&api, &ada).await["name"],
        "Ada K.",
        "nothing written"
    );

    // An update is idempotent: sent again once the faults are off, it lands the same.
    sandbox.set_faults(FaultConfig::default());
    let again = api.patch(&path, &json!({"name": "Ada K."})).await;
    assert_eq!(again.status, StatusCode::OK);
    let stats = api.stats().await;
    assert_eq!(
        (stats.faults.fail_after_write, stats.faults.drop_after_write),
        (1, 1)
    );
    assert_eq!(stats.faults.busy, 1);
    assert_eq!((stats.customers_updated, stats.updates_total), (3, 4));
    assert_eq!(stats.customers, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn updates_survive_a_restart_on_the_records_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = || SandboxConfig {
        records: Some(dir.path().join("records.jsonl")),
        ..SandboxConfig::default()
    };
    let sandbox = start(config()).await;
    let api = Api::new(&sandbox);
    let ada = customer_id(&api, &documented_customer("1")).await;
    api.patch(
        &format!("/v1/customers/{ada}"),
        &json!({"name": "Ada King"}),
    )
    .await;
    let before = sandbox.records();
    sandbox.shutdown().await;

    let sandbox = start(config()).await;
    let api = Api::new(&sandbox);
    assert_eq!(sandbox.records(), before);
    assert_eq!(held_customer(&api, &ada).await["name"], "Ada King");
    assert_eq!(api.stats().await.customers, 1);
    sandbox.shutdown().await;
}

/// The org's tags of the tests below.
fn org_tags() -> Vec<kustomer_import::sandbox::TagRecord> {
    ["vip", "billing", "refund"]
        .iter()
        .enumerate()
        .map(|(i, name)| kustomer_import::sandbox::TagRecord::new(&format!("tag-{i}"), name))
        .collect()
}

/// A sandbox holding [`org_tags`] that takes only tag ids in a conversation's `tags`, with
/// one customer made: the sandbox and the customer's id.
async fn strict_tag_org() -> (Sandbox, String) {
    let sandbox = start(SandboxConfig {
        tags: org_tags(),
        tag_ids_only: true,
        ..SandboxConfig::default()
    })
    .await;
    let customer = Api::new(&sandbox)
        .post("/v1/customers", &json!({"name": "Ada"}))
        .await;
    let customer = customer.body["data"]["id"].as_str().unwrap().to_string();
    (sandbox, customer)
}

/// `GET /v1/tags?page=&pageSize=` (the docs) lists the org's tags oldest first, in pages
/// whose `links.next` names the next while there is one; a listing begun is counted.
#[tokio::test]
async fn the_orgs_tags_are_listed_in_pages() {
    let sandbox = start(SandboxConfig {
        tags: org_tags(),
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let first = api.get("/v1/tags?page=1&pageSize=2").await;
    assert_eq!(first.status, StatusCode::OK);
    let names: Vec<&str> = (first.body["data"].as_array().unwrap().iter())
        .map(|tag| tag["attributes"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vip", "billing"]);
    assert_eq!(first.body["data"][0]["id"], "tag-0");
    assert_eq!(first.body["links"]["next"], "/v1/tags?page=2&pageSize=2");
    let second = api.get("/v1/tags?page=2&pageSize=2").await;
    assert_eq!(second.body["data"].as_array().unwrap().len(), 1);
    assert!(second.body["links"]["next"].is_null());
    let bad = api.get("/v1/tags?pageSize=500").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        api.stats().await.tag_lists,
        1,
        "page 2 continues the same listing"
    );
}

/// `POST /v1/conversations/{id}/tags` takes names or ids, makes the names the org lacks
/// (once, whatever their case) and adds each tag once: appending again changes nothing.
#[tokio::test]
async fn an_append_makes_missing_tags_once_and_adds_each_tag_once() {
    let (sandbox, customer) = strict_tag_org().await;
    let api = Api::new(&sandbox);
    let body = json!({"customer": customer, "name": "Hi", "tags": ["tag-0"]});
    let made = api.post("/v1/conversations", &body).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let id = made.body["data"]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/conversations/{id}/tags");
    let appended = api
        .post(&path, &json!({"tags": ["VIP", "tag-1", "late delivery"]}))
        .await;
    assert_eq!(appended.status, StatusCode::OK, "{}", appended.body);
    let again = api
        .post(&path, &json!({"tags": ["Late Delivery", "vip"]}))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let records = api.records().await;
    let late = records
        .tags
        .iter()
        .find(|t| t.name == "late delivery")
        .unwrap();
    assert_eq!(records.tags.len(), 4, "one tag made: {:?}", records.tags);
    assert_eq!(
        records.conversations[0].extra["tags"],
        json!(["tag-0", "tag-1", late.id])
    );
    assert_eq!(
        again.body["data"]["attributes"]["tags"],
        json!(["tag-0", "tag-1", late.id])
    );
    assert_eq!(api.stats().await.tags_created, 1);
    for bad in [json!({}), json!({"tags": []}), json!({"tags": ["a", 2]})] {
        assert_eq!(
            api.post(&path, &bad).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let absent = api
        .post("/v1/conversations/nope/tags", &json!({"tags": ["a"]}))
        .await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND);
}

/// With `tag_ids_only`, a conversation's `tags` must be ids of the org's tags: a name is
/// refused 422 naming its place, on create and on update alike.
#[tokio::test]
async fn a_conversation_whose_tags_are_names_is_refused_naming_the_tag() {
    let (sandbox, customer) = strict_tag_org().await;
    let api = Api::new(&sandbox);
    let body = json!({"customer": customer, "name": "Hi", "tags": ["tag-0", "vip"]});
    let refused = api.post("/v1/conversations", &body).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["errors"][0]["source"]["pointer"], "/tags/1");
    let body = json!({"customer": customer, "name": "Hi", "tags": ["tag-2"]});
    let made = api.post("/v1/conversations", &body).await;
    let id = made.body["data"]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/conversations/{id}");
    let update = api.patch(&path, &json!({"tags": ["refund"]})).await;
    assert_eq!(update.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(update.body["errors"][0]["source"]["pointer"], "/tags/0");
    assert_eq!(
        api.records().await.conversations[0].extra["tags"],
        json!(["tag-2"])
    );
}

/// The docs: a conversation's `assignedUsers[]` takes at most 10 user ids. The sandbox
/// holds them as sent, and refuses an id that is no user of the org (422 naming its place)
/// and a list of more than 10, on create and on update.
#[tokio::test]
async fn a_conversation_is_assigned_to_at_most_ten_of_the_orgs_users() {
    let sandbox = start(SandboxConfig {
        users: vec![
            SandboxUser::new("u-ann", "ann@example.com"),
            SandboxUser::new("u-bo", "bo@example.com"),
        ],
        ..SandboxConfig::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let customer = api.post("/v1/customers", &json!({"name": "Ada"})).await;
    let customer = customer.body["data"]["id"].as_str().unwrap().to_string();
    let body = json!({"customer": customer, "name": "Hi", "assignedUsers": ["u-ann", "bo"]});
    let refused = api.post("/v1/conversations", &body).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused.body["errors"][0]["source"]["pointer"],
        "/assignedUsers/1"
    );
    let eleven: Vec<&str> = ["u-ann"; 11].to_vec();
    let body = json!({"customer": customer, "name": "Hi", "assignedUsers": eleven});
    let refused = api.post("/v1/conversations", &body).await;
    assert!(refused.status.is_client_error(), "{}", refused.body);
    assert_eq!(
        refused.body["errors"][0]["source"]["pointer"],
        "/assignedUsers"
    );
    let body = json!({"customer": customer, "name": "Hi", "assignedUsers": ["u-ann"]});
    let made = api.post("/v1/conversations", &body).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let id = made.body["data"]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/conversations/{id}");
    let update = api
        .patch(&path, &json!({"assignedUsers": ["nobody"]}))
        .await;
    assert_eq!(update.status, StatusCode::UNPROCESSABLE_ENTITY);
    let update = api
        .patch(&path, &json!({"assignedUsers": ["u-bo", "u-ann"]}))
        .await;
    assert_eq!(update.status, StatusCode::OK, "{}", update.body);
    assert_eq!(
        api.records().await.conversations[0].extra["assignedUsers"],
        json!(["u-bo", "u-ann"])
    );
}
