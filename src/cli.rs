//! The command line as the user types it: clap definitions, flags and their environment
//! variables, and nothing else. `config.rs` turns these into validated settings; no other
//! module sees clap.

use std::path::PathBuf;

use clap::builder::FalseyValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// `--version`: the package's version and the git commit it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KIMP_GIT_COMMIT"),
    ")"
);

/// The groups `import --help` lists its flags in.
const INPUT: &str = "Input and mapping";
const TARGET: &str = "Target and key";
const RATE: &str = "Rate and concurrency";
const RECOVERY: &str = "Recovery";
const OUTPUT: &str = "Output and logs";
/// The group `validate --help` lists `--check-users` and its target in.
const CHECK_USERS: &str = "Checking agents' users";

/// What `import --help` (the long form) ends with.
const IMPORT_EXAMPLES: &str = "\
Examples:
  Rehearse on the built-in sandbox (no account, no key; its own checkpoint):
    kustomer-import import tickets.csv --sandbox

  Import for real (the key only ever comes from the environment):
    export KUSTOMER_API_KEY=...          # Settings > Security > API Keys
    kustomer-import import tickets.csv --base-url https://acme.api.kustomerapp.com

  Resume after Ctrl-C, a crash, or exit 4: run the same command again. Done rows are
  skipped without a request; rows caught mid-request are looked up before anything is
  sent again.

  Nightly from cron, with half of the org's rate limit and a JSON summary:
    15 2 * * * cd /srv/kimp && KUSTOMER_API_KEY=$(cat key) kustomer-import import \\
      export.csv.gz --checkpoint tickets.sqlite --rate-share 0.5 --json >> runs.jsonl

";

const EXIT_CODES: &str = "\
Exit codes:
  0  every row is done
  1  the run finished, some rows failed (see the errors file)
  2  usage, configuration or unreadable input, or a checkpoint written
     against another API (see --retarget)
  3  the API refused the key (401/403); nothing was marked failed for it
  4  stopped before the end (a signal, errors that outlasted the retries, an API
     that let nothing through for --max-stall): run the same command again to resume
  5  another run holds the checkpoint";

