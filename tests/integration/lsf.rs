//! The LSF backend (`kind = "lsf"`) through the CLI, against the LSF emulator of
//! `tests/cluster/lsf-emu` (formats from IBM's LSF 10.1 documentation and the Lava sources; it
//! is not LSF). Unprivileged: the emulator needs only python3. Each test has its own emulated
//! cluster, stopped at its end (which fails if a job process is left).
//!
//! With `FLOWRUN_TEST_LSF=real` the same tests run against the real LSF first on `PATH`
//! (`source profile.lsf`): the tests that need an emulator knob say SKIPPED and pass; the
//! others run unchanged. `FLOWRUN_TEST_LSF_QUEUE` picks the queue, `FLOWRUN_TEST_LSF_DIR` a
//! directory the execution hosts see (default: the system's temporary directory).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use flowrun_tests::{spawn_flow, wait_until, workspace_root, Background};

use crate::batch;

fn real_lsf() -> bool {
    std::env::var("FLOWRUN_TEST_LSF").as_deref() == Ok("real")
}

/// One LSF cluster for one test: an emulated one (its state in a directory of the test), or
/// the real one on PATH.
struct Lsf {
    dir: tempfile::TempDir,
    /// PATH for flowrun and for the test's own LSF commands.
    path: String,
}

impl Lsf {
    /// A cluster with `knobs`; `None` (after saying so) against a real LSF, which has no
    /// knobs. `speedups` are knobs that only shorten the test (a real LSF runs it unchanged,
    /// slower).
    fn new(test: &str, knobs: &[(&str, &str)], speedups: &[(&str, &str)]) -> Option<Lsf> {
        let base = std::env::var_os("FLOWRUN_TEST_LSF_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("flowrun-lsf-test-")
            .tempdir_in(base)
            .unwrap();
        let system_path = std::env::var("PATH").unwrap_or_default();
        if real_lsf() {
            if !knobs.is_empty() {
                eprintln!("SKIPPED (needs the LSF emulator): {test} sets {knobs:?}");
                return None;
            }
            return Some(Lsf {
                dir,
                path: system_path,
            });
        }
        let emulator = workspace_root().join("tests/cluster/lsf-emu/bin");
        let lsf = Lsf {
            dir,
            path: format!("{}:{system_path}", emulator.display()),
        };
        for (key, value) in knobs.iter().chain(speedups) {
            lsf.ctl(&["set", key, value]);
        }
        Some(lsf)
    }

    fn work(&self) -> &Path {
        self.dir.path()
    }

    fn state(&self) -> PathBuf {
        self.work().join("emulator-state")
    }

    /// The environment flowrun runs with.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("PATH".to_string(), self.path.clone())];
        if !real_lsf() {
            env.push(("LSF_EMU_DIR".into(), self.state().display().to_string()));
        }
        env
    }

    /// Runs an LSF command (or `lsf-emu-ctl`) of this cluster.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .envs(self.env())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    fn ctl(&self, args: &[&str]) {
        let out = self.run("lsf-emu-ctl", args);
        assert!(out.status.success(), "lsf-emu-ctl {args:?}: {out:?}");
    }

    /// A backend table for this cluster, with `extra` keys.
    fn backend(&self, name: &str, extra: &str) -> String {
        let queue = match std::env::var("FLOWRUN_TEST_LSF_QUEUE") {
            Ok(q) if !extra.contains("queue =") => format!("queue = {q:?}\n"),
            _ => String::new(),
        };
        format!("[backends.{name}]\nkind = \"lsf\"\npoll_interval = \"1s\"\n{queue}{extra}\n")
    }

    /// A flow of `jobs` on one backend `lsf` with `extra` keys.
    fn flow(&self, name: &str, extra: &str, jobs: &str) -> String {
        format!(
            "[flow]\nname = \"{name}\"\ndefault_backend = \"lsf\"\n{}{jobs}",
            self.backend("lsf", extra)
        )
    }

    fn spawn(&self, name: &str, flow: &str) -> Background {
        spawn_flow(self.work(), name, flow, &self.env())
    }

    /// Every LSF job (or element) of the run `tag`, any state bjobs still holds:
    /// (id, STAT, exit reason, output file).
    fn jobs(&self, tag: &str) -> Vec<[String; 4]> {
        let format = "jobid jobindex stat exit_reason output_file delimiter='|'";
        let out = self.run("bjobs", &["-a", "-noheader", "-o", format, "-J", tag]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                let id = match f.get(1)? {
                    &"0" => f[0].to_string(),
                    index => format!("{}[{index}]", f[0]),
                };
                Some([id, f[2].into(), f[3].into(), f.get(4)?.to_string()])
            })
            .collect()
    }

    /// The LSF job of flowrun job `name` (its report goes to its job directory).
    fn job(&self, tag: &str, name: &str) -> Option<[String; 4]> {
        let report = format!("/jobs/{name}/lsf-report.txt");
        self.jobs(tag).into_iter().find(|j| j[3].ends_with(&report))
    }

    /// The run's jobs LSF has not finished.
    fn unfinished(&self, tag: &str) -> Vec<[String; 4]> {
        let finished = ["DONE", "EXIT"];
        let jobs = self.jobs(tag);
        jobs.into_iter()
            .filter(|j| !finished.contains(&j[1].as_str()))
            .collect()
    }

    /// Ends the emulated cluster: fails if a process of any job is still running.
    fn stop(self) {
        if !real_lsf() {
            self.ctl(&["stop"]);
        }
    }
}

