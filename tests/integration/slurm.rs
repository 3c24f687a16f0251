//! The Slurm backend (`kind = "slurm"`) through the CLI, against the real single-node Slurm of
//! `tests/cluster/` on this machine. Each test brings the cluster up in the mode it needs
//! (`slurm-up` is idempotent and installs Slurm if missing), and the tests run one at a time
//! because they share the cluster (one stops its controller, one switches accounting off).

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use flowrun_tests::{collect, flowrun, status_json, workspace_root, Run};
use parking_lot::{Mutex, MutexGuard};

/// Serializes the tests of this binary; [`ClusterLock`] serializes them with other processes
/// (another test binary, a benchmark) using the same cluster.
static CLUSTER: Mutex<()> = Mutex::new(());

/// The file lock every user of the test cluster takes (also `plugins/slurm`'s unit tests and
/// `benches/slurm.sh`, through `flock`).
const CLUSTER_LOCK_FILE: &str = "/var/tmp/flowrun-slurm.lock";

/// Holds the cluster: the in-process mutex, then the cross-process file lock.
struct ClusterLock {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

/// With or without accounting (slurmdbd + MariaDB).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Dbd,
    NoDbd,
}

/// Takes the cluster for this test and brings it up in `mode`; `None` without the privileged
/// switch (the tests need root and the cluster).
#[allow(clippy::incompatible_msrv)] // File::lock: Rust 1.89; the CI toolchain is newer
fn cluster(mode: Mode) -> Option<ClusterLock> {
    if !flowrun_tests::privileged("root and the single-node Slurm cluster of tests/cluster") {
        return None;
    }
    let guard = CLUSTER.lock();
    let file = File::create(CLUSTER_LOCK_FILE).expect("create the cluster lock file");
    file.lock().expect("lock the cluster lock file");
    let arg = if mode == Mode::Dbd {
        "--dbd"
    } else {
        "--no-dbd"
    };
    let out = Command::new(cluster_script("slurm-up"))
        .arg(arg)
        .output()
        .expect("run tests/cluster/slurm-up");
    assert!(
        out.status.success(),
        "slurm-up {arg} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(ClusterLock {
        _file: file,
        _guard: guard,
    })
}

fn cluster_script(name: &str) -> PathBuf {
    workspace_root().join("tests/cluster").join(name)
}

/// Runs a shell command line and returns its standard output.
fn sh(line: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(line)
        .output()
        .expect("run bash");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A job of the run as squeue sees it.
#[derive(Debug)]
struct SlurmJob {
    id: String,
    state: String,
    /// The batch script: `<run dir>/jobs/<job name>/slurm-job.sh` for a single job.
    command: String,
}

/// Every job (any state) squeue shows under the Slurm job name `tag`.
fn slurm_jobs(tag: &str) -> Vec<SlurmJob> {
    sh(&format!("squeue -h -r -t all --name={tag} -o '%i|%T|%o'"))
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, '|');
            Some(SlurmJob {
                id: p.next()?.into(),
                state: p.next()?.into(),
                command: p.next()?.into(),
            })
        })
        .collect()
}

/// The Slurm job of flowrun job `name`, if squeue shows it.
fn slurm_job(tag: &str, name: &str) -> Option<SlurmJob> {
    let suffix = format!("/jobs/{name}/slurm-job.sh");
    slurm_jobs(tag)
        .into_iter()
        .find(|j| j.command.ends_with(&suffix))
}

