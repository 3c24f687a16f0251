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
    fn new(spec: SchedSpec) -> H {
        let t0 = Instant::now();
        H {
            s: Scheduler::new(spec),
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
    fn why(&self, j: JobIx) -> &str {
        self.s.reason(j)
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

fn statuses(a: &[Action]) -> Vec<(JobIx, Status, Status, String)> {
    a.iter()
        .filter_map(|a| match a {
            Action::Status {
                job,
                old,
                new,
                reason,
            } => Some((*job, *old, *new, reason.clone())),
            _ => None,
        })
        .collect()
}

fn passed() -> Outcome {
    Outcome::Passed
}

fn failed(r: &str) -> Outcome {
    Outcome::Failed { reason: r.into() }
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
        statuses(&a),
        vec![
            (0, Status::Scheduled, Status::Queued, String::new()),
            (0, Status::Queued, Status::Running, String::new()),
        ]
    );
    assert_eq!(submits(&a), vec![(0, vec![0])]);
    let a = accept_finish(&mut h, 0, passed());
    assert_eq!(
        statuses(&a),
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
    h.feed(Input::Finished(
        2,
        Outcome::Killed {
            reason: "oom".into(),
        },
    ));
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
    assert!(statuses(&a).contains(&(
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
    let mut jobs: Vec<JobSpec> = ["a", "b", "c", "d", "e", "f", "g"]
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
fn priority_order_with_ties_by_name() {
    let mut jobs = Vec::new();
    for (n, p) in [("d", 0), ("c", 5), ("b", 0), ("a", -1), ("e", 5)] {
        let mut j = job(n);
        j.priority = p;
        jobs.push(j);
    }
    let mut s = spec(jobs);
    s.backends[0].max_parallel = Some(1);
    let mut h = H::new(s);
    let mut order = submitted(&h.start());
    while order.len() < 5 {
        let last = *order.last().unwrap();
        order.extend(submitted(&accept_finish(&mut h, last, passed())));
    }
    // c(5), e(5), b(0), d(0), a(-1).
    assert_eq!(order, vec![1, 4, 2, 0, 3]);
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
    s.backends = vec![backend("b0", Some(1)), backend("b1", None)];
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
    s.resources = vec![4];
    let mut h = H::new(s);
    let a = h.start();
    // a (priority 10), then free and small (priority 0, by name).
    assert_eq!(submitted(&a), vec![0, 3, 2]);
    let a = accept_finish(&mut h, 0, passed());
    assert_eq!(submitted(&a), vec![1]);
}

#[test]
fn backend_cap_counts_slots_and_big_job_runs_alone() {
    let mut big = job("big");
    big.priority = 10;
    big.slots = 8;
    let mut two = job("two");
    two.slots = 2;
    two.priority = 5;
    let mut s = spec(vec![big, two, job("one"), job("one2")]);
    s.backends[0].max_parallel = Some(3);
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
    s.backends = vec![backend("b0", None), backend("b1", None)];
    s.max_parallel = Some(3);
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
    s.backends[0].max_parallel = Some(0);
    s.max_parallel = Some(0);
    let mut h = H::new(s);
    assert_eq!(submitted(&h.start()), vec![0]);
    assert_eq!(submitted(&accept_finish(&mut h, 0, passed())), vec![1]);
}

#[test]
fn kills_are_batched_per_backend() {
    let mut s = spec(vec![job("a"), job("b"), job("c")]);
    s.backends = vec![backend("b0", None), backend("b1", None)];
    s.jobs[1].backend = 1;
    let mut h = H::new(s);
    h.start();
    for j in 0..3 {
        h.feed(Input::Accepted(j));
    }
    for j in [2, 1, 0] {
        h.s.handle(Input::Kill(j, "stop".into()), h.now);
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
    s.resources = vec![5, 10];
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
    s.resources = vec![4];
    let mut h = H::new(s);
    assert_eq!(submitted(&h.start()), vec![0, 1]);
    accept_finish(&mut h, 0, passed());
    assert_eq!(h.st(0), Status::Passed);
}

#[test]
fn answers_rejected_lost_failed_killed() {
    let mut s = spec(vec![job("a"), job("b"), job("c"), job("d")]);
    s.backends[0].name = "slurm".into();
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
    accept_finish(&mut h, 2, failed(""));
    assert_eq!(h.why(2), "failed");
    accept_finish(
        &mut h,
        3,
        Outcome::Killed {
            reason: String::new(),
        },
    );
    assert_eq!(h.st(3), Status::Killed);
    assert_eq!(h.why(3), "killed");
    assert!(h.s.is_done());
    // Late or duplicate answers are ignored.
    h.feed(Input::Finished(0, passed()));
    h.feed(Input::Accepted(1));
    assert_eq!(h.st(0), Status::Failed);
}

#[test]
fn busy_backoff_doubles_caps_and_resets() {
    let mut s = spec(vec![job("a"), job("b")]);
    s.backends = vec![backend("b0", None), backend("b1", None)];
    s.jobs[1].backend = 1;
    let mut h = H::new(s);
    h.start();
    let mut t = 0;
    let mut expect = 10;
    for _ in 0..10 {
        let a = h.feed(Input::Busy(0));
        assert_eq!(
            statuses(&a),
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
    s.backends[0].max_parallel = Some(1);
    let mut h = H::new(s);
    h.start();
    h.feed(Input::Accepted(0));
    let a = h.feed(Input::Kill(2, "user".into()));
    assert_eq!(h.st(2), Status::Killed);
    assert_eq!(h.why(2), "user");
    assert_eq!(h.why(3), "dependency killed: c");
    assert!(kills(&a).is_empty());
    h.feed(Input::Kill(1, "user2".into()));
    assert_eq!(h.st(1), Status::Killed);
    assert_eq!(h.why(1), "user2");
    let a = h.feed(Input::Kill(0, "stop".into()));
    assert_eq!(kills(&a), vec![(0, vec![0])]);
    assert_eq!(h.st(0), Status::Running);
    // Only once.
    assert!(kills(&h.feed(Input::Kill(0, "again".into()))).is_empty());
    // The backend says passed: still Killed with the kill reason.
    h.feed(Input::Finished(0, passed()));
    assert_eq!(h.st(0), Status::Killed);
    assert_eq!(h.why(0), "stop");
    assert!(h.s.is_done());
    // Terminal: ignored.
    assert!(h.feed(Input::Kill(0, "x".into())).is_empty());
}

#[test]
fn kill_in_flight_then_accepted() {
    let mut h = H::new(spec(vec![job("a")]));
    h.start();
    assert!(kills(&h.feed(Input::Kill(0, "stop".into()))).is_empty());
    let a = h.feed(Input::Accepted(0));
    assert_eq!(kills(&a), vec![(0, vec![0])]);
    h.feed(Input::Finished(
        0,
        Outcome::Killed {
            reason: "SIGKILL".into(),
        },
    ));
    assert_eq!(h.st(0), Status::Killed);
    assert_eq!(h.why(0), "stop");
}

#[test]
fn kill_in_flight_then_busy() {
    let mut h = H::new(spec(vec![job("a"), job("b")]));
    h.start();
    h.feed(Input::Kill(0, "stop".into()));
    let a = h.feed(Input::Busy(0));
    assert_eq!(
        statuses(&a),
        vec![(
            0,
            Status::Running,
            Status::Killed,
            "killed while queued".into()
        )]
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
    h.feed(Input::Kill(0, "stop".into()));
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
    assert_eq!(h.s.next_wakeup(), None);
    h.feed(Input::Finished(0, failed("signal 9")));
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
    s.backends = vec![backend("b0", Some(2)), backend("b1", None)];
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
        h.feed(Input::Finished(
            j,
            Outcome::Killed {
                reason: "sig".into(),
            },
        ));
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
    let mut s = Scheduler::new(chain(n));
    let now = Instant::now();
    s.start(now);
    s.drain_actions();
    s.handle(Input::Finished(0, failed("boom")), now);
    let a = s.drain_actions();
    assert_eq!(a.len(), n);
    assert!(s.is_done());
    assert_eq!(s.reason(1), "dependency failed: job0000000");
    assert_eq!(s.reason(999_999), "dependency skipped: job0999998");
}

#[test]
fn scale_independent_100k() {
    let n = 100_000;
    let mut s = Scheduler::new(independent(n));
    let order = drive(&mut s, |_| Outcome::Passed, 1024);
    assert_eq!(order, (0..n as u32).collect::<Vec<_>>());
    assert!(s.is_done());
}

#[test]
fn scale_chain_100k() {
    let n = 100_000;
    let mut s = Scheduler::new(chain(n));
    let order = drive(&mut s, |_| Outcome::Passed, 1);
    assert_eq!(order, (0..n as u32).collect::<Vec<_>>());
    assert!(s.is_done());
}

#[test]
fn scale_fan_100k() {
    let n = 100_000;
    let mut s = Scheduler::new(fan(n));
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
    assert_eq!(s.reason(n as u32 + 1), "dependency failed: mid0000049");
}

#[test]
fn scale_capped_100k() {
    for sp in [capped(100_000), resource_capped(100_000)] {
        let mut s = Scheduler::new(sp);
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
