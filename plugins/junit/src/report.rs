//! The run as the JUnit report sees it, built from RunEvents, and its XML rendering.
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
    io::{self, Write},
    path::{Path, PathBuf},
};

use flowrun_plugin_api::{sdk::attrs_iter, JobStatus, RunEvent, RunEventKind, RunSummary};
use quick_xml::{events::BytesText, Writer};

/// One job's line in the report.
#[derive(Debug, Clone)]
struct JobRecord {
    name: String,
    backend: String,
    status: JobStatus,
    reason: String,
    exit_code: Option<i32>,
    duration_s: Option<f64>,
    log: String,
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
            log: String::new(),
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
    summary: Option<RunSummary>,
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
    pub fn apply(&mut self, event: &RunEvent) {
        self.last_event_us = self.last_event_us.max(event.time_us);
        match event.kind {
            RunEventKind::RUN_STARTED => {
                self.flow = event.flow.to_string();
                self.run_dir = Some(PathBuf::from(event.run_dir.as_str()));
                self.started_us = event.time_us;
                for job in event.jobs.iter() {
                    self.record(job.name.as_str(), job.backend.as_str());
                }
            }
            RunEventKind::JOB_STATUS => {
                let job = self.record(event.job.as_str(), event.backend.as_str());
                job.status = event.new_status;
                if !event.backend.is_empty() {
                    job.backend = event.backend.to_string();
                }
                job.reason = event.reason.to_string();
                if event.new_status.is_terminal() {
                    job.exit_code = event.exit_code.into_option();
                    job.duration_s = event.duration_s.into_option();
                    job.log = event.log.to_string();
                    for (key, value) in attrs_iter(&event.attrs) {
                        match key {
                            "fail_line" => job.fail_line = Some(value.to_string()),
                            "fail_text" => job.fail_text = Some(value.to_string()),
                            _ => {}
                        }
                    }
                }
            }
            RunEventKind::KILL_SIGNAL => self.signal = Some(event.signal.to_string()),
            RunEventKind::RUN_FINISHED => self.summary = event.summary.clone().into_option(),
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
    pub fn to_xml(&self) -> io::Result<Vec<u8>> {
        let flow = xml_safe(&self.flow);
        let count = |s: JobStatus| self.jobs.iter().filter(|j| j.status == s).count();
        let unfinished = self.jobs.iter().filter(|j| !j.status.is_terminal()).count();
        let tests = self.jobs.len().to_string();
        let failures = count(JobStatus::FAILED).to_string();
        let errors = (count(JobStatus::KILLED) + unfinished).to_string();
        let skipped = count(JobStatus::SKIPPED).to_string();
        let time = seconds(match &self.summary {
            Some(s) => s.duration_s,
            None => (self.last_event_us - self.started_us).max(0) as f64 / 1e6,
        });
        let timestamp = timestamp(self.started_us);
        let counts = [
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", errors.as_str()),
            ("skipped", skipped.as_str()),
            ("time", time.as_str()),
        ];

        let mut out = Vec::new();
        out.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")?;
        let mut w = Writer::new_with_indent(&mut out, b' ', 2);
        w.create_element("testsuites")
            .with_attribute(("name", flow.as_str()))
            .with_attributes(counts)
            .write_inner_content(|w| {
                w.create_element("testsuite")
                    .with_attribute(("name", flow.as_str()))
                    .with_attributes(counts)
                    .with_attribute(("timestamp", timestamp.as_str()))
                    .write_inner_content(|w| {
                        let interrupted = self.summary.as_ref().is_some_and(|s| s.interrupted);
                        let signal = self
                            .signal
                            .clone()
                            .or_else(|| interrupted.then(|| "signal".to_string()));
                        if let Some(signal) = &signal {
                            w.create_element("properties").write_inner_content(|w| {
                                w.create_element("property")
                                    .with_attribute(("name", "interrupted_by"))
                                    .with_attribute(("value", xml_safe(signal).as_str()))
                                    .write_empty()?;
                                Ok(())
                            })?;
                        }
                        for job in &self.jobs {
                            self.write_testcase(w, &flow, job)?;
                        }
                        Ok(())
                    })?;
                Ok(())
            })?;
        out.push(b'\n');
        Ok(out)
    }

    fn write_testcase<W: Write>(
        &self,
        w: &mut Writer<W>,
        flow: &str,
        job: &JobRecord,
    ) -> io::Result<()> {
        let name = xml_safe(&job.name);
        let classname = if job.backend.is_empty() {
            flow.to_string()
        } else {
            format!("{flow}.{}", xml_safe(&job.backend))
        };
        let time = seconds(job.duration_s.unwrap_or(0.0));
        let reason = xml_safe(&job.reason);
        w.create_element("testcase")
            .with_attribute(("name", name.as_str()))
            .with_attribute(("classname", classname.as_str()))
            .with_attribute(("time", time.as_str()))
            .write_inner_content(|w| {
                match job.status {
                    JobStatus::PASSED => {}
                    JobStatus::FAILED => {
                        let message = if reason.is_empty() {
                            "failed".to_string()
                        } else {
                            reason.clone()
                        };
                        w.create_element("failure")
                            .with_attribute(("message", message.as_str()))
                            .with_attribute(("type", "failed"))
                            .write_text_content(BytesText::new(&failure_details(job)))?;
                    }
                    JobStatus::KILLED => {
                        let message = if reason.is_empty() {
                            "killed".to_string()
                        } else {
                            reason.clone()
                        };
                        w.create_element("error")
                            .with_attribute(("message", message.as_str()))
                            .with_attribute(("type", "killed"))
                            .write_empty()?;
                    }
                    JobStatus::SKIPPED => {
                        let message = if reason.is_empty() {
                            "skipped".to_string()
                        } else {
                            reason.clone()
                        };
                        w.create_element("skipped")
                            .with_attribute(("message", message.as_str()))
                            .write_empty()?;
                    }
                    _ => {
                        w.create_element("error")
                            .with_attribute(("message", "did not finish: the run ended first"))
                            .with_attribute(("type", "unfinished"))
                            .write_empty()?;
                    }
                }
                if !job.log.is_empty() {
                    w.create_element("system-out")
                        .write_text_content(BytesText::new(&format!(
                            "log: {}",
                            xml_safe(&job.log)
                        )))?;
                }
                Ok(())
            })?;
        Ok(())
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
    xml_safe(&lines.join("\n"))
}

/// Seconds with millisecond precision, as JUnit's `time` attributes are read.
fn seconds(s: f64) -> String {
    format!("{:.3}", if s.is_finite() && s > 0.0 { s } else { 0.0 })
}

/// ISO 8601 without a zone, as the JUnit schema's `timestamp` wants it (the time is UTC).
fn timestamp(us: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00".to_string())
}

/// `text` with the characters XML 1.0 cannot hold at all (most C0 controls, such as the ESC of
/// a coloured log line) written as `\xNN`; quick-xml escapes `<`, `&` and quotes itself.
pub fn xml_safe(text: &str) -> String {
    let forbidden = |c: char| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
    };
    if !text.chars().any(forbidden) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if forbidden(c) {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}
