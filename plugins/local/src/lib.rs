//! flowrun's `local` backend: runs each job as a process tree on this machine.
//!
//! How it works (details in README.md):
//! - `submit` starts each job right away on the calling thread (`spawn/`: by default a clone
//!   sharing our memory that is born in the job's cgroup v2 when available, starts a new
//!   session, creates the job directory, `cmd.sh` and the log, points stdout/stderr at the
//!   log, changes to the cwd and execs). The host thread does not wait for it and makes no
//!   filesystem call per job; the job is watched through the pidfd clone returns.
//! - One reaper thread per backend waits in `epoll_wait` on every job's pidfd plus an eventfd
//!   (wake-ups) with a timeout equal to the next kill deadline: completion is reported the
//!   moment a process exits, and nothing polls. It reaps with `wait4(pid)`, never
//!   `waitpid(-1)`, because other plugins of the same process have children too.
//! - A job is reported FINISHED only when its whole tree is gone: processes left behind by a
//!   job that ended on its own get SIGKILL; a job the host kills gets SIGTERM, then SIGKILL
//!   after `kill_grace`. FINISHED carries what the tree used (`cpu_s`, `max_rss_mb`).
//! - A watchdog process kills the jobs if flowrun dies without shutting the backend down.
//! - Running out of descriptors or processes answers BUSY: the host offers the job again.
//!
//! `unsafe` code lives in `src/spawn/` only.
#![deny(unsafe_code)]

mod cmdsh;
mod config;
#[allow(unsafe_code)]
mod spawn;
mod tree;

#[cfg(test)]
mod tests;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    io::IsTerminal,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use flowrun_plugin_sdk::{
    Answer, BackendImpl, Capabilities, CapabilityFlags, Command, Event, Job as JobSpec, JobId,
    Jobs, PluginError, Sink,
};
use nix::sys::{
    epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
    eventfd::{EfdFlags, EventFd},
    signal::Signal,
};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::{
    config::{CgroupMode, Config, SpawnMode},
    spawn::{
        watchdog::{Watchdog, WatchdogSetup},
        BaseEnv, ChildReport, CloneSpawner, Containment, Grouping, Output, Plan, Reaped,
        SpawnError, SpawnStep, Spawner, StdSpawner, WaitUsage,
    },
    tree::{CgroupRoot, CgroupUsage, JobCgroup, ScanTarget},
};

flowrun_plugin_sdk::export_plugin!(name = "local", version = env!("CARGO_PKG_VERSION"));
flowrun_plugin_sdk::register_backend!(
    kind = "local",
    description = "runs jobs as process trees on this machine (sessions, cgroups, pidfds)",
    create = create
);

/// How long after SIGKILL we keep waiting for a tree to disappear before reporting the job
/// anyway (a process stuck in uninterruptible sleep cannot die).
const GIVE_UP_AFTER_SIGKILL: Duration = Duration::from_secs(5);
/// First and longest delay between checks of a tree whose leader has exited but whose other
/// processes are still dying after a signal (the normal path is event-driven).
const FIRST_RECHECK: Duration = Duration::from_millis(2);
const LONGEST_RECHECK: Duration = Duration::from_millis(100);
/// The epoll key of the wake-up eventfd; job pidfds are keyed by pid, never 0.
const WAKE_KEY: u64 = 0;
/// A shortage of descriptors or processes that lasts this long while none of this backend's
/// jobs runs (so none can free anything) fails the job instead of answering BUSY forever.
const SHORTAGE_GIVE_UP: Duration = Duration::from_secs(30);

/// Creates a local backend from its TOML config.
pub fn create(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
    let config = Config::parse(config)?;
    Ok(Box::new(LocalBackend::new(config, sink)?))
}

/// How a job's leader process ended.
#[derive(Debug, Clone, Copy)]
enum LeaderEnd {
    Exited(i32),
    Signaled(i32),
    /// Someone else reaped it (a `waitpid(-1)` elsewhere in the process).
    Unknown,
}

/// A running job.
struct Job {
    id: JobId,
    /// The leader's pid, also its process group (and, on the clone path, session id).
    pid: libc::pid_t,
    /// Open and in the epoll set while the leader runs.
    pidfd: Option<OwnedFd>,
    /// The `FLOWRUN_JOB_TAG` value.
    tag: String,
    /// The job's cgroup, until it is seen empty (and returned to the pool).
    cgroup: Option<JobCgroup>,
    /// Nothing of the job can be outside its cgroup (born in it).
    fully_contained: bool,
    /// Moved into its cgroup after it started (the `std` path): what it forked before is
    /// outside, so the cgroup's counters are only a lower bound.
    placed_late: bool,
    /// The watchdog was told about the job's process group.
    announced: bool,
    leader_end: Option<LeaderEnd>,
    /// What `wait4` said the leader and the descendants it waited for used.
    leader_usage: Option<WaitUsage>,
    /// What the cgroup said the whole tree used, read when it emptied.
    cgroup_usage: Option<CgroupUsage>,
    /// The host asked for the kill: the job ends KILLED.
    kill_requested: bool,
    /// When SIGKILL follows the SIGTERM of a kill.
    sigkill_at: Option<Instant>,
    /// When SIGKILL was sent.
    sigkill_sent: Option<Instant>,
    recheck_delay: Duration,
    /// Logs to report on FINISHED (split output).
    logs: Vec<String>,
    interactive: bool,
    /// For a shell-string job: the file its stderr goes to, read when it exits with 127 to
    /// tell "command not found" (the shell's own message) from other failures.
    shell_stderr: Option<PathBuf>,
    /// Where the child says why it failed before exec.
    report: Box<ChildReport>,
    /// What a failure before exec is about.
    start: Box<StartContext>,
}

