//! The run as the JUnit report sees it, built from RunEvents, and its rendering with
//! quick-junit (which counts the cases and drops what XML cannot hold).
//!
//! Mapping (what Jenkins and GitLab display):
//! - passed  -> a plain `<testcase>`;
//! - failed  -> `<failure message=REASON>`, body: exit code and the failing log line if any;
//! - killed  -> `<error message=REASON>` (a timeout or an interrupt is not the test's verdict);
//! - skipped -> `<skipped message=REASON>`;
//! - a job that never reached a final status (the run ended first) -> `<error>`, so an
//!   incomplete run never looks green.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use flowrun_plugin_sdk::{JobStatus, RunEvent, RunEventKind, Summary};
use quick_junit::{
    NonSuccessKind, Property, Report as JunitReport, TestCase, TestCaseStatus, TestSuite,
};

/// One job's line in the report.
#[derive(Debug, Clone)]
struct JobRecord {
    name: String,
    backend: String,
    status: JobStatus,
    reason: String,
    exit_code: Option<i32>,
    duration_s: Option<f64>,
    log: Option<String>,
    fail_line: Option<String>,
    fail_text: Option<String>,
}

impl JobRecord {
    fn new(name: &str, backend: &str) -> Self {
        JobRecord {
            name: name.to_string(),
            backend: backend.to_string(),
            status: JobStatus::SCHEDULED,
            reason: String::new(),
            exit_code: None,
            duration_s: None,
            log: None,
            fail_line: None,
            fail_text: None,
        }
    }
}

/// What the observer has learnt of the run so far.
#[derive(Debug, Default)]
pub struct Report {
    flow: String,
    run_dir: Option<PathBuf>,
    started_us: i64,
    last_event_us: i64,
    /// The signal that interrupted the run, if one did.
    signal: Option<String>,
    summary: Option<Summary>,
    /// Jobs in the order of RUN_STARTED (later strangers appended).
    jobs: Vec<JobRecord>,
    by_name: HashMap<String, usize>,
}

impl Report {
    /// The run directory, once RUN_STARTED was seen.
    pub fn run_dir(&self) -> Option<&Path> {
        self.run_dir.as_deref()
    }

    /// Takes one event into account.
    pub fn apply(&mut self, event: RunEvent<'_>) {
        self.last_event_us = self.last_event_us.max(event.time_us());
        match event.kind() {
            RunEventKind::RUN_STARTED => {
                self.flow = event.flow().to_string();
                self.run_dir = Some(PathBuf::from(event.run_dir()));
                self.started_us = event.time_us();
                for job in event.jobs() {
                    self.record(job.name, job.backend);
                }
            }
            RunEventKind::JOB_STATUS => {
                let job = self.record(event.job(), event.backend());
                job.status = event.new_status();
                if !event.backend().is_empty() {
                    job.backend = event.backend().to_string();
                }
                job.reason = event.reason().to_string();
                if event.new_status().is_terminal() {
                    job.exit_code = event.exit_code();
                    job.duration_s = event.duration_s();
                    job.log = event.log().map(str::to_string);
                    job.fail_line = event.attr("fail_line").map(str::to_string);
                    job.fail_text = event.attr("fail_text").map(str::to_string);
                }
            }
            RunEventKind::KILL_SIGNAL => self.signal = Some(event.signal().to_string()),
            RunEventKind::RUN_FINISHED => self.summary = event.summary(),
            _ => {} // a kind added after this plugin was built: nothing to report
        }
    }

    /// The record of job `name`, created if the job was not listed at RUN_STARTED.
    fn record(&mut self, name: &str, backend: &str) -> &mut JobRecord {
        let index = match self.by_name.get(name) {
            Some(i) => *i,
            None => {
                self.jobs.push(JobRecord::new(name, backend));
                self.by_name.insert(name.to_string(), self.jobs.len() - 1);
                self.jobs.len() - 1
            }
        };
        &mut self.jobs[index]
    }

    /// The JUnit XML document.
    pub fn to_xml(&self) -> Result<Vec<u8>, quick_junit::SerializeError> {
        let time = seconds(match &self.summary {
            Some(s) => s.duration_s,
            None => (self.last_event_us - self.started_us).max(0) as f64 / 1e6,
        });
        let timestamp = chrono::DateTime::from_timestamp_micros(self.started_us)
            .unwrap_or_default()
            .fixed_offset();
        let mut suite = TestSuite::new(self.flow.as_str());
        suite.set_timestamp(timestamp).set_time(time);
        let interrupted = self.summary.as_ref().is_some_and(|s| s.interrupted);
        if let Some(signal) = self
            .signal
            .clone()
            .or_else(|| interrupted.then(|| "signal".to_string()))
        {
            suite.add_property(Property::new("interrupted_by", signal));
        }
        suite.add_test_cases(self.jobs.iter().map(|job| self.test_case(job)));
        let mut report = JunitReport::new(self.flow.as_str());
        report.set_time(time).add_test_suite(suite);
        let mut out = Vec::new();
        report.serialize(&mut out)?;
        Ok(out)
    }

    fn test_case(&self, job: &JobRecord) -> TestCase {
        let message = |default: &str| {
            if job.reason.is_empty() {
                default.to_string()
            } else {
                job.reason.clone()
            }
        };
        let status = match job.status {
            JobStatus::PASSED => TestCaseStatus::success(),
            JobStatus::FAILED => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(message("failed")).set_type("failed");
                let details = failure_details(job);
                if !details.is_empty() {
                    s.set_description(details);
                }
                s
            }
            JobStatus::KILLED => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(message("killed")).set_type("killed");
                s
            }
            JobStatus::SKIPPED => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(message("skipped"));
                s
            }
            _ => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message("did not finish: the run ended first")
                    .set_type("unfinished");
                s
            }
        };
        let mut case = TestCase::new(job.name.as_str(), status);
        case.set_classname(if job.backend.is_empty() {
            self.flow.clone()
        } else {
            format!("{}.{}", self.flow, job.backend)
        })
        .set_time(seconds(job.duration_s.unwrap_or(0.0)));
        if let Some(log) = &job.log {
            // The path, not the contents: logs can be huge.
            case.set_system_out(format!("log: {log}"));
        }
        case
    }
}

/// The body of a `<failure>`: what a reader needs besides the one-line message.
fn failure_details(job: &JobRecord) -> String {
    let mut lines = Vec::new();
    if let Some(code) = job.exit_code {
        lines.push(format!("exit code: {code}"));
    }
    if let Some(line) = &job.fail_line {
        lines.push(format!("log line: {line}"));
    }
    if let Some(text) = &job.fail_text {
        lines.push(text.clone());
    }
    lines.join("\n")
}

/// A JUnit `time`: quick-junit writes seconds with millisecond precision.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}
