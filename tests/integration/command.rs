//! The command-template backend (`kind = "command"`) through the CLI, on three schedulers
//! configured through templates alone: the Slurm, Grid Engine and LSF examples of
//! `plugins/command/README.md`, read from the README as written (only `poll_interval` is made
//! shorter), so that the documented configurations are the tested ones. On each: a 50-job DAG
//! in dependency order; a job failing with its exit status, the scheduler's time limit and a
//! flowrun kill; Ctrl-C leaving nothing of the run queued.
//!
//! The LSF emulator (`tests/cluster/lsf-emu`, python3, no privileges) runs unprivileged, each
//! test on an emulated cluster of its own. Slurm and Grid Engine are the real single-node
//! clusters of `tests/cluster/`, so those tests run only with `FLOWRUN_PRIVILEGED_TESTS=1`,
//! one at a time per cluster (the cluster's lock file, shared with the other tests that use it).

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use flowrun_tests::{spawn_flow, wait_until, workspace_root, Background, Run};
use parking_lot::{Mutex, MutexGuard};

// ---------------------------------------------------------------------------------------------
// The README's examples
// ---------------------------------------------------------------------------------------------

/// The backend table of the README's example `name` (the TOML block after
/// `# example: NAME`), as `[backends.AS]`, with `poll_interval` set to 1 s. `host_timeouts`:
/// without the optional groups that pass the job's timeout, so that flowrun enforces it.
fn example_backend(name: &str, as_name: &str, host_timeouts: bool) -> String {
    example_backend_with(name, as_name, host_timeouts, &[])
}

/// As `example_backend`, with the keys `extra` set in the table.
fn example_backend_with(
    name: &str,
    as_name: &str,
    host_timeouts: bool,
    extra: &[(&str, &str)],
) -> String {
    let readme = std::fs::read_to_string(workspace_root().join("plugins/command/README.md"))
        .expect("read plugins/command/README.md");
    let marker = format!("# example: {name}\n");
    let start = readme.find(&marker).expect("the README has the example") + marker.len();
    let block = &readme[start..start + readme[start..].find("```").expect("the block ends")];
    let doc: toml::Table = toml::from_str(block).expect("the example is TOML");
    let mut table = doc["backends"]
        .as_table()
        .and_then(|b| b.values().next())
        .and_then(|t| t.as_table())
        .expect("one backend table")
        .clone();
    table.insert("poll_interval".into(), "1s".into());
    for (key, value) in extra {
        table.insert(key.to_string(), value.to_string().into());
    }
    if host_timeouts {
        let submit = table["submit"].as_array_mut().expect("submit is an array");
        let before = submit.len();
        submit.retain(|e| !(e.is_array() && e.to_string().contains("{timeout_")));
        assert!(submit.len() < before, "the example passes the timeout");
    }
    let mut backends = toml::Table::new();
    backends.insert(as_name.into(), table.into());
    let mut doc = toml::Table::new();
    doc.insert("backends".into(), backends.into());
    toml::to_string(&doc).expect("serialize the backend table")
}

// ---------------------------------------------------------------------------------------------
// The three schedulers
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum Scheduler {
    Slurm,
    GridEngine,
    Lsf,
}

/// Serializes this binary's tests per cluster; the lock files serialize them with other test
/// binaries and benchmarks.
static SLURM: Mutex<()> = Mutex::new(());
static GRID_ENGINE: Mutex<()> = Mutex::new(());

