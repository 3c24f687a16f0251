//! The run as an observer sees it, built from the host's events alone.
//!
//! Which event fields and attributes feed what (docs/results.md has the contract):
//! - RUN_STARTED: the flow, the run directory, every job and its backend; attr `phases`.
//! - JOB_STATUS: the status change and its time. A change to RUNNING opens an [`Attempt`] on
//!   the lowest free lane of the job's backend (attrs `resources`, `attempt`, `native_id`);
//!   the next change closes it. A final status's `duration_s` (the host's measure, as in
//!   results.json) moves the attempt's start to when the host handed the job over. Terminal: exit code, duration, log, reason and the attrs
//!   `reason_kind`, `cpu_s`, `max_rss_mb`, `fail_line`, `fail_text`, `native_id`.
//! - KILL_SIGNAL: the signal's name. RUN_FINISHED: the summary; attr `phases`.
//!
//! Every attribute may be absent (an older host, a backend that cannot measure): the field is
//! then `None` and the observers show "unknown".
//!
//! A run ended by a second signal publishes no final status for the jobs still in flight; the
//! host records them in results.json by a fixed rule, and [`RunModel::apply`] applies the same
//! rule at RUN_FINISHED so that every observer agrees with results.json.

use std::{cmp::Reverse, collections::BinaryHeap, collections::HashMap, path::PathBuf};

use flowrun_plugin_sdk::{JobStatus, RunEvent, RunEventKind, Summary};

/// A host phase (load, expand, validate, schedule, write_results), in epoch microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// The phase's name.
    pub name: String,
    /// Its start.
    pub start_us: i64,
    /// Its end.
    pub end_us: i64,
}

/// One stay of a job in RUNNING.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Index of the job in [`RunModel::jobs`].
    pub job: u32,
    /// The attempt's number, from 1 (the `attempt` attr, else counted here).
    pub number: u32,
    /// When it started running.
    pub start_us: i64,
    /// When it stopped running; `None` while it runs.
    pub end_us: Option<i64>,
    /// The lane of its backend: no other attempt on the same backend holds this lane at the
    /// same time, and a new attempt takes the lowest free one.
    pub lane: u32,
    /// The status it ended in (RUNNING while open).
    pub status: JobStatus,
    /// `resources` of its RUNNING event, such as `cpus=2,vcs=1`.
    pub resources: Option<String>,
    /// How an attempt that was retried ended (its change back to QUEUED says); `None` for the
    /// last attempt, whose end is the job's own (in [`JobRow`]).
    pub retried: Option<Box<AttemptEnd>>,
}

/// How a retried attempt ended, as the host's event sending it back to the queue tells.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttemptEnd {
    /// Why it failed.
    pub reason: String,
    /// The reason's stable word, when the host sent it.
    pub reason_kind: Option<String>,
    /// The exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Seconds it ran, as the host measured.
    pub duration_s: Option<f64>,
    /// CPU seconds of its process tree.
    pub cpu_s: Option<f64>,
    /// Peak memory of its process tree, in MiB.
    pub max_rss_mb: Option<f64>,
    /// Its log file.
    pub log: Option<String>,
}

/// Everything known about one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    /// The expanded name.
    pub name: String,
    /// Index into [`RunModel::backends`].
    pub backend: u16,
    /// The latest status.
    pub status: JobStatus,
    /// Why it did not pass (empty while it has not ended, or when it passed).
    pub reason: String,
    /// A stable word for the kind of reason (`exit_code`, `timeout`, ...), when the host sent it.
    pub reason_kind: Option<String>,
    /// The exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Seconds it ran, as the host measured.
    pub duration_s: Option<f64>,
    /// Its log file, once it ended.
    pub log: Option<String>,
    /// For a fail-pattern match: the line number and the line.
    pub fail_line: Option<u64>,
    /// See `fail_line`.
    pub fail_text: Option<String>,
    /// CPU seconds of its process tree.
    pub cpu_s: Option<f64>,
    /// Peak memory of its process tree, in MiB.
    pub max_rss_mb: Option<f64>,
    /// The cluster's id for it.
    pub native_id: Option<String>,
    /// When it became ready (left SCHEDULED), if it did.
    pub queued_us: Option<i64>,
    /// The attempt running now, if any (index into [`RunModel::attempts`]).
    pub open_attempt: Option<u32>,
    /// Attempts so far.
    pub attempts: u32,
}

