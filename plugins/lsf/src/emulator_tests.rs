//! The LSF backend's engine and dialect against the LSF emulator of `tests/cluster/lsf-emu`
//! (real processes, LSF's texts; it needs only python3, no privileges), for what the end-to-end
//! tests cannot see through the CLI: the backend's own verdict of a job flowrun killed, and the
//! usage figures of the job report. Each test has its own emulated cluster.

use std::{
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use flowrun_plugin_api::engine::{
    testing, CommandLine, CommandOutput, CommandRunner, Engine, EngineEvent, EventSink, Job,
    JobKey, ProcessRunner, Update, Verdict,
};
use parking_lot::Mutex;

use crate::{config, dialect::Lsf};

fn emulator_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cluster/lsf-emu/bin")
}

/// Runs the LSF commands of one emulated cluster: the emulator's directory first on PATH and
/// its state directory in LSF_EMU_DIR, for this cluster's commands only.
struct EmuRunner {
    state: PathBuf,
}

impl EmuRunner {
    fn line(&self, program: &str, args: &[&str]) -> CommandLine {
        let path = format!(
            "PATH={}:{}",
            emulator_bin().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut all = vec![
            format!("LSF_EMU_DIR={}", self.state.display()),
            path,
            program.to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        CommandLine {
            program: "env".into(),
            args: all,
            stdin: None,
        }
    }

    /// Runs an emulator command for the test itself.
    fn run(&self, program: &str, args: &[&str]) -> CommandOutput {
        ProcessRunner.run(&self.line(program, args), Duration::from_secs(60))
    }
}

impl CommandRunner for EmuRunner {
    fn run(&self, command: &CommandLine, limit: Duration) -> CommandOutput {
        let args: Vec<&str> = command.args.iter().map(String::as_str).collect();
        let mut out = ProcessRunner.run(&self.line(&command.program, &args), limit);
        out.program = command.program.clone();
        out
    }
}

struct Events(Mutex<mpsc::Sender<EngineEvent>>);

impl EventSink for Events {
    fn emit(&self, event: EngineEvent) {
        let _ = self.0.lock().send(event);
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    runner: Arc<EmuRunner>,
    engine: Engine<Lsf>,
    events: mpsc::Receiver<EngineEvent>,
}

impl Cluster {
    /// An emulated cluster with `knobs`, and an engine on it configured by `keys`.
    fn new(knobs: &[(&str, &str)], keys: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let runner = Arc::new(EmuRunner {
            state: dir.path().join("state"),
        });
        for (key, value) in knobs {
            let out = runner.run("lsf-emu-ctl", &["set", key, value]);
            assert!(out.ok(), "lsf-emu-ctl set {key}: {out:?}");
        }
        let (engine_config, lsf_keys) = config::parse(keys).unwrap();
        let (tx, events) = mpsc::channel();
        let engine = Engine::start(
            "lsf-test",
            Lsf::new(lsf_keys),
            engine_config,
            runner.clone(),
            Arc::new(Events(Mutex::new(tx))),
        )
        .unwrap();
        Cluster {
            dir,
            runner,
            engine,
            events,
        }
    }

    fn job(&self, key: u64, name: &str, command: &str) -> Job {
        let run_dir = self.dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        testing::job(JobKey(key), name, command, &run_dir, "flowrun-lsf-emu")
    }

    /// Every event until each of `keys` has ended (at most `limit`).
    fn wait_ends(&self, keys: &[u64], limit: Duration) -> Vec<EngineEvent> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        let ended = |seen: &[EngineEvent], k: u64| {
            seen.iter()
                .any(|e| e.job == JobKey(k) && !matches!(e.update, Update::Started { .. }))
        };
        while !keys.iter().all(|k| ended(&seen, *k)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => seen.push(e),
                Err(_) => panic!("jobs {keys:?} did not all end within {limit:?}: {seen:?}"),
            }
        }
        seen
    }

    /// Shuts the engine down, stops the cluster, and checks no job process is left.
    fn stop(self) {
        self.engine.shutdown();
        let out = self.runner.run("lsf-emu-ctl", &["stop"]);
        assert!(out.ok(), "lsf-emu-ctl stop: {out:?}");
    }
}

fn end_of(events: &[EngineEvent], key: u64) -> Update {
    events
        .iter()
        .find(|e| e.job == JobKey(key) && !matches!(e.update, Update::Started { .. }))
        .map(|e| e.update.clone())
        .unwrap()
}

#[test]
fn verdicts_and_usage_come_from_the_job_report_when_bjobs_has_forgotten_the_job() {
    // CLEAN_PERIOD 0: bjobs forgets every job as it ends; only the reports are left.
    let c = Cluster::new(
        &[("CLEAN_PERIOD", "0"), ("FIRST_JOB_ID", "12345678")],
        "poll_interval = \"1s\"",
    );
    // A fixed amount of work (not of time: the machine may be busy), holding 60 MB.
    let burn = "python3 -c 'x = bytearray(60 << 20)\nsum(i * i for i in range(4_000_000))\n\
                import time; time.sleep(1.5)'; exit 3";
    let jobs = vec![c.job(1, "burn", burn), c.job(2, "plain", "echo hi")];
    assert!(c.engine.submit(jobs).iter().all(Result::is_ok));
    let events = c.wait_ends(&[1, 2], Duration::from_secs(120));
    let Update::Finished {
        verdict,
        native_id,
        usage,
    } = end_of(&events, 1)
    else {
        panic!("{events:?}")
    };
    assert_eq!(verdict, Verdict::Exited(3));
    assert_eq!(native_id.unwrap().len(), 8, "8-digit ids");
    let usage = usage.expect("the report's resource usage");
    assert_eq!(usage.source, "lsf-report");
    assert!(usage.cpu_s.unwrap() >= 0.1, "{usage:?}");
    assert!(usage.max_rss_mb.unwrap() >= 50.0, "{usage:?}");
    assert!(
        matches!(
            end_of(&events, 2),
            Update::Finished {
                verdict: Verdict::Exited(0),
                ..
            }
        ),
        "{events:?}"
    );
    // The job's log holds its own output alone; the report is beside it.
    let dir = c.dir.path().join("run/jobs/plain");
    assert_eq!(
        std::fs::read_to_string(dir.join("output.log")).unwrap(),
        "hi\n"
    );
    let report = std::fs::read_to_string(dir.join("lsf-report.txt")).unwrap();
    assert!(report.contains("Successfully completed."), "{report}");
    c.stop();
}

#[test]
fn jobs_flowrun_kills_end_killed_running_or_pending() {
    let c = Cluster::new(
        &[("SLOTS", "1"), ("JOB_TERMINATE_INTERVAL", "1")],
        "poll_interval = \"1s\"",
    );
    let jobs = vec![
        c.job(1, "running", "sleep 300"),
        c.job(2, "pending", "sleep 300"),
    ];
    assert!(c.engine.submit(jobs).iter().all(Result::is_ok));
    // One slot: one job runs (whichever bsub went first), the other pends.
    match c.events.recv_timeout(Duration::from_secs(60)) {
        Ok(EngineEvent {
            update: Update::Started { .. },
            ..
        }) => {}
        other => panic!("no job started: {other:?}"),
    }
    c.engine.kill(&[JobKey(1), JobKey(2)]);
    let events = c.wait_ends(&[1, 2], Duration::from_secs(60));
    for key in [1, 2] {
        let Update::Finished {
            verdict, native_id, ..
        } = end_of(&events, key)
        else {
            panic!("{events:?}")
        };
        assert_eq!(verdict, Verdict::Killed, "job {key}: {events:?}");
        let out = c.runner.run(
            "bjobs",
            &[
                "-noheader",
                "-o",
                "stat exit_reason delimiter='|'",
                &native_id.unwrap(),
            ],
        );
        assert_eq!(
            out.stdout, "EXIT|TERM_OWNER: job killed by owner\n",
            "{out:?}"
        );
    }
    c.stop();
}
