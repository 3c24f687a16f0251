//! The journal's records: what each one holds and its encoding. Encoders take borrowed data
//! (the run loop writes them for every job, so they allocate nothing); the decoder returns an
//! owned [`Record`]. Both sides of every record are in this file, and the tests round-trip each.
//!
//! Times are microseconds since the epoch, written as the distance from the time written
//! before them in the frame (the first from the segment's start, [`RunStart::started_us`]),
//! job indices as the distance from the one before: a byte or two each; 0 ("never") stays 0.

use std::{path::PathBuf, sync::Arc};

use super::codec::{Get, Malformed, Put};
use crate::{
    backend::Usage,
    outcome::FailMatch,
    run::records::{Attempt, Extra, JobRecord},
    sched::{DependencyEnd, Interrupt, Reason, Status},
};

const RUN_START: u8 = 1;
const JOBS: u8 = 2;
const QUEUED: u8 = 3;
const SUBMITTED: u8 = 4;
const REQUEUED: u8 = 5;
const STARTED: u8 = 6;
const NATIVE_ID: u8 = 7;
const ENDED: u8 = 8;
const ATTEMPT_ENDED: u8 = 9;
const RUN_END: u8 = 10;
const NOTE: u8 = 11;

/// How a segment of the journal came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new run.
    New,
    /// `--resume`: the run continues in place.
    Resume,
}

/// A backend instance, as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// The instance's name.
    pub name: String,
    /// Its plugin kind.
    pub kind: String,
}

/// The start of a segment: a host process began (or resumed) the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// 0 for the run's first host, then one more per `--resume`.
    pub segment: u32,
    /// New or resumed.
    pub mode: Mode,
    /// µs since the epoch.
    pub started_us: i64,
    /// The process that loads the plugins and drives the run.
    pub pid: u32,
    /// Its supervising parent, or 0 when there is none.
    pub supervisor_pid: u32,
    /// The flow's name.
    pub flow: String,
    /// The root flow file.
    pub flow_file: String,
    /// The run directory.
    pub run_dir: String,
    /// The run's tag (cluster jobs carry it as their name).
    pub run_tag: String,
    /// A hash of every job's definition hash and name, in order: the flow's identity.
    pub flow_hash: [u8; 16],
    /// How many jobs the segment's job table has.
    pub jobs: u32,
    /// The backend instances, by index.
    pub backends: Vec<BackendInfo>,
}

/// One entry of the job table: name, definition hash, backend instance.
pub type JobEntry = (String, [u8; 16], u32);

/// A decoded record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A segment starts.
    RunStart(RunStart),
    /// Part of the job table: jobs `first..first + entries.len()`.
    Jobs {
        /// The first job's index.
        first: u32,
        /// The jobs.
        entries: Vec<JobEntry>,
    },
    /// The job became ready.
    Queued {
        /// The job.
        job: u32,
        /// When.
        t: i64,
    },
    /// The job was handed to its backend (attempt `attempt`).
    Submitted {
        /// The job.
        job: u32,
        /// Which attempt.
        attempt: u32,
        /// When.
        t: i64,
    },
    /// The backend was busy: the job is queued again (the submission did not happen).
    Requeued {
        /// The job.
        job: u32,
    },
    /// The backend reported the job's start.
    Started {
        /// The job.
        job: u32,
        /// When.
        t: i64,
    },
    /// The backend named the job's native id (a cluster job id).
    NativeId {
        /// The job.
        job: u32,
        /// The id.
        id: String,
    },
    /// The job ended for good.
    Ended {
        /// The job.
        job: u32,
        /// Its final status.
        status: Status,
        /// Why it did not pass.
        reason: Option<Reason>,
        /// Everything recorded of it.
        record: JobRecord,
    },
    /// An attempt ended and the job will run again (a retry).
    AttemptEnded {
        /// The job.
        job: u32,
        /// The attempt that ended.
        attempt: Attempt,
    },
    /// The segment ended: the host finished the run.
    RunEnd {
        /// When.
        t: i64,
        /// The interrupt, if there was one.
        interrupted: Option<Interrupt>,
    },
    /// A line of text for the record (what the supervisor saw of a crash).
    Note {
        /// The text.
        text: String,
    },
}

/// Encodes records into a frame, relative to the segment's start time.
pub struct Encoder {
    base_us: i64,
    deltas: Deltas,
}

