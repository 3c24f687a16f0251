//! Starting one job process with `posix_spawn(3)`.
//!
//! Why not `std::process::Command`: a new *session* (setsid) needs `pre_exec`, which makes std
//! fall back from posix_spawn to fork+exec, and fork copies the page tables of the whole host
//! process (measured in the README). Like glibc's posix_spawn, [`spawn`] uses
//! `clone(CLONE_VM|CLONE_VFORK)`: the spawn path never copies the host's memory.

use std::{
    collections::HashMap,
    ffi::{CStr, CString, OsStr},
    io,
    os::{fd::RawFd, unix::ffi::OsStrExt},
    ptr,
};

/// Variables removed from the host's environment: a parent make's jobserver confuses the
/// nested makes of jobs.
pub const REMOVED_VARS: [&str; 3] = ["MAKEFLAGS", "MFLAGS", "MAKELEVEL"];

/// The host environment every job starts from, captured once per backend.
pub struct BaseEnv {
    /// `(name, "NAME=value")`.
    entries: Vec<(Vec<u8>, CString)>,
}

impl BaseEnv {
    /// The current process environment minus [`REMOVED_VARS`].
    pub fn capture() -> BaseEnv {
        let entries = std::env::vars_os()
            .filter(|(k, _)| !REMOVED_VARS.iter().any(|r| OsStr::new(r) == k))
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                // The OS environment cannot hold NUL bytes, but be safe.
                CString::new(kv).ok().map(|c| (k.as_bytes().to_vec(), c))
            })
            .collect();
        BaseEnv { entries }
    }

    /// The value of `name` in the base environment.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k == name)
            .map(|(k, kv)| &kv.as_bytes()[k.len() + 1..])
    }
}

/// A job's full environment: the base entries not overridden, then the job's own.
pub struct JobEnv<'a> {
    base: &'a BaseEnv,
    own: Vec<(Vec<u8>, CString)>,
}

impl<'a> JobEnv<'a> {
    /// Starts from `base`.
    pub fn new(base: &'a BaseEnv) -> Self {
        JobEnv {
            base,
            own: Vec::with_capacity(8),
        }
    }

    /// Sets `name` (a later set of the same name wins).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(format!("invalid environment variable name {name:?}"));
        }
        let kv = CString::new(format!("{name}={value}"))
            .map_err(|_| format!("environment variable {name} contains a NUL byte"))?;
        self.own.retain(|(k, _)| k != name.as_bytes());
        self.own.push((name.as_bytes().to_vec(), kv));
        Ok(())
    }

    /// The value of `name`, the job's own first.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        match self.own.iter().find(|(k, _)| k == name) {
            Some((k, kv)) => Some(&kv.as_bytes()[k.len() + 1..]),
            None => self.base.get(name),
        }
    }

    /// The NULL-terminated `envp` array. Borrows from `self`.
    pub fn envp(&self) -> Vec<*const libc::c_char> {
        let mut envp = Vec::with_capacity(self.base.entries.len() + self.own.len() + 1);
        for (k, kv) in &self.base.entries {
            if !self.own.iter().any(|(o, _)| o == k) {
                envp.push(kv.as_ptr());
            }
        }
        envp.extend(self.own.iter().map(|(_, kv)| kv.as_ptr()));
        envp.push(ptr::null());
        envp
    }
}

