//! The scheduler core's inputs and outputs: a pure state machine (no I/O, no clock, no
//! threads), fed [`Input`]s with the current time and returning [`Action`]s. The async run loop
//! in `crate::run` owns no scheduling rule; it only carries these to and from the backends.

use std::time::{Duration, Instant};

/// A job index: the position of the job in the flow (`flow.jobs[i]`).
pub type JobIx = u32;

/// A backend instance index (`flow.backends[i]`).
pub type BackendIx = u32;

/// When a job may run, given how its dependencies ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum When {
    /// Every dependency passed.
    #[default]
    AllPassed,
    /// All dependencies ended and at least one passed.
    AnyPassed,
    /// All dependencies ended, however.
    Always,
}

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
    /// Passed, failed, killed or skipped.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Passed | Status::Failed | Status::Killed | Status::Skipped
        )
    }
}

/// What the scheduler needs to know of one job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The job's name (ties in priority are broken by name, ascending; also used in reasons
    /// such as "dependency failed: build").
    pub name: String,
    /// Higher starts first among ready jobs.
    pub priority: i64,
    /// The backend instance.
    pub backend: BackendIx,
    /// Dependencies (job indices).
    pub needs: Vec<JobIx>,
    /// The rule over the dependencies' outcomes.
    pub when: When,
    /// Slots the job takes in its backend's cap (its `cpus`, at least 1).
    pub slots: u32,
    /// Named resources: (resource index, amount).
    pub resources: Vec<(u32, u64)>,
    /// The timeout the scheduler enforces (None when there is none, or when the backend
    /// enforces it itself), with its text for the reason ("timed out after 30m").
    pub timeout: Option<(Duration, String)>,
}

/// What the scheduler needs to know of one backend instance.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// The instance name (for reasons: "rejected by backend slurm: ...").
    pub name: String,
    /// The cap on slots in use at once; `None` for no cap.
    pub max_parallel: Option<u32>,
}

/// Everything the scheduler is built from.
#[derive(Debug, Clone, Default)]
pub struct SchedSpec {
    /// Jobs, indexed by [`JobIx`].
    pub jobs: Vec<JobSpec>,
    /// Backends, indexed by [`BackendIx`].
    pub backends: Vec<BackendSpec>,
    /// Resource capacities, indexed by resource index.
    pub resources: Vec<u64>,
    /// The cap on running jobs across all backends.
    pub max_parallel: Option<u32>,
}

/// How a job's execution ended, as judged by the run loop (exit code, log patterns, backend
/// verdicts are already applied).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed, for `reason` ("exit code 3", "fail pattern matched at line 120: ...").
    Failed {
        /// Why.
        reason: String,
    },
    /// The backend confirms the job was killed (after a Kill action, or on its own).
    Killed {
        /// Why, when the backend killed it on its own initiative; the scheduler uses the reason
        /// of its own kill request when there was one.
        reason: String,
    },
}

/// A signal that interrupts the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// SIGINT (Ctrl-C).
    Sigint,
    /// SIGTERM.
    Sigterm,
}

impl Interrupt {
    /// `"SIGINT"` or `"SIGTERM"`.
    pub fn name(self) -> &'static str {
        match self {
            Interrupt::Sigint => "SIGINT",
            Interrupt::Sigterm => "SIGTERM",
        }
    }
}

/// An event fed to the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The backend accepted a submitted job.
    Accepted(JobIx),
    /// The backend was busy: offer the job again later, with backoff on that backend.
    Busy(JobIx),
    /// The backend rejected the job (or the submit call failed): the job fails with
    /// "rejected by backend NAME: ERROR".
    Rejected(JobIx, String),
    /// The job really started running (informational; the job is already `Running`).
    Started(JobIx),
    /// The job ended.
    Finished(JobIx, Outcome),
    /// The backend lost the job: it fails with "lost by backend NAME: WHY".
    Lost(JobIx, String),
    /// The user (or a test) asks to kill one job, with a reason.
    Kill(JobIx, String),
    /// A signal: start nothing more, kill everything (see the module docs of `core`).
    Interrupt(Interrupt),
    /// Time passed (timeouts and busy backoffs are due): the scheduler looks at `now`.
    Tick,
}

/// An action for the run loop to carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Submit these jobs to this backend in one batch. They are `Running` from now on.
    Submit(BackendIx, Vec<JobIx>),
    /// Kill these jobs on this backend in one batch.
    Kill(BackendIx, Vec<JobIx>),
    /// A job changed status (for observers, the status display and results.json).
    Status {
        /// The job.
        job: JobIx,
        /// Before.
        old: Status,
        /// After.
        new: Status,
        /// Why, for every terminal status but Passed (empty otherwise).
        reason: String,
    },
}

/// The scheduler's interface, as the run loop and the tests use it.
///
/// ```text
/// let mut s = Scheduler::new(spec);
/// s.start(now);                        // jobs without dependencies become Queued; Submits
/// while !s.is_done() {
///     for a in s.drain_actions() { ... }
///     // wait for backend events, a signal, or s.next_wakeup()
///     s.handle(input, now);
/// }
/// ```
pub trait SchedulerApi {
    /// Builds the scheduler; every job is `Scheduled`.
    fn new(spec: SchedSpec) -> Self;
    /// Starts the run at `now`.
    fn start(&mut self, now: Instant);
    /// Feeds one input.
    fn handle(&mut self, input: Input, now: Instant);
    /// Takes the actions produced so far, in order. Submits and kills are batched per backend
    /// across the inputs fed since the last drain.
    fn drain_actions(&mut self) -> Vec<Action>;
    /// When the scheduler next needs a [`Input::Tick`] (a timeout or a busy backoff), if ever.
    fn next_wakeup(&self) -> Option<Instant>;
    /// Every job is terminal.
    fn is_done(&self) -> bool;
    /// A job's status.
    fn status(&self, job: JobIx) -> Status;
    /// A job's reason (empty for passed and non-terminal jobs).
    fn reason(&self, job: JobIx) -> &str;
}
