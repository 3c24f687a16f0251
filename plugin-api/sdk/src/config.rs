//! Config parsing for plugins: the host hands a backend or observer its table as TOML text;
//! these turn it into a typed config whose every error names the offending key, and parse
//! durations one way for every plugin.
//!
//! ```
//! use std::time::Duration;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     wrapper: Vec<String>,
//!     #[serde(default, deserialize_with = "flowrun_plugin_sdk::config::optional_duration")]
//!     kill_grace: Option<Duration>,
//! }
//!
//! let c: Config = flowrun_plugin_sdk::parse_config("wrapper = [\"env\"]\nkill_grace = \"5s\"").unwrap();
//! assert_eq!(c.kill_grace, Some(Duration::from_secs(5)));
//! let e = flowrun_plugin_sdk::parse_config::<Config>("wrapper = []\nkill_grace = \"soon\"").err().unwrap();
//! assert!(e.message.starts_with("`kill_grace`: invalid duration \"soon\""), "{e}");
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{ErrorKind, PluginError};

/// The longest duration any config accepts: longer ones are surely mistakes, and adding them to
/// a clock would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a backend or observer config, mapping every error to a config error that names the
/// key. Use `#[serde(deny_unknown_fields)]` on `T` so that typos are caught.
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

/// Parses a duration such as `"30m"`, `"2s"`, `"1h 30m"` or `"500ms"`: the one syntax every
/// plugin accepts. The error does not name a key; [`parse_duration`] does.
pub fn duration_from_str(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?}: {e} (write e.g. \"2s\", \"30m\")"))?;
    if d > MAX_DURATION {
        return Err(format!("invalid duration {text:?}: longer than 100 years"));
    }
    Ok(d)
}

/// Parses the duration `text` of config key `key`.
pub fn parse_duration(key: &str, text: &str) -> Result<Duration, PluginError> {
    duration_from_str(text).map_err(|e| PluginError::config(key, e))
}

/// A serde `deserialize_with` function for a duration written as text (`"2s"`).
pub fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    duration_from_str(&text).map_err(serde::de::Error::custom)
}

/// [`duration`] for an optional key; use it with `#[serde(default)]`.
pub fn optional_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(de)?;
    text.map(|t| duration_from_str(&t).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(deserialize_with = "duration")]
        every: Duration,
        #[serde(default, deserialize_with = "optional_duration")]
        grace: Option<Duration>,
        #[serde(default)]
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        count: u32,
    }

    fn error(text: &str) -> String {
        let e = parse_config::<Config>(text).unwrap_err();
        assert_eq!(e.kind, ErrorKind::CONFIG);
        assert!(!e.message.contains('\n'), "{e}");
        e.message
    }

    #[test]
    fn durations_parse_one_way() {
        let c: Config = parse_config("every = \"1h 30m\"\ngrace = \"250ms\"").unwrap();
        assert_eq!(c.every, Duration::from_secs(5400));
        assert_eq!(c.grace, Some(Duration::from_millis(250)));
        let c: Config = parse_config("every = \"0s\"\nnested = { count = 2 }").unwrap();
        assert_eq!((c.every, c.grace), (Duration::ZERO, None));
        assert_eq!(c.nested.map(|n| n.count), Some(2));
        assert_eq!(
            parse_duration("timeout", " 2s ").unwrap(),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn every_error_names_its_key() {
        assert!(error("every = \"soon\"").starts_with("`every`: invalid duration \"soon\""));
        assert!(error("every = 5").starts_with("`every`: "));
        assert!(error("every = \"18446744073709551615s\"").starts_with("`every`: "));
        assert!(error("every = \"101y\"").contains("longer than 100 years"));
        assert!(error("every = \"1s\"\nnested = { count = -1 }").starts_with("`nested.count`: "));
        assert!(error("every = \"1s\"\nevry = 1").contains("`evry`"));
        assert!(error("every = ").len() > 5);
        let e = parse_duration("kill_grace", "later").unwrap_err();
        assert!(
            e.message
                .starts_with("`kill_grace`: invalid duration \"later\""),
            "{e}"
        );
    }
}
