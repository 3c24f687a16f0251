//! The `legacy` backend end to end: a C fixture launcher (plugins/legacy/fixtures), built here
//! with the system C compiler, driven through real flows by the real `flowrun`; and the two
//! example launchers of examples/legacy-launcher, built with `make` and `cargo`. Needs
//! `cargo build --workspace` first (the plugin .so beside the binary).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use flowrun_tests::{
    bin_dir, collect, flowrun, plugin_path, processes_with, run_flow, unique_sleep, wait_until,
    workspace_root, Run,
};
use parking_lot::Mutex;

/// The fixture launcher built with extra `-D` flags, once per variant and test process.
fn fixture(variant: &'static str, defines: &[&str]) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<&'static str, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock();
    if let Some(p) = built.get_or_insert_with(HashMap::new).get(variant) {
        return p.clone();
    }
    let dir = std::env::temp_dir().join(format!(
        "flowrun-legacy-fixture-{}-{variant}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("libfixture.so");
    let legacy = workspace_root().join("plugins/legacy");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let result = Command::new(cc)
        .args(["-shared", "-fPIC", "-O1", "-Wall"])
        .args(defines)
        .arg("-I")
        .arg(legacy.join("include"))
        .arg("-o")
        .arg(&out)
        .arg(legacy.join("fixtures/fixture_launcher.c"))
        .output()
        .expect("run the system C compiler (cc)");
    assert!(
        result.status.success(),
        "building the fixture launcher failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    built
        .get_or_insert_with(HashMap::new)
        .insert(variant, out.clone());
    out
}

fn launcher() -> PathBuf {
    fixture("plain", &[])
}

/// A flow whose jobs run on a `legacy` backend over `library` with the `backend` keys, polled
/// every 20 ms unless they say otherwise.
fn flow_with(library: &Path, backend: &str, jobs: &str) -> String {
    let interval = match backend.contains("poll_interval") {
        true => "",
        false => "poll_interval = \"20ms\"",
    };
    format!(
        r#"
[flow]
name = "legacy"
default_backend = "legacy"

[backends.legacy]
kind = "legacy"
library = "{}"
{interval}
{backend}

{jobs}
"#,
        library.display()
    )
}

fn flow(backend: &str, jobs: &str) -> String {
    flow_with(&launcher(), backend, jobs)
}

/// Pids of worker processes (guardian and worker) started by the flowrun of pid `host`: their
/// initial environment, which /proc keeps, names it.
fn workers_of(host: u32) -> Vec<u32> {
    let needle = format!("FLOWRUN_LEGACY_WORKER={host}\0");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if String::from_utf8_lossy(&env).contains(&needle) {
                found.push(pid);
            }
        }
    }
    found
}

/// A number from the `backend stats` line that `flowrun -vv` logs at shutdown.
fn stat(run: &Run, key: &str) -> u64 {
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("backend stats") && l.contains("workers_started"))
        .unwrap_or_else(|| panic!("no legacy stats line in:\n{}", run.stderr));
    let re = regex::Regex::new(&format!(r"\b{key} = ([0-9]+)")).unwrap();
    re.captures(line)
        .unwrap_or_else(|| panic!("no {key} in {line}"))[1]
        .parse()
        .unwrap()
}

/// Starts `flowrun run` on `flow_toml` with `args`, without waiting for it.
fn spawn_run(dir: &Path, flow_toml: &str, args: &[&str]) -> (Child, PathBuf) {
    std::fs::write(dir.join("flow.toml"), flow_toml).unwrap();
    let out = dir.join("out");
    let child = flowrun(dir)
        .args(args)
        .args(["run", "flow.toml", "--out"])
        .arg(&out)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, out)
}

