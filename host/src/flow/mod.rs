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
mod names;
mod parse;
pub mod render;
mod source;

use std::{path::Path, time::Duration};

pub use diag::{report, Diagnostic, SourceLine};

/// The most jobs a flow may expand to (all matrices and includes together; one matrix alone
/// too). It is what this project's 24 GB machine runs comfortably: at the limit `check` peaks
/// at 3.9 GiB and a fake-backend run at 5.2 GiB (docs/benchmarks.md). A flow over the limit is
/// refused before anything is allocated for its jobs.
pub const MAX_JOBS: u64 = 10_000_000;

/// The longest duration a flow may give (`timeout`): 100 years (`"100y"`). Far beyond any real
/// job, and far inside what the host's clocks and every plugin's arithmetic hold (nanoseconds
/// in an `i64` last 292 years); a bigger value used to overflow the scheduler's deadline.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

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
    graph::select(flow, only).map(|(flow, _)| flow)
}

/// [`select`], also saying per kept job whether a glob named it (`true`) or it is kept only
/// because a named job needs it (`--no-deps` runs only the named ones).
pub fn select_named(flow: Flow, only: &[String]) -> Result<(Flow, Vec<bool>), Vec<Diagnostic>> {
    graph::select(flow, only)
}

/// Parses a duration such as "30m", "1h 30m", "90s", "2s" or "500ms", of at most
/// [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let shown = diag::shorten(text, 60);
    if trimmed.is_empty() {
        return Err("invalid duration \"\": it is empty".to_string());
    }
    let duration = humantime::parse_duration(trimmed)
        .map_err(|e| format!("invalid duration {shown:?}: {e}"))?;
    if duration > MAX_DURATION {
        return Err(format!(
            "duration {shown:?} is too long: it must be at most 100 years (\"100y\")"
        ));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests;
