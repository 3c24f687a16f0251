//! flowrun's core library: the flow format, the scheduler, the run loop, the plugin registry.
//! The `flowrun` binary (`main.rs`) is a thin CLI over [`cli::main`].
//!
//! Map of the crate (docs/design/architecture.md has the why):
//! - [`flow`]: loading, expanding and validating flow files into a [`flow::Flow`];
//! - [`sched`]: the pure scheduler core, a state machine fed inputs, returning actions; it owns
//!   every rule about a job's status and its typed reason;
//! - [`journal`]: the run's journal (every state change, appended as it happens) and reading
//!   it back;
//! - [`run`]: the thin async loop that drives the core against any backend (plugins, or
//!   in-process doubles in its tests), the run directory, results.json;
//! - [`display`]: the built-in status display, an in-process observer of the run events;
//! - [`backend`] and [`observe`]: the core's plain traits for backends and observers, and the
//!   run events (the observer contract);
//! - [`plugins`]: discovery, the registry, and the abi_stable edge (`plugins::ffi`);
//! - [`outcome`]: judging a job's end (exit code, signal, backend verdict, pass and fail
//!   patterns of its log) in one pure function;
//! - [`errors`]: user-facing errors and their exit codes.
#![warn(missing_docs)]
// The one unsafe edge is loading plugin libraries (`plugins::ffi`); everything else is safe.
#![deny(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod display;
pub mod errors;
pub mod flow;
pub mod journal;
pub mod observe;
pub mod outcome;
pub mod plugins;
pub mod run;
pub mod sched;
pub mod supervise;
