//! A thread that runs a closure periodically until stopped: what an observer needs to act when
//! no event comes (the html report's refresh, status-dirs' delayed `running` links).

use std::{sync::Arc, thread::JoinHandle, time::Duration};

use flowrun_plugin_sdk::{ErrorKind, PluginError};
use parking_lot::{Condvar, Mutex};

/// The running thread; [`Ticker::stop`] ends it.
pub struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Ticker {
    /// Starts thread `name` that calls `tick` every `period` (first after one period).
    pub fn start(
        name: &str,
        period: Duration,
        tick: impl Fn() + Send + 'static,
    ) -> Result<Ticker, PluginError> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let (stopped, wake) = &*flag;
                let mut stopped_now = stopped.lock();
                // The flag is checked before each wait too: `stop` may have run before this
                // thread first took the lock, and its notification is then long gone.
                while !*stopped_now {
                    wake.wait_for(&mut stopped_now, period);
                    if *stopped_now {
                        return;
                    }
                    drop(stopped_now);
                    tick();
                    stopped_now = stopped.lock();
                }
            })
            .map_err(|e| PluginError::new(ErrorKind::IO, format!("cannot start {name}: {e}")))?;
        Ok(Ticker {
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread and waits for it (a tick under way finishes first). Idempotent.
    pub fn stop(&self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn it_ticks_until_stopped_and_stops_at_once() {
        let count = Arc::new(AtomicU32::new(0));
        let seen = count.clone();
        let t = Ticker::start("tick-test", Duration::from_millis(10), move || {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while count.load(Ordering::SeqCst) < 3 {
            assert!(std::time::Instant::now() < deadline, "it never ticked");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A long period must not delay stop.
        let slow = Ticker::start("tick-slow", Duration::from_secs(3600), || {}).unwrap();
        let started = std::time::Instant::now();
        slow.stop();
        t.stop();
        assert!(started.elapsed() < Duration::from_secs(5));
        let after = count.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(count.load(Ordering::SeqCst), after, "no tick after stop");
    }
}
