//! The worker process: where the launcher library is loaded and polled, so that its crashes
//! cannot reach flowrun.
//!
//! The backend starts it by executing flowrun's own binary (`/proc/self/exe`) with this plugin
//! library preloaded (`LD_PRELOAD`) and [`WORKER_ENV`] set to flowrun's pid. The plugin's
//! constructor (`sys::WORKER_ENTRY`) runs before the binary's `main`, sees the variable, and
//! turns the process into a worker for good: nothing of flowrun itself runs, and nothing
//! beyond the one plugin file needs installing. (When the crate is linked into a test binary,
//! that binary is executed instead, and no preload is needed.)
//!
//! Two processes result:
//! - the **guardian** (the process flowrun started): a child subreaper that does nothing but
//!   wait. When the worker ends, however it ends, it kills every process the worker left
//!   behind (the launcher's local jobs of a crashed worker reparent to it), then ends the way
//!   the worker did (same exit code or same signal), which is how the backend learns that the
//!   launcher crashed with SIGSEGV. When flowrun dies (its end of the lifeline closes) it
//!   gives the worker [`HOST_GONE_GRACE`] to kill its jobs through the launcher, then kills
//!   it. A byte [`KILL_NOW`] on the lifeline kills the worker at once (a hung launcher).
//! - the **worker**: loads the launcher, answers the backend's requests and runs the poller
//!   ([`crate::engine`]), over the socket on descriptor [`SOCKET_FD`].

