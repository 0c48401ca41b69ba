//! The Zendesk preset (`--preset zendesk-json tickets.json --users users.json`): Zendesk's
//! full JSON export, one ticket per line with its `comments[]`, read with its `users.json`
//! (requesters and agents by id) and, optionally, `organizations.json` (`--organizations`,
//! the companies' names). This module owns those indexes ([`ZendeskDirectory`]: only id,
//! name, email, phone and role of each user and id and name of each organization, sorted by
//! id: no full records are held, so 100k users cost a few megabytes) and the mapping of one
//! ticket to a [`Plan`] ([`ZendeskMapping`]): the requester as the customer (with the
//! ticket's organization as its company), the ticket as the conversation and its comments,
//! in order, as the thread (`public: false` is an internal note), each an agent wrote
//! carrying the agent's email as its `createdBy`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::checks::{company_ref, finish_plan};
use super::{
    CompanyRef, ConversationBody, CustomerBody, EmailEntry, MappingError, NestedThread, PhoneEntry,
    Plan, item_value, nested_list_present,
};
use crate::history::checks::{DEFAULT_APP, finish_item};
use crate::history::{ItemKind, ThreadItem};
use crate::input::{ItemFlaw, NestedLists, SourceFields};

/// A Zendesk user's role: end-users write inbound messages, agents and admins outbound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    EndUser,
    Agent,
}

/// What the preset keeps of one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZendeskUser {
    pub name: Option<Box<str>>,
    pub email: Option<Box<str>>,
    pub phone: Option<Box<str>>,
    pub role: Role,
}