/// A scheduler held for one test: the cluster's locks, or an emulated LSF of its own.
struct Cluster {
    which: Scheduler,
    _guard: Option<(File, MutexGuard<'static, ()>)>,
    /// The LSF emulator's state directory.
    emu: Option<tempfile::TempDir>,
}

fn emu_bin() -> PathBuf {
    workspace_root().join("tests/cluster/lsf-emu/bin")
}

#[allow(clippy::incompatible_msrv)] // File::lock: Rust 1.89; the CI toolchain is newer
fn lock(mutex: &'static Mutex<()>, file: &str) -> (File, MutexGuard<'static, ()>) {
    let guard = mutex.lock();
    let file = File::create(file).expect("create the cluster lock file");
    file.lock().expect("lock the cluster lock file");
    (file, guard)
}

impl Cluster {
    /// Takes the scheduler for a test; `None` when it needs the privileged switch and that
    /// is off.
    fn take(which: Scheduler) -> Option<Cluster> {
        match which {
            Scheduler::Lsf => {
                let cluster = Cluster {
                    which,
                    _guard: None,
                    emu: Some(tempfile::tempdir().expect("temporary directory")),
                };
                // A `-W` minute of 2 s, and a kill's signals 1 s apart, keep the tests short.
                for (knob, value) in [
                    ("RUNLIMIT_SECONDS_PER_MINUTE", "2"),
                    ("JOB_TERMINATE_INTERVAL", "1"),
                ] {
                    let (ok, text) = cluster.sh(&format!("lsf-emu-ctl set {knob} {value}"));
                    assert!(ok, "lsf-emu-ctl set {knob}: {text}");
                }
                Some(cluster)
            }
            Scheduler::Slurm => {
                if !flowrun_tests::privileged("root and the single-node Slurm of tests/cluster") {
                    return None;
                }
                let guard = lock(&SLURM, "/var/tmp/flowrun-slurm.lock");
                let up = Command::new(workspace_root().join("tests/cluster/slurm-up"))
                    .arg("--dbd")
                    .output()
                    .expect("run tests/cluster/slurm-up");
                assert!(
                    up.status.success(),
                    "slurm-up --dbd failed:\n{}",
                    String::from_utf8_lossy(&up.stderr)
                );
                Some(Cluster {
                    which,
                    _guard: Some(guard),
                    emu: None,
                })
            }
            Scheduler::GridEngine => {
                if !flowrun_tests::privileged(
                    "root and the Grid Engine of tests/cluster (started by tests/cluster/sge-up)",
                ) {
                    return None;
                }
                let guard = lock(&GRID_ENGINE, "/var/tmp/flowrun-sge.lock");
                let cluster = Cluster {
                    which,
                    _guard: Some(guard),
                    emu: None,
                };
                // The cluster is shared and started by the test command: wait out a short
                // qmaster outage, but never start or reconfigure it here.
                wait_until(
                    Duration::from_secs(90),
                    "Grid Engine to answer qstat (start it with tests/cluster/sge-up)",
                    || cluster.sh("qstat -u '*' >/dev/null").0,
                );
                Some(cluster)
            }
        }
    }

    fn example(&self) -> &'static str {
        match self.which {
            Scheduler::Slurm => "slurm",
            Scheduler::GridEngine => "gridengine",
            Scheduler::Lsf => "lsf",
        }
    }

