//! The abi_stable edge: loading a plugin library, checking its API version and layout, and
//! adapting its ABI objects to the core's plain traits ([`crate::backend::Backend`],
//! [`crate::observe::Observer`]). No other module of the host touches abi_stable.

use std::{
    ffi::CStr,
    os::raw::c_char,
    path::{Path, PathBuf},
    sync::Arc,
};

use abi_stable::{
    abi_stability::abi_checking::check_layout_compatibility,
    library::{lib_header_from_path, LibraryError},
    sabi_trait::TD_Opaque,
    std_types::{RArc, ROption, RSlice, RStr, RString, RVec, Tuple2},
    StableAbi,
};
use flowrun_plugin_abi as api;

use super::shown;
use crate::{
    backend::{
        Backend, BackendCaps, BackendEvent, EventSender, JobDirOwner, JobEnd, JobRequest,
        SubmitReply, Usage,
    },
    errors::PluginLoadError,
    flow::Command,
    observe::{Observer, RunEvent},
    sched::Status,
};

/// What a plugin says it is once loaded (and what a probing child reports).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PluginInfo {
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// The plugin API version it was built against.
    pub api_version: String,
    /// The backend kinds it offers, with descriptions.
    pub backends: Vec<(String, String)>,
    /// The observer kinds it offers, with descriptions.
    pub observers: Vec<(String, String)>,
}

/// A loaded plugin library; derefs to its [`PluginInfo`].
pub struct LoadedPlugin {
    info: PluginInfo,
    root: api::PluginRoot_Ref,
}

impl std::ops::Deref for LoadedPlugin {
    type Target = PluginInfo;
    fn deref(&self) -> &PluginInfo {
        &self.info
    }
}

/// Whether a plugin built against `plugin_api` may load into a host providing `host_api`:
/// the same major and a minor not newer; before 1.0, the same 0.minor and a patch not newer.
/// Returns what to rebuild against when not.
pub fn api_compatible(
    plugin_api: &semver::Version,
    host_api: &semver::Version,
) -> Result<(), String> {
    let wanted = if host_api.major == 0 {
        format!("0.{}", host_api.minor)
    } else {
        host_api.major.to_string()
    };
    let ok = if host_api.major == 0 {
        plugin_api.major == 0
            && plugin_api.minor == host_api.minor
            && plugin_api.patch <= host_api.patch
    } else {
        plugin_api.major == host_api.major && plugin_api.minor <= host_api.minor
    };
    if ok && plugin_api.pre.is_empty() {
        Ok(())
    } else {
        Err(wanted)
    }
}

/// The host's plugin API version.
pub fn host_api_version() -> semver::Version {
    semver::Version::parse(api::PLUGIN_API_VERSION).expect("plugin-api's own version parses")
}

fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// What the plain C symbols say: the API version, and the plugin's name and version.
struct PlainIdentity {
    api_version: String,
    name: Option<String>,
    version: Option<String>,
}

/// Reads the plain symbols first, so that an incompatible plugin gets one friendly line instead
/// of abi_stable's multi-thousand-line layout report.
fn read_plain_identity(path: &Path) -> Result<PlainIdentity, PluginLoadError> {
    // SAFETY: opening a library runs its initialisers; plugins are trusted code once they passed
    // the registry's ownership, permission and hash checks. The handle is leaked on purpose:
    // libraries are never unloaded (abi_stable keeps pointers into them).
    let lib =
        unsafe { libloading::Library::new(path) }.map_err(|e| PluginLoadError::NotALibrary {
            path: path.to_path_buf(),
            detail: shown(&one_line(&with_sources(&e))),
        })?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    let read = |symbol: &[u8]| -> Option<String> {
        // SAFETY: by the SDK's contract these symbols are `extern "C" fn() -> *const c_char`
        // returning static NUL-terminated strings.
        let f = unsafe { lib.get::<extern "C" fn() -> *const c_char>(symbol) }.ok()?;
        let p = f();
        // SAFETY: a non-null result points to a NUL-terminated string by the same contract.
        // A library that breaks it is only ever called here after it survived a child
        // process's probe, or carries the SDK's note (and so these SDK-generated symbols).
        (!p.is_null()).then(|| shown(&unsafe { CStr::from_ptr(p) }.to_string_lossy()))
    };
    let api_version =
        read(api::API_VERSION_SYMBOL).ok_or_else(|| PluginLoadError::NoRootModule {
            path: path.to_path_buf(),
        })?;
    let identity = read(api::IDENTITY_SYMBOL);
    let (name, version) = match identity.as_deref().and_then(|s| s.split_once(' ')) {
        Some((n, v)) => (Some(n.to_string()), Some(v.to_string())),
        None => (None, None),
    };
    Ok(PlainIdentity {
        api_version,
        name,
        version,
    })
}

