//! `kustomer-import export`: the id map, one line per row (file, line, row key, customer
//! externalId, customer id, conversation id, state, how the customer came to be, error), as
//! CSV or JSONL, streamed from the checkpoint in constant memory.

use std::fs::File;
use std::io::{BufWriter, Write};

use kustomer_import::checkpoint::{CheckpointReader, ExportRow};

use super::Exit;
use crate::config::ExportConfig;

pub fn run(config: ExportConfig) -> anyhow::Result<Exit> {
    let reader = match CheckpointReader::open(&config.checkpoint) {
        Ok(reader) => reader,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(Exit::Usage);
        }
    };
    let out: Box<dyn Write> = match &config.output {
        Some(path) => match File::create(path) {
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
