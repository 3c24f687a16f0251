//! The child side of the `clone` spawn path: the code a `clone(CLONE_VM)` child runs between
//! clone and exec, on a stack of its own but in the host's address space, while the host's
//! threads keep running.
//!
//! **Before editing, read `docs/design/local-spawn.md`** (invariants I1 to I12 and the
//! checklist). In short: raw system calls only (the `syscalls` crate, never a libc wrapper:
//! `errno` and libc's locks belong to the host thread), no allocation, no lock, no
//! thread-local, and no panicking path: the lints of `fenced/mod.rs` refuse `unwrap`, `expect`, indexing,
//! unchecked arithmetic and explicit panics here (`fenced/mod.rs`).

use std::{ffi::CStr, os::fd::RawFd, sync::atomic::Ordering};

use syscalls::{syscall, Errno, Sysno};

use super::raw::{default_signal_actions, exit, sleep_ms, unblock_signals};
use crate::spawn::{ChildReport, SpawnStep};

/// The longest path the PATH search builds (PATH_MAX).
const CHILD_PATH_MAX: usize = 4096;
/// How long a child not waited for keeps retrying a step that failed for want of memory or
/// descriptors (ENOMEM, ENFILE, EMFILE, EAGAIN) before it fails the job (I12).
const SHORTAGE_PATIENCE_MS: u64 = 60_000;
/// The longest pause between two such retries.
const SHORTAGE_LONGEST_PAUSE_MS: u64 = 500;

/// What the child needs, all raw. Every pointer points into the child's slot or the
/// backend's base environment (I2).
#[repr(C)]
pub(in crate::spawn) struct ChildArgs {
    pub argv: *const *const libc::c_char,
    pub envp: *const *const libc::c_char,
    pub program_has_slash: bool,
    /// The directories to search for a program without `/` (the job's `PATH`).
    pub path: *const u8,
    pub path_len: usize,
    pub cwd: *const libc::c_char,
    pub job_dir: *const libc::c_char,
    pub cmd_sh: *const libc::c_char,
    pub cmd_sh_text: *const u8,
    pub cmd_sh_len: usize,
    /// NULL to inherit (interactive).
    pub stdout_log: *const libc::c_char,
    /// NULL: stderr goes where stdout goes.
    pub stderr_log: *const libc::c_char,
    /// -1 to inherit.
    pub stdin: RawFd,
    pub new_session: bool,
    pub cgroup_procs: RawFd,
    /// Retry steps that fail for a passing shortage (not when the host waits for us).
    pub retry_shortages: bool,
    pub report: *const ChildReport,
}

impl ChildArgs {
    pub const EMPTY: ChildArgs = ChildArgs {
        argv: std::ptr::null(),
        envp: std::ptr::null(),
        program_has_slash: false,
        path: std::ptr::null(),
        path_len: 0,
        cwd: std::ptr::null(),
        job_dir: std::ptr::null(),
        cmd_sh: std::ptr::null(),
        cmd_sh_text: std::ptr::null(),
        cmd_sh_len: 0,
        stdout_log: std::ptr::null(),
        stderr_log: std::ptr::null(),
        stdin: -1,
        new_session: false,
        cgroup_procs: -1,
        retry_shortages: false,
        report: std::ptr::null(),
    };
}

/// The child's entry point (`clone`'s `fn`, or called by the clone3 trampoline).
pub(in crate::spawn) extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: (I2) `arg` is the slot's ChildArgs, which the host leaves untouched until the
    // kernel clears the slot's busy word at our exec or exit; every pointer in it stays valid
    // as long.
    let args = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: `args` was filled by `clone::fill` (I2); we run on our own stack (I6).
    unsafe { child_steps(args) }
}

