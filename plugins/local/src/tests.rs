//! Unit tests on real processes, through the plugin-api test kit (the same ABI objects the
//! host uses).

use std::{
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use flowrun_plugin_sdk::{CapabilityFlags, EndKind, Event, JobEventKind, SubmitAnswerKind};
use flowrun_plugin_testkit::{check_backend_contract, FakeHost, TestBackend, TestJob};

use crate::{cmdsh::shell_quote, create};

const WAIT: Duration = Duration::from_secs(20);

fn host() -> (tempfile::TempDir, FakeHost) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = FakeHost::new(&dir.path().join("run"));
    (dir, host)
}

fn backend(host: &FakeHost, config: &str) -> TestBackend {
    host.backend(create, config)
        .expect("create the local backend")
}

/// Whether a test that needs root or a writable cgroup2 may run: only with
/// `FLOWRUN_PRIVILEGED_TESTS=1` (set by `tests/run-all`, so CI always runs them). Without it
/// the test says so on stderr and returns; with it, a missing requirement fails the test.
fn privileged(what: &str) -> bool {
    if std::env::var("FLOWRUN_PRIVILEGED_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("SKIPPED (needs FLOWRUN_PRIVILEGED_TESTS=1): {what}");
    false
}

/// A backend that must contain its jobs in cgroups (privileged tests only).
fn cgroup_backend(host: &FakeHost, config: &str) -> TestBackend {
    let b = backend(host, config);
    assert!(
        b.stats().contains("cgroups = true"),
        "FLOWRUN_PRIVILEGED_TESTS=1 but no writable cgroup2 hierarchy: {}",
        b.stats()
    );
    b
}

/// [`cgroup_backend`] when `cgroups`, else a plain [`backend`].
fn backend_maybe_in_cgroups(host: &FakeHost, config: &str, cgroups: bool) -> TestBackend {
    if cgroups {
        cgroup_backend(host, config)
    } else {
        backend(host, config)
    }
}

/// Waits for our child `pid` and returns its exit code (-1 for a signal).
fn wait_exit(pid: libc::pid_t) -> i32 {
    match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
        other => panic!("child {pid}: {other:?}"),
    }
}

/// Submits `spec` and returns its end event.
fn run(host: &mut FakeHost, b: &TestBackend, spec: TestJob) -> Event {
    let id = spec.id();
    let answers = host.submit_all(b, vec![spec], WAIT);
    assert_eq!(answers[0].kind(), SubmitAnswerKind::ACCEPTED, "{answers:?}");
    host.wait_end(id, WAIT).expect("the job ends")
}

fn argv_job(host: &mut FakeHost, name: &str, argv: &[&str]) -> TestJob {
    host.argv_job(name, argv)
}

fn log_of(spec_dir: &Path) -> String {
    std::fs::read_to_string(spec_dir.join("output.log")).unwrap_or_default()
}

/// A string unique to one test, to find its processes in /proc: used as a `sleep` duration
/// (e.g. `sleep 3000.0004217`), so it appears in the command line of every sleeper.
fn unique_sleep() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "3000.{:04}{:03}",
        std::process::id() % 10_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Pids whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        // Zombies have an empty cmdline and do not count.
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(marker) {
                found.push(pid);
            }
        }
    }
    found
}

