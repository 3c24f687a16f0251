//! The scheduler core: a sans-IO state machine (no threads, no clock reads, no I/O).
//!
//! # Rules
//!
//! * Statuses go Scheduled -> Queued -> Running -> Passed | Failed | Killed, or straight to
//!   Skipped / Killed for a job that never ran. Every change is reported as an
//!   [`Action::Status`]; every job that did not pass carries a non-empty reason.
//! * Dependencies: [`When::AllPassed`] jobs are skipped as soon as one dependency ends without
//!   passing ("dependency failed: X", "dependency killed: X", "dependency skipped: X");
//!   [`When::AnyPassed`] jobs wait for every dependency and are skipped when none passed ("no
//!   dependency passed: a, b"); [`When::Always`] jobs run once every dependency ended. A job
//!   without dependencies is ready at [`SchedulerApi::start`], whatever its `when`. Propagation
//!   uses a worklist (no recursion), so arbitrarily long chains are linear.
//! * Dispatch: ready jobs start in order of priority (higher first), then name (ascending), then
//!   index. Jobs are grouped into classes of equal (backend, slots, resources); a class whose
//!   head cannot start (backend cap full, resource short, backend in busy backoff) never holds
//!   back other classes. Limits: the global `max_parallel` (running jobs), each backend's
//!   `max_parallel` (sum of the `slots` of its running jobs) and each resource capacity (sum of
//!   the amounts of running jobs). A job larger than its backend cap (or asking more of a
//!   resource than its capacity) may still run alone, when that backend (resource) is idle, so
//!   that it never deadlocks. A cap of 0 counts as 1.
//! * Submits and kills are batched per backend until [`SchedulerApi::drain_actions`], which
//!   returns the status actions in order, then one `Kill` per backend, then one `Submit` per
//!   backend (in dispatch order).
//! * Answers: `Accepted` resets the backend's busy backoff; `Busy` puts the job back to Queued and
//!   makes the backend back off (10 ms, doubling per consecutive busy answer up to 1 s; several
//!   busy answers within one backoff window count once); `Rejected` fails the job; `Lost` fails
//!   it.
//! * Kills requested by the scheduler (the `Kill` input, a timeout, an interrupt) win: a job
//!   that ends in any way after a kill request (finished, rejected, lost) ends Killed with the
//!   kill reason, except a `Busy` answer, which makes it Killed "killed while queued". A kill
//!   requested while the submission is in flight is sent once the backend accepts the job.
//! * Timeouts start when the job is submitted; at the deadline the job is killed with "timed
//!   out after TEXT".
//! * Interrupt: nothing starts any more; running jobs get a kill ("killed by SIGINT while
//!   running"), queued jobs are Killed "killed while queued", scheduled ones Skipped "run
//!   interrupted by SIGINT". A second interrupt sends the kills again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use super::api::{
    Action, BackendIx, Input, Interrupt, JobIx, Outcome, SchedSpec, SchedulerApi, Status, When,
};

/// The submission was emitted and not answered yet.
const IN_FLIGHT: u8 = 1;
/// The scheduler asked for a kill (the reason is in `reasons`).
const KILL_REQ: u8 = 2;
/// A Kill action was emitted.
const KILL_SENT: u8 = 4;
/// At least one dependency passed.
const DEP_PASSED: u8 = 8;

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const NO_TIMEOUT: u32 = u32::MAX;

/// A class: (backend, slots, sorted resources).
type ClassKey = (BackendIx, u64, Vec<(u32, u64)>);

/// Jobs of one shape: same backend, slots and resources. They compete only among themselves
/// in rank order; if the head of the class cannot start, no job of the class can.
#[derive(Debug)]
struct Class {
    backend: BackendIx,
    slots: u64,
    resources: Box<[(u32, u64)]>,
    /// Ranks of the queued jobs (lazily cleaned: entries of jobs no longer queued are skipped).
    heap: BinaryHeap<Reverse<u32>>,
}

