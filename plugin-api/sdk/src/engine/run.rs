//! The engine at work: the steps that run the dialect's commands and feed their results into
//! the policy ([`super::core`]), and the threads that drive those steps.
//!
//! Threads (all owned here, joined by `shutdown`):
//! - `NAME-submit-N` (`submit_threads` of them): take a unit, wait for its `submit_rate` slot,
//!   write its scripts, submit it.
//! - `NAME-monitor`: every `poll_interval`, one snapshot of all the run's jobs, then at most
//!   one final-records query for the jobs that need it.
//! - `NAME-cancel`: one cancel command per batch of ids, retried until it gets through.
//!
//! Each step returns what its thread should do next ([`Step`]), so a test drives the same
//! steps on one thread with a manual clock (`super::testing::Simulation`).

use std::{path::PathBuf, sync::Arc, thread::JoinHandle, time::Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::{
    clock::{Clock, SystemClock},
    command::{CallCounts, CommandRunner, Commands, Exit},
    config::EngineConfig,
    core::{Core, EngineEvent, Lifecycle, Next, SubmitFailure, TakenUnit},
    dialect::{ArrayPlan, Dialect, Job, JobKey, Submission, SubmitError},
    script,
};

/// Where the engine's events go (the ABI adapter turns them into the host's events).
pub trait EventSink: Send + Sync + 'static {
    /// Reports one event. Called under the engine's lock: must not block or call back into
    /// the engine.
    fn emit(&self, event: EngineEvent);
    /// The scheduler took `job` as `native_id` (before it starts, so that a host that dies
    /// meanwhile has the id to re-attach the job by). Same rules as `emit`.
    fn submitted(&self, job: JobKey, native_id: &str) {
        let _ = (job, native_id);
    }
}

/// What a thread does after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// It did something: step again.
    Worked,
    /// Nothing to do before then (or a change).
    WaitUntil(Instant),
    /// Nothing to do until something changes.
    Idle,
    /// The thread is done.
    Exit,
}

impl<T> Next<T> {
    /// The step for a `Next` that is not work.
    fn step(&self) -> Step {
        match self {
            Next::Work(_) => Step::Worked,
            Next::WaitUntil(t) => Step::WaitUntil(*t),
            Next::Idle => Step::Idle,
            Next::Exit => Step::Exit,
        }
    }
}

/// A submit worker's own state: the unit it took and waits to start.
#[derive(Debug, Default)]
pub(crate) struct SubmitWorker {
    held: Option<TakenUnit>,
}

/// What every thread shares.
pub(crate) struct Shared<D: Dialect> {
    pub dialect: D,
    pub runner: Arc<dyn CommandRunner>,
    pub clock: Arc<dyn Clock>,
    pub events: Arc<dyn EventSink>,
    pub core: Mutex<Core>,
    /// Signalled after every change (see [`Shared::changed`]).
    pub wake: Condvar,
    pub calls: CallCounts,
}

impl<D: Dialect> Shared<D> {
    pub fn new(
        dialect: D,
        config: EngineConfig,
        runner: Arc<dyn CommandRunner>,
        clock: Arc<dyn Clock>,
        events: Arc<dyn EventSink>,
    ) -> Shared<D> {
        let now = clock.now();
        Shared {
            dialect,
            runner,
            clock,
            events,
            core: Mutex::new(Core::new(config, now)),
            wake: Condvar::new(),
            calls: CallCounts::default(),
        }
    }

    /// Runs `f` on the locked core, emits the events it made (under the lock, so that events
    /// keep their order across threads), and wakes every waiting thread.
    pub fn changed<R>(&self, f: impl FnOnce(&mut Core, &mut Vec<EngineEvent>) -> R) -> R {
        let mut core = self.core.lock();
        let mut events = Vec::new();
        let r = f(&mut core, &mut events);
        for e in events {
            self.events.emit(e);
        }
        core.generation += 1;
        drop(core);
        self.wake.notify_all();
        r
    }

