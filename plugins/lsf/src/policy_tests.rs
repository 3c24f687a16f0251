//! The LSF backend's policy without LSF: the real LSF dialect on the engine's simulation
//! (manual clock), against a scripted LSF that answers bsub, bjobs and bkill as LSF 10.1
//! prints them. The test moves the jobs' states itself, and writes the job reports LSF would.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use flowrun_plugin_api::engine::{
    testing::{self, Simulation},
    CommandLine, CommandOutput, CommandRunner, Job, JobKey, ManualClock, Update, Usage, Verdict,
};
use parking_lot::Mutex;

use crate::{config, dialect::Lsf, lsf::REPORT_FILE};

#[derive(Default)]
struct LsfState {
    next_id: u64,
    /// native id -> (STAT, exit code, exit reason).
    jobs: BTreeMap<String, (String, Option<i32>, String)>,
    calls: Vec<(String, Vec<String>)>,
    /// Answers the next bsub calls give instead of submitting: (exit code, stdout, stderr).
    bsub_answers: VecDeque<(i32, String, String)>,
    /// Lines a site's esub prints before bsub's own.
    banner: String,
    /// Every command fails as during an mbatchd outage.
    outage: bool,
}

struct FakeLsf(Mutex<LsfState>);

impl FakeLsf {
    fn new(first_id: u64) -> Arc<FakeLsf> {
        Arc::new(FakeLsf(Mutex::new(LsfState {
            next_id: first_id,
            ..Default::default()
        })))
    }

    fn set(&self, id: &str, stat: &str, exit: Option<i32>, reason: &str) {
        self.0
            .lock()
            .jobs
            .insert(id.into(), (stat.into(), exit, reason.into()));
    }

    /// mbatchd forgets a job (CLEAN_PERIOD).
    fn forget(&self, id: &str) {
        self.0.lock().jobs.remove(id);
    }

    fn calls(&self, program: &str) -> Vec<Vec<String>> {
        self.0
            .lock()
            .calls
            .iter()
            .filter(|(p, _)| p == program)
            .map(|(_, a)| a.clone())
            .collect()
    }
}

fn finished(stat: &str) -> bool {
    matches!(stat, "DONE" | "EXIT")
}

impl CommandRunner for FakeLsf {
    fn run(&self, command: &CommandLine, _limit: Duration) -> CommandOutput {
        let mut st = self.0.lock();
        let (program, args) = (command.program.as_str(), &command.args);
        st.calls.push((program.into(), args.clone()));
        let out =
            |code, stdout: &str, stderr: &str| CommandOutput::exited(program, code, stdout, stderr);
        if st.outage {
            let err = match program {
                "bsub" => "Connection refused by server. Job not submitted.",
                _ => "Connection refused by server",
            };
            return out(255, "", err);
        }
        match program {
            "bsub" => {
                if let Some((code, stdout, stderr)) = st.bsub_answers.pop_front() {
                    return out(code, &stdout, &stderr);
                }
                st.next_id += 1;
                let id = st.next_id.to_string();
                let name = &args[args.iter().position(|a| a == "-J").unwrap() + 1];
                match name.split_once('[') {
                    None => {
                        st.jobs
                            .insert(id.clone(), ("PEND".into(), None, String::new()));
                    }
                    Some((_, range)) => {
                        let range = range.split(']').next().unwrap();
                        let (a, b) = range.split_once('-').unwrap();
                        for i in a.parse::<u32>().unwrap()..=b.parse().unwrap() {
                            st.jobs
                                .insert(format!("{id}[{i}]"), ("PEND".into(), None, String::new()));
                        }
                    }
                }
                let line = format!(
                    "{}Job <{id}> is submitted to default queue <normal>.\n",
                    st.banner
                );
                out(0, &line, "")
            }
            "bjobs" => {
                let ids = &args[3..];
                let (mut rows, mut errors) = (String::new(), String::new());
                for id in ids {
                    let found: Vec<_> = st
                        .jobs
                        .iter()
                        .filter(|(n, _)| n.split('[').next() == Some(id.as_str()))
                        .collect();
                    if found.is_empty() {
                        errors.push_str(&format!("Job <{id}> is not found\n"));
                    }
                    for (native, (stat, code, reason)) in found {
                        let index = native
                            .split_once('[')
                            .map_or("0", |(_, i)| i.trim_end_matches(']'));
                        let code = code.map_or("-".to_string(), |c| c.to_string());
                        let reason = if reason.is_empty() { "-" } else { reason };
                        rows.push_str(&format!("{id}|{index}|{stat}|{code}|{reason}\n"));
                    }
                }
                out(if rows.is_empty() { 255 } else { 0 }, &rows, &errors)
            }
            "bkill" => {
                assert!(!args.is_empty() && !args.contains(&"0".to_string()) || args[0] == "-J");
                let (mut stdout, mut stderr) = (String::new(), String::new());
                if args[0] == "-J" {
                    return out(
                        255,
                        "",
                        &format!("Job <{}>: No matching job found\n", args[1]),
                    );
                }
                for id in args {
                    match st.jobs.get_mut(id) {
                        None => stderr.push_str(&format!("Job <{id}>: No matching job found\n")),
                        Some(job) if finished(&job.0) => {
                            stderr.push_str(&format!("Job <{id}>: Job has already finished\n"))
                        }
                        Some(job) => {
                            let ran = job.0 == "RUN";
                            *job = (
                                "EXIT".into(),
                                ran.then_some(130),
                                "TERM_OWNER: job killed by owner".into(),
                            );
                            stdout.push_str(&format!("Job <{id}> is being terminated\n"));
                        }
                    }
                }
                out(if stderr.is_empty() { 0 } else { 255 }, &stdout, &stderr)
            }
            other => panic!("the scripted LSF has no {other}"),
        }
    }
}

