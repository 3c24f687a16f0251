//! Finding and killing every process a job started.
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
    os::unix::{ffi::OsStrExt, fs::OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

/// The environment variable that tags every process of a job.
pub const TAG_VAR: &str = "FLOWRUN_JOB_TAG";

/// The cgroup v2 directory owned by one backend instance, and its pool of empty job cgroups.
///
/// Job cgroups are reused rather than created and removed per job: mkdir+rmdir of a cgroup
/// costs about 55 us of host CPU per job, reuse about 15 us (README, spawn-cost table).
pub struct CgroupRoot {
    dir: PathBuf,
    /// Whether `cgroup.kill` exists (Linux 5.14+).
    has_kill_file: bool,
    /// Empty job cgroups ready for the next job.
    free: Mutex<Vec<JobCgroup>>,
    created: AtomicU64,
}

/// One pooled job cgroup, with the two files touched for every job kept open: opening them
/// per job was a tenth of the host's CPU per job.
pub struct JobCgroup {
    pub dir: PathBuf,
    /// The directory, for `clone3(CLONE_INTO_CGROUP)`: the job's first process starts in it.
    dir_fd: fs::File,
    /// `cgroup.procs`, for writing, where clone3 cannot place the child: the child writes "0"
    /// to it to move itself in before exec.
    procs: fs::File,
    /// `cgroup.events`, read (from offset 0) to learn whether the cgroup is empty.
    events: fs::File,
}

impl JobCgroup {
    fn open(dir: PathBuf) -> io::Result<JobCgroup> {
        let dir_fd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)?;
        let procs = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join("cgroup.procs"))?;
        let events = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join("cgroup.events"))?;
        Ok(JobCgroup {
            dir,
            dir_fd,
            procs,
            events,
        })
    }

    /// What the spawner needs to start a process in this cgroup.
    pub fn fds(&self) -> crate::spawn::CgroupFds {
        use std::os::fd::AsRawFd;
        crate::spawn::CgroupFds {
            dir: self.dir_fd.as_raw_fd(),
            procs: self.procs.as_raw_fd(),
        }
    }

    /// Whether no process is left (`populated 0` in `cgroup.events`).
    pub fn is_empty(&self) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        // The file is a few dozen bytes ("populated 0\nfrozen 0\n"); one pread reads it all.
        let mut buf = [0u8; 128];
        let n = self.events.read_at(&mut buf, 0)?;
        Ok(buf[..n].split(|&b| b == b'\n').any(|l| l == b"populated 0"))
    }
}

impl CgroupRoot {
    /// Creates `<cgroup2 mount><own cgroup>/flowrun-<pid>-<instance>`. Fails when no cgroup2
    /// hierarchy is mounted or it is not writable.
    pub fn create(instance: u64) -> io::Result<CgroupRoot> {
        let mount = cgroup2_mount()?;
        let own = own_cgroup2_path()?;
        let parent = mount.join(own.trim_start_matches('/'));
        remove_stale_roots(&parent);
        let dir = parent.join(format!("flowrun-{}-{instance}", std::process::id()));
        fs::create_dir(&dir)?;
        let has_kill_file = dir.join("cgroup.kill").exists();
        Ok(CgroupRoot {
            dir,
            has_kill_file,
            free: Mutex::new(Vec::new()),
            created: AtomicU64::new(0),
        })
    }

    /// The directory of this instance.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An empty cgroup for a new job: a pooled one, or a new one.
    pub fn acquire(&self) -> io::Result<JobCgroup> {
        if let Some(cgroup) = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(cgroup);
        }
        let dir = self.dir.join(format!(
            "slot-{}",
            self.created.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&dir)?;
        JobCgroup::open(dir.clone()).inspect_err(|_| {
            let _ = fs::remove_dir(&dir);
        })
    }

    /// Returns a job cgroup known to be empty to the pool.
    pub fn release(&self, cgroup: JobCgroup) {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cgroup);
    }

    /// Removes the instance directory (its job cgroups must be gone).
    pub fn remove(&self) {
        // Close the pooled cgroups' files first.
        self.free.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }

    /// Kills every process of a job cgroup with SIGKILL.
    pub fn kill_job(&self, cgroup: &Path) {
        if self.has_kill_file && fs::write(cgroup.join("cgroup.kill"), b"1").is_ok() {
            return;
        }
        signal_job_cgroup(cgroup, libc::SIGKILL);
    }
}

/// The processes in a job cgroup.
pub fn cgroup_pids(cgroup: &Path) -> Vec<libc::pid_t> {
    fs::read_to_string(cgroup.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Sends `signal` to every process of a job cgroup.
pub fn signal_job_cgroup(cgroup: &Path, signal: libc::c_int) {
    for pid in cgroup_pids(cgroup) {
        send(pid, signal);
    }
}

/// Sends `signal` to one process, ignoring "no such process".
pub fn send(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory arguments.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Sends `signal` to a process group; false when the group has no process left.
pub fn signal_group(pgid: libc::pid_t, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) has no memory arguments.
    unsafe { libc::kill(-pgid, signal) == 0 }
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
        let mut with_nul = Vec::new();
        let env: &[u8] = if environ.ends_with(b"\0") {
            &environ
        } else {
            with_nul.extend_from_slice(&environ);
            with_nul.push(0);
            &with_nul
        };
        for (t, needle) in targets.iter().zip(&needles) {
            let at_start = env.starts_with(needle);
            if at_start || contains_after_nul(env, needle) {
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
    let state = fields.next()?.as_bytes()[0];
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

/// Removes `flowrun-<pid>-*` directories of flowrun processes that no longer exist (a crash
/// or SIGKILL left them behind). Only empty cgroups can be removed; others are left alone.
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
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let root = CgroupRoot {
            dir: e.path(),
            has_kill_file: false,
            free: Mutex::default(),
            created: AtomicU64::new(0),
        };
        root.remove();
    }
}
