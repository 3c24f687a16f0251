//! The run loop: a thin async driver around the pure scheduler core. It owns no scheduling
//! rule; it carries the core's actions to the backends, the backends' events (and signals,
//! timers, log verdicts) back to the core, and keeps what results.json and the observers need.
//!
//! Threads: the loop itself runs on a current-thread tokio runtime and calls backends' submit
//! and kill inline (they return promptly by contract; see `driver`). Backends report from
//! their own threads through a channel into the loop. Log scans run on tokio's blocking pool.
//! Each plugin observer has its own thread (see `crate::observe`). Shutdowns run on threads.

mod driver;
pub mod records;

use std::{path::PathBuf, sync::Arc, time::Instant};

use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender},
};

use crate::{
    backend::{
        BackendEvent, EventSender, JobCommand, JobDirOwner, JobEnd, JobRequest, SubmitReply,
    },
    display::{Display, DisplayOptions, DEFAULT_STATUS_INTERVAL},
    errors::{Error, EXIT_JOBS_FAILED, EXIT_PASSED, EXIT_SIGINT, EXIT_SIGTERM},
    flow::{Command, Flow, When},
    observe::{JobStatusEvent, ObserverHub, RunEvent, Summary},
    outcome::{scan_logs, LogVerdict},
    plugins::PluginSet,
    sched::{
        self, Action, Input, Interrupt, JobIx, Outcome, SchedSpec, Scheduler, SchedulerApi, Status,
    },
};
use driver::BackendDriver;
use records::{now_us, FailMatch, JobRecord};

/// Options of `flowrun run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--out DIR`; default `flowrun-out/<flow>/<timestamp>` with a `latest` link.
    pub out: Option<PathBuf>,
    /// `-j N`: overrides `[flow] max_parallel`.
    pub max_parallel: Option<u32>,
    /// `--observer KIND`: observer instances with an empty config.
    pub observers: Vec<String>,
    /// Print only the summary.
    pub quiet: bool,
    /// `--status-interval`: without a terminal, a progress line this often (zero: on every
    /// change); `None`: the default.
    pub status_interval: Option<std::time::Duration>,
}

/// What a run ended with.
#[derive(Debug)]
pub struct RunReport {
    /// The documented exit code.
    pub exit_code: i32,
    /// results.json.
    pub results: PathBuf,
}

/// Messages into the loop.
pub(crate) enum LoopMsg {
    Event(BackendEvent),
    Judged(JobIx, Outcome, Option<Box<FailMatch>>),
}

/// The loop's end of every backend's event sink.
struct LoopSender(UnboundedSender<LoopMsg>);

impl EventSender for LoopSender {
    fn send(&self, event: BackendEvent) {
        let _ = self.0.send(LoopMsg::Event(event));
    }
}

/// Chooses and creates the run's output directory.
fn prepare_out_dir(flow: &Flow, opts: &RunOptions) -> Result<PathBuf, Error> {
    let out = match &opts.out {
        Some(o) => o.clone(),
        None => {
            let base = PathBuf::from("flowrun-out").join(&flow.name);
            let now = time::OffsetDateTime::now_utc();
            let stamp = format!(
                "{:04}{:02}{:02}-{:02}{:02}{:02}",
                now.year(),
                now.month() as u8,
                now.day(),
                now.hour(),
                now.minute(),
                now.second()
            );
            let mut dir = base.join(&stamp);
            let mut n = 1;
            while dir.exists() {
                dir = base.join(format!("{stamp}-{n}"));
                n += 1;
            }
            dir
        }
    };
    std::fs::create_dir_all(out.join("jobs")).map_err(|e| {
        Error::Output(format!(
            "{}: cannot create the output directory: {e}",
            out.display()
        ))
    })?;
    if opts.out.is_none() {
        // `latest` points at the newest run; a failure here is cosmetic.
        if let (Some(parent), Some(name)) = (out.parent(), out.file_name()) {
            let link = parent.join("latest");
            let _ = std::fs::remove_file(&link);
            let _ = std::os::unix::fs::symlink(name, &link);
        }
    }
    out.canonicalize()
        .map_err(|e| Error::Output(format!("{}: {e}", out.display())))
}

