//! Flow fragments shared by the scheduler's tests, the run loop's tests and the scheduler's
//! benchmark (`host/examples/sched_bench.rs`): jobs are the flow's own [`Job`]s, the rest a
//! [`SchedSpec`].

use std::{
    path::Path,
    sync::{Arc, OnceLock},
    time::Duration,
};

use super::{BackendSpec, SchedSpec, Scheduler, SchedulerApi};
use crate::flow::{Command, Job, Location, When};

/// Jobs and what the scheduler is built from besides them.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The jobs, as the flow loader would give them.
    pub jobs: Vec<Job>,
    /// Backends, resources, caps.
    pub spec: SchedSpec,
}

impl Fixture {
    /// A scheduler over the fixture.
    pub fn scheduler(&self) -> Scheduler {
        Scheduler::new(&self.jobs, self.spec.clone())
    }
}

fn location() -> Location {
    static FILE: OnceLock<Arc<Path>> = OnceLock::new();
    Location {
        file: FILE
            .get_or_init(|| Arc::from(Path::new("fixture.toml")))
            .clone(),
        line: 1,
        column: 1,
    }
}

/// A job named `name` on backend 0 running `true`, no dependencies, one cpu.
pub fn job(name: &str) -> Job {
    Job {
        name: name.to_string(),
        cmd: Command::Shell("true".into()),
        cwd: None,
        env: Vec::new(),
        timeout: None,
        priority: 0,
        backend: 0,
        needs: Vec::new(),
        when: When::AllPassed,
        cpus: 1,
        memory_mb: None,
        resources: Vec::new(),
        patterns: None,
        interactive: false,
        attrs: Vec::new(),
        retries: 0,
        retry_on: crate::flow::RetryOn::DEFAULT,
        retry_backoff: std::time::Duration::ZERO,
        location: location(),
    }
}

/// A timeout of `ms` milliseconds, with its text.
pub fn timeout_ms(ms: u64) -> Option<(Duration, String)> {
    Some((Duration::from_millis(ms), format!("{ms}ms")))
}

/// A backend with an optional cap, batches of 1024, a kill grace of 1 s, not enforcing
/// timeouts.
pub fn backend(name: &str, cap: Option<u32>) -> BackendSpec {
    BackendSpec {
        name: name.to_string(),
        max_parallel: cap,
        max_batch: 1024,
        enforces_timeout: false,
        kill_grace: Duration::from_secs(1),
    }
}

/// A fixture of `jobs` on one uncapped backend named `local`.
pub fn spec(jobs: Vec<Job>) -> Fixture {
    Fixture {
        jobs,
        spec: SchedSpec {
            backends: vec![backend("local", None)],
            ..SchedSpec::default()
        },
    }
}

/// `n` independent jobs.
pub fn independent(n: usize) -> Fixture {
    spec((0..n).map(|i| job(&format!("job{i:07}"))).collect())
}

/// A chain of `n` jobs, each needing the one before.
pub fn chain(n: usize) -> Fixture {
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
pub fn fan(n: usize) -> Fixture {
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
pub fn capped(n: usize) -> Fixture {
    let mut s = independent(n);
    s.spec.backends[0].max_parallel = Some(8);
    s
}

/// `n` independent jobs each taking one of 8 licenses.
pub fn resource_capped(n: usize) -> Fixture {
    let mut s = independent(n);
    for j in &mut s.jobs {
        j.resources = vec![(0, 1)];
    }
    s.spec.resources = vec![8];
    s
}
