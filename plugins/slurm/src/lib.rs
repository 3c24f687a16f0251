//! flowrun's Slurm backend (`kind = "slurm"`): every job is a Slurm batch job submitted with
//! sbatch, tracked with one batched squeue (+ sacct or scontrol) snapshot per poll interval and
//! cancelled with scancel. The policy is the SDK's cluster engine (docs/engine.md); this crate
//! is Slurm's dialect. See README.md for the keys and advice for big clusters.
#![forbid(unsafe_code)]

mod config;
mod dialect;
mod slurm;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod policy_tests;

use flowrun_plugin_sdk::{engine, BackendImpl, PluginError, Sink};

/// Creates a Slurm backend from its `[backends.NAME]` table.
pub fn create(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
    let (engine_config, keys) = config::parse(config)?;
    engine::backend("slurm", dialect::Slurm::new(keys), engine_config, sink)
}

flowrun_plugin_sdk::export_plugin!(name = "slurm", version = env!("CARGO_PKG_VERSION"));
flowrun_plugin_sdk::register_backend!(
    kind = "slurm",
    description = "runs each job as a Slurm batch job (sbatch, squeue/sacct, scancel)",
    create = create
);
