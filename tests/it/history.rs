//! A conversation's history (issue 17): messages and notes nested in their conversation's
//! line land exactly once, in order, on the right conversation, under faults, a kill and a
//! second run with new messages; a refused message fails only itself, and its row is
//! reported partly imported.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use kustomer_import::sandbox::{FaultConfig, Records, SandboxConfig, Stats};
use serde_json::json;

use crate::harness::*;

/// A nested export: `conversations` tickets of `messages` messages and one note each, the
/// thread's items in time order; message `m` of ticket `t` is `m-t-m`.
pub(crate) fn nested(conversations: usize, messages: usize) -> String {
    (0..conversations)
        .map(|t| {
            let thread: Vec<_> = (0..messages)
                .map(|m| {
                    json!({"externalId": format!("m-{t}-{m}"), "channel": "email",
                           "direction": if m % 2 == 0 { "in" } else { "out" },
                           "preview": format!("message {m} of ticket {t}"),
                           "sentAt": format!("2024-01-01T00:{:02}:00Z", m % 60)})
                })
                .collect();
            let line = json!({
                "customer": {"externalId": format!("c-{}", t % 7), "name": format!("C {}", t % 7)},
                "conversation": {"externalId": format!("t-{t}"), "name": format!("Ticket {t}")},
                "messages": thread,
                "notes": [{"externalId": format!("n-{t}"), "body": format!("note on {t}"),
                           "createdAt": "2024-01-01T00:00:30Z"}],
            });
            format!("{line}\n")
        })
        .collect()
}

/// Each conversation's thread as externalIds in the order the sandbox holds them, by the
/// conversation's externalId.
fn threads(records: &Records) -> HashMap<String, Vec<String>> {
    records
        .conversations
        .iter()
        .map(|conversation| {
            let items = records
                .thread(&conversation.id)
                .iter()
                .map(|item| item.external_id.clone().unwrap_or_default())
                .collect();
            (conversation.external_id.clone().unwrap_or_default(), items)
        })
        .collect()
}

/// Every ticket of `nested(conversations, messages)` holds exactly its thread, once each.
pub(crate) fn assert_threads_exact(env: &TestEnv, conversations: usize, messages: usize) {
    let records = env.records();
    assert_eq!(records.conversations.len(), conversations, "conversations");
    let threads = threads(&records);
    for t in 0..conversations {
        let mut expected: Vec<String> = (0..messages).map(|m| format!("m-{t}-{m}")).collect();
        expected.push(format!("n-{t}"));
        let mut held = threads[&format!("t-{t}")].clone();
        held.sort();
        expected.sort();
        assert_eq!(held, expected, "the thread of t-{t}, each item once");
    }
}

