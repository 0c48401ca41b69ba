//! `undo`: what an import made is deleted, conversations first, and nothing else (a
//! customer that was in Kustomer before the import and was only linked survives); a dry run
//! deletes nothing; an undo killed with SIGKILL or meeting lost answers ends exact when run
//! again; the rows go back to pending, and the same import command makes everything again,
//! once.

use std::collections::BTreeSet;

use std::time::Duration;

use kustomer_import::sandbox::{FaultConfig, SandboxConfig};
use serde_json::Value;

use crate::harness::*;

const RPM: &str = "60000";

/// Four customers, three conversations each; C0's customer is already in the sandbox,
/// made by another tool: the import links it (409) and must never delete it.
fn imported(env: &TestEnv) -> (String, String) {
    env.customer_made_elsewhere("C0", "c0@example.com");
    let before = env.records().customers[0].id.clone();
    let file = env.write("tickets.csv", &generated_csv(4, 3));
    let file = file.to_str().unwrap().to_string();
    env.import(&[&file, "--rpm", RPM]).assert_code(0);
    env.assert_exactly_once(4, 12);
    (file, before)
}

fn report(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn deletes(env: &TestEnv) -> u64 {
    env.requests_to("DELETE /v1/conversations/{lookup}")
        + env.requests_to("DELETE /v1/customers/{lookup}")
}

/// Every row of the checkpoint is pending, with no ids, and no history record is left.
fn assert_all_pending(env: &TestEnv, rows: i64) {
    assert_eq!(env.rows_in_state("pending"), rows);
    let db = env.checkpoint();
    let with_ids: i64 = db
        .query_row(
            "SELECT count(*) FROM rows WHERE customer_id IS NOT NULL
                OR conversation_id IS NOT NULL OR fingerprint IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(with_ids, 0);
    let customers: Vec<String> = db
        .prepare("SELECT state FROM customers")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        customers,
        ["linked"],
        "only the linked customer's line stays"
    );
}

#[test]
fn undo_deletes_exactly_what_the_import_made_and_the_same_import_makes_it_again_once() {
    let env = TestEnv::plain();
    let (file, before) = imported(&env);
    env.verify(&["--all", "--rpm", RPM]).assert_code(0);

    let dry = env.undo(&["--all", "--dry-run", "--json", "--rpm", RPM]);
    dry.assert_code(0);
    let listed = report(&dry);
    assert_eq!(
        listed["selected"]["conversations"]
            .as_array()
            .unwrap()
            .len(),
        12
    );
    assert_eq!(listed["selected"]["customers"].as_array().unwrap().len(), 3);
    assert_eq!(listed["selected"]["kept"][0]["id"], before.as_str());
    assert!(
        listed["selected"]["kept"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("linked"),
        "{listed}"
    );
    assert_eq!(listed["kept"]["customers"], 1, "{listed}");
    assert_eq!(listed["kept"]["linked_customers"], 1, "{listed}");
    assert_eq!(listed["kept"]["companies"], 0, "{listed}");
    assert_eq!(deletes(&env), 0, "a dry run deletes nothing");
    assert_eq!((env.stats().customers, env.stats().conversations), (4, 12));

    // Not a terminal, no --yes: refused before anything is sent.
    env.undo(&["--all", "--rpm", RPM]).assert_code(2);
    assert_eq!(deletes(&env), 0);

    let run = env.undo(&["--all", "--yes", "--json", "--rpm", RPM]);
    run.assert_code(0);
    let undone = report(&run);
    assert_report_head(&undone, 0);
    assert_eq!(undone["undone"]["conversations"]["deleted"], 12, "{undone}");
    assert_eq!(undone["undone"]["customers"]["deleted"], 3, "{undone}");
    assert_eq!(undone["undone"]["rows_pending_again"], 12, "{undone}");
    assert_eq!(
        env.customer_ids(),
        std::slice::from_ref(&before),
        "only the customer made elsewhere is left"
    );
    assert_eq!(env.stats().conversations, 0);
    assert_all_pending(&env, 12);
    let status = env.command(&["status"]);
    assert!(status.stdout.contains("undo started"), "{}", status.stdout);
    assert!(status.stdout.contains("(undone "), "{}", status.stdout);

    env.import(&[&file, "--rpm", RPM]).assert_code(0);
    env.assert_exactly_once(4, 12);
    assert_eq!(env.records().customers[0].id, before);
    let verified = env.verify(&["--all", "--json", "--rpm", RPM]);
    verified.assert_code(0);
    assert_report_head(&report(&verified), 0);
}

/// The fields that lead verify's and undo's `--json` reports.
fn assert_report_head(report: &Value, exit_code: i64) {
    assert_eq!(report["version"], 1, "{report}");
    assert_eq!(report["exit_code"], exit_code, "{report}");
    assert_eq!(report["checkpoint"], "kustomer-import.sqlite", "{report}");
    let target = report["target"].as_str().unwrap();
    assert!(target.contains("127.0.0.1"), "{report}");
}

#[test]
fn undo_of_one_run_keeps_what_other_runs_made_and_use() {
    let env = TestEnv::plain();
    let first = env.write("first.csv", &generated_csv(2, 1));
    env.import(&[first.to_str().unwrap(), "--rpm", RPM])
        .assert_code(0);
    // The second run adds a conversation to C1 (made by run 1) and a new customer C2.
    let second = env.write(
        "second.csv",
        "customer_external_id,name,email,conversation_id,subject,status\n\
         C1,Customer 1,c1@example.com,T1-9,Later,open\n\
         C2,Customer 2,c2@example.com,T2-0,New,open\n",
    );
    env.import(&[second.to_str().unwrap(), "--rpm", RPM])
        .assert_code(0);
    env.assert_exactly_once(3, 4);
    env.undo(&["--yes", "--rpm", RPM]).assert_code(2);
    let run = env.undo(&["--run", "2", "--yes", "--json", "--rpm", RPM]);
    run.assert_code(0);
    let undone = report(&run);
    assert_eq!(undone["undone"]["conversations"]["deleted"], 2, "{undone}");
    assert_eq!(undone["undone"]["customers"]["deleted"], 1, "{undone}");
    assert_eq!(
        undone["selected"]["kept"][0]["reason"],
        "made by run 1, not the run undone"
    );
    let conversations: BTreeSet<String> = env
        .records()
        .conversations
        .iter()
        .map(|c| c.external_id.clone().unwrap())
        .collect();
    assert_eq!(
        conversations,
        BTreeSet::from(["T0-0".into(), "T1-0".into()])
    );
    assert_eq!(env.stats().customers, 2);
    assert_eq!(env.rows_in_state("done"), 2);
    assert_eq!(env.rows_in_state("pending"), 2);
    env.import(&[second.to_str().unwrap(), "--rpm", RPM])
        .assert_code(0);
    env.assert_exactly_once(3, 4);
}

#[test]
fn undo_killed_midway_or_meeting_lost_answers_ends_exact_when_run_again() {
    let env = TestEnv::plain();
    let (file, before) = imported(&env);
    // Slow enough to be killed midway: 5 requests a second.
    let child = env.spawn_undo(&["--all", "--yes", "--rpm", "300"]);
    env.wait_for("some deletes", |stats| stats.conversations_deleted >= 3);
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = env.stats().conversations_deleted;
    assert!(gone < 12, "killed before the end ({gone} deleted)");
    // Half the deletes lose their answers after the record is gone.
    env.sandbox().set_faults(FaultConfig {
        drop_after_write_rate: 0.5,
        ..FaultConfig::default()
    });
    let run = env.undo(&["--all", "--yes", "--json", "--rpm", RPM, "--timeout", "5"]);
    run.assert_code(0);
    let undone = report(&run);
    let conversations = &undone["undone"]["conversations"];
    let counted = conversations["deleted"].as_u64().unwrap()
        + conversations["already_gone"].as_u64().unwrap();
    assert!(counted + gone >= 12, "{undone}");
    assert!(
        env.stats().faults.drop_after_write > 0,
        "no answer was lost"
    );
    assert_eq!(env.customer_ids(), [before]);
    assert_eq!(env.stats().conversations, 0);
    assert_eq!(env.stats().conversations_deleted, 12);
    assert_eq!(env.stats().customers_deleted, 3);
    assert_all_pending(&env, 12);
    let settled: i64 = env
        .checkpoint()
        .query_row(
            "SELECT count(*) FROM undo_deletes WHERE state = 'gone'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(settled, 15, "every delete's result is recorded");
    env.sandbox().set_faults(FaultConfig::default());
    env.import(&[&file, "--rpm", RPM]).assert_code(0);
    env.assert_exactly_once(4, 12);
}

/// Undo's deletes in the checkpoint in `state`, of `kind`.
fn undo_deletes_in(env: &TestEnv, kind: &str, state: &str) -> i64 {
    env.checkpoint()
        .query_row(
            "SELECT count(*) FROM undo_deletes WHERE kind = ?1 AND state = ?2",
            [kind, state],
            |r| r.get(0),
        )
        .unwrap()
}

/// An undo killed while its customer deletes are out (landed, no answer yet) leaves their
/// customers' lines holding ids the API no longer has: the import reads them back first,
/// makes the deleted ones anew and links nothing to them.
#[test]
fn an_import_after_an_undo_killed_midway_never_links_to_a_customer_it_deleted() {
    let env = TestEnv::plain();
    let (file, before) = imported(&env);
    let child = env.spawn_undo(&["--all", "--yes", "--rpm", "300", "--timeout", "600"]);
    env.wait_for("the conversations' deletes", |s| {
        s.conversations_deleted >= 12
    });
    // From now on a delete lands and its answer never comes: the kill finds it sent.
    env.sandbox().set_faults(FaultConfig {
        hang_after_write_rate: 1.0,
        ..FaultConfig::default()
    });
    env.wait_for("a customer's delete", |s| s.customers_deleted >= 1);
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    env.sandbox().set_faults(FaultConfig::default());
    let deleted = env.stats().customers_deleted;
    assert!(
        undo_deletes_in(&env, "customer", "sent") >= deleted as i64,
        "the kill found the landed customer deletes unrecorded"
    );
    assert_eq!(env.customer_ids().len() as u64, 4 - deleted);

    let import = env.import(&[&file, "--rpm", RPM]);
    import.assert_code(0);
    assert!(
        import.stderr.contains("an undo stopped before its end"),
        "{}",
        import.stderr
    );
    env.assert_exactly_once(4, 12);
    env.assert_no_conversation_without_its_customer();
    assert!(env.customer_ids().contains(&before));
    assert_eq!(undo_deletes_in(&env, "customer", "sent"), 0, "all settled");
    assert_eq!(env.rows_in_state("done"), 12);

    // What is left is exact: the next undo takes everything back, the next import makes it.
    env.undo(&["--all", "--yes", "--rpm", RPM]).assert_code(0);
    assert_eq!(env.customer_ids(), [before]);
    assert_eq!(env.stats().conversations, 0);
    assert_all_pending(&env, 12);
    env.import(&[&file, "--rpm", RPM]).assert_code(0);
    env.assert_exactly_once(4, 12);
    env.assert_no_conversation_without_its_customer();
}

#[test]
fn a_customer_holding_a_conversation_the_import_did_not_make_is_not_deleted_and_said_so() {
    let env = TestEnv::plain();
    let (_, before) = imported(&env);
    // Another tool adds a conversation to C1, a customer this import created.
    let other = env.write(
        "other.csv",
        "customer_external_id,name,email,conversation_id,subject,status\n\
         C1,Customer 1,c1@example.com,X-1,Not ours,open\n",
    );
    env.import(&[other.to_str().unwrap(), "--checkpoint", "other.sqlite"])
        .assert_code(0);
    let run = env.undo(&["--all", "--yes", "--json", "--rpm", RPM]);
    run.assert_code(1);
    let undone = report(&run);
    assert_eq!(undone["undone"]["conversations"]["deleted"], 12, "{undone}");
    assert_eq!(undone["undone"]["customers"]["deleted"], 2, "{undone}");
    assert_eq!(undone["undone"]["customers"]["failed"], 1, "{undone}");
    let reason = undone["undone"]["failures"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("409") && reason.contains("conversation"),
        "{reason}"
    );
    let left: BTreeSet<Option<String>> = env
        .records()
        .customers
        .iter()
        .map(|c| c.external_id.clone())
        .collect();
    assert_eq!(left, BTreeSet::from([Some("C0".into()), Some("C1".into())]));
    assert!(env.records().customers.iter().any(|c| c.id == before));
    assert_eq!(
        env.stats().conversations,
        1,
        "the other tool's conversation stays"
    );
    let failed: String = env
        .checkpoint()
        .query_row(
            "SELECT last_error FROM undo_deletes WHERE state = 'failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(failed.contains("409"), "{failed}");
    let status = env.command(&["status"]);
    assert!(!status.stdout.contains("(undone "), "{}", status.stdout);
}

/// Companies have no delete in the API: undo keeps them, and the re-import links its
/// customers to the same companies again with no company create.
#[test]
fn undo_keeps_companies_and_the_re_import_links_them_again_without_a_create() {
    let env = TestEnv::plain();
    let file = env.write(
        "tickets.csv",
        "customer_id,name,email,company_id,company,conversation_id,subject\n\
         C-0,Customer 0,c0@example.com,org-0,Company 0,T-0,Ticket 0\n\
         C-1,Customer 1,c1@example.com,,Company 1,T-1,Ticket 1\n\
         C-2,Customer 2,c2@example.com,org-0,Company 0,T-2,Ticket 2\n",
    );
    let file = file.to_str().unwrap().to_string();
    env.import(&[&file, "--rpm", RPM]).assert_code(0);
    let companies: BTreeSet<String> = env
        .records()
        .companies
        .iter()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(companies.len(), 2);
    let creates = env.requests_to("POST /v1/companies");
    let dry = env.undo(&["--all", "--dry-run", "--rpm", RPM]);
    dry.assert_code(0);
    for id in &companies {
        assert!(
            dry.stdout.contains(&format!("kept company {id} (")),
            "{}",
            dry.stdout
        );
    }
    assert!(
        dry.stdout
            .contains("kept 0 customers (0 linked) and 2 companies (undo never deletes a company"),
        "{}",
        dry.stdout
    );
    let run = env.undo(&["--all", "--yes", "--json", "--rpm", RPM]);
    run.assert_code(0);
    let undone = report(&run);
    assert_eq!(undone["kept"]["companies"], 2, "{undone}");
    let listed: BTreeSet<String> = undone["selected"]["kept_companies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|company| company["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, companies);
    assert_eq!((env.stats().customers, env.stats().conversations), (0, 0));
    let kept: BTreeSet<String> = env
        .records()
        .companies
        .iter()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(kept, companies, "undo deletes no company");
    env.import(&[&file, "--rpm", RPM]).assert_code(0);
    env.assert_exactly_once(3, 3);
    assert_eq!(
        env.requests_to("POST /v1/companies"),
        creates,
        "no company made again"
    );
    assert_eq!(env.records().companies.len(), 2);
    for customer in &env.records().customers {
        let company = customer.extra.get("company").and_then(|v| v.as_str());
        assert!(
            companies.contains(company.unwrap_or_default()),
            "{customer:?}"
        );
    }
}

/// The bulk delete's route, as the sandbox counts it.
const BULK_DELETE: &str = "DELETE /v1/customers/bulk";

/// Undo's bulk delete jobs in the checkpoint in `state`.
fn undo_jobs_in(env: &TestEnv, state: &str) -> i64 {
    env.checkpoint()
        .query_row(
            "SELECT count(*) FROM undo_jobs WHERE state = ?1",
            [state],
            |r| r.get(0),
        )
        .unwrap()
}

/// Everything an undo left is settled, exactly as the plain test's undo leaves it: only the
/// customer made elsewhere, no conversation, every row pending, every delete gone.
fn assert_undone_exactly(env: &TestEnv, before: &str) {
    assert_eq!(env.customer_ids(), [before]);
    assert_eq!(env.stats().conversations, 0);
    assert_eq!(env.stats().conversations_deleted, 12);
    assert_eq!(env.stats().customers_deleted, 3);
    assert_all_pending(env, 12);
    assert_eq!(undo_deletes_in(env, "conversation", "gone"), 12);
    assert_eq!(undo_deletes_in(env, "customer", "gone"), 3);
    assert_eq!(
        undo_jobs_in(env, "submitting") + undo_jobs_in(env, "queued"),
        0
    );
}

#[test]
fn bulk_undo_deletes_the_customers_in_one_job_and_reads_each_back() {
    let env = TestEnv::plain();
    let (file, before) = imported(&env);
    let run = env.undo(&["--all", "--yes", "--json", "--mode", "bulk", "--rpm", RPM]);
    run.assert_code(0);
    let undone = report(&run);
    assert_eq!(undone["undone"]["customers"]["deleted"], 3, "{undone}");
    assert_eq!(undone["undone"]["conversations"]["deleted"], 12, "{undone}");
    assert_eq!(
        env.requests_to(BULK_DELETE),
        1,
        "one job for three customers"
    );
    assert_eq!(env.requests_to("DELETE /v1/customers/{lookup}"), 0);
    assert_eq!(
        env.requests_to("DELETE /v1/conversations/{lookup}"),
        12,
        "conversations one by one"
    );
    assert_eq!(undo_jobs_in(&env, "complete"), 1);
    assert_undone_exactly(&env, &before);
    env.import(&[&file, "--rpm", RPM]).assert_code(0);
    env.assert_exactly_once(4, 12);
}

#[test]
fn bulk_undo_sends_at_most_a_hundred_ids_a_job() {
    let env = TestEnv::plain();
    let file = env.write("tickets.csv", &generated_csv(101, 1));
    env.import(&[file.to_str().unwrap(), "--rpm", RPM])
        .assert_code(0);
    env.undo(&["--all", "--yes", "--mode", "bulk", "--rpm", RPM])
        .assert_code(0);
    assert_eq!(env.requests_to(BULK_DELETE), 2);
    assert_eq!(undo_jobs_in(&env, "complete"), 2);
    let sizes: Vec<i64> = env
        .checkpoint()
        .prepare("SELECT ids FROM undo_jobs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sizes, [100, 1]);
    assert_eq!(
        (env.stats().customers, env.stats().customers_deleted),
        (0, 101)
    );
}

/// Killed while its job is queued: an import refuses to start (the job may still delete
/// customers it would link to), and the undo run again polls the job and ends exact.
#[test]
fn bulk_undo_killed_while_its_job_is_queued_ends_exact_when_run_again() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        bulk_delay: Duration::from_secs(3),
        ..SandboxConfig::default()
    });
    let (file, before) = imported(&env);
    let child = env.spawn_undo(&["--all", "--yes", "--mode", "bulk", "--rpm", RPM]);
    env.kill_once(
        "SELECT count(*) FROM undo_jobs WHERE state = 'queued'",
        child,
    );
    assert_eq!(env.requests_to(BULK_DELETE), 1);

    let import = env.import(&[&file, "--rpm", RPM, "--json"]);
    import.assert_code(4);
    assert!(
        import.stderr.contains("Finish the undo first"),
        "{}",
        import.stderr
    );
    assert!(
        import.stdout.contains("\"undo_unfinished\""),
        "{}",
        import.stdout
    );
    assert_eq!(
        env.requests_to("POST /v1/conversations"),
        12,
        "nothing sent"
    );

    let run = env.undo(&["--all", "--yes", "--json", "--mode", "bulk", "--rpm", RPM]);
    run.assert_code(0);
    assert_undone_exactly(&env, &before);
    assert_eq!(undo_jobs_in(&env, "complete"), 2, "{}", run.stdout);
    env.import(&[&file, "--rpm", RPM]).assert_code(0);
    env.assert_exactly_once(4, 12);
}

/// Lost answers and failing polls on the job: every customer is read back, and one still
/// there is deleted one by one; nothing is left, nothing but the import's goes.
#[test]
fn bulk_undo_meeting_lost_answers_and_failing_polls_ends_exact() {
    let env = TestEnv::plain();
    let (file, before) = imported(&env);
    env.sandbox().set_faults(FaultConfig {
        drop_after_write_rate: 0.6,
        fail_rate: 0.2,
        seed: Some(20),
        ..FaultConfig::default()
    });
    let run = env.undo(&[
        "--all",
        "--yes",
        "--json",
        "--mode",
        "bulk",
        "--rpm",
        RPM,
        "--timeout",
        "5",
    ]);
    run.assert_code(0);
    assert!(
        env.stats().faults.drop_after_write > 0,
        "no answer was lost"
    );
    assert!(env.requests_to(BULK_DELETE) >= 1);
    env.sandbox().set_faults(FaultConfig::default());
    assert_undone_exactly(&env, &before);
    env.import(&[&file, "--rpm", RPM]).assert_code(0);
    env.assert_exactly_once(4, 12);
}

/// An import with messages and notes nested in its conversations: undo leaves no message,
/// note or history record (the API has no delete for them: they go with their
/// conversation, whose delete clears them in the checkpoint in the same commit), and the
/// same import makes every conversation, message and note again, once.
#[test]
fn undo_of_an_import_with_history_and_the_same_import_again_make_each_item_once() {
    let env = TestEnv::plain();
    let file = env.write("threads.jsonl", &crate::history::nested(6, 4));
    let file = file.to_str().unwrap().to_string();
    env.import(&[&file, "--rpm", RPM]).assert_code(0);
    crate::history::assert_threads_exact(&env, 6, 4);
    assert_eq!((env.stats().messages, env.stats().notes), (24, 6));
    let records = |env: &TestEnv| -> i64 {
        env.checkpoint()
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(records(&env), 30);

    let run = env.undo(&["--all", "--yes", "--json", "--rpm", RPM]);
    run.assert_code(0);
    let undone = report(&run);
    assert_eq!(undone["undone"]["conversations"]["deleted"], 6, "{undone}");
    assert_eq!(undone["undone"]["customers"]["deleted"], 6, "{undone}");
    let stats = env.stats();
    assert_eq!(
        (
            stats.customers,
            stats.conversations,
            stats.messages,
            stats.notes
        ),
        (0, 0, 0, 0),
        "nothing of the import is left, no message or note either"
    );
    assert_eq!(
        records(&env),
        0,
        "no history record is left in the checkpoint"
    );
    assert_eq!(env.rows_in_state("pending"), 6);

    let again = env.import(&[&file, "--rpm", RPM]);
    again.assert_code(0);
    assert!(
        again.stdout.contains("messages created:       24"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("notes created:          6"),
        "{}",
        again.stdout
    );
    env.assert_exactly_once(6, 6);
    crate::history::assert_threads_exact(&env, 6, 4);
    assert_eq!((env.stats().messages, env.stats().notes), (24, 6));
    assert_eq!(records(&env), 30);
    env.verify(&["--all", "--rpm", RPM]).assert_code(0);
}