/// Starts a flow of one legacy job that sleeps until killed, and waits until it runs. Returns
/// flowrun, its `--out` and the sleep's marker.
fn start_long_job(dir: &Path) -> (Child, PathBuf, String) {
    let m = unique_sleep();
    let jobs = format!("[[job]]\nname = \"long\"\ncmd = \"sleep {m}\"\n");
    let (child, out) = spawn_run(dir, &flow("", &jobs), &[]);
    wait_until(Duration::from_secs(20), "the job to start", || {
        !processes_with(&m).is_empty()
    });
    (child, out, m)
}

fn signal(pid: u32, sig: i32) {
    flowrun_tests::signal_pid(pid, sig);
}

#[test]
fn legacy_exit_codes_signals_launcher_verdicts_and_fresh_logs() {
    let dir = tempfile::tempdir().unwrap();
    // A log already there when the job starts (the host refuses an out dir from an earlier
    // run, so a job before it plants one): the adapter creates the log anew before each
    // launch, although the fixture opens it for appending.
    let run = run_flow(
        dir.path(),
        &flow(
            r#"options = "fail_exit=42""#,
            r#"
[[job]]
name = "ok"
cmd = 'echo "hello $GREETING"; pwd'
env = { GREETING = "from legacy" }
[[job]]
name = "three"
cmd = "exit 3"
[[job]]
name = "segv"
cmd = "kill -SEGV $$"
[[job]]
name = "argv"
cmd = ["printf", "%s|%s\n", "a b", "c"]
[[job]]
name = "licence"
cmd = "exit 42"
[[job]]
name = "planter"
cmd = 'mkdir -p "$FLOWRUN_RUN_DIR/jobs/fresh" && echo stale > "$FLOWRUN_RUN_DIR/jobs/fresh/output.log"'
[[job]]
name = "fresh"
needs = ["planter"]
cmd = "echo new"
[[job]]
name = "nosuch"
cmd = ["/nonexistent/simv", "+seed=1"]
"#,
        ),
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    let log = |name: &str| std::fs::read_to_string(run.job(name)["log"].as_str().unwrap()).unwrap();
    assert_eq!(run.status("ok"), "passed", "{run:#?}");
    let job_dir = run.out.join("jobs/ok");
    assert_eq!(
        log("ok"),
        format!("hello from legacy\n{}\n", job_dir.display())
    );
    assert_eq!(
        (run.status("three"), run.reason("three")),
        ("failed", "exit code 3")
    );
    assert_eq!(run.job("three")["exit_code"], 3);
    assert_eq!(run.reason("segv"), "killed by signal 11 (SIGSEGV)");
    assert_eq!(run.status("argv"), "passed");
    assert_eq!(log("argv"), "a b|c\n");
    assert_eq!(
        (run.status("licence"), run.reason("licence")),
        ("failed", "fixture: exit code 42 means the licence was lost")
    );
    assert_eq!(run.job("licence")["exit_code"], 42);
    assert_eq!(run.status("planter"), "passed", "{run:#?}");
    assert_eq!(log("fresh"), "new\n");
    assert_eq!(
        run.reason("nosuch"),
        "rejected by backend legacy: launch failed: fixture cannot run /nonexistent/simv: No such file or directory"
    );
}

#[test]
fn legacy_launch_errors_poll_errors_and_busy_answers() {
    let dir = tempfile::tempdir().unwrap();
    let m = unique_sleep();
    let mut jobs = String::new();
    for i in 0..12 {
        jobs += &format!("[[job]]\nname = \"ok-{i}\"\ncmd = \"true\"\n");
    }
    jobs += &format!(
        "[[job]]\nname = \"nope-1\"\ncmd = \"true\"\n[[job]]\nname = \"badpoll\"\ncmd = \"sleep {m}\"\n"
    );
    let run = run_flow(
        dir.path(),
        &flow(
            r#"options = "refuse=nope poll_error=badpoll busy_every=3""#,
            &jobs,
        ),
        &["-vv"],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    for i in 0..12 {
        assert_eq!(run.status(&format!("ok-{i}")), "passed", "{run:#?}");
    }
    assert_eq!(
        (run.status("nope-1"), run.reason("nope-1")),
        (
            "failed",
            "rejected by backend legacy: launch failed: fixture refuses nope-1"
        )
    );
    assert_eq!(
        (run.status("badpoll"), run.reason("badpoll")),
        ("failed", "poll failed: fixture cannot poll badpoll")
    );
    // The job whose poll failed was killed, not left running unobserved.
    assert_eq!(processes_with(&m), Vec::<u32>::new());
    // Every third launch call answered busy, and those jobs were offered again.
    assert!(stat(&run, "launcher_busy") >= 4, "{}", run.stderr);
    assert_eq!(stat(&run, "launch_errors"), 1);
    assert_eq!(stat(&run, "poll_errors"), 1);
}

#[test]
fn legacy_timeouts_and_interrupts_kill_through_the_launcher() {
    let dir = tempfile::tempdir().unwrap();
    let m = unique_sleep();
    let started = Instant::now();
    let run = run_flow(
        dir.path(),
        &flow(
            "",
            &format!(
                "[[job]]\nname = \"stuck\"\ncmd = \"sleep {m}\"\ntimeout = \"1s\"\n[[job]]\nname = \"quick\"\ncmd = \"true\"\n"
            ),
        ),
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        (run.status("stuck"), run.reason("stuck")),
        ("killed", "timed out after 1s")
    );
    assert_eq!(run.status("quick"), "passed");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(processes_with(&m), Vec::<u32>::new());

    // Ctrl-C: the running job is killed through the launcher, and nothing outlives flowrun.
    let dir = tempfile::tempdir().unwrap();
    let (child, out, m) = start_long_job(dir.path());
    let host = flowrun_tests::run_process(child.id());
    signal(host, libc::SIGINT);
    let run = collect(child.wait_with_output().unwrap(), &out);
    assert_eq!(run.code, 130, "{run:#?}");
    assert_eq!(
        (run.status("long"), run.reason("long")),
        ("killed", "killed by SIGINT while running")
    );
    assert_eq!(processes_with(&m), Vec::<u32>::new());
    assert_eq!(
        workers_of(host),
        Vec::<u32>::new(),
        "a worker outlived flowrun"
    );
}

#[test]
fn legacy_thousand_jobs_finish_with_at_most_100_polls_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    let poll_log = dir.path().join("polls.log");
    // Every job waits on a FIFO, so that all 1,000 run at once however slowly the machine
    // launches them: then each tick has more jobs to poll than it may.
    let gate = dir.path().join("gate.fifo");
    let made = Command::new("mkfifo").arg(&gate).status().unwrap();
    assert!(made.success());
    let (child, out) = spawn_run(
        dir.path(),
        &flow(
            &format!(
                "poll_interval = \"50ms\"\nmax_polls_per_interval = 100\noptions = \"poll_log={}\"",
                poll_log.display()
            ),
            &format!(
                "[[job]]\nname = \"j{{i}}\"\nmatrix = {{ i = {{ range = [1, 1000] }} }}\ncmd = [\"cat\", \"{}\"]\n",
                gate.display()
            ),
        ),
        &["-vv"],
    );
    let waiting = gate.display().to_string();
    wait_until(
        Duration::from_secs(300),
        "1,000 jobs waiting at once",
        || processes_with(&format!("cat\0{waiting}")).len() == 1000,
    );
    // Open and close the FIFO's write end: every reader sees its end and exits.
    drop(std::fs::OpenOptions::new().write(true).open(&gate).unwrap());
    let run = collect(child.wait_with_output().unwrap(), &out);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], 1000);
    // The limit bound the ticks, and no tick went over it.
    assert_eq!(stat(&run, "max_polls_in_a_tick"), 100, "{}", run.stderr);
    // The adapter's count of polls is the launcher's own, and every job was polled.
    let log = std::fs::read_to_string(&poll_log).unwrap();
    assert_eq!(log.lines().count() as u64, stat(&run, "polls"));
    let polled: std::collections::HashSet<&str> =
        log.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    assert_eq!(polled.len(), 1000);
}

