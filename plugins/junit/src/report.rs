//! The run as the JUnit report sees it, built from RunEvents, and its rendering with
//! quick-junit (which counts the cases and drops what XML cannot hold).
//!
//! Mapping (what Jenkins and GitLab display):
//! - passed  -> a plain `<testcase>`;
//! - failed  -> `<failure message=REASON>`, body: exit code and the failing log line if any;
//! - killed  -> `<error message=REASON>` (a timeout or an interrupt is not the test's verdict);
//! - skipped -> `<skipped message=REASON>`;
//! - a job that never reached a final status (the run ended first) -> `<error>`, so an
//!   incomplete run never looks green;
//! - attempts that failed and were retried (`retries`), as nextest writes them: under a job
//!   that passed at last one `<flakyFailure>` each, under one that did not one
//!   `<rerunFailure>` each, oldest first, with the attempt's reason as `message`, the same
//!   body as a `<failure>` and the attempt's log path as `<system-out>`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use flowrun_plugin_sdk::{JobStatus, RunEvent, RunEventKind, Summary};
use quick_junit::{
    NonSuccessKind, Property, Report as JunitReport, TestCase, TestCaseStatus, TestRerun, TestSuite,
};

/// What the event that ended an attempt said of it.
#[derive(Debug, Clone, Default)]
struct AttemptEnd {
    reason: String,
    exit_code: Option<i32>,
    duration_s: Option<f64>,
    log: Option<String>,
    fail_line: Option<String>,
    fail_text: Option<String>,
}

impl AttemptEnd {
    fn of(event: &RunEvent<'_>) -> Self {
        AttemptEnd {
            reason: event.reason().to_string(),
            exit_code: event.exit_code(),
            duration_s: event.duration_s(),
            log: event.log().map(str::to_string),
            fail_line: event.attr("fail_line").map(str::to_string),
            fail_text: event.attr("fail_text").map(str::to_string),
        }
    }
}

/// One job's line in the report.
#[derive(Debug, Clone)]
struct JobRecord {
    name: String,
    backend: String,
    status: JobStatus,
    /// The last attempt (its reason is kept up to date by every status change).
    last: AttemptEnd,
    /// Attempts that failed and were retried, oldest first.
    retried: Vec<AttemptEnd>,
}

impl JobRecord {
    fn new(name: &str, backend: &str) -> Self {
        JobRecord {
            name: name.to_string(),
            backend: backend.to_string(),
            status: JobStatus::SCHEDULED,
            last: AttemptEnd::default(),
            retried: Vec::new(),
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
                // A retry: back from running to queued with the failed attempt's reason (a busy
                // backend's hand-back has none).
                let retried = event.old_status() == JobStatus::RUNNING
                    && event.new_status() == JobStatus::QUEUED
                    && !event.reason().is_empty();
                if retried {
                    job.retried.push(AttemptEnd::of(&event));
                    job.last.reason.clear();
                } else if event.new_status().is_terminal() {
                    job.last = AttemptEnd::of(&event);
                } else {
                    job.last.reason = event.reason().to_string();
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
        replace_xml_nonchars(&mut out);
        Ok(out)
    }

    fn test_case(&self, job: &JobRecord) -> TestCase {
        let message = |default: &str| {
            if job.last.reason.is_empty() {
                default.to_string()
            } else {
                job.last.reason.clone()
            }
        };
        let status = match job.status {
            JobStatus::PASSED => TestCaseStatus::success(),
            JobStatus::FAILED => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(message("failed")).set_type("failed");
                let details = failure_details(&job.last);
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
        let mut status = status;
        status.add_reruns(job.retried.iter().map(|attempt| {
            let mut rerun = TestRerun::new(NonSuccessKind::Failure);
            rerun
                .set_message(attempt.reason.as_str())
                .set_type("failed")
                .set_time(seconds(attempt.duration_s.unwrap_or(0.0)));
            let details = failure_details(attempt);
            if !details.is_empty() {
                rerun.set_description(details);
            }
            if let Some(log) = &attempt.log {
                rerun.set_system_out(format!("log: {log}"));
            }
            rerun
        }));
        let mut case = TestCase::new(job.name.as_str(), status);
        case.set_classname(if job.backend.is_empty() {
            self.flow.clone()
        } else {
            format!("{}.{}", self.flow, job.backend)
        })
        .set_time(seconds(job.last.duration_s.unwrap_or(0.0)));
        if let Some(log) = &job.last.log {
            // The path, not the contents: logs can be huge.
            case.set_system_out(format!("log: {log}"));
        }
        case
    }
}

/// The body of a `<failure>`: what a reader needs besides the one-line message.
fn failure_details(job: &AttemptEnd) -> String {
    let mut lines = Vec::new();
    if let Some(code) = job.exit_code {
        lines.push(format!("exit code: {code}"));
    }
    if let Some(line) = &job.fail_line {
        lines.push(format!("log line: {line}"));
    }
    if let Some(text) = &job.fail_text {
        lines.push(cut_fail_text(text));
    }
    lines.join("\n")
}

/// How much of a failing log line a `<failure>` body carries. The host keeps up to 64 KiB of
/// the line, and a night of 20,000 failures would give CI a report of over a gigabyte; the
/// line's start says what failed, and the log (named in `<system-out>`) has the rest.
pub const MAX_FAIL_TEXT_BYTES: usize = 4096;

/// `text` up to [`MAX_FAIL_TEXT_BYTES`] (cut at a character boundary), saying so when cut.
fn cut_fail_text(text: &str) -> String {
    if text.len() <= MAX_FAIL_TEXT_BYTES {
        return text.to_string();
    }
    let mut end = MAX_FAIL_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… (cut: the line has {} bytes, the log has it whole)",
        &text[..end],
        text.len()
    )
}

/// A JUnit `time`: quick-junit writes seconds with millisecond precision.
/// Replaces U+FFFE and U+FFFF, which XML 1.0 does not allow anywhere in a document, with
/// U+FFFD in the serialized report (they are three bytes each, as U+FFFD is). They are valid
/// UTF-8, so a job name or a log line can carry them, and the serializer passes them through:
/// one such line in a fail text made the whole report unreadable to CI's XML parser. (The
/// serializer already drops the C0 controls XML forbids; surrogates cannot be in a `str`.)
fn replace_xml_nonchars(xml: &mut [u8]) {
    let mut i = 0;
    while i + 2 < xml.len() {
        if xml[i] == 0xEF && xml[i + 1] == 0xBF && matches!(xml[i + 2], 0xBE | 0xBF) {
            xml[i + 2] = 0xBD;
            i += 3;
        } else {
            i += 1;
        }
    }
}

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}
