//! Checkpoints written by the release before issue 16 (d418cef), each killed with SIGKILL in
//! one intermediate state, resumed by this code: a row in `customer_sent`, a row in
//! `conversation_sent`, and a bulk job `queued`, `submitting` (its submit never answered)
//! and `lost` (its answer dropped). Each fixture holds the checkpoint, the records its
//! sandbox had made at the kill (answered or not) and the input. The resumed run must end
//! as that release ends it: every row done but the export's one bad row, each customer and
//! conversation once, what was made before the kill found by lookup and never sent again,
//! and a run after it with nothing to send. `scripts/make-earlier-release-checkpoints.sh`
//! makes the fixtures; `tests/fixtures/earlier-release/README.md` says how and why.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use kustomer_import::sandbox::{Records, Sandbox, SandboxConfig};

use crate::harness::*;

/// Every fixture, named after the state its checkpoint was killed in.
const STATES: [&str; 5] = [
    "customer_sent",
    "conversation_sent",
    "bulk_queued",
    "bulk_submitting",
    "bulk_lost",
];

const CHECKPOINT: &str = "checkpoint.sqlite";
/// Where `import --sandbox --checkpoint checkpoint.sqlite` keeps its sandbox's records.
const REHEARSAL_RECORDS: &str = "checkpoint.sqlite.sandbox.jsonl";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/earlier-release")
}

/// The fixture's directory. A missing file fails the test: a fixture is never skipped.
fn fixture(state: &str) -> PathBuf {
    let dir = fixtures().join(state);
    for file in [CHECKPOINT, "sandbox.jsonl", "export.csv", "README.md"] {
        assert!(
            dir.join(file).is_file(),
            "the fixture {} has no {file}: remake it with \
             scripts/make-earlier-release-checkpoints.sh {state}",
            dir.display()
        );
    }
    dir
}

/// What the fixture's checkpoint was written against, which says how it is resumed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MadeAgainst {
    /// A standalone sandbox with faults (`kustomer-import sandbox --records`), the only one
    /// that can take a create and never answer it. Resumed against the harness's sandbox
    /// started on the same records file: the same org under a new address, which is what
    /// `--retarget` says (it changes the checkpoint's target, nothing else).
    Standalone,
    /// A rehearsal (`import --sandbox`): resumed by a rehearsal, its records file where the
    /// built-in sandbox reads it. No retarget.
    Rehearsal,
}

/// A working directory holding a copy of the fixture, and a sandbox that holds the fixture's
/// records when it was made against one.
fn copy_of(state: &str, made: MadeAgainst) -> TestEnv {
    let from = fixture(state);
    let dir = tempfile::tempdir().unwrap();
    for file in [CHECKPOINT, "export.csv"] {
        std::fs::copy(from.join(file), dir.path().join(file)).unwrap();
    }
    let records = match made {
        MadeAgainst::Standalone => dir.path().join("sandbox.jsonl"),
        MadeAgainst::Rehearsal => dir.path().join(REHEARSAL_RECORDS),
    };
    std::fs::copy(from.join("sandbox.jsonl"), &records).unwrap();
    let config = SandboxConfig {
        token: Some(KEY.to_string()),
        records: (made == MadeAgainst::Standalone).then_some(records),
        ..SandboxConfig::default()
    };
    TestEnv::in_dir(dir, config)
}

/// The import that resumes the fixture: the same input, checkpoint and mode as the run that
/// was killed. The waits after a lost answer are shortened (`--reconcile-delay`,
/// `--bulk-lost-wait`): they say when a lookup goes, not what it decides.
fn resume_command(env: &TestEnv, made: MadeAgainst, mode: &str) -> Command {
    let mut args = vec![
        "export.csv",
        "--checkpoint",
        CHECKPOINT,
        "--mode",
        mode,
        "--json",
        "--reconcile-delay",
        "0.05",
        "--bulk-lost-wait",
        "0.5",
    ];
    args.push(match made {
        MadeAgainst::Standalone => "--retarget",
        MadeAgainst::Rehearsal => "--sandbox",
    });
    let mut command = env.import_command(&args);
    if made == MadeAgainst::Rehearsal {
        command
            .env_remove("KUSTOMER_API_KEY")
            .env_remove("KUSTOMER_BASE_URL");
    }
    command
}

