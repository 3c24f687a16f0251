//! Judging a job's end: one pure function, [`judge`], from what the backend reported (exit
//! code, signal, its own verdict) and what the log says (pass and fail patterns, scanned by
//! [`scan`]) to the job's [`Outcome`] and [`Reason`].
//!
//! Which reason wins, most telling first:
//! 1. a fail-pattern match names its line (whatever the exit code);
//! 2. the backend's own verdict ("command not found: simv"), or its kill;
//! 3. a signal ("killed by signal 11 (SIGSEGV)"), also when a shell reports it as exit code
//!    128 + N for a string command;
//! 4. a non-zero exit code;
//! 5. only for a job that exited 0: a pass pattern that never matched, or a log that could not
//!    be read.

pub mod scan;

use crate::{
    backend::JobEnd,
    sched::{signal_name, Outcome, Reason},
};
pub use scan::{scan_logs, LogVerdict, CONTEXT_LINES, MAX_LINE_BYTES, SCAN_TIME_LIMIT};

/// A fail-pattern match, kept for results.json and the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailMatch {
    /// 1-based line number.
    pub line: u64,
    /// The line.
    pub text: String,
    /// Up to [`CONTEXT_LINES`] lines after it.
    pub context: Vec<String>,
}

/// The verdict on a job's end.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Passed, failed (why) or killed.
    pub outcome: Outcome,
    /// The fail-pattern match, when one decided the verdict.
    pub fail: Option<FailMatch>,
}

/// Whether the log must be scanned before [`judge`] can decide: the job has patterns, a log
/// was written (a backend that writes none, such as the fake one for a dry run, is judged on
/// its own verdict), and the process ran to an exit or a signal (a backend's verdict or kill
/// stands as it is).
pub fn needs_log_scan(end: &JobEnd, has_patterns: bool, log_written: bool) -> bool {
    has_patterns && log_written && matches!(end, JobEnd::Exited(_) | JobEnd::Signaled(_))
}

/// A shell reports a child that died of signal N as exit code 128 + N.
fn signal_from_shell_exit(code: i32) -> Option<i32> {
    let signal = code.checked_sub(128)?;
    (1..=64)
        .contains(&signal)
        .then_some(signal)
        .filter(|&s| signal_name(s).is_some())
}

