//! `validate` and the agents (issue 19): without a key it lists the distinct agents its
//! valid rows name (authors of messages and notes, assignees, after the `[users]` table)
//! and sends nothing; with `--check-users` it looks each distinct agent up once as a user
//! of the org, through the import's target flags, and writes no checkpoint. A refused key
//! exits 3, no key is a configuration error (exit 2).

use kustomer_import::sandbox::{SandboxConfig, SandboxUser};
use serde_json::{Value, json};

use crate::harness::*;

const USERS: &str = "GET /v1/users";

/// An org with users for ann, bo and cy (not dee), behind the harness's key.
fn org() -> TestEnv {
    TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        users: vec![
            SandboxUser::new("u-ann", "ann@example.com"),
            SandboxUser::new("u-bo", "bo@example.com"),
            SandboxUser::new("u-cy", "cy@example.com"),
        ],
        ..SandboxConfig::default()
    })
}

/// A ticket's line: messages by `authors`, its conversation assigned to `assignees`.
fn ticket(id: &str, authors: &[&str], assignees: &[&str]) -> String {
    let messages: Vec<Value> = authors
        .iter()
        .enumerate()
        .map(|(i, author)| {
            json!({"externalId": format!("m-{id}-{i}"), "channel": "email",
                   "direction": "out", "preview": format!("reply {i}"), "createdBy": author})
        })
        .collect();
    let line = json!({
        "customer": {"externalId": format!("c-{id}"), "name": format!("C {id}")},
        "conversation": {"externalId": format!("t-{id}"), "name": format!("Ticket {id}"),
                         "assignedUsers": assignees},
        "messages": messages,
    });
    format!("{line}\n")
}

/// Three valid tickets naming ann (in two cases), bo, dee and "Support Bot", and an
/// invalid one (no customer) whose agent eve must not be listed.
fn tickets(env: &TestEnv) -> String {
    let lines = ticket(
        "1",
        &["ann@example.com", "Ann@Example.com", "Support Bot"],
        &["bo@example.com"],
    ) + &ticket(
        "2",
        &["dee@example.com"],
        &["ann@example.com", "dee@example.com"],
    ) + &ticket("3", &["bo@example.com"], &[])
        + "{\"conversation\": {\"externalId\": \"t-4\"}, \"messages\": [{\"externalId\": \
           \"m-4\", \"channel\": \"email\", \"direction\": \"out\", \"preview\": \"x\", \
           \"createdBy\": \"eve@example.com\"}]}\n";
    let file = env.write("tickets.jsonl", &lines);
    file.to_str().unwrap().to_string()
}

/// `validate --json`'s agents as (agent, maps_by, items, conversations, user), user absent
/// as None and null as Some(Null).
fn agents(run: &Run) -> Vec<(String, String, u64, u64, Option<Value>)> {
    let report: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|error| {
        panic!("{error}: {}\n{}", run.stdout, run.stderr);
    });
    report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|agent| {
            (
                agent["agent"].as_str().unwrap().to_string(),
                agent["maps_by"].as_str().unwrap().to_string(),
                agent["items"].as_u64().unwrap(),
                agent["conversations"].as_u64().unwrap(),
                agent.get("user").cloned(),
            )
        })
        .collect()
}

fn seen(
    agent: &str,
    maps_by: &str,
    items: u64,
    conversations: u64,
    user: Option<Value>,
) -> (String, String, u64, u64, Option<Value>) {
    (agent.into(), maps_by.into(), items, conversations, user)
}

#[test]
fn validate_lists_the_agents_of_its_valid_rows_and_sends_nothing() {
    let env = org();
    let file = tickets(&env);
    let run = env.command(&["validate", &file, "--json"]);
    run.assert_code(1); // the ticket without a customer
    assert_eq!(
        agents(&run),
        vec![
            seen("ann@example.com", "email", 2, 1, None),
            seen("bo@example.com", "email", 1, 1, None),
            seen("dee@example.com", "email", 1, 1, None),
            seen("Support Bot", "nothing", 1, 0, None),
        ],
        "eve is only in an invalid row"
    );
    let text = env.command(&["validate", &file]);
    assert!(
        text.stdout.contains("agents:             4\n")
            && text
                .stdout
                .contains("    ann@example.com                  2 items, 1 conversations\n")
            && text
                .stdout
                .contains("  never map (no email, no [users] entry")
            && text
                .stdout
                .contains("    Support Bot                      1 items, 0 conversations\n"),
        "{}",
        text.stdout
    );
    assert_eq!(env.stats().requests_total, 0, "validate sends nothing");
}

