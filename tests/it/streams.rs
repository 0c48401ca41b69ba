//! Inputs that can be read once only: `<(...)` (a pipe the shell passes as /dev/fd/N), a
//! FIFO another process writes, and a signal while such an input has no writer yet or an
//! idle one. Each must be opened once, and a signal must stop the run whatever it waits on.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A FIFO in the working directory.
fn mkfifo(env: &TestEnv, name: &str) -> PathBuf {
    let path = env.path(name);
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    path
}

/// Writes `content` into the FIFO from a thread (its open waits for the import's), then
/// holds the FIFO open, idle, until `release` is dropped.
fn write_fifo(path: PathBuf, content: String) -> mpsc::Sender<()> {
    let (release, held) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok(mut fifo) = std::fs::OpenOptions::new().write(true).open(&path) else {
            return;
        };
        // The import may close its end early: that is for the test to find, not a panic here.
        let _ = fifo.write_all(content.as_bytes());
        let _ = held.recv_timeout(Duration::from_secs(120));
    });
    release
}

/// The command line in the harness's environment, run by bash (for `<(...)`).
fn bash(env: &TestEnv, script: &str, args: &[&str]) -> Command {
    let mut command = Command::new("bash");
    command
        .current_dir(env.dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUSTOMER_API_KEY", KEY)
        .env("KUSTOMER_BASE_URL", env.sandbox().base_url())
        .arg("-c")
        .arg(script)
        .arg(binary())
        .args(args)
        .stdin(Stdio::null());
    command
}

/// Collects the child's stderr on a thread; `wait_for` returns once a line holds `text`.
struct Stderr {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Stderr {
    fn of(child: &mut Child) -> Stderr {
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Stderr {
            lines,
            seen: Vec::new(),
        }
    }

    /// Whether a line holding `text` came within `within`.
    fn wait_for(&mut self, text: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn all(mut self) -> String {
        self.seen.extend(self.lines.try_iter());
        self.seen.join("\n")
    }
}

/// A child killed when the test ends, whatever happens to the test.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's exit code, if it exits within `within` (else it is killed: a hang fails).
fn exit_within(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn process_substitution_is_read_once_and_every_row_lands() {
    let env = TestEnv::plain();
    let file = env.write("export.csv", &generated_csv(20, 2));
    let file = file.to_str().unwrap();
    let validate = run(bash(
        &env,
        r#"exec "$0" validate <(cat "$1") --format csv --json"#,
        &[file],
    ));
    validate.assert_code(0);
    assert!(
        validate.stdout.contains("\"rows\":40"),
        "{}",
        validate.stdout
    );
    run(bash(
        &env,
        r#"exec "$0" import <(cat "$1") --format csv --no-progress"#,
        &[file],
    ))
    .assert_code(0);
    env.assert_exactly_once(20, 40);
}

#[test]
fn a_fifo_is_opened_once_and_every_row_lands() {
    let env = TestEnv::plain();
    let fifo = mkfifo(&env, "export.csv");
    // More than a pipe holds (64 KiB), so the writer is still writing when rows are read.
    let release = write_fifo(fifo.clone(), generated_csv(500, 2));
    drop(release);
    env.import(&[fifo.to_str().unwrap()]).assert_code(0);
    env.assert_exactly_once(500, 1000);
}

#[test]
fn sigterm_while_a_fifo_waits_for_its_writer_exits_4_at_once() {
    let env = TestEnv::plain();
    let fifo = mkfifo(&env, "export.csv");
    let mut child = Running(env.spawn_import(&[fifo.to_str().unwrap()]));
    let mut stderr = Stderr::of(&mut child.0);
    // The run says it waits; a signal then must end it, though open() is still blocked.
    let waiting = stderr.wait_for("waiting for a writer", Duration::from_secs(30));
    terminate(&child.0);
    let code = exit_within(&mut child.0, Duration::from_secs(20));
    let stderr = stderr.all();
    assert!(waiting, "{stderr}");
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert_eq!(env.stats().requests_total, 0);
}

#[test]
fn sigterm_while_an_idle_writer_holds_the_fifo_open_exits_4_and_keeps_what_was_done() {
    let env = TestEnv::plain();
    let fifo = mkfifo(&env, "export.csv");
    // A hundred rows, then the writer goes quiet without closing: the reader waits on
    // read(). (Rows reach the planner in batches of 64: the first batch is sent.)
    let _release = write_fifo(fifo.clone(), generated_csv(100, 1));
    let args = [
        fifo.to_str().unwrap(),
        "--mode",
        "single",
        "--rpm",
        "100000",
    ];
    let mut child = Running(env.spawn_import(&args));
    let stderr = Stderr::of(&mut child.0);
    env.wait_for_conversations(64);
    terminate(&child.0);
    let code = exit_within(&mut child.0, Duration::from_secs(20));
    let stderr = stderr.all();
    assert_eq!(code, Some(4), "{stderr}");
    let landed = env.records().conversations.len();
    assert_eq!(env.rows_in_state("done"), landed as i64, "{stderr}");
    env.assert_exactly_once(landed, landed);
}
