//! The `path` key every file-writing observer has.

use std::path::PathBuf;

use flowrun_plugin_sdk::{parse_config, PluginError};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PathOnly {
    path: Option<PathBuf>,
}

/// Parses the config of an observer whose only key is `path` (default `default`, relative to
/// the run directory). Unknown keys and an empty path are config errors naming the key.
pub fn path_only(config: &str, default: &str) -> Result<PathBuf, PluginError> {
    let parsed: PathOnly = parse_config(config)?;
    checked_path(parsed.path, default)
}

/// A configured `path`, or `default` when none was given; an empty one is an error.
pub fn checked_path(path: Option<PathBuf>, default: &str) -> Result<PathBuf, PluginError> {
    match path {
        None => Ok(PathBuf::from(default)),
        Some(p) if p.as_os_str().is_empty() => {
            Err(PluginError::config("path", "must not be empty"))
        }
        Some(p) => Ok(p),
    }
}
