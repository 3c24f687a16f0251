//! The drive loop: waits for backend events, log verdicts, signals and the core's deadlines,
//! feeds each to the core as an input, and carries out the core's actions. It decides
//! nothing: whether an event counts, what a job's status and reason are, when the run is over
//! are the core's answers; how a job's end is judged is [`crate::outcome::judge`]'s.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Instant};

use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender},
};

use super::{
    driver::BackendHandle,
    outdir::job_dir_name,
    records::{EndFacts, Ledger, EVENT_BATCH},
    results::now_us,
};
use crate::{
    backend::{BackendEvent, EventSender, JobDirOwner, JobRequest, RunContext, SubmitReply},
    flow::{Command, Flow},
    observe::{ObserverHub, Phases, RunEvent},
    outcome::{judge, needs_log_scan, scan_logs, Judgement, SCAN_TIME_LIMIT},
    sched::{Action, Input, Interrupt, JobIx, Reason, Scheduler, SchedulerApi, Status},
};

/// Messages into the loop.
pub enum LoopMsg {
    /// A backend's event, with the time it was sent (µs since the epoch): every job's times
    /// are its own, not those of the batch the loop read it in.
    Event(BackendEvent, i64),
    /// The verdict on a job whose log was scanned.
    Judged(JobIx, Judgement),
}

/// The loop's end of every backend's event sink.
pub struct LoopSender(pub UnboundedSender<LoopMsg>);

impl EventSender for LoopSender {
    fn send(&self, event: BackendEvent) {
        let _ = self.0.send(LoopMsg::Event(event, now_us()));
    }
}

/// Where interrupts come from: the process's signals, or a test.
pub enum Signals {
    /// SIGINT, SIGTERM and SIGHUP of this process.
    Os {
        /// SIGINT.
        int: Signal,
        /// SIGTERM.
        term: Signal,
        /// SIGHUP.
        hup: Signal,
    },
    /// Interrupts sent by a test.
    Channel(UnboundedReceiver<Interrupt>),
}

