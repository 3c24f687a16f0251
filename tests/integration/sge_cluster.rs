//! The real single-node Son of Grid Engine of `tests/cluster/sge-*`: a smoke test of the
//! commands and formats the Grid Engine backend relies on (`qsub -terse`, `qstat -xml`,
//! `qacct -j`, `qdel`'s messages, arrays with `-t`/`-tc`, `h_rt`) and of the qmaster outage
//! script. Privileged: it needs root and installs Debian's gridengine packages on first use
//! (`tests/cluster/sge-up`), so it runs only with `FLOWRUN_PRIVILEGED_TESTS=1`. The tests take
//! the cluster one at a time (one of them stops its qmaster).

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use flowrun_tests::{privileged, workspace_root};
use parking_lot::{Mutex, MutexGuard};

static CLUSTER: Mutex<()> = Mutex::new(());
/// Taken by every user of the test Grid Engine (tests, benchmarks) through flock.
const CLUSTER_LOCK_FILE: &str = "/var/tmp/flowrun-sge.lock";

struct ClusterLock {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

/// Takes the cluster and brings it up; None when privileged tests are off.
#[allow(clippy::incompatible_msrv)] // File::lock: Rust 1.89; the CI toolchain is newer
fn cluster() -> Option<ClusterLock> {
    if !privileged("root and a Grid Engine (tests/cluster/sge-up installs Debian's)") {
        return None;
    }
    let guard = CLUSTER.lock();
    let file = File::create(CLUSTER_LOCK_FILE).expect("create the cluster lock file");
    file.lock().expect("lock the cluster lock file");
    let out = Command::new(script("sge-up"))
        .output()
        .expect("run tests/cluster/sge-up");
    assert!(
        out.status.success(),
        "sge-up failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(ClusterLock {
        _file: file,
        _guard: guard,
    })
}

fn script(name: &str) -> PathBuf {
    workspace_root().join("tests/cluster").join(name)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Run {
    let out: Output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("SGE_ROOT", "/var/lib/gridengine")
        .env("SGE_CELL", "default")
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A job script in DIR: prints its task, sleeps $1 seconds, exits with $2.
fn job_script(dir: &Path) -> String {
    let path = dir.join("job.sh");
    std::fs::write(
        &path,
        "#!/bin/bash\necho \"task ${SGE_TASK_ID} of job ${JOB_ID}\"\n[[ -n $1 ]] && sleep \"$1\"\nexit ${2:-0}\n",
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path.display().to_string()
}

fn qsub_terse(dir: &Path, args: &[&str]) -> String {
    let out = run(
        dir,
        "qsub",
        &[&["-terse", "-cwd", "-j", "y"], args].concat(),
    );
    assert_eq!(out.code, 0, "qsub {args:?}: {}", out.stderr);
    assert!(
        out.stdout.ends_with('\n') && out.stdout.lines().count() == 1,
        "{:?}",
        out.stdout
    );
    out.stdout.trim().to_string()
}

/// The `qacct -j ID` record as KEY -> VALUE (the first record; several tasks: taskid-keyed by
/// the caller).
fn qacct(dir: &Path, id: &str) -> Option<Vec<(String, String)>> {
    let out = run(dir, "qacct", &["-j", id]);
    if out.code != 0 {
        return None;
    }
    Some(
        out.stdout
            .lines()
            .filter(|l| !l.starts_with('='))
            .filter_map(|l| {
                let (k, v) = l.split_once(char::is_whitespace)?;
                Some((k.to_string(), v.trim().to_string()))
            })
            .collect(),
    )
}

fn field<'a>(record: &'a [(String, String)], key: &str) -> &'a str {
    record
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {record:?}"))
}

/// Waits for the job's accounting record.
fn wait_qacct(dir: &Path, id: &str, limit: Duration) -> Vec<(String, String)> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(record) = qacct(dir, id) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} not in qacct after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `qstat -xml` as (job number, state, list: running|pending, tasks) per job_list element.
fn qstat_xml(dir: &Path) -> Vec<(String, String, String, Option<String>)> {
    let out = run(dir, "qstat", &["-xml"]);
    assert_eq!(out.code, 0, "qstat -xml: {}", out.stderr);
    let doc = roxmltree::Document::parse(&out.stdout).expect("qstat -xml is XML");
    let text = |node: roxmltree::Node, tag: &str| {
        node.children()
            .find(|c| c.has_tag_name(tag))
            .and_then(|c| c.text())
            .map(str::to_string)
    };
    doc.descendants()
        .filter(|n| n.has_tag_name("job_list"))
        .map(|n| {
            (
                text(n, "JB_job_number").unwrap_or_default(),
                text(n, "state").unwrap_or_default(),
                n.attribute("state").unwrap_or_default().to_string(),
                text(n, "tasks"),
            )
        })
        .collect()
}