/// The job report LSF would write for `id` ("Done", or "Exited" with `exit`).
fn report(id: &str, exit: Option<i32>) -> String {
    let dashes = "-".repeat(60);
    let (subject, verdict) = match exit {
        None => ("Done", "Successfully completed.".to_string()),
        Some(n) => ("Exited", format!("Exited with exit code {n}.")),
    };
    format!(
        "Sender: LSF System <lsfadmin@node>\nSubject: Job {id}: <flowrun-lsf-test> in cluster <c> {subject}\n\n\
         Your job looked like:\n\n{dashes}\n# LSBATCH: User input\n/bin/bash x\n{dashes}\n\n{verdict}\n\n\
         Resource usage summary:\n\n    CPU time :                                   1.25 sec.\n\
         \x20   Max Memory :                                 42 MB\n\nThe output (if any) follows:\n\n"
    )
}

struct Bench {
    sim: Simulation<Lsf>,
    lsf: Arc<FakeLsf>,
    dir: tempfile::TempDir,
    next_key: u64,
}

impl Bench {
    fn new(keys: &str) -> Bench {
        let (engine, lsf_keys) = config::parse(keys).unwrap();
        let clock = Arc::new(ManualClock::new());
        let lsf = FakeLsf::new(12_345_677);
        let sim = Simulation::new(Lsf::new(lsf_keys), engine, lsf.clone(), clock);
        Bench {
            sim,
            lsf,
            dir: tempfile::tempdir().unwrap(),
            next_key: 1,
        }
    }

    fn job(&mut self, name: &str) -> Job {
        let key = JobKey(self.next_key);
        self.next_key += 1;
        testing::job(key, name, "true", self.dir.path(), "flowrun-lsf-test")
    }

    fn submit(&mut self, jobs: Vec<Job>) -> Vec<JobKey> {
        self.sim.submit_accepted(jobs)
    }

    fn end(&self, key: JobKey) -> Update {
        self.sim.end_of(key)
    }

    fn verdict(&self, key: JobKey) -> Verdict {
        self.sim.verdict(key)
    }
}