impl JobRow {
    fn new(name: &str, backend: u16) -> Self {
        JobRow {
            name: name.to_string(),
            backend,
            status: JobStatus::SCHEDULED,
            reason: String::new(),
            reason_kind: None,
            exit_code: None,
            duration_s: None,
            log: None,
            fail_line: None,
            fail_text: None,
            cpu_s: None,
            max_rss_mb: None,
            native_id: None,
            queued_us: None,
            open_attempt: None,
            attempts: 0,
        }
    }
}

/// Lanes of one backend: the lowest free lane is handed out first.
#[derive(Debug, Default)]
struct LanePool {
    free: BinaryHeap<Reverse<u32>>,
    next: u32,
}

impl LanePool {
    fn take(&mut self) -> u32 {
        match self.free.pop() {
            Some(Reverse(lane)) => lane,
            None => {
                self.next += 1;
                self.next - 1
            }
        }
    }
    fn give_back(&mut self, lane: u32) {
        self.free.push(Reverse(lane));
    }
}

/// What an observer knows of the run so far.
#[derive(Debug, Default)]
pub struct RunModel {
    /// The flow's name.
    pub flow: String,
    /// The run directory, once RUN_STARTED was seen.
    pub run_dir: Option<PathBuf>,
    /// When the run started (epoch µs).
    pub started_us: i64,
    /// The time of the latest event.
    pub last_event_us: i64,
    /// When RUN_FINISHED came, if it did.
    pub finished_us: Option<i64>,
    /// The summary of RUN_FINISHED.
    pub summary: Option<Summary>,
    /// The signal that interrupted the run.
    pub signal: Option<String>,
    /// Backend instance names, in order of first appearance.
    pub backends: Vec<String>,
    /// Every job, in the order of RUN_STARTED (jobs first seen later are appended).
    pub jobs: Vec<JobRow>,
    /// Every attempt, in the order they started.
    pub attempts: Vec<Attempt>,
    /// The host's phases, as far as the host sent them.
    pub phases: Vec<Phase>,
    /// How many jobs are in each status (indexed by the status code; unknown codes last).
    pub counts: [u64; 8],
    /// How many lanes each backend used at most.
    lanes: Vec<LanePool>,
    by_name: HashMap<String, u32>,
    backend_ix: HashMap<String, u16>,
}

