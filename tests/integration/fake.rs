//! Flows run end to end on the `fake` backend: failures and skipped dependents, the host's
//! retry of BUSY answers, durations and kills on timeout, fail_rate determinism, and log
//! lines for pass/fail patterns.

use flowrun_tests::run_flow;

/// `[flow]` plus a fake backend table with `config` lines, followed by `jobs`.
fn flow(config: &str, jobs: &str) -> String {
    format!("[flow]\nname = \"fake-e2e\"\ndefault_backend = \"fake\"\n\n[backends.fake]\nkind = \"fake\"\n{config}\n\n{jobs}")
}

/// `[[job]]` tables named `prefix0..prefixN`, no dependencies.
fn independent_jobs(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("[[job]]\nname = \"{prefix}{i}\"\ncmd = \"true\"\n\n"))
        .collect()
}

#[test]
fn a_dag_with_failures_skips_the_dependents_of_failed_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = r#"
[[job]]
name = "build"
cmd = "make"

[[job]]
name = "sim_ok"
cmd = "simv"
needs = ["build"]

[[job]]
name = "sim_bad"
cmd = "simv"
needs = ["build"]

[[job]]
name = "report"
cmd = "report"
needs = ["sim_ok", "sim_bad"]

[[job]]
name = "report_ok"
cmd = "report"
needs = ["sim_ok"]
"#;
    let run = run_flow(
        dir.path(),
        &flow("outcomes = { \"sim_bad\" = \"fail\" }\nexit_code = 3", jobs),
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    for passed in ["build", "sim_ok", "report_ok"] {
        assert_eq!(run.status(passed), "passed", "{passed}: {run:#?}");
    }
    assert_eq!(run.status("sim_bad"), "failed");
    assert_eq!(run.reason("sim_bad"), "exit code 3");
    assert_eq!(run.job("sim_bad")["exit_code"], 3);
    assert_eq!(run.status("report"), "skipped");
    assert_eq!(run.reason("report"), "dependency failed: sim_bad");
    let counts = &run.results["counts"];
    assert_eq!(
        [&counts["passed"], &counts["failed"], &counts["skipped"]],
        [3, 1, 1]
    );
    // The fake writes nothing by default.
    let log = run.out.join("jobs/build/output.log");
    assert!(
        std::fs::read(&log).map_or(true, |bytes| bytes.is_empty()),
        "{} was written",
        log.display()
    );
}

#[test]
fn busy_answers_are_retried_by_the_host_until_every_job_passes() {
    let dir = tempfile::tempdir().unwrap();
    // Every 2nd offer is refused: half the jobs go through the host's BUSY/backoff path.
    let run = run_flow(
        dir.path(),
        &flow(
            "busy_every = 2\nduration = \"20ms\"",
            &independent_jobs("j", 30),
        ),
        &["-vv"],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], 30);
    // The backend's counters, logged by the host at shutdown, prove the refusals happened.
    let stats = run
        .stderr
        .lines()
        .find(|l| l.contains("backend stats") && l.contains("busy ="))
        .unwrap_or_else(|| panic!("no stats line in:\n{}", run.stderr));
    assert!(!stats.contains("busy = 0,"), "{stats}");
}

#[test]
fn durations_take_real_time_and_a_job_past_its_timeout_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = r#"
[[job]]
name = "quick"
cmd = "true"

[[job]]
name = "slow_a"
cmd = "true"

[[job]]
name = "stuck"
cmd = "true"
timeout = "300ms"
"#;
    let config = "duration = \"0s\"\ndurations = { \"slow_*\" = \"700ms\", \"stuck\" = \"1h\" }";
    let start = std::time::Instant::now();
    let run = run_flow(dir.path(), &flow(config, jobs), &[]);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "the killed job must not hold the run"
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("quick"), "passed");
    assert_eq!(run.status("slow_a"), "passed");
    let slow = run.job("slow_a")["duration_s"].as_f64().unwrap();
    assert!(slow >= 0.69, "slow_a took {slow}s, configured 700ms");
    let quick = run.job("quick")["duration_s"].as_f64().unwrap();
    assert!(quick < 0.5, "quick took {quick}s");
    assert_eq!(run.status("stuck"), "killed");
    assert!(
        run.reason("stuck").contains("timed out"),
        "{}",
        run.reason("stuck")
    );
}

#[test]
fn fail_rate_gives_the_same_results_for_the_same_seed() {
    let statuses = |seed: u64| -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let run = run_flow(
            dir.path(),
            &flow(
                &format!("fail_rate = 0.5\nseed = {seed}"),
                &independent_jobs("t", 40),
            ),
            &[],
        );
        assert_eq!(run.code, 1, "{run:#?}");
        (0..40)
            .map(|i| run.status(&format!("t{i}")).to_string())
            .collect()
    };
    let first = statuses(7);
    assert_eq!(first, statuses(7), "same seed, same results");
    let failed = first.iter().filter(|s| *s == "failed").count();
    assert!(
        (8..=32).contains(&failed),
        "about half of 40 should fail, got {failed}"
    );
    assert_ne!(first, statuses(8), "another seed, other results");
}

#[test]
fn write_logs_lets_the_host_apply_log_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = r#"
[[job]]
name = "flagged"
cmd = "true"
fail_patterns = ["^fake job flagged: pass$"]

[[job]]
name = "clean"
cmd = "true"
fail_patterns = ["ERROR"]
"#;
    let run = run_flow(dir.path(), &flow("write_logs = true", jobs), &[]);
    let log = std::fs::read_to_string(run.out.join("jobs/clean/output.log")).unwrap();
    assert_eq!(log, "fake job clean: pass\n");
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("clean"), "passed");
    assert_eq!(run.status("flagged"), "failed");
    assert_eq!(run.job("flagged")["fail_text"], "fake job flagged: pass");
}

#[test]
fn a_bad_fake_config_is_invalid_input_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_flow(
        dir.path(),
        &flow("fail_rate = 2.0", &independent_jobs("x", 1)),
        &[],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("fail_rate"), "{}", run.stderr);
}
