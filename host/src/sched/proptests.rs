//! Property tests: random DAGs, priorities, caps, batch limits, resources, outcomes,
//! interrupts and abandons, driven by a simulated backend that answers in random order, lets
//! events overtake answers, repeats ends, scans some logs before its verdict and ignores some
//! kills; checked against a naive reference model rebuilt from the actions alone.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::fixtures::job;
use super::*;
use crate::flow::Job;

/// What the simulated backend does with a job.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    Pass,
    Fail,
    Kill,
    /// Busy this many times, then accepted and passed.
    BusyThenPass(u8),
    Reject,
    Lose,
    /// Ends, then the verdict comes after a log scan.
    Judged,
    /// Accepted, then nothing until killed; `true`: it ignores the kill too.
    Hang(bool),
}

fn plan() -> impl Strategy<Value = Plan> {
    prop_oneof![
        4 => Just(Plan::Pass),
        1 => Just(Plan::Fail),
        1 => Just(Plan::Kill),
        1 => (1u8..4).prop_map(Plan::BusyThenPass),
        1 => Just(Plan::Reject),
        1 => Just(Plan::Lose),
        2 => Just(Plan::Judged),
        1 => any::<bool>().prop_map(Plan::Hang),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    jobs: Vec<Job>,
    spec: SchedSpec,
    plans: Vec<Plan>,
    /// Interrupt after this many driver steps.
    interrupt_at: Option<u32>,
    /// Abandon after this many steps.
    abandon_at: Option<u32>,
    /// Random Kill inputs: (step, job).
    kills: Vec<(u32, u32)>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let backends =
        prop::collection::vec((prop::option::of(1u32..5), 1usize..4, any::<bool>()), 1..4);
    let resources = prop::collection::vec(1u64..6, 0..3);
    let max_parallel = prop::option::of(1u32..7);
    (backends, resources, max_parallel, 1usize..30).prop_flat_map(|(bes, res, max_parallel, n)| {
        let nb = bes.len();
        let res2 = res.clone();
        let jobs = prop::collection::vec(
            (
                0i64..3,
                0..nb,
                prop::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 0..4),
                prop_oneof![
                    3 => Just(When::AllPassed),
                    1 => Just(When::AnyPassed),
                    1 => Just(When::Always)
                ],
                1u32..4,
                prop::collection::vec(
                    (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
                    0..3,
                ),
                prop::option::of(1u64..300),
            ),
            n,
        );
        let plans = prop::collection::vec(plan(), n);
        let interrupt_at = prop::option::weighted(0.3, 0u32..60);
        let abandon_at = prop::option::weighted(0.15, 0u32..80);
        let kills = prop::collection::vec((0u32..80, 0..n as u32), 0..3);
        (
            jobs,
            plans,
            interrupt_at,
            abandon_at,
            kills,
            any::<u64>(),
            Just(bes),
            Just(res2),
            Just(max_parallel),
        )
            .prop_map(
                |(jobs, plans, interrupt_at, abandon_at, kills, seed, bes, res, max_parallel)| {
                    let jobs = jobs
                        .into_iter()
                        .enumerate()
                        .map(|(i, (prio, be, needs, when, cpus, rs, to))| {
                            let mut needs: Vec<u32> = if i == 0 {
                                Vec::new()
                            } else {
                                needs
                                    .into_iter()
                                    .filter(|x| x.1)
                                    .map(|x| x.0.index(i) as u32)
                                    .collect()
                            };
                            needs.sort_unstable();
                            needs.dedup();
                            let resources = if res.is_empty() {
                                Vec::new()
                            } else {
                                let mut v: Vec<(u32, u64)> = rs
                                    .into_iter()
                                    .map(|(r, a)| {
                                        let r = r.index(res.len());
                                        (r as u32, 1 + a.index(res[r] as usize) as u64)
                                    })
                                    .collect();
                                v.sort_unstable();
                                v.dedup_by_key(|x| x.0);
                                v
                            };
                            let mut j = job(&format!("j{i}"));
                            j.priority = prio;
                            j.backend = be;
                            j.needs = needs;
                            j.when = when;
                            j.cpus = cpus;
                            j.resources = resources;
                            j.timeout = to.map(|ms| (Duration::from_millis(ms), format!("{ms}ms")));
                            // Attempts: some jobs get retries, half of them on any failure.
                            j.retries = ((prio.unsigned_abs() + i as u64) % 3) as u32;
                            if i % 2 == 0 {
                                j.retry_on = crate::flow::RetryOn::ANY;
                            }
                            // And a third of them a backoff before each retry.
                            if i % 3 == 0 {
                                j.retry_backoff = Duration::from_millis(5 * (1 + i as u64 % 4));
                            }
                            j
                        })
                        .collect();
                    Case {
                        jobs,
                        spec: SchedSpec {
                            backends: bes
                                .iter()
                                .enumerate()
                                .map(|(i, &(cap, batch, enforces))| BackendSpec {
                                    name: format!("be{i}"),
                                    max_parallel: cap,
                                    max_batch: batch,
                                    enforces_timeout: enforces,
                                    kill_grace: Duration::from_millis(50),
                                })
                                .collect(),
                            resources: res,
                            max_parallel,
                            margin: Duration::from_millis(100),
                            cleanup_limit: Duration::from_millis(500),
                            max_fail: None,
                            max_fail_wait: false,
                        },
                        plans,
                        interrupt_at,
                        abandon_at,
                        kills,
                        seed,
                    }
                },
            )
    })
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

#[derive(Clone, Copy, Default)]
struct ModelBackend {
    used: u64,
    count: u32,
    backoff_ms: u64,
    until: Option<Instant>,
    /// Jobs started in the current drain (the batch being formed).
    batch: usize,
}

/// The naive reference model, rebuilt from the actions.
struct Model {
    jobs: Vec<Job>,
    spec: SchedSpec,
    status: Vec<Status>,
    in_flight: Vec<bool>,
    /// Attempts each job has left (`retries`).
    retries_left: Vec<u32>,
    /// A retried job may not start before this (`retry_backoff`, doubling per retry).
    retry_due: Vec<Option<Instant>>,
    /// The time of the input being applied.
    now: Option<Instant>,
    /// Rank by naive comparison: priority desc, then the flow's order.
    rank: Vec<usize>,
    backends: Vec<ModelBackend>,
    res_used: Vec<u64>,
    running: u32,
    interrupted: bool,
    abandoned: bool,
    started: bool,
}

impl Model {
    fn new(c: &Case) -> Model {
        let n = c.jobs.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&a| (std::cmp::Reverse(c.jobs[a].priority), a));
        let mut rank = vec![0; n];
        for (r, &j) in order.iter().enumerate() {
            rank[j] = r;
        }
        Model {
            jobs: c.jobs.clone(),
            spec: c.spec.clone(),
            status: vec![Status::Scheduled; n],
            in_flight: vec![false; n],
            retries_left: c.jobs.iter().map(|j| j.retries).collect(),
            retry_due: vec![None; n],
            now: None,
            rank,
            backends: vec![ModelBackend::default(); c.spec.backends.len()],
            res_used: vec![0; c.spec.resources.len()],
            running: 0,
            interrupted: false,
            abandoned: false,
            started: false,
        }
    }

    fn slots(&self, j: usize) -> u64 {
        u64::from(self.jobs[j].cpus.max(1))
    }

    /// Could job `j` start right now (naively)?
    fn fits(&self, j: usize) -> bool {
        let job = &self.jobs[j];
        if self.abandoned || (self.interrupted && job.when != When::Always) {
            return false;
        }
        if self.retry_due[j].is_some_and(|due| self.now.is_some_and(|now| now < due)) {
            return false;
        }
        if let Some(m) = self.spec.max_parallel {
            if self.running >= m {
                return false;
            }
        }
        let b = &self.backends[job.backend];
        let bs = &self.spec.backends[job.backend];
        if b.until.is_some() || b.batch >= bs.max_batch.max(1) {
            return false;
        }
        if let Some(cap) = bs.max_parallel {
            if b.used > 0 && b.used + self.slots(j) > u64::from(cap) {
                return false;
            }
        }
        job.resources
            .iter()
            .all(|&(r, a)| self.res_used[r as usize] + a <= self.spec.resources[r as usize])
    }

    /// The backoff rule: an acceptance (said or implied) resets it, a busy answer grows it.
    fn before_input(&mut self, input: &Input, now: Instant) {
        self.now = Some(now);
        for b in &mut self.backends {
            if b.until.is_some_and(|u| u <= now) {
                b.until = None;
            }
        }
        match *input {
            Input::Accepted(j)
            | Input::Started(j)
            | Input::Finished(j, _)
            | Input::Ended(j)
            | Input::Lost(j, _)
                if self.in_flight[j as usize] =>
            {
                let b = &mut self.backends[self.jobs[j as usize].backend];
                b.backoff_ms = 0;
                b.until = None;
                self.in_flight[j as usize] = false;
            }
            Input::Busy(j) if self.in_flight[j as usize] => {
                let b = &mut self.backends[self.jobs[j as usize].backend];
                if b.until.is_none_or(|u| now >= u) {
                    b.backoff_ms = if b.backoff_ms == 0 {
                        10
                    } else {
                        (b.backoff_ms * 2).min(1000)
                    };
                    b.until = Some(now + Duration::from_millis(b.backoff_ms));
                }
            }
            Input::Interrupt(_) => self.interrupted = true,
            Input::Abandon(_) => {
                self.interrupted = true;
                self.abandoned = true;
            }
            _ => {}
        }
    }

    fn take(&mut self, j: usize, sign: bool) {
        let job = &self.jobs[j];
        let slots = u64::from(job.cpus.max(1));
        let b = &mut self.backends[job.backend];
        if sign {
            b.used += slots;
            b.count += 1;
            self.running += 1;
            for &(r, a) in &job.resources {
                self.res_used[r as usize] += a;
            }
        } else {
            b.used -= slots;
            b.count -= 1;
            self.running -= 1;
            for &(r, a) in &job.resources {
                self.res_used[r as usize] -= a;
            }
        }
    }

    fn check_limits(&self) {
        if let Some(m) = self.spec.max_parallel {
            assert!(self.running <= m, "global cap exceeded");
        }
        for (i, b) in self.backends.iter().enumerate() {
            if let Some(cap) = self.spec.backends[i].max_parallel {
                assert!(
                    b.used <= u64::from(cap) || b.count == 1,
                    "backend {i} cap {cap} exceeded: {} slots in {} jobs",
                    b.used,
                    b.count
                );
            }
        }
        for (r, &u) in self.res_used.iter().enumerate() {
            assert!(u <= self.spec.resources[r], "resource {r} exceeded");
        }
    }

    /// Applies the actions of one drain, checking every rule.
    fn apply(&mut self, actions: &[Action], s: &Scheduler) {
        let mut started: Vec<Vec<JobIx>> = vec![Vec::new(); self.spec.backends.len()];
        for b in &mut self.backends {
            b.batch = 0;
        }
        let mut seen_batch = false;
        for a in actions {
            match a {
                Action::Status { job, old, new } => {
                    assert!(!seen_batch, "status actions come before the batches");
                    let j = *job as usize;
                    assert_eq!(self.status[j], *old, "job {j}: old status");
                    use Status::*;
                    let ok = matches!(
                        (old, new),
                        (Scheduled, Queued | Skipped | Killed)
                            | (Queued, Running | Killed)
                            | (Running, Queued | Passed | Failed | Killed)
                    );
                    assert!(ok, "job {j}: bad transition {old:?} -> {new:?}");
                    let reason = s.reason(*job);
                    if new.is_terminal() && *new != Passed {
                        assert!(reason.is_some(), "job {j}: no reason for {new:?}");
                    } else if new.is_terminal() {
                        assert!(reason.is_none());
                    }
                    let deps = &self.jobs[j].needs;
                    let when = self.jobs[j].when;
                    let dst = |x: &u32| self.status[*x as usize];
                    match (old, new) {
                        (Scheduled, Queued) | (Queued, Running) => {
                            assert!(self.started);
                            assert!(
                                !self.interrupted || when == When::Always,
                                "job {j} readied/started after interrupt"
                            );
                            assert!(deps.iter().all(|d| dst(d).is_terminal()));
                            match when {
                                When::AllPassed => assert!(deps.iter().all(|d| dst(d) == Passed)),
                                When::AnyPassed => assert!(
                                    deps.is_empty() || deps.iter().any(|d| dst(d) == Passed)
                                ),
                                When::Always => {}
                            }
                        }
                        (Scheduled, Skipped) => {
                            let ok = (self.interrupted && (when != When::Always || self.abandoned))
                                || match when {
                                    When::AllPassed => deps
                                        .iter()
                                        .any(|d| dst(d).is_terminal() && dst(d) != Passed),
                                    When::AnyPassed => {
                                        deps.iter().all(|d| dst(d).is_terminal())
                                            && !deps.iter().any(|d| dst(d) == Passed)
                                    }
                                    When::Always => false,
                                };
                            assert!(ok, "job {j} skipped wrongly: {reason:?}");
                        }
                        _ => {}
                    }
                    if (*old, *new) == (Queued, Running) {
                        // Priority: no better-ranked queued job that fits was left waiting.
                        for y in 0..self.status.len() {
                            if self.status[y] == Queued && self.rank[y] < self.rank[j] {
                                assert!(
                                    !self.fits(y),
                                    "job {j} started while better-ranked job {y} fits"
                                );
                            }
                        }
                        assert!(self.fits(j), "job {j} started without fitting");
                        if let (Some(due), Some(now)) = (self.retry_due[j], self.now) {
                            assert!(now >= due, "job {j} retried before its backoff");
                        }
                        self.take(j, true);
                        self.in_flight[j] = true;
                        self.backends[self.jobs[j].backend].batch += 1;
                        started[self.jobs[j].backend].push(*job);
                    }
                    if *old == Running {
                        self.take(j, false);
                        self.in_flight[j] = false;
                    }
                    self.status[j] = *new;
                    self.check_limits();
                }
                Action::Retry { job, status, .. } => {
                    assert!(!seen_batch, "retries come before the batches");
                    let j = *job as usize;
                    assert_eq!(
                        self.status[j],
                        Status::Running,
                        "job {j}: retry of a job not running"
                    );
                    assert!(matches!(status, Status::Failed | Status::Killed));
                    assert!(!self.interrupted, "job {j}: retried after an interrupt");
                    assert!(
                        self.retries_left[j] > 0,
                        "job {j}: retried more than `retries`"
                    );
                    self.retries_left[j] -= 1;
                    let job = &self.jobs[j];
                    let retry_number = job.retries - self.retries_left[j];
                    let mut wait = job.retry_backoff;
                    for _ in 1..retry_number {
                        wait = (wait * 2).min(Duration::from_secs(3600).max(job.retry_backoff));
                    }
                    self.retry_due[j] = Some(self.now.expect("retry before any input") + wait);
                    self.take(j, false);
                    self.in_flight[j] = false;
                    self.status[j] = Status::Queued;
                }
                Action::Submit(b, js) => {
                    seen_batch = true;
                    assert!(js.len() <= self.spec.backends[*b as usize].max_batch.max(1));
                    assert_eq!(&started[*b as usize], js, "submit batch = dispatch order");
                    started[*b as usize].clear();
                }
                Action::Kill(b, js) => {
                    seen_batch = true;
                    assert!(!js.is_empty());
                    for &j in js {
                        assert_eq!(self.jobs[j as usize].backend, *b as usize);
                        let st = self.status[j as usize];
                        // A best-effort kill on abandon goes to jobs the core already ended.
                        assert!(
                            st == Status::Running || (self.abandoned && st == Status::Killed),
                            "kill of a job {st:?}"
                        );
                    }
                }
            }
        }
        assert!(
            started.iter().all(|v| v.is_empty()),
            "every start is submitted"
        );
        // Work-conserving: after the input, no queued job could start.
        if self.started {
            for y in 0..self.status.len() {
                if self.status[y] == Status::Queued {
                    assert!(!self.fits(y), "job {y} queued although it fits");
                }
            }
        }
    }
}

/// The simulated backend's view of a job.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sim {
    Idle,
    /// Submitted, no answer yet.
    Pending,
    /// Accepted (said or implied).
    Accepted,
    /// Ended, verdict pending.
    Ended,
    /// Its end was reported (it may be reported again, as a duplicate).
    Done,
}

