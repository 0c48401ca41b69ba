//! Which source column feeds which field, told before any row is read: what `validate` and
//! `import` show first, the check that a file's columns mean something to the mapping (a
//! file none of whose columns the default mapping knows would fail every row), the columns
//! whose names are close to a default one (`Ticket Subject` for `subject`), and the starter
//! mapping file `mapping init` writes from a file's columns.

use super::default::{close_defaults, default_field, normalize};
use super::{Mapping, MappingFile};

/// How a mapping uses the columns of one CSV header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnUse {
    /// (column, field) pairs in the header's order; a field fed by a template appears
    /// once per column it reads.
    pub fed: Vec<(String, String)>,
    /// The columns nothing reads, in the header's order.
    pub unused: Vec<String>,
    /// Unused columns whose name is close to a default column: (column, default column,
    /// the field it would feed). Only for the default mapping.
    pub close: Vec<(String, &'static str, &'static str)>,
}

/// The customer fields that identify or name a customer: a file that feeds none of them
/// has no customer the default mapping can make.
const CUSTOMER_FIELDS: [&str; 4] = [
    "customer.externalId",
    "customer.name",
    "customer.emails",
    "customer.phones",
];

impl ColumnUse {
    /// Whether some column feeds a customer's externalId, name, emails or phones.
    pub fn feeds_a_customer(&self) -> bool {
        self.fed
            .iter()
            .any(|(_, field)| CUSTOMER_FIELDS.contains(&field.as_str()))
    }
}

impl Mapping {
    /// How this mapping uses `headers` (a CSV header row, trimmed).
    pub fn column_use(&self, headers: &[String]) -> ColumnUse {
        match self {
            Mapping::Default => default_use(headers),
            Mapping::File(file) => file_use(file, headers),
            // The preset reads JSON tickets, never a CSV header (config refuses CSV inputs).
            Mapping::Zendesk(_) => ColumnUse {
                unused: headers.to_vec(),
                ..ColumnUse::default()
            },
        }
    }
}

fn default_use(headers: &[String]) -> ColumnUse {
    let mut seen_fields: Vec<&str> = Vec::new();
    let mut columns = ColumnUse::default();
    for header in headers {
        match default_field(header) {
            // The first column of a field feeds it; a later one is not read.
            Some(field) if !seen_fields.contains(&field) => {
                seen_fields.push(field);
                columns.fed.push((header.clone(), field.to_string()));
            }
            _ => {
                if let Some((alias, field)) = close_defaults(&normalize(header)) {
                    columns.close.push((header.clone(), alias, field));
                }
                columns.unused.push(header.clone());
            }
        }
    }
    columns
}

fn file_use(file: &MappingFile, headers: &[String]) -> ColumnUse {
    let fields = file.field_columns();
    let mut columns = ColumnUse::default();
    for header in headers {
        let feeding: Vec<&String> = fields
            .iter()
            .filter(|(_, read)| read.contains(&header.as_str()))
            .map(|(field, _)| field)
            .collect();
        if feeding.is_empty() {
            columns.unused.push(header.clone());
        }
        for field in feeding {
            columns.fed.push((header.clone(), field.clone()));
        }
    }
    columns
}

/// What `mapping init` knows of the file besides its columns.
#[derive(Clone, Debug)]
pub struct StarterInput<'a> {
    /// The file as the user named it, for the header comment.
    pub file: &'a str,
    pub headers: &'a [String],
    /// The delimiter used (sniffed or given).
    pub delimiter: u8,
    /// The encoding to write into `[csv]`, when the file is not UTF-8.
    pub encoding: Option<&'static str>,
}

