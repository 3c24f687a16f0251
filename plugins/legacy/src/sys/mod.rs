//! Every `unsafe` operation of the plugin lives below this module: the system calls that
//! start, contain and watch the worker process (here), and the calls into the launcher's C
//! ABI ([`launcher_abi`]). Everything else is safe code on top of these functions.
//!
//! Invariants the callers rely on:
//! - Functions taking a `RawFd` never take ownership of it, and only ever act on it with calls
//!   that cannot break memory safety when the fd is invalid (they fail with `EBADF`).
//! - [`fork`] is only called while the process has one thread (the worker's guardian, right
//!   after the process started), so the child may run any code.
//! - [`map_fds_on_exec`] runs only async-signal-safe calls (`dup2`) between fork and exec.

pub mod launcher_abi;

use std::{
    ffi::CStr,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
        unix::process::CommandExt,
    },
    path::PathBuf,
    process::Command,
    time::Duration,
};

/// The worker's entry point: a constructor that runs when this library (or a test binary that
/// contains the crate) is loaded, before the program's `main`. In every process but a worker
/// it returns at once; in a worker (see `crate::worker`) it never returns.
#[used]
#[link_section = ".init_array"]
static WORKER_ENTRY: extern "C" fn() = worker_entry;

extern "C" fn worker_entry() {
    if crate::worker::is_worker_process() {
        // A panic must not unwind into the loader; it ends the worker like a crash would.
        let code = std::panic::catch_unwind(crate::worker::main).unwrap_or(101);
        exit_now(code);
    }
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(last_error())
    } else {
        Ok(ret)
    }
}

/// Ends the process at once, without running exit handlers or destructors.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// The parent process's pid.
pub fn parent_pid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() as u32 }
}

/// This process's pid.
pub fn own_pid() -> i32 {
    std::process::id() as i32
}

/// The file this code was loaded from: the plugin's shared library, or the executable when
/// the crate is linked into one (its unit tests).
pub fn own_object_path() -> Option<PathBuf> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let addr = worker_entry as *const libc::c_void;
    // SAFETY: dladdr only reads the loader's tables and writes `info`, which is valid for
    // writes; `addr` is a function of this object.
    let found = unsafe { libc::dladdr(addr, info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: dladdr returned non-zero, so it filled in `info`.
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader, alive while the object
    // stays loaded (this code is running from it).
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    let name = name.to_str().ok()?;
    (!name.is_empty()).then(|| PathBuf::from(name))
}

/// A duplicate of `fd` numbered at least `min`, close-on-exec.
pub fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor, which we own from here on.
    let new = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: `new` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Makes the child of `cmd` find each `(fd, number)` as descriptor `number` (not
/// close-on-exec). Every source must be numbered above every target, so that no `dup2`
/// overwrites a source before it is copied (use [`dup_at_least`]).
pub fn map_fds_on_exec(cmd: &mut Command, fds: Vec<(OwnedFd, RawFd)>) {
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: it calls dup2 only, on descriptors the moved-in OwnedFds keep open.
    unsafe {
        cmd.pre_exec(move || {
            for (src, target) in &fds {
                if libc::dup2(src.as_raw_fd(), *target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Takes ownership of descriptor `fd`, inherited from the parent, and makes it close-on-exec
/// (so that the launcher's jobs do not inherit it).
pub fn claim_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags; it fails with EBADF if `fd` is not open.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: as above; F_SETFD changes only the close-on-exec flag.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    // SAFETY: the parent handed this descriptor to this process for it alone (the worker is
    // the only code that knows its number), and it is open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Closes every descriptor from `first` up, whatever the process inherited.
pub fn close_fds_from(first: RawFd) {
    // SAFETY: close_range only closes descriptors; nothing in this single-threaded, freshly
    // started process owns any above `first`.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0u32) };
    if r == 0 {
        return;
    }
    // Kernels before 5.9: close what /proc lists.
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: as above; the descriptor of the read_dir itself is already closed.
        unsafe { libc::close(fd) };
    }
}

/// Whether the process is the parent or the child after [`fork`].
pub enum Forked {
    /// The parent; the child's pid.
    Parent(i32),
    /// The child.
    Child,
}

/// Forks. Must only be called while the process has a single thread.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the caller guarantees the process is single-threaded, so the child inherits no
    // lock held by another thread and may run any code.
    match check(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Makes orphaned descendants of this process its children (so that it can kill them).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER only sets a flag of this process.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(|_| ())
}

/// Sends this process `sig` when its parent dies.
pub fn die_with_parent(sig: i32) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG only sets a flag of this process.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) }).map(|_| ())
}

/// Names this process (what `ps` and `top` show; 15 bytes at most).
pub fn set_process_name(name: &CStr) {
    // SAFETY: PR_SET_NAME reads at most 16 bytes of a NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// A descriptor that becomes readable when process `pid` ends.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open creates a new descriptor, which we own from here on.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits until one of `fds` is readable (or hung up), or `timeout` passes (`None`: forever).
/// Returns which are ready.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        // Rounded up, so that a wait for 0.3 ms does not spin.
        Some(d) => i32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
    };
    // SAFETY: `polls` is a valid array of `polls.len()` pollfd structs.
    let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = last_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(polls.iter().map(|p| p.revents != 0).collect())
}

/// Sends all of `buf` on a stream socket without ever raising SIGPIPE (the peer may have
/// died; that must be an error, not the death of this process). Waits while the socket is
/// full, also when it is non-blocking.
pub fn send_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = last_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    let mut p = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: `p` is one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, -1) };
                    continue;
                }
                _ => return Err(e),
            }
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    /// Exited with this code.
    Exited(i32),
    /// Died of this signal.
    Signaled(i32),
}

