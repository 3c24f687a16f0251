//! Loader tests: every expansion rule and every validation error.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::*;

fn catalog() -> KindCatalog {
    KindCatalog {
        backends: vec!["local".into(), "slurm".into(), "fake".into()],
        observers: vec!["junit".into()],
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn load_with(text: &str, opts: &LoadOptions) -> Result<Flow, Vec<Diagnostic>> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "flow.toml", text);
    load(&path, &catalog(), opts)
}

fn load_str(text: &str) -> Result<Flow, Vec<Diagnostic>> {
    load_with(text, &LoadOptions::default())
}

fn ok(text: &str) -> Flow {
    match load_str(text) {
        Ok(flow) => flow,
        Err(diags) => panic!("unexpected errors:\n{}", render(&diags)),
    }
}

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match load_str(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(diags) => diags,
    }
}

/// The diagnostic whose message contains `needle` (panics with all of them otherwise).
fn find<'a>(diags: &'a [Diagnostic], needle: &str) -> &'a Diagnostic {
    diags
        .iter()
        .find(|d| d.message.contains(needle))
        .unwrap_or_else(|| panic!("no diagnostic containing {needle:?} in:\n{}", render(diags)))
}

fn at(d: &Diagnostic) -> (u32, u32) {
    let l = d.location.as_ref().expect("a location");
    (l.line, l.column)
}

fn names(flow: &Flow) -> Vec<&str> {
    flow.jobs.iter().map(|j| j.name.as_str()).collect()
}

fn job<'a>(flow: &'a Flow, name: &str) -> &'a Job {
    flow.jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name}"))
}

fn needs_of<'a>(flow: &'a Flow, name: &str) -> Vec<&'a str> {
    job(flow, name)
        .needs
        .iter()
        .map(|&i| flow.jobs[i as usize].name.as_str())
        .collect()
}

const FULL: &str = r#"
[flow]
name = "nightly"
default_backend = "local"
max_parallel = 16

[backends.local]
max_parallel = 2

[backends.big]
kind = "slurm"
partition = "long"
extra = { qos = "high" }

[resources]
vcs_license = 4

[observers.junit]
path = "junit.xml"

[[job]]
name = "build"
cmd = "make -j4"
cwd = "hw"
env = { CC = "clang", AR = "llvm-ar" }
timeout = "30m"
priority = 10
backend = "local"
when = "always"
resources = { vcs_license = 1, cpus = 2, memory = "4G" }
pass_patterns = ["^TEST PASSED$"]
fail_patterns = ["^UVM_(ERROR|FATAL)", "Error-\\["]
interactive = true
attrs = { queue = "fast" }

[[job]]
name = "sim-{test}-{seed}"
matrix = { test = ["smoke", "dma"], seed = { range = [1, 50] } }
cmd = "./simv +UVM_TESTNAME={test} +ntb_random_seed={seed}"
needs = ["build"]
backend = "big"

[[job]]
name = "report"
cmd = ["python3", "report.py", "--all"]
needs = ["sim-*"]
when = "any-passed"
backend = "fake"
"#;

