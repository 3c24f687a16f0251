//! One thread per backend instance, making the plugin calls. Plugin calls are meant to be
//! prompt, but a thread of its own keeps a slow or misbehaving plugin from stalling the loop,
//! and lets submissions to different backends proceed in parallel.

use std::{
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
};

use tokio::sync::mpsc::UnboundedSender;

use super::LoopMsg;
use crate::{
    backend::{Backend, BackendCaps, JobRequest},
    sched::JobIx,
};

/// Work for a driver thread.
pub enum DriverMsg {
    /// Submit a batch.
    Submit(Vec<JobRequest>),
    /// Kill a batch.
    Kill(Vec<JobIx>),
}

/// The handle of a backend's driver thread.
#[derive(Clone)]
pub struct BackendDriver {
    /// The backend's capabilities, read once.
    pub caps: BackendCaps,
    backend: Arc<dyn Backend>,
    name: String,
    tx: Arc<Mutex<Option<mpsc::Sender<DriverMsg>>>>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl BackendDriver {
    /// Starts the driver thread of `backend`; answers go to `loop_tx`.
    pub fn start(name: String, backend: Arc<dyn Backend>, loop_tx: UnboundedSender<LoopMsg>) -> Self {
        let caps = backend.capabilities();
        let (tx, rx) = mpsc::channel::<DriverMsg>();
        let b = backend.clone();
        let max_batch = caps.max_batch.unwrap_or(usize::MAX).max(1);
        let thread = std::thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || {
                for msg in rx {
                    match msg {
                        DriverMsg::Submit(mut jobs) => {
                            while !jobs.is_empty() {
                                let rest = if jobs.len() > max_batch { jobs.split_off(max_batch) } else { Vec::new() };
                                let ids: Vec<JobIx> = jobs.iter().map(|j| j.job).collect();
                                let replies = b.submit(jobs);
                                let _ = loop_tx.send(LoopMsg::Answers(ids.into_iter().zip(replies).collect()));
                                jobs = rest;
                            }
                        }
                        DriverMsg::Kill(ids) => {
                            for chunk in ids.chunks(max_batch) {
                                b.kill(chunk);
                            }
                        }
                    }
                }
            })
            .expect("spawn a backend driver thread");
        BackendDriver {
            caps,
            backend,
            name,
            tx: Arc::new(Mutex::new(Some(tx))),
            thread: Arc::new(Mutex::new(Some(thread))),
        }
    }

    /// Queues work for the thread.
    pub fn send(&self, msg: DriverMsg) {
        if let Some(tx) = self.tx.lock().expect("driver lock").as_ref() {
            let _ = tx.send(msg);
        }
    }

    /// Lets the thread finish its queue, then shuts the backend down, on a thread of its own.
    pub fn shutdown(&self) -> JoinHandle<()> {
        let tx = self.tx.lock().expect("driver lock").take();
        let thread = self.thread.lock().expect("driver lock").take();
        let backend = self.backend.clone();
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("shutdown-{name}"))
            .spawn(move || {
                drop(tx);
                if let Some(t) = thread {
                    let _ = t.join();
                }
                backend.shutdown();
                let stats = backend.stats();
                if !stats.trim().is_empty() {
                    tracing::debug!(backend = %name, "backend stats: {}", stats.trim().replace('\n', ", "));
                }
            })
            .expect("spawn a shutdown thread")
    }
}
