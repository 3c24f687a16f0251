//! An observer's state behind a lock that contains panics.
//!
//! The SDK already stops a panic at the ABI boundary, but it logs one error per event batch
//! (a panicking observer would flood the terminal for the rest of the run) and leaves the
//! state half-updated for the next batch. [`Contained`] instead drops the state at the first
//! panic, ignores every later event and makes `finish` return one error naming what happened.
//! The host prints that line; jobs and the exit code are untouched.
//!
//! So that this line is the only one, the plugin's panic hook stays quiet for panics raised
//! inside [`Contained`] (the message is kept for the error instead); panics elsewhere in the
//! plugin still reach the hook the SDK installed.

use std::{
    cell::{Cell, RefCell},
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Once,
};

use flowrun_plugin_sdk::{panic_message, ErrorKind, PluginError};
use parking_lot::Mutex;

/// The environment variable that makes observers fail on purpose, for tests of the host's
/// handling of a failing observer: a comma-separated list of observer kinds
/// (`FLOWRUN_OBSERVER_FAULT=html,trace`); each listed observer panics on its first event batch.
pub const FAULT_ENV: &str = "FLOWRUN_OBSERVER_FAULT";

thread_local! {
    /// Set while a closure of a [`Contained`] runs on this thread.
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
    /// What the quiet hook saw of the last contained panic: message and location.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Wraps the plugin's panic hook (installed by the SDK at `init`, before any observer exists)
/// so that panics inside a [`Contained`] are recorded instead of logged.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINING.with(Cell::get) {
                let text = info.to_string().replace('\n', " ");
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

enum State<T> {
    Working(T),
    /// A closure panicked: the message, as reported by `finish`.
    Broken(String),
}

/// An observer's state `T`, used from the host's observer thread (and, for observers that
/// write periodically, from a timer thread of their own).
pub struct Contained<T> {
    kind: &'static str,
    fault_injected: bool,
    state: Mutex<State<T>>,
}

impl<T> Contained<T> {
    /// Wraps the state of an observer of `kind` (used in messages and in [`FAULT_ENV`]).
    pub fn new(kind: &'static str, state: T) -> Self {
        install_quiet_hook();
        let fault_injected = std::env::var(FAULT_ENV)
            .map(|v| v.split(',').any(|k| k.trim() == kind))
            .unwrap_or(false);
        Contained {
            kind,
            fault_injected,
            state: Mutex::new(State::Working(state)),
        }
    }

    /// Runs `f` on the state for one batch of events. Returns `None` if the state is broken,
    /// now or before.
    pub fn on_events<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let inject = self.fault_injected;
        self.with(move |t| {
            if inject {
                panic!("fault injected through {FAULT_ENV}");
            }
            f(t)
        })
    }

    /// Runs `f` on the state, unless it is broken. A panic breaks it.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut guard = self.state.lock();
        let State::Working(state) = &mut *guard else {
            return None;
        };
        CONTAINING.with(|c| c.set(true));
        let result = catch_unwind(AssertUnwindSafe(|| f(state)));
        CONTAINING.with(|c| c.set(false));
        match result {
            Ok(r) => Some(r),
            Err(payload) => {
                let seen = LAST_PANIC.with(|p| p.borrow_mut().take());
                let message = seen.unwrap_or_else(|| panic_message(&*payload));
                *guard = State::Broken(message);
                None
            }
        }
    }

    /// The end of the run: `f` writes the final output. A state broken earlier, or a panic in
    /// `f`, gives one error saying that the output is missing or incomplete.
    pub fn finish(
        &self,
        f: impl FnOnce(&mut T) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        match self.with(f) {
            Some(result) => result,
            None => {
                let guard = self.state.lock();
                let why = match &*guard {
                    State::Broken(message) => message.as_str(),
                    State::Working(_) => "unknown",
                };
                Err(PluginError::new(
                    ErrorKind::PANICKED,
                    format!(
                        "{}: stopped at an internal error, its output is missing or out of date ({why})",
                        self.kind
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_breaks_the_state_once_and_finish_reports_it() {
        let c = Contained::new("kit-test", 0u32);
        assert_eq!(
            c.on_events(|n| {
                *n += 1;
                *n
            }),
            Some(1)
        );
        assert_eq!(c.on_events(|_| -> u32 { panic!("boom at event 2") }), None);
        // Later batches are ignored rather than run on a half-updated state.
        let mut ran = false;
        assert_eq!(c.on_events(|_| ran = true), None);
        assert!(!ran);
        let err = c.finish(|_| Ok(())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::PANICKED);
        let message = err.message.to_string();
        assert!(
            message.starts_with("kit-test: stopped at an internal error"),
            "{message}"
        );
        assert!(message.contains("boom at event 2"), "{message}");
        assert!(
            message.contains("contain.rs"),
            "the location is kept: {message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
    }

    #[test]
    fn a_panic_in_finish_is_an_error_too() {
        let c = Contained::new("kit-test", ());
        let err = c.finish(|_| panic!("cannot render")).unwrap_err();
        assert!(err.message.contains("cannot render"), "{}", err.message);
    }

    #[test]
    fn finish_passes_the_writers_own_error_through() {
        let c = Contained::new("kit-test", ());
        let err = c
            .finish(|_| Err(PluginError::new(ErrorKind::IO, "kit-test: cannot write x")))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::IO);
        assert!(c.finish(|_| Ok(())).is_ok());
    }
}