#[derive(Debug)]
struct Backend {
    name: Box<str>,
    cap: Option<u64>,
    /// Slots of the running jobs.
    used: u64,
    /// The current backoff step (zero when not backing off).
    backoff: Duration,
    /// No submits before this.
    until: Option<Instant>,
    submits: Vec<JobIx>,
    kills: Vec<JobIx>,
}

/// The scheduler state machine. See the module documentation for its rules.
#[derive(Debug)]
pub struct Scheduler {
    /// All job names, concatenated; job `j` is `names[name_off[j]..name_off[j + 1]]`.
    names: String,
    name_off: Vec<u32>,
    status: Vec<Status>,
    flags: Vec<u8>,
    when: Vec<When>,
    /// Position of the job in the order (priority desc, name asc, index asc).
    rank: Vec<u32>,
    /// The job at each rank.
    by_rank: Vec<JobIx>,
    class: Vec<u32>,
    /// Dependencies not ended yet.
    remaining: Vec<u32>,
    /// Index into `timeouts`, or `NO_TIMEOUT`.
    timeout_ix: Vec<u32>,
    /// Terminal reasons; while running with `KILL_REQ`, the kill reason.
    reasons: Vec<Option<Box<str>>>,
    /// Dependencies (CSR).
    deps_off: Vec<u32>,
    deps: Vec<JobIx>,
    /// Dependents (CSR).
    rdeps_off: Vec<u32>,
    rdeps: Vec<JobIx>,
    /// Distinct timeouts.
    timeouts: Vec<(Duration, Box<str>)>,
    classes: Vec<Class>,
    backends: Vec<Backend>,
    res_cap: Vec<u64>,
    res_used: Vec<u64>,
    max_parallel: u64,
    running: u64,
    /// Deadlines of running jobs (lazily cleaned against `deadline_of`).
    deadlines: BinaryHeap<Reverse<(Instant, JobIx)>>,
    deadline_of: HashMap<JobIx, Instant>,
    actions: Vec<Action>,
    worklist: Vec<JobIx>,
    cands: Vec<u32>,
    started: bool,
    interrupted: Option<Interrupt>,
    terminal: usize,
    now: Option<Instant>,
}

fn to_u32(n: usize, what: &str) -> u32 {
    u32::try_from(n).unwrap_or_else(|_| panic!("scheduler: too many {what} ({n})"))
}

fn non_empty(s: &str, default: &str) -> Box<str> {
    if s.is_empty() {
        default.into()
    } else {
        s.into()
    }
}

impl Scheduler {
    fn name(&self, j: JobIx) -> &str {
        let j = j as usize;
        &self.names[self.name_off[j] as usize..self.name_off[j + 1] as usize]
    }

    fn deps_of(&self, j: JobIx) -> &[JobIx] {
        let j = j as usize;
        &self.deps[self.deps_off[j] as usize..self.deps_off[j + 1] as usize]
    }

    fn backend_of(&self, j: JobIx) -> BackendIx {
        self.classes[self.class[j as usize] as usize].backend
    }

    fn now(&self) -> Instant {
        self.now.expect("scheduler: time is set by start/handle")
    }

    /// Changes a job's status to a non-terminal one.
    fn set_status(&mut self, j: JobIx, new: Status) {
        let old = std::mem::replace(&mut self.status[j as usize], new);
        self.actions.push(Action::Status {
            job: j,
            old,
            new,
            reason: String::new(),
        });
    }

    /// Ends a job (releasing nothing: the caller did) and queues it for propagation.
    fn end(&mut self, j: JobIx, new: Status, reason: Option<Box<str>>) {
        debug_assert!(new.is_terminal());
        debug_assert!(new == Status::Passed || reason.as_deref().is_some_and(|r| !r.is_empty()));
        let ju = j as usize;
        let old = std::mem::replace(&mut self.status[ju], new);
        debug_assert!(!old.is_terminal());
        let text = reason.as_deref().map(String::from).unwrap_or_default();
        self.reasons[ju] = reason;
        self.flags[ju] &= !(IN_FLIGHT | KILL_REQ | KILL_SENT);
        self.terminal += 1;
        self.actions.push(Action::Status {
            job: j,
            old,
            new,
            reason: text,
        });
        self.worklist.push(j);
    }

