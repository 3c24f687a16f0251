//! One flow file: TOML (with spans) to a raw, per-file description. Templates are parsed and
//! checked against the job's matrix here; names are not yet expanded or resolved.

use std::{
    borrow::Cow,
    ops::Range,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use regex::{Regex, RegexSet};
use toml::{
    de::{DeTable, DeValue},
    Spanned,
};

use super::{
    diag::{did_you_mean, shorten, Diagnostic, SourceMap},
    expand::{is_var_name, Axis, Matrix, Template, TemplateError},
    model::{Job, Location, Patterns, RetryOn, When},
    names, parse_duration, MAX_JOBS,
};

type Val<'i> = Spanned<DeValue<'i>>;
type Key<'i> = Spanned<Cow<'i, str>>;

/// What to do about an empty command.
const EMPTY_CMD_HELP: &str =
    "give the command to run, e.g. `cmd = \"make test\"` or `cmd = [\"make\", \"test\"]`";

/// Why a NUL byte is refused wherever it appears.
const NUL_HELP: &str = "a NUL byte cannot be passed to a program: arguments, environment variables and paths end at the first NUL; remove the \\u0000";

/// A `[backends.X]` or `[observers.X]` table.
#[derive(Debug, Clone)]
pub(super) struct RawInstance {
    pub name: String,
    /// `kind`, with its location; `None` = the table's name.
    pub kind: Option<(String, Location)>,
    pub max_parallel: Option<u32>,
    pub config_toml: String,
    pub location: Location,
}

impl RawInstance {
    pub(super) fn kind(&self) -> &str {
        self.kind.as_ref().map_or(&self.name, |(k, _)| k)
    }

    /// Same declaration (for merging includes).
    pub(super) fn same_as(&self, other: &RawInstance) -> bool {
        self.kind() == other.kind()
            && self.max_parallel == other.max_parallel
            && self.config_toml == other.config_toml
    }
}

/// `cmd`.
#[derive(Debug, Clone)]
pub(super) enum RawCmd {
    Shell(Template),
    Argv(Vec<Template>),
}

/// One `[[job]]` table, not yet expanded: the parts that differ between the jobs of a matrix
/// (templates) or that need the merged flow to resolve (backend, resources, needs), and one
/// [`Job`] holding everything else in its final form.
#[derive(Debug)]
pub(super) struct RawJob {
    pub name: Template,
    pub name_location: Location,
    pub matrix: Matrix,
    pub cmd: RawCmd,
    pub cwd: Option<Template>,
    pub env: Vec<(String, Template)>,
    pub backend: Option<(String, Location)>,
    pub needs: Vec<(Template, Location)>,
    /// Named resources as written: name, amount, location of the key.
    pub resources: Vec<(String, u64, Location)>,
    /// What every job of the matrix shares (timeout, priority, `when`, cpus, memory, patterns,
    /// `interactive`, `attrs`, the table's location), so that a new such key is declared once,
    /// in [`Job`]. Expansion copies it and fills in the name, command, `cwd`, `env`, backend,
    /// resources and `needs`; those fields are empty here.
    pub shared: Job,
}

/// One flow file.
#[derive(Debug)]
pub(super) struct RawFile {
    pub path: Arc<Path>,
    pub dir: PathBuf,
    pub name: String,
    /// Where the name comes from (`[flow] name` or the file's start).
    pub name_location: Location,
    /// Whether `[flow] name` set the name (else it is the file's stem).
    pub name_set: bool,
    pub default_backend: Option<(String, Location)>,
    pub max_parallel: Option<u32>,
    /// `retries`, `retry_on`, `retry_backoff` of `[flow]`: the defaults of this file's jobs.
    pub retry: RetrySettings,
    /// Include paths (resolved against the file's directory), as written, and where.
    pub includes: Vec<(PathBuf, String, Location)>,
    pub backends: Vec<RawInstance>,
    pub observers: Vec<RawInstance>,
    pub resources: Vec<(String, u64, Location)>,
    pub jobs: Vec<RawJob>,
    /// Some `[[job]]` could not be read at all (its name or matrix is broken): dependencies on
    /// it cannot be checked.
    pub dropped_jobs: bool,
}

/// TOML syntax errors reported per file: a file that is not TOML at all (`/etc/passwd`) has one
/// per line, and the first few say enough.
const MAX_TOML_ERRORS: usize = 5;

const TOP_KEYS: &[&str] = &["flow", "backends", "resources", "observers", "job"];
const FLOW_KEYS: &[&str] = &[
    "name",
    "default_backend",
    "max_parallel",
    "include",
    "retries",
    "retry_on",
    "retry_backoff",
];
const JOB_KEYS: &[&str] = &[
    "name",
    "cmd",
    "cwd",
    "env",
    "timeout",
    "priority",
    "backend",
    "needs",
    "when",
    "resources",
    "pass_patterns",
    "fail_patterns",
    "interactive",
    "attrs",
    "matrix",
    "retries",
    "retry_on",
    "retry_backoff",
];

/// The most `retry_backoff` may be: a night has room for a few doublings of it, not more.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(3600);

/// `retries`, `retry_on` and `retry_backoff`: set on a job, or in `[flow]` as the default of
/// the jobs of that file.
#[derive(Debug, Clone, Copy)]
pub(super) struct RetrySettings {
    retries: u32,
    retry_on: RetryOn,
    retry_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        let job = Job::with_defaults(Location {
            file: Arc::from(Path::new("")),
            line: 0,
            column: 0,
        });
        RetrySettings {
            retries: job.retries,
            retry_on: job.retry_on,
            retry_backoff: job.retry_backoff,
        }
    }
}

