//! The command dialect on the engine's simulation (manual clock), against a scripted
//! scheduler that forgets its jobs when they end, as Grid Engine and PBS do: `fsub`, `fstat`,
//! `facct`, `fdel`, configured through templates alone. A job's behaviour is written in its
//! command as words the fake scheduler reads from the job's script: `run=SECS` (default 2),
//! `exit=N`, `nofile` (it dies without its script writing the exit status), `linger` (it stays
//! in `fstat` as `C <exit>` once ended), `odd` (it runs in a state the table does not list),
//! `norecord` (`facct` does not know it).

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use flowrun_plugin_api::engine::{
    testing::{self, Simulation},
    CommandLine, CommandOutput, CommandRunner, Dialect, Job, JobKey, ManualClock, Update, Verdict,
};
use parking_lot::Mutex;

use crate::{config, dialect::CommandDialect};

/// The backend table of the tests: the fake scheduler, through templates.
const TABLE: &str = r#"
scheduler = "Fake"
submit = ["fsub", "-N", "{run_tag}", ["-l", "t={timeout_s}"], "-o", "{job_dir}/fake.out", "{script}"]
submit_id = '^Your job (\d+) submitted'
status = ["fstat", "-u", "{user}"]
status_line = '^(?P<id>\d+) \S+ (?P<state>\w+)(?: (?P<exit>\d+))?$'
states = { pending = ["Q"], running = ["R"], done = ["C"], timeout = ["TO"], cancelled = ["DEL"] }
cancel = ["fdel", "{ids}"]
cancel_ok = 'does not exist'
cancel_all = ["fdel", "-N", "{run_tag}"]
final_status = ["facct", "{ids}"]
final_status_line = '^(?P<id>\d+)\|(?P<state>\w+)\|(?P<exit>\d+)$'
transient = 'try again'
poll_interval = "1s"
"#;

#[derive(Debug, Clone)]
struct FakeJob {
    name: String,
    script: PathBuf,
    words: String,
    submitted: Duration,
    limit: Option<f64>,
    /// When it ended and how: (state for facct, exit status).
    ended: Option<(Duration, &'static str, i32)>,
}

impl FakeJob {
    fn has(&self, word: &str) -> bool {
        self.words.split_whitespace().any(|w| w == word)
    }
    fn num(&self, key: &str, default: f64) -> f64 {
        self.words
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .map_or(default, |v| v.parse().unwrap())
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    jobs: BTreeMap<String, FakeJob>,
    calls: Vec<(String, Vec<String>)>,
    /// Every command fails transiently in this window.
    outage: Option<(Duration, Duration)>,
    /// The next submissions print this instead of an id.
    garbled_submissions: usize,
}

struct FakeScheduler {
    clock: Arc<ManualClock>,
    state: Mutex<State>,
}

impl FakeScheduler {
    /// Moves every job to where it is at the current time: a job that ends writes its exit
    /// status file (unless `nofile`), as the job's script does.
    fn advance(&self, st: &mut State) {
        let now = self.clock.elapsed();
        for job in st.jobs.values_mut() {
            if job.ended.is_some() {
                continue;
            }
            let start = job.submitted + Duration::from_millis(500);
            let run = job.num("run", 2.0);
            let (at, state, code) = match job.limit {
                Some(limit) if limit < run => (start + Duration::from_secs_f64(limit), "TO", 137),
                _ => (
                    start + Duration::from_secs_f64(run),
                    "C",
                    job.num("exit", 0.0) as i32,
                ),
            };
            if now < at {
                continue;
            }
            job.ended = Some((at, state, code));
            if state == "C" && !job.has("nofile") {
                let file = job.script.parent().unwrap().join("command-exit-status.1");
                std::fs::write(file, format!("{code}\n")).unwrap();
            }
        }
    }

