//! Plugins: discovery along the search path, lazy loading, and the `flowrun plugins` commands.
//!
//! Loading is lazy: a run loads only the plugins that offer the kinds its flow uses. Libraries
//! are never unloaded (abi_stable keeps pointers into them): updating a plugin takes a restart.

pub mod ffi;
pub mod registry;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;

use crate::{
    errors::{Error, PluginLoadError},
    flow::KindCatalog,
};
pub use ffi::LoadedPlugin;
use registry::{DirKind, RegistryEntry, RegistryFile, SearchDir};

/// A plugin file found on the search path, not necessarily loaded.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The library.
    pub path: PathBuf,
    /// The directory it was found in.
    pub dir_kind: DirKind,
    /// The plugin's name (from the registry, or the file name of a scanned library).
    pub name: String,
    /// The registry record, for installed plugins.
    pub entry: Option<RegistryEntry>,
    /// Whether an earlier directory holds a plugin of the same name.
    pub shadowed: bool,
}

/// Every plugin on the search path, loaded on demand.
pub struct PluginSet {
    candidates: Vec<Candidate>,
    loaded: HashMap<PathBuf, Arc<LoadedPlugin>>,
    /// Registry problems found while discovering (reported when they matter).
    pub warnings: Vec<String>,
}

impl PluginSet {
    /// Reads every registry and scans every scanned directory of the search path. Loads nothing.
    pub fn discover() -> PluginSet {
        Self::discover_in(&registry::search_path())
    }

    /// Like [`PluginSet::discover`], over the given directories.
    pub fn discover_in(dirs: &[SearchDir]) -> PluginSet {
        let mut candidates = Vec::new();
        let mut warnings = Vec::new();
        let mut seen_dirs = HashSet::new();
        let mut seen_names = HashSet::new();
        for dir in dirs {
            let canonical = dir.path.canonicalize().unwrap_or_else(|_| dir.path.clone());
            if !seen_dirs.insert(canonical) {
                continue;
            }
            let mut found = Vec::new();
            if dir.kind.is_installed() {
                match RegistryFile::read(&dir.path) {
                    Ok(reg) => {
                        for entry in reg.plugins {
                            found.push((
                                dir.path.join(&entry.file),
                                entry.name.clone(),
                                Some(entry),
                            ));
                        }
                    }
                    Err(e) => warnings.push(e.to_string()),
                }
            } else {
                for file in registry::scan_dir(&dir.path) {
                    if let Some(name) = registry::name_from_file(&file) {
                        found.push((file, name, None));
                    }
                }
            }
            for (path, name, entry) in found {
                let shadowed = !seen_names.insert(name.clone());
                candidates.push(Candidate {
                    path,
                    dir_kind: dir.kind,
                    name,
                    entry,
                    shadowed,
                });
            }
        }
        PluginSet {
            candidates,
            loaded: HashMap::new(),
            warnings,
        }
    }

    /// Every plugin found, shadowed ones included, in search order.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// Loads one candidate (once), after the ownership, permission and hash checks.
    pub fn load(&mut self, index: usize) -> Result<Arc<LoadedPlugin>, PluginLoadError> {
        let c = &self.candidates[index];
        if let Some(p) = self.loaded.get(&c.path) {
            return Ok(p.clone());
        }
        let plugin = Arc::new(load_checked(&c.path, c.entry.as_ref())?);
        self.loaded.insert(c.path.clone(), plugin.clone());
        Ok(plugin)
    }

    /// The kinds each live (not shadowed) candidate is known to offer without loading it:
    /// recorded kinds for installed plugins; the plugin's name for scanned ones (by convention
    /// a bundled plugin offers a kind of its own name), unless `load_scanned` asks to load them
    /// and read their manifests.
    pub fn catalog(&mut self, load_scanned: bool) -> KindCatalog {
        let mut cat = KindCatalog {
            backends: Vec::new(),
            observers: Vec::new(),
        };
        for i in 0..self.candidates.len() {
            let c = &self.candidates[i];
            if c.shadowed {
                continue;
            }
            if let Some(e) = &c.entry {
                cat.backends.extend(e.backends.iter().cloned());
                cat.observers.extend(e.observers.iter().cloned());
            } else if load_scanned {
                if let Ok(p) = self.load(i) {
                    cat.backends.extend(p.backends.iter().map(|k| k.0.clone()));
                    cat.observers
                        .extend(p.observers.iter().map(|k| k.0.clone()));
                }
            } else {
                // Unknown until loaded: offer the name both ways; the real check happens when
                // the instance is created.
                cat.backends.push(c.name.clone());
                cat.observers.push(c.name.clone());
            }
        }
        cat.backends.sort();
        cat.backends.dedup();
        cat.observers.sort();
        cat.observers.dedup();
        cat
    }

