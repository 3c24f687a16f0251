//! The Slurm backend: accepts jobs at once, submits them from a small pool of sbatch threads
//! (rate-limited, arrays optional), tracks them all with one batched status snapshot per poll
//! interval, and cancels them in batches.
//!
//! Threads (all owned here, joined by `shutdown`):
//! - `slurm-submit-N`: take a unit (one job, or one array of same-shape jobs) off the submit
//!   queue, write its script, run sbatch with retries on transient failures.
//! - `slurm-monitor`: every `poll_interval`, one `squeue --name <run tag>` for every job of the
//!   run; then, only while some job needs it, one `sacct --name <run tag>` (or, without
//!   accounting, one `scontrol show job`) for exit codes and for jobs gone from squeue.
//! - `slurm-cancel`: one `scancel` per batch of ids, retried until it gets through.
//!
//! Every job lives in `State::jobs` until its one FINISHED or LOST event; the event is always
//! emitted after the entry is removed, so no job can end twice.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use flowrun_plugin_sdk::{
    Answer, BackendImpl, Capabilities, CapabilityFlags, Event, Job, JobId, Jobs, OwnedJob,
    PluginError, Sink,
};

use crate::{config::Config, script, slurm};

/// How long one Slurm client call may take before it is killed (they time out by themselves
/// after about 9-18 s when the controller is down).
const COMMAND_LIMIT: Duration = Duration::from_secs(120);
/// The most ids one scancel call gets.
const SCANCEL_BATCH: usize = 200;
/// The longest wait between two retries of a failed Slurm call.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Counters reported by `stats()`.
#[derive(Default)]
struct Counters {
    sbatch_calls: AtomicU64,
    sbatch_failures: AtomicU64,
    arrays_submitted: AtomicU64,
    squeue_calls: AtomicU64,
    sacct_calls: AtomicU64,
    scontrol_calls: AtomicU64,
    scancel_calls: AtomicU64,
    query_failures: AtomicU64,
}

/// Where a job stands on our side.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// In the submit queue.
    Waiting,
    /// Its sbatch is running (or being retried).
    Submitting,
    /// Slurm knows it as `native_id`.
    Submitted { native_id: String, at: Instant },
}

/// Whether `sacct` works on this cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Accounting {
    Unknown,
    Works,
    /// "Slurm accounting storage is disabled": use scontrol, and never call sacct again.
    Disabled,
}

struct Tracked {
    spec: OwnedJob,
    /// The sanitized run tag: the Slurm job name.
    tag: String,
    phase: Phase,
    kill_requested: bool,
    started_reported: bool,
    /// squeue showed this final state (with its reason), and its exit code is still needed.
    awaiting_exit_code: Option<(String, String, Instant)>,
    /// The job is in an explicit unknown state: missing from squeue since then.
    missing_since: Option<Instant>,
    /// Pending for a reason that means Slurm will never start it (PartitionConfig, ...), since then.
    never_runs_since: Option<Instant>,
    /// We cancelled the job because it could never run: its CANCELLED end is this failure.
    doomed: Option<String>,
}

impl Tracked {
    /// The outcome of a final Slurm state for this job.
    fn judge(&self, state: &str, exit: Option<(i32, i32)>) -> slurm::Outcome {
        if let (Some(why), "CANCELLED") = (&self.doomed, state) {
            return slurm::Outcome::Failed(why.clone(), None);
        }
        let log_path = self.spec.job().log_path();
        let log_missing = !Path::new(log_path).exists();
        slurm::outcome(state, exit, self.kill_requested, log_path, log_missing)
    }
}

#[derive(Default)]
struct State {
    jobs: HashMap<JobId, Tracked>,
    by_native: HashMap<String, JobId>,
    submit_queue: VecDeque<JobId>,
    scancel_queue: VecDeque<String>,
    tags: BTreeSet<String>,
    accounting: Option<Accounting>,
    /// `shutdown` started: no new jobs, no more sbatch retries.
    closing: bool,
    /// The monitor and cancel threads must exit.
    stopped: bool,
}

/// What all threads share.
struct Shared {
    config: Config,
    sink: Sink,
    created: Instant,
    state: Mutex<State>,
    /// Wakes the submit workers.
    submit_wake: Condvar,
    /// Wakes the cancel thread.
    cancel_wake: Condvar,
    /// Signalled by the monitor after every snapshot, and to stop it.
    monitor_wake: Condvar,
    /// The earliest start of the next sbatch call (the `submit_rate` limiter).
    next_submit_slot: Mutex<Instant>,
    counters: Counters,
}

