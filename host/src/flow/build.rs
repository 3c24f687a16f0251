//! From raw files to a [`Flow`]: include merging, backend/resource resolution, matrix
//! expansion, dependency resolution and graph checks.

use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use globset::GlobBuilder;

use super::{
    diag::{
        did_you_mean, did_you_mean_help, fmt_location, nearest, shorten, Diagnostic, SourceMap,
        MAX_SHOWN,
    },
    graph,
    model::{BackendInstance, Command, Flow, Job, Location, ObserverInstance},
    names,
    parse::{fmt_count, parse_file, RawCmd, RawFile, RawInstance},
    source::{read_flow_file, ReadError},
    KindCatalog, LoadOptions, MAX_JOBS,
};

/// At most this many diagnostics of one repetitive kind (duplicates, unresolved needs, ...).
const MAX_REPEATED: usize = 20;

/// The expansions of one `[[job]]` entry that have the same problem: the first is described, the
/// others counted (a million-job matrix gets one message).
#[derive(Default)]
struct BadExpansions {
    first: Option<String>,
    count: usize,
}

impl BadExpansions {
    fn add(&mut self, describe: impl FnOnce() -> String) {
        if self.first.is_none() {
            self.first = Some(describe());
        }
        self.count += 1;
    }

    /// ` (and N other expansions of this entry)`, or nothing.
    fn others(&self) -> String {
        match self.count {
            0 | 1 => String::new(),
            2 => " (and 1 other expansion of this entry)".to_string(),
            n => format!(" (and {} other expansions of this entry)", n - 1),
        }
    }
}

/// A parsed file and the prefix of its jobs' names (`"<flow name>."`, none for the root).
struct Source {
    file: RawFile,
    prefix: String,
}

struct Reader<'d> {
    chain: Vec<(PathBuf, PathBuf)>,
    seen: HashSet<PathBuf>,
    sources: Vec<Source>,
    /// The text of every file read, kept to show source lines under the diagnostics.
    texts: Vec<(Arc<Path>, String)>,
    /// Some file or job could not be read: dependencies cannot be fully checked.
    incomplete: bool,
    diags: &'d mut Vec<Diagnostic>,
}

impl Reader<'_> {
    fn read(&mut self, path: &Path, included_at: Option<&Location>) {
        let fail = |message: String| match included_at {
            Some(l) => Diagnostic::at(l.clone(), message)
                .with_help("include paths are relative to the including flow file's directory"),
            None => Diagnostic::global(message),
        };
        let canonical = match std::fs::canonicalize(path) {
            Ok(c) => c,
            Err(e) => {
                let what = if included_at.is_some() {
                    "included flow file"
                } else {
                    "flow file"
                };
                self.diags
                    .push(fail(format!("cannot read {what} {}: {e}", path.display())));
                self.incomplete = true;
                return;
            }
        };
        if let Some(pos) = self.chain.iter().position(|(c, _)| *c == canonical) {
            let mut names: Vec<String> = self.chain[pos..]
                .iter()
                .map(|(_, p)| p.display().to_string())
                .collect();
            names.push(self.chain[pos].1.display().to_string());
            let d = fail(format!("include loop: {}", loop_path(&names)))
                .with_help("remove one of these includes");
            self.diags.push(d);
            return;
        }
        if !self.seen.insert(canonical.clone()) {
            return; // Included twice (a diamond): merged once.
        }
        let path: Arc<Path> = Arc::from(path);
        // Only the file named on the command line may be a pipe; an include must be a file.
        let text = match read_flow_file(&path, included_at.is_none()) {
            Ok(t) => t,
            Err(ReadError::NotUtf8 {
                byte,
                line,
                column,
                lossy,
            }) => {
                let e = format!(
                    "the file is not UTF-8 text: byte 0x{byte:02X} here is not part of a UTF-8 character"
                );
                let location = Location {
                    file: path.clone(),
                    line,
                    column,
                };
                self.diags.push(
                    Diagnostic::at(location, e)
                        .with_span_len(1)
                        .with_help("flow files are UTF-8 text; convert the file (e.g. `iconv -f latin1 -t utf-8`) or remove the byte"),
                );
                self.texts.push((path, lossy));
                self.incomplete = true;
                return;
            }
            Err(e) => {
                let what = if included_at.is_some() {
                    "included flow file"
                } else {
                    "flow file"
                };
                let mut d = fail(format!("cannot read {what} {}: {e}", path.display()));
                if matches!(e, ReadError::NotRegular(_)) && included_at.is_some() {
                    d = d.with_help("`include` names flow files (regular files)");
                }
                self.diags.push(d);
                self.incomplete = true;
                return;
            }
        };
        let parsed = parse_file(path.clone(), &text, self.diags);
        self.texts.push((path.clone(), text));
        let Some(file) = parsed else {
            self.incomplete = true;
            return;
        };
        self.incomplete |= file.dropped_jobs;
        let prefix = if included_at.is_some() {
            format!("{}.", file.name)
        } else {
            String::new()
        };
        let includes = file.includes.clone();
        self.sources.push(Source { file, prefix });
        self.chain.push((canonical, path.to_path_buf()));
        for (include, _, location) in &includes {
            self.read(include, Some(location));
        }
        self.chain.pop();
    }
}

