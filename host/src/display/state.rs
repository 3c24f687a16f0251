//! What the display knows of the run, built from the event stream alone: counts per status, the
//! running jobs, the lines to print, and the material of the summary. Every event costs O(1)
//! (a few hash-map operations, with the Fx hash: the keys are our own job names, and at most one
//! formatted line); everything kept for the summary
//! is bounded, whatever the number of jobs.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::format::{self, Counts};
use crate::{
    observe::{JobStatusEvent, RunEvent, Summary},
    sched::Status,
};

/// Reasons longer than this many columns are cut (a fail line can be 64 KiB).
pub const REASON_WIDTH: usize = 200;
/// Distinct reasons kept per run; the jobs of any further reason are only counted.
pub const MAX_GROUPS: usize = 10_000;
/// Job names kept per reason (the summary shows a few lines of them).
pub const NAMES_PER_GROUP: usize = 100;
/// Failed (and, apart, killed) jobs whose log tail the summary shows.
pub const TAIL_JOBS: usize = 10;
/// Lines waiting to be printed; beyond this (stderr blocked, or an interactive job holding the
/// terminal for a long time) further job lines are only counted.
pub const MAX_PENDING_LINES: usize = 100_000;
/// Jobs named in each of the summary's top lines (wall time, CPU, memory).
pub const TOP_JOBS: usize = 5;

/// Which jobs get a line of their own as they end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobLines {
    /// None (`-q`).
    None,
    /// Failed and killed jobs, not after a kill signal (above the live line: skips are the
    /// consequence of a failure already shown, kills after Ctrl-C the consequence of Ctrl-C).
    Failures,
    /// Every job that did not pass (plain output, such as a CI log).
    NotPassed,
}

/// Jobs that ended without passing and share a status and a reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Failed, killed or skipped.
    pub status: Status,
    /// The reason, cut, with the job's own directory masked so that equal causes group.
    pub reason: String,
    /// How many jobs.
    pub count: u64,
    /// The first [`NAMES_PER_GROUP`] of them, in the order they ended.
    pub names: Vec<Arc<str>>,
}

/// The [`TOP_JOBS`] jobs with the largest value of one measure, largest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Top(pub Vec<(f64, Arc<str>)>);

impl Top {
    /// Keeps `job` if its `value` is among the largest: O(1) per event, as the hub requires.
    fn offer(&mut self, value: Option<f64>, job: &Arc<str>) {
        let Some(v) = value.filter(|v| v.is_finite()) else {
            return;
        };
        if self.0.len() == TOP_JOBS && self.0[TOP_JOBS - 1].0 >= v {
            return;
        }
        let at = self.0.partition_point(|(s, _)| *s >= v);
        self.0.insert(at, (v, job.clone()));
        self.0.truncate(TOP_JOBS);
    }
}

/// A failed or killed job the summary shows with its log.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedJob {
    /// Failed or killed.
    pub status: Status,
    /// Its name.
    pub name: Arc<str>,
    /// Why, cut.
    pub reason: String,
    /// Its log, when it has one.
    pub log: Option<PathBuf>,
}

/// Output the display thread has to write.
#[derive(Debug, Default)]
pub struct Pending {
    /// Whole lines (each without its newline), to print above the live line.
    pub lines: Vec<format::Line>,
    /// Job lines that did not fit in the queue.
    pub dropped: u64,
}

