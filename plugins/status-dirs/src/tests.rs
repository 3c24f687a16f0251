use std::{path::Path, time::Duration};

use flowrun_plugin_sdk::Summary;
use flowrun_plugin_testkit::{ObserverHarness, TestEvent};

use super::*;

fn started(run_dir: &Path, jobs: &[&str]) -> TestEvent {
    jobs.iter().fold(
        TestEvent::run_started("f", &run_dir.to_string_lossy()).at(1),
        |e, name| e.job(name, "local"),
    )
}

fn status(job: &str, new: JobStatus) -> TestEvent {
    TestEvent::job_status(job, JobStatus::SCHEDULED, new)
        .backend("local")
        .at(2)
}

fn finished(interrupted: bool) -> TestEvent {
    TestEvent::run_finished(&Summary {
        interrupted,
        ..Summary::default()
    })
    .at(3)
}

/// Feeds one batch to the state, as the observer's `on_events` does.
fn apply(o: &mut StatusDirs, events: &[TestEvent]) {
    o.apply(events.iter().map(TestEvent::view));
}

/// The names in `<run>/by-status/<status>`, sorted.
fn listed(run: &Path, status: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run.join("by-status").join(status))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The state alone, with the clock in the test's hands.
fn dirs() -> StatusDirs {
    StatusDirs::new(PathBuf::from("by-status"))
}

/// As if the delay of `running` links had passed.
fn later() -> Instant {
    Instant::now() + RUNNING_LINK_DELAY
}

#[test]
fn links_move_with_the_status_and_are_relative() {
    let run = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(run.path().join("jobs/a")).unwrap();
    std::fs::write(run.path().join("jobs/a/output.log"), "log of a").unwrap();
    let mut o = dirs();
    apply(&mut o, &[started(run.path(), &["a", "b", "grp/c"])]);
    apply(
        &mut o,
        &[
            status("a", JobStatus::QUEUED),
            status("a", JobStatus::RUNNING),
        ],
    );
    assert!(
        listed(run.path(), "running").is_empty(),
        "not before the delay"
    );
    o.link_long_runners(later());
    assert_eq!(listed(run.path(), "running"), ["a"]);
    let link = run.path().join("by-status/running/a");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("../../jobs/a")
    );
    assert_eq!(
        std::fs::read_to_string(link.join("output.log")).unwrap(),
        "log of a"
    );

    apply(
        &mut o,
        &[
            status("a", JobStatus::FAILED),
            status("grp/c", JobStatus::RUNNING),
        ],
    );
    // Named as the host names the job's directory: a `/` is `%2F`.
    o.link_long_runners(later());
    assert_eq!(listed(run.path(), "running"), ["grp%2Fc"]);
    assert_eq!(listed(run.path(), "failed"), ["a"]);
    apply(
        &mut o,
        &[
            status("grp/c", JobStatus::PASSED),
            status("b", JobStatus::SKIPPED),
        ],
    );
    assert!(listed(run.path(), "running").is_empty());
    assert_eq!(listed(run.path(), "passed"), ["grp%2Fc"]);
    assert_eq!(listed(run.path(), "skipped"), ["b"]);
    apply(&mut o, &[finished(false)]);
    assert_eq!(o.error, None);

    // Moving the run directory keeps every link working.
    let moved = tempfile::tempdir().unwrap();
    let to = moved.path().join("archived");
    std::fs::rename(run.path(), &to).unwrap();
    let log = to.join("by-status/failed/a/output.log");
    assert_eq!(std::fs::read_to_string(log).unwrap(), "log of a");
}

