//! Spec builders shared by the scheduler's tests and its benchmark
//! (`host/examples/sched_bench.rs`).

use super::{BackendSpec, JobSpec, SchedSpec, When};

/// A job named `name` on backend 0, no dependencies, one slot.
pub fn job(name: &str) -> JobSpec {
    JobSpec {
        name: name.to_string(),
        priority: 0,
        backend: 0,
        needs: Vec::new(),
        when: When::AllPassed,
        slots: 1,
        resources: Vec::new(),
        timeout: None,
    }
}

/// A backend with an optional cap.
pub fn backend(name: &str, cap: Option<u32>) -> BackendSpec {
    BackendSpec {
        name: name.to_string(),
        max_parallel: cap,
    }
}

/// A spec of `jobs` on one uncapped backend named `local`.
pub fn spec(jobs: Vec<JobSpec>) -> SchedSpec {
    SchedSpec {
        jobs,
        backends: vec![backend("local", None)],
        resources: Vec::new(),
        max_parallel: None,
    }
}

/// `n` independent jobs.
pub fn independent(n: usize) -> SchedSpec {
    spec((0..n).map(|i| job(&format!("job{i:07}"))).collect())
}

/// A chain of `n` jobs, each needing the one before.
pub fn chain(n: usize) -> SchedSpec {
    spec(
        (0..n)
            .map(|i| {
                let mut j = job(&format!("job{i:07}"));
                if i > 0 {
                    j.needs = vec![i as u32 - 1];
                }
                j
            })
            .collect(),
    )
}

/// One head, `n` jobs needing it, one tail needing them all.
pub fn fan(n: usize) -> SchedSpec {
    let mut jobs = vec![job("head")];
    for i in 0..n {
        let mut j = job(&format!("mid{i:07}"));
        j.needs = vec![0];
        jobs.push(j);
    }
    let mut tail = job("tail");
    tail.needs = (1..=n as u32).collect();
    jobs.push(tail);
    spec(jobs)
}

/// `n` independent jobs under a backend cap of 8.
pub fn capped(n: usize) -> SchedSpec {
    let mut s = independent(n);
    s.backends[0].max_parallel = Some(8);
    s
}

/// `n` independent jobs each taking one of 8 licenses.
pub fn resource_capped(n: usize) -> SchedSpec {
    let mut s = independent(n);
    for j in &mut s.jobs {
        j.resources = vec![(0, 1)];
    }
    s.resources = vec![8];
    s
}