/// What a start failure's reason names.
struct StartContext {
    program: String,
    cwd: String,
    job_dir: String,
    /// The file stdout goes to (the one log, or `stdout.log` with split output).
    stdout_log: String,
}

#[derive(Default)]
struct State {
    jobs: HashMap<JobId, Job>,
    /// Leader pid -> job, for epoll events.
    by_pid: HashMap<libc::pid_t, JobId>,
    /// Kill deadlines and re-checks; stale entries are harmless.
    timers: BinaryHeap<Reverse<(Instant, JobId)>>,
    shutting_down: bool,
    stop_reaper: bool,
    interactive_job: Option<JobId>,
    /// Since when starting jobs has failed for want of descriptors or processes.
    shortage_since: Option<Instant>,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    failed_to_start: AtomicU64,
    finished: AtomicU64,
    leftover_trees_killed: AtomicU64,
    proc_scans: AtomicU64,
    /// epoll_wait returns of the reaper: about one per job; more means it spins.
    reaper_wakeups: AtomicU64,
    /// BUSY answers for want of descriptors or processes.
    busy_for_shortage: AtomicU64,
}

/// The descriptors this backend may hold: the soft limit (raised to the hard one) minus a
/// reserve for the host and other plugins (the host must still open logs to judge them).
struct FdBudget {
    limit: u64,
    reserve: u64,
    /// pidfds of running jobs (cgroup descriptors are counted by the cgroup root).
    pidfds: AtomicU64,
}

struct Shared {
    /// `<flowrun pid>.<backend instance>`, part of every job's tag.
    instance_tag: String,
    config: Config,
    sink: Sink,
    cgroups: Option<CgroupRoot>,
    /// Cleared when placing a process in a cgroup fails: later jobs skip cgroups.
    cgroups_working: AtomicBool,
    /// stdin of non-interactive jobs.
    devnull: std::fs::File,
    /// Whether the host's stdin is a terminal (interactive jobs get it as foreground).
    stdin_is_tty: bool,
    epoll: Epoll,
    wake: EventFd,
    state: Mutex<State>,
    /// Signalled when `jobs` becomes empty (shutdown waits on it).
    all_done: Condvar,
    counters: Counters,
    spawner: Spawner,
    fds: FdBudget,
    /// One warning per backend about shortages, not one per job.
    shortage_warned: AtomicBool,
    /// One warning per backend about cgroups that cannot be created.
    cgroup_warned: AtomicBool,
    watchdog: Mutex<Option<Watchdog>>,
}

/// The backend object.
pub struct LocalBackend {
    shared: Arc<Shared>,
    reaper: Mutex<Option<JoinHandle<()>>>,
}

fn os_error(what: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::io(format!("{what}: {e}"))
}

impl LocalBackend {
    fn new(config: Config, sink: Sink) -> Result<Self, PluginError> {
        static INSTANCE: AtomicU64 = AtomicU64::new(0);
        let instance = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let cgroups = match config.cgroups {
            CgroupMode::Off => None,
            CgroupMode::Auto => match CgroupRoot::create(instance) {
                Ok(root) => {
                    tracing::debug!(
                        "local backend: one cgroup per job under {}",
                        root.dir().display()
                    );
                    Some(root)
                }
                Err(e) => {
                    tracing::info!(
                        "local backend: cgroups unavailable ({e}); containing jobs by session and environment tag"
                    );
                    None
                }
            },
        };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| os_error("cannot create an epoll instance", e))?;
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| os_error("cannot create an eventfd", e))?;
        epoll
            .add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE_KEY))
            .map_err(|e| os_error("cannot watch the eventfd", e))?;
        let devnull =
            std::fs::File::open("/dev/null").map_err(|e| os_error("cannot open /dev/null", e))?;
        let limit = raise_fd_limit();
        let instance_tag = format!("{}.{instance}", std::process::id());
        let watchdog = Watchdog::start(WatchdogSetup {
            tag_needle: format!("-{instance_tag}-"),
            cgroup_kill: cgroups.as_ref().and_then(|c| c.kill_file()),
            keep: cgroups.as_ref().map(|c| c.lock_fd()),
        })
        .inspect_err(|e| {
            tracing::warn!("local backend: cannot start the watchdog ({e}): if flowrun is killed, its jobs outlive it")
        })
        .ok();
        let spawner = match config.spawn {
            SpawnMode::Clone => Spawner::Clone(CloneSpawner::new(BaseEnv::capture())),
            SpawnMode::Std => Spawner::Std(StdSpawner::new(BaseEnv::capture())),
        };
        let shared = Arc::new(Shared {
            instance_tag,
            config,
            sink,
            cgroups_working: AtomicBool::new(cgroups.is_some()),
            cgroups,
            devnull,
            stdin_is_tty: std::io::stdin().is_terminal(),
            epoll,
            wake,
            state: Mutex::new(State::default()),
            all_done: Condvar::new(),
            counters: Counters::default(),
            spawner,
            fds: FdBudget {
                limit,
                reserve: (limit / 8).max(64),
                pidfds: AtomicU64::new(0),
            },
            shortage_warned: AtomicBool::new(false),
            cgroup_warned: AtomicBool::new(false),
            watchdog: Mutex::new(watchdog),
        });
        let reaper_shared = shared.clone();
        let reaper = std::thread::Builder::new()
            .name("flowrun-local-reaper".into())
            .spawn(move || reaper_shared.reaper_loop())
            .map_err(|e| os_error("cannot start the reaper thread", e))?;
        Ok(LocalBackend {
            shared,
            reaper: Mutex::new(Some(reaper)),
        })
    }

    /// The watchdog's pid (tests).
    #[cfg(test)]
    fn watchdog_pid(&self) -> Option<libc::pid_t> {
        self.shared.watchdog.lock().as_ref().map(|w| w.pid())
    }

    /// Makes the watchdog act as if flowrun had died (tests); returns its pid.
    #[cfg(test)]
    fn watchdog_loses_host(&self) -> Option<libc::pid_t> {
        let mut watchdog = self.shared.watchdog.lock().take()?;
        let pid = watchdog.pid();
        watchdog.lose_host();
        Some(pid)
    }
}

