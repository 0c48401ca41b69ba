//! A checkpoint belongs to one API, and a rehearsal (`--sandbox`) never touches a real
//! checkpoint: the rehearsal-to-real story of issue 14, and a rehearsal that resumes after
//! SIGTERM or SIGKILL as a real import does.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kustomer_import::sandbox::{Records, Sandbox, SandboxConfig};

use crate::harness::{Run, TestEnv, finish, generated_csv, run, sample, terminate};

const REHEARSAL: &str = "kustomer-import.sandbox.sqlite";
const REHEARSAL_RECORDS: &str = "kustomer-import.sandbox.sqlite.sandbox.jsonl";

/// `http://127.0.0.1:PORT` as a checkpoint records it: the port is always explicit.
fn target_of(sandbox: &Sandbox) -> String {
    sandbox.base_url()
}

#[test]
fn a_rehearsal_then_the_real_run_with_the_default_checkpoint_sends_every_row() {
    // The harness's sandbox stands in for the real org.
    let env = TestEnv::plain();
    let sample = sample("tickets.csv");
    let sample = sample.to_str().unwrap();
    let rehearsal = env.import(&[sample, "--sandbox"]);
    rehearsal.assert_code(1);
    assert!(
        rehearsal.stdout.contains("nothing reached Kustomer"),
        "{}",
        rehearsal.stdout
    );
    assert_eq!(env.stats().requests_total, 0);
    assert_eq!(env.rows_in_state_at(REHEARSAL, "done"), 51);
    let again = env.import(&[sample, "--sandbox", "--json"]);
    again.assert_code(1);
    let again: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again["rehearsal"], true);
    assert_eq!(again["requests"], 0, "a second rehearsal sends nothing");
    assert_eq!(again["rows_skipped_done"], 51);

    let real = env.import(&[sample]);
    real.assert_code(1);
    assert!(
        real.stdout.contains("already done:         0"),
        "{}",
        real.stdout
    );
    assert!(!real.stdout.contains("nothing reached Kustomer"));
    assert_eq!(env.rows_in_state("done"), 51);
    let stats = env.stats();
    assert_eq!(
        (stats.customers, stats.conversations),
        (21, 50),
        "every row reached the real org"
    );
}

#[test]
fn a_checkpoint_pointed_at_another_base_url_exits_2_with_zero_requests_until_retarget() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(3, 2));
    let file = file.to_str().unwrap();
    env.import(&[file]).assert_code(0);

    let other = env.other_sandbox();
    let against_other = |args: &[&str]| {
        let mut command = env.import_command(args);
        command.env("KUSTOMER_BASE_URL", other.base_url());
        run(command)
    };
    let refused = against_other(&[file, "--json"]);
    refused.assert_code(2);
    assert_eq!(other.stats().requests_total, 0, "nothing was sent");
    for words in [
        target_of(env.sandbox()),
        target_of(&other),
        "--checkpoint".to_string(),
        "--retarget".to_string(),
    ] {
        assert!(
            refused.stderr.contains(&words),
            "{words}: {}",
            refused.stderr
        );
    }
    let summary: serde_json::Value = serde_json::from_str(&refused.stdout).unwrap();
    assert_eq!(summary["stopped_because"], "target");
    assert_eq!(summary["rehearsal"], false);
    // A rehearsal pointed at the real checkpoint is refused the same way.
    env.import(&[file, "--sandbox", "--checkpoint", "kustomer-import.sqlite"])
        .assert_code(2);
    assert_eq!(env.rows_in_state("done"), 6, "the checkpoint is untouched");

    // The same org under a new address: --retarget takes the done rows as made there, and
    // only the export's new rows are sent.
    env.write("export.csv", &generated_csv(4, 2));
    let moved = against_other(&[file, "--retarget"]);
    moved.assert_code(0);
    assert!(moved.stderr.contains("--retarget"), "{}", moved.stderr);
    let stats = other.stats();
    assert_eq!((stats.customers, stats.conversations), (1, 2));
    against_other(&[file]).assert_code(0);

    let status = env.command(&["status", "--json"]);
    status.assert_code(0);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["target"], target_of(&other));
    let runs: Vec<&str> = status["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["target"].as_str().unwrap_or("none"))
        .collect();
    let (first, second) = (target_of(env.sandbox()), target_of(&other));
    assert_eq!(
        runs,
        [&second, &second, &first],
        "each run keeps its own target; refused runs are not runs"
    );
    let table = env.command(&["status"]);
    assert!(
        table.stdout.contains(&format!("target: {second}")),
        "{}",
        table.stdout
    );
    env.runtime.block_on(other.shutdown());
}

/// Runs a command line as a user would paste it, in the working directory, with nothing
/// from the test's environment but PATH.
fn shell(env: &TestEnv, line: &str) -> Run {
    let mut command = Command::new("sh");
    command
        .current_dir(env.dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["-c", line]);
    run(command)
}

