//! `export --records agents|companies|tags` (issue 19): the maps a migration leaves besides
//! the rows' id map, streamed from the checkpoint as CSV with a header or JSON lines, each
//! line the id the sandbox holds; the rows' export names each customer's company id; a
//! checkpoint older than a table exports its header only.

use std::collections::BTreeMap;

use kustomer_import::sandbox::{SandboxConfig, SandboxUser, TagRecord};
use serde_json::Value;

use crate::harness::*;

/// The Zendesk sample imported into an org that has sam's user (not alex's), the tag
/// `billing`, and Hopper Labs (zendesk-org-7002) made before by another tool; the tags the
/// org lacks (export, bug, delivery) made with --create-missing-tags.
fn imported_sample() -> TestEnv {
    let env = TestEnv::new(SandboxConfig {
        token: Some(KEY.to_string()),
        users: vec![SandboxUser::new("u-sam", "sam@helpdesk.example.com")],
        tags: vec![TagRecord::new("tag-billing", "billing")],
        ..SandboxConfig::default()
    });
    let elsewhere = env.write(
        "elsewhere.csv",
        "customer_id,email,company_id,company\nX,x@example.com,zendesk-org-7002,Hopper Labs\n",
    );
    env.import(&[elsewhere.to_str().unwrap(), "--checkpoint", "other.sqlite"])
        .assert_code(0);
    let (tickets, users, organizations) = (
        sample("zendesk/tickets.json"),
        sample("zendesk/users.json"),
        sample("zendesk/organizations.json"),
    );
    env.import(&[
        "--preset",
        "zendesk-json",
        tickets.to_str().unwrap(),
        "--users",
        users.to_str().unwrap(),
        "--organizations",
        organizations.to_str().unwrap(),
        "--create-missing-tags",
    ])
    .assert_code(0);
    env
}

/// A CSV export's header and its lines, each as column -> value.
fn csv_of(text: &str) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let lines = reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            header
                .iter()
                .cloned()
                .zip(record.iter().map(String::from))
                .collect()
        })
        .collect();
    (header, lines)
}

fn export(env: &TestEnv, args: &[&str]) -> String {
    let run = env.command(&[&["export"], args].concat());
    run.assert_code(0);
    run.stdout
}

#[test]
fn agents_companies_and_tags_export_as_the_sandbox_holds_them() {
    let env = imported_sample();
    let records = env.records();

    let (header, agents) = csv_of(&export(&env, &["--records", "agents"]));
    assert_eq!(header, ["agent", "email", "user_id", "resolved_at"]);
    let users: Vec<(&str, &str)> = agents
        .iter()
        .map(|a| (a["agent"].as_str(), a["user_id"].as_str()))
        .collect();
    assert_eq!(
        users,
        [
            ("alex@helpdesk.example.com", ""),
            ("sam@helpdesk.example.com", "u-sam")
        ],
        "alex has no user: an empty user_id"
    );

    let (header, companies) = csv_of(&export(&env, &["--records", "companies"]));
    assert_eq!(
        header,
        [
            "company_key",
            "external_id",
            "name",
            "company_id",
            "company",
            "updated_at"
        ]
    );
    let id_of = |external_id: &str| {
        let company = records.companies.iter();
        let mut matching = company.filter(|c| c.external_id.as_deref() == Some(external_id));
        matching.next().unwrap().id.clone()
    };
    let made: Vec<(&str, &str, &str, String)> = companies
        .iter()
        .map(|c| {
            (
                c["external_id"].as_str(),
                c["name"].as_str(),
                c["company"].as_str(),
                c["company_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        made,
        [
            (
                "zendesk-org-7001",
                "Acme Analytics",
                "created",
                id_of("zendesk-org-7001")
            ),
            (
                "zendesk-org-7002",
                "Hopper Labs",
                "linked",
                id_of("zendesk-org-7002")
            ),
        ]
    );

    let tags = export(&env, &["--records", "tags", "--format", "jsonl"]);
    let tags: Vec<Value> = tags
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let sandbox_tag = |name: &str| {
        let tag = records.tags.iter().find(|t| t.name == name).unwrap();
        tag.id.clone()
    };
    let known: Vec<(&str, &str, &str)> = tags
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                t["tag_id"].as_str().unwrap(),
                t["origin"].as_str().unwrap(),
            )
        })
        .collect();
    let ids: Vec<String> = ["billing", "bug", "delivery", "export"]
        .iter()
        .map(|name| sandbox_tag(name))
        .collect();
    assert_eq!(
        known,
        [
            ("billing", ids[0].as_str(), "listed"),
            ("bug", ids[1].as_str(), "created"),
            ("delivery", ids[2].as_str(), "created"),
            ("export", ids[3].as_str(), "created"),
        ]
    );
    assert!(tags.iter().all(|t| t["listed_at"].is_string()));

    // The rows name their customers' companies.
    let (_, rows) = csv_of(&export(&env, &[]));
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().any(|row| !row["company_id"].is_empty()));
    for row in &rows {
        let customer = records
            .customers
            .iter()
            .find(|c| c.id == row["customer_id"])
            .unwrap();
        // A customer whose user has no organization has no company: an empty cell.
        let company = customer.extra.get("company").and_then(Value::as_str);
        assert_eq!(row["company_id"], company.unwrap_or(""), "{row:?}");
    }

    let refused = env.command(&["export", "--records", "tags", "--state", "all"]);
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("--state picks rows"),
        "{}",
        refused.stderr
    );
}

#[test]
fn a_checkpoint_older_than_a_table_exports_its_header_only() {
    let env = imported_sample();
    std::fs::copy(env.path("kustomer-import.sqlite"), env.path("older.sqlite")).unwrap();
    let older = rusqlite::Connection::open(env.path("older.sqlite")).unwrap();
    older
        .execute_batch("DROP TABLE agents; DROP TABLE companies; DROP TABLE tags;")
        .unwrap();
    drop(older);
    for (records, header) in [
        ("agents", "agent,email,user_id,resolved_at\n"),
        (
            "companies",
            "company_key,external_id,name,company_id,company,updated_at\n",
        ),
        ("tags", "name,tag_id,origin,listed_at\n"),
    ] {
        let out = format!("{records}.csv");
        let args = [
            "--records",
            records,
            "--checkpoint",
            "older.sqlite",
            "-o",
            &out,
        ];
        let run = env.command(&[&["export"], &args[..]].concat());
        run.assert_code(0);
        assert_eq!(
            std::fs::read_to_string(env.path(&out)).unwrap(),
            header,
            "{records}"
        );
        assert!(
            run.stderr.contains(&format!("0 {records} written")),
            "{}",
            run.stderr
        );
    }
    // Its rows still export, without company ids.
    let (_, rows) = csv_of(&export(&env, &["--checkpoint", "older.sqlite"]));
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|row| row["company_id"].is_empty()));
}
