//! A plugin that kills flowrun's process (issue 10 item 10, F4/F6), through the CLI: the
//! supervising parent writes results.json from the journal when the worker dies of a SIGSEGV,
//! an `abort()` or an `exit()` in a plugin; ended jobs keep their verdicts, the rest carry the
//! crash; no job process is left; the exit code is 3 (docs: README "Exit codes"). A crash or
//! hang in a plugin's shutdown, after the run ended, costs nothing.

use std::{
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use flowrun_tests::{
    finish_within, flowrun, install_misbehaving, processes_with, start_flow, unique_sleep,
    wait_until,
};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Eleven jobs: four quick local passes and a local failure end first; three slow local jobs run
/// (their command lines hold `marker`) when `boom`, which needs the quick ones, is submitted to
/// the misbehaving backend, whose `crash` key kills the process there; `boom` waits for `bad`
/// too (`when = "always"`), so that every verdict but the slow jobs' is in before the crash,
/// and for `gate`, which passes once the three slow jobs really run (a job the host has handed
/// to its backend may not have started yet when the process dies: on a loaded machine it
/// often has not); `after` needs `boom`.
fn crash_flow(crash: &str, marker: &str) -> String {
    let mut s = format!(
        "[flow]\nname = \"crash\"\n[backends.local]\nkind = \"local\"\nmax_parallel = 10\n\
         [backends.mb]\nkind = \"misbehaving\"\n{crash} = \"submit\"\npanic_on = \"boom\"\n"
    );
    for i in 1..=4 {
        s.push_str(&format!("[[job]]\nname = \"quick-{i}\"\ncmd = \"true\"\n"));
    }
    s.push_str("[[job]]\nname = \"bad\"\ncmd = \"exit 3\"\n");
    for i in 1..=3 {
        s.push_str(&format!(
            "[[job]]\nname = \"slow-{i}\"\n\
             cmd = \"touch $FLOWRUN_RUN_DIR/slow-{i}.started; exec sleep {marker}\"\n"
        ));
    }
    s.push_str(
        "[[job]]\nname = \"boom\"\ncmd = \"true\"\nbackend = \"mb\"\n\
         needs = [\"quick-1\", \"quick-2\", \"quick-3\", \"quick-4\", \"bad\", \"gate\"]\n\
         when = \"always\"\n\
         [[job]]\nname = \"gate\"\n\
         cmd = \"until [ -e $FLOWRUN_RUN_DIR/slow-1.started ] && [ -e $FLOWRUN_RUN_DIR/slow-2.started ] \
         && [ -e $FLOWRUN_RUN_DIR/slow-3.started ]; do sleep 0.05; done\"\n\
         [[job]]\nname = \"after\"\ncmd = \"true\"\nneeds = [\"boom\"]\n",
    );
    s
}

fn crash_mid_run(crash: &str, died: &str) {
    let home = tempdir();
    install_misbehaving(home.path());
    let marker = unique_sleep();
    let child = start_flow(home.path(), &crash_flow(crash, &marker), &[]);
    let run = finish_within(child, home.path(), Duration::from_secs(60));
    assert_eq!(run.code, 3, "{crash}: {run:#?}");
    let jobs = run.results["jobs"].as_array().unwrap_or_else(|| {
        panic!("{crash}: no results.json: {run:#?}");
    });
    assert_eq!(jobs.len(), 11);
    for i in 1..=4 {
        assert_eq!(run.status(&format!("quick-{i}")), "passed", "{run:#?}");
    }
    assert_eq!(run.status("gate"), "passed", "{run:#?}");
    assert_eq!(
        (run.status("bad"), run.reason("bad")),
        ("failed", "exit code 3")
    );
    for name in ["slow-1", "slow-2", "slow-3", "boom"] {
        assert_eq!(run.status(name), "failed", "{name}: {run:#?}");
        assert_eq!(run.job(name)["reason_kind"], "crashed", "{name}");
        let reason = run.reason(name);
        assert!(
            reason.starts_with("flowrun crashed while the job ran: the run's process")
                && reason.ends_with(died),
            "{name}: {reason}"
        );
        assert!(
            reason.contains("misbehaving"),
            "names the plugins: {reason}"
        );
    }
    // A job that was running keeps its log and its time until the crash.
    for name in ["slow-1", "slow-2", "slow-3"] {
        let job = run.job(name);
        assert!(
            job["log"]
                .as_str()
                .is_some_and(|l| l.ends_with(&format!("/jobs/{name}/output.log"))),
            "{name}: {job}"
        );
        assert!(job["duration_s"].as_f64().is_some_and(|d| d > 0.0), "{job}");
    }
    assert_eq!(run.status("after"), "skipped");
    assert_eq!(run.job("after")["reason_kind"], "crashed");
    assert!(run.reason("after").starts_with("not run: flowrun crashed"));
    assert_eq!(run.results["counts"]["passed"], 5);
    assert_eq!(run.results["counts"]["failed"], 5);
    assert_eq!(run.results["counts"]["skipped"], 1);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("flowrun: crashed:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {}", run.stderr);
    assert!(errors[0].contains(died), "{}", errors[0]);
    // One summary, the display's, as a run that ended would have printed it.
    let totals: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("flow crash: 11 jobs in "))
        .collect();
    assert_eq!(totals.len(), 1, "{}", run.stderr);
    assert!(
        totals[0].ends_with(": 5 passed, 5 failed, 0 killed, 1 skipped"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("results: /") && l.ends_with("/results.json")),
        "names the results: {}",
        run.stderr
    );
    // The slow jobs die with the crashed process (the local backend's watchdog).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{crash}: job processes outlived the crash by 5 s: {:?}",
            processes_with(&marker)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn crash_a_plugin_segfault_in_submit_keeps_every_ended_verdict_and_fails_the_rest() {
    crash_mid_run("segfault_in", "died of SIGSEGV");
}

#[test]
fn crash_a_plugin_abort_in_submit_keeps_every_ended_verdict_and_fails_the_rest() {
    crash_mid_run("abort_in", "died of SIGABRT");
}

#[test]
fn crash_a_plugin_exit_in_submit_keeps_every_ended_verdict_and_fails_the_rest() {
    crash_mid_run("exit_in", "exited with code 42 before the run ended");
}

/// Every job ended and results.json was written before the plugin's shutdown crashed: the
/// results stand, the exit code is the run's, one line says what happened.
#[test]
fn crash_a_plugin_segfault_in_shutdown_costs_no_result() {
    for (crash, died) in [("segfault_in", "SIGSEGV"), ("abort_in", "SIGABRT")] {
        let home = tempdir();
        install_misbehaving(home.path());
        let flow = format!(
            "[backends.mb]\nkind = \"misbehaving\"\n{crash} = \"shutdown\"\n[[job]]\nname = \"a\"\n\
             cmd = \"true\"\nbackend = \"mb\"\n[[job]]\nname = \"b\"\ncmd = \"exit 3\"\n"
        );
        let child = start_flow(home.path(), &flow, &[]);
        let run = finish_within(child, home.path(), Duration::from_secs(60));
        assert_eq!(run.code, 1, "{crash}: {run:#?}");
        assert_eq!(
            (run.status("a"), run.reason("b")),
            ("passed", "exit code 3")
        );
        assert!(
            run.stderr.contains(&format!(
                "died of {died} while shutting down its plugins, after every job ended"
            )),
            "{}",
            run.stderr
        );
    }
}

/// A plugin whose shutdown never returns: results.json and the exit code come within the
/// bound (the host waits 10 s for a shutdown), through the supervising parent.
#[test]
fn crash_a_plugin_hanging_in_shutdown_still_yields_results_within_a_bound() {
    let home = tempdir();
    install_misbehaving(home.path());
    let flow = "[backends.mb]\nkind = \"misbehaving\"\npanic_in = \"shutdown\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\nbackend = \"mb\"\n";
    let t = Instant::now();
    let child = start_flow(home.path(), flow, &[]);
    let run = finish_within(child, home.path(), Duration::from_secs(30));
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.status("a"), "passed");
}