    fn calls(&self, program: &str) -> Vec<Vec<String>> {
        let st = self.state.lock();
        st.calls
            .iter()
            .filter(|(p, _)| p == program)
            .map(|(_, a)| a.clone())
            .collect()
    }
}

impl CommandRunner for FakeScheduler {
    fn run(&self, command: &CommandLine, _limit: Duration) -> CommandOutput {
        let (program, args) = (command.program.as_str(), &command.args);
        let mut st = self.state.lock();
        st.calls.push((program.to_string(), args.clone()));
        let now = self.clock.elapsed();
        if st
            .outage
            .is_some_and(|(from, to)| (from..to).contains(&now))
        {
            return CommandOutput::exited(
                program,
                2,
                "",
                "fake: cannot reach the server, try again",
            );
        }
        self.advance(&mut st);
        let ok = |stdout: &str| CommandOutput::exited(program, 0, stdout, "");
        let arg = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|i| args[i + 1].clone())
        };
        match program {
            "fsub" => {
                if st.garbled_submissions > 0 {
                    st.garbled_submissions -= 1;
                    return ok("Submitted.\n");
                }
                let script = PathBuf::from(args.last().unwrap());
                let words = std::fs::read_to_string(&script).unwrap().replace('\'', " ");
                st.next_id += 1;
                let id = (1000 + st.next_id).to_string();
                let limit = arg("-l").map(|l| l.strip_prefix("t=").unwrap().parse().unwrap());
                st.jobs.insert(
                    id.clone(),
                    FakeJob {
                        name: arg("-N").unwrap(),
                        script,
                        words,
                        submitted: now,
                        limit,
                        ended: None,
                    },
                );
                ok(&format!("fsub: banner line\nYour job {id} submitted\n"))
            }
            "fstat" => {
                assert_eq!(arg("-u").as_deref(), Some("tester"), "{{user}}");
                let mut text = String::new();
                for (id, job) in &st.jobs {
                    let row = match job.ended {
                        Some((_, "C", code)) if job.has("linger") => format!("C {code}"),
                        Some((_, "C", code)) if job.has("flagged") => format!("F {code}"),
                        Some(_) => continue,
                        None if now < job.submitted + Duration::from_millis(500) => "Q".into(),
                        None if job.has("odd") => "Zz".into(),
                        None => "R".into(),
                    };
                    text.push_str(&format!("{id} {} {row}\n", job.name));
                }
                ok(&text)
            }
            "facct" => {
                let mut text = String::new();
                for id in args {
                    let Some(job) = st.jobs.get(id) else { continue };
                    if let (Some((_, state, code)), false) = (job.ended, job.has("norecord")) {
                        text.push_str(&format!("{id}|{state}|{code}\n"));
                    }
                }
                ok(&text)
            }
            "fdel" => {
                let by_name = arg("-N");
                let mut missing = String::new();
                let ids: Vec<String> = match &by_name {
                    Some(name) => st
                        .jobs
                        .iter()
                        .filter(|(_, j)| &j.name == name)
                        .map(|(id, _)| id.clone())
                        .collect(),
                    None => args.clone(),
                };
                for id in ids {
                    match st.jobs.get_mut(&id) {
                        Some(job) if job.ended.is_none() => job.ended = Some((now, "DEL", 137)),
                        _ if by_name.is_some() => {}
                        _ => missing.push_str(&format!("fdel: job {id} does not exist\n")),
                    }
                }
                let code = if missing.is_empty() { 0 } else { 1 };
                CommandOutput::exited(program, code, "", &missing)
            }
            other => panic!("the fake scheduler has no {other}"),
        }
    }
}

struct Bench {
    sim: Simulation<CommandDialect>,
    fake: Arc<FakeScheduler>,
    dir: tempfile::TempDir,
    next: u64,
}

impl Bench {
    fn new(extra: &str) -> Bench {
        Self::with_table(&format!("{TABLE}{extra}"))
    }

