//! Helpers for flowrun's end-to-end tests: find the built `flowrun` binary (and the plugins
//! bundled beside it), run flows through the real CLI, read results.json.
//!
//! The test command builds the whole workspace first (`cargo build --workspace`), because
//! `cargo test` does not build cdylib plugins.

use std::{
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
    let flow = dir.join("flow.toml");
    std::fs::write(&flow, flow_toml).expect("write flow.toml");
    let out = dir.join("out");
    let output = flowrun(dir)
        .arg("run")
        .arg(&flow)
        .arg("--out")
        .arg(&out)
        .args(args)
        .output()
        .expect("run flowrun");
    collect(output, &out)
}

/// Whether privileged tests run (brief contract 1): only with `FLOWRUN_PRIVILEGED_TESTS=1`,
/// which the test command sets. Without it, prints the one SKIPPED line naming what the test
/// `needs` and returns false; with it, the test must fail if what it needs is missing.
pub fn privileged(needs: &str) -> bool {
    if std::env::var("FLOWRUN_PRIVILEGED_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("SKIPPED (needs FLOWRUN_PRIVILEGED_TESTS=1): {needs}");
    false
}

/// Waits until `done` holds, checking every 20 ms; panics naming `what` after `limit`.
pub fn wait_until(limit: std::time::Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Writes `flow_toml` to `<dir>/flow.toml` and starts `flowrun run flow.toml --out out` plus
/// `args` in `dir`, with piped output; finish it with [`collect`] on `wait_with_output`.
pub fn start_flow(dir: &Path, flow_toml: &str, args: &[&str]) -> std::process::Child {
    std::fs::write(dir.join("flow.toml"), flow_toml).expect("write flow.toml");
    flowrun(dir)
        .args(["run", "flow.toml", "--out", "out"])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flowrun")
}

/// Sends signal `sig` to a child process.
pub fn send_signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid, which it still is until we wait for it.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// A results.json timestamp in microseconds (monotonic over the run, not calendar-exact).
pub fn micros(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    // 2026-11-22T21:54:41.123456Z -> microseconds within the day is enough for ordering here,
    // but compare whole timestamps: days can roll over during a test.
    let (date, time) = s.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap();
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let days = d[0] * 372 + d[1] * 31 + d[2]; // monotonic, not calendar-exact
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000_000 + t[2] * 1_000_000 + frac.parse::<i64>().unwrap()
}

/// (name, start, end) of every job that ran.
pub fn intervals(run: &Run) -> Vec<(String, i64, i64)> {
    run.results["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| !j["started_at"].is_null())
        .map(|j| {
            (
                j["name"].as_str().unwrap().to_string(),
                micros(&j["started_at"]),
                micros(&j["finished_at"]),
            )
        })
        .collect()
}

/// The most intervals overlapping at any instant, among those whose name passes `filter`.
pub fn max_overlap(run: &Run, filter: impl Fn(&str) -> bool) -> usize {
    let mut points: Vec<(i64, i32)> = Vec::new();
    for (name, s, e) in intervals(run) {
        if filter(&name) {
            points.push((s, 1));
            points.push((e, -1));
        }
    }
    // Ends sort before starts at the same instant: a slot freed and reused is not an overlap.
    points.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in points {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

/// A number unique to one test, used as a `sleep` duration (`sleep 3100.0421007`), so that
/// every sleeper a test starts can be found by its command line.
pub fn unique_sleep() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "3100.{:04}{:03}",
        std::process::id() % 10_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Pids of live processes whose command line contains `marker` (like `pgrep -f`).
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(marker) {
                found.push(pid);
            }
        }
    }
    found
}

/// The process that runs a `flowrun run` and loads its plugins (the worker), given the pid of
/// the `flowrun` a test started (its supervising parent; see `flowrun::supervise`). With the
/// supervisor turned off (`FLOWRUN_SUPERVISOR=off`), `flowrun` itself. Panics after 10 s.
pub fn run_process(flowrun_pid: u32) -> u32 {
    if std::env::var_os("FLOWRUN_SUPERVISOR").is_some_and(|v| v == "off") {
        return flowrun_pid;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let ppid = rest.split_whitespace().nth(1);
            if head.ends_with("(flowrun") && ppid == Some(flowrun_pid.to_string().as_str()) {
                return pid;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flowrun {flowrun_pid} started no run process"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits for a run started with [`start_flow`] in `dir`; one that does not end within `limit`
/// is killed and fails the test (it would have hung).
pub fn finish_within(
    mut child: std::process::Child,
    dir: &Path,
    limit: std::time::Duration,
) -> Run {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let run = collect(child.wait_with_output().unwrap(), &dir.join("out"));
            panic!("flowrun did not end within {limit:?}: {run:#?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    collect(child.wait_with_output().unwrap(), &dir.join("out"))
}

/// Installs the misbehaving fixture plugin (`tests/fixtures/misbehaving`) into `home`'s user
/// plugin directory.
pub fn install_misbehaving(home: &Path) {
    let lib = bin_dir().join("libflowrun_test_misbehaving.so");
    let o = flowrun(home)
        .args(["plugins", "install"])
        .arg(&lib)
        .arg("--user")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
