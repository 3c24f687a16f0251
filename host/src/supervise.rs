//! The supervising parent of `flowrun run`: a small process that loads no plugin, starts the
//! real run (the *worker*: this binary again, with the hidden `--supervisor-fd`) and waits for
//! it. When the worker dies before it finished the run (a plugin's SIGSEGV, `abort()` or
//! `exit()` in flowrun's process, an OOM kill), the parent writes results.json from the run's
//! journal: jobs that had ended keep their verdicts, jobs running or submitted fail, jobs never
//! started are skipped, both with a `crashed` reason naming how the worker died. See
//! docs/design/crash-safety.md for what this guarantees and what it cannot.
//!
//! The worker tells the parent two things through a pipe (the fd it was given): `dir PATH`
//! once the run directory exists, `done CODE` once results.json and the summary are out
//! (before the plugins' shutdowns, which may still hang or crash). The exit code is the
//! worker's when it exited on its own after `done`, or before the run started (bad input).
//!
//! Signals: the worker stays in the parent's process group and keeps the terminal, so a
//! Ctrl-C or a terminal hangup (sent by the kernel to the foreground group) reaches it
//! directly; the parent forwards only signals sent to it by a process (`kill PID`:
//! `si_code` is not `SI_KERNEL`). The worker dies with the parent (`PR_SET_PDEATHSIG`
//! SIGKILL), so that `kill -9` of flowrun is what it was before: the journal stays, local jobs
//! die with their watchdog, `--resume` continues.

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, OnceLock},
};

use nix::{
    fcntl::{fcntl, FcntlArg, FdFlag},
    sys::{
        signal::{kill, SigSet, SigmaskHow, Signal},
        signalfd::{SfdFlags, SignalFd},
    },
    unistd::Pid,
};
use parking_lot::Mutex;

use crate::{
    errors::{EXIT_CRASHED, EXIT_INVALID_INPUT},
    journal::{Replay, JOURNAL_FILE},
    run::{
        records::JobRecord,
        results::{write_results, ResultsSource},
    },
    sched::{signal_name, Reason, Status},
};

/// The environment variable that turns the supervising parent off (`FLOWRUN_SUPERVISOR=off`):
/// `run` then loads plugins in its own process, as before. For measuring its cost only.
pub const SUPERVISOR_SWITCH: &str = "FLOWRUN_SUPERVISOR";

/// Whether `run` starts a supervised worker (it does unless [`SUPERVISOR_SWITCH`] is `off`).
pub fn enabled() -> bool {
    std::env::var_os(SUPERVISOR_SWITCH).is_none_or(|v| v != "off")
}

/// The worker's end of the pipe to its parent.
static TO_PARENT: OnceLock<Mutex<File>> = OnceLock::new();
/// The supervising parent's pid, in the worker.
static PARENT: OnceLock<u32> = OnceLock::new();

/// In the worker: the supervising parent's pid (0 in an unsupervised process), recorded in
/// the journal's run start.
pub fn parent_pid() -> u32 {
    PARENT.get().copied().unwrap_or(0)
}

/// In the worker, first thing: takes the pipe `fd` from the parent (closed on exec, so that no
/// job inherits it) and makes the worker die with its parent.
pub fn worker_init(fd: i32) {
    // The parent blocks the signals it forwards (it reads them from a signalfd), and a
    // blocked mask survives fork and exec: unblock them here, before any thread starts, so
    // that a signal sent meanwhile is delivered now rather than lost.
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded()), None);
    if fd < 3 || !Path::new(&format!("/proc/self/fd/{fd}")).exists() {
        return;
    }
    // SAFETY: `fd` is open (its /proc entry exists) and was passed to this process by the
    // parent for this purpose only; nothing else in the worker knows the number, so the
    // `OwnedFd` is its only owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let _ = TO_PARENT.set(Mutex::new(File::from(owned)));
    let parent = nix::unistd::getppid();
    let _ = PARENT.set(parent.as_raw() as u32);
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // The parent may have died before the line above: then we were reparented already.
    if nix::unistd::getppid() != parent {
        std::process::exit(EXIT_CRASHED);
    }
}

fn tell_parent(line: &str) {
    if let Some(pipe) = TO_PARENT.get() {
        let _ = writeln!(pipe.lock(), "{line}");
    }
}

/// In the worker: the run directory exists (its journal is about to be written).
pub fn report_run_dir(dir: &Path) {
    tell_parent(&format!("dir {}", dir.display()));
}

/// In the worker: results.json is written (or could not be) and the summary printed; what is
/// left is the plugins' shutdowns. `code` is the run's exit code.
pub fn report_done(code: i32) {
    tell_parent(&format!("done {code}"));
}

