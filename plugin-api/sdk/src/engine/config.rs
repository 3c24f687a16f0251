//! The keys every backend on the engine accepts, documented once in `docs/engine.md`, and the
//! parser that splits a backend table into the engine's keys and the dialect's own.

use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize};

use crate::{config as sdk, PluginError};

/// The engine's keys, as `docs/engine.md` lists them. `max_parallel` is one too, but the host
/// applies it and strips it from the table before the backend sees it.
pub const ENGINE_KEYS: &[&str] = &[
    "poll_interval",
    "submit_rate",
    "submit_threads",
    "submit_retry_for",
    "arrays",
    "array_min_size",
    "array_max_size",
    "array_slot_limit",
    "submit_grace",
    "lost_after",
    "final_record_wait",
    "shutdown_wait",
    "command_timeout",
    "cancel_batch",
];

/// The shortest `poll_interval` accepted.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The defaults of the engine's keys, per dialect ([`super::Dialect::defaults`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineDefaults {
    /// `poll_interval`.
    pub poll_interval: Duration,
    /// `submit_rate`, as text (`"20/s"`).
    pub submit_rate: &'static str,
    /// `submit_threads`.
    pub submit_threads: usize,
    /// `submit_retry_for`.
    pub submit_retry_for: Duration,
    /// `array_min_size`.
    pub array_min_size: usize,
    /// `array_max_size`.
    pub array_max_size: usize,
    /// `submit_grace`.
    pub submit_grace: Duration,
    /// `lost_after`.
    pub lost_after: Duration,
    /// `final_record_wait`.
    pub final_record_wait: Duration,
    /// `shutdown_wait`.
    pub shutdown_wait: Duration,
    /// `command_timeout`.
    pub command_timeout: Duration,
    /// `cancel_batch`.
    pub cancel_batch: usize,
}

impl EngineDefaults {
    /// The defaults of `docs/engine.md`.
    pub const STANDARD: EngineDefaults = EngineDefaults {
        poll_interval: Duration::from_secs(10),
        submit_rate: "20/s",
        submit_threads: 4,
        submit_retry_for: Duration::from_secs(600),
        array_min_size: 4,
        array_max_size: 1000,
        submit_grace: Duration::from_secs(10),
        lost_after: Duration::from_secs(60),
        final_record_wait: Duration::from_secs(5),
        shutdown_wait: Duration::from_secs(60),
        command_timeout: Duration::from_secs(120),
        cancel_batch: 200,
    };
}

/// The engine's keys, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Time between two status snapshots.
    pub poll_interval: Duration,
    /// The least time between the starts of two submissions (`submit_rate`).
    pub submit_spacing: Duration,
    /// Submissions in flight at once.
    pub submit_threads: usize,
    /// How long a transiently failing submission is retried before its jobs fail.
    pub submit_retry_for: Duration,
    /// Whether same-shape ready jobs go out as arrays.
    pub arrays: bool,
    /// The fewest same-shape ready jobs that make an array.
    pub array_min_size: usize,
    /// The most members of one array.
    pub array_max_size: usize,
    /// The most members of one array running at once, if limited.
    pub array_slot_limit: Option<u32>,
    /// How long a just-submitted job may be missing from the snapshot without counting as
    /// missing.
    pub submit_grace: Duration,
    /// How long a job may stay missing (or unknown, or stuck, or without the record its
    /// verdict needs) before it is lost (or cancelled, or ended with what is known).
    pub lost_after: Duration,
    /// How long a job whose verdict is known waits for its final record (its resource usage).
    pub final_record_wait: Duration,
    /// How long shutdown waits for cancelled jobs to leave the queue.
    pub shutdown_wait: Duration,
    /// The time limit of every command the engine runs.
    pub command_timeout: Duration,
    /// The most ids one cancel call gets.
    pub cancel_batch: usize,
}

impl EngineConfig {
    /// The defaults, unchanged by any key.
    pub fn from_defaults(d: &EngineDefaults) -> EngineConfig {
        parse_engine_table(toml::Table::new(), d).expect("the built-in defaults are valid")
    }
}

