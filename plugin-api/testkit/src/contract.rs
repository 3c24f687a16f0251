//! The backend contract check: what every backend owes the host, checked through the ABI.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use flowrun_plugin_sdk::{
    BackendFactory, CapabilityFlags, EndKind, Event, JobEventKind, JobId, SubmitAnswerKind,
};

use crate::{FakeHost, TestBackend, TestJob};

/// What a stale log holds before a job starts; a backend that appends keeps it.
const STALE: &str = "STALE LINE FROM AN EARLIER RUN";

/// The backend contract check. [`Contract::check`] returns the first violation found.
///
/// Always checked: every job of a batch is answered, in order; each accepted job ends exactly
/// once; `contract-pass` ends with exit code 0 and `contract-fail` with exit code 3; a killed
/// `contract-kill` ends promptly (KILLED, a signal, or a failure), and for a backend that runs
/// commands the child its shell started is gone too; killing an unknown id is
/// harmless; `shutdown` returns; a backend that declares `CREATES_JOB_DIR` creates the job
/// directory; a backend that writes logs (no `NO_JOB_DIR`) truncates an existing log instead
/// of appending to it.
///
/// For a backend that runs commands (the default), also: the job environment of flowrun's
/// contract reaches the job (`FLOWRUN_JOB_NAME`, `FLOWRUN_JOB_DIR`, `FLOWRUN_RUN_DIR`,
/// `FLOWRUN_ATTEMPT`, `FLOWRUN_RUN_TAG`, plus a variable of the job's own); it runs in its
/// `cwd`; its stdout and stderr both go to `log_path`; and timeouts are handled as declared:
/// with `ENFORCES_TIMEOUT` a job over its limit ends without passing, without it the backend
/// leaves the job alone (the host kills it, and names the timeout as the reason).
pub struct Contract {
    create: BackendFactory,
    config: String,
    runs_commands: bool,
    wait: Duration,
}

/// [`Contract::check`] with the defaults: a backend that runs real shell commands.
pub fn check_backend_contract(create: BackendFactory, config: &str) -> Result<(), String> {
    Contract::new(create, config).check()
}

impl Contract {
    /// The check for the backend `create` makes from `config`.
    pub fn new(create: BackendFactory, config: &str) -> Self {
        Contract {
            create,
            config: config.to_string(),
            runs_commands: true,
            wait: Duration::from_secs(60),
        }
    }

    /// For a backend that runs nothing (a simulator such as `fake`): the command checks are
    /// left out, and `config` must make `contract-fail` exit 3 and `contract-kill` last until
    /// it is killed.
    pub fn simulated(mut self) -> Self {
        self.runs_commands = false;
        self
    }

    /// How long to wait for any one job (default 60 s; a cluster may need more).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Runs the check in a scratch directory, which is removed afterwards.
    pub fn check(&self) -> Result<(), String> {
        let dir = tempfile::Builder::new()
            .prefix("flowrun-contract-")
            .tempdir()
            .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
        let mut host = FakeHost::new(dir.path());
        let backend = host
            .backend(self.create, &self.config)
            .map_err(|e| format!("backend creation failed: {e}"))?;
        let result = self.run(&mut host, &backend);
        backend.shutdown();
        result
    }