#[test]
fn a_50_job_dag_passes_in_dependency_order() {
    let Some(lsf) = Lsf::new("the DAG", &[], &[]) else {
        return;
    };
    let (jobs, needs) = batch::dag_50();
    let run = lsf
        .spawn("dag50", &lsf.flow("dag50", "", &jobs))
        .finish(Duration::from_secs(600));
    batch::assert_dag_50(&run, &needs);
    lsf.stop();
}

#[test]
fn failures_carry_their_lsf_reasons() {
    // A `-W` minute of 2 s, and bkill's signals 1 s apart: the emulator's knobs for time.
    let speedups = [
        ("RUNLIMIT_SECONDS_PER_MINUTE", "2"),
        ("JOB_TERMINATE_INTERVAL", "1"),
    ];
    let Some(lsf) = Lsf::new("failure reasons", &[], &speedups) else {
        return;
    };
    let hog = "python3 -c 'import time; x = bytearray(300 << 20); time.sleep(60)'";
    let jobs = format!(
        "[[job]]\nname = \"exit3\"\ncmd = \"exit 3\"\n\
         [[job]]\nname = \"runlimit\"\ncmd = \"sleep 600\"\ntimeout = \"1m\"\n\
         [[job]]\nname = \"memlimit\"\ncmd = \"{hog}\"\nresources = {{ memory = \"64M\" }}\n\
         [[job]]\nname = \"outside\"\ncmd = \"sleep 600\"\n\
         [[job]]\nname = \"noqueue\"\ncmd = \"true\"\nbackend = \"nosuch\"\n"
    );
    let flow = format!(
        "{}{}",
        lsf.flow("reasons", "", ""),
        lsf.backend("nosuch", "queue = \"nosuch\"")
    ) + &jobs;
    let bg = lsf.spawn("reasons", &flow);
    let tag = bg.tag();
    wait_until(Duration::from_secs(120), "job `outside` to run", || {
        lsf.job(&tag, "outside").is_some_and(|j| j[1] == "RUN")
    });
    let outside = lsf.job(&tag, "outside").unwrap();
    let out = lsf.run("bkill", &[&outside[0]]);
    assert!(out.status.success(), "{out:?}");
    let run = bg.finish(Duration::from_secs(300));
    assert_eq!(run.code, 1, "{run:#?}");
    let reason = |name| (run.status(name), run.reason(name));
    assert_eq!(reason("exit3"), ("failed", "exit code 3"));
    assert_eq!(run.job("exit3")["exit_code"], 3);
    assert_eq!(reason("runlimit"), ("failed", "LSF run limit"));
    assert_eq!(reason("memlimit"), ("failed", "LSF memory limit"));
    assert_eq!(reason("outside"), ("failed", "killed outside flowrun"));
    assert_eq!(
        reason("noqueue"),
        (
            "failed",
            "bsub failed: nosuch: No such queue. Job not submitted."
        )
    );
    assert!(lsf.unfinished(&tag).is_empty(), "{:?}", lsf.jobs(&tag));
    lsf.stop();
}