impl RetrySettings {
    /// Reads one of the three keys (`what` is the key as messages name it).
    fn parse_key(&mut self, ctx: &mut Ctx<'_>, what: &str, key: &str, v: &Val<'_>) {
        match key {
            "retries" => {
                if let Some(n) = ctx.int_in(what, v, 0, 100) {
                    self.retries = n as u32;
                }
            }
            "retry_on" => {
                if let Some(list) = ctx.string_list(what, v) {
                    let mut on = 0u16;
                    for (kind, span) in list {
                        match (kind.as_str(), RetryOn::bit(&kind)) {
                            ("any", _) => on |= RetryOn::ANY.0,
                            (_, Some(b)) => on |= b,
                            (_, None) => ctx.error(
                                span,
                                format!("invalid `retry_on` entry {kind:?}"),
                                Some(format!(
                                    "`retry_on` lists reason kinds: any, {}",
                                    RetryOn::KINDS.join(", ")
                                )),
                            ),
                        }
                    }
                    self.retry_on = RetryOn(on);
                }
            }
            "retry_backoff" => match ctx.duration(what, key, v) {
                Some((d, text)) if d > MAX_RETRY_BACKOFF => ctx.error(
                    v.span(),
                    format!("`retry_backoff` {text:?} is too long: it must be at most 1 hour"),
                    Some("the wait doubles with every retry: start small, e.g. \"30s\"".into()),
                ),
                Some((d, _)) => self.retry_backoff = d,
                None => {}
            },
            _ => unreachable!("not a retry key: {key}"),
        }
    }

    fn apply(self, job: &mut Job) {
        job.retries = self.retries;
        job.retry_on = self.retry_on;
        job.retry_backoff = self.retry_backoff;
    }
}

/// One `key = "value"` of a table of strings.
struct StringEntry {
    key: String,
    key_span: Range<usize>,
    value: String,
    value_span: Range<usize>,
}

struct Ctx<'s> {
    map: SourceMap<'s>,
    diags: &'s mut Vec<Diagnostic>,
}

/// The entries of a table in the order they are written.
fn entries<'t, 'i>(table: &'t DeTable<'i>) -> Vec<(&'t Key<'i>, &'t Val<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

fn article(type_name: &str) -> &'static str {
    match type_name {
        "integer" | "array" | "inline table" => "an",
        _ => "a",
    }
}

fn de_type(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "string",
        DeValue::Integer(_) => "integer",
        DeValue::Float(_) => "float",
        DeValue::Boolean(_) => "boolean",
        DeValue::Datetime(_) => "datetime",
        DeValue::Array(_) => "array",
        DeValue::Table(_) => "table",
    }
}

fn int_value(v: &DeValue<'_>) -> Option<Result<i64, ()>> {
    match v {
        DeValue::Integer(i) => {
            let digits: Cow<str> = if i.as_str().contains('_') {
                Cow::Owned(i.as_str().replace('_', ""))
            } else {
                Cow::Borrowed(i.as_str())
            };
            Some(i64::from_str_radix(&digits, i.radix()).map_err(|_| ()))
        }
        _ => None,
    }
}

