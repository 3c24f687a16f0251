//! The contract check fails a backend whose kill ends only the process it started and leaves
//! the job's children running on.

use std::{
    collections::HashMap,
    fs::OpenOptions,
    process::{Child, Command as Process, Stdio},
    sync::Arc,
    time::Duration,
};

use flowrun_plugin_sdk::{
    Answer, BackendImpl, Capabilities, CapabilityFlags, Command, Event, JobId, Jobs, PluginError,
    Sink,
};
use flowrun_plugin_testkit::Contract;
use parking_lot::Mutex;

/// Runs each job as `/bin/sh -c` (or its argv) and kills it with `Child::kill`: the shell
/// alone, as a first backend often does.
struct KillsTheShellOnly {
    sink: Sink,
    children: Arc<Mutex<HashMap<u64, Child>>>,
    killed: Arc<Mutex<Vec<u64>>>,
}

impl BackendImpl for KillsTheShellOnly {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            flags: CapabilityFlags::default(),
            default_max_parallel: 0,
            max_batch: 0,
        }
    }

    fn submit(&self, jobs: Jobs<'_>) -> Vec<Answer> {
        jobs.iter()
            .map(|job| {
                let id = job.id();
                let mut cmd = match job.command() {
                    Command::Shell(s) => {
                        let mut c = Process::new("/bin/sh");
                        c.arg("-c").arg(s);
                        c
                    }
                    Command::Argv(args) => {
                        let mut c = Process::new(args.program().unwrap_or_default());
                        c.args(args.iter().skip(1));
                        c
                    }
                };
                let log = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(job.log_path())
                    .expect("the log");
                cmd.current_dir(job.cwd())
                    .envs(job.env())
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("the log"))
                    .stderr(log);
                let child = cmd.spawn().expect("spawn");
                self.children.lock().insert(id.0, child);
                self.sink.emit(Event::started(id));
                let (sink, children, killed) = (
                    self.sink.clone(),
                    self.children.clone(),
                    self.killed.clone(),
                );
                std::thread::spawn(move || loop {
                    let status = children.lock().get_mut(&id.0).map(|c| c.try_wait());
                    if let Some(Ok(Some(status))) = status {
                        children.lock().remove(&id.0);
                        sink.emit(if killed.lock().contains(&id.0) {
                            Event::killed(id)
                        } else {
                            Event::exited(id, status.code().unwrap_or(-1))
                        });
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                });
                Answer::accepted(id)
            })
            .collect()
    }

    fn kill(&self, ids: &[JobId]) {
        for id in ids {
            if let Some(c) = self.children.lock().get_mut(&id.0) {
                self.killed.lock().push(id.0);
                let _ = c.kill();
            }
        }
    }

    fn shutdown(&self) {
        let ids: Vec<JobId> = self.children.lock().keys().map(|k| JobId(*k)).collect();
        self.kill(&ids);
    }
}

fn create(_config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError> {
    Ok(Box::new(KillsTheShellOnly {
        sink,
        children: Arc::default(),
        killed: Arc::default(),
    }))
}

#[test]
fn a_kill_that_leaves_the_jobs_child_running_breaks_the_contract() {
    let err = Contract::new(create, "")
        .check()
        .expect_err("the child `sleep 300` outlives the kill");
    assert!(
        err.contains("still runs 10 s later") && err.contains("whole process tree"),
        "{err}"
    );
}
