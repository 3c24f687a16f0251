use flowrun_plugin_sdk::{JobStatus, Summary};
use flowrun_plugin_testkit::{ObserverHarness, TestEvent};
use serde_json::Value;

use super::*;

fn read(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// JOB_STATUS of `job` on `backend`, `old` to `new`, at `t` µs.
fn status(t: i64, job: &str, backend: &str, old: JobStatus, new: JobStatus) -> TestEvent {
    TestEvent::job_status(job, old, new).backend(backend).at(t)
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
    let o = ObserverHarness::new(create, "").unwrap();
    let started = TestEvent::run_started("f", &run_dir)
        .job("a", "local")
        .job("b", "local")
        .job("c", "fake")
        .attr("phases", "load=100:400;expand=400:500;validate=500:900")
        .at(1_000);
    let a_end = status(5_000, "a", "local", JobStatus::RUNNING, JobStatus::FAILED)
        .reason("exit code 3")
        .exit_code(3)
        .log(&format!("{run_dir}/jobs/a/output.log"))
        .attr("cpu_s", "0.5")
        .attr("max_rss_mb", "210");
    o.send(&[
        started,
        status(2_000, "a", "local", JobStatus::QUEUED, JobStatus::RUNNING)
            .attr("resources", "cpus=1,vcs=1"),
        status(2_500, "b", "local", JobStatus::QUEUED, JobStatus::RUNNING),
        status(2_600, "c", "fake", JobStatus::QUEUED, JobStatus::RUNNING),
        a_end,
        status(6_000, "b", "local", JobStatus::RUNNING, JobStatus::PASSED),
        status(6_100, "c", "fake", JobStatus::RUNNING, JobStatus::PASSED),
    ]);
    o.send(&[TestEvent::run_finished(&Summary::default())
        .attr("phases", "schedule=900:6900;write_results=6900:6990")
        .at(7_000)]);
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
    let o = ObserverHarness::new(create, "path = \"sub/t.json\"").unwrap();
    o.send(&[
        TestEvent::run_started("f", &dir.path().to_string_lossy())
            .job("a", "local")
            .at(1_000),
        status(2_000, "a", "local", JobStatus::QUEUED, JobStatus::RUNNING),
        TestEvent::kill_signal("SIGINT").at(3_000),
        TestEvent::run_finished(&Summary {
            interrupted: true,
            ..Summary::default()
        })
        .at(4_000),
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
    let o = ObserverHarness::new(create, "path = \"blocker/trace.json\"").unwrap();
    o.send(&[TestEvent::run_started("f", &dir.path().to_string_lossy()).at(1)]);
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
