//! Test a flowrun plugin without flowrun, through the same ABI objects the real host uses.
//!
//! - [`FakeHost`]: a scratch run directory, job builders ([`TestJob`]), an event sink you can
//!   read, and [`TestBackend`], a handle that submits, kills and shuts down as the host does.
//! - [`Contract`]: the backend contract check.
//! - [`ObserverHarness`] and [`TestEvent`]: feed an observer the events of a run.
//!
//! ```text
//! #[test]
//! fn my_backend_keeps_the_contract() {
//!     flowrun_plugin_testkit::Contract::new(my_plugin::create, "").check().unwrap();
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod contract;
mod host;
mod observer;

pub use contract::{check_backend_contract, Contract};
pub use host::{FakeHost, TestBackend, TestJob};
pub use observer::{ObserverHarness, TestEvent};
