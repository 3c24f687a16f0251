//! The scheduler core's inputs and outputs: a pure state machine (no I/O, no clock, no
//! threads), fed [`Input`]s with the current time and returning [`Action`]s. The async run loop
//! in `crate::run` owns no scheduling rule; it only carries these to and from the backends.
//!
//! The core reads the jobs straight from the flow's description ([`crate::flow::Job`]): a job
//! is described once. What the core needs beyond it (backends, resources, caps, deadlines) is
//! in [`SchedSpec`].

use std::time::{Duration, Instant};

pub use super::reason::{DependencyEnd, Reason};
pub use crate::flow::When;

/// A job index: the position of the job in the flow (`flow.jobs[i]`).
pub type JobIx = u32;

/// A backend instance index (`flow.backends[i]`).
pub type BackendIx = u32;

/// A job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Waiting for dependencies.
    Scheduled,
    /// Ready, waiting for a slot.
    Queued,
    /// Handed to its backend (from the Submit action on, including while the submission is in
    /// flight).
    Running,
    /// Ended and passed.
    Passed,
    /// Ended and failed.
    Failed,
    /// Killed.
    Killed,
    /// Never ran: its `when` could not be met.
    Skipped,
}

impl Status {
    /// Every status, in the order of the lifecycle.
    pub const ALL: [Status; 7] = [
        Status::Scheduled,
        Status::Queued,
        Status::Running,
        Status::Passed,
        Status::Failed,
        Status::Killed,
        Status::Skipped,
    ];

    /// Passed, failed, killed or skipped.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Passed | Status::Failed | Status::Killed | Status::Skipped
        )
    }

    /// The status's name, as results.json, the events and the display write it: the one
    /// status-to-text mapping.
    pub fn name(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Killed => "killed",
            Status::Skipped => "skipped",
        }
    }

    /// The position in [`Status::ALL`] (for arrays of counts).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the scheduler needs to know of one backend instance.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// The instance name (for reasons: "rejected by backend slurm: ...").
    pub name: String,
    /// The cap on slots in use at once; `None` for no cap.
    pub max_parallel: Option<u32>,
    /// The most jobs one Submit action carries (the backend's batch limit; 0 counts as 1). The
    /// core submits a further batch only after the answers to the previous one came in, so
    /// that a million ready jobs never wait, believed running, in the loop.
    pub max_batch: usize,
    /// The backend enforces timeouts itself. The core still keeps a deadline of its own, the
    /// timeout plus [`SchedSpec::margin`], so that a backend that never reports cannot hold
    /// the run.
    pub enforces_timeout: bool,
    /// How long the backend may take to report a job's end after a kill (its kill grace)
    /// before the core adds [`SchedSpec::margin`] and gives up on the job.
    pub kill_grace: Duration,
}

/// Everything the scheduler is built from besides the jobs.
#[derive(Debug, Clone)]
pub struct SchedSpec {
    /// Backends, indexed by [`BackendIx`].
    pub backends: Vec<BackendSpec>,
    /// Resource capacities, indexed by resource index.
    pub resources: Vec<u64>,
    /// The cap on running jobs across all backends.
    pub max_parallel: Option<u32>,
    /// The host's margin on deadlines a backend should have met: after a kill plus the
    /// backend's kill grace, and after the timeout of a backend that enforces timeouts.
    pub margin: Duration,
    /// After an interrupt, `when = "always"` jobs still run (cleanup); each of them is killed
    /// after at most this long.
    pub cleanup_limit: Duration,
    /// `--max-fail N` (`--fail-fast` is 1): once N jobs failed (after their retries), start
    /// nothing more.
    pub max_fail: Option<u32>,
    /// `--wait`: after `max_fail`, let running jobs finish rather than kill them.
    pub max_fail_wait: bool,
}

impl SchedSpec {
    /// The default host margin (`flowrun run --kill-margin`).
    pub const DEFAULT_MARGIN: Duration = Duration::from_secs(30);
    /// The default cleanup limit after an interrupt.
    pub const DEFAULT_CLEANUP_LIMIT: Duration = Duration::from_secs(300);
}

impl Default for SchedSpec {
    fn default() -> Self {
        SchedSpec {
            backends: Vec::new(),
            resources: Vec::new(),
            max_parallel: None,
            margin: Self::DEFAULT_MARGIN,
            cleanup_limit: Self::DEFAULT_CLEANUP_LIMIT,
            max_fail: None,
            max_fail_wait: false,
        }
    }
}

/// How a job's execution ended, as judged (`crate::outcome::judge`: exit code, signal, log
/// patterns and backend verdicts are already applied).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed.
    Failed(Reason),
    /// The backend confirms the job was killed (after a Kill action, or on its own); the core
    /// gives the reason of its own kill request when there was one, else this one.
    Killed(Reason),
}

/// A signal that interrupts the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// SIGINT (Ctrl-C).
    Sigint,
    /// SIGTERM.
    Sigterm,
    /// SIGHUP (the terminal went away), handled like SIGTERM.
    Sighup,
}

impl Interrupt {
    /// `"SIGINT"`, `"SIGTERM"` or `"SIGHUP"`.
    pub fn name(self) -> &'static str {
        match self {
            Interrupt::Sigint => "SIGINT",
            Interrupt::Sigterm => "SIGTERM",
            Interrupt::Sighup => "SIGHUP",
        }
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        match self {
            Interrupt::Sigint => libc::SIGINT,
            Interrupt::Sigterm => libc::SIGTERM,
            Interrupt::Sighup => libc::SIGHUP,
        }
    }
}