/// The display's state.
#[derive(Debug)]
pub struct Progress {
    job_lines: JobLines,
    /// Whether to keep the names of running jobs (the live line and the periodic line show
    /// them; `-q` does not).
    track_running: bool,
    /// Columns for job lines.
    line_width: usize,
    /// The flow's name, from RUN_STARTED.
    pub flow: String,
    run_jobs_dir: String,
    started_us: i64,
    /// Jobs in the run.
    pub total: u64,
    /// Per status.
    pub counts: Counts,
    /// Running jobs: name -> when it started running (µs), for the longest-running first.
    running: HashMap<Arc<str>, i64>,
    /// Interactive jobs running now: while there is one, the terminal is theirs.
    interactive: HashSet<Arc<str>>,
    /// The first kill signal.
    pub signal: Option<&'static str>,
    /// Kill signals received.
    pub signals: u32,
    groups: Vec<Group>,
    group_of: HashMap<(Status, String), usize>,
    /// Jobs whose reason found no room among the groups, per status.
    pub ungrouped: Counts,
    /// Failed jobs with a log tail to show, then killed ones.
    pub ended: Vec<EndedJob>,
    failed_shown: usize,
    killed_shown: usize,
    /// Failed or killed jobs beyond the ones with a tail.
    pub ended_not_shown: u64,
    /// The longest-running jobs (wall seconds).
    pub slowest: Top,
    /// The jobs that used the most CPU (seconds of their process trees), when backends say.
    pub most_cpu: Top,
    /// The jobs with the largest peak memory (MiB), when backends say.
    pub most_memory: Top,
    /// RUN_FINISHED's totals.
    pub finished: Option<Summary>,
    /// Output not yet written.
    pub pending: Pending,
    /// The counts changed since the last progress line.
    pub changed: bool,
    /// Failed attempts that were retried.
    pub retried: u64,
}

impl Progress {
    /// An empty state.
    pub fn new(job_lines: JobLines, track_running: bool, line_width: usize) -> Self {
        Progress {
            job_lines,
            track_running,
            line_width,
            flow: String::new(),
            run_jobs_dir: String::new(),
            started_us: 0,
            total: 0,
            counts: Counts::default(),
            running: HashMap::default(),
            interactive: HashSet::default(),
            signal: None,
            signals: 0,
            groups: Vec::new(),
            group_of: HashMap::default(),
            ungrouped: Counts::default(),
            ended: Vec::new(),
            failed_shown: 0,
            killed_shown: 0,
            ended_not_shown: 0,
            slowest: Top::default(),
            most_cpu: Top::default(),
            most_memory: Top::default(),
            finished: None,
            pending: Pending::default(),
            changed: false,
            retried: 0,
        }
    }

    /// Whether an interactive job runs now (it may hold the terminal).
    pub fn interactive_running(&self) -> bool {
        !self.interactive.is_empty()
    }

    /// Time since the run started at `now_us`.
    pub fn elapsed_at(&self, now_us: i64) -> Duration {
        Duration::from_micros(now_us.saturating_sub(self.started_us).max(0) as u64)
    }

    /// The names of up to `n` running jobs, the longest-running first. O(running jobs): called
    /// at most once per redraw, never per event.
    pub fn longest_running(&self, n: usize) -> Vec<&str> {
        let mut all: Vec<(&i64, &Arc<str>)> = self.running.iter().map(|(k, v)| (v, k)).collect();
        let n = n.min(all.len());
        if n == 0 {
            return Vec::new();
        }
        if n < all.len() {
            all.select_nth_unstable(n - 1);
            all.truncate(n);
        }
        all.sort_unstable();
        all.into_iter().map(|(_, name)| &**name).collect()
    }

    /// The groups, cause first: failed before killed before skipped; within a status the most
    /// common reason first, then the one seen first.
    pub fn sorted_groups(&self) -> Vec<&Group> {
        let mut g: Vec<(usize, &Group)> = self.groups.iter().enumerate().collect();
        g.sort_by(|(ia, a), (ib, b)| {
            rank(a.status)
                .cmp(&rank(b.status))
                .then(b.count.cmp(&a.count))
                .then(ia.cmp(ib))
        });
        g.into_iter().map(|(_, g)| g).collect()
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &RunEvent) {
        match event {
            RunEvent::RunStarted {
                time_us,
                flow,
                run_dir,
                jobs,
                ..
            } => {
                self.flow = flow.clone();
                self.started_us = *time_us;
                self.total = jobs.len() as u64;
                self.counts = Counts::default();
                self.counts.0[Status::Scheduled.index()] = self.total;
                self.run_jobs_dir = jobs_dir_prefix(run_dir);
                self.changed = true;
            }
            RunEvent::JobStatus(e) => self.on_status(e),
            RunEvent::KillSignal { signal, .. } => self.on_signal(signal),
            RunEvent::RunFinished { summary, .. } => self.finished = Some(summary.clone()),
        }
    }