    fn commands(&self, core: &MutexGuard<'_, Core>) -> Commands<'_> {
        Commands {
            runner: &*self.runner,
            limit: core.cfg.command_timeout,
            counts: &self.calls,
        }
    }

    fn commands_now(&self) -> Commands<'_> {
        let core = self.core.lock();
        self.commands(&core)
    }

    // -----------------------------------------------------------------------------------------
    // The host's calls
    // -----------------------------------------------------------------------------------------

    pub fn submit(&self, jobs: Vec<Job>) -> Vec<Result<(), String>> {
        self.changed(|core, _| core.accept(&self.dialect, jobs))
    }

    pub fn adopt(&self, jobs: Vec<(Job, String)>) -> Vec<Result<(), String>> {
        let now = self.clock.now();
        self.changed(|core, _| core.adopt(&self.dialect, jobs, now))
    }

    pub fn kill(&self, keys: &[JobKey]) {
        self.changed(|core, out| out.extend(core.kill(keys)));
    }

    // -----------------------------------------------------------------------------------------
    // Submission
    // -----------------------------------------------------------------------------------------

    pub fn submit_step(&self, worker: &mut SubmitWorker) -> Step {
        let now = self.clock.now();
        let unit = match worker.held.take() {
            Some(unit) => unit,
            None => {
                let arrays = self.dialect.array_task_variable().is_some();
                match self.core.lock().take_unit(now, arrays) {
                    Next::Work(unit) => unit,
                    other => return other.step(),
                }
            }
        };
        let open = self.core.lock().lifecycle == Lifecycle::Open;
        if !open {
            // Shutdown started: the unit's jobs end killed, never submitted.
            self.changed(|core, out| core.drop_unit(&unit, out));
            return Step::Worked;
        }
        if now < unit.start_at {
            let at = unit.start_at;
            worker.held = Some(unit);
            return Step::WaitUntil(at);
        }
        self.submit_unit(unit);
        Step::Worked
    }

    /// Checks the job's directories and writes its script; an error is the job's failure.
    fn prepare(&self, job: &Job, in_array: bool) -> Result<PathBuf, String> {
        if !job.cwd.is_dir() {
            return Err(format!(
                "working directory does not exist: {}",
                job.cwd.display()
            ));
        }
        // Schedulers fail a job whose output directory is missing without a word (Slurm:
        // exit 0:53): create it first.
        if let Some(dir) = job.log_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the log directory {}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(&job.job_dir).map_err(|e| {
            format!(
                "cannot create the job directory {}: {e}",
                job.job_dir.display()
            )
        })?;
        let path = job.job_dir.join(self.dialect.script_name());
        let text = self.dialect.job_script(job, in_array)?;
        std::fs::write(&path, text)
            .map_err(|e| format!("cannot write the batch script {}: {e}", path.display()))?;
        Ok(path)
    }