fn decode_status(status: libc::c_int) -> Option<ChildEnd> {
    if libc::WIFEXITED(status) {
        Some(ChildEnd::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(ChildEnd::Signaled(libc::WTERMSIG(status)))
    } else {
        None
    }
}

/// Reaps child `pid` (`pid = -1`: any child) if it ended, or waits for it when `block`.
/// `Ok(None)`: it still runs. Errors with `ECHILD` when there is no such child.
pub fn reap(pid: i32, block: bool) -> io::Result<Option<(i32, ChildEnd)>> {
    let mut status = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `status` is valid for writes.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r < 0 {
            let e = last_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        match decode_status(status) {
            Some(end) => return Ok(Some((r, end))),
            None => continue, // stopped or continued: not an end
        }
    }
}

/// Sends `sig` to process `pid` (errors ignored: it may be gone).
pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill has no memory-safety preconditions; pid > 0 names one process.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Sends `sig` to process group `pgid` (errors ignored: it may be gone).
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: killpg has no memory-safety preconditions; pgid > 1 names one group.
        unsafe { libc::killpg(pgid, sig) };
    }
}

/// The process group of `pid` (0: this process).
pub fn process_group_of(pid: i32) -> Option<i32> {
    // SAFETY: getpgid has no preconditions.
    let g = unsafe { libc::getpgid(pid) };
    (g > 0).then_some(g)
}

/// Ends this process the way a child of it ended: the same exit code, or the same signal
/// (without a core dump: the child dumped its own, if the system keeps them).
pub fn end_like(end: ChildEnd) -> ! {
    match end {
        ChildEnd::Exited(code) => exit_now(code),
        ChildEnd::Signaled(sig) => {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: setrlimit reads a valid rlimit; signal and raise have no memory
            // preconditions; sigprocmask reads a valid, emptied set.
            unsafe {
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                libc::signal(sig, libc::SIG_DFL);
                let mut set = std::mem::zeroed::<libc::sigset_t>();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::raise(sig);
            }
            exit_now(128 + sig)
        }
    }
}

/// This process's own CPU time (user + system), in microseconds; its children not counted.
pub fn own_cpu_us() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage struct into valid memory.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: getrusage succeeded, so it filled the struct in.
    let u = unsafe { usage.assume_init() };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(u.ru_utime) + us(u.ru_stime)
}