#[derive(Debug, Parser)]
#[command(
    name = "kustomer-import",
    version = VERSION,
    about = "Import customer-service exports (CSV, JSONL) into Kustomer, resumably and exactly once.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = OUTPUT)]
    pub verbose: u8,

    /// Less log output (-q: warnings and errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = OUTPUT)]
    pub quiet: u8,

    /// Log lines for people (text) or for log shippers (json, one object a line).
    #[arg(long, env = "KUSTOMER_IMPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true, help_heading = OUTPUT)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import export files into Kustomer (or into the built-in sandbox with --sandbox).
    ///
    /// Reads CSV or JSONL exports, creates each row's customer (once per customer) and its
    /// conversation, and records every row's Kustomer ids in a checkpoint, so that a run
    /// that stops resumes where it stopped and a run that sees the same rows again creates
    /// nothing twice. The API key is read from the environment variable KUSTOMER_API_KEY,
    /// never from a flag; --sandbox needs none.
    #[command(
        after_help = format!("The key: KUSTOMER_API_KEY. Examples and more: --help.\n\n{EXIT_CODES}"),
        after_long_help = format!("{IMPORT_EXAMPLES}{EXIT_CODES}"),
    )]
    Import(Box<ImportArgs>),
    /// Check export files without sending anything (no network, no key): every row
    /// through the same mapping and validation as import, invalid rows to the errors file,
    /// and the agents the rows name. With --check-users it also looks each agent up as a
    /// user of the org (the key: KUSTOMER_API_KEY). Exit 0 when every row is valid, 1 when
    /// some are not, 2 when a file or the mapping cannot be used; with --check-users, 3
    /// when the API refuses the key, 4 when the lookups could not finish.
    Validate(ValidateArgs),
    /// Show where an import stands: rows by file and state, failures by reason, customers,
    /// the last runs, and whether a run is going on now.
    Status(StatusArgs),
    /// Write the id map: one line per row with its Kustomer customer and conversation ids;
    /// with --records, the agents' users, the companies or the tags instead.
    Export(ExportArgs),
    /// Record what you found in Kustomer for a row whose outcome is unknown (a create whose
    /// answer was lost, with nothing to look it up by): the conversation is there
    /// (--conversation-id, the row is done) or not (--absent, the next run sends it). Such
    /// a row is never sent again on its own, and keeps a run exiting 1 until resolved.
    Resolve(ResolveArgs),
    /// Read back what an import made (through the same rate limit) and compare it with what
    /// was sent: each done row's conversation exists and belongs to its customer, and each
    /// field is as sent. Exit 0 when all match, 1 when some do not, 2 for usage or a
    /// checkpoint of another API. The key: KUSTOMER_API_KEY (--sandbox needs none).
    Verify(VerifyArgs),
    /// Delete what the named run (--run ID) or every run (--all) of the import made:
    /// conversations (their messages and notes go with them), then the customers it
    /// created and nothing else uses; never a customer it only linked. The rows go back to
    /// pending, so the same import command makes them again. --dry-run lists; without
    /// --yes it asks once on a terminal. Exit 0 when everything selected is gone or kept by
    /// rule, 1 when a delete failed, 2 for usage or a checkpoint of another API.
    Undo(UndoArgs),
    /// Run the local sandbox of the Kustomer API until Ctrl-C.
    Sandbox(SandboxArgs),
    /// Mapping files: `mapping init FILE` writes a starter one from an export's columns.
    #[command(subcommand)]
    Mapping(MappingCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) that holds every command, e.g. `kustomer-import man >
    /// kustomer-import.1`; with --dir, write one page per command there.
    Man {
        /// Write `kustomer-import.1` and a page per command (`kustomer-import-import.1`,
        /// ...) into this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

impl Command {
    /// Whether the command asked for its report as one JSON object on stdout.
    pub fn wants_json(&self) -> bool {
        match self {
            Command::Import(args) => args.json,
            Command::Validate(args) => args.json,
            Command::Status(args) => args.json,
            Command::Verify(args) => args.target.json,
            Command::Undo(args) => args.target.json,
            _ => false,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum MappingCommand {
    /// Write a starter mapping file for a CSV export: every column named, the likely
    /// matches filled in, the rest commented, for you to edit and check with
    /// `validate --mapping`.
    Init(MappingInitArgs),
}

#[derive(Debug, Args)]
pub struct MappingInitArgs {
    /// The CSV export (plain or .gz) whose header to read.
    #[arg(value_name = "FILE")]
    pub file: String,

    /// Where to write the mapping [default: beside FILE, <name>.mapping.toml].
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,

    /// The CSV delimiter [default: sniffed from the header line].
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<String>,

    /// The file's text encoding [default: UTF-8, or windows-1252 when it is not UTF-8].
    #[arg(long, value_name = "LABEL")]
    pub encoding: Option<String>,
}

/// The checkpoint a read-only command reads.
#[derive(Debug, Args)]
pub struct CheckpointToRead {
    /// The checkpoint to read [default: kustomer-import.sqlite, with --sandbox
    /// kustomer-import.sandbox.sqlite].
    #[arg(long, env = "KUSTOMER_IMPORT_CHECKPOINT")]
    pub checkpoint: Option<PathBuf>,

    /// Read the rehearsal's checkpoint (the one `import --sandbox` uses by default).
    #[arg(long, env = "KUSTOMER_IMPORT_SANDBOX", value_parser = FalseyValueParser::new())]
    pub sandbox: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub read: CheckpointToRead,

    /// One JSON object on stdout instead of the table.
    #[arg(long, env = "KUSTOMER_IMPORT_JSON", value_parser = FalseyValueParser::new())]
    pub json: bool,
}

/// The API a command other than `import` talks to, as the import is given it: its base
/// URL, and the rate and timeout of its requests. The key is KUSTOMER_API_KEY's.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The API's base URL, as the import is given it (the org's host, or a regional one).
    #[arg(
        long,
        env = "KUSTOMER_BASE_URL",
        default_value = "https://api.kustomerapp.com"
    )]
    pub base_url: String,

    /// Allow an http:// base URL on a host other than loopback.
    #[arg(long, env = "KUSTOMER_IMPORT_ALLOW_INSECURE_HTTP", value_parser = FalseyValueParser::new())]
    pub allow_insecure_http: bool,

    /// The most requests in any 60 seconds.
    #[arg(
        long,
        env = "KUSTOMER_IMPORT_RPM",
        default_value_t = 900,
        value_name = "N"
    )]
    pub rpm: u32,

    /// Seconds before a request without an answer counts as lost.
    #[arg(
        long,
        env = "KUSTOMER_IMPORT_TIMEOUT",
        default_value_t = 30.0,
        value_name = "SECS"
    )]
    pub timeout: f64,
}

