//! The stable ABI between the flowrun host and its plugin libraries: every type that crosses
//! the boundary, the root module a plugin exports and the plain C version symbols. Plugin
//! authors write against `flowrun-plugin-sdk` instead, which hides these types behind plain
//! Rust views and builders; the host uses this crate to load plugins.
//!
//! **This crate's version is the ABI version.** Rules for changing it (docs/design/plugin-abi.md
//! has the why):
//! - Append only. A new root-module field or trait method goes after the last one, with a
//!   default body for trait methods, and bumps the patch version of this crate (before 1.0).
//! - Anything else (a changed field type, a reorder, a removal) bumps the minor version
//!   (before 1.0), and every plugin must be rebuilt.
//! - Enumerations are `u8` newtypes with associated constants, so a value can be added
//!   without a layout change; code must treat unknown values gracefully.
//! - Open-ended data travels as `attrs` key/value pairs or as TOML text.
//! - Only what is bound to the layout lives here (the types, their constants, constructors that
//!   fill every field): anything else belongs in the SDK, so that an SDK change is never an ABI
//!   change.
//!
//! No hand-written `unsafe` lives here, yet the crate cannot deny `unsafe_code`: `#[sabi_trait]`
//! generates `unsafe impl`s and unsafe blocks spanned on the traits' own tokens, so the lint
//! reports them as this crate's, and an `#[allow]` on the trait does not reach them (tried
//! with abi_stable 0.11.3). Moving the traits into an allowed module would change their paths.
#![allow(non_local_definitions, non_camel_case_types)]
#![warn(missing_docs)]

#[doc(hidden)]
pub use abi_stable;

/// The plugin API (ABI) version this crate implements: the crate's own version.
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// [`PLUGIN_API_VERSION`] NUL-terminated, for the plain C version symbol.
#[doc(hidden)]
pub const PLUGIN_API_VERSION_C: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, ROption, RResult, RSlice, RStr, RString, RVec, Tuple2},
    StableAbi,
};

/// A key/value pair, used for free-form attributes.
pub type Attr = Tuple2<RString, RString>;

/// The host's identifier of a job within one run.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The class of a [`PluginError`].
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorKind(pub u8);

impl ErrorKind {
    /// Anything not covered below.
    pub const OTHER: ErrorKind = ErrorKind(0);
    /// The backend or observer config is invalid: the message names the key.
    pub const CONFIG: ErrorKind = ErrorKind(1);
    /// The plugin offers no backend or observer of the requested kind.
    pub const UNKNOWN_KIND: ErrorKind = ErrorKind(2);
    /// A panic was caught at the ABI boundary.
    pub const PANICKED: ErrorKind = ErrorKind(3);
    /// The request is not supported by this plugin (for example interactive jobs).
    pub const UNSUPPORTED: ErrorKind = ErrorKind(4);
    /// An I/O or external-command failure.
    pub const IO: ErrorKind = ErrorKind(5);
}

/// An error returned across the ABI. The message is complete and user-facing.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct PluginError {
    /// The class of error.
    pub kind: ErrorKind,
    /// A one-line message for the user.
    pub message: RString,
}

impl PluginError {
    /// An error of the given kind.
    #[inline]
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: RString::from(message.into()),
        }
    }
}

impl std::fmt::Display for PluginError {
    #[inline]
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

// ---------------------------------------------------------------------------------------------
// The manifest
// ---------------------------------------------------------------------------------------------

/// One backend or observer kind a plugin offers.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct KindInfo {
    /// The name a flow uses, such as `slurm`.
    pub name: RString,
    /// A one-line description.
    pub description: RString,
}

/// What a plugin offers.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct Manifest {
    /// Backend kinds.
    pub backends: RVec<KindInfo>,
    /// Observer kinds.
    pub observers: RVec<KindInfo>,
}

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

/// How a job's command is given.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// When true, `args` holds exactly one string, to run with `/bin/sh -c`.
    /// When false, `args` is the argv, run directly.
    pub shell: bool,
    /// The shell string or the argv.
    pub args: RVec<RString>,
}

/// Resources a job asks for.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct Resources {
    /// CPUs (at least 1).
    pub cpus: u32,
    /// Memory in MiB, when given.
    pub memory_mb: ROption<u64>,
    /// Named counted resources (licenses, ...), as declared in the flow's `[resources]`.
    pub named: RVec<Tuple2<RString, u64>>,
}

