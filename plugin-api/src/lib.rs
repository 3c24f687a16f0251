//! The stable plugin ABI of flowrun, the SDK for plugin authors, and a test kit.
//!
//! Three layers, in the manner of nushell's plugin crates:
//! - [`abi`]: the `#[repr(C)]` types and `#[sabi_trait]` traits that cross the library boundary.
//!   Plugin authors read them (a [`JobSpec`], a [`JobEvent`]) but rarely build trait objects.
//! - [`sdk`]: what an author writes against: [`sdk::BackendImpl`], [`sdk::ObserverImpl`],
//!   [`export_plugin!`], [`register_backend!`], [`register_observer!`], the panic guard, the
//!   tracing bridge and a plugin-owned tokio runtime.
//! - [`testkit`]: a fake host that drives any backend through the contract.
//!
//! The crate's version is the ABI version. See `docs/design/plugin-abi.md`.
#![allow(non_local_definitions, non_camel_case_types)]
#![warn(missing_docs)]

pub mod abi;
#[cfg(feature = "engine")]
pub mod engine;
pub mod sdk;
pub mod testkit;

pub use abi::*;

#[doc(hidden)]
pub use abi_stable;
#[doc(hidden)]
pub use inventory;

/// The plugin API (ABI) version this crate implements.
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// [`PLUGIN_API_VERSION`] NUL-terminated, for the plain C version symbol.
#[doc(hidden)]
pub const PLUGIN_API_VERSION_C: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
