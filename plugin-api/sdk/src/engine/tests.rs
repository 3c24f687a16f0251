//! The engine's policy against a scripted fake scheduler, on a manual clock: no cluster, no
//! root, no sleeping.
//!
//! The fake scheduler ([`FakeCluster`]) is a [`CommandRunner`] answering the commands of a
//! small dialect ([`FakeDialect`]): `fsubmit`, `fstat` (one snapshot of every job of the
//! given names), `frecords` (final records), `fcancel`, `fcancel-all`. Each job's behaviour is
//! written in its command, as words: `run=SECS` (default 1), `pending=SECS` (default 0.5),
//! `exit=N`, `stuck` (pends forever for a reason that means it never starts), `unknown`
//! (shows an unknown state once it runs), `ghost` (never visible to `fstat`), `needs-record`
//! (its failure shows without an exit code), `no-record` (absent from the records),
//! `ignore-cancel`, `reject` (submission refused), `suspended` (shows a suspended state while
//! it runs). The dialect also reads a record a job may leave in its job directory
//! (`fake-record`: `ID|STATE|EXIT`).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;

use super::{
    testing::{self, Simulation},
    *,
};

const S: Duration = Duration::from_secs(1);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// ---------------------------------------------------------------------------------------------
// The fake scheduler
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct FakeJob {
    name: String,
    words: Vec<String>,
    submitted: Duration,
    cancelled_at: Option<Duration>,
}

impl FakeJob {
    fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }
    fn num(&self, key: &str, default: f64) -> f64 {
        self.words
            .iter()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .map_or(default, |v| v.parse().unwrap())
    }
    fn start(&self) -> Duration {
        self.submitted + secs(self.num("pending", 0.5))
    }
    fn end(&self) -> Duration {
        self.start() + secs(self.num("run", 1.0))
    }
    /// (state, exit code, reason) at `t`, and when it ended if it did.
    fn state(&self, t: Duration) -> (&'static str, Option<i32>, &'static str, Option<Duration>) {
        if let Some(c) = self.cancelled_at {
            if c <= t {
                return ("CANCELLED", None, "", Some(c));
            }
        }
        if self.has("stuck") {
            return ("PEND", None, "never", None);
        }
        if t < self.start() {
            return ("PEND", None, "", None);
        }
        if t < self.end() {
            return (
                if self.has("unknown") {
                    "UNKN"
                } else if self.has("suspended") {
                    "SUSP"
                } else {
                    "RUN"
                },
                None,
                "",
                None,
            );
        }
        match self.num("exit", 0.0) as i32 {
            0 => ("DONE", Some(0), "", Some(self.end())),
            // The exit code is only in the records.
            _ if self.has("needs-record") => ("EXIT", None, "", Some(self.end())),
            n => ("EXIT", Some(n), "", Some(self.end())),
        }
    }
}

/// Called with sbatch's arguments while the submission is in flight.
type SubmitHook = Box<dyn FnMut(&[String]) + Send>;

#[derive(Default)]
struct ClusterState {
    next_id: u64,
    jobs: BTreeMap<String, FakeJob>,
    /// (time, program, args) of every call.
    calls: Vec<(Duration, String, Vec<String>)>,
    /// Every command fails transiently in this window.
    outage: Option<(Duration, Duration)>,
    /// This program hangs (until its time limit) in this window.
    hang: Option<(String, Duration, Duration)>,
    /// A submission that hangs still reaches the scheduler.
    hung_submissions_land: bool,
    /// Jobs are invisible to `fstat` for this long after submission.
    hidden_for: Duration,
    /// Finished jobs vanish from `fstat` this long after they end.
    purge_after: Option<Duration>,
    /// `frecords` knows finished jobs.
    records: bool,
    /// `fcancel` fails until then.
    cancel_fails_until: Duration,
    /// The next this many `fsubmit` calls take the job but exit 255 without a word.
    silent_submit_failures: usize,
    on_submit: Option<SubmitHook>,
}

struct FakeCluster {
    clock: Arc<ManualClock>,
    state: Mutex<ClusterState>,
}

impl FakeCluster {
    fn new(clock: Arc<ManualClock>) -> Arc<FakeCluster> {
        Arc::new(FakeCluster {
            clock,
            state: Mutex::new(ClusterState {
                next_id: 100,
                ..Default::default()
            }),
        })
    }

    fn set(&self, f: impl FnOnce(&mut ClusterState)) {
        f(&mut self.state.lock())
    }

    /// The times of the calls of `program`.
    fn calls(&self, program: &str) -> Vec<Duration> {
        self.state
            .lock()
            .calls
            .iter()
            .filter(|c| c.1 == program)
            .map(|c| c.0)
            .collect()
    }

    fn call_args(&self, program: &str) -> Vec<Vec<String>> {
        self.state
            .lock()
            .calls
            .iter()
            .filter(|c| c.1 == program)
            .map(|c| c.2.clone())
            .collect()
    }

    /// Jobs not ended at the current time.
    fn live_jobs(&self) -> Vec<String> {
        let t = self.clock.elapsed();
        self.state
            .lock()
            .jobs
            .iter()
            .filter(|(_, j)| j.state(t).3.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn submit(&self, st: &mut ClusterState, args: &[String]) -> CommandOutput {
        let mut name = String::new();
        let mut array = false;
        let mut cmds = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--name" => name = it.next().unwrap().clone(),
                "--array" => {
                    array = true;
                    it.next();
                }
                "--slots" => {
                    it.next();
                }
                "--cmd" => cmds.push(it.next().unwrap().clone()),
                other => panic!("fsubmit: unknown argument {other}"),
            }
        }
        if cmds.iter().any(|c| c.split(' ').any(|w| w == "reject")) {
            return CommandOutput::exited("fsubmit", 1, "", "fsubmit: bad request");
        }
        let now = self.clock.elapsed();
        st.next_id += 1;
        let base = st.next_id;
        let mut out = String::new();
        for (i, cmd) in cmds.iter().enumerate() {
            let id = if array {
                format!("{base}_{}", i + 1)
            } else {
                base.to_string()
            };
            st.jobs.insert(
                id.clone(),
                FakeJob {
                    name: name.clone(),
                    words: cmd.split(' ').map(String::from).collect(),
                    submitted: now,
                    cancelled_at: None,
                },
            );
            out.push_str(&id);
            out.push('\n');
        }
        CommandOutput::exited("fsubmit", 0, &out, "")
    }
}