#[test]
fn full_example_loads() {
    let flow = ok(FULL);
    assert_eq!(flow.name, "nightly");
    assert_eq!(flow.max_parallel, Some(16));
    assert!(flow.file.is_absolute());
    assert_eq!(flow.jobs.len(), 1 + 100 + 1);
    let backends: Vec<(&str, &str)> = flow
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.kind.as_str()))
        .collect();
    assert_eq!(
        backends,
        [("local", "local"), ("big", "slurm"), ("fake", "fake")]
    );
    assert_eq!(flow.backends[0].max_parallel, Some(2));
    let config: toml::Table = flow.backends[1].config_toml.parse().unwrap();
    assert_eq!(config["partition"].as_str(), Some("long"));
    assert_eq!(config["extra"]["qos"].as_str(), Some("high"));
    assert!(!config.contains_key("kind"));
    assert_eq!(flow.backends[2].config_toml, "");
    assert_eq!(flow.resources, [("vcs_license".to_string(), 4)]);
    assert_eq!(flow.observers.len(), 1);
    assert_eq!(flow.observers[0].kind, "junit");
    assert!(flow.observers[0]
        .config_toml
        .contains("path = \"junit.xml\""));

    let build = job(&flow, "build");
    assert_eq!(build.cmd, Command::Shell("make -j4".into()));
    let cwd = build.cwd.as_ref().unwrap();
    assert!(cwd.is_absolute() && cwd.ends_with("hw"));
    assert_eq!(cwd.parent().unwrap(), flow.file.parent().unwrap());
    assert_eq!(
        build.env,
        [
            ("CC".to_string(), "clang".to_string()),
            ("AR".to_string(), "llvm-ar".to_string())
        ]
    );
    assert_eq!(
        build.timeout,
        Some((Duration::from_secs(1800), "30m".to_string()))
    );
    assert_eq!(build.priority, 10);
    assert_eq!(build.backend, 0);
    assert_eq!(build.when, When::Always);
    assert_eq!((build.cpus, build.memory_mb), (2, Some(4096)));
    assert_eq!(build.resources, [(0, 1)]);
    let patterns = build.patterns.as_ref().unwrap();
    assert_eq!(patterns.pass.len(), 1);
    assert_eq!(patterns.fail_sources, ["^UVM_(ERROR|FATAL)", "Error-\\["]);
    assert!(patterns.fail.is_match("UVM_FATAL @ 0"));
    assert!(build.interactive);
    assert_eq!(build.attrs, [("queue".to_string(), "fast".to_string())]);
    assert_eq!((build.location.line, build.location.column), (21, 1));

    let sim = job(&flow, "sim-dma-7");
    assert_eq!(
        sim.cmd,
        Command::Shell("./simv +UVM_TESTNAME=dma +ntb_random_seed=7".into())
    );
    assert_eq!(needs_of(&flow, "sim-dma-7"), ["build"]);
    assert_eq!(sim.backend, 1);
    assert_eq!(
        (sim.cpus, sim.memory_mb, sim.when, sim.priority),
        (1, None, When::AllPassed, 0)
    );
    assert!(
        sim.patterns.is_none() && sim.timeout.is_none() && sim.cwd.is_none() && !sim.interactive
    );
    // Jobs of a matrix share the location's file.
    assert!(Arc::ptr_eq(&sim.location.file, &build.location.file));

    let report = job(&flow, "report");
    assert_eq!(
        report.cmd,
        Command::Argv(vec!["python3".into(), "report.py".into(), "--all".into()])
    );
    assert_eq!(report.needs.len(), 100);
    assert_eq!(report.when, When::AnyPassed);
    assert_eq!(report.backend, 2);
    // needs are sorted indices without duplicates.
    assert!(report.needs.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn matrix_expands_in_order_with_first_variable_slowest() {
    let flow = ok(r#"
[[job]]
name = "sim-{test}-{seed}"
matrix = { test = ["smoke", "dma"], seed = { range = [1, 3] } }
cmd = ["./simv", "+UVM_TESTNAME={test}", "+seed={seed}"]
cwd = "run/{test}"
env = { SEED = "{seed}", LIT = "{{seed}}" }
"#);
    assert_eq!(
        names(&flow),
        [
            "sim-smoke-1",
            "sim-smoke-2",
            "sim-smoke-3",
            "sim-dma-1",
            "sim-dma-2",
            "sim-dma-3"
        ]
    );
    let j = job(&flow, "sim-dma-2");
    assert_eq!(
        j.cmd,
        Command::Argv(vec![
            "./simv".into(),
            "+UVM_TESTNAME=dma".into(),
            "+seed=2".into()
        ])
    );
    assert!(j.cwd.as_ref().unwrap().ends_with("run/dma"));
    assert_eq!(
        j.env,
        [
            ("SEED".to_string(), "2".to_string()),
            ("LIT".to_string(), "{seed}".to_string())
        ]
    );
    assert_eq!(j.backend, 0);
    assert_eq!(flow.backends[0].name, "local");
}

#[test]
fn matrix_integer_values_negative_range_and_literal_braces() {
    let flow = ok(r#"
[[job]]
name = "j{n}-{o}"
matrix = { n = [10, 20], o = { range = [-1, 0] } }
cmd = "awk '{{print $1}}' ${{HOME}}/{n}"
"#);
    assert_eq!(names(&flow), ["j10--1", "j10-0", "j20--1", "j20-0"]);
    assert_eq!(
        job(&flow, "j20-0").cmd,
        Command::Shell("awk '{print $1}' ${HOME}/20".into())
    );
}

#[test]
fn needs_expand_variables_and_globs() {
    let flow = ok(r#"
[[job]]
name = "gen-{test}"
matrix = { test = ["a", "b"] }
cmd = "gen {test}"

[[job]]
name = "sim-{test}-{seed}"
matrix = { test = ["a", "b"], seed = { range = [1, 2] } }
cmd = "sim"
needs = ["gen-{test}"]

[[job]]
name = "merge-{test}"
matrix = { test = ["a", "b"] }
cmd = "merge"
needs = ["sim-{test}-*"]

[[job]]
name = "all"
cmd = "true"
needs = ["merge-?", "gen-[ab]", "merge-a"]
"#);
    assert_eq!(needs_of(&flow, "sim-b-2"), ["gen-b"]);
    assert_eq!(needs_of(&flow, "merge-a"), ["sim-a-1", "sim-a-2"]);
    assert_eq!(
        needs_of(&flow, "all"),
        ["gen-a", "gen-b", "merge-a", "merge-b"]
    );
}

#[test]
fn name_defaults_to_file_stem_and_backend_to_local() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "regress.toml",
        "[[job]]\nname = \"a\"\ncmd = \"true\"\n",
    );
    let flow = load(&path, &catalog(), &LoadOptions::default()).unwrap();
    assert_eq!(flow.name, "regress");
    assert_eq!(flow.max_parallel, None);
    assert_eq!(flow.backends.len(), 1);
    assert_eq!(flow.backends[0].kind, "local");
}

#[test]
fn default_backend_and_implicit_instances() {
    let flow = ok(r#"
[flow]
default_backend = "fake"
[backends.big]
kind = "slurm"
[[job]]
name = "a"
cmd = "true"
[[job]]
name = "b"
cmd = "true"
backend = "slurm"
[[job]]
name = "c"
cmd = "true"
backend = "big"
"#);
    let backends: Vec<(&str, &str)> = flow
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.kind.as_str()))
        .collect();
    assert_eq!(
        backends,
        [("big", "slurm"), ("fake", "fake"), ("slurm", "slurm")]
    );
    assert_eq!(
        flow.jobs.iter().map(|j| j.backend).collect::<Vec<_>>(),
        [1, 2, 0]
    );
    // An implicit instance points at the first job that names it.
    assert_eq!(flow.backends[1].location.line, 6);
    assert_eq!(flow.backends[2].location.line, 9);
}

#[test]
fn backend_override() {
    let text = "[backends.big]\nkind = \"slurm\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\nbackend = \"local\"\n[[job]]\nname = \"b\"\ncmd = \"true\"\n";
    let flow = load_with(
        text,
        &LoadOptions {
            backend_override: Some("big".into()),
        },
    )
    .unwrap();
    assert!(flow.jobs.iter().all(|j| j.backend == 0));
    let flow = load_with(
        text,
        &LoadOptions {
            backend_override: Some("fake".into()),
        },
    )
    .unwrap();
    assert_eq!(flow.backends[1].name, "fake");
    assert!(flow.jobs.iter().all(|j| j.backend == 1));
    let diags = load_with(
        text,
        &LoadOptions {
            backend_override: Some("nope".into()),
        },
    )
    .unwrap_err();
    let d = find(&diags, "--backend: unknown backend `nope`");
    assert!(d.location.is_none());
    assert!(d
        .help
        .as_ref()
        .unwrap()
        .contains("declared instances: big; available kinds: local, slurm, fake"));
}

#[test]
fn diagnostic_display() {
    let d = Diagnostic {
        location: Some(Location {
            file: Arc::from(Path::new("path/flow.toml")),
            line: 12,
            column: 5,
        }),
        message: "boom".into(),
        help: Some("fix it".into()),
        span_len: 0,
        snippet: None,
    };
    assert_eq!(
        d.to_string(),
        "path/flow.toml:12:5: error: boom\n  help: fix it"
    );
    let d = Diagnostic {
        location: None,
        message: "boom".into(),
        help: None,
        span_len: 0,
        snippet: None,
    };
    assert_eq!(d.to_string(), "error: boom");
}

#[test]
fn toml_syntax_error_has_location() {
    let diags = errors("[[job]]\nname = \"a\"\ncmd = make\n");
    let d = find(&diags, "invalid TOML");
    assert_eq!(at(d), (3, 7));
    assert!(d.to_string().contains("flow.toml:3:7: error: invalid TOML"));
}

#[test]
fn unknown_keys_suggest() {
    let diags = errors(
        "[flow]\nnmae = \"x\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\nnedds = [\"b\"]\n[jobs]\n",
    );
    let d = find(&diags, "unknown key `nmae`");
    assert_eq!(at(d), (2, 1));
    assert!(d.help.as_ref().unwrap().starts_with("did you mean `name`?"));
    let d = find(&diags, "unknown key `nedds`");
    assert_eq!(at(d), (6, 1));
    assert!(d
        .help
        .as_ref()
        .unwrap()
        .starts_with("did you mean `needs`?"));
    let d = find(&diags, "unknown key `jobs`");
    assert!(d.help.as_ref().unwrap().starts_with("did you mean `job`?"));
}

#[test]
fn wrong_value_types() {
    let diags = errors(
        r#"
[flow]
max_parallel = "4"
[[job]]
name = 3
cmd = "x"
[[job]]
name = "b"
cmd = 5
priority = "high"
interactive = "yes"
env = { A = 1 }
needs = [1]
"#,
    );
    assert_eq!(
        at(find(
            &diags,
            "`flow.max_parallel` must be an integer, found a string"
        )),
        (3, 16)
    );
    assert_eq!(
        at(find(&diags, "`name` must be a string, found an integer")),
        (5, 8)
    );
    find(&diags, "`cmd` must be a string (run by /bin/sh -c) or an array of strings (argv), found an integer");
    find(&diags, "`priority` must be an integer");
    find(&diags, "`interactive` must be a boolean");
    let d = find(&diags, "`env`.A must be a string");
    assert_eq!(
        d.help.as_deref(),
        Some("quote the value to make it a string")
    );
    find(&diags, "each element of `needs` must be a string");
}

#[test]
fn all_errors_are_collected() {
    let diags = errors(
        r#"
[[job]]
name = "a"
cmd = "x"
timeout = "soon"
when = "sometimes"
[[job]]
name = "b"
cmd = "x"
backend = "nowhere"
fail_patterns = ["("]
"#,
    );
    assert!(diags.len() >= 4, "{}", render(&diags));
    find(&diags, "invalid duration");
    find(&diags, "invalid `when`");
    find(&diags, "unknown backend `nowhere`");
    find(&diags, "invalid regex");
}

#[test]
fn duplicate_job_names_show_both_locations() {
    let diags =
        errors("[[job]]\nname = \"a\"\ncmd = \"x\"\n\n[[job]]\nname = \"a\"\ncmd = \"y\"\n");
    let d = find(&diags, "duplicate job name `a`");
    assert_eq!(at(d), (5, 1));
    assert!(d.help.as_ref().unwrap().contains("flow.toml:1:1"), "{d}");
    let diags = errors("[[job]]\nname = \"s{x}\"\nmatrix = { x = [1, 1] }\ncmd = \"x\"\n");
    let d = find(&diags, "duplicate job name `s1`");
    assert!(d.help.as_ref().unwrap().contains("more than once"));
}

#[test]
fn unresolved_needs_suggest_nearest_names() {
    let diags = errors("[[job]]\nname = \"build\"\ncmd = \"x\"\n[[job]]\nname = \"t\"\ncmd = \"x\"\nneeds = [\"biuld\", \"gen-*\"]\n");
    let d = find(&diags, "`needs` entry `biuld` matches no job");
    assert_eq!(at(d), (7, 10));
    assert_eq!(d.help.as_deref(), Some("did you mean `build`?"));
    let d = find(&diags, "`needs` entry `gen-*` matches no job");
    assert_eq!(at(d), (7, 19));
}

#[test]
fn unresolved_needs_of_a_matrix_are_reported_once() {
    let diags = errors("[[job]]\nname = \"s{x}\"\nmatrix = { x = { range = [1, 1000] } }\ncmd = \"x\"\nneeds = [\"g{x}\"]\n");
    assert_eq!(diags.len(), 1, "{}", render(&diags));
    assert!(
        diags[0]
            .message
            .contains("`g1` matches no job (nor do 999 other expansions"),
        "{}",
        diags[0]
    );
}

#[test]
fn dependency_cycle_is_printed_as_a_path() {
    let diags = errors(
        "[[job]]\nname = \"a\"\ncmd = \"x\"\nneeds = [\"b\"]\n[[job]]\nname = \"b\"\ncmd = \"x\"\nneeds = [\"c\"]\n[[job]]\nname = \"c\"\ncmd = \"x\"\nneeds = [\"a\"]\n",
    );
    let d = find(&diags, "dependency cycle");
    assert_eq!(d.message, "dependency cycle: a -> b -> c -> a");
    assert_eq!(at(d), (1, 1));
}

#[test]
fn self_dependency() {
    let diags = errors("[[job]]\nname = \"a\"\ncmd = \"x\"\nneeds = [\"a\"]\n");
    let d = find(&diags, "job `a` depends on itself");
    assert_eq!(at(d), (4, 10));
    let diags = errors(
        "[[job]]\nname = \"s{x}\"\nmatrix = { x = [1, 2] }\ncmd = \"x\"\nneeds = [\"s*\"]\n",
    );
    find(&diags, "depend on themselves");
    let diags = errors(
        "[[job]]\nname = \"s{x}\"\nmatrix = { x = [1, 2] }\ncmd = \"x\"\nneeds = [\"s{x}\"]\n",
    );
    find(&diags, "depend on themselves");
}

#[test]
fn unknown_backend_and_kinds() {
    let diags = errors(
        r#"
[backends.big]
kind = "slrum"
[backends.mystery]
[observers.report]
kind = "junitt"
[[job]]
name = "a"
cmd = "x"
backend = "bgi"
"#,
    );
    let d = find(&diags, "[backends.big]: unknown backend kind `slrum`");
    assert_eq!(at(d), (3, 8));
    assert!(d
        .help
        .as_ref()
        .unwrap()
        .contains("did you mean `slurm`? available backend kinds: local, slurm, fake"));
    find(&diags, "[backends.mystery]: unknown backend kind `mystery`");
    let d = find(&diags, "[observers.report]: unknown observer kind `junitt`");
    assert!(d
        .help
        .as_ref()
        .unwrap()
        .contains("available observer kinds: junit"));
    let d = find(&diags, "unknown backend `bgi`");
    assert_eq!(at(d), (10, 11));
    assert!(d.help.as_ref().unwrap().contains(
        "did you mean `big`? declared instances: big, mystery; available kinds: local, slurm, fake"
    ));
    // A default that names nothing.
    let diags = errors("[flow]\ndefault_backend = \"nope\"\n[[job]]\nname = \"a\"\ncmd = \"x\"\n[[job]]\nname = \"b\"\ncmd = \"x\"\n");
    assert_eq!(diags.len(), 1, "{}", render(&diags));
    assert_eq!(at(&diags[0]), (2, 19));
}

#[test]
fn invalid_regex_names_pattern_and_position() {
    let diags = errors("[[job]]\nname = \"a\"\ncmd = \"x\"\npass_patterns = [\"ok\"]\nfail_patterns = [\"^UVM_(ERROR\"]\n");
    let d = find(&diags, "invalid regex in `fail_patterns`");
    // Points at the `(` inside the string.
    assert_eq!(at(d), (5, 24));
    assert!(d.message.contains("`^UVM_(ERROR`"), "{d}");
    assert!(d.message.contains("unclosed group (at character 6)"), "{d}");
}

#[test]
fn resources_are_checked() {
    let diags = errors(
        r#"
[resources]
vcs_license = 4
[[job]]
name = "a"
cmd = "x"
resources = { vcs_license = 5, vcs_licence = 1, cpus = 0, memory = "lots" }
"#,
    );
    let d = find(
        &diags,
        "needs 5 of resource `vcs_license`, but only 4 exist",
    );
    assert_eq!(at(d), (7, 15));
    let d = find(&diags, "unknown resource `vcs_licence`");
    assert!(d
        .help
        .as_ref()
        .unwrap()
        .starts_with("did you mean `vcs_license`?"));
    find(&diags, "`resources.cpus` must be at least 1");
    find(&diags, "invalid memory size");
    let diags = errors("[[job]]\nname = \"a\"\ncmd = \"x\"\nresources = { cpu = 2 }\n");
    let d = find(&diags, "unknown resource `cpu`");
    assert!(d.help.as_ref().unwrap().starts_with("did you mean `cpus`?"));
    let diags = errors("[resources]\ncpus = 4\n");
    find(&diags, "`cpus` is built in");
}

#[test]
fn memory_sizes() {
    use super::parse::parse_memory;
    assert_eq!(parse_memory("4G"), Ok(4096));
    assert_eq!(parse_memory("512M"), Ok(512));
    assert_eq!(parse_memory("1.5GiB"), Ok(1536));
    assert_eq!(parse_memory("2T"), Ok(2 * 1024 * 1024));
    assert_eq!(parse_memory("100"), Ok(100));
    assert_eq!(parse_memory("1k"), Ok(1));
    assert!(parse_memory("4X").is_err());
    assert!(parse_memory("G").is_err());
    let flow = ok("[[job]]\nname = \"a\"\ncmd = \"x\"\nresources = { memory = 300 }\n");
    assert_eq!(flow.jobs[0].memory_mb, Some(300));
}

#[test]
fn matrix_misuse() {
    let d = errors(
        "[[job]]\nname = \"sim-{test}\"\nmatrix = { test = [\"a\"], seed = [1] }\ncmd = \"x\"\n",
    );
    let d = find(&d, "must use every matrix variable; it lacks {seed}");
    assert_eq!(at(d), (2, 8));
    let d = errors("[[job]]\nname = \"s{t}\"\nmatrix = { t = [] }\ncmd = \"x\"\n");
    find(&d, "`matrix.t` is an empty list");
    let d = errors("[[job]]\nname = \"s{t}\"\nmatrix = { t = { range = [5, 1] } }\ncmd = \"x\"\n");
    find(&d, "`matrix.t`.range is empty: 5 > 1");
    let d = errors("[[job]]\nname = \"s{t}\"\nmatrix = { t = { range = [1] } }\ncmd = \"x\"\n");
    find(&d, "must be an array of two integers");
    let d =
        errors("[[job]]\nname = \"s{t}\"\nmatrix = { t = { range = [1, \"9\"] } }\ncmd = \"x\"\n");
    find(&d, "range[1] must be an integer");
    let d = errors("[[job]]\nname = \"s{t}\"\nmatrix = { t = { from = 1 } }\ncmd = \"x\"\n");
    find(&d, "unknown key `from`");
    let d = errors("[[job]]\nname = \"s{t}\"\nmatrix = { t = [1.5] }\ncmd = \"x\"\n");
    find(&d, "must be a string or an integer, found a float");
    let d = errors("[[job]]\nname = \"s\"\nmatrix = {}\ncmd = \"x\"\n");
    find(&d, "`matrix` is empty");
    let diags = errors("[[job]]\nname = \"s{test}\"\nmatrix = { test = [1] }\ncmd = \"run {tset}\"\nenv = { X = \"{nope}\" }\n");
    let d = find(&diags, "unknown variable `{tset}` in `cmd`");
    // Points at the `{` inside the string.
    assert_eq!(at(d), (4, 12));
    assert!(
        d.help
            .as_ref()
            .unwrap()
            .starts_with("did you mean `{test}`?"),
        "{d}"
    );
    find(&diags, "unknown variable `{nope}` in `env.X`");
    let diags = errors("[[job]]\nname = \"a\"\ncmd = \"echo ${HOME}\"\n");
    let d = find(&diags, "unknown variable `{HOME}`");
    assert!(d.help.as_ref().unwrap().contains("no matrix"));
    let diags = errors("[[job]]\nname = \"a\"\ncmd = \"awk '{print}'\"\n");
    find(&diags, "unknown variable `{print}`");
    let diags = errors("[[job]]\nname = \"a\"\ncmd = \"x }\"\n");
    find(&diags, "unmatched `}`");
    let diags = errors("[[job]]\nname = \"a\"\ncmd = \"x {\"\n");
    find(&diags, "unclosed `{`");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
    assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("").is_err());
    assert!(parse_duration("30").is_err());
    let diags = errors("[[job]]\nname = \"a\"\ncmd = \"x\"\ntimeout = \"30 mins please\"\n");
    let d = find(&diags, "invalid duration \"30 mins please\"");
    assert_eq!(at(d), (4, 11));
    let diags = errors("[[job]]\nname = \"a\"\ncmd = \"x\"\ntimeout = \"0s\"\n");
    find(&diags, "longer than zero");
}