    /// A dependency-free or dependency-satisfied job becomes ready.
    fn make_ready(&mut self, j: JobIx) {
        if let Some(sig) = self.interrupted {
            let r = format!("run interrupted by {}", sig.name());
            self.end(j, Status::Skipped, Some(r.into()));
            return;
        }
        self.set_status(j, Status::Queued);
        let c = self.class[j as usize] as usize;
        self.classes[c].heap.push(Reverse(self.rank[j as usize]));
    }

    /// Propagates the ends queued in the worklist to the dependents, iteratively.
    fn propagate(&mut self) {
        while let Some(j) = self.worklist.pop() {
            let st = self.status[j as usize];
            let (lo, hi) = (
                self.rdeps_off[j as usize] as usize,
                self.rdeps_off[j as usize + 1] as usize,
            );
            for k in lo..hi {
                let d = self.rdeps[k];
                let du = d as usize;
                if self.status[du] != Status::Scheduled {
                    continue;
                }
                self.remaining[du] -= 1;
                if st == Status::Passed {
                    self.flags[du] |= DEP_PASSED;
                }
                match self.when[du] {
                    When::AllPassed if st != Status::Passed => {
                        let how = match st {
                            Status::Failed => "failed",
                            Status::Killed => "killed",
                            _ => "skipped",
                        };
                        let r = format!("dependency {how}: {}", self.name(j));
                        self.end(d, Status::Skipped, Some(r.into()));
                    }
                    _ if self.remaining[du] > 0 => {}
                    When::AnyPassed if self.flags[du] & DEP_PASSED == 0 => {
                        let deps = self.deps_of(d);
                        let mut r = String::from("no dependency passed: ");
                        for (i, &x) in deps.iter().take(5).enumerate() {
                            if i > 0 {
                                r.push_str(", ");
                            }
                            r.push_str(self.name(x));
                        }
                        if deps.len() > 5 {
                            r.push_str(", ...");
                        }
                        self.end(d, Status::Skipped, Some(r.into()));
                    }
                    _ => self.make_ready(d),
                }
            }
        }
    }

    /// Whether the head of class `c` may start now.
    fn fits(&self, c: usize) -> bool {
        let cl = &self.classes[c];
        let b = &self.backends[cl.backend as usize];
        if b.until.is_some() {
            return false;
        }
        if let Some(cap) = b.cap {
            if b.used > 0 && b.used + cl.slots > cap {
                return false;
            }
        }
        cl.resources.iter().all(|&(r, a)| {
            let used = self.res_used[r as usize];
            used == 0 || used + a <= self.res_cap[r as usize]
        })
    }

    /// The rank at the head of class `c`, dropping stale entries.
    fn head(&mut self, c: usize) -> Option<u32> {
        let cl = &mut self.classes[c];
        while let Some(&Reverse(r)) = cl.heap.peek() {
            if self.status[self.by_rank[r as usize] as usize] == Status::Queued {
                return Some(r);
            }
            cl.heap.pop();
        }
        None
    }

    /// Starts queued jobs while the limits allow, best rank first among the classes that fit.
    fn dispatch(&mut self) {
        if self.interrupted.is_some() || !self.started {
            return;
        }
        let mut cands = std::mem::take(&mut self.cands);
        cands.clear();
        cands.extend(0..to_u32(self.classes.len(), "classes"));
        let now = self.now();
        while self.running < self.max_parallel {
            // Within one dispatch, limits only tighten: a class that does not fit is dropped.
            let mut best: Option<(u32, usize)> = None;
            let mut i = 0;
            while i < cands.len() {
                let c = cands[i] as usize;
                match self.head(c) {
                    Some(r) if self.fits(c) => {
                        if best.is_none_or(|(br, _)| r < br) {
                            best = Some((r, c));
                        }
                        i += 1;
                    }
                    _ => {
                        cands.swap_remove(i);
                    }
                }
            }
            let Some((r, c)) = best else { break };
            self.classes[c].heap.pop();
            let j = self.by_rank[r as usize];
            self.submit(j, c, now);
        }
        self.cands = cands;
    }