impl CommandRunner for FakeCluster {
    fn run(&self, command: &CommandLine, limit: Duration) -> CommandOutput {
        let program = command.program.as_str();
        let args = &command.args;
        let now = self.clock.elapsed();
        // A hook runs as the host would, while the command is in flight.
        if program == "fsubmit" {
            let hook = self.state.lock().on_submit.take();
            if let Some(mut hook) = hook {
                hook(args);
                self.state.lock().on_submit = Some(hook);
            }
        }
        let mut st = self.state.lock();
        st.calls.push((now, program.to_string(), args.clone()));
        if let Some((from, to)) = st.outage {
            if (from..to).contains(&now) {
                return CommandOutput::exited(
                    program,
                    1,
                    "",
                    "fake: cannot reach the controller, try again",
                );
            }
        }
        if let Some((p, from, to)) = &st.hang {
            if p == program && (*from..*to).contains(&now) {
                if program == "fsubmit" && st.hung_submissions_land {
                    self.submit(&mut st, args);
                }
                drop(st);
                self.clock.advance(limit);
                return CommandOutput {
                    program: program.into(),
                    exit: Exit::TimedOut(limit),
                    stdout: String::new(),
                    stderr: String::new(),
                };
            }
        }
        match program {
            "fsubmit" if st.silent_submit_failures > 0 => {
                st.silent_submit_failures -= 1;
                self.submit(&mut st, args);
                CommandOutput::exited(program, 255, "", "")
            }
            "fsubmit" => self.submit(&mut st, args),
            "fstat" => {
                let mut out = String::new();
                for (id, job) in &st.jobs {
                    if !args.contains(&job.name)
                        || job.has("ghost")
                        || now < job.submitted + st.hidden_for
                    {
                        continue;
                    }
                    let (state, code, reason, ended) = job.state(now);
                    if let (Some(purge), Some(end)) = (st.purge_after, ended) {
                        if now >= end + purge {
                            continue;
                        }
                    }
                    let code = code.map(|c| c.to_string()).unwrap_or_default();
                    out.push_str(&format!("{id}|{state}|{code}|{reason}\n"));
                }
                CommandOutput::exited(program, 0, &out, "")
            }
            "frecords" => {
                let mut out = String::new();
                if st.records {
                    for id in args {
                        let Some(job) = st.jobs.get(id) else { continue };
                        if job.has("no-record") || job.has("ghost") {
                            continue;
                        }
                        let (state, _, _, ended) = job.state(now);
                        if ended.is_none() {
                            continue;
                        }
                        let code = job.num("exit", 0.0) as i32;
                        let code = if state == "CANCELLED" { 0 } else { code };
                        out.push_str(&format!(
                            "{id}|{state}|{code}|{}|{}\n",
                            job.num("cpu", 0.5),
                            job.num("rss", 12.0)
                        ));
                    }
                }
                CommandOutput::exited(program, 0, &out, "")
            }
            "fcancel" => {
                assert!(!args.is_empty(), "fcancel with no ids");
                if now < st.cancel_fails_until {
                    return CommandOutput::exited(program, 1, "", "fcancel: busy, try again");
                }
                for id in args {
                    if let Some(job) = st.jobs.get_mut(id) {
                        if job.state(now).3.is_none() && !job.has("ignore-cancel") {
                            job.cancelled_at = Some(now);
                        }
                    }
                }
                CommandOutput::exited(program, 0, "", "")
            }
            "fcancel-all" => {
                for job in st.jobs.values_mut() {
                    if args.contains(&job.name)
                        && job.state(now).3.is_none()
                        && !job.has("ignore-cancel")
                    {
                        job.cancelled_at = Some(now);
                    }
                }
                CommandOutput::exited(program, 0, "", "")
            }
            other => panic!("the fake cluster has no {other}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The dialect of the fake scheduler
// ---------------------------------------------------------------------------------------------

struct FakeDialect {
    /// Whether it looks up final records.
    records: bool,
}

fn shell_line(job: &Job) -> String {
    match &job.command {
        JobCommand::Shell(s) => s.clone(),
        JobCommand::Argv(a) => a.join(" "),
    }
}

impl Dialect for FakeDialect {
    fn scheduler(&self) -> &str {
        "Fake"
    }

    fn array_task_variable(&self) -> Option<&str> {
        Some("FAKE_TASK")
    }

    fn commands(&self) -> &[&str] {
        &["fsubmit", "fstat", "frecords", "fcancel"]
    }

    fn submit(&self, cmd: &Commands, unit: &Submission) -> Result<Vec<String>, SubmitError> {
        let mut args = vec!["--name".to_string(), unit.name.clone()];
        if let Some(plan) = &unit.array {
            args.extend(["--array".into(), unit.jobs.len().to_string()]);
            if let Some(l) = plan.slot_limit {
                args.extend(["--slots".into(), l.to_string()]);
            }
            assert!(plan.dispatcher.is_file(), "the dispatcher is written");
        }
        for (job, script) in unit.jobs.iter().zip(&unit.scripts) {
            assert!(script.is_file(), "the job script is written");
            args.extend(["--cmd".into(), shell_line(job)]);
        }
        let out = cmd.run("fsubmit", &args);
        if out.code() == Some(255) && out.text().trim().is_empty() {
            return Err(SubmitError::Ambiguous(out));
        }
        let out = out.checked().map_err(SubmitError::Command)?;
        Ok(out.stdout.lines().map(String::from).collect())
    }

    fn status(&self, cmd: &Commands, scope: &Scope) -> Result<Vec<NativeStatus>, CommandOutput> {
        let out = cmd.run("fstat", &scope.names).checked()?;
        Ok(out
            .stdout
            .lines()
            .map(|l| {
                let p: Vec<&str> = l.split('|').collect();
                NativeStatus {
                    id: p[0].into(),
                    state: p[1].into(),
                    exit_code: p[2].parse().ok(),
                    reason: p[3].into(),
                    ..Default::default()
                }
            })
            .collect())
    }

    fn judge(&self, s: &NativeStatus, job: &JobContext) -> Judgement {
        match (s.state.as_str(), s.exit_code) {
            ("PEND", _) if s.reason == "never" => {
                Judgement::Stuck("Fake will never start this job".into())
            }
            ("PEND", _) => Judgement::Queued,
            ("RUN", _) => Judgement::Running,
            ("SUSP", _) => Judgement::Suspended("suspended by Fake".into()),
            ("UNKN", _) => Judgement::Unknown("Fake lost contact with the job".into()),
            ("DONE", _) => Judgement::Final(Verdict::Exited(0)),
            ("EXIT", Some(n)) => Judgement::Final(Verdict::Exited(n)),
            ("EXIT", None) => Judgement::FinalNeedsRecord {
                fallback: Verdict::failed("Fake reported EXIT, exit code unknown"),
            },
            ("CANCELLED", _) if job.kill_requested => Judgement::Final(Verdict::Killed),
            ("CANCELLED", _) => Judgement::Final(Verdict::Failed {
                reason: "cancelled outside flowrun".into(),
                exit_code: None,
                ran: false,
            }),
            _ => Judgement::Running,
        }
    }

    fn looks_up(&self, _why: Lookup) -> bool {
        self.records
    }

    fn final_records(
        &self,
        cmd: &Commands,
        _scope: &Scope,
        ids: &[String],
    ) -> Result<Vec<NativeStatus>, CommandOutput> {
        let out = cmd.run("frecords", ids).checked()?;
        Ok(out
            .stdout
            .lines()
            .map(|l| {
                let p: Vec<&str> = l.split('|').collect();
                NativeStatus {
                    id: p[0].into(),
                    state: p[1].into(),
                    exit_code: p[2].parse().ok(),
                    usage: Some(Usage {
                        cpu_s: p[3].parse().ok(),
                        max_rss_mb: p[4].parse().ok(),
                        source: "frecords",
                    }),
                    ..Default::default()
                }
            })
            .collect())
    }

    fn record_in_job_files(&self, job: &Job, native_id: &str) -> Option<NativeStatus> {
        let text = std::fs::read_to_string(job.job_dir.join("fake-record")).ok()?;
        let p: Vec<&str> = text.trim().split('|').collect();
        (p[0] == native_id).then(|| NativeStatus {
            id: p[0].into(),
            state: p[1].into(),
            exit_code: p[2].parse().ok(),
            usage: Some(Usage {
                cpu_s: Some(0.25),
                max_rss_mb: None,
                source: "fake-record",
            }),
            ..Default::default()
        })
    }

    fn cancel(&self, cmd: &Commands, ids: &[String]) -> Result<(), CommandOutput> {
        cmd.run("fcancel", ids).checked().map(drop)
    }

    fn cancel_all(&self, cmd: &Commands, scope: &Scope) -> Result<(), CommandOutput> {
        cmd.run("fcancel-all", &scope.names).checked().map(drop)
    }

    fn is_transient(&self, out: &CommandOutput) -> bool {
        out.text().contains("try again")
    }
}

// ---------------------------------------------------------------------------------------------
// The test bench
// ---------------------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoKeys {}

struct Bench {
    sim: Simulation<FakeDialect>,
    cluster: Arc<FakeCluster>,
    dir: tempfile::TempDir,
    next_key: u64,
    names: HashMap<JobKey, String>,
}

/// The engine's keys for a bench: poll every second, and `keys` (TOML).
fn bench_config(keys: &str) -> EngineConfig {
    let defaults = EngineDefaults {
        poll_interval: S,
        ..EngineDefaults::STANDARD
    };
    let (config, NoKeys {}) = parse_config(keys, &defaults).unwrap();
    config
}

impl Bench {
    /// A simulated engine on the fake cluster: poll every second, and `keys` (TOML).
    fn new(keys: &str, records: bool) -> Bench {
        let clock = Arc::new(ManualClock::new());
        let cluster = FakeCluster::new(clock.clone());
        cluster.set(|c| c.records = records);
        let sim = Simulation::new(
            FakeDialect { records },
            bench_config(keys),
            cluster.clone(),
            clock,
        );
        Bench {
            sim,
            cluster,
            dir: tempfile::tempdir().unwrap(),
            next_key: 1,
            names: HashMap::new(),
        }
    }

    fn job(&mut self, name: &str, behaviour: &str) -> Job {
        let key = JobKey(self.next_key);
        self.next_key += 1;
        self.names.insert(key, name.to_string());
        testing::job(key, name, behaviour, self.dir.path(), "flowrun-test-1")
    }

    fn submit_one(&mut self, name: &str, behaviour: &str) -> JobKey {
        let job = self.job(name, behaviour);
        self.submit(vec![job])[0]
    }

    fn submit(&mut self, jobs: Vec<Job>) -> Vec<JobKey> {
        let keys = jobs.iter().map(|j| j.key).collect();
        let answers = self.sim.submit(jobs);
        assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
        keys
    }

    /// The events of one job, with their times.
    fn events_of(&self, key: JobKey) -> Vec<(Duration, Update)> {
        self.sim
            .events()
            .into_iter()
            .filter(|(_, e)| e.job == key)
            .map(|(t, e)| (t, e.update))
            .collect()
    }

    /// The one end (FINISHED or LOST) of a job, checking it ended exactly once.
    fn end_of(&self, key: JobKey) -> (Duration, Update) {
        let ends: Vec<_> = self
            .events_of(key)
            .into_iter()
            .filter(|(_, u)| !matches!(u, Update::Started { .. }))
            .collect();
        assert_eq!(
            ends.len(),
            1,
            "job {} must end exactly once: {ends:?}",
            self.names[&key]
        );
        ends[0].clone()
    }

    fn verdict(&self, key: JobKey) -> Verdict {
        match self.end_of(key).1 {
            Update::Finished { verdict, .. } => verdict,
            other => panic!("job {} did not finish: {other:?}", self.names[&key]),
        }
    }

    /// The host dies (no shutdown: nothing is cancelled) and a new one starts an engine on
    /// the same cluster, with `keys`; the old engine's events are gone with it.
    fn host_dies_and_a_new_one_starts(&mut self, keys: &str) {
        let records = self.sim.dialect().records;
        self.sim = Simulation::new(
            FakeDialect { records },
            bench_config(keys),
            self.cluster.clone(),
            self.cluster.clock.clone(),
        );
    }

    /// The native id the engine reported at the submission of `key` (what the host's journal
    /// keeps), checked against the cluster's own.
    fn native_id(&self, key: JobKey) -> String {
        let ids: Vec<String> = self
            .sim
            .submitted_ids()
            .into_iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, id)| id)
            .collect();
        assert_eq!(ids.len(), 1, "{}: {ids:?}", self.names[&key]);
        assert!(self.cluster.state.lock().jobs.contains_key(&ids[0]));
        ids[0].clone()
    }

    fn stat(&self, key: &str) -> u64 {
        let stats = self.sim.stats();
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in {stats}"))
            .parse()
            .unwrap()
    }
}

fn gaps(times: &[Duration]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn ids_of(update: &Update) -> Option<&str> {
    match update {
        Update::Started { native_id } => Some(native_id),
        Update::Finished { native_id, .. } | Update::Lost { native_id, .. } => native_id.as_deref(),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn three_hundred_jobs_cost_one_status_query_per_interval() {
    let mut b = Bench::new("submit_rate = \"100/s\"", false);
    let jobs: Vec<Job> = (0..300)
        .map(|i| {
            let exit = if i % 50 == 7 { 3 } else { 0 };
            b.job(&format!("j{i}"), &format!("run={} exit={exit}", 1 + i % 7))
        })
        .collect();
    let keys = b.submit(jobs);
    assert!(b.sim.run_to_completion(Duration::from_secs(600)));
    for (i, key) in keys.iter().enumerate() {
        let want = if i % 50 == 7 { 3 } else { 0 };
        assert_eq!(b.verdict(*key), Verdict::Exited(want), "job j{i}");
        let events = b.events_of(*key);
        assert!(
            matches!(events[0].1, Update::Started { .. }),
            "j{i}: {events:?}"
        );
    }
    let polls = b.cluster.calls("fstat");
    let elapsed = b.sim.elapsed();
    assert!(
        polls.len() as f64 <= elapsed.as_secs_f64() + 1.0,
        "{} status queries in {elapsed:?}",
        polls.len()
    );
    assert!(
        gaps(&polls).iter().all(|g| *g >= S),
        "two status queries within one interval: {polls:?}"
    );
    assert_eq!(b.cluster.calls("fsubmit").len(), 300);
    assert!(b.cluster.calls("frecords").is_empty());
    assert_eq!(b.stat("fstat_calls"), polls.len() as u64);
    assert_eq!(b.stat("frecords_calls"), 0, "declared programs show 0");
}

#[test]
fn a_job_not_yet_visible_after_submission_waits_out_the_grace_window() {
    let mut b = Bench::new("submit_grace = \"10s\"", true);
    b.cluster.set(|c| c.hidden_for = secs(8.0));
    let jobs = vec![
        b.job("late", "pending=9 run=2"),
        b.job("fast", "run=1 exit=4"),
    ];
    let keys = b.submit(jobs);
    assert!(b.sim.run_to_completion(Duration::from_secs(120)));
    assert_eq!(b.verdict(keys[0]), Verdict::Exited(0));
    assert_eq!(b.verdict(keys[1]), Verdict::Exited(4));
    // Within its grace window a missing job is not looked up as vanished.
    assert!(
        b.cluster.calls("frecords").iter().all(|t| *t >= secs(8.0)),
        "{:?}",
        b.cluster.calls("frecords")
    );
}

#[test]
fn a_job_that_never_shows_is_lost_after_both_windows() {
    let mut b = Bench::new("submit_grace = \"10s\"\nlost_after = \"60s\"", true);
    let jobs = vec![b.job("ghost", "ghost"), b.job("fine", "run=3")];
    let keys = b.submit(jobs);
    assert!(b.sim.run_to_completion(Duration::from_secs(600)));
    assert_eq!(b.verdict(keys[1]), Verdict::Exited(0));
    let (at, end) = b.end_of(keys[0]);
    let Update::Lost { reason, native_id } = end else {
        panic!("{end:?}")
    };
    let ghost = native_id.unwrap();
    assert_eq!(
        reason,
        format!(
            "Fake job {ghost} vanished from the queue and no final state was found for it within 60s"
        )
    );
    // Missing from t = 10 s (grace over), lost at the first poll more than 60 s later.
    assert!(at > secs(70.0) && at <= secs(72.0), "lost at {at:?}");
    // Looked up once per poll while missing, never before the grace window ended.
    let lookups: Vec<Duration> = b
        .cluster
        .state
        .lock()
        .calls
        .iter()
        .filter(|(_, program, args)| program == "frecords" && args.contains(&ghost))
        .map(|(t, _, _)| *t)
        .collect();
    assert_eq!(lookups.first(), Some(&secs(10.0)), "{lookups:?}");
    assert!(gaps(&lookups).iter().all(|g| *g >= S));
}

#[test]
fn jobs_that_vanish_are_resolved_from_their_final_records() {
    let mut b = Bench::new("", true);
    // Finished jobs leave the snapshot at once (as after Slurm's MinJobAge).
    b.cluster.set(|c| c.purge_after = Some(Duration::ZERO));
    let jobs: Vec<Job> = (0..20)
        .map(|i| {
            b.job(
                &format!("v{i}"),
                &format!("run={} exit={}", 1 + i % 3, i % 4),
            )
        })
        .collect();
    let keys = b.submit(jobs);
    assert!(b.sim.run_to_completion(Duration::from_secs(120)));
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(b.verdict(*key), Verdict::Exited((i % 4) as i32), "v{i}");
        let Update::Finished { usage, .. } = b.end_of(*key).1 else {
            unreachable!()
        };
        assert_eq!(usage.unwrap().source, "frecords");
    }
    let polls = b.cluster.calls("fstat").len();
    assert!(
        b.cluster.calls("frecords").len() <= polls,
        "at most one records query per poll"
    );
}

#[test]
fn records_in_the_job_files_come_first_and_the_scheduler_is_asked_for_the_rest() {
    let mut b = Bench::new("", true);
    b.cluster.set(|c| c.purge_after = Some(Duration::ZERO));
    let jobs = vec![
        b.job("filed", "run=3 exit=3"),
        b.job("stale", "run=3 exit=0"),
    ];
    let keys = b.submit(jobs);
    b.sim.run_for(secs(1.5));
    let id_of = |exit: &str| {
        let state = b.cluster.state.lock();
        let found = state.jobs.iter().find(|(_, j)| j.has(exit));
        found.map(|(id, _)| id.clone()).expect("submitted")
    };
    let ids = [id_of("exit=3"), id_of("exit=0")];
    let dir = |name: &str| b.dir.path().join("jobs").join(name);
    // The file's exit status differs from the scheduler's, to show which one counts; the
    // second job's file belongs to another submission and must be ignored.
    std::fs::write(
        dir("filed").join("fake-record"),
        format!("{}|EXIT|7", ids[0]),
    )
    .unwrap();
    std::fs::write(dir("stale").join("fake-record"), "99|EXIT|9").unwrap();
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    assert_eq!(b.verdict(keys[0]), Verdict::Exited(7));
    assert_eq!(b.verdict(keys[1]), Verdict::Exited(0));
    let asked = b.cluster.call_args("frecords");
    assert!(!asked.is_empty());
    assert!(
        asked.iter().all(|args| args == &[ids[1].clone()]),
        "only the job without a record of its own is asked about: {asked:?}"
    );
}

#[test]
fn without_records_a_vanished_job_is_lost_after_lost_after() {
    let mut b = Bench::new("lost_after = \"30s\"\nsubmit_grace = \"0s\"", false);
    b.cluster.set(|c| c.purge_after = Some(Duration::ZERO));
    let key = b.submit_one("gone", "run=2");
    assert!(b.sim.run_to_completion(Duration::from_secs(120)));
    let (at, end) = b.end_of(key);
    assert!(matches!(end, Update::Lost { .. }), "{end:?}");
    // It ended at 2.5 s, so it went missing at the 3 s poll, and is lost after 30 s more.
    assert!(at > secs(33.0) && at <= secs(34.0), "{at:?}");
    assert_eq!(b.stat("lost"), 1);
}

#[test]
fn a_status_query_failing_for_20_seconds_fails_no_job() {
    let mut b = Bench::new("submit_rate = \"1/s\"\nsubmit_threads = 1", false);
    b.cluster.set(|c| c.outage = Some((secs(5.0), secs(25.0))));
    // Submitted one per second over 30 s: some before, some during, some after the outage;
    // some end during it.
    let jobs: Vec<Job> = (0..30)
        .map(|i| {
            b.job(
                &format!("o{i}"),
                &format!("run={} exit={}", 2 + i % 5, i % 3),
            )
        })
        .collect();
    let keys = b.submit(jobs);
    assert!(b.sim.run_to_completion(Duration::from_secs(600)));
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(b.verdict(*key), Verdict::Exited((i % 3) as i32), "o{i}");
    }
    // Status queries back off during the outage: 5 s, 6, 8, 12, 20 (then 36 > 25: works).
    let during: Vec<Duration> = b
        .cluster
        .calls("fstat")
        .into_iter()
        .filter(|t| (secs(5.0)..secs(25.0)).contains(t))
        .collect();
    assert!(during.len() <= 6, "{during:?}");
    assert!(b.stat("query_failures") >= 4);
    // Submissions failed transiently during the outage and were retried.
    assert!(b.stat("submit_retries") > 0);
    assert_eq!(b.stat("lost"), 0);
}

#[test]
fn submissions_keep_to_submit_rate() {
    let mut b = Bench::new("submit_rate = \"5/s\"\nsubmit_threads = 4", false);
    let jobs: Vec<Job> = (0..50).map(|i| b.job(&format!("r{i}"), "run=1")).collect();
    b.submit(jobs);
    assert!(b.sim.run_to_completion(Duration::from_secs(120)));
    let starts = b.cluster.calls("fsubmit");
    assert_eq!(starts.len(), 50);
    assert!(
        gaps(&starts)
            .iter()
            .all(|g| *g >= Duration::from_millis(200)),
        "{starts:?}"
    );
    assert_eq!(*starts.last().unwrap(), Duration::from_millis(49 * 200));
}

#[test]
fn same_shape_jobs_go_out_as_arrays_with_a_slot_limit() {
    let mut b = Bench::new(
        "arrays = true\narray_max_size = 100\narray_slot_limit = 10",
        false,
    );
    let mut jobs: Vec<Job> = (0..250)
        .map(|i| b.job(&format!("a{i}"), &format!("run=2 exit={}", i % 2)))
        .collect();
    for i in 0..3 {
        let mut j = b.job(&format!("big{i}"), "run=1");
        j.cpus = 4;
        jobs.push(j);
    }
    let keys = b.submit(jobs);
    b.sim.run_for(secs(0.1));
    // Kill one member while it is queued: only its own id is cancelled.
    b.sim.kill(&keys[3..4]);
    assert!(b.sim.run_to_completion(Duration::from_secs(120)));
    let calls = b.cluster.call_args("fsubmit");
    let sizes: Vec<usize> = calls
        .iter()
        .map(|a| a.iter().filter(|w| *w == "--cmd").count())
        .collect();
    // 250 same-shape jobs: 100 + 100 + 50; the 3 big ones are too few for an array.
    assert_eq!(sizes, vec![100, 100, 50, 1, 1, 1]);
    assert!(calls[..3]
        .iter()
        .all(|a| a.join(" ").contains("--slots 10")));
    assert_eq!(b.stat("arrays_submitted"), 3);
    for (i, key) in keys.iter().enumerate().take(250) {
        if i == 3 {
            assert_eq!(b.verdict(*key), Verdict::Killed);
            let native = ids_of(&b.end_of(*key).1).unwrap().to_string();
            assert_eq!(b.cluster.call_args("fcancel"), vec![vec![native]]);
        } else {
            assert_eq!(b.verdict(*key), Verdict::Exited((i % 2) as i32), "a{i}");
        }
        let native = ids_of(&b.end_of(*key).1).unwrap().to_string();
        assert!(native.contains('_'), "members have their own ids: {native}");
    }
}

#[test]
fn arrays_never_wait_for_more_members() {
    // DVSim's launcher waits for a group's last member before it submits; in a DAG whose
    // later members wait on earlier ones, that never happens.
    let mut b = Bench::new("arrays = true\narray_min_size = 4", false);
    let first = b.submit_one("first", "run=1");
    b.sim.run_for(secs(0.5));
    assert_eq!(b.cluster.calls("fsubmit"), vec![Duration::ZERO]);
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    assert_eq!(b.verdict(first), Verdict::Exited(0));
    // Its dependents, ready together, share one array.
    let later: Vec<Job> = (0..5).map(|i| b.job(&format!("d{i}"), "run=1")).collect();
    let keys = b.submit(later);
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    assert_eq!(b.cluster.calls("fsubmit").len(), 2);
    assert!(keys.iter().all(|k| b.verdict(*k) == Verdict::Exited(0)));
}

#[test]
fn a_job_killed_while_its_submission_is_in_flight_is_cancelled_once_its_id_is_known() {
    let mut b = Bench::new("", false);
    let jobs = vec![b.job("victim", "run=300"), b.job("bystander", "run=2")];
    let victim = jobs[0].key;
    let host = b.sim.host();
    let mut fired = false;
    b.cluster.set(|c| {
        c.on_submit = Some(Box::new(move |args| {
            if !fired && args.iter().any(|a| a == "run=300") {
                fired = true;
                host.kill(&[victim]);
            }
        }))
    });
    let keys = b.submit(jobs);
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    let (at, end) = b.end_of(victim);
    assert_eq!(b.verdict(victim), Verdict::Killed);
    let native = ids_of(&end)
        .expect("it was submitted, then cancelled")
        .to_string();
    assert_eq!(b.cluster.call_args("fcancel"), vec![vec![native]]);
    assert!(at < secs(2.0), "ended at {at:?}");
    assert_eq!(b.verdict(keys[1]), Verdict::Exited(0));
    assert!(b.cluster.live_jobs().is_empty());
}

#[test]
fn a_job_killed_before_its_submission_is_never_submitted() {
    let mut b = Bench::new("submit_rate = \"1/s\"\nsubmit_threads = 1", false);
    let jobs: Vec<Job> = (0..3).map(|i| b.job(&format!("k{i}"), "run=1")).collect();
    let keys = b.submit(jobs);
    b.sim.kill(&keys[2..]);
    assert_eq!(b.verdict(keys[2]), Verdict::Killed, "ends at once");
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    assert_eq!(b.cluster.calls("fsubmit").len(), 2);
    assert!(b.cluster.calls("fcancel").is_empty());
}

#[test]
fn a_hung_status_query_hits_its_timeout_and_fails_no_job() {
    let mut b = Bench::new("command_timeout = \"30s\"", false);
    b.cluster
        .set(|c| c.hang = Some(("fstat".into(), secs(3.0), secs(4.0))));
    let jobs: Vec<Job> = (0..10)
        .map(|i| b.job(&format!("h{i}"), &format!("run={}", 2 + i)))
        .collect();
    let keys = b.submit(jobs);
    assert!(b.sim.run_to_completion(Duration::from_secs(300)));
    assert!(keys.iter().all(|k| b.verdict(*k) == Verdict::Exited(0)));
    let polls = b.cluster.calls("fstat");
    // The hung query began at 3 s and was killed at 33 s; the next one came one interval on.
    assert!(
        polls.contains(&secs(3.0)) && polls.contains(&secs(34.0)),
        "{polls:?}"
    );
    assert_eq!(b.stat("fstat_failures"), 1);
    assert_eq!(b.stat("query_failures"), 1);
}

#[test]
fn a_hung_submission_is_retried_and_the_run_is_swept_by_name_at_shutdown() {
    let mut b = Bench::new("command_timeout = \"20s\"", false);
    b.cluster.set(|c| {
        c.hang = Some(("fsubmit".into(), Duration::ZERO, secs(1.0)));
        // The scheduler took the hung submission: an orphan flowrun has no id for.
        c.hung_submissions_land = true;
    });
    let key = b.submit_one("once", "run=600");
    b.sim.run_while_not(Duration::from_secs(120), |s| {
        s.events()
            .iter()
            .any(|(_, e)| matches!(e.update, Update::Started { .. }))
    });
    assert_eq!(b.cluster.calls("fsubmit").len(), 2, "retried once");
    assert_eq!(b.cluster.live_jobs().len(), 2, "the orphan and the retry");
    b.sim.shutdown();
    assert_eq!(b.verdict(key), Verdict::Killed);
    assert_eq!(b.cluster.calls("fcancel-all").len(), 1);
    assert!(b.cluster.live_jobs().is_empty(), "nothing left behind");
}

#[test]
fn shutdown_leaves_nothing_of_the_run_queued() {
    let mut b = Bench::new(
        "submit_rate = \"10/s\"\nsubmit_threads = 2\ncancel_batch = 8",
        false,
    );
    let jobs: Vec<Job> = (0..60)
        .map(|i| {
            let behaviour = if i % 3 == 0 {
                "pending=100 run=1"
            } else {
                "run=600"
            };
            b.job(&format!("s{i}"), behaviour)
        })
        .collect();
    let keys = b.submit(jobs);
    // About 30 submitted (running or pending), 2 taken by workers waiting for their slot, the
    // rest waiting in the engine's queue.
    b.sim.run_for(secs(3.0));
    b.sim.shutdown();
    for key in &keys {
        assert_eq!(b.verdict(*key), Verdict::Killed, "{}", b.names[key]);
    }
    assert!(
        b.cluster.live_jobs().is_empty(),
        "{:?}",
        b.cluster.live_jobs()
    );
    let batches = b.cluster.call_args("fcancel");
    assert!(batches.iter().all(|ids| !ids.is_empty() && ids.len() <= 8));
    let submitted = b.cluster.calls("fsubmit").len();
    assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), submitted);
    assert_eq!(b.cluster.calls("fcancel-all").len(), 1, "the safety net");
    let late = b.job("late", "run=1");
    let answers = b.sim.submit(vec![late]);
    assert_eq!(
        answers,
        vec![Err("the Fake backend is shutting down".to_string())]
    );
}

#[test]
fn shutdown_gives_up_on_a_job_that_does_not_leave_the_queue() {
    let mut b = Bench::new("shutdown_wait = \"20s\"", false);
    let jobs = vec![
        b.job("stubborn", "run=600 ignore-cancel"),
        b.job("meek", "run=600"),
    ];
    let keys = b.submit(jobs);
    b.sim.run_for(secs(2.0));
    let began = b.sim.elapsed();
    b.sim.shutdown();
    assert_eq!(b.verdict(keys[1]), Verdict::Killed);
    let (at, end) = b.end_of(keys[0]);
    let Update::Lost { reason, native_id } = end else {
        panic!("{end:?}")
    };
    assert_eq!(
        reason,
        format!(
            "Fake job {} was cancelled but did not leave the queue within 20s",
            native_id.unwrap()
        )
    );
    assert_eq!(at - began, secs(20.0));
}

#[test]
fn cancels_are_retried_until_they_get_through() {
    let mut b = Bench::new("", false);
    b.cluster.set(|c| c.cancel_fails_until = secs(10.0));
    let jobs: Vec<Job> = (0..5).map(|i| b.job(&format!("c{i}"), "run=600")).collect();
    let keys = b.submit(jobs);
    b.sim.run_for(secs(2.0));
    b.sim.kill(&keys);
    assert!(b.sim.run_to_completion(Duration::from_secs(120)));
    assert!(keys.iter().all(|k| b.verdict(*k) == Verdict::Killed));
    let cancels = b.cluster.calls("fcancel");
    // 2 s, then backoff 1, 2, 4 s: 3, 5, 9, then 17 s (fine).
    assert_eq!(cancels, [2.0, 3.0, 5.0, 9.0, 17.0].map(secs).to_vec());
    assert!(b
        .cluster
        .call_args("fcancel")
        .iter()
        .all(|ids| ids.len() == 5));
}

#[test]
fn a_job_that_can_never_start_is_cancelled_and_fails_with_the_reason() {
    let mut b = Bench::new("lost_after = \"5s\"", false);
    let key = b.submit_one("huge", "stuck");
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    assert_eq!(
        b.verdict(key),
        Verdict::Failed {
            reason: "Fake will never start this job".into(),
            exit_code: None,
            ran: false
        }
    );
    assert_eq!(
        b.events_of(key).len(),
        1,
        "no STARTED for a job that never ran"
    );
    assert_eq!(b.cluster.calls("fcancel").len(), 1);
}

#[test]
fn an_exit_code_only_the_records_know_is_waited_for() {
    let mut b = Bench::new("lost_after = \"10s\"", true);
    let jobs = vec![
        b.job("recorded", "run=1 exit=4 needs-record"),
        b.job("unrecorded", "run=1 exit=4 needs-record no-record"),
    ];
    let keys = b.submit(jobs);
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    assert_eq!(b.verdict(keys[0]), Verdict::Exited(4));
    assert_eq!(
        b.verdict(keys[1]),
        Verdict::failed("Fake reported EXIT, exit code unknown")
    );
    let (at, _) = b.end_of(keys[1]);
    assert!(at > secs(12.0) && at <= secs(13.0), "{at:?}");
}

#[test]
fn usage_comes_from_the_records_and_is_waited_for_briefly() {
    let mut b = Bench::new("final_record_wait = \"5s\"", true);
    let jobs = vec![
        b.job("measured", "run=2 cpu=1.5 rss=300"),
        b.job("unmeasured", "run=2 no-record"),
    ];
    let keys = b.submit(jobs);
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    let (at, end) = b.end_of(keys[0]);
    let Update::Finished { usage, .. } = end else {
        unreachable!()
    };
    assert_eq!(
        usage,
        Some(Usage {
            cpu_s: Some(1.5),
            max_rss_mb: Some(300.0),
            source: "frecords"
        })
    );
    assert_eq!(
        at,
        secs(3.0),
        "the record came with the snapshot that saw it end"
    );
    let (at, end) = b.end_of(keys[1]);
    assert_eq!(
        end,
        Update::Finished {
            verdict: Verdict::Exited(0),
            native_id: ids_of(&end).map(String::from),
            usage: None
        }
    );
    assert!(at >= secs(8.0) && at <= secs(9.0), "{at:?}");
}

#[test]
fn a_job_in_an_unknown_state_is_lost_only_after_lost_after() {
    let mut b = Bench::new("lost_after = \"20s\"", false);
    let key = b.submit_one("unk", "run=600 unknown");
    assert!(b.sim.run_to_completion(Duration::from_secs(120)));
    let (at, end) = b.end_of(key);
    assert!(
        matches!(&end, Update::Lost { reason, .. } if reason == "Fake lost contact with the job"),
        "{end:?}"
    );
    assert!(at > secs(21.0) && at <= secs(22.0), "{at:?}");
}

#[test]
fn submission_failures_fail_their_jobs_with_the_schedulers_words() {
    let mut b = Bench::new("submit_retry_for = \"30s\"", false);
    let mut bad_cwd = b.job("bad-cwd", "run=1");
    bad_cwd.cwd = PathBuf::from("/nonexistent/flowrun-cwd");
    let jobs = vec![b.job("refused", "reject"), bad_cwd];
    let keys = b.submit(jobs);
    b.sim.run_for(secs(0.1));
    assert_eq!(
        b.verdict(keys[0]),
        Verdict::Failed {
            reason: "fsubmit failed: fsubmit: bad request".into(),
            exit_code: None,
            ran: false
        }
    );
    assert_eq!(
        b.verdict(keys[1]),
        Verdict::Failed {
            reason: "working directory does not exist: /nonexistent/flowrun-cwd".into(),
            exit_code: None,
            ran: false
        }
    );
    assert_eq!(
        b.cluster.calls("fsubmit").len(),
        1,
        "a permanent failure is not retried"
    );
    // A transient failure that lasts is retried for submit_retry_for, then fails.
    b.cluster
        .set(|c| c.outage = Some((Duration::ZERO, Duration::from_secs(3600))));
    let key = b.submit_one("patient", "run=1");
    assert!(b.sim.run_to_completion(Duration::from_secs(120)));
    let (at, _) = b.end_of(key);
    assert_eq!(
        b.verdict(key),
        Verdict::Failed {
            reason: "fsubmit failed: fake: cannot reach the controller, try again".into(),
            exit_code: None,
            ran: false
        }
    );
    // Tries at 0.1 s, then backoff 1, 2, 4, 8, 16 s: the try at 31.1 s is past the 30 s.
    assert!(at > secs(30.0) && at < secs(32.0), "{at:?}");
    assert_eq!(b.cluster.calls("fsubmit").len(), 1 + 6);
}

#[test]
fn jobs_are_rejected_up_front_when_they_cannot_be_taken() {
    let mut b = Bench::new("", false);
    let mut bad_env = b.job("bad-env", "run=1");
    bad_env.env.push(("NOT-A-NAME".into(), "x".into()));
    let dup = b.job("dup", "run=1");
    let answers = b.sim.submit(vec![bad_env, dup.clone(), dup]);
    assert_eq!(
        answers,
        vec![
            Err(
                "environment variable name \"NOT-A-NAME\" cannot be exported by a batch script"
                    .into()
            ),
            Ok(()),
            Err("job id 2 was already submitted".into()),
        ]
    );
}

#[test]
fn the_scripts_are_written_where_the_scheduler_runs_them() {
    let mut b = Bench::new("arrays = true", false);
    let jobs: Vec<Job> = (0..4).map(|i| b.job(&format!("w{i}"), "run=1")).collect();
    b.submit(jobs);
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    let dir: &Path = b.dir.path();
    for i in 0..4 {
        let script = dir.join(format!("jobs/w{i}/cluster-job.sh"));
        let text = std::fs::read_to_string(&script).unwrap();
        assert!(text.contains("exec >"), "array members write their own log");
    }
    let arrays: Vec<_> = std::fs::read_dir(dir.join("cluster-arrays"))
        .unwrap()
        .collect();
    assert_eq!(arrays.len(), 1);
}

#[test]
fn a_record_the_job_left_in_its_directory_resolves_it_before_the_scheduler_is_asked() {
    let mut b = Bench::new("lost_after = \"20s\"", true);
    // Finished jobs leave the snapshot at once, and the scheduler keeps no record of them.
    b.cluster.set(|c| c.purge_after = Some(Duration::ZERO));
    let jobs = vec![
        b.job("filed", "run=2 exit=3 no-record"),
        b.job("stale", "run=2 no-record"),
        b.job("asked", "run=2 exit=5"),
    ];
    for (job, record) in jobs.iter().zip(["101|EXIT|3", "999|DONE|0", ""]) {
        std::fs::create_dir_all(&job.job_dir).unwrap();
        if !record.is_empty() {
            std::fs::write(job.job_dir.join("fake-record"), record).unwrap();
        }
    }
    let keys = b.submit(jobs);
    assert!(b.sim.run_to_completion(Duration::from_secs(120)));
    let Update::Finished {
        verdict,
        native_id,
        usage,
    } = b.end_of(keys[0]).1
    else {
        panic!("{:?}", b.end_of(keys[0]))
    };
    assert_eq!(
        (verdict, native_id.as_deref()),
        (Verdict::Exited(3), Some("101"))
    );
    assert_eq!(usage.unwrap().source, "fake-record");
    // A record naming another job is not this job's: it is looked up, and lost.
    assert!(matches!(b.end_of(keys[1]).1, Update::Lost { .. }));
    assert_eq!(b.verdict(keys[2]), Verdict::Exited(5));
    let asked: Vec<Vec<String>> = b.cluster.call_args("frecords");
    assert!(
        asked.iter().all(|ids| !ids.contains(&"101".to_string())),
        "the scheduler was asked about a job its files answered for: {asked:?}"
    );
    assert!(asked.iter().any(|ids| ids.contains(&"103".to_string())));
}

#[test]
fn a_suspended_job_counts_as_started_and_ends_as_it_ends() {
    let mut b = Bench::new("", false);
    let key = b.submit_one("paused", "run=5 suspended exit=2");
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    let events = b.events_of(key);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(events[0].1, Update::Started { .. }), "{events:?}");
    assert!(
        events[0].0 < secs(3.0),
        "started while suspended: {events:?}"
    );
    assert_eq!(b.verdict(key), Verdict::Exited(2));
}

