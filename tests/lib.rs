//! Helpers for flowrun's end-to-end tests: find the built `flowrun` binary (and the plugins
//! bundled beside it), run flows through the real CLI, read results.json.
//!
//! The test command builds the whole workspace first (`cargo build --workspace`), because
//! `cargo test` does not build cdylib plugins.

// Unsafe code only in `signal_pid` and `is_root`, allowed there.
#![deny(unsafe_code)]

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

/// A `flowrun run` running in the background (for tests that act on the run while it runs:
/// an interrupt, a job killed from outside), its output going to files in its directory.
/// Dropped while flowrun still runs (a test failed half-way), it interrupts flowrun so that
/// no cluster job is left behind.
pub struct Background {
    /// The flowrun process.
    pub child: std::process::Child,
    /// The test's directory: `flow.toml`, `out/`, `stdout`, `stderr`.
    pub dir: PathBuf,
    /// The run's tag, read from its journal once it exists ([`Background::tag`]).
    tag: std::sync::OnceLock<String>,
    /// How the tag must begin: `flowrun-<flow>-<pid>-`.
    tag_prefix: String,
}

/// Writes `flow_toml` to `<dir>/flow.toml` and starts `flowrun run` on it with
/// `--out <dir>/out`, with `env` added to its environment. The flow's `[flow] name` must be
/// `flow_name` (it is part of the run's tag).
pub fn spawn_flow<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    flow_name: &str,
    flow_toml: &str,
    env: &[(K, V)],
) -> Background {
    std::fs::write(dir.join("flow.toml"), flow_toml).expect("write flow.toml");
    let file = |name: &str| std::fs::File::create(dir.join(name)).expect("create an output file");
    let child = flowrun(dir)
        .arg("run")
        .arg(dir.join("flow.toml"))
        .arg("--out")
        .arg(dir.join("out"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(file("stdout"))
        .stderr(file("stderr"))
        .spawn()
        .expect("start flowrun");
    Background::new(child, dir, flow_name)
}

/// The tag of the run flowrun writes into `out` (what cluster backends name the run's jobs:
/// `flowrun-<flow>-<pid>-<random>`), as `flowrun status --json` reads it from the run's
/// journal; waits up to 60 s for the journal to appear.
pub fn run_tag_of(home: &Path, out: &Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = flowrun(home)
            .args(["status", "--json"])
            .arg(out)
            .output()
            .expect("run flowrun status");
        let tag = serde_json::from_slice::<Value>(&status.stdout)
            .ok()
            .and_then(|v| v["run_tag"].as_str().map(str::to_string))
            .filter(|t| !t.is_empty());
        if let Some(tag) = tag {
            return tag;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run tag in {} after 60 s: {}",
            out.display(),
            String::from_utf8_lossy(&status.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Background {
    /// A run of the flow named `flow_name` started as `child` in the test directory `dir`,
    /// into `dir/out`.
    pub fn new(child: std::process::Child, dir: &Path, flow_name: &str) -> Background {
        let name: String = flow_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Background {
            tag_prefix: format!("flowrun-{name}-{}-", child.id()),
            child,
            dir: dir.to_path_buf(),
            tag: std::sync::OnceLock::new(),
        }
    }

    /// The run's tag (see [`run_tag_of`]), read once its journal exists: the flow's name (its
    /// other characters than letters and digits as `_`), flowrun's pid and a random part.
    pub fn tag(&self) -> String {
        let tag = self
            .tag
            .get_or_init(|| run_tag_of(&self.dir, &self.dir.join("out")));
        assert!(
            tag.starts_with(&self.tag_prefix) && tag.len() > self.tag_prefix.len(),
            "the run tag {tag:?} is not {}<random>",
            self.tag_prefix
        );
        tag.clone()
    }

    /// The process id of flowrun.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`INT`, `TERM`, ...) to flowrun.
    pub fn signal(&self, signal: &str) {
        // The `kill` program rather than libc's: no unsafe code for this.
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{signal} {} failed",
            self.child.id()
        );
    }

    /// Sends flowrun SIGINT, as Ctrl-C at a terminal does.
    pub fn interrupt(&self) {
        self.signal("INT");
    }

    /// What flowrun wrote to its standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// Waits for flowrun to exit (at most `limit`; then it is killed and the test fails) and
    /// reads its results.
    pub fn finish(mut self, limit: std::time::Duration) -> Run {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for flowrun") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "flowrun did not finish within {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let output = Output {
            status,
            stdout: std::fs::read(self.dir.join("stdout")).unwrap_or_default(),
            stderr: std::fs::read(self.dir.join("stderr")).unwrap_or_default(),
        };
        collect(output, &self.dir.join("out"))
    }
}

impl Drop for Background {
    /// A test that fails half-way must not leave flowrun (and its cluster jobs) running: it is
    /// interrupted, so that it cancels its jobs, and killed if it has not ended in 60 s.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds since the epoch now, to compare with [`epoch_secs`] of a time in results.json.
pub fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// Seconds since the epoch of an RFC 3339 UTC time as results.json writes them
/// (`2026-11-22T22:14:14.530906Z`).
pub fn epoch_secs(text: &str) -> f64 {
    let parts = || -> Option<(Vec<i64>, Vec<f64>)> {
        let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
        let d = date
            .split('-')
            .map(|p| p.parse().ok())
            .collect::<Option<Vec<i64>>>()?;
        let t = time
            .split(':')
            .map(|p| p.parse().ok())
            .collect::<Option<Vec<f64>>>()?;
        (d.len() == 3 && t.len() == 3).then_some((d, t))
    };
    let (d, t) = parts().unwrap_or_else(|| panic!("not an RFC 3339 UTC time: {text:?}"));
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
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
    signal_pid(child.id(), sig);
}

/// Sends signal `sig` to process `pid`, which the caller knows to be alive and not reaped (its
/// own child, or a job of a run it holds).
#[allow(unsafe_code)] // the tests' only unsafe: libc's kill and geteuid
pub fn signal_pid(pid: u32, sig: i32) {
    // SAFETY: kill(2) reads and writes no memory of ours; the pid is still the caller's process
    // (see above), so no unrelated process can receive the signal.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// Whether the tests run as root (effective uid 0).
#[allow(unsafe_code)]
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions, cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
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

/// `flowrun` on a pseudo-terminal of a chosen size, through script(1), which copies the
/// terminal's output to a pipe and the pipe to the terminal's input. Read what the terminal got
/// with [`PtyRun::output`]; type with [`PtyRun::type_in`].
pub struct PtyRun {
    child: std::process::Child,
    output: std::sync::Arc<parking_lot::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    started: std::time::Instant,
}

/// Quotes `s` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl PtyRun {
    /// Starts `flowrun ARGS` in `dir` on a `cols`x`rows` terminal with `TERM=xterm-256color`,
    /// isolated from the user's plugins as [`flowrun`] is, with no `NO_COLOR` unless `env` sets
    /// it; `env` is applied last.
    pub fn start(dir: &Path, args: &[&str], cols: u16, rows: u16, env: &[(&str, &str)]) -> Self {
        let mut line = format!(
            "stty cols {cols} rows {rows}; exec {}",
            sh_quote(&flowrun_path().display().to_string())
        );
        for a in args {
            line.push(' ');
            line.push_str(&sh_quote(a));
        }
        let mut cmd = Command::new("script");
        cmd.args(["-qfec", &line, "/dev/null"])
            .current_dir(dir)
            .env("XDG_DATA_HOME", dir.join("xdg-data"))
            .env("FLOWRUN_SITE_PLUGIN_DIR", dir.join("site-plugins"))
            .env_remove("FLOWRUN_PLUGIN_PATH")
            .env_remove("NO_COLOR")
            .env_remove("COLUMNS")
            .env("TERM", "xterm-256color");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start script(1)");
        let mut stdout = child.stdout.take().expect("piped");
        let output = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().extend_from_slice(&buf[..n]);
            }
        });
        PtyRun {
            child,
            output,
            reader: Some(reader),
            started: std::time::Instant::now(),
        }
    }

    /// What the terminal received so far.
    pub fn output(&self) -> Vec<u8> {
        self.output.lock().clone()
    }

    /// Waits until the terminal's output contains `text`; panics after `timeout`.
    pub fn wait_for(&self, text: &str, timeout: std::time::Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let out = self.output();
            if let Some(at) = String::from_utf8_lossy(&out).find(text) {
                return at;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{text:?} never appeared on the terminal:\n{}",
                String::from_utf8_lossy(&out)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Types `bytes` on the terminal (`b"\x03"` is Ctrl-C).
    pub fn type_in(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("piped");
        stdin.write_all(bytes).expect("write to the terminal");
        stdin.flush().expect("flush");
    }

    /// Waits for flowrun to exit (panics after `timeout`, killing it): its exit code, all the
    /// terminal's output, and the seconds it ran.
    pub fn wait(mut self, timeout: std::time::Duration) -> (i32, Vec<u8>, f64) {
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for script(1)") {
                break s;
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "flowrun did not exit within {timeout:?}:\n{}",
                    String::from_utf8_lossy(&self.output())
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let secs = self.started.elapsed().as_secs_f64();
        drop(self.child.stdin.take());
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status.code().unwrap_or(-1), self.output(), secs)
    }
}

/// `bytes` without escape sequences (CSI such as colours; other ESC pairs).
pub fn strip_escapes(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next_if_eq(&'[').is_some() {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// A minimal terminal: `cols` wide, printable characters one column each (the tests use ASCII
/// names), carriage return, newline, and the automatic wrap at the right margin that makes an
/// over-long status line leave its first part behind. Escape sequences are ignored.
#[derive(Debug)]
pub struct Terminal {
    cols: usize,
    rows: Vec<Vec<char>>,
    row: usize,
    col: usize,
    /// Each line that wrapped (a character was written past the right margin), as it was
    /// then.
    pub wrapped: Vec<String>,
}

impl Terminal {
    /// A terminal that has shown `output` (escape sequences removed first).
    pub fn replay(cols: usize, output: &[u8]) -> Terminal {
        let mut t = Terminal {
            cols,
            rows: vec![Vec::new()],
            row: 0,
            col: 0,
            wrapped: Vec::new(),
        };
        for c in strip_escapes(output).chars() {
            match c {
                '\r' => t.col = 0,
                '\n' => {
                    t.row += 1;
                    if t.row == t.rows.len() {
                        t.rows.push(Vec::new());
                    }
                }
                c if c.is_control() => {}
                c => {
                    if t.col == t.cols {
                        t.wrapped.push(t.rows[t.row].iter().collect());
                        t.col = 0;
                        t.row += 1;
                        if t.row == t.rows.len() {
                            t.rows.push(Vec::new());
                        }
                    }
                    let line = &mut t.rows[t.row];
                    if line.len() <= t.col {
                        line.resize(t.col + 1, ' ');
                    }
                    line[t.col] = c;
                    t.col += 1;
                }
            }
        }
        t
    }

    /// The screen's lines (the whole scrollback), trailing blanks removed.
    pub fn lines(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|r| r.iter().collect::<String>().trim_end().to_string())
            .collect()
    }
}

/// Whether `s` is (starts like) the display's progress line: `[00:12] 45/100 ...`.
pub fn is_progress_line(s: &str) -> bool {
    let s = s.trim_start();
    let Some(rest) = s.strip_prefix('[') else {
        return false;
    };
    let Some((clock, rest)) = rest.split_once("] ") else {
        return false;
    };
    if clock.is_empty() || !clock.chars().all(|c| c.is_ascii_digit() || c == ':') {
        return false;
    }
    let frac = rest.split(' ').next().unwrap_or("");
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    matches!(frac.split_once('/'), Some((a, b)) if digits(a) && digits(b))
}

/// The live-line frames in a terminal's output: each text drawn after a carriage return that
/// is not the end of a line, escape sequences removed.
pub fn live_frames(output: &[u8]) -> Vec<String> {
    let text = strip_escapes(output);
    text.split('\r')
        .skip(1)
        .filter(|seg| !seg.starts_with('\n'))
        .map(|seg| seg.split('\n').next().unwrap_or("").to_string())
        .filter(|f| is_progress_line(f))
        .collect()
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

/// `flowrun status RUN_DIR --json` (run from `home`), parsed; panics unless it exits 0.
pub fn status_json(home: &Path, run_dir: &Path) -> Value {
    let o = flowrun(home)
        .arg("status")
        .arg(run_dir)
        .arg("--json")
        .output()
        .expect("run flowrun status");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// The children of process `parent` whose command name (`/proc/PID/stat`'s, cut to 15
/// bytes by the kernel) is `comm`.
pub fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let head = format!("({comm}");
    let parent = parent.to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((name, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if name.ends_with(&head) && rest.split_whitespace().nth(1) == Some(parent.as_str()) {
            found.push(pid);
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
        if let Some(&worker) = children_named(flowrun_pid, "flowrun").first() {
            return worker;
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

#[cfg(test)]
mod tests {
    #[test]
    fn epoch_seconds_of_rfc_3339_times() {
        assert_eq!(super::epoch_secs("1970-01-01T00:00:01.500000Z"), 1.5);
        assert_eq!(super::epoch_secs("2026-12-01T13:15:58Z"), 1_796_130_958.0);
        assert_eq!(super::epoch_secs("2000-03-01T00:00:00Z"), 951_868_800.0);
    }
}
