use std::path::Path;

use flowrun_plugin_sdk::Summary;
use flowrun_plugin_testkit::{ObserverHarness, TestEvent};
use serde_json::Value;

use super::*;

/// The data document embedded in the report at `path`.
fn embedded(path: &Path) -> Value {
    let page = std::fs::read_to_string(path).unwrap();
    let start = page
        .find(r#"<script type="application/json" id="flowrun-data">"#)
        .expect("the data element");
    let rest = &page[start..];
    let rest = &rest[rest.find('>').unwrap() + 1..];
    let json = &rest[..rest.find("</script>").unwrap()];
    serde_json::from_str(json).unwrap()
}

/// RUN_STARTED at `t` µs of flow `flow` in `run_dir`, listing `(job, backend)` pairs.
fn started(t: i64, flow: &str, run_dir: &str, jobs: &[(&str, &str)]) -> TestEvent {
    jobs.iter().fold(
        TestEvent::run_started(flow, run_dir).at(t),
        |e, (name, backend)| e.job(name, backend),
    )
}

/// JOB_STATUS of `job` on backend `local`, `old` to `new`, at `t` µs.
fn status(t: i64, job: &str, old: JobStatus, new: JobStatus) -> TestEvent {
    TestEvent::job_status(job, old, new).backend("local").at(t)
}

fn finished(t: i64) -> TestEvent {
    TestEvent::run_finished(&Summary::default()).at(t)
}

fn ended(t: i64, job: &str, new: JobStatus, reason: &str, log: Option<&Path>) -> TestEvent {
    let e = status(t, job, JobStatus::RUNNING, new)
        .reason(reason)
        .duration_s(0.25);
    match log {
        Some(log) => e.log(&log.to_string_lossy()),
        None => e,
    }
}

fn running(t: i64, job: &str) -> TestEvent {
    status(t, job, JobStatus::QUEUED, JobStatus::RUNNING)
}

#[test]
fn the_report_buckets_failures_links_logs_and_keeps_unknowns_null() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let mut names = Vec::new();
    for seed in 1..=3 {
        let name = format!("sim/seed{seed}");
        let log = run
            .join("jobs")
            .join(&*flowrun_plugin_sdk::run_dir::job_dir_name(&name))
            .join("output.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, format!("start\nseed {seed}\nexiting with 3\n")).unwrap();
        names.push((name, log));
    }
    let mut jobs: Vec<(&str, &str)> = names.iter().map(|(n, _)| (n.as_str(), "local")).collect();
    jobs.push(("ok", "local"));
    jobs.push(("after", "local"));
    let o = ObserverHarness::new(create, "").unwrap();
    o.send(&[started(1_000_000, "nightly", &run.to_string_lossy(), &jobs)]);
    assert!(
        run.join("report.html").exists(),
        "a report right at the start"
    );
    let mut events = Vec::new();
    // The three seeds run at the same time: three lanes.
    for (k, (name, _)) in names.iter().enumerate() {
        events.push(running(1_000_100 + k as i64, name));
    }
    for (k, (name, log)) in names.iter().enumerate() {
        let e = ended(
            1_500_000,
            name,
            JobStatus::FAILED,
            &format!("exit code 3 (seed {k})"),
            Some(log),
        );
        events.push(
            e.exit_code(3)
                .attr("reason_kind", "exit_code")
                .attr("cpu_s", "0.125"),
        );
    }
    events.push(running(1_600_000, "ok"));
    events.push(
        ended(
            1_700_000,
            "ok",
            JobStatus::PASSED,
            "",
            Some(&run.join("elsewhere/ok.log")),
        )
        .attr("max_rss_mb", "204.8"),
    );
    let skip = status(1_700_001, "after", JobStatus::SCHEDULED, JobStatus::SKIPPED)
        .reason("dependency failed: sim/seed1");
    events.push(skip);
    events.push(finished(1_800_000));
    o.send(&events);
    o.finish().unwrap();

    let d = embedded(&run.join("report.html"));
    assert_eq!(d["flow"], "nightly");
    assert_eq!(d["finished"], true);
    assert_eq!(d["logBase"], "jobs/");
    let buckets = d["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2, "{buckets:?}");
    assert_eq!(buckets[0]["key"], "exit code # (seed #)");
    assert_eq!(buckets[0]["status"], "failed");
    assert_eq!(buckets[0]["kind"], "exit_code");
    assert_eq!(buckets[0]["jobs"], serde_json::json!([0, 1, 2]));
    assert_eq!(buckets[1]["key"], "dependency failed: <path>");
    assert_eq!(buckets[1]["status"], "skipped");
    // The failed jobs' names hold a `/`, which the host encodes in their directories' names,
    // so the default (`logBase + name + "/output.log"`) would miss them: they are listed, as
    // is ok's log, which is elsewhere; all relative to the report.
    assert_eq!(
        d["logs"],
        serde_json::json!({
            "0": "jobs/sim%2Fseed1/output.log",
            "1": "jobs/sim%2Fseed2/output.log",
            "2": "jobs/sim%2Fseed3/output.log",
            "3": "elsewhere/ok.log"
        })
    );
    // Each failure shows its log's tail.
    let context = &d["contexts"]["1"];
    assert_eq!(
        context["lines"],
        serde_json::json!(["start", "seed 2", "exiting with 3"])
    );
    assert_eq!(
        d["jobs"]["cpu"],
        serde_json::json!([0.125, 0.125, 0.125, null, null])
    );
    assert_eq!(
        d["jobs"]["rss"],
        serde_json::json!([null, null, null, 204.8, null])
    );
    assert_eq!(d["jobs"]["exit"][0], 3);
    assert_eq!(d["jobs"]["attempts"], serde_json::json!([1, 1, 1, 1, 0]));
    assert_eq!(d["attempts"]["lane"], serde_json::json!([0, 1, 2, 0]));
    // From the run start; the host says the job ran its last 0.25 s of the events' span.
    assert_eq!(d["attempts"]["start"][0], 250_000);
    assert_eq!(
        d["resourceSets"],
        serde_json::json!([""]),
        "no resources sent: unknown"
    );
    assert_eq!(d["counts"][4], 3);
}

#[test]
fn nothing_in_the_data_can_close_the_script_element() {
    let dir = tempfile::tempdir().unwrap();
    let evil = "</script><script>alert(1)</script><!--";
    let o = ObserverHarness::new(create, "").unwrap();
    o.send(&[started(
        1,
        "f",
        &dir.path().to_string_lossy(),
        &[(evil, "local")],
    )]);
    let e = status(2, evil, JobStatus::QUEUED, JobStatus::FAILED).reason(evil);
    o.send(&[e, finished(3)]);
    o.finish().unwrap();
    let page = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert_eq!(
        page.matches("</script>").count(),
        2,
        "only the page's own two"
    );
    assert!(!page.contains("<!--"));
    assert_eq!(
        embedded(&dir.path().join("report.html"))["jobs"]["name"][0],
        evil
    );
}

#[test]
fn the_report_is_rewritten_while_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("live.html");
    let o = ObserverHarness::new(create, "path = \"live.html\"\nrefresh = \"100ms\"").unwrap();
    o.send(&[started(
        1,
        "f",
        &dir.path().to_string_lossy(),
        &[("a", "local")],
    )]);
    assert_eq!(embedded(&report)["attempts"]["job"], serde_json::json!([]));
    o.send(&[running(2, "a")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = embedded(&report);
        if d["attempts"]["job"] == serde_json::json!([0]) {
            assert_eq!(d["finished"], false);
            assert_eq!(
                d["attempts"]["dur"],
                serde_json::json!([null]),
                "still running"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never refreshed");
        std::thread::sleep(Duration::from_millis(50));
    }
    o.send(&[ended(3, "a", JobStatus::PASSED, "", None), finished(4)]);
    o.finish().unwrap();
    assert_eq!(embedded(&report)["finished"], true);
}

#[test]
fn an_unwritable_report_is_one_io_error_at_finish() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocker"), "").unwrap();
    let o = ObserverHarness::new(create, "path = \"blocker/report.html\"").unwrap();
    o.send(&[started(1, "f", &dir.path().to_string_lossy(), &[])]);
    o.send(&[finished(2)]);
    let err = o.finish().unwrap_err();
    assert_eq!(err.kind, ErrorKind::IO);
    assert!(
        err.message.starts_with("html: cannot write "),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("blocker/report.html"),
        "{}",
        err.message
    );
}

#[test]
fn config_errors_name_the_key() {
    for (config, key) in [
        ("refresh = \"soon\"", "refresh"),
        ("refresh = \"1ms\"", "refresh"),
        ("path = \"\"", "path"),
        ("colour = \"red\"", "colour"),
    ] {
        let err = create(config)
            .err()
            .unwrap_or_else(|| panic!("{config} accepted"));
        assert_eq!(err.kind, ErrorKind::CONFIG, "{config}");
        assert!(err.message.contains(key), "{config}: {}", err.message);
    }
}

#[test]
fn context_reading_stops_at_the_size_budget() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("big.log");
    std::fs::write(&log, format!("{}\n", "z".repeat(290)).repeat(10)).unwrap();
    let o = ObserverHarness::new(create, "").unwrap();
    let n = 2_000; // ~3 KB of context each: past the 4 MiB budget
    let names: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
    let jobs: Vec<(&str, &str)> = names.iter().map(|s| (s.as_str(), "local")).collect();
    o.send(&[started(1, "f", &dir.path().to_string_lossy(), &jobs)]);
    let events: Vec<TestEvent> = names
        .iter()
        .map(|name| ended(2, name, JobStatus::FAILED, "exit code 1", Some(&log)))
        .collect();
    o.send(&events);
    o.send(&[finished(3)]);
    o.finish().unwrap();
    let d = embedded(&dir.path().join("report.html"));
    let kept = d["contexts"].as_object().unwrap().len() as u64;
    let omitted = d["contextsOmitted"].as_u64().unwrap();
    assert_eq!(kept + omitted, n);
    assert!(omitted > 0 && kept > 1000, "kept {kept}, omitted {omitted}");
}
