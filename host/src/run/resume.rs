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
    sched::{Reason, Status},
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
            "{e}; the run cannot be continued (it was run without a journal, by a flowrun of \
             another journal format, or is not a run directory)"
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

/// `--resume` continues the run's journal in place: one it cannot write is refused before
/// anything starts. (Run on, the resumed run would record nothing: `flowrun status` would
/// show the earlier host's unfinished run, and a later `--resume` would redo this run's work.)
pub fn check_journal_writable(earlier: &Earlier) -> Result<(), Error> {
    let path = earlier.dir.join(JOURNAL_FILE);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map(drop)
        .map_err(|e| {
            Error::Output(format!(
                "{}: cannot write the journal of the run to continue: {e}; a resumed run records \
                 every job there: make it writable, or start a new run from it with \
                 --rerun-failed {}",
                path.display(),
                earlier.dir.display()
            ))
        })
}

/// The jobs of `flow` (with definition hashes `hashes`) that passed in `earlier` with the
/// same definition and every job they need reused too ([`with_reused_needs`]), each with the
/// record to carry over.
pub fn reusable(flow: &Flow, hashes: &[Hash], earlier: &Earlier) -> Vec<(u32, JobRecord)> {
    let from = earlier.label();
    let mut passed: Vec<Option<usize>> = vec![None; flow.jobs.len()];
    for (j, o) in earlier.unchanged(flow, hashes) {
        if earlier.replay.state[o].status == Status::Passed {
            passed[j as usize] = Some(o);
        }
    }
    let keep = with_reused_needs(flow, passed.iter().map(Option::is_some).collect());
    passed
        .iter()
        .zip(&keep)
        .enumerate()
        .filter_map(|(j, (o, &k))| {
            let o = (*o).filter(|_| k)?;
            Some((
                j as u32,
                earlier.carried_record(o, &flow.jobs[j].name, &from),
            ))
        })
        .collect()
}

/// Of the jobs marked in `candidates` (passed earlier, unchanged), those whose every
/// dependency is a kept candidate too, transitively. A pass is evidence of the dependencies'
/// ends it ran after: a `when = "always"` (or `"any_passed"`) job that passed after a failed
/// dependency has no verdict for a run in which that dependency runs again, and a cleanup or
/// report job must run after it. (An `all_passed` job that passed had every dependency pass,
/// so with an unchanged definition they are candidates as well; this only ever drops jobs
/// that ran after something that does not count as passed now.)
pub fn with_reused_needs(flow: &Flow, mut candidates: Vec<bool>) -> Vec<bool> {
    let n = flow.jobs.len();
    // Dependents by job, as offsets into one array (a million jobs: no Vec per job).
    let mut off = vec![0u32; n + 1];
    for job in &flow.jobs {
        for &d in &job.needs {
            off[d as usize + 1] += 1;
        }
    }
    for i in 0..n {
        off[i + 1] += off[i];
    }
    let mut fill = off.clone();
    let mut dependents = vec![0u32; off[n] as usize];
    for (j, job) in flow.jobs.iter().enumerate() {
        for &d in &job.needs {
            dependents[fill[d as usize] as usize] = j as u32;
            fill[d as usize] += 1;
        }
    }
    drop(fill);
    let mut dropped: Vec<u32> = (0..n as u32).filter(|&j| !candidates[j as usize]).collect();
    while let Some(j) = dropped.pop() {
        let (lo, hi) = (off[j as usize] as usize, off[j as usize + 1] as usize);
        for &d in &dependents[lo..hi] {
            if std::mem::take(&mut candidates[d as usize]) {
                dropped.push(d);
            }
        }
    }
    candidates
}

/// `--resume`: the jobs that run again unchanged after attempts of theirs ended in the earlier
/// run (a retry was due, or the next attempt died with the host), each with a record holding
/// those attempts and their count, so that the attempt numbers (and `FLOWRUN_ATTEMPT`, and the
/// logs) continue where they were and results.json lists every attempt. An attempt that died
/// with its host left no verdict: it runs again under its number, as a job's only attempt
/// would.
pub fn attempts_so_far(flow: &Flow, hashes: &[Hash], earlier: &Earlier) -> Vec<(u32, JobRecord)> {
    let mut out = Vec::new();
    for (j, o) in earlier.unchanged(flow, hashes) {
        let state = &earlier.replay.state[o];
        let ended = state.record.earlier();
        if state.status.is_terminal() || ended.is_empty() {
            continue;
        }
        let mut rec = JobRecord {
            attempt: ended.len() as u32,
            ..JobRecord::default()
        };
        rec.extra_mut().earlier = ended.to_vec();
        out.push((j, rec));
    }
    out
}

impl Earlier {
    /// The earlier run's jobs by name: their index in its journal.
    fn index(&self) -> HashMap<&str, usize> {
        let jobs = self.replay.jobs.iter().enumerate();
        jobs.map(|(i, e)| (e.0.as_str(), i)).collect()
    }

