//! The `[backends.NAME]` table of a `kind = "slurm"` backend: the cluster engine's keys (see
//! `docs/engine.md`) plus Slurm's own, documented in the crate's README.md.

use std::time::Duration;

use flowrun_plugin_sdk::{
    engine::{self, EngineConfig, EngineDefaults},
    PluginError,
};
use serde::Deserialize;

/// The engine's defaults for Slurm: a 1 s poll suits the private test cluster; the README
/// advises 30-60 s on big clusters.
pub const DEFAULTS: EngineDefaults = EngineDefaults {
    poll_interval: Duration::from_secs(1),
    ..EngineDefaults::STANDARD
};

/// Slurm's own keys, as written in the flow.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlurmKeys {
    partition: Option<String>,
    account: Option<String>,
    qos: Option<String>,
    #[serde(default)]
    sbatch_args: Vec<String>,
    #[serde(default)]
    requeue: bool,
}

/// Slurm's own keys, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmKeys {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// Extra sbatch arguments, placed before the script path.
    pub sbatch_args: Vec<String>,
    /// `--requeue` instead of `--no-requeue`.
    pub requeue: bool,
}

/// sbatch options the backend sets itself: allowing them in `sbatch_args` would break tracking.
const RESERVED_SBATCH_OPTIONS: &[&str] = &[
    "-J",
    "--job-name",
    "-o",
    "--output",
    "-a",
    "--array",
    "--wrap",
    "--parsable",
    "-D",
    "--chdir",
];

/// Parses and validates the TOML text of the backend table.
pub fn parse(text: &str) -> Result<(EngineConfig, SlurmKeys), PluginError> {
    let (engine, raw): (EngineConfig, RawSlurmKeys) = engine::parse_config(text, &DEFAULTS)?;
    for arg in &raw.sbatch_args {
        let option = arg.split('=').next().unwrap_or("");
        let short_glued = RESERVED_SBATCH_OPTIONS
            .iter()
            .any(|o| o.len() == 2 && arg.starts_with(o) && arg.len() > 2 && !arg.starts_with("--"));
        if RESERVED_SBATCH_OPTIONS.contains(&option) || short_glued {
            return Err(PluginError::config(
                "sbatch_args",
                format!("{arg:?} is set by the backend itself (job name, output, array, chdir)"),
            ));
        }
    }
    engine::non_empty("partition", &raw.partition)?;
    engine::non_empty("account", &raw.account)?;
    engine::non_empty("qos", &raw.qos)?;
    let keys = SlurmKeys {
        partition: raw.partition,
        account: raw.account,
        qos: raw.qos,
        sbatch_args: raw.sbatch_args,
        requeue: raw.requeue,
    };
    Ok((engine, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_suit_the_test_cluster() {
        let (e, k) = parse("").unwrap();
        assert_eq!(e.poll_interval, Duration::from_secs(1));
        assert_eq!(e.submit_spacing, Duration::from_millis(50));
        assert!(!e.arrays && !k.requeue);
        assert_eq!((e.array_min_size, e.array_max_size), (4, 1000));
        assert_eq!(e.lost_after, Duration::from_secs(60));
    }

    #[test]
    fn every_key_is_read() {
        let (e, k) = parse(
            r#"partition = "p"
account = "a"
qos = "q"
sbatch_args = ["--exclusive"]
poll_interval = "30s"
submit_rate = "600/min"
arrays = true
array_min_size = 10
array_max_size = 500
requeue = true
submit_threads = 2
submit_retry_for = "1m"
lost_after = "5m"
shutdown_wait = "10s""#,
        )
        .unwrap();
        assert_eq!(
            k,
            SlurmKeys {
                partition: Some("p".into()),
                account: Some("a".into()),
                qos: Some("q".into()),
                sbatch_args: vec!["--exclusive".into()],
                requeue: true,
            }
        );
        assert_eq!(e.poll_interval, Duration::from_secs(30));
        assert_eq!(e.submit_spacing, Duration::from_millis(100));
        assert!(e.arrays);
        assert_eq!(
            (e.array_min_size, e.array_max_size, e.submit_threads),
            (10, 500, 2)
        );
        assert_eq!(e.lost_after, Duration::from_secs(300));
        assert_eq!(e.shutdown_wait, Duration::from_secs(10));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("poll_interval = \"soon\"", "poll_interval"),
            ("poll_interval = \"0s\"", "poll_interval"),
            ("submit_rate = \"fast\"", "submit_rate"),
            ("submit_rate = \"0/s\"", "submit_rate"),
            ("sbatch_args = [\"--job-name=x\"]", "sbatch_args"),
            ("sbatch_args = [\"-ofile\"]", "sbatch_args"),
            ("partition = \"\"", "partition"),
            ("submit_threads = 0", "submit_threads"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(key), "{text}: {e}");
        }
        let e = parse("partiton = \"x\"").unwrap_err();
        assert!(e.message.contains("partiton"), "{e}");
    }
}