    /// The plugin offering backend (`observer == false`) or observer kind `kind`: the first live
    /// candidate on the search path that offers it.
    pub fn plugin_for(&mut self, kind: &str, observer: bool) -> Result<Arc<LoadedPlugin>, Error> {
        let offers = |p: &LoadedPlugin| {
            let list = if observer { &p.observers } else { &p.backends };
            list.iter().any(|k| k.0 == kind)
        };
        // First the candidates known to offer it (registry) or named after it (convention).
        for i in 0..self.candidates.len() {
            let c = &self.candidates[i];
            if c.shadowed {
                continue;
            }
            let likely = match &c.entry {
                Some(e) => (if observer { &e.observers } else { &e.backends })
                    .iter()
                    .any(|k| k == kind),
                None => c.name == kind,
            };
            if likely {
                let p = self.load(i)?;
                if offers(&p) {
                    return Ok(p);
                }
            }
        }
        // Then every scanned library, in order.
        for i in 0..self.candidates.len() {
            if self.candidates[i].shadowed || self.candidates[i].entry.is_some() {
                continue;
            }
            if let Ok(p) = self.load(i) {
                if offers(&p) {
                    return Ok(p);
                }
            }
        }
        let cat = self.catalog(true);
        let available = if observer {
            cat.observers
        } else {
            cat.backends
        };
        Err(Error::Instance {
            location: None,
            message: format!(
                "no plugin offers {} kind `{kind}`; available: {}; install one with `flowrun plugins install FILE`",
                if observer { "observer" } else { "backend" },
                if available.is_empty() { "none".to_string() } else { available.join(", ") }
            ),
        })
    }
}

