//! The backend through the plugin test kit (the ABI objects the host uses), with the C
//! fixture launcher built by the system C compiler. The worker here is this test binary
//! itself, re-executed: the crate's constructor claims it before the test harness starts.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use flowrun_plugin_sdk::{BackendImpl, EndKind, JobEventKind, PluginError, Sink, SubmitAnswerKind};
use flowrun_plugin_testkit::{check_backend_contract, FakeHost, TestJob};

use crate::{config::Config, create, inprocess::InProcess};

/// Builds the fixture launcher once per test process.
fn fixture() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("flowrun-legacy-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("libfixture.so");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
        let status = Command::new(cc)
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&out)
            .arg("-I")
            .arg(root.join("include"))
            .arg(root.join("fixtures/fixture_launcher.c"))
            .status()
            .expect("run the C compiler");
        assert!(status.success(), "building the fixture launcher failed");
        out
    })
}

fn config(extra: &str) -> String {
    format!(
        "library = {:?}\npoll_interval = \"20ms\"\n{extra}",
        fixture().to_str().unwrap()
    )
}

#[test]
fn keeps_the_backend_contract() {
    check_backend_contract(create, &config("")).unwrap();
}

fn create_in_process(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
    let config = Config::parse(config)?;
    Ok(Box::new(
        InProcess::start(config, sink).map_err(PluginError::other)?,
    ))
}

#[test]
fn the_benchmark_s_in_process_variant_keeps_the_contract_too() {
    check_backend_contract(create_in_process, &config("")).unwrap();
}

#[test]
fn a_worker_crash_loses_its_jobs_and_the_next_submit_gets_a_new_worker() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed");
    let mut host = FakeHost::new(&dir.path().join("run"));
    let backend = host
        .backend(
            create,
            &config(&format!(
                "options = \"crash_on_poll=3 crash_marker={}\"",
                marker.display()
            )),
        )
        .unwrap();
    let jobs = vec![
        host.shell_job("a", "sleep 30"),
        host.shell_job("b", "sleep 30"),
    ];
    let ids: Vec<_> = jobs.iter().map(TestJob::id).collect();
    let answers = host.submit_all(&backend, jobs, Duration::from_secs(20));
    assert!(answers
        .iter()
        .all(|a| a.kind() == SubmitAnswerKind::ACCEPTED));
    for id in ids {
        let end = host.wait_end(id, Duration::from_secs(20)).expect("lost");
        assert_eq!(end.kind(), JobEventKind::LOST, "{end:?}");
        assert_eq!(end.reason(), "legacy launcher crashed: SIGSEGV");
    }
    assert!(marker.exists());
    let after = host.shell_job("after", "exit 4");
    let id = after.id();
    let answers = host.submit_all(&backend, vec![after], Duration::from_secs(20));
    assert_eq!(answers[0].kind(), SubmitAnswerKind::ACCEPTED, "{answers:?}");
    let end = host.wait_end(id, Duration::from_secs(20)).unwrap();
    assert_eq!((end.end(), end.exit_code()), (EndKind::EXITED, Some(4)));
    backend.shutdown();
    let stats = backend.stats();
    assert!(stats.contains("workers_started = 2\n"), "{stats}");
    assert!(stats.contains("worker_crashes = 1\n"), "{stats}");
}

#[test]
fn the_in_process_variant_still_has_its_stats_after_shutdown() {
    // The host asks a backend for its stats only after shutting it down (the benchmark reads
    // the in-process variant's polls from them).
    let dir = tempfile::tempdir().unwrap();
    let mut host = FakeHost::new(&dir.path().join("run"));
    let backend = host.backend(create_in_process, &config("")).unwrap();
    let jobs = vec![host.shell_job("a", "exit 0"), host.shell_job("b", "exit 0")];
    let ids: Vec<_> = jobs.iter().map(|j| j.id()).collect();
    let answers = host.submit_all(&backend, jobs, Duration::from_secs(20));
    assert!(answers
        .iter()
        .all(|a| a.kind() == SubmitAnswerKind::ACCEPTED));
    for id in ids {
        host.wait_end(id, Duration::from_secs(20)).expect("ended");
    }
    backend.shutdown();
    let stats = backend.stats();
    assert!(stats.contains("launched = 2\n"), "{stats}");
    let polls: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("polls = "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(polls >= 2, "every job was polled to its end: {stats}");
}