    fn write_dispatcher(&self, jobs: &[Job], scripts: &[PathBuf]) -> Result<ArrayPlan, String> {
        let variable = self
            .dialect
            .array_task_variable()
            .ok_or("the dialect submits no arrays")?;
        let first = &jobs[0];
        let dir = first.run_dir.join(self.dialect.array_dir_name());
        let dispatcher = dir.join(format!("array-{}-{}.sh", first.key.0, jobs.len()));
        let first_index = self.dialect.array_first_index();
        let text = script::array_script(
            &format!("flowrun's {} backend", self.dialect.scheduler()),
            variable,
            first_index,
            scripts,
        )?;
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&dispatcher, text))
            .map_err(|e| {
                format!(
                    "cannot write the array script {}: {e}",
                    dispatcher.display()
                )
            })?;
        let slot_limit = self.core.lock().cfg.array_slot_limit;
        Ok(ArrayPlan {
            dispatcher,
            dir,
            first_index,
            slot_limit,
        })
    }

    fn submit_unit(&self, unit: TakenUnit) {
        let in_array = unit.jobs.len() > 1;
        let mut jobs = Vec::with_capacity(unit.jobs.len());
        let mut scripts = Vec::with_capacity(unit.jobs.len());
        let mut unprepared = Vec::new();
        for job in unit.jobs {
            match self.prepare(&job, in_array) {
                Ok(path) => {
                    scripts.push(path);
                    jobs.push(job);
                }
                Err(why) => unprepared.push((job.key, why)),
            }
        }
        let mut array = None;
        if in_array && !jobs.is_empty() {
            match self.write_dispatcher(&jobs, &scripts) {
                Ok(plan) => array = Some(plan),
                Err(why) => {
                    unprepared.extend(jobs.drain(..).map(|j| (j.key, why.clone())));
                }
            }
        }
        let nothing_left = jobs.is_empty();
        if !unprepared.is_empty() || nothing_left {
            self.changed(|core, out| {
                for (key, why) in unprepared {
                    core.unprepared(key, why, out);
                }
                if nothing_left {
                    core.unit_abandoned();
                }
            });
        }
        if nothing_left {
            return;
        }
        let keys: Vec<JobKey> = jobs.iter().map(|j| j.key).collect();
        let is_array = array.is_some();
        let submission = Submission {
            name: unit.name,
            jobs,
            scripts,
            array,
        };
        let result = self.dialect.submit(&self.commands_now(), &submission);
        let now = self.clock.now();
        self.changed(|core, out| match result {
            Ok(ids) if ids.len() == keys.len() => {
                for (key, id) in keys.iter().zip(&ids) {
                    self.events.submitted(*key, id);
                }
                out.extend(core.unit_submitted(
                    self.dialect.scheduler(),
                    &keys,
                    ids,
                    is_array,
                    now,
                ));
            }
            Ok(ids) => {
                let failure = SubmitFailure {
                    transient: false,
                    message: format!(
                        "the {} backend read {} job ids for {} jobs from one submission (a bug \
                         of the backend); the jobs it did submit are cancelled",
                        self.dialect.scheduler(),
                        ids.len(),
                        keys.len()
                    ),
                    ambiguous: true,
                };
                core.cancel_ids(ids);
                out.extend(core.unit_failed(&keys, &failure, now));
            }
            Err(SubmitError::Command(output)) => {
                let failure = SubmitFailure {
                    transient: output.failed_transiently() || self.dialect.is_transient(&output),
                    message: format!("{} failed: {}", output.program, output.failure()),
                    ambiguous: matches!(output.exit, Exit::TimedOut(_) | Exit::Signal(_)),
                };
                out.extend(core.unit_failed(&keys, &failure, now));
            }
            Err(SubmitError::Ambiguous(output)) => {
                let failure = SubmitFailure {
                    transient: true,
                    message: format!("{} failed: {}", output.program, output.failure()),
                    ambiguous: true,
                };
                out.extend(core.unit_failed(&keys, &failure, now));
            }
            Err(SubmitError::Rejected(message)) => {
                let failure = SubmitFailure {
                    transient: false,
                    message,
                    ambiguous: false,
                };
                out.extend(core.unit_failed(&keys, &failure, now));
            }
        });
    }

    // -----------------------------------------------------------------------------------------
    // Status
    // -----------------------------------------------------------------------------------------

    pub fn monitor_step(&self) -> Step {
        let began = self.clock.now();
        let (scope, commands) = {
            let mut core = self.core.lock();
            match core.poll_due(began) {
                Next::Work(scope) => {
                    let limit = core.cfg.command_timeout;
                    (scope, limit)
                }
                other => return other.step(),
            }
        };
        let cmd = Commands {
            runner: &*self.runner,
            limit: commands,
            counts: &self.calls,
        };
        let result = self.dialect.status(&cmd, &scope);
        let now = self.clock.now();
        let lookups = self.changed(|core, out| match result {
            Ok(rows) => {
                let (events, lookups) = core.apply_snapshot(&self.dialect, rows, began, now);
                out.extend(events);
                lookups
            }
            Err(output) => {
                tracing::warn!(
                    "{} status query failed: {}",
                    self.dialect.scheduler(),
                    output.failure()
                );
                core.poll_failed(now);
                Vec::new()
            }
        });
        if lookups.is_empty() {
            return Step::Worked;
        }
        // What the jobs left in their own files first; the scheduler is asked about the rest.
        let jobs = self.core.lock().jobs_of(&lookups);
        let mut rows = Vec::new();
        let mut ask = Vec::new();
        for (native_id, job) in &jobs {
            match self.dialect.record_in_job_files(job, native_id) {
                Some(row) => rows.push(row),
                None => ask.push(native_id.clone()),
            }
        }
        let result = if ask.is_empty() {
            Ok(Vec::new())
        } else {
            self.core.lock().counts.record_queries += 1;
            self.dialect.final_records(&cmd, &scope, &ask)
        };
        self.changed(|core, out| {
            match result {
                Ok(records) => rows.extend(records),
                Err(output) => {
                    core.counts.query_failures += 1;
                    tracing::warn!(
                        "{} final-state query failed ({}); retrying at the next poll",
                        self.dialect.scheduler(),
                        output.failure()
                    );
                }
            }
            // Rows from the job files count even when the scheduler's query failed.
            out.extend(core.apply_records(&self.dialect, rows, &lookups));
        });
        Step::Worked
    }

    // -----------------------------------------------------------------------------------------
    // Cancellation
    // -----------------------------------------------------------------------------------------

    pub fn cancel_step(&self) -> Step {
        let now = self.clock.now();
        let batch = match self.core.lock().take_cancel_batch(now) {
            Next::Work(batch) => batch,
            other => return other.step(),
        };
        let result = self.dialect.cancel(&self.commands_now(), &batch);
        let now = self.clock.now();
        self.changed(|core, _| match result {
            Ok(()) => core.cancel_done(),
            Err(output) => {
                tracing::warn!(
                    "cancelling {} {} job(s) failed ({}); retrying",
                    batch.len(),
                    self.dialect.scheduler(),
                    output.failure()
                );
                core.cancel_failed(batch, now);
            }
        });
        Step::Worked
    }

    // -----------------------------------------------------------------------------------------
    // Shutdown
    // -----------------------------------------------------------------------------------------

    /// Starts shutdown; returns whether the safety net is needed.
    pub fn begin_shutdown(&self) -> bool {
        self.changed(|core, out| {
            let (events, safety_net) = core.begin_shutdown();
            out.extend(events);
            safety_net
        })
    }

    /// Cancels every job of the run by name (once no submission is in flight).
    pub fn safety_net(&self) {
        let (scope, cmd) = {
            let core = self.core.lock();
            (core.scope(self.clock.now()), self.commands(&core))
        };
        if let Err(output) = self.dialect.cancel_all(&cmd, &scope) {
            tracing::warn!(
                "cancelling the run's {} jobs by name failed: {}",
                self.dialect.scheduler(),
                output.failure()
            );
        }
    }

    /// Ends shutdown: what did not leave the queue is lost.
    pub fn end_shutdown(&self) {
        self.changed(|core, out| out.extend(core.end_shutdown(&self.dialect)));
    }

    /// `stats()`: calls per program, the policy's counters, the dialect's own.
    pub fn stats(&self) -> String {
        let calls = self.calls.snapshot();
        let mut lines = Vec::new();
        for program in self.dialect.commands() {
            if !calls.iter().any(|(name, _, _)| name == program) {
                lines.push(format!("{program}_calls = 0\n{program}_failures = 0"));
            }
        }
        for (program, n, failures) in &calls {
            lines.push(format!(
                "{program}_calls = {n}\n{program}_failures = {failures}"
            ));
        }
        lines.sort();
        let c = self.core.lock().counts.clone();
        for (key, value) in [
            ("units_submitted", c.units_submitted),
            ("arrays_submitted", c.arrays_submitted),
            ("submit_retries", c.submit_retries),
            ("status_queries", c.status_queries),
            ("record_queries", c.record_queries),
            ("query_failures", c.query_failures),
            ("cancel_calls", c.cancel_calls),
            ("lost", c.lost),
        ] {
            lines.push(format!("{key} = {value}"));
        }
        for (key, value) in self.dialect.stats() {
            lines.push(format!("{key} = {value}"));
        }
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }
}

