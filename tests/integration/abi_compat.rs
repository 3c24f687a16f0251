//! A plugin built against an OLDER plugin API (one trailing method fewer) loads into this host
//! and works. The test builds such a plugin for real: it copies plugin-api, removes what was
//! added in the current version (the `@@since-<version>` blocks), sets the older version, and
//! builds a small backend plugin against that copy, pinned by the workspace's Cargo.lock.

use std::{path::Path, process::Command};

use flowrun_tests::{flowrun, run_flow, workspace_root};

/// Removes every `// @@since-…-begin` … `// @@since-…-end` block.
fn strip_since_blocks(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.trim_start().starts_with("// @@since-") && line.contains("-begin") {
            skipping = true;
        } else if line.trim_start().starts_with("// @@since-") && line.contains("-end") {
            skipping = false;
        } else if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

const OLD_PLUGIN: &str = r#"
use flowrun_plugin_api::{sdk::*, *};

struct Old { sink: Sink }

impl BackendImpl for Old {
    fn capabilities(&self) -> Capabilities {
        Capabilities { flags: CapabilityFlags::NO_JOB_DIR, default_max_parallel: 0, max_batch: 0 }
    }
    fn submit(&self, jobs: &[JobSpec]) -> Vec<SubmitAnswer> {
        jobs.iter()
            .map(|j| {
                self.sink.emit(JobEvent::started(j.id));
                let code = if j.name.as_str().ends_with("-fails") { 4 } else { 0 };
                self.sink.emit(JobEvent::exited(j.id, code));
                SubmitAnswer::accepted(j.id)
            })
            .collect()
    }
    fn kill(&self, _ids: &[JobId]) {}
    fn shutdown(&self) {}
}

fn create(_config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
    Ok(Box::new(Old { sink }))
}

export_plugin!(name = "compat", version = "0.0.1");
register_backend!(kind = "compat", description = "built against an older plugin API", create = create);
"#;

#[test]
fn a_plugin_built_against_an_older_minor_of_the_plugin_api_loads_and_works() {
    let root = workspace_root();
    let host_api = semver::Version::parse(&read_api_version(&root)).unwrap();
    assert!(
        host_api.patch > 0,
        "this test needs a host API with a patch > 0 to build an older one"
    );
    let older = format!(
        "{}.{}.{}",
        host_api.major,
        host_api.minor,
        host_api.patch - 1
    );

    // A scratch workspace under target/, so that repeated runs build incrementally.
    let ws = root.join("target/abi-compat-fixture");
    let _ = std::fs::remove_dir_all(ws.join("plugin-api"));
    copy_dir(&root.join("plugin-api"), &ws.join("plugin-api"));
    for file in ["src/abi.rs", "src/sdk.rs"] {
        let p = ws.join("plugin-api").join(file);
        let stripped = strip_since_blocks(&std::fs::read_to_string(&p).unwrap());
        std::fs::write(&p, stripped).unwrap();
    }
    let abi = std::fs::read_to_string(ws.join("plugin-api/src/abi.rs")).unwrap();
    assert!(
        !abi.contains("fn stats"),
        "the older API copy must lack the trailing `stats` method"
    );
    let manifest = ws.join("plugin-api/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replacen(
        &format!("version = \"{}\"", read_api_version(&root)),
        &format!("version = \"{older}\""),
        1,
    );
    std::fs::write(&manifest, text).unwrap();

    // The workspace's shared settings and dependency versions, so the copy builds as it does here.
    let root_manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let shared = &root_manifest[root_manifest.find("[workspace.package]").unwrap()..];
    let shared = shared.replace(
        "flowrun-plugin-api = { path = \"plugin-api\", version = \"",
        "flowrun-plugin-api-unused = { path = \"plugin-api\", version = \"",
    );
    std::fs::write(
        ws.join("Cargo.toml"),
        format!(
            "[workspace]\nresolver = \"2\"\nmembers = [\"plugin-api\", \"old-plugin\"]\n\n{shared}"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(ws.join("old-plugin/src")).unwrap();
    std::fs::write(
        ws.join("old-plugin/Cargo.toml"),
        "[package]\nname = \"flowrun-plugin-compat\"\nversion = \"0.0.1\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nflowrun-plugin-api = { path = \"../plugin-api\" }\n",
    )
    .unwrap();
    std::fs::write(ws.join("old-plugin/src/lib.rs"), OLD_PLUGIN).unwrap();
    std::fs::copy(root.join("Cargo.lock"), ws.join("Cargo.lock")).unwrap();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-p", "flowrun-plugin-compat"])
        .current_dir(&ws)
        .env("CARGO_TARGET_DIR", ws.join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the older plugin failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = ws.join("target/debug/libflowrun_plugin_compat.so");

    // Loads: install validates it (version gate and swapped layout check).
    let home = tempfile::tempdir().unwrap();
    let o = flowrun(home.path())
        .args(["plugins", "install"])
        .arg(&lib)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("plugin API {older}")));

    // Works: jobs run through it, and the host's call of the newer `stats` method (made at
    // shutdown) falls back to the default instead of crashing.
    let flow = "[[job]]\nname = \"a\"\ncmd = \"true\"\nbackend = \"compat\"\n[[job]]\nname = \"b-fails\"\ncmd = \"true\"\nbackend = \"compat\"\nneeds = [\"a\"]\n";
    let run = run_flow(home.path(), flow, &["-v", "-v"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("a"), "passed");
    assert_eq!(run.status("b-fails"), "failed");
    assert_eq!(run.reason("b-fails"), "exit code 4");
}

fn read_api_version(root: &Path) -> String {
    let text = std::fs::read_to_string(root.join("plugin-api/Cargo.toml")).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("version = \"")
                .map(|v| v.trim_end_matches('"').to_string())
        })
        .unwrap()
}