impl BackendImpl for LocalBackend {
    fn capabilities(&self) -> Capabilities {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Capabilities {
            flags: CapabilityFlags::INTERACTIVE
                | CapabilityFlags::BATCH_SUBMIT
                | CapabilityFlags::BATCH_KILL
                | CapabilityFlags::CREATES_JOB_DIR,
            default_max_parallel: cpus as u32,
            max_batch: 0,
        }
    }

    fn submit(&self, jobs: Jobs<'_>) -> Vec<Answer> {
        jobs.iter()
            .map(|spec| self.shared.submit_one(spec))
            .collect()
    }

    fn kill(&self, ids: &[JobId]) {
        self.shared.kill(ids);
    }

    fn shutdown(&self) {
        // The host calls shutdown when the run is over: after a normal end nothing runs any
        // more, and after a second Ctrl-C whatever still runs must die now, not after the
        // grace period. So: SIGKILL to every remaining tree, then wait for them.
        let ids: Vec<JobId> = {
            let mut state = self.shared.lock();
            state.shutting_down = true;
            state.jobs.keys().copied().collect()
        };
        self.shared.kill_now(&ids);
        {
            let mut state = self.shared.lock();
            while !state.jobs.is_empty() {
                self.shared.all_done.wait(&mut state);
            }
            state.stop_reaper = true;
        }
        self.shared.wake_reaper();
        if let Some(handle) = self.reaper.lock().take() {
            let _ = handle.join();
            // Every job is gone: the watchdog may go without killing.
            if let Some(mut watchdog) = self.shared.watchdog.lock().take() {
                watchdog.close();
            }
            if let Some(root) = &self.shared.cgroups {
                root.remove();
            }
        }
    }

    fn stats(&self) -> String {
        let c = &self.shared.counters;
        format!(
            "jobs_started = {}\njobs_failed_to_start = {}\njobs_finished = {}\nleftover_trees_killed = {}\nproc_scans = {}\nreaper_wakeups = {}\nbusy_for_shortage = {}\ncgroups = {}\nspawn = \"{}\"\n",
            c.started.load(Ordering::Relaxed),
            c.failed_to_start.load(Ordering::Relaxed),
            c.finished.load(Ordering::Relaxed),
            c.leftover_trees_killed.load(Ordering::Relaxed),
            c.proc_scans.load(Ordering::Relaxed),
            c.reaper_wakeups.load(Ordering::Relaxed),
            c.busy_for_shortage.load(Ordering::Relaxed),
            self.shared.cgroups_working.load(Ordering::Relaxed),
            self.shared.config.spawn.name(),
        )
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        // The host calls shutdown; this only guards against a host that forgets, so that no
        // job outlives the backend.
        self.shutdown();
    }
}

/// Why a job did not start.
enum StartFailure {
    /// Out of descriptors, processes or memory for now: the host offers the job again.
    Busy,
    /// The job's FINISHED(FAILED) reason.
    Failed(String),
}

