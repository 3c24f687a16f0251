//! The core's view of backends and observers: plain Rust traits and types. The plugin ABI is
//! adapted to these in `crate::plugins::ffi`; nothing else in the host touches abi_stable.

use std::path::PathBuf;

use crate::sched::JobIx;

/// What a backend can do.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendCaps {
    /// The backend can run interactive jobs.
    pub interactive: bool,
    /// The backend enforces timeouts itself (the scheduler does not).
    pub enforces_timeout: bool,
    /// The default cap on running jobs; `None` for no cap.
    pub default_max_parallel: Option<u32>,
    /// The most jobs per submit or kill call; `None` for no limit.
    pub max_batch: Option<usize>,
    /// Who creates the job directory the backend writes the log and scripts into.
    pub job_dir: JobDirOwner,
}

/// Who creates a job's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobDirOwner {
    /// The host, before it submits the job.
    Host,
    /// The backend, as part of starting the job (the local backend's child process does).
    Backend,
    /// Nobody: the backend writes nothing there (dry runs, the fake backend).
    #[default]
    Nobody,
}

/// A job's command.
#[derive(Debug, Clone)]
pub enum JobCommand {
    /// Run through `/bin/sh -c`.
    Shell(String),
    /// Run directly.
    Argv(Vec<String>),
}

/// One job handed to a backend.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// The job's index, echoed in answers and events.
    pub job: JobIx,
    /// The job's name.
    pub name: String,
    /// The command.
    pub command: JobCommand,
    /// Where to run.
    pub cwd: PathBuf,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// The job directory.
    pub job_dir: PathBuf,
    /// Where output goes.
    pub log_path: PathBuf,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The run's tag.
    pub run_tag: String,
    /// The time limit in milliseconds.
    pub timeout_ms: Option<u64>,
    /// CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
    /// Named resources.
    pub resources: Vec<(String, u64)>,
    /// Needs the terminal.
    pub interactive: bool,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Free-form attributes.
    pub attrs: Vec<(String, String)>,
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

/// A state change reported by a backend.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendEvent {
    /// The job started; `interactive` when it holds the terminal now.
    Started {
        /// The job.
        job: JobIx,
        /// Holds the terminal.
        interactive: bool,
    },
    /// The job ended; `logs` lists the files holding its output when they are not the
    /// request's `log_path`.
    Finished {
        /// The job.
        job: JobIx,
        /// How.
        end: JobEnd,
        /// Extra detail from the backend ("Slurm TIMEOUT").
        detail: String,
        /// Log files written instead of `log_path`.
        logs: Vec<PathBuf>,
    },
    /// The backend lost the job.
    Lost {
        /// The job.
        job: JobIx,
        /// Why.
        why: String,
    },
}

/// A runtime backend instance, as the core uses it. All calls but `shutdown` return promptly.
pub trait Backend: Send + Sync {
    /// What it can do.
    fn capabilities(&self) -> BackendCaps;
    /// Offers a batch; one reply per job, in order.
    fn submit(&self, jobs: Vec<JobRequest>) -> Vec<SubmitReply>;
    /// Kills jobs.
    fn kill(&self, jobs: &[JobIx]);
    /// Stops the backend; blocking.
    fn shutdown(&self);
    /// Diagnostic counters, as TOML text.
    fn stats(&self) -> String;
}

/// Where backends report events. Implemented by the run loop; never blocks.
pub trait EventSender: Send + Sync {
    /// Reports an event.
    fn send(&self, event: BackendEvent);
}