#[test]
fn when_and_max_parallel() {
    let diags = errors("[flow]\nmax_parallel = 0\n[backends.local]\nmax_parallel = 0\n[[job]]\nname = \"a\"\ncmd = \"x\"\nwhen = \"all_passed\"\n");
    assert_eq!(
        at(find(
            &diags,
            "`flow.max_parallel` must be at least 1 (got 0)"
        )),
        (2, 16)
    );
    assert_eq!(
        at(find(
            &diags,
            "`backends.local`.max_parallel must be at least 1"
        )),
        (4, 16)
    );
    let d = find(&diags, "invalid `when` value \"all_passed\"");
    assert!(d
        .help
        .as_ref()
        .unwrap()
        .starts_with("did you mean `all-passed`?"));
}

#[test]
fn missing_name_and_cmd() {
    let diags =
        errors("[[job]]\ncmd = \"x\"\n[[job]]\nname = \"b\"\n[[job]]\nname = \"c\"\ncmd = []\n");
    assert_eq!(at(find(&diags, "the job has no `name`")), (1, 1));
    assert_eq!(at(find(&diags, "the job has no `cmd`")), (3, 1));
    find(&diags, "`cmd` is an empty array");
    let diags = errors("[[job]]\nname = \"a b\"\ncmd = \"x\"\n");
    find(&diags, "invalid job name \"a b\"");
}

