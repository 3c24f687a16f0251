//! What the run remembers of each job, and [`Ledger::transition`]: the one place where every
//! change of a job's status is recorded (times, the observer event, the journal); the
//! facts backends report arrive through the other methods of [`Ledger`], only for inputs the
//! core applied. A [`JobRecord`] is also what the journal's end records hold, so results.json
//! is written from the same records live and after a crash.

use std::{path::PathBuf, sync::Arc};

use crate::{
    backend::{JobEnd, Usage},
    flow::Flow,
    journal::Journal,
    observe::{JobStatusEvent, RunEvent},
    outcome::FailMatch,
    sched::{JobIx, Reason, Status},
};

/// Facts few jobs have, kept apart so that a million-job run stays small.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Extra {
    /// A fail-pattern match.
    pub fail: Option<FailMatch>,
    /// Log files the backend wrote instead of the default one.
    pub logs: Vec<PathBuf>,
    /// The cluster's id of the job.
    pub native_id: Option<Arc<str>>,
    /// What the job used.
    pub usage: Usage,
    /// The backend's detail on the job's end, when it says more than the reason.
    pub detail: Option<String>,
    /// The attempts before the current one, oldest first (a job that was retried).
    pub earlier: Vec<Attempt>,
    /// The verdict is not this run's work but the recorded evidence of the earlier run that
    /// produced it (`--resume`, `--rerun-failed`): that run's directory and tag.
    pub reused_from: Option<Box<str>>,
}

/// An attempt of a job that was followed by another (a retry): how it ended and what was
/// recorded of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// How the attempt ended.
    pub status: Status,
    /// Why it did not pass.
    pub reason: Option<Reason>,
    /// Its times, exit code, log and the rest (its own `earlier` is empty).
    pub record: JobRecord,
}

/// Per-job facts gathered during the run (0 means "never happened" for times, in µs since the
/// epoch).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JobRecord {
    /// Became queued.
    pub queued_at: i64,
    /// Started (the backend's STARTED event, else its submission).
    pub started_at: i64,
    /// Ended (the backend's event, else when the host decided).
    pub finished_at: i64,
    /// The exit code, when the job exited.
    pub exit_code: Option<i32>,
    /// Attempts handed to a backend (the current one's number; 0 = never submitted).
    pub attempt: u32,
    /// Whether the job's directory (and so its log) exists.
    pub has_dir: bool,
    /// Everything else.
    pub extra: Option<Box<Extra>>,
}

impl JobRecord {
    /// Seconds from start to end, when it ran.
    pub fn duration_s(&self) -> Option<f64> {
        (self.started_at > 0 && self.finished_at >= self.started_at)
            .then(|| (self.finished_at - self.started_at) as f64 / 1e6)
    }

    /// The rare facts, created when first needed.
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra_mut()
    }

    /// The attempts before the current one.
    pub fn earlier(&self) -> &[Attempt] {
        self.extra.as_deref().map_or(&[], |x| &x.earlier)
    }

    /// An attempt ended and the job will run again: `ended` (what this record said of it) goes
    /// to the earlier attempts, and the facts of one attempt start afresh. The queue time and
    /// the attempt count stay.
    pub fn begin_next_attempt(&mut self, mut ended: Attempt) {
        if let Some(x) = ended.record.extra.as_deref_mut() {
            x.earlier.clear();
        }
        let earlier = self.extra.take().map(|x| x.earlier).unwrap_or_default();
        self.started_at = 0;
        self.finished_at = 0;
        self.exit_code = None;
        let mut earlier = earlier;
        earlier.push(ended);
        self.extra_mut().earlier = earlier;
    }
}

/// Events held before the loop publishes them (bounded batches: a million jobs becoming ready
/// at once must not become a million events held at once), and the buffer's capacity.
pub const EVENT_BATCH: usize = 4096;

/// A `resources` attribute text and the job shape (cpus, resources) it was built from.
type ResourcesText = (u32, Vec<(u32, u64)>, Arc<str>);

