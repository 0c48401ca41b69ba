//! Validated settings built from the command line ("high args"): every check of a flag's
//! value happens here, once, and the commands get plain settings that cannot be wrong.
//! This is the only module besides `cli.rs` and `main.rs` that knows clap exists.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::cli::{
    ApiArgs, ExportArgs, FormatArg, ImportArgs, InputArgs, MadeRecordsArgs, MappingInitArgs,
    ModeArg, OnChangeArg, OnExistingArg, PresetArg, RecordsArg, ResolveArgs, SandboxArgs, StateArg,
    UndoArgs, ValidateArgs, VerifyArgs,
};
use crate::commands::mapping::InitConfig;
use kustomer_import::api::Backoff;
use kustomer_import::checkpoint::ApiTarget;
use kustomer_import::checkpoint::inspect::StateFilter;
use kustomer_import::checkpoint::resolve::Resolution;
use kustomer_import::input::{
    CsvSettings, InputError, InputFormat, InputSource, parse_delimiter, parse_encoding,
};
use kustomer_import::mapping::{
    Mapping, MappingConfigError, MappingFile, ZendeskDirectory, ZendeskFileError,
};
use kustomer_import::pipeline::{
    Concurrency, ImportMode, ImportSettings, OnChange, OnExistingCustomer, SyncRules,
};
use kustomer_import::rowkey::KeyColumns;
use kustomer_import::rows::ReadSettings;
use kustomer_import::sandbox::{FaultConfig, SandboxConfig};

/// The environment variable the API key is read from.
pub const API_KEY_VAR: &str = "KUSTOMER_API_KEY";

