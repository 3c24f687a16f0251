//! The supervising parent of `flowrun run`: a small process that loads no plugin, starts the
//! real run (the *worker*: this binary again, with the hidden `--supervisor-fd`) and waits for
//! it. When the worker dies before it finished the run (a plugin's SIGSEGV, `abort()` or
//! `exit()` in flowrun's process, an OOM kill), the parent writes results.json from the run's
//! journal: jobs that had ended keep their verdicts, jobs running or submitted fail, jobs never
//! started are skipped, both with a `crashed` reason naming how the worker died. See
//! docs/design/crash-safety.md for what this guarantees and what it cannot.
//!
//! The worker tells the parent what it does through a Unix socket (the parent listens on an
//! abstract name it passes with `--supervisor-socket`, and takes only the connection whose
//! peer is its worker): `dir PATH` once the run directory exists, `sig N` for each signal it
//! received, `done CODE` once
//! results.json and the summary are out (before the plugins' shutdowns, which may still hang
//! or crash). The exit code is the worker's when it exited on its own after `done`, or before
//! the run started (bad input). A socket rather than an inherited pipe: std opens it
//! close-on-exec, so no job inherits it, and no unsafe code adopts an fd number.
//!
//! Signals: the worker stays in the parent's process group and keeps the terminal, so a
//! Ctrl-C or a terminal hangup (sent by the kernel to the foreground group) reaches it
//! directly; the parent forwards only signals sent to it alone by a process (`kill PID`):
//! not the kernel's (`si_code` `SI_KERNEL`), and not one the worker reports (`sig N`) having
//! received too within `SAME_SIGNAL_WINDOW` (200 ms) (`kill -PGID`, a shell's SIGHUP to its jobs), so
//! that a signal is never doubled (a second one abandons the run). The worker dies with the parent (`PR_SET_PDEATHSIG`
//! SIGKILL), so that `kill -9` of flowrun is what it was before: the journal stays, local jobs
//! die with their watchdog, `--resume` continues.

use std::{
    io::{BufRead, BufReader, Write},
    os::{
        linux::net::SocketAddrExt,
        unix::{
            net::{SocketAddr, UnixListener, UnixStream},
            process::{CommandExt, ExitStatusExt},
        },
    },
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use nix::{
    sys::{
        signal::{kill, SigSet, SigmaskHow, Signal},
        signalfd::{SfdFlags, SignalFd},
        socket::{getsockopt, sockopt::PeerCredentials},
    },
    unistd::Pid,
};
use parking_lot::{Condvar, Mutex};

use crate::{
    display::{Display, DisplayOptions},
    errors::{EXIT_CRASHED, EXIT_INVALID_INPUT},
    journal::{Replay, JOURNAL_FILE},
    observe::{JobStatusEvent, LocalObserver, Phases, RunEvent, Summary},
    run::{
        records::JobRecord,
        results::{attempt_log, now_us, write_results, ResultsSource},
    },
    sched::{signal_name, JobIx, Reason, Status},
};

/// The environment variable that turns the supervising parent off (`FLOWRUN_SUPERVISOR=off`):
/// `run` then loads plugins in its own process, as before. For measuring its cost only.
pub const SUPERVISOR_SWITCH: &str = "FLOWRUN_SUPERVISOR";

/// Whether `run` starts a supervised worker (it does unless [`SUPERVISOR_SWITCH`] is `off`).
pub fn enabled() -> bool {
    std::env::var_os(SUPERVISOR_SWITCH).is_none_or(|v| v != "off")
}

/// The worker's connection to its parent.
static TO_PARENT: OnceLock<Mutex<UnixStream>> = OnceLock::new();
/// The supervising parent's pid, in the worker.
static PARENT: OnceLock<u32> = OnceLock::new();

/// In the worker: the supervising parent's pid (0 in an unsupervised process), recorded in
/// the journal's run start.
pub fn parent_pid() -> u32 {
    PARENT.get().copied().unwrap_or(0)
}

/// The pid of the `flowrun` the user started: the supervising parent's in a worker, else this
/// process's. The run tag (`flowrun-FLOW-PID`, cluster job names) and the out dir's lock name
/// it, so that they match what `ps` shows and what a user would kill.
pub fn flowrun_pid() -> u32 {
    PARENT.get().copied().unwrap_or_else(std::process::id)
}

/// In the worker, first thing: connects to the parent's socket `name` and makes the worker
/// die with its parent.
pub fn worker_init(name: &str) {
    // The parent blocks the signals it forwards (it reads them from a signalfd), and a
    // blocked mask survives fork and exec: unblock them here, before any thread starts, so
    // that a signal sent meanwhile is delivered now rather than lost.
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded()), None);
    let parent = nix::unistd::getppid();
    let _ = PARENT.set(parent.as_raw() as u32);
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // The parent may have died before the line above: then we were reparented already.
    if nix::unistd::getppid() != parent {
        std::process::exit(EXIT_CRASHED);
    }
    match SocketAddr::from_abstract_name(name.as_bytes()).and_then(|a| UnixStream::connect_addr(&a))
    {
        Ok(stream) => {
            let _ = TO_PARENT.set(Mutex::new(stream));
        }
        // Without the connection the run goes on; the parent treats a crash as one before the
        // run started (it never heard of a run directory).
        Err(e) => tracing::warn!("cannot reach the supervising parent ({name}): {e}"),
    }
}

