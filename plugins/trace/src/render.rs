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
//! An attempt's span runs from the job's RUNNING event to its next status event; `duration_s`
//! is the host's own figure, the one in results.json (measured from when the job was handed
//! to its backend, which can be a few milliseconds before the RUNNING event).
//!
//! Timestamps are microseconds since the Unix epoch, as the host's events carry them.

use std::io::{self, Write};

use flowrun_observer_kit::RunModel;
use flowrun_plugin_api::JobStatus;
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
    let mut first = true;
    let mut put = |w: &mut dyn Write, v: &Value| -> io::Result<()> {
        if !first {
            w.write_all(b",\n")?;
        }
        first = false;
        serde_json::to_writer(&mut *w, v).map_err(io::Error::from)
    };

    put(
        w,
        &name_meta("process_name", HOST_PID, None, "flowrun host"),
    )?;
    put(w, &sort_meta("process_sort_index", HOST_PID, None, 0))?;
    put(
        w,
        &name_meta("thread_name", HOST_PID, Some(PHASES_TID), "phases"),
    )?;
    put(
        w,
        &json!({"ph": "X", "pid": HOST_PID, "tid": PHASES_TID, "name": format!("run {}", m.flow),
            "cat": "run", "ts": m.started_us, "dur": (end_us - m.started_us).max(0),
            "args": {"interrupted": m.interrupted(), "finished": m.finished_us.is_some()}}),
    )?;
    for phase in &m.phases {
        put(
            w,
            &json!({"ph": "X", "pid": HOST_PID, "tid": PHASES_TID, "name": phase.name,
                "cat": "phase", "ts": phase.start_us, "dur": phase.end_us - phase.start_us}),
        )?;
    }
    if let Some(signal) = &m.signal {
        put(
            w,
            &json!({"ph": "i", "s": "g", "pid": HOST_PID, "tid": PHASES_TID,
                "name": signal, "cat": "signal", "ts": m.end_us()}),
        )?;
    }

    for (b, name) in m.backends.iter().enumerate() {
        let b = b as u16;
        let pid = backend_pid(b);
        put(
            w,
            &name_meta("process_name", pid, None, &format!("backend {name}")),
        )?;
        put(w, &sort_meta("process_sort_index", pid, None, pid))?;
        for lane in 0..m.lanes(b) {
            let tid = 1 + u64::from(lane);
            put(
                w,
                &name_meta("thread_name", pid, Some(tid), &format!("slot {lane}")),
            )?;
            put(w, &sort_meta("thread_sort_index", pid, Some(tid), tid))?;
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
        // What the job ended with belongs to its last attempt; an earlier one was retried.
        let args = if last {
            json!({"status": status, "reason": job.reason, "reason_kind": job.reason_kind,
                "exit_code": job.exit_code, "duration_s": job.duration_s, "cpu_s": job.cpu_s,
                "max_rss_mb": job.max_rss_mb, "attempt": attempt.number,
                "native_id": job.native_id, "resources": attempt.resources, "log": job.log})
        } else {
            json!({"status": status, "reason": "", "reason_kind": null, "exit_code": null,
                "duration_s": null, "cpu_s": null, "max_rss_mb": null,
                "attempt": attempt.number, "native_id": job.native_id,
                "resources": attempt.resources, "log": null})
        };
        let end = attempt.end_us.unwrap_or(end_us);
        put(
            w,
            &json!({"ph": "X", "pid": backend_pid(job.backend), "tid": 1 + u64::from(attempt.lane),
                "name": job.name, "cat": status, "ts": attempt.start_us,
                "dur": (end - attempt.start_us).max(0),
                "args": args}),
        )?;
    }
    w.write_all(b"\n]}\n")
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
