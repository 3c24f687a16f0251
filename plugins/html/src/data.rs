//! The report's data: one compact JSON document the page's script renders from.
//!
//! Per-job values are columns (one array per field, indexed by job) and repeated strings
//! (reasons, reason kinds, resource sets) are tables referred to by index, so a 100,000-job
//! run stays a few megabytes. Times are integer microseconds since the run's start. Unknown
//! values are `null`. `report.js` documents the same layout where it reads it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use flowrun_observer_kit::{relative_path, RunModel};
use flowrun_plugin_sdk::{
    run_dir::{job_dir_name, log_name},
    JobStatus,
};
use serde::Serialize;

use crate::{buckets, context::Context};

/// The version of the layout below; the script checks it.
const LAYOUT: u32 = 1;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document<'a> {
    v: u32,
    flow: &'a str,
    run_dir: String,
    start_us: i64,
    /// The end of the run, or the latest event of a run still going.
    end_us: i64,
    /// When this file was written.
    generated_us: i64,
    finished: bool,
    interrupted: bool,
    signal: Option<&'a str>,
    refresh_s: f64,
    statuses: [&'static str; 8],
    counts: [u64; 8],
    backends: &'a [String],
    lanes: Vec<u32>,
    /// The run's `jobs` directory as seen from the report's directory, with a trailing `/`.
    log_base: String,
    jobs: JobColumns<'a>,
    /// Logs that are not `logBase + name + "/output.log"`, by job index (a name the host encodes
    /// for its directory, `a/b` in `a%2Fb`, or a retry's `output.attempt-N.log`, is listed here
    /// with its real path; for a job still running, the path the host gives its log): the
    /// relative link, or `null` for a job that ran without a log.
    logs: HashMap<u32, Option<String>>,
    reasons: Vec<&'a str>,
    kinds: Vec<&'a str>,
    buckets: Vec<Bucket>,
    contexts: HashMap<u32, &'a Context>,
    /// Failed jobs whose context was left out to bound the report's size.
    contexts_omitted: u64,
    attempts: AttemptColumns,
    resource_sets: Vec<&'a str>,
    phases: Vec<(&'a str, i64, i64)>,
}

#[derive(Serialize, Default)]
struct JobColumns<'a> {
    name: Vec<&'a str>,
    status: Vec<u8>,
    backend: Vec<u16>,
    /// Seconds, millisecond precision.
    dur: Vec<Option<f64>>,
    cpu: Vec<Option<f64>>,
    rss: Vec<Option<f64>>,
    exit: Vec<Option<i32>>,
    reason: Vec<u32>,
    kind: Vec<u32>,
    attempts: Vec<u32>,
    native: Vec<Option<&'a str>>,
}

#[derive(Serialize, Default)]
struct AttemptColumns {
    job: Vec<u32>,
    /// The attempt's number, from 1.
    n: Vec<u32>,
    start: Vec<i64>,
    /// `null` while the attempt runs.
    dur: Vec<Option<i64>>,
    lane: Vec<u32>,
    status: Vec<u8>,
    res: Vec<u32>,
    /// A retried attempt's own reason, as an index into `reasons` (0, "", for the others: the
    /// last attempt's reason is the job's).
    reason: Vec<u32>,
}

#[derive(Serialize)]
struct Bucket {
    key: String,
    status: &'static str,
    kind: String,
    jobs: Vec<u32>,
}

/// Interns strings into a table, index 0 being "".
struct Table<'a> {
    items: Vec<&'a str>,
    index: HashMap<&'a str, u32>,
}

impl<'a> Table<'a> {
    fn new() -> Self {
        Table {
            items: vec![""],
            index: HashMap::from([("", 0)]),
        }
    }
    fn put(&mut self, s: &'a str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.items.len() as u32;
        self.items.push(s);
        self.index.insert(s, i);
        i
    }
}

