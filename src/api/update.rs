//! Updates of records made earlier (a nightly sync, see `pipeline::update` and, for the
//! history, `pipeline::thread_sync`): `PATCH /v1/customers/{id}`,
//! `PATCH /v1/conversations/{id}`, `PATCH /v1/messages/{id}` and `PATCH /v1/notes/{id}` with
//! only the fields that changed (no bulk update of messages or notes is documented). An update is idempotent: a lost answer is simply sent again. A 404 says the
//! record is gone (deleted in Kustomer since), a 409 that a value is another record's (an
//! email); both are refusals of this update, read as every other answer is (`client.rs`).
//! A 429 while the org's budget is not spent is this record's per-object limit
//! ([`ApiError::RecordLimited`]): the record waits, the run does not.

use reqwest::Method;
use serde_json::{Map, Value};

use super::client::{Call, KustomerClient, classify_failure, record_id};
use super::error::ApiError;

impl KustomerClient {
    /// `PATCH /v1/customers/{id}` with `fields`.
    pub async fn update_customer(
        &self,
        id: &str,
        fields: &Map<String, Value>,
    ) -> Result<(), ApiError> {
        self.update("v1/customers", id, fields).await
    }

    /// `PATCH /v1/conversations/{id}` with `fields`.
    pub async fn update_conversation(
        &self,
        id: &str,
        fields: &Map<String, Value>,
    ) -> Result<(), ApiError> {
        self.update("v1/conversations", id, fields).await
    }

    /// `PATCH /v1/messages/{id}` with `fields`.
    pub async fn update_message(
        &self,
        id: &str,
        fields: &Map<String, Value>,
    ) -> Result<(), ApiError> {
        self.update("v1/messages", id, fields).await
    }

    /// `PATCH /v1/notes/{id}` with `fields`.
    pub async fn update_note(&self, id: &str, fields: &Map<String, Value>) -> Result<(), ApiError> {
        self.update("v1/notes", id, fields).await
    }

    async fn update(
        &self,
        collection: &str,
        id: &str,
        fields: &Map<String, Value>,
    ) -> Result<(), ApiError> {
        let encoded = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
        let url = self.url(&format!("{collection}/{encoded}"));
        let body = serde_json::to_vec(fields).map_err(|error| ApiError::Rejected {
            status: 0,
            message: format!("cannot encode the body: {error}"),
        })?;
        // Under the record's per-object limit as well as the org's: a 429 of the record's
        // alone comes back as `ApiError::RecordLimited`, and no one else waits for it.
        let (status, answer) = self.send_update(Method::PATCH, url, body).await?;
        match status.as_u16() {
            // The record as updated, bare or in `data`; an empty 204 is taken too.
            200 | 201 | 204 => {
                if status.as_u16() != 204 && !answer.is_empty() && record_id(&answer).is_none() {
                    tracing::debug!("an update of {collection}/{id} answered {status} with no id");
                }
                Ok(())
            }
            409 => Err(ApiError::Duplicate {
                message: super::error::server_message(&answer),
            }),
            code => Err(classify_failure(Call::Update, code, &answer)),
        }
    }
}
