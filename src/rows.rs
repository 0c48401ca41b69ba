//! Rows: every input, read record by record, mapped to a plan and given its row key. This
//! is the one path from a file to a row, shared by `import` (which sends the rows) and
//! `validate` (which only counts them), so the two can never disagree on what a row is.
//! That includes the history's pre-pass ([`RowReader::stage_history`]: a messages file, or
//! rows that are messages read once as items) and, for rows that are messages, which line
//! of a conversation is its row (`GroupKey`).

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use crate::history::ItemKind;
use crate::history::child::{ChildCounts, ChildError, UNPLACED, stage_child_file};
use crate::history::store::{Orphan, Staged, Stager, StoreError, ThreadSize, ThreadStore};
use crate::input::{InputError, InputSource, OpenInput, RecordResult, Records, SourceFields};
use crate::mapping::{InputMapping, Mapping, MappingConfigError, MappingError, MappingFile, Plan};
use crate::rowkey::{BoundKey, KeyColumns};
use crate::rowkey::{RowKeys, derived_conversation_id, derived_customer_id};
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
    #[error(transparent)]
    History(#[from] StoreError),
    #[error("{input}: {source}")]
    Mapping {
        input: String,
        source: MappingConfigError,
    },
    #[error("{input}: --key-columns: {reason}")]
    KeyColumns { input: String, reason: String },
    #[error(transparent)]
    Scratch(#[from] TallyError),
    #[error(
        "{input}: --rows-are-messages reads an input twice, and this one was opened to be \
         read once"
    )]
    ReadOnce { input: String },
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
    /// Give customers with a name and no externalId, email or phone one derived from the
    /// row key (`--no-derived-customer-ids` refuses them instead).
    pub derive_customer_ids: bool,
    /// Stop after this many rows with a valid plan (`import --limit`).
    pub limit: Option<u64>,
    /// The run's thread store, which every row's thread is staged in. The run's setup
    /// creates it when it will read threads back (`import`: `ThreadStore::create()`, and its
    /// `pages()` for the pipeline); None lets the reader create one on the first item it
    /// must stage (`validate`, which only counts), with no claims before it.
    pub history: Option<Arc<ThreadStore>>,
    /// `--messages FILE`: a child file of messages and notes, staged before the rows
    /// ([`RowReader::stage_history`]).
    pub child: Option<InputSource>,
    /// `--rows-are-messages`: each input row is one message or note, its conversation's
    /// columns repeated. Every input is read twice: first as its own child file, then as
    /// rows, of which only each conversation's first line is one (`GroupKey`).
    pub rows_are_messages: bool,
    /// The columns that identify a row's conversation when it has no source id
    /// (`--key-columns`, a mapping file's `[conversation] key`); None: such a row is keyed
    /// by its content.
    pub key_columns: Option<KeyColumns>,
}

/// Opens every input, once, checks that the mapping finds its columns in every CSV header
/// and that the default mapping reads a customer from it, and tells which column feeds
/// which field: all before anything is sent. The inputs opened go on to the [`RowReader`]
/// as they are, since some can be read only once (stdin, a FIFO, `<(...)`); with
/// `rows_are_messages` each is read twice, so such a stream is first copied to TMPDIR
/// ([`InputSource::open_rereadable`]) and a header must hold the items' columns too.
pub fn open_inputs(
    inputs: Vec<InputSource>,
    settings: &ReadSettings,
) -> Result<Vec<OpenInput>, ReadError> {
    let mapping = &settings.mapping;
    inputs
        .into_iter()
        .map(|input| {
            let input = if settings.rows_are_messages {
                input.open_rereadable()?
            } else {
                input.open()?
            };
            let mapping_error = |source| ReadError::Mapping {
                input: input.name().to_string(),
                source,
            };
            mapping
                .for_input(input.csv_headers())
                .map_err(mapping_error)?;
            if settings.rows_are_messages
                && let Mapping::File(file) = mapping
            {
                file.bind_items(input.csv_headers(), true)
                    .map_err(mapping_error)?;
            }
            if let Some(headers) = input.csv_headers() {
                tell_columns(
                    input.name(),
                    mapping,
                    settings.key_columns.as_ref(),
                    headers,
                )?;
            }
            bind_key(settings, input.name(), input.csv_headers())?;
            Ok(input)
        })
        .collect()
}