fn done_records(env: &TestEnv) -> i64 {
    env.checkpoint()
        .query_row(
            "SELECT count(*) FROM records WHERE state = 'done'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn a_nested_export_lands_every_message_and_note_once_in_order_and_a_second_run_sends_nothing() {
    let env = TestEnv::plain();
    let file = env.write("threads.jsonl", &nested(6, 4));
    let run = env.import(&[file.to_str().unwrap()]);
    run.assert_code(0);
    assert_threads_exact(&env, 6, 4);
    let records = env.records();
    let first = &records
        .conversations
        .iter()
        .find(|c| c.external_id.as_deref() == Some("t-0"))
        .unwrap();
    let order: Vec<String> = records
        .thread(&first.id)
        .iter()
        .map(|item| item.external_id.clone().unwrap())
        .collect();
    // By time: the note (00:00:30) after the first message (00:00) and before the second.
    assert_eq!(order, ["m-0-0", "n-0", "m-0-1", "m-0-2", "m-0-3"]);
    assert_eq!(done_records(&env), 30);
    assert_eq!(env.rows_in_state("done"), 6);
    assert!(
        run.stdout.contains("messages created:       24"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("notes created:          6"),
        "{}",
        run.stdout
    );

    env.assert_import_sends_nothing(&[file.to_str().unwrap()], "a second run sends nothing");
}

/// `nested(3, 3)` as tomorrow's export: ticket 1 with `new` messages appended to its thread
/// and, with `status`, that status.
fn tomorrow(new: usize, status: Option<&str>) -> String {
    let mut lines: Vec<serde_json::Value> = nested(3, 3)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    if let Some(status) = status {
        lines[1]["conversation"]["status"] = json!(status);
    }
    for m in 3..3 + new {
        lines[1]["messages"].as_array_mut().unwrap().push(json!({
            "externalId": format!("m-1-{m}"), "channel": "email", "direction": "out",
            "preview": "a new one", "sentAt": format!("2024-01-02T00:0{m}:00Z")}));
    }
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// Imports `nested(3, 3)`, then `tomorrow` over it with `args`, expecting exit `code`: the
/// sandbox's counters before and after the second run, and that run.
fn day_two(env: &TestEnv, tomorrow: &str, args: &[&str], code: i32) -> (Stats, Stats, Run) {
    let file = env.write("threads.jsonl", &nested(3, 3));
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    let file = env.write("threads.jsonl", tomorrow);
    let before = env.stats();
    let run = env.import(&[&[file.to_str().unwrap()], args].concat());
    run.assert_code(code);
    (before, env.stats(), run)
}

#[test]
fn tomorrows_export_with_two_new_messages_on_an_old_conversation_sends_exactly_two_creates() {
    let env = TestEnv::plain();
    let (before, after, _) = day_two(&env, &tomorrow(2, None), &[], 0);
    assert_eq!(
        after.creates_total - before.creates_total,
        2,
        "two creates, nothing else made"
    );
    assert_eq!(after.messages - before.messages, 2);
    let threads = threads(&env.records());
    assert_eq!(threads["t-1"].len(), 6);
    assert_eq!(
        &threads["t-1"][4..],
        ["m-1-3", "m-1-4"],
        "appended at the end"
    );
}

fn status_of(env: &TestEnv, conversation: &str) -> Option<String> {
    let records = env.records();
    let held = records
        .conversations
        .iter()
        .find(|c| c.external_id.as_deref() == Some(conversation));
    held.and_then(|c| c.status.clone())
}

fn a_conversation_closed_with_new_messages_gets_both_and_then_nothing(mode: &str) {
    let env = TestEnv::plain();
    let (before, after, run) = day_two(&env, &tomorrow(2, Some("done")), &["--mode", mode], 0);
    assert_eq!(after.messages - before.messages, 2, "the two new messages");
    assert_eq!(
        after.conversations_updated - before.conversations_updated,
        1,
        "the status change, sent before the thread"
    );
    // Nothing else made (in bulk mode the messages go in a job, not as creates).
    assert_eq!(after.customers, before.customers);
    assert_eq!(after.conversations, before.conversations);
    if mode == "single" {
        assert_eq!(after.creates_total - before.creates_total, 2);
    }
    assert_eq!(after.customers_updated, before.customers_updated);
    assert_eq!(status_of(&env, "t-1").as_deref(), Some("done"));
    assert!(
        run.stdout.contains("updated:              1 (done earlier"),
        "the row counts as updated: {}",
        run.stdout
    );

    // What was sent is what is recorded: the same export again sends nothing.
    let before = env.stats().requests_total;
    let file = env.path("threads.jsonl");
    env.import(&[file.to_str().unwrap(), "--mode", mode])
        .assert_code(0);
    assert_eq!(
        env.stats().requests_total,
        before,
        "a third run sends nothing"
    );
}

#[test]
fn a_conversation_closed_with_new_messages_in_tomorrows_export_gets_both_and_then_nothing() {
    a_conversation_closed_with_new_messages_gets_both_and_then_nothing("single");
}

#[test]
fn in_bulk_mode_a_conversation_closed_with_new_messages_gets_both_and_then_nothing() {
    a_conversation_closed_with_new_messages_gets_both_and_then_nothing("bulk");
}

#[test]
fn under_on_change_skip_new_messages_go_and_the_change_waits_for_a_run_that_updates() {
    let env = TestEnv::plain();
    let (before, after, _) = day_two(
        &env,
        &tomorrow(1, Some("done")),
        &["--on-change", "skip"],
        0,
    );
    assert_eq!(after.messages - before.messages, 1);
    assert_eq!(
        after.updates_total, before.updates_total,
        "skip sends no update"
    );
    assert_eq!(status_of(&env, "t-1").as_deref(), Some("open"));

    // Skipped, not forgotten: what was sent before is still what the checkpoint holds.
    let file = env.path("threads.jsonl");
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    let last = env.stats();
    assert_eq!(last.conversations_updated - after.conversations_updated, 1);
    assert_eq!(last.creates_total, after.creates_total);
    assert_eq!(status_of(&env, "t-1").as_deref(), Some("done"));
}

#[test]
fn under_on_change_fail_the_reopened_row_is_reported_its_messages_go_and_it_stays_done() {
    let env = TestEnv::plain();
    let (before, after, _) = day_two(
        &env,
        &tomorrow(1, Some("done")),
        &["--on-change", "fail"],
        1,
    );
    assert_eq!(after.messages - before.messages, 1);
    assert_eq!(after.updates_total, before.updates_total);
    let errors = env.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].3.contains("conversation.status"), "{errors:?}");
    assert_eq!(
        env.rows_in_state("done"),
        3,
        "reported only: the row stays done"
    );
}

#[test]
fn lost_answers_on_message_and_note_creates_are_reconciled_not_sent_twice() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        faults: FaultConfig {
            fail_after_write_rate: 0.1,
            drop_after_write_rate: 0.1,
            fail_rate: 0.05,
            busy_rate: 0.05,
            seed: Some(17),
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    });
    let file = env.write("threads.jsonl", &nested(8, 5));
    env.import(&[
        file.to_str().unwrap(),
        "--max-retries",
        "30",
        "--reconcile-delay",
        "0.05",
    ])
    .assert_code(0);
    assert_threads_exact(&env, 8, 5);
    assert_eq!(done_records(&env), 48);
    let faults = env.stats().faults;
    assert!(
        faults.fail_after_write + faults.drop_after_write > 0,
        "no fault was injected"
    );
}

