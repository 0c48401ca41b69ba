//! The test harness: a temporary working directory, a sandbox started in this process on an
//! ephemeral port, and helpers to run the binary and read the checkpoint.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kustomer_import::sandbox::{Records, Sandbox, SandboxConfig, Stats};

pub const KEY: &str = "test-key-5f1c2e";

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_kustomer-import")
}

/// The project's `samples/` folder.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub runtime: tokio::runtime::Runtime,
    pub sandbox: Option<Sandbox>,
}

impl TestEnv {
    /// A working directory and a sandbox with this configuration.
    pub fn new(config: SandboxConfig) -> TestEnv {
        TestEnv::in_dir(tempfile::tempdir().unwrap(), config)
    }

    /// A sandbox with this configuration, working in `dir`: files the sandbox reads at its
    /// start (a records file) can be put there first.
    pub fn in_dir(dir: tempfile::TempDir, config: SandboxConfig) -> TestEnv {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sandbox = runtime.block_on(Sandbox::start(config, 0)).unwrap();
        TestEnv {
            dir,
            runtime,
            sandbox: Some(sandbox),
        }
    }

    /// A sandbox with a fixed token (the harness's KEY) and no limits or faults.
    pub fn plain() -> TestEnv {
        TestEnv::new(SandboxConfig {
            token: Some(KEY.to_string()),
            ..SandboxConfig::default()
        })
    }

    pub fn sandbox(&self) -> &Sandbox {
        self.sandbox.as_ref().unwrap()
    }

    pub fn stats(&self) -> Stats {
        self.sandbox().stats()
    }

    pub fn records(&self) -> Records {
        self.sandbox().records()
    }

    /// The ids of the customers the sandbox holds, in its order.
    pub fn customer_ids(&self) -> Vec<String> {
        self.records().customers.into_iter().map(|c| c.id).collect()
    }