fn wait_for_processes(marker: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    while processes_with(marker).len() < n {
        assert!(
            Instant::now() < deadline,
            "the job's {n} sleepers never all started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn keeps_the_backend_contract() {
    check_backend_contract(create, "").unwrap();
}

#[test]
fn keeps_the_backend_contract_without_cgroups() {
    check_backend_contract(create, "cgroups = \"off\"").unwrap();
}

#[test]
fn keeps_the_backend_contract_with_the_std_spawn_path() {
    check_backend_contract(create, "spawn = \"std\"").unwrap();
    check_backend_contract(create, "spawn = \"std\"\ncgroups = \"off\"").unwrap();
}

#[test]
fn declares_interactive_and_cpu_count() {
    let (_d, host) = host();
    let b = backend(&host, "");
    let caps = b.capabilities();
    assert!(caps.flags.contains(CapabilityFlags::INTERACTIVE));
    assert_eq!(
        caps.default_max_parallel as usize,
        std::thread::available_parallelism().unwrap().get()
    );
    b.shutdown();
}

#[test]
fn reports_exit_codes_and_signals() {
    let (_d, mut host) = host();
    let b = backend(&host, "");
    let spec = host.shell_job("exit7", "echo hello; exit 7");
    let dir = spec.job().job_dir().to_string();
    let end = run(&mut host, &b, spec);
    assert_eq!(
        (end.kind(), end.end(), end.exit_code()),
        (JobEventKind::FINISHED, EndKind::EXITED, Some(7))
    );
    assert_eq!(log_of(Path::new(&dir)), "hello\n");

    let spec = host.shell_job("segv", "kill -SEGV $$");
    let end = run(&mut host, &b, spec);
    assert_eq!(
        (end.end(), end.signal()),
        (EndKind::SIGNALED, Some(libc::SIGSEGV))
    );

    let spec = argv_job(&mut host, "sigkill", &["/bin/sh", "-c", "kill -KILL $$"]);
    let end = run(&mut host, &b, spec);
    assert_eq!(
        (end.end(), end.signal()),
        (EndKind::SIGNALED, Some(libc::SIGKILL))
    );
    b.shutdown();
}

/// Brief contract 3: a job's log is created or truncated when the job starts (a log left by
/// an earlier run or attempt never judges this one), and stdout and stderr share it in order.
#[test]
fn logs_are_fresh_and_keep_stdout_and_stderr_in_order() {
    for config in [
        "",
        "spawn = \"std\"",
        "split_output = true",
        "split_output = true\nspawn = \"std\"",
    ] {
        let (_d, mut host) = host();
        let b = backend(&host, config);
        let spec = host.shell_job("both", "echo out; echo err >&2; echo out2");
        let dir = Path::new(spec.job().job_dir()).to_path_buf();
        for file in ["output.log", "stdout.log", "stderr.log"] {
            std::fs::write(dir.join(file), "UVM_ERROR from an earlier run\n").unwrap();
        }
        let end = run(&mut host, &b, spec);
        assert_eq!(end.exit_code(), Some(0), "{config}: {end:?}");
        if config.contains("split_output") {
            assert_eq!(
                std::fs::read_to_string(dir.join("stdout.log")).unwrap(),
                "out\nout2\n",
                "{config}"
            );
            assert_eq!(
                std::fs::read_to_string(dir.join("stderr.log")).unwrap(),
                "err\n",
                "{config}"
            );
        } else {
            assert_eq!(log_of(&dir), "out\nerr\nout2\n", "{config}");
        }
        b.shutdown();
    }
}

#[test]
fn split_output_writes_two_logs_and_reports_them() {
    let (_d, mut host) = host();
    let b = backend(&host, "split_output = true");
    let spec = host.shell_job("split", "echo out; echo err >&2");
    let dir = Path::new(spec.job().job_dir()).to_path_buf();
    let end = run(&mut host, &b, spec);
    assert_eq!(end.exit_code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(dir.join("stdout.log")).unwrap(),
        "out\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("stderr.log")).unwrap(),
        "err\n"
    );
    assert!(!dir.join("output.log").exists());
    let logs: Vec<&str> = end
        .attrs()
        .filter(|(k, _)| *k == "log")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        logs,
        [
            dir.join("stdout.log").to_str().unwrap(),
            dir.join("stderr.log").to_str().unwrap()
        ]
    );
    b.shutdown();
}

#[test]
fn environment_has_job_vars_and_no_make_vars() {
    // SAFETY (edition 2021: safe): set before the backend captures the environment.
    std::env::set_var("MAKEFLAGS", "-j8 --jobserver-auth=3,4");
    std::env::set_var("MAKELEVEL", "1");
    std::env::set_var("FLOWRUN_LOCAL_TEST_HOST_VAR", "from-host");
    let (_d, mut host) = host();
    let b = backend(&host, "");
    let mut spec = host.shell_job(
        "envjob",
        "echo \"name=$FLOWRUN_JOB_NAME dir=$FLOWRUN_JOB_DIR run=$FLOWRUN_RUN_DIR attempt=$FLOWRUN_ATTEMPT\"; \
         echo \"mine=$MINE host=$FLOWRUN_LOCAL_TEST_HOST_VAR\"; \
         echo \"make=${MAKEFLAGS-unset} ${MFLAGS-unset} ${MAKELEVEL-unset}\"; pwd",
    );
    spec = spec.env("MINE", "it's \"quoted\" $x");
    spec = spec.attempt(2);
    let dir = spec.job().job_dir().to_string();
    let run_dir = spec.job().run_dir().to_string();
    let end = run(&mut host, &b, spec);
    assert_eq!(end.exit_code(), Some(0));
    let log = log_of(Path::new(&dir));
    assert_eq!(
        log,
        format!(
            "name=envjob dir={dir} run={run_dir} attempt=2\nmine=it's \"quoted\" $x host=from-host\nmake=unset unset unset\n{dir}\n"
        )
    );
    b.shutdown();
}

#[test]
fn cmd_sh_reproduces_the_job() {
    let (d, mut host) = host();
    let b = backend(&host, "");
    let work = d.path().join("elsewhere");
    std::fs::create_dir_all(&work).unwrap();
    // An argv job with awkward arguments, a job env var and a custom cwd.
    let mut spec = argv_job(
        &mut host,
        "byhand",
        &[
            "/bin/sh",
            "-c",
            "printf '%s|' \"$0\" \"$1\" \"$V\" \"$FLOWRUN_JOB_NAME\"; pwd",
            "a b'c",
            "$HOME;x",
        ],
    );
    spec = spec.env("V", "v a l'ue");
    spec = spec.cwd(work.to_string_lossy().into_owned());
    let dir = Path::new(spec.job().job_dir()).to_path_buf();
    let end = run(&mut host, &b, spec);
    assert_eq!(end.exit_code(), Some(0));
    let by_flowrun = log_of(&dir);
    assert_eq!(
        by_flowrun,
        format!("a b'c|$HOME;x|v a l'ue|byhand|{}\n", work.display())
    );

    let script = dir.join("cmd.sh");
    use std::os::unix::fs::PermissionsExt;
    assert!(
        std::fs::metadata(&script).unwrap().permissions().mode() & 0o111 != 0,
        "cmd.sh is executable"
    );
    let by_hand = std::process::Command::new(&script)
        .env("MAKEFLAGS", "-j9")
        .current_dir("/")
        .output()
        .unwrap();
    assert!(by_hand.status.success(), "{by_hand:?}");
    assert_eq!(String::from_utf8_lossy(&by_hand.stdout), by_flowrun);
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("unset MAKEFLAGS MFLAGS MAKELEVEL"), "{text}");

    // A shell-string job too.
    let spec = host.shell_job(
        "byhand-shell",
        "echo \"$FLOWRUN_JOB_NAME\" 'single '\\'' quote' | tr a-z A-Z",
    );
    let dir = Path::new(spec.job().job_dir()).to_path_buf();
    run(&mut host, &b, spec);
    let by_hand = std::process::Command::new(dir.join("cmd.sh"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&by_hand.stdout), log_of(&dir));
    assert_eq!(log_of(&dir), "BYHAND-SHELL SINGLE ' QUOTE\n");
    b.shutdown();
}