/// Names shared by the events of a run (so that building an event allocates nothing for them).
struct EventNames {
    jobs: Vec<Arc<str>>,
    backends: Vec<Arc<str>>,
    /// The last `resources` text and what it was built from: jobs of a matrix share it.
    resources: Option<ResourcesText>,
}

/// The run's record of its jobs, and the events they produce.
pub struct Ledger {
    /// Per job.
    pub records: Vec<JobRecord>,
    /// Events waiting for the next publish; only built when someone observes.
    pub events: Vec<RunEvent>,
    /// The run's journal, when it keeps one.
    pub journal: Option<Journal>,
    names: Option<EventNames>,
}

impl Ledger {
    /// A ledger of `flow`'s jobs, all Scheduled; `observed` says whether events are built.
    pub fn new(flow: &Flow, observed: bool) -> Self {
        Ledger {
            records: vec![JobRecord::default(); flow.jobs.len()],
            events: Vec::with_capacity(if observed { EVENT_BATCH } else { 0 }),
            journal: None,
            names: observed.then(|| EventNames {
                jobs: flow
                    .jobs
                    .iter()
                    .map(|j| Arc::from(j.name.as_str()))
                    .collect(),
                backends: flow
                    .backends
                    .iter()
                    .map(|b| Arc::from(b.name.as_str()))
                    .collect(),
                resources: None,
            }),
        }
    }

    /// Every job with its backend, as RUN_STARTED lists them, in the events' shared names;
    /// `None` when no one observes.
    pub fn job_list(&self, flow: &Flow) -> Option<Vec<(Arc<str>, Arc<str>)>> {
        let names = self.names.as_ref()?;
        Some(
            names
                .jobs
                .iter()
                .zip(&flow.jobs)
                .map(|(name, def)| (name.clone(), names.backends[def.backend].clone()))
                .collect(),
        )
    }

    /// A job changed status, at `now_us`: the one place every change is recorded.
    /// `log` gives the job's default log path (asked only for observed terminal changes).
    pub fn transition(
        &mut self,
        flow: &Flow,
        job: JobIx,
        (old, new): (Status, Status),
        reason: Option<&Reason>,
        now_us: i64,
        log: impl FnOnce() -> PathBuf,
    ) {
        let j = job as usize;
        let rec = &mut self.records[j];
        match new {
            Status::Queued => {
                if rec.queued_at == 0 {
                    rec.queued_at = now_us;
                }
                // Back from a busy backend: it has not started, and the next offer is the same
                // attempt.
                if old == Status::Running {
                    rec.started_at = 0;
                    rec.attempt = rec.attempt.saturating_sub(1);
                    if let Some(jn) = &mut self.journal {
                        jn.requeued(job);
                    }
                } else if let Some(jn) = &mut self.journal {
                    jn.queued(job, rec.queued_at);
                }
            }
            Status::Running => {
                rec.started_at = now_us;
                rec.attempt += 1;
                if let Some(jn) = &mut self.journal {
                    jn.submitted(job, rec.attempt, now_us);
                }
            }
            s if s.is_terminal() => {
                if rec.finished_at == 0 && rec.started_at > 0 {
                    rec.finished_at = now_us;
                }
                if let Some(jn) = &mut self.journal {
                    jn.ended(job, new, reason, rec);
                }
            }
            _ => {}
        }
        self.push_event(
            flow,
            job,
            (old, new),
            reason,
            now_us,
            new.is_terminal(),
            log,
        );
    }

