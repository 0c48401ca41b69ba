//! Rows: every input, read record by record, mapped to a plan and given its row key. This
//! is the one path from a file to a row, shared by `import` (which sends the rows) and
//! `validate` (which only counts them), so the two can never disagree on what a row is.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use crate::history::store::ThreadSize;
use crate::input::{InputError, InputSource, OpenInput, RecordResult, Records, SourceFields};
use crate::mapping::{InputMapping, Mapping, MappingConfigError, MappingError, Plan};
use crate::rowkey::{RowKeys, derived_conversation_id};
use crate::tally::TallyError;

/// Where a row comes from, as the checkpoint and the errors file name it.
#[derive(Clone, Debug)]
pub struct RowOrigin {
    pub file: Arc<str>,
    pub line: u64,
    pub key: String,
}

/// The source record, kept until the row settles in case it must go to the errors file.
#[derive(Clone, Debug)]
pub enum Original {
    Fields(SourceFields),
    Raw(Value),
}

impl Original {
    /// The record as one JSON value; what was read raw is lent, not copied (a refused
    /// record may be megabytes).
    pub fn to_json(&self) -> Cow<'_, Value> {
        match self {
            Original::Fields(fields) => Cow::Owned(fields.to_json()),
            Original::Raw(value) => Cow::Borrowed(value),
        }
    }
}

/// One row read: where it is, what it was, and its plan or why it has none.
#[derive(Debug)]
pub struct ReadRow {
    pub origin: RowOrigin,
    pub original: Original,
    pub plan: Result<Plan, MappingError>,
    /// The row's thread as staged in the run's thread store, under the row's key (none for
    /// a row without history).
    pub thread: ThreadSize,
}

/// Why reading stopped before the end (the run stops with exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{input}: {source}")]
    Mapping {
        input: String,
        source: MappingConfigError,
    },
    #[error(transparent)]
    Scratch(#[from] TallyError),
    #[error(
        "{input}: the default mapping reads no customer from its columns ({}): it knows \
         external_id, name, email and phone (see README \"Input\"). Give a mapping file with \
         --mapping; `kustomer-import mapping init {input}` writes a starter one from these \
         columns",
        quoted(columns)
    )]
    NoCustomerColumns { input: String, columns: Vec<String> },
}

/// How rows are read.
#[derive(Clone, Debug, Default)]
pub struct ReadSettings {
    pub mapping: Mapping,
    /// Give conversations without a source externalId one derived from the row key.
    pub derive_conversation_ids: bool,
    /// Stop after this many rows with a valid plan (`import --limit`).
    pub limit: Option<u64>,
}

/// Opens every input, once, checks that the mapping finds its columns in every CSV header
/// and that the default mapping reads a customer from it, and tells which column feeds
/// which field: all before anything is sent. The inputs opened go on to the [`RowReader`]
/// as they are, since some can be read only once (stdin, a FIFO, `<(...)`).
pub fn open_inputs(
    inputs: Vec<InputSource>,
    mapping: &Mapping,
) -> Result<Vec<OpenInput>, ReadError> {
    inputs
        .into_iter()
        .map(|input| {
            let input = input.open()?;
            mapping
                .for_input(input.csv_headers())
                .map_err(|source| ReadError::Mapping {
                    input: input.name().to_string(),
                    source,
                })?;
            if let Some(headers) = input.csv_headers() {
                tell_columns(input.name(), mapping, headers)?;
            }
            Ok(input)
        })
        .collect()
}

/// Says which column of a CSV input feeds which field, which columns nothing reads, and
/// which of those look like a default column; refuses an input from which the default
/// mapping reads no customer (every row would fail for it).
fn tell_columns(input: &str, mapping: &Mapping, headers: &[String]) -> Result<(), ReadError> {
    let used = mapping.column_use(headers);
    if matches!(mapping, Mapping::Default) && !used.feeds_a_customer() {
        return Err(ReadError::NoCustomerColumns {
            input: input.to_string(),
            columns: headers.to_vec(),
        });
    }
    let width = used
        .fed
        .iter()
        .map(|(c, _)| c.chars().count())
        .max()
        .unwrap_or(0);
    let mut lines = format!("{input}: which column feeds which field");
    for (column, field) in &used.fed {
        lines.push_str(&format!("\n  {column:<width$}  -> {field}"));
    }
    if !used.unused.is_empty() {
        lines.push_str(&format!("\n  not read: {}", quoted(&used.unused)));
    }
    tracing::info!("{lines}");
    for (column, alias, field) in &used.close {
        tracing::warn!(
            "{input}: the column {column:?} is not read, and looks like `{alias}` ({field}): \
             rename it, or map it in a mapping file (--mapping; `kustomer-import mapping \
             init {input}` writes a starter one)"
        );
    }
    Ok(())
}

