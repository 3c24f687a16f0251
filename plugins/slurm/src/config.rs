//! The `[backends.NAME]` table of a `kind = "slurm"` backend. Every key is documented in the
//! crate's README.md.

use std::time::Duration;

use flowrun_plugin_sdk::{self as sdk, PluginError};
use serde::Deserialize;

/// The config as written in the flow (durations and rates still text).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    partition: Option<String>,
    account: Option<String>,
    qos: Option<String>,
    #[serde(default)]
    sbatch_args: Vec<String>,
    poll_interval: Option<String>,
    submit_rate: Option<String>,
    #[serde(default)]
    arrays: bool,
    array_min_size: Option<u32>,
    array_max_size: Option<u32>,
    #[serde(default)]
    requeue: bool,
    submit_threads: Option<u32>,
    submit_retry_for: Option<String>,
    lost_after: Option<String>,
    shutdown_wait: Option<String>,
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// Extra sbatch arguments, placed before the script path.
    pub sbatch_args: Vec<String>,
    /// Time between two status snapshots (one squeue, at most one sacct/scontrol).
    pub poll_interval: Duration,
    /// The least time between the starts of two sbatch calls.
    pub submit_spacing: Duration,
    /// Whether same-shape jobs go out as one `sbatch --array`.
    pub arrays: bool,
    /// The fewest same-shape ready jobs worth an array.
    pub array_min_size: usize,
    /// The most members of one array (Slurm's MaxArraySize - 1 by default is 1000).
    pub array_max_size: usize,
    /// `--requeue` instead of `--no-requeue`.
    pub requeue: bool,
    /// How many sbatch calls may be in flight at once.
    pub submit_threads: usize,
    /// How long a transient sbatch failure (controller unreachable) is retried.
    pub submit_retry_for: Duration,
    /// How long a job may be missing from every Slurm view before it is reported lost.
    pub lost_after: Duration,
    /// How long `shutdown` waits for cancelled jobs to leave the queue.
    pub shutdown_wait: Duration,
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

impl Config {
    /// Parses and validates the TOML text of the backend table.
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let raw: RawConfig = sdk::parse_config(text)?;
        let duration =
            |key: &str, value: &Option<String>, default: &str| -> Result<Duration, PluginError> {
                let d = sdk::parse_duration(key, value.as_deref().unwrap_or(default))?;
                if d.is_zero() {
                    return Err(PluginError::config(key, "must be greater than zero"));
                }
                Ok(d)
            };
        let poll_interval = duration("poll_interval", &raw.poll_interval, "1s")?;
        if poll_interval < Duration::from_millis(100) {
            return Err(PluginError::config(
                "poll_interval",
                "must be at least 100ms",
            ));
        }
        let submit_spacing = parse_rate(raw.submit_rate.as_deref().unwrap_or("20/s"))?;
        for arg in &raw.sbatch_args {
            let option = arg.split('=').next().unwrap_or("");
            let short_glued = RESERVED_SBATCH_OPTIONS.iter().any(|o| {
                o.len() == 2 && arg.starts_with(o) && arg.len() > 2 && !arg.starts_with("--")
            });
            if RESERVED_SBATCH_OPTIONS.contains(&option) || short_glued {
                return Err(PluginError::config(
                    "sbatch_args",
                    format!(
                        "{arg:?} is set by the backend itself (job name, output, array, chdir)"
                    ),
                ));
            }
        }
        let array_max_size = raw.array_max_size.unwrap_or(1000) as usize;
        if array_max_size < 2 {
            return Err(PluginError::config("array_max_size", "must be at least 2"));
        }
        let array_min_size = raw.array_min_size.unwrap_or(4).max(2) as usize;
        let submit_threads = raw.submit_threads.unwrap_or(4) as usize;
        if !(1..=64).contains(&submit_threads) {
            return Err(PluginError::config(
                "submit_threads",
                "must be between 1 and 64",
            ));
        }
        let non_empty = |key: &str, v: Option<String>| -> Result<Option<String>, PluginError> {
            match v {
                Some(s) if s.trim().is_empty() => {
                    Err(PluginError::config(key, "must not be empty"))
                }
                other => Ok(other),
            }
        };
        Ok(Config {
            partition: non_empty("partition", raw.partition)?,
            account: non_empty("account", raw.account)?,
            qos: non_empty("qos", raw.qos)?,
            sbatch_args: raw.sbatch_args,
            poll_interval,
            submit_spacing,
            arrays: raw.arrays,
            array_min_size,
            array_max_size,
            requeue: raw.requeue,
            submit_threads,
            submit_retry_for: duration("submit_retry_for", &raw.submit_retry_for, "10m")?,
            lost_after: duration("lost_after", &raw.lost_after, "60s")?,
            shutdown_wait: duration("shutdown_wait", &raw.shutdown_wait, "60s")?,
        })
    }
}

/// Parses `"20/s"`, `"600/min"`, `"5/m"`, `"1000/h"` into the spacing between two calls.
fn parse_rate(text: &str) -> Result<Duration, PluginError> {
    let bad = || {
        PluginError::config(
            "submit_rate",
            format!("invalid rate {text:?} (write e.g. \"20/s\" or \"600/min\")"),
        )
    };
    let (count, unit) = text.split_once('/').ok_or_else(bad)?;
    let count: f64 = count.trim().parse().map_err(|_| bad())?;
    if !(count > 0.0 && count.is_finite()) {
        return Err(PluginError::config(
            "submit_rate",
            "must be more than 0 calls per unit",
        ));
    }
    let unit_secs = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs_f64(unit_secs / count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_suit_the_test_cluster() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert_eq!(c.submit_spacing, Duration::from_millis(50));
        assert!(!c.arrays && !c.requeue);
        assert_eq!((c.array_min_size, c.array_max_size), (4, 1000));
    }

    #[test]
    fn every_key_is_read() {
        let c = Config::parse(
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
        assert_eq!(c.partition.as_deref(), Some("p"));
        assert_eq!(c.account.as_deref(), Some("a"));
        assert_eq!(c.qos.as_deref(), Some("q"));
        assert_eq!(c.sbatch_args, vec!["--exclusive"]);
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert_eq!(c.submit_spacing, Duration::from_millis(100));
        assert!(c.arrays && c.requeue);
        assert_eq!(
            (c.array_min_size, c.array_max_size, c.submit_threads),
            (10, 500, 2)
        );
        assert_eq!(c.lost_after, Duration::from_secs(300));
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
            let e = Config::parse(text).unwrap_err();
            assert!(e.message.contains(key), "{text}: {e}");
        }
        let e = Config::parse("partiton = \"x\"").unwrap_err();
        assert!(e.message.contains("partiton"), "{e}");
    }
}
