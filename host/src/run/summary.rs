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
    run::{records::JobRecord, results::ResultsSource},
    sched::{JobIx, Reason, SchedulerApi, Status},
};

/// results.json of the live run: the core's statuses and reasons, the ledger's records.
struct LiveResults<'a> {
    state: &'a RunState,
    finished_us: i64,
}

impl ResultsSource for LiveResults<'_> {
    fn flow(&self) -> &str {
        &self.state.flow.name
    }
    fn run_dir(&self) -> &str {
        &self.state.ctx.run_dir_text
    }
    fn times(&self) -> (i64, i64) {
        (self.state.started_us, self.finished_us)
    }
    fn interrupted(&self) -> bool {
        self.state.sched.interrupted().is_some()
    }
    fn len(&self) -> usize {
        self.state.flow.jobs.len()
    }
    fn name(&self, i: usize) -> &str {
        &self.state.flow.jobs[i].name
    }
    fn backend(&self, i: usize) -> &str {
        &self.state.flow.backends[self.state.flow.jobs[i].backend].name
    }
    fn outcome(&self, i: usize) -> (Status, Option<&Reason>) {
        let j = i as JobIx;
        (self.state.sched.status(j), self.state.sched.reason(j))
    }
    fn record(&self, i: usize) -> &JobRecord {
        &self.state.ledger.records[i]
    }
    fn resumes(&self) -> u32 {
        self.state.resumes
    }
}

/// The summary's facts on attempts, from the records (as results.json has them): the jobs that
/// passed after a failed attempt (flaky: how many, the first few names) and the jobs whose pass
/// was carried over from an earlier run.
fn attempts_summary(state: &RunState) -> (u64, Vec<String>, u64) {
    let (mut flaky, mut names, mut reused) = (0u64, Vec::new(), 0u64);
    for (i, rec) in state.ledger.records.iter().enumerate() {
        if state.sched.status(i as JobIx) != Status::Passed {
            continue;
        }
        if !rec.earlier().is_empty() {
            flaky += 1;
            if names.len() < Summary::FLAKY_NAMES {
                names.push(state.flow.jobs[i].name.clone());
            }
        }
        if rec
            .extra
            .as_deref()
            .is_some_and(|x| x.reused_from.is_some())
        {
            reused += 1;
        }
    }
    (flaky, names, reused)
}

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
    let journal_error = state.ledger.journal.take().and_then(|mut jn| {
        jn.run_end(finished_us, state.sched.interrupted());
        let (stats, error) = jn.finish();
        tracing::info!(
            "journal: {} frames, {} bytes, {} syncs",
            stats.frames,
            stats.bytes,
            stats.syncs
        );
        error
    });
    if let Some(e) = &journal_error {
        crate::display::message(&format!("flowrun: the journal is incomplete: {e}"));
    }
    let written = results::write_results(
        &out.path,
        &LiveResults {
            state: &state,
            finished_us,
        },
    );
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
    let (flaky, flaky_names, reused) = attempts_summary(&state);
    let summary = Summary {
        passed: count(Status::Passed),
        failed: count(Status::Failed),
        killed: count(Status::Killed),
        skipped: count(Status::Skipped),
        interrupted: state.sched.interrupted().is_some(),
        duration_s: (finished_us - state.started_us) as f64 / 1e6,
        results_path: results_path.clone(),
        results_error: written.as_ref().err().map(|e| e.to_string()),
        flaky,
        flaky_names,
        reused,
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
    let all_passed = count(Status::Passed) == n as u64;
    let exit_code = run_exit_code(state.sched.interrupted(), written.is_ok(), all_passed);
    // results.json and the summary are out: from here a crash (a plugin's shutdown) costs
    // no result, and the supervising parent must not rewrite them.
    crate::supervise::report_done(exit_code);

    let wait = match end {
        DriveEnd::Done => SHUTDOWN_WAIT,
        DriveEnd::Abandoned => ABANDON_WAIT,
    };
    let backends: Vec<_> = state.backends.iter().flatten().cloned().collect();
    for name in shutdown_all(&backends, wait) {
        tracing::warn!("backend {name}: shutdown did not finish in time; not waiting for it");
    }

    // A million-job run holds hundreds of megabytes of small allocations; freeing them one
    // by one just before the process exits takes longer than the scheduling did.
    std::mem::forget(state);
    RunReport {
        exit_code,
        results: results_path,
        results_written: written.is_ok(),
    }
}
