//! What the backend (in flowrun) and its worker process say to each other over their socket,
//! and how it is framed.
//!
//! A frame is `u32 length` (little-endian, of what follows), `u8 type`, then the payload:
//! fixed-size integers little-endian, strings as `u32 length` + UTF-8 bytes, lists as
//! `u32 count` + items. Every request gets exactly one reply, in order (`Open` -> `Ready` or
//! `OpenFailed`, `Launch` -> `Answers`, `Kill` -> `Killed`); `Ticked` frames come in between,
//! one per poll tick, unasked.

use std::time::Duration;

/// No frame is larger; a larger length means the stream is corrupt.
const MAX_FRAME: usize = 256 << 20;

/// One job, as the worker needs it to call the launcher.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    /// The host's job id.
    pub id: u64,
    /// The job's name.
    pub name: String,
    /// `args` is one script for `/bin/sh -c`.
    pub shell: bool,
    /// The script, or the argv.
    pub args: Vec<String>,
    /// `NAME=VALUE` entries.
    pub env: Vec<String>,
    /// Where to run.
    pub cwd: String,
    /// The job's directory.
    pub job_dir: String,
    /// The log the worker creates empty before the launch.
    pub log_path: String,
    /// The run's directory.
    pub run_dir: String,
    /// The run's tag.
    pub run_tag: String,
    /// The time limit.
    pub timeout_ms: Option<u64>,
    /// CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
    /// Attempt, from 1.
    pub attempt: u32,
}

/// How the launcher answered one launch.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Started; with the launcher's own id of the job, if it gave one.
    Started(Option<String>),
    /// The launcher is busy (or the batch's time was up): offer the job again later.
    Busy,
    /// Refused; why.
    Failed(String),
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// Exited with this code.
    Exited(i32),
    /// Died of this signal.
    Signaled(i32),
    /// The launcher (or the adapter) judged it failed.
    Failed {
        /// Why, in full ("poll failed: ...", or the launcher's message).
        reason: String,
        /// The exit code, when there was one.
        code: Option<i32>,
    },
    /// Killed on the host's request.
    Killed,
    /// Its fate is unknown (a kill that failed).
    Lost(String),
}

/// What the launcher knew of a job's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// CPU seconds.
    pub cpu_s: Option<f64>,
    /// Peak memory in MiB.
    pub max_rss_mb: Option<f64>,
}

/// One job that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// The host's job id.
    pub id: u64,
    /// How.
    pub end: End,
    /// Resource use.
    pub usage: Usage,
}

/// The worker's counters, sent with every `Ticked` and `Killed` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerStats {
    /// Poll ticks run.
    pub ticks: u64,
    /// `poll` calls.
    pub polls: u64,
    /// The most `poll` calls one tick made.
    pub max_polls_in_a_tick: u64,
    /// `launch` calls that started a job.
    pub launched: u64,
    /// `launch` calls answered busy.
    pub launcher_busy: u64,
    /// Jobs answered busy without a `launch` call, because the batch's time was up or the
    /// launcher had just answered busy.
    pub deferred: u64,
    /// `launch` calls that failed.
    pub launch_errors: u64,
    /// `poll` calls that failed.
    pub poll_errors: u64,
    /// `kill` calls.
    pub kills: u64,
    /// The worker process's own CPU time (user + system), in microseconds; not its jobs'.
    pub cpu_us: u64,
}

impl WorkerStats {
    /// Adds `other`'s counts to these (the maximum for the per-tick maximum).
    pub fn add(&mut self, other: &WorkerStats) {
        self.ticks += other.ticks;
        self.polls += other.polls;
        self.max_polls_in_a_tick = self.max_polls_in_a_tick.max(other.max_polls_in_a_tick);
        self.launched += other.launched;
        self.launcher_busy += other.launcher_busy;
        self.deferred += other.deferred;
        self.launch_errors += other.launch_errors;
        self.poll_errors += other.poll_errors;
        self.kills += other.kills;
        self.cpu_us += other.cpu_us;
    }
}

