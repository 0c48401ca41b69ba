//! Tags by name (issue 19): a conversation's tag names land as the ids of the org's tags,
//! the org listed once per run (none when no row has tags) and not again on a resumed run
//! that knows every name; a name the org lacks is reported with its rows and left out, or,
//! with --create-missing-tags, made once however many rows name it, under lost answers and
//! kill -9, single and bulk; a re-run of unchanged rows sends nothing, and a changed list
//! goes as one update of the whole list of ids.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kustomer_import::sandbox::{FaultConfig, SandboxConfig, TagRecord};
use serde_json::{Value, json};

use crate::harness::*;

const FAST: &[&str] = &["--rpm", "100000"];

const RECOVERY: &[&str] = &[
    "--reconcile-delay",
    "0.05",
    "--timeout",
    "1",
    "--max-retries",
    "30",
    "--bulk-lost-wait",
    "2",
    "--rpm",
    "100000",
];

/// The org's tags before the import: two of them.
fn org_tags() -> Vec<TagRecord> {
    vec![
        TagRecord::new("tag-vip", "VIP"),
        TagRecord::new("tag-billing", "billing"),
    ]
}

fn seeded() -> SandboxConfig {
    SandboxConfig {
        token: Some(KEY.to_string()),
        tags: org_tags(),
        ..SandboxConfig::default()
    }
}

fn lossy(seed: u64) -> SandboxConfig {
    SandboxConfig {
        faults: FaultConfig {
            fail_after_write_rate: 0.3,
            drop_after_write_rate: 0.2,
            fail_rate: 0.05,
            seed: Some(seed),
            ..FaultConfig::default()
        },
        ..seeded()
    }
}

/// API-shaped rows, one conversation each, row `i` tagged `tags(i)`.
fn tagged_rows(rows: usize, tags: impl Fn(usize) -> Vec<&'static str>) -> String {
    (0..rows)
        .map(|i| {
            json!({
                "customer": {"externalId": format!("C-{i}"), "name": format!("Customer {i}")},
                "conversation": {"externalId": format!("T-{i}"), "name": format!("Ticket {i}"),
                    "tags": tags(i)},
            })
            .to_string()
                + "\n"
        })
        .collect()
}

/// The names rows of the many-rows tests carry: one the org has, and three it lacks.
fn rotating(i: usize) -> Vec<&'static str> {
    const NEW: [&str; 3] = ["Late Delivery", "refund", "Escalated"];
    vec!["vip", NEW[i % 3], NEW[(i + 1) % 3]]
}

/// Each conversation's tags as the sandbox holds them, by its externalId.
fn tags_by_conversation(env: &TestEnv) -> BTreeMap<String, Vec<String>> {
    env.records()
        .conversations
        .iter()
        .map(|conversation| {
            let tags = conversation.extra.get("tags").cloned().unwrap_or(json!([]));
            let mut ids: Vec<String> = serde_json::from_value(tags).unwrap();
            ids.sort();
            (conversation.external_id.clone().unwrap(), ids)
        })
        .collect()
}

/// The id of the org's tag named `name` (in any case); panics when it has none.
fn tag_id(env: &TestEnv, name: &str) -> String {
    let records = env.records();
    let found: Vec<&TagRecord> = records
        .tags
        .iter()
        .filter(|tag| tag.name.eq_ignore_ascii_case(name))
        .collect();
    assert_eq!(found.len(), 1, "tag {name}: {:?}", records.tags);
    found[0].id.clone()
}