impl Signals {
    /// Hooks the process's signals (inside a tokio runtime). From now on SIGINT, SIGTERM and
    /// SIGHUP no longer end the process by themselves.
    pub fn os() -> std::io::Result<Self> {
        Ok(Signals::Os {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> Interrupt {
        match self {
            Signals::Os { int, term, hup } => {
                let sig = tokio::select! {
                    _ = int.recv() => Interrupt::Sigint,
                    _ = term.recv() => Interrupt::Sigterm,
                    _ = hup.recv() => Interrupt::Sighup,
                };
                // So that the supervising parent does not forward a copy of a signal this
                // process got itself (one sent to the whole process group).
                crate::supervise::report_signal(sig.number());
                sig
            }
            Signals::Channel(rx) => match rx.recv().await {
                Some(sig) => sig,
                None => std::future::pending().await,
            },
        }
    }
}

/// How the drive loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveEnd {
    /// Every job is terminal.
    Done,
    /// A second signal: every job was ended at once.
    Abandoned,
}

/// The run's state while it is driven.
pub struct RunState {
    /// The flow.
    pub flow: Flow,
    /// The run's directory and tag.
    pub ctx: RunContext,
    /// The core.
    pub sched: Scheduler,
    /// Per backend instance.
    pub backends: Vec<Option<BackendHandle>>,
    /// The observers (the built-in status display among them).
    pub hub: ObserverHub,
    /// What is recorded of every job.
    pub ledger: Ledger,
    /// The phases before the run (for RUN_STARTED).
    pub phases: Phases,
    /// When the run started, µs since the epoch.
    pub started_us: i64,
    /// How many times the run was resumed before this host continued it.
    pub resumes: u32,
    /// `--resume`: jobs an earlier host left on a cluster, to re-attach by native id when the
    /// core hands them to their backend ([`crate::run::resume::reattachable`]).
    pub reattach: HashMap<JobIx, Arc<str>>,
    scans: Option<UnboundedSender<LoopMsg>>,
    abandoned: bool,
    /// The time, read once per batch of messages rather than per message: a million-job run
    /// would otherwise spend a noticeable share of its time reading the clock.
    clock: (Instant, i64),
}

impl RunState {
    /// A run of `flow` over the created instances, before it starts.
    pub fn new(
        flow: Flow,
        ctx: RunContext,
        sched: Scheduler,
        backends: Vec<Option<BackendHandle>>,
        hub: ObserverHub,
        phases: Phases,
    ) -> Self {
        let ledger = Ledger::new(&flow, !hub.is_empty());
        RunState {
            flow,
            ctx,
            sched,
            backends,
            hub,
            ledger,
            phases,
            started_us: now_us(),
            resumes: 0,
            reattach: HashMap::new(),
            scans: None,
            abandoned: false,
            clock: (Instant::now(), now_us()),
        }
    }

    /// The directory of a job.
    pub fn job_dir(&self, job: usize) -> PathBuf {
        job_dir(&self.ctx, &self.flow.jobs[job].name)
    }

    fn tick_clock(&mut self) {
        self.clock = (Instant::now(), now_us());
    }

    fn feed(&mut self, input: Input) -> bool {
        self.sched.handle(input, self.clock.0)
    }

    /// Drives the run until every job is terminal (or a second signal abandons it).
    pub async fn drive(
        &mut self,
        mut rx: UnboundedReceiver<LoopMsg>,
        mut signals: Signals,
    ) -> DriveEnd {
        // The loop keeps a sender for log-scan results; backends hold the others.
        let (scan_tx, mut scan_rx) = unbounded_channel();
        self.scans = Some(scan_tx);
        if let Some(jobs) = self.ledger.job_list(&self.flow) {
            self.hub.publish(vec![RunEvent::RunStarted {
                time_us: self.started_us,
                flow: self.flow.name.clone(),
                run_dir: self.ctx.run_dir.clone(),
                jobs,
                phases: self.phases.clone(),
            }]);
        }
        self.tick_clock();
        self.sched.start(self.clock.0);
        self.apply_actions();
        let mut buf = Vec::with_capacity(4096);
        let mut events_open = true;
        while !self.sched.is_done() {
            let wake = self.sched.next_wakeup();
            tokio::select! {
                biased;
                sig = signals.recv() => self.on_signal(sig),
                n = rx.recv_many(&mut buf, 4096), if events_open => {
                    // Every backend is gone: the core's deadlines still end their jobs.
                    events_open = n > 0;
                    self.tick_clock();
                    for msg in buf.drain(..) { self.on_message(msg); }
                }
                Some(msg) = scan_rx.recv() => {
                    self.tick_clock();
                    self.on_message(msg);
                }
                _ = sleep_until(wake), if wake.is_some() => {
                    self.tick_clock();
                    self.feed(Input::Tick);
                }
                // The core's next batch goes out once the events above are drained.
                _ = std::future::ready(()), if self.sched.has_actions() => self.tick_clock(),
            }
            self.apply_actions();
        }
        if self.abandoned {
            DriveEnd::Abandoned
        } else {
            DriveEnd::Done
        }
    }

    fn on_signal(&mut self, sig: Interrupt) {
        self.tick_clock();
        self.ledger.events.push(RunEvent::KillSignal {
            time_us: self.clock.1,
            signal: sig.name(),
        });
        // Observers (the display, which says what happens next) hear of the signal at once,
        // before the kills it causes.
        self.publish_events();
        if self.sched.interrupted().is_some() {
            self.abandoned = true;
            self.feed(Input::Abandon(sig));
        } else {
            self.feed(Input::Interrupt(sig));
        }
    }

    fn on_message(&mut self, msg: LoopMsg) {
        match msg {
            LoopMsg::Event(event, time_us) => self.on_backend_event(event, time_us),
            LoopMsg::Judged(job, judgement) => {
                if self.feed(Input::Judged(job, judgement.outcome)) {
                    if let Some(fail) = judgement.fail {
                        self.ledger.fail_matched(job, fail);
                    }
                }
            }
        }
    }

    fn on_backend_event(&mut self, event: BackendEvent, time_us: i64) {
        let job = event.job();
        let j = job as usize;
        if j >= self.flow.jobs.len() {
            return; // not one of ours
        }
        match event {
            // The display stands aside for an interactive job from its RUNNING event (published
            // before the job was handed over) to its end's.
            BackendEvent::Started { native_id, .. } => {
                if self.feed(Input::Started(job)) {
                    self.ledger.started(job, time_us, native_id);
                }
            }
            BackendEvent::Submitted { native_id, .. } => {
                // Only while the job is on its backend: a late event changes nothing.
                if self.sched.status(job) == Status::Running {
                    self.ledger.native_id(job, native_id);
                }
            }
            BackendEvent::Lost { why, .. } => {
                if self.feed(Input::Lost(job, why)) {
                    self.ledger.lost(job, time_us);
                }
            }
            BackendEvent::Finished {
                end,
                detail,
                logs,
                native_id,
                usage,
                ..
            } => {
                let def = &self.flow.jobs[j];
                let shell = matches!(def.cmd, Command::Shell(_));
                let has_patterns = def.patterns.as_ref().is_some_and(|p| !p.is_empty());
                let log_written = self.ledger.records[j].has_dir || !logs.is_empty();
                let facts = EndFacts {
                    end,
                    detail,
                    logs,
                    native_id,
                    usage,
                };
                let applied = if needs_log_scan(&facts.end, has_patterns, log_written) {
                    let applied = self.feed(Input::Ended(job));
                    if applied {
                        self.scan_then_judge(job, &facts, shell);
                    }
                    applied
                } else {
                    let outcome = judge(&facts.end, shell, None).outcome;
                    self.feed(Input::Finished(job, outcome))
                };
                if applied {
                    self.ledger.ended(job, time_us, &facts);
                }
            }
        }
    }

    /// Scans the job's logs off the loop (a multi-gigabyte log must not stall scheduling, and
    /// signals stay served meanwhile); the verdict comes back as [`LoopMsg::Judged`].
    fn scan_then_judge(&mut self, job: JobIx, facts: &EndFacts, shell: bool) {
        let j = job as usize;
        let paths = if facts.logs.is_empty() {
            let attempt = self.ledger.records[j].attempt;
            vec![self.job_dir(j).join(&*log_name(attempt))]
        } else {
            facts.logs.clone()
        };
        let Some(patterns) = self.flow.jobs[j].patterns.clone() else {
            return;
        };
        let Some(tx) = self.scans.clone() else {
            return;
        };
        let end = facts.end.clone();
        tokio::task::spawn_blocking(move || {
            let verdict = scan_logs(&paths, &patterns, SCAN_TIME_LIMIT);
            let _ = tx.send(LoopMsg::Judged(job, judge(&end, shell, Some(&verdict))));
        });
    }

    /// Carries out the core's actions: status changes are recorded, kills and one batch per
    /// backend handed over, and the answers fed back.
    fn apply_actions(&mut self) {
        for action in self.sched.drain_actions() {
            match action {
                Action::Status { job, old, new } => self.on_status(job, old, new),
                Action::Kill(b, jobs) => {
                    if let Some(handle) = &self.backends[b as usize] {
                        // What happened before a plugin call is written before it.
                        self.ledger.flush_journal();
                        handle.kill(&jobs);
                    }
                }
                Action::Submit(b, jobs) => {
                    // Observers see a job running before its backend has it: the display must
                    // clear its line before an interactive job can print its first prompt.
                    self.publish_events();
                    self.submit(b as usize, jobs)
                }
                Action::Retry {
                    job,
                    status,
                    reason,
                } => {
                    let (ctx, flow) = (&self.ctx, &self.flow);
                    self.ledger
                        .retry(flow, job, status, reason, self.clock.1, |attempt| {
                            job_dir(ctx, &flow.jobs[job as usize].name).join(&*log_name(attempt))
                        });
                }
            }
        }
        self.publish_events();
    }

    /// Writes the journal's records so far, then hands the events built so far to the
    /// observers: what an observer (a plugin among them) is told has happened is on disk
    /// first, and the journal is written at every point a batch of events goes out.
    pub fn publish_events(&mut self) {
        self.ledger.flush_journal();
        self.hub.publish_from(&mut self.ledger.events);
    }

    fn on_status(&mut self, job: JobIx, old: Status, new: Status) {
        let reason = self.sched.reason(job);
        let (ctx, flow) = (&self.ctx, &self.flow);
        let attempt = self.ledger.records[job as usize].attempt;
        self.ledger
            .transition(flow, job, (old, new), reason, self.clock.1, || {
                job_dir(ctx, &flow.jobs[job as usize].name).join(&*log_name(attempt))
            });
        if self.ledger.events.len() >= EVENT_BATCH {
            self.publish_events();
        }
    }

    fn submit(&mut self, b: usize, jobs: Vec<JobIx>) {
        let Some(handle) = self.backends[b].clone() else {
            for job in jobs {
                self.feed(Input::Rejected(job, "the backend was not created".into()));
            }
            return;
        };
        let jobs = if self.reattach.is_empty() || !handle.caps.reattach {
            jobs
        } else {
            self.reattach_first(&handle, jobs)
        };
        if jobs.is_empty() {
            return;
        }
        let owner = handle.caps.job_dir;
        let mut requests = Vec::with_capacity(jobs.len());
        for &job in &jobs {
            let j = job as usize;
            let job_dir = job_dir_text(&self.ctx, &self.flow.jobs[j].name);
            let rec = &mut self.ledger.records[j];
            match owner {
                _ if rec.has_dir => {}
                JobDirOwner::Host => {
                    // A failure surfaces when the backend cannot write the log; it must not
                    // stop the run.
                    if let Err(e) = std::fs::create_dir_all(&job_dir) {
                        tracing::warn!("cannot create {job_dir}: {e}");
                    }
                    rec.has_dir = true;
                }
                JobDirOwner::Backend => rec.has_dir = true,
                JobDirOwner::Nobody => {}
            }
            requests.push(request(&self.flow, &self.ctx, job, rec.attempt, job_dir));
        }
        self.ledger.flush_journal();
        let replies = handle.submit(&requests);
        drop(requests);
        self.tick_clock();
        for (job, reply) in jobs.into_iter().zip(replies) {
            match reply {
                SubmitReply::Accepted => {
                    self.feed(Input::Accepted(job));
                }
                SubmitReply::Busy => {
                    self.feed(Input::Busy(job));
                }
                SubmitReply::Rejected(e) => {
                    if self.feed(Input::Rejected(job, e)) {
                        self.ledger.rejected(job, self.clock.1);
                    }
                }
            }
        }
    }
}

impl RunState {
    /// `--resume`: hands the jobs of `jobs` that an earlier host left on the cluster to their
    /// backend's `reattach`, by native id; returns the rest, to submit. A job the backend
    /// cannot re-attach is submitted afresh, as a new attempt (the one it was on is recorded
    /// lost: nobody can tell how it ended).
    fn reattach_first(&mut self, handle: &BackendHandle, jobs: Vec<JobIx>) -> Vec<JobIx> {
        let (adopt, mut fresh): (Vec<JobIx>, Vec<JobIx>) = jobs
            .into_iter()
            .partition(|j| self.reattach.contains_key(j));
        if adopt.is_empty() {
            return fresh;
        }
        let natives: Vec<Arc<str>> = adopt
            .iter()
            .filter_map(|j| self.reattach.remove(j))
            .collect();
        // The job's directory is there: the earlier host (or its backend) made it.
        let has_dir = handle.caps.job_dir != JobDirOwner::Nobody;
        for &job in &adopt {
            self.ledger.records[job as usize].has_dir |= has_dir;
        }
        let requests: Vec<(JobRequest<'_>, &str)> = adopt
            .iter()
            .zip(&natives)
            .map(|(&job, native)| {
                let j = job as usize;
                let job_dir = job_dir_text(&self.ctx, &self.flow.jobs[j].name);
                let attempt = self.ledger.records[j].attempt;
                let r = request(&self.flow, &self.ctx, job, attempt, job_dir);
                (r, &**native)
            })
            .collect();
        self.ledger.flush_journal();
        let replies = handle.reattach(&requests);
        drop(requests);
        self.tick_clock();
        for ((job, native), reply) in adopt.into_iter().zip(natives).zip(replies) {
            let name = &self.flow.jobs[job as usize].name;
            match reply {
                SubmitReply::Accepted => {
                    tracing::info!("{name}: re-attached to {} job {native}", handle.name());
                    self.feed(Input::Accepted(job));
                    self.ledger.native_id(job, native.to_string());
                }
                SubmitReply::Busy | SubmitReply::Rejected(_) => {
                    let why = match reply {
                        SubmitReply::Rejected(why) => why,
                        _ => "the backend is busy".into(),
                    };
                    tracing::warn!(
                        "{name}: cannot re-attach {} job {native} ({why}); submitting it again",
                        handle.name()
                    );
                    let reason = Reason::Lost {
                        backend: handle.name().into(),
                        why: format!(
                            "the host died while the job was on the backend as {native}, and the \
                             backend could not re-attach it: {why}"
                        )
                        .into(),
                    };
                    self.ledger.attempt_abandoned(job, reason, self.clock.1);
                    fresh.push(job);
                }
            }
        }
        fresh
    }
}

/// The request for attempt `attempt` of `job`, in `job_dir`.
fn request<'a>(
    flow: &'a Flow,
    ctx: &'a RunContext,
    job: JobIx,
    attempt: u32,
    job_dir: String,
) -> JobRequest<'a> {
    let log = log_name(attempt);
    let mut log_path = String::with_capacity(job_dir.len() + log.len() + 1);
    log_path.push_str(&job_dir);
    log_path.push('/');
    log_path.push_str(&log);
    JobRequest {
        ix: job,
        job: &flow.jobs[job as usize],
        attempt: attempt.max(1),
        log_path,
        job_dir,
        run: ctx,
    }
}

/// The logs' file names, shared with the plugins that link to logs (the html report).
pub use flowrun_plugin_sdk::run_dir::{log_name, LOG_NAME};

/// `<run>/jobs/<encoded name>`.
pub fn job_dir(ctx: &RunContext, name: &str) -> PathBuf {
    PathBuf::from(job_dir_text(ctx, name))
}

/// [`job_dir`] as text, built with one allocation (it is built for every job handed over).
pub fn job_dir_text(ctx: &RunContext, name: &str) -> String {
    let encoded = job_dir_name(name);
    let mut s = String::with_capacity(ctx.run_dir_text.len() + 6 + encoded.len());
    s.push_str(&ctx.run_dir_text);
    s.push_str("/jobs/");
    s.push_str(&encoded);
    s
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// The loop's channel and the sender backends report to.
pub fn channel() -> (Arc<dyn EventSender>, UnboundedReceiver<LoopMsg>) {
    let (tx, rx) = unbounded_channel();
    (Arc::new(LoopSender(tx)), rx)
}
