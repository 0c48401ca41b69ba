//! The org's users (agents) through the API: `GET /v1/users?email={x}` finds the one user
//! with an email (the docs: filters cannot be combined, so email is the only one sent). A
//! lookup is a read, one request through the rate gate like every other; its answer is a
//! `data` list (or one record, bare or wrapped: both shapes are taken). Users are never
//! created here: `POST /v1/users` emails an invitation.

use std::sync::atomic::Ordering;

use reqwest::Method;

use super::client::{Call, Found, KustomerClient, classify_failure, found_id};
use super::error::ApiError;

impl KustomerClient {
    /// The id of the user with this email; None when the org has none (an empty list, or
    /// 404). A 200 that cannot be read is a transient failure, never "absent".
    pub async fn find_user(&self, email: &str) -> Result<Option<String>, ApiError> {
        self.stats().lookups.fetch_add(1, Ordering::Relaxed);
        self.stats().user_lookups.fetch_add(1, Ordering::Relaxed);
        let mut url = self.url("v1/users");
        url.query_pairs_mut().append_pair("email", email);
        let (status, answer) = self.send(Method::GET, url, None).await?;
        match status.as_u16() {
            200 => match found_id(&answer) {
                Found::Id(id) => Ok(Some(id)),
                Found::Empty => Ok(None),
                Found::Unreadable => Err(ApiError::Transient {
                    reason: format!("users lookup answered {status} with no list of users"),
                    maybe_applied: false,
                }),
            },
            404 => Ok(None),
            code => Err(classify_failure(Call::Lookup, code, &answer)),
        }
    }
}
