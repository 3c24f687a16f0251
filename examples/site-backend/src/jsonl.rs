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
    sync::Mutex,
};

use flowrun_plugin_api::{
    sdk::{parse_config, ObserverImpl},
    ErrorKind, PluginError, RunEvent, RunEventKind,
};
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
    fn handle(&self, state: &mut State, event: &RunEvent) -> Result<(), String> {
        match event.kind {
            RunEventKind::RUN_STARTED => {
                state.started = true;
                let path = Path::new(event.run_dir.as_str()).join(&self.path); // an absolute `path` stays as is
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
            RunEventKind::JOB_STATUS if event.new_status.is_terminal() => {
                let Some((path, file)) = &mut state.file else {
                    return Ok(());
                }; // opening failed: reported
                let line = JobLine {
                    name: &event.job,
                    status: event.new_status.name(),
                    reason: &event.reason,
                    exit_code: event.exit_code.into_option(),
                    duration_s: event.duration_s.into_option(),
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
    fn on_events(&self, events: &[RunEvent]) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for event in events {
            if let Err(e) = self.handle(&mut state, event) {
                state.error.get_or_insert(e);
            }
        }
    }

    fn finish(&self) -> Result<(), PluginError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = state.error.take() {
            return Err(PluginError::new(ErrorKind::IO, format!("jsonl: {e}")));
        }
        if !state.started {
            return Err(PluginError::other(
                "jsonl: the run never started, so nothing was written",
            ));
        }
        if let Some((path, file)) = state.file.take() {
            file.sync_all().map_err(|e| {
                PluginError::new(
                    ErrorKind::IO,
                    format!("jsonl: cannot flush {}: {e}", path.display()),
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use flowrun_plugin_api::{
        abi_stable::std_types::ROption, ErrorKind, JobInfo, JobStatus, RunEvent, RunEventKind,
    };

    use super::create;

    fn job_event(job: &str, status: JobStatus, reason: &str, exit_code: Option<i32>) -> RunEvent {
        let mut e = RunEvent::empty(RunEventKind::JOB_STATUS, 2);
        e.job = job.into();
        e.new_status = status;
        e.reason = reason.into();
        e.exit_code = exit_code.into();
        if status != JobStatus::SKIPPED {
            e.duration_s = ROption::RSome(0.25);
        }
        e
    }

    #[test]
    fn writes_one_line_per_finished_job() {
        let dir = tempfile::tempdir().unwrap();
        let observer = create("path = \"logs/jobs.jsonl\"").unwrap();
        let mut start = RunEvent::empty(RunEventKind::RUN_STARTED, 1);
        start.run_dir = dir.path().to_str().unwrap().into();
        start.jobs = vec![JobInfo {
            name: "a".into(),
            backend: "site".into(),
        }]
        .into();
        observer.on_events(&[
            start,
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
        assert!(create("")
            .unwrap()
            .finish()
            .unwrap_err()
            .message
            .contains("never started"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let observer = create("path = \"file/jobs.jsonl\"").unwrap();
        let mut start = RunEvent::empty(RunEventKind::RUN_STARTED, 1);
        start.run_dir = dir.path().to_str().unwrap().into();
        observer.on_events(&[start]);
        let e = observer.finish().unwrap_err();
        assert_eq!(e.kind, ErrorKind::IO);
        assert!(e.message.contains("file"), "{e}");

        let e = create("path = \"\"").err().unwrap();
        assert!(e.message.contains("`path`"), "{e}");
        let e = create("paht = \"x\"").err().unwrap();
        assert!(e.message.contains("paht"), "{e}");
    }
}