/// What the worker needs to load the launcher and poll.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenRequest {
    /// The launcher library.
    pub library: String,
    /// Passed to `flowrun_legacy_open`.
    pub options: String,
    /// Between poll ticks.
    pub poll_interval: Duration,
    /// Polls per tick at most; 0 = no limit.
    pub max_polls_per_interval: u32,
}

/// Backend -> worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Load the launcher (the first request, once).
    Open(OpenRequest),
    /// Launch these jobs.
    Launch(Vec<LaunchRequest>),
    /// Kill these jobs.
    Kill(Vec<u64>),
    /// Kill what runs, close the launcher, exit.
    Shutdown,
}

/// Worker -> backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The launcher is loaded and open; the worker's pid.
    Ready {
        /// The worker process (not the guardian).
        pid: u32,
    },
    /// The launcher could not be loaded or opened: one line saying why.
    OpenFailed(String),
    /// One answer per job of a `Launch`, in order.
    Answers(Vec<Answer>),
    /// The jobs a `Kill` ended (possibly none).
    Killed(Vec<Ended>, WorkerStats),
    /// The jobs a poll tick saw end (possibly none: then it is a heartbeat).
    Ticked(Vec<Ended>, WorkerStats),
}

const T_OPEN: u8 = 1;
const T_LAUNCH: u8 = 2;
const T_KILL: u8 = 3;
const T_SHUTDOWN: u8 = 4;
const T_READY: u8 = 11;
const T_OPEN_FAILED: u8 = 12;
const T_ANSWERS: u8 = 13;
const T_KILLED: u8 = 14;
const T_TICKED: u8 = 15;

/// Builds one frame.
struct Frame(Vec<u8>);

impl Frame {
    fn new(kind: u8) -> Self {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&[0, 0, 0, 0, kind]);
        Frame(b)
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn strs(&mut self, v: &[String]) {
        self.len(v.len());
        for s in v {
            self.str(s);
        }
    }
    /// `u64::MAX` stands for none.
    fn opt_u64(&mut self, v: Option<u64>) {
        self.u64(v.unwrap_or(u64::MAX));
    }
    /// A negative value stands for none.
    fn opt_f64(&mut self, v: Option<f64>) {
        self.f64(v.unwrap_or(-1.0));
    }
    fn finish(mut self) -> Vec<u8> {
        let n = u32::try_from(self.0.len() - 4).unwrap_or(u32::MAX);
        self.0[..4].copy_from_slice(&n.to_le_bytes());
        self.0
    }
}

/// Reads one frame's payload; every read fails on a truncated payload.
struct Payload<'a>(&'a [u8]);

type Decoded<T> = Result<T, String>;

impl<'a> Payload<'a> {
    fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if self.0.len() < n {
            return Err("truncated frame".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Decoded<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Decoded<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Decoded<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Decoded<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i32(&mut self) -> Decoded<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Decoded<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    /// A count of items that each take at least `min_item` bytes: bounded by what is left, so
    /// that a corrupt count cannot make us allocate gigabytes.
    fn count(&mut self, min_item: usize) -> Decoded<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.0.len() {
            return Err("truncated frame".into());
        }
        Ok(n)
    }
    fn str(&mut self) -> Decoded<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }
    fn strs(&mut self) -> Decoded<Vec<String>> {
        (0..self.count(4)?).map(|_| self.str()).collect()
    }
    fn opt_u64(&mut self) -> Decoded<Option<u64>> {
        Ok(Some(self.u64()?).filter(|&v| v != u64::MAX))
    }
    fn opt_f64(&mut self) -> Decoded<Option<f64>> {
        Ok(Some(self.f64()?).filter(|&v| v >= 0.0))
    }
    fn end(&self) -> Decoded<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes in a frame".into())
        }
    }
}