/// The backend instance handed to the host.
pub struct SlurmBackend {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    background: Mutex<Vec<JoinHandle<()>>>,
}

/// What a submit worker sends to sbatch in one call.
enum Unit {
    Single(Box<OwnedJob>),
    Array(Vec<OwnedJob>),
}

/// Jobs with the same shape can share one `sbatch --array`.
#[derive(PartialEq, Eq, Hash, Clone, Debug)]
struct Shape {
    tag: String,
    cpus: u32,
    memory_mb: Option<u64>,
    time_minutes: Option<u64>,
}

impl Shape {
    fn of(tracked: &Tracked) -> Shape {
        let job = tracked.spec.job();
        Shape {
            tag: tracked.tag.clone(),
            cpus: job.resources().cpus().max(1),
            memory_mb: job.resources().memory_mb(),
            time_minutes: timeout_ms(job).map(slurm::time_limit_minutes),
        }
    }
}

/// The job's time limit in milliseconds, as Slurm's `--time` is computed from it.
fn timeout_ms(job: Job<'_>) -> Option<u64> {
    job.timeout()
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

/// The Slurm job name for a run tag: Slurm does not escape names in its output, so keep to
/// characters that cannot break the `|`-separated formats.
fn sanitize_tag(tag: &str) -> String {
    let s: String = tag
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

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic on one of our threads must not wedge every other call.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn backoff(failures: u32, base: Duration) -> Duration {
    base.saturating_mul(1 << failures.min(6)).min(MAX_BACKOFF)
}

impl SlurmBackend {
    pub fn new(config: Config, sink: Sink) -> Result<SlurmBackend, PluginError> {
        let shared = Arc::new(Shared {
            config,
            sink,
            created: Instant::now(),
            state: Mutex::new(State::default()),
            submit_wake: Condvar::new(),
            cancel_wake: Condvar::new(),
            monitor_wake: Condvar::new(),
            next_submit_slot: Mutex::new(Instant::now()),
            counters: Counters::default(),
        });
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(f)
                .map_err(|e| PluginError::io(format!("cannot start thread {name}: {e}")))
        };
        let mut workers = Vec::new();
        for i in 0..shared.config.submit_threads {
            let s = shared.clone();
            workers.push(spawn(
                format!("slurm-submit-{i}"),
                Box::new(move || s.submit_worker()),
            )?);
        }
        let s = shared.clone();
        let monitor = spawn("slurm-monitor".into(), Box::new(move || s.monitor()))?;
        let s = shared.clone();
        let canceller = spawn("slurm-cancel".into(), Box::new(move || s.canceller()))?;
        Ok(SlurmBackend {
            shared,
            workers: Mutex::new(workers),
            background: Mutex::new(vec![monitor, canceller]),
        })
    }
}

impl Shared {
    fn emit_all(&self, events: Vec<Event>) {
        for e in events {
            self.sink.emit(e);
        }
    }

    /// Removes a job from the books and returns its final event (plus a STARTED event first
    /// when the job evidently ran but was never seen running between two snapshots).
    fn finish(state: &mut State, id: JobId, outcome: slurm::Outcome, ran: bool) -> Vec<Event> {
        let Some(job) = state.jobs.remove(&id) else {
            return Vec::new();
        };
        let native = match &job.phase {
            Phase::Submitted { native_id, .. } => {
                state.by_native.remove(native_id);
                Some(native_id.clone())
            }
            _ => None,
        };
        let mut events = Vec::new();
        if ran && !job.started_reported {
            let mut started = Event::started(id);
            if let Some(n) = &native {
                started = started.with_attr("native_id", n.clone());
            }
            events.push(started);
        }
        let mut end = match outcome {
            slurm::Outcome::Exited(code) => Event::exited(id, code),
            slurm::Outcome::Signaled(sig) => Event::signaled(id, sig),
            slurm::Outcome::Failed(why, code) => match code {
                Some(code) => Event::failed(id, why).with_exit_code(code),
                None => Event::failed(id, why),
            },
            slurm::Outcome::Killed => Event::killed(id),
        };
        if let Some(n) = native {
            end = end.with_attr("native_id", n);
        }
        events.push(end);
        events
    }

    fn lost(state: &mut State, id: JobId, why: String) -> Vec<Event> {
        let Some(job) = state.jobs.remove(&id) else {
            return Vec::new();
        };
        if let Phase::Submitted { native_id, .. } = &job.phase {
            state.by_native.remove(native_id);
        }
        vec![Event::lost(id, why)]
    }

    // -----------------------------------------------------------------------------------------
    // Submission
    // -----------------------------------------------------------------------------------------

    fn submit_worker(&self) {
        loop {
            let unit = {
                let mut state = lock(&self.state);
                loop {
                    if let Some(unit) = self.take_unit(&mut state) {
                        break unit;
                    }
                    if state.closing {
                        return;
                    }
                    state = self
                        .submit_wake
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
            };
            match unit {
                Unit::Single(spec) => self.submit_single(*spec),
                Unit::Array(specs) => self.submit_array(specs),
            }
        }
    }

    /// Takes the next unit off the queue: the first job, with every queued job of the same
    /// shape when arrays are on and there are enough of them.
    fn take_unit(&self, state: &mut State) -> Option<Unit> {
        let first = loop {
            let id = state.submit_queue.pop_front()?;
            if state
                .jobs
                .get(&id)
                .is_some_and(|j| j.phase == Phase::Waiting)
            {
                break id;
            }
        };
        let mut ids = vec![first];
        if self.config.arrays {
            let shape = Shape::of(&state.jobs[&first]);
            let same: Vec<JobId> = state
                .submit_queue
                .iter()
                .copied()
                .filter(|id| {
                    state
                        .jobs
                        .get(id)
                        .is_some_and(|j| j.phase == Phase::Waiting && Shape::of(j) == shape)
                })
                .take(self.config.array_max_size - 1)
                .collect();
            if same.len() + 1 >= self.config.array_min_size {
                let taken: HashSet<JobId> = same.iter().copied().collect();
                state.submit_queue.retain(|id| !taken.contains(id));
                ids.extend(same);
            }
        }
        let specs: Vec<OwnedJob> = ids
            .iter()
            .map(|id| {
                let job = state.jobs.get_mut(id).expect("queued jobs are tracked");
                job.phase = Phase::Submitting;
                job.spec.clone()
            })
            .collect();
        Some(if specs.len() == 1 {
            Unit::Single(Box::new(specs.into_iter().next().unwrap()))
        } else {
            Unit::Array(specs)
        })
    }

    /// Checks the job's directories and writes its script; an error is the job's failure reason.
    fn prepare(&self, spec: Job<'_>, redirect_to_log: bool) -> Result<PathBuf, String> {
        if !Path::new(spec.cwd()).is_dir() {
            return Err(format!("working directory does not exist: {}", spec.cwd()));
        }
        // Slurm fails a job whose --output directory is missing without writing anything
        // (exit 0:53): create it first.
        let log = Path::new(spec.log_path());
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the log directory {}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(spec.job_dir())
            .map_err(|e| format!("cannot create the job directory {}: {e}", spec.job_dir()))?;
        let path = Path::new(spec.job_dir()).join("slurm-job.sh");
        std::fs::write(&path, script::job_script(spec, redirect_to_log))
            .map_err(|e| format!("cannot write the batch script {}: {e}", path.display()))?;
        Ok(path)
    }

    /// The sbatch options shared by every job of a shape.
    fn shape_args(&self, spec: Job<'_>, tag: &str) -> Vec<String> {
        let c = &self.config;
        let mut args = vec!["--parsable".to_string(), format!("--job-name={tag}")];
        args.push(
            if c.requeue {
                "--requeue"
            } else {
                "--no-requeue"
            }
            .into(),
        );
        if let Some(ms) = timeout_ms(spec) {
            args.push(format!("--time={}", slurm::time_limit_minutes(ms)));
        }
        args.push(format!(
            "--cpus-per-task={}",
            spec.resources().cpus().max(1)
        ));
        if let Some(mb) = spec.resources().memory_mb() {
            args.push(format!("--mem={mb}M"));
        }
        for (key, value) in [
            ("--partition", &c.partition),
            ("--account", &c.account),
            ("--qos", &c.qos),
        ] {
            if let Some(v) = value {
                args.push(format!("{key}={v}"));
            }
        }
        args.extend(c.sbatch_args.iter().cloned());
        args
    }

    fn submit_single(&self, spec: OwnedJob) {
        let spec = spec.job();
        let script = match self.prepare(spec, false) {
            Ok(p) => p,
            Err(why) => return self.submission_failed(&[spec.id()], why),
        };
        let tag = sanitize_tag(spec.run_tag());
        let mut args = self.shape_args(spec, &tag);
        args.push(format!(
            "--output={}",
            slurm::output_pattern(spec.log_path())
        ));
        args.push(format!("--chdir={}", spec.cwd()));
        args.push(script.to_string_lossy().into_owned());
        match self.sbatch(&args) {
            Ok(id) => self.submitted(vec![(spec.id(), id)]),
            Err(why) => self.submission_failed(&[spec.id()], format!("sbatch failed: {why}")),
        }
    }

    fn submit_array(&self, specs: Vec<OwnedJob>) {
        let mut members = Vec::new();
        let mut scripts = Vec::new();
        for spec in specs {
            match self.prepare(spec.job(), true) {
                Ok(p) => {
                    scripts.push(p.to_string_lossy().into_owned());
                    members.push(spec);
                }
                Err(why) => self.submission_failed(&[spec.id()], why),
            }
        }
        let Some(first) = members.first().map(OwnedJob::job) else {
            return;
        };
        let ids: Vec<JobId> = members.iter().map(OwnedJob::id).collect();
        // The dispatcher script and Slurm's own per-task output (messages such as "CANCELLED
        // DUE TO TIME LIMIT") live beside the run, since a member writes its log itself.
        let dir = Path::new(first.run_dir()).join("slurm-arrays");
        let path = dir.join(format!("array-{}-{}.sh", first.id().0, members.len()));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&path, script::array_script(&scripts)));
        if let Err(e) = written {
            return self.submission_failed(
                &ids,
                format!("cannot write the array script {}: {e}", path.display()),
            );
        }
        let tag = sanitize_tag(first.run_tag());
        let mut args = self.shape_args(first, &tag);
        args.push(format!("--array=0-{}", members.len() - 1));
        args.push(format!(
            "--output={}/%A_%a.out",
            slurm::output_pattern(&dir.to_string_lossy())
        ));
        args.push(format!("--chdir={}", first.run_dir()));
        args.push(path.to_string_lossy().into_owned());
        match self.sbatch(&args) {
            Ok(base) => {
                self.counters
                    .arrays_submitted
                    .fetch_add(1, Ordering::Relaxed);
                self.submitted(
                    ids.into_iter()
                        .enumerate()
                        .map(|(i, id)| (id, format!("{base}_{i}")))
                        .collect(),
                )
            }
            Err(why) => self.submission_failed(&ids, format!("sbatch failed: {why}")),
        }
    }

    /// Waits for the next sbatch slot of the `submit_rate` limiter.
    fn wait_submit_slot(&self) {
        let wait = {
            let mut next = self
                .next_submit_slot
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.config.submit_spacing;
            slot - now
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Runs sbatch, retrying transient failures (controller unreachable) with backoff for up
    /// to `submit_retry_for`. Returns the job id, or the error text.
    fn sbatch(&self, args: &[String]) -> Result<String, String> {
        let began = Instant::now();
        let mut failures = 0;
        loop {
            self.wait_submit_slot();
            self.counters.sbatch_calls.fetch_add(1, Ordering::Relaxed);
            let out = slurm::run("sbatch", args, COMMAND_LIMIT);
            if out.ok() {
                return slurm::parse_sbatch_id(&out.stdout).ok_or_else(|| {
                    format!(
                        "cannot read a job id in sbatch's output {:?}",
                        out.stdout.trim()
                    )
                });
            }
            self.counters
                .sbatch_failures
                .fetch_add(1, Ordering::Relaxed);
            let retry = slurm::is_transient(&out) && began.elapsed() < self.config.submit_retry_for;
            if !retry || lock(&self.state).closing {
                return Err(out.failure());
            }
            let wait = backoff(failures, Duration::from_secs(1));
            tracing::warn!(
                "sbatch failed ({}); retrying in {}s",
                out.failure(),
                wait.as_secs()
            );
            failures += 1;
            // Sleep, but give up at once when shutdown starts.
            let state = lock(&self.state);
            let (state, _) = self
                .submit_wake
                .wait_timeout_while(state, wait, |s| !s.closing)
                .unwrap_or_else(|p| p.into_inner());
            if state.closing {
                return Err(format!(
                    "{} (not retried: flowrun is shutting down)",
                    out.failure()
                ));
            }
        }
    }

    /// Records the Slurm ids of submitted jobs; cancels those killed meanwhile.
    fn submitted(&self, ids: Vec<(JobId, String)>) {
        let mut state = lock(&self.state);
        let mut cancel = false;
        for (id, native_id) in ids {
            let Some(job) = state.jobs.get_mut(&id) else {
                // Should not happen (a submitting job is only removed by its own outcome), but
                // never leave a job running unseen.
                state.scancel_queue.push_back(native_id);
                cancel = true;
                continue;
            };
            job.phase = Phase::Submitted {
                native_id: native_id.clone(),
                at: Instant::now(),
            };
            if job.kill_requested {
                state.scancel_queue.push_back(native_id.clone());
                cancel = true;
            }
            state.by_native.insert(native_id, id);
        }
        drop(state);
        if cancel {
            self.cancel_wake.notify_one();
        }
    }

    fn submission_failed(&self, ids: &[JobId], why: String) {
        let mut state = lock(&self.state);
        let mut events = Vec::new();
        for id in ids {
            let killed = state.jobs.get(id).is_some_and(|j| j.kill_requested);
            let outcome = if killed {
                slurm::Outcome::Killed
            } else {
                slurm::Outcome::Failed(why.clone(), None)
            };
            events.extend(Self::finish(&mut state, *id, outcome, false));
        }
        drop(state);
        self.monitor_wake.notify_all();
        self.emit_all(events);
    }

    // -----------------------------------------------------------------------------------------
    // Status
    // -----------------------------------------------------------------------------------------

    fn monitor(&self) {
        let interval = self.config.poll_interval;
        let mut next_poll = Instant::now();
        let mut failures = 0u32;
        loop {
            {
                let state = lock(&self.state);
                let wait = next_poll.saturating_duration_since(Instant::now());
                let (state, _) = self
                    .monitor_wake
                    .wait_timeout_while(state, wait, |s| !s.stopped)
                    .unwrap_or_else(|p| p.into_inner());
                if state.stopped {
                    return;
                }
                if Instant::now() < next_poll {
                    continue; // woken early (a job ended): nothing to do yet
                }
            }
            let began = Instant::now();
            match self.poll_once(began) {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!("Slurm status queries work again");
                    }
                    failures = 0;
                    next_poll = began + interval;
                }
                Err(why) => {
                    self.counters.query_failures.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff(failures, interval).max(interval);
                    tracing::warn!(
                        "Slurm status query failed ({why}); retrying in {}s",
                        wait.as_secs_f32()
                    );
                    failures += 1;
                    next_poll = Instant::now() + wait;
                }
            }
            self.monitor_wake.notify_all();
        }
    }

    /// One status snapshot: one squeue, then at most one sacct or scontrol. A failed query
    /// changes no job's state.
    fn poll_once(&self, began: Instant) -> Result<(), String> {
        let tags: Vec<String> = {
            let state = lock(&self.state);
            if !state
                .jobs
                .values()
                .any(|j| matches!(j.phase, Phase::Submitted { .. }))
            {
                return Ok(());
            }
            state.tags.iter().cloned().collect()
        };
        let names = tags.join(",");
        self.counters.squeue_calls.fetch_add(1, Ordering::Relaxed);
        let out = slurm::run(
            "squeue",
            &[
                "-h",
                "-r",
                "-t",
                "all",
                "-o",
                slurm::SQUEUE_FORMAT,
                &format!("--name={names}"),
            ]
            .map(String::from),
            COMMAND_LIMIT,
        );
        if !out.ok() {
            return Err(format!("squeue: {}", out.failure()));
        }
        let rows: HashMap<String, slurm::QueueRow> = slurm::parse_squeue(&out.stdout)
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();

        let now = Instant::now();
        let mut events = Vec::new();
        let mut need_detail: Vec<String> = Vec::new();
        let mut to_cancel: Vec<String> = Vec::new();
        let accounting = {
            let mut state = lock(&self.state);
            let accounting = state.accounting.unwrap_or(Accounting::Unknown);
            let ids: Vec<JobId> = state.jobs.keys().copied().collect();
            for id in ids {
                let job = state.jobs.get_mut(&id).expect("listed above");
                let Phase::Submitted { native_id, at } = job.phase.clone() else {
                    continue;
                };
                if at > began {
                    continue; // submitted after the query started: not expected in it
                }
                match rows.get(&native_id) {
                    Some(row) => {
                        job.missing_since = None;
                        match slurm::classify(&row.state) {
                            slurm::StateClass::Queued if slurm::never_runs(&row.reason) => {
                                // Slurm accepted a request it can never satisfy (for example
                                // more CPUs than any node has): it would pend forever.
                                let since = *job.never_runs_since.get_or_insert(now);
                                if now.duration_since(since) > self.config.lost_after
                                    && job.doomed.is_none()
                                    && !job.kill_requested
                                {
                                    job.doomed = Some(format!(
                                        "Slurm will never start this job: it is PENDING with reason {} \
                                         (the request exceeds what the partition offers: check cpus, memory, \
                                         time limit and partition)",
                                        row.reason
                                    ));
                                    to_cancel.push(native_id);
                                }
                            }
                            slurm::StateClass::Queued => job.never_runs_since = None,
                            slurm::StateClass::Running => {
                                if !job.started_reported {
                                    job.started_reported = true;
                                    events.push(
                                        Event::started(id)
                                            .with_attr("native_id", native_id.clone()),
                                    );
                                }
                            }
                            slurm::StateClass::Final if slurm::needs_exit_code(&row.state) => {
                                let since =
                                    job.awaiting_exit_code.as_ref().map(|a| a.2).unwrap_or(now);
                                if now.duration_since(since) > self.config.lost_after {
                                    // The exit code never came (accounting down?): report what we know.
                                    let outcome = slurm::Outcome::Failed(
                                        format!(
                                            "Slurm reported {} ({}), exit code unknown",
                                            row.state, row.reason
                                        ),
                                        None,
                                    );
                                    events.extend(Self::finish(&mut state, id, outcome, true));
                                } else {
                                    job.awaiting_exit_code =
                                        Some((row.state.clone(), row.reason.clone(), since));
                                    need_detail.push(native_id);
                                }
                            }
                            slurm::StateClass::Final => {
                                let ran = row.state != "CANCELLED" || job.started_reported;
                                let outcome = job.judge(&row.state, None);
                                events.extend(Self::finish(&mut state, id, outcome, ran));
                            }
                        }
                    }
                    None => {
                        // The explicit unknown state: not (or no longer) visible in squeue.
                        let since = *job.missing_since.get_or_insert(now);
                        if now.duration_since(since) > self.config.lost_after {
                            let why = if accounting == Accounting::Disabled {
                                format!(
                                    "Slurm job {native_id} vanished from squeue and accounting is disabled, \
                                     so how it ended is unknown"
                                )
                            } else {
                                format!(
                                    "Slurm job {native_id} vanished from squeue and sacct has no final state \
                                     for it after {}s",
                                    self.config.lost_after.as_secs()
                                )
                            };
                            events.extend(Self::lost(&mut state, id, why));
                        } else if accounting != Accounting::Disabled {
                            need_detail.push(native_id);
                        }
                    }
                }
            }
            state.scancel_queue.extend(to_cancel.iter().cloned());
            accounting
        };
        if !to_cancel.is_empty() {
            self.cancel_wake.notify_one();
        }
        self.emit_all(events);
        if !need_detail.is_empty() {
            self.resolve_finals(&tags, &need_detail, accounting);
        }
        Ok(())
    }

    /// Looks up final states and exit codes for `native_ids`: one sacct call when accounting
    /// works, else one scontrol call. Jobs it does not settle stay as they are.
    fn resolve_finals(&self, tags: &[String], native_ids: &[String], accounting: Accounting) {
        let mut rows = None;
        if accounting != Accounting::Disabled {
            // sacct defaults to "since midnight" with --name: cover the backend's whole life.
            let since = self.created.elapsed().as_secs() + 3600;
            self.counters.sacct_calls.fetch_add(1, Ordering::Relaxed);
            let out = slurm::run(
                "sacct",
                &[
                    "-X".to_string(),
                    "-n".into(),
                    "-P".into(),
                    "-o".into(),
                    "JobID,State,ExitCode".into(),
                    format!("--name={}", tags.join(",")),
                    "-S".into(),
                    format!("now-{since}"),
                ],
                COMMAND_LIMIT,
            );
            if out.ok() {
                lock(&self.state).accounting = Some(Accounting::Works);
                rows = Some(slurm::parse_sacct(&out.stdout));
            } else if format!("{} {}", out.stderr, out.stdout)
                .contains("accounting storage is disabled")
            {
                tracing::info!(
                    "Slurm accounting is disabled: exit codes come from scontrol from now on"
                );
                lock(&self.state).accounting = Some(Accounting::Disabled);
            } else {
                self.counters.query_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "sacct failed ({}); retrying at the next poll",
                    out.failure()
                );
                return;
            }
        }
        let rows = match rows {
            Some(rows) => rows,
            None => {
                // Without accounting only the controller knows, and only for MinJobAge after the
                // end: one scontrol call, for one job (array) id or for all jobs.
                let bases: BTreeSet<&str> = native_ids
                    .iter()
                    .map(|n| n.split('_').next().unwrap_or(n))
                    .collect();
                let mut args = vec!["show".to_string(), "job".into(), "-o".into()];
                if bases.len() == 1 {
                    args.push(bases.first().unwrap().to_string());
                }
                self.counters.scontrol_calls.fetch_add(1, Ordering::Relaxed);
                let out = slurm::run("scontrol", &args, COMMAND_LIMIT);
                if !out.ok() {
                    self.counters.query_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "scontrol failed ({}); retrying at the next poll",
                        out.failure()
                    );
                    return;
                }
                slurm::parse_scontrol(&out.stdout, tags)
            }
        };
        let wanted: HashSet<&String> = native_ids.iter().collect();
        let mut events = Vec::new();
        let mut state = lock(&self.state);
        for row in rows {
            if !wanted.contains(&row.id) || slurm::classify(&row.state) != slurm::StateClass::Final
            {
                continue; // not ours, or not over yet (sacct lags, and after a controller restart)
            }
            let Some(&id) = state.by_native.get(&row.id) else {
                continue;
            };
            let job = &state.jobs[&id];
            let outcome = job.judge(&row.state, Some((row.exit_code, row.signal)));
            let ran = row.state != "CANCELLED" || job.started_reported;
            events.extend(Self::finish(&mut state, id, outcome, ran));
        }
        drop(state);
        self.emit_all(events);
    }

    // -----------------------------------------------------------------------------------------
    // Cancellation
    // -----------------------------------------------------------------------------------------

    fn canceller(&self) {
        let mut failures = 0u32;
        loop {
            let batch: Vec<String> = {
                let mut state = lock(&self.state);
                while state.scancel_queue.is_empty() && !state.stopped {
                    state = self
                        .cancel_wake
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
                if state.scancel_queue.is_empty() {
                    return;
                }
                let n = state.scancel_queue.len().min(SCANCEL_BATCH);
                let mut batch: Vec<String> = state.scancel_queue.drain(..n).collect();
                batch.sort();
                batch.dedup();
                batch
            };
            self.counters.scancel_calls.fetch_add(1, Ordering::Relaxed);
            let out = slurm::run("scancel", &batch, COMMAND_LIMIT);
            if out.ok() {
                failures = 0;
                continue;
            }
            // scancel is quiet and exits 0 for unknown or finished ids, so a failure means the
            // controller did not get the request: retry, but only for jobs still tracked.
            let wait = backoff(failures, Duration::from_secs(1));
            tracing::warn!(
                "scancel failed ({}); retrying in {}s",
                out.failure(),
                wait.as_secs()
            );
            failures += 1;
            let mut state = lock(&self.state);
            for native in batch.into_iter().rev() {
                if state.by_native.contains_key(&native) {
                    state.scancel_queue.push_front(native);
                }
            }
            if state.stopped {
                return;
            }
            let _ = self
                .cancel_wake
                .wait_timeout_while(state, wait, |s| !s.stopped);
        }
    }

    fn request_kill(&self, ids: &[JobId]) {
        let mut state = lock(&self.state);
        let mut events = Vec::new();
        let mut cancel = false;
        for id in ids {
            let Some(job) = state.jobs.get_mut(id) else {
                continue;
            };
            if job.kill_requested {
                continue;
            }
            job.kill_requested = true;
            match job.phase.clone() {
                Phase::Waiting => {
                    state.submit_queue.retain(|q| q != id);
                    events.extend(Self::finish(&mut state, *id, slurm::Outcome::Killed, false));
                }
                // The submit worker cancels it as soon as sbatch tells the id.
                Phase::Submitting => {}
                Phase::Submitted { native_id, .. } => {
                    state.scancel_queue.push_back(native_id);
                    cancel = true;
                }
            }
        }
        drop(state);
        if cancel {
            self.cancel_wake.notify_one();
        }
        self.emit_all(events);
    }
}