/// `a.toml -> b.toml -> a.toml`, shortened in the middle when the loop is long.
fn loop_path(names: &[String]) -> String {
    const SHOWN: usize = 8;
    if names.len() <= SHOWN {
        return names.join(" -> ");
    }
    format!(
        "{} -> ... ({} more) ... -> {}",
        names[..SHOWN / 2].join(" -> "),
        names.len() - SHOWN,
        names[names.len() - SHOWN / 2..].join(" -> ")
    )
}

/// Merges same-named instances from several files; differing declarations are an error.
fn merge_instances<'a>(
    sources: &'a [Source],
    section: &str,
    pick: impl Fn(&'a RawFile) -> &'a [RawInstance],
    diags: &mut Vec<Diagnostic>,
) -> Vec<&'a RawInstance> {
    let mut out: Vec<&RawInstance> = Vec::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for source in sources {
        for instance in pick(&source.file) {
            match by_name.get(instance.name.as_str()) {
                Some(&i) => {
                    if !out[i].same_as(instance) {
                        diags.push(
                            Diagnostic::at(instance.location.clone(), format!("[{section}.{}] is declared twice with different settings", instance.name))
                                .with_help(format!("first declared at {}; make both declarations identical, or rename one", fmt_location(&out[i].location))),
                        );
                    }
                }
                None => {
                    by_name.insert(&instance.name, out.len());
                    out.push(instance);
                }
            }
        }
    }
    out
}

fn check_kinds(
    instances: &[&RawInstance],
    section: &str,
    kinds: &[String],
    diags: &mut Vec<Diagnostic>,
) {
    for instance in instances {
        let kind = instance.kind();
        if !kinds.iter().any(|k| k == kind) {
            let location = instance
                .kind
                .as_ref()
                .map_or(&instance.location, |(_, l)| l);
            let what = if section == "backends" {
                "backend"
            } else {
                "observer"
            };
            let mut help = format!("available {what} kinds: {}", list_or_none(kinds));
            if let Some(s) = did_you_mean(kind, kinds.iter().map(String::as_str)) {
                help = format!("did you mean `{s}`? {help}");
            }
            if instance.kind.is_none() {
                help.push_str(&format!("; set `kind = \"...\"` in [{section}.{}] if the instance is named differently from its kind", instance.name));
            }
            diags.push(
                Diagnostic::at(
                    location.clone(),
                    format!(
                        "[{section}.{}]: unknown {what} kind `{kind}`",
                        instance.name
                    ),
                )
                .with_help(help),
            );
        }
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(", ")
    }
}

struct Backends<'c> {
    list: Vec<BackendInstance>,
    by_name: HashMap<String, usize>,
    declared: Vec<String>,
    kinds: &'c [String],
}