    /// Asserts that every conversation the sandbox holds belongs to a customer it holds.
    pub fn assert_no_conversation_without_its_customer(&self) {
        let records = self.records();
        let customers: std::collections::BTreeSet<&str> =
            records.customers.iter().map(|c| c.id.as_str()).collect();
        for conversation in &records.conversations {
            assert!(
                customers.contains(conversation.customer.as_str()),
                "conversation {} points at customer {}, which does not exist",
                conversation.id,
                conversation.customer
            );
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// `kustomer-import <subcommand> <args>` in the working directory, against the sandbox
    /// with the harness's key, and nothing else from this process's environment.
    pub fn api_command(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUSTOMER_API_KEY", KEY)
            .env("KUSTOMER_BASE_URL", self.sandbox().base_url())
            .arg(subcommand)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// `kustomer-import import <args>` in the working directory, against the sandbox.
    pub fn import_command(&self, args: &[&str]) -> Command {
        let mut command = self.api_command("import", args);
        command.arg("--no-progress");
        command
    }

    /// Runs an import to its end (at most two minutes) and returns its output.
    pub fn import(&self, args: &[&str]) -> Run {
        run(self.import_command(args))
    }

    /// Runs an import that must end 0 having sent the sandbox no request (a re-run that
    /// finds everything recorded as sent); `why` says what it should have found.
    pub fn assert_import_sends_nothing(&self, args: &[&str], why: &str) -> Run {
        let before = self.stats().requests_total;
        let run = self.import(args);
        run.assert_code(0);
        assert_eq!(self.stats().requests_total, before, "{why}");
        run
    }

    /// Puts a customer into the sandbox through a separate checkpoint, as if another tool
    /// had made it before this import.
    pub fn customer_made_elsewhere(&self, external_id: &str, email: &str) {
        let file = self.write(
            "elsewhere.csv",
            &format!("external_id,email\n{external_id},{email}\n"),
        );
        self.import(&[file.to_str().unwrap(), "--checkpoint", "elsewhere.sqlite"])
            .assert_code(0);
    }

    /// `kustomer-import verify <args>` in the working directory, against the sandbox with
    /// the harness's key (as an import is run).
    pub fn verify(&self, args: &[&str]) -> Run {
        run(self.api_command("verify", args))
    }

    /// `kustomer-import undo <args>` in the working directory, against the sandbox with the
    /// harness's key (as an import is run), stdin not a terminal.
    pub fn undo(&self, args: &[&str]) -> Run {
        run(self.api_command("undo", args))
    }

    /// Starts `kustomer-import undo <args>` in the background, its output captured.
    pub fn spawn_undo(&self, args: &[&str]) -> std::process::Child {
        self.api_command("undo", args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs another command of the binary (status, export, ...) in the working directory.
    pub fn command(&self, args: &[&str]) -> Run {
        let mut command = Command::new(binary());
        command.current_dir(self.dir.path()).args(args);
        run(command)
    }

    /// Starts an import in the background, its output captured.
    pub fn spawn_import(&self, args: &[&str]) -> std::process::Child {
        self.import_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits (a minute at most) until the sandbox holds `count` conversations.
    pub fn wait_for_conversations(&self, count: u64) {
        self.wait_for(&format!("{count} conversations"), |stats| {
            stats.conversations >= count
        });
    }

    /// Waits (a minute at most) until the sandbox's stats say `done`.
    pub fn wait_for(&self, what: &str, done: impl Fn(&Stats) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&self.stats()) {
            assert!(Instant::now() < deadline, "waited a minute for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Opens the checkpoint read-only.
    pub fn checkpoint(&self) -> rusqlite::Connection {
        self.checkpoint_at("kustomer-import.sqlite")
    }

    /// Opens the checkpoint `name` of the working directory read-only.
    pub fn checkpoint_at(&self, name: &str) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.path(name),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    /// Rows of the checkpoint in one state.
    pub fn rows_in_state(&self, state: &str) -> i64 {
        self.rows_in_state_at("kustomer-import.sqlite", state)
    }

    /// Rows of the checkpoint `name` in one state.
    pub fn rows_in_state_at(&self, name: &str, state: &str) -> i64 {
        self.checkpoint_at(name)
            .query_row("SELECT count(*) FROM rows WHERE state = ?1", [state], |r| {
                r.get(0)
            })
            .unwrap()
    }

    /// Another sandbox with the harness's KEY, on a port of its own (another org, or the
    /// same org under another address).
    pub fn other_sandbox(&self) -> Sandbox {
        self.runtime
            .block_on(Sandbox::start(
                SandboxConfig {
                    token: Some(KEY.to_string()),
                    ..SandboxConfig::default()
                },
                0,
            ))
            .unwrap()
    }

    /// Answers the sandbox sent on `route` (a route template, `"POST /v1/customers"`).
    pub fn requests_to(&self, route: &str) -> u64 {
        self.stats()
            .requests
            .get(route)
            .map_or(0, |by_status| by_status.values().sum())
    }

    /// Waits (30 s at most) until the checkpoint records a bulk job matching `kind` (a SQL
    /// condition on `bulk_jobs.kind`, "1" for any) as queued, then kills the run with
    /// SIGKILL.
    pub fn kill_once_queued(&self, kind: &str, child: std::process::Child) {
        let sql = format!("SELECT count(*) FROM bulk_jobs WHERE state = 'queued' AND {kind}");
        self.kill_once(&sql, child);
    }

    /// Waits (30 s at most) until `sql` (a count on the checkpoint) is above 0, then kills
    /// the run with SIGKILL.
    pub fn kill_once(&self, sql: &str, mut child: std::process::Child) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let queued: i64 = rusqlite::Connection::open_with_flags(
                self.path("kustomer-import.sqlite"),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .and_then(|db| db.query_row(sql, [], |r| r.get(0)))
            .unwrap_or(0);
            if queued > 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never true: {sql}");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The errors file's lines after the header, as (file, line, field, reason).
    pub fn errors(&self) -> Vec<(String, u64, String, String)> {
        let mut reader =
            csv::Reader::from_path(self.path("kustomer-import.sqlite.errors.csv")).unwrap();
        reader
            .records()
            .map(|record| {
                let record = record.unwrap();
                (
                    record[0].to_string(),
                    record[1].parse().unwrap(),
                    record[2].to_string(),
                    record[3].to_string(),
                )
            })
            .collect()
    }

    /// Asserts that the sandbox holds each customer and each conversation externalId once,
    /// and that the checkpoint's ids are the sandbox's.
    pub fn assert_exactly_once(&self, customers: usize, conversations: usize) {
        self.assert_exactly_once_in(
            &self.records(),
            "kustomer-import.sqlite",
            customers,
            conversations,
        );
    }

    /// [`TestEnv::assert_exactly_once`] for these records (another sandbox's: a
    /// rehearsal's, read back from its file) and the checkpoint `name` of the working
    /// directory.
    pub fn assert_exactly_once_in(
        &self,
        records: &Records,
        name: &str,
        customers: usize,
        conversations: usize,
    ) {
        assert_eq!(
            records.customers.len(),
            customers,
            "customers in the sandbox"
        );
        assert_eq!(
            records.conversations.len(),
            conversations,
            "conversations in the sandbox"
        );
        let mut conversation_ids: Vec<_> = records
            .conversations
            .iter()
            .map(|c| {
                c.external_id
                    .clone()
                    .expect("every conversation has an externalId")
            })
            .collect();
        conversation_ids.sort();
        conversation_ids.dedup();
        assert_eq!(
            conversation_ids.len(),
            conversations,
            "a conversation externalId landed twice"
        );
        let sandbox_ids: std::collections::BTreeSet<String> =
            records.conversations.iter().map(|c| c.id.clone()).collect();
        let checkpoint = self.checkpoint_at(name);
        let mut statement = checkpoint
            .prepare("SELECT conversation_id FROM rows WHERE state = 'done' AND conversation_id IS NOT NULL")
            .unwrap();
        let checkpoint_ids: std::collections::BTreeSet<String> = statement
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            checkpoint_ids, sandbox_ids,
            "checkpoint ids differ from the sandbox's"
        );
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(sandbox) = self.sandbox.take() {
            self.runtime.block_on(sandbox.shutdown());
        }
    }
}

/// What a finished run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Sends SIGTERM to a child process.
pub fn terminate(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for a child started by [`TestEnv::spawn_import`] and returns what it printed.
pub fn finish(child: std::process::Child) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs a command to its end, killing it after two minutes so a hang fails the test.
pub fn run(mut command: Command) -> Run {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    finish_within(command.spawn().unwrap(), Duration::from_secs(120))
}

/// Waits for a child started with its output piped and returns what it printed, killing it
/// after `most` so a hang fails the test.
pub fn finish_within(mut child: std::process::Child, most: Duration) -> Run {
    let deadline = Instant::now() + most;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command did not finish within {} s", most.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    finish(child)
}

/// A CSV export of `customers` customers with `per_customer` conversations each.
pub fn generated_csv(customers: usize, per_customer: usize) -> String {
    let mut text = String::from("customer_external_id,name,email,conversation_id,subject,status\n");
    for customer in 0..customers {
        for conversation in 0..per_customer {
            text.push_str(&format!(
                "C{customer},Customer {customer},c{customer}@example.com,T{customer}-{conversation},Subject {conversation},open\n"
            ));
        }
    }
    text
}

/// Runs the import again over rows all done whose tags the org lacks (the Zendesk
/// sample's, in a sandbox with no tags): the one request it sends is a listing of the
/// org's tags, to learn whether they exist now.
pub fn assert_second_run_only_lists_the_orgs_tags(env: &TestEnv, args: &[&str]) {
    let (before, listings) = (env.stats().requests_total, env.requests_to("GET /v1/tags"));
    env.import(args).assert_code(0);
    assert_eq!(
        (
            env.stats().requests_total - before,
            env.requests_to("GET /v1/tags") - listings
        ),
        (1, 1),
        "a second run sends only a listing of the org's tags"
    );
}