impl BackendImpl for SlurmBackend {
    fn capabilities(&self) -> Capabilities {
        let mut flags = CapabilityFlags::BATCH_SUBMIT
            | CapabilityFlags::BATCH_KILL
            | CapabilityFlags::ENFORCES_TIMEOUT;
        if self.shared.config.arrays {
            flags = flags | CapabilityFlags::ARRAYS;
        }
        // No cap by default: Slurm queues what it cannot run yet. Sites set max_parallel.
        Capabilities {
            flags,
            default_max_parallel: 0,
            max_batch: 0,
        }
    }

    fn submit(&self, jobs: Jobs<'_>) -> Vec<Answer> {
        let mut state = lock(&self.shared.state);
        let answers = jobs
            .iter()
            .map(|spec| {
                let id = spec.id();
                if state.closing {
                    return Answer::rejected(id, "the Slurm backend is shutting down");
                }
                if spec.interactive() {
                    return Answer::rejected(
                        id,
                        "the Slurm backend cannot run interactive jobs (they need your terminal); \
                         use a local backend for this job",
                    );
                }
                if state.jobs.contains_key(&id) {
                    return Answer::rejected(id, format!("job id {} was already submitted", id.0));
                }
                if let Some(bad) = spec.env().find(|kv| !script::valid_env_name(kv.0)) {
                    return Answer::rejected(
                        id,
                        format!(
                            "environment variable name {:?} cannot be exported by a batch script",
                            bad.0
                        ),
                    );
                }
                let tag = sanitize_tag(spec.run_tag());
                state.tags.insert(tag.clone());
                state.jobs.insert(
                    id,
                    Tracked {
                        spec: spec.to_owned(),
                        tag,
                        phase: Phase::Waiting,
                        kill_requested: false,
                        started_reported: false,
                        awaiting_exit_code: None,
                        missing_since: None,
                        never_runs_since: None,
                        doomed: None,
                    },
                );
                state.submit_queue.push_back(id);
                Answer::accepted(id)
            })
            .collect();
        drop(state);
        self.shared.submit_wake.notify_all();
        answers
    }

