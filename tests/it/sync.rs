//! A nightly run over an export of the user's own system (issue 18): customers known by a
//! name only (an anonymous visitor, a walk-in) are created once each under an externalId
//! derived from their row, by which a lost answer is looked up.

use kustomer_import::sandbox::{FaultConfig, SandboxConfig};

use serde_json::json;

use crate::harness::*;

const HEADER: &str =
    "customer_external_id,customer_name,email,phone,conversation_id,subject,channel,status\n";

/// `visitors` rows of customers with a name and nothing else (two of each name), each with a
/// ticket of its own, and one customer with an email.
fn walk_ins(visitors: usize) -> String {
    let mut text = HEADER.to_string();
    for row in 0..visitors {
        text.push_str(&format!(
            ",Visitor {},,,W-{row},Asked at the desk,chat,open\n",
            row / 2
        ));
    }
    text.push_str("C-1,Known One,known@example.com,,K-1,By email,email,open\n");
    text
}

#[test]
fn customers_known_by_a_name_only_are_each_created_once_under_a_derived_id() {
    let env = TestEnv::plain();
    let file = env.write("walk-ins.csv", &walk_ins(4));
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    // Two rows with the same name are two people: nothing says they are one.
    env.assert_exactly_once(5, 5);
    let records = env.records();
    let derived: Vec<&str> = records
        .customers
        .iter()
        .filter_map(|customer| customer.external_id.as_deref())
        .filter(|id| id.starts_with("kimp-cust-"))
        .collect();
    assert_eq!(derived.len(), 4, "{derived:?}");
    assert!(derived.iter().all(|id| id.len() == "kimp-cust-".len() + 24));

    let before = env.stats().requests_total;
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    assert_eq!(
        env.stats().requests_total,
        before,
        "tomorrow's run derives the same ids and sends nothing"
    );
}

#[test]
fn a_lost_answer_on_a_name_only_customer_is_looked_up_by_its_derived_id() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        faults: FaultConfig {
            drop_after_write_rate: 0.3,
            fail_after_write_rate: 0.2,
            seed: Some(18),
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    });
    let file = env.write("walk-ins.csv", &walk_ins(30));
    env.import(&[
        file.to_str().unwrap(),
        "--mode",
        "single",
        "--max-retries",
        "30",
        "--reconcile-delay",
        "0.05",
    ])
    .assert_code(0);
    env.assert_exactly_once(31, 31);
    let faults = env.stats().faults;
    assert!(
        faults.drop_after_write + faults.fail_after_write > 0,
        "no answer was lost"
    );
    let reconciled: i64 = env
        .checkpoint()
        .query_row(
            "SELECT count(*) FROM customers WHERE state = 'reconciled'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(reconciled > 0, "some customer was found by its derived id");
}

#[test]
fn without_derived_customer_ids_a_name_only_customer_is_refused_as_before() {
    let env = TestEnv::plain();
    let file = env.write("walk-ins.csv", &walk_ins(2));
    env.import(&[file.to_str().unwrap(), "--no-derived-customer-ids"])
        .assert_code(1);
    env.assert_exactly_once(1, 1);
    let mut errors = env.errors();
    errors.sort_by_key(|error| error.1);
    let lines: Vec<u64> = errors.iter().map(|error| error.1).collect();
    assert_eq!(lines, [2, 3]);
    assert_eq!(errors[0].2, "customer");
    assert!(
        errors[0]
            .3
            .contains("no externalId, email or phone (--no-derived-customer-ids is set)"),
        "{errors:?}"
    );
    // validate reads the rows as import does.
    let validate = env.command(&[
        "validate",
        file.to_str().unwrap(),
        "--no-derived-customer-ids",
    ]);
    validate.assert_code(1);
    env.command(&["validate", file.to_str().unwrap()])
        .assert_code(0);
}

fn unknown_row_of(env: &TestEnv, file: &str) -> String {
    env.checkpoint()
        .query_row(
            "SELECT row_key FROM rows WHERE state = 'failed' AND outcome_unknown = 1
             AND source_file LIKE ?1",
            [format!("%{file}")],
            |r| r.get(0),
        )
        .unwrap()
}

fn conversations_named(env: &TestEnv, name: &str) -> Vec<String> {
    env.records()
        .conversations
        .iter()
        .filter(|c| c.name.as_deref() == Some(name))
        .map(|c| c.id.clone())
        .collect()
}

