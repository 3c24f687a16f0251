//! Time, injectable: the engine's policy reads the time only through a [`Clock`], so the tests
//! run it on a [`ManualClock`] that moves only when the simulation says so.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that stands still until [`ManualClock::advance`] or [`ManualClock::advance_to`]
/// moves it: deterministic time for tests.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock() += by;
    }

    /// Moves time forward to `at` (never backwards).
    pub fn advance_to(&self, at: Instant) {
        let target = at.saturating_duration_since(self.start);
        let mut offset = self.offset.lock();
        *offset = (*offset).max(target);
    }

    /// The time since the clock was made.
    pub fn elapsed(&self) -> Duration {
        *self.offset.lock()
    }

    /// The instant `since_start` after the clock's time zero.
    pub fn at(&self, since_start: Duration) -> Instant {
        self.start + since_start
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock()
    }
}
