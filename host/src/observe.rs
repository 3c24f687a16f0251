//! Run events — the contract between the run loop and every observer (the built-in status
//! display, plugin observers such as JUnit) — and the hub that delivers them.
//!
//! Each plugin observer runs on its own thread behind a bounded queue of event batches. The run
//! loop never blocks on an observer: when an observer's queue is full, the batches it had no
//! room for are held (shared, never copied) and go out together as soon as the queue has room.
//! Nothing is dropped; a slow observer only delays itself.
//!
//! In-process observers ([`LocalObserver`], such as the built-in status display) get the very
//! same batches, by reference, on the loop's thread, before the plugin observers: they must do
//! O(1) work per event and never block (the display hands its terminal output to a thread of
//! its own).
//!
//! Events are cheap to build: names are shared (`Arc<str>`), and what only some events carry
//! is an `Option` left empty.

use std::{
    fmt,
    path::PathBuf,
    sync::{
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::sched::{JobIx, Status};

/// A job status change, as observers see it.
#[derive(Debug, Clone)]
pub struct JobStatusEvent {
    /// When, in microseconds since the Unix epoch.
    pub time_us: i64,
    /// The job's index in the flow (and in RUN_STARTED's list).
    pub job_ix: JobIx,
    /// The job's name.
    pub job: Arc<str>,
    /// The backend instance.
    pub backend: Arc<str>,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Before.
    pub old: Status,
    /// After.
    pub new: Status,
    /// Why (every terminal status but passed; empty otherwise).
    pub reason: String,
    /// The reason's stable kind word (`exit_code`, `timeout`, ...), with the reason.
    pub reason_kind: Option<&'static str>,
    /// The exit code, when the job exited.
    pub exit_code: Option<i32>,
    /// Seconds it ran.
    pub duration_s: Option<f64>,
    /// Its log.
    pub log: Option<PathBuf>,
    /// For a fail-pattern match: the line number.
    pub fail_line: Option<u64>,
    /// For a fail-pattern match: the line.
    pub fail_text: Option<String>,
    /// The cluster's id of the job, when known.
    pub native_id: Option<Arc<str>>,
    /// On a change to Running: what the job holds while it runs, `cpus=N[,NAME=AMOUNT...]`.
    pub resources: Option<Arc<str>>,
    /// On a terminal status: CPU seconds of the job's process tree, when the backend knows.
    pub cpu_s: Option<f64>,
    /// On a terminal status: peak memory of the tree in MiB, when the backend knows.
    pub max_rss_mb: Option<f64>,
    /// On a terminal status: the backend's extra detail, when it gave one besides the reason.
    pub detail: Option<String>,
    /// The job is interactive: while it runs it may hold the terminal.
    pub interactive: bool,
}

/// A JOB_STATUS event with nothing optional set, `t_s` seconds after a fixed start, as the run
/// loop builds one (for tests).
#[cfg(test)]
pub(crate) fn test_status_event(job: &str, old: Status, new: Status, t_s: f64) -> RunEvent {
    RunEvent::JobStatus(JobStatusEvent {
        time_us: 1_000_000_000 + (t_s * 1e6) as i64,
        job_ix: 0,
        job: job.into(),
        backend: "local".into(),
        attempt: 1,
        old,
        new,
        reason: String::new(),
        reason_kind: None,
        exit_code: None,
        duration_s: None,
        log: None,
        fail_line: None,
        fail_text: None,
        native_id: None,
        resources: None,
        cpu_s: None,
        max_rss_mb: None,
        detail: None,
        interactive: false,
    })
}

/// The host's phases, as `(name, start µs, end µs)` since the epoch: rendered
/// `name=START:END;...` in the `phases` attribute of RUN_STARTED and RUN_FINISHED.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Phases(pub Vec<(&'static str, i64, i64)>);

impl Phases {
    /// No phase recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Phases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, start, end)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{name}={start}:{end}")?;
        }
        Ok(())
    }
}

