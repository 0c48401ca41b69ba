//! A nightly run over an export of the user's own system (issue 18): customers known by a
//! name only (an anonymous visitor, a walk-in) are created once each under an externalId
//! derived from their row, by which a lost answer is looked up.

use kustomer_import::sandbox::{FaultConfig, SandboxConfig};

use crate::harness::*;

const HEADER: &str =
    "customer_external_id,customer_name,email,phone,conversation_id,subject,channel,status\n";

/// `visitors` rows of customers with a name and nothing else (two of each name), each with a
/// ticket of its own, and one customer with an email.
fn walk_ins(visitors: usize) -> String {
    let mut text = HEADER.to_string();
    for row in 0..visitors {
        text.push_str(&format!(
            ",Visitor {},,,W-{row},Asked at the desk,chat,open\n",
            row / 2
        ));
    }
    text.push_str("C-1,Known One,known@example.com,,K-1,By email,email,open\n");
    text
}

#[test]
fn customers_known_by_a_name_only_are_each_created_once_under_a_derived_id() {
    let env = TestEnv::plain();
    let file = env.write("walk-ins.csv", &walk_ins(4));
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    // Two rows with the same name are two people: nothing says they are one.
    env.assert_exactly_once(5, 5);
    let records = env.records();
    let derived: Vec<&str> = records
        .customers
        .iter()
        .filter_map(|customer| customer.external_id.as_deref())
        .filter(|id| id.starts_with("kimp-cust-"))
        .collect();
    assert_eq!(derived.len(), 4, "{derived:?}");
    assert!(derived.iter().all(|id| id.len() == "kimp-cust-".len() + 24));

    let before = env.stats().requests_total;
    env.import(&[file.to_str().unwrap()]).assert_code(0);
    assert_eq!(
        env.stats().requests_total,
        before,
        "tomorrow's run derives the same ids and sends nothing"
    );
}

#[test]
fn a_lost_answer_on_a_name_only_customer_is_looked_up_by_its_derived_id() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        faults: FaultConfig {
            drop_after_write_rate: 0.3,
            fail_after_write_rate: 0.2,
            seed: Some(18),
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    });
    let file = env.write("walk-ins.csv", &walk_ins(30));
    env.import(&[
        file.to_str().unwrap(),
        "--mode",
        "single",
        "--max-retries",
        "30",
        "--reconcile-delay",
        "0.05",
    ])
    .assert_code(0);
    env.assert_exactly_once(31, 31);
    let faults = env.stats().faults;
    assert!(
        faults.drop_after_write + faults.fail_after_write > 0,
        "no answer was lost"
    );
    let reconciled: i64 = env
        .checkpoint()
        .query_row(
            "SELECT count(*) FROM customers WHERE state = 'reconciled'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(reconciled > 0, "some customer was found by its derived id");
}

#[test]
fn without_derived_customer_ids_a_name_only_customer_is_refused_as_before() {
    let env = TestEnv::plain();
    let file = env.write("walk-ins.csv", &walk_ins(2));
    env.import(&[file.to_str().unwrap(), "--no-derived-customer-ids"])
        .assert_code(1);
    env.assert_exactly_once(1, 1);
    let mut errors = env.errors();
    errors.sort_by_key(|error| error.1);
    let lines: Vec<u64> = errors.iter().map(|error| error.1).collect();
    assert_eq!(lines, [2, 3]);
    assert_eq!(errors[0].2, "customer");
    assert!(
        errors[0]
            .3
            .contains("no externalId, email or phone (--no-derived-customer-ids is set)"),
        "{errors:?}"
    );
    // validate reads the rows as import does.
    let validate = env.command(&[
        "validate",
        file.to_str().unwrap(),
        "--no-derived-customer-ids",
    ]);
    validate.assert_code(1);
    env.command(&["validate", file.to_str().unwrap()])
        .assert_code(0);
}

fn unknown_row_of(env: &TestEnv, file: &str) -> String {
    env.checkpoint()
        .query_row(
            "SELECT row_key FROM rows WHERE state = 'failed' AND outcome_unknown = 1
             AND source_file LIKE ?1",
            [format!("%{file}")],
            |r| r.get(0),
        )
        .unwrap()
}

fn conversations_named(env: &TestEnv, name: &str) -> Vec<String> {
    env.records()
        .conversations
        .iter()
        .filter(|c| c.name.as_deref() == Some(name))
        .map(|c| c.id.clone())
        .collect()
}

#[test]
fn resolve_settles_a_row_whose_outcome_only_a_person_can_know() {
    let env = TestEnv::plain();
    let day1 = env.write(
        "day1.csv",
        &format!("{HEADER}C-1,One,one@example.com,,T-1,First,email,open\nC-2,Two,two@example.com,,T-2,First,email,open\n"),
    );
    env.import(&[day1.to_str().unwrap()]).assert_code(0);
    // Without conversation ids, and without derived ones, a create whose answer is lost
    // cannot be looked up: one never made (a 500 before the write), one made (the
    // connection dropped after it).
    let lost = env.write(
        "lost.csv",
        &format!("{HEADER}C-1,One,one@example.com,,,Lost one,email,open\n"),
    );
    let made = env.write(
        "made.csv",
        &format!("{HEADER}C-2,Two,two@example.com,,,Made one,email,open\n"),
    );
    let no_ids = "--no-derived-conversation-ids";
    for (file, faults) in [
        (
            &lost,
            FaultConfig {
                fail_rate: 1.0,
                ..FaultConfig::default()
            },
        ),
        (
            &made,
            FaultConfig {
                drop_after_write_rate: 1.0,
                ..FaultConfig::default()
            },
        ),
    ] {
        env.sandbox().set_faults(faults);
        env.import(&[file.to_str().unwrap(), no_ids]).assert_code(1);
        // Never sent again on its own: the next run still exits 1.
        env.import(&[file.to_str().unwrap(), no_ids]).assert_code(1);
    }
    env.sandbox().set_faults(FaultConfig::default());
    assert!(conversations_named(&env, "Lost one").is_empty());
    let made_id = conversations_named(&env, "Made one");
    assert_eq!(made_id.len(), 1);

    let lost_key = unknown_row_of(&env, "lost.csv");
    let made_key = unknown_row_of(&env, "made.csv");
    let absent = env.command(&["resolve", "--row-key", &lost_key, "--absent"]);
    absent.assert_code(0);
    assert!(
        absent.stdout.contains("line 2) goes back"),
        "{}",
        absent.stdout
    );
    let found = env.command(&[
        "resolve",
        "--row-key",
        &made_key,
        "--conversation-id",
        &made_id[0],
    ]);
    found.assert_code(0);
    assert!(
        found
            .stdout
            .contains(&format!("is done, with conversation {}", made_id[0]))
    );

    // The row found is done: nothing is sent. The row absent is sent, once.
    let before = env.stats().requests_total;
    env.import(&[made.to_str().unwrap(), no_ids]).assert_code(0);
    assert_eq!(env.stats().requests_total, before);
    env.import(&[lost.to_str().unwrap(), no_ids]).assert_code(0);
    assert_eq!(conversations_named(&env, "Lost one").len(), 1);
    assert_eq!(conversations_named(&env, "Made one").len(), 1);

    // Only a row whose outcome is unknown can be resolved.
    let again = env.command(&["resolve", "--row-key", &made_key, "--absent"]);
    again.assert_code(2);
    assert!(
        again
            .stderr
            .contains("is done, not a row whose outcome is unknown"),
        "{}",
        again.stderr
    );
    env.command(&["resolve", "--row-key", "row:nothing", "--absent"])
        .assert_code(2);
}
