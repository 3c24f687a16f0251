//! Test support: the engine's own steps, driven on one thread by a [`ManualClock`], so that a
//! dialect's policy is tested against a scripted scheduler deterministically, without a
//! cluster and without sleeping.
//!
//! The [`Simulation`] runs every step that has work; when none has, it moves the clock to
//! the earliest deadline a step asked for. A command runs to completion within its step: a
//! scripted command that "hangs" moves the clock by the time limit itself (and everything
//! else waits meanwhile, which real threads would not).

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use super::{
    clock::{Clock, ManualClock},
    command::CommandRunner,
    config::EngineConfig,
    core::{EngineEvent, Update},
    dialect::{Dialect, Job, JobCommand, JobKey, Verdict},
    run::{EventSink, Shared, Step, SubmitWorker},
};

/// A job running the shell line `command`, with the run directory `run_dir` (its cwd), its
/// job directory `<run_dir>/jobs/<name>`, one CPU and no limits.
pub fn job(key: JobKey, name: &str, command: &str, run_dir: &Path, run_tag: &str) -> Job {
    let job_dir = run_dir.join("jobs").join(name);
    Job {
        key,
        name: name.into(),
        command: JobCommand::Shell(command.into()),
        cwd: run_dir.to_path_buf(),
        env: vec![],
        log_path: job_dir.join("output.log"),
        job_dir,
        run_dir: run_dir.to_path_buf(),
        run_tag: run_tag.into(),
        timeout: None,
        cpus: 1,
        memory_mb: None,
        named_resources: vec![],
        attempt: 1,
        attrs: vec![],
    }
}

/// Records events in order.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<(Duration, EngineEvent)>>,
    submitted: Mutex<Vec<(JobKey, String)>>,
    clock: Option<Arc<ManualClock>>,
}

impl EventSink for Recorder {
    fn emit(&self, event: EngineEvent) {
        let at = self.clock.as_ref().map_or(Duration::ZERO, |c| c.elapsed());
        self.events.lock().push((at, event));
    }
    fn submitted(&self, job: JobKey, native_id: &str) {
        self.submitted.lock().push((job, native_id.to_string()));
    }
}

enum Actor {
    Submit(SubmitWorker),
    Monitor,
    Cancel,
}

/// What a [`Host`] can do to the engine.
trait HostCalls: Send + Sync {
    fn kill(&self, keys: &[JobKey]);
}

impl<D: Dialect> HostCalls for Shared<D> {
    fn kill(&self, keys: &[JobKey]) {
        Shared::kill(self, keys)
    }
}

/// A handle to a simulated engine that a scripted runner can hold, to act as the host does
/// in the middle of a command (a kill while a submission is in flight).
#[derive(Clone)]
pub struct Host {
    engine: std::sync::Weak<dyn HostCalls>,
}

impl Host {
    /// Kills jobs, as the host would.
    pub fn kill(&self, keys: &[JobKey]) {
        if let Some(engine) = self.engine.upgrade() {
            engine.kill(keys)
        }
    }
}

/// An engine whose threads are simulated on the caller's thread.
pub struct Simulation<D: Dialect> {
    shared: Arc<Shared<D>>,
    clock: Arc<ManualClock>,
    recorder: Arc<Recorder>,
    actors: Vec<(Actor, bool)>,
}

/// Steps per [`Simulation`] call before it gives up on a livelock.
const STEP_LIMIT: usize = 10_000_000;

impl<D: Dialect> Simulation<D> {
    /// An engine for `dialect` on `clock`, its commands going to `runner`.
    pub fn new(
        dialect: D,
        config: EngineConfig,
        runner: Arc<dyn CommandRunner>,
        clock: Arc<ManualClock>,
    ) -> Simulation<D> {
        let recorder = Arc::new(Recorder {
            events: Mutex::new(Vec::new()),
            submitted: Mutex::new(Vec::new()),
            clock: Some(clock.clone()),
        });
        let mut actors: Vec<(Actor, bool)> = (0..config.submit_threads)
            .map(|_| (Actor::Submit(SubmitWorker::default()), false))
            .collect();
        actors.push((Actor::Monitor, false));
        actors.push((Actor::Cancel, false));
        let shared = Arc::new(Shared::new(
            dialect,
            config,
            runner,
            clock.clone() as Arc<dyn Clock>,
            recorder.clone(),
        ));
        Simulation {
            shared,
            clock,
            recorder,
            actors,
        }
    }

    /// A handle for scripted commands to act as the host.
    pub fn host(&self) -> Host {
        let engine: Arc<dyn HostCalls> = self.shared.clone();
        Host {
            engine: Arc::downgrade(&engine),
        }
    }

    /// The dialect.
    pub fn dialect(&self) -> &D {
        &self.shared.dialect
    }

    /// The simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Submits jobs, as the host does.
    pub fn submit(&self, jobs: Vec<Job>) -> Vec<Result<(), String>> {
        self.shared.submit(jobs)
    }

    /// Re-attaches jobs by native id, as the host does on `--resume`.
    pub fn adopt(&self, jobs: Vec<(Job, String)>) -> Vec<Result<(), String>> {
        self.shared.adopt(jobs)
    }

