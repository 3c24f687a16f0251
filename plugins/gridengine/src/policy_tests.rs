//! The Grid Engine backend's policy without a cluster: the real dialect on the engine's
//! simulation (manual clock) against a scripted Grid Engine that prints what SGE 8.1.9 prints
//! (qsub -terse, qstat -xml, qacct, qdel). The test moves the jobs itself. The same behaviours
//! against the real Grid Engine are in tests/integration/gridengine.rs.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use flowrun_plugin_sdk::engine::{
    records::{posix_local_time, CLOCK_SKEW_MARGIN},
    testing::{self, Simulation},
    CommandLine, CommandOutput, CommandRunner, Job, JobKey, ManualClock, Update, Verdict,
};
use parking_lot::Mutex;

use crate::{dialect::GridEngine, parse};

#[derive(Default)]
struct GeState {
    next_id: u64,
    /// Native id -> qstat state, for jobs in the queue.
    queue: BTreeMap<String, String>,
    /// Native id -> (failed, exit_status, end time), for jobs in the accounting file.
    accounting: BTreeMap<String, (String, String, SystemTime)>,
    /// The most records one qacct call printed.
    most_printed: usize,
    calls: Vec<(String, Vec<String>)>,
    qmaster_down: bool,
}

struct FakeGe(Mutex<GeState>);

impl FakeGe {
    fn queue(&self, id: &str, state: &str) {
        self.0.lock().queue.insert(id.into(), state.into());
    }

    /// The job leaves the queue with this accounting record.
    fn end(&self, id: &str, failed: &str, exit: &str) {
        self.end_at(id, failed, exit, SystemTime::now());
    }

    /// The job leaves the queue with a record that says it ended at `time`.
    fn end_at(&self, id: &str, failed: &str, exit: &str, time: SystemTime) {
        let mut st = self.0.lock();
        st.queue.remove(id);
        st.accounting
            .insert(id.into(), (failed.into(), exit.into(), time));
    }

    fn calls(&self, program: &str) -> Vec<Vec<String>> {
        let st = self.0.lock();
        st.calls
            .iter()
            .filter(|c| c.0 == program)
            .map(|c| c.1.clone())
            .collect()
    }
}

const DOWN: &str = "error: commlib error: got select error (Connection refused)\n\
                    unable to send message to qmaster using port 6444 on host \"vm\": got send error";