    /// The jobs of `flow` (index, and index in the earlier run) whose definition hash there
    /// is `hashes`' (so also of every job they need).
    fn unchanged<'a>(
        &'a self,
        flow: &'a Flow,
        hashes: &'a [Hash],
    ) -> impl Iterator<Item = (u32, usize)> + 'a {
        let old = self.index();
        let jobs = flow.jobs.iter().zip(hashes).enumerate();
        jobs.filter_map(move |(j, (job, hash))| {
            let o = *old.get(job.name.as_str())?;
            (&self.replay.jobs[o].1 == hash).then_some((j as u32, o))
        })
    }

    /// How results.json names this run in `reused_from`: "DIR (run TAG)".
    fn label(&self) -> Box<str> {
        format!("{} (run {})", self.dir.display(), self.replay.last.run_tag).into()
    }

    /// The record of job `o` of the earlier run, carried into this one: marked with where it
    /// comes from, its log pointing into the earlier run's directory.
    fn carried_record(&self, o: usize, name: &str, from: &str) -> JobRecord {
        let mut rec = self.replay.state[o].record.clone();
        let has_dir = rec.has_dir;
        let x = rec.extra_mut();
        if x.reused_from.is_none() {
            x.reused_from = Some(from.into());
        }
        if x.logs.is_empty() && has_dir {
            x.logs
                .push(default_log(&self.replay.first.run_dir, name).into());
        }
        rec
    }
}

/// How a job that `--no-deps` does not run ended in the earlier run, fed to the core.
pub enum Given {
    /// It passed there, with the same definition ([`crate::sched::Input::Reused`]).
    Passed,
    /// It failed, was killed or skipped there, for this reason
    /// ([`crate::sched::Input::Carried`]): its dependents are skipped as after that end here.
    Ended(Status, Reason),
}

/// `--no-deps`: the jobs `given` (indices into `flow`, the dependencies of the selected jobs)
/// are not run; each takes its end in `earlier` as given, with that run's record. A job that
/// has no end there to take (it is not in that run, never ended there, or its definition or
/// that of something it needs changed since) is an error naming it: its result would be a
/// guess.
pub fn given(
    flow: &Flow,
    hashes: &[Hash],
    earlier: &Earlier,
    given: &[u32],
) -> Result<Vec<(u32, JobRecord, Given)>, Error> {
    let r = &earlier.replay;
    let old = earlier.index();
    let from = earlier.label();
    let mut out = Vec::with_capacity(given.len());
    let mut problems = Vec::new();
    for &j in given {
        let name = flow.jobs[j as usize].name.as_str();
        let problem = match old.get(name) {
            None => Some("is not in that run"),
            Some(&o) if r.jobs[o].1 != hashes[j as usize] => {
                Some("changed since (its definition or that of a job it needs)")
            }
            Some(&o) => {
                let state = &r.state[o];
                let end = match (state.status, &state.reason) {
                    (Status::Passed, _) => Some(Given::Passed),
                    (st, Some(reason)) if st.is_terminal() => {
                        Some(Given::Ended(st, (**reason).clone()))
                    }
                    _ => None,
                };
                match end {
                    Some(end) => {
                        out.push((j, earlier.carried_record(o, name, &from), end));
                        None
                    }
                    None => Some("never ended there"),
                }
            }
        };
        if let Some(p) = problem {
            problems.push(format!("`{name}` {p}"));
        }
    }
    if problems.is_empty() {
        return Ok(out);
    }
    let shown = problems.len().min(5);
    let more = match problems.len() - shown {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    };
    Err(Error::Output(format!(
        "--no-deps takes the results of the jobs the selected ones need from {}, but {}{more}; \
         run them too (add them to --only), or drop --no-deps",
        earlier.dir.display(),
        problems[..shown].join(", ")
    )))
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
///
/// Nor are jobs that need one that runs again (not in `reused`, by job): a `when = "always"`
/// job that was running after a failed dependency must run again after that dependency's
/// rerun, as a reused pass must ([`with_reused_needs`]).
pub fn reattachable(
    flow: &Flow,
    hashes: &[Hash],
    earlier: &Earlier,
    can_reattach: &[bool],
    reused: &[bool],
) -> Vec<Reattach> {
    if !can_reattach.iter().any(|&c| c) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (j, o) in earlier.unchanged(flow, hashes) {
        let job = &flow.jobs[j as usize];
        if !can_reattach.get(job.backend).copied().unwrap_or(false) || needs_a_rerun(job, reused) {
            continue;
        }
        let state = &earlier.replay.state[o];
        let Some(native_id) = on_backend_when_stopped(state) else {
            continue;
        };
        out.push(Reattach {
            job: j,
            native_id,
            record: state.record.clone(),
        });
    }
    out
}

/// A job the earlier host left on its backend (submitted or started, never ended, with a
/// native id) that this run does not re-attach.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftBehind {
    /// The job (index in the flow).
    pub job: u32,
    /// The id the backend gave it; `None`: the host died before the backend named the job
    /// (a cluster backend's submission may have reached the cluster all the same).
    pub native_id: Option<Arc<str>>,
    /// Its record there, on the attempt it was on (with the attempts before it).
    pub record: JobRecord,
    /// Why it is not re-attached (for its lost attempt's reason).
    pub why: &'static str,
}

