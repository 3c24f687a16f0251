//! One thread that ends fake jobs when their duration is up: a binary heap of deadlines under a
//! mutex, and a condvar to wake the thread when an earlier deadline arrives or on shutdown.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use flowrun_plugin_sdk::{JobId, PluginError};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::{Core, Outcome};

/// A job waiting for its deadline.
pub(crate) struct DelayedJob {
    pub id: JobId,
    pub name: String,
    pub log_path: String,
    pub outcome: Outcome,
}

#[derive(Default)]
struct State {
    /// Deadlines with a sequence number that keys `jobs`. A killed job leaves its entry behind
    /// (removing from the middle of a binary heap is O(n)): the entry is dropped when it comes
    /// up and its sequence number is no longer in `jobs`.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    jobs: HashMap<u64, DelayedJob>,
    /// Which sequence number a job id holds now.
    seq_of: HashMap<JobId, u64>,
    next_seq: u64,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }
}

pub(crate) struct Timer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    core: Arc<Core>,
}

impl Timer {
    pub fn start(core: Arc<Core>) -> Result<Timer, PluginError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread = {
            let (shared, core) = (shared.clone(), core.clone());
            std::thread::Builder::new()
                .name("fake-timer".into())
                .spawn(move || run(&shared, &core))
                .map_err(|e| {
                    PluginError::io(format!("cannot start the fake backend's timer thread: {e}"))
                })?
        };
        Ok(Timer {
            shared,
            thread: Mutex::new(Some(thread)),
            core,
        })
    }

    /// Ends `job` after `after`.
    pub fn schedule(&self, after: Duration, job: DelayedJob) {
        let deadline = Instant::now() + after;
        let mut st = self.shared.lock();
        if st.stopping {
            drop(st);
            self.core
                .kill_pending(&job, "the fake backend has shut down");
            return;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let earliest = st
            .deadlines
            .peek()
            .is_none_or(|Reverse((d, _))| deadline < *d);
        st.deadlines.push(Reverse((deadline, seq)));
        st.seq_of.insert(job.id, seq);
        st.jobs.insert(seq, job);
        drop(st);
        if earliest {
            self.shared.wake.notify_one();
        }
    }

    /// Ends the still-pending jobs among `ids` as killed.
    pub fn kill(&self, ids: &[JobId]) {
        let killed: Vec<DelayedJob> = {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            ids.iter()
                .filter_map(|id| st.seq_of.remove(id))
                .filter_map(|seq| st.jobs.remove(&seq))
                .collect()
        };
        for job in &killed {
            self.core.kill_pending(job, "");
        }
    }

    /// Kills every pending job and stops the thread. Idempotent.
    pub fn shutdown(&self) {
        let left: Vec<DelayedJob> = {
            let mut st = self.shared.lock();
            st.stopping = true;
            st.deadlines.clear();
            st.seq_of.clear();
            st.jobs.drain().map(|(_, j)| j).collect()
        };
        self.shared.wake.notify_one();
        for job in &left {
            self.core
                .kill_pending(job, "the fake backend has shut down");
        }
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// How many jobs wait for their deadline.
    pub fn pending(&self) -> usize {
        self.shared.lock().jobs.len()
    }
}

/// The timer thread: sleeps until the earliest deadline, ends what is due, repeats.
fn run(shared: &Shared, core: &Core) {
    let mut st = shared.lock();
    loop {
        if st.stopping {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(Reverse((deadline, seq))) = st.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            st.deadlines.pop();
            if let Some(job) = st.jobs.remove(&seq) {
                st.seq_of.remove(&job.id);
                due.push(job);
            }
        }
        if !due.is_empty() {
            // Emit (and maybe write logs) without the lock, so submit and kill never wait on I/O.
            drop(st);
            for job in due {
                core.complete(job.id, &job.name, &job.log_path, job.outcome);
            }
            st = shared.lock();
            continue;
        }
        match st.deadlines.peek() {
            Some(Reverse((deadline, _))) => {
                let wait = deadline.saturating_duration_since(now);
                shared.wake.wait_for(&mut st, wait);
            }
            None => shared.wake.wait(&mut st),
        }
    }
}

impl Drop for Timer {
    /// A backend dropped without `shutdown` must not leave its thread parked forever.
    fn drop(&mut self) {
        self.shutdown();
    }
}
