//! Agents mapped to Kustomer users (issue 19): a message's or note's source author (an
//! email) becomes the `createdBy` of the org's user with that email, each agent looked up
//! once for the whole checkpoint (`GET /v1/users?email=`), none on a later run; an agent
//! with no user is never invited, falls back to `--default-author` or to no author, and is
//! listed in the summary and the checkpoint.

use std::collections::HashMap;

use kustomer_import::sandbox::{FaultConfig, Records, SandboxConfig, SandboxUser};
use serde_json::{Value, json};

use crate::harness::*;

const USERS: &str = "GET /v1/users";

/// A sandbox whose key holds org.admin (so `createdBy` is kept), with three agents' users.
fn org(faults: FaultConfig) -> TestEnv {
    TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        org_admin: true,
        faults,
        users: vec![
            SandboxUser::new("u-ann", "ann@example.com"),
            SandboxUser::new("u-bo", "bo@example.com"),
            SandboxUser::new("u-cy", "cy@example.com"),
        ],
        ..SandboxConfig::default()
    })
}

/// One ticket's line: its messages by `authors` (in order, `m-<ticket>-<i>`), and a note
/// by the first author.
fn ticket(id: &str, authors: &[&str]) -> String {
    let messages: Vec<Value> = authors
        .iter()
        .enumerate()
        .map(|(i, author)| {
            json!({"externalId": format!("m-{id}-{i}"), "channel": "email",
                   "direction": "out", "preview": format!("reply {i}"),
                   "sentAt": format!("2024-01-01T00:0{i}:00Z"), "createdBy": author})
        })
        .collect();
    let line = json!({
        "customer": {"externalId": format!("c-{id}"), "name": format!("C {id}")},
        "conversation": {"externalId": format!("t-{id}"), "name": format!("Ticket {id}")},
        "messages": messages,
        "notes": [{"externalId": format!("n-{id}"), "body": "internal",
                   "createdBy": authors[0]}],
    });
    format!("{line}\n")
}

