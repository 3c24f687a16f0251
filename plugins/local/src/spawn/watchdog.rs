//! The watchdog: a small process per backend that kills the backend's jobs when flowrun dies
//! without shutting the backend down (SIGKILL, a crash, `exit()` in a plugin).
//!
//! Nothing catches SIGKILL, and `PR_SET_PDEATHSIG` reaches only a job's first process, not
//! the `setsid`'d grandchildren that left its session. So a forked child of the host holds
//! the read end of a pipe whose only write end the host holds: when the host dies for
//! whatever reason the kernel closes it and the watchdog reads end-of-file. It then kills:
//! 1. every job cgroup of the backend at once (`cgroup.kill` of the backend's cgroup
//!    directory, which reaches every process that was ever placed in them);
//! 2. the process groups of the jobs not born in a cgroup, which the host announced through
//!    the pipe (8-byte records: start, end, orderly shutdown);
//! 3. every process, found by scanning /proc, in one of those sessions or process groups or
//!    carrying one of the backend's `FLOWRUN_JOB_TAG` values in its environment;
//!
//! a few rounds, until a round finds nothing, then exits. An orderly shutdown (every job
//! reaped) sends a "bye" record first, and the watchdog exits without killing.
//!
//! The watchdog is a `fork` of a multi-threaded process: it runs the code of
//! [`super::fenced::watchdog`] only, under the same rules as the spawn child (raw system calls,
//! no allocation, no lock, no panic path; `docs/design/local-spawn.md`).

use std::{
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::{fcntl, FcntlArg, OFlag},
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        signal::{pthread_sigmask, SigSet, SigmaskHow},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};

use super::fenced::watchdog::{self as watchdog_child, WatchdogArgs, NEEDLE_MAX};

/// A record on the pipe: `[op: u32 LE, pid: i32 LE]`.
pub(super) const RECORD_LEN: usize = 8;
pub(super) const OP_JOB_STARTED: u32 = 1;
pub(super) const OP_JOB_ENDED: u32 = 2;
pub(super) const OP_BYE: u32 = 3;

/// What the watchdog needs to know about the backend.
pub struct WatchdogSetup {
    /// `-<flowrun pid>.<backend instance>-`: the part of every `FLOWRUN_JOB_TAG` value of the
    /// backend that no other backend's has (the value ends with it and the job id).
    pub tag_needle: String,
    /// The backend's cgroup directory's `cgroup.kill`, open for writing.
    pub cgroup_kill: Option<OwnedFd>,
    /// Descriptors the watchdog keeps open while it lives (the backend cgroup's lock: a later
    /// flowrun takes the backend for dead only once neither flowrun nor its watchdog holds it).
    pub keep: Option<RawFd>,
}

/// The host's end of a running watchdog.
pub struct Watchdog {
    pid: Pid,
    /// The only write end of the pipe; non-blocking.
    tx: Option<OwnedFd>,
    /// Set once a record could not be sent: the watchdog is gone or stuck (warned once).
    broken: AtomicBool,
}

impl Watchdog {
    /// Forks the watchdog.
    pub fn start(setup: WatchdogSetup) -> io::Result<Watchdog> {
        let needle = setup.tag_needle.as_bytes();
        if needle.len() > NEEDLE_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "tag needle too long",
            ));
        }
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        // Room for 131,072 records, so that a burst of job starts never waits for the
        // watchdog (best effort: the default is 64 KiB).
        let _ = fcntl(&tx, FcntlArg::F_SETPIPE_SZ(1 << 20));
        fcntl(&tx, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
        let mut args = WatchdogArgs {
            rx: rx.as_raw_fd(),
            cgroup_kill: setup.cgroup_kill.as_ref().map_or(-1, |f| f.as_raw_fd()),
            keep: setup.keep.unwrap_or(-1),
            needle: [0; NEEDLE_MAX],
            needle_len: needle.len(),
            host_pid: nix::unistd::getpid().as_raw(),
        };
        args.needle
            .get_mut(..needle.len())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?
            .copy_from_slice(needle);

        // (I5) Signals blocked across the fork, so that no host handler runs in the child
        // before it resets them.
        let mut old = SigSet::empty();
        let _ = pthread_sigmask(
            SigmaskHow::SIG_SETMASK,
            Some(&SigSet::all()),
            Some(&mut old),
        );
        // SAFETY: a plain fork (no CLONE_VM, no new stack): the child gets a copy of our
        // memory and continues here, on its copy of this thread's stack. Of a multi-threaded
        // process only this thread exists in the child, so it runs `watchdog_child::run`
        // alone: raw system calls only, no allocation, no lock (I3, I4).
        let forked =
            unsafe { syscalls::syscall!(syscalls::Sysno::clone, libc::SIGCHLD, 0, 0, 0, 0) };
        match forked {
            Ok(0) => watchdog_child::run(&args),
            Ok(pid) => {
                let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                drop(rx);
                drop(setup.cgroup_kill);
                Ok(Watchdog {
                    pid: Pid::from_raw(pid as libc::pid_t),
                    tx: Some(tx),
                    broken: AtomicBool::new(false),
                })
            }
            Err(e) => {
                let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                Err(io::Error::from_raw_os_error(e.into_raw()))
            }
        }
    }

    /// The watchdog's pid.
    #[cfg(test)]
    pub fn pid(&self) -> libc::pid_t {
        self.pid.as_raw()
    }

    /// Tells the watchdog about a job's process group (its leader's pid).
    pub fn job_started(&self, pgid: libc::pid_t) {
        self.send(OP_JOB_STARTED, pgid);
    }

    /// The job's process group is gone.
    pub fn job_ended(&self, pgid: libc::pid_t) {
        self.send(OP_JOB_ENDED, pgid);
    }

    fn send(&self, op: u32, pid: libc::pid_t) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let Some(tx) = &self.tx else {
            return;
        };
        let mut record = [0u8; RECORD_LEN];
        record[..4].copy_from_slice(&op.to_le_bytes());
        record[4..].copy_from_slice(&pid.to_le_bytes());
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            // One write of 8 bytes: atomic on a pipe (PIPE_BUF), whichever thread sends.
            match nix::unistd::write(tx, &record) {
                Ok(_) => return,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) if Instant::now() < deadline => {
                    let mut fds = [PollFd::new(tx.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, PollTimeout::from(100u16));
                }
                Err(e) => {
                    if !self.broken.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "local backend: the watchdog (pid {}) does not take news ({e}): if flowrun dies now, jobs may outlive it",
                            self.pid
                        );
                    }
                    return;
                }
            }
        }
    }

    /// Orderly end (every job is gone): the watchdog exits without killing, and is reaped.
    pub fn close(&mut self) {
        self.send(OP_BYE, 0);
        self.tx = None;
        // It exits at once; a stopped one is not waited for beyond a second.
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => return,
            }
        }
    }
}

#[cfg(test)]
impl Watchdog {
    /// What the watchdog sees when flowrun dies: the write end closes without a goodbye.
    /// Returns once it has done its work and exited (at most 10 s).
    pub fn lose_host(&mut self) {
        self.tx = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(
            waitpid(self.pid, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        ) {
            assert!(Instant::now() < deadline, "the watchdog did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.close();
        }
    }
}
