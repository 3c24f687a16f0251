//! The scheduler core: a sans-IO state machine (no threads, no clock reads, no I/O).
//!
//! # Rules
//!
//! * Statuses go Scheduled -> Queued -> Running -> Passed | Failed | Killed, or straight to
//!   Skipped / Killed for a job that never ran. Every change is reported as an
//!   [`Action::Status`]; every job that did not pass carries a [`Reason`].
//! * Dependencies: [`When::AllPassed`] jobs are skipped as soon as one dependency ends without
//!   passing ("dependency failed: X", "dependency killed: X", "dependency skipped: X");
//!   [`When::AnyPassed`] jobs wait for every dependency and are skipped when none passed ("no
//!   dependency passed: a, b"); [`When::Always`] jobs run once every dependency ended. A job
//!   without dependencies is ready at [`SchedulerApi::start`], whatever its `when`. Propagation
//!   uses a worklist (no recursion), so arbitrarily long chains are linear.
//! * Dispatch: ready jobs start in order of priority (higher first), then their order in the
//!   flow. Jobs are grouped into classes of equal (backend, slots, resources); a class whose
//!   head cannot start (backend cap full, resource short, backend in busy backoff, the
//!   backend's batch full) never holds back other classes. Limits: the global `max_parallel`
//!   (running jobs), each backend's `max_parallel` (sum of the `slots` of its running jobs) and
//!   each resource capacity (sum of the amounts of running jobs). A job larger than its backend
//!   cap (or asking more of a resource than its capacity) may still run alone, when that
//!   backend (resource) is idle, so that it never deadlocks. A cap of 0 counts as 1.
//! * Submits and kills are batched per backend until [`SchedulerApi::drain_actions`], which
//!   returns the status actions in order, then one `Kill` per backend, then one `Submit` per
//!   backend (in dispatch order). A Submit holds at most the backend's `max_batch` jobs: the
//!   next batch forms once answers come in, so no job is believed running while it waits
//!   anywhere but in the core.
//! * Answers: `Accepted` resets the backend's busy backoff; `Busy` puts the job back to Queued and
//!   makes the backend back off (10 ms, doubling per consecutive busy answer up to 1 s; several
//!   busy answers within one backoff window count once); `Rejected` fails the job; `Lost` fails
//!   it. Events may overtake answers: a start or an end of a job still in flight implies its
//!   acceptance, and the answer that comes after is ignored. A second end of a job is ignored.
//! * Judging: an end may carry its verdict (`Finished`) or announce it (`Ended`, then `Judged`
//!   once the log is scanned); the job keeps its slot until the verdict.
//! * Kills requested by the scheduler (the `Kill` input, a timeout, an interrupt) win: a job
//!   that ends in any way after a kill request (finished, rejected, lost) ends Killed with the
//!   kill reason, except a `Busy` answer, which makes it Killed while queued. A kill
//!   requested while the submission is in flight is sent once the backend accepts the job.
//! * Deadlines: a timeout starts when the job is submitted; at the deadline the job is killed
//!   with "timed out after TEXT". For a backend that enforces timeouts itself the deadline is
//!   the timeout plus the host's margin (a backstop). Once a kill is sent, the backend has its
//!   kill grace plus the margin to report the job's end; after that the core gives up on the
//!   job: it fails "lost by backend B: did not report after kill (...)", its slot is free, and
//!   whatever the backend says about it later is ignored.
//! * Retries: an attempt that fails (not by a kill the scheduler asked for) while the job has
//!   `retries` left that `retry_on` covers, and the run is neither interrupted nor stopped, is
//!   reported as [`Action::Retry`] and the job is Queued again; its dependents see nothing until
//!   the last attempt. With a `retry_backoff` the retried job is Queued but may start only
//!   after the backoff (doubled for each retry before it, at most an hour or the backoff
//!   itself), counted from the input that ended the attempt; [`SchedulerApi::next_wakeup`]
//!   includes that time, so the loop's `Tick` releases it.
//! * Interrupt: nothing starts any more but `when = "always"` jobs (the cleanup people write
//!   them for); running jobs get a kill ("killed by SIGINT while running"), queued jobs are
//!   Killed "killed while queued", scheduled ones Skipped "run interrupted by SIGINT". Always
//!   jobs are left to run once their dependencies end, each for at most the cleanup limit. A
//!   second interrupt sends the kills again. [`Input::Abandon`] (the loop's answer to a second
//!   signal) ends every job at once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use super::api::{
    Action, BackendIx, DependencyEnd, Input, Interrupt, JobIx, Outcome, Reason, SchedSpec,
    SchedulerApi, Status, When,
};
use crate::flow::Job;