    /// The run loop's answer to the signal, said as the signal arrives.
    fn on_signal(&mut self, signal: &'static str) {
        self.signals += 1;
        self.signal.get_or_insert(signal);
        if self.job_lines == JobLines::None {
            return;
        }
        let text = if self.signals == 1 {
            format!(
                "flowrun: {signal}: starting nothing more but `when = \"always\"` jobs, killing {}; \
                 {signal} again to exit at once",
                format::count(self.counts.get(Status::Running), "running job")
            )
        } else {
            format!("flowrun: {signal} again: exiting now after a best-effort kill")
        };
        let mut line = format::Line::default();
        line.whole = true;
        line.push(text, format::Style::Warn);
        self.pending.lines.push(line);
    }

    fn on_status(&mut self, e: &JobStatusEvent) {
        if e.old == e.new {
            return;
        }
        self.counts.shift(e.old, e.new);
        self.changed = true;
        if e.new == Status::Running {
            if self.track_running {
                self.running.insert(e.job.clone(), e.time_us);
            }
            if e.interactive {
                self.interactive.insert(e.job.clone());
            }
            return;
        }
        if e.old == Status::Running {
            if self.track_running {
                self.running.remove(&*e.job);
            }
            if e.interactive {
                self.interactive.remove(&*e.job);
            }
            // A failed attempt that the core retries (a busy backend's hand-back has no
            // reason): the job is queued again and counted once, as queued; it gets a line, as
            // a failure would, and the attempt's end counts for nothing else.
            if e.new == Status::Queued && e.reason_kind.is_some() {
                self.retried += 1;
                self.note_retry(e);
                return;
            }
        }
        match e.new {
            Status::Passed => self.note_usage(e),
            Status::Failed | Status::Killed | Status::Skipped => {
                self.note_usage(e);
                self.note_not_passed(e);
            }
            Status::Scheduled | Status::Queued | Status::Running => {}
        }
    }

    fn note_retry(&mut self, e: &JobStatusEvent) {
        if self.job_lines == JobLines::None || self.signal.is_some() {
            return;
        }
        if self.pending.lines.len() < MAX_PENDING_LINES {
            let reason = group_reason(&e.reason, &self.run_jobs_dir);
            self.pending.lines.push(format::retry_line(
                self.elapsed_at(e.time_us),
                &e.job,
                e.attempt,
                e.duration_s,
                &reason,
                self.line_width.saturating_sub(1),
            ));
        } else {
            self.pending.dropped += 1;
        }
    }

    fn note_usage(&mut self, e: &JobStatusEvent) {
        self.slowest.offer(e.duration_s, &e.job);
        self.most_cpu.offer(e.cpu_s, &e.job);
        self.most_memory.offer(e.max_rss_mb, &e.job);
    }

    fn note_not_passed(&mut self, e: &JobStatusEvent) {
        let reason = group_reason(&e.reason, &self.run_jobs_dir);
        // Jobs killed after a kill signal, or by `--fail-fast`/`--max-fail` (reason kind
        // `stopped`), are the signal's or the first failures' doing: those are what to see.
        let consequence = self.signal.is_some() || e.reason_kind == Some("stopped");
        // The job's own line.
        let wanted = match self.job_lines {
            JobLines::None => false,
            JobLines::Failures => e.new != Status::Skipped && !consequence,
            JobLines::NotPassed => true,
        };
        if wanted {
            if self.pending.lines.len() < MAX_PENDING_LINES {
                self.pending.lines.push(format::job_end_line(
                    self.elapsed_at(e.time_us),
                    e.new,
                    &e.job,
                    e.duration_s,
                    &reason,
                    self.line_width.saturating_sub(1),
                ));
            } else {
                self.pending.dropped += 1;
            }
        }
        // Its log, for the summary. Kills caused by a kill signal are the signal's doing.
        let shown = match e.new {
            Status::Failed => Some(&mut self.failed_shown),
            Status::Killed if !consequence => Some(&mut self.killed_shown),
            _ => None,
        };
        if let Some(shown) = shown {
            if *shown < TAIL_JOBS {
                *shown += 1;
                self.ended.push(EndedJob {
                    status: e.new,
                    name: e.job.clone(),
                    reason: reason.clone(),
                    log: e.log.clone(),
                });
            } else {
                self.ended_not_shown += 1;
            }
        }
        // Its reason's group.
        let key = (e.new, reason);
        match self.group_of.get(&key) {
            Some(&g) => {
                let g = &mut self.groups[g];
                g.count += 1;
                if g.names.len() < NAMES_PER_GROUP {
                    g.names.push(e.job.clone());
                }
            }
            None if self.groups.len() < MAX_GROUPS => {
                self.groups.push(Group {
                    status: e.new,
                    reason: key.1.clone(),
                    count: 1,
                    names: vec![e.job.clone()],
                });
                self.group_of.insert(key, self.groups.len() - 1);
            }
            None => self.ungrouped.0[e.new.index()] += 1,
        }
    }
}