/// An error's message followed by its sources' (libloading puts dlerror's text in the source).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Pulls the first `Error:` / `Expected:` / `Found:` lines out of abi_stable's layout report.
fn summarise_layout_error(report: &str) -> String {
    let mut parts = Vec::new();
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some(rest) = l.strip_prefix("Error:") {
            let mut s = rest.trim().to_string();
            for next in lines.iter().skip(i + 1).take(6) {
                if next.starts_with("Expected:") || next.starts_with("Found:") {
                    s.push_str(&format!(", {}", next));
                }
            }
            parts.push(s);
            break;
        }
    }
    if parts.is_empty() {
        one_line(report).chars().take(200).collect()
    } else {
        parts.join("; ")
    }
}

/// The version gate: a plugin `name` `version` built against ABI `plugin_api` loads into this
/// host only if [`api_compatible`] says so; otherwise one friendly line.
pub fn check_api_version(
    plugin_api: &str,
    name: &str,
    version: &str,
) -> Result<(), PluginLoadError> {
    let host_api = host_api_version();
    let mismatch = |plugin_api: String, wanted: String| PluginLoadError::ApiMismatch {
        name: shown(name),
        version: shown(version),
        plugin_api: shown(&plugin_api),
        host_api: host_api.to_string(),
        wanted,
    };
    let parsed = semver::Version::parse(plugin_api)
        .map_err(|_| mismatch(plugin_api.to_string(), format!("0.{}", host_api.minor)))?;
    api_compatible(&parsed, &host_api).map_err(|wanted| mismatch(parsed.to_string(), wanted))
}

