//! The run loop: a thin async driver around the pure scheduler core. It owns no rule: it
//! carries the core's actions to the backends, the backends' events (and signals, timers, log
//! verdicts) back to the core, and records what results.json and the observers need.
//!
//! Its parts, in the order of a run:
//! - [`setup`]: creating every backend and observer the flow uses (all errors at once);
//! - [`outdir`]: the run's directory (fresh, locked) and the job directories in it;
//! - [`drive`]: the loop itself, over any [`crate::backend::Backend`] (plugins in flowrun,
//!   in-process doubles in its tests);
//! - [`records`]: what is recorded of each job, in one place; [`results`]: results.json;
//! - `summary`: the end of the run: results, observers, summary, bounded shutdowns, exit
//!   code.
//!
//! Threads: the loop runs on a current-thread tokio runtime and calls backends' submit and kill
//! inline (they return promptly by contract; see `driver`). Backends report from their own
//! threads through a channel into the loop. Log scans run on tokio's blocking pool. Each
//! plugin observer has its own thread (see `crate::observe`). Shutdowns run on threads.

pub mod drive;
mod driver;
pub mod outdir;
pub mod records;
pub mod results;
pub mod resume;
pub mod setup;
mod summary;

#[cfg(test)]
mod tests;

use std::{path::PathBuf, time::Duration};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::sched::Reason;
use crate::{
    backend::RunContext,
    display::{Display, DisplayOptions, DEFAULT_STATUS_INTERVAL},
    errors::Error,
    flow::Flow,
    journal::{self, Journal, RunStart},
    observe::Phases,
    plugins::PluginSet,
    sched::{BackendSpec, Interrupt, SchedSpec, Scheduler, SchedulerApi},
};
use drive::{RunState, Signals};
use driver::MAX_CALL_BATCH;
use results::now_us;
use setup::{InstanceFactory, PluginFactory};

/// Options of `flowrun run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--out DIR`; default `flowrun-out/<flow>/<timestamp>` with a `latest` link.
    pub out: Option<PathBuf>,
    /// `-j N`: the number of jobs at once; overrides `[flow] max_parallel` and raises a
    /// backend's default cap (an explicit `max_parallel` of a backend still wins).
    pub max_parallel: Option<u32>,
    /// `--observer KIND`: observer instances with an empty config.
    pub observers: Vec<String>,
    /// Print only the summary.
    pub quiet: bool,
    /// `--kill-margin`: the host's margin on a backend's deadlines (default
    /// [`SchedSpec::DEFAULT_MARGIN`]).
    pub kill_margin: Option<Duration>,
    /// The phases before the run (loading the flow), for the RUN_STARTED event.
    pub phases: Phases,
    /// `--resume` or `--rerun-failed`: the earlier run this one builds on.
    pub continue_from: Option<resume::Continue>,
    /// `--only ... --no-deps`: the jobs not to run (those the selected ones need); each takes
    /// its end in the earlier run (`--rerun-failed RUN_DIR`, else the flow's `latest`) as
    /// given ([`resume::given`]).
    pub no_deps: Option<Vec<u32>>,
    /// `--max-fail N` (`--fail-fast`: 1).
    pub max_fail: Option<u32>,
    /// `--wait`: after `--max-fail`, running jobs finish.
    pub max_fail_wait: bool,
    /// `--status-interval`: without a terminal, a progress line this often (zero: on every
    /// change); `None`: the default.
    pub status_interval: Option<Duration>,
}

/// What a run ended with.
#[derive(Debug)]
pub struct RunReport {
    /// The documented exit code.
    pub exit_code: i32,
    /// results.json.
    pub results: PathBuf,
    /// Whether results.json was written.
    pub results_written: bool,
}

/// A backend's kill grace when its table does not say (`kill_grace = "..."`, the convention of
/// the bundled backends).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// How long `check` waits for the backends it created to shut down.
const CHECK_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Runs a validated flow to the end. Creates backends and observers through `plugins`.
pub fn run(flow: Flow, plugins: &mut PluginSet, opts: &RunOptions) -> Result<RunReport, Error> {
    run_with(flow, &mut PluginFactory(plugins), opts, None)
}

