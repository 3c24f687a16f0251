//! Scheduling rules, statuses and reasons, through the CLI and results.json: caps, resources and
//! priority order observed from real start and end times, dependency rules, timeouts, and
//! signals sent to a real flowrun process.

use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use flowrun_tests::{collect, flowrun, intervals, max_overlap, run_flow};
use serde_json::Value;

fn jobs(prefix: &str, n: usize, extra: &str) -> String {
    (1..=n)
        .map(|i| format!("[[job]]\nname = \"{prefix}{i}\"\ncmd = \"true\"\n{extra}\n"))
        .collect()
}

#[test]
fn the_global_cap_holds_at_every_instant() {
    let dir = tempfile::tempdir().unwrap();
    let flow = format!(
        "[flow]\nmax_parallel = 2\ndefault_backend = \"fake\"\n[backends.fake]\nduration = \"150ms\"\n{}",
        jobs("j", 8, "")
    );
    let run = run_flow(dir.path(), &flow, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(max_overlap(&run, |_| true), 2, "{:?}", intervals(&run));
}

#[test]
fn dash_j_overrides_the_flow_cap() {
    let dir = tempfile::tempdir().unwrap();
    let flow = format!(
        "[flow]\nmax_parallel = 4\ndefault_backend = \"fake\"\n[backends.fake]\nduration = \"100ms\"\n{}",
        jobs("j", 6, "")
    );
    let run = run_flow(dir.path(), &flow, &["-j", "1"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(max_overlap(&run, |_| true), 1);
}

#[test]
fn each_backend_cap_and_each_resource_hold_at_every_instant() {
    let dir = tempfile::tempdir().unwrap();
    let flow = format!(
        r#"
[backends.a]
kind = "fake"
max_parallel = 2
duration = "120ms"
[backends.b]
kind = "fake"
max_parallel = 3
duration = "120ms"
[resources]
license = 1
{}{}{}"#,
        jobs("a", 6, "backend = \"a\""),
        jobs("b", 6, "backend = \"b\""),
        jobs("lic", 3, "backend = \"b\"\nresources = { license = 1 }"),
    );
    let run = run_flow(dir.path(), &flow, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(max_overlap(&run, |n| n.starts_with('a')), 2);
    assert!(max_overlap(&run, |n| n.starts_with('b') || n.starts_with("lic")) <= 3);
    assert_eq!(
        max_overlap(&run, |n| n.starts_with("lic")),
        1,
        "one license: one at a time"
    );
}

#[test]
fn a_jobs_cpus_count_against_its_backend_cap() {
    let dir = tempfile::tempdir().unwrap();
    let flow = format!(
        "[backends.fake]\nmax_parallel = 4\nduration = \"120ms\"\n{}",
        jobs("wide", 4, "backend = \"fake\"\nresources = { cpus = 2 }")
    );
    let run = run_flow(dir.path(), &flow, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(max_overlap(&run, |_| true), 2, "4 slots / 2 cpus each");
}

#[test]
fn ready_jobs_start_in_priority_order_with_ties_in_the_flows_order() {
    let dir = tempfile::tempdir().unwrap();
    let flow = r#"
[backends.fake]
max_parallel = 1
duration = "30ms"
[[job]]
name = "low"
cmd = "true"
backend = "fake"
[[job]]
name = "high-b"
cmd = "true"
backend = "fake"
priority = 5
[[job]]
name = "high-a"
cmd = "true"
backend = "fake"
priority = 5
[[job]]
name = "top"
cmd = "true"
backend = "fake"
priority = 9
[[job]]
name = "mid"
cmd = "true"
backend = "fake"
priority = 1
"#;
    let run = run_flow(dir.path(), flow, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let mut order = intervals(&run);
    order.sort_by_key(|i| i.1);
    let names: Vec<&str> = order.iter().map(|i| i.0.as_str()).collect();
    // high-b and high-a have equal priority: they start as the flow lists them.
    assert_eq!(names, ["top", "high-b", "high-a", "mid", "low"]);
}

#[test]
fn a_blocked_high_priority_job_does_not_hold_back_runnable_lower_priority_jobs() {
    let dir = tempfile::tempdir().unwrap();
    // `hog` holds the only license for 600 ms; `wants-license` (top priority) must wait, but
    // the low-priority jobs without the license run meanwhile.
    let flow = r#"
[resources]
license = 1
[backends.fake]
durations = { "hog" = "600ms", "free-*" = "50ms", "wants-license" = "50ms" }
[[job]]
name = "hog"
cmd = "true"
backend = "fake"
priority = 10
resources = { license = 1 }
[[job]]
name = "wants-license"
cmd = "true"
backend = "fake"
priority = 9
resources = { license = 1 }
[[job]]
name = "free-1"
cmd = "true"
backend = "fake"
[[job]]
name = "free-2"
cmd = "true"
backend = "fake"
"#;
    let run = run_flow(dir.path(), flow, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let iv = intervals(&run);
    let get = |n: &str| iv.iter().find(|i| i.0 == n).unwrap().clone();
    let hog = get("hog");
    for free in ["free-1", "free-2"] {
        assert!(
            get(free).2 <= hog.2,
            "{free} ran while the license was held: {iv:?}"
        );
    }
    assert!(
        get("wants-license").1 >= hog.2,
        "the license is never shared: {iv:?}"
    );
}

#[test]
fn no_job_starts_before_its_dependencies_end_and_when_rules_apply() {
    let dir = tempfile::tempdir().unwrap();
    let flow = r#"
[backends.fake]
duration = "20ms"
outcomes = { "bad" = "fail" }
[flow]
default_backend = "fake"
[[job]]
name = "good"
cmd = "true"
[[job]]
name = "bad"
cmd = "true"
[[job]]
name = "needs-both"
cmd = "true"
needs = ["good", "bad"]
[[job]]
name = "any"
cmd = "true"
needs = ["good", "bad"]
when = "any-passed"
[[job]]
name = "any-none"
cmd = "true"
needs = ["bad", "needs-both"]
when = "any-passed"
[[job]]
name = "always"
cmd = "true"
needs = ["needs-both", "bad"]
when = "always"
[[job]]
name = "grandchild"
cmd = "true"
needs = ["needs-both"]
"#;
    let run = run_flow(dir.path(), flow, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("bad"), "failed");
    assert_eq!(run.reason("bad"), "exit code 1");
    assert_eq!(run.status("needs-both"), "skipped");
    assert_eq!(run.reason("needs-both"), "dependency failed: bad");
    assert_eq!(run.status("grandchild"), "skipped");
    assert_eq!(run.reason("grandchild"), "dependency skipped: needs-both");
    assert_eq!(run.status("any"), "passed");
    assert_eq!(run.status("any-none"), "skipped");
    assert_eq!(
        run.reason("any-none"),
        "no dependency passed: bad, needs-both"
    );
    assert_eq!(run.status("always"), "passed");
    let iv = intervals(&run);
    let get = |n: &str| iv.iter().find(|i| i.0 == n).unwrap().clone();
    assert!(get("any").1 >= get("good").2 && get("any").1 >= get("bad").2);
    // Skipped jobs never ran: no times, no log.
    let skipped = run.job("needs-both");
    assert!(
        skipped["started_at"].is_null()
            && skipped["finished_at"].is_null()
            && skipped["log"].is_null()
    );
}

#[test]
fn a_failure_reaches_every_dependent_of_a_long_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut flow = String::from(
        "[flow]\ndefault_backend = \"fake\"\n[backends.fake]\noutcomes = { \"c-0\" = \"fail\" }\n",
    );
    flow.push_str("[[job]]\nname = \"c-0\"\ncmd = \"true\"\n");
    for i in 1..3000 {
        flow.push_str(&format!(
            "[[job]]\nname = \"c-{i}\"\ncmd = \"true\"\nneeds = [\"c-{}\"]\n",
            i - 1
        ));
    }
    let run = run_flow(dir.path(), &flow, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.results["counts"]["skipped"], 2999);
    assert_eq!(run.reason("c-1"), "dependency failed: c-0");
    assert_eq!(run.reason("c-2999"), "dependency skipped: c-2998");
}

#[test]
fn a_timeout_kills_the_job_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let flow = "[backends.fake]\nduration = \"30s\"\n[[job]]\nname = \"slow\"\ncmd = \"true\"\nbackend = \"fake\"\ntimeout = \"500ms\"\n[[job]]\nname = \"after\"\ncmd = \"true\"\nbackend = \"fake\"\nneeds = [\"slow\"]\n";
    let run = run_flow(dir.path(), flow, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("slow"), "killed");
    assert_eq!(run.reason("slow"), "timed out after 500ms");
    assert_eq!(run.status("after"), "skipped");
    assert_eq!(run.reason("after"), "dependency killed: slow");
}

#[test]
fn only_runs_the_matching_jobs_and_what_they_need() {
    let dir = tempfile::tempdir().unwrap();
    let flow = "[flow]\ndefault_backend = \"fake\"\n[[job]]\nname = \"build\"\ncmd = \"true\"\n[[job]]\nname = \"sim-{t}\"\ncmd = \"true\"\nneeds = [\"build\"]\nmatrix = { t = [\"a\", \"b\"] }\n[[job]]\nname = \"lint\"\ncmd = \"true\"\n";
    let run = run_flow(dir.path(), flow, &["--only", "sim-a"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let names: Vec<&str> = run.results["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["build", "sim-a"]);
}

#[test]
fn dry_run_prints_the_plan_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let flow = format!(
        "[[job]]\nname = \"touch-{{n}}\"\ncmd = \"touch {}\"\nmatrix = {{ n = {{ range = [1, 3] }} }}\n",
        marker.display()
    );
    let run = run_flow(dir.path(), &flow, &["--dry-run"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("touch-1") && run.stdout.contains("touch-3"),
        "{}",
        run.stdout
    );
    assert!(!marker.exists(), "a dry run must start nothing");
    assert!(run.results.is_null());
}

#[test]
fn check_and_graph() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.toml"), "[[job]]\nname = \"a\"\ncmd = \"true\"\n[[job]]\nname = \"b\"\ncmd = \"true\"\nneeds = [\"a\"]\n").unwrap();
    let o = flowrun(dir.path())
        .arg("check")
        .arg(dir.path().join("f.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let o = flowrun(dir.path())
        .arg("graph")
        .arg(dir.path().join("f.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let dot = String::from_utf8_lossy(&o.stdout);
    assert!(
        dot.starts_with("digraph") && dot.contains("\"a\" -> \"b\""),
        "{dot}"
    );
}

#[test]
fn results_json_has_every_documented_field() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_flow(
        dir.path(),
        "[[job]]\nname = \"a\"\ncmd = \"echo hi\"\n[[job]]\nname = \"b\"\ncmd = \"exit 3\"\n",
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    for key in [
        "flow",
        "started_at",
        "finished_at",
        "interrupted",
        "counts",
        "jobs",
    ] {
        assert!(!run.results[key].is_null(), "missing {key}");
    }
    assert_eq!(run.results["interrupted"], false);
    assert_eq!(run.results["counts"]["passed"], 1);
    assert_eq!(run.results["counts"]["failed"], 1);
    let a = run.job("a");
    for key in [
        "name",
        "status",
        "reason",
        "backend",
        "exit_code",
        "queued_at",
        "started_at",
        "finished_at",
        "duration_s",
        "log",
    ] {
        assert!(a.get(key).is_some(), "job lacks {key}: {a}");
    }
    assert_eq!(a["backend"], "local");
    assert_eq!(a["exit_code"], 0);
    let ts = a["started_at"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == "2026-11-22T21:54:41.123456Z".len(),
        "{ts}"
    );
    assert_eq!(
        std::fs::read_to_string(a["log"].as_str().unwrap()).unwrap(),
        "hi\n"
    );
    assert_eq!(run.reason("b"), "exit code 3");
    assert_eq!(run.job("b")["exit_code"], 3);
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

const SIGNAL_FLOW: &str = r#"
[flow]
max_parallel = 2
[[job]]
name = "long-{n}"
cmd = "sleep 60"
matrix = { n = [1, 2, 3] }
[[job]]
name = "after"
cmd = "true"
needs = ["long-1"]
"#;

fn start(dir: &Path, flow: &str) -> Child {
    std::fs::write(dir.join("flow.toml"), flow).unwrap();
    flowrun(dir)
        .args(["run", "flow.toml", "--out", "out"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `n` jobs of the run are running (their log files exist).
fn wait_running(dir: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let count = std::fs::read_dir(dir.join("out/jobs"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().join("output.log").exists())
                    .count()
            })
            .unwrap_or(0);
        if count >= n {
            return;
        }
        assert!(Instant::now() < deadline, "jobs never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: i32) {
    flowrun_tests::send_signal(child, sig);
}

fn no_sleep_survives(dir: &Path) {
    // Every `sleep 60` of this run had the run's directory in its environment.
    let marker = dir.join("out").canonicalize().unwrap();
    let marker = marker.to_string_lossy();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        if let Ok(env) = std::fs::read(e.path().join("environ")) {
            let env = String::from_utf8_lossy(&env);
            assert!(
                !env.contains(&*marker),
                "a job process survived: pid {:?}",
                e.file_name()
            );
        }
    }
}

#[test]
fn sigint_kills_running_jobs_marks_the_rest_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let child = start(dir.path(), SIGNAL_FLOW);
    wait_running(dir.path(), 2);
    signal(&child, 2);
    let out = child.wait_with_output().unwrap();
    let run = collect(out, &dir.path().join("out"));
    assert_eq!(run.code, 130, "{run:#?}");
    assert_eq!(run.results["interrupted"], true);
    assert_eq!(run.status("long-1"), "killed");
    assert_eq!(run.reason("long-1"), "killed by SIGINT while running");
    assert_eq!(run.reason("long-2"), "killed by SIGINT while running");
    assert_eq!(run.status("long-3"), "killed");
    assert_eq!(run.reason("long-3"), "killed while queued");
    assert_eq!(run.status("after"), "skipped");
    assert_eq!(run.reason("after"), "run interrupted by SIGINT");
    no_sleep_survives(dir.path());
}

#[test]
fn sigterm_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    let child = start(dir.path(), SIGNAL_FLOW);
    wait_running(dir.path(), 2);
    signal(&child, 15);
    let run = collect(child.wait_with_output().unwrap(), &dir.path().join("out"));
    assert_eq!(run.code, 143, "{run:#?}");
    assert_eq!(run.reason("long-1"), "killed by SIGTERM while running");
    no_sleep_survives(dir.path());
}

#[test]
fn a_second_sigint_exits_at_once_after_a_best_effort_kill() {
    let dir = tempfile::tempdir().unwrap();
    // Jobs that ignore SIGTERM would hold the first Ctrl-C for the whole kill grace period.
    let flow = "[backends.local]\nkill_grace = \"60s\"\n[[job]]\nname = \"stubborn-{n}\"\ncmd = \"trap '' TERM; sleep 60\"\nmatrix = { n = [1, 2] }\n";
    let child = start(dir.path(), flow);
    wait_running(dir.path(), 2);
    std::thread::sleep(Duration::from_millis(300)); // let the shells install their traps
    signal(&child, 2);
    std::thread::sleep(Duration::from_millis(300));
    let second = Instant::now();
    signal(&child, 2);
    let run = collect(child.wait_with_output().unwrap(), &dir.path().join("out"));
    assert_eq!(run.code, 130, "{run:#?}");
    assert!(
        second.elapsed() < Duration::from_secs(20),
        "the second SIGINT must not wait for the grace period"
    );
    assert_eq!(run.status("stubborn-1"), "killed");
    assert_eq!(run.reason("stubborn-1"), "killed by SIGINT while running");
    no_sleep_survives(dir.path());
}

#[test]
fn backend_override_sends_every_job_to_one_backend() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    // With the override the local command never runs: the fake backend completes the jobs.
    let flow = format!(
        "[[job]]\nname = \"a\"\ncmd = \"touch {}\"\n",
        marker.display()
    );
    let run = run_flow(dir.path(), &flow, &["--backend", "fake"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.job("a")["backend"], "fake");
    assert!(!marker.exists());
}

#[test]
fn the_default_output_directory_is_timestamped_with_a_latest_link() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nightly.toml"),
        "[[job]]\nname = \"a\"\ncmd = \"true\"\n",
    )
    .unwrap();
    for _ in 0..2 {
        let o = flowrun(dir.path())
            .args(["run", "nightly.toml", "-q"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let base = dir.path().join("flowrun-out/nightly");
    let runs: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "latest")
        .collect();
    assert_eq!(runs.len(), 2, "two runs, two directories");
    let latest = std::fs::read_link(base.join("latest")).unwrap();
    let newest = runs.iter().map(|e| e.file_name()).max().unwrap();
    assert_eq!(latest.as_os_str(), newest.as_os_str());
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("latest/results.json")).unwrap())
            .unwrap();
    assert_eq!(results["flow"], "nightly");
}

#[test]
fn the_status_display_updates_one_line_on_a_terminal_and_groups_failures_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("f.toml"),
        "[[job]]\nname = \"s-{n}\"\ncmd = \"sleep 0.3\"\nmatrix = { n = { range = [1, 4] } }\n[[job]]\nname = \"bad-{n}\"\ncmd = \"exit 3\"\nmatrix = { n = [1, 2] }\n",
    )
    .unwrap();
    // `script` gives flowrun a pseudo-terminal as its stderr.
    let cmd = format!(
        "{} run f.toml --out o",
        flowrun_tests::flowrun_path().display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(dir.path())
        .env("XDG_DATA_HOME", dir.path().join("xdg"))
        .output()
        .unwrap();
    let screen = flowrun_tests::strip_escapes(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{screen}");
    assert!(
        !flowrun_tests::live_frames(&o.stdout).is_empty(),
        "the line is redrawn in place: {screen:?}"
    );
    assert!(screen.contains(" running"), "{screen:?}");
    assert!(screen.contains("4 passed, 2 failed"), "{screen:?}");
    assert!(
        ["bad-1, bad-2", "bad-2, bad-1"]
            .iter()
            .any(|names| screen.contains(&format!(
                "failed        2  exit code 3\r\n{:17}{names}\r\n",
                ""
            ))),
        "failures grouped by reason: {screen:?}"
    );
}