    fn run(&self, host: &mut FakeHost, backend: &TestBackend) -> Result<(), String> {
        let caps = backend.capabilities();
        let writes_logs = !caps.flags.contains(CapabilityFlags::NO_JOB_DIR);
        let creates_job_dir = caps.flags.contains(CapabilityFlags::CREATES_JOB_DIR);
        let enforces_timeout = caps.flags.contains(CapabilityFlags::ENFORCES_TIMEOUT);

        let pass = host.shell_job("contract-pass", "exit 0");
        if creates_job_dir {
            std::fs::remove_dir(pass.job().job_dir()).map_err(|e| e.to_string())?;
        }
        let fail = host.shell_job("contract-fail", "exit 3");
        // A job of two processes, a shell that waits for its child: killing the job kills
        // both (a kill of the shell alone would leave the child running on, unobserved).
        let kill = host.shell_job(
            "contract-kill",
            "sleep 300 & echo $! > \"$FLOWRUN_JOB_DIR/contract-kill.pid\"; wait",
        );
        let mut jobs = vec![pass, fail, kill];

        // A job whose log holds an older run's output, in a cwd of its own, that reports what
        // it sees on stdout and stderr.
        let cwd = host.run_dir().join("contract-cwd");
        std::fs::create_dir_all(&cwd).map_err(|e| e.to_string())?;
        let env_job = host
            .shell_job(
                "contract-env",
                "for v in FLOWRUN_JOB_NAME FLOWRUN_JOB_DIR FLOWRUN_RUN_DIR FLOWRUN_ATTEMPT \
                 FLOWRUN_RUN_TAG CONTRACT_OWN; do printf '%s\\n' \"$v=$(printenv $v)\"; \
                 done; printf '%s\\n' \"cwd=$(pwd -P)\"; echo to-stderr >&2",
            )
            .cwd(&cwd)
            .env("CONTRACT_OWN", "it's \"quoted\" $x");
        std::fs::write(env_job.job().log_path(), format!("{STALE}\n"))
            .map_err(|e| e.to_string())?;
        if self.runs_commands {
            jobs.push(env_job.clone());
            jobs.push(if enforces_timeout {
                host.shell_job("contract-timeout", "sleep 300")
                    .timeout(Duration::from_secs(2))
            } else {
                host.shell_job("contract-timeout", "sleep 2; exit 0")
                    .timeout(Duration::from_secs(1))
            });
        } else if writes_logs {
            std::fs::write(jobs[0].job().log_path(), format!("{STALE}\n"))
                .map_err(|e| e.to_string())?;
        }

        let ids: Vec<JobId> = jobs.iter().map(TestJob::id).collect();
        let answers = host.submit_all(backend, jobs.clone(), self.wait);
        if answers.len() != jobs.len()
            || answers
                .iter()
                .any(|a| a.kind() != SubmitAnswerKind::ACCEPTED)
        {
            return Err(format!(
                "expected all {} jobs accepted, got {answers:?}",
                jobs.len()
            ));
        }

        let end = self.end_of(host, &jobs[0])?;
        expect_exit(&end, "exit 0", 0)?;
        if creates_job_dir && !Path::new(jobs[0].job().job_dir()).is_dir() {
            return Err(
                "the backend declares CREATES_JOB_DIR but did not create the job directory".into(),
            );
        }
        if writes_logs && !self.runs_commands {
            check_not_appended(jobs[0].job().log_path())?;
        }
        expect_exit(&self.end_of(host, &jobs[1])?, "exit 3", 3)?;

        if self.runs_commands {
            let end = self.end_of(host, &jobs[3])?;
            expect_exit(&end, "the environment job", 0)?;
            check_env_job(&jobs[3], &cwd)?;
            let end = self.end_of(host, &jobs[4])?;
            let passed = end.kind() == JobEventKind::FINISHED
                && end.end() == EndKind::EXITED
                && end.exit_code() == Some(0);
            if enforces_timeout && passed {
                return Err(
                    "the backend declares ENFORCES_TIMEOUT, but a `sleep 300` with a 2s \
                            timeout passed"
                        .into(),
                );
            }
            if !enforces_timeout && !passed {
                return Err(format!(
                    "the backend does not declare ENFORCES_TIMEOUT, so it must leave timeouts to \
                     the host, but `sleep 2; exit 0` with a 1s timeout ended as {end:?}"
                ));
            }
        }

        backend.kill(&[ids[2], JobId(u64::MAX)]);
        let end = self.end_of(host, &jobs[2])?;
        let killed = end.kind() == JobEventKind::FINISHED
            && matches!(
                end.end(),
                EndKind::KILLED | EndKind::SIGNALED | EndKind::FAILED
            );
        if !killed {
            return Err(format!(
                "a killed `sleep 300` should end killed, got {end:?}"
            ));
        }
        if self.runs_commands {
            check_tree_gone(&jobs[2])?;
        }

        // No job may end twice.
        while let Some(e) = host.next_event(Duration::from_millis(300)) {
            if e.is_end() && ids.contains(&e.id()) {
                return Err(format!("job {} ended twice: {e:?}", e.id().0));
            }
        }
        Ok(())
    }