/// A rehearsal of 120 rows (60 customers, 2 conversations each) paced at 60 requests a
/// second, so that it can be stopped halfway.
fn rehearsal_command(env: &TestEnv, file: &str) -> Command {
    let mut command = env.import_command(&[
        file,
        "--sandbox",
        "--mode",
        "single",
        "--rpm",
        "60",
        "--rate-window",
        "1",
    ]);
    command
        .env_remove("KUSTOMER_API_KEY")
        .env_remove("KUSTOMER_BASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits (a minute at most) until the rehearsal's sandbox has kept `lines` records.
fn wait_for_records(env: &TestEnv, lines: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let kept = std::fs::read_to_string(env.path(REHEARSAL_RECORDS))
            .map(|text| text.lines().count())
            .unwrap_or(0);
        if kept >= lines {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited a minute for {lines} records"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The records the rehearsal's sandbox kept, read back by a sandbox started on its file.
fn kept_records(env: &TestEnv) -> Records {
    let config = SandboxConfig {
        records: Some(env.path(REHEARSAL_RECORDS)),
        ..SandboxConfig::default()
    };
    let sandbox = env.runtime.block_on(Sandbox::start(config, 0)).unwrap();
    let records = sandbox.records();
    env.runtime.block_on(sandbox.shutdown());
    records
}

/// Every customer and conversation of the 120-row rehearsal once, every row done, none
/// failed.
fn assert_rehearsal_landed_once(env: &TestEnv) {
    assert_eq!(env.rows_in_state_at(REHEARSAL, "done"), 120);
    assert_eq!(env.rows_in_state_at(REHEARSAL, "failed"), 0);
    let records = kept_records(env);
    let mut customers: Vec<_> = records.customers.iter().map(|c| &c.external_id).collect();
    customers.sort();
    customers.dedup();
    assert_eq!(
        (customers.len(), records.customers.len()),
        (60, 60),
        "customers once"
    );
    let mut conversations: Vec<_> = records
        .conversations
        .iter()
        .map(|c| &c.external_id)
        .collect();
    conversations.sort();
    conversations.dedup();
    assert_eq!(
        (conversations.len(), records.conversations.len()),
        (120, 120),
        "conversations once"
    );
}

#[test]
fn a_rehearsal_stopped_by_sigterm_resumes_with_the_printed_command_exactly_once() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(60, 2));
    let child = rehearsal_command(&env, file.to_str().unwrap())
        .spawn()
        .unwrap();
    wait_for_records(&env, 40);
    terminate(&child);
    let stopped = finish(child);
    stopped.assert_code(4);
    let resume = stopped
        .stderr
        .lines()
        .find_map(|line| line.split_once("To resume, run the same command again: "))
        .map(|(_, command)| command.to_string())
        .unwrap_or_else(|| panic!("no resume command in:\n{}", stopped.stderr));

    let resumed = shell(&env, &resume);
    resumed.assert_code(0);
    assert!(
        resumed.stdout.contains("failed:               0"),
        "{}",
        resumed.stdout
    );
    assert_rehearsal_landed_once(&env);
}

#[test]
fn a_rehearsal_killed_with_sigkill_resumes_exactly_once_with_no_failed_row() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(60, 2));
    let file = file.to_str().unwrap();
    let mut child = rehearsal_command(&env, file).spawn().unwrap();
    wait_for_records(&env, 40);
    child.kill().unwrap();
    let _ = child.wait();

    let resumed = run(rehearsal_command(&env, file));
    resumed.assert_code(0);
    assert_rehearsal_landed_once(&env);
}

/// A `kustomer-import sandbox` process, killed if the test fails before it stops it.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the sandbox server's stdout up to the command it prints for an import.
fn printed_until_the_command(stdout: &mut impl std::io::BufRead) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "{lines:?}");
        let done = line.contains("KUSTOMER_BASE_URL=");
        lines.push(line.trim().to_string());
        if done {
            return lines;
        }
    }
}

#[test]
fn the_sandbox_server_prints_the_import_command_and_keeps_its_records_in_a_file() {
    let env = TestEnv::plain();
    env.write("export.csv", &generated_csv(3, 2));
    let start = || {
        Server(
            Command::new(crate::harness::binary())
                .current_dir(env.dir.path())
                .args(["sandbox", "--records", "sandbox.jsonl"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut server = start();
    let mut stdout = std::io::BufReader::new(server.0.stdout.take().unwrap());
    let printed = printed_until_the_command(&mut stdout);
    let command = printed.last().unwrap();
    assert!(command.contains("--checkpoint"), "{printed:?}");
    let command = command
        .replace(
            "kustomer-import import",
            &format!("{} import", crate::harness::binary()),
        )
        .replace(" FILE ", " export.csv ");
    shell(&env, &format!("{command} --no-progress")).assert_code(0);
    terminate(&server.0);
    server.0.wait().unwrap();

    let mut server = start();
    let mut stdout = std::io::BufReader::new(server.0.stdout.take().unwrap());
    let printed = printed_until_the_command(&mut stdout);
    assert!(
        printed
            .iter()
            .any(|line| line.contains("holding 3 customers and 6 conversations")),
        "{printed:?}"
    );
    terminate(&server.0);
    server.0.wait().unwrap();
}
