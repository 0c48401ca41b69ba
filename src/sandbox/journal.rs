//! The sandbox's records kept on disk, so that a rehearsal resumes as a real import does:
//! an append-only log (JSON Lines), one line per record made or updated (the record as it
//! then is: a later line of an id held replaces the earlier), written before the answer
//! leaves and replayed when a sandbox starts on the same file.
//!
//! Each line is one `write(2)` on a file opened for appending, with no buffer in this
//! process: once it returns, the line is the kernel's, so a rehearsal killed with SIGKILL
//! loses no record whose answer the importer could have seen. There is no fsync (a
//! rehearsal's records are not worth one per create): a power loss may cut the last lines,
//! and a last line cut short is dropped on replay. A sandbox without a file (tests,
//! benchmarks, `kustomer-import sandbox` without `--records`) keeps its records in memory
//! only.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::companies::CompanyRecord;
use super::store::{ConversationRecord, CustomerRecord};
use super::tags::TagRecord;
use super::thread::ThreadRecord;

/// One line of the log.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Entry {
    Customer(CustomerRecord),
    Conversation(ConversationRecord),
    /// A message or a note (its `kind` says which).
    Thread(ThreadRecord),
    /// A customer or conversation deleted: replay removes it (a conversation with its
    /// history).
    Deleted(Deleted),
    Company(CompanyRecord),
    /// A tag an append made.
    Tag(TagRecord),
}

/// A record a `DELETE` removed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Deleted {
    /// `customer` or `conversation`.
    pub kind: String,
    pub id: String,
}

/// One line of the log, borrowed to be written.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryRef<'a> {
    Customer(&'a CustomerRecord),
    Conversation(&'a ConversationRecord),
    Thread(&'a ThreadRecord),
    Deleted(&'a Deleted),
    Company(&'a CompanyRecord),
    Tag(&'a TagRecord),
}

/// The log, open for appending.
#[derive(Debug)]
pub struct Journal {
    file: File,
}

impl Journal {
    /// Opens (or creates, readable by its owner only: it holds customers' emails and
    /// phones) the log at `path` and reads the records it holds, in the order they were
    /// made. A last line cut short (a power loss) is dropped and cut from the file; any
    /// other line that cannot be read is an error naming it.
    pub fn open(path: &Path) -> std::io::Result<(Journal, Vec<Entry>)> {
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path)?;
        let (entries, good_length) = read_entries(&file, path)?;
        if good_length < file.metadata()?.len() {
            file.set_len(good_length)?;
        }
        Ok((Journal { file }, entries))
    }

    /// A log whose every write fails (opened read-only), to test what a full disk does.
    #[cfg(test)]
    pub fn unwritable(path: &Path) -> std::io::Result<Journal> {
        std::fs::write(path, "")?;
        Ok(Journal {
            file: File::open(path)?,
        })
    }

    /// Appends one record, in one write.
    pub fn append(&mut self, entry: EntryRef) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&entry)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

/// The entries of the log and the length of its whole lines.
fn read_entries(file: &File, path: &Path) -> std::io::Result<(Vec<Entry>, u64)> {
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(0))?;
    let mut entries = Vec::new();
    let mut good_length = 0;
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        // A last line cut short (a power loss): its create never answered.
        if !line.ends_with(b"\n") {
            break;
        }
        let entry = serde_json::from_slice::<Entry>(&line).map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the sandbox's records file {}, line {number}: {error}",
                    path.display()
                ),
            )
        })?;
        entries.push(entry);
        good_length += line.len() as u64;
    }
    Ok((entries, good_length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(id: &str) -> CustomerRecord {
        CustomerRecord {
            id: id.into(),
            name: Some("Ada".into()),
            external_id: Some(format!("ext-{id}")),
            emails: vec![],
            phones: vec![],
            extra: Default::default(),
            updated_at: None,
        }
    }

    #[test]
    fn records_written_are_read_back_in_order_and_a_cut_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        {
            let (mut journal, entries) = Journal::open(&path).unwrap();
            assert!(entries.is_empty());
            journal.append(EntryRef::Customer(&customer("a"))).unwrap();
            journal.append(EntryRef::Customer(&customer("b"))).unwrap();
        }
        // A power loss cut the third line.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"customer":{"id":"c","na"#).unwrap();
        drop(file);
        let (mut journal, entries) = Journal::open(&path).unwrap();
        assert_eq!(
            entries,
            vec![
                Entry::Customer(customer("a")),
                Entry::Customer(customer("b"))
            ]
        );
        journal.append(EntryRef::Customer(&customer("d"))).unwrap();
        drop(journal);
        let (_, entries) = Journal::open(&path).unwrap();
        assert_eq!(entries.len(), 3, "the cut line was removed, not glued onto");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_broken_line_in_the_middle_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, "not json\n{}\n").unwrap();
        let error = Journal::open(&path).unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
    }
}