    fn with_table(table: &str) -> Bench {
        let (engine, keys) = config::parse(table).unwrap();
        let mut dialect = CommandDialect::new(keys).unwrap();
        // `{user}` is the name of the user flowrun runs as: the fake expects this one.
        dialect.set_user_for_tests("tester");
        let clock = Arc::new(ManualClock::new());
        let fake = Arc::new(FakeScheduler {
            clock: clock.clone(),
            state: Mutex::new(State::default()),
        });
        Bench {
            sim: Simulation::new(dialect, engine, fake.clone(), clock),
            fake,
            dir: tempfile::tempdir().unwrap(),
            next: 1,
        }
    }

    fn job(&mut self, name: &str, behaviour: &str) -> Job {
        let key = JobKey(self.next);
        self.next += 1;
        testing::job(key, name, behaviour, self.dir.path(), "flowrun-fake-1")
    }

    fn submit(&mut self, jobs: Vec<Job>) -> Vec<JobKey> {
        let keys = jobs.iter().map(|j| j.key).collect();
        let answers = self.sim.submit(jobs);
        assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
        keys
    }

    fn one(&mut self, name: &str, behaviour: &str) -> JobKey {
        let job = self.job(name, behaviour);
        self.submit(vec![job])[0]
    }

    fn end(&self, key: JobKey) -> Update {
        let ends: Vec<Update> = self
            .sim
            .events()
            .into_iter()
            .filter(|(_, e)| e.job == key && !matches!(e.update, Update::Started { .. }))
            .map(|(_, e)| e.update)
            .collect();
        assert_eq!(ends.len(), 1, "job {key:?} must end once: {ends:?}");
        ends[0].clone()
    }

    fn verdict(&self, key: JobKey) -> Verdict {
        match self.end(key) {
            Update::Finished { verdict, .. } => verdict,
            other => panic!("job {key:?} did not finish: {other:?}"),
        }
    }

    fn finish(&mut self) {
        assert!(
            self.sim.run_to_completion(Duration::from_secs(600)),
            "jobs left: {}",
            self.sim.tracked()
        );
    }
}

fn failed(reason: &str, exit_code: Option<i32>) -> Verdict {
    Verdict::Failed {
        reason: reason.into(),
        exit_code,
        ran: true,
    }
}

#[test]
fn jobs_the_scheduler_forgets_are_judged_by_their_exit_status_files() {
    let mut b = Bench::new("");
    let jobs: Vec<Job> = (0..30)
        .map(|i| {
            b.job(
                &format!("j{i}"),
                &format!("run={} exit={}", 1 + i % 4, i % 3),
            )
        })
        .collect();
    let keys = b.submit(jobs);
    b.finish();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(b.verdict(*key), Verdict::Exited((i % 3) as i32), "j{i}");
    }
    assert!(
        b.fake.calls("facct").is_empty(),
        "the files told every verdict: nothing to ask the scheduler"
    );
    assert_eq!(b.fake.calls("fsub").len(), 30);
}

