//! The poller: DVSim's legacy-adapter semantics, over any [`Launcher`].
//!
//! - Launches answer each job of a batch at once: started, busy or failed. Once the launcher
//!   answers busy, or the batch has used its time budget, the rest of the batch is answered
//!   busy without asking it (the host offers them again with its backoff), so that a batch
//!   never holds the host's thread for long.
//! - Started jobs join a FIFO. The first tick runs as soon as the first job started; then
//!   ticks follow a fixed grid `first + k * interval` (no drift: a late tick does not move the
//!   next one, and grid points that passed while a tick ran are skipped rather than run back
//!   to back, so no interval ever sees more than one tick's polls).
//! - A tick examines the jobs that were in the FIFO when it began, front to back, polling at
//!   most `max_polls` of them; a job still running goes to the back (round robin), so every job
//!   is polled in turn however many there are. A job that ended, failed its poll or was killed
//!   leaves the FIFO and is freed; one bad job never stops the others.
//! - A tick runs in slices, so that the caller can serve launches and kills between them; the
//!   events a tick produced are returned together when it ends (one batch per tick).

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::protocol::{Answer, End, Ended, LaunchRequest, Usage, WorkerStats};

/// What a launch did.
pub enum Launched<J> {
    /// The job runs; with the launcher's own id for it.
    Started(J, Option<String>),
    /// Nothing started; try later.
    Busy,
    /// Nothing started, for this reason.
    Failed(String),
}

/// What a poll found.
pub enum Polled {
    /// Still running.
    Running,
    /// Ended.
    Ended(End, Usage),
    /// The poll itself failed, for this reason.
    Error(String),
}

/// A synchronous poll-style launcher: the C library, or a scripted one in tests.
pub trait Launcher {
    /// The launcher's handle of one job.
    type Job;
    /// Starts a job.
    fn launch(&mut self, job: &LaunchRequest) -> Launched<Self::Job>;
    /// Looks at a job without waiting.
    fn poll(&mut self, job: &mut Self::Job) -> Polled;
    /// Kills a job (idempotent); `Err` says why it failed.
    fn kill(&mut self, job: &mut Self::Job) -> Result<(), String>;
    /// Releases a job's handle.
    fn free(&mut self, job: Self::Job);
}

/// How the poller runs.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Time between ticks.
    pub interval: Duration,
    /// Polls per tick at most (`usize::MAX`: no limit).
    pub max_polls: usize,
    /// How long one launch batch may take before the rest is answered busy.
    pub launch_budget: Duration,
}

/// The tick in progress.
struct Tick {
    /// The grid point it belongs to.
    due: Instant,
    /// FIFO entries still to examine (those present when it began).
    to_examine: usize,
    /// Polls it may still make.
    polls_left: usize,
    polls: u64,
    ended: Vec<Ended>,
}

/// The poller's state.
pub struct Engine<L: Launcher> {
    launcher: L,
    pacing: Pacing,
    /// Jobs that run, by host id.
    live: HashMap<u64, L::Job>,
    /// Poll order. Ids of jobs killed since they were queued stay until a tick reaches them.
    fifo: VecDeque<u64>,
    /// The next grid point; `None` until the first job started.
    next_tick: Option<Instant>,
    tick: Option<Tick>,
    stats: WorkerStats,
}

impl<L: Launcher> Engine<L> {
    /// A poller over `launcher`.
    pub fn new(launcher: L, pacing: Pacing) -> Self {
        Engine {
            launcher,
            pacing,
            live: HashMap::new(),
            fifo: VecDeque::new(),
            next_tick: None,
            tick: None,
            stats: WorkerStats::default(),
        }
    }

    /// The counters (the worker fills in its own CPU time).
    pub fn stats(&self) -> WorkerStats {
        self.stats
    }

