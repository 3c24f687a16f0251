//! Starting, watching over and reaping job processes: the only module of this plugin with
//! `unsafe` code (the crate root denies it everywhere else).
//!
//! Two ways to start a job, chosen by the backend's `spawn` key:
//! - [`clone`] (`spawn = "clone"`, the default): a `clone(CLONE_VM)` child that sets itself up
//!   and execs; its child side is [`fenced::child`], fenced by lints that forbid panicking paths. Why
//!   it exists, what it must never do and a checklist for editing it:
//!   `docs/design/local-spawn.md`.
//! - [`std_path`] (`spawn = "std"`): plain `std::process::Command` (posix_spawn) with a process
//!   group of its own, the job's files created by the host, and best-effort cgroup placement.
//!
//! Also here: reaping with the kernel's resource usage ([`reap`]), pidfds, and the
//! [`watchdog`] process that kills a run's jobs when flowrun dies.

mod clone;
mod fenced;
mod std_path;
pub mod watchdog;

use std::{
    ffi::OsStr,
    io,
    os::{
        fd::{FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    sync::atomic::{AtomicI32, Ordering},
};

pub use clone::CloneSpawner;
pub use std_path::StdSpawner;

/// Variables removed from the host's environment: a parent make's jobserver confuses the
/// nested makes of jobs.
pub const REMOVED_VARS: [&str; 3] = ["MAKEFLAGS", "MFLAGS", "MAKELEVEL"];

/// The search path of a job without `PATH` in its environment.
const DEFAULT_PATH: &[u8] = b"/usr/local/bin:/usr/bin:/bin";

/// The host environment every job starts from, captured once per backend.
pub struct BaseEnv {
    /// `(name, "NAME=value\0")`.
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl BaseEnv {
    /// The current process environment minus [`REMOVED_VARS`].
    pub fn capture() -> BaseEnv {
        let entries = std::env::vars_os()
            .filter(|(k, _)| !REMOVED_VARS.iter().any(|r| OsStr::new(r) == k))
            .filter(|(k, v)| !k.as_bytes().contains(&0) && !v.as_bytes().contains(&0))
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                kv.push(0);
                (k.as_bytes().to_vec(), kv)
            })
            .collect();
        BaseEnv { entries }
    }

    /// The value of `name` in the base environment.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(k, kv)| kv.get(k.len() + 1..kv.len().saturating_sub(1)))
    }

    /// `(name, value)` pairs, without the trailing NUL.
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().filter_map(|(k, kv)| {
            kv.get(k.len() + 1..kv.len().saturating_sub(1))
                .map(|v| (k.as_slice(), v))
        })
    }
}

/// Where the child's standard streams go.
#[derive(Clone, Copy)]
pub enum Output<'a> {
    /// stdout and stderr to one log file, created or truncated at start, stdin from `stdin`.
    Log { path: &'a str, stdin: RawFd },
    /// stdout and stderr to two log files (each created or truncated).
    Split {
        stdout: &'a str,
        stderr: &'a str,
        stdin: RawFd,
    },
    /// The host's fds 0, 1 and 2 (interactive jobs).
    Inherit,
}

/// Which process group / session the child gets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Grouping {
    /// A new session, whose process group is the child's pid (regular jobs).
    NewSession,
    /// A new process group in the host's session (interactive jobs: a new session would
    /// lose the controlling terminal; and every job of the `std` spawn path).
    NewProcessGroup,
}

/// What to start and what the child creates first.
#[derive(Clone, Copy)]
pub struct Plan<'a> {
    /// `argv[0]` is the program: run as is when it contains `/` (relative to `cwd`), else
    /// searched on the job's `PATH` like execvp does.
    pub argv: &'a [&'a str],
    /// The job's own variables on top of the base environment; a later one of the same name
    /// wins.
    pub env: &'a [(&'a str, &'a str)],
    pub cwd: &'a str,
    /// Created by the child (an existing directory is fine).
    pub job_dir: &'a str,
    /// Written by the child to `cmd_sh_path`, mode 0755.
    pub cmd_sh_path: &'a str,
    pub cmd_sh_text: &'a str,
    pub output: Output<'a>,
    pub grouping: Grouping,
    /// The job's cgroup: the child starts in it (`clone3(CLONE_INTO_CGROUP)`), or, where
    /// clone3 cannot do that, moves itself there before any of the job's code runs; then the
    /// host waits for the exec, so that a refused placement is always the spawn error.
    pub cgroup: Option<CgroupFds>,
    /// Wait until the child has exec'd or failed (`CLONE_VFORK`), and report a failure as
    /// the error rather than in the report: for a job whose set-up the host must see done
    /// (an interactive job's process group gets the terminal).
    pub wait_for_exec: bool,
}