#[test]
fn the_submission_is_the_template_with_the_jobs_values() {
    let mut b = Bench::new("");
    assert!(
        b.sim.dialect().enforces_timeout(),
        "the template passes {{timeout_s}}"
    );
    let mut limited = b.job("limited", "run=1");
    limited.timeout = Some(Duration::from_millis(1500));
    let plain = b.job("plain", "run=1");
    b.submit(vec![limited, plain]);
    b.finish();
    let mut calls = b.fake.calls("fsub");
    calls.sort();
    let jobs = b.dir.path().join("jobs");
    let dir = |name: &str| jobs.join(name).display().to_string();
    assert_eq!(
        calls,
        [
            vec![
                "-N".to_string(),
                "flowrun-fake-1".into(),
                "-l".into(),
                "t=2".into(),
                "-o".into(),
                format!("{}/fake.out", dir("limited")),
                format!("{}/command-job.sh", dir("limited")),
            ],
            vec![
                "-N".to_string(),
                "flowrun-fake-1".into(),
                "-o".into(),
                format!("{}/fake.out", dir("plain")),
                format!("{}/command-job.sh", dir("plain")),
            ],
        ]
    );
    let without_limit = TABLE.replace(r#"["-l", "t={timeout_s}"], "#, "");
    let b = Bench::with_table(&without_limit);
    assert!(
        !b.sim.dialect().enforces_timeout(),
        "without a time limit in the template, flowrun enforces timeouts itself"
    );
}

#[test]
fn a_job_killed_by_its_time_limit_is_read_from_the_final_status_query() {
    let mut b = Bench::new("");
    let mut job = b.job("slow", "run=30");
    job.timeout = Some(Duration::from_secs(3));
    let key = b.submit(vec![job])[0];
    b.finish();
    assert_eq!(b.verdict(key), failed("Fake time limit (TO)", Some(137)));
    assert!(b.fake.calls("facct").iter().all(|ids| ids == &["1001"]));
}

#[test]
fn a_job_that_left_no_trace_is_lost_with_the_reason() {
    let mut b = Bench::new("lost_after = \"20s\"\nsubmit_grace = \"0s\"");
    let key = b.one("ghost", "run=1 nofile norecord");
    b.finish();
    let Update::Lost { reason, native_id } = b.end(key) else {
        panic!("{:?}", b.end(key))
    };
    assert_eq!(native_id.as_deref(), Some("1001"));
    assert_eq!(
        reason,
        "Fake job 1001 left the queue, but neither an exit status from its script nor \
         `final_status` told how it ended within 20s (killed by the scheduler, by a signal, or \
         from outside flowrun?)"
    );
}

#[test]
fn a_flowrun_kill_cancels_the_job_and_it_ends_killed() {
    let mut b = Bench::new("");
    let running = b.one("running", "run=60");
    let pending = b.one("pending", "run=60");
    b.sim.run_for(Duration::from_secs(2));
    b.sim.kill(&[running, pending]);
    b.finish();
    assert_eq!(b.verdict(running), Verdict::Killed);
    assert_eq!(b.verdict(pending), Verdict::Killed);
    assert_eq!(b.fake.calls("fdel"), [["1001", "1002"]]);
}

#[test]
fn shutdown_cancels_by_id_then_by_name_and_leaves_nothing_queued() {
    let mut b = Bench::new("");
    let keys = {
        let jobs = (0..3).map(|i| b.job(&format!("s{i}"), "run=600")).collect();
        b.submit(jobs)
    };
    b.sim.run_for(Duration::from_secs(2));
    b.sim.shutdown();
    for key in keys {
        assert_eq!(b.verdict(key), Verdict::Killed);
    }
    assert_eq!(
        b.fake.calls("fdel"),
        [
            vec!["1001".to_string(), "1002".into(), "1003".into()],
            vec!["-N".into(), "flowrun-fake-1".into()]
        ]
    );
    let st = b.fake.state.lock();
    assert!(
        st.jobs.values().all(|j| j.ended.is_some()),
        "nothing left queued"
    );
}

#[test]
fn a_cancel_of_jobs_that_already_ended_counts_as_done() {
    let mut b = Bench::new("");
    let key = b.one("quick", "run=1 exit=4");
    b.sim.run_for(Duration::from_secs(1));
    // It ends between the poll and the cancel: fdel says it does not exist.
    b.fake.clock.advance(Duration::from_secs(3));
    b.sim.kill(&[key]);
    b.finish();
    assert_eq!(b.verdict(key), Verdict::Killed);
    assert_eq!(b.fake.calls("fdel").len(), 1, "not retried");
}

#[test]
fn rows_that_carry_their_exit_status_need_no_file_and_failed_never_passes() {
    let table = TABLE.replace(r#"done = ["C"]"#, r#"done = ["C"], failed = ["F"]"#);
    let mut b = Bench::with_table(&table);
    let lingering = b.one("lingering", "run=1 exit=5 linger nofile");
    let flagged = b.one("flagged", "run=1 exit=0 flagged nofile");
    b.finish();
    assert_eq!(b.verdict(lingering), Verdict::Exited(5));
    assert_eq!(
        b.verdict(flagged),
        failed(
            "Fake reported F although the job's command exited 0",
            Some(0)
        )
    );
    assert!(b.fake.calls("facct").is_empty());
}

#[test]
fn a_state_the_table_does_not_list_counts_as_pending_until_the_job_leaves() {
    let mut b = Bench::new("");
    let key = b.one("odd", "run=5 exit=2 odd");
    b.finish();
    assert_eq!(b.verdict(key), Verdict::Exited(2));
    let started = b
        .sim
        .events()
        .iter()
        .filter(|(_, e)| e.job == key)
        .map(|(t, e)| (*t, e.update.clone()))
        .find(|(_, u)| matches!(u, Update::Started { .. }));
    // Never shown as running: STARTED comes with the end, which shows that it ran.
    assert!(
        started
            .as_ref()
            .is_some_and(|(t, _)| *t >= Duration::from_secs(5)),
        "{started:?}"
    );
}

#[test]
fn an_outage_of_20_seconds_fails_no_job_and_submissions_are_retried() {
    let mut b = Bench::new("submit_rate = \"1/s\"\nsubmit_threads = 1");
    b.fake.state.lock().outage = Some((Duration::from_secs(4), Duration::from_secs(24)));
    let jobs: Vec<Job> = (0..10)
        .map(|i| b.job(&format!("o{i}"), &format!("run=3 exit={}", i % 2)))
        .collect();
    let keys = b.submit(jobs);
    b.finish();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(b.verdict(*key), Verdict::Exited((i % 2) as i32), "o{i}");
    }
    let stats = b.sim.stats();
    assert!(stats.contains("submit_retries = "), "{stats}");
    assert!(!stats.contains("submit_retries = 0\n"), "{stats}");
}

#[test]
fn a_submission_without_an_id_fails_the_job_with_the_output() {
    let mut b = Bench::new("");
    b.fake.state.lock().garbled_submissions = 1;
    let key = b.one("garbled", "run=1");
    b.finish();
    assert_eq!(
        b.verdict(key),
        Verdict::Failed {
            reason: "cannot find a job id in what fsub printed (\"Submitted.\"): check \
                     `submit_id`"
                .into(),
            exit_code: None,
            ran: false
        }
    );
}

#[test]
fn an_old_exit_status_file_is_never_read_as_the_new_jobs() {
    let mut b = Bench::new("lost_after = \"15s\"\nsubmit_grace = \"0s\"");
    let job = b.job("rerun", "run=1 nofile norecord");
    std::fs::create_dir_all(&job.job_dir).unwrap();
    std::fs::write(job.job_dir.join("command-exit-status.1"), "0\n").unwrap();
    let key = b.submit(vec![job])[0];
    b.finish();
    assert!(
        matches!(b.end(key), Update::Lost { .. }),
        "the stale file must not pass the job: {:?}",
        b.end(key)
    );
}

#[test]
fn the_log_is_fresh_and_the_script_is_executable() {
    use std::os::unix::fs::PermissionsExt;
    let mut b = Bench::new("");
    let job = b.job("fresh", "run=1");
    std::fs::create_dir_all(&job.job_dir).unwrap();
    std::fs::write(&job.log_path, "an older attempt's output\n").unwrap();
    let (log, script) = (job.log_path.clone(), job.job_dir.join("command-job.sh"));
    b.submit(vec![job]);
    b.sim.run_for(Duration::from_secs(1));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
    let mode = std::fs::metadata(&script).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "{mode:o}");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("command-exit-status.1"), "{text}");
    assert!(text.contains(&format!("exec >{}", log.display())), "{text}");
}