    /// The file in the job directory the example's `submit` sends the scheduler's own output to.
    fn scheduler_output(&self) -> &'static str {
        match self.which {
            Scheduler::Slurm => "slurm.out",
            Scheduler::GridEngine => "sge.out",
            Scheduler::Lsf => "lsf.out",
        }
    }

    /// The environment flowrun and the test's own scheduler commands need.
    fn env(&self) -> Vec<(String, String)> {
        match &self.emu {
            Some(dir) => vec![
                (
                    "PATH".into(),
                    format!(
                        "{}:{}",
                        emu_bin().display(),
                        std::env::var("PATH").unwrap_or_default()
                    ),
                ),
                (
                    "LSF_EMU_DIR".into(),
                    dir.path().join("state").display().to_string(),
                ),
            ],
            None => vec![],
        }
    }

    /// Runs a shell command line with the scheduler's environment: (success, stdout+stderr).
    fn sh(&self, line: &str) -> (bool, String) {
        let mut command = Command::new("bash");
        command.arg("-c").arg(line).envs(self.env());
        // Knobs in the test's own environment would override the emulated cluster's file.
        for (key, _) in std::env::vars() {
            if key.starts_with("LSF_EMU_") && key != "LSF_EMU_DIR" {
                command.env_remove(key);
            }
        }
        let out = command.output().expect("run bash");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The run's jobs the scheduler still has queued or running (empty: none), asked the
    /// scheduler's own way, not through the backend.
    fn live_jobs(&self, tag: &str) -> String {
        let (ok, text) = match self.which {
            Scheduler::Slurm => self.sh(&format!("squeue -h --name={tag} -o '%i %T'")),
            // qstat cuts names to 10 characters; its XML has them whole.
            Scheduler::GridEngine => self.sh(&format!(
                "qstat -u '*' -xml | grep -c '<JB_name>{tag}</JB_name>'; true"
            )),
            // Without -a, bjobs shows unfinished jobs only.
            Scheduler::Lsf => self.sh(&format!("bjobs -noheader -o 'jobid stat' -J {tag}")),
        };
        assert!(ok, "cannot ask the scheduler about the run's jobs: {text}");
        let text = text.trim();
        let none = match self.which {
            Scheduler::GridEngine => text == "0",
            // "Job <NAME> is not found": no unfinished job has the run's name.
            Scheduler::Lsf => {
                text.is_empty()
                    || text.starts_with("No unfinished job found")
                    || text == format!("Job <{tag}> is not found")
            }
            Scheduler::Slurm => text.is_empty(),
        };
        if none {
            String::new()
        } else {
            text.to_string()
        }
    }

    /// A working directory the scheduler's jobs can write to.
    fn work_dir(&self) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("flowrun-command-test-")
            .tempdir_in("/var/tmp")
            .expect("temporary directory")
    }

    /// Starts `flow` (whose `[flow] name` is `name`) in the background.
    fn spawn(&self, dir: &Path, name: &str, flow: &str) -> Background {
        self.spawn_with(dir, name, flow, &[])
    }

    /// As `spawn`, with `extra` added to flowrun's environment.
    fn spawn_with(&self, dir: &Path, name: &str, flow: &str, extra: &[(&str, &str)]) -> Background {
        let env = self.env();
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(extra);
        spawn_flow(dir, name, flow, &env)
    }
}

impl Drop for Cluster {
    /// The emulated LSF is stopped, and must stop cleanly: `lsf-emu-ctl stop` fails when a
    /// process of a job outlived it.
    fn drop(&mut self) {
        if self.emu.is_some() {
            let (ok, text) = self.sh("lsf-emu-ctl stop 30");
            if !std::thread::panicking() {
                assert!(ok, "the emulated LSF did not stop cleanly: {text}");
            }
        }
    }
}

/// The flow's header: its name, and the scheduler's backend `sched` as the default.
fn flow_head(cluster: &Cluster, name: &str) -> String {
    format!(
        "[flow]\nname = \"{name}\"\ndefault_backend = \"sched\"\n{}",
        example_backend(cluster.example(), "sched", false)
    )
}

fn job_dir(run: &Run, job: &str) -> PathBuf {
    let log = run.job(job)["log"].as_str().expect("the job has a log");
    Path::new(log)
        .parent()
        .expect("the log is in the job directory")
        .to_path_buf()
}

fn log_of(run: &Run, job: &str) -> String {
    let path = run.job(job)["log"]
        .as_str()
        .expect("the job has a log")
        .to_string();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The tests, run on each scheduler
// ---------------------------------------------------------------------------------------------

fn a_50_job_dag_runs_in_dependency_order(which: Scheduler) {
    let Some(cluster) = Cluster::take(which) else {
        return;
    };
    let dir = cluster.work_dir();
    let mut flow = flow_head(&cluster, "dag50");
    // Five layers of ten jobs; each job of layer L > 0 needs two jobs of layer L - 1.
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
            flow.push_str(&format!(
                "[[job]]\nname = \"{name}\"\ncmd = \"echo I am $FLOWRUN_JOB_NAME\"\nneeds = {deps:?}\n"
            ));
            needs.push((name, deps));
        }
    }
    let bg = cluster.spawn(dir.path(), "dag50", &flow);
    let tag = bg.tag();
    let run = bg.finish(Duration::from_secs(600));
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], 50, "{run:#?}");
    for (name, deps) in &needs {
        assert_eq!(
            log_of(&run, name),
            format!("I am {name}\n"),
            "the log of {name}"
        );
        assert!(
            run.job(name)["native_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{name} has its native id: {}",
            run.job(name)
        );
        // The job went through the scheduler: its own output file is in the job directory.
        let scheduler_out = job_dir(&run, name).join(cluster.scheduler_output());
        assert!(
            scheduler_out.is_file(),
            "{name} ran without the scheduler: no {}",
            scheduler_out.display()
        );
        // Fixed-width RFC 3339 UTC times: their text order is their time order.
        let started = run.job(name)["started_at"].as_str().expect("started_at");
        for dep in deps {
            let finished = run.job(dep)["finished_at"].as_str().expect("finished_at");
            assert!(
                started >= finished,
                "{name} started at {started}, before {dep} finished at {finished}"
            );
        }
    }
    assert_eq!(cluster.live_jobs(&tag), "", "jobs left behind");
}

