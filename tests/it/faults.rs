//! The pipeline under faults: lost answers, 5xx, a server limit below --rpm, existing
//! customers.

use std::time::Duration;

use kustomer_import::sandbox::{FaultConfig, SandboxConfig};

use crate::harness::*;

#[test]
fn lost_answers_are_reconciled_not_sent_twice() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        faults: FaultConfig {
            fail_after_write_rate: 0.1,
            drop_after_write_rate: 0.1,
            fail_rate: 0.05,
            busy_rate: 0.05,
            seed: Some(11),
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    });
    let file = env.write("export.csv", &generated_csv(40, 3));
    env.import(&[file.to_str().unwrap(), "--max-retries", "20"])
        .assert_code(0);
    env.assert_exactly_once(40, 120);
    let faults = env.stats().faults;
    assert!(
        faults.fail_after_write + faults.drop_after_write > 0,
        "no fault was injected"
    );
}

#[test]
fn an_existing_customer_is_linked_not_duplicated() {
    let env = TestEnv::plain();
    let first = env.write(
        "first.csv",
        "email,name\nshared@example.com,Made Elsewhere\n",
    );
    env.import(&[first.to_str().unwrap(), "--checkpoint", "other.sqlite"])
        .assert_code(0);
    let file = env.write(
        "export.csv",
        "customer_external_id,email,conversation_id,subject\nX1,shared@example.com,T1,Hello\n",
    );
    let run = env.import(&[file.to_str().unwrap()]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("customers linked:       1"),
        "{}",
        run.stdout
    );
    let records = env.records();
    assert_eq!(records.customers.len(), 1);
    assert_eq!(records.conversations[0].customer, records.customers[0].id);
    let linked: String = env
        .checkpoint()
        .query_row("SELECT state FROM customers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(linked, "linked");
    // And with --on-existing-customer fail the row fails instead.
    let file = env.write(
        "second.csv",
        "customer_external_id,email,conversation_id,subject\nX2,shared@example.com,T2,Hello\n",
    );
    env.import(&[
        file.to_str().unwrap(),
        "--checkpoint",
        "third.sqlite",
        "--on-existing-customer",
        "fail",
    ])
    .assert_code(1);
}

#[test]
fn a_server_limit_below_rpm_costs_few_429s() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        rpm: Some(20),
        rate_window: Duration::from_secs(1),
        ..SandboxConfig::default()
    });
    let file = env.write("export.csv", &generated_csv(30, 2));
    env.import(&[file.to_str().unwrap(), "--rpm", "120", "--rate-window", "1"])
        .assert_code(0);
    let stats = env.stats();
    env.assert_exactly_once(30, 60);
    assert!(
        stats.rate_limited * 10 <= stats.requests_total,
        "{} 429s for {} requests",
        stats.rate_limited,
        stats.requests_total
    );
}