#[test]
fn a_long_job_shows_in_running_after_the_delay_and_a_short_one_never_does() {
    let run = tempfile::tempdir().unwrap();
    let o = ObserverHarness::new(create, "").unwrap();
    o.send(&[started(run.path(), &["long", "short"])]);
    o.send(&[
        status("long", JobStatus::RUNNING),
        status("short", JobStatus::RUNNING),
    ]);
    o.send(&[status("short", JobStatus::PASSED)]);
    assert_eq!(listed(run.path(), "passed"), ["short"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while listed(run.path(), "running").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the long job never showed as running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(listed(run.path(), "running"), ["long"]);
    o.send(&[status("long", JobStatus::FAILED), finished(false)]);
    assert!(o.finish().is_ok());
    assert!(listed(run.path(), "running").is_empty());
    assert_eq!(listed(run.path(), "failed"), ["long"]);
}

#[test]
fn a_job_that_runs_and_ends_within_one_batch_is_linked_once() {
    let run = tempfile::tempdir().unwrap();
    let o = ObserverHarness::new(create, "path = \"links\"").unwrap();
    o.send(&[
        started(run.path(), &["a"]),
        status("a", JobStatus::QUEUED),
        status("a", JobStatus::RUNNING),
        status("a", JobStatus::PASSED),
    ]);
    let passed = run.path().join("links/passed/a");
    assert_eq!(
        std::fs::read_link(passed).unwrap(),
        Path::new("../../jobs/a")
    );
    assert_eq!(
        std::fs::read_dir(run.path().join("links/running"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_retry_waiting_in_the_queue_has_no_link() {
    let run = tempfile::tempdir().unwrap();
    let mut o = dirs();
    apply(
        &mut o,
        &[started(run.path(), &["a"]), status("a", JobStatus::RUNNING)],
    );
    o.link_long_runners(later());
    assert_eq!(listed(run.path(), "running"), ["a"]);
    apply(&mut o, &[status("a", JobStatus::QUEUED)]);
    assert!(listed(run.path(), "running").is_empty());
    o.link_long_runners(later());
    assert!(
        listed(run.path(), "running").is_empty(),
        "a stale start links nothing"
    );
    apply(&mut o, &[status("a", JobStatus::RUNNING)]);
    o.link_long_runners(later());
    assert_eq!(listed(run.path(), "running"), ["a"]);
}

#[test]
fn an_abandoned_run_files_what_was_in_flight_as_the_host_does() {
    let run = tempfile::tempdir().unwrap();
    let o = ObserverHarness::new(create, "").unwrap();
    o.send(&[
        started(run.path(), &["r", "q", "w"]),
        status("r", JobStatus::RUNNING),
        status("q", JobStatus::QUEUED),
    ]);
    o.send(&[finished(true)]);
    assert_eq!(listed(run.path(), "killed"), ["q", "r"]);
    assert_eq!(listed(run.path(), "skipped"), ["w"]);
    assert!(listed(run.path(), "running").is_empty());
}

#[test]
fn links_of_an_earlier_run_in_the_same_directory_are_cleared() {
    let run = tempfile::tempdir().unwrap();
    let stale = run.path().join("by-status/failed");
    std::fs::create_dir_all(&stale).unwrap();
    std::os::unix::fs::symlink("../../jobs/old", stale.join("old")).unwrap();
    let o = ObserverHarness::new(create, "").unwrap();
    o.send(&[started(run.path(), &["a"]), status("a", JobStatus::PASSED)]);
    assert!(listed(run.path(), "failed").is_empty());
    assert_eq!(listed(run.path(), "passed"), ["a"]);
}

#[test]
fn an_unwritable_directory_is_one_error_at_finish() {
    let run = tempfile::tempdir().unwrap();
    // A regular file where a directory must go: even root cannot create it.
    std::fs::write(run.path().join("blocker"), "").unwrap();
    let o = ObserverHarness::new(create, "path = \"blocker/by-status\"").unwrap();
    o.send(&[started(run.path(), &["a"])]);
    o.send(&[
        status("a", JobStatus::RUNNING),
        status("a", JobStatus::PASSED),
    ]);
    let err = o.finish().unwrap_err();
    assert_eq!(err.kind, ErrorKind::IO);
    let message = err.message.to_string();
    assert!(message.starts_with("status-dirs: cannot "), "{message}");
    assert!(message.contains("blocker"), "{message}");
}

#[test]
fn config_errors_name_the_key() {
    let err = create("pth = \"x\"").err().unwrap();
    assert_eq!(err.kind, ErrorKind::CONFIG);
    assert!(err.message.contains("pth"), "{}", err.message);
    let err = create("path = \"\"").err().unwrap();
    assert!(err.message.contains("path"), "{}", err.message);
}

#[test]
fn every_link_of_many_jobs_has_its_own_target_whatever_the_batches() {
    // The target is built per link in one reused buffer: a link must never get another job's.
    let run = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..2000)
        .map(|i| {
            if i % 7 == 0 {
                format!("grp/j-{i}")
            } else {
                format!("j-{i}")
            }
        })
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let final_status = |i: usize| match i % 3 {
        0 => JobStatus::PASSED,
        1 => JobStatus::FAILED,
        _ => JobStatus::KILLED,
    };
    let mut o = dirs();
    apply(&mut o, &[started(run.path(), &refs)]);
    // Each job's changes, spread over batches of different sizes, as the host's batches fall.
    let mut events = Vec::new();
    for (i, name) in names.iter().enumerate() {
        events.push(status(name, JobStatus::QUEUED));
        events.push(status(name, JobStatus::RUNNING));
        if i % 5 == 0 {
            events.push(status(name, JobStatus::QUEUED)); // a retry
            events.push(status(name, JobStatus::RUNNING));
        }
    }
    for (i, name) in names.iter().enumerate() {
        events.push(status(name, final_status(i)));
    }
    let mut rest = &events[..];
    for size in [1, 3, 4096, 17, 1000].into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        apply(&mut o, batch);
        o.link_long_runners(later());
        rest = tail;
    }
    apply(&mut o, &[finished(false)]);
    assert_eq!(o.error, None);
    assert!(listed(run.path(), "running").is_empty());
    let mut counted = 0;
    for (i, name) in names.iter().enumerate() {
        let dir = DIRS[usize::from(slot_of(final_status(i)))];
        let file = job_dir_name(name);
        let link = run.path().join("by-status").join(dir).join(&*file);
        let target = std::fs::read_link(&link).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(target, Path::new("../../jobs").join(&*file), "{name}");
        counted += 1;
    }
    let total: usize = DIRS.iter().map(|d| listed(run.path(), d).len()).sum();
    assert_eq!(total, counted, "one link per job, no strays");
}

#[test]
fn a_link_that_fails_after_a_good_start_is_one_error_at_finish() {
    let run = tempfile::tempdir().unwrap();
    let o = ObserverHarness::new(create, "").unwrap();
    o.send(&[started(run.path(), &["a", "b"])]);
    // The open `passed/` is gone: making a link in it fails (ENOENT), after the start went well.
    std::fs::remove_dir(run.path().join("by-status/passed")).unwrap();
    o.send(&[status("a", JobStatus::PASSED)]);
    o.send(&[status("b", JobStatus::FAILED)]);
    let err = o.finish().unwrap_err();
    assert_eq!(err.kind, ErrorKind::IO);
    let message = err.message.to_string();
    assert!(
        message.starts_with("status-dirs: cannot link a into "),
        "{message}"
    );
    assert!(message.contains("passed"), "{message}");
    assert!(
        listed(run.path(), "failed").is_empty(),
        "nothing more is written after the first error"
    );
}
