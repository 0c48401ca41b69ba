//! `kustomer-import resolve`: records what a person found in Kustomer for one row whose
//! outcome is unknown (see `checkpoint::resolve`), and says what the next run does with it.

use kustomer_import::checkpoint::resolve::Resolution;
use kustomer_import::checkpoint::{Checkpoint, CheckpointError};

use super::Exit;
use crate::config::ResolveConfig;

pub fn run(config: &ResolveConfig) -> anyhow::Result<Exit> {
    if !config.checkpoint.exists() {
        eprintln!(
            "error: there is no checkpoint {}",
            config.checkpoint.display()
        );
        return Ok(Exit::Usage);
    }
    let checkpoint = match Checkpoint::open(&config.checkpoint) {
        Ok(checkpoint) => checkpoint,
        Err(error @ CheckpointError::Locked { .. }) => {
            eprintln!("error: {error}; resolve once it has ended");
            return Ok(Exit::Locked);
        }
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(Exit::Usage);
        }
    };
    match checkpoint.resolve(&config.row_key, &config.resolution) {
        Ok(resolved) => {
            let what = match &config.resolution {
                Resolution::Found { conversation_id } => {
                    format!("is done, with conversation {conversation_id}: no run sends it again")
                }
                Resolution::Absent => {
                    "goes back to its conversation: the next run of the same import sends it"
                        .to_string()
                }
            };
            println!(
                "row {} ({} line {}) {what}",
                config.row_key, resolved.source_file, resolved.line
            );
            Ok(Exit::Success)
        }
        // No such row, a row the importer settles, or a checkpoint that cannot be written.
        Err(error) => {
            eprintln!("error: {error}");
            Ok(Exit::Usage)
        }
    }
}
