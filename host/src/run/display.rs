//! The built-in status display: on a terminal, one updating line with the counts per status;
//! otherwise a plain line every few seconds; and a summary at the end, with the failures
//! grouped by reason. It pauses while an interactive job holds the terminal.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use super::records::Counts;
use crate::sched::Status;

/// How often the plain (non-terminal) line is printed.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// The display.
pub struct Display {
    tty: bool,
    quiet: bool,
    paused: u32,
    last_plain: Instant,
    started: Instant,
    line_shown: bool,
}

impl Display {
    /// A display on stderr; `quiet` prints only the summary.
    pub fn new(quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Display {
            tty,
            quiet,
            paused: 0,
            last_plain: Instant::now(),
            started: Instant::now(),
            line_shown: false,
        }
    }

    /// How often [`Display::refresh`] should be called.
    pub fn tick_interval(&self) -> Duration {
        if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        }
    }

    fn line(&self, c: &Counts) -> String {
        format!(
            "[{:>6.1}s] scheduled {} | queued {} | running {} | passed {} | failed {} | killed {} | skipped {}",
            self.started.elapsed().as_secs_f64(),
            c.get(Status::Scheduled),
            c.get(Status::Queued),
            c.get(Status::Running),
            c.get(Status::Passed),
            c.get(Status::Failed),
            c.get(Status::Killed),
            c.get(Status::Skipped),
        )
    }

    /// Redraws (terminal) or prints a line when due (plain).
    pub fn refresh(&mut self, c: &Counts) {
        if self.quiet || self.paused > 0 {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{}", self.line(c));
            self.line_shown = true;
        } else if self.last_plain.elapsed() >= PLAIN_EVERY {
            let _ = writeln!(err, "{}", self.line(c));
            self.last_plain = Instant::now();
        }
        let _ = err.flush();
    }

    /// Prints a message above the status line.
    pub fn message(&mut self, msg: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty && self.line_shown {
            let _ = write!(err, "\r\x1b[2K");
            self.line_shown = false;
        }
        let _ = writeln!(err, "{msg}");
    }

    /// An interactive job took the terminal: stop drawing until it gives it back.
    pub fn pause(&mut self) {
        if self.tty && self.line_shown {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.line_shown = false;
        }
        self.paused += 1;
    }

    /// The interactive job ended.
    pub fn resume(&mut self) {
        self.paused = self.paused.saturating_sub(1);
    }

    /// Clears the line and prints the summary: totals, then failures grouped by reason.
    pub fn summary(
        &mut self,
        c: &Counts,
        flow: &str,
        failures: &[(String, String, &'static str)],
        results: &str,
    ) {
        let mut err = std::io::stderr().lock();
        if self.tty && self.line_shown {
            let _ = write!(err, "\r\x1b[2K");
        }
        let total: u64 = c.by_status.iter().sum();
        let _ = writeln!(
            err,
            "flow {flow}: {total} jobs in {:.1}s: {} passed, {} failed, {} killed, {} skipped",
            self.started.elapsed().as_secs_f64(),
            c.get(Status::Passed),
            c.get(Status::Failed),
            c.get(Status::Killed),
            c.get(Status::Skipped),
        );
        if !failures.is_empty() {
            // Group by reason with the most common first; show a few job names per reason.
            let mut groups: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
            for (job, reason, status) in failures {
                groups
                    .entry((status, reason.as_str()))
                    .or_default()
                    .push(job.as_str());
            }
            let mut groups: Vec<_> = groups.into_iter().collect();
            groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
            let _ = writeln!(err, "{:<8} {:>6}  reason (jobs)", "status", "count");
            for ((status, reason), jobs) in groups.iter().take(30) {
                let shown: Vec<&str> = jobs.iter().take(3).copied().collect();
                let more = if jobs.len() > 3 {
                    format!(", ... {} more", jobs.len() - 3)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    err,
                    "{status:<8} {:>6}  {reason} ({}{more})",
                    jobs.len(),
                    shown.join(", ")
                );
            }
            if groups.len() > 30 {
                let _ = writeln!(err, "... {} more reasons in {results}", groups.len() - 30);
            }
        }
        let _ = writeln!(err, "results: {results}");
    }
}
