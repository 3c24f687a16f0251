//! The `local` backend end to end: real flows through `flowrun run`, real processes,
//! results.json. Needs `cargo build --workspace` first (the plugin .so beside the binary).

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use flowrun_tests::{collect, flowrun, privileged, processes_with, run_flow, unique_sleep};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn local_exit_codes_and_signals() {
    let dir = tempdir();
    let run = run_flow(
        dir.path(),
        r#"
[flow]
name = "codes"
[[job]]
name = "ok"
cmd = "echo fine"
[[job]]
name = "three"
cmd = "exit 3"
[[job]]
name = "segv"
cmd = "kill -SEGV $$"
[[job]]
name = "sigkill"
cmd = ["/bin/sh", "-c", "kill -KILL $$"]
"#,
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("ok"), "passed");
    assert_eq!(run.job("ok")["exit_code"], 0);
    assert_eq!(
        (run.status("three"), run.reason("three")),
        ("failed", "exit code 3")
    );
    assert_eq!(run.job("three")["exit_code"], 3);
    assert_eq!(
        (run.status("segv"), run.reason("segv")),
        ("failed", "killed by signal 11 (SIGSEGV)")
    );
    assert_eq!(run.reason("sigkill"), "killed by signal 9 (SIGKILL)");
    let log = std::fs::read_to_string(run.job("ok")["log"].as_str().unwrap()).unwrap();
    assert_eq!(log, "fine\n");
}

#[test]
fn local_timeout_kills_children_grandchildren_and_setsid_escapees() {
    for cgroups in ["auto", "off"] {
        let dir = tempdir();
        let m = unique_sleep();
        let flow = format!(
            r#"
[flow]
name = "timeout"
[backends.local]
kind = "local"
kill_grace = "500ms"
cgroups = "{cgroups}"
[[job]]
name = "stubborn"
timeout = "1s"
cmd = "trap '' TERM; sleep {m} & sh -c 'sleep {m} & sh -c \"sleep {m}\" & wait' & setsid sh -c 'sleep {m} & wait' & wait"
"#
        );
        let started = Instant::now();
        let run = run_flow(dir.path(), &flow, &[]);
        assert_eq!(run.code, 1, "{run:#?}");
        assert_eq!(run.status("stubborn"), "killed", "{run:#?}");
        assert_eq!(run.reason("stubborn"), "timed out after 1s");
        assert!(started.elapsed() < Duration::from_secs(15));
        assert_eq!(
            processes_with(&m),
            Vec::<u32>::new(),
            "cgroups = {cgroups}: processes survived the timeout"
        );
    }
}

#[test]
fn local_missing_executable_and_cwd_fail_with_reasons() {
    let dir = tempdir();
    let run = run_flow(
        dir.path(),
        r#"
[flow]
name = "missing"
[[job]]
name = "nosimv"
cmd = ["simv", "+UVM_TESTNAME=smoke"]
[[job]]
name = "shellsimv"
cmd = "echo compiling; simv +UVM_TESTNAME=smoke"
[[job]]
name = "nocwd"
cmd = "true"
cwd = "/nonexistent/flowrun-local-test"
"#,
        &[],
    );
    assert_eq!(run.code, 1);
    assert_eq!(
        (run.status("nosimv"), run.reason("nosimv")),
        ("failed", "command not found: simv")
    );
    assert_eq!(run.reason("shellsimv"), "command not found: simv");
    assert_eq!(run.job("shellsimv")["exit_code"], 127);
    assert_eq!(
        run.reason("nocwd"),
        "working directory does not exist: /nonexistent/flowrun-local-test"
    );
}