#[test]
fn resolve_settles_a_row_whose_outcome_only_a_person_can_know() {
    let env = TestEnv::plain();
    let day1 = env.write(
        "day1.csv",
        &format!("{HEADER}C-1,One,one@example.com,,T-1,First,email,open\nC-2,Two,two@example.com,,T-2,First,email,open\n"),
    );
    env.import(&[day1.to_str().unwrap()]).assert_code(0);
    // Without conversation ids, and without derived ones, a create whose answer is lost
    // cannot be looked up: one never made (a 500 before the write), one made (the
    // connection dropped after it).
    let lost = env.write(
        "lost.csv",
        &format!("{HEADER}C-1,One,one@example.com,,,Lost one,email,open\n"),
    );
    let made = env.write(
        "made.csv",
        &format!("{HEADER}C-2,Two,two@example.com,,,Made one,email,open\n"),
    );
    let no_ids = "--no-derived-conversation-ids";
    for (file, faults) in [
        (
            &lost,
            FaultConfig {
                fail_rate: 1.0,
                ..FaultConfig::default()
            },
        ),
        (
            &made,
            FaultConfig {
                drop_after_write_rate: 1.0,
                ..FaultConfig::default()
            },
        ),
    ] {
        env.sandbox().set_faults(faults);
        env.import(&[file.to_str().unwrap(), no_ids]).assert_code(1);
        // Never sent again on its own: the next run still exits 1.
        env.import(&[file.to_str().unwrap(), no_ids]).assert_code(1);
    }
    env.sandbox().set_faults(FaultConfig::default());
    assert!(conversations_named(&env, "Lost one").is_empty());
    let made_id = conversations_named(&env, "Made one");
    assert_eq!(made_id.len(), 1);

    let lost_key = unknown_row_of(&env, "lost.csv");
    let made_key = unknown_row_of(&env, "made.csv");
    let absent = env.command(&["resolve", "--row-key", &lost_key, "--absent"]);
    absent.assert_code(0);
    assert!(
        absent.stdout.contains("line 2) goes back"),
        "{}",
        absent.stdout
    );
    let found = env.command(&[
        "resolve",
        "--row-key",
        &made_key,
        "--conversation-id",
        &made_id[0],
    ]);
    found.assert_code(0);
    assert!(
        found
            .stdout
            .contains(&format!("is done, with conversation {}", made_id[0]))
    );

    // The row found is done: nothing is sent. The row absent is sent, once.
    let before = env.stats().requests_total;
    env.import(&[made.to_str().unwrap(), no_ids]).assert_code(0);
    assert_eq!(env.stats().requests_total, before);
    env.import(&[lost.to_str().unwrap(), no_ids]).assert_code(0);
    assert_eq!(conversations_named(&env, "Lost one").len(), 1);
    assert_eq!(conversations_named(&env, "Made one").len(), 1);

    // Only a row whose outcome is unknown can be resolved.
    let again = env.command(&["resolve", "--row-key", &made_key, "--absent"]);
    again.assert_code(2);
    assert!(
        again
            .stderr
            .contains("is done, not a row whose outcome is unknown"),
        "{}",
        again.stderr
    );
    env.command(&["resolve", "--row-key", "row:nothing", "--absent"])
        .assert_code(2);
}

/// An export of `customers` customers with a ticket each (`T-<i>`, open); `changes` says
/// what tomorrow's differs in: tickets whose status is done, customers renamed, and how
/// many new rows (new customers) are added at the end.
fn export(customers: usize, done: &[usize], renamed: &[usize], new_rows: usize) -> String {
    let mut text = HEADER.to_string();
    for i in 0..customers + new_rows {
        let name = if renamed.contains(&i) {
            format!("Customer {i} Renamed")
        } else {
            format!("Customer {i}")
        };
        let status = if done.contains(&i) { "done" } else { "open" };
        text.push_str(&format!(
            "C-{i},{name},c{i}@example.com,,T-{i},Ticket {i},email,{status}\n"
        ));
    }
    text
}