    fn submit(&mut self, j: JobIx, c: usize, now: Instant) {
        let ju = j as usize;
        self.set_status(j, Status::Running);
        self.flags[ju] |= IN_FLIGHT;
        self.running += 1;
        let cl = &self.classes[c];
        for &(r, a) in cl.resources.iter() {
            self.res_used[r as usize] += a;
        }
        let b = &mut self.backends[cl.backend as usize];
        b.used += cl.slots;
        b.submits.push(j);
        let t = self.timeout_ix[ju];
        if t != NO_TIMEOUT {
            let at = now + self.timeouts[t as usize].0;
            self.deadlines.push(Reverse((at, j)));
            self.deadline_of.insert(j, at);
        }
    }

    /// Gives back what a running job holds.
    fn release(&mut self, j: JobIx) {
        let ju = j as usize;
        debug_assert_eq!(self.status[ju], Status::Running);
        self.running -= 1;
        let cl = &self.classes[self.class[ju] as usize];
        for &(r, a) in cl.resources.iter() {
            self.res_used[r as usize] -= a;
        }
        self.backends[cl.backend as usize].used -= cl.slots;
        if self.timeout_ix[ju] != NO_TIMEOUT {
            self.deadline_of.remove(&j);
        }
    }

    /// The scheduler asks for the kill of a running job (once).
    fn request_kill(&mut self, j: JobIx, reason: Box<str>) {
        let ju = j as usize;
        if self.flags[ju] & KILL_REQ != 0 {
            return;
        }
        self.flags[ju] |= KILL_REQ;
        self.reasons[ju] = Some(reason);
        if self.flags[ju] & IN_FLIGHT == 0 {
            self.send_kill(j);
        }
    }

    fn send_kill(&mut self, j: JobIx) {
        self.flags[j as usize] |= KILL_SENT;
        let b = self.backend_of(j);
        self.backends[b as usize].kills.push(j);
    }

    /// A running job ended: with the kill reason if the scheduler asked for a kill.
    fn end_running(&mut self, j: JobIx, new: Status, reason: Option<Box<str>>) {
        self.release(j);
        let ju = j as usize;
        if self.flags[ju] & KILL_REQ != 0 {
            let r = self.reasons[ju].take();
            self.end(j, Status::Killed, r);
        } else {
            self.end(j, new, reason);
        }
    }

    fn is_running(&self, j: JobIx) -> bool {
        self.status.get(j as usize) == Some(&Status::Running)
    }

    fn in_flight(&self, j: JobIx) -> bool {
        self.is_running(j) && self.flags[j as usize] & IN_FLIGHT != 0
    }

    fn expire_backoffs(&mut self, now: Instant) {
        for b in &mut self.backends {
            if b.until.is_some_and(|u| u <= now) {
                b.until = None;
            }
        }
    }

    fn expire_timeouts(&mut self, now: Instant) {
        while let Some(&Reverse((at, j))) = self.deadlines.peek() {
            let live = self.deadline_of.get(&j) == Some(&at);
            if live && at > now {
                break;
            }
            self.deadlines.pop();
            if live {
                self.deadline_of.remove(&j);
                let text = &self.timeouts[self.timeout_ix[j as usize] as usize].1;
                let r = format!("timed out after {text}");
                self.request_kill(j, r.into());
            }
        }
    }