/// Sets the job up and execs it; on failure records the step and errno in the report and
/// exits with 127.
///
/// # Safety
/// Only in a freshly cloned child, with `a` filled by `clone::fill` (I1 to I3).
unsafe fn child_steps(a: &ChildArgs) -> ! {
    let fail = |step: SpawnStep, errno: Errno| -> ! {
        // SAFETY: (I10) the report outlives us: the job owns it until we are reaped.
        let report = unsafe { &*a.report };
        report.errno.store(errno.into_raw(), Ordering::Relaxed);
        report.step.store(step.code(), Ordering::Release);
        exit(127)
    };
    // (I5) The host's handlers must not run here: this process shares the host's memory.
    default_signal_actions();
    // SAFETY: setsid / setpgid have no memory arguments.
    let grouped = unsafe {
        if a.new_session {
            syscall!(Sysno::setsid)
        } else {
            syscall!(Sysno::setpgid, 0, 0)
        }
    };
    if let Err(e) = grouped {
        fail(SpawnStep::Setup, e);
    }
    // "0" moves the writing process itself.
    if a.cgroup_procs >= 0 {
        // SAFETY: writes one byte from a static string to an fd of ours.
        if let Err(e) = unsafe { syscall!(Sysno::write, a.cgroup_procs, b"0".as_ptr(), 1) } {
            fail(SpawnStep::Cgroup, e);
        }
    }
    // (I11) stdin first, then every other descriptor of the host's goes: the job's own files
    // below can always get one even when the host's table is full, and no host descriptor
    // stays open in the child until its exec.
    if a.stdin >= 0 {
        if let Err(e) = install(a.stdin, 0) {
            fail(SpawnStep::Setup, e);
        }
    }
    // SAFETY: close_range has no memory arguments. Before Linux 5.9 it does not exist: the
    // host's descriptors are all close-on-exec anyway.
    let _ = unsafe { syscall!(Sysno::close_range, 3, u32::MAX, 0) };

    let retry = a.retry_shortages;
    // SAFETY: `job_dir` is a NUL-terminated path in the slot (I2).
    match patiently(retry, || unsafe {
        syscall!(Sysno::mkdirat, libc::AT_FDCWD, a.job_dir, 0o777)
    }) {
        Ok(_) => {}
        Err(e) if e.into_raw() == libc::EEXIST => {}
        Err(e) => fail(SpawnStep::JobDir, e),
    }
    // SAFETY: path and text are in the slot (I2), `cmd_sh_len` bytes long.
    if let Err(e) = patiently(retry, || unsafe {
        write_file(a.cmd_sh, a.cmd_sh_text, a.cmd_sh_len)
    }) {
        fail(SpawnStep::CmdSh, e);
    }
    if !a.stdout_log.is_null() {
        // Created or truncated: a log holds this attempt's output only (never an older
        // file's), and O_APPEND keeps the job's own writers (stdout, stderr, children) from
        // overwriting each other.
        let log_flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND | libc::O_CLOEXEC;
        // SAFETY: a NUL-terminated path in the slot (I2).
        let out = match patiently(retry, || unsafe {
            syscall!(
                Sysno::openat,
                libc::AT_FDCWD,
                a.stdout_log,
                log_flags,
                0o666
            )
        }) {
            Ok(fd) => fd as RawFd,
            Err(e) => fail(SpawnStep::StdoutLog, e),
        };
        let err = if a.stderr_log.is_null() {
            out
        } else {
            // SAFETY: a NUL-terminated path in the slot (I2).
            match patiently(retry, || unsafe {
                syscall!(
                    Sysno::openat,
                    libc::AT_FDCWD,
                    a.stderr_log,
                    log_flags,
                    0o666
                )
            }) {
                Ok(fd) => fd as RawFd,
                Err(e) => fail(SpawnStep::StderrLog, e),
            }
        };
        for (fd, target) in [(out, 1), (err, 2)] {
            if let Err(e) = install(fd, target) {
                fail(SpawnStep::Setup, e);
            }
        }
    }
    // SAFETY: a NUL-terminated path in the slot (I2).
    if let Err(e) = unsafe { syscall!(Sysno::chdir, a.cwd) } {
        fail(SpawnStep::Chdir, e);
    }
    // (I5) Signals were blocked from before the clone until here.
    unblock_signals();
    // SAFETY: argv, envp and PATH are in the slot and the base environment (I2).
    match patiently(retry, || unsafe { exec_program(a) }) {
        Err(e) => fail(SpawnStep::Exec, e),
    }
}

/// Makes `fd` the descriptor `target`, kept open across exec. The opened descriptors close at
/// exec, unless one already is its target (the host started with that fd closed): then it
/// stays open instead.
fn install(fd: RawFd, target: RawFd) -> Result<usize, Errno> {
    // SAFETY: fcntl / dup3 on descriptors have no memory arguments.
    unsafe {
        if fd == target {
            syscall!(Sysno::fcntl, fd, libc::F_SETFD, 0)
        } else {
            syscall!(Sysno::dup3, fd, target, 0)
        }
    }
}