#[test]
fn check_users_looks_each_distinct_agent_up_once_and_writes_no_checkpoint() {
    let env = org();
    let file = tickets(&env);
    let run = run(env.api_command("validate", &[&file, "--check-users", "--json"]));
    run.assert_code(1);
    let null = Some(Value::Null);
    assert_eq!(
        agents(&run),
        vec![
            seen("ann@example.com", "email", 2, 1, Some(json!("u-ann"))),
            seen("bo@example.com", "email", 1, 1, Some(json!("u-bo"))),
            seen("dee@example.com", "email", 1, 1, null.clone()),
            seen("Support Bot", "nothing", 1, 0, null),
        ]
    );
    assert_eq!(env.requests_to(USERS), 3, "ann, bo and dee, once each");
    assert_eq!(env.stats().requests_total, 3, "and nothing else");
    assert_eq!(env.stats().invitations, 0);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["users_checked"], json!(true));
    assert_eq!(report["user_lookups"], json!(3));
    assert!(
        !env.path("kustomer-import.sqlite").exists(),
        "validate writes no checkpoint"
    );
    let text = self::run(env.api_command("validate", &[&file, "--check-users"]));
    assert!(
        text.stdout
            .contains("agents:             4 (2 mapped to users, 2 without)\n")
            && text.stdout.contains(
                "ann@example.com                  2 items, 1 conversations -> user u-ann"
            )
            && text.stdout.contains("  without a user (never created")
            && text.stdout.contains("users looked up:    3 requests"),
        "{}",
        text.stdout
    );
}

#[test]
fn check_users_maps_by_the_users_table_first() {
    let env = org();
    let mapping = env.write(
        "mapping.toml",
        "[customer]\nexternalId = \"user_id\"\n\
         [conversation]\nexternalId = \"ticket\"\n\
         [message]\nexternalId = \"part\"\nchannel = { value = \"chat\" }\n\
         direction = { value = \"out\" }\npreview = \"body\"\ncreatedBy = \"author\"\n\
         [users]\n\"Support Bot\" = \"5f3a9c0e1b2d4c6a8e0f1a2b\"\n\"Cy Agent\" = \"Cy@example.com\"\n",
    );
    let rows = env.write(
        "parts.csv",
        "ticket,part,body,author,user_id\n\
         T1,p1,one,Support Bot,U1\n\
         T1,p2,two,Cy Agent,U1\n\
         T2,p3,three,cy@example.com,U2\n\
         T2,p4,four,support bot,U2\n\
         T2,p5,five,Nobody,U2\n",
    );
    let args = [
        "--mapping",
        mapping.to_str().unwrap(),
        "--rows-are-messages",
        rows.to_str().unwrap(),
        "--check-users",
        "--json",
    ];
    let run = run(env.api_command("validate", &args));
    run.assert_code(0);
    assert_eq!(
        agents(&run),
        vec![
            seen("cy@example.com", "email", 2, 0, Some(json!("u-cy"))),
            seen(
                "5f3a9c0e1b2d4c6a8e0f1a2b",
                "user_id",
                2,
                0,
                Some(json!("5f3a9c0e1b2d4c6a8e0f1a2b"))
            ),
            seen("Nobody", "nothing", 1, 0, Some(Value::Null)),
        ]
    );
    assert_eq!(
        env.requests_to(USERS),
        1,
        "cy once, by either name; the id is never looked up"
    );
}

#[test]
fn a_refused_key_exits_3_and_no_key_is_a_configuration_error() {
    let env = org();
    let file = tickets(&env);
    let mut refused = env.api_command("validate", &[&file, "--check-users", "--json"]);
    refused.env("KUSTOMER_API_KEY", "not-the-key-9d2e");
    let run = run(refused);
    run.assert_code(3);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let stopped = report["users_check_stopped"].as_str().unwrap();
    assert!(
        stopped.contains("the API refused the key (401)"),
        "{stopped}"
    );
    assert!(
        run.stderr.contains("the API refused the key (401)"),
        "{}",
        run.stderr
    );
    assert_eq!(report["users_checked"], json!(false));
    assert_eq!(
        report["rows"],
        json!(4),
        "the rows are reported all the same"
    );
    for output in [&run.stdout, &run.stderr] {
        assert!(
            !output.contains("not-the-key-9d2e"),
            "the key is never shown"
        );
    }

    let before = env.stats().requests_total;
    let mut keyless = env.api_command("validate", &[&file, "--check-users"]);
    keyless.env_remove("KUSTOMER_API_KEY");
    let run = self::run(keyless);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("--check-users looks the agents up in the org: set KUSTOMER_API_KEY"),
        "{}",
        run.stderr
    );
    assert_eq!(env.stats().requests_total, before, "nothing sent");
    // Without --check-users the key and the base URL in the environment change nothing.
    let plain = self::run(env.api_command("validate", &[&file]));
    plain.assert_code(1);
    assert_eq!(env.stats().requests_total, before);
}

#[test]
fn lookups_that_keep_failing_exit_4_and_still_report_the_rows() {
    // Every request answers 503: the first lookup is tried again within verify's retries,
    // then the check stops, naming why, and no later agent is looked up.
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        users: vec![SandboxUser::new("u-ann", "ann@example.com")],
        faults: kustomer_import::sandbox::FaultConfig {
            busy_rate: 1.0,
            ..Default::default()
        },
        ..SandboxConfig::default()
    });
    let file = tickets(&env);
    let run = run(env.api_command("validate", &[&file, "--check-users", "--json"]));
    run.assert_code(4);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["users_checked"], json!(false));
    assert_eq!(
        report["rows"],
        json!(4),
        "the rows are reported all the same"
    );
    assert!(
        report["users_check_stopped"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{report}"
    );
    let lookups = env.requests_to(USERS);
    assert!(
        lookups > 1 && env.stats().requests_total == lookups,
        "one agent's lookup, tried again, and nothing else: {lookups}"
    );
    assert!(!env.path("kustomer-import.sqlite").exists());
}