/// Kills a run of `nested(conversations, 8)` with SIGKILL once the sandbox holds each of
/// `kills` messages, then lets a last run finish: every item lands once.
fn kill_during_threads_and_resume(mode: &str, conversations: usize, kills: [u64; 2]) {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        latency: Duration::from_millis(5),
        jitter: Duration::from_millis(10),
        bulk_delay: Duration::from_millis(100),
        ..SandboxConfig::default()
    });
    let file = env.write("threads.jsonl", &nested(conversations, 8));
    // A job killed before its submit's answer was recorded is waited out by the next
    // run: a second is plenty for the sandbox's jobs.
    let args = [
        file.to_str().unwrap(),
        "--concurrency",
        "4",
        "--mode",
        mode,
        "--bulk-lost-wait",
        "1",
    ];
    for kill_at in kills {
        let mut child = env.spawn_import(&args);
        env.wait_for(&format!("{kill_at} messages"), |stats| {
            stats.messages >= kill_at
        });
        child.kill().unwrap();
        child.wait().unwrap();
    }
    env.import(&args).assert_code(0);
    assert_threads_exact(&env, conversations, 8);
    assert_threads_in_order(&env, conversations, 8);
    assert_eq!(done_records(&env), conversations as i64 * 9);
}

#[test]
fn a_run_killed_in_the_middle_of_its_threads_resumes_and_lands_each_item_once() {
    kill_during_threads_and_resume("single", 10, [15, 45]);
}

#[test]
fn a_bulk_run_killed_in_the_middle_of_its_threads_resumes_and_lands_each_item_once() {
    kill_during_threads_and_resume("bulk", 60, [100, 300]);
}

/// Every thread of `nested(conversations, messages)` in time order: the first message
/// (00:00), the note (00:00:30), then the other messages.
fn assert_threads_in_order(env: &TestEnv, conversations: usize, messages: usize) {
    let threads = threads(&env.records());
    for t in 0..conversations {
        let mut expected = vec![format!("m-{t}-0"), format!("n-{t}")];
        expected.extend((1..messages).map(|m| format!("m-{t}-{m}")));
        assert_eq!(threads[&format!("t-{t}")], expected, "the thread of t-{t}");
    }
}

/// The single endpoints of history: in bulk mode only what a job could not settle goes
/// through them.
const SINGLE_HISTORY_ROUTES: [&str; 3] = [
    "POST /v1/conversations/{id}/messages",
    "POST /v1/conversations/{id}/notes",
    "GET /v1/messages/{lookup}",
];

#[test]
fn bulk_mode_sends_the_threads_in_jobs_of_many_conversations_each_in_its_order() {
    let env = TestEnv::plain();
    let file = env.write("threads.jsonl", &nested(40, 5));
    let run = env.import(&[file.to_str().unwrap(), "--mode", "bulk"]);
    run.assert_code(0);
    assert_threads_exact(&env, 40, 5);
    assert_threads_in_order(&env, 40, 5);
    assert_eq!(env.rows_in_state("done"), 40);
    assert_eq!(done_records(&env), 240);
    for route in SINGLE_HISTORY_ROUTES {
        assert_eq!(env.requests_to(route), 0, "{route}");
    }
    // Each thread goes in three runs (its first message, its note, the rest), and each job
    // carries the runs of many threads: 40 threads' 200 messages and 40 notes take a few
    // jobs, not one request per item.
    let message_jobs = env.requests_to("POST /v1/messages/bulk");
    let note_jobs = env.requests_to("POST /v1/notes/bulk");
    assert!(
        (2..=6).contains(&message_jobs) && (1..=3).contains(&note_jobs),
        "{message_jobs} jobs of messages, {note_jobs} of notes"
    );
    assert!(
        run.stdout.contains("messages created:       200"),
        "{}",
        run.stdout
    );
    env.assert_import_sends_nothing(
        &[file.to_str().unwrap(), "--mode", "bulk"],
        "a second run sends nothing",
    );
}