/// The checkpoint and the API a command that reads back (or deletes) what an import made
/// talks to: the import's own target, key and rate limit.
#[derive(Debug, Args)]
pub struct MadeRecordsArgs {
    /// The import's checkpoint [default: kustomer-import.sqlite, with --sandbox
    /// kustomer-import.sandbox.sqlite].
    #[arg(long, env = "KUSTOMER_IMPORT_CHECKPOINT")]
    pub checkpoint: Option<PathBuf>,

    /// A rehearsal: the built-in sandbox, started on the records it keeps beside the
    /// checkpoint (<checkpoint>.sandbox.jsonl).
    #[arg(long, env = "KUSTOMER_IMPORT_SANDBOX", value_parser = FalseyValueParser::new())]
    pub sandbox: bool,

    #[command(flatten)]
    pub api: ApiArgs,

    /// One JSON object on stdout instead of the report.
    #[arg(long, env = "KUSTOMER_IMPORT_JSON", value_parser = FalseyValueParser::new())]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: MadeRecordsArgs,

    /// Check N done rows spread evenly over the files (every k-th row, the same each time).
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub sample: Option<usize>,

    /// Check every done row (the default).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    #[command(flatten)]
    pub target: MadeRecordsArgs,

    /// Undo this run (its id, as `status` lists it): what it made.
    #[arg(
        long,
        value_name = "ID",
        conflicts_with = "all",
        required_unless_present = "all"
    )]
    pub run: Option<i64>,

    /// Undo every run: everything the checkpoint says the import made, rows recorded before
    /// runs were named on them too.
    #[arg(long)]
    pub all: bool,

    /// List what would be deleted and kept; delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Delete without asking (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// How customers are deleted: one request each and a confirming read (single), up to
    /// 100 per `DELETE /v1/customers/bulk` job and then a read of each (bulk), or bulk from
    /// 3 customers (auto). Conversations go one by one in every mode (the API has no bulk
    /// delete of them).
    #[arg(long, value_enum, default_value_t = ModeArg::Single)]
    pub mode: ModeArg,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub read: CheckpointToRead,

    /// The row's key, as `export --state failed` lists it.
    #[arg(long, value_name = "KEY")]
    pub row_key: String,

    /// The conversation is in Kustomer, with this id: the row is done.
    #[arg(
        long,
        value_name = "ID",
        conflicts_with = "absent",
        required_unless_present = "absent"
    )]
    pub conversation_id: Option<String>,

    /// There is no such conversation in Kustomer: the next run sends it.
    #[arg(long)]
    pub absent: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub read: CheckpointToRead,

    /// csv (with a header) or jsonl.
    #[arg(long, value_enum, default_value_t = FormatArg::Csv, env = "KUSTOMER_IMPORT_EXPORT_FORMAT")]
    pub format: FormatArg,

    /// What to write: the rows' id map (rows); the source agents looked up and the users
    /// they map to (agents); the companies found or made (companies); the org's tags the
    /// import knows (tags).
    #[arg(long, value_enum, default_value_t = RecordsArg::Rows, env = "KUSTOMER_IMPORT_EXPORT_RECORDS")]
    pub records: RecordsArg,

    /// Which rows to write (rows only) [default: done].
    #[arg(long, value_enum, env = "KUSTOMER_IMPORT_EXPORT_STATE")]
    pub state: Option<StateArg>,

    /// Where to write [default: stdout].
    #[arg(
        short,
        long,
        value_name = "FILE",
        env = "KUSTOMER_IMPORT_EXPORT_OUTPUT"
    )]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RecordsArg {
    Rows,
    Agents,
    Companies,
    Tags,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Done,
    Failed,
    All,
}