/// The sandbox holds exactly the export's customers' names and tickets' statuses.
fn assert_records_equal(env: &TestEnv, customers: usize, done: &[usize], renamed: &[usize]) {
    let records = env.records();
    assert_eq!(records.customers.len(), customers, "customers");
    assert_eq!(records.conversations.len(), customers, "conversations");
    for customer in &records.customers {
        let i: usize = customer.external_id.as_deref().unwrap()[2..]
            .parse()
            .unwrap();
        let expected = if renamed.contains(&i) {
            format!("Customer {i} Renamed")
        } else {
            format!("Customer {i}")
        };
        assert_eq!(customer.name.as_deref(), Some(expected.as_str()));
    }
    for conversation in &records.conversations {
        let i: usize = conversation.external_id.as_deref().unwrap()[2..]
            .parse()
            .unwrap();
        let expected = if done.contains(&i) { "done" } else { "open" };
        assert_eq!(conversation.status.as_deref(), Some(expected), "T-{i}");
    }
}

#[test]
fn tomorrows_export_sends_exactly_the_updates_and_creates_that_differ() {
    let env = TestEnv::plain();
    let day1 = env.write("day1.csv", &export(20, &[], &[], 0));
    env.import(&[day1.to_str().unwrap(), "--mode", "single"])
        .assert_code(0);
    // 10% of rows change status, 5% their customer's name, 5% are new.
    let (done, renamed) = ([3, 11], [7]);
    let day2 = env.write("day2.csv", &export(20, &done, &renamed, 1));
    let before = env.stats();
    let run = env.import(&[day2.to_str().unwrap(), "--mode", "single", "--json"]);
    run.assert_code(0);
    let after = env.stats();
    assert_eq!(after.creates_total - before.creates_total, 2, "the new row");
    assert_eq!(
        after.conversations_updated - before.conversations_updated,
        2
    );
    assert_eq!(after.customers_updated - before.customers_updated, 1);
    assert_eq!(
        after.requests_total - before.requests_total,
        5,
        "no request for an unchanged row"
    );
    assert_records_equal(&env, 21, &done, &renamed);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["rows_updated"], 3);
    assert_eq!(summary["rows_skipped_done"], 17);
    assert_eq!(summary["customers_updated"], 1);
    assert_eq!(summary["conversations_updated"], 2);
    assert_eq!(summary["rows_unchanged"], 17);
    // status and export say the same from the checkpoint.
    let status = env.command(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let last = &status["runs"][0];
    assert_eq!(
        (&last["rows_updated"], &last["rows_unchanged"]),
        (&json!(3), &json!(17))
    );
    let export = env.command(&["export", "--format", "jsonl"]);
    let updated: Vec<String> = export
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|row| row["updated_at"].is_string())
        .map(|row| row["row_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(updated, ["conv:T-3", "conv:T-7", "conv:T-11"]);

    // The day after, the same export: nothing changed since what was sent.
    let before = env.stats().requests_total;
    env.import(&[day2.to_str().unwrap()]).assert_code(0);
    assert_eq!(env.stats().requests_total, before);
    let status = env.command(&["status"]);
    assert!(
        status.stdout.contains("(updated 0, unchanged 21)"),
        "{}",
        status.stdout
    );
}

#[test]
fn on_change_skip_sends_only_the_new_rows_and_update_fields_narrows_the_updates() {
    let (done, renamed) = ([3, 11], [7]);
    let skip = TestEnv::plain();
    let day1 = skip.write("day1.csv", &export(20, &[], &[], 0));
    let day2 = skip.write("day2.csv", &export(20, &done, &renamed, 1));
    skip.import(&[day1.to_str().unwrap()]).assert_code(0);
    let before = skip.stats();
    skip.import(&[day2.to_str().unwrap(), "--on-change", "skip"])
        .assert_code(0);
    let after = skip.stats();
    assert_eq!(after.creates_total - before.creates_total, 2);
    assert_eq!(after.updates_total, 0);
    assert_eq!(after.requests_total - before.requests_total, 2);

    let status_only = TestEnv::plain();
    let day1 = status_only.write("day1.csv", &export(20, &[], &[], 0));
    let day2 = status_only.write("day2.csv", &export(20, &done, &renamed, 1));
    status_only.import(&[day1.to_str().unwrap()]).assert_code(0);
    status_only
        .import(&[day2.to_str().unwrap(), "--update-fields", "status"])
        .assert_code(0);
    let stats = status_only.stats();
    assert_eq!(
        (stats.conversations_updated, stats.customers_updated),
        (2, 0)
    );
    // The agents' name is kept: the renamed customer is not renamed.
    assert_records_equal(&status_only, 21, &done, &[]);

    let fail = TestEnv::plain();
    let day1 = fail.write("day1.csv", &export(20, &[], &[], 0));
    let day2 = fail.write("day2.csv", &export(20, &done, &[], 0));
    fail.import(&[day1.to_str().unwrap()]).assert_code(0);
    fail.import(&[day2.to_str().unwrap(), "--on-change", "fail"])
        .assert_code(1);
    assert_eq!(fail.stats().updates_total, 0);
    let mut errors = fail.errors();
    errors.sort_by_key(|error| error.1);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        (errors[0].1, errors[0].2.as_str()),
        (5, "conversation.status")
    );
    assert!(errors[0].3.contains("--on-change fail"), "{errors:?}");
    assert_eq!(
        fail.rows_in_state("done"),
        20,
        "the checkpoint keeps them done"
    );
}

