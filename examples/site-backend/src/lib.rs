//! An example in-house flowrun plugin, `site`, built outside flowrun's tree against
//! `flowrun-plugin-sdk` alone. It offers:
//! - the backend kind `site-wrapper` ([`wrapper`]): runs each job on this machine through a
//!   site wrapper command, such as a license or environment setup script;
//! - the observer kind `jsonl` ([`jsonl`]): appends one JSON line per finished job to a file.
//!
//! See README.md for building, installing and using it.

#![deny(unsafe_code)]

pub mod jsonl;
#[allow(unsafe_code)] // killpg and waitid, the plugin's only unsafe
pub mod wrapper;

// Once per plugin: the name `flowrun plugins list` shows, and the plugin's own version.
flowrun_plugin_sdk::export_plugin!(name = "site", version = env!("CARGO_PKG_VERSION"));

// Once per kind: the name a flow writes in `kind = "..."`, a line for `flowrun plugins list`,
// and the constructor that receives the config table as TOML text.
flowrun_plugin_sdk::register_backend!(
    kind = "site-wrapper",
    description = "runs each job locally through the site wrapper command given in `wrapper`",
    create = wrapper::create
);
flowrun_plugin_sdk::register_observer!(
    kind = "jsonl",
    description = "appends one JSON line per finished job to `path` (default jobs.jsonl in the run directory)",
    create = jsonl::create
);
