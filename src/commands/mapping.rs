//! `kustomer-import mapping init FILE`: writes a starter mapping file from a CSV export's
//! header (every column named, the likely matches filled in, the rest commented), for the
//! user to edit and check with `validate --mapping`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use kustomer_import::input::{CsvSettings, InputFormat, InputSource, sniff_delimiter};
use kustomer_import::mapping::columns::{StarterInput, starter_mapping};
use kustomer_import::mapping::{Mapping, MappingFile};

use super::Exit;

/// What `mapping init` reads and where it writes.
#[derive(Debug)]
pub struct InitConfig {
    pub input: InputSource,
    /// None: beside the input, `<name>.mapping.toml`.
    pub output: Option<PathBuf>,
    pub force: bool,
}

pub fn init(config: InitConfig) -> anyhow::Result<Exit> {
    let input = &config.input;
    if input.format != InputFormat::Csv {
        return Ok(super::not_started(
            false,
            Exit::Usage,
            "usage",
            &format!(
                "{}: mapping init reads a CSV header; for JSONL, name keys or dotted paths \
                 (\"requester.email\") in a mapping file as README \"Mapping files\" shows",
                input.name
            ),
        ));
    }
    let start = read_start(&input.name)?;
    let encoding = match input.settings.encoding {
        Some(_) => None,
        None if reads_as_utf8(&start) => None,
        None => Some("windows-1252"),
    };
    let settings = CsvSettings {
        encoding: input.settings.encoding.or_else(|| {
            encoding.and_then(|label| encoding_rs::Encoding::for_label(label.as_bytes()))
        }),
        ..input.settings
    };
    let header_line = start.split(|&b| b == b'\n').next().unwrap_or_default();
    let delimiter = settings
        .delimiter
        .unwrap_or_else(|| sniff_delimiter(header_line));
    let source = InputSource::new(&input.name, Some(InputFormat::Csv), settings)?;
    let opened = source.open()?;
    let Some(headers) = opened.csv_headers().cloned() else {
        anyhow::bail!("{}: no CSV header", input.name);
    };
    let output = config.output.clone().unwrap_or_else(|| beside(&input.name));
    if output.exists() && !config.force {
        return Ok(super::not_started(
            false,
            Exit::Usage,
            "usage",
            &format!(
                "{} exists: give another --output, or --force to replace it",
                output.display()
            ),
        ));
    }
    let text = starter_mapping(&StarterInput {
        file: &input.name,
        headers: &headers,
        delimiter,
        encoding: input.settings.encoding.map(|e| e.name()).or(encoding),
    });
    // What the file leaves unread, as the mapping it is reads it: also a check that it parses.
    let unread = MappingFile::parse(&text)
        .map(|file| {
            Mapping::File(Arc::new(file))
                .column_use(&headers)
                .unused
                .len()
        })
        .map_err(|error| anyhow::anyhow!("the starter mapping does not parse (a bug): {error}"))?;
    std::fs::write(&output, &text).with_context(|| format!("writing {}", output.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "wrote {}: {} columns, {} of them read by no field yet. Edit it, then check it:\n  \
         kustomer-import validate {} --mapping {}",
        output.display(),
        headers.len(),
        unread,
        input.name,
        output.display()
    )?;
    Ok(Exit::Success)
}

/// The file's first 64 KiB, gunzipped: enough to sniff its delimiter and its encoding.
fn read_start(name: &str) -> anyhow::Result<Vec<u8>> {
    const START: u64 = 64 * 1024;
    let file = std::fs::File::open(name).with_context(|| format!("{name}: cannot open"))?;
    let mut start = Vec::new();
    if name.to_ascii_lowercase().ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(file)
            .take(START)
            .read_to_end(&mut start)?;
    } else {
        file.take(START).read_to_end(&mut start)?;
    }
    Ok(start)
}

/// Whether bytes read as UTF-8, a character cut at their end allowed.
fn reads_as_utf8(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(error) => error.error_len().is_none(),
    }
}

/// `exports/helpdesk.csv` -> `exports/helpdesk.mapping.toml`.
fn beside(input: &str) -> PathBuf {
    let path = Path::new(input);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let stem = name
        .split('.')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("export");
    path.with_file_name(format!("{stem}.mapping.toml"))
}