#[test]
fn lost_answers_on_history_jobs_are_reconciled_not_sent_twice() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        faults: FaultConfig {
            // A run of 30 threads makes only a score of jobs: faults this frequent make
            // sure some of their answers are lost.
            fail_after_write_rate: 0.2,
            drop_after_write_rate: 0.3,
            fail_rate: 0.05,
            busy_rate: 0.05,
            seed: Some(29),
            ..FaultConfig::default()
        },
        // Jobs run well within --bulk-lost-wait: a job whose answer was lost has run
        // before its items are looked up (the wait is what keeps a late job from making
        // an item twice).
        bulk_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    });
    let file = env.write("threads.jsonl", &nested(30, 6));
    env.import(&[
        file.to_str().unwrap(),
        "--mode",
        "bulk",
        "--bulk-lost-wait",
        "0.5",
        "--reconcile-delay",
        "0.05",
        "--max-retries",
        "30",
    ])
    .assert_code(0);
    assert_threads_exact(&env, 30, 6);
    assert_threads_in_order(&env, 30, 6);
    assert_eq!(done_records(&env), 210);
    let faults = env.stats().faults;
    assert!(
        faults.fail_after_write + faults.drop_after_write > 0,
        "no answer was lost"
    );
    assert!(env.requests_to("POST /v1/messages/bulk") > 0);
}

#[test]
fn a_run_killed_while_a_job_of_messages_is_queued_polls_it_and_sends_nothing_twice() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        bulk_delay: Duration::from_secs(2),
        ..SandboxConfig::default()
    });
    let file = env.write("threads.jsonl", &nested(20, 4));
    let child = env.spawn_import(&[file.to_str().unwrap(), "--mode", "bulk"]);
    env.kill_once_queued("kind = 'messages'", child);
    let sent: i64 = env
        .checkpoint()
        .query_row(
            "SELECT count(*) FROM records WHERE state = 'sent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(sent > 0, "the queued job's items are recorded as sent");
    let status = env.command(&["status"]);
    assert!(
        status.stdout.contains("queued"),
        "{}{}",
        status.stdout,
        status.stderr
    );

    env.import(&[file.to_str().unwrap(), "--mode", "bulk"])
        .assert_code(0);
    assert_threads_exact(&env, 20, 4);
    assert_threads_in_order(&env, 20, 4);
    assert_eq!(done_records(&env), 100);
    // The queued job was polled and its results applied: none of its items was looked up
    // or sent again.
    for route in SINGLE_HISTORY_ROUTES {
        assert_eq!(env.requests_to(route), 0, "{route}");
    }
    let open: i64 = env
        .checkpoint()
        .query_row(
            "SELECT count(*) FROM bulk_jobs WHERE state IN ('submitting', 'queued')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open, 0);
}

#[test]
fn a_history_job_refused_whole_is_halved_until_the_run_with_the_bad_item_goes_alone() {
    // The org defines one custom attribute; one message of 40 threads sets another, which
    // no local check can know of. The API refuses a job with it whole.
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        custom_attributes: Some(vec!["tierStr".into()]),
        bulk_refuse_invalid: true,
        bulk_delay: Duration::from_millis(20),
        ..SandboxConfig::default()
    });
    let mut lines: Vec<serde_json::Value> = nested(40, 5)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    lines[23]["messages"][2]["custom"] = json!({"levelStr": "gold"});
    let export: String = lines.iter().map(|line| format!("{line}\n")).collect();
    let file = env.write("threads.jsonl", &export);
    env.import(&[file.to_str().unwrap(), "--mode", "bulk"])
        .assert_code(1);
    // Every other item lands, in order; the bad one fails alone, with the server's words,
    // and its conversation is reported partly imported.
    let threads = threads(&env.records());
    for t in (0..40).filter(|t| *t != 23) {
        let mut expected = vec![format!("m-{t}-0"), format!("n-{t}")];
        expected.extend((1..5).map(|m| format!("m-{t}-{m}")));
        assert_eq!(threads[&format!("t-{t}")], expected, "the thread of t-{t}");
    }
    assert_eq!(
        threads["t-23"],
        ["m-23-0", "n-23", "m-23-1", "m-23-3", "m-23-4"]
    );
    let errors = env.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (_, line, field, reason) = &errors[0];
    assert_eq!((*line, field.as_str()), (24, "history"));
    assert!(
        reason.contains("partly imported: 1 item") && reason.contains("/custom/levelStr"),
        "{reason}"
    );
    // Halved down to the bad run: a few refusals, and only its items (the four messages
    // after the note) sent alone.
    let refused = env.stats().requests["POST /v1/messages/bulk"]
        .get(&400)
        .copied()
        .unwrap_or(0);
    assert!((2..=8).contains(&refused), "{refused} refusals");
    assert_eq!(env.requests_to("POST /v1/conversations/{id}/messages"), 4);
}

