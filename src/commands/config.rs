//! The override layer of the pipeline's processor settings, and `tradestream config`.
//!
//! The `[features]`, `[scorer]`, `[router]`, `[exchange]` and `[sink]` settings come from
//! four layers, each beating the one before: the defaults, the `--config` TOML file,
//! `TRADESTREAM__<SECTION>__<FIELD>[__...]` environment variables and repeatable
//! `--set section.field=value` flags. Containers and Helm charts set environment variables,
//! people at a shell type flags, and neither should have to write a file to change one
//! window or one risk limit (DEVELOPERS.md: every setting is also an env var and a flag).
//!
//! The layer is generic rather than one clap flag per field: it edits the settings as a TOML
//! tree, addressed by path, and the processors' own serde structs (`deny_unknown_fields`)
//! then decide what is a setting and what type it has. So a new field in a processor's
//! config is overridable the day it lands, and `config env` lists it from the effective
//! tree, never from a hand-kept table. Overrides apply on top of the *effective* file
//! configuration (defaults filled in), so `--set router.accounts.paper.initial_capital=5e4`
//! adds an account beside the default one instead of replacing the whole map, and map keys
//! can be matched case-insensitively against keys that exist. Every error names the setting
//! and where the offending value came from (the file, which variable, which flag).
//!
//! The `--set` flags of `run`, `up` and `demo` are parsed by clap; [`remember_cli`] keeps them
//! for the process so [`PipelineConfig::load`] sees them wherever it is called, the same way
//! it sees the environment.

use super::pipeline::PipelineConfig;
use clap::{Args, Subcommand};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use toml::{Table, Value};

/// Prefix of the environment overrides. The double underscore keeps them apart from the
/// single-underscore `TRADESTREAM_*` variables of the CLI flags (`TRADESTREAM_CONFIG`, ...).
pub(crate) const ENV_PREFIX: &str = "TRADESTREAM__";
/// Separator of path segments in environment variable names.
const ENV_SEPARATOR: &str = "__";

/// `--set PATH=VALUE`, on every subcommand that loads the pipeline configuration.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct SetArgs {
    /// Override one processor setting, e.g. `--set features.rsi_period=21` or
    /// `--set router.accounts.demo.limits.max_open_orders=50` (repeatable; later wins). The
    /// value is a TOML literal (number, bool, array, inline table), else taken as a string.
    /// Beats TRADESTREAM__SECTION__FIELD variables, which beat the --config file; `tradestream
    /// config env` lists every setting.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub(crate) set: Vec<String>,
}

/// `tradestream config`.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    pub(crate) action: ConfigAction,
}

/// What `config` does.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigAction {
    /// Print the effective processor configuration as TOML (defaults < --config file <
    /// TRADESTREAM__* variables < --set), validated: what `run`, `up` and `demo` would use.
    Show(SourceArgs),
    /// List every processor setting with its --set path, environment variable and effective
    /// value.
    Env(EnvArgs),
}

/// Where `config show` / `config env` take the settings from: the same sources as a run.
#[derive(Debug, Args)]
pub(crate) struct SourceArgs {
    /// TOML file with [features], [scorer], [router], [exchange], [sink] sections.
    #[arg(long, env = "TRADESTREAM_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) overrides: SetArgs,
}

/// `config env`.
#[derive(Debug, Args)]
pub(crate) struct EnvArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Print a Markdown table instead of aligned columns.
    #[arg(long, env = "TRADESTREAM_CONFIG_MARKDOWN", default_value_t = false)]
    pub(crate) markdown: bool,
}

/// Where an override came from; errors name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// An environment variable, by name.
    Env(String),
    /// A `--set` flag, as given.
    Cli(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Cli(arg) => write!(f, "--set {arg}"),
        }
    }
}

/// One override: a path into the settings tree and a raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Override {
    /// Where it came from.
    pub(crate) source: Source,
    /// Path segments as written (environment ones upper-case).
    segments: Vec<String>,
    /// The value as written.
    raw: String,
}