/// Six sleepers, and a job waiting in flowrun for one of them. On the emulated cluster (4
/// slots) four run and two wait for a slot in LSF when this returns.
fn sleepers(lsf: &Lsf, name: &str) -> (Background, String) {
    let jobs = batch::sleepers(6);
    let bg = lsf.spawn(name, &lsf.flow(name, "", &jobs));
    let tag = bg.tag();
    wait_until(
        Duration::from_secs(300),
        "the sleepers to be queued or run",
        || {
            let jobs = lsf.jobs(&tag);
            let count = |stat: &str| jobs.iter().filter(|j| j[1] == stat).count();
            match real_lsf() {
                true => jobs.len() == 6 && count("RUN") >= 1,
                false => count("RUN") == 4 && count("PEND") == 2,
            }
        },
    );
    (bg, tag)
}

#[test]
fn ctrl_c_leaves_nothing_of_the_run_queued() {
    let Some(lsf) = Lsf::new("Ctrl-C", &[], &[("SLOTS", "4")]) else {
        return;
    };
    let (bg, tag) = sleepers(&lsf, "ctrlc");
    bg.signal("INT");
    let run = bg.finish(Duration::from_secs(120));
    assert_eq!(run.code, 130, "{run:#?}");
    assert_eq!(run.results["interrupted"], true);
    for i in 0..6 {
        assert_eq!(run.status(&format!("sleep{i}")), "killed", "{run:#?}");
    }
    assert_eq!(run.status("after"), "skipped");
    assert!(
        lsf.unfinished(&tag).is_empty(),
        "left behind: {:?}",
        lsf.jobs(&tag)
    );
    let jobs = lsf.jobs(&tag);
    assert_eq!(jobs.len(), 6, "{jobs:?}");
    assert!(
        jobs.iter().all(|j| j[2].starts_with("TERM_OWNER")),
        "{jobs:?}"
    );
    lsf.stop();
}

#[test]
fn a_flowrun_kill_ends_the_jobs_killed_by_lsf() {
    let Some(lsf) = Lsf::new("a flowrun kill", &[], &[("SLOTS", "4")]) else {
        return;
    };
    let (bg, tag) = sleepers(&lsf, "killed");
    bg.signal("TERM");
    let run = bg.finish(Duration::from_secs(120));
    assert_eq!(run.code, 143, "{run:#?}");
    for i in 0..6 {
        let name = format!("sleep{i}");
        assert_eq!(run.status(&name), "killed", "{run:#?}");
        assert!(
            run.reason(&name).starts_with("killed by SIGTERM"),
            "{run:#?}"
        );
        // The kill reached LSF: bkill ended the job (running or pending), as its owner.
        let job = lsf.job(&tag, &name).expect("the LSF job");
        assert_eq!(
            (job[1].as_str(), job[2].as_str()),
            ("EXIT", "TERM_OWNER: job killed by owner")
        );
    }
    lsf.stop();
}

#[test]
fn a_20_second_mbatchd_outage_is_survived() {
    let Some(lsf) = Lsf::new("an mbatchd outage", &[("LSB_API_CONNTIMEOUT", "2")], &[]) else {
        return;
    };
    let jobs = batch::outage_flow();
    let bg = lsf.spawn("outage", &lsf.flow("outage", "", &jobs));
    let tag = bg.tag();
    wait_until(Duration::from_secs(300), "the 6 roots to run", || {
        lsf.jobs(&tag).iter().filter(|j| j[1] == "RUN").count() == 6
    });
    lsf.ctl(&["outage", "20"]);
    let began = Instant::now();
    let run = bg.finish(Duration::from_secs(300));
    assert!(
        began.elapsed() >= Duration::from_secs(20),
        "the run ended during the outage"
    );
    batch::assert_outage(&run);
    lsf.stop();
}

#[test]
fn status_queries_are_batched_for_a_300_job_flow() {
    let Some(lsf) = Lsf::new("300 jobs", &[], &[("SLOTS", "32")]) else {
        return;
    };
    let shims = batch::count_calls(lsf.work(), &lsf.path, &["bsub", "bjobs", "bkill"]);
    let jobs = batch::many(300);
    let flow = lsf.flow("many", "submit_rate = \"100/s\"", &jobs);
    let mut env = lsf.env();
    env[0].1 = format!("{}:{}", shims.display(), lsf.path);
    let began = Instant::now();
    let run = spawn_flow(lsf.work(), "many", &flow, &env).finish(Duration::from_secs(900));
    let took = began.elapsed().as_secs_f64();
    batch::assert_many(&run, 300);
    assert_eq!(
        batch::calls(&shims, "bsub", 1.0).0,
        300,
        "one bsub per job without arrays"
    );
    // One bjobs per poll interval (1 s) for the whole run.
    assert!(batch::calls(&shims, "bjobs", 1.0).0 >= 1);
    batch::assert_once_per_interval(&shims, "bjobs", took);
    assert_eq!(batch::calls(&shims, "bkill", 1.0).0, 0, "nothing to kill");
    lsf.stop();
}

