//! Tests of the backend against the real single-node Slurm of tests/cluster (started here if
//! it is not up), through the test kit's fake host. They need root and the cluster, so they
//! run only with `FLOWRUN_PRIVILEGED_TESTS=1` (the test command sets it); the policy is tested
//! without a cluster in `policy_tests.rs`.

use std::{fs::File, time::Duration};

use flowrun_plugin_sdk::{EndKind, Event, JobEventKind, JobId, SubmitAnswerKind};
use flowrun_plugin_testkit::{Contract, FakeHost, TestBackend, TestJob};

use parking_lot::{Mutex, MutexGuard};

use crate::create;

/// Tests in this binary share one cluster; they run one at a time.
static CLUSTER: Mutex<()> = Mutex::new(());

/// Holds the cluster: the in-process mutex, then the file lock that the end-to-end tests
/// (tests/integration/slurm.rs) and benches/slurm.sh take too.
struct ClusterLock {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

/// The cluster for this test, or `None` (after saying so) without the privileged switch.
#[allow(clippy::incompatible_msrv)] // File::lock: Rust 1.89; the CI toolchain is newer
fn cluster() -> Option<ClusterLock> {
    if std::env::var("FLOWRUN_PRIVILEGED_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED (needs FLOWRUN_PRIVILEGED_TESTS=1): root and the single-node Slurm cluster of tests/cluster"
        );
        return None;
    }
    let guard = CLUSTER.lock();
    let file = File::create("/var/tmp/flowrun-slurm.lock").expect("create the cluster lock file");
    file.lock().expect("lock the cluster lock file");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/cluster/slurm-up");
    let out = std::process::Command::new(script)
        .output()
        .expect("run tests/cluster/slurm-up");
    assert!(
        out.status.success(),
        "slurm-up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(ClusterLock {
        _file: file,
        _guard: guard,
    })
}

/// A fake host with its run directory where slurmd can write, and a backend made from
/// `config`.
fn fake_host(config: &str) -> (tempfile::TempDir, FakeHost, TestBackend) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let host = FakeHost::new(dir.path());
    let backend = host.backend(create, config).unwrap();
    (dir, host, backend)
}

#[test]
fn keeps_the_backend_contract() {
    let Some(_c) = cluster() else { return };
    // Slurm's time limits are whole minutes, and it kills a job some seconds after its limit:
    // the contract's 2 s timeout job ends after a minute or more.
    Contract::new(create, "poll_interval = \"500ms\"")
        .wait(Duration::from_secs(240))
        .check()
        .unwrap();
}

fn attr<'a>(e: &'a Event, key: &str) -> Option<&'a str> {
    e.attr(key)
}

