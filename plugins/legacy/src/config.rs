//! The `[backends.NAME]` keys of a `kind = "legacy"` backend (see the crate README).

use std::{path::PathBuf, time::Duration};

use flowrun_plugin_api::{sdk, PluginError};
use serde::Deserialize;

/// The validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The launcher library, absolute.
    pub library: PathBuf,
    /// Time between poll ticks.
    pub poll_interval: Duration,
    /// Polls per tick at most; 0 = no limit.
    pub max_polls_per_interval: u32,
    /// Handed to the launcher's `flowrun_legacy_open`.
    pub options: String,
    /// How long a launcher call may take before the worker is declared hung and killed.
    pub call_timeout: Duration,
}

/// The raw table. Values are read as `toml::Value` so that a wrong type is reported with the
/// key's name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    library: Option<toml::Value>,
    poll_interval: Option<toml::Value>,
    max_polls_per_interval: Option<toml::Value>,
    options: Option<toml::Value>,
    call_timeout: Option<toml::Value>,
}

fn string<'a>(key: &str, v: &'a toml::Value, what: &str) -> Result<&'a str, PluginError> {
    v.as_str()
        .ok_or_else(|| PluginError::config(key, format!("expected {what}, got {v}")))
}

fn duration(key: &str, v: &toml::Value, min: Duration) -> Result<Duration, PluginError> {
    let d = sdk::parse_duration(key, string(key, v, "a duration string such as \"1s\"")?)?;
    if d < min {
        return Err(PluginError::config(
            key,
            format!("must be at least {}", humanize(min)),
        ));
    }
    Ok(d)
}

/// `10ms`, `1s`, `2.02s`, `2m`: how durations read in messages.
pub fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        let s = format!("{:.3}", ms as f64 / 1000.0);
        format!("{}s", s.trim_end_matches('0'))
    }
}

impl Config {
    /// Parses the backend table (without `kind` and `max_parallel`, which the host strips).
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let raw: RawConfig = sdk::parse_config(text)?;
        let Some(library) = raw.library else {
            return Err(PluginError::config(
                "library",
                "missing: set it to the path of the launcher's shared library (a .so built against flowrun_legacy.h)",
            ));
        };
        let library = PathBuf::from(string("library", &library, "a path")?);
        // Relative to the directory flowrun runs in: the worker resolves it there too, but an
        // absolute path keeps messages unambiguous.
        let library = std::path::absolute(&library).unwrap_or(library);
        match std::fs::metadata(&library) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(PluginError::config(
                    "library",
                    format!("{} is not a file", library.display()),
                ))
            }
            Err(e) => {
                return Err(PluginError::config(
                    "library",
                    format!("{}: {e}", library.display()),
                ))
            }
        }
        let poll_interval = match raw.poll_interval {
            Some(v) => duration("poll_interval", &v, Duration::from_millis(1))?,
            None => Duration::from_secs(1),
        };
        let max_polls_per_interval = match raw.max_polls_per_interval {
            Some(v) => v
                .as_integer()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    PluginError::config(
                        "max_polls_per_interval",
                        format!(
                            "expected an integer from 0 (no limit) to {}, got {v}",
                            u32::MAX
                        ),
                    )
                })?,
            None => 10_000,
        };
        let options = match raw.options {
            Some(v) => string("options", &v, "a string")?.to_string(),
            None => String::new(),
        };
        let call_timeout = match raw.call_timeout {
            Some(v) => duration("call_timeout", &v, Duration::from_secs(1))?,
            None => Duration::from_secs(120),
        };
        Ok(Config {
            library,
            poll_interval,
            max_polls_per_interval,
            options,
            call_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().message.to_string()
    }

    #[test]
    fn defaults_and_every_key() {
        let lib = std::env::current_exe().unwrap();
        let c = Config::parse(&format!("library = {:?}", lib.to_str().unwrap())).unwrap();
        assert_eq!(c.library, lib);
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert_eq!(c.max_polls_per_interval, 10_000);
        assert_eq!(c.options, "");
        assert_eq!(c.call_timeout, Duration::from_secs(120));
        let c = Config::parse(&format!(
            "library = {:?}\npoll_interval = \"10ms\"\nmax_polls_per_interval = 0\noptions = \"a=1 b\"\ncall_timeout = \"5s\"",
            lib.to_str().unwrap()
        ))
        .unwrap();
        assert_eq!(c.poll_interval, Duration::from_millis(10));
        assert_eq!(c.max_polls_per_interval, 0);
        assert_eq!(c.options, "a=1 b");
        assert_eq!(c.call_timeout, Duration::from_secs(5));
    }

    #[test]
    fn durations_read_as_written() {
        let h = |ms| humanize(Duration::from_millis(ms));
        assert_eq!(
            [
                h(0),
                h(20),
                h(1000),
                h(2020),
                h(1500),
                h(120_000),
                h(90_000)
            ],
            ["0ms", "20ms", "1s", "2.02s", "1.5s", "2m", "90s"]
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("").starts_with("`library`: missing"), "{}", err(""));
        assert_eq!(
            err("library = \"/nonexistent/liblauncher.so\""),
            "`library`: /nonexistent/liblauncher.so: No such file or directory (os error 2)"
        );
        assert_eq!(err("library = \"/\""), "`library`: / is not a file");
        let lib = format!("library = {:?}\n", std::env::current_exe().unwrap());
        assert_eq!(
            err(&format!("{lib}poll_interval = \"0s\"")),
            "`poll_interval`: must be at least 1ms"
        );
        assert!(err(&format!("{lib}poll_interval = 5"))
            .starts_with("`poll_interval`: expected a duration"));
        assert!(err(&format!("{lib}max_polls_per_interval = -1"))
            .starts_with("`max_polls_per_interval`: expected an integer"));
        assert!(err(&format!("{lib}options = 3")).starts_with("`options`: expected a string"));
        assert!(err(&format!("{lib}pol_interval = \"1s\"")).contains("pol_interval"));
    }
}
