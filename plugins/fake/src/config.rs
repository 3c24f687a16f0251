//! The fake backend's config, parsed with the SDK's config parser (every error names its key)
//! and then validated.

use std::{collections::BTreeMap, time::Duration};

use flowrun_plugin_sdk::{config::optional_duration, parse_config, parse_duration, PluginError};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

/// The table as the flow writes it (the host has removed `kind` and `max_parallel`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    outcome: Option<String>,
    #[serde(default)]
    outcomes: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "optional_duration")]
    duration: Option<Duration>,
    #[serde(default)]
    durations: BTreeMap<String, String>,
    fail_rate: Option<f64>,
    seed: Option<i64>,
    busy_every: Option<i64>,
    exit_code: Option<i32>,
    write_logs: Option<bool>,
}

/// How a fake job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0.
    Pass,
    /// The configured `exit_code`.
    Fail,
}

impl Outcome {
    fn parse(key: &str, text: &str) -> Result<Outcome, PluginError> {
        match text {
            "pass" => Ok(Outcome::Pass),
            "fail" => Ok(Outcome::Fail),
            other => Err(PluginError::config(
                key,
                format!("expected \"pass\" or \"fail\", got {other:?}"),
            )),
        }
    }

    /// The word used in logs.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
        }
    }
}

/// A list of job-name globs with a value each. When several globs match a name, the most
/// specific wins: the one with the most literal (non-wildcard) characters, then the longer
/// pattern, then the alphabetically first. TOML tables carry no order through serde, so "first
/// in the file" cannot be honoured; this rule is deterministic and does what one expects of
/// `"sim_*"` versus `"*"` versus an exact name.
pub struct GlobRules<T> {
    set: GlobSet,
    /// Values in priority order, index-aligned with the globs of `set`.
    values: Vec<T>,
}

impl<T> GlobRules<T> {
    fn build(key: &str, mut rules: Vec<(String, T)>) -> Result<Self, PluginError> {
        rules.sort_by(|(a, _), (b, _)| {
            literal_chars(b)
                .cmp(&literal_chars(a))
                .then(b.len().cmp(&a.len()))
                .then(a.cmp(b))
        });
        let mut builder = GlobSetBuilder::new();
        let mut values = Vec::with_capacity(rules.len());
        for (pattern, value) in rules {
            let glob = Glob::new(&pattern).map_err(|e| {
                PluginError::config(
                    &format!("{key}.\"{pattern}\""),
                    format!("invalid glob: {e}"),
                )
            })?;
            builder.add(glob);
            values.push(value);
        }
        let set = builder
            .build()
            .map_err(|e| PluginError::config(key, format!("invalid globs: {e}")))?;
        Ok(GlobRules { set, values })
    }

    /// The value of the most specific glob matching `name`.
    pub fn lookup(&self, name: &str) -> Option<&T> {
        if self.values.is_empty() {
            return None; // the common case: no globs, no matching cost
        }
        self.set
            .matches(name)
            .into_iter()
            .min()
            .map(|i| &self.values[i])
    }

    /// Whether any rule's value satisfies `f`.
    pub fn any(&self, f: impl Fn(&T) -> bool) -> bool {
        self.values.iter().any(f)
    }
}

fn literal_chars(pattern: &str) -> usize {
    pattern
        .chars()
        .filter(|c| !matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | ',' | '!' | '\\'))
        .count()
}

/// The fake backend's policy, validated.
pub struct FakeConfig {
    /// `outcome`: the outcome of a job no `outcomes` glob matches (and `fail_rate` spares).
    pub outcome: Outcome,
    /// `outcomes`: outcome per job-name glob.
    pub outcomes: GlobRules<Outcome>,
    /// `duration`: how long a job no `durations` glob matches takes, in real time.
    pub duration: Duration,
    /// `durations`: duration per job-name glob.
    pub durations: GlobRules<Duration>,
    /// `fail_rate`: the share of jobs (not decided by `outcomes`) that fail, drawn
    /// deterministically from the job name and `seed`.
    pub fail_rate: f64,
    /// `seed`: the seed of the `fail_rate` draw.
    pub seed: u64,
    /// `busy_every`: answer BUSY to every Nth submission (None: never).
    pub busy_every: Option<u64>,
    /// `exit_code`: the exit code of a failing job.
    pub exit_code: i32,
    /// `write_logs`: write one line per job into its log.
    pub write_logs: bool,
}

impl FakeConfig {
    /// Parses and validates the backend table (without `kind` and `max_parallel`).
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        let raw: RawConfig = parse_config(text)?;
        let outcome = match &raw.outcome {
            Some(s) => Outcome::parse("outcome", s)?,
            None => Outcome::Pass,
        };
        let outcomes = raw
            .outcomes
            .into_iter()
            .map(|(glob, text)| {
                let outcome = Outcome::parse(&format!("outcomes.\"{glob}\""), &text)?;
                Ok((glob, outcome))
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        let durations = raw
            .durations
            .into_iter()
            .map(|(glob, text)| {
                let duration = parse_duration(&format!("durations.\"{glob}\""), &text)?;
                Ok((glob, duration))
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        let fail_rate = raw.fail_rate.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&fail_rate) {
            return Err(PluginError::config(
                "fail_rate",
                format!("must be between 0.0 and 1.0, got {fail_rate}"),
            ));
        }
        // TOML integers are signed; reinterpret so any 64-bit seed can be written.
        let seed = raw.seed.map_or(0, |s| s as u64);
        let busy_every = match raw.busy_every {
            None => None,
            Some(n) if n >= 2 => Some(n as u64),
            Some(n) => {
                return Err(PluginError::config(
                    "busy_every",
                    format!("must be at least 2 (1 would refuse every submission), got {n}"),
                ))
            }
        };
        let exit_code = raw.exit_code.unwrap_or(1);
        if exit_code == 0 {
            return Err(PluginError::config(
                "exit_code",
                "must not be 0: it is the exit code of failing jobs",
            ));
        }
        Ok(FakeConfig {
            outcome,
            outcomes: GlobRules::build("outcomes", outcomes)?,
            duration: raw.duration.unwrap_or(Duration::ZERO),
            durations: GlobRules::build("durations", durations)?,
            fail_rate,
            seed,
            busy_every,
            exit_code,
            write_logs: raw.write_logs.unwrap_or(false),
        })
    }

    /// Whether some job may take time, so a timer thread is needed.
    pub fn has_delays(&self) -> bool {
        !self.duration.is_zero() || self.durations.any(|d| !d.is_zero())
    }

    /// How job `name` ends.
    pub fn outcome_of(&self, name: &str) -> Outcome {
        if let Some(o) = self.outcomes.lookup(name) {
            return *o;
        }
        if self.fail_rate > 0.0 && unit_draw(self.seed, name) < self.fail_rate {
            return Outcome::Fail;
        }
        self.outcome
    }

    /// How long job `name` takes.
    pub fn duration_of(&self, name: &str) -> Duration {
        self.durations
            .lookup(name)
            .copied()
            .unwrap_or(self.duration)
    }
}

/// A number in [0, 1) that depends only on `seed` and `name`, the same on every machine and
/// Rust version (std's hashers promise neither): FNV-1a, then the splitmix64 finaliser to
/// spread FNV's weak low bits.
pub fn unit_draw(seed: u64, name: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(name.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}
