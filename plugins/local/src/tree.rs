//! Finding and killing every process a job started, and measuring what it used.
//!
//! Two mechanisms, used together:
//! - a cgroup v2 per job (`<own cgroup>/flowrun-<pid>-<n>/slot-<k>`, a pool of cgroups
//!   owned by this backend instance), when a writable cgroup2 hierarchy is mounted: the job's
//!   first process enters it before exec, nothing can leave it, and `cgroup.kill` kills it
//!   atomically, forks included;
//! - always: the job's session/process group (the job leader is a session leader, pid = pgid =
//!   sid) and the job's environment tag `FLOWRUN_JOB_TAG=<run tag>-<pid>.<instance>-<id>`,
//!   found by scanning /proc. Without cgroups this is all there is; a process that both left
//!   the session (`setsid`) and cleared or replaced its environment cannot be found (see the
//!   README).

use std::{
    collections::HashMap,
    fs, io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::FileExt, fs::OpenOptionsExt},
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use nix::{
    fcntl::{Flock, FlockArg},
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use parking_lot::Mutex;

/// The environment variable that tags every process of a job.
pub const TAG_VAR: &str = "FLOWRUN_JOB_TAG";

/// How long a later flowrun waits for a dead flowrun's killed leftovers to vanish before it
/// leaves their cgroup for the next one to remove.
const STALE_KILL_WAIT: Duration = Duration::from_secs(2);

/// The cgroup v2 directory owned by one backend instance, and its pool of empty job cgroups.
///
/// Job cgroups are reused rather than created and removed per job: mkdir+rmdir of a cgroup
/// costs about 55 us of host CPU per job, reuse about 15 us (README, spawn-cost table). A
/// cgroup that was killed with `cgroup.kill` is never reused (F1): on Linux 6.18 every child
/// later cloned into it with `CLONE_INTO_CGROUP` is SIGKILLed at birth.
pub struct CgroupRoot {
    dir: PathBuf,
    /// The directory, open and `flock`ed for as long as this backend (or its watchdog) lives:
    /// a later flowrun takes the directory for a dead run's only once it can lock it.
    lock: Flock<fs::File>,
    /// Whether `cgroup.kill` exists (Linux 5.14+).
    has_kill_file: bool,
    /// Empty job cgroups ready for the next job.
    free: Mutex<Vec<JobCgroup>>,
    created: AtomicU64,
    /// Descriptors held by job cgroups (pooled and in use), for the backend's budget.
    fds_held: AtomicU64,
}

/// One pooled job cgroup, with the files touched for every job kept open: opening them per
/// job was a tenth of the host's CPU per job.
pub struct JobCgroup {
    pub dir: PathBuf,
    /// The directory, for `clone3(CLONE_INTO_CGROUP)`: the job's first process starts in it.
    dir_fd: fs::File,
    /// `cgroup.procs`, for writing, opened only where the child moves itself in (clone3
    /// cannot place it) or the host moves it (the `std` spawn path).
    procs: Option<fs::File>,
    /// `cgroup.events`, read (from offset 0) to learn whether the cgroup is empty.
    events: fs::File,
    /// `cpu.stat` (always there in cgroup v2), read at each job's end.
    cpu_stat: Option<fs::File>,
    /// `memory.peak`, where the memory controller is enabled for job cgroups.
    memory_peak: Option<fs::File>,
    /// `usage_usec` when the previous job of this cgroup ended (a reused cgroup's counter
    /// keeps counting).
    cpu_usec_base: u64,
    /// Whether `memory.peak` covers only the current job (a fresh cgroup, or one whose peak
    /// was reset through `memory_peak`, Linux 6.12+).
    peak_is_fresh: bool,
    /// A kill was sent to it: it is removed once empty, never reused (F1).
    killed: bool,
    /// `usage` read the CPU counter since the last job started (no second read needed).
    usage_read: bool,
}

/// What a job cgroup says a job used.
#[derive(Debug, Clone, Copy, Default)]
pub struct CgroupUsage {
    pub cpu_us: Option<u64>,
    pub peak_bytes: Option<u64>,
}

impl JobCgroup {
    fn open(dir: PathBuf) -> io::Result<JobCgroup> {
        let dir_fd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)?;
        let events = open_read(&dir.join("cgroup.events"))?;
        let cpu_stat = open_read(&dir.join("cpu.stat")).ok();
        let memory_peak = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join("memory.peak"))
            .or_else(|_| open_read(&dir.join("memory.peak")))
            .ok();
        Ok(JobCgroup {
            dir,
            dir_fd,
            procs: None,
            events,
            cpu_stat,
            memory_peak,
            cpu_usec_base: 0,
            peak_is_fresh: true,
            killed: false,
            usage_read: false,
        })
    }

    /// Descriptors this cgroup holds open.
    fn fds(&self) -> u64 {
        2 + u64::from(self.procs.is_some())
            + u64::from(self.cpu_stat.is_some())
            + u64::from(self.memory_peak.is_some())
    }

    /// What the spawner needs to start a process in this cgroup; `procs` is opened when
    /// `with_procs` (the process is moved in, rather than born there).
    pub fn spawn_fds(&mut self, with_procs: bool) -> io::Result<crate::spawn::CgroupFds> {
        if with_procs && self.procs.is_none() {
            self.procs = Some(
                fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(self.dir.join("cgroup.procs"))?,
            );
        }
        Ok(crate::spawn::CgroupFds {
            dir: self.dir_fd.as_raw_fd(),
            procs: self.procs.as_ref().map_or(-1, |f| f.as_raw_fd()),
        })
    }

    /// Whether no process is left (`populated 0` in `cgroup.events`).
    pub fn is_empty(&self) -> io::Result<bool> {
        // The file is a few dozen bytes ("populated 0\nfrozen 0\n"); one pread reads it all.
        let mut buf = [0u8; 128];
        let n = self.events.read_at(&mut buf, 0)?;
        Ok(buf[..n].split(|&b| b == b'\n').any(|l| l == b"populated 0"))
    }

    /// What the job that just ended used (call once it is empty). The CPU counter read here
    /// is where the next job of this cgroup starts counting.
    pub fn usage(&mut self) -> CgroupUsage {
        let mut buf = [0u8; 1024];
        let cpu_total = self
            .cpu_stat
            .as_ref()
            .and_then(|f| f.read_at(&mut buf, 0).ok())
            .and_then(|n| stat_value(&buf[..n], b"usage_usec"));
        let peak_bytes = if self.peak_is_fresh {
            self.memory_peak
                .as_ref()
                .and_then(|f| f.read_at(&mut buf, 0).ok())
                .and_then(|n| std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok())
        } else {
            None
        };
        let cpu_us = cpu_total.map(|t| t.saturating_sub(self.cpu_usec_base));
        if let Some(total) = cpu_total {
            self.cpu_usec_base = total;
        }
        self.usage_read = true;
        CgroupUsage { cpu_us, peak_bytes }
    }

    /// Readies an empty cgroup for its next job: the counters start from here.
    fn reset_usage(&mut self) {
        if !std::mem::take(&mut self.usage_read) {
            let mut buf = [0u8; 1024];
            if let Some(total) = self
                .cpu_stat
                .as_ref()
                .and_then(|f| f.read_at(&mut buf, 0).ok())
                .and_then(|n| stat_value(&buf[..n], b"usage_usec"))
            {
                self.cpu_usec_base = total;
            }
        }
        // A write through this descriptor resets the peak it reads (Linux 6.12+); before
        // that the file is read-only and later jobs get no cgroup peak.
        self.peak_is_fresh = self
            .memory_peak
            .as_ref()
            .is_some_and(|f| f.write_at(b"reset\n", 0).is_ok());
    }
}