/// A job cgroup's open directory and `cgroup.procs`.
#[derive(Clone, Copy)]
pub struct CgroupFds {
    pub dir: RawFd,
    pub procs: RawFd,
}

/// A started child.
pub struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    /// Where the child writes why it failed before exec; read once it is reaped.
    pub report: Box<ChildReport>,
    /// Whether and how the child is in the plan's cgroup.
    pub containment: Containment,
}

/// How a started job's processes relate to its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containment {
    /// Not in a cgroup (none planned, or the move failed).
    None,
    /// Moved in after it started (the `std` path): children it forked before are outside.
    Placed,
    /// In it before any of the job's code ran: nothing of the job can be outside.
    Born,
}

/// Which step of starting a job failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnStep {
    Clone,
    Setup,
    Cgroup,
    JobDir,
    CmdSh,
    StdoutLog,
    StderrLog,
    Chdir,
    Exec,
}

const STEPS: [SpawnStep; 9] = [
    SpawnStep::Clone,
    SpawnStep::Setup,
    SpawnStep::Cgroup,
    SpawnStep::JobDir,
    SpawnStep::CmdSh,
    SpawnStep::StdoutLog,
    SpawnStep::StderrLog,
    SpawnStep::Chdir,
    SpawnStep::Exec,
];

impl SpawnStep {
    /// The code the child writes (0 means no failure).
    const fn code(self) -> i32 {
        self as i32 + 1
    }
}

/// A failed spawn.
#[derive(Debug)]
pub enum SpawnError {
    /// The job's own data cannot be handed to a process (a NUL byte, a bad variable name).
    Invalid(String),
    /// A step of the child (or the clone) failed.
    Step { step: SpawnStep, error: io::Error },
}

impl SpawnError {
    /// Whether this is the machine running out of processes, descriptors or memory: a
    /// condition that passes (the job is offered again later), not the job's fault.
    pub fn is_resource_shortage(&self) -> bool {
        match self {
            SpawnError::Invalid(_) => false,
            SpawnError::Step { error, .. } => is_resource_errno(error.raw_os_error()),
        }
    }
}

/// EMFILE, ENFILE, EAGAIN (fork: no processes left), ENOMEM.
pub fn is_resource_errno(errno: Option<i32>) -> bool {
    matches!(
        errno,
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM)
    )
}

/// Written by the child when a step fails, read by the host after reaping it (the reap
/// orders the child's writes before the host's reads).
#[derive(Default)]
#[repr(C)]
pub struct ChildReport {
    step: AtomicI32,
    errno: AtomicI32,
}

impl ChildReport {
    /// The failed step, if the child failed before exec.
    pub fn failure(&self) -> Option<SpawnError> {
        let code = self.step.load(Ordering::Acquire);
        let step = *STEPS.get(usize::try_from(code).ok()?.checked_sub(1)?)?;
        Some(SpawnError::Step {
            step,
            error: io::Error::from_raw_os_error(self.errno.load(Ordering::Acquire)),
        })
    }
}

/// Either way of starting jobs.
pub enum Spawner {
    Clone(CloneSpawner),
    Std(StdSpawner),
}

impl Spawner {
    /// Starts `plan`. Without `wait_for_exec` the clone path returns as soon as the child
    /// exists; a failure of one of its steps then shows in the report once it has exited
    /// (status 127). The std path always knows at once.
    pub fn spawn(&self, plan: &Plan<'_>) -> Result<Spawned, SpawnError> {
        match self {
            Spawner::Clone(s) => s.spawn(plan),
            Spawner::Std(s) => s.spawn(plan),
        }
    }
}

/// CPU time and peak memory of a reaped process and the descendants it (or they) waited for,
/// as `wait4` gives them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaitUsage {
    /// User plus system CPU, microseconds.
    pub cpu_us: u64,
    /// The largest peak RSS of any one of those processes, KiB (`ru_maxrss`); `None` when it
    /// is not above flowrun's own peak, and so may be flowrun's rather than the job's (see
    /// [`job_peak_kb`]).
    pub max_rss_kb: Option<u64>,
}