impl Ctx<'_> {
    fn loc(&self, span: Range<usize>) -> Location {
        self.map.location(span.start)
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>, help: Option<String>) {
        let d = Diagnostic::at(self.loc(span.clone()), message)
            .with_opt_help(help)
            .with_span_len(span.len());
        self.diags.push(d);
    }

    fn wrong_type(&mut self, what: &str, v: &Val<'_>, expected: &str, help: Option<String>) {
        let found = de_type(v.get_ref());
        self.error(
            v.span(),
            format!(
                "{what} must be {expected}, found {} {found}",
                article(found)
            ),
            help,
        );
    }

    fn unknown_key(&mut self, key: &Key<'_>, context: &str, allowed: &[&str]) {
        let help = match did_you_mean(key.get_ref(), allowed.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? (allowed keys: {})", allowed.join(", ")),
            None => format!("allowed keys: {}", allowed.join(", ")),
        };
        self.error(
            key.span(),
            format!("unknown key `{}` in {context}", key.get_ref()),
            Some(help),
        );
    }

    fn string(&mut self, what: &str, v: &Val<'_>) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(what, v, "a string", None);
                None
            }
        }
    }

    fn bool(&mut self, what: &str, v: &Val<'_>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(what, v, "a boolean (true or false)", None);
                None
            }
        }
    }

    fn int(&mut self, what: &str, v: &Val<'_>) -> Option<i64> {
        match int_value(v.get_ref()) {
            Some(Ok(i)) => Some(i),
            Some(Err(())) => {
                self.error(v.span(), format!("{what} is out of range"), None);
                None
            }
            None => {
                self.wrong_type(what, v, "an integer", None);
                None
            }
        }
    }

    /// A duration string (`key = "30m"`), with its text as written; `key` names the key in
    /// the help for a bare number.
    fn duration(&mut self, what: &str, key: &str, v: &Val<'_>) -> Option<(Duration, String)> {
        let example = "write a duration such as \"30m\", \"1h 30m\", \"90s\" or \"500ms\"";
        match v.get_ref() {
            DeValue::String(s) => match parse_duration(s) {
                Ok(d) => Some((d, s.to_string())),
                Err(e) => {
                    // Valid but over the limit, or not a duration at all.
                    let help = if humantime::parse_duration(s.trim()).is_err() {
                        example.to_string()
                    } else if key == "timeout" {
                        "leave `timeout` out for no time limit".to_string()
                    } else {
                        format!("write a shorter `{key}`")
                    };
                    self.error(v.span(), e, Some(help));
                    None
                }
            },
            DeValue::Integer(_) | DeValue::Float(_) => {
                // A bare number has no unit: suggest it in seconds, as written.
                let raw = self.map.text().get(v.span()).unwrap_or("30").trim();
                let n = shorten(raw, 20);
                let help = format!("a duration is a string with a unit: write `{key} = \"{n}s\"` for {n} seconds (or \"{n}m\", \"{n}h\")");
                self.wrong_type(what, v, "a duration string", Some(help));
                None
            }
            _ => {
                self.wrong_type(what, v, "a duration string", Some(example.into()));
                None
            }
        }
    }

    /// An integer in `min..=max`.
    fn int_in(&mut self, what: &str, v: &Val<'_>, min: i64, max: i64) -> Option<i64> {
        let i = self.int(what, v)?;
        if i < min || i > max {
            let message = if min == 0 && i < 0 {
                format!("{what} must not be negative (got {i})")
            } else if i < min {
                format!("{what} must be at least {min} (got {i})")
            } else {
                format!("{what} must be at most {max} (got {i})")
            };
            self.error(v.span(), message, None);
            return None;
        }
        Some(i)
    }

    fn table<'t, 'i>(&mut self, what: &str, v: &'t Val<'i>) -> Option<&'t DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(what, v, "a table", None);
                None
            }
        }
    }

    /// A string or an array of strings, each with its span.
    fn string_list(&mut self, what: &str, v: &Val<'_>) -> Option<Vec<(String, Range<usize>)>> {
        match v.get_ref() {
            DeValue::String(s) => Some(vec![(s.to_string(), v.span())]),
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push((s.to_string(), item.span())),
                        _ => {
                            self.wrong_type(
                                &format!("each element of {what}"),
                                item,
                                "a string",
                                None,
                            );
                            ok = false;
                        }
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.wrong_type(what, v, "an array of strings", None);
                None
            }
        }
    }

    /// A table of strings, in the order written: key, value, the key's and the value's spans.
    fn string_table(&mut self, what: &str, v: &Val<'_>) -> Option<Vec<StringEntry>> {
        let table = self.table(what, v)?;
        let mut out = Vec::with_capacity(table.len());
        let mut ok = true;
        for (k, item) in entries(table) {
            match item.get_ref() {
                DeValue::String(s) => out.push(StringEntry {
                    key: k.get_ref().to_string(),
                    key_span: k.span(),
                    value: s.to_string(),
                    value_span: item.span(),
                }),
                _ => {
                    let help = matches!(
                        item.get_ref(),
                        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_)
                    )
                    .then(|| "quote the value to make it a string".to_string());
                    self.wrong_type(&format!("{what}.{}", k.get_ref()), item, "a string", help);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// Reports a NUL byte in the string `text` written at `span`; true if there is none.
    fn no_nul(&mut self, what: &str, text: &str, span: Range<usize>) -> bool {
        let Some(offset) = text.find('\0') else {
            return true;
        };
        let span = self.inner_span(span, text, offset);
        self.error(
            span,
            format!("{what} contains a NUL byte"),
            Some(NUL_HELP.to_string()),
        );
        false
    }

    fn template(
        &mut self,
        what: &str,
        text: &str,
        span: Range<usize>,
        matrix: &Matrix,
    ) -> Option<Template> {
        if !self.no_nul(what, text, span.clone()) {
            return None;
        }
        match Template::parse_at(text, &matrix.vars) {
            Ok(t) => Some(t),
            Err((e, offset)) => {
                let braces = "write `{{` and `}}` for literal braces".to_string();
                let (message, help) = match e {
                    TemplateError::UnknownVar(var) => {
                        let help = if matrix.vars.is_empty() {
                            format!("this job has no matrix; {braces}")
                        } else {
                            let known: Vec<String> =
                                matrix.vars.iter().map(|v| format!("{{{v}}}")).collect();
                            match did_you_mean(&var, matrix.vars.iter().map(String::as_str)) {
                                Some(s) => format!(
                                    "did you mean `{{{s}}}`? the matrix defines {}",
                                    known.join(", ")
                                ),
                                None => {
                                    format!("the matrix defines {}; {braces}", known.join(", "))
                                }
                            }
                        };
                        (format!("unknown variable `{{{var}}}` in {what}"), help)
                    }
                    TemplateError::Unclosed => (format!("unclosed `{{` in {what}"), braces),
                    TemplateError::UnmatchedClose => (format!("unmatched `}}` in {what}"), braces),
                    TemplateError::BadVarName(name) => (
                        format!("invalid variable name `{{{name}}}` in {what}"),
                        format!("variable names are letters, digits, `_` and `-`; {braces}"),
                    ),
                };
                let span = self.inner_span(span, text, offset);
                self.error(span, message, Some(help));
                None
            }
        }
    }

    /// The span of byte `offset` of the string `value` written at `span`, when the string is
    /// written without escapes (else the string's own span).
    fn inner_span(&self, span: Range<usize>, value: &str, offset: usize) -> Range<usize> {
        let raw = self.map.text().get(span.clone()).unwrap_or("");
        let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
            3
        } else {
            1
        };
        if raw.len() >= 2 * quote
            && raw.starts_with(['"', '\''])
            && &raw[quote..raw.len() - quote] == value
        {
            let start = span.start + quote + offset;
            start..start + 1
        } else {
            span
        }
    }
}

/// Parses one flow file. `None` if it is not valid TOML (then nothing else is checked).
pub(super) fn parse_file(
    path: Arc<Path>,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<RawFile> {
    let (root, errors) = DeTable::parse_recoverable(text);
    let mut ctx = Ctx {
        map: SourceMap::new(path.clone(), text),
        diags,
    };
    if !errors.is_empty() {
        let count = errors.len();
        for e in errors.into_iter().take(MAX_TOML_ERRORS) {
            let span = e.span().unwrap_or(0..0);
            let message = format!("invalid TOML: {}", e.message().trim_end());
            ctx.error(span, message, None);
        }
        if count > MAX_TOML_ERRORS {
            let start = ctx.loc(0..0);
            ctx.diags.push(
                Diagnostic::at(
                    start,
                    format!(
                        "... and {} more TOML syntax errors in this file",
                        count - MAX_TOML_ERRORS
                    ),
                )
                .with_help("is this a flow file? flow files are TOML: `[[job]]` tables with `name = \"...\"` and `cmd = \"...\"` (see docs/flow-format.md)"),
            );
        }
        return None;
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flow".into());
    let mut file = RawFile {
        name_location: ctx.loc(0..0),
        name_set: false,
        path,
        dir,
        name: stem,
        default_backend: None,
        max_parallel: None,
        retry: RetrySettings::default(),
        includes: Vec::new(),
        backends: Vec::new(),
        observers: Vec::new(),
        resources: Vec::new(),
        jobs: Vec::new(),
        dropped_jobs: false,
    };
    let mut top = entries(root.get_ref());
    // `[flow]` first, wherever it is written: it holds the defaults of the file's jobs.
    top.sort_by_key(|(k, _)| k.get_ref() != "flow");
    for (key, value) in top {
        match key.get_ref().as_ref() {
            "flow" => parse_flow_table(&mut ctx, value, &mut file),
            "backends" => {
                if let Some(table) = ctx.table("`backends`", value) {
                    file.backends = parse_instances(&mut ctx, "backends", table, true);
                }
            }
            "observers" => {
                if let Some(table) = ctx.table("`observers`", value) {
                    file.observers = parse_instances(&mut ctx, "observers", table, false);
                }
            }
            "resources" => {
                if let Some(table) = ctx.table("`resources`", value) {
                    for (k, v) in entries(table) {
                        let what = format!("resource `{}`", k.get_ref());
                        if let Some(n) = ctx.int_in(&what, v, 0, i64::MAX) {
                            file.resources.push((
                                k.get_ref().to_string(),
                                n as u64,
                                ctx.loc(k.span()),
                            ));
                        }
                        if matches!(k.get_ref().as_ref(), "cpus" | "memory") {
                            ctx.error(
                                k.span(),
                                format!("`{}` is built in and cannot be declared in [resources]", k.get_ref()),
                                Some("jobs ask for it with `resources = { cpus = N, memory = \"4G\" }`".into()),
                            );
                        }
                    }
                }
            }
            "job" => match value.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        match item.get_ref() {
                            DeValue::Table(t) => {
                                match parse_job(&mut ctx, t, item.span(), file.retry) {
                                    Some(job) => file.jobs.push(job),
                                    None => file.dropped_jobs = true,
                                }
                            }
                            _ => ctx.wrong_type(
                                "each `job`",
                                item,
                                "a table",
                                Some("write jobs as [[job]] tables".into()),
                            ),
                        }
                    }
                }
                _ => ctx.wrong_type(
                    "`job`",
                    value,
                    "an array of tables",
                    Some("write jobs as [[job]] tables".into()),
                ),
            },
            _ => ctx.unknown_key(key, "the flow file", TOP_KEYS),
        }
    }
    if !file.name_set {
        if let Some(problem) = names::stem_problem(&file.name) {
            ctx.diags.push(
                Diagnostic::at(
                    file.name_location.clone(),
                    format!(
                        "the flow's name defaults to the file's stem {:?}, which cannot be a flow name: {problem}",
                        file.name
                    ),
                )
                .with_help("set `[flow] name = \"...\"` in this file, or rename the file"),
            );
        }
    }
    Some(file)
}