/// A running engine: its threads, driving one dialect.
pub struct Engine<D: Dialect> {
    shared: Arc<Shared<D>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    background: Mutex<Vec<JoinHandle<()>>>,
}

/// Runs `step` until it exits, waiting as it asks: until a deadline, or until the next change.
fn drive<D: Dialect>(shared: &Shared<D>, mut step: impl FnMut() -> Step) {
    loop {
        let generation = shared.core.lock().generation;
        let next = step();
        let mut core = shared.core.lock();
        if core.generation != generation {
            continue; // something changed while we stepped: look again
        }
        match next {
            Step::Worked => {}
            Step::WaitUntil(at) => {
                let _ = shared.wake.wait_until(&mut core, at);
            }
            Step::Idle => shared.wake.wait(&mut core),
            Step::Exit => return,
        }
    }
}

impl<D: Dialect> Engine<D> {
    /// Starts the engine's threads (named after `thread_prefix`) on the real clock.
    pub fn start(
        thread_prefix: &str,
        dialect: D,
        config: EngineConfig,
        runner: Arc<dyn CommandRunner>,
        events: Arc<dyn EventSink>,
    ) -> std::io::Result<Engine<D>> {
        let threads = config.submit_threads;
        let shared = Arc::new(Shared::new(
            dialect,
            config,
            runner,
            Arc::new(SystemClock),
            events,
        ));
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name).spawn(f)
        };
        let mut workers = Vec::new();
        for i in 0..threads {
            let s = shared.clone();
            workers.push(spawn(
                format!("{thread_prefix}-submit-{i}"),
                Box::new(move || {
                    let mut worker = SubmitWorker::default();
                    drive(&s, || s.submit_step(&mut worker))
                }),
            )?);
        }
        let s = shared.clone();
        let monitor = spawn(
            format!("{thread_prefix}-monitor"),
            Box::new(move || drive(&s, || s.monitor_step())),
        )?;
        let s = shared.clone();
        let canceller = spawn(
            format!("{thread_prefix}-cancel"),
            Box::new(move || drive(&s, || s.cancel_step())),
        )?;
        Ok(Engine {
            shared,
            workers: Mutex::new(workers),
            background: Mutex::new(vec![monitor, canceller]),
        })
    }

    /// The dialect.
    pub fn dialect(&self) -> &D {
        &self.shared.dialect
    }

    /// The engine's keys.
    pub fn config(&self) -> EngineConfig {
        self.shared.core.lock().cfg.clone()
    }

    /// Takes jobs; each answer is `Ok` (accepted: it will end with one event) or the reason it
    /// is rejected.
    pub fn submit(&self, jobs: Vec<Job>) -> Vec<Result<(), String>> {
        self.shared.submit(jobs)
    }

    /// Re-attaches jobs an earlier host of the run submitted, by native id: tracked from the
    /// next snapshot on as if this engine had submitted them (each ends with one event). An
    /// error is why one cannot be re-attached.
    pub fn adopt(&self, jobs: Vec<(Job, String)>) -> Vec<Result<(), String>> {
        self.shared.adopt(jobs)
    }

    /// Kills jobs; each still ends with one event.
    pub fn kill(&self, keys: &[JobKey]) {
        self.shared.kill(keys)
    }

    /// Stops submitting, cancels every job of the run still alive (by id, then by name), waits
    /// up to `shutdown_wait` for them to leave the queue, and stops the threads.
    pub fn shutdown(&self) {
        let safety_net = self.shared.begin_shutdown();
        // In-flight submissions finish (their jobs are then cancelled by id); units waiting
        // for their slot end killed.
        for w in self.workers.lock().drain(..) {
            let _ = w.join();
        }
        if safety_net {
            self.shared.safety_net();
        }
        let deadline = Instant::now() + self.shared.core.lock().cfg.shutdown_wait;
        let mut core = self.shared.core.lock();
        while !core.is_empty() && Instant::now() < deadline {
            let _ = self.shared.wake.wait_until(&mut core, deadline);
        }
        drop(core);
        self.shared.end_shutdown();
        for t in self.background.lock().drain(..) {
            let _ = t.join();
        }
    }

    /// Counters as TOML text.
    pub fn stats(&self) -> String {
        self.shared.stats()
    }
}
