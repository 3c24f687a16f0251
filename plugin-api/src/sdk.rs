//! The SDK for plugin authors: plain Rust traits to implement, macros that export them, and the
//! plumbing every plugin needs (panic guard, logging bridge, an owned tokio runtime).
//!
//! A minimal backend plugin:
//! ```text
//! use flowrun_plugin_api::{sdk::*, *};
//!
//! struct Mine { sink: Sink }
//! impl BackendImpl for Mine { /* capabilities, submit, kill, shutdown */ }
//!
//! fn create(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
//!     Ok(Box::new(Mine { sink }))
//! }
//!
//! flowrun_plugin_api::export_plugin!(name = "mine", version = env!("CARGO_PKG_VERSION"));
//! flowrun_plugin_api::register_backend!(kind = "mine", description = "runs jobs my way", create = create);
//! ```

use std::{
    any::Any,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RSlice, RStr, RString, RVec},
};

use crate::abi::*;

// ---------------------------------------------------------------------------------------------
// What an author implements
// ---------------------------------------------------------------------------------------------

/// A runtime backend, in plain Rust. Every method but `shutdown` must return promptly: do the
/// work on your own threads or runtime ([`PluginRuntime`]) and report through the [`Sink`].
pub trait BackendImpl: Send + Sync + 'static {
    /// What the backend can do.
    fn capabilities(&self) -> Capabilities;
    /// Answers each job of the batch, in order: accepted, busy or rejected. The specs are
    /// borrowed (clone what you keep), so that the SDK can offer them again one by one if the
    /// batch panics, without copying every batch up front.
    fn submit(&self, jobs: &[JobSpec]) -> Vec<SubmitAnswer>;
    /// Kills accepted jobs; each still ends with one FINISHED event.
    fn kill(&self, ids: &[JobId]);
    /// Kills what still runs, waits for it, releases everything. May block.
    fn shutdown(&self);
    /// Diagnostic counters as TOML text.
    fn stats(&self) -> String {
        String::new()
    }
}

/// An observer, in plain Rust. Called from one host thread.
pub trait ObserverImpl: Send + Sync + 'static {
    /// A batch of run events, in order.
    fn on_events(&self, events: &[RunEvent]);
    /// The run is over: flush and close.
    fn finish(&self) -> Result<(), PluginError>;
}

/// Creates a backend from its TOML config text.
pub type BackendFactory = fn(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError>;
/// Creates an observer from its TOML config text.
pub type ObserverFactory = fn(config: &str) -> Result<Box<dyn ObserverImpl>, PluginError>;

/// A backend kind, registered with [`crate::register_backend!`].
pub struct BackendKind {
    /// The kind's name, as flows write it.
    pub name: &'static str,
    /// One line for `flowrun plugins list`.
    pub description: &'static str,
    /// The constructor.
    pub create: BackendFactory,
}

/// An observer kind, registered with [`crate::register_observer!`].
pub struct ObserverKind {
    /// The kind's name.
    pub name: &'static str,
    /// One line for `flowrun plugins list`.
    pub description: &'static str,
    /// The constructor.
    pub create: ObserverFactory,
}

inventory::collect!(BackendKind);
inventory::collect!(ObserverKind);

/// The host's event sink, cheap to clone and callable from any thread. Never blocks.
#[derive(Clone)]
pub struct Sink(Arc<EventSinkBox>);

impl Sink {
    /// Wraps the host's sink.
    pub fn new(sink: EventSinkBox) -> Self {
        Sink(Arc::new(sink))
    }
    /// Reports an event.
    pub fn emit(&self, event: JobEvent) {
        self.0.emit(event)
    }
}

/// Parses a backend or observer config, mapping serde errors to a config error that names
/// the key. Use `#[serde(deny_unknown_fields)]` on `T` so typos are caught.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, PluginError> {
    let one_line = |e: &toml::de::Error| e.message().trim().replace('\n', " ");
    let de = toml::Deserializer::parse(config)
        .map_err(|e| PluginError::new(ErrorKind::CONFIG, one_line(&e)))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = one_line(e.inner());
        if path.is_empty() || path == "." || message.contains(&format!("`{path}`")) {
            PluginError::new(ErrorKind::CONFIG, message)
        } else {
            PluginError::config(&path, message)
        }
    })
}