#[test]
fn includes_merge_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ip/dma/flow.toml",
        r#"
[flow]
name = "dma"
include = ["../common.toml"]
[backends.big]
kind = "slurm"
partition = "long"
[resources]
lic = 2
[[job]]
name = "build"
cmd = "make"
cwd = "."
[[job]]
name = "test"
cmd = "run"
needs = ["build", "setup", "common.lint"]
backend = "big"
"#,
    );
    write(
        dir.path(),
        "ip/common.toml",
        "[[job]]\nname = \"lint\"\ncmd = \"lint\"\nneeds = [\"setup\"]\n",
    );
    let root = write(
        dir.path(),
        "flow.toml",
        r#"
[flow]
include = ["ip/dma/flow.toml", "ip/common.toml"]
[backends.big]
kind = "slurm"
partition = "long"
[[job]]
name = "setup"
cmd = "setup"
[[job]]
name = "all"
cmd = "true"
needs = ["dma.*"]
resources = { lic = 1 }
"#,
    );
    let flow = load(&root, &catalog(), &LoadOptions::default())
        .unwrap_or_else(|d| panic!("{}", render(&d)));
    assert_eq!(
        names(&flow),
        ["setup", "all", "dma.build", "dma.test", "common.lint"]
    );
    assert_eq!(
        needs_of(&flow, "dma.test"),
        ["setup", "dma.build", "common.lint"]
    );
    assert_eq!(needs_of(&flow, "all"), ["dma.build", "dma.test"]);
    assert_eq!(needs_of(&flow, "common.lint"), ["setup"]);
    assert_eq!(flow.backends.iter().filter(|b| b.name == "big").count(), 1);
    assert_eq!(flow.resources, [("lic".to_string(), 2)]);
    let build = job(&flow, "dma.build");
    assert!(build
        .cwd
        .as_ref()
        .unwrap()
        .starts_with(dir.path().join("ip/dma")));
    assert!(build.location.file.ends_with("ip/dma/flow.toml"));
}

#[test]
fn include_conflicts_loops_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.toml",
        "[flow]\ninclude = [\"b.toml\"]\n[backends.big]\nkind = \"slurm\"\npartition = \"short\"\n",
    );
    write(
        dir.path(),
        "b.toml",
        "[flow]\ninclude = [\"a.toml\", \"missing.toml\"]\n",
    );
    let root = write(dir.path(), "flow.toml", "[flow]\ninclude = [\"a.toml\"]\n[backends.big]\nkind = \"slurm\"\npartition = \"long\"\n[[job]]\nname = \"x\"\ncmd = \"x\"\n");
    let diags = load(&root, &catalog(), &LoadOptions::default()).unwrap_err();
    let d = find(&diags, "include loop");
    assert!(
        d.message.ends_with("a.toml -> b.toml -> a.toml") || d.message.contains("a.toml ->"),
        "{d}"
    );
    assert!(d.location.as_ref().unwrap().file.ends_with("b.toml"));
    let d = find(&diags, "cannot read included flow file");
    assert!(d.message.contains("missing.toml"));
    assert_eq!(at(d), (2, 22));
    let d = find(
        &diags,
        "[backends.big] is declared twice with different settings",
    );
    assert!(d.location.as_ref().unwrap().file.ends_with("a.toml"));
    assert!(d.help.as_ref().unwrap().contains("flow.toml:3:11"), "{d}");
}

#[test]
fn included_flows_need_distinct_names() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "x/flow.toml",
        "[[job]]\nname = \"a\"\ncmd = \"x\"\n",
    );
    write(
        dir.path(),
        "y/flow.toml",
        "[[job]]\nname = \"a\"\ncmd = \"x\"\n",
    );
    let root = write(
        dir.path(),
        "root.toml",
        "[flow]\ninclude = [\"x/flow.toml\", \"y/flow.toml\"]\n",
    );
    let diags = load(&root, &catalog(), &LoadOptions::default()).unwrap_err();
    find(&diags, "two included flows are both named `flow`");
    find(&diags, "duplicate job name `flow.a`");
}