fn tell_parent(line: &str) {
    if let Some(pipe) = TO_PARENT.get() {
        let _ = writeln!(pipe.lock(), "{line}");
    }
}

/// In the worker: it received signal `sig` (SIGINT, SIGTERM, SIGHUP) and acts on it.
pub fn report_signal(sig: i32) {
    tell_parent(&format!("sig {sig}"));
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

/// Whether signal number `s` is one the parent forwards (SIGINT, SIGTERM, SIGHUP).
fn is_forwarded(s: i32) -> bool {
    Signal::try_from(s).is_ok_and(|sig| forwarded().contains(sig))
}

/// What the worker said.
#[derive(Default)]
struct Heard {
    dir: Option<PathBuf>,
    done: Option<i32>,
    /// Signals it reported receiving, with when the report arrived, not yet matched with one
    /// the parent received.
    signals: Vec<(i32, Instant)>,
    /// Signals the parent forwarded whose report (the worker acting on the forwarded copy) has
    /// not come yet: that report is no sign of another signal.
    echoes: Vec<i32>,
}

impl Heard {
    /// The worker reported signal `sig` at `at`: the echo of one the parent forwarded, or one
    /// it received itself.
    fn reported(&mut self, sig: i32, at: Instant) {
        match self.echoes.iter().position(|&s| s == sig) {
            Some(i) => {
                self.echoes.remove(i);
            }
            None => self.signals.push((sig, at)),
        }
    }
}

/// How long the parent waits for the worker to report a signal the parent received, before
/// it forwards it: a signal sent to the whole process group (`kill -TERM -PGID`, a shell's
/// SIGHUP to its jobs when the terminal closes) reached the worker too and is not forwarded,
/// one sent to the parent alone (`kill PID`) is forwarded after this delay.
const SAME_SIGNAL_WINDOW: Duration = Duration::from_millis(200);

/// The parent's side of what the worker reports.
#[derive(Default)]
struct Reports {
    heard: Mutex<Heard>,
    changed: Condvar,
}

impl Reports {
    /// Signal `sig` reached the parent at `at`: whether the worker reports having received it
    /// too (within [`SAME_SIGNAL_WINDOW`]). Waits for that at most until the window closes.
    fn worker_got(&self, sig: i32, at: Instant) -> bool {
        let deadline = at + SAME_SIGNAL_WINDOW;
        let mut h = self.heard.lock();
        loop {
            // A report from well before `at` was of an earlier signal (one the parent forwarded).
            h.signals
                .retain(|&(_, when)| when + SAME_SIGNAL_WINDOW >= at);
            if let Some(i) = h.signals.iter().position(|&(s, _)| s == sig) {
                h.signals.remove(i);
                return true;
            }
            if self.changed.wait_until(&mut h, deadline).timed_out() {
                return false;
            }
        }
    }
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
    // Abstract (no file to clean up); unique to this parent. Anyone on the machine may
    // connect, so only the worker's connection is read (its peer pid, below).
    let name = format!("flowrun-supervisor-{}-{}", std::process::id(), now_us());
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--supervisor-socket")
        .arg(&name)
        .args(std::env::args_os().skip(1));
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    let mut child = cmd.spawn()?;
    let pid = Pid::from_raw(child.id() as i32);

    let reports = Arc::new(Reports::default());
    let (listened, listener_done) = std::sync::mpsc::channel::<()>();
    {
        let reports = reports.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let peer = getsockopt(&stream, PeerCredentials).map(|c| c.pid());
                if peer != Ok(pid.as_raw()) {
                    continue;
                }
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut h = reports.heard.lock();
                    if let Some(dir) = line.strip_prefix("dir ") {
                        h.dir = Some(PathBuf::from(dir));
                    } else if let Some(code) = line.strip_prefix("done ") {
                        h.done = code.parse().ok();
                    } else if let Some(Ok(sig)) = line.strip_prefix("sig ").map(str::parse) {
                        h.reported(sig, Instant::now());
                        reports.changed.notify_all();
                    }
                }
                break;
            }
            let _ = listened.send(());
        });
    }
    let sfd = SignalFd::with_flags(&forwarded, SfdFlags::SFD_CLOEXEC)?;
    {
        let reports = reports.clone();
        std::thread::spawn(move || {
            while let Ok(Some(info)) = sfd.read_signal() {
                let at = Instant::now();
                let sig = info.ssi_signo as i32;
                // A signal that went to the whole group reached the worker as well: forwarding
                // it would double it (a second signal abandons the run). The terminal's (Ctrl-C,
                // hangup) always do; a process's may (`kill -PGID`): the worker's report says.
                let got_it = reports.worker_got(sig, at);
                if got_it || info.ssi_code == libc::SI_KERNEL {
                    continue;
                }
                if let Ok(signal) = Signal::try_from(sig) {
                    reports.heard.lock().echoes.push(sig);
                    if kill(pid, signal).is_err() {
                        reports.heard.lock().echoes.retain(|&s| s != sig);
                    }
                }
            }
        });
    }

    let status = child.wait()?;
    // The connection closes with the worker (its jobs never held it: close-on-exec); a
    // process a plugin forked without exec might still hold it, and a worker that never
    // connected leaves the listener waiting, so the wait is bounded.
    let _ = listener_done.recv_timeout(Duration::from_secs(2));
    let heard = std::mem::take(&mut *reports.heard.lock());
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
        // A signal that reached the worker before it installed its handlers (it unblocks
        // the forwarded signals first thing): an interrupt before the run, not a crash.
        (Death::Signal(s), None, None) if is_forwarded(s) => {
            eprintln!("flowrun: {death} before the run started; no job ran");
            128 + s
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
    /// When the parent wrote the results: the run's end.
    finished_us: i64,
}

