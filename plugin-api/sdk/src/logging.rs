//! The logging bridge: a plugin links its own copy of `tracing` and `log`, whose events would
//! go nowhere; this forwards them (and the plugin's panic reports) to the host's logger.

use std::sync::OnceLock;

use flowrun_plugin_abi::{abi_stable::std_types::RStr, HostServicesBox};

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

pub(crate) fn install_host_logger(host: HostServicesBox) {
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
