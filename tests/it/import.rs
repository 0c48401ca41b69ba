//! The import pipeline end to end: samples, resume, re-runs, the rate ceiling, bad keys.

use std::time::Duration;

use kustomer_import::sandbox::SandboxConfig;

use crate::harness::*;

#[test]
fn the_csv_sample_lands_each_customer_once_and_each_good_row_once() {
    let env = TestEnv::plain();
    let sample = sample("tickets.csv");
    let run = env.import(&[sample.to_str().unwrap()]);
    run.assert_code(1);
    // 20 customers with conversations + 1 customer-only row; 50 conversation rows.
    env.assert_exactly_once(21, 50);
    assert_eq!(env.rows_in_state("done"), 51);
    assert_eq!(env.rows_in_state("failed"), 5);
    let errors = env.errors();
    let lines: Vec<u64> = errors.iter().map(|e| e.1).collect();
    assert_eq!(lines, [23, 33, 40, 41, 58], "{errors:#?}");
    assert!(errors.iter().all(|e| e.0.ends_with("tickets.csv")));
    assert_eq!(errors[0].2, "emails[0].email");
    assert!(
        errors[1].3.contains("has 3 fields, the header has 8"),
        "{}",
        errors[1].3
    );
    assert_eq!(errors[2].2, "conversation.status");
    assert_eq!(errors[3].2, "customer");
    assert_eq!(errors[4].2, "conversation.externalId");
    assert!(
        run.stdout.contains("conversations created:  50"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_jsonl_sample_takes_flat_and_api_shaped_rows() {
    let env = TestEnv::plain();
    let sample = sample("tickets.jsonl");
    env.import(&[sample.to_str().unwrap()]).assert_code(1);
    env.assert_exactly_once(25, 48);
    assert_eq!(env.rows_in_state("done"), 49);
    let lines: Vec<u64> = env.errors().iter().map(|e| e.1).collect();
    assert_eq!(lines, [11, 21, 31, 41]);
    // API-shaped rows keep their extra fields.
    let records = env.records();
    assert!(
        records
            .conversations
            .iter()
            .any(|c| c.extra.get("priority").is_some())
    );
}

#[test]
fn several_files_in_one_run_keep_each_rows_file_and_line() {
    let env = TestEnv::plain();
    let (csv, jsonl) = (sample("tickets.csv"), sample("tickets.jsonl"));
    env.import(&[csv.to_str().unwrap(), jsonl.to_str().unwrap()])
        .assert_code(1);
    env.assert_exactly_once(21 + 25, 50 + 48);
    let mut errors: Vec<(String, u64)> = env
        .errors()
        .into_iter()
        .map(|e| (e.0.rsplit('/').next().unwrap().to_string(), e.1))
        .collect();
    errors.sort();
    let expected: Vec<(String, u64)> = [
        ("tickets.csv", [23, 33, 40, 41, 58].as_slice()),
        ("tickets.jsonl", &[11, 21, 31, 41]),
    ]
    .iter()
    .flat_map(|(file, lines)| lines.iter().map(|line| (file.to_string(), *line)))
    .collect();
    assert_eq!(errors, expected);
    // The checkpoint knows every row by its own file.
    let by_file: Vec<(String, i64)> = env
        .checkpoint()
        .prepare("SELECT source_file, count(*) FROM rows GROUP BY source_file ORDER BY 1")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .map(|(file, n)| (file.rsplit('/').next().unwrap().to_string(), n))
        .collect();
    assert_eq!(
        by_file,
        [
            ("tickets.csv".to_string(), 56),
            ("tickets.jsonl".to_string(), 53)
        ]
    );
}

#[test]
fn a_second_run_on_a_finished_checkpoint_sends_no_create() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(10, 3));
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    let creates = env.stats().creates_total;
    assert_eq!(creates, 40);
    let again = env.import(&[file.to_str().unwrap()]);
    again.assert_code(0);
    assert_eq!(env.stats().creates_total, creates, "a re-run sent creates");
    assert!(
        again.stdout.contains("already done:         30"),
        "{}",
        again.stdout
    );
    env.assert_exactly_once(10, 30);
}

#[test]
fn tomorrows_export_creates_only_the_new_rows_and_reuses_customers() {
    let env = TestEnv::plain();
    let today = env.write("today.csv", &generated_csv(5, 2));
    env.import(&[today.to_str().unwrap()]).assert_code(0);
    let mut tomorrow = generated_csv(5, 3);
    tomorrow.push_str("C99,New Customer,c99@example.com,T99-0,Hello,open\n");
    let tomorrow = env.write("tomorrow.csv", &tomorrow);
    let run = env.import(&[tomorrow.to_str().unwrap()]);
    run.assert_code(0);
    // 5 new conversations for known customers (no customer create), 1 new customer.
    assert_eq!(env.stats().creates_total, 15 + 5 + 2);
    env.assert_exactly_once(6, 16);
}

#[test]
fn a_run_killed_mid_way_resumes_without_duplicates() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        latency: Duration::from_millis(15),
        ..SandboxConfig::default()
    });
    let file = env.write("export.csv", &generated_csv(60, 4));
    let mut child = env.spawn_import(&[file.to_str().unwrap(), "--concurrency", "8"]);
    // Kill once a good part (but not all) has landed.
    env.wait_for_conversations(40);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        env.stats().conversations < 240,
        "the run finished before it was killed"
    );
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    env.assert_exactly_once(60, 240);
    assert_eq!(env.rows_in_state("done"), 240);
}