/// The running state of a frame's compact numbers, the same on both sides: a time is written
/// as its distance from the time written before it in the frame (the first from the segment's
/// start), a job index as its distance from the one before (the first from job 0). Records
/// of the same moment and of neighbouring jobs then take a byte or two where absolute values
/// took three or four, and a million-job journal shrinks by a third. Every frame starts
/// afresh (both sides call `frame_start`), so that a frame can be read knowing only its
/// segment's start: the supervisor appends to a dead worker's segment this way.
#[derive(Debug, Clone, Copy)]
struct Deltas {
    prev_t: i64,
    prev_job: u32,
}

impl Deltas {
    fn new(base_us: i64) -> Self {
        Deltas {
            prev_t: base_us,
            prev_job: 0,
        }
    }

    /// 0 ("never") stays 0 and leaves the running time alone; others are zigzag + 1.
    fn put_time(&mut self, b: &mut Vec<u8>, t: i64) {
        if t == 0 {
            b.put_u64(0);
        } else {
            let d = t.wrapping_sub(self.prev_t);
            b.put_u64((((d << 1) ^ (d >> 63)) as u64).wrapping_add(1));
            self.prev_t = t;
        }
    }

    fn get_time(&mut self, g: &mut Get<'_>) -> Result<i64, Malformed> {
        match g.u64()? {
            0 => Ok(0),
            u => {
                let u = u - 1;
                let d = ((u >> 1) as i64) ^ -((u & 1) as i64);
                self.prev_t = self.prev_t.wrapping_add(d);
                Ok(self.prev_t)
            }
        }
    }

    fn put_job(&mut self, b: &mut Vec<u8>, job: u32) {
        b.put_i64(i64::from(job) - i64::from(self.prev_job));
        self.prev_job = job;
    }

    fn get_job(&mut self, g: &mut Get<'_>) -> Result<u32, Malformed> {
        let job = u32::try_from(i64::from(self.prev_job) + g.i64()?)
            .map_err(|_| Malformed("job index out of range"))?;
        self.prev_job = job;
        Ok(job)
    }
}

fn status_code(s: Status) -> u8 {
    s.index() as u8
}

fn status_from(code: u8) -> Result<Status, Malformed> {
    Status::ALL
        .get(code as usize)
        .copied()
        .ok_or(Malformed("unknown status"))
}

fn interrupt_code(i: Interrupt) -> u8 {
    match i {
        Interrupt::Sigint => 0,
        Interrupt::Sigterm => 1,
        Interrupt::Sighup => 2,
    }
}

fn interrupt_from(code: u8) -> Result<Interrupt, Malformed> {
    match code {
        0 => Ok(Interrupt::Sigint),
        1 => Ok(Interrupt::Sigterm),
        2 => Ok(Interrupt::Sighup),
        _ => Err(Malformed("unknown interrupt")),
    }
}

fn put_reason(b: &mut Vec<u8>, r: &Reason) {
    match r {
        Reason::ExitCode(c) => {
            b.put_u8(1);
            b.put_i64((*c).into());
        }
        Reason::Signal { signal, shell_exit } => {
            b.put_u8(2);
            b.put_i64((*signal).into());
            match shell_exit {
                None => b.put_u8(0),
                Some(c) => {
                    b.put_u8(1);
                    b.put_i64((*c).into());
                }
            }
        }
        Reason::FailPattern { line, text } => {
            b.put_u8(3);
            b.put_u64(*line);
            b.put_str(text);
        }
        Reason::PassMissing { pattern } => {
            b.put_u8(4);
            b.put_str(pattern);
        }
        Reason::LogUnreadable(why) => {
            b.put_u8(5);
            b.put_str(why);
        }
        Reason::Backend(text) => {
            b.put_u8(6);
            b.put_str(text);
        }
        Reason::Timeout(text) => {
            b.put_u8(7);
            b.put_str(text);
        }
        Reason::Dependency { ended, job } => {
            b.put_u8(8);
            b.put_u8(match ended {
                DependencyEnd::Failed => 0,
                DependencyEnd::Killed => 1,
                DependencyEnd::Skipped => 2,
            });
            b.put_str(job);
        }
        Reason::NoDependencyPassed(names) => {
            b.put_u8(9);
            b.put_str(names);
        }
        Reason::InterruptedRunning(i) => {
            b.put_u8(10);
            b.put_u8(interrupt_code(*i));
        }
        Reason::InterruptedQueued(i) => {
            b.put_u8(11);
            b.put_u8(interrupt_code(*i));
        }
        Reason::InterruptedWaiting(i) => {
            b.put_u8(12);
            b.put_u8(interrupt_code(*i));
        }
        Reason::Rejected { backend, error } => {
            b.put_u8(13);
            b.put_str(backend);
            b.put_str(error);
        }
        Reason::Lost { backend, why } => {
            b.put_u8(14);
            b.put_str(backend);
            b.put_str(why);
        }
        Reason::KillUnconfirmed {
            backend,
            waited,
            kill,
        } => {
            b.put_u8(15);
            b.put_str(backend);
            b.put_u64(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX));
            put_reason(b, kill);
        }
        Reason::Killed(text) => {
            b.put_u8(16);
            b.put_str(text);
        }
        Reason::Stopped(n) => {
            b.put_u8(17);
            b.put_u64((*n).into());
        }
        Reason::Crashed(text) => {
            b.put_u8(18);
            b.put_str(text);
        }
    }
}