#[test]
fn missing_root_file() {
    let diags = load(
        Path::new("/nonexistent/flow.toml"),
        &catalog(),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(diags.len(), 1);
    assert!(diags[0].location.is_none());
    assert!(diags[0]
        .message
        .starts_with("cannot read flow file /nonexistent/flow.toml"));
}

#[test]
fn select_keeps_transitive_needs_and_reindexes() {
    let flow = ok(FULL);
    let flow = select(flow, &["sim-dma-4".into(), "sim-smoke-1".into()]).unwrap();
    assert_eq!(names(&flow), ["build", "sim-smoke-1", "sim-dma-4"]);
    assert_eq!(flow.jobs[2].needs, [0]);
    let flow = select(ok(FULL), &["rep*".into()]).unwrap();
    assert_eq!(flow.jobs.len(), 102);
    let flow = select(ok(FULL), &["build".into()]).unwrap();
    assert_eq!(names(&flow), ["build"]);
    let diags = select(ok(FULL), &["biuld".into(), "nope-*".into()]).unwrap_err();
    let d = find(&diags, "--only `biuld` matches no job");
    assert_eq!(d.help.as_deref(), Some("did you mean `build`?"));
    find(&diags, "--only `nope-*` matches no job");
}

fn chain_job(name: String, needs: Vec<u32>, location: &Location) -> Job {
    Job {
        name,
        cmd: Command::Shell(String::new()),
        backend: 0,
        needs,
        ..Job::with_defaults(location.clone())
    }
}

#[test]
fn cycle_detection_and_select_are_iterative() {
    let location = Location {
        file: Arc::from(Path::new("f.toml")),
        line: 1,
        column: 1,
    };
    let n = 1_000_000u32;
    let mut jobs: Vec<Job> = (0..n)
        .map(|i| {
            chain_job(
                format!("j{i}"),
                if i + 1 < n { vec![i + 1] } else { vec![] },
                &location,
            )
        })
        .collect();
    assert!(graph::find_cycles(&jobs).is_empty());
    let flow = Flow {
        name: "f".into(),
        file: "f.toml".into(),
        max_parallel: None,
        backends: Vec::new(),
        observers: Vec::new(),
        resources: Vec::new(),
        jobs,
    };
    let flow = select(flow, &["j1".into()]).unwrap();
    assert_eq!(flow.jobs.len(), n as usize - 1);
    assert_eq!(flow.jobs[0].needs, [1]);
    jobs = flow.jobs;
    let last = jobs.len() - 1;
    jobs[last].needs = vec![0];
    let cycles = graph::find_cycles(&jobs);
    assert_eq!(cycles.len(), 1);
    assert_eq!(cycles[0].len(), jobs.len() + 1);
    let path = graph::cycle_path(&jobs, &cycles[0]);
    assert!(path.starts_with("j1 -> j2 -> "), "{path}");
    assert!(path.ends_with(" -> j999999 -> j1"), "{path}");
}

#[test]
fn large_matrix_loads_correctly() {
    // 100,000 jobs (the timing is measured with the release build, not here).
    let flow = ok(r#"
[[job]]
name = "build"
cmd = "make"
[[job]]
name = "sim-{test}-{seed}"
matrix = { test = ["smoke", "dma", "irq", "mem"], seed = { range = [1, 25000] } }
cmd = "./simv +UVM_TESTNAME={test} +ntb_random_seed={seed}"
needs = ["build"]
fail_patterns = ["UVM_ERROR"]
[[job]]
name = "merge-{test}"
matrix = { test = ["smoke", "dma", "irq", "mem"] }
cmd = "merge {test}"
needs = ["sim-{test}-*"]
"#);
    assert_eq!(flow.jobs.len(), 100_005);
    let j = &flow.jobs[1 + 25_000 + 41];
    assert_eq!(j.name, "sim-dma-42");
    assert_eq!(
        j.cmd,
        Command::Shell("./simv +UVM_TESTNAME=dma +ntb_random_seed=42".into())
    );
    assert_eq!(j.needs, [0]);
    assert!(Arc::ptr_eq(
        flow.jobs[1].patterns.as_ref().unwrap(),
        flow.jobs[100_000].patterns.as_ref().unwrap()
    ));
    let merge = job(&flow, "merge-irq");
    assert_eq!(merge.needs.len(), 25_000);
    assert_eq!(merge.needs[0], 50_001);
}

#[test]
fn invalid_globs_and_attrs() {
    let diags = errors("[[job]]\nname = \"a\"\ncmd = \"x\"\nattrs = { queue = 3 }\n[[job]]\nname = \"b\"\ncmd = \"x\"\nneeds = [\"a[\"]\n");
    find(&diags, "`attrs`.queue must be a string, found an integer");
    let d = find(&diags, "invalid glob `a[` in `needs`");
    assert_eq!(at(d), (8, 10));
}

#[test]
fn errors_of_several_kinds_are_reported_together_with_cycles() {
    let diags = errors(
        "[[job]]\nname = \"a\"\ncmd = \"x\"\nneeds = [\"b\"]\ntimeout = \"x\"\n[[job]]\nname = \"b\"\ncmd = \"x\"\nneeds = [\"a\"]\n",
    );
    find(&diags, "invalid duration");
    find(&diags, "dependency cycle: a -> b -> a");
}

#[test]
fn observers_merge_into_the_flow() {
    let flow = ok("[observers.junit]\npath = \"a.xml\"\n[observers.second]\nkind = \"junit\"\npath = \"b.xml\"\nmax_parallel = 3\n[[job]]\nname = \"a\"\ncmd = \"x\"\n");
    let observers: Vec<(&str, &str)> = flow
        .observers
        .iter()
        .map(|o| (o.name.as_str(), o.kind.as_str()))
        .collect();
    assert_eq!(observers, [("junit", "junit"), ("second", "junit")]);
    // For observers, every key but `kind` is configuration.
    assert!(flow.observers[1].config_toml.contains("max_parallel = 3"));
}

#[test]
fn positions_inside_strings_fall_back_to_the_string_with_escapes() {
    let diags = errors("[[job]]\nname = \"a\"\ncmd = \"a\\tb {x}\"\n");
    assert_eq!(at(find(&diags, "unknown variable `{x}`")), (3, 7));
    let diags = errors("[[job]]\nname = \"a\"\ncmd = 'ab {x}'\n");
    assert_eq!(at(find(&diags, "unknown variable `{x}`")), (3, 11));
    let diags = errors("[[job]]\nname = \"a\"\ncmd = \"\"\"ab }\"\"\"\n");
    assert_eq!(at(find(&diags, "unmatched `}`")), (3, 13));
}

// ---- What can only fail at run time is refused at load (issue 10 items 3, 6, 12, 17, 20). ----

/// One `[[job]]` with `name = NAME` (TOML text, quotes included) and `extra` lines.
fn job_toml(name: &str, extra: &str) -> String {
    format!("[[job]]\nname = {name}\ncmd = \"true\"\n{extra}\n")
}

#[test]
fn job_names_that_cannot_be_directories_are_refused_with_their_line() {
    for (name, why) in [
        ("\".\"", "`.` and `..`"),
        ("\"..\"", "`.` and `..`"),
        ("\"a\\nb\"", "newline"),
        ("\"a\\u001b[31m\"", "U+001B"),
    ] {
        let diags = errors(&job_toml(name, ""));
        let d = find(&diags, "invalid job name");
        assert!(d.message.contains(why), "{name}: {d}");
        assert_eq!(at(d), (2, 8), "{name}");
        assert!(d.help.as_ref().unwrap().contains("255 bytes"), "{d}");
    }
    let d = errors(&job_toml("\"a\\u0000b\"", ""));
    assert_eq!(at(find(&d, "the job name contains a NUL byte")), (2, 8));
    let long = format!("\"{}\"", "x".repeat(256));
    let d = errors(&job_toml(&long, ""));
    let d = find(&d, "invalid job name");
    assert!(d.message.contains("256 bytes long, more than 255"), "{d}");
    // The message echoes a cut name, not 256 characters.
    assert!(d.message.len() < 200, "{d}");
    ok(&job_toml(&format!("\"{}\"", "x".repeat(255)), ""));
    // `/` stays allowed: the run maps names to directories one-to-one.
    ok(&job_toml("\"ip/dma/build\"", ""));
}

#[test]
fn job_names_are_checked_after_matrix_expansion() {
    let diags = errors(
        "[[job]]\nname = \"{v}\"\ncmd = \"true\"\nmatrix = { v = [\"ok\", \"..\", \".\", \"fine\"] }\n",
    );
    let d = find(&diags, "invalid job name \"..\"");
    assert!(
        d.message.ends_with("(and 1 other expansion of this entry)"),
        "{d}"
    );
    assert_eq!(at(d), (2, 8));
    let diags =
        errors("[[job]]\nname = \"x{v}\"\ncmd = \"true\"\nmatrix = { v = [\"\", \"a b\"] }\n");
    find(&diags, "invalid job name \"xa b\": it contains a space");
    let diags = errors("[[job]]\nname = \"{v}\"\ncmd = \"true\"\nmatrix = { v = [\"\", \"b\"] }\n");
    find(&diags, "invalid job name \"\": it is empty");
    let diags = errors(&format!(
        "[[job]]\nname = \"j-{{v}}\"\ncmd = \"true\"\nmatrix = {{ v = [\"{}\"] }}\n",
        "y".repeat(300)
    ));
    find(&diags, "302 bytes long");
}

#[test]
fn flow_names_that_escape_the_output_directory_are_refused() {
    for name in [
        "\"..\"",
        "\"../x\"",
        "\"a/b\"",
        "\"\"",
        "\"a\\u0000\"",
        "\".\"",
    ] {
        let diags = errors(&format!("[flow]\nname = {name}\n{}", job_toml("\"a\"", "")));
        let d = find(&diags, "invalid flow name");
        assert_eq!(at(d), (2, 8), "{name}: {d}");
        assert!(d.help.as_ref().unwrap().contains("without `/`"), "{d}");
    }
    // The default, the file's stem, is checked too: `..toml` has the stem `.`.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "..toml", &job_toml("\"a\"", ""));
    let diags = load(&path, &catalog(), &LoadOptions::default()).unwrap_err();
    let d = find(&diags, "the flow's name defaults to the file's stem \".\"");
    assert_eq!(at(d), (1, 1));
    assert!(d.help.as_ref().unwrap().contains("[flow] name"));
}

#[test]
fn matrix_counts_never_wrap_and_the_limit_holds_for_the_whole_flow() {
    // 2^64 values used to wrap to 0 jobs: the job silently disappeared.
    let diags = errors("[[job]]\nname = \"a-{x}\"\ncmd = \"true\"\nmatrix = { x = { range = [-9223372036854775808, 9223372036854775807] } }\n");
    let d = find(&diags, "the matrix expands to 2^64 or more jobs");
    assert_eq!(at(d), (4, 10));
    // The product of three big axes overflows u64.
    let diags = errors("[[job]]\nname = \"a-{x}-{y}-{z}\"\ncmd = \"true\"\nmatrix = { x = { range = [1, 4000000] }, y = { range = [1, 4000000] }, z = { range = [1, 4000000] } }\n");
    find(&diags, "2^64 or more jobs");
    let diags = errors("[[job]]\nname = \"a-{x}-{y}\"\ncmd = \"true\"\nmatrix = { x = { range = [1, 10000] }, y = { range = [1, 4000] } }\n");
    find(
        &diags,
        "the matrix expands to 40,000,000 jobs, more than the limit of 10,000,000",
    );
    // Two matrices under the limit each, over it together: refused before anything is built.
    let diags = errors("[[job]]\nname = \"a-{x}\"\ncmd = \"true\"\nmatrix = { x = { range = [1, 6000000] } }\n[[job]]\nname = \"b-{x}\"\ncmd = \"true\"\nmatrix = { x = { range = [1, 6000000] } }\n");
    let d = find(
        &diags,
        "the flow expands to 12,000,000 jobs, more than the limit of 10,000,000",
    );
    assert_eq!(at(d), (1, 1));
    assert_eq!(MAX_JOBS, 10_000_000);
}

#[test]
fn dependencies_that_multiply_past_the_limit_are_refused_before_allocating() {
    // 10,001 jobs each needing 10,001 others: 100,020,001 edges (0.4 GB) are refused.
    let diags = errors("[[job]]\nname = \"a-{i}\"\ncmd = \"true\"\nmatrix = { i = { range = [0, 10000] } }\n[[job]]\nname = \"b-{i}\"\ncmd = \"true\"\nmatrix = { i = { range = [0, 10000] } }\nneeds = [\"a-*\"]\n");
    let d = find(&diags, "more than 100,000,000 dependencies");
    assert_eq!(at(d), (9, 10));
    assert_eq!(build::MAX_DEPENDENCIES, 100_000_000);
    // Through a template the needs are resolved job by job, and the limit stops the expansion
    // as soon as it is crossed (a small limit here: the real one takes seconds to reach).
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "flow.toml", "[[job]]\nname = \"a-{i}\"\ncmd = \"true\"\nmatrix = { i = { range = [0, 100] } }\n[[job]]\nname = \"b-{i}\"\ncmd = \"true\"\nmatrix = { i = { range = [0, 100] } }\nneeds = [\"a-{i}\", \"a-*\"]\n");
    let diags = build::load_within(&path, &catalog(), &LoadOptions::default(), 5_000).unwrap_err();
    let d = find(&diags, "more than 5,000 dependencies");
    assert_eq!(at(d), (9, 10));
    build::load_within(&path, &catalog(), &LoadOptions::default(), 101 * 101).unwrap();
}

#[test]
fn durations_too_long_for_the_host_are_refused() {
    assert_eq!(
        parse_duration("100y"),
        Ok(Duration::from_secs(3_155_760_000))
    );
    assert_eq!(parse_duration("100y"), Ok(MAX_DURATION));
    let e = parse_duration("101y").unwrap_err();
    assert!(e.contains("at most 100 years"), "{e}");
    // u64::MAX seconds passed `check` and panicked the scheduler (F14).
    let diags = errors(&job_toml("\"a\"", "timeout = \"18446744073709551615s\""));
    let d = find(&diags, "is too long: it must be at most 100 years");
    assert_eq!(at(d), (4, 11));
    assert_eq!(
        d.help.as_deref(),
        Some("leave `timeout` out for no time limit")
    );
    let flow = ok(&job_toml("\"a\"", "timeout = \"36500days\""));
    assert_eq!(
        flow.jobs[0].timeout.as_ref().unwrap().0,
        Duration::from_secs(36500 * 86400)
    );
}

#[test]
fn a_number_as_timeout_suggests_a_duration_string() {
    let diags = errors(&job_toml("\"a\"", "timeout = 30"));
    let d = find(
        &diags,
        "`timeout` must be a duration string, found an integer",
    );
    assert_eq!(at(d), (4, 11));
    assert!(
        d.help.as_ref().unwrap().contains("`timeout = \"30s\"`"),
        "{d}"
    );
}

#[test]
fn nul_bytes_are_refused_wherever_they_would_reach_a_program() {
    let diags = errors(
        "[[job]]\nname = \"a\"\ncmd = \"echo a\\u0000b\"\ncwd = \"d\\u0000\"\nenv = { X = \"1\\u0000\" }\nattrs = { q = \"\\u0000\" }\n[[job]]\nname = \"b-{v}\"\ncmd = [\"echo\", \"\\u0000\"]\nmatrix = { v = [\"x\\u0000\"] }\n",
    );
    for (needle, line) in [
        ("`cmd` contains a NUL byte", 3),
        ("`cwd` contains a NUL byte", 4),
        ("`env.X` contains a NUL byte", 5),
        ("`attrs.q` contains a NUL byte", 6),
        ("a value of `matrix.v` contains a NUL byte", 10),
    ] {
        let d = find(&diags, needle);
        assert_eq!(d.location.as_ref().unwrap().line, line, "{d}");
        assert!(d.help.as_ref().unwrap().contains("NUL"), "{d}");
    }
    // The argv element is a separate error, on line 9.
    assert!(diags
        .iter()
        .any(|d| d.message == "`cmd` contains a NUL byte" && at(d).0 == 9));
}

#[test]
fn environment_variable_names_execve_cannot_take_are_refused() {
    let diags = errors(&job_toml(
        "\"a\"",
        "env = { \"A=B\" = \"1\", \"\" = \"2\", \"C\\u0000\" = \"3\", OK = \"4\" }",
    ));
    let d = find(
        &diags,
        "invalid environment variable name \"A=B\" in `env`: it contains `=`",
    );
    assert_eq!(at(d), (4, 9));
    find(
        &diags,
        "invalid environment variable name \"\" in `env`: it is empty",
    );
    find(&diags, "it contains a NUL byte");
    assert_eq!(diags.len(), 3, "{}", render(&diags));
}

#[test]
fn empty_commands_are_refused() {
    for cmd in ["\"\"", "\"   \"", "\"\\n\\t\""] {
        let diags = errors(&format!("[[job]]\nname = \"a\"\ncmd = {cmd}\n"));
        assert_eq!(at(find(&diags, "`cmd` is empty")), (3, 7), "{cmd}");
    }
    let diags = errors("[[job]]\nname = \"a\"\ncmd = [\"\", \"x\"]\n");
    assert_eq!(
        at(find(
            &diags,
            "the program (the first element of `cmd`) is empty"
        )),
        (3, 8)
    );
    // Empty arguments after the program are fine.
    ok("[[job]]\nname = \"a\"\ncmd = [\"echo\", \"\"]\n");
    // A matrix value can empty a command too.
    let diags = errors(
        "[[job]]\nname = \"a-{c}\"\ncmd = \"{c}\"\nmatrix = { c = [\"make\", \" \", \"\"] }\n",
    );
    let d = find(&diags, "the command of job `a- ` is empty");
    assert!(
        d.message.ends_with("(and 1 other expansion of this entry)"),
        "{d}"
    );
    let diags =
        errors("[[job]]\nname = \"a-{c}\"\ncmd = [\"{c}\"]\nmatrix = { c = [\"x\", \"\"] }\n");
    find(&diags, "the command of job `a-` is empty");
}

#[test]
fn empty_needs_entries_are_refused() {
    let diags = errors(&job_toml("\"a\"", "needs = [\"\"]"));
    assert_eq!(at(find(&diags, "`needs` has an empty entry")), (4, 10));
    let diags = errors(&job_toml("\"a\"", "needs = \"\""));
    find(&diags, "`needs` has an empty entry");
    // Through a matrix value: it used to be silently ignored.
    let diags = errors(
        "[[job]]\nname = \"b\"\ncmd = \"x\"\n[[job]]\nname = \"a-{d}\"\ncmd = \"x\"\nmatrix = { d = [\"b\", \"\"] }\nneeds = [\"{d}\"]\n",
    );
    let d = find(&diags, "a matrix value makes a `needs` entry empty");
    assert_eq!(at(d), (8, 10));
}

#[test]
fn an_empty_flow_is_an_error() {
    for text in ["", "# nothing yet\n", "[flow]\nname = \"x\"\n"] {
        let diags = errors(text);
        let d = find(&diags, "the flow has no jobs");
        assert_eq!(at(d), (1, 1));
        assert!(d.help.as_ref().unwrap().contains("[[job]]"));
    }
    // An included file without jobs (shared declarations) is fine.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "common.toml", "[resources]\nlic = 2\n");
    let root = write(
        dir.path(),
        "flow.toml",
        "[flow]\ninclude = [\"common.toml\"]\n[[job]]\nname = \"a\"\ncmd = \"x\"\nresources = { lic = 1 }\n",
    );
    load(&root, &catalog(), &LoadOptions::default()).unwrap();
}

#[test]
fn a_resource_named_unlike_cpus_gets_no_cpus_suggestion() {
    let diags = errors(&job_toml("\"a\"", "resources = { gpus = 1 }"));
    let d = find(&diags, "unknown resource `gpus`");
    assert!(d.help.as_ref().unwrap().starts_with("declare it"), "{d}");
    let diags = errors(&job_toml("\"a\"", "resources = { cpu = 1 }"));
    let d = find(&diags, "unknown resource `cpu`");
    assert!(
        d.help.as_ref().unwrap().starts_with("did you mean `cpus`?"),
        "{d}"
    );
}

/// Loads `root` from `dir` and returns the errors.
fn include_errors(dir: &Path, target: &str) -> Vec<Diagnostic> {
    let root = write(
        dir,
        "flow.toml",
        &format!("[flow]\ninclude = [{target:?}]\n[[job]]\nname = \"a\"\ncmd = \"x\"\n"),
    );
    load(&root, &catalog(), &LoadOptions::default()).unwrap_err()
}

#[test]
fn includes_of_special_files_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Opening a FIFO for reading used to block forever (nobody writes to it).
    let diags = include_errors(dir.path(), "fifo");
    let d = find(&diags, "it is a FIFO (named pipe), not a regular file");
    assert_eq!(at(d), (2, 12));
    let diags = include_errors(dir.path(), "/dev/zero");
    find(
        &diags,
        "/dev/zero: it is a character device, not a regular file",
    );
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let diags = include_errors(dir.path(), "sub");
    find(&diags, "it is a directory, not a regular file");
    // A regular file over the size cap is refused from its size alone (a sparse file here).
    let big = std::fs::File::create(dir.path().join("big.toml")).unwrap();
    big.set_len(source::MAX_FLOW_FILE_BYTES + 1).unwrap();
    let diags = include_errors(dir.path(), "big.toml");
    find(&diags, "it is larger than the limit of 64 MiB");
}

