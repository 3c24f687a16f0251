//! The in-house example plugin (examples/site-backend) as a site would use it: built as an
//! out-of-tree crate, installed with `flowrun plugins install --user`, then both its backend
//! (`site-wrapper`) and its observer (`jsonl`) used by a flow.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use flowrun_tests::{bin_dir, flowrun, run_flow, workspace_root};

/// Where the example crate builds: `<target>/site-backend`, so that repeated runs are
/// incremental and never contend with the workspace's own build directory.
fn example_target() -> PathBuf {
    bin_dir()
        .parent()
        .expect("the profile dir has a parent")
        .join("site-backend")
}

/// Runs `cargo VERB` on the example crate, as a site would in its own checkout.
fn cargo_on_example(verb: &str) -> std::process::Output {
    let manifest = workspace_root().join("examples/site-backend/Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .arg(verb)
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", example_target())
        .output()
        .expect("run cargo")
}

/// Builds the example crate once per test process.
fn site_plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = cargo_on_example("build");
        assert!(
            out.status.success(),
            "building the example failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lib = example_target().join("debug/libflowrun_plugin_site.so");
        assert!(lib.exists(), "{} was not built", lib.display());
        lib
    })
}

/// A scratch home with the example installed for the user.
fn installed_site() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let install = flowrun(home.path())
        .args(["plugins", "install"])
        .arg(site_plugin())
        .arg("--user")
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "install failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    home
}

const FLOW: &str = r#"
[flow]
name = "site-e2e"
default_backend = "site"

[backends.site]
kind = "site-wrapper"
wrapper = ["/usr/bin/env", "SITE=1"]
kill_grace = "1s"

[observers.jobs]
kind = "jsonl"
path = "reports/jobs.jsonl"

[[job]]
name = "hello"
cmd = 'test "$SITE" = 1 && echo "hello from $GREETING"'
env = { GREETING = "the site" }

[[job]]
name = "argv"
cmd = ["printenv", "SITE"]
needs = ["hello"]

[[job]]
name = "bad"
cmd = "echo failing; exit 3"

[[job]]
name = "after_bad"
cmd = "true"
needs = ["bad"]

[[job]]
name = "stuck"
cmd = "sleep 60"
timeout = "500ms"
"#;

#[test]
fn the_installed_example_runs_jobs_through_its_wrapper_and_logs_jsonl() {
    let home = installed_site();

    let run = run_flow(home.path(), FLOW, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("hello"), "passed", "{run:#?}");
    assert_eq!(run.status("argv"), "passed");
    assert_eq!(run.status("bad"), "failed");
    assert_eq!(run.reason("bad"), "exit code 3");
    assert_eq!(run.status("after_bad"), "skipped");
    assert_eq!(run.status("stuck"), "killed");
    assert!(
        run.job("stuck")["duration_s"].as_f64().unwrap() < 30.0,
        "the kill must end the sleep"
    );
    let log = |job: &str| {
        std::fs::read_to_string(run.out.join(format!("jobs/{job}/output.log"))).unwrap()
    };
    assert_eq!(log("hello"), "hello from the site\n");
    assert_eq!(
        log("argv"),
        "1\n",
        "the wrapper's environment reaches argv commands"
    );
    assert_eq!(log("bad"), "failing\n");

    // One JSON line per finished job, skipped ones included, in the order they finished.
    let text = std::fs::read_to_string(run.out.join("reports/jobs.jsonl"))
        .expect("the jsonl observer wrote its file");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mut seen: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("after_bad", "skipped"),
            ("argv", "passed"),
            ("bad", "failed"),
            ("hello", "passed"),
            ("stuck", "killed")
        ],
        "{text}"
    );
    let bad = lines.iter().find(|l| l["name"] == "bad").unwrap();
    assert_eq!(
        (bad["exit_code"].as_i64(), bad["reason"].as_str()),
        (Some(3), Some("exit code 3"))
    );
    assert!(bad["duration_s"].as_f64().is_some());
}

#[test]
fn a_bad_site_wrapper_config_is_invalid_input_naming_the_key() {
    let home = installed_site();
    let flow = "[backends.site]\nkind = \"site-wrapper\"\nwrapper = []\n[[job]]\nname = \"x\"\ncmd = \"true\"\nbackend = \"site\"\n";
    let run = run_flow(home.path(), flow, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("wrapper"), "{}", run.stderr);
}

#[test]
fn the_host_puts_the_job_environment_into_every_job_also_through_a_backend_that_sets_none() {
    // The example backend sets no FLOWRUN_* variable itself: what the job sees is the host's.
    let home = installed_site();
    let flow = r#"
[flow]
name = "env"
[backends.site]
kind = "site-wrapper"
wrapper = ["/usr/bin/env"]
[[job]]
name = "show/env"
backend = "site"
cmd = ["printenv", "FLOWRUN_JOB_NAME", "FLOWRUN_JOB_DIR", "FLOWRUN_RUN_DIR", "FLOWRUN_ATTEMPT", "FLOWRUN_RUN_TAG"]
"#;
    let run = run_flow(home.path(), flow, &[]);
    assert_eq!(
        run.code, 0,
        "printenv fails on a missing variable: {run:#?}"
    );
    let run_dir = run.out.canonicalize().unwrap();
    let log = std::fs::read_to_string(run.job("show/env")["log"].as_str().unwrap()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "show/env");
    assert_eq!(lines[1], run_dir.join("jobs/show%2Fenv").to_str().unwrap());
    assert_eq!(lines[2], run_dir.to_str().unwrap());
    assert_eq!(lines[3], "1");
    assert!(lines[4].starts_with("flowrun-env-"), "{log}");
}

#[test]
fn the_example_passes_its_own_tests_including_the_backend_contract() {
    // What a site runs: the crate's own tests, among them the test kit's Contract check (job
    // environment, cwd, a fresh log, timeouts left to the host) and the observer harness.
    let out = cargo_on_example("test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example's tests failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("test wrapper::tests::keeps_the_backend_contract ... ok"),
        "{text}"
    );
}
