//! The plugin registry and loader, through the CLI: install, list, info, remove, verify; every
//! load failure is one line and exit code 2; a panicking plugin fails its jobs, not the host.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Output};

use flowrun_tests::{bin_dir, flowrun, plugin_path, run_flow, workspace_root};

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
    assert!(err.contains("not an ELF shared library"), "{err}");

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
    assert!(one_line_error(&o).contains("not an ELF shared library"));
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
            "plugin 'misbehaving' 0.1.0 was built against plugin API {v}, but this flowrun provides {}.{}.{}: rebuild it with a flowrun-plugin-sdk for plugin API {}.{}",
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

// ---------------------------------------------------------------------------------------------
// Broken libraries anywhere on the plugin path (finding F9): every kind of file, every command
// ---------------------------------------------------------------------------------------------

/// Compiles `tests/fixtures/bad-libs/<source>` (plus `extra` arguments) into `out`.
fn cc(source: &str, out: &Path, extra: &[&str]) {
    let src = workspace_root()
        .join("tests/fixtures/bad-libs")
        .join(source);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let o = std::process::Command::new(cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(out)
        .arg(&src)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "building {source} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn fake_lib_bytes() -> Vec<u8> {
    std::fs::read(plugin_path("fake")).unwrap()
}

/// One kind of broken file: how to make it at a path, and what every message about it says.
struct Broken {
    make: fn(&Path),
    says: &'static str,
    /// What `install` says, when it differs (a directory is "not a file" there).
    install_says: Option<&'static str>,
}

fn make_truncated(p: &Path) {
    std::fs::write(p, &fake_lib_bytes()[..100_000]).unwrap();
}
fn make_cut_tail(p: &Path) {
    let b = fake_lib_bytes();
    std::fs::write(p, &b[..b.len() - 4096]).unwrap();
}
fn make_random(p: &Path) {
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(p, bytes).unwrap();
}
fn make_empty(p: &Path) {
    std::fs::write(p, b"").unwrap();
}
fn make_elf_magic(p: &Path) {
    std::fs::write(p, b"\x7fELF").unwrap();
}
fn make_directory(p: &Path) {
    std::fs::create_dir(p).unwrap();
}
fn make_not_a_plugin(p: &Path) {
    // Any shared library that is not a flowrun plugin (the findings used the system's libz).
    cc("missing_dep_helper.c", p, &[]);
}
fn make_missing_dependency(p: &Path) {
    let dir = p.parent().unwrap().join(format!(
        "helper-of-{}",
        p.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let helper = dir.join("libhelperx.so");
    cc("missing_dep_helper.c", &helper, &[]);
    cc(
        "missing_dep.c",
        p,
        &["-L", dir.to_str().unwrap(), "-lhelperx"],
    );
    std::fs::remove_file(helper).unwrap();
}
fn make_wrong_root_module(p: &Path) {
    let define = format!("-DFLOWRUN_API_VERSION=\"{}\"", flowrun_plugin_api_version());
    cc("wrong_root_module.c", p, &[&define]);
}
fn make_null_version(p: &Path) {
    cc("null_version.c", p, &[]);
}
fn make_huge_version(p: &Path) {
    cc("huge_version.c", p, &[]);
}
fn make_version_segv(p: &Path) {
    cc("version_segv.c", p, &[]);
}
fn make_ctor_abort(p: &Path) {
    cc("ctor_abort.c", p, &[]);
}
fn make_ctor_segv(p: &Path) {
    cc("ctor_segv.c", p, &[]);
}
fn make_ctor_exit(p: &Path) {
    cc("ctor_exit.c", p, &[]);
}
fn make_ctor_hang(p: &Path) {
    cc("ctor_hang.c", p, &[]);
}
fn make_symlink_loop(p: &Path) {
    std::os::unix::fs::symlink(p, p).unwrap();
}
fn make_dangling_symlink(p: &Path) {
    std::os::unix::fs::symlink(p.with_extension("gone"), p).unwrap();
}

/// The hanging library waits this long in each child that probes it.
const PROBE_TIMEOUT: &str = "2s";

fn with_env(mut c: std::process::Command, path_dir: Option<&Path>) -> std::process::Command {
    c.env("FLOWRUN_PLUGIN_PROBE_TIMEOUT", PROBE_TIMEOUT);
    if let Some(d) = path_dir {
        c.env("FLOWRUN_PLUGIN_PATH", d);
    }
    c
}

/// Checks that `o` is a clean failure: the exit code `code` (never a signal), one line on
/// stderr that says `says`, and no panic.
fn clean_failure(o: &Output, code: i32, says: &str, what: &str) -> String {
    assert_eq!(o.status.code(), Some(code), "{what}: {}", text(o));
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(
        err.lines().count(),
        1,
        "{what}: expected one line, got:\n{err}"
    );
    assert!(err.contains(says), "{what}: {err:?} should say {says:?}");
    assert!(err.len() < 1200, "{what}: a {} byte line", err.len());
    assert!(!err.contains("panicked"), "{what}: {err}");
    err
}

const LOCAL_FLOW: &str = "[[job]]\nname = \"a\"\ncmd = \"true\"\nbackend = \"local\"\n";

/// Every command the findings tried, on one kind of broken file named
/// `libflowrun_plugin_brk.so` on the plugin path (and, for the shadowing case, named after the
/// bundled `local`).
fn every_command_survives(case: Broken) {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let dir = h.join("path");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("libflowrun_plugin_brk.so");
    (case.make)(&file);
    let flowrun_in = |path_dir: Option<&Path>| with_env(flowrun(h), path_dir);

    // install FILE: refused in one line, nothing installed.
    let o = flowrun_in(None)
        .args(["plugins", "install"])
        .arg(&file)
        .output()
        .unwrap();
    clean_failure(&o, 2, case.install_says.unwrap_or(case.says), "install");
    assert!(!h.join("xdg-data/flowrun/plugins/registry.toml").exists());

    // A run that uses it: one line, nothing ran.
    std::fs::write(h.join("flow.toml"), LOCAL_FLOW.replace("local", "brk")).unwrap();
    let o = flowrun_in(Some(&dir))
        .args(["run", "flow.toml", "--out", "used"])
        .current_dir(h)
        .output()
        .unwrap();
    clean_failure(&o, 2, case.says, "a run using it");
    assert!(!h.join("used/results.json").exists());

    // A run that does not use it is not disturbed.
    std::fs::write(h.join("local.toml"), LOCAL_FLOW).unwrap();
    let o = flowrun_in(Some(&dir))
        .args(["run", "local.toml", "--out", "local-out", "-q"])
        .current_dir(h)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "local-only run: {}", text(&o));

    // check of a flow with a mistyped kind: the usual error, not a crash.
    std::fs::write(h.join("typo.toml"), LOCAL_FLOW.replace("local", "fakee")).unwrap();
    let o = flowrun_in(Some(&dir))
        .args(["check", "typo.toml"])
        .current_dir(h)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "check: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("fakee") && !err.contains("panicked"), "{err}");

    // plugins list: the file is a row with its problem; the other plugins are listed.
    let o = flowrun_in(Some(&dir))
        .args(["plugins", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "list: {}", text(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["path"] == file.to_str().unwrap())
        .unwrap_or_else(|| panic!("no row for the file: {rows:#?}"));
    let error = row["error"].as_str().unwrap_or_else(|| panic!("{row:#}"));
    assert!(error.contains(case.says), "list: {error}");
    assert!(rows
        .iter()
        .any(|r| r["name"] == "fake" && r["error"].is_null()));
    let o = flowrun_in(Some(&dir))
        .args(["plugins", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "list: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("BROKEN: "));

    // Shadowing the bundled `local`: the user's file wins and is refused, in one line.
    let shadow = h.join("shadow");
    std::fs::create_dir(&shadow).unwrap();
    (case.make)(&shadow.join("libflowrun_plugin_local.so"));
    let o = flowrun_in(Some(&shadow))
        .args(["run", "local.toml", "--out", "shadowed"])
        .current_dir(h)
        .output()
        .unwrap();
    clean_failure(&o, 2, case.says, "shadowing local");

    // Installed by hand with its true hash: verify fails it, a run using it is refused.
    let user = h.join("xdg-data/flowrun/plugins");
    std::fs::create_dir_all(&user).unwrap();
    let installed = user.join("libflowrun_plugin_brk.so");
    (case.make)(&installed);
    let sha = sha256_of(&installed);
    std::fs::write(
        user.join("registry.toml"),
        format!("[[plugin]]\nname = \"brk\"\nversion = \"0.1.0\"\napi_version = \"0.1.2\"\nfile = \"libflowrun_plugin_brk.so\"\nsha256 = \"{sha}\"\nbackends = [\"brk\"]\ninstalled_at = \"2026-01-01T00:00:00Z\"\n"),
    )
    .unwrap();
    let o = flowrun_in(None)
        .args(["plugins", "verify"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "verify: {}", text(&o));
    assert!(text(&o).contains("FAILED  brk: "), "verify: {}", text(&o));
    let o = flowrun_in(None)
        .args(["run", "flow.toml", "--out", "installed"])
        .current_dir(h)
        .output()
        .unwrap();
    clean_failure(&o, 2, "", "a run using the installed file");
}

/// The sha256 of a file (the empty string for what cannot be read, such as a directory).
fn sha256_of(p: &Path) -> String {
    let o = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

macro_rules! broken_file_cases {
    ($($test:ident: $make:ident says $says:literal $(, install says $install:literal)?;)*) => {$(
        #[test]
        fn $test() {
            every_command_survives(Broken {
                make: $make,
                says: $says,
                install_says: None $(.or(Some($install)))?,
            });
        }
    )*};
}

broken_file_cases! {
    a_truncated_plugin_breaks_nothing: make_truncated says "truncated";
    a_plugin_missing_its_last_4_kib_breaks_nothing: make_cut_tail says "corrupt ELF section headers";
    random_bytes_break_nothing: make_random says "not an ELF shared library";
    an_empty_file_breaks_nothing: make_empty says "not an ELF shared library";
    a_bare_elf_magic_breaks_nothing: make_elf_magic says "not an ELF shared library";
    a_directory_breaks_nothing: make_directory says "directory", install says "not a file";
    a_library_that_is_no_plugin_breaks_nothing: make_not_a_plugin says "not a flowrun plugin";
    a_missing_dependency_is_named_with_dlerrors_text: make_missing_dependency says "libhelperx.so: cannot open shared object file";
    a_garbage_root_module_breaks_nothing: make_wrong_root_module says "not a loadable shared library";
    a_null_version_string_breaks_nothing: make_null_version says "not a flowrun plugin";
    a_1_mb_version_string_is_cut: make_huge_version says "built against plugin API 7777";
    a_version_symbol_returning_a_bad_pointer_breaks_nothing: make_version_segv says "SIGSEGV";
    an_initialiser_that_aborts_breaks_nothing: make_ctor_abort says "SIGABRT";
    an_initialiser_that_segfaults_breaks_nothing: make_ctor_segv says "SIGSEGV";
    an_initialiser_that_exits_is_never_a_silent_success: make_ctor_exit says "exit status 0";
    an_initialiser_that_hangs_is_given_a_time_limit: make_ctor_hang says "did not finish within 2s";
    a_symlink_loop_breaks_nothing: make_symlink_loop says "Too many levels of symbolic links";
    a_dangling_symlink_breaks_nothing: make_dangling_symlink says "No such file or directory";
}

#[test]
fn a_library_with_a_valid_note_is_listed_unloaded_but_judged_by_loading_it_in_a_child() {
    use flowrun_plugin_sdk::identity::{record_bytes, BACKEND, PLUGIN};
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let note: Vec<u8> = [
        record_bytes(PLUGIN, &[&flowrun_plugin_api_version(), "crashy", "0.3.0"]),
        record_bytes(BACKEND, &["crashy", "segfaults when loaded"]),
    ]
    .concat();
    let bytes: Vec<String> = note.iter().map(|b| b.to_string()).collect();
    let include = h.join("include");
    std::fs::create_dir(&include).unwrap();
    std::fs::write(
        include.join("note.h"),
        format!("#define NOTE_BYTES {{ {} }}\n", bytes.join(", ")),
    )
    .unwrap();
    let dir = h.join("path");
    std::fs::create_dir(&dir).unwrap();
    let lib = dir.join("libflowrun_plugin_crashy.so");
    cc(
        "ctor_segv_with_note.c",
        &lib,
        &["-I", include.to_str().unwrap()],
    );

    // Listed from its note alone: loading it would kill flowrun.
    let o = flowrun(h)
        .env("FLOWRUN_PLUGIN_PATH", &dir)
        .args(["plugins", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "crashy")
        .unwrap();
    assert_eq!(row["identified_by"], "note");
    assert_eq!(row["version"], "0.3.0");
    assert_eq!(row["backends"][0]["description"], "segfaults when loaded");

    // install and verify must initialise it to judge it: in a child, which dies instead.
    let o = install(h, &lib, "--user");
    clean_failure(&o, 2, "SIGSEGV", "install");
    let user = h.join("xdg-data/flowrun/plugins");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::copy(&lib, user.join("libflowrun_plugin_crashy.so")).unwrap();
    std::fs::write(
        user.join("registry.toml"),
        format!("[[plugin]]\nname = \"crashy\"\nversion = \"0.3.0\"\napi_version = \"0.1.2\"\nfile = \"libflowrun_plugin_crashy.so\"\nsha256 = \"{}\"\nbackends = [\"crashy\"]\ninstalled_at = \"2026-01-01T00:00:00Z\"\n", sha256_of(&lib)),
    )
    .unwrap();
    let o = flowrun(h).args(["plugins", "verify"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FAILED  crashy: "), "{}", text(&o));
    assert!(text(&o).contains("SIGSEGV"), "{}", text(&o));
}

// ---------------------------------------------------------------------------------------------
// Registry hardening (finding F20)
// ---------------------------------------------------------------------------------------------

/// Runs `args` (with `flow.toml` written in `home`) and checks that each fails in one line
/// saying `says` with exit code 2.
fn every_command_refuses(home: &Path, says: &str) {
    std::fs::write(home.join("flow.toml"), LOCAL_FLOW).unwrap();
    let commands: [&[&str]; 9] = [
        &["run", "flow.toml", "--out", "out"],
        &["check", "flow.toml"],
        &["graph", "flow.toml"],
        &["plugins", "list"],
        &["plugins", "info", "fake"],
        &["plugins", "install", "lib.so"],
        &["plugins", "remove", "misbehaving"],
        &["plugins", "verify"],
        &["run", "flow.toml", "--out", "out", "--dry-run"],
    ];
    std::fs::copy(misbehaving_lib(), home.join("lib.so")).unwrap();
    for args in commands {
        let o = flowrun(home).args(args).current_dir(home).output().unwrap();
        clean_failure(&o, 2, says, &args.join(" "));
    }
    assert!(!home.join("out/results.json").exists());
}

#[test]
fn a_corrupt_registry_is_an_error_for_every_command() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("xdg-data/flowrun/plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("registry.toml"),
        "[[plugin]]\nname = \"x\"\nthis is not toml",
    )
    .unwrap();
    every_command_refuses(home.path(), "invalid registry");
}

#[test]
fn a_world_writable_registry_or_plugin_directory_or_parent_is_refused_for_every_command() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    assert!(install(home.path(), &misbehaving_lib(), "--user")
        .status
        .success());
    let dir = home.path().join("xdg-data/flowrun/plugins");
    let set = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set(&dir.join("registry.toml"), 0o666);
    every_command_refuses(home.path(), "the registry is writable by group or others");
    set(&dir.join("registry.toml"), 0o644);
    set(&dir, 0o775);
    every_command_refuses(
        home.path(),
        "the plugin directory is writable by group or others",
    );
    set(&dir, 0o755);
    set(&home.path().join("xdg-data/flowrun"), 0o777);
    every_command_refuses(home.path(), "world-writable without the sticky bit");
    set(&home.path().join("xdg-data/flowrun"), 0o755);
    // Restored: all is well again.
    let o = flowrun(home.path())
        .args(["plugins", "verify"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn a_registry_file_outside_its_directory_is_refused_and_never_loaded() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // A library whose initialiser aborts, where the registry points.
    let evil = h.join("elsewhere/libevil.so");
    std::fs::create_dir_all(evil.parent().unwrap()).unwrap();
    cc("ctor_abort.c", &evil, &[]);
    let dir = h.join("xdg-data/flowrun/plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for file in [
        "../../../elsewhere/libevil.so".to_string(),
        evil.to_string_lossy().into_owned(),
        "..".to_string(),
        String::new(),
    ] {
        std::fs::write(
            dir.join("registry.toml"),
            format!("[[plugin]]\nname = \"evil\"\nversion = \"0.1.0\"\napi_version = \"0.1.2\"\nfile = {file:?}\nsha256 = \"{}\"\nbackends = [\"evil\"]\ninstalled_at = \"2026-01-01T00:00:00Z\"\n", sha256_of(&evil)),
        )
        .unwrap();
        std::fs::write(h.join("evil.toml"), LOCAL_FLOW.replace("local", "evil")).unwrap();
        let o = flowrun(h)
            .args(["run", "evil.toml", "--out", "out"])
            .current_dir(h)
            .output()
            .unwrap();
        clean_failure(
            &o,
            2,
            "not a file name inside the registry's directory",
            &file,
        );
        every_command_refuses(h, "not a file name inside the registry's directory");
    }
}

#[test]
fn a_plugin_swapped_for_a_hostile_library_after_install_is_refused_before_it_is_loaded() {
    let home = tempfile::tempdir().unwrap();
    assert!(install(home.path(), &misbehaving_lib(), "--user")
        .status
        .success());
    cc("ctor_abort.c", &installed(home.path()), &[]);
    let run = run_flow(home.path(), PANIC_FLOW, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("file changed since it was installed"),
        "{}",
        run.stderr
    );
    let o = flowrun(home.path())
        .args(["plugins", "verify"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = flowrun(home.path())
        .args(["plugins", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("file changed since it was installed"));
}

#[test]
fn a_plugin_in_a_world_writable_plugin_path_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("path");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(
        misbehaving_lib(),
        dir.join("libflowrun_plugin_misbehaving.so"),
    )
    .unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let run = flowrun_tests::run_flow_with(
        home.path(),
        PANIC_FLOW,
        &[],
        &[("FLOWRUN_PLUGIN_PATH", dir.as_os_str())],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .contains("the plugin directory is writable by group or others"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_plugin_owned_by_another_user_is_refused() {
    if std::env::var_os("FLOWRUN_PRIVILEGED_TESTS").as_deref() != Some("1".as_ref()) {
        eprintln!("SKIPPED (needs FLOWRUN_PRIVILEGED_TESTS=1): root, to give a plugin file to another user");
        return;
    }
    assert!(
        flowrun_tests::is_root(),
        "FLOWRUN_PRIVILEGED_TESTS=1 but not root: cannot chown a plugin to another user"
    );
    let home = tempfile::tempdir().unwrap();
    assert!(install(home.path(), &misbehaving_lib(), "--user")
        .status
        .success());
    let file = installed(home.path());
    std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
    let run = run_flow(home.path(), PANIC_FLOW, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("owned by another user (uid 65534)"),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// The `plugins` commands' output
// ---------------------------------------------------------------------------------------------

#[test]
fn removing_a_bundled_plugin_says_it_is_bundled() {
    let home = tempfile::tempdir().unwrap();
    let o = flowrun(home.path())
        .args(["plugins", "remove", "local"])
        .output()
        .unwrap();
    let err = clean_failure(&o, 2, "`local` is bundled with flowrun", "remove local");
    assert!(err.contains("libflowrun_plugin_local.so"), "{err}");
}

#[test]
fn info_names_the_source_as_list_does() {
    let home = tempfile::tempdir().unwrap();
    let o = flowrun(home.path())
        .args(["plugins", "info", "fake"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\nsource:      bundled\n"), "{out}");
    assert!(out.contains("\nidentified:  note\n"), "{out}");
}

#[test]
fn plugins_list_output_is_pinned() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    assert!(install(h, &misbehaving_lib(), "--user").status.success());
    assert!(install(h, &misbehaving_lib(), "--site").status.success());
    let dir = h.join("path");
    std::fs::create_dir(&dir).unwrap();
    make_truncated(&dir.join("libflowrun_plugin_trunc.so"));
    let o = flowrun(h)
        .env("FLOWRUN_PLUGIN_PATH", &dir)
        .args(["plugins", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("NAME "), "a header row: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("fake ") && l.contains(" bundled ")),
        "{out}"
    );
    // Bundled plugins come and go with the workspace: pinned are the header and the rest, with
    // the runs of spaces of the aligned columns (which depend on every row) collapsed.
    let pinned: String = out
        .lines()
        .filter(|l| !l.contains("  bundled  "))
        .map(|l| {
            l.replace(h.to_str().unwrap(), "[HOME]")
                .split("  ")
                .filter(|c| !c.is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" | ")
                + "\n"
        })
        .collect();
    insta::assert_snapshot!(pinned, @r"
    NAME | VERSION | API | SOURCE | KINDS | FILE
    trunc | - | - | path | - | [HOME]/path/libflowrun_plugin_trunc.so | BROKEN: not usable as a plugin: truncated: a loadable segment ends past the end of the file (100000 bytes)
    misbehaving | 0.1.0 | 0.1.3 | user | backend misbehaving | [HOME]/xdg-data/flowrun/plugins/libflowrun_plugin_misbehaving.so
    misbehaving | 0.1.0 | 0.1.3 | site | backend misbehaving | [HOME]/site-plugins/libflowrun_plugin_misbehaving.so | (shadowed by the plugin of the same name above)
    ");
}

#[test]
fn install_takes_a_relative_path() {
    // dlopen searches the library path for a name without a slash: the file must be given to
    // the loader as a path.
    let home = tempfile::tempdir().unwrap();
    std::fs::copy(misbehaving_lib(), home.path().join("libmb.so")).unwrap();
    let o = flowrun(home.path())
        .args(["plugins", "install", "libmb.so"])
        .current_dir(home.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(installed(home.path()).exists());
}

/// Runs `flowrun ARGS` with its stdout (or stderr) the write end of a pipe whose reader has
/// already exited: a reader that went away, as `| head -c 1` does once it has its byte. Bash
/// waits for the process substitution's `true` to exit first, so every write fails with EPIPE
/// (flowrun, like every Rust program, ignores SIGPIPE).
fn into_a_pipe_nobody_reads(home: &Path, stream: u8, args: &[&str]) -> Output {
    let cmd = flowrun(home);
    let program = cmd.get_program().to_owned();
    let mut c = std::process::Command::new("bash");
    c.arg("-c")
        .arg(format!(
            "exec 3> >(true); wait $!; exec \"$0\" \"$@\" {stream}>&3"
        ))
        .arg(program)
        .args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.output().unwrap()
}

/// `flowrun plugins list --json | head -c 1` (and any command whose reader stops reading) ends
/// with the command's own exit code and no panic: `println!` panicked on the broken pipe, with
/// a backtrace and exit code 101. Errors on a stderr nobody reads keep their exit code 2 too.
#[test]
fn output_into_a_pipe_nobody_reads_is_no_panic() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["plugins", "list", "--json"][..],
        &["plugins", "list"],
        &["plugins", "info", "fake"],
    ] {
        let o = into_a_pipe_nobody_reads(home.path(), 1, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let flow = home.path().join("flow.toml");
    let flow_arg = flow.to_str().unwrap();
    std::fs::write(&flow, "[[job]]\nname = \"a\"\ncmd = \"true\"\n").unwrap();
    let o = into_a_pipe_nobody_reads(home.path(), 1, &["check", flow_arg]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    std::fs::write(&flow, "[[job]]\nname = \"a b\"\ncmd = \"true\"\n").unwrap();
    let o = into_a_pipe_nobody_reads(home.path(), 2, &["check", flow_arg]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an invalid flow is exit code 2 still"
    );
}