impl Backends<'_> {
    /// The index of the instance `name`, creating an implicit instance for a bare kind.
    /// `first_user` is where an implicit instance points (the first job that names it).
    fn resolve(&mut self, name: &str, first_user: &Location) -> Result<usize, (String, String)> {
        if let Some(&i) = self.by_name.get(name) {
            return Ok(i);
        }
        if self.kinds.iter().any(|k| k == name) {
            let i = self.list.len();
            self.list.push(BackendInstance {
                name: name.to_string(),
                kind: name.to_string(),
                max_parallel: None,
                config_toml: String::new(),
                location: first_user.clone(),
            });
            self.by_name.insert(name.to_string(), i);
            return Ok(i);
        }
        let mut help = format!(
            "declared instances: {}; available kinds: {}",
            list_or_none(&self.declared),
            list_or_none(self.kinds)
        );
        let candidates = self
            .declared
            .iter()
            .chain(self.kinds.iter())
            .map(String::as_str);
        if let Some(s) = did_you_mean(name, candidates) {
            help = format!("did you mean `{s}`? {help}");
        }
        Err((format!("unknown backend `{name}`: it is neither a [backends.{name}] instance nor an installed backend kind"), help))
    }
}

pub(super) fn load(
    path: &Path,
    catalog: &KindCatalog,
    opts: &LoadOptions,
) -> Result<Flow, Vec<Diagnostic>> {
    load_within(path, catalog, opts, MAX_DEPENDENCIES)
}

/// [`load`] with another dependency limit (tests reach a small one quickly).
pub(super) fn load_within(
    path: &Path,
    catalog: &KindCatalog,
    opts: &LoadOptions,
    max_dependencies: u64,
) -> Result<Flow, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let root = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut reader = Reader {
        chain: Vec::new(),
        seen: HashSet::new(),
        sources: Vec::new(),
        texts: Vec::new(),
        incomplete: false,
        diags: &mut diags,
    };
    reader.read(&root, None);
    let Reader {
        sources,
        texts,
        incomplete,
        ..
    } = reader;
    let result = if sources.is_empty() {
        Err(diags)
    } else {
        resolve(&sources, incomplete, diags, catalog, opts, max_dependencies)
    };
    result.map_err(|mut diags| {
        attach_snippets(&mut diags, &texts);
        diags
    })
}

/// Gives the diagnostics that the report shows their source lines.
fn attach_snippets(diags: &mut [Diagnostic], texts: &[(Arc<Path>, String)]) {
    let mut maps: Vec<Option<SourceMap<'_>>> = texts.iter().map(|_| None).collect();
    for d in diags.iter_mut().take(MAX_SHOWN) {
        let Some(location) = &d.location else {
            continue;
        };
        let Some(i) = texts.iter().position(|(p, _)| *p == location.file) else {
            continue;
        };
        let map = maps[i].get_or_insert_with(|| SourceMap::new(texts[i].0.clone(), &texts[i].1));
        d.snippet = map.snippet(location, d.span_len);
    }
}

