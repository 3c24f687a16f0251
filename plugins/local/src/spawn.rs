//! Starting one job process: a `clone(CLONE_VM)` child that sets itself up and execs.
//!
//! Why not `std::process::Command` or `posix_spawn`: a new *session* (setsid) needs `pre_exec`,
//! which makes std fall back to fork+exec, and fork copies the page tables of the whole host
//! process (measured in the README); posix_spawn cannot move the child into a cgroup before
//! it runs (glibc 2.39's `pidfd_spawn` can, this system has 2.36).
//!
//! Why the child does the job's file work: everything one job needs on disk (its directory,
//! `cmd.sh`, `output.log`) is created by the job's own process between clone and exec, as a
//! shell does for `mkdir -p d && cd d && cmd > log`. The host's one spawning thread does no
//! filesystem call per job, so its cost per job does not grow with a slow filesystem (ext4
//! allocating inodes among recently deleted ones takes ~0.3 ms per file here, see
//! docs/benchmarks.md), and the children do that work in parallel on every core.
//!
//! For that the host must not wait for the child (no `CLONE_VFORK`): the child runs on a
//! stack and reads data of its own [`Slot`], which the kernel hands back by clearing
//! `Slot::busy` when the child execs or exits (`CLONE_CHILD_CLEARTID`); a failure before exec
//! is written to the job's [`ChildReport`] and read when the job's process is reaped. The
//! child shares the host's memory while host threads keep running, so it makes raw system
//! calls only (the `syscalls` crate): no libc wrapper, which would write the host thread's
//! `errno`, no allocation, no lock.

use std::{
    ffi::{CStr, OsStr},
    io,
    os::{
        fd::{FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    ptr,
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        Mutex,
    },
};

use syscalls::{syscall, Sysno};

/// Variables removed from the host's environment: a parent make's jobserver confuses the
/// nested makes of jobs.
pub const REMOVED_VARS: [&str; 3] = ["MAKEFLAGS", "MFLAGS", "MAKELEVEL"];

/// The search path of a job without `PATH` in its environment.
const DEFAULT_PATH: &[u8] = b"/usr/local/bin:/usr/bin:/bin";
/// The child's stack between clone and exec. It makes raw system calls only; the largest
/// frame is the PATH search's path buffer.
const CHILD_STACK_BYTES: usize = 64 * 1024;
/// The longest path the PATH search builds (PATH_MAX).
const CHILD_PATH_MAX: usize = 4096;

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
            .map(|(k, kv)| &kv[k.len() + 1..kv.len() - 1])
    }
}

/// Where the child's standard streams go.
#[derive(Clone, Copy)]
pub enum Output<'a> {
    /// stdout and stderr appended to one log file (created by the child), stdin from `stdin`.
    Log { path: &'a str, stdin: RawFd },
    /// stdout and stderr to two log files.
    Split {
        stdout: &'a str,
        stderr: &'a str,
        stdin: RawFd,
    },
    /// The host's fds 0, 1 and 2 (interactive jobs).
    Inherit,
}

/// Which process group / session the child gets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// A new session, whose process group is the child's pid (regular jobs).
    NewSession,
    /// A new process group in the host's session (interactive jobs: a new session would
    /// lose the controlling terminal).
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

/// The stack and data of one child between clone and exec, reused once it is handed back.
struct Slot {
    /// 1 while a child runs on this slot; the kernel writes 0 when the child execs or exits.
    busy: AtomicI32,
    stack: Box<[u8]>,
    /// Every string the child reads, NUL-terminated.
    bytes: Vec<u8>,
    /// argv then envp, each NULL-terminated.
    ptrs: Vec<*const libc::c_char>,
    args: ChildArgs,
}

/// Starts jobs' processes; owns the slots their children run on.
pub struct Spawner {
    base: BaseEnv,
    /// Boxed: a slot must not move when the vector grows, since a child reads it and the
    /// kernel writes its `busy` word.
    #[allow(clippy::vec_box)]
    slots: Mutex<Vec<Box<Slot>>>,
    /// Whether clone3 may place children in cgroups here; cleared at the first sign that the
    /// kernel or the architecture cannot (the child then places itself).
    clone3_into_cgroup: AtomicBool,
}

// SAFETY: the raw pointers in the slots point into the slots themselves or into `base`, both
// owned here; a slot is only touched under the mutex and while no child uses it.
unsafe impl Send for Spawner {}
// SAFETY: as above.
unsafe impl Sync for Spawner {}