/// Failed first, then killed, then skipped.
fn rank(s: Status) -> u8 {
    match s {
        Status::Failed => 0,
        Status::Killed => 1,
        Status::Skipped => 2,
        _ => 3,
    }
}

/// `<run dir>/jobs/`, as reasons spell it.
fn jobs_dir_prefix(run_dir: &Path) -> String {
    let mut s = run_dir.join("jobs").display().to_string();
    s.push('/');
    s
}

/// A reason as it is grouped and shown: on one line, cut to [`REASON_WIDTH`], and with every
/// job directory of this run (`<run>/jobs/<job dir>`) written `<job dir>`, so that "cannot read
/// <job dir>/output.log" from 400 jobs is one group, not 400.
pub fn group_reason(reason: &str, jobs_dir: &str) -> String {
    let one = format::one_line(reason);
    let cut = format::truncate(&one, REASON_WIDTH);
    if jobs_dir.len() <= 1 || !cut.contains(jobs_dir) {
        return cut.into_owned();
    }
    let mut out = String::with_capacity(cut.len());
    let mut rest: &str = &cut;
    while let Some(at) = rest.find(jobs_dir) {
        out.push_str(&rest[..at]);
        out.push_str("<job dir>");
        let after = &rest[at + jobs_dir.len()..];
        // The job directory is one path component.
        let end = after
            .find(|c: char| c == '/' || c == ':' || c.is_whitespace())
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use crate::observe::test_status_event as status;

    /// The event of a job ending with `reason` after `ran_s` seconds.
    pub fn ended(job: &str, new: Status, reason: &str, t_s: f64, ran_s: Option<f64>) -> RunEvent {
        let RunEvent::JobStatus(mut e) = status(job, Status::Running, new, t_s) else {
            unreachable!()
        };
        e.reason = reason.into();
        e.duration_s = ran_s;
        if new != Status::Skipped {
            e.log = Some(format!("/runs/r1/jobs/{job}/output.log").into());
        } else {
            e.old = Status::Scheduled;
        }
        RunEvent::JobStatus(e)
    }

    pub fn started(jobs: &[&str]) -> RunEvent {
        RunEvent::RunStarted {
            time_us: 1_000_000_000,
            flow: "demo".into(),
            run_dir: "/runs/r1".into(),
            jobs: jobs.iter().map(|j| ((*j).into(), "local".into())).collect(),
            phases: Default::default(),
        }
    }

    fn run(p: &mut Progress, job: &str, t: f64) {
        p.apply(&status(job, Status::Scheduled, Status::Queued, t));
        p.apply(&status(job, Status::Queued, Status::Running, t));
    }

    #[test]
    fn counts_and_running_jobs_follow_the_events() {
        let mut p = Progress::new(JobLines::NotPassed, true, 100);
        p.apply(&started(&["a", "b", "c"]));
        assert_eq!(p.counts.get(Status::Scheduled), 3);
        run(&mut p, "b", 1.0);
        run(&mut p, "a", 2.0);
        run(&mut p, "c", 3.0);
        assert_eq!(p.counts.get(Status::Running), 3);
        assert_eq!(p.longest_running(2), vec!["b", "a"]);
        assert_eq!(p.longest_running(10), vec!["b", "a", "c"]);
        p.apply(&ended("a", Status::Passed, "", 4.0, Some(2.0)));
        assert_eq!(p.longest_running(10), vec!["b", "c"]);
        assert_eq!(p.counts.get(Status::Passed), 1);
        assert_eq!(p.counts.done(), 1);
        assert!(p.pending.lines.is_empty(), "a pass gets no line");
    }

    #[test]
    fn plain_output_gets_a_line_per_job_that_did_not_pass() {
        let mut p = Progress::new(JobLines::NotPassed, false, 100);
        p.apply(&started(&["a", "b", "c"]));
        p.apply(&ended("a", Status::Failed, "exit code 3", 61.5, Some(1.0)));
        p.apply(&ended(
            "b",
            Status::Skipped,
            "dependency failed: a",
            61.5,
            None,
        ));
        p.apply(&ended("c", Status::Passed, "", 62.0, Some(1.0)));
        let lines: Vec<String> = p.pending.lines.iter().map(|l| l.plain()).collect();
        assert_eq!(
            lines,
            vec![
                "[01:01] FAILED  a (1.0s): exit code 3",
                "[01:01] SKIPPED b: dependency failed: a",
            ]
        );
    }

    /// A retried attempt: the job goes back to queued and runs again, counted once all along;
    /// the failed attempt gets a RETRY line, not a FAILED one, and no place in the summary.
    #[test]
    fn a_retried_attempt_requeues_the_job_and_counts_it_once() {
        let mut p = Progress::new(JobLines::NotPassed, true, 100);
        p.apply(&started(&["flaky", "other"]));
        run(&mut p, "flaky", 1.0);
        run(&mut p, "other", 1.0);
        let RunEvent::JobStatus(mut retry) = status("flaky", Status::Running, Status::Queued, 3.0)
        else {
            unreachable!()
        };
        retry.reason = "exit code 1".into();
        retry.reason_kind = Some("exit_code");
        retry.duration_s = Some(2.0);
        p.apply(&RunEvent::JobStatus(retry));
        assert_eq!(p.counts.get(Status::Queued), 1);
        assert_eq!(p.counts.get(Status::Running), 1);
        assert_eq!(p.counts.done(), 0);
        assert_eq!(p.longest_running(10), vec!["other"]);
        assert_eq!(p.retried, 1);
        // The next attempt.
        let RunEvent::JobStatus(mut again) = status("flaky", Status::Queued, Status::Running, 3.5)
        else {
            unreachable!()
        };
        again.attempt = 2;
        p.apply(&RunEvent::JobStatus(again));
        assert_eq!(p.counts.get(Status::Queued), 0);
        assert_eq!(p.counts.get(Status::Running), 2);
        p.apply(&ended("flaky", Status::Passed, "", 5.0, Some(1.5)));
        p.apply(&ended("other", Status::Passed, "", 5.0, Some(4.0)));
        assert_eq!(p.counts.get(Status::Passed), 2);
        assert_eq!(p.counts.done(), 2);
        assert_eq!(p.counts.get(Status::Running), 0);
        let lines: Vec<String> = p.pending.lines.iter().map(|l| l.plain()).collect();
        assert_eq!(
            lines,
            vec!["[00:03] RETRY   flaky (2.0s): attempt 1: exit code 1"]
        );
        assert!(p.ended.is_empty() && p.sorted_groups().is_empty());
        // A busy backend's hand-back (no reason) is no retry.
        run(&mut p, "x", 6.0);
        p.apply(&status("x", Status::Running, Status::Queued, 6.0));
        assert_eq!(p.retried, 1);
        assert_eq!(p.pending.lines.len(), 1);
    }

    /// `--fail-fast`/`--max-fail`: the jobs killed because the run stopped are the failure's
    /// doing; on a terminal they get no line and no log tail, and they are grouped by their
    /// reason in the summary.
    #[test]
    fn jobs_killed_by_a_stop_are_the_first_failures_doing() {
        let mut p = Progress::new(JobLines::Failures, true, 80);
        p.apply(&started(&["a", "b", "c"]));
        p.apply(&ended("a", Status::Failed, "exit code 1", 1.0, Some(1.0)));
        for (job, st) in [("b", Status::Killed), ("c", Status::Skipped)] {
            let RunEvent::JobStatus(mut e) = ended(job, st, "stopped after 1 failure", 2.0, None)
            else {
                unreachable!()
            };
            e.reason_kind = Some("stopped");
            p.apply(&RunEvent::JobStatus(e));
        }
        let lines: Vec<String> = p.pending.lines.iter().map(|l| l.plain()).collect();
        assert_eq!(lines, vec!["[00:01] FAILED  a (1.0s): exit code 1"]);
        assert_eq!(p.ended.len(), 1);
        let groups: Vec<(Status, &str, u64)> = p
            .sorted_groups()
            .iter()
            .map(|g| (g.status, g.reason.as_str(), g.count))
            .collect();
        assert_eq!(
            groups,
            vec![
                (Status::Failed, "exit code 1", 1),
                (Status::Killed, "stopped after 1 failure", 1),
                (Status::Skipped, "stopped after 1 failure", 1),
            ]
        );
        assert_eq!(p.counts.done(), 3);
    }

    #[test]
    fn on_a_terminal_only_failures_get_a_line_and_not_after_a_kill_signal() {
        let mut p = Progress::new(JobLines::Failures, true, 80);
        p.apply(&started(&["a", "b", "c", "d"]));
        p.apply(&ended("a", Status::Failed, "exit code 1", 1.0, Some(1.0)));
        p.apply(&ended(
            "b",
            Status::Skipped,
            "dependency failed: a",
            1.0,
            None,
        ));
        p.apply(&RunEvent::KillSignal {
            time_us: 0,
            signal: "SIGINT",
        });
        p.apply(&ended(
            "c",
            Status::Killed,
            "killed by SIGINT",
            2.0,
            Some(2.0),
        ));
        let lines: Vec<String> = p.pending.lines.iter().map(|l| l.plain()).collect();
        assert_eq!(
            lines,
            vec![
                "[00:01] FAILED  a (1.0s): exit code 1",
                "flowrun: SIGINT: starting nothing more but `when = \"always\"` jobs, killing 0 \
                 running jobs; SIGINT again to exit at once"
            ]
        );
        assert_eq!((p.signal, p.signals), (Some("SIGINT"), 1));
        // The kill caused by the signal has no log tail in the summary.
        assert_eq!(p.ended.len(), 1);
    }

    #[test]
    fn groups_put_the_cause_first_and_mask_job_directories() {
        let mut p = Progress::new(JobLines::None, false, 100);
        p.apply(&started(&[]));
        for i in 0..3 {
            p.apply(&ended(
                &format!("s{i}"),
                Status::Skipped,
                "dependency failed: build",
                1.0,
                None,
            ));
        }
        p.apply(&ended("t", Status::Killed, "timed out after 1s", 1.0, None));
        for j in ["x", "y"] {
            p.apply(&ended(
                j,
                Status::Failed,
                &format!("cannot read log /runs/r1/jobs/{j}/output.log: No such file"),
                1.0,
                None,
            ));
        }
        p.apply(&ended("build", Status::Failed, "exit code 2", 1.0, None));
        let g: Vec<(Status, &str, u64)> = p
            .sorted_groups()
            .iter()
            .map(|g| (g.status, g.reason.as_str(), g.count))
            .collect();
        assert_eq!(
            g,
            vec![
                (
                    Status::Failed,
                    "cannot read log <job dir>/output.log: No such file",
                    2
                ),
                (Status::Failed, "exit code 2", 1),
                (Status::Killed, "timed out after 1s", 1),
                (Status::Skipped, "dependency failed: build", 3),
            ]
        );
    }

    #[test]
    fn what_the_summary_keeps_is_bounded() {
        let mut p = Progress::new(JobLines::NotPassed, false, 100);
        p.apply(&started(&[]));
        let n = MAX_GROUPS + 50;
        for i in 0..n {
            p.apply(&ended(
                &format!("j{i}"),
                Status::Failed,
                &format!("fail pattern matched at line 1: seed {i}"),
                1.0,
                Some(1.0),
            ));
        }
        for i in 0..(NAMES_PER_GROUP + 7) {
            p.apply(&ended(&format!("k{i}"), Status::Skipped, "same", 1.0, None));
        }
        assert_eq!(p.groups.len(), MAX_GROUPS);
        assert_eq!(p.ungrouped.get(Status::Failed), 50);
        assert_eq!(
            p.ungrouped.get(Status::Skipped),
            (NAMES_PER_GROUP + 7) as u64
        );
        assert_eq!(p.ended.len(), TAIL_JOBS);
        assert_eq!(p.ended_not_shown, (n - TAIL_JOBS) as u64);
        assert_eq!(p.slowest.0.len(), TOP_JOBS);
    }

    #[test]
    fn names_per_group_are_bounded() {
        let mut p = Progress::new(JobLines::None, false, 100);
        p.apply(&started(&[]));
        for i in 0..(NAMES_PER_GROUP + 7) {
            p.apply(&ended(&format!("k{i}"), Status::Skipped, "same", 1.0, None));
        }
        let g = p.sorted_groups();
        assert_eq!(g[0].count, (NAMES_PER_GROUP + 7) as u64);
        assert_eq!(g[0].names.len(), NAMES_PER_GROUP);
    }

    #[test]
    fn the_slowest_jobs_are_kept_longest_first() {
        let mut p = Progress::new(JobLines::None, false, 100);
        p.apply(&started(&[]));
        for (j, d) in [("a", 3.0), ("b", 9.0), ("c", 1.0), ("d", 7.0), ("e", 5.0)] {
            p.apply(&ended(j, Status::Passed, "", 1.0, Some(d)));
        }
        p.apply(&ended("f", Status::Failed, "x", 1.0, Some(8.0)));
        p.apply(&ended("g", Status::Passed, "", 1.0, Some(0.5)));
        let s: Vec<&str> = p.slowest.0.iter().map(|s| &*s.1).collect();
        assert_eq!(s, vec!["b", "f", "d", "e", "a"]);
    }

    #[test]
    fn the_top_jobs_by_cpu_and_memory_are_kept_largest_first() {
        let mut p = Progress::new(JobLines::None, false, 100);
        p.apply(&started(&[]));
        let usage = [
            ("a", Some(4.0), Some(100.0)),
            ("b", Some(1.0), None),
            ("c", None, Some(900.0)),
            ("d", Some(9.0), Some(50.0)),
            ("e", Some(2.0), Some(70.0)),
            ("f", Some(7.0), Some(10.0)),
            ("g", Some(3.0), Some(800.0)),
            ("h", Some(f64::NAN), Some(20.0)),
        ];
        for (job, cpu_s, max_rss_mb) in usage {
            let RunEvent::JobStatus(mut e) = ended(job, Status::Failed, "x", 1.0, Some(1.0)) else {
                unreachable!()
            };
            e.cpu_s = cpu_s;
            e.max_rss_mb = max_rss_mb;
            p.apply(&RunEvent::JobStatus(e));
        }
        let names = |t: &Top| t.0.iter().map(|s| s.1.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&p.most_cpu), ["d", "f", "a", "g", "e"]);
        assert_eq!(names(&p.most_memory), ["c", "g", "a", "e", "d"]);
    }

    #[test]
    fn interactive_jobs_are_tracked_while_they_run() {
        let mut p = Progress::new(JobLines::Failures, true, 80);
        p.apply(&started(&["ask"]));
        let RunEvent::JobStatus(mut e) = status("ask", Status::Queued, Status::Running, 1.0) else {
            unreachable!()
        };
        e.interactive = true;
        p.apply(&RunEvent::JobStatus(e.clone()));
        assert!(p.interactive_running());
        e.old = Status::Running;
        e.new = Status::Passed;
        p.apply(&RunEvent::JobStatus(e));
        assert!(!p.interactive_running());
    }

    #[test]
    fn reasons_are_cut_and_kept_on_one_line() {
        let long = format!("fail pattern matched at line 9: {}", "z".repeat(65_536));
        let r = group_reason(&long, "/runs/r1/jobs/");
        assert_eq!(format::width(&r), REASON_WIDTH);
        assert!(r.ends_with('…'));
        assert_eq!(group_reason("a\nb", "/x/jobs/"), "a?b");
        assert_eq!(
            group_reason("/x/jobs/a_b/o.log and /x/jobs/c/o.log", "/x/jobs/"),
            "<job dir>/o.log and <job dir>/o.log"
        );
    }
}