/// A job directory name: the job's name with `/` replaced, so every job gets one directory.
fn job_dir_name(name: &str) -> String {
    name.replace('/', "_")
}

/// Runs a validated flow to the end. Creates backends and observers through `plugins`.
pub fn run(flow: Flow, plugins: &mut PluginSet, opts: &RunOptions) -> Result<RunReport, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Output(format!("cannot start the runtime: {e}")))?;
    let _guard = runtime.enter();
    // Signals are hooked before any job starts, so that none is lost.
    let signals = Signals::new()
        .map_err(|e| Error::Output(format!("cannot install signal handlers: {e}")))?;
    let out = prepare_out_dir(&flow, opts)?;
    let (tx, rx) = unbounded_channel();
    let sender: Arc<dyn EventSender> = Arc::new(LoopSender(tx.clone()));

    // Backends: only the instances some job uses.
    let mut used = vec![false; flow.backends.len()];
    for j in &flow.jobs {
        used[j.backend] = true;
    }
    let mut drivers: Vec<Option<BackendDriver>> = Vec::with_capacity(flow.backends.len());
    let mut created: Vec<BackendDriver> = Vec::new();
    for (i, inst) in flow.backends.iter().enumerate() {
        if !used[i] {
            drivers.push(None);
            continue;
        }
        let made = plugins.plugin_for(&inst.kind, false).and_then(|plugin| {
            plugin
                .new_backend(&inst.kind, &inst.config_toml, sender.clone())
                .map_err(|e| Error::Instance {
                    location: Some(inst.location.clone()),
                    message: format!(
                        "backend `{}` (kind `{}`, plugin {}): {e}",
                        inst.name, inst.kind, plugin.name
                    ),
                })
        });
        match made {
            Ok(backend) => {
                let d = BackendDriver::new(inst.name.clone(), Arc::from(backend));
                created.push(d.clone());
                drivers.push(Some(d));
            }
            Err(e) => {
                shutdown_all(&created);
                return Err(e);
            }
        }
    }

    // Observers: from the flow, then `--observer KIND`.
    let mut hub = ObserverHub::default();
    let mut observer_specs: Vec<(String, String, String, Option<crate::flow::Location>)> = flow
        .observers
        .iter()
        .map(|o| {
            (
                o.name.clone(),
                o.kind.clone(),
                o.config_toml.clone(),
                Some(o.location.clone()),
            )
        })
        .collect();
    for kind in &opts.observers {
        if !observer_specs.iter().any(|o| &o.1 == kind) {
            observer_specs.push((kind.clone(), kind.clone(), String::new(), None));
        }
    }
    for (name, kind, config, location) in observer_specs {
        let made = plugins.plugin_for(&kind, true).and_then(|plugin| {
            plugin
                .new_observer(&kind, &config)
                .map_err(|e| Error::Instance {
                    location: location.clone(),
                    message: format!(
                        "observer `{name}` (kind `{kind}`, plugin {}): {e}",
                        plugin.name
                    ),
                })
        });
        match made {
            Ok(o) => hub.add(name, o),
            Err(e) => {
                shutdown_all(&created);
                let _ = hub.finish();
                return Err(e);
            }
        }
    }

    // The built-in display is one more observer of the same events.
    hub.add_local(Box::new(Display::start(DisplayOptions {
        quiet: opts.quiet,
        status_interval: opts.status_interval.unwrap_or(DEFAULT_STATUS_INTERVAL),
    })));
    let mut state = RunState::new(flow, out, drivers, hub, opts);
    let t = Instant::now();
    let end = runtime.block_on(state.drive(rx, signals));
    tracing::info!("run loop: {:.3} s", t.elapsed().as_secs_f64());
    match end {
        DriveEnd::Done => shutdown_all(&created),
        // A second signal: give the backends a moment to kill what still runs (their
        // shutdown kills without grace), then go, whatever they say.
        DriveEnd::Abandoned => shutdown_bounded(&created, ABANDON_WAIT),
    }
    state.finish(end)
}

