//! The Slurm backend's policy without a cluster: the real Slurm dialect on the engine's
//! simulation (manual clock), against a scripted Slurm that prints what Slurm 22.05 prints.
//! The test moves the jobs' states itself.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use flowrun_plugin_sdk::engine::{
    testing::{self, Simulation},
    CommandLine, CommandOutput, CommandRunner, Dialect, Job, JobKey, ManualClock, Update, Usage,
    Verdict,
};
use parking_lot::Mutex;

use crate::{config, dialect::Slurm};

#[derive(Default)]
struct SlurmState {
    next_id: u64,
    /// id -> (state, reason, exit code `N:M`).
    jobs: BTreeMap<String, (String, String, String)>,
    calls: Vec<(String, Vec<String>)>,
    accounting: bool,
    /// Ids sacct does not show yet (slurmdbd lags).
    sacct_lags: Vec<String>,
    /// Failures the next sbatch calls print: (exit code, stderr).
    sbatch_failures: VecDeque<(i32, String)>,
}

struct FakeSlurm(Mutex<SlurmState>);

impl FakeSlurm {
    fn new(accounting: bool) -> Arc<FakeSlurm> {
        Arc::new(FakeSlurm(Mutex::new(SlurmState {
            next_id: 41,
            accounting,
            ..Default::default()
        })))
    }