fn parse_flow_table(ctx: &mut Ctx<'_>, value: &Val<'_>, file: &mut RawFile) {
    let Some(table) = ctx.table("`flow`", value) else {
        return;
    };
    for (key, v) in entries(table) {
        match key.get_ref().as_ref() {
            "name" => {
                if let Some(name) = ctx.string("`flow.name`", v) {
                    file.name_set = true;
                    match names::flow_name_problem(&name) {
                        Some(problem) => ctx.error(
                            v.span(),
                            format!("invalid flow name {:?}: {problem}", shorten(&name, 80)),
                            Some(names::FLOW_NAME_RULE.into()),
                        ),
                        None => {
                            file.name = name;
                            file.name_location = ctx.loc(v.span());
                        }
                    }
                }
            }
            "default_backend" => {
                if let Some(b) = ctx.string("`flow.default_backend`", v) {
                    file.default_backend = Some((b, ctx.loc(v.span())));
                }
            }
            "max_parallel" => {
                file.max_parallel = ctx
                    .int_in("`flow.max_parallel`", v, 1, u32::MAX as i64)
                    .map(|n| n as u32);
            }
            k @ ("retries" | "retry_on" | "retry_backoff") => {
                file.retry.parse_key(ctx, &format!("`flow.{k}`"), k, v)
            }
            "include" => {
                if let Some(list) = ctx.string_list("`flow.include`", v) {
                    for (text, span) in list {
                        let resolved = file.dir.join(&text);
                        file.includes.push((resolved, text, ctx.loc(span)));
                    }
                }
            }
            _ => ctx.unknown_key(key, "[flow]", FLOW_KEYS),
        }
    }
}

