//! The plugin registry and loader, through the CLI: install, list, info, remove, verify; every
//! load failure is one line and exit code 2; a panicking plugin fails its jobs, not the host.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Output};

use flowrun_tests::{bin_dir, flowrun, run_flow};

fn misbehaving_lib() -> std::path::PathBuf {
    let p = bin_dir().join("libflowrun_test_misbehaving.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

fn installed(home: &Path) -> std::path::PathBuf {
    home.join("xdg-data/flowrun/plugins/libflowrun_plugin_misbehaving.so")
}

fn install(home: &Path, file: &Path, scope: &str) -> Output {
    flowrun(home)
        .args(["plugins", "install"])
        .arg(file)
        .arg(scope)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The stderr of a failed command, checked to be exactly one line (plus nothing else).
fn one_line_error(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(
        err.lines().count(),
        1,
        "expected a one-line error, got:\n{err}"
    );
    err
}

const PANIC_FLOW: &str = r#"
[flow]
default_backend = "mb"
[backends.mb]
kind = "misbehaving"
panic_in = "submit"
panic_on = "bad"
[[job]]
name = "good"
cmd = "true"
[[job]]
name = "bad"
cmd = "true"
[[job]]
name = "after-good"
cmd = "true"
needs = ["good"]
[[job]]
name = "after-bad"
cmd = "true"
needs = ["bad"]
"#;

#[test]
fn a_plugin_that_panics_in_submit_fails_that_job_and_the_run_completes() {
    let home = tempfile::tempdir().unwrap();
    assert!(install(home.path(), &misbehaving_lib(), "--user")
        .status
        .success());
    let run = run_flow(home.path(), PANIC_FLOW, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("bad"), "failed");
    assert!(
        run.reason("bad")
            .contains("plugin panicked: deliberate panic in submit for bad"),
        "{run:#?}"
    );
    assert_eq!(
        run.status("good"),
        "passed",
        "only the panicking job fails: {run:#?}"
    );
    assert_eq!(run.status("after-good"), "passed");
    assert_eq!(run.status("after-bad"), "skipped");
    assert_eq!(run.reason("after-bad"), "dependency failed: bad");
}

#[test]
fn a_plugin_that_panics_in_kill_or_on_its_own_thread_loses_the_job_instead_of_hanging() {
    let home = tempfile::tempdir().unwrap();
    assert!(install(home.path(), &misbehaving_lib(), "--user")
        .status
        .success());
    // "kill": the job never ends by itself; its timeout makes the host kill it; kill panics.
    let flow = r#"
[backends.mb]
kind = "misbehaving"
panic_in = "kill"
panic_on = "stuck"
[[job]]
name = "stuck"
cmd = "true"
backend = "mb"
timeout = "1s"
"#;
    let run = run_flow(home.path(), flow, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("stuck"), "killed", "{run:#?}");
    assert_eq!(run.reason("stuck"), "timed out after 1s", "{run:#?}");

    // A run never goes into a directory holding another run's output.
    std::fs::remove_dir_all(home.path().join("out")).unwrap();
    let flow = r#"
[backends.mb]
kind = "misbehaving"
panic_in = "thread"
[[job]]
name = "lost"
cmd = "true"
backend = "mb"
"#;
    let run = run_flow(home.path(), flow, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("lost"), "failed");
    assert!(
        run.reason("lost")
            .contains("plugin panicked: deliberate panic on a plugin thread"),
        "{run:#?}"
    );
}

#[test]
fn a_plugin_that_panics_while_creating_its_backend_is_an_input_error() {
    let home = tempfile::tempdir().unwrap();
    assert!(install(home.path(), &misbehaving_lib(), "--user")
        .status
        .success());
    let run = run_flow(
        home.path(),
        "[backends.mb]\nkind = \"misbehaving\"\npanic_in = \"new_backend\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\nbackend = \"mb\"\n",
        &[],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .contains("plugin panicked: deliberate panic in new_backend"),
        "{run:#?}"
    );
}

#[test]
fn bad_backend_config_names_the_key_and_exits_2() {
    let home = tempfile::tempdir().unwrap();
    assert!(install(home.path(), &misbehaving_lib(), "--user")
        .status
        .success());
    let run = run_flow(
        home.path(),
        "[backends.mb]\nkind = \"misbehaving\"\npanic_in = \"submit\"\npanik_on = \"x\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\nbackend = \"mb\"\n",
        &[],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("panik_on"),
        "the error names the key: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("flow.toml:1:"),
        "the error points at the backend table: {}",
        run.stderr
    );
    assert_eq!(run.stderr.matches("error:").count(), 1, "{}", run.stderr);
    assert!(!run.stderr.contains("panicked at"), "{}", run.stderr);
}

#[test]
fn an_unknown_backend_kind_lists_the_available_ones_and_exits_2() {
    let home = tempfile::tempdir().unwrap();
    let run = run_flow(
        home.path(),
        "[[job]]\nname = \"a\"\ncmd = \"true\"\nbackend = \"nosuch\"\n",
        &[],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("nosuch"), "{}", run.stderr);
    assert!(
        run.stderr.contains("fake"),
        "the error lists the available kinds: {}",
        run.stderr
    );
    assert!(run.results.is_null(), "nothing ran");
}

#[test]
fn a_file_that_is_not_a_shared_library_is_refused_in_one_line() {
    let home = tempfile::tempdir().unwrap();
    let bogus = home.path().join("libflowrun_plugin_bogus.so");
    std::fs::write(&bogus, "this is not an ELF file\n").unwrap();
    let o = install(home.path(), &bogus, "--user");
    assert_eq!(o.status.code(), Some(2));
    let err = one_line_error(&o);
    assert!(err.contains("not a loadable shared library"), "{err}");

    // The same file found on FLOWRUN_PLUGIN_PATH and needed by a flow.
    std::fs::write(
        home.path().join("flow.toml"),
        "[[job]]\nname = \"a\"\ncmd = \"true\"\nbackend = \"bogus\"\n",
    )
    .unwrap();
    let o = flowrun(home.path())
        .env("FLOWRUN_PLUGIN_PATH", home.path())
        .args(["run", "flow.toml", "--out", "out"])
        .current_dir(home.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(one_line_error(&o).contains("not a loadable shared library"));
}

#[test]
fn a_shared_library_without_a_root_module_is_refused_in_one_line() {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("x.c");
    std::fs::write(&src, "int not_a_plugin(void) { return 1; }\n").unwrap();
    let lib = home.path().join("libnotaplugin.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = std::process::Command::new(cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "building the C fixture failed");
    let o = install(home.path(), &lib, "--user");
    assert_eq!(o.status.code(), Some(2));
    assert!(one_line_error(&o).contains("not a flowrun plugin"));
}

/// Rewrites the plain API-version string inside a copy of a plugin library.
fn with_api_version(home: &Path, version: &str) -> std::path::PathBuf {
    let host_api = flowrun_plugin_api_version();
    assert_eq!(host_api.len(), version.len(), "the patch keeps the length");
    let mut bytes = std::fs::read(misbehaving_lib()).unwrap();
    let needle = format!("{host_api}\0").into_bytes();
    let hits: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert!(
        !hits.is_empty(),
        "the NUL-terminated API version string is in the library"
    );
    for at in hits {
        bytes[at..at + version.len()].copy_from_slice(version.as_bytes());
    }
    let out = home.join(format!("libpatched-{version}.so"));
    std::fs::write(&out, bytes).unwrap();
    out
}

fn flowrun_plugin_api_version() -> String {
    let o = flowrun(Path::new("/tmp"))
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&o.stdout);
    v.split("plugin API ")
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches(')')
        .to_string()
}

#[test]
fn the_version_names_the_plugin_api() {
    let o = flowrun(Path::new("/tmp"))
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(
        v.starts_with("flowrun ") && v.contains("(plugin API 0."),
        "{v}"
    );
}

#[test]
fn a_plugin_built_against_a_newer_plugin_api_is_refused_in_one_line() {
    let home = tempfile::tempdir().unwrap();
    let host = semver_parts(&flowrun_plugin_api_version());
    let newer_minor = format!("{}.{}.{}", host.0, host.1 + 1, host.2);
    let newer_patch = format!("{}.{}.{}", host.0, host.1, host.2 + 1);
    for v in [newer_minor, newer_patch] {
        let lib = with_api_version(home.path(), &v);
        let o = install(home.path(), &lib, "--user");
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = one_line_error(&o);
        let wanted = format!(
            "plugin 'misbehaving' 0.1.0 was built against plugin API {v}, but this flowrun provides {}.{}.{}: rebuild it against flowrun-plugin-api {}.{}",
            host.0, host.1, host.2, host.0, host.1
        );
        assert!(err.contains(&wanted), "{err}\nwanted: {wanted}");
    }
}

fn semver_parts(v: &str) -> (u64, u64, u64) {
    let p: Vec<u64> = v.split('.').map(|x| x.parse().unwrap()).collect();
    (p[0], p[1], p[2])
}

#[test]
fn a_plugin_changed_after_install_is_refused_and_fails_verify() {
    let home = tempfile::tempdir().unwrap();
    assert!(install(home.path(), &misbehaving_lib(), "--user")
        .status
        .success());
    let o = flowrun(home.path())
        .args(["plugins", "verify"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let file = installed(home.path());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&file, bytes).unwrap();

    let run = run_flow(home.path(), PANIC_FLOW, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    let err = run.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("file changed since it was installed"), "{err}");
    assert!(err.contains("reinstall"), "{err}");

    let o = flowrun(home.path())
        .args(["plugins", "verify"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FAILED  misbehaving"), "{}", text(&o));
}

#[test]
fn a_group_or_world_writable_plugin_is_refused() {
    let home = tempfile::tempdir().unwrap();
    assert!(install(home.path(), &misbehaving_lib(), "--user")
        .status
        .success());
    let file = installed(home.path());
    for mode in [0o775, 0o757] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let run = run_flow(home.path(), PANIC_FLOW, &[]);
        assert_eq!(run.code, 2, "{run:#?}");
        let err = run.stderr.trim();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("writable by group or others"), "{err}");
    }
    // A writable directory is refused too.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        file.parent().unwrap(),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let run = run_flow(home.path(), PANIC_FLOW, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .contains("plugin directory is writable by group or others"),
        "{}",
        run.stderr
    );
}

#[test]
fn install_list_info_remove_and_shadowing() {
    let home = tempfile::tempdir().unwrap();
    let o = install(home.path(), &misbehaving_lib(), "--user");
    assert!(o.status.success(), "{}", text(&o));
    let o = install(home.path(), &misbehaving_lib(), "--site");
    assert!(o.status.success(), "{}", text(&o));

    let reg = std::fs::read_to_string(home.path().join("xdg-data/flowrun/plugins/registry.toml"))
        .unwrap();
    for key in [
        "name = \"misbehaving\"",
        "version = \"0.1.0\"",
        "api_version",
        "sha256",
        "backends = [\"misbehaving\"]",
        "installed_at",
    ] {
        assert!(reg.contains(key), "registry.toml lacks {key}:\n{reg}");
    }

    let o = flowrun(home.path())
        .args(["plugins", "list", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mine: Vec<&serde_json::Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == "misbehaving")
        .collect();
    assert_eq!(mine.len(), 2, "{rows:#}");
    assert_eq!(mine[0]["source"], "user");
    assert_eq!(mine[0]["shadowed"], false);
    assert_eq!(mine[1]["source"], "site");
    assert_eq!(
        mine[1]["shadowed"], true,
        "the site copy is shadowed by the user's"
    );
    // The bundled plugins are listed too.
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "fake" && r["source"] == "bundled"),
        "{rows:#}"
    );

    let o = flowrun(home.path())
        .args(["plugins", "info", "misbehaving"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        text(&o).contains("backend:     misbehaving"),
        "{}",
        text(&o)
    );

    let o = flowrun(home.path())
        .args(["plugins", "remove", "misbehaving", "--user"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!installed(home.path()).exists());
    let o = flowrun(home.path())
        .args(["plugins", "remove", "misbehaving", "--user"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    one_line_error(&o);
}
