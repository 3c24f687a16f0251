//! The `site-wrapper` backend: runs each job on this machine as `WRAPPER... COMMAND...`.
//!
//! Config:
//! ```toml
//! [backends.site]
//! kind = "site-wrapper"
//! wrapper = ["/usr/bin/env", "SITE=1"]   # argv prefix; required, not empty
//! kill_grace = "5s"                      # SIGTERM -> SIGKILL delay on kill (default 5s)
//! ```
//!
//! How it works, kept deliberately simple:
//! - `submit` starts each job's process at once (in a process group of its own, output into
//!   the job's log) and hands it to one thread that waits for it and reports how it ended;
//! - `kill` sends SIGTERM to the job's process group, and SIGKILL after `kill_grace`;
//! - `shutdown` kills every job still running and waits until each has been reported.
//!
//! The host caps how many jobs run at once (`max_parallel` in the flow; the default here is
//! the number of CPUs), so a thread per running job stays bounded.

use std::{
    collections::HashMap,
    fs::OpenOptions,
    io,
    os::unix::process::{CommandExt, ExitStatusExt},
    panic::{catch_unwind, AssertUnwindSafe},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use flowrun_plugin_sdk::{
    config::optional_duration, panic_message, parse_config, Answer, BackendImpl, Capabilities,
    CapabilityFlags, Command as JobCommand, Event, Job, JobId, Jobs, PluginError, Sink,
};
use parking_lot::{Condvar, Mutex, MutexGuard};
use serde::Deserialize;

/// The config table of a `site-wrapper` backend, as the flow writes it (the host has removed
/// `kind` and `max_parallel`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    wrapper: Vec<String>,
    #[serde(default, deserialize_with = "optional_duration")]
    kill_grace: Option<Duration>,
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct WrapperConfig {
    /// The argv prefix every job's command is appended to.
    pub wrapper: Vec<String>,
    /// How long a killed job gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

impl WrapperConfig {
    /// Parses and checks the config; every error names its key.
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        let raw: RawConfig = parse_config(text)?;
        if raw.wrapper.first().is_none_or(|program| program.is_empty()) {
            return Err(PluginError::config(
                "wrapper",
                "must name the wrapper command, such as [\"/usr/bin/env\", \"SITE=1\"]",
            ));
        }
        Ok(WrapperConfig {
            wrapper: raw.wrapper,
            kill_grace: raw.kill_grace.unwrap_or(Duration::from_secs(5)),
        })
    }
}

/// Creates a `site-wrapper` backend.
pub fn create(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
    let config = WrapperConfig::parse(config)?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
    });
    Ok(Box::new(SiteWrapper {
        config,
        sink,
        shared,
    }))
}

/// A job whose process runs.
struct Running {
    /// Its process group (the id of the process, which leads its own group).
    pgid: libc::pid_t,
    /// The host asked for the kill: the job ends KILLED, however the process died.
    kill_requested: bool,
}

#[derive(Default)]
struct State {
    running: HashMap<JobId, Running>,
    /// Jobs reaped but not yet reported: `shutdown` waits for them too.
    reporting: usize,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled whenever a job leaves `running` or `reporting`.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Sends `signal` to the process groups of those `ids` that still run; with `request`, marks
    /// them killed on the host's request.
    fn signal(&self, ids: &[JobId], signal: libc::c_int, request: bool) {
        let mut state = self.lock();
        for id in ids {
            if let Some(job) = state.running.get_mut(id) {
                job.kill_requested |= request;
                // SAFETY: killpg has no memory-safety requirements. A job is in `running` only
                // while its leader is unreaped (see `watch`), so the group id cannot have been
                // reused by an unrelated process.
                unsafe { libc::killpg(job.pgid, signal) };
            }
        }
    }
}

struct SiteWrapper {
    config: WrapperConfig,
    sink: Sink,
    shared: Arc<Shared>,
}