impl ResultsSource for Recovered {
    fn flow(&self) -> &str {
        self.replay.flow()
    }
    fn run_dir(&self) -> &str {
        self.replay.run_dir()
    }
    fn times(&self) -> (i64, i64) {
        (self.replay.first.started_us, self.finished_us)
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
            Status::Running => {
                // A cluster job outlives the crash by design: say where it is, and that
                // `--resume` picks it up again (the journal, left as it was, still has it
                // running under this id).
                let native = s.record.extra.as_ref().and_then(|x| x.native_id.as_deref());
                let still = native.map_or(String::new(), |id| {
                    format!(
                        "; it may still run on its cluster as job {id}: `flowrun run FLOW --resume` re-attaches it"
                    )
                });
                Some((
                    Status::Failed,
                    Reason::Crashed(
                        format!(
                            "flowrun crashed while the job ran: the run's process{loaded} {death}{still}"
                        )
                        .into(),
                    ),
                ))
            }
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
    let mut replay = match Replay::read(&journal) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "flowrun: crashed: the run's process {death}; no results: its journal cannot be read: {e}"
            );
            return EXIT_CRASHED;
        }
    };
    let crashed = crash_outcomes(&replay, death);
    let finished_us = now_us();
    // The journal records a job whole when it ends: of a job that was running it knows the
    // start only. It ran until the crash, and its log (if its backend writes one in the run
    // directory) is what a user will look at first.
    let run_dir = replay.run_dir().to_string();
    for (i, s) in replay.state.iter_mut().enumerate() {
        if s.status != Status::Running {
            continue;
        }
        let r = &mut s.record;
        if r.started_at > 0 {
            r.finished_at = finished_us;
        }
        let log = attempt_log(&run_dir, &replay.jobs[i].0, r.attempt.max(1));
        if !r.has_dir && Path::new(&log).is_file() {
            r.has_dir = true;
            r.attempt = r.attempt.max(1);
        }
    }
    let rec = Recovered {
        replay,
        crashed,
        finished_us,
    };
    let ended = rec.crashed.iter().filter(|c| c.is_none()).count();
    let newly = |s: Status| rec.crashed.iter().flatten().filter(|c| c.0 == s).count();
    eprintln!(
        "flowrun: crashed: the run's process (which loads the plugins) {death}; results.json is written from the journal: {ended} job(s) that had ended keep their verdicts, {} running failed, {} not run",
        newly(Status::Failed),
        newly(Status::Skipped),
    );
    let written = write_results(dir, &rec);
    print_summary(&rec, dir, &written);
    EXIT_CRASHED
}

