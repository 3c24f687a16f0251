//! The `[backends.NAME]` keys of a `kind = "local"` backend (see the crate README).

use std::time::Duration;

use flowrun_plugin_sdk::{self as sdk, PluginError};
use serde::Deserialize;

/// Whether job process trees are contained in cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Use a cgroup v2 hierarchy when one is mounted and writable, else fall back to process
    /// groups plus the environment tag.
    Auto,
    /// Never use cgroups.
    Off,
}

/// How job processes are started (see `spawn/mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnMode {
    /// `clone(CLONE_VM)`, the child doing the job's set-up: the fast path.
    Clone,
    /// Plain `std::process::Command` with a process group; best-effort cgroup placement.
    Std,
}

impl SpawnMode {
    pub fn name(self) -> &'static str {
        match self {
            SpawnMode::Clone => "clone",
            SpawnMode::Std => "std",
        }
    }
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time between SIGTERM and SIGKILL when a job is killed.
    pub kill_grace: Duration,
    /// stdout and stderr into `<job_dir>/stdout.log` and `stderr.log` instead of `log_path`.
    pub split_output: bool,
    /// cgroup containment.
    pub cgroups: CgroupMode,
    /// How job processes are started.
    pub spawn: SpawnMode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kill_grace: Duration::from_secs(5),
            split_output: false,
            cgroups: CgroupMode::Auto,
            spawn: SpawnMode::Clone,
        }
    }
}

/// The raw table. Values are read as `toml::Value` so that a wrong type is reported with the
/// key's name (serde's own type errors do not name the key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    kill_grace: Option<toml::Value>,
    split_output: Option<toml::Value>,
    cgroups: Option<toml::Value>,
    spawn: Option<toml::Value>,
}

impl Config {
    /// Parses the backend table (without `kind` and `max_parallel`, which the host strips).
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let raw: RawConfig = sdk::parse_config(text)?;
        let mut config = Config::default();
        if let Some(v) = raw.kill_grace {
            let Some(s) = v.as_str() else {
                return Err(PluginError::config(
                    "kill_grace",
                    format!("expected a duration string such as \"5s\", got {v}"),
                ));
            };
            config.kill_grace = sdk::parse_duration("kill_grace", s)?;
        }
        if let Some(v) = raw.split_output {
            config.split_output = v.as_bool().ok_or_else(|| {
                PluginError::config("split_output", format!("expected true or false, got {v}"))
            })?;
        }
        if let Some(v) = raw.cgroups {
            config.cgroups = match v.as_str() {
                Some("auto") => CgroupMode::Auto,
                Some("off") => CgroupMode::Off,
                _ => {
                    return Err(PluginError::config(
                        "cgroups",
                        format!("expected \"auto\" or \"off\", got {v}"),
                    ))
                }
            };
        }
        if let Some(v) = raw.spawn {
            config.spawn = match v.as_str() {
                Some("clone") => SpawnMode::Clone,
                Some("std") => SpawnMode::Std,
                _ => {
                    return Err(PluginError::config(
                        "spawn",
                        format!("expected \"clone\" or \"std\", got {v}"),
                    ))
                }
            };
        }
        Ok(config)
    }
}
