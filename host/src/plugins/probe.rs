//! Loading a library in a child process, where whatever its initialisers do (exit, abort,
//! segfault, hang) costs the child and not flowrun. flowrun re-executes itself with the hidden
//! subcommand [`PROBE_SUBCOMMAND`]; the child loads the library as a run would (version gate,
//! layout check, root module, manifest, `init`) and prints one result line. The parent gives it
//! [`timeout`] and kills its whole process group after that.
//!
//! Used wherever a library must be initialised to be judged (`plugins install`, `plugins
//! verify`) and for libraries without an identity note (plugins built before notes existed),
//! before anything of them is loaded into flowrun itself.

use std::{
    io::Read,
    os::unix::process::{CommandExt, ExitStatusExt},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::ffi;
use crate::errors::PluginLoadError;

/// The hidden subcommand of the child.
pub const PROBE_SUBCOMMAND: &str = "__probe-plugin";
/// The environment variable that sets the child's time limit (a duration such as `"10s"`).
pub const TIMEOUT_VAR: &str = "FLOWRUN_PLUGIN_PROBE_TIMEOUT";
/// The marker of the child's result line: a library may print to stdout itself.
const RESULT_MARKER: &str = "flowrun-probe-result ";
/// The most of the child's output the parent reads.
const OUTPUT_LIMIT: u64 = 1 << 20;

/// What the child learnt of a library that loaded.
pub type Probed = ffi::PluginInfo;

#[derive(Serialize, Deserialize)]
enum ChildReport {
    Loaded(Probed),
    Failed(String),
}

/// How long a child may take: `FLOWRUN_PLUGIN_PROBE_TIMEOUT`, else 10 s (a debug build of a
/// large plugin loads in well under a second even on a busy machine).
pub fn timeout() -> Duration {
    std::env::var(TIMEOUT_VAR)
        .ok()
        .and_then(|t| flowrun_plugin_sdk::config::duration_from_str(&t).ok())
        .unwrap_or(Duration::from_secs(10))
}

/// Loads `path` in a child process. The error says what happened, in one line.
pub fn probe(path: &Path) -> Result<Probed, PluginLoadError> {
    let unusable = |detail: String| PluginLoadError::Unusable {
        path: path.to_path_buf(),
        detail,
    };
    let exe = std::env::current_exe().map_err(|e| {
        unusable(format!(
            "cannot find the flowrun executable to probe the library: {e}"
        ))
    })?;
    // dlopen takes a name without a slash for a library to search for, not a file here.
    let path = std::path::absolute(path).map_err(|e| unusable(e.to_string()))?;
    match probe_with(&exe, &path, timeout()) {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(message)) => Err(PluginLoadError::Reported { message }),
        Err(detail) => Err(unusable(detail)),
    }
}

/// `Ok(Err(message))`: the child reported why the library does not load; `Err(detail)`: the
/// child died, exited or hung while loading it.
fn probe_with(exe: &Path, path: &Path, limit: Duration) -> Result<Result<Probed, String>, String> {
    let mut child = Command::new(exe)
        .arg(PROBE_SUBCOMMAND)
        .arg(path)
        .env_remove("FLOWRUN_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // A group of its own: a library that forks dies with its child.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start a child process to probe the library: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    // Read on a thread: a library that fills the pipe must not block the child forever.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.take(OUTPUT_LIMIT).read_to_string(&mut text);
        text
    });
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("cannot wait for the probing child: {e}")),
        }
    };
    // Whatever is left of the group (the child on a timeout, anything a library forked).
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let Some(status) = status else {
        let _ = child.wait();
        return Err(format!(
            "loading it did not finish within {} (its initialiser hangs?); set {TIMEOUT_VAR} to wait longer",
            humantime::format_duration(limit)
        ));
    };
    let output = reader.join().unwrap_or_default();
    let report = output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(RESULT_MARKER))
        .and_then(|json| serde_json::from_str::<ChildReport>(json).ok());
    match (report, status.signal()) {
        (_, Some(signal)) => Err(format!(
            "loading and initialising it killed the process with {}",
            signal_name(signal)
        )),
        (Some(ChildReport::Loaded(p)), _) => Ok(Ok(p)),
        (Some(ChildReport::Failed(why)), _) => Ok(Err(why)),
        (None, _) => Err(format!(
            "loading it ended the process with exit status {} before it could report (its initialiser calls exit?)",
            status.code().unwrap_or(-1)
        )),
    }
}

fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

/// The child's side: loads `path` and prints the result line. Returns the exit code.
pub fn child_main(path: &Path) -> i32 {
    let report = match ffi::load(path) {
        Ok(p) => ChildReport::Loaded(ffi::PluginInfo::clone(&p)),
        Err(e) => ChildReport::Failed(e.to_string()),
    };
    let failed = matches!(report, ChildReport::Failed(_));
    let line = serde_json::to_string(&report).expect("a report serialises");
    println!("\n{RESULT_MARKER}{line}");
    i32::from(failed)
}
