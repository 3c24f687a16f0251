//! Helpers for flowrun's end-to-end tests: find the built `flowrun` binary (and the plugins
//! bundled beside it), run flows through the real CLI, read results.json.
//!
//! The test command builds the whole workspace first (`cargo build --workspace`), because
//! `cargo test` does not build cdylib plugins.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The directory holding the built `flowrun` binary and the bundled plugins.
pub fn bin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let profile = std::env::var("FLOWRUN_TEST_PROFILE").unwrap_or_else(|_| "debug".into());
    target.join(profile)
}

/// The path of the built `flowrun` binary; panics with the command to run if it is missing.
pub fn flowrun_path() -> PathBuf {
    let p = bin_dir().join("flowrun");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

/// A built plugin library of the workspace, such as `fake` -> `libflowrun_plugin_fake.so`.
pub fn plugin_path(name: &str) -> PathBuf {
    let p = bin_dir().join(format!("libflowrun_plugin_{name}.so"));
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

/// A `flowrun` command isolated from the user's and the site's plugin directories: only the
/// bundled plugins (beside the binary) and whatever the test adds are visible.
pub fn flowrun(home: &Path) -> Command {
    let mut c = Command::new(flowrun_path());
    c.env("XDG_DATA_HOME", home.join("xdg-data"))
        .env("FLOWRUN_SITE_PLUGIN_DIR", home.join("site-plugins"))
        .env_remove("FLOWRUN_PLUGIN_PATH")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// The outcome of one `flowrun run`.
#[derive(Debug)]
pub struct Run {
    /// The exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The run's output directory (`--out`).
    pub out: PathBuf,
    /// results.json, or `Value::Null` if it was not written.
    pub results: Value,
}

impl Run {
    /// The results.json entry of job `name`; panics (showing the run) if absent.
    pub fn job(&self, name: &str) -> &Value {
        self.results["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["name"] == name))
            .unwrap_or_else(|| panic!("job {name} not in results.json\n{self:#?}"))
    }
    /// The status of job `name`.
    pub fn status(&self, name: &str) -> &str {
        self.job(name)["status"].as_str().unwrap_or("")
    }
    /// The reason of job `name`.
    pub fn reason(&self, name: &str) -> &str {
        self.job(name)["reason"].as_str().unwrap_or("")
    }
}

/// Converts a finished process into a [`Run`], reading `<out>/results.json`.
pub fn collect(output: Output, out: &Path) -> Run {
    let results = std::fs::read_to_string(out.join("results.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        out: out.to_path_buf(),
        results,
    }
}

/// Writes `flow_toml` to `<dir>/flow.toml` and runs `flowrun run` on it with `--out <dir>/out`
/// plus `args`.
pub fn run_flow(dir: &Path, flow_toml: &str, args: &[&str]) -> Run {
    run_flow_with(dir, flow_toml, args, &[])
}

/// [`run_flow`] with extra environment variables (such as `FLOWRUN_PLUGIN_PATH`).
pub fn run_flow_with(dir: &Path, flow_toml: &str, args: &[&str], env: &[(&str, &OsStr)]) -> Run {
    let flow = dir.join("flow.toml");
    std::fs::write(&flow, flow_toml).expect("write flow.toml");
    let out = dir.join("out");
    let output = flowrun(dir)
        .envs(env.iter().copied())
        .arg("run")
        .arg(&flow)
        .arg("--out")
        .arg(&out)
        .args(args)
        .output()
        .expect("run flowrun");
    collect(output, &out)
}