/// Events held before they are published.
const EVENT_BATCH: usize = 4096;

/// How long a second signal waits for backends to kill what still runs.
const ABANDON_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn shutdown_all(drivers: &[BackendDriver]) {
    // Every backend shuts down at once, each on its own thread: shutdown may block.
    let handles: Vec<_> = drivers.iter().map(|d| d.shutdown()).collect();
    for h in handles {
        let _ = h.join();
    }
}

fn shutdown_bounded(drivers: &[BackendDriver], wait: std::time::Duration) {
    let handles: Vec<_> = drivers.iter().map(|d| d.shutdown()).collect();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

struct Signals {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals {
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
        })
    }
}

/// How the drive loop ended.
enum DriveEnd {
    /// Every job is terminal.
    Done,
    /// A second signal: exit at once.
    Abandoned,
}

struct RunState {
    flow: Flow,
    out: PathBuf,
    run_tag: String,
    sched: Scheduler,
    drivers: Vec<Option<BackendDriver>>,
    hub: ObserverHub,
    records: Vec<JobRecord>,
    /// Whether the submit answer of a job was seen (events can overtake answers).
    answered: Vec<bool>,
    /// Whether the backend's FINISHED was seen (the job may still be judged).
    ended: Vec<bool>,
    job_dir_owner: Vec<JobDirOwner>,
    interrupted: Option<Interrupt>,
    started_us: i64,
    tx: Option<UnboundedSender<LoopMsg>>,
    pending_events: Vec<RunEvent>,
    /// Job and backend names as events carry them (empty without observers).
    event_names: Vec<Arc<str>>,
    event_backends: Vec<Arc<str>>,
    /// Jobs the core asked to submit that have not been handed over yet: submissions go out in
    /// bounded slices, with the backends' events drained in between, so memory stays bounded
    /// however many jobs become ready at once.
    pending_submits: std::collections::VecDeque<(usize, Vec<JobIx>)>,
    /// The time, read once per batch of messages rather than per event: a million-job run
    /// would otherwise spend a noticeable share of its time reading the clock.
    clock: (Instant, i64),
}

impl RunState {
    fn new(
        flow: Flow,
        out: PathBuf,
        drivers: Vec<Option<BackendDriver>>,
        hub: ObserverHub,
        opts: &RunOptions,
    ) -> Self {
        let mut spec = SchedSpec {
            jobs: Vec::with_capacity(flow.jobs.len()),
            backends: Vec::with_capacity(flow.backends.len()),
            resources: flow.resources.iter().map(|r| r.1).collect(),
            max_parallel: opts.max_parallel.or(flow.max_parallel),
        };
        let mut job_dir_owner = Vec::with_capacity(flow.backends.len());
        for (i, inst) in flow.backends.iter().enumerate() {
            let caps = drivers[i].as_ref().map(|d| d.caps).unwrap_or_default();
            spec.backends.push(sched::BackendSpec {
                name: inst.name.clone(),
                max_parallel: inst.max_parallel.or(caps.default_max_parallel),
            });
            job_dir_owner.push(caps.job_dir);
        }
        for j in &flow.jobs {
            let enforces = drivers[j.backend]
                .as_ref()
                .is_some_and(|d| d.caps.enforces_timeout);
            spec.jobs.push(sched::JobSpec {
                name: j.name.clone(),
                priority: j.priority,
                backend: j.backend as u32,
                needs: j.needs.clone(),
                when: match j.when {
                    When::AllPassed => sched::When::AllPassed,
                    When::AnyPassed => sched::When::AnyPassed,
                    When::Always => sched::When::Always,
                },
                slots: j.cpus.max(1),
                resources: j.resources.clone(),
                timeout: if enforces { None } else { j.timeout.clone() },
            });
        }
        let n = flow.jobs.len();
        let run_tag = format!(
            "flowrun-{}-{}",
            flow.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            std::process::id()
        );
        RunState {
            sched: Scheduler::new(spec),
            run_tag,
            out,
            drivers,
            hub,
            records: vec![JobRecord::default(); n],
            answered: vec![false; n],
            ended: vec![false; n],
            job_dir_owner,
            interrupted: None,
            started_us: now_us(),
            tx: None,
            pending_events: Vec::with_capacity(EVENT_BATCH),
            event_names: Vec::new(),
            event_backends: Vec::new(),
            pending_submits: std::collections::VecDeque::new(),
            clock: (Instant::now(), now_us()),
            flow,
        }
    }