    fn interrupt(&mut self, sig: Interrupt) {
        let first = self.interrupted.is_none();
        self.interrupted = Some(sig);
        let skipped = format!("run interrupted by {}", sig.name());
        let killed = format!("killed by {} while running", sig.name());
        let n = to_u32(self.status.len(), "jobs");
        // Scheduled ones first, so that none is skipped for a killed queued dependency instead.
        for j in 0..n {
            if self.status[j as usize] == Status::Scheduled {
                self.end(j, Status::Skipped, Some(skipped.as_str().into()));
            }
        }
        for j in 0..n {
            let ju = j as usize;
            match self.status[ju] {
                Status::Queued => self.end(j, Status::Killed, Some("killed while queued".into())),
                Status::Running => {
                    if self.flags[ju] & KILL_REQ == 0 {
                        self.request_kill(j, killed.as_str().into());
                    } else if !first && self.flags[ju] & IN_FLIGHT == 0 {
                        // A second interrupt sends the kills again.
                        self.send_kill(j);
                    }
                }
                _ => {}
            }
        }
        // Every dependent is terminal by now: this only drains the worklist.
        self.propagate();
    }

    fn on_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Accepted(j) => {
                if !self.in_flight(j) {
                    return;
                }
                let ju = j as usize;
                self.flags[ju] &= !IN_FLIGHT;
                let bk = self.backend_of(j) as usize;
                let b = &mut self.backends[bk];
                b.backoff = Duration::ZERO;
                b.until = None;
                if self.flags[ju] & KILL_REQ != 0 {
                    self.send_kill(j);
                }
            }
            Input::Busy(j) => {
                if !self.in_flight(j) {
                    return;
                }
                let ju = j as usize;
                self.release(j);
                let bk = self.backend_of(j) as usize;
                let b = &mut self.backends[bk];
                if b.until.is_none_or(|u| now >= u) {
                    b.backoff = if b.backoff.is_zero() {
                        BACKOFF_MIN
                    } else {
                        (b.backoff * 2).min(BACKOFF_MAX)
                    };
                    b.until = Some(now + b.backoff);
                }
                if self.flags[ju] & KILL_REQ != 0 {
                    self.end(j, Status::Killed, Some("killed while queued".into()));
                } else {
                    self.flags[ju] &= !IN_FLIGHT;
                    self.set_status(j, Status::Queued);
                    let c = self.class[ju] as usize;
                    self.classes[c].heap.push(Reverse(self.rank[ju]));
                }
            }
            Input::Rejected(j, err) => {
                if !self.is_running(j) {
                    return;
                }
                let b = &self.backends[self.backend_of(j) as usize].name;
                let r = format!("rejected by backend {b}: {err}");
                self.end_running(j, Status::Failed, Some(r.into()));
            }
            Input::Started(_) => {}
            Input::Finished(j, outcome) => {
                if !self.is_running(j) {
                    return;
                }
                let (st, r) = match outcome {
                    Outcome::Passed => (Status::Passed, None),
                    Outcome::Failed { reason } => {
                        (Status::Failed, Some(non_empty(&reason, "failed")))
                    }
                    Outcome::Killed { reason } => {
                        (Status::Killed, Some(non_empty(&reason, "killed")))
                    }
                };
                self.end_running(j, st, r);
            }
            Input::Lost(j, why) => {
                if !self.is_running(j) {
                    return;
                }
                let b = &self.backends[self.backend_of(j) as usize].name;
                let r = format!("lost by backend {b}: {why}");
                self.end_running(j, Status::Failed, Some(r.into()));
            }
            Input::Kill(j, reason) => {
                let Some(&st) = self.status.get(j as usize) else {
                    return;
                };
                let reason = non_empty(&reason, "killed");
                match st {
                    Status::Scheduled | Status::Queued => self.end(j, Status::Killed, Some(reason)),
                    Status::Running => self.request_kill(j, reason),
                    _ => {}
                }
            }
            Input::Interrupt(sig) => self.interrupt(sig),
            Input::Tick => {}
        }
    }
}