fn exit_statuses_time_limits_and_kills(which: Scheduler) {
    let Some(cluster) = Cluster::take(which) else {
        return;
    };
    let dir = cluster.work_dir();
    // `hostkill`: the same scheduler without the timeout in the submission, so that flowrun
    // enforces the timeout itself, by cancelling the job.
    let mut flow = format!(
        "{}{}",
        flow_head(&cluster, "verdicts"),
        example_backend(cluster.example(), "hostkill", true)
    );
    flow.push_str(
        "[[job]]\nname = \"passes\"\ncmd = \"echo fine\"\n\
         [[job]]\nname = \"exit3\"\ncmd = \"echo about to fail; exit 3\"\n\
         [[job]]\nname = \"killed\"\ncmd = \"sleep 600\"\ntimeout = \"3s\"\nbackend = \"hostkill\"\n",
    );
    // The scheduler's own time limit: Grid Engine's h_rt is in seconds; the emulated LSF's
    // `-W` minute lasts 2 s. (Slurm's limits are whole minutes, checked every 30 s: the slurm
    // backend's tests cover them.)
    let limit = match which {
        Scheduler::GridEngine => Some(("5s", "Grid Engine time limit (37: qmaster enforced h_rt")),
        Scheduler::Lsf => Some(("1m", "LSF time limit (EXIT: TERM_RUNLIMIT)")),
        Scheduler::Slurm => None,
    };
    if let Some((timeout, _)) = limit {
        flow.push_str(&format!(
            "[[job]]\nname = \"limited\"\ncmd = \"sleep 600\"\ntimeout = \"{timeout}\"\n"
        ));
    }
    let bg = cluster.spawn(dir.path(), "verdicts", &flow);
    let tag = bg.tag();
    let run = bg.finish(Duration::from_secs(300));
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("passes"), "passed", "{run:#?}");
    assert_eq!(log_of(&run, "passes"), "fine\n");
    assert_eq!(
        (run.status("exit3"), run.reason("exit3")),
        ("failed", "exit code 3"),
        "{run:#?}"
    );
    assert_eq!(run.job("exit3")["exit_code"], 3);
    // The job's own output alone: nothing the scheduler appends (LSF's report) is in it.
    assert_eq!(log_of(&run, "exit3"), "about to fail\n");
    assert_eq!(
        (run.status("killed"), run.reason("killed")),
        ("killed", "timed out after 3s"),
        "{run:#?}"
    );
    if let Some((_, reason)) = limit {
        assert_eq!(run.status("limited"), "failed", "{run:#?}");
        assert!(
            run.reason("limited").starts_with(reason),
            "the reason of `limited`: {}",
            run.reason("limited")
        );
    }
    assert_eq!(cluster.live_jobs(&tag), "", "jobs left behind");
}