/// Loads a library after the safety checks: ownership and permissions always; the recorded
/// sha256 for an installed plugin.
pub fn load_checked(
    path: &Path,
    entry: Option<&RegistryEntry>,
) -> Result<LoadedPlugin, PluginLoadError> {
    registry::check_ownership(path)?;
    if let Some(entry) = entry {
        let actual = registry::sha256_file(path).map_err(|e| PluginLoadError::Io {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        if actual != entry.sha256 {
            return Err(PluginLoadError::HashMismatch {
                path: path.to_path_buf(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
    }
    ffi::load(path)
}

// ---------------------------------------------------------------------------------------------
// `flowrun plugins ...`
// ---------------------------------------------------------------------------------------------

/// Where `install` and `remove` act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The user's directory.
    User,
    /// The site's directory.
    Site,
}

impl Scope {
    fn dir(self) -> PathBuf {
        match self {
            Scope::User => registry::user_dir(),
            Scope::Site => registry::site_dir(),
        }
    }
}

/// `flowrun plugins install FILE`: loads the file to validate it, copies it into the scope's
/// directory and records it. Returns the registry entry.
pub fn install(file: &Path, scope: Scope) -> Result<RegistryEntry, Error> {
    let meta = std::fs::metadata(file)
        .map_err(|e| Error::Registry(format!("{}: cannot read: {e}", file.display())))?;
    if !meta.is_file() {
        return Err(Error::Registry(format!("{}: not a file", file.display())));
    }
    // Validate before copying: version, layout, manifest.
    let plugin = ffi::load(file)?;
    let dir = scope.dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Registry(format!("{}: cannot create: {e}", dir.display())))?;
    set_mode(&dir, 0o755)?;
    let file_name = format!("libflowrun_plugin_{}.so", plugin.name);
    let dest = dir.join(&file_name);
    // Copy to a temporary name then rename, so a running flowrun never sees half a library.
    let tmp = dir.join(format!(".{file_name}.tmp"));
    std::fs::copy(file, &tmp).map_err(|e| {
        Error::Registry(format!(
            "{}: cannot copy to {}: {e}",
            file.display(),
            dir.display()
        ))
    })?;
    set_mode(&tmp, 0o755)?;
    std::fs::rename(&tmp, &dest)
        .map_err(|e| Error::Registry(format!("{}: {e}", dest.display())))?;
    let sha256 = registry::sha256_file(&dest)
        .map_err(|e| Error::Registry(format!("{}: {e}", dest.display())))?;
    let entry = RegistryEntry {
        name: plugin.name.clone(),
        version: plugin.version.clone(),
        api_version: plugin.api_version.clone(),
        file: file_name,
        sha256,
        backends: plugin.backends.iter().map(|k| k.0.clone()).collect(),
        observers: plugin.observers.iter().map(|k| k.0.clone()).collect(),
        installed_at: registry::now_rfc3339(),
    };
    let mut reg = RegistryFile::read(&dir)?;
    reg.plugins.retain(|p| p.name != entry.name);
    reg.plugins.push(entry.clone());
    reg.write(&dir)?;
    Ok(entry)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::Registry(format!("{}: cannot set permissions: {e}", path.display())))
}

/// `flowrun plugins remove NAME`: from the user directory, else the site directory (or the
/// given scope). Returns the directory it was removed from.
pub fn remove(name: &str, scope: Option<Scope>) -> Result<PathBuf, Error> {
    let scopes = match scope {
        Some(s) => vec![s],
        None => vec![Scope::User, Scope::Site],
    };
    for s in scopes {
        let dir = s.dir();
        let mut reg = RegistryFile::read(&dir)?;
        if let Some(i) = reg.plugins.iter().position(|p| p.name == name) {
            let entry = reg.plugins.remove(i);
            reg.write(&dir)?;
            let _ = std::fs::remove_file(dir.join(&entry.file));
            return Ok(dir);
        }
    }
    Err(Error::Registry(format!(
        "no installed plugin named `{name}`; `flowrun plugins list` shows what is installed"
    )))
}

/// One row of `flowrun plugins list`.
#[derive(Debug, Serialize)]
pub struct ListRow {
    /// The plugin's name.
    pub name: String,
    /// Its version (empty if it failed to load).
    pub version: String,
    /// The API version it was built against.
    pub api_version: String,
    /// Where it is.
    pub path: PathBuf,
    /// Which directory kind.
    pub source: DirKind,
    /// Backend kinds: (name, description).
    pub backends: Vec<(String, String)>,
    /// Observer kinds.
    pub observers: Vec<(String, String)>,
    /// Shadowed by an earlier plugin of the same name.
    pub shadowed: bool,
    /// The load error, if it does not load.
    pub error: Option<String>,
    /// sha256 as recorded (installed plugins).
    pub sha256: Option<String>,
    /// When installed.
    pub installed_at: Option<String>,
}

/// Lists (and loads, to describe) every plugin on the search path.
pub fn list(set: &mut PluginSet) -> Vec<ListRow> {
    (0..set.candidates.len())
        .map(|i| {
            let c = set.candidates[i].clone();
            let loaded = set.load(i);
            let (version, api_version, backends, observers, error) = match &loaded {
                Ok(p) => (
                    p.version.clone(),
                    p.api_version.clone(),
                    p.backends.clone(),
                    p.observers.clone(),
                    None,
                ),
                Err(e) => {
                    let (v, a) = c
                        .entry
                        .as_ref()
                        .map(|e| (e.version.clone(), e.api_version.clone()))
                        .unwrap_or_default();
                    (v, a, Vec::new(), Vec::new(), Some(e.to_string()))
                }
            };
            ListRow {
                name: c.name,
                version,
                api_version,
                path: c.path,
                source: c.dir_kind,
                backends,
                observers,
                shadowed: c.shadowed,
                error,
                sha256: c.entry.as_ref().map(|e| e.sha256.clone()),
                installed_at: c.entry.as_ref().map(|e| e.installed_at.clone()),
            }
        })
        .collect()
}