/// A command line that cannot run (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no API key: set {API_KEY_VAR} to a key with the customer and conversation roles \
         (Settings > Security > API Keys), or rehearse with --sandbox, which needs no account"
    )]
    MissingKey,
    #[error(
        "--check-users looks the agents up in the org: set {API_KEY_VAR} to a key that can \
         read users (and --base-url to the org's API), or validate without --check-users, \
         which needs no key"
    )]
    MissingKeyToCheckUsers,
    #[error("--base-url {url:?} is not a URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "--base-url {0} is http:// on a host that is not loopback: the key would travel in \
         clear text. Use https://, or pass --allow-insecure-http if you mean it"
    )]
    InsecureUrl(String),
    #[error("{0}")]
    BadValue(String),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Mapping(#[from] MappingConfigError),
    #[error(transparent)]
    Zendesk(#[from] ZendeskFileError),
}

/// Where the import sends its requests.
#[derive(Debug)]
pub enum Target {
    /// A real (or foreign) API.
    Remote {
        base_url: Url,
        api_key: SecretString,
    },
    /// The sandbox, started in this process.
    Sandbox,
}

impl Target {
    /// The API a checkpoint written by this run belongs to.
    pub fn api_target(&self) -> ApiTarget {
        match self {
            Target::Remote { base_url, .. } => ApiTarget::of_base_url(base_url),
            Target::Sandbox => ApiTarget::sandbox(),
        }
    }
}

/// The checkpoint of a real import, when no `--checkpoint` names one.
pub const DEFAULT_CHECKPOINT: &str = "kustomer-import.sqlite";
/// The checkpoint of a rehearsal (`--sandbox`), when no `--checkpoint` names one: a
/// rehearsal never records its sandbox's ids where a real run would take them as done.
pub const DEFAULT_SANDBOX_CHECKPOINT: &str = "kustomer-import.sandbox.sqlite";

/// The checkpoint a command uses: the one named, else the default of a real import or of
/// a rehearsal.
pub fn checkpoint_path(named: Option<&Path>, sandbox: bool) -> PathBuf {
    match named {
        Some(path) => path.to_path_buf(),
        None if sandbox => PathBuf::from(DEFAULT_SANDBOX_CHECKPOINT),
        None => PathBuf::from(DEFAULT_CHECKPOINT),
    }
}

/// A file beside the checkpoint: its path with `suffix` appended.
fn beside_checkpoint(checkpoint: &Path, suffix: &str) -> PathBuf {
    let mut name = checkpoint.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where `import` reports: the checkpoint and errors file it names, and whether the summary
/// is one JSON object. Known from the flags before any of them is checked, so that a run
/// that cannot start reports the same way as one that ran.
#[derive(Clone, Debug)]
pub struct ImportOutput {
    pub checkpoint: PathBuf,
    pub errors: PathBuf,
    /// The summary as one JSON object on stdout.
    pub json: bool,
    /// A rehearsal: where the sandbox keeps its records, to say that nothing reached
    /// Kustomer and where the rehearsal's state is.
    pub sandbox_records: Option<PathBuf>,
}

pub fn import_output(args: &ImportArgs) -> ImportOutput {
    let checkpoint = checkpoint_path(args.checkpoint.as_deref(), args.sandbox);
    let errors = args
        .errors
        .clone()
        .unwrap_or_else(|| beside_checkpoint(&checkpoint, ".errors.csv"));
    let sandbox_records = args
        .sandbox
        .then(|| beside_checkpoint(&checkpoint, ".sandbox.jsonl"));
    ImportOutput {
        checkpoint,
        errors,
        json: args.json,
        sandbox_records,
    }
}

/// Everything `import` needs, checked.
#[derive(Debug)]
pub struct ImportConfig {
    pub inputs: Vec<InputSource>,
    pub settings: ImportSettings,
    pub target: Target,
    /// Let a checkpoint of another target go on against this one.
    pub retarget: bool,
    pub output: ImportOutput,
    pub rpm: u32,
    /// Use this fraction of the server's reported limit instead of `rpm`.
    pub rate_share: Option<f64>,
    pub rate_window: Duration,
    /// How long the API may let no request through before the run stops.
    pub max_stall: Duration,
    pub timeout: Duration,
    pub progress: bool,
}

/// Builds the import's settings from its flags and the key from the environment.
pub fn import_config(
    args: ImportArgs,
    api_key: Option<String>,
) -> Result<ImportConfig, ConfigError> {
    let target = api_target(
        args.sandbox,
        &args.base_url,
        args.allow_insecure_http,
        api_key,
    )?;
    let output = import_output(&args);
    let InputConfig {
        inputs,
        mapping,
        history,
        key_columns,
        derive_customer_ids,
    } = input_config(args.input)?;
    if args.limit == Some(0) {
        return Err(ConfigError::BadValue("--limit must be at least 1".into()));
    }
    if args.rpm == 0 {
        return Err(ConfigError::BadValue("--rpm must be at least 1".into()));
    }
    let default_author = match &args.default_author {
        Some(text) => Some(kustomer_import::pipeline::agent_email(text).ok_or_else(|| {
            ConfigError::BadValue(format!("--default-author {text:?} is not an email"))
        })?),
        None => None,
    };
    let rate_window = positive_seconds(args.rate_window, "--rate-window")?;
    let concurrency = match args.concurrency {
        Some(0) => {
            return Err(ConfigError::BadValue(
                "--concurrency must be at least 1".into(),
            ));
        }
        Some(n) => Concurrency::Fixed(n),
        None => Concurrency::FromLatency {
            requests_per_second: f64::from(args.rpm) / rate_window.as_secs_f64(),
        },
    };
    // The child file or rows-are-messages go on in the read settings.
    let HistoryInput {
        messages: child,
        rows_are_messages,
    } = history;
    Ok(ImportConfig {
        inputs,
        settings: ImportSettings {
            concurrency,
            max_retries: args.max_retries,
            backoff: Backoff::default(),
            on_existing_customer: match args.on_existing_customer {
                OnExistingArg::Link => OnExistingCustomer::Link,
                OnExistingArg::Fail => OnExistingCustomer::Fail,
            },
            read: ReadSettings {
                mapping,
                derive_conversation_ids: !args.no_derived_conversation_ids,
                derive_customer_ids,
                limit: args.limit,
                history: None,
                child,
                rows_are_messages,
                key_columns,
            },
            grace: Duration::from_secs_f64(args.grace.max(0.0)),
            reconcile_delay: Duration::from_secs_f64(args.reconcile_delay.max(0.0)),
            retry_failed: args.retry_failed,
            stamp_imported_at: !args.no_stamp_imported_at,
            org_admin: args.org_admin,
            default_author,
            mode: match args.mode {
                ModeArg::Single => ImportMode::Single,
                ModeArg::Bulk => ImportMode::Bulk,
                ModeArg::Auto => ImportMode::Auto,
            },
            bulk_lost_wait: Duration::from_secs_f64(args.bulk_lost_wait.max(0.0)),
            sync: sync_rules(args.on_change, args.update_fields.as_deref())?,
            create_missing_tags: args.create_missing_tags,
        },
        target,
        retarget: args.retarget,
        output,
        rpm: args.rpm,
        rate_share: match args.rate_share {
            Some(share) if !(share > 0.0 && share <= 1.0) => {
                return Err(ConfigError::BadValue(
                    "--rate-share must be more than 0 and at most 1".into(),
                ));
            }
            share => share,
        },
        rate_window,
        max_stall: positive_seconds(args.max_stall, "--max-stall")?,
        timeout: positive_seconds(args.timeout, "--timeout")?,
        progress: !args.no_progress,
    })
}

/// The inputs and the mapping: the mapping file read and checked, and the CSV settings
/// from the flags, else from the mapping's `[csv]` section.
/// What `import` and `validate` both read, as the input flags give it.
#[derive(Debug)]
struct InputConfig {
    inputs: Vec<InputSource>,
    mapping: Mapping,
    history: HistoryInput,
    /// `--key-columns`, else the mapping file's `[conversation] key`.
    key_columns: Option<KeyColumns>,
    /// Name-only customers get a derived externalId (`ReadSettings::derive_customer_ids`).
    derive_customer_ids: bool,
}

fn input_config(args: InputArgs) -> Result<InputConfig, ConfigError> {
    let format = args
        .format
        .map(|format| match format {
            FormatArg::Csv => InputFormat::Csv,
            FormatArg::Jsonl => InputFormat::Jsonl,
        })
        // A preset's tickets are JSON lines whatever the file is called.
        .or(args.preset.map(|_| InputFormat::Jsonl));
    if args.files.iter().filter(|name| *name == "-").count() > 1 {
        return Err(ConfigError::BadValue(
            "stdin ('-') can be read only once".into(),
        ));
    }
    let flags = csv_flags(args.delimiter.as_deref(), args.encoding.as_deref())?;
    let (mapping, settings) = match (&args.preset, &args.mapping) {
        (Some(preset), _) => (preset_mapping(*preset, &args)?, flags),
        (None, _) if args.users.is_some() || args.organizations.is_some() => {
            return Err(ConfigError::BadValue(
                "--users and --organizations are read by a preset: give --preset zendesk-json \
                 with them"
                    .into(),
            ));
        }
        (None, None) => (Mapping::Default, flags),
        (None, Some(path)) => {
            let file = MappingFile::load(path)?;
            let settings = flags.or(file.csv);
            (Mapping::File(Arc::new(file)), settings)
        }
    };
    let max_record_size = parse_size(&args.max_record_size)
        .map_err(|reason| ConfigError::BadValue(format!("--max-record-size: {reason}")))?;
    let inputs = args
        .files
        .iter()
        .map(|name| {
            InputSource::new(name, format, settings)
                .map(|input| input.with_max_record_size(max_record_size))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let history = history_input(&args, &mapping, format, settings, max_record_size)?;
    let key_columns = match (&args.key_columns, &mapping) {
        (Some(list), _) => Some(
            KeyColumns::parse(list)
                .map_err(|reason| ConfigError::BadValue(format!("--key-columns: {reason}")))?,
        ),
        (None, Mapping::File(file)) => file.key_columns().cloned(),
        (None, _) => None,
    };
    if key_columns.is_some() && history.rows_are_messages {
        return Err(ConfigError::BadValue(
            "--rows-are-messages keys each conversation by its id (conversation.externalId): \
             key columns are for exports without one"
                .into(),
        ));
    }
    Ok(InputConfig {
        inputs,
        mapping,
        history,
        key_columns,
        derive_customer_ids: !args.no_derived_customer_ids,
    })
}

/// Where a run's history comes from besides the rows themselves (issue 17's shapes 2 and
/// 3): a child file of messages and notes, or rows that are messages.
#[derive(Debug, Default)]
pub struct HistoryInput {
    /// `--messages FILE`: read once, before any row is sent, into the thread store.
    pub messages: Option<InputSource>,
    /// `--rows-are-messages`: each row is one item, its conversation's columns repeated.
    pub rows_are_messages: bool,
}

/// `--messages` and `--rows-are-messages`, checked against each other and the mapping.
fn history_input(
    args: &InputArgs,
    mapping: &Mapping,
    format: Option<InputFormat>,
    settings: CsvSettings,
    max_record_size: usize,
) -> Result<HistoryInput, ConfigError> {
    let bad = |text: &str| Err(ConfigError::BadValue(text.into()));
    let file = match mapping {
        Mapping::File(file) => Some(file),
        Mapping::Default | Mapping::Zendesk(_) => None,
    };
    let maps_history = file.is_some_and(|file| file.has_history());
    if args.rows_are_messages && !maps_history {
        return bad("--rows-are-messages needs --mapping with a [message] or [note] section");
    }
    let Some(name) = &args.messages else {
        if args.rows_are_messages
            && let Some(file) = file
        {
            file.check_rows_are_messages()
                .map_err(ConfigError::BadValue)?;
        }
        return Ok(HistoryInput {
            messages: None,
            rows_are_messages: args.rows_are_messages,
        });
    };
    if args.rows_are_messages {
        return bad("--messages and --rows-are-messages are two shapes of history: give one");
    }
    if !maps_history || !file.is_some_and(|file| file.has_parent_column()) {
        return bad(
            "--messages needs --mapping with a [message] or [note] section and \
             history.conversation (the column naming each record's conversation)",
        );
    }
    if name == "-" {
        return bad("--messages reads a file, not stdin");
    }
    if let Err(error) = std::fs::File::open(name) {
        return Err(ConfigError::BadValue(format!(
            "--messages {name}: cannot read it: {error}"
        )));
    }
    // --format names the conversation file's format; the messages file's is its name's.
    let format = InputFormat::from_path(name).or(format);
    let source = InputSource::new(name, format, settings)?.with_max_record_size(max_record_size);
    Ok(HistoryInput {
        messages: Some(source),
        rows_are_messages: false,
    })
}

/// A preset's mapping: zendesk-json reads JSON tickets only, with the users file given by
/// --users and the organizations file by --organizations, read (and checked) here once.
fn preset_mapping(preset: PresetArg, args: &InputArgs) -> Result<Mapping, ConfigError> {
    match preset {
        PresetArg::ZendeskJson => {
            if matches!(args.format, Some(FormatArg::Csv))
                || args
                    .files
                    .iter()
                    .any(|name| InputFormat::from_path(name) == Some(InputFormat::Csv))
            {
                return Err(ConfigError::BadValue(
                    "--preset zendesk-json reads tickets.json (JSON, one ticket a line), not CSV"
                        .into(),
                ));
            }
            let users = args.users.as_ref().ok_or_else(|| {
                ConfigError::BadValue(
                    "--preset zendesk-json needs --users users.json: requesters and comment \
                     authors are found there by id"
                        .into(),
                )
            })?;
            let organizations = args.organizations.as_deref();
            let directory = ZendeskDirectory::load(users, organizations)?;
            Ok(Mapping::Zendesk(Arc::new(directory)))
        }
    }
}

/// A size in bytes as people write it: `4194304`, `4MiB`, `4M`, `512 KiB`, `10MB`. Binary
/// suffixes (KiB, MiB, GiB, and K, M, G alone) count in 1024s, decimal ones (KB, MB, GB)
/// in 1000s; case does not matter, nor a space before the suffix.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    let unit: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("{text:?} is not a size: give bytes, or e.g. 16MiB")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(unit))
        .and_then(|bytes| usize::try_from(bytes).ok())
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("{text:?} is not a size of at least one byte"))
}

/// What `validate` reads and where its report goes.
#[derive(Debug)]
pub struct ValidateConfig {
    pub inputs: Vec<InputSource>,
    pub history: HistoryInput,
    pub mapping: Mapping,
    /// Name-only customers get a derived externalId (`ReadSettings::derive_customer_ids`).
    pub derive_customer_ids: bool,
    /// The columns that identify a conversation without an id (`ReadSettings::key_columns`).
    pub key_columns: Option<KeyColumns>,
    pub errors: PathBuf,
    pub json: bool,
    /// `--check-users`: the API to look the agents up in. None: validate sends nothing.
    pub check_users: Option<ApiConfig>,
}

/// validate's settings. Its target flags are read only with `--check-users` (without it
/// validate sends nothing, as KUSTOMER_BASE_URL in the environment must not change); it
/// has no `--sandbox`: the built-in sandbox holds none of the org's users, so every agent
/// would be reported without one.
pub fn validate_config(
    args: ValidateArgs,
    api_key: Option<String>,
) -> Result<ValidateConfig, ConfigError> {
    let check_users = match args.check_users {
        true => Some(
            api_config(args.api, false, api_key).map_err(|error| match error {
                ConfigError::MissingKey => ConfigError::MissingKeyToCheckUsers,
                other => other,
            })?,
        ),
        false => None,
    };
    let InputConfig {
        inputs,
        mapping,
        history,
        key_columns,
        derive_customer_ids,
    } = input_config(args.input)?;
    Ok(ValidateConfig {
        inputs,
        history,
        mapping,
        derive_customer_ids,
        key_columns,
        errors: args.errors,
        json: args.json,
        check_users,
    })
}

/// `--delimiter` and `--encoding`, checked: the same flags for import, validate and
/// mapping init.
fn csv_flags(delimiter: Option<&str>, encoding: Option<&str>) -> Result<CsvSettings, ConfigError> {
    Ok(CsvSettings {
        delimiter: delimiter
            .map(parse_delimiter)
            .transpose()
            .map_err(|reason| ConfigError::BadValue(format!("--delimiter: {reason}")))?,
        encoding: encoding
            .map(parse_encoding)
            .transpose()
            .map_err(|reason| ConfigError::BadValue(format!("--encoding: {reason}")))?,
    })
}

/// What `mapping init` reads and writes.
pub fn mapping_init_config(args: MappingInitArgs) -> Result<InitConfig, ConfigError> {
    let settings = csv_flags(args.delimiter.as_deref(), args.encoding.as_deref())?;
    if args.file == "-" {
        return Err(ConfigError::BadValue(
            "mapping init reads a file, not stdin: give the export's path".into(),
        ));
    }
    Ok(InitConfig {
        // A name that says nothing of its format is read as CSV, which is all init reads.
        input: InputSource::new(
            &args.file,
            Some(InputFormat::from_path(&args.file).unwrap_or(InputFormat::Csv)),
            settings,
        )?,
        output: args.output,
        force: args.force,
    })
}

fn positive_seconds(value: f64, flag: &str) -> Result<Duration, ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(ConfigError::BadValue(format!(
            "{flag} must be a positive number of seconds"
        )))
    }
}

