//! flowrun's Grid Engine backend (`kind = "gridengine"`): every job is a Grid Engine job
//! submitted with `qsub` (a generated bash script, never `-b y`), tracked with one `qstat -xml`
//! per poll interval, resolved from `qacct` once it left the queue, and deleted with `qdel`.
//! The policy is the SDK's cluster engine (docs/engine.md); this crate is Grid Engine's
//! dialect, and the worked example of docs/plugin-authoring.md ("A batch-system backend on the
//! engine"). See README.md for the keys.
#![forbid(unsafe_code)]

mod dialect;
mod texts;

#[cfg(test)]
mod policy_tests;

use flowrun_plugin_sdk::{engine, BackendImpl, PluginError, Sink};
use serde::Deserialize;

/// Grid Engine's own keys (the engine's keys are accepted beside them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// `qsub -q`.
    queue: Option<String>,
    /// `qsub -P`.
    project: Option<String>,
    /// The parallel environment of jobs with more than one CPU (`-pe NAME N`; `smp`).
    parallel_environment: Option<String>,
    /// The resource that carries a job's memory, per slot (`-l NAME=<MB>M`; `h_vmem`); empty:
    /// none.
    memory_resource: Option<String>,
    /// Extra qsub arguments, before the script.
    #[serde(default)]
    qsub_args: Vec<String>,
}

/// qsub options the backend sets itself: what tracking, output and the script depend on, and
/// what comes from the flow or from the keys.
const RESERVED: &[&str] = &[
    "-N", "-o", "-e", "-j", "-wd", "-cwd", "-t", "-tc", "-terse", "-b", "-S", "-sync", "-now",
    "-pe", "-q", "-P",
];

/// Creates a Grid Engine backend from its `[backends.NAME]` table.
pub fn create(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
    let (engine_config, keys) = parse(config)?;
    engine::backend(
        "gridengine",
        dialect::GridEngine::new(keys),
        engine_config,
        sink,
    )
}

fn parse(config: &str) -> Result<(engine::EngineConfig, Keys), PluginError> {
    let (engine_config, keys): (_, Keys) =
        engine::parse_config(config, &engine::EngineDefaults::STANDARD)?;
    if let Some(arg) = keys
        .qsub_args
        .iter()
        .find(|a| RESERVED.contains(&a.as_str()))
    {
        let why = "is set by the backend itself or by the keys queue and project";
        return Err(PluginError::config("qsub_args", format!("{arg:?} {why}")));
    }
    engine::non_empty("queue", &keys.queue)?;
    engine::non_empty("project", &keys.project)?;
    engine::non_empty("parallel_environment", &keys.parallel_environment)?;
    Ok((engine_config, keys))
}

flowrun_plugin_sdk::export_plugin!(name = "gridengine", version = env!("CARGO_PKG_VERSION"));
flowrun_plugin_sdk::register_backend!(
    kind = "gridengine",
    description = "runs each job as a Grid Engine job (qsub, qstat -xml and qacct, qdel)",
    create = create
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_their_errors() {
        let (e, k) = parse("queue = \"all.q\"\nqsub_args = [\"-l\", \"arch=lx-amd64\"]").unwrap();
        assert_eq!(e.poll_interval, std::time::Duration::from_secs(10));
        assert_eq!(k.queue.as_deref(), Some("all.q"));
        assert_eq!((k.parallel_environment, k.memory_resource), (None, None));
        for (text, key) in [
            ("qsub_args = [\"-N\", \"x\"]", "qsub_args"),
            ("qsub_args = [\"-b\", \"y\"]", "qsub_args"),
            ("queue = \"\"", "queue"),
            ("parallel_environment = \" \"", "parallel_environment"),
            ("qeueu = \"x\"", "qeueu"),
        ] {
            let e = parse(text).map(drop).unwrap_err();
            assert!(e.message.contains(key), "{text}: {e}");
        }
    }
}
