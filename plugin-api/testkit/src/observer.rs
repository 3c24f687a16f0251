//! Feeding an observer the events of a run: [`TestEvent`] builds each event in a line, and
//! [`ObserverHarness`] delivers them through the ABI, as the host's observer thread does.

use flowrun_plugin_sdk::{
    abi::{
        self,
        abi_stable::std_types::{ROption, RSlice, RString, Tuple2},
    },
    export::observer_to_abi,
    guard, JobStatus, ObserverFactory, PluginError, RunEvent, RunEventKind, Summary,
};

/// One run event, as the host would send it. Fields a kind does not carry stay empty; the time
/// is 0 unless set with [`TestEvent::at`].
#[derive(Clone, Debug, PartialEq)]
pub struct TestEvent(abi::RunEvent);

impl TestEvent {
    /// RUN_STARTED of flow `flow` writing into `run_dir`; add its jobs with [`TestEvent::job`].
    pub fn run_started(flow: &str, run_dir: &str) -> Self {
        let mut e = abi::RunEvent::empty(RunEventKind::RUN_STARTED, 0);
        e.flow = flow.into();
        e.run_dir = run_dir.into();
        TestEvent(e)
    }

    /// RUN_STARTED: lists job `name` on backend instance `backend`.
    pub fn job(mut self, name: &str, backend: &str) -> Self {
        self.0.jobs.push(abi::JobInfo {
            name: name.into(),
            backend: backend.into(),
        });
        self
    }

    /// JOB_STATUS: job `job` went from `old` to `new`.
    pub fn job_status(job: &str, old: JobStatus, new: JobStatus) -> Self {
        let mut e = abi::RunEvent::empty(RunEventKind::JOB_STATUS, 0);
        e.job = job.into();
        e.old_status = old;
        e.new_status = new;
        TestEvent(e)
    }

    /// KILL_SIGNAL: flowrun received `signal` (`"SIGINT"`).
    pub fn kill_signal(signal: &str) -> Self {
        let mut e = abi::RunEvent::empty(RunEventKind::KILL_SIGNAL, 0);
        e.signal = signal.into();
        TestEvent(e)
    }

    /// RUN_FINISHED with `summary`.
    pub fn run_finished(summary: &Summary) -> Self {
        let mut e = abi::RunEvent::empty(RunEventKind::RUN_FINISHED, 0);
        e.summary = ROption::RSome(summary.to_abi());
        TestEvent(e)
    }

    /// Sets the time, in microseconds since the Unix epoch.
    pub fn at(mut self, time_us: i64) -> Self {
        self.0.time_us = time_us;
        self
    }

    /// JOB_STATUS: the backend instance.
    pub fn backend(mut self, backend: &str) -> Self {
        self.0.backend = backend.into();
        self
    }

    /// JOB_STATUS: the reason.
    pub fn reason(mut self, reason: &str) -> Self {
        self.0.reason = reason.into();
        self
    }

    /// JOB_STATUS: the exit code.
    pub fn exit_code(mut self, code: i32) -> Self {
        self.0.exit_code = ROption::RSome(code);
        self
    }

    /// JOB_STATUS: how long the job ran.
    pub fn duration_s(mut self, seconds: f64) -> Self {
        self.0.duration_s = ROption::RSome(seconds);
        self
    }

    /// JOB_STATUS: the job's log.
    pub fn log(mut self, path: &str) -> Self {
        self.0.log = path.into();
        self
    }

    /// Adds an attribute (`fail_line`, `reason_kind`, ...).
    pub fn attr(mut self, key: &str, value: &str) -> Self {
        self.0
            .attrs
            .push(Tuple2(RString::from(key), RString::from(value)));
        self
    }

    /// The event as an observer sees it.
    pub fn view(&self) -> RunEvent<'_> {
        RunEvent::from_abi(&self.0)
    }
}

/// An observer created through the SDK's guarded ABI adapter, fed as the host feeds it.
pub struct ObserverHarness(abi::ObserverBox);

impl ObserverHarness {
    /// Creates the observer `create` makes from `config`.
    pub fn new(create: ObserverFactory, config: &str) -> Result<Self, PluginError> {
        let inner = guard(|| create(config)).and_then(|r| r)?;
        Ok(ObserverHarness(observer_to_abi(inner)))
    }

    /// Delivers one batch of events.
    pub fn send(&self, events: &[TestEvent]) {
        let batch: Vec<abi::RunEvent> = events.iter().map(|e| e.0.clone()).collect();
        self.0.on_events(RSlice::from_slice(&batch));
    }

    /// Ends the run: the observer flushes and reports its error, if any.
    pub fn finish(&self) -> Result<(), PluginError> {
        self.0.finish().into_result().map_err(PluginError::from)
    }
}