impl Request {
    /// The frame for this request.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Open(o) => {
                let mut f = Frame::new(T_OPEN);
                f.str(&o.library);
                f.str(&o.options);
                f.u64(u64::try_from(o.poll_interval.as_micros()).unwrap_or(u64::MAX));
                f.u32(o.max_polls_per_interval);
                f.finish()
            }
            Request::Launch(jobs) => {
                let mut f = Frame::new(T_LAUNCH);
                f.len(jobs.len());
                for j in jobs {
                    f.u64(j.id);
                    f.str(&j.name);
                    f.u8(j.shell as u8);
                    f.strs(&j.args);
                    f.strs(&j.env);
                    for s in [&j.cwd, &j.job_dir, &j.log_path, &j.run_dir, &j.run_tag] {
                        f.str(s);
                    }
                    f.opt_u64(j.timeout_ms);
                    f.u32(j.cpus);
                    f.opt_u64(j.memory_mb);
                    f.u32(j.attempt);
                }
                f.finish()
            }
            Request::Kill(ids) => {
                let mut f = Frame::new(T_KILL);
                f.len(ids.len());
                for &id in ids {
                    f.u64(id);
                }
                f.finish()
            }
            Request::Shutdown => Frame::new(T_SHUTDOWN).finish(),
        }
    }

    /// Decodes a request frame (type and payload).
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Request, String> {
        let mut p = Payload(payload);
        let r = match kind {
            T_OPEN => Request::Open(OpenRequest {
                library: p.str()?,
                options: p.str()?,
                poll_interval: Duration::from_micros(p.u64()?),
                max_polls_per_interval: p.u32()?,
            }),
            T_LAUNCH => {
                let n = p.count(8)?;
                let mut jobs = Vec::with_capacity(n);
                for _ in 0..n {
                    jobs.push(LaunchRequest {
                        id: p.u64()?,
                        name: p.str()?,
                        shell: p.u8()? != 0,
                        args: p.strs()?,
                        env: p.strs()?,
                        cwd: p.str()?,
                        job_dir: p.str()?,
                        log_path: p.str()?,
                        run_dir: p.str()?,
                        run_tag: p.str()?,
                        timeout_ms: p.opt_u64()?,
                        cpus: p.u32()?,
                        memory_mb: p.opt_u64()?,
                        attempt: p.u32()?,
                    });
                }
                Request::Launch(jobs)
            }
            T_KILL => Request::Kill((0..p.count(8)?).map(|_| p.u64()).collect::<Decoded<_>>()?),
            T_SHUTDOWN => Request::Shutdown,
            other => return Err(format!("unknown request type {other}")),
        };
        p.end()?;
        Ok(r)
    }
}

fn encode_ended(f: &mut Frame, ended: &[Ended], stats: &WorkerStats) {
    f.len(ended.len());
    for e in ended {
        f.u64(e.id);
        match &e.end {
            End::Exited(c) => {
                f.u8(0);
                f.i32(*c);
            }
            End::Signaled(s) => {
                f.u8(1);
                f.i32(*s);
            }
            End::Failed { reason, code } => {
                f.u8(2);
                f.str(reason);
                f.u8(code.is_some() as u8);
                f.i32(code.unwrap_or(0));
            }
            End::Killed => f.u8(3),
            End::Lost(why) => {
                f.u8(4);
                f.str(why);
            }
        }
        f.opt_f64(e.usage.cpu_s);
        f.opt_f64(e.usage.max_rss_mb);
    }
    for v in [
        stats.ticks,
        stats.polls,
        stats.max_polls_in_a_tick,
        stats.launched,
        stats.launcher_busy,
        stats.deferred,
        stats.launch_errors,
        stats.poll_errors,
        stats.kills,
        stats.cpu_us,
    ] {
        f.u64(v);
    }
}

fn decode_ended(p: &mut Payload<'_>) -> Decoded<(Vec<Ended>, WorkerStats)> {
    let n = p.count(9)?;
    let mut ended = Vec::with_capacity(n);
    for _ in 0..n {
        let id = p.u64()?;
        let end = match p.u8()? {
            0 => End::Exited(p.i32()?),
            1 => End::Signaled(p.i32()?),
            2 => {
                let reason = p.str()?;
                let has_code = p.u8()? != 0;
                let code = p.i32()?;
                End::Failed {
                    reason,
                    code: has_code.then_some(code),
                }
            }
            3 => End::Killed,
            4 => End::Lost(p.str()?),
            other => return Err(format!("unknown end kind {other}")),
        };
        let usage = Usage {
            cpu_s: p.opt_f64()?,
            max_rss_mb: p.opt_f64()?,
        };
        ended.push(Ended { id, end, usage });
    }
    let stats = WorkerStats {
        ticks: p.u64()?,
        polls: p.u64()?,
        max_polls_in_a_tick: p.u64()?,
        launched: p.u64()?,
        launcher_busy: p.u64()?,
        deferred: p.u64()?,
        launch_errors: p.u64()?,
        poll_errors: p.u64()?,
        kills: p.u64()?,
        cpu_us: p.u64()?,
    };
    Ok((ended, stats))
}