#[test]
fn the_root_flow_may_be_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("flow-pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            std::fs::write(&fifo, "[[job]]\nname = \"piped\"\ncmd = \"x\"\n").unwrap()
        })
    };
    let flow = load(&fifo, &catalog(), &LoadOptions::default()).unwrap();
    writer.join().unwrap();
    assert_eq!(names(&flow), ["piped"]);
}

#[test]
fn invalid_utf8_names_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flow.toml");
    std::fs::write(&path, b"[[job]]\nname = \"a\"\ncmd = \"caf\xe9 x\"\n").unwrap();
    let diags = load(&path, &catalog(), &LoadOptions::default()).unwrap_err();
    let d = find(&diags, "the file is not UTF-8 text: byte 0xE9");
    assert_eq!(at(d), (3, 11));
    assert!(d.help.as_ref().unwrap().contains("UTF-8"));
    // The report shows the line, the byte replaced.
    let text = report(&diags);
    assert!(text.contains("3 | cmd = \"caf\u{fffd} x\""), "{text}");
}

#[test]
fn a_file_that_is_not_toml_gives_a_bounded_report() {
    let passwd: String = (0..40)
        .map(|i| format!("user{i}:x:{i}:{i}:User {i}:/home/user{i}:/bin/sh\n"))
        .collect();
    let diags = errors(&passwd);
    assert!(diags.len() <= 6, "{}", render(&diags));
    let last = diags.last().unwrap();
    assert!(
        last.message
            .contains("more TOML syntax errors in this file"),
        "{last}"
    );
    assert!(last.help.as_ref().unwrap().contains("is this a flow file?"));
}

