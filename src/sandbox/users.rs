//! The org's users (agents) as the sandbox holds them: seeded from
//! [`SandboxConfig::users`](super::SandboxConfig), found with `GET /v1/users?email={x}`
//! (one filter at a time, as the docs say filters cannot be combined; strictest plausible: a
//! second filter is refused with 400 rather than ignored), and `POST /v1/users`, which on
//! the live API sends an invitation email: the sandbox makes the user and counts the
//! invitation (`Stats::invitations`), so a test can assert an import sent none. A message's
//! or note's `createdBy` must name one of these users when the key holds `org.admin`
//! ([`unknown_author`]); the docs do not say what the live API does with an unknown id, so
//! the sandbox refuses it (422), the strictest plausible.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::http::{App, error, read_object};
use super::validate::FieldError;

/// One user of the org.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxUser {
    pub id: String,
    pub email: String,
}

impl SandboxUser {
    pub fn new(id: &str, email: &str) -> SandboxUser {
        SandboxUser {
            id: id.into(),
            email: email.into(),
        }
    }

    fn object(&self) -> Value {
        json!({"type": "user", "id": self.id,
               "attributes": {"email": self.email, "name": self.email}})
    }
}

/// The user with this email, compared without regard to case (emails are).
pub(super) fn by_email<'a>(users: &'a [SandboxUser], email: &str) -> Option<&'a SandboxUser> {
    users
        .iter()
        .find(|user| user.email.eq_ignore_ascii_case(email))
}

/// `GET /v1/users?email={x}`: a `data` list of the one user with that email, or empty.
pub(super) async fn list_users(State(app): State<Arc<App>>, req: Request) -> Response {
    let filters: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .filter(|(key, _)| key != "page" && key != "pageSize")
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
    let email = match filters.as_slice() {
        [(key, value)] if key == "email" => value.clone(),
        [] => return error(StatusCode::BAD_REQUEST, "give a filter: ?email={x}"),
        [_] => {
            return error(
                StatusCode::BAD_REQUEST,
                "users can be filtered by email only",
            );
        }
        _ => return error(StatusCode::BAD_REQUEST, "filters cannot be combined"),
    };
    let users = app.users();
    let data: Vec<Value> = by_email(&users, &email)
        .map(SandboxUser::object)
        .into_iter()
        .collect();
    (StatusCode::OK, Json(json!({ "data": data }))).into_response()
}

/// `POST /v1/users`: makes the user and counts the invitation the live API would email.
pub(super) async fn create_user(State(app): State<Arc<App>>, req: Request) -> Response {
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Some(email) = body.get("email").and_then(Value::as_str) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "email is required");
    };
    let user = {
        let mut users = app.users();
        if by_email(&users, email).is_some() {
            return error(StatusCode::CONFLICT, "a user with this email exists");
        }
        let user = SandboxUser::new(&format!("user-{}", users.len() + 1), email);
        users.push(user.clone());
        user
    };
    app.lock().counters.invitations += 1;
    (app.created_status(), Json(app.envelope(user.object()))).into_response()
}

/// A `createdBy` (kept: the key holds `org.admin`) that names no user of the org.
pub(super) fn unknown_author(
    users: &[SandboxUser],
    body: &Map<String, Value>,
) -> Option<FieldError> {
    let author = body.get("createdBy")?;
    let known = author
        .as_str()
        .is_some_and(|id| users.iter().any(|user| user.id == id));
    (!known).then(|| FieldError {
        pointer: "/createdBy".into(),
        detail: format!("{author} is not the id of a user of this org"),
    })
}

/// A conversation's `assignedUsers` (their shape is `validate.rs`'s) that are no id of a
/// user of the org: `/assignedUsers/{i}` each. The docs say only that they are user ids;
/// what the live API does with an unknown one is not said, so the sandbox refuses it (422).
pub(super) fn unknown_assignees(
    users: &[SandboxUser],
    body: &Map<String, Value>,
) -> Vec<FieldError> {
    let Some(Value::Array(ids)) = body.get("assignedUsers") else {
        return Vec::new();
    };
    ids.iter()
        .enumerate()
        .filter_map(|(index, id)| {
            let id = id.as_str()?;
            (!users.iter().any(|user| user.id == id)).then(|| FieldError {
                pointer: format!("/assignedUsers/{index}"),
                detail: format!("{id:?} is not the id of a user of this org"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Vec<SandboxUser> {
        vec![
            SandboxUser::new("u-1", "Ann@example.com"),
            SandboxUser::new("u-2", "bo@example.com"),
        ]
    }

    #[test]
    fn a_user_is_found_by_email_whatever_its_case() {
        assert_eq!(
            by_email(&users(), "ann@EXAMPLE.com").map(|u| u.id.as_str()),
            Some("u-1")
        );
        assert_eq!(by_email(&users(), "nobody@example.com"), None);
    }

    #[test]
    fn an_author_must_be_the_id_of_a_user() {
        let body = |author: Value| json!({"createdBy": author}).as_object().unwrap().clone();
        assert!(unknown_author(&users(), &body(json!("u-2"))).is_none());
        assert!(unknown_author(&users(), &Map::new()).is_none());
        let error = unknown_author(&users(), &body(json!("bo@example.com"))).unwrap();
        assert_eq!(error.pointer, "/createdBy");
        assert!(unknown_author(&users(), &body(json!(7))).is_some());
    }
}