/// The verdict on a job's end. `shell` says the command ran through `/bin/sh -c`; `log` is the
/// scan of its logs when [`needs_log_scan`] asked for one.
pub fn judge(end: &JobEnd, shell: bool, log: Option<&LogVerdict>) -> Judgement {
    if let Some(LogVerdict::FailMatched {
        line,
        text,
        context,
        ..
    }) = log
    {
        return Judgement {
            outcome: Outcome::Failed(Reason::FailPattern {
                line: *line,
                text: text.as_str().into(),
            }),
            fail: Some(FailMatch {
                line: *line,
                text: text.clone(),
                context: context.clone(),
            }),
        };
    }
    let failed = |reason| Judgement {
        outcome: Outcome::Failed(reason),
        fail: None,
    };
    match end {
        JobEnd::Killed => Judgement {
            outcome: Outcome::Killed(Reason::Killed("killed by the backend".into())),
            fail: None,
        },
        JobEnd::Failed(reason, _) => failed(Reason::Backend(reason.as_str().into())),
        &JobEnd::Signaled(signal) => failed(Reason::Signal {
            signal,
            shell_exit: None,
        }),
        &JobEnd::Exited(code) if code != 0 => match signal_from_shell_exit(code) {
            Some(signal) if shell => failed(Reason::Signal {
                signal,
                shell_exit: Some(code),
            }),
            _ => failed(Reason::ExitCode(code)),
        },
        JobEnd::Exited(_) => match log {
            Some(LogVerdict::PassMissing { pattern }) => failed(Reason::PassMissing {
                pattern: pattern.as_str().into(),
            }),
            Some(LogVerdict::Unreadable(why)) => failed(Reason::LogUnreadable(why.as_str().into())),
            _ => Judgement {
                outcome: Outcome::Passed,
                fail: None,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail_match() -> LogVerdict {
        LogVerdict::FailMatched {
            line: 7,
            text: "UVM_ERROR bad".into(),
            context: vec!["next".into()],
            pattern: "UVM_ERROR".into(),
        }
    }

    fn pass_missing() -> LogVerdict {
        LogVerdict::PassMissing {
            pattern: "^TEST PASSED$".into(),
        }
    }

    fn reason(j: &Judgement) -> String {
        match &j.outcome {
            Outcome::Passed => String::new(),
            Outcome::Failed(r) | Outcome::Killed(r) => r.to_string(),
        }
    }

    #[test]
    fn a_fail_pattern_names_its_line_whatever_the_exit() {
        for end in [JobEnd::Exited(0), JobEnd::Exited(3), JobEnd::Signaled(11)] {
            let j = judge(&end, true, Some(&fail_match()));
            assert_eq!(reason(&j), "fail pattern matched at line 7: UVM_ERROR bad");
            assert_eq!(j.fail.as_ref().map(|f| f.context.len()), Some(1));
        }
    }

    #[test]
    fn an_exit_code_or_a_signal_beats_a_missing_pass_pattern() {
        let log = Some(pass_missing());
        let j = judge(&JobEnd::Exited(3), false, log.as_ref());
        assert_eq!(reason(&j), "exit code 3");
        let j = judge(&JobEnd::Signaled(11), false, log.as_ref());
        assert_eq!(reason(&j), "killed by signal 11 (SIGSEGV)");
        let j = judge(&JobEnd::Exited(0), false, log.as_ref());
        assert_eq!(reason(&j), "pass pattern never matched: ^TEST PASSED$");
        let unreadable = LogVerdict::Unreadable("not a regular file (a FIFO)".into());
        let j = judge(&JobEnd::Exited(2), false, Some(&unreadable));
        assert_eq!(reason(&j), "exit code 2");
        let j = judge(&JobEnd::Exited(0), false, Some(&unreadable));
        assert_eq!(reason(&j), "cannot read log: not a regular file (a FIFO)");
    }

    #[test]
    fn a_shell_job_killed_by_a_signal_names_the_signal() {
        let j = judge(&JobEnd::Exited(139), true, None);
        assert_eq!(
            reason(&j),
            "killed by signal 11 (SIGSEGV), shell exit code 139"
        );
        assert!(matches!(
            j.outcome,
            Outcome::Failed(Reason::Signal {
                signal: 11,
                shell_exit: Some(139)
            })
        ));
        // An argv command's exit code is its own; and 128 is no signal.
        assert_eq!(
            reason(&judge(&JobEnd::Exited(139), false, None)),
            "exit code 139"
        );
        assert_eq!(
            reason(&judge(&JobEnd::Exited(128), true, None)),
            "exit code 128"
        );
        assert_eq!(
            reason(&judge(&JobEnd::Exited(255), true, None)),
            "exit code 255"
        );
    }

    #[test]
    fn backend_verdicts_and_kills_stand() {
        let j = judge(
            &JobEnd::Failed("command not found: simv".into(), Some(127)),
            true,
            None,
        );
        assert_eq!(reason(&j), "command not found: simv");
        assert!(matches!(
            judge(&JobEnd::Killed, false, None).outcome,
            Outcome::Killed(_)
        ));
        assert_eq!(
            judge(&JobEnd::Exited(0), false, Some(&LogVerdict::Clean)).outcome,
            Outcome::Passed
        );
        assert_eq!(
            judge(&JobEnd::Exited(0), true, None).outcome,
            Outcome::Passed
        );
    }

    #[test]
    fn only_ends_of_a_process_with_a_log_and_patterns_are_scanned() {
        assert!(needs_log_scan(&JobEnd::Exited(1), true, true));
        assert!(needs_log_scan(&JobEnd::Signaled(9), true, true));
        assert!(!needs_log_scan(&JobEnd::Exited(0), false, true));
        assert!(!needs_log_scan(&JobEnd::Exited(0), true, false));
        assert!(!needs_log_scan(&JobEnd::Killed, true, true));
        assert!(!needs_log_scan(
            &JobEnd::Failed("x".into(), None),
            true,
            true
        ));
    }
}