#[test]
fn legacy_segfaulting_launcher_loses_its_own_jobs_only_and_the_next_flow_works() {
    let dir = tempfile::tempdir().unwrap();
    let m = unique_sleep();
    let marker = dir.path().join("crashed-once");
    // Polls 1-3 see a, b and c running; poll 5 (b's second) crashes the launcher. d waits for
    // a slot (max_parallel = 3) and then runs on a new worker; the local job runs meanwhile.
    let jobs = format!(
        r#"
[[job]]
name = "a"
cmd = "sleep {m}"
[[job]]
name = "b"
cmd = "sleep {m}"
[[job]]
name = "c"
cmd = "sleep {m}"
[[job]]
name = "d"
cmd = "echo after the crash"
[[job]]
name = "here"
backend = "local"
cmd = "sleep 1; echo local"
"#
    );
    let flow_toml = flow(
        &format!(
            "max_parallel = 3\npoll_interval = \"200ms\"\noptions = \"crash_on_poll=5 crash_marker={}\"",
            marker.display()
        ),
        &jobs,
    );
    let (child, out) = spawn_run(dir.path(), &flow_toml, &[]);
    let host = flowrun_tests::run_process(child.id());
    let run = collect(child.wait_with_output().unwrap(), &out);
    assert_eq!(run.code, 1, "{run:#?}");
    for name in ["a", "b", "c"] {
        assert_eq!(
            (run.status(name), run.reason(name)),
            (
                "failed",
                "lost by backend legacy: legacy launcher crashed: SIGSEGV"
            ),
            "{run:#?}"
        );
    }
    assert_eq!(run.status("d"), "passed", "{run:#?}");
    assert_eq!(run.status("here"), "passed");
    let here = std::fs::read_to_string(run.job("here")["log"].as_str().unwrap()).unwrap();
    assert_eq!(here, "local\n");
    assert!(marker.exists(), "the launcher did crash");
    assert!(run.stderr.contains("legacy launcher crashed: SIGSEGV"));
    // The crashed worker's jobs were killed by its guardian; no worker outlived flowrun.
    assert_eq!(processes_with(&m), Vec::<u32>::new());
    assert_eq!(workers_of(host), Vec::<u32>::new());

    // The next flow, on the same launcher and options (the fixture crashes only once), runs
    // clean past the fifth poll.
    let dir2 = tempfile::tempdir().unwrap();
    let backend = flow_toml[..flow_toml.find("[[job]]").unwrap()].to_string();
    let run = run_flow(
        dir2.path(),
        &format!("{backend}[[job]]\nname = \"j{{i}}\"\nmatrix = {{ i = {{ range = [1, 8] }} }}\ncmd = \"sleep 0.3\"\n"),
        &["-vv"],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], 8);
    assert!(stat(&run, "polls") > 5);
}

