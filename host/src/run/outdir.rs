//! The run's output directory: where it is, that it holds this run only, and the job
//! directories inside it.
//!
//! * `--out DIR` must not exist or be empty: a directory that holds anything (a previous run's
//!   results and logs) is refused, so that no job is ever judged on an older run's lines. The
//!   default is a new `flowrun-out/<flow>/<timestamp>` directory, created atomically (a
//!   concurrent run gets `<timestamp>-1`), with `flowrun-out/<flow>/latest` pointing at it.
//! * A lock (`DIR/.flowrun.lock`, flock) refuses a second run into the same directory while
//!   the first one runs; it is removed when the run ends.
//! * Job directories are `DIR/jobs/<name>`, with the name encoded one-to-one into a single
//!   path component ([`job_dir_name`]).
//! * The directory is created only once every backend and observer is created: a run that
//!   fails before any job starts leaves no directory behind and does not move `latest`.

use std::{
    fs::File,
    io::{ErrorKind, Write},
    path::{Path, PathBuf},
};

pub use flowrun_plugin_sdk::run_dir::job_dir_name;
use nix::fcntl::{Flock, FlockArg};

use crate::errors::Error;

/// The lock file inside the run directory.
pub const LOCK_FILE: &str = ".flowrun.lock";

/// The run's directory, locked for this run.
pub struct OutDir {
    /// The directory (absolute).
    pub path: PathBuf,
    lock: Option<Flock<File>>,
}

impl OutDir {
    /// Removes the lock file and unlocks: the run is over.
    pub fn release(mut self) {
        let _ = std::fs::remove_file(self.path.join(LOCK_FILE));
        drop(self.lock.take());
    }
}

fn output_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Output(format!("{}: {what}: {e}", path.display()))
}

/// What a directory holds besides the lock file, or an error reading it.
fn previous_contents(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| output_error(dir, "cannot read the output directory", e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK_FILE)
        .collect();
    names.sort();
    Ok(names)
}

fn refuse_previous_run(dir: &Path, names: &[String]) -> Error {
    let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
    let more = if names.len() > 3 { ", ..." } else { "" };
    Error::Output(format!(
        "{}: the output directory is not empty (it holds {}{more}): a run never mixes its logs \
         and results with another's; remove it or choose another --out",
        dir.display(),
        shown.join(", ")
    ))
}

/// Refuses `--out DIR` early (before any plugin is loaded) when it cannot hold a new run.
pub fn check_out(out: &Path) -> Result<(), Error> {
    match std::fs::metadata(out) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(output_error(out, "cannot use the output directory", e)),
        Ok(m) if !m.is_dir() => Err(Error::Output(format!(
            "{}: cannot use the output directory: not a directory",
            out.display()
        ))),
        Ok(_) => {
            let names = previous_contents(out)?;
            if names.is_empty() {
                Ok(())
            } else {
                Err(refuse_previous_run(out, &names))
            }
        }
    }
}

/// Creates (or takes the empty) output directory, locks it and creates `jobs/` in it.
/// `flow` names the default directory when `out` is `None`.
pub fn create(flow: &str, out: Option<&Path>) -> Result<OutDir, Error> {
    let (dir, latest) = match out {
        Some(out) => {
            check_out(out)?;
            std::fs::create_dir_all(out)
                .map_err(|e| output_error(out, "cannot create the output directory", e))?;
            (out.to_path_buf(), None)
        }
        None => {
            let base = PathBuf::from("flowrun-out").join(&*job_dir_name(flow));
            std::fs::create_dir_all(&base)
                .map_err(|e| output_error(&base, "cannot create the output directory", e))?;
            let dir = new_timestamped(&base)?;
            let name = dir.file_name().map(|n| n.to_os_string());
            (dir, name.map(|n| (base, n)))
        }
    };
    let lock = lock(&dir, false)?;
    let names = previous_contents(&dir)?;
    if !names.is_empty() {
        // Another run got in between the first look and the lock.
        return Err(refuse_previous_run(&dir, &names));
    }
    let jobs = dir.join("jobs");
    std::fs::create_dir(&jobs).map_err(|e| output_error(&jobs, "cannot create", e))?;
    let path = dir
        .canonicalize()
        .map_err(|e| output_error(&dir, "cannot resolve the output directory", e))?;
    if let Some((base, name)) = latest {
        update_latest(&base, &name);
    }
    Ok(OutDir {
        path,
        lock: Some(lock),
    })
}

