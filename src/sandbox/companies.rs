//! The sandbox's companies (the docs, "Users, tags, companies"): `POST /v1/companies`
//! (`name` 3 to 255 characters, `externalId`), `GET /v1/companies?externalId={x}`, and
//! their bulk jobs at `/v1/companies/bulk` (queued and polled by the bulk code in `http.rs`,
//! each item run by [`run_item`]). The docs say
//! nothing of a repeated company externalId or of the lookup's answer when none matches,
//! so the sandbox does the strictest plausible thing: a repeated externalId is refused as
//! a duplicate (409, like a customer's), and a lookup answers 200 with a list, empty when
//! none matches (the client must not take a 200 it cannot read for "absent").

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::http::{
    App, ConnCtx, Inner, after_write, bulk_refusal, error, errors_response, invalid, read_object,
    refused_item, roll_after,
};
use super::store::percent_decode;
use super::validate::FieldError;

/// Shortest and longest company name the API takes.
pub const NAME_CHARS: std::ops::RangeInclusive<usize> = 3..=255;

/// A company as the sandbox holds it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CompanyRecord {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// The companies and their externalId index.
#[derive(Debug, Default)]
pub struct Companies {
    records: Vec<CompanyRecord>,
    by_external_id: HashMap<String, usize>,
}

impl Companies {
    /// Holds `record` (in its old place when its id is held: a later line of the records
    /// file).
    pub fn place(&mut self, record: CompanyRecord) {
        let index = match self.records.iter().position(|c| c.id == record.id) {
            Some(index) => {
                self.records[index] = record;
                index
            }
            None => {
                self.records.push(record);
                self.records.len() - 1
            }
        };
        if let Some(external_id) = &self.records[index].external_id {
            self.by_external_id.insert(external_id.clone(), index);
        }
    }

    /// The company holding `external_id`, if any.
    pub fn find(&self, external_id: &str) -> Option<&CompanyRecord> {
        self.by_external_id
            .get(external_id)
            .and_then(|&index| self.records.get(index))
    }

    pub fn holds_id(&self, id: &str) -> bool {
        self.records.iter().any(|c| c.id == id)
    }

    pub fn all(&self) -> &[CompanyRecord] {
        &self.records
    }
}

/// What the API refuses in a company body: a `name` that is not text of 3 to 255
/// characters, an `externalId` that is not text.
pub fn validate_company(body: &Map<String, Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match body.get("name") {
        Some(Value::String(name)) if NAME_CHARS.contains(&name.chars().count()) => {}
        Some(Value::String(_)) => errors.push(FieldError::new(
            "/name".to_string(),
            "name must be 3 to 255 characters".to_string(),
        )),
        Some(_) => errors.push(FieldError::new(
            "/name".to_string(),
            "name must be a string".to_string(),
        )),
        None => errors.push(FieldError::new(
            "/name".to_string(),
            "name is required".to_string(),
        )),
    }
    match body.get("externalId") {
        None | Some(Value::String(_)) => {}
        Some(_) => errors.push(FieldError::new(
            "/externalId".to_string(),
            "externalId must be a string".to_string(),
        )),
    }
    errors
}

/// A company made from a validated body, given its id.
pub fn company_from_body(id: String, body: &Map<String, Value>) -> CompanyRecord {
    CompanyRecord {
        id,
        name: body
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        external_id: body
            .get("externalId")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// A company as the API shows it.
pub fn company_object(record: &CompanyRecord) -> Value {
    json!({
        "type": "company",
        "id": record.id,
        "attributes": {"name": record.name, "externalId": record.external_id},
    })
}

/// `POST /v1/companies`.
pub async fn create(State(app): State<Arc<App>>, req: Request) -> Response {
    let conn = req.extensions().get::<ConnCtx>().cloned();
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let errors = validate_company(&body);
    if !errors.is_empty() {
        return invalid(errors);
    }
    let outcome = {
        let mut inner = app.lock();
        let made = inner
            .store
            .insert_company(&body)
            .map(|record| app.envelope(company_object(record)));
        made.map(|answer| (answer, roll_after(&mut inner)))
    };
    match outcome {
        Ok((answer, fault)) => {
            let response = (app.created_status(), Json(answer)).into_response();
            after_write(&app, conn, fault, response).await
        }
        Err(refusal) => {
            let (status, problems) = super::http::refused_write(refusal);
            errors_response(status, problems)
        }
    }
}

/// One item of a `POST /v1/companies/bulk` job, as the single create takes it: the new
/// company's id, or the words of its refusal (a repeated externalId is the bulk results'
/// `"duplicate detected"`, as for a customer).
pub(super) fn run_item(inner: &mut Inner, body: &Map<String, Value>) -> Result<String, String> {
    if let Some(first) = validate_company(body).into_iter().next() {
        return Err(bulk_refusal(first));
    }
    inner
        .store
        .insert_company(body)
        .map(|record| record.id.clone())
        .map_err(refused_item)
}

/// `GET /v1/companies?externalId={x}`: the companies holding it, as a list.
pub async fn lookup(State(app): State<Arc<App>>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or_default();
    let wanted = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("externalId="))
        .map(|raw| percent_decode(&raw.replace('+', " ")));
    let external_id = match wanted {
        Some(Some(external_id)) => external_id,
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the lookup value is not valid percent-encoded UTF-8",
            );
        }
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "companies are looked up by ?externalId=",
            );
        }
    };
    let found: Vec<Value> = app
        .lock()
        .store
        .companies()
        .find(&external_id)
        .map(company_object)
        .into_iter()
        .collect();
    (StatusCode::OK, Json(json!({ "data": found }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::store::{Store, WriteError};

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_name_of_3_to_255_characters_is_taken_and_others_are_refused_on_name() {
        // The docs' fields: `name` 3 to 255 characters, `externalId`.
        assert!(validate_company(&body(json!({"name": "Abc", "externalId": "org-1"}))).is_empty());
        assert!(validate_company(&body(json!({"name": "é".repeat(255)}))).is_empty());
        for bad in [
            json!({"name": "Ab"}),
            json!({"name": "x".repeat(256)}),
            json!({}),
            json!({"name": 7}),
        ] {
            let errors = validate_company(&body(bad.clone()));
            assert_eq!(errors.len(), 1, "{bad}");
            assert_eq!(errors[0].pointer, "/name", "{bad}");
        }
        let errors = validate_company(&body(json!({"name": "Acme", "externalId": 5})));
        assert_eq!(errors[0].pointer, "/externalId");
    }

    #[test]
    fn a_company_is_found_by_its_externalid_and_a_second_one_with_it_is_a_duplicate() {
        let mut store = Store::new();
        let made = store
            .insert_company(&body(
                json!({"name": "Analytical Engines", "externalId": "org-1"}),
            ))
            .unwrap()
            .clone();
        assert_eq!(made.name, "Analytical Engines");
        assert_eq!(store.companies().find("org-1"), Some(&made));
        assert_eq!(store.companies().find("org-2"), None);
        let again = store.insert_company(&body(json!({"name": "Other", "externalId": "org-1"})));
        match again {
            Err(WriteError::Conflicts(conflicts)) => {
                assert_eq!(conflicts[0].existing_id, made.id);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.records().companies, vec![made]);
    }
}