/// Each message's and note's `createdBy` as the sandbox holds it, by externalId ("" for
/// none).
fn authors(records: &Records) -> HashMap<String, String> {
    records
        .threads
        .iter()
        .flat_map(|thread| &thread.items)
        .map(|item| {
            let author = item.body.get("createdBy").and_then(Value::as_str);
            (
                item.external_id.clone().unwrap_or_default(),
                author.unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn agents_in_checkpoint(env: &TestEnv) -> Vec<(String, Option<String>)> {
    let checkpoint = env.checkpoint();
    let mut statement = checkpoint
        .prepare("SELECT agent, user_id FROM agents ORDER BY agent")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn each_message_is_written_by_its_agents_user_and_each_agent_is_looked_up_once() {
    let env = org(FaultConfig::default());
    let lines = ticket(
        "1",
        &[
            "ann@example.com",
            "Bo@Example.com",
            "cy@example.com",
            "ann@example.com",
        ],
    ) + &ticket("2", &["cy@example.com", "dee@example.com", "Support Bot"]);
    let file = env.write("tickets.jsonl", &lines);
    let run = env.import(&[file.to_str().unwrap(), "--org-admin"]);
    run.assert_code(0);

    let held = authors(&env.records());
    let expected = [
        ("m-1-0", "u-ann"),
        ("m-1-1", "u-bo"),
        ("m-1-2", "u-cy"),
        ("m-1-3", "u-ann"),
        ("n-1", "u-ann"),
        ("m-2-0", "u-cy"),
        ("m-2-1", ""),
        ("m-2-2", ""),
        ("n-2", "u-cy"),
    ];
    for (item, user) in expected {
        assert_eq!(held[item], user, "createdBy of {item}");
    }
    assert_eq!(env.requests_to(USERS), 4, "ann, bo, cy and dee, once each");
    assert_eq!(env.stats().invitations, 0, "no user is ever created");
    assert_eq!(
        agents_in_checkpoint(&env),
        vec![
            ("ann@example.com".into(), Some("u-ann".into())),
            ("bo@example.com".into(), Some("u-bo".into())),
            ("cy@example.com".into(), Some("u-cy".into())),
            ("dee@example.com".into(), None),
        ]
    );
    assert!(
        run.stdout.contains("agents without a user:  2"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  dee@example.com: 1 items"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  Support Bot: 1 items"),
        "{}",
        run.stdout
    );
    let status = env.command(&["status"]);
    assert!(
        status.stdout.contains(
            "agents: 3 mapped to users, 1 without a user (their items fell back): dee@example.com"
        ),
        "{}",
        status.stdout
    );
    let status: Value = serde_json::from_str(&env.command(&["status", "--json"]).stdout).unwrap();
    assert_eq!(
        status["agents"],
        json!({"with_user": 3, "without_user": ["dee@example.com"]})
    );

    // A later run with a new ticket of known agents (and the old ones, done) asks nothing.
    let file = env.write(
        "tickets.jsonl",
        &(lines + &ticket("3", &["bo@example.com", "dee@example.com"])),
    );
    env.import(&[file.to_str().unwrap(), "--org-admin"])
        .assert_code(0);
    assert_eq!(
        env.requests_to(USERS),
        4,
        "no lookup for an agent already resolved"
    );
    let held = authors(&env.records());
    assert_eq!(
        (held["m-3-0"].as_str(), held["m-3-1"].as_str()),
        ("u-bo", "")
    );
}

#[test]
fn an_agent_without_a_user_falls_back_to_the_default_author_under_faults() {
    let env = org(FaultConfig {
        fail_rate: 0.3,
        busy_rate: 0.2,
        seed: Some(19),
        ..FaultConfig::default()
    });
    let file = env.write(
        "tickets.jsonl",
        &ticket(
            "1",
            &["dee@example.com", "ann@example.com", "eve@example.com"],
        ),
    );
    let run = env.import(&[
        file.to_str().unwrap(),
        "--org-admin",
        "--default-author",
        "Cy@example.com",
        "--max-retries",
        "50",
    ]);
    run.assert_code(0);
    let held = authors(&env.records());
    for (item, user) in [
        ("m-1-0", "u-cy"),
        ("m-1-1", "u-ann"),
        ("m-1-2", "u-cy"),
        ("n-1", "u-cy"),
    ] {
        assert_eq!(held[item], user, "createdBy of {item}");
    }
    let answered: u64 = env.stats().requests[USERS].get(&200).copied().unwrap_or(0);
    assert_eq!(
        answered, 4,
        "dee, ann, eve and the default author, once each"
    );
    assert_eq!(env.stats().invitations, 0);
    assert!(
        run.stdout.contains("agents without a user:  2"),
        "{}",
        run.stdout
    );
}

#[test]
fn without_org_admin_authors_are_resolved_and_reported_but_not_sent() {
    let env = org(FaultConfig::default());
    let file = env.write(
        "tickets.jsonl",
        &ticket("1", &["ann@example.com", "dee@example.com"]),
    );
    let run = env.import(&[file.to_str().unwrap()]);
    run.assert_code(0);
    assert_eq!(env.requests_to(USERS), 2);
    assert!(
        run.stdout.contains("  dee@example.com: 1 items"),
        "{}",
        run.stdout
    );
    let held = authors(&env.records());
    assert_eq!(
        held["m-1-0"], "",
        "createdBy is left out without --org-admin"
    );
}

#[test]
fn in_bulk_mode_the_items_carry_the_same_users() {
    let env = org(FaultConfig::default());
    let lines: String = (0..5)
        .map(|t| {
            ticket(
                &t.to_string(),
                &["ann@example.com", "bo@example.com", "dee@example.com"],
            )
        })
        .collect();
    let file = env.write("tickets.jsonl", &lines);
    env.import(&[file.to_str().unwrap(), "--org-admin", "--mode", "bulk"])
        .assert_code(0);
    assert!(
        env.requests_to("POST /v1/messages/bulk") > 0,
        "messages went in bulk jobs"
    );
    let held = authors(&env.records());
    for t in 0..5 {
        let item = |i: usize| held[&format!("m-{t}-{i}")].clone();
        assert_eq!(
            (item(0), item(1), item(2)),
            ("u-ann".into(), "u-bo".into(), String::new())
        );
    }
    assert_eq!(
        env.requests_to(USERS),
        3,
        "ann, bo and dee, once for the whole run"
    );
}

/// A 24-hex id, the shape of Kustomer's ids, that the `[users]` table maps to.
const HAND_MAPPED_ID: &str = "5f3a9c0e1b2d4c6a8e0f1a2b";

#[test]
fn the_users_table_maps_an_agent_to_an_id_with_no_lookup_and_to_an_email_looked_up_once() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        org_admin: true,
        users: vec![
            SandboxUser::new("u-cy", "cy@example.com"),
            SandboxUser::new(HAND_MAPPED_ID, "ops@example.com"),
        ],
        ..SandboxConfig::default()
    });
    let mapping = env.write(
        "mapping.toml",
        &format!(
            "[customer]\nexternalId = \"user_id\"\n\
             [conversation]\nexternalId = \"ticket\"\n\
             [message]\nexternalId = \"part\"\nchannel = {{ value = \"chat\" }}\n\
             direction = {{ value = \"out\" }}\npreview = \"body\"\ncreatedBy = \"author\"\n\
             [users]\n\"Support Bot\" = \"{HAND_MAPPED_ID}\"\n\"Cy Agent\" = \"Cy@example.com\"\n"
        ),
    );
    let rows = env.write(
        "parts.csv",
        "ticket,part,body,author,user_id\n\
         T1,p1,one,Support Bot,U1\n\
         T1,p2,two,Cy Agent,U1\n\
         T2,p3,three,cy agent,U2\n\
         T2,p4,four,support bot,U2\n\
         T2,p5,five,Nobody,U2\n",
    );
    let args = [
        "--mapping",
        mapping.to_str().unwrap(),
        "--rows-are-messages",
        rows.to_str().unwrap(),
        "--org-admin",
    ];
    let run = env.import(&args);
    run.assert_code(0);
    let held = authors(&env.records());
    for (item, user) in [
        ("p1", HAND_MAPPED_ID),
        ("p2", "u-cy"),
        ("p3", "u-cy"),
        ("p4", HAND_MAPPED_ID),
        ("p5", ""),
    ] {
        assert_eq!(held[item], user, "createdBy of {item}");
    }
    assert_eq!(
        env.requests_to(USERS),
        1,
        "cy@example.com once; the id is never looked up; Nobody is no email"
    );
    assert_eq!(
        agents_in_checkpoint(&env),
        vec![("cy@example.com".into(), Some("u-cy".into()))]
    );
    assert!(run.stdout.contains("  Nobody: 1 items"), "{}", run.stdout);
}

/// The Zendesk preset names each agent's comment by the agent's email from users.json, so
/// a public reply or an internal note goes out written by the org's user with that email;
/// an end-user's comment has no author; a ticket's `assignee_id` is its conversation's
/// assigned user. Each agent is looked up once.
#[test]
fn the_zendesk_samples_agent_comments_are_written_by_the_agents_users() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        org_admin: true,
        users: vec![
            SandboxUser::new("u-sam", "sam@helpdesk.example.com"),
            SandboxUser::new("u-alex", "alex@helpdesk.example.com"),
        ],
        ..SandboxConfig::default()
    });
    let tickets = sample("zendesk/tickets.json");
    let users = sample("zendesk/users.json");
    let run = env.import(&[
        "--preset",
        "zendesk-json",
        tickets.to_str().unwrap(),
        "--users",
        users.to_str().unwrap(),
        "--org-admin",
    ]);
    run.assert_code(0);
    let records = env.records();
    let mut by_author: HashMap<String, (u64, u64)> = HashMap::new();
    for item in records.threads.iter().flat_map(|thread| &thread.items) {
        let author = item.body.get("createdBy").and_then(Value::as_str);
        let counts = by_author
            .entry(author.unwrap_or_default().to_string())
            .or_default();
        match item.body.get("direction").and_then(Value::as_str) {
            Some("in") => counts.1 += 1,
            _ => counts.0 += 1,
        }
    }
    let expected = read_sample_authors(&tickets);
    assert_eq!(
        by_author, expected,
        "(outbound or note, inbound) per author"
    );
    assert_eq!(env.requests_to(USERS), 2, "sam and alex, once each");
    let mut assignees: Vec<(String, Option<Value>)> = records
        .conversations
        .iter()
        .map(|c| {
            let external_id = c.external_id.clone().unwrap_or_default();
            (external_id, c.extra.get("assignedUsers").cloned())
        })
        .collect();
    assignees.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        assignees,
        [
            ("10001".to_string(), Some(json!(["u-sam"]))),
            ("10002".to_string(), Some(json!(["u-sam"]))),
            ("10003".to_string(), Some(json!(["u-sam"]))),
            ("10004".to_string(), Some(json!(["u-alex"]))),
            ("10005".to_string(), None),
        ],
        "each ticket assigned to its assignee_id's user"
    );
}