/// Loads the plugin library at `path`: version gate, swapped layout check, root module, init.
/// This runs the library's code in this process: call it only for a library judged safe to
/// load (see [`super`]).
pub fn load(path: &Path) -> Result<LoadedPlugin, PluginLoadError> {
    let host_api = host_api_version();
    let plain = read_plain_identity(path)?;
    check_api_version(
        &plain.api_version,
        plain.name.as_deref().unwrap_or(&file_label(path)),
        plain.version.as_deref().unwrap_or("?"),
    )?;

    let header = lib_header_from_path(path).map_err(|e| match e {
        LibraryError::GetSymbolError { .. } => PluginLoadError::NoRootModule {
            path: path.to_path_buf(),
        },
        other => PluginLoadError::NotALibrary {
            path: path.to_path_buf(),
            detail: shown(&one_line(&with_sources(&other))),
        },
    })?;
    let layout = header.layout().ok_or_else(|| PluginLoadError::Layout {
        path: path.to_path_buf(),
        summary: "the plugin carries no layout information".into(),
        host_api: host_api.to_string(),
    })?;
    // abi_stable's stock check treats the host as the interface and rejects an OLDER plugin as
    // soon as the host appends a field or method (upstream issue #118). Running it with the
    // plugin's layout as the interface accepts exactly "plugin <= host": fewer trailing prefix
    // fields and methods, everything else identical. docs/design/plugin-abi.md has the details.
    check_layout_compatibility(layout, <api::PluginRoot_Ref as StableAbi>::LAYOUT).map_err(
        |e| PluginLoadError::Layout {
            path: path.to_path_buf(),
            summary: summarise_layout_error(&e.to_string()),
            host_api: host_api.to_string(),
        },
    )?;
    // SAFETY: the layout was checked just above, in the direction that suits a plugin host.
    let root = unsafe { header.init_root_module_with_unchecked_layout::<api::PluginRoot_Ref>() }
        .map_err(|e| PluginLoadError::Init {
            name: file_label(path),
            detail: shown(&one_line(&e.to_string())),
        })?;

    let name = shown(root.plugin_name().as_str());
    let version = shown(root.plugin_version().as_str());
    let manifest = (root.manifest())();
    let kinds = |v: &RVec<api::KindInfo>| {
        v.iter()
            .map(|k| (shown(&k.name), shown(&k.description)))
            .collect()
    };
    let plugin = LoadedPlugin {
        info: PluginInfo {
            backends: kinds(&manifest.backends),
            observers: kinds(&manifest.observers),
            api_version: shown(root.api_version().as_str()),
            name,
            version,
        },
        root,
    };
    let host: api::HostServicesBox = api::HostServices_TO::from_value(
        HostLogger {
            plugin: plugin.name.clone(),
        },
        TD_Opaque,
    );
    if let Err(e) = (plugin.root.init())(host).into_result() {
        return Err(PluginLoadError::Init {
            name: plugin.info.name,
            detail: shown(&e.message),
        });
    }
    Ok(plugin)
}

impl LoadedPlugin {
    /// Creates a backend instance. `sender` receives its events; job ids are job indices.
    pub fn new_backend(
        &self,
        kind: &str,
        config_toml: &str,
        sender: Arc<dyn EventSender>,
    ) -> Result<Box<dyn Backend>, String> {
        let sink: api::EventSinkBox =
            api::EventSink_TO::from_ptr(RArc::new(SinkAdapter { sender }), TD_Opaque);
        match (self.root.new_backend())(RStr::from_str(kind), RStr::from_str(config_toml), sink)
            .into_result()
        {
            Ok(b) => Ok(Box::new(BackendAdapter { inner: b })),
            Err(e) => Err(e.message.to_string()),
        }
    }