#[test]
fn refused_messages_fail_alone_and_their_conversation_is_reported_partly_imported() {
    // Yesterday's conversations, made without their thread; today the thread arrives and
    // the API refuses its items (the conversations are gone: each create answers 404).
    let env = TestEnv::plain();
    let bare: String = nested(2, 3)
        .lines()
        .map(|line| {
            let mut row: serde_json::Value = serde_json::from_str(line).unwrap();
            row.as_object_mut().unwrap().remove("messages");
            row.as_object_mut().unwrap().remove("notes");
            format!("{row}\n")
        })
        .collect();
    let file = env.write("threads.jsonl", &bare);
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    let elsewhere = env.other_sandbox();
    let file = env.write("threads.jsonl", &nested(2, 3));
    let mut command = env.import_command(&[file.to_str().unwrap(), "--retarget"]);
    command.env("KUSTOMER_BASE_URL", elsewhere.base_url());
    let run = run(command);
    run.assert_code(1);
    assert!(
        run.stdout.contains("history refused:        8"),
        "{}",
        run.stdout
    );
    let mut errors = env.errors();
    // The two rows are written in parallel: their lines come in either order.
    errors.sort_by_key(|error| error.1);
    assert_eq!(errors.len(), 2, "one line a conversation: {errors:?}");
    let (_, line, field, reason) = &errors[0];
    assert_eq!((*line, field.as_str()), (1, "history"));
    assert!(
        reason.contains("partly imported: 4 items") && reason.contains("m-0-0"),
        "{reason}"
    );
    let failed: i64 = env
        .checkpoint()
        .query_row(
            "SELECT count(*) FROM records WHERE state = 'failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(failed, 8, "each item failed on its own");
    assert_eq!(env.rows_in_state("failed"), 2);
}

#[test]
fn the_zendesk_sample_lands_its_comments_as_messages_and_its_private_ones_as_notes() {
    let env = TestEnv::plain();
    let tickets = sample("zendesk/tickets.json");
    let users = sample("zendesk/users.json");
    let args = [
        "--preset",
        "zendesk-json",
        tickets.to_str().unwrap(),
        "--users",
        users.to_str().unwrap(),
    ];
    env.import(&args).assert_code(0);
    let records = env.records();
    assert_eq!(records.conversations.len(), 5);
    assert_eq!((records.message_count(), records.note_count()), (40, 2));
    // Every comment once, under the ticket it belongs to.
    for conversation in &records.conversations {
        let ids: Vec<String> = records
            .thread(&conversation.id)
            .iter()
            .map(|item| item.external_id.clone().unwrap())
            .collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "no comment twice");
        assert!(ids.iter().all(|id| id.starts_with("zendesk-comment-")));
    }
    assert_second_run_only_lists_the_orgs_tags(&env, &args);
}

#[test]
fn a_child_file_of_comments_joins_its_conversations_in_any_order_and_its_orphan_is_reported() {
    let env = TestEnv::plain();
    let mapping = sample("child/tickets.mapping.toml");
    let messages = sample("child/messages.csv");
    let tickets = sample("child/tickets.csv");
    let args = [
        "--mapping",
        mapping.to_str().unwrap(),
        "--messages",
        messages.to_str().unwrap(),
        tickets.to_str().unwrap(),
    ];
    env.import(&args).assert_code(1);
    let threads = threads(&env.records());
    // In time order, notes (public = false) among the messages; C-8's ticket is not there.
    assert_eq!(threads["T-1"], ["C-1", "C-2", "C-3"]);
    assert_eq!(threads["T-2"], ["C-4", "C-5", "C-6"]);
    assert_eq!(threads["T-3"], ["C-7"]);
    let records = env.records();
    assert_eq!((records.message_count(), records.note_count()), (5, 2));
    let errors = env.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (file, line, field, reason) = &errors[0];
    assert!(file.ends_with("messages.csv"), "{file}");
    assert_eq!((*line, field.as_str()), (9, "history.conversation"));
    assert!(reason.contains("\"T-9\""), "{reason}");
    assert_eq!(env.rows_in_state("done"), 3);
    let before = env.stats().requests_total;
    env.import(&args).assert_code(1);
    assert_eq!(
        env.stats().requests_total,
        before,
        "a second run sends nothing"
    );
}

#[test]
fn a_child_record_that_names_no_conversation_is_a_failed_row_at_its_line() {
    let env = TestEnv::plain();
    let mapping = sample("child/tickets.mapping.toml");
    let tickets = sample("child/tickets.csv");
    let mut messages = std::fs::read_to_string(sample("child/messages.csv")).unwrap();
    messages.push_str("C-10,,true,end-user,2024-03-05T08:00:00Z,Which ticket was this?\n");
    let messages = env.write("messages.csv", &messages);
    let args = [
        "--mapping",
        mapping.to_str().unwrap(),
        "--messages",
        messages.to_str().unwrap(),
        tickets.to_str().unwrap(),
    ];
    env.import(&args).assert_code(1);
    let mut errors = env.errors();
    errors.sort_by_key(|error| error.1);
    let lines: Vec<(u64, &str)> = errors
        .iter()
        .map(|(_, line, field, _)| (*line, field.as_str()))
        .collect();
    assert_eq!(
        lines,
        [(9, "history.conversation"), (10, "history.conversation")]
    );
    assert!(errors[1].3.contains("is empty"), "{errors:?}");
    assert!(errors[1].0.ends_with("messages.csv"));
    assert_eq!(
        env.rows_in_state("failed"),
        2,
        "both are rows of the checkpoint"
    );
}