impl Reply {
    /// The frame for this reply.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Ready { pid } => {
                let mut f = Frame::new(T_READY);
                f.u32(*pid);
                f.finish()
            }
            Reply::OpenFailed(why) => {
                let mut f = Frame::new(T_OPEN_FAILED);
                f.str(why);
                f.finish()
            }
            Reply::Answers(answers) => {
                let mut f = Frame::new(T_ANSWERS);
                f.len(answers.len());
                for a in answers {
                    match a {
                        Answer::Started(native) => {
                            f.u8(0);
                            f.str(native.as_deref().unwrap_or(""));
                        }
                        Answer::Busy => f.u8(1),
                        Answer::Failed(why) => {
                            f.u8(2);
                            f.str(why);
                        }
                    }
                }
                f.finish()
            }
            Reply::Killed(ended, stats) => {
                let mut f = Frame::new(T_KILLED);
                encode_ended(&mut f, ended, stats);
                f.finish()
            }
            Reply::Ticked(ended, stats) => {
                let mut f = Frame::new(T_TICKED);
                encode_ended(&mut f, ended, stats);
                f.finish()
            }
        }
    }

    /// Decodes a reply frame (type and payload).
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Reply, String> {
        let mut p = Payload(payload);
        let r = match kind {
            T_READY => Reply::Ready { pid: p.u32()? },
            T_OPEN_FAILED => Reply::OpenFailed(p.str()?),
            T_ANSWERS => {
                let n = p.count(1)?;
                let mut answers = Vec::with_capacity(n);
                for _ in 0..n {
                    answers.push(match p.u8()? {
                        0 => Answer::Started(Some(p.str()?).filter(|s| !s.is_empty())),
                        1 => Answer::Busy,
                        2 => Answer::Failed(p.str()?),
                        other => return Err(format!("unknown answer kind {other}")),
                    });
                }
                Reply::Answers(answers)
            }
            T_KILLED => {
                let (ended, stats) = decode_ended(&mut p)?;
                Reply::Killed(ended, stats)
            }
            T_TICKED => {
                let (ended, stats) = decode_ended(&mut p)?;
                Reply::Ticked(ended, stats)
            }
            other => return Err(format!("unknown reply type {other}")),
        };
        p.end()?;
        Ok(r)
    }
}

/// Bytes read from a stream, cut into frames as they complete.
#[derive(Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    /// Where the next unread frame starts in `buf`.
    start: usize,
}