fn ctrl_c_leaves_nothing_queued(which: Scheduler) {
    let Some(cluster) = Cluster::take(which) else {
        return;
    };
    let dir = cluster.work_dir();
    let mut flow = flow_head(&cluster, "ctrlc");
    for i in 0..4 {
        flow.push_str(&format!(
            "[[job]]\nname = \"sleep{i}\"\ncmd = \"echo started; sleep 600\"\n"
        ));
    }
    // Waits for a sleeper, so it is still queued in flowrun when Ctrl-C comes.
    flow.push_str("[[job]]\nname = \"after\"\ncmd = \"true\"\nneeds = [\"sleep0\"]\n");
    let bg = cluster.spawn(dir.path(), "ctrlc", &flow);
    let tag = bg.tag();
    let log = |i: usize| dir.path().join(format!("out/jobs/sleep{i}/output.log"));
    wait_until(Duration::from_secs(120), "the 4 sleepers to run", || {
        (0..4).all(|i| std::fs::read_to_string(log(i)).is_ok_and(|t| t == "started\n"))
    });
    bg.interrupt();
    let run = bg.finish(Duration::from_secs(120));
    assert_eq!(run.code, 130, "{run:#?}");
    assert_eq!(run.results["interrupted"], true);
    for i in 0..4 {
        assert_eq!(run.status(&format!("sleep{i}")), "killed", "{run:#?}");
    }
    assert_ne!(run.status("after"), "passed");
    assert_eq!(cluster.live_jobs(&tag), "", "jobs left behind");
}

#[test]
fn lsf_emu_a_50_job_dag_runs_in_dependency_order() {
    a_50_job_dag_runs_in_dependency_order(Scheduler::Lsf);
}

#[test]
fn lsf_emu_exit_statuses_time_limits_and_kills() {
    exit_statuses_time_limits_and_kills(Scheduler::Lsf);
}

#[test]
fn lsf_emu_ctrl_c_leaves_nothing_queued() {
    ctrl_c_leaves_nothing_queued(Scheduler::Lsf);
}

#[test]
fn slurm_a_50_job_dag_runs_in_dependency_order() {
    a_50_job_dag_runs_in_dependency_order(Scheduler::Slurm);
}

#[test]
fn slurm_exit_statuses_and_kills() {
    exit_statuses_time_limits_and_kills(Scheduler::Slurm);
}

#[test]
fn slurm_ctrl_c_leaves_nothing_queued() {
    ctrl_c_leaves_nothing_queued(Scheduler::Slurm);
}

#[test]
fn gridengine_a_50_job_dag_runs_in_dependency_order() {
    a_50_job_dag_runs_in_dependency_order(Scheduler::GridEngine);
}

#[test]
fn gridengine_exit_statuses_time_limits_and_kills() {
    exit_statuses_time_limits_and_kills(Scheduler::GridEngine);
}

#[test]
fn gridengine_ctrl_c_leaves_nothing_queued() {
    ctrl_c_leaves_nothing_queued(Scheduler::GridEngine);
}