/// Each conversation's thread as (externalId, kind) in the order the sandbox holds it.
fn kinds(records: &Records) -> HashMap<String, Vec<(String, &'static str)>> {
    records
        .conversations
        .iter()
        .map(|conversation| {
            let items = records
                .thread(&conversation.id)
                .iter()
                .map(|item| {
                    let kind = match item.kind {
                        kustomer_import::sandbox::ThreadKind::Message => "message",
                        kustomer_import::sandbox::ThreadKind::Note => "note",
                    };
                    (item.external_id.clone().unwrap_or_default(), kind)
                })
                .collect();
            (conversation.external_id.clone().unwrap_or_default(), items)
        })
        .collect()
}

/// The samples/intercom export, as the sandbox holds it after an import: three of its four
/// conversations (218's line 9 has an author type the mapping cannot make a direction),
/// each message and note once, in time order, whatever the lines' order.
fn assert_intercom_landed(env: &TestEnv) {
    let records = env.records();
    let held = kinds(&records);
    let owned = |items: &[(&str, &'static str)]| -> Vec<(String, &'static str)> {
        items
            .iter()
            .map(|(id, kind)| (id.to_string(), *kind))
            .collect()
    };
    assert_eq!(held.len(), 3, "{held:?}");
    assert_eq!(
        held["215"],
        owned(&[
            ("p-1", "message"),
            ("p-2", "note"),
            ("p-3", "message"),
            ("p-4", "message")
        ])
    );
    assert_eq!(
        held["216"],
        owned(&[("p-5", "message"), ("p-6", "message"), ("p-7", "note")])
    );
    assert_eq!(
        held["217"],
        owned(&[("p-8", "message"), ("p-9", "message")])
    );
    assert_eq!((records.message_count(), records.note_count()), (7, 2));
    // The first line of 216 (line 2) made it: its customer, its subject.
    let refund = records
        .conversations
        .iter()
        .find(|c| c.external_id.as_deref() == Some("216"))
        .unwrap();
    assert_eq!(refund.name.as_deref(), Some("Refund for order 1002"));
    assert_eq!(refund.status.as_deref(), Some("done"));
    assert_eq!(
        records.customers.len(),
        2,
        "Ada and Grace; Alan's row failed first"
    );
}

/// The errors file holds conversation 218 once, at its first line (4), naming the bad line
/// (9) and its field.
fn assert_intercom_errors(errors: &[(String, u64, String, String)], file: &str) {
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (at, line, field, reason) = &errors[0];
    assert!(at.ends_with(file), "{at}");
    assert_eq!((*line, field.as_str()), (4, "history"));
    assert!(
        reason.contains("line 9: message.direction: \"bot\" is not one of in, out"),
        "{reason}"
    );
}

#[test]
fn rows_that_are_messages_are_grouped_into_their_conversations_each_item_once_in_order() {
    for mode in ["single", "bulk"] {
        let env = TestEnv::plain();
        let mapping = sample("intercom/mapping.toml");
        let parts = sample("intercom/conversations.csv");
        let args = [
            "--mapping",
            mapping.to_str().unwrap(),
            "--rows-are-messages",
            parts.to_str().unwrap(),
            "--json",
            "--mode",
            mode,
        ];
        let run = env.import(&args);
        run.assert_code(1);
        assert_intercom_landed(&env);
        assert_intercom_errors(&env.errors(), "conversations.csv");
        // One checkpoint row a conversation, none for the lines grouped into them.
        let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(
            (&summary["rows_read"], &summary["lines_grouped"]),
            (&json!(4), &json!(8)),
            "{mode}"
        );
        assert_eq!(
            (&summary["rows_done"], &summary["rows_failed"]),
            (&json!(3), &json!(1)),
            "{mode}"
        );
        let rows: i64 = env
            .checkpoint()
            .query_row("SELECT count(*) FROM rows", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 4, "{mode}");
        assert_eq!(done_records(&env), 9, "{mode}");

        let before = env.stats().requests_total;
        env.import(&args).assert_code(1);
        assert_eq!(
            env.stats().requests_total,
            before,
            "{mode}: a second run sends nothing"
        );
    }
}

#[test]
fn rows_that_are_messages_read_from_stdin_land_the_same_and_validate_refuses_what_import_does() {
    let env = TestEnv::plain();
    let mapping = sample("intercom/mapping.toml");
    let mapping = mapping.to_str().unwrap();
    // The sample, and a line that names no conversation: it fails alone, at its line (14).
    let mut csv = std::fs::read_to_string(sample("intercom/conversations.csv")).unwrap();
    csv.push_str(
        ",p-13,comment,user,2024-03-05T08:00:00Z,Hello?,U-1,Ada Lovelace,ada@example.com,,open\n",
    );
    let with_stdin = |command: &mut std::process::Command| {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), csv.as_bytes()).unwrap();
        finish(child)
    };
    let flags = [
        "--mapping",
        mapping,
        "--rows-are-messages",
        "-",
        "--format",
        "csv",
    ];
    with_stdin(&mut env.import_command(&flags)).assert_code(1);
    assert_intercom_landed(&env);
    let errors = env.errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_intercom_errors(&errors[..1], "-");
    let (_, line, field, reason) = &errors[1];
    assert_eq!((*line, field.as_str()), (14, "conversation.externalId"));
    assert!(reason.contains("is empty"), "{reason}");

    let mut validate = std::process::Command::new(binary());
    validate
        .current_dir(env.dir.path())
        .arg("validate")
        .args(flags)
        .arg("--json");
    let run = with_stdin(&mut validate);
    run.assert_code(1);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (&report["rows"], &report["valid"], &report["lines_grouped"]),
        (&json!(5), &json!(3), &json!(8))
    );
    assert_eq!(
        (&report["messages"], &report["notes"]),
        (&json!(7), &json!(2))
    );
    let mut reader =
        csv::Reader::from_path(env.path("kustomer-import.validate-errors.csv")).unwrap();
    let refused: Vec<(u64, String, String)> = reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            (
                record[1].parse().unwrap(),
                record[2].to_string(),
                record[3].to_string(),
            )
        })
        .collect();
    let imported: Vec<(u64, String, String)> = errors
        .into_iter()
        .map(|(_, line, field, reason)| (line, field, reason))
        .collect();
    assert_eq!(refused, imported, "validate refuses what import refused");
}