/// Whether a job that `job` needs is not among the `reused` ones (it runs again).
fn needs_a_rerun(job: &crate::flow::Job, reused: &[bool]) -> bool {
    job.needs
        .iter()
        .any(|&d| !reused.get(d as usize).copied().unwrap_or(false))
}

/// `--resume`: the jobs of `flow` that were on their backend with a native id when the earlier
/// host stopped and are not re-attached (`reattached`, by job: the job's definition changed,
/// a job it needs runs again, or its backend cannot re-attach), and those handed to a backend
/// that can re-attach (`can_reattach`, per backend instance: a cluster's) before it named them. Such a job may still run on its cluster, writing the log
/// of the attempt it was on: its next attempt must be a new one with its own log, never that
/// attempt again (whose log the old job may still write into, mixing its lines into the new
/// attempt's verdict), and the attempt it was on is recorded lost.
pub fn left_on_backend(
    flow: &Flow,
    earlier: &Earlier,
    hashes: &[Hash],
    reattached: &[bool],
    reused: &[bool],
    can_reattach: &[bool],
) -> Vec<LeftBehind> {
    let old = earlier.index();
    let mut out = Vec::new();
    for (j, job) in flow.jobs.iter().enumerate() {
        if reattached.get(j).copied().unwrap_or(false) {
            continue;
        }
        let Some(&o) = old.get(job.name.as_str()) else {
            continue;
        };
        let state = &earlier.replay.state[o];
        let native_id = on_backend_when_stopped(state);
        // Handed to a backend whose jobs outlive their host, never named: the submission may
        // have reached the cluster, and that job would write this attempt's log.
        let unnamed_on_cluster = state.status == Status::Running
            && state.record.attempt > 0
            && native_id.is_none()
            && can_reattach.get(job.backend).copied().unwrap_or(false);
        if native_id.is_none() && !unnamed_on_cluster {
            continue;
        }
        out.push(LeftBehind {
            job: j as u32,
            native_id,
            record: state.record.clone(),
            why: if unnamed_on_cluster {
                "the backend had not named it yet, so it cannot be re-attached"
            } else if earlier.replay.jobs[o].1 != hashes[j] {
                "its definition (or that of a job it needs) changed since, so it is not \
                 re-attached"
            } else if needs_a_rerun(job, reused) {
                "a job it needs runs again, so it is not re-attached"
            } else {
                "its backend cannot re-attach jobs"
            },
        });
    }
    out
}

/// The native id of a job the earlier host had handed to its backend (and maybe seen start)
/// and never saw end: it may still be on its cluster.
fn on_backend_when_stopped(state: &crate::journal::JobState) -> Option<Arc<str>> {
    if state.status != Status::Running || state.record.attempt == 0 {
        return None;
    }
    state.record.extra.as_ref()?.native_id.clone()
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
    for r in reattachable(
        flow,
        &hashes,
        &earlier,
        &vec![true; flow.backends.len()],
        &reused,
    ) {
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

/// `--dry-run` with `--only GLOB --no-deps`: which jobs would run, and the end of each needed
/// job that would be taken from the earlier run (refused as a real run would be).
pub fn plan_no_deps(flow: &Flow, how: &Option<Continue>, needed: &[u32]) -> Result<String, Error> {
    let dir = match how {
        Some(Continue::Resume(d) | Continue::RerunFailed(d)) => d.as_deref(),
        None => None,
    };
    let earlier = read(flow, dir)?;
    let hashes = crate::journal::definition_hashes(flow);
    let taken = given(flow, &hashes, &earlier, needed)?;
    let mut reused = vec![false; flow.jobs.len()];
    if how.is_some() {
        for (j, _) in reusable(flow, &hashes, &earlier) {
            reused[j as usize] = true;
        }
    }
    let mut s = format!(
        "{}: {} needed job(s) not run, their ends taken from there:\n",
        earlier.dir.display(),
        taken.len()
    );
    for (j, _, end) in &taken {
        reused[*j as usize] = true;
        let end = match end {
            Given::Passed => "passed".to_string(),
            Given::Ended(st, reason) => format!("{}: {reason}", st.name()),
        };
        s.push_str(&format!("  {} ({end})\n", flow.jobs[*j as usize].name));
    }
    let run: Vec<&str> = flow
        .jobs
        .iter()
        .zip(&reused)
        .filter(|(_, r)| !**r)
        .map(|(j, _)| j.name.as_str())
        .collect();
    s.push_str(&format!("{} would run:\n", run.len()));
    for name in run {
        s.push_str(&format!("  {name}\n"));
    }
    Ok(s)
}
