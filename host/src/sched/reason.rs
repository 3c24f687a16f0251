//! Why a job did not pass: a typed value. Its one `Display` is the `reason` text of results.json
//! and of the observer events (documented in docs/results.md); [`Reason::kind`] is the stable
//! `reason_kind` word next to it.
//!
//! Every reason the host gives is built here, by the scheduler core (dependencies, timeouts,
//! interrupts, answers) or by the judging of a job's end (`crate::outcome`): nowhere else
//! assembles reason text.

use std::{fmt, time::Duration};

use super::api::Interrupt;

/// How a dependency ended, in "dependency failed: X" and its siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyEnd {
    /// It failed.
    Failed,
    /// It was killed.
    Killed,
    /// It was skipped.
    Skipped,
}

/// Why a job did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// It exited with a non-zero code: "exit code 3".
    ExitCode(i32),
    /// It died of a signal: "killed by signal 11 (SIGSEGV)". `shell_exit` is set when the
    /// signal was read from the exit code of the `/bin/sh` that ran a string command (a shell
    /// reports a child killed by signal N as 128 + N).
    Signal {
        /// The signal number.
        signal: i32,
        /// The shell's exit code the signal was read from.
        shell_exit: Option<i32>,
    },
    /// A fail pattern matched a line of its log.
    FailPattern {
        /// 1-based, within the log file where it matched.
        line: u64,
        /// The line (cut to the matching limit).
        text: Box<str>,
    },
    /// A pass pattern matched no line (the job exited 0).
    PassMissing {
        /// The pattern's source.
        pattern: Box<str>,
    },
    /// The log could not be judged: it could not be read, is not a regular file, or its scan
    /// took too long. Never holds the log's path (that is the job's `log`), so that the
    /// reasons of many jobs group.
    LogUnreadable(Box<str>),
    /// The backend's own verdict ("Slurm time limit", "command not found: simv").
    Backend(Box<str>),
    /// The job ran past its timeout: "timed out after 30m" (the text as the flow wrote it).
    Timeout(Box<str>),
    /// A dependency did not pass (`when = "all-passed"`): "dependency failed: build".
    Dependency {
        /// How the dependency ended.
        ended: DependencyEnd,
        /// The dependency's name.
        job: Box<str>,
    },
    /// No dependency passed (`when = "any-passed"`): "no dependency passed: a, b" (the first
    /// five names, then ", ...").
    NoDependencyPassed(Box<str>),
    /// A signal interrupted the run while the job ran: "killed by SIGINT while running".
    InterruptedRunning(Interrupt),
    /// A signal interrupted the run while the job waited for a slot: "killed while queued".
    InterruptedQueued(Interrupt),
    /// A signal interrupted the run while the job waited for its dependencies: "run
    /// interrupted by SIGINT".
    InterruptedWaiting(Interrupt),
    /// The backend refused the job: "rejected by backend NAME: ERROR".
    Rejected {
        /// The backend instance.
        backend: Box<str>,
        /// What it said.
        error: Box<str>,
    },
    /// The backend lost the job: "lost by backend NAME: WHY".
    Lost {
        /// The backend instance.
        backend: Box<str>,
        /// What it said.
        why: Box<str>,
    },
    /// The host asked for a kill and the backend did not report the job's end in time: the
    /// host gave up on it. "lost by backend NAME: did not report after kill (REASON), waited 35s".
    KillUnconfirmed {
        /// The backend instance.
        backend: Box<str>,
        /// How long the host waited after the kill.
        waited: Duration,
        /// Why the job was being killed.
        kill: Box<Reason>,
    },
    /// The run stopped starting jobs after this many failures (`--fail-fast`, `--max-fail N`):
    /// "stopped after 3 failures". The job was killed while it ran or queued, or skipped.
    Stopped(u32),
    /// The job was killed, for this reason ("killed by the backend", or what the kill request
    /// said).
    Killed(Box<str>),
    /// flowrun's own process (the one that loads the plugins) died while the job ran or
    /// before it started; written by the supervising parent (`crate::supervise`) only:
    /// "flowrun crashed: the run's process ... died of SIGSEGV while the job ran".
    Crashed(Box<str>),
}