/// The scheduler unreachable for 20 s in the middle of a run: the README's `transient` regex
/// marks the failed calls as worth retrying, so the status queries and the submissions that
/// fail during the outage fail no job, and every verdict after it is still the job's own.
#[test]
fn lsf_emu_an_outage_of_20_seconds_mid_run_fails_no_job() {
    let cluster = Cluster::take(Scheduler::Lsf).expect("the emulator needs no privileges");
    // A client gives up after one try, 1 s after it starts, rather than retrying for ever.
    let (ok, text) = cluster.sh("lsf-emu-ctl set LSB_API_CONNTIMEOUT 1");
    assert!(ok, "{text}");
    let dir = cluster.work_dir();
    // `hold` runs through the outage (it waits for the test's `release` file), so that the
    // status queries meet it; one submission per second, so that some of the 30 jobs after
    // it go out during the outage (flowrun submits ready jobs in the flow's order).
    let mut flow = format!(
        "[flow]\nname = \"outage\"\ndefault_backend = \"sched\"\n{}",
        example_backend_with("lsf", "sched", false, &[("submit_rate", "1/s")])
    );
    let release = dir.path().join("release");
    flow.push_str(&format!(
        "[[job]]\nname = \"hold\"\ncmd = \"echo started; until [ -e '{}' ]; do sleep 0.2; done\"\n",
        release.display()
    ));
    for i in 0..30 {
        flow.push_str(&format!("[[job]]\nname = \"w{i}\"\ncmd = \"echo w{i}\"\n"));
    }
    // Judged after the outage, from what the scheduler says then.
    flow.push_str("[[job]]\nname = \"exit3\"\ncmd = \"exit 3\"\nneeds = [\"hold\"]\n");
    let bg = cluster.spawn_with(dir.path(), "outage", &flow, &[("LSB_NTRIES", "1")]);
    let tag = bg.tag();
    let log = dir.path().join("out/jobs/hold/output.log");
    wait_until(Duration::from_secs(60), "hold to run", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t == "started\n")
    });
    let (ok, text) = cluster.sh("lsf-emu-ctl outage 20");
    assert!(ok, "lsf-emu-ctl outage: {text}");
    // The outage is real: the scheduler's own client is refused.
    let (ok, text) = cluster.sh("LSB_NTRIES=1 bjobs -noheader");
    assert!(
        !ok && text.contains("Connection refused by server"),
        "{text}"
    );
    std::thread::sleep(Duration::from_secs(22));
    std::fs::write(&release, "").expect("write the release file");
    let run = bg.finish(Duration::from_secs(300));
    assert_eq!(run.code, 1, "{run:#?}");
    // Both kinds of call met the outage and were retried (the engine's warnings say so).
    for retried in ["LSF status query failed", "job(s) failed"] {
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains(retried) && l.contains("Connection refused by server")),
            "no {retried:?} in flowrun's output: {}",
            run.stderr
        );
    }
    assert_eq!(run.status("hold"), "passed", "{run:#?}");
    for i in 0..30 {
        assert_eq!(run.status(&format!("w{i}")), "passed", "{run:#?}");
        assert_eq!(log_of(&run, &format!("w{i}")), format!("w{i}\n"));
    }
    assert_eq!(
        (run.status("exit3"), run.reason("exit3")),
        ("failed", "exit code 3"),
        "{run:#?}"
    );
    assert_eq!(cluster.live_jobs(&tag), "", "jobs left behind");
}

/// A mistake in a template or regex is reported before anything runs, by `flowrun run` and
/// `flowrun check`, with the file, the line of the backend's table and the key, and exit
/// status 2.
#[test]
fn a_mistake_in_the_templates_is_reported_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let example = example_backend("lsf", "farm", false);
    for (good, bad, key, words) in [
        (
            "{script}",
            "{scrpt}",
            "submit",
            "unknown placeholder {scrpt}",
        ),
        (
            "(?P<id>\\d+)\\|",
            "(?P<jobid>\\d+)\\|",
            "status_line",
            "no group named `id`",
        ),
    ] {
        let broken = example.replacen(good, bad, 1);
        assert_ne!(broken, example, "the example has {good}");
        let flow = format!(
            "[flow]\nname = \"mistake\"\ndefault_backend = \"farm\"\n{broken}\
             [[job]]\nname = \"a\"\ncmd = \"true\"\n"
        );
        let run = flowrun_tests::run_flow(dir.path(), &flow, &[]);
        assert_eq!(run.code, 2, "{run:#?}");
        let flow_file = dir.path().join("flow.toml");
        let line = flow
            .lines()
            .position(|l| l == "[backends.farm]")
            .expect("the table")
            + 1;
        let at = format!("{}:{line}:", flow_file.display());
        assert!(
            run.stderr.contains(&at) && run.stderr.contains(&format!("`{key}`")),
            "the error names {at} and `{key}`: {}",
            run.stderr
        );
        assert!(run.stderr.contains(words), "{}", run.stderr);
        assert!(
            !dir.path().join("out/jobs/a/output.log").exists(),
            "nothing ran"
        );
        // `flowrun check` creates the backends, so it reports the same mistake.
        let check = flowrun_tests::flowrun(dir.path())
            .arg("check")
            .arg(&flow_file)
            .output()
            .expect("run flowrun check");
        let check_err = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.code(), Some(2), "flowrun check: {check_err}");
        assert!(
            check_err.contains(&at) && check_err.contains(&format!("`{key}`")),
            "flowrun check names {at} and `{key}`: {check_err}"
        );
        assert!(check_err.contains(words), "{check_err}");
    }
}

// ---------------------------------------------------------------------------------------------
// A scheduler of shell scripts (no cluster): what a mistaken template does
// ---------------------------------------------------------------------------------------------