/// The engine's keys as written (durations and rates still text).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngineKeys {
    poll_interval: Option<String>,
    submit_rate: Option<String>,
    submit_threads: Option<u32>,
    submit_retry_for: Option<String>,
    arrays: Option<bool>,
    array_min_size: Option<u32>,
    array_max_size: Option<u32>,
    array_slot_limit: Option<u32>,
    submit_grace: Option<String>,
    lost_after: Option<String>,
    final_record_wait: Option<String>,
    shutdown_wait: Option<String>,
    command_timeout: Option<String>,
    cancel_batch: Option<u32>,
}

/// Refuses a text key given as an empty (or blank) string, naming the key.
pub fn non_empty(key: &str, value: &Option<String>) -> Result<(), PluginError> {
    match value {
        Some(text) if text.trim().is_empty() => Err(PluginError::config(key, "must not be empty")),
        _ => Ok(()),
    }
}

/// Parses a backend table: the engine's keys into an [`EngineConfig`] (with the dialect's
/// `defaults`), every other key into the dialect's own `T` (use
/// `#[serde(deny_unknown_fields)]` on it, so that a typo is an error naming the key).
pub fn parse_config<T: DeserializeOwned>(
    text: &str,
    defaults: &EngineDefaults,
) -> Result<(EngineConfig, T), PluginError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        PluginError::new(
            crate::ErrorKind::CONFIG,
            e.message().trim().replace('\n', " "),
        )
    })?;
    let mut engine = toml::Table::new();
    for key in ENGINE_KEYS {
        if let Some(value) = table.remove(*key) {
            engine.insert(key.to_string(), value);
        }
    }
    let engine = parse_engine_table(engine, defaults)?;
    let rest = toml::to_string(&table)
        .map_err(|e| PluginError::other(format!("cannot re-read the backend table: {e}")))?;
    let own = sdk::parse_config::<T>(&rest).map_err(|mut e| {
        if e.message.contains("unknown field") {
            e.message = format!(
                "{}; the cluster engine's keys are accepted too: {}",
                e.message,
                ENGINE_KEYS.join(", ")
            );
        }
        e
    })?;
    Ok((engine, own))
}