#[test]
fn missing_executable_and_cwd_fail_the_job_with_a_reason() {
    for config in ["", "spawn = \"std\""] {
        missing_executable_and_cwd_fail_the_job_with_a_reason_in(config);
    }
}

fn missing_executable_and_cwd_fail_the_job_with_a_reason_in(config: &str) {
    let (_d, mut host) = host();
    let b = backend(&host, config);
    let spec = argv_job(&mut host, "nosimv", &["simv", "+UVM_TESTNAME=x"]);
    let end = run(&mut host, &b, spec);
    assert_eq!(
        (end.kind(), end.end()),
        (JobEventKind::FINISHED, EndKind::FAILED)
    );
    assert_eq!(end.reason(), "command not found: simv");

    // A shell string whose command is missing: the shell's exit 127 and message.
    let spec = host.shell_job("shellsimv", "echo compiling; simv +UVM_TESTNAME=x");
    let end = run(&mut host, &b, spec);
    assert_eq!(
        (end.end(), end.reason()),
        (EndKind::FAILED, "command not found: simv")
    );
    assert_eq!(end.exit_code(), Some(127));
    // A script that exits 127 on its own is just that exit code.
    let spec = host.shell_job("own127", "echo done; exit 127");
    let end = run(&mut host, &b, spec);
    assert_eq!((end.end(), end.exit_code()), (EndKind::EXITED, Some(127)));

    let spec = argv_job(&mut host, "noslash", &["./not-here.sh"]);
    let end = run(&mut host, &b, spec);
    assert_eq!(
        (end.end(), end.reason()),
        (EndKind::FAILED, "command not found: ./not-here.sh")
    );

    let mut spec = host.shell_job("nocwd", "true");
    spec = spec.cwd("/nonexistent/flowrun/dir");
    let end = run(&mut host, &b, spec);
    assert_eq!(
        (end.end(), end.reason()),
        (
            EndKind::FAILED,
            "working directory does not exist: /nonexistent/flowrun/dir"
        )
    );

    let spec = host.shell_job("plain", "true");
    let file = Path::new(spec.job().job_dir()).join("not-exec.sh");
    std::fs::write(&file, "#!/bin/sh\n").unwrap();

    // A file as the working directory.
    let mut spec = host.shell_job("filecwd", "true");
    spec = spec.cwd(file.to_str().unwrap());
    let end = run(&mut host, &b, spec);
    assert_eq!(
        (end.end(), end.reason()),
        (
            EndKind::FAILED,
            format!("working directory is not a directory: {}", file.display()).as_str()
        )
    );

    // Not executable: the OS error.
    let spec = argv_job(&mut host, "noexec", &[file.to_str().unwrap()]);
    let end = run(&mut host, &b, spec);
    assert_eq!(end.end(), EndKind::FAILED);
    assert!(end.reason().contains("Permission denied"), "{end:?}");
    b.shutdown();
}

#[test]
fn an_argv_job_uses_the_path_of_its_own_environment() {
    for config in ["", "spawn = \"std\""] {
        an_argv_job_uses_the_path_of_its_own_environment_in(config);
    }
}

fn an_argv_job_uses_the_path_of_its_own_environment_in(config: &str) {
    let (_d, mut host) = host();
    let b = backend(&host, config);
    let spec = host.shell_job("tooldir", "true");
    let tools = Path::new(spec.job().job_dir()).join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    let tool = tools.join("mytool");
    std::fs::write(&tool, "#!/bin/sh\necho tool ran\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = argv_job(&mut host, "usetool", &["mytool"]);
    spec = spec.env("PATH", &format!("{}:/usr/bin:/bin", tools.display()));
    let dir = spec.job().job_dir().to_string();
    let end = run(&mut host, &b, spec);
    assert_eq!(end.exit_code(), Some(0), "{end:?}");
    assert_eq!(log_of(Path::new(&dir)), "tool ran\n");
    b.shutdown();
}

/// A job whose tree has children, grandchildren and a `setsid` escapee; the host kills it.
fn kill_whole_tree(config: &str, cgroups: bool) {
    let (_d, mut host) = host();
    let b = backend_maybe_in_cgroups(&host, config, cgroups);
    let marker = unique_sleep();
    let script = format!(
        "trap '' TERM; sleep {m} & sh -c 'sleep {m} & sleep {m}; wait' & setsid sh -c 'sleep {m} & wait' & \
         wait",
        m = marker
    );
    let spec = host.shell_job("tree", &script);
    let id = spec.id();
    host.submit_all(&b, vec![spec], WAIT);
    wait_for_processes(&marker, 4);
    let asked = Instant::now();
    b.kill(&[id]);
    let end = host.wait_end(id, WAIT).expect("the killed job ends");
    assert_eq!(
        (end.kind(), end.end()),
        (JobEventKind::FINISHED, EndKind::KILLED),
        "{end:?}"
    );
    // The leader ignores SIGTERM: it only died of the SIGKILL after the grace period.
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "SIGKILL came before kill_grace: {end:?} after {:?}",
        asked.elapsed()
    );
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "processes survived the kill"
    );
    b.shutdown();
}

