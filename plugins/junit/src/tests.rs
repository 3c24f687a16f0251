//! The observer fed with run events as the host sends them, its XML parsed back.

use std::path::Path;

use flowrun_plugin_sdk::{ErrorKind, JobStatus, Summary};
use flowrun_plugin_testkit::{ObserverHarness, TestEvent};

use super::create;

const T0: i64 = 1_700_000_000_000_000; // 2023-11-14T22:13:20 UTC

fn started(run_dir: &Path, flow: &str, jobs: &[(&str, &str)]) -> TestEvent {
    jobs.iter().fold(
        TestEvent::run_started(flow, run_dir.to_str().unwrap()).at(T0),
        |e, (name, backend)| e.job(name, backend),
    )
}

fn status(job: &str, new: JobStatus, reason: &str) -> TestEvent {
    let e = TestEvent::job_status(job, JobStatus::RUNNING, new)
        .at(T0 + 1_000_000)
        .backend("local")
        .reason(reason);
    if new.is_terminal() && new != JobStatus::SKIPPED {
        e.duration_s(1.5)
            .log(&format!("/runs/x/jobs/{job}/output.log"))
    } else {
        e
    }
}

fn finished(summary: Summary) -> TestEvent {
    TestEvent::run_finished(&summary).at(T0 + 9_000_000)
}

/// Feeds `events` to a `junit` observer made from `config` (through the ABI adapter, as the
/// host would) and returns the report's text.
fn report(config: &str, events: Vec<TestEvent>, expect_at: &Path) -> String {
    let observer = ObserverHarness::new(create, config).expect("valid config");
    // Two batches, as the host's queue may split them.
    let (first, rest) = events.split_at(events.len() / 2);
    observer.send(first);
    observer.send(rest);
    observer.finish().expect("finish writes the report");
    std::fs::read_to_string(expect_at).expect("the report exists")
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name(tag))
}

fn attr<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> &'a str {
    node.attribute(name)
        .unwrap_or_else(|| panic!("<{}> has no {name}", node.tag_name().name()))
}

#[test]
fn a_run_becomes_one_testsuite_with_a_testcase_per_job() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let fail = status(
        "sim_b",
        JobStatus::FAILED,
        "log matched fail pattern: ERROR",
    )
    .exit_code(0)
    .attr("fail_line", "42")
    .attr("fail_text", "ERROR: mismatch");
    let kill = status("slow", JobStatus::KILLED, "timed out after 30m");
    let events = vec![
        started(
            run,
            "regress",
            &[
                ("build", "local"),
                ("sim_b", "local"),
                ("slow", "slurm"),
                ("report", "local"),
            ],
        ),
        status("build", JobStatus::RUNNING, ""),
        status("build", JobStatus::PASSED, ""),
        fail,
        kill,
        status("report", JobStatus::SKIPPED, "dependency failed: sim_b"),
        finished(Summary {
            passed: 1,
            failed: 1,
            killed: 1,
            skipped: 1,
            duration_s: 9.0,
            ..Default::default()
        }),
    ];
    let text = report("path = \"junit.xml\"", events, &run.join("junit.xml"));
    let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 1);
    let suite = suites[0];
    assert_eq!(attr(suite, "name"), "regress");
    assert_eq!(
        ["tests", "failures", "errors", "skipped", "time"].map(|a| attr(suite, a)),
        ["4", "1", "1", "1", "9.000"]
    );
    assert_eq!(attr(suite, "timestamp"), "2023-11-14T22:13:20.000+00:00");
    assert_eq!(
        ["tests", "failures", "errors", "skipped", "time"].map(|a| attr(root, a)),
        ["4", "1", "1", "1", "9.000"],
        "the report's totals are the suite's"
    );
    let body = failure_text(&doc, "sim_b");
    assert!(body.starts_with("exit code: 0\n"), "{body}");
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let names: Vec<_> = cases.iter().map(|c| attr(*c, "name")).collect();
    assert_eq!(
        names,
        ["build", "sim_b", "slow", "report"],
        "jobs keep the flow's order"
    );

    let build = cases[0];
    assert_eq!(attr(build, "classname"), "regress.local");
    assert_eq!(attr(build, "time"), "1.500");
    assert!(child(build, "failure").is_none() && child(build, "error").is_none());
    assert_eq!(
        child(build, "system-out").unwrap().text(),
        Some("log: /runs/x/jobs/build/output.log")
    );

    let failure = child(cases[1], "failure").expect("a failed job has <failure>");
    assert_eq!(attr(failure, "message"), "log matched fail pattern: ERROR");
    let body = failure.text().unwrap();
    assert!(
        body.contains("log line: 42") && body.contains("ERROR: mismatch"),
        "{body}"
    );

    assert_eq!(
        attr(cases[2], "classname"),
        "regress.local",
        "the JOB_STATUS backend wins"
    );
    assert_eq!(
        attr(
            child(cases[2], "error").expect("a killed job has <error>"),
            "message"
        ),
        "timed out after 30m"
    );
    assert_eq!(
        attr(child(cases[3], "skipped").expect("<skipped>"), "message"),
        "dependency failed: sim_b"
    );
    assert!(
        child(cases[3], "system-out").is_none(),
        "a skipped job has no log"
    );

    // Written atomically: no temporary file left behind, and readable by others.
    let names: Vec<_> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["junit.xml"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(run.join("junit.xml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
}

#[test]
fn names_and_reasons_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let nasty = "a<b>&\"c\"'d'";
    let events = vec![
        started(dir.path(), "flow & <co>", &[(nasty, "local")]),
        status(
            nasty,
            JobStatus::FAILED,
            "expected <x> & got \"y\"\u{1b}[31m red\u{0}",
        ),
    ];
    let text = report("", events, &dir.path().join("junit.xml"));
    let doc = roxmltree::Document::parse(&text)
        .expect("well-formed XML despite markup and control characters");
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase"))
        .unwrap();
    assert_eq!(attr(case, "name"), nasty);
    assert_eq!(attr(case, "classname"), "flow & <co>.local");
    let failure = case.children().find(|n| n.has_tag_name("failure")).unwrap();
    // quick-junit drops what XML 1.0 cannot hold: ANSI colour sequences, NUL.
    assert_eq!(attr(failure, "message"), "expected <x> & got \"y\" red");
}

#[test]
fn unfinished_jobs_are_errors_and_the_interrupting_signal_is_a_property() {
    let dir = tempfile::tempdir().unwrap();
    let signal = TestEvent::kill_signal("SIGINT").at(T0 + 2_000_000);
    let events = vec![
        started(dir.path(), "f", &[("done", "local"), ("never", "local")]),
        status("done", JobStatus::PASSED, ""),
        signal,
    ];
    // No RUN_FINISHED: the suite's time comes from the events seen.
    let text = report("", events, &dir.path().join("junit.xml"));
    let doc = roxmltree::Document::parse(&text).unwrap();
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(
        ["tests", "errors", "time"].map(|a| attr(suite, a)),
        ["2", "1", "2.000"]
    );
    let property = doc
        .descendants()
        .find(|n| n.has_tag_name("property"))
        .unwrap();
    assert_eq!(
        (attr(property, "name"), attr(property, "value")),
        ("interrupted_by", "SIGINT")
    );
    let never = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && attr(*n, "name") == "never")
        .unwrap();
    assert!(never.children().any(|n| n.has_tag_name("error")));
}

