//! Plugins built against an OLDER plugin ABI load into this host and work. Two are built for
//! real, in one scratch workspace:
//! - `compat`: against copies of flowrun-plugin-abi and -sdk with what the current ABI version
//!   added removed (the `@@since-<version>` blocks: the trailing trait methods) and the previous
//!   patch version set, pinned by the workspace's Cargo.lock;
//! - `presplit`: against the frozen flowrun-plugin-api 0.1.2 of `tests/fixtures/plugin-api-0.1.2`,
//!   the single crate every plugin was built against before the split. It has no identity note,
//!   so the host must learn what it is by probing it in a child process.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use flowrun_tests::{bin_dir, flowrun, run_flow, workspace_root};

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

/// A backend written against the current SDK (built against an older patch of the ABI).
const COMPAT_PLUGIN: &str = r#"
use flowrun_plugin_sdk::*;

struct Old { sink: Sink }

impl BackendImpl for Old {
    fn capabilities(&self) -> Capabilities {
        Capabilities { flags: CapabilityFlags::NO_JOB_DIR, default_max_parallel: 0, max_batch: 0 }
    }
    fn submit(&self, jobs: Jobs<'_>) -> Vec<Answer> {
        jobs.iter()
            .map(|j| {
                self.sink.emit(Event::started(j.id()));
                let code = if j.name().ends_with("-fails") { 4 } else { 0 };
                self.sink.emit(Event::exited(j.id(), code));
                Answer::accepted(j.id())
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
register_backend!(kind = "compat", description = "built against an older plugin ABI", create = create);
"#;

/// The same backend as a site wrote it before the split, against flowrun-plugin-api 0.1.2.
const PRESPLIT_PLUGIN: &str = r#"
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

export_plugin!(name = "presplit", version = "0.0.2");
register_backend!(kind = "presplit", description = "built before the plugin API split", create = create);
"#;

fn crate_version(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("version = \"")
                .map(|v| v.trim_end_matches('"').to_string())
        })
        .unwrap()
}

struct Built {
    /// The ABI version the `compat` plugin was built against.
    older: String,
    compat: PathBuf,
    presplit: PathBuf,
}

fn write_plugin_crate(ws: &Path, dir: &str, name: &str, dependency: &str, source: &str) {
    std::fs::create_dir_all(ws.join(dir).join("src")).unwrap();
    std::fs::write(
        ws.join(dir).join("Cargo.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"0.0.1\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n{dependency}\n"),
    )
    .unwrap();
    std::fs::write(ws.join(dir).join("src/lib.rs"), source).unwrap();
}

/// Builds both plugins once per test process, in a scratch workspace under target/ so that
/// repeated runs build incrementally.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let host_api = semver::Version::parse(&crate_version(&root.join("plugin-api/abi/Cargo.toml"))).unwrap();
        assert!(
            host_api.patch > 0,
            "this test needs a host ABI with a patch > 0 to build an older one"
        );
        let older = format!("{}.{}.{}", host_api.major, host_api.minor, host_api.patch - 1);

        let ws = bin_dir().parent().unwrap().join("abi-compat-fixture");
        let _ = std::fs::remove_dir_all(ws.join("plugin-api"));
        for part in ["abi", "sdk"] {
            copy_dir(&root.join("plugin-api").join(part), &ws.join("plugin-api").join(part));
        }
        for file in ["plugin-api/abi/src/lib.rs", "plugin-api/sdk/src/backend.rs"] {
            let p = ws.join(file);
            let stripped = strip_since_blocks(&std::fs::read_to_string(&p).unwrap());
            std::fs::write(&p, stripped).unwrap();
        }
        let abi = std::fs::read_to_string(ws.join("plugin-api/abi/src/lib.rs")).unwrap();
        for method in ["fn stats", "fn reattach"] {
            assert!(
                !abi.contains(method),
                "the older ABI copy must lack the trailing `{method}` method"
            );
        }
        let manifest = ws.join("plugin-api/abi/Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap().replacen(
            &format!("version = \"{host_api}\""),
            &format!("version = \"{older}\""),
            1,
        );
        std::fs::write(&manifest, text).unwrap();
        let _ = std::fs::remove_dir_all(ws.join("presplit-api"));
        copy_dir(&root.join("tests/fixtures/plugin-api-0.1.2"), &ws.join("presplit-api"));

        // The workspace's shared settings and dependency versions, so the copies build as they
        // do here; the SDK copy pins the older ABI.
        let root_manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        // Everything after `[workspace]` itself: lints, package, dependencies, profiles.
        let shared_start = ["[workspace.lints", "[workspace.package]"]
            .iter()
            .filter_map(|t| root_manifest.find(t))
            .min()
            .unwrap();
        let shared = &root_manifest[shared_start..];
        let shared = shared
            .replace(
                &format!("path = \"plugin-api/abi\", version = \"={host_api}\""),
                &format!("path = \"plugin-api/abi\", version = \"={older}\""),
            )
            .lines()
            .filter(|l| !l.starts_with("flowrun-plugin-testkit"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(shared.contains(&format!("version = \"={older}\"")), "{shared}");
        std::fs::write(
            ws.join("Cargo.toml"),
            format!(
                "[workspace]\nresolver = \"2\"\nmembers = [\"plugin-api/abi\", \"plugin-api/sdk\", \"presplit-api\", \"compat-plugin\", \"presplit-plugin\"]\n\n{shared}\n"
            ),
        )
        .unwrap();
        write_plugin_crate(
            &ws,
            "compat-plugin",
            "flowrun-plugin-compat",
            "flowrun-plugin-sdk = { path = \"../plugin-api/sdk\" }",
            COMPAT_PLUGIN,
        );
        write_plugin_crate(
            &ws,
            "presplit-plugin",
            "flowrun-plugin-presplit",
            "flowrun-plugin-api = { path = \"../presplit-api\" }",
            PRESPLIT_PLUGIN,
        );
        std::fs::copy(root.join("Cargo.lock"), ws.join("Cargo.lock")).unwrap();

        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "flowrun-plugin-compat", "-p", "flowrun-plugin-presplit"])
            .current_dir(&ws)
            .env("CARGO_TARGET_DIR", ws.join("target"))
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building the older plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Built {
            older,
            compat: ws.join("target/debug/libflowrun_plugin_compat.so"),
            presplit: ws.join("target/debug/libflowrun_plugin_presplit.so"),
        }
    })
}

