//! Unit tests of the scheduler rules and scale tests (100k jobs, checked for correctness only).
//! Timings are measured by `cargo run --release -p flowrun --example sched_bench`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::fixtures::*;
use super::*;

/// A scheduler, a clock and the actions seen.
struct H {
    s: Scheduler,
    t0: Instant,
    now: Instant,
}

impl H {
    fn new(f: Fixture) -> H {
        let t0 = Instant::now();
        H {
            s: f.scheduler(),
            t0,
            now: t0,
        }
    }
    fn start(&mut self) -> Vec<Action> {
        self.s.start(self.now);
        self.s.drain_actions()
    }
    fn feed(&mut self, i: Input) -> Vec<Action> {
        self.s.handle(i, self.now);
        self.s.drain_actions()
    }
    fn at_ms(&mut self, ms: u64) {
        self.now = self.t0 + Duration::from_millis(ms);
    }
    fn ms(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
    fn st(&self, j: JobIx) -> Status {
        self.s.status(j)
    }
    fn why(&self, j: JobIx) -> String {
        self.s.reason(j).map(|r| r.to_string()).unwrap_or_default()
    }
    /// The status changes among `a`, each with its reason as text.
    fn statuses(&self, a: &[Action]) -> Vec<(JobIx, Status, Status, String)> {
        a.iter()
            .filter_map(|a| match a {
                Action::Status { job, old, new } => Some((
                    *job,
                    *old,
                    *new,
                    if new.is_terminal() {
                        self.why(*job)
                    } else {
                        String::new()
                    },
                )),
                _ => None,
            })
            .collect()
    }
}

fn submits(a: &[Action]) -> Vec<(BackendIx, Vec<JobIx>)> {
    a.iter()
        .filter_map(|a| match a {
            Action::Submit(b, js) => Some((*b, js.clone())),
            _ => None,
        })
        .collect()
}

fn submitted(a: &[Action]) -> Vec<JobIx> {
    submits(a).into_iter().flat_map(|(_, j)| j).collect()
}

fn kills(a: &[Action]) -> Vec<(BackendIx, Vec<JobIx>)> {
    a.iter()
        .filter_map(|a| match a {
            Action::Kill(b, js) => Some((*b, js.clone())),
            _ => None,
        })
        .collect()
}

fn text(s: &Scheduler, j: JobIx) -> String {
    s.reason(j).map(|r| r.to_string()).unwrap_or_default()
}

fn passed() -> Outcome {
    Outcome::Passed
}

fn failed(r: &str) -> Outcome {
    Outcome::Failed(Reason::Backend(r.into()))
}

fn killed(r: &str) -> Outcome {
    Outcome::Killed(Reason::Killed(r.into()))
}

fn kill(j: JobIx, r: &str) -> Input {
    Input::Kill(j, Reason::Killed(r.into()))
}

/// Accepts then finishes `j` with `o`, returning the actions.
fn accept_finish(h: &mut H, j: JobIx, o: Outcome) -> Vec<Action> {
    let mut a = h.feed(Input::Accepted(j));
    a.extend(h.feed(Input::Finished(j, o)));
    a
}

#[test]
fn simple_chain_passes_with_status_path() {
    let mut b = job("b");
    b.needs = vec![0];
    let mut h = H::new(spec(vec![job("a"), b]));
    assert_eq!(h.st(0), Status::Scheduled);
    let a = h.start();
    assert_eq!(
        h.statuses(&a),
        vec![
            (0, Status::Scheduled, Status::Queued, String::new()),
            (0, Status::Queued, Status::Running, String::new()),
        ]
    );
    assert_eq!(submits(&a), vec![(0, vec![0])]);
    let a = accept_finish(&mut h, 0, passed());
    assert_eq!(
        h.statuses(&a),
        vec![
            (0, Status::Running, Status::Passed, String::new()),
            (1, Status::Scheduled, Status::Queued, String::new()),
            (1, Status::Queued, Status::Running, String::new()),
        ]
    );
    assert_eq!(submitted(&a), vec![1]);
    assert!(!h.s.is_done());
    accept_finish(&mut h, 1, passed());
    assert!(h.s.is_done());
    assert_eq!(h.why(0), "");
    assert_eq!(h.s.next_wakeup(), None);
}

#[test]
fn all_passed_dependency_reasons() {
    // a fails -> b skipped; c killed -> d skipped; b skipped -> e skipped.
    let mut b = job("b");
    b.needs = vec![0];
    let mut d = job("d");
    d.needs = vec![2];
    let mut e = job("e");
    e.needs = vec![1];
    let mut h = H::new(spec(vec![job("a"), b, job("c"), d, e]));
    h.start();
    accept_finish(&mut h, 0, failed("exit code 3"));
    assert_eq!(h.st(0), Status::Failed);
    assert_eq!(h.why(0), "exit code 3");
    assert_eq!(h.st(1), Status::Skipped);
    assert_eq!(h.why(1), "dependency failed: a");
    assert_eq!(h.st(4), Status::Skipped);
    assert_eq!(h.why(4), "dependency skipped: b");
    h.feed(Input::Accepted(2));
    h.feed(Input::Finished(2, killed("oom")));
    assert_eq!(h.st(2), Status::Killed);
    assert_eq!(h.why(2), "oom");
    assert_eq!(h.why(3), "dependency killed: c");
    assert!(h.s.is_done());
}

#[test]
fn all_passed_skips_at_once_without_waiting_for_other_deps() {
    let mut c = job("c");
    c.needs = vec![0, 1];
    let mut h = H::new(spec(vec![job("a"), job("b"), c]));
    h.start();
    let a = accept_finish(&mut h, 0, failed("x"));
    assert_eq!(h.st(2), Status::Skipped);
    assert_eq!(h.why(2), "dependency failed: a");
    assert!(h.statuses(&a).contains(&(
        2,
        Status::Scheduled,
        Status::Skipped,
        "dependency failed: a".into()
    )));
    assert_eq!(h.st(1), Status::Running);
}

#[test]
fn any_passed_and_always() {
    // c: any of a, b; d: always after a, b; e: any of a only (a fails).
    let mut c = job("c");
    c.needs = vec![0, 1];
    c.when = When::AnyPassed;
    let mut d = job("d");
    d.needs = vec![0, 1];
    d.when = When::Always;
    let mut e = job("e");
    e.needs = vec![0];
    e.when = When::AnyPassed;
    let mut h = H::new(spec(vec![job("a"), job("b"), c, d, e]));
    h.start();
    accept_finish(&mut h, 0, failed("x"));
    assert_eq!(h.st(4), Status::Skipped);
    assert_eq!(h.why(4), "no dependency passed: a");
    // c and d wait for b.
    assert_eq!(h.st(2), Status::Scheduled);
    assert_eq!(h.st(3), Status::Scheduled);
    let a = accept_finish(&mut h, 1, passed());
    assert_eq!(submitted(&a), vec![2, 3]);
    accept_finish(&mut h, 2, passed());
    accept_finish(&mut h, 3, passed());
    assert!(h.s.is_done());
}

#[test]
fn any_passed_none_passed_lists_up_to_five() {
    let mut jobs: Vec<crate::flow::Job> = ["a", "b", "c", "d", "e", "f", "g"]
        .iter()
        .map(|n| job(n))
        .collect();
    let mut x = job("x");
    x.needs = (0..7).collect();
    x.when = When::AnyPassed;
    let mut y = job("y");
    y.needs = vec![0, 1];
    y.when = When::AnyPassed;
    let mut z = job("z");
    z.needs = vec![0, 1];
    z.when = When::Always;
    jobs.extend([x, y, z]);
    let mut h = H::new(spec(jobs));
    h.start();
    for j in 0..7 {
        h.feed(Input::Finished(j, failed("no")));
    }
    assert_eq!(h.why(7), "no dependency passed: a, b, c, d, e, ...");
    assert_eq!(h.why(8), "no dependency passed: a, b");
    assert_eq!(h.st(9), Status::Running, "always runs after failures");
}

#[test]
fn priority_order_with_ties_in_the_flows_order() {
    let mut jobs = Vec::new();
    for (n, p) in [("d", 0), ("c", 5), ("b", 0), ("a", -1), ("e", 5)] {
        let mut j = job(n);
        j.priority = p;
        jobs.push(j);
    }
    let mut s = spec(jobs);
    s.spec.backends[0].max_parallel = Some(1);
    let mut h = H::new(s);
    let mut order = submitted(&h.start());
    while order.len() < 5 {
        let last = *order.last().unwrap();
        order.extend(submitted(&accept_finish(&mut h, last, passed())));
    }
    // c(5), e(5), d(0), b(0), a(-1): equal priorities start as the flow lists them.
    assert_eq!(order, vec![1, 4, 0, 2, 3]);
}

#[test]
fn blocked_job_does_not_hold_back_other_backends() {
    // Backend 0 has cap 1 and runs "a"; "hi" (priority 10) waits on backend 0; "lo" (priority 0)
    // on backend 1 starts anyway.
    let mut a = job("a");
    a.priority = 100;
    let mut hi = job("hi");
    hi.priority = 10;
    let mut lo = job("lo");
    lo.backend = 1;
    let mut s = spec(vec![a, hi, lo]);
    s.spec.backends = vec![backend("b0", Some(1)), backend("b1", None)];
    let mut h = H::new(s);
    let a = h.start();
    assert_eq!(submits(&a), vec![(0, vec![0]), (1, vec![2])]);
    assert_eq!(h.st(1), Status::Queued);
    let a = accept_finish(&mut h, 0, passed());
    assert_eq!(submits(&a), vec![(0, vec![1])]);
}

#[test]
fn blocked_resource_job_does_not_hold_back_smaller_ones() {
    // Resource 0 has capacity 4. "big" (needs 3, priority 5) cannot start while "a" (needs 2)
    // runs; "small" (needs 1, priority 0) and "free" (no resource) start.
    let mut a = job("a");
    a.priority = 10;
    a.resources = vec![(0, 2)];
    let mut big = job("big");
    big.priority = 5;
    big.resources = vec![(0, 3)];
    let mut small = job("small");
    small.resources = vec![(0, 1)];
    let mut s = spec(vec![a, big, small, job("free")]);
    s.spec.resources = vec![4];
    let mut h = H::new(s);
    let a = h.start();
    // a (priority 10), then small and free (priority 0, in the flow's order).
    assert_eq!(submitted(&a), vec![0, 2, 3]);
    let a = accept_finish(&mut h, 0, passed());
    assert_eq!(submitted(&a), vec![1]);
}

#[test]
fn backend_cap_counts_slots_and_big_job_runs_alone() {
    let mut big = job("big");
    big.priority = 10;
    big.cpus = 8;
    let mut two = job("two");
    two.cpus = 2;
    two.priority = 5;
    let mut s = spec(vec![big, two, job("one"), job("one2")]);
    s.spec.backends[0].max_parallel = Some(3);
    let mut h = H::new(s);
    let a = h.start();
    // big (8 slots > cap 3) runs alone.
    assert_eq!(submitted(&a), vec![0]);
    let a = accept_finish(&mut h, 0, passed());
    // two (2) + one (1) = 3.
    assert_eq!(submitted(&a), vec![1, 2]);
    let a = accept_finish(&mut h, 2, passed());
    assert_eq!(submitted(&a), vec![3]);
}

#[test]
fn global_max_parallel_and_submit_batching() {
    let mut jobs = Vec::new();
    for i in 0..6 {
        let mut j = job(&format!("j{i}"));
        j.backend = i % 2;
        jobs.push(j);
    }
    let mut s = spec(jobs);
    s.spec.backends = vec![backend("b0", None), backend("b1", None)];
    s.spec.max_parallel = Some(3);
    let mut h = H::new(s);
    let a = h.start();
    assert_eq!(submits(&a), vec![(0, vec![0, 2]), (1, vec![1])]);
    // Two finish before the next drain: one Submit per backend.
    h.s.handle(Input::Accepted(0), h.now);
    h.s.handle(Input::Finished(0, passed()), h.now);
    h.s.handle(Input::Finished(1, passed()), h.now);
    let a = h.s.drain_actions();
    assert_eq!(submits(&a), vec![(0, vec![4]), (1, vec![3])]);
}

#[test]
fn zero_caps_count_as_one() {
    let mut s = spec(vec![job("a"), job("b")]);
    s.spec.backends[0].max_parallel = Some(0);
    s.spec.max_parallel = Some(0);
    let mut h = H::new(s);
    assert_eq!(submitted(&h.start()), vec![0]);
    assert_eq!(submitted(&accept_finish(&mut h, 0, passed())), vec![1]);
}

#[test]
fn kills_are_batched_per_backend() {
    let mut s = spec(vec![job("a"), job("b"), job("c")]);
    s.spec.backends = vec![backend("b0", None), backend("b1", None)];
    s.jobs[1].backend = 1;
    let mut h = H::new(s);
    h.start();
    for j in 0..3 {
        h.feed(Input::Accepted(j));
    }
    for j in [2, 1, 0] {
        h.s.handle(kill(j, "stop"), h.now);
    }
    assert_eq!(
        kills(&h.s.drain_actions()),
        vec![(0, vec![2, 0]), (1, vec![1])]
    );
}

#[test]
fn resource_capacity() {
    let mut jobs = Vec::new();
    for i in 0..5 {
        let mut j = job(&format!("j{i}"));
        j.resources = vec![(0, 2), (1, 1)];
        jobs.push(j);
    }
    let mut s = spec(jobs);
    s.spec.resources = vec![5, 10];
    let mut h = H::new(s);
    let a = h.start();
    assert_eq!(submitted(&a), vec![0, 1]);
    let a = accept_finish(&mut h, 1, passed());
    assert_eq!(submitted(&a), vec![2]);
}

#[test]
fn oversized_resource_job_runs_alone() {
    let mut big = job("big");
    big.resources = vec![(0, 10)];
    big.priority = 1;
    let mut s = spec(vec![big, job("x")]);
    s.spec.resources = vec![4];
    let mut h = H::new(s);
    assert_eq!(submitted(&h.start()), vec![0, 1]);
    accept_finish(&mut h, 0, passed());
    assert_eq!(h.st(0), Status::Passed);
}

#[test]
fn answers_rejected_lost_failed_killed() {
    let mut s = spec(vec![job("a"), job("b"), job("c"), job("d")]);
    s.spec.backends[0].name = "slurm".into();
    let mut h = H::new(s);
    h.start();
    h.feed(Input::Rejected(0, "sbatch: invalid partition".into()));
    assert_eq!(h.st(0), Status::Failed);
    assert_eq!(
        h.why(0),
        "rejected by backend slurm: sbatch: invalid partition"
    );
    h.feed(Input::Accepted(1));
    h.feed(Input::Started(1));
    assert_eq!(h.st(1), Status::Running);
    h.feed(Input::Lost(1, "node died".into()));
    assert_eq!(h.why(1), "lost by backend slurm: node died");
    assert_eq!(h.st(1), Status::Failed);
    accept_finish(&mut h, 2, failed("command not found: simv"));
    assert_eq!(h.why(2), "command not found: simv");
    accept_finish(&mut h, 3, killed("killed by the backend"));
    assert_eq!(h.st(3), Status::Killed);
    assert_eq!(h.why(3), "killed by the backend");
    assert!(h.s.is_done());
    // Late or duplicate answers are ignored.
    h.feed(Input::Finished(0, passed()));
    h.feed(Input::Accepted(1));
    assert_eq!(h.st(0), Status::Failed);
}

#[test]
fn busy_backoff_doubles_caps_and_resets() {
    let mut s = spec(vec![job("a"), job("b")]);
    s.spec.backends = vec![backend("b0", None), backend("b1", None)];
    s.jobs[1].backend = 1;
    let mut h = H::new(s);
    h.start();
    let mut t = 0;
    let mut expect = 10;
    for _ in 0..10 {
        let a = h.feed(Input::Busy(0));
        assert_eq!(
            h.statuses(&a),
            vec![(0, Status::Running, Status::Queued, String::new())]
        );
        assert!(submitted(&a).is_empty(), "no resubmit during backoff");
        assert_eq!(h.s.next_wakeup(), Some(h.ms(t + expect)));
        // Just before the end: nothing.
        h.at_ms(t + expect - 1);
        assert!(submitted(&h.feed(Input::Tick)).is_empty());
        t += expect;
        h.at_ms(t);
        assert_eq!(submitted(&h.feed(Input::Tick)), vec![0]);
        assert_eq!(h.s.next_wakeup(), None, "never spin");
        expect = (expect * 2).min(1000);
    }
    assert_eq!(expect, 1000);
    // Other backends are unaffected; Accepted resets the backoff.
    h.feed(Input::Accepted(0));
    h.feed(Input::Finished(0, passed()));
    // A fresh busy on backend 1 starts at 10 ms.
    h.feed(Input::Busy(1));
    assert_eq!(h.s.next_wakeup(), Some(h.ms(t + 10)));
}

#[test]
fn busy_backoff_resets_on_accept() {
    let mut h = H::new(spec(vec![job("a"), job("b")]));
    h.start();
    h.feed(Input::Busy(0));
    h.at_ms(10);
    assert_eq!(submitted(&h.feed(Input::Tick)), vec![0]);
    h.feed(Input::Busy(0)); // 20 ms
    assert_eq!(h.s.next_wakeup(), Some(h.ms(30)));
    h.at_ms(30);
    h.feed(Input::Tick);
    h.feed(Input::Accepted(0));
    h.feed(Input::Busy(1)); // reset: 10 ms again
    assert_eq!(h.s.next_wakeup(), Some(h.ms(40)));
}

#[test]
fn several_busy_answers_in_one_window_count_once() {
    let mut h = H::new(spec(vec![job("a"), job("b"), job("c")]));
    h.start();
    h.feed(Input::Busy(0));
    h.feed(Input::Busy(1));
    h.feed(Input::Busy(2));
    assert_eq!(h.s.next_wakeup(), Some(h.ms(10)));
    h.at_ms(10);
    assert_eq!(submitted(&h.feed(Input::Tick)), vec![0, 1, 2]);
}

#[test]
fn kill_input_per_status() {
    // a running, b queued (cap 1), c scheduled (needs a), d needs c.
    let mut c = job("c");
    c.needs = vec![0];
    let mut d = job("d");
    d.needs = vec![2];
    let mut s = spec(vec![job("a"), job("b"), c, d]);
    s.spec.backends[0].max_parallel = Some(1);
    let mut h = H::new(s);
    h.start();
    h.feed(Input::Accepted(0));
    let a = h.feed(kill(2, "user"));
    assert_eq!(h.st(2), Status::Killed);
    assert_eq!(h.why(2), "user");
    assert_eq!(h.why(3), "dependency killed: c");
    assert!(kills(&a).is_empty());
    h.feed(kill(1, "user2"));
    assert_eq!(h.st(1), Status::Killed);
    assert_eq!(h.why(1), "user2");
    let a = h.feed(kill(0, "stop"));
    assert_eq!(kills(&a), vec![(0, vec![0])]);
    assert_eq!(h.st(0), Status::Running);
    // Only once.
    assert!(kills(&h.feed(kill(0, "again"))).is_empty());
    // The backend says passed: still Killed with the kill reason.
    h.feed(Input::Finished(0, passed()));
    assert_eq!(h.st(0), Status::Killed);
    assert_eq!(h.why(0), "stop");
    assert!(h.s.is_done());
    // Terminal: ignored.
    assert!(h.feed(kill(0, "x")).is_empty());
}

#[test]
fn kill_in_flight_then_accepted() {
    let mut h = H::new(spec(vec![job("a")]));
    h.start();
    assert!(kills(&h.feed(kill(0, "stop"))).is_empty());
    let a = h.feed(Input::Accepted(0));
    assert_eq!(kills(&a), vec![(0, vec![0])]);
    h.feed(Input::Finished(0, killed("SIGKILL")));
    assert_eq!(h.st(0), Status::Killed);
    assert_eq!(h.why(0), "stop");
}

#[test]
fn kill_in_flight_then_busy() {
    let mut h = H::new(spec(vec![job("a"), job("b")]));
    h.start();
    h.feed(kill(0, "stop"));
    let a = h.feed(Input::Busy(0));
    // A user's kill keeps its reason; an interrupt's becomes "killed while queued".
    assert_eq!(
        h.statuses(&a),
        vec![(0, Status::Running, Status::Killed, "stop".into())]
    );
    assert!(kills(&a).is_empty());
    h.feed(Input::Accepted(1));
    h.feed(Input::Finished(1, passed()));
    assert!(h.s.is_done());
}

#[test]
fn kill_in_flight_then_rejected() {
    let mut h = H::new(spec(vec![job("a")]));
    h.start();
    h.feed(kill(0, "stop"));
    h.feed(Input::Rejected(0, "nope".into()));
    assert_eq!(h.st(0), Status::Killed);
    assert_eq!(h.why(0), "stop");
    assert!(h.s.is_done());
}

#[test]
fn timeout_kills_with_text() {
    let mut a = job("a");
    a.timeout = Some((Duration::from_secs(5), "5s".into()));
    let mut h = H::new(spec(vec![a, job("b")]));
    h.at_ms(100);
    h.start();
    assert_eq!(h.s.next_wakeup(), Some(h.ms(5100)));
    h.feed(Input::Accepted(0));
    h.at_ms(5099);
    assert!(kills(&h.feed(Input::Tick)).is_empty());
    h.at_ms(5100);
    let a = h.feed(Input::Tick);
    assert_eq!(kills(&a), vec![(0, vec![0])]);
    // Now the backend has its kill grace (1 s) plus the margin (30 s) to report the end.
    assert_eq!(h.s.next_wakeup(), Some(h.ms(5100 + 31_000)));
    h.feed(Input::Finished(0, failed("signal 9")));
    assert_eq!(h.s.next_wakeup(), None);
    assert_eq!(h.st(0), Status::Killed);
    assert_eq!(h.why(0), "timed out after 5s");
}

#[test]
fn timeout_fires_on_any_input_and_in_flight() {
    let mut a = job("a");
    a.timeout = Some((Duration::from_millis(50), "50ms".into()));
    let mut h = H::new(spec(vec![a, job("b")]));
    h.start();
    h.at_ms(60);
    // Not accepted yet: the kill waits for the acceptance.
    assert!(kills(&h.feed(Input::Accepted(1))).is_empty());
    assert_eq!(kills(&h.feed(Input::Accepted(0))), vec![(0, vec![0])]);
    h.feed(Input::Finished(0, passed()));
    assert_eq!(h.why(0), "timed out after 50ms");
}

#[test]
fn timeout_restarts_after_busy_and_finished_job_has_no_deadline() {
    let mut a = job("a");
    a.timeout = Some((Duration::from_millis(100), "100ms".into()));
    let mut h = H::new(spec(vec![a]));
    h.start();
    h.at_ms(5);
    h.feed(Input::Busy(0));
    assert_eq!(h.s.next_wakeup(), Some(h.ms(15)));
    h.at_ms(15);
    assert_eq!(submitted(&h.feed(Input::Tick)), vec![0]);
    assert_eq!(h.s.next_wakeup(), Some(h.ms(115)));
    h.at_ms(100);
    assert!(kills(&h.feed(Input::Accepted(0))).is_empty());
    h.feed(Input::Finished(0, passed()));
    assert_eq!(h.st(0), Status::Passed);
    assert_eq!(h.s.next_wakeup(), None);
}

#[test]
fn interrupt_kills_running_kills_queued_skips_scheduled() {
    // Backends 0 and 1; a, b run on 0 (cap 2), c runs on 1, d queued on 0, e scheduled (needs
    // d), f in flight on 1.
    let mut a = job("a");
    a.priority = 9;
    let mut b = job("b");
    b.priority = 9;
    let mut c = job("c");
    c.backend = 1;
    let d = job("d");
    let mut e = job("e");
    e.needs = vec![3];
    let mut f = job("f");
    f.backend = 1;
    let mut s = spec(vec![a, b, c, d, e, f]);
    s.spec.backends = vec![backend("b0", Some(2)), backend("b1", None)];
    let mut h = H::new(s);
    h.start();
    for j in [0, 1, 2] {
        h.feed(Input::Accepted(j));
    }
    let a = h.feed(Input::Interrupt(Interrupt::Sigint));
    assert_eq!(kills(&a), vec![(0, vec![0, 1]), (1, vec![2])]);
    assert_eq!(h.st(3), Status::Killed);
    assert_eq!(h.why(3), "killed while queued");
    assert_eq!(h.st(4), Status::Skipped);
    assert_eq!(h.why(4), "run interrupted by SIGINT");
    assert!(submitted(&a).is_empty());
    // Second interrupt: kills again.
    let a = h.feed(Input::Interrupt(Interrupt::Sigterm));
    assert_eq!(kills(&a), vec![(0, vec![0, 1]), (1, vec![2])]);
    // f is accepted late: killed then.
    assert_eq!(kills(&h.feed(Input::Accepted(5))), vec![(1, vec![5])]);
    // Finishing frees slots but nothing starts.
    let a = h.feed(Input::Finished(0, passed()));
    assert!(submitted(&a).is_empty());
    assert_eq!(h.why(0), "killed by SIGINT while running");
    for j in [1, 2, 5] {
        assert!(!h.s.is_done());
        h.feed(Input::Finished(j, killed("sig")));
    }
    assert!(h.s.is_done());
    assert_eq!(h.why(5), "killed by SIGINT while running");
}

#[test]
fn interrupt_in_flight_busy_is_killed_while_queued() {
    let mut h = H::new(spec(vec![job("a")]));
    h.start();
    let a = h.feed(Input::Interrupt(Interrupt::Sigterm));
    assert!(kills(&a).is_empty());
    h.feed(Input::Busy(0));
    assert_eq!(h.st(0), Status::Killed);
    assert_eq!(h.why(0), "killed while queued");
    assert!(h.s.is_done());
}

#[test]
fn interrupt_keeps_earlier_kill_reason() {
    let mut a = job("a");
    a.timeout = Some((Duration::from_millis(1), "1ms".into()));
    let mut h = H::new(spec(vec![a]));
    h.start();
    h.feed(Input::Accepted(0));
    h.at_ms(2);
    assert_eq!(kills(&h.feed(Input::Tick)).len(), 1);
    assert!(kills(&h.feed(Input::Interrupt(Interrupt::Sigint))).is_empty());
    h.feed(Input::Finished(0, passed()));
    assert_eq!(h.why(0), "timed out after 1ms");
}

/// Drives a run: accepts every submit, then finishes jobs (FIFO) with `outcome`; returns the
/// order of submission.
fn drive(s: &mut Scheduler, outcome: impl Fn(JobIx) -> Outcome, batch: usize) -> Vec<JobIx> {
    let now = Instant::now();
    s.start(now);
    let mut order = Vec::new();
    let mut pending: VecDeque<JobIx> = VecDeque::new();
    loop {
        for a in s.drain_actions() {
            if let Action::Submit(_, js) = a {
                order.extend_from_slice(&js);
                pending.extend(js);
            }
        }
        if pending.is_empty() {
            break;
        }
        for _ in 0..batch.min(pending.len()) {
            let j = pending.pop_front().unwrap();
            s.handle(Input::Accepted(j), now);
            s.handle(Input::Finished(j, outcome(j)), now);
        }
    }
    order
}

#[test]
fn million_chain_failing_at_head() {
    let n = 1_000_000;
    let mut s = chain(n).scheduler();
    let now = Instant::now();
    s.start(now);
    s.drain_actions();
    s.handle(Input::Finished(0, failed("boom")), now);
    let a = s.drain_actions();
    assert_eq!(a.len(), n);
    assert!(s.is_done());
    assert_eq!(text(&s, 1), "dependency failed: job0000000");
    assert_eq!(text(&s, 999_999), "dependency skipped: job0999998");
}

#[test]
fn scale_independent_100k() {
    let n = 100_000;
    let mut s = independent(n).scheduler();
    let order = drive(&mut s, |_| Outcome::Passed, 1024);
    assert_eq!(order, (0..n as u32).collect::<Vec<_>>());
    assert!(s.is_done());
}

#[test]
fn scale_chain_100k() {
    let n = 100_000;
    let mut s = chain(n).scheduler();
    let order = drive(&mut s, |_| Outcome::Passed, 1);
    assert_eq!(order, (0..n as u32).collect::<Vec<_>>());
    assert!(s.is_done());
}

#[test]
fn scale_fan_100k() {
    let n = 100_000;
    let mut s = fan(n).scheduler();
    let order = drive(
        &mut s,
        |j| {
            if j == 50 {
                failed("x")
            } else {
                Outcome::Passed
            }
        },
        1024,
    );
    assert_eq!(order.len(), n + 1);
    assert_eq!(s.status(n as u32 + 1), Status::Skipped);
    assert_eq!(text(&s, n as u32 + 1), "dependency failed: mid0000049");
}

#[test]
fn scale_capped_100k() {
    for sp in [capped(100_000), resource_capped(100_000)] {
        let mut s = sp.scheduler();
        let now = Instant::now();
        s.start(now);
        let mut running: VecDeque<JobIx> = VecDeque::new();
        let mut order = Vec::new();
        loop {
            for a in s.drain_actions() {
                if let Action::Submit(_, js) = a {
                    order.extend_from_slice(&js);
                    running.extend(js);
                }
            }
            assert!(running.len() <= 8);
            let Some(j) = running.pop_front() else { break };
            s.handle(Input::Accepted(j), now);
            s.handle(Input::Finished(j, Outcome::Passed), now);
        }
        assert_eq!(order, (0..100_000).collect::<Vec<_>>());
        assert!(s.is_done());
    }
}

// ---------------------------------------------------------------------------------------------
// Rules moved out of the run loop
// ---------------------------------------------------------------------------------------------

#[test]
fn a_start_or_an_end_overtaking_the_answer_implies_acceptance() {
    let mut a = job("a");
    a.timeout = timeout_ms(10);
    let mut h = H::new(spec(vec![a, job("b"), job("c")]));
    h.start();
    // a: killed (timeout) while in flight; its start arrives before the answer: the kill goes.
    h.at_ms(10);
    assert!(kills(&h.feed(Input::Tick)).is_empty(), "in flight: not yet");
    assert_eq!(kills(&h.feed(Input::Started(0))), vec![(0, vec![0])]);
    assert!(
        !h.s.handle(Input::Accepted(0), h.now),
        "the answer after is ignored"
    );
    // b: its end comes before the answer.
    assert!(h.s.handle(Input::Finished(1, passed()), h.now));
    assert_eq!(h.st(1), Status::Passed);
    assert!(!h.s.handle(Input::Accepted(1), h.now));
    assert!(!h.s.handle(Input::Busy(1), h.now));
    assert!(!h.s.handle(Input::Rejected(1, "late".into()), h.now));
    assert_eq!(h.st(1), Status::Passed);
    // c: lost before the answer.
    assert!(h.s.handle(Input::Lost(2, "gone".into()), h.now));
    assert_eq!(h.why(2), "lost by backend local: gone");
    assert!(!h.s.handle(Input::Accepted(2), h.now));
}

#[test]
fn an_implied_acceptance_resets_the_busy_backoff() {
    let mut h = H::new(spec(vec![job("a"), job("b"), job("c")]));
    h.start();
    h.feed(Input::Busy(0));
    assert_eq!(h.s.next_wakeup(), Some(h.ms(10)));
    h.feed(Input::Started(1));
    assert_eq!(
        h.s.next_wakeup(),
        None,
        "the backend took a job: no more backoff"
    );
}

#[test]
fn second_ends_and_stray_inputs_are_ignored() {
    let mut h = H::new(spec(vec![job("a"), job("b"), job("c")]));
    h.start();
    for j in 0..3 {
        h.feed(Input::Accepted(j));
    }
    assert!(h.s.handle(Input::Finished(0, failed("x")), h.now));
    h.s.drain_actions();
    for dup in [
        Input::Finished(0, passed()),
        Input::Lost(0, "late".into()),
        Input::Started(0),
        Input::Ended(0),
        Input::Judged(0, passed()),
    ] {
        assert!(!h.s.handle(dup.clone(), h.now), "{dup:?}");
        assert!(h
            .s
            .drain_actions()
            .iter()
            .all(|a| !matches!(a, Action::Status { job: 0, .. })));
    }
    assert_eq!((h.st(0), h.why(0)), (Status::Failed, "x".into()));
    // A verdict without an announced end, and jobs that do not exist.
    assert!(!h.s.handle(Input::Judged(1, passed()), h.now));
    assert!(!h.s.handle(Input::Finished(99, passed()), h.now));
    assert!(!h.s.handle(Input::Accepted(99), h.now));
    assert_eq!(h.st(1), Status::Running);
}

#[test]
fn an_ended_job_keeps_its_slot_until_its_verdict_and_ignores_other_ends() {
    let mut s = spec(vec![job("a"), job("b")]);
    s.spec.backends[0].max_parallel = Some(1);
    let mut h = H::new(s);
    h.start();
    h.feed(Input::Accepted(0));
    assert!(h.s.handle(Input::Ended(0), h.now));
    assert!(
        submitted(&h.s.drain_actions()).is_empty(),
        "the slot is held"
    );
    // The backend reports again while the log is scanned: ignored.
    assert!(!h.s.handle(Input::Lost(0, "double".into()), h.now));
    assert!(!h.s.handle(Input::Finished(0, passed()), h.now));
    assert_eq!(h.st(0), Status::Running);
    let a = h.feed(Input::Judged(
        0,
        Outcome::Failed(Reason::PassMissing {
            pattern: "^OK$".into(),
        }),
    ));
    assert_eq!(h.why(0), "pass pattern never matched: ^OK$");
    assert_eq!(submitted(&a), vec![1]);
}

#[test]
fn an_interrupt_does_not_kill_a_job_whose_end_is_being_judged() {
    let mut h = H::new(spec(vec![job("a")]));
    h.start();
    h.feed(Input::Accepted(0));
    h.feed(Input::Ended(0));
    assert!(kills(&h.feed(Input::Interrupt(Interrupt::Sigint))).is_empty());
    h.feed(Input::Judged(0, passed()));
    assert_eq!(h.st(0), Status::Passed);
}

#[test]
fn submits_come_in_batches_of_the_backends_limit_after_the_answers() {
    let mut s = independent(10);
    s.spec.backends[0].max_batch = 4;
    let mut h = H::new(s);
    let a = h.start();
    assert_eq!(submits(&a), vec![(0, vec![0, 1, 2, 3])]);
    // Jobs beyond the batch stay Queued: nothing is believed running that was not handed over.
    assert_eq!(h.st(4), Status::Queued);
    assert!(!h.s.has_actions());
    // The first answer lets the next batch form.
    h.s.handle(Input::Accepted(0), h.now);
    assert!(h.s.has_actions());
    for j in 1..4 {
        h.s.handle(Input::Accepted(j), h.now);
    }
    assert_eq!(submits(&h.s.drain_actions()), vec![(0, vec![4, 5, 6, 7])]);
    // An interrupt before the next drain takes the formed batch back: killed while queued.
    for j in 4..8 {
        h.s.handle(Input::Accepted(j), h.now);
    }
    h.s.handle(Input::Interrupt(Interrupt::Sigint), h.now);
    let a = h.s.drain_actions();
    assert!(submitted(&a).is_empty());
    assert_eq!(
        (h.st(8), h.why(8)),
        (Status::Killed, "killed while queued".into())
    );
    assert_eq!(kills(&a), vec![(0, (0..8).collect())]);
}

#[test]
fn a_backend_that_does_not_report_after_a_kill_loses_the_job_and_frees_its_slot() {
    let mut a = job("a");
    a.timeout = timeout_ms(100);
    let mut s = spec(vec![a, job("b")]);
    s.spec.backends[0].max_parallel = Some(1);
    s.spec.backends[0].kill_grace = Duration::from_millis(500);
    s.spec.margin = Duration::from_millis(250);
    let mut h = H::new(s);
    h.start();
    h.feed(Input::Accepted(0));
    h.at_ms(100);
    assert_eq!(kills(&h.feed(Input::Tick)), vec![(0, vec![0])]);
    assert_eq!(h.s.next_wakeup(), Some(h.ms(850)), "grace + margin");
    h.at_ms(849);
    assert!(h.feed(Input::Tick).is_empty());
    h.at_ms(850);
    let a = h.feed(Input::Tick);
    assert_eq!(h.st(0), Status::Failed);
    assert_eq!(
        h.why(0),
        "lost by backend local: did not report after kill (timed out after 100ms), waited 750ms"
    );
    assert_eq!(h.s.reason(0).map(Reason::kind), Some("lost"));
    assert_eq!(submitted(&a), vec![1], "the slot goes on");
    // What the backend says later is ignored.
    assert!(!h.s.handle(Input::Finished(0, passed()), h.now));
    assert_eq!(h.st(0), Status::Failed);
}

#[test]
fn a_backend_that_enforces_timeouts_gets_the_margin_before_the_hosts_kill() {
    let mut a = job("a");
    a.timeout = timeout_ms(1000);
    let mut s = spec(vec![a]);
    s.spec.backends[0].enforces_timeout = true;
    s.spec.margin = Duration::from_millis(300);
    let mut h = H::new(s);
    h.start();
    h.feed(Input::Accepted(0));
    assert_eq!(h.s.next_wakeup(), Some(h.ms(1300)));
    h.at_ms(1300);
    assert_eq!(kills(&h.feed(Input::Tick)), vec![(0, vec![0])]);
    h.feed(Input::Finished(0, killed("cancelled")));
    assert_eq!(h.why(0), "timed out after 1000ms");
}

#[test]
fn a_timeout_too_large_for_the_clock_is_no_deadline() {
    let mut a = job("a");
    a.timeout = Some((Duration::MAX, "584942417355y".into()));
    let mut h = H::new(spec(vec![a]));
    h.start();
    assert_eq!(h.s.next_wakeup(), None);
    accept_finish(&mut h, 0, passed());
    assert!(h.s.is_done());
}

#[test]
fn on_interrupt_always_jobs_still_run_bounded_by_the_cleanup_limit() {
    // a runs; b (always) needs a; c (all-passed) needs a; d (always, queued behind the cap)
    // has no dependencies; e (always) was running already.
    let mut b = job("b");
    b.needs = vec![0];
    b.when = When::Always;
    let mut c = job("c");
    c.needs = vec![0];
    let mut d = job("d");
    d.when = When::Always;
    let mut e = job("e");
    e.when = When::Always;
    e.priority = 10;
    let mut a = job("a");
    a.priority = 10;
    let mut s = spec(vec![a, b, c, d, e]);
    s.spec.max_parallel = Some(2);
    s.spec.cleanup_limit = Duration::from_millis(400);
    let mut h = H::new(s);
    let a = h.start();
    assert_eq!(submitted(&a), vec![0, 4]);
    h.feed(Input::Accepted(0));
    h.feed(Input::Accepted(4));
    h.at_ms(100);
    let a = h.feed(Input::Interrupt(Interrupt::Sigint));
    assert_eq!(
        kills(&a),
        vec![(0, vec![0])],
        "the always job e is not killed"
    );
    assert_eq!(h.st(2), Status::Skipped);
    assert_eq!(h.why(2), "run interrupted by SIGINT");
    assert_eq!((h.st(1), h.st(3)), (Status::Scheduled, Status::Queued));
    // e now has the cleanup limit as its deadline.
    assert_eq!(h.s.next_wakeup(), Some(h.ms(500)));
    // a ends (killed): b becomes ready and, ranked before d, starts in a's slot.
    let a = h.feed(Input::Finished(0, killed("k")));
    assert_eq!(h.why(0), "killed by SIGINT while running");
    assert_eq!(submitted(&a), vec![1]);
    assert_eq!(h.st(3), Status::Queued);
    let a = accept_finish(&mut h, 1, passed());
    assert_eq!(h.st(1), Status::Passed, "the cleanup ran");
    assert_eq!(submitted(&a), vec![3]);
    accept_finish(&mut h, 3, passed());
    // e runs past the cleanup limit: killed for it.
    h.at_ms(500);
    assert_eq!(kills(&h.feed(Input::Tick)), vec![(0, vec![4])]);
    h.feed(Input::Finished(4, killed("k")));
    assert_eq!(
        h.why(4),
        "timed out after 400ms (the limit for cleanup jobs after an interrupt)"
    );
    assert!(h.s.is_done());
    assert_eq!(h.s.interrupted(), Some(Interrupt::Sigint));
}

#[test]
fn abandon_ends_every_job_at_once_with_the_cores_reasons() {
    // a running (timed out, kill pending), b running, c queued, d scheduled, e ended (being
    // judged), f always and scheduled.
    let mut a = job("a");
    a.timeout = timeout_ms(10);
    let mut d = job("d");
    d.needs = vec![1];
    let mut f = job("f");
    f.needs = vec![1];
    f.when = When::Always;
    let mut s = spec(vec![a, job("b"), job("c"), d, job("e"), f]);
    s.spec.max_parallel = Some(3);
    // e is submitted in the first batch: give it the rank.
    s.jobs[4].priority = 1;
    let mut h = H::new(s);
    assert_eq!(submitted(&h.start()), vec![4, 0, 1]);
    for j in [4, 0, 1] {
        h.feed(Input::Accepted(j));
    }
    h.feed(Input::Ended(4));
    h.at_ms(10);
    assert_eq!(kills(&h.feed(Input::Tick)), vec![(0, vec![0])]);
    h.feed(Input::Interrupt(Interrupt::Sigterm));
    let a = h.feed(Input::Abandon(Interrupt::Sigint));
    assert!(h.s.is_done());
    assert_eq!(h.s.next_wakeup(), None);
    let got: Vec<(Status, String)> = (0..6).map(|j| (h.st(j), h.why(j))).collect();
    let want = [
        (Status::Killed, "timed out after 10ms"),
        (Status::Killed, "killed by SIGTERM while running"),
        (Status::Killed, "killed while queued"),
        (Status::Skipped, "run interrupted by SIGTERM"),
        (Status::Killed, "killed by SIGTERM while running"),
        (Status::Skipped, "run interrupted by SIGTERM"),
    ];
    for (j, ((gs, gr), (ws, wr))) in got.iter().zip(want).enumerate() {
        assert_eq!((gs, gr.as_str()), (&ws, wr), "job {j}");
    }
    // Best-effort kills for what still ran (the judged job e had ended already).
    assert_eq!(kills(&a), vec![(0, vec![0, 1])]);
    // Whatever comes after is ignored.
    assert!(!h.s.handle(Input::Finished(1, passed()), h.now));
}

// --- reuse of an earlier run's passes (--resume, --rerun-failed) ----------------------------

#[test]
fn reused_jobs_pass_without_running_and_release_their_dependents() {
    // a -> b -> c: a passed before; b and c run, in order.
    let mut h = H::new(chain(3));
    assert!(h.s.handle(Input::Reused(0), h.now));
    // Before the start nothing is submitted, whatever became ready.
    let before = h.s.drain_actions();
    assert!(
        !before.iter().any(|a| matches!(a, Action::Submit(..))),
        "{before:?}"
    );
    assert_eq!(h.st(0), Status::Passed);
    // Ready, but not queued before the start: its own earlier pass may still come.
    assert_eq!(h.st(1), Status::Scheduled);
    let a = h.start();
    assert_eq!(submitted(&a), vec![1]);
    assert_eq!(h.st(2), Status::Scheduled);
    // After the start, and for a job that is not waiting, the input is ignored.
    assert!(!h.s.handle(Input::Reused(2), h.now));
    assert_eq!(h.st(2), Status::Scheduled);
    h.feed(Input::Finished(1, Outcome::Passed));
    assert_eq!(h.st(2), Status::Running);
}

#[test]
fn a_job_reused_after_a_job_it_needs_passes_without_running() {
    // a -> b -> c: a and b passed before (fed in the flow's order); only c runs.
    let mut h = H::new(chain(3));
    assert!(h.s.handle(Input::Reused(0), h.now));
    assert!(h.s.handle(Input::Reused(1), h.now));
    assert_eq!(h.st(1), Status::Passed);
    let a = h.start();
    assert_eq!(submitted(&a), vec![2]);
    let statuses: Vec<_> = a
        .iter()
        .filter_map(|a| match a {
            Action::Status { job: 1, old, new } => Some((*old, *new)),
            _ => None,
        })
        .collect();
    // Straight to passed: it never was ready to run.
    assert_eq!(statuses, [(Status::Scheduled, Status::Passed)], "{a:?}");
}

#[test]
fn carried_ends_reach_dependents_and_do_not_count_for_max_fail() {
    // a -> b -> c, d alone: a failed in the earlier run (--no-deps), so b and c are skipped.
    let mut f = chain(3);
    f.jobs.push(job("d"));
    f.spec.max_fail = Some(1);
    let mut h = H::new(f);
    assert!(h.s.handle(
        Input::Carried(0, Status::Failed, Reason::ExitCode(4)),
        h.now
    ));
    assert_eq!(
        (h.st(0), h.why(0).as_str()),
        (Status::Failed, "exit code 4")
    );
    assert_eq!(
        (h.st(1), h.why(1).as_str()),
        (Status::Skipped, "dependency failed: job0000000")
    );
    assert_eq!(h.st(2), Status::Skipped);
    // A carried pass is `Reused`; after the start nothing is carried.
    assert!(!h.s.handle(
        Input::Carried(3, Status::Passed, Reason::ExitCode(0)),
        h.now
    ));
    let a = h.start();
    assert_eq!(
        submitted(&a),
        vec![3],
        "the earlier failure did not stop the run"
    );
    assert!(!h.s.handle(
        Input::Carried(3, Status::Failed, Reason::ExitCode(1)),
        h.now
    ));
    h.feed(Input::Finished(3, Outcome::Passed));
    assert!(h.s.is_done());
}

// --- retries --------------------------------------------------------------------------------

#[test]
fn a_retried_failure_reaches_no_dependent_until_the_last_attempt() {
    let mut f = chain(2);
    f.jobs[0].retries = 2;
    f.jobs[0].retry_on = crate::flow::RetryOn::ANY;
    let mut h = H::new(f);
    assert_eq!(submitted(&h.start()), vec![0]);
    for attempt in 1..=2 {
        let a = h.feed(Input::Finished(0, Outcome::Failed(Reason::ExitCode(1))));
        assert!(
            a.iter().any(|a| matches!(
                a,
                Action::Retry {
                    job: 0,
                    status: Status::Failed,
                    ..
                }
            )),
            "attempt {attempt}: {a:?}"
        );
        // Submitted again at once; the dependent still waits.
        assert_eq!(submitted(&a), vec![0], "attempt {attempt}");
        assert_eq!(h.st(0), Status::Running);
        assert_eq!(h.st(1), Status::Scheduled);
    }
    let a = h.feed(Input::Finished(0, Outcome::Failed(Reason::ExitCode(1))));
    assert!(
        !a.iter().any(|a| matches!(a, Action::Retry { .. })),
        "{a:?}"
    );
    assert_eq!(h.st(0), Status::Failed);
    assert_eq!(h.st(1), Status::Skipped);
}

#[test]
fn kills_the_scheduler_asked_for_and_failures_retry_on_does_not_cover_are_not_retried() {
    let mut f = independent(2);
    for j in &mut f.jobs {
        j.retries = 3;
    }
    let mut h = H::new(f);
    h.start();
    // Default retry_on: lost and killed by the backend, not exit codes.
    h.feed(Input::Finished(0, Outcome::Failed(Reason::ExitCode(2))));
    assert_eq!(h.st(0), Status::Failed);
    // A kill the scheduler asked for ends the job, whatever retry_on says.
    h.feed(Input::Kill(1, Reason::Killed("killed by the test".into())));
    h.feed(Input::Finished(
        1,
        Outcome::Killed(Reason::Killed("x".into())),
    ));
    assert_eq!(h.st(1), Status::Killed);
    assert_eq!(h.why(1), "killed by the test");
}

#[test]
fn a_lost_job_is_retried_by_default() {
    let mut f = independent(1);
    f.jobs[0].retries = 1;
    let mut h = H::new(f);
    h.start();
    let a = h.feed(Input::Lost(0, "NODE_FAIL".into()));
    assert_eq!(submitted(&a), vec![0]);
    h.feed(Input::Finished(0, Outcome::Passed));
    assert_eq!(h.st(0), Status::Passed);
}

#[test]
fn a_retried_job_waits_out_its_backoff_doubling_per_retry() {
    let mut f = chain(2);
    f.jobs[0].retries = 3;
    f.jobs[0].retry_on = crate::flow::RetryOn::ANY;
    f.jobs[0].retry_backoff = Duration::from_millis(100);
    let mut h = H::new(f);
    assert_eq!(submitted(&h.start()), vec![0]);
    // Attempt n fails at `fail_at`; retry n may start `wait` later (100, 200, 400 ms).
    for (fail_at, wait) in [(10, 100), (200, 200), (500, 400)] {
        h.at_ms(fail_at);
        let a = h.feed(Input::Finished(0, Outcome::Failed(Reason::ExitCode(1))));
        assert!(
            a.iter().any(|a| matches!(a, Action::Retry { job: 0, .. })),
            "{a:?}"
        );
        assert!(
            submitted(&a).is_empty(),
            "retried before its backoff: {a:?}"
        );
        assert_eq!(h.st(0), Status::Queued);
        assert_eq!(h.s.next_wakeup(), Some(h.ms(fail_at + wait)));
        // Anything that happens before the wait is over starts nothing.
        h.at_ms(fail_at + wait - 1);
        assert!(submitted(&h.feed(Input::Tick)).is_empty());
        h.at_ms(fail_at + wait);
        assert_eq!(
            submitted(&h.feed(Input::Tick)),
            vec![0],
            "at {fail_at}+{wait}"
        );
        assert_eq!(h.st(1), Status::Scheduled);
    }
    h.at_ms(1000);
    h.feed(Input::Finished(0, Outcome::Passed));
    assert_eq!(h.st(0), Status::Passed);
    assert_eq!(h.st(1), Status::Running);
}

#[test]
fn a_job_waiting_out_its_backoff_is_killed_as_queued_by_an_interrupt_or_max_fail() {
    let mut f = independent(3);
    for j in &mut f.jobs[..2] {
        j.retries = 1;
        j.retry_on = crate::flow::RetryOn::ANY;
        j.retry_backoff = Duration::from_secs(60);
    }
    f.spec.max_fail = Some(1);
    let mut h = H::new(f);
    h.start();
    h.feed(Input::Finished(0, Outcome::Failed(Reason::ExitCode(1))));
    assert_eq!(h.st(0), Status::Queued);
    // Job 2 fails for good: the run stops, and the waiting retry never starts.
    h.feed(Input::Finished(2, Outcome::Failed(Reason::ExitCode(1))));
    assert_eq!(
        (h.st(0), h.why(0).as_str()),
        (Status::Killed, "stopped after 1 failure")
    );
    h.at_ms(120_000);
    assert!(submitted(&h.feed(Input::Tick)).is_empty());

    let mut f = independent(1);
    f.jobs[0].retries = 1;
    f.jobs[0].retry_on = crate::flow::RetryOn::ANY;
    f.jobs[0].retry_backoff = Duration::from_secs(60);
    let mut h = H::new(f);
    h.start();
    h.feed(Input::Finished(0, Outcome::Failed(Reason::ExitCode(1))));
    h.feed(Input::Interrupt(Interrupt::Sigint));
    assert_eq!(h.st(0), Status::Killed);
    assert!(h.s.is_done());
    assert_eq!(h.s.next_wakeup(), None);
}

#[test]
fn the_retry_wait_doubles_up_to_an_hour() {
    let mut f = independent(1);
    f.jobs[0].retries = 3;
    f.jobs[0].retry_on = crate::flow::RetryOn::ANY;
    f.jobs[0].retry_backoff = Duration::from_secs(40 * 60);
    let mut h = H::new(f);
    h.start();
    let mut t = 0;
    for wait_min in [40, 60, 60] {
        h.feed(Input::Finished(0, Outcome::Failed(Reason::ExitCode(1))));
        t += wait_min * 60_000;
        assert_eq!(h.s.next_wakeup(), Some(h.ms(t)), "wait {wait_min} min");
        h.at_ms(t);
        assert_eq!(submitted(&h.feed(Input::Tick)), vec![0]);
    }
}

#[test]
fn retries_used_in_a_resumed_run_are_not_given_again_and_the_backoff_doubles_on() {
    let mut f = independent(2);
    for j in &mut f.jobs {
        j.retries = 2;
        j.retry_on = crate::flow::RetryOn::ANY;
        j.retry_backoff = Duration::from_millis(100);
    }
    let mut h = H::new(f);
    assert!(h.s.handle(Input::RetriesUsed(0, 1), h.now));
    let a = h.start();
    assert_eq!(submitted(&a), vec![0, 1]);
    // After the start it is ignored.
    assert!(!h.s.handle(Input::RetriesUsed(1, 2), h.now));
    h.feed(Input::Finished(0, Outcome::Failed(Reason::ExitCode(1))));
    h.feed(Input::Finished(1, Outcome::Failed(Reason::ExitCode(1))));
    // Job 0 is on its second retry: it waits twice the backoff; job 1 on its first.
    assert_eq!(h.s.next_wakeup(), Some(h.ms(100)));
    h.at_ms(100);
    assert_eq!(submitted(&h.feed(Input::Tick)), vec![1]);
    h.at_ms(200);
    assert_eq!(submitted(&h.feed(Input::Tick)), vec![0]);
    // Its last retry is spent: the next failure ends it.
    h.feed(Input::Finished(0, Outcome::Failed(Reason::ExitCode(1))));
    assert_eq!(h.st(0), Status::Failed);
    h.feed(Input::Finished(1, Outcome::Failed(Reason::ExitCode(1))));
    assert_eq!(h.st(1), Status::Queued);
}

// --- --max-fail -----------------------------------------------------------------------------

#[test]
fn after_max_fail_failures_nothing_starts_and_the_rest_ends_stopped() {
    // Four independent jobs and one needing job 3, one slot.
    let mut f = independent(4);
    f.jobs.push(job("after"));
    f.jobs[4].needs = vec![3];
    f.spec.max_parallel = Some(2);
    f.spec.max_fail = Some(1);
    let mut h = H::new(f);
    assert_eq!(submitted(&h.start()), vec![0, 1]);
    h.feed(Input::Accepted(0));
    h.feed(Input::Accepted(1));
    let a = h.feed(Input::Finished(0, Outcome::Failed(Reason::ExitCode(1))));
    assert!(submitted(&a).is_empty(), "{a:?}");
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Kill(0, js) if js == &[1])),
        "{a:?}"
    );
    assert_eq!(
        (h.st(2), h.why(2).as_str()),
        (Status::Killed, "stopped after 1 failure")
    );
    assert_eq!(
        (h.st(4), h.why(4).as_str()),
        (Status::Skipped, "stopped after 1 failure")
    );
    h.feed(Input::Finished(
        1,
        Outcome::Killed(Reason::Killed("x".into())),
    ));
    assert_eq!(
        (h.st(1), h.why(1).as_str()),
        (Status::Killed, "stopped after 1 failure")
    );
    assert!(h.s.is_done());
}