impl CommandRunner for FakeGe {
    fn run(&self, command: &CommandLine, _limit: Duration) -> CommandOutput {
        let mut st = self.0.lock();
        let (program, args) = (command.program.as_str(), &command.args);
        st.calls.push((program.into(), args.clone()));
        let out =
            |code, stdout: &str, stderr: &str| CommandOutput::exited(program, code, stdout, stderr);
        if st.qmaster_down && program != "qacct" {
            return out(1, "", DOWN);
        }
        match program {
            "qsub" => {
                st.next_id += 1;
                let id = st.next_id;
                match args.iter().position(|a| a == "-t") {
                    None => {
                        st.queue.insert(id.to_string(), "qw".into());
                        out(0, &format!("{id}\n"), "")
                    }
                    Some(i) => {
                        let last: u32 = args[i + 1].strip_prefix("1-").unwrap().parse().unwrap();
                        for t in 1..=last {
                            st.queue.insert(format!("{id}.{t}"), "qw".into());
                        }
                        out(0, &format!("{id}.1-{last}:1\n"), "")
                    }
                }
            }
            "qstat" => {
                let mut xml = String::from("<?xml version='1.0'?>\n<job_info>\n  <queue_info>\n");
                for (id, state) in &st.queue {
                    let (job, task) = id
                        .split_once('.')
                        .map_or((id.as_str(), None), |(j, t)| (j, Some(t)));
                    let tasks = task
                        .map(|t| format!("<tasks>{t}</tasks>"))
                        .unwrap_or_default();
                    xml.push_str(&format!(
                        "    <job_list state=\"running\"><JB_job_number>{job}</JB_job_number>\
                         <JB_name>flowrun-ge-test</JB_name><state>{state}</state>{tasks}</job_list>\n"
                    ));
                }
                xml.push_str("  </queue_info>\n  <job_info>\n  </job_info>\n</job_info>\n");
                out(0, &xml, "")
            }
            "qacct" => {
                // `-E -b TIME`: the records that ended at TIME or later.
                let since = match args.iter().position(|a| a == "-b") {
                    Some(i) => args[i + 1].clone(),
                    None => String::new(),
                };
                assert_eq!(since.is_empty(), !args.contains(&"-E".to_string()));
                let mut text = String::new();
                let mut printed = 0;
                for (id, (failed, exit, end)) in &st.accounting {
                    if posix_local_time(*end) < since {
                        continue;
                    }
                    printed += 1;
                    let (job, task) = id.split_once('.').unwrap_or((id, "undefined"));
                    text.push_str(&format!(
                        "==============================================================\n\
                         jobname      flowrun-ge-test\njobnumber    {job}\ntaskid       {task}\n\
                         failed       {failed}\nexit_status  {exit}\ncpu          0.250s\n\
                         ru_maxrss    12.000KB\n"
                    ));
                }
                st.most_printed = st.most_printed.max(printed);
                if text.is_empty() {
                    return out(1, "", "error: job name flowrun-ge-test not found");
                }
                out(0, &text, "")
            }
            "qdel" => {
                let (mut stdout, mut stderr) = (String::new(), String::new());
                for id in args {
                    match st.queue.remove(id) {
                        Some(s) if s.contains('q') => {
                            stdout.push_str(&format!("root has deleted job {id}\n"))
                        }
                        Some(_) => {
                            stdout.push_str(&format!(
                                "root has registered the job {id} for deletion\n"
                            ));
                            st.accounting.insert(
                                id.clone(),
                                (
                                    "100 : assumedly after job".into(),
                                    "137 (Killed)".into(),
                                    SystemTime::now(),
                                ),
                            );
                        }
                        None => stderr.push_str(&format!("denied: job \"{id}\" does not exist\n")),
                    }
                }
                out(if stderr.is_empty() { 0 } else { 1 }, &stdout, &stderr)
            }
            other => panic!("the scripted Grid Engine has no {other}"),
        }
    }
}

struct Bench {
    sim: Simulation<GridEngine>,
    ge: Arc<FakeGe>,
    dir: tempfile::TempDir,
    next_key: u64,
}

impl Bench {
    fn new(keys: &str) -> Bench {
        let (engine, ge_keys) = parse(&format!("poll_interval = \"1s\"\n{keys}")).unwrap();
        let ge = Arc::new(FakeGe(Mutex::new(GeState {
            next_id: 40,
            ..Default::default()
        })));
        let sim = Simulation::new(
            GridEngine::new(ge_keys),
            engine,
            ge.clone(),
            Arc::new(ManualClock::new()),
        );
        Bench {
            sim,
            ge,
            dir: tempfile::tempdir().unwrap(),
            next_key: 1,
        }
    }

    fn submit(&mut self, names: &[&str]) -> (Vec<JobKey>, Vec<Job>) {
        let jobs: Vec<Job> = names
            .iter()
            .map(|name| {
                self.next_key += 1;
                testing::job(
                    JobKey(self.next_key),
                    name,
                    "true",
                    self.dir.path(),
                    "flowrun-ge-test",
                )
            })
            .collect();
        (self.sim.submit_accepted(jobs.clone()), jobs)
    }