/// `flowrun check` and `--dry-run`: creates every backend and observer the flow uses, so that
/// every config error (with file, line and key) and every plugin check shows now; then shuts
/// them down. Starts nothing and creates no directory.
pub fn check(flow: &Flow, plugins: &mut PluginSet, observers: &[String]) -> Result<(), Error> {
    let (sender, _events) = drive::channel();
    let specs = setup::observer_specs(flow, observers);
    let instances = setup::create(flow, &mut PluginFactory(plugins), &specs, sender)?;
    instances.shutdown(CHECK_SHUTDOWN_WAIT);
    Ok(())
}

/// The kill grace of a backend instance: its table's `kill_grace`, when that is a duration.
fn kill_grace(config_toml: &str) -> Duration {
    toml::from_str::<toml::Table>(config_toml)
        .ok()
        .and_then(|t| {
            t.get("kill_grace")
                .and_then(|v| v.as_str())
                .and_then(|s| crate::flow::parse_duration(s).ok())
        })
        .unwrap_or(DEFAULT_KILL_GRACE)
}

/// Starts the run's journal: its identity and the job table. A journal that cannot be created
/// costs the run its crash safety, not its jobs: one warning, and the run goes on.
/// `resumed` is the journal of the run this one continues in place.
fn open_journal(
    state: &RunState,
    hashes: &[journal::Hash],
    resumed: Option<&journal::Replay>,
) -> Option<Journal> {
    let t = std::time::Instant::now();
    let flow = &state.flow;
    let start = RunStart {
        segment: resumed.map_or(0, |r| r.segments),
        mode: if resumed.is_some() {
            journal::Mode::Resume
        } else {
            journal::Mode::New
        },
        started_us: state.started_us,
        pid: std::process::id(),
        supervisor_pid: crate::supervise::parent_pid(),
        flow: flow.name.clone(),
        flow_file: flow.file.to_string_lossy().into_owned(),
        run_dir: state.ctx.run_dir_text.clone(),
        run_tag: state.ctx.run_tag.clone(),
        flow_hash: journal::flow_hash(flow, hashes),
        jobs: flow.jobs.len() as u32,
        backends: flow
            .backends
            .iter()
            .map(|b| journal::BackendInfo {
                name: b.name.clone(),
                kind: b.kind.clone(),
            })
            .collect(),
    };
    let table = flow
        .jobs
        .iter()
        .zip(hashes)
        .map(|(j, h)| (j.name.as_str(), h, j.backend as u32));
    let opened = match resumed {
        None => Journal::create(&state.ctx.run_dir, &start, table),
        Some(r) => Journal::reopen(
            &state.ctx.run_dir.join(journal::JOURNAL_FILE),
            r.valid_len,
            &start,
            table,
        ),
    };
    match opened {
        Ok(j) => {
            tracing::info!("journal started: {:.3} s", t.elapsed().as_secs_f64());
            Some(j)
        }
        Err(e) => {
            tracing::warn!(
                "cannot create the journal in {}: {e}; the run goes on without one (it cannot be resumed)",
                state.ctx.run_dir.display()
            );
            None
        }
    }
}

/// The run's tag, `flowrun-<flow>-<pid>-<random>`: cluster backends name the run's jobs with
/// it and, when a run is interrupted or a submission's outcome is unknown, cancel by it. So it
/// must be unique to the run, not only to the process: the same flow run by the same pid
/// happens (another login node; pid reuse while a resumed run keeps its first tag), and a
/// shared tag would let one run's Ctrl-C cancel the other's healthy jobs.
fn run_tag(flow: &str) -> String {
    use std::hash::BuildHasher;
    let name = flow.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    // 40 random bits, in base 36: the standard library seeds RandomState from the OS, and
    // each one made differs from the last (two runs in one process get two tags).
    let mut bits = std::collections::hash_map::RandomState::new().hash_one(()) >> 24;
    let mut suffix = [0u8; 8];
    for c in suffix.iter_mut() {
        *c = b"0123456789abcdefghijklmnopqrstuvwxyz"[(bits % 36) as usize];
        bits /= 36;
    }
    let suffix = std::str::from_utf8(&suffix).expect("ASCII");
    format!(
        "flowrun-{name}-{}-{suffix}",
        crate::supervise::flowrun_pid()
    )
}

