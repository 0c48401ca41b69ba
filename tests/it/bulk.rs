//! Bulk mode: what it lands is what single mode lands; a run killed while its jobs are
//! queued resumes by polling them; a bad item fails only its row; a lost submit answer is
//! reconciled, not sent twice; `--mode auto` picks bulk only for a few hundred rows.

use std::collections::BTreeMap;
use std::time::Duration;

use kustomer_import::sandbox::{FaultConfig, Records, SandboxConfig};

use crate::harness::*;

/// A sandbox whose org defines one custom attribute (others are refused, as live) and whose
/// bulk jobs run after `bulk_delay`.
fn org(bulk_delay: Duration) -> SandboxConfig {
    SandboxConfig {
        token: Some(KEY.to_string()),
        custom_attributes: Some(vec!["tierStr".into()]),
        bulk_delay,
        ..SandboxConfig::default()
    }
}

/// API-shaped JSONL: `customers` customers with `per_customer` conversations each, then a
/// customer the org refuses (an undefined custom attribute) with two conversations, a
/// customer whose email is already in Kustomer (under another externalId), and a row that
/// local validation refuses.
fn mixed_export(customers: usize, per_customer: usize) -> String {
    let mut text = String::new();
    let mut row = |customer: String, conversation: String| {
        text.push_str(&format!(
            "{{\"customer\": {customer}, \"conversation\": {conversation}}}\n"
        ));
    };
    for c in 0..customers {
        for k in 0..per_customer {
            row(
                format!(
                    r#"{{"externalId": "C{c}", "name": "Customer {c}", "emails": [{{"email": "c{c}@example.com"}}], "custom": {{"tierStr": "gold"}}}}"#
                ),
                format!(r#"{{"externalId": "T{c}-{k}", "name": "Subject {k}"}}"#),
            );
        }
    }
    for k in 0..2 {
        row(
            r#"{"externalId": "BAD", "custom": {"levelStr": "gold"}}"#.into(),
            format!(r#"{{"externalId": "TBAD-{k}", "name": "Refused {k}"}}"#),
        );
    }
    row(
        r#"{"externalId": "NEW-X", "emails": [{"email": "shared@example.com"}]}"#.into(),
        r#"{"externalId": "TX", "name": "Existing customer"}"#.into(),
    );
    row(
        r#"{"externalId": "LOCAL", "emails": [{"email": "not an email"}]}"#.into(),
        r#"{"externalId": "TL", "name": "Refused here"}"#.into(),
    );
    text
}

/// What landed, independent of ids: each conversation externalId with its customer's
/// externalId, and the customers' externalIds.
fn landed(records: &Records) -> (Vec<String>, BTreeMap<String, String>) {
    let by_id: BTreeMap<&str, String> = records
        .customers
        .iter()
        .map(|c| (c.id.as_str(), c.external_id.clone().unwrap_or_default()))
        .collect();
    let mut customers: Vec<String> = by_id.values().cloned().collect();
    customers.sort();
    let conversations = records
        .conversations
        .iter()
        .map(|c| {
            (
                c.external_id.clone().unwrap_or_default(),
                by_id[c.customer.as_str()].clone(),
            )
        })
        .collect();
    (customers, conversations)
}

fn sorted_errors(env: &TestEnv) -> Vec<(u64, String)> {
    let mut errors: Vec<(u64, String)> = env
        .errors()
        .into_iter()
        .map(|(_, line, _, reason)| (line, reason))
        .collect();
    errors.sort();
    errors
}

#[test]
fn a_bulk_import_lands_what_single_mode_lands() {
    let single = TestEnv::new(org(Duration::from_millis(50)));
    let bulk = TestEnv::new(org(Duration::from_millis(50)));
    let mut summaries = Vec::new();
    for (env, mode) in [(&single, "single"), (&bulk, "bulk")] {
        env.customer_made_elsewhere("ELSEWHERE", "shared@example.com");
        let file = env.write("export.jsonl", &mixed_export(140, 3));
        let run = env.import(&[file.to_str().unwrap(), "--mode", mode, "--json"]);
        run.assert_code(1);
        summaries.push(serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap());
    }
    // 140 customers + the one made elsewhere; 420 + 1 conversations.
    single.assert_exactly_once(141, 421);
    bulk.assert_exactly_once(141, 421);
    assert_eq!(landed(&single.records()), landed(&bulk.records()));
    let errors = sorted_errors(&bulk);
    assert_eq!(errors, sorted_errors(&single));
    assert_eq!(
        errors.iter().map(|e| e.0).collect::<Vec<_>>(),
        [421, 422, 424]
    );
    assert!(errors[0].1.contains("/custom/levelStr"), "{errors:?}");
    assert!(errors[1].1.starts_with("its customer could not be created"));
    for key in [
        "rows_read",
        "rows_done",
        "rows_failed",
        "rows_pending",
        "customers_created",
        "customers_linked",
        "conversations_created",
    ] {
        assert_eq!(summaries[0][key], summaries[1][key], "{key}: {summaries:?}");
    }
    assert_eq!(summaries[1]["customers_linked"], 1);
    // The same checkpoint: every row done or failed, and a second run sends nothing.
    assert_eq!(bulk.rows_in_state("done"), 421);
    assert_eq!(bulk.rows_in_state("failed"), 3);
    let before = bulk.stats().requests_total;
    let again = bulk.import(&["export.jsonl", "--mode", "bulk"]);
    again.assert_code(1);
    assert!(
        again.stdout.contains("already done:         421"),
        "{}",
        again.stdout
    );
    assert_eq!(bulk.stats().requests_total, before);
    // Bulk: 2 customers jobs, 5 conversations jobs, a few polls each; single: ~1.34/row.
    let bulk_requests = summaries[1]["requests"].as_u64().unwrap();
    let single_requests = summaries[0]["requests"].as_u64().unwrap();
    assert!(
        bulk_requests * 10 < single_requests,
        "bulk {bulk_requests} vs single {single_requests} requests"
    );
    // Only the linked customer's row goes on alone: linking is single mode's path.
    assert!(bulk.requests_to("POST /v1/conversations") <= 1);
}

#[test]
fn a_run_killed_while_its_jobs_are_queued_polls_them_and_creates_nothing_twice() {
    let env = TestEnv::new(org(Duration::from_secs(3)));
    // 60 customers with 2 conversations each, then a customer the org refuses (2 rows).
    let export: String = mixed_export(60, 2)
        .lines()
        .filter(|line| !line.contains("\"TX\"") && !line.contains("\"TL\""))
        .map(|line| format!("{line}\n"))
        .collect();
    let file = env.write("export.jsonl", &export);
    let child = env.spawn_import(&[file.to_str().unwrap(), "--mode", "bulk"]);
    // Killed once the customers job is recorded as queued, before it has run.
    env.kill_once_queued("1", child);
    assert_eq!(env.stats().customers, 0, "the job ran before the kill");
    assert_eq!(env.rows_in_state("customer_sent"), 61);
    let status = env.command(&["status"]);
    assert!(
        status.stdout.contains("bulk jobs: 0 complete, 1 queued"),
        "{}",
        status.stdout
    );

    let run = env.import(&["export.jsonl", "--mode", "bulk"]);
    run.assert_code(1);
    env.assert_exactly_once(60, 120);
    // The refused customer's rows fail with the server's words; its second row sends
    // nothing.
    let errors = sorted_errors(&env);
    assert_eq!(errors.iter().map(|e| e.0).collect::<Vec<_>>(), [121, 122]);
    assert!(
        errors[0]
            .1
            .starts_with("customer refused (422): /custom/levelStr"),
        "{errors:?}"
    );
    assert!(
        run.stdout.contains("failed:               2"),
        "{}",
        run.stdout
    );
    // The queued job was polled, not submitted again. Only the refused customer went
    // through single mode's path: the job refused it in words with no status, so it was
    // looked up (absent) and sent alone for a verdict, which has one.
    assert_eq!(env.requests_to("POST /v1/customers/bulk"), 1);
    assert_eq!(env.requests_to("POST /v1/customers"), 1);
    assert_eq!(env.requests_to("GET /v1/customers/{lookup}"), 1);
    assert!(
        run.stdout.contains("customers created:      60"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("done now:             120"),
        "{}",
        run.stdout
    );
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
fn customers_already_in_kustomer_are_linked_in_bulk_as_in_single_mode() {
    // The hardening report's case: Kustomer answers an existing customer's bulk item as its
    // reference shows, `"error": "duplicate detected"` (words, no status). Every fourth of
    // 120 customers exists already.
    let env = TestEnv::new(org(Duration::from_millis(20)));
    let existing: String = (0..120)
        .step_by(4)
        .map(|c| format!("C{c},c{c}@example.com\n"))
        .collect();
    let elsewhere = env.write("elsewhere.csv", &format!("external_id,email\n{existing}"));
    env.import(&[
        elsewhere.to_str().unwrap(),
        "--checkpoint",
        "elsewhere.sqlite",
    ])
    .assert_code(0);
    let single_creates = env.requests_to("POST /v1/customers");
    let file = env.write("export.csv", &generated_csv(120, 3));
    let run = env.import(&[file.to_str().unwrap(), "--mode", "bulk", "--json"]);
    run.assert_code(0);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["rows_done"], 360, "{summary}");
    assert_eq!(summary["rows_failed"], 0, "{summary}");
    assert_eq!(summary["customers_linked"], 30, "{summary}");
    assert_eq!(summary["customers_created"], 90, "{summary}");
    env.assert_exactly_once(120, 360);
    // Each linked row names the customer that was there before.
    let records = env.records();
    let by_external_id: BTreeMap<String, String> = records
        .customers
        .iter()
        .map(|c| (c.external_id.clone().unwrap(), c.id.clone()))
        .collect();
    let checkpoint = env.checkpoint();
    let mut linked = checkpoint
        .prepare("SELECT external_id, customer_id FROM customers WHERE state = 'linked'")
        .unwrap();
    let linked: Vec<(String, String)> = linked
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(linked.len(), 30);
    for (external_id, customer_id) in linked {
        assert_eq!(by_external_id[&external_id], customer_id);
    }
    // Linking is lookups, not single creates.
    assert_eq!(env.requests_to("POST /v1/customers"), single_creates);
}

#[test]
fn a_resumed_job_links_its_duplicates_under_the_policy() {
    let env = TestEnv::new(org(Duration::from_secs(2)));
    env.customer_made_elsewhere("ELSEWHERE", "shared@example.com");
    // 20 customers, then one whose email Kustomer already holds under another externalId.
    let export: String = mixed_export(20, 1)
        .lines()
        .filter(|line| !line.contains("BAD") && !line.contains("\"TL\""))
        .map(|line| format!("{line}\n"))
        .collect();
    let file = env.write("export.jsonl", &export);
    let args = [
        file.to_str().unwrap(),
        "--mode",
        "bulk",
        "--on-existing-customer",
        "fail",
    ];
    env.kill_once_queued("1", env.spawn_import(&args));
    let run = env.import(&args);
    run.assert_code(1);
    // The job's 409 for that customer is settled as single mode settles one: by the policy.
    let errors = sorted_errors(&env);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, 21);
    assert!(
        errors[0].1.contains("--on-existing-customer fail"),
        "{errors:?}"
    );
    assert_eq!(env.records().customers.len(), 21);
    assert_eq!(env.records().conversations.len(), 20);
    assert!(
        run.stdout.contains("customers linked:       0"),
        "{}",
        run.stdout
    );
}

/// One customer of 150 is refused by the org; every other row lands.
fn one_bad_item(config: SandboxConfig) -> TestEnv {
    let env = TestEnv::new(config);
    let mut text = mixed_export(150, 1);
    // Only the refused customer's rows stay among the extras.
    text = text
        .lines()
        .filter(|line| !line.contains("\"TX\"") && !line.contains("\"TL\""))
        .map(|line| format!("{line}\n"))
        .collect();
    let file = env.write("export.jsonl", &text);
    env.import(&[file.to_str().unwrap(), "--mode", "bulk"])
        .assert_code(1);
    env.assert_exactly_once(150, 150);
    let errors = sorted_errors(&env);
    assert_eq!(errors.iter().map(|e| e.0).collect::<Vec<_>>(), [151, 152]);
    assert!(errors[0].1.contains("/custom/levelStr"), "{errors:?}");
    assert_eq!(env.rows_in_state("failed"), 2);
    env
}

#[test]
fn a_job_with_a_bad_item_fails_only_that_row() {
    let env = one_bad_item(org(Duration::from_millis(20)));
    // Items fail one by one: two customers jobs. The bad item, refused in words with no
    // status, is sent alone once for the single endpoint's verdict (a 422).
    assert_eq!(env.requests_to("POST /v1/customers/bulk"), 2);
    assert_eq!(
        env.stats().requests["POST /v1/customers"]
            .get(&422)
            .copied(),
        Some(1)
    );
    assert_eq!(env.requests_to("POST /v1/customers"), 1);
}

#[test]
fn a_job_refused_whole_is_split_until_the_bad_item_is_alone() {
    let env = one_bad_item(SandboxConfig {
        bulk_refuse_invalid: true,
        ..org(Duration::from_millis(20))
    });
    let refused = env.stats().requests["POST /v1/customers/bulk"]
        .get(&400)
        .copied()
        .unwrap_or(0);
    // The second job (51 customers, the bad one last) is halved until it stands alone:
    // 51 -> 26 -> 13 -> 7 -> 4 -> 2 -> 1, each refused once.
    assert!((2..=8).contains(&refused), "{refused} refusals");
    assert_eq!(env.requests_to("POST /v1/customers"), 0);
}

#[test]
fn a_lost_submit_answer_is_reconciled_not_sent_twice() {
    let env = TestEnv::new(SandboxConfig {
        faults: FaultConfig {
            drop_after_write_rate: 0.2,
            fail_after_write_rate: 0.1,
            fail_rate: 0.05,
            seed: Some(7),
            ..FaultConfig::default()
        },
        ..org(Duration::from_millis(50))
    });
    let file = env.write("export.csv", &generated_csv(250, 2));
    let run = env.import(&[
        file.to_str().unwrap(),
        "--mode",
        "bulk",
        "--bulk-lost-wait",
        "0.5",
        "--reconcile-delay",
        "0.05",
        "--max-retries",
        "30",
        "--rpm",
        "100000",
    ]);
    run.assert_code(0);
    env.assert_exactly_once(250, 500);
    let faults = env.stats().faults;
    assert!(
        faults.drop_after_write + faults.fail_after_write > 0,
        "no answer was lost"
    );
    assert!(env.requests_to("POST /v1/customers/bulk") > 0);
}

/// Takes the checkpoint's SQLite write lock from another connection and holds it: the
/// importer's next write waits out its busy timeout (10 s), then fails, as on a full disk.
fn cut_the_writer_off(env: &TestEnv) -> rusqlite::Connection {
    let lock = rusqlite::Connection::open(env.path("kustomer-import.sqlite")).unwrap();
    lock.busy_timeout(Duration::from_secs(5)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    lock
}

#[test]
fn a_job_that_never_left_is_neither_waited_out_nor_looked_up() {
    // Answers come a second late, so that the writer can be cut off while jobs are out.
    let env = TestEnv::new(SandboxConfig {
        latency: Duration::from_secs(1),
        ..org(Duration::from_millis(50))
    });
    let file = env.write("export.csv", &generated_csv(300, 1));
    // --rpm 3: two of the three customers jobs leave at once, the third waits a minute for
    // its turn.
    let child = env.spawn_import(&[
        file.to_str().unwrap(),
        "--mode",
        "bulk",
        "--rpm",
        "3",
        "--grace",
        "1",
    ]);
    env.wait_for("two submits", |stats| stats.requests_total >= 2);
    std::thread::sleep(Duration::from_millis(300));
    let lock = cut_the_writer_off(&env);
    // The two jobs' ids cannot be recorded: the run stops while the third still waits.
    std::thread::sleep(Duration::from_secs(13));
    drop(lock);
    let run = finish_within(child, Duration::from_secs(60));
    run.assert_code(4);
    assert!(run.stderr.contains("database is locked"), "{}", run.stderr);
    assert_eq!(env.requests_to("POST /v1/customers/bulk"), 2);
    // The checkpoint holds the two jobs that may exist, not the one that never left.
    let jobs: i64 = env
        .checkpoint()
        .query_row("SELECT count(*) FROM bulk_jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jobs, 2);

    let run = env.import(&[
        "export.csv",
        "--mode",
        "bulk",
        "--rpm",
        "100000",
        "--bulk-lost-wait",
        "1",
        "--reconcile-delay",
        "0.05",
    ]);
    run.assert_code(0);
    env.assert_exactly_once(300, 300);
    // The two jobs ran: their customers are found by one lookup each. The third job's rows
    // go in a job of their own, not looked up and created one by one.
    assert_eq!(env.requests_to("GET /v1/customers/{lookup}"), 200);
    assert_eq!(env.requests_to("POST /v1/customers"), 0);
    assert_eq!(env.requests_to("POST /v1/customers/bulk"), 3);
}

#[test]
fn a_lost_job_waited_out_once_is_not_waited_out_again() {
    let env = TestEnv::new(SandboxConfig {
        latency: Duration::from_millis(500),
        ..org(Duration::from_millis(50))
    });
    let file = env.write("export.csv", &generated_csv(100, 1));
    // Killed while its one job is out: the job may exist.
    let mut child = env.spawn_import(&[file.to_str().unwrap(), "--mode", "bulk"]);
    env.wait_for("the submit", |stats| stats.requests_total >= 1);
    child.kill().unwrap();
    child.wait().unwrap();
    let args = [
        "export.csv",
        "--mode",
        "bulk",
        "--bulk-lost-wait",
        "8",
        "--reconcile-delay",
        "0.05",
        "--rpm",
        "100000",
    ];
    // The next run waits for it, then looks its rows up.
    let run = env.import(&args);
    run.assert_code(0);
    assert!(
        run.stderr.contains("never got its answer"),
        "{}",
        run.stderr
    );
    env.assert_exactly_once(100, 100);
    // The same command again at once: nothing to send, and that job is not waited for
    // again.
    let before = env.stats().requests_total;
    let again = env.import(&args);
    again.assert_code(0);
    assert!(
        !again.stderr.contains("never got its answer"),
        "{}",
        again.stderr
    );
    assert_eq!(env.stats().requests_total, before);
}

#[test]
fn a_bulk_submit_the_api_did_not_take_is_sent_again_not_looked_up() {
    // A 503 is the API saying it did not handle the request: no job was made, so the job
    // is submitted again, and none of its rows waits for a lost job or goes one by one.
    let env = TestEnv::new(SandboxConfig {
        faults: FaultConfig {
            busy_rate: 0.2,
            seed: Some(16),
            ..FaultConfig::default()
        },
        ..org(Duration::from_millis(50))
    });
    let file = env.write("export.csv", &generated_csv(250, 2));
    env.import(&[
        file.to_str().unwrap(),
        "--mode",
        "bulk",
        "--bulk-lost-wait",
        "0.5",
        "--reconcile-delay",
        "0.05",
        "--max-retries",
        "12",
        "--rpm",
        "100000",
    ])
    .assert_code(0);
    env.assert_exactly_once(250, 500);
    let busy_submits: u64 = ["POST /v1/customers/bulk", "POST /v1/conversations/bulk"]
        .iter()
        .filter_map(|route| env.stats().requests.get(*route)?.get(&503).copied())
        .sum();
    assert!(busy_submits > 0, "no submit was answered 503");
    for route in [
        "POST /v1/customers",
        "POST /v1/conversations",
        "GET /v1/customers/{lookup}",
        "GET /v1/conversations/{lookup}",
    ] {
        assert_eq!(env.requests_to(route), 0, "{route}");
    }
}

#[test]
fn jobs_slower_than_the_first_poll_cost_extra_polls_of_one_job_only() {
    // Jobs take 1.5 s, longer than the first poll (1 s): the first eight jobs leave
    // together, before any of them can have taught the run how long jobs take.
    let env = TestEnv::new(org(Duration::from_millis(1500)));
    let file = env.write("export.csv", &generated_csv(800, 1));
    env.import(&[file.to_str().unwrap(), "--mode", "bulk", "--rpm", "100000"])
        .assert_code(0);
    env.assert_exactly_once(800, 800);
    let jobs =
        env.requests_to("POST /v1/customers/bulk") + env.requests_to("POST /v1/conversations/bulk");
    let statuses = env.requests_to("GET /v1/bulk/{id}");
    let results = env.requests_to("GET /v1/bulk/{id}/batches");
    // A poll reads a job's results, which hold every item once it is done: one read a job,
    // and, for the one job that finds out how long jobs take (and later the one that
    // checks whether they got faster), a few polls that find it unfinished, each a read
    // and a status.
    assert!(results >= jobs, "every job's results are read");
    assert!(
        results + statuses <= jobs + 8,
        "{results} reads of results and {statuses} of status for {jobs} jobs"
    );
}

#[test]
fn auto_mode_goes_bulk_only_for_a_few_hundred_rows() {
    let env = TestEnv::plain();
    let small = env.write("small.csv", &generated_csv(20, 3));
    env.import(&[small.to_str().unwrap(), "--checkpoint", "small.sqlite"])
        .assert_code(0);
    assert_eq!(
        env.stats().requests_total,
        80,
        "20 customers + 60 conversations"
    );
    assert_eq!(env.requests_to("POST /v1/conversations/bulk"), 0);
    // 450 rows, of which the first 20 customers' are known to Kustomer already (made by
    // the small run): those are linked, and their rows' conversations go on alone.
    let large = env.write("large.csv", &generated_csv(150, 3));
    env.import(&[large.to_str().unwrap()]).assert_code(0);
    assert!(env.requests_to("POST /v1/conversations/bulk") > 0);
    assert!(env.requests_to("POST /v1/conversations") <= 60 + 20);
}

#[test]
fn without_bulk_jobs_auto_goes_single_and_bulk_says_why() {
    let env = TestEnv::new(SandboxConfig {
        without_bulk: true,
        ..org(Duration::from_millis(20))
    });
    let file = env.write("export.csv", &generated_csv(150, 3));
    let run = env.import(&[file.to_str().unwrap(), "--mode", "bulk"]);
    run.assert_code(2);
    assert!(run.stderr.contains("bulk"), "{}", run.stderr);
    assert_eq!(env.stats().customers, 0);
    // --mode auto (the default) tries, then goes on one request per record.
    env.import(&[file.to_str().unwrap(), "--rpm", "100000"])
        .assert_code(0);
    env.assert_exactly_once(150, 450);
    assert!(env.requests_to("POST /v1/customers") >= 150);
}

#[test]
fn sigterm_lets_the_jobs_in_flight_finish_and_the_same_command_resumes() {
    let env = TestEnv::new(org(Duration::from_millis(800)));
    let file = env.write("export.csv", &generated_csv(300, 3));
    let args = [file.to_str().unwrap(), "--mode", "bulk", "--rpm", "100000"];
    let child = env.spawn_import(&args);
    env.wait_for("a conversations job", |stats| {
        stats
            .requests
            .get("POST /v1/conversations/bulk")
            .is_some_and(|by_status| !by_status.is_empty())
    });
    terminate(&child);
    let run = finish(child);
    run.assert_code(4);
    assert!(
        env.stats().conversations < 900,
        "the run finished before the signal"
    );
    // What was in flight finished: no row is left with an unanswered request, no job
    // unfinished.
    let checkpoint = env.checkpoint();
    let count = |sql: &str| -> i64 { checkpoint.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM rows WHERE state LIKE '%_sent'"),
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM bulk_jobs WHERE state IN ('submitting', 'queued')"),
        0
    );
    let status = env.command(&["status", "--json"]);
    status.assert_code(0);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(
        status["bulk_jobs"]["complete"].as_u64().unwrap() > 0,
        "{status}"
    );
    env.import(&args).assert_code(0);
    env.assert_exactly_once(300, 900);
}

#[test]
fn an_api_without_bulk_jobs_counts_no_job_and_says_so_once() {
    let env = TestEnv::new(SandboxConfig {
        without_bulk: true,
        ..org(Duration::from_millis(20))
    });
    let file = env.write("export.csv", &generated_csv(400, 2));
    let run = env.import(&[file.to_str().unwrap(), "--rpm", "100000", "--json"]);
    run.assert_code(0);
    env.assert_exactly_once(400, 800);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["bulk_jobs"], 0, "a refused submit is no job");
    let refused_submits: u64 = env
        .stats()
        .requests
        .iter()
        .filter(|(route, _)| {
            route.starts_with("POST")
                && !route.ends_with("customers")
                && !route.ends_with("conversations")
        })
        .map(|(_, by_status)| by_status.values().sum::<u64>())
        .sum();
    assert!(
        refused_submits > 1,
        "several jobs met the missing endpoint: {:?}",
        env.stats().requests
    );
    assert_eq!(
        run.stderr.matches("the API has no bulk jobs").count(),
        1,
        "{}",
        run.stderr
    );
}