impl SiteWrapper {
    /// Starts one job, or says why it cannot start.
    fn start(&self, job: Job<'_>) -> Result<Child, String> {
        if !Path::new(job.cwd()).is_dir() {
            return Err(format!("working directory does not exist: {}", job.cwd()));
        }
        // Truncated, never appended: the log is this attempt's evidence alone.
        let log = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(job.log_path())
            .map_err(|e| format!("cannot open the log {}: {e}", job.log_path()))?;
        let log_too = log
            .try_clone()
            .map_err(|e| format!("cannot open the log {}: {e}", job.log_path()))?;

        let mut argv: Vec<&str> = self.config.wrapper.iter().map(String::as_str).collect();
        match job.command() {
            JobCommand::Shell(script) => argv.extend(["/bin/sh", "-c", script]),
            JobCommand::Argv(args) => argv.extend(args.iter()),
        }

        let mut command = Command::new(argv[0]);
        command
            .args(&argv[1..])
            .current_dir(job.cwd())
            // The host's job environment (FLOWRUN_JOB_NAME, ...) is part of `env`.
            .envs(job.env())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_too))
            // A group of its own, so that a kill reaches everything the job started.
            .process_group(0);
        command
            .spawn()
            .map_err(|e| format!("cannot start the wrapper {}: {e}", argv[0]))
    }

    /// Waits for `child` on a thread of its own and reports how the job ended.
    fn watch(&self, id: JobId, mut child: Child) -> Result<(), String> {
        let shared = self.shared.clone();
        let sink = self.sink.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("site-job-{}", id.0))
            .spawn(move || {
                // Wait for the exit without reaping, leave `running`, and only then reap: while the
                // job is in `running` its process id cannot be reused, so `kill` never signals a
                // stranger's process group.
                let exited = wait_for_exit_without_reaping(child.id());
                let kill_requested = {
                    let mut state = shared.lock();
                    let job = state.running.remove(&id);
                    state.reporting += 1;
                    job.is_some_and(|j| j.kill_requested)
                };
                // A panic here must not lose the job: report it lost instead.
                let outcome = catch_unwind(AssertUnwindSafe(|| exited.and_then(|()| child.wait())));
                let event = match outcome {
                    Ok(Ok(_)) if kill_requested => Event::killed(id),
                    Ok(Ok(status)) => match (status.code(), status.signal()) {
                        (Some(code), _) => Event::exited(id, code),
                        (None, Some(signal)) => Event::signaled(id, signal),
                        (None, None) => {
                            Event::lost(id, format!("unexpected wait status {status:?}"))
                        }
                    },
                    Ok(Err(e)) => {
                        Event::lost(id, format!("cannot wait for the job's process: {e}"))
                    }
                    Err(panic) => {
                        Event::lost(id, format!("plugin panicked: {}", panic_message(&*panic)))
                    }
                };
                sink.emit(event);
                shared.lock().reporting -= 1;
                shared.changed.notify_all();
            });
        spawned
            .map(|_| ())
            .map_err(|e| format!("cannot start a thread to watch the job: {e}"))
    }

    /// Kills `ids` now (SIGTERM) and later (SIGKILL, after the grace period) if still running.
    fn kill_with_grace(&self, ids: Vec<JobId>) {
        self.shared.signal(&ids, libc::SIGTERM, true);
        let shared = self.shared.clone();
        let grace = self.config.kill_grace;
        let fallback_ids = ids.clone();
        let escalate = move || {
            let deadline = Instant::now() + grace;
            let mut state = shared.lock();
            // Wake early when the jobs are gone, so no thread lingers for the whole grace.
            while ids.iter().any(|id| state.running.contains_key(id)) {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    drop(state);
                    shared.signal(&ids, libc::SIGKILL, true);
                    return;
                };
                shared.changed.wait_for(&mut state, left);
            }
        };
        if std::thread::Builder::new()
            .name("site-kill".into())
            .spawn(escalate)
            .is_err()
        {
            // No thread for the grace period: no grace then.
            self.shared.signal(&fallback_ids, libc::SIGKILL, true);
        }
    }
}