    fn log_path(&self, job: usize) -> PathBuf {
        self.out
            .join("jobs")
            .join(job_dir_name(&self.flow.jobs[job].name))
            .join("output.log")
    }

    async fn drive(
        &mut self,
        mut rx: UnboundedReceiver<LoopMsg>,
        mut signals: Signals,
    ) -> DriveEnd {
        // The loop keeps a sender for log-scan results; backends hold the others.
        let (scan_tx, mut scan_rx) = unbounded_channel();
        self.tx = Some(scan_tx);
        if !self.hub.is_empty() {
            // Shared names: each event then costs two reference counts, not two allocations.
            self.event_backends = self
                .flow
                .backends
                .iter()
                .map(|b| b.name.as_str().into())
                .collect();
            self.event_names = self
                .flow
                .jobs
                .iter()
                .map(|j| j.name.as_str().into())
                .collect();
            let jobs = self
                .event_names
                .iter()
                .zip(&self.flow.jobs)
                .map(|(n, j)| (n.clone(), self.event_backends[j.backend].clone()))
                .collect();
            self.hub.publish(vec![RunEvent::RunStarted {
                time_us: self.started_us,
                flow: self.flow.name.clone(),
                run_dir: self.out.clone(),
                jobs,
            }]);
        }
        self.clock = (Instant::now(), now_us());
        self.sched.start(self.clock.0);
        self.apply_actions();
        let mut buf = Vec::with_capacity(4096);
        while !self.sched.is_done() {
            let wake = self.sched.next_wakeup();
            tokio::select! {
                biased;
                _ = signals.sigint.recv() => {
                    if self.on_signal(Interrupt::Sigint) { return DriveEnd::Abandoned; }
                }
                _ = signals.sigterm.recv() => {
                    if self.on_signal(Interrupt::Sigterm) { return DriveEnd::Abandoned; }
                }
                n = rx.recv_many(&mut buf, 4096) => {
                    if n == 0 { break; }
                    self.clock = (Instant::now(), now_us());
                    for msg in buf.drain(..) { self.on_message(msg); }
                }
                Some(msg) = scan_rx.recv() => {
                    self.clock = (Instant::now(), now_us());
                    self.on_message(msg);
                }
                _ = sleep_until(wake), if wake.is_some() => {
                    self.clock = (Instant::now(), now_us());
                    self.sched.handle(Input::Tick, self.clock.0);
                }
                // Queued submissions go out once the events above are drained.
                _ = std::future::ready(()), if !self.pending_submits.is_empty() => {}
            }
            self.apply_actions();
        }
        DriveEnd::Done
    }

    /// Returns true when the run must end at once (a second signal).
    fn on_signal(&mut self, sig: Interrupt) -> bool {
        let second = self.interrupted.is_some();
        self.interrupted = Some(sig);
        self.pending_events.push(RunEvent::KillSignal {
            time_us: now_us(),
            signal: sig.name(),
        });
        // Observers (the display among them) hear of the signal at once, not after the kills.
        self.hub.publish_from(&mut self.pending_events);
        self.clock = (Instant::now(), now_us());
        self.sched.handle(Input::Interrupt(sig), self.clock.0);
        // Submissions not yet handed to a backend never will be: to the core they come back
        // as busy, which after an interrupt makes them "killed while queued".
        for (_, jobs) in std::mem::take(&mut self.pending_submits) {
            for job in jobs {
                self.sched.handle(Input::Busy(job), self.clock.0);
            }
        }
        second
    }