impl Override {
    /// Whether a segment with no existing key is lower-cased (environment variable names are
    /// upper-case by convention, settings and account ids lower-case) or kept as written.
    fn lowercases_new_keys(&self) -> bool {
        matches!(self.source, Source::Env(_))
    }
}

/// The overrides of environment variables named `TRADESTREAM__...`, sorted by name so the
/// outcome never depends on the environment's order. Problems name the variable.
pub(crate) fn env_overrides(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<Vec<Override>, Vec<String>> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in vars {
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let source = Source::Env(name.to_string());
        let Some(value) = value.to_str() else {
            problems.push(format!("{source}: the value is not valid UTF-8"));
            continue;
        };
        let segments: Vec<String> = rest.split(ENV_SEPARATOR).map(str::to_string).collect();
        if segments
            .iter()
            .any(|s| s.trim().is_empty() || s.trim() != s)
        {
            problems.push(format!(
                "{source}: malformed name; expected {ENV_PREFIX}<SECTION>__<FIELD>[__<KEY>...] \
                 with non-empty segments separated by a double underscore"
            ));
            continue;
        }
        found.push(Override {
            source,
            segments,
            raw: value.to_string(),
        });
    }
    found.sort_by_key(|o| o.source.to_string());
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

/// The overrides of `--set PATH=VALUE` flags, in the order given. Problems name the flag.
pub(crate) fn cli_overrides(sets: &[String]) -> Result<Vec<Override>, Vec<String>> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for arg in sets {
        let source = Source::Cli(arg.clone());
        let Some((path, raw)) = arg.split_once('=') else {
            problems.push(format!(
                "{source}: expected section.field=value, e.g. features.rsi_period=21"
            ));
            continue;
        };
        let segments: Vec<String> = path
            .trim()
            .split('.')
            .map(|s| s.trim().to_string())
            .collect();
        if segments.iter().any(String::is_empty) {
            problems.push(format!(
                "{source}: malformed path {path:?}; expected section.field[.key...]"
            ));
            continue;
        }
        found.push(Override {
            source,
            segments,
            raw: raw.trim().to_string(),
        });
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

static CLI_SETS: OnceLock<Vec<String>> = OnceLock::new();

/// Keeps the `--set` flags of the command line for [`process_overrides`]. Called once, by
/// `main`, before any command runs; later calls are ignored.
pub(crate) fn remember_cli(command: &crate::args::Command) {
    use crate::args::Command;
    let sets = match command {
        Command::Run(a) => a.process.overrides.set.clone(),
        Command::Up(a) => a.process.overrides.set.clone(),
        Command::Demo(a) => a.overrides.set.clone(),
        Command::Bench(a) => a.overrides.set.clone(),
        _ => Vec::new(),
    };
    let _ = CLI_SETS.set(sets);
}

/// This process's overrides: the `TRADESTREAM__*` environment, then the `--set` flags.
pub(crate) fn process_overrides() -> anyhow::Result<Vec<Override>> {
    let cli = CLI_SETS.get().map(Vec::as_slice).unwrap_or_default();
    overrides_from(std::env::vars_os(), cli)
}

/// Environment overrides followed by command-line ones (so the command line wins), every
/// malformed one reported.
pub(crate) fn overrides_from(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    sets: &[String],
) -> anyhow::Result<Vec<Override>> {
    let env = env_overrides(vars);
    let cli = cli_overrides(sets);
    match (env, cli) {
        (Ok(mut env), Ok(cli)) => {
            env.extend(cli);
            Ok(env)
        }
        (env, cli) => {
            let problems: Vec<String> = env.err().into_iter().chain(cli.err()).flatten().collect();
            Err(problems_error(&problems, None))
        }
    }
}

/// All problems as one error. With a file, the header names it (TRADESTREAM_CONFIG /
/// --config), since problems without an override's name come from the file or the defaults.
fn problems_error(problems: &[String], file: Option<&Path>) -> anyhow::Error {
    let from = file
        .map(|f| format!(" from TRADESTREAM_CONFIG / --config {}", f.display()))
        .unwrap_or_default();
    anyhow::anyhow!(
        "invalid pipeline configuration{from} (see docs/configuration.md):\n  - {}",
        problems.join("\n  - ")
    )
}

/// The effective settings: `file` (defaults when `None`) with `overrides` applied in order,
/// passed through `link` (settings derived from others), then validated. Every problem is
/// reported at once, each naming the setting and the file, variable or flag it came from.
pub(crate) fn effective(
    file: Option<&Path>,
    overrides: &[Override],
    link: impl FnOnce(PipelineConfig) -> PipelineConfig,
) -> anyhow::Result<PipelineConfig> {
    let (config, mut problems) = resolve_lenient(file, overrides)?;
    let config = link(config);
    problems.extend(validation_problems(&config, overrides));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems_error(&problems, file))
    }
}

