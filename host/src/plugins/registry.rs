//! The plugin registry: where plugins are searched for, what `registry.toml` records, and the
//! safety checks made before a library is loaded.
//!
//! Search path, first match wins:
//! 1. each directory of `FLOWRUN_PLUGIN_PATH` (scanned: every `libflowrun_plugin_*.so` in it);
//! 2. the user directory, `$XDG_DATA_HOME/flowrun/plugins` (default `~/.local/share/...`);
//! 3. the site directory, `$FLOWRUN_SITE_PLUGIN_DIR` (default `/usr/local/lib/flowrun/plugins`);
//! 4. the bundled plugins: the directory of the `flowrun` executable (so that a plain
//!    `cargo build` works), then `<prefix>/lib/flowrun/plugins` for an installed binary
//!    (scanned).
//!
//! The user and site directories are *installed* directories: they hold a `registry.toml`
//! recording each plugin's name, version, API version, file, sha256, kinds and install time,
//! written by `flowrun plugins install`. A file whose hash no longer matches is refused.
//!
//! Whoever can write a plugin, or the registry that vouches for it, can run code as every
//! flowrun user, so before anything is trusted: a plugin file, its directory, an installed
//! directory and its `registry.toml` must be owned by root or the user and not writable by
//! group or others, and no directory above them may be world-writable without the sticky bit
//! (anyone could swap the directory). A registry names its files by bare name inside its own
//! directory. A registry that is unsafe or cannot be parsed is an error for every command, not
//! silently skipped: a flow would otherwise fail with "unknown kind" for an installed plugin.

use std::{
    io::Read,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use flowrun_plugin_sdk::fs::write_atomically;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::errors::{Error, PluginLoadError};

/// The registry file of an installed directory.
pub const REGISTRY_FILE: &str = "registry.toml";

/// What kind of directory of the search path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DirKind {
    /// From `FLOWRUN_PLUGIN_PATH` (scanned).
    Path,
    /// The user's installed directory.
    User,
    /// The site's installed directory.
    Site,
    /// Bundled with the binary (scanned).
    Bundled,
}

impl DirKind {
    /// The lower-case word `plugins list` and `--json` show.
    pub fn as_str(self) -> &'static str {
        match self {
            DirKind::Path => "path",
            DirKind::User => "user",
            DirKind::Site => "site",
            DirKind::Bundled => "bundled",
        }
    }

    /// Whether the directory holds a registry.toml (else it is scanned).
    pub fn is_installed(self) -> bool {
        matches!(self, DirKind::User | DirKind::Site)
    }
}

/// One directory of the search path.
#[derive(Debug, Clone)]
pub struct SearchDir {
    /// Where.
    pub path: PathBuf,
    /// Which kind.
    pub kind: DirKind,
}

/// The search path, in order.
pub fn search_path() -> Vec<SearchDir> {
    let mut dirs = Vec::new();
    if let Some(p) = std::env::var_os("FLOWRUN_PLUGIN_PATH") {
        for d in std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(SearchDir {
                path: d,
                kind: DirKind::Path,
            });
        }
    }
    dirs.push(SearchDir {
        path: user_dir(),
        kind: DirKind::User,
    });
    dirs.push(SearchDir {
        path: site_dir(),
        kind: DirKind::Site,
    });
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(SearchDir {
            path: exe_dir.clone(),
            kind: DirKind::Bundled,
        });
        if let Some(prefix) = exe_dir.parent() {
            let installed = prefix.join("lib/flowrun/plugins");
            if exe_dir.ends_with("bin") {
                dirs.push(SearchDir {
                    path: installed,
                    kind: DirKind::Bundled,
                });
            }
        }
    }
    dirs
}

/// The user's installed-plugin directory.
pub fn user_dir() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/"));
            home.join(".local/share")
        });
    data.join("flowrun/plugins")
}

/// The site's installed-plugin directory.
pub fn site_dir() -> PathBuf {
    std::env::var_os("FLOWRUN_SITE_PLUGIN_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/lib/flowrun/plugins"))
}

/// One plugin as recorded in a registry.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// The plugin API version it was built against.
    pub api_version: String,
    /// The library's file name, in the registry's directory.
    pub file: String,
    /// The file's sha256, hex.
    pub sha256: String,
    /// Backend kinds offered.
    #[serde(default)]
    pub backends: Vec<String>,
    /// Observer kinds offered.
    #[serde(default)]
    pub observers: Vec<String>,
    /// When it was installed (RFC 3339).
    pub installed_at: String,
}

