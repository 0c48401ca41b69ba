//! The promise of local validation, as a property: any row that `validate` (and so
//! `import`) accepts is accepted by the sandbox's validation, which follows the live API.
//! Rows are generated with values that are often wrong in the ways exports are wrong
//! (stray characters, long text, other date formats, lists where text is expected) and
//! mapped by the default columns, by a mapping file, and as API-shaped JSONL.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Map, Value, json};

use kustomer_import::input::SourceFields;
use kustomer_import::mapping::{Mapping, MappingFile, Plan};
use kustomer_import::sandbox::{validate_conversation, validate_customer};

/// Asserts that the sandbox takes both bodies of an accepted plan, as the worker sends
/// them (the conversation with its customer id and an importedAt stamp).
fn assert_sandbox_accepts(plan: &Plan) -> Result<(), TestCaseError> {
    let customer = serde_json::to_value(&plan.customer).unwrap();
    let errors = validate_customer(&customer);
    prop_assert!(
        errors.is_empty(),
        "accepted locally, refused by the sandbox: {customer} -> {errors:?}"
    );
    if let Some(conversation) = &plan.conversation {
        let mut body = serde_json::to_value(conversation).unwrap();
        let object = body.as_object_mut().unwrap();
        object.insert("customer".into(), json!("cus_1"));
        object
            .entry("importedAt")
            .or_insert_with(|| json!("2026-11-24T12:00:00Z"));
        let errors = validate_conversation(&body);
        prop_assert!(
            errors.is_empty(),
            "accepted locally, refused by the sandbox: {body} -> {errors:?}"
        );
    }
    Ok(())
}

/// Mostly values an export would hold for the field (so that many rows are accepted and
/// the property is tested where it matters), sometimes empty, sometimes hostile.
fn field(
    valid: impl Strategy<Value = String> + 'static,
    hostile: impl Strategy<Value = String> + 'static,
) -> BoxedStrategy<String> {
    prop_oneof![16 => valid, 2 => Just(String::new()), 2 => hostile].boxed()
}

fn text() -> BoxedStrategy<String> {
    field(
        prop_oneof![
            "[a-zA-Z0-9 ]{1,12}",
            "\\PC{1,40}",
            "[\u{0600}-\u{06ff}\u{05d0}-\u{05ea} \u{1f600}-\u{1f64f}]{1,12}",
            "y{250,255}",
        ],
        prop_oneof!["x{250,260}", "[ \t]{1,3}", "\\PC{200,300}"],
    )
}

fn email() -> BoxedStrategy<String> {
    field(
        "[a-z0-9_%+-]{1,12}(\\.[a-z0-9]{1,5})?@[a-z0-9]{1,10}(-[a-z0-9]{1,4})?\\.[a-z]{2,6}",
        prop_oneof![
            "[a-z]{1,64}@[a-z]{60,63}\\.[a-z]{60,63}\\.[a-z]{60,63}\\.com",
            "[a-zé@.\\-]{0,16}",
            "\\PC{0,20}",
        ],
    )
}

fn phone() -> BoxedStrategy<String> {
    field(
        prop_oneof![
            "\\+[1-9][0-9]{7,13}",
            "00[1-9][0-9]{7,12}",
            "\\(?[0-9]{3}\\)? [0-9]{3}[-. ][0-9]{4}",
        ],
        prop_oneof!["[+0-9 ().-]{0,20}", "\\PC{0,12}"],
    )
}

fn timestamp() -> BoxedStrategy<String> {
    field(
        "(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[T t]([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]{1,12})?(Z|z|[+-](0[0-9]|1[0-4]):[0-5][0-9])",
        prop_oneof![
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?([+-][0-9]{2}:?[0-9]{2})?",
            "[0-9]{1,2}/[0-9]{1,2}/[0-9]{4}",
            "\\PC{0,24}",
        ],
    )
}

fn status() -> BoxedStrategy<String> {
    field(
        "(open|OPEN|Snoozed|done|solved|Pending)",
        prop_oneof!["(hold|new|closed|waiting)", "\\PC{0,8}"],
    )
}

fn tags() -> BoxedStrategy<String> {
    field(
        "[a-z ]{1,8}([,;] ?[a-z ]{0,8}){0,3}",
        prop_oneof![",;, ", "\\PC{0,12}"],
    )
}

fn one_of(valid: &'static str) -> BoxedStrategy<String> {
    field(valid, "(-?[0-9]{1,2}(\\.[0-9])?|\\PC{0,6}|inbound|maybe)")
}

