//! The source agents `validate` lists, and what `validate --check-users` finds for them.
//! Every valid row's conversation assignees and its thread's authors are classified by the
//! import's own rule ([`source_agent`]: the mapping's `[users]` table, else the agent's own
//! email, else unmappable) and counted per distinct agent: agents are few, so they are kept
//! in memory, and nothing is kept per row. With `--check-users` each distinct email is
//! looked up once (`GET /v1/users?email=`, the client's user lookup, through its rate gate),
//! retried as `verify`'s reads are. Nothing is written anywhere: validate has no checkpoint,
//! and an answer found here is asked again by the import, which records it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::api::{ApiError, Backoff, KustomerClient};
use crate::mapping::ConversationBody;
use crate::mapping::users::{UserRef, UsersTable};
use crate::pipeline::{SourceAgent, source_agent};
use crate::verify::{Outcome, Stopped, with_retries};

/// How an agent reaches a Kustomer user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MapsBy {
    /// Looked up by this email (its own, or the one `[users]` gives it).
    Email,
    /// A Kustomer user id from `[users]`: used as it is, never looked up.
    UserId,
    /// No email and no `[users]` entry: it can never map, and always falls back.
    Nothing,
}

/// One distinct agent and what the valid rows make of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SeenAgent {
    /// The email looked up, the `[users]` id, or (unmappable) the text as the source wrote
    /// it: as the import's summary names it.
    pub agent: String,
    pub maps_by: MapsBy,
    /// Messages and notes it wrote.
    pub items: u64,
    /// Conversations assigned to it.
    pub conversations: u64,
    /// With `--check-users`: the user it maps to (a `[users]` id is its own), null for
    /// none (its items fall back to `--default-author` or to no author, its conversations
    /// go without it). Absent when users were not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Option<String>>,
}

impl SeenAgent {
    /// Whether the check found no user for it (or it can never have one).
    pub fn without_user(&self) -> bool {
        self.maps_by == MapsBy::Nothing || self.user == Some(None)
    }
}

/// The distinct agents of the rows read so far.
#[derive(Debug, Default)]
pub struct AgentTally {
    by_hand: UsersTable,
    agents: BTreeMap<(MapsBy, String), SeenAgent>,
}

impl AgentTally {
    /// A tally that maps agents by this `[users]` table first, as the import does.
    pub fn new(by_hand: UsersTable) -> AgentTally {
        AgentTally {
            by_hand,
            agents: BTreeMap::new(),
        }
    }

    /// Counts the agents a valid row's conversation is assigned to, each once.
    pub fn note_assignees(&mut self, conversation: &ConversationBody) {
        let Some(Value::Array(assignees)) = conversation.extra.get("assignedUsers") else {
            return;
        };
        let mut counted: Vec<(MapsBy, String)> = Vec::with_capacity(assignees.len());
        for assignee in assignees {
            let key = self.key_of(assignee);
            if !counted.contains(&key) {
                self.entry(key.clone()).conversations += 1;
                counted.push(key);
            }
        }
    }

    /// Counts the items each author of a valid row's thread wrote (as
    /// [`crate::history::store::Pages::authors`] reads them).
    pub fn note_authors(&mut self, authors: Vec<(Value, u64)>) {
        for (author, items) in authors {
            let key = self.key_of(&author);
            self.entry(key).items += items;
        }
    }

    /// Every distinct agent: those looked up by email first, then `[users]` ids, then the
    /// unmappable, each group in order of its name.
    pub fn agents(&self) -> impl Iterator<Item = &SeenAgent> {
        self.agents.values()
    }

    pub fn into_agents(self) -> Vec<SeenAgent> {
        self.agents.into_values().collect()
    }

    fn key_of(&self, source: &Value) -> (MapsBy, String) {
        match source_agent(&self.by_hand, source) {
            SourceAgent::User(UserRef::Email(email)) => (MapsBy::Email, email),
            SourceAgent::User(UserRef::Id(id)) => (MapsBy::UserId, id),
            SourceAgent::Unmappable(shown) => (MapsBy::Nothing, shown),
        }
    }