/// Writes a toy scheduler into `dir`: `submit SCRIPT` runs the job's script in the background
/// and prints `banner` (if any) and then the job's id (the pid of the submit call: unique); `status` prints `ID R` for each job still
/// running; `cancel IDS` kills them.
fn toy_scheduler(dir: &Path, banner: &str) {
    let jobs = dir.join("toy-jobs");
    std::fs::create_dir_all(&jobs).expect("toy jobs directory");
    let scripts = [
        (
            "submit",
            format!(
                "#!/bin/bash\nid=$$\nsetsid bash \"$1\" >/dev/null 2>&1 </dev/null &\n\
                 echo $! > {jobs}/$id\n{banner}echo $id\n",
                jobs = jobs.display(),
                banner = if banner.is_empty() { String::new() } else { format!("echo '{banner}'\n") },
            ),
        ),
        (
            "status",
            format!(
                "#!/bin/bash\nfor f in {jobs}/*; do [ -e \"$f\" ] || continue; \
                 kill -0 $(cat \"$f\") 2>/dev/null && echo \"$(basename \"$f\") R\"; done; exit 0\n",
                jobs = jobs.display()
            ),
        ),
        (
            "cancel",
            format!(
                "#!/bin/bash\nfor id in \"$@\"; do kill -- -$(cat {jobs}/$id) 2>/dev/null; done; exit 0\n",
                jobs = jobs.display()
            ),
        ),
    ];
    for (name, text) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write the toy scheduler");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("make it executable");
    }
}

/// The backend table of the toy scheduler, its id read by `submit_id`.
fn toy_backend(dir: &Path, submit_id: &str) -> String {
    let d = dir.display();
    format!(
        "[backends.toy]\nkind = \"command\"\nscheduler = \"toy\"\n\
         submit = [\"{d}/submit\", \"{{script}}\", \"{{run_tag}}\"]\n\
         submit_id = '{submit_id}'\nstatus = [\"{d}/status\", \"{{run_tag}}\"]\n\
         status_line = '^(?P<id>\\d+) (?P<state>\\w+)'\nstates = {{ running = [\"R\"] }}\n\
         cancel = [\"{d}/cancel\", \"{{ids}}\"]\npoll_interval = \"200ms\"\nsubmit_grace = \"1s\"\n"
    )
}

/// A `submit_id` that also matches a number of a banner gives every job the same id. The job
/// that got it first keeps it and is judged on its own evidence; every later one fails at once,
/// saying which job has the id and what to check, instead of two jobs sharing one id (each then
/// read the other's states, kills cancelled the wrong one, and both ended "lost" a minute later).
#[test]
fn two_jobs_given_one_id_by_a_mistaken_submit_id_never_share_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    toy_scheduler(dir.path(), "toy cluster 3 accepted your job:");
    let flow = format!(
        "[flow]\nname = \"one-id\"\ndefault_backend = \"toy\"\n{}\
         [[job]]\nname = \"first\"\ncmd = \"sleep 1; exit 0\"\n\
         [[job]]\nname = \"second\"\ncmd = \"sleep 1; exit 0\"\n",
        toy_backend(dir.path(), r"(\d+)")
    );
    let started = std::time::Instant::now();
    let run = flowrun_tests::run_flow(dir.path(), &flow, &[]);
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the run ended without waiting for lost_after: {run:#?}"
    );
    assert_eq!(run.code, 1, "{run:#?}");
    let passed: Vec<&str> = ["first", "second"]
        .into_iter()
        .filter(|n| run.status(n) == "passed")
        .collect();
    assert_eq!(passed.len(), 1, "one job keeps the id and passes: {run:#?}");
    let (holder, other) = match passed[0] {
        "first" => ("first", "second"),
        _ => ("second", "first"),
    };
    let reason = run.reason(other);
    assert_eq!(run.status(other), "failed", "{run:#?}");
    assert!(
        reason.contains(&format!(
            "toy gave it the job id 3, which job {holder} of this run already has"
        )) && reason.contains("`submit_id`"),
        "{reason}"
    );
}