/// Per author as the sandbox should hold it (`u-sam`, `u-alex`, "" for none): how many of
/// its items are outbound messages or notes, and how many inbound, read from the sample.
fn read_sample_authors(tickets: &std::path::Path) -> HashMap<String, (u64, u64)> {
    let mut expected: HashMap<String, (u64, u64)> = HashMap::new();
    for line in std::fs::read_to_string(tickets).unwrap().lines() {
        let ticket: Value = serde_json::from_str(line).unwrap();
        for comment in ticket["comments"].as_array().unwrap() {
            let author = match comment["author_id"].as_u64().unwrap() {
                900001 => "u-sam",
                900002 => "u-alex",
                _ => "",
            };
            let counts = expected.entry(author.to_string()).or_default();
            if author.is_empty() {
                counts.1 += 1;
            } else {
                counts.0 += 1;
            }
        }
    }
    expected
}

/// A conversation's `assignedUsers` names its agents as `createdBy` does: each becomes
/// the org's user (looked up once, with the authors), one with no user is left out and
/// listed, none is ever invited; a re-run sends nothing.
#[test]
fn a_conversation_is_assigned_to_its_agents_users() {
    let env = org(FaultConfig::default());
    let row = |id: &str, agents: Value| {
        let line = json!({
            "customer": {"externalId": format!("c-{id}"), "name": format!("C {id}")},
            "conversation": {"externalId": format!("t-{id}"), "name": format!("Ticket {id}"),
                             "assignedUsers": agents},
        });
        format!("{line}\n")
    };
    let lines = row(
        "1",
        json!(["ann@example.com", "Bo@Example.com", "dee@example.com"]),
    ) + &row("2", json!("cy@example.com; ann@example.com"))
        + &row("3", json!(["Dee@Example.com"]));
    let file = env.write("tickets.jsonl", &lines);
    let run = env.import(&[file.to_str().unwrap()]);
    run.assert_code(0);
    let records = env.records();
    let assigned = |external_id: &str| {
        let conversation = records
            .conversations
            .iter()
            .find(|c| c.external_id.as_deref() == Some(external_id))
            .unwrap();
        conversation.extra.get("assignedUsers").cloned()
    };
    assert_eq!(assigned("t-1"), Some(json!(["u-ann", "u-bo"])));
    assert_eq!(assigned("t-2"), Some(json!(["u-cy", "u-ann"])));
    assert_eq!(assigned("t-3"), None, "no user: not assigned, not invited");
    assert_eq!(env.requests_to(USERS), 4, "ann, bo, cy and dee, once each");
    assert_eq!(env.stats().invitations, 0);
    assert!(
        run.stdout.contains("  dee@example.com: 2 items"),
        "{}",
        run.stdout
    );
    let before = env.stats().requests_total;
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    assert_eq!(env.stats().requests_total, before, "a re-run sends nothing");
}
