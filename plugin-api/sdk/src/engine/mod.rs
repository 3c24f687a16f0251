//! The cluster engine: the policy every batch-system backend needs, written once (feature
//! `engine`). A backend supplies a [`Dialect`] (write the job script, submit one job or one
//! array, one batched status snapshot, map native states to verdicts, an optional second
//! source of final states, cancel a batch, which failures are transient); the engine does the
//! rest, configured by the keys of [`EngineConfig`], which every backend on it accepts and
//! documents the same way (`docs/engine.md`).
//!
//! What the engine guarantees:
//! - one status query per poll interval for the whole run, whatever the number of jobs (plus
//!   at most one final-records query, only while some job needs it);
//! - a failed query never fails a job: it is retried with backoff and changes nothing;
//! - explicit grace windows: a just-submitted job may be missing from the snapshot for
//!   `submit_grace`; a job missing later (or in an unknown state) is looked up in the final
//!   records and lost only after `lost_after`, with the reason;
//! - kills go out in batches of at most `cancel_batch` ids, retried until they get through; a
//!   job killed while its submission is in flight is cancelled as soon as its id is known;
//! - shutdown leaves nothing of the run queued: it cancels by id, then by the run's name;
//! - every command runs through one injectable [`CommandRunner`] with a time limit;
//! - arrays group the ready jobs of one shape, and never wait for more (DVSim's launcher
//!   waits for the last member of a group, which deadlocks a DAG whose members depend on
//!   each other).
//!
//! A minimal backend:
//! ```text
//! struct Mine;
//! impl Dialect for Mine { /* scheduler, submit, status, judge, cancel, is_transient */ }
//!
//! fn create(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
//!     let (engine, own): (EngineConfig, MyKeys) = engine::parse_config(config, &Mine::defaults())?;
//!     engine::backend("mine", Mine::new(own)?, engine, sink)
//! }
//! ```

// The engine needs no unsafe code; the rest of the crate's (the export macro's) stays apart.
#![forbid(unsafe_code)]

mod abi;
mod clock;
mod command;
mod config;
mod core;
mod dialect;
pub mod records;
mod run;
pub mod script;
pub mod testing;

pub use abi::{backend, backend_with_runner, event_to_abi, job_from_spec};
pub use clock::{Clock, ManualClock, SystemClock};
pub use command::{CommandLine, CommandOutput, CommandRunner, Commands, Exit, ProcessRunner};
pub use config::{non_empty, parse_config, EngineConfig, EngineDefaults, ENGINE_KEYS};
pub use core::{job_name, EngineEvent, Update};
pub use dialect::{
    ArrayPlan, Dialect, Job, JobCommand, JobContext, JobKey, Judgement, Lookup, NativeStatus,
    Scope, Source, Submission, SubmitError, Usage, Verdict,
};
pub use run::{Engine, EventSink};

#[cfg(test)]
mod tests;