/// The key columns of the run in one input, if it has any.
fn bind_key(
    settings: &ReadSettings,
    input: &str,
    csv_headers: Option<&Arc<Vec<String>>>,
) -> Result<Option<BoundKey>, ReadError> {
    settings
        .key_columns
        .as_ref()
        .map(|columns| columns.bind(csv_headers))
        .transpose()
        .map_err(|reason| ReadError::KeyColumns {
            input: input.to_string(),
            reason,
        })
}

/// Says which column of a CSV input feeds which field, which columns nothing reads, and
/// which of those look like a default column; refuses an input from which the default
/// mapping reads no customer (every row would fail for it).
fn tell_columns(
    input: &str,
    mapping: &Mapping,
    key: Option<&KeyColumns>,
    headers: &[String],
) -> Result<(), ReadError> {
    let mut used = mapping.column_use(headers);
    // A key column is read, for the row's key, whether or not it feeds a field.
    if let Some(key) = key {
        used.unused.retain(|column| !key.names().contains(column));
        used.close
            .retain(|(column, _, _)| !key.names().contains(column));
    }
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
    if let Some(key) = key {
        lines.push_str(&format!(
            "\n  key columns: {key} (they identify a conversation without an id)"
        ));
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
    /// Stages threads in `settings.history`; opened on the first row that needs it.
    stager: Option<Stager>,
    /// Lines of rows that are messages which were not rows: the later lines of a
    /// conversation, items of its thread.
    grouped_lines: u64,
}

/// The input being read.
struct InputRows {
    file: Arc<str>,
    records: Records,
    mapping: InputMapping,
    key: Option<BoundKey>,
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
            stager: None,
            grouped_lines: 0,
        }
    }

    /// Lines read so far that were items of a conversation read earlier, not rows of their
    /// own (`--rows-are-messages`).
    pub fn grouped_lines(&self) -> u64 {
        self.grouped_lines
    }

    /// Whether reading stopped at `limit` valid rows (the rest is left unread).
    pub fn limit_reached(&self) -> bool {
        self.settings
            .limit
            .is_some_and(|limit| self.valid_rows >= limit)
    }

    /// The run's thread store, once there is one.
    pub fn history(&self) -> Option<&Arc<ThreadStore>> {
        self.settings.history.as_ref()
    }

    /// Once every input is read: the staged threads no row claimed (a messages file's
    /// records whose conversation is in no input), each as a failed row at its first item's
    /// file and line, so they reach the errors file and the checkpoint like any bad row.
    pub fn orphans(&mut self) -> Result<Vec<ReadRow>, ReadError> {
        let Some(store) = self.settings.history.clone() else {
            return Ok(Vec::new());
        };
        self.publish()?;
        let orphans = store.pages()?.orphans()?;
        Ok(orphans.into_iter().map(orphan_row).collect())
    }

    /// Commits what was staged so the pipeline's `Pages` see it: call before handing rows
    /// over (the planner reads their threads back).
    pub fn publish(&mut self) -> Result<(), StoreError> {
        match &mut self.stager {
            Some(stager) => stager.publish(),
            None => Ok(()),
        }
    }

    fn stager(&mut self) -> Result<&mut Stager, StoreError> {
        if self.stager.is_none() {
            let store = match &self.settings.history {
                Some(store) => Arc::clone(store),
                None => Arc::clone(
                    self.settings
                        .history
                        .insert(Arc::new(ThreadStore::create()?)),
                ),
            };
            self.stager = Some(store.stager()?);
        }
        Ok(self.stager.as_mut().expect("opened above"))
    }

    /// Stages a row's thread under its key, empties `plan.thread`, and claims the key for
    /// every row with a conversation (a child file's items may be staged under it already):
    /// `row.thread` is the size of all of it. An item whose id repeats one of its thread
    /// fails the row, naming it by its kind's list and its position there among the row's
    /// items of that kind (`messages[4].externalId`); the row's thread stays claimed, so it
    /// is not reported as an orphan.
    ///
    /// The first line of a conversation grouped from rows that are messages (`grouped`)
    /// claims its thread even when the line fails: the thread is its conversation's, which
    /// is reported failed, not an orphan's.
    fn stage_thread(&mut self, row: &mut ReadRow, grouped: bool) -> Result<(), StoreError> {
        if grouped && row.plan.is_err() {
            self.stager()?.claim(&row.origin.key)?;
            return Ok(());
        }
        let Ok(plan) = &mut row.plan else {
            return Ok(());
        };
        let thread = plan.thread.take().filter(|thread| !thread.is_empty());
        if plan.conversation.is_none() || (thread.is_none() && self.settings.history.is_none()) {
            return Ok(());
        }
        let key = row.origin.key.as_str();
        let stager = self.stager()?;
        // With nothing staged (no child file, no thread yet) there is nothing to claim: a
        // claim a row costs a write, which a million rows without history need not pay.
        if thread.is_none() && !stager.holds_any() {
            return Ok(());
        }
        let mut positions = [0usize; 2];
        let mut refusal = None;
        let items = thread
            .as_ref()
            .map(|thread| thread.items(&row.origin.file, row.origin.line));
        // Each item is mapped, checked and staged before the next is read.
        for item in items.into_iter().flatten() {
            let item = match item {
                Ok(item) => item,
                Err(error) => {
                    refusal = Some(error);
                    break;
                }
            };
            let (list, position) = match item.kind {
                ItemKind::Message => ("messages", &mut positions[0]),
                ItemKind::Note => ("notes", &mut positions[1]),
            };
            let index = *position;
            *position += 1;
            if let Staged::Repeated(repeated) = stager.stage(key, &item)? {
                refusal = Some(MappingError::new(
                    &format!("{list}[{index}].externalId"),
                    "repeats an id of its thread",
                    repeated.to_string(),
                ));
                break;
            }
        }
        let claimed = stager.claim(key)?;
        row.thread = claimed.unwrap_or_default();
        if let Some(error) = refusal {
            row.plan = Err(error);
        } else if claimed.is_some()
            && let Some(failure) = stager.failure(key)?
        {
            // A record of a child file that failed its checks: the conversation must not
            // be reported complete without it.
            row.plan = Err(MappingError::new(
                "history",
                "a record of its history is refused",
                format!("{} line {}: {}", failure.file, failure.line, failure.reason),
            ));
        }
        Ok(())
    }

    /// The history's pre-pass, before any row is read: the child file of messages and notes
    /// (`--messages`), or with `rows_are_messages` every input read once as its own child
    /// file. Either way each item is staged under `conv:<its conversation's source id>`,
    /// whole, since its records may name the conversations in any order; the conversation
    /// rows then claim their threads. None when the run has neither.
    pub fn stage_history(&mut self) -> Result<Option<ChildCounts>, ReadError> {
        let Mapping::File(file) = &self.settings.mapping else {
            return Ok(None);
        };
        let file = Arc::clone(file);
        let (what, counts) = if let Some(source) = self.settings.child.take() {
            let input = source.open()?;
            let name: Arc<str> = Arc::from(input.name());
            let records = input.into_records()?;
            let counts = self.stage_items(&file, records, &name, false)?;
            ("the messages file", counts)
        } else if self.settings.rows_are_messages {
            ("the rows' messages and notes", self.stage_own_lines(&file)?)
        } else {
            return Ok(None);
        };
        tracing::info!(
            "{what}: {} records staged, {} refused, {} naming no conversation",
            counts.staged,
            counts.failed,
            counts.unplaced
        );
        Ok(Some(counts))
    }

    /// `--rows-are-messages`' first reading: every input, each line an item.
    fn stage_own_lines(&mut self, file: &Arc<MappingFile>) -> Result<ChildCounts, ReadError> {
        // Out of `self` while they are read, since staging borrows it: put back after.
        let inputs = std::mem::take(&mut self.inputs);
        let mut read = || {
            let mut total = ChildCounts::default();
            for input in inputs.as_slice() {
                let records = input.records_again().ok_or_else(|| ReadError::ReadOnce {
                    input: input.name().to_string(),
                })??;
                let name: Arc<str> = Arc::from(input.name());
                let counts = self.stage_items(file, records, &name, true)?;
                total.staged += counts.staged;
                total.failed += counts.failed;
                total.unplaced += counts.unplaced;
            }
            Ok(total)
        };
        let total = read();
        self.inputs = inputs;
        total
    }

    /// Stages the records of one input as items ([`stage_child_file`]) and publishes them.
    fn stage_items(
        &mut self,
        file: &Arc<MappingFile>,
        records: Records,
        name: &Arc<str>,
        rows_too: bool,
    ) -> Result<ChildCounts, ReadError> {
        let bound = file
            .bind_items(records.csv_headers(), rows_too)
            .map_err(|source| ReadError::Mapping {
                input: name.to_string(),
                source,
            })?;
        let stager = self.stager()?;
        stage_child_file(records, name, &bound, stager).map_err(|error| match error {
            ChildError::Input(error) => ReadError::Input(error),
            ChildError::Store(error) => ReadError::History(error),
        })
    }

    /// Opens the next input; None when every input has been read.
    fn open_next(&mut self) -> Option<Result<InputRows, ReadError>> {
        let input = self.inputs.next()?;
        let file: Arc<str> = Arc::from(input.name());
        let open = || -> Result<InputRows, ReadError> {
            let mut records = input.into_records()?;
            let mapping = self
                .settings
                .mapping
                .for_input(records.csv_headers())
                .map_err(|source| ReadError::Mapping {
                    input: file.to_string(),
                    source,
                })?;
            if mapping.reads_nested_threads() {
                records.capture_threads();
            }
            let key = bind_key(&self.settings, &file, records.csv_headers())?;
            Ok(InputRows {
                file: Arc::clone(&file),
                records,
                mapping,
                key,
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
                    let group = if self.settings.rows_are_messages {
                        match GroupKey::of(&mut self.keys, &open.mapping, &record) {
                            Ok(Some(group)) => group,
                            Ok(None) => {
                                self.grouped_lines += 1;
                                continue;
                            }
                            Err(error) => {
                                self.failed = true;
                                return Some(Err(error.into()));
                            }
                        }
                    } else {
                        GroupKey::Ungrouped
                    };
                    let grouped = matches!(group, GroupKey::First(_));
                    let mut row = read_row(&mut self.keys, &self.settings, open, record, group)
                        .map_err(ReadError::from);
                    if let Ok(read) = &mut row
                        && let Err(error) = self.stage_thread(read, grouped)
                    {
                        row = Err(error.into());
                    }
                    match &row {
                        Ok(row) if row.plan.is_ok() => self.valid_rows += 1,
                        Ok(_) => {}
                        Err(_) => self.failed = true,
                    }
                    return Some(row);
                }
            }
        }
    }
}