    /// Kills jobs, as the host does.
    pub fn kill(&self, keys: &[JobKey]) {
        self.shared.kill(keys)
    }

    /// Submits jobs that must all be accepted (panics otherwise); returns their keys.
    pub fn submit_accepted(&self, jobs: Vec<Job>) -> Vec<JobKey> {
        let keys = jobs.iter().map(|j| j.key).collect();
        let answers = self.shared.submit(jobs);
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        keys
    }

    /// The end (FINISHED or LOST) of a job; panics unless it ended exactly once.
    pub fn end_of(&self, key: JobKey) -> Update {
        let ends: Vec<Update> = self
            .events()
            .into_iter()
            .filter(|(_, e)| e.job == key && !matches!(e.update, Update::Started { .. }))
            .map(|(_, e)| e.update)
            .collect();
        assert_eq!(ends.len(), 1, "job {key:?} must end exactly once: {ends:?}");
        ends[0].clone()
    }

    /// The verdict of a job that finished; panics if it did not (or was lost).
    pub fn verdict(&self, key: JobKey) -> Verdict {
        match self.end_of(key) {
            Update::Finished { verdict, .. } => verdict,
            other => panic!("job {key:?} did not finish: {other:?}"),
        }
    }

    /// The events so far, with the simulated time of each.
    pub fn events(&self) -> Vec<(Duration, EngineEvent)> {
        self.recorder.events.lock().clone()
    }

    /// The native id each job was submitted as, in the order the engine reported them (what
    /// the host journals, to re-attach the job after a crash).
    pub fn submitted_ids(&self) -> Vec<(JobKey, String)> {
        self.recorder.submitted.lock().clone()
    }

    /// `stats()`.
    pub fn stats(&self) -> String {
        self.shared.stats()
    }

    /// The number of jobs the engine still tracks.
    pub fn tracked(&self) -> usize {
        self.shared.core.lock().len()
    }

    /// Steps every actor until none has work; returns the earliest deadline one waits for.
    fn settle(&mut self) -> Option<Instant> {
        for _ in 0..STEP_LIMIT {
            let mut progressed = false;
            let mut earliest: Option<Instant> = None;
            for (actor, exited) in &mut self.actors {
                if *exited {
                    continue;
                }
                let step = match actor {
                    Actor::Submit(worker) => self.shared.submit_step(worker),
                    Actor::Monitor => self.shared.monitor_step(),
                    Actor::Cancel => self.shared.cancel_step(),
                };
                match step {
                    Step::Worked => progressed = true,
                    Step::WaitUntil(at) => {
                        earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    }
                    Step::Idle => {}
                    Step::Exit => *exited = true,
                }
            }
            if !progressed {
                if let Some(at) = earliest {
                    assert!(
                        at > self.clock.now(),
                        "a step waits for a time that has come: it would spin"
                    );
                }
                return earliest;
            }
        }
        panic!("the simulation did not settle in {STEP_LIMIT} steps");
    }

    /// Runs for `span` of simulated time.
    pub fn run_for(&mut self, span: Duration) {
        let end = self.clock.now() + span;
        self.run_until(end, |_| false);
    }

    /// Runs until `done` holds (checked whenever the engine settles) or simulated time
    /// `limit` (from now) has passed; returns whether `done` held.
    pub fn run_while_not(&mut self, limit: Duration, done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.clock.now() + limit;
        self.run_until(end, done)
    }

    fn run_until(&mut self, end: Instant, mut done: impl FnMut(&Self) -> bool) -> bool {
        loop {
            let next = self.settle();
            if done(self) {
                return true;
            }
            match next {
                Some(at) if at <= end => self.clock.advance_to(at),
                _ => {
                    self.clock.advance_to(end);
                    self.settle();
                    return done(self);
                }
            }
        }
    }

    /// Runs until every job has ended (or `limit` passes); returns whether they all did.
    pub fn run_to_completion(&mut self, limit: Duration) -> bool {
        self.run_while_not(limit, |s| s.tracked() == 0)
    }

    /// The engine's shutdown, step by step as `Engine::shutdown` does it: stop submitting and
    /// cancel, let in-flight submissions finish, the safety net, wait up to `shutdown_wait`,
    /// then lose what is left and stop.
    pub fn shutdown(&mut self) {
        let safety_net = self.shared.begin_shutdown();
        let wait = self.shared.core.lock().cfg.shutdown_wait;
        let limit = wait + Duration::from_secs(3600);
        let submitters_done = |s: &Self| {
            s.actors
                .iter()
                .all(|(a, exited)| !matches!(a, Actor::Submit(_)) || *exited)
        };
        assert!(
            self.run_while_not(limit, submitters_done),
            "the submit workers did not stop"
        );
        if safety_net {
            self.shared.safety_net();
        }
        self.run_while_not(wait, |s| s.tracked() == 0);
        self.shared.end_shutdown();
        let all_done = |s: &Self| s.actors.iter().all(|(_, exited)| *exited);
        assert!(
            self.run_while_not(limit, all_done),
            "the engine's actors did not stop"
        );
    }
}
