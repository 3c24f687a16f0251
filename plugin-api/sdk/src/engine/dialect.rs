//! What a batch-system backend supplies: the [`Dialect`] trait, and the plain data the engine
//! and a dialect exchange. Nothing here names an ABI type.
//!
//! Vocabulary: a *job* is flowrun's; a *native job* (with its *native id*) is the scheduler's.
//! One submission is a *unit*: one job, or one array of same-shape jobs.

use std::{path::PathBuf, time::Duration};

use super::{
    command::{CommandOutput, Commands},
    config::EngineDefaults,
    script,
};

/// The engine's (and the host's) key for one job of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey(pub u64);

/// A job's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobCommand {
    /// A shell string, run with `/bin/sh -c`.
    Shell(String),
    /// An argv, run as it is.
    Argv(Vec<String>),
}

/// One job, as the engine hands it to a dialect.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The engine's key.
    pub key: JobKey,
    /// The job's name, unique in the run.
    pub name: String,
    /// What to run.
    pub command: JobCommand,
    /// The directory to run in.
    pub cwd: PathBuf,
    /// Variables to export (the host includes the `FLOWRUN_*` ones).
    pub env: Vec<(String, String)>,
    /// The job's private directory; the engine creates it before submitting.
    pub job_dir: PathBuf,
    /// Where the job's combined output goes; the engine creates its directory.
    pub log_path: PathBuf,
    /// The run's output directory.
    pub run_dir: PathBuf,
    /// The run's tag, unique per run.
    pub run_tag: String,
    /// The time limit, if any.
    pub timeout: Option<Duration>,
    /// CPUs (at least 1).
    pub cpus: u32,
    /// Memory in MiB, when given.
    pub memory_mb: Option<u64>,
    /// Named counted resources of the flow (licenses, ...).
    pub named_resources: Vec<(String, u64)>,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Free-form attributes from the flow.
    pub attrs: Vec<(String, String)>,
}

impl Job {
    /// The time limit in whole seconds, rounded up, at least 1 (Grid Engine's `h_rt`).
    pub fn timeout_secs(&self) -> Option<u64> {
        let limit = self.timeout?;
        Some((limit.as_millis().div_ceil(1000).max(1)) as u64)
    }

    /// The time limit in whole minutes, rounded up, at least 1 (Slurm's `--time`, LSF's
    /// `-W`).
    pub fn timeout_minutes(&self) -> Option<u64> {
        Some(self.timeout_secs()?.div_ceil(60))
    }
}

/// The array part of a [`Submission`].
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayPlan {
    /// The dispatcher script the engine wrote: task `first_index + i` runs member `i`'s script.
    pub dispatcher: PathBuf,
    /// The directory of the dispatcher, also a place for the scheduler's per-task output.
    pub dir: PathBuf,
    /// The index of the first member (`Dialect::array_first_index`).
    pub first_index: u32,
    /// The most members that may run at once (`array_slot_limit`), if limited.
    pub slot_limit: Option<u32>,
}

/// One unit to submit: one job, or an array of same-shape jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The scheduler job name: the run's tag, sanitized. Every job of a run carries it, so
    /// the run's jobs can be found (and cancelled) by name, even after a crash.
    pub name: String,
    /// The jobs, in array order (one for a single job).
    pub jobs: Vec<Job>,
    /// Each job's script (`Dialect::job_script`), written by the engine in its job directory.
    pub scripts: Vec<PathBuf>,
    /// Set for an array.
    pub array: Option<ArrayPlan>,
}

impl Submission {
    /// The first and last task index of an array (`None` for a single job), for the
    /// scheduler's `FIRST-LAST` range.
    pub fn index_range(&self) -> Option<(u32, u32)> {
        let plan = self.array.as_ref()?;
        Some((
            plan.first_index,
            plan.first_index + self.jobs.len() as u32 - 1,
        ))
    }

    /// The script to submit: the job's, or the array's dispatcher.
    pub fn script(&self) -> &std::path::Path {
        match &self.array {
            None => &self.scripts[0],
            Some(plan) => &plan.dispatcher,
        }
    }