/// Waits until `what` holds, checking every 200 ms; panics with `desc` after `limit`.
fn wait_until(limit: Duration, desc: &str, mut what: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !what() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {desc}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `flowrun run` running in the background, its output going to files.
struct Background {
    child: Child,
    dir: PathBuf,
    /// The run's tag, which the Slurm backend uses as the Slurm job name (read from the
    /// journal once it exists: [`Background::tag`]).
    tag: std::sync::OnceLock<String>,
    /// How the tag begins: `flowrun-<flow>-<pid>-`.
    tag_prefix: String,
}

fn spawn_flow(dir: &Path, flow_name: &str, flow: &str, path_prefix: Option<&Path>) -> Background {
    std::fs::write(dir.join("flow.toml"), flow).unwrap();
    let mut cmd = flowrun(dir);
    cmd.arg("run")
        .arg(dir.join("flow.toml"))
        .arg("--out")
        .arg(dir.join("out"));
    cmd.stdout(File::create(dir.join("stdout")).unwrap())
        .stderr(File::create(dir.join("stderr")).unwrap());
    if let Some(p) = path_prefix {
        cmd.env("PATH", path_with(p));
    }
    let child = cmd.spawn().expect("start flowrun");
    Background {
        tag_prefix: format!("flowrun-{flow_name}-{}-", child.id()),
        child,
        dir: dir.to_path_buf(),
        tag: std::sync::OnceLock::new(),
    }
}

impl Background {
    /// The run's tag: the flow's name, flowrun's pid and a random part.
    fn tag(&self) -> String {
        let tag = self
            .tag
            .get_or_init(|| flowrun_tests::run_tag_of(&self.dir, &self.dir.join("out")));
        assert!(
            tag.starts_with(&self.tag_prefix),
            "the run tag {tag:?} is not {}<random>",
            self.tag_prefix
        );
        tag.clone()
    }

    /// Waits for flowrun to exit (at most `limit`) and reads its results.
    fn finish(mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "flowrun did not finish within {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let output = Output {
            status,
            stdout: std::fs::read(self.dir.join("stdout")).unwrap_or_default(),
            stderr: std::fs::read(self.dir.join("stderr")).unwrap_or_default(),
        };
        collect(output, &self.dir.join("out"))
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }
}

/// A directory of wrapper scripts named like the Slurm commands: each logs the call (with a
/// timestamp) to `calls.log` beside it, then runs the real command.
fn command_wrappers(dir: &Path) -> PathBuf {
    let bin = dir.join("wrappers");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["sbatch", "squeue", "sacct", "scontrol", "scancel"] {
        let real = sh(&format!("command -v {name}")).trim().to_string();
        assert!(!real.is_empty(), "{name} is not installed");
        let script = format!(
            "#!/bin/sh\necho \"$(date +%s.%N) {name}\" >> '{log}'\nexec '{real}' \"$@\"\n",
            log = dir.join("calls.log").display()
        );
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        sh(&format!("chmod +x '{}'", path.display()));
    }
    bin
}

/// The times (seconds since the epoch) of the logged calls of `name`.
fn calls(dir: &Path, name: &str) -> Vec<f64> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, n) = l.split_once(' ')?;
            (n == name).then(|| t.parse().ok())?
        })
        .collect()
}

/// Seconds since the epoch of an RFC 3339 UTC time such as `2026-11-22T22:14:14.530906Z`.
fn epoch_secs(text: &str) -> f64 {
    let out = sh(&format!("date -u -d '{text}' +%s.%N"));
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("cannot read the time {text:?}"))
}

fn backend_table(name: &str, extra: &str) -> String {
    format!("[backends.{name}]\nkind = \"slurm\"\npoll_interval = \"1s\"\n{extra}\n")
}