#[test]
fn legacy_hung_launcher_is_killed_and_only_its_worker_s_jobs_are_lost() {
    // A poll that never returns: the worker goes silent, is killed after the tick interval,
    // a heartbeat and call_timeout, and its two running jobs are lost; a job waiting on one of
    // them then runs on a new worker.
    let dir = tempfile::tempdir().unwrap();
    let m = unique_sleep();
    let backend = "call_timeout = \"1s\"\noptions = \"hang_poll=stuck hang_launch=wedged\"";
    let started = Instant::now();
    let run = run_flow(
        dir.path(),
        &flow(
            backend,
            &format!(
                r#"
[[job]]
name = "stuck"
cmd = "sleep {m}"
[[job]]
name = "other"
cmd = "sleep {m}"
[[job]]
name = "later"
cmd = "echo fine"
needs = ["other"]
when = "always"
"#
            ),
        ),
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    let hung = "lost by backend legacy: legacy launcher hung: no poll tick ended within 2.02s; its worker was killed";
    assert_eq!((run.status("stuck"), run.reason("stuck")), ("failed", hung));
    assert_eq!(run.reason("other"), hung);
    assert_eq!(run.status("later"), "passed", "{run:#?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(processes_with(&m), Vec::<u32>::new());

    // A launch that never returns: the submit gives up after call_timeout.
    let dir = tempfile::tempdir().unwrap();
    let run = run_flow(
        dir.path(),
        &flow(backend, "[[job]]\nname = \"wedged\"\ncmd = \"true\"\n"),
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.reason("wedged"),
        "rejected by backend legacy: legacy launcher hung: a call did not return within 1s (call_timeout); its worker was killed"
    );
}

/// Runs a flow on a fixture built with `defines`, expecting flowrun to refuse the launcher:
/// exit code 2 and a single line on stderr, which it returns with the library's path.
fn refused_launcher(variant: &'static str, defines: &[&str]) -> (String, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let lib = fixture(variant, defines);
    let run = run_flow(
        dir.path(),
        &flow_with(&lib, "", "[[job]]\nname = \"x\"\ncmd = \"true\"\n"),
        &[],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    let lines: Vec<&str> = run.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    (lines[0].to_string(), lib)
}

#[test]
fn legacy_abi_version_mismatch_is_one_line_and_exit_2() {
    let (line, lib) = refused_launcher("abi7", &["-DFIXTURE_ABI_VERSION=7"]);
    let wanted = format!(
        "{} implements flowrun legacy launcher ABI version 7, but this flowrun supports version 1",
        lib.display()
    );
    assert!(line.contains(&wanted), "{line}");
}

#[test]
fn legacy_missing_symbol_is_named_in_one_line_and_exit_2() {
    let (line, _) = refused_launcher("nokill", &["-DFIXTURE_WITHOUT_KILL"]);
    assert!(
        line.contains("missing symbol flowrun_legacy_kill"),
        "{line}"
    );
}

#[test]
fn legacy_worker_and_its_jobs_die_with_a_killed_flowrun() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _, m) = start_long_job(dir.path());
    // `host` is the run's process, which loads the plugin; `child` is its supervising parent,
    // the `flowrun` a user kills: the run's process dies with it (PR_SET_PDEATHSIG).
    let host = flowrun_tests::run_process(child.id());
    assert_eq!(workers_of(host).len(), 2, "a guardian and a worker");
    signal(child.id(), libc::SIGKILL);
    let _ = child.wait();
    // The worker sees its socket close and kills its jobs through the launcher; the guardian
    // sees the lifeline close and makes sure the worker follows.
    wait_until(
        Duration::from_secs(20),
        "the job and the worker to go",
        || processes_with(&m).is_empty() && workers_of(host).is_empty(),
    );
}

#[test]
fn legacy_plugin_installed_as_its_one_file_runs_its_worker_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let install = flowrun(dir.path())
        .args(["plugins", "install", "--user"])
        .arg(plugin_path("legacy"))
        .output()
        .unwrap();
    assert!(install.status.success(), "{install:?}");
    let installed = dir
        .path()
        .join("xdg-data/flowrun/plugins/libflowrun_plugin_legacy.so");
    assert!(installed.is_file());
    let go = dir.path().join("go");
    let (child, out) = spawn_run(
        dir.path(),
        &flow(
            "",
            &format!(
                "[[job]]\nname = \"waits\"\ncmd = \"while [ ! -e {} ]; do sleep 0.02; done\"\n",
                go.display()
            ),
        ),
        &[],
    );
    let host = flowrun_tests::run_process(child.id());
    wait_until(
        Duration::from_secs(20),
        "a worker running the installed plugin",
        || {
            workers_of(host).iter().any(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/maps"))
                    .is_ok_and(|maps| maps.contains(installed.to_str().unwrap()))
            })
        },
    );
    std::fs::write(&go, "").unwrap();
    let run = collect(child.wait_with_output().unwrap(), &out);
    assert_eq!(run.code, 0, "{run:#?}");
}

