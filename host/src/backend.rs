//! The core's view of backends: plain Rust traits and types. The plugin ABI is adapted to these
//! in `crate::plugins::ffi`; nothing else in the host touches abi_stable. The run loop drives
//! any [`Backend`], so its tests use in-process doubles instead of plugin libraries.

use std::{borrow::Cow, path::PathBuf};

use crate::{flow::Job, sched::JobIx};

/// What a backend can do.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendCaps {
    /// The backend can run interactive jobs.
    pub interactive: bool,
    /// The backend enforces timeouts itself (the host keeps only a backstop).
    pub enforces_timeout: bool,
    /// The default cap on running jobs; `None` for no cap.
    pub default_max_parallel: Option<u32>,
    /// The most jobs per submit or kill call; `None` for no limit.
    pub max_batch: Option<usize>,
    /// Who creates the job directory the backend writes the log and scripts into.
    pub job_dir: JobDirOwner,
    /// The backend can take over, by native id, jobs an earlier host of the run submitted
    /// ([`Backend::reattach`]).
    pub reattach: bool,
}

/// Who creates a job's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobDirOwner {
    /// The host, before it submits the job.
    Host,
    /// The backend, as part of starting the job (the local backend's child process does).
    Backend,
    /// Nobody: the backend writes nothing there (dry runs, the fake backend), so there is no
    /// log to judge either.
    #[default]
    Nobody,
}

/// What every job of a run shares.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The run directory (absolute).
    pub run_dir: PathBuf,
    /// The run directory as text (paths cross the ABI as text; converted once per run, not
    /// per job).
    pub run_dir_text: String,
    /// The run's tag, unique per run.
    pub run_tag: String,
    /// `[resources]` names, by resource index.
    pub resource_names: Vec<String>,
}

impl RunContext {
    /// The context of a run in `run_dir`.
    pub fn new(run_dir: PathBuf, run_tag: String, resource_names: Vec<String>) -> Self {
        RunContext {
            run_dir_text: run_dir.to_string_lossy().into_owned(),
            run_dir,
            run_tag,
            resource_names,
        }
    }
}

/// One job handed to a backend: the flow's description of the job ([`Job`], not copied) plus
/// what this attempt adds. `crate::plugins::ffi` turns it into the ABI's `JobSpec`: the one
/// conversion of a job description in the host.
#[derive(Debug, Clone)]
pub struct JobRequest<'a> {
    /// The job's index, echoed in answers and events.
    pub ix: JobIx,
    /// The job as the flow describes it.
    pub job: &'a Job,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The job directory of this attempt (absolute).
    pub job_dir: String,
    /// Where this attempt's output goes (absolute).
    pub log_path: String,
    /// What the run's jobs share.
    pub run: &'a RunContext,
}

/// The variables the host puts into every job's environment, after the flow's own `env` (so
/// that they win): the contract every backend relies on (docs/flow-format.md).
pub const HOST_ENV: [&str; 5] = [
    "FLOWRUN_JOB_NAME",
    "FLOWRUN_JOB_DIR",
    "FLOWRUN_RUN_DIR",
    "FLOWRUN_ATTEMPT",
    "FLOWRUN_RUN_TAG",
];

impl JobRequest<'_> {
    /// Where the job runs: its `cwd`, else its job directory.
    pub fn cwd(&self) -> Cow<'_, str> {
        match &self.job.cwd {
            Some(cwd) => cwd.to_string_lossy(),
            None => Cow::Borrowed(&self.job_dir),
        }
    }

    /// The time limit in milliseconds (saturating).
    pub fn timeout_ms(&self) -> Option<u64> {
        self.job
            .timeout
            .as_ref()
            .map(|t| u64::try_from(t.0.as_millis()).unwrap_or(u64::MAX))
    }

    /// Named resources: (name, amount).
    pub fn resources(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.job
            .resources
            .iter()
            .map(|&(r, n)| (self.run.resource_names[r as usize].as_str(), n))
    }

    /// The values of [`HOST_ENV`], in that order.
    pub fn host_env(&self) -> [Cow<'_, str>; 5] {
        [
            Cow::Borrowed(self.job.name.as_str()),
            Cow::Borrowed(self.job_dir.as_str()),
            Cow::Borrowed(self.run.run_dir_text.as_str()),
            Cow::Owned(self.attempt.to_string()),
            Cow::Borrowed(self.run.run_tag.as_str()),
        ]
    }

    /// The job's whole environment: the flow's `env`, then [`HOST_ENV`].
    pub fn env(&self) -> impl Iterator<Item = (&str, Cow<'_, str>)> + '_ {
        self.job
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str())))
            .chain(HOST_ENV.into_iter().zip(self.host_env()))
    }
}

