//! The scheduler: a pure (sans-IO) state machine deciding which job runs when.
//!
//! [`api`] holds its inputs, actions and statuses; [`Scheduler`] (in `core`) implements
//! [`SchedulerApi`]. The async run loop in `crate::run` only carries actions to the backends and
//! their answers back.

pub mod api;
mod core;
pub mod fixtures;

pub use self::api::*;
pub use self::core::Scheduler;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
