//! Issue 18 for the history: a message or note made earlier and edited in the source since
//! gets one PATCH of what changed, an unchanged thread sends nothing, `--on-change skip`
//! sends no item update, a lost answer on a PATCH is sent again, a run killed with SIGKILL
//! during its PATCHes resumes to day two's items with nothing made twice, bulk mode sends
//! the same PATCHes, and a checkpoint from before migration 016 adopts what its items read
//! as, with no PATCH.

use kustomer_import::sandbox::{FaultConfig, SandboxConfig};
use serde_json::{Value, json};

use crate::harness::*;

/// `conversations` tickets of 5 messages and one note each: 50 messages for 10.
fn export(conversations: usize) -> Vec<Value> {
    (0..conversations)
        .map(|t| {
            let thread: Vec<_> = (0..5)
                .map(|m| {
                    json!({"externalId": format!("m-{t}-{m}"), "channel": "email",
                           "direction": "in", "preview": format!("message {m} of {t}"),
                           "sentAt": format!("2024-01-01T00:0{m}:00Z")})
                })
                .collect();
            json!({
                "customer": {"externalId": format!("c-{t}"), "name": format!("C {t}")},
                "conversation": {"externalId": format!("t-{t}"), "name": format!("Ticket {t}")},
                "messages": thread,
                "notes": [{"externalId": format!("n-{t}"), "body": format!("note on {t}"),
                           "createdAt": "2024-01-01T00:00:30Z"}],
            })
        })
        .collect()
}

/// Day two: two messages and one note of day one edited in the source.
fn edited(mut lines: Vec<Value>) -> Vec<Value> {
    lines[0]["messages"][1]["preview"] = json!("message 1 of 0, corrected");
    lines[3]["messages"][2]["direction"] = json!("out");
    lines[5]["notes"][0]["body"] = json!("note on 5, amended");
    lines
}

/// Day two with every ticket's second message and its note edited: two PATCHes a ticket.
fn edited_throughout(mut lines: Vec<Value>) -> Vec<Value> {
    for (t, line) in lines.iter_mut().enumerate() {
        line["messages"][1]["preview"] = json!(format!("message 1 of {t}, corrected"));
        line["notes"][0]["body"] = json!(format!("note on {t}, amended"));
    }
    lines
}

/// Asserts that the sandbox holds each item of `conversations` tickets once: 5 messages and
/// a note each.
fn assert_each_item_once(env: &TestEnv, conversations: usize) {
    let stats = env.stats();
    assert_eq!(stats.messages, 5 * conversations as u64, "messages held");
    assert_eq!(stats.notes, conversations as u64, "notes held");
    assert_eq!(held(env).len(), 6 * conversations, "each externalId once");
}