    fn on_message(&mut self, msg: LoopMsg) {
        let now = self.clock.0;
        match msg {
            LoopMsg::Event(event) => self.on_backend_event(event, now),
            LoopMsg::Judged(job, outcome, fail) => {
                self.records[job as usize].fail = fail;
                self.sched.handle(Input::Finished(job, outcome), now);
            }
        }
    }

    fn on_answers(
        &mut self,
        answers: impl IntoIterator<Item = (JobIx, SubmitReply)>,
        now: Instant,
    ) {
        for (job, reply) in answers {
            let j = job as usize;
            if self.answered[j] {
                continue; // an event already implied acceptance
            }
            self.answered[j] = true;
            let input = match reply {
                SubmitReply::Accepted => Input::Accepted(job),
                SubmitReply::Busy => {
                    self.answered[j] = false; // it will be submitted again
                    Input::Busy(job)
                }
                SubmitReply::Rejected(e) => {
                    self.records[j].started_at = 0; // it never started
                    self.records[j].finished_at = self.clock.1;
                    Input::Rejected(job, e)
                }
            };
            self.sched.handle(input, now);
        }
    }

    /// Feeds the acceptance a backend event implies when the event overtook the answer.
    fn implied_accept(&mut self, job: JobIx, now: Instant) -> bool {
        let j = job as usize;
        if j >= self.answered.len() || self.sched.status(job) != Status::Running {
            return false; // not ours, or no longer running: a stray event
        }
        if !self.answered[j] {
            self.answered[j] = true;
            self.sched.handle(Input::Accepted(job), now);
        }
        true
    }

    fn on_backend_event(&mut self, event: BackendEvent, now: Instant) {
        match event {
            // The display learns of an interactive job from its RUNNING event.
            BackendEvent::Started {
                job,
                interactive: _,
            } => {
                if !self.implied_accept(job, now) {
                    return;
                }
                self.records[job as usize].started_at = self.clock.1;
                self.sched.handle(Input::Started(job), now);
            }
            BackendEvent::Lost { job, why } => {
                if !self.implied_accept(job, now) || self.ended[job as usize] {
                    return;
                }
                self.ended[job as usize] = true;
                self.records[job as usize].finished_at = self.clock.1;
                self.sched.handle(Input::Lost(job, why), now);
            }
            BackendEvent::Finished {
                job,
                end,
                detail,
                logs,
            } => {
                let j = job as usize;
                if !self.implied_accept(job, now) || self.ended[j] {
                    return;
                }
                self.ended[j] = true;
                let rec = &mut self.records[j];
                rec.finished_at = self.clock.1;
                if rec.started_at == 0 {
                    rec.started_at = rec.finished_at;
                }
                if !logs.is_empty() {
                    rec.logs = Some(Box::new(logs));
                }
                let judged = match end {
                    JobEnd::Killed => Some(Outcome::Killed {
                        reason: "killed by the backend".into(),
                    }),
                    JobEnd::Signaled(sig) => Some(Outcome::Failed {
                        reason: format!("killed by signal {sig}{}", signal_name(sig)),
                    }),
                    JobEnd::Failed(reason, code) => {
                        rec.exit_code = code;
                        Some(Outcome::Failed { reason })
                    }
                    JobEnd::Exited(code) => {
                        rec.exit_code = Some(code);
                        match &self.flow.jobs[j].patterns {
                            // The log is judged off the loop: a multi-gigabyte log must not
                            // stall scheduling.
                            Some(p) if !p.is_empty() => {
                                let paths = match &rec.logs {
                                    Some(l) => (**l).clone(),
                                    None => vec![self.log_path(j)],
                                };
                                let patterns = p.clone();
                                let tx = self
                                    .tx
                                    .clone()
                                    .expect("the loop's sender exists while driving");
                                tokio::task::spawn_blocking(move || {
                                    let (outcome, fail) =
                                        judge_log(code, &scan_logs(&paths, &patterns));
                                    let _ = tx.send(LoopMsg::Judged(job, outcome, fail));
                                });
                                None
                            }
                            _ => Some(exit_outcome(code)),
                        }
                    }
                };
                let _ = detail;
                if let Some(outcome) = judged {
                    self.sched.handle(Input::Finished(job, outcome), now);
                }
            }
        }
    }

