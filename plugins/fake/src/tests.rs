//! The fake backend driven through the SDK's ABI adapter by the test kit's fake host.

use std::time::{Duration, Instant};

use flowrun_plugin_sdk::{
    CapabilityFlags, EndKind, ErrorKind, Event, JobEventKind, JobId, SubmitAnswerKind,
};
use flowrun_plugin_testkit::{Contract, FakeHost, TestBackend, TestJob};

use super::create;

const WAIT: Duration = Duration::from_secs(10);

struct Env {
    _dir: tempfile::TempDir,
    host: FakeHost,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new(dir.path());
    Env { _dir: dir, host }
}

impl Env {
    fn backend(&self, config: &str) -> TestBackend {
        match self.host.backend(create, config) {
            Ok(b) => b,
            Err(e) => panic!("config {config:?} refused: {e}"),
        }
    }

    fn jobs(&mut self, names: &[&str]) -> Vec<TestJob> {
        names
            .iter()
            .map(|n| self.host.shell_job(n, "this is never run"))
            .collect()
    }

    /// Submits jobs `names` (retrying busy ones) and returns each one's end event, in order.
    fn run(&mut self, backend: &TestBackend, names: &[&str]) -> Vec<Event> {
        let jobs = self.jobs(names);
        let ids: Vec<JobId> = jobs.iter().map(TestJob::id).collect();
        let answers = self.host.submit_all(backend, jobs, WAIT);
        assert!(
            answers
                .iter()
                .all(|a| a.kind() == SubmitAnswerKind::ACCEPTED),
            "{answers:?}"
        );
        ids.iter()
            .map(|id| self.host.wait_end(*id, WAIT).expect("job ended"))
            .collect()
    }
}

fn config_error(config: &str) -> String {
    let env = env();
    match env.host.backend(create, config) {
        Ok(_) => panic!("config {config:?} should be refused"),
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::CONFIG, "{e}");
            e.message
        }
    }
}

fn exit_code(e: &Event) -> Option<i32> {
    assert_eq!(e.kind(), JobEventKind::FINISHED, "{e:?}");
    assert_eq!(e.end(), EndKind::EXITED, "{e:?}");
    e.exit_code()
}

#[test]
fn by_default_every_job_passes_at_once_from_submit() {
    let mut env = env();
    let backend = env.backend("");
    let caps = backend.capabilities();
    assert!(caps
        .flags
        .contains(CapabilityFlags::BATCH_SUBMIT | CapabilityFlags::BATCH_KILL));
    assert_eq!(caps.default_max_parallel, 0);

    let jobs = env.jobs(&["a", "b"]);
    let ids: Vec<JobId> = jobs.iter().map(TestJob::id).collect();
    let answers = backend.submit(&jobs);
    assert!(answers
        .iter()
        .all(|a| a.kind() == SubmitAnswerKind::ACCEPTED));
    // Instant jobs are reported inline: every event is there when submit returns.
    for id in ids {
        let started = env
            .host
            .next_event(Duration::ZERO)
            .expect("STARTED already emitted");
        assert_eq!((started.id(), started.kind()), (id, JobEventKind::STARTED));
        let end = env
            .host
            .next_event(Duration::ZERO)
            .expect("FINISHED already emitted");
        assert_eq!(end.id(), id);
        assert_eq!(exit_code(&end), Some(0));
    }
    // Nothing was written: the log files do not exist.
    assert!(!env._dir.path().join("jobs/a/output.log").exists());
    backend.shutdown();
}

#[test]
fn outcome_fail_fails_every_job_with_exit_code_1_or_the_configured_one() {
    let mut env = env();
    let ends = env.run(&env.backend("outcome = \"fail\""), &["x"]);
    assert_eq!(exit_code(&ends[0]), Some(1));
    let ends = env.run(&env.backend("outcome = \"fail\"\nexit_code = 7"), &["y"]);
    assert_eq!(exit_code(&ends[0]), Some(7));
    let ends = env.run(&env.backend("outcome = \"pass\"\nexit_code = 7"), &["z"]);
    assert_eq!(exit_code(&ends[0]), Some(0));
}

#[test]
fn outcomes_globs_pick_the_most_specific_pattern() {
    let mut env = env();
    let backend = env.backend(
        r#"
        outcome = "pass"
        [outcomes]
        "*" = "fail"
        "sim_*" = "pass"
        "sim_bad_*" = "fail"
        "sim_bad_but_ok" = "pass"
        "#,
    );
    let codes: Vec<_> = env
        .run(&backend, &["lint", "sim_a", "sim_bad_1", "sim_bad_but_ok"])
        .iter()
        .map(exit_code)
        .collect();
    assert_eq!(codes, [Some(1), Some(0), Some(1), Some(0)]);

    // Without a catch-all, unmatched jobs get `outcome`.
    let backend = env.backend("outcome = \"fail\"\noutcomes = { \"ok_*\" = \"pass\" }");
    let codes: Vec<_> = env
        .run(&backend, &["ok_1", "other"])
        .iter()
        .map(exit_code)
        .collect();
    assert_eq!(codes, [Some(0), Some(1)]);
}