/// A thread no row claimed, as a row that failed for it.
fn orphan_row(orphan: Orphan) -> ReadRow {
    if orphan.thread.starts_with(UNPLACED) {
        let reason = orphan.error.unwrap_or_default();
        return ReadRow {
            origin: RowOrigin {
                file: Arc::from(orphan.file.as_str()),
                line: orphan.line,
                key: format!("orphan:{}", orphan.thread),
            },
            original: Original::Raw(serde_json::json!({ "conversation": null })),
            plan: Err(MappingError::new(
                "history.conversation",
                "names no conversation",
                reason,
            )),
            thread: ThreadSize::default(),
        };
    }
    let conversation = orphan
        .thread
        .strip_prefix("conv:")
        .unwrap_or(&orphan.thread);
    let reason = format!(
        "{} messages and {} notes name the conversation {conversation:?}, which no \
         conversation row of the run has",
        orphan.size.messages, orphan.size.notes
    );
    ReadRow {
        origin: RowOrigin {
            file: Arc::from(orphan.file.as_str()),
            line: orphan.line,
            key: format!("orphan:{}", orphan.thread),
        },
        original: Original::Raw(serde_json::json!({ "conversation": conversation })),
        plan: Err(MappingError::new(
            "history.conversation",
            "names no conversation of the run",
            reason,
        )),
        thread: ThreadSize::default(),
    }
}

