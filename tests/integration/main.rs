//! flowrun's end-to-end tests: one integration-test binary, one module per area. They run the
//! real `flowrun` binary and real plugin libraries, so the workspace must be built first
//! (`cargo build --workspace`; the README's test command does it).

#![forbid(unsafe_code)]

mod abi_compat;
mod batch;
mod command;
mod count_calls;
mod crash;
mod display;
mod example;
mod fake;
mod gridengine;
mod junit;
mod legacy;
mod local;
mod lsf;
mod lsf_emu;
mod nights;
mod observers;
mod plugins;
mod scheduling;
mod sge_cluster;
mod slurm;
mod trust;
mod validation;