/// Parses the base URL and refuses plain http to anything but loopback, unless allowed.
/// Where a command that talks to the API sends: the built-in sandbox (`--sandbox`), or
/// `--base-url` with the key from the environment, which must be given.
fn api_target(
    sandbox: bool,
    base_url: &str,
    allow_insecure_http: bool,
    api_key: Option<String>,
) -> Result<Target, ConfigError> {
    if sandbox {
        return Ok(Target::Sandbox);
    }
    let api_key = api_key
        .filter(|key| !key.trim().is_empty())
        .ok_or(ConfigError::MissingKey)?;
    Ok(Target::Remote {
        base_url: checked_base_url(base_url, allow_insecure_http)?,
        api_key: SecretString::from(api_key.trim().to_string()),
    })
}

pub fn checked_base_url(raw: &str, allow_insecure_http: bool) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|error| ConfigError::BadUrl {
        url: raw.to_string(),
        reason: error.to_string(),
    })?;
    match url.scheme() {
        "https" => Ok(url),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(host)) => host.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                None => false,
            };
            if loopback || allow_insecure_http {
                Ok(url)
            } else {
                Err(ConfigError::InsecureUrl(raw.to_string()))
            }
        }
        other => Err(ConfigError::BadUrl {
            url: raw.to_string(),
            reason: format!("scheme {other:?} is not http or https"),
        }),
    }
}