    fn set(&self, id: &str, state: &str, reason: &str, exit: &str) {
        self.0.lock().jobs.insert(
            id.to_string(),
            (state.to_string(), reason.to_string(), exit.to_string()),
        );
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

fn is_final(state: &str) -> bool {
    !matches!(state, "PENDING" | "RUNNING")
}

impl CommandRunner for FakeSlurm {
    fn run(&self, command: &CommandLine, _limit: Duration) -> CommandOutput {
        let mut st = self.0.lock();
        let (program, args) = (command.program.as_str(), &command.args);
        st.calls.push((program.to_string(), args.clone()));
        let ok = |stdout: &str| CommandOutput::exited(program, 0, stdout, "");
        match program {
            "sbatch" => {
                if let Some((code, err)) = st.sbatch_failures.pop_front() {
                    return CommandOutput::exited(program, code, "", &err);
                }
                st.next_id += 1;
                let id = st.next_id.to_string();
                let members = args.iter().find_map(|a| {
                    let range = a.strip_prefix("--array=0-")?;
                    range.split('%').next()?.parse::<usize>().ok()
                });
                match members {
                    None => st
                        .jobs
                        .insert(id.clone(), ("PENDING".into(), "None".into(), "0:0".into())),
                    Some(last) => {
                        for i in 0..=last {
                            st.jobs.insert(
                                format!("{id}_{i}"),
                                ("PENDING".into(), "None".into(), "0:0".into()),
                            );
                        }
                        None
                    }
                };
                ok(&format!("{id}\n"))
            }
            "squeue" => {
                let text: String = st
                    .jobs
                    .iter()
                    .map(|(id, (state, reason, _))| format!("{id}|{state}|{reason}\n"))
                    .collect();
                ok(&text)
            }
            "sacct" if !st.accounting => CommandOutput::exited(
                program,
                1,
                "",
                "sacct: error: Slurm accounting storage is disabled",
            ),
            "sacct" => {
                let mut text = String::new();
                for (id, (state, _, exit)) in &st.jobs {
                    if st.sacct_lags.contains(id) {
                        continue;
                    }
                    let shown = if state == "CANCELLED" {
                        "CANCELLED by 0"
                    } else {
                        state
                    };
                    text.push_str(&format!("{id}|{shown}|{exit}|00:01.500|\n"));
                    if is_final(state) {
                        text.push_str(&format!("{id}.batch|{state}|{exit}|00:01.500|204800K\n"));
                    }
                }
                ok(&text)
            }
            "scontrol" => {
                let text: String = st
                    .jobs
                    .iter()
                    .map(|(id, (state, reason, exit))| {
                        format!(
                            "JobId={id} JobName=flowrun-slurm-test JobState={state} Reason={reason} ExitCode={exit} WorkDir=/a b\n"
                        )
                    })
                    .collect();
                ok(&text)
            }
            "scancel" => {
                let by_name = args.iter().any(|a| a.starts_with("--name="));
                for (id, job) in st.jobs.iter_mut() {
                    if (by_name || args.contains(id)) && !is_final(&job.0) {
                        job.0 = "CANCELLED".into();
                    }
                }
                ok("")
            }
            other => panic!("no {other} in the fake Slurm"),
        }
    }
}

struct Bench {
    sim: Simulation<Slurm>,
    slurm: Arc<FakeSlurm>,
    dir: tempfile::TempDir,
    next: u64,
}

impl Bench {
    fn new(keys: &str, accounting: bool) -> Bench {
        let (engine, slurm_keys) = config::parse(keys).unwrap();
        let slurm = FakeSlurm::new(accounting);
        let sim = Simulation::new(
            Slurm::new(slurm_keys),
            engine,
            slurm.clone(),
            Arc::new(ManualClock::new()),
        );
        Bench {
            sim,
            slurm,
            dir: tempfile::tempdir().unwrap(),
            next: 1,
        }
    }

    fn job(&mut self, name: &str) -> Job {
        let key = JobKey(self.next);
        self.next += 1;
        testing::job(key, name, "true", self.dir.path(), "flowrun-slurm-test")
    }

    fn submit(&mut self, jobs: Vec<Job>) -> Vec<JobKey> {
        let keys: Vec<JobKey> = jobs.iter().map(|j| j.key).collect();
        assert!(self.sim.submit(jobs).iter().all(|a| a.is_ok()));
        keys
    }

    fn end(&self, key: JobKey) -> Option<Update> {
        self.sim
            .events()
            .into_iter()
            .map(|(_, e)| e)
            .find(|e| e.job == key && !matches!(e.update, Update::Started { .. }))
            .map(|e| e.update)
    }

    fn verdict(&self, key: JobKey) -> Verdict {
        match self.end(key) {
            Some(Update::Finished { verdict, .. }) => verdict,
            other => panic!("job {key:?} did not finish: {other:?}"),
        }
    }

    fn run(&mut self, secs: u64) {
        self.sim.run_for(Duration::from_secs(secs));
    }
}

#[test]
fn sbatch_gets_the_jobs_options_and_arrays_their_members() {
    let mut b = Bench::new(
        "partition = \"regress\"\narrays = true\narray_slot_limit = 2",
        true,
    );
    let mut single = b.job("single");
    single.timeout = Some(Duration::from_secs(61));
    single.cpus = 4;
    single.memory_mb = Some(512);
    let single_key = b.submit(vec![single])[0];
    b.run(1);
    let args = b.slurm.calls("sbatch").remove(0);
    let dir = b.dir.path().display().to_string();
    assert_eq!(
        args,
        [
            "--parsable",
            "--job-name=flowrun-slurm-test",
            "--no-requeue",
            "--time=2",
            "--cpus-per-task=4",
            "--mem=512M",
            "--partition=regress",
            &format!("--output={dir}/jobs/single/output.log"),
            &format!("--chdir={dir}"),
            &format!("{dir}/jobs/single/slurm-job.sh"),
        ]
        .map(String::from)
        .to_vec()
    );
    let members: Vec<Job> = (0..4).map(|i| b.job(&format!("m{i}"))).collect();
    let keys = b.submit(members);
    b.run(1);
    let args = b.slurm.calls("sbatch").remove(1);
    assert!(args.contains(&"--array=0-3%2".to_string()), "{args:?}");
    assert!(args.contains(&format!("--output={dir}/slurm-arrays/%A_%a.out")));
    for i in 0..keys.len() {
        b.slurm.set(&format!("43_{i}"), "COMPLETED", "None", "0:0");
    }
    b.slurm.set("42", "COMPLETED", "None", "0:0");
    b.run(3);
    assert_eq!(b.verdict(single_key), Verdict::Exited(0));
    for key in keys {
        match b.end(key) {
            Some(Update::Finished { native_id, .. }) => {
                assert!(native_id.unwrap().starts_with("43_"))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn usage_from_sacct_lands_on_the_finished_event() {
    let mut b = Bench::new("", true);
    let key = {
        let jobs = vec![b.job("measured")];
        b.submit(jobs)
    }[0];
    b.run(1);
    b.slurm.set("42", "RUNNING", "None", "0:0");
    b.run(1);
    b.slurm.set("42", "COMPLETED", "None", "0:0");
    b.run(1);
    assert_eq!(
        b.end(key),
        Some(Update::Finished {
            verdict: Verdict::Exited(0),
            native_id: Some("42".into()),
            usage: Some(Usage {
                cpu_s: Some(1.5),
                max_rss_mb: Some(200.0),
                source: "sacct"
            }),
        })
    );
    // Only the job that needs its record is asked about.
    assert_eq!(
        b.slurm.calls("sacct"),
        [[
            "-n",
            "-P",
            "-o",
            "JobID,State,ExitCode,TotalCPU,MaxRSS",
            "-j",
            "42"
        ]]
    );
    assert!(b.sim.stats().contains("accounting = \"works\""));
}

#[test]
fn a_failed_job_waits_for_its_exit_code_in_sacct() {
    let mut b = Bench::new("", true);
    let key = {
        let jobs = vec![b.job("fails")];
        b.submit(jobs)
    }[0];
    b.run(1);
    b.slurm.set("42", "FAILED", "NonZeroExitCode", "3:0");
    b.slurm.0.lock().sacct_lags.push("42".into());
    b.run(3);
    assert_eq!(b.end(key), None, "no verdict without the exit code");
    b.slurm.0.lock().sacct_lags.clear();
    b.run(1);
    assert_eq!(b.verdict(key), Verdict::Exited(3));
}

#[test]
fn without_accounting_sacct_is_asked_once_and_scontrol_gives_exit_codes() {
    let mut b = Bench::new("", false);
    let keys = {
        let jobs = vec![b.job("a"), b.job("b")];
        b.submit(jobs)
    };
    b.run(1);
    b.slurm.set("42", "FAILED", "NonZeroExitCode", "3:0");
    b.slurm.set("43", "COMPLETED", "None", "0:0");
    b.run(2);
    assert_eq!(b.verdict(keys[0]), Verdict::Exited(3));
    assert_eq!(b.verdict(keys[1]), Verdict::Exited(0));
    let later = {
        let jobs = vec![b.job("c")];
        b.submit(jobs)
    }[0];
    b.run(1);
    b.slurm.set("44", "FAILED", "NonZeroExitCode", "0:9");
    b.run(2);
    assert_eq!(b.verdict(later), Verdict::Signaled(9));
    assert_eq!(b.slurm.calls("sacct").len(), 1);
    assert_eq!(b.slurm.calls("scontrol").len(), 2);
    // One job id: scontrol is asked about that job alone.
    assert_eq!(b.slurm.calls("scontrol")[1], ["show", "job", "-o", "44"]);
    assert!(b.sim.stats().contains("accounting = \"disabled\""));
}

#[test]
fn a_job_slurm_will_never_start_is_cancelled_and_fails() {
    let mut b = Bench::new("lost_after = \"5s\"", true);
    let key = {
        let jobs = vec![b.job("huge")];
        b.submit(jobs)
    }[0];
    b.run(1);
    b.slurm.set("42", "PENDING", "PartitionConfig", "0:0");
    b.run(10);
    assert_eq!(b.slurm.calls("scancel"), [["42"]]);
    match b.verdict(key) {
        Verdict::Failed { reason, ran, .. } => {
            assert!(
                reason.contains("will never start") && reason.contains("PartitionConfig"),
                "{reason}"
            );
            assert!(!ran);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unreachable_controller_is_retried_and_a_bad_request_is_not() {
    let mut b = Bench::new("", true);
    b.slurm.0.lock().sbatch_failures.extend([
        (
            1,
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)".to_string(),
        ),
        (
            1,
            "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation".to_string(),
        ),
    ]);
    let key = {
        let jobs = vec![b.job("patient")];
        b.submit(jobs)
    }[0];
    b.run(5);
    assert_eq!(b.slurm.calls("sbatch").len(), 3);
    b.slurm.set("42", "COMPLETED", "None", "0:0");
    b.run(2);
    assert_eq!(b.verdict(key), Verdict::Exited(0));

    b.slurm.0.lock().sbatch_failures.push_back((
        1,
        "sbatch: error: invalid partition specified: nosuch\nsbatch: error: Batch job submission failed: Invalid partition name specified".into(),
    ));
    let key = {
        let jobs = vec![b.job("doomed")];
        b.submit(jobs)
    }[0];
    b.run(5);
    assert_eq!(
        b.verdict(key),
        Verdict::Failed {
            reason: "sbatch failed: sbatch: error: invalid partition specified: nosuch / sbatch: error: Batch job submission failed: Invalid partition name specified".into(),
            exit_code: None,
            ran: false
        }
    );
    assert_eq!(b.slurm.calls("sbatch").len(), 4);
}

#[test]
fn shutdown_cancels_by_id_then_by_name() {
    let mut b = Bench::new("", true);
    let keys = {
        let jobs = vec![b.job("x"), b.job("y")];
        b.submit(jobs)
    };
    b.run(1);
    b.slurm.set("42", "RUNNING", "None", "0:0");
    b.run(1);
    b.sim.shutdown();
    assert!(keys.iter().all(|k| b.verdict(*k) == Verdict::Killed));
    assert_eq!(
        b.slurm.calls("scancel"),
        [
            vec!["42".to_string(), "43".into()],
            vec!["--name=flowrun-slurm-test".into()]
        ]
    );
    assert!(Slurm::defaults().poll_interval == Duration::from_secs(1));
}