fn open_read(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// The value of `key` in a flat-keyed file such as `cpu.stat` ("usage_usec 123\n...").
fn stat_value(text: &[u8], key: &[u8]) -> Option<u64> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(b" ")?;
        std::str::from_utf8(rest).ok()?.trim().parse().ok()
    })
}

impl CgroupRoot {
    /// Creates and locks `<cgroup2 mount><own cgroup>/flowrun-<pid>-<instance>`, after killing
    /// and removing what dead flowruns left beside it. Fails when no cgroup2 hierarchy is
    /// mounted or it is not writable.
    pub fn create(instance: u64) -> io::Result<CgroupRoot> {
        let mount = cgroup2_mount()?;
        let own = own_cgroup2_path()?;
        let parent = mount.join(own.trim_start_matches('/'));
        remove_stale_roots(&parent);
        let dir = parent.join(format!("flowrun-{}-{instance}", std::process::id()));
        fs::create_dir(&dir)?;
        let lock = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .and_then(|f| {
                Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| io::Error::from(e))
            })
            .inspect_err(|_| {
                let _ = fs::remove_dir(&dir);
            })?;
        let has_kill_file = dir.join("cgroup.kill").exists();
        Ok(CgroupRoot {
            dir,
            lock,
            has_kill_file,
            free: Mutex::new(Vec::new()),
            created: AtomicU64::new(0),
            fds_held: AtomicU64::new(0),
        })
    }

    /// The directory of this instance.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The locked directory's descriptor (the watchdog keeps it open, and so the lock).
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        self.lock.as_raw_fd()
    }

    /// `cgroup.kill` of the instance directory, open for writing (for the watchdog).
    pub fn kill_file(&self) -> Option<OwnedFd> {
        if !self.has_kill_file {
            return None;
        }
        fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(self.dir.join("cgroup.kill"))
            .ok()
            .map(OwnedFd::from)
    }

    /// Whether `cgroup.kill` kills whole job cgroups here (Linux 5.14+).
    pub fn has_kill_file(&self) -> bool {
        self.has_kill_file
    }

    /// Descriptors held by this instance's job cgroups.
    pub fn fds_held(&self) -> u64 {
        self.fds_held.load(Ordering::Relaxed)
    }

    /// Descriptors a job needs from the budget beyond what a pooled cgroup already holds.
    pub fn fds_for_next_job(&self) -> u64 {
        if self.free.lock().is_empty() {
            5
        } else {
            0
        }
    }

    /// An empty cgroup for a new job: a pooled one, or a new one.
    pub fn acquire(&self) -> io::Result<JobCgroup> {
        if let Some(cgroup) = self.free.lock().pop() {
            return Ok(cgroup);
        }
        let dir = self.dir.join(format!(
            "slot-{}",
            self.created.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&dir)?;
        let cgroup = JobCgroup::open(dir.clone()).inspect_err(|_| {
            let _ = fs::remove_dir(&dir);
        })?;
        self.fds_held.fetch_add(cgroup.fds(), Ordering::Relaxed);
        Ok(cgroup)
    }

    /// Takes back a job cgroup known to be empty: pooled for the next job, or removed if it
    /// was ever killed (F1).
    pub fn release(&self, mut cgroup: JobCgroup) {
        if cgroup.killed {
            self.discard(cgroup);
            return;
        }
        let before = cgroup.fds();
        cgroup.reset_usage();
        self.fds_held
            .fetch_add(cgroup.fds().saturating_sub(before), Ordering::Relaxed);
        self.free.lock().push(cgroup);
    }

    /// Removes an empty job cgroup for good.
    pub fn discard(&self, cgroup: JobCgroup) {
        self.fds_held.fetch_sub(cgroup.fds(), Ordering::Relaxed);
        let dir = cgroup.dir.clone();
        drop(cgroup);
        if let Err(e) = fs::remove_dir(&dir) {
            tracing::debug!("local backend: cannot remove {}: {e}", dir.display());
        }
    }

    /// Forgets a job cgroup that is not known to be empty (a process survived SIGKILL): its
    /// descriptors close, and `remove` removes the directory if it has emptied by then.
    pub fn abandon(&self, cgroup: JobCgroup) {
        self.fds_held.fetch_sub(cgroup.fds(), Ordering::Relaxed);
    }

    /// Closes the pooled cgroups when descriptors run short; true if any was pooled.
    pub fn shrink_pool(&self) -> bool {
        let pooled = std::mem::take(&mut *self.free.lock());
        let any = !pooled.is_empty();
        for cgroup in pooled {
            self.discard(cgroup);
        }
        any
    }

    /// Removes the instance directory (its job cgroups must be gone).
    pub fn remove(&self) {
        self.shrink_pool();
        remove_cgroup_tree(&self.dir);
    }

    /// Kills every process of a job cgroup with SIGKILL, and marks it never to be reused.
    pub fn kill_job(&self, cgroup: &mut JobCgroup) {
        cgroup.killed = true;
        if self.has_kill_file && fs::write(cgroup.dir.join("cgroup.kill"), b"1").is_ok() {
            return;
        }
        signal_job_cgroup(&cgroup.dir, Signal::SIGKILL);
    }
}