#[test]
fn duration_and_durations_delay_the_end_in_real_time() {
    let mut env = env();
    let backend = env.backend(
        "duration = \"300ms\"\ndurations = { \"quick_*\" = \"0s\", \"slow\" = \"600ms\" }",
    );
    let start = Instant::now();
    let jobs = env.jobs(&["quick_1", "normal", "slow"]);
    let ids: Vec<JobId> = jobs.iter().map(TestJob::id).collect();
    backend.submit(&jobs);
    let quick = env.host.wait_end(ids[0], WAIT).unwrap();
    assert_eq!(exit_code(&quick), Some(0));
    assert!(
        start.elapsed() < Duration::from_millis(250),
        "a 0s job must end at once"
    );
    let normal = env.host.wait_end(ids[1], WAIT).unwrap();
    let normal_at = start.elapsed();
    assert_eq!(exit_code(&normal), Some(0));
    let slow = env.host.wait_end(ids[2], WAIT).unwrap();
    let slow_at = start.elapsed();
    assert_eq!(exit_code(&slow), Some(0));
    assert!(normal_at >= Duration::from_millis(300), "{normal_at:?}");
    assert!(slow_at >= Duration::from_millis(600), "{slow_at:?}");
    assert!(slow_at < Duration::from_secs(5), "{slow_at:?}");
    backend.shutdown();
}

#[test]
fn fail_rate_is_deterministic_per_seed_and_about_the_right_share() {
    let names: Vec<String> = (0..400).map(|i| format!("job_{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = |config: &str| -> Vec<Option<i32>> {
        let mut env = env();
        let backend = env.backend(config);
        env.run(&backend, &names).iter().map(exit_code).collect()
    };
    let first = results("fail_rate = 0.25\nseed = 42");
    let again = results("fail_rate = 0.25\nseed = 42");
    assert_eq!(first, again, "same seed, same results");
    let failures = first.iter().filter(|c| **c == Some(1)).count();
    assert!(
        (60..=140).contains(&failures),
        "about 25% of 400 should fail, got {failures}"
    );
    let other_seed = results("fail_rate = 0.25\nseed = 43");
    assert_ne!(first, other_seed, "another seed draws other jobs");

    assert!(results("fail_rate = 0.0").iter().all(|c| *c == Some(0)));
    assert!(results("fail_rate = 1.0").iter().all(|c| *c == Some(1)));
    // `outcomes` decides before the draw.
    assert!(results("fail_rate = 1.0\noutcomes = { \"*\" = \"pass\" }")
        .iter()
        .all(|c| *c == Some(0)));
}

#[test]
fn busy_every_refuses_every_nth_submission_then_accepts_the_job() {
    let mut env = env();
    let backend = env.backend("busy_every = 3");
    let jobs = env.jobs(&["a", "b", "c", "d", "e", "f"]);
    let answers = backend.submit(&jobs);
    let kinds: Vec<_> = answers.iter().map(|a| a.kind()).collect();
    use SubmitAnswerKind as K;
    assert_eq!(
        kinds,
        [
            K::ACCEPTED,
            K::ACCEPTED,
            K::BUSY,
            K::ACCEPTED,
            K::ACCEPTED,
            K::BUSY
        ]
    );
    // The jobs turned away are accepted when offered again.
    let again = backend.submit(&[jobs[2].clone(), jobs[5].clone()]);
    assert!(again.iter().all(|a| a.kind() == K::ACCEPTED), "{again:?}");
    for job in &jobs {
        assert_eq!(
            exit_code(&env.host.wait_end(job.id(), WAIT).unwrap()),
            Some(0)
        );
    }
    assert!(backend.stats().contains("busy = 2"), "{}", backend.stats());
}

#[test]
fn kill_ends_a_pending_job_killed_and_ignores_ended_or_unknown_ids() {
    let mut env = env();
    let backend = env.backend("duration = \"1h\"\ndurations = { \"instant\" = \"0s\" }");
    let jobs = env.jobs(&["long", "instant"]);
    let (long, instant) = (jobs[0].id(), jobs[1].id());
    backend.submit(&jobs);
    assert_eq!(
        exit_code(&env.host.wait_end(instant, WAIT).unwrap()),
        Some(0)
    );
    let start = Instant::now();
    backend.kill(&[long, instant, JobId(u64::MAX)]);
    let end = env.host.wait_end(long, WAIT).expect("killed job ends");
    assert_eq!(
        (end.kind(), end.end()),
        (JobEventKind::FINISHED, EndKind::KILLED)
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    // Killing again, or killing the instant job, produces nothing more.
    backend.kill(&[long, instant]);
    while let Some(e) = env.host.next_event(Duration::from_millis(200)) {
        assert_eq!(
            e.kind(),
            JobEventKind::STARTED,
            "no job may end twice: {e:?}"
        );
    }
    backend.shutdown();
}

#[test]
fn shutdown_kills_pending_jobs_returns_promptly_and_refuses_later_jobs() {
    let mut env = env();
    let backend = env.backend("duration = \"1h\"");
    let jobs = env.jobs(&["p1", "p2"]);
    let ids: Vec<JobId> = jobs.iter().map(TestJob::id).collect();
    backend.submit(&jobs);
    let start = Instant::now();
    backend.shutdown();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        start.elapsed()
    );
    for id in ids {
        // The events were emitted by shutdown itself; the wait is only the test kit's polling.
        let end = env
            .host
            .wait_end(id, Duration::from_millis(100))
            .expect("ended by shutdown");
        assert_eq!(end.end(), EndKind::KILLED);
        assert!(end.reason().contains("shut down"), "{end:?}");
    }
    let late = env.jobs(&["late"]);
    let answers = backend.submit(&late);
    assert_eq!(answers[0].kind(), SubmitAnswerKind::REJECTED);
    backend.shutdown(); // idempotent
}

#[test]
fn write_logs_writes_one_line_per_job_into_its_log() {
    let mut env = env();
    let backend =
        env.backend("write_logs = true\noutcomes = { \"bad\" = \"fail\" }\nexit_code = 2");
    let jobs = env.jobs(&["good", "bad"]);
    let logs: Vec<String> = jobs
        .iter()
        .map(|j| j.job().log_path().to_string())
        .collect();
    let ids: Vec<JobId> = jobs.iter().map(TestJob::id).collect();
    // A log left by an earlier run is replaced, never appended to.
    std::fs::write(&logs[0], "an older run's line\n").unwrap();
    backend.submit(&jobs);
    for id in ids {
        env.host.wait_end(id, WAIT).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&logs[0]).unwrap(),
        "fake job good: pass\n"
    );
    assert_eq!(
        std::fs::read_to_string(&logs[1]).unwrap(),
        "fake job bad: fail (exit code 2)\n"
    );
}