fn summary(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// Every row's conversation holds the ids of exactly the names it carries, each tag of
/// the org made once.
fn assert_rotating_tags_landed(env: &TestEnv, rows: usize) {
    let records = env.records();
    let names: BTreeSet<String> = records.tags.iter().map(|t| t.name.to_lowercase()).collect();
    assert_eq!(records.tags.len(), 5, "{:?}", records.tags);
    assert_eq!(names.len(), 5, "one name is never two tags");
    assert_eq!(env.stats().tags_created, 3, "each missing name made once");
    let held = tags_by_conversation(env);
    assert_eq!(held.len(), rows);
    for i in 0..rows {
        let mut wanted: Vec<String> = rotating(i).iter().map(|n| tag_id(env, n)).collect();
        wanted.sort();
        assert_eq!(held[&format!("T-{i}")], wanted, "row {i}");
    }
}

#[test]
fn names_land_as_the_orgs_ids_listed_once_and_a_resumed_run_lists_nothing() {
    let env = TestEnv::new(seeded());
    let file = env.write(
        "export.jsonl",
        &tagged_rows(6, |i| match i % 3 {
            0 => vec!["vip", "Billing"],
            1 => vec!["tag-billing"],
            _ => vec!["VIP", "vip"],
        }),
    );
    let mut args = vec![file.to_str().unwrap(), "--json"];
    args.extend_from_slice(FAST);
    let run = env.import(&args);
    run.assert_code(0);
    let held = tags_by_conversation(&env);
    assert_eq!(held["T-0"], ["tag-billing", "tag-vip"]);
    assert_eq!(
        held["T-1"],
        ["tag-billing"],
        "an id of the org's passes as is"
    );
    assert_eq!(held["T-2"], ["tag-vip"], "each tag once, whatever the case");
    assert_eq!(env.stats().tag_lists, 1, "listed once for six rows");
    let first = summary(&run);
    assert_eq!(first["tag_lists"], 1, "{first}");
    assert_eq!(first["tags_missing"], json!({}), "{first}");
    let cached: i64 = env
        .checkpoint()
        .query_row("SELECT count(*) FROM tags", [], |r| r.get(0))
        .unwrap();
    assert_eq!(cached, 2, "the org's tags kept in the checkpoint");

    // Again, unchanged: nothing is listed (the checkpoint knows every name), nothing sent.
    let requests = env.stats().requests_total;
    let run = env.import(&args);
    run.assert_code(0);
    assert_eq!(env.stats().tag_lists, 1);
    assert_eq!(env.stats().requests_total, requests, "nothing sent");
    assert_eq!(summary(&run)["rows_unchanged"], 6);
}

#[test]
fn a_run_with_no_tags_lists_none() {
    let env = TestEnv::new(seeded());
    let file = env.write("export.csv", &generated_csv(3, 2));
    let mut args = vec![file.to_str().unwrap()];
    args.extend_from_slice(FAST);
    env.import(&args).assert_code(0);
    assert_eq!(env.stats().tag_lists, 0);
    assert_eq!(env.requests_to("GET /v1/tags"), 0);
}

#[test]
fn a_csv_column_of_names_maps_through_the_mapping_file() {
    let env = TestEnv::new(seeded());
    let file = env.write(
        "export.csv",
        "customer_id,ticket,labels\nC-1,T-1,\"VIP; billing\"\nC-2,T-2,billing\n",
    );
    let mapping = env.write(
        "mapping.toml",
        "[customer]\nexternalId = \"customer_id\"\n[conversation]\nexternalId = \"ticket\"\n\
         [conversation.extra]\ntags = \"labels\"\n",
    );
    let mut args = vec![
        file.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
    ];
    args.extend_from_slice(FAST);
    env.import(&args).assert_code(0);
    let held = tags_by_conversation(&env);
    assert_eq!(held["T-1"], ["tag-billing", "tag-vip"]);
    assert_eq!(held["T-2"], ["tag-billing"]);
}

#[test]
fn a_missing_tag_is_reported_with_its_rows_and_the_row_done_without_it() {
    let env = TestEnv::new(seeded());
    let file = env.write(
        "export.jsonl",
        &tagged_rows(3, |i| match i {
            0 => vec!["vip", "nope"],
            1 => vec!["Nope"],
            _ => vec!["other"],
        }),
    );
    let mut args = vec![file.to_str().unwrap(), "--json"];
    args.extend_from_slice(FAST);
    let run = env.import(&args);
    run.assert_code(0);
    let report = summary(&run);
    assert_eq!(report["rows_done"], 3, "{report}");
    assert_eq!(
        report["tags_missing"],
        json!({"nope": 2, "other": 1}),
        "{report}"
    );
    assert_eq!(report["tags_created"], 0);
    let held = tags_by_conversation(&env);
    assert_eq!(held["T-0"], ["tag-vip"]);
    assert!(held["T-1"].is_empty() && held["T-2"].is_empty(), "{held:?}");
    assert_eq!(env.stats().tags_created, 0, "nothing made without the flag");
    assert_eq!(env.rows_in_state("done"), 3);
    // status and export say the same from the checkpoint.
    let status = env.command(&["status", "--json"]);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        status["tags"],
        json!({"known": 2, "created": 0, "rows_missing": 3,
               "missing": {"nope": 2, "other": 1}}),
        "{status}"
    );
    let text = env.command(&["status"]).stdout;
    assert!(text.contains("  missing nope: 2 rows"), "{text}");
    let export = env.command(&["export", "--format", "jsonl"]);
    let missing: Vec<Value> = export
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["tags_missing"].clone())
        .collect();
    assert_eq!(
        missing,
        [
            json!("[\"nope\"]"),
            json!("[\"Nope\"]"),
            json!("[\"other\"]")
        ]
    );

    // The table says the same to a person; a new run of other rows lists again, once.
    let more = env.write("more.jsonl", &tagged_rows(1, |_| vec!["nope"]));
    let mut args = vec![more.to_str().unwrap(), "--checkpoint", "more.sqlite"];
    args.extend_from_slice(FAST);
    let run = env.import(&args);
    run.assert_code(0);
    assert!(
        run.stdout.contains("tags missing:") && run.stdout.contains("  nope: 1 rows"),
        "{}",
        run.stdout
    );
    assert_eq!(env.stats().tag_lists, 2);
}