#[test]
fn an_ambiguous_submission_is_retried_and_its_copy_cancelled_by_name_at_shutdown() {
    let mut b = Bench::new("", false);
    // The scheduler took the first try, but its answer was lost.
    b.cluster.set(|c| c.silent_submit_failures = 1);
    let key = b.submit_one("twice", "run=600");
    b.sim.run_while_not(Duration::from_secs(60), |s| {
        s.events()
            .iter()
            .any(|(_, e)| matches!(e.update, Update::Started { .. }))
    });
    assert_eq!(b.cluster.calls("fsubmit").len(), 2, "retried once");
    assert_eq!(b.stat("submit_retries"), 1);
    assert_eq!(b.cluster.live_jobs().len(), 2, "the copy and the retry");
    b.sim.shutdown();
    assert_eq!(b.verdict(key), Verdict::Killed);
    assert_eq!(
        b.cluster.calls("fcancel-all").len(),
        1,
        "the safety net ran"
    );
    assert!(b.cluster.live_jobs().is_empty(), "nothing left behind");
}

// ---------------------------------------------------------------------------------------------
// Re-attaching (the host died; a new host of the same run takes the jobs over by native id)
// ---------------------------------------------------------------------------------------------

#[test]
fn re_attached_jobs_are_tracked_to_their_end_without_a_new_submission() {
    let mut b = Bench::new("", true);
    // Finished jobs leave the snapshot at once, as after Slurm's MinJobAge: one that ends
    // while no host watches is only in the final records.
    b.cluster.set(|c| c.purge_after = Some(Duration::ZERO));
    let jobs = vec![
        b.job("ends-unwatched", "pending=0.5 run=3 exit=3"),
        b.job("running", "pending=0.5 run=20 exit=0"),
        b.job("pending", "pending=30 run=2 exit=5"),
    ];
    let specs = jobs.clone();
    let keys = b.submit(jobs);
    // The first host sees them submitted and two running, then dies.
    b.sim.run_for(secs(2.5));
    // Each id was reported at its submission, before the job started.
    let native: Vec<String> = keys.iter().map(|k| b.native_id(*k)).collect();
    assert!(
        b.sim
            .events()
            .iter()
            .all(|(_, e)| !matches!(e.update, Update::Finished { .. })),
        "nothing ended before the crash: {:?}",
        b.sim.events()
    );
    b.sim.run_for(Duration::ZERO);
    let submissions = b.cluster.calls("fsubmit").len();
    assert_eq!(submissions, 3);

    // No host for 10 s: the first job ends meanwhile and leaves the queue.
    b.cluster.clock.advance(secs(10.0));
    b.host_dies_and_a_new_one_starts("");
    let answers = b.sim.adopt(specs.into_iter().zip(native.clone()).collect());
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert!(b.sim.run_to_completion(Duration::from_secs(300)));

    assert_eq!(
        b.cluster.calls("fsubmit").len(),
        submissions,
        "a re-attached job is never submitted again"
    );
    assert_eq!(b.verdict(keys[0]), Verdict::Exited(3));
    assert_eq!(b.verdict(keys[1]), Verdict::Exited(0));
    assert_eq!(b.verdict(keys[2]), Verdict::Exited(5));
    for (key, id) in keys.iter().zip(&native) {
        // The new engine reports each job under the same native id, STARTED first.
        let events = b.events_of(*key);
        assert!(
            matches!(&events[0].1, Update::Started { native_id } if native_id == id),
            "{events:?}"
        );
        assert!(
            events.iter().all(|(_, u)| ids_of(u) == Some(id.as_str())),
            "{events:?}"
        );
    }
    // The job that ended unwatched was resolved from the records at the first poll, with no
    // submit grace (it was submitted long ago), and with its usage.
    let (at, end) = b.end_of(keys[0]);
    assert!(at <= secs(12.5) + S, "resolved at {at:?}");
    let Update::Finished { usage, .. } = end else {
        unreachable!()
    };
    assert_eq!(usage.unwrap().source, "frecords");
    assert!(b
        .cluster
        .call_args("frecords")
        .iter()
        .any(|a| a.contains(&native[0])));
}

