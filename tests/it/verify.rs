//! `verify`: what an import made, read back from the sandbox and compared with what was
//! sent; tampered records named by their rows, a sample of the size asked, and a
//! rehearsal's checkpoint refused against another API.

use serde_json::{Value, json};

use crate::harness::*;

/// The sample imported (51 rows done: 50 with a conversation, one customer only).
fn imported(env: &TestEnv) -> String {
    let sample = sample("tickets.csv").to_str().unwrap().to_string();
    env.import(&[&sample]).assert_code(1);
    sample
}

fn report(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn counts(report: &Value) -> [u64; 6] {
    [
        "done_rows",
        "checked",
        "matching",
        "mismatched",
        "missing",
        "existence_only",
    ]
    .map(|count| {
        report[count]
            .as_u64()
            .unwrap_or_else(|| panic!("{count}: {report}"))
    })
}

/// A row of the checkpoint: its line and conversation id, the first whose conversation
/// was sent with (or without) a status.
fn row_with_status(env: &TestEnv, with: bool) -> (i64, String) {
    env.checkpoint()
        .query_row(
            "SELECT line, conversation_id FROM rows WHERE state = 'done'
               AND conversation_id IS NOT NULL AND (instr(fingerprint, 'status=') > 0) = ?1
             ORDER BY line LIMIT 1",
            [with],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

#[test]
fn verify_finds_what_the_import_made_then_names_exactly_the_rows_tampered_with() {
    let env = TestEnv::plain();
    let sample = imported(&env);
    let run = env.verify(&["--all", "--json"]);
    run.assert_code(0);
    let found = report(&run);
    assert_eq!(counts(&found), [51, 51, 51, 0, 0, 0], "{found}");
    assert_eq!(found["customers_checked"], 21);
    assert_eq!(found["mismatches"], json!([]));
    // One conversation's status changed by an agent, another deleted.
    let (changed_line, changed) = row_with_status(&env, true);
    let status = env
        .records()
        .conversations
        .iter()
        .find(|c| c.id == changed)
        .and_then(|c| c.status.clone())
        .unwrap();
    let new_status = if status == "done" { "open" } else { "done" };
    assert!(
        env.sandbox()
            .edit_conversation(&changed, json!({"status": new_status}))
    );
    let (deleted_line, deleted) = env
        .checkpoint()
        .query_row(
            "SELECT line, conversation_id FROM rows WHERE state = 'done'
               AND conversation_id IS NOT NULL AND line > ?1 ORDER BY line LIMIT 1",
            [changed_line],
            |r| Ok::<(i64, String), _>((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(env.sandbox().delete_conversation(&deleted));
    let run = env.verify(&["--all", "--json"]);
    run.assert_code(1);
    let found = report(&run);
    assert_eq!(counts(&found), [51, 51, 49, 1, 1, 0], "{found}");
    let named: Vec<(String, i64, String, String, Option<String>)> = found["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["file"].as_str().unwrap().to_string(),
                m["line"].as_i64().unwrap(),
                m["record"].as_str().unwrap().to_string(),
                m["problem"].as_str().unwrap().to_string(),
                m["field"].as_str().map(str::to_string),
            )
        })
        .collect();
    let mut expected = vec![
        (
            sample.clone(),
            changed_line,
            "conversation".to_string(),
            "field".to_string(),
            Some("status".to_string()),
        ),
        (
            sample.clone(),
            deleted_line,
            "conversation".to_string(),
            "missing".to_string(),
            None,
        ),
    ];
    expected.sort_by_key(|m| m.1);
    assert_eq!(named, expected, "{found}");
    assert!(found["mismatches"][0]["row_key"].as_str().is_some());
    // The report in words names the same rows, and never the key.
    let run = env.verify(&[]);
    run.assert_code(1);
    assert!(
        run.stdout
            .contains(&format!("{sample} line {changed_line} "))
            && run.stdout.contains("field status is not as sent")
            && run
                .stdout
                .contains(&format!("{sample} line {deleted_line} "))
            && run.stdout.contains("is missing"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains(KEY) && !run.stderr.contains(KEY));
    // Rows an older version made, with no fingerprint, are checked for existence only:
    // the changed status is not seen, the deleted conversation is.
    let checkpoint = rusqlite::Connection::open(env.path("kustomer-import.sqlite")).unwrap();
    checkpoint
        .execute(
            "UPDATE rows SET fingerprint = NULL, customer_fingerprint = NULL",
            [],
        )
        .unwrap();
    let run = env.verify(&["--json"]);
    run.assert_code(1);
    let found = report(&run);
    assert_eq!(counts(&found), [51, 51, 50, 0, 1, 51], "{found}");
    assert_eq!(found["mismatches"][0]["line"], deleted_line);
}

#[test]
fn verify_sample_checks_the_number_of_rows_asked_spread_over_the_file() {
    let env = TestEnv::plain();
    imported(&env);
    let reads = |env: &TestEnv| env.requests_to("GET /v1/conversations/{lookup}");
    let before = reads(&env);
    let run = env.verify(&["--sample", "7", "--json"]);
    run.assert_code(0);
    let found = report(&run);
    assert_eq!(counts(&found)[..3], [51, 7, 7], "{found}");
    assert!(reads(&env) - before <= 7);
    // More than there are: every done row.
    let found = report(env.verify(&["--sample", "500", "--json"]).assert_code(0));
    assert_eq!(found["checked"], 51);
    // Deleting every conversation but those between the sampled rows shows which were
    // picked: the same ones each time, never two neighbours.
    let first = report(env.verify(&["--sample", "5", "--json"]).assert_code(0));
    assert_eq!(first["checked"], 5);
    for conversation in env.records().conversations {
        assert!(env.sandbox().delete_conversation(&conversation.id));
    }
    let lines = |found: &Value| -> Vec<i64> {
        found["mismatches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["line"].as_i64().unwrap())
            .collect()
    };
    let one = report(env.verify(&["--sample", "5", "--json"]).assert_code(1));
    let two = report(env.verify(&["--sample", "5", "--json"]).assert_code(1));
    assert_eq!(lines(&one), lines(&two));
    let picked = lines(&one);
    assert!(picked.len() >= 4, "{one}");
    assert!(picked.windows(2).all(|w| w[1] - w[0] >= 5), "{picked:?}");
    assert!(env.verify(&["--sample", "0"]).code == 2);
}

#[test]
fn verify_of_a_rehearsal_checkpoint_is_refused_against_an_api_and_done_with_sandbox() {
    let env = TestEnv::plain();
    let sample = sample("tickets.csv");
    env.import(&[sample.to_str().unwrap(), "--sandbox"])
        .assert_code(1);
    let run = env.verify(&["--checkpoint", "kustomer-import.sandbox.sqlite", "--json"]);
    run.assert_code(2);
    assert!(run.stderr.contains("--sandbox"), "{}", run.stderr);
    assert_eq!(report(&run)["stopped_because"], "target");
    assert_eq!(
        env.stats().requests.len(),
        0,
        "nothing was read from the API"
    );
    let run = env.verify(&["--sandbox", "--json"]);
    run.assert_code(0);
    assert_eq!(counts(&report(&run))[..3], [51, 51, 51]);
}

#[test]
fn verify_counts_each_conversations_notes_through_their_listing() {
    let env = TestEnv::plain();
    let lines: String = (0..3)
        .map(|t| {
            let line = json!({
                "customer": {"externalId": format!("c-{t}"), "name": format!("C {t}")},
                "conversation": {"externalId": format!("t-{t}"), "name": format!("Ticket {t}")},
                "messages": [{"externalId": format!("m-{t}"), "channel": "email",
                              "direction": "in", "preview": "hello"}],
                "notes": [{"externalId": format!("n-{t}-0"), "body": "one"},
                          {"externalId": format!("n-{t}-1"), "body": "two"}],
            });
            format!("{line}\n")
        })
        .collect();
    let file = env.write("threads.jsonl", &lines);
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    assert_eq!(env.records().note_count(), 6);
    let listings = |env: &TestEnv| env.requests_to("GET /v1/conversations/{id}/notes");
    let before = listings(&env);
    let run = env.verify(&["--json"]);
    run.assert_code(0);
    assert_eq!(counts(&report(&run)), [3, 3, 3, 0, 0, 0]);
    assert_eq!(
        listings(&env) - before,
        3,
        "one page of notes a conversation"
    );
}

#[test]
fn verify_names_a_conversation_that_belongs_to_another_customer_than_its_rows() {
    let env = TestEnv::plain();
    let sample = imported(&env);
    // The checkpoint says line 2's conversation was made for line 9's customer.
    let checkpoint = rusqlite::Connection::open(env.path("kustomer-import.sqlite")).unwrap();
    let (held, other): (String, String) = checkpoint
        .query_row(
            "SELECT (SELECT customer_id FROM rows WHERE line = 2),
                    (SELECT customer_id FROM rows WHERE line = 9)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_ne!(held, other);
    checkpoint
        .execute("UPDATE rows SET customer_id = ?1 WHERE line = 2", [&other])
        .unwrap();
    let run = env.verify(&["--json"]);
    run.assert_code(1);
    let found = report(&run);
    assert_eq!(counts(&found), [51, 51, 50, 1, 0, 0], "{found}");
    let mismatch = &found["mismatches"][0];
    assert_eq!(found["mismatches"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(
        (&mismatch["file"], &mismatch["line"], &mismatch["problem"]),
        (&json!(sample), &json!(2), &json!("other_customer"))
    );
    assert_eq!(
        (&mismatch["expected"], &mismatch["found"]),
        (&json!(other), &json!(held))
    );
}