    /// Creates an observer instance.
    pub fn new_observer(&self, kind: &str, config_toml: &str) -> Result<Box<dyn Observer>, String> {
        match (self.root.new_observer())(RStr::from_str(kind), RStr::from_str(config_toml))
            .into_result()
        {
            Ok(o) => Ok(Box::new(ObserverAdapter::new(o))),
            Err(e) => Err(e.message.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host services
// ---------------------------------------------------------------------------------------------

struct HostLogger {
    plugin: String,
}

impl api::HostServices for HostLogger {
    fn max_log_level(&self) -> u8 {
        match tracing::level_filters::LevelFilter::current().into_level() {
            None => 0,
            Some(tracing::Level::ERROR) => 1,
            Some(tracing::Level::WARN) => 2,
            Some(tracing::Level::INFO) => 3,
            Some(tracing::Level::DEBUG) => 4,
            Some(tracing::Level::TRACE) => 5,
        }
    }

    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>) {
        let level = match level {
            0 | 1 => log::Level::Error,
            2 => log::Level::Warn,
            3 => log::Level::Info,
            4 => log::Level::Debug,
            _ => log::Level::Trace,
        };
        // The `log` crate takes a dynamic target; tracing-log turns the record into a tracing
        // event of the host's subscriber, showing the plugin's own target.
        let target = if target.is_empty() {
            self.plugin.as_str()
        } else {
            target.as_str()
        };
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{}", message.as_str()))
                .build(),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

struct SinkAdapter {
    sender: Arc<dyn EventSender>,
}

impl api::EventSink for SinkAdapter {
    fn emit(&self, e: api::JobEvent) {
        let job = e.id.0 as u32;
        let attr = |key: &str| {
            e.attrs
                .iter()
                .find(|a| a.0.as_str() == key)
                .map(|a| a.1.as_str())
        };
        let number = |key: &str| attr(key).and_then(|v| v.trim().parse::<f64>().ok());
        let native_id = attr("native_id")
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let event = match e.kind {
            api::JobEventKind::STARTED => BackendEvent::Started {
                job,
                interactive: attr("interactive") == Some("1"),
                native_id,
            },
            api::JobEventKind::FINISHED => {
                let end = match e.end {
                    api::EndKind::EXITED => JobEnd::Exited(e.exit_code.into_option().unwrap_or(-1)),
                    api::EndKind::SIGNALED => JobEnd::Signaled(e.signal.into_option().unwrap_or(0)),
                    api::EndKind::KILLED => JobEnd::Killed,
                    _ => JobEnd::Failed(
                        if e.reason.is_empty() {
                            "failed (no reason given by the backend)".into()
                        } else {
                            e.reason.to_string()
                        },
                        e.exit_code.into_option(),
                    ),
                };
                let logs = e
                    .attrs
                    .iter()
                    .filter(|a| a.0.as_str() == "log")
                    .map(|a| PathBuf::from(a.1.as_str()))
                    .collect();
                BackendEvent::Finished {
                    job,
                    end,
                    detail: e.reason.to_string(),
                    logs,
                    native_id,
                    usage: Usage {
                        cpu_s: number("cpu_s"),
                        max_rss_mb: number("max_rss_mb"),
                        source: attr("usage_source").map(str::to_string),
                    },
                }
            }
            api::JobEventKind::LOST => BackendEvent::Lost {
                job,
                why: e.reason.to_string(),
            },
            api::JobEventKind::SUBMITTED => match native_id {
                Some(native_id) => BackendEvent::Submitted { job, native_id },
                None => return, // says nothing the host can use
            },
            other => BackendEvent::Lost {
                job,
                why: format!("unknown event kind {} from the backend", other.0),
            },
        };
        self.sender.send(event);
    }
}

struct BackendAdapter {
    inner: api::BackendBox,
}

fn rstring(s: &str) -> RString {
    RString::from(s)
}

fn rpath(p: &Path) -> RString {
    RString::from(p.to_string_lossy().as_ref())
}

/// The one conversion of a job description in the host: the flow's job, viewed through a
/// [`JobRequest`], into the ABI's `JobSpec`.
fn to_spec(r: &JobRequest<'_>) -> api::JobSpec {
    let job = r.job;
    let command = match &job.cmd {
        Command::Shell(s) => api::CommandSpec {
            shell: true,
            args: RVec::from(vec![rstring(s)]),
        },
        Command::Argv(v) => api::CommandSpec {
            shell: false,
            args: v.iter().map(|a| rstring(a)).collect(),
        },
    };
    api::JobSpec {
        id: api::JobId(r.ix as u64),
        name: rstring(&job.name),
        command,
        cwd: rstring(&r.cwd()),
        env: r
            .env()
            .map(|(k, v)| Tuple2(rstring(k), RString::from(v.into_owned())))
            .collect(),
        job_dir: rstring(&r.job_dir),
        log_path: rstring(&r.log_path),
        run_dir: rstring(&r.run.run_dir_text),
        run_tag: rstring(&r.run.run_tag),
        timeout_ms: r.timeout_ms().into(),
        resources: api::Resources {
            cpus: job.cpus,
            memory_mb: job.memory_mb.into(),
            named: r.resources().map(|(k, v)| Tuple2(rstring(k), v)).collect(),
        },
        interactive: job.interactive,
        attempt: r.attempt,
        attrs: job
            .attrs
            .iter()
            .map(|(k, v)| Tuple2(rstring(k), rstring(v)))
            .collect(),
    }
}

/// The answers of a submit or reattach call, one per job of `ids`, in order. The SDK
/// guarantees one answer per job in order; a hand-written plugin might not.
fn replies(ids: &[u64], answers: &[api::SubmitAnswer]) -> Vec<SubmitReply> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| match answers.get(i) {
            Some(a) if a.id.0 == *id => match a.kind {
                api::SubmitAnswerKind::ACCEPTED => SubmitReply::Accepted,
                api::SubmitAnswerKind::BUSY => SubmitReply::Busy,
                _ => SubmitReply::Rejected(a.message.to_string()),
            },
            _ => SubmitReply::Rejected("plugin bug: no answer for this job".into()),
        })
        .collect()
}

impl Backend for BackendAdapter {
    fn capabilities(&self) -> BackendCaps {
        let c = self.inner.capabilities();
        BackendCaps {
            interactive: c.flags.contains(api::CapabilityFlags::INTERACTIVE),
            enforces_timeout: c.flags.contains(api::CapabilityFlags::ENFORCES_TIMEOUT),
            default_max_parallel: (c.default_max_parallel > 0).then_some(c.default_max_parallel),
            max_batch: (c.max_batch > 0).then_some(c.max_batch as usize),
            job_dir: if c.flags.contains(api::CapabilityFlags::NO_JOB_DIR) {
                JobDirOwner::Nobody
            } else if c.flags.contains(api::CapabilityFlags::CREATES_JOB_DIR) {
                JobDirOwner::Backend
            } else {
                JobDirOwner::Host
            },
            reattach: c.flags.contains(api::CapabilityFlags::REATTACH),
        }
    }

    fn submit(&self, jobs: &[JobRequest<'_>]) -> Vec<SubmitReply> {
        let ids: Vec<u64> = jobs.iter().map(|j| j.ix as u64).collect();
        let answers = self.inner.submit(jobs.iter().map(to_spec).collect());
        replies(&ids, &answers)
    }

    fn reattach(&self, jobs: &[(JobRequest<'_>, &str)]) -> Vec<SubmitReply> {
        let ids: Vec<u64> = jobs.iter().map(|(j, _)| j.ix as u64).collect();
        // `reattach` was appended in plugin API 0.1.3: an older plugin's vtable lacks it, and
        // the trait's default body refuses every job (the host then submits them afresh).
        let answers = self.inner.reattach(
            jobs.iter().map(|(j, _)| to_spec(j)).collect(),
            jobs.iter().map(|(_, native)| rstring(native)).collect(),
        );
        replies(&ids, &answers)
    }

    fn kill(&self, jobs: &[u32]) {
        let ids: Vec<api::JobId> = jobs.iter().map(|j| api::JobId(*j as u64)).collect();
        self.inner.kill(RSlice::from_slice(&ids));
    }

    fn shutdown(&self) {
        self.inner.shutdown()
    }

    fn stats(&self) -> String {
        // `stats` was appended in plugin API 0.1.1; an older plugin's vtable lacks it and the
        // generated accessor then runs the trait's default body (an empty string).
        self.inner.stats().to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Observers
// ---------------------------------------------------------------------------------------------

struct ObserverAdapter {
    inner: api::ObserverBox,
    /// The ABI events of the previous batch, kept with their strings' buffers and written over
    /// by the next batch: converting an event then allocates nothing. Allocating and freeing
    /// them was a third of a status-dirs observer's thread (benches/observers.py, perf). Only
    /// the observer's own thread converts, so the lock is never contended.
    scratch: parking_lot::Mutex<Scratch>,
}

impl ObserverAdapter {
    fn new(inner: api::ObserverBox) -> Self {
        ObserverAdapter {
            inner,
            scratch: parking_lot::Mutex::new(Scratch::default()),
        }
    }
}

/// Reused ABI events, and attribute pairs taken off them for the next ones.
#[derive(Default)]
struct Scratch {
    events: Vec<api::RunEvent>,
    spare_attrs: Vec<Tuple2<RString, RString>>,
}

fn status_code(s: Status) -> api::JobStatus {
    match s {
        Status::Scheduled => api::JobStatus::SCHEDULED,
        Status::Queued => api::JobStatus::QUEUED,
        Status::Running => api::JobStatus::RUNNING,
        Status::Passed => api::JobStatus::PASSED,
        Status::Failed => api::JobStatus::FAILED,
        Status::Killed => api::JobStatus::KILLED,
        Status::Skipped => api::JobStatus::SKIPPED,
    }
}

/// `e` as the ABI event, from scratch.
#[cfg(test)]
fn to_abi_event(e: &RunEvent) -> api::RunEvent {
    let mut r = api::RunEvent::empty(api::RunEventKind::RUN_STARTED, 0);
    write_abi_event(&mut r, e, &mut Vec::new());
    r
}

/// Writes `e` as the ABI event into `r`, whatever `r` held before (every field is set or
/// emptied: a reused event must never carry anything of the one it was), keeping the buffers
/// of its strings. Attribute pairs go to and come from `spare`.
fn write_abi_event(r: &mut api::RunEvent, e: &RunEvent, spare: &mut Vec<Tuple2<RString, RString>>) {
    use std::fmt::Write as _;
    fn set(s: &mut RString, v: &str) {
        s.clear();
        s.push_str(v);
    }
    fn set_path(s: &mut RString, p: &Path) {
        s.clear();
        s.push_str(&p.to_string_lossy());
    }
    fn attr(
        attrs: &mut RVec<Tuple2<RString, RString>>,
        spare: &mut Vec<Tuple2<RString, RString>>,
        key: &str,
        value: impl std::fmt::Display,
    ) {
        let mut pair = spare
            .pop()
            .unwrap_or_else(|| Tuple2(RString::new(), RString::new()));
        set(&mut pair.0, key);
        pair.1.clear();
        let _ = write!(pair.1, "{value}");
        attrs.push(pair);
    }
    let time_us = match e {
        RunEvent::RunStarted { time_us, .. }
        | RunEvent::KillSignal { time_us, .. }
        | RunEvent::RunFinished { time_us, .. } => *time_us,
        RunEvent::JobStatus(s) => s.time_us,
    };
    r.time_us = time_us;
    for s in [
        &mut r.flow,
        &mut r.run_dir,
        &mut r.job,
        &mut r.reason,
        &mut r.backend,
        &mut r.log,
        &mut r.signal,
    ] {
        s.clear();
    }
    if !r.jobs.is_empty() {
        // RUN_STARTED's list of every job: not kept for the whole run.
        r.jobs = RVec::new();
    }
    r.old_status = api::JobStatus::SCHEDULED;
    r.new_status = api::JobStatus::SCHEDULED;
    r.exit_code = ROption::RNone;
    r.duration_s = ROption::RNone;
    r.summary = ROption::RNone;
    while let Some(pair) = r.attrs.pop() {
        spare.push(pair);
    }
    let attrs = &mut r.attrs;
    match e {
        RunEvent::RunStarted {
            flow,
            run_dir,
            jobs,
            phases,
            ..
        } => {
            r.kind = api::RunEventKind::RUN_STARTED;
            if !phases.is_empty() {
                attr(attrs, spare, "phases", phases);
            }
            set(&mut r.flow, flow);
            set_path(&mut r.run_dir, run_dir);
            r.jobs = jobs
                .iter()
                .map(|(name, backend)| api::JobInfo {
                    name: rstring(name),
                    backend: rstring(backend),
                })
                .collect();
        }
        RunEvent::JobStatus(s) => {
            r.kind = api::RunEventKind::JOB_STATUS;
            set(&mut r.job, &s.job);
            set(&mut r.backend, &s.backend);
            r.old_status = status_code(s.old);
            r.new_status = status_code(s.new);
            set(&mut r.reason, &s.reason);
            r.exit_code = s.exit_code.into();
            r.duration_s = s.duration_s.into();
            if let Some(log) = &s.log {
                set_path(&mut r.log, log);
            }
            if let Some(line) = s.fail_line {
                attr(attrs, spare, "fail_line", line);
            }
            if let Some(text) = &s.fail_text {
                attr(attrs, spare, "fail_text", text);
            }
            attr(attrs, spare, "attempt", s.attempt);
            if let Some(kind) = s.reason_kind {
                attr(attrs, spare, "reason_kind", kind);
            }
            if let Some(id) = &s.native_id {
                attr(attrs, spare, "native_id", id);
            }
            if let Some(held) = &s.resources {
                attr(attrs, spare, "resources", held);
            }
            if let Some(cpu) = s.cpu_s {
                attr(attrs, spare, "cpu_s", cpu);
            }
            if let Some(rss) = s.max_rss_mb {
                attr(attrs, spare, "max_rss_mb", rss);
            }
            if let Some(detail) = &s.detail {
                attr(attrs, spare, "detail", detail);
            }
        }
        RunEvent::KillSignal { signal, .. } => {
            r.kind = api::RunEventKind::KILL_SIGNAL;
            set(&mut r.signal, signal);
        }
        RunEvent::RunFinished {
            summary, phases, ..
        } => {
            r.kind = api::RunEventKind::RUN_FINISHED;
            if !phases.is_empty() {
                attr(attrs, spare, "phases", phases);
            }
            r.summary = ROption::RSome(api::RunSummary {
                passed: summary.passed,
                failed: summary.failed,
                killed: summary.killed,
                skipped: summary.skipped,
                interrupted: summary.interrupted,
                duration_s: summary.duration_s,
                results_path: rpath(&summary.results_path),
            });
        }
    }
}

impl Observer for ObserverAdapter {
    fn on_events(&self, events: &[RunEvent]) {
        let mut scratch = self.scratch.lock();
        let Scratch {
            events: abi,
            spare_attrs,
        } = &mut *scratch;
        if abi.len() < events.len() {
            abi.resize_with(events.len(), || {
                api::RunEvent::empty(api::RunEventKind::RUN_STARTED, 0)
            });
        }
        for (slot, e) in abi.iter_mut().zip(events) {
            write_abi_event(slot, e, spare_attrs);
        }
        self.inner
            .on_events(RSlice::from_slice(&abi[..events.len()]));
    }

    fn finish(&self) -> Result<(), String> {
        self.inner
            .finish()
            .into_result()
            .map_err(|e| e.message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn api_versions_before_1_0_need_the_same_minor_and_no_newer_patch() {
        assert!(api_compatible(&v("0.1.0"), &v("0.1.1")).is_ok());
        assert!(api_compatible(&v("0.1.1"), &v("0.1.1")).is_ok());
        assert_eq!(api_compatible(&v("0.1.2"), &v("0.1.1")), Err("0.1".into()));
        assert_eq!(api_compatible(&v("0.2.0"), &v("0.1.1")), Err("0.1".into()));
        assert_eq!(api_compatible(&v("0.0.9"), &v("0.1.1")), Err("0.1".into()));
    }

    #[test]
    fn api_versions_after_1_0_need_the_same_major_and_no_newer_minor() {
        assert!(api_compatible(&v("1.2.9"), &v("1.3.0")).is_ok());
        assert!(api_compatible(&v("1.3.0"), &v("1.3.0")).is_ok());
        assert_eq!(api_compatible(&v("1.4.0"), &v("1.3.0")), Err("1".into()));
        assert_eq!(api_compatible(&v("2.0.0"), &v("1.3.0")), Err("1".into()));
    }

    /// One event of each kind, and a job status with every optional field set.
    fn varied_events() -> Vec<RunEvent> {
        use crate::observe::{test_status_event as status, Phases, Summary};
        let full = {
            let RunEvent::JobStatus(mut e) = status("a/b", Status::Running, Status::Failed, 2.5)
            else {
                unreachable!()
            };
            e.reason = "fail pattern matched at line 7: UVM_ERROR".into();
            e.reason_kind = Some("fail_pattern");
            e.exit_code = Some(3);
            e.duration_s = Some(1.25);
            e.log = Some(PathBuf::from("/out/jobs/a_b/output.log"));
            e.fail_line = Some(7);
            e.fail_text = Some("UVM_ERROR".into());
            e.native_id = Some("4242".into());
            e.resources = Some("cpus=2,lic=1".into());
            e.cpu_s = Some(0.5);
            e.max_rss_mb = Some(12.0);
            e.detail = Some("node n1".into());
            e.attempt = 2;
            RunEvent::JobStatus(e)
        };
        vec![
            RunEvent::RunStarted {
                time_us: 1,
                flow: "f".into(),
                run_dir: PathBuf::from("/out"),
                jobs: vec![("a/b".into(), "local".into()), ("c".into(), "fake".into())],
                phases: Phases(vec![("load", 1, 2)]),
            },
            full,
            status("c", Status::Queued, Status::Passed, 3.0),
            RunEvent::KillSignal {
                time_us: 4,
                signal: "SIGTERM",
            },
            RunEvent::RunFinished {
                time_us: 5,
                summary: Summary {
                    passed: 1,
                    failed: 1,
                    ..Summary::default()
                },
                phases: Phases::default(),
            },
        ]
    }

    #[test]
    fn a_reused_abi_event_carries_nothing_of_the_event_it_was() {
        let events = varied_events();
        for before in &events {
            for after in &events {
                let mut slot = to_abi_event(before);
                let mut spare = Vec::new();
                write_abi_event(&mut slot, after, &mut spare);
                assert_eq!(slot, to_abi_event(after), "{before:?} then {after:?}");
            }
        }
    }

    #[test]
    fn a_job_status_converts_every_field_and_attribute() {
        let r = to_abi_event(&varied_events()[1]);
        assert_eq!(r.kind, api::RunEventKind::JOB_STATUS);
        assert_eq!(
            (r.job.as_str(), r.backend.as_str(), r.log.as_str()),
            ("a/b", "local", "/out/jobs/a_b/output.log")
        );
        assert_eq!(
            r.reason.as_str(),
            "fail pattern matched at line 7: UVM_ERROR"
        );
        assert_eq!(
            (r.old_status, r.new_status),
            (api::JobStatus::RUNNING, api::JobStatus::FAILED)
        );
        assert_eq!(
            (r.exit_code, r.duration_s),
            (ROption::RSome(3), ROption::RSome(1.25))
        );
        let attrs: Vec<(&str, &str)> = r
            .attrs
            .iter()
            .map(|a| (a.0.as_str(), a.1.as_str()))
            .collect();
        assert_eq!(
            attrs,
            [
                ("fail_line", "7"),
                ("fail_text", "UVM_ERROR"),
                ("attempt", "2"),
                ("reason_kind", "fail_pattern"),
                ("native_id", "4242"),
                ("resources", "cpus=2,lic=1"),
                ("cpu_s", "0.5"),
                ("max_rss_mb", "12"),
                ("detail", "node n1"),
            ]
        );
    }

    #[test]
    fn layout_reports_are_summarised_to_one_line() {
        let report =
            "lots of\nnoise\n  Error:mismatched type\n  Expected:\n u64\n Found:\n u32\nmore";
        let s = summarise_layout_error(report);
        assert!(s.starts_with("mismatched type"), "{s}");
        assert!(!s.contains('\n'));
    }
}