use std::{
    collections::HashSet,
    ffi::CStr,
    io::{ErrorKind, Read},
    os::{
        fd::{AsFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    time::{Duration, Instant},
};

use crate::{
    engine::{Engine, Pacing},
    protocol::{FrameBuffer, Reply, Request, WorkerStats},
    sys::{self, launcher_abi::LauncherLibrary, ChildEnd, Forked},
};

/// Set to flowrun's pid in the environment of a process that is to become a worker.
pub const WORKER_ENV: &str = "FLOWRUN_LEGACY_WORKER";
/// The `LD_PRELOAD` flowrun had, restored in the worker for the launcher's jobs.
pub const PRELOAD_ENV: &str = "FLOWRUN_LEGACY_LD_PRELOAD";
/// The worker's socket to the backend.
pub const SOCKET_FD: RawFd = 3;
/// The guardian's lifeline from the backend.
pub const LIFELINE_FD: RawFd = 4;
/// Sent on the lifeline: kill the worker now.
pub const KILL_NOW: u8 = b'K';
/// A prefix of the worker's own messages on its stderr (the launcher's output has none).
pub const MESSAGE_PREFIX: &str = "flowrun-legacy-worker: ";

/// How long the worker may take to kill its jobs when flowrun died without a shutdown.
const HOST_GONE_GRACE: Duration = Duration::from_secs(10);
/// How long the guardian keeps killing what the worker left behind.
const CLEANUP_LIMIT: Duration = Duration::from_secs(5);
/// The longest stretch of a tick before requests are served again.
const TICK_SLICE: Duration = Duration::from_millis(1);
/// How long one launch batch may take before the rest is answered busy.
const LAUNCH_BUDGET: Duration = Duration::from_millis(50);
/// While jobs run, the worker says something at least this often (an empty tick batch), so
/// that the backend can tell a hung launcher from a quiet one.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Whether this process was started to be a worker by its parent (the variable alone is not
/// enough: a user could have it in the environment by accident).
pub fn is_worker_process() -> bool {
    std::env::var(WORKER_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|host| host == sys::parent_pid())
}

/// The worker process's life; returns its exit code (the guardian never returns).
pub fn main() -> i32 {
    // Nothing the launcher starts may inherit what made this process a worker. (Single
    // threaded here: changing the environment is sound.)
    std::env::remove_var(WORKER_ENV);
    match std::env::var_os(PRELOAD_ENV) {
        Some(p) => std::env::set_var("LD_PRELOAD", p),
        None => std::env::remove_var("LD_PRELOAD"),
    }
    std::env::remove_var(PRELOAD_ENV);
    sys::close_fds_from(LIFELINE_FD + 1);
    let (socket, lifeline) = match (
        sys::claim_inherited_fd(SOCKET_FD),
        sys::claim_inherited_fd(LIFELINE_FD),
    ) {
        (Ok(s), Ok(l)) => (s, l),
        _ => {
            eprintln!("{MESSAGE_PREFIX}started without its descriptors");
            return 2;
        }
    };
    if let Err(e) = sys::become_subreaper() {
        eprintln!("{MESSAGE_PREFIX}cannot become a subreaper: {e}");
    }
    let guardian = sys::own_pid();
    match sys::fork() {
        Ok(Forked::Child) => {
            drop(lifeline);
            let _ = sys::die_with_parent(libc::SIGKILL);
            if sys::parent_pid() != guardian as u32 {
                return 2; // the guardian died before the line above
            }
            set_name(c"legacy-worker");
            serve(socket)
        }
        Ok(Forked::Parent(worker)) => {
            drop(socket);
            set_name(c"legacy-guardian");
            guard(worker, lifeline)
        }
        Err(e) => {
            eprintln!("{MESSAGE_PREFIX}cannot fork the worker: {e}");
            2
        }
    }
}

fn set_name(name: &CStr) {
    sys::set_process_name(name);
}

// ---------------------------------------------------------------------------------------------
// The guardian
// ---------------------------------------------------------------------------------------------

fn guard(worker: i32, lifeline: OwnedFd) -> ! {
    let pidfd = sys::pidfd_open(worker).ok();
    let mut lifeline = Some(UnixStream::from(lifeline));
    let mut host_gone: Option<Instant> = None;
    let end = loop {
        match sys::reap(worker, false) {
            Ok(Some((_, end))) => break end,
            Ok(None) => {}
            Err(_) => break ChildEnd::Exited(2), // cannot happen: it is our child
        }
        if host_gone.is_some_and(|t| t.elapsed() >= HOST_GONE_GRACE) {
            sys::signal(worker, libc::SIGKILL);
            host_gone = None; // once
        }
        let mut fds = Vec::new();
        if let Some(l) = &lifeline {
            fds.push(l.as_fd());
        }
        if let Some(p) = &pidfd {
            fds.push(p.as_fd());
        }
        // Without a pidfd (old kernels), look at the worker every 50 ms.
        let timeout = match (host_gone, &pidfd) {
            (Some(t), _) => Some(HOST_GONE_GRACE.saturating_sub(t.elapsed())),
            (None, None) => Some(Duration::from_millis(50)),
            (None, Some(_)) => None,
        };
        let ready = sys::wait_readable(&fds, timeout).unwrap_or_default();
        if ready.first() == Some(&true) {
            if let Some(l) = lifeline.as_mut() {
                let mut byte = [0u8; 1];
                match l.read(&mut byte) {
                    Ok(1) if byte[0] == KILL_NOW => sys::signal(worker, libc::SIGKILL),
                    Ok(1) => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    _ => {
                        // flowrun is gone: the worker sees its socket close too, and kills
                        // its jobs through the launcher; it gets a grace period for that.
                        lifeline = None;
                        host_gone = Some(Instant::now());
                    }
                }
            }
        }
    };
    let left = kill_descendants();
    if !left.is_empty() {
        let mut named: Vec<String> = left.iter().take(5).cloned().collect();
        if left.len() > named.len() {
            named.push("...".into());
        }
        eprintln!(
            "{MESSAGE_PREFIX}killed {} process(es) the launcher left behind: {}",
            left.len(),
            named.join(", ")
        );
    }
    sys::end_like(end)
}

/// Kills every descendant of this (subreaper) process until none is left, or for
/// [`CLEANUP_LIMIT`]. Returns the processes it killed, as "PID (NAME)".
fn kill_descendants() -> Vec<String> {
    let own_group = sys::process_group_of(0);
    let deadline = Instant::now() + CLEANUP_LIMIT;
    let mut seen = HashSet::new();
    let mut killed = Vec::new();
    loop {
        loop {
            match sys::reap(-1, false) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return killed, // no children at all: nothing is left
            }
        }
        for (pid, name) in children_of(sys::own_pid()) {
            // The whole group first (a launcher's job is usually a group of its own), then
            // the process, in case it shares ours.
            if let Some(g) = sys::process_group_of(pid).filter(|&g| Some(g) != own_group) {
                sys::signal_group(g, libc::SIGKILL);
            }
            sys::signal(pid, libc::SIGKILL);
            if seen.insert(pid) {
                killed.push(format!("{pid} ({name})"));
            }
        }
        if Instant::now() >= deadline {
            return killed;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The live (not zombie) processes whose parent is `parent`, with their names, from /proc.
fn children_of(parent: i32) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "PID (NAME) STATE PPID ...": the name may hold anything, spaces and parentheses
            // too, so the fields are counted from the last ')'.
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            let mut rest = stat[close + 1..].split_whitespace();
            let state = rest.next()?;
            let ppid: i32 = rest.next()?.parse().ok()?;
            (ppid == parent && state != "Z").then(|| (pid, stat[open + 1..close].to_string()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------------------------

/// The worker's end of the socket.
struct Conn {
    stream: UnixStream,
    frames: FrameBuffer,
}

/// The backend closed its end (flowrun exited or dropped the backend), or sent garbage.
struct HostGone;

impl Conn {
    fn send(&self, reply: &Reply) -> Result<(), HostGone> {
        sys::send_all(self.stream.as_fd(), &reply.encode()).map_err(|_| HostGone)
    }

    /// The requests that arrived, waiting up to `timeout` (`None`: until some arrive).
    fn receive(&mut self, timeout: Option<Duration>) -> Result<Vec<Request>, HostGone> {
        let ready = sys::wait_readable(&[self.stream.as_fd()], timeout).map_err(|_| HostGone)?;
        let mut requests = Vec::new();
        if !ready[0] {
            return Ok(requests);
        }
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(HostGone),
                Ok(n) => self.frames.extend(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(HostGone),
            }
        }
        while let Some((kind, payload)) = self.frames.next_frame().map_err(|_| HostGone)? {
            requests.push(Request::decode(kind, &payload).map_err(|_| HostGone)?);
        }
        Ok(requests)
    }
}

fn stats_of(engine: &Engine<LauncherLibrary>) -> WorkerStats {
    WorkerStats {
        cpu_us: sys::own_cpu_us(),
        ..engine.stats()
    }
}

fn serve(socket: OwnedFd) -> i32 {
    let stream = UnixStream::from(socket);
    if stream.set_nonblocking(true).is_err() {
        return 2;
    }
    let mut conn = Conn {
        stream,
        frames: FrameBuffer::default(),
    };
    let open = loop {
        match conn.receive(None) {
            Ok(mut r) if !r.is_empty() => match r.remove(0) {
                Request::Open(open) => break open,
                _ => return 2,
            },
            Ok(_) => {}
            Err(HostGone) => return 0,
        }
    };
    let library = match LauncherLibrary::load(&open.library, &open.options) {
        Ok(l) => l,
        Err(why) => {
            let _ = conn.send(&Reply::OpenFailed(why));
            return 3;
        }
    };
    if conn
        .send(&Reply::Ready {
            pid: std::process::id(),
        })
        .is_err()
    {
        library.close();
        return 0;
    }
    let max_polls = match open.max_polls_per_interval {
        0 => usize::MAX,
        n => n as usize,
    };
    let mut engine = Engine::new(
        library,
        Pacing {
            interval: open.poll_interval,
            max_polls,
            launch_budget: LAUNCH_BUDGET,
        },
    );
    let result = serve_requests(&mut conn, &mut engine);
    if result.is_err() {
        // flowrun is gone: kill through the launcher what still runs (a cluster's jobs too).
        engine.kill_all();
    }
    engine.into_launcher().close();
    0
}

/// Serves requests and runs ticks until a shutdown (`Ok`) or until flowrun goes away.
fn serve_requests(conn: &mut Conn, engine: &mut Engine<LauncherLibrary>) -> Result<(), HostGone> {
    let clock = Instant::now;
    let mut last_sent = Instant::now();
    loop {
        let now = Instant::now();
        let mut wait = engine.due().map(|due| due.saturating_duration_since(now));
        if engine.live() > 0 {
            let beat = HEARTBEAT.saturating_sub(last_sent.elapsed());
            wait = Some(wait.map_or(beat, |w| w.min(beat)));
        }
        for request in conn.receive(wait)? {
            match request {
                Request::Launch(jobs) => {
                    conn.send(&Reply::Answers(engine.launch(&jobs, &clock)))?;
                }
                Request::Kill(ids) => {
                    let ended = engine.kill(&ids);
                    conn.send(&Reply::Killed(ended, stats_of(engine)))?;
                }
                Request::Shutdown => {
                    let ended = engine.kill_all();
                    conn.send(&Reply::Killed(ended, stats_of(engine)))?;
                    return Ok(());
                }
                Request::Open(_) => {} // only the first request opens
            }
            last_sent = Instant::now();
        }
        let now = Instant::now();
        if engine.due().is_some_and(|due| due <= now) {
            // One batch per tick; a tick that saw nothing end says nothing, unless a
            // heartbeat is due (also in the middle of a long tick).
            let ended = engine.run(now, TICK_SLICE, &clock);
            let beat = last_sent.elapsed() >= HEARTBEAT;
            if ended.as_ref().is_some_and(|e| !e.is_empty()) || beat {
                conn.send(&Reply::Ticked(ended.unwrap_or_default(), stats_of(engine)))?;
                last_sent = Instant::now();
            }
        } else if engine.live() > 0 && last_sent.elapsed() >= HEARTBEAT {
            conn.send(&Reply::Ticked(Vec::new(), stats_of(engine)))?;
            last_sent = Instant::now();
        }
    }
}