    fn reason(&self, key: JobKey) -> String {
        match self.sim.verdict(key) {
            Verdict::Failed { reason, .. } => reason,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn qsub_gets_a_bash_script_its_limits_and_its_output_file() {
    let mut b =
        Bench::new("queue = \"all.q\"\nproject = \"p\"\nqsub_args = [\"-l\", \"arch=lx-amd64\"]");
    let mut job = testing::job(JobKey(1), "big", "exit 99", b.dir.path(), "flowrun-ge-test");
    job.cpus = 4;
    job.memory_mb = Some(4000);
    job.timeout = Some(Duration::from_millis(90_500));
    let dir = job.job_dir.clone();
    b.sim.submit_accepted(vec![job]);
    b.sim.run_for(Duration::from_secs(1));
    let script = dir.join("gridengine-job.sh");
    let want = [
        "-terse",
        "-N",
        "flowrun-ge-test",
        "-S",
        "/bin/bash",
        "-b",
        "n",
        "-o",
        &dir.join("gridengine.out").to_string_lossy(),
        "-j",
        "y",
        "-wd",
        &b.dir.path().to_string_lossy(),
        "-l",
        "h_rt=91",
        "-pe",
        "smp",
        "4",
        "-l",
        "h_vmem=1000M",
        "-q",
        "all.q",
        "-P",
        "p",
        "-l",
        "arch=lx-amd64",
        &script.to_string_lossy(),
    ]
    .map(String::from);
    assert_eq!(b.ge.calls("qsub")[0], want);
    // The script runs as Grid Engine would run it: exit 99 must not reach Grid Engine (it
    // would reschedule the job); the exit status file keeps it.
    let status = std::process::Command::new("bash")
        .arg(&script)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(dir.join("gridengine-exit-status.1")).unwrap(),
        "99\n"
    );
    assert_eq!(std::fs::read_to_string(dir.join("output.log")).unwrap(), "");
}

#[test]
fn ends_come_from_qacct_once_the_job_left_qstat() {
    let mut b = Bench::new("");
    let (keys, jobs) = b.submit(&[
        "exit3",
        "outside",
        "limit",
        "reserved",
        "rescheduled",
        "no-output-file",
    ]);
    b.sim.run_for(Duration::from_secs(2));
    for id in 41..=46 {
        b.ge.queue(&id.to_string(), "r");
    }
    b.sim.run_for(Duration::from_secs(2));
    b.ge.end("41", "0", "3");
    b.ge.end(
        "42",
        "100 : assumedly after job",
        "137                  (Killed)",
    );
    b.ge.end(
        "43",
        "37  : qmaster enforced h_rt, h_cpu, or h_vmem limit",
        "137",
    );
    // The script exited 1 for a command that exited 100, and kept the 100 in its file.
    std::fs::write(jobs[3].job_dir.join("gridengine-exit-status.1"), "100\n").unwrap();
    b.ge.end("44", "0", "1");
    b.ge.queue("45", "Rr");
    b.ge.end("46", "26  : opening input/output file", "0");
    // Missing jobs are looked up once their submit_grace (10 s) is over.
    b.sim.run_for(Duration::from_secs(10));
    let Update::Finished {
        verdict,
        usage,
        native_id,
    } = b.sim.end_of(keys[0])
    else {
        panic!()
    };
    assert_eq!(
        (verdict, native_id.as_deref()),
        (Verdict::Exited(3), Some("41"))
    );
    let usage = usage.unwrap();
    assert_eq!(
        (usage.cpu_s, usage.max_rss_mb, usage.source),
        (Some(0.25), Some(12.0), "qacct")
    );
    assert_eq!(b.reason(keys[1]), "killed outside flowrun");
    assert!(
        b.reason(keys[2])
            .starts_with("Grid Engine limit (failed 37"),
        "{}",
        b.reason(keys[2])
    );
    assert_eq!(b.sim.verdict(keys[3]), Verdict::Exited(100));
    // Any other failure names Grid Engine's reason and the exit status as a number.
    assert_eq!(
        b.reason(keys[5]),
        "Grid Engine: failed 26  : opening input/output file (exit status 0)"
    );
    assert_eq!(b.sim.tracked(), 1, "a restarted job runs on");
    // One qstat per poll; qacct by the run's name, only while a job needs it, and only for
    // records since the jobs were last seen waiting.
    let qacct = b.ge.calls("qacct");
    assert!(
        qacct
            .iter()
            .all(|a| a.len() == 5 && a[..4] == ["-j", "flowrun-ge-test", "-E", "-b"]),
        "{qacct:?}"
    );
    assert!(qacct.len() <= b.ge.calls("qstat").len());
}

#[test]
fn flowrun_kills_end_killed_pending_or_running_and_nothing_is_left() {
    let mut b = Bench::new("");
    let (keys, _) = b.submit(&["pending", "running", "later"]);
    b.sim.run_for(Duration::from_secs(2));
    b.ge.queue("42", "r");
    b.sim.run_for(Duration::from_secs(1));
    b.sim.kill(&keys[..2]);
    b.sim.run_for(Duration::from_secs(3));
    // The pending one leaves no accounting record: qdel's "has deleted job" says it ended.
    assert_eq!(b.sim.verdict(keys[0]), Verdict::Killed);
    assert_eq!(b.sim.verdict(keys[1]), Verdict::Killed);
    b.sim.shutdown();
    assert_eq!(b.sim.verdict(keys[2]), Verdict::Killed);
    assert!(b.ge.0.lock().queue.is_empty(), "nothing left queued");
}

#[test]
fn an_error_state_is_cancelled_and_failed_with_its_reason() {
    let mut b = Bench::new("lost_after = \"10s\"");
    let (keys, _) = b.submit(&["broken"]);
    b.sim.run_for(Duration::from_secs(2));
    b.ge.queue("41", "Eqw");
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    assert!(
        b.reason(keys[0]).contains("error state Eqw"),
        "{}",
        b.reason(keys[0])
    );
    assert_eq!(b.ge.calls("qdel"), [["41"]]);
}

#[test]
fn a_qmaster_outage_fails_no_job() {
    let mut b = Bench::new("");
    let (keys, _) = b.submit(&["through"]);
    b.sim.run_for(Duration::from_secs(2));
    b.ge.queue("41", "r");
    b.ge.0.lock().qmaster_down = true;
    b.sim.run_for(Duration::from_secs(20));
    b.ge.end("41", "0", "0");
    b.ge.0.lock().qmaster_down = false;
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    assert_eq!(b.sim.verdict(keys[0]), Verdict::Exited(0));
}

#[test]
fn arrays_go_out_with_t_and_tc() {
    let mut b = Bench::new("arrays = true\narray_slot_limit = 2");
    let (keys, _) = b.submit(&["a", "b", "c", "d"]);
    b.sim.run_for(Duration::from_secs(2));
    let qsub = b.ge.calls("qsub");
    assert_eq!(qsub.len(), 1);
    let args = qsub[0].join(" ");
    assert!(args.contains(" -t 1-4 -tc 2 "), "{args}");
    for t in 1..=4 {
        b.ge.end(&format!("41.{t}"), "0", if t == 2 { "5" } else { "0" });
    }
    assert!(b.sim.run_to_completion(Duration::from_secs(30)));
    assert_eq!(b.sim.verdict(keys[1]), Verdict::Exited(5));
    let Update::Finished { native_id, .. } = b.sim.end_of(keys[3]) else {
        panic!()
    };
    assert_eq!(native_id.as_deref(), Some("41.4"));
}

#[test]
fn qacct_reads_the_records_since_the_job_last_waited_and_a_late_one_is_not_lost() {
    let mut b = Bench::new("");
    // The accounting file already holds the run's earlier records, from an hour ago.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for id in 1..=30 {
        b.ge.end_at(&id.to_string(), "0", "0", hour_ago);
    }
    let before = SystemTime::now();
    let (keys, _) = b.submit(&["late"]);
    b.sim.run_for(Duration::from_secs(2));
    let seen_waiting = SystemTime::now(); // after the snapshot that showed it waiting
    b.ge.queue("41", "r");
    b.sim.run_for(Duration::from_secs(20));
    // Its record comes late, with an end time as early as it can be.
    b.ge.end_at("41", "0", "3", seen_waiting);
    b.sim.run_for(Duration::from_secs(2));
    assert_eq!(b.sim.verdict(keys[0]), Verdict::Exited(3));
    let qacct = b.ge.calls("qacct");
    let since = &qacct.last().unwrap()[4];
    assert!(
        *since >= posix_local_time(before - CLOCK_SKEW_MARGIN)
            && *since <= posix_local_time(seen_waiting - CLOCK_SKEW_MARGIN),
        "{qacct:?}"
    );
    assert_eq!(
        b.ge.0.lock().most_printed,
        1,
        "the older records were not read"
    );
}