#[test]
fn kill_takes_the_whole_tree_with_cgroups() {
    if privileged("a writable cgroup2 hierarchy") {
        kill_whole_tree("kill_grace = \"300ms\"", true);
        kill_whole_tree("kill_grace = \"300ms\"\nspawn = \"std\"", true);
    }
}

#[test]
fn kill_takes_the_whole_tree_without_cgroups() {
    kill_whole_tree("kill_grace = \"300ms\"\ncgroups = \"off\"", false);
    kill_whole_tree(
        "kill_grace = \"300ms\"\ncgroups = \"off\"\nspawn = \"std\"",
        false,
    );
}

#[test]
fn a_job_that_exits_on_sigterm_ends_before_the_grace_period() {
    let (_d, mut host) = host();
    let b = backend(&host, "kill_grace = \"30s\"");
    let spec = host.shell_job("polite", "sleep 100");
    let id = spec.id();
    host.submit_all(&b, vec![spec], WAIT);
    let started = host.next_event(WAIT).unwrap();
    assert_eq!(started.kind(), JobEventKind::STARTED);
    let asked = Instant::now();
    b.kill(&[id]);
    let end = host.wait_end(id, WAIT).unwrap();
    assert_eq!(end.end(), EndKind::KILLED);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "took {:?}",
        asked.elapsed()
    );
    b.shutdown();
}

fn leftovers_die_with_the_job(config: &str, cgroups: bool) {
    let (_d, mut host) = host();
    let b = backend_maybe_in_cgroups(&host, config, cgroups);
    let marker = unique_sleep();
    // The leader exits at once, leaving a background sleeper behind.
    let spec = host.shell_job("leaves", &format!("sleep {marker} & echo left; exit 4"));
    let end = run(&mut host, &b, spec);
    assert_eq!((end.end(), end.exit_code()), (EndKind::EXITED, Some(4)));
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "a leftover survived its job"
    );
    b.shutdown();
}

#[test]
fn leftovers_die_with_the_job_with_cgroups() {
    if privileged("a writable cgroup2 hierarchy") {
        leftovers_die_with_the_job("", true);
    }
}

#[test]
fn leftovers_die_with_the_job_without_cgroups() {
    leftovers_die_with_the_job("cgroups = \"off\"", false);
    leftovers_die_with_the_job("cgroups = \"off\"\nspawn = \"std\"", false);
}

#[test]
fn a_setsid_escapee_dies_with_its_job_in_a_cgroup() {
    if !privileged("a writable cgroup2 hierarchy") {
        return;
    }
    let (_d, mut host) = host();
    let b = cgroup_backend(&host, "");
    let marker = unique_sleep();
    let spec = host.shell_job("escapes", &format!("setsid sleep {marker} & sleep 0.2"));
    let end = run(&mut host, &b, spec);
    assert_eq!(end.exit_code(), Some(0));
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "the setsid child survived"
    );
    b.shutdown();
}

#[test]
fn shutdown_kills_everything_and_waits() {
    let (_d, mut host) = host();
    let b = backend(&host, "kill_grace = \"200ms\"");
    let marker = unique_sleep();
    let specs: Vec<TestJob> = (0..5)
        .map(|i| {
            host.shell_job(
                &format!("long{i}"),
                &format!("trap '' TERM; sleep {marker} & wait"),
            )
        })
        .collect();
    let ids: Vec<_> = specs.iter().map(|s| s.id()).collect();
    host.submit_all(&b, specs, WAIT);
    wait_for_processes(&marker, 5);
    b.shutdown();
    assert_eq!(processes_with(&marker), Vec::<u32>::new());
    for id in ids {
        let end = host
            .wait_end(id, Duration::from_secs(1))
            .expect("each job was reported");
        assert_eq!(end.end(), EndKind::KILLED);
    }
    // After shutdown, submissions are refused.
    let late = host.shell_job("late", "true");
    let answers = b.submit(&[late]);
    assert_eq!(answers[0].kind(), SubmitAnswerKind::REJECTED);
}

#[test]
fn many_short_jobs_all_end_exactly_once() {
    let (_d, mut host) = host();
    let b = backend(&host, "");
    let specs: Vec<TestJob> = (0..200)
        .map(|i| argv_job(&mut host, &format!("t{i}"), &["true"]))
        .collect();
    let ids: Vec<_> = specs.iter().map(|s| s.id()).collect();
    host.submit_all(&b, specs, WAIT);
    let mut ended = std::collections::HashSet::new();
    while ended.len() < ids.len() {
        let e = host.next_event(WAIT).expect("every job ends");
        if e.kind() == JobEventKind::FINISHED {
            assert_eq!(e.exit_code(), Some(0));
            assert!(ended.insert(e.id()), "{:?} ended twice", e.id());
        }
    }
    assert!(host
        .next_event(Duration::from_millis(100))
        .is_none_or(|e| e.kind() == JobEventKind::STARTED));
    let stats = b.stats();
    assert!(stats.contains("jobs_finished = 200"), "{stats}");
    // The reaper wakes about once per exit; a pidfd left in the epoll set after its job
    // was reaped would make it spin (thousands of wake-ups).
    let wakeups: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("reaper_wakeups = "))
        .and_then(|v| v.parse().ok())
        .expect("stats report reaper_wakeups");
    assert!(
        wakeups <= 2 * 200 + 20,
        "the reaper woke {wakeups} times for 200 jobs"
    );
    b.shutdown();
}