#[test]
fn a_run_killed_during_its_updates_resumes_and_every_record_ends_as_tomorrows_export() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        latency: std::time::Duration::from_millis(5),
        jitter: std::time::Duration::from_millis(10),
        ..SandboxConfig::default()
    });
    let day1 = env.write("day1.csv", &export(120, &[], &[], 0));
    env.import(&[day1.to_str().unwrap(), "--mode", "single"])
        .assert_code(0);
    let done: Vec<usize> = (0..120).collect();
    let renamed: Vec<usize> = (0..120).step_by(4).collect();
    let day2 = env.write("day2.csv", &export(120, &done, &renamed, 0));
    let args = [
        day2.to_str().unwrap(),
        "--mode",
        "single",
        "--concurrency",
        "4",
    ];
    for kill_at in [20, 70] {
        let mut child = env.spawn_import(&args);
        env.wait_for(&format!("{kill_at} updates"), |stats| {
            stats.updates_total >= kill_at
        });
        child.kill().unwrap();
        child.wait().unwrap();
    }
    env.import(&args).assert_code(0);
    assert_records_equal(&env, 120, &done, &renamed);
    assert_eq!(
        env.stats().creates_total,
        240,
        "day 1's creates and nothing since"
    );
    let before = env.stats().requests_total;
    env.import(&args).assert_code(0);
    assert_eq!(
        env.stats().requests_total,
        before,
        "every change is recorded as sent"
    );
}

/// Update jobs the sandbox was sent: `PUT /v1/customers/bulk` and
/// `PUT /v1/conversations/bulk`.
fn update_jobs(env: &TestEnv) -> u64 {
    env.requests_to("PUT /v1/customers/bulk") + env.requests_to("PUT /v1/conversations/bulk")
}

#[test]
fn in_bulk_mode_tomorrows_changes_go_as_bulk_update_jobs() {
    let env = TestEnv::plain();
    let day1 = env.write("day1.csv", &export(400, &[], &[], 0));
    env.import(&[day1.to_str().unwrap(), "--mode", "bulk"])
        .assert_code(0);
    // 300 records change: 200 tickets' status, 100 customers' names, ten rows both (their
    // customer goes in a customers job, then their ticket in a conversations job); 20 new.
    let done: Vec<usize> = (0..190).chain(290..300).collect();
    let renamed: Vec<usize> = (200..300).collect();
    let day2 = env.write("day2.csv", &export(400, &done, &renamed, 20));
    let before = env.stats();
    let run = env.import(&[day2.to_str().unwrap(), "--mode", "bulk", "--json"]);
    run.assert_code(0);
    let after = env.stats();
    assert_eq!(
        after.updates_total - before.updates_total,
        0,
        "no update went alone"
    );
    assert_eq!(after.customers_updated - before.customers_updated, 100);
    assert_eq!(
        after.conversations_updated - before.conversations_updated,
        200
    );
    let jobs = update_jobs(&env);
    assert!(
        (3..=4).contains(&jobs),
        "{jobs} update jobs for 300 records"
    );
    assert_records_equal(&env, 420, &done, &renamed);
    env.assert_exactly_once(420, 420);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["rows_updated"], 290);
    assert_eq!(summary["customers_updated"], 100);
    assert_eq!(summary["conversations_updated"], 200);
    assert_eq!(summary["rows_skipped_done"], 110);
    assert_eq!(summary["customers_created"], 20);
    // The 20 new rows cost a customers job and a conversations job, each with its polls;
    // the updates as many requests again per job: a few dozen requests for 340 records.
    let requests = after.requests_total - before.requests_total;
    assert!(requests <= 30, "{requests} requests");
    let kinds: i64 = env
        .checkpoint()
        .query_row(
            "SELECT count(*) FROM bulk_jobs WHERE state = 'complete'
             AND (kind = 'customer-updates' OR kind = 'conversation-updates')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kinds as u64, jobs, "every update job recorded, complete");

    // The day after, the same export: every change was recorded as sent.
    let before = env.stats().requests_total;
    env.import(&[day2.to_str().unwrap(), "--mode", "bulk"])
        .assert_code(0);
    assert_eq!(env.stats().requests_total, before);
}