/// Merges the files read into one flow and checks it.
fn resolve(
    sources: &[Source],
    incomplete: bool,
    mut diags: Vec<Diagnostic>,
    catalog: &KindCatalog,
    opts: &LoadOptions,
    max_dependencies: u64,
) -> Result<Flow, Vec<Diagnostic>> {
    let root_file = &sources[0].file;
    let root_location = Location {
        file: root_file.path.clone(),
        line: 1,
        column: 1,
    };

    // Included flows' names must differ (they prefix the job names).
    let mut prefixes: HashMap<&str, &Location> = HashMap::new();
    for source in &sources[1..] {
        if let Some(first) = prefixes.insert(&source.prefix, &source.file.name_location) {
            diags.push(
                Diagnostic::at(source.file.name_location.clone(), format!("two included flows are both named `{}`", source.file.name))
                    .with_help(format!(
                        "the other is {}; an included flow's jobs are named `<flow name>.<job>`, so set a distinct `[flow] name` in one of them",
                        fmt_location(first)
                    )),
            );
        }
    }

    // Instances and resources, merged over all files.
    let backends = merge_instances(sources, "backends", |f| &f.backends, &mut diags);
    let observers = merge_instances(sources, "observers", |f| &f.observers, &mut diags);
    check_kinds(&backends, "backends", &catalog.backends, &mut diags);
    check_kinds(&observers, "observers", &catalog.observers, &mut diags);
    let mut resources: Vec<(String, u64)> = Vec::new();
    let mut resource_index: HashMap<String, (u32, Location)> = HashMap::new();
    for source in sources {
        for (name, capacity, location) in &source.file.resources {
            match resource_index.get(name) {
                Some((i, first)) => {
                    if resources[*i as usize].1 != *capacity {
                        diags.push(
                            Diagnostic::at(location.clone(), format!("resource `{name}` is declared twice with different amounts ({} and {capacity})", resources[*i as usize].1))
                                .with_help(format!("first declared at {}", fmt_location(first))),
                        );
                    }
                }
                None => {
                    resource_index.insert(name.clone(), (resources.len() as u32, location.clone()));
                    resources.push((name.clone(), *capacity));
                }
            }
        }
    }
    let mut backend_table = Backends {
        list: backends
            .iter()
            .map(|b| BackendInstance {
                name: b.name.clone(),
                kind: b.kind().to_string(),
                max_parallel: b.max_parallel,
                config_toml: b.config_toml.clone(),
                location: b.location.clone(),
            })
            .collect(),
        by_name: backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.clone(), i))
            .collect(),
        declared: backends.iter().map(|b| b.name.clone()).collect(),
        kinds: &catalog.backends,
    };
    let observers: Vec<ObserverInstance> = observers
        .iter()
        .map(|o| ObserverInstance {
            name: o.name.clone(),
            kind: o.kind().to_string(),
            config_toml: o.config_toml.clone(),
            location: o.location.clone(),
        })
        .collect();
    let override_backend = match &opts.backend_override {
        Some(name) => match backend_table.resolve(name, &root_location) {
            Ok(i) => Some(i),
            Err((message, help)) => {
                diags.push(Diagnostic::global(format!("--backend: {message}")).with_help(help));
                None
            }
        },
        None => None,
    };

    // Per `[[job]]`: backend and named resources (the same for every job of a matrix).
    struct Prepared {
        source: usize,
        job: usize,
        backend: usize,
        resources: Vec<(u32, u64)>,
    }
    let mut prepared = Vec::new();
    let mut unknown_backends: HashSet<String> = HashSet::new();
    let declared_resources: Vec<String> = resources.iter().map(|(n, _)| n.clone()).collect();
    for (s, source) in sources.iter().enumerate() {
        for (j, raw) in source.file.jobs.iter().enumerate() {
            let backend = match override_backend {
                Some(i) => i,
                None => {
                    let (name, location) = match (&raw.backend, &source.file.default_backend) {
                        (Some((n, l)), _) | (None, Some((n, l))) => (n.as_str(), l),
                        (None, None) => ("local", &raw.shared.location),
                    };
                    match backend_table.resolve(name, &raw.shared.location) {
                        Ok(i) => i,
                        Err((message, help)) => {
                            // One report per name and place is enough (a default is shared).
                            if unknown_backends.insert(format!("{name}@{}", fmt_location(location)))
                            {
                                let message = if raw.backend.is_none()
                                    && source.file.default_backend.is_none()
                                {
                                    format!("{message} (jobs default to `local`)")
                                } else {
                                    message
                                };
                                diags.push(
                                    Diagnostic::at(location.clone(), message).with_help(help),
                                );
                            }
                            usize::MAX
                        }
                    }
                }
            };
            let mut named = Vec::with_capacity(raw.resources.len());
            for (name, amount, location) in &raw.resources {
                match resource_index.get(name) {
                    Some((i, _)) => {
                        let capacity = resources[*i as usize].1;
                        if *amount > capacity {
                            diags.push(
                                Diagnostic::at(location.clone(), format!("the job needs {amount} of resource `{name}`, but only {capacity} exist"))
                                    .with_help(format!("ask for at most {capacity}, or raise `{name}` in [resources]")),
                            );
                        }
                        named.push((*i, *amount));
                    }
                    None => {
                        let mut help = format!(
                            "declare it in [resources] (e.g. `{name} = 4`); declared resources: {}",
                            list_or_none(&declared_resources)
                        );
                        let candidates = declared_resources.iter().map(String::as_str);
                        if let Some(s) = did_you_mean(name, candidates.chain(["cpus", "memory"])) {
                            help = format!("did you mean `{s}`? {help}");
                        }
                        diags.push(
                            Diagnostic::at(location.clone(), format!("unknown resource `{name}`"))
                                .with_help(help),
                        );
                    }
                }
            }
            prepared.push(Prepared {
                source: s,
                job: j,
                backend,
                resources: named,
            });
        }
    }

    // Expansion.
    let total: u64 = prepared
        .iter()
        .map(|p| sources[p.source].file.jobs[p.job].matrix.len())
        .fold(0, u64::saturating_add);
    if total > MAX_JOBS {
        diags.push(
            Diagnostic::at(
                root_location.clone(),
                format!(
                    "the flow expands to {} jobs, more than the limit of {}",
                    fmt_count(total.into()),
                    fmt_count(MAX_JOBS.into())
                ),
            )
            .with_help("shrink the matrices, or split the work into several flows"),
        );
        return Err(diags);
    }
    if total == 0 && !incomplete {
        diags.push(
            Diagnostic::at(root_location.clone(), "the flow has no jobs").with_help(
                "add a job: `[[job]]` with `name = \"...\"` and `cmd = \"...\"` (see docs/flow-format.md)",
            ),
        );
    }
    let mut jobs: Vec<Job> = Vec::with_capacity(total as usize);
    let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(prepared.len());
    for p in &prepared {
        let source = &sources[p.source];
        let raw = &source.file.jobs[p.job];
        let start = jobs.len();
        // Literal parts were checked when parsed; what a matrix value brings in is checked here.
        let check_cmd = match &raw.cmd {
            RawCmd::Shell(t) => t.as_literal().is_none(),
            RawCmd::Argv(ts) => ts.first().is_some_and(|t| t.as_literal().is_none()),
        };
        let mut bad_names = BadExpansions::default();
        let mut empty_cmds = BadExpansions::default();
        raw.matrix.for_each(|_, values| {
            let mut name = String::new();
            if !source.prefix.is_empty() {
                name.reserve(source.prefix.len() + 16);
                name.push_str(&source.prefix);
            }
            raw.name.expand_into(values, &mut name);
            if let Some(problem) = names::job_name_problem(&name) {
                bad_names.add(|| format!("{:?}: {problem}", shorten(&name, 80)));
            }
            let cmd = match &raw.cmd {
                RawCmd::Shell(t) => Command::Shell(t.expand(values)),
                RawCmd::Argv(ts) => Command::Argv(ts.iter().map(|t| t.expand(values)).collect()),
            };
            if check_cmd {
                let empty = match &cmd {
                    Command::Shell(c) => c.trim().is_empty(),
                    Command::Argv(argv) => argv.first().is_some_and(String::is_empty),
                };
                if empty {
                    empty_cmds.add(|| name.clone());
                }
            }
            jobs.push(Job {
                name,
                cmd,
                cwd: raw
                    .cwd
                    .as_ref()
                    .map(|t| source.file.dir.join(t.expand(values))),
                env: raw
                    .env
                    .iter()
                    .map(|(k, t)| (k.clone(), t.expand(values)))
                    .collect(),
                backend: p.backend,
                resources: p.resources.clone(),
                ..raw.shared.clone()
            });
        });
        if let Some(first) = &bad_names.first {
            diags.push(
                Diagnostic::at(
                    raw.name_location.clone(),
                    format!("invalid job name {first}{}", bad_names.others()),
                )
                .with_help(names::JOB_NAME_RULE),
            );
        }
        if let Some(first) = &empty_cmds.first {
            diags.push(
                Diagnostic::at(
                    raw.shared.location.clone(),
                    format!(
                        "the command of job `{}` is empty{}",
                        shorten(first, 80),
                        empty_cmds.others()
                    ),
                )
                .with_help(
                    "a matrix value makes the command empty; give every job something to run",
                ),
            );
        }
        ranges.push((start, jobs.len()));
    }

    // Names must be unique.
    let mut names: NameMap<'_> = HashMap::with_capacity_and_hasher(jobs.len(), Default::default());
    let mut duplicates = 0usize;
    for (i, job) in jobs.iter().enumerate() {
        // One hash and probe per name.
        let first = match names.entry(job.name.as_str()) {
            Entry::Occupied(first) => *first.get(),
            Entry::Vacant(slot) => {
                slot.insert(i as u32);
                continue;
            }
        };
        duplicates += 1;
        if duplicates <= MAX_REPEATED {
            let first = &jobs[first as usize];
            let help = if first.location == job.location {
                "the matrix produces this name more than once: check for repeated values"
                    .to_string()
            } else {
                format!(
                    "the first job with this name is at {}; rename one of them",
                    fmt_location(&first.location)
                )
            };
            diags.push(
                Diagnostic::at(
                    job.location.clone(),
                    format!("duplicate job name `{}`", job.name),
                )
                .with_help(help),
            );
        }
    }
    if duplicates > MAX_REPEATED {
        diags.push(Diagnostic::global(format!(
            "... and {} more duplicate job names",
            duplicates - MAX_REPEATED
        )));
    }

    // Dependencies.
    let mut resolver = Resolver {
        names: &names,
        jobs: &jobs,
        sorted: None,
        globs: HashMap::new(),
    };
    let mut all_needs: Vec<Vec<u32>> = Vec::with_capacity(jobs.len());
    let mut unresolved_reported = 0usize;
    // Dependency edges so far, against `max_dependencies`.
    let mut dependencies = 0u64;
    for (p, &(start, end)) in prepared.iter().zip(&ranges) {
        let source = &sources[p.source];
        let raw = &source.file.jobs[p.job];
        let mut failures: Vec<NeedsFailures> = vec![NeedsFailures::default(); raw.needs.len()];
        let literal: Option<Vec<&str>> = raw.needs.iter().map(|(t, _)| t.as_literal()).collect();
        let mut scratch = Vec::new();
        let mut resolve_one = |resolver: &mut Resolver<'_>,
                               k: usize,
                               text: &str,
                               job_index: usize,
                               out: &mut Vec<u32>| {
            let before = out.len();
            match resolver.resolve(text, &source.prefix, out) {
                Ok(true) => {
                    if let Some(pos) = out[before..].iter().position(|&d| d as usize == job_index) {
                        out.remove(before + pos);
                        failures[k].itself = true;
                    }
                }
                Ok(false) => {
                    failures[k].unmatched += 1;
                    if failures[k].first_unmatched.is_none() {
                        failures[k].first_unmatched = Some(text.to_string());
                    }
                }
                Err(e) => {
                    if !failures[k].bad_glob {
                        diags.push(Diagnostic::at(
                            raw.needs[k].1.clone(),
                            format!("invalid glob `{}` in `needs`: {e}", shorten(text, 80)),
                        ));
                    }
                    failures[k].bad_glob = true;
                }
            }
        };
        match literal {
            Some(texts) => {
                // The same list for every job of the matrix: resolve once.
                let mut shared = Vec::new();
                for (k, text) in texts.iter().enumerate() {
                    resolve_one(&mut resolver, k, text, usize::MAX, &mut shared);
                }
                shared.sort_unstable();
                shared.dedup();
                dependencies = dependencies
                    .saturating_add((shared.len() as u64).saturating_mul((end - start) as u64));
                if dependencies > max_dependencies {
                    diags.push(too_many_dependencies(&raw.needs[0].1, max_dependencies));
                    return Err(diags);
                }
                for j in start..end {
                    let mut needs = shared.clone();
                    if let Ok(pos) = needs.binary_search(&(j as u32)) {
                        needs.remove(pos);
                        // Which entry matched the job itself: find it for the message.
                        for (k, text) in texts.iter().enumerate() {
                            scratch.clear();
                            let _ = resolver.resolve(text, &source.prefix, &mut scratch);
                            if scratch.contains(&(j as u32)) {
                                failures[k].itself = true;
                            }
                        }
                    }
                    all_needs.push(needs);
                }
            }
            None => {
                let mut j = start;
                let mut text = String::new();
                let mut over_limit = false;
                raw.matrix.for_each(|_, values| {
                    if over_limit {
                        return;
                    }
                    let mut needs = Vec::new();
                    for (k, (t, _)) in raw.needs.iter().enumerate() {
                        text.clear();
                        t.expand_into(values, &mut text);
                        resolve_one(&mut resolver, k, &text, j, &mut needs);
                    }
                    needs.sort_unstable();
                    needs.dedup();
                    dependencies += needs.len() as u64;
                    over_limit = dependencies > max_dependencies;
                    all_needs.push(needs);
                    j += 1;
                });
                if over_limit {
                    diags.push(too_many_dependencies(&raw.needs[0].1, max_dependencies));
                    return Err(diags);
                }
            }
        }
        let job_name = |j: usize| jobs.get(j).map_or("", |job| job.name.as_str());
        for (k, failure) in failures.into_iter().enumerate() {
            let location = &raw.needs[k].1;
            let written = raw.needs[k].0.as_literal().map(str::to_string);
            if failure.itself {
                let example = job_name(start);
                let message = if end - start > 1 {
                    "`needs` makes jobs depend on themselves".to_string()
                } else {
                    format!("job `{example}` depends on itself")
                };
                diags.push(Diagnostic::at(location.clone(), message).with_help(
                    "a job cannot need itself; remove the entry or make the pattern more specific",
                ));
            }
            if let Some(text) = failure.first_unmatched {
                if failure.bad_glob || incomplete {
                    continue; // Glob error (reported) or a job we could not read may be the target.
                }
                unresolved_reported += 1;
                if unresolved_reported > MAX_REPEATED {
                    continue;
                }
                let mut message = if text.is_empty() {
                    "a matrix value makes a `needs` entry empty, which matches no job".to_string()
                } else {
                    format!("`needs` entry `{}` matches no job", shorten(&text, 80))
                };
                if written.is_none() && failure.unmatched > 1 {
                    message.push_str(&format!(
                        " (nor do {} other expansions of this entry)",
                        failure.unmatched - 1
                    ));
                }
                let help = if text.contains(['*', '?', '[']) {
                    None
                } else {
                    let qualified = format!("{}{text}", source.prefix);
                    let found = nearest(&qualified, names.keys().copied(), 3);
                    did_you_mean_help(&found)
                };
                let help = help.or_else(|| (!source.prefix.is_empty()).then(|| format!("in an included flow, `needs` names its own jobs (`{}NAME`) or a fully qualified job of another flow", source.prefix)));
                diags.push(Diagnostic::at(location.clone(), message).with_opt_help(help));
            }
        }
    }
    if unresolved_reported > MAX_REPEATED {
        diags.push(Diagnostic::global(format!(
            "... and {} more `needs` entries that match no job",
            unresolved_reported - MAX_REPEATED
        )));
    }
    drop(resolver);
    drop(names);
    for (job, needs) in jobs.iter_mut().zip(all_needs) {
        job.needs = needs;
    }

    diags.extend(graph::cycle_diagnostics(&jobs));
    if !diags.is_empty() {
        return Err(diags);
    }
    let root_file = &sources[0].file;
    Ok(Flow {
        name: root_file.name.clone(),
        file: root_file.path.to_path_buf(),
        max_parallel: root_file.max_parallel,
        backends: backend_table.list,
        observers,
        resources,
        jobs,
    })
}

