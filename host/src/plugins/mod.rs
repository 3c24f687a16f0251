//! Plugins: discovery along the search path, identification without loading, lazy loading, and
//! the `flowrun plugins` commands.
//!
//! A library is loaded into flowrun (`dlopen`, which runs its initialisers) only when a command
//! needs what it offers, and only after it was judged safe to load:
//! - its ELF headers match its size and its identity note says what it is ([`inspect`]); or,
//!   for a library without a note (built before notes existed), a child process loaded it
//!   successfully ([`probe`]);
//! - its file and directories passed the ownership and permission checks, and an installed
//!   plugin still has its recorded sha256 ([`registry`]).
//!
//! So a broken file anywhere on the plugin path costs a line in `plugins list`, never a crash
//! of `list`, `check` or a run that does not use it. `install` and `verify` always load the
//! library in a child process first: a library whose initialiser exits, aborts, segfaults or
//! hangs gets one line and a non-zero exit. Libraries are never unloaded (abi_stable keeps
//! pointers into them): updating a plugin takes a restart. docs/design/plugin-abi.md has the
//! why.

pub mod command;
#[allow(unsafe_code)] // dlopen and abi_stable's root module: the crate's only unsafe
pub mod ffi;
pub mod inspect;
pub mod probe;
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
use flowrun_plugin_sdk::identity::PluginNote;
use inspect::FileIdentity;
use probe::Probed;
use registry::{DirKind, RegistryEntry, RegistryFile, SearchDir};

/// The most characters of a string from a library (or a registry) that flowrun echoes.
const SHOWN_CHARS: usize = 200;

/// `text` cut to a sane length for a message: a library may return a 1 MB version string.
pub fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => text.to_string(),
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
    }
}

/// What flowrun knows of a library without having loaded it.
#[derive(Debug, Clone)]
pub enum Identity {
    /// From its identity note.
    Note(PluginNote),
    /// From a child process that loaded it.
    Probed(Probed),
    /// A sound library without a note, not probed yet.
    Unknown,
    /// It cannot be used: why.
    Broken(PluginLoadError),
}

impl Identity {
    fn of_file(path: &Path) -> Identity {
        match inspect::inspect(path) {
            FileIdentity::Note(n) => Identity::Note(n),
            FileIdentity::NoNote => Identity::Unknown,
            FileIdentity::Broken(detail) => Identity::Broken(PluginLoadError::Unusable {
                path: path.to_path_buf(),
                detail,
            }),
        }
    }

    /// The kinds offered, as far as known: (backends, observers).
    fn kinds(&self) -> Option<(Vec<&str>, Vec<&str>)> {
        match self {
            Identity::Note(n) => Some((
                n.backends.iter().map(|k| k.name.as_str()).collect(),
                n.observers.iter().map(|k| k.name.as_str()).collect(),
            )),
            Identity::Probed(p) => Some((
                p.backends.iter().map(|k| k.0.as_str()).collect(),
                p.observers.iter().map(|k| k.0.as_str()).collect(),
            )),
            Identity::Unknown | Identity::Broken(_) => None,
        }
    }
}

/// A plugin file found on the search path, not necessarily loaded.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The library.
    pub path: PathBuf,
    /// The directory it was found in.
    pub dir_kind: DirKind,
    /// The plugin's name: from the registry, the identity note, or the file name.
    pub name: String,
    /// The registry record, for installed plugins.
    pub entry: Option<RegistryEntry>,
    /// Whether an earlier directory holds a plugin of the same name.
    pub shadowed: bool,
    /// What is known of it.
    pub identity: Identity,
}

impl Candidate {
    /// Whether it offers backend (`observer == false`) or observer kind `kind`, as far as known
    /// without loading it; `None` when only loading it could tell.
    fn offers(&self, kind: &str, observer: bool) -> Option<bool> {
        if let Some(e) = &self.entry {
            let list = if observer { &e.observers } else { &e.backends };
            return Some(list.iter().any(|k| k == kind));
        }
        self.identity.kinds().map(|(backends, observers)| {
            (if observer { observers } else { backends }).contains(&kind)
        })
    }
}

/// Every plugin on the search path, loaded on demand.
pub struct PluginSet {
    candidates: Vec<Candidate>,
    loaded: HashMap<PathBuf, Arc<LoadedPlugin>>,
}