/// What `export` writes, and where.
#[derive(Debug)]
pub struct ExportConfig {
    pub checkpoint: PathBuf,
    pub jsonl: bool,
    pub records: ExportRecords,
    /// None: stdout.
    pub output: Option<PathBuf>,
}

/// Which of the checkpoint's tables `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportRecords {
    /// The rows in this state (the id map).
    Rows(StateFilter),
    Agents,
    Companies,
    Tags,
}

/// A name `--update-fields` takes: a customer's or conversation's field as the API spells
/// it (`status`), or a message's or note's qualified by its kind (`message.preview`).
fn is_update_field(field: &str) -> bool {
    let name = match field.split_once('.') {
        Some(("message" | "note", name)) => name,
        Some(_) => return false,
        None => field,
    };
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric())
}

/// `--on-change` and `--update-fields`, checked: a field named must be one a body can have.
fn sync_rules(on_change: OnChangeArg, fields: Option<&[String]>) -> Result<SyncRules, ConfigError> {
    let update_fields = match fields {
        None => None,
        Some(fields) => {
            let fields: std::collections::BTreeSet<String> =
                fields.iter().map(|f| f.trim().to_string()).collect();
            if let Some(bad) = fields.iter().find(|f| !is_update_field(f)) {
                return Err(ConfigError::BadValue(format!(
                    "--update-fields: {bad:?} is not a field name (as the API spells it, e.g. \
                     status,tags,name; a message's or note's as message.preview, note.body)"
                )));
            }
            Some(fields)
        }
    };
    Ok(SyncRules {
        on_change: match on_change {
            OnChangeArg::Update => OnChange::Update,
            OnChangeArg::Skip => OnChange::Skip,
            OnChangeArg::Fail => OnChange::Fail,
        },
        update_fields,
    })
}

