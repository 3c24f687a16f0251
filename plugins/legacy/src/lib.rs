//! flowrun's `legacy` backend: drives a site's synchronous, poll-style launcher (a shared
//! library implementing `include/flowrun_legacy.h`, in any language) under flowrun's
//! asynchronous scheduler, the way DVSim's `LegacyLauncherAdapter` keeps old launchers
//! running until they are rewritten.
//!
//! Layout (README.md says what a user sees; docs/design/legacy-adapter.md why):
//! - `backend`: the backend in flowrun's process; starts and watches the worker.
//! - `worker`: the worker process (and its guardian), where the launcher is loaded.
//! - `engine`: the poller (FIFO, ticks, limits), independent of processes and of C.
//! - `launcher` and `sys::launcher_abi`: the launcher's C ABI.
//! - `protocol`: the frames between backend and worker.
//! - `abi_map`: the one place that touches flowrun's plugin SDK types.
//! - `sys`: every `unsafe` operation, fenced in one module.
//! - `inprocess`: the launcher loaded into flowrun itself, for the benchmark only.
#![deny(unsafe_code)]

mod abi_map;
mod backend;
mod config;
mod engine;
mod inprocess;
mod launcher;
mod protocol;
#[allow(unsafe_code)]
mod sys;
mod worker;

#[cfg(test)]
mod tests;

use flowrun_plugin_sdk::{BackendImpl, ErrorKind, PluginError, Sink};

pub use config::Config;

mod exports {
    flowrun_plugin_sdk::export_plugin!(name = "legacy", version = env!("CARGO_PKG_VERSION"));
    flowrun_plugin_sdk::register_backend!(
        kind = "legacy",
        description = "drives a synchronous poll-style launcher library (C ABI, any language) from a crash-isolated worker process",
        create = super::create
    );
}

/// Set to `1`, loads the launcher into flowrun itself instead of a worker process: only to
/// measure what the worker costs (docs/benchmarks.md). A crashing launcher then takes flowrun
/// down with it.
pub const IN_PROCESS_ENV: &str = "FLOWRUN_LEGACY_IN_PROCESS_FOR_BENCHMARKS";

/// Creates a legacy backend from its TOML config: parses it, then starts the worker and loads
/// the launcher, so that a launcher that cannot be loaded fails the run before any job.
pub fn create(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
    let config = Config::parse(config)?;
    let config_error = |e: String| PluginError::new(ErrorKind::CONFIG, e);
    if std::env::var(IN_PROCESS_ENV).as_deref() == Ok("1") {
        tracing::warn!("{IN_PROCESS_ENV}=1: the legacy launcher runs inside flowrun, unprotected");
        return Ok(Box::new(
            inprocess::InProcess::start(config, sink).map_err(config_error)?,
        ));
    }
    Ok(Box::new(
        backend::LegacyBackend::start(config, sink).map_err(config_error)?,
    ))
}