impl Spawner {
    pub fn new(base: BaseEnv) -> Spawner {
        Spawner {
            base,
            slots: Mutex::new(Vec::new()),
            clone3_into_cgroup: AtomicBool::new(cfg!(target_arch = "x86_64")),
        }
    }

    /// A spawner whose children place themselves in their cgroup, as on kernels without
    /// `CLONE_INTO_CGROUP`.
    #[cfg(test)]
    pub fn without_clone3(self) -> Spawner {
        self.clone3_into_cgroup.store(false, Ordering::Relaxed);
        self
    }

    /// Whether clone3 places children in their cgroups (still) here.
    #[cfg(test)]
    pub fn uses_clone3(&self) -> bool {
        self.clone3_into_cgroup.load(Ordering::Relaxed)
    }

    /// Starts `plan`. Without `wait_for_exec` this returns as soon as the child exists; a
    /// failure of one of its steps then shows in the report once it has exited (status 127).
    pub fn spawn(&self, plan: &Plan<'_>) -> Result<Spawned, SpawnError> {
        let use_clone3 = self.clone3_into_cgroup.load(Ordering::Relaxed);
        match self.spawn_with(plan, use_clone3) {
            Err(SpawnError::Step {
                step: SpawnStep::Cgroup,
                error,
            }) if use_clone3 && plan.cgroup.is_some() => {
                // clone3 refused. Either it cannot be used here (a kernel before 5.7, another
                // architecture, a seccomp filter answering EPERM) or the cgroup is refused:
                // the child placing itself, waited for, tells which.
                let placed = self.spawn_with(plan, false);
                // The child got past its placement (it may have failed a later step).
                let placement_worked = match &placed {
                    Ok(_) => true,
                    Err(SpawnError::Step { step, .. }) => {
                        !matches!(step, SpawnStep::Cgroup | SpawnStep::Clone)
                    }
                    Err(SpawnError::Invalid(_)) => false,
                };
                if placement_worked {
                    tracing::debug!("local backend: clone3 into a cgroup fails here ({error}); children place themselves");
                    self.clone3_into_cgroup.store(false, Ordering::Relaxed);
                }
                placed
            }
            other => other,
        }
    }

    fn spawn_with(&self, plan: &Plan<'_>, use_clone3: bool) -> Result<Spawned, SpawnError> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let i = match slots
            .iter()
            .position(|s| s.busy.load(Ordering::Acquire) == 0)
        {
            Some(i) => i,
            None => {
                slots.push(Box::new(Slot {
                    busy: AtomicI32::new(0),
                    stack: vec![0u8; CHILD_STACK_BYTES].into_boxed_slice(),
                    bytes: Vec::with_capacity(4096),
                    ptrs: Vec::with_capacity(64),
                    args: ChildArgs::EMPTY,
                }));
                slots.len() - 1
            }
        };
        let slot = &mut *slots[i];
        let report = Box::<ChildReport>::default();
        let into_cgroup = plan.cgroup.filter(|_| use_clone3);
        // Where clone3 places the child, it need not write cgroup.procs itself.
        let self_placed = plan.cgroup.filter(|_| into_cgroup.is_none());
        fill(slot, &self.base, plan, self_placed, &report).map_err(SpawnError::Invalid)?;
        let wait = plan.wait_for_exec || self_placed.is_some();

        let mut flags = libc::CLONE_VM | libc::CLONE_PIDFD | libc::CLONE_CHILD_CLEARTID;
        if wait {
            flags |= libc::CLONE_VFORK;
        }
        let mut pidfd: libc::c_int = -1;
        slot.busy.store(1, Ordering::Release);
        // SAFETY: every signal is blocked around clone so that no handler of ours runs in
        // the child before it resets them. The child reads only its slot (not touched until
        // the kernel clears `busy`), the base environment (immutable, owned by `self`, which
        // outlives every child: the backend reaps all before it is dropped, and `Drop` leaks
        // busy slots) and writes only its report (owned by the job until it is reaped) and its
        // own stack; it makes raw system calls only.
        let pid = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let result = match into_cgroup {
                Some(cgroup) => clone3_into_cgroup(slot, flags, cgroup.dir, &mut pidfd),
                None => clone_child(slot, flags, &mut pidfd),
            };
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
            match result {
                Ok(pid) => pid,
                Err(error) => {
                    slot.busy.store(0, Ordering::Release);
                    // What clone3 refuses beyond clone's own reasons (no memory, no pids
                    // left) is the placement, or clone3 itself: `spawn` tells which.
                    let clone_reason = matches!(
                        error.raw_os_error(),
                        Some(libc::EAGAIN | libc::ENOMEM | libc::ENOSPC | libc::EINTR)
                    );
                    let step = if into_cgroup.is_some() && !clone_reason {
                        SpawnStep::Cgroup
                    } else {
                        SpawnStep::Clone
                    };
                    return Err(SpawnError::Step { step, error });
                }
            }
        };
        drop(slots);
        let pidfd = if pidfd >= 0 {
            // SAFETY: a fresh fd from the kernel, ours alone.
            unsafe { OwnedFd::from_raw_fd(pidfd) }
        } else {
            // A kernel older than 5.2 ignores CLONE_PIDFD.
            match pidfd_open(pid) {
                Ok(fd) => fd,
                Err(error) => {
                    reap_killed(pid);
                    return Err(SpawnError::Step {
                        step: SpawnStep::Clone,
                        error,
                    });
                }
            }
        };
        if wait {
            if let Some(failure) = report.failure() {
                let mut status = 0;
                // SAFETY: reaps our own child, which has exited (it failed before exec).
                unsafe { libc::waitpid(pid, &mut status, 0) };
                return Err(failure);
            }
        }
        Ok(Spawned { pid, pidfd, report })
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // A child still on its slot (stuck before exec, for example in a hung filesystem)
        // would write into freed memory when it ends: leak such slots instead.
        let slots = std::mem::take(self.slots.get_mut().unwrap_or_else(|p| p.into_inner()));
        for slot in slots {
            if slot.busy.load(Ordering::Acquire) != 0 {
                std::mem::forget(slot);
            }
        }
    }
}