/// What a line of rows that are messages (`--rows-are-messages`) is as a row, once every
/// line's item is staged: its conversation's first line in the run is the conversation's
/// row, keyed `conv:<conversation.externalId>` whichever line that is; a later line is not
/// a row (its item is in the thread already); a line without a conversation id cannot be
/// grouped and fails as a row of its own. Its conversation's and customer's columns are
/// read from the first line only: where lines disagree, the first wins.
#[derive(Debug, PartialEq)]
enum GroupKey {
    /// Not grouped: rows are conversations, or the line cannot be read at all (it fails).
    Ungrouped,
    /// The first line of its conversation, which is a row under this key.
    First(String),
    /// No conversation id: the line fails for it.
    Unplaced(MappingError),
}

impl GroupKey {
    /// The line's part; None for a later line of a conversation seen before.
    fn of(
        keys: &mut RowKeys,
        mapping: &InputMapping,
        record: &RecordResult,
    ) -> Result<Option<GroupKey>, TallyError> {
        let Ok(record) = record else {
            return Ok(Some(GroupKey::Ungrouped));
        };
        let id = match mapping.conversation_id(&record.fields) {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Ok(Some(GroupKey::Unplaced(MappingError::new(
                    "conversation.externalId",
                    "no conversation id",
                    "is empty: with --rows-are-messages a row is a message of the \
                     conversation this id names, and without it the row belongs to none",
                ))));
            }
            Err(error) => return Ok(Some(GroupKey::Unplaced(error))),
        };
        Ok(keys.for_grouped(&id)?.map(GroupKey::First))
    }
}