fn parse_engine_table(table: toml::Table, d: &EngineDefaults) -> Result<EngineConfig, PluginError> {
    let text = toml::to_string(&table)
        .map_err(|e| PluginError::other(format!("cannot re-read the backend table: {e}")))?;
    let raw: RawEngineKeys = sdk::parse_config(&text)?;
    let duration = |key: &str, value: &Option<String>, default: Duration, zero_ok: bool| {
        let d = match value {
            Some(text) => sdk::parse_duration(key, text)?,
            None => default,
        };
        if d.is_zero() && !zero_ok {
            return Err(PluginError::config(key, "must be greater than zero"));
        }
        Ok(d)
    };
    let poll_interval = duration("poll_interval", &raw.poll_interval, d.poll_interval, false)?;
    if poll_interval < MIN_POLL_INTERVAL {
        return Err(PluginError::config(
            "poll_interval",
            "must be at least 100ms",
        ));
    }
    let submit_spacing = parse_rate(raw.submit_rate.as_deref().unwrap_or(d.submit_rate))?;
    let submit_threads = raw.submit_threads.map_or(d.submit_threads, |n| n as usize);
    if !(1..=64).contains(&submit_threads) {
        return Err(PluginError::config(
            "submit_threads",
            "must be between 1 and 64",
        ));
    }
    let array_max_size = raw.array_max_size.map_or(d.array_max_size, |n| n as usize);
    if array_max_size < 2 {
        return Err(PluginError::config("array_max_size", "must be at least 2"));
    }
    let array_min_size = raw
        .array_min_size
        .map_or(d.array_min_size, |n| n as usize)
        .max(2);
    if array_min_size > array_max_size {
        return Err(PluginError::config(
            "array_min_size",
            format!("must not exceed array_max_size ({array_max_size})"),
        ));
    }
    let array_slot_limit = match raw.array_slot_limit {
        None | Some(0) => None,
        Some(n) => Some(n),
    };
    let cancel_batch = raw.cancel_batch.map_or(d.cancel_batch, |n| n as usize);
    if cancel_batch == 0 {
        return Err(PluginError::config("cancel_batch", "must be at least 1"));
    }
    Ok(EngineConfig {
        poll_interval,
        submit_spacing,
        submit_threads,
        submit_retry_for: duration(
            "submit_retry_for",
            &raw.submit_retry_for,
            d.submit_retry_for,
            false,
        )?,
        arrays: raw.arrays.unwrap_or(false),
        array_min_size,
        array_max_size,
        array_slot_limit,
        submit_grace: duration("submit_grace", &raw.submit_grace, d.submit_grace, true)?,
        lost_after: duration("lost_after", &raw.lost_after, d.lost_after, false)?,
        final_record_wait: duration(
            "final_record_wait",
            &raw.final_record_wait,
            d.final_record_wait,
            true,
        )?,
        shutdown_wait: duration("shutdown_wait", &raw.shutdown_wait, d.shutdown_wait, false)?,
        command_timeout: duration(
            "command_timeout",
            &raw.command_timeout,
            d.command_timeout,
            false,
        )?,
        cancel_batch,
    })
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

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Own {
        partition: Option<String>,
    }

    fn parse(text: &str) -> Result<(EngineConfig, Own), PluginError> {
        parse_config(text, &EngineDefaults::STANDARD)
    }

    #[test]
    fn defaults_come_from_the_dialect() {
        let (c, own) = parse("").unwrap();
        assert_eq!(c, EngineConfig::from_defaults(&EngineDefaults::STANDARD));
        assert_eq!(own, Own { partition: None });
        assert_eq!(c.poll_interval, Duration::from_secs(10));
        assert_eq!(c.submit_spacing, Duration::from_millis(50));
        assert!(!c.arrays);
        assert_eq!((c.array_min_size, c.array_max_size), (4, 1000));
        assert_eq!(c.array_slot_limit, None);
        let slurm_like = EngineDefaults {
            poll_interval: Duration::from_secs(1),
            ..EngineDefaults::STANDARD
        };
        let (c, _): (EngineConfig, Own) = parse_config("", &slurm_like).unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(1));
    }

    #[test]
    fn every_key_is_read_and_the_rest_goes_to_the_dialect() {
        let (c, own) = parse(
            r#"partition = "p"
poll_interval = "30s"
submit_rate = "600/min"
submit_threads = 2
submit_retry_for = "1m"
arrays = true
array_min_size = 10
array_max_size = 500
array_slot_limit = 50
submit_grace = "0s"
lost_after = "5m"
final_record_wait = "2s"
shutdown_wait = "10s"
command_timeout = "30s"
cancel_batch = 100"#,
        )
        .unwrap();
        assert_eq!(own.partition.as_deref(), Some("p"));
        assert_eq!(
            c,
            EngineConfig {
                poll_interval: Duration::from_secs(30),
                submit_spacing: Duration::from_millis(100),
                submit_threads: 2,
                submit_retry_for: Duration::from_secs(60),
                arrays: true,
                array_min_size: 10,
                array_max_size: 500,
                array_slot_limit: Some(50),
                submit_grace: Duration::ZERO,
                lost_after: Duration::from_secs(300),
                final_record_wait: Duration::from_secs(2),
                shutdown_wait: Duration::from_secs(10),
                command_timeout: Duration::from_secs(30),
                cancel_batch: 100,
            }
        );
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("poll_interval = \"soon\"", "poll_interval"),
            ("poll_interval = \"0s\"", "poll_interval"),
            ("poll_interval = \"10ms\"", "poll_interval"),
            ("submit_rate = \"fast\"", "submit_rate"),
            ("submit_rate = \"0/s\"", "submit_rate"),
            ("submit_threads = 0", "submit_threads"),
            ("submit_threads = 65", "submit_threads"),
            ("array_max_size = 1", "array_max_size"),
            ("array_min_size = 20\narray_max_size = 10", "array_min_size"),
            ("lost_after = \"0s\"", "lost_after"),
            ("command_timeout = \"0s\"", "command_timeout"),
            ("cancel_batch = 0", "cancel_batch"),
            ("arrays = \"yes\"", "arrays"),
            ("partition = 3", "partition"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(key), "{text}: {e}");
        }
        let e = parse("partiton = \"x\"").unwrap_err();
        assert!(
            e.message.contains("partiton") && e.message.contains("poll_interval"),
            "{e}"
        );
        let e = parse("poll_interval = ").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::CONFIG);
    }
}