/// A backend's answer to one submitted job.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitReply {
    /// Taken.
    Accepted,
    /// Offer it again later.
    Busy,
    /// Refused, with why.
    Rejected(String),
}

/// How a job ended, as the backend reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEnd {
    /// Exited with a code.
    Exited(i32),
    /// Died of a signal.
    Signaled(i32),
    /// The backend judged it failed, for a reason; maybe with an exit code.
    Failed(String, Option<i32>),
    /// Killed on the host's request.
    Killed,
}

impl JobEnd {
    /// The exit code, when there is one.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            JobEnd::Exited(code) => Some(*code),
            JobEnd::Failed(_, code) => *code,
            JobEnd::Signaled(_) | JobEnd::Killed => None,
        }
    }
}

/// What a backend measured of a finished job (brief contract 4; each part when known).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds of the job's whole process tree.
    pub cpu_s: Option<f64>,
    /// Peak memory of the tree, MiB.
    pub max_rss_mb: Option<f64>,
    /// Where the figures come from (`cgroup`, `rusage`, `sacct`, ...).
    pub source: Option<String>,
}

/// A state change reported by a backend.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendEvent {
    /// The job started; `interactive` when it holds the terminal now.
    Started {
        /// The job.
        job: JobIx,
        /// Holds the terminal.
        interactive: bool,
        /// The cluster's id for the job, when it has one.
        native_id: Option<String>,
    },
    /// The job ended; `logs` lists the files holding its output when they are not the
    /// request's `log_path`.
    Finished {
        /// The job.
        job: JobIx,
        /// How.
        end: JobEnd,
        /// Extra detail from the backend ("Slurm TIMEOUT"); empty when none.
        detail: String,
        /// Log files written instead of `log_path`.
        logs: Vec<PathBuf>,
        /// The cluster's id for the job, when it has one.
        native_id: Option<String>,
        /// What the job used.
        usage: Usage,
    },
    /// The backend's scheduler took the job as `native_id` (it has not started): recorded so
    /// that a `--resume` after a crash can re-attach it.
    Submitted {
        /// The job.
        job: JobIx,
        /// The cluster's id for the job.
        native_id: String,
    },
    /// The backend lost the job.
    Lost {
        /// The job.
        job: JobIx,
        /// Why.
        why: String,
    },
}

impl BackendEvent {
    /// The job the event is about.
    pub fn job(&self) -> JobIx {
        match self {
            BackendEvent::Started { job, .. }
            | BackendEvent::Submitted { job, .. }
            | BackendEvent::Finished { job, .. }
            | BackendEvent::Lost { job, .. } => *job,
        }
    }
}

/// A runtime backend instance, as the core uses it. All calls but `shutdown` return promptly.
pub trait Backend: Send + Sync {
    /// What it can do.
    fn capabilities(&self) -> BackendCaps;
    /// Offers a batch; one reply per job, in order.
    fn submit(&self, jobs: &[JobRequest<'_>]) -> Vec<SubmitReply>;
    /// Kills jobs.
    fn kill(&self, jobs: &[JobIx]);
    /// Stops the backend; may block (the host bounds how long it waits).
    fn shutdown(&self);
    /// Diagnostic counters, as TOML text.
    fn stats(&self) -> String;
    /// Takes over jobs an earlier host of the run submitted, each with the native id it had
    /// (`--resume` after a crash; only on a backend whose caps say `reattach`). One reply per
    /// job, in order: `Accepted` (tracked to its end, reported like a submitted job) or
    /// anything else, which means "cannot re-attach": the job is submitted afresh.
    fn reattach(&self, jobs: &[(JobRequest<'_>, &str)]) -> Vec<SubmitReply> {
        jobs.iter()
            .map(|_| SubmitReply::Rejected("this backend cannot re-attach jobs".into()))
            .collect()
    }
}

/// Where backends report events. Implemented by the run loop; never blocks.
pub trait EventSender: Send + Sync {
    /// Reports an event.
    fn send(&self, event: BackendEvent);
}