impl From<String> for StartFailure {
    fn from(reason: String) -> Self {
        StartFailure::Failed(reason)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    fn wake_reaper(&self) {
        let _ = self.wake.write(1);
    }

    fn submit_one(&self, spec: JobSpec<'_>) -> Answer {
        {
            let mut state = self.lock();
            if state.shutting_down {
                return Answer::rejected(spec.id(), "the local backend is shutting down");
            }
            if spec.interactive() {
                // One job holds the terminal at a time; the host offers the next one later.
                if state.interactive_job.is_some() {
                    return Answer::busy(spec.id());
                }
                state.interactive_job = Some(spec.id());
            }
        }
        match self.start_job(spec) {
            Ok(()) => {
                self.lock().shortage_since = None;
                Answer::accepted(spec.id())
            }
            Err(StartFailure::Busy) => {
                if spec.interactive() {
                    self.lock().interactive_job = None;
                }
                self.counters
                    .busy_for_shortage
                    .fetch_add(1, Ordering::Relaxed);
                Answer::busy(spec.id())
            }
            Err(StartFailure::Failed(reason)) => {
                self.counters
                    .failed_to_start
                    .fetch_add(1, Ordering::Relaxed);
                if spec.interactive() {
                    self.lock().interactive_job = None;
                }
                self.sink.emit(Event::failed(spec.id(), reason));
                Answer::accepted(spec.id())
            }
        }
    }

    /// A start failed for want of `what`: BUSY, with one warning per backend; or, when the
    /// shortage has lasted [`SHORTAGE_GIVE_UP`] while none of our jobs ran (none can free
    /// anything), the job's failure.
    fn shortage(&self, what: &str) -> StartFailure {
        if !self.shortage_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "local backend: {what}: jobs wait until running ones end (descriptor limit {}; shown once)",
                self.fds.limit
            );
        }
        let now = Instant::now();
        let mut state = self.lock();
        let since = *state.shortage_since.get_or_insert(now);
        if state.jobs.is_empty() && now.duration_since(since) >= SHORTAGE_GIVE_UP {
            return StartFailure::Failed(format!(
                "cannot start the job: {what}, and nothing freed up for {}s",
                SHORTAGE_GIVE_UP.as_secs()
            ));
        }
        StartFailure::Busy
    }

    /// Descriptors this backend holds, against its budget.
    fn fds_short(&self, extra: u64) -> bool {
        let held = self.fds.pidfds.load(Ordering::Relaxed)
            + self.cgroups.as_ref().map_or(0, |c| c.fds_held());
        held + extra + self.fds.reserve > self.fds.limit
    }

    /// Spawns the job and registers it with the reaper.
    fn start_job(&self, spec: JobSpec<'_>) -> Result<(), StartFailure> {
        let use_cgroups = self.cgroups.is_some() && self.cgroups_working.load(Ordering::Relaxed);
        let cgroup_fds = match (&self.cgroups, use_cgroups) {
            (Some(root), true) => root.fds_for_next_job(),
            _ => 0,
        };
        if self.fds_short(1 + cgroup_fds) {
            let pool_shrunk = self.cgroups.as_ref().is_some_and(|c| c.shrink_pool());
            if !pool_shrunk || self.fds_short(1 + 5) {
                return Err(self.shortage("file descriptors are running short"));
            }
        }
        // Unique even if two runs (or two test hosts) share a run tag: the /proc scan kills
        // whatever carries it.
        let tag = format!("{}-{}-{}", spec.run_tag(), self.instance_tag, spec.id().0);
        // The FLOWRUN_* job variables come in `env`: the host sets them for every backend.
        let env: Vec<(&str, &str)> = spec.env().chain([(tree::TAG_VAR, tag.as_str())]).collect();
        let job_dir = Path::new(spec.job_dir());
        let cmd_sh_path = job_dir.join("cmd.sh");
        let cmd_sh_text = cmdsh::render(spec);

        let argv: Vec<&str> = match spec.command() {
            Command::Shell(script) => vec!["/bin/sh", "-c", script],
            Command::Argv(args) => args.iter().collect(),
        };
        let shell = matches!(spec.command(), Command::Shell(_));
        let program_name = argv.first().copied().unwrap_or("");

        let shell_stderr = match (shell, spec.interactive(), self.config.split_output) {
            (false, _, _) | (_, true, _) => None,
            (true, false, false) => Some(PathBuf::from(spec.log_path())),
            (true, false, true) => Some(job_dir.join("stderr.log")),
        };
        let logs: Vec<String> = if self.config.split_output && !spec.interactive() {
            ["stdout.log", "stderr.log"]
                .map(|f| job_dir.join(f).to_string_lossy().into_owned())
                .into()
        } else {
            Vec::new()
        };
        let stdin = self.devnull.as_raw_fd();
        let output = match (spec.interactive(), logs.as_slice()) {
            (true, _) => Output::Inherit,
            (false, [stdout, stderr]) => Output::Split {
                stdout,
                stderr,
                stdin,
            },
            (false, _) => Output::Log {
                path: spec.log_path(),
                stdin,
            },
        };
        let start = Box::new(StartContext {
            program: program_name.to_string(),
            cwd: spec.cwd().to_string(),
            job_dir: spec.job_dir().to_string(),
            stdout_log: logs
                .first()
                .map_or_else(|| spec.log_path().to_string(), String::clone),
        });
        let grouping = match (spec.interactive(), &self.spawner) {
            (false, Spawner::Clone(_)) => Grouping::NewSession,
            _ => Grouping::NewProcessGroup,
        };

        let mut cgroup = None;
        if let (Some(root), true) = (&self.cgroups, use_cgroups) {
            match root.acquire() {
                Ok(cg) => cgroup = Some(cg),
                Err(e) if spawn::is_resource_errno(e.raw_os_error()) => {
                    return Err(self.shortage(&format!("cannot create a job cgroup ({e})")));
                }
                Err(e) => {
                    // Not a passing shortage: run this and later jobs without cgroups.
                    self.cgroups_working.store(false, Ordering::Relaxed);
                    if !self.cgroup_warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "local backend: cannot create a cgroup for job {} ({e}); containing jobs by session and environment tag from now on",
                            spec.name()
                        );
                    }
                }
            }
        }
        // The std path and a self-placing child write the pid to cgroup.procs.
        let with_procs = matches!(self.spawner, Spawner::Std(_));
        let cgroup_fds = match cgroup.as_mut().map(|cg| cg.spawn_fds(with_procs)) {
            Some(Ok(fds)) => Some(fds),
            Some(Err(e)) => {
                if let (Some(cg), Some(root)) = (cgroup.take(), &self.cgroups) {
                    root.release(cg);
                }
                return Err(self.shortage(&format!("cannot open a job cgroup's files ({e})")));
            }
            None => None,
        };
        let cmd_sh_path = cmd_sh_path.to_string_lossy();
        let plan = Plan {
            argv: &argv,
            env: &env,
            cwd: spec.cwd(),
            job_dir: spec.job_dir(),
            cmd_sh_path: &cmd_sh_path,
            cmd_sh_text: &cmd_sh_text,
            output,
            grouping,
            cgroup: cgroup_fds,
            // An interactive job's process group must exist before it gets the terminal.
            wait_for_exec: spec.interactive(),
        };
        let release = |cgroup: &mut Option<JobCgroup>| {
            if let (Some(cg), Some(root)) = (cgroup.take(), &self.cgroups) {
                root.release(cg);
            }
        };
        let spawned = match self.spawner.spawn(&plan) {
            Ok(spawned) => spawned,
            Err(e) if e.is_resource_shortage() => {
                release(&mut cgroup);
                let what = match &e {
                    SpawnError::Step { error, .. } => format!("cannot start a process ({error})"),
                    SpawnError::Invalid(r) => r.clone(),
                };
                return Err(self.shortage(&what));
            }
            Err(SpawnError::Step {
                step: SpawnStep::Cgroup,
                error,
            }) if cgroup.is_some() => {
                // Placement refused (for example a cgroup with controllers that forbid it):
                // stop using cgroups and run this job without one.
                tracing::warn!("local backend: cannot place jobs in cgroups ({error}); using sessions and tags only");
                self.cgroups_working.store(false, Ordering::Relaxed);
                release(&mut cgroup);
                self.spawner
                    .spawn(&Plan {
                        cgroup: None,
                        ..plan
                    })
                    .map_err(|e| start_failure(e, &start))?
            }
            Err(e) => {
                // The child failed before exec: nothing of it is left in the cgroup.
                release(&mut cgroup);
                return Err(start_failure(e, &start).into());
            }
        };
        let (pid, pidfd, report) = (spawned.pid, spawned.pidfd, spawned.report);
        let spawned_containment = spawned.containment;
        if spawned.containment == Containment::None {
            release(&mut cgroup); // a failed best-effort move: the cgroup stays empty
        }
        let fully_contained = spawned.containment == Containment::Born
            && self.cgroups.as_ref().is_some_and(|c| c.has_kill_file());
        if spec.interactive() && self.stdin_is_tty {
            give_terminal(pid);
            // The job may have tried to read the terminal before it was in the foreground,
            // and stopped on SIGTTIN: continue it.
            tree::signal_group(pid, Some(Signal::SIGCONT));
        }
        // A job born in a cgroup dies with the cgroup.kill of the whole backend: the
        // watchdog needs to hear only of the others.
        let announced = !fully_contained;
        if announced {
            if let Some(w) = self.watchdog.lock().as_ref() {
                w.job_started(pid);
            }
        }

        // Watched, registered and announced under the lock: the reaper cannot report the
        // end before STARTED is out.
        let mut state = self.lock();
        if let Err(e) = self
            .epoll
            .add(&pidfd, EpollEvent::new(EpollFlags::EPOLLIN, pid as u64))
        {
            drop(state);
            // Unwatchable: do not leave it running unwatched.
            if let (Some(cg), Some(root)) = (cgroup.as_mut(), &self.cgroups) {
                root.kill_job(cg);
            }
            tree::signal_group(pid, Some(Signal::SIGKILL));
            // The leader by pid too: it may not have reached its setsid yet.
            spawn::reap_killed(pid);
            if let (Some(cg), Some(root)) = (cgroup.take(), &self.cgroups) {
                root.abandon(cg);
            }
            if announced {
                if let Some(w) = self.watchdog.lock().as_ref() {
                    w.job_ended(pid);
                }
            }
            return Err(format!("cannot watch the job process: {e}").into());
        }
        self.fds.pidfds.fetch_add(1, Ordering::Relaxed);
        state.by_pid.insert(pid, spec.id());
        state.jobs.insert(
            spec.id(),
            Job {
                id: spec.id(),
                pid,
                pidfd: Some(pidfd),
                tag,
                cgroup,
                fully_contained,
                placed_late: spawned_containment == Containment::Placed,
                announced,
                leader_end: None,
                leader_usage: None,
                cgroup_usage: None,
                kill_requested: false,
                sigkill_at: None,
                sigkill_sent: None,
                recheck_delay: FIRST_RECHECK,
                logs,
                interactive: spec.interactive(),
                shell_stderr,
                report,
                start,
            },
        );
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        let mut started = Event::started(spec.id());
        if spec.interactive() {
            started = started.with_attr("interactive", "1");
        }
        self.sink.emit(started);
        Ok(())
    }

    /// SIGKILL to each whole tree at once, whether or not a kill was already under way.
    fn kill_now(&self, ids: &[JobId]) {
        let now = Instant::now();
        let mut state = self.lock();
        let targets: Vec<JobId> = ids
            .iter()
            .copied()
            .filter(|id| state.jobs.get(id).is_some_and(|j| j.sigkill_sent.is_none()))
            .collect();
        if targets.is_empty() {
            return;
        }
        self.signal_trees(&mut state, &targets, Signal::SIGKILL);
        for id in &targets {
            if let Some(job) = state.jobs.get_mut(id) {
                job.kill_requested = true;
                job.sigkill_sent = Some(now);
            }
            state
                .timers
                .push(Reverse((now + GIVE_UP_AFTER_SIGKILL, *id)));
        }
        drop(state);
        self.wake_reaper();
    }

    /// Kills jobs: SIGTERM to each whole tree now, SIGKILL after `kill_grace`.
    fn kill(&self, ids: &[JobId]) {
        let now = Instant::now();
        let grace = self.config.kill_grace;
        let mut state = self.lock();
        let mut targets = Vec::new();
        for id in ids {
            let Some(job) = state.jobs.get_mut(id) else {
                continue;
            };
            // A job whose leader already ended is reported as it really ended.
            if job.kill_requested || job.leader_end.is_some() {
                continue;
            }
            job.kill_requested = true;
            targets.push(*id);
        }
        if targets.is_empty() {
            return;
        }
        if grace.is_zero() {
            self.signal_trees(&mut state, &targets, Signal::SIGKILL);
            for id in &targets {
                if let Some(job) = state.jobs.get_mut(id) {
                    job.sigkill_sent = Some(now);
                }
                state
                    .timers
                    .push(Reverse((now + GIVE_UP_AFTER_SIGKILL, *id)));
            }
        } else {
            self.signal_trees(&mut state, &targets, Signal::SIGTERM);
            let at = now + grace;
            for id in &targets {
                if let Some(job) = state.jobs.get_mut(id) {
                    job.sigkill_at = Some(at);
                }
                state.timers.push(Reverse((at, *id)));
            }
        }
        drop(state);
        self.wake_reaper();
    }

    /// Sends `signal` to every process of each job's tree: the cgroup's processes, the
    /// process group, and (unless the cgroup holds all of it) every process in the session
    /// or carrying the tag.
    fn signal_trees(&self, state: &mut State, ids: &[JobId], signal: Signal) {
        let mut scan = Vec::new();
        for id in ids {
            let Some(job) = state.jobs.get_mut(id) else {
                continue;
            };
            match (job.cgroup.as_mut(), &self.cgroups) {
                (Some(cg), Some(root)) if signal == Signal::SIGKILL => root.kill_job(cg),
                (Some(cg), _) => tree::signal_job_cgroup(&cg.dir, signal),
                (None, _) => {}
            }
            if job.cgroup.is_none() || !job.fully_contained {
                scan.push(ScanTarget {
                    key: *id,
                    session: job.pid,
                    tag: job.tag.clone(),
                });
            }
            tree::signal_group(job.pid, Some(signal));
            if job.leader_end.is_none() {
                // The leader itself, by pid (ours until reaped): one that has not reached its
                // setsid yet (the host does not wait for the exec) is in no group or session
                // of its own, and carries no tag yet. Its signals are blocked until just
                // before exec, so it dies there.
                tree::send(job.pid, Some(signal));
            }
            if signal != Signal::SIGKILL {
                // A stopped process only sees SIGTERM once continued.
                tree::signal_group(job.pid, Some(Signal::SIGCONT));
            }
        }
        if !scan.is_empty() {
            self.counters.proc_scans.fetch_add(1, Ordering::Relaxed);
            for pids in tree::scan_proc(&scan).values() {
                for &pid in pids {
                    tree::send(pid, Some(signal));
                    if signal != Signal::SIGKILL {
                        tree::send(pid, Some(Signal::SIGCONT));
                    }
                }
            }
        }
    }

    /// Whether nothing of the job's tree is left. An empty job cgroup says what the tree
    /// used and goes back to the pool (or away, if it was killed).
    fn tree_gone(&self, job: &mut Job) -> bool {
        if job.leader_end.is_none() {
            return false;
        }
        if let Some(cg) = &mut job.cgroup {
            match cg.is_empty() {
                Ok(true) => {
                    job.cgroup_usage = Some(cg.usage());
                    if let (Some(cg), Some(root)) = (job.cgroup.take(), &self.cgroups) {
                        root.release(cg);
                    }
                    if job.fully_contained {
                        return true;
                    }
                }
                Ok(false) => return false,
                Err(e) => {
                    // Fall back to the process group and tag for this job.
                    tracing::warn!(
                        "local backend: cannot read {}/cgroup.events: {e}",
                        cg.dir.display()
                    );
                    if let (Some(cg), Some(root)) = (job.cgroup.take(), &self.cgroups) {
                        root.abandon(cg);
                    }
                }
            }
        }
        // No cgroup: the process group answers cheaply. It also counts zombies, which only
        // their parent (or init) can remove; so once signals were sent, and for a killed job
        // always (session and tag too), /proc is scanned for live processes instead.
        let group_alive = tree::signal_group(job.pid, None);
        if !group_alive && !job.kill_requested {
            return true;
        }
        if group_alive && job.sigkill_sent.is_none() && !job.kill_requested {
            return false;
        }
        self.counters.proc_scans.fetch_add(1, Ordering::Relaxed);
        let target = [ScanTarget {
            key: job.id,
            session: job.pid,
            tag: job.tag.clone(),
        }];
        tree::scan_proc(&target).is_empty()
    }

    /// The leader of `id` has exited (its pidfd is readable): reap it and settle the job.
    fn leader_exited(&self, state: &mut State, id: JobId) {
        let Some(job) = state.jobs.get_mut(&id) else {
            return;
        };
        let (end, usage) = match spawn::reap(job.pid) {
            Reaped::NotYet => return, // spurious wake-up, or only stopped/continued
            Reaped::Exited(code, usage) => (LeaderEnd::Exited(code), Some(usage)),
            Reaped::Signaled(sig, usage) => (LeaderEnd::Signaled(sig), Some(usage)),
            Reaped::Lost => (LeaderEnd::Unknown, None),
        };
        job.leader_end = Some(end);
        job.leader_usage = usage;
        self.unwatch(job);
        let pid = job.pid;
        state.by_pid.remove(&pid);
        self.settle(state, id, Instant::now());
    }

    /// Removes the job's pidfd from the epoll set and closes it. Removed explicitly: closing
    /// is not enough while a child being spawned holds a copy of our fd table (until its exec
    /// closes it), and epoll would keep reporting the dead pidfd meanwhile.
    fn unwatch(&self, job: &mut Job) {
        if let Some(fd) = job.pidfd.take() {
            let _ = self.epoll.delete(&fd);
            self.fds.pidfds.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Decides what happens next to a job: report it if its tree is gone, else kill what is
    /// left and check again later.
    fn settle(&self, state: &mut State, id: JobId, now: Instant) {
        let Some(job) = state.jobs.get_mut(&id) else {
            return;
        };
        if let Some(at) = job.sigkill_at {
            if at <= now && job.sigkill_sent.is_none() {
                job.sigkill_sent = Some(now);
                self.signal_trees(state, &[id], Signal::SIGKILL);
                state
                    .timers
                    .push(Reverse((now + GIVE_UP_AFTER_SIGKILL, id)));
            }
        }
        let Some(job) = state.jobs.get_mut(&id) else {
            return;
        };
        if job.leader_end.is_none() {
            if job
                .sigkill_sent
                .is_some_and(|t| now.duration_since(t) >= GIVE_UP_AFTER_SIGKILL)
            {
                // The leader survives SIGKILL (uninterruptible sleep): report the job rather
                // than hang; it is never reaped (a zombie until flowrun exits).
                tracing::warn!("local backend: job {} survived SIGKILL for {GIVE_UP_AFTER_SIGKILL:?}; reporting it anyway", id.0);
                self.unwatch(job);
                self.finish(state, id);
            }
            return; // the pidfd will tell
        }
        if self.tree_gone(job) {
            self.finish(state, id);
            return;
        }
        if !job.kill_requested && job.sigkill_sent.is_none() {
            // The job ended on its own but left processes behind: they die with it.
            job.sigkill_sent = Some(now);
            self.counters
                .leftover_trees_killed
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                "local backend: killing processes left behind by job {}",
                id.0
            );
            self.signal_trees(state, &[id], Signal::SIGKILL);
        }
        let Some(job) = state.jobs.get_mut(&id) else {
            return;
        };
        if job
            .sigkill_sent
            .is_some_and(|t| now.duration_since(t) > GIVE_UP_AFTER_SIGKILL)
        {
            tracing::warn!(
                "local backend: processes of job {} survived SIGKILL for {:?}; reporting the job anyway",
                id.0,
                GIVE_UP_AFTER_SIGKILL
            );
            self.finish(state, id);
            return;
        }
        let mut next = now + job.recheck_delay;
        if let Some(at) = job.sigkill_at.filter(|_| job.sigkill_sent.is_none()) {
            next = next.min(at);
        }
        job.recheck_delay = (job.recheck_delay * 2).min(LONGEST_RECHECK);
        state.timers.push(Reverse((next, id)));
    }

    /// Reports the end of a job whose tree is gone, and forgets it.
    fn finish(&self, state: &mut State, id: JobId) {
        let Some(mut job) = state.jobs.remove(&id) else {
            return;
        };
        state.by_pid.remove(&job.pid);
        // A cgroup still set here was not seen empty (a process survived SIGKILL): it is not
        // reused, and shutdown removes it if it empties by then.
        if let (Some(cg), Some(root)) = (job.cgroup.take(), &self.cgroups) {
            root.abandon(cg);
        }
        if job.announced {
            if let Some(w) = self.watchdog.lock().as_ref() {
                w.job_ended(job.pid);
            }
        }
        if job.leader_end.is_none() {
            // Never reaped: a child stuck before exec could still write its report.
            std::mem::forget(std::mem::take(&mut job.report));
        }
        if job.interactive {
            if self.stdin_is_tty {
                give_terminal(nix::unistd::getpgrp().as_raw());
            }
            state.interactive_job = None;
        }
        let mut event = match (job.kill_requested, job.leader_end) {
            (true, end) => {
                let e = Event::killed(id);
                match end {
                    Some(LeaderEnd::Exited(c)) => e.with_exit_code(c),
                    Some(LeaderEnd::Signaled(s)) => e.with_signal(s),
                    _ => e,
                }
            }
            (false, Some(LeaderEnd::Exited(127))) => {
                if let Some(failure) = job.report.failure() {
                    // It failed before exec.
                    self.counters
                        .failed_to_start
                        .fetch_add(1, Ordering::Relaxed);
                    Event::failed(id, start_failure(failure, &job.start))
                } else if let Some(name) = job
                    .shell_stderr
                    .as_deref()
                    .and_then(shell_command_not_found)
                {
                    Event::failed(id, format!("command not found: {name}")).with_exit_code(127)
                } else {
                    Event::exited(id, 127)
                }
            }
            (false, Some(LeaderEnd::Exited(c))) => Event::exited(id, c),
            (false, Some(LeaderEnd::Signaled(s))) => Event::signaled(id, s),
            (false, _) => Event::failed(
                id,
                "the job's exit status was lost (reaped elsewhere in the process)",
            ),
        };
        for log in job.logs.drain(..) {
            event = event.with_attr("log", log);
        }
        for (key, value) in usage_attrs(job.cgroup_usage, job.leader_usage, job.placed_late) {
            event = event.with_attr(key, value);
        }
        self.counters.finished.fetch_add(1, Ordering::Relaxed);
        self.sink.emit(event);
        // Only shutdown waits for this (a futex wake per job otherwise).
        if state.shutting_down && state.jobs.is_empty() {
            self.all_done.notify_all();
        }
    }

    /// The reaper thread: waits for leader exits and timers, never polls.
    fn reaper_loop(&self) {
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            let timeout = {
                let state = self.lock();
                if state.stop_reaper {
                    return;
                }
                match state.timers.peek() {
                    None => EpollTimeout::NONE,
                    Some(Reverse((at, _))) => {
                        let left = at.saturating_duration_since(Instant::now());
                        // Round up so that we never wake just before the deadline.
                        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                        EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX)
                    }
                }
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("local backend: epoll_wait failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            self.counters.reaper_wakeups.fetch_add(1, Ordering::Relaxed);
            let ready: Vec<u64> = events[..n].iter().map(|e| e.data()).collect();
            // A panic here must not stop the reaper: every running job would be lost.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.reaper_round(&ready)
            }));
            if let Err(p) = outcome {
                tracing::error!(
                    "local backend: reaper panicked: {}",
                    flowrun_plugin_sdk::panic_message(&*p)
                );
            }
        }
    }

    fn reaper_round(&self, ready: &[u64]) {
        let mut state = self.lock();
        for &key in ready {
            if key == WAKE_KEY {
                let _ = self.wake.read();
                continue;
            }
            if let Some(&id) = state.by_pid.get(&(key as libc::pid_t)) {
                self.leader_exited(&mut state, id);
            }
        }
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = state.timers.peek().copied() {
            if at > now {
                break;
            }
            state.timers.pop();
            if !due.contains(&id) {
                due.push(id);
            }
        }
        // Jobs whose grace ran out together get SIGKILL together (one /proc scan at most).
        let sigkill_now: Vec<JobId> = due
            .iter()
            .copied()
            .filter(|id| {
                state.jobs.get(id).is_some_and(|j| {
                    j.sigkill_sent.is_none() && j.sigkill_at.is_some_and(|t| t <= now)
                })
            })
            .collect();
        if !sigkill_now.is_empty() {
            self.signal_trees(&mut state, &sigkill_now, Signal::SIGKILL);
            for id in &sigkill_now {
                if let Some(job) = state.jobs.get_mut(id) {
                    job.sigkill_sent = Some(now);
                }
                state
                    .timers
                    .push(Reverse((now + GIVE_UP_AFTER_SIGKILL, *id)));
            }
        }
        for id in due {
            self.settle(&mut state, id, now);
        }
        if state.shutting_down && state.jobs.is_empty() {
            self.all_done.notify_all();
        }
    }
}

