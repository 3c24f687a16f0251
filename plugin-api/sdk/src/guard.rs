//! The panic guard: no panic may unwind into an abi_stable entry point, which would end the
//! whole host with `exit(1)` (no cleanup, running jobs orphaned).

use std::{
    any::Any,
    panic::{catch_unwind, AssertUnwindSafe},
};

use crate::PluginError;

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs `f`, turning a panic into `Err(PluginError::panicked(..))`.
pub fn guard<T>(f: impl FnOnce() -> T) -> Result<T, PluginError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| PluginError::panicked(panic_message(&*p)))
}
