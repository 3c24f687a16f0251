//! The `std` spawn path (`spawn = "std"`): plain `std::process::Command` (posix_spawn, the
//! host thread waits for the exec) with a process group of its own, the job's files created
//! by the host, and best-effort cgroup placement after the start.
//!
//! What it gives up against the `clone` path (see the README): the job is in flowrun's
//! session (a process group of its own, so Ctrl-C at the terminal still reaches flowrun
//! only); a child the job forks before the host has moved it into its cgroup stays outside
//! the cgroup (it is still found by process group and tag); and the host does the job's file
//! work (directory, `cmd.sh`, log) on its own thread.

use std::{
    fs,
    io::{self, Write},
    os::unix::{
        ffi::OsStrExt,
        fs::{OpenOptionsExt, PermissionsExt},
        process::CommandExt,
    },
    process::{Command, Stdio},
};

use super::{
    watchable, BaseEnv, ChildReport, Containment, Output, Plan, SpawnError, SpawnStep, Spawned,
    DEFAULT_PATH,
};

/// Starts jobs with `std::process::Command`.
pub struct StdSpawner {
    base: BaseEnv,
}

fn step(step: SpawnStep) -> impl FnOnce(io::Error) -> SpawnError {
    move |error| SpawnError::Step { step, error }
}

impl StdSpawner {
    pub fn new(base: BaseEnv) -> StdSpawner {
        StdSpawner { base }
    }

    pub fn spawn(&self, plan: &Plan<'_>) -> Result<Spawned, SpawnError> {
        let Some((program, args)) = plan.argv.split_first() else {
            return Err(SpawnError::Invalid("the command is empty".into()));
        };
        if program.is_empty() {
            return Err(SpawnError::Invalid("the command is empty".into()));
        }
        for (k, _) in plan.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(SpawnError::Invalid(format!(
                    "invalid environment variable name {k:?}"
                )));
            }
        }
        match fs::create_dir(plan.job_dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(SpawnError::Step {
                    step: SpawnStep::JobDir,
                    error: e,
                })
            }
            _ => {}
        }
        write_cmd_sh(plan.cmd_sh_path, plan.cmd_sh_text).map_err(step(SpawnStep::CmdSh))?;
        // The working directory is checked here: posix_spawn's error would not say whether
        // the directory or the program is missing.
        match fs::metadata(plan.cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(step(SpawnStep::Chdir)(io::Error::from_raw_os_error(
                    libc::ENOTDIR,
                )))
            }
            Err(e) => return Err(step(SpawnStep::Chdir)(e)),
        }

        // The program is looked up here, on the job's PATH: given a program to look up on a
        // PATH other than flowrun's own, std falls back from posix_spawn to fork+exec, which
        // copies the host's page tables (measured: 2 ms of host CPU per job instead of 0.1).
        let path_var = plan
            .env
            .iter()
            .rev()
            .find(|(k, _)| *k == "PATH")
            .map(|(_, v)| v.as_bytes())
            .or_else(|| self.base.get(b"PATH"))
            .unwrap_or(DEFAULT_PATH);
        let program = resolve(program, path_var, plan.cwd).map_err(step(SpawnStep::Exec))?;
        let mut cmd = Command::new(&program);
        cmd.args(args.iter())
            .current_dir(plan.cwd)
            .env_clear()
            .process_group(0);
        for (k, v) in self.base.pairs() {
            cmd.env(
                std::ffi::OsStr::from_bytes(k),
                std::ffi::OsStr::from_bytes(v),
            );
        }
        cmd.envs(plan.env.iter().map(|(k, v)| (k, v)));
        match plan.output {
            Output::Inherit => {}
            Output::Log { path, .. } => {
                let log = open_log(path).map_err(step(SpawnStep::StdoutLog))?;
                let err = log.try_clone().map_err(step(SpawnStep::StdoutLog))?;
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::from(log))
                    .stderr(Stdio::from(err));
            }
            Output::Split { stdout, stderr, .. } => {
                let out = open_log(stdout).map_err(step(SpawnStep::StdoutLog))?;
                let err = open_log(stderr).map_err(step(SpawnStep::StderrLog))?;
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::from(out))
                    .stderr(Stdio::from(err));
            }
        }
        let child = cmd.spawn().map_err(|error| SpawnError::Step {
            step: if super::is_resource_errno(error.raw_os_error()) {
                SpawnStep::Clone
            } else {
                SpawnStep::Exec
            },
            error,
        })?;
        let pid = child.id() as libc::pid_t;
        // Reaped by the backend with wait4 (the Child is not waited for, and dropping it
        // neither kills nor reaps).
        drop(child);
        let pidfd = watchable(pid)?;
        // Best effort: the job may already have forked children, which stay outside.
        let containment = match plan.cgroup {
            Some(cgroup) if place(cgroup.procs, pid).is_ok() => Containment::Placed,
            _ => Containment::None,
        };
        Ok(Spawned {
            pid,
            pidfd,
            report: Box::<ChildReport>::default(),
            containment,
        })
    }
}

/// `program` as execvp would find it: as is when it contains `/`, else the first
/// executable `DIR/program` of `path` (an empty entry is the working directory; relative
/// entries are relative to `cwd`). ENOENT when none has it, EACCES when one had it but not
/// executable.
fn resolve(program: &str, path: &[u8], cwd: &str) -> io::Result<std::path::PathBuf> {
    use std::path::{Path, PathBuf};
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let mut saw_eacces = false;
    for dir in path.split(|&b| b == b':') {
        let dir = Path::new(std::ffi::OsStr::from_bytes(if dir.is_empty() {
            b"."
        } else {
            dir
        }));
        let candidate = Path::new(cwd).join(dir).join(program);
        match nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK) {
            Ok(()) if candidate.is_file() => return Ok(candidate),
            Ok(()) => saw_eacces = true, // a directory of that name
            Err(nix::errno::Errno::EACCES) => saw_eacces |= candidate.exists(),
            Err(_) => {}
        }
    }
    Err(io::Error::from_raw_os_error(if saw_eacces {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

/// Writes the pid to an open `cgroup.procs`.
fn place(procs: std::os::fd::RawFd, pid: libc::pid_t) -> io::Result<()> {
    // SAFETY: borrows an fd the job's cgroup keeps open for the whole call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(procs) };
    let text = pid.to_string();
    let n = nix::unistd::write(fd, text.as_bytes()).map_err(io::Error::from)?;
    if n == text.len() {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
}

/// The job's log, created or truncated (never appended to an older file).
fn open_log(path: &str) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        // Appending, as on the clone path: the job's writers do not overwrite each other.
        .custom_flags(libc::O_APPEND | libc::O_CLOEXEC)
        .open(path)
}

fn write_cmd_sh(path: &str, text: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    // An existing cmd.sh keeps its mode through O_TRUNC.
    f.set_permissions(fs::Permissions::from_mode(0o755))
}
