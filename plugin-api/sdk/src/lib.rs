//! The SDK for flowrun plugin authors: plain Rust traits to implement, macros that export them,
//! and the plumbing every plugin needs.
//!
//! - Backends implement [`BackendImpl`]: they receive [`Jobs`], borrowed views of the host's job
//!   specs ([`Job`]: `&str` paths, `Option<Duration>` timeout, `(&str, &str)` pairs), answer
//!   with [`Answer`]s and report through a [`Sink`] with [`Event`]s.
//! - Observers implement [`ObserverImpl`] and receive [`RunEvents`], views of the run's events.
//! - [`export_plugin!`], [`register_backend!`] and [`register_observer!`] export a plugin: its
//!   abi_stable root module, the plain C version symbols, and an identity note the host reads
//!   without loading the library ([`identity`]).
//! - Every entry point is guarded: a panic becomes an error, a rejected job or a lost job,
//!   never an abort of the host.
//! - [`parse_config`] and [`parse_duration`] give config errors that name the key; [`fs`] writes
//!   files atomically; `PluginRuntime` (feature `runtime`) is a tokio runtime the plugin owns.
//! - `engine` (feature `engine`) is the cluster engine: the policy every batch-system backend
//!   needs, written once, under a small `Dialect` per scheduler (`docs/engine.md`).
//!
//! The ABI types themselves are in [`abi`] (the `flowrun-plugin-abi` crate, whose version is
//! the ABI version); a plugin should not need them. `docs/plugin-authoring.md` is the guide.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
pub mod config;
#[cfg(feature = "engine")]
pub mod engine;
mod error;
mod event;
#[doc(hidden)]
pub mod export;
pub mod fs;
mod guard;
pub mod identity;
mod job;
mod logging;
mod observer;
pub mod run_dir;
#[cfg(feature = "runtime")]
mod runtime;

pub use flowrun_plugin_abi as abi;

pub use abi::{
    Capabilities, CapabilityFlags, EndKind, ErrorKind, JobEventKind, JobId, JobStatus,
    RunEventKind, SubmitAnswerKind, PLUGIN_API_VERSION,
};
pub use backend::{BackendFactory, BackendImpl, BackendKind};
pub use config::{parse_config, parse_duration};
pub use error::PluginError;
pub use event::{attrs, Answer, Event, Sink};
pub use guard::{guard, panic_message};
pub use job::{Args, Command, Job, Jobs, JobsIter, NamedResources, OwnedJob, Pairs, Resources};
pub use observer::{
    JobEntries, JobEntry, ObserverFactory, ObserverImpl, ObserverKind, RunEvent, RunEvents,
    RunEventsIter, Summary,
};
#[cfg(feature = "runtime")]
pub use runtime::PluginRuntime;

#[doc(hidden)]
pub use abi::abi_stable;
#[doc(hidden)]
pub use inventory;

/// This SDK's own version (not the ABI version, which is [`PLUGIN_API_VERSION`]).
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