/// `resolve`: the checkpoint, the row and what was found.
#[derive(Debug)]
pub struct ResolveConfig {
    pub checkpoint: PathBuf,
    pub row_key: String,
    pub resolution: Resolution,
}

pub fn resolve_config(args: ResolveArgs) -> Result<ResolveConfig, ConfigError> {
    let resolution = match args.conversation_id {
        Some(id) if id.trim().is_empty() || id.trim() != id => {
            return Err(ConfigError::BadValue(format!(
                "--conversation-id {id:?}: a Kustomer id has no spaces"
            )));
        }
        Some(conversation_id) => Resolution::Found { conversation_id },
        None => Resolution::Absent,
    };
    Ok(ResolveConfig {
        checkpoint: checkpoint_path(args.read.checkpoint.as_deref(), args.read.sandbox),
        row_key: args.row_key,
        resolution,
    })
}

pub fn export_config(args: ExportArgs) -> Result<ExportConfig, ConfigError> {
    let records = match (args.records, args.state) {
        (RecordsArg::Rows, state) => ExportRecords::Rows(match state.unwrap_or(StateArg::Done) {
            StateArg::Done => StateFilter::Done,
            StateArg::Failed => StateFilter::Failed,
            StateArg::All => StateFilter::All,
        }),
        (_, Some(_)) => {
            return Err(ConfigError::BadValue(
                "--state picks rows: it goes with --records rows only (agents, companies and \
                 tags are written whole)"
                    .into(),
            ));
        }
        (RecordsArg::Agents, None) => ExportRecords::Agents,
        (RecordsArg::Companies, None) => ExportRecords::Companies,
        (RecordsArg::Tags, None) => ExportRecords::Tags,
    };
    Ok(ExportConfig {
        checkpoint: checkpoint_path(args.read.checkpoint.as_deref(), args.read.sandbox),
        jsonl: args.format == FormatArg::Jsonl,
        records,
        output: args.output,
    })
}

