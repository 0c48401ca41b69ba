//! The org's users (agents) through the API: `GET /v1/users?email={x}` finds the one user
//! with an email (the docs: filters cannot be combined, so email is the only one sent). A
//! lookup is a read, one request through the rate gate like every other; its answer is a
//! `data` list (or one record, bare or wrapped: both shapes are taken). Users are never
//! created here: `POST /v1/users` emails an invitation.

use std::sync::atomic::Ordering;

use super::client::KustomerClient;
use super::error::ApiError;

impl KustomerClient {
    /// The id of the user with this email; None when the org has none (an empty list, or
    /// 404). A 200 that cannot be read is a transient failure, never "absent".
    pub async fn find_user(&self, email: &str) -> Result<Option<String>, ApiError> {
        self.stats().user_lookups.fetch_add(1, Ordering::Relaxed);
        let mut url = self.url("v1/users");
        url.query_pairs_mut().append_pair("email", email);
        self.find_at(url, "users lookup").await
    }
}