/// Removes a cgroup directory and the (empty) job cgroups in it.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let _ = fs::remove_dir(e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The processes in a job cgroup.
pub fn cgroup_pids(cgroup: &Path) -> Vec<libc::pid_t> {
    fs::read_to_string(cgroup.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Sends `signal` to every process of a job cgroup.
pub fn signal_job_cgroup(cgroup: &Path, signal: Signal) {
    for pid in cgroup_pids(cgroup) {
        send(pid, Some(signal));
    }
}

/// Sends `signal` to one process, ignoring "no such process"; `None` only checks.
pub fn send(pid: libc::pid_t, signal: Option<Signal>) -> bool {
    kill(Pid::from_raw(pid), signal).is_ok()
}

/// Sends `signal` to a process group; false when the group has no process left. `None`
/// only checks.
pub fn signal_group(pgid: libc::pid_t, signal: Option<Signal>) -> bool {
    kill(Pid::from_raw(-pgid), signal).is_ok()
}

/// What the /proc scan looks for: the session (= process group of the leader) and the tag of
/// each job, keyed by the caller's job key.
pub struct ScanTarget<K> {
    pub key: K,
    pub session: libc::pid_t,
    pub tag: String,
}

/// Scans /proc once for live (non-zombie) processes belonging to any of `targets`: in the
/// job's session, in its process group, or carrying its tag in their environment.
pub fn scan_proc<K: Copy + Eq + std::hash::Hash>(
    targets: &[ScanTarget<K>],
) -> HashMap<K, Vec<libc::pid_t>> {
    let mut found: HashMap<K, Vec<libc::pid_t>> = HashMap::new();
    if targets.is_empty() {
        return found;
    }
    let me = std::process::id() as libc::pid_t;
    let needles: Vec<Vec<u8>> = targets
        .iter()
        .map(|t| format!("{TAG_VAR}={}\0", t.tag).into_bytes())
        .collect();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    let mut environ = Vec::with_capacity(16 * 1024);
    for entry in dir.flatten() {
        let Some(pid) = std::str::from_utf8(entry.file_name().as_bytes())
            .ok()
            .and_then(|s| s.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some((state, pgrp, session)) = read_stat(pid) else {
            continue;
        };
        if state == b'Z' || state == b'X' {
            continue;
        }
        if let Some(t) = targets
            .iter()
            .find(|t| t.session == session || t.session == pgrp)
        {
            found.entry(t.key).or_default().push(pid);
            continue;
        }
        environ.clear();
        if read_into(&format!("/proc/{pid}/environ"), &mut environ).is_err() {
            continue;
        }
        if !environ.ends_with(b"\0") {
            environ.push(0);
        }
        for (t, needle) in targets.iter().zip(&needles) {
            if environ.starts_with(needle) || contains_after_nul(&environ, needle) {
                found.entry(t.key).or_default().push(pid);
                break;
            }
        }
    }
    found
}

fn contains_after_nul(hay: &[u8], needle: &[u8]) -> bool {
    // An entry starts after a NUL byte: look for "\0" + needle.
    hay.windows(needle.len() + 1)
        .any(|w| w[0] == 0 && &w[1..] == needle)
}

fn read_into(path: &str, buf: &mut Vec<u8>) -> io::Result<()> {
    use std::io::Read;
    fs::File::open(path)?.read_to_end(buf).map(|_| ())
}

/// State, process group and session of `pid` from /proc/<pid>/stat.
fn read_stat(pid: libc::pid_t) -> Option<(u8, libc::pid_t, libc::pid_t)> {
    let text = fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: parse after the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some((state, pgrp, session))
}

fn cgroup2_mount() -> io::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    for line in mountinfo.lines() {
        // "<id> <parent> <maj:min> <root> <mount point> <opts> ... - <fstype> <source> <opts>"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_ascii_whitespace().next() == Some("cgroup2") {
            if let Some(mount_point) = left.split_ascii_whitespace().nth(4) {
                return Ok(PathBuf::from(mount_point.replace("\\040", " ")));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "no cgroup2 hierarchy is mounted",
    ))
}

fn own_cgroup2_path() -> io::Result<String> {
    let text = fs::read_to_string("/proc/self/cgroup")?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.to_string())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "this process is in no cgroup2 group",
            )
        })
}