    /// The directory to submit it in: the job's `cwd`, or for an array the run directory (each
    /// member's script enters its own `cwd`).
    pub fn workdir(&self) -> &std::path::Path {
        match &self.array {
            None => &self.jobs[0].cwd,
            Some(_) => &self.jobs[0].run_dir,
        }
    }

    /// The native ids of the unit's jobs from the one id the scheduler printed: `[id]` for a
    /// single job, `member(id, index)` for each member of an array, in order.
    pub fn native_ids(&self, id: &str, member: impl Fn(&str, u32) -> String) -> Vec<String> {
        match self.index_range() {
            None => vec![id.to_string()],
            Some((first, last)) => (first..=last).map(|i| member(id, i)).collect(),
        }
    }
}

/// What a status query covers: every job of the run the scheduler has.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// The scheduler job names of the run (usually one).
    pub names: Vec<String>,
    /// The native ids the engine is tracking.
    pub ids: Vec<String>,
    /// How long ago the engine started: how far back a query of finished jobs must look.
    pub age: Duration,
}

/// Resource usage of a finished job, from the scheduler's accounting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds of the whole job.
    pub cpu_s: Option<f64>,
    /// Peak memory in MiB.
    pub max_rss_mb: Option<f64>,
    /// Where the figures come from (`sacct`, `qacct`, `lsf-report`...).
    pub source: &'static str,
}

/// One row of a status snapshot or of a final-records query, in the scheduler's words.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NativeStatus {
    /// The native id (for an array member, the member's own id, such as `123_4`).
    pub id: String,
    /// The native state name (`RUNNING`, `DONE`, `qw`...).
    pub state: String,
    /// The scheduler's reason or exit reason, if any.
    pub reason: String,
    /// The exit status, when known.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when known.
    pub signal: Option<i32>,
    /// Resource usage, when the source reports it.
    pub usage: Option<Usage>,
}

impl NativeStatus {
    /// A row of job `id` in native state `state`, with nothing else known.
    pub fn new(id: impl Into<String>, state: impl Into<String>) -> NativeStatus {
        NativeStatus {
            id: id.into(),
            state: state.into(),
            ..Default::default()
        }
    }
}

/// Where a [`NativeStatus`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The per-interval status snapshot (`Dialect::status`).
    Snapshot,
    /// The second source of final states (`Dialect::final_records`).
    Record,
}

/// What the dialect knows of a job when it judges a status row.
#[derive(Debug, Clone, Copy)]
pub struct JobContext<'a> {
    /// The job.
    pub job: &'a Job,
    /// flowrun asked to cancel it (a kill, or shutdown).
    pub kill_requested: bool,
    /// A STARTED event was reported.
    pub started: bool,
    /// Where the row came from.
    pub source: Source,
}

/// How a job ended, in flowrun's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Exited with this status (0 passes).
    Exited(i32),
    /// Died of this signal.
    Signaled(i32),
    /// Failed for a reason the scheduler gave (a time limit, cancelled outside flowrun...).
    Failed {
        /// The reason, for the user.
        reason: String,
        /// The exit status, when known.
        exit_code: Option<i32>,
        /// Whether the job evidently ran (a STARTED event is reported before its end).
        ran: bool,
    },
    /// Cancelled because flowrun asked.
    Killed,
}

impl Verdict {
    /// A failure with a reason, for a job that ran.
    pub fn failed(reason: impl Into<String>) -> Verdict {
        Verdict::Failed {
            reason: reason.into(),
            exit_code: None,
            ran: true,
        }
    }

    /// Whether the job evidently ran before it ended.
    pub fn ran(&self) -> bool {
        match self {
            Verdict::Exited(_) | Verdict::Signaled(_) => true,
            Verdict::Failed { ran, .. } => *ran,
            Verdict::Killed => false,
        }
    }
}

