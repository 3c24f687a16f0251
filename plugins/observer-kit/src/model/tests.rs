use super::*;
use crate::events::{
    job_status as status, kill_signal, run_finished, run_started, with_attr as with,
};
use flowrun_plugin_api::abi_stable::std_types::ROption;

fn started(jobs: &[(&str, &str)]) -> RunEvent {
    run_started(1_000_000, "f", "/r", jobs)
}

fn run(t: i64, job: &str) -> RunEvent {
    status(t, job, "local", JobStatus::QUEUED, JobStatus::RUNNING)
}

fn end(t: i64, job: &str, s: JobStatus) -> RunEvent {
    status(t, job, "local", JobStatus::RUNNING, s)
}

#[test]
fn lanes_are_reused_lowest_first_and_never_shared_at_once() {
    let mut m = RunModel::default();
    m.apply(&started(&[
        ("a", "local"),
        ("b", "local"),
        ("c", "local"),
        ("d", "fake"),
    ]));
    m.apply(&run(10, "a"));
    m.apply(&run(11, "b"));
    m.apply(&end(12, "a", JobStatus::PASSED));
    m.apply(&run(13, "c")); // takes a's lane 0, not a new one
    m.apply(&status(
        14,
        "d",
        "fake",
        JobStatus::QUEUED,
        JobStatus::RUNNING,
    ));
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
    m.apply(&started(&[("a", "local"), ("b", "local")]));
    m.apply(&with(
        with(run(10, "a"), "resources", "cpus=2,vcs=1"),
        "attempt",
        "1",
    ));
    let mut fin = end(2_000_010, "a", JobStatus::FAILED);
    fin.reason = "exit code 3".into();
    fin.exit_code = ROption::RSome(3);
    fin.duration_s = ROption::RSome(2.0);
    fin.log = "/r/jobs/a/output.log".into();
    let fin = with(
        with(with(fin, "cpu_s", "1.25"), "max_rss_mb", "212.5"),
        "reason_kind",
        "exit_code",
    );
    m.apply(&with(fin, "native_id", "4242"));
    m.apply(&run(20, "b"));
    m.apply(&with(
        end(30, "b", JobStatus::PASSED),
        "cpu_s",
        "not a number",
    ));

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
    m.apply(&started(&[
        ("r", "local"),
        ("q", "local"),
        ("w", "local"),
        ("p", "local"),
    ]));
    m.apply(&run(10, "p"));
    m.apply(&end(11, "p", JobStatus::PASSED));
    m.apply(&run(12, "r"));
    m.apply(&status(
        13,
        "q",
        "local",
        JobStatus::SCHEDULED,
        JobStatus::QUEUED,
    ));
    m.apply(&kill_signal(14, "SIGTERM"));
    m.apply(&run_finished(
        20,
        RunSummary {
            interrupted: true,
            ..RunSummary::default()
        },
    ));
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
    m.apply(&with(started(&[]), "phases", "load=1:2"));
    let fin = RunEvent::empty(RunEventKind::RUN_FINISHED, 30);
    m.apply(&with(fin, "phases", "schedule=2:20;write_results=20:29"));
    let names: Vec<&str> = m.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["load", "schedule", "write_results"]);
}

#[test]
fn a_retry_opens_a_second_attempt() {
    let mut m = RunModel::default();
    m.apply(&started(&[("a", "local")]));
    m.apply(&run(10, "a"));
    m.apply(&status(
        20,
        "a",
        "local",
        JobStatus::RUNNING,
        JobStatus::QUEUED,
    ));
    m.apply(&with(run(30, "a"), "attempt", "2"));
    m.apply(&end(40, "a", JobStatus::PASSED));
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
    m.apply(&started(&[("a", "local"), ("b", "local")]));
    m.apply(&run(1_000, "a"));
    m.apply(&run(1_000, "b"));
    let mut end_a = end(5_000, "a", JobStatus::PASSED);
    end_a.duration_s = ROption::RSome(0.003); // handed to the backend at 2_000
    m.apply(&end_a);
    let mut end_b = end(5_000, "b", JobStatus::PASSED);
    end_b.duration_s = ROption::RSome(1.0); // longer than the events say: the span never grows
    m.apply(&end_b);
    let spans: Vec<(i64, Option<i64>)> =
        m.attempts.iter().map(|a| (a.start_us, a.end_us)).collect();
    assert_eq!(spans, [(2_000, Some(5_000)), (1_000, Some(5_000))]);
}

/// A retried attempt reaches observers as RUNNING -> QUEUED with the attempt's reason; when the
/// next attempt passes, the job keeps neither that reason nor its kind, and two attempts.
#[test]
fn a_retried_job_that_passes_keeps_no_reason_of_its_failed_attempt() {
    let mut m = RunModel::default();
    m.apply(&started(&[("a", "local")]));
    m.apply(&with(run(10, "a"), "attempt", "1"));
    let mut retry = status(20, "a", "local", JobStatus::RUNNING, JobStatus::QUEUED);
    retry.reason = "exit code 1".into();
    m.apply(&with(retry, "reason_kind", "exit_code"));
    assert_eq!(m.jobs[0].reason, "exit code 1");
    assert_eq!(m.count(JobStatus::QUEUED), 1);
    assert_eq!(m.count(JobStatus::RUNNING), 0);
    m.apply(&with(run(30, "a"), "attempt", "2"));
    m.apply(&end(40, "a", JobStatus::PASSED));
    let a = &m.jobs[0];
    assert_eq!(a.status, JobStatus::PASSED);
    assert_eq!((a.reason.as_str(), a.reason_kind.as_deref()), ("", None));
    assert_eq!(m.attempts.len(), 2);
    assert_eq!(m.count(JobStatus::PASSED), 1);
}
