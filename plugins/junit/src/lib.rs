//! The `junit` observer: collects a run's events and, when the run is over, writes a JUnit XML
//! report that CI systems (Jenkins, GitLab, ...) ingest. See README.md for the format.

#![forbid(unsafe_code)]

mod report;

use std::path::{Path, PathBuf};

use flowrun_plugin_sdk::{
    fs::write_atomically, parse_config, ObserverImpl, PluginError, RunEvents,
};
use parking_lot::Mutex;
use serde::Deserialize;

use report::Report;

flowrun_plugin_sdk::export_plugin!(name = "junit", version = env!("CARGO_PKG_VERSION"));
flowrun_plugin_sdk::register_observer!(
    kind = "junit",
    description = "writes a JUnit XML report of the run (config: path, default \"junit.xml\" in the run directory)",
    create = create
);

/// Where the report goes when the config names no `path`.
pub const DEFAULT_PATH: &str = "junit.xml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: Option<String>,
}

/// Creates a JUnit observer from its TOML config (`path`, optional).
pub fn create(config: &str) -> Result<Box<dyn ObserverImpl>, PluginError> {
    let config: Config = parse_config(config)?;
    let path = match config.path {
        None => PathBuf::from(DEFAULT_PATH),
        Some(s) if s.trim().is_empty() => {
            return Err(PluginError::config("path", "must not be empty"))
        }
        Some(s) => PathBuf::from(s),
    };
    Ok(Box::new(JunitObserver {
        path,
        report: Mutex::new(Report::default()),
    }))
}

struct JunitObserver {
    /// The configured path; relative means relative to the run directory.
    path: PathBuf,
    report: Mutex<Report>,
}

impl ObserverImpl for JunitObserver {
    fn on_events(&self, events: RunEvents<'_>) {
        let mut report = self.report.lock();
        for event in events {
            report.apply(event);
        }
    }

    fn finish(&self) -> Result<(), PluginError> {
        let report = self.report.lock();
        let Some(run_dir) = report.run_dir() else {
            return Err(PluginError::other(
                "junit: the run never started (no RUN_STARTED event), so no report was written",
            ));
        };
        let path = if self.path.is_absolute() {
            self.path.clone()
        } else {
            run_dir.join(&self.path)
        };
        let xml = report.to_xml().map_err(|e| {
            PluginError::io(format!(
                "junit: cannot render the JUnit report {}: {e}",
                path.display()
            ))
        })?;
        if let Some(owned) = flowrun_plugin_sdk::run_dir::host_owned(run_dir, &path) {
            return Err(PluginError::io(format!(
                "junit: cannot write the JUnit report {}: it is the run's {owned}, which flowrun writes: choose another `path`",
                path.display()
            )));
        }
        // A CI job that picks the report up must never see half of it.
        create_parent(&path)
            .and_then(|()| write_atomically(&path, &xml))
            .map_err(|e| {
                PluginError::io(format!(
                    "junit: cannot write the JUnit report {}: {e}",
                    path.display()
                ))
            })
    }
}

fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
