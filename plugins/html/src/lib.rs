//! The `html` observer: one self-contained HTML report of a run, rewritten atomically while
//! the run goes on and at its end. See README.md for what it shows.
//!
//! The file is the page (`assets/report.html`, `.css`, `.js`, inlined at build time) around
//! one JSON document of the run's data (`data.rs`); the page's script renders everything from
//! that document, with canvas and virtualised rendering so that 100,000 jobs stay usable.
//! Nothing is fetched: the file works from `file://` on a machine without a network.
#![forbid(unsafe_code)]

mod buckets;
mod context;
mod data;

use std::{
    collections::HashMap,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flowrun_observer_kit::{
    refuse_host_files, resolve_in_run_dir, write_atomically, Contained, RunModel, Ticker,
};
use flowrun_plugin_sdk::{
    parse_config, parse_duration, ErrorKind, JobStatus, ObserverImpl, PluginError, RunEvent,
    RunEventKind, RunEvents,
};

use context::Context;

flowrun_plugin_sdk::export_plugin!(name = "html", version = env!("CARGO_PKG_VERSION"));
flowrun_plugin_sdk::register_observer!(
    kind = "html",
    description = "writes a self-contained HTML report (summary, failure buckets, timeline, job table, resource use), refreshed during the run (config: path, default \"report.html\" in the run directory; refresh, default \"10s\")",
    create = create
);

/// Contexts of failed jobs are kept until they add up to this many bytes; later failures are
/// listed without one (their log is still linked).
const CONTEXT_BUDGET: usize = 4 << 20;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where the report goes; relative to the run directory.
    path: Option<PathBuf>,
    /// How often the report is rewritten while the run goes on.
    #[serde(default = "default_refresh")]
    refresh: String,
}

fn default_refresh() -> String {
    "10s".to_string()
}

/// Creates the observer from its TOML config (`path`, `refresh`; both optional).
pub fn create(config: &str) -> Result<Box<dyn ObserverImpl>, PluginError> {
    let config: Config = parse_config(config)?;
    let path = flowrun_observer_kit::config::checked_path(config.path, "report.html")?;
    let refresh = parse_duration("refresh", &config.refresh)?;
    if refresh < Duration::from_millis(100) {
        return Err(PluginError::config(
            "refresh",
            format!(
                "{:?} is too often: write at least \"100ms\"",
                config.refresh
            ),
        ));
    }
    let report = Arc::new(Contained::new("html", Report::new(path, refresh)));
    let timer = {
        let report = report.clone();
        Ticker::start("html-refresh", refresh, move || {
            report.with(|r| {
                if r.dirty {
                    r.write_now();
                }
            });
        })?
    };
    Ok(Box::new(HtmlObserver { report, timer }))
}

struct HtmlObserver {
    report: Arc<Contained<Report>>,
    /// Rewrites the report every `refresh` while something changed.
    timer: Ticker,
}

impl ObserverImpl for HtmlObserver {
    fn on_events(&self, events: RunEvents<'_>) {
        self.report.on_events(|r| r.apply(events));
    }

    fn finish(&self) -> Result<(), PluginError> {
        self.timer.stop();
        self.report.finish(|r| {
            if r.model.run_dir.is_none() {
                return Err(PluginError::other(
                    "html: the run never started (no RUN_STARTED event), so no report was written",
                ));
            }
            r.write_now();
            match r.write_error.take() {
                Some(e) => Err(PluginError::new(ErrorKind::IO, e)),
                None => Ok(()),
            }
        })
    }
}

/// What the report shows, kept up to date by the events.
struct Report {
    configured: PathBuf,
    refresh: Duration,
    model: RunModel,
    contexts: HashMap<u32, Context>,
    context_bytes: usize,
    contexts_omitted: u64,
    /// Something changed since the last write.
    dirty: bool,
    /// The last write's error, if it failed (a later successful write clears it).
    write_error: Option<String>,
}

