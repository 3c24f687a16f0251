//! The loop's handle on one backend instance.
//!
//! Submit and kill are called inline, on the loop's thread: the plugin contract says they
//! return promptly (a backend does its slow work on threads of its own), and an inline call
//! costs well under a microsecond where a hop to another thread costs tens — the difference
//! between a 100,000-long chain taking a tenth of a second and taking fifteen. Only
//! `shutdown`, which may block by contract, runs on a thread of its own, and the host waits
//! for it a bounded time.

use std::{
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    backend::{Backend, BackendCaps, JobRequest, SubmitReply},
    sched::JobIx,
};

/// The most jobs handed to a backend in one call, so that a million ready jobs do not build a
/// million requests (and a million events) at once. The core forms batches of at most this (or
/// the backend's own limit).
pub const MAX_CALL_BATCH: usize = 1024;

/// A backend instance and what the loop knows of it.
#[derive(Clone)]
pub struct BackendHandle {
    /// The backend's capabilities, read once.
    pub caps: BackendCaps,
    backend: Arc<dyn Backend>,
    name: String,
}

impl BackendHandle {
    /// Wraps a created backend.
    pub fn new(name: String, backend: Arc<dyn Backend>) -> Self {
        BackendHandle {
            caps: backend.capabilities(),
            backend,
            name,
        }
    }

    /// How many jobs one call may carry.
    pub fn batch_limit(&self) -> usize {
        self.caps
            .max_batch
            .unwrap_or(MAX_CALL_BATCH)
            .clamp(1, MAX_CALL_BATCH)
    }

    /// Offers jobs (at most [`BackendHandle::batch_limit`]); one reply per job, in order. A
    /// backend that answers too few gets the rest rejected.
    pub fn submit(&self, jobs: &[JobRequest<'_>]) -> Vec<SubmitReply> {
        one_each(self.backend.submit(jobs), jobs.len())
    }

    /// Re-attaches jobs by native id (`--resume`); one reply per job, in order, as `submit`.
    pub fn reattach(&self, jobs: &[(JobRequest<'_>, &str)]) -> Vec<SubmitReply> {
        let mut replies = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(self.batch_limit()) {
            replies.extend(one_each(self.backend.reattach(chunk), chunk.len()));
        }
        replies
    }

    /// Kills jobs, in calls of at most the batch limit.
    pub fn kill(&self, jobs: &[JobIx]) {
        for chunk in jobs.chunks(self.batch_limit()) {
            self.backend.kill(chunk);
        }
    }

    /// Shuts the backend down on a thread of its own (shutdown may block).
    pub fn shutdown(&self) -> Option<JoinHandle<()>> {
        let backend = self.backend.clone();
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("shutdown-{name}"))
            .spawn(move || {
                backend.shutdown();
                let stats = backend.stats();
                if !stats.trim().is_empty() {
                    tracing::debug!(backend = %name, "backend stats: {}", stats.trim().replace('\n', ", "));
                }
            })
            .map_err(|e| tracing::warn!("backend {}: cannot start its shutdown: {e}", self.name))
            .ok()
    }

    /// The instance's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Exactly `n` replies: a backend that answers too few gets the rest rejected.
fn one_each(mut replies: Vec<SubmitReply>, n: usize) -> Vec<SubmitReply> {
    replies.truncate(n);
    while replies.len() < n {
        replies.push(SubmitReply::Rejected(
            "backend bug: no answer for this job".into(),
        ));
    }
    replies
}

/// Shuts every backend down at once, each on its own thread, and waits at most `wait` for all
/// of them: a backend that hangs in shutdown cannot hold flowrun (its results are written
/// already). Returns the names of those that did not finish.
pub fn shutdown_all(backends: &[BackendHandle], wait: Duration) -> Vec<String> {
    let handles: Vec<_> = backends.iter().map(|b| (b.name(), b.shutdown())).collect();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline
        && !handles
            .iter()
            .all(|(_, h)| h.as_ref().is_none_or(|h| h.is_finished()))
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    handles
        .into_iter()
        .filter(|(_, h)| h.as_ref().is_some_and(|h| !h.is_finished()))
        .map(|(name, _)| name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{JobRequest, SubmitReply};

    /// Blocks in shutdown until the process ends.
    struct Stuck;
    impl Backend for Stuck {
        fn capabilities(&self) -> BackendCaps {
            BackendCaps::default()
        }
        fn submit(&self, jobs: &[JobRequest<'_>]) -> Vec<SubmitReply> {
            vec![SubmitReply::Accepted; jobs.len().saturating_sub(1)]
        }
        fn kill(&self, _: &[JobIx]) {}
        fn shutdown(&self) {
            loop {
                std::thread::park();
            }
        }
        fn stats(&self) -> String {
            String::new()
        }
    }

    #[test]
    fn a_shutdown_that_hangs_is_waited_for_a_bounded_time_and_named() {
        let stuck = BackendHandle::new("stuck".into(), Arc::new(Stuck));
        let t = Instant::now();
        let left = shutdown_all(&[stuck], Duration::from_millis(100));
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(left, ["stuck"]);
    }

    #[test]
    fn a_backend_answering_too_few_jobs_gets_the_rest_rejected() {
        let stuck = BackendHandle::new("stuck".into(), Arc::new(Stuck));
        let flow_job = crate::sched::fixtures::job("a");
        let run = crate::backend::RunContext::new("/r".into(), "t".into(), Vec::new());
        let request = |ix| JobRequest {
            ix,
            job: &flow_job,
            attempt: 1,
            job_dir: "/r/jobs/a".into(),
            log_path: "/r/jobs/a/output.log".into(),
            run: &run,
        };
        let replies = stuck.submit(&[request(0), request(1)]);
        assert_eq!(replies[0], SubmitReply::Accepted);
        assert!(matches!(&replies[1], SubmitReply::Rejected(m) if m.contains("no answer")));
    }
}