/// Everything a backend needs to run one job.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// The host's id for this job in this run; events refer to it.
    pub id: JobId,
    /// The job's expanded name, unique in the run.
    pub name: RString,
    /// The command.
    pub command: CommandSpec,
    /// The directory to run in (absolute). It exists unless the user's `cwd` names a
    /// missing directory, which the backend reports as a failure, or it is the job directory
    /// of a backend that declares `CREATES_JOB_DIR`.
    pub cwd: RString,
    /// Variables to set on top of the backend's base environment. The host puts the job
    /// environment of flowrun's contract here (`FLOWRUN_JOB_NAME`, `FLOWRUN_JOB_DIR`,
    /// `FLOWRUN_RUN_DIR`, `FLOWRUN_ATTEMPT`, `FLOWRUN_RUN_TAG`), so a backend passes `env` on
    /// and adds nothing of its own for them.
    pub env: RVec<Attr>,
    /// The job's private directory (absolute): created by the host, or by the backend when
    /// it declares `CapabilityFlags::CREATES_JOB_DIR`.
    pub job_dir: RString,
    /// Where the job's combined stdout and stderr must go (absolute).
    pub log_path: RString,
    /// The run's output directory (absolute).
    pub run_dir: RString,
    /// The run's tag: unique per run, usable as a cluster job name.
    pub run_tag: RString,
    /// The time limit in milliseconds, if any.
    pub timeout_ms: ROption<u64>,
    /// Resources.
    pub resources: Resources,
    /// The job needs the user's terminal.
    pub interactive: bool,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// Free-form attributes from the flow.
    pub attrs: RVec<Attr>,
}

/// The answer to one job of a `submit` batch.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubmitAnswerKind(pub u8);

impl SubmitAnswerKind {
    /// The backend took the job: it will report how it ends through the event sink.
    pub const ACCEPTED: SubmitAnswerKind = SubmitAnswerKind(0);
    /// The backend cannot take the job now; the host offers it again later, with backoff.
    pub const BUSY: SubmitAnswerKind = SubmitAnswerKind(1);
    /// The backend refuses the job; `message` says why. The job fails.
    pub const REJECTED: SubmitAnswerKind = SubmitAnswerKind(2);
}

/// The answer to one job of a `submit` batch, in the order of the batch.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct SubmitAnswer {
    /// The job.
    pub id: JobId,
    /// Accepted, busy or rejected.
    pub kind: SubmitAnswerKind,
    /// Why, for a rejection.
    pub message: RString,
}

impl SubmitAnswer {
    /// The job was accepted.
    #[inline]
    pub fn accepted(id: JobId) -> Self {
        SubmitAnswer {
            id,
            kind: SubmitAnswerKind::ACCEPTED,
            message: RString::new(),
        }
    }
    /// The backend is busy; offer the job again later.
    #[inline]
    pub fn busy(id: JobId) -> Self {
        SubmitAnswer {
            id,
            kind: SubmitAnswerKind::BUSY,
            message: RString::new(),
        }
    }
    /// The job is refused.
    #[inline]
    pub fn rejected(id: JobId, why: impl Into<String>) -> Self {
        SubmitAnswer {
            id,
            kind: SubmitAnswerKind::REJECTED,
            message: RString::from(why.into()),
        }
    }
}

/// What kind of [`JobEvent`] this is.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobEventKind(pub u8);

impl JobEventKind {
    /// The job started running (for a cluster: it left the cluster's queue).
    pub const STARTED: JobEventKind = JobEventKind(0);
    /// The job ended; [`JobEvent::end`] says how.
    pub const FINISHED: JobEventKind = JobEventKind(1);
    /// The backend lost track of the job; `reason` says why. The job fails.
    pub const LOST: JobEventKind = JobEventKind(2);
    /// The backend's scheduler took the job and named it: attr `native_id`. Not a start.
    /// The host records the id, so that `flowrun run --resume` after a crash of the host can
    /// re-attach a job that was still pending (`Backend::reattach`); nothing else changes.
    /// Optional (a backend without `CapabilityFlags::REATTACH` has no use for it). Added in
    /// 0.1.3: an older host would take it for a LOST event, but an older host refuses a 0.1.3
    /// plugin before anything runs.
    pub const SUBMITTED: JobEventKind = JobEventKind(3);
}

/// How a job ended.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndKind(pub u8);

