//! Running the scheduler's client commands: the injectable [`CommandRunner`], the real
//! [`ProcessRunner`], and [`Commands`], the handle a dialect runs its commands through (it adds
//! the engine's time limit and counts every call).

use std::{
    collections::BTreeMap,
    io::Read,
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use super::dialect::SubmitError;

/// One command to run: a program (looked up on `PATH`) and its arguments, with optional text
/// for its standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The program, such as `sbatch`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Text written to its standard input (none: stdin is `/dev/null`).
    pub stdin: Option<String>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// It died of this signal.
    Signal(i32),
    /// It ran past the time limit and was killed (with its process group).
    TimedOut(Duration),
    /// It could not be started; the text says why (`No such file or directory`, ...).
    NotStarted {
        /// The OS error text.
        error: String,
        /// The program does not exist or may not be executed: retrying cannot help.
        permanent: bool,
    },
}

/// What one command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The program that ran, for messages.
    pub program: String,
    /// How it ended.
    pub exit: Exit,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error, trimmed.
    pub stderr: String,
}

impl CommandOutput {
    /// An output that exited with `code` and printed `stdout` and `stderr`.
    pub fn exited(program: &str, code: i32, stdout: &str, stderr: &str) -> CommandOutput {
        CommandOutput {
            program: program.to_string(),
            exit: Exit::Code(code),
            stdout: stdout.to_string(),
            stderr: stderr.trim().to_string(),
        }
    }

    /// Whether the command exited 0.
    pub fn ok(&self) -> bool {
        self.exit == Exit::Code(0)
    }

    /// `Ok(self)` if the command exited 0, else `Err(self)`: `let out = cmd.run(..).checked()?;`
    pub fn checked(self) -> Result<CommandOutput, CommandOutput> {
        if self.ok() {
            Ok(self)
        } else {
            Err(self)
        }
    }

    /// The exit status, if the command exited.
    pub fn code(&self) -> Option<i32> {
        match self.exit {
            Exit::Code(c) => Some(c),
            _ => None,
        }
    }

    /// Whether the failure is transient whatever the scheduler: the command hung, was killed
    /// by a signal, or could not be started for a reason other than a missing program. The
    /// engine asks the dialect about the other failures.
    pub fn failed_transiently(&self) -> bool {
        match &self.exit {
            Exit::Code(_) => false,
            Exit::Signal(_) | Exit::TimedOut(_) => true,
            Exit::NotStarted { permanent, .. } => !permanent,
        }
    }

    /// Standard error and standard output together, for matching messages.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stderr, self.stdout)
    }

    /// Whether the output says one of `messages` (lowercase), in any case: the test of a
    /// dialect's `is_transient`.
    pub fn mentions_any(&self, messages: &[&str]) -> bool {
        let text = self.text().to_ascii_lowercase();
        messages.iter().any(|m| text.contains(m))
    }

    /// A one-line description of a failure, for messages: the command's own error text when
    /// it printed one, else how it ended.
    pub fn failure(&self) -> String {
        let printed = if self.stderr.is_empty() {
            self.stdout.trim()
        } else {
            self.stderr.as_str()
        };
        let printed = printed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" / ");
        let how = match &self.exit {
            Exit::Code(c) => format!("exit code {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
            Exit::TimedOut(limit) => format!(
                "{} did not answer within {}s (killed)",
                self.program,
                limit.as_secs_f64()
            ),
            Exit::NotStarted { error, .. } => format!("cannot run {}: {error}", self.program),
        };
        match (&self.exit, printed.is_empty()) {
            (Exit::Code(_), false) => printed,
            (_, true) => how,
            (_, false) => format!("{how} {printed}"),
        }
    }
}

/// Runs commands. The engine's commands all go through one runner, so tests replace the real
/// one ([`ProcessRunner`]) with a scripted scheduler.
pub trait CommandRunner: Send + Sync + 'static {
    /// Runs `command`, killing it once it has run for `limit`. Must return (it may block up to
    /// `limit` plus a little).
    fn run(&self, command: &CommandLine, limit: Duration) -> CommandOutput;
}

