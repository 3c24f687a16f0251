//! The `junit` observer: collects a run's events and, when the run is over, writes a JUnit XML
//! report that CI systems (Jenkins, GitLab, ...) ingest. See README.md for the format.

mod report;

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use flowrun_plugin_api::{sdk::ObserverImpl, ErrorKind, PluginError, RunEvent};

use report::Report;

flowrun_plugin_api::export_plugin!(name = "junit", version = env!("CARGO_PKG_VERSION"));
flowrun_plugin_api::register_observer!(
    kind = "junit",
    description = "writes a JUnit XML report of the run (config: path, default \"junit.xml\" in the run directory)",
    create = create
);

/// Where the report goes when the config names no `path`.
pub const DEFAULT_PATH: &str = "junit.xml";

/// Creates a JUnit observer from its TOML config (`path`, optional).
pub fn create(config: &str) -> Result<Box<dyn ObserverImpl>, PluginError> {
    let path = parse_config(config)?;
    Ok(Box::new(JunitObserver {
        path,
        report: Mutex::new(Report::default()),
    }))
}

/// Reads `path` out of the config, naming the key in every error.
fn parse_config(config: &str) -> Result<PathBuf, PluginError> {
    let mut table = config
        .parse::<toml::Table>()
        .map_err(|e| PluginError::new(ErrorKind::CONFIG, e.message().trim().replace('\n', " ")))?;
    let path = match table.remove("path") {
        None => PathBuf::from(DEFAULT_PATH),
        Some(toml::Value::String(s)) if !s.trim().is_empty() => PathBuf::from(s),
        Some(toml::Value::String(_)) => {
            return Err(PluginError::config("path", "must not be empty"))
        }
        Some(other) => {
            return Err(PluginError::config(
                "path",
                format!("expected a file path string, got {other}"),
            ));
        }
    };
    if let Some(key) = table.keys().next() {
        return Err(PluginError::config(
            key,
            "unknown key for the junit observer (known keys: path)",
        ));
    }
    Ok(path)
}

struct JunitObserver {
    /// The configured path; relative means relative to the run directory.
    path: PathBuf,
    report: Mutex<Report>,
}

impl ObserverImpl for JunitObserver {
    fn on_events(&self, events: &[RunEvent]) {
        let mut report = self.report.lock().unwrap_or_else(|p| p.into_inner());
        for event in events {
            report.apply(event);
        }
    }

    fn finish(&self) -> Result<(), PluginError> {
        let report = self.report.lock().unwrap_or_else(|p| p.into_inner());
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
        let xml = report
            .to_xml()
            .map_err(|e| io_error("cannot render the JUnit report", &path, e))?;
        write_atomically(&path, &xml)
            .map_err(|e| io_error("cannot write the JUnit report", &path, e))
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> PluginError {
    PluginError::new(
        ErrorKind::IO,
        format!("junit: {what} {}: {e}", path.display()),
    )
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so a CI job
/// that picks the report up never sees a half-written file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".junit-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    // tempfile creates files readable by the owner only; a report is for everyone to read.
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests;