fn temp_dir() -> tempfile::TempDir {
    // Slurm jobs write their logs into the run directory: keep it somewhere slurmd can write.
    tempfile::Builder::new()
        .prefix("flowrun-slurm-test-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

#[test]
fn a_50_job_dag_passes_in_dependency_order() {
    let Some(_cluster) = cluster(Mode::Dbd) else {
        return;
    };
    let dir = temp_dir();
    // Five layers of ten jobs; every job of layer L > 0 needs two jobs of layer L - 1: the
    // DAG the LSF and Grid Engine tests run too.
    let (jobs, needs) = crate::batch::dag_50();
    let flow = format!(
        "[flow]\nname = \"dag50\"\ndefault_backend = \"slurm\"\n{}{jobs}",
        backend_table("slurm", "")
    );
    let began = Instant::now();
    let run = flowrun_tests::run_flow(dir.path(), &flow, &[]);
    eprintln!("50-job DAG took {:?}", began.elapsed());
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], 50, "{run:#?}");
    for (name, deps) in &needs {
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

#[test]
fn failures_carry_their_slurm_reasons() {
    let Some(_cluster) = cluster(Mode::Dbd) else {
        return;
    };
    let dir = temp_dir();
    // `held` submits with --hold, so the test can delete the job's directory (its log's
    // directory) before Slurm starts it: Slurm then fails the job with 0:53 and no log.
    let flow = format!(
        "[flow]\nname = \"reasons\"\ndefault_backend = \"slurm\"\n{}{}\
         [[job]]\nname = \"exit3\"\ncmd = \"exit 3\"\n\
         [[job]]\nname = \"timelimit\"\ncmd = \"sleep 600\"\ntimeout = \"1m\"\n\
         [[job]]\nname = \"outside\"\ncmd = \"sleep 600\"\n\
         [[job]]\nname = \"lostlog\"\ncmd = \"echo never\"\nbackend = \"held\"\n",
        backend_table("slurm", ""),
        backend_table("held", "sbatch_args = [\"--hold\"]"),
    );
    let began = Instant::now();
    let bg = spawn_flow(dir.path(), "reasons", &flow, None);
    let tag = bg.tag();

    wait_until(Duration::from_secs(60), "job `outside` to run", || {
        slurm_job(&tag, "outside").is_some_and(|j| j.state == "RUNNING")
    });
    let outside = slurm_job(&tag, "outside").unwrap();
    sh(&format!("scancel {}", outside.id));

    wait_until(
        Duration::from_secs(60),
        "job `lostlog` to be queued (held)",
        || slurm_job(&tag, "lostlog").is_some(),
    );
    let held = slurm_job(&tag, "lostlog").unwrap();
    assert_eq!(held.state, "PENDING");
    std::fs::remove_dir_all(dir.path().join("out/jobs/lostlog")).unwrap();
    sh(&format!("scontrol release {}", held.id));

    // Slurm's time limit has a one-minute resolution and is checked about every 30 s.
    let run = bg.finish(Duration::from_secs(240));
    eprintln!("failure reasons took {:?}", began.elapsed());
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        (run.status("exit3"), run.reason("exit3")),
        ("failed", "exit code 3")
    );
    assert_eq!(run.job("exit3")["exit_code"], 3);
    assert_eq!(
        (run.status("timelimit"), run.reason("timelimit")),
        ("failed", "Slurm time limit")
    );
    assert_eq!(
        (run.status("outside"), run.reason("outside")),
        ("failed", "cancelled outside flowrun")
    );
    assert_eq!(run.status("lostlog"), "failed");
    assert!(
        run.reason("lostlog")
            .contains("could not open the job's output file"),
        "reason: {}",
        run.reason("lostlog")
    );
    assert!(slurm_jobs(&tag)
        .iter()
        .all(|j| !["PENDING", "RUNNING"].contains(&j.state.as_str())));
}

#[test]
fn ctrl_c_cancels_every_slurm_job_of_the_run() {
    let Some(_cluster) = cluster(Mode::Dbd) else {
        return;
    };
    let dir = temp_dir();
    let mut flow = format!(
        "[flow]\nname = \"ctrlc\"\ndefault_backend = \"slurm\"\n{}",
        backend_table("slurm", "")
    );
    for i in 0..4 {
        flow.push_str(&format!(
            "[[job]]\nname = \"sleep{i}\"\ncmd = \"sleep 600\"\n"
        ));
    }
    // Waits for the sleepers, so it is still queued in flowrun when Ctrl-C comes.
    flow.push_str("[[job]]\nname = \"after\"\ncmd = \"true\"\nneeds = [\"sleep0\"]\n");
    let bg = spawn_flow(dir.path(), "ctrlc", &flow, None);
    let tag = bg.tag();
    wait_until(Duration::from_secs(60), "4 sleepers to run", || {
        slurm_jobs(&tag)
            .iter()
            .filter(|j| j.state == "RUNNING")
            .count()
            == 4
    });
    let pid = bg.child.id();
    sh(&format!("kill -INT {pid}"));
    let run = bg.finish(Duration::from_secs(90));
    assert_eq!(run.code, 130, "{run:#?}");
    assert_eq!(run.results["interrupted"], true);
    for i in 0..4 {
        assert_eq!(run.status(&format!("sleep{i}")), "killed", "{run:#?}");
    }
    // Nothing of the run is left queued or running (plain squeue shows only live jobs).
    assert_eq!(
        sh(&format!("squeue -h --name={tag} -o %i")).trim(),
        "",
        "jobs left behind"
    );
    assert!(
        slurm_jobs(&tag).iter().all(|j| j.state == "CANCELLED"),
        "{:?}",
        slurm_jobs(&tag)
    );
}

#[test]
fn a_20_second_controller_outage_is_survived() {
    let Some(_cluster) = cluster(Mode::Dbd) else {
        return;
    };
    let dir = temp_dir();
    let mut flow = format!(
        "[flow]\nname = \"outage\"\ndefault_backend = \"slurm\"\n{}",
        backend_table("slurm", "")
    );
    for i in 0..5 {
        // They end while the controller is down; their children are submitted during the outage.
        flow.push_str(&format!("[[job]]\nname = \"root{i}\"\ncmd = \"sleep 6\"\n"));
        flow.push_str(&format!(
            "[[job]]\nname = \"child{i}\"\ncmd = \"echo child\"\nneeds = [\"root{i}\"]\n"
        ));
    }
    flow.push_str("[[job]]\nname = \"fails\"\ncmd = \"sleep 6; exit 3\"\n");
    let began = Instant::now();
    let bg = spawn_flow(dir.path(), "outage", &flow, None);
    let tag = bg.tag();
    wait_until(Duration::from_secs(60), "the 6 roots to run", || {
        slurm_jobs(&tag)
            .iter()
            .filter(|j| j.state == "RUNNING")
            .count()
            == 6
    });
    let ctl = cluster_script("slurm-ctl");
    assert!(Command::new(&ctl).arg("stop").status().unwrap().success());
    std::thread::sleep(Duration::from_secs(20));
    let started = Command::new(&ctl)
        .arg("start")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(started.success(), "slurmctld did not come back");
    let run = bg.finish(Duration::from_secs(240));
    eprintln!("controller outage run took {:?}", began.elapsed());
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], 10, "{run:#?}");
    assert_eq!(
        (run.status("fails"), run.reason("fails")),
        ("failed", "exit code 3")
    );
}

