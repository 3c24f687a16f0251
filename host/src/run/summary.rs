//! The end of a run, in the order that loses nothing: results.json first, then the observers
//! (the built-in display prints the summary as it finishes, whatever happened to results.json,
//! and then the plugin observers' errors are printed), and only then the backends' shutdowns,
//! each bounded: a plugin that hangs or crashes in shutdown cannot cost the results. Then the
//! exit code, from the one function that maps a run to it.

use std::time::{Duration, Instant};

use super::{
    drive::{DriveEnd, RunState},
    driver::shutdown_all,
    outdir::OutDir,
    results::{self, now_us},
    RunReport,
};
use crate::{
    errors::run_exit_code,
    observe::{Phases, RunEvent, Summary},
    sched::{JobIx, SchedulerApi, Status},
};

/// How long observers may take to finish (write their reports).
const OBSERVER_WAIT: Duration = Duration::from_secs(30);
/// How long backends may take to shut down after a run that ended.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// After a second signal: how long observers get to finish, and backends to kill what still
/// runs (their shutdown kills without grace).
const ABANDON_WAIT: Duration = Duration::from_secs(5);

/// Writes results.json, tells the observers (the display prints the summary), shuts the
/// backends down and picks the exit code.
pub fn finish(mut state: RunState, out: OutDir, end: DriveEnd) -> RunReport {
    let finished_us = now_us();
    let mut phases = Phases(vec![("schedule", state.started_us, finished_us)]);

    let t = Instant::now();
    let write_start = now_us();
    let written = {
        let (flow, sched, ctx) = (&state.flow, &state.sched, &state.ctx);
        let outcome = |i: usize| (sched.status(i as JobIx), sched.reason(i as JobIx));
        let log_of = |i: usize| super::drive::job_dir(ctx, &flow.jobs[i].name).join("output.log");
        results::write_results(
            &out.path,
            &results::ResultsInput {
                flow,
                started_us: state.started_us,
                finished_us,
                interrupted: sched.interrupted().is_some(),
                outcome: &outcome,
                records: &state.ledger.records,
                log_of: &log_of,
            },
        )
    };
    phases.0.push(("write_results", write_start, now_us()));
    tracing::info!("results.json written: {:.3} s", t.elapsed().as_secs_f64());
    let results_path = out.path.join("results.json");

    // The core's final statuses, as results.json has them.
    let n = state.flow.jobs.len();
    let mut by_status = [0u64; Status::ALL.len()];
    for i in 0..n {
        by_status[state.sched.status(i as JobIx).index()] += 1;
    }
    let count = |s: Status| by_status[s.index()];
    let summary = Summary {
        passed: count(Status::Passed),
        failed: count(Status::Failed),
        killed: count(Status::Killed),
        skipped: count(Status::Skipped),
        interrupted: state.sched.interrupted().is_some(),
        duration_s: (finished_us - state.started_us) as f64 / 1e6,
        results_path: results_path.clone(),
        results_error: written.as_ref().err().map(|e| e.to_string()),
    };
    state.ledger.events.push(RunEvent::RunFinished {
        time_us: finished_us,
        summary,
        phases,
    });
    state.publish_events();
    let hub = std::mem::take(&mut state.hub);
    let observer_wait = match end {
        DriveEnd::Done => OBSERVER_WAIT,
        DriveEnd::Abandoned => ABANDON_WAIT,
    };
    // The display is finished first: the summary is out before these lines, which follow it.
    for e in hub.finish(observer_wait) {
        eprintln!("flowrun: {e}");
    }
    out.release();

    let wait = match end {
        DriveEnd::Done => SHUTDOWN_WAIT,
        DriveEnd::Abandoned => ABANDON_WAIT,
    };
    let backends: Vec<_> = state.backends.iter().flatten().cloned().collect();
    for name in shutdown_all(&backends, wait) {
        tracing::warn!("backend {name}: shutdown did not finish in time; not waiting for it");
    }

    let all_passed = count(Status::Passed) == n as u64;
    let exit_code = run_exit_code(state.sched.interrupted(), written.is_ok(), all_passed);
    // A million-job run holds hundreds of megabytes of small allocations; freeing them one
    // by one just before the process exits takes longer than the scheduling did.
    std::mem::forget(state);
    RunReport {
        exit_code,
        results: results_path,
        results_written: written.is_ok(),
    }
}