/// A starter mapping file (TOML) for a file's columns: every column listed, the likely
/// matches filled in, the rest commented with what they could feed, for the user to edit.
pub fn starter_mapping(input: &StarterInput) -> String {
    let quote = |text: &str| toml::Value::String(text.to_string()).to_string();
    let guesses = guess_fields(input.headers);
    let assigned = |field: &str| -> Vec<&str> {
        guesses
            .iter()
            .filter(|(_, guess)| *guess == Some(field))
            .map(|(column, _)| column.as_str())
            .collect()
    };
    let mut text = format!(
        "# A mapping for {}, written by `kustomer-import mapping init`.\n\
         # Every column of the file is named below: the likely matches are filled in, the\n\
         # rest are commented. Edit it (see README \"Mapping files\"), then check it with\n\
         #   kustomer-import validate {} --mapping THIS-FILE\n",
        input.file, input.file
    );
    for (section, fields) in [
        ("customer", ["externalId", "name", "emails", "phones"]),
        ("conversation", ["externalId", "name", "channel", "status"]),
    ] {
        text.push_str(&format!("\n[{section}]\n"));
        for field in fields {
            let path = format!("{section}.{field}");
            let columns = assigned(&path);
            let list = matches!(field, "emails" | "phones");
            match (columns.as_slice(), list) {
                ([], _) => text.push_str(&format!("# {field} = \"...\"\n")),
                (columns, true) => {
                    let items: Vec<String> = columns.iter().map(|c| quote(c)).collect();
                    text.push_str(&format!("{field} = [{}]\n", items.join(", ")));
                }
                ([column], false) => text.push_str(&format!("{field} = {}\n", quote(column))),
                // Two columns for one text field: a first and a last name, most often.
                (columns, false) => {
                    let pieces: Vec<String> = columns.iter().map(|c| format!("{{{c}}}")).collect();
                    text.push_str(&format!("{field} = {}\n", quote(&pieces.join(" "))));
                }
            }
        }
        if section == "conversation" && !assigned("conversation.status").is_empty() {
            text.push_str(
                "\n# The status must be open, snoozed or done: map the export's words here.\n\
                 [conversation.values.status]\n\
                 # solved = \"done\"\n\
                 # closed = \"done\"\n\
                 # pending = \"snoozed\"\n\
                 # new = \"open\"\n",
            );
        }
    }
    let unused: Vec<&String> = guesses
        .iter()
        .filter(|(_, guess)| guess.is_none())
        .map(|(column, _)| column)
        .collect();
    if !unused.is_empty() {
        text.push_str(
            "\n# Columns nothing reads yet. Map one under [customer.extra] or\n\
             # [conversation.extra] (importedAt, createdAt, tags, priority, direction; see\n\
             # README), e.g.  importedAt = \"{Created At}\"  or  priority = \"Priority\":\n",
        );
        for column in unused {
            text.push_str(&format!("#   {}\n", quote(column)));
        }
    }
    text.push_str("\n[csv]\n");
    let delimiter = match input.delimiter {
        b'\t' => "tab".to_string(),
        other => (other as char).to_string(),
    };
    text.push_str(&format!("delimiter = {}\n", quote(&delimiter)));
    match input.encoding {
        Some(encoding) => text.push_str(&format!(
            "encoding = {}   # guessed: the file is not UTF-8\n",
            quote(encoding)
        )),
        None => text.push_str("# encoding = \"windows-1252\"   # the file reads as UTF-8\n"),
    }
    text
}

/// The field each column most likely feeds: the default columns, then the words
/// help-desk exports use (`Ticket ID`, `Requester Email`, `Via`, ...). A field taken by an
/// earlier column is not given again, but for lists (emails, phones) and names.
fn guess_fields(headers: &[String]) -> Vec<(String, Option<&'static str>)> {
    let mut taken: Vec<&'static str> = Vec::new();
    headers
        .iter()
        .map(|header| {
            let guess = default_field(header).or_else(|| likely_field(&normalize(header)));
            let many = matches!(
                guess,
                Some("customer.emails" | "customer.phones" | "customer.name")
            );
            let guess = guess.filter(|field| many || !taken.contains(field));
            if let Some(field) = guess {
                taken.push(field);
            }
            (header.clone(), guess)
        })
        .collect()
}