/// The submission was emitted and not answered yet.
const IN_FLIGHT: u8 = 1;
/// The scheduler asked for a kill (the reason is in `reasons`).
const KILL_REQ: u8 = 2;
/// A Kill action was emitted (the job's deadline is now its kill deadline).
const KILL_SENT: u8 = 4;
/// At least one dependency passed.
const DEP_PASSED: u8 = 8;
/// The backend reported the job's end; the verdict is pending.
const ENDED: u8 = 16;

const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest wait before a retry, however often `retry_backoff` doubled (unless the backoff
/// itself is longer).
const RETRY_WAIT_MAX: Duration = Duration::from_secs(3600);
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
    max_batch: usize,
    /// Added to a timeout when the backend enforces timeouts itself.
    timeout_slack: Duration,
    /// How long after a kill the core waits for the job's end.
    kill_wait: Duration,
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
    /// Position of the job in the order (priority desc, index asc).
    rank: Vec<u32>,
    /// The job at each rank.
    by_rank: Vec<JobIx>,
    class: Vec<u32>,
    /// Dependencies not ended yet.
    remaining: Vec<u32>,
    /// Index into `timeouts`, or `NO_TIMEOUT`.
    timeout_ix: Vec<u32>,
    /// Terminal reasons; while running with `KILL_REQ`, the kill reason.
    reasons: Vec<Option<Box<Reason>>>,
    /// Dependencies (CSR).
    deps_off: Vec<u32>,
    deps: Vec<JobIx>,
    /// Dependents (CSR).
    rdeps_off: Vec<u32>,
    rdeps: Vec<JobIx>,
    /// Distinct timeouts; the last one is the cleanup limit after an interrupt.
    timeouts: Vec<(Duration, Box<str>)>,
    classes: Vec<Class>,
    backends: Vec<Backend>,
    res_cap: Vec<u64>,
    res_used: Vec<u64>,
    max_parallel: u64,
    running: u64,
    /// Deadlines of running jobs, timeouts and kill deadlines alike (lazily cleaned against
    /// `deadline_of`; `KILL_SENT` says which kind a job's deadline is).
    deadlines: BinaryHeap<Reverse<(Instant, JobIx)>>,
    deadline_of: HashMap<JobIx, Instant>,
    actions: Vec<Action>,
    worklist: Vec<JobIx>,
    cands: Vec<u32>,
    started: bool,
    interrupted: Option<Interrupt>,
    terminal: usize,
    now: Option<Instant>,
    /// Jobs with `retries`: the attempts they have left, what is retried and the backoff.
    retries: HashMap<JobIx, Retries>,
    /// Retried jobs waiting out their `retry_backoff`: `Queued`, but in no class heap until
    /// the time comes (lazily cleaned: a job no longer queued is dropped).
    retry_waits: BinaryHeap<Reverse<(Instant, JobIx)>>,
    /// Jobs that ended Failed so far.
    failures: u32,
    /// `--max-fail`, and whether running jobs may finish then.
    max_fail: Option<u32>,
    max_fail_wait: bool,
    /// The run stopped after `max_fail` failures.
    stopped: bool,
}

/// A job's `retries`, `retry_on` and `retry_backoff`, and how many retries it had.
#[derive(Debug)]
struct Retries {
    left: u32,
    on: crate::flow::RetryOn,
    backoff: Duration,
    taken: u32,
}