/// The job's `ru_maxrss` (KiB), if it can only be the job's.
///
/// A job's first process starts as a `clone(CLONE_VM)` of flowrun (or a `posix_spawn`, which
/// is one too) and Linux's `exec` keeps the high-water mark of the memory it leaves behind, so
/// the job's `ru_maxrss` is at least flowrun's peak RSS when it execed: `/bin/true` showed
/// 18 MiB in a run of 3,000 jobs. A figure above flowrun's peak now (which is at least what it
/// was then) is the peak of a process of the job; one at or below it cannot be told apart
/// from flowrun's, so it is unknown rather than wrong. Both figures are the kernel's per-CPU
/// RSS counters read without summing them up exactly, so a figure must also clear the most
/// those reads can be off by ([`rss_counter_slack_kb`]).
fn job_peak_kb(job_maxrss_kb: u64) -> Option<u64> {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut own: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `own` is a valid, writable local; getrusage writes only it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut own) };
    let own_peak_kb = u64::try_from(own.ru_maxrss).ok().filter(|_| rc == 0)?;
    (job_maxrss_kb > own_peak_kb.saturating_add(rss_counter_slack_kb())).then_some(job_maxrss_kb)
}

/// How far a quick read of a process's RSS counter can be from the truth: each CPU may hold
/// up to the kernel's per-CPU counter batch (`max(32, 2 * CPUs)` pages) not yet added in.
/// Worked out once: it is read at every reap, and glibc counts the CPUs by listing
/// `/sys/devices/system/cpu`.
fn rss_counter_slack_kb() -> u64 {
    static SLACK_KB: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SLACK_KB.get_or_init(rss_counter_slack_kb_uncached)
}

fn rss_counter_slack_kb_uncached() -> u64 {
    // SAFETY: sysconf only reads system configuration.
    let (cpus, page) = unsafe {
        (
            libc::sysconf(libc::_SC_NPROCESSORS_CONF),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let cpus = u64::try_from(cpus).unwrap_or(1).max(1);
    let page_kb = u64::try_from(page).unwrap_or(4096).max(1024) / 1024;
    cpus.saturating_mul(32.max(2 * cpus))
        .saturating_mul(page_kb)
}

/// What `reap` saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// Still running (or only stopped/continued).
    NotYet,
    Exited(i32, WaitUsage),
    Signaled(i32, WaitUsage),
    /// Not our child any more: someone else reaped it (a `waitpid(-1)` elsewhere).
    Lost,
}

/// Reaps our child `pid` if it has exited (`wait4` with WNOHANG), with its resource usage.
pub fn reap(pid: libc::pid_t) -> Reaped {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid, writable locals; wait4 writes only them.
    let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
    if rc == 0 {
        return Reaped::NotYet;
    }
    if rc < 0 {
        return if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            Reaped::NotYet
        } else {
            Reaped::Lost
        };
    }
    let tv_us = |tv: libc::timeval| {
        u64::try_from(tv.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000)
            .saturating_add(u64::try_from(tv.tv_usec).unwrap_or(0))
    };
    let usage = WaitUsage {
        cpu_us: tv_us(usage.ru_utime).saturating_add(tv_us(usage.ru_stime)),
        max_rss_kb: u64::try_from(usage.ru_maxrss).ok().and_then(job_peak_kb),
    };
    if libc::WIFEXITED(status) {
        Reaped::Exited(libc::WEXITSTATUS(status), usage)
    } else if libc::WIFSIGNALED(status) {
        Reaped::Signaled(libc::WTERMSIG(status), usage)
    } else {
        Reaped::NotYet
    }
}

/// A pidfd for our child `pid`, just started; a child that cannot have one is killed and
/// reaped (it could not be watched), and the failure is the spawn's.
fn watchable(pid: libc::pid_t) -> Result<OwnedFd, SpawnError> {
    pidfd_open(pid).map_err(|error| {
        reap_killed(pid);
        SpawnError::Step {
            step: SpawnStep::Clone,
            error,
        }
    })
}

/// SIGKILL and reap a child we cannot watch (blocking until it is gone).
pub fn reap_killed(pid: libc::pid_t) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Opens a pidfd for `pid` (Linux 5.3+).
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open has no memory arguments.
    let fd = unsafe { syscalls::syscall!(syscalls::Sysno::pidfd_open, pid, 0) }
        .map_err(|e| io::Error::from_raw_os_error(e.into_raw()))?;
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: a fresh fd from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
