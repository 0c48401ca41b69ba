//! The reader: a blocking thread that streams every input, maps each record to a plan,
//! gives it its row key (and, when asked, its derived conversation id), and hands it to the
//! planner over a bounded channel, so reading never runs far ahead of sending.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Original, ReadRow, RowOrigin};
use crate::input::{InputError, InputSource};
use crate::mapping::{DefaultMapping, MappingError};
use crate::rowkey::{RowKeys, derived_conversation_id};

/// Streams every input through the mapping on a blocking thread. Returns the error that
/// ended an input early, if any.
pub(super) fn start_reader(
    inputs: Vec<InputSource>,
    derive_conversation_ids: bool,
    rows: mpsc::Sender<ReadRow>,
) -> tokio::task::JoinHandle<Option<InputError>> {
    tokio::task::spawn_blocking(move || {
        let mut keys = RowKeys::new();
        for input in inputs {
            let mut mapping = DefaultMapping::new();
            let file: Arc<str> = Arc::from(input.name.as_str());
            let records = match input.records() {
                Ok(records) => records,
                Err(error) => return Some(error),
            };
            for record in records {
                let row = match record {
                    Err(error) => return Some(error),
                    Ok(Err(bad)) => ReadRow {
                        origin: RowOrigin {
                            file: Arc::clone(&file),
                            line: bad.line,
                            key: keys.for_unmapped(&bad.raw),
                        },
                        plan: Err(MappingError {
                            field: None,
                            reason: format!("the record {}", bad.reason),
                        }),
                        original: Original::Raw(bad.raw),
                    },
                    Ok(Ok(record)) => {
                        let plan = mapping.map(&record.fields);
                        let original = Original::Fields(record.fields);
                        let (key, plan) = match plan {
                            Ok(mut plan) => {
                                let key = keys.for_plan(&plan);
                                let plan = if key.repeats_source_id {
                                    Err(MappingError {
                                        field: Some("conversation.externalId".into()),
                                        reason: "repeats the conversation id of an earlier row"
                                            .into(),
                                    })
                                } else {
                                    if derive_conversation_ids
                                        && let Some(conversation) = &mut plan.conversation
                                        && conversation.external_id.is_none()
                                    {
                                        conversation.external_id =
                                            Some(derived_conversation_id(&key.key));
                                    }
                                    Ok(plan)
                                };
                                (key.key, plan)
                            }
                            Err(error) => (keys.for_unmapped(&original.to_json()), Err(error)),
                        };
                        ReadRow {
                            origin: RowOrigin {
                                file: Arc::clone(&file),
                                line: record.line,
                                key,
                            },
                            original,
                            plan,
                        }
                    }
                };
                if rows.blocking_send(row).is_err() {
                    return None; // the planner stopped taking rows
                }
            }
        }
        None
    })
}