#[test]
fn interactive_jobs_take_turns_and_say_so() {
    let (_d, mut host) = host();
    let b = backend(&host, "");
    let mut first = host.shell_job("inter1", "sleep 0.3");
    first = first.interactive(true);
    let mut second = host.shell_job("inter2", "true");
    second = second.interactive(true);
    let background = host.shell_job("bg", "echo background ran");
    let bg_dir = background.job().job_dir().to_string();
    let (first_id, bg_id) = (first.id(), background.id());
    let answers = b.submit(&[first, second, background]);
    let kinds: Vec<_> = answers.iter().map(|a| a.kind()).collect();
    assert_eq!(
        kinds,
        [
            SubmitAnswerKind::ACCEPTED,
            SubmitAnswerKind::BUSY,
            SubmitAnswerKind::ACCEPTED
        ]
    );
    let started = host.next_event(WAIT).unwrap();
    assert_eq!(
        (started.id(), started.kind()),
        (first_id, JobEventKind::STARTED)
    );
    assert!(started.attr("interactive") == Some("1"), "{started:?}");
    // Other jobs keep running meanwhile.
    let bg_end = host.wait_end(bg_id, WAIT).unwrap();
    assert_eq!(bg_end.exit_code(), Some(0));
    assert_eq!(log_of(Path::new(&bg_dir)), "background ran\n");
    let end = host.wait_end(first_id, WAIT).unwrap();
    assert_eq!(end.exit_code(), Some(0));
    let mut again = host.shell_job("inter2b", "true");
    again = again.interactive(true);
    assert_eq!(b.submit(&[again])[0].kind(), SubmitAnswerKind::ACCEPTED);
    b.shutdown();
}

#[test]
fn config_errors_name_the_key() {
    let (_d, host) = host();
    let err = |config: &str| {
        host.backend(create, config)
            .err()
            .expect("config is rejected")
            .message
            .to_string()
    };
    assert!(err("kill_grace = \"soon\"").contains("kill_grace"));
    assert!(err("kill_grace = 5").contains("kill_grace"));
    assert!(err("split_output = \"yes\"").contains("split_output"));
    assert!(err("cgroups = \"always\"").contains("cgroups"));
    assert!(err("kill_gracee = \"1s\"").contains("kill_gracee"));
}

#[test]
fn shell_not_found_messages_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    for (text, expected) in [
        ("building\n/bin/sh: 1: simv: not found\n", Some("simv")),
        ("bash: line 1: vcs: command not found\n\n", Some("vcs")),
        ("sh: 1: cannot open x: No such file\n", None),
        ("all good\n", None),
        ("", None),
    ] {
        std::fs::write(&log, text).unwrap();
        assert_eq!(
            crate::shell_command_not_found(&log).as_deref(),
            expected,
            "{text:?}"
        );
    }
}

#[test]
fn quoting_survives_the_shell() {
    for s in [
        "", "plain", "a b", "it's", "$HOME", "`x`", "a\nb", "'", "\\",
    ] {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(s)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), s);
    }
}

/// A job for the spawn-level tests: its directory (not created), log and cmd.sh paths.
struct ProbeJob {
    job_dir: String,
    log: String,
    cmd_sh: String,
    devnull: std::fs::File,
}

impl ProbeJob {
    const CMD_SH: &'static str = "#!/bin/sh\necho by hand\n";

    fn new(job_dir: &Path) -> ProbeJob {
        let job_dir = job_dir.to_str().unwrap().to_string();
        ProbeJob {
            log: format!("{job_dir}/output.log"),
            cmd_sh: format!("{job_dir}/cmd.sh"),
            job_dir,
            devnull: std::fs::File::open("/dev/null").unwrap(),
        }
    }

    /// Runs `argv` in this job, in `cgroup`, not waiting for the exec.
    fn plan<'a>(
        &'a self,
        argv: &'a [&'a str],
        cgroup: Option<crate::spawn::CgroupFds>,
    ) -> crate::spawn::Plan<'a> {
        crate::spawn::Plan {
            argv,
            env: &[("PATH", "/usr/bin:/bin")],
            cwd: &self.job_dir,
            job_dir: &self.job_dir,
            cmd_sh_path: &self.cmd_sh,
            cmd_sh_text: Self::CMD_SH,
            output: crate::spawn::Output::Log {
                path: &self.log,
                stdin: std::os::fd::AsRawFd::as_raw_fd(&self.devnull),
            },
            grouping: crate::spawn::Grouping::NewSession,
            cgroup,
            wait_for_exec: false,
        }
    }
}

