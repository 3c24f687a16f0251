//! flowrun's Slurm backend (`kind = "slurm"`): every job is a Slurm batch job submitted with
//! sbatch, tracked with one batched squeue (+ sacct or scontrol) snapshot per poll interval and
//! cancelled with scancel. See README.md for the config keys and advice for big clusters.

mod backend;
mod config;
mod script;
mod slurm;

#[cfg(test)]
mod cluster_tests;

use flowrun_plugin_sdk::{BackendImpl, PluginError, Sink};

/// Creates a Slurm backend from its `[backends.NAME]` table.
pub fn create(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
    let config = config::Config::parse(config)?;
    Ok(Box::new(backend::SlurmBackend::new(config, sink)?))
}

flowrun_plugin_sdk::export_plugin!(name = "slurm", version = env!("CARGO_PKG_VERSION"));
flowrun_plugin_sdk::register_backend!(
    kind = "slurm",
    description = "runs each job as a Slurm batch job (sbatch, squeue/sacct, scancel)",
    create = create
);
