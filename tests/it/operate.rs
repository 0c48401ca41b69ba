//! Operating imports: `status` and `export` over a checkpoint with rows in every state.

use std::time::Duration;

use kustomer_import::checkpoint::RunLock;
use kustomer_import::sandbox::SandboxConfig;

use crate::harness::*;

/// The CSV sample imported, then two rows made pending and two unknown (as a run killed
/// between intent and answer leaves them).
fn checkpoint_in_every_state(env: &TestEnv) -> String {
    let sample = sample("tickets.csv");
    let sample = sample.to_str().unwrap().to_string();
    env.import(&[&sample]).assert_code(1);
    let checkpoint = rusqlite::Connection::open(env.path("kustomer-import.sqlite")).unwrap();
    checkpoint
        .execute(
            "UPDATE rows SET state = 'pending', conversation_id = NULL WHERE line IN (2, 3)",
            [],
        )
        .unwrap();
    checkpoint
        .execute(
            "UPDATE rows SET state = 'conversation_sent', conversation_id = NULL WHERE line IN (4, 8)",
            [],
        )
        .unwrap();
    sample
}

#[test]
fn status_counts_rows_in_every_state_and_lists_the_runs() {
    let env = TestEnv::plain();
    let sample = checkpoint_in_every_state(&env);
    let run = env.command(&["status", "--json"]);
    run.assert_code(0);
    let status: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(status["version"], 1);
    let file = &status["files"][0];
    assert_eq!(status["files"].as_array().unwrap().len(), 1);
    assert_eq!(file["file"], sample.as_str());
    for (state, count) in [
        ("rows", 56),
        ("done", 47),
        ("failed", 5),
        ("pending", 2),
        ("unknown", 2),
    ] {
        assert_eq!(file[state], count, "{state}");
    }
    assert_eq!(file["failed_by_reason"].as_array().unwrap().len(), 5);
    assert_eq!(status["customers"]["created"], 21);
    assert_eq!(status["active_run"], serde_json::Value::Null);
    let reasons: u64 = status["failed_by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(reasons, 5);
    // A second run finishes the four rows; status lists both runs, newest first.
    env.import(&[&sample]).assert_code(1);
    let status: serde_json::Value =
        serde_json::from_str(&env.command(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["total"]["done"], 51);
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], 2);
    assert_eq!(runs[0]["exit_code"], 1);
    assert_eq!(runs[0]["rows_done"], 51);
    assert!(!runs[0]["args"].as_str().unwrap().contains(KEY));
    // The table says the same in words.
    let table = env.command(&["status"]).stdout;
    assert!(table.contains("no run is going on now"), "{table}");
    assert!(table.contains("#2 started"), "{table}");
}

#[test]
fn status_names_a_run_going_on_now() {
    let env = TestEnv::plain();
    checkpoint_in_every_state(&env);
    let _held = RunLock::acquire(&env.path("kustomer-import.sqlite")).unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&env.command(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["active_run"]["pid"], std::process::id());
}