/// The job's first process is already in the job's cgroup when the job's code runs, whether
/// clone3 puts it there or (older kernels) the child moves itself; and the child creates the
/// job directory, cmd.sh and the log.
#[test]
fn a_job_starts_inside_its_cgroup_with_and_without_clone3() {
    if !privileged("a writable cgroup2 hierarchy") {
        return;
    }
    use crate::{
        spawn::{BaseEnv, CloneSpawner},
        tree::CgroupRoot,
    };
    let root = CgroupRoot::create(1_000_000 + u64::from(std::process::id()))
        .expect("a writable cgroup2 hierarchy (the tests run as root, as in CI)");
    let dir = tempfile::tempdir().unwrap();
    for (name, spawner) in [
        ("clone3", CloneSpawner::new(BaseEnv::capture())),
        (
            "self-placed",
            CloneSpawner::new(BaseEnv::capture()).without_clone3(),
        ),
    ] {
        let mut cgroup = root.acquire().unwrap();
        std::fs::create_dir(dir.path().join(name)).unwrap();
        let job = ProbeJob::new(&dir.path().join(name).join("job"));
        let fds = cgroup.spawn_fds(true).unwrap();
        let spawned = spawner
            .spawn(&job.plan(&["cat", "/proc/self/cgroup"], Some(fds)))
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let status = wait_exit(spawned.pid);
        assert!(spawned.report.failure().is_none(), "{name}");
        // On x86_64 (this kernel has CLONE_INTO_CGROUP) clone3 did it, without falling back.
        assert_eq!(
            spawner.uses_clone3(),
            name == "clone3" && cfg!(target_arch = "x86_64"),
            "{name}"
        );
        assert_eq!(status, 0, "{name}");
        let own = std::fs::read_to_string(&job.log).unwrap();
        // The cgroup2 line ("0::<path>") names the job cgroup, below the backend's.
        let expected = format!(
            "/{}/{}",
            root.dir().file_name().unwrap().to_str().unwrap(),
            cgroup.dir.file_name().unwrap().to_str().unwrap()
        );
        let v2 = own.lines().find(|l| l.starts_with("0::")).unwrap_or("");
        assert!(
            v2.ends_with(&expected) && expected.contains("/slot-"),
            "{name}: the job ran in {own:?}, not in {}",
            cgroup.dir.display()
        );
        assert_eq!(
            std::fs::read_to_string(&job.cmd_sh).unwrap(),
            ProbeJob::CMD_SH
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&job.cmd_sh).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{name}: cmd.sh is executable");
        assert!(cgroup.is_empty().unwrap());
        root.release(cgroup);
    }
    root.remove();
}

/// A job whose directory cannot be created fails with the reason; a missing one is created by
/// the job itself.
#[test]
fn a_job_dir_that_cannot_be_created_fails_the_job() {
    let (d, mut host) = host();
    let b = backend(&host, "");
    let file = d.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let mut spec = argv_job(&mut host, "baddir", &["true"]);
    let job_dir = file.join("job");
    spec = spec
        .job_dir(&job_dir)
        .cwd(&job_dir)
        .log_path(job_dir.join("output.log"));
    let end = run(&mut host, &b, spec);
    assert_eq!(end.end(), EndKind::FAILED, "{end:?}");
    assert_eq!(
        end.reason(),
        format!(
            "cannot create the job directory {}: Not a directory (os error 20)",
            job_dir.display()
        )
    );
    // A fresh directory is created by the job itself.
    let mut spec = argv_job(&mut host, "freshdir", &["pwd"]);
    let fresh = d.path().join("fresh");
    spec = spec
        .job_dir(&fresh)
        .cwd(&fresh)
        .log_path(fresh.join("output.log"));
    let end = run(&mut host, &b, spec);
    assert_eq!(end.exit_code(), Some(0), "{end:?}");
    assert_eq!(log_of(&fresh), format!("{}\n", fresh.display()));
    assert!(fresh.join("cmd.sh").is_file());
    b.shutdown();
}

/// A cgroup the kernel refuses is reported as the cgroup step, synchronously, in both modes
/// (the backend then turns cgroups off for the run and starts the job without one).
#[test]
fn a_refused_cgroup_placement_is_the_spawn_error() {
    use std::os::fd::AsRawFd;

    use crate::spawn::{BaseEnv, CgroupFds, CloneSpawner, SpawnError, SpawnStep};
    let dir = tempfile::tempdir().unwrap();
    // Not a cgroup: a plain directory and a file opened read-only.
    let not_cgroup = std::fs::File::open(dir.path()).unwrap();
    let not_procs = std::fs::File::open("/dev/null").unwrap();
    for (name, spawner) in [
        ("clone3", CloneSpawner::new(BaseEnv::capture())),
        (
            "self-placed",
            CloneSpawner::new(BaseEnv::capture()).without_clone3(),
        ),
    ] {
        let job = ProbeJob::new(&dir.path().join(name));
        let job_dir = job.job_dir.as_str();
        let result = spawner.spawn(&job.plan(
            &["true"],
            Some(CgroupFds {
                dir: not_cgroup.as_raw_fd(),
                procs: not_procs.as_raw_fd(),
            }),
        ));
        match result {
            Err(SpawnError::Step {
                step: SpawnStep::Cgroup,
                ..
            }) => {}
            Err(e) => panic!("{name}: expected the cgroup step to fail, got {e:?}"),
            Ok(s) => panic!("{name}: a job started (pid {}) in a non-cgroup", s.pid),
        }
        // Nothing of the job was created: the placement comes before its files.
        assert!(!Path::new(job_dir).exists(), "{name}");
        // clone3 refused the cgroup itself, without taking it for a missing feature.
        assert_eq!(
            spawner.uses_clone3(),
            name == "clone3" && cfg!(target_arch = "x86_64")
        );
    }
}