impl EndKind {
    /// The process exited with `exit_code`; the host judges it (0 passes).
    pub const EXITED: EndKind = EndKind(0);
    /// The process died of `signal`.
    pub const SIGNALED: EndKind = EndKind(1);
    /// The backend judged the job failed, for `reason` (for example "Slurm time limit",
    /// "command not found: simv"). `exit_code` may be set too.
    pub const FAILED: EndKind = EndKind(2);
    /// The job was killed because the host asked for it.
    pub const KILLED: EndKind = EndKind(3);
}

/// A state change reported by a backend through the [`EventSink`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// The job.
    pub id: JobId,
    /// Started, finished or lost.
    pub kind: JobEventKind,
    /// For FINISHED: how it ended.
    pub end: EndKind,
    /// The exit code, when known.
    pub exit_code: ROption<i32>,
    /// The signal number, when the job died of one.
    pub signal: ROption<i32>,
    /// The backend's reason (FAILED, LOST), or extra detail such as "Slurm TIMEOUT".
    pub reason: RString,
    /// Free-form details. Known keys: `log` (a log file the backend wrote instead of, or
    /// besides, the spec's `log_path`; may repeat), `interactive` (`"1"` on STARTED of a job
    /// that holds the terminal), `native_id` (the cluster's job id).
    pub attrs: RVec<Attr>,
}

impl JobEvent {
    #[inline]
    fn base(id: JobId, kind: JobEventKind, end: EndKind) -> Self {
        JobEvent {
            id,
            kind,
            end,
            exit_code: ROption::RNone,
            signal: ROption::RNone,
            reason: RString::new(),
            attrs: RVec::new(),
        }
    }
    /// The job started.
    #[inline]
    pub fn started(id: JobId) -> Self {
        Self::base(id, JobEventKind::STARTED, EndKind::EXITED)
    }
    /// The backend's scheduler took the job as `native_id`.
    #[inline]
    pub fn submitted(id: JobId, native_id: impl Into<String>) -> Self {
        let mut e = Self::base(id, JobEventKind::SUBMITTED, EndKind::EXITED);
        e.attrs.push(Tuple2(
            RString::from("native_id"),
            RString::from(native_id.into()),
        ));
        e
    }
    /// The job's process exited with `code`.
    #[inline]
    pub fn exited(id: JobId, code: i32) -> Self {
        let mut e = Self::base(id, JobEventKind::FINISHED, EndKind::EXITED);
        e.exit_code = ROption::RSome(code);
        e
    }
    /// The job's process died of `signal`.
    #[inline]
    pub fn signaled(id: JobId, signal: i32) -> Self {
        let mut e = Self::base(id, JobEventKind::FINISHED, EndKind::SIGNALED);
        e.signal = ROption::RSome(signal);
        e
    }
    /// The backend judged the job failed.
    #[inline]
    pub fn failed(id: JobId, reason: impl Into<String>) -> Self {
        let mut e = Self::base(id, JobEventKind::FINISHED, EndKind::FAILED);
        e.reason = RString::from(reason.into());
        e
    }
    /// The job was killed on the host's request.
    #[inline]
    pub fn killed(id: JobId) -> Self {
        Self::base(id, JobEventKind::FINISHED, EndKind::KILLED)
    }
    /// The backend lost the job.
    #[inline]
    pub fn lost(id: JobId, why: impl Into<String>) -> Self {
        let mut e = Self::base(id, JobEventKind::LOST, EndKind::FAILED);
        e.reason = RString::from(why.into());
        e
    }
}

/// Capability flags of a backend.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CapabilityFlags(pub u64);

impl CapabilityFlags {
    /// `submit` takes many jobs at once efficiently.
    pub const BATCH_SUBMIT: CapabilityFlags = CapabilityFlags(1 << 0);
    /// `kill` takes many jobs at once efficiently.
    pub const BATCH_KILL: CapabilityFlags = CapabilityFlags(1 << 1);
    /// The backend can run `interactive` jobs.
    pub const INTERACTIVE: CapabilityFlags = CapabilityFlags(1 << 2);
    /// The backend groups jobs into arrays.
    pub const ARRAYS: CapabilityFlags = CapabilityFlags(1 << 3);
    /// The backend enforces `timeout_ms` itself (for example with the cluster's time limit)
    /// and reports the outcome; otherwise the host kills a job when its timeout expires.
    pub const ENFORCES_TIMEOUT: CapabilityFlags = CapabilityFlags(1 << 4);
    /// The backend writes nothing into job directories (a dry-run or fake backend), so the
    /// host need not create them. A backend that writes the job's log must not set this.
    pub const NO_JOB_DIR: CapabilityFlags = CapabilityFlags(1 << 5);
    /// The backend creates each job's directory itself, as part of starting the job (the
    /// local backend's child does, so that the host's thread makes no filesystem call per
    /// job); the host does not. Its parent, `<run dir>/jobs`, exists. Added in 0.1.2.
    pub const CREATES_JOB_DIR: CapabilityFlags = CapabilityFlags(1 << 6);
    /// The backend implements `Backend::reattach`: it can take over jobs that an earlier host
    /// of the same run submitted (a cluster's jobs outlive the host), by their native ids.
    /// Added in 0.1.3.
    pub const REATTACH: CapabilityFlags = CapabilityFlags(1 << 7);