/// The FINISHED attributes for what a job used (brief contract 4): `cpu_s`, `max_rss_mb`
/// and `usage_source`. CPU and memory come from the job's cgroup where it had one (the
/// whole tree: every process ever in it), else from `wait4` of the leader (the leader and
/// the descendants that were waited for; memory is the largest single process's peak, and
/// unknown when it is not above flowrun's own: see `spawn::WaitUsage::max_rss_kb`).
/// A job moved into its cgroup after it started (`placed_late`, the `std` path) may have
/// forked outside it: both figures are lower bounds then, and the larger one is reported.
fn usage_attrs(
    cgroup: Option<CgroupUsage>,
    leader: Option<WaitUsage>,
    placed_late: bool,
) -> Vec<(&'static str, String)> {
    let cg_cpu = cgroup.and_then(|c| c.cpu_us);
    let cg_peak_kib = cgroup.and_then(|c| c.peak_bytes).map(|b| b / 1024);
    let leader_cpu = leader.map(|u| u.cpu_us);
    let leader_kib = leader.and_then(|u| u.max_rss_kb);
    let pick = |cg: Option<u64>, wait: Option<u64>| match (cg, wait) {
        (Some(c), Some(w)) if placed_late => (Some(c.max(w)), true),
        (Some(c), _) => (Some(c), true),
        (None, w) => (w, false),
    };
    let (cpu_us, cpu_from_cgroup) = pick(cg_cpu, leader_cpu);
    let (rss_kib, rss_from_cgroup) = pick(cg_peak_kib, leader_kib);
    let source = match (cpu_from_cgroup, rss_from_cgroup) {
        _ if cpu_us.is_none() && rss_kib.is_none() => return Vec::new(),
        (true, true) if placed_late => "cgroup+rusage",
        (true, true) => "cgroup",
        (true, false) if rss_kib.is_some() => "cgroup+rusage",
        (true, false) => "cgroup",
        (false, _) => "rusage",
    };
    let mut attrs = Vec::with_capacity(3);
    if let Some(us) = cpu_us {
        attrs.push(("cpu_s", format!("{:.3}", us as f64 / 1e6)));
    }
    if let Some(kib) = rss_kib {
        attrs.push(("max_rss_mb", format!("{:.1}", kib as f64 / 1024.0)));
    }
    attrs.push(("usage_source", source.to_string()));
    attrs
}

