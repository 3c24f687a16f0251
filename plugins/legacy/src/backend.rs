//! The backend as flowrun sees it: it starts the worker process ([`crate::worker`]), turns
//! submits and kills into requests on the worker's socket, and turns the worker's replies into
//! job events. One reader thread per worker reads every reply in order, which is what keeps a
//! job's STARTED before its end, and notices when the worker dies or hangs.
//!
//! When a worker dies, its running jobs are reported lost with the reason ("legacy launcher
//! crashed: SIGSEGV"), and the next submit starts a new worker; other backends never notice.

use std::{
    collections::{HashMap, VecDeque},
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    os::{
        fd::{AsFd, OwnedFd},
        unix::{
            net::UnixStream,
            process::{CommandExt, ExitStatusExt},
        },
    },
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{channel, Receiver, Sender},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use flowrun_plugin_api::{
    sdk::{BackendImpl, Sink},
    Capabilities, JobId, JobSpec, SubmitAnswer,
};
use parking_lot::Mutex;

use crate::{
    abi_map,
    config::{humanize, Config},
    protocol::{
        Answer, Ended, FrameBuffer, LaunchRequest, OpenRequest, Reply, Request, WorkerStats,
    },
    sys,
    worker::{
        HEARTBEAT, KILL_NOW, LIFELINE_FD, MESSAGE_PREFIX, PRELOAD_ENV, SOCKET_FD, WORKER_ENV,
    },
};

/// How often the reader thread wakes up to look for a hung worker when nothing arrives.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// What the backend and its workers count, for `stats()`.
#[derive(Default)]
struct Totals {
    workers_started: u64,
    worker_crashes: u64,
    workers_killed_as_hung: u64,
    accepted: u64,
    busy: u64,
    rejected: u64,
    lost: u64,
    /// Workers that ended.
    ended_workers: WorkerStats,
    /// The current worker's latest counters.
    current_worker: WorkerStats,
}

/// The `legacy` backend.
pub struct LegacyBackend {
    config: Arc<Config>,
    sink: Sink,
    totals: Arc<Mutex<Totals>>,
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    current: Option<Worker>,
    closed: bool,
}

/// One running worker, from the backend's side.
struct Worker {
    link: Arc<Link>,
    /// Requests go out here.
    socket: UnixStream,
    /// Kept open: its closing tells the guardian flowrun is gone.
    _lifeline: UnixStream,
    /// Launch answers, from the reader thread; `None` once the worker is gone.
    answers: Receiver<Option<Vec<Answer>>>,
    reader: Option<JoinHandle<()>>,
}

/// What a worker's reader thread shares with the backend.
struct Link {
    sink: Sink,
    totals: Arc<Mutex<Totals>>,
    config: Arc<Config>,
    /// Jobs this worker started that have not ended, with the launcher's id for each.
    running: Mutex<HashMap<u64, Option<String>>>,
    /// The ids of each launch batch sent and not answered yet, oldest first.
    launches: Mutex<VecDeque<Vec<u64>>>,
    /// Requests that await their reply, oldest first: when each was sent, or when the one
    /// before it was answered if that is later (the worker serves them in turn, so a request
    /// only waits on the launcher from then on).
    outstanding: Mutex<VecDeque<Instant>>,
    /// A shutdown was asked for: the worker's exit is expected.
    stopping: AtomicBool,
    /// Why the worker is gone, once it is.
    gone: Mutex<Option<String>>,
}

impl Link {
    /// A reply arrived for the oldest request.
    fn answered(&self) {
        let mut outstanding = self.outstanding.lock();
        outstanding.pop_front();
        if let Some(next) = outstanding.front_mut() {
            *next = (*next).max(Instant::now());
        }
    }

    fn gone_reason(&self) -> Option<String> {
        self.gone.lock().clone()
    }

    /// Why the worker counts as hung, if it does: a request without its reply for longer
    /// than `call_timeout`, or running jobs and no word from it (not even a heartbeat) for
    /// longer than a tick, a heartbeat and `call_timeout` together.
    fn hang(&self, last_heard: Instant) -> Option<String> {
        let limit = self.config.call_timeout;
        if let Some(&oldest) = self.outstanding.lock().front() {
            if oldest.elapsed() >= limit {
                return Some(format!(
                    "legacy launcher hung: a call did not return within {} (call_timeout); its worker was killed",
                    humanize(limit)
                ));
            }
        }
        let silence = self.config.poll_interval + HEARTBEAT + limit;
        if !self.running.lock().is_empty() && last_heard.elapsed() >= silence {
            return Some(format!(
                "legacy launcher hung: no poll tick ended within {}; its worker was killed",
                humanize(silence)
            ));
        }
        None
    }

    /// Reports jobs that ended (those this worker still counts as running: a kill and a tick
    /// can both see a job end, the first one wins).
    fn finish(&self, ended: Vec<Ended>, stats: WorkerStats) {
        let events: Vec<_> = {
            let mut running = self.running.lock();
            ended
                .iter()
                .filter_map(|e| {
                    running
                        .remove(&e.id)
                        .map(|native| abi_map::ended(e, native.as_deref()))
                })
                .collect()
        };
        self.totals.lock().current_worker = stats;
        for e in events {
            self.sink.emit(e);
        }
    }

    /// Handles every complete frame; `Err` when the stream makes no sense.
    fn handle_frames(
        &self,
        frames: &mut FrameBuffer,
        answers: &Sender<Option<Vec<Answer>>>,
    ) -> Result<(), String> {
        while let Some((kind, payload)) = frames.next_frame()? {
            match Reply::decode(kind, &payload)? {
                Reply::Answers(got) => {
                    self.answered();
                    let ids = self.launches.lock().pop_front().unwrap_or_default();
                    if ids.len() != got.len() {
                        return Err(format!(
                            "{} answers to a launch of {} jobs",
                            got.len(),
                            ids.len()
                        ));
                    }
                    let mut started = Vec::new();
                    {
                        let mut running = self.running.lock();
                        for (id, a) in ids.iter().zip(&got) {
                            if let Answer::Started(native) = a {
                                running.insert(*id, native.clone());
                                started.push(abi_map::started(*id, native.as_deref()));
                            }
                        }
                    }
                    // Emitted here, by the thread that reads the worker's frames in order, so
                    // that a job's STARTED always precedes what a later tick says about it.
                    for e in started {
                        self.sink.emit(e);
                    }
                    let _ = answers.send(Some(got));
                }
                Reply::Killed(ended, stats) => {
                    self.answered();
                    self.finish(ended, stats);
                }
                Reply::Ticked(ended, stats) => self.finish(ended, stats),
                Reply::Ready { .. } | Reply::OpenFailed(_) => {
                    return Err("a second handshake".into());
                }
            }
        }
        Ok(())
    }
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGSYS => "SIGSYS",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGALRM => "SIGALRM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// How the worker's end reads, when it was not asked for.
fn crash_reason(status: &ExitStatus) -> String {
    match (status.signal(), status.code()) {
        (Some(sig), _) => format!("legacy launcher crashed: {}", signal_name(sig)),
        (None, Some(code)) => format!("legacy launcher exited unexpectedly with code {code}"),
        (None, None) => "legacy launcher ended unexpectedly".into(),
    }
}

/// How the worker process is started: flowrun's binary with this library preloaded, or, when
/// the crate is linked into the running program itself (its tests), that program.
enum Vessel {
    Preload(PathBuf),
    Executable,
}

fn vessel() -> Result<Vessel, String> {
    let exe = std::fs::canonicalize("/proc/self/exe")
        .map_err(|e| format!("cannot find the running program: {e}"))?;
    let Some(own) = sys::own_object_path() else {
        return Ok(Vessel::Executable); // the loader names the main program ""
    };
    let own = std::fs::canonicalize(&own).map_err(|e| {
        format!(
            "cannot find the legacy plugin's file {}: {e}",
            own.display()
        )
    })?;
    if own == exe {
        return Ok(Vessel::Executable);
    }
    let text = own.to_string_lossy();
    if text.contains([' ', ':']) {
        // LD_PRELOAD separates its entries with both.
        return Err(format!(
            "the legacy plugin's path {text} contains a space or a colon, which LD_PRELOAD cannot carry: install the plugin elsewhere"
        ));
    }
    Ok(Vessel::Preload(own))
}

/// Logs what the worker and the launcher print, line by line.
fn forward_output(stream: UnixStream, library: String) {
    let spawned = std::thread::Builder::new()
        .name("legacy-output".into())
        .spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end();
                match line.strip_prefix(MESSAGE_PREFIX) {
                    Some(own) => tracing::warn!("legacy launcher {library}: {own}"),
                    None => tracing::info!("legacy launcher {library} says: {line}"),
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("legacy launcher {}: its output is lost: {e}", "worker");
    }
}

fn io_error(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("cannot start the legacy launcher's worker: {what}: {e}")
}

/// How a handshake that did not end with `Ready` ended.
enum NotReady {
    /// The worker said why (the launcher failed to load or open), or answered nonsense.
    Said(String),
    /// The worker's socket closed: it died.
    Closed,
    /// No answer within `call_timeout`.
    Silent,
}

/// The one-line error of a failed handshake, once the worker is surely gone.
fn handshake_failure(
    guardian: &mut Child,
    lifeline: &mut UnixStream,
    config: &Config,
    why: NotReady,
) -> String {
    // Whatever state it is in, it must not outlive this: then its end can be waited for.
    let _ = lifeline.write_all(&[KILL_NOW]);
    let status = guardian.wait();
    let library = config.library.display();
    match (why, status) {
        (NotReady::Said(why), _) => why,
        (NotReady::Silent, _) => format!(
            "legacy launcher {library} did not finish loading within {} (call_timeout)",
            humanize(config.call_timeout)
        ),
        (NotReady::Closed, Ok(s)) => format!("{} while loading {library}", crash_reason(&s)),
        (NotReady::Closed, Err(e)) => {
            format!("legacy launcher's worker vanished while loading {library}: {e}")
        }
    }
}

impl Worker {
    /// Starts a worker and waits until its launcher is loaded and open.
    fn start(
        config: &Arc<Config>,
        sink: &Sink,
        totals: &Arc<Mutex<Totals>>,
    ) -> Result<Worker, String> {
        let (mut socket, worker_socket) = UnixStream::pair().map_err(io_error("socket"))?;
        let (mut lifeline, guardian_lifeline) = UnixStream::pair().map_err(io_error("socket"))?;
        let (output, output_write) = UnixStream::pair().map_err(io_error("socket"))?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("flowrun-legacy-worker")
            .env(WORKER_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(OwnedFd::from(
                output_write.try_clone().map_err(io_error("socket"))?,
            )))
            .stderr(Stdio::from(OwnedFd::from(output_write)))
            // Out of the terminal's process group: Ctrl-C reaches flowrun, which kills jobs
            // through the launcher.
            .process_group(0);
        if let Vessel::Preload(plugin) = vessel()? {
            if let Some(theirs) = std::env::var_os("LD_PRELOAD") {
                cmd.env(PRELOAD_ENV, theirs);
            }
            cmd.env("LD_PRELOAD", plugin);
        }
        let fds = vec![
            (
                sys::dup_at_least(worker_socket.as_fd(), 10).map_err(io_error("dup"))?,
                SOCKET_FD,
            ),
            (
                sys::dup_at_least(guardian_lifeline.as_fd(), 10).map_err(io_error("dup"))?,
                LIFELINE_FD,
            ),
        ];
        drop((worker_socket, guardian_lifeline));
        sys::map_fds_on_exec(&mut cmd, fds);
        let spawned = cmd.spawn();
        // The command holds our copies of the worker's descriptors: dropping it closes them,
        // so that the worker's death closes the socket.
        drop(cmd);
        let mut guardian = spawned.map_err(io_error("spawn"))?;
        let library = config.library.display().to_string();
        forward_output(output, library.clone());

        let open = Request::Open(OpenRequest {
            library: library.clone(),
            options: config.options.clone(),
            poll_interval: config.poll_interval,
            max_polls_per_interval: config.max_polls_per_interval,
        });
        let mut frames = FrameBuffer::default();
        let deadline = Instant::now() + config.call_timeout;
        let ready = sys::send_all(socket.as_fd(), &open.encode())
            .map_err(|_| NotReady::Closed)
            .and_then(|()| {
                let said = |e: String| NotReady::Said(format!("legacy launcher's worker: {e}"));
                let mut buf = [0u8; 4096];
                loop {
                    if let Some((kind, payload)) = frames.next_frame().map_err(said)? {
                        return match Reply::decode(kind, &payload).map_err(said)? {
                            Reply::Ready { .. } => Ok(()),
                            Reply::OpenFailed(why) => Err(NotReady::Said(why)),
                            _ => Err(said("it answered out of turn".into())),
                        };
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(NotReady::Silent);
                    }
                    let _ = socket.set_read_timeout(Some(left));
                    match socket.read(&mut buf) {
                        Ok(0) => return Err(NotReady::Closed),
                        Ok(n) => frames.extend(&buf[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::Interrupted
                                    | ErrorKind::WouldBlock
                                    | ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return Err(NotReady::Closed),
                    }
                }
            });
        if let Err(why) = ready {
            return Err(handshake_failure(&mut guardian, &mut lifeline, config, why));
        }

        let link = Arc::new(Link {
            sink: sink.clone(),
            totals: totals.clone(),
            config: config.clone(),
            running: Mutex::new(HashMap::new()),
            launches: Mutex::new(VecDeque::new()),
            outstanding: Mutex::new(VecDeque::new()),
            stopping: AtomicBool::new(false),
            gone: Mutex::new(None),
        });
        let (answers_tx, answers) = channel();
        let reader_socket = socket.try_clone().map_err(io_error("socket"))?;
        let reader_lifeline = lifeline.try_clone().map_err(io_error("socket"))?;
        let reader_link = link.clone();
        let reader = std::thread::Builder::new()
            .name("legacy-reader".into())
            .spawn(move || {
                read_replies(
                    &reader_link,
                    reader_socket,
                    reader_lifeline,
                    guardian,
                    frames,
                    answers_tx,
                )
            })
            .map_err(io_error("thread"))?;
        totals.lock().workers_started += 1;
        Ok(Worker {
            link,
            socket,
            _lifeline: lifeline,
            answers,
            reader: Some(reader),
        })
    }

    fn is_gone(&self) -> bool {
        self.link.gone.lock().is_some()
    }

    fn send(&self, request: &Request) {
        self.link.outstanding.lock().push_back(Instant::now());
        // A failure means the worker died: its reader thread reports that.
        let _ = sys::send_all(self.socket.as_fd(), &request.encode());
    }

    /// Launches a batch; `Err` with the reason when the worker died before it answered.
    fn launch(&self, requests: Vec<LaunchRequest>) -> Result<Vec<Answer>, String> {
        self.link
            .launches
            .lock()
            .push_back(requests.iter().map(|r| r.id).collect());
        self.send(&Request::Launch(requests));
        // The reader thread answers, or says the worker is gone (it kills a worker that
        // takes longer than call_timeout); the margin only guards against a bug there.
        let limit = self.link.config.call_timeout + Duration::from_secs(30);
        match self.answers.recv_timeout(limit) {
            Ok(Some(answers)) => Ok(answers),
            _ => Err(self
                .link
                .gone_reason()
                .unwrap_or_else(|| "legacy launcher did not answer".into())),
        }
    }

    /// Waits for the reader thread, which ends once the worker is gone.
    fn join(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The reader thread: every reply of the worker, in order, until it is gone; then the
/// verdict on its end, and its running jobs reported lost if it was not asked to stop.
fn read_replies(
    link: &Link,
    mut socket: UnixStream,
    mut lifeline: UnixStream,
    mut guardian: Child,
    mut frames: FrameBuffer,
    answers: Sender<Option<Vec<Answer>>>,
) {
    let _ = socket.set_read_timeout(Some(WATCH_EVERY));
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_heard = Instant::now();
    let mut killed_for: Option<String> = None;
    loop {
        match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                last_heard = Instant::now();
                if killed_for.is_none() {
                    frames.extend(&buf[..n]);
                    if let Err(e) = link.handle_frames(&mut frames, &answers) {
                        killed_for = Some(format!(
                            "legacy launcher's worker sent a corrupt reply ({e}); it was killed"
                        ));
                        let _ = lifeline.write_all(&[KILL_NOW]);
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
        if killed_for.is_none() {
            if let Some(why) = link.hang(last_heard) {
                link.totals.lock().workers_killed_as_hung += 1;
                tracing::warn!("{why}");
                killed_for = Some(why);
                let _ = lifeline.write_all(&[KILL_NOW]);
            }
        }
    }
    // The guardian ends the way the worker did, once it has killed what the worker left.
    let status = guardian.wait();
    let stopping = link.stopping.load(Ordering::Acquire);
    let clean = killed_for.is_none() && stopping && matches!(&status, Ok(s) if s.success());
    let reason = match (killed_for, &status) {
        (Some(why), _) => why,
        (None, Ok(_)) if clean => {
            "the legacy launcher's worker ended without reporting the job".into()
        }
        (None, Ok(s)) => crash_reason(s),
        (None, Err(e)) => format!("legacy launcher's worker vanished: {e}"),
    };
    *link.gone.lock() = Some(reason.clone());
    let lost: Vec<u64> = link.running.lock().drain().map(|(id, _)| id).collect();
    {
        let mut totals = link.totals.lock();
        let last = std::mem::take(&mut totals.current_worker);
        totals.ended_workers.add(&last);
        totals.lost += lost.len() as u64;
        if !clean {
            totals.worker_crashes += 1;
        }
    }
    if !clean {
        tracing::warn!(
            "{reason} ({}; {} running job(s) lost; the next job starts a new worker; run with -v to see its output)",
            link.config.library.display(),
            lost.len()
        );
    }
    for id in lost {
        link.sink.emit(abi_map::lost(id, &reason));
    }
    let _ = answers.send(None);
}

impl LegacyBackend {
    /// A backend whose worker runs the launcher of `config`; starts the worker now, so that a
    /// launcher that cannot be loaded is an error before any job runs.
    pub fn start(config: Config, sink: Sink) -> Result<LegacyBackend, String> {
        let backend = LegacyBackend {
            config: Arc::new(config),
            sink,
            totals: Arc::default(),
            slot: Mutex::default(),
        };
        let worker = Worker::start(&backend.config, &backend.sink, &backend.totals)?;
        backend.slot.lock().current = Some(worker);
        Ok(backend)
    }

    /// The current worker, started anew if the last one is gone.
    fn live_worker<'a>(&self, slot: &'a mut Slot) -> Result<&'a Worker, String> {
        if slot.current.as_ref().is_some_and(|w| !w.is_gone()) {
            return Ok(slot.current.as_ref().expect("checked just above"));
        }
        if let Some(mut old) = slot.current.take() {
            old.join();
        }
        let worker = Worker::start(&self.config, &self.sink, &self.totals)
            .map_err(|e| format!("legacy launcher could not be restarted: {e}"))?;
        Ok(slot.current.insert(worker))
    }
}

impl BackendImpl for LegacyBackend {
    fn capabilities(&self) -> Capabilities {
        abi_map::capabilities()
    }

    fn submit(&self, jobs: &[JobSpec]) -> Vec<SubmitAnswer> {
        let mut slot = self.slot.lock();
        let mut out: Vec<Option<SubmitAnswer>> = jobs
            .iter()
            .map(|j| {
                if slot.closed {
                    Some(abi_map::rejected(j, "the legacy backend has shut down"))
                } else if abi_map::is_interactive(j) {
                    Some(abi_map::rejected(
                        j,
                        "the legacy backend cannot run interactive jobs",
                    ))
                } else {
                    None
                }
            })
            .collect();
        let requests: Vec<LaunchRequest> = jobs
            .iter()
            .zip(&out)
            .filter(|(_, answered)| answered.is_none())
            .map(|(j, _)| abi_map::launch_request(j))
            .collect();
        if !requests.is_empty() {
            let ids: Vec<u64> = requests.iter().map(|r| r.id).collect();
            let answers = self.live_worker(&mut slot).and_then(|w| w.launch(requests));
            let mut totals = self.totals.lock();
            let mut answered = ids.iter().enumerate();
            for slot_answer in out.iter_mut().filter(|a| a.is_none()) {
                let (i, &id) = answered.next().expect("one request per unanswered job");
                let answer = match &answers {
                    Ok(got) => abi_map::submit_answer(id, &got[i]),
                    Err(why) => SubmitAnswer::rejected(JobId(id), why.clone()),
                };
                match answer.kind {
                    flowrun_plugin_api::SubmitAnswerKind::ACCEPTED => totals.accepted += 1,
                    flowrun_plugin_api::SubmitAnswerKind::BUSY => totals.busy += 1,
                    _ => totals.rejected += 1,
                }
                *slot_answer = Some(answer);
            }
        }
        out.into_iter()
            .map(|a| a.expect("every job answered"))
            .collect()
    }

    fn kill(&self, ids: &[JobId]) {
        let slot = self.slot.lock();
        if let Some(w) = slot.current.as_ref().filter(|w| !w.is_gone()) {
            w.send(&Request::Kill(ids.iter().map(|id| id.0).collect()));
        }
    }

    fn shutdown(&self) {
        let mut slot = self.slot.lock();
        slot.closed = true;
        if let Some(mut w) = slot.current.take() {
            if !w.is_gone() {
                w.link.stopping.store(true, Ordering::Release);
                w.send(&Request::Shutdown);
            }
            w.join();
        }
    }

    fn stats(&self) -> String {
        let t = self.totals.lock();
        let mut w = t.ended_workers;
        w.add(&t.current_worker);
        format!(
            "workers_started = {}\nworker_crashes = {}\nworkers_killed_as_hung = {}\naccepted = {}\nbusy = {}\nrejected = {}\nlost = {}\nticks = {}\npolls = {}\nmax_polls_in_a_tick = {}\nlaunched = {}\nlauncher_busy = {}\ndeferred = {}\nlaunch_errors = {}\npoll_errors = {}\nkills = {}\nworker_cpu_s = {:.3}\n",
            t.workers_started,
            t.worker_crashes,
            t.workers_killed_as_hung,
            t.accepted,
            t.busy,
            t.rejected,
            t.lost,
            w.ticks,
            w.polls,
            w.max_polls_in_a_tick,
            w.launched,
            w.launcher_busy,
            w.deferred,
            w.launch_errors,
            w.poll_errors,
            w.kills,
            w.cpu_us as f64 / 1e6,
        )
    }
}
