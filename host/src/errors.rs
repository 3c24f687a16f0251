//! flowrun's user-facing errors and the one place that maps them, and a run's end, to exit
//! codes.
//!
//! Exit codes (documented in the README):
//! - 0: every job passed;
//! - 1: some job did not pass (also `plugins verify` finding a bad plugin);
//! - 2: invalid input (the flow, a backend or observer config, a plugin, a command-line value)
//!   or an unusable output directory, including results.json that could not be written;
//! - 3: flowrun's own process (the one that loads plugins) crashed (a plugin's SIGSEGV,
//!   abort() or exit()): results.json was written from the journal by the supervising parent;
//! - 129 / 130 / 143: interrupted by SIGHUP / SIGINT / SIGTERM (128 + the signal).

use std::path::PathBuf;

use thiserror::Error;

use crate::{flow::Diagnostic, sched::Interrupt};

/// Every job passed.
pub const EXIT_PASSED: i32 = 0;
/// Some job did not pass.
pub const EXIT_JOBS_FAILED: i32 = 1;
/// Invalid input, or an unusable output directory.
pub const EXIT_INVALID_INPUT: i32 = 2;
/// flowrun's run process crashed; the supervising parent wrote results.json from the journal.
pub const EXIT_CRASHED: i32 = 3;
/// Interrupted by SIGINT.
pub const EXIT_SIGINT: i32 = 128 + libc::SIGINT;
/// Interrupted by SIGTERM.
pub const EXIT_SIGTERM: i32 = 128 + libc::SIGTERM;
/// Interrupted by SIGHUP.
pub const EXIT_SIGHUP: i32 = 128 + libc::SIGHUP;

/// The exit code of a run that got to its end: an interrupt names its signal; results that
/// could not be written are an output error (nobody must read "passed" from a run whose
/// results are lost); otherwise whether every job passed.
pub fn run_exit_code(
    interrupted: Option<Interrupt>,
    results_written: bool,
    all_passed: bool,
) -> i32 {
    match interrupted {
        Some(sig) => 128 + sig.number(),
        None if !results_written => EXIT_INVALID_INPUT,
        None if all_passed => EXIT_PASSED,
        None => EXIT_JOBS_FAILED,
    }
}

/// Why a plugin could not be loaded. Each renders as one line.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum PluginLoadError {
    /// The file cannot be opened as a shared library.
    #[error("{path}: not a loadable shared library: {detail}")]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        detail: String,
    },
    /// The library is not a flowrun plugin.
    #[error("{path}: not a flowrun plugin (no flowrun root module): build it with flowrun_plugin_sdk::export_plugin!")]
    NoRootModule {
        /// The file.
        path: PathBuf,
    },
    /// The plugin was built against an incompatible plugin API.
    #[error("plugin '{name}' {version} was built against plugin API {plugin_api}, but this flowrun provides {host_api}: rebuild it with a flowrun-plugin-sdk for plugin API {wanted}")]
    ApiMismatch {
        /// The plugin's name (its file name when unknown).
        name: String,
        /// The plugin's version ("?" when unknown).
        version: String,
        /// The API version the plugin was built against.
        plugin_api: String,
        /// The host's API version.
        host_api: String,
        /// What to rebuild against (`0.1` or `1`).
        wanted: String,
    },
    /// The layout check failed.
    #[error("{path}: plugin ABI layout does not match this flowrun ({summary}): rebuild it with a flowrun-plugin-sdk for plugin API {host_api}")]
    Layout {
        /// The file.
        path: PathBuf,
        /// The first mismatch, summarised.
        summary: String,
        /// The host's API version.
        host_api: String,
    },
    /// The file's hash differs from the registry's record.
    #[error("{path}: file changed since it was installed (sha256 {actual}, registry says {expected}): reinstall it with `flowrun plugins install`")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// Recorded hash.
        expected: String,
        /// Actual hash.
        actual: String,
    },
    /// Unsafe permissions.
    #[error("{path}: refused: {why}; fix it with `chmod go-w` / `chown`, or reinstall the plugin")]
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// I/O.
    #[error("{path}: {detail}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The file cannot be used as a plugin: damaged, not a shared library, or its loading
    /// crashed, exited or hung in a child process.
    #[error("{path}: not usable as a plugin: {detail}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong, in one line.
        detail: String,
    },
    /// What the child process that loaded the library reported (a complete message).
    #[error("{message}")]
    Reported {
        /// The message.
        message: String,
    },
    /// The plugin's init failed or panicked.
    #[error("plugin '{name}': {detail}")]
    Init {
        /// The plugin.
        name: String,
        /// What failed.
        detail: String,
    },
}