/// The most dependency edges a flow may have (each job's `needs` after expansion, added up).
/// A glob like `needs = ["sim-*"]` on a matrix multiplies: 100,000 jobs each needing 100,000
/// others are 10^10 edges, which no machine holds. Each edge costs the loader 4 bytes and the
/// scheduler about as much again, so the limit is about 1 GB.
pub(super) const MAX_DEPENDENCIES: u64 = 100_000_000;

/// The error of a flow whose `needs` add up to more than `limit`.
fn too_many_dependencies(location: &Location, limit: u64) -> Diagnostic {
    Diagnostic::at(
        location.clone(),
        format!(
            "the flow has more than {} dependencies (`needs` after expansion, over all jobs); this entry crosses the limit",
            fmt_count(limit.into())
        ),
    )
    .with_help("make the globs more specific, or add one job that gathers the group and is needed instead of each of its jobs")
}

/// What went wrong with one `needs` entry over the expansions of its `[[job]]`.
#[derive(Debug, Clone, Default)]
struct NeedsFailures {
    /// The first expansion that matched no job.
    first_unmatched: Option<String>,
    /// How many expansions matched no job.
    unmatched: usize,
    /// The entry is an invalid glob (reported once).
    bad_glob: bool,
    /// Some expansion matched its own job.
    itself: bool,
}