    /// Whether every flag of `other` is set.
    #[inline]
    pub fn contains(self, other: CapabilityFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for CapabilityFlags {
    type Output = CapabilityFlags;
    #[inline]
    fn bitor(self, rhs: Self) -> Self {
        CapabilityFlags(self.0 | rhs.0)
    }
}

/// What a backend can do.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct Capabilities {
    /// Capability flags.
    pub flags: CapabilityFlags,
    /// The default cap on jobs running at once in one instance; 0 means no cap.
    pub default_max_parallel: u32,
    /// The most jobs the host passes in one `submit` or `kill` call; 0 means no limit.
    pub max_batch: u32,
}

// ---------------------------------------------------------------------------------------------
// Observers
// ---------------------------------------------------------------------------------------------

/// A job's status, as the host reports it to observers.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobStatus(pub u8);

impl JobStatus {
    /// Waiting for dependencies.
    pub const SCHEDULED: JobStatus = JobStatus(0);
    /// Ready, waiting for a slot.
    pub const QUEUED: JobStatus = JobStatus(1);
    /// Handed to a backend.
    pub const RUNNING: JobStatus = JobStatus(2);
    /// Ended and passed.
    pub const PASSED: JobStatus = JobStatus(3);
    /// Ended and failed.
    pub const FAILED: JobStatus = JobStatus(4);
    /// Killed.
    pub const KILLED: JobStatus = JobStatus(5);
    /// Never ran, because its `when` could not be met.
    pub const SKIPPED: JobStatus = JobStatus(6);

    /// The lower-case name (`"passed"`, ...), or `"unknown"`.
    #[inline]
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "scheduled",
            1 => "queued",
            2 => "running",
            3 => "passed",
            4 => "failed",
            5 => "killed",
            6 => "skipped",
            _ => "unknown",
        }
    }
    /// Whether the status is final.
    #[inline]
    pub fn is_terminal(self) -> bool {
        (3..=6).contains(&self.0)
    }
}

/// What kind of [`RunEvent`] this is.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunEventKind(pub u8);

impl RunEventKind {
    /// The run started: `flow`, `run_dir` and `jobs` are set.
    pub const RUN_STARTED: RunEventKind = RunEventKind(0);
    /// A job changed status: `job`, `old_status`, `new_status`, `reason` (and for a terminal
    /// status `exit_code`, `duration_s`, `log`, `backend`) are set.
    pub const JOB_STATUS: RunEventKind = RunEventKind(1);
    /// flowrun received a signal: `signal` is set (`"SIGINT"`, `"SIGTERM"`).
    pub const KILL_SIGNAL: RunEventKind = RunEventKind(2);
    /// The run finished: `summary` is set.
    pub const RUN_FINISHED: RunEventKind = RunEventKind(3);
}

/// A job as listed in the RUN_STARTED event.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct JobInfo {
    /// The expanded name.
    pub name: RString,
    /// The backend instance.
    pub backend: RString,
}

/// Counts per final status and the run's outcome, in RUN_FINISHED.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct RunSummary {
    /// Jobs that passed.
    pub passed: u64,
    /// Jobs that failed.
    pub failed: u64,
    /// Jobs that were killed.
    pub killed: u64,
    /// Jobs that were skipped.
    pub skipped: u64,
    /// Whether the run was interrupted by a signal.
    pub interrupted: bool,
    /// Wall-clock seconds from start to end.
    pub duration_s: f64,
    /// The path of results.json.
    pub results_path: RString,
}

