//! Real exports are hostile: byte-order marks, CRLF, quoted newlines and delimiters, other
//! delimiters, other encodings, emoji and right-to-left names, rows too short or too long,
//! gzip, stdin, and columns that are not ours. Each test names the exact lines and reasons
//! a user would see, and what lands in the sandbox.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use crate::harness::*;

/// The errors file at `path` as (line, field, reason).
fn errors_at(path: &Path) -> Vec<(u64, String, String)> {
    csv::Reader::from_path(path)
        .unwrap()
        .records()
        .map(|record| {
            let record = record.unwrap();
            (
                record[1].parse().unwrap(),
                record[2].to_string(),
                record[3].to_string(),
            )
        })
        .collect()
}

/// Runs `validate` on `file` with `extra` flags; its exit code and its errors.
fn validate(env: &TestEnv, file: &Path, extra: &[&str]) -> (Run, Vec<(u64, String, String)>) {
    let errors = env.path("validate-errors.csv");
    let mut args = vec![
        "validate",
        file.to_str().unwrap(),
        "--errors",
        errors.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = env.command(&args);
    let found = errors_at(&errors);
    (run, found)
}

/// The names that landed, sorted.
fn sorted(names: impl Iterator<Item = Option<String>>) -> Vec<String> {
    let mut names: Vec<String> = names.flatten().collect();
    names.sort();
    names
}

fn owned(errors: &[(u64, &str, &str)]) -> Vec<(u64, String, String)> {
    errors
        .iter()
        .map(|(line, field, reason)| (*line, field.to_string(), reason.to_string()))
        .collect()
}

#[test]
fn a_bom_crlf_and_a_quoted_field_with_two_newlines_keep_lines_physical() {
    let env = TestEnv::plain();
    let file = env.write(
        "export.csv",
        "\u{feff}email,subject,status\r\n\
         a@x.io,\"two\r\nline\r\nsubject\",open\r\n\
         bad-email,Hi,open\r\n\
         b@x.io,Hello,closed\r\n",
    );
    let (run, errors) = validate(&env, &file, &[]);
    run.assert_code(1);
    assert_eq!(
        errors,
        owned(&[
            (
                5,
                "emails[0].email",
                "\"bad-email\" is not an email address"
            ),
            (
                6,
                "conversation.status",
                "\"closed\" is not one of open, snoozed, done"
            ),
        ])
    );
    env.import(&[file.to_str().unwrap()]).assert_code(1);
    let records = env.records();
    assert_eq!(
        records.conversations[0].name.as_deref(),
        Some("two\r\nline\r\nsubject")
    );
}

#[test]
fn quoted_delimiters_are_kept_and_the_delimiter_is_sniffed_or_given() {
    let env = TestEnv::plain();
    let semicolons = env.write(
        "semicolons.csv",
        "email;subject\na@x.io;\"one; two\"\nb@x.io;three\n",
    );
    let tabs = env.write("tabs.txt", "email\tsubject\nc@x.io\tfour, five\n");
    let pipes = env.write("pipes.csv", "email|subject\nd@x.io|\"six|seven\"\n");
    validate(&env, &semicolons, &[]).0.assert_code(0);
    env.import(&[semicolons.to_str().unwrap()]).assert_code(0);
    env.import(&[tabs.to_str().unwrap(), "--delimiter", "tab"])
        .assert_code(0);
    env.import(&[pipes.to_str().unwrap()]).assert_code(0);
    let names = sorted(env.records().conversations.into_iter().map(|c| c.name));
    assert_eq!(names, ["four, five", "one; two", "six|seven", "three"]);
    // A delimiter the file does not use: one column the default mapping does not know, so
    // the file is refused whole (issue 14), naming the column it saw.
    let (run, _) = validate(&env, &semicolons, &["--delimiter", ","]);
    run.assert_code(2);
    assert!(run.stderr.contains("(\"email;subject\")"), "{}", run.stderr);
}

#[test]
fn short_and_long_rows_are_refused_with_their_field_counts() {
    let env = TestEnv::plain();
    let file = env.write(
        "export.csv",
        "email,subject\na@x.io\nb@x.io,Hi,extra\nc@x.io,ok\n",
    );
    let (run, errors) = validate(&env, &file, &[]);
    run.assert_code(1);
    assert_eq!(
        errors,
        owned(&[
            (2, "", "the record has 1 fields, the header has 2"),
            (3, "", "the record has 3 fields, the header has 2"),
        ])
    );
    env.import(&[file.to_str().unwrap()]).assert_code(1);
    env.assert_exactly_once(1, 1);
}

#[test]
fn emoji_and_right_to_left_names_arrive_byte_for_byte() {
    let env = TestEnv::plain();
    let names = ["Zoë 👩‍💻 Ünal", "مريم العربي", "שָׁלוֹם כהן", "李小龍 🐉"];
    let mut text = String::from("email,name,subject\n");
    for (index, name) in names.iter().enumerate() {
        text.push_str(&format!("p{index}@x.io,{name},{name}\n"));
    }
    let file = env.write("export.csv", &text);
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    let records = env.records();
    let expected = sorted(names.iter().map(|n| Some(n.to_string())));
    assert_eq!(
        sorted(records.customers.into_iter().map(|c| c.name)),
        expected
    );
    assert_eq!(
        sorted(records.conversations.into_iter().map(|c| c.name)),
        expected
    );
}

#[test]
fn a_windows_1252_file_is_refused_as_utf8_and_read_with_its_encoding() {
    let env = TestEnv::plain();
    let file = env.path("latin.csv");
    std::fs::write(
        &file,
        b"name,email\r\nZo\xeb M\xfcller,zoe@x.io\r\nPlain,p@x.io\r\n",
    )
    .unwrap();
    let (run, errors) = validate(&env, &file, &[]);
    run.assert_code(1);
    assert_eq!(
        errors,
        owned(&[(
            2,
            "",
            "the record field \"name\" is not valid UTF-8: is the file in another encoding? \
             (see --encoding)"
        )])
    );
    validate(&env, &file, &["--encoding", "windows-1252"])
        .0
        .assert_code(0);
    env.import(&[file.to_str().unwrap(), "--encoding", "latin1"])
        .assert_code(0);
    let names = sorted(env.records().customers.into_iter().map(|c| c.name));
    assert_eq!(names, ["Plain", "Zoë Müller"]);
    // The mapping file's [csv] section does the same.
    let mapping = env.write(
        "latin.toml",
        "[customer]\nemails = \"email\"\nname = \"name\"\n[csv]\nencoding = \"windows-1252\"\n",
    );
    validate(&env, &file, &["--mapping", mapping.to_str().unwrap()])
        .0
        .assert_code(0);
}

#[test]
fn a_utf16_file_with_a_byte_order_mark_needs_no_flag() {
    let env = TestEnv::plain();
    let text = "email,name\r\na@x.io,Åsa Öberg\r\n";
    let mut bytes = vec![0xff, 0xfe];
    for unit in text.encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    let file = env.path("unicode.csv");
    std::fs::write(&file, bytes).unwrap();
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    assert_eq!(
        env.records().customers[0].name.as_deref(),
        Some("Åsa Öberg")
    );
}

#[test]
fn gzip_with_two_members_is_read_whole_with_its_lines() {
    let env = TestEnv::plain();
    let mut bytes = Vec::new();
    for part in ["email,subject\na@x.io,One\n", "bad,Two\nb@x.io,Three\n"] {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(part.as_bytes()).unwrap();
        bytes.extend(encoder.finish().unwrap());
    }
    let file = env.path("export.csv.gz");
    std::fs::write(&file, bytes).unwrap();
    let (run, errors) = validate(&env, &file, &[]);
    run.assert_code(1);
    assert_eq!(
        errors,
        owned(&[(3, "emails[0].email", "\"bad\" is not an email address")])
    );
    env.import(&[file.to_str().unwrap()]).assert_code(1);
    env.assert_exactly_once(2, 2);
}

#[test]
fn validate_reads_stdin_with_a_format() {
    let env = TestEnv::plain();
    let mut child = std::process::Command::new(binary())
        .current_dir(env.dir.path())
        .args(["validate", "-", "--format", "jsonl", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"email\":\"a@x.io\"}\n{\"email\":\"nope\"}\n{\"email\":\"a@x.io\",\"subject\":\"Hi\"}\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["rows"], 3);
    assert_eq!(report["valid"], 2);
    assert_eq!(report["customers"], 1);
    assert_eq!(report["rows_per_customer"]["most"], 2);
    assert_eq!(
        report["invalid_by_reason"]["emails[].email: not an email address"],
        1
    );
    assert_eq!(
        errors_at(&env.path("kustomer-import.validate-errors.csv")),
        owned(&[(2, "emails[0].email", "\"nope\" is not an email address")])
    );
}

#[test]
fn a_column_the_file_lacks_stops_the_run_before_any_request() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", "Email,Subject\na@x.io,Hi\n");
    let mapping = env.write(
        "mapping.toml",
        "[customer]\nemails = \"Email\"\n[conversation]\nexternalId = \"Ticket ID\"\n",
    );
    let run = env.import(&[
        file.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
    ]);
    run.assert_code(2);
    assert!(
        run.stderr.contains(
            "the mapping names a column the file does not have: \"Ticket ID\". The file's \
             columns are: \"Email\", \"Subject\""
        ),
        "{}",
        run.stderr
    );
    assert_eq!(env.stats().requests_total, 0);
    validate(&env, &file, &["--mapping", mapping.to_str().unwrap()])
        .0
        .assert_code(2);
}

#[test]
fn the_help_desk_sample_validates_with_three_exact_errors_and_imports_the_rest() {
    let env = TestEnv::plain();
    let (export, mapping) = (sample("helpdesk.csv"), sample("helpdesk.mapping.toml"));
    let (run, errors) = validate(&env, &export, &["--mapping", mapping.to_str().unwrap()]);
    run.assert_code(1);
    assert_eq!(
        errors,
        owned(&[
            (
                11,
                "emails[0].email",
                "\"no-at-sign.example.net\" is not an email address"
            ),
            (
                16,
                "conversation.status",
                "\"waiting on customer\" is not one of open, snoozed, done"
            ),
            (
                22,
                "conversation.importedAt",
                "\"20/03/2024 10:00\" is not an RFC 3339 timestamp with a UTC offset, such as \
                 2024-01-31T12:00:00Z"
            ),
        ])
    );
    assert!(
        run.stdout.contains("customers:          11"),
        "{}",
        run.stdout
    );
    env.import(&[
        export.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
    ])
    .assert_code(1);
    env.assert_exactly_once(11, 27);
    let records = env.records();
    let zoe = records
        .customers
        .iter()
        .find(|c| c.external_id.as_deref() == Some("R-300"))
        .unwrap();
    assert_eq!(zoe.name.as_deref(), Some("Zoë Müller"));
    assert_eq!(zoe.emails.len(), 2, "{zoe:?}");
    // Solved and closed became done; pending and hold snoozed; new open.
    assert!(
        records
            .conversations
            .iter()
            .all(|c| matches!(c.status.as_deref(), Some("open" | "snoozed" | "done")))
    );
    // An empty last name leaves no trailing space.
    assert!(
        records
            .customers
            .iter()
            .any(|c| c.name.as_deref() == Some("Ana"))
    );
}

#[test]
fn limit_imports_the_first_valid_rows_and_the_next_run_the_rest() {
    let env = TestEnv::plain();
    let mut text = generated_csv(4, 2);
    text = text.replacen("c0@example.com,T0-1", "bad-email,T0-1", 1);
    let file = env.write("export.csv", &text);
    env.import(&[file.to_str().unwrap(), "--limit", "3"])
        .assert_code(1);
    assert_eq!(env.rows_in_state("done"), 3);
    assert_eq!(env.rows_in_state("failed"), 1);
    assert_eq!(env.records().conversations.len(), 3);
    env.import(&[file.to_str().unwrap()]).assert_code(1);
    env.assert_exactly_once(4, 7);
    assert_eq!(env.rows_in_state("done"), 7);
}

#[test]
fn a_temporary_directory_that_cannot_be_written_stops_the_run_and_names_it() {
    // Past 32,768 distinct rows the tally writes its first run to a scratch file.
    let env = TestEnv::plain();
    let mut text = String::from("customer_external_id,email,conversation_id,subject\n");
    for row in 0..33_000 {
        text.push_str(&format!("C-{row},c{row}@example.com,T-{row},Order {row}\n"));
    }
    let file = env.write("many.csv", &text);
    let missing = env.path("no-such-directory");
    let mut command = std::process::Command::new(binary());
    command
        .current_dir(env.path(""))
        .env("TMPDIR", &missing)
        .args(["validate", file.to_str().unwrap(), "--errors", "errors.csv"]);
    let run = run(command);
    run.assert_code(2);
    let expected = format!(
        "a scratch file in the temporary directory {} failed",
        missing.display()
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("No such file or directory").count(),
        run.stderr.matches(&expected).count(),
        "the cause is said once per message: {}",
        run.stderr
    );
}

#[test]
fn a_jsonl_line_over_the_size_limit_is_refused_with_its_line_and_size_and_the_rest_lands() {
    let env = TestEnv::plain();
    // Valid JSON of a good row, only longer than the default limit of 4 MiB.
    let long = format!(
        "{{\"email\":\"long@x.io\",\"subject\":\"Hi\",\"notes\":\"{}\"}}",
        "x".repeat(5 << 20)
    );
    let file = env.write(
        "export.jsonl",
        &format!(
            "{{\"email\":\"a@x.io\",\"subject\":\"One\"}}\n{long}\n{{\"email\":\"b@x.io\",\"subject\":\"Two\"}}\n"
        ),
    );
    let run = env.import(&[file.to_str().unwrap()]);
    run.assert_code(1);
    env.assert_exactly_once(2, 2);
    let errors = env.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (_, line, field, reason) = &errors[0];
    assert_eq!((*line, field.as_str()), (2, ""));
    assert_eq!(
        reason,
        "the record is longer than the limit of 4 MiB: raise --max-record-size to read it"
    );
    assert!(
        run.stderr.contains("line 2: a record longer than 4 MiB"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("(line 2) was {} bytes long", long.len())),
        "{}",
        run.stderr
    );
}

#[test]
fn a_csv_record_over_the_size_limit_across_quoted_lines_is_refused_and_the_rest_lands() {
    let env = TestEnv::plain();
    // The third record's subject holds 40 lines inside quotes: 2,000 bytes over 6 lines.
    let long_subject = vec!["y".repeat(49); 40].join("\n");
    let file = env.write(
        "export.csv",
        &format!("email,subject\na@x.io,One\n\"b@x.io\",\"{long_subject}\"\nc@x.io,Two\n"),
    );
    let (run, errors) = validate(&env, &file, &["--max-record-size", "1KiB"]);
    run.assert_code(1);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, 3);
    assert!(
        errors[0].2
            == "the record is longer than the limit of 1 KiB: raise --max-record-size to read it",
        "{errors:?}"
    );
    assert!(
        run.stderr.contains("(lines 3 to 42) was 2010 bytes long"),
        "{}",
        run.stderr
    );
    // The same limit from the environment, for import.
    let mut command = env.import_command(&[file.to_str().unwrap()]);
    command.env("KUSTOMER_IMPORT_MAX_RECORD_SIZE", "1KiB");
    crate::harness::run(command).assert_code(1);
    env.assert_exactly_once(2, 2);
    let lines: Vec<u64> = env.errors().iter().map(|e| e.1).collect();
    assert_eq!(lines, [3]);
}

#[test]
fn a_csv_header_over_the_size_limit_is_an_unreadable_input() {
    let env = TestEnv::plain();
    let header = (0..200).map(|i| format!("column {i}")).collect::<Vec<_>>();
    let file = env.write("export.csv", &format!("{}\nx\n", header.join(",")));
    let run = env.import(&[file.to_str().unwrap(), "--max-record-size", "1KiB"]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("cannot read the CSV header: the header row is longer than 1 KiB"),
        "{}",
        run.stderr
    );
    assert_eq!(env.stats().requests_total, 0);
}

#[test]
fn a_nul_in_a_csv_cell_refuses_the_row_naming_its_column_and_sends_nothing_of_it() {
    let env = TestEnv::plain();
    let file = env.write(
        "export.csv",
        "email,subject,notes\na@x.io,Hi,fine\nb@x.io,Hello\0there,x\nc@x.io,Bye,\0\n",
    );
    let (run, errors) = validate(&env, &file, &[]);
    run.assert_code(1);
    assert_eq!(
        errors,
        owned(&[
            (3, "subject", "holds a NUL character (column 2)"),
            (4, "notes", "holds a NUL character (column 3)"),
        ])
    );
    env.import(&[file.to_str().unwrap()]).assert_code(1);
    env.assert_exactly_once(1, 1);
    let records = env.records();
    assert!(
        records
            .conversations
            .iter()
            .all(|c| c.name.as_deref() == Some("Hi")),
        "{:?}",
        records.conversations
    );
}

#[test]
fn a_nul_in_a_csv_header_makes_the_file_unreadable_naming_the_column() {
    let env = TestEnv::plain();
    // UTF-16 without a byte-order mark, read as UTF-8: every other byte is a NUL.
    let text: Vec<u8> = "email,subject\na@x.io,Hi\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let file = env.path("utf16.csv");
    std::fs::write(&file, text).unwrap();
    let run = env.import(&[file.to_str().unwrap()]);
    run.assert_code(2);
    assert!(
        run.stderr.contains(
            "cannot read the CSV header: column 1 holds a NUL character: is the file UTF-16 \
             without a byte-order mark? (see --encoding)"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(env.stats().requests_total, 0);
    env.import(&[file.to_str().unwrap(), "--encoding", "utf-16le"])
        .assert_code(0);
    env.assert_exactly_once(1, 1);
}

#[test]
fn a_jsonl_nul_or_repeated_key_refuses_the_row_naming_the_key() {
    let env = TestEnv::plain();
    let file = env.write(
        "export.jsonl",
        concat!(
            r#"{"email":"a@x.io","subject":"Hi"}"#,
            "\n",
            r#"{"email":"b@x.io","subject":"Hello\u0000there"}"#,
            "\n",
            r#"{"email":"c@x.io","subject":"One","subject":"Two"}"#,
            "\n",
            r#"{"customer":{"externalId":"D","tags":["x","y\u0000"]},"conversation":{"name":"Hi"}}"#,
            "\n",
            r#"{"customer":{"externalId":"E","externalId":"F"},"conversation":{"name":"Hi"}}"#,
            "\n",
            r#"{"email":"g@x.io","subject":"not a NUL: \\u0000"}"#,
            "\n",
        ),
    );
    let (run, errors) = validate(&env, &file, &[]);
    run.assert_code(1);
    assert_eq!(
        errors,
        owned(&[
            (2, "subject", "holds a NUL character"),
            (
                3,
                "subject",
                "is given twice in one object: which value is meant cannot be told"
            ),
            (4, "customer.tags[1]", "holds a NUL character"),
            (
                5,
                "customer.externalId",
                "is given twice in one object: which value is meant cannot be told"
            ),
        ])
    );
    env.import(&[file.to_str().unwrap()]).assert_code(1);
    env.assert_exactly_once(2, 2);
    let names = sorted(env.records().conversations.into_iter().map(|c| c.name));
    assert_eq!(names, ["Hi", "not a NUL: \\u0000"]);
}