fn run_case(c: Case) {
    let n = c.jobs.len();
    let mut s = Scheduler::new(&c.jobs, c.spec.clone());
    let mut m = Model::new(&c);
    let mut rng = Rng(c.seed | 1);
    let t0 = Instant::now();
    let mut now = t0;
    let mut busy_left: Vec<u8> = c
        .plans
        .iter()
        .map(|p| match p {
            Plan::BusyThenPass(k) => *k,
            _ => 0,
        })
        .collect();
    let mut sim = vec![Sim::Idle; n];
    let mut killed_at: Vec<Option<Instant>> = vec![None; n];

    // A resumed run: some jobs used a retry before (`--resume`), and have one fewer left.
    for j in (1..n).step_by(5) {
        if c.jobs[j].retries > 0 {
            let input = Input::RetriesUsed(j as JobIx, 1);
            m.before_input(&input, now);
            assert!(s.handle(input, now));
            m.retries_left[j] -= 1;
        }
    }
    m.started = true;
    s.start(now);
    let acts = s.drain_actions();
    m.apply(&acts, &s);
    let absorb =
        |acts: &[Action], sim: &mut Vec<Sim>, killed_at: &mut Vec<Option<Instant>>, now| {
            for a in acts {
                match a {
                    Action::Submit(_, js) => {
                        for &j in js {
                            sim[j as usize] = Sim::Pending;
                        }
                    }
                    Action::Kill(_, js) => {
                        for &j in js {
                            killed_at[j as usize].get_or_insert(now);
                        }
                    }
                    _ => {}
                }
            }
        };
    absorb(&acts, &mut sim, &mut killed_at, now);

    let finish = |j: usize, killed: bool, rng: &mut Rng| -> Input {
        let ju = j as JobIx;
        match c.plans[j] {
            Plan::Fail => Input::Finished(ju, Outcome::Failed(Reason::ExitCode(1))),
            Plan::Kill => Input::Finished(ju, Outcome::Killed(Reason::Killed("oom".into()))),
            Plan::Lose => Input::Lost(ju, "gone".into()),
            _ if killed && rng.below(2) == 0 => {
                Input::Finished(ju, Outcome::Killed(Reason::Killed("killed".into())))
            }
            _ => Input::Finished(ju, Outcome::Passed),
        }
    };

    let mut step = 0u32;
    while !s.is_done() {
        step += 1;
        assert!(step < 100_000, "run does not terminate");
        // Forget what the core has ended (its late events become duplicates).
        for j in 0..n {
            if s.status(j as JobIx).is_terminal()
                && matches!(sim[j], Sim::Pending | Sim::Accepted | Sim::Ended)
            {
                sim[j] = Sim::Done;
            } else if s.status(j as JobIx) == Status::Queued && sim[j] != Sim::Idle {
                sim[j] = Sim::Idle;
                killed_at[j] = None;
            }
        }
        let pending: Vec<usize> = (0..n).filter(|&j| sim[j] == Sim::Pending).collect();
        let movable: Vec<usize> = (0..n)
            .filter(|&j| match (sim[j], c.plans[j]) {
                (Sim::Accepted, Plan::Hang(ignores)) => killed_at[j].is_some() && !ignores,
                (Sim::Accepted, _) | (Sim::Ended, _) => true,
                _ => false,
            })
            .collect();
        // Jobs whose end was reported: any further end is a duplicate.
        let done: Vec<usize> = (0..n)
            .filter(|&j| matches!(sim[j], Sim::Done | Sim::Ended))
            .collect();
        let duplicate;
        let input = if c.abandon_at == Some(step) {
            duplicate = false;
            Input::Abandon(Interrupt::Sigint)
        } else if c.interrupt_at.is_some_and(|k| step == k || step == k + 5) {
            duplicate = false;
            Input::Interrupt(if rng.below(2) == 0 {
                Interrupt::Sigint
            } else {
                Interrupt::Sighup
            })
        } else if let Some(&(_, j)) = c.kills.iter().find(|k| k.0 == step) {
            duplicate = false;
            Input::Kill(j, Reason::Killed("user kill".into()))
        } else {
            let choices = pending.len() + movable.len() + done.len().min(2);
            let r = rng.below(choices + 2);
            if r < pending.len() {
                duplicate = false;
                let j = pending[r];
                if busy_left[j] > 0 {
                    busy_left[j] -= 1;
                    sim[j] = Sim::Idle;
                    Input::Busy(j as JobIx)
                } else if matches!(c.plans[j], Plan::Reject) {
                    sim[j] = Sim::Done;
                    Input::Rejected(j as JobIx, "no".into())
                } else {
                    // Sometimes the start or the end overtakes the answer.
                    sim[j] = Sim::Accepted;
                    match rng.below(4) {
                        0 => Input::Started(j as JobIx),
                        1 if !matches!(c.plans[j], Plan::Hang(_) | Plan::Judged) => {
                            sim[j] = Sim::Done;
                            finish(j, false, &mut rng)
                        }
                        _ => Input::Accepted(j as JobIx),
                    }
                }
            } else if r < pending.len() + movable.len() {
                duplicate = false;
                let j = movable[r - pending.len()];
                let killed = killed_at[j].is_some();
                match (sim[j], c.plans[j]) {
                    (Sim::Ended, _) => {
                        sim[j] = Sim::Done;
                        let o = if rng.below(3) == 0 {
                            Outcome::Failed(Reason::PassMissing {
                                pattern: "x".into(),
                            })
                        } else {
                            Outcome::Passed
                        };
                        Input::Judged(j as JobIx, o)
                    }
                    (_, Plan::Judged) if !killed || rng.below(2) == 0 => {
                        sim[j] = Sim::Ended;
                        Input::Ended(j as JobIx)
                    }
                    (_, Plan::Hang(_)) => {
                        sim[j] = Sim::Done;
                        Input::Finished(j as JobIx, Outcome::Killed(Reason::Killed("k".into())))
                    }
                    _ => {
                        sim[j] = Sim::Done;
                        finish(j, killed, &mut rng)
                    }
                }
            } else if r < choices {
                // A duplicate end, or an answer after the end.
                duplicate = true;
                let j = done[rng.below(done.len())];
                let ended = sim[j] == Sim::Ended;
                let j = j as JobIx;
                match rng.below(5) {
                    0 => Input::Lost(j, "again".into()),
                    1 => Input::Accepted(j),
                    2 if ended => Input::Ended(j),
                    2 => Input::Judged(j, Outcome::Passed),
                    3 => Input::Started(j),
                    _ => Input::Finished(j, Outcome::Passed),
                }
            } else {
                duplicate = false;
                if pending.is_empty() && movable.is_empty() {
                    // Nothing to answer: time must bring the next thing, or a user gives up.
                    match s.next_wakeup() {
                        Some(w) => now = now.max(w),
                        None if m.interrupted => {
                            let wait = s.next_wakeup();
                            panic!("stuck after an interrupt: wakeup {wait:?}");
                        }
                        None => {
                            m.before_input(&Input::Interrupt(Interrupt::Sigterm), now);
                            s.handle(Input::Interrupt(Interrupt::Sigterm), now);
                            let acts = s.drain_actions();
                            m.apply(&acts, &s);
                            absorb(&acts, &mut sim, &mut killed_at, now);
                            continue;
                        }
                    }
                } else {
                    now += Duration::from_millis(rng.below(40) as u64);
                }
                Input::Tick
            }
        };
        let before: Vec<Status> = (0..n).map(|j| s.status(j as JobIx)).collect();
        m.before_input(&input, now);
        let applied = s.handle(input.clone(), now);
        if let Some(w) = s.next_wakeup() {
            assert!(w > now, "next_wakeup in the past: would spin");
        }
        let acts = s.drain_actions();
        if duplicate {
            assert!(!applied, "a duplicate was applied: {input:?}");
            // Only the next batch may go out (it waits for an input after a full one).
            for (j, &b) in before.iter().enumerate() {
                let a = s.status(j as JobIx);
                assert!(
                    b == a || (b, a) == (Status::Queued, Status::Running),
                    "a duplicate changed job {j}: {input:?}: {b:?} -> {a:?}"
                );
            }
        }
        // A job given up on had its kill long enough ago.
        for a in &acts {
            if let Action::Status {
                job,
                new: Status::Failed,
                ..
            } = a
            {
                if let Some(Reason::KillUnconfirmed { waited, .. }) = s.reason(*job) {
                    let sent = killed_at[*job as usize].expect("given up without a kill");
                    assert!(now >= sent + *waited, "gave up too early");
                    let b = &c.spec.backends[c.jobs[*job as usize].backend];
                    assert_eq!(*waited, b.kill_grace + c.spec.margin);
                }
            }
        }
        m.apply(&acts, &s);
        absorb(&acts, &mut sim, &mut killed_at, now);
    }
    for j in 0..n as u32 {
        let st = s.status(j);
        assert!(st.is_terminal());
        assert_eq!(st, m.status[j as usize]);
        if st != Status::Passed {
            assert!(s.reason(j).is_some());
        }
    }
    assert_eq!(m.running, 0);
    assert_eq!(s.next_wakeup(), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_runs(c in case()) {
        run_case(c);
    }
}