/// What `verify` checks, against which API.
#[derive(Debug)]
pub struct VerifyConfig {
    pub checkpoint: PathBuf,
    pub target: Target,
    /// With --sandbox: the records file the rehearsal's sandbox keeps.
    pub sandbox_records: Option<PathBuf>,
    pub selection: kustomer_import::verify::Selection,
    pub rpm: u32,
    pub timeout: Duration,
    pub json: bool,
}

/// The checkpoint, the API and its key, the rate and the timeout of a command that reads
/// back or deletes what an import made (`verify`, `undo`).
#[derive(Debug)]
pub struct MadeRecordsConfig {
    pub checkpoint: PathBuf,
    pub target: Target,
    /// With --sandbox: the records file the rehearsal's sandbox keeps.
    pub sandbox_records: Option<PathBuf>,
    pub rpm: u32,
    pub timeout: Duration,
    pub json: bool,
}

fn made_records_config(
    args: MadeRecordsArgs,
    api_key: Option<String>,
) -> Result<MadeRecordsConfig, ConfigError> {
    let checkpoint = checkpoint_path(args.checkpoint.as_deref(), args.sandbox);
    let ApiConfig {
        target,
        rpm,
        timeout,
    } = api_config(args.api, args.sandbox, api_key)?;
    Ok(MadeRecordsConfig {
        sandbox_records: args
            .sandbox
            .then(|| beside_checkpoint(&checkpoint, ".sandbox.jsonl")),
        checkpoint,
        target,
        rpm,
        timeout,
        json: args.json,
    })
}

/// The API a command other than `import` talks to (`verify`, `undo`, `validate
/// --check-users`), checked: where, with which key, at what rate and timeout.
#[derive(Debug)]
pub struct ApiConfig {
    pub target: Target,
    pub rpm: u32,
    pub timeout: Duration,
}

fn api_config(
    args: ApiArgs,
    sandbox: bool,
    api_key: Option<String>,
) -> Result<ApiConfig, ConfigError> {
    let target = api_target(sandbox, &args.base_url, args.allow_insecure_http, api_key)?;
    if args.rpm == 0 {
        return Err(ConfigError::BadValue("--rpm must be at least 1".into()));
    }
    Ok(ApiConfig {
        target,
        rpm: args.rpm,
        timeout: positive_seconds(args.timeout, "--timeout")?,
    })
}

/// What `undo` deletes, in which API.
#[derive(Debug)]
pub struct UndoConfig {
    pub made: MadeRecordsConfig,
    pub scope: kustomer_import::checkpoint::undo::UndoScope,
    pub dry_run: bool,
    /// Whether the user said yes on the command line (--yes).
    pub yes: bool,
    pub mode: kustomer_import::undo::UndoMode,
}

pub fn undo_config(args: UndoArgs, api_key: Option<String>) -> Result<UndoConfig, ConfigError> {
    use kustomer_import::checkpoint::undo::UndoScope;
    let scope = match (args.run, args.all) {
        (Some(id), false) => UndoScope::Run(id),
        (None, true) => UndoScope::All,
        _ => {
            return Err(ConfigError::BadValue(
                "undo needs --run ID (one run, as status lists them) or --all".into(),
            ));
        }
    };
    Ok(UndoConfig {
        made: made_records_config(args.target, api_key)?,
        scope,
        dry_run: args.dry_run,
        yes: args.yes,
        mode: match args.mode {
            ModeArg::Single => kustomer_import::undo::UndoMode::Single,
            ModeArg::Bulk => kustomer_import::undo::UndoMode::Bulk,
            ModeArg::Auto => kustomer_import::undo::UndoMode::Auto,
        },
    })
}

pub fn verify_config(
    args: VerifyArgs,
    api_key: Option<String>,
) -> Result<VerifyConfig, ConfigError> {
    let made = made_records_config(args.target, api_key)?;
    let selection = match args.sample {
        Some(0) => {
            return Err(ConfigError::BadValue("--sample must be at least 1".into()));
        }
        Some(n) => kustomer_import::verify::Selection::Sample(n),
        None => kustomer_import::verify::Selection::All,
    };
    Ok(VerifyConfig {
        sandbox_records: made.sandbox_records,
        checkpoint: made.checkpoint,
        target: made.target,
        selection,
        rpm: made.rpm,
        timeout: made.timeout,
        json: made.json,
    })
}