#[test]
fn the_report_shows_the_source_line_with_a_caret() {
    let diags = errors(&job_toml("\"a\"", "timeout = \"soon\""));
    let text = report(&diags);
    let expected_start = format!(
        "{}:4:11: error: invalid duration \"soon\"",
        diags[0].location.as_ref().unwrap().file.display()
    );
    assert!(text.starts_with(&expected_start), "{text}");
    assert!(
        text.contains("4 | timeout = \"soon\"\n  |           ^^^^^^\n"),
        "{text}"
    );
    assert!(text.contains("= help: write a duration"), "{text}");
    // A whole `[[job]]` is pointed at by its header.
    let text = report(&errors("[[job]]\nname = \"a\"\n"));
    assert!(text.contains("1 | [[job]]\n  | ^^^^^^^"), "{text}");
}

#[test]
fn the_report_is_bounded_however_many_errors_and_however_long_the_values() {
    // 10,000 independent errors: 30 shown, the rest counted.
    let text: String = (0..10_000)
        .map(|i| format!("[[job]]\nname = \"j{i}\"\ncmd = \"\"\n"))
        .collect();
    let diags = errors(&text);
    assert_eq!(diags.len(), 10_000);
    let text = report(&diags);
    assert!(text.lines().count() < 400, "{} lines", text.lines().count());
    assert!(
        text.contains("... and 9970 more errors (the first 30 are shown)"),
        "{text}"
    );
    assert!(text.ends_with("\n10000 errors"), "{text}");
    // A 1 MB unknown key is echoed as its start and end, on short lines.
    let key = "k".repeat(1 << 20);
    let diags = errors(&job_toml("\"a\"", &format!("{key} = 1")));
    let text = report(&diags);
    assert!(text.contains("characters ...]"), "{text}");
    let longest = text.lines().map(str::len).max().unwrap();
    assert!(longest < 600, "longest line {longest}");
    // Control characters in echoed values do not reach the terminal.
    let diags = errors(&job_toml("\"a\"", "\"\\u001b[2J\" = 1"));
    assert!(!report(&diags).contains('\u{1b}'));
}