/// A flow that checks a launcher on the basics: output and environment, an exit code, and a
/// timeout that kills a job ignoring SIGTERM.
fn check_example_launcher(library: &Path, options: &str) {
    let dir = tempfile::tempdir().unwrap();
    let m = unique_sleep();
    let run = run_flow(
        dir.path(),
        &flow_with(
            library,
            &format!("options = \"{options}\""),
            &format!(
                r#"
[[job]]
name = "hello"
cmd = 'echo "hello from $WHO"'
env = {{ WHO = "{}" }}
[[job]]
name = "argv"
cmd = ["printf", "%s\n", "one arg"]
[[job]]
name = "three"
cmd = "exit 3"
[[job]]
name = "stubborn"
cmd = "trap '' TERM; sleep {m}"
timeout = "1s"
"#,
                library.display()
            ),
        ),
        &[],
    );
    let log = |name: &str| std::fs::read_to_string(run.job(name)["log"].as_str().unwrap()).unwrap();
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("hello"), "passed", "{run:#?}");
    assert_eq!(log("hello"), format!("hello from {}\n", library.display()));
    assert_eq!(log("argv"), "one arg\n");
    assert_eq!(run.reason("three"), "exit code 3");
    assert_eq!(
        (run.status("stubborn"), run.reason("stubborn")),
        ("killed", "timed out after 1s")
    );
    assert_eq!(processes_with(&m), Vec::<u32>::new());
}