/// The run's summary, as the worker would have printed it: the built-in display fed the
/// events of the recovered results (`-q`: the summary only).
fn print_summary(rec: &Recovered, dir: &Path, written: &std::io::Result<PathBuf>) {
    let backends: Vec<Arc<str>> = (0..rec.len()).map(|i| rec.backend(i).into()).collect();
    let names: Vec<Arc<str>> = (0..rec.len()).map(|i| rec.name(i).into()).collect();
    let (started_us, finished_us) = rec.times();
    let mut by_status = [0u64; Status::ALL.len()];
    let mut events = vec![RunEvent::RunStarted {
        time_us: started_us,
        flow: rec.flow().to_string(),
        run_dir: dir.to_path_buf(),
        jobs: names
            .iter()
            .cloned()
            .zip(backends.iter().cloned())
            .collect(),
        phases: Phases::default(),
    }];
    for i in 0..rec.len() {
        let (status, reason) = rec.outcome(i);
        by_status[status.index()] += 1;
        let r = rec.record(i);
        let extra = r.extra.as_deref();
        let log = match extra.and_then(|x| x.logs.first()) {
            Some(first) => Some(first.clone()),
            None if r.has_dir => Some(attempt_log(rec.run_dir(), rec.name(i), r.attempt).into()),
            None => None,
        };
        let fail = extra.and_then(|x| x.fail.as_ref());
        events.push(RunEvent::JobStatus(JobStatusEvent {
            time_us: r.finished_at.max(started_us),
            job_ix: i as JobIx,
            job: names[i].clone(),
            backend: backends[i].clone(),
            attempt: r.attempt.max(1),
            old: Status::Scheduled,
            new: status,
            reason: reason.map(|r| r.to_string()).unwrap_or_default(),
            reason_kind: reason.map(Reason::kind),
            exit_code: r.exit_code,
            duration_s: r.duration_s(),
            log,
            fail_line: fail.map(|f| f.line),
            fail_text: fail.map(|f| f.text.clone()),
            native_id: extra.and_then(|x| x.native_id.clone()),
            resources: None,
            cpu_s: extra.and_then(|x| x.usage.cpu_s),
            max_rss_mb: extra.and_then(|x| x.usage.max_rss_mb),
            detail: extra.and_then(|x| x.detail.clone()),
            interactive: false,
        }));
    }
    let count = |s: Status| by_status[s.index()];
    events.push(RunEvent::RunFinished {
        time_us: finished_us,
        summary: Summary {
            passed: count(Status::Passed),
            failed: count(Status::Failed),
            killed: count(Status::Killed),
            skipped: count(Status::Skipped),
            interrupted: false,
            duration_s: (finished_us - started_us) as f64 / 1e6,
            results_path: dir.join("results.json"),
            results_error: written.as_ref().err().map(|e| e.to_string()),
            ..Summary::default()
        },
        phases: Phases::default(),
    });
    let mut display = Display::start(DisplayOptions {
        quiet: true,
        ..DisplayOptions::default()
    });
    display.on_events(&events);
    display.finish();
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
    fn a_signal_the_worker_reports_is_not_forwarded_one_it_does_not_is() {
        let r = Reports::default();
        let now = Instant::now();
        r.heard.lock().signals.push((1, now));
        // Reported (a group-wide SIGHUP): matched once, and only for its own signal.
        assert!(r.worker_got(1, now));
        assert!(!r.worker_got(1, now), "one report matches one signal");
        r.heard.lock().signals.push((15, now));
        assert!(!r.worker_got(2, now));
        // A report of an earlier signal (one the parent forwarded) is not this one.
        r.heard
            .lock()
            .signals
            .push((2, now - Duration::from_secs(1)));
        assert!(!r.worker_got(2, now));
        assert!(r.heard.lock().signals.iter().all(|&(s, _)| s != 2));
        // A forwarded SIGINT's report, then a second SIGINT to the parent alone: the report
        // was the first one's, so the second is forwarded too.
        let r = Reports::default();
        r.heard.lock().echoes.push(2);
        r.heard.lock().reported(2, Instant::now());
        assert!(!r.worker_got(2, Instant::now()));
    }

    #[test]
    fn a_worker_that_finished_or_never_started_keeps_its_exit_code() {
        let done = Heard {
            dir: Some("/nonexistent".into()),
            done: Some(1),
            ..Heard::default()
        };
        assert_eq!(ended(Death::Exit(1), &done), 1);
        assert_eq!(ended(Death::Signal(11), &done), 1);
        assert_eq!(ended(Death::Exit(2), &Heard::default()), 2);
        assert_eq!(ended(Death::Signal(11), &Heard::default()), EXIT_CRASHED);
        assert_eq!(ended(Death::Signal(15), &Heard::default()), 143);
        assert_eq!(ended(Death::Signal(9), &Heard::default()), EXIT_CRASHED);
    }
}