fn squeue_state(native_id: &str) -> String {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%T", "-j", native_id])
        .output()
        .expect("run squeue");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stat(stats: &str, key: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_prefix('=')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {key} in stats:\n{stats}"))
}

#[test]
fn a_job_killed_while_its_sbatch_is_in_flight_is_cancelled_once_its_id_is_known() {
    let Some(_c) = cluster() else { return };
    // Two submit threads and one sbatch per second: the second job's sbatch waits for its slot
    // (in flight, no id yet) when the kill comes.
    let (_dir, mut host, backend) =
        fake_host("poll_interval = \"500ms\"\nsubmit_rate = \"1/s\"\nsubmit_threads = 2");
    let first = host.shell_job("first", "sleep 300");
    let second = host.shell_job("second", "sleep 300");
    let ids = [first.id(), second.id()];
    let answers = backend.submit(&[first, second]);
    assert!(
        answers
            .iter()
            .all(|a| a.kind() == SubmitAnswerKind::ACCEPTED),
        "{answers:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    backend.kill(&ids[1..]);
    let end = host
        .wait_end(ids[1], Duration::from_secs(60))
        .expect("the killed job ends");
    assert_eq!(end.end(), EndKind::KILLED, "{end:?}");
    let native = attr(&end, "native_id")
        .expect("it was submitted, then cancelled")
        .to_string();
    assert_eq!(squeue_state(&native), "CANCELLED");
    backend.kill(&ids[..1]);
    let end = host
        .wait_end(ids[0], Duration::from_secs(60))
        .expect("the first job ends");
    assert_eq!(end.end(), EndKind::KILLED, "{end:?}");
    backend.shutdown();
}

#[test]
fn same_shape_jobs_go_out_as_one_array() {
    let Some(_c) = cluster() else { return };
    let (_dir, mut host, backend) = fake_host("poll_interval = \"500ms\"\narrays = true");
    let mut jobs = Vec::new();
    for i in 0..6 {
        let cmd = match i {
            2 => "exit 4".to_string(),
            5 => "sleep 300".to_string(),
            _ => format!("echo member {i}"),
        };
        jobs.push(host.shell_job(&format!("m{i}"), &cmd));
    }
    let ids: Vec<JobId> = jobs.iter().map(TestJob::id).collect();
    let logs: Vec<String> = jobs
        .iter()
        .map(|j| j.job().log_path().to_string())
        .collect();
    let answers = backend.submit(&jobs);
    assert!(answers
        .iter()
        .all(|a| a.kind() == SubmitAnswerKind::ACCEPTED));
    for (i, id) in ids.iter().enumerate().take(5) {
        let end = host
            .wait_end(*id, Duration::from_secs(60))
            .expect("member ends");
        let native = attr(&end, "native_id").unwrap_or("");
        assert!(
            native.contains('_'),
            "array member ids look like 123_4: {native}"
        );
        if i == 2 {
            assert_eq!(end.exit_code(), Some(4), "{end:?}");
        } else {
            assert_eq!(end.exit_code(), Some(0), "{end:?}");
            assert_eq!(
                std::fs::read_to_string(&logs[i]).unwrap(),
                format!("member {i}\n")
            );
        }
    }
    // One member can be cancelled alone.
    backend.kill(&ids[5..]);
    let end = host
        .wait_end(ids[5], Duration::from_secs(60))
        .expect("the killed member ends");
    assert_eq!(end.end(), EndKind::KILLED, "{end:?}");
    let stats = backend.stats();
    assert_eq!(stat(&stats, "sbatch_calls"), 1, "{stats}");
    assert_eq!(stat(&stats, "arrays_submitted"), 1, "{stats}");
    backend.shutdown();
}

#[test]
fn shutdown_cancels_what_still_runs() {
    let Some(_c) = cluster() else { return };
    let (_dir, mut host, backend) = fake_host("poll_interval = \"500ms\"");
    let job = host.shell_job("long", "sleep 300");
    let id = job.id();
    backend.submit(&[job]);
    // Wait until Slurm runs it.
    let started = host
        .next_event(Duration::from_secs(60))
        .expect("the job starts");
    assert_eq!((started.id(), started.kind()), (id, JobEventKind::STARTED));
    let native = attr(&started, "native_id").unwrap().to_string();
    backend.shutdown();
    let end = host
        .wait_end(id, Duration::from_secs(1))
        .expect("shutdown ends the job");
    assert_eq!(end.end(), EndKind::KILLED, "{end:?}");
    assert_eq!(squeue_state(&native), "CANCELLED");
    let answers = backend.submit(&[host.shell_job("late", "true")]);
    assert_eq!(answers[0].kind(), SubmitAnswerKind::REJECTED);
}

#[test]
fn jobs_that_cannot_be_submitted_fail_with_clear_reasons() {
    let Some(_c) = cluster() else { return };
    let (_dir, mut host, backend) = fake_host("partition = \"nosuch\"");
    let bad_partition = host.shell_job("bad-partition", "true");
    let bad_cwd = host
        .shell_job("bad-cwd", "true")
        .cwd("/nonexistent/flowrun-cwd");
    let interactive = host.shell_job("interactive", "true").interactive(true);
    let ids = [bad_partition.id(), bad_cwd.id()];
    let answers = backend.submit(&[bad_partition, bad_cwd, interactive]);
    assert_eq!(answers[0].kind(), SubmitAnswerKind::ACCEPTED);
    assert_eq!(answers[1].kind(), SubmitAnswerKind::ACCEPTED);
    assert_eq!(answers[2].kind(), SubmitAnswerKind::REJECTED);
    assert!(
        answers[2].message().contains("interactive"),
        "{:?}",
        answers[2]
    );

    let end = host.wait_end(ids[0], Duration::from_secs(60)).unwrap();
    assert_eq!(end.end(), EndKind::FAILED);
    assert!(
        end.reason().starts_with("sbatch failed: ") && end.reason().contains("nosuch"),
        "{}",
        end.reason()
    );
    let end = host.wait_end(ids[1], Duration::from_secs(60)).unwrap();
    assert_eq!(end.end(), EndKind::FAILED);
    assert_eq!(
        end.reason(),
        "working directory does not exist: /nonexistent/flowrun-cwd"
    );
    backend.shutdown();
}

#[test]
fn a_job_slurm_can_never_start_fails_instead_of_pending_forever() {
    let Some(_c) = cluster() else { return };
    let (_dir, mut host, backend) = fake_host("poll_interval = \"500ms\"\nlost_after = \"2s\"");
    // The test cluster's only node has 16 CPUs: Slurm accepts this and pends it with reason
    // PartitionConfig, forever.
    let huge = host.shell_job("huge", "true").resources(64, None);
    let id = huge.id();
    backend.submit(&[huge]);
    let end = host
        .wait_end(id, Duration::from_secs(60))
        .expect("the job ends");
    assert_eq!(end.end(), EndKind::FAILED, "{end:?}");
    assert!(
        end.reason().contains("will never start") && end.reason().contains("PartitionConfig"),
        "{}",
        end.reason()
    );
    assert_eq!(squeue_state(attr(&end, "native_id").unwrap()), "CANCELLED");
    backend.shutdown();
}

#[test]
fn finished_jobs_report_their_cpu_time_and_peak_memory_from_sacct() {
    let Some(_c) = cluster() else { return };
    let (_dir, mut host, backend) = fake_host("poll_interval = \"500ms\"");
    // A fixed amount of CPU work (at least 0.2 s on any machine, whatever its load) and
    // 150 MiB touched, held for 1.5 s more: the cluster samples memory every second.
    let job = host.shell_job(
        "hungry",
        "python3 -c 'import time\nb = bytearray(150 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\ns = 0\nfor i in range(10**7): s += i\ntime.sleep(1.5)'",
    );
    let id = job.id();
    backend.submit(&[job]);
    let end = host
        .wait_end(id, Duration::from_secs(120))
        .expect("the job ends");
    assert_eq!(end.exit_code(), Some(0), "{end:?}");
    assert_eq!(attr(&end, "usage_source"), Some("sacct"), "{end:?}");
    let cpu: f64 = attr(&end, "cpu_s").unwrap().parse().unwrap();
    let rss: f64 = attr(&end, "max_rss_mb").unwrap().parse().unwrap();
    assert!((0.2..120.0).contains(&cpu), "cpu_s = {cpu}");
    assert!((140.0..1000.0).contains(&rss), "max_rss_mb = {rss}");
    assert!(attr(&end, "native_id").is_some());
    backend.shutdown();
}

#[test]
fn an_array_keeps_to_its_slot_limit() {
    let Some(_c) = cluster() else { return };
    let (_dir, mut host, backend) =
        fake_host("poll_interval = \"500ms\"\narrays = true\narray_slot_limit = 2");
    let jobs: Vec<TestJob> = (0..6)
        .map(|i| host.shell_job(&format!("slot{i}"), "sleep 2"))
        .collect();
    let ids: Vec<JobId> = jobs.iter().map(TestJob::id).collect();
    backend.submit(&jobs);
    let mut most_running = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let out = std::process::Command::new("squeue")
            .args([
                "-h",
                "-r",
                "-t",
                "RUNNING",
                "-o",
                "%i",
                &format!("--name={}", host.run_tag()),
            ])
            .output()
            .expect("run squeue");
        let running = String::from_utf8_lossy(&out.stdout).lines().count();
        most_running = most_running.max(running);
        let pending = std::process::Command::new("squeue")
            .args(["-h", "-o", "%i", &format!("--name={}", host.run_tag())])
            .output()
            .expect("run squeue");
        if pending.stdout.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for id in ids {
        let end = host.wait_end(id, Duration::from_secs(60)).expect("ends");
        assert_eq!(end.exit_code(), Some(0), "{end:?}");
    }
    assert!(
        (1..=2).contains(&most_running),
        "{most_running} members ran at once"
    );
    backend.shutdown();
}
