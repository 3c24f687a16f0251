//! Flow files: loading, include merging, matrix expansion and validation.
//!
//! The format is documented in `docs/flow-format.md`. [`load`] reads a flow file (and what it
//! includes) and returns either a fully resolved [`Flow`] or every problem found, each with its
//! file, line and column.

pub mod model;
pub use model::*;

mod build;
mod diag;
mod expand;
mod graph;
mod parse;

use std::{path::Path, time::Duration};

pub use diag::Diagnostic;

/// The plugin kinds that the installed plugins offer.
#[derive(Debug, Clone, Default)]
pub struct KindCatalog {
    /// Backend kinds (`local`, `slurm`, ...).
    pub backends: Vec<String>,
    /// Observer kinds (`junit`, ...).
    pub observers: Vec<String>,
}

/// Options that change how a flow is loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--backend NAME`: every job goes to this backend instance (or kind).
    pub backend_override: Option<String>,
}

/// Loads, expands and validates the flow at `path` and everything it includes.
///
/// On failure, returns every problem found (not just the first), in file order where possible.
pub fn load(
    path: &Path,
    catalog: &KindCatalog,
    opts: &LoadOptions,
) -> Result<Flow, Vec<Diagnostic>> {
    build::load(path, catalog, opts)
}

/// `--only GLOB...`: keeps the jobs matching any of the globs plus, transitively, everything they
/// need; dependencies are re-indexed. A glob that matches no job is an error.
pub fn select(flow: Flow, only: &[String]) -> Result<Flow, Vec<Diagnostic>> {
    graph::select(flow, only)
}

/// Parses a duration such as "30m", "1h 30m", "90s", "2s" or "500ms".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("invalid duration \"\": it is empty".to_string());
    }
    humantime::parse_duration(trimmed).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests;
