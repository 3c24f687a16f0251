//! The `fake` backend: completes jobs by a configured policy without running anything, for
//! tests, dry runs and benchmarks. See README.md for the config keys.
//!
//! Two paths, so that a million instant jobs measure the host's scheduler and not the fake:
//! - a job of duration 0 gets its STARTED and FINISHED events straight from `submit`, on the
//!   caller's thread (the sink never blocks, so the contract allows it);
//! - a job with a duration goes into one timer thread's heap of deadlines (`timer.rs`), never a
//!   thread per job.
#![forbid(unsafe_code)]

mod config;
mod timer;

use std::{
    collections::HashSet,
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use flowrun_plugin_sdk::{
    Answer, BackendImpl, Capabilities, CapabilityFlags, Event, JobId, Jobs, PluginError, Sink,
};
use parking_lot::Mutex;

pub use config::{FakeConfig, Outcome};
use timer::{DelayedJob, Timer};

flowrun_plugin_sdk::export_plugin!(name = "fake", version = env!("CARGO_PKG_VERSION"));
flowrun_plugin_sdk::register_backend!(
    kind = "fake",
    description = "completes jobs by a configured policy without running anything (tests, dry runs, benchmarks)",
    create = create
);

/// Creates a fake backend from its TOML config.
pub fn create(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
    let config = FakeConfig::parse(config)?;
    let core = Arc::new(Core {
        timer_needed: config.has_delays(),
        config,
        sink,
        counters: Counters::default(),
    });
    let timer = if core.timer_needed {
        Some(Timer::start(core.clone())?)
    } else {
        None
    };
    let busy = core.config.busy_every.map(|every| BusyState {
        every,
        inner: Mutex::new(BusyInner::default()),
    });
    Ok(Box::new(FakeBackend {
        core,
        timer,
        busy,
        closed: AtomicBool::new(false),
    }))
}

/// What both the backend and its timer thread need to end a job.
pub(crate) struct Core {
    config: FakeConfig,
    sink: Sink,
    counters: Counters,
    timer_needed: bool,
}

#[derive(Default)]
struct Counters {
    submissions: AtomicU64,
    busy: AtomicU64,
    passed: AtomicU64,
    failed: AtomicU64,
    killed: AtomicU64,
}

impl Core {
    /// Ends a job the way its outcome says, writing its log line first if asked to.
    pub(crate) fn complete(&self, id: JobId, name: &str, log_path: &str, outcome: Outcome) {
        if self.config.write_logs {
            let line = match outcome {
                Outcome::Pass => format!("fake job {name}: pass\n"),
                Outcome::Fail => format!(
                    "fake job {name}: fail (exit code {})\n",
                    self.config.exit_code
                ),
            };
            if let Err(e) = append_line(log_path, &line) {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.sink.emit(Event::failed(
                    id,
                    format!("fake backend cannot write the log {log_path}: {e}"),
                ));
                return;
            }
        }
        let code = match outcome {
            Outcome::Pass => {
                self.counters.passed.fetch_add(1, Ordering::Relaxed);
                0
            }
            Outcome::Fail => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.config.exit_code
            }
        };
        self.sink.emit(Event::exited(id, code));
    }

    /// Ends a job as killed (on the host's request, or at shutdown).
    pub(crate) fn kill_pending(&self, job: &DelayedJob, reason: &str) {
        if self.config.write_logs {
            // Best effort: the job ends KILLED either way.
            let _ = append_line(&job.log_path, &format!("fake job {}: killed\n", job.name));
        }
        self.counters.killed.fetch_add(1, Ordering::Relaxed);
        self.sink.emit(Event::killed(job.id).with_reason(reason));
    }
}

/// Creates or truncates a job's log when the job starts: a log holds this attempt's output alone.
fn start_log(path: &str) -> std::io::Result<()> {
    std::fs::File::create(path).map(drop)
}

fn append_line(path: &str, line: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}