/// Blocks until process `pid` (our child) has exited, leaving it a zombie for `Child::wait`.
fn wait_for_exit_without_reaping(pid: u32) -> io::Result<()> {
    loop {
        // SAFETY: siginfo_t is a plain C struct, for which all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t; waitid only fills it in, and WNOWAIT
        // leaves the child for `Child::wait` to reap.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl BackendImpl for SiteWrapper {
    fn capabilities(&self) -> Capabilities {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Capabilities {
            flags: CapabilityFlags::BATCH_KILL,
            default_max_parallel: u32::try_from(cpus).unwrap_or(u32::MAX),
            max_batch: 0,
        }
    }

    fn submit(&self, jobs: Jobs<'_>) -> Vec<Answer> {
        let mut answers = Vec::with_capacity(jobs.len());
        for job in jobs {
            let id = job.id();
            if job.interactive() {
                answers.push(Answer::rejected(
                    id,
                    "the site-wrapper backend does not run interactive jobs",
                ));
                continue;
            }
            // Hold the lock from the spawn until the job is in `running`, so that neither its
            // watcher nor a kill can look for it before it is there.
            let mut state = self.shared.lock();
            if state.closed {
                answers.push(Answer::rejected(
                    id,
                    "the site-wrapper backend has shut down",
                ));
                continue;
            }
            match self.start(job) {
                Ok(child) => {
                    let pgid = child.id() as libc::pid_t;
                    state.running.insert(
                        id,
                        Running {
                            pgid,
                            kill_requested: false,
                        },
                    );
                    drop(state);
                    self.sink.emit(Event::started(id));
                    if let Err(why) = self.watch(id, child) {
                        // Cannot watch it: stop it, and say so. (The child is reaped by nobody;
                        // this only happens when the process is out of threads anyway.)
                        self.shared.signal(&[id], libc::SIGKILL, false);
                        self.shared.lock().running.remove(&id);
                        self.sink.emit(Event::failed(id, why));
                    }
                }
                Err(why) => {
                    drop(state);
                    self.sink.emit(Event::failed(id, why));
                }
            }
            answers.push(Answer::accepted(id));
        }
        answers
    }

    fn kill(&self, ids: &[JobId]) {
        self.kill_with_grace(ids.to_vec());
    }

    fn shutdown(&self) {
        let ids: Vec<JobId> = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.running.keys().copied().collect()
        };
        if !ids.is_empty() {
            self.kill_with_grace(ids);
        }
        // Wait until every job has been reported, but never forever: a process stuck in the
        // kernel survives SIGKILL, and the host must still be able to exit.
        let deadline = Instant::now() + self.config.kill_grace + Duration::from_secs(10);
        let mut state = self.shared.lock();
        while !state.running.is_empty() || state.reporting > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            self.shared.changed.wait_for(&mut state, left);
        }
    }

    fn stats(&self) -> String {
        format!("running = {}\n", self.shared.lock().running.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use flowrun_plugin_sdk::{EndKind, ErrorKind, JobEventKind, SubmitAnswerKind};
    use flowrun_plugin_testkit::{Contract, FakeHost};

    use super::create;

    const ENV_WRAPPER: &str = "wrapper = [\"/usr/bin/env\", \"SITE=1\"]";
    const WAIT: Duration = Duration::from_secs(20);

    #[test]
    fn keeps_the_backend_contract() {
        Contract::new(create, &format!("{ENV_WRAPPER}\nkill_grace = \"1s\""))
            .check()
            .unwrap();
    }

    #[test]
    fn runs_shell_and_argv_jobs_through_the_wrapper_in_cwd_with_env() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = FakeHost::new(dir.path());
        let backend = host
            .backend(create, ENV_WRAPPER)
            .map_err(|e| e.to_string())
            .unwrap();
        let shell = host
            .shell_job(
                "shell",
                "echo site=$SITE extra=$EXTRA pwd=$(pwd); echo oops >&2; exit 4",
            )
            .env("EXTRA", "x y");
        let argv = host.argv_job("argv", &["printenv", "SITE"]);
        let logs = [
            shell.job().log_path().to_string(),
            argv.job().log_path().to_string(),
        ];
        let cwd = shell.job().cwd().to_string();
        let ids = [shell.id(), argv.id()];
        let answers = host.submit_all(&backend, vec![shell, argv], WAIT);
        assert!(answers
            .iter()
            .all(|a| a.kind() == SubmitAnswerKind::ACCEPTED));
        assert_eq!(host.wait_end(ids[0], WAIT).unwrap().exit_code(), Some(4));
        assert_eq!(host.wait_end(ids[1], WAIT).unwrap().exit_code(), Some(0));
        let shell_log = std::fs::read_to_string(&logs[0]).unwrap();
        assert!(
            shell_log.contains(&format!("site=1 extra=x y pwd={cwd}")),
            "{shell_log}"
        );
        assert!(
            shell_log.contains("oops"),
            "stderr goes to the log too: {shell_log}"
        );
        assert_eq!(std::fs::read_to_string(&logs[1]).unwrap(), "1\n");
        backend.shutdown();
    }

    #[test]
    fn a_missing_cwd_or_wrapper_fails_the_job_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = FakeHost::new(dir.path());
        let backend = host
            .backend(create, ENV_WRAPPER)
            .map_err(|e| e.to_string())
            .unwrap();
        let job = host.shell_job("nocwd", "true").cwd("/nonexistent/dir");
        let id = job.id();
        host.submit_all(&backend, vec![job], WAIT);
        let end = host.wait_end(id, WAIT).unwrap();
        assert_eq!(end.end(), EndKind::FAILED);
        assert!(
            end.reason()
                .contains("working directory does not exist: /nonexistent/dir"),
            "{end:?}"
        );

        let backend = host
            .backend(create, "wrapper = [\"/no/such/wrapper\"]")
            .map_err(|e| e.to_string())
            .unwrap();
        let job = host.shell_job("nowrapper", "true");
        let id = job.id();
        host.submit_all(&backend, vec![job], WAIT);
        let end = host.wait_end(id, WAIT).unwrap();
        assert_eq!(end.end(), EndKind::FAILED);
        assert!(
            end.reason()
                .contains("cannot start the wrapper /no/such/wrapper"),
            "{end:?}"
        );
    }

    #[test]
    fn kill_reaches_the_whole_process_group_and_escalates_to_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = FakeHost::new(dir.path());
        let backend = host
            .backend(create, &format!("{ENV_WRAPPER}\nkill_grace = \"300ms\""))
            .map_err(|e| e.to_string())
            .unwrap();
        // The shell ignores SIGTERM, and its child sleeps: only SIGKILL to the group ends both.
        let pid_file = dir.path().join("child.pid");
        let job = host.shell_job(
            "stubborn",
            &format!(
                "trap '' TERM; sleep 300 & echo $! > {}; wait",
                pid_file.display()
            ),
        );
        let id = job.id();
        host.submit_all(&backend, vec![job], WAIT);
        let started = host.next_event(WAIT).unwrap();
        assert_eq!(started.kind(), JobEventKind::STARTED);
        let deadline = Instant::now() + WAIT;
        while std::fs::read_to_string(&pid_file).map_or(true, |s| s.trim().is_empty()) {
            assert!(Instant::now() < deadline, "the job never started its child");
            std::thread::sleep(Duration::from_millis(20));
        }
        let child: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let start = Instant::now();
        backend.kill(&[id]);
        let end = host.wait_end(id, WAIT).unwrap();
        assert_eq!(end.end(), EndKind::KILLED, "{end:?}");
        assert!(
            start.elapsed() >= Duration::from_millis(250),
            "SIGKILL came before the grace: {:?}",
            start.elapsed()
        );
        // The grandchild got SIGKILL too (it may linger as a zombie of init for a moment).
        let gone = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z "))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone(child) {
            assert!(
                Instant::now() < deadline,
                "the job's child {child} survived the kill"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        backend.shutdown();
    }

    #[test]
    fn shutdown_kills_running_jobs_and_refuses_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = FakeHost::new(dir.path());
        let backend = host
            .backend(create, &format!("{ENV_WRAPPER}\nkill_grace = \"1s\""))
            .map_err(|e| e.to_string())
            .unwrap();
        let job = host.shell_job("sleeper", "sleep 300");
        let id = job.id();
        host.submit_all(&backend, vec![job], WAIT);
        let start = Instant::now();
        backend.shutdown();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        let end = host
            .wait_end(id, Duration::from_millis(100))
            .expect("reported before shutdown returned");
        assert_eq!(end.end(), EndKind::KILLED);
        let late = host.shell_job("late", "true");
        let answers = host.submit_all(&backend, vec![late], WAIT);
        assert_eq!(answers[0].kind(), SubmitAnswerKind::REJECTED);
    }

    #[test]
    fn interactive_jobs_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = FakeHost::new(dir.path());
        let backend = host
            .backend(create, ENV_WRAPPER)
            .map_err(|e| e.to_string())
            .unwrap();
        let job = host.shell_job("tty", "true").interactive(true);
        let answers = host.submit_all(&backend, vec![job], WAIT);
        assert_eq!(answers[0].kind(), SubmitAnswerKind::REJECTED);
        assert!(answers[0].message().contains("interactive"));
    }

    #[test]
    fn config_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let host = FakeHost::new(dir.path());
        for (config, key) in [
            ("", "wrapper"),
            ("wrapper = []", "`wrapper`"),
            ("wrapper = [\"\"]", "`wrapper`"),
            (
                "wrapper = [\"/bin/env\"]\nkill_grace = \"soon\"",
                "`kill_grace`",
            ),
            ("wrapper = [\"/bin/env\"]\nwraper = 1", "wraper"),
        ] {
            let e = host.backend(create, config).err().expect("refused");
            assert_eq!(e.kind, ErrorKind::CONFIG);
            assert!(e.message.contains(key), "{config:?}: {e}");
        }
    }
}