/// `clone(2)` of a child running `child_main` on the slot's stack. Signals must be blocked.
unsafe fn clone_child(
    slot: &mut Slot,
    flags: libc::c_int,
    pidfd: &mut libc::c_int,
) -> io::Result<libc::pid_t> {
    // The child's stack grows down: pass its aligned top.
    let top = (slot.stack.as_mut_ptr() as usize + slot.stack.len()) & !15;
    let pid = libc::clone(
        child_main,
        top as *mut libc::c_void,
        flags | libc::SIGCHLD,
        &slot.args as *const ChildArgs as *mut libc::c_void,
        pidfd as *mut libc::c_int,
        ptr::null_mut::<libc::c_void>(),
        slot.busy.as_ptr(),
    );
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// The kernel's `struct clone_args` (up to `cgroup`, Linux 5.7).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3(2)` of a child running `child_main` on the slot's stack, born in the cgroup whose
/// directory is open as `cgroup_dir`: no migration afterwards (the child's own write to
/// `cgroup.procs` cost ~70 us per job). Signals must be blocked. glibc 2.36 does not export
/// clone3, and a child on a new stack needs the few instructions below.
unsafe fn clone3_into_cgroup(
    slot: &mut Slot,
    flags: libc::c_int,
    cgroup_dir: RawFd,
    pidfd: &mut libc::c_int,
) -> io::Result<libc::pid_t> {
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: flags as u32 as u64 | CLONE_INTO_CGROUP,
        pidfd: pidfd as *mut libc::c_int as u64,
        child_tid: slot.busy.as_ptr() as u64,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: slot.stack.as_mut_ptr() as u64,
        stack_size: (slot.stack.len() & !15) as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup_dir as u64,
    };
    let child_arg = &slot.args as *const ChildArgs as *mut libc::c_void;
    let ret = raw_clone3(&args, child_arg);
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as libc::pid_t)
    }
}

/// The clone3 system call; the child calls `child_main(child_arg)` on its new stack and
/// exits with its result (it never returns: it execs or exits itself).
#[cfg(target_arch = "x86_64")]
unsafe fn raw_clone3(args: &CloneArgs, child_arg: *mut libc::c_void) -> isize {
    let ret: isize;
    std::arch::asm!(
        "syscall",
        "test rax, rax",
        "jnz 2f",
        // The child, on the new stack, with the parent's other registers: the ABI wants
        // the stack 16-byte aligned at the call and no caller frame.
        "xor ebp, ebp",
        "and rsp, -16",
        "mov rdi, r12",
        "call r13",
        "mov edi, eax",
        "mov eax, 231", // exit_group
        "syscall",
        "ud2",
        "2:",
        inlateout("rax") libc::SYS_clone3 as isize => ret,
        in("rdi") args as *const CloneArgs,
        in("rsi") std::mem::size_of::<CloneArgs>(),
        in("r12") child_arg,
        in("r13") child_main as *const () as usize,
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack),
    );
    ret
}

