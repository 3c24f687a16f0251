use super::*;
use flowrun_plugin_testkit::TestEvent;

/// Feeds `event` to the model as the observer's `on_events` does.
fn apply(m: &mut RunModel, event: &TestEvent) {
    m.apply(event.view());
}

fn started(jobs: &[(&str, &str)]) -> TestEvent {
    jobs.iter().fold(
        TestEvent::run_started("f", "/r").at(1_000_000),
        |e, (name, backend)| e.job(name, backend),
    )
}

fn status(t: i64, job: &str, backend: &str, old: JobStatus, new: JobStatus) -> TestEvent {
    TestEvent::job_status(job, old, new).backend(backend).at(t)
}

fn run(t: i64, job: &str) -> TestEvent {
    status(t, job, "local", JobStatus::QUEUED, JobStatus::RUNNING)
}

fn end(t: i64, job: &str, s: JobStatus) -> TestEvent {
    status(t, job, "local", JobStatus::RUNNING, s)
}

fn with(event: TestEvent, key: &str, value: &str) -> TestEvent {
    event.attr(key, value)
}

#[test]
fn lanes_are_reused_lowest_first_and_never_shared_at_once() {
    let mut m = RunModel::default();
    apply(
        &mut m,
        &started(&[
            ("a", "local"),
            ("b", "local"),
            ("c", "local"),
            ("d", "fake"),
        ]),
    );
    apply(&mut m, &run(10, "a"));
    apply(&mut m, &run(11, "b"));
    apply(&mut m, &end(12, "a", JobStatus::PASSED));
    apply(&mut m, &run(13, "c")); // takes a's lane 0, not a new one
    apply(
        &mut m,
        &status(14, "d", "fake", JobStatus::QUEUED, JobStatus::RUNNING),
    );
    let lanes: Vec<(u32, u32)> = m.attempts.iter().map(|a| (a.job, a.lane)).collect();
    assert_eq!(lanes, [(0, 0), (1, 1), (2, 0), (3, 0)]);
    assert_eq!(m.lanes(0), 2);
    assert_eq!(m.lanes(1), 1, "each backend has lanes of its own");
    assert_eq!(m.attempts[0].end_us, Some(12));
    assert_eq!(m.attempts[0].status, JobStatus::PASSED);
    assert_eq!(m.attempts[2].end_us, None);
    assert_eq!(m.count(JobStatus::RUNNING), 3);
    assert_eq!(m.count(JobStatus::PASSED), 1);
}

#[test]
fn terminal_attrs_are_read_and_absent_ones_stay_unknown() {
    let mut m = RunModel::default();
    apply(&mut m, &started(&[("a", "local"), ("b", "local")]));
    apply(
        &mut m,
        &with(
            with(run(10, "a"), "resources", "cpus=2,vcs=1"),
            "attempt",
            "1",
        ),
    );
    let fin = end(2_000_010, "a", JobStatus::FAILED)
        .reason("exit code 3")
        .exit_code(3)
        .duration_s(2.0)
        .log("/r/jobs/a/output.log");
    let fin = with(
        with(with(fin, "cpu_s", "1.25"), "max_rss_mb", "212.5"),
        "reason_kind",
        "exit_code",
    );
    apply(&mut m, &with(fin, "native_id", "4242"));
    apply(&mut m, &run(20, "b"));
    apply(
        &mut m,
        &with(end(30, "b", JobStatus::PASSED), "cpu_s", "not a number"),
    );

    let a = &m.jobs[0];
    assert_eq!((a.cpu_s, a.max_rss_mb), (Some(1.25), Some(212.5)));
    assert_eq!(a.reason_kind.as_deref(), Some("exit_code"));
    assert_eq!(a.native_id.as_deref(), Some("4242"));
    assert_eq!(a.exit_code, Some(3));
    assert_eq!(a.log.as_deref(), Some("/r/jobs/a/output.log"));
    assert_eq!(m.attempts[0].resources.as_deref(), Some("cpus=2,vcs=1"));
    let b = &m.jobs[1];
    assert_eq!(
        (b.cpu_s, b.max_rss_mb, b.reason_kind.as_deref()),
        (None, None, None)
    );
    assert_eq!(m.attempts[1].resources, None);
}