fn lines_of(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn legacy_example_launchers_in_c_and_rust_build_and_run_real_flows() {
    let examples = workspace_root().join("examples/legacy-launcher");
    // C: `make` in its directory produces the .so there.
    let make = Command::new("make")
        .arg("-C")
        .arg(examples.join("c"))
        .output()
        .expect("run make");
    assert!(
        make.status.success(),
        "make failed:\n{}",
        String::from_utf8_lossy(&make.stderr)
    );
    check_example_launcher(&examples.join("c/liblauncher.so"), "grace_ms=200");
    // Rust: its own workspace, built into a target directory of its own.
    let target = bin_dir().parent().unwrap().join("legacy-launcher-example");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = Command::new(cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(examples.join("rust/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run cargo");
    assert!(
        build.status.success(),
        "building the Rust example failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    check_example_launcher(&target.join("debug/liblauncher_rs.so"), "");
    // What the README promises: each example is under 150 lines.
    assert!(lines_of(&examples.join("c/launcher.c")) < 150);
    assert!(lines_of(&examples.join("rust/src/lib.rs")) < 150);
}

/// A return code the header does not define fails the job with the code in its reason, and a
/// job the launcher started before answering it is killed: "the launcher gave no reason" named
/// no cause, and the started job ran on unobserved.
#[test]
fn legacy_a_return_code_of_no_meaning_fails_the_job_and_names_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let (launched, polled) = (unique_sleep(), unique_sleep());
    let run = run_flow(
        dir.path(),
        &flow(
            r#"options = "odd_launch=odd-launch odd_poll=odd-poll""#,
            &format!(
                "[[job]]\nname = \"odd-launch\"\ncmd = \"sleep {launched}\"\n\
                 [[job]]\nname = \"odd-poll\"\ncmd = \"sleep {polled}\"\n\
                 [[job]]\nname = \"ok\"\ncmd = \"true\"\n"
            ),
        ),
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("ok"), "passed", "{run:#?}");
    assert_eq!(
        (run.status("odd-launch"), run.reason("odd-launch")),
        (
            "failed",
            "rejected by backend legacy: launch failed: the launcher answered 77, which is none \
             of OK (0), BUSY (1) and ERROR (-1)"
        )
    );
    assert_eq!(
        (run.status("odd-poll"), run.reason("odd-poll")),
        (
            "failed",
            "poll failed: the launcher answered 5, which is neither OK (0) nor ERROR (-1)"
        )
    );
    assert_eq!(processes_with(&launched), Vec::<u32>::new());
    assert_eq!(processes_with(&polled), Vec::<u32>::new());
}