fn get_i32(g: &mut Get<'_>) -> Result<i32, Malformed> {
    i32::try_from(g.i64()?).map_err(|_| Malformed("i32 out of range"))
}

fn get_reason(g: &mut Get<'_>, depth: u32) -> Result<Reason, Malformed> {
    if depth > 4 {
        return Err(Malformed("reason nested too deep"));
    }
    let s = |g: &mut Get<'_>| g.str().map(Box::<str>::from);
    Ok(match g.u8()? {
        1 => Reason::ExitCode(get_i32(g)?),
        2 => {
            let signal = get_i32(g)?;
            let shell_exit = match g.u8()? {
                0 => None,
                _ => Some(get_i32(g)?),
            };
            Reason::Signal { signal, shell_exit }
        }
        3 => Reason::FailPattern {
            line: g.u64()?,
            text: s(g)?,
        },
        4 => Reason::PassMissing { pattern: s(g)? },
        5 => Reason::LogUnreadable(s(g)?),
        6 => Reason::Backend(s(g)?),
        7 => Reason::Timeout(s(g)?),
        8 => {
            let ended = match g.u8()? {
                0 => DependencyEnd::Failed,
                1 => DependencyEnd::Killed,
                _ => DependencyEnd::Skipped,
            };
            Reason::Dependency { ended, job: s(g)? }
        }
        9 => Reason::NoDependencyPassed(s(g)?),
        10 => Reason::InterruptedRunning(interrupt_from(g.u8()?)?),
        11 => Reason::InterruptedQueued(interrupt_from(g.u8()?)?),
        12 => Reason::InterruptedWaiting(interrupt_from(g.u8()?)?),
        13 => Reason::Rejected {
            backend: s(g)?,
            error: s(g)?,
        },
        14 => Reason::Lost {
            backend: s(g)?,
            why: s(g)?,
        },
        15 => Reason::KillUnconfirmed {
            backend: s(g)?,
            waited: std::time::Duration::from_micros(g.u64()?),
            kill: Box::new(get_reason(g, depth + 1)?),
        },
        16 => Reason::Killed(s(g)?),
        17 => Reason::Stopped(g.u32()?),
        18 => Reason::Crashed(s(g)?),
        _ => return Err(Malformed("unknown reason")),
    })
}

fn put_opt_reason(b: &mut Vec<u8>, r: Option<&Reason>) {
    match r {
        None => b.put_u8(0),
        Some(r) => put_reason(b, r),
    }
}

fn get_opt_reason(g: &mut Get<'_>) -> Result<Option<Reason>, Malformed> {
    // A reason's tag is never 0, which stands for "no reason".
    if g.peek()? == 0 {
        g.u8()?;
        return Ok(None);
    }
    get_reason(g, 0).map(Some)
}

const HAS_DIR: u8 = 1;
const HAS_EXIT: u8 = 2;
const HAS_EXTRA: u8 = 4;

fn put_record(b: &mut Vec<u8>, d: &mut Deltas, r: &JobRecord) {
    let mut flags = 0;
    if r.has_dir {
        flags |= HAS_DIR;
    }
    if r.exit_code.is_some() {
        flags |= HAS_EXIT;
    }
    if r.extra.is_some() {
        flags |= HAS_EXTRA;
    }
    b.put_u8(flags);
    d.put_time(b, r.queued_at);
    d.put_time(b, r.started_at);
    d.put_time(b, r.finished_at);
    b.put_u64(r.attempt.into());
    if let Some(c) = r.exit_code {
        b.put_i64(c.into());
    }
    if let Some(x) = &r.extra {
        put_extra(b, d, x);
    }
}