/// Runs `op`, and while it fails for a passing shortage (memory, descriptors) and `retry` is
/// set, again after a pause (1 ms doubling to 0.5 s) for at most [`SHORTAGE_PATIENCE_MS`].
fn patiently<T>(retry: bool, mut op: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    let mut pause_ms: u64 = 1;
    let mut waited_ms: u64 = 0;
    loop {
        match op() {
            Err(e)
                if retry
                    && waited_ms < SHORTAGE_PATIENCE_MS
                    && matches!(
                        e.into_raw(),
                        libc::ENOMEM | libc::ENFILE | libc::EMFILE | libc::EAGAIN
                    ) =>
            {
                sleep_ms(pause_ms);
                waited_ms = waited_ms.saturating_add(pause_ms);
                pause_ms = pause_ms.saturating_mul(2).min(SHORTAGE_LONGEST_PAUSE_MS);
            }
            other => return other,
        }
    }
}

/// Creates (or truncates) `path`, mode 0755, with `len` bytes from `text`.
///
/// # Safety
/// `path` is NUL-terminated and `text` points to `len` readable bytes.
unsafe fn write_file(
    path: *const libc::c_char,
    text: *const u8,
    len: usize,
) -> Result<(), syscalls::Errno> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
    // SAFETY: per this function's contract.
    let fd = unsafe { syscall!(Sysno::openat, libc::AT_FDCWD, path, flags, 0o755)? };
    let mut done: usize = 0;
    while done < len {
        // SAFETY: `done < len`, so `text + done` and the `len - done` bytes after it are
        // inside the caller's buffer.
        match unsafe { syscall!(Sysno::write, fd, text.add(done), len.saturating_sub(done)) } {
            Ok(0) => break,
            Ok(n) => done = done.saturating_add(n),
            Err(e) => {
                // SAFETY: closes our own descriptor.
                let _ = unsafe { syscall!(Sysno::close, fd) };
                return Err(e);
            }
        }
    }
    // SAFETY: closes our own descriptor.
    unsafe { syscall!(Sysno::close, fd) }.map(|_| ())
}

/// `dir/name\0` into `buf`; None when it does not fit.
fn join_path(buf: &mut [u8], dir: &[u8], name: &[u8]) -> Option<*const u8> {
    let slash = dir.len();
    let name_at = slash.checked_add(1)?;
    let end = name_at.checked_add(name.len())?;
    buf.get_mut(..slash)?.copy_from_slice(dir);
    *buf.get_mut(slash)? = b'/';
    buf.get_mut(name_at..end)?.copy_from_slice(name);
    *buf.get_mut(end)? = 0;
    Some(buf.as_ptr())
}

/// execve of argv[0], searched on the job's PATH like execvp when it has no `/`. Returns only
/// on failure: ENOENT when no directory has it, EACCES when one had it but not executable.
///
/// # Safety
/// `a` was filled by `clone::fill` (I2).
unsafe fn exec_program(a: &ChildArgs) -> Result<std::convert::Infallible, Errno> {
    // SAFETY: argv has at least the program and a NULL (fill refuses an empty command).
    let program = unsafe { *a.argv };
    if a.program_has_slash {
        // SAFETY: NUL-terminated program, NULL-terminated argv and envp.
        return match unsafe { syscall!(Sysno::execve, program, a.argv, a.envp) } {
            Err(e) => Err(e),
            Ok(_) => Err(Errno::new(libc::ENOEXEC)),
        };
    }
    // SAFETY: a NUL-terminated string in the slot.
    let name = unsafe { CStr::from_ptr(program) }.to_bytes();
    // SAFETY: `path_len` bytes at `path`, in the slot.
    let path = unsafe { std::slice::from_raw_parts(a.path, a.path_len) };
    let mut buf = [0u8; CHILD_PATH_MAX];
    let mut saw_eacces = false;
    for dir in path.split(|&b| b == b':') {
        // An empty entry is the working directory.
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let Some(candidate) = join_path(&mut buf, dir, name) else {
            continue;
        };
        // SAFETY: `candidate` is NUL-terminated in `buf`; argv and envp as above.
        let e = match unsafe { syscall!(Sysno::execve, candidate, a.argv, a.envp) } {
            Err(e) => e,
            Ok(_) => Errno::new(libc::ENOEXEC),
        };
        match e.into_raw() {
            libc::EACCES => saw_eacces = true,
            // What execvp passes over: not in this directory.
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return Err(e),
        }
    }
    Err(Errno::new(if saw_eacces {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}