#[test]
fn a_run_killed_during_its_bulk_updates_resumes_and_every_record_ends_as_tomorrows_export() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        bulk_delay: std::time::Duration::from_millis(400),
        ..SandboxConfig::default()
    });
    let day1 = env.write("day1.csv", &export(300, &[], &[], 0));
    env.import(&[day1.to_str().unwrap(), "--mode", "bulk"])
        .assert_code(0);
    let done: Vec<usize> = (0..300).collect();
    let renamed: Vec<usize> = (0..300).step_by(3).collect();
    let day2 = env.write("day2.csv", &export(300, &done, &renamed, 0));
    let args = [day2.to_str().unwrap(), "--mode", "bulk"];
    // Killed once a customers update job is queued, then once a conversations one is.
    for kind in ["customer-updates", "conversation-updates"] {
        let child = env.spawn_import(&args);
        env.kill_once_queued(&format!("kind = '{kind}'"), child);
    }
    let run = env.import(&args);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("bulk jobs of an earlier run are unfinished"),
        "{}",
        run.stderr
    );
    assert_records_equal(&env, 300, &done, &renamed);
    env.assert_exactly_once(300, 300);
    assert_eq!(env.stats().updates_total, 0, "every update in a job");
    let lost: i64 = env
        .checkpoint()
        .query_row(
            "SELECT count(*) FROM bulk_jobs WHERE state = 'lost'
             AND (kind = 'customer-updates' OR kind = 'conversation-updates')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(lost > 0, "the killed runs' update jobs were released");
    let before = env.stats().requests_total;
    env.import(&args).assert_code(0);
    assert_eq!(
        env.stats().requests_total,
        before,
        "every change is recorded as sent"
    );
}

#[test]
fn an_item_a_bulk_update_job_refuses_fails_that_rows_update_only_and_is_tried_again() {
    let env = TestEnv::plain();
    let day1 = env.write("day1.csv", &export(30, &[], &[], 0));
    env.import(&[day1.to_str().unwrap(), "--mode", "bulk"])
        .assert_code(0);
    // Customer 5 takes customer 6's email, which Kustomer refuses (409); ten tickets are
    // done.
    let done: Vec<usize> = (10..20).collect();
    let day2 = export(30, &done, &[], 0).replace(
        "C-5,Customer 5,c5@example.com,",
        "C-5,Customer 5,c6@example.com,",
    );
    let day2 = env.write("day2.csv", &day2);
    let args = [day2.to_str().unwrap(), "--mode", "bulk", "--json"];
    let run = env.import(&args);
    run.assert_code(1);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["rows_updated"], 10);
    assert_eq!(summary["rows_failed"], 1);
    assert_records_equal(&env, 30, &done, &[]);
    let errors = env.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (_, line, field, reason) = &errors[0];
    assert_eq!((*line, field.as_str()), (7, "customer"));
    assert!(
        reason.contains("update refused (409)") && reason.contains("c6@example.com"),
        "the server's words: {reason}"
    );
    assert_eq!(env.rows_in_state("done"), 30, "the row stays done");
    // The next run tries it again, and only it.
    let before = env.stats();
    env.import(&args).assert_code(1);
    let after = env.stats();
    assert_eq!(
        after.conversations_updated - before.conversations_updated,
        0
    );
    assert!(after.requests_total > before.requests_total);
    assert_eq!(env.errors().len(), 1);
}

#[test]
fn a_records_own_update_limit_holds_back_that_row_only_and_it_ends_updated() {
    // One at a time, and in bulk jobs, whose item over the limit (an error in words) is
    // sent alone and meets the same 429.
    for mode in ["single", "bulk"] {
        a_records_own_update_limit_in(mode);
    }
}

