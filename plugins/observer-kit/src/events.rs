//! Builders of synthetic run events, for unit tests of observers (the host builds the real
//! ones in host/src/plugins/ffi.rs).

use flowrun_plugin_api::{
    abi_stable::std_types::{ROption, RString, Tuple2},
    JobInfo, JobStatus, RunEvent, RunEventKind, RunSummary,
};

/// RUN_STARTED of flow `flow` in `run_dir` at `time_us`, listing `(job, backend)` pairs.
pub fn run_started(time_us: i64, flow: &str, run_dir: &str, jobs: &[(&str, &str)]) -> RunEvent {
    let mut e = RunEvent::empty(RunEventKind::RUN_STARTED, time_us);
    e.flow = flow.into();
    e.run_dir = run_dir.into();
    e.jobs = jobs
        .iter()
        .map(|(name, backend)| JobInfo {
            name: (*name).into(),
            backend: (*backend).into(),
        })
        .collect();
    e
}

/// JOB_STATUS: `job` on `backend` moved from `old` to `new` at `time_us`.
pub fn job_status(
    time_us: i64,
    job: &str,
    backend: &str,
    old: JobStatus,
    new: JobStatus,
) -> RunEvent {
    let mut e = RunEvent::empty(RunEventKind::JOB_STATUS, time_us);
    e.job = job.into();
    e.backend = backend.into();
    e.old_status = old;
    e.new_status = new;
    e
}

/// KILL_SIGNAL of `signal` at `time_us`.
pub fn kill_signal(time_us: i64, signal: &str) -> RunEvent {
    let mut e = RunEvent::empty(RunEventKind::KILL_SIGNAL, time_us);
    e.signal = signal.into();
    e
}

/// RUN_FINISHED at `time_us` with `summary`.
pub fn run_finished(time_us: i64, summary: RunSummary) -> RunEvent {
    let mut e = RunEvent::empty(RunEventKind::RUN_FINISHED, time_us);
    e.summary = ROption::RSome(summary);
    e
}

/// `event` with attribute `key` = `value` added.
pub fn with_attr(mut event: RunEvent, key: &str, value: &str) -> RunEvent {
    event
        .attrs
        .push(Tuple2(RString::from(key), RString::from(value)));
    event
}
