//! The built-in status display: an in-process observer of the run's event stream, the same
//! `observe::RunEvent` batches the plugin observers get (as nextest's reporter consumes one
//! stream of test events). The run loop never calls it directly.
//!
//! - On a terminal: one live line (done/total, percent, elapsed, an estimate of the time left,
//!   counts per status, the names of the longest-running jobs), cut to the terminal's width and
//!   redrawn at most ten times a second whatever the event rate; failed and killed jobs get a
//!   line above it as they end. It stands aside while an interactive job holds the terminal and
//!   after a kill signal.
//! - Without a terminal (a CI log, a pipe), or on a `dumb` one: a line per job that did not pass,
//!   as it ends, and a progress line every `--status-interval` (zero: whenever the counts change).
//! - `-q`: only the summary.
//! - At the end, the summary (`summary.rs`), cause first.
//!
//! The loop's thread only updates counters and queues lines (O(1) per event, one lock per batch);
//! all writing happens on the display's own thread, so a slow or blocked terminal never slows
//! the run. `docs/design/display.md` has the why of each choice.

#![forbid(unsafe_code)]

mod format;
mod state;
mod summary;
mod tail;
mod term;

use std::{
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use parking_lot::{Condvar, Mutex};

use crate::{
    observe::{LocalObserver, RunEvent},
    sched::Status,
};
use format::{Counts, ProgressView};
use state::{JobLines, Progress};
pub use term::{Caps, LogWriter};

/// `--status-interval` when not given.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// The live line is redrawn at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// Running jobs named on a progress line, at most (the width usually allows fewer).
const NAMES_SHOWN: usize = 32;

/// How the display behaves.
#[derive(Debug, Clone, Copy)]
pub struct DisplayOptions {
    /// Print only the summary.
    pub quiet: bool,
    /// Without a terminal, a progress line this often; zero: one whenever the counts change.
    pub status_interval: Duration,
}

impl Default for DisplayOptions {
    fn default() -> Self {
        DisplayOptions {
            quiet: false,
            status_interval: DEFAULT_STATUS_INTERVAL,
        }
    }
}

/// The display: feed it events; [`LocalObserver::finish`] prints what is left and returns.
pub struct Display {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    live: bool,
    /// Whether the terminal is held by an interactive job, as last told to the screen.
    held: bool,
    /// A progress line whenever the counts change.
    every_change: bool,
    /// It panicked: it gets no more events.
    broken: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    wake: Condvar,
}

struct Inner {
    progress: Progress,
    /// There is output to write now.
    urgent: bool,
    /// The run is over: write what is left and stop.
    finishing: bool,
    /// When RUN_STARTED arrived: the live line's clock.
    started: Option<Instant>,
}

impl Display {
    /// Starts a display on stderr.
    pub fn start(opts: DisplayOptions) -> Display {
        let caps = Caps::detect();
        let live = caps.live && !opts.quiet;
        let job_lines = match (opts.quiet, live) {
            (true, _) => JobLines::None,
            (false, true) => JobLines::Failures,
            (false, false) => JobLines::NotPassed,
        };
        let line_width = if caps.live {
            term::terminal_width()
        } else {
            plain_width()
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                progress: Progress::new(job_lines, !opts.quiet, line_width),
                urgent: false,
                finishing: false,
                started: None,
            }),
            wake: Condvar::new(),
        });
        let writer = Writer {
            shared: shared.clone(),
            caps,
            opts,
            live,
            last_counts: None,
        };
        let thread = std::thread::Builder::new()
            .name("status-display".into())
            .spawn(move || writer.run())
            .map_err(|e| tracing::warn!("no status display: cannot start its thread: {e}"))
            .ok();
        Display {
            shared,
            thread,
            live,
            held: false,
            every_change: !live && !opts.quiet && opts.status_interval.is_zero(),
            broken: false,
        }
    }
}

impl LocalObserver for Display {
    fn on_events(&mut self, events: &[RunEvent]) {
        if self.broken {
            return;
        }
        // This runs on the loop's thread: a bug here must cost the display, never the run.
        let every_change = self.every_change;
        let live = self.live;
        let shared = &self.shared;
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut g = shared.inner.lock();
            let lines_before = g.progress.pending.lines.len();
            for e in events {
                if let RunEvent::RunStarted { .. } = e {
                    g.started = Some(Instant::now());
                }
                g.progress.apply(e);
            }
            let urgent = g.progress.pending.lines.len() != lines_before
                || g.progress.finished.is_some()
                || (every_change && g.progress.changed);
            if urgent && !g.urgent {
                g.urgent = true;
                shared.wake.notify_one();
            }
            live && g.progress.interactive_running()
        }));
        let Ok(held) = applied else {
            self.broken = true;
            eprintln!("flowrun: the status display failed; the run goes on without it");
            return;
        };
        if held != self.held {
            // Here, on the loop's thread, before the job is handed to its backend: the live line
            // goes before the job can print its first prompt.
            self.held = held;
            term::screen().set_held(held);
        }
    }

    fn finish(&mut self) {
        self.shared.inner.lock().finishing = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                eprintln!("flowrun: the status display failed; results.json has the run's results");
            }
        }
        if self.held {
            self.held = false;
            term::screen().set_held(false);
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish();
        }
    }
}

/// Prints a line of the host's own (not a job's) on stderr, whatever the display shows: under
/// the screen lock, in place of the live line, which the display redraws at its next tick.
pub fn message(text: &str) {
    term::screen().print(&format!("{text}\n"));
}

