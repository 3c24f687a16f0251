//! flowrun's command-template backend (`kind = "command"`): a batch system without a plugin of
//! its own (PBS/Torque, a site's queue wrapper, ...) driven through the SDK's cluster engine by
//! command templates and regexes alone. Nothing here knows any scheduler: the keys of the
//! backend table say how to submit, query, read and cancel (README.md).
#![forbid(unsafe_code)]

mod config;
mod dialect;
mod pattern;
mod template;

#[cfg(test)]
mod config_tests;
#[cfg(test)]
mod policy_tests;

use flowrun_plugin_api::{engine, sdk::*, PluginError};

/// Creates a command-template backend from its `[backends.NAME]` table. Every template and
/// regex is checked here, so a mistake is reported when the backend is created (by
/// `flowrun check` too), naming the key.
pub fn create(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
    let (engine_config, keys) = config::parse(config)?;
    let dialect = dialect::CommandDialect::new(keys)?;
    engine::backend("command", dialect, engine_config, sink)
}

flowrun_plugin_api::export_plugin!(name = "command", version = env!("CARGO_PKG_VERSION"));
flowrun_plugin_api::register_backend!(
    kind = "command",
    description =
        "runs each job on a batch system driven by command templates (submit, status, cancel)",
    create = create
);