/// An event fed to the scheduler.
///
/// Answers and backend events about a job may arrive in any order (an event can overtake the
/// answer to its submit); the core sorts it out: a start or an end of a job whose submission is
/// still in flight implies its acceptance, an answer after that is ignored, and so is a second
/// end of a job, or anything about a job that is no longer running.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The backend accepted a submitted job.
    Accepted(JobIx),
    /// The backend was busy: offer the job again later, with backoff on that backend.
    Busy(JobIx),
    /// The backend rejected the job (or the submit call failed): the job fails with
    /// "rejected by backend NAME: ERROR".
    Rejected(JobIx, String),
    /// The job really started running (the job is already `Running`).
    Started(JobIx),
    /// The job ended, with its verdict.
    Finished(JobIx, Outcome),
    /// The job ended; its verdict follows as [`Input::Judged`] (its log is being scanned). The
    /// job keeps its slot until then; a second end of it is ignored.
    Ended(JobIx),
    /// The verdict on a job that [`Input::Ended`].
    Judged(JobIx, Outcome),
    /// The backend lost the job: it fails with "lost by backend NAME: WHY".
    Lost(JobIx, String),
    /// The user (or a test) asks to kill one job, with a reason.
    Kill(JobIx, Reason),
    /// A signal: start nothing more but `when = "always"` jobs, kill the rest (see the module
    /// docs of `core`).
    Interrupt(Interrupt),
    /// A second signal: end every job now. Running jobs are Killed (best-effort kills go out),
    /// queued ones Killed, waiting ones Skipped; afterwards every job is terminal.
    Abandon(Interrupt),
    /// Time passed (timeouts, kill deadlines and busy backoffs are due): the core looks at
    /// `now`.
    Tick,
    /// The job passed in an earlier run of this flow with the same definition (`--resume`,
    /// `--rerun-failed`): it counts as passed without running, and its dependents go on as
    /// after any pass. Only before [`SchedulerApi::start`] and only for a job still
    /// `Scheduled`; ignored otherwise.
    Reused(JobIx),
    /// `--no-deps`: the job is not run; it ended with this status (Failed, Killed or Skipped)
    /// and reason in the earlier run this one takes its dependencies' results from, and its
    /// dependents see that end. Only before [`SchedulerApi::start`] and only for a job still
    /// `Scheduled`; ignored otherwise (and for Passed, which is [`Input::Reused`]).
    Carried(JobIx, Status, Reason),
    /// `--resume`: the job was retried this many times in the run being continued (its
    /// earlier attempts are recorded there); it has that many fewer retries left, and its
    /// `retry_backoff` goes on doubling from there. Only before [`SchedulerApi::start`];
    /// ignored otherwise and for a job without `retries`.
    RetriesUsed(JobIx, u32),
}

/// An action for the run loop to carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Submit these jobs to this backend in one batch (at most the backend's `max_batch`).
    /// They are `Running` from now on; every one of them gets an answer.
    Submit(BackendIx, Vec<JobIx>),
    /// Kill these jobs on this backend in one batch.
    Kill(BackendIx, Vec<JobIx>),
    /// A job changed status (for observers, the status display and results.json). The reason
    /// of a terminal status other than Passed is [`SchedulerApi::reason`].
    Status {
        /// The job.
        job: JobIx,
        /// Before.
        old: Status,
        /// After.
        new: Status,
    },
    /// An attempt of a running job failed and the job gets another (`retries`): it is
    /// `Queued` again (this action stands for the change from `Running`), and the failure does
    /// not reach its dependents.
    Retry {
        /// The job.
        job: JobIx,
        /// How the attempt ended (failed or killed).
        status: Status,
        /// Why.
        reason: Reason,
    },
}

/// The scheduler's interface, as the run loop and the tests use it.
///
/// ```text
/// let mut s = Scheduler::new(&flow.jobs, spec);
/// s.start(now);                        // jobs without dependencies become Queued; Submits
/// while !s.is_done() {
///     for a in s.drain_actions() { ... }
///     // wait for backend events, a signal, or s.next_wakeup()
///     s.handle(input, now);
/// }
/// ```
pub trait SchedulerApi {
    /// Builds the scheduler over the flow's jobs; every job is `Scheduled`.
    fn new(jobs: &[crate::flow::Job], spec: SchedSpec) -> Self;
    /// Starts the run at `now`.
    fn start(&mut self, now: Instant);
    /// Feeds one input. Returns false when the core ignored it: a stray or duplicate answer or
    /// event (about a job that is not running, an answer after the job's start, a second end).
    /// The loop records a backend's facts about a job only when its input was applied.
    fn handle(&mut self, input: Input, now: Instant) -> bool;
    /// Takes the actions produced so far, in order. Submits and kills are batched per backend
    /// across the inputs fed since the last drain.
    fn drain_actions(&mut self) -> Vec<Action>;
    /// Whether [`SchedulerApi::drain_actions`] has something to return.
    fn has_actions(&self) -> bool;
    /// When the scheduler next needs a [`Input::Tick`] (a deadline or a busy backoff), if ever.
    fn next_wakeup(&self) -> Option<Instant>;
    /// Every job is terminal.
    fn is_done(&self) -> bool;
    /// The first interrupt, once there was one.
    fn interrupted(&self) -> Option<Interrupt>;
    /// A job's status.
    fn status(&self, job: JobIx) -> Status;
    /// A job's reason: set for every terminal status but Passed, `None` otherwise.
    fn reason(&self, job: JobIx) -> Option<&Reason>;
}
