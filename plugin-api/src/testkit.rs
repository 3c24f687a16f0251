//! A fake host for plugin authors: drives a backend through the same ABI objects the real host
//! uses, and checks the backend contract, without flowrun's source.
//!
//! ```text
//! #[test]
//! fn my_backend_keeps_the_contract() {
//!     flowrun_plugin_api::testkit::check_backend_contract(my_plugin::create, "").unwrap();
//! }
//! ```

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        mpsc::{channel, Receiver, Sender},
        Mutex,
    },
    time::{Duration, Instant},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, ROption, RSlice, RString, RVec},
};

use crate::{abi::*, sdk::*};

struct ChannelSink(Mutex<Sender<JobEvent>>);

impl EventSink for ChannelSink {
    fn emit(&self, event: JobEvent) {
        let _ = self.0.lock().map(|tx| tx.send(event));
    }
}

/// A host stand-in: an event sink you can read, a scratch run directory, and job specs.
pub struct FakeHost {
    events: Receiver<JobEvent>,
    tx: Sender<JobEvent>,
    run_dir: PathBuf,
    next_id: u64,
    /// Events read but not yet asked for.
    pending: Vec<JobEvent>,
}

impl FakeHost {
    /// A fake host whose run directory is `run_dir` (created if missing).
    pub fn new(run_dir: &Path) -> Self {
        std::fs::create_dir_all(run_dir).expect("create the run directory");
        let (tx, events) = channel();
        FakeHost {
            events,
            tx,
            run_dir: run_dir.to_path_buf(),
            next_id: 1,
            pending: Vec::new(),
        }
    }

    /// An event sink feeding this host, as the real host passes to `new_backend`.
    pub fn sink(&self) -> EventSinkBox {
        EventSink_TO::from_ptr(
            RArc::new(ChannelSink(Mutex::new(self.tx.clone()))),
            TD_Opaque,
        )
    }

    /// Creates a backend through the SDK's guarded ABI adapter.
    pub fn backend(&self, create: BackendFactory, config: &str) -> Result<BackendBox, PluginError> {
        let sink = Sink::new(self.sink());
        let inner = guard(|| create(config, sink.clone())).and_then(|r| r)?;
        Ok(backend_to_abi(inner, sink))
    }

    /// A job spec running `script` through `/bin/sh -c`, with its own job directory.
    pub fn shell_job(&mut self, name: &str, script: &str) -> JobSpec {
        let id = JobId(self.next_id);
        self.next_id += 1;
        let job_dir = self.run_dir.join("jobs").join(name);
        std::fs::create_dir_all(&job_dir).expect("create the job directory");
        let s = |p: &Path| RString::from(p.to_string_lossy().into_owned());
        JobSpec {
            id,
            name: name.into(),
            command: CommandSpec {
                shell: true,
                args: RVec::from(vec![RString::from(script)]),
            },
            cwd: s(&job_dir),
            env: RVec::new(),
            job_dir: s(&job_dir),
            log_path: s(&job_dir.join("output.log")),
            run_dir: s(&self.run_dir),
            run_tag: "flowrun-testkit".into(),
            timeout_ms: ROption::RNone,
            resources: Resources {
                cpus: 1,
                ..Default::default()
            },
            interactive: false,
            attempt: 1,
            attrs: RVec::new(),
        }
    }