/// Takes an earlier run's directory again to continue it (`--resume`): locks it (refusing a
/// directory whose host still runs) and keeps what it holds.
pub fn reopen(dir: &Path) -> Result<OutDir, Error> {
    let lock = lock(dir, true)?;
    let jobs = dir.join("jobs");
    std::fs::create_dir_all(&jobs).map_err(|e| output_error(&jobs, "cannot create", e))?;
    let path = dir
        .canonicalize()
        .map_err(|e| output_error(dir, "cannot resolve the output directory", e))?;
    Ok(OutDir {
        path,
        lock: Some(lock),
    })
}

/// `base/<UTC timestamp>`, or `-1`, `-2`, ... when taken: `create_dir` is atomic, so two runs
/// never share one.
fn new_timestamped(base: &Path) -> Result<PathBuf, Error> {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let mut n = 0;
    loop {
        let dir = match n {
            0 => base.join(&stamp),
            n => base.join(format!("{stamp}-{n}")),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(output_error(&dir, "cannot create the output directory", e)),
        }
    }
}

/// Takes the run's lock, writing flowrun's pid (the one the user started) into it; `resuming`:
/// for `--resume` (which has no `--out` to choose instead).
fn lock(dir: &Path, resuming: bool) -> Result<Flock<File>, Error> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| output_error(&path, "cannot create the run's lock", e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            let _ = locked.set_len(0);
            let _ = writeln!(locked, "{}", crate::supervise::flowrun_pid());
            Ok(locked)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            // The holder empties the file before it writes its pid: read again for a moment
            // rather than print an empty pid (seen with two `--resume` at once).
            let mut pid = String::new();
            for _ in 0..10 {
                pid = std::fs::read_to_string(&path).unwrap_or_default();
                if !pid.trim().is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let who = match pid.trim() {
                "" => "another flowrun".to_string(),
                pid => format!("another flowrun (pid {pid})"),
            };
            Err(Error::Output(format!(
                "{}: {who} is running into this output directory; wait for it{}",
                dir.display(),
                if resuming {
                    ""
                } else {
                    " or choose another --out"
                }
            )))
        }
        Err((_, e)) => Err(output_error(&path, "cannot lock", e)),
    }
}

/// Points `base/latest` at `name`, atomically; never replaces anything but a symlink.
fn update_latest(base: &Path, name: &std::ffi::OsStr) {
    let link = base.join("latest");
    match std::fs::symlink_metadata(&link) {
        Ok(m) if !m.file_type().is_symlink() => {
            tracing::warn!(
                "not updating {}: it is not a symlink (flowrun never replaces it)",
                link.display()
            );
            return;
        }
        _ => {}
    }
    let tmp = base.join(format!(".latest.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    // A failure here is cosmetic: the run's directory is printed at the end.
    if let Err(e) =
        std::os::unix::fs::symlink(name, &tmp).and_then(|()| std::fs::rename(&tmp, &link))
    {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!("cannot update {}: {e}", link.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_dir_holding_anything_is_refused_and_a_locked_one_too() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let first = create("f", Some(&out)).unwrap();
        // Locked by the first run.
        std::fs::remove_dir(out.join("jobs")).unwrap();
        match create("f", Some(&out)) {
            Err(Error::Output(m)) => assert!(m.contains("another flowrun"), "{m}"),
            other => panic!("{:?}", other.err()),
        }
        std::fs::write(out.join("results.json"), "{}").unwrap();
        first.release();
        match create("f", Some(&out)) {
            Err(Error::Output(m)) => {
                assert!(m.contains("not empty") && m.contains("results.json"), "{m}")
            }
            other => panic!("{:?}", other.err()),
        }
        // An empty directory is fine; a file is not a directory.
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        create("f", Some(&empty)).unwrap().release();
        assert!(!empty.join(LOCK_FILE).exists(), "the lock goes at the end");
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(check_out(&file), Err(Error::Output(_))));
    }
}
