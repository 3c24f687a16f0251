//! The loop's handle on one backend instance.
//!
//! Submit and kill are called inline, on the loop's thread: the plugin contract says they
//! return promptly (a backend does its slow work on threads of its own), and an inline call
//! costs well under a microsecond where a hop to another thread costs tens — the difference
//! between a 100,000-long chain taking a tenth of a second and taking fifteen. Only
//! `shutdown`, which may block by contract, runs on a thread of its own.

use std::{sync::Arc, thread::JoinHandle};

use crate::{
    backend::{Backend, BackendCaps, JobRequest, SubmitReply},
    sched::JobIx,
};

/// The most jobs handed to a backend in one call, so that a million ready jobs do not build a
/// million requests (and a million events) at once.
pub const MAX_CALL_BATCH: usize = 1024;

/// A backend instance and what the loop knows of it.
#[derive(Clone)]
pub struct BackendDriver {
    /// The backend's capabilities, read once.
    pub caps: BackendCaps,
    backend: Arc<dyn Backend>,
    name: String,
}

impl BackendDriver {
    /// Wraps a created backend.
    pub fn new(name: String, backend: Arc<dyn Backend>) -> Self {
        BackendDriver {
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

    /// Offers jobs (at most [`BackendDriver::batch_limit`]); one reply per job, in order.
    pub fn submit(&self, jobs: Vec<JobRequest>) -> Vec<SubmitReply> {
        self.backend.submit(jobs)
    }

    /// Kills jobs, in calls of at most the batch limit.
    pub fn kill(&self, jobs: &[JobIx]) {
        for chunk in jobs.chunks(self.batch_limit()) {
            self.backend.kill(chunk);
        }
    }

    /// Shuts the backend down on a thread of its own (shutdown may block).
    pub fn shutdown(&self) -> JoinHandle<()> {
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
            .expect("spawn a shutdown thread")
    }
}