impl SchedulerApi for Scheduler {
    fn new(spec: SchedSpec) -> Self {
        let SchedSpec {
            jobs,
            backends,
            resources,
            max_parallel,
        } = spec;
        let n = jobs.len();
        to_u32(n, "jobs");

        // Order: priority desc, name asc, index asc.
        // Keys inline (not behind `jobs[i]`) for cache locality; indices are distinct, so the
        // unstable sort is deterministic.
        let mut keys: Vec<(Reverse<i64>, &str, JobIx)> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (Reverse(j.priority), j.name.as_str(), i as JobIx))
            .collect();
        if !keys.is_sorted() {
            keys.sort_unstable();
        }
        let by_rank: Vec<JobIx> = keys.iter().map(|k| k.2).collect();
        drop(keys);
        let mut rank = vec![0u32; n];
        for (r, &j) in by_rank.iter().enumerate() {
            rank[j as usize] = r as u32;
        }

        let mut names = String::with_capacity(jobs.iter().map(|j| j.name.len()).sum());
        let mut name_off = Vec::with_capacity(n + 1);
        let mut deps_off = Vec::with_capacity(n + 1);
        let mut deps = Vec::with_capacity(jobs.iter().map(|j| j.needs.len()).sum());
        let mut rdeg = vec![0u32; n + 1];
        let mut when = Vec::with_capacity(n);
        let mut remaining = Vec::with_capacity(n);
        let mut class = Vec::with_capacity(n);
        let mut timeout_ix = Vec::with_capacity(n);
        let mut classes: Vec<Class> = Vec::new();
        let mut class_ix: HashMap<ClassKey, u32> = HashMap::new();
        let mut timeouts: Vec<(Duration, Box<str>)> = Vec::new();
        let mut timeout_of: HashMap<(Duration, String), u32> = HashMap::new();
        name_off.push(0);
        deps_off.push(0);
        for job in jobs {
            names.push_str(&job.name);
            name_off.push(to_u32(names.len(), "name bytes"));
            for &d in &job.needs {
                assert!(
                    (d as usize) < n,
                    "scheduler: job {} needs unknown job {d}",
                    job.name
                );
                rdeg[d as usize] += 1;
            }
            deps.extend_from_slice(&job.needs);
            deps_off.push(to_u32(deps.len(), "dependencies"));
            when.push(job.when);
            remaining.push(job.needs.len() as u32);
            assert!(
                (job.backend as usize) < backends.len(),
                "scheduler: job {} has unknown backend {}",
                job.name,
                job.backend
            );
            let mut res = job.resources;
            res.retain(|r| r.1 > 0);
            res.sort_unstable();
            // Merge repeated resources.
            res.dedup_by(|b, a| {
                let same = a.0 == b.0;
                if same {
                    a.1 += b.1;
                }
                same
            });
            for &(r, _) in &res {
                assert!(
                    (r as usize) < resources.len(),
                    "scheduler: unknown resource {r}"
                );
            }
            let key = (job.backend, u64::from(job.slots.max(1)), res);
            let last = class.last().map(|&c: &u32| &classes[c as usize]);
            let same_as_last = last.is_some_and(|l| {
                (l.backend, l.slots, &*l.resources) == (key.0, key.1, key.2.as_slice())
            });
            let found = if same_as_last {
                class.last().copied()
            } else {
                class_ix.get(&key).copied()
            };
            let c = match found {
                Some(c) => c,
                None => {
                    let c = to_u32(classes.len(), "classes");
                    classes.push(Class {
                        backend: key.0,
                        slots: key.1,
                        resources: key.2.clone().into_boxed_slice(),
                        heap: BinaryHeap::new(),
                    });
                    class_ix.insert(key, c);
                    c
                }
            };
            class.push(c);
            timeout_ix.push(match job.timeout {
                None => NO_TIMEOUT,
                Some(t) => match timeout_of.get(&t) {
                    Some(&i) => i,
                    None => {
                        let i = to_u32(timeouts.len(), "timeouts");
                        timeouts.push((t.0, t.1.as_str().into()));
                        timeout_of.insert(t, i);
                        i
                    }
                },
            });
        }
        // Dependents, in CSR form.
        let mut rdeps_off = Vec::with_capacity(n + 1);
        let mut acc = 0u32;
        for &d in &rdeg[..n] {
            rdeps_off.push(acc);
            acc += d;
        }
        rdeps_off.push(acc);
        let mut fill: Vec<u32> = rdeps_off[..n].to_vec();
        let mut rdeps = vec![0; acc as usize];
        for j in 0..n {
            for k in deps_off[j]..deps_off[j + 1] {
                let d = deps[k as usize] as usize;
                rdeps[fill[d] as usize] = j as u32;
                fill[d] += 1;
            }
        }
        drop(fill);
        drop(rdeg);