#[test]
fn sge_formats_the_grid_engine_backend_parses() {
    let Some(_cluster) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let job = job_script(dir);

    // qsub -terse prints the id alone; an array prints ID.FIRST-LAST:STEP
    let exited = qsub_terse(dir, &["-N", "exit3", "-o", "exit3.out", &job, "", "3"]);
    assert!(exited.chars().all(|c| c.is_ascii_digit()), "{exited}");
    let out = run(
        dir,
        "qsub",
        &["-cwd", "-N", "plain", "-o", "/dev/null", "-j", "y", &job],
    );
    assert!(
        out.stdout.starts_with("Your job ")
            && out.stdout.ends_with(" (\"plain\") has been submitted\n"),
        "{:?}",
        out.stdout
    );
    let held = qsub_terse(dir, &["-h", "-N", "held", "-o", "/dev/null", &job]);
    let running = qsub_terse(dir, &["-N", "running", "-o", "/dev/null", &job, "60"]);
    let limited = qsub_terse(
        dir,
        &[
            "-N",
            "limited",
            "-o",
            "/dev/null",
            "-l",
            "h_rt=0:0:2",
            &job,
            "60",
        ],
    );

    // qstat -xml: running jobs under queue_info, pending ones (qw, hqw) under job_info
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = qstat_xml(dir);
        let state = |id: &str| {
            jobs.iter()
                .find(|j| j.0 == id)
                .map(|j| (j.1.clone(), j.2.clone()))
        };
        if state(&running) == Some(("r".into(), "running".into())) {
            assert_eq!(
                state(&held),
                Some(("hqw".into(), "pending".into())),
                "{jobs:?}"
            );
            assert!(
                jobs.iter()
                    .filter(|j| j.0 == running)
                    .all(|j| j.3.is_none()),
                "a plain job has no <tasks>"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {running} never ran: {jobs:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // qdel: a running job is registered for deletion, a pending one deleted, an unknown
    // id denied (rc 1)
    let out = run(dir, "qdel", &[&running]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout
            .ends_with(&format!(" has registered the job {running} for deletion\n")),
        "{:?}",
        out.stdout
    );
    let out = run(dir, "qdel", &[&held]);
    assert!(
        out.stdout.ends_with(&format!(" has deleted job {held}\n")),
        "{:?}",
        out.stdout
    );
    let out = run(dir, "qdel", &["99999999"]);
    assert_eq!(out.code, 1);
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("denied: job \"99999999\" does not exist"),
        "{} {}",
        out.stdout,
        out.stderr
    );

    // qacct: the job's own exit code; h_rt and qdel kills as failed 37 / 100 with 137
    let record = wait_qacct(dir, &exited, Duration::from_secs(60));
    assert_eq!(
        (field(&record, "failed"), field(&record, "exit_status")),
        ("0", "3")
    );
    assert_eq!(field(&record, "jobname"), "exit3");
    let record = wait_qacct(dir, &limited, Duration::from_secs(60));
    assert!(field(&record, "failed").starts_with("37 "), "{record:?}");
    assert!(
        field(&record, "exit_status").starts_with("137"),
        "{record:?}"
    );
    let record = wait_qacct(dir, &running, Duration::from_secs(60));
    assert!(field(&record, "failed").starts_with("100 "), "{record:?}");
    assert!(
        field(&record, "exit_status").starts_with("137"),
        "{record:?}"
    );
    let out = run(dir, "qacct", &["-j", "99999999"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("error: job id 99999999 not found"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("exit3.out")).unwrap(),
        format!("task undefined of job {exited}\n")
    );
}

#[test]
fn sge_array_tasks_respect_their_concurrency_limit() {
    let Some(_cluster) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let job = job_script(dir);
    let array = qsub_terse(
        dir,
        &[
            "-N",
            "arr",
            "-o",
            "arr.$TASK_ID.out",
            "-t",
            "1-6",
            "-tc",
            "2",
            &job,
            "2",
        ],
    );
    let id = array.split('.').next().unwrap().to_string();
    assert_eq!(array, format!("{id}.1-6:1"));
    let (mut most, deadline) = (0, Instant::now() + Duration::from_secs(120));
    loop {
        let jobs = qstat_xml(dir);
        let running = jobs
            .iter()
            .filter(|j| j.0 == id && j.2 == "running")
            .count();
        assert!(running <= 2, "more than 2 tasks ran at once: {jobs:?}");
        most = most.max(running);
        if !jobs.iter().any(|j| j.0 == id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the array did not finish: {jobs:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(most, 2, "the tasks never ran two at a time");
    let out = run(dir, "qacct", &["-j", &id]);
    let mut tasks: Vec<u32> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("taskid"))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    tasks.sort();
    assert_eq!(tasks, [1, 2, 3, 4, 5, 6], "{}", out.stdout);
    for t in 1..=6 {
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("arr.{t}.out"))).unwrap(),
            format!("task {t} of job {id}\n")
        );
    }
}

#[test]
fn sge_qmaster_outage_fails_clients_fast_and_jobs_finish_through_it() {
    let Some(_cluster) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let job = job_script(dir);
    let id = qsub_terse(dir, &["-N", "through", "-o", "through.out", &job, "8", "4"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !qstat_xml(dir).iter().any(|j| j.0 == id && j.1 == "r") {
        assert!(Instant::now() < deadline, "job {id} never ran");
        std::thread::sleep(Duration::from_millis(250));
    }
    let ctl = script("sge-ctl").display().to_string();
    let out = run(dir, &ctl, &["stop"]);
    assert_eq!(out.code, 0, "sge-ctl stop: {}", out.stderr);
    let started = Instant::now();
    let out = run(dir, "qstat", &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("unable to send message to qmaster"),
        "{}",
        out.stderr
    );
    let out = run(dir, "qsub", &["-terse", "-cwd", "-o", "/dev/null", &job]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("Unable to run job"), "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "clients blocked instead of failing"
    );
    // qacct reads the accounting file: it answers without qmaster
    let out = run(dir, "qacct", &["-j", "99999999"]);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    std::thread::sleep(Duration::from_secs(2));
    let out = run(dir, &ctl, &["start"]);
    assert_eq!(out.code, 0, "sge-ctl start: {}", out.stderr);
    // the job ran on under sge_execd and is accounted once qmaster hears of it
    let record = wait_qacct(dir, &id, Duration::from_secs(120));
    assert_eq!(
        (field(&record, "failed"), field(&record, "exit_status")),
        ("0", "4")
    );
}
