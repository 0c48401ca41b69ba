//! Source agents mapped to Kustomer users: this module owns the rule that turns a
//! message's or note's `createdBy` as the source gives it (an agent's email) into the id of
//! the org's user with that email, and the fallback when there is none. Each agent is asked
//! of the API once per checkpoint (`GET /v1/users?email=`, through the rate gate, retried as
//! every read is) and the answer, user or absent, is recorded (migration 014) before the
//! item that needs it is sent, so a resumed run asks nothing already asked. A user is never
//! created (that emails an invitation): an agent with no user, or a value that is no email,
//! falls back to `--default-author` (itself an email, resolved the same way) or to no
//! author, and is counted for the summary.
//!
//! A mapping file's `[users]` table comes first: a source agent it maps to an email is
//! looked up by that email (once, like any); one it maps to a Kustomer user id gets that id
//! as it is, with no lookup.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::handles::Tools;
use super::row::Halt;
use super::worker::Attempts;
use crate::checkpoint::Change;
use crate::mapping::ConversationBody;
use crate::mapping::users::{UserRef, UsersTable};

/// The run's agents: what earlier runs and this one resolved, and the fallbacks taken.
pub(super) struct Agents {
    /// Agent (its email, lower-cased) to the user found, None: absent. Held across a
    /// lookup, so that workers meeting the same new agent ask once between them.
    known: tokio::sync::Mutex<HashMap<String, Option<String>>>,
    default_author: Option<String>,
    /// The mapping file's `[users]` table.
    by_hand: UsersTable,
    /// Agents with no user, and the items of this run that fell back for each.
    unresolved: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Agents {
    /// `known` as the checkpoint holds it; `default_author`, an email, for the fallback;
    /// `by_hand`, the mapping file's `[users]` table.
    pub(super) fn new(
        known: HashMap<String, Option<String>>,
        default_author: Option<String>,
        by_hand: UsersTable,
    ) -> Agents {
        Agents {
            known: tokio::sync::Mutex::new(known),
            default_author: default_author.as_deref().and_then(agent_email),
            by_hand,
            unresolved: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Agents with no user, each with the items of this run that fell back.
    pub(super) fn unresolved(&self) -> BTreeMap<String, u64> {
        self.unresolved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn fell_back(&self, agent: &str) {
        *self
            .unresolved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(agent.to_string())
            .or_default() += 1;
    }
}

/// The agent a `createdBy` text names: its email, lower-cased; None for a text that is no
/// email (a name, an id), which no lookup can find.
pub fn agent_email(text: &str) -> Option<String> {
    let text = text.trim();
    let (local, domain) = text.split_once('@')?;
    (!local.is_empty() && domain.contains('.') && !text.contains(char::is_whitespace))
        .then(|| text.to_lowercase())
}

/// What a source agent (a `createdBy`, an entry of `assignedUsers`) is mapped by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceAgent {
    /// The user the `[users]` table maps it to, else its own email (lower-cased).
    User(UserRef),
    /// Neither: no email and no `[users]` entry, so no lookup can find it. Its text as the
    /// source wrote it (a value that is not text, as JSON), as summaries list it.
    Unmappable(String),
}

/// The one rule for a source agent: the `[users]` table first, else its own email, else
/// unmappable. `import` resolves by it and `validate` lists by it.
pub fn source_agent(by_hand: &UsersTable, source: &Value) -> SourceAgent {
    let text = source.as_str();
    let user = text.and_then(|text| match by_hand.get(text) {
        Some(user) => Some(user.clone()),
        None => agent_email(text).map(UserRef::Email),
    });
    match user {
        Some(user) => SourceAgent::User(user),
        None => SourceAgent::Unmappable(text.map_or_else(|| source.to_string(), str::to_string)),
    }
}

/// The user id an item with this source `createdBy` goes out with: the agent's user, else
/// the default author's, else none.
pub(super) async fn author(
    tools: &Tools,
    source: Option<&Value>,
    attempts: &mut Attempts<'_>,
) -> Result<Option<String>, Halt> {
    let Some(source) = source else {
        return Ok(None);
    };
    let fallen = match source_agent(&tools.agents.by_hand, source) {
        SourceAgent::User(UserRef::Id(id)) => return Ok(Some(id)),
        SourceAgent::User(UserRef::Email(email)) => {
            if let Some(id) = user_of(tools, &email, attempts).await? {
                return Ok(Some(id));
            }
            email
        }
        SourceAgent::Unmappable(shown) => shown,
    };
    tools.agents.fell_back(&fallen);
    match &tools.agents.default_author {
        Some(email) => user_of(tools, email, attempts).await,
        None => Ok(None),
    }
}

/// A conversation's `assignedUsers` as the source names them (agents, as `createdBy` does)
/// made the ids of the org's users, in the body itself, before anything is made of it
/// (its create, bulk item, update and fingerprint). An agent with no user is left out and
/// counted as fallen back: assigning a conversation to `--default-author` instead would
/// say someone else owns it. With none left, the field goes (an empty list would unassign
/// the conversation on an update).
pub(super) async fn assign(
    tools: &Tools,
    conversation: &mut ConversationBody,
    attempts: &mut Attempts<'_>,
) -> Result<(), Halt> {
    let Some(Value::Array(agents)) = conversation.extra.remove("assignedUsers") else {
        return Ok(());
    };
    let mut users = Vec::new();
    for agent in &agents {
        let (user, shown) = match source_agent(&tools.agents.by_hand, agent) {
            SourceAgent::User(UserRef::Id(id)) => (Some(id), String::new()),
            SourceAgent::User(UserRef::Email(email)) => {
                (user_of(tools, &email, attempts).await?, email)
            }
            SourceAgent::Unmappable(shown) => (None, shown),
        };
        match user.map(Value::String) {
            Some(id) if !users.contains(&id) => users.push(id),
            Some(_) => {}
            // Listed as authors are: by the email looked up, else as the source wrote it.
            None => tools.agents.fell_back(&shown),
        }
    }
    if !users.is_empty() {
        conversation
            .extra
            .insert("assignedUsers".into(), Value::Array(users));
    }
    Ok(())
}

/// The user with this email: from what is known, else asked once and recorded.
async fn user_of(
    tools: &Tools,
    email: &str,
    attempts: &mut Attempts<'_>,
) -> Result<Option<String>, Halt> {
    let mut known = tools.agents.known.lock().await;
    if let Some(user) = known.get(email) {
        return Ok(user.clone());
    }
    let user = loop {
        attempts.check_stop()?;
        attempts.requests += 1;
        match tools.client.find_user(email).await {
            Ok(user) => break user,
            Err(error) => attempts.after_failure(&error).await?,
        }
    };
    tools
        .journal
        .commit(vec![Change::AgentResolved {
            agent: email.to_string(),
            email: email.to_string(),
            user_id: user.clone(),
        }])
        .await?;
    known.insert(email.to_string(), user.clone());
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_is_named_by_its_email_in_lower_case() {
        assert_eq!(
            agent_email(" Ann@Example.com "),
            Some("ann@example.com".into())
        );
        for not_an_email in ["Ann", "ann@localhost", "a b@x.io", "@x.io", "7"] {
            assert_eq!(agent_email(not_an_email), None, "{not_an_email}");
        }
    }
}
