//! Building on an earlier run of the flow: `--resume` continues it in place, `--rerun-failed`
//! starts a new run directory. Either way the jobs that passed there with the same definition
//! (hash, see [`crate::journal::hash`]) count as passed without running; their records are the
//! earlier run's evidence, marked with where they come from (`reused_from` in results.json).
//! Everything else runs: jobs that failed, were killed, skipped or never ended (a local job
//! that died with its host), and every job whose definition, or that of anything it needs,
//! changed.
//!
//! Except, on `--resume`, a job that was still on a cluster when the host died: it outlives
//! its host by design, so it is re-attached, not run again ([`reattachable`]): its backend is
//! handed the native id the journal holds, and tracks the job to its end.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{outdir::job_dir_name, records::JobRecord, results::default_log};
use crate::{
    errors::Error,
    flow::Flow,
    journal::{Hash, Replay, JOURNAL_FILE},
    sched::Status,
};

/// How the run builds on an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continue {
    /// `--resume [RUN_DIR]`: the same directory, the journal continued.
    Resume(Option<PathBuf>),
    /// `--rerun-failed [RUN_DIR]`: a new directory.
    RerunFailed(Option<PathBuf>),
}

/// An earlier run, read from its journal.
pub struct Earlier {
    /// Its directory (absolute).
    pub dir: PathBuf,
    /// Its journal.
    pub replay: Replay,
}

/// The flow's `latest` run directory (where `--resume` and `--rerun-failed` look by default).
pub fn latest_of(flow: &str) -> PathBuf {
    PathBuf::from("flowrun-out")
        .join(&*job_dir_name(flow))
        .join("latest")
}

/// Reads the earlier run in `dir` (or the flow's latest), refusing one of another flow.
pub fn read(flow: &Flow, dir: Option<&Path>) -> Result<Earlier, Error> {
    let dir = dir.map_or_else(|| latest_of(&flow.name), Path::to_path_buf);
    let dir = dir.canonicalize().map_err(|e| {
        Error::Output(format!(
            "{}: no earlier run to build on: {e}; give its directory (flowrun run FLOW --resume RUN_DIR)",
            dir.display()
        ))
    })?;
    let replay = Replay::read(&dir.join(JOURNAL_FILE)).map_err(|e| {
        Error::Output(format!(
            "{e}; the run cannot be continued (it was run without a journal, or is not a run directory)"
        ))
    })?;
    if replay.first.flow != flow.name {
        return Err(Error::Output(format!(
            "{}: it holds a run of flow `{}`, not `{}`",
            dir.display(),
            replay.first.flow,
            flow.name
        )));
    }
    Ok(Earlier { dir, replay })
}

/// The earlier run's jobs by name: their index in its job table.
fn by_name(r: &Replay) -> HashMap<&str, usize> {
    r.jobs
        .iter()
        .enumerate()
        .map(|(i, e)| (e.0.as_str(), i))
        .collect()
}

/// The jobs of `flow` (with definition hashes `hashes`) that passed in `earlier` with the
/// same definition, each with the record to carry over.
pub fn reusable(flow: &Flow, hashes: &[Hash], earlier: &Earlier) -> Vec<(u32, JobRecord)> {
    let r = &earlier.replay;
    let old = by_name(r);
    let from: Box<str> = format!("{} (run {})", earlier.dir.display(), r.last.run_tag).into();
    let mut out = Vec::new();
    for (j, (job, hash)) in flow.jobs.iter().zip(hashes).enumerate() {
        let Some(&o) = old.get(job.name.as_str()) else {
            continue;
        };
        let state = &r.state[o];
        if state.status != Status::Passed || &r.jobs[o].1 != hash {
            continue;
        }
        let mut rec = state.record.clone();
        let has_dir = rec.has_dir;
        let x = rec.extra_mut();
        if x.reused_from.is_none() {
            x.reused_from = Some(from.clone());
        }
        if x.logs.is_empty() && has_dir {
            x.logs.push(default_log(&r.first.run_dir, &job.name).into());
        }
        out.push((j as u32, rec));
    }
    out
}

/// A job of the earlier run to re-attach: it was handed to its backend (and maybe started)
/// and never ended, and the backend gave it a native id.
#[derive(Debug, Clone, PartialEq)]
pub struct Reattach {
    /// The job (index in the flow).
    pub job: u32,
    /// The id the backend gave it.
    pub native_id: Arc<str>,
    /// Its record so far (the attempt it is on, its earlier attempts, times).
    pub record: JobRecord,
}

/// `--resume`: the jobs of `flow` that were submitted but had not ended when the earlier host
/// stopped, have a native id, an unchanged definition (so the same backend, command and
/// dependencies), and a backend that can re-attach (`can_reattach`, per backend instance of
/// `flow`). Local jobs died with their host (and their backend cannot re-attach): they are
/// not among them and run again.
pub fn reattachable(
    flow: &Flow,
    hashes: &[Hash],
    earlier: &Earlier,
    can_reattach: &[bool],
) -> Vec<Reattach> {
    let r = &earlier.replay;
    if !can_reattach.iter().any(|&c| c) {
        return Vec::new();
    }
    let old = by_name(r);
    let mut out = Vec::new();
    for (j, (job, hash)) in flow.jobs.iter().zip(hashes).enumerate() {
        if !can_reattach.get(job.backend).copied().unwrap_or(false) {
            continue;
        }
        let Some(&o) = old.get(job.name.as_str()) else {
            continue;
        };
        let state = &r.state[o];
        if state.status != Status::Running || &r.jobs[o].1 != hash || state.record.attempt == 0 {
            continue;
        }
        let Some(native_id) = state
            .record
            .extra
            .as_ref()
            .and_then(|x| x.native_id.clone())
        else {
            continue;
        };
        out.push(Reattach {
            job: j as u32,
            native_id,
            record: state.record.clone(),
        });
    }
    out
}

/// `--dry-run` with `--resume` or `--rerun-failed`: which jobs would run and how many count as
/// passed already.
pub fn plan(flow: &Flow, how: &Continue) -> Result<String, Error> {
    let (Continue::Resume(d) | Continue::RerunFailed(d)) = how;
    let earlier = read(flow, d.as_deref())?;
    let hashes = crate::journal::definition_hashes(flow);
    let mut reused = vec![false; flow.jobs.len()];
    for (j, _) in reusable(flow, &hashes, &earlier) {
        reused[j as usize] = true;
    }
    // Which backends can re-attach is only known once they are created: name the id, and
    // let the run decide.
    let mut on_backend: Vec<Option<Arc<str>>> = vec![None; flow.jobs.len()];
    for r in reattachable(flow, &hashes, &earlier, &vec![true; flow.backends.len()]) {
        on_backend[r.job as usize] = Some(r.native_id);
    }
    let n = reused.iter().filter(|&&r| r).count();
    let mut s = format!(
        "{}: {} of {} jobs passed there unchanged and are not rerun; {} would run:\n",
        earlier.dir.display(),
        n,
        flow.jobs.len(),
        flow.jobs.len() - n
    );
    for ((job, r), native) in flow.jobs.iter().zip(&reused).zip(&on_backend) {
        if !r {
            s.push_str("  ");
            s.push_str(&job.name);
            if let Some(id) = native {
                s.push_str(&format!(
                    " (on its backend as {id} when the run stopped: re-attached if the backend can)"
                ));
            }
            s.push('\n');
        }
    }
    Ok(s)
}
