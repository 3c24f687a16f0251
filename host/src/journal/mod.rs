//! The run's journal, `<run>/journal`: every change of a job's state, appended as it happens,
//! so that a run whose host dies loses nothing it had recorded.
//!
//! What it holds, per segment (a segment is one host process running the run; `--resume`
//! starts another): the run's identity (flow, files, run directory and tag, pids, the flow's
//! hash), the job table (each job's name, definition hash and backend), then per job: queued,
//! submitted (which attempt), started, its native id, and ended (final status, typed reason
//! and everything results.json says of it), and for a retry each failed attempt. A segment
//! ends with its end record when the host finished the run.
//!
//! results.json is written from the same records: the loop's [`crate::run::records::JobRecord`]
//! is what an end record holds, and [`Replay`] gives them back, so that the supervisor writes
//! results.json of a crashed worker with the same writer (`crate::run::results`).
//!
//! The file is a header (`FLOWRUNJ`, a version) and then frames: a length, a CRC-32 and a
//! payload of records. One frame is one `write`; a reader keeps every intact frame and ignores
//! a torn or corrupt last one (and anything after it). Group commit and the syncer are in
//! [`writer`]; docs/design/crash-safety.md says what survives what.

pub mod codec;
pub mod hash;
pub mod record;
pub mod replay;
pub mod status;
pub mod writer;

#[cfg(test)]
mod tests;

pub use hash::{definition_hashes, flow_hash, Hash};
pub use record::{BackendInfo, Mode, Record, RunStart};
pub use replay::{JobState, Replay};
pub use writer::{Journal, JournalStats, JOURNAL_FILE, SYNC_EVERY};

/// The environment variable that turns the journal off, for the benchmark that measures its
/// cost only (`FLOWRUN_JOURNAL=off`). Without a journal a crashed run cannot be recovered,
/// resumed or watched; nothing else uses it.
pub const JOURNAL_SWITCH: &str = "FLOWRUN_JOURNAL";

/// Whether this process keeps a journal (it does unless [`JOURNAL_SWITCH`] is `off`).
pub fn enabled() -> bool {
    std::env::var_os(JOURNAL_SWITCH).is_none_or(|v| v != "off")
}