/// Runs commands as child processes. Each runs in a process group of its own, so a timeout
/// kills whatever it started too (a wrapper script's children would otherwise keep its pipes
/// open), and a Ctrl-C at the terminal does not kill a submission half-way: flowrun cancels
/// the job once its id is known instead.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessRunner;

/// How long the reader threads may take to see end-of-file after the command's process group
/// was killed (a process that left the group can keep a pipe open).
const PIPE_DRAIN_LIMIT: Duration = Duration::from_secs(2);

impl CommandRunner for ProcessRunner {
    fn run(&self, command: &CommandLine, limit: Duration) -> CommandOutput {
        let program = command.program.clone();
        let mut cmd = Command::new(&command.program);
        cmd.args(&command.args)
            .stdin(if command.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let permanent = matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                );
                return CommandOutput {
                    program,
                    exit: Exit::NotStarted {
                        error: e.to_string(),
                        permanent,
                    },
                    stdout: String::new(),
                    stderr: String::new(),
                };
            }
        };
        let (tx, rx) = mpsc::channel::<(bool, String)>();
        let read = |pipe: Option<Box<dyn Read + Send>>, is_stdout: bool| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                if let Some(mut pipe) = pipe {
                    let mut bytes = Vec::new();
                    let _ = pipe.read_to_end(&mut bytes);
                    text = String::from_utf8_lossy(&bytes).into_owned();
                }
                let _ = tx.send((is_stdout, text));
            });
        };
        read(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            true,
        );
        read(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            false,
        );
        drop(tx);
        if let (Some(input), Some(mut pipe)) = (&command.stdin, child.stdin.take()) {
            let input = input.clone();
            // On a thread: a command that does not read its input must not block us.
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        let deadline = Instant::now() + limit;
        let mut nap = Duration::from_millis(1);
        let exit = loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    use std::os::unix::process::ExitStatusExt;
                    break match (status.code(), status.signal()) {
                        (Some(code), _) => Exit::Code(code),
                        (None, Some(sig)) => Exit::Signal(sig),
                        (None, None) => Exit::Code(-1),
                    };
                }
                Ok(None) if Instant::now() >= deadline => {
                    kill_group(child.id());
                    let _ = child.kill();
                    let _ = child.wait();
                    break Exit::TimedOut(limit);
                }
                Ok(None) => {
                    // Short commands end within a few ms; long ones are checked less often.
                    std::thread::sleep(nap.min(deadline.saturating_duration_since(Instant::now())));
                    nap = (nap * 2).min(Duration::from_millis(20));
                }
                Err(e) => {
                    kill_group(child.id());
                    let _ = child.kill();
                    let _ = child.wait();
                    break Exit::NotStarted {
                        error: format!("cannot wait for it: {e}"),
                        permanent: false,
                    };
                }
            }
        };
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let drain_deadline = Instant::now() + PIPE_DRAIN_LIMIT;
        for _ in 0..2 {
            let left = drain_deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((true, text)) => stdout = text,
                Ok((false, text)) => stderr = text,
                Err(_) => break,
            }
        }
        CommandOutput {
            program,
            exit,
            stdout,
            stderr: stderr.trim().to_string(),
        }
    }
}