#[test]
fn an_unwritable_log_fails_the_job_with_a_reason() {
    let mut env = env();
    let backend = env.backend("write_logs = true");
    let job = env.jobs(&["nolog"]).remove(0);
    let job = job.log_path(env._dir.path().join("missing/dir/output.log"));
    let id = job.id();
    backend.submit(&[job]);
    let end = env.host.wait_end(id, WAIT).unwrap();
    assert_eq!(end.end(), EndKind::FAILED);
    assert!(end.reason().contains("cannot write the log"), "{end:?}");
    assert_eq!(end.exit_code(), None);
}

#[test]
fn config_errors_name_the_key() {
    let cases = [
        ("outcom = \"pass\"", "`outcom`"),
        ("outcome = \"maybe\"", "`outcome`"),
        ("outcome = 3", "`outcome`"),
        ("outcomes = { \"a*\" = \"maybe\" }", "`outcomes.\"a*\"`"),
        ("outcomes = \"pass\"", "`outcomes`"),
        ("outcomes = { \"a[\" = \"pass\" }", "`outcomes.\"a[\"`"),
        ("duration = \"soon\"", "`duration`"),
        ("duration = 5", "`duration`"),
        ("durations = { \"x\" = \"5 parsecs\" }", "`durations.\"x\"`"),
        ("fail_rate = 1.5", "`fail_rate`"),
        ("fail_rate = \"half\"", "`fail_rate`"),
        ("seed = \"x\"", "`seed`"),
        ("busy_every = 1", "`busy_every`"),
        ("busy_every = 0", "`busy_every`"),
        ("exit_code = 0", "`exit_code`"),
        ("write_logs = \"yes\"", "`write_logs`"),
    ];
    for (config, key) in cases {
        let message = config_error(config);
        assert!(
            message.contains(key),
            "config {config:?}: message {message:?} should name {key}"
        );
    }
    assert!(config_error("this is = not toml").len() > 5);
}

#[test]
fn many_instant_jobs_in_one_batch_are_all_answered_and_counted() {
    // The inline path that the 1M-job benchmark measures (its cost is measured there, not here).
    let mut env = env();
    let backend = env.backend("");
    let template = env.jobs(&["template"]).remove(0);
    let jobs: Vec<TestJob> = (0..50_000u64)
        .map(|i| template.clone().with_id(JobId(1_000_000 + i)))
        .collect();
    let answers = backend.submit(&jobs);
    assert_eq!(answers.len(), 50_000);
    assert!(
        backend.stats().contains("passed = 50000"),
        "{}",
        backend.stats()
    );
}

#[test]
fn keeps_the_backend_contract_with_logs_and_without() {
    // The fake runs nothing: the contract's job names get the outcomes the check expects.
    let policy = "outcomes = { \"contract-fail\" = \"fail\" }\nexit_code = 3\ndurations = { \"contract-kill\" = \"1h\" }";
    Contract::new(create, policy).simulated().check().unwrap();
    Contract::new(create, &format!("{policy}\nwrite_logs = true"))
        .simulated()
        .check()
        .unwrap();
}