/// Jobs killed the moment they were submitted die at once, even those whose process has not
/// reached exec yet (the host does not wait for it): without cgroups such a child has no
/// session and no tag yet, so the kill must reach it by its pid.
#[test]
fn jobs_killed_right_after_submit_die_at_once_without_cgroups() {
    let (_d, mut host) = host();
    let b = backend(&host, "kill_grace = \"60s\"\ncgroups = \"off\"");
    for round in 0..3 {
        let specs: Vec<TestJob> = (0..100)
            .map(|i| argv_job(&mut host, &format!("early-{round}-{i}"), &["sleep", "300"]))
            .collect();
        let ids: Vec<_> = specs.iter().map(|s| s.id()).collect();
        host.submit_all(&b, specs, WAIT);
        let asked = Instant::now();
        b.kill(&ids);
        for id in ids {
            let end = host.wait_end(id, WAIT).expect("a killed job ends");
            assert_eq!(end.end(), EndKind::KILLED, "{end:?}");
        }
        // SIGTERM did it: nothing waited for the 60 s grace period (30 s leaves room for a
        // machine shared by many test runs).
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "round {round}: the kill took {:?}",
            asked.elapsed()
        );
    }
    b.shutdown();
}

/// Where a seccomp profile refuses clone3 with EPERM (as older container runtimes did), the
/// job still starts in its cgroup: the child places itself, and later jobs skip clone3.
#[cfg(target_arch = "x86_64")]
#[test]
#[allow(unsafe_code)]
fn clone3_refused_by_seccomp_falls_back_to_the_child_placing_itself() {
    if !privileged("a writable cgroup2 hierarchy") {
        return;
    }
    use crate::{
        spawn::{BaseEnv, CloneSpawner},
        tree::CgroupRoot,
    };
    // A thread of its own: a seccomp filter binds the thread that installs it (and what it
    // starts), not the rest of the test process.
    std::thread::spawn(|| {
        let root = CgroupRoot::create(2_000_000 + u64::from(std::process::id()))
            .expect("a writable cgroup2 hierarchy (the tests run as root, as in CI)");
        let mut cgroup = root.acquire().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // BPF: on x86_64, clone3 (435) fails with EPERM; everything else is allowed.
        const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
        let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
        let filter = [
            op(0x20, 0, 0, 4),                 // A = arch
            op(0x15, 0, 3, AUDIT_ARCH_X86_64), // arch == x86_64 ? next : allow
            op(0x20, 0, 0, 0),                 // A = syscall number
            op(0x15, 0, 1, 435),               // clone3 ? EPERM : allow
            op(0x06, 0, 0, 0x0005_0000 | libc::EPERM as u32),
            op(0x06, 0, 0, 0x7fff_0000),
        ];
        let program = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut _,
        };
        // SAFETY: prctl with a valid, live filter program.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog
                ),
                0
            );
        }
        let spawner = CloneSpawner::new(BaseEnv::capture());
        let job = ProbeJob::new(&dir.path().join("job"));
        let fds = cgroup.spawn_fds(true).unwrap();
        let spawned = spawner
            .spawn(&job.plan(&["cat", "/proc/self/cgroup"], Some(fds)))
            .expect("the job starts although clone3 is refused");
        assert_eq!(wait_exit(spawned.pid), 0);
        let slot = cgroup
            .dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let own = std::fs::read_to_string(&job.log).unwrap();
        assert!(
            own.lines()
                .any(|l| l.starts_with("0::") && l.ends_with(&format!("/{slot}"))),
            "the job ran in {own:?}"
        );
        assert!(!spawner.uses_clone3(), "later jobs skip clone3");
        root.release(cgroup);
        root.remove();
    })
    .join()
    .expect("the test thread");
}

/// A host whose stderr is closed (an embedding host, a daemon): the job's log file then comes
/// out as fd 2 in the child, which must keep it instead of failing. Run in a child process
/// of its own, since closing fd 2 in the shared test process would disturb other tests.
#[test]
fn a_host_with_stderr_closed_still_gives_jobs_their_log() {
    const NAME: &str = "tests::a_host_with_stderr_closed_still_gives_jobs_their_log";
    if std::env::var_os("FLOWRUN_TEST_STDERR_CLOSED").is_some() {
        stderr_closed_body();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--test-threads=1"])
        .env("FLOWRUN_TEST_STDERR_CLOSED", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}"
    );
}

#[allow(unsafe_code)]
fn stderr_closed_body() {
    use crate::spawn::{BaseEnv, CloneSpawner};
    let dir = tempfile::tempdir().unwrap();
    let job = ProbeJob::new(&dir.path().join("job"));
    let spawner = CloneSpawner::new(BaseEnv::capture());
    // SAFETY: this process runs this test alone; nothing else uses fd 2.
    unsafe { libc::close(2) };
    let spawned = spawner
        .spawn(&job.plan(&["sh", "-c", "echo out; echo err >&2"], None))
        .unwrap();
    let status = wait_exit(spawned.pid);
    assert!(spawned.report.failure().is_none());
    assert_eq!(status, 0);
    assert_eq!(std::fs::read_to_string(&job.log).unwrap(), "out\nerr\n");
}

/// The value of attribute `key` of an event.
fn attr<'e>(e: &'e Event, key: &str) -> Option<&'e str> {
    e.attr(key)
}

