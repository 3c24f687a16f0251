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

/// `count` jobs `sleep0`.. that sleep 600 s, and `after`, which needs `sleep0`.
pub fn sleepers(count: usize) -> String {
    let mut jobs: String = (0..count)
        .map(|i| format!("[[job]]\nname = \"sleep{i}\"\ncmd = \"sleep 600\"\n"))
        .collect();
    jobs.push_str("[[job]]\nname = \"after\"\ncmd = \"true\"\nneeds = [\"sleep0\"]\n");
    jobs
}

/// The outage flow: five roots of 15 s, each with a child, and `fails` (15 s, then exit 3).
/// Once all six run, each has at most 15 s left: they end during a 20 s outage, and the
/// children are submitted during it.
pub fn outage_flow() -> String {
    let mut jobs = String::new();
    for i in 0..5 {
        jobs.push_str(&format!(
            "[[job]]\nname = \"root{i}\"\ncmd = \"sleep 15\"\n"
        ));
        jobs.push_str(&format!(
            "[[job]]\nname = \"child{i}\"\ncmd = \"echo child\"\nneeds = [\"root{i}\"]\n"
        ));
    }
    jobs + "[[job]]\nname = \"fails\"\ncmd = \"sleep 15; exit 3\"\n"
}

/// Checks a run of [`outage_flow`]: everything as without the outage.
pub fn assert_outage(run: &Run) {
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], 10, "{run:#?}");
    assert_eq!(
        (run.status("fails"), run.reason("fails")),
        ("failed", "exit code 3")
    );
}

/// `n` trivial jobs `j0`..; `j7` exits 3.
pub fn many(n: usize) -> String {
    (0..n)
        .map(|i| {
            let cmd = if i == 7 { "exit 3" } else { "true" };
            format!("[[job]]\nname = \"j{i}\"\ncmd = \"{cmd}\"\n")
        })
        .collect()
}

/// Checks a run of [`many`]`(n)`.
pub fn assert_many(run: &Run, n: u64) {
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], n - 1);
    assert_eq!(run.reason("j7"), "exit code 3");
}

/// Twelve [`traced`] jobs `m0`.. of one shape (a second each, grouped by the variable
/// `group`); `m5` exits 3.
pub fn traced_members(trace: &Path, group: &str) -> String {
    (0..12)
        .map(|i| {
            let exit = if i == 5 { "exit 3" } else { "true" };
            let cmd = traced(trace, group, &format!("sleep 1; {exit}"));
            format!("[[job]]\nname = \"m{i}\"\ncmd = {cmd:?}\n")
        })
        .collect()
}

/// Checks a run of [`traced_members`] submitted in `submissions` calls (see
/// [`assert_slot_limit`]).
pub fn assert_members(run: &Run, trace: &Path, submissions: usize) {
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], 11, "{run:#?}");
    assert_eq!(run.reason("m5"), "exit code 3");
    assert_slot_limit(trace, 12, submissions);
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

/// Checks that `command` was called at most once per poll interval of one second over a run of
/// `took_s` seconds, and never in a burst.
///
/// The shims log when a call's shell starts, which on a loaded machine (CI: 2 cores, the whole
/// suite in parallel) lags the backend's own call by a varying delay, so gaps between logged calls
/// are not the backend's gaps. Two bounds hold whatever the lag: the number of calls (no more
/// than the run had intervals), and no three calls within one interval (two true gaps of one
/// interval each would need more than a second of extra lag to look that close). A backend that
/// polls per job, or polls again at once after a slow query, fails both.
pub fn assert_once_per_interval(shims: &Path, command: &str, took_s: f64) {
    let (count, most) = calls(shims, command, 1.0);
    eprintln!("{count} {command} calls in {took_s:.1} s");
    assert!(
        (count as f64) <= took_s + 1.0,
        "{count} {command} calls in a {took_s:.1} s run with a 1 s poll interval"
    );
    assert!(
        most <= 2,
        "{most} {command} calls within one second: a burst of queries"
    );
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

/// A shell command that runs `body` (in a subshell: an `exit` in it ends only the body) between
/// two lines appended to `trace`: `start TIME GROUP` and `end TIME GROUP` (the job's own clock,
/// read on the node that runs it; GROUP is the value of the variable `group`, such as the id of
/// the array the job is a member of).
pub fn traced(trace: &Path, group: &str, body: &str) -> String {
    let t = trace.display();
    format!(
        "echo start $(date +%s.%N) ${group} >> {t}; ( {body} ); s=$?; \
         echo end $(date +%s.%N) ${group} >> {t}; exit $s"
    )
}

/// From a trace of [`traced`] jobs, per group: (how many started, the most that ran at once).
pub fn most_at_once(trace: &Path) -> std::collections::BTreeMap<String, (usize, usize)> {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    let mut groups: std::collections::BTreeMap<String, Vec<(f64, i32)>> = Default::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [what, time, group] = f[..] {
            let step = if what == "start" { 1 } else { -1 };
            let edge = (time.parse().expect("a trace time"), step);
            groups.entry(group.to_string()).or_default().push(edge);
        }
    }
    let count = |mut edges: Vec<(f64, i32)>| {
        // At one instant, ends before starts.
        edges.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (mut now, mut most) = (0, 0);
        for (_, step) in &edges {
            now += step;
            most = most.max(now);
        }
        (edges.iter().filter(|e| e.1 == 1).count(), most as usize)
    };
    groups.into_iter().map(|(g, e)| (g, count(e))).collect()
}

/// Checks the trace of an arrays flow of `jobs` traced jobs, grouped by array, submitted in at
/// most `submissions` (<= 3) arrays of slot limit 2: every job started once, and no array ran
/// more than 2 members at once; one array had at least 3 members (so the limit was tested).
pub fn assert_slot_limit(trace: &Path, jobs: usize, submissions: usize) {
    let groups = most_at_once(trace);
    assert!(submissions <= 3, "{submissions} submissions");
    assert_eq!(
        groups.values().map(|g| g.0).sum::<usize>(),
        jobs,
        "{groups:?}"
    );
    assert!(groups.len() <= submissions, "{groups:?}");
    assert!(groups.values().any(|g| g.0 >= 3), "{groups:?}");
    assert!(
        groups.values().all(|g| g.1 <= 2),
        "more than 2 members at once: {groups:?}"
    );
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
