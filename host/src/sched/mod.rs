//! The scheduler: a pure (sans-IO) state machine deciding which job runs when, and every rule
//! about a job's status and reason.
//!
//! [`api`] holds its inputs, actions and statuses; [`Reason`] (in `reason`) why a job did not
//! pass; [`Scheduler`] (in `core`) implements [`SchedulerApi`]. The async run loop in
//! `crate::run` only carries actions to the backends and their answers back.

pub mod api;
mod core;
pub mod fixtures;
mod reason;

pub use self::api::*;
pub use self::core::Scheduler;
pub use self::reason::signal_name;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