#[test]
fn arrays_keep_to_their_slot_limit() {
    let Some(lsf) = Lsf::new("arrays", &[], &[]) else {
        return;
    };
    let shims = batch::count_calls(lsf.work(), &lsf.path, &["bsub", "bjobs", "bkill"]);
    let trace = lsf.work().join("trace");
    let jobs = batch::traced_members(&trace, "LSB_JOBID");
    let flow = lsf.flow("arrays", "arrays = true\narray_slot_limit = 2", &jobs);
    let mut env = lsf.env();
    env[0].1 = format!("{}:{}", shims.display(), lsf.path);
    let run = spawn_flow(lsf.work(), "arrays", &flow, &env).finish(Duration::from_secs(300));
    let bsub = batch::call_args(&shims, "bsub");
    assert!(bsub.len() <= 3, "{bsub:?}");
    assert!(
        bsub.iter().any(|a| a.contains("]%2 ")),
        "an array with its slot limit: {bsub:?}"
    );
    batch::assert_members(&run, &trace, bsub.len());
    lsf.stop();
}

#[test]
fn patterns_read_the_jobs_own_output_not_lsfs_report() {
    let Some(lsf) = Lsf::new("patterns", &[], &[]) else {
        return;
    };
    let run = lsf
        .spawn(
            "patterns",
            &lsf.flow("patterns", "", batch::patterns_flow()),
        )
        .finish(Duration::from_secs(300));
    batch::assert_patterns(&run);
    // LSF's report is beside the log, and says the job passed.
    let report = run.out.join("jobs/reported/lsf-report.txt");
    let report = std::fs::read_to_string(report).unwrap();
    assert!(report.contains("Successfully completed."), "{report}");
    lsf.stop();
}

#[test]
fn jobs_bjobs_forgot_are_resolved_from_their_reports_or_lost_with_a_reason() {
    // CLEAN_PERIOD 0: bjobs forgets every job the moment it ends.
    let Some(lsf) = Lsf::new("CLEAN_PERIOD", &[("CLEAN_PERIOD", "0")], &[]) else {
        return;
    };
    // The last job leaves LSF no place for its report.
    let blocked = "rm -f $FLOWRUN_JOB_DIR/lsf-report.txt; mkdir $FLOWRUN_JOB_DIR/lsf-report.txt";
    let jobs = format!(
        "[[job]]\nname = \"passes\"\ncmd = \"echo ok\"\n\
         [[job]]\nname = \"exit3\"\ncmd = \"sleep 1; exit 3\"\n\
         [[job]]\nname = \"noreport\"\ncmd = \"{blocked}\"\n"
    );
    let run = lsf
        .spawn("forgot", &lsf.flow("forgot", "lost_after = \"5s\"", &jobs))
        .finish(Duration::from_secs(300));
    assert_eq!(run.status("passes"), "passed", "{run:#?}");
    assert_eq!(
        (run.status("exit3"), run.reason("exit3")),
        ("failed", "exit code 3")
    );
    assert_eq!(run.status("noreport"), "failed", "{run:#?}");
    let reason = run.reason("noreport");
    assert!(
        reason.contains("no longer known to bjobs") && reason.contains("lsf-report.txt"),
        "{reason}"
    );
    lsf.stop();
}

#[test]
fn esub_lines_and_8_digit_ids_are_read() {
    for stream in ["stdout", "stderr"] {
        let knobs = [
            (
                "BANNER",
                "Memory reservation is (MB): 1024\\nMemory Limit is (MB): 1024\\n",
            ),
            ("BANNER_STREAM", stream),
            ("FIRST_JOB_ID", "12345678"),
        ];
        let Some(lsf) = Lsf::new("esub lines and 8-digit ids", &knobs, &[]) else {
            return;
        };
        let bg = lsf.spawn("esub", &lsf.flow("esub", "", batch::patterns_flow()));
        let tag = bg.tag();
        let run = bg.finish(Duration::from_secs(300));
        batch::assert_patterns(&run);
        let jobs = lsf.jobs(&tag);
        assert_eq!(jobs.len(), 3, "{jobs:?}");
        assert!(jobs.iter().all(|j| j[0].len() == 8), "{jobs:?}");
        lsf.stop();
    }
}