    fn entry(&mut self, (maps_by, agent): (MapsBy, String)) -> &mut SeenAgent {
        self.agents
            .entry((maps_by, agent.clone()))
            .or_insert_with(|| SeenAgent {
                agent,
                maps_by,
                items: 0,
                conversations: 0,
                user: None,
            })
    }

    /// `--check-users`: looks each agent with an email up once, in order, and fills in
    /// every agent's `user`. Stops at a refused key, a refused lookup, or failures past the
    /// retries; the agents looked up before keep what was found.
    pub async fn check_users(&mut self, client: &KustomerClient) -> Result<(), CheckStopped> {
        let backoff = Backoff::default();
        for agent in self.agents.values_mut() {
            agent.user = match agent.maps_by {
                MapsBy::UserId => Some(Some(agent.agent.clone())),
                MapsBy::Nothing => Some(None),
                MapsBy::Email => {
                    let found = with_retries(&backoff, || client.find_user(&agent.agent)).await;
                    Some(
                        match found.map_err(|Stopped(error)| CheckStopped::Api(error))? {
                            Outcome::Held(user) => Some(user),
                            Outcome::Absent => None,
                            Outcome::Refused(words) => {
                                return Err(CheckStopped::Refused {
                                    agent: agent.agent.clone(),
                                    words,
                                });
                            }
                        },
                    )
                }
            };
        }
        Ok(())
    }
}

/// Why `--check-users` stopped before every agent was looked up.
#[derive(Debug, thiserror::Error)]
pub enum CheckStopped {
    /// The key was refused, or the API could not be read within the retries.
    #[error("{0}")]
    Api(ApiError),
    /// The API refused the lookup itself (a 4xx other than for the key).
    #[error("the users lookup of {agent} was refused ({words})")]
    Refused { agent: String, words: String },
}

impl CheckStopped {
    /// Whether it was the key the API refused (401/403).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, CheckStopped::Api(ApiError::Unauthorized { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(toml: &str) -> UsersTable {
        UsersTable::parse(&toml.parse::<toml::Table>().unwrap()).unwrap()
    }

    #[test]
    fn agents_are_counted_once_each_by_the_imports_rule() {
        let mut tally = AgentTally::new(table(
            "\"Support Bot\" = \"5f3a9c0e1b2d4c6a8e0f1a2b\"\n\"Cy Agent\" = \"cy@x.io\"",
        ));
        tally.note_authors(vec![
            (json!("Ann@X.io"), 2),
            (json!("cy agent"), 1),
            (json!("Support Bot"), 3),
            (json!("Dee"), 1),
        ]);
        tally.note_authors(vec![(json!("ann@x.io"), 1), (json!(7), 1)]);
        let plan = |assignees: Value| ConversationBody {
            extra: json!({ "assignedUsers": assignees })
                .as_object()
                .unwrap()
                .clone(),
            ..ConversationBody::default()
        };
        tally.note_assignees(&plan(json!(["ann@x.io", "ANN@x.io", "Cy@X.io"])));
        tally.note_assignees(&plan(json!(["Dee"])));
        let seen: Vec<(MapsBy, &str, u64, u64)> = tally
            .agents()
            .map(|a| (a.maps_by, a.agent.as_str(), a.items, a.conversations))
            .collect();
        assert_eq!(
            seen,
            [
                (MapsBy::Email, "ann@x.io", 3, 1),
                (MapsBy::Email, "cy@x.io", 1, 1),
                (MapsBy::UserId, "5f3a9c0e1b2d4c6a8e0f1a2b", 3, 0),
                (MapsBy::Nothing, "7", 1, 0),
                (MapsBy::Nothing, "Dee", 1, 1),
            ]
        );
    }
}
