//! The host side of the `clone` spawn path (`spawn = "clone"`, the default): a
//! `clone(CLONE_VM)` child that sets itself up and execs ([`super::fenced::child`]).
//!
//! Invariants I1 to I12 and the checklist for editing: `docs/design/local-spawn.md`.
//!
//! Why not `std::process::Command` or `posix_spawn`: a new *session* (setsid) needs `pre_exec`,
//! which makes std fall back to fork+exec, and fork copies the page tables of the whole host
//! process (measured in the README); posix_spawn cannot move the child into a cgroup before
//! it runs (glibc 2.39's `pidfd_spawn` can, this system has 2.36). `spawn = "std"` is that
//! plain path, for comparison and as a fallback ([`super::std_path`]).
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
//! is written to the job's [`ChildReport`] and read when the job's process is reaped.

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd, RawFd},
    ptr::{self, NonNull},
    sync::atomic::{AtomicBool, AtomicI32, Ordering},
};

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
use parking_lot::Mutex;

use super::{
    fenced::child::{child_main, ChildArgs},
    watchable, BaseEnv, CgroupFds, ChildReport, Containment, Grouping, Output, Plan, SpawnError,
    SpawnStep, Spawned, DEFAULT_PATH,
};

/// The child's stack between clone and exec (I7). It makes raw system calls only; the
/// largest frame is the PATH search's 4 KiB path buffer.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// A child stack from `mmap`, with a `PROT_NONE` guard page below it (I6): a child that
/// overflows its stack faults instead of writing over the host's memory.
struct ChildStack {
    /// The start of the mapping (the guard page).
    map: NonNull<u8>,
    /// The whole mapping: guard page plus stack.
    map_len: usize,
    guard_len: usize,
}

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| usize::try_from(p).ok())
            .unwrap_or(4096);
        let map_len = CHILD_STACK_BYTES + page;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack {
            map: NonNull::new(map.cast())
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?,
            map_len,
            guard_len: page,
        };
        // SAFETY: the first page of the mapping made above; nothing uses it yet.
        if unsafe { libc::mprotect(map, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error()); // `stack` unmaps on drop
        }
        Ok(stack)
    }

    /// The lowest usable address (just above the guard page).
    fn low(&self) -> *mut u8 {
        // SAFETY: `guard_len < map_len`: the result is inside the mapping.
        unsafe { self.map.as_ptr().add(self.guard_len) }
    }

    /// The usable size.
    fn len(&self) -> usize {
        self.map_len - self.guard_len
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    fn top(&self) -> *mut u8 {
        let end = self.map.as_ptr() as usize + self.map_len;
        (end & !15) as *mut u8
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no child runs on it (a busy
        // slot is leaked, never dropped: I2).
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// The stack and data of one child between clone and exec, reused once it is handed back.
struct Slot {
    /// 1 while a child runs on this slot; the kernel writes 0 when the child execs or exits.
    busy: AtomicI32,
    stack: ChildStack,
    /// Every string the child reads, NUL-terminated.
    bytes: Vec<u8>,
    /// argv then envp, each NULL-terminated.
    ptrs: Vec<*const libc::c_char>,
    args: ChildArgs,
}

/// Starts jobs' processes with `clone(CLONE_VM)`; owns the slots their children run on.
pub struct CloneSpawner {
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
// owned here; a slot is only touched under the mutex and while no child uses it (I2).
unsafe impl Send for CloneSpawner {}
// SAFETY: as above.
unsafe impl Sync for CloneSpawner {}

impl CloneSpawner {
    pub fn new(base: BaseEnv) -> CloneSpawner {
        CloneSpawner {
            base,
            slots: Mutex::new(Vec::new()),
            clone3_into_cgroup: AtomicBool::new(cfg!(target_arch = "x86_64")),
        }
    }

    /// A spawner whose children place themselves in their cgroup, as on kernels without
    /// `CLONE_INTO_CGROUP`.
    #[cfg(test)]
    pub fn without_clone3(self) -> CloneSpawner {
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
        let mut slots = self.slots.lock();
        let i = match slots
            .iter()
            .position(|s| s.busy.load(Ordering::Acquire) == 0)
        {
            Some(i) => i,
            None => {
                let stack = ChildStack::new().map_err(|error| SpawnError::Step {
                    step: SpawnStep::Clone,
                    error,
                })?;
                slots.push(Box::new(Slot {
                    busy: AtomicI32::new(0),
                    stack,
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
        let wait = plan.wait_for_exec || self_placed.is_some();
        fill(slot, &self.base, plan, self_placed, !wait, &report).map_err(SpawnError::Invalid)?;

        let mut flags = libc::CLONE_VM | libc::CLONE_PIDFD | libc::CLONE_CHILD_CLEARTID;
        if wait {
            flags |= libc::CLONE_VFORK;
        }
        let mut pidfd: libc::c_int = -1;
        slot.busy.store(1, Ordering::Release);
        // (I5) Every signal blocked around clone, so that no handler of ours runs in the
        // child before it resets them.
        let mut old = SigSet::empty();
        let _ = pthread_sigmask(
            SigmaskHow::SIG_SETMASK,
            Some(&SigSet::all()),
            Some(&mut old),
        );
        // SAFETY: (I1, I2) the child reads only its slot (not touched until the kernel clears
        // `busy`) and the base environment (immutable, owned by `self`, which outlives every
        // child: the backend reaps all before it is dropped, and `Drop` leaks busy slots); it
        // writes only its report (owned by the job until it is reaped) and its own stack
        // (I6); it makes raw system calls only (I3).
        let result = unsafe {
            match into_cgroup {
                Some(cgroup) => clone3_into_cgroup(slot, flags, cgroup.dir, &mut pidfd),
                None => clone_child(slot, flags, &mut pidfd),
            }
        };
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        let pid = match result {
            Ok(pid) => pid,
            Err(error) => {
                slot.busy.store(0, Ordering::Release);
                // What clone3 refuses beyond clone's own reasons (no memory, no pids
                // left) is the placement, or clone3 itself: `spawn` tells which.
                let clone_reason = matches!(
                    error.raw_os_error(),
                    Some(
                        libc::EAGAIN
                            | libc::ENOMEM
                            | libc::ENOSPC
                            | libc::EINTR
                            | libc::EMFILE
                            | libc::ENFILE
                    )
                );
                let step = if into_cgroup.is_some() && !clone_reason {
                    SpawnStep::Cgroup
                } else {
                    SpawnStep::Clone
                };
                return Err(SpawnError::Step { step, error });
            }
        };
        drop(slots);
        let pidfd = if pidfd >= 0 {
            // SAFETY: a fresh fd from the kernel, ours alone.
            unsafe { OwnedFd::from_raw_fd(pidfd) }
        } else {
            // A kernel older than 5.2 ignores CLONE_PIDFD.
            watchable(pid)?
        };
        if wait {
            if let Some(failure) = report.failure() {
                // It has exited (it failed before exec, and CLONE_VFORK waited for that).
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                return Err(failure);
            }
        }
        Ok(Spawned {
            pid,
            pidfd,
            report,
            containment: if plan.cgroup.is_some() {
                Containment::Born
            } else {
                Containment::None
            },
        })
    }
}

impl Drop for CloneSpawner {
    fn drop(&mut self) {
        // (I2) A child still on its slot (stuck before exec, for example in a hung
        // filesystem) would write into freed memory when it ends: leak such slots instead.
        let slots = std::mem::take(self.slots.get_mut());
        for slot in slots {
            if slot.busy.load(Ordering::Acquire) != 0 {
                std::mem::forget(slot);
            }
        }
    }
}

/// `clone(2)` of a child running `child_main` on the slot's stack.
///
/// # Safety
/// Signals blocked (I5); the slot filled by [`fill`] and marked busy (I2).
unsafe fn clone_child(
    slot: &mut Slot,
    flags: libc::c_int,
    pidfd: &mut libc::c_int,
) -> io::Result<libc::pid_t> {
    // SAFETY: per this function's contract; the stack top is the mapping's aligned end, the
    // child's argument is the slot's ChildArgs, and the kernel clears `busy` at exec or exit.
    let pid = unsafe {
        libc::clone(
            child_main,
            slot.stack.top().cast(),
            flags | libc::SIGCHLD,
            &slot.args as *const ChildArgs as *mut libc::c_void,
            pidfd as *mut libc::c_int,
            ptr::null_mut::<libc::c_void>(),
            slot.busy.as_ptr(),
        )
    };
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
/// `cgroup.procs` cost ~70 us per job). glibc 2.36 does not export clone3, and a child on a
/// new stack needs the few instructions of [`raw_clone3`].
///
/// # Safety
/// As [`clone_child`].
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
        // clone3 takes the lowest address and the size; the guard page is below it (I6).
        stack: slot.stack.low() as u64,
        stack_size: (slot.stack.len() & !15) as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup_dir as u64,
    };
    let child_arg = &slot.args as *const ChildArgs as *mut libc::c_void;
    // SAFETY: per this function's contract; `args` describes the slot's stack and busy word.
    let ret = unsafe { raw_clone3(&args, child_arg) };
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as libc::pid_t)
    }
}

/// The clone3 system call; the child calls `child_main(child_arg)` on its new stack and
/// exits with its result (I8: it never returns into host code).
///
/// # Safety
/// As [`clone_child`].
#[cfg(target_arch = "x86_64")]
unsafe fn raw_clone3(args: &CloneArgs, child_arg: *mut libc::c_void) -> isize {
    let ret: isize;
    // SAFETY: the parent side is a plain system call; the child side runs `child_main` on
    // the stack given in `args` and never returns from the asm block (exit_group, then ud2).
    unsafe {
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
    }
    ret
}

/// Elsewhere the child places itself (see `CloneSpawner::clone3_into_cgroup`).
///
/// # Safety
/// None needed; it does nothing.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn raw_clone3(_args: &CloneArgs, _child_arg: *mut libc::c_void) -> isize {
    -(libc::ENOSYS as isize)
}

/// Copies everything the child reads into `slot` and points its `ChildArgs` at it.
fn fill(
    slot: &mut Slot,
    base: &BaseEnv,
    plan: &Plan<'_>,
    self_placed: Option<CgroupFds>,
    retry_shortages: bool,
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
        retry_shortages,
        report,
    };
    Ok(())
}
