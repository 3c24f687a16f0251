//! What the end-to-end tests of batch-system backends (lsf.rs, gridengine.rs) share: the flows
//! of the must-show list and the checks on their results, the call counter of
//! `tests/cluster/count-calls`, and a trace of how many jobs ran at once.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use flowrun_tests::{epoch_secs, workspace_root, Run};

/// Five layers of ten jobs; every job of a layer after the first needs two of the layer before.
/// Returns the `[[job]]` tables and each job's needs.
pub fn dag_50() -> (String, Vec<(String, Vec<String>)>) {
    let mut toml = String::new();
    let mut needs = Vec::new();
    for layer in 0..5 {
        for i in 0..10 {
            let name = format!("l{layer}_{i}");
            let deps: Vec<String> = if layer == 0 {
                vec![]
            } else {
                vec![
                    format!("l{}_{i}", layer - 1),
                    format!("l{}_{}", layer - 1, (i + 1) % 10),
                ]
            };
            toml.push_str(&format!(
                "[[job]]\nname = \"{name}\"\ncmd = \"echo I am $FLOWRUN_JOB_NAME\"\nneeds = {deps:?}\n"
            ));
            needs.push((name, deps));
        }
    }
    (toml, needs)
}

/// Checks that every job of [`dag_50`] passed with its own output alone in its log, and
/// started only after the jobs it needs finished.
pub fn assert_dag_50(run: &Run, needs: &[(String, Vec<String>)]) {
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], 50, "{run:#?}");
    for (name, deps) in needs {
        let job = run.job(name);
        let log = std::fs::read_to_string(job["log"].as_str().unwrap()).unwrap();
        assert_eq!(log, format!("I am {name}\n"), "the log of {name}");
        let started = epoch_secs(job["started_at"].as_str().expect("started_at"));
        for dep in deps {
            let finished = epoch_secs(run.job(dep)["finished_at"].as_str().expect("finished_at"));
            assert!(
                started >= finished,
                "{name} started at {started} before {dep} finished at {finished}"
            );
        }
    }
}

/// Shims in `<dir>/shims` that count the calls of `commands` (as they are found on `path`),
/// with tests/cluster/count-calls. Returns the shims' directory (put it first on PATH).
pub fn count_calls(dir: &Path, path: &str, commands: &[&str]) -> PathBuf {
    let shims = dir.join("shims");
    let out = Command::new(workspace_root().join("tests/cluster/count-calls"))
        .arg(&shims)
        .args(commands)
        .env("PATH", path)
        .output()
        .expect("run count-calls");
    assert!(
        out.status.success(),
        "count-calls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    shims
}

/// `(calls, most calls within any window_s seconds)` of `command`, counted by the shims.
pub fn calls(shims: &Path, command: &str, window_s: f64) -> (u64, u64) {
    let out = Command::new(workspace_root().join("tests/cluster/count-calls"))
        .arg("--report")
        .arg(shims)
        .arg(command)
        .arg(window_s.to_string())
        .output()
        .expect("run count-calls --report");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace().map(|w| w.parse().unwrap());
    (words.next().unwrap(), words.next().unwrap())
}

/// The arguments of every logged call of `command`.
pub fn call_args(shims: &Path, command: &str) -> Vec<String> {
    std::fs::read_to_string(shims.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(' ')?;
            let (cmd, args) = rest.split_once(' ').unwrap_or((rest, ""));
            (cmd == command).then(|| args.to_string())
        })
        .collect()
}

/// A shell command that runs `body` between two lines appended to `trace`: `start TIME` and
/// `end TIME` (the job's own clock, read on the node that runs it).
pub fn traced(trace: &Path, body: &str) -> String {
    let t = trace.display();
    format!(
        "echo start $(date +%s.%N) >> {t}; {body}; s=$?; echo end $(date +%s.%N) >> {t}; exit $s"
    )
}

/// The most jobs that ran at once, from a trace of [`traced`] jobs; and how many started.
pub fn most_at_once(trace: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    let mut edges: Vec<(f64, i32)> = text
        .lines()
        .filter_map(|l| {
            let (what, t) = l.split_once(' ')?;
            Some((t.parse().ok()?, if what == "start" { 1 } else { -1 }))
        })
        .collect();
    // At one instant, ends before starts.
    edges.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (mut now, mut most) = (0, 0);
    for (_, step) in &edges {
        now += step;
        most = most.max(now);
    }
    let starts = edges.iter().filter(|e| e.1 == 1).count();
    (most as usize, starts)
}

/// The pass/fail pattern flow: a job that passes by its pass pattern, one that fails on line 3
/// of its own output. The patterns also match the lines of a scheduler's report (LSF's
/// `Sender:` and `Successfully completed.`, Grid Engine has none): they must not be seen.
pub fn patterns_flow() -> &'static str {
    "[[job]]\nname = \"passes\"\ncmd = \"echo one; echo TEST PASSED\"\n\
     pass_patterns = [\"^TEST PASSED$\"]\nfail_patterns = [\"^Sender: \", \"^Exited with\"]\n\
     [[job]]\nname = \"fails\"\ncmd = \"echo one; echo two; echo 'ERROR: three'\"\n\
     fail_patterns = [\"^ERROR\"]\n\
     [[job]]\nname = \"reported\"\ncmd = \"echo fine\"\n\
     fail_patterns = [\"^Successfully completed\", \"^Resource usage summary\"]\n"
}

/// Checks a run of [`patterns_flow`].
pub fn assert_patterns(run: &Run) {
    assert_eq!(run.status("passes"), "passed", "{run:#?}");
    assert_eq!(run.status("reported"), "passed", "{run:#?}");
    assert_eq!(run.status("fails"), "failed", "{run:#?}");
    let fails = run.job("fails");
    assert_eq!(fails["fail_line"], 3, "{fails}");
    assert_eq!(fails["fail_text"], "ERROR: three", "{fails}");
    let log = std::fs::read_to_string(fails["log"].as_str().unwrap()).unwrap();
    assert_eq!(
        log, "one\ntwo\nERROR: three\n",
        "the log is the job's own output"
    );
}