/// Issue 15 on LSF: flowrun is SIGKILLed with jobs running and pending; `--resume` re-attaches
/// them all by the ids in the journal (no bsub for any), resolves those that ended while no
/// host watched (bjobs forgets a job the moment it ends here: from the job's LSF report), tracks
/// the rest to their end, and submits only the job that had not gone out.
#[test]
fn a_sigkilled_run_resumes_by_re_attaching_its_lsf_jobs() {
    let Some(lsf) = Lsf::new("re-attach", &[("CLEAN_PERIOD", "0")], &[("SLOTS", "4")]) else {
        return;
    };
    let shims = batch::count_calls(lsf.work(), &lsf.path, &["bsub", "bjobs", "bkill"]);
    let mut env = lsf.env();
    env[0].1 = format!("{}:{}", shims.display(), lsf.path);
    let marks = lsf.work().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let m = marks.display();
    // Four slots: the held and running jobs take them, the two quick ones pend.
    let mut jobs = String::new();
    for (name, release, code) in [
        ("held0", "release-held", 3),
        ("held1", "release-held", 0),
        ("running0", "release-running", 0),
        ("running1", "release-running", 4),
    ] {
        jobs.push_str(&format!(
            "[[job]]\nname = \"{name}\"\ncmd = \"echo ran >> {m}/{name}; until test -e {m}/{release}; do sleep 0.2; done; exit {code}\"\n"
        ));
    }
    for name in ["pending0", "pending1"] {
        jobs.push_str(&format!(
            "[[job]]\nname = \"{name}\"\ncmd = \"echo ran >> {m}/{name}\"\n"
        ));
    }
    jobs.push_str(&format!(
        "[[job]]\nname = \"after\"\ncmd = \"echo ran >> {m}/after\"\nneeds = [\"running0\"]\n"
    ));
    // One submit thread: the jobs reach LSF in the flow's order, so the quick two are the ones
    // that find the slots taken (with four threads a quick one could be first and run).
    let flow = lsf.flow("reattach", "submit_threads = 1", &jobs);
    let bg = spawn_flow(lsf.work(), "reattach", &flow, &env);
    let (tag, out) = (bg.tag(), lsf.work().join("out"));
    let on_lsf = [
        "held0", "held1", "running0", "running1", "pending0", "pending1",
    ];
    let mut ids = std::collections::BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let jobs = lsf.jobs(&tag);
        let count = |stat: &str| jobs.iter().filter(|j| j[1] == stat).count();
        if out.join("journal").exists() && count("RUN") == 4 && count("PEND") == 2 {
            let st = flowrun_tests::status_json(lsf.work(), &out);
            ids = st["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|j| {
                    Some((
                        j["name"].as_str()?.to_string(),
                        j["native_id"].as_str()?.to_string(),
                    ))
                })
                .collect();
            if on_lsf.iter().all(|n| ids.contains_key(*n)) {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "4 jobs never ran with 2 pending within 120 s: bjobs {jobs:?}, journaled ids {ids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    bg.signal("KILL");
    let crashed = bg.finish(Duration::from_secs(30));
    assert_eq!(crashed.code, -1, "{crashed:#?}");
    assert_eq!(batch::calls(&shims, "bsub", 1.0).0, 6);
    // The held jobs end while no host watches; the pending ones then run and end too, and
    // bjobs forgets them all.
    std::fs::write(marks.join("release-held"), "").unwrap();
    wait_until(
        Duration::from_secs(60),
        "the held and pending jobs to end",
        || {
            ["held0", "held1", "pending0", "pending1"].iter().all(|n| {
                std::fs::read_to_string(lsf.work().join(format!("out/jobs/{n}/lsf-report.txt")))
                    .is_ok_and(|t| t.contains("Resource usage summary"))
            })
        },
    );

    let resume = flowrun_tests::flowrun(lsf.work())
        .args(["run", "flow.toml", "-q", "--resume", "out"])
        .current_dir(lsf.work())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::fs::File::create(lsf.work().join("stdout")).unwrap())
        .stderr(std::fs::File::create(lsf.work().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let resumed = Background::new(resume, lsf.work(), "reattach");
    wait_until(
        Duration::from_secs(60),
        "the ended jobs to be resolved",
        || {
            let st = flowrun_tests::status_json(lsf.work(), &out);
            st["host_alive"] == true
                && st["counts"]["running"] == 2
                && st["counts"]["passed"].as_u64() >= Some(3)
        },
    );
    std::fs::write(marks.join("release-running"), "").unwrap();
    let run = resumed.finish(Duration::from_secs(120));
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        batch::calls(&shims, "bsub", 1.0).0,
        7,
        "one bsub after the resume: `after`"
    );
    for name in on_lsf.iter().chain(&["after"]) {
        let ran = std::fs::read_to_string(marks.join(name)).unwrap_or_default();
        assert_eq!(ran.lines().count(), 1, "{name} ran once");
    }
    assert_eq!(
        (run.status("held0"), run.reason("held0")),
        ("failed", "exit code 3")
    );
    assert_eq!(
        (run.status("running1"), run.reason("running1")),
        ("failed", "exit code 4")
    );
    for name in ["held1", "running0", "pending0", "pending1", "after"] {
        assert_eq!(run.status(name), "passed", "{run:#?}");
    }
    assert_eq!(run.results["resumes"], 1);
    for name in on_lsf {
        assert_eq!(run.job(name)["native_id"], ids[name].as_str(), "{name}");
        assert_eq!(run.job(name)["attempt"], 1, "{name}");
    }
    lsf.stop();
}

/// A job whose command changed between the crash and `--resume` is not re-attached, but its
/// old LSF job may still run, writing the log of the attempt it was on. The new run of the
/// job is a new attempt with a log of its own (the old attempt recorded lost): the old job's
/// lines never become the new attempt's evidence. (It was attempt 1 again, on the same
/// `output.log`: the old job's `FATAL` failed the new command, which printed none.)
#[test]
fn a_job_changed_before_the_resume_runs_as_a_new_attempt_never_in_the_old_jobs_log() {
    let Some(lsf) = Lsf::new("changed-on-resume", &[], &[]) else {
        return;
    };
    let marks = lsf.work().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let m = marks.display();
    let job = |cmd: &str| {
        format!("[[job]]\nname = \"sim\"\nfail_patterns = [\"FATAL\"]\ncmd = \"{cmd}\"\n")
    };
    // The old command waits for the new one to start, then prints FATAL and ends.
    let old = format!(
        "echo ran >> {m}/old; until test -e {m}/go; do sleep 0.2; done; echo FATAL; touch {m}/old-done"
    );
    let flow = lsf.flow("changed", "", &job(&old));
    let env = lsf.env();
    let bg = spawn_flow(lsf.work(), "changed", &flow, &env);
    let out = lsf.work().join("out");
    wait_until(
        Duration::from_secs(120),
        "the old job to run on LSF with its id journaled",
        || {
            marks.join("old").exists()
                && out.join("journal").exists()
                && flowrun_tests::status_json(lsf.work(), &out)["jobs"]
                    .as_array()
                    .is_some_and(|j| j.iter().any(|j| j["native_id"].is_string()))
        },
    );
    bg.signal("KILL");
    let crashed = bg.finish(Duration::from_secs(30));
    assert_eq!(crashed.code, -1, "{crashed:#?}");
    // The edit: a new command that prints no FATAL, and waits until the old job printed its.
    let new = format!(
        "echo fine; touch {m}/go; until test -e {m}/old-done; do sleep 0.2; done; sleep 0.5"
    );
    std::fs::write(
        lsf.work().join("flow.toml"),
        lsf.flow("changed", "", &job(&new)),
    )
    .unwrap();
    let o = flowrun_tests::flowrun(lsf.work())
        .args(["run", "flow.toml", "-q", "--resume", "out"])
        .current_dir(lsf.work())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let run = flowrun_tests::collect(o, &out);
    assert_eq!(run.code, 0, "{run:#?}");
    let sim = run.job("sim");
    assert_eq!(sim["status"], "passed", "{run:#?}");
    assert_eq!(sim["attempt"], 2, "{sim:#}");
    let log = out.join("jobs/sim/output.attempt-2.log");
    assert_eq!(sim["log"], log.to_str().unwrap(), "{sim:#}");
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), "fine");
    // The old job's attempt: recorded lost, naming its id; its log is its own.
    let first = &sim["attempts"][0];
    assert_eq!(first["reason_kind"], "lost", "{sim:#}");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .contains("changed since, so it is not re-attached"),
        "{sim:#}"
    );
    let old_log = std::fs::read_to_string(out.join("jobs/sim/output.log")).unwrap();
    assert!(old_log.contains("FATAL"), "{old_log}");
    lsf.stop();
}
