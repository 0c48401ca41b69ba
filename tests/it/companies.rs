//! Companies (issue 19): each company a customer names lands once in the sandbox, under
//! lost answers and kill -9, single and bulk; its customers carry its id, and keep it
//! through a sync's update; a bad company name fails its row, named by file and line.

use std::collections::HashMap;
use std::time::Duration;

use kustomer_import::sandbox::{FaultConfig, SandboxConfig};

use crate::harness::*;

const RECOVERY: &[&str] = &[
    "--reconcile-delay",
    "0.05",
    "--bulk-lost-wait",
    "1",
    "--timeout",
    "1",
    "--max-retries",
    "30",
    "--rpm",
    "100000",
];

/// `customers` customers, one conversation each, of `companies` companies in turn: even
/// companies named by externalId and name, odd ones by name only.
fn export_with_companies(customers: usize, companies: usize) -> String {
    let mut text =
        String::from("customer_id,name,email,company_id,company,conversation_id,subject\n");
    for i in 0..customers {
        let c = i % companies;
        let company_id = if c.is_multiple_of(2) {
            format!("org-{c}")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "C-{i},Customer {i},c{i}@example.com,{company_id},Company {c},T-{i},Ticket {i}\n"
        ));
    }
    text
}

fn lossy(seed: u64) -> SandboxConfig {
    SandboxConfig {
        token: Some(KEY.to_string()),
        faults: FaultConfig {
            fail_after_write_rate: 0.3,
            drop_after_write_rate: 0.2,
            fail_rate: 0.05,
            seed: Some(seed),
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    }
}

/// Every company once, by name, and each customer of company `c` carries its id.
fn assert_companies_once(env: &TestEnv, customers: usize, companies: usize) {
    let records = env.records();
    let mut by_name: HashMap<&str, Vec<&str>> = HashMap::new();
    for company in &records.companies {
        by_name.entry(&company.name).or_default().push(&company.id);
    }
    assert_eq!(
        records.companies.len(),
        companies,
        "{:?}",
        records.companies
    );
    for c in 0..companies {
        let ids = &by_name[format!("Company {c}").as_str()];
        assert_eq!(ids.len(), 1, "Company {c} made {} times", ids.len());
    }
    assert_eq!(records.customers.len(), customers);
    for customer in &records.customers {
        let i: usize = customer.external_id.as_deref().unwrap()[2..]
            .parse()
            .unwrap();
        let wanted = by_name[format!("Company {}", i % companies).as_str()][0];
        assert_eq!(
            customer.extra.get("company").and_then(|v| v.as_str()),
            Some(wanted),
            "customer C-{i}"
        );
    }
    let checkpoint = env.checkpoint();
    let known: i64 = checkpoint
        .query_row(
            "SELECT count(*) FROM companies WHERE company_id IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        known, companies as i64,
        "the checkpoint knows every company"
    );
}

fn lost_answers_make_each_company_once(mode: &str) {
    let env = TestEnv::new(lossy(19));
    let file = env.write("export.csv", &export_with_companies(60, 12));
    let mut args = vec![file.to_str().unwrap(), "--mode", mode];
    args.extend_from_slice(RECOVERY);
    env.import(&args).assert_code(0);
    assert_companies_once(&env, 60, 12);
    env.assert_exactly_once(60, 60);
    let faults = env.stats().faults;
    assert!(
        faults.fail_after_write + faults.drop_after_write > 0,
        "no answer was lost"
    );
}

#[test]
fn under_lost_answers_each_company_lands_once_single() {
    lost_answers_make_each_company_once("single");
}

#[test]
fn under_lost_answers_each_company_lands_once_bulk() {
    lost_answers_make_each_company_once("bulk");
}

#[test]
fn a_company_whose_create_answer_was_lost_is_reconciled_not_made_again() {
    // Every create's answer is lost: the company's lookup finds it before any re-send.
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        faults: FaultConfig {
            fail_after_write_rate: 1.0,
            seed: Some(3),
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    });
    let file = env.write("export.csv", &export_with_companies(2, 1));
    let mut args = vec![file.to_str().unwrap(), "--mode", "single", "--json"];
    args.extend_from_slice(RECOVERY);
    let run = env.import(&args);
    run.assert_code(0);
    assert_companies_once(&env, 2, 1);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["companies_reconciled"], 1, "{summary}");
    assert_eq!(summary["companies_created"], 0, "{summary}");
    assert_eq!(env.requests_to("POST /v1/companies"), 1);
    let state: String = env
        .checkpoint()
        .query_row("SELECT state FROM companies", [], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "reconciled");
    // status says the same from the checkpoint.
    let status = env.command(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["companies"]["reconciled"], 1, "{status}");
    let status = env.command(&["status"]);
    assert!(
        status
            .stdout
            .contains("companies: 0 created, 0 linked (already in Kustomer), 1 reconciled"),
        "{}",
        status.stdout
    );
}