fn put_extra(b: &mut Vec<u8>, d: &mut Deltas, x: &Extra) {
    match &x.fail {
        None => b.put_u8(0),
        Some(f) => {
            b.put_u8(1);
            b.put_u64(f.line);
            b.put_str(&f.text);
            b.put_u64(f.context.len() as u64);
            for c in &f.context {
                b.put_str(c);
            }
        }
    }
    b.put_u64(x.logs.len() as u64);
    for l in &x.logs {
        b.put_str(&l.to_string_lossy());
    }
    b.put_opt_str(x.native_id.as_deref());
    b.put_opt_f64(x.usage.cpu_s);
    b.put_opt_f64(x.usage.max_rss_mb);
    b.put_opt_str(x.usage.source.as_deref());
    b.put_opt_str(x.detail.as_deref());
    b.put_u64(x.earlier.len() as u64);
    for a in &x.earlier {
        put_attempt(b, d, a);
    }
    b.put_opt_str(x.reused_from.as_deref());
}

fn put_attempt(b: &mut Vec<u8>, d: &mut Deltas, a: &Attempt) {
    b.put_u8(status_code(a.status));
    put_opt_reason(b, a.reason.as_ref());
    put_record(b, d, &a.record);
}

fn get_record(g: &mut Get<'_>, d: &mut Deltas, depth: u32) -> Result<JobRecord, Malformed> {
    let flags = g.u8()?;
    let queued_at = d.get_time(g)?;
    let started_at = d.get_time(g)?;
    let finished_at = d.get_time(g)?;
    let attempt = g.u32()?;
    let exit_code = if flags & HAS_EXIT != 0 {
        Some(get_i32(g)?)
    } else {
        None
    };
    let extra = if flags & HAS_EXTRA != 0 {
        Some(Box::new(get_extra(g, d, depth)?))
    } else {
        None
    };
    Ok(JobRecord {
        queued_at,
        started_at,
        finished_at,
        exit_code,
        attempt,
        has_dir: flags & HAS_DIR != 0,
        extra,
    })
}

fn get_extra(g: &mut Get<'_>, d: &mut Deltas, depth: u32) -> Result<Extra, Malformed> {
    let fail = match g.u8()? {
        0 => None,
        _ => {
            let line = g.u64()?;
            let text = g.str()?.to_string();
            let n = g.u64()?;
            let mut context = Vec::new();
            for _ in 0..n.min(64) {
                context.push(g.str()?.to_string());
            }
            Some(FailMatch {
                line,
                text,
                context,
            })
        }
    };
    let n = g.u64()?;
    let mut logs = Vec::new();
    for _ in 0..n.min(1 << 16) {
        logs.push(PathBuf::from(g.str()?));
    }
    let native_id = g.opt_str()?.map(Arc::<str>::from);
    let usage = Usage {
        cpu_s: g.opt_f64()?,
        max_rss_mb: g.opt_f64()?,
        source: g.opt_str()?.map(str::to_string),
    };
    let detail = g.opt_str()?.map(str::to_string);
    let n = g.u64()?;
    if n > 0 && depth > 0 {
        return Err(Malformed("attempts nested in an attempt"));
    }
    let mut earlier = Vec::new();
    for _ in 0..n.min(1 << 16) {
        let status = status_from(g.u8()?)?;
        let reason = get_opt_reason(g)?;
        let record = get_record(g, d, depth + 1)?;
        earlier.push(Attempt {
            status,
            reason,
            record,
        });
    }
    let reused_from = g.opt_str()?.map(Box::<str>::from);
    Ok(Extra {
        fail,
        logs,
        native_id,
        usage,
        detail,
        earlier,
        reused_from,
    })
}

impl Encoder {
    /// An encoder for a segment that started at `base_us`.
    pub fn new(base_us: i64) -> Self {
        Encoder {
            base_us,
            deltas: Deltas::new(base_us),
        }
    }

    /// A new frame starts: its numbers are written afresh (see `Deltas`).
    pub fn frame_start(&mut self) {
        self.deltas = Deltas::new(self.base_us);
    }