/// Parses a duration such as `"30m"`, `"2s"` or `"1h 30m"`, for config keys.
pub fn parse_duration(key: &str, text: &str) -> Result<std::time::Duration, PluginError> {
    humantime::parse_duration(text).map_err(|e| {
        PluginError::config(
            key,
            format!("invalid duration {text:?}: {e} (write e.g. \"2s\", \"30m\")"),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// The panic guard
// ---------------------------------------------------------------------------------------------

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs `f`, turning a panic into `Err(PluginError::panicked(..))`. A panic must never cross
/// the ABI: abi_stable would end the whole host with `exit(1)`.
pub fn guard<T>(f: impl FnOnce() -> T) -> Result<T, PluginError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| PluginError::panicked(panic_message(&*p)))
}

/// Adapts a [`BackendImpl`] to the ABI trait, guarding every call.
struct GuardedBackend {
    inner: Box<dyn BackendImpl>,
    sink: Sink,
}

impl Backend for GuardedBackend {
    fn capabilities(&self) -> Capabilities {
        guard(|| self.inner.capabilities()).unwrap_or_else(|e| {
            tracing::error!("capabilities(): {e}");
            Capabilities::default()
        })
    }

    fn submit(&self, jobs: RVec<JobSpec>) -> RVec<SubmitAnswer> {
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        match guard(|| self.inner.submit(jobs.as_slice())) {
            Ok(answers) if answers.len() == ids.len() => answers.into(),
            Ok(answers) => {
                let why = format!(
                    "plugin bug: submit answered {} times for {} jobs",
                    answers.len(),
                    ids.len()
                );
                ids.into_iter()
                    .map(|id| SubmitAnswer::rejected(id, why.clone()))
                    .collect()
            }
            Err(e) if ids.len() == 1 => {
                vec![SubmitAnswer::rejected(ids[0], e.message.to_string())].into()
            }
            Err(_) => {
                // One job of the batch made the plugin panic: offer the jobs one at a time so
                // that only the job(s) that panic fail. A job the plugin had already taken
                // before the panic may be offered twice; the host ignores duplicate events.
                jobs.iter()
                    .map(
                        |job| match guard(|| self.inner.submit(std::slice::from_ref(job))) {
                            Ok(mut a) if a.len() == 1 => a.remove(0),
                            Ok(_) => SubmitAnswer::rejected(
                                job.id,
                                "plugin bug: submit answered wrongly",
                            ),
                            Err(e) => SubmitAnswer::rejected(job.id, e.message.to_string()),
                        },
                    )
                    .collect()
            }
        }
    }

    fn kill(&self, ids: RSlice<'_, JobId>) {
        if let Err(e) = guard(|| self.inner.kill(ids.as_slice())) {
            // The jobs' fate is unknown now: report them lost rather than leave the host waiting.
            for id in ids.iter() {
                self.sink
                    .emit(JobEvent::lost(*id, format!("kill failed: {e}")));
            }
        }
    }

    fn shutdown(&self) {
        if let Err(e) = guard(|| self.inner.shutdown()) {
            tracing::error!("shutdown(): {e}");
        }
    }

    // @@since-0.1.1-begin
    fn stats(&self) -> RString {
        guard(|| self.inner.stats()).unwrap_or_default().into()
    }
    // @@since-0.1.1-end
}

/// Adapts an [`ObserverImpl`] to the ABI trait, guarding every call.
struct GuardedObserver {
    inner: Box<dyn ObserverImpl>,
}

impl Observer for GuardedObserver {
    fn on_events(&self, events: RSlice<'_, RunEvent>) {
        if let Err(e) = guard(|| self.inner.on_events(events.as_slice())) {
            tracing::error!("on_events(): {e}");
        }
    }

    fn finish(&self) -> RResult<(), PluginError> {
        guard(|| self.inner.finish()).and_then(|r| r).into()
    }
}

/// Wraps a plain backend into the ABI object the host receives. Used by [`crate::export_plugin!`]
/// and by the [`crate::testkit`].
pub fn backend_to_abi(inner: Box<dyn BackendImpl>, sink: Sink) -> BackendBox {
    Backend_TO::from_value(GuardedBackend { inner, sink }, TD_Opaque)
}

/// Wraps a plain observer into the ABI object the host receives.
pub fn observer_to_abi(inner: Box<dyn ObserverImpl>) -> ObserverBox {
    Observer_TO::from_value(GuardedObserver { inner }, TD_Opaque)
}

// ---------------------------------------------------------------------------------------------
// Entry points used by export_plugin!
// ---------------------------------------------------------------------------------------------

#[doc(hidden)]
pub fn __manifest() -> Manifest {
    guard(|| Manifest {
        backends: inventory::iter::<BackendKind>
            .into_iter()
            .map(|k| KindInfo {
                name: k.name.into(),
                description: k.description.into(),
            })
            .collect(),
        observers: inventory::iter::<ObserverKind>
            .into_iter()
            .map(|k| KindInfo {
                name: k.name.into(),
                description: k.description.into(),
            })
            .collect(),
    })
    .unwrap_or_default()
}

#[doc(hidden)]
pub fn __init(host: HostServicesBox) -> RResult<(), PluginError> {
    guard(|| install_host_logger(host)).into()
}

#[doc(hidden)]
pub fn __new_backend(
    kind: RStr<'_>,
    config: RStr<'_>,
    sink: EventSinkBox,
) -> RResult<BackendBox, PluginError> {
    let sink = Sink::new(sink);
    guard(|| {
        let Some(k) = inventory::iter::<BackendKind>
            .into_iter()
            .find(|k| k.name == kind.as_str())
        else {
            return Err(PluginError::new(
                ErrorKind::UNKNOWN_KIND,
                format!("this plugin offers no backend kind `{kind}`"),
            ));
        };
        let backend = (k.create)(config.as_str(), sink.clone())?;
        Ok(backend_to_abi(backend, sink))
    })
    .and_then(|r| r)
    .into()
}

#[doc(hidden)]
pub fn __new_observer(kind: RStr<'_>, config: RStr<'_>) -> RResult<ObserverBox, PluginError> {
    guard(|| {
        let Some(k) = inventory::iter::<ObserverKind>
            .into_iter()
            .find(|k| k.name == kind.as_str())
        else {
            return Err(PluginError::new(
                ErrorKind::UNKNOWN_KIND,
                format!("this plugin offers no observer kind `{kind}`"),
            ));
        };
        Ok(observer_to_abi((k.create)(config.as_str())?))
    })
    .and_then(|r| r)
    .into()
}

/// Exports the plugin: its root module and the plain version symbol. Use once per plugin
/// crate, and register kinds with [`crate::register_backend!`] / [`crate::register_observer!`].
#[macro_export]
macro_rules! export_plugin {
    (name = $name:expr, version = $version:expr $(,)?) => {
        #[doc(hidden)]
        #[no_mangle]
        pub extern "C" fn flowrun_plugin_api_version() -> *const ::std::os::raw::c_char {
            $crate::PLUGIN_API_VERSION_C.as_ptr() as *const ::std::os::raw::c_char
        }

        /// The plugin's name and version, `"NAME VERSION"`, as a plain C string: the host reads
        /// it to name the plugin in a version-mismatch message without touching the ABI.
        #[doc(hidden)]
        #[no_mangle]
        pub extern "C" fn flowrun_plugin_identity() -> *const ::std::os::raw::c_char {
            static ID: ::std::sync::OnceLock<::std::ffi::CString> = ::std::sync::OnceLock::new();
            ID.get_or_init(|| {
                ::std::ffi::CString::new(format!("{} {}", $name, $version)).unwrap_or_default()
            })
            .as_ptr()
        }

        #[doc(hidden)]
        pub fn __flowrun_plugin_root() -> $crate::PluginRoot_Ref {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            extern "C" fn manifest() -> $crate::Manifest {
                $crate::sdk::__manifest()
            }
            extern "C" fn init(
                host: $crate::HostServicesBox,
            ) -> $crate::abi_stable::std_types::RResult<(), $crate::PluginError> {
                $crate::sdk::__init(host)
            }
            extern "C" fn new_backend(
                kind: $crate::abi_stable::std_types::RStr<'_>,
                config: $crate::abi_stable::std_types::RStr<'_>,
                sink: $crate::EventSinkBox,
            ) -> $crate::abi_stable::std_types::RResult<$crate::BackendBox, $crate::PluginError> {
                $crate::sdk::__new_backend(kind, config, sink)
            }
            extern "C" fn new_observer(
                kind: $crate::abi_stable::std_types::RStr<'_>,
                config: $crate::abi_stable::std_types::RStr<'_>,
            ) -> $crate::abi_stable::std_types::RResult<$crate::ObserverBox, $crate::PluginError> {
                $crate::sdk::__new_observer(kind, config)
            }
            $crate::PluginRoot {
                api_version: $crate::abi_stable::std_types::RStr::from_str($crate::PLUGIN_API_VERSION),
                plugin_name: $crate::abi_stable::std_types::RStr::from_str($name),
                plugin_version: $crate::abi_stable::std_types::RStr::from_str($version),
                manifest,
                init,
                new_backend,
                new_observer,
            }
            .leak_into_prefix()
        }

        // What `#[abi_stable::export_root_module]` generates, spelled out so that plugin crates
        // need no direct abi_stable dependency. The symbol name is abi_stable 0.11's mangled
        // "root module loader" name.
        #[doc(hidden)]
        #[no_mangle]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::abi_stable::library::LibHeader = {
            pub extern "C" fn _sabi_erased_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(__flowrun_plugin_root)
            }
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::PluginRoot_Ref>(
                    _sabi_erased_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

/// Registers a backend kind of this plugin.
#[macro_export]
macro_rules! register_backend {
    (kind = $kind:expr, description = $desc:expr, create = $create:expr $(,)?) => {
        $crate::inventory::submit! {
            $crate::sdk::BackendKind { name: $kind, description: $desc, create: $create }
        }
    };
}

/// Registers an observer kind of this plugin.
#[macro_export]
macro_rules! register_observer {
    (kind = $kind:expr, description = $desc:expr, create = $create:expr $(,)?) => {
        $crate::inventory::submit! {
            $crate::sdk::ObserverKind { name: $kind, description: $desc, create: $create }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Logging bridge
// ---------------------------------------------------------------------------------------------

static HOST: OnceLock<HostServicesBox> = OnceLock::new();

/// Forwards this plugin's `tracing` events (and `log` records) to the host's logger.
struct ForwardLayer;

struct MessageVisitor(String);

impl tracing::field::Visit for MessageVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else if !field.name().starts_with("log.") {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use std::fmt::Write;
        if field.name() == "message" {
            self.0.push_str(value);
        } else if !field.name().starts_with("log.") {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

fn level_number(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 1,
        tracing::Level::WARN => 2,
        tracing::Level::INFO => 3,
        tracing::Level::DEBUG => 4,
        tracing::Level::TRACE => 5,
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ForwardLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(host) = HOST.get() else { return };
        let mut visitor = MessageVisitor(String::new());
        event.record(&mut visitor);
        // Records bridged from the `log` crate carry their real target in a field.
        let meta = event.metadata();
        let target = tracing_log::NormalizeEvent::normalized_metadata(event)
            .map(|m| m.target().to_string())
            .unwrap_or_else(|| meta.target().to_string());
        host.log(
            level_number(meta.level()),
            RStr::from_str(&target),
            RStr::from_str(&visitor.0),
        );
    }
}

fn install_host_logger(host: HostServicesBox) {
    use tracing_subscriber::prelude::*;
    let max = host.max_log_level();
    if HOST.set(host).is_err() {
        return; // init called twice: keep the first
    }
    // The plugin has its own copy of std and so its own panic hook: route panic reports to the
    // host's log instead of a bare stderr backtrace. The panic itself is still caught by the
    // guard and fails the job.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("plugin panicked: {info}");
    }));
    let filter = match max {
        0 => tracing_subscriber::filter::LevelFilter::OFF,
        1 => tracing_subscriber::filter::LevelFilter::ERROR,
        2 => tracing_subscriber::filter::LevelFilter::WARN,
        3 => tracing_subscriber::filter::LevelFilter::INFO,
        4 => tracing_subscriber::filter::LevelFilter::DEBUG,
        _ => tracing_subscriber::filter::LevelFilter::TRACE,
    };
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(ForwardLayer.with_filter(filter)),
    );
    let _ = tracing_log::LogTracer::init();
}

// ---------------------------------------------------------------------------------------------
// A plugin-owned tokio runtime
// ---------------------------------------------------------------------------------------------

/// A tokio runtime owned by the plugin. The plugin links its own tokio, which cannot see the
/// host's runtime, so every future, timer and child process of a plugin runs here.
pub struct PluginRuntime {
    runtime: tokio::runtime::Runtime,
}

impl PluginRuntime {
    /// Builds a runtime with `threads` worker threads named `<name>-rt`.
    pub fn new(name: &str, threads: usize) -> Result<Self, PluginError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(format!("{name}-rt"))
            .enable_all()
            .build()
            .map_err(|e| {
                PluginError::new(
                    ErrorKind::IO,
                    format!("cannot start the {name} runtime: {e}"),
                )
            })?;
        Ok(PluginRuntime { runtime })
    }

    /// The runtime's handle.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Spawns the future that drives job `id`. If it panics, the job is reported lost with
    /// "plugin panicked: ..." so the host never waits forever.
    pub fn spawn_job<F>(&self, sink: &Sink, id: JobId, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let sink = sink.clone();
        self.runtime.spawn(async move {
            if let Err(msg) = CatchUnwind(Box::pin(fut)).await {
                sink.emit(JobEvent::lost(id, format!("plugin panicked: {msg}")));
            }
        });
    }

    /// Shuts the runtime down, waiting at most `timeout` for its tasks.
    pub fn shutdown_timeout(self, timeout: std::time::Duration) {
        self.runtime.shutdown_timeout(timeout)
    }
}

struct CatchUnwind(Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for CatchUnwind {
    type Output = Result<(), String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Err(p) => Poll::Ready(Err(panic_message(&*p))),
        }
    }
}

/// Converts ABI key/value attributes into pairs of `&str`.
pub fn attrs_iter(attrs: &RVec<Attr>) -> impl Iterator<Item = (&str, &str)> {
    attrs.iter().map(|a| (a.0.as_str(), a.1.as_str()))
}
