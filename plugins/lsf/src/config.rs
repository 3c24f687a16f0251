//! The `[backends.NAME]` table of a `kind = "lsf"` backend: the cluster engine's keys (see
//! `docs/engine.md`) plus LSF's own, documented in the crate's README.md.

use std::collections::BTreeMap;

use flowrun_plugin_sdk::{
    engine::{self, EngineConfig, EngineDefaults},
    PluginError,
};
use serde::Deserialize;

/// The engine's defaults serve LSF as they are (a status query every 10 s).
pub const DEFAULTS: EngineDefaults = EngineDefaults::STANDARD;

/// LSF's own keys, as written in the flow.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLsfKeys {
    queue: Option<String>,
    project: Option<String>,
    #[serde(default)]
    bsub_args: Vec<String>,
    #[serde(default)]
    resource_map: BTreeMap<String, String>,
}

/// LSF's own keys, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LsfKeys {
    /// `bsub -q` (one queue, or several separated by spaces).
    pub queue: Option<String>,
    /// `bsub -P`.
    pub project: Option<String>,
    /// Extra bsub arguments, placed before the command.
    pub bsub_args: Vec<String>,
    /// Flow resource name -> LSF resource name, for `-R "rusage[NAME=AMOUNT]"`.
    pub resource_map: BTreeMap<String, String>,
}

/// bsub options the backend sets itself: tracking and output (`-J`, `-o`, `-e`, `-cwd`),
/// blocking or interactive modes, and what comes from the flow (`-W`, `-n`, `-M`, `-q`, `-P`).
const RESERVED_BSUB_OPTIONS: &[&str] = &[
    "-J", "-o", "-oo", "-e", "-eo", "-cwd", "-K", "-I", "-Ip", "-Is", "-IS", "-ISp", "-ISs", "-IX",
    "-W", "-n", "-M", "-q", "-P",
];

/// Whether `name` may be written in an rusage string (and is not `mem`, which comes from the
/// job's memory).
fn valid_resource_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != "mem"
}

/// Parses and validates the TOML text of the backend table.
pub fn parse(text: &str) -> Result<(EngineConfig, LsfKeys), PluginError> {
    let (engine, raw): (EngineConfig, RawLsfKeys) = engine::parse_config(text, &DEFAULTS)?;
    for arg in &raw.bsub_args {
        // Glued values (`-n4`, `-W10`) count too; `-env`, `-Jd` and the like are other options.
        let glued = ["-n", "-W", "-M"].iter().any(|o| {
            arg.strip_prefix(o)
                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        });
        if RESERVED_BSUB_OPTIONS.contains(&arg.as_str()) || glued {
            return Err(PluginError::config(
                "bsub_args",
                format!(
                    "{arg:?} is set by the backend itself (job name, output files, working \
                     directory, run limit, slots, memory) or by the keys queue and project"
                ),
            ));
        }
    }
    engine::non_empty("queue", &raw.queue)?;
    engine::non_empty("project", &raw.project)?;
    for (flow_name, lsf_name) in &raw.resource_map {
        if !valid_resource_name(lsf_name) {
            return Err(PluginError::config(
                "resource_map",
                format!(
                    "{flow_name} = {lsf_name:?}: an LSF resource name is letters, digits and \
                     `_`, and not `mem` (memory comes from the job's `memory`)"
                ),
            ));
        }
    }
    let keys = LsfKeys {
        queue: raw.queue,
        project: raw.project,
        bsub_args: raw.bsub_args,
        resource_map: raw.resource_map,
    };
    Ok((engine, keys))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn defaults() {
        let (e, k) = parse("").unwrap();
        assert_eq!(e.poll_interval, Duration::from_secs(10));
        assert!(!e.arrays);
        assert_eq!(k, LsfKeys::default());
    }

    #[test]
    fn every_key_is_read() {
        let (e, k) = parse(
            r#"queue = "regress"
project = "chip"
bsub_args = ["-R", "select[type==X86_64]", "-env", "all"]
resource_map = { vcs = "vcssim", lic_dc = "dc_license" }
poll_interval = "30s"
arrays = true
array_slot_limit = 100"#,
        )
        .unwrap();
        assert_eq!(k.queue.as_deref(), Some("regress"));
        assert_eq!(k.project.as_deref(), Some("chip"));
        assert_eq!(k.bsub_args.len(), 4);
        assert_eq!(k.resource_map["vcs"], "vcssim");
        assert_eq!(e.poll_interval, Duration::from_secs(30));
        assert_eq!((e.arrays, e.array_slot_limit), (true, Some(100)));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("bsub_args = [\"-J\", \"x\"]", "bsub_args"),
            ("bsub_args = [\"-oo\", \"x\"]", "bsub_args"),
            ("bsub_args = [\"-n4\"]", "bsub_args"),
            ("bsub_args = [\"-W\", \"10\"]", "bsub_args"),
            ("bsub_args = [\"-K\"]", "bsub_args"),
            ("queue = \" \"", "queue"),
            ("project = \"\"", "project"),
            ("resource_map = { a = \"b c\" }", "resource_map"),
            ("resource_map = { a = \"mem\" }", "resource_map"),
            ("poll_interval = \"0s\"", "poll_interval"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(key), "{text}: {e}");
        }
        let e = parse("queeu = \"x\"").unwrap_err();
        assert!(e.message.contains("queeu"), "{e}");
    }
}
