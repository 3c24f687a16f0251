//! The error a plugin returns: a kind and a complete, user-facing one-line message.

use flowrun_plugin_abi as abi;

use crate::ErrorKind;

/// An error a plugin returns from a constructor or from `finish`. The message is complete and
/// user-facing; the host prints it with the file and line of the table that configured the
/// instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// The class of error.
    pub kind: ErrorKind,
    /// A one-line message for the user.
    pub message: String,
}

impl PluginError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: message.into(),
        }
    }

    /// An invalid-config error naming `key`, the offending config key: "`key`: what".
    pub fn config(key: &str, what: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::CONFIG, format!("`{key}`: {what}"))
    }

    /// An I/O or external-command failure.
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::IO, message)
    }

    /// Anything else.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OTHER, message)
    }

    /// A caught panic: "plugin panicked: MESSAGE".
    pub fn panicked(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::PANICKED, format!("plugin panicked: {message}"))
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<PluginError> for abi::PluginError {
    fn from(e: PluginError) -> Self {
        abi::PluginError::new(e.kind, e.message)
    }
}

impl From<abi::PluginError> for PluginError {
    fn from(e: abi::PluginError) -> Self {
        PluginError {
            kind: e.kind,
            message: e.message.into_string(),
        }
    }
}