/// Maps one record and gives it its key (and, when asked, its derived conversation id);
/// `group` is what it is as a line of rows that are messages.
fn read_row(
    keys: &mut RowKeys,
    settings: &ReadSettings,
    input: &mut InputRows,
    record: RecordResult,
    group: GroupKey,
) -> Result<ReadRow, TallyError> {
    let file = Arc::clone(&input.file);
    let mapping = &mut input.mapping;
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
    let (plan, key) = match group {
        GroupKey::Ungrouped => (mapping.map(&record.fields, record.threads), None),
        GroupKey::First(key) => (mapping.map(&record.fields, record.threads), Some(key)),
        GroupKey::Unplaced(error) => (Err(error), None),
    };
    let (key, plan) = match (key, plan) {
        // A grouped conversation's key is its id, whether its first line maps or fails.
        (Some(key), plan) => (key, plan),
        (None, Ok(plan)) => key_a_plan(keys, settings, input.key.as_ref(), &record.fields, plan)?,
        (None, Err(error)) => (keys.for_unmapped(&record.fields.to_json())?, Err(error)),
    };
    // A thread list's place holds a marker, not the list (see `THREAD_MARKER`).
    let original = Original::Fields(record.fields);
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

/// A mapped row's key, by its conversation's source id, else its key columns' values
/// (`bound`), else its content; and its plan, refused when the key repeats an earlier
/// row's (or its key columns are all empty), else given its derived ids.
fn key_a_plan(
    keys: &mut RowKeys,
    settings: &ReadSettings,
    bound: Option<&BoundKey>,
    fields: &SourceFields,
    mut plan: Plan,
) -> Result<(String, Result<Plan, MappingError>), TallyError> {
    let without_id = plan
        .conversation
        .as_ref()
        .is_some_and(|conversation| conversation.external_id.is_none());
    let (key, repeated) = match bound.filter(|_| without_id) {
        Some(bound) => {
            let columns = bound.columns().to_string();
            let Some(values) = bound.values(fields) else {
                let key = keys.for_plan(&plan)?;
                let refusal = MappingError::new(
                    &columns,
                    "key columns empty",
                    "are all empty: they identify the row's conversation (--key-columns), \
                     and without them the row cannot be told from another",
                );
                return Ok((key.key, Err(refusal)));
            };
            let key = keys.for_key_values(&values)?;
            let refusal = MappingError::new(
                &columns,
                "repeats an earlier row's key columns",
                "repeat the values of an earlier row's key columns: both rows would be one \
                 conversation",
            );
            (key.key, key.repeats_source_id.then_some(refusal))
        }
        None => {
            let key = keys.for_plan(&plan)?;
            let refusal = MappingError::new(
                "conversation.externalId",
                "repeats an earlier row's conversation id",
                "repeats the conversation id of an earlier row",
            );
            (key.key, key.repeats_source_id.then_some(refusal))
        }
    };
    if let Some(refusal) = repeated {
        return Ok((key, Err(refusal)));
    }
    if settings.derive_conversation_ids
        && let Some(conversation) = &mut plan.conversation
        && conversation.external_id.is_none()
    {
        conversation.external_id = Some(derived_conversation_id(&key));
    }
    let plan = give_customer_a_key(plan, &key, settings.derive_customer_ids);
    Ok((key, plan))
}

/// A plan whose customer has only a name (see [`Plan::needs_derived_customer_id`]) gets
/// the externalId derived from its row's key, and its customer key from that; or, when
/// derived customer ids are off, is refused as a customer nothing can find again.
fn give_customer_a_key(mut plan: Plan, row_key: &str, derive: bool) -> Result<Plan, MappingError> {
    if !plan.needs_derived_customer_id() {
        return Ok(plan);
    }
    if !derive {
        return Err(crate::mapping::checks::no_customer_key(
            " (--no-derived-customer-ids is set)",
        ));
    }
    plan.customer.external_id = Some(derived_customer_id(row_key));
    plan.customer_key = crate::mapping::checks::customer_key(&plan.customer)
        .unwrap_or_else(|| unreachable!("a customer with an externalId has a key"));
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{SourceRecord, THREAD_MARKER};
    use serde_json::json;

    fn read(value: Value) -> ReadRow {
        let settings = ReadSettings {
            child: None,
            mapping: Mapping::Default,
            derive_conversation_ids: true,
            derive_customer_ids: true,
            limit: None,
            history: None,
            rows_are_messages: false,
            key_columns: None,
        };
        let mut input = InputRows {
            file: Arc::from("threads.jsonl"),
            records: Records::Jsonl(crate::input::JsonlRecords::new(
                "threads.jsonl",
                Box::new(std::io::empty()),
                1,
            )),
            mapping: settings.mapping.for_input(None).unwrap(),
            key: None,
        };
        let record = Ok(SourceRecord {
            line: 3,
            ..crate::input::read_line(&value.to_string())
        });
        read_row(
            &mut RowKeys::default(),
            &settings,
            &mut input,
            record,
            GroupKey::Ungrouped,
        )
        .unwrap()
    }

    /// Reads a JSONL file of these rows through a reader staging in a store of its own.
    fn read_all(rows: &[Value]) -> (Vec<ReadRow>, Arc<ThreadStore>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("threads.jsonl");
        let text: Vec<String> = rows.iter().map(Value::to_string).collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        let source = crate::input::InputSource::new(
            path.to_str().unwrap(),
            None,
            crate::input::CsvSettings::default(),
        )
        .unwrap();
        let store = Arc::new(ThreadStore::create().unwrap());
        let settings = ReadSettings {
            child: None,
            mapping: Mapping::Default,
            derive_conversation_ids: true,
            derive_customer_ids: true,
            limit: None,
            history: Some(Arc::clone(&store)),
            rows_are_messages: false,
            key_columns: None,
        };
        let inputs = open_inputs(vec![source], &settings).unwrap();
        let mut reader = RowReader::new(inputs, settings);
        let read: Vec<ReadRow> = reader.by_ref().map(Result::unwrap).collect();
        reader.publish().unwrap();
        (read, store)
    }

    #[test]
    fn the_reader_stages_each_thread_under_its_row_key() {
        let (rows, store) = read_all(&[
            json!({
                "customer": {"externalId": "c-1"}, "conversation": {"externalId": "t-1"},
                "messages": [
                    {"externalId": "m-1", "channel": "chat", "direction": "in"},
                    {"externalId": "m-2", "channel": "chat", "direction": "out"}
                ],
                "notes": [{"body": "internal"}]
            }),
            json!({"customer": {"externalId": "c-2"}, "conversation": {"externalId": "t-2"}}),
        ]);
        let first = &rows[0];
        assert!(first.plan.as_ref().unwrap().thread.is_none());
        assert_eq!((first.thread.messages, first.thread.notes), (2, 1));
        assert_eq!(rows[1].thread, ThreadSize::default());
        let pages = store.pages().unwrap();
        assert_eq!(pages.size(&first.origin.key).unwrap(), first.thread);
        let staged = pages.page(&first.origin.key, None, 10).unwrap();
        let ids: Vec<&str> = staged
            .iter()
            .map(|item| item.external_id.as_str())
            .collect();
        assert_eq!(&ids[..2], ["m-1", "m-2"]);
        assert_eq!((staged[2].kind, staged[2].line), (ItemKind::Note, 1));
        assert!(pages.orphans().unwrap().is_empty());
    }

    #[test]
    fn an_id_repeated_in_a_thread_fails_its_row_naming_the_item() {
        let (rows, _store) = read_all(&[json!({
            "customer": {"externalId": "c-1"}, "conversation": {"externalId": "t-1"},
            "messages": [
                {"externalId": "m-1", "channel": "chat", "direction": "in"},
                {"externalId": "m-2", "channel": "chat", "direction": "in"},
                {"externalId": "m-1", "channel": "chat", "direction": "out"}
            ]
        })]);
        let error = rows[0].plan.as_ref().unwrap_err();
        assert_eq!(error.field.as_deref(), Some("messages[2].externalId"));
        assert!(error.reason.contains("line 1"), "{error}");
    }

    #[test]
    fn the_original_kept_for_the_errors_file_no_longer_holds_the_thread() {
        let messages: Vec<Value> = (0..50)
            .map(|n| json!({"externalId": format!("m-{n}"), "channel": "chat", "direction": "in"}))
            .collect();
        let row = read(json!({
            "customer": {"externalId": "c-1"},
            "conversation": {"externalId": "t-1"},
            "messages": messages,
            "notes": [{"body": "internal"}]
        }));
        let plan = row.plan.as_ref().unwrap();
        assert_eq!(plan.mapped_thread().unwrap().len(), 51);
        let original = row.original.to_json();
        assert_eq!(original["messages"], THREAD_MARKER);
        assert_eq!(original["notes"], THREAD_MARKER);
        assert_eq!(original["conversation"]["externalId"], "t-1");
    }

    #[test]
    fn a_row_whose_thread_is_refused_names_the_item_and_its_line() {
        let (rows, _store) = read_all(&[json!({
            "customer": {"externalId": "c-1"},
            "conversation": {"externalId": "t-1"},
            "messages": [
                {"channel": "chat", "direction": "in"},
                {"channel": "chat", "direction": "sideways"}
            ]
        })]);
        let error = rows[0].plan.as_ref().unwrap_err();
        assert_eq!(error.field.as_deref(), Some("messages[1].direction"));
        assert_eq!(rows[0].origin.line, 1);
        // The errors file names the line; a thread's list is not copied into it.
        assert_eq!(rows[0].original.to_json()["messages"], THREAD_MARKER);
    }

    /// One row per message: a mapping grouping lines by `conv`, a message or a note by
    /// `kind`, sent in time order (`at`).
    const GROUPED: &str = r#"
[customer]
externalId = "user"
emails = ["email"]
[conversation]
externalId = "conv"
name = "title"
[history]
kind = "kind"
[message]
externalId = "part"
channel = { value = "chat" }
direction = "dir"
sentAt = "at"
[note]
externalId = "part"
body = "text"
createdAt = "at"
"#;
    const HEADER: &str = "conv,part,kind,dir,at,text,user,email,title";

    /// Reads these CSV lines (after the header) as rows that are messages, each input of
    /// `files` in turn; returns the rows, the lines grouped, and the store.
    fn read_grouped(files: &[&[&str]]) -> (Vec<ReadRow>, u64, Arc<ThreadStore>) {
        let dir = tempfile::tempdir().unwrap();
        let mapping = Mapping::File(Arc::new(MappingFile::parse(GROUPED).unwrap()));
        let sources = files
            .iter()
            .enumerate()
            .map(|(index, lines)| {
                let path = dir.path().join(format!("parts{index}.csv"));
                let text: Vec<&str> = std::iter::once(HEADER)
                    .chain(lines.iter().copied())
                    .collect();
                std::fs::write(&path, text.join("\n")).unwrap();
                crate::input::InputSource::new(
                    path.to_str().unwrap(),
                    None,
                    crate::input::CsvSettings::default(),
                )
                .unwrap()
            })
            .collect();
        let store = Arc::new(ThreadStore::create().unwrap());
        let settings = ReadSettings {
            child: None,
            mapping,
            derive_conversation_ids: true,
            derive_customer_ids: true,
            limit: None,
            history: Some(Arc::clone(&store)),
            rows_are_messages: true,
            key_columns: None,
        };
        let inputs = open_inputs(sources, &settings).unwrap();
        let mut reader = RowReader::new(inputs, settings);
        reader.stage_history().unwrap();
        let mut read: Vec<ReadRow> = reader.by_ref().map(Result::unwrap).collect();
        read.extend(reader.orphans().unwrap());
        (read, reader.grouped_lines(), store)
    }

    fn thread_ids(store: &ThreadStore, key: &str) -> Vec<String> {
        let pages = store.pages().unwrap();
        let items = pages.page(key, None, 100).unwrap();
        items.into_iter().map(|item| item.external_id).collect()
    }

    #[test]
    fn each_conversations_first_line_is_its_row_and_the_others_are_its_thread_in_time_order() {
        let (rows, grouped, store) = read_grouped(&[&[
            "B,b2,message,out,2024-01-02T10:05:00Z,,u2,b@example.com,Refund",
            "A,a1,message,in,2024-01-01T09:00:00Z,,u1,a@example.com,Parcel",
            "B,b1,message,in,2024-01-02T10:00:00Z,,u2,b@example.com,Refund (edited)",
            "A,a2,note,,2024-01-01T09:05:00Z,called the carrier,u1,a@example.com,Parcel",
            "B,b3,note,,2024-01-02T10:10:00Z,refunded,u9,other@example.com,Other",
        ]]);
        let keys: Vec<(&str, u64)> = rows
            .iter()
            .map(|row| (row.origin.key.as_str(), row.origin.line))
            .collect();
        assert_eq!(keys, [("conv:B", 2), ("conv:A", 3)]);
        assert_eq!(grouped, 3);
        // The first line wins where lines of one conversation disagree.
        let b = rows[0].plan.as_ref().unwrap();
        assert_eq!(
            b.conversation.as_ref().unwrap().name.as_deref(),
            Some("Refund")
        );
        assert_eq!(b.customer.external_id.as_deref(), Some("u2"));
        assert_eq!((rows[0].thread.messages, rows[0].thread.notes), (2, 1));
        assert_eq!(thread_ids(&store, "conv:B"), ["b1", "b2", "b3"]);
        assert_eq!(thread_ids(&store, "conv:A"), ["a1", "a2"]);
    }

    #[test]
    fn a_conversations_key_is_its_id_whichever_line_comes_first() {
        let first = "A,a1,message,in,2024-01-01T09:00:00Z,,u1,a@example.com,Parcel";
        let second = "A,a2,message,out,2024-01-01T09:10:00Z,,u1,a@example.com,Parcel again";
        let (one, _, _) = read_grouped(&[&[first, second]]);
        let (other, _, store) = read_grouped(&[&[second, first]]);
        assert_eq!(one[0].origin.key, "conv:A");
        assert_eq!(other[0].origin.key, "conv:A");
        // Nor which input: the lines of one conversation may be split across files.
        let (split, grouped, _) = read_grouped(&[&[second], &[first]]);
        assert_eq!(
            (split.len(), split[0].origin.key.as_str(), grouped),
            (1, "conv:A", 1)
        );
        assert_eq!(thread_ids(&store, "conv:A"), ["a1", "a2"]);
    }

    #[test]
    fn a_bad_line_fails_its_conversation_naming_its_line_and_field_and_a_line_without_an_id_fails_alone()
     {
        let (rows, grouped, _) = read_grouped(&[&[
            "A,a1,message,in,2024-01-01T09:00:00Z,,u1,a@example.com,Parcel",
            ",x1,message,in,2024-01-01T09:01:00Z,,u1,a@example.com,Parcel",
            "A,a2,message,sideways,2024-01-01T09:02:00Z,,u1,a@example.com,Parcel",
            "C,c1,message,in,2024-01-03T09:00:00Z,,u3,not-an-email,Bad",
            "C,c2,note,,2024-01-03T09:01:00Z,fine,u3,c@example.com,Bad",
        ]]);
        assert_eq!(
            rows.len(),
            3,
            "A, the line without an id, C; no orphan: {rows:?}"
        );
        assert_eq!(grouped, 2);
        let a = rows[0].plan.as_ref().unwrap_err();
        assert_eq!(
            (rows[0].origin.line, a.field.as_deref()),
            (2, Some("history"))
        );
        assert!(
            a.reason.contains("parts0.csv line 4: message.direction"),
            "{a}"
        );
        let unplaced = rows[1].plan.as_ref().unwrap_err();
        assert_eq!(rows[1].origin.line, 3);
        assert_eq!(unplaced.field.as_deref(), Some("conversation.externalId"));
        assert!(
            rows[1].origin.key.starts_with("bad:"),
            "{}",
            rows[1].origin.key
        );
        // A first line that fails keeps its conversation's key, and its thread is its own.
        let c = rows[2].plan.as_ref().unwrap_err();
        assert_eq!(rows[2].origin.key, "conv:C");
        assert_eq!(c.field.as_deref(), Some("emails[0].email"));
    }
}