    /// A segment starts (its times are relative to `start.started_us`).
    pub fn run_start(&mut self, b: &mut Vec<u8>, start: &RunStart) {
        self.base_us = start.started_us;
        self.deltas = Deltas::new(start.started_us);
        b.put_u8(RUN_START);
        b.put_u64(start.segment.into());
        b.put_u8(match start.mode {
            Mode::New => 0,
            Mode::Resume => 1,
        });
        b.put_i64(start.started_us);
        b.put_u64(start.pid.into());
        b.put_u64(start.supervisor_pid.into());
        b.put_str(&start.flow);
        b.put_str(&start.flow_file);
        b.put_str(&start.run_dir);
        b.put_str(&start.run_tag);
        b.put_bytes(&start.flow_hash);
        b.put_u64(start.jobs.into());
        b.put_u64(start.backends.len() as u64);
        for be in &start.backends {
            b.put_str(&be.name);
            b.put_str(&be.kind);
        }
    }

    /// Part of the job table, from `first` on.
    pub fn jobs<'a>(
        &mut self,
        b: &mut Vec<u8>,
        first: u32,
        entries: impl ExactSizeIterator<Item = (&'a str, &'a [u8; 16], u32)>,
    ) {
        b.put_u8(JOBS);
        b.put_u64(first.into());
        b.put_u64(entries.len() as u64);
        // A name is written as how many bytes it shares with the name before it, then the
        // rest: a matrix's names differ in their last characters only.
        let mut prev = "";
        for (name, hash, backend) in entries {
            let mut shared = prev
                .bytes()
                .zip(name.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            while !name.is_char_boundary(shared) {
                shared -= 1;
            }
            b.put_u64(shared as u64);
            b.put_str(&name[shared..]);
            b.put_bytes(hash);
            b.put_u64(backend.into());
            prev = name;
        }
    }

    /// The job became ready.
    #[inline]
    pub fn queued(&mut self, b: &mut Vec<u8>, job: u32, t: i64) {
        b.put_u8(QUEUED);
        self.deltas.put_job(b, job);
        self.deltas.put_time(b, t);
    }

    /// The job was handed to its backend.
    #[inline]
    pub fn submitted(&mut self, b: &mut Vec<u8>, job: u32, attempt: u32, t: i64) {
        b.put_u8(SUBMITTED);
        self.deltas.put_job(b, job);
        b.put_u64(attempt.into());
        self.deltas.put_time(b, t);
    }

    /// The backend was busy.
    #[inline]
    pub fn requeued(&mut self, b: &mut Vec<u8>, job: u32) {
        b.put_u8(REQUEUED);
        self.deltas.put_job(b, job);
    }

    /// The backend started the job.
    #[inline]
    pub fn started(&mut self, b: &mut Vec<u8>, job: u32, t: i64) {
        b.put_u8(STARTED);
        self.deltas.put_job(b, job);
        self.deltas.put_time(b, t);
    }

    /// The job's native id.
    pub fn native_id(&mut self, b: &mut Vec<u8>, job: u32, id: &str) {
        b.put_u8(NATIVE_ID);
        self.deltas.put_job(b, job);
        b.put_str(id);
    }

    /// The job ended for good.
    #[inline]
    pub fn ended(
        &mut self,
        b: &mut Vec<u8>,
        job: u32,
        status: Status,
        reason: Option<&Reason>,
        record: &JobRecord,
    ) {
        b.put_u8(ENDED);
        self.deltas.put_job(b, job);
        b.put_u8(status_code(status));
        put_opt_reason(b, reason);
        put_record(b, &mut self.deltas, record);
    }

    /// An attempt ended; the job runs again.
    pub fn attempt_ended(&mut self, b: &mut Vec<u8>, job: u32, attempt: &Attempt) {
        b.put_u8(ATTEMPT_ENDED);
        self.deltas.put_job(b, job);
        put_attempt(b, &mut self.deltas, attempt);
    }

    /// The segment ended.
    pub fn run_end(&mut self, b: &mut Vec<u8>, t: i64, interrupted: Option<Interrupt>) {
        b.put_u8(RUN_END);
        self.deltas.put_time(b, t);
        match interrupted {
            None => b.put_u8(0),
            Some(i) => b.put_u8(1 + interrupt_code(i)),
        }
    }

    /// A note.
    pub fn note(&mut self, b: &mut Vec<u8>, text: &str) {
        b.put_u8(NOTE);
        b.put_str(text);
    }
}