#[test]
fn the_rate_ceiling_holds_in_every_window() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        rate_window: Duration::from_secs(1),
        ..SandboxConfig::default()
    });
    let file = env.write("export.csv", &generated_csv(20, 2));
    env.import(&[file.to_str().unwrap(), "--rpm", "20", "--rate-window", "1"])
        .assert_code(0);
    let stats = env.stats();
    assert_eq!(stats.requests_total, 60);
    assert!(
        stats.max_requests_in_window <= 20,
        "{} requests in one window",
        stats.max_requests_in_window
    );
}

#[test]
fn a_refused_key_exits_3_and_fails_no_row() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(5, 2));
    let mut command = env.import_command(&[file.to_str().unwrap()]);
    command.env("KUSTOMER_API_KEY", "wrong-key-9d3a");
    let run = run(command);
    run.assert_code(3);
    assert!(run.stderr.contains("refused the key"), "{}", run.stderr);
    assert!(!run.stderr.contains("wrong-key-9d3a") && !run.stdout.contains("wrong-key-9d3a"));
    assert_eq!(env.rows_in_state("failed"), 0);
    assert_eq!(env.records().customers.len(), 0);
    let checkpoint = std::fs::read(env.path("kustomer-import.sqlite")).unwrap();
    assert!(!String::from_utf8_lossy(&checkpoint).contains("wrong-key-9d3a"));
    // With the right key, the same command finishes the job.
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    env.assert_exactly_once(5, 10);
}

#[test]
fn no_key_and_no_sandbox_is_a_usage_error_that_says_what_to_do() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(1, 1));
    let mut command = env.import_command(&[file.to_str().unwrap()]);
    command.env_remove("KUSTOMER_API_KEY");
    let run = run(command);
    run.assert_code(2);
    assert!(run.stderr.contains("KUSTOMER_API_KEY") && run.stderr.contains("--sandbox"));
    assert_eq!(env.stats().requests_total, 0);
}

#[test]
fn the_built_in_sandbox_runs_the_sample_with_no_account() {
    let env = TestEnv::plain();
    let sample = sample("tickets.csv");
    let mut command = env.import_command(&[sample.to_str().unwrap(), "--sandbox"]);
    command
        .env_remove("KUSTOMER_API_KEY")
        .env_remove("KUSTOMER_BASE_URL");
    run(command).assert_code(1);
    assert_eq!(
        env.rows_in_state_at("kustomer-import.sandbox.sqlite", "done"),
        51
    );
    assert!(
        !env.path("kustomer-import.sqlite").exists(),
        "a rehearsal never writes the real import's default checkpoint"
    );
    assert_eq!(
        env.stats().requests_total,
        0,
        "--sandbox must not use another server"
    );
}

#[test]
fn a_second_run_on_a_held_checkpoint_exits_5_naming_the_holder() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(1, 1));
    let lock =
        kustomer_import::checkpoint::RunLock::acquire(&env.path("kustomer-import.sqlite")).unwrap();
    let run = env.import(&[file.to_str().unwrap()]);
    run.assert_code(5);
    assert!(
        run.stderr.contains(&format!("pid {}", std::process::id())),
        "{}",
        run.stderr
    );
    drop(lock);
    env.import(&[file.to_str().unwrap()]).assert_code(0);
}

#[test]
fn an_unreadable_input_exits_2_before_any_request() {
    let env = TestEnv::plain();
    let run = env.import(&["missing.csv"]);
    run.assert_code(2);
    assert!(run.stderr.contains("missing.csv"), "{}", run.stderr);
    assert_eq!(env.stats().requests_total, 0);
}

#[test]
fn a_row_the_api_refuses_fails_with_the_servers_words_and_the_run_goes_on() {
    // The org defines one custom attribute; the live API refuses others, which no local
    // check can know.
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        custom_attributes: Some(vec!["tierStr".into()]),
        ..SandboxConfig::default()
    });
    let file = env.write(
        "export.jsonl",
        concat!(
            r#"{"customer": {"externalId": "A", "custom": {"levelStr": "gold"}}, "conversation": {"name": "One"}}"#,
            "\n",
            r#"{"customer": {"externalId": "A", "custom": {"levelStr": "gold"}}, "conversation": {"name": "Two"}}"#,
            "\n",
            r#"{"customer": {"externalId": "B", "custom": {"tierStr": "gold"}}, "conversation": {"name": "Three"}}"#,
            "\n"
        ),
    );
    env.import(&[file.to_str().unwrap()]).assert_code(1);
    env.assert_exactly_once(1, 1);
    // Errors are written as rows settle, not in line order.
    let mut errors = env.errors();
    errors.sort_by_key(|e| e.1);
    assert_eq!(errors.iter().map(|e| e.1).collect::<Vec<_>>(), [1, 2]);
    assert!(errors[0].3.contains("/custom/levelStr"), "{errors:?}");
    assert!(
        errors[1].3.starts_with("its customer could not be created"),
        "{errors:?}"
    );
    // The second row of the refused customer cost no request of its own.
    assert_eq!(env.stats().creates_total, 3);
    // Nothing was made for the refused customer: it is not left "unknown" in the checkpoint.
    let customers: i64 = env
        .checkpoint()
        .query_row(
            "SELECT count(*) FROM customers WHERE customer_id IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(customers, 0);
}

#[test]
fn stdin_is_read_with_format_and_refused_without_it() {
    let env = TestEnv::plain();
    let csv = std::fs::read(sample("tickets.csv")).unwrap();
    let mut child = env
        .import_command(&["-", "--format", "csv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &csv).unwrap();
    finish(child).assert_code(1);
    env.assert_exactly_once(21, 50);
    let errors = env.errors();
    assert!(errors.iter().all(|e| e.0 == "-"), "{errors:?}");
    assert_eq!(
        errors.iter().map(|e| e.1).collect::<Vec<_>>(),
        [23, 33, 40, 41, 58]
    );
    let run = env.import(&["-"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("use --format csv|jsonl"),
        "{}",
        run.stderr
    );
}