/// Where the child's standard streams come from.
pub enum Stdio {
    /// Use these descriptors as fds 0, 1 and 2.
    Files {
        stdin: RawFd,
        stdout: RawFd,
        stderr: RawFd,
    },
    /// Keep the host's fds 0, 1 and 2 (interactive jobs).
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

/// Finds `program` the way execvp does, but on the job's `PATH` rather than the host's.
/// A name containing `/` is returned as is (relative to the job's cwd).
pub fn resolve_program(program: &str, path_var: Option<&[u8]>) -> Option<CString> {
    if program.contains('/') {
        return CString::new(program).ok();
    }
    if program.is_empty() {
        return None;
    }
    let path_var = path_var.unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
    for dir in path_var.split(|&b| b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let mut candidate = Vec::with_capacity(dir.len() + program.len() + 2);
        candidate.extend_from_slice(dir);
        candidate.push(b'/');
        candidate.extend_from_slice(program.as_bytes());
        let Ok(c) = CString::new(candidate) else {
            continue;
        };
        if is_executable_file(&c) {
            return Some(c);
        }
    }
    None
}

/// Remembers where each program was found on each `PATH`, like a shell's command hash: a
/// flow runs the same few programs thousands of times, and searching `PATH` was ten calls
/// per job. A remembered path is used while it is still an executable file (the search's own
/// check, two calls); otherwise `PATH` is searched again. As in a shell, a program installed later into an
/// *earlier* `PATH` directory than the remembered one is not seen; a program not found is
/// never remembered.
#[derive(Default)]
pub struct ProgramCache {
    by_path_var: std::sync::Mutex<HashMap<Vec<u8>, HashMap<String, CString>>>,
}

impl ProgramCache {
    /// `resolve_program`, remembering what it finds.
    pub fn resolve(&self, program: &str, path_var: Option<&[u8]>) -> Option<CString> {
        if program.contains('/') {
            return resolve_program(program, path_var);
        }
        // No PATH at all (the default search path) is keyed by a NUL, which no PATH holds.
        let key = path_var.unwrap_or(b"\0");
        let cached = self
            .lock()
            .get(key)
            .and_then(|programs| programs.get(program))
            .cloned();
        if let Some(found) = cached {
            if is_executable_file(&found) {
                return Some(found);
            }
        }
        let found = resolve_program(program, path_var)?;
        self.lock()
            .entry(key.to_vec())
            .or_default()
            .insert(program.to_string(), found.clone());
        Some(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, HashMap<String, CString>>> {
        self.by_path_var.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn is_executable_file(path: &CStr) -> bool {
    // SAFETY: plain syscalls on a valid NUL-terminated path and a zeroed stat buffer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::stat(path.as_ptr(), &mut st) == 0
            && (st.st_mode & libc::S_IFMT) == libc::S_IFREG
            && libc::access(path.as_ptr(), libc::X_OK) == 0
    }
}

/// What to start: `program` with `argv` and `envp` (both NULL-terminated) in `cwd`, optionally
/// into the cgroup whose `cgroup.procs` is open as `cgroup_procs`.
#[derive(Clone, Copy)]
pub struct Launch<'a> {
    pub program: &'a CStr,
    pub argv: &'a [*const libc::c_char],
    pub envp: &'a [*const libc::c_char],
    pub cwd: &'a CStr,
    pub stdio: &'a Stdio,
    pub grouping: Grouping,
    pub cgroup_procs: Option<RawFd>,
}

/// Starts `launch` and returns the pid.
///
/// This is what glibc's posix_spawn does (a `clone(CLONE_VM|CLONE_VFORK)` child on its own
/// stack that sets itself up and execs; the parent resumes once it has), plus one step
/// posix_spawn cannot do: the child moves *itself* into the job's cgroup before exec, so no
/// process of the job ever runs outside it (placing the pid after posix_spawn returns lets a
/// job that forks at once leave children behind; glibc 2.39's `pidfd_spawn` with
/// `posix_spawnattr_setcgroup_np` would do the same, but this system has glibc 2.36).
/// Failures of the child's steps (cgroup, chdir, exec) come back as the error, with the step.
pub fn spawn(launch: &Launch<'_>, stack: &mut [u8]) -> Result<libc::pid_t, SpawnError> {
    let Launch {
        program,
        argv,
        envp,
        cwd,
        stdio,
        grouping,
        cgroup_procs,
    } = *launch;
    debug_assert!(argv.last() == Some(&ptr::null()) && envp.last() == Some(&ptr::null()));
    let args = ChildArgs {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        stdio: match *stdio {
            Stdio::Files {
                stdin,
                stdout,
                stderr,
            } => [stdin, stdout, stderr],
            Stdio::Inherit => [-1, -1, -1],
        },
        new_session: grouping == Grouping::NewSession,
        cgroup_procs: cgroup_procs.unwrap_or(-1),
        failed_step: 0,
        errno: 0,
    };
    // The child shares our memory and runs on `stack` (it grows down: pass the aligned top).
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: every signal is blocked around clone so that no handler of ours runs in the
    // child before it resets them; `args` and `stack` outlive the child's use of them (the
    // parent is suspended until the child execs or exits, CLONE_VFORK); the child function
    // only makes async-signal-safe calls.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        );
        let clone_errno = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        if pid < 0 {
            return Err(SpawnError {
                step: SpawnStep::Clone,
                error: clone_errno,
            });
        }
        let failed_step = ptr::read_volatile(&args.failed_step);
        if failed_step != 0 {
            let errno = ptr::read_volatile(&args.errno);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            let step = match failed_step {
                STEP_CGROUP => SpawnStep::Cgroup,
                STEP_CHDIR => SpawnStep::Chdir,
                STEP_SETUP => SpawnStep::Setup,
                _ => SpawnStep::Exec,
            };
            return Err(SpawnError {
                step,
                error: io::Error::from_raw_os_error(errno),
            });
        }
        Ok(pid)
    }
}

/// Which step of starting a job failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnStep {
    Clone,
    Setup,
    Cgroup,
    Chdir,
    Exec,
}

/// A failed spawn.
#[derive(Debug)]
pub struct SpawnError {
    pub step: SpawnStep,
    pub error: io::Error,
}

const STEP_SETUP: i32 = 1;
const STEP_CGROUP: i32 = 2;
const STEP_CHDIR: i32 = 3;
const STEP_EXEC: i32 = 4;

/// What the child needs, all raw: it must not allocate or take locks.
#[repr(C)]
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    /// stdin, stdout, stderr; -1 to inherit.
    stdio: [RawFd; 3],
    new_session: bool,
    cgroup_procs: RawFd,
    /// Written by the child when a step fails (shared memory).
    failed_step: i32,
    errno: i32,
}