/// What a status row means for a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Waiting to run.
    Queued,
    /// Waiting for a reason that means it can never start (the request exceeds what the
    /// cluster offers). If it stays so for `lost_after`, the engine cancels it, and it fails
    /// with this reason.
    Stuck(String),
    /// Running (or winding down).
    Running,
    /// Started, and paused by the scheduler or by someone with the right to (LSF's USUSP and
    /// SSUSP, Grid Engine's `s`): not final. The engine treats it as running, and logs (a
    /// warning) when the job is suspended and when it runs again, with this reason.
    Suspended(String),
    /// In an explicit unknown state (LSF's UNKWN): not final; if it stays unknown for
    /// `lost_after` the job is lost, with this reason.
    Unknown(String),
    /// Ended.
    Final(Verdict),
    /// Ended, but the verdict needs the final record (the exit code of a failed Slurm job):
    /// the engine asks `final_records`, and ends the job with `fallback` if no record comes
    /// within `lost_after`.
    FinalNeedsRecord {
        /// The verdict to give without a record.
        fallback: Verdict,
    },
}

/// Why the engine would ask for final records, for [`Dialect::looks_up`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The snapshot says the job ended and the verdict is known: the record would add its
    /// resource usage (the engine waits at most `final_record_wait` for it).
    Usage,
    /// The snapshot says the job ended, but the verdict needs the record.
    Verdict,
    /// The job is missing from the snapshot (or in an unknown state).
    Vanished,
}

/// Why a submission failed.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitError {
    /// A command failed: the engine retries it if it failed transiently
    /// ([`CommandOutput::failed_transiently`] or [`Dialect::is_transient`]), else the unit's
    /// jobs fail with `PROGRAM failed: MESSAGE`.
    Command(CommandOutput),
    /// The unit's jobs fail with this reason, without a retry.
    Rejected(String),
    /// A command failed in a way that leaves open whether the scheduler took the unit (LSF's
    /// bsub exiting 255 without a word, as a dropped connection does): retried as a transient
    /// failure, and the run's jobs are cancelled by name at shutdown, in case a copy was
    /// taken.
    Ambiguous(CommandOutput),
}