fn millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Builds the document for the report file at `report_path`.
pub fn build<'a>(
    m: &'a RunModel,
    contexts: &'a HashMap<u32, Context>,
    contexts_omitted: u64,
    report_path: &Path,
    refresh_s: f64,
    generated_us: i64,
) -> Document<'a> {
    let run_dir = m.run_dir.clone().unwrap_or_default();
    let report_dir = report_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let jobs_dir = run_dir.join("jobs");
    let mut log_base = relative_path(&report_dir, &jobs_dir)
        .to_string_lossy()
        .into_owned();
    log_base.push('/');

    let n = m.jobs.len();
    let mut reasons = Table::new();
    let mut kinds = Table::new();
    let mut cols = JobColumns::default();
    cols.name.reserve(n);
    let mut logs = HashMap::new();
    // Buckets keyed by (status, kind, masked reason); masking once per distinct reason.
    let mut masked: HashMap<u32, String> = HashMap::new();
    let mut bucket_ix: HashMap<(u8, u32, String), usize> = HashMap::new();
    let mut buckets: Vec<Bucket> = Vec::new();
    for (i, job) in m.jobs.iter().enumerate() {
        let reason = reasons.put(&job.reason);
        let kind = kinds.put(job.reason_kind.as_deref().unwrap_or(""));
        cols.name.push(&job.name);
        cols.status.push(job.status.0);
        cols.backend.push(job.backend);
        cols.dur.push(job.duration_s.map(millis));
        cols.cpu.push(job.cpu_s.map(millis));
        cols.rss
            .push(job.max_rss_mb.map(|v| (v * 10.0).round() / 10.0));
        cols.exit.push(job.exit_code);
        cols.reason.push(reason);
        cols.kind.push(kind);
        cols.attempts.push(job.attempts);
        cols.native.push(job.native_id.as_deref());
        let default = || format!("{log_base}{}/output.log", job.name);
        if job.status.is_terminal() && job.attempts > 0 {
            let link = job
                .log
                .as_ref()
                .map(|l| relative_path(&report_dir, &PathBuf::from(l)));
            match link {
                Some(l) if l.to_string_lossy() == default() => {}
                other => {
                    logs.insert(i as u32, other.map(|l| l.to_string_lossy().into_owned()));
                }
            }
        } else if job.open_attempt.is_some() {
            // A running job's log is named only in its final event: until then it is where
            // the host puts it, under the job's directory name (`a/b` in `a%2Fb`) and with
            // the attempt's own name (`output.attempt-2.log`).
            let link = format!(
                "{log_base}{}/{}",
                job_dir_name(&job.name),
                log_name(job.attempts)
            );
            if link != default() {
                logs.insert(i as u32, Some(link));
            }
        }
        if matches!(
            job.status,
            JobStatus::FAILED | JobStatus::KILLED | JobStatus::SKIPPED
        ) {
            let key = masked
                .entry(reason)
                .or_insert_with(|| buckets::mask(&job.reason))
                .clone();
            let slot = *bucket_ix
                .entry((job.status.0, kind, key.clone()))
                .or_insert_with(|| {
                    buckets.push(Bucket {
                        key,
                        status: job.status.name(),
                        kind: job.reason_kind.clone().unwrap_or_default(),
                        jobs: Vec::new(),
                    });
                    buckets.len() - 1
                });
            buckets[slot].jobs.push(i as u32);
        }
    }
    // Failures first, then kills, then skips; the biggest bucket first within each.
    let rank = |s: &str| match s {
        "failed" => 0,
        "killed" => 1,
        _ => 2,
    };
    buckets.sort_by(|a, b| {
        rank(a.status)
            .cmp(&rank(b.status))
            .then(b.jobs.len().cmp(&a.jobs.len()))
            .then_with(|| a.key.cmp(&b.key))
    });

    let mut resource_sets = Table::new();
    let mut attempts = AttemptColumns::default();
    for a in &m.attempts {
        attempts.job.push(a.job);
        attempts.n.push(a.number);
        attempts.start.push(a.start_us - m.started_us);
        attempts.dur.push(a.end_us.map(|e| e - a.start_us));
        attempts.lane.push(a.lane);
        attempts.status.push(a.status.0);
        attempts
            .res
            .push(resource_sets.put(a.resources.as_deref().unwrap_or("")));
        attempts
            .reason
            .push(a.retried.as_ref().map_or(0, |end| reasons.put(&end.reason)));
    }

    Document {
        v: LAYOUT,
        flow: &m.flow,
        run_dir: run_dir.to_string_lossy().into_owned(),
        start_us: m.started_us,
        end_us: m.end_us(),
        generated_us,
        finished: m.finished_us.is_some(),
        interrupted: m.interrupted(),
        signal: m.signal.as_deref(),
        refresh_s,
        statuses: [
            "scheduled",
            "queued",
            "running",
            "passed",
            "failed",
            "killed",
            "skipped",
            "unknown",
        ],
        counts: m.counts,
        backends: &m.backends,
        lanes: (0..m.backends.len() as u16).map(|b| m.lanes(b)).collect(),
        log_base,
        jobs: cols,
        logs,
        reasons: reasons.items,
        kinds: kinds.items,
        buckets,
        contexts: contexts.iter().map(|(k, v)| (*k, v)).collect(),
        contexts_omitted,
        attempts,
        resource_sets: resource_sets.items,
        phases: m
            .phases
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.start_us - m.started_us,
                    p.end_us - m.started_us,
                )
            })
            .collect(),
    }
}
