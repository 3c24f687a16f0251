//! The observer trait an author implements, borrowed views of the run's events, and the
//! guarded adapter to the ABI trait.

use flowrun_plugin_abi::{
    self as abi,
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RSlice},
    },
};

use crate::{guard, JobStatus, Pairs, PluginError, RunEventKind};

/// An observer, in plain Rust. The host calls it from one thread of its own, behind a bounded
/// queue, so a slow observer never stalls the run.
pub trait ObserverImpl: Send + Sync + 'static {
    /// A batch of run events, in order.
    fn on_events(&self, events: RunEvents<'_>);
    /// The run is over: flush and close. An error is reported to the user.
    fn finish(&self) -> Result<(), PluginError>;
}

/// Creates an observer from its TOML config text.
pub type ObserverFactory = fn(config: &str) -> Result<Box<dyn ObserverImpl>, PluginError>;

/// An observer kind, registered with [`crate::register_observer!`].
pub struct ObserverKind {
    /// The kind's name.
    pub name: &'static str,
    /// One line for `flowrun plugins list`.
    pub description: &'static str,
    /// The constructor.
    pub create: ObserverFactory,
    /// This kind's record of the identity note (see [`crate::BackendKind::note`]).
    #[doc(hidden)]
    pub note: &'static [u8],
}

inventory::collect!(ObserverKind);

/// A batch of run events, in order, borrowed for the `on_events` call.
#[derive(Clone, Copy)]
pub struct RunEvents<'a>(&'a [abi::RunEvent]);

impl<'a> RunEvents<'a> {
    /// Views ABI events (the SDK's adapter and the test kit's harness do).
    #[inline]
    pub fn from_abi(events: &'a [abi::RunEvent]) -> Self {
        RunEvents(events)
    }

    /// How many events.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The events, in order.
    #[inline]
    pub fn iter(&self) -> RunEventsIter<'a> {
        RunEventsIter(self.0.iter())
    }
}

impl<'a> IntoIterator for RunEvents<'a> {
    type Item = RunEvent<'a>;
    type IntoIter = RunEventsIter<'a>;
    #[inline]
    fn into_iter(self) -> RunEventsIter<'a> {
        self.iter()
    }
}

/// The iterator of [`RunEvents`].
#[derive(Clone)]
pub struct RunEventsIter<'a>(std::slice::Iter<'a, abi::RunEvent>);

impl<'a> Iterator for RunEventsIter<'a> {
    type Item = RunEvent<'a>;
    #[inline]
    fn next(&mut self) -> Option<RunEvent<'a>> {
        self.0.next().map(RunEvent)
    }
    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for RunEventsIter<'_> {}

/// One event of the run: the contract between the host and every observer. Accessors of fields
/// that the event's kind does not carry return empty values. Observers must tolerate unknown
/// kinds and missing attributes (the host grows both).
#[derive(Clone, Copy)]
pub struct RunEvent<'a>(&'a abi::RunEvent);

impl<'a> RunEvent<'a> {
    /// Views one ABI event.
    #[inline]
    pub fn from_abi(event: &'a abi::RunEvent) -> Self {
        RunEvent(event)
    }

    /// Which event.
    #[inline]
    pub fn kind(&self) -> RunEventKind {
        self.0.kind
    }

    /// When, in microseconds since the Unix epoch (UTC).
    #[inline]
    pub fn time_us(&self) -> i64 {
        self.0.time_us
    }