impl Report {
    fn new(configured: PathBuf, refresh: Duration) -> Self {
        Report {
            configured,
            refresh,
            model: RunModel::default(),
            contexts: HashMap::new(),
            context_bytes: 0,
            contexts_omitted: 0,
            dirty: false,
            write_error: None,
        }
    }

    fn apply<'e>(&mut self, events: impl IntoIterator<Item = RunEvent<'e>>) {
        let mut started = false;
        for e in events {
            self.model.apply(e);
            match e.kind() {
                RunEventKind::RUN_STARTED => started = true,
                RunEventKind::JOB_STATUS
                    if matches!(e.new_status(), JobStatus::FAILED | JobStatus::KILLED) =>
                {
                    self.note_context(e);
                }
                _ => {}
            }
        }
        self.dirty = true;
        // A first report right away, so that a user can open it as soon as the run starts.
        if started {
            self.write_now();
        }
    }

    fn note_context(&mut self, e: RunEvent<'_>) {
        let Some(log) = e.log() else {
            return;
        };
        if self.context_bytes >= CONTEXT_BUDGET {
            self.contexts_omitted += 1;
            return;
        }
        let fail_line = e.attr("fail_line").and_then(|l| l.trim().parse().ok());
        if let Some(c) = context::read(Path::new(log), fail_line) {
            let i = self.model.job_index(e.job(), e.backend());
            self.context_bytes += c.weight();
            self.contexts.insert(i, c);
        }
    }

    fn path(&self) -> Option<PathBuf> {
        let run_dir = self.model.run_dir.as_ref()?;
        Some(resolve_in_run_dir(run_dir, &self.configured))
    }

    /// Writes the report; a failure is kept for `finish` (and retried at the next refresh).
    fn write_now(&mut self) {
        let Some(path) = self.path() else { return };
        let generated_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let doc = data::build(
            &self.model,
            &self.contexts,
            self.contexts_omitted,
            &path,
            self.refresh.as_secs_f64(),
            generated_us,
        );
        let run_dir = self.model.run_dir.as_deref().unwrap_or(Path::new("/"));
        let result = refuse_host_files(run_dir, &path)
            .and_then(|()| write_atomically(&path, |w| write_page(w, &doc)));
        self.dirty = false;
        self.write_error = result
            .err()
            .map(|e| format!("html: cannot write {}: {e}", path.display()));
    }
}

const PAGE: &str = include_str!("../assets/report.html");
const STYLE: &str = include_str!("../assets/report.css");
const SCRIPT: &str = include_str!("../assets/report.js");

/// The page with its style, data and script inlined.
fn write_page(w: &mut dyn Write, doc: &data::Document<'_>) -> io::Result<()> {
    let (head, rest) = PAGE
        .split_once("/*STYLE*/")
        .expect("report.html has /*STYLE*/");
    let (middle, rest) = rest
        .split_once("/*DATA*/")
        .expect("report.html has /*DATA*/");
    let (before_script, tail) = rest
        .split_once("/*SCRIPT*/")
        .expect("report.html has /*SCRIPT*/");
    w.write_all(head.as_bytes())?;
    w.write_all(STYLE.as_bytes())?;
    w.write_all(middle.as_bytes())?;
    serde_json::to_writer(ScriptSafe(&mut *w), doc).map_err(io::Error::from)?;
    w.write_all(before_script.as_bytes())?;
    w.write_all(SCRIPT.as_bytes())?;
    w.write_all(tail.as_bytes())
}

/// Writes JSON so that it can sit inside a `<script>` element: `<` (which JSON has only inside
/// strings) becomes `\u003c`, so no job name or log line can close the element or open a
/// comment in it.
struct ScriptSafe<'w>(&'w mut dyn Write);

impl Write for ScriptSafe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(p) = rest.iter().position(|&b| b == b'<') {
            self.0.write_all(&rest[..p])?;
            self.0.write_all(b"\\u003c")?;
            rest = &rest[p + 1..];
        }
        self.0.write_all(rest)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests;
