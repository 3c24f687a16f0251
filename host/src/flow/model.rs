//! The loaded, expanded and validated flow: what the rest of flowrun works from.
//! Everything here is resolved: names are expanded, dependencies are job indices, paths are
//! absolute, patterns are compiled. Nothing refers back to TOML.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use regex::{Regex, RegexSet};

/// A position in a flow file, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The flow file (shared: every job of a file points at the same path).
    pub file: Arc<Path>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

/// A whole flow, with its includes merged.
#[derive(Debug)]
pub struct Flow {
    /// `[flow] name`, default the root file's stem.
    pub name: String,
    /// The root flow file (absolute).
    pub file: PathBuf,
    /// `[flow] max_parallel`: the cap on running jobs across all backends.
    pub max_parallel: Option<u32>,
    /// Backend instances: those declared in `[backends.*]` (root and included files), plus one
    /// implicit instance per kind that a job names directly (`backend = "fake"` with no
    /// `[backends.fake]` table), in that order.
    pub backends: Vec<BackendInstance>,
    /// `[observers.*]` instances.
    pub observers: Vec<ObserverInstance>,
    /// `[resources]`: name and capacity. Index = resource id used by [`Job::resources`].
    pub resources: Vec<(String, u64)>,
    /// The expanded jobs, in declaration order (root file first, includes where they appear).
    pub jobs: Vec<Job>,
}

/// A backend instance: `[backends.NAME]`.
#[derive(Debug, Clone)]
pub struct BackendInstance {
    /// The table's name; jobs refer to it.
    pub name: String,
    /// The plugin kind (`kind = ...`, default the table's name).
    pub kind: String,
    /// `max_parallel` in the table, if given (the host default is the plugin's).
    pub max_parallel: Option<u32>,
    /// Every other key of the table, re-serialised as TOML text, for the plugin to validate.
    pub config_toml: String,
    /// Where the table is (the implicit instances point at the first job that names them).
    pub location: Location,
}

/// An observer instance: `[observers.NAME]`.
#[derive(Debug, Clone)]
pub struct ObserverInstance {
    /// The table's name.
    pub name: String,
    /// The plugin kind (`kind = ...`, default the table's name).
    pub kind: String,
    /// Every other key, as TOML text.
    pub config_toml: String,
    /// Where the table is.
    pub location: Location,
}

/// How to run a job's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A string: run through `/bin/sh -c`.
    Shell(String),
    /// An array: argv, run directly.
    Argv(Vec<String>),
}

/// When a job runs, given how its dependencies ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum When {
    /// Every dependency passed (the default).
    #[default]
    AllPassed,
    /// All dependencies ended and at least one passed.
    AnyPassed,
    /// All dependencies ended, however.
    Always,
}

/// Pass and fail patterns, compiled once and shared by every job of a matrix.
#[derive(Debug)]
pub struct Patterns {
    /// Each must match some line of the log.
    pub pass: Vec<Regex>,
    /// Any match fails the job; all are matched at once.
    pub fail: RegexSet,
    /// The fail patterns' sources, in the set's order (for messages).
    pub fail_sources: Vec<String>,
}

impl Patterns {
    /// Whether there is nothing to check (then the log is never read).
    pub fn is_empty(&self) -> bool {
        self.pass.is_empty() && self.fail.is_empty()
    }
}

/// One expanded job.
#[derive(Debug, Clone)]
pub struct Job {
    /// The expanded name (for an included flow: `<flow>.<job>`).
    pub name: String,
    /// The command, with `{var}` expanded.
    pub cmd: Command,
    /// `cwd`, absolute (relative to the declaring flow file's directory), if set.
    /// When `None`, the job runs in its job directory.
    pub cwd: Option<PathBuf>,
    /// `env`, expanded, in the order written.
    pub env: Vec<(String, String)>,
    /// `timeout`, with the text as written for messages ("30m").
    pub timeout: Option<(Duration, String)>,
    /// `priority`, default 0; higher starts first.
    pub priority: i64,
    /// Index into [`Flow::backends`].
    pub backend: usize,
    /// Dependencies: indices into [`Flow::jobs`], sorted, without duplicates.
    pub needs: Vec<u32>,
    /// `when`.
    pub when: When,
    /// `resources.cpus`, default 1.
    pub cpus: u32,
    /// `resources.memory` in MiB (`"4G"`, `"512M"`, or a number of MiB), if given.
    pub memory_mb: Option<u64>,
    /// Named resources: (index into [`Flow::resources`], amount).
    pub resources: Vec<(u32, u64)>,
    /// Pass and fail patterns (shared by a matrix's jobs); `None` when there are none.
    pub patterns: Option<Arc<Patterns>>,
    /// `interactive`, default false.
    pub interactive: bool,
    /// `attrs`: free-form string pairs handed to the backend.
    pub attrs: Vec<(String, String)>,
    /// `retries`, default 0: how many more attempts a job whose attempt failed gets (the
    /// failure reaches its dependents only after the last).
    pub retries: u32,
    /// `retry_on`: which failures are retried.
    pub retry_on: RetryOn,
    /// `retry_backoff`, default zero: how long a retried job waits before its next attempt
    /// may start, doubling with each retry (the first retry waits this long, the second twice
    /// as long, ...).
    pub retry_backoff: Duration,
    /// Where the job's `[[job]]` table is.
    pub location: Location,
}

/// Which failures `retries` retries (`retry_on`, a list of reason kinds as results.json
/// writes them, or `"any"`): a set of bits over [`RetryOn::KINDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryOn(pub u16);

impl RetryOn {
    /// The reason kinds `retry_on` may name (those of an attempt that ran or was handed over).
    pub const KINDS: [&'static str; 9] = [
        "exit_code",
        "signal",
        "fail_pattern",
        "pass_missing",
        "log_unreadable",
        "backend",
        "timeout",
        "lost",
        "killed",
    ];
    /// The default: jobs the backend lost or killed (a node failure, a preemption).
    pub const DEFAULT: RetryOn = RetryOn(1 << 7 | 1 << 8);
    /// Every failure.
    pub const ANY: RetryOn = RetryOn((1 << 9) - 1);

    /// The bit of a reason kind, if `retry_on` may name it.
    pub fn bit(kind: &str) -> Option<u16> {
        Self::KINDS.iter().position(|k| *k == kind).map(|i| 1 << i)
    }

    /// Whether a failure of this kind is retried.
    pub fn covers(self, kind: &str) -> bool {
        Self::bit(kind).is_some_and(|b| self.0 & b != 0)
    }
}

impl Default for RetryOn {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Job {
    /// A job with the defaults of a `[[job]]` table, nothing to run and no backend yet: what
    /// the loader starts from (and tests build on).
    pub(crate) fn with_defaults(location: Location) -> Job {
        Job {
            name: String::new(),
            cmd: Command::Argv(Vec::new()),
            cwd: None,
            env: Vec::new(),
            timeout: None,
            priority: 0,
            backend: usize::MAX,
            needs: Vec::new(),
            when: When::AllPassed,
            cpus: 1,
            memory_mb: None,
            resources: Vec::new(),
            patterns: None,
            interactive: false,
            attrs: Vec::new(),
            retries: 0,
            retry_on: RetryOn::DEFAULT,
            retry_backoff: Duration::ZERO,
            location,
        }
    }
}
