//! The trace document (the JSON Object Format of the Trace Event Format):
//!
//! - process 1, "flowrun host": thread 1 "phases" with one complete event (`"ph":"X"`) per host
//!   phase the host reported (load, expand, validate, schedule, write_results) and one for the
//!   whole run; a signal that interrupted the run is a global instant event (`"ph":"i"`).
//! - process 2 + b for backend b, named after the backend instance; thread 1 + n is its slot
//!   n ("slot n"): one complete event per job attempt, named after the job, category = the
//!   attempt's status, args = status, reason, reason_kind, exit_code, duration_s, cpu_s,
//!   max_rss_mb, attempt, native_id, resources, log. Unknown values are `null`.
//!
//! An attempt's span ends at the job's next status event after RUNNING and starts `duration_s`
//! before (the host's own figure, as in results.json, measured from when the job was handed to
//! its backend); without a duration, at the RUNNING event.
//!
//! Timestamps are microseconds since the Unix epoch, as the host's events carry them.

use std::io::{self, Write};

use flowrun_observer_kit::RunModel;
use flowrun_plugin_sdk::JobStatus;
use serde::Serialize;
use serde_json::{json, Value};

const HOST_PID: u64 = 1;
const PHASES_TID: u64 = 1;

fn backend_pid(backend: u16) -> u64 {
    2 + u64::from(backend)
}

/// Writes the whole trace for what `m` knows; a run still going shows its open attempts up to
/// the latest event.
pub fn write_trace(m: &RunModel, w: &mut dyn Write) -> io::Result<()> {
    let end_us = m.end_us();
    w.write_all(b"{\"displayTimeUnit\":\"ms\",\"otherData\":")?;
    serde_json::to_writer(
        &mut *w,
        &json!({
            "flow": m.flow,
            "run_dir": m.run_dir.as_ref().map(|p| p.to_string_lossy()),
            "interrupted": m.interrupted(),
            "finished": m.finished_us.is_some(),
            "producer": concat!("flowrun trace observer ", env!("CARGO_PKG_VERSION")),
        }),
    )?;
    w.write_all(b",\"traceEvents\":[\n")?;
    let mut events = EventList { first: true };

    events.put(
        w,
        &name_meta("process_name", HOST_PID, None, "flowrun host"),
    )?;
    events.put(w, &sort_meta("process_sort_index", HOST_PID, None, 0))?;
    events.put(
        w,
        &name_meta("thread_name", HOST_PID, Some(PHASES_TID), "phases"),
    )?;
    events.put(
        w,
        &json!({"ph": "X", "pid": HOST_PID, "tid": PHASES_TID, "name": format!("run {}", m.flow),
            "cat": "run", "ts": m.started_us, "dur": (end_us - m.started_us).max(0),
            "args": {"interrupted": m.interrupted(), "finished": m.finished_us.is_some()}}),
    )?;
    for phase in &m.phases {
        events.put(
            w,
            &json!({"ph": "X", "pid": HOST_PID, "tid": PHASES_TID, "name": phase.name,
                "cat": "phase", "ts": phase.start_us, "dur": phase.end_us - phase.start_us}),
        )?;
    }
    if let Some(signal) = &m.signal {
        events.put(
            w,
            &json!({"ph": "i", "s": "g", "pid": HOST_PID, "tid": PHASES_TID,
                "name": signal, "cat": "signal", "ts": m.end_us()}),
        )?;
    }

    for (b, name) in m.backends.iter().enumerate() {
        let b = b as u16;
        let pid = backend_pid(b);
        events.put(
            w,
            &name_meta("process_name", pid, None, &format!("backend {name}")),
        )?;
        events.put(w, &sort_meta("process_sort_index", pid, None, pid))?;
        for lane in 0..m.lanes(b) {
            let tid = 1 + u64::from(lane);
            events.put(
                w,
                &name_meta("thread_name", pid, Some(tid), &format!("slot {lane}")),
            )?;
            events.put(w, &sort_meta("thread_sort_index", pid, Some(tid), tid))?;
        }
    }

    for attempt in &m.attempts {
        let job = &m.jobs[attempt.job as usize];
        let last = job.open_attempt.is_none() && attempt.number >= job.attempts;
        let status = match attempt.status {
            JobStatus::RUNNING => "running",
            JobStatus::QUEUED | JobStatus::SCHEDULED => "retried",
            s => s.name(),
        };
        let end = attempt.end_us.unwrap_or(end_us);
        let mut args = AttemptArgs {
            status,
            reason: "",
            reason_kind: None,
            exit_code: None,
            duration_s: None,
            cpu_s: None,
            max_rss_mb: None,
            attempt: attempt.number,
            native_id: job.native_id.as_deref(),
            resources: attempt.resources.as_deref(),
            log: None,
        };
        // What the job ended with belongs to its last attempt; an earlier one was retried, and
        // the event that sent it back to the queue said how it ended.
        if last {
            args.reason = &job.reason;
            args.reason_kind = job.reason_kind.as_deref();
            args.exit_code = job.exit_code;
            args.duration_s = job.duration_s;
            args.cpu_s = job.cpu_s;
            args.max_rss_mb = job.max_rss_mb;
            args.log = job.log.as_deref();
        } else if let Some(end) = &attempt.retried {
            args.reason = &end.reason;
            args.reason_kind = end.reason_kind.as_deref();
            args.exit_code = end.exit_code;
            args.duration_s = end.duration_s;
            args.cpu_s = end.cpu_s;
            args.max_rss_mb = end.max_rss_mb;
            args.log = end.log.as_deref();
        }
        events.put(
            w,
            &Complete {
                ph: "X",
                pid: backend_pid(job.backend),
                tid: 1 + u64::from(attempt.lane),
                name: &job.name,
                cat: status,
                ts: attempt.start_us,
                dur: (end - attempt.start_us).max(0),
                args,
            },
        )?;
    }
    w.write_all(b"\n]}\n")
}

/// Writes the elements of `traceEvents`, comma-separated.
struct EventList {
    first: bool,
}

impl EventList {
    fn put<T: Serialize>(&mut self, w: &mut dyn Write, event: &T) -> io::Result<()> {
        if !self.first {
            w.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut *w, event).map_err(io::Error::from)
    }
}

/// A job attempt's complete event: a typed struct rather than a `json!` value, since a run
/// writes one per job.
#[derive(Serialize)]
struct Complete<'a> {
    ph: &'static str,
    pid: u64,
    tid: u64,
    name: &'a str,
    cat: &'a str,
    ts: i64,
    dur: i64,
    args: AttemptArgs<'a>,
}

#[derive(Serialize)]
struct AttemptArgs<'a> {
    status: &'a str,
    reason: &'a str,
    reason_kind: Option<&'a str>,
    exit_code: Option<i32>,
    duration_s: Option<f64>,
    cpu_s: Option<f64>,
    max_rss_mb: Option<f64>,
    attempt: u32,
    native_id: Option<&'a str>,
    resources: Option<&'a str>,
    log: Option<&'a str>,
}

fn name_meta(kind: &str, pid: u64, tid: Option<u64>, name: &str) -> Value {
    let mut v = json!({"ph": "M", "name": kind, "pid": pid, "args": {"name": name}});
    if let Some(tid) = tid {
        v["tid"] = tid.into();
    }
    v
}

fn sort_meta(kind: &str, pid: u64, tid: Option<u64>, index: u64) -> Value {
    let mut v = json!({"ph": "M", "name": kind, "pid": pid, "args": {"sort_index": index}});
    if let Some(tid) = tid {
        v["tid"] = tid.into();
    }
    v
}