fn text(lines: &[Value]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// Each item the sandbox holds, by externalId: a message's preview and direction, a
/// note's body.
fn held(env: &TestEnv) -> std::collections::BTreeMap<String, (Value, Value)> {
    let records = env.records();
    records
        .conversations
        .iter()
        .flat_map(|c| records.thread(&c.id).to_vec())
        .map(|item| {
            let body = &item.body;
            let first = body.get("preview").or(body.get("body")).cloned();
            let second = body.get("direction").cloned().unwrap_or(Value::Null);
            (
                item.external_id.unwrap(),
                (first.unwrap_or(Value::Null), second),
            )
        })
        .collect()
}

/// What `lines` say each item is, in the shape of [`held`].
fn expected(lines: &[Value]) -> std::collections::BTreeMap<String, (Value, Value)> {
    let mut items = std::collections::BTreeMap::new();
    for line in lines {
        for m in line["messages"].as_array().unwrap() {
            let id = m["externalId"].as_str().unwrap().to_string();
            items.insert(id, (m["preview"].clone(), m["direction"].clone()));
        }
        for n in line["notes"].as_array().unwrap() {
            let id = n["externalId"].as_str().unwrap().to_string();
            items.insert(id, (n["body"].clone(), Value::Null));
        }
    }
    items
}

#[test]
fn day_two_edits_two_messages_and_a_note_sends_exactly_three_patches_then_nothing() {
    let env = TestEnv::plain();
    let file = env.write("threads.jsonl", &text(&export(10)));
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    let day_two = edited(export(10));
    let file = env.write("threads.jsonl", &text(&day_two));
    let before = env.stats();
    let run = env.import(&[file.to_str().unwrap()]);
    run.assert_code(0);
    let after = env.stats();
    assert_eq!(after.messages_updated - before.messages_updated, 2);
    assert_eq!(after.notes_updated - before.notes_updated, 1);
    assert_eq!(
        after.updates_total - before.updates_total,
        3,
        "three PATCHes"
    );
    assert_eq!(after.creates_total, before.creates_total, "nothing made");
    assert_eq!(
        after.requests_total - before.requests_total,
        3,
        "nothing but them"
    );
    assert_eq!(held(&env), expected(&day_two), "the sandbox holds day two");
    assert!(run.stdout.contains("2 messages, 1 notes"), "{}", run.stdout);
    // status says the same of the run, from the checkpoint.
    let status = env.command(&["status", "--json"]);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    let last = &status["runs"][0];
    assert_eq!(
        [
            &last["rows_updated"],
            &last["messages_updated"],
            &last["notes_updated"]
        ],
        [&json!(3), &json!(2), &json!(1)],
        "{last}"
    );
    let status = env.command(&["status"]);
    assert!(
        status
            .stdout
            .contains("(updated 3: 2 messages, 1 notes, unchanged 7)"),
        "{}",
        status.stdout
    );

    env.assert_import_sends_nothing(
        &[file.to_str().unwrap()],
        "an unchanged re-run sends nothing",
    );
}

#[test]
fn under_on_change_skip_no_item_update_is_sent_and_fail_names_the_field() {
    let env = TestEnv::plain();
    let file = env.write("threads.jsonl", &text(&export(10)));
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    let file = env.write("threads.jsonl", &text(&edited(export(10))));
    env.assert_import_sends_nothing(
        &[file.to_str().unwrap(), "--on-change", "skip"],
        "skip sends nothing",
    );
    assert_eq!(held(&env), expected(&export(10)), "day one's items kept");

    let before = env.stats().requests_total;
    let run = env.import(&[file.to_str().unwrap(), "--on-change", "fail"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert_eq!(env.stats().requests_total, before, "fail sends nothing");
    let fields: Vec<String> = env.errors().into_iter().map(|e| e.2).collect();
    assert!(
        fields.contains(&"message.preview".to_string()),
        "{fields:?}"
    );
    assert!(fields.contains(&"note.body".to_string()), "{fields:?}");
    assert_eq!(env.rows_in_state("done"), 10, "the rows stay done");
}

#[test]
fn a_lost_answer_on_an_items_patch_is_sent_again_and_lands() {
    let env = TestEnv::plain();
    let file = env.write("threads.jsonl", &text(&export(10)));
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    env.sandbox().set_faults(FaultConfig {
        drop_after_write_rate: 0.5,
        fail_after_write_rate: 0.3,
        seed: Some(18),
        ..FaultConfig::default()
    });
    let day_two = edited(export(10));
    let file = env.write("threads.jsonl", &text(&day_two));
    let before = env.stats();
    env.import(&[
        file.to_str().unwrap(),
        "--max-retries",
        "30",
        "--reconcile-delay",
        "0.05",
    ])
    .assert_code(0);
    let after = env.stats();
    assert!(
        after.faults.drop_after_write + after.faults.fail_after_write
            > before.faults.drop_after_write + before.faults.fail_after_write,
        "no fault was injected"
    );
    assert!(after.updates_total - before.updates_total >= 3);
    assert_eq!(after.creates_total, before.creates_total, "nothing made");
    assert_eq!(held(&env), expected(&day_two));
}

#[test]
fn a_checkpoint_from_before_migration_016_adopts_its_items_with_no_patch() {
    let env = TestEnv::plain();
    let file = env.write("threads.jsonl", &text(&export(10)));
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    // What a version before this one left: no fingerprint on any record.
    rusqlite::Connection::open(env.path("kustomer-import.sqlite"))
        .unwrap()
        .execute("UPDATE records SET fingerprint = NULL", [])
        .unwrap();
    env.assert_import_sends_nothing(&[file.to_str().unwrap()], "adopted, nothing sent");
    let unprinted: i64 = env
        .checkpoint()
        .query_row(
            "SELECT count(*) FROM records WHERE fingerprint IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unprinted, 0, "every item adopted");
    // Then an edit is sent as on any checkpoint.
    let file = env.write("threads.jsonl", &text(&edited(export(10))));
    let before = env.stats().updates_total;
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    assert_eq!(env.stats().updates_total - before, 3);
}

/// Item records of the checkpoint whose fingerprint is no longer day one's: the PATCHes
/// recorded as sent.
fn items_recorded_updated(env: &TestEnv, day_one: &[(String, String)]) -> u64 {
    let now = item_fingerprints(env);
    day_one.iter().filter(|print| !now.contains(print)).count() as u64
}

/// Each item record's externalId and fingerprint.
fn item_fingerprints(env: &TestEnv) -> Vec<(String, String)> {
    let db = env.checkpoint();
    let mut statement = db
        .prepare("SELECT external_id, fingerprint FROM records ORDER BY external_id")
        .unwrap();
    statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_run_killed_during_its_item_patches_resumes_to_day_two_with_nothing_made_twice() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        latency: std::time::Duration::from_millis(5),
        jitter: std::time::Duration::from_millis(10),
        ..SandboxConfig::default()
    });
    let file = env.write("threads.jsonl", &text(&export(40)));
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    let day_one = item_fingerprints(&env);
    let made = env.stats().creates_total;
    let day_two = edited_throughout(export(40));
    let file = env.write("threads.jsonl", &text(&day_two));
    let args = [file.to_str().unwrap(), "--concurrency", "4"];
    let edits = 80;
    // A PATCH whose answer came but whose record the kill beat is sent again: at most the
    // PATCHes the sandbox had when the run died less those recorded, counted at each kill.
    let mut sent_unrecorded = 0;
    for kill_at in [15, 45] {
        let mut child = env.spawn_import(&args);
        env.wait_for(&format!("{kill_at} item updates"), |stats| {
            stats.messages_updated + stats.notes_updated >= kill_at
        });
        child.kill().unwrap();
        child.wait().unwrap();
        let stats = env.stats();
        let patched = stats.messages_updated + stats.notes_updated;
        assert!(patched < edits, "killed before the end ({patched} PATCHes)");
        let recorded = items_recorded_updated(&env, &day_one);
        assert!(recorded <= patched, "{recorded} recorded of {patched} sent");
        sent_unrecorded += patched - recorded;
    }
    env.import(&args).assert_code(0);
    let stats = env.stats();
    assert_eq!(held(&env), expected(&day_two), "every item as day two says");
    assert_each_item_once(&env, 40);
    assert_eq!(stats.creates_total, made, "nothing made since day one");
    let patches = stats.messages_updated + stats.notes_updated;
    assert!(
        (edits..=edits + sent_unrecorded).contains(&patches),
        "{patches} PATCHes for {edits} edits, {sent_unrecorded} unrecorded at the kills"
    );
    assert_eq!(items_recorded_updated(&env, &day_one), edits);
    env.assert_import_sends_nothing(&args, "every PATCH is recorded as sent");
}

#[test]
fn in_bulk_mode_edited_items_get_one_patch_each_and_new_ones_go_in_a_job() {
    let env = TestEnv::plain();
    let file = env.write("threads.jsonl", &text(&export(10)));
    env.import(&[file.to_str().unwrap(), "--mode", "bulk"])
        .assert_code(0);
    assert_each_item_once(&env, 10);
    let jobs = env.requests_to("POST /v1/messages/bulk");
    let mut day_two = edited(export(10));
    // And one new message on ticket 7, beside the edits.
    day_two[7]["messages"].as_array_mut().unwrap().push(json!({
        "externalId": "m-7-5", "channel": "email", "direction": "out",
        "preview": "a reply of day two", "sentAt": "2024-01-02T00:00:00Z"}));
    let file = env.write("threads.jsonl", &text(&day_two));
    let before = env.stats();
    let run = env.import(&[file.to_str().unwrap(), "--mode", "bulk"]);
    run.assert_code(0);
    let after = env.stats();
    assert_eq!(after.messages_updated - before.messages_updated, 2);
    assert_eq!(after.notes_updated - before.notes_updated, 1);
    assert_eq!(after.updates_total - before.updates_total, 3, "alone each");
    assert_eq!(after.messages, before.messages + 1, "the new message only");
    assert_eq!(
        env.requests_to("POST /v1/messages/bulk"),
        jobs + 1,
        "the new message in a job"
    );
    assert_eq!(env.requests_to("POST /v1/messages"), 0, "none alone");
    assert_eq!(after.notes, before.notes);
    assert_eq!(after.customers, before.customers);
    assert_eq!(after.conversations, before.conversations);
    assert_eq!(held(&env), expected(&day_two), "the sandbox holds day two");
    assert!(run.stdout.contains("2 messages, 1 notes"), "{}", run.stdout);
    env.assert_import_sends_nothing(
        &[file.to_str().unwrap(), "--mode", "bulk"],
        "the same export sends nothing",
    );
}

/// The sync counts of the checkpoint's last run: rows updated and unchanged.
fn last_run_counts(env: &TestEnv) -> (i64, i64) {
    env.checkpoint()
        .query_row(
            "SELECT rows_updated, rows_unchanged FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

#[test]
fn a_dropped_item_and_an_edit_update_fields_leaves_out_are_read_once_then_not_again() {
    let env = TestEnv::plain();
    let file = env.write("threads.jsonl", &text(&export(10)));
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    // Day two's export dropped ticket 2's last message, and edited a preview of ticket 4
    // that `--update-fields` does not allow.
    let mut day_two = export(10);
    day_two[2]["messages"].as_array_mut().unwrap().pop();
    day_two[4]["messages"][0]["preview"] = json!("message 0 of 4, corrected");
    let file = env.write("threads.jsonl", &text(&day_two));
    let args = [
        file.to_str().unwrap(),
        "--update-fields",
        "status,message.direction",
    ];
    let before = env.stats().requests_total;
    let night_two = env.import(&args);
    night_two.assert_code(0);
    assert_eq!(env.stats().requests_total, before, "nothing to send");
    assert!(
        night_two.stdout.contains("already done:         8"),
        "two threads read again: {}",
        night_two.stdout
    );
    let night_three = env.import(&[args.as_slice(), &["--json"]].concat());
    night_three.assert_code(0);
    assert_eq!(env.stats().requests_total, before, "nothing sent again");
    let summary: Value = serde_json::from_str(&night_three.stdout).unwrap();
    assert_eq!(summary["rows_skipped_done"], 10, "no thread read again");
    assert_eq!(summary["rows_unchanged"], 10, "{summary}");
    assert_eq!(summary["requests"], 0);
    assert_eq!(last_run_counts(&env), (0, 10), "every row unchanged");
    assert_eq!(env.stats().messages, 50, "the dropped message is kept");

    // A night that allows previews reads ticket 4's thread again and sends its edit.
    let updates = env.stats().updates_total;
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    assert_eq!(
        env.stats().updates_total - updates,
        1,
        "the preview, now allowed"
    );
    assert_eq!(env.stats().messages_updated, 1);
    let held = held(&env);
    assert_eq!(held["m-4-0"].0, json!("message 0 of 4, corrected"));
    let night_five = env.assert_import_sends_nothing(&[file.to_str().unwrap()], "all sent");
    assert!(
        night_five.stdout.contains("already done:         10"),
        "{}",
        night_five.stdout
    );
}