/// The width plain output is formatted for.
fn plain_width() -> usize {
    term::columns_env().unwrap_or(term::PLAIN_WIDTH)
}

/// The display's thread: everything it writes, it writes from here.
struct Writer {
    shared: Arc<Shared>,
    caps: Caps,
    opts: DisplayOptions,
    live: bool,
    /// The counts of the last progress line (one line per change when the interval is zero).
    last_counts: Option<[u64; 6]>,
}

/// What one wake-up of the writer has to write, taken under the lock, written outside it.
#[derive(Default)]
struct Batch {
    lines: Vec<format::Line>,
    dropped: u64,
    progress_line: Option<format::Line>,
    summary: Option<Progress>,
}

impl Writer {
    fn run(mut self) {
        let tick = if self.live {
            Some(REDRAW_EVERY)
        } else if self.opts.quiet || self.opts.status_interval.is_zero() {
            None
        } else {
            Some(self.opts.status_interval)
        };
        let mut next_tick = tick.map(|t| Instant::now() + t);
        let shared = self.shared.clone();
        loop {
            let mut g = shared.inner.lock();
            while !g.urgent && !g.finishing {
                match next_tick {
                    Some(t) if Instant::now() >= t => break,
                    Some(t) => {
                        shared.wake.wait_until(&mut g, t);
                    }
                    None => shared.wake.wait(&mut g),
                }
            }
            g.urgent = false;
            let now = Instant::now();
            let tick_due = next_tick.is_some_and(|t| now >= t);
            if let (true, Some(t)) = (tick_due, tick) {
                // From now, not from the last deadline: never two draws closer than a tick.
                next_tick = Some(now + t);
            }
            let finishing = g.finishing;
            let batch = self.take(&mut g, tick_due);
            drop(g);
            let summary_written = batch.summary.is_some();
            self.write(batch);
            if finishing || summary_written {
                break;
            }
        }
        let mut s = term::screen();
        s.clear_live();
    }

    /// Takes what is due from the state.
    fn take(&mut self, g: &mut Inner, tick_due: bool) -> Batch {
        let mut b = Batch::default();
        let held = self.live && g.progress.interactive_running();
        if !held || g.finishing {
            b.lines = std::mem::take(&mut g.progress.pending.lines);
            b.dropped = std::mem::take(&mut g.progress.pending.dropped);
        }
        if g.progress.finished.is_some() {
            let fresh = Progress::new(JobLines::None, false, 0);
            b.summary = Some(std::mem::replace(&mut g.progress, fresh));
            return b;
        }
        let Some(started) = g.started else {
            return b;
        };
        if self.opts.quiet || held || g.progress.signal.is_some() {
            return b;
        }
        let p = &mut g.progress;
        p.changed = false;
        let visible = visible_counts(&p.counts);
        let due = if self.live {
            tick_due
        } else if self.opts.status_interval.is_zero() {
            self.last_counts != Some(visible)
        } else {
            tick_due
        };
        if due {
            self.last_counts = Some(visible);
            let max = if self.live {
                term::terminal_width()
            } else {
                plain_width()
            }
            .saturating_sub(1);
            let names = p.longest_running(NAMES_SHOWN);
            let view = ProgressView {
                elapsed: started.elapsed(),
                total: p.total,
                counts: &p.counts,
                running: &names,
            };
            b.progress_line = Some(format::progress_line(&view, max));
        }
        b
    }

    fn write(&self, b: Batch) {
        let colour = self.caps.colour;
        let max = if self.live {
            term::terminal_width()
        } else {
            plain_width()
        }
        .saturating_sub(1);
        let mut text = String::new();
        if self.live && !b.lines.is_empty() {
            // Over whatever the terminal echoed at the start of the line (a `^C`).
            text.push('\r');
        }
        for mut l in b.lines {
            l.truncate(max);
            text.push_str(&l.render(colour));
            text.push('\n');
        }
        if b.dropped > 0 {
            text.push_str(&format!(
                "... and {} that did not pass (output could not keep up)\n",
                format::count(b.dropped, "more job")
            ));
        }
        let summary = b.summary.map(|p| {
            let jobs = summary::jobs_with_logs(&p);
            let width = if self.caps.live {
                term::terminal_width()
            } else {
                plain_width()
            };
            let tails: Vec<Option<tail::Tail>> = jobs
                .iter()
                .map(|j| {
                    j.log
                        .as_deref()
                        .map(|l| tail::read_tail(l, summary::TAIL_LINES, width.saturating_sub(5)))
                })
                .collect();
            summary::render(&p, &tails, width, colour)
        });
        let mut s = term::screen();
        if !text.is_empty() {
            s.print(&text);
        }
        if let Some(summary) = summary {
            s.print(&summary);
        } else if let Some(line) = b.progress_line {
            if self.live {
                s.draw_live(&line.render(colour), line.width());
            } else {
                let mut l = line.render(false);
                l.push('\n');
                s.print(&l);
            }
        }
    }
}

/// What the progress line shows of the counts: done, running, passed, failed, killed, skipped.
fn visible_counts(c: &Counts) -> [u64; 6] {
    [
        c.done(),
        c.get(Status::Running),
        c.get(Status::Passed),
        c.get(Status::Failed),
        c.get(Status::Killed),
        c.get(Status::Skipped),
    ]
}