/// The settings of `file` with `overrides` applied, not yet validated; errors name the
/// setting and its source.
#[cfg(test)]
fn resolve(file: Option<&Path>, overrides: &[Override]) -> anyhow::Result<PipelineConfig> {
    let (config, problems) = resolve_lenient(file, overrides)?;
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems_error(&problems, file))
    }
}

/// [`resolve`], but the overrides that do not fit are left out and reported as problems, so
/// the range checks can still run on the rest. A bad file is an error at once.
fn resolve_lenient(
    file: Option<&Path>,
    overrides: &[Override],
) -> anyhow::Result<(PipelineConfig, Vec<String>)> {
    let base = match file {
        None => PipelineConfig::default(),
        Some(path) => {
            let where_ = format!("TRADESTREAM_CONFIG / --config {}", path.display());
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{where_}: cannot read: {e}"))?;
            let table: Table =
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{where_}: {e}"))?;
            deserialize(table).map_err(|(path, e)| anyhow::anyhow!("{where_}: `{path}`: {e}"))?
        }
    };
    if overrides.is_empty() {
        return Ok((base, Vec::new()));
    }
    let effective = to_table(&base)?;
    let mut problems = Vec::new();
    // Overrides that cannot even be placed in the tree are reported and left out.
    let mut placed: Vec<(&Override, String)> = Vec::new();
    let mut probe = effective.clone();
    for o in overrides {
        match apply(&mut probe, o) {
            Ok(path) => placed.push((o, path)),
            Err(e) => problems.push(format!("{}: {e}", o.source)),
        }
    }
    // Serde stops at the first error: blame the override that set that value, drop it and
    // try again, so every bad override is reported at once.
    loop {
        let mut tree = effective.clone();
        for (o, _) in &placed {
            apply(&mut tree, o).map_err(|e| anyhow::anyhow!("{}: {e}", o.source))?;
        }
        match deserialize(tree) {
            Ok(config) => return Ok((config, problems)),
            Err((path, e)) => {
                let culprit = placed
                    .iter()
                    .rposition(|(_, set)| paths_overlap(set, &path));
                match culprit {
                    Some(i) => {
                        let (o, set) = placed.remove(i);
                        problems.push(format!("{}: setting `{set}`: {e}", o.source));
                    }
                    None => {
                        problems.push(format!("setting `{path}`: {e}"));
                        return Err(problems_error(&problems, file));
                    }
                }
            }
        }
    }
}

/// Whether a value set at `set` can be the cause of an error at `error`: the same setting,
/// inside it (a table or array it set), or a parent it added to (a missing field).
fn paths_overlap(set: &str, error: &str) -> bool {
    let under = |inner: &str, outer: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    };
    under(error, set) || under(set, error)
}

/// Deserializes a settings tree, reporting the path of the first bad value.
fn deserialize(tree: Table) -> Result<PipelineConfig, (String, String)> {
    serde_path_to_error::deserialize(Value::Table(tree)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // toml appends the key (`\nin `features``), which the path already names.
        let message = match message.split_once("\nin `") {
            Some((first, _)) => first,
            None => &message,
        };
        (path, message.trim().to_string())
    })
}