#[test]
fn the_path_is_relative_to_the_run_dir_unless_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let events = || {
        vec![
            started(&run, "f", &[("a", "local")]),
            status("a", JobStatus::PASSED, ""),
        ]
    };
    report(
        "path = \"reports/ci/junit.xml\"",
        events(),
        &run.join("reports/ci/junit.xml"),
    );
    let absolute = dir.path().join("elsewhere.xml");
    report(
        &format!("path = {:?}", absolute.to_str().unwrap()),
        events(),
        &absolute,
    );
    // Writing again replaces the report.
    report(
        &format!("path = {:?}", absolute.to_str().unwrap()),
        events(),
        &absolute,
    );
}

#[test]
fn finish_without_a_run_or_into_an_unwritable_place_is_an_error() {
    let observer = ObserverHarness::new(create, "").unwrap();
    let e = observer.finish().unwrap_err();
    assert!(e.message.contains("never started"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "").unwrap();
    let observer = ObserverHarness::new(create, "path = \"file/junit.xml\"").unwrap();
    observer.send(&[started(dir.path(), "f", &[])]);
    let e = observer.finish().unwrap_err();
    assert_eq!(e.kind, ErrorKind::IO);
    assert!(e.message.contains("file/junit.xml"), "{e}");
}

#[test]
fn config_errors_name_the_key() {
    for (config, key) in [
        ("path = 3", "`path`"),
        ("path = \"\"", "`path`"),
        ("pth = \"x.xml\"", "`pth`"),
    ] {
        let e = create(config).err().expect("refused");
        assert_eq!(e.kind, ErrorKind::CONFIG);
        assert!(e.message.contains(key), "{config}: {e}");
    }
    assert_eq!(
        create("not toml at all").err().expect("refused").kind,
        ErrorKind::CONFIG
    );
}

fn failure_text(doc: &roxmltree::Document<'_>, job: &str) -> String {
    doc.descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(job))
        .and_then(|c| c.children().find(|n| n.has_tag_name("failure")))
        .and_then(|f| f.text())
        .unwrap_or_default()
        .to_string()
}
