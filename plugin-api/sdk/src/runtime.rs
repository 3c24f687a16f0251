//! A tokio runtime owned by the plugin (feature `runtime`). The plugin links its own tokio,
//! whose runtime context is a thread-local of *its* copy: `tokio::process`, timers and I/O
//! called on a host thread panic with "no reactor running" (and the child may already be
//! forked). So every future, timer and child process of a plugin runs here.

use std::{
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    task::{Context, Poll},
};

use crate::{panic_message, Event, JobId, PluginError, Sink};

/// A tokio runtime owned by the plugin. The plugin links its own tokio, which cannot see the
/// host's runtime, so every future, timer and child process of a plugin runs here: start a
/// job's `tokio::process::Command` inside the future given to [`PluginRuntime::spawn_job`],
/// never on the thread that calls `submit` (that thread belongs to the host and has no
/// runtime context of this tokio copy).
pub struct PluginRuntime {
    runtime: tokio::runtime::Runtime,
}

impl PluginRuntime {
    /// Builds a runtime with `threads` worker threads named `<name>-rt`.
    pub fn new(name: &str, threads: usize) -> Result<Self, PluginError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(format!("{name}-rt"))
            .enable_all()
            .build()
            .map_err(|e| PluginError::io(format!("cannot start the {name} runtime: {e}")))?;
        Ok(PluginRuntime { runtime })
    }

    /// The runtime's handle. `let _context = runtime.handle().enter();` gives the current
    /// thread this runtime's context (for a `tokio::process` call outside a spawned future).
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Spawns the future that drives job `id`. If it panics, the job is reported lost with
    /// "plugin panicked: ..."; if it never finishes because the runtime shut down first (a
    /// task not yet polled is dropped then, which on a loaded machine happens to a task
    /// spawned just before), it is reported lost too: the host never waits forever.
    pub fn spawn_job<F>(&self, sink: &Sink, id: JobId, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Built outside the task: a task dropped before its first poll drops it too.
        let mut unfinished = Unfinished {
            sink: sink.clone(),
            id,
            armed: true,
        };
        self.runtime.spawn(async move {
            let result = CatchUnwind(Box::pin(fut)).await;
            unfinished.armed = false;
            if let Err(msg) = result {
                unfinished
                    .sink
                    .emit(Event::lost(id, format!("plugin panicked: {msg}")));
            }
        });
    }

    /// Shuts the runtime down, waiting at most `timeout` for its tasks.
    pub fn shutdown_timeout(self, timeout: std::time::Duration) {
        self.runtime.shutdown_timeout(timeout)
    }
}

/// Reports its job lost when dropped armed: the job's task was dropped before it finished.
struct Unfinished {
    sink: Sink,
    id: JobId,
    armed: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.armed {
            self.sink.emit(Event::lost(
                self.id,
                "the plugin's runtime stopped before the job ended".to_string(),
            ));
        }
    }
}

struct CatchUnwind(Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for CatchUnwind {
    type Output = Result<(), String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Err(p) => Poll::Ready(Err(panic_message(&*p))),
        }
    }
}