/// The run's totals.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Passed jobs.
    pub passed: u64,
    /// Failed jobs.
    pub failed: u64,
    /// Killed jobs.
    pub killed: u64,
    /// Skipped jobs.
    pub skipped: u64,
    /// Interrupted by a signal.
    pub interrupted: bool,
    /// Wall-clock seconds.
    pub duration_s: f64,
    /// results.json.
    pub results_path: PathBuf,
    /// Why results.json could not be written (then there is no file at `results_path`).
    pub results_error: Option<String>,
    /// Jobs that passed after a failed attempt (`retries`).
    pub flaky: u64,
    /// The first [`Summary::FLAKY_NAMES`] of them, in the flow's order.
    pub flaky_names: Vec<String>,
    /// Jobs whose pass was carried over from an earlier run (`--resume`, `--rerun-failed`).
    pub reused: u64,
}

impl Summary {
    /// Flaky jobs named in the summary; the rest are counted.
    pub const FLAKY_NAMES: usize = 5;
}

/// One event of a run.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The run started.
    RunStarted {
        /// When.
        time_us: i64,
        /// The flow's name.
        flow: String,
        /// The output directory.
        run_dir: PathBuf,
        /// Every job: (name, backend instance), the same shared names as in its JOB_STATUS
        /// events.
        jobs: Vec<(Arc<str>, Arc<str>)>,
        /// The host's phases before the run: `load` (reading, expanding and validating the
        /// flow), `setup` (creating backends and observers).
        phases: Phases,
    },
    /// A job changed status.
    JobStatus(JobStatusEvent),
    /// flowrun received SIGINT, SIGTERM or SIGHUP.
    KillSignal {
        /// When.
        time_us: i64,
        /// `"SIGINT"`, `"SIGTERM"` or `"SIGHUP"`.
        signal: &'static str,
    },
    /// The run finished.
    RunFinished {
        /// When.
        time_us: i64,
        /// The totals.
        summary: Summary,
        /// The host's phases of the run: `schedule` (from the first job to the last end),
        /// `write_results`.
        phases: Phases,
    },
}

/// An observer. Called from one thread of its own.
pub trait Observer: Send + Sync {
    /// A batch of events, in order.
    fn on_events(&self, events: &[RunEvent]);
    /// The run is over.
    fn finish(&self) -> Result<(), String>;
}

/// An observer inside the host process, fed on the run loop's thread with every batch the plugin
/// observers get, before them. It must return promptly: O(1) work per event, no blocking I/O.
pub trait LocalObserver: Send {
    /// A batch of events, in order.
    fn on_events(&mut self, events: &[RunEvent]);
    /// The run is over (or never started): release the terminal, flush what is left.
    fn finish(&mut self);
}

/// A batch of events, shared by every observer's queue.
type Batch = Arc<Vec<RunEvent>>;

/// How many sends may wait in one observer's queue (each of one batch, or of the batches held
/// while the queue was full).
const QUEUE_BATCHES: usize = 64;

struct Lane {
    name: String,
    tx: Option<SyncSender<Vec<Batch>>>,
    /// Batches the queue had no room for yet, oldest first.
    held: Vec<Batch>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

/// Delivers run events to every observer: plugin observers each on its own thread, local
/// ones inline.
#[derive(Default)]
pub struct ObserverHub {
    lanes: Vec<Lane>,
    locals: Vec<Box<dyn LocalObserver>>,
}

impl ObserverHub {
    /// Adds an observer under a display name.
    pub fn add(&mut self, name: String, observer: Box<dyn Observer>) {
        let (tx, rx): (SyncSender<Vec<Batch>>, Receiver<Vec<Batch>>) = sync_channel(QUEUE_BATCHES);
        let thread = std::thread::Builder::new()
            .name(format!("observer-{name}"))
            .spawn(move || {
                for batches in rx {
                    for batch in batches {
                        observer.on_events(&batch);
                    }
                }
                observer.finish()
            })
            .expect("spawn an observer thread");
        self.lanes.push(Lane {
            name,
            tx: Some(tx),
            held: Vec::new(),
            thread: Some(thread),
        });
    }