#[test]
fn bsub_gets_the_jobs_options_and_its_report_goes_to_the_job_directory() {
    let mut b = Bench::new(
        "poll_interval = \"1s\"\nqueue = \"regress\"\nproject = \"chip\"\n\
         bsub_args = [\"-R\", \"select[type==X86_64]\"]\nresource_map = { vcs = \"vcssim\" }",
    );
    let mut job = b.job("big");
    job.cpus = 4;
    job.memory_mb = Some(4096);
    job.timeout = Some(Duration::from_secs(90));
    job.named_resources = vec![("vcs".into(), 2), ("unmapped".into(), 1)];
    let job_dir = job.job_dir.clone();
    b.submit(vec![job]);
    b.sim.run_for(Duration::from_secs(2));
    let bsub = b.lsf.calls("bsub");
    let script = job_dir.join("lsf-job.sh");
    assert_eq!(
        bsub[0],
        [
            "-J",
            "flowrun-lsf-test",
            "-oo",
            &job_dir.join(REPORT_FILE).to_string_lossy(),
            "-cwd",
            &b.dir.path().to_string_lossy(),
            "-W",
            "2",
            "-n",
            "4",
            "-M",
            "4096MB",
            "-R",
            "rusage[mem=4096MB:vcssim=2] span[hosts=1]",
            "-q",
            "regress",
            "-P",
            "chip",
            "-R",
            "select[type==X86_64]",
            &format!("/bin/bash {}", script.display()),
        ]
        .map(String::from)
    );
    // The script sends the job's output to its log itself.
    let text = std::fs::read_to_string(script).unwrap();
    assert!(text.contains("exec >"), "{text}");
    // One bjobs per poll, by id (8 digits), in the machine-readable format.
    let bjobs = b.lsf.calls("bjobs");
    assert_eq!(
        bjobs.last().unwrap(),
        &[
            "-noheader",
            "-o",
            "jobid jobindex stat exit_code exit_reason delimiter='|'",
            "12345678"
        ]
        .map(String::from)
    );
}

#[test]
fn same_shape_jobs_go_out_as_one_array_with_its_slot_limit() {
    let mut b = Bench::new("poll_interval = \"1s\"\narrays = true\narray_slot_limit = 2");
    let jobs: Vec<Job> = (0..5).map(|i| b.job(&format!("m{i}"))).collect();
    let dirs: Vec<_> = jobs.iter().map(|j| j.job_dir.clone()).collect();
    let keys = b.submit(jobs);
    b.sim.run_for(Duration::from_secs(2));
    let bsub = b.lsf.calls("bsub");
    assert_eq!(bsub.len(), 1, "{bsub:?}");
    assert_eq!(bsub[0][1], "flowrun-lsf-test[1-5]%2");
    // Each element's report goes to its own job directory, through a link per index.
    let pattern = &bsub[0][3];
    assert!(pattern.ends_with("/%I/lsf-report.txt"), "{pattern}");
    let links = std::path::Path::new(pattern.trim_end_matches("/%I/lsf-report.txt"));
    for (i, dir) in dirs.iter().enumerate() {
        assert_eq!(
            &std::fs::read_link(links.join((i + 1).to_string())).unwrap(),
            dir
        );
    }
    assert!(bsub[0].last().unwrap().contains("lsf-arrays/array-"));
    for i in 1..=5 {
        let id = format!("12345678[{i}]");
        let exit = (i == 3).then_some(3);
        b.lsf
            .set(&id, if i == 3 { "EXIT" } else { "DONE" }, exit, "");
        std::fs::write(dirs[i - 1].join(REPORT_FILE), report(&id, exit)).unwrap();
    }
    assert!(b.sim.run_to_completion(Duration::from_secs(30)));
    for (i, key) in keys.iter().enumerate() {
        let want = if i == 2 { 3 } else { 0 };
        let Update::Finished {
            verdict,
            native_id,
            usage,
        } = b.end(*key)
        else {
            panic!()
        };
        assert_eq!(verdict, Verdict::Exited(want));
        assert_eq!(native_id.unwrap(), format!("12345678[{}]", i + 1));
        assert_eq!(
            usage,
            Some(Usage {
                cpu_s: Some(1.25),
                max_rss_mb: Some(42.0),
                source: "lsf-report"
            })
        );
    }
}