#[test]
fn the_plan_is_bounded_and_shows_every_setting() {
    let flow = ok(r#"
[resources]
lic = 4
[[job]]
name = "mid-{i}"
cmd = "true"
matrix = { i = { range = [1, 1000] } }
[[job]]
name = "sink"
cmd = "report --all"
needs = ["mid-*"]
when = "always"
timeout = "1h 30m"
retries = 2
retry_on = ["exit_code", "lost"]
retry_backoff = "30s"
priority = 5
resources = { cpus = 2, memory = "1G", lic = 1 }
pass_patterns = ["^DONE$"]
fail_patterns = ["ERROR"]
env = { A = "1" }
"#);
    let plan = render::plan(&flow);
    let sink: Vec<&str> = plan
        .lines()
        .skip_while(|l| !l.starts_with("sink "))
        .take_while(|l| l.starts_with("sink ") || l.starts_with("    "))
        .collect();
    assert_eq!(
        sink,
        [
            "sink  [backend local, priority 5]  report --all",
            "    needs: mid-1, mid-2, mid-3, mid-4, mid-5, mid-6, mid-7, mid-8, ... and 992 more (1000 jobs)",
            "    when: always",
            "    resources: cpus 2, memory 1024 MiB, lic 1",
            "    timeout: 1h 30m",
            "    retries: 2 on exit_code, lost, backoff 30s (doubling)",
            "    pass: `^DONE$`",
            "    fail: `ERROR`",
            "    env: A=1",
        ]
    );
    assert!(plan.lines().all(|l| l.len() < 300));
    assert!(plan.ends_with("1001 jobs: 1001 on local\n"), "{plan}");
    // A multi-line command stays one line of the plan.
    let flow = ok("[[job]]\nname = \"a\"\ncmd = \"\"\"\nmake\nmake test\n\"\"\"\n");
    assert!(
        render::plan(&flow).starts_with("a  [backend local]  make\\nmake test\\n\n"),
        "{}",
        render::plan(&flow)
    );
}

#[test]
fn graph_has_every_edge() {
    let flow = ok("[[job]]\nname = \"a\"\ncmd = \"x\"\n[[job]]\nname = \"b\\\"q\"\ncmd = \"x\"\nneeds = [\"a\"]\n");
    assert_eq!(
        render::graph(&flow),
        "digraph \"flow\" {\n  rankdir=LR;\n  \"a\";\n  \"b\\\"q\";\n  \"a\" -> \"b\\\"q\";\n}\n"
    );
}

#[test]
fn retry_backoff_is_a_duration_on_a_job_or_a_default_in_flow() {
    let flow = ok(&job_toml("\"a\"", "retries = 2\nretry_backoff = \"30s\""));
    assert_eq!(flow.jobs[0].retry_backoff, Duration::from_secs(30));
    assert_eq!(flow.jobs[0].retries, 2);
    // `[flow]` sets the defaults of the file's jobs, wherever it is written; a job overrides.
    let text = "[[job]]\nname = \"a\"\ncmd = \"true\"\n\
                [[job]]\nname = \"b\"\ncmd = \"true\"\nretries = 0\nretry_backoff = \"1s\"\n\
                [flow]\nretries = 3\nretry_on = \"any\"\nretry_backoff = \"2m\"\n";
    let flow = ok(text);
    let a = &flow.jobs[0];
    assert_eq!(
        (a.retries, a.retry_on, a.retry_backoff),
        (3, RetryOn::ANY, Duration::from_secs(120))
    );
    let b = &flow.jobs[1];
    assert_eq!(
        (b.retries, b.retry_on, b.retry_backoff),
        (0, RetryOn::ANY, Duration::from_secs(1))
    );
    // Unset everywhere: no backoff.
    assert_eq!(
        ok(&job_toml("\"a\"", "")).jobs[0].retry_backoff,
        Duration::ZERO
    );
}

#[test]
fn a_bad_retry_backoff_is_an_error_at_its_line() {
    let d = errors(&job_toml("\"a\"", "retry_backoff = 30"));
    let d = find(&d, "`retry_backoff` must be a duration string");
    assert_eq!(at(d), (4, 17));
    assert!(
        d.help
            .as_deref()
            .unwrap()
            .contains("`retry_backoff = \"30s\"`"),
        "{:?}",
        d.help
    );
    let d = errors(&job_toml("\"a\"", "retry_backoff = \"soon\""));
    assert_eq!(at(find(&d, "invalid duration \"soon\"")), (4, 17));
    let d = errors(&job_toml("\"a\"", "retry_backoff = \"2h\""));
    let d = find(
        &d,
        "`retry_backoff` \"2h\" is too long: it must be at most 1 hour",
    );
    assert_eq!(at(d), (4, 17));
    let d = errors(
        "[flow]\nretry_backoff = \"x\"\nretries = -1\n[[job]]\nname = \"a\"\ncmd = \"true\"\n",
    );
    assert_eq!(at(find(&d, "invalid duration \"x\"")), (2, 17));
    assert_eq!(at(find(&d, "`flow.retries` must not be negative")), (3, 11));
}
