//! The fake host: jobs as the host builds them, a sink that can be read, and a backend handle.

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::mpsc::{channel, Receiver, Sender},
    time::{Duration, Instant},
};

use flowrun_plugin_sdk::{
    abi::{
        self,
        abi_stable::{
            sabi_trait::TD_Opaque,
            std_types::{RArc, ROption, RSlice, RString, RVec, Tuple2},
        },
    },
    export::backend_to_abi,
    guard, Answer, BackendFactory, Capabilities, Event, Job, JobEventKind, JobId, OwnedJob,
    PluginError, Sink, SubmitAnswerKind,
};
use parking_lot::Mutex;

/// The host's sink: events go into a channel the test reads.
struct ChannelSink(Mutex<Sender<abi::JobEvent>>);

impl abi::EventSink for ChannelSink {
    fn emit(&self, event: abi::JobEvent) {
        // The receiver may be gone when a backend reports after the test ended: nothing to do.
        let _ = self.0.lock().send(event);
    }
}

/// A host stand-in: a scratch run directory, job specs as the host builds them, and the events
/// the backend reports.
pub struct FakeHost {
    events: Receiver<abi::JobEvent>,
    tx: Sender<abi::JobEvent>,
    run_dir: PathBuf,
    run_tag: String,
    next_id: u64,
    /// Events read but not asked for yet.
    pending: VecDeque<Event>,
    /// The native id of each job from its SUBMITTED event (kept apart, as the host does: it
    /// is no step of the job's life).
    submitted: HashMap<JobId, String>,
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
            run_tag: format!("flowrun-testkit-{}", std::process::id()),
            next_id: 1,
            pending: VecDeque::new(),
            submitted: HashMap::new(),
        }
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The run's tag (`flowrun-testkit-<pid>`), which cluster backends give the run's jobs as
    /// the scheduler's job name: what a test asks the scheduler about.
    pub fn run_tag(&self) -> &str {
        &self.run_tag
    }

    /// A sink feeding this host, as the real host passes one to each backend.
    pub fn sink(&self) -> Sink {
        Sink::from_abi(abi::EventSink_TO::from_ptr(
            RArc::new(ChannelSink(Mutex::new(self.tx.clone()))),
            TD_Opaque,
        ))
    }

    /// Creates a backend through the SDK's guarded ABI adapter, as the host does.
    pub fn backend(
        &self,
        create: BackendFactory,
        config: &str,
    ) -> Result<TestBackend, PluginError> {
        let sink = self.sink();
        let inner = guard(|| create(config, sink.clone())).and_then(|r| r)?;
        Ok(TestBackend(backend_to_abi(inner, sink)))
    }

    /// A job running `script` with `/bin/sh -c`, as the host builds it: its own job directory
    /// `<run>/jobs/<name>` (created), cwd there, log `output.log` in it, attempt 1, and the job
    /// environment of flowrun's contract in `env`.
    pub fn shell_job(&mut self, name: &str, script: &str) -> TestJob {
        let id = JobId(self.next_id);
        self.next_id += 1;
        let job_dir = self.run_dir.join("jobs").join(name);
        std::fs::create_dir_all(&job_dir).expect("create the job directory");
        let s = |p: &Path| RString::from(p.to_string_lossy().into_owned());
        let spec = abi::JobSpec {
            id,
            name: name.into(),
            command: abi::CommandSpec {
                shell: true,
                args: RVec::from(vec![RString::from(script)]),
            },
            cwd: s(&job_dir),
            env: RVec::new(),
            job_dir: s(&job_dir),
            log_path: s(&job_dir.join("output.log")),
            run_dir: s(&self.run_dir),
            run_tag: self.run_tag.as_str().into(),
            timeout_ms: ROption::RNone,
            resources: abi::Resources {
                cpus: 1,
                ..Default::default()
            },
            interactive: false,
            attempt: 1,
            attrs: RVec::new(),
        };
        let mut job = TestJob(OwnedJob::from_abi(spec));
        job.set_contract_env();
        job
    }

    /// A job running `argv` directly (see [`FakeHost::shell_job`]).
    pub fn argv_job(&mut self, name: &str, argv: &[&str]) -> TestJob {
        self.shell_job(name, "").argv(argv)
    }

    /// The next event (STARTED, FINISHED or LOST), waiting at most `timeout`. SUBMITTED events
    /// are not returned: their native ids are kept for [`FakeHost::submitted_id`].
    pub fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.receive(left)?;
            if e.kind() != JobEventKind::SUBMITTED {
                return Some(e);
            }
        }
    }

    /// The native id the backend reported for job `id` at its submission
    /// (`Event::submitted`), among the events read so far.
    pub fn submitted_id(&self, id: JobId) -> Option<&str> {
        self.submitted.get(&id).map(String::as_str)
    }

    /// One event from the backend; a SUBMITTED one's id is recorded.
    fn receive(&mut self, timeout: Duration) -> Option<Event> {
        let e = Event::from_abi(self.events.recv_timeout(timeout).ok()?);
        if e.kind() == JobEventKind::SUBMITTED {
            if let Some(native) = e.attr("native_id") {
                self.submitted.insert(e.id(), native.to_string());
            }
        }
        Some(e)
    }

    /// Waits for the end (FINISHED or LOST) of job `id`, keeping other events for later.
    pub fn wait_end(&mut self, id: JobId, timeout: Duration) -> Option<Event> {
        if let Some(i) = self.pending.iter().position(|e| e.id() == id && e.is_end()) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let e = self.receive(left)?;
            if e.id() == id && e.is_end() {
                return Some(e);
            }
            if e.kind() != JobEventKind::SUBMITTED {
                self.pending.push_back(e);
            }
        }
    }

    /// Submits `jobs`, offering busy ones again with backoff (as the host does) until each is
    /// accepted or rejected or `timeout` passes, and returns the final answer of each job, in
    /// order. Panics if the backend breaks the answer protocol (count or order).
    pub fn submit_all(
        &mut self,
        backend: &TestBackend,
        jobs: Vec<TestJob>,
        timeout: Duration,
    ) -> Vec<Answer> {
        let deadline = Instant::now() + timeout;
        let mut answers: HashMap<JobId, Answer> = HashMap::new();
        let order: Vec<JobId> = jobs.iter().map(TestJob::id).collect();
        let mut todo = jobs;
        let mut backoff = Duration::from_millis(5);
        while !todo.is_empty() && Instant::now() < deadline {
            let got = backend.submit(&todo);
            assert_eq!(
                got.len(),
                todo.len(),
                "submit must answer once per job, in order"
            );
            let mut busy = Vec::new();
            for (job, answer) in todo.into_iter().zip(got) {
                assert_eq!(
                    job.id(),
                    answer.id(),
                    "submit answers must come in the order of the batch"
                );
                if answer.kind() == SubmitAnswerKind::BUSY {
                    busy.push(job);
                } else {
                    answers.insert(job.id(), answer);
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

/// A backend created through the ABI, driven as the host drives it.
pub struct TestBackend(abi::BackendBox);

impl TestBackend {
    /// What the backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }

    /// Offers one batch (no retry of busy jobs: see [`FakeHost::submit_all`]).
    pub fn submit(&self, jobs: &[TestJob]) -> Vec<Answer> {
        let specs: RVec<abi::JobSpec> = jobs.iter().map(|j| j.0.as_abi().clone()).collect();
        self.0
            .submit(specs)
            .into_iter()
            .map(Answer::from_abi)
            .collect()
    }

    /// Asks for jobs to be killed.
    pub fn kill(&self, ids: &[JobId]) {
        self.0.kill(RSlice::from_slice(ids))
    }

    /// Shuts the backend down (blocking).
    pub fn shutdown(&self) {
        self.0.shutdown()
    }

    /// The backend's counters (TOML text).
    pub fn stats(&self) -> String {
        self.0.stats().into_string()
    }
}

/// A job spec under construction: [`FakeHost::shell_job`] makes one as the host would, and the
/// builder methods change what a test needs.
#[derive(Clone, Debug)]
pub struct TestJob(OwnedJob);

impl TestJob {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.0.id()
    }

    /// The job as a backend sees it.
    pub fn job(&self) -> Job<'_> {
        self.0.job()
    }

    fn spec(&mut self) -> &mut abi::JobSpec {
        self.0.as_abi_mut()
    }

    /// Puts the host's job environment (brief contract: `FLOWRUN_JOB_NAME`, `FLOWRUN_JOB_DIR`,
    /// `FLOWRUN_RUN_DIR`, `FLOWRUN_ATTEMPT`, `FLOWRUN_RUN_TAG`) first in `env`, replacing an
    /// older copy of it.
    fn set_contract_env(&mut self) {
        let spec = self.spec();
        let vars = [
            ("FLOWRUN_JOB_NAME", spec.name.to_string()),
            ("FLOWRUN_JOB_DIR", spec.job_dir.to_string()),
            ("FLOWRUN_RUN_DIR", spec.run_dir.to_string()),
            ("FLOWRUN_ATTEMPT", spec.attempt.to_string()),
            ("FLOWRUN_RUN_TAG", spec.run_tag.to_string()),
        ];
        let mut env: Vec<abi::Attr> = vars
            .iter()
            .map(|(k, v)| Tuple2(RString::from(*k), RString::from(v.as_str())))
            .collect();
        env.extend(
            spec.env
                .iter()
                .filter(|kv| !vars.iter().any(|(k, _)| kv.0.as_str() == *k))
                .cloned(),
        );
        spec.env = env.into();
    }

    /// Runs `argv` directly instead of a shell string.
    pub fn argv(mut self, argv: &[&str]) -> Self {
        self.spec().command = abi::CommandSpec {
            shell: false,
            args: argv.iter().map(|a| RString::from(*a)).collect(),
        };
        self
    }

    /// Runs `script` with `/bin/sh -c`.
    pub fn shell(mut self, script: &str) -> Self {
        self.spec().command = abi::CommandSpec {
            shell: true,
            args: RVec::from(vec![RString::from(script)]),
        };
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.spec().env.push(Tuple2(key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.spec().cwd = dir.as_ref().to_string_lossy().as_ref().into();
        self
    }

    /// Sets the job directory (and `FLOWRUN_JOB_DIR` with it); cwd and log stay as they are.
    pub fn job_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.spec().job_dir = dir.as_ref().to_string_lossy().as_ref().into();
        self.set_contract_env();
        self
    }

    /// Sets the log path.
    pub fn log_path(mut self, path: impl AsRef<Path>) -> Self {
        self.spec().log_path = path.as_ref().to_string_lossy().as_ref().into();
        self
    }

    /// Sets the time limit.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.spec().timeout_ms = ROption::RSome(limit.as_millis().try_into().unwrap_or(u64::MAX));
        self
    }

    /// Sets the CPUs and memory asked for.
    pub fn resources(mut self, cpus: u32, memory_mb: Option<u64>) -> Self {
        let r = &mut self.spec().resources;
        r.cpus = cpus;
        r.memory_mb = memory_mb.into();
        self
    }

    /// Adds a named resource.
    pub fn named_resource(mut self, name: &str, amount: u64) -> Self {
        self.spec()
            .resources
            .named
            .push(Tuple2(name.into(), amount));
        self
    }

    /// Marks the job interactive.
    pub fn interactive(mut self, interactive: bool) -> Self {
        self.spec().interactive = interactive;
        self
    }

    /// Sets the attempt number (and `FLOWRUN_ATTEMPT` with it).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.spec().attempt = attempt;
        self.set_contract_env();
        self
    }

    /// Adds a free-form attribute.
    pub fn attr(mut self, key: &str, value: &str) -> Self {
        self.spec().attrs.push(Tuple2(key.into(), value.into()));
        self
    }

    /// Gives the job another id (for many copies of one job).
    pub fn with_id(mut self, id: JobId) -> Self {
        self.spec().id = id;
        self
    }
}