/// Elsewhere the child places itself (see `Spawner::clone3_into_cgroup`).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn raw_clone3(_args: &CloneArgs, _child_arg: *mut libc::c_void) -> isize {
    -(libc::ENOSYS as isize)
}

/// SIGKILL and reap a child we cannot watch.
pub fn reap_killed(pid: libc::pid_t) {
    // SAFETY: signals and reaps our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Copies everything the child reads into `slot` and points its `ChildArgs` at it.
fn fill(
    slot: &mut Slot,
    base: &BaseEnv,
    plan: &Plan<'_>,
    self_placed: Option<CgroupFds>,
    report: &ChildReport,
) -> Result<(), String> {
    let bytes = &mut slot.bytes;
    bytes.clear();
    // Offsets first: `bytes` may grow while being filled.
    let push = |bytes: &mut Vec<u8>, parts: &[&[u8]], what: &dyn Fn() -> String| {
        let at = bytes.len();
        for p in parts {
            if p.contains(&0) {
                return Err(format!("{} contains a NUL byte", what()));
            }
            bytes.extend_from_slice(p);
        }
        bytes.push(0);
        Ok(at)
    };
    let Some(program) = plan.argv.first() else {
        return Err("the command is empty".into());
    };
    if program.is_empty() {
        return Err("the command is empty".into());
    }
    let mut argv_at = Vec::with_capacity(plan.argv.len());
    for a in plan.argv {
        argv_at.push(push(bytes, &[a.as_bytes()], &|| {
            format!("command argument {a:?}")
        })?);
    }
    let mut env_at: Vec<(&[u8], usize)> = Vec::with_capacity(plan.env.len());
    for (k, v) in plan.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("invalid environment variable name {k:?}"));
        }
        let at = push(bytes, &[k.as_bytes(), b"=", v.as_bytes()], &|| {
            format!("environment variable {k}")
        })?;
        env_at.retain(|(name, _)| *name != k.as_bytes());
        env_at.push((k.as_bytes(), at));
    }
    let path_var: &[u8] = plan
        .env
        .iter()
        .rev()
        .find(|(k, _)| *k == "PATH")
        .map(|(_, v)| v.as_bytes())
        .or_else(|| base.get(b"PATH"))
        .unwrap_or(DEFAULT_PATH);
    let path_at = push(bytes, &[path_var], &|| "PATH".into())?;
    let cwd_at = push(bytes, &[plan.cwd.as_bytes()], &|| {
        "the working directory".into()
    })?;
    let job_dir_at = push(bytes, &[plan.job_dir.as_bytes()], &|| {
        "the job directory".into()
    })?;
    let cmd_sh_at = push(bytes, &[plan.cmd_sh_path.as_bytes()], &|| {
        "the cmd.sh path".into()
    })?;
    let text_at = bytes.len();
    bytes.extend_from_slice(plan.cmd_sh_text.as_bytes());
    let (stdout_at, stderr_at, stdin) = match plan.output {
        Output::Log { path, stdin } => (
            Some(push(bytes, &[path.as_bytes()], &|| "the log path".into())?),
            None,
            stdin,
        ),
        Output::Split {
            stdout,
            stderr,
            stdin,
        } => (
            Some(push(bytes, &[stdout.as_bytes()], &|| {
                "the log path".into()
            })?),
            Some(push(bytes, &[stderr.as_bytes()], &|| {
                "the log path".into()
            })?),
            stdin,
        ),
        Output::Inherit => (None, None, -1),
    };

    let base_ptr = bytes.as_ptr();
    let at = |offset: usize| -> *const libc::c_char {
        // SAFETY: every offset was taken inside `bytes`, which no longer grows.
        unsafe { base_ptr.add(offset) as *const libc::c_char }
    };
    let ptrs = &mut slot.ptrs;
    ptrs.clear();
    ptrs.extend(argv_at.iter().map(|&o| at(o)));
    ptrs.push(ptr::null());
    let envp_start = ptrs.len();
    for (k, kv) in &base.entries {
        if !env_at.iter().any(|(o, _)| *o == k.as_slice()) {
            ptrs.push(kv.as_ptr() as *const libc::c_char);
        }
    }
    ptrs.extend(env_at.iter().map(|&(_, o)| at(o)));
    ptrs.push(ptr::null());

    slot.args = ChildArgs {
        argv: ptrs.as_ptr(),
        // SAFETY: `envp_start` is inside `ptrs`.
        envp: unsafe { ptrs.as_ptr().add(envp_start) },
        program_has_slash: program.contains('/'),
        path: at(path_at) as *const u8,
        path_len: path_var.len(),
        cwd: at(cwd_at),
        job_dir: at(job_dir_at),
        cmd_sh: at(cmd_sh_at),
        cmd_sh_text: at(text_at) as *const u8,
        cmd_sh_len: plan.cmd_sh_text.len(),
        stdout_log: stdout_at.map_or(ptr::null(), at),
        stderr_log: stderr_at.map_or(ptr::null(), at),
        stdin,
        new_session: plan.grouping == Grouping::NewSession,
        cgroup_procs: self_placed.map_or(-1, |c| c.procs),
        report,
    };
    Ok(())
}