    /// Adds an in-process observer.
    pub fn add_local(&mut self, observer: Box<dyn LocalObserver>) {
        self.locals.push(observer);
    }

    /// Whether any observer is attached (so the run loop can skip building events).
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty() && self.locals.is_empty()
    }

    /// Sends a batch to every observer without blocking on any plugin observer.
    pub fn publish(&mut self, events: Vec<RunEvent>) {
        if events.is_empty() {
            return;
        }
        for local in &mut self.locals {
            local.on_events(&events);
        }
        if !self.lanes.is_empty() {
            self.send_to_lanes(events);
        }
    }

    /// [`ObserverHub::publish`] of the events in `buffer`, which is left empty with its capacity:
    /// the run loop reuses one buffer rather than growing a new one for every batch.
    pub fn publish_from(&mut self, buffer: &mut Vec<RunEvent>) {
        if buffer.is_empty() {
            return;
        }
        for local in &mut self.locals {
            local.on_events(buffer);
        }
        if self.lanes.is_empty() {
            buffer.clear();
        } else {
            // Moves the events out; the buffer keeps its capacity.
            let mut events = Vec::with_capacity(buffer.len());
            events.append(buffer);
            self.send_to_lanes(events);
        }
    }

    fn send_to_lanes(&mut self, events: Vec<RunEvent>) {
        let shared = Arc::new(events);
        for lane in &mut self.lanes {
            let Some(tx) = &lane.tx else { continue };
            // Held batches go first and together; a full queue hands them back. Events are
            // never copied for a slow observer: a copy per event on the run loop's thread was
            // what a lagging observer cost the run (benches/observers.py).
            let mut batches = std::mem::take(&mut lane.held);
            batches.push(shared.clone());
            match tx.try_send(batches) {
                Ok(()) => {}
                Err(TrySendError::Full(batches)) => lane.held = batches,
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Finishes the local observers (so the summary is out before a slow plugin observer
    /// finishes), then delivers what is held, closes the queues and waits for every plugin
    /// observer to finish, for at most `wait` in all: an observer that hangs costs its own
    /// output, not the run's end. Returns the errors, one line each, named by observer.
    pub fn finish(mut self, wait: Duration) -> Vec<String> {
        for local in &mut self.locals {
            local.finish();
        }
        let mut errors = Vec::new();
        for lane in &mut self.lanes {
            if let Some(tx) = lane.tx.take() {
                if !lane.held.is_empty() {
                    // The queue may be full of a hung observer's batches: never block here.
                    let held = std::mem::take(&mut lane.held);
                    if let Err(TrySendError::Full(held)) = tx.try_send(held) {
                        let name = lane.name.clone();
                        let _ = std::thread::Builder::new()
                            .name(format!("observer-flush-{name}"))
                            .spawn(move || {
                                let _ = tx.send(held);
                            });
                    }
                }
            }
        }
        let deadline = Instant::now() + wait;
        for lane in &mut self.lanes {
            let Some(t) = lane.thread.take() else {
                continue;
            };
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !t.is_finished() {
                errors.push(format!(
                    "observer {}: did not finish within {}; its output may be incomplete",
                    lane.name,
                    humantime::format_duration(wait)
                ));
                continue;
            }
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(format!("observer {}: {e}", lane.name)),
                Err(_) => errors.push(format!("observer {}: panicked", lane.name)),
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::mpsc;

    /// Blocks on its first batch until released.
    struct Stuck {
        release: Mutex<mpsc::Receiver<()>>,
        seen: Arc<Mutex<Vec<i64>>>,
    }
    impl Observer for Stuck {
        fn on_events(&self, events: &[RunEvent]) {
            let _ = self.release.lock().recv();
            for e in events {
                if let RunEvent::KillSignal { time_us, .. } = e {
                    self.seen.lock().push(*time_us);
                }
            }
        }
        fn finish(&self) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_observer_never_blocks_the_publisher_and_loses_nothing() {
        let (release, rx) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut hub = ObserverHub::default();
        hub.add(
            "stuck".into(),
            Box::new(Stuck {
                release: Mutex::new(rx),
                seen: seen.clone(),
            }),
        );
        // Far more batches than the queue holds: if publish blocked, this would never return.
        for i in 0..(QUEUE_BATCHES as i64 * 20) {
            hub.publish(vec![RunEvent::KillSignal {
                time_us: i,
                signal: "SIGINT",
            }]);
        }
        drop(release); // unblocks every later recv()
        assert!(hub.finish(Duration::from_secs(60)).is_empty());
        let seen = seen.lock();
        assert_eq!(seen.len(), QUEUE_BATCHES * 20);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "events stay in order");
    }

    /// Counts what it gets.
    struct Local(Arc<Mutex<(Vec<usize>, bool)>>);
    impl LocalObserver for Local {
        fn on_events(&mut self, events: &[RunEvent]) {
            self.0.lock().0.push(events.len());
        }
        fn finish(&mut self) {
            self.0.lock().1 = true;
        }
    }

    /// Records batch sizes.
    struct Sizes(Arc<Mutex<Vec<usize>>>);
    impl Observer for Sizes {
        fn on_events(&self, events: &[RunEvent]) {
            self.0.lock().push(events.len());
        }
        fn finish(&self) -> Result<(), String> {
            Ok(())
        }
    }

    fn kill_signals(n: usize) -> Vec<RunEvent> {
        (0..n)
            .map(|i| RunEvent::KillSignal {
                time_us: i as i64,
                signal: "SIGINT",
            })
            .collect()
    }

    #[test]
    fn local_observers_get_the_same_batches_as_plugin_observers_at_once() {
        let local = Arc::new(Mutex::new((Vec::new(), false)));
        let plugin = Arc::new(Mutex::new(Vec::new()));
        let mut hub = ObserverHub::default();
        assert!(hub.is_empty());
        hub.add_local(Box::new(Local(local.clone())));
        assert!(
            !hub.is_empty(),
            "a local observer alone makes the loop build events"
        );
        hub.add("sizes".into(), Box::new(Sizes(plugin.clone())));
        for (i, n) in [3, 1, 5].into_iter().enumerate() {
            hub.publish(kill_signals(n));
            // Inline: delivered before publish returns.
            assert_eq!(local.lock().0.len(), i + 1);
        }
        hub.publish(Vec::new());
        let mut buffer = kill_signals(2);
        hub.publish_from(&mut buffer);
        assert!(buffer.is_empty() && buffer.capacity() > 0, "emptied, kept");
        hub.publish_from(&mut buffer);
        assert!(hub.finish(Duration::from_secs(60)).is_empty());
        let local = local.lock();
        assert_eq!(local.0, [3, 1, 5, 2]);
        assert!(local.1, "finished");
        assert_eq!(*plugin.lock(), [3, 1, 5, 2]);
    }

    /// Never returns from its first batch.
    struct Hung;
    impl Observer for Hung {
        fn on_events(&self, _: &[RunEvent]) {
            loop {
                std::thread::park();
            }
        }
        fn finish(&self) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn a_hung_observer_costs_a_bounded_wait_and_one_line() {
        let mut hub = ObserverHub::default();
        hub.add("hung".into(), Box::new(Hung));
        for _ in 0..(QUEUE_BATCHES * 2) {
            hub.publish(kill_signals(1));
        }
        let t = Instant::now();
        let errors = hub.finish(Duration::from_millis(200));
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("observer hung: did not finish within 200ms"),
            "{errors:?}"
        );
    }

    #[test]
    fn phases_render_as_the_documented_attribute() {
        let p = Phases(vec![("load", 1, 2), ("setup", 2, 5)]);
        assert_eq!(p.to_string(), "load=1:2;setup=2:5");
        assert!(Phases::default().is_empty());
    }
}