    /// The observer event of a change of `job`'s status, when someone observes. `ended`: an
    /// attempt ended (a terminal status, or a retry), so the event carries the attempt's facts
    /// (exit code, duration, log, usage, fail line).
    #[allow(clippy::too_many_arguments)]
    fn push_event(
        &mut self,
        flow: &Flow,
        job: JobIx,
        (old, new): (Status, Status),
        reason: Option<&Reason>,
        now_us: i64,
        ended: bool,
        log: impl FnOnce() -> PathBuf,
    ) {
        let Some(names) = &mut self.names else {
            return;
        };
        let j = job as usize;
        let rec = &self.records[j];
        let def = &flow.jobs[j];
        let extra = rec.extra.as_deref().filter(|_| ended);
        let resources = (new == Status::Running).then(|| match &names.resources {
            Some((cpus, res, text)) if *cpus == def.cpus && *res == def.resources => text.clone(),
            _ => {
                let mut text = format!("cpus={}", def.cpus.max(1));
                for &(r, n) in &def.resources {
                    text.push_str(&format!(",{}={n}", flow.resources[r as usize].0));
                }
                let text: Arc<str> = text.into();
                names.resources = Some((def.cpus, def.resources.clone(), text.clone()));
                text
            }
        });
        let fail = extra.and_then(|x| x.fail.as_ref());
        self.events.push(RunEvent::JobStatus(JobStatusEvent {
            time_us: now_us,
            job_ix: job,
            job: names.jobs[j].clone(),
            backend: names.backends[def.backend].clone(),
            attempt: rec.attempt.max(1),
            old,
            new,
            reason: reason.map(|r| r.to_string()).unwrap_or_default(),
            reason_kind: reason.map(Reason::kind),
            exit_code: if ended { rec.exit_code } else { None },
            duration_s: if ended { rec.duration_s() } else { None },
            log: (ended && rec.has_dir).then(|| match extra.and_then(|x| x.logs.first()) {
                Some(first) => first.clone(),
                None => log(),
            }),
            fail_line: fail.map(|f| f.line),
            fail_text: fail.map(|f| f.text.clone()),
            native_id: rec.extra.as_deref().and_then(|x| x.native_id.clone()),
            resources,
            cpu_s: extra.and_then(|x| x.usage.cpu_s),
            max_rss_mb: extra.and_then(|x| x.usage.max_rss_mb),
            detail: extra.and_then(|x| x.detail.clone()),
            interactive: def.interactive,
        }));
    }

    /// The backend started the job at `time_us`.
    pub fn started(&mut self, job: JobIx, time_us: i64, native_id: Option<String>) {
        self.records[job as usize].started_at = time_us;
        if let Some(jn) = &mut self.journal {
            jn.started(job, time_us);
        }
        if let Some(id) = native_id {
            self.native_id(job, id);
        }
    }

    /// The backend named the job `native_id` (at its submission, or when the job was
    /// re-attached): recorded, and journaled so that a later `--resume` can re-attach it.
    pub fn native_id(&mut self, job: JobIx, native_id: String) {
        if let Some(jn) = &mut self.journal {
            jn.native_id(job, &native_id);
        }
        self.records[job as usize].extra().native_id = Some(native_id.into());
    }

    /// The attempt the job is on ended lost for `reason` (nobody can tell how it ended): it
    /// goes to the job's earlier attempts (and the journal), failed; the job's next attempt,
    /// whenever the core starts it, is a new one with its own log.
    pub fn attempt_lost(&mut self, job: JobIx, reason: Reason, now_us: i64) {
        let rec = &mut self.records[job as usize];
        let mut record = rec.clone();
        record.finished_at = now_us;
        let ended = Attempt {
            status: Status::Failed,
            reason: Some(reason),
            record,
        };
        if let Some(jn) = &mut self.journal {
            jn.attempt_ended(job, &ended);
        }
        rec.begin_next_attempt(ended);
    }

    /// `--resume`: the attempt the job was on when the earlier host died cannot be followed
    /// (its backend could not re-attach it), so it ends lost for `reason`, and the job goes on
    /// with the next attempt, on its backend already (the core's `Running`), without an
    /// observer event: for the core and the observers the job has been running all along.
    pub fn attempt_abandoned(&mut self, job: JobIx, reason: Reason, now_us: i64) {
        self.attempt_lost(job, reason, now_us);
        let rec = &mut self.records[job as usize];
        rec.attempt += 1;
        rec.started_at = now_us;
        if let Some(jn) = &mut self.journal {
            jn.submitted(job, rec.attempt, now_us);
        }
    }