    fn kill(&self, ids: &[JobId]) {
        self.shared.request_kill(ids);
    }

    fn shutdown(&self) {
        let shared = &self.shared;
        let (events, live_tags) = {
            let mut state = lock(&shared.state);
            if state.stopped {
                return;
            }
            state.closing = true;
            let ids: Vec<JobId> = state.jobs.keys().copied().collect();
            let mut events = Vec::new();
            for id in &ids {
                let job = state.jobs.get_mut(id).expect("listed above");
                job.kill_requested = true;
                match job.phase.clone() {
                    Phase::Waiting => events.extend(Shared::finish(
                        &mut state,
                        *id,
                        slurm::Outcome::Killed,
                        false,
                    )),
                    Phase::Submitting => {}
                    Phase::Submitted { native_id, .. } => state.scancel_queue.push_back(native_id),
                }
            }
            state.submit_queue.clear();
            let live_tags: Vec<String> = if state.jobs.is_empty() {
                Vec::new()
            } else {
                state.tags.iter().cloned().collect()
            };
            (events, live_tags)
        };
        shared.emit_all(events);
        shared.submit_wake.notify_all();
        shared.cancel_wake.notify_all();
        // In-flight sbatch calls finish (without retries); their jobs are cancelled by id.
        for w in self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = w.join();
        }
        if !live_tags.is_empty() {
            // Safety net: anything of the run that Slurm has but we have no id for (an sbatch
            // that timed out after the controller took the job) goes too.
            shared
                .counters
                .scancel_calls
                .fetch_add(1, Ordering::Relaxed);
            let out = slurm::run(
                "scancel",
                &[format!("--name={}", live_tags.join(","))],
                COMMAND_LIMIT,
            );
            if !out.ok() {
                tracing::warn!(
                    "scancel --name={} failed: {}",
                    live_tags.join(","),
                    out.failure()
                );
            }
        }
        // Wait (bounded) until the monitor has seen every job end.
        let deadline = Instant::now() + shared.config.shutdown_wait;
        let mut state = lock(&shared.state);
        while !state.jobs.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = shared
                .monitor_wake
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let mut events = Vec::new();
        let ids: Vec<JobId> = state.jobs.keys().copied().collect();
        for id in ids {
            let native = match &state.jobs[&id].phase {
                Phase::Submitted { native_id, .. } => native_id.clone(),
                _ => "(no id)".into(),
            };
            events.extend(Shared::lost(
                &mut state,
                id,
                format!(
                    "Slurm job {native} was cancelled but did not leave the queue within {}s; check `squeue -j {native}`",
                    shared.config.shutdown_wait.as_secs()
                ),
            ));
        }
        state.stopped = true;
        drop(state);
        shared.emit_all(events);
        shared.monitor_wake.notify_all();
        shared.cancel_wake.notify_all();
        for t in self
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = t.join();
        }
    }

    fn stats(&self) -> String {
        let c = &self.shared.counters;
        let accounting = match lock(&self.shared.state).accounting {
            Some(Accounting::Works) => "works",
            Some(Accounting::Disabled) => "disabled",
            _ => "unknown",
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "sbatch_calls = {}\nsbatch_failures = {}\narrays_submitted = {}\nsqueue_calls = {}\nsacct_calls = {}\n\
             scontrol_calls = {}\nscancel_calls = {}\nquery_failures = {}\naccounting = \"{accounting}\"\n",
            get(&c.sbatch_calls),
            get(&c.sbatch_failures),
            get(&c.arrays_submitted),
            get(&c.squeue_calls),
            get(&c.sacct_calls),
            get(&c.scontrol_calls),
            get(&c.scancel_calls),
            get(&c.query_failures),
        )
    }
}