/// Kills the process group the command leads (its pid is the group id: `process_group(0)`).
fn kill_group(pid: u32) {
    use nix::{
        sys::signal::{killpg, Signal},
        unistd::Pid,
    };
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Calls and failures per program, for `stats()`.
#[derive(Debug, Default)]
pub(crate) struct CallCounts {
    by_program: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl CallCounts {
    fn record(&self, program: &str, failed: bool) {
        let name = program.rsplit('/').next().unwrap_or(program).to_string();
        let mut map = self.by_program.lock();
        let entry = map.entry(name).or_default();
        entry.0 += 1;
        entry.1 += u64::from(failed);
    }

    /// `(program, calls, failures)` in name order.
    pub(crate) fn snapshot(&self) -> Vec<(String, u64, u64)> {
        self.by_program
            .lock()
            .iter()
            .map(|(name, (calls, failures))| (name.clone(), *calls, *failures))
            .collect()
    }
}

/// What a dialect runs its commands through: the engine's runner, with the engine's time limit
/// on every command, and a count of every call per program (reported by `stats()` as
/// `<program>_calls` and `<program>_failures`).
pub struct Commands<'a> {
    pub(crate) runner: &'a dyn CommandRunner,
    pub(crate) limit: Duration,
    pub(crate) counts: &'a CallCounts,
}

impl Commands<'_> {
    /// Runs `program args` with stdin from `/dev/null`.
    pub fn run(&self, program: &str, args: &[String]) -> CommandOutput {
        self.run_line(&CommandLine {
            program: program.to_string(),
            args: args.to_vec(),
            stdin: None,
        })
    }

    /// Runs a full command line (with text for its standard input, if any).
    pub fn run_line(&self, command: &CommandLine) -> CommandOutput {
        let out = self.runner.run(command, self.limit);
        self.counts.record(&command.program, !out.ok());
        if let Exit::TimedOut(limit) = out.exit {
            tracing::warn!(
                "{} did not answer within {}s and was killed",
                command.program,
                limit.as_secs_f64()
            );
        }
        out
    }

    /// Runs a submit command and reads the native id in its output with `parse_id`: a failed
    /// command is [`SubmitError::Command`] (retried if transient), output without an id
    /// [`SubmitError::Rejected`].
    pub fn submit(
        &self,
        program: &str,
        args: &[String],
        parse_id: impl Fn(&CommandOutput) -> Option<String>,
    ) -> Result<String, SubmitError> {
        let out = self
            .run(program, args)
            .checked()
            .map_err(SubmitError::Command)?;
        parse_id(&out).ok_or_else(|| {
            SubmitError::Rejected(format!(
                "cannot read a job id in {program}'s output {:?}",
                out.text().trim()
            ))
        })
    }

    /// The time limit every command gets (`command_timeout`).
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> CommandLine {
        CommandLine {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            stdin: None,
        }
    }

    #[test]
    fn reports_code_output_and_stdin() {
        let out = ProcessRunner.run(
            &sh("echo hi; echo oops >&2; exit 4"),
            Duration::from_secs(30),
        );
        assert_eq!(out.exit, Exit::Code(4));
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("hi\n", "oops"));
        assert_eq!(out.failure(), "oops");
        let mut cat = sh("tr a-z A-Z");
        cat.stdin = Some("in put".into());
        let out = ProcessRunner.run(&cat, Duration::from_secs(30));
        assert_eq!((out.ok(), out.stdout.as_str()), (true, "IN PUT"));
    }

    #[test]
    fn a_hung_command_and_what_it_started_are_killed_at_the_limit() {
        // The shell's child keeps stdout open: killing the shell alone would leave us reading
        // until the child's `sleep 600` ends.
        let began = Instant::now();
        let out = ProcessRunner.run(
            &sh("sleep 600 & echo started; wait"),
            Duration::from_millis(300),
        );
        assert_eq!(out.exit, Exit::TimedOut(Duration::from_millis(300)));
        assert!(out.failed_transiently());
        assert_eq!(out.stdout, "started\n");
        assert!(
            out.failure().contains("did not answer within 0.3s"),
            "{}",
            out.failure()
        );
        // Generous: only "not 600 s" matters.
        assert!(began.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn a_missing_program_is_a_permanent_failure() {
        let out = ProcessRunner.run(
            &CommandLine {
                program: "/nonexistent/flowrun-sbatch".into(),
                args: vec![],
                stdin: None,
            },
            Duration::from_secs(5),
        );
        assert!(
            matches!(
                out.exit,
                Exit::NotStarted {
                    permanent: true,
                    ..
                }
            ),
            "{out:?}"
        );
        assert!(!out.failed_transiently());
        assert!(out
            .failure()
            .starts_with("cannot run /nonexistent/flowrun-sbatch: "));
    }

    #[test]
    fn a_signal_death_is_transient() {
        let out = ProcessRunner.run(&sh("kill -9 $$"), Duration::from_secs(30));
        assert_eq!(out.exit, Exit::Signal(9));
        assert!(out.failed_transiently());
        assert_eq!(out.failure(), "killed by signal 9");
    }
}