    /// How many jobs run.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Launches a batch, answering every job in order. `clock` reads the time, to keep to the
    /// batch's budget.
    pub fn launch(&mut self, jobs: &[LaunchRequest], clock: &dyn Fn() -> Instant) -> Vec<Answer> {
        let start = clock();
        let mut stop = false;
        let mut answers = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            if !stop && i > 0 && clock().duration_since(start) >= self.pacing.launch_budget {
                stop = true;
            }
            if stop {
                self.stats.deferred += 1;
                answers.push(Answer::Busy);
                continue;
            }
            if self.live.contains_key(&job.id) {
                // The host never offers a running job again; if it did, a second handle would
                // make one job end twice.
                answers.push(Answer::Failed(format!("job {} is already running", job.id)));
                continue;
            }
            match self.launcher.launch(job) {
                Launched::Started(handle, native_id) => {
                    self.stats.launched += 1;
                    self.live.insert(job.id, handle);
                    self.fifo.push_back(job.id);
                    if self.next_tick.is_none() {
                        self.next_tick = Some(clock()); // the first poll is immediate
                    }
                    answers.push(Answer::Started(native_id));
                }
                Launched::Busy => {
                    self.stats.launcher_busy += 1;
                    stop = true;
                    answers.push(Answer::Busy);
                }
                Launched::Failed(why) => {
                    self.stats.launch_errors += 1;
                    answers.push(Answer::Failed(why));
                }
            }
        }
        answers
    }

    /// Kills jobs that run; unknown ids (ended, never launched) are ignored.
    pub fn kill(&mut self, ids: &[u64]) -> Vec<Ended> {
        let mut ended = Vec::new();
        for id in ids {
            if let Some(handle) = self.live.remove(id) {
                ended.push(self.kill_and_free(*id, handle));
            }
        }
        ended
    }

    /// Kills every job that runs (shutdown).
    pub fn kill_all(&mut self) -> Vec<Ended> {
        let ids: Vec<u64> = self.fifo.iter().copied().collect();
        self.kill(&ids)
    }

    fn kill_and_free(&mut self, id: u64, mut handle: L::Job) -> Ended {
        self.stats.kills += 1;
        let end = match self.launcher.kill(&mut handle) {
            Ok(()) => End::Killed,
            Err(why) => End::Lost(format!("kill failed: {why}")),
        };
        self.launcher.free(handle);
        Ended {
            id,
            end,
            usage: Usage::default(),
        }
    }

    /// When [`Engine::run`] has work: now if a tick is under way, the next grid point if jobs
    /// run, `None` if there is nothing to poll.
    pub fn due(&self) -> Option<Instant> {
        if let Some(t) = &self.tick {
            return Some(t.due);
        }
        if self.live.is_empty() {
            return None;
        }
        self.next_tick
    }

    /// Does tick work until `clock` passes `now + slice` or the tick ends. Returns the tick's
    /// events when it ended, `None` when it was cut short (call again) or none was due.
    pub fn run(
        &mut self,
        now: Instant,
        slice: Duration,
        clock: &dyn Fn() -> Instant,
    ) -> Option<Vec<Ended>> {
        if self.tick.is_none() {
            let due = self.due().filter(|&d| d <= now)?;
            self.tick = Some(Tick {
                due,
                to_examine: self.fifo.len(),
                polls_left: self.pacing.max_polls,
                polls: 0,
                ended: Vec::new(),
            });
        }
        let slice_end = now + slice;
        let mut tick = self.tick.take()?;
        let mut since_clock = 0u32;
        while tick.to_examine > 0 && tick.polls_left > 0 {
            // Reading the clock costs more than polling a local process: look every few polls.
            since_clock += 1;
            if since_clock == 16 {
                since_clock = 0;
                if clock() >= slice_end {
                    self.tick = Some(tick);
                    return None;
                }
            }
            tick.to_examine -= 1;
            let Some(id) = self.fifo.pop_front() else {
                break;
            };
            let Some(mut handle) = self.live.remove(&id) else {
                continue; // killed since it was queued
            };
            tick.polls_left -= 1;
            tick.polls += 1;
            self.stats.polls += 1;
            match self.launcher.poll(&mut handle) {
                Polled::Running => {
                    self.live.insert(id, handle);
                    self.fifo.push_back(id);
                }
                Polled::Ended(end, usage) => {
                    self.launcher.free(handle);
                    tick.ended.push(Ended { id, end, usage });
                }
                Polled::Error(why) => {
                    self.stats.poll_errors += 1;
                    // Nothing may run on unobserved: kill it (best effort) before failing it.
                    let _ = self.launcher.kill(&mut handle);
                    self.launcher.free(handle);
                    tick.ended.push(Ended {
                        id,
                        end: End::Failed {
                            reason: format!("poll failed: {why}"),
                            code: None,
                        },
                        usage: Usage::default(),
                    });
                }
            }
        }
        self.stats.ticks += 1;
        self.stats.max_polls_in_a_tick = self.stats.max_polls_in_a_tick.max(tick.polls);
        // The next grid point after both the tick's own and the time it ended.
        let end = clock().max(now);
        let mut next = tick.due + self.pacing.interval;
        if next <= end {
            let behind = end.duration_since(next).as_nanos();
            let step = self.pacing.interval.as_nanos().max(1);
            let skip = u32::try_from(behind / step + 1).unwrap_or(u32::MAX);
            next += self.pacing.interval.saturating_mul(skip);
        }
        self.next_tick = Some(next);
        Some(tick.ended)
    }

    /// Gives the launcher back (to close it); every job must have been killed or ended.
    pub fn into_launcher(self) -> L {
        self.launcher
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, collections::HashMap, rc::Rc};

    use super::*;

    /// A launcher scripted by job name: `name` of the form `WORD-N` ends after N polls with
    /// exit code 0; `busy-*` answers busy once per job; `refuse-*` fails the launch; `badpoll-*`
    /// fails its first poll; `kill-fails-*` fails its kill. Records every call.
    #[derive(Default)]
    struct Scripted {
        polls_of: HashMap<u64, u32>,
        polled: Vec<u64>,
        killed: Vec<u64>,
        freed: Vec<u64>,
        busy_seen: Vec<u64>,
        names: HashMap<u64, String>,
    }

    struct Handle(u64);

    impl Launcher for Scripted {
        type Job = Handle;
        fn launch(&mut self, job: &LaunchRequest) -> Launched<Handle> {
            if job.name.starts_with("busy") && !self.busy_seen.contains(&job.id) {
                self.busy_seen.push(job.id);
                return Launched::Busy;
            }
            if job.name.starts_with("refuse") {
                return Launched::Failed("no licence".into());
            }
            self.names.insert(job.id, job.name.clone());
            Launched::Started(Handle(job.id), Some(format!("native-{}", job.id)))
        }
        fn poll(&mut self, job: &mut Handle) -> Polled {
            self.polled.push(job.0);
            let name = &self.names[&job.0];
            if name.starts_with("badpoll") {
                return Polled::Error("status file unreadable".into());
            }
            let n = self.polls_of.entry(job.0).or_default();
            *n += 1;
            let needed: u32 = name.rsplit('-').next().unwrap().parse().unwrap_or(1);
            if *n >= needed {
                Polled::Ended(End::Exited(0), Usage::default())
            } else {
                Polled::Running
            }
        }
        fn kill(&mut self, job: &mut Handle) -> Result<(), String> {
            self.killed.push(job.0);
            if self.names[&job.0].starts_with("kill-fails") {
                Err("bkill: no route".into())
            } else {
                Ok(())
            }
        }
        fn free(&mut self, job: Handle) {
            assert!(!self.freed.contains(&job.0), "job {} freed twice", job.0);
            self.freed.push(job.0);
        }
    }

    fn req(id: u64, name: &str) -> LaunchRequest {
        LaunchRequest {
            id,
            name: name.into(),
            shell: true,
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            job_dir: "/".into(),
            log_path: "/dev/null".into(),
            run_dir: "/".into(),
            run_tag: "t".into(),
            timeout_ms: None,
            cpus: 1,
            memory_mb: None,
            attempt: 1,
        }
    }

    /// A clock the test moves by hand.
    #[derive(Clone)]
    struct Clock(Rc<Cell<Instant>>);

    impl Clock {
        fn new() -> Self {
            Clock(Rc::new(Cell::new(Instant::now())))
        }
        fn now(&self) -> Instant {
            self.0.get()
        }
        fn advance(&self, d: Duration) {
            self.0.set(self.0.get() + d)
        }
        fn f(&self) -> impl Fn() -> Instant + '_ {
            move || self.0.get()
        }
    }

    fn engine(max_polls: usize) -> Engine<Scripted> {
        Engine::new(
            Scripted::default(),
            Pacing {
                interval: Duration::from_millis(100),
                max_polls,
                launch_budget: Duration::from_millis(50),
            },
        )
    }

    const SLICE: Duration = Duration::from_secs(1);

    #[test]
    fn first_poll_is_immediate_then_ticks_keep_to_the_grid() {
        let clock = Clock::new();
        let mut e = engine(usize::MAX);
        assert_eq!(e.due(), None, "nothing to poll before the first launch");
        let t0 = clock.now();
        e.launch(&[req(1, "a-100")], &clock.f());
        assert_eq!(e.due(), Some(t0));
        assert!(e.run(clock.now(), SLICE, &clock.f()).is_some());
        assert_eq!(e.due(), Some(t0 + Duration::from_millis(100)));
        // A tick that starts late does not move the grid.
        clock.advance(Duration::from_millis(130));
        e.run(clock.now(), SLICE, &clock.f()).unwrap();
        assert_eq!(e.due(), Some(t0 + Duration::from_millis(200)));
        // Nothing runs before its grid point.
        clock.advance(Duration::from_millis(20));
        assert!(e.run(clock.now(), SLICE, &clock.f()).is_none());
        // A tick that runs past several grid points (here it starts 260 ms late) skips them
        // instead of running back to back.
        clock.advance(Duration::from_millis(50 + 260));
        e.run(clock.now(), SLICE, &clock.f()).unwrap();
        let due = e.due().unwrap();
        assert_eq!(
            due.duration_since(t0).as_millis() % 100,
            0,
            "still on the grid"
        );
        assert!(due > clock.now());
        assert!(due <= clock.now() + Duration::from_millis(100));
    }

    #[test]
    fn each_tick_polls_at_most_the_limit_in_round_robin_order() {
        let clock = Clock::new();
        let mut e = engine(3);
        let jobs: Vec<_> = (1..=7).map(|i| req(i, "job-1000")).collect();
        e.launch(&jobs, &clock.f());
        for _ in 0..5 {
            e.run(clock.now(), SLICE, &clock.f()).unwrap();
            clock.advance(Duration::from_millis(100));
        }
        // 5 ticks of 3 polls over 7 jobs: 1..7, then again from 1.
        let order: Vec<u64> = e.launcher.polled.clone();
        assert_eq!(order, vec![1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 7, 1]);
        assert_eq!(e.stats().max_polls_in_a_tick, 3);
        assert_eq!(e.stats().ticks, 5);
    }

    #[test]
    fn a_tick_never_polls_a_job_twice_nor_one_launched_during_it() {
        let clock = Clock::new();
        let mut e = engine(usize::MAX);
        let jobs: Vec<_> = (1..=20).map(|i| req(i, "j-9")).collect();
        e.launch(&jobs, &clock.f());
        // Every clock read says the slice is over: the tick stops after 15 polls...
        let fc = clock.clone();
        let late = move || fc.now() + SLICE;
        assert!(e.run(clock.now(), SLICE, &late).is_none());
        // ...a job starts between two slices...
        e.launch(&[req(21, "j-9")], &clock.f());
        // ...and the rest of the tick polls the 5 others, not it, and none twice.
        assert!(e.run(clock.now(), SLICE, &clock.f()).is_some());
        let first: Vec<u64> = (1..=20).collect();
        assert_eq!(e.launcher.polled, first);
        clock.advance(Duration::from_millis(100));
        e.run(clock.now(), SLICE, &clock.f()).unwrap();
        // The next tick polls every job once, the new one in the place it joined the FIFO:
        // after the jobs the first slice had already sent to the back.
        let second: Vec<u64> = (1..=15).chain([21]).chain(16..=20).collect();
        assert_eq!(e.launcher.polled[20..], second[..]);
    }

    #[test]
    fn a_cut_tick_resumes_and_returns_its_events_once() {
        let clock = Clock::new();
        let mut e = engine(usize::MAX);
        let jobs: Vec<_> = (1..=40).map(|i| req(i, "j-1")).collect();
        e.launch(&jobs, &clock.f());
        // Every clock read says the slice is over: the tick goes 15 polls per call.
        let fc = clock.clone();
        let late = move || fc.now() + SLICE;
        let mut calls = 0;
        let ended = loop {
            calls += 1;
            if let Some(ended) = e.run(clock.now(), SLICE, &late) {
                break ended;
            }
        };
        assert_eq!(calls, 3);
        assert_eq!(ended.len(), 40);
        assert_eq!(e.stats().ticks, 1);
        assert_eq!(e.due(), None, "nothing left to poll");
    }

    #[test]
    fn busy_stops_the_batch_and_failures_never_poll() {
        let clock = Clock::new();
        let mut e = engine(usize::MAX);
        let answers = e.launch(
            &[
                req(1, "ok-1"),
                req(2, "refuse-1"),
                req(3, "busy-1"),
                req(4, "ok-1"),
            ],
            &clock.f(),
        );
        assert_eq!(
            answers,
            vec![
                Answer::Started(Some("native-1".into())),
                Answer::Failed("no licence".into()),
                Answer::Busy,
                Answer::Busy,
            ]
        );
        assert_eq!(
            e.stats().deferred,
            1,
            "job 4 was not offered to the launcher"
        );
        let ended = e.run(clock.now(), SLICE, &clock.f()).unwrap();
        assert_eq!(ended.len(), 1);
        assert_eq!(
            e.launcher.polled,
            vec![1],
            "the refused job is never polled"
        );
    }

    #[test]
    fn the_launch_budget_defers_the_rest_of_a_batch() {
        let clock = Clock::new();
        let mut e = engine(usize::MAX);
        let fc = clock.clone();
        let slow = move || {
            fc.advance(Duration::from_millis(20));
            fc.now()
        };
        let jobs: Vec<_> = (1..=10).map(|i| req(i, "j-1")).collect();
        let answers = e.launch(&jobs, &slow);
        let started = answers
            .iter()
            .filter(|a| matches!(a, Answer::Started(_)))
            .count();
        assert!((1..10).contains(&started), "{answers:?}");
        assert!(answers[started..].iter().all(|a| *a == Answer::Busy));
    }

    #[test]
    fn poll_errors_fail_the_job_after_a_kill_and_others_go_on() {
        let clock = Clock::new();
        let mut e = engine(usize::MAX);
        e.launch(&[req(1, "badpoll-1"), req(2, "ok-2")], &clock.f());
        let ended = e.run(clock.now(), SLICE, &clock.f()).unwrap();
        assert_eq!(
            ended[0].end,
            End::Failed {
                reason: "poll failed: status file unreadable".into(),
                code: None
            }
        );
        assert_eq!(e.launcher.killed, vec![1]);
        clock.advance(Duration::from_millis(100));
        let ended = e.run(clock.now(), SLICE, &clock.f()).unwrap();
        assert_eq!(ended[0].id, 2);
        assert_eq!(e.launcher.freed, vec![1, 2]);
    }

    #[test]
    fn kills_end_jobs_once_and_skip_them_in_later_ticks() {
        let clock = Clock::new();
        let mut e = engine(usize::MAX);
        e.launch(
            &[req(1, "a-50"), req(2, "kill-fails-50"), req(3, "c-50")],
            &clock.f(),
        );
        let ended = e.kill(&[1, 2, 99]);
        assert_eq!(ended.len(), 2);
        assert_eq!(ended[0].end, End::Killed);
        assert_eq!(
            ended[1].end,
            End::Lost("kill failed: bkill: no route".into())
        );
        assert!(e.kill(&[1]).is_empty(), "a second kill is ignored");
        e.run(clock.now(), SLICE, &clock.f()).unwrap();
        assert_eq!(e.launcher.polled, vec![3]);
        let rest = e.kill_all();
        assert_eq!(rest.len(), 1);
        assert_eq!(e.launcher.freed, vec![1, 2, 3]);
        assert_eq!(e.live(), 0);
    }
}