fn a_records_own_update_limit_in(mode: &str) {
    // The org's budget is ample; one update of a record per 3 s window. A customer with two
    // tickets renamed differently on each is updated once per row (two changes, not one), so
    // each second update meets the record's limit: a 429 whose headers show the org's budget
    // not spent.
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        rpm: Some(100_000),
        rate_window: std::time::Duration::from_secs(3),
        per_object_update_limit: Some(1),
        ..SandboxConfig::default()
    });
    let export = |renamed: bool| {
        let mut text = HEADER.to_string();
        for i in 0..40 {
            let status = if renamed { "done" } else { "open" };
            let tickets = if i < 10 { 2 } else { 1 };
            for t in 0..tickets {
                let name = if renamed && i < 10 {
                    format!("Customer {i} Renamed {t}")
                } else {
                    format!("Customer {i}")
                };
                text.push_str(&format!(
                    "C-{i},{name},c{i}@example.com,,T-{i}-{t},Ticket {i},email,{status}\n"
                ));
            }
        }
        text
    };
    let day1 = env.write("day1.csv", &export(false));
    env.import(&[day1.to_str().unwrap(), "--mode", "single"])
        .assert_code(0);
    let day2 = env.write("day2.csv", &export(true));
    // A pause of every request for a second would stop the run (exit 4): the gate is
    // never held for a record's limit.
    let run = env.import(&[
        day2.to_str().unwrap(),
        "--mode",
        mode,
        "--json",
        "--max-stall",
        "1",
        "--max-retries",
        "10",
    ]);
    run.assert_code(0);
    let stats = env.stats();
    assert!(stats.object_limited > 0, "{mode}: no record met its limit");
    // Every 429 was a record's, none the org's: all on single updates, and counted as
    // the record's limit (which counts a bulk item over it too, an error in words).
    let answered_429: Vec<(&String, u64)> = stats
        .requests
        .iter()
        .filter_map(|(route, by_status)| Some((route, *by_status.get(&429)?)))
        .collect();
    assert!(
        !answered_429.is_empty()
            && answered_429
                .iter()
                .all(|(route, _)| route.starts_with("PATCH ")),
        "{mode}: {answered_429:?}"
    );
    assert!(stats.rate_limited <= stats.object_limited, "{mode}");
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["rows_updated"], 50, "{mode}");
    if mode == "bulk" {
        assert!(update_jobs(&env) > 0);
    }
    assert_eq!(summary["rows_pending"], 0);
    let records = env.records();
    let renamed = records
        .customers
        .iter()
        .filter(|c| c.name.as_deref().is_some_and(|n| n.contains("Renamed")))
        .count();
    assert_eq!(renamed, 10);
    assert!(
        records
            .conversations
            .iter()
            .all(|c| c.status.as_deref() == Some("done"))
    );
}

/// API-shaped JSONL of `customers` customers with a ticket each; `renamed` customers have a
/// new name, and `bad` one also a custom attribute the org does not define.
fn api_export(customers: usize, renamed: bool, bad: Option<usize>) -> String {
    let mut text = String::new();
    for c in 0..customers {
        let name = if renamed {
            format!("Customer {c} Renamed")
        } else {
            format!("Customer {c}")
        };
        let custom = if bad == Some(c) {
            r#"{"tierStr": "gold", "levelStr": "x"}"#
        } else {
            r#"{"tierStr": "gold"}"#
        };
        text.push_str(&format!(
            r#"{{"customer": {{"externalId": "C{c}", "name": "{name}", "custom": {custom}}}, "conversation": {{"externalId": "T{c}", "name": "Ticket {c}"}}}}"#
        ));
        text.push('\n');
    }
    text
}