/// One event of the run, the contract between the host and every observer.
/// Fields not listed for a kind are empty.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct RunEvent {
    /// Which event.
    pub kind: RunEventKind,
    /// When, in microseconds since the Unix epoch (UTC).
    pub time_us: i64,
    /// RUN_STARTED: the flow's name.
    pub flow: RString,
    /// RUN_STARTED: the run's output directory.
    pub run_dir: RString,
    /// RUN_STARTED: every job of the run.
    pub jobs: RVec<JobInfo>,
    /// JOB_STATUS: the job's name.
    pub job: RString,
    /// JOB_STATUS: the status before.
    pub old_status: JobStatus,
    /// JOB_STATUS: the status after.
    pub new_status: JobStatus,
    /// JOB_STATUS: why (for every job that did not pass).
    pub reason: RString,
    /// JOB_STATUS: the backend instance.
    pub backend: RString,
    /// JOB_STATUS (terminal): the exit code, when there was one.
    pub exit_code: ROption<i32>,
    /// JOB_STATUS (terminal): seconds the job ran, when it ran.
    pub duration_s: ROption<f64>,
    /// JOB_STATUS (terminal): the job's log file.
    pub log: RString,
    /// KILL_SIGNAL: the signal's name.
    pub signal: RString,
    /// RUN_FINISHED: the summary.
    pub summary: ROption<RunSummary>,
    /// Free-form details (for a pattern failure: `fail_line`, `fail_text`).
    pub attrs: RVec<Attr>,
}

