//! The engine's policy as a state machine: what to submit next, what a snapshot means for
//! each job, what to cancel, how shutdown goes. No threads, no commands, no sleeping: the
//! caller passes the time in and runs the commands ([`super::run`]), so every rule here is
//! tested on a [`super::ManualClock`].
//!
//! Every job lives in `Core::jobs` until its one FINISHED or LOST event; the event is made as
//! the entry is removed, so no job can end twice.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use super::{
    config::EngineConfig,
    dialect::{
        Dialect, Job, JobContext, JobKey, Judgement, Lookup, NativeStatus, Scope, Source, Usage,
        Verdict,
    },
};

/// The longest wait between two retries of a failed command.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first wait before retrying a failed submission or cancel.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// `base`, doubled per earlier failure, at most [`MAX_BACKOFF`].
pub(crate) fn backoff(failures: u32, base: Duration) -> Duration {
    base.saturating_mul(1 << failures.min(6)).min(MAX_BACKOFF)
}

/// What the engine tells the host about a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The scheduler runs it.
    Started {
        /// The native id.
        native_id: String,
    },
    /// It ended.
    Finished {
        /// How.
        verdict: Verdict,
        /// The native id, if it was submitted.
        native_id: Option<String>,
        /// Its resource usage, when the scheduler reported it.
        usage: Option<Usage>,
    },
    /// Its fate cannot be known.
    Lost {
        /// Why.
        reason: String,
        /// The native id, if it was submitted.
        native_id: Option<String>,
    },
}

/// One event for the host.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineEvent {
    /// The job.
    pub job: JobKey,
    /// What happened.
    pub update: Update,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// In the submit queue.
    Waiting,
    /// Taken by a submit worker (its command may not have started yet).
    Submitting,
    /// The scheduler knows it.
    Submitted { native_id: String, at: Instant },
}

/// A transiently failed submission, waiting for its next try.
#[derive(Debug, Clone)]
struct Retry {
    first_failure: Instant,
    failures: u32,
    not_before: Instant,
}

#[derive(Debug)]
struct Tracked {
    job: Job,
    /// The scheduler job name (the sanitized run tag).
    name: String,
    /// `Dialect::shape`, for grouping arrays.
    shape: String,
    phase: Phase,
    kill_requested: bool,
    started_reported: bool,
    retry: Option<Retry>,
    /// Missing from the snapshot (or in an unknown state) since then.
    missing_since: Option<Instant>,
    /// Pending for a reason that means it will never start, since then.
    stuck_since: Option<Instant>,
    /// The engine cancelled it because it could never start: this is its failure.
    doomed: Option<String>,
    /// Ended, and waiting for its final record, since then.
    awaiting_since: Option<Instant>,
    /// The last snapshot showed it suspended.
    suspended: bool,
    /// Re-attached (an earlier host submitted it): it may have ended while no host watched,
    /// so missing from the snapshot it is looked up at once, with no submit grace.
    adopted: bool,
}

impl Tracked {
    fn new(shape: String, job: Job, name: String, phase: Phase, adopted: bool) -> Tracked {
        Tracked {
            job,
            name,
            shape,
            phase,
            kill_requested: false,
            started_reported: false,
            retry: None,
            missing_since: None,
            stuck_since: None,
            doomed: None,
            awaiting_since: None,
            suspended: false,
            adopted,
        }
    }

    fn native_id(&self) -> Option<&str> {
        match &self.phase {
            Phase::Submitted { native_id, .. } => Some(native_id),
            _ => None,
        }
    }
}

/// The engine's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    Open,
    /// `shutdown` started: no new jobs, no retries.
    Closing,
    /// The monitor and canceller must exit.
    Stopped,
}

/// A unit a submit worker took.
#[derive(Debug)]
pub(crate) struct TakenUnit {
    pub keys: Vec<JobKey>,
    pub jobs: Vec<Job>,
    pub name: String,
    /// When its command may start (the `submit_rate` slot reserved for it).
    pub start_at: Instant,
}