#[test]
fn validate_reads_the_messages_file_and_refuses_its_orphan_as_import_does() {
    let env = TestEnv::plain();
    let mapping = sample("child/tickets.mapping.toml");
    let messages = sample("child/messages.csv");
    let tickets = sample("child/tickets.csv");
    let run = env.command(&[
        "validate",
        "--mapping",
        mapping.to_str().unwrap(),
        "--messages",
        messages.to_str().unwrap(),
        tickets.to_str().unwrap(),
        "--json",
    ]);
    run.assert_code(1);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    // The three tickets and the orphan; the tickets' 5 messages and 2 notes.
    assert_eq!((&report["rows"], &report["valid"]), (&json!(4), &json!(3)));
    assert_eq!(
        (&report["messages"], &report["notes"]),
        (&json!(5), &json!(2))
    );
    let mut reader =
        csv::Reader::from_path(env.path("kustomer-import.validate-errors.csv")).unwrap();
    let refused: Vec<(String, u64, String)> = reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            (
                record[0].to_string(),
                record[1].parse().unwrap(),
                record[2].to_string(),
            )
        })
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].0.ends_with("messages.csv"), "{refused:?}");
    assert_eq!(
        (refused[0].1, refused[0].2.as_str()),
        (9, "history.conversation")
    );
}

#[test]
fn tomorrows_intercom_export_with_two_new_lines_on_an_old_conversation_sends_exactly_two_creates() {
    let env = TestEnv::plain();
    let mapping = sample("intercom/mapping.toml");
    let today = std::fs::read_to_string(sample("intercom/conversations.csv")).unwrap();
    let file = env.write("conversations.csv", &today);
    let args = [
        "--mapping",
        mapping.to_str().unwrap(),
        "--rows-are-messages",
        file.to_str().unwrap(),
    ];
    env.import(&args).assert_code(1);
    // Tomorrow's export: two new parts of 216, one of them before its old lines.
    let mut lines: Vec<&str> = today.lines().collect();
    lines.insert(
        1,
        "216,p-21,comment,user,2024-03-06T08:00:00Z,It has not arrived,U-2,Grace Hopper,grace@example.com,Refund for order 1002,open",
    );
    lines.push(
        "216,p-22,note,admin,2024-03-06T08:05:00Z,Checked with the bank,U-2,Grace Hopper,grace@example.com,Refund for order 1002,open",
    );
    env.write("conversations.csv", &format!("{}\n", lines.join("\n")));
    let before = env.stats();
    env.import(&args).assert_code(1);
    let after = env.stats();
    assert_eq!(after.creates_total - before.creates_total, 2, "two creates");
    assert_eq!(
        (after.messages - before.messages, after.notes - before.notes),
        (1, 1)
    );
    let held = threads(&env.records());
    assert_eq!(held["216"], ["p-5", "p-6", "p-7", "p-21", "p-22"]);
}