#[test]
fn a_re_attached_job_is_queried_by_its_run_name_and_can_be_killed() {
    let mut b = Bench::new("", true);
    let job = b.job("long", "pending=1 run=100");
    let spec = job.clone();
    let key = b.submit(vec![job])[0];
    b.sim.run_for(secs(3.0));
    let native = b.native_id(key);
    b.host_dies_and_a_new_one_starts("");
    assert_eq!(b.sim.adopt(vec![(spec, native.clone())]), vec![Ok(())]);
    b.sim.run_for(secs(2.0));
    let last_query = b.cluster.call_args("fstat").pop().unwrap();
    assert_eq!(
        last_query,
        ["flowrun-test-1"],
        "the query names the original run's tag"
    );
    b.sim.kill(&[key]);
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    assert_eq!(b.verdict(key), Verdict::Killed);
    assert_eq!(b.cluster.call_args("fcancel"), vec![vec![native]]);
    assert_eq!(b.cluster.calls("fsubmit").len(), 1);
}

#[test]
fn re_attaching_refuses_what_it_cannot_take_and_a_lost_job_is_lost_with_its_reason() {
    let mut b = Bench::new("lost_after = \"20s\"", true);
    let a = b.job("a", "run=5");
    let dup = a.clone();
    let blank = b.job("blank", "run=5");
    let gone = b.job("gone", "run=5");
    let answers = b.sim.adopt(vec![
        (a, "555".into()),
        (dup, "556".into()),
        (blank, String::new()),
        (gone.clone(), "777".into()),
    ]);
    assert!(answers[0].is_ok() && answers[3].is_ok(), "{answers:?}");
    assert!(
        answers[1]
            .as_ref()
            .unwrap_err()
            .contains("already submitted"),
        "{answers:?}"
    );
    assert!(answers[2].is_err(), "{answers:?}");
    // Neither the queue nor the records know 555 or 777 (the scheduler forgot them): lost,
    // never resubmitted by the engine (that is the host's call).
    assert!(b.sim.run_to_completion(Duration::from_secs(120)));
    let Update::Lost { reason, native_id } = b.end_of(gone.key).1 else {
        panic!()
    };
    assert_eq!(native_id.as_deref(), Some("777"));
    assert!(reason.contains("vanished"), "{reason}");
    assert!(b.cluster.calls("fsubmit").is_empty());
}