fn parse_instances(
    ctx: &mut Ctx<'_>,
    section: &str,
    table: &DeTable<'_>,
    backends: bool,
) -> Vec<RawInstance> {
    let mut out = Vec::new();
    for (name, value) in entries(table) {
        let what = format!("`{section}.{}`", name.get_ref());
        let Some(t) = ctx.table(&what, value) else {
            continue;
        };
        let mut instance = RawInstance {
            name: name.get_ref().to_string(),
            kind: None,
            max_parallel: None,
            config_toml: String::new(),
            location: ctx.loc(name.span()),
        };
        let mut config = toml::Table::new();
        let mut ok = true;
        for (key, v) in entries(t) {
            match key.get_ref().as_ref() {
                "kind" => match ctx.string(&format!("{what}.kind"), v) {
                    Some(kind) => instance.kind = Some((kind, ctx.loc(v.span()))),
                    None => ok = false,
                },
                "max_parallel" if backends => {
                    match ctx.int_in(&format!("{what}.max_parallel"), v, 1, u32::MAX as i64) {
                        Some(n) => instance.max_parallel = Some(n as u32),
                        None => ok = false,
                    }
                }
                other => match to_toml_value(v.get_ref()) {
                    Some(tv) => {
                        config.insert(other.to_string(), tv);
                    }
                    None => {
                        ctx.error(
                            v.span(),
                            format!("{what}.{other}: integer out of range"),
                            None,
                        );
                        ok = false;
                    }
                },
            }
        }
        instance.config_toml = toml::to_string(&config).unwrap_or_default();
        if ok {
            out.push(instance);
        }
    }
    out
}

/// A spanned TOML value as a plain `toml::Value` (to re-serialise plugin configuration).
fn to_toml_value(v: &DeValue<'_>) -> Option<toml::Value> {
    Some(match v {
        DeValue::String(s) => toml::Value::String(s.to_string()),
        DeValue::Integer(_) => toml::Value::Integer(int_value(v)?.ok()?),
        DeValue::Float(f) => toml::Value::Float(f.as_str().replace('_', "").parse().ok()?),
        DeValue::Boolean(b) => toml::Value::Boolean(*b),
        DeValue::Datetime(d) => toml::Value::Datetime(*d),
        DeValue::Array(items) => toml::Value::Array(
            items
                .iter()
                .map(|i| to_toml_value(i.get_ref()))
                .collect::<Option<_>>()?,
        ),
        DeValue::Table(t) => {
            let mut table = toml::Table::new();
            for (k, i) in t.iter() {
                table.insert(k.get_ref().to_string(), to_toml_value(i.get_ref())?);
            }
            toml::Value::Table(table)
        }
    })
}

fn parse_matrix(ctx: &mut Ctx<'_>, v: &Val<'_>) -> (Matrix, bool) {
    let mut matrix = Matrix::default();
    let Some(table) = ctx.table("`matrix`", v) else {
        return (matrix, false);
    };
    let mut ok = true;
    if table.is_empty() {
        ctx.error(v.span(), "`matrix` is empty", Some("give each variable a list of values, e.g. `matrix = { seed = { range = [1, 10] } }`".into()));
        ok = false;
    }
    for (key, value) in entries(table) {
        let var = key.get_ref().to_string();
        if !is_var_name(&var) {
            ctx.error(
                key.span(),
                format!("invalid matrix variable name `{var}`"),
                Some("use letters, digits, `_` and `-`".into()),
            );
            ok = false;
            continue;
        }
        let what = format!("`matrix.{var}`");
        let axis = match value.get_ref() {
            DeValue::Array(items) => {
                if items.is_empty() {
                    ctx.error(
                        value.span(),
                        format!("{what} is an empty list"),
                        Some("give at least one value (or remove the variable)".into()),
                    );
                    None
                } else {
                    let mut values = Vec::with_capacity(items.len());
                    let mut good = true;
                    for item in items.iter() {
                        match item.get_ref() {
                            DeValue::String(s) => {
                                if ctx.no_nul(&format!("a value of {what}"), s, item.span()) {
                                    values.push(s.to_string());
                                } else {
                                    good = false;
                                }
                            }
                            DeValue::Integer(_) => {
                                match ctx.int(&format!("a value of {what}"), item) {
                                    Some(i) => values.push(i.to_string()),
                                    None => good = false,
                                }
                            }
                            _ => {
                                ctx.wrong_type(
                                    &format!("each value of {what}"),
                                    item,
                                    "a string or an integer",
                                    None,
                                );
                                good = false;
                            }
                        }
                    }
                    good.then_some(Axis::List(values))
                }
            }
            DeValue::Table(t) => parse_range(ctx, &what, value, t),
            _ => {
                ctx.wrong_type(
                    &what,
                    value,
                    "a list of strings or integers, or `{ range = [first, last] }`",
                    None,
                );
                None
            }
        };
        match axis {
            Some(axis) => {
                matrix.vars.push(var);
                matrix.axes.push(axis);
            }
            None => {
                // Keep the variable so that templates using it are not reported as unknown.
                matrix.vars.push(var);
                matrix.axes.push(Axis::List(vec![String::new()]));
                ok = false;
            }
        }
    }
    if ok && matrix.len() > MAX_JOBS {
        ctx.error(
            v.span(),
            format!(
                "the matrix expands to {} jobs, more than the limit of {} jobs in a flow",
                fmt_count(matrix.count()),
                fmt_count(MAX_JOBS.into())
            ),
            Some("shrink the matrix, or split the work into several flows".into()),
        );
        ok = false;
    }
    (matrix, ok)
}

