//! The run loop driven against in-process backend doubles (no plugin library): what it hands
//! to backends, how it treats their answers and events, what it records and publishes, and
//! how it ends. The signals are a channel here.

use std::{
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use regex::{Regex, RegexSet};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::{run_with, setup::ObserverSpec, InstanceFactory, RunOptions};
use crate::{
    backend::{
        Backend, BackendCaps, BackendEvent, EventSender, JobDirOwner, JobEnd, JobRequest,
        SubmitReply, Usage,
    },
    errors::Error,
    flow::{BackendInstance, Flow, Job, Location, Patterns, When},
    observe::{Observer, RunEvent},
    sched::{fixtures::job, Interrupt, JobIx, Status},
};

/// What a double does with one job.
#[derive(Clone)]
enum Act {
    /// Exits with this code, reporting its start and end from another thread.
    Exit(i32),
    /// Reports start and end inside `submit`, before the answer, then the end once more.
    ExitOvertaking(i32),
    /// Writes this into its log, then exits 0.
    Log(&'static str),
    /// Replaces its log by a FIFO, then exits 0.
    FifoLog,
    /// Busy this many times, then exits 0.
    Busy(u32),
    /// Refused.
    Reject(&'static str),
    /// Accepted, then silent: no end, no answer to kills.
    Silent,
    /// Runs until killed, then reports the kill.
    UntilKilled,
    /// Makes `results.json` a directory (so it cannot be written), then exits 0.
    BreakResults,
    /// Ends with a native id, usage figures and a detail.
    Measured,
}

/// One submitted job as a double saw it: (job, attempt, env, cwd, log_path).
type Request = (String, u32, Vec<(String, String)>, PathBuf, PathBuf);

/// What a double saw.
#[derive(Default)]
struct Seen {
    /// Per submitted job.
    requests: Vec<Request>,
    /// Jobs per submit call.
    batches: Vec<usize>,
    kills: Vec<JobIx>,
    /// Per re-attached job: (job, native id, attempt, run tag, log path).
    reattached: Vec<(String, String, u32, String, PathBuf)>,
    /// Whether results.json existed when the backend was asked to shut down.
    results_at_shutdown: Option<bool>,
}

struct Double {
    sender: Arc<dyn EventSender>,
    caps: BackendCaps,
    act: Arc<dyn Fn(&str) -> Act + Send + Sync>,
    seen: Arc<Mutex<Seen>>,
    busy: Mutex<std::collections::HashMap<JobIx, u32>>,
    /// Told each job's name when it is submitted.
    submitted: Option<Mutex<mpsc::Sender<String>>>,
    run_dir: Mutex<Option<PathBuf>>,
    acts: Mutex<std::collections::HashMap<JobIx, Act>>,
}

fn exited(job: JobIx, code: i32) -> BackendEvent {
    BackendEvent::Finished {
        job,
        end: JobEnd::Exited(code),
        detail: String::new(),
        logs: Vec::new(),
        native_id: None,
        usage: Usage::default(),
    }
}

fn started(job: JobIx) -> BackendEvent {
    BackendEvent::Started {
        job,
        interactive: false,
        native_id: None,
    }
}

impl Backend for Double {
    fn capabilities(&self) -> BackendCaps {
        self.caps
    }

    fn submit(&self, jobs: &[JobRequest<'_>]) -> Vec<SubmitReply> {
        let mut seen = self.seen.lock();
        seen.batches.push(jobs.len());
        let mut replies = Vec::new();
        for r in jobs {
            let act = (self.act)(&r.job.name);
            *self.run_dir.lock() = Some(r.run.run_dir.clone());
            if let Act::Busy(n) = act {
                let mut busy = self.busy.lock();
                let left = busy.entry(r.ix).or_insert(n);
                if *left > 0 {
                    *left -= 1;
                    replies.push(SubmitReply::Busy);
                    continue;
                }
            }
            seen.requests.push((
                r.job.name.clone(),
                r.attempt,
                r.env()
                    .map(|(k, v)| (k.to_string(), v.into_owned()))
                    .collect(),
                PathBuf::from(&*r.cwd()),
                PathBuf::from(&r.log_path),
            ));
            if let Some(tx) = &self.submitted {
                let _ = tx.lock().send(r.job.name.clone());
            }
            self.acts.lock().insert(r.ix, act.clone());
            let (job, sender, log) = (r.ix, self.sender.clone(), PathBuf::from(&r.log_path));
            let run_dir = r.run.run_dir.clone();
            match act {
                Act::Reject(why) => {
                    replies.push(SubmitReply::Rejected(why.into()));
                    continue;
                }
                Act::ExitOvertaking(code) => {
                    sender.send(started(job));
                    sender.send(exited(job, code));
                    sender.send(exited(job, 99));
                    sender.send(BackendEvent::Lost {
                        job,
                        why: "a second end".into(),
                    });
                }
                Act::Silent | Act::UntilKilled => sender.send(started(job)),
                Act::Measured => {
                    sender.send(BackendEvent::Started {
                        job,
                        interactive: false,
                        native_id: Some("4242".into()),
                    });
                    sender.send(BackendEvent::Finished {
                        job,
                        end: JobEnd::Exited(0),
                        detail: "node n17".into(),
                        logs: Vec::new(),
                        native_id: Some("4242".into()),
                        usage: Usage {
                            cpu_s: Some(1.5),
                            max_rss_mb: Some(200.25),
                            source: Some("cgroup".into()),
                        },
                    });
                }
                act => {
                    std::thread::spawn(move || {
                        sender.send(started(job));
                        std::thread::sleep(Duration::from_millis(5));
                        let code = match act {
                            Act::Exit(code) => code,
                            Act::Log(text) => {
                                std::fs::write(&log, text).unwrap();
                                0
                            }
                            Act::FifoLog => {
                                let _ = std::fs::remove_file(&log);
                                nix::unistd::mkfifo(&log, nix::sys::stat::Mode::S_IRWXU).unwrap();
                                0
                            }
                            Act::BreakResults => {
                                std::fs::create_dir(run_dir.join("results.json")).unwrap();
                                0
                            }
                            _ => 0,
                        };
                        sender.send(exited(job, code));
                    });
                }
            }
            replies.push(SubmitReply::Accepted);
        }
        replies
    }

    fn kill(&self, jobs: &[JobIx]) {
        self.seen.lock().kills.extend_from_slice(jobs);
        let acts = self.acts.lock();
        for &job in jobs {
            match acts.get(&job) {
                Some(Act::Silent) => {}
                _ => self.sender.send(BackendEvent::Finished {
                    job,
                    end: JobEnd::Killed,
                    detail: String::new(),
                    logs: Vec::new(),
                    native_id: None,
                    usage: Usage::default(),
                }),
            }
        }
    }

    /// Takes over the jobs whose native id starts with `7`, which then pass; refuses the rest.
    fn reattach(&self, jobs: &[(JobRequest<'_>, &str)]) -> Vec<SubmitReply> {
        let mut seen = self.seen.lock();
        jobs.iter()
            .map(|(r, native)| {
                seen.reattached.push((
                    r.job.name.clone(),
                    native.to_string(),
                    r.attempt,
                    r.run.run_tag.clone(),
                    PathBuf::from(&r.log_path),
                ));
                if !native.starts_with('7') {
                    return SubmitReply::Rejected("the cluster forgot it".into());
                }
                let (job, sender, native) = (r.ix, self.sender.clone(), native.to_string());
                std::thread::spawn(move || {
                    sender.send(BackendEvent::Started {
                        job,
                        interactive: false,
                        native_id: Some(native),
                    });
                    sender.send(exited(job, 0));
                });
                SubmitReply::Accepted
            })
            .collect()
    }

    fn shutdown(&self) {
        let dir = self.run_dir.lock().clone();
        self.seen.lock().results_at_shutdown = dir.map(|d| d.join("results.json").is_file());
    }

    fn stats(&self) -> String {
        String::new()
    }
}

/// Records every event it gets.
struct Recorder(Arc<Mutex<Vec<RunEvent>>>);

impl Observer for Recorder {
    fn on_events(&self, events: &[RunEvent]) {
        self.0.lock().extend_from_slice(events);
    }
    fn finish(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Makes doubles.
struct Doubles {
    act: Arc<dyn Fn(&str) -> Act + Send + Sync>,
    caps: BackendCaps,
    seen: Arc<Mutex<Seen>>,
    events: Arc<Mutex<Vec<RunEvent>>>,
    submitted: Option<mpsc::Sender<String>>,
}

impl Doubles {
    fn new(act: impl Fn(&str) -> Act + Send + Sync + 'static) -> Self {
        Doubles {
            act: Arc::new(act),
            caps: BackendCaps {
                job_dir: JobDirOwner::Host,
                ..BackendCaps::default()
            },
            seen: Arc::default(),
            events: Arc::default(),
            submitted: None,
        }
    }
}

impl InstanceFactory for Doubles {
    fn backend(
        &mut self,
        _inst: &BackendInstance,
        sender: Arc<dyn EventSender>,
    ) -> Result<Box<dyn Backend>, Error> {
        Ok(Box::new(Double {
            sender,
            caps: self.caps,
            act: self.act.clone(),
            seen: self.seen.clone(),
            busy: Mutex::default(),
            submitted: self.submitted.clone().map(Mutex::new),
            run_dir: Mutex::default(),
            acts: Mutex::default(),
        }))
    }

    fn observer(&mut self, _spec: &ObserverSpec) -> Result<Box<dyn Observer>, Error> {
        Ok(Box::new(Recorder(self.events.clone())))
    }
}

fn location() -> Location {
    Location {
        file: Arc::from(Path::new("test.toml")),
        line: 1,
        column: 1,
    }
}

/// A flow of `jobs` on one backend instance `be` with this config.
fn flow(jobs: Vec<Job>, config: &str) -> Flow {
    Flow {
        name: "loop".into(),
        file: PathBuf::from("test.toml"),
        max_parallel: None,
        backends: vec![BackendInstance {
            name: "be".into(),
            kind: "double".into(),
            max_parallel: None,
            config_toml: config.into(),
            location: location(),
        }],
        observers: vec![crate::flow::ObserverInstance {
            name: "rec".into(),
            kind: "rec".into(),
            config_toml: String::new(),
            location: location(),
        }],
        resources: vec![("license".into(), 4)],
        jobs,
    }
}

fn patterns(pass: &[&str], fail: &[&str]) -> Option<Arc<Patterns>> {
    Some(Arc::new(Patterns {
        pass: pass.iter().map(|p| Regex::new(p).unwrap()).collect(),
        fail: RegexSet::new(fail).unwrap(),
        fail_sources: fail.iter().map(|s| s.to_string()).collect(),
    }))
}

struct Outcome {
    code: i32,
    results: Value,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Outcome {
    fn job(&self, name: &str) -> &Value {
        self.results["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap_or_else(|| panic!("no job {name} in {}", self.results))
    }
    fn status(&self, name: &str) -> &str {
        self.job(name)["status"].as_str().unwrap()
    }
    fn reason(&self, name: &str) -> &str {
        self.job(name)["reason"].as_str().unwrap()
    }
}

fn options(out: &Path) -> RunOptions {
    RunOptions {
        out: Some(out.to_path_buf()),
        quiet: true,
        ..RunOptions::default()
    }
}

fn run(
    flow: Flow,
    doubles: &mut Doubles,
    opts: impl FnOnce(&mut RunOptions),
    interrupts: Option<tokio::sync::mpsc::UnboundedReceiver<Interrupt>>,
) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut o = options(&out);
    opts(&mut o);
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let report = run_with(flow, doubles, &o, Some(interrupts.unwrap_or(rx))).unwrap();
    let results = std::fs::read_to_string(out.join("results.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    Outcome {
        code: report.exit_code,
        results,
        out,
        _dir: dir,
    }
}

fn named(name: &str) -> Job {
    job(name)
}

#[test]
fn jobs_run_through_in_process_doubles_with_results_and_events() {
    let mut b = named("b");
    b.needs = vec![0];
    let mut c = named("c");
    c.resources = vec![(0, 2)];
    c.cpus = 3;
    let jobs = vec![named("a"), b, c, named("d")];
    let mut doubles = Doubles::new(|name| match name {
        "a" => Act::Exit(3),
        "d" => Act::Measured,
        _ => Act::Exit(0),
    });
    let r = run(flow(jobs, ""), &mut doubles, |_| {}, None);
    assert_eq!(r.code, 1);
    assert_eq!((r.status("a"), r.reason("a")), ("failed", "exit code 3"));
    assert_eq!(r.job("a")["reason_kind"], "exit_code");
    assert_eq!(r.job("a")["exit_code"], 3);
    assert_eq!(r.job("a")["attempt"], 1);
    assert_eq!(
        (r.status("b"), r.reason("b")),
        ("skipped", "dependency failed: a")
    );
    assert_eq!(r.job("b")["reason_kind"], "dependency");
    assert_eq!(r.job("b")["attempt"], 0, "never handed to a backend");
    assert_eq!(r.status("c"), "passed");
    assert!(r.job("c")["reason_kind"].is_null());
    assert!(r.job("c")["cpu_s"].is_null() && r.job("c")["native_id"].is_null());
    // What the backend measured is forwarded.
    let d = r.job("d");
    assert_eq!(
        (d["cpu_s"].as_f64(), d["max_rss_mb"].as_f64()),
        (Some(1.5), Some(200.25))
    );
    assert_eq!(
        (d["native_id"].as_str(), d["detail"].as_str()),
        (Some("4242"), Some("node n17"))
    );
    // The observer saw the same story.
    let events = doubles.events.lock();
    match &events[0] {
        RunEvent::RunStarted { jobs, phases, .. } => {
            assert_eq!(jobs.len(), 4);
            assert!(phases.to_string().starts_with("setup="), "{phases}");
        }
        e => panic!("{e:?}"),
    }
    match events.last().unwrap() {
        RunEvent::RunFinished {
            summary, phases, ..
        } => {
            assert_eq!((summary.passed, summary.failed, summary.skipped), (2, 1, 1));
            let p = phases.to_string();
            assert!(
                p.starts_with("schedule=") && p.contains(";write_results="),
                "{p}"
            );
        }
        e => panic!("{e:?}"),
    }
    let status = |name: &str, new: Status| {
        events
            .iter()
            .find_map(|e| match e {
                RunEvent::JobStatus(s) if &*s.job == name && s.new == new => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {name} -> {new:?}"))
    };
    assert_eq!(
        status("c", Status::Running).resources.as_deref(),
        Some("cpus=3,license=2")
    );
    let failed = status("a", Status::Failed);
    assert_eq!(
        (failed.reason_kind, failed.exit_code),
        (Some("exit_code"), Some(3))
    );
    assert!(failed.log.is_some());
    let passed = status("d", Status::Passed);
    assert_eq!(
        (passed.cpu_s, passed.native_id.as_deref()),
        (Some(1.5), Some("4242"))
    );
    assert_eq!(status("d", Status::Running).native_id, None);
}

#[test]
fn every_job_gets_the_host_environment_after_its_own() {
    let mut a = named("sim/a");
    a.env = vec![
        ("SEED".into(), "7".into()),
        ("FLOWRUN_JOB_NAME".into(), "spoofed".into()),
    ];
    let mut doubles = Doubles::new(|_| Act::Exit(0));
    let r = run(flow(vec![a], ""), &mut doubles, |_| {}, None);
    assert_eq!(r.code, 0);
    let seen = doubles.seen.lock();
    let (_, attempt, env, cwd, log) = &seen.requests[0];
    let run_dir = r.out.canonicalize().unwrap();
    let job_dir = run_dir.join("jobs/sim%2Fa");
    assert_eq!(*attempt, 1);
    assert_eq!(cwd, &job_dir);
    assert_eq!(log, &job_dir.join("output.log"));
    let get = |k: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(env[0], ("SEED".into(), "7".into()), "the flow's env first");
    assert_eq!(get("FLOWRUN_JOB_NAME"), Some("sim/a"), "the host's wins");
    assert_eq!(get("FLOWRUN_JOB_DIR"), Some(job_dir.to_str().unwrap()));
    assert_eq!(get("FLOWRUN_RUN_DIR"), Some(run_dir.to_str().unwrap()));
    assert_eq!(get("FLOWRUN_ATTEMPT"), Some("1"));
    assert!(get("FLOWRUN_RUN_TAG").unwrap().starts_with("flowrun-loop-"));
}

#[test]
fn events_overtaking_answers_and_second_ends_change_nothing() {
    let mut doubles = Doubles::new(|name| match name {
        "a" => Act::ExitOvertaking(0),
        _ => Act::ExitOvertaking(4),
    });
    let r = run(
        flow(vec![named("a"), named("b")], ""),
        &mut doubles,
        |_| {},
        None,
    );
    // The first end counts: a passed (not "exit code 99", not lost), b exit 4.
    assert_eq!(r.status("a"), "passed", "{}", r.results);
    assert_eq!(r.job("a")["exit_code"], 0);
    assert_eq!((r.status("b"), r.reason("b")), ("failed", "exit code 4"));
    assert_eq!(r.job("b")["exit_code"], 4);
    let events = doubles.events.lock();
    let ends = events
        .iter()
        .filter(|e| matches!(e, RunEvent::JobStatus(s) if s.new.is_terminal()))
        .count();
    assert_eq!(ends, 2, "one end per job");
}

#[test]
fn submissions_go_out_in_the_backends_batches_and_busy_ones_come_back() {
    let jobs: Vec<Job> = (0..10).map(|i| named(&format!("j{i}"))).collect();
    let mut doubles = Doubles::new(|name| match name {
        "j3" => Act::Busy(2),
        _ => Act::Exit(0),
    });
    doubles.caps.max_batch = Some(3);
    let r = run(flow(jobs, ""), &mut doubles, |_| {}, None);
    assert_eq!(r.code, 0);
    let seen = doubles.seen.lock();
    assert!(
        seen.batches.iter().all(|&n| (1..=3).contains(&n)),
        "{:?}",
        seen.batches
    );
    assert_eq!(
        seen.batches.iter().sum::<usize>(),
        12,
        "10 jobs and 2 busy offers"
    );
    // A busy offer is not an attempt.
    assert_eq!(r.job("j3")["attempt"], 1);
}

#[test]
fn a_backend_that_never_reports_after_a_kill_loses_the_job_and_the_run_goes_on() {
    let mut stuck = named("stuck");
    stuck.timeout = Some((Duration::from_millis(100), "100ms".into()));
    let mut after = named("after");
    after.needs = vec![0];
    after.when = When::Always;
    let mut doubles = Doubles::new(|name| match name {
        "stuck" => Act::Silent,
        _ => Act::Exit(0),
    });
    let t = Instant::now();
    let r = run(
        flow(vec![stuck, after, named("other")], "kill_grace = \"200ms\""),
        &mut doubles,
        |o| o.kill_margin = Some(Duration::from_millis(300)),
        None,
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(r.code, 1);
    assert_eq!(r.status("stuck"), "failed");
    assert_eq!(
        r.reason("stuck"),
        "lost by backend be: did not report after kill (timed out after 100ms), waited 500ms"
    );
    assert_eq!(r.job("stuck")["reason_kind"], "lost");
    assert_eq!((r.status("after"), r.status("other")), ("passed", "passed"));
    assert_eq!(doubles.seen.lock().kills, vec![0]);
}

/// Sends `sig` to the run once `job` was submitted, and `second` after that.
fn interrupt_after(
    doubles: &mut Doubles,
    job: &'static str,
    signals: Vec<Interrupt>,
) -> tokio::sync::mpsc::UnboundedReceiver<Interrupt> {
    let (tx, rx): (UnboundedSender<Interrupt>, _) = tokio::sync::mpsc::unbounded_channel();
    let (sub_tx, sub_rx) = mpsc::channel::<String>();
    doubles.submitted = Some(sub_tx);
    std::thread::spawn(move || {
        while let Ok(name) = sub_rx.recv() {
            if name == job {
                for sig in signals {
                    std::thread::sleep(Duration::from_millis(50));
                    let _ = tx.send(sig);
                }
                // Keep the channel open: a closed one is not an interrupt.
                std::thread::sleep(Duration::from_secs(60));
                return;
            }
        }
    });
    rx
}

#[test]
fn an_interrupt_kills_the_rest_but_runs_always_jobs_and_exits_with_the_signal() {
    let mut cleanup = named("cleanup");
    cleanup.needs = vec![0];
    cleanup.when = When::Always;
    let mut later = named("later");
    later.needs = vec![0];
    let mut doubles = Doubles::new(|name| match name {
        "long" => Act::UntilKilled,
        _ => Act::Exit(0),
    });
    let rx = interrupt_after(&mut doubles, "long", vec![Interrupt::Sighup]);
    let r = run(
        flow(vec![named("long"), cleanup, later], ""),
        &mut doubles,
        |_| {},
        Some(rx),
    );
    assert_eq!(r.code, 129);
    assert_eq!(r.results["interrupted"], true);
    assert_eq!(
        (r.status("long"), r.reason("long")),
        ("killed", "killed by SIGHUP while running")
    );
    assert_eq!(r.job("long")["reason_kind"], "interrupted");
    assert_eq!(
        (r.status("later"), r.reason("later")),
        ("skipped", "run interrupted by SIGHUP")
    );
    assert_eq!(
        r.status("cleanup"),
        "passed",
        "cleanup runs on an interrupt"
    );
}

#[test]
fn a_second_signal_abandons_the_run_with_the_cores_reasons() {
    let mut cleanup = named("cleanup");
    cleanup.needs = vec![0];
    cleanup.when = When::Always;
    let mut doubles = Doubles::new(|_| Act::Silent);
    let rx = interrupt_after(
        &mut doubles,
        "long",
        vec![Interrupt::Sigint, Interrupt::Sigint],
    );
    let t = Instant::now();
    let r = run(
        flow(vec![named("long"), cleanup], ""),
        &mut doubles,
        |_| {},
        Some(rx),
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the second signal exits at once"
    );
    assert_eq!(r.code, 130);
    assert_eq!(
        (r.status("long"), r.reason("long")),
        ("killed", "killed by SIGINT while running")
    );
    assert_eq!(
        (r.status("cleanup"), r.reason("cleanup")),
        ("skipped", "run interrupted by SIGINT")
    );
    // Two kills: the interrupt's and the abandon's best effort.
    assert_eq!(doubles.seen.lock().kills, vec![0, 0]);
}

#[test]
fn logs_are_judged_by_their_patterns_and_a_fifo_log_fails_without_a_hang() {
    let mut uvm = named("uvm");
    uvm.patterns = patterns(&[], &["^UVM_ERROR"]);
    let mut nopass = named("nopass");
    nopass.patterns = patterns(&["^TEST PASSED$"], &[]);
    let mut crash = named("crash");
    crash.patterns = patterns(&["^TEST PASSED$"], &[]);
    let mut fifo = named("fifo");
    fifo.patterns = patterns(&["^TEST PASSED$"], &[]);
    let mut doubles = Doubles::new(|name| match name {
        "uvm" => Act::Log("ok\nUVM_ERROR bad crc\nnext\n"),
        "nopass" => Act::Log("nothing\n"),
        "crash" => Act::Exit(139),
        _ => Act::FifoLog,
    });
    let r = run(
        flow(vec![uvm, nopass, crash, fifo], ""),
        &mut doubles,
        |_| {},
        None,
    );
    assert_eq!(
        r.reason("uvm"),
        "fail pattern matched at line 2: UVM_ERROR bad crc"
    );
    assert_eq!(r.job("uvm")["fail_line"], 2);
    assert_eq!(r.job("uvm")["fail_context"], serde_json::json!(["next"]));
    assert_eq!(
        r.reason("nopass"),
        "pass pattern never matched: ^TEST PASSED$"
    );
    // The cause, not the missing pattern: a shell job that died of SIGSEGV.
    assert_eq!(
        r.reason("crash"),
        "killed by signal 11 (SIGSEGV), shell exit code 139"
    );
    assert_eq!(r.job("crash")["reason_kind"], "signal");
    assert_eq!(
        r.reason("fifo"),
        "cannot read log: not a regular file (a FIFO)"
    );
}

#[test]
fn a_backend_that_writes_no_logs_is_judged_on_its_own_verdict() {
    let mut a = named("a");
    a.patterns = patterns(&["^TEST PASSED$"], &["ERROR"]);
    let mut doubles = Doubles::new(|_| Act::Exit(0));
    doubles.caps.job_dir = JobDirOwner::Nobody;
    let r = run(flow(vec![a], ""), &mut doubles, |_| {}, None);
    assert_eq!(r.code, 0, "{}", r.results);
    assert!(r.job("a")["log"].is_null());
}

#[test]
fn results_come_before_any_shutdown_and_a_failure_to_write_them_is_exit_2() {
    let mut doubles = Doubles::new(|_| Act::Exit(0));
    let r = run(flow(vec![named("a")], ""), &mut doubles, |_| {}, None);
    assert_eq!(r.code, 0);
    assert_eq!(doubles.seen.lock().results_at_shutdown, Some(true));

    let mut doubles = Doubles::new(|_| Act::BreakResults);
    let r = run(flow(vec![named("a")], ""), &mut doubles, |_| {}, None);
    assert_eq!(
        r.code, 2,
        "results that could not be written are not a pass"
    );
    assert!(
        !r.out.join(".results.json.tmp").exists(),
        "no stray temporary file"
    );
    assert!(!r.out.join(super::outdir::LOCK_FILE).exists());
}

#[test]
fn a_rejected_job_never_started() {
    let mut doubles = Doubles::new(|_| Act::Reject("no such partition"));
    let r = run(flow(vec![named("a")], ""), &mut doubles, |_| {}, None);
    assert_eq!(r.reason("a"), "rejected by backend be: no such partition");
    assert_eq!(r.job("a")["reason_kind"], "rejected");
    assert!(r.job("a")["started_at"].is_null());
    assert!(!r.job("a")["finished_at"].is_null());
}

#[test]
fn minus_j_lifts_a_backends_default_cap_but_not_an_explicit_one() {
    let jobs: Vec<Job> = (0..6).map(|i| named(&format!("j{i}"))).collect();
    let mut doubles = Doubles::new(|_| Act::UntilKilled);
    doubles.caps.default_max_parallel = Some(2);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (sub_tx, sub_rx) = mpsc::channel::<String>();
    doubles.submitted = Some(sub_tx);
    let counter = std::thread::spawn(move || {
        // With -j 5, five start before anything ends.
        let started: Vec<String> = (0..5)
            .map_while(|_| sub_rx.recv_timeout(Duration::from_secs(10)).ok())
            .collect();
        let _ = tx.send(Interrupt::Sigint);
        std::thread::sleep(Duration::from_millis(200));
        drop(tx);
        started.len()
    });
    let r = run(
        flow(jobs.clone(), ""),
        &mut doubles,
        |o| o.max_parallel = Some(5),
        Some(rx),
    );
    assert_eq!(counter.join().unwrap(), 5);
    assert_eq!(r.code, 130);

    // An explicit max_parallel on the backend wins over -j.
    let mut doubles = Doubles::new(|_| Act::Exit(0));
    doubles.caps.default_max_parallel = Some(2);
    let mut f = flow(jobs, "");
    f.backends[0].max_parallel = Some(1);
    let r = run(f, &mut doubles, |o| o.max_parallel = Some(5), None);
    assert_eq!(r.code, 0);
    let seen = doubles.seen.lock();
    assert!(seen.batches.iter().all(|&n| n == 1), "{:?}", seen.batches);
}

/// A journal of a run of `flow` in `out` whose host died: `a` passed; `on_cluster` (submitted,
/// native id 777, started) and `forgotten` (submitted, native id 555, pending) were on the
/// backend; `plain` was submitted without a native id. Its run tag is `flowrun-loop-crashed`.
/// With `a_failed`, `a` failed (exit code 1) instead.
fn crashed_journal(flow: &Flow, out: &Path, a_failed: bool) {
    use crate::journal::{self, Journal};
    std::fs::create_dir_all(out.join("jobs")).unwrap();
    let hashes = journal::definition_hashes(flow);
    let start = journal::RunStart {
        segment: 0,
        mode: journal::Mode::New,
        started_us: super::results::now_us(),
        pid: 1,
        supervisor_pid: 0,
        flow: flow.name.clone(),
        flow_file: "test.toml".into(),
        run_dir: out.to_string_lossy().into_owned(),
        run_tag: "flowrun-loop-crashed".into(),
        flow_hash: journal::flow_hash(flow, &hashes),
        jobs: flow.jobs.len() as u32,
        backends: vec![journal::BackendInfo {
            name: "be".into(),
            kind: "double".into(),
        }],
    };
    let table = flow
        .jobs
        .iter()
        .zip(&hashes)
        .map(|(j, h)| (j.name.as_str(), h, j.backend as u32));
    let mut jn = Journal::create(out, &start, table).unwrap();
    let t = start.started_us;
    for j in 0..4 {
        jn.queued(j, t);
    }
    jn.submitted(0, 1, t);
    let passed = crate::run::records::JobRecord {
        queued_at: t,
        started_at: t,
        finished_at: t + 1,
        exit_code: Some(0),
        attempt: 1,
        has_dir: true,
        extra: None,
    };
    if a_failed {
        let failed = crate::run::records::JobRecord {
            exit_code: Some(1),
            ..passed
        };
        let reason = crate::sched::Reason::ExitCode(1);
        jn.ended(0, Status::Failed, Some(&reason), &failed);
    } else {
        jn.ended(0, Status::Passed, None, &passed);
    }
    for (j, native) in [(1, Some("777")), (2, Some("555")), (3, None)] {
        jn.submitted(j, 1, t + 2);
        if let Some(id) = native {
            jn.native_id(j, id);
        }
    }
    jn.started(1, t + 3);
    jn.finish();
}

/// `--resume` of [`crashed_journal`]'s run (`a`, then three jobs that need it) on doubles that
/// can re-attach or not, with `on_cluster`'s command changed to `changed` when given; returns
/// the outcome and what the doubles saw.
fn resume_crashed_run(reattach: bool, changed: Option<&str>) -> (Outcome, Arc<Mutex<Seen>>) {
    resume_crashed_run_of(reattach, changed, false)
}

/// [`resume_crashed_run`], with `a` failed in the crashed run and `on_cluster` a
/// `when = "always"` job when `a_failed`.
fn resume_crashed_run_of(
    reattach: bool,
    changed: Option<&str>,
    a_failed: bool,
) -> (Outcome, Arc<Mutex<Seen>>) {
    let mut jobs = vec![
        named("a"),
        named("on_cluster"),
        named("forgotten"),
        named("plain"),
    ];
    for j in &mut jobs[1..] {
        j.needs = vec![0];
    }
    if a_failed {
        jobs[1].when = When::Always;
    }
    let f = flow(jobs, "");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    crashed_journal(&f, &out, a_failed);
    let mut f = f;
    if let Some(cmd) = changed {
        f.jobs[1].cmd = crate::flow::Command::Shell(cmd.into());
    }
    let mut d = Doubles::new(|_| Act::Exit(0));
    d.caps.reattach = reattach;
    let seen = d.seen.clone();
    let o = RunOptions {
        continue_from: Some(super::resume::Continue::Resume(Some(out.clone()))),
        ..options(&out)
    };
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let report = run_with(f, &mut d, &o, Some(rx)).unwrap();
    let results =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let outcome = Outcome {
        code: report.exit_code,
        results,
        out,
        _dir: dir,
    };
    (outcome, seen)
}

#[test]
fn resume_re_attaches_what_the_dead_host_left_on_the_backend_and_resubmits_what_it_refuses() {
    let (run, seen) = resume_crashed_run(true, None);
    assert_eq!(run.code, 0);
    let (results, out) = (&run.results, &run.out);
    let job = |name: &str| {
        results["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap()
            .clone()
    };
    let seen = seen.lock();
    // Both jobs with a native id were offered for re-attaching, as submitted then: attempt 1,
    // its log, the crashed run's tag.
    let mut offered = seen.reattached.clone();
    offered.sort();
    assert_eq!(
        offered,
        vec![
            (
                "forgotten".to_string(),
                "555".to_string(),
                1,
                "flowrun-loop-crashed".to_string(),
                out.join("jobs/forgotten/output.log")
            ),
            (
                "on_cluster".to_string(),
                "777".to_string(),
                1,
                "flowrun-loop-crashed".to_string(),
                out.join("jobs/on_cluster/output.log")
            ),
        ]
    );
    // Submitted: the refused job as its next attempt (its own log), and the job without an
    // id as its next attempt too (its submission may have reached the cluster before the host
    // died, and that job would write attempt 1's log); never the re-attached one, nor the one
    // that passed.
    let mut submitted: Vec<(String, u32, PathBuf)> = seen
        .requests
        .iter()
        .map(|r| (r.0.clone(), r.1, r.4.clone()))
        .collect();
    submitted.sort();
    assert_eq!(
        submitted,
        vec![
            (
                "forgotten".to_string(),
                2,
                out.join("jobs/forgotten/output.attempt-2.log")
            ),
            (
                "plain".to_string(),
                2,
                out.join("jobs/plain/output.attempt-2.log")
            ),
        ]
    );
    // The run keeps its tag; every job passed; the re-attached one on its attempt and id; the
    // refused one with its lost attempt recorded.
    let env_tag = seen.requests[0]
        .2
        .iter()
        .find(|(k, _)| k == "FLOWRUN_RUN_TAG")
        .unwrap()
        .1
        .clone();
    assert_eq!(env_tag, "flowrun-loop-crashed");
    assert_eq!(results["resumes"], 1, "{results:#}");
    for name in ["a", "on_cluster", "forgotten", "plain"] {
        assert_eq!(job(name)["status"], "passed", "{name}: {results:#}");
    }
    assert_eq!(job("on_cluster")["attempt"], 1, "{results:#}");
    assert_eq!(job("on_cluster")["native_id"], "777", "{results:#}");
    let log = out.join("jobs/on_cluster/output.log");
    assert_eq!(
        job("on_cluster")["log"],
        log.to_str().unwrap(),
        "{results:#}"
    );
    let forgotten = job("forgotten");
    assert_eq!(forgotten["attempt"], 2, "{forgotten:#}");
    let attempts = forgotten["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["status"], "failed", "{forgotten:#}");
    assert_eq!(attempts[0]["reason_kind"], "lost", "{forgotten:#}");
    assert!(
        attempts[0]["reason"]
            .as_str()
            .unwrap()
            .contains("as 555, and the backend could not re-attach it: the cluster forgot it"),
        "{forgotten:#}"
    );
    let plain = job("plain");
    assert_eq!(plain["attempt"], 2, "{plain:#}");
    assert_eq!(plain["attempts"][0]["reason_kind"], "lost", "{plain:#}");
    assert!(
        plain["attempts"][0]["reason"].as_str().unwrap().contains(
            "while the job was being handed to the backend; the backend had not named it yet"
        ),
        "{plain:#}"
    );
}

#[test]
fn without_the_capability_nothing_is_re_attached_and_the_jobs_run_again() {
    let (run, seen) = resume_crashed_run(false, None);
    assert_eq!(run.code, 0);
    let seen = seen.lock();
    assert!(seen.reattached.is_empty());
    let mut submitted: Vec<(&str, u32)> =
        seen.requests.iter().map(|r| (r.0.as_str(), r.1)).collect();
    submitted.sort();
    // The two with a native id may still run on their cluster: each runs as a new attempt.
    assert_eq!(
        submitted,
        [("forgotten", 2), ("on_cluster", 2), ("plain", 1)]
    );
}

#[test]
fn a_job_whose_definition_changed_is_not_re_attached_but_runs_again() {
    let (run, seen) = resume_crashed_run(true, Some("echo changed"));
    assert_eq!(run.code, 0);
    let seen = seen.lock();
    let offered: Vec<&str> = seen.reattached.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        offered,
        ["forgotten"],
        "only the unchanged job with an id is offered"
    );
    // The old job may still run on its cluster, writing attempt 1's log: the new run of the
    // changed job is attempt 2, with a log of its own, and attempt 1 is recorded lost.
    let fresh: Vec<(&str, u32, PathBuf)> = seen
        .requests
        .iter()
        .filter(|r| r.0 == "on_cluster")
        .map(|r| (r.0.as_str(), r.1, r.4.clone()))
        .collect();
    let out = &run.out;
    assert_eq!(
        fresh,
        [(
            "on_cluster",
            2,
            out.join("jobs/on_cluster/output.attempt-2.log")
        )],
        "a new attempt of the changed job, never attempt 1 again"
    );
    let job = run.job("on_cluster");
    assert_eq!(job["status"], "passed", "{job:#}");
    assert_eq!(job["attempt"], 2, "{job:#}");
    // `attempts` lists the attempts before the last.
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{job:#}");
    assert_eq!(attempts[0]["attempt"], 1, "{job:#}");
    assert_eq!(attempts[0]["reason_kind"], "lost", "{job:#}");
    let why = attempts[0]["reason"].as_str().unwrap();
    assert!(
        why.contains("as 777; its definition (or that of a job it needs) changed since"),
        "{job:#}"
    );
}

#[test]
fn an_earlier_pass_is_reused_only_when_every_job_it_needs_is_reused_too() {
    // a <- report (always) <- publish; a <- b; alone. Reusable candidates: all but a (it
    // failed): report passed after a failed, so it, and what needs it, must run again after a.
    let mut report = named("report");
    report.needs = vec![0];
    report.when = When::Always;
    let mut publish = named("publish");
    publish.needs = vec![1];
    let mut b = named("b");
    b.needs = vec![0];
    let f = flow(vec![named("a"), report, publish, b, named("alone")], "");
    let keep = super::resume::with_reused_needs(&f, vec![false, true, true, true, true]);
    assert_eq!(keep, vec![false, false, false, false, true]);
    // With every job a candidate nothing is dropped; with the leaf dropped only the leaf.
    let keep = super::resume::with_reused_needs(&f, vec![true; 5]);
    assert_eq!(keep, vec![true; 5]);
    let keep = super::resume::with_reused_needs(&f, vec![true, true, false, true, true]);
    assert_eq!(keep, vec![true, true, false, true, true]);
}

#[test]
fn a_job_that_needs_a_rerun_job_is_not_re_attached_but_runs_again_after_it() {
    // `a` failed; `on_cluster` (`when = "always"`) was running after it on the cluster. The
    // resume reruns `a`, so `on_cluster`'s old job ran on a failure that is no longer this
    // run's: it runs again after `a`, as a new attempt (the old one may still write its log).
    let (run, seen) = resume_crashed_run_of(true, None, true);
    assert_eq!(run.code, 0);
    let seen = seen.lock();
    assert!(seen.reattached.is_empty(), "{:?}", seen.reattached);
    let mut submitted: Vec<(&str, u32)> =
        seen.requests.iter().map(|r| (r.0.as_str(), r.1)).collect();
    assert_eq!(submitted[0], ("a", 1), "a runs first");
    submitted.sort();
    assert_eq!(
        submitted,
        [("a", 1), ("forgotten", 2), ("on_cluster", 2), ("plain", 2)]
    );
    let job = run.job("on_cluster");
    let why = job["attempts"][0]["reason"].as_str().unwrap();
    assert!(
        why.contains("as 777; a job it needs runs again, so it is not re-attached"),
        "{job:#}"
    );
}

#[test]
fn each_run_gets_a_tag_of_its_own_even_from_the_same_process_and_flow() {
    // Cluster backends name jobs by the tag and cancel by it: two runs of one flow by one pid
    // (another login node, a reused pid while a resumed run keeps its first tag) must differ.
    let tags: Vec<String> = (0..1000).map(|_| super::run_tag("night ly/x")).collect();
    let prefix = format!("flowrun-night_ly_x-{}-", crate::supervise::flowrun_pid());
    for tag in &tags {
        let random = tag.strip_prefix(&prefix).unwrap_or_else(|| panic!("{tag}"));
        assert_eq!(random.len(), 8, "{tag}");
        assert!(
            random
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{tag}"
        );
    }
    let distinct: std::collections::HashSet<&String> = tags.iter().collect();
    assert_eq!(distinct.len(), tags.len(), "every tag differs");
}