/// The `busy_every` policy: every Nth submission is answered BUSY. A job once turned away is
/// accepted on its next offer, so every job makes progress however submissions interleave.
struct BusyState {
    every: u64,
    inner: Mutex<BusyInner>,
}

#[derive(Default)]
struct BusyInner {
    count: u64,
    turned_away: HashSet<JobId>,
}

impl BusyState {
    /// Whether to answer BUSY to this offer of `id`.
    fn refuse(&self, id: JobId) -> bool {
        let mut inner = self.inner.lock();
        if inner.turned_away.remove(&id) {
            return false;
        }
        inner.count += 1;
        if inner.count % self.every == 0 {
            inner.turned_away.insert(id);
            return true;
        }
        false
    }
}

struct FakeBackend {
    core: Arc<Core>,
    /// Present when some job can have a duration.
    timer: Option<Timer>,
    busy: Option<BusyState>,
    closed: AtomicBool,
}

impl BackendImpl for FakeBackend {
    fn capabilities(&self) -> Capabilities {
        let mut flags = CapabilityFlags::BATCH_SUBMIT | CapabilityFlags::BATCH_KILL;
        if !self.core.config.write_logs {
            // Nothing is written, so the host need not create a directory per job: a million
            // mkdirs would otherwise dominate a scheduler benchmark.
            flags = flags | CapabilityFlags::NO_JOB_DIR;
        }
        Capabilities {
            flags,
            default_max_parallel: 0,
            max_batch: 0,
        }
    }

    fn submit(&self, jobs: Jobs<'_>) -> Vec<Answer> {
        let closed = self.closed.load(Ordering::Acquire);
        let counters = &self.core.counters;
        let mut answers = Vec::with_capacity(jobs.len());
        for job in jobs {
            let id = job.id();
            if closed {
                answers.push(Answer::rejected(id, "the fake backend has shut down"));
                continue;
            }
            if self.busy.as_ref().is_some_and(|b| b.refuse(id)) {
                counters.busy.fetch_add(1, Ordering::Relaxed);
                answers.push(Answer::busy(id));
                continue;
            }
            counters.submissions.fetch_add(1, Ordering::Relaxed);
            let config = &self.core.config;
            let outcome = config.outcome_of(job.name());
            let duration = if self.core.timer_needed {
                config.duration_of(job.name())
            } else {
                Default::default()
            };
            answers.push(Answer::accepted(id));
            if config.write_logs {
                if let Err(e) = start_log(job.log_path()) {
                    self.core.counters.failed.fetch_add(1, Ordering::Relaxed);
                    self.core.sink.emit(Event::failed(
                        id,
                        format!("fake backend cannot write the log {}: {e}", job.log_path()),
                    ));
                    continue;
                }
            }
            self.core.sink.emit(Event::started(id));
            match &self.timer {
                Some(timer) if !duration.is_zero() => timer.schedule(
                    duration,
                    DelayedJob {
                        id,
                        name: job.name().to_string(),
                        log_path: job.log_path().to_string(),
                        outcome,
                    },
                ),
                _ => self.core.complete(id, job.name(), job.log_path(), outcome),
            }
        }
        answers
    }

    fn kill(&self, ids: &[JobId]) {
        // Instant jobs have ended already; only jobs waiting on the timer can be killed.
        if let Some(timer) = &self.timer {
            timer.kill(ids);
        }
    }

    fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(timer) = &self.timer {
            timer.shutdown();
        }
    }

    fn stats(&self) -> String {
        let c = &self.core.counters;
        format!(
            "accepted = {}\nbusy = {}\npassed = {}\nfailed = {}\nkilled = {}\npending = {}\n",
            c.submissions.load(Ordering::Relaxed),
            c.busy.load(Ordering::Relaxed),
            c.passed.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.killed.load(Ordering::Relaxed),
            self.timer.as_ref().map_or(0, |t| t.pending()),
        )
    }
}

#[cfg(test)]
mod tests;
