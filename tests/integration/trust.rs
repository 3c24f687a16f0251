//! Runs you can trust, host side (issue 10), through the CLI: no verdict from an older run's
//! log, job directories that never collide or escape, the cause as the reason, the fake
//! backend as a dry run, each job's own times, SIGHUP, host-side deadlines, logs that cannot
//! hang the judging, the summary on a full disk, cleanup jobs on Ctrl-C, `check` that creates
//! every instance, output-directory errors, `-j`, results before plugin shutdowns, signals
//! served while a gigabyte log is judged, the descriptor limit raised, a 64 KiB fail line cut.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use flowrun_tests::{
    collect, finish_within, flowrun, install_misbehaving, max_overlap, run_flow, send_signal,
    start_flow, wait_until,
};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// --- item 2: an out dir that holds a previous run, and concurrent runs ----------------------

const MARKER_FLOW: &str = r#"
[flow]
name = "rerun"
[[job]]
name = "sim"
cmd = "if [ -e ../../../marker ]; then echo 'no verdict printed'; else echo 'TEST PASSED'; fi"
pass_patterns = ["^TEST PASSED$"]
"#;

#[test]
fn a_second_run_into_the_same_out_dir_is_refused_and_never_judged_on_old_lines() {
    let dir = tempdir();
    let first = run_flow(dir.path(), MARKER_FLOW, &[]);
    assert_eq!(first.code, 0, "{first:#?}");
    std::fs::write(dir.path().join("marker"), "").unwrap();
    // The "simulator" now prints no verdict: reusing the old log would pass it.
    let second = run_flow(dir.path(), MARKER_FLOW, &[]);
    assert_eq!(second.code, 2, "{second:#?}");
    let out = dir.path().join("out");
    assert!(
        second.stderr.contains(&format!(
            "{}: the output directory is not empty",
            out.display()
        )),
        "{}",
        second.stderr
    );
    // The first run's results are untouched.
    assert_eq!(second.results["jobs"][0]["status"], "passed");
    // A fresh directory judges the new output.
    let o = flowrun(dir.path())
        .args(["run", "flow.toml", "--out", "out2", "-q"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_concurrent_run_into_the_same_out_dir_is_refused_by_the_lock() {
    let dir = tempdir();
    let flow = "[[job]]\nname = \"slow\"\ncmd = \"sleep 3\"\n";
    let first = start_flow(dir.path(), flow, &[]);
    let lock = dir.path().join("out/.flowrun.lock");
    wait_until(Duration::from_secs(30), "the first run's lock", || {
        lock.exists()
    });
    let second = flowrun(dir.path())
        .args(["run", "flow.toml", "--out", "out"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another flowrun") || err.contains("not empty"),
        "{err}"
    );
    let first = collect(first.wait_with_output().unwrap(), &dir.path().join("out"));
    assert_eq!(first.code, 0, "{first:#?}");
    assert!(!lock.exists(), "the lock goes with the run");
}

// --- item 3: job directories ----------------------------------------------------------------

#[test]
fn job_directories_are_one_to_one_and_never_leave_jobs() {
    let dir = tempdir();
    let flow = r#"
[flow]
name = "names"
[[job]]
name = "a/b"
cmd = "echo FAIL-MARK-X"
[[job]]
name = "a_b"
cmd = "echo fine"
fail_patterns = ["FAIL-MARK-X"]
[[job]]
name = "sim-{t}"
cmd = "echo $FLOWRUN_JOB_NAME"
matrix = { t = ["uart/smoke", ".hidden"] }
"#;
    let run = run_flow(dir.path(), flow, &[]);
    assert_eq!(run.code, 0, "a_b is not judged on a/b's log: {run:#?}");
    let jobs = run.out.join("jobs");
    let mut names: Vec<String> = std::fs::read_dir(&jobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a%2Fb", "a_b", "sim-.hidden", "sim-uart%2Fsmoke"]);
    assert_eq!(
        run.job("sim-uart/smoke")["log"],
        jobs.join("sim-uart%2Fsmoke/output.log").to_str().unwrap()
    );
}

#[test]
fn a_flow_name_never_puts_output_outside_flowrun_out_and_latest_is_never_deleted() {
    let dir = tempdir();
    std::fs::write(dir.path().join("latest"), "precious data").unwrap();
    std::fs::create_dir_all(dir.path().join("flowrun-out/keep")).unwrap();
    std::fs::write(dir.path().join("flowrun-out/keep/latest"), "mine").unwrap();
    for name in ["..", "keep"] {
        std::fs::write(
            dir.path().join("f.toml"),
            format!("[flow]\nname = \"{name}\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\n"),
        )
        .unwrap();
        let o = flowrun(dir.path())
            .args(["run", "f.toml", "-q"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        // The loader may refuse such a name (exit 2); a run stays inside flowrun-out.
        assert!(
            matches!(o.status.code(), Some(0) | Some(2)),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("latest")).unwrap(),
        "precious data"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("flowrun-out/keep/latest")).unwrap(),
        "mine"
    );
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !["latest", "flowrun-out", "f.toml"].contains(&n.as_str()))
        .collect();
    assert!(
        outside.is_empty(),
        "written outside flowrun-out: {outside:?}"
    );
    let runs = std::fs::read_dir(dir.path().join("flowrun-out/keep"))
        .unwrap()
        .count();
    assert_eq!(runs, 2, "the run and the untouched latest");
}

// --- item 4: the reason names the cause -----------------------------------------------------

#[test]
fn an_exit_code_or_a_signal_is_the_reason_not_a_missing_pass_pattern() {
    let dir = tempdir();
    let flow = r#"
[flow]
name = "cause"
[[job]]
name = "exit3"
cmd = "echo running; exit 3"
pass_patterns = ["^TEST PASSED$"]
[[job]]
name = "segv"
cmd = "sh -c 'kill -SEGV $$'; exit $?"
pass_patterns = ["^TEST PASSED$"]
[[job]]
name = "flagged"
cmd = "echo 'UVM_ERROR bad'; exit 3"
fail_patterns = ["^UVM_ERROR"]
pass_patterns = ["^TEST PASSED$"]
[[job]]
name = "silent"
cmd = "echo done"
pass_patterns = ["^TEST PASSED$"]
"#;
    let run = run_flow(dir.path(), flow, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.reason("exit3"), "exit code 3");
    assert_eq!(run.job("exit3")["reason_kind"], "exit_code");
    assert_eq!(
        run.reason("segv"),
        "killed by signal 11 (SIGSEGV), shell exit code 139"
    );
    assert_eq!(run.job("segv")["reason_kind"], "signal");
    assert_eq!(run.job("segv")["exit_code"], 139);
    assert_eq!(
        run.reason("flagged"),
        "fail pattern matched at line 1: UVM_ERROR bad"
    );
    assert_eq!(
        run.reason("silent"),
        "pass pattern never matched: ^TEST PASSED$"
    );
    assert_eq!(run.job("silent")["reason_kind"], "pass_missing");
}

// --- item 5: --backend fake is a dry run ----------------------------------------------------

#[test]
fn backend_fake_runs_a_flow_with_patterns_by_the_fake_policy() {
    let dir = tempdir();
    let flow = r#"
[flow]
name = "shape"
[[job]]
name = "sim-{n}"
cmd = "./simv"
matrix = { n = { range = [1, 6] } }
pass_patterns = ["^TEST PASSED$"]
fail_patterns = ["^UVM_ERROR"]
"#;
    let run = run_flow(dir.path(), flow, &["--backend", "fake"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], 6);
    // Failures by the fake's policy group under one reason without a path.
    let again = dir.path().join("again");
    std::fs::create_dir(&again).unwrap();
    let flow = format!("{flow}\n[backends.fake]\nfail_rate = 1.0\n");
    let run = run_flow(&again, &flow, &["--backend", "fake"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let reasons: std::collections::BTreeSet<&str> =
        (1..=6).map(|n| run.reason(&format!("sim-{n}"))).collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(!reasons.iter().next().unwrap().contains('/'), "{reasons:?}");
}

// --- item 7: each job's times are its own ---------------------------------------------------

#[test]
fn jobs_started_in_one_batch_have_times_of_their_own() {
    let dir = tempdir();
    let flow = "[flow]\nmax_parallel = 8\n[backends.local]\nmax_parallel = 8\n[[job]]\nname = \"j-{n}\"\ncmd = \"sleep 0.{n}\"\nmatrix = { n = [1, 2, 3, 4, 5, 6, 7, 8] }\n";
    let run = run_flow(dir.path(), flow, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let jobs = run.results["jobs"].as_array().unwrap();
    let started: std::collections::BTreeSet<&str> = jobs
        .iter()
        .map(|j| j["started_at"].as_str().unwrap())
        .collect();
    assert_eq!(started.len(), 8, "every start is its own: {started:?}");
    for j in jobs {
        let d = j["duration_s"].as_f64().unwrap();
        let n: f64 = j["name"].as_str().unwrap()[2..].parse().unwrap();
        assert!(d >= n / 10.0, "{} took {d}s", j["name"]);
    }
}

// --- item 8: SIGHUP -------------------------------------------------------------------------

#[test]
fn sighup_is_handled_like_sigterm_and_exits_129() {
    let dir = tempdir();
    let flow = "[[job]]\nname = \"long-{n}\"\ncmd = \"sleep 60\"\nmatrix = { n = [1, 2] }\n";
    let child = start_flow(dir.path(), flow, &[]);
    wait_until(Duration::from_secs(30), "two running jobs", || {
        (1..=2).all(|n| {
            dir.path()
                .join(format!("out/jobs/long-{n}/output.log"))
                .exists()
        })
    });
    send_signal(&child, libc::SIGHUP);
    let run = collect(child.wait_with_output().unwrap(), &dir.path().join("out"));
    assert_eq!(run.code, 129, "{run:#?}");
    assert_eq!(run.results["interrupted"], true);
    assert_eq!(run.reason("long-1"), "killed by SIGHUP while running");
    assert_eq!(run.job("long-1")["reason_kind"], "interrupted");
}

// --- item 11: host-side deadlines -----------------------------------------------------------

#[test]
fn a_job_its_backend_never_reports_is_killed_at_its_timeout_then_lost_and_the_run_goes_on() {
    let home = tempdir();
    install_misbehaving(home.path());
    let flow = r#"
[flow]
name = "deadline"
[backends.mb]
kind = "misbehaving"
panic_in = "never_report"
panic_on = "stuck"
[[job]]
name = "stuck"
cmd = "true"
backend = "mb"
timeout = "1s"
[[job]]
name = "fine"
cmd = "true"
backend = "mb"
[[job]]
name = "local"
cmd = "true"
"#;
    // The backend's kill grace is the host's default (10 s: its table has none), plus 1 s.
    let child = start_flow(home.path(), flow, &["--kill-margin", "1s"]);
    let run = finish_within(child, home.path(), Duration::from_secs(120));
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("stuck"), "failed");
    assert_eq!(
        run.reason("stuck"),
        "lost by backend mb: did not report after kill (timed out after 1s), waited 11s"
    );
    assert_eq!(run.job("stuck")["reason_kind"], "lost");
    assert_eq!(
        (run.status("fine"), run.status("local")),
        ("passed", "passed")
    );
}

#[test]
fn ctrl_c_ends_a_run_whose_backend_ignores_kills_after_the_deadline() {
    let home = tempdir();
    install_misbehaving(home.path());
    let flow = "[backends.mb]\nkind = \"misbehaving\"\npanic_in = \"never_report\"\n[[job]]\nname = \"stuck\"\ncmd = \"true\"\nbackend = \"mb\"\n";
    let child = start_flow(home.path(), flow, &["--kill-margin", "1s"]);
    let lock = home.path().join("out/.flowrun.lock");
    wait_until(Duration::from_secs(30), "the run", || lock.exists());
    std::thread::sleep(Duration::from_millis(300));
    send_signal(&child, libc::SIGINT);
    let run = finish_within(child, home.path(), Duration::from_secs(120));
    assert_eq!(run.code, 130, "{run:#?}");
    assert!(run
        .reason("stuck")
        .starts_with("lost by backend mb: did not report after kill"));
}

// --- item 12: logs that could hang the judging ----------------------------------------------

#[test]
fn a_log_replaced_by_a_fifo_or_a_link_to_dev_zero_is_judged_without_a_hang() {
    // (A log still written by an escaped process is read up to its size when the scan began:
    // `outcome::scan` tests it with a writer far faster than the scan.)
    let dir = tempdir();
    let flow = r#"
[flow]
name = "logs"
[[job]]
name = "fifo"
cmd = "rm -f output.log && mkfifo output.log"
pass_patterns = ["^TEST PASSED$"]
[[job]]
name = "zero"
cmd = "rm -f output.log && ln -s /dev/zero output.log"
fail_patterns = ["ERROR"]
"#;
    let child = start_flow(dir.path(), flow, &[]);
    let run = finish_within(child, dir.path(), Duration::from_secs(120));
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.reason("fifo"),
        "cannot read log: not a regular file (a FIFO)"
    );
    assert_eq!(
        run.reason("zero"),
        "cannot read log: not a regular file (a character device)"
    );
    assert_eq!(run.job("zero")["reason_kind"], "log_unreadable");
}

// --- item 13: disk full ---------------------------------------------------------------------

#[test]
fn on_a_full_disk_the_summary_is_printed_and_says_where_results_could_not_be_written() {
    if std::env::var("FLOWRUN_PRIVILEGED_TESTS").as_deref() != Ok("1") {
        eprintln!("SKIPPED (needs FLOWRUN_PRIVILEGED_TESTS=1): root to mount a 1 MB tmpfs");
        return;
    }
    let dir = tempdir();
    let mnt = dir.path().join("full");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs (root needed)");
    // `fails` runs first, then `fill` fills the file system: results.json cannot be written.
    let flow = "[flow]\nname = \"full\"\n[[job]]\nname = \"fails\"\ncmd = \"exit 3\"\n[[job]]\nname = \"fill\"\nneeds = [\"fails\"]\nwhen = \"always\"\ncmd = \"head -c 2000000 /dev/zero > $FLOWRUN_RUN_DIR/fill; true\"\n";
    std::fs::write(dir.path().join("flow.toml"), flow).unwrap();
    let out = mnt.join("out");
    let o = flowrun(dir.path())
        .args(["run", "flow.toml", "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("2 jobs"), "the summary: {err}");
    assert!(err.contains("FAILED fails: exit code 3"), "{err}");
    assert!(
        err.contains(&format!(
            "NOT WRITTEN: {}",
            out.join("results.json").display()
        )),
        "{err}"
    );
    assert!(
        !leftovers.iter().any(|n| n == ".results.json.tmp"),
        "{leftovers:?}"
    );
}

// --- item 15: when = "always" on Ctrl-C -----------------------------------------------------

#[test]
fn always_jobs_run_on_ctrl_c_and_a_second_ctrl_c_skips_them() {
    let dir = tempdir();
    let marker = dir.path().join("cleaned");
    let flow = format!(
        "[[job]]\nname = \"long\"\ncmd = \"sleep 60\"\n[[job]]\nname = \"cleanup\"\nneeds = [\"long\"]\nwhen = \"always\"\ncmd = \"touch {}\"\n",
        marker.display()
    );
    let child = start_flow(dir.path(), &flow, &[]);
    let log = dir.path().join("out/jobs/long/output.log");
    wait_until(Duration::from_secs(30), "long running", || log.exists());
    send_signal(&child, libc::SIGINT);
    let run = collect(child.wait_with_output().unwrap(), &dir.path().join("out"));
    assert_eq!(run.code, 130, "{run:#?}");
    assert_eq!(run.status("long"), "killed");
    assert_eq!(run.status("cleanup"), "passed", "{run:#?}");
    assert!(marker.exists(), "the cleanup ran");

    // A cleanup that takes long: the second Ctrl-C skips it and exits at once.
    let dir = tempdir();
    let flow = "[[job]]\nname = \"long\"\ncmd = \"sleep 60\"\n[[job]]\nname = \"cleanup\"\nneeds = [\"long\"]\nwhen = \"always\"\ncmd = \"sleep 60\"\n";
    let child = start_flow(dir.path(), flow, &[]);
    let long = dir.path().join("out/jobs/long/output.log");
    wait_until(Duration::from_secs(30), "long running", || long.exists());
    send_signal(&child, libc::SIGINT);
    let cleanup = dir.path().join("out/jobs/cleanup/output.log");
    wait_until(Duration::from_secs(30), "cleanup running", || {
        cleanup.exists()
    });
    let t = Instant::now();
    send_signal(&child, libc::SIGINT);
    let run = collect(child.wait_with_output().unwrap(), &dir.path().join("out"));
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(run.code, 130, "{run:#?}");
    assert_eq!(
        (run.status("cleanup"), run.reason("cleanup")),
        ("killed", "killed by SIGINT while running")
    );
}

// --- item 16: check and --dry-run create every backend and observer -------------------------

const BAD_CONFIGS: &str = r#"
[flow]
name = "typos"
[backends.local]
kill_grace = "soon"
[observers.junit]
paht = "x.xml"
[[job]]
name = "a"
cmd = "true"
"#;

#[test]
fn check_and_dry_run_report_every_backend_and_observer_config_error_and_a_failed_run_leaves_nothing(
) {
    let dir = tempdir();
    std::fs::write(dir.path().join("typos.toml"), BAD_CONFIGS).unwrap();
    for args in [
        &["check", "typos.toml"][..],
        &["run", "--dry-run", "typos.toml"],
        &["run", "typos.toml"],
    ] {
        let o = flowrun(dir.path())
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("kill_grace"), "{args:?}: {err}");
        assert!(err.contains("paht"), "{args:?}: {err}");
        assert!(
            err.contains("typos.toml:4:"),
            "file and line of the backend: {err}"
        );
        assert!(
            err.contains("typos.toml:6:"),
            "file and line of the observer: {err}"
        );
        assert!(err.contains("2 errors"), "{err}");
    }
    assert!(
        !dir.path().join("flowrun-out").exists(),
        "a run that failed before any job started leaves no directory"
    );
}

// --- item 19: output-directory errors, -j 0 -------------------------------------------------

#[test]
fn output_directory_errors_exit_2_with_the_path_and_the_os_error_and_minus_j_0_is_refused() {
    let dir = tempdir();
    std::fs::write(dir.path().join("afile"), "").unwrap();
    std::fs::write(
        dir.path().join("f.toml"),
        "[[job]]\nname = \"a\"\ncmd = \"true\"\n",
    )
    .unwrap();
    let o = flowrun(dir.path())
        .args(["run", "f.toml", "--out", "afile/out"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("afile/out") && err.contains("os error"),
        "{err}"
    );
    let o = flowrun(dir.path())
        .args(["run", "f.toml", "--out", "out", "-j", "0"])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!dir.path().join("out").exists());
}

// --- item 22: -j N raises a backend's default cap -------------------------------------------

#[test]
fn minus_j_raises_the_local_default_cap_and_an_explicit_max_parallel_wins() {
    // The local backend's default cap is the CPU count; -j asks for twice as many at once.
    let n = 2 * std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let flow = format!(
        "[[job]]\nname = \"j-{{i}}\"\ncmd = \"sleep 1\"\nmatrix = {{ i = {{ range = [1, {n}] }} }}\n"
    );
    let dir = tempdir();
    let run = run_flow(dir.path(), &flow, &["-j", &n.to_string()]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(max_overlap(&run, |_| true), n, "-j {n} runs {n} at once");
    let dir = tempdir();
    let capped = format!("[backends.local]\nmax_parallel = 1\n{flow}");
    let run = run_flow(dir.path(), &capped, &["-j", &n.to_string()]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(max_overlap(&run, |_| true), 1, "the flow's own cap holds");
}

// --- F6: results before any backend shutdown ------------------------------------------------

#[test]
fn a_backend_that_hangs_in_shutdown_costs_nothing_results_and_summary_come_first() {
    let home = tempdir();
    install_misbehaving(home.path());
    let flow = "[backends.mb]\nkind = \"misbehaving\"\npanic_in = \"shutdown\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\nbackend = \"mb\"\n[[job]]\nname = \"b\"\ncmd = \"exit 3\"\n";
    let child = start_flow(home.path(), flow, &[]);
    // The host waits a bounded time (10 s) for the hanging shutdown, after the results.
    let run = finish_within(child, home.path(), Duration::from_secs(120));
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        (run.status("a"), run.reason("b")),
        ("passed", "exit code 3")
    );
    assert!(run.stderr.contains("2 jobs"), "the summary: {}", run.stderr);
}

// --- item 12: signals stay served while a log is scanned ------------------------------------

/// A run whose job `big` writes a gigabyte log (its pass pattern never printed, so the whole log
/// is scanned after the job ends) while `slow` runs; returns it once `big` has ended.
fn start_gigabyte_scan(dir: &std::path::Path) -> std::process::Child {
    let flow = r#"
[flow]
name = "scan"
[[job]]
name = "big"
cmd = "yes \"$(head -c 1023 /dev/zero | tr '\\0' x)\" | head -c 1073741824; touch ../../../wrote"
pass_patterns = ["^NEVER PRINTED$"]
[[job]]
name = "slow"
cmd = "sleep 120"
"#;
    let child = start_flow(dir, flow, &[]);
    wait_until(Duration::from_secs(180), "the gigabyte log", || {
        dir.join("wrote").exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// Seconds since the epoch now.
#[test]
fn a_sigterm_while_a_gigabyte_log_is_scanned_is_served_at_once() {
    // The scan (off the loop) of a gigabyte takes seconds in a debug build. On disk, not in
    // /dev/shm: a full tmpfs would break other tests running beside this one (the browser's).
    let dir = tempdir();
    // One SIGTERM: the running job is killed at once, while the ended job's log is still
    // being judged; the run then ends with that job's verdict from its whole log.
    let child = start_gigabyte_scan(dir.path());
    let sent = flowrun_tests::epoch_now();
    send_signal(&child, libc::SIGTERM);
    let run = finish_within(child, dir.path(), Duration::from_secs(700));
    assert_eq!(run.code, 143, "{run:#?}");
    assert_eq!(run.reason("slow"), "killed by SIGTERM while running");
    let killed_after =
        flowrun_tests::epoch_secs(run.job("slow")["finished_at"].as_str().unwrap()) - sent;
    let ended_after =
        flowrun_tests::epoch_secs(run.results["finished_at"].as_str().unwrap()) - sent;
    eprintln!("slow killed {killed_after:.2} s, the run ended {ended_after:.2} s after SIGTERM");
    assert!(
        killed_after < 3.0,
        "the running job was killed {killed_after:.2} s after SIGTERM: the signal waited for the scan"
    );
    assert_eq!(run.status("big"), "failed");
    assert_eq!(
        run.reason("big"),
        "pass pattern never matched: ^NEVER PRINTED$"
    );

    // A second SIGTERM abandons the judging too: the run ends at once, never with a pass.
    std::fs::remove_file(dir.path().join("wrote")).unwrap();
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    let child = start_gigabyte_scan(dir.path());
    send_signal(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    send_signal(&child, libc::SIGTERM);
    let run = finish_within(child, dir.path(), Duration::from_secs(60));
    assert_eq!(run.code, 143, "{run:#?}");
    assert_ne!(run.status("big"), "passed");
    assert_eq!(run.status("slow"), "killed");
}

// --- item 14: the descriptor limit -----------------------------------------------------------

#[test]
fn the_soft_descriptor_limit_is_raised_to_the_hard_one_at_start() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("flow.toml"),
        "[[job]]\nname = \"wait\"\ncmd = \"sleep 30\"\n",
    )
    .unwrap();
    let hard: u64 = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .expect("a finite hard limit on open files");
    assert!(
        hard > 256,
        "the test needs a hard limit above 256, not {hard}"
    );
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "ulimit -Sn 256 && exec \"$FLOWRUN\" run flow.toml -q --out out",
        ])
        .env("FLOWRUN", flowrun_tests::flowrun_path())
        .env("XDG_DATA_HOME", dir.path().join("xdg-data"))
        .env("FLOWRUN_SITE_PLUGIN_DIR", dir.path().join("site-plugins"))
        .env_remove("FLOWRUN_PLUGIN_PATH")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let worker = flowrun_tests::run_process(child.id());
    wait_until(Duration::from_secs(30), "the job to start", || {
        dir.path().join("out/jobs/wait/output.log").exists()
    });
    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    send_signal(&child, libc::SIGTERM);
    let _ = child.wait();
    assert_eq!(soft, hard, "{line}");
}

// --- item 20: a 64 KiB fail line ---------------------------------------------------------------

#[test]
fn a_64_kib_fail_line_is_cut_in_results_and_on_the_terminal() {
    let dir = tempdir();
    let flow = r#"
[flow]
name = "long"
[[job]]
name = "huge"
cmd = "printf 'UVM_ERROR %s\n' \"$(head -c 65536 /dev/zero | tr '\\0' z)\""
fail_patterns = ["^UVM_ERROR"]
"#;
    let run = run_flow(dir.path(), flow, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("huge"), "failed");
    let reason = run.reason("huge");
    assert!(
        reason.starts_with("fail pattern matched at line 1: UVM_ERROR zzz"),
        "{}",
        &reason[..reason.len().min(200)]
    );
    // The reason quotes the line's start; results.json's fail_text keeps the line, up to the
    // scan's 64 KiB cap.
    assert!(
        reason.chars().count() < 500,
        "a reason of {} bytes",
        reason.len()
    );
    assert!(reason.ends_with('…'));
    let text = run.job("huge")["fail_text"].as_str().unwrap();
    assert!(
        text.starts_with("UVM_ERROR zzz") && text.len() == 64 * 1024,
        "{}",
        text.len()
    );
    for line in run.stdout.lines().chain(run.stderr.lines()) {
        assert!(
            line.chars().count() <= 400,
            "a terminal line of {} characters: {}…",
            line.chars().count(),
            line.chars().take(120).collect::<String>()
        );
    }
}