    /// Carries out the core's actions and hands over one slice of the queued submissions; the
    /// loop comes back for the next slice once the backends' events are drained.
    fn apply_actions(&mut self) {
        self.carry_out(); // may queue submissions
                          // Observers see a job running before its backend gets it: the display must stand aside
                          // before an interactive job prints its first prompt.
        if !self.pending_events.is_empty() {
            self.hub.publish_from(&mut self.pending_events);
        }
        if self.submit_slice() {
            self.carry_out(); // what the answers changed (rejections free slots, ...)
        }
        if !self.pending_events.is_empty() {
            self.hub.publish_from(&mut self.pending_events);
        }
    }

    fn carry_out(&mut self) {
        for action in self.sched.drain_actions() {
            match action {
                Action::Submit(b, jobs) => self.pending_submits.push_back((b as usize, jobs)),
                Action::Kill(b, jobs) => {
                    if let Some(d) = &self.drivers[b as usize] {
                        d.kill(&jobs);
                    }
                }
                Action::Status {
                    job,
                    old,
                    new,
                    reason,
                } => self.on_status(job, old, new, reason),
            }
        }
    }

    /// Hands one slice of the oldest queued submission to its backend. Returns whether it did.
    fn submit_slice(&mut self) -> bool {
        let Some((b, mut jobs)) = self.pending_submits.pop_front() else {
            return false;
        };
        let Some(driver) = self.drivers[b].clone() else {
            return false;
        };
        let limit = driver.batch_limit();
        if jobs.len() > limit {
            let rest = jobs.split_off(limit);
            self.pending_submits.push_front((b, rest));
        }
        let requests: Vec<JobRequest> = jobs.iter().map(|&j| self.request(j, b)).collect();
        let replies = driver.submit(requests);
        self.clock = (Instant::now(), now_us());
        let now = self.clock.0;
        self.on_answers(jobs.into_iter().zip(replies), now);
        true
    }

    fn on_status(&mut self, job: JobIx, old: Status, new: Status, reason: String) {
        let j = job as usize;
        let now = self.clock.1;
        let rec = &mut self.records[j];
        match new {
            Status::Queued if rec.queued_at == 0 => rec.queued_at = now,
            Status::Running => {}
            s if s.is_terminal() && rec.finished_at == 0 && rec.started_at > 0 => {
                rec.finished_at = now
            }
            _ => {}
        }
        if self.hub.is_empty() {
            return;
        }
        let rec = &self.records[j];
        let terminal = new.is_terminal();
        let job_def = &self.flow.jobs[j];
        self.pending_events
            .push(RunEvent::JobStatus(JobStatusEvent {
                time_us: now,
                job: self.event_names[j].clone(),
                backend: self.event_backends[job_def.backend].clone(),
                old,
                new,
                reason,
                exit_code: if terminal { rec.exit_code } else { None },
                duration_s: (terminal && rec.started_at > 0 && rec.finished_at >= rec.started_at)
                    .then(|| (rec.finished_at - rec.started_at) as f64 / 1e6),
                log: (terminal && rec.has_dir).then(|| self.log_path(j)),
                fail_line: rec.fail.as_ref().map(|f| f.line),
                fail_text: rec.fail.as_ref().map(|f| f.text.clone()),
                interactive: job_def.interactive,
            }));
        // Bounded batches: a million jobs becoming ready at once must not become a million
        // events held at once.
        if self.pending_events.len() >= EVENT_BATCH {
            self.hub.publish_from(&mut self.pending_events);
        }
    }