const FLOW: &str = "[[job]]\nname = \"a\"\ncmd = \"true\"\nbackend = \"KIND\"\n[[job]]\nname = \"b-fails\"\ncmd = \"true\"\nbackend = \"KIND\"\nneeds = [\"a\"]\n";

/// Installs `lib` and runs two jobs on it: the host's call of the newer `stats` method (made at
/// shutdown) must fall back to the default instead of crashing.
fn installs_and_runs(lib: &Path, kind: &str, api_version: &str) {
    let home = tempfile::tempdir().unwrap();
    let o = flowrun(home.path())
        .args(["plugins", "install"])
        .arg(lib)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains(&format!("plugin API {api_version}")),
        "{text}"
    );

    let run = run_flow(home.path(), &FLOW.replace("KIND", kind), &["-v", "-v"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("a"), "passed");
    assert_eq!(run.status("b-fails"), "failed");
    assert_eq!(run.reason("b-fails"), "exit code 4");
}

#[test]
fn a_plugin_built_against_an_older_patch_of_the_abi_loads_and_works() {
    let b = built();
    installs_and_runs(&b.compat, "compat", &b.older);
}

#[test]
fn a_plugin_built_before_the_api_split_is_identified_by_a_probe_and_works() {
    let b = built();
    // Found on the plugin path without a registry: `plugins list` learns what it is from a
    // child process (it has no identity note), and a run loads it.
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("path");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&b.presplit, dir.join("libflowrun_plugin_presplit.so")).unwrap();
    let o = flowrun(home.path())
        .env("FLOWRUN_PLUGIN_PATH", &dir)
        .args(["plugins", "list", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "presplit")
        .unwrap_or_else(|| panic!("{rows:#}"));
    assert_eq!(row["version"], "0.0.2", "{row:#}");
    assert_eq!(row["api_version"], "0.1.2", "{row:#}");
    assert_eq!(row["identified_by"], "probe", "{row:#}");
    assert_eq!(row["backends"][0]["name"], "presplit", "{row:#}");
    assert!(row["error"].is_null(), "{row:#}");

    let run = flowrun_tests::run_flow_with(
        home.path(),
        &FLOW.replace("KIND", "presplit"),
        &[],
        &[("FLOWRUN_PLUGIN_PATH", dir.as_os_str())],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.reason("b-fails"), "exit code 4");

    installs_and_runs(&b.presplit, "presplit", "0.1.2");
}

/// Two plugins of different names offering one kind: the first on the search path serves it
/// (a site plugin offering `local` takes every flow's default backend). `plugins install` of
/// the later one says which plugin flows keep getting, and `plugins list` and `info` mark the
/// kind that the later one does not serve; before, both rows looked alike and nothing said so.
/// The plugin is one without an identity note, so the copy on the plugin path is named by its
/// file.
#[test]
fn a_kind_offered_by_two_plugins_is_marked_where_it_is_not_served() {
    let b = built();
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("path");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&b.presplit, dir.join("libflowrun_plugin_override.so")).unwrap();
    let with_path = |args: &[&str]| {
        let o = flowrun(home.path())
            .env("FLOWRUN_PLUGIN_PATH", &dir)
            .args(args)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{args:?}: {out}{err}");
        (out, err)
    };
    let lib = b.presplit.to_str().unwrap();
    let (out, err) = with_path(&["plugins", "install", lib, "--user"]);
    assert!(out.contains("installed plugin presplit"), "{out}");
    assert_eq!(
        err.trim(),
        "warning: flows naming backend kind `presplit` keep getting plugin override, which comes \
         earlier on the search path (`flowrun plugins list`)",
    );

    let (out, _) = with_path(&["plugins", "list"]);
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row {name}: {out}"))
            .to_string()
    };
    assert!(!row("override").contains("served by"), "{out}");
    assert!(
        row("presplit").ends_with("(backend presplit is served by plugin override above)"),
        "{out}"
    );
    let (out, _) = with_path(&["plugins", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(out.as_bytes()).unwrap();
    let taken = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["kinds_taken"].clone())
            .unwrap()
    };
    assert_eq!(taken("override"), serde_json::json!([]));
    assert_eq!(
        taken("presplit"),
        serde_json::json!([{ "kind": "presplit", "role": "backend", "served_by": "override" }])
    );
    let (out, _) = with_path(&["plugins", "info", "presplit"]);
    assert!(
        out.contains(
            "not served:  backend presplit: plugin override comes first on the search path and serves it"
        ),
        "{out}"
    );
    // Without the plugin path, the installed plugin serves its kind, and install says nothing.
    let o = flowrun(home.path())
        .args(["plugins", "install", lib, "--user"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
}