    /// RUN_STARTED: the flow's name.
    #[inline]
    pub fn flow(&self) -> &'a str {
        &self.0.flow
    }

    /// RUN_STARTED: the run's output directory.
    #[inline]
    pub fn run_dir(&self) -> &'a str {
        &self.0.run_dir
    }

    /// RUN_STARTED: every job of the run, in the flow's order.
    #[inline]
    pub fn jobs(&self) -> JobEntries<'a> {
        JobEntries(self.0.jobs.as_slice().iter())
    }

    /// JOB_STATUS: the job's name.
    #[inline]
    pub fn job(&self) -> &'a str {
        &self.0.job
    }

    /// JOB_STATUS: the status before.
    #[inline]
    pub fn old_status(&self) -> JobStatus {
        self.0.old_status
    }

    /// JOB_STATUS: the status after.
    #[inline]
    pub fn new_status(&self) -> JobStatus {
        self.0.new_status
    }

    /// JOB_STATUS: why (for every job that did not pass).
    #[inline]
    pub fn reason(&self) -> &'a str {
        &self.0.reason
    }

    /// JOB_STATUS: the backend instance.
    #[inline]
    pub fn backend(&self) -> &'a str {
        &self.0.backend
    }

    /// JOB_STATUS (terminal): the exit code, when there was one.
    #[inline]
    pub fn exit_code(&self) -> Option<i32> {
        self.0.exit_code.into_option()
    }

    /// JOB_STATUS (terminal): seconds the job ran, when it ran.
    #[inline]
    pub fn duration_s(&self) -> Option<f64> {
        self.0.duration_s.into_option()
    }

    /// JOB_STATUS (terminal): the job's log file, when it has one.
    #[inline]
    pub fn log(&self) -> Option<&'a str> {
        Some(self.0.log.as_str()).filter(|l| !l.is_empty())
    }

    /// KILL_SIGNAL: the signal's name (`SIGINT`, `SIGTERM`).
    #[inline]
    pub fn signal(&self) -> &'a str {
        &self.0.signal
    }

    /// RUN_FINISHED: the summary.
    #[inline]
    pub fn summary(&self) -> Option<Summary> {
        self.0.summary.as_ref().into_option().map(|s| Summary {
            passed: s.passed,
            failed: s.failed,
            killed: s.killed,
            skipped: s.skipped,
            interrupted: s.interrupted,
            duration_s: s.duration_s,
            results_path: s.results_path.to_string(),
        })
    }

    /// Free-form details, in order: `fail_line`, `fail_text`, `reason_kind`, `attempt`,
    /// `native_id`, `resources`, `cpu_s`, `max_rss_mb`, `phases`, ... (any may be absent).
    #[inline]
    pub fn attrs(&self) -> Pairs<'a> {
        Pairs::from_abi(self.0.attrs.as_slice())
    }

    /// The value of attribute `key`, if present.
    #[inline]
    pub fn attr(&self, key: &str) -> Option<&'a str> {
        self.attrs().get(key)
    }

    /// The ABI event behind the view.
    #[inline]
    pub fn as_abi(&self) -> &'a abi::RunEvent {
        self.0
    }
}

impl std::fmt::Debug for RunEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A job as RUN_STARTED lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobEntry<'a> {
    /// The expanded name.
    pub name: &'a str,
    /// The backend instance.
    pub backend: &'a str,
}

/// The jobs of RUN_STARTED.
#[derive(Clone)]
pub struct JobEntries<'a>(std::slice::Iter<'a, abi::JobInfo>);

impl<'a> Iterator for JobEntries<'a> {
    type Item = JobEntry<'a>;
    #[inline]
    fn next(&mut self) -> Option<JobEntry<'a>> {
        self.0.next().map(|j| JobEntry {
            name: &j.name,
            backend: &j.backend,
        })
    }
    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for JobEntries<'_> {}

/// The counts per final status and the run's outcome, from RUN_FINISHED.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Summary {
    /// Jobs that passed.
    pub passed: u64,
    /// Jobs that failed.
    pub failed: u64,
    /// Jobs that were killed.
    pub killed: u64,
    /// Jobs that were skipped.
    pub skipped: u64,
    /// Whether a signal interrupted the run.
    pub interrupted: bool,
    /// Wall-clock seconds from start to end.
    pub duration_s: f64,
    /// The path of results.json.
    pub results_path: String,
}

impl Summary {
    /// The ABI summary (the test kit's event builders use it).
    #[inline]
    pub fn to_abi(&self) -> abi::RunSummary {
        abi::RunSummary {
            passed: self.passed,
            failed: self.failed,
            killed: self.killed,
            skipped: self.skipped,
            interrupted: self.interrupted,
            duration_s: self.duration_s,
            results_path: self.results_path.as_str().into(),
        }
    }
}

/// Adapts an [`ObserverImpl`] to the ABI trait, guarding every call.
struct GuardedObserver {
    inner: Box<dyn ObserverImpl>,
}

impl abi::Observer for GuardedObserver {
    fn on_events(&self, events: RSlice<'_, abi::RunEvent>) {
        if let Err(e) = guard(|| self.inner.on_events(RunEvents(events.as_slice()))) {
            tracing::error!("on_events(): {e}");
        }
    }

    fn finish(&self) -> RResult<(), abi::PluginError> {
        guard(|| self.inner.finish())
            .and_then(|r| r)
            .map_err(abi::PluginError::from)
            .into()
    }
}

/// Wraps a plain observer into the ABI object the host receives.
pub fn observer_to_abi(inner: Box<dyn ObserverImpl>) -> abi::ObserverBox {
    abi::Observer_TO::from_value(GuardedObserver { inner }, TD_Opaque)
}