/// A decimal attribute, if present and finite.
fn number(event: &RunEvent<'_>, key: &str) -> Option<f64> {
    event
        .attr(key)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

fn text(event: &RunEvent<'_>, key: &str) -> Option<String> {
    event
        .attr(key)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn count_slot(status: JobStatus) -> usize {
    usize::from(status.0).min(7)
}

/// Parses `name=START:END;name=START:END` (epoch µs); malformed entries are skipped.
pub fn parse_phases(value: &str) -> Vec<Phase> {
    value
        .split(';')
        .filter_map(|entry| {
            let (name, span) = entry.split_once('=')?;
            let (start, end) = span.split_once(':')?;
            let start_us = start.trim().parse().ok()?;
            let end_us: i64 = end.trim().parse().ok()?;
            (end_us >= start_us && !name.trim().is_empty()).then(|| Phase {
                name: name.trim().to_string(),
                start_us,
                end_us,
            })
        })
        .collect()
}

impl RunModel {
    /// Takes one event into account.
    pub fn apply(&mut self, event: RunEvent<'_>) {
        let time_us = event.time_us();
        self.last_event_us = self.last_event_us.max(time_us);
        match event.kind() {
            RunEventKind::RUN_STARTED => {
                self.flow = event.flow().to_string();
                self.run_dir = Some(PathBuf::from(event.run_dir()));
                self.started_us = time_us;
                let jobs = event.jobs();
                self.jobs.reserve(jobs.len());
                self.by_name.reserve(jobs.len());
                for job in jobs {
                    self.job_index(job.name, job.backend);
                }
                if let Some(p) = event.attr("phases") {
                    self.phases.extend(parse_phases(p));
                }
            }
            RunEventKind::JOB_STATUS => self.on_status(event),
            // The first signal is the one that interrupted the run.
            RunEventKind::KILL_SIGNAL if self.signal.is_none() => {
                self.signal = Some(event.signal().to_string());
            }
            RunEventKind::RUN_FINISHED => {
                self.finished_us = Some(time_us);
                self.summary = event.summary();
                if let Some(p) = event.attr("phases") {
                    self.phases.extend(parse_phases(p));
                }
                if self.interrupted() {
                    self.settle_interrupted(time_us);
                }
            }
            _ => {} // a kind added after this plugin was built
        }
    }

    /// Whether the run was interrupted by a signal (as far as the events tell).
    pub fn interrupted(&self) -> bool {
        self.signal.is_some() || self.summary.as_ref().is_some_and(|s| s.interrupted)
    }

    /// How many lanes backend `backend` has used.
    pub fn lanes(&self, backend: u16) -> u32 {
        self.lanes.get(usize::from(backend)).map_or(0, |p| p.next)
    }

    /// The index of job `name`, recorded on first sight.
    pub fn job_index(&mut self, name: &str, backend: &str) -> u32 {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let b = self.backend_index(backend);
        let i = self.jobs.len() as u32;
        self.jobs.push(JobRow::new(name, b));
        self.by_name.insert(name.to_string(), i);
        self.counts[count_slot(JobStatus::SCHEDULED)] += 1;
        i
    }

    fn backend_index(&mut self, backend: &str) -> u16 {
        if let Some(&b) = self.backend_ix.get(backend) {
            return b;
        }
        let b = self.backends.len() as u16;
        self.backends.push(backend.to_string());
        self.backend_ix.insert(backend.to_string(), b);
        self.lanes.push(LanePool::default());
        b
    }

    fn on_status(&mut self, event: RunEvent<'_>) {
        let i = self.job_index(event.job(), event.backend());
        if !event.backend().is_empty() {
            let b = self.backend_index(event.backend());
            self.jobs[i as usize].backend = b;
        }
        let new = event.new_status();
        let open = self.jobs[i as usize].open_attempt;
        self.set_status(i, new, event.time_us());
        if let (Some(a), true, Some(d)) = (open, new != JobStatus::RUNNING, event.duration_s()) {
            self.trim_to_host_duration(a, d);
        }
        // An attempt leaving RUNNING for the queue was retried: its end is its own, and the
        // job's fields will describe the next attempt.
        if let (Some(a), false) = (open, new == JobStatus::RUNNING || new.is_terminal()) {
            self.attempts[a as usize].retried = Some(Box::new(AttemptEnd {
                reason: event.reason().to_string(),
                reason_kind: text(&event, "reason_kind"),
                exit_code: event.exit_code(),
                duration_s: event.duration_s(),
                cpu_s: number(&event, "cpu_s"),
                max_rss_mb: number(&event, "max_rss_mb"),
                log: event.log().map(str::to_string),
            }));
        }
        if new == JobStatus::RUNNING {
            let number = event
                .attr("attempt")
                .and_then(|a| a.trim().parse().ok())
                .unwrap_or(self.jobs[i as usize].attempts + 1);
            self.open_attempt(i, number, event.time_us(), text(&event, "resources"));
        }
        let job = &mut self.jobs[i as usize];
        if let Some(id) = text(&event, "native_id") {
            job.native_id = Some(id);
        }
        if !event.reason().is_empty() || new.is_terminal() {
            job.reason = event.reason().to_string();
        }
        // A final status says the job's last word on why; a retried attempt's reason (sent with
        // its change back to QUEUED) must not stay on a job that then passed.
        match text(&event, "reason_kind") {
            Some(kind) => job.reason_kind = Some(kind),
            None if new.is_terminal() => job.reason_kind = None,
            None => {}
        }
        if new.is_terminal() {
            job.exit_code = event.exit_code();
            job.duration_s = event.duration_s();
            job.log = event.log().map(str::to_string);
            job.cpu_s = number(&event, "cpu_s");
            job.max_rss_mb = number(&event, "max_rss_mb");
            job.fail_line = event.attr("fail_line").and_then(|l| l.trim().parse().ok());
            job.fail_text = text(&event, "fail_text");
        }
    }

    /// Moves job `i` to `new` at `time_us`, closing its open attempt when it leaves RUNNING.
    fn set_status(&mut self, i: u32, new: JobStatus, time_us: i64) {
        let job = &mut self.jobs[i as usize];
        let old = job.status;
        self.counts[count_slot(old)] -= 1;
        self.counts[count_slot(new)] += 1;
        job.status = new;
        if job.queued_us.is_none() && new != JobStatus::SCHEDULED {
            job.queued_us = Some(time_us);
        }
        if new != JobStatus::RUNNING {
            if let Some(a) = job.open_attempt.take() {
                let attempt = &mut self.attempts[a as usize];
                attempt.end_us = Some(time_us.max(attempt.start_us));
                attempt.status = new;
                let backend = usize::from(job.backend);
                self.lanes[backend].give_back(attempt.lane);
            }
        }
    }

    /// Starts attempt `a` where the host's own `duration_s` says it started. The RUNNING event
    /// comes when the scheduler dispatches the job, which can be well before the host hands it
    /// to the backend (a busy loop, a slow submit); results.json measures from the handing
    /// over, and the observers must agree with it. The span only ever shrinks, so lanes stay
    /// disjoint.
    fn trim_to_host_duration(&mut self, a: u32, duration_s: f64) {
        let attempt = &mut self.attempts[a as usize];
        let (Some(end), true) = (attempt.end_us, duration_s.is_finite() && duration_s >= 0.0)
        else {
            return;
        };
        let start = end - (duration_s * 1e6).round() as i64;
        attempt.start_us = attempt.start_us.max(start);
    }

    fn open_attempt(&mut self, i: u32, number: u32, time_us: i64, resources: Option<String>) {
        let job = &mut self.jobs[i as usize];
        if job.open_attempt.is_some() {
            return; // a repeated RUNNING: the attempt goes on
        }
        let lane = self.lanes[usize::from(job.backend)].take();
        job.open_attempt = Some(self.attempts.len() as u32);
        job.attempts = job.attempts.max(number);
        self.attempts.push(Attempt {
            job: i,
            number,
            start_us: time_us,
            end_us: None,
            lane,
            status: JobStatus::RUNNING,
            resources,
            retried: None,
        });
    }

    /// The host's rule for jobs without a final status after an abandoned run (the core's
    /// `Input::Abandon`, whose final statuses the host publishes, so this is a safety net):
    /// running -> killed, queued -> killed, waiting -> skipped.
    fn settle_interrupted(&mut self, time_us: i64) {
        let sig = self.signal.clone().unwrap_or_else(|| "SIGINT".to_string());
        for i in 0..self.jobs.len() as u32 {
            let (status, reason) = match self.jobs[i as usize].status {
                s if s.is_terminal() => continue,
                JobStatus::RUNNING => (JobStatus::KILLED, format!("killed by {sig} while running")),
                JobStatus::QUEUED => (JobStatus::KILLED, "killed while queued".to_string()),
                _ => (JobStatus::SKIPPED, format!("run interrupted by {sig}")),
            };
            self.set_status(i, status, time_us);
            let job = &mut self.jobs[i as usize];
            job.reason = reason;
            job.reason_kind = Some("interrupted".to_string());
        }
    }

    /// The end of the run's time span so far: its finish, else the latest event.
    pub fn end_us(&self) -> i64 {
        self.finished_us.unwrap_or(self.last_event_us)
    }

    /// Jobs with the given status.
    pub fn count(&self, status: JobStatus) -> u64 {
        self.counts[count_slot(status)]
    }
}

#[cfg(test)]
mod tests;