impl Retries {
    /// The wait before retry number `taken` (from 1): the backoff, doubled for each retry
    /// before it, at most [`RETRY_WAIT_MAX`] (or the backoff itself, if longer).
    fn wait(&self) -> Duration {
        let doublings = self.taken.saturating_sub(1).min(31);
        let cap = RETRY_WAIT_MAX.max(self.backoff);
        self.backoff
            .checked_mul(1 << doublings)
            .map_or(cap, |w| w.min(cap))
    }
}

fn to_u32(n: usize, what: &str) -> u32 {
    u32::try_from(n).unwrap_or_else(|_| panic!("scheduler: too many {what} ({n})"))
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

    fn backend_name(&self, j: JobIx) -> Box<str> {
        self.backends[self.backend_of(j) as usize].name.clone()
    }

    fn now(&self) -> Instant {
        self.now.expect("scheduler: time is set by start/handle")
    }

    fn has(&self, j: JobIx, flag: u8) -> bool {
        self.flags[j as usize] & flag != 0
    }

    /// Changes a job's status to a non-terminal one.
    fn set_status(&mut self, j: JobIx, new: Status) {
        let old = std::mem::replace(&mut self.status[j as usize], new);
        self.actions.push(Action::Status { job: j, old, new });
    }

    /// Ends a job (releasing nothing: the caller did) and queues it for propagation.
    fn end(&mut self, j: JobIx, new: Status, reason: Option<Reason>) {
        debug_assert!(new.is_terminal());
        debug_assert!((new == Status::Passed) == reason.is_none());
        let ju = j as usize;
        let old = std::mem::replace(&mut self.status[ju], new);
        debug_assert!(!old.is_terminal());
        self.reasons[ju] = reason.map(Box::new);
        self.flags[ju] &= !(IN_FLIGHT | KILL_REQ | KILL_SENT | ENDED);
        self.terminal += 1;
        if new == Status::Failed {
            self.failures += 1;
        }
        self.actions.push(Action::Status { job: j, old, new });
        self.worklist.push(j);
    }

    /// A dependency-free or dependency-satisfied job becomes ready. Before the start it stays
    /// `Scheduled` ([`SchedulerApi::start`] readies it): an earlier run's pass of it may still
    /// be fed ([`Input::Reused`] after the reuse of a job it needs).
    fn make_ready(&mut self, j: JobIx) {
        if !self.started {
            return;
        }
        if self.stopped {
            let max = self.max_fail.unwrap_or(1).max(1);
            self.end(j, Status::Skipped, Some(Reason::Stopped(max)));
            return;
        }
        if let Some(sig) = self.interrupted {
            if self.when[j as usize] != When::Always {
                self.end(j, Status::Skipped, Some(Reason::InterruptedWaiting(sig)));
                return;
            }
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
                        let ended = match st {
                            Status::Failed => DependencyEnd::Failed,
                            Status::Killed => DependencyEnd::Killed,
                            _ => DependencyEnd::Skipped,
                        };
                        let job = self.name(j).into();
                        self.end(d, Status::Skipped, Some(Reason::Dependency { ended, job }));
                    }
                    _ if self.remaining[du] > 0 => {}
                    When::AnyPassed if self.flags[du] & DEP_PASSED == 0 => {
                        let deps = self.deps_of(d);
                        let mut names = String::new();
                        for (i, &x) in deps.iter().take(5).enumerate() {
                            if i > 0 {
                                names.push_str(", ");
                            }
                            names.push_str(self.name(x));
                        }
                        if deps.len() > 5 {
                            names.push_str(", ...");
                        }
                        let r = Reason::NoDependencyPassed(names.into());
                        self.end(d, Status::Skipped, Some(r));
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
        if b.until.is_some() || b.submits.len() >= b.max_batch {
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
    /// After an interrupt only `when = "always"` jobs are queued, so only they start.
    fn dispatch(&mut self) {
        if !self.started {
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
        debug_assert!(self.interrupted.is_none() || self.when[ju] == When::Always);
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
        let slack = b.timeout_slack;
        let t = self.timeout_ix[ju];
        if t != NO_TIMEOUT {
            let (after, _) = &self.timeouts[t as usize];
            // A timeout too large for the clock is no deadline at all.
            if let Some(at) = now.checked_add(*after).and_then(|at| at.checked_add(slack)) {
                self.set_deadline(j, at);
            }
        }
        if self.interrupted.is_some() {
            self.limit_cleanup(j, now);
        }
    }

    /// Bounds an `always` job that runs during an interrupt by the cleanup limit, when its own
    /// timeout is longer.
    fn limit_cleanup(&mut self, j: JobIx, now: Instant) {
        let ju = j as usize;
        let cleanup = to_u32(self.timeouts.len() - 1, "timeouts");
        let own = self.timeout_ix[ju];
        if own == NO_TIMEOUT || self.timeouts[own as usize].0 > self.timeouts[cleanup as usize].0 {
            self.timeout_ix[ju] = cleanup;
            if self.status[ju] == Status::Running && !self.has(j, KILL_SENT | ENDED) {
                let at = now.checked_add(self.timeouts[cleanup as usize].0);
                if let Some(at) = at {
                    if self.deadline_of.get(&j).is_none_or(|&d| at < d) {
                        self.set_deadline(j, at);
                    }
                }
            }
        }
    }

    fn set_deadline(&mut self, j: JobIx, at: Instant) {
        self.deadlines.push(Reverse((at, j)));
        self.deadline_of.insert(j, at);
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
        if !self.deadline_of.is_empty() {
            self.deadline_of.remove(&j);
        }
    }

    /// The scheduler asks for the kill of a running job (once).
    fn request_kill(&mut self, j: JobIx, reason: Reason) {
        let ju = j as usize;
        if self.flags[ju] & (KILL_REQ | ENDED) != 0 {
            return;
        }
        self.flags[ju] |= KILL_REQ;
        self.reasons[ju] = Some(Box::new(reason));
        if self.flags[ju] & IN_FLIGHT == 0 {
            self.send_kill(j);
        } else {
            // Until the kill is sent there is nothing to wait for.
            self.deadline_of.remove(&j);
        }
    }

    /// Emits a kill and starts the kill deadline.
    fn send_kill(&mut self, j: JobIx) {
        self.flags[j as usize] |= KILL_SENT;
        let bk = self.backend_of(j) as usize;
        let b = &mut self.backends[bk];
        b.kills.push(j);
        let wait = b.kill_wait;
        match self.now().checked_add(wait) {
            Some(at) => self.set_deadline(j, at),
            None => {
                self.deadline_of.remove(&j);
            }
        }
    }

    /// The backend took the job: implied by a start or an end that overtook the answer.
    fn accept(&mut self, j: JobIx, send_pending_kill: bool) {
        let ju = j as usize;
        if self.flags[ju] & IN_FLIGHT == 0 {
            return;
        }
        self.flags[ju] &= !IN_FLIGHT;
        let bk = self.backend_of(j) as usize;
        let b = &mut self.backends[bk];
        b.backoff = Duration::ZERO;
        b.until = None;
        if send_pending_kill && self.flags[ju] & KILL_REQ != 0 {
            self.send_kill(j);
        }
    }

    /// A running job ended: with the kill reason if the scheduler asked for a kill.
    fn end_running(&mut self, j: JobIx, outcome: Outcome) {
        self.release(j);
        let ju = j as usize;
        if self.flags[ju] & KILL_REQ != 0 {
            let r = self.reasons[ju].take().map(|r| *r);
            self.end(j, Status::Killed, r);
        } else {
            let (st, r) = match outcome {
                Outcome::Passed => (Status::Passed, None),
                Outcome::Failed(r) => (Status::Failed, Some(r)),
                Outcome::Killed(r) => (Status::Killed, Some(r)),
            };
            match r {
                Some(r) if self.may_retry(j, &r) => self.retry(j, st, r),
                r => self.end(j, st, r),
            }
        }
    }

    /// Whether a failed attempt of `j` (not one the scheduler killed) is followed by another:
    /// the job has attempts left, `retry_on` covers the failure and the run is not stopping.
    fn may_retry(&mut self, j: JobIx, r: &Reason) -> bool {
        if self.interrupted.is_some() || self.stopped {
            return false;
        }
        match self.retries.get_mut(&j) {
            Some(rt) if rt.left > 0 && rt.on.covers(r.kind()) => {
                rt.left -= 1;
                rt.taken += 1;
                true
            }
            _ => false,
        }
    }

    /// The attempt failed and the job runs again: it is queued (the failure does not reach its
    /// dependents), and the loop records the attempt ([`Action::Retry`]). With a
    /// `retry_backoff` it may start only once the wait is over.
    fn retry(&mut self, j: JobIx, status: Status, reason: Reason) {
        let ju = j as usize;
        self.flags[ju] &= !(IN_FLIGHT | KILL_REQ | KILL_SENT | ENDED);
        self.status[ju] = Status::Queued;
        self.actions.push(Action::Retry {
            job: j,
            status,
            reason,
        });
        let wait = self.retries.get(&j).map_or(Duration::ZERO, Retries::wait);
        match self.now().checked_add(wait) {
            Some(at) if !wait.is_zero() => self.retry_waits.push(Reverse((at, j))),
            _ => {
                let c = self.class[ju] as usize;
                self.classes[c].heap.push(Reverse(self.rank[ju]));
            }
        }
    }

    /// Retried jobs whose backoff is over may start: into their class heaps.
    fn expire_retry_waits(&mut self, now: Instant) {
        while let Some(&Reverse((at, j))) = self.retry_waits.peek() {
            if at > now {
                break;
            }
            self.retry_waits.pop();
            let ju = j as usize;
            if self.status[ju] == Status::Queued {
                let c = self.class[ju] as usize;
                self.classes[c].heap.push(Reverse(self.rank[ju]));
            }
        }
    }

    fn is_running(&self, j: JobIx) -> bool {
        self.status.get(j as usize) == Some(&Status::Running)
    }

    fn in_flight(&self, j: JobIx) -> bool {
        self.is_running(j) && self.has(j, IN_FLIGHT)
    }

    /// Running and its end not reported yet.
    fn awaiting_end(&self, j: JobIx) -> bool {
        self.is_running(j) && !self.has(j, ENDED)
    }

    fn expire_backoffs(&mut self, now: Instant) {
        for b in &mut self.backends {
            if b.until.is_some_and(|u| u <= now) {
                b.until = None;
            }
        }
    }

    fn expire_deadlines(&mut self, now: Instant) {
        while let Some(&Reverse((at, j))) = self.deadlines.peek() {
            let live = self.deadline_of.get(&j) == Some(&at);
            if live && at > now {
                break;
            }
            self.deadlines.pop();
            if !live {
                continue;
            }
            self.deadline_of.remove(&j);
            if self.has(j, KILL_SENT) {
                self.give_up(j);
            } else {
                let text = &self.timeouts[self.timeout_ix[j as usize] as usize].1;
                let r = Reason::Timeout(text.clone());
                self.request_kill(j, r);
            }
        }
    }

    /// The backend did not report a killed job in time: the job fails as lost, and its slot
    /// goes to the next job. Whatever the backend says about it later is ignored.
    fn give_up(&mut self, j: JobIx) {
        let ju = j as usize;
        let kill = self.reasons[ju]
            .take()
            .unwrap_or_else(|| Box::new(Reason::Killed("killed".into())));
        let b = &self.backends[self.backend_of(j) as usize];
        let reason = Reason::KillUnconfirmed {
            backend: b.name.clone(),
            waited: b.kill_wait,
            kill,
        };
        self.release(j);
        self.end(j, Status::Failed, Some(reason));
    }

    /// Takes back the submissions not drained yet (never handed to a backend) that `keep`
    /// does not keep: they end Killed while queued.
    fn unsubmit(&mut self, sig: Interrupt, keep: impl Fn(&Self, JobIx) -> bool) {
        for b in 0..self.backends.len() {
            let pending = std::mem::take(&mut self.backends[b].submits);
            let mut kept = Vec::new();
            for j in pending {
                if keep(self, j) {
                    kept.push(j);
                } else {
                    self.release(j);
                    self.end(j, Status::Killed, Some(Reason::InterruptedQueued(sig)));
                }
            }
            self.backends[b].submits = kept;
        }
    }

    /// `--max-fail N`: once N jobs failed, nothing more starts. Jobs not handed over yet are
    /// killed (queued) or skipped (waiting), running ones killed unless `--wait`; all with
    /// "stopped after N failures". Unlike an interrupt, `when = "always"` jobs do not run
    /// either: the run is not being torn down by its user, it is cut short by its results.
    fn stop_after_failures(&mut self) {
        let Some(max) = self.max_fail else {
            return;
        };
        if self.stopped || self.interrupted.is_some() || self.failures < max.max(1) {
            return;
        }
        self.stopped = true;
        let why = Reason::Stopped(max.max(1));
        for b in 0..self.backends.len() {
            for j in std::mem::take(&mut self.backends[b].submits) {
                self.release(j);
                self.end(j, Status::Killed, Some(why.clone()));
            }
        }
        let n = to_u32(self.status.len(), "jobs");
        for j in 0..n {
            if self.status[j as usize] == Status::Scheduled {
                self.end(j, Status::Skipped, Some(why.clone()));
            }
        }
        for j in 0..n {
            match self.status[j as usize] {
                Status::Queued => self.end(j, Status::Killed, Some(why.clone())),
                Status::Running if !self.max_fail_wait => self.request_kill(j, why.clone()),
                _ => {}
            }
        }
        self.propagate();
    }

    fn interrupt(&mut self, sig: Interrupt) {
        let n = to_u32(self.status.len(), "jobs");
        if self.interrupted.is_some() {
            // A second interrupt sends the kills again.
            for j in 0..n {
                if self.is_running(j) && self.flags[j as usize] & (KILL_SENT | ENDED) == KILL_SENT {
                    // The kill deadline keeps running from the first kill.
                    let b = self.backend_of(j) as usize;
                    self.backends[b].kills.push(j);
                }
            }
            return;
        }
        self.interrupted = Some(sig);
        let always = |s: &Self, j: JobIx| s.when[j as usize] == When::Always;
        self.unsubmit(sig, always);
        // Scheduled ones first, so that none is skipped for a killed queued dependency instead.
        for j in 0..n {
            if self.status[j as usize] == Status::Scheduled && !always(self, j) {
                self.end(j, Status::Skipped, Some(Reason::InterruptedWaiting(sig)));
            }
        }
        let now = self.now();
        for j in 0..n {
            match self.status[j as usize] {
                Status::Running if always(self, j) => self.limit_cleanup(j, now),
                _ if always(self, j) => {}
                Status::Queued => self.end(j, Status::Killed, Some(Reason::InterruptedQueued(sig))),
                Status::Running => self.request_kill(j, Reason::InterruptedRunning(sig)),
                _ => {}
            }
        }
        self.propagate();
    }

    fn abandon(&mut self, sig: Interrupt) {
        let sig = *self.interrupted.get_or_insert(sig);
        self.unsubmit(sig, |_, _| false);
        let n = to_u32(self.status.len(), "jobs");
        for j in 0..n {
            if self.status[j as usize] == Status::Scheduled {
                self.end(j, Status::Skipped, Some(Reason::InterruptedWaiting(sig)));
            }
        }
        for j in 0..n {
            let ju = j as usize;
            match self.status[ju] {
                Status::Queued => self.end(j, Status::Killed, Some(Reason::InterruptedQueued(sig))),
                Status::Running => {
                    if self.flags[ju] & ENDED == 0 {
                        // Best effort: nobody waits for the answer.
                        let b = self.backend_of(j) as usize;
                        self.backends[b].kills.push(j);
                    }
                    let reason = match self.reasons[ju].take() {
                        Some(r) if self.flags[ju] & KILL_REQ != 0 => *r,
                        _ => Reason::InterruptedRunning(sig),
                    };
                    self.release(j);
                    self.end(j, Status::Killed, Some(reason));
                }
                _ => {}
            }
        }
        self.propagate();
    }

    fn on_input(&mut self, input: Input, now: Instant) -> bool {
        match input {
            Input::Reused(j) => {
                if self.started || self.status.get(j as usize) != Some(&Status::Scheduled) {
                    return false;
                }
                self.end(j, Status::Passed, None);
            }
            Input::Carried(j, status, reason) => {
                let carriable = matches!(status, Status::Failed | Status::Killed | Status::Skipped);
                if self.started
                    || !carriable
                    || self.status.get(j as usize) != Some(&Status::Scheduled)
                {
                    return false;
                }
                self.end(j, status, Some(reason));
                // Not this run's failure: `--max-fail` counts only what fails here.
                if status == Status::Failed {
                    self.failures -= 1;
                }
            }
            Input::RetriesUsed(j, n) => {
                let Some(rt) = self.retries.get_mut(&j).filter(|_| !self.started) else {
                    return false;
                };
                rt.left = rt.left.saturating_sub(n);
                rt.taken = rt.taken.saturating_add(n);
            }
            Input::Accepted(j) => {
                if !self.in_flight(j) {
                    return false;
                }
                self.accept(j, true);
            }
            Input::Busy(j) => {
                if !self.in_flight(j) {
                    return false;
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
                    let r = match self.reasons[ju].take().map(|r| *r) {
                        Some(Reason::InterruptedRunning(sig)) => Reason::InterruptedQueued(sig),
                        Some(r) => r,
                        None => Reason::Killed("killed".into()),
                    };
                    self.end(j, Status::Killed, Some(r));
                } else {
                    self.flags[ju] &= !IN_FLIGHT;
                    self.set_status(j, Status::Queued);
                    let c = self.class[ju] as usize;
                    self.classes[c].heap.push(Reverse(self.rank[ju]));
                }
            }
            Input::Rejected(j, error) => {
                if !self.in_flight(j) {
                    return false;
                }
                let backend = self.backend_name(j);
                let r = Reason::Rejected {
                    backend,
                    error: error.into(),
                };
                self.end_running(j, Outcome::Failed(r));
            }
            Input::Started(j) => {
                if !self.awaiting_end(j) {
                    return false;
                }
                self.accept(j, true);
            }
            Input::Finished(j, outcome) => {
                if !self.awaiting_end(j) {
                    return false;
                }
                self.accept(j, false);
                self.end_running(j, outcome);
            }
            Input::Ended(j) => {
                if !self.awaiting_end(j) {
                    return false;
                }
                self.accept(j, false);
                self.flags[j as usize] |= ENDED;
                // The end is in: no kill or timeout is due any more.
                self.deadline_of.remove(&j);
            }
            Input::Judged(j, outcome) => {
                if !self.is_running(j) || !self.has(j, ENDED) {
                    return false;
                }
                self.end_running(j, outcome);
            }
            Input::Lost(j, why) => {
                if !self.awaiting_end(j) {
                    return false;
                }
                self.accept(j, false);
                let backend = self.backend_name(j);
                let r = Reason::Lost {
                    backend,
                    why: why.into(),
                };
                self.end_running(j, Outcome::Failed(r));
            }
            Input::Kill(j, reason) => {
                let Some(&st) = self.status.get(j as usize) else {
                    return false;
                };
                match st {
                    Status::Scheduled | Status::Queued => self.end(j, Status::Killed, Some(reason)),
                    Status::Running => self.request_kill(j, reason),
                    _ => return false,
                }
            }
            Input::Interrupt(sig) => self.interrupt(sig),
            Input::Abandon(sig) => self.abandon(sig),
            Input::Tick => {}
        }
        true
    }
}

impl SchedulerApi for Scheduler {
    fn new(jobs: &[Job], spec: SchedSpec) -> Self {
        let SchedSpec {
            backends,
            resources,
            max_parallel,
            margin,
            cleanup_limit,
            max_fail,
            max_fail_wait,
        } = spec;
        let n = jobs.len();
        to_u32(n, "jobs");

        // Order: priority desc, then the flow's order (the job's index).
        let mut by_rank: Vec<JobIx> = (0..n as JobIx).collect();
        if jobs.windows(2).any(|w| w[0].priority < w[1].priority) {
            // Stable: equal priorities keep the flow's order.
            by_rank.sort_by_key(|&j| Reverse(jobs[j as usize].priority));
        }
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
        let mut timeout_of: HashMap<&(Duration, String), u32> = HashMap::new();
        let mut res: Vec<(u32, u64)> = Vec::new();
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
                job.backend < backends.len(),
                "scheduler: job {} has unknown backend {}",
                job.name,
                job.backend
            );
            res.clear();
            res.extend(job.resources.iter().copied().filter(|r| r.1 > 0));
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
            let backend = job.backend as BackendIx;
            let slots = u64::from(job.cpus.max(1));
            let last = class.last().map(|&c: &u32| &classes[c as usize]);
            let same_as_last = last
                .is_some_and(|l| (l.backend, l.slots, &*l.resources) == (backend, slots, &res[..]));
            let found = if same_as_last {
                class.last().copied()
            } else {
                class_ix.get(&(backend, slots, res.clone())).copied()
            };
            let c = match found {
                Some(c) => c,
                None => {
                    let c = to_u32(classes.len(), "classes");
                    classes.push(Class {
                        backend,
                        slots,
                        resources: res.clone().into_boxed_slice(),
                        heap: BinaryHeap::new(),
                    });
                    class_ix.insert((backend, slots, res.clone()), c);
                    c
                }
            };
            class.push(c);
            timeout_ix.push(match &job.timeout {
                None => NO_TIMEOUT,
                Some(t) => match timeout_of.get(t) {
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
        drop(timeout_of);
        timeouts.push((
            cleanup_limit,
            format!(
                "{} (the limit for cleanup jobs after an interrupt)",
                humantime::format_duration(cleanup_limit)
            )
            .into(),
        ));
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
                    max_batch: b.max_batch.max(1),
                    timeout_slack: if b.enforces_timeout {
                        margin
                    } else {
                        Duration::ZERO
                    },
                    kill_wait: b.kill_grace.saturating_add(margin),
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
            retries: jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| j.retries > 0)
                .map(|(i, j)| {
                    let rt = Retries {
                        left: j.retries,
                        on: j.retry_on,
                        backoff: j.retry_backoff,
                        taken: 0,
                    };
                    (i as JobIx, rt)
                })
                .collect(),
            retry_waits: BinaryHeap::new(),
            failures: 0,
            max_fail,
            max_fail_wait,
            stopped: false,
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

    fn handle(&mut self, input: Input, now: Instant) -> bool {
        self.now = Some(now);
        self.expire_backoffs(now);
        self.expire_retry_waits(now);
        let applied = self.on_input(input, now);
        self.expire_deadlines(now);
        self.propagate();
        self.stop_after_failures();
        self.dispatch();
        applied
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

    fn has_actions(&self) -> bool {
        !self.actions.is_empty()
            || self
                .backends
                .iter()
                .any(|b| !b.kills.is_empty() || !b.submits.is_empty())
    }

    fn next_wakeup(&self) -> Option<Instant> {
        if self.is_done() {
            return None;
        }
        let backoff = self.backends.iter().filter_map(|b| b.until);
        let deadline = self.deadlines.peek().map(|Reverse((at, _))| *at);
        let retry = self.retry_waits.peek().map(|Reverse((at, _))| *at);
        backoff.chain(deadline).chain(retry).min()
    }

    fn is_done(&self) -> bool {
        self.terminal == self.status.len()
    }

    fn interrupted(&self) -> Option<Interrupt> {
        self.interrupted
    }

    fn status(&self, job: JobIx) -> Status {
        self.status[job as usize]
    }

    fn reason(&self, job: JobIx) -> Option<&Reason> {
        let ju = job as usize;
        if self.status[ju].is_terminal() {
            self.reasons[ju].as_deref()
        } else {
            None
        }
    }
}