#[test]
fn an_update_job_refused_whole_is_split_until_the_bad_item_is_alone() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        custom_attributes: Some(vec!["tierStr".into()]),
        bulk_refuse_invalid: true,
        bulk_delay: std::time::Duration::from_millis(20),
        ..SandboxConfig::default()
    });
    let day1 = env.write("day1.jsonl", &api_export(150, false, None));
    env.import(&[day1.to_str().unwrap(), "--mode", "bulk"])
        .assert_code(0);
    let day2 = env.write("day2.jsonl", &api_export(150, true, Some(120)));
    let run = env.import(&[day2.to_str().unwrap(), "--mode", "bulk", "--json"]);
    run.assert_code(1);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["rows_updated"], 149);
    assert_eq!(summary["rows_failed"], 1);
    let errors = env.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].1, 121);
    assert!(errors[0].3.contains("/custom/levelStr"), "{errors:?}");
    // The second job (50 items, the bad one 21st) is halved until it stands alone; the
    // first goes whole, and nothing goes one by one.
    let refused = env.stats().requests["PUT /v1/customers/bulk"]
        .get(&400)
        .copied()
        .unwrap_or(0);
    assert!((2..=7).contains(&refused), "{refused} refusals");
    assert_eq!(env.stats().updates_total, 0);
    let records = env.records();
    let renamed = records
        .customers
        .iter()
        .filter(|c| c.name.as_deref().is_some_and(|n| n.contains("Renamed")))
        .count();
    assert_eq!(renamed, 149);
}

/// An export without a conversation id column: `customers` customers with a ticket each,
/// told apart by the customer's email and the ticket's creation time; tickets in `done`
/// are done, customers in `renamed` renamed, `new_rows` more at the end.
fn export_without_ids(
    customers: usize,
    done: &[usize],
    renamed: &[usize],
    new_rows: usize,
) -> String {
    let mut text =
        "customer_external_id,customer_name,email,created_at,subject,status\n".to_string();
    for i in 0..customers + new_rows {
        let name = if renamed.contains(&i) {
            format!("Customer {i} Renamed")
        } else {
            format!("Customer {i}")
        };
        let status = if done.contains(&i) { "done" } else { "open" };
        text.push_str(&format!(
            "C-{i},{name},c{i}@example.com,2024-05-01T10:{:02}:00Z,Ticket {i},{status}\n",
            i % 60
        ));
    }
    text
}