impl Reason {
    /// The stable word for the kind of reason: `reason_kind` in results.json and the events.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::ExitCode(_) => "exit_code",
            Reason::Signal { .. } => "signal",
            Reason::FailPattern { .. } => "fail_pattern",
            Reason::PassMissing { .. } => "pass_missing",
            Reason::LogUnreadable(_) => "log_unreadable",
            Reason::Backend(_) => "backend",
            Reason::Timeout(_) => "timeout",
            Reason::Dependency { .. } | Reason::NoDependencyPassed(_) => "dependency",
            Reason::InterruptedRunning(_)
            | Reason::InterruptedQueued(_)
            | Reason::InterruptedWaiting(_) => "interrupted",
            Reason::Rejected { .. } => "rejected",
            Reason::Lost { .. } | Reason::KillUnconfirmed { .. } => "lost",
            Reason::Killed(_) => "killed",
            Reason::Stopped(_) => "stopped",
            Reason::Crashed(_) => "crashed",
        }
    }
}

/// How many characters of a matched fail line a reason quotes.
pub const FAIL_TEXT_IN_REASON: usize = 400;

/// The conventional name of a signal number, such as `SIGSEGV`.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    nix::sys::signal::Signal::try_from(signal)
        .ok()
        .map(|s| s.as_str())
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ExitCode(code) => write!(f, "exit code {code}"),
            Reason::Signal { signal, shell_exit } => {
                write!(f, "killed by signal {signal}")?;
                if let Some(name) = signal_name(*signal) {
                    write!(f, " ({name})")?;
                }
                match shell_exit {
                    Some(code) => write!(f, ", shell exit code {code}"),
                    None => Ok(()),
                }
            }
            Reason::FailPattern { line, text } => {
                write!(f, "fail pattern matched at line {line}: ")?;
                // The line itself can be 64 KiB (the scan's cap): the reason names it, and
                // results.json's `fail_text` keeps it whole.
                match text.char_indices().nth(FAIL_TEXT_IN_REASON) {
                    Some((cut, _)) => write!(f, "{}…", &text[..cut]),
                    None => f.write_str(text),
                }
            }
            Reason::PassMissing { pattern } => write!(f, "pass pattern never matched: {pattern}"),
            Reason::LogUnreadable(why) => write!(f, "cannot read log: {why}"),
            Reason::Backend(text) | Reason::Killed(text) | Reason::Crashed(text) => {
                f.write_str(text)
            }
            Reason::Timeout(text) => write!(f, "timed out after {text}"),
            Reason::Stopped(1) => f.write_str("stopped after 1 failure"),
            Reason::Stopped(n) => write!(f, "stopped after {n} failures"),
            Reason::Dependency { ended, job } => {
                let how = match ended {
                    DependencyEnd::Failed => "failed",
                    DependencyEnd::Killed => "killed",
                    DependencyEnd::Skipped => "skipped",
                };
                write!(f, "dependency {how}: {job}")
            }
            Reason::NoDependencyPassed(names) => write!(f, "no dependency passed: {names}"),
            Reason::InterruptedRunning(sig) => write!(f, "killed by {} while running", sig.name()),
            Reason::InterruptedQueued(_) => f.write_str("killed while queued"),
            Reason::InterruptedWaiting(sig) => write!(f, "run interrupted by {}", sig.name()),
            Reason::Rejected { backend, error } => {
                write!(f, "rejected by backend {backend}: {error}")
            }
            Reason::Lost { backend, why } => write!(f, "lost by backend {backend}: {why}"),
            Reason::KillUnconfirmed {
                backend,
                waited,
                kill,
            } => write!(
                f,
                "lost by backend {backend}: did not report after kill ({kill}), waited {}",
                humantime::format_duration(*waited)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_keep_the_documented_wording_and_kinds_are_stable() {
        let cases: Vec<(Reason, &str, &str)> = vec![
            (Reason::ExitCode(3), "exit code 3", "exit_code"),
            (
                Reason::Signal {
                    signal: 11,
                    shell_exit: None,
                },
                "killed by signal 11 (SIGSEGV)",
                "signal",
            ),
            (
                Reason::Signal {
                    signal: 6,
                    shell_exit: Some(134),
                },
                "killed by signal 6 (SIGABRT), shell exit code 134",
                "signal",
            ),
            (
                Reason::FailPattern {
                    line: 120,
                    text: "UVM_ERROR x".into(),
                },
                "fail pattern matched at line 120: UVM_ERROR x",
                "fail_pattern",
            ),
            (
                Reason::PassMissing {
                    pattern: "^TEST PASSED$".into(),
                },
                "pass pattern never matched: ^TEST PASSED$",
                "pass_missing",
            ),
            (
                Reason::LogUnreadable("not a regular file (a FIFO)".into()),
                "cannot read log: not a regular file (a FIFO)",
                "log_unreadable",
            ),
            (
                Reason::Backend("Slurm time limit".into()),
                "Slurm time limit",
                "backend",
            ),
            (Reason::Stopped(1), "stopped after 1 failure", "stopped"),
            (
                Reason::Crashed(
                    "not run: flowrun crashed: the run's process died of SIGSEGV".into(),
                ),
                "not run: flowrun crashed: the run's process died of SIGSEGV",
                "crashed",
            ),
            (Reason::Stopped(3), "stopped after 3 failures", "stopped"),
            (
                Reason::Timeout("30m".into()),
                "timed out after 30m",
                "timeout",
            ),
            (
                Reason::Dependency {
                    ended: DependencyEnd::Killed,
                    job: "x".into(),
                },
                "dependency killed: x",
                "dependency",
            ),
            (
                Reason::NoDependencyPassed("a, b".into()),
                "no dependency passed: a, b",
                "dependency",
            ),
            (
                Reason::InterruptedRunning(Interrupt::Sigterm),
                "killed by SIGTERM while running",
                "interrupted",
            ),
            (
                Reason::InterruptedQueued(Interrupt::Sigint),
                "killed while queued",
                "interrupted",
            ),
            (
                Reason::InterruptedWaiting(Interrupt::Sighup),
                "run interrupted by SIGHUP",
                "interrupted",
            ),
            (
                Reason::Rejected {
                    backend: "slurm".into(),
                    error: "no".into(),
                },
                "rejected by backend slurm: no",
                "rejected",
            ),
            (
                Reason::Lost {
                    backend: "b".into(),
                    why: "gone".into(),
                },
                "lost by backend b: gone",
                "lost",
            ),
            (
                Reason::KillUnconfirmed {
                    backend: "b".into(),
                    waited: Duration::from_secs(35),
                    kill: Box::new(Reason::Timeout("1s".into())),
                },
                "lost by backend b: did not report after kill (timed out after 1s), waited 35s",
                "lost",
            ),
            (
                Reason::Killed("killed by the backend".into()),
                "killed by the backend",
                "killed",
            ),
        ];
        for (reason, text, kind) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(reason.kind(), kind, "{text}");
        }
    }

    #[test]
    fn a_long_fail_line_is_quoted_cut_on_a_character_boundary() {
        let text: Box<str> = "é".repeat(65_536).into();
        let r = Reason::FailPattern { line: 3, text }.to_string();
        let quoted = r.strip_prefix("fail pattern matched at line 3: ").unwrap();
        assert_eq!(quoted.chars().count(), FAIL_TEXT_IN_REASON + 1);
        assert!(quoted.ends_with("é…"));
        let exact: Box<str> = "z".repeat(FAIL_TEXT_IN_REASON).into();
        let r = Reason::FailPattern {
            line: 1,
            text: exact.clone(),
        }
        .to_string();
        assert!(r.ends_with(&*exact), "a line at the limit is quoted whole");
    }
}
