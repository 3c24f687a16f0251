//! The `trace` observer: the run in the Chrome trace-event JSON format, which Perfetto
//! (ui.perfetto.dev) and `chrome://tracing` open. See README.md for the layout.
#![forbid(unsafe_code)]

mod render;

use std::path::PathBuf;

use flowrun_observer_kit::{
    refuse_host_files, resolve_in_run_dir, write_atomically, Contained, RunModel,
};
use flowrun_plugin_sdk::{ErrorKind, ObserverImpl, PluginError, RunEvents};

flowrun_plugin_sdk::export_plugin!(name = "trace", version = env!("CARGO_PKG_VERSION"));
flowrun_plugin_sdk::register_observer!(
    kind = "trace",
    description = "writes the run as a Chrome trace (Perfetto, chrome://tracing): one track per backend slot (config: path, default \"trace.json\" in the run directory)",
    create = create
);

/// Creates the observer from its TOML config (`path`, optional).
pub fn create(config: &str) -> Result<Box<dyn ObserverImpl>, PluginError> {
    let path = flowrun_observer_kit::config::path_only(config, "trace.json")?;
    Ok(Box::new(TraceObserver {
        path,
        model: Contained::new("trace", RunModel::default()),
    }))
}

struct TraceObserver {
    path: PathBuf,
    model: Contained<RunModel>,
}

impl ObserverImpl for TraceObserver {
    fn on_events(&self, events: RunEvents<'_>) {
        self.model.on_events(|m| {
            for e in events {
                m.apply(e);
            }
        });
    }

    fn finish(&self) -> Result<(), PluginError> {
        self.model.finish(|m| {
            let Some(run_dir) = &m.run_dir else {
                return Err(PluginError::other(
                    "trace: the run never started (no RUN_STARTED event), so no trace was written",
                ));
            };
            let path = resolve_in_run_dir(run_dir, &self.path);
            refuse_host_files(run_dir, &path)
                .and_then(|()| write_atomically(&path, |w| render::write_trace(m, w)))
                .map_err(|e| {
                    PluginError::new(
                        ErrorKind::IO,
                        format!("trace: cannot write {}: {e}", path.display()),
                    )
                })
        })
    }
}

#[cfg(test)]
mod tests;