/// Each conversation's status, by its name.
fn statuses(env: &TestEnv) -> std::collections::BTreeMap<String, String> {
    env.records()
        .conversations
        .iter()
        .map(|c| {
            (
                c.name.clone().unwrap(),
                c.status.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn key_columns_keep_a_changed_row_without_a_conversation_id_the_same_row() {
    let (done, renamed) = ([3, 11], [7]);
    let key = ["--key-columns", "email,created_at", "--mode", "single"];
    let env = TestEnv::plain();
    let day1 = env.write("day1.csv", &export_without_ids(20, &[], &[], 0));
    let day2 = env.write("day2.csv", &export_without_ids(20, &done, &renamed, 1));
    let first = env.import(&[&[day1.to_str().unwrap()], &key[..]].concat());
    first.assert_code(0);
    // The key columns are named as read, not as columns nothing reads.
    assert!(
        first.stderr.contains("key columns: email,created_at")
            && !first.stderr.contains("not read: \"created_at\""),
        "{}",
        first.stderr
    );
    let before = env.stats();
    env.import(&[&[day2.to_str().unwrap()], &key[..]].concat())
        .assert_code(0);
    let after = env.stats();
    assert_eq!(
        after.creates_total - before.creates_total,
        2,
        "the new row only"
    );
    assert_eq!(
        after.conversations_updated - before.conversations_updated,
        2
    );
    assert_eq!(after.customers_updated - before.customers_updated, 1);
    assert_eq!(after.requests_total - before.requests_total, 5);
    let statuses = statuses(&env);
    assert_eq!(
        statuses.len(),
        21,
        "one conversation per ticket: {statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|(name, status)| (status == "done") == (name == "Ticket 3" || name == "Ticket 11"))
    );

    // Without them, each changed row is keyed by its content: a new row, a second
    // conversation (what validate warns of).
    let plain = TestEnv::plain();
    let day1 = plain.write("day1.csv", &export_without_ids(20, &[], &[], 0));
    let day2 = plain.write("day2.csv", &export_without_ids(20, &done, &renamed, 1));
    plain
        .import(&[day1.to_str().unwrap(), "--mode", "single"])
        .assert_code(0);
    plain
        .import(&[day2.to_str().unwrap(), "--mode", "single"])
        .assert_code(0);
    assert_eq!(
        plain.records().conversations.len(),
        24,
        "3 changed rows made anew"
    );
    let warned = plain.command(&["validate", day2.to_str().unwrap()]);
    warned.assert_code(0);
    assert_eq!(
        warned.stderr.matches("no --key-columns").count(),
        1,
        "warned once: {}",
        warned.stderr
    );
    let quiet = plain.command(&[
        "validate",
        day2.to_str().unwrap(),
        "--key-columns",
        "email,created_at",
    ]);
    quiet.assert_code(0);
    assert!(
        !quiet.stderr.contains("no --key-columns"),
        "{}",
        quiet.stderr
    );
}

#[test]
fn rows_whose_key_columns_repeat_or_are_empty_fail_naming_the_columns() {
    let env = TestEnv::plain();
    let mut text = export_without_ids(3, &[], &[], 0);
    text.push_str("C-9,Again,c1@example.com,2024-05-01T10:01:00Z,Ticket again,open\n");
    text.push_str("C-8,Nobody,,,Ticket of nobody,open\n");
    let file = env.write("keys.csv", &text);
    env.import(&[file.to_str().unwrap(), "--key-columns", "email,created_at"])
        .assert_code(1);
    let errors = env.errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!((errors[0].1, errors[0].2.as_str()), (5, "email,created_at"));
    assert!(
        errors[0].3.contains("earlier row's key columns"),
        "{errors:?}"
    );
    assert_eq!((errors[1].1, errors[1].2.as_str()), (6, "email,created_at"));
    assert!(errors[1].3.contains("all empty"), "{errors:?}");
    assert_eq!(env.records().conversations.len(), 3);
    // A column the header lacks stops the run before anything is sent.
    let missing = env.import(&[file.to_str().unwrap(), "--key-columns", "email,opened"]);
    missing.assert_code(2);
    assert!(missing.stderr.contains("\"opened\""), "{}", missing.stderr);
}

/// `customers` customers with `tickets` tickets each (`T-<c>-<t>`, open); tomorrow's
/// renames the customers in `renamed` (on every one of their rows) and closes the tickets
/// in `done`.
fn export_of_many_tickets(
    customers: usize,
    tickets: usize,
    renamed: &[usize],
    done: &[(usize, usize)],
) -> String {
    let mut text = HEADER.to_string();
    for c in 0..customers {
        let name = if renamed.contains(&c) {
            format!("Customer {c} Renamed")
        } else {
            format!("Customer {c}")
        };
        for t in 0..tickets {
            let status = if done.contains(&(c, t)) {
                "done"
            } else {
                "open"
            };
            text.push_str(&format!(
                "C-{c},{name},c{c}@example.com,,T-{c}-{t},Ticket {t},email,{status}\n"
            ));
        }
    }
    text
}

fn a_customer_renamed_on_all_its_rows_is_updated_once(mode: &str) {
    let env = TestEnv::plain();
    let day1 = env.write("day1.csv", &export_of_many_tickets(10, 4, &[], &[]));
    env.import(&[day1.to_str().unwrap(), "--mode", mode])
        .assert_code(0);
    let day2 = env.write(
        "day2.csv",
        &export_of_many_tickets(10, 4, &[2, 5], &[(5, 0)]),
    );
    let before = env.stats();
    let run = env.import(&[day2.to_str().unwrap(), "--mode", mode, "--json"]);
    run.assert_code(0);
    let after = env.stats();
    // Eight rows name a renamed customer: two customers' updates, not eight.
    assert_eq!(after.customers_updated - before.customers_updated, 2);
    assert_eq!(
        after.conversations_updated - before.conversations_updated,
        1
    );
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["rows_updated"], 8, "{summary}");
    assert_eq!(summary["customers_updated"], 2, "{summary}");
    assert_eq!(summary["conversations_updated"], 1, "{summary}");
    let records = env.records();
    let renamed: Vec<&str> = (records.customers.iter())
        .filter_map(|customer| customer.name.as_deref())
        .filter(|name| name.ends_with("Renamed"))
        .collect();
    assert_eq!(renamed.len(), 2, "{renamed:?}");
    // Every row recorded its customer as sent: the same export again sends nothing.
    let before = env.stats().requests_total;
    env.import(&[day2.to_str().unwrap(), "--mode", mode])
        .assert_code(0);
    assert_eq!(env.stats().requests_total, before);
}

#[test]
fn a_customer_renamed_on_all_its_rows_is_updated_once_single() {
    a_customer_renamed_on_all_its_rows_is_updated_once("single");
}

#[test]
fn a_customer_renamed_on_all_its_rows_is_updated_once_bulk() {
    a_customer_renamed_on_all_its_rows_is_updated_once("bulk");
}