/// The sandbox server's settings and port.
pub fn sandbox_config(args: &SandboxArgs) -> Result<(SandboxConfig, u16), ConfigError> {
    for (flag, rate) in [
        ("--fail-rate", args.fail_rate),
        ("--fail-after-write-rate", args.fail_after_write_rate),
        ("--drop-after-write-rate", args.drop_after_write_rate),
        ("--hang-after-write-rate", args.hang_after_write_rate),
        ("--busy-rate", args.busy_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(ConfigError::BadValue(format!(
                "{flag} must be between 0 and 1"
            )));
        }
    }
    let config = SandboxConfig {
        token: args.token.clone().filter(|token| !token.is_empty()),
        rpm: args.rpm,
        rate_window: positive_seconds(args.rate_window, "--rate-window")?,
        latency: Duration::from_millis(args.latency_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        faults: FaultConfig {
            fail_rate: args.fail_rate,
            fail_after_write_rate: args.fail_after_write_rate,
            drop_after_write_rate: args.drop_after_write_rate,
            hang_after_write_rate: args.hang_after_write_rate,
            busy_rate: args.busy_rate,
            revoke_after: args.revoke_after,
            seed: args.seed,
        },
        spec_style: args.spec_style,
        custom_attributes: args.custom_attributes.clone(),
        bulk_delay: Duration::from_millis(args.bulk_delay_ms),
        bulk_refuse_invalid: args.bulk_refuse_invalid,
        without_bulk: args.without_bulk,
        records: args.records.clone(),
        org_admin: args.org_admin,
        per_object_update_limit: args.per_object_update_limit,
        ..SandboxConfig::default()
    };
    Ok((config, args.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_only() {
        assert!(checked_base_url("http://127.0.0.1:8080", false).is_ok());
        assert!(checked_base_url("http://localhost:8080", false).is_ok());
        assert!(checked_base_url("http://[::1]:8080", false).is_ok());
        assert!(matches!(
            checked_base_url("http://api.kustomerapp.com", false),
            Err(ConfigError::InsecureUrl(_))
        ));
        assert!(checked_base_url("http://api.kustomerapp.com", true).is_ok());
        assert!(checked_base_url("https://api.kustomerapp.com", false).is_ok());
        assert!(checked_base_url("ftp://x", true).is_err());
    }

    fn import_args(extra: &[&str]) -> ImportArgs {
        use clap::Parser;
        let mut argv = vec!["kustomer-import", "import", "x.csv"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Import(args) => *args,
            _ => unreachable!(),
        }
    }

    fn validate_args(argv: &[&str]) -> ValidateArgs {
        use clap::Parser;
        let argv = [&["kustomer-import", "validate"], argv].concat();
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Validate(args) => args,
            _ => unreachable!(),
        }
    }

    fn refusal(argv: &[&str]) -> String {
        validate_config(validate_args(argv), None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_zendesk_preset_needs_its_users_and_json_tickets() {
        let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/zendesk");
        let tickets = format!("{samples}/tickets.json");
        let users = format!("{samples}/users.json");
        let preset = ["--preset", "zendesk-json"];
        let config = validate_config(
            validate_args(&[&preset[..], &[&tickets, "--users", &users]].concat()),
            None,
        )
        .unwrap();
        assert!(
            matches!(&config.mapping, Mapping::Zendesk(directory) if directory.users.len() == 6)
        );
        assert!(refusal(&[&preset[..], &[&tickets]].concat()).contains("needs --users"));
        assert!(
            refusal(&[&preset[..], &[&tickets, "--users", "/no/users.json"]].concat())
                .starts_with("--users /no/users.json:")
        );
        let organizations = ["--users", &users, "--organizations", "/no/orgs.json"];
        assert!(
            refusal(&[&preset[..], &[&tickets], &organizations[..]].concat())
                .starts_with("--organizations /no/orgs.json:")
        );
        assert!(refusal(&[&tickets, "--organizations", &users]).contains("give --preset"));
        assert!(
            refusal(&[&preset[..], &["t.csv", "--users", &users]].concat()).contains("not CSV")
        );
        assert!(refusal(&[&tickets, "--users", &users]).contains("give --preset"));
    }

    #[test]
    fn a_rehearsal_has_a_checkpoint_of_its_own_unless_one_is_named() {
        let real = import_output(&import_args(&[]));
        assert_eq!(real.checkpoint, PathBuf::from("kustomer-import.sqlite"));
        assert_eq!(real.sandbox_records, None);
        let rehearsal = import_output(&import_args(&["--sandbox"]));
        assert_eq!(
            rehearsal.checkpoint,
            PathBuf::from("kustomer-import.sandbox.sqlite")
        );
        assert_eq!(
            rehearsal.errors,
            PathBuf::from("kustomer-import.sandbox.sqlite.errors.csv")
        );
        assert_eq!(
            rehearsal.sandbox_records,
            Some(PathBuf::from(
                "kustomer-import.sandbox.sqlite.sandbox.jsonl"
            ))
        );
        let named = import_output(&import_args(&["--sandbox", "--checkpoint", "r.sqlite"]));
        assert_eq!(named.checkpoint, PathBuf::from("r.sqlite"));
        assert_eq!(
            named.sandbox_records,
            Some(PathBuf::from("r.sqlite.sandbox.jsonl"))
        );
        let config = import_config(import_args(&["--retarget"]), Some("k".into())).unwrap();
        assert!(config.retarget);
        assert_eq!(
            config.target.api_target().as_str(),
            "https://api.kustomerapp.com:443"
        );
    }

    #[test]
    fn a_rate_share_is_a_fraction_of_one() {
        for bad in ["0", "-0.5", "1.5", "NaN"] {
            let result = import_config(
                import_args(&[&format!("--rate-share={bad}")]),
                Some("k".into()),
            );
            assert!(matches!(result, Err(ConfigError::BadValue(_))), "{bad}");
        }
        let config =
            import_config(import_args(&["--rate-share", "0.25"]), Some("k".into())).unwrap();
        assert_eq!(config.rate_share, Some(0.25));
    }

    #[test]
    fn sizes_take_the_usual_suffixes() {
        assert_eq!(parse_size("4194304"), Ok(4 << 20));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("4 m"), Ok(4 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        for bad in [
            "",
            "0",
            "MiB",
            "4 MeB",
            "-1",
            "1.5M",
            "99999999999999999999G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        let config = import_config(
            import_args(&["--sandbox", "--max-record-size", "64KiB"]),
            None,
        )
        .unwrap();
        assert_eq!(config.inputs[0].max_record_size, 64 << 10);
    }

    #[test]
    fn the_key_comes_from_the_environment_only_and_is_required_without_the_sandbox() {
        assert!(matches!(
            import_config(import_args(&[]), None),
            Err(ConfigError::MissingKey)
        ));
        assert!(matches!(
            import_config(import_args(&[]), Some("  ".into())),
            Err(ConfigError::MissingKey)
        ));
        assert!(import_config(import_args(&["--sandbox"]), None).is_ok());
    }

    #[test]
    fn history_flags_are_checked_against_the_mapping_and_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let mapping = dir.path().join("m.toml");
        std::fs::write(
            &mapping,
            "[customer]\nexternalId = \"c\"\n[history]\nconversation = \"p\"\n\
             [note]\nbody = \"b\"\n",
        )
        .unwrap();
        let plain = dir.path().join("plain.toml");
        std::fs::write(&plain, "[customer]\nexternalId = \"c\"\n").unwrap();
        let messages = dir.path().join("messages.csv");
        std::fs::write(&messages, "p,b\n").unwrap();
        // Rows that are messages, grouped by conversation.externalId: from p (and
        // history.conversation reading the same column), or from q (which it does not).
        let grouped = |name: &str, conversation: &str| {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                format!(
                    "[customer]\nexternalId = \"c\"\n[conversation]\nexternalId = \
                     \"{conversation}\"\n[history]\nconversation = \"p\"\n[note]\nbody = \"b\"\n"
                ),
            )
            .unwrap();
            path.to_str().unwrap().to_string()
        };
        let (by_p, by_q) = (grouped("by_p.toml", "p"), grouped("by_q.toml", "q"));
        let (mapping, plain, messages) = (
            mapping.to_str().unwrap(),
            plain.to_str().unwrap(),
            messages.to_str().unwrap(),
        );
        let history = |extra: &[&str]| -> Result<HistoryInput, String> {
            input_config(import_args(extra).input)
                .map(|config| config.history)
                .map_err(|error| error.to_string())
        };
        let given = history(&["--mapping", mapping, "--messages", messages]).unwrap();
        assert_eq!(given.messages.unwrap().name, messages);
        assert!(
            history(&["--mapping", &by_p, "--rows-are-messages"])
                .unwrap()
                .rows_are_messages
        );
        for (extra, expected) in [
            (vec!["--messages", messages], "needs --mapping"),
            (
                vec!["--mapping", plain, "--messages", messages],
                "needs --mapping",
            ),
            (
                vec!["--mapping", plain, "--rows-are-messages"],
                "needs --mapping",
            ),
            (
                vec![
                    "--mapping",
                    mapping,
                    "--messages",
                    messages,
                    "--rows-are-messages",
                ],
                "give one",
            ),
            (
                vec!["--mapping", mapping, "--messages", "/nonexistent/m.csv"],
                "cannot read it",
            ),
            (
                vec!["--mapping", mapping, "--rows-are-messages"],
                "map conversation.externalId",
            ),
            (
                vec!["--mapping", &by_q, "--rows-are-messages"],
                "history.conversation reads other columns (p)",
            ),
        ] {
            let error = history(&extra).err().unwrap();
            assert!(error.contains(expected), "{extra:?}: {error}");
        }
    }

    #[test]
    fn the_sandbox_takes_a_per_object_update_limit() {
        use clap::Parser;
        let config = |extra: &[&str]| {
            let argv = [&["kustomer-import", "sandbox"], extra].concat();
            match crate::cli::Cli::try_parse_from(argv).unwrap().command {
                crate::cli::Command::Sandbox(args) => sandbox_config(&args).unwrap().0,
                _ => unreachable!(),
            }
        };
        assert_eq!(config(&[]).per_object_update_limit, None);
        let limited = config(&["--per-object-update-limit", "3"]);
        assert_eq!(limited.per_object_update_limit, Some(3));
    }
}