impl PluginSet {
    /// Reads every registry and identifies every library of the search path. Loads nothing.
    /// An unsafe or corrupt registry is an error.
    pub fn discover() -> Result<PluginSet, Error> {
        Self::discover_in(&registry::search_path())
    }

    /// Like [`PluginSet::discover`], over the given directories.
    pub fn discover_in(dirs: &[SearchDir]) -> Result<PluginSet, Error> {
        let mut candidates = Vec::new();
        let mut seen_dirs = HashSet::new();
        let mut seen_names = HashSet::new();
        for dir in dirs {
            let canonical = dir.path.canonicalize().unwrap_or_else(|_| dir.path.clone());
            if !seen_dirs.insert(canonical) {
                continue;
            }
            let mut found = Vec::new();
            if dir.kind.is_installed() {
                for entry in RegistryFile::read(&dir.path)?.plugins {
                    let path = dir.path.join(&entry.file);
                    found.push((path, Some(entry)));
                }
            } else {
                found.extend(registry::scan_dir(&dir.path).into_iter().map(|f| (f, None)));
            }
            for (path, entry) in found {
                let identity = Identity::of_file(&path);
                let name = match (&entry, &identity) {
                    (Some(e), _) => e.name.clone(),
                    (None, Identity::Note(n)) => n.name.clone(),
                    (None, _) => registry::name_from_file(&path).unwrap_or_default(),
                };
                let shadowed = !seen_names.insert(name.clone());
                candidates.push(Candidate {
                    path,
                    dir_kind: dir.kind,
                    name,
                    entry,
                    shadowed,
                    identity,
                });
            }
        }
        Ok(PluginSet {
            candidates,
            loaded: HashMap::new(),
        })
    }

    /// Every plugin found, shadowed ones included, in search order.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// Probes candidate `index` in a child process if nothing is known of it yet.
    fn identify(&mut self, index: usize) {
        let c = &mut self.candidates[index];
        if let Identity::Unknown = c.identity {
            c.identity = match probe::probe(&c.path) {
                Ok(p) => Identity::Probed(p),
                Err(e) => Identity::Broken(e),
            };
        }
    }

    /// Loads candidate `index` into flowrun (once), after every check.
    pub fn load(&mut self, index: usize) -> Result<Arc<LoadedPlugin>, PluginLoadError> {
        let path = self.candidates[index].path.clone();
        if let Some(p) = self.loaded.get(&path) {
            return Ok(p.clone());
        }
        let c = &self.candidates[index];
        check_file(&c.path, c.entry.as_ref())?;
        self.identify(index);
        let c = &self.candidates[index];
        match &c.identity {
            Identity::Broken(e) => return Err(e.clone()),
            // The version gate, before the library is opened at all.
            Identity::Note(n) => ffi::check_api_version(&n.api_version, &n.name, &n.version)?,
            Identity::Probed(_) | Identity::Unknown => {}
        }
        let plugin = Arc::new(ffi::load(&path)?);
        self.loaded.insert(path, plugin.clone());
        Ok(plugin)
    }