/// One CSV row of every column the mappings below read.
fn csv_row() -> impl Strategy<Value = Vec<String>> {
    (
        (text(), text(), email(), email(), phone(), text()),
        (
            text(),
            text(),
            status(),
            timestamp(),
            tags(),
            one_of("[1-5]"),
        ),
        (
            one_of("(in|out|IN|Out|inbound)"),
            one_of("-?[0-9]{1,6}(\\.[0-9]{1,3})?"),
            one_of("(yes|no|true|false|1|0|Y)"),
            timestamp(),
            text(),
        ),
    )
        .prop_map(|(a, b, c)| {
            vec![
                a.0, a.1, a.2, a.3, a.4, a.5, b.0, b.1, b.2, b.3, b.4, b.5, c.0, c.1, c.2, c.3, c.4,
            ]
        })
}

const HEADERS: [&str; 17] = [
    "external_id",
    "name",
    "email",
    "alt_email",
    "phone",
    "conversation_id",
    "subject",
    "channel",
    "status",
    "created",
    "tags",
    "priority",
    "direction",
    "size",
    "vip",
    "since",
    "company",
];

const MAPPING: &str = r#"
[customer]
externalId = "external_id"
name = "{name} {company}"
emails = ["email", { column = "alt_email", type = "Work" }]
phones = [{ column = "phone", type = "mobile" }]

[customer.extra]
company = "company"
createdAt = "since"
tags = "tags"

[customer.custom]
sizeNum = "size"
vipBool = "vip"
sinceAt = "since"
companyStr = "company"

[conversation]
externalId = "conversation_id"
name = "subject"
channel = "channel"
status = "status"

[conversation.values.status]
solved = "done"
pending = "snoozed"

[conversation.values.direction]
inbound = "in"

[conversation.extra]
importedAt = "{created}"
createdAt = "created"
tags = "tags"
priority = "priority"
direction = "direction"
"#;

fn csv_fields(values: Vec<String>) -> SourceFields {
    SourceFields::Csv {
        headers: Arc::new(HEADERS.iter().map(|h| h.to_string()).collect()),
        values: values.into(),
    }
}

/// A JSON value of the kinds exports hold where a field is expected.
fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..9).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        one_of("(in|out)").prop_map(Value::from),
        timestamp().prop_map(Value::from),
        text().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                "(email|phone|type|externalId|[a-z]{1,6}(Str|Num|At|Bool)?)",
                inner,
                0..3
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A value of the type the API expects of `key` most of the time, any JSON value otherwise.
fn typed_value(key: &str) -> BoxedStrategy<Value> {
    let valid: BoxedStrategy<Value> = match key {
        "emails" => prop::collection::vec(
            (email(), prop::option::of("(home|work|other|Work)")).prop_map(|(email, kind)| {
                let mut entry = json!({ "email": email });
                if let Some(kind) = kind {
                    entry["type"] = json!(kind);
                }
                entry
            }),
            0..3,
        )
        .prop_map(Value::Array)
        .boxed(),
        "phones" => prop::collection::vec(phone().prop_map(|phone| json!({ "phone": phone })), 0..3)
            .prop_map(Value::Array)
            .boxed(),
        "externalIds" => prop::collection::vec(
            text().prop_map(|id| json!({ "externalId": id })),
            0..3,
        )
        .prop_map(Value::Array)
        .boxed(),
        "importedAt" | "createdAt" => timestamp().prop_map(Value::from).boxed(),
        "tags" => prop::collection::vec(text().prop_map(Value::from), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        "custom" => (text(), one_of("-?[0-9]{1,4}"), any::<bool>(), timestamp())
            .prop_map(|(note, size, vip, since)| {
                json!({ "noteStr": note, "sizeNum": size, "vipBool": vip, "sinceAt": since })
            })
            .boxed(),
        "priority" => (0i64..7).prop_map(Value::from).boxed(),
        "direction" => one_of("(in|out)").prop_map(Value::from).boxed(),
        "status" => status().prop_map(Value::from).boxed(),
        _ => text().prop_map(Value::from).boxed(),
    };
    prop_oneof![19 => valid, 1 => json_value()].boxed()
}

fn api_object(keys: &'static [&'static str]) -> BoxedStrategy<Map<String, Value>> {
    let fields: Vec<BoxedStrategy<Option<Value>>> = keys
        .iter()
        .map(|key| {
            // A field the API does not take: rare, or few rows would be accepted.
            let presence = match *key {
                "mood" => 0.05,
                "externalId" | "emails" => 0.7,
                _ => 0.3,
            };
            prop::option::weighted(presence, typed_value(key)).boxed()
        })
        .collect();
    fields
        .prop_map(move |values| {
            keys.iter()
                .zip(values)
                .filter_map(|(key, value)| value.map(|value| (key.to_string(), value)))
                .collect()
        })
        .boxed()
}