/// What a worker should do next.
#[derive(Debug)]
pub(crate) enum Next<T> {
    Work(T),
    WaitUntil(Instant),
    /// Nothing to do until something changes.
    Idle,
    Exit,
}

/// How a submission failed, as the engine classified it.
#[derive(Debug, Clone)]
pub(crate) struct SubmitFailure {
    pub transient: bool,
    pub message: String,
    /// The command hung or died: the scheduler may have taken the job anyway.
    pub ambiguous: bool,
}

/// Counters for `stats()`.
#[derive(Debug, Default, Clone)]
pub(crate) struct PolicyCounts {
    pub units_submitted: u64,
    pub arrays_submitted: u64,
    pub submit_retries: u64,
    pub status_queries: u64,
    pub record_queries: u64,
    pub query_failures: u64,
    pub cancel_calls: u64,
    pub lost: u64,
}

pub(crate) struct Core {
    pub cfg: EngineConfig,
    created: Instant,
    jobs: HashMap<JobKey, Tracked>,
    by_native: HashMap<String, JobKey>,
    /// Waiting jobs in order; may hold keys of jobs that left the queue since (skipped).
    queue: VecDeque<JobKey>,
    cancel_queue: VecDeque<String>,
    cancel_failures: u32,
    cancel_not_before: Instant,
    names: BTreeSet<String>,
    next_submit_slot: Instant,
    next_poll: Instant,
    poll_failures: u32,
    units_in_flight: usize,
    /// A submission hung or died: shutdown must cancel the run's jobs by name.
    maybe_orphans: bool,
    pub lifecycle: Lifecycle,
    pub counts: PolicyCounts,
    /// Bumped by every change a waiting thread may care about (see `run::Shared::changed`).
    pub generation: u64,
}

/// The scheduler job name for a run tag: schedulers do not escape names in their output, so
/// keep to characters that cannot break a delimited format.
pub fn job_name(run_tag: &str) -> String {
    let s: String = run_tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "flowrun".into()
    } else {
        s
    }
}

impl Core {
    pub fn new(cfg: EngineConfig, now: Instant) -> Core {
        Core {
            cfg,
            created: now,
            jobs: HashMap::new(),
            by_native: HashMap::new(),
            queue: VecDeque::new(),
            cancel_queue: VecDeque::new(),
            cancel_failures: 0,
            cancel_not_before: now,
            names: BTreeSet::new(),
            next_submit_slot: now,
            next_poll: now,
            poll_failures: 0,
            units_in_flight: 0,
            maybe_orphans: false,
            lifecycle: Lifecycle::Open,
            counts: PolicyCounts::default(),
            generation: 0,
        }
    }