    /// The kinds the live (not shadowed) candidates offer. A library whose kinds are unknown
    /// (no note, not probed) offers its file name's kind both ways (by convention a bundled
    /// plugin offers a kind of its own name), unless `probe_unknown` asks to probe it and know.
    pub fn catalog(&mut self, probe_unknown: bool) -> KindCatalog {
        let mut cat = KindCatalog {
            backends: Vec::new(),
            observers: Vec::new(),
        };
        for i in 0..self.candidates.len() {
            if self.candidates[i].shadowed {
                continue;
            }
            if probe_unknown && self.candidates[i].entry.is_none() {
                self.identify(i);
            }
            let c = &self.candidates[i];
            if let Some(e) = &c.entry {
                cat.backends.extend(e.backends.iter().cloned());
                cat.observers.extend(e.observers.iter().cloned());
            } else if let Some((backends, observers)) = c.identity.kinds() {
                cat.backends.extend(backends.into_iter().map(String::from));
                cat.observers
                    .extend(observers.into_iter().map(String::from));
            } else if !probe_unknown || matches!(c.identity, Identity::Unknown) {
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
    /// candidate on the search path that offers it. Only that plugin is loaded.
    pub fn plugin_for(&mut self, kind: &str, observer: bool) -> Result<Arc<LoadedPlugin>, Error> {
        let what = if observer { "observer" } else { "backend" };
        let live: Vec<usize> = (0..self.candidates.len())
            .filter(|i| !self.candidates[*i].shadowed)
            .collect();
        // First the candidates known to offer it, or named after it (probed to know).
        for &i in &live {
            if self.candidates[i].name == kind {
                self.identify(i);
            }
            let c = &self.candidates[i];
            let broken_namesake = matches!(c.identity, Identity::Broken(_)) && c.name == kind;
            if c.offers(kind, observer) == Some(true) || broken_namesake {
                let p = self.load(i)?;
                let list = if observer { &p.observers } else { &p.backends };
                if list.iter().any(|k| k.0 == kind) {
                    return Ok(p);
                }
                return Err(Error::Instance {
                    location: None,
                    message: format!(
                        "plugin `{}` ({}) does not offer the {what} kind `{kind}` its registry entry or note promises; reinstall it",
                        p.name,
                        self.candidates[i].path.display()
                    ),
                });
            }
        }
        // Then the libraries whose kinds only a probe can tell.
        for &i in &live {
            if matches!(self.candidates[i].identity, Identity::Unknown) {
                self.identify(i);
                if self.candidates[i].offers(kind, observer) == Some(true) {
                    return Ok(self.load(i)?);
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
                "no plugin offers {what} kind `{kind}`; available: {}; install one with `flowrun plugins install FILE`",
                if available.is_empty() { "none".to_string() } else { available.join(", ") }
            ),
        })
    }
}

/// The checks made before a file is trusted, cheapest first: ownership and permissions of the
/// file and its directories; the recorded sha256 for an installed plugin (before `dlopen`).
pub fn check_file(path: &Path, entry: Option<&RegistryEntry>) -> Result<(), PluginLoadError> {
    registry::check_ownership(path)?;
    if let Some(entry) = entry {
        let actual = registry::sha256_file(path).map_err(|e| PluginLoadError::Io {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        if actual != entry.sha256 {
            return Err(PluginLoadError::HashMismatch {
                path: path.to_path_buf(),
                expected: shown(&entry.sha256),
                actual,
            });
        }
    }
    Ok(())
}

/// Judges a library as `install` and `verify` must: its file identity, then a child process
/// that loads and initialises it. Returns what the child learnt.
pub fn judge(path: &Path) -> Result<Probed, PluginLoadError> {
    let unusable = |detail: String| PluginLoadError::Unusable {
        path: path.to_path_buf(),
        detail,
    };
    match inspect::inspect(path) {
        FileIdentity::Broken(why) => return Err(unusable(why)),
        FileIdentity::Note(n) => ffi::check_api_version(&n.api_version, &n.name, &n.version)?,
        FileIdentity::NoNote => {}
    }
    probe::probe(path)
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

/// `flowrun plugins install FILE`: judges the file (in a child process), copies it into the
/// scope's directory and records it. Returns the registry entry and the directory.
pub fn install(file: &Path, scope: Scope) -> Result<(RegistryEntry, PathBuf), Error> {
    let meta = std::fs::metadata(file)
        .map_err(|e| Error::Registry(format!("{}: cannot read: {e}", file.display())))?;
    if !meta.is_file() {
        return Err(Error::Registry(format!("{}: not a file", file.display())));
    }
    let plugin = judge(file)?;
    if !registry::is_bare_file_name(&plugin.name) || plugin.name.is_empty() {
        return Err(Error::Registry(format!(
            "{}: the plugin's name {:?} cannot name a file",
            file.display(),
            plugin.name
        )));
    }
    let dir = scope.dir();
    if !dir.exists() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Registry(format!("{}: cannot create: {e}", dir.display())))?;
        // Whatever the umask: a group-writable directory would be refused.
        set_mode(&dir, 0o755)?;
    }
    // Read (and so check) the registry before anything is written into its directory.
    let mut reg = RegistryFile::read(&dir)?;
    let file_name = format!("libflowrun_plugin_{}.so", plugin.name);
    let dest = dir.join(&file_name);
    // Atomically: a running flowrun never sees half a library.
    flowrun_plugin_sdk::fs::write_atomically_with(&dest, 0o755, |out| {
        std::io::copy(&mut std::fs::File::open(file)?, out).map(drop)
    })
    .map_err(|e| {
        Error::Registry(format!(
            "{}: cannot copy to {}: {e}",
            file.display(),
            dir.display()
        ))
    })?;
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
    reg.plugins.retain(|p| p.name != entry.name);
    reg.plugins.push(entry.clone());
    reg.write(&dir)?;
    Ok((entry, dir))
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
    for s in &scopes {
        let dir = s.dir();
        let mut reg = RegistryFile::read(&dir)?;
        if let Some(i) = reg.plugins.iter().position(|p| p.name == name) {
            let entry = reg.plugins.remove(i);
            reg.write(&dir)?;
            let _ = std::fs::remove_file(dir.join(&entry.file));
            return Ok(dir);
        }
    }
    // Not installed: say what it is instead, if it is on the search path at all.
    let set = PluginSet::discover()?;
    let found = set
        .candidates()
        .iter()
        .find(|c| c.name == name && c.entry.is_none());
    Err(Error::Registry(match found {
        Some(c) if c.dir_kind == DirKind::Bundled => format!(
            "`{name}` is bundled with flowrun ({}), not installed, so it cannot be removed; a plugin of the same name installed with `flowrun plugins install` takes its place",
            c.path.display()
        ),
        Some(c) => format!(
            "`{name}` is found on FLOWRUN_PLUGIN_PATH ({}), not installed: delete the file or take its directory off FLOWRUN_PLUGIN_PATH",
            c.path.display()
        ),
        None => format!(
            "no installed plugin named `{}`; `flowrun plugins list` shows what is installed",
            shown(name)
        ),
    }))
}

/// One kind of a row of `flowrun plugins list`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KindRow {
    /// The kind's name.
    pub name: String,
    /// Its description (empty when unknown).
    pub description: String,
}

/// A kind of a plugin that a plugin earlier on the search path offers too, and so serves: a
/// flow naming the kind gets the earlier plugin (`plugin_for` takes the first that offers it).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TakenKind {
    /// The kind's name.
    pub kind: String,
    /// `backend` or `observer`.
    pub role: &'static str,
    /// The plugin that serves it.
    pub served_by: String,
}

/// One row of `flowrun plugins list`.
#[derive(Debug, Serialize)]
pub struct ListRow {
    /// The plugin's name.
    pub name: String,
    /// Its version (empty when unknown).
    pub version: String,
    /// The plugin API version it was built against (empty when unknown).
    pub api_version: String,
    /// Where it is.
    pub path: PathBuf,
    /// Which directory kind.
    pub source: DirKind,
    /// How flowrun knows what it is: `note` (its identity note), `probe` (a child process
    /// loaded it), or null (it could not be identified).
    pub identified_by: Option<&'static str>,
    /// Backend kinds.
    pub backends: Vec<KindRow>,
    /// Observer kinds.
    pub observers: Vec<KindRow>,
    /// Shadowed by an earlier plugin of the same name.
    pub shadowed: bool,
    /// Its kinds that an earlier plugin of another name offers too (and so serves).
    pub kinds_taken: Vec<TakenKind>,
    /// Why it cannot be used, if it cannot.
    pub error: Option<String>,
    /// sha256 as recorded (installed plugins).
    pub sha256: Option<String>,
    /// When installed.
    pub installed_at: Option<String>,
}

/// Describes every plugin on the search path without loading any into flowrun (libraries
/// without a note are probed in a child process).
pub fn list(set: &mut PluginSet) -> Vec<ListRow> {
    let mut rows = rows_of(set);
    mark_taken_kinds(&mut rows);
    rows
}

/// Notes in each row the kinds that an earlier live plugin offers too: a site plugin offering
/// `local` takes every flow's default backend from the bundled one, which `list` must show.
/// A broken or refused plugin still takes its kinds (a run that needs one fails on it, it does
/// not fall through to the next), so it counts.
pub(crate) fn mark_taken_kinds(rows: &mut [ListRow]) {
    let mut first: HashMap<(&'static str, String), String> = HashMap::new();
    for row in rows.iter_mut().filter(|r| !r.shadowed) {
        let kinds = (row.backends.iter().map(|k| ("backend", &k.name)))
            .chain(row.observers.iter().map(|k| ("observer", &k.name)));
        for (role, kind) in kinds {
            match first.get(&(role, kind.clone())) {
                Some(by) if *by != row.name => row.kinds_taken.push(TakenKind {
                    kind: kind.clone(),
                    role,
                    served_by: by.clone(),
                }),
                Some(_) => {}
                None => {
                    first.insert((role, kind.clone()), row.name.clone());
                }
            }
        }
    }
}

fn rows_of(set: &mut PluginSet) -> Vec<ListRow> {
    (0..set.candidates.len())
        .map(|i| {
            let checked = {
                let c = &set.candidates[i];
                check_file(&c.path, c.entry.as_ref())
            };
            if checked.is_ok() {
                set.identify(i);
            }
            let c = &set.candidates[i];
            let kinds = |v: Vec<(String, String)>| {
                v.into_iter()
                    .map(|(name, description)| KindRow { name, description })
                    .collect::<Vec<_>>()
            };
            let (version, api_version, identified_by, backends, observers, mut error) =
                match &c.identity {
                    Identity::Note(n) => (
                        n.version.clone(),
                        n.api_version.clone(),
                        Some("note"),
                        kinds(
                            n.backends
                                .iter()
                                .map(|k| (k.name.clone(), k.description.clone()))
                                .collect(),
                        ),
                        kinds(
                            n.observers
                                .iter()
                                .map(|k| (k.name.clone(), k.description.clone()))
                                .collect(),
                        ),
                        ffi::check_api_version(&n.api_version, &n.name, &n.version)
                            .err()
                            .map(|e| e.to_string()),
                    ),
                    Identity::Probed(p) => (
                        p.version.clone(),
                        p.api_version.clone(),
                        Some("probe"),
                        kinds(p.backends.clone()),
                        kinds(p.observers.clone()),
                        None,
                    ),
                    Identity::Broken(e) => (
                        String::new(),
                        String::new(),
                        None,
                        Vec::new(),
                        Vec::new(),
                        Some(e.to_string()),
                    ),
                    Identity::Unknown => Default::default(),
                };
            if let Err(e) = checked {
                error = Some(e.to_string());
            }
            // The row shows the file already.
            let prefix = format!("{}: ", c.path.display());
            let error = error.map(|e| e.strip_prefix(&prefix).map(str::to_string).unwrap_or(e));
            let (version, api_version, backends, observers) = match (&c.entry, identified_by) {
                // An installed plugin that could not be identified: what the registry says.
                (Some(e), None) => (
                    e.version.clone(),
                    e.api_version.clone(),
                    e.backends
                        .iter()
                        .map(|k| KindRow {
                            name: k.clone(),
                            description: String::new(),
                        })
                        .collect(),
                    e.observers
                        .iter()
                        .map(|k| KindRow {
                            name: k.clone(),
                            description: String::new(),
                        })
                        .collect(),
                ),
                _ => (version, api_version, backends, observers),
            };
            ListRow {
                name: c.name.clone(),
                version,
                api_version,
                path: c.path.clone(),
                source: c.dir_kind,
                identified_by,
                backends,
                observers,
                shadowed: c.shadowed,
                kinds_taken: Vec::new(),
                error,
                sha256: c.entry.as_ref().map(|e| e.sha256.clone()),
                installed_at: c.entry.as_ref().map(|e| e.installed_at.clone()),
            }
        })
        .collect()
}

/// The outcome of `flowrun plugins verify` for one installed plugin.
pub struct Verified {
    /// The plugin's name as recorded.
    pub name: String,
    /// The library.
    pub path: PathBuf,
    /// Its version, or why it fails.
    pub result: Result<String, PluginLoadError>,
}

/// `flowrun plugins verify`: every installed plugin re-hashed, re-checked and loaded in a child
/// process.
pub fn verify(set: &PluginSet) -> Vec<Verified> {
    set.candidates()
        .iter()
        .filter(|c| c.entry.is_some())
        .map(|c| Verified {
            name: c.name.clone(),
            path: c.path.clone(),
            result: check_file(&c.path, c.entry.as_ref())
                .and_then(|()| judge(&c.path))
                .map(|p| p.version),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_from_libraries_are_cut() {
        assert_eq!(shown("short"), "short");
        let huge = "9".repeat(1 << 20);
        let s = shown(&huge);
        assert!(s.len() < 300, "{}", s.len());
        assert!(s.ends_with("… (1048576 bytes)"), "{s}");
        let wide = "é".repeat(300);
        assert!(shown(&wide).starts_with(&"é".repeat(200)));
    }
}