    fn end_of(&self, host: &mut FakeHost, job: &TestJob) -> Result<Event, String> {
        let started = Instant::now();
        host.wait_end(job.id(), self.wait).ok_or_else(|| {
            format!(
                "job {} never ended (waited {:?})",
                job.job().name(),
                started.elapsed()
            )
        })
    }
}

/// After `contract-kill` ended killed, the child its shell started is gone too (within a few
/// seconds: a cluster may take that long to clean up). A job that never started wrote no pid,
/// and is not checked.
fn check_tree_gone(job: &TestJob) -> Result<(), String> {
    let pid_file = Path::new(job.job().job_dir()).join("contract-kill.pid");
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(());
    };
    let stat = format!("/proc/{pid}/stat");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Gone, or a zombie waiting for a parent to reap it: dead either way.
        let alive = std::fs::read_to_string(&stat).is_ok_and(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        });
        if !alive {
            return Ok(());
        }
        if Instant::now() >= deadline {
            // The check leaves nothing behind either.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            return Err(format!(
                "the killed job `sleep 300 & ...; wait` ended, but its `sleep 300` (pid {pid}) \
                 still runs 10 s later: a kill must end the job's whole process tree (its \
                 process group or session, or a cgroup), not only the process the backend \
                 started"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn expect_exit(end: &Event, what: &str, code: i32) -> Result<(), String> {
    if end.kind() == JobEventKind::FINISHED
        && end.end() == EndKind::EXITED
        && end.exit_code() == Some(code)
    {
        Ok(())
    } else {
        Err(format!(
            "`{what}` should finish with exit code {code}, got {end:?}"
        ))
    }
}

fn read_log(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read the job's log {path}: {e}"))
}

fn check_not_appended(log: &str) -> Result<(), String> {
    if read_log(log)?.contains(STALE) {
        return Err(format!(
            "the job's log {log} still holds an older run's output: a backend must create or \
             truncate the log when the job starts, never append"
        ));
    }
    Ok(())
}

fn check_env_job(job: &TestJob, cwd: &Path) -> Result<(), String> {
    let j = job.job();
    let log_path = j.log_path();
    check_not_appended(log_path)?;
    let log = read_log(log_path)?;
    let cwd = cwd
        .canonicalize()
        .map_err(|e| format!("{}: {e}", cwd.display()))?;
    let expected = [
        ("FLOWRUN_JOB_NAME", j.name().to_string()),
        ("FLOWRUN_JOB_DIR", j.job_dir().to_string()),
        ("FLOWRUN_RUN_DIR", j.run_dir().to_string()),
        ("FLOWRUN_ATTEMPT", j.attempt().to_string()),
        ("FLOWRUN_RUN_TAG", j.run_tag().to_string()),
        ("CONTRACT_OWN", "it's \"quoted\" $x".to_string()),
        ("cwd", cwd.to_string_lossy().into_owned()),
    ];
    for (key, value) in expected {
        let line = format!("{key}={value}");
        if !log.lines().any(|l| l == line) {
            return Err(format!(
                "the job should see `{line}` (its environment and cwd), but its log {log_path} \
                 holds:\n{log}"
            ));
        }
    }
    if !log.lines().any(|l| l == "to-stderr") {
        return Err(format!(
            "the job's stderr should go to its log {log_path} too, which holds:\n{log}"
        ));
    }
    Ok(())
}
