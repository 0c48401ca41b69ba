//! `kustomer-import export`: the id map, one line per row (file, line, row key, customer
//! externalId, customer id, conversation id, state, how the customer came to be, error, its
//! company's id), or with `--records` the other maps a migration leaves (agents to users,
//! companies, tags), as CSV with a header or JSONL, streamed from the checkpoint in
//! constant memory.

use std::io::{BufWriter, Write};

use std::path::{Path, PathBuf};

use serde::Serialize;

use kustomer_import::checkpoint::{
    CheckpointReader, ExportAgent, ExportCompany, ExportRow, ExportTag, lock_path, private,
};

use super::Exit;
use crate::config::{ExportConfig, ExportRecords};

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
    let (columns, what) = match config.records {
        ExportRecords::Rows(_) => (ExportRow::COLUMNS, "rows"),
        ExportRecords::Agents => (ExportAgent::COLUMNS, "agents"),
        ExportRecords::Companies => (ExportCompany::COLUMNS, "companies"),
        ExportRecords::Tags => (ExportTag::COLUMNS, "tags"),
    };
    let mut lines = Lines::new(BufWriter::new(out), config.jsonl, columns)?;
    let written = match config.records {
        ExportRecords::Rows(filter) => reader.export(filter, |row| lines.write(row)),
        ExportRecords::Agents => reader.export_agents(|agent| lines.write(agent)),
        ExportRecords::Companies => reader.export_companies(|company| lines.write(company)),
        ExportRecords::Tags => reader.export_tags(|tag| lines.write(tag)),
    }??;
    lines.finish()?;
    if config.output.is_some() {
        eprintln!("{written} {what} written");
    }
    Ok(Exit::Success)
}

/// The lines `export` writes: CSV, its header first (so that an export with no line still
/// names its columns, as one of a checkpoint older than the table does), or JSON lines.
enum Lines {
    Csv(Box<csv::Writer<BufWriter<Box<dyn Write>>>>),
    Jsonl(BufWriter<Box<dyn Write>>),
}

impl Lines {
    fn new(out: BufWriter<Box<dyn Write>>, jsonl: bool, columns: &[&str]) -> anyhow::Result<Lines> {
        if jsonl {
            return Ok(Lines::Jsonl(out));
        }
        let mut csv = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
        csv.write_record(columns)?;
        Ok(Lines::Csv(Box::new(csv)))
    }

    fn write(&mut self, line: &impl Serialize) -> anyhow::Result<()> {
        match self {
            Lines::Csv(csv) => csv.serialize(line)?,
            Lines::Jsonl(out) => {
                serde_json::to_writer(&mut *out, line)?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        let out = match self {
            Lines::Csv(csv) => csv.into_inner().map_err(|e| e.into_error())?,
            Lines::Jsonl(out) => out,
        };
        out.into_inner().map_err(|e| e.into_error())?.flush()?;
        Ok(())
    }
}