#[test]
fn a_job_bjobs_forgot_is_resolved_from_its_report_or_lost_with_the_reason() {
    let mut b = Bench::new("poll_interval = \"1s\"\nsubmit_grace = \"0s\"\nlost_after = \"10s\"");
    let jobs = vec![b.job("reported"), b.job("stale"), b.job("silent")];
    let dirs: Vec<_> = jobs.iter().map(|j| j.job_dir.clone()).collect();
    let keys = b.submit(jobs);
    b.sim.run_for(Duration::from_secs(2));
    let ids = ["12345678", "12345679", "12345680"];
    for id in ids {
        b.lsf.set(id, "RUN", None, "");
    }
    b.sim.run_for(Duration::from_secs(2));
    // All three end and are forgotten between two polls (a CLEAN_PERIOD shorter than the
    // poll interval); only the first left its own report.
    std::fs::write(dirs[0].join(REPORT_FILE), report(ids[0], Some(3))).unwrap();
    std::fs::write(dirs[1].join(REPORT_FILE), report("999", None)).unwrap();
    for id in ids {
        b.lsf.forget(id);
    }
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    assert_eq!(b.verdict(keys[0]), Verdict::Exited(3));
    for key in &keys[1..] {
        let Update::Lost { reason, .. } = b.end(*key) else {
            panic!("{:?}", b.end(*key))
        };
        assert!(
            reason.contains("no longer known to bjobs") && reason.contains(REPORT_FILE),
            "{reason}"
        );
    }
}

#[test]
fn unkwn_is_waited_out_for_lost_after_then_lost() {
    let mut b = Bench::new("poll_interval = \"1s\"\nlost_after = \"20s\"");
    let jobs = vec![b.job("back"), b.job("gone")];
    let keys = b.submit(jobs);
    b.sim.run_for(Duration::from_secs(2));
    b.lsf.set("12345678", "UNKWN", None, "");
    b.lsf.set("12345679", "UNKWN", None, "");
    b.sim.run_for(Duration::from_secs(15));
    assert_eq!(b.sim.tracked(), 2, "UNKWN is not an end");
    b.lsf.set("12345678", "DONE", None, "");
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    assert_eq!(b.verdict(keys[0]), Verdict::Exited(0));
    let Update::Lost { reason, .. } = b.end(keys[1]) else {
        panic!()
    };
    assert!(
        reason.contains("UNKWN") && reason.contains("bjobs -l 12345679"),
        "{reason}"
    );
}

#[test]
fn kills_go_out_in_batches_and_ended_jobs_count_as_killed_or_as_they_ended() {
    let mut b = Bench::new("poll_interval = \"1s\"\ncancel_batch = 2");
    let jobs: Vec<Job> = (0..3).map(|i| b.job(&format!("k{i}"))).collect();
    let keys = b.submit(jobs);
    b.sim.run_for(Duration::from_secs(2));
    b.lsf.set("12345678", "RUN", None, "");
    b.lsf.set("12345679", "DONE", None, "");
    b.sim.kill(&keys);
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    let bkill = b.lsf.calls("bkill");
    assert!(
        bkill.iter().all(|ids| !ids.is_empty() && ids.len() <= 2),
        "{bkill:?}"
    );
    assert_eq!(b.verdict(keys[0]), Verdict::Killed);
    // It had finished before the kill: "Job has already finished", and it passed.
    assert_eq!(b.verdict(keys[1]), Verdict::Exited(0));
    assert_eq!(b.verdict(keys[2]), Verdict::Killed, "killed while pending");
}