impl FrameBuffer {
    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame as (type, payload), `Ok(None)` if it has not all arrived yet.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        let rest = &self.buf[self.start..];
        if rest.len() < 4 {
            return Ok(None);
        }
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if n == 0 || n > MAX_FRAME {
            return Err(format!("corrupt frame length {n}"));
        }
        if rest.len() < 4 + n {
            return Ok(None);
        }
        let frame = (rest[4], rest[5..4 + n].to_vec());
        self.start += 4 + n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > (1 << 20) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64) -> LaunchRequest {
        LaunchRequest {
            id,
            name: format!("job-{id}"),
            shell: id % 2 == 0,
            args: vec!["echo".into(), "héllo wörld".into()],
            env: vec!["A=1".into(), "B=".into()],
            cwd: "/tmp".into(),
            job_dir: "/run/jobs/x".into(),
            log_path: "/run/jobs/x/output.log".into(),
            run_dir: "/run".into(),
            run_tag: "tag".into(),
            timeout_ms: (id % 3 == 0).then_some(1500),
            cpus: 2,
            memory_mb: Some(1024),
            attempt: 1,
        }
    }

    fn round_trip_request(r: Request) {
        let bytes = r.encode();
        let mut fb = FrameBuffer::default();
        // Byte by byte: frames complete only once all of them arrived.
        for (i, b) in bytes.iter().enumerate() {
            if i + 1 < bytes.len() {
                fb.extend(std::slice::from_ref(b));
                assert_eq!(fb.next_frame().unwrap(), None);
            } else {
                fb.extend(std::slice::from_ref(b));
            }
        }
        let (kind, payload) = fb.next_frame().unwrap().expect("a whole frame");
        assert_eq!(Request::decode(kind, &payload).unwrap(), r);
        assert_eq!(fb.next_frame().unwrap(), None);
    }

    #[test]
    fn requests_survive_the_round_trip() {
        round_trip_request(Request::Open(OpenRequest {
            library: "/lib/x.so".into(),
            options: "a=1 b=2".into(),
            poll_interval: Duration::from_millis(10),
            max_polls_per_interval: 0,
        }));
        round_trip_request(Request::Launch((0..5).map(job).collect()));
        round_trip_request(Request::Kill(vec![1, u64::MAX - 1, 7]));
        round_trip_request(Request::Shutdown);
    }

    #[test]
    fn replies_survive_the_round_trip_several_to_a_buffer() {
        let stats = WorkerStats {
            ticks: 3,
            polls: 7,
            max_polls_in_a_tick: 4,
            cpu_us: 99,
            ..Default::default()
        };
        let ended = vec![
            Ended {
                id: 1,
                end: End::Exited(3),
                usage: Usage {
                    cpu_s: Some(0.25),
                    max_rss_mb: None,
                },
            },
            Ended {
                id: 2,
                end: End::Signaled(11),
                usage: Usage::default(),
            },
            Ended {
                id: 3,
                end: End::Failed {
                    reason: "poll failed: gone".into(),
                    code: None,
                },
                usage: Usage::default(),
            },
            Ended {
                id: 4,
                end: End::Failed {
                    reason: "license lost".into(),
                    code: Some(7),
                },
                usage: Usage::default(),
            },
            Ended {
                id: 5,
                end: End::Killed,
                usage: Usage::default(),
            },
            Ended {
                id: 6,
                end: End::Lost("kill failed: x".into()),
                usage: Usage::default(),
            },
        ];
        let replies = vec![
            Reply::Ready { pid: 42 },
            Reply::OpenFailed("no such file".into()),
            Reply::Answers(vec![
                Answer::Started(Some("lsf-12".into())),
                Answer::Started(None),
                Answer::Busy,
                Answer::Failed("nope".into()),
            ]),
            Reply::Killed(vec![], stats),
            Reply::Ticked(ended, stats),
        ];
        let mut fb = FrameBuffer::default();
        for r in &replies {
            fb.extend(&r.encode());
        }
        for r in &replies {
            let (kind, payload) = fb.next_frame().unwrap().unwrap();
            assert_eq!(&Reply::decode(kind, &payload).unwrap(), r);
        }
        assert_eq!(fb.next_frame().unwrap(), None);
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic_or_a_huge_allocation() {
        let mut fb = FrameBuffer::default();
        fb.extend(&u32::MAX.to_le_bytes());
        assert!(fb.next_frame().is_err());
        // A count claiming four billion jobs in a five-byte payload.
        let mut payload = u32::MAX.to_le_bytes().to_vec();
        payload.push(0);
        assert!(Request::decode(T_LAUNCH, &payload).is_err());
        assert!(Reply::decode(T_TICKED, &payload).is_err());
        assert!(Reply::decode(99, &[]).is_err());
        let mut ok = Reply::Ready { pid: 1 }.encode();
        ok.push(0);
        let n = (ok.len() - 4) as u32;
        ok[..4].copy_from_slice(&n.to_le_bytes());
        let mut fb = FrameBuffer::default();
        fb.extend(&ok);
        let (kind, payload) = fb.next_frame().unwrap().unwrap();
        assert!(Reply::decode(kind, &payload).is_err(), "trailing bytes");
    }
}