/// Resolves `needs` entries to job indices: exact names through the name map, globs (cached)
/// by prefix range over the sorted names.
struct Resolver<'a> {
    names: &'a NameMap<'a>,
    jobs: &'a [Job],
    /// Job indices sorted by name (built once many distinct globs have been seen).
    sorted: Option<Vec<u32>>,
    globs: HashMap<String, Result<Arc<[u32]>, String>>,
}

impl Resolver<'_> {
    /// Appends the matches of `text` (tried first as `prefix + text`, then as is) to `out`.
    fn resolve(&mut self, text: &str, prefix: &str, out: &mut Vec<u32>) -> Result<bool, String> {
        if text.contains(['*', '?', '[']) {
            if !prefix.is_empty() {
                let found = self.glob(&format!("{prefix}{text}"))?;
                if !found.is_empty() {
                    out.extend_from_slice(&found);
                    return Ok(true);
                }
            }
            let found = self.glob(text)?;
            out.extend_from_slice(&found);
            Ok(!found.is_empty())
        } else {
            if !prefix.is_empty() {
                let mut qualified = String::with_capacity(prefix.len() + text.len());
                qualified.push_str(prefix);
                qualified.push_str(text);
                if let Some(&i) = self.names.get(qualified.as_str()) {
                    out.push(i);
                    return Ok(true);
                }
            }
            match self.names.get(text) {
                Some(&i) => {
                    out.push(i);
                    Ok(true)
                }
                None => Ok(false),
            }
        }
    }

    fn glob(&mut self, pattern: &str) -> Result<Arc<[u32]>, String> {
        if let Some(cached) = self.globs.get(pattern) {
            return cached.clone();
        }
        let result = self.match_glob(pattern);
        self.globs.insert(pattern.to_string(), result.clone());
        result
    }

    fn match_glob(&mut self, pattern: &str) -> Result<Arc<[u32]>, String> {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map_err(|e| e.kind().to_string())?;
        let jobs = self.jobs;
        // Only names starting with the pattern's literal prefix can match; `prefix*` needs no
        // further matching.
        let literal_end = pattern
            .find(['*', '?', '[', '{', '\\'])
            .unwrap_or(pattern.len());
        let literal = &pattern[..literal_end];
        let prefix_only = &pattern[literal_end..] == "*";
        let matcher = (!prefix_only).then(|| glob.compile_matcher());
        let matches = |i: u32| {
            let name = jobs[i as usize].name.as_str();
            name.starts_with(literal) && matcher.as_ref().is_none_or(|m| m.is_match(name))
        };
        // A few globs: scan all names. Many distinct globs: narrow by prefix over sorted names.
        if self.sorted.is_none() && self.globs.len() < SCANS_BEFORE_SORTING {
            let found: Vec<u32> = (0..jobs.len() as u32).filter(|&i| matches(i)).collect();
            return Ok(Arc::from(found));
        }
        let sorted = self.sorted.get_or_insert_with(|| {
            let mut v: Vec<u32> = (0..jobs.len() as u32).collect();
            v.sort_unstable_by(|&a, &b| jobs[a as usize].name.cmp(&jobs[b as usize].name));
            v
        });
        let from = sorted.partition_point(|&i| jobs[i as usize].name.as_str() < literal);
        let mut found: Vec<u32> = sorted[from..]
            .iter()
            .take_while(|&&i| jobs[i as usize].name.starts_with(literal))
            .copied()
            .filter(|&i| matches(i))
            .collect();
        found.sort_unstable();
        Ok(Arc::from(found))
    }
}

/// Distinct globs matched by scanning every name before sorting the names pays off.
const SCANS_BEFORE_SORTING: usize = 16;

/// Job name to index, with a fast (non-DoS-resistant: flow files are trusted) hash: one hash and
/// probe per name matters for million-job matrices.
type NameMap<'a> = rustc_hash::FxHashMap<&'a str, u32>;