#[test]
fn exit_reasons_name_what_ended_the_job() {
    let mut b = Bench::new("poll_interval = \"1s\"");
    let jobs: Vec<Job> = (0..6).map(|i| b.job(&format!("r{i}"))).collect();
    let keys = b.submit(jobs);
    b.sim.run_for(Duration::from_secs(2));
    for (i, (stat, code, reason)) in [
        ("EXIT", Some(3), ""),
        (
            "EXIT",
            Some(140),
            "TERM_RUNLIMIT: job killed after reaching LSF run time limit",
        ),
        (
            "EXIT",
            Some(137),
            "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit",
        ),
        ("EXIT", Some(130), "TERM_OWNER: job killed by owner"),
        ("ZOMBI", None, ""),
        ("USUSP", None, ""),
    ]
    .into_iter()
    .enumerate()
    {
        b.lsf
            .set(&format!("{}", 12_345_678 + i), stat, code, reason);
    }
    b.sim.run_for(Duration::from_secs(10));
    let failed = |key: JobKey| match b.verdict(key) {
        Verdict::Failed { reason, .. } => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(b.verdict(keys[0]), Verdict::Exited(3));
    assert_eq!(failed(keys[1]), "LSF run limit");
    assert_eq!(failed(keys[2]), "LSF memory limit");
    assert_eq!(failed(keys[3]), "killed outside flowrun");
    assert!(failed(keys[4]).contains("ZOMBI"));
    // Suspended: started, not ended.
    assert_eq!(b.sim.tracked(), 1);
    assert!(b
        .sim
        .events()
        .iter()
        .any(|(_, e)| e.job == keys[5] && matches!(e.update, Update::Started { .. })));
    b.lsf.set("12345683", "DONE", None, "");
    assert!(b.sim.run_to_completion(Duration::from_secs(30)));
    assert_eq!(b.verdict(keys[5]), Verdict::Exited(0));
}

#[test]
fn bsub_failures_are_retried_refused_or_swept_as_lsf_means_them() {
    let mut b = Bench::new("poll_interval = \"1s\"");
    b.lsf.0.lock().banner = "Memory reservation is (MB): 1024\n\n".into();
    // Refused by an unreachable mbatchd, then answered with nothing at all (it may have gone
    // through), then taken.
    b.lsf.0.lock().bsub_answers = VecDeque::from([
        (
            255,
            String::new(),
            "Connection refused by server. Job not submitted.".into(),
        ),
        (255, String::new(), String::new()),
    ]);
    let job = b.job("retried");
    let retried = b.submit(vec![job])[0];
    b.sim.run_for(Duration::from_secs(10));
    assert_eq!(b.lsf.calls("bsub").len(), 3);
    b.lsf.set("12345678", "RUN", None, "");
    b.lsf.0.lock().bsub_answers = VecDeque::from([(
        255,
        String::new(),
        "nosuch: No such queue. Job not submitted.".into(),
    )]);
    let job = b.job("refused");
    let refused = b.submit(vec![job])[0];
    b.sim.run_for(Duration::from_secs(3));
    match b.verdict(refused) {
        Verdict::Failed { reason, .. } => assert_eq!(
            reason,
            "bsub failed: nosuch: No such queue. Job not submitted."
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        b.lsf.calls("bsub").len(),
        4,
        "a permanent refusal is not retried"
    );
    b.sim.shutdown();
    assert_eq!(b.verdict(retried), Verdict::Killed);
    let bkill = b.lsf.calls("bkill");
    assert!(
        bkill.contains(&vec!["-J".into(), "flowrun-lsf-test".into(), "0".into()]),
        "the run was swept by name after an ambiguous bsub: {bkill:?}"
    );
}

#[test]
fn an_mbatchd_outage_fails_no_job() {
    let mut b = Bench::new("poll_interval = \"1s\"");
    let job = b.job("through");
    let key = b.submit(vec![job])[0];
    b.sim.run_for(Duration::from_secs(2));
    b.lsf.set("12345678", "RUN", None, "");
    b.lsf.0.lock().outage = true;
    b.sim.run_for(Duration::from_secs(20));
    assert_eq!(b.sim.tracked(), 1, "a failed query ends no job");
    b.lsf.0.lock().outage = false;
    b.lsf.set("12345678", "DONE", None, "");
    assert!(b.sim.run_to_completion(Duration::from_secs(60)));
    assert_eq!(b.verdict(key), Verdict::Exited(0));
}