/// A scheduler's dialect: everything the engine needs that is specific to one batch system.
///
/// Every method is called from one of the engine's threads, never under its lock except
/// [`Dialect::judge`] (keep that one quick and free of commands). The engine owns the policy:
/// rates, retries, grace windows, arrays, kills, shutdown. See `docs/engine.md`.
pub trait Dialect: Send + Sync + 'static {
    /// The scheduler's name for messages: `Slurm`, `LSF`, `Grid Engine`.
    fn scheduler(&self) -> &str;

    /// Whether `submit` passes the job's timeout to the scheduler as its time limit (the host
    /// then leaves time limits to the scheduler).
    fn enforces_timeout(&self) -> bool {
        true
    }

    /// The defaults of the engine's keys for this scheduler.
    fn defaults() -> EngineDefaults
    where
        Self: Sized,
    {
        EngineDefaults::STANDARD
    }

    /// The file name of a job's script in its job directory.
    fn script_name(&self) -> &str {
        "cluster-job.sh"
    }

    /// The job's batch script. `in_array`: the script must send its output to the job's log
    /// itself (one output option cannot name every member's log). The default is the
    /// engine's bash script ([`script::job_script`]). An error is the job's failure reason.
    fn job_script(&self, job: &Job, in_array: bool) -> Result<String, String> {
        script::job_script(
            job,
            &script::ScriptOptions {
                redirect_to_log: in_array,
                ..script::ScriptOptions::new(format!("flowrun's {} backend", self.scheduler()))
            },
        )
    }

    /// The environment variable holding an array task's index, or `None` if the dialect does
    /// not submit arrays.
    fn array_task_variable(&self) -> Option<&str> {
        None
    }

    /// The index of an array's first task.
    fn array_first_index(&self) -> u32 {
        1
    }

    /// The directory name (under the run directory) for array dispatcher scripts.
    fn array_dir_name(&self) -> &str {
        "cluster-arrays"
    }

    /// A key: jobs with equal keys (and the same run) may share an array. The default is the
    /// CPUs, memory, time limit and named resources; a dialect that rounds limits (Slurm's
    /// whole minutes) can return the submission options the job would get.
    fn shape(&self, job: &Job) -> String {
        let mut named = job.named_resources.clone();
        named.sort();
        format!(
            "cpus={} mem={:?} timeout={:?} named={named:?}",
            job.cpus.max(1),
            job.memory_mb,
            job.timeout
        )
    }

    /// Submits one unit and returns the native id of each job, in order.
    fn submit(&self, cmd: &Commands, unit: &Submission) -> Result<Vec<String>, SubmitError>;

    /// One snapshot of every job in `scope`: one query (or as few as the scheduler allows)
    /// whatever the number of jobs. A job missing from the snapshot is *missing*, not ended.
    /// An error changes no job.
    fn status(&self, cmd: &Commands, scope: &Scope) -> Result<Vec<NativeStatus>, CommandOutput>;

    /// What a row means for a job.
    fn judge(&self, status: &NativeStatus, job: &JobContext) -> Judgement;

    /// Whether the engine should look a job up in the final records for this reason
    /// ([`Dialect::record_in_job_files`], then [`Dialect::final_records`]).
    fn looks_up(&self, why: Lookup) -> bool {
        let _ = why;
        false
    }

    /// The second source of final states (Slurm's `sacct`, Grid Engine's `qacct`): rows
    /// for `ids` where known. Called at most once per poll interval, right after the
    /// snapshot. Rows that are not final are ignored; an error changes no job.
    fn final_records(
        &self,
        cmd: &Commands,
        scope: &Scope,
        ids: &[String],
    ) -> Result<Vec<NativeStatus>, CommandOutput> {
        let _ = (cmd, scope, ids);
        Ok(Vec::new())
    }

    /// A final record that the job left in its own files (LSF's job report, written into the
    /// job directory; an exit status the job's script wrote), for a job the engine looks up
    /// (see [`Dialect::looks_up`]). Asked on the monitor's thread, outside the engine's lock,
    /// before [`Dialect::final_records`], which is asked only about the jobs this answers
    /// `None` for. Keep it to reading a few small files; make sure that what it reads belongs
    /// to this submission (`native_id`), not to an earlier run of the same job directory.
    fn record_in_job_files(&self, job: &Job, native_id: &str) -> Option<NativeStatus> {
        let _ = (job, native_id);
        None
    }

    /// Cancels native jobs (never an empty list; at most `cancel_batch` ids). An id that has
    /// already ended must count as cancelled. An error is retried while the job is tracked.
    fn cancel(&self, cmd: &Commands, ids: &[String]) -> Result<(), CommandOutput>;

    /// The shutdown safety net: cancels every job of the run by name (what the engine has no
    /// id for, such as a submission that timed out after the scheduler took it).
    fn cancel_all(&self, cmd: &Commands, scope: &Scope) -> Result<(), CommandOutput> {
        let _ = (cmd, scope);
        Ok(())
    }

    /// Whether a failed command is worth retrying (the controller is unreachable or busy)
    /// rather than the request being wrong. Timeouts and signal deaths always are.
    fn is_transient(&self, out: &CommandOutput) -> bool;

    /// The reason a job is lost after it went missing from every view for `waited`.
    fn vanished_reason(&self, native_id: &str, waited: Duration) -> String {
        format!(
            "{} job {native_id} vanished from the queue and no final state was found for it within {}s",
            self.scheduler(),
            waited.as_secs()
        )
    }

    /// The reason a job is lost when shutdown cancelled it but it did not leave the queue
    /// within `waited`.
    fn leftover_reason(&self, native_id: &str, waited: Duration) -> String {
        format!(
            "{} job {native_id} was cancelled but did not leave the queue within {}s",
            self.scheduler(),
            waited.as_secs()
        )
    }

    /// The programs the dialect runs, so that `stats()` shows a count for each even before
    /// its first call.
    fn commands(&self) -> &[&str] {
        &[]
    }

    /// Extra `stats()` lines of the dialect, as TOML `key = value` pairs (value already in
    /// TOML syntax).
    fn stats(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}
