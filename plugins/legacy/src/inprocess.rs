//! The launcher loaded into flowrun's own process, behind a mutex and polled by a thread of
//! the backend: what the adapter would be without its worker. It exists to measure what the
//! worker costs (docs/benchmarks.md) and is not offered to users: a launcher that crashes here
//! takes flowrun down with it. Same poller ([`crate::engine`]), same launcher calls.

use std::{
    collections::HashMap,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use flowrun_plugin_sdk::{Answer as SubmitAnswer, BackendImpl, Capabilities, JobId, Jobs, Sink};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::{
    abi_map,
    config::Config,
    engine::{Engine, Pacing},
    protocol::{Answer, WorkerStats},
    sys::launcher_abi::LauncherLibrary,
};

const TICK_SLICE: Duration = Duration::from_millis(1);
const LAUNCH_BUDGET: Duration = Duration::from_millis(50);

struct State {
    /// `None` once shut down.
    engine: Option<Engine<LauncherLibrary>>,
    /// The engine's counters as shutdown left them: the host asks for the stats after it.
    stats_at_shutdown: WorkerStats,
    /// The launcher's ids of running jobs.
    native: HashMap<u64, Option<String>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    sink: Sink,
}

/// The in-process variant of the backend.
pub struct InProcess {
    shared: Arc<Shared>,
    poller: Mutex<Option<JoinHandle<()>>>,
}

impl InProcess {
    /// Loads the launcher here and starts the polling thread.
    pub fn start(config: Config, sink: Sink) -> Result<InProcess, String> {
        let library =
            LauncherLibrary::load(&config.library.display().to_string(), &config.options)?;
        let max_polls = match config.max_polls_per_interval {
            0 => usize::MAX,
            n => n as usize,
        };
        let engine = Engine::new(
            library,
            Pacing {
                interval: config.poll_interval,
                max_polls,
                launch_budget: LAUNCH_BUDGET,
            },
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                engine: Some(engine),
                stats_at_shutdown: WorkerStats::default(),
                native: HashMap::new(),
            }),
            wake: Condvar::new(),
            sink,
        });
        let s = shared.clone();
        let poller = std::thread::Builder::new()
            .name("legacy-poller".into())
            .spawn(move || poll_loop(&s))
            .map_err(|e| format!("cannot start the legacy poller: {e}"))?;
        Ok(InProcess {
            shared,
            poller: Mutex::new(Some(poller)),
        })
    }

    fn emit_ended(&self, state: &mut State, ended: &[crate::protocol::Ended]) {
        for e in ended {
            let native = state.native.remove(&e.id).flatten();
            self.shared.sink.emit(abi_map::ended(e, native.as_deref()));
        }
    }
}

fn poll_loop(shared: &Shared) {
    let mut guard = shared.state.lock();
    loop {
        let state = &mut *guard;
        let Some(engine) = state.engine.as_mut() else {
            return;
        };
        let now = Instant::now();
        match engine.due() {
            None => {
                shared.wake.wait(&mut guard);
                continue;
            }
            Some(due) if due > now => {
                shared.wake.wait_until(&mut guard, due);
                continue;
            }
            Some(_) => {}
        }
        match engine.run(now, TICK_SLICE, &Instant::now) {
            Some(ended) => {
                let events: Vec<_> = ended
                    .iter()
                    .map(|e| {
                        let native = state.native.remove(&e.id).flatten();
                        abi_map::ended(e, native.as_deref())
                    })
                    .collect();
                MutexGuard::unlocked(&mut guard, || {
                    for e in events {
                        shared.sink.emit(e);
                    }
                });
            }
            // Between two slices of a tick, let a waiting submit or kill in.
            None => MutexGuard::bump(&mut guard),
        }
    }
}

impl BackendImpl for InProcess {
    fn capabilities(&self) -> Capabilities {
        abi_map::capabilities()
    }

    fn submit(&self, jobs: Jobs<'_>) -> Vec<SubmitAnswer> {
        let mut guard = self.shared.state.lock();
        let state = &mut *guard;
        let Some(engine) = state.engine.as_mut() else {
            return jobs
                .iter()
                .map(|j| abi_map::rejected(j, "the legacy backend has shut down"))
                .collect();
        };
        let requests: Vec<_> = jobs.iter().map(abi_map::launch_request).collect();
        let answers = engine.launch(&requests, &Instant::now);
        // STARTED under the lock: the poller cannot report the job's end before it.
        for (r, a) in requests.iter().zip(&answers) {
            if let Answer::Started(native) = a {
                self.shared
                    .sink
                    .emit(abi_map::started(r.id, native.as_deref()));
                state.native.insert(r.id, native.clone());
            }
        }
        self.shared.wake.notify_one();
        requests
            .iter()
            .zip(&answers)
            .map(|(r, a)| abi_map::submit_answer(r.id, a))
            .collect()
    }

    fn kill(&self, ids: &[JobId]) {
        let mut guard = self.shared.state.lock();
        let ids: Vec<u64> = ids.iter().map(|id| id.0).collect();
        if let Some(engine) = guard.engine.as_mut() {
            let ended = engine.kill(&ids);
            self.emit_ended(&mut guard, &ended);
        }
    }

    fn shutdown(&self) {
        let engine = {
            let mut guard = self.shared.state.lock();
            let Some(mut engine) = guard.engine.take() else {
                return;
            };
            let ended = engine.kill_all();
            self.emit_ended(&mut guard, &ended);
            guard.stats_at_shutdown = engine.stats();
            self.shared.wake.notify_all();
            engine
        };
        if let Some(poller) = self.poller.lock().take() {
            let _ = poller.join();
        }
        engine.into_launcher().close();
    }

    fn stats(&self) -> String {
        let guard = self.shared.state.lock();
        let s = guard
            .engine
            .as_ref()
            .map_or(guard.stats_at_shutdown, |engine| engine.stats());
        format!(
            "in_process = true\nticks = {}\npolls = {}\nmax_polls_in_a_tick = {}\nlaunched = {}\ndeferred = {}\n",
            s.ticks, s.polls, s.max_polls_in_a_tick, s.launched, s.deferred
        )
    }
}
