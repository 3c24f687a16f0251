//! The end of a run, in the order that loses nothing: results.json first, then the observers,
//! then the summary (printed whatever happened to results.json), and only then the backends'
//! shutdowns, each bounded: a plugin that hangs or crashes in shutdown cannot cost the
//! results. Then the exit code, from the one function that maps a run to it.

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

/// The summary's lines on attempts: jobs that passed after a failed attempt (flaky), and jobs
/// whose pass was carried over from an earlier run.
fn attempts_summary(state: &RunState) -> Vec<String> {
    let (mut flaky, mut reused) = (Vec::new(), 0usize);
    for (i, rec) in state.ledger.records.iter().enumerate() {
        if state.sched.status(i as JobIx) != Status::Passed {
            continue;
        }
        if !rec.earlier().is_empty() {
            flaky.push(state.flow.jobs[i].name.as_str());
        }
        if rec
            .extra
            .as_deref()
            .is_some_and(|x| x.reused_from.is_some())
        {
            reused += 1;
        }
    }
    let mut lines = Vec::new();
    if !flaky.is_empty() {
        let more = match flaky.len() {
            n if n > 5 => format!(", ... {} more", n - 5),
            _ => String::new(),
        };
        lines.push(format!(
            "flaky: {} job(s) passed after a failed attempt ({}{more})",
            flaky.len(),
            flaky[..flaky.len().min(5)].join(", ")
        ));
    }
    if reused > 0 {
        lines.push(format!(
            "reused: {reused} job(s) passed in an earlier run with the same definition and were not rerun"
        ));
    }
    lines
}

/// How long observers may take to finish (write their reports).
const OBSERVER_WAIT: Duration = Duration::from_secs(30);
/// How long backends may take to shut down after a run that ended.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// After a second signal: how long observers get to finish, and backends to kill what still
/// runs (their shutdown kills without grace).
const ABANDON_WAIT: Duration = Duration::from_secs(5);

/// Writes results.json, tells the observers, prints the summary, shuts the backends down and
/// picks the exit code.
pub fn finish(mut state: RunState, out: OutDir, end: DriveEnd) -> RunReport {
    let finished_us = now_us();
    let n = state.flow.jobs.len();
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
        state
            .display
            .message(&format!("flowrun: the journal is incomplete: {e}"));
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

    let counts = state.ledger.counts;
    let summary = Summary {
        passed: counts.get(Status::Passed),
        failed: counts.get(Status::Failed),
        killed: counts.get(Status::Killed),
        skipped: counts.get(Status::Skipped),
        interrupted: state.sched.interrupted().is_some(),
        duration_s: (finished_us - state.started_us) as f64 / 1e6,
        results_path: results_path.clone(),
    };
    state.ledger.events.push(RunEvent::RunFinished {
        time_us: finished_us,
        summary,
        phases,
    });
    let events = state.ledger.take_events();
    state.hub.publish(events);
    let hub = std::mem::take(&mut state.hub);
    let observer_wait = match end {
        DriveEnd::Done => OBSERVER_WAIT,
        DriveEnd::Abandoned => ABANDON_WAIT,
    };
    for e in hub.finish(observer_wait) {
        state.display.message(&format!("flowrun: {e}"));
    }

    let failures: Vec<(String, String, &'static str)> = (0..n)
        .filter_map(|i| {
            let s = state.sched.status(i as JobIx);
            (s != Status::Passed).then(|| {
                let reason = state
                    .sched
                    .reason(i as JobIx)
                    .map(|r| r.to_string())
                    .unwrap_or_default();
                (state.flow.jobs[i].name.clone(), reason, s.name())
            })
        })
        .collect();
    let results_text = match &written {
        Ok(path) => path.display().to_string(),
        Err(e) => format!(
            "NOT WRITTEN: {}: {e}; the summary above is all that is left of this run",
            results_path.display()
        ),
    };
    state
        .display
        .summary(&counts, &state.flow.name, &failures, &results_text);
    for line in attempts_summary(&state) {
        state.display.message(&line);
    }
    out.release();
    let exit_code = run_exit_code(
        state.sched.interrupted(),
        written.is_ok(),
        failures.is_empty(),
    );
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