#[test]
fn status_queries_are_batched_for_a_300_job_flow() {
    let Some(_cluster) = cluster(Mode::Dbd) else {
        return;
    };
    let dir = temp_dir();
    let wrappers = command_wrappers(dir.path());
    let mut flow = format!(
        "[flow]\nname = \"many\"\ndefault_backend = \"slurm\"\n{}",
        backend_table("slurm", "submit_rate = \"100/s\"")
    );
    for i in 0..300 {
        let cmd = if i == 7 { "exit 3" } else { "true" };
        flow.push_str(&format!("[[job]]\nname = \"j{i}\"\ncmd = \"{cmd}\"\n"));
    }
    let began = Instant::now();
    let run =
        spawn_flow(dir.path(), "many", &flow, Some(&wrappers)).finish(Duration::from_secs(400));
    eprintln!("300 jobs took {:?}", began.elapsed());
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], 299);
    assert_eq!(run.reason("j7"), "exit code 3");
    assert_eq!(
        calls(dir.path(), "sbatch").len(),
        300,
        "one sbatch per job without arrays"
    );
    // One squeue and at most one sacct per poll interval (1 s), never one call per job: no
    // more calls than the run has intervals, and never three within one interval. (The
    // wrappers log when a call's shell started, which on a loaded machine lags the backend's
    // call by a varying delay: see batch::assert_once_per_interval for why these two bounds
    // hold whatever the lag.)
    let run_s = epoch_secs(run.results["finished_at"].as_str().unwrap())
        - epoch_secs(run.results["started_at"].as_str().unwrap());
    for name in ["squeue", "sacct"] {
        let times = calls(dir.path(), name);
        eprintln!("{name}: {} calls in a {run_s:.1}s run", times.len());
        assert!(
            times.len() as f64 <= run_s / 1.0 + 1.0,
            "{name}: {} calls in a {run_s:.1}s run",
            times.len()
        );
        for three in times.windows(3) {
            assert!(
                three[2] - three[0] >= 1.0,
                "{name} called three times within {:.3}s: a burst of queries",
                three[2] - three[0]
            );
        }
    }
    assert!(!calls(dir.path(), "squeue").is_empty());
    assert!(
        calls(dir.path(), "sacct").len() < 100,
        "sacct is called only while a job needs it"
    );
}