#[test]
fn a_missing_tag_made_in_kustomer_since_reaches_its_rows_on_the_next_run() {
    let env = TestEnv::new(seeded());
    let file = env.write(
        "export.jsonl",
        &tagged_rows(3, |i| {
            if i == 1 {
                vec!["vip"]
            } else {
                vec!["vip", "Nope"]
            }
        }),
    );
    let mut args = vec![file.to_str().unwrap()];
    args.extend_from_slice(FAST);
    env.import(&args).assert_code(0);
    assert_eq!(tags_by_conversation(&env)["T-0"], ["tag-vip"]);
    // Someone makes the tag: another import's row appends it.
    let other = env.write(
        "other.jsonl",
        &tagged_rows(1, |_| vec!["nope"]).replace("-0", "-9"),
    );
    let mut other_args = vec![
        other.to_str().unwrap(),
        "--checkpoint",
        "other.sqlite",
        "--create-missing-tags",
    ];
    other_args.extend_from_slice(FAST);
    env.import(&other_args).assert_code(0);
    assert_eq!(env.stats().tags_created, 1);
    let nope = tag_id(&env, "nope");

    let mut args = vec![file.to_str().unwrap(), "--json"];
    args.extend_from_slice(FAST);
    let run = env.import(&args);
    run.assert_code(0);
    let report = summary(&run);
    assert_eq!(report["conversations_updated"], 2, "{report}");
    assert_eq!(report["tags_missing"], json!({}), "{report}");
    let held = tags_by_conversation(&env);
    let mut both = vec!["tag-vip".to_string(), nope];
    both.sort();
    assert_eq!(held["T-0"], both);
    assert_eq!(held["T-2"], both);
    assert_eq!(held["T-1"], ["tag-vip"]);
    let status = env.command(&["status", "--json"]);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["tags"]["rows_missing"], 0, "{status}");
}