/// Runs a flow with instances from `factory`: the seam the loop's tests use with in-process
/// backend doubles. `interrupts`, when given, replaces the process's signals.
pub fn run_with(
    flow: Flow,
    factory: &mut dyn InstanceFactory,
    opts: &RunOptions,
    interrupts: Option<UnboundedReceiver<Interrupt>>,
) -> Result<RunReport, Error> {
    let earlier = match (&opts.continue_from, &opts.no_deps) {
        (Some(resume::Continue::Resume(d) | resume::Continue::RerunFailed(d)), _) => {
            Some(resume::read(&flow, d.as_deref())?)
        }
        (None, Some(_)) => Some(resume::read(&flow, None)?),
        (None, None) => None,
    };
    if let (Some(e), Some(resume::Continue::Resume(_))) = (&earlier, &opts.continue_from) {
        if journal::enabled() {
            resume::check_journal_writable(e)?;
        }
    }
    // Definition hashes serve the journal and the reuse of an earlier run's results only.
    let hashes = if journal::enabled() || earlier.is_some() {
        journal::definition_hashes(&flow)
    } else {
        Vec::new()
    };
    let given = match (&earlier, &opts.no_deps) {
        (Some(e), Some(jobs)) => resume::given(&flow, &hashes, e, jobs)?,
        _ => Vec::new(),
    };
    let in_place = matches!(opts.continue_from, Some(resume::Continue::Resume(_)));
    if let (Some(out), false) = (&opts.out, in_place) {
        outdir::check_out(out)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Output(format!("cannot start the runtime: {e}")))?;
    let _guard = runtime.enter();
    // Signals are hooked before any job starts, so that none is lost.
    let signals = match interrupts {
        Some(rx) => Signals::Channel(rx),
        None => Signals::os()
            .map_err(|e| Error::Output(format!("cannot install signal handlers: {e}")))?,
    };
    let setup_start = now_us();
    let (sender, rx) = drive::channel();
    let observers = setup::observer_specs(&flow, &opts.observers);
    let instances = setup::create(&flow, factory, &observers, sender)?;
    let created = match (&earlier, in_place) {
        (Some(e), true) => outdir::reopen(&e.dir),
        _ => outdir::create(&flow.name, opts.out.as_deref()),
    };
    let out = match created {
        Ok(out) => out,
        Err(e) => {
            instances.shutdown(CHECK_SHUTDOWN_WAIT);
            return Err(e);
        }
    };
    crate::supervise::report_run_dir(&out.path);
    let mut phases = opts.phases.clone();
    phases.0.push(("setup", setup_start, now_us()));

    let spec = SchedSpec {
        backends: flow
            .backends
            .iter()
            .zip(&instances.backends)
            .map(|(inst, handle)| {
                let caps = handle.as_ref().map(|h| h.caps).unwrap_or_default();
                // `-j N` means N jobs at once: it lifts a backend's default cap (the local
                // CPU count); a cap the flow sets explicitly still holds.
                let default_cap = match opts.max_parallel {
                    Some(_) => None,
                    None => caps.default_max_parallel,
                };
                BackendSpec {
                    name: inst.name.clone(),
                    max_parallel: inst.max_parallel.or(default_cap),
                    max_batch: handle.as_ref().map_or(MAX_CALL_BATCH, |h| h.batch_limit()),
                    enforces_timeout: caps.enforces_timeout,
                    kill_grace: kill_grace(&inst.config_toml),
                }
            })
            .collect(),
        resources: flow.resources.iter().map(|r| r.1).collect(),
        max_parallel: opts.max_parallel.or(flow.max_parallel),
        margin: opts.kill_margin.unwrap_or(SchedSpec::DEFAULT_MARGIN),
        cleanup_limit: SchedSpec::DEFAULT_CLEANUP_LIMIT,
        max_fail: opts.max_fail,
        max_fail_wait: opts.max_fail_wait,
    };
    let sched = Scheduler::new(&flow.jobs, spec);
    // A resumed run keeps its first host's tag: its cluster jobs carry it as their name, and
    // the jobs re-attached by id are queried (and, at the end, cancelled) by it.
    let tag = match (&earlier, in_place) {
        (Some(e), true) if !e.replay.first.run_tag.is_empty() => e.replay.first.run_tag.clone(),
        _ => run_tag(&flow.name),
    };
    let ctx = RunContext::new(
        out.path.clone(),
        tag,
        flow.resources.iter().map(|r| r.0.clone()).collect(),
    );
    let mut hub = instances.hub;
    // The built-in display is one more observer of the same events.
    hub.add_local(Box::new(Display::start(DisplayOptions {
        quiet: opts.quiet,
        status_interval: opts.status_interval.unwrap_or(DEFAULT_STATUS_INTERVAL),
    })));
    let mut state = RunState::new(flow, ctx, sched, instances.backends, hub, phases);
    if journal::enabled() {
        let resumed = earlier.as_ref().filter(|_| in_place).map(|e| &e.replay);
        state.ledger.journal = open_journal(&state, &hashes, resumed);
    }
    if let Some(e) = &earlier {
        if in_place {
            state.resumes = e.replay.segments;
        }
        let now = std::time::Instant::now();
        // `--no-deps` alone takes only the given jobs from the earlier run: the selected ones
        // run, whatever they did there.
        let mut reused = vec![false; state.flow.jobs.len()];
        if opts.continue_from.is_some() {
            for (j, rec) in resume::reusable(&state.flow, &hashes, e) {
                reused[j as usize] = true;
                state.ledger.records[j as usize] = rec;
                state.sched.handle(crate::sched::Input::Reused(j), now);
            }
        }
        if in_place {
            for (j, rec) in resume::attempts_so_far(&state.flow, &hashes, e) {
                let retried = rec.earlier().len() as u32;
                state.ledger.records[j as usize] = rec;
                state
                    .sched
                    .handle(crate::sched::Input::RetriesUsed(j, retried), now);
            }
        }
        for (j, rec, end) in given {
            let input = match end {
                resume::Given::Passed => crate::sched::Input::Reused(j),
                resume::Given::Ended(st, reason) => crate::sched::Input::Carried(j, st, reason),
            };
            reused[j as usize] |= matches!(input, crate::sched::Input::Reused(_));
            state.ledger.records[j as usize] = rec;
            state.sched.handle(input, now);
        }
        if in_place {
            let can_reattach: Vec<bool> = state
                .backends
                .iter()
                .map(|b| b.as_ref().is_some_and(|h| h.caps.reattach))
                .collect();
            for r in resume::reattachable(&state.flow, &hashes, e, &can_reattach, &reused) {
                // The job runs through the core like any other; when the core hands it to its
                // backend, the loop re-attaches it instead (`RunState::submit`), and its
                // `Running` counts the attempt it is on again.
                let mut rec = r.record;
                rec.attempt -= 1;
                state.ledger.records[r.job as usize] = rec;
                state.reattach.insert(r.job, r.native_id);
            }
            let reattached: Vec<bool> = (0..state.flow.jobs.len() as u32)
                .map(|j| state.reattach.contains_key(&j))
                .collect();
            let left_behind = resume::left_on_backend(
                &state.flow,
                e,
                &hashes,
                &reattached,
                &reused,
                &can_reattach,
            );
            for left in left_behind {
                let backend = &state.flow.backends[state.flow.jobs[left.job as usize].backend];
                let why = left.why;
                let on = match &left.native_id {
                    Some(id) => format!("was on the backend as {id}"),
                    None => "was being handed to the backend".to_string(),
                };
                let reason = Reason::Lost {
                    backend: backend.name.as_str().into(),
                    why: format!(
                        "the host died while the job {on}; {why} (it may still run there)"
                    )
                    .into(),
                };
                tracing::warn!(
                    "{}: {on} ({}) when the run stopped; {why}: it runs again as attempt {} \
                     (the old job may still run there)",
                    state.flow.jobs[left.job as usize].name,
                    backend.name,
                    left.record.attempt + 1
                );
                state.ledger.records[left.job as usize] = left.record;
                state.ledger.attempt_lost(left.job, reason, now_us());
            }
        }
    }
    drop(hashes);
    let t = std::time::Instant::now();
    let end = runtime.block_on(state.drive(rx, signals));
    tracing::info!("run loop: {:.3} s", t.elapsed().as_secs_f64());
    let report = summary::finish(state, out, end);
    // Log scans still running after a second signal must not keep the process alive.
    runtime.shutdown_background();
    Ok(report)
}