#[test]
fn without_accounting_arrays_and_exit_codes_still_work() {
    let Some(_cluster) = cluster(Mode::NoDbd) else {
        return;
    };
    let dir = temp_dir();
    let wrappers = command_wrappers(dir.path());
    let mut flow = format!(
        "[flow]\nname = \"noacct\"\ndefault_backend = \"slurm\"\n{}",
        backend_table("slurm", "arrays = true")
    );
    for i in 0..20 {
        let cmd = match i {
            3 => "exit 3",
            5 => "kill -9 $$",
            _ => "echo member $FLOWRUN_JOB_NAME",
        };
        flow.push_str(&format!("[[job]]\nname = \"m{i}\"\ncmd = \"{cmd}\"\n"));
    }
    flow.push_str("[[job]]\nname = \"last\"\ncmd = \"true\"\nneeds = [\"m0\"]\n");
    let began = Instant::now();
    let run =
        spawn_flow(dir.path(), "noacct", &flow, Some(&wrappers)).finish(Duration::from_secs(180));
    eprintln!("no-accounting run took {:?}", began.elapsed());
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.results["counts"]["passed"], 19, "{run:#?}");
    assert_eq!(run.reason("m3"), "exit code 3");
    assert!(
        run.reason("m5").starts_with("killed by signal 9"),
        "{}",
        run.reason("m5")
    );
    let log = std::fs::read_to_string(run.job("m0")["log"].as_str().unwrap()).unwrap();
    assert_eq!(log, "member m0\n");
    // The 20 ready jobs of one shape went out as an array, not 20 sbatch calls; `last` alone.
    let sbatch = calls(dir.path(), "sbatch").len();
    assert!(sbatch <= 3, "{sbatch} sbatch calls");
    // sacct said "accounting storage is disabled" once; exit codes then came from scontrol.
    assert!(
        calls(dir.path(), "sacct").len() <= 1,
        "sacct called {} times",
        calls(dir.path(), "sacct").len()
    );
    assert!(!calls(dir.path(), "scontrol").is_empty());
}

/// The re-attach flow of 50 jobs: 4 `held` jobs that run until `marks/release-held` exists
/// (they end while no host watches: `held0` fails with exit 3), 4 `running` jobs that run until
/// `marks/release-running` exists (`running0` exits 4), 36 quick jobs, 2 `wide` jobs asking
/// for every CPU of the node (so they pend while the others run; `wide1` exits 5), and 4
/// `after` jobs that need a running job each. Every job appends a line to its marker file
/// when it runs.
fn reattach_flow(marks: &Path) -> String {
    let m = marks.display();
    let mut s = format!(
        "[flow]\nname = \"reattach\"\ndefault_backend = \"slurm\"\n{}",
        backend_table("slurm", "")
    );
    let mark = |name: &str| format!("echo ran >> {m}/{name}");
    for (group, release) in [("held", "release-held"), ("running", "release-running")] {
        for i in 0..4 {
            let name = format!("{group}{i}");
            let code = match (group, i) {
                ("held", 0) => 3,
                ("running", 0) => 4,
                _ => 0,
            };
            s.push_str(&format!(
                "[[job]]\nname = \"{name}\"\ncmd = \"{}; until test -e {m}/{release}; do sleep 0.2; done; exit {code}\"\n",
                mark(&name)
            ));
        }
    }
    for i in 0..36 {
        let name = format!("quick{i}");
        s.push_str(&format!(
            "[[job]]\nname = \"{name}\"\ncmd = \"{}\"\n",
            mark(&name)
        ));
    }
    for i in 0..2 {
        let name = format!("wide{i}");
        s.push_str(&format!(
            "[[job]]\nname = \"{name}\"\ncmd = \"{}; exit {}\"\nresources = {{ cpus = 16 }}\n",
            mark(&name),
            i * 5
        ));
    }
    for i in 0..4 {
        let name = format!("after{i}");
        s.push_str(&format!(
            "[[job]]\nname = \"{name}\"\ncmd = \"{}\"\nneeds = [\"running{i}\"]\n",
            mark(&name)
        ));
    }
    s
}

/// How many times job `name` ran (lines in its marker file).
fn executions(marks: &Path, name: &str) -> usize {
    std::fs::read_to_string(marks.join(name))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// (status, exit code, reason) per job name.
fn verdicts(run: &Run) -> std::collections::BTreeMap<String, (String, String, String)> {
    run.results["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap().to_string(),
                (
                    j["status"].to_string(),
                    j["exit_code"].to_string(),
                    j["reason"].to_string(),
                ),
            )
        })
        .collect()
}