/// A signal sent to flowrun's whole process group (`kill -TERM -PGID`; a shell sends SIGHUP to
/// its jobs' groups when its terminal closes) reaches the run's process itself and the
/// supervising parent: the parent must not forward its copy, since a second signal abandons
/// the run (no graceful kill). Each of SIGHUP, SIGTERM and SIGINT counts once: the running
/// jobs are killed for it, and there is no "again" line.
#[test]
fn crash_a_signal_to_the_whole_process_group_counts_once() {
    for (sig, code) in [("HUP", 129), ("TERM", 143), ("INT", 130)] {
        let home = tempdir();
        let m = unique_sleep();
        let flow = format!(
            "[[job]]\nname = \"s1\"\ncmd = \"sleep {m}\"\n[[job]]\nname = \"s2\"\ncmd = \"sleep {m}\"\n"
        );
        std::fs::write(home.path().join("flow.toml"), flow).unwrap();
        let child = flowrun(home.path())
            .args(["run", "flow.toml", "--out", "out"])
            .current_dir(home.path())
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(60), "the jobs to start", || {
            processes_with(&m).len() >= 2
        });
        let group = format!("-{}", child.id());
        let sent = Command::new("kill")
            .args([&format!("-{sig}"), "--", &group])
            .status()
            .unwrap();
        assert!(sent.success());
        let run = finish_within(child, home.path(), Duration::from_secs(60));
        assert_eq!(run.code, code, "SIG{sig}: {run:#?}");
        assert!(
            !run.stderr.contains("again: exiting now"),
            "SIG{sig} counted twice: {}",
            run.stderr
        );
        for name in ["s1", "s2"] {
            assert_eq!(
                (run.status(name), run.reason(name)),
                (
                    "killed",
                    format!("killed by SIG{sig} while running").as_str()
                ),
                "{run:#?}"
            );
        }
        assert_eq!(processes_with(&m), Vec::<u32>::new(), "SIG{sig}");
    }
}
