//! Property tests: random DAGs, priorities, caps, resources, outcomes and interrupts, driven by
//! a simulated backend answering in random order, checked against a naive reference model
//! rebuilt from the actions alone.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// What the simulated backend does with a job.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Pass,
    Fail,
    Kill,
    /// Busy this many times, then accepted and passed.
    BusyThenPass(u8),
    Reject,
    Lose,
}

fn plan() -> impl Strategy<Value = Plan> {
    prop_oneof![
        4 => Just(Plan::Pass),
        1 => Just(Plan::Fail),
        1 => Just(Plan::Kill),
        1 => (1u8..4).prop_map(Plan::BusyThenPass),
        1 => Just(Plan::Reject),
        1 => Just(Plan::Lose),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    spec: SchedSpec,
    plans: Vec<Plan>,
    /// Interrupt after this many driver steps.
    interrupt_at: Option<u32>,
    /// Random Kill inputs: (step, job).
    kills: Vec<(u32, u32)>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let backends = prop::collection::vec(prop::option::of(1u32..5), 1..4);
    let resources = prop::collection::vec(1u64..6, 0..3);
    let max_parallel = prop::option::of(1u32..7);
    (backends, resources, max_parallel, 1usize..30).prop_flat_map(|(caps, res, max_parallel, n)| {
        let nb = caps.len() as u32;
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
                prop::sample::select(vec!["a", "b", "c"]),
            ),
            n,
        );
        let plans = prop::collection::vec(plan(), n);
        let interrupt_at = prop::option::weighted(0.3, 0u32..60);
        let kills = prop::collection::vec((0u32..80, 0..n as u32), 0..3);
        (
            jobs,
            plans,
            interrupt_at,
            kills,
            any::<u64>(),
            Just(caps),
            Just(res2),
            Just(max_parallel),
        )
            .prop_map(
                |(jobs, plans, interrupt_at, kills, seed, caps, res, max_parallel)| {
                    let jobs = jobs
                        .into_iter()
                        .enumerate()
                        .map(|(i, (prio, be, needs, when, slots, rs, to, pre))| {
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
                            JobSpec {
                                // Short prefixes make ties in name order up to the index.
                                name: format!("{pre}{}", i % 7),
                                priority: prio,
                                backend: be,
                                needs,
                                when,
                                slots,
                                resources,
                                timeout: to
                                    .map(|ms| (Duration::from_millis(ms), format!("{ms}ms"))),
                            }
                        })
                        .collect();
                    Case {
                        spec: SchedSpec {
                            jobs,
                            backends: caps
                                .iter()
                                .enumerate()
                                .map(|(i, &c)| BackendSpec {
                                    name: format!("be{i}"),
                                    max_parallel: c,
                                })
                                .collect(),
                            resources: res,
                            max_parallel,
                        },
                        plans,
                        interrupt_at,
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
}

/// The naive reference model, rebuilt from the actions.
struct Model {
    spec: SchedSpec,
    status: Vec<Status>,
    in_flight: Vec<bool>,
    /// Rank by naive comparison.
    rank: Vec<usize>,
    backends: Vec<ModelBackend>,
    res_used: Vec<u64>,
    running: u32,
    interrupted: bool,
    started: bool,
}

impl Model {
    fn new(spec: &SchedSpec) -> Model {
        let n = spec.jobs.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (&spec.jobs[a], &spec.jobs[b]);
            (std::cmp::Reverse(x.priority), &x.name, a).cmp(&(
                std::cmp::Reverse(y.priority),
                &y.name,
                b,
            ))
        });
        let mut rank = vec![0; n];
        for (r, &j) in order.iter().enumerate() {
            rank[j] = r;
        }
        Model {
            spec: spec.clone(),
            status: vec![Status::Scheduled; n],
            in_flight: vec![false; n],
            rank,
            backends: vec![ModelBackend::default(); spec.backends.len()],
            res_used: vec![0; spec.resources.len()],
            running: 0,
            interrupted: false,
            started: false,
        }
    }

    fn slots(&self, j: usize) -> u64 {
        u64::from(self.spec.jobs[j].slots.max(1))
    }

    /// Could job `j` start right now (naively)?
    fn fits(&self, j: usize) -> bool {
        let job = &self.spec.jobs[j];
        if self.interrupted {
            return false;
        }
        if let Some(m) = self.spec.max_parallel {
            if self.running >= m {
                return false;
            }
        }
        let b = &self.backends[job.backend as usize];
        if b.until.is_some() {
            return false;
        }
        if let Some(cap) = self.spec.backends[job.backend as usize].max_parallel {
            if b.used > 0 && b.used + self.slots(j) > u64::from(cap) {
                return false;
            }
        }
        job.resources
            .iter()
            .all(|&(r, a)| self.res_used[r as usize] + a <= self.spec.resources[r as usize])
    }

    /// Before the scheduler handles `input` at `now`: the backoff rule.
    fn before_input(&mut self, input: &Input, now: Instant) {
        for b in &mut self.backends {
            if b.until.is_some_and(|u| u <= now) {
                b.until = None;
            }
        }
        match *input {
            Input::Accepted(j) if self.in_flight[j as usize] => {
                let b = &mut self.backends[self.spec.jobs[j as usize].backend as usize];
                b.backoff_ms = 0;
                b.until = None;
                self.in_flight[j as usize] = false;
            }
            Input::Busy(j) if self.in_flight[j as usize] => {
                let b = &mut self.backends[self.spec.jobs[j as usize].backend as usize];
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
            _ => {}
        }
    }

    fn take(&mut self, j: usize, sign: bool) {
        let job = &self.spec.jobs[j];
        let slots = u64::from(job.slots.max(1));
        let b = &mut self.backends[job.backend as usize];
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
        let mut seen_batch = false;
        for a in actions {
            match a {
                Action::Status {
                    job,
                    old,
                    new,
                    reason,
                } => {
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
                    if new.is_terminal() && *new != Passed {
                        assert!(!reason.is_empty(), "job {j}: empty reason for {new:?}");
                        assert_eq!(s.reason(*job), reason);
                    } else {
                        assert!(reason.is_empty());
                    }
                    let deps = &self.spec.jobs[j].needs;
                    let dst = |x: &u32| self.status[*x as usize];
                    match (old, new) {
                        (Scheduled, Queued) | (Queued, Running) => {
                            assert!(self.started);
                            assert!(!self.interrupted, "job {j} readied/started after interrupt");
                            assert!(deps.iter().all(|d| dst(d).is_terminal()));
                            match self.spec.jobs[j].when {
                                When::AllPassed => assert!(deps.iter().all(|d| dst(d) == Passed)),
                                When::AnyPassed => assert!(
                                    deps.is_empty() || deps.iter().any(|d| dst(d) == Passed)
                                ),
                                When::Always => {}
                            }
                        }
                        (Scheduled, Skipped) => {
                            let ok = self.interrupted
                                || match self.spec.jobs[j].when {
                                    When::AllPassed => deps
                                        .iter()
                                        .any(|d| dst(d).is_terminal() && dst(d) != Passed),
                                    When::AnyPassed => {
                                        deps.iter().all(|d| dst(d).is_terminal())
                                            && !deps.iter().any(|d| dst(d) == Passed)
                                    }
                                    When::Always => false,
                                };
                            assert!(ok, "job {j} skipped wrongly: {reason}");
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
                        self.take(j, true);
                        self.in_flight[j] = true;
                        started[self.spec.jobs[j].backend as usize].push(*job);
                    }
                    if *old == Running {
                        self.take(j, false);
                        self.in_flight[j] = false;
                    }
                    self.status[j] = *new;
                    self.check_limits();
                }
                Action::Submit(b, js) => {
                    seen_batch = true;
                    assert_eq!(&started[*b as usize], js, "submit batch = dispatch order");
                    started[*b as usize].clear();
                }
                Action::Kill(b, js) => {
                    seen_batch = true;
                    assert!(!js.is_empty());
                    for &j in js {
                        assert_eq!(self.spec.jobs[j as usize].backend, *b);
                        assert_eq!(self.status[j as usize], Status::Running);
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

fn run_case(c: Case) {
    let n = c.spec.jobs.len();
    let mut s = Scheduler::new(c.spec.clone());
    let mut m = Model::new(&c.spec);
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
    let mut pending: Vec<JobIx> = Vec::new();
    let mut accepted: Vec<JobIx> = Vec::new();
    let mut killed_sent = vec![false; n];

    m.started = true;
    s.start(now);
    let acts = s.drain_actions();
    m.apply(&acts, &s);
    let absorb = |acts: &[Action], pending: &mut Vec<JobIx>, killed_sent: &mut Vec<bool>| {
        for a in acts {
            match a {
                Action::Submit(_, js) => pending.extend_from_slice(js),
                Action::Kill(_, js) => {
                    for &j in js {
                        killed_sent[j as usize] = true;
                    }
                }
                _ => {}
            }
        }
    };
    absorb(&acts, &mut pending, &mut killed_sent);

    let mut step = 0u32;
    while !s.is_done() {
        step += 1;
        assert!(step < 100_000, "run does not terminate");
        // Drop jobs the scheduler has ended.
        pending.retain(|&j| s.status(j) == Status::Running);
        accepted.retain(|&j| s.status(j) == Status::Running);
        let input = if c.interrupt_at.is_some_and(|k| step == k || step == k + 5) {
            Input::Interrupt(if rng.below(2) == 0 {
                Interrupt::Sigint
            } else {
                Interrupt::Sigterm
            })
        } else if let Some(&(_, j)) = c.kills.iter().find(|k| k.0 == step) {
            Input::Kill(j, "user kill".into())
        } else {
            let choices = pending.len() + accepted.len();
            let r = rng.below(choices + 2);
            if r < pending.len() {
                let j = pending.swap_remove(r);
                let ju = j as usize;
                if busy_left[ju] > 0 {
                    busy_left[ju] -= 1;
                    Input::Busy(j)
                } else if matches!(c.plans[ju], Plan::Reject) {
                    Input::Rejected(j, "no".into())
                } else {
                    accepted.push(j);
                    Input::Accepted(j)
                }
            } else if r < choices {
                let j = accepted.swap_remove(r - pending.len());
                let ju = j as usize;
                match c.plans[ju] {
                    Plan::Fail => Input::Finished(
                        j,
                        Outcome::Failed {
                            reason: "exit 1".into(),
                        },
                    ),
                    Plan::Kill => Input::Finished(
                        j,
                        Outcome::Killed {
                            reason: "oom".into(),
                        },
                    ),
                    Plan::Lose => Input::Lost(j, "gone".into()),
                    _ if killed_sent[ju] && rng.below(2) == 0 => Input::Finished(
                        j,
                        Outcome::Killed {
                            reason: String::new(),
                        },
                    ),
                    _ => Input::Finished(j, Outcome::Passed),
                }
            } else {
                if choices == 0 {
                    // Nothing in flight: the scheduler must ask for a wakeup.
                    let w = s.next_wakeup().expect("stuck: nothing running, no wakeup");
                    now = now.max(w);
                } else {
                    now += Duration::from_millis(rng.below(40) as u64);
                }
                Input::Tick
            }
        };
        if let Input::Started(_) = input {
            unreachable!()
        }
        m.before_input(&input, now);
        s.handle(input, now);
        if let Some(w) = s.next_wakeup() {
            assert!(w > now, "next_wakeup in the past: would spin");
        }
        let acts = s.drain_actions();
        m.apply(&acts, &s);
        absorb(&acts, &mut pending, &mut killed_sent);
    }
    for j in 0..n as u32 {
        let st = s.status(j);
        assert!(st.is_terminal());
        assert_eq!(st, m.status[j as usize]);
        if st != Status::Passed {
            assert!(!s.reason(j).is_empty());
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