/// Kills and removes what dead flowruns left in `flowrun-<pid>-*` directories beside ours (a
/// SIGKILL or crash of flowrun and of its watchdog). The owner is proven dead first: its
/// directory's lock is free (a live flowrun, and its watchdog, hold it) and no process has
/// its pid, a zombie aside (a flowrun from before the lock existed holds none). Other runs on the machine
/// are left alone.
fn remove_stale_roots(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("flowrun-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let dir = e.path();
        let Ok(file) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
        else {
            continue;
        };
        let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue; // its flowrun or its watchdog lives
        };
        if process_lives(pid) {
            continue;
        }
        kill_stale_root(&dir, pid);
        remove_cgroup_tree(&dir);
    }
}

/// Whether process `pid` exists and is not a zombie. A dead flowrun whose parent died too (its
/// supervising parent, SIGKILLed) stays a zombie until init reaps it, which in a container can
/// take a while or never happen: it holds no lock and runs nothing, so it counts as dead.
fn process_lives(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X"))
}

/// SIGKILL to every process left in a dead flowrun's cgroup directory, then a bounded wait
/// for them to go.
fn kill_stale_root(dir: &Path, owner: u32) {
    let events = dir.join("cgroup.events");
    let populated = || {
        fs::read(&events)
            .map(|t| t.split(|&b| b == b'\n').any(|l| l == b"populated 1"))
            .unwrap_or(false)
    };
    if !populated() {
        return;
    }
    let slots: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    let left: usize = slots.iter().map(|s| cgroup_pids(s).len()).sum();
    if fs::write(dir.join("cgroup.kill"), b"1").is_err() {
        for slot in &slots {
            signal_job_cgroup(slot, Signal::SIGKILL);
        }
    }
    tracing::warn!(
        "local backend: killed {left} processes left running by flowrun {owner}, which died without ending its jobs ({})",
        dir.display()
    );
    let deadline = Instant::now() + STALE_KILL_WAIT;
    while populated() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::process_lives;

    #[test]
    fn a_zombie_or_a_reaped_process_is_dead_a_running_one_lives() {
        assert!(process_lives(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not waited for yet: once it has exited it is a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_lives(pid) {
            assert!(std::time::Instant::now() < deadline, "`true` never ended");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "a zombie still has its /proc entry"
        );
        child.wait().unwrap();
        assert!(!process_lives(pid));
    }
}
