//! Deleting records, for `undo`: `DELETE /v1/conversations/{id}` and
//! `DELETE /v1/customers/{id}` (204 from the docs; a 404 means the record is not there, which
//! for a delete sent again after a lost answer means it is gone). Each goes through the rate
//! gate as every request does. The docs ask that a delete be confirmed by a read that
//! answers 404: [`KustomerClient::read_customer`] and [`KustomerClient::read_conversation`]
//! do that for the caller.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;

use super::client::{Call, KustomerClient, classify_failure};
use super::error::ApiError;

/// What a delete found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The API deleted it (2xx).
    Now,
    /// The API does not hold it (404): deleted before, by an earlier attempt or by hand.
    AlreadyGone,
}

impl KustomerClient {
    /// `DELETE /v1/conversations/{id}`.
    pub async fn delete_conversation(&self, id: &str) -> Result<Deleted, ApiError> {
        self.delete_record("v1/conversations", id).await
    }

    /// `DELETE /v1/customers/{id}`; a customer who still holds conversations may be
    /// refused (the sandbox answers 409: [`ApiError::Rejected`]).
    pub async fn delete_customer(&self, id: &str) -> Result<Deleted, ApiError> {
        self.delete_record("v1/customers", id).await
    }

    async fn delete_record(&self, collection: &str, id: &str) -> Result<Deleted, ApiError> {
        let encoded = utf8_percent_encode(id, NON_ALPHANUMERIC);
        let url = self.url(&format!("{collection}/{encoded}"));
        let (status, answer) = self.send(Method::DELETE, url, None).await?;
        match status.as_u16() {
            200..=299 => Ok(Deleted::Now),
            404 => Ok(Deleted::AlreadyGone),
            // A 404 is read above: what is left is classified as a lookup's would be.
            code => Err(classify_failure(Call::Lookup, code, &answer)),
        }
    }
}
