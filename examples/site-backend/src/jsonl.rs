//! The `jsonl` observer: appends one JSON line per finished job to a file.
//!
//! Config:
//! ```toml
//! [observers.jobs]
//! kind = "jsonl"
//! path = "jobs.jsonl"   # relative to the run directory (default jobs.jsonl)
//! ```
//!
//! Each line: `{"name":..,"status":..,"reason":..,"exit_code":..,"duration_s":..}`, written and
//! flushed as the job finishes, so `tail -f` follows the run.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use flowrun_plugin_sdk::{
    parse_config, ObserverImpl, PluginError, RunEvent, RunEventKind, RunEvents,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: Option<String>,
}

/// Creates a `jsonl` observer.
pub fn create(config: &str) -> Result<Box<dyn ObserverImpl>, PluginError> {
    let config: Config = parse_config(config)?;
    let path = match config.path {
        Some(p) if p.trim().is_empty() => {
            return Err(PluginError::config("path", "must not be empty"))
        }
        Some(p) => PathBuf::from(p),
        None => PathBuf::from("jobs.jsonl"),
    };
    Ok(Box::new(JsonlObserver {
        path,
        state: Mutex::new(State::default()),
    }))
}

/// One line of the file.
#[derive(Serialize)]
struct JobLine<'a> {
    name: &'a str,
    status: &'a str,
    reason: &'a str,
    exit_code: Option<i32>,
    duration_s: Option<f64>,
}

#[derive(Default)]
struct State {
    /// Opened at RUN_STARTED, once the run directory is known.
    file: Option<(PathBuf, File)>,
    started: bool,
    /// The first write error: `on_events` cannot return it, `finish` does.
    error: Option<String>,
}

struct JsonlObserver {
    path: PathBuf,
    state: Mutex<State>,
}

impl JsonlObserver {
    fn handle(&self, state: &mut State, event: RunEvent<'_>) -> Result<(), String> {
        match event.kind() {
            RunEventKind::RUN_STARTED => {
                state.started = true;
                let path = Path::new(event.run_dir()).join(&self.path); // an absolute `path` stays as is
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                state.file = Some((path, file));
            }
            RunEventKind::JOB_STATUS if event.new_status().is_terminal() => {
                let Some((path, file)) = &mut state.file else {
                    return Ok(());
                }; // opening failed: reported
                let line = JobLine {
                    name: event.job(),
                    status: event.new_status().name(),
                    reason: event.reason(),
                    exit_code: event.exit_code(),
                    duration_s: event.duration_s(),
                };
                let mut text = serde_json::to_string(&line)
                    .map_err(|e| format!("cannot encode a line: {e}"))?;
                text.push('\n');
                // One write per line: lines of concurrent writers (O_APPEND) never interleave.
                file.write_all(text.as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl ObserverImpl for JsonlObserver {
    fn on_events(&self, events: RunEvents<'_>) {
        let mut state = self.state.lock();
        for event in events {
            if let Err(e) = self.handle(&mut state, event) {
                state.error.get_or_insert(e);
            }
        }
    }

    fn finish(&self) -> Result<(), PluginError> {
        let mut state = self.state.lock();
        if let Some(e) = state.error.take() {
            return Err(PluginError::io(format!("jsonl: {e}")));
        }
        if !state.started {
            return Err(PluginError::other(
                "jsonl: the run never started, so nothing was written",
            ));
        }
        if let Some((path, file)) = state.file.take() {
            file.sync_all().map_err(|e| {
                PluginError::io(format!("jsonl: cannot flush {}: {e}", path.display()))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use flowrun_plugin_sdk::{ErrorKind, JobStatus};
    use flowrun_plugin_testkit::{ObserverHarness, TestEvent};

    use super::create;

    fn job_event(job: &str, status: JobStatus, reason: &str, exit_code: Option<i32>) -> TestEvent {
        let mut e = TestEvent::job_status(job, JobStatus::RUNNING, status)
            .at(2)
            .reason(reason);
        if let Some(code) = exit_code {
            e = e.exit_code(code);
        }
        if status != JobStatus::SKIPPED {
            e = e.duration_s(0.25);
        }
        e
    }

    #[test]
    fn writes_one_line_per_finished_job() {
        let dir = tempfile::tempdir().unwrap();
        let observer = ObserverHarness::new(create, "path = \"logs/jobs.jsonl\"").unwrap();
        observer.send(&[
            TestEvent::run_started("f", dir.path().to_str().unwrap())
                .at(1)
                .job("a", "site"),
            job_event("a", JobStatus::RUNNING, "", None),
            job_event("a", JobStatus::PASSED, "", Some(0)),
            job_event("b \"quoted\"", JobStatus::FAILED, "exit code 2", Some(2)),
            job_event("c", JobStatus::SKIPPED, "dependency failed: b", None),
        ]);
        observer.finish().unwrap();
        let text = std::fs::read_to_string(dir.path().join("logs/jobs.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            serde_json::json!({"name": "a", "status": "passed", "reason": "", "exit_code": 0, "duration_s": 0.25})
        );
        assert_eq!(lines[1]["name"], "b \"quoted\"");
        assert_eq!(
            (lines[1]["status"].as_str(), lines[1]["exit_code"].as_i64()),
            (Some("failed"), Some(2))
        );
        assert_eq!(lines[2]["reason"], "dependency failed: b");
        assert!(lines[2]["duration_s"].is_null());
    }

    #[test]
    fn errors_surface_at_finish() {
        let observer = ObserverHarness::new(create, "").unwrap();
        assert!(observer
            .finish()
            .unwrap_err()
            .message
            .contains("never started"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let observer = ObserverHarness::new(create, "path = \"file/jobs.jsonl\"").unwrap();
        observer.send(&[TestEvent::run_started("f", dir.path().to_str().unwrap()).at(1)]);
        let e = observer.finish().unwrap_err();
        assert_eq!(e.kind, ErrorKind::IO);
        assert!(e.message.contains("file"), "{e}");

        let e = create("path = \"\"").err().unwrap();
        assert!(e.message.contains("`path`"), "{e}");
        let e = create("paht = \"x\"").err().unwrap();
        assert!(e.message.contains("paht"), "{e}");
    }
}
