//! `flowrun status [RUN_DIR] [--json] [--watch]`: what a running or finished run's journal
//! says, from another shell. It only reads: the journal, and the run's lock to tell whether
//! the host is alive (a shared `flock` attempt on a read-only descriptor, which writes
//! nothing).

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::fcntl::{Flock, FlockArg};
use serde_json::{json, Value};

use super::Replay;
use crate::{errors::Error, run::outdir::LOCK_FILE, sched::Status};

/// Whether the host that runs (ran) the run directory `dir` is alive, and its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// It holds the run's lock.
    Alive(u32),
    /// The lock is left behind by a host that died (pid as it wrote it), or the run released it.
    Gone(Option<u32>),
}

/// Looks at the run's lock without writing anything.
pub fn host_of(dir: &Path) -> Host {
    let path = dir.join(LOCK_FILE);
    let Ok(file) = File::open(&path) else {
        return Host::Gone(None);
    };
    let pid = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse().ok());
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_shared) => Host::Gone(pid),
        Err(_) => Host::Alive(pid.unwrap_or(0)),
    }
}

/// The run directory `status` looks at when none is given: the only flow's `latest` under
/// `flowrun-out` in the current directory.
pub fn default_run_dir() -> Result<PathBuf, Error> {
    let base = Path::new("flowrun-out");
    let mut latest: Vec<PathBuf> = std::fs::read_dir(base)
        .map_err(|e| Error::Output(format!("{}: {e}: give the run directory", base.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("latest"))
        .filter(|p| p.exists())
        .collect();
    match latest.len() {
        1 => Ok(latest.remove(0)),
        0 => Err(Error::Output(format!(
            "{}: no run found: give the run directory",
            base.display()
        ))),
        _ => Err(Error::Output(format!(
            "{}: runs of several flows: give the run directory",
            base.display()
        ))),
    }
}

fn read(dir: &Path) -> Result<Replay, Error> {
    Replay::read(&dir.join(super::JOURNAL_FILE)).map_err(Error::Output)
}

/// The status as JSON: counts, the host, and every job that is running or did not pass.
pub fn to_json(dir: &Path, r: &Replay, host: Host, now_us: i64) -> Value {
    let counts: serde_json::Map<String, Value> = Status::ALL
        .iter()
        .zip(r.counts())
        .map(|(s, n)| (s.name().to_string(), json!(n)))
        .collect();
    let backend = |b: u32| {
        r.last
            .backends
            .get(b as usize)
            .map_or("", |b| b.name.as_str())
    };
    let mut jobs = Vec::new();
    for (entry, s) in r.jobs.iter().zip(&r.state) {
        let rec = &s.record;
        let native = rec.extra.as_deref().and_then(|x| x.native_id.as_deref());
        let shown = matches!(
            s.status,
            Status::Running | Status::Failed | Status::Killed | Status::Skipped
        );
        if !shown {
            continue;
        }
        let running_s = (s.status == Status::Running && rec.started_at > 0)
            .then(|| (now_us - rec.started_at).max(0) as f64 / 1e6);
        jobs.push(json!({
            "name": entry.0,
            "status": s.status.name(),
            "reason": s.reason.as_deref().map(|x| x.to_string()),
            "reason_kind": s.reason.as_deref().map(|x| x.kind()),
            "backend": backend(entry.2),
            "native_id": native,
            "attempt": rec.attempt,
            "started": s.started,
            "running_s": running_s,
        }));
    }
    let (alive, pid) = match host {
        Host::Alive(p) => (true, Some(p)),
        Host::Gone(p) => (false, p),
    };
    json!({
        "run_dir": dir.to_string_lossy(),
        "flow": r.first.flow,
        "run_tag": r.first.run_tag,
        "segments": r.segments,
        "finished": r.finished(),
        "host_alive": alive,
        "host_pid": pid,
        "jobs_total": r.state.len(),
        "counts": counts,
        "jobs": jobs,
        "torn_tail": !matches!(r.tail, super::codec::Tail::Clean),
    })
}

fn text(v: &Value) -> String {
    let mut s = String::new();
    let host = match (v["host_alive"].as_bool(), v["finished"].as_bool()) {
        (Some(true), _) => format!("host pid {} alive", v["host_pid"]),
        (_, Some(true)) => "finished".to_string(),
        _ => format!(
            "host {} not running: the run did not finish (flowrun run --resume continues it)",
            v["host_pid"]
        ),
    };
    s.push_str(&format!(
        "{}: flow {}, {} jobs, {}\n",
        v["run_dir"].as_str().unwrap_or(""),
        v["flow"].as_str().unwrap_or(""),
        v["jobs_total"],
        host
    ));
    let counts: Vec<String> = Status::ALL
        .iter()
        .map(|st| format!("{} {}", st.name(), v["counts"][st.name()]))
        .collect();
    s.push_str(&format!("  {}\n", counts.join(", ")));
    let host_alive = v["host_alive"].as_bool() == Some(true);
    for j in v["jobs"].as_array().into_iter().flatten() {
        let name = j["name"].as_str().unwrap_or("");
        let backend = j["backend"].as_str().unwrap_or("");
        if j["status"] == "running" {
            let id = j["native_id"]
                .as_str()
                .map(|i| format!(" {i}"))
                .unwrap_or_default();
            if host_alive {
                let for_s = j["running_s"]
                    .as_f64()
                    .map(|t| format!(" for {t:.1}s"))
                    .unwrap_or_default();
                s.push_str(&format!("  running  {name}  [{backend}{id}]{for_s}\n"));
            } else {
                // Nobody watches it now: a local job died with its host, a cluster job may
                // still run; a resume finds out.
                s.push_str(&format!(
                    "  was running  {name}  [{backend}{id}] when its host stopped\n"
                ));
            }
        } else {
            s.push_str(&format!(
                "  {:<8} {name}: {}\n",
                j["status"].as_str().unwrap_or(""),
                j["reason"].as_str().unwrap_or("")
            ));
        }
    }
    s
}

/// Prints the status of the run in `dir` (or the default), once or following it with
/// `watch` until the run finished or its host is gone.
pub fn status(dir: Option<&Path>, json: bool, watch: bool) -> Result<i32, Error> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => default_run_dir()?,
    };
    let path = dir.join(super::JOURNAL_FILE);
    let mut r = read(&dir)?;
    loop {
        let host = host_of(&dir);
        let v = to_json(&dir, &r, host, crate::run::results::now_us());
        if json {
            crate::cli::print_out(format_args!("{v}\n"));
        } else {
            crate::cli::print_out(text(&v));
        }
        if !watch || r.finished() || !matches!(host, Host::Alive(_)) {
            return Ok(crate::errors::EXIT_PASSED);
        }
        std::thread::sleep(Duration::from_secs(1));
        r.follow(&path).map_err(Error::Output)?;
    }
}