/// Words of help-desk exports and the field they usually mean, for a normalised name.
fn likely_field(name: &str) -> Option<&'static str> {
    let ends = |words: &[&str]| words.iter().any(|word| name.ends_with(word));
    Some(
        if ends(&["ticketid", "caseid", "ticketnumber", "casenumber"]) {
            "conversation.externalId"
        } else if ends(&["requesterid", "contactid", "userid", "clientid"]) {
            "customer.externalId"
        } else if name.contains("email") {
            "customer.emails"
        } else if name.contains("phone") || name.contains("mobile") {
            "customer.phones"
        } else if ends(&[
            "firstname",
            "first",
            "lastname",
            "last",
            "fullname",
            "requester",
        ]) {
            "customer.name"
        } else if ends(&["subject", "title"]) {
            "conversation.name"
        } else if ends(&["status", "state"]) {
            "conversation.status"
        } else if ends(&["channel", "via", "source"]) {
            "conversation.channel"
        } else {
            return None;
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn headers(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn the_default_mapping_tells_what_feeds_what_and_what_is_close() {
        let used =
            Mapping::Default.column_use(&headers(&["Email", "Ticket Subject", "Status", "email"]));
        assert_eq!(
            used.fed,
            vec![
                ("Email".to_string(), "customer.emails".to_string()),
                ("Status".to_string(), "conversation.status".to_string()),
            ]
        );
        assert_eq!(used.unused, headers(&["Ticket Subject", "email"]));
        assert_eq!(
            used.close,
            vec![("Ticket Subject".to_string(), "subject", "conversation.name")]
        );
        assert!(used.feeds_a_customer());
    }

    #[test]
    fn a_zendesk_style_header_feeds_no_customer() {
        let used = Mapping::Default.column_use(&headers(&[
            "Ticket ID",
            "Requester",
            "Requester Email",
            "Subject",
        ]));
        assert!(!used.feeds_a_customer());
        assert_eq!(used.fed.len(), 1, "only Subject");
        assert!(
            used.close.iter().any(
                |(column, _, field)| column == "Requester Email" && *field == "customer.emails"
            )
        );
    }

    #[test]
    fn a_starter_mapping_fills_in_the_likely_columns_and_parses() {
        let names = headers(&[
            "Ticket ID",
            "Subject",
            "Via",
            "Ticket Status",
            "Created At",
            "Requester ID",
            "Requester First",
            "Requester Last",
            "Requester Email",
            "Requester Alt Email",
            "Requester Phone",
            "Priority",
        ]);
        let text = starter_mapping(&StarterInput {
            file: "helpdesk.csv",
            headers: &names,
            delimiter: b';',
            encoding: Some("windows-1252"),
        });
        for line in [
            "externalId = \"Requester ID\"",
            "name = \"{Requester First} {Requester Last}\"",
            "emails = [\"Requester Email\", \"Requester Alt Email\"]",
            "externalId = \"Ticket ID\"",
            "channel = \"Via\"",
            "status = \"Ticket Status\"",
            "#   \"Created At\"",
            "delimiter = \";\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        let file = MappingFile::parse(&text).unwrap();
        assert_eq!(file.csv.delimiter, Some(b';'));
        let used = Mapping::File(Arc::new(file)).column_use(&names);
        assert_eq!(used.unused, headers(&["Created At", "Priority"]));
    }

    #[test]
    fn a_mapping_file_tells_each_column_its_fields() {
        let file = MappingFile::parse(
            r#"
            [customer]
            externalId = "Requester ID"
            name = "{First} {Last}"
            [conversation]
            name = "Subject"
            "#,
        )
        .unwrap();
        let used = Mapping::File(Arc::new(file)).column_use(&headers(&[
            "Requester ID",
            "First",
            "Last",
            "Subject",
            "Via",
        ]));
        assert_eq!(used.fed.len(), 4);
        assert!(
            used.fed
                .contains(&("Last".to_string(), "customer.name".to_string()))
        );
        assert_eq!(used.unused, headers(&["Via"]));
        assert!(used.close.is_empty());
    }
}