/// The settings as a TOML tree (absent optional settings are left out).
fn to_table(config: &PipelineConfig) -> anyhow::Result<Table> {
    match Value::try_from(config) {
        Ok(Value::Table(t)) => Ok(t),
        Ok(other) => anyhow::bail!("settings serialized as a {}", other.type_str()),
        Err(e) => anyhow::bail!("cannot represent the settings as TOML: {e}"),
    }
}

/// Puts one override into the tree; returns the dotted path it set, with the keys used.
fn apply(tree: &mut Table, o: &Override) -> Result<String, String> {
    let mut table = tree;
    let mut path = Vec::with_capacity(o.segments.len());
    let (last, parents) = o
        .segments
        .split_last()
        .ok_or_else(|| "empty setting path".to_string())?;
    for segment in parents {
        let key = key_for(table, segment, o)?;
        path.push(key.clone());
        let entry = table
            .entry(key)
            .or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(t) => t,
            other => {
                return Err(format!(
                    "setting `{}` is not a section (it holds a {})",
                    path.join("."),
                    other.type_str()
                ));
            }
        };
    }
    let key = key_for(table, last, o)?;
    path.push(key.clone());
    let value = parse_value(&o.raw, table.get(&key));
    table.insert(key, value);
    Ok(path.join("."))
}