fn parse_range(ctx: &mut Ctx<'_>, what: &str, value: &Val<'_>, t: &DeTable<'_>) -> Option<Axis> {
    let mut range = None;
    let mut ok = true;
    for (key, v) in entries(t) {
        if key.get_ref() == "range" {
            range = Some(v);
        } else {
            ctx.unknown_key(key, what, &["range"]);
            ok = false;
        }
    }
    let help =
        Some("write `{ range = [first, last] }` (inclusive, integers, first <= last)".to_string());
    let Some(r) = range else {
        if ok {
            ctx.error(
                value.span(),
                format!("{what} is a table without `range`"),
                help,
            );
        }
        return None;
    };
    let bounds = match r.get_ref() {
        DeValue::Array(items) if items.len() == 2 => {
            let a = ctx.int(&format!("{what}.range[0]"), &items[0]);
            let b = ctx.int(&format!("{what}.range[1]"), &items[1]);
            a.zip(b)
        }
        _ => {
            ctx.error(
                r.span(),
                format!("{what}.range must be an array of two integers"),
                help,
            );
            return None;
        }
    };
    let (a, b) = bounds?;
    if a > b {
        ctx.error(r.span(), format!("{what}.range is empty: {a} > {b}"), help);
        return None;
    }
    ok.then_some(Axis::Range(a, b))
}

/// `12,345,678`; counts beyond `u64` (a matrix of several huge ranges) are "2^64 or more".
pub(super) fn fmt_count(n: u128) -> String {
    if n > u64::MAX as u128 {
        return "2^64 or more".to_string();
    }
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A `resources.memory` value in MiB: an integer (MiB) or a string like "4G", "512M", "1.5GiB".
pub(super) fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid memory size {text:?}"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches("ib").trim_end_matches('b');
    let factor = match unit {
        "k" => 1.0 / 1024.0,
        "" | "m" => 1.0,
        "g" => 1024.0,
        "t" => 1024.0 * 1024.0,
        _ => return Err(format!("invalid memory size {text:?}: unknown unit")),
    };
    let mib = (number * factor).ceil();
    if !(0.0..=u64::MAX as f64).contains(&mib) {
        return Err(format!("invalid memory size {text:?}"));
    }
    Ok(mib as u64)
}

/// Compiles pass/fail patterns; reports each invalid one at its location.
fn compile_patterns(
    ctx: &mut Ctx<'_>,
    pass: &[(String, Range<usize>)],
    fail: &[(String, Range<usize>)],
) -> Option<Option<Arc<Patterns>>> {
    let mut ok = true;
    let mut pass_regexes = Vec::with_capacity(pass.len());
    for (key, list) in [("pass_patterns", pass), ("fail_patterns", fail)] {
        for (source, span) in list {
            match Regex::new(source) {
                Ok(r) => {
                    if key == "pass_patterns" {
                        pass_regexes.push(r);
                    }
                }
                Err(e) => {
                    let (message, position) = describe_regex_error(source, &e);
                    // Point at the offending character when the string has no escapes.
                    let at = position.and_then(|p| source.char_indices().nth(p - 1));
                    let span = match at {
                        Some((offset, _)) => ctx.inner_span(span.clone(), source, offset),
                        None => span.clone(),
                    };
                    let help = "patterns use the syntax of the Rust `regex` crate and match one line at a time";
                    ctx.error(
                        span,
                        format!("invalid regex in `{key}`: {message}"),
                        Some(help.into()),
                    );
                    ok = false;
                }
            }
        }
    }
    if !ok {
        return None;
    }
    if pass.is_empty() && fail.is_empty() {
        return Some(None);
    }
    let sources: Vec<String> = fail.iter().map(|(s, _)| s.clone()).collect();
    match RegexSet::new(&sources) {
        Ok(set) => Some(Some(Arc::new(Patterns {
            pass: pass_regexes,
            fail: set,
            fail_sources: sources,
        }))),
        Err(e) => {
            ctx.error(
                fail[0].1.clone(),
                format!("the fail patterns cannot be compiled together: {e}"),
                None,
            );
            None
        }
    }
}