/// The length Zendesk allows a ticket's comments to reach.
const LONGEST_THREAD: usize = 5_000;

/// One conversation with a thread of `messages` messages, each second after the one
/// before (`long-<m>`), then a short conversation after it: one line of about 1 MB.
fn one_long_thread(messages: usize) -> String {
    let base: jiff::Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
    let thread: Vec<_> = (0..messages)
        .map(|m| {
            let at = base + jiff::SignedDuration::from_secs(m as i64);
            json!({"externalId": format!("long-{m}"), "channel": "email",
                   "direction": if m % 2 == 0 { "in" } else { "out" },
                   "preview": format!("message {m} of the long thread, with some text to it"),
                   "sentAt": at.to_string()})
        })
        .collect();
    let long = json!({
        "customer": {"externalId": "c-long"},
        "conversation": {"externalId": "t-long", "name": "A long story"},
        "messages": thread,
    });
    let short = json!({
        "customer": {"externalId": "c-short"},
        "conversation": {"externalId": "t-short"},
        "notes": [{"externalId": "n-short", "body": "after the long one"}],
    });
    format!("{long}\n{short}\n")
}

/// The externalIds of the thread of the conversation with this externalId, in the
/// sandbox's order.
fn thread_of(records: &Records, conversation: &str) -> Vec<String> {
    threads(records).remove(conversation).unwrap_or_default()
}

#[test]
fn a_thread_of_5000_messages_in_one_line_lands_every_message_once_in_order() {
    let env = TestEnv::plain();
    let file = env.write("long.jsonl", &one_long_thread(LONGEST_THREAD));
    assert!(
        std::fs::metadata(&file).unwrap().len() > 700_000,
        "a long line"
    );
    let run = env.import(&[file.to_str().unwrap(), "--rpm", "1000000"]);
    run.assert_code(0);
    let records = env.records();
    let expected: Vec<String> = (0..LONGEST_THREAD).map(|m| format!("long-{m}")).collect();
    assert_eq!(thread_of(&records, "t-long"), expected);
    assert_eq!(thread_of(&records, "t-short"), ["n-short"]);
    assert!(
        run.stdout.contains("messages created:       5000"),
        "{}",
        run.stdout
    );
    env.assert_import_sends_nothing(&[file.to_str().unwrap()], "a second run sends nothing");
}

#[test]
fn a_zendesk_ticket_of_5000_comments_lands_each_once_in_order_private_ones_as_notes() {
    let env = TestEnv::plain();
    let users = [
        json!({"id": 1, "name": "Ada Requester", "email": "ada@example.com", "role": "end-user"}),
        json!({"id": 7, "name": "Sam Agent", "email": "sam@example.com", "role": "agent"}),
    ];
    let users_text: String = users.iter().map(|user| format!("{user}\n")).collect();
    let users = env.write("users.json", &users_text);
    let base: jiff::Timestamp = "2024-03-01T09:00:00Z".parse().unwrap();
    let comments: Vec<_> = (0..LONGEST_THREAD)
        .map(|c| {
            let at = base + jiff::SignedDuration::from_secs(c as i64);
            json!({"id": 10_000 + c, "author_id": if c % 2 == 0 { 1 } else { 7 },
                   "public": c % 50 != 49, "plain_body": format!("comment {c}"),
                   "html_body": format!("<p>comment {c}</p>"), "created_at": at.to_string(),
                   "via": {"channel": "web"}})
        })
        .collect();
    let ticket = json!({"ticket": {"id": 42, "subject": "Long", "status": "open",
                                   "requester_id": 1, "comments": comments}});
    // One private comment in 50: 100 notes, under the 120 a minute one customer may get.
    let tickets = env.write("tickets.json", &format!("{ticket}\n"));
    let args = [
        "--preset",
        "zendesk-json",
        tickets.to_str().unwrap(),
        "--users",
        users.to_str().unwrap(),
        "--rpm",
        "1000000",
    ];
    env.import(&args).assert_code(0);
    let records = env.records();
    assert_eq!(records.conversations.len(), 1);
    let expected: Vec<String> = (0..LONGEST_THREAD)
        .map(|c| format!("zendesk-comment-{}", 10_000 + c))
        .collect();
    let thread = records.thread(&records.conversations[0].id);
    let ids: Vec<String> = thread
        .iter()
        .map(|item| item.external_id.clone().unwrap())
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(
        (records.message_count(), records.note_count()),
        (LONGEST_THREAD * 49 / 50, LONGEST_THREAD / 50)
    );
}
