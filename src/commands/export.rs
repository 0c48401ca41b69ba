//! `kustomer-import export`: the id map, one line per row (file, line, row key, customer
//! externalId, customer id, conversation id, state, how the customer came to be, error), as
//! CSV or JSONL, streamed from the checkpoint in constant memory.

use std::io::{BufWriter, Write};

use std::path::{Path, PathBuf};

use kustomer_import::checkpoint::{CheckpointReader, ExportRow, lock_path, private};

use super::Exit;
use crate::config::ExportConfig;

/// Whether `output` names the checkpoint or a file that goes with it (its WAL, its shared
/// memory, its lock, its errors file): writing there would destroy the import's record.
fn is_checkpoint_file(checkpoint: &Path, output: &Path) -> bool {
    let canonical = |path: &Path| -> Option<PathBuf> {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        Some(std::fs::canonicalize(parent).ok()?.join(path.file_name()?))
    };
    let (Some(checkpoint), Some(output)) = (canonical(checkpoint), canonical(output)) else {
        return false;
    };
    let mut companions = vec![checkpoint.clone(), lock_path(&checkpoint)];
    for suffix in ["-wal", "-shm", "-journal", ".errors.csv"] {
        let mut name = checkpoint.as_os_str().to_owned();
        name.push(suffix);
        companions.push(PathBuf::from(name));
    }
    companions.contains(&output)
}

pub fn run(config: ExportConfig) -> anyhow::Result<Exit> {
    let reader = match CheckpointReader::open(&config.checkpoint) {
        Ok(reader) => reader,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(Exit::Usage);
        }
    };
    if let Some(note) = reader.immutable_note() {
        eprintln!("note: {note}");
    }
    if let Some(path) = &config.output
        && is_checkpoint_file(&config.checkpoint, path)
    {
        eprintln!(
            "error: {} is the checkpoint or one of its files: choose another output",
            path.display()
        );
        return Ok(Exit::Usage);
    }
    let out: Box<dyn Write> = match &config.output {
        // Readable by its owner only: the id map names customers, and failed rows carry
        // their reasons.
        Some(path) => match private::create_truncated(path) {
            Ok(file) => Box::new(file),
            Err(error) => {
                eprintln!("error: cannot create {}: {error}", path.display());
                return Ok(Exit::Usage);
            }
        },
        None => Box::new(std::io::stdout().lock()),
    };
    let out = BufWriter::new(out);
    let written = if config.jsonl {
        let mut out = out;
        let written = reader.export(config.filter, |row: &ExportRow| -> anyhow::Result<()> {
            serde_json::to_writer(&mut out, row)?;
            out.write_all(b"\n")?;
            Ok(())
        })??;
        out.into_inner().map_err(|e| e.into_error())?.flush()?;
        written
    } else {
        let mut csv = csv::Writer::from_writer(out);
        let written = reader.export(config.filter, |row: &ExportRow| csv.serialize(row))??;
        csv.flush()?;
        written
    };
    if config.output.is_some() {
        eprintln!("{written} rows written");
    }
    Ok(Exit::Success)
}