    /// The next event, waiting at most `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Option<JobEvent> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        self.events.recv_timeout(timeout).ok()
    }

    /// Waits for the FINISHED or LOST event of `id`, keeping other events for later.
    pub fn wait_end(&mut self, id: JobId, timeout: Duration) -> Option<JobEvent> {
        if let Some(i) = self
            .pending
            .iter()
            .position(|e| e.id == id && e.kind != JobEventKind::STARTED)
        {
            return Some(self.pending.remove(i));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let e = self.events.recv_timeout(left).ok()?;
            if e.id == id && e.kind != JobEventKind::STARTED {
                return Some(e);
            }
            self.pending.push(e);
        }
    }

    /// Submits `jobs`, offering busy ones again with backoff until all are answered, and
    /// returns the final answer of each job.
    pub fn submit_all(
        &mut self,
        backend: &BackendBox,
        jobs: Vec<JobSpec>,
        timeout: Duration,
    ) -> Vec<SubmitAnswer> {
        let deadline = Instant::now() + timeout;
        let mut answers: HashMap<JobId, SubmitAnswer> = HashMap::new();
        let order: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        let mut todo = jobs;
        let mut backoff = Duration::from_millis(5);
        while !todo.is_empty() && Instant::now() < deadline {
            let got = backend.submit(RVec::from(todo.clone()));
            assert_eq!(
                got.len(),
                todo.len(),
                "submit must answer once per job, in order"
            );
            let mut busy = Vec::new();
            for (job, answer) in todo.into_iter().zip(got) {
                assert_eq!(
                    job.id, answer.id,
                    "submit answers must come in the order of the batch"
                );
                if answer.kind == SubmitAnswerKind::BUSY {
                    busy.push(job);
                } else {
                    answers.insert(job.id, answer);
                }
            }
            todo = busy;
            if !todo.is_empty() {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
        order
            .into_iter()
            .filter_map(|id| answers.remove(&id))
            .collect()
    }
}

/// Checks the backend contract on a backend that runs real shell commands, created by
/// `create` from `config`. Returns the first violation found.
///
/// Checked: every job of a batch is answered in order; an accepted job ends exactly once;
/// `exit 0` and `exit 3` end with their exit codes; a killed `sleep` ends promptly with a
/// KILLED (or signal) event; killing an unknown id is harmless; `shutdown` returns; a backend
/// that declares `CREATES_JOB_DIR` creates a job directory that does not exist yet.
pub fn check_backend_contract(create: BackendFactory, config: &str) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!(
        "flowrun-testkit-{}-{}",
        std::process::id(),
        unique()
    ));
    let mut host = FakeHost::new(&dir);
    let backend = host
        .backend(create, config)
        .map_err(|e| format!("backend creation failed: {e}"))?;
    let caps = backend.capabilities();
    let wait = Duration::from_secs(60);

    let ok = host.shell_job("contract-pass", "exit 0");
    let creates_job_dir = caps.flags.contains(CapabilityFlags::CREATES_JOB_DIR);
    if creates_job_dir {
        std::fs::remove_dir(ok.job_dir.as_str()).map_err(|e| e.to_string())?;
    }
    let bad = host.shell_job("contract-fail", "exit 3");
    let long = host.shell_job("contract-kill", "sleep 300");
    let ids = [ok.id, bad.id, long.id];
    let answers = host.submit_all(&backend, vec![ok, bad, long], wait);
    if answers.len() != 3 || answers.iter().any(|a| a.kind != SubmitAnswerKind::ACCEPTED) {
        return Err(format!("expected all 3 jobs accepted, got {answers:?}"));
    }

    let end = host
        .wait_end(ids[0], wait)
        .ok_or("`exit 0` never finished")?;
    if end.kind != JobEventKind::FINISHED || end.exit_code != ROption::RSome(0) {
        return Err(format!(
            "`exit 0` should finish with exit code 0, got {end:?}"
        ));
    }
    if creates_job_dir && !dir.join("jobs").join("contract-pass").is_dir() {
        return Err(
            "the backend declares CREATES_JOB_DIR but did not create the job directory".into(),
        );
    }
    let end = host
        .wait_end(ids[1], wait)
        .ok_or("`exit 3` never finished")?;
    if end.kind != JobEventKind::FINISHED || end.exit_code != ROption::RSome(3) {
        return Err(format!(
            "`exit 3` should finish with exit code 3, got {end:?}"
        ));
    }

    backend.kill(RSlice::from_slice(&[ids[2], JobId(u64::MAX)]));
    let end = host
        .wait_end(ids[2], wait)
        .ok_or("a killed job never finished")?;
    let killed = end.kind == JobEventKind::FINISHED
        && (end.end == EndKind::KILLED
            || end.end == EndKind::SIGNALED
            || end.end == EndKind::FAILED);
    if !killed {
        return Err(format!(
            "a killed `sleep 300` should end killed, got {end:?}"
        ));
    }

    // No job may end twice.
    while let Some(e) = host.next_event(Duration::from_millis(300)) {
        if e.kind != JobEventKind::STARTED && ids.contains(&e.id) {
            return Err(format!("job {:?} ended twice: {e:?}", e.id));
        }
    }
    backend.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
