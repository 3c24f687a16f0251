//! The code that runs outside the host's normal rules, fenced by lints: the spawn child
//! ([`child`], between `clone(CLONE_VM)` and exec, in the host's address space) and the
//! watchdog process ([`watchdog`], in a fork of the multi-threaded host), with the raw
//! helpers they share ([`raw`]).
//!
//! **Before editing anything here, read `docs/design/local-spawn.md`** (invariants I1 to I12
//! and the checklist). In short: raw system calls only (the `syscalls` crate, never a libc
//! wrapper: `errno` and libc's locks belong to the host's threads), no allocation, no lock,
//! no thread-local, and no panicking path. The lints below refuse `unwrap`, `expect`,
//! indexing, unchecked arithmetic and explicit panics in every file of this module; they
//! cannot see into the functions called, so call only what cannot panic (see I4).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented,
    clippy::panic_in_result_fn
)]

pub(super) mod child;
pub(super) mod raw;
pub(super) mod watchdog;