#[test]
fn export_writes_every_row_once_with_its_ids() {
    let env = TestEnv::plain();
    checkpoint_in_every_state(&env);
    let run = env.command(&["export", "--state", "all"]);
    run.assert_code(0);
    let mut reader = csv::Reader::from_reader(run.stdout.as_bytes());
    let header = reader.headers().unwrap().clone();
    assert_eq!(
        header.iter().collect::<Vec<_>>(),
        [
            "file",
            "line",
            "row_key",
            "customer_external_id",
            "customer_id",
            "conversation_id",
            "state",
            "customer",
            "error",
            "outcome_unknown",
            "messages",
            "notes",
            "updated_at",
            "tags_missing",
            "company_id"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let mut lines: Vec<u64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    lines.dedup();
    assert_eq!(lines.len(), 56, "each input row once");
    // Every done row carries the sandbox's ids.
    let records = env.records();
    let conversations: std::collections::HashSet<&str> = records
        .conversations
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    for row in rows.iter().filter(|r| &r[6] == "done") {
        // The customer-only row (line 57) has a customer and no conversation.
        assert!(
            conversations.contains(&row[5]) || &row[1] == "57",
            "{row:?}"
        );
        assert!(!row[4].is_empty(), "{row:?}");
        assert_eq!(&row[7], "created");
    }
    let failed = env.command(&["export", "--state", "failed", "--format", "jsonl"]);
    let failed_lines: Vec<u64> = failed
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["line"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(failed_lines, [23, 33, 40, 41, 58]);
    let written = env.command(&["export", "-o", "ids.csv"]);
    written.assert_code(0);
    assert!(
        written.stderr.contains("47 rows written"),
        "{}",
        written.stderr
    );
}

#[test]
fn status_of_a_missing_checkpoint_is_a_usage_error() {
    let env = TestEnv::plain();
    let run = env.command(&["status"]);
    run.assert_code(2);
    assert!(run.stderr.contains("no such checkpoint"), "{}", run.stderr);
}

#[test]
fn import_json_prints_one_object_that_matches_the_checkpoint() {
    let env = TestEnv::plain();
    let sample = sample("tickets.csv");
    let run = env.import(&[sample.to_str().unwrap(), "--json", "--log-format", "json"]);
    run.assert_code(1);
    // Nothing else on stdout: one line, one object.
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["version"], 1);
    assert_eq!(summary["exit_code"], 1);
    assert_eq!(summary["stopped_because"], "finished");
    assert_eq!(summary["rows_read"], 56);
    assert_eq!(summary["rows_done"], env.rows_in_state("done"));
    assert_eq!(summary["rows_failed"], env.rows_in_state("failed"));
    assert_eq!(summary["customers_created"], 21);
    assert_eq!(summary["requests"], env.stats().requests_total);
    // Every line on stderr is a JSON log object too.
    assert!(run.stderr.contains("failed rows are in"), "{}", run.stderr);
    for line in run.stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definition() {
    let env = TestEnv::plain();
    let bash = env.command(&["completions", "bash"]);
    bash.assert_code(0);
    assert!(bash.stdout.contains("--checkpoint"));
    let man = env.command(&["man"]);
    man.assert_code(0);
    assert!(man.stdout.contains(".TH kustomer-import 1"));
    // One page holds every command with its flags.
    for part in [
        "KUSTOMER-IMPORT-IMPORT",
        "KUSTOMER-IMPORT-STATUS",
        "retry\\-failed",
    ] {
        assert!(man.stdout.contains(part), "the man page lacks {part}");
    }
    env.command(&["man", "--dir", "pages"]).assert_code(0);
    for page in [
        "kustomer-import.1",
        "kustomer-import-import.1",
        "kustomer-import-export.1",
    ] {
        assert!(env.path("pages").join(page).exists(), "no {page}");
    }
}

#[test]
fn import_help_names_the_key_groups_its_flags_and_ends_with_examples() {
    let env = TestEnv::plain();
    let long = env.command(&["import", "--help"]);
    long.assert_code(0);
    let mut at = 0;
    for heading in [
        "Input and mapping:",
        "Target and key:",
        "Rate and concurrency:",
        "Recovery:",
        "Output and logs:",
        "Examples:",
        "Exit codes:",
    ] {
        let found = long.stdout[at..]
            .find(heading)
            .unwrap_or_else(|| panic!("{heading} missing or out of order:\n{}", long.stdout));
        at += found;
    }
    assert!(long.stdout.contains("KUSTOMER_API_KEY"));
    assert!(long.stdout.contains("--sandbox") && long.stdout.contains("--rate-share 0.5"));
    let short = env.command(&["import", "-h"]);
    short.assert_code(0);
    assert!(short.stdout.contains("KUSTOMER_API_KEY"));
    assert!(!short.stdout.contains("Examples:"), "-h is the short form");
    assert!(short.stdout.len() < long.stdout.len());
    let version = env.command(&["--version"]);
    version.assert_code(0);
    assert!(version.stdout.contains("(commit "), "{}", version.stdout);
}

#[test]
fn retry_failed_turns_fixed_failures_into_done_and_touches_no_done_row() {
    let env = TestEnv::plain();
    // A customer made elsewhere, so that --on-existing-customer fail fails its row.
    env.customer_made_elsewhere("X", "shared@example.com");
    let file = env.write(
        "export.csv",
        "external_id,email,conversation_id,subject\nA,shared@example.com,T1,One\nB,b@example.com,T2,Two\n",
    );
    let path = file.to_str().unwrap();
    env.import(&[path, "--on-existing-customer", "fail"])
        .assert_code(1);
    let done_before: String = env
        .checkpoint()
        .query_row(
            "SELECT conversation_id FROM rows WHERE row_key = 'conv:T2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // Without --retry-failed a failed row stays failed, and costs no request.
    let requests = env.stats().requests_total;
    env.import(&[path]).assert_code(1);
    assert_eq!(env.stats().requests_total, requests);
    // The cause is fixed (linking is allowed now): the failed row is sent again.
    let creates = env.stats().creates_total;
    env.import(&[path, "--retry-failed"]).assert_code(0);
    assert_eq!(env.rows_in_state("done"), 2);
    // The retried row's customer create (answered 409, then linked) and its conversation.
    assert_eq!(
        env.stats().creates_total,
        creates + 2,
        "only the retried row's creates"
    );
    let done_after: String = env
        .checkpoint()
        .query_row(
            "SELECT conversation_id FROM rows WHERE row_key = 'conv:T2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(done_before, done_after);
    assert_eq!(env.records().conversations.len(), 2);
}

#[test]
fn conversations_carry_imported_at_unless_turned_off() {
    let env = TestEnv::plain();
    let file = env.write(
        "export.csv",
        "external_id,conversation_id,subject\nA,T1,One\n",
    );
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    let stamped = &env.records().conversations[0];
    assert!(stamped.extra["importedAt"].as_str().unwrap().ends_with('Z'));
    let other = env.write(
        "other.csv",
        "external_id,conversation_id,subject\nB,T2,Two\n",
    );
    env.import(&[other.to_str().unwrap(), "--no-stamp-imported-at"])
        .assert_code(0);
    assert!(
        env.records().conversations[1]
            .extra
            .get("importedAt")
            .is_none()
    );
}

#[test]
fn export_never_writes_over_the_checkpoint() {
    let env = TestEnv::plain();
    checkpoint_in_every_state(&env);
    for target in [
        "kustomer-import.sqlite",
        "./kustomer-import.sqlite-wal",
        "kustomer-import.sqlite.lock",
    ] {
        let run = env.command(&["export", "-o", target]);
        run.assert_code(2);
        assert!(run.stderr.contains("is the checkpoint"), "{}", run.stderr);
    }
    env.command(&["status"]).assert_code(0);
    use std::os::unix::fs::PermissionsExt;
    env.command(&["export", "-o", "ids.csv"]).assert_code(0);
    let mode = std::fs::metadata(env.path("ids.csv"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn bad_rows_seen_again_count_as_failed_earlier_not_as_new_failures() {
    let env = TestEnv::plain();
    let sample = sample("tickets.csv");
    let sample = sample.to_str().unwrap();
    env.import(&[sample]).assert_code(1);
    let run = env.import(&[sample, "--json"]);
    run.assert_code(1);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["rows_failed"], 0);
    assert_eq!(summary["rows_failed_earlier"], 5);
    assert_eq!(env.errors().len(), 5, "the errors file still lists them");
}

#[test]
fn a_run_that_cannot_start_still_prints_its_json_summary_and_json_logs() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(1, 1));
    let _held = RunLock::acquire(&env.path("kustomer-import.sqlite")).unwrap();
    for (args, code, because) in [
        (vec![file.to_str().unwrap()], 5, "locked"),
        (vec!["missing.csv"], 2, "input"),
    ] {
        let mut args = args;
        args.extend(["--json", "--log-format", "json"]);
        let run = env.import(&args);
        run.assert_code(code);
        let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(summary["exit_code"], code);
        assert_eq!(summary["stopped_because"], because);
        for line in run.stderr.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
}

#[test]
fn a_command_line_that_cannot_run_still_prints_its_json_object() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(1, 1));
    let file = file.to_str().unwrap();
    // (arguments, whether the key is in the environment, what the error must name)
    let cases: [(Vec<&str>, bool, &str); 4] = [
        (
            vec!["--base-url", "http://api.example.com"],
            true,
            "clear text",
        ),
        (vec!["--rpm", "0"], true, "--rpm"),
        (vec![], false, "KUSTOMER_API_KEY"),
        (vec!["--rpm", "many"], true, "many"),
    ];
    for (extra, with_key, named) in cases {
        let mut command = env.import_command(&[file, "--json", "--log-format", "json"]);
        command.args(&extra);
        if !with_key {
            command.env_remove("KUSTOMER_API_KEY");
        }
        let run = run(command);
        run.assert_code(2);
        let summary: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{extra:?}: {e}: {:?}", run.stdout));
        assert_eq!(summary["exit_code"], 2, "{extra:?}");
        assert_eq!(summary["stopped_because"], "usage", "{extra:?}");
        assert_eq!(summary["rows_read"], 0, "{extra:?}");
        let error = summary["error"].as_str().unwrap_or_default();
        assert!(error.contains(named), "{extra:?}: {error}");
        for line in run.stderr.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{extra:?}: a log line is not JSON ({e}): {line}"));
        }
    }
    assert_eq!(env.stats().requests_total, 0);
    // validate and status too.
    for args in [
        vec!["validate", file, "--delimiter", "ab", "--json"],
        vec!["status", "--checkpoint", "missing.sqlite", "--json"],
    ] {
        let run = env.command(&args);
        run.assert_code(2);
        let object: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {:?}", run.stdout));
        assert_eq!(object["exit_code"], 2);
        assert!(object["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

#[test]
fn a_run_that_cannot_start_prints_its_error_last_and_no_summary() {
    let env = TestEnv::plain();
    let run = env.import(&["missing.csv"]);
    run.assert_code(2);
    assert_eq!(run.stdout, "", "no all-zero summary after the error");
    assert!(
        run.stderr
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("missing.csv")
    );
}

#[test]
fn the_key_is_not_left_in_the_process_environment() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        latency: Duration::from_millis(300),
        ..SandboxConfig::default()
    });
    let file = env.write("export.csv", &generated_csv(20, 1));
    let child = env.spawn_import(&[file.to_str().unwrap(), "--mode", "single"]);
    env.wait_for("a first request", |stats| stats.requests_total > 0);
    let environ = std::fs::read(format!("/proc/{}/environ", child.id()));
    terminate(&child);
    finish(child);
    match environ {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(KEY), "the key is in /proc/<pid>/environ");
            assert!(
                text.contains("PATH="),
                "the rest of the environment is kept"
            );
        }
        // Not root: a non-dumpable process's environ is not ours to read at all.
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied),
    }
}

#[test]
fn an_errors_file_that_cannot_be_written_is_said_so() {
    let env = TestEnv::plain();
    let sample = sample("tickets.csv");
    let run = env.import(&[sample.to_str().unwrap(), "--errors", "/dev/full"]);
    run.assert_code(1);
    assert!(
        !run.stderr.contains("failed rows are in"),
        "claims the rows are in a file that could not be written: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("could not be written"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("export --state failed"),
        "{}",
        run.stderr
    );
}
