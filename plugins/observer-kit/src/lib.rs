//! What flowrun's own observers (`html`, `trace`, `status-dirs`) share, so that each plugin
//! holds only what it shows:
//!
//! - [`model`]: the run as an observer sees it through its events: every job's status, times,
//!   costs and attempts, each attempt on a lane (a slot of its backend that no other attempt
//!   holds at the same time), the host's phases. Attributes the host does not send are `None`.
//! - [`contain`]: an observer's state behind a lock that turns a panic into one reported error
//!   and a quiet observer from then on, never into a changed verdict or a flood of messages.
//! - [`files`]: atomic file replacement (the SDK's, buffered, creating the directory) and
//!   relative paths between run files.
//! - [`config`]: the `path` key of file-writing observers.
//! - [`ticker`]: a periodic thread, for work no event triggers.
//!
//! Events arrive as the SDK's views ([`flowrun_plugin_sdk::RunEvent`]); unit tests build them
//! with the test kit's `TestEvent`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod contain;
pub mod files;
pub mod model;
pub mod ticker;

pub use contain::Contained;
pub use files::{refuse_host_files, relative_path, resolve_in_run_dir, write_atomically};
pub use model::{Attempt, AttemptEnd, JobRow, Phase, RunModel};
pub use ticker::Ticker;