#[test]
fn a_company_already_in_kustomer_is_linked_not_created() {
    let env = TestEnv::plain();
    let first = env.write(
        "first.csv",
        "customer_id,email,company_id,company\nX,x@example.com,org-0,Company 0\n",
    );
    env.import(&[first.to_str().unwrap(), "--checkpoint", "other.sqlite"])
        .assert_code(0);
    let file = env.write("export.csv", &export_with_companies(3, 1));
    let run = env.import(&[file.to_str().unwrap(), "--json", "--rpm", "100000"]);
    run.assert_code(0);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["companies_linked"], 1, "{summary}");
    assert_eq!(env.records().companies.len(), 1);
    assert_eq!(
        env.requests_to("POST /v1/companies"),
        1,
        "only the first run's"
    );
}

#[test]
fn in_bulk_mode_companies_cost_a_lookup_each_and_are_made_in_bulk_jobs() {
    let env = TestEnv::plain();
    // Company 0 (org-0) is in Kustomer already, made by another import.
    let first = env.write("first.csv", &export_with_companies(1, 1));
    env.import(&[first.to_str().unwrap(), "--checkpoint", "other.sqlite"])
        .assert_code(0);
    let before = env.requests_to("POST /v1/companies");
    let file = env.write("export.csv", &export_with_companies(300, 150));
    let args = [file.to_str().unwrap(), "--mode", "bulk", "--rpm", "100000"];
    let run = env.import(&[&args[..], &["--json"]].concat());
    run.assert_code(0);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["companies_created"], 149, "{summary}");
    assert_eq!(summary["companies_linked"], 1, "{summary}");
    assert_companies_once(&env, 300, 150);
    // One lookup per company, no single create: the 149 absent ones went in jobs of at
    // most 100.
    assert_eq!(env.requests_to("GET /v1/companies"), 1 + 150);
    assert_eq!(env.requests_to("POST /v1/companies"), before);
    let jobs = env.requests_to("POST /v1/companies/bulk");
    assert!(
        (2..=env.requests_to("POST /v1/customers/bulk")).contains(&jobs),
        "{jobs} jobs"
    );
    env.assert_import_sends_nothing(&args, "every company and row is recorded");
}

#[test]
fn a_companies_job_an_earlier_run_left_queued_is_polled_before_any_lookup() {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        bulk_delay: Duration::from_secs(2),
        ..SandboxConfig::default()
    });
    let file = env.write("export.csv", &export_with_companies(120, 12));
    let mut args = vec![file.to_str().unwrap(), "--mode", "bulk"];
    args.extend_from_slice(RECOVERY);
    env.kill_once_queued("kind = 'companies'", env.spawn_import(&args));
    assert_eq!(
        env.records().companies.len(),
        0,
        "killed before its job ran"
    );
    let run = env.import(&[&args[..], &["--json"]].concat());
    run.assert_code(0);
    // The job made them: the resumed run found each by lookup once it was done, and sent
    // no create of its own for them.
    assert_companies_once(&env, 120, 12);
    assert_eq!(env.requests_to("POST /v1/companies"), 0);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["companies_created"], 0, "{summary}");
    assert_eq!(summary["companies_reconciled"], 12, "{summary}");
    env.assert_exactly_once(120, 120);
}