/// Issue 15's must-show on the real cluster: flowrun is SIGKILLed with Slurm jobs pending and
/// running; they stay on the cluster, some end while no host watches; `--resume` re-attaches
/// every one of them by the native id in the journal (no sbatch for any of them), resolves those
/// that ended from Slurm (the failed one's exit code only sacct knows), tracks the others to
/// their end, submits only what had not been submitted, and ends with the verdicts of an
/// uninterrupted run.
#[test]
fn a_sigkilled_run_resumes_by_re_attaching_its_pending_and_running_slurm_jobs() {
    let Some(_cluster) = cluster(Mode::Dbd) else {
        return;
    };
    // The verdicts of an uninterrupted run of the same flow (nothing holds its jobs).
    let whole = temp_dir();
    let whole_marks = whole.path().join("marks");
    std::fs::create_dir_all(&whole_marks).unwrap();
    for release in ["release-held", "release-running"] {
        std::fs::write(whole_marks.join(release), "").unwrap();
    }
    let uninterrupted =
        flowrun_tests::run_flow(whole.path(), &reattach_flow(&whole_marks), &["-q"]);
    assert_eq!(uninterrupted.code, 1, "{uninterrupted:#?}");
    // held0, running0 and wide1 fail; after0 is skipped (it needs running0).
    assert_eq!(
        uninterrupted.results["counts"]["passed"], 46,
        "{uninterrupted:#?}"
    );

    let dir = temp_dir();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let wrappers = command_wrappers(dir.path());
    let bg = spawn_flow(
        dir.path(),
        "reattach",
        &reattach_flow(&marks),
        Some(&wrappers),
    );
    let (tag, out) = (bg.tag(), dir.path().join("out"));
    let held: Vec<String> = (0..4).map(|i| format!("held{i}")).collect();
    let running: Vec<String> = (0..4).map(|i| format!("running{i}")).collect();
    let wide: Vec<String> = (0..2).map(|i| format!("wide{i}")).collect();
    let on_cluster: Vec<&String> = held.iter().chain(&running).chain(&wide).collect();
    // The crash comes when the quick jobs passed, the held and running ones run, the wide
    // ones pend, and the journal has the native id of every one of them.
    let mut before: std::collections::BTreeMap<String, String> = Default::default();
    wait_until(
        Duration::from_secs(120),
        "the run to reach its crash point",
        || {
            if !out.join("journal").exists() {
                return false;
            }
            let st = status_json(dir.path(), &out);
            let ids: std::collections::BTreeMap<String, String> = st["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|j| j["status"] == "running" && j["native_id"].is_string())
                .map(|j| {
                    (
                        j["name"].as_str().unwrap().into(),
                        j["native_id"].as_str().unwrap().into(),
                    )
                })
                .collect();
            let states: Vec<String> = on_cluster
                .iter()
                .map(|n| slurm_job(&tag, n).map(|j| j.state).unwrap_or_default())
                .collect();
            before = ids;
            st["counts"]["passed"] == 36
                && on_cluster.iter().all(|n| before.contains_key(*n))
                && states[..8].iter().all(|s| s == "RUNNING")
                && states[8..].iter().all(|s| s == "PENDING")
        },
    );
    send_signal_kill(&bg);
    let crashed = bg.finish(Duration::from_secs(30));
    assert_eq!(crashed.code, -1, "SIGKILLed: {crashed:#?}");
    let submitted_before = calls(dir.path(), "sbatch").len();
    assert_eq!(
        submitted_before, 46,
        "every job but the 4 `after` ones went out"
    );

    // SIGKILL cancels nothing (the plugin died with the host; no watchdog touches Slurm jobs).
    std::thread::sleep(Duration::from_secs(2));
    for name in &on_cluster {
        let job = slurm_job(&tag, name).unwrap_or_else(|| panic!("{name} left the cluster"));
        assert!(
            ["RUNNING", "PENDING"].contains(&job.state.as_str()),
            "{name}: {job:?}"
        );
        assert_eq!(
            before[*name], job.id,
            "{name}: the journal holds its Slurm id"
        );
    }
    // The held jobs end while no host watches.
    std::fs::write(marks.join("release-held"), "").unwrap();
    wait_until(
        Duration::from_secs(60),
        "the held jobs to end unwatched",
        || {
            held.iter().all(|n| {
                slurm_job(&tag, n)
                    .is_some_and(|j| ["COMPLETED", "FAILED"].contains(&j.state.as_str()))
            })
        },
    );

    // --dry-run --resume names the Slurm job of each job to re-attach, and submits nothing.
    let plan = flowrun(dir.path())
        .arg("run")
        .arg(dir.path().join("flow.toml"))
        .args(["--dry-run", "--resume"])
        .arg(&out)
        .env("PATH", path_with(&wrappers))
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("36 of 50 jobs passed there unchanged"),
        "{plan}"
    );
    for name in &on_cluster {
        let id = &before[*name];
        assert!(
            plan.contains(&format!(
                "  {name} (on its backend as {id} when the run stopped"
            )),
            "{plan}"
        );
    }
    assert_eq!(calls(dir.path(), "sbatch").len(), submitted_before);

    let resumed_at = Instant::now();
    let resumed_epoch = flowrun_tests::epoch_now();
    let resume = resume_in_background(dir.path(), &wrappers);
    // The resumed host re-attached the held jobs and resolved them; then the running ones
    // may end.
    wait_until(
        Duration::from_secs(60),
        "the held jobs to be resolved",
        || {
            let st = status_json(dir.path(), &out);
            st["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|j| j["name"].as_str().is_some_and(|n| n.starts_with("held")))
                .all(|j| j["status"] != "running")
                && st["host_alive"] == true
        },
    );
    std::fs::write(marks.join("release-running"), "").unwrap();
    let run = resume.finish(Duration::from_secs(180));
    eprintln!("resumed run took {:?}", resumed_at.elapsed());
    assert_eq!(run.code, 1, "{run:#?}");

    // No sbatch for any re-attached job: only the `after` jobs were submitted after the crash
    // (after0 is skipped: running0 failed), and every job that ran, ran exactly once.
    let sbatch = calls(dir.path(), "sbatch").len();
    assert_eq!(
        sbatch - submitted_before,
        3,
        "sbatch calls after the resume"
    );
    for j in run.results["jobs"].as_array().unwrap() {
        let name = j["name"].as_str().unwrap();
        let ran = usize::from(j["status"] != "skipped");
        assert_eq!(executions(&marks, name), ran, "{name}: executions");
    }
    // The verdicts are those of the uninterrupted run, the failed held job's exit code among
    // them (Slurm's accounting was asked after the resume).
    assert_eq!(verdicts(&run), verdicts(&uninterrupted));
    assert_eq!(run.job("held0")["exit_code"], 3, "{run:#?}");
    assert_eq!(run.job("running0")["exit_code"], 4, "{run:#?}");
    assert_eq!(run.job("wide1")["exit_code"], 5, "{run:#?}");
    assert!(
        calls(dir.path(), "sacct")
            .iter()
            .any(|t| *t > resumed_epoch),
        "no sacct call after the resume"
    );
    // results.json says the run was resumed; a re-attached job keeps its attempt and id.
    assert_eq!(run.results["resumes"], 1, "{run:#?}");
    for name in &on_cluster {
        let job = run.job(name);
        assert_eq!(job["attempt"], 1, "{name}: {job:#}");
        assert_eq!(job["native_id"], before[*name].as_str(), "{name}: {job:#}");
    }
    // The resumed host kept the run's Slurm job name: the 49 jobs that went out carry it.
    assert_eq!(slurm_jobs(&tag).len(), 49, "{:?}", slurm_jobs(&tag));
}

fn send_signal_kill(bg: &Background) {
    flowrun_tests::send_signal(&bg.child, libc::SIGKILL);
}

/// `flowrun run FLOW --resume OUT` in the background, with the call-counting wrappers first on
/// PATH.
fn resume_in_background(dir: &Path, wrappers: &Path) -> Background {
    let mut cmd = flowrun(dir);
    cmd.arg("run")
        .arg(dir.join("flow.toml"))
        .arg("-q")
        .arg("--resume")
        .arg(dir.join("out"))
        .env("PATH", path_with(wrappers))
        .stdout(File::create(dir.join("stdout")).unwrap())
        .stderr(File::create(dir.join("stderr")).unwrap());
    let child = cmd.spawn().expect("start flowrun --resume");
    Background {
        child,
        dir: dir.to_path_buf(),
        // A resumed run keeps the tag of the run it continues.
        tag: std::sync::OnceLock::new(),
        tag_prefix: "flowrun-".into(),
    }
}

/// `PATH` with `dir` first.
fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}