/// "`PATTERN`: unclosed group (at character 5)" from a regex error.
/// Also returns the 1-based character position of the error in the pattern, when known.
pub(super) fn describe_regex_error(source: &str, e: &regex::Error) -> (String, Option<usize>) {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let reason = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .map(str::to_string);
    // Single-line patterns are shown as "    PATTERN" then "    ^^^" under the offending part.
    let position = lines.iter().find_map(|l| {
        let rest = l.strip_prefix("    ")?;
        if !rest.is_empty()
            && rest.trim_start().starts_with('^')
            && rest.trim().chars().all(|c| c == '^' || c == '-')
        {
            Some(rest.len() - rest.trim_start().len() + 1)
        } else {
            None
        }
    });
    let message = match (reason, position) {
        (Some(r), Some(p)) => format!("`{source}`: {r} (at character {p})"),
        (Some(r), None) => format!("`{source}`: {r}"),
        _ => format!("`{source}`: {}", text.trim()),
    };
    (message, position)
}

fn parse_job(
    ctx: &mut Ctx<'_>,
    table: &DeTable<'_>,
    span: Range<usize>,
    mut retry: RetrySettings,
) -> Option<RawJob> {
    let location = ctx.loc(span);
    let ents = entries(table);
    let mut fatal = false;
    let (matrix, matrix_ok) = match ents.iter().find(|(k, _)| k.get_ref() == "matrix") {
        Some((_, v)) => parse_matrix(ctx, v),
        None => (Matrix::default(), true),
    };
    fatal |= !matrix_ok;
    let mut name = None;
    let mut cmd = None;
    let mut job = RawJob {
        name_location: location.clone(),
        name: Template::parse_at("", &[]).ok()?,
        matrix: Matrix::default(),
        cmd: RawCmd::Argv(Vec::new()),
        cwd: None,
        env: Vec::new(),
        backend: None,
        needs: Vec::new(),
        resources: Vec::new(),
        shared: Job::with_defaults(location),
    };
    let mut pass = Vec::new();
    let mut fail = Vec::new();
    for (key, v) in &ents {
        let k = key.get_ref().as_ref();
        let what = format!("`{k}`");
        match k {
            "matrix" => {}
            "name" => {
                if let Some(text) = ctx.string(&what, v) {
                    if text.is_empty() {
                        ctx.error(v.span(), "the job name is empty", None);
                    } else if let Some(t) = ctx.template("the job name", &text, v.span(), &matrix) {
                        name = Some(t);
                        job.name_location = ctx.loc(v.span());
                    }
                }
            }
            "cmd" => {
                match v.get_ref() {
                    DeValue::String(s) => {
                        if s.trim().is_empty() {
                            ctx.error(v.span(), "`cmd` is empty", Some(EMPTY_CMD_HELP.into()));
                        }
                        cmd = ctx
                            .template("`cmd`", s, v.span(), &matrix)
                            .map(RawCmd::Shell);
                        if cmd.is_none() {
                            cmd = Some(RawCmd::Argv(Vec::new()));
                        }
                    }
                    DeValue::Array(items) if !items.is_empty() => {
                        let mut argv = Vec::with_capacity(items.len());
                        for (i, item) in items.iter().enumerate() {
                            match item.get_ref() {
                                DeValue::String(s) => {
                                    if i == 0 && s.is_empty() {
                                        ctx.error(
                                            item.span(),
                                            "the program (the first element of `cmd`) is empty",
                                            Some(EMPTY_CMD_HELP.into()),
                                        );
                                    }
                                    if let Some(t) = ctx.template("`cmd`", s, item.span(), &matrix)
                                    {
                                        argv.push(t);
                                    }
                                }
                                _ => {
                                    ctx.wrong_type("each element of `cmd`", item, "a string", None)
                                }
                            }
                        }
                        cmd = Some(RawCmd::Argv(argv));
                    }
                    DeValue::Array(_) => {
                        ctx.error(v.span(), "`cmd` is an empty array", Some("give the program and its arguments, e.g. `cmd = [\"make\", \"-j4\"]`".into()));
                        cmd = Some(RawCmd::Argv(Vec::new()));
                    }
                    _ => {
                        ctx.wrong_type(
                            &what,
                            v,
                            "a string (run by /bin/sh -c) or an array of strings (argv)",
                            None,
                        );
                        cmd = Some(RawCmd::Argv(Vec::new()));
                    }
                }
            }
            "cwd" => {
                if let Some(s) = ctx.string(&what, v) {
                    job.cwd = ctx.template("`cwd`", &s, v.span(), &matrix);
                }
            }
            "env" => {
                if let Some(pairs) = ctx.string_table(&what, v) {
                    for StringEntry {
                        key,
                        key_span,
                        value,
                        value_span,
                    } in pairs
                    {
                        if let Some(problem) = names::env_name_problem(&key) {
                            ctx.error(
                                key_span,
                                format!("invalid environment variable name {:?} in `env`: {problem}", shorten(&key, 80)),
                                Some("a variable name is not empty and holds no `=` or NUL; write e.g. `env = { CC = \"clang\" }`".into()),
                            );
                            continue;
                        }
                        let what = format!("`env.{}`", shorten(&key, 80));
                        if let Some(t) = ctx.template(&what, &value, value_span, &matrix) {
                            job.env.push((key, t));
                        }
                    }
                }
            }
            "timeout" => {
                if let Some((d, text)) = ctx.duration(&what, k, v) {
                    if d.is_zero() {
                        ctx.error(
                            v.span(),
                            "`timeout` must be longer than zero",
                            Some("leave `timeout` out for no time limit".into()),
                        );
                    } else {
                        job.shared.timeout = Some((d, text));
                    }
                }
            }
            "priority" => job.shared.priority = ctx.int(&what, v).unwrap_or(0),
            "retries" | "retry_on" | "retry_backoff" => retry.parse_key(ctx, &what, k, v),
            "backend" => {
                if let Some(s) = ctx.string(&what, v) {
                    job.backend = Some((s, ctx.loc(v.span())));
                }
            }
            "needs" => {
                if let Some(list) = ctx.string_list(&what, v) {
                    for (text, span) in list {
                        if text.is_empty() {
                            ctx.error(
                                span,
                                "`needs` has an empty entry",
                                Some("name the job to wait for, or remove the entry".into()),
                            );
                            continue;
                        }
                        if let Some(t) = ctx.template("`needs`", &text, span.clone(), &matrix) {
                            job.needs.push((t, ctx.loc(span)));
                        }
                    }
                }
            }
            "when" => {
                if let Some(s) = ctx.string(&what, v) {
                    match s.as_str() {
                        "all-passed" => job.shared.when = When::AllPassed,
                        "any-passed" => job.shared.when = When::AnyPassed,
                        "always" => job.shared.when = When::Always,
                        _ => {
                            let options = ["all-passed", "any-passed", "always"];
                            let help = match did_you_mean(&s, options) {
                                Some(m) => format!("did you mean `{m}`? `when` is one of all-passed, any-passed, always"),
                                None => "`when` is one of all-passed (the default), any-passed, always".into(),
                            };
                            ctx.error(v.span(), format!("invalid `when` value {s:?}"), Some(help));
                        }
                    }
                }
            }
            "resources" => {
                if let Some(t) = ctx.table(&what, v) {
                    for (rk, rv) in entries(t) {
                        let rname = rk.get_ref().as_ref();
                        match rname {
                            "cpus" => {
                                if let Some(n) =
                                    ctx.int_in("`resources.cpus`", rv, 1, u32::MAX as i64)
                                {
                                    job.shared.cpus = n as u32;
                                }
                            }
                            "memory" => {
                                let parsed = match rv.get_ref() {
                                    DeValue::String(s) => Some(parse_memory(s)),
                                    DeValue::Integer(_) => ctx
                                        .int_in("`resources.memory`", rv, 0, i64::MAX)
                                        .map(|n| Ok(n as u64)),
                                    _ => {
                                        ctx.wrong_type("`resources.memory`", rv, "a size such as \"4G\" or \"512M\", or an integer number of MiB", None);
                                        None
                                    }
                                };
                                match parsed {
                                    Some(Ok(mb)) => job.shared.memory_mb = Some(mb),
                                    Some(Err(e)) => ctx.error(rv.span(), e, Some("write e.g. \"4G\", \"512M\" or an integer number of MiB".into())),
                                    None => {}
                                }
                            }
                            _ => {
                                if let Some(n) =
                                    ctx.int_in(&format!("`resources.{rname}`"), rv, 0, i64::MAX)
                                {
                                    job.resources.push((
                                        rname.to_string(),
                                        n as u64,
                                        ctx.loc(rk.span()),
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            "pass_patterns" => pass = ctx.string_list(&what, v).unwrap_or_default(),
            "fail_patterns" => fail = ctx.string_list(&what, v).unwrap_or_default(),
            "interactive" => job.shared.interactive = ctx.bool(&what, v).unwrap_or(false),
            "attrs" => {
                if let Some(pairs) = ctx.string_table(&what, v) {
                    for pair in pairs {
                        let what = format!("`attrs.{}`", shorten(&pair.key, 80));
                        if ctx.no_nul(&format!("the name of {what}"), &pair.key, pair.key_span)
                            && ctx.no_nul(&what, &pair.value, pair.value_span)
                        {
                            job.shared.attrs.push((pair.key, pair.value));
                        }
                    }
                }
            }
            _ => ctx.unknown_key(key, "[[job]]", JOB_KEYS),
        }
    }
    job.shared.patterns = compile_patterns(ctx, &pass, &fail).unwrap_or(None);
    retry.apply(&mut job.shared);
    match cmd {
        Some(c) => job.cmd = c,
        None => ctx.diags.push(
            Diagnostic::at(job.shared.location.clone(), "the job has no `cmd`")
                .with_help("add e.g. `cmd = \"make test\"`"),
        ),
    }
    match name {
        Some(n) => {
            if matrix_ok {
                let missing: Vec<String> = (0..matrix.vars.len())
                    .filter(|&i| !n.uses(i))
                    .map(|i| format!("{{{}}}", matrix.vars[i]))
                    .collect();
                if !missing.is_empty() {
                    ctx.diags.push(
                        Diagnostic::at(job.name_location.clone(), format!("the name of a matrix job must use every matrix variable; it lacks {}", missing.join(", ")))
                            .with_help("otherwise several jobs would get the same name; add the variables to `name`, e.g. \"sim-{test}-{seed}\""),
                    );
                    fatal = true;
                }
            }
            job.name = n;
        }
        None => {
            if !ents.iter().any(|(k, _)| k.get_ref() == "name") {
                ctx.diags.push(
                    Diagnostic::at(job.shared.location.clone(), "the job has no `name`")
                        .with_help("add e.g. `name = \"build\"`"),
                );
            }
            fatal = true;
        }
    }
    job.matrix = matrix;
    (!fatal).then_some(job)
}