/// The export files and how to read and map them: the same for import and validate.
#[derive(Debug, Args)]
#[command(next_help_heading = INPUT)]
pub struct InputArgs {
    /// Export files: .csv or .jsonl, optionally .gz; '-' reads stdin (with --format).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,

    /// The input format, when the file name does not tell it (stdin).
    #[arg(long, env = "KUSTOMER_IMPORT_FORMAT", value_enum)]
    pub format: Option<FormatArg>,

    /// A mapping file (TOML) saying which columns feed which fields; see README
    /// "Mapping files". Without it, the default columns are used.
    #[arg(long, env = "KUSTOMER_IMPORT_MAPPING", value_name = "FILE")]
    pub mapping: Option<PathBuf>,

    /// A built-in mapping for a help desk's own export instead of the default columns or
    /// a mapping file. zendesk-json: Zendesk's full JSON export, tickets.json (one ticket a
    /// line, its comments inside) as FILE, with its users.json as --users.
    #[arg(
        long,
        env = "KUSTOMER_IMPORT_PRESET",
        value_enum,
        conflicts_with = "mapping"
    )]
    pub preset: Option<PresetArg>,

    /// The users file a preset reads people from (zendesk-json: users.json, one user a
    /// line; requesters become customers, and a comment's author tells its direction).
    #[arg(long, env = "KUSTOMER_IMPORT_USERS", value_name = "FILE")]
    pub users: Option<PathBuf>,

    /// The organizations file a preset reads companies' names from (zendesk-json:
    /// organizations.json, one organization a line). Without it, a ticket's
    /// `organization_id` still links its customer to a company, named by its externalId.
    #[arg(long, env = "KUSTOMER_IMPORT_ORGANIZATIONS", value_name = "FILE")]
    pub organizations: Option<PathBuf>,

    /// The CSV delimiter: one character, or 'tab' [default: the mapping's, else sniffed
    /// from the header line among , ; tab |].
    #[arg(long, env = "KUSTOMER_IMPORT_DELIMITER", value_name = "CHAR")]
    pub delimiter: Option<String>,

    /// The text encoding of the inputs, e.g. windows-1252, iso-8859-15, utf-16le
    /// [default: the mapping's, else UTF-8; a byte-order mark wins].
    #[arg(long, env = "KUSTOMER_IMPORT_ENCODING", value_name = "LABEL")]
    pub encoding: Option<String>,

    /// The longest record read: a CSV record (quoted newlines included) or a JSONL line.
    /// A longer one is refused (in the errors file with its line and size) and skipped.
    /// Bytes, or with a suffix: KiB, MiB, GiB (K, M, G are the same), KB, MB, GB.
    #[arg(
        long,
        env = "KUSTOMER_IMPORT_MAX_RECORD_SIZE",
        value_name = "SIZE",
        default_value = "4MiB"
    )]
    pub max_record_size: String,

    /// A messages file (CSV or JSONL, optionally .gz) whose records are messages and notes
    /// of the conversations in FILE, joined by the mapping's `history.conversation` column;
    /// needs --mapping with [message] or [note]. See README "Mapping files".
    #[arg(long, env = "KUSTOMER_IMPORT_MESSAGES", value_name = "FILE")]
    pub messages: Option<String>,

    /// Each input row is one message (or note) with its conversation's columns repeated
    /// (Intercom-style): rows are grouped into conversations by the conversation's id, in
    /// any order. Needs --mapping with [message] or [note].
    #[arg(long, env = "KUSTOMER_IMPORT_ROWS_ARE_MESSAGES")]
    pub rows_are_messages: bool,

    /// The columns (comma-separated; dotted keys in JSONL) that identify a conversation
    /// when the export has no conversation id column, e.g. email,created_at: a row whose
    /// other fields change keeps its key, so a nightly run updates it instead of creating
    /// it again. Overrides a mapping file's [conversation] key.
    #[arg(long, env = "KUSTOMER_IMPORT_KEY_COLUMNS", value_name = "COLS")]
    pub key_columns: Option<String>,

    /// Refuse customers with a name and no externalId, email or phone, as before, rather
    /// than give each an externalId derived from its row (kimp-cust-<hash of the row key>),
    /// by which a lost answer on its create is looked up.
    #[arg(
        long,
        env = "KUSTOMER_IMPORT_NO_DERIVED_CUSTOMER_IDS",
        value_parser = FalseyValueParser::new()
    )]
    pub no_derived_customer_ids: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Where invalid rows go (file, line, field, reason, the row).
    #[arg(
        long,
        env = "KUSTOMER_IMPORT_VALIDATE_ERRORS",
        value_name = "PATH",
        default_value = "kustomer-import.validate-errors.csv"
    )]
    pub errors: PathBuf,

    /// One JSON object on stdout instead of the report.
    #[arg(long, env = "KUSTOMER_IMPORT_JSON", value_parser = FalseyValueParser::new())]
    pub json: bool,

    /// Also look each distinct agent up as a user of the org (`GET /v1/users?email=`, once
    /// each, through --rpm), with the key from KUSTOMER_API_KEY and --base-url: which
    /// agents map to users, and which would fall back. Writes nothing.
    #[arg(long, help_heading = CHECK_USERS)]
    pub check_users: bool,

    /// Where --check-users looks (read only with it).
    #[command(flatten, next_help_heading = CHECK_USERS)]
    pub api: ApiArgs,
}

