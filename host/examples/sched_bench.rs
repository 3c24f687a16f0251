//! Times the scheduler core alone (no processes, no plugins): `new`, `start` and the rest of a
//! run where every job is accepted and passes, best of three.
//!
//!     cargo run --release -p flowrun --example sched_bench
//!
//! The whole-program benchmark (flow loading, run loop, plugin boundary, results.json) is
//! `benches/sched.py`; figures of both are in docs/benchmarks.md.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use flowrun::sched::{fixtures::*, *};

fn failed(r: &str) -> Outcome {
    Outcome::Failed(Reason::Backend(r.into()))
}

fn main() {
    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }
    fn time(name: &str, mk: fn(usize) -> Fixture, n: usize, batch: usize) {
        let mut best = [f64::MAX; 3];
        for _ in 0..3 {
            let sp = mk(n);
            let t = Instant::now();
            let mut s = sp.scheduler();
            let t_new = t.elapsed();
            let now = Instant::now();
            let t = Instant::now();
            s.start(now);
            let mut pending: VecDeque<JobIx> = VecDeque::new();
            let mut count = 0;
            let mut first = true;
            let mut t_start = Duration::ZERO;
            loop {
                for a in s.drain_actions() {
                    if let Action::Submit(_, js) = a {
                        count += js.len();
                        pending.extend(js);
                    }
                }
                if first {
                    t_start = t.elapsed();
                    first = false;
                }
                if pending.is_empty() {
                    break;
                }
                for _ in 0..batch.min(pending.len()) {
                    let j = pending.pop_front().unwrap();
                    s.handle(Input::Accepted(j), now);
                    s.handle(Input::Finished(j, Outcome::Passed), now);
                }
            }
            let t_all = t.elapsed();
            assert!(s.is_done());
            assert!(count >= n);
            for (b, v) in best.iter_mut().zip([t_new, t_start, t_all - t_start]) {
                *b = b.min(ms(v));
            }
        }
        println!(
            "{name:<34} new {:>7.1} ms  start {:>7.1} ms  run {:>7.1} ms  total {:>7.1} ms",
            best[0],
            best[1],
            best[2],
            best.iter().sum::<f64>()
        );
    }
    time(
        "1M independent (batches of 1024)",
        independent,
        1_000_000,
        1024,
    );
    time("100k chain", chain, 100_000, 1);
    time("1M chain", chain, 1_000_000, 1);
    time("fan 1 -> 100k -> 1", fan, 100_000, 1024);
    time("100k under backend cap 8", capped, 100_000, 8);
    time("100k under resource cap 8", resource_capped, 100_000, 8);
    time("1M under backend cap 8", capped, 1_000_000, 8);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let sp = chain(1_000_000);
        let t = Instant::now();
        let mut s = sp.scheduler();
        let now = Instant::now();
        s.start(now);
        s.drain_actions();
        s.handle(Input::Finished(0, failed("boom")), now);
        s.drain_actions();
        assert!(s.is_done());
        best = best.min(ms(t.elapsed()));
    }
    println!("1M chain failing at head (new included): {best:.1} ms");
    println!("size_of Action = {} bytes", std::mem::size_of::<Action>());
}