fn lost_answers_make_each_missing_tag_once(mode: &str) {
    let env = TestEnv::new(lossy(19));
    let file = env.write("export.jsonl", &tagged_rows(60, rotating));
    let mut args = vec![
        file.to_str().unwrap(),
        "--mode",
        mode,
        "--create-missing-tags",
        "--json",
    ];
    args.extend_from_slice(RECOVERY);
    let run = env.import(&args);
    run.assert_code(0);
    assert_rotating_tags_landed(&env, 60);
    env.assert_exactly_once(60, 60);
    let report = summary(&run);
    assert_eq!(report["tags_created"], 3, "{report}");
    assert_eq!(report["tags_missing"], json!({}), "{report}");
    let status = env.command(&["status", "--json"]);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["tags"]["known"], 5, "{status}");
    assert_eq!(status["tags"]["created"], 3, "{status}");
    assert_eq!(status["tags"]["rows_missing"], 0, "{status}");
    let faults = env.stats().faults;
    assert!(
        faults.fail_after_write + faults.drop_after_write > 0,
        "no answer was lost"
    );
    // Done means appended: a run again sends nothing and lists nothing.
    let requests = env.stats().requests_total;
    let lists = env.stats().tag_lists;
    let again = env.import(&args);
    again.assert_code(0);
    assert_eq!(summary(&again)["rows_unchanged"], 60);
    assert_eq!(env.stats().tag_lists, lists);
    assert_eq!(env.stats().requests_total, requests);
}

#[test]
fn under_lost_answers_each_missing_tag_is_made_once_single() {
    lost_answers_make_each_missing_tag_once("single");
}

#[test]
fn under_lost_answers_each_missing_tag_is_made_once_bulk() {
    lost_answers_make_each_missing_tag_once("bulk");
}

fn killed_and_resumed(mode: &str) {
    let env = TestEnv::new(SandboxConfig {
        latency: Duration::from_millis(3),
        jitter: Duration::from_millis(4),
        ..lossy(23)
    });
    let file = env.write("export.jsonl", &tagged_rows(120, rotating));
    let mut args = vec![
        file.to_str().unwrap(),
        "--mode",
        mode,
        "--create-missing-tags",
    ];
    args.extend_from_slice(RECOVERY);
    for (threshold, pause) in [(1, 3), (30, 17), (70, 29)] {
        let mut child = env.spawn_import(&args);
        env.wait_for(&format!("{threshold} conversations"), |stats| {
            stats.conversations >= threshold
        });
        std::thread::sleep(Duration::from_millis(pause));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    env.import(&args).assert_code(0);
    assert_rotating_tags_landed(&env, 120);
    env.assert_exactly_once(120, 120);
    assert_eq!(env.rows_in_state("done"), 120);
}

#[test]
fn killed_mid_run_and_resumed_each_missing_tag_is_made_once_single() {
    killed_and_resumed("single");
}

#[test]
fn killed_mid_run_and_resumed_each_missing_tag_is_made_once_bulk() {
    killed_and_resumed("bulk");
}

fn sync_sends_the_whole_list(mode: &str) {
    let env = TestEnv::new(seeded());
    let day1 = env.write(
        "day1.jsonl",
        &tagged_rows(4, |i| if i == 1 { vec!["vip"] } else { vec!["billing"] }),
    );
    let mut args = vec![day1.to_str().unwrap(), "--mode", mode];
    args.extend_from_slice(FAST);
    env.import(&args).assert_code(0);
    // The next night, row 1 gains a tag (named in another case); nothing else changed.
    let day2 = env.write(
        "day2.jsonl",
        &tagged_rows(4, |i| {
            if i == 1 {
                vec!["vip", "BILLING"]
            } else {
                vec!["billing"]
            }
        }),
    );
    let mut args = vec![day2.to_str().unwrap(), "--mode", mode, "--json"];
    args.extend_from_slice(FAST);
    let run = env.import(&args);
    run.assert_code(0);
    let report = summary(&run);
    assert_eq!(report["conversations_updated"], 1, "{report}");
    assert_eq!(report["rows_unchanged"], 3, "{report}");
    assert_eq!(env.stats().conversations_updated, 1, "one update");
    assert_eq!(
        tags_by_conversation(&env)["T-1"],
        ["tag-billing", "tag-vip"],
        "the whole list of ids"
    );
    assert_eq!(env.stats().tag_lists, 1, "the checkpoint knew both names");
}

#[test]
fn a_changed_tag_list_is_one_update_of_the_whole_list_single() {
    sync_sends_the_whole_list("single");
}

#[test]
fn a_changed_tag_list_is_one_update_of_the_whole_list_bulk() {
    sync_sends_the_whole_list("bulk");
}