/// The tree key a path segment addresses: an exact match, else the one existing key equal
/// ignoring case, else the segment itself (lower-cased for environment variables).
fn key_for(table: &Table, segment: &str, o: &Override) -> Result<String, String> {
    if table.contains_key(segment) {
        return Ok(segment.to_string());
    }
    let matches: Vec<&String> = table
        .keys()
        .filter(|k| k.eq_ignore_ascii_case(segment))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] if o.lowercases_new_keys() => Ok(segment.to_ascii_lowercase()),
        [] => Ok(segment.to_string()),
        many => Err(format!(
            "`{segment}` matches several keys ignoring case ({}); use --set with the exact key",
            many.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A raw value as TOML: where the setting holds a string (text, or an exact decimal amount)
/// the raw text is that string (unless written as a quoted TOML string); otherwise a TOML
/// literal (integer, float, bool, array, inline table), falling back to a string. TOML dates
/// and times become strings, which is how the settings' serde types read them.
fn parse_value(raw: &str, existing: Option<&Value>) -> Value {
    let literal = toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"));
    match (existing, literal) {
        (Some(Value::String(_)), Some(Value::String(s))) => Value::String(s),
        (Some(Value::String(_)), _) => Value::String(raw.to_string()),
        (_, Some(v)) => dates_as_strings(v),
        (_, None) => Value::String(raw.to_string()),
    }
}

fn dates_as_strings(v: Value) -> Value {
    match v {
        Value::Datetime(d) => Value::String(d.to_string()),
        Value::Array(a) => Value::Array(a.into_iter().map(dates_as_strings).collect()),
        Value::Table(t) => Value::Table(
            t.into_iter()
                .map(|(k, v)| (k, dates_as_strings(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Every section's `validate()`, all problems together, each naming the setting by its full
/// path and, when an override set it, the variable or flag.
fn validation_problems(config: &PipelineConfig, overrides: &[Override]) -> Vec<String> {
    let mut problems: Vec<(&str, String)> = Vec::new();
    let mut section = |name: &'static str, result: Result<(), Vec<String>>| {
        if let Err(list) = result {
            problems.extend(list.into_iter().map(|p| (name, p)));
        }
    };
    section("features", config.features.validate());
    section("scorer", config.scorer.validate());
    section(
        "router",
        config.router.validate().map_err(|e| match e {
            tradestream_router::RouterError::Config { problems } => problems,
            other => vec![other.to_string()],
        }),
    );
    section(
        "exchange",
        config.exchange.validate().map_err(|e| match e {
            tradestream_exchange::ExchangeError::Config { problems } => problems,
            other => vec![other.to_string()],
        }),
    );
    section("sink", config.sink.validate());
    problems
        .into_iter()
        .map(|(section, problem)| {
            let Some((setting, what)) = setting_of(section, &problem) else {
                return format!("{section}: {problem}");
            };
            let source = overrides
                .iter()
                .rev()
                .find(|o| normalized(o).eq_ignore_ascii_case(&setting));
            match source {
                Some(o) => format!("{setting}:{what} (set by {})", o.source),
                None => format!("{setting}:{what}"),
            }
        })
        .collect()
}

/// The full path of the setting a section's problem (`setting: what is wrong`) names, and
/// the rest. Sections name settings by field or dotted path (`rsi_period`,
/// `accounts.demo.limits.price_band_pct`), some by their old variable
/// (`TRADESTREAM_SCORER_BUY_THRESHOLD`) or both (`TRADESTREAM_SINK_BATCH_SIZE (batch_size)`).
fn setting_of(section: &str, problem: &str) -> Option<(String, String)> {
    let (head, rest) = problem.split_once(':')?;
    let head = head.trim();
    let field = match head.rsplit_once(" (") {
        Some((_, inner)) => inner.strip_suffix(')')?.to_string(),
        None => {
            let old_var = format!("TRADESTREAM_{}_", section.to_ascii_uppercase());
            match head.strip_prefix(&old_var) {
                Some(name) => name.to_ascii_lowercase(),
                None => head.to_string(),
            }
        }
    };
    let is_path = !field.is_empty()
        && field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    is_path.then(|| (format!("{section}.{field}"), rest.to_string()))
}

fn normalized(o: &Override) -> String {
    o.segments.join(".")
}

/// One row of `config env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SettingRow {
    /// Dotted path, as `--set` takes it.
    pub(crate) path: String,
    /// The environment variable.
    pub(crate) env: String,
    /// The effective value as a TOML literal, or `(unset)`.
    pub(crate) value: String,
}

/// Every setting of `config` (leaves of its tree; optional settings included while unset),
/// with its variable and its effective value.
pub(crate) fn settings(config: &PipelineConfig) -> anyhow::Result<Vec<SettingRow>> {
    let json = serde_json::to_value(config)?;
    let mut rows = Vec::new();
    walk(&json, &mut Vec::new(), &mut rows);
    Ok(rows)
}

fn walk(v: &serde_json::Value, path: &mut Vec<String>, rows: &mut Vec<SettingRow>) {
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                path.push(k.clone());
                walk(child, path, rows);
                path.pop();
            }
        }
        leaf => rows.push(SettingRow {
            path: path.join("."),
            env: format!(
                "{ENV_PREFIX}{}",
                path.iter()
                    .map(|s| s.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join(ENV_SEPARATOR)
            ),
            value: json_as_toml(leaf),
        }),
    }
}

fn json_as_toml(v: &serde_json::Value) -> String {
    if v.is_null() {
        return "(unset)".to_string();
    }
    match toml::Value::try_from(v) {
        Ok(t) => t.to_string(),
        Err(_) => v.to_string(),
    }
}

/// `tradestream config show|env`.
pub(crate) fn run(args: ConfigArgs) -> anyhow::Result<()> {
    match args.action {
        ConfigAction::Show(source) => {
            let config = load(&source)?;
            print!("{}", toml::to_string(&config)?);
        }
        ConfigAction::Env(args) => {
            let config = load(&args.source)?;
            let rows = settings(&config)?;
            print!("{}", render_rows(&rows, args.markdown));
        }
    }
    Ok(())
}

fn load(source: &SourceArgs) -> anyhow::Result<PipelineConfig> {
    let overrides = overrides_from(std::env::vars_os(), &source.overrides.set)?;
    PipelineConfig::load_with(source.config.as_deref(), &overrides)
}

fn render_rows(rows: &[SettingRow], markdown: bool) -> String {
    let mut out = String::new();
    if markdown {
        out.push_str("| `--set` path | Environment variable | Value |\n|---|---|---|\n");
        for r in rows {
            out.push_str(&format!(
                "| `{}` | `{}` | `{}` |\n",
                r.path,
                r.env,
                r.value.replace('|', "\\|")
            ));
        }
        return out;
    }
    let (heads, w1, w2) = (
        ["SETTING (--set)", "ENVIRONMENT VARIABLE", "VALUE"],
        rows.iter().map(|r| r.path.len()).max().unwrap_or(0).max(15),
        rows.iter().map(|r| r.env.len()).max().unwrap_or(0).max(20),
    );
    out.push_str(&format!(
        "{:w1$}  {:w2$}  {}\n",
        heads[0], heads[1], heads[2]
    ));
    for r in rows {
        out.push_str(&format!("{:w1$}  {:w2$}  {}\n", r.path, r.env, r.value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use tradestream_schemas::AccountId;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn sets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn resolve_with(
        file: Option<&Path>,
        vars: &[(&str, &str)],
        flags: &[&str],
    ) -> anyhow::Result<PipelineConfig> {
        let overrides = overrides_from(env(vars), &sets(flags))?;
        resolve(file, &overrides)
    }

    fn account(id: &str) -> AccountId {
        AccountId::new(id).unwrap_or_else(|e| panic!("{id}: {e}"))
    }

    fn write_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn defaults_and_an_example_round_trip_through_the_tree() -> anyhow::Result<()> {
        let default = PipelineConfig::default();
        assert_eq!(
            deserialize(to_table(&default)?)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .features,
            default.features
        );
        let file = write_file(
            "[router.accounts.paper]\ninitial_capital = \"50000.25\"\nallow_short = true\n\
             [router.accounts.paper.limits]\nmax_order_notional = 1000\n\
             trading_hours = { start = \"09:30:00\", end = \"16:00:00\" }\n\
             [router]\ndefault_account = \"paper\"\n",
        );
        let config = resolve(Some(file.path()), &[])?;
        let again = deserialize(to_table(&config)?).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        assert_eq!(again.router, config.router);
        assert_eq!(again.exchange, config.exchange);
        assert_eq!(again.scorer, config.scorer);
        assert_eq!(again.sink, config.sink);
        Ok(())
    }

    #[test]
    fn env_and_flags_set_nested_settings_with_types() -> anyhow::Result<()> {
        let c = resolve_with(
            None,
            &[
                ("TRADESTREAM__FEATURES__RSI_PERIOD", "21"),
                ("TRADESTREAM__FEATURES__FEATURE_SET_VERSION", "fs-2"),
                ("TRADESTREAM__FEATURES__SMA_PERIODS", "[5, 30]"),
                ("TRADESTREAM__ROUTER__BRACKETS", "false"),
                ("TRADESTREAM__ROUTER__MIN_CONFIDENCE", "0.7"),
                (
                    "TRADESTREAM__ROUTER__ACCOUNTS__DEMO__LIMITS__MAX_OPEN_ORDERS",
                    "50",
                ),
                // Ignored: single underscore, not an override.
                ("TRADESTREAM_FEATURES_RSI_PERIOD", "99"),
            ],
            &[
                "scorer.buy_threshold=0.8",
                "router.accounts.demo.initial_capital=2500.50",
                "router.accounts.demo.limits.trading_hours={ start = 09:30:00, end = \"16:00:00\" }",
            ],
        )?;
        assert_eq!(c.features.rsi_period, 21);
        assert_eq!(c.features.feature_set_version, "fs-2");
        assert_eq!(c.features.sma_periods, vec![5, 30]);
        assert!(!c.router.brackets);
        assert!((c.router.min_confidence - 0.7).abs() < 1e-12);
        assert!((c.scorer.buy_threshold - 0.8).abs() < 1e-12);
        let demo = &c.router.accounts[&account("demo")];
        assert_eq!(demo.limits.max_open_orders, Some(50));
        assert_eq!(demo.initial_capital, rust_decimal::Decimal::new(250_050, 2));
        let hours = demo.limits.trading_hours.expect("trading hours set");
        assert_eq!(hours.start.to_string(), "09:30:00");
        // Untouched settings keep their defaults.
        assert_eq!(c.features.macd_slow, 26);
        assert_eq!(demo.limits.max_orders_per_second, Some(20));
        Ok(())
    }

    #[test]
    fn string_settings_take_the_raw_text() -> anyhow::Result<()> {
        let c = resolve_with(
            None,
            &[],
            &[
                "features.feature_set_version=2",
                "scorer.model_dir=\"my models\"",
            ],
        )?;
        assert_eq!(c.features.feature_set_version, "2");
        assert_eq!(c.scorer.model_dir, PathBuf::from("my models"));
        Ok(())
    }

    #[test]
    fn map_keys_match_existing_ones_ignoring_case_else_lowercase() -> anyhow::Result<()> {
        let file = write_file("[router.accounts.Paper]\n[router]\ndefault_account = \"Paper\"\n");
        let c = resolve_with(
            Some(file.path()),
            &[
                (
                    "TRADESTREAM__ROUTER__ACCOUNTS__PAPER__LIMITS__MAX_OPEN_ORDERS",
                    "7",
                ),
                ("TRADESTREAM__ROUTER__ACCOUNTS__SWING__ALLOW_SHORT", "true"),
            ],
            &["router.accounts.Desk.initial_capital=10"],
        )?;
        let keys: Vec<&str> = c.router.accounts.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, vec!["Desk", "Paper", "swing"]);
        assert_eq!(
            c.router.accounts[&account("Paper")].limits.max_open_orders,
            Some(7)
        );
        assert!(c.router.accounts[&account("swing")].allow_short);
        Ok(())
    }

    #[test]
    fn overrides_add_to_maps_of_the_effective_config() -> anyhow::Result<()> {
        let c = resolve_with(None, &[], &["router.accounts.paper.allow_short=true"])?;
        let keys: Vec<&str> = c.router.accounts.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, vec!["demo", "paper"]);
        Ok(())
    }

    #[test]
    fn precedence_is_defaults_file_env_cli() -> anyhow::Result<()> {
        let file = write_file(
            "[features]\nrsi_period = 10\natr_period = 11\nstats_period = 12\nfeature_set_version = \"x\"\n",
        );
        let c = resolve_with(
            Some(file.path()),
            &[
                ("TRADESTREAM__FEATURES__ATR_PERIOD", "21"),
                ("TRADESTREAM__FEATURES__STATS_PERIOD", "22"),
            ],
            &["features.stats_period=32", "features.stats_period=33"],
        )?;
        assert_eq!(c.features.macd_fast, 12, "default");
        assert_eq!(c.features.rsi_period, 10, "file");
        assert_eq!(c.features.atr_period, 21, "env beats file");
        assert_eq!(
            c.features.stats_period, 33,
            "cli beats env, later flag wins"
        );
        Ok(())
    }

    #[test]
    fn unknown_settings_are_named_with_their_source() {
        let e = resolve_with(
            None,
            &[("TRADESTREAM__FEATURES__RSI_PEROD", "21")],
            &[
                "router.accounts.demo.limits.max_opn_orders=5",
                "sinc.batch_size=3",
            ],
        )
        .expect_err("unknown settings");
        let text = format!("{e:#}");
        for needle in [
            "environment variable TRADESTREAM__FEATURES__RSI_PEROD: setting `features.rsi_perod`",
            "unknown field `rsi_perod`",
            "--set router.accounts.demo.limits.max_opn_orders=5: setting `router.accounts.demo.limits.max_opn_orders`",
            "--set sinc.batch_size=3: setting `sinc.batch_size`",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }

    #[test]
    fn type_errors_are_named_with_their_source() {
        let e = resolve_with(
            None,
            &[],
            &["features.rsi_period=fast", "router.brackets=3"],
        )
        .expect_err("type errors");
        let text = format!("{e:#}");
        assert!(
            text.contains("--set features.rsi_period=fast: setting `features.rsi_period`: invalid type: string \"fast\""),
            "{text}"
        );
        assert!(
            text.contains("--set router.brackets=3: setting `router.brackets`"),
            "{text}"
        );
    }

    #[test]
    fn malformed_overrides_are_refused() {
        let e = resolve_with(
            None,
            &[("TRADESTREAM__FEATURES____RSI", "1")],
            &[
                "features.rsi_period",
                "features..x=1",
                "features.rsi_period.x=1",
            ],
        )
        .expect_err("malformed");
        let text = format!("{e:#}");
        for needle in [
            "environment variable TRADESTREAM__FEATURES____RSI: malformed name",
            "--set features.rsi_period: expected section.field=value",
            "--set features..x=1: malformed path",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        let e = resolve_with(None, &[], &["features.rsi_period.x=1"]).expect_err("not a table");
        assert!(
            format!("{e:#}")
                .contains("setting `features.rsi_period` is not a section (it holds a integer)"),
            "{e:#}"
        );
    }

    #[test]
    fn file_errors_name_the_file_and_setting() {
        let file = write_file("[features]\nrsi_period = \"x\"\n");
        let e = resolve_with(Some(file.path()), &[], &[]).expect_err("bad file");
        let text = format!("{e:#}");
        assert!(text.contains("--config"), "{text}");
        assert!(text.contains("rsi_period"), "{text}");
    }

    #[test]
    fn validation_names_the_setting_and_the_override() -> anyhow::Result<()> {
        let overrides = overrides_from(
            env(&[("TRADESTREAM__FEATURES__FEATURE_SET_VERSION", "fs-9")]),
            &sets(&["features.rsi_period=0"]),
        )?;
        let e = PipelineConfig::load_with(None, &overrides).expect_err("rsi 0");
        let text = format!("{e:#}");
        assert!(
            text.contains("features.rsi_period: must be between 1 and")
                && text.contains("(set by --set features.rsi_period=0)"),
            "{text}"
        );
        // Unknown settings and range problems come together.
        let overrides = overrides_from(
            env(&[("TRADESTREAM__SCORER__BUY_THRESHOLD", "2")]),
            &sets(&["features.rsi_perod=3"]),
        )?;
        let e = PipelineConfig::load_with(None, &overrides).expect_err("two problems");
        let text = format!("{e:#}");
        assert!(
            text.contains("--set features.rsi_perod=3: setting `features.rsi_perod`: unknown field `rsi_perod`")
                && text.contains(
                    "scorer.buy_threshold: must be within [0.5, 1], got 2 (set by environment variable TRADESTREAM__SCORER__BUY_THRESHOLD)"
                ),
            "{text}"
        );
        assert!(!text.contains("\nin `"), "{text}");
        Ok(())
    }

    #[test]
    fn settings_list_every_leaf_including_unset_options() -> anyhow::Result<()> {
        let rows = settings(&PipelineConfig::default())?;
        let find = |path: &str| rows.iter().find(|r| r.path == path);
        let rsi = find("features.rsi_period").expect("rsi listed");
        assert_eq!(rsi.env, "TRADESTREAM__FEATURES__RSI_PERIOD");
        assert_eq!(rsi.value, "14");
        let unset = find("router.accounts.demo.limits.max_position_qty").expect("unset option");
        assert_eq!(unset.value, "(unset)");
        assert_eq!(
            find("router.accounts.demo.limits.max_open_orders").map(|r| r.env.as_str()),
            Some("TRADESTREAM__ROUTER__ACCOUNTS__DEMO__LIMITS__MAX_OPEN_ORDERS")
        );
        // Every listed setting can be set back to its listed value.
        let flags: Vec<String> = rows
            .iter()
            .filter(|r| r.value != "(unset)")
            .map(|r| format!("{}={}", r.path, r.value))
            .collect();
        let overrides = cli_overrides(&flags).map_err(|p| anyhow::anyhow!("{p:?}"))?;
        let again = resolve(None, &overrides)?;
        assert_eq!(again.features, PipelineConfig::default().features);
        assert_eq!(again.router, PipelineConfig::default().router);
        Ok(())
    }
}
