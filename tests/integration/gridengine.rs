//! The Grid Engine backend (`kind = "gridengine"`) through the CLI, against the real
//! single-node Son of Grid Engine of `tests/cluster/sge-up` on this machine. Privileged (root
//! and the cluster): run with `FLOWRUN_PRIVILEGED_TESTS=1`. Each test brings the cluster up
//! (`sge-up` is idempotent and installs Grid Engine if missing), and the tests run one at a
//! time because they share it (one stops its qmaster).

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use flowrun_tests::{privileged, spawn_flow, wait_until, workspace_root, Background};
use parking_lot::{Mutex, MutexGuard};

use crate::batch;

/// Serializes the tests of this binary; the file lock serializes them with other processes
/// (a benchmark) using the same cluster.
static CLUSTER: Mutex<()> = Mutex::new(());
const CLUSTER_LOCK_FILE: &str = "/var/tmp/flowrun-sge.lock";

/// The cluster, held by one test, and the test's directory.
struct Sge {
    dir: tempfile::TempDir,
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

impl Sge {
    /// Takes the cluster and brings it up; `None` without the privileged switch.
    #[allow(clippy::incompatible_msrv)] // File::lock: Rust 1.89; the CI toolchain is newer
    fn new() -> Option<Sge> {
        if !privileged("root and the single-node Grid Engine of tests/cluster/sge-up") {
            return None;
        }
        let guard = CLUSTER.lock();
        let file = File::create(CLUSTER_LOCK_FILE).expect("create the cluster lock file");
        file.lock().expect("lock the cluster lock file");
        let out = Command::new(script("sge-up")).output().expect("run sge-up");
        assert!(
            out.status.success(),
            "sge-up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = tempfile::Builder::new()
            .prefix("flowrun-sge-test-")
            .tempdir()
            .unwrap();
        Some(Sge {
            dir,
            _file: file,
            _guard: guard,
        })
    }

    fn work(&self) -> &Path {
        self.dir.path()
    }

    fn path() -> String {
        std::env::var("PATH").unwrap_or_default()
    }

    /// A flow of `jobs` on one backend `sge` with `extra` keys.
    fn flow(&self, name: &str, extra: &str, jobs: &str) -> String {
        format!(
            "[flow]\nname = \"{name}\"\ndefault_backend = \"sge\"\n\
             [backends.sge]\nkind = \"gridengine\"\npoll_interval = \"1s\"\n{extra}\n{jobs}"
        )
    }

    fn spawn(&self, name: &str, flow: &str) -> Background {
        spawn_flow(self.work(), name, flow, &[("PATH", Sge::path())])
    }

    /// The run's jobs Grid Engine still holds (pending, running or in error): (id, task
    /// range or "", state), from `qstat -xml` of every user.
    fn queued(&self, tag: &str) -> Vec<[String; 3]> {
        let out = call("qstat", &["-xml", "-u", "*"]);
        assert!(out.status.success(), "qstat: {out:?}");
        let xml = String::from_utf8_lossy(&out.stdout);
        let field = |job: &str, tag: &str| {
            let open = format!("<{tag}>");
            let start = job.find(&open)? + open.len();
            let len = job[start..].find("</")?;
            Some(job[start..start + len].to_string())
        };
        xml.split("<job_list")
            .skip(1)
            .filter(|job| field(job, "JB_name").as_deref() == Some(tag))
            .map(|job| {
                [
                    field(job, "JB_job_number").unwrap_or_default(),
                    field(job, "tasks").unwrap_or_default(),
                    field(job, "state").unwrap_or_default(),
                ]
            })
            .collect()
    }
}

fn script(name: &str) -> PathBuf {
    workspace_root().join("tests/cluster").join(name)
}

fn call(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

#[test]
fn a_50_job_dag_passes_in_dependency_order() {
    let Some(sge) = Sge::new() else { return };
    let (jobs, needs) = batch::dag_50();
    let run = sge
        .spawn("dag50", &sge.flow("dag50", "", &jobs))
        .finish(Duration::from_secs(600));
    batch::assert_dag_50(&run, &needs);
}

#[test]
fn failures_carry_their_grid_engine_reasons() {
    let Some(sge) = Sge::new() else { return };
    let id_file = sge.work().join("outside.id");
    let jobs = format!(
        "[[job]]\nname = \"exit3\"\ncmd = \"exit 3\"\n\
         [[job]]\nname = \"exit99\"\ncmd = \"exit 99\"\n\
         [[job]]\nname = \"exit100\"\ncmd = \"exit 100\"\n\
         [[job]]\nname = \"runlimit\"\ncmd = \"sleep 600\"\ntimeout = \"3s\"\n\
         [[job]]\nname = \"outside\"\ncmd = \"echo $JOB_ID > {}; sleep 600\"\n",
        id_file.display()
    );
    let bg = sge.spawn("reasons", &sge.flow("reasons", "", &jobs));
    let tag = bg.tag();
    wait_until(Duration::from_secs(120), "job `outside` to run", || {
        id_file.exists() && !std::fs::read_to_string(&id_file).unwrap().trim().is_empty()
    });
    let id = std::fs::read_to_string(&id_file)
        .unwrap()
        .trim()
        .to_string();
    let out = call("qdel", &[&id]);
    assert!(out.status.success(), "{out:?}");
    let run = bg.finish(Duration::from_secs(300));
    assert_eq!(run.code, 1, "{run:#?}");
    let reason = |name| (run.status(name), run.reason(name));
    assert_eq!(reason("exit3"), ("failed", "exit code 3"));
    assert_eq!(run.job("exit3")["exit_code"], 3);
    // 99 would make Grid Engine reschedule the job for ever, 100 hold it in error: they fail as
    // anywhere else.
    assert_eq!(reason("exit99"), ("failed", "exit code 99"));
    assert_eq!(reason("exit100"), ("failed", "exit code 100"));
    assert_eq!(run.job("exit100")["exit_code"], 100);
    let (status, why) = reason("runlimit");
    assert_eq!(status, "failed", "{run:#?}");
    assert!(why.starts_with("Grid Engine limit (failed 37"), "{why}");
    assert_eq!(reason("outside"), ("failed", "killed outside flowrun"));
    assert_eq!(run.job("outside")["native_id"], id.as_str());
    assert!(sge.queued(&tag).is_empty(), "{:?}", sge.queued(&tag));
}

/// `count` sleepers and a job waiting in flowrun for one of them; returns once they are all
/// in Grid Engine and `running` of them run.
fn sleepers(sge: &Sge, name: &str, count: usize, running: usize) -> (Background, String) {
    let jobs = batch::sleepers(count);
    let bg = sge.spawn(name, &sge.flow(name, "", &jobs));
    let tag = bg.tag();
    wait_until(
        Duration::from_secs(300),
        "the sleepers to be queued",
        || {
            let jobs = sge.queued(&tag);
            jobs.len() == count && jobs.iter().filter(|j| j[2] == "r").count() >= running
        },
    );
    (bg, tag)
}

#[test]
fn ctrl_c_leaves_nothing_of_the_run_queued() {
    let Some(sge) = Sge::new() else { return };
    // 16 slots: two wait in Grid Engine.
    let (bg, tag) = sleepers(&sge, "ctrlc", 18, 16);
    assert_eq!(
        sge.queued(&tag).iter().filter(|j| j[2] == "qw").count(),
        2,
        "two pending"
    );
    bg.signal("INT");
    let run = bg.finish(Duration::from_secs(120));
    assert_eq!(run.code, 130, "{run:#?}");
    assert_eq!(run.results["interrupted"], true);
    for i in 0..18 {
        assert_eq!(run.status(&format!("sleep{i}")), "killed", "{run:#?}");
    }
    assert_eq!(run.status("after"), "skipped");
    assert!(sge.queued(&tag).is_empty(), "left: {:?}", sge.queued(&tag));
}

#[test]
fn a_flowrun_kill_ends_the_jobs_killed() {
    let Some(sge) = Sge::new() else { return };
    let (bg, tag) = sleepers(&sge, "killed", 3, 3);
    bg.signal("TERM");
    let run = bg.finish(Duration::from_secs(120));
    assert_eq!(run.code, 143, "{run:#?}");
    for i in 0..3 {
        let name = format!("sleep{i}");
        assert_eq!(run.status(&name), "killed", "{run:#?}");
        assert!(
            run.reason(&name).starts_with("killed by SIGTERM"),
            "{run:#?}"
        );
    }
    assert!(sge.queued(&tag).is_empty(), "left: {:?}", sge.queued(&tag));
    // The kill reached Grid Engine: qacct has the jobs ended by qdel, not by their end.
    let out = call("qacct", &["-j", &tag]);
    let acct = String::from_utf8_lossy(&out.stdout);
    assert_eq!(acct.matches("failed       100").count(), 3, "{acct}");
}

#[test]
fn a_20_second_qmaster_outage_is_survived() {
    let Some(sge) = Sge::new() else { return };
    let jobs = batch::outage_flow();
    let mut bg = sge.spawn("outage", &sge.flow("outage", "", &jobs));
    let tag = bg.tag();
    wait_until(Duration::from_secs(300), "the 6 roots to run", || {
        sge.queued(&tag).iter().filter(|j| j[2] == "r").count() == 6
    });
    let began = Instant::now();
    let outage = call(script("sge-ctl").to_str().unwrap(), &["outage", "20"]);
    assert!(outage.status.success(), "sge-ctl outage: {outage:?}");
    assert!(began.elapsed() >= Duration::from_secs(20));
    assert!(
        bg.child.try_wait().unwrap().is_none(),
        "the run ended during the outage"
    );
    let run = bg.finish(Duration::from_secs(300));
    batch::assert_outage(&run);
}

#[test]
fn status_queries_are_batched_for_a_300_job_flow() {
    let Some(sge) = Sge::new() else { return };
    let commands = ["qsub", "qstat", "qacct", "qdel"];
    let shims = batch::count_calls(sge.work(), &Sge::path(), &commands);
    let jobs = batch::many(300);
    let flow = sge.flow("many", "submit_rate = \"100/s\"", &jobs);
    let env = [(
        "PATH".to_string(),
        format!("{}:{}", shims.display(), Sge::path()),
    )];
    let began = Instant::now();
    let run = spawn_flow(sge.work(), "many", &flow, &env).finish(Duration::from_secs(900));
    let took = began.elapsed().as_secs_f64();
    batch::assert_many(&run, 300);
    assert_eq!(batch::calls(&shims, "qsub", 1.0).0, 300, "one qsub per job");
    // One qstat and at most one qacct per poll interval (1 s) for the whole run.
    for command in ["qstat", "qacct"] {
        batch::assert_once_per_interval(&shims, command, took);
    }
    assert!(batch::calls(&shims, "qstat", 1.0).0 >= 1);
    assert_eq!(batch::calls(&shims, "qdel", 1.0).0, 0, "nothing to delete");
}

#[test]
fn arrays_keep_to_their_slot_limit() {
    let Some(sge) = Sge::new() else { return };
    let shims = batch::count_calls(sge.work(), &Sge::path(), &["qsub", "qstat", "qacct"]);
    let trace = sge.work().join("trace");
    let jobs = batch::traced_members(&trace, "JOB_ID");
    let flow = sge.flow("arrays", "arrays = true\narray_slot_limit = 2", &jobs);
    let env = [(
        "PATH".to_string(),
        format!("{}:{}", shims.display(), Sge::path()),
    )];
    let run = spawn_flow(sge.work(), "arrays", &flow, &env).finish(Duration::from_secs(300));
    let qsub = batch::call_args(&shims, "qsub");
    assert!(qsub.len() <= 3, "{qsub:?}");
    assert!(
        qsub.iter().any(|a| a.contains(" -tc 2 ")),
        "an array with its slot limit: {qsub:?}"
    );
    batch::assert_members(&run, &trace, qsub.len());
}

#[test]
fn patterns_read_the_jobs_own_output() {
    let Some(sge) = Sge::new() else { return };
    let run = sge
        .spawn(
            "patterns",
            &sge.flow("patterns", "", batch::patterns_flow()),
        )
        .finish(Duration::from_secs(300));
    batch::assert_patterns(&run);
}