/// An error that ends a flowrun command.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The flow is invalid (one or more diagnostics).
    #[error("{}", render_diagnostics(.0))]
    Flow(Vec<Diagnostic>),
    /// A plugin failed to load.
    #[error("{0}")]
    PluginLoad(#[from] PluginLoadError),
    /// A backend or observer instance could not be created (bad config, unknown kind).
    #[error("{}", render_located(.location.as_ref(), .message))]
    Instance {
        /// Where the instance is declared, if it is.
        location: Option<crate::flow::Location>,
        /// What is wrong.
        message: String,
    },
    /// A registry operation failed (install, remove, a corrupt registry.toml).
    #[error("{0}")]
    Registry(String),
    /// Some plugins failed verification.
    #[error("{0} plugin(s) failed verification")]
    VerifyFailed(usize),
    /// The output directory cannot be used (path and OS error in the message).
    #[error("{0}")]
    Output(String),
    /// Several errors found together (every backend and observer config of a flow); one line
    /// each, then their count.
    #[error("{}", render_many(.0))]
    Many(Vec<Error>),
}

fn render_many(errors: &[Error]) -> String {
    let mut s = errors
        .iter()
        .map(Error::render)
        .collect::<Vec<_>>()
        .join("\n");
    if errors.len() > 1 {
        s.push_str(&format!("\n{} errors", errors.len()));
    }
    s
}

fn render_located(location: Option<&crate::flow::Location>, message: &str) -> String {
    match location {
        Some(l) => format!(
            "{}:{}:{}: error: {message}",
            l.file.display(),
            l.line,
            l.column
        ),
        None => format!("error: {message}"),
    }
}

/// Flow errors: source lines with carets, a bounded number of them (the flow module's report).
fn render_diagnostics(d: &[Diagnostic]) -> String {
    crate::flow::report(d)
}

impl Error {
    /// The documented exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::VerifyFailed(_) => EXIT_JOBS_FAILED,
            Error::Flow(_)
            | Error::PluginLoad(_)
            | Error::Instance { .. }
            | Error::Registry(_)
            | Error::Output(_)
            | Error::Many(_) => EXIT_INVALID_INPUT,
        }
    }

    /// The error as printed: located errors (flow diagnostics, instance errors) start with
    /// their `file:line:col: error:`, the others with `error: `.
    pub fn render(&self) -> String {
        match self {
            Error::Flow(_) | Error::Instance { .. } | Error::Many(_) => self.to_string(),
            _ => format!("error: {self}"),
        }
    }

    /// One error from several: the only one as itself.
    pub fn from_many(mut errors: Vec<Error>) -> Option<Error> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(Error::Many(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_ends_with_the_documented_code() {
        assert_eq!(run_exit_code(None, true, true), 0);
        assert_eq!(run_exit_code(None, true, false), 1);
        assert_eq!(run_exit_code(None, false, true), 2);
        assert_eq!(run_exit_code(Some(Interrupt::Sigint), false, true), 130);
        assert_eq!(run_exit_code(Some(Interrupt::Sigterm), true, true), 143);
        assert_eq!(run_exit_code(Some(Interrupt::Sighup), true, false), 129);
        assert_eq!(Error::Output("x".into()).exit_code(), 2);
        assert_eq!(Error::VerifyFailed(1).exit_code(), 1);
    }

    #[test]
    fn several_errors_render_one_line_each_and_their_count() {
        let e = Error::from_many(vec![
            Error::Output("a: no".into()),
            Error::Registry("b: no".into()),
        ])
        .unwrap();
        assert_eq!(e.render(), "error: a: no\nerror: b: no\n2 errors");
        assert_eq!(e.exit_code(), 2);
        let one = Error::from_many(vec![Error::Output("a".into())]).unwrap();
        assert_eq!(one.render(), "error: a");
    }
}