/// What the worker said.
#[derive(Default)]
struct Heard {
    dir: Option<PathBuf>,
    done: Option<i32>,
}

/// How the worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Death {
    Signal(i32),
    Exit(i32),
}

impl std::fmt::Display for Death {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Death::Signal(s) => match signal_name(*s) {
                Some(name) => write!(f, "died of {name}"),
                None => write!(f, "died of signal {s}"),
            },
            Death::Exit(c) => write!(f, "exited with code {c} before the run ended"),
        }
    }
}

/// `flowrun run` in the parent: starts the worker with the same arguments and waits for it.
/// Returns the exit code.
pub fn supervise() -> i32 {
    match supervise_inner() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flowrun: cannot start the run's process: {e}");
            EXIT_INVALID_INPUT
        }
    }
}

/// The signals the parent forwards to the worker.
fn forwarded() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        s.add(sig);
    }
    s
}

fn supervise_inner() -> std::io::Result<i32> {
    let forwarded = forwarded();
    // Blocked here and taken from a signalfd; the worker unblocks them (`worker_init`).
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), None)?;
    let (read_end, write_end) = nix::unistd::pipe()?;
    fcntl(&read_end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--supervisor-fd")
        .arg(write_end.as_raw_fd().to_string())
        .args(std::env::args_os().skip(1));
    if let Some(name) = std::env::args_os().next() {
        cmd.arg0(name);
    }
    let mut child = cmd.spawn()?;
    drop(write_end);
    let pid = Pid::from_raw(child.id() as i32);

    let heard = Arc::new(Mutex::new(Heard::default()));
    let (listened, listener_done) = std::sync::mpsc::channel::<()>();
    {
        let heard = heard.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(File::from(read_end)).lines() {
                let Ok(line) = line else { break };
                let mut h = heard.lock();
                if let Some(dir) = line.strip_prefix("dir ") {
                    h.dir = Some(PathBuf::from(dir));
                } else if let Some(code) = line.strip_prefix("done ") {
                    h.done = code.parse().ok();
                }
            }
            let _ = listened.send(());
        });
    }
    let sfd = SignalFd::with_flags(&forwarded, SfdFlags::SFD_CLOEXEC)?;
    std::thread::spawn(move || {
        while let Ok(Some(info)) = sfd.read_signal() {
            // A signal from the terminal (Ctrl-C, hangup) went to the whole foreground group,
            // the worker included: forwarding it would double it (a second signal abandons).
            if info.ssi_code == libc::SI_KERNEL {
                continue;
            }
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                let _ = kill(pid, sig);
            }
        }
    });

    let status = child.wait()?;
    // The pipe's write end closes with the worker (its jobs never held it: close-on-exec);
    // a process a plugin forked without exec might still hold it, so the wait is bounded.
    let _ = listener_done.recv_timeout(std::time::Duration::from_secs(2));
    let heard = std::mem::take(&mut *heard.lock());
    let death = match (status.code(), status.signal()) {
        (Some(c), _) => Death::Exit(c),
        (None, Some(s)) => Death::Signal(s),
        (None, None) => Death::Exit(EXIT_CRASHED),
    };
    Ok(ended(death, &heard))
}

/// Clears the worker's live status line, which a dead worker left on a terminal.
fn clear_live_line() {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() && std::env::var("TERM").is_ok_and(|t| t != "dumb") {
        eprint!("\r\x1b[2K");
    }
}

/// The parent's verdict on the worker's end, and its exit code.
fn ended(death: Death, heard: &Heard) -> i32 {
    match (death, heard.done, &heard.dir) {
        // Finished, or stopped before the run began (bad input): its own code.
        (Death::Exit(c), Some(_), _) | (Death::Exit(c), None, None) => c,
        (Death::Signal(_), Some(code), dir) => {
            clear_live_line();
            let results = dir
                .as_ref()
                .map(|d| d.join("results.json").display().to_string())
                .unwrap_or_default();
            eprintln!(
                "flowrun: the run's process {death} while shutting down its plugins, after every job ended and {results} was written"
            );
            code
        }
        (_, None, None) => {
            clear_live_line();
            eprintln!(
                "flowrun: crashed: the run's process (which loads the plugins) {death} before the run started; no job ran"
            );
            EXIT_CRASHED
        }
        (_, None, Some(dir)) => recover(dir, death),
    }
}

/// A crashed worker's journal with the unfinished jobs ended by the crash.
struct Recovered {
    replay: Replay,
    crashed: Vec<Option<(Status, Reason)>>,
}