/// `users.json` or `organizations.json` could not be read: `flag` names the option that
/// gave the file.
#[derive(Debug, thiserror::Error)]
pub enum ZendeskFileError {
    #[error("{flag} {}: {source}", path.display())]
    Io {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {}: line {line}: {field}: {reason}", path.display())]
    Bad {
        flag: &'static str,
        path: PathBuf,
        line: u64,
        field: &'static str,
        reason: String,
    },
}

/// What the preset reads beside tickets.json: users.json (`--users`) and, when given,
/// organizations.json (`--organizations`).
#[derive(Debug, Default)]
pub struct ZendeskDirectory {
    pub users: ZendeskUsers,
    pub organizations: Option<ZendeskOrganizations>,
}

impl ZendeskDirectory {
    pub fn load(users: &Path, organizations: Option<&Path>) -> Result<Self, ZendeskFileError> {
        Ok(ZendeskDirectory {
            users: ZendeskUsers::load(users)?,
            organizations: organizations.map(ZendeskOrganizations::load).transpose()?,
        })
    }
}

/// A field of one line of a Zendesk file that is wrong, and why.
type LineFlaw = (&'static str, String);

/// The records of a Zendesk file (one JSON object a line, bare or under `wrapper`), each
/// read by `read` to its id and what is kept of it, sorted by id; a later line for the
/// same id wins, as in an export appended to.
fn read_records<T>(
    input: impl BufRead,
    (flag, path): (&'static str, &Path),
    wrapper: &str,
    read: impl Fn(&Map<String, Value>) -> Result<T, LineFlaw>,
) -> Result<Vec<(u64, T)>, ZendeskFileError> {
    let mut by_id = Vec::new();
    for (index, text) in input.lines().enumerate() {
        let line = index as u64 + 1;
        let text = text.map_err(|source| ZendeskFileError::Io {
            flag,
            path: path.to_path_buf(),
            source,
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let bad = |(field, reason): LineFlaw| ZendeskFileError::Bad {
            flag,
            path: path.to_path_buf(),
            line,
            field,
            reason,
        };
        let value: Value = serde_json::from_str(&text)
            .map_err(|error| bad(("record", format!("not JSON: {error}"))))?;
        let object = unwrap_object(value, wrapper)
            .ok_or_else(|| bad(("record", "is not a JSON object".into())))?;
        let id = object
            .get("id")
            .and_then(id_number)
            .ok_or_else(|| bad(("id", "is missing or not an integer".into())))?;
        by_id.push((id, read(&object).map_err(bad)?));
    }
    by_id.reverse();
    by_id.sort_by_key(|(id, _)| *id);
    by_id.dedup_by_key(|(id, _)| *id);
    by_id.shrink_to_fit();
    Ok(by_id)
}

fn open(
    flag: &'static str,
    path: &Path,
) -> Result<std::io::BufReader<std::fs::File>, ZendeskFileError> {
    let file = std::fs::File::open(path).map_err(|source| ZendeskFileError::Io {
        flag,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(std::io::BufReader::new(file))
}

/// The one kept for `id` in records sorted by id.
fn by_id<T>(records: &[(u64, T)], id: u64) -> Option<&T> {
    records
        .binary_search_by_key(&id, |(id, _)| *id)
        .ok()
        .map(|index| &records[index].1)
}

/// Every user of `users.json`, by id.
#[derive(Debug, Default)]
pub struct ZendeskUsers {
    by_id: Vec<(u64, ZendeskUser)>,
}

impl ZendeskUsers {
    /// Reads `users.json` (one user per line, bare or as `{"user": {...}}`).
    pub fn load(path: &Path) -> Result<ZendeskUsers, ZendeskFileError> {
        ZendeskUsers::read(open("--users", path)?, path)
    }

    /// Reads users from any reader; `path` names it in errors.
    pub fn read(input: impl BufRead, path: &Path) -> Result<ZendeskUsers, ZendeskFileError> {
        let by_id = read_records(input, ("--users", path), "user", |user| {
            let role = match user.get("role").and_then(Value::as_str) {
                Some("end-user") | None => Role::EndUser,
                Some("agent" | "admin") => Role::Agent,
                Some(other) => {
                    let reason = format!("{other:?} is not end-user, agent or admin");
                    return Err(("role", reason));
                }
            };
            let text_of = |key: &str| text_field(user, key).map(Box::from);
            Ok(ZendeskUser {
                name: text_of("name"),
                email: text_of("email"),
                phone: text_of("phone"),
                role,
            })
        })?;
        Ok(ZendeskUsers { by_id })
    }

    pub fn get(&self, id: u64) -> Option<&ZendeskUser> {
        by_id(&self.by_id, id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Every organization of `organizations.json`, by id: only its name is kept.
#[derive(Debug, Default)]
pub struct ZendeskOrganizations {
    by_id: Vec<(u64, Option<Box<str>>)>,
}

impl ZendeskOrganizations {
    /// Reads `organizations.json` (one per line, bare or as `{"organization": {...}}`).
    pub fn load(path: &Path) -> Result<ZendeskOrganizations, ZendeskFileError> {
        ZendeskOrganizations::read(open("--organizations", path)?, path)
    }

    /// Reads organizations from any reader; `path` names it in errors.
    pub fn read(
        input: impl BufRead,
        path: &Path,
    ) -> Result<ZendeskOrganizations, ZendeskFileError> {
        let by_id = read_records(input, ("--organizations", path), "organization", |org| {
            Ok(text_field(org, "name").map(Box::from))
        })?;
        Ok(ZendeskOrganizations { by_id })
    }

    /// The organization with this id: Some(its name, if it has one), None when the file
    /// has no such organization.
    pub fn get(&self, id: u64) -> Option<Option<&str>> {
        by_id(&self.by_id, id).map(Option::as_deref)
    }
}

/// The object itself, or the object under `wrapper` (`{"ticket": {...}}`).
fn unwrap_object(value: Value, wrapper: &str) -> Option<Map<String, Value>> {
    match value {
        Value::Object(mut object) => match object.remove(wrapper) {
            Some(Value::Object(inner)) if object.is_empty() => Some(inner),
            Some(other) => {
                object.insert(wrapper.to_string(), other);
                Some(object)
            }
            None => Some(object),
        },
        _ => None,
    }
}

/// A Zendesk id: an integer, or text of one.
fn id_number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// A non-empty text field, trimmed.
fn text_field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

/// A Zendesk ticket status as a Kustomer conversation status: new, open, pending and hold
/// are open; solved and closed are done.
pub fn conversation_status(status: &str) -> Option<&'static str> {
    match status.to_ascii_lowercase().as_str() {
        "new" | "open" | "pending" | "hold" => Some("open"),
        "solved" | "closed" => Some("done"),
        _ => None,
    }
}

/// A Zendesk `via.channel` as a Kustomer channel. Zendesk's web form, API, rules and the
/// like have no Kustomer channel of their own: they are email, the channel a Zendesk ticket
/// without a messaging channel is answered on.
pub fn kustomer_channel(via: &str) -> &'static str {
    match via.to_ascii_lowercase().as_str() {
        "chat" | "native_messaging" | "messaging" | "mobile_sdk" | "web_widget" | "sdk" => "chat",
        "sms" | "text" => "sms",
        "voice" | "phone" | "phone_call_inbound" | "phone_call_outbound" => "voice",
        "facebook" | "facebook_post" | "facebook_message" => "facebook",
        "twitter" | "twitter_tweet" => "twitter-tweet",
        "twitter_dm" | "twitter_direct_message" => "twitter-dm",
        "instagram" | "instagram_dm" => "instagram",
        "whatsapp" => "whatsapp",
        _ => "email",
    }
}

/// A Zendesk priority as Kustomer's 1 to 5: low 1, normal 2, high 3, urgent 4 (5 is left
/// for nothing Zendesk has, so urgent is not read as "the highest there is").
fn kustomer_priority(priority: &str) -> Option<i64> {
    match priority.to_ascii_lowercase().as_str() {
        "low" => Some(1),
        "normal" => Some(2),
        "high" => Some(3),
        "urgent" => Some(4),
        _ => None,
    }
}

/// Maps tickets with the users and organizations they name.
#[derive(Clone, Debug)]
pub struct ZendeskMapping {
    directory: Arc<ZendeskDirectory>,
}

impl ZendeskMapping {
    pub fn new(directory: Arc<ZendeskDirectory>) -> ZendeskMapping {
        ZendeskMapping { directory }
    }

    /// Maps one ticket to its plan, with its comments (the thread lists of its line) as
    /// the thread, mapped item by item later ([`TicketThread::comment_item`]).
    pub fn map(
        &self,
        fields: &SourceFields,
        threads: Option<NestedLists>,
    ) -> Result<Plan, MappingError> {
        let SourceFields::Json(object) = fields else {
            return Err(MappingError::record(
                "not a Zendesk ticket",
                "the Zendesk preset reads tickets.json (one JSON ticket a line), not CSV",
            ));
        };
        let ticket = match object.get("ticket") {
            Some(Value::Object(inner)) => inner,
            _ => object,
        };
        let requester_id = required_id(ticket, "requester_id")?;
        let requester = self.directory.users.get(requester_id).ok_or_else(|| {
            MappingError::new(
                "requester_id",
                "no such user in users.json",
                format!("{requester_id} is not the id of any user in users.json"),
            )
        })?;
        let customer = customer_of(requester_id, requester);
        let mut conversation = conversation_of(ticket)?;
        if let Some(assignee) = self.assignee_of(ticket)? {
            conversation
                .extra
                .insert("assignedUsers".into(), json!([assignee]));
        }
        let channel = conversation
            .channel
            .clone()
            .unwrap_or_else(|| "email".into());
        let mut plan = finish_plan(customer, conversation)?;
        plan.company = self.company_of(ticket)?;
        if nested_list_present(ticket, threads.as_ref(), THREAD_KEY)? {
            let ticket = TicketThread {
                directory: Arc::clone(&self.directory),
                requester_id,
                channel,
            };
            plan.thread = threads.map(|lists| NestedThread::zendesk(lists, ticket));
        }
        Ok(plan)
    }
}

impl ZendeskMapping {
    /// The ticket's `assignee_id` as the source agent its conversation is assigned to (see
    /// [`Author::agent`]: mapped to the org's user when sent); an assignee missing from
    /// users.json fails the row, naming `assignee_id`.
    fn assignee_of(&self, ticket: &Map<String, Value>) -> Result<Option<String>, MappingError> {
        if matches!(ticket.get("assignee_id"), None | Some(Value::Null)) {
            return Ok(None);
        }
        let id = required_id(ticket, "assignee_id")?;
        let user = self.directory.users.get(id).ok_or_else(|| {
            MappingError::new(
                "assignee_id",
                "no such user in users.json",
                format!("{id} is not the id of any user in users.json"),
            )
        })?;
        Ok(Author::User(id, user).agent())
    }

    /// The ticket's `organization_id` as its customer's company: externalId
    /// `zendesk-org-<id>`, named as organizations.json names it (without that file, or
    /// with no name there, by its externalId). An id missing from organizations.json,
    /// when it is given, fails the row naming `organization_id`, as a company name the
    /// API would refuse does.
    fn company_of(&self, ticket: &Map<String, Value>) -> Result<Option<CompanyRef>, MappingError> {
        let id = match ticket.get("organization_id") {
            None | Some(Value::Null) => return Ok(None),
            Some(value) => id_number(value).ok_or_else(|| {
                let reason = format!("{value} is not a Zendesk id");
                MappingError::new("organization_id", "not an id", reason)
            })?,
        };
        let name = match &self.directory.organizations {
            None => None,
            Some(organizations) => organizations.get(id).ok_or_else(|| {
                MappingError::new(
                    "organization_id",
                    "no such organization in organizations.json",
                    format!("{id} is not the id of any organization in organizations.json"),
                )
            })?,
        };
        let external_id = format!("zendesk-org-{id}");
        company_ref(name, Some(&external_id)).map_err(|mut error| {
            error.field = Some("organization_id".into());
            error
        })
    }
}

/// The key of a ticket's thread: its comments.
pub(super) const THREAD_KEY: &str = "comments";

/// What every comment of one ticket is read against: the users, the ticket's requester
/// (whose comments are inbound) and its channel (a comment's own `via` overrides it).
#[derive(Clone, Debug)]
pub(super) struct TicketThread {
    directory: Arc<ZendeskDirectory>,
    requester_id: u64,
    channel: String,
}

impl PartialEq for TicketThread {
    fn eq(&self, other: &TicketThread) -> bool {
        Arc::ptr_eq(&self.directory, &other.directory)
            && self.requester_id == other.requester_id
            && self.channel == other.channel
    }
}

impl TicketThread {
    /// One comment (`comments[index]`, of the ticket read at `line` of `file`) as a message
    /// (public) or a note (`public: false`).
    pub(super) fn comment_item(
        &self,
        comment: Result<Value, ItemFlaw>,
        index: usize,
        file: &Arc<str>,
        line: u64,
    ) -> Result<ThreadItem, MappingError> {
        let path = format!("{THREAD_KEY}[{index}]");
        let Value::Object(comment) = item_value(comment, &path)? else {
            return Err(MappingError::new(
                &path,
                "not an object",
                "must be an object",
            ));
        };
        let id = required_id(&comment, "id").map_err(|error| at_path(error, &path))?;
        let created_at = comment.get("created_at").filter(|value| !value.is_null());
        let plain = text_field(&comment, "plain_body").or_else(|| text_field(&comment, "body"));
        let public = comment
            .get("public")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let mut body = Map::new();
        body.insert("externalId".into(), json!(format!("zendesk-comment-{id}")));
        if let Some(created_at) = created_at {
            body.insert("createdAt".into(), created_at.clone());
        }
        let kind = if public {
            let author = self.author(&comment, &path)?;
            let direction = match author {
                Author::User(_, user) if user.role == Role::Agent => "out",
                Author::Requester | Author::User(..) => "in",
            };
            if let Some(agent) = author.agent() {
                body.insert("createdBy".into(), json!(agent));
            }
            let channel = comment
                .get("via")
                .and_then(|via| via.get("channel"))
                .and_then(Value::as_str)
                .map(kustomer_channel)
                .unwrap_or(&self.channel);
            body.insert("channel".into(), json!(channel));
            body.insert("app".into(), json!(DEFAULT_APP));
            body.insert("direction".into(), json!(direction));
            if let Some(created_at) = created_at {
                body.insert("sentAt".into(), created_at.clone());
            }
            if let Some(plain) = plain {
                body.insert("preview".into(), json!(plain));
            }
            if let Some(html) = text_field(&comment, "html_body") {
                // The docs leave open where a long or HTML body goes; `meta` is free-form.
                body.insert("meta".into(), json!({ "htmlBody": html }));
            }
            ItemKind::Message
        } else {
            // No text at all is left to finish_item to refuse, naming `comments[i].body`.
            // A note's author only says who wrote it: one missing from users.json leaves
            // it with no author rather than failing its ticket.
            if let Some(agent) = self.author(&comment, &path).ok().and_then(|a| a.agent()) {
                body.insert("createdBy".into(), json!(agent));
            }
            if let Some(plain) = plain {
                body.insert("body".into(), json!(plain));
            }
            ItemKind::Note
        };
        finish_item(kind, body, &path, file, line)
    }

    /// Who wrote a comment (an author missing from users.json fails the row, naming
    /// `comments[i].author_id`).
    fn author(&self, comment: &Map<String, Value>, path: &str) -> Result<Author<'_>, MappingError> {
        let author = required_id(comment, "author_id").map_err(|error| at_path(error, path))?;
        if author == self.requester_id {
            return Ok(Author::Requester);
        }
        match self.directory.users.get(author) {
            Some(user) => Ok(Author::User(author, user)),
            None => Err(MappingError::new(
                &format!("{path}.author_id"),
                "no such user in users.json",
                format!("{author} is not the id of any user in users.json"),
            )),
        }
    }
}

/// A comment's author: the ticket's requester, or another user of users.json.
enum Author<'a> {
    Requester,
    User(u64, &'a ZendeskUser),
}

impl Author<'_> {
    /// The source agent a comment goes out with as its `createdBy` (see
    /// `pipeline::agents`): an agent's or admin's email, or `zendesk-user-<id>` for one with
    /// none (no lookup can find it: it falls back, and is listed); None for an end-user.
    fn agent(&self) -> Option<String> {
        match self {
            Author::User(id, user) if user.role == Role::Agent => Some(
                user.email
                    .as_deref()
                    .map_or_else(|| format!("zendesk-user-{id}"), str::to_string),
            ),
            Author::Requester | Author::User(..) => None,
        }
    }
}

/// An error about a field of a comment, named by the comment's path.
fn at_path(mut error: MappingError, path: &str) -> MappingError {
    error.field = error.field.map(|field| format!("{path}.{field}"));
    error
}

fn required_id(object: &Map<String, Value>, key: &str) -> Result<u64, MappingError> {
    match object.get(key) {
        None | Some(Value::Null) => Err(MappingError::new(key, "missing", "is missing")),
        Some(value) => id_number(value).ok_or_else(|| {
            MappingError::new(key, "not an id", format!("{value} is not a Zendesk id"))
        }),
    }
}

/// The customer a requester is: `zendesk-user-<id>`, with the user's name, email and phone.
fn customer_of(id: u64, user: &ZendeskUser) -> CustomerBody {
    CustomerBody {
        name: user.name.as_deref().map(String::from),
        external_id: Some(format!("zendesk-user-{id}")),
        emails: user
            .email
            .iter()
            .map(|email| EmailEntry {
                email: email.to_string(),
                kind: None,
            })
            .collect(),
        phones: user
            .phone
            .iter()
            .map(|phone| PhoneEntry {
                phone: phone.to_string(),
                kind: None,
            })
            .collect(),
        extra: Map::new(),
    }
}

/// The conversation a ticket is.
fn conversation_of(ticket: &Map<String, Value>) -> Result<ConversationBody, MappingError> {
    let id = required_id(ticket, "id")?;
    let status = match text_field(ticket, "status") {
        None => None,
        Some(status) => Some(conversation_status(status).ok_or_else(|| {
            MappingError::new(
                "status",
                "not a Zendesk status",
                format!("{status:?} is not one of new, open, pending, hold, solved, closed"),
            )
        })?),
    };
    let channel = ticket
        .get("via")
        .and_then(|via| via.get("channel"))
        .and_then(Value::as_str)
        .map(kustomer_channel);
    let mut extra = Map::new();
    if let Some(created_at) = ticket.get("created_at").filter(|value| !value.is_null()) {
        extra.insert("createdAt".into(), created_at.clone());
    }
    if let Some(tags) = ticket.get("tags").filter(|tags| !tags.is_null()) {
        extra.insert("tags".into(), tags.clone());
    }
    if let Some(priority) = text_field(ticket, "priority").and_then(kustomer_priority) {
        extra.insert("priority".into(), json!(priority));
    }
    Ok(ConversationBody {
        customer: None,
        external_id: Some(id.to_string()),
        name: text_field(ticket, "subject").map(String::from),
        channel: channel.map(String::from),
        status: status.map(String::from),
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: &str = r#"{"id": 1, "name": "Ada", "email": "ada@example.com", "phone": "+44 20 7946 0001", "role": "end-user"}
{"user": {"id": 2, "name": "Cc Person", "email": "cc@example.com", "role": "end-user"}}
{"id": 7, "name": "Sam Agent", "email": "sam@example.com", "role": "agent"}
{"id": 8, "name": "Alex Admin", "role": "admin"}
"#;

    fn mapping() -> ZendeskMapping {
        let users = ZendeskUsers::read(USERS.as_bytes(), Path::new("users.json")).unwrap();
        ZendeskMapping::new(Arc::new(ZendeskDirectory {
            users,
            organizations: None,
        }))
    }

    fn comment(id: u64, author: u64, public: bool) -> Value {
        json!({
            "id": id, "author_id": author, "public": public,
            "plain_body": format!("text {id}"), "body": format!("text {id}"),
            "html_body": format!("<p>text {id}</p>"),
            "created_at": "2024-03-01T10:00:00+01:00",
        })
    }

    fn ticket(status: &str, comments: Vec<Value>) -> Value {
        json!({
            "id": 42, "subject": "Broken export", "status": status, "requester_id": 1,
            "created_at": "2024-03-01T09:00:00Z", "tags": ["export"], "priority": "high",
            "via": {"channel": "web"}, "comments": comments,
        })
    }

    /// A ticket read as a run reads its line: the plan and its thread.
    fn map(ticket: &Value) -> Result<(Plan, Vec<ThreadItem>), MappingError> {
        let record = crate::input::read_line(&ticket.to_string());
        let plan = mapping().map(&record.fields, record.threads)?;
        let thread = plan.mapped_thread()?;
        Ok((plan, thread))
    }

    #[test]
    fn the_requester_is_the_customer_found_in_users_json() {
        let (plan, _) = map(&ticket("open", vec![])).unwrap();
        assert_eq!(plan.customer_key, "ext:zendesk-user-1");
        assert_eq!(plan.customer.name.as_deref(), Some("Ada"));
        assert_eq!(plan.customer.emails[0].email, "ada@example.com");
        assert_eq!(plan.customer.phones[0].phone, "+442079460001");
        let conversation = plan.conversation.unwrap();
        assert_eq!(conversation.external_id.as_deref(), Some("42"));
        assert_eq!(conversation.name.as_deref(), Some("Broken export"));
        assert_eq!(conversation.channel.as_deref(), Some("email"));
        assert_eq!(
            conversation.extra["createdAt"],
            json!("2024-03-01T09:00:00Z")
        );
        assert_eq!(conversation.extra["priority"], json!(3));
        assert_eq!(conversation.extra["tags"], json!(["export"]));
    }

    #[test]
    fn a_requester_missing_from_users_json_fails_the_row_naming_requester_id() {
        let mut object = ticket("open", vec![]);
        object["requester_id"] = json!(99);
        let error = map(&object).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("requester_id"));
        assert!(error.reason.contains("99"), "{}", error.reason);
    }

    #[test]
    fn statuses_map_to_open_or_done_and_an_unknown_one_is_refused() {
        for (zendesk, kustomer) in [
            ("new", "open"),
            ("open", "open"),
            ("pending", "open"),
            ("hold", "open"),
            ("solved", "done"),
            ("closed", "done"),
        ] {
            let (plan, _) = map(&ticket(zendesk, vec![])).unwrap();
            assert_eq!(plan.conversation.unwrap().status.as_deref(), Some(kustomer));
        }
        let error = map(&ticket("deleted", vec![])).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("status"));
        assert!(error.reason.contains("\"deleted\""), "{}", error.reason);
    }

    #[test]
    fn channels_map_to_kustomer_channels() {
        assert_eq!(kustomer_channel("web"), "email");
        assert_eq!(kustomer_channel("api"), "email");
        assert_eq!(kustomer_channel("chat"), "chat");
        assert_eq!(kustomer_channel("native_messaging"), "chat");
        assert_eq!(kustomer_channel("twitter"), "twitter-tweet");
        assert_eq!(kustomer_channel("twitter_dm"), "twitter-dm");
        assert_eq!(kustomer_channel("instagram_dm"), "instagram");
        assert_eq!(kustomer_channel("whatsapp"), "whatsapp");
        assert_eq!(kustomer_channel("voice"), "voice");
        assert_eq!(kustomer_channel("SMS"), "sms");
    }

    #[test]
    fn comments_become_the_thread_in_order_private_ones_as_notes() {
        let mut chat = comment(12, 7, true);
        chat["via"] = json!({"channel": "chat"});
        let (_, thread) = map(&ticket(
            "open",
            vec![comment(11, 1, true), chat, comment(13, 7, false)],
        ))
        .unwrap();
        let kinds: Vec<ItemKind> = thread.iter().map(|item| item.kind).collect();
        assert_eq!(
            kinds,
            [ItemKind::Message, ItemKind::Message, ItemKind::Note]
        );
        let first = &thread[0];
        assert_eq!(first.source_id.as_deref(), Some("zendesk-comment-11"));
        assert_eq!(first.body["preview"], json!("text 11"));
        assert_eq!(first.body["meta"], json!({"htmlBody": "<p>text 11</p>"}));
        assert_eq!(first.body["app"], json!("kustomer-import"));
        // The ticket's channel, when the comment has none; its own when it does.
        assert_eq!(first.body["channel"], json!("email"));
        assert_eq!(thread[1].body["channel"], json!("chat"));
        assert_eq!(first.body["sentAt"], json!("2024-03-01T09:00:00Z"));
        assert_eq!(first.at, Some("2024-03-01T09:00:00Z".parse().unwrap()));
        assert_eq!((&*first.file, first.line), ("test.jsonl", 1));
        let note = &thread[2];
        assert_eq!(note.body["body"], json!("text 13"));
        assert!(!note.body.contains_key("direction") && !note.body.contains_key("channel"));
    }

    #[test]
    fn direction_is_in_for_the_requester_and_end_users_out_for_agents_and_admins() {
        let comments = vec![
            comment(1, 1, true),
            comment(2, 2, true),
            comment(3, 7, true),
            comment(4, 8, true),
        ];
        let (_, thread) = map(&ticket("open", comments)).unwrap();
        let directions: Vec<&Value> = thread.iter().map(|item| &item.body["direction"]).collect();
        assert_eq!(
            directions,
            [&json!("in"), &json!("in"), &json!("out"), &json!("out")]
        );
    }

    const ORGANIZATIONS: &str = r#"{"id": 5, "name": "Acme Analytics"}
{"organization": {"id": 6, "name": "Hopper Labs"}}
{"id": 9}
"#;

    fn with_organizations() -> ZendeskMapping {
        let users = ZendeskUsers::read(USERS.as_bytes(), Path::new("users.json")).unwrap();
        let path = Path::new("organizations.json");
        let organizations = ZendeskOrganizations::read(ORGANIZATIONS.as_bytes(), path).unwrap();
        ZendeskMapping::new(Arc::new(ZendeskDirectory {
            users,
            organizations: Some(organizations),
        }))
    }

    fn company(
        mapping: &ZendeskMapping,
        organization: Value,
    ) -> Result<Option<CompanyRef>, MappingError> {
        let mut object = ticket("open", vec![]);
        object["organization_id"] = organization;
        let record = crate::input::read_line(&object.to_string());
        Ok(mapping.map(&record.fields, record.threads)?.company)
    }

    #[test]
    fn a_tickets_organization_is_its_customers_company_named_as_organizations_json_says() {
        let named = company(&with_organizations(), json!(6)).unwrap().unwrap();
        assert_eq!(
            (
                named.key.as_str(),
                named.external_id.as_str(),
                named.name.as_str()
            ),
            ("ext:zendesk-org-6", "zendesk-org-6", "Hopper Labs")
        );
        let nameless = company(&with_organizations(), json!("9")).unwrap().unwrap();
        assert_eq!(nameless.name, "zendesk-org-9", "no name: its externalId");
        let without_file = company(&mapping(), json!(5)).unwrap().unwrap();
        assert_eq!(without_file.name, "zendesk-org-5");
        assert_eq!(company(&with_organizations(), Value::Null).unwrap(), None);
        for refused in [json!(77), json!("x")] {
            let error = company(&with_organizations(), refused.clone()).unwrap_err();
            assert_eq!(error.field.as_deref(), Some("organization_id"), "{refused}");
        }
    }

    #[test]
    fn a_ticket_is_assigned_to_its_assignees_agent_named_by_email() {
        let assigned = |assignee: Value| {
            let mut object = ticket("open", vec![]);
            object["assignee_id"] = assignee;
            map(&object).map(|(plan, _)| {
                plan.conversation
                    .unwrap()
                    .extra
                    .get("assignedUsers")
                    .cloned()
            })
        };
        assert_eq!(
            assigned(json!(7)).unwrap(),
            Some(json!(["sam@example.com"]))
        );
        assert_eq!(assigned(json!(8)).unwrap(), Some(json!(["zendesk-user-8"])));
        assert_eq!(assigned(json!(2)).unwrap(), None, "an end-user is no agent");
        assert_eq!(assigned(Value::Null).unwrap(), None);
        let error = assigned(json!(404)).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("assignee_id"));
    }

    #[test]
    fn a_bad_line_of_organizations_json_is_named_by_flag_file_and_line() {
        let text = "{\"id\": 5, \"name\": \"Acme\"}\n{\"name\": \"no id\"}\n";
        let error = ZendeskOrganizations::read(text.as_bytes(), Path::new("orgs.json"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "--organizations orgs.json: line 2: id: is missing or not an integer"
        );
    }

    #[test]
    fn an_agents_comment_goes_out_with_the_agent_as_its_author_an_end_users_with_none() {
        let comments = vec![
            comment(1, 1, true),
            comment(2, 2, true),
            comment(3, 7, true),
            comment(4, 8, true),
            comment(5, 7, false),
            comment(6, 55, false),
        ];
        let (_, thread) = map(&ticket("open", comments)).unwrap();
        let authors: Vec<Option<&Value>> = thread
            .iter()
            .map(|item| item.body.get("createdBy"))
            .collect();
        assert_eq!(
            authors,
            [
                None,
                None,
                Some(&json!("sam@example.com")),
                Some(&json!("zendesk-user-8")),
                Some(&json!("sam@example.com")),
                None,
            ],
            "an admin with no email is named by its id; a note's unknown author is none"
        );
    }

    #[test]
    fn an_author_missing_from_users_json_fails_the_row_naming_the_comment() {
        let error = map(&ticket(
            "open",
            vec![comment(1, 1, true), comment(2, 55, true)],
        ))
        .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("comments[1].author_id"));
        assert!(error.reason.contains("55"), "{}", error.reason);
    }

    #[test]
    fn a_note_without_a_body_and_a_date_without_an_offset_are_refused() {
        let mut empty = comment(5, 7, false);
        empty["plain_body"] = json!("");
        empty["body"] = json!(" ");
        let error = map(&ticket("open", vec![empty])).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("comments[0].body"));
        let mut local = comment(6, 1, true);
        local["created_at"] = json!("2024-03-01T10:00:00");
        let error = map(&ticket("open", vec![local])).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("comments[0].createdAt"));
        assert!(
            error.reason.contains("2024-03-01T10:00:00"),
            "{}",
            error.reason
        );
    }

    #[test]
    fn users_json_keeps_the_last_line_of_an_id_and_names_a_bad_line() {
        let text = format!(
            "{USERS}{}\n",
            r#"{"id": 7, "name": "Sam Renamed", "role": "agent"}"#
        );
        let users = ZendeskUsers::read(text.as_bytes(), Path::new("users.json")).unwrap();
        assert_eq!(users.len(), 4);
        assert_eq!(users.get(7).unwrap().name.as_deref(), Some("Sam Renamed"));
        assert_eq!(users.get(8).unwrap().role, Role::Agent);
        assert!(users.get(3).is_none());
        let bad = "{\"id\": 1, \"role\": \"end-user\"}\n{\"id\": 2, \"role\": \"boss\"}\n";
        let error = ZendeskUsers::read(bad.as_bytes(), Path::new("users.json")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--users users.json: line 2: role: \"boss\" is not end-user, agent or admin"
        );
    }
}