fn quoted(columns: &[String]) -> String {
    columns
        .iter()
        .map(|column| format!("{column:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of every input, in order. After an error it yields nothing more.
pub struct RowReader {
    inputs: std::vec::IntoIter<OpenInput>,
    settings: ReadSettings,
    current: Option<InputRows>,
    keys: RowKeys,
    valid_rows: u64,
    failed: bool,
}

/// The input being read.
struct InputRows {
    file: Arc<str>,
    records: Records,
    mapping: InputMapping,
}

impl RowReader {
    pub fn new(inputs: Vec<OpenInput>, settings: ReadSettings) -> RowReader {
        RowReader {
            inputs: inputs.into_iter(),
            settings,
            current: None,
            keys: RowKeys::default(),
            valid_rows: 0,
            failed: false,
        }
    }

    /// Whether reading stopped at `limit` valid rows (the rest is left unread).
    pub fn limit_reached(&self) -> bool {
        self.settings
            .limit
            .is_some_and(|limit| self.valid_rows >= limit)
    }

    /// Opens the next input; None when every input has been read.
    fn open_next(&mut self) -> Option<Result<InputRows, ReadError>> {
        let input = self.inputs.next()?;
        let file: Arc<str> = Arc::from(input.name());
        let open = || -> Result<InputRows, ReadError> {
            let records = input.into_records()?;
            let mapping = self
                .settings
                .mapping
                .for_input(records.csv_headers())
                .map_err(|source| ReadError::Mapping {
                    input: file.to_string(),
                    source,
                })?;
            Ok(InputRows {
                file: Arc::clone(&file),
                records,
                mapping,
            })
        };
        Some(open())
    }
}

impl Iterator for RowReader {
    type Item = Result<ReadRow, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed
            || self
                .settings
                .limit
                .is_some_and(|limit| self.valid_rows >= limit)
        {
            return None;
        }
        loop {
            let open = match &mut self.current {
                Some(open) => open,
                None => match self.open_next()? {
                    Ok(open) => self.current.insert(open),
                    Err(error) => {
                        self.failed = true;
                        return Some(Err(error));
                    }
                },
            };
            match open.records.next() {
                None => self.current = None,
                Some(Err(error)) => {
                    self.failed = true;
                    return Some(Err(error.into()));
                }
                Some(Ok(record)) => {
                    let file = Arc::clone(&open.file);
                    let row = read_row(
                        &mut self.keys,
                        &self.settings,
                        file,
                        record,
                        &mut open.mapping,
                    );
                    match &row {
                        Ok(row) if row.plan.is_ok() => self.valid_rows += 1,
                        Ok(_) => {}
                        Err(_) => self.failed = true,
                    }
                    return Some(row.map_err(ReadError::from));
                }
            }
        }
    }
}

/// Maps one record and gives it its key (and, when asked, its derived conversation id).
fn read_row(
    keys: &mut RowKeys,
    settings: &ReadSettings,
    file: Arc<str>,
    record: RecordResult,
    mapping: &mut InputMapping,
) -> Result<ReadRow, TallyError> {
    let record = match record {
        Ok(record) => record,
        Err(bad) => {
            return Ok(ReadRow {
                origin: RowOrigin {
                    file,
                    line: bad.line,
                    key: keys.for_unmapped(&bad.raw)?,
                },
                plan: Err(match bad.field {
                    Some(field) => MappingError::new(&field, bad.rule, bad.reason),
                    None => MappingError::record(bad.rule, format!("the record {}", bad.reason)),
                }),
                original: Original::Raw(bad.raw),
                thread: ThreadSize::default(),
            });
        }
    };
    let plan = mapping.map(&record.fields, &file, record.line);
    let original = Original::Fields(record.fields);
    let (key, plan) = match plan {
        Ok(mut plan) => {
            let key = keys.for_plan(&plan)?;
            let plan = if key.repeats_source_id {
                Err(MappingError::new(
                    "conversation.externalId",
                    "repeats an earlier row's conversation id",
                    "repeats the conversation id of an earlier row",
                ))
            } else {
                if settings.derive_conversation_ids
                    && let Some(conversation) = &mut plan.conversation
                    && conversation.external_id.is_none()
                {
                    conversation.external_id = Some(derived_conversation_id(&key.key));
                }
                Ok(plan)
            };
            (key.key, plan)
        }
        Err(error) => (keys.for_unmapped(&original.to_json())?, Err(error)),
    };
    Ok(ReadRow {
        origin: RowOrigin {
            file,
            line: record.line,
            key,
        },
        original,
        plan,
        thread: ThreadSize::default(),
    })
}