    /// Whether no job is tracked any more.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The number of tracked jobs.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    fn event(job: JobKey, update: Update) -> EngineEvent {
        EngineEvent { job, update }
    }

    /// Removes a job and makes its end (preceded by STARTED when it evidently ran unseen).
    fn finish(
        &mut self,
        key: JobKey,
        mut verdict: Verdict,
        usage: Option<Usage>,
        out: &mut Vec<EngineEvent>,
    ) {
        let Some(job) = self.jobs.remove(&key) else {
            return;
        };
        let native_id = job.native_id().map(str::to_string);
        if let Some(n) = &native_id {
            self.by_native.remove(n);
        }
        if let Some(reason) = job.doomed {
            // We cancelled it because it could never start: that, not the cancel, is its end
            // (unless flowrun was asked to kill it meanwhile).
            if !verdict.ran() && !job.kill_requested {
                verdict = Verdict::Failed {
                    reason,
                    exit_code: None,
                    ran: false,
                };
            }
        }
        if verdict.ran() && !job.started_reported {
            if let Some(n) = &native_id {
                out.push(Self::event(
                    key,
                    Update::Started {
                        native_id: n.clone(),
                    },
                ));
            }
        }
        out.push(Self::event(
            key,
            Update::Finished {
                verdict,
                native_id,
                usage,
            },
        ));
    }

    fn lose(&mut self, key: JobKey, reason: String, out: &mut Vec<EngineEvent>) {
        let Some(job) = self.jobs.remove(&key) else {
            return;
        };
        let native_id = job.native_id().map(str::to_string);
        if let Some(n) = &native_id {
            self.by_native.remove(n);
        }
        self.counts.lost += 1;
        out.push(Self::event(key, Update::Lost { reason, native_id }));
    }

    // -----------------------------------------------------------------------------------------
    // Accepting and killing
    // -----------------------------------------------------------------------------------------

    /// Whether a new job can be taken (submitted or re-attached) now.
    fn can_take<D: Dialect>(&self, dialect: &D, key: JobKey) -> Result<(), String> {
        if self.lifecycle != Lifecycle::Open {
            return Err(format!(
                "the {} backend is shutting down",
                dialect.scheduler()
            ));
        }
        if self.jobs.contains_key(&key) {
            return Err(format!("job id {} was already submitted", key.0));
        }
        Ok(())
    }

    /// Takes jobs into the submit queue; an error is the reason the job is rejected.
    pub fn accept<D: Dialect>(&mut self, dialect: &D, jobs: Vec<Job>) -> Vec<Result<(), String>> {
        jobs.into_iter()
            .map(|job| {
                self.can_take(dialect, job.key)?;
                if let Some((bad, _)) = job
                    .env
                    .iter()
                    .find(|(k, _)| !super::script::valid_env_name(k))
                {
                    return Err(format!(
                        "environment variable name {bad:?} cannot be exported by a batch script"
                    ));
                }
                let name = job_name(&job.run_tag);
                self.names.insert(name.clone());
                let key = job.key;
                self.jobs.insert(
                    key,
                    Tracked::new(dialect.shape(&job), job, name, Phase::Waiting, false),
                );
                self.queue.push_back(key);
                Ok(())
            })
            .collect()
    }

    /// Takes over jobs an earlier host of the run submitted, each with its native id, as
    /// submitted: no script, no submission; the next snapshot (and, for a job that ended while
    /// no host watched, the final records) tells how it is. An error is the reason the job
    /// cannot be re-attached (the host then submits it afresh).
    pub fn adopt<D: Dialect>(
        &mut self,
        dialect: &D,
        jobs: Vec<(Job, String)>,
        now: Instant,
    ) -> Vec<Result<(), String>> {
        jobs.into_iter()
            .map(|(job, native_id)| {
                self.can_take(dialect, job.key)?;
                if native_id.is_empty() || self.by_native.contains_key(&native_id) {
                    return Err(format!(
                        "native id {native_id:?} is empty or already tracked"
                    ));
                }
                let name = job_name(&job.run_tag);
                self.names.insert(name.clone());
                let key = job.key;
                self.by_native.insert(native_id.clone(), key);
                self.jobs.insert(
                    key,
                    Tracked::new(
                        dialect.shape(&job),
                        job,
                        name,
                        Phase::Submitted { native_id, at: now },
                        true,
                    ),
                );
                // The next poll looks at it without waiting a whole interval.
                self.next_poll = self.next_poll.min(now);
                Ok(())
            })
            .collect()
    }

    /// A kill: a waiting job ends at once; a submitted one is cancelled; one whose submission
    /// is in flight is cancelled as soon as its id is known.
    pub fn kill(&mut self, keys: &[JobKey]) -> Vec<EngineEvent> {
        let mut out = Vec::new();
        for key in keys {
            let Some(job) = self.jobs.get_mut(key) else {
                continue;
            };
            if job.kill_requested {
                continue;
            }
            job.kill_requested = true;
            match job.phase.clone() {
                Phase::Waiting => self.finish(*key, Verdict::Killed, None, &mut out),
                Phase::Submitting => {}
                Phase::Submitted { native_id, .. } => self.cancel_queue.push_back(native_id),
            }
        }
        out
    }

    // -----------------------------------------------------------------------------------------
    // Submission
    // -----------------------------------------------------------------------------------------

    /// The next unit for a submit worker: the first ready job, with every ready job of the same
    /// shape when arrays are on and there are enough of them. Arrays never wait for more jobs.
    pub fn take_unit(&mut self, now: Instant, arrays_supported: bool) -> Next<TakenUnit> {
        if self.lifecycle != Lifecycle::Open {
            return Next::Exit;
        }
        // Drop keys of jobs that left the queue (killed) from the front.
        while let Some(front) = self.queue.front() {
            if self
                .jobs
                .get(front)
                .is_some_and(|j| j.phase == Phase::Waiting)
            {
                break;
            }
            self.queue.pop_front();
        }
        let ready = |j: &Tracked| {
            j.phase == Phase::Waiting && j.retry.as_ref().is_none_or(|r| r.not_before <= now)
        };
        let mut first = None;
        let mut earliest_retry: Option<Instant> = None;
        for (i, key) in self.queue.iter().enumerate() {
            let Some(job) = self.jobs.get(key) else {
                continue;
            };
            if ready(job) {
                first = Some((i, *key));
                break;
            }
            if let (Phase::Waiting, Some(r)) = (&job.phase, &job.retry) {
                earliest_retry = Some(earliest_retry.map_or(r.not_before, |t| t.min(r.not_before)));
            }
        }
        let Some((first_index, first)) = first else {
            return earliest_retry.map_or(Next::Idle, Next::WaitUntil);
        };
        let mut keys = vec![first];
        if self.cfg.arrays && arrays_supported {
            let lead = &self.jobs[&first];
            let same: Vec<JobKey> = self
                .queue
                .iter()
                .skip(first_index + 1)
                .copied()
                .filter(|k| {
                    self.jobs
                        .get(k)
                        .is_some_and(|j| ready(j) && j.shape == lead.shape && j.name == lead.name)
                })
                .take(self.cfg.array_max_size - 1)
                .collect();
            if same.len() + 1 >= self.cfg.array_min_size {
                keys.extend(same);
            }
        }
        if keys.len() == 1 {
            // The common case, usually at the front: no scan of the whole queue per job.
            self.queue.remove(first_index);
        } else {
            let taken: HashSet<JobKey> = keys.iter().copied().collect();
            self.queue.retain(|k| !taken.contains(k));
        }
        let mut jobs = Vec::with_capacity(keys.len());
        for key in &keys {
            let job = self.jobs.get_mut(key).expect("queued jobs are tracked");
            job.phase = Phase::Submitting;
            jobs.push(job.job.clone());
        }
        let name = self.jobs[&first].name.clone();
        let start_at = self.next_submit_slot.max(now);
        self.next_submit_slot = start_at + self.cfg.submit_spacing;
        self.units_in_flight += 1;
        Next::Work(TakenUnit {
            keys,
            jobs,
            name,
            start_at,
        })
    }

    /// Shutdown started before the unit's command did: its jobs end killed, never submitted.
    pub fn drop_unit(&mut self, unit: &TakenUnit, out: &mut Vec<EngineEvent>) {
        self.units_in_flight -= 1;
        for key in &unit.keys {
            self.finish(*key, Verdict::Killed, None, out);
        }
    }

    /// Jobs of a unit that the engine could not prepare (cwd missing, script not writable)
    /// fail with the reason, and leave the unit.
    pub fn unprepared(&mut self, key: JobKey, reason: String, out: &mut Vec<EngineEvent>) {
        let killed = self.jobs.get(&key).is_some_and(|j| j.kill_requested);
        let verdict = if killed {
            Verdict::Killed
        } else {
            Verdict::Failed {
                reason,
                exit_code: None,
                ran: false,
            }
        };
        self.finish(key, verdict, None, out);
    }

    /// The unit is settled with no command run (every job failed to prepare).
    pub fn unit_abandoned(&mut self) {
        self.units_in_flight -= 1;
    }

    /// The scheduler took the unit: record the ids, and cancel the jobs killed meanwhile.
    ///
    /// An id that another job of the run already has (`scheduler` printed one id for every
    /// submission, or the backend read a number that is not the id) fails the job at once: two
    /// jobs under one id would take each other's states and cancels, and both would end lost
    /// for a reason that says nothing of the cause. It is not cancelled by that id (that would
    /// cancel the other job); the shutdown's sweep by name covers it.
    pub fn unit_submitted(
        &mut self,
        scheduler: &str,
        keys: &[JobKey],
        ids: Vec<String>,
        array: bool,
        now: Instant,
    ) -> Vec<EngineEvent> {
        self.units_in_flight -= 1;
        self.counts.units_submitted += 1;
        self.counts.arrays_submitted += u64::from(array);
        let mut out = Vec::new();
        for (key, native_id) in keys.iter().zip(ids) {
            if let Some(holder) = self.by_native.get(&native_id).filter(|k| *k != key) {
                let holder = self.jobs.get(holder).map_or("?", |j| j.job.name.as_str());
                let reason = format!(
                    "{scheduler} gave it the job id {native_id}, which job {holder} of this run \
                     already has: check how the backend reads the id (`submit_id`)"
                );
                self.maybe_orphans = true;
                let verdict = match self.jobs.get(key) {
                    Some(job) if job.kill_requested => Verdict::Killed,
                    _ => Verdict::Failed {
                        reason,
                        exit_code: None,
                        ran: false,
                    },
                };
                // Still `Submitting`, with no id of its own: `finish` leaves the holder's be.
                self.finish(*key, verdict, None, &mut out);
                continue;
            }
            let Some(job) = self.jobs.get_mut(key) else {
                // Should not happen (a submitting job only ends through its unit), but never
                // leave a job running unseen.
                self.cancel_queue.push_back(native_id);
                continue;
            };
            job.phase = Phase::Submitted {
                native_id: native_id.clone(),
                at: now,
            };
            job.retry = None;
            if job.kill_requested {
                self.cancel_queue.push_back(native_id.clone());
            }
            self.by_native.insert(native_id, *key);
        }
        out
    }

    /// The unit's submission failed: retry it later if the failure is transient and the jobs
    /// have not been retried for `submit_retry_for`, else fail the jobs.
    pub fn unit_failed(
        &mut self,
        keys: &[JobKey],
        failure: &SubmitFailure,
        now: Instant,
    ) -> Vec<EngineEvent> {
        self.units_in_flight -= 1;
        self.maybe_orphans |= failure.ambiguous;
        let mut out = Vec::new();
        let mut requeue = Vec::new();
        for key in keys {
            let Some(job) = self.jobs.get_mut(key) else {
                continue;
            };
            if job.kill_requested {
                self.finish(*key, Verdict::Killed, None, &mut out);
                continue;
            }
            let first_failure = job.retry.as_ref().map_or(now, |r| r.first_failure);
            let retry = failure.transient
                && self.lifecycle == Lifecycle::Open
                && now.duration_since(first_failure) < self.cfg.submit_retry_for;
            if retry {
                let failures = job.retry.as_ref().map_or(0, |r| r.failures);
                job.retry = Some(Retry {
                    first_failure,
                    failures: failures + 1,
                    not_before: now + backoff(failures, FIRST_RETRY),
                });
                job.phase = Phase::Waiting;
                requeue.push(*key);
            } else {
                self.finish(
                    *key,
                    Verdict::Failed {
                        reason: failure.message.clone(),
                        exit_code: None,
                        ran: false,
                    },
                    None,
                    &mut out,
                );
            }
        }
        if !requeue.is_empty() {
            self.counts.submit_retries += 1;
            tracing::warn!(
                "submission of {} job(s) failed ({}); retrying",
                requeue.len(),
                failure.message
            );
        }
        for key in requeue.into_iter().rev() {
            self.queue.push_front(key);
        }
        out
    }

    // -----------------------------------------------------------------------------------------
    // Status
    // -----------------------------------------------------------------------------------------

    /// What the query covers now.
    pub fn scope(&self, now: Instant) -> Scope {
        Scope {
            names: self.names.iter().cloned().collect(),
            ids: self
                .jobs
                .values()
                .filter_map(|j| j.native_id().map(str::to_string))
                .collect(),
            age: now.duration_since(self.created),
        }
    }

    /// Whether a status snapshot is due: the scope to query, or when to look again.
    pub fn poll_due(&mut self, now: Instant) -> Next<Scope> {
        if self.lifecycle == Lifecycle::Stopped {
            return Next::Exit;
        }
        if now < self.next_poll {
            return Next::WaitUntil(self.next_poll);
        }
        if !self
            .jobs
            .values()
            .any(|j| matches!(j.phase, Phase::Submitted { .. }))
        {
            // Nothing the scheduler knows of: look again one interval on.
            self.next_poll = now + self.cfg.poll_interval;
            return Next::WaitUntil(self.next_poll);
        }
        self.counts.status_queries += 1;
        Next::Work(self.scope(now))
    }

    /// The snapshot query failed: no job changes; try again after a backoff.
    pub fn poll_failed(&mut self, now: Instant) {
        self.counts.query_failures += 1;
        let wait = backoff(self.poll_failures, self.cfg.poll_interval).max(self.cfg.poll_interval);
        self.poll_failures += 1;
        self.next_poll = now + wait;
        tracing::warn!(
            "status query failed; retrying in {:.1}s",
            wait.as_secs_f64()
        );
    }

    /// Applies a snapshot taken by a query that began at `began`. Returns the events and the
    /// native ids to look up in the final records.
    pub fn apply_snapshot<D: Dialect>(
        &mut self,
        dialect: &D,
        rows: Vec<NativeStatus>,
        began: Instant,
        now: Instant,
    ) -> (Vec<EngineEvent>, Vec<String>) {
        if self.poll_failures > 0 {
            tracing::info!("{} status queries work again", dialect.scheduler());
        }
        self.poll_failures = 0;
        self.next_poll = began + self.cfg.poll_interval;
        let rows: HashMap<String, NativeStatus> =
            rows.into_iter().map(|r| (r.id.clone(), r)).collect();
        let cfg = self.cfg.clone();
        let mut out = Vec::new();
        let mut lookups = Vec::new();
        let keys: Vec<JobKey> = self.jobs.keys().copied().collect();
        for key in keys {
            let job = self.jobs.get_mut(&key).expect("listed above");
            let Phase::Submitted { native_id, at } = job.phase.clone() else {
                continue;
            };
            if at > began {
                continue; // submitted after the query started: not expected in it
            }
            let Some(row) = rows.get(&native_id) else {
                // Just submitted: not visible yet is normal. A job flowrun killed is looked up
                // at once (a scheduler may drop a cancelled pending job without a trace, and
                // its cancel said so).
                if now.duration_since(at) < cfg.submit_grace && !job.kill_requested && !job.adopted
                {
                    continue;
                }
                let since = *job.missing_since.get_or_insert(now);
                if now.duration_since(since) > cfg.lost_after {
                    let reason = dialect.vanished_reason(&native_id, cfg.lost_after);
                    self.lose(key, reason, &mut out);
                } else if dialect.looks_up(Lookup::Vanished) {
                    lookups.push(native_id);
                }
                continue;
            };
            let judgement = dialect.judge(
                row,
                &JobContext {
                    job: &job.job,
                    kill_requested: job.kill_requested,
                    started: job.started_reported,
                    source: Source::Snapshot,
                },
            );
            if !matches!(judgement, Judgement::Unknown(_)) {
                job.missing_since = None;
            }
            if !matches!(judgement, Judgement::Stuck(_)) {
                job.stuck_since = None;
            }
            if !matches!(
                judgement,
                Judgement::Final(_) | Judgement::FinalNeedsRecord { .. }
            ) {
                job.awaiting_since = None;
            }
            // A suspension is worth a word: the job holds its slot and its time limit may run.
            match (&judgement, job.suspended) {
                (Judgement::Suspended(reason), false) => tracing::warn!(
                    "{} job {native_id} ({}) is suspended: {reason}",
                    dialect.scheduler(),
                    job.job.name
                ),
                (Judgement::Suspended(_), true) => {}
                (_, true) => tracing::info!(
                    "{} job {native_id} ({}) is no longer suspended",
                    dialect.scheduler(),
                    job.job.name
                ),
                (_, false) => {}
            }
            job.suspended = matches!(judgement, Judgement::Suspended(_));
            match judgement {
                Judgement::Queued => {}
                Judgement::Stuck(reason) => {
                    let since = *job.stuck_since.get_or_insert(now);
                    if now.duration_since(since) > cfg.lost_after
                        && job.doomed.is_none()
                        && !job.kill_requested
                    {
                        job.doomed = Some(reason);
                        self.cancel_queue.push_back(native_id);
                    }
                }
                Judgement::Running | Judgement::Suspended(_) => {
                    if !job.started_reported {
                        job.started_reported = true;
                        out.push(Self::event(key, Update::Started { native_id }));
                    }
                }
                Judgement::Unknown(reason) => {
                    let since = *job.missing_since.get_or_insert(now);
                    if now.duration_since(since) > cfg.lost_after {
                        self.lose(key, reason, &mut out);
                    } else if dialect.looks_up(Lookup::Vanished) {
                        lookups.push(native_id);
                    }
                }
                Judgement::Final(verdict) => {
                    let wants_record =
                        !cfg.final_record_wait.is_zero() && dialect.looks_up(Lookup::Usage);
                    let since = *job.awaiting_since.get_or_insert(now);
                    if wants_record && now.duration_since(since) < cfg.final_record_wait {
                        lookups.push(native_id);
                    } else {
                        self.finish(key, verdict, None, &mut out);
                    }
                }
                Judgement::FinalNeedsRecord { fallback } => {
                    let since = *job.awaiting_since.get_or_insert(now);
                    if now.duration_since(since) > cfg.lost_after
                        || !dialect.looks_up(Lookup::Verdict)
                    {
                        self.finish(key, fallback, None, &mut out);
                    } else {
                        lookups.push(native_id);
                    }
                }
            }
        }
        (out, lookups)
    }

    /// The jobs of `native_ids` that are still tracked, for the dialect to read their files.
    pub fn jobs_of(&self, native_ids: &[String]) -> Vec<(String, Job)> {
        native_ids
            .iter()
            .filter_map(|n| {
                let key = self.by_native.get(n)?;
                Some((n.clone(), self.jobs.get(key)?.job.clone()))
            })
            .collect()
    }

    /// Applies final records for `wanted` ids. Rows that are not final (accounting lags) or
    /// not wanted change nothing.
    pub fn apply_records<D: Dialect>(
        &mut self,
        dialect: &D,
        rows: Vec<NativeStatus>,
        wanted: &[String],
    ) -> Vec<EngineEvent> {
        let wanted: HashSet<&String> = wanted.iter().collect();
        let mut out = Vec::new();
        for row in rows {
            if !wanted.contains(&row.id) {
                continue;
            }
            let Some(&key) = self.by_native.get(&row.id) else {
                continue;
            };
            let job = &self.jobs[&key];
            let judgement = dialect.judge(
                &row,
                &JobContext {
                    job: &job.job,
                    kill_requested: job.kill_requested,
                    started: job.started_reported,
                    source: Source::Record,
                },
            );
            match judgement {
                Judgement::Final(verdict) | Judgement::FinalNeedsRecord { fallback: verdict } => {
                    self.finish(key, verdict, row.usage, &mut out)
                }
                _ => {}
            }
        }
        out
    }

    // -----------------------------------------------------------------------------------------
    // Cancellation
    // -----------------------------------------------------------------------------------------

    /// The next batch of native ids to cancel.
    pub fn take_cancel_batch(&mut self, now: Instant) -> Next<Vec<String>> {
        if self.cancel_queue.is_empty() {
            return if self.lifecycle == Lifecycle::Stopped {
                Next::Exit
            } else {
                Next::Idle
            };
        }
        if self.lifecycle == Lifecycle::Stopped {
            return Next::Exit;
        }
        if now < self.cancel_not_before {
            return Next::WaitUntil(self.cancel_not_before);
        }
        let n = self.cancel_queue.len().min(self.cfg.cancel_batch);
        let mut batch: Vec<String> = self.cancel_queue.drain(..n).collect();
        batch.sort();
        batch.dedup();
        self.counts.cancel_calls += 1;
        Next::Work(batch)
    }

    /// Native ids to cancel that no job is tracked under (a submission went wrong).
    pub fn cancel_ids(&mut self, ids: Vec<String>) {
        self.cancel_queue.extend(ids);
    }

    /// The cancel call went through.
    pub fn cancel_done(&mut self) {
        self.cancel_failures = 0;
    }

    /// The cancel call failed: retry the ids still tracked, after a backoff.
    pub fn cancel_failed(&mut self, batch: Vec<String>, now: Instant) {
        let wait = backoff(self.cancel_failures, FIRST_RETRY);
        self.cancel_failures += 1;
        self.cancel_not_before = now + wait;
        for native in batch.into_iter().rev() {
            if self.by_native.contains_key(&native) {
                self.cancel_queue.push_front(native);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Shutdown
    // -----------------------------------------------------------------------------------------

    /// Starts shutdown: no new jobs; waiting jobs end killed; submitted ones are cancelled;
    /// those in flight are cancelled once their ids are known. Returns whether the safety net
    /// (cancel by name) is needed.
    pub fn begin_shutdown(&mut self) -> (Vec<EngineEvent>, bool) {
        let mut out = Vec::new();
        if self.lifecycle != Lifecycle::Open {
            return (out, false);
        }
        self.lifecycle = Lifecycle::Closing;
        let keys: Vec<JobKey> = self.jobs.keys().copied().collect();
        for key in keys {
            let job = self.jobs.get_mut(&key).expect("listed above");
            job.kill_requested = true;
            match job.phase.clone() {
                Phase::Waiting => self.finish(key, Verdict::Killed, None, &mut out),
                Phase::Submitting => {}
                Phase::Submitted { native_id, .. } => self.cancel_queue.push_back(native_id),
            }
        }
        self.queue.clear();
        let safety_net = !self.jobs.is_empty() || self.maybe_orphans;
        (out, safety_net)
    }

    /// Ends shutdown: what is still tracked is lost (cancelled, but it did not leave the queue
    /// within `shutdown_wait`).
    pub fn end_shutdown<D: Dialect>(&mut self, dialect: &D) -> Vec<EngineEvent> {
        debug_assert_eq!(
            self.units_in_flight, 0,
            "shutdown ends only after every submit worker stopped"
        );
        let mut out = Vec::new();
        let keys: Vec<JobKey> = self.jobs.keys().copied().collect();
        for key in keys {
            let native = self.jobs[&key]
                .native_id()
                .unwrap_or("(no id yet)")
                .to_string();
            let reason = dialect.leftover_reason(&native, self.cfg.shutdown_wait);
            self.lose(key, reason, &mut out);
        }
        self.lifecycle = Lifecycle::Stopped;
        out
    }
}
