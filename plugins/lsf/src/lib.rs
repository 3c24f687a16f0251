//! flowrun's LSF backend (`kind = "lsf"`): every job is an LSF batch job submitted with bsub,
//! tracked with one batched bjobs query per poll interval (and the job report LSF writes into
//! the job's directory), and killed with bkill. The policy is the SDK's cluster engine
//! (docs/engine.md); this crate is LSF's dialect. See README.md for the keys.
#![forbid(unsafe_code)]

mod config;
mod dialect;
mod lsf;

#[cfg(test)]
mod emulator_tests;
#[cfg(test)]
mod policy_tests;

use flowrun_plugin_api::{engine, sdk::*, PluginError};

/// Creates an LSF backend from its `[backends.NAME]` table.
pub fn create(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
    let (engine_config, keys) = config::parse(config)?;
    engine::backend("lsf", dialect::Lsf::new(keys), engine_config, sink)
}

flowrun_plugin_api::export_plugin!(name = "lsf", version = env!("CARGO_PKG_VERSION"));
flowrun_plugin_api::register_backend!(
    kind = "lsf",
    description = "runs each job as an LSF batch job (bsub, bjobs and its job report, bkill)",
    create = create
);
