//! A newcomer's first hour (issue 14): the columns a file's mapping reads are shown, a file
//! whose columns mean nothing to the default mapping is refused before any request, and
//! `mapping init` writes a mapping that `validate` takes once edited.

use crate::harness::*;

#[test]
fn mapping_init_writes_a_mapping_that_validate_takes_after_the_users_edits() {
    let env = TestEnv::plain();
    let export = env.path("helpdesk.csv");
    std::fs::copy(sample("helpdesk.csv"), &export).unwrap();
    let init = env.command(&["mapping", "init", "helpdesk.csv"]);
    init.assert_code(0);
    assert!(
        init.stdout.contains("helpdesk.mapping.toml"),
        "{}",
        init.stdout
    );
    let written = std::fs::read_to_string(env.path("helpdesk.mapping.toml")).unwrap();
    assert!(written.contains("encoding = \"windows-1252\""), "{written}");
    // A second init does not overwrite the user's file.
    env.command(&["mapping", "init", "helpdesk.csv"])
        .assert_code(2);

    // The user's edits: the export's statuses, its priorities and its dates.
    let edited = written
        .replace("# solved = \"done\"", "solved = \"done\"")
        .replace("# closed = \"done\"", "closed = \"done\"")
        .replace(
            "# pending = \"snoozed\"",
            "pending = \"snoozed\"\nhold = \"snoozed\"",
        )
        .replace("# new = \"open\"", "new = \"open\"")
        + "\n[conversation.extra]\nimportedAt = \"{Created At}\"\npriority = \"Priority\"\n\
           \n[conversation.values.priority]\nlow = 1\nnormal = 2\nhigh = 4\nurgent = 5\n";
    // TOML wants each table once: the [csv] table moves after the extra ones.
    let (before_csv, csv) = edited.split_once("\n[csv]\n").unwrap();
    let (csv, rest) = csv.split_once("\n\n").unwrap_or((csv, ""));
    let edited = format!("{before_csv}\n{rest}\n[csv]\n{csv}\n");
    std::fs::write(env.path("helpdesk.mapping.toml"), edited).unwrap();

    let mine = env.command(&[
        "validate",
        "helpdesk.csv",
        "--mapping",
        "helpdesk.mapping.toml",
        "--json",
    ]);
    let theirs = env.command(&[
        "validate",
        "helpdesk.csv",
        "--mapping",
        sample("helpdesk.mapping.toml").to_str().unwrap(),
        "--json",
    ]);
    let mine: serde_json::Value = serde_json::from_str(&mine.stdout).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(&theirs.stdout).unwrap();
    assert_eq!(mine["valid"], 27, "{mine}");
    assert_eq!(mine["invalid"], theirs["invalid"]);
    assert_eq!(mine["customers"], theirs["customers"]);
}

#[test]
fn an_export_whose_columns_the_default_mapping_does_not_know_is_refused_before_any_request() {
    let env = TestEnv::plain();
    let file = env.write(
        "zendesk.csv",
        "Ticket ID;Requester;Requester Email;Subject\n1;Ann Lee;ann@example.com;Help\n",
    );
    let run = env.import(&[file.to_str().unwrap()]);
    run.assert_code(2);
    assert_eq!(env.stats().requests_total, 0);
    for named in [
        "\"Ticket ID\"",
        "\"Requester Email\"",
        "--mapping",
        "mapping init",
    ] {
        assert!(
            run.stderr.contains(named),
            "{named} missing: {}",
            run.stderr
        );
    }
    assert!(
        !env.path("kustomer-import.sqlite").exists(),
        "refused before the checkpoint was made"
    );
    let validate = env.command(&["validate", file.to_str().unwrap()]);
    validate.assert_code(2);
    assert!(
        validate.stderr.contains("mapping init"),
        "{}",
        validate.stderr
    );
}

#[test]
fn the_columns_are_shown_before_the_rows_and_a_close_name_is_warned_of() {
    let env = TestEnv::plain();
    let file = env.write(
        "export.csv",
        "email,Ticket Subject,Status,Agent\nann@example.com,Help,open,Bo\n",
    );
    let run = env.import(&[file.to_str().unwrap()]);
    run.assert_code(0);
    let shown = run
        .stderr
        .find("which column feeds which field")
        .expect("the columns are shown");
    assert!(shown < run.stderr.find("rows read").unwrap_or(usize::MAX));
    for line in [
        "  email   -> customer.emails",
        "  Status  -> conversation.status",
        "  not read: \"Ticket Subject\", \"Agent\"",
    ] {
        assert!(run.stderr.contains(line), "{line} missing: {}", run.stderr);
    }
    assert!(
        run.stderr
            .contains("\"Ticket Subject\" is not read, and looks like `subject`"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unreachable_base_url_stops_at_once_with_one_line_and_every_row_pending() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(20, 2));
    for mode in ["single", "bulk"] {
        let mut command = env.import_command(&[file.to_str().unwrap(), "--mode", mode, "--json"]);
        // Nothing listens on port 1 of loopback: every connection is refused.
        command.env("KUSTOMER_BASE_URL", "http://127.0.0.1:1");
        let started = std::time::Instant::now();
        let run = run(command);
        let took = started.elapsed();
        run.assert_code(2);
        // The bound, generous next to the quarter of a second it takes: retries
        // took 20 s and more.
        assert!(
            took < std::time::Duration::from_secs(5),
            "{mode}: took {took:?}"
        );
        let errors: Vec<&str> = run.stderr.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{mode}: {}", run.stderr);
        assert!(errors[0].contains("http://127.0.0.1:1") && errors[0].contains("--base-url"));
        assert!(
            !run.stderr.contains("WARN"),
            "{mode}: no storm of warnings: {}",
            run.stderr
        );
        let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(summary["stopped_because"], "endpoint", "{summary}");
        assert_eq!(summary["rows_failed"], 0, "{summary}");
        assert_eq!(summary["rows_pending"], summary["rows_read"], "{summary}");
        assert_eq!(env.rows_in_state("failed") + env.rows_in_state("done"), 0);
    }
    // The same command pointed at the API imports every row, once.
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    env.assert_exactly_once(20, 40);
}