/// A registry.toml.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// The plugins.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<RegistryEntry>,
}

impl RegistryFile {
    /// Reads `<dir>/registry.toml` after the safety checks of the directory and the file; a
    /// missing directory or file is an empty registry. Every error is one line.
    pub fn read(dir: &Path) -> Result<RegistryFile, Error> {
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RegistryFile::default())
            }
            _ => check_trusted(dir, "plugin directory").map_err(refused)?,
        }
        let path = dir.join(REGISTRY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RegistryFile::default())
            }
            Err(e) => return Err(Error::Registry(format!("{}: {e}", path.display()))),
        };
        check_trusted(&path, "registry").map_err(refused)?;
        let invalid = |what: String| {
            Error::Registry(format!(
                "{}: invalid registry: {what}; fix or delete it and reinstall the plugins",
                path.display()
            ))
        };
        let reg: RegistryFile = toml::from_str(&text)
            .map_err(|e| invalid(super::shown(&e.message().trim().replace('\n', " "))))?;
        for entry in &reg.plugins {
            if !is_bare_file_name(&entry.file) {
                return Err(invalid(format!(
                    "plugin `{}` has file = {:?}, which is not a file name inside the registry's directory",
                    super::shown(&entry.name),
                    super::shown(&entry.file)
                )));
            }
        }
        Ok(reg)
    }

    /// Writes `<dir>/registry.toml` atomically (mode 0644).
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let text = toml::to_string_pretty(self).map_err(|e| Error::Registry(e.to_string()))?;
        write_atomically(&dir.join(REGISTRY_FILE), text.as_bytes()).map_err(|e| {
            Error::Registry(format!("{}: cannot write the registry: {e}", dir.display()))
        })
    }
}

/// Whether `name` names a file inside a directory: not empty, no `/` or NUL, not `.` or `..`.
pub fn is_bare_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fn refused(e: PluginLoadError) -> Error {
    Error::Registry(e.to_string())
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Refuses a plugin file, or its directory, that is not trusted (see [`check_trusted`]):
/// whoever can write it can run code as every flowrun user.
pub fn check_ownership(file: &Path) -> Result<(), PluginLoadError> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    check_trusted(
        if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        },
        "plugin directory",
    )?;
    check_trusted(file, "plugin file")
}

/// Refuses `path` (a plugin file, a plugin directory or a registry, named by `what`) when it
/// is writable by group or others or owned by another non-root user, and when a directory
/// above it is world-writable without the sticky bit (anyone could rename it and put another
/// in its place).
pub fn check_trusted(path: &Path, what: &str) -> Result<(), PluginLoadError> {
    let io = |path: &Path, e: std::io::Error| PluginLoadError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
    let mode = meta.mode();
    if mode & 0o022 != 0 {
        return Err(PluginLoadError::Permissions {
            path: path.to_path_buf(),
            why: format!(
                "the {what} is writable by group or others (mode {:o})",
                mode & 0o7777
            ),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(PluginLoadError::Permissions {
            path: path.to_path_buf(),
            why: format!("the {what} is owned by another user (uid {})", meta.uid()),
        });
    }
    let canonical = path.canonicalize().map_err(|e| io(path, e))?;
    for ancestor in canonical.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor).map_err(|e| io(ancestor, e))?;
        let mode = meta.permissions().mode();
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(PluginLoadError::Permissions {
                path: ancestor.to_path_buf(),
                why: format!(
                    "a directory above the {what} {} is world-writable without the sticky bit (mode {:o})",
                    path.display(),
                    mode & 0o7777
                ),
            });
        }
    }
    Ok(())
}

/// The plugin libraries of a scanned directory (`libflowrun_plugin_*.so`), sorted.
pub fn scan_dir(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libflowrun_plugin_") && n.ends_with(".so"))
        })
        .collect();
    files.sort();
    files
}

/// The plugin name a scanned file is expected to hold: `libflowrun_plugin_NAME.so` -> NAME.
pub fn name_from_file(path: &Path) -> Option<String> {
    let n = path.file_name()?.to_str()?;
    Some(
        n.strip_prefix("libflowrun_plugin_")?
            .strip_suffix(".so")?
            .to_string(),
    )
}

/// The current time, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