/// The child, between clone and exec. Only async-signal-safe libc calls; no allocation, no
/// panics, no Rust std.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive while the parent is suspended.
    unsafe {
        let args = arg as *mut ChildArgs;
        let fail = |step: i32| -> libc::c_int {
            ptr::write_volatile(&mut (*args).errno, *libc::__errno_location());
            ptr::write_volatile(&mut (*args).failed_step, step);
            libc::_exit(127)
        };
        // Every signal to its default action: the host's handlers must not run here, and
        // ignored signals (Rust ignores SIGPIPE) would stay ignored across exec.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        // 1..=64 covers every Linux signal; invalid ones (glibc's internal) just fail.
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, ptr::null_mut());
            }
        }
        let ok = if (*args).new_session {
            libc::setsid() >= 0
        } else {
            libc::setpgid(0, 0) == 0
        };
        if !ok {
            return fail(STEP_SETUP);
        }
        // "0" moves the writing process itself.
        if (*args).cgroup_procs >= 0
            && libc::write(
                (*args).cgroup_procs,
                b"0".as_ptr() as *const libc::c_void,
                1,
            ) != 1
        {
            return fail(STEP_CGROUP);
        }
        for (target, &fd) in (*args).stdio.iter().enumerate() {
            if fd >= 0 && libc::dup2(fd, target as libc::c_int) < 0 {
                return fail(STEP_SETUP);
            }
        }
        if libc::chdir((*args).cwd) != 0 {
            return fail(STEP_CHDIR);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
        libc::execve((*args).program, (*args).argv, (*args).envp);
        fail(STEP_EXEC)
    }
}

/// The classic posix_spawn path (new session, no cgroup placement), kept to measure against
/// [`spawn`]; see the README's spawn-cost table.
#[cfg(test)]
#[allow(dead_code)]
pub fn posix_spawn(
    program: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    cwd: &CStr,
    stdio: &Stdio,
) -> io::Result<libc::pid_t> {
    // SAFETY: the attr and file-action objects are initialised before use and destroyed on
    // every path; every pointer passed outlives the call.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        check(libc::posix_spawnattr_init(&mut attr))?;
        let flags = libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF
            | libc::POSIX_SPAWN_SETSID as libc::c_int;
        check(libc::posix_spawnattr_setflags(
            &mut attr,
            flags as libc::c_short,
        ))?;
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        check(libc::posix_spawnattr_setsigmask(&mut attr, &set))?;
        libc::sigfillset(&mut set);
        check(libc::posix_spawnattr_setsigdefault(&mut attr, &set))?;
        if let Stdio::Files {
            stdin,
            stdout,
            stderr,
        } = *stdio
        {
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                stdin,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                stdout,
                1,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                stderr,
                2,
            ))?;
        }
        check(libc::posix_spawn_file_actions_addchdir_np(
            &mut actions,
            cwd.as_ptr(),
        ))?;
        let mut pid: libc::pid_t = 0;
        let rc = libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            &actions,
            &attr,
            argv.as_ptr() as *const *mut libc::c_char,
            envp.as_ptr() as *const *mut libc::c_char,
        );
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        check(rc)?;
        Ok(pid)
    }
}

#[cfg(test)]
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Opens a pidfd for `pid` (Linux 5.3+).
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open has no memory arguments; the returned fd is owned by us.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a fresh fd from the kernel.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
    }
}