impl ResultsSource for Recovered {
    fn flow(&self) -> &str {
        self.replay.flow()
    }
    fn run_dir(&self) -> &str {
        self.replay.run_dir()
    }
    fn times(&self) -> (i64, i64) {
        (self.replay.first.started_us, crate::run::results::now_us())
    }
    fn interrupted(&self) -> bool {
        false
    }
    fn len(&self) -> usize {
        self.replay.len()
    }
    fn name(&self, i: usize) -> &str {
        self.replay.name(i)
    }
    fn backend(&self, i: usize) -> &str {
        self.replay.backend(i)
    }
    fn outcome(&self, i: usize) -> (Status, Option<&Reason>) {
        match &self.crashed[i] {
            Some((s, r)) => (*s, Some(r)),
            None => self.replay.outcome(i),
        }
    }
    fn record(&self, i: usize) -> &JobRecord {
        self.replay.record(i)
    }
    fn resumes(&self) -> u32 {
        self.replay.resumes()
    }
}

/// Ends what the journal left unfinished: running (or submitted) jobs failed, the rest
/// skipped, each with a reason that names the crash.
fn crash_outcomes(replay: &Replay, death: Death) -> Vec<Option<(Status, Reason)>> {
    let backends: Vec<&str> = replay
        .last
        .backends
        .iter()
        .map(|b| b.kind.as_str())
        .collect();
    let loaded = if backends.is_empty() {
        String::new()
    } else {
        let mut kinds = backends.clone();
        kinds.sort_unstable();
        kinds.dedup();
        format!(" (backend plugins: {})", kinds.join(", "))
    };
    replay
        .state
        .iter()
        .map(|s| match s.status {
            Status::Running => Some((
                Status::Failed,
                Reason::Crashed(
                    format!("flowrun crashed while the job ran: the run's process{loaded} {death}")
                        .into(),
                ),
            )),
            Status::Scheduled | Status::Queued => Some((
                Status::Skipped,
                Reason::Crashed(
                    format!("not run: flowrun crashed: the run's process{loaded} {death}").into(),
                ),
            )),
            _ => None,
        })
        .collect()
}

fn recover(dir: &Path, death: Death) -> i32 {
    clear_live_line();
    let journal = dir.join(JOURNAL_FILE);
    let replay = match Replay::read(&journal) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "flowrun: crashed: the run's process {death}; no results: its journal cannot be read: {e}"
            );
            return EXIT_CRASHED;
        }
    };
    let crashed = crash_outcomes(&replay, death);
    let rec = Recovered { replay, crashed };
    let mut counts = [0u64; 7];
    for i in 0..rec.len() {
        counts[rec.outcome(i).0.index()] += 1;
    }
    let ended = rec.crashed.iter().filter(|c| c.is_none()).count();
    eprintln!(
        "flowrun: crashed: the run's process (which loads the plugins) {death}; results.json is written from the journal: {ended} job(s) that had ended keep their verdicts, {} running failed, {} not run",
        counts[Status::Failed.index()]
            - rec.replay.counts()[Status::Failed.index()],
        counts[Status::Skipped.index()]
            - rec.replay.counts()[Status::Skipped.index()],
    );
    let c = |s: Status| counts[s.index()];
    eprintln!(
        "flow {}: {} jobs: {} passed, {} failed, {} killed, {} skipped",
        rec.flow(),
        rec.len(),
        c(Status::Passed),
        c(Status::Failed),
        c(Status::Killed),
        c(Status::Skipped)
    );
    match write_results(dir, &rec) {
        Ok(path) => eprintln!("results: {}", path.display()),
        Err(e) => eprintln!(
            "results: NOT WRITTEN: {}: {e}",
            dir.join("results.json").display()
        ),
    }
    EXIT_CRASHED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_death_names_its_signal() {
        assert_eq!(Death::Signal(11).to_string(), "died of SIGSEGV");
        assert_eq!(Death::Signal(6).to_string(), "died of SIGABRT");
        assert_eq!(
            Death::Exit(42).to_string(),
            "exited with code 42 before the run ended"
        );
    }

    #[test]
    fn a_worker_that_finished_or_never_started_keeps_its_exit_code() {
        let done = Heard {
            dir: Some("/nonexistent".into()),
            done: Some(1),
        };
        assert_eq!(ended(Death::Exit(1), &done), 1);
        assert_eq!(ended(Death::Signal(11), &done), 1);
        assert_eq!(ended(Death::Exit(2), &Heard::default()), 2);
        assert_eq!(ended(Death::Signal(11), &Heard::default()), EXIT_CRASHED);
    }
}