impl RunEvent {
    /// An event of `kind` at `time_us` with every other field empty.
    #[inline]
    pub fn empty(kind: RunEventKind, time_us: i64) -> Self {
        RunEvent {
            kind,
            time_us,
            flow: RString::new(),
            run_dir: RString::new(),
            jobs: RVec::new(),
            job: RString::new(),
            old_status: JobStatus::SCHEDULED,
            new_status: JobStatus::SCHEDULED,
            reason: RString::new(),
            backend: RString::new(),
            exit_code: ROption::RNone,
            duration_s: ROption::RNone,
            log: RString::new(),
            signal: RString::new(),
            summary: ROption::RNone,
            attrs: RVec::new(),
        }
    }
    /// The value of attribute `key`, if present.
    #[inline]
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.0.as_str() == key)
            .map(|a| a.1.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Traits
// ---------------------------------------------------------------------------------------------

/// Where a backend reports job state changes. Provided by the host; never blocks; callable
/// from any thread.
#[sabi_trait]
pub trait EventSink: Send + Sync {
    /// Reports one event.
    #[sabi(last_prefix_field)]
    fn emit(&self, event: JobEvent);
}

/// An owned, shareable event sink.
pub type EventSinkBox = EventSink_TO<'static, RArc<()>>;

/// A runtime backend instance. Every call except `shutdown` returns promptly: a backend does
/// its work on threads or a runtime of its own (a plugin's tokio cannot see the host's).
#[sabi_trait]
pub trait Backend: Send + Sync {
    /// What the backend can do.
    fn capabilities(&self) -> Capabilities;
    /// Offers a batch of jobs. Answers one entry per job, in order.
    fn submit(&self, jobs: RVec<JobSpec>) -> RVec<SubmitAnswer>;
    /// Kills jobs previously accepted. Each ends with a FINISHED event (KILLED, or however it
    /// really ended if it ended first). Unknown or finished ids are ignored.
    fn kill(&self, ids: RSlice<'_, JobId>);
    /// Stops the backend: kills what still runs, waits for it and releases everything.
    /// Blocking; the host calls it off its async threads.
    #[sabi(last_prefix_field)]
    fn shutdown(&self);
    // @@since-0.1.1-begin (the ABI-compatibility test builds a plugin without this method)
    /// Counters for diagnostics and benchmarks, as TOML text (for example
    /// `status_queries = 12`). Added in plugin API 0.1.1.
    fn stats(&self) -> RString {
        RString::new()
    }
    // @@since-0.1.1-end
    // @@since-0.1.3-begin (the ABI-compatibility test builds a plugin without this method)
    /// Takes over jobs that an earlier host of the same run submitted and that may still be
    /// queued or running on the backend (`flowrun run --resume` after the host died):
    /// `native_ids[i]` is the id the backend reported for `jobs[i]` (its `native_id`
    /// attribute), and `jobs[i]` is the job as it was submitted then (same run tag, attempt,
    /// log path). Answers one entry per job, in order: ACCEPTED means the backend tracks the
    /// job to its end and reports it through the sink as if it had submitted it (STARTED when
    /// it runs, one FINISHED or LOST; a job that already ended is resolved from the backend's
    /// records); any other answer means "cannot re-attach" (`message` says why), and the host
    /// submits the job afresh as a new attempt. Only called on backends that declare
    /// `CapabilityFlags::REATTACH`. The default answers "cannot re-attach" for every job.
    /// Added in plugin API 0.1.3.
    fn reattach(&self, jobs: RVec<JobSpec>, native_ids: RVec<RString>) -> RVec<SubmitAnswer> {
        let _ = native_ids;
        jobs.iter()
            .map(|j| SubmitAnswer::rejected(j.id, "this backend cannot re-attach jobs"))
            .collect()
    }
    // @@since-0.1.3-end
}

/// An owned backend object.
pub type BackendBox = Backend_TO<'static, RBox<()>>;

/// An observer instance. The host calls it from one dedicated thread, behind a bounded queue.
#[sabi_trait]
pub trait Observer: Send + Sync {
    /// Receives a batch of events, in order.
    fn on_events(&self, events: RSlice<'_, RunEvent>);
    /// The run is over: flush and close. An error is reported to the user.
    #[sabi(last_prefix_field)]
    fn finish(&self) -> RResult<(), PluginError>;
}

/// An owned observer object.
pub type ObserverBox = Observer_TO<'static, RBox<()>>;

/// Services the host offers to plugins.
#[sabi_trait]
pub trait HostServices: Send + Sync {
    /// The most verbose log level the host shows: 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    fn max_log_level(&self) -> u8;
    /// Logs a record through the host's logger.
    #[sabi(last_prefix_field)]
    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>);
}

/// An owned host-services object.
pub type HostServicesBox = HostServices_TO<'static, RBox<()>>;

// ---------------------------------------------------------------------------------------------
// The root module
// ---------------------------------------------------------------------------------------------

/// The module every plugin library exports. Generated by the SDK's `export_plugin!`.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRoot_Ref)))]
pub struct PluginRoot {
    /// The plugin-api version the plugin was built against.
    pub api_version: RStr<'static>,
    /// The plugin's name.
    pub plugin_name: RStr<'static>,
    /// The plugin's own version.
    pub plugin_version: RStr<'static>,
    /// What the plugin offers.
    pub manifest: extern "C" fn() -> Manifest,
    /// Called once, right after loading.
    pub init: extern "C" fn(host: HostServicesBox) -> RResult<(), PluginError>,
    /// Creates a backend instance of `kind` from TOML `config`, reporting into `sink`.
    pub new_backend: extern "C" fn(
        kind: RStr<'_>,
        config: RStr<'_>,
        sink: EventSinkBox,
    ) -> RResult<BackendBox, PluginError>,
    /// Creates an observer instance of `kind` from TOML `config`.
    #[sabi(last_prefix_field)]
    pub new_observer:
        extern "C" fn(kind: RStr<'_>, config: RStr<'_>) -> RResult<ObserverBox, PluginError>,
}

impl RootModule for PluginRoot_Ref {
    declare_root_module_statics! {PluginRoot_Ref}
    const BASE_NAME: &'static str = "flowrun_plugin";
    const NAME: &'static str = "flowrun plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The plain C symbol every plugin exports, returning [`PLUGIN_API_VERSION`] as a
/// NUL-terminated string. The host reads it before any layout check.
pub const API_VERSION_SYMBOL: &[u8] = b"flowrun_plugin_api_version\0";

/// The plain C symbol every plugin exports, returning `"NAME VERSION"` NUL-terminated.
pub const IDENTITY_SYMBOL: &[u8] = b"flowrun_plugin_identity\0";

#[cfg(test)]
mod tests {
    use abi_stable::StableAbi;

    use super::*;

    #[test]
    fn layouts_carry_the_abi_package_name() {
        // build.rs pins it: plugins built before the split record this name, and abi_stable
        // refuses types of another package.
        // (`PluginRoot_Ref` itself is abi_stable's `PrefixRef`, of package abi_stable.)
        for layout in [
            <JobId as StableAbi>::LAYOUT,
            <JobSpec as StableAbi>::LAYOUT,
            <RunEvent as StableAbi>::LAYOUT,
        ] {
            assert_eq!(layout.package().as_str(), "flowrun-plugin-api");
        }
    }

    #[test]
    fn the_c_version_string_is_the_version_nul_terminated() {
        assert_eq!(
            PLUGIN_API_VERSION_C.strip_suffix('\0'),
            Some(PLUGIN_API_VERSION)
        );
    }
}