    fn request(&mut self, job: JobIx, backend: usize) -> JobRequest {
        let j = job as usize;
        let def = &self.flow.jobs[j];
        let job_dir = self.out.join("jobs").join(job_dir_name(&def.name));
        match self.job_dir_owner[backend] {
            _ if self.records[j].has_dir => {}
            JobDirOwner::Host => {
                // A failure surfaces when the backend cannot write the log; it must not stop
                // the run.
                if let Err(e) = std::fs::create_dir_all(&job_dir) {
                    tracing::warn!("cannot create {}: {e}", job_dir.display());
                }
                self.records[j].has_dir = true;
            }
            JobDirOwner::Backend => self.records[j].has_dir = true,
            JobDirOwner::Nobody => {}
        }
        self.records[j].started_at = self.clock.1;
        JobRequest {
            job,
            name: def.name.clone(),
            command: match &def.cmd {
                Command::Shell(s) => JobCommand::Shell(s.clone()),
                Command::Argv(v) => JobCommand::Argv(v.clone()),
            },
            cwd: def.cwd.clone().unwrap_or_else(|| job_dir.clone()),
            env: def.env.clone(),
            log_path: job_dir.join("output.log"),
            job_dir,
            run_dir: self.out.clone(),
            run_tag: self.run_tag.clone(),
            timeout_ms: def.timeout.as_ref().map(|t| t.0.as_millis() as u64),
            cpus: def.cpus,
            memory_mb: def.memory_mb,
            resources: def
                .resources
                .iter()
                .map(|(r, n)| (self.flow.resources[*r as usize].0.clone(), *n))
                .collect(),
            interactive: def.interactive,
            attempt: 1,
            attrs: def.attrs.clone(),
        }
    }

