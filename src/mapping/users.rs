//! Source agents as a mapping names them: this module owns how a hand-mapped Kustomer user
//! is written in a mapping file's `[users]` table (`"source agent" = "kustomer email"` or
//! `= "<24-hex Kustomer user id>"`), how an id is told from an email (exactly 24 hex
//! digits, Kustomer's ids, is an id; text with an `@` that is an email address is an email;
//! anything else is a mistake in the file). The lookups themselves are the pipeline's
//! (`pipeline::agents`): mapping stays pure.

use std::collections::HashMap;

use super::checks::is_valid_email;

/// A Kustomer user as a source agent is mapped to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserRef {
    /// Looked up by this email (lower-cased), once per checkpoint.
    Email(String),
    /// A Kustomer user id, used as it is and never looked up.
    Id(String),
}

impl UserRef {
    /// A hand-mapped value: 24 hex digits are an id, an email address an email; None for
    /// anything else.
    pub fn parse(text: &str) -> Option<UserRef> {
        let text = text.trim();
        if is_user_id(text) {
            return Some(UserRef::Id(text.to_string()));
        }
        (text.contains('@') && is_valid_email(text)).then(|| UserRef::Email(text.to_lowercase()))
    }
}

/// Whether `text` has the shape of a Kustomer id: exactly 24 hex digits.
pub fn is_user_id(text: &str) -> bool {
    text.len() == 24 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The key a source agent is matched by: trimmed, in lower case (emails are compared
/// without regard to case; so are the names of the table).
pub fn agent_key(text: &str) -> String {
    text.trim().to_lowercase()
}

/// A mapping file's `[users]` table: source agent to Kustomer user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsersTable {
    by_agent: HashMap<String, UserRef>,
}

impl UsersTable {
    /// Reads `[users]`; the error names the entry and says what it must be.
    pub fn parse(section: &toml::Table) -> Result<UsersTable, String> {
        let mut by_agent = HashMap::new();
        for (agent, value) in section {
            let at = format!("users.{agent:?}");
            let text = value.as_str().ok_or_else(|| {
                format!("{at} must be text: a Kustomer user's email or its 24-hex id")
            })?;
            let user = UserRef::parse(text).ok_or_else(|| {
                format!(
                    "{at} = {text:?} is neither an email nor a Kustomer user id (24 hex \
                     digits)"
                )
            })?;
            if agent.trim().is_empty() {
                return Err(format!("{at}: a source agent cannot be empty"));
            }
            if by_agent.insert(agent_key(agent), user).is_some() {
                return Err(format!(
                    "{at} is given twice (source agents are matched without regard to case)"
                ));
            }
        }
        Ok(UsersTable { by_agent })
    }

    /// The user this source agent is mapped to by hand, if it is.
    pub fn get(&self, agent: &str) -> Option<&UserRef> {
        self.by_agent.get(&agent_key(agent))
    }

    pub fn is_empty(&self) -> bool {
        self.by_agent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_24_hex_digits_and_an_email_an_address() {
        assert_eq!(
            UserRef::parse(" 5f3a9c0e1b2d4c6a8e0f1a2b "),
            Some(UserRef::Id("5f3a9c0e1b2d4c6a8e0f1a2b".into()))
        );
        assert_eq!(
            UserRef::parse("Cy@Example.com"),
            Some(UserRef::Email("cy@example.com".into()))
        );
        for neither in [
            "Cy",
            "5f3a9c0e1b2d4c6a8e0f1a2",
            "5f3a9c0e1b2d4c6a8e0f1a2g",
            "",
        ] {
            assert_eq!(UserRef::parse(neither), None, "{neither}");
        }
    }
}