#[test]
fn local_environment_and_cmd_sh_reproduce_the_job() {
    let dir = tempdir();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let flow = format!(
        r#"
[flow]
name = "envflow"
[[job]]
name = "show"
cwd = "{work}"
env = {{ GREETING = "hello 'there'", EMPTY = "" }}
cmd = "echo \"$FLOWRUN_JOB_NAME $FLOWRUN_ATTEMPT [$GREETING] [$EMPTY] ${{{{MAKEFLAGS-nomake}}}}\"; echo \"$FLOWRUN_JOB_DIR\" \"$FLOWRUN_RUN_DIR\"; pwd"
"#,
        work = work.display()
    );
    std::fs::write(dir.path().join("flow.toml"), flow).unwrap();
    let out = dir.path().join("out");
    let output = flowrun(dir.path())
        .env("MAKEFLAGS", "-j4 --jobserver-auth=3,4")
        .env("MAKELEVEL", "2")
        .args(["run", "flow.toml", "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let run = collect(output, &out);
    assert_eq!(run.status("show"), "passed", "{run:#?}");
    let log_path = run.job("show")["log"].as_str().unwrap().to_string();
    let job_dir = Path::new(&log_path).parent().unwrap();
    let logged = std::fs::read_to_string(&log_path).unwrap();
    let out_dir = std::fs::canonicalize(&out).unwrap_or(out.clone());
    let first = logged.lines().next().unwrap();
    assert_eq!(first, "show 1 [hello 'there'] [] nomake");
    let second = logged.lines().nth(1).unwrap();
    assert!(
        second.starts_with(&job_dir.display().to_string()),
        "{second}"
    );
    assert!(
        second.ends_with(&out_dir.display().to_string())
            || second.ends_with(&out.display().to_string()),
        "{second}"
    );
    assert_eq!(logged.lines().nth(2).unwrap(), work.display().to_string());

    // cmd.sh by hand, from elsewhere and with a make jobserver around: the same output.
    let by_hand = Command::new(job_dir.join("cmd.sh"))
        .current_dir("/")
        .env("MAKEFLAGS", "-j9")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(by_hand.status.success(), "{by_hand:?}");
    assert_eq!(String::from_utf8_lossy(&by_hand.stdout), logged);
}

#[test]
fn local_split_output_logs_are_both_scanned() {
    let dir = tempdir();
    let run = run_flow(
        dir.path(),
        r#"
[flow]
name = "split"
[backends.local]
kind = "local"
split_output = true
[[job]]
name = "errs"
cmd = "echo starting; echo line2 >&2; echo 'UVM_ERROR in stderr' >&2"
fail_patterns = ["^UVM_ERROR"]
[[job]]
name = "clean"
cmd = "echo TEST PASSED; echo noise >&2"
pass_patterns = ["^TEST PASSED$"]
"#,
        &[],
    );
    assert_eq!(run.status("clean"), "passed", "{run:#?}");
    let clean_dir = run.out.join("jobs").join("clean");
    assert_eq!(
        std::fs::read_to_string(clean_dir.join("stdout.log")).unwrap(),
        "TEST PASSED\n"
    );
    assert_eq!(
        std::fs::read_to_string(clean_dir.join("stderr.log")).unwrap(),
        "noise\n"
    );
    assert_eq!(run.status("errs"), "failed");
    assert_eq!(
        run.reason("errs"),
        "fail pattern matched at line 2: UVM_ERROR in stderr"
    );
    assert_eq!(run.job("errs")["fail_line"], 2);
}

#[test]
fn local_pass_and_fail_patterns_report_line_and_text() {
    let dir = tempdir();
    let run = run_flow(
        dir.path(),
        r#"
[flow]
name = "patterns"
[[job]]
name = "uvm"
cmd = "i=1; while [ $i -lt 120 ]; do echo \"UVM_INFO step $i\"; i=$((i+1)); done; echo 'UVM_ERROR @ 10ns: scoreboard mismatch'; echo after; echo TEST PASSED"
pass_patterns = ["^TEST PASSED$"]
fail_patterns = ["^UVM_(ERROR|FATAL)"]
[[job]]
name = "nopass"
cmd = "echo TEST FAILED"
pass_patterns = ["^TEST PASSED$"]
[[job]]
name = "good"
cmd = "echo UVM_INFO fine; echo TEST PASSED"
pass_patterns = ["^TEST PASSED$"]
fail_patterns = ["^UVM_(ERROR|FATAL)"]
"#,
        &[],
    );
    assert_eq!(run.status("uvm"), "failed", "{run:#?}");
    assert_eq!(
        run.reason("uvm"),
        "fail pattern matched at line 120: UVM_ERROR @ 10ns: scoreboard mismatch"
    );
    assert_eq!(run.job("uvm")["fail_line"], 120);
    assert_eq!(
        run.job("uvm")["fail_text"],
        "UVM_ERROR @ 10ns: scoreboard mismatch"
    );
    assert_eq!(
        run.reason("nopass"),
        "pass pattern never matched: ^TEST PASSED$"
    );
    assert_eq!(run.status("good"), "passed");
}

/// Peak RSS (VmHWM, kB) of a running process, read while it runs.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn local_two_gigabyte_log_is_scanned_in_bounded_memory() {
    let dir = tempdir();
    // 2 GiB of 4 KiB lines written by `yes | head -c` (fast), then the failing line.
    let flow = r#"
[flow]
name = "biglog"
[[job]]
name = "big"
cmd = "yes \"$(head -c 4095 /dev/zero | tr '\\0' x)\" | head -c 2147483648; echo 'UVM_FATAL out of memory at the very end'"
fail_patterns = ["^UVM_(ERROR|FATAL)"]
"#;
    std::fs::write(dir.path().join("flow.toml"), flow).unwrap();
    let out = dir.path().join("out");
    let mut child = flowrun(dir.path())
        .args(["run", "flow.toml", "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = flowrun_tests::run_process(child.id());
    let mut peak_kb = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the 2 GiB run took more than 5 minutes"
        );
        if let Some(kb) = vm_hwm_kb(pid) {
            peak_kb = peak_kb.max(kb);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let run = collect(output, &out);
    assert_eq!(run.status("big"), "failed", "{run:#?}");
    assert_eq!(run.job("big")["fail_line"], 524_289);
    assert_eq!(
        run.reason("big"),
        "fail pattern matched at line 524289: UVM_FATAL out of memory at the very end"
    );
    assert!(
        peak_kb > 0 && peak_kb < 100 * 1024,
        "flowrun's peak RSS was {peak_kb} kB"
    );
    let log = run.job("big")["log"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        2_147_483_648 + "UVM_FATAL out of memory at the very end\n".len() as u64
    );
    let _ = std::fs::remove_file(log);
}

#[test]
fn local_sigterm_to_flowrun_leaves_nothing_running() {
    let dir = tempdir();
    let m = unique_sleep();
    let flow = format!(
        r#"
[flow]
name = "interrupted"
[backends.local]
kind = "local"
kill_grace = "300ms"
[[job]]
name = "long"
cmd = "trap '' TERM; sleep {m} & setsid sh -c 'sleep {m}' & wait"
"#
    );
    std::fs::write(dir.path().join("flow.toml"), flow).unwrap();
    let out = dir.path().join("out");
    let child = flowrun(dir.path())
        .args(["run", "flow.toml", "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while processes_with(&m).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the job never started its sleepers"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sigterm(child.id());
    let output = child.wait_with_output().unwrap();
    let run = collect(output, &out);
    assert_eq!(run.code, 143, "{run:#?}");
    assert_eq!(run.status("long"), "killed");
    assert_eq!(
        processes_with(&m),
        Vec::<u32>::new(),
        "processes outlived flowrun"
    );
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn local_interactive_job_reads_the_terminal_while_others_run() {
    let dir = tempdir();
    let answer = dir.path().join("answer.txt");
    let bg_done = dir.path().join("bg.txt");
    let flow = format!(
        r#"
[flow]
name = "inter"
[[job]]
name = "ask"
interactive = true
cmd = "printf 'name? '; read line; echo \"got:$line\" > {answer}; echo \"tty:$(tty)\" >> {answer}"
[[job]]
name = "background"
cmd = "sleep 0.2; echo bg > {bg}"
"#,
        answer = answer.display(),
        bg = bg_done.display()
    );
    std::fs::write(dir.path().join("flow.toml"), flow).unwrap();
    let out = dir.path().join("out");
    let command_line = format!(
        "{} run flow.toml --out {}",
        flowrun_tests::flowrun_path().display(),
        out.display()
    );
    // script(1) runs flowrun on a new pseudo-terminal and copies our stdin to it.
    let mut script = Command::new("script")
        .args(["-qfec", &command_line, "/dev/null"])
        .current_dir(dir.path())
        .env("XDG_DATA_HOME", dir.path().join("xdg-data"))
        .env("FLOWRUN_SITE_PLUGIN_DIR", dir.path().join("site-plugins"))
        .env_remove("FLOWRUN_PLUGIN_PATH")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Answer once the prompt is up: the job holds the terminal by then.
    let deadline = Instant::now() + Duration::from_secs(15);
    let prompt_seen = || {
        std::fs::read_to_string(out.join("jobs/ask/cmd.sh")).is_ok()
            && processes_with("read line").iter().any(|_| true)
    };
    while !prompt_seen() {
        assert!(
            Instant::now() < deadline,
            "the interactive job never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    script
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"flowrun-user\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while script.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "flowrun did not finish after the answer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = script.wait_with_output().unwrap();
    let run = collect(output, &out);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.status("ask"), "passed");
    assert_eq!(run.status("background"), "passed");
    assert_eq!(std::fs::read_to_string(&bg_done).unwrap(), "bg\n");
    let got = std::fs::read_to_string(&answer).unwrap();
    assert!(got.starts_with("got:flowrun-user\ntty:/dev/pts/"), "{got}");
    assert!(
        run.stdout.contains("name? "),
        "the prompt went to the terminal: {}",
        run.stdout
    );
}

#[test]
fn local_interactive_job_without_a_terminal_inherits_the_streams() {
    let dir = tempdir();
    let run = run_flow(
        dir.path(),
        r#"
[flow]
name = "noterm"
[[job]]
name = "talk"
interactive = true
cmd = "echo to-the-user; read x || echo no-input"
"#,
        &[],
    );
    assert_eq!(run.status("talk"), "passed", "{run:#?}");
    assert!(
        run.stdout.contains("to-the-user\nno-input"),
        "{}",
        run.stdout
    );
}

/// The cgroup modes a test runs in: `off` always, `auto` (which must then really use
/// cgroups: the tests run as root in CI) only when privileged tests are on.
fn cgroup_modes(test: &str) -> Vec<&'static str> {
    let mut modes = vec!["off"];
    if privileged(&format!("{test} with cgroups (root, a writable cgroup2)")) {
        modes.push("auto");
    }
    modes
}

/// The statuses of every job of a run, by name.
fn statuses(run: &flowrun_tests::Run) -> Vec<(String, String, String)> {
    run.results["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .map(|j| {
                    (
                        j["name"].as_str().unwrap_or("").to_string(),
                        j["status"].as_str().unwrap_or("").to_string(),
                        j["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// F1: after a job's cgroup got `cgroup.kill` (processes it left behind, a timeout of a job
/// that ignores SIGTERM, `kill_grace = "0s"`), no later job placed in a cgroup is killed at
/// birth: every row of the F1 table, at max_parallel 1, 2 and 8.
#[test]
fn local_a_killed_cgroup_never_kills_a_later_job() {
    if !privileged("cgroup poisoning (F1): root and a writable cgroup2") {
        return;
    }
    let m = unique_sleep();
    // (first job's command, its timeout, kill_grace, how it must end)
    let rows: [(String, Option<&str>, &str, &str); 5] = [
        (format!("sleep {m} & exit 0"), None, "300ms", "passed"),
        (format!("(sleep {m} &); exit 0"), None, "300ms", "passed"),
        (
            format!("setsid sleep {m} & sleep 0.1; exit 0"),
            None,
            "300ms",
            "passed",
        ),
        (
            format!("trap '' TERM; sleep {m}"),
            Some("1s"),
            "300ms",
            "killed",
        ),
        (format!("sleep {m}"), Some("1s"), "0s", "killed"),
    ];
    for (cmd, timeout, grace, first_ends) in &rows {
        for p in [1, 2, 8] {
            let dir = tempdir();
            let timeout = timeout
                .map(|t| format!("timeout = \"{t}\"\n"))
                .unwrap_or_default();
            let flow = format!(
                r#"
[flow]
name = "poison"
max_parallel = {p}
[backends.local]
kind = "local"
max_parallel = {p}
kill_grace = "{grace}"
[[job]]
name = "first"
cmd = "{cmd}"
{timeout}
[[job]]
name = "n-{{i}}"
matrix = {{ i = {{ range = [0, 19] }} }}
needs = ["first"]
when = "always"
cmd = "sleep 0.05; echo ok"
"#
            );
            let run = run_flow(dir.path(), &flow, &[]);
            let all = statuses(&run);
            let innocents_not_passed: Vec<_> = all
                .iter()
                .filter(|(n, s, _)| n.starts_with("n-") && s != "passed")
                .collect();
            assert_eq!(all.len(), 21, "{cmd} at P={p}: {run:#?}");
            assert!(
                innocents_not_passed.is_empty(),
                "{cmd} (kill_grace {grace}) at P={p}: {} of 20 innocent jobs did not pass: {innocents_not_passed:?}",
                innocents_not_passed.len()
            );
            assert_eq!(run.status("first"), *first_ends, "{cmd} at P={p}: {run:#?}");
            assert_eq!(processes_with(&m), Vec::<u32>::new(), "{cmd} at P={p}");
        }
    }
}

/// The pid of the watchdog that flowrun `pid` started (its child named flowrun-watchdog).
fn watchdogs_of(pid: u32) -> Vec<u32> {
    // The kernel cuts a command name to 15 bytes.
    flowrun_tests::children_named(pid, "flowrun-watchdo")
}

fn sigkill(pid: u32) {
    let status = Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts `flowrun run` on `flow` in `dir` in the background, and waits until at least `n`
/// processes carry `marker`.
fn start_run(dir: &Path, flow: &str, marker: &str, n: usize) -> std::process::Child {
    start_run_in(dir, flow, marker, n, None)
}

/// [`start_run`], the run placed in `cgroup` when one is given.
fn start_run_in(
    dir: &Path,
    flow: &str,
    marker: &str,
    n: usize,
    cgroup: Option<&PrivateCgroup>,
) -> std::process::Child {
    std::fs::write(dir.join("flow.toml"), flow).unwrap();
    let mut command = flowrun(dir);
    command
        .args(["run", "flow.toml", "-q", "--out"])
        .arg(dir.join("out"))
        .current_dir(dir);
    if let Some(cgroup) = cgroup {
        command = cgroup.wrap(&command);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_with(marker).len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} processes started",
            processes_with(marker).len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A cgroup of the test's own, beside the `flowrun-<pid>-<n>` roots that flowruns create in the
/// test's cgroup. Every flowrun's local backend kills what dead flowruns left in the roots
/// beside its own, so a dead run's leftovers in the test's cgroup are swept by whichever of
/// the tests running in parallel starts a flowrun next. Runs started in this cgroup see only
/// each other's roots: what happens to a dead run's leftovers is decided by this test's runs.
struct PrivateCgroup {
    dir: std::path::PathBuf,
}

impl PrivateCgroup {
    fn new() -> PrivateCgroup {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo
            .lines()
            .filter_map(|l| l.split_once(" - "))
            .find(|(_, right)| right.split_ascii_whitespace().next() == Some("cgroup2"))
            .and_then(|(left, _)| left.split_ascii_whitespace().nth(4))
            .expect("a cgroup2 hierarchy is mounted")
            .replace("\\040", " ");
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_string))
            .expect("the test runs in a cgroup2 group");
        let dir = Path::new(&mount)
            .join(own.trim_start_matches('/'))
            .join(format!("private-test-{}", unique_sleep().replace('.', "-")));
        std::fs::create_dir(&dir).unwrap();
        PrivateCgroup { dir }
    }

    /// `command` (program, arguments, environment and directory) started inside this cgroup:
    /// a shell moves itself in, then becomes the command.
    fn wrap(&self, command: &Command) -> Command {
        let mut sh = Command::new("sh");
        sh.args(["-c", r#"echo $$ > "$0" && exec "$@""#])
            .arg(self.dir.join("cgroup.procs"))
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => sh.env(key, value),
                None => sh.env_remove(key),
            };
        }
        if let Some(cwd) = command.get_current_dir() {
            sh.current_dir(cwd);
        }
        sh
    }
}

impl Drop for PrivateCgroup {
    /// Removes what the runs left (empty once their processes are gone), then the cgroup.
    fn drop(&mut self) {
        fn remove(dir: &Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        remove(&e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        remove(&self.dir);
    }
}

/// Polls for up to `limit` until no process carries `marker`; returns those left.
fn gone_within(marker: &str, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left = processes_with(marker);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Item 9 (F5): `kill -9` of flowrun with 20 running jobs whose grandchildren left their
/// session (`setsid`): within 5 s nothing of the run is left, the watchdog included.
#[test]
fn local_sigkill_of_flowrun_leaves_nothing_of_the_run() {
    for cgroups in cgroup_modes("SIGKILL of flowrun") {
        let dir = tempdir();
        let m = unique_sleep();
        let flow = format!(
            r#"
[flow]
name = "killed"
max_parallel = 20
[backends.local]
kind = "local"
max_parallel = 20
cgroups = "{cgroups}"
[[job]]
name = "j-{{i}}"
matrix = {{ i = {{ range = [1, 20] }} }}
cmd = "setsid sh -c 'sleep {m} & wait' & sleep {m}"
"#
        );
        // Per job: its sleep, the setsid'd shell (whose command line names the marker) and
        // that shell's sleep.
        let mut child = start_run(dir.path(), &flow, &m, 60);
        // `child` is the supervising parent (the pid a user kills); the worker holds the
        // plugins and must die with it (PR_SET_PDEATHSIG), taking the jobs along.
        let worker = flowrun_tests::run_process(child.id());
        let watchdogs = watchdogs_of(worker);
        sigkill(child.id());
        let _ = child.wait();
        let left = gone_within(&m, Duration::from_secs(5));
        assert_eq!(
            left,
            Vec::<u32>::new(),
            "cgroups = {cgroups}: processes of the run outlived flowrun's SIGKILL by 5 s"
        );
        assert!(
            wait_until(Duration::from_secs(5), || gone_or_zombie(worker)),
            "cgroups = {cgroups}: the run's worker process outlived its killed parent"
        );
        assert_eq!(watchdogs.len(), 1, "cgroups = {cgroups}: {watchdogs:?}");
        assert!(
            wait_until(Duration::from_secs(5), || !Path::new(&format!(
                "/proc/{}",
                watchdogs[0]
            ))
            .exists()),
            "cgroups = {cgroups}: the watchdog did not exit"
        );
    }
}

/// Whether process `pid` has exited (a zombie waits for a reaper that is not ours).
fn gone_or_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')').is_some_and(|(_, r)| r.starts_with(" Z"))
    })
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Item 9: when flowrun and its watchdog both died (SIGKILL of both), the next flowrun on the
/// machine kills the dead run's leftovers (found by its stale cgroup, whose lock is free and
/// whose owner is gone), and leaves a live run's jobs alone. The three runs share a private
/// cgroup, so no other test's flowrun sweeps the dead run before the later one.
#[test]
fn local_a_later_flowrun_kills_a_dead_runs_leftovers_and_spares_live_runs() {
    if !privileged("stale cgroups of a dead flowrun: root and a writable cgroup2") {
        return;
    }
    let cgroup = PrivateCgroup::new();
    let flow = |marker: &str| {
        format!(
            r#"
[flow]
name = "long"
[backends.local]
kind = "local"
max_parallel = 4
[[job]]
name = "j-{{i}}"
matrix = {{ i = {{ range = [1, 4] }} }}
cmd = "setsid sleep {marker} & sleep {marker}"
"#
        )
    };
    // The live run starts first: a flowrun sweeps the roots beside its own when it starts.
    let live_dir = tempdir();
    let live = unique_sleep();
    let mut live_run = start_run_in(live_dir.path(), &flow(&live), &live, 8, Some(&cgroup));
    let live_jobs = processes_with(&live);

    let dead_dir = tempdir();
    let dead = unique_sleep();
    let mut victim = start_run_in(dead_dir.path(), &flow(&dead), &dead, 8, Some(&cgroup));
    let worker = flowrun_tests::run_process(victim.id());
    let watchdogs = watchdogs_of(worker);
    assert_eq!(watchdogs.len(), 1);
    sigkill(watchdogs[0]);
    assert!(wait_until(Duration::from_secs(5), || !Path::new(&format!(
        "/proc/{}",
        watchdogs[0]
    ))
    .exists()
        || std::fs::read_to_string(format!(
            "/proc/{}/stat",
            watchdogs[0]
        ))
        .is_ok_and(|s| s.contains(") Z "))));
    sigkill(victim.id());
    let _ = victim.wait();
    // The run's process (which holds the backend's lock) dies with its supervising parent,
    // a moment later: the run is dead once it is gone.
    assert!(
        wait_until(Duration::from_secs(5), || !Path::new(&format!(
            "/proc/{worker}"
        ))
        .exists()
            || std::fs::read_to_string(format!("/proc/{worker}/stat"))
                .is_ok_and(|s| s.contains(") Z "))),
        "the run's process {worker} outlived its parent"
    );
    // Nothing was left to kill them: they run on.
    let leftovers = processes_with(&dead);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!leftovers.is_empty());
    assert_eq!(
        processes_with(&dead),
        leftovers,
        "the leftovers of the dead run"
    );

    let later = tempdir();
    std::fs::write(
        later.path().join("flow.toml"),
        "[flow]\nname = \"later\"\n[[job]]\nname = \"t\"\ncmd = \"true\"\n",
    )
    .unwrap();
    let mut command = flowrun(later.path());
    command
        .args(["run", "flow.toml", "--out"])
        .arg(later.path().join("out"))
        .current_dir(later.path());
    let run = collect(
        cgroup.wrap(&command).output().unwrap(),
        &later.path().join("out"),
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        gone_within(&dead, Duration::from_secs(5)),
        Vec::<u32>::new(),
        "the dead run's leftovers survived a later flowrun"
    );
    assert!(
        run.stderr.contains("which died without ending its jobs"),
        "the later flowrun says what it killed: {run:#?}"
    );
    assert!(
        live_jobs
            .iter()
            .all(|p| Path::new(&format!("/proc/{p}")).exists()),
        "a live run's jobs were touched"
    );
    sigterm(live_run.id());
    let _ = live_run.wait();
    assert_eq!(
        gone_within(&live, Duration::from_secs(5)),
        Vec::<u32>::new()
    );
}

/// Item 14 (F13): 2,000 jobs at once under a hard limit of 1,024 descriptors: running out of
/// descriptors makes jobs wait (BUSY), never fail; and it is said once, not per job.
#[test]
fn local_descriptor_shortage_makes_jobs_wait_never_fail() {
    for cgroups in cgroup_modes("2,000 jobs under ulimit -n 1024") {
        // Long enough for the run to want more than 1,024 descriptors at once even from a
        // slow (debug, loaded) host: one per job without cgroups, about four with.
        let secs = if cgroups == "off" { 10 } else { 3 };
        let dir = tempdir();
        let flow = format!(
            r#"
[flow]
name = "many"
max_parallel = 2000
[backends.local]
kind = "local"
max_parallel = 2000
cgroups = "{cgroups}"
[[job]]
name = "s-{{i}}"
matrix = {{ i = {{ range = [1, 2000] }} }}
cmd = ["sleep", "{secs}"]
"#
        );
        std::fs::write(dir.path().join("flow.toml"), flow).unwrap();
        let out = dir.path().join("out");
        // `ulimit -n` in the shell sets the soft and the hard limit.
        let output = Command::new("sh")
            .args([
                "-c",
                "ulimit -n 1024 && exec \"$FLOWRUN\" run flow.toml -q --out \"$OUT\"",
            ])
            .env("FLOWRUN", flowrun_tests::flowrun_path())
            .env("OUT", &out)
            .env("XDG_DATA_HOME", dir.path().join("xdg-data"))
            .env("FLOWRUN_SITE_PLUGIN_DIR", dir.path().join("site-plugins"))
            .env_remove("FLOWRUN_PLUGIN_PATH")
            .env("NO_COLOR", "1")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let run = collect(output, &out);
        let all = statuses(&run);
        let not_passed: Vec<_> = all.iter().filter(|(_, s, _)| s != "passed").collect();
        assert_eq!(all.len(), 2000, "cgroups = {cgroups}: {}", run.stderr);
        assert!(
            not_passed.is_empty(),
            "cgroups = {cgroups}: {} of 2000 jobs did not pass, e.g. {:?}",
            not_passed.len(),
            not_passed.first()
        );
        assert_eq!(run.code, 0, "cgroups = {cgroups}: {}", run.stderr);
        let warnings = run.stderr.lines().filter(|l| l.contains("WARN")).count();
        assert!(
            warnings <= 2,
            "cgroups = {cgroups}: {warnings} warning lines:\n{}",
            run.stderr
        );
    }
}

/// The peak memory of a job is the job's, never flowrun's: a job starts as a copy of flowrun
/// and Linux's `exec` keeps the old memory's high-water mark in `ru_maxrss`, so `true` showed
/// flowrun's 18 MiB. A tiny job's figure is small or unknown; a 200 MiB job's is still there.
#[test]
fn local_memory_figures_are_the_jobs_not_flowruns() {
    let dir = tempdir();
    let run = run_flow(
        dir.path(),
        r#"
[flow]
name = "memory"
[[job]]
name = "tiny-{i}"
matrix = { i = { range = [1, 20] } }
cmd = "true"
[[job]]
name = "big"
cmd = "dd if=/dev/zero of=/dev/null bs=200M count=1 2>/dev/null"
"#,
        &[],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    for i in 1..=20 {
        let v = &run.job(&format!("tiny-{i}"))["max_rss_mb"];
        assert!(
            v.is_null() || v.as_f64().is_some_and(|mib| mib < 10.0),
            "tiny-{i}: `true` peaked at {v} MiB?\n{run:#?}"
        );
    }
    let big = run.job("big")["max_rss_mb"].as_f64();
    assert!(
        big.is_some_and(|mib| mib >= 200.0),
        "big: {big:?} MiB for a 200 MiB buffer"
    );
    let summary = run.stdout.lines().chain(run.stderr.lines());
    let memory = summary.filter(|l| l.starts_with("most memory:"));
    for line in memory {
        assert!(line.starts_with("most memory: big "), "{line}");
    }
}

/// A job that exits 127 (a shell's "command not found") after leaving a FIFO where its log
/// was gets its verdict: the backend reads the log's last line for the missing command, and
/// opening the FIFO waited for a writer forever, with the backend locked: the run never
/// ended, no signal stopped it, and no results.json was written.
#[test]
fn local_a_fifo_left_as_the_log_of_a_127_exit_does_not_hang_the_run() {
    let dir = tempdir();
    let child = flowrun_tests::start_flow(
        dir.path(),
        r#"
[flow]
name = "fifo"
[[job]]
name = "evil"
cmd = "rm -f \"$FLOWRUN_JOB_DIR/output.log\"; mkfifo \"$FLOWRUN_JOB_DIR/output.log\"; exit 127"
"#,
        &[],
    );
    let fifo = dir.path().join("out/jobs/evil/output.log");
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut hung = false;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline && !hung {
            // Release the reader, so that nothing is left hanging, and fail below.
            hung = true;
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = collect(child.wait_with_output().unwrap(), &dir.path().join("out"));
    assert!(!hung, "the run hung on the FIFO: {run:#?}");
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("evil"), "failed");
    assert_eq!(run.job("evil")["exit_code"], 127, "{run:#?}");
}