/// The command a shell reported missing in the last line of `log` ("sh: 1: simv: not found",
/// "bash: line 1: simv: command not found"), for a shell job that exited with 127.
fn shell_command_not_found(log: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    // The job may have left anything at its log's path: opening a FIFO would wait for a writer
    // forever, with the backend's state locked (no job ended, no signal obeyed).
    let mut file = flowrun_plugin_sdk::fs::open_regular_file(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = Vec::with_capacity(4096);
    file.read_to_end(&mut tail).ok()?;
    let tail = String::from_utf8_lossy(&tail);
    let last = tail.lines().rev().find(|l| !l.trim().is_empty())?;
    let head = last
        .strip_suffix(": not found")
        .or_else(|| last.strip_suffix(": command not found"))?;
    let name = head.rsplit(": ").next()?;
    (!name.is_empty() && !name.contains(char::is_whitespace)).then(|| name.to_string())
}

/// Raises the soft limit on open files to the hard limit (every running job holds a pidfd
/// and, with cgroups, a few cgroup files) and returns the soft limit now in force.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// The FAILED reason of a job that could not be started.
fn start_failure(e: SpawnError, job: &StartContext) -> String {
    let (step, error) = match e {
        SpawnError::Invalid(reason) => return reason,
        SpawnError::Step { step, error } => (step, error),
    };
    let program = &job.program;
    match (step, error.raw_os_error()) {
        (SpawnStep::Chdir, Some(libc::ENOENT)) => {
            format!("working directory does not exist: {}", job.cwd)
        }
        (SpawnStep::Chdir, Some(libc::ENOTDIR)) => {
            format!("working directory is not a directory: {}", job.cwd)
        }
        (SpawnStep::Chdir, _) => format!("cannot use working directory {}: {error}", job.cwd),
        (SpawnStep::Exec, Some(libc::ENOENT)) => format!("command not found: {program}"),
        (SpawnStep::Exec, _) => format!("cannot run {program}: {error}"),
        (SpawnStep::Cgroup, _) => format!("cannot place the job in its cgroup: {error}"),
        (SpawnStep::JobDir, _) => {
            format!("cannot create the job directory {}: {error}", job.job_dir)
        }
        (SpawnStep::CmdSh, _) => format!("cannot write {}/cmd.sh: {error}", job.job_dir),
        (SpawnStep::StdoutLog, _) => format!("cannot open log {}: {error}", job.stdout_log),
        (SpawnStep::StderrLog, _) => format!(
            "cannot open log {}: {error}",
            Path::new(&job.job_dir).join("stderr.log").display()
        ),
        (SpawnStep::Clone | SpawnStep::Setup, _) => format!("cannot start {program}: {error}"),
    }
}

/// Makes `pgid` the foreground process group of the terminal on fd 0. SIGTTOU is blocked
/// around the call: a background process changing the foreground group would get it.
fn give_terminal(pgid: libc::pid_t) {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut block = SigSet::empty();
    block.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut old));
    if let Err(e) = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::Pid::from_raw(pgid)) {
        tracing::debug!("local backend: tcsetpgrp({pgid}): {e}");
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
}