/// What the child needs, all raw.
#[repr(C)]
struct ChildArgs {
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    program_has_slash: bool,
    /// The directories to search for a program without `/` (the job's `PATH`).
    path: *const u8,
    path_len: usize,
    cwd: *const libc::c_char,
    job_dir: *const libc::c_char,
    cmd_sh: *const libc::c_char,
    cmd_sh_text: *const u8,
    cmd_sh_len: usize,
    /// NULL to inherit (interactive).
    stdout_log: *const libc::c_char,
    /// NULL: stderr goes where stdout goes.
    stderr_log: *const libc::c_char,
    /// -1 to inherit.
    stdin: RawFd,
    new_session: bool,
    cgroup_procs: RawFd,
    report: *const ChildReport,
}

impl ChildArgs {
    const EMPTY: ChildArgs = ChildArgs {
        argv: ptr::null(),
        envp: ptr::null(),
        program_has_slash: false,
        path: ptr::null(),
        path_len: 0,
        cwd: ptr::null(),
        job_dir: ptr::null(),
        cmd_sh: ptr::null(),
        cmd_sh_text: ptr::null(),
        cmd_sh_len: 0,
        stdout_log: ptr::null(),
        stderr_log: ptr::null(),
        stdin: -1,
        new_session: false,
        cgroup_procs: -1,
        report: ptr::null(),
    };
}

/// The child, between clone and exec: raw system calls only (see the module comment).
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the slot's ChildArgs, which stays untouched until we exec or exit;
    // every pointer in it is valid for as long (see `Spawner::spawn`).
    unsafe { child_steps(&*(arg as *const ChildArgs)) }
}