    /// An attempt of the job ended with `status` for `reason`, and the core queued the job
    /// for another ([`crate::sched::Action::Retry`]): the attempt goes to the job's earlier
    /// attempts (and the journal), and the next one starts afresh.
    ///
    /// Observers get the change from `Running` back to `Queued` (the one the core's action
    /// stands for), with the failed attempt's reason, number and facts, so that their counts
    /// stay right and the job's next `Running` is a new attempt of the same job.
    pub fn retry(
        &mut self,
        flow: &Flow,
        job: JobIx,
        status: Status,
        reason: Reason,
        now_us: i64,
        log: impl FnOnce(u32) -> PathBuf,
    ) {
        let rec = &mut self.records[job as usize];
        if rec.finished_at == 0 && rec.started_at > 0 {
            rec.finished_at = now_us;
        }
        let attempt = rec.attempt;
        self.push_event(
            flow,
            job,
            (Status::Running, Status::Queued),
            Some(&reason),
            now_us,
            true,
            || log(attempt),
        );
        let rec = &mut self.records[job as usize];
        let mut record = rec.clone();
        if let Some(x) = record.extra.as_deref_mut() {
            x.earlier.clear();
        }
        let ended = Attempt {
            status,
            reason: Some(reason),
            record,
        };
        if let Some(jn) = &mut self.journal {
            jn.attempt_ended(job, &ended);
        }
        rec.begin_next_attempt(ended);
    }

    /// Writes the journal's records so far (one `write`): before every plugin call and after
    /// every batch of events.
    #[inline]
    pub fn flush_journal(&mut self) {
        if let Some(jn) = &mut self.journal {
            jn.flush();
        }
    }

    /// The backend reported the job's end at `time_us`, with what it knows of it.
    pub fn ended(&mut self, job: JobIx, time_us: i64, end: &EndFacts) {
        let rec = &mut self.records[job as usize];
        rec.finished_at = time_us;
        if rec.started_at == 0 {
            rec.started_at = time_us;
        }
        rec.exit_code = end.end.exit_code();
        let detail = match &end.end {
            // The backend's reason is the job's reason already.
            JobEnd::Failed(..) => None,
            _ => Some(end.detail.trim()).filter(|d| !d.is_empty()),
        };
        let has_usage = end.usage != Usage::default();
        if !end.logs.is_empty() || end.native_id.is_some() || has_usage || detail.is_some() {
            let x = rec.extra();
            x.logs = end.logs.clone();
            if let Some(id) = &end.native_id {
                x.native_id = Some(id.as_str().into());
            }
            x.usage = end.usage.clone();
            x.detail = detail.map(str::to_string);
        }
    }

    /// The backend lost the job at `time_us`.
    pub fn lost(&mut self, job: JobIx, time_us: i64) {
        self.records[job as usize].finished_at = time_us;
    }

    /// The backend refused the job at `time_us`: it never started.
    pub fn rejected(&mut self, job: JobIx, time_us: i64) {
        let rec = &mut self.records[job as usize];
        rec.started_at = 0;
        rec.finished_at = time_us;
    }

    /// The log's verdict named a failing line.
    pub fn fail_matched(&mut self, job: JobIx, fail: FailMatch) {
        self.records[job as usize].extra().fail = Some(fail);
    }
}

/// What a backend's FINISHED event says of the job.
#[derive(Debug, Clone)]
pub struct EndFacts {
    /// How it ended.
    pub end: JobEnd,
    /// The backend's detail.
    pub detail: String,
    /// Log files written instead of the default one.
    pub logs: Vec<PathBuf>,
    /// The cluster's id.
    pub native_id: Option<String>,
    /// What it used.
    pub usage: Usage,
}