/// Issue 14 §1: FINISHED carries what the job's tree used: a job that allocates and touches
/// 200 MiB shows a peak of at least 200 MiB, one that burns 1 s of CPU about 1 s; from the
/// cgroup where there is one, else from wait4 of the leader.
fn usage_is_measured(config: &str, cgroups: bool) {
    let (_d, mut host) = host();
    let b = backend_maybe_in_cgroups(&host, config, cgroups);
    // dd reads 200 MiB into one buffer it allocated: every page is touched.
    let mem = argv_job(
        &mut host,
        "mem",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"],
    );
    // Burns user CPU until it has used 1 s of it (asking the time only every 100,000
    // additions, or the asking would cost more CPU than the adding), in a child of the shell
    // (waited for).
    let cpu = host.shell_job(
        "cpu",
        "perl -e 'do { $x++ for 1..100000 } while (times)[0] < 1.0'; true",
    );
    let ids = [mem.id(), cpu.id()];
    host.submit_all(&b, vec![mem, cpu], WAIT);
    let mem_end = host.wait_end(ids[0], WAIT).expect("mem ends");
    let cpu_end = host.wait_end(ids[1], WAIT).expect("cpu ends");
    for e in [&mem_end, &cpu_end] {
        assert_eq!(e.exit_code(), Some(0), "{config}: {e:?}");
        let source = attr(e, "usage_source").unwrap_or("");
        if cgroups {
            assert!(source.starts_with("cgroup"), "{config}: {e:?}");
        } else {
            assert_eq!(source, "rusage", "{config}: {e:?}");
        }
    }
    let mib: f64 = attr(&mem_end, "max_rss_mb").unwrap().parse().unwrap();
    assert!(
        mib >= 200.0,
        "{config}: peak {mib} MiB for a 200 MiB buffer"
    );
    let cpu_s: f64 = attr(&cpu_end, "cpu_s").unwrap().parse().unwrap();
    assert!(
        (0.95..1.6).contains(&cpu_s),
        "{config}: {cpu_s} s of CPU for a job that burns 1 s"
    );
    b.shutdown();
}

#[test]
fn usage_is_measured_without_cgroups() {
    usage_is_measured("cgroups = \"off\"", false);
    usage_is_measured("cgroups = \"off\"\nspawn = \"std\"", false);
}

#[test]
fn usage_is_measured_with_cgroups() {
    if privileged("a writable cgroup2 hierarchy") {
        usage_is_measured("", true);
        usage_is_measured("spawn = \"std\"", true);
    }
}

/// Item 9 (F5): when flowrun dies without shutting the backend down, the watchdog kills
/// every job's tree, `setsid`'d grandchildren included, and exits.
fn the_watchdog_kills_the_jobs_when_the_host_is_gone(config: &str, cgroups: bool) {
    use flowrun_plugin_sdk::{BackendImpl, Jobs};
    let (_d, mut host) = host();
    let b = crate::LocalBackend::new(crate::config::Config::parse(config).unwrap(), host.sink())
        .unwrap();
    assert_eq!(b.stats().contains("cgroups = true"), cgroups, "{config}");
    let marker = unique_sleep();
    let specs: Vec<TestJob> = (0..5)
        .map(|i| {
            host.shell_job(
                &format!("orphan{i}"),
                &format!("setsid sh -c 'sleep {marker}' & (sleep {marker} &); sleep {marker}"),
            )
        })
        .collect();
    let ids: Vec<_> = specs.iter().map(TestJob::id).collect();
    // Straight to the backend (not through the ABI): the test needs its watchdog handle.
    let batch: Vec<_> = specs.iter().map(|s| s.job().as_abi().clone()).collect();
    let answers = b.submit(Jobs::from_abi(&batch));
    assert!(answers
        .iter()
        .all(|a| a.kind() == SubmitAnswerKind::ACCEPTED));
    wait_for_processes(&marker, 15);
    let watchdog = b.watchdog_loses_host().expect("a watchdog runs");
    assert!(!Path::new(&format!("/proc/{watchdog}")).exists());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{config}: {} processes outlived the host by 5 s",
            processes_with(&marker).len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for id in ids {
        assert!(host.wait_end(id, WAIT).is_some());
    }
    b.shutdown();
}

#[test]
fn the_watchdog_kills_the_jobs_when_the_host_is_gone_without_cgroups() {
    the_watchdog_kills_the_jobs_when_the_host_is_gone("cgroups = \"off\"", false);
    the_watchdog_kills_the_jobs_when_the_host_is_gone("cgroups = \"off\"\nspawn = \"std\"", false);
}

#[test]
fn the_watchdog_kills_the_jobs_when_the_host_is_gone_with_cgroups() {
    if privileged("a writable cgroup2 hierarchy") {
        the_watchdog_kills_the_jobs_when_the_host_is_gone("", true);
        the_watchdog_kills_the_jobs_when_the_host_is_gone("spawn = \"std\"", true);
    }
}

/// An orderly shutdown tells the watchdog goodbye: it exits at once, and is reaped.
#[test]
fn the_watchdog_leaves_with_an_orderly_shutdown() {
    use flowrun_plugin_sdk::BackendImpl;
    let (_d, host) = host();
    let b = crate::LocalBackend::new(
        crate::config::Config::parse("cgroups = \"off\"").unwrap(),
        host.sink(),
    )
    .unwrap();
    let pid = b.watchdog_pid().expect("a watchdog runs");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    b.shutdown();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the watchdog outlived the shutdown (or was not reaped)"
    );
}