fn killed_and_resumed(mode: &str) {
    let env = TestEnv::new(SandboxConfig {
        latency: Duration::from_millis(3),
        jitter: Duration::from_millis(4),
        ..lossy(23)
    });
    let file = env.write("export.csv", &export_with_companies(120, 12));
    let mut args = vec![file.to_str().unwrap(), "--mode", mode];
    args.extend_from_slice(RECOVERY);
    for (threshold, pause) in [(1, 3), (30, 17), (70, 29)] {
        let mut child = env.spawn_import(&args);
        env.wait_for(&format!("{threshold} customers"), |stats| {
            stats.customers >= threshold
        });
        std::thread::sleep(Duration::from_millis(pause));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    env.import(&args).assert_code(0);
    assert_companies_once(&env, 120, 12);
    env.assert_exactly_once(120, 120);
}

#[test]
fn killed_mid_run_and_resumed_each_company_lands_once_single() {
    killed_and_resumed("single");
}

#[test]
fn killed_mid_run_and_resumed_each_company_lands_once_bulk() {
    killed_and_resumed("bulk");
}

fn sync_keeps_the_company(mode: &str) {
    let env = TestEnv::plain();
    let day1 = env.write("day1.csv", &export_with_companies(4, 2));
    env.import(&[day1.to_str().unwrap(), "--mode", mode, "--rpm", "100000"])
        .assert_code(0);
    // The next night, customer 1 is renamed; nothing else changed.
    let day2 = export_with_companies(4, 2).replace("Customer 1,", "Customer 1 Renamed,");
    let day2 = env.write("day2.csv", &day2);
    let run = env.import(&[
        day2.to_str().unwrap(),
        "--mode",
        mode,
        "--rpm",
        "100000",
        "--json",
    ]);
    run.assert_code(0);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["customers_updated"], 1, "{summary}");
    assert_eq!(env.stats().customers_updated, 1);
    let records = env.records();
    let renamed = records
        .customers
        .iter()
        .find(|c| c.external_id.as_deref() == Some("C-1"))
        .unwrap();
    assert_eq!(renamed.name.as_deref(), Some("Customer 1 Renamed"));
    assert_companies_once(&env, 4, 2);
}

#[test]
fn a_customer_keeps_its_company_through_a_sync_update_single() {
    sync_keeps_the_company("single");
}

#[test]
fn a_customer_keeps_its_company_through_a_sync_update_bulk() {
    sync_keeps_the_company("bulk");
}

#[test]
fn a_company_name_too_short_fails_its_row_naming_file_line_and_field() {
    let env = TestEnv::plain();
    let file = env.write(
        "export.csv",
        "customer_id,email,company,conversation_id,subject\n\
         C-0,c0@example.com,Acme,T-0,Hello\n\
         C-1,c1@example.com,AB,T-1,Hello\n",
    );
    env.import(&[file.to_str().unwrap(), "--rpm", "100000"])
        .assert_code(1);
    let errors = env.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (source, line, field, reason) = &errors[0];
    assert!(source.ends_with("export.csv"), "{source}");
    assert_eq!(*line, 3);
    assert_eq!(field, "company.name");
    assert!(reason.contains("3 to 255"), "{reason}");
    let records = env.records();
    assert_eq!(records.companies.len(), 1);
    assert_eq!(records.customers.len(), 1, "the bad row made nothing");
    assert_eq!(env.rows_in_state("failed"), 1);
}

/// The Zendesk preset's `organization_id`, named by organizations.json: each organization
/// becomes one company, its requesters' customers carry its id, and a second run sends
/// nothing.
#[test]
fn the_zendesk_samples_organizations_land_as_companies_once() {
    let env = TestEnv::plain();
    let tickets = sample("zendesk/tickets.json");
    let users = sample("zendesk/users.json");
    let organizations = sample("zendesk/organizations.json");
    let args = [
        "--preset",
        "zendesk-json",
        tickets.to_str().unwrap(),
        "--users",
        users.to_str().unwrap(),
        "--organizations",
        organizations.to_str().unwrap(),
    ];
    env.import(&args).assert_code(0);
    let records = env.records();
    let mut companies: Vec<(&str, Option<&str>)> = records
        .companies
        .iter()
        .map(|c| (c.name.as_str(), c.external_id.as_deref()))
        .collect();
    companies.sort();
    assert_eq!(
        companies,
        [
            ("Acme Analytics", Some("zendesk-org-7001")),
            ("Hopper Labs", Some("zendesk-org-7002"))
        ]
    );
    let company_of = |external_id: &str| {
        let customer = records
            .customers
            .iter()
            .find(|c| c.external_id.as_deref() == Some(external_id))
            .unwrap();
        let id = customer.extra.get("company").and_then(|v| v.as_str());
        let company = records.companies.iter().find(|c| Some(c.id.as_str()) == id);
        company.map(|c| c.name.clone())
    };
    assert_eq!(
        company_of("zendesk-user-361001").as_deref(),
        Some("Acme Analytics")
    );
    assert_eq!(
        company_of("zendesk-user-361003").as_deref(),
        Some("Acme Analytics")
    );
    assert_eq!(
        company_of("zendesk-user-361002").as_deref(),
        Some("Hopper Labs")
    );
    assert_eq!(
        company_of("zendesk-user-361004"),
        None,
        "its ticket names none"
    );
    assert_second_run_only_lists_the_orgs_tags(&env, &args);
}