unsafe fn child_steps(a: &ChildArgs) -> ! {
    let fail = |step: SpawnStep, errno: syscalls::Errno| -> ! {
        let report = &*a.report;
        report.errno.store(errno.into_raw(), Ordering::Relaxed);
        report.step.store(step.code(), Ordering::Release);
        let _ = syscall!(Sysno::exit_group, 127);
        unreachable_exit()
    };
    // Every signal to its default action: the host's handlers must not run here (this
    // process shares the host's memory), and ignored signals (Rust ignores SIGPIPE) would
    // stay ignored across exec. The kernel's struct sigaction, all zero, is SIG_DFL.
    let dfl = [0u64; 4];
    for sig in 1..=64usize {
        if sig != libc::SIGKILL as usize && sig != libc::SIGSTOP as usize {
            let _ = syscall!(Sysno::rt_sigaction, sig, dfl.as_ptr(), 0, 8);
        }
    }
    let grouped = if a.new_session {
        syscall!(Sysno::setsid)
    } else {
        syscall!(Sysno::setpgid, 0, 0)
    };
    if let Err(e) = grouped {
        fail(SpawnStep::Setup, e);
    }
    // "0" moves the writing process itself.
    if a.cgroup_procs >= 0 {
        if let Err(e) = syscall!(Sysno::write, a.cgroup_procs, b"0".as_ptr(), 1) {
            fail(SpawnStep::Cgroup, e);
        }
    }
    match syscall!(Sysno::mkdirat, libc::AT_FDCWD, a.job_dir, 0o777) {
        Ok(_) => {}
        Err(e) if e.into_raw() == libc::EEXIST => {}
        Err(e) => fail(SpawnStep::JobDir, e),
    }
    if let Err(e) = write_file(a.cmd_sh, a.cmd_sh_text, a.cmd_sh_len) {
        fail(SpawnStep::CmdSh, e);
    }
    if !a.stdout_log.is_null() {
        // Truncated: a log is this attempt's evidence alone (the contract check tests it).
        let log_flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND | libc::O_CLOEXEC;
        let out = match syscall!(
            Sysno::openat,
            libc::AT_FDCWD,
            a.stdout_log,
            log_flags,
            0o666
        ) {
            Ok(fd) => fd as RawFd,
            Err(e) => fail(SpawnStep::StdoutLog, e),
        };
        let err = if a.stderr_log.is_null() {
            out
        } else {
            match syscall!(
                Sysno::openat,
                libc::AT_FDCWD,
                a.stderr_log,
                log_flags,
                0o666
            ) {
                Ok(fd) => fd as RawFd,
                Err(e) => fail(SpawnStep::StderrLog, e),
            }
        };
        // The opened fds close at exec, unless one already is its target (the host started
        // with that fd closed): then it stays open instead.
        for (fd, target) in [(a.stdin, 0), (out, 1), (err, 2)] {
            let installed = if fd == target {
                syscall!(Sysno::fcntl, fd, libc::F_SETFD, 0)
            } else {
                syscall!(Sysno::dup3, fd, target, 0)
            };
            if let Err(e) = installed {
                fail(SpawnStep::Setup, e);
            }
        }
    }
    if let Err(e) = syscall!(Sysno::chdir, a.cwd) {
        fail(SpawnStep::Chdir, e);
    }
    let empty = 0u64;
    let _ = syscall!(
        Sysno::rt_sigprocmask,
        libc::SIG_SETMASK,
        &empty as *const u64,
        0,
        8
    );
    let Err(e) = exec_program(a);
    fail(SpawnStep::Exec, e)
}

/// Never reached: exit_group does not return.
fn unreachable_exit() -> ! {
    loop {
        std::hint::spin_loop();
    }
}

/// Creates (or truncates) `path`, mode 0755, with `len` bytes from `text`.
unsafe fn write_file(
    path: *const libc::c_char,
    text: *const u8,
    len: usize,
) -> Result<(), syscalls::Errno> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
    let fd = syscall!(Sysno::openat, libc::AT_FDCWD, path, flags, 0o755)?;
    let mut done = 0;
    while done < len {
        match syscall!(Sysno::write, fd, text.add(done), len - done) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) => {
                let _ = syscall!(Sysno::close, fd);
                return Err(e);
            }
        }
    }
    syscall!(Sysno::close, fd).map(|_| ())
}

/// execve of argv[0], searched on the job's PATH like execvp when it has no `/`. Returns only
/// on failure: ENOENT when no directory has it, EACCES when one had it but not executable.
unsafe fn exec_program(a: &ChildArgs) -> Result<std::convert::Infallible, syscalls::Errno> {
    let program = *a.argv;
    if a.program_has_slash {
        return Err(syscall!(Sysno::execve, program, a.argv, a.envp).unwrap_err());
    }
    let name = CStr::from_ptr(program).to_bytes();
    let path = std::slice::from_raw_parts(a.path, a.path_len);
    let mut buf = [0u8; CHILD_PATH_MAX];
    let mut saw_eacces = false;
    for dir in path.split(|&b| b == b':') {
        // An empty entry is the working directory.
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let len = dir.len() + 1 + name.len();
        if len >= buf.len() {
            continue;
        }
        buf[..dir.len()].copy_from_slice(dir);
        buf[dir.len()] = b'/';
        buf[dir.len() + 1..len].copy_from_slice(name);
        buf[len] = 0;
        let e = syscall!(Sysno::execve, buf.as_ptr(), a.argv, a.envp).unwrap_err();
        match e.into_raw() {
            libc::EACCES => saw_eacces = true,
            // What execvp passes over: not in this directory.
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return Err(e),
        }
    }
    Err(syscalls::Errno::new(if saw_eacces {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

/// Opens a pidfd for `pid` (Linux 5.3+).
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open has no memory arguments; the returned fd is owned by us.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a fresh fd from the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}