        let res_used = vec![0; resources.len()];
        Scheduler {
            names,
            name_off,
            status: vec![Status::Scheduled; n],
            flags: vec![0; n],
            when,
            rank,
            by_rank,
            class,
            remaining,
            timeout_ix,
            reasons: std::iter::repeat_with(|| None).take(n).collect(),
            deps_off,
            deps,
            rdeps_off,
            rdeps,
            timeouts,
            classes,
            backends: backends
                .into_iter()
                .map(|b| Backend {
                    name: b.name.into(),
                    cap: b.max_parallel.map(|c| u64::from(c.max(1))),
                    used: 0,
                    backoff: Duration::ZERO,
                    until: None,
                    submits: Vec::new(),
                    kills: Vec::new(),
                })
                .collect(),
            res_cap: resources,
            res_used,
            max_parallel: max_parallel.map_or(u64::MAX, |m| u64::from(m.max(1))),
            running: 0,
            deadlines: BinaryHeap::new(),
            deadline_of: HashMap::new(),
            actions: Vec::new(),
            worklist: Vec::new(),
            cands: Vec::new(),
            started: false,
            interrupted: None,
            terminal: 0,
            now: None,
        }
    }

    fn start(&mut self, now: Instant) {
        if self.started {
            return;
        }
        self.started = true;
        self.now = Some(now);
        let n = self.status.len();
        // Bulk-build the class heaps (linear) rather than pushing one by one.
        let mut ready: Vec<Vec<Reverse<u32>>> =
            (0..self.classes.len()).map(|_| Vec::new()).collect();
        for j in 0..n {
            if self.remaining[j] == 0 && self.status[j] == Status::Scheduled {
                self.set_status(j as u32, Status::Queued);
                ready[self.class[j] as usize].push(Reverse(self.rank[j]));
            }
        }
        for (c, v) in ready.into_iter().enumerate() {
            let mut v = v;
            v.extend(self.classes[c].heap.drain());
            self.classes[c].heap = BinaryHeap::from(v);
        }
        self.dispatch();
    }

    fn handle(&mut self, input: Input, now: Instant) {
        self.now = Some(now);
        self.expire_backoffs(now);
        self.on_input(input, now);
        self.expire_timeouts(now);
        self.propagate();
        self.dispatch();
    }

    fn drain_actions(&mut self) -> Vec<Action> {
        let mut out = std::mem::take(&mut self.actions);
        for (b, be) in self.backends.iter_mut().enumerate() {
            if !be.kills.is_empty() {
                out.push(Action::Kill(b as BackendIx, std::mem::take(&mut be.kills)));
            }
        }
        for (b, be) in self.backends.iter_mut().enumerate() {
            if !be.submits.is_empty() {
                out.push(Action::Submit(
                    b as BackendIx,
                    std::mem::take(&mut be.submits),
                ));
            }
        }
        out
    }

    fn next_wakeup(&self) -> Option<Instant> {
        if self.is_done() {
            return None;
        }
        // After an interrupt nothing starts: backoffs no longer matter.
        let backoff = match self.interrupted {
            None => self.backends.iter().filter_map(|b| b.until).min(),
            Some(_) => None,
        };
        let deadline = self.deadlines.peek().map(|Reverse((at, _))| *at);
        match (backoff, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_done(&self) -> bool {
        self.terminal == self.status.len()
    }

    fn status(&self, job: JobIx) -> Status {
        self.status[job as usize]
    }

    fn reason(&self, job: JobIx) -> &str {
        let ju = job as usize;
        if self.status[ju].is_terminal() {
            self.reasons[ju].as_deref().unwrap_or("")
        } else {
            ""
        }
    }
}