#[test]
fn an_abandoned_run_settles_unfinished_jobs_as_the_host_records_them() {
    let mut m = RunModel::default();
    apply(
        &mut m,
        &started(&[
            ("r", "local"),
            ("q", "local"),
            ("w", "local"),
            ("p", "local"),
        ]),
    );
    apply(&mut m, &run(10, "p"));
    apply(&mut m, &end(11, "p", JobStatus::PASSED));
    apply(&mut m, &run(12, "r"));
    apply(
        &mut m,
        &status(13, "q", "local", JobStatus::SCHEDULED, JobStatus::QUEUED),
    );
    apply(&mut m, &TestEvent::kill_signal("SIGTERM").at(14));
    apply(
        &mut m,
        &TestEvent::run_finished(&Summary {
            interrupted: true,
            ..Summary::default()
        })
        .at(20),
    );
    let got: Vec<(&str, &str)> = m
        .jobs
        .iter()
        .map(|j| (j.status.name(), j.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("killed", "killed by SIGTERM while running"),
            ("killed", "killed while queued"),
            ("skipped", "run interrupted by SIGTERM"),
            ("passed", ""),
        ]
    );
    assert_eq!(
        m.attempts[1].end_us,
        Some(20),
        "the running attempt closes at the end"
    );
    assert_eq!(m.count(JobStatus::RUNNING), 0);
    assert_eq!(m.count(JobStatus::KILLED), 2);
}

#[test]
fn phases_parse_and_malformed_entries_are_skipped() {
    assert_eq!(
        parse_phases("load=1:5;expand=5:9;bad;validate=9:x;back=9:3"),
        [
            Phase {
                name: "load".into(),
                start_us: 1,
                end_us: 5
            },
            Phase {
                name: "expand".into(),
                start_us: 5,
                end_us: 9
            },
        ]
    );
    let mut m = RunModel::default();
    apply(&mut m, &with(started(&[]), "phases", "load=1:2"));
    let fin = TestEvent::run_finished(&Summary::default()).at(30);
    apply(
        &mut m,
        &with(fin, "phases", "schedule=2:20;write_results=20:29"),
    );
    let names: Vec<&str> = m.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["load", "schedule", "write_results"]);
}

#[test]
fn a_retry_opens_a_second_attempt() {
    let mut m = RunModel::default();
    apply(&mut m, &started(&[("a", "local")]));
    apply(&mut m, &run(10, "a"));
    apply(
        &mut m,
        &status(20, "a", "local", JobStatus::RUNNING, JobStatus::QUEUED),
    );
    apply(&mut m, &with(run(30, "a"), "attempt", "2"));
    apply(&mut m, &end(40, "a", JobStatus::PASSED));
    let got: Vec<(u32, i64, Option<i64>, &str)> = m
        .attempts
        .iter()
        .map(|a| (a.number, a.start_us, a.end_us, a.status.name()))
        .collect();
    assert_eq!(
        got,
        [(1, 10, Some(20), "queued"), (2, 30, Some(40), "passed")]
    );
    assert_eq!(m.jobs[0].attempts, 2);
}

#[test]
fn the_hosts_duration_sets_where_an_attempt_starts() {
    let mut m = RunModel::default();
    apply(&mut m, &started(&[("a", "local"), ("b", "local")]));
    apply(&mut m, &run(1_000, "a"));
    apply(&mut m, &run(1_000, "b"));
    let end_a = end(5_000, "a", JobStatus::PASSED).duration_s(0.003); // handed over at 2_000
    apply(&mut m, &end_a);
    // Longer than the events say: the span never grows.
    let end_b = end(5_000, "b", JobStatus::PASSED).duration_s(1.0);
    apply(&mut m, &end_b);
    let spans: Vec<(i64, Option<i64>)> =
        m.attempts.iter().map(|a| (a.start_us, a.end_us)).collect();
    assert_eq!(spans, [(2_000, Some(5_000)), (1_000, Some(5_000))]);
}

/// A retried attempt reaches observers as RUNNING -> QUEUED with the attempt's reason; when the
/// next attempt passes, the job keeps neither that reason nor its kind, and two attempts.
#[test]
fn a_retried_job_that_passes_keeps_no_reason_of_its_failed_attempt() {
    let mut m = RunModel::default();
    apply(&mut m, &started(&[("a", "local")]));
    apply(&mut m, &with(run(10, "a"), "attempt", "1"));
    let retry =
        status(20, "a", "local", JobStatus::RUNNING, JobStatus::QUEUED).reason("exit code 1");
    apply(&mut m, &with(retry, "reason_kind", "exit_code"));
    assert_eq!(m.jobs[0].reason, "exit code 1");
    assert_eq!(m.count(JobStatus::QUEUED), 1);
    assert_eq!(m.count(JobStatus::RUNNING), 0);
    apply(&mut m, &with(run(30, "a"), "attempt", "2"));
    apply(&mut m, &end(40, "a", JobStatus::PASSED));
    let a = &m.jobs[0];
    assert_eq!(a.status, JobStatus::PASSED);
    assert_eq!((a.reason.as_str(), a.reason_kind.as_deref()), ("", None));
    assert_eq!(m.attempts.len(), 2);
    assert_eq!(m.count(JobStatus::PASSED), 1);
}
