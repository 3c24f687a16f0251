use flowrun_observer_kit::events::{job_status, kill_signal, run_finished, run_started, with_attr};
use flowrun_plugin_api::{abi_stable::std_types::ROption, JobStatus, RunSummary};
use serde_json::Value;

use super::*;

fn read(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn complete<'a>(trace: &'a Value, name: &str) -> Vec<&'a Value> {
    trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == name)
        .collect()
}

#[test]
fn every_attempt_is_a_complete_event_on_its_backend_slot() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().to_string_lossy().into_owned();
    let o = create("").unwrap();
    let started = with_attr(
        run_started(
            1_000,
            "f",
            &run_dir,
            &[("a", "local"), ("b", "local"), ("c", "fake")],
        ),
        "phases",
        "load=100:400;expand=400:500;validate=500:900",
    );
    let mut a_end = job_status(5_000, "a", "local", JobStatus::RUNNING, JobStatus::FAILED);
    a_end.reason = "exit code 3".into();
    a_end.exit_code = ROption::RSome(3);
    a_end.log = format!("{run_dir}/jobs/a/output.log").as_str().into();
    let a_end = with_attr(with_attr(a_end, "cpu_s", "0.5"), "max_rss_mb", "210");
    o.on_events(&[
        started,
        with_attr(
            job_status(2_000, "a", "local", JobStatus::QUEUED, JobStatus::RUNNING),
            "resources",
            "cpus=1,vcs=1",
        ),
        job_status(2_500, "b", "local", JobStatus::QUEUED, JobStatus::RUNNING),
        job_status(2_600, "c", "fake", JobStatus::QUEUED, JobStatus::RUNNING),
        a_end,
        job_status(6_000, "b", "local", JobStatus::RUNNING, JobStatus::PASSED),
        job_status(6_100, "c", "fake", JobStatus::RUNNING, JobStatus::PASSED),
    ]);
    o.on_events(&[with_attr(
        run_finished(7_000, RunSummary::default()),
        "phases",
        "schedule=900:6900;write_results=6900:6990",
    )]);
    o.finish().unwrap();

    let trace = read(&dir.path().join("trace.json"));
    let a = complete(&trace, "a");
    assert_eq!(a.len(), 1);
    let a = a[0];
    assert_eq!(
        (a["ts"].as_i64(), a["dur"].as_i64()),
        (Some(2_000), Some(3_000))
    );
    assert_eq!(a["cat"], "failed");
    let args = &a["args"];
    assert_eq!(args["status"], "failed");
    assert_eq!(args["reason"], "exit code 3");
    assert_eq!(args["exit_code"], 3);
    assert_eq!(args["cpu_s"], 0.5);
    assert_eq!(args["max_rss_mb"], 210.0);
    assert_eq!(args["resources"], "cpus=1,vcs=1");
    assert_eq!(args["attempt"], 1);
    let b = complete(&trace, "b")[0];
    assert_eq!(b["args"]["cpu_s"], Value::Null, "unknown stays null");
    // a and b overlap on one backend: two slots; c has a process of its own.
    assert_eq!(a["pid"], b["pid"]);
    assert_ne!(a["tid"], b["tid"]);
    let c = complete(&trace, "c")[0];
    assert_ne!(c["pid"], a["pid"]);
    let names: Vec<&str> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert_eq!(names, ["phases", "slot 0", "slot 1", "slot 0"]);
    for phase in ["load", "expand", "validate", "schedule", "write_results"] {
        let p = complete(&trace, phase);
        assert_eq!(p.len(), 1, "{phase}");
        assert_eq!(p[0]["pid"], 1, "{phase} is on the host track");
    }
    assert_eq!(complete(&trace, "load")[0]["dur"], 300);
}

#[test]
fn without_phases_and_after_an_abandoned_run_the_trace_is_still_whole() {
    let dir = tempfile::tempdir().unwrap();
    let o = create("path = \"sub/t.json\"").unwrap();
    o.on_events(&[
        run_started(1_000, "f", &dir.path().to_string_lossy(), &[("a", "local")]),
        job_status(2_000, "a", "local", JobStatus::QUEUED, JobStatus::RUNNING),
        kill_signal(3_000, "SIGINT"),
        run_finished(
            4_000,
            RunSummary {
                interrupted: true,
                ..RunSummary::default()
            },
        ),
    ]);
    o.finish().unwrap();
    let trace = read(&dir.path().join("sub/t.json"));
    let a = complete(&trace, "a")[0];
    assert_eq!(a["cat"], "killed");
    assert_eq!(a["dur"], 2_000);
    assert_eq!(a["args"]["reason"], "killed by SIGINT while running");
    assert_eq!(trace["otherData"]["interrupted"], true);
    let signal: Vec<_> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "i")
        .collect();
    assert_eq!(signal.len(), 1);
    assert_eq!(signal[0]["name"], "SIGINT");
}

#[test]
fn an_unwritable_path_is_one_io_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocker"), "").unwrap();
    let o = create("path = \"blocker/trace.json\"").unwrap();
    o.on_events(&[run_started(1, "f", &dir.path().to_string_lossy(), &[])]);
    let err = o.finish().unwrap_err();
    assert_eq!(err.kind, ErrorKind::IO);
    assert!(
        err.message.starts_with("trace: cannot write "),
        "{}",
        err.message
    );
    assert!(!err.message.contains('\n'));
}

#[test]
fn unknown_config_keys_are_refused() {
    let err = create("paht = \"x\"").err().unwrap();
    assert_eq!(err.kind, ErrorKind::CONFIG);
    assert!(err.message.contains("paht"), "{}", err.message);
}