/// An API-shaped JSONL row with any of the fields the API knows, and one it does not.
fn api_shaped_row() -> impl Strategy<Value = Map<String, Value>> {
    const CUSTOMER: &[&str] = &[
        "name",
        "externalId",
        "emails",
        "phones",
        "company",
        "externalIds",
        "importedAt",
        "createdAt",
        "tags",
        "custom",
        "mood",
    ];
    const CONVERSATION: &[&str] = &[
        "name",
        "externalId",
        "channel",
        "status",
        "importedAt",
        "createdAt",
        "tags",
        "priority",
        "direction",
        "mood",
    ];
    (api_object(CUSTOMER), api_object(CONVERSATION)).prop_map(|(customer, conversation)| {
        Map::from_iter([
            ("customer".to_string(), Value::Object(customer)),
            ("conversation".to_string(), Value::Object(conversation)),
        ])
    })
}

/// Runs the property over generated records and checks it is not vacuous: a fair share of
/// the records must be accepted locally for the comparison to mean something.
fn check<S: Strategy>(strategy: S, to_fields: impl Fn(S::Value) -> SourceFields, mapping: Mapping)
where
    S::Value: std::fmt::Debug,
{
    const CASES: u32 = 3000;
    let accepted = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(CASES));
    let result = runner.run(&strategy, |value| {
        let fields = to_fields(value);
        let headers = match &fields {
            SourceFields::Csv { headers, .. } => Some(Arc::clone(headers)),
            SourceFields::Json(_) => None,
        };
        if let Ok(plan) = mapping
            .for_input(headers.as_ref())
            .unwrap()
            .map(&fields, None)
        {
            accepted.set(accepted.get() + 1);
            assert_sandbox_accepts(&plan)?;
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    assert!(
        accepted.get() >= CASES / 20,
        "only {} of {CASES} generated rows were accepted locally: the generators must reach \
         valid rows for the property to test anything",
        accepted.get()
    );
}

#[test]
fn default_columns_accept_only_what_the_sandbox_accepts() {
    check(csv_row(), csv_fields, Mapping::Default);
}

#[test]
fn a_mapping_file_accepts_only_what_the_sandbox_accepts() {
    let mapping = Mapping::File(Arc::new(MappingFile::parse(MAPPING).unwrap()));
    check(csv_row(), csv_fields, mapping);
}

#[test]
fn api_shaped_rows_are_accepted_only_when_the_sandbox_accepts_them() {
    check(api_shaped_row(), SourceFields::Json, Mapping::Default);
}

#[test]
fn the_generators_reach_accepted_rows() {
    // The property would hold vacuously if every generated row were refused: check that a
    // plain row passes and carries the typed fields to the sandbox.
    let mapping = Mapping::File(Arc::new(MappingFile::parse(MAPPING).unwrap()));
    let values: Vec<String> = [
        "c1",
        "Ada",
        "ada@x.io",
        "ada@work.io",
        "+44 20 7946 0958",
        "t1",
        "Hi",
        "email",
        "Solved",
        "2024-03-01 10:00:00+01:00",
        "vip, billing",
        "3",
        "inbound",
        "12",
        "yes",
        "2020-01-01T00:00:00Z",
        "ACME",
    ]
    .iter()
    .map(|v| v.to_string())
    .collect();
    let fields = csv_fields(values);
    let headers = Arc::new(HEADERS.iter().map(|h| h.to_string()).collect());
    let plan = mapping
        .for_input(Some(&headers))
        .unwrap()
        .map(&fields, None)
        .unwrap();
    assert_eq!(plan.customer.name.as_deref(), Some("Ada ACME"));
    assert_eq!(
        plan.customer.extra["custom"],
        json!({"sizeNum": 12, "vipBool": true, "sinceAt": "2020-01-01T00:00:00Z", "companyStr": "ACME"})
    );
    let conversation = plan.conversation.as_ref().unwrap();
    assert_eq!(conversation.status.as_deref(), Some("done"));
    assert_eq!(conversation.extra["direction"], json!("in"));
    assert_eq!(
        conversation.extra["importedAt"],
        json!("2024-03-01T09:00:00Z")
    );
    assert_sandbox_accepts(&plan).unwrap();
}