/// The API key is read from KUSTOMER_API_KEY only: never a flag, so that it shows in no
/// process list, shell history or --help output.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Import only the first N valid rows (a trial run); the rest stay for the next run.
    #[arg(help_heading = INPUT, long, env = "KUSTOMER_IMPORT_LIMIT", value_name = "N")]
    pub limit: Option<u64>,

    /// Do not send `importedAt` (the time of the import) with each conversation. With it,
    /// historical conversations are exempt from Kustomer's limit of 120 new conversations
    /// per customer per minute.
    #[arg(help_heading = INPUT, long, env = "KUSTOMER_IMPORT_NO_STAMP_IMPORTED_AT", value_parser = FalseyValueParser::new())]
    pub no_stamp_imported_at: bool,

    /// The API key's user holds `org.admin`: send messages' and notes' `createdAt` and
    /// `createdBy` from the source. Without it they are left out (Kustomer would use the
    /// key's user and the time of the import); `sentAt` keeps a message's date.
    #[arg(help_heading = INPUT, long, env = "KUSTOMER_IMPORT_ORG_ADMIN", value_parser = FalseyValueParser::new())]
    pub org_admin: bool,

    /// The user (an email of the org's) whose id a message or note goes out with as its
    /// `createdBy` when its agent has no Kustomer user. Without it such an item has no
    /// author (the key's user). Users are never created: that emails an invitation.
    #[arg(help_heading = INPUT, long, value_name = "EMAIL")]
    pub default_author: Option<String>,

    /// Make the tags a conversation names that the org lacks, by appending them to the
    /// conversation once it is made (`POST /v1/conversations/{id}/tags`). Without it the
    /// conversation goes with the tags the org has, and the summary lists the others.
    #[arg(help_heading = INPUT, long)]
    pub create_missing_tags: bool,

    /// The API's base URL (the org's own host, or a regional one).
    #[arg(
        help_heading = TARGET,
        long,
        env = "KUSTOMER_BASE_URL",
        default_value = "https://api.kustomerapp.com"
    )]
    pub base_url: String,

    /// Rehearse: import into a sandbox started in this process on 127.0.0.1 (no account,
    /// no key), with a checkpoint of its own; the sandbox's records are kept beside it
    /// (<checkpoint>.sandbox.jsonl), so an interrupted rehearsal resumes.
    #[arg(help_heading = TARGET, long, env = "KUSTOMER_IMPORT_SANDBOX", value_parser = FalseyValueParser::new())]
    pub sandbox: bool,

    /// Allow an http:// base URL on a host other than loopback (the key would travel in
    /// clear text).
    #[arg(help_heading = TARGET, long, env = "KUSTOMER_IMPORT_ALLOW_INSECURE_HTTP", value_parser = FalseyValueParser::new())]
    pub allow_insecure_http: bool,

    /// Let a checkpoint made against another base URL go on against this one (the org's
    /// host changed name): its done rows are taken as made here. Without it such a run is
    /// refused before any request.
    #[arg(help_heading = TARGET, long, env = "KUSTOMER_IMPORT_RETARGET", value_parser = FalseyValueParser::new())]
    pub retarget: bool,

    /// The most requests the run may send in any 60 seconds, lookups included.
    #[arg(
        help_heading = RATE,
        long,
        env = "KUSTOMER_IMPORT_RPM",
        default_value_t = 900,
        value_name = "N"
    )]
    pub rpm: u32,

    /// Use at most this fraction (0 < F <= 1) of the org's limit as the server reports it
    /// (x-ratelimit-limit), instead of a fixed --rpm, leaving the rest to the org's live
    /// integrations. --rpm still caps the requests before the first answer.
    #[arg(help_heading = RATE, long, env = "KUSTOMER_IMPORT_RATE_SHARE", value_name = "F")]
    pub rate_share: Option<f64>,

    /// The window --rpm counts over, in seconds (tests shorten it).
    #[arg(
        help_heading = RATE,
        long,
        env = "KUSTOMER_IMPORT_RATE_WINDOW",
        default_value_t = 60.0,
        hide = true
    )]
    pub rate_window: f64,

    /// Rows in flight at once [default: what keeps --rpm busy at the latency the API shows
    /// (Little's law), from 4 to 64].
    #[arg(help_heading = RATE, long, env = "KUSTOMER_IMPORT_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,

    /// Seconds before a request without an answer counts as lost.
    #[arg(
        help_heading = RATE,
        long,
        env = "KUSTOMER_IMPORT_TIMEOUT",
        default_value_t = 30.0,
        value_name = "SECS"
    )]
    pub timeout: f64,

    /// How records travel: one request each (single), up to 100 per request through
    /// Kustomer's bulk jobs (bulk), or bulk once a few hundred rows are waiting to be sent
    /// or updated (auto).
    #[arg(help_heading = RATE, long, env = "KUSTOMER_IMPORT_MODE", value_enum, default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,

    /// The checkpoint (SQLite) that records every row's outcome; runs with the same
    /// checkpoint resume and never create a row twice. It belongs to the API it was made
    /// against [default: kustomer-import.sqlite, with --sandbox
    /// kustomer-import.sandbox.sqlite].
    #[arg(help_heading = RECOVERY, long, env = "KUSTOMER_IMPORT_CHECKPOINT")]
    pub checkpoint: Option<PathBuf>,

    /// Transient failures (5xx, timeouts, dropped connections) a row may meet before it is
    /// left pending for the next run.
    #[arg(
        help_heading = RECOVERY,
        long,
        env = "KUSTOMER_IMPORT_MAX_RETRIES",
        default_value_t = 6,
        value_name = "N"
    )]
    pub max_retries: u32,

    /// Seconds the API may let no request through (429s, or a budget it says is spent)
    /// before the run stops with exit 4 rather than wait on.
    #[arg(
        long,
        env = "KUSTOMER_IMPORT_MAX_STALL",
        default_value_t = kustomer_import::api::DEFAULT_MAX_STALL.as_secs_f64(),
        value_name = "SECS"
    )]
    pub max_stall: f64,

    /// Seconds that requests in flight may take to finish after Ctrl-C or SIGTERM.
    #[arg(
        help_heading = RECOVERY,
        long,
        env = "KUSTOMER_IMPORT_GRACE",
        default_value_t = 10.0,
        value_name = "SECS"
    )]
    pub grace: f64,

    /// Seconds to wait after a lost answer before the lookup that tells whether the record
    /// was created, so that a write still in progress shows up first.
    #[arg(
        help_heading = RECOVERY,
        long,
        env = "KUSTOMER_IMPORT_RECONCILE_DELAY",
        default_value_t = 2.0,
        value_name = "SECS"
    )]
    pub reconcile_delay: f64,

    /// A customer that already exists in Kustomer (same externalId, email or phone):
    /// link the row to it, or fail the row.
    #[arg(help_heading = RECOVERY, long, env = "KUSTOMER_IMPORT_ON_EXISTING_CUSTOMER", value_enum, default_value_t = OnExistingArg::Link)]
    pub on_existing_customer: OnExistingArg,

    /// A row done earlier whose customer or conversation changed in the export since:
    /// update only the fields that changed (PATCH); skip (send nothing, as before); or
    /// fail (report it, send nothing).
    #[arg(help_heading = RECOVERY, long, env = "KUSTOMER_IMPORT_ON_CHANGE", value_enum, default_value_t = OnChangeArg::Update)]
    pub on_change: OnChangeArg,

    /// The only fields an update may set, comma-separated (e.g. status,tags, so that
    /// agents' edits to names are kept) [default: any field the mapping sets].
    #[arg(help_heading = RECOVERY, long, env = "KUSTOMER_IMPORT_UPDATE_FIELDS", value_name = "FIELDS", value_delimiter = ',')]
    pub update_fields: Option<Vec<String>>,

    /// Do not give conversations without a source externalId a derived one
    /// (kimp-<hash of the row>). Without it, a conversation whose answer was lost cannot be
    /// looked up: its row fails instead of risking a duplicate.
    #[arg(help_heading = RECOVERY, long, env = "KUSTOMER_IMPORT_NO_DERIVED_CONVERSATION_IDS", value_parser = FalseyValueParser::new())]
    pub no_derived_conversation_ids: bool,

    /// Send again the rows that failed in earlier runs (not those whose outcome is unknown),
    /// with the current mapping and flags: after a fix on either side.
    #[arg(help_heading = RECOVERY, long, env = "KUSTOMER_IMPORT_RETRY_FAILED", value_parser = FalseyValueParser::new())]
    pub retry_failed: bool,

    /// Seconds a bulk job whose submit answer was lost may still run on Kustomer's side:
    /// its rows are looked up only after this, so that a late job is found, not duplicated.
    #[arg(
        help_heading = RECOVERY,
        long,
        env = "KUSTOMER_IMPORT_BULK_LOST_WAIT",
        default_value_t = 60.0,
        value_name = "SECS"
    )]
    pub bulk_lost_wait: f64,

    /// Where failed rows go [default: beside the checkpoint, <checkpoint>.errors.csv].
    #[arg(help_heading = OUTPUT, long, env = "KUSTOMER_IMPORT_ERRORS", value_name = "PATH")]
    pub errors: Option<PathBuf>,

    /// Print one JSON summary object on stdout at the end (see README), and nothing else.
    #[arg(help_heading = OUTPUT, long, env = "KUSTOMER_IMPORT_JSON", value_parser = FalseyValueParser::new())]
    pub json: bool,

    /// No progress bar, even on a terminal.
    #[arg(help_heading = OUTPUT, long, env = "KUSTOMER_IMPORT_NO_PROGRESS", value_parser = FalseyValueParser::new())]
    pub no_progress: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// Zendesk's full JSON export (tickets.json with users.json).
    ZendeskJson,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Csv,
    Jsonl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Single,
    Bulk,
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnChangeArg {
    Update,
    Skip,
    Fail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnExistingArg {
    Link,
    Fail,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0, env = "KUSTOMER_SANDBOX_PORT")]
    pub port: u16,

    /// The only bearer token accepted [default: any non-empty token].
    #[arg(long, env = "KUSTOMER_SANDBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Org-wide requests per window, answered with 429 beyond [default: unlimited].
    #[arg(long, env = "KUSTOMER_SANDBOX_RPM")]
    pub rpm: Option<u32>,

    /// Length of the rate window in seconds.
    #[arg(
        long,
        default_value_t = 60.0,
        value_name = "SECS",
        env = "KUSTOMER_SANDBOX_RATE_WINDOW"
    )]
    pub rate_window: f64,

    /// Latency added to every API answer.
    #[arg(long, default_value_t = 0, env = "KUSTOMER_SANDBOX_LATENCY_MS")]
    pub latency_ms: u64,

    /// Random extra latency, up to this.
    #[arg(long, default_value_t = 0, env = "KUSTOMER_SANDBOX_JITTER_MS")]
    pub jitter_ms: u64,

    /// Fraction of requests answered 500 before any write.
    #[arg(long, default_value_t = 0.0, env = "KUSTOMER_SANDBOX_FAIL_RATE")]
    pub fail_rate: f64,

    /// Fraction of creates that write the record, then answer 500.
    #[arg(
        long,
        default_value_t = 0.0,
        env = "KUSTOMER_SANDBOX_FAIL_AFTER_WRITE_RATE"
    )]
    pub fail_after_write_rate: f64,

    /// Fraction of creates that write the record, then close the connection unanswered.
    #[arg(
        long,
        default_value_t = 0.0,
        env = "KUSTOMER_SANDBOX_DROP_AFTER_WRITE_RATE"
    )]
    pub drop_after_write_rate: f64,

    /// Fraction of creates that write the record, then never answer.
    #[arg(
        long,
        default_value_t = 0.0,
        env = "KUSTOMER_SANDBOX_HANG_AFTER_WRITE_RATE"
    )]
    pub hang_after_write_rate: f64,

    /// Fraction of requests answered 503 before any write.
    #[arg(long, default_value_t = 0.0, env = "KUSTOMER_SANDBOX_BUSY_RATE")]
    pub busy_rate: f64,

    /// Revoke the key after this many requests: every later request gets 401.
    #[arg(long, value_name = "N", env = "KUSTOMER_SANDBOX_REVOKE_AFTER")]
    pub revoke_after: Option<u64>,

    /// Seed of the fault dice, for a reproducible run.
    #[arg(long, env = "KUSTOMER_SANDBOX_SEED")]
    pub seed: Option<u64>,

    /// Answer the spec's way (200, bare object) instead of the live API's (201, {"data"}).
    #[arg(long, env = "KUSTOMER_SANDBOX_SPEC_STYLE", value_parser = FalseyValueParser::new())]
    pub spec_style: bool,

    /// The org's custom attributes, comma-separated: a customer naming any other is refused
    /// with 422, as the live API does [default: any name with a type suffix].
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "NAMES",
        env = "KUSTOMER_SANDBOX_CUSTOM_ATTRIBUTES"
    )]
    pub custom_attributes: Option<Vec<String>>,

    /// How long a bulk job stays queued before it runs.
    #[arg(long, default_value_t = 500, env = "KUSTOMER_SANDBOX_BULK_DELAY_MS")]
    pub bulk_delay_ms: u64,

    /// Refuse a whole bulk request (400, naming the item) when one item is invalid, as an
    /// API that validates bodies on submit would; by default items fail one by one.
    #[arg(long, env = "KUSTOMER_SANDBOX_BULK_REFUSE_INVALID", value_parser = FalseyValueParser::new())]
    pub bulk_refuse_invalid: bool,

    /// Serve no bulk endpoints, as an API without bulk jobs.
    #[arg(long, env = "KUSTOMER_SANDBOX_WITHOUT_BULK", value_parser = FalseyValueParser::new())]
    pub without_bulk: bool,

    /// Keep the records in this file (JSON Lines, appended as they are made) and start
    /// with the records it holds, so that the sandbox outlives a restart [default: in
    /// memory only].
    #[arg(long, value_name = "FILE", env = "KUSTOMER_SANDBOX_RECORDS")]
    pub records: Option<PathBuf>,

    /// Act as if the key's user holds org.admin: messages and notes may then set createdAt
    /// and createdBy [default: taken and not kept, as the live API does].
    #[arg(long, env = "KUSTOMER_SANDBOX_ORG_ADMIN", value_parser = FalseyValueParser::new())]
    pub org_admin: bool,
    /// Updates of one record per rate window, answered with 429 beyond (Retry-After, and
    /// the org's x-ratelimit-* headers showing its budget not spent), as Kustomer's
    /// unpublished per-object limits are [default: no limit].
    #[arg(
        long,
        value_name = "N",
        env = "KUSTOMER_SANDBOX_PER_OBJECT_UPDATE_LIMIT"
    )]
    pub per_object_update_limit: Option<u32>,
}