    /// Writes results.json, tells the observers, prints the summary, picks the exit code.
    fn finish(mut self, end: DriveEnd) -> Result<RunReport, Error> {
        let finished_us = now_us();
        let abandoned = matches!(end, DriveEnd::Abandoned);
        let n = self.flow.jobs.len();
        // After an abandoned run, whatever is not terminal was being killed.
        let sig = self.interrupted.map(|s| s.name()).unwrap_or("SIGINT");
        let fallback_running = format!("killed by {sig} while running");
        let fallback_waiting = format!("run interrupted by {sig}");
        let outcome = |i: usize| -> (Status, String) {
            let s = self.sched.status(i as JobIx);
            match s {
                s if s.is_terminal() => (s, self.sched.reason(i as JobIx).to_string()),
                Status::Running => (Status::Killed, fallback_running.clone()),
                Status::Queued => (Status::Killed, "killed while queued".to_string()),
                _ => (Status::Skipped, fallback_waiting.clone()),
            }
        };
        let finals: Vec<(Status, String)> = (0..n).map(outcome).collect();
        if abandoned {
            // Observers hear of these ends as of any other (on_status also closes the records).
            self.clock.1 = finished_us;
            for (i, (s, reason)) in finals.iter().enumerate() {
                let old = self.sched.status(i as JobIx);
                if old != *s {
                    self.on_status(i as JobIx, old, *s, reason.clone());
                }
            }
        }
        let out = self.out.clone();
        let flow_ref = &self.flow;
        let records = &self.records;
        let outcome_fn = |i: usize| (finals[i].0, finals[i].1.as_str());
        let log_of = |i: usize| {
            out.join("jobs")
                .join(job_dir_name(&flow_ref.jobs[i].name))
                .join("output.log")
        };
        let t = Instant::now();
        let results = records::write_results(
            &out,
            &records::ResultsInput {
                flow: flow_ref,
                started_us: self.started_us,
                finished_us,
                interrupted: self.interrupted.is_some(),
                outcome: &outcome_fn,
                records,
                log_of: &log_of,
            },
        )
        .map_err(|e| Error::Output(format!("{}: cannot write results.json: {e}", out.display())))?;
        tracing::info!("results.json written: {:.3} s", t.elapsed().as_secs_f64());

        let final_count = |want: Status| finals.iter().filter(|(s, _)| *s == want).count() as u64;
        let summary = Summary {
            passed: final_count(Status::Passed),
            failed: final_count(Status::Failed),
            killed: final_count(Status::Killed),
            skipped: final_count(Status::Skipped),
            interrupted: self.interrupted.is_some(),
            duration_s: (finished_us - self.started_us) as f64 / 1e6,
            results_path: results.clone(),
        };
        self.pending_events.push(RunEvent::RunFinished {
            time_us: finished_us,
            summary,
        });
        self.hub.publish_from(&mut self.pending_events);
        // The display prints the summary from RUN_FINISHED as it finishes, before the plugin
        // observers are waited for; their errors come after it.
        let hub = std::mem::take(&mut self.hub);
        for e in hub.finish() {
            eprintln!("flowrun: {e}");
        }

        let all_passed = finals.iter().all(|(s, _)| *s == Status::Passed);
        let exit_code = match self.interrupted {
            Some(Interrupt::Sigint) => EXIT_SIGINT,
            Some(Interrupt::Sigterm) => EXIT_SIGTERM,
            None if all_passed => EXIT_PASSED,
            None => EXIT_JOBS_FAILED,
        };
        // A million-job run holds hundreds of megabytes of small allocations; freeing them one
        // by one just before the process exits takes longer than the scheduling did.
        std::mem::forget(self);
        Ok(RunReport { exit_code, results })
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

fn exit_outcome(code: i32) -> Outcome {
    if code == 0 {
        Outcome::Passed
    } else {
        Outcome::Failed {
            reason: format!("exit code {code}"),
        }
    }
}

/// The verdict on a job that exited with `code` and whose log was scanned. A pattern failure
/// gives the reason even when the exit code failed too.
fn judge_log(code: i32, verdict: &LogVerdict) -> (Outcome, Option<Box<FailMatch>>) {
    match verdict {
        LogVerdict::Clean => (exit_outcome(code), None),
        LogVerdict::FailMatched {
            line,
            text,
            context,
            ..
        } => (
            Outcome::Failed {
                reason: format!("fail pattern matched at line {line}: {text}"),
            },
            Some(Box::new(FailMatch {
                line: *line,
                text: text.clone(),
                context: context.clone(),
            })),
        ),
        LogVerdict::PassMissing { pattern } => (
            Outcome::Failed {
                reason: format!("pass pattern never matched: {pattern}"),
            },
            None,
        ),
        LogVerdict::Unreadable(why) => (
            Outcome::Failed {
                reason: why.clone(),
            },
            None,
        ),
    }
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| format!(" ({})", s.as_str()))
        .unwrap_or_default()
}

/// The expanded plan, for `--dry-run`.
pub fn plan(flow: &Flow) -> String {
    let mut s = String::new();
    for j in &flow.jobs {
        let cmd = match &j.cmd {
            Command::Shell(c) => c.clone(),
            Command::Argv(v) => format!("{v:?}"),
        };
        let needs: Vec<&str> = j
            .needs
            .iter()
            .map(|&d| flow.jobs[d as usize].name.as_str())
            .collect();
        s.push_str(&format!(
            "{}  [backend {}, priority {}{}]  {}\n",
            j.name,
            flow.backends[j.backend].name,
            j.priority,
            if needs.is_empty() {
                String::new()
            } else {
                format!(", needs {}", needs.join(" "))
            },
            cmd
        ));
    }
    s.push_str(&format!("{} jobs\n", flow.jobs.len()));
    s
}

/// The flow as a Graphviz DOT digraph (edges from a dependency to its dependent).
pub fn graph(flow: &Flow) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut s = format!("digraph {} {{\n  rankdir=LR;\n", q(&flow.name));
    for j in &flow.jobs {
        s.push_str(&format!("  {};\n", q(&j.name)));
    }
    for j in &flow.jobs {
        for &d in &j.needs {
            s.push_str(&format!(
                "  {} -> {};\n",
                q(&flow.jobs[d as usize].name),
                q(&j.name)
            ));
        }
    }
    s.push_str("}\n");
    s
}