/// The records a sandbox started on the working directory's file `name` holds.
fn records_in(env: &TestEnv, name: &str) -> Records {
    let config = SandboxConfig {
        records: Some(env.path(name)),
        ..SandboxConfig::default()
    };
    let sandbox = env.runtime.block_on(Sandbox::start(config, 0)).unwrap();
    let records = sandbox.records();
    env.runtime.block_on(sandbox.shutdown());
    records
}

/// The records the fixture's sandbox holds, before or after the resume.
fn records(env: &TestEnv, made: MadeAgainst) -> Records {
    match made {
        MadeAgainst::Standalone => env.records(),
        MadeAgainst::Rehearsal => records_in(env, REHEARSAL_RECORDS),
    }
}

/// `state count` of a checkpoint table's lines, by state.
fn by_state(env: &TestEnv, table: &str) -> Vec<(String, i64)> {
    env.checkpoint_at(CHECKPOINT)
        .prepare(&format!(
            "SELECT state, count(*) FROM {table} GROUP BY state ORDER BY state"
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn states(expected: &[(&str, i64)]) -> Vec<(String, i64)> {
    expected.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

/// The checkpoint's bulk jobs as (kind, state, items), in the order they were recorded.
fn bulk_jobs(env: &TestEnv) -> Vec<(String, String, i64)> {
    env.checkpoint_at(CHECKPOINT)
        .prepare("SELECT kind, state, items FROM bulk_jobs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn target(env: &TestEnv) -> String {
    env.checkpoint_at(CHECKPOINT)
        .query_row("SELECT value FROM meta WHERE key = 'target'", [], |r| {
            r.get(0)
        })
        .unwrap()
}

fn requests_to(env: &TestEnv, route: &str) -> BTreeMap<u16, u64> {
    env.stats().requests.get(route).cloned().unwrap_or_default()
}

/// Asserts the checkpoint the fixture holds: the state its README says it was killed in.
fn assert_fixture_holds(
    env: &TestEnv,
    made: MadeAgainst,
    rows: &[(&str, i64)],
    customers: &[(&str, i64)],
    jobs: &[(&str, &str, i64)],
    made_records: (usize, usize),
) {
    match made {
        MadeAgainst::Standalone => assert!(target(env).starts_with("http://127.0.0.1:")),
        MadeAgainst::Rehearsal => assert_eq!(target(env), "sandbox"),
    }
    let ended: Option<String> = env
        .checkpoint_at(CHECKPOINT)
        .query_row(
            "SELECT ended_at FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ended, None, "the fixture's last run was killed");
    assert_eq!(by_state(env, "rows"), states(rows), "the fixture's rows");
    assert_eq!(
        by_state(env, "customers"),
        states(customers),
        "the fixture's customers"
    );
    let jobs: Vec<_> = jobs
        .iter()
        .map(|(kind, state, items)| (kind.to_string(), state.to_string(), *items))
        .collect();
    assert_eq!(bulk_jobs(env), jobs, "the fixture's bulk jobs");
    let held = records(env, made);
    assert_eq!(
        (held.customers.len(), held.conversations.len()),
        made_records,
        "records the fixture's sandbox made before the kill"
    );
}

/// Resumes the fixture and returns the run and its summary.
fn resume(env: &TestEnv, made: MadeAgainst, mode: &str) -> (Run, serde_json::Value) {
    let run = run(resume_command(env, made, mode));
    let summary = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\nstderr:\n{}", run.stdout, run.stderr));
    (run, summary)
}

/// Asserts the summary's counts named here.
fn assert_counts(summary: &serde_json::Value, expected: &[(&str, u64)]) {
    for (key, value) in expected {
        assert_eq!(summary[key], *value, "{key}: {summary}");
    }
}

/// What every resumed fixture ends with: exit 1 for the one bad row (line `bad_line`),
/// every other row done, each record once with the checkpoint's ids, no job left to settle,
/// no create refused as a duplicate, and a run after it that sends nothing.
fn assert_resumed_exactly(
    env: &TestEnv,
    made: MadeAgainst,
    mode: &str,
    run: &Run,
    summary: &serde_json::Value,
    (rows, customers, conversations): (i64, usize, usize),
) {
    run.assert_code(1);
    assert_eq!(summary["stopped_because"], "finished", "{summary}");
    assert_eq!(
        by_state(env, "rows"),
        states(&[("done", rows - 1), ("failed", 1)])
    );
    let failed: (i64, String) = env
        .checkpoint_at(CHECKPOINT)
        .query_row(
            "SELECT line, field FROM rows WHERE state = 'failed'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(failed, (rows + 1, "emails[0].email".to_string()));
    let held = records(env, made);
    env.assert_exactly_once_in(&held, CHECKPOINT, customers, conversations);
    assert_customer_ids_are_the_sandbox_s(env, &held);
    let unsettled = env
        .checkpoint_at(CHECKPOINT)
        .query_row(
            "SELECT count(*) FROM bulk_jobs WHERE state IN ('submitting', 'queued')",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    assert_eq!(unsettled, 0, "a bulk job is left to settle");
    if made == MadeAgainst::Standalone {
        assert_eq!(target(env), env.sandbox().base_url());
        assert!(run.stderr.contains("--retarget"), "{}", run.stderr);
        for (route, by_status) in env.stats().requests {
            assert!(!by_status.contains_key(&409), "{route}: {by_status:?}");
        }
    }
    let (again, summary) = resume(env, made, mode);
    again.assert_code(1);
    assert_counts(
        &summary,
        &[("requests", 0), ("rows_skipped_done", (rows - 1) as u64)],
    );
}

/// Every customer the checkpoint knows has the id the sandbox gave it.
fn assert_customer_ids_are_the_sandbox_s(env: &TestEnv, records: &Records) {
    let sandbox: BTreeMap<String, String> = records
        .customers
        .iter()
        .map(|c| (c.external_id.clone().unwrap(), c.id.clone()))
        .collect();
    let checkpoint: BTreeMap<String, String> = env
        .checkpoint_at(CHECKPOINT)
        .prepare("SELECT external_id, customer_id FROM customers")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(checkpoint, sandbox, "the checkpoint's customers and ids");
}

#[test]
fn every_fixture_directory_is_resumed_by_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_dir())
        .map(|entry| entry.file_name().into_string().unwrap())
        .collect();
    found.sort();
    let mut known = STATES.map(String::from).to_vec();
    known.sort();
    assert_eq!(found, known);
    for state in STATES {
        fixture(state);
    }
}

#[test]
fn rows_killed_in_customer_sent_are_looked_up_and_only_the_missing_customer_is_sent() {
    let made = MadeAgainst::Standalone;
    let env = copy_of("customer_sent", made);
    // Four rows started (C0-C3); three customer creates were made and never answered, the
    // fourth was refused with a 429 and made nothing.
    assert_fixture_holds(
        &env,
        made,
        &[("customer_sent", 4), ("failed", 1), ("pending", 8)],
        &[("sent", 4)],
        &[],
        (3, 0),
    );
    let (run, summary) = resume(&env, made, "single");
    assert_counts(
        &summary,
        &[
            ("rows_read", 13),
            ("rows_done", 12),
            ("rows_failed_earlier", 1),
            ("rows_pending", 0),
            ("customers_reconciled", 3),
            ("customers_created", 3),
            ("customers_linked", 0),
            ("conversations_created", 12),
            ("conversations_linked", 0),
        ],
    );
    assert_eq!(
        by_state(&env, "customers"),
        states(&[("created", 3), ("reconciled", 3)])
    );
    // The one of C0-C3 never made, and C4, C5: three creates, none a second.
    assert_eq!(
        requests_to(&env, "POST /v1/customers"),
        BTreeMap::from([(201, 3)])
    );
    assert_eq!(
        requests_to(&env, "POST /v1/conversations"),
        BTreeMap::from([(201, 12)])
    );
    assert_resumed_exactly(&env, made, "single", &run, &summary, (13, 6, 12));
}

#[test]
fn rows_killed_in_conversation_sent_are_looked_up_and_only_the_missing_one_is_sent() {
    let made = MadeAgainst::Standalone;
    let env = copy_of("conversation_sent", made);
    // A first run (--limit 4) made C0-C3 and their first conversations; the second run's
    // four rows (C0-C3's second conversations) made three and met a 429 with the fourth.
    assert_fixture_holds(
        &env,
        made,
        &[
            ("conversation_sent", 4),
            ("done", 4),
            ("failed", 1),
            ("pending", 4),
        ],
        &[("created", 4)],
        &[],
        (4, 7),
    );
    let (run, summary) = resume(&env, made, "single");
    assert_counts(
        &summary,
        &[
            ("rows_read", 13),
            ("rows_skipped_done", 4),
            ("rows_done", 8),
            ("rows_failed_earlier", 1),
            ("rows_pending", 0),
            ("customers_created", 2),
            ("customers_reconciled", 0),
            ("conversations_reconciled", 3),
            ("conversations_created", 5),
            ("conversations_linked", 0),
        ],
    );
    assert_eq!(by_state(&env, "customers"), states(&[("created", 6)]));
    // The one conversation never made and C4's and C5's four: five creates, none a second.
    assert_eq!(
        requests_to(&env, "POST /v1/conversations"),
        BTreeMap::from([(201, 5)])
    );
    assert_eq!(
        requests_to(&env, "POST /v1/customers"),
        BTreeMap::from([(201, 2)])
    );
    assert_resumed_exactly(&env, made, "single", &run, &summary, (13, 6, 12));
}

/// Resumes a bulk fixture whose customers job (10 customers, the first rows of C0-C9) ran
/// in the sandbox before the kill, without its results reaching the checkpoint: its
/// customers are found by lookup, none is sent again, and the 20 conversations go.
fn assert_bulk_fixture_resumes(state: &str, made: MadeAgainst, killed_job: &str) {
    let env = copy_of(state, made);
    assert_fixture_holds(
        &env,
        made,
        &[("customer_sent", 10), ("failed", 1), ("pending", 10)],
        &[("sent", 10)],
        &[("customers", killed_job, 10)],
        (10, 0),
    );
    let (run, summary) = resume(&env, made, "bulk");
    assert_counts(
        &summary,
        &[
            ("rows_read", 21),
            ("rows_done", 20),
            ("rows_failed_earlier", 1),
            ("rows_pending", 0),
            ("customers_reconciled", 10),
            ("customers_created", 0),
            ("customers_linked", 0),
            ("conversations_created", 20),
            ("conversations_linked", 0),
        ],
    );
    assert_eq!(by_state(&env, "customers"), states(&[("reconciled", 10)]));
    // The killed job is settled as lost (its rows were looked up); the jobs of this run
    // carried conversations only, and all completed.
    let jobs = bulk_jobs(&env);
    assert_eq!(
        jobs[0],
        ("customers".to_string(), "lost".to_string(), 10),
        "{jobs:?}"
    );
    for (kind, state, _) in &jobs[1..] {
        assert_eq!(
            (kind.as_str(), state.as_str()),
            ("conversations", "complete")
        );
    }
    if made == MadeAgainst::Standalone {
        for route in ["POST /v1/customers", "POST /v1/customers/bulk"] {
            assert_eq!(requests_to(&env, route), BTreeMap::new(), "{route}");
        }
    }
    assert_resumed_exactly(&env, made, "bulk", &run, &summary, (21, 10, 20));
}

#[test]
fn a_rehearsal_killed_with_its_bulk_job_queued_resumes_exactly_once() {
    // The built-in sandbox keeps records, not jobs: the resumed rehearsal's poll of the job
    // answers 404 until the retries are spent, and the job is taken for lost.
    assert_bulk_fixture_resumes("bulk_queued", MadeAgainst::Rehearsal, "queued");
}

#[test]
fn a_run_killed_while_its_bulk_submit_had_no_answer_resumes_exactly_once() {
    assert_bulk_fixture_resumes("bulk_submitting", MadeAgainst::Standalone, "submitting");
}

#[test]
fn a_run_killed_while_its_lost_bulk_job_was_waited_out_resumes_exactly_once() {
    assert_bulk_fixture_resumes("bulk_lost", MadeAgainst::Standalone, "lost");
}