/// Decodes the records of frames in order; keeps the segment's start time between them.
#[derive(Debug, Clone)]
pub struct Decoder {
    base_us: i64,
    deltas: Deltas,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder at the start of a journal.
    pub fn new() -> Self {
        Decoder {
            base_us: 0,
            deltas: Deltas::new(0),
        }
    }

    /// Decodes every record of one frame's payload.
    pub fn frame(&mut self, payload: &[u8], out: &mut Vec<Record>) -> Result<(), Malformed> {
        let mut g = Get::new(payload);
        self.deltas = Deltas::new(self.base_us);
        while !g.is_empty() {
            out.push(self.record(&mut g)?);
        }
        Ok(())
    }

    fn record(&mut self, g: &mut Get<'_>) -> Result<Record, Malformed> {
        let d = &mut self.deltas;
        Ok(match g.u8()? {
            RUN_START => {
                let segment = g.u32()?;
                let mode = match g.u8()? {
                    0 => Mode::New,
                    _ => Mode::Resume,
                };
                let started_us = g.i64()?;
                let pid = g.u32()?;
                let supervisor_pid = g.u32()?;
                let flow = g.str()?.to_string();
                let flow_file = g.str()?.to_string();
                let run_dir = g.str()?.to_string();
                let run_tag = g.str()?.to_string();
                let flow_hash = g.array()?;
                let jobs = g.u32()?;
                let n = g.u64()?;
                let mut backends = Vec::new();
                for _ in 0..n.min(1 << 16) {
                    backends.push(BackendInfo {
                        name: g.str()?.to_string(),
                        kind: g.str()?.to_string(),
                    });
                }
                self.base_us = started_us;
                self.deltas = Deltas::new(started_us);
                Record::RunStart(RunStart {
                    segment,
                    mode,
                    started_us,
                    pid,
                    supervisor_pid,
                    flow,
                    flow_file,
                    run_dir,
                    run_tag,
                    flow_hash,
                    jobs,
                    backends,
                })
            }
            JOBS => {
                let first = g.u32()?;
                let n = g.u64()?;
                let mut entries: Vec<JobEntry> = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    let shared = g.u64()?;
                    let prev = entries.last().map_or("", |e| e.0.as_str());
                    let head = usize::try_from(shared)
                        .ok()
                        .and_then(|k| prev.get(..k))
                        .ok_or(Malformed("a job name shares more than the name before it"))?;
                    let tail = g.str()?;
                    let mut name = String::with_capacity(head.len() + tail.len());
                    name.push_str(head);
                    name.push_str(tail);
                    let hash = g.array()?;
                    let backend = g.u32()?;
                    entries.push((name, hash, backend));
                }
                Record::Jobs { first, entries }
            }
            QUEUED => Record::Queued {
                job: d.get_job(g)?,
                t: d.get_time(g)?,
            },
            SUBMITTED => Record::Submitted {
                job: d.get_job(g)?,
                attempt: g.u32()?,
                t: d.get_time(g)?,
            },
            REQUEUED => Record::Requeued { job: d.get_job(g)? },
            STARTED => Record::Started {
                job: d.get_job(g)?,
                t: d.get_time(g)?,
            },
            NATIVE_ID => Record::NativeId {
                job: d.get_job(g)?,
                id: g.str()?.to_string(),
            },
            ENDED => {
                let job = d.get_job(g)?;
                let status = status_from(g.u8()?)?;
                let reason = get_opt_reason(g)?;
                let record = get_record(g, d, 0)?;
                Record::Ended {
                    job,
                    status,
                    reason,
                    record,
                }
            }
            ATTEMPT_ENDED => {
                let job = d.get_job(g)?;
                let status = status_from(g.u8()?)?;
                let reason = get_opt_reason(g)?;
                let record = get_record(g, d, 1)?;
                Record::AttemptEnded {
                    job,
                    attempt: Attempt {
                        status,
                        reason,
                        record,
                    },
                }
            }
            RUN_END => {
                let t = d.get_time(g)?;
                let interrupted = match g.u8()? {
                    0 => None,
                    c => Some(interrupt_from(c - 1)?),
                };
                Record::RunEnd { t, interrupted }
            }
            NOTE => Record::Note {
                text: g.str()?.to_string(),
            },
            _ => return Err(Malformed("unknown record")),
        })
    }
}
