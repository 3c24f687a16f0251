//! Reading a journal back: the state of every job as its records left it. Used by the
//! supervisor after a crash (results.json from the journal), by `--resume` and
//! `--rerun-failed` (what ran and what passed), and by `flowrun status` (read only, following a
//! live run as its journal grows).

use std::{
    io::{Read, Seek, SeekFrom},
    path::Path,
};

use super::{
    codec::{self, Tail, FILE_HEADER_LEN, MAGIC, VERSION},
    record::{Decoder, JobEntry, Mode, Record, RunStart},
};
use crate::{
    run::records::JobRecord,
    sched::{Interrupt, Reason, Status},
};

/// One job as the journal knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobState {
    /// Scheduled, queued, running or final.
    pub status: Status,
    /// Why it did not pass (final statuses only).
    pub reason: Option<Box<Reason>>,
    /// Everything recorded of it (times, attempt, exit code, native id, earlier attempts).
    pub record: JobRecord,
    /// Its backend reported its start (for a running job).
    pub started: bool,
}

impl Default for JobState {
    fn default() -> Self {
        JobState {
            status: Status::Scheduled,
            reason: None,
            record: JobRecord::default(),
            started: false,
        }
    }
}

/// A journal read back.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The first segment's start (the run's start).
    pub first: RunStart,
    /// The last segment's start: the host that ran (or runs) the run last.
    pub last: RunStart,
    /// How many segments: 1 for a run never resumed, 0 before any was read.
    pub segments: u32,
    /// The last segment's job table.
    pub jobs: Vec<JobEntry>,
    /// Per job of that table.
    pub state: Vec<JobState>,
    /// The last segment's end, when its host finished the run: (when, interrupted by).
    pub end: Option<(i64, Option<Interrupt>)>,
    /// Notes (what the supervisor saw of a crash), of the last segment.
    pub notes: Vec<String>,
    /// Where the readable part ends.
    pub tail: Tail,
    /// The readable part's length in bytes (a resumed host appends from here).
    pub valid_len: u64,
    /// A frame that passed its checksum but could not be decoded (a newer flowrun's journal):
    /// the reading stopped before it.
    pub malformed: Option<String>,
    decoder: Decoder,
}

fn empty_start() -> RunStart {
    RunStart {
        segment: 0,
        mode: Mode::New,
        started_us: 0,
        pid: 0,
        supervisor_pid: 0,
        flow: String::new(),
        flow_file: String::new(),
        run_dir: String::new(),
        run_tag: String::new(),
        flow_hash: [0; 16],
        jobs: 0,
        backends: Vec::new(),
    }
}

fn not_a_journal(path: &Path, why: impl std::fmt::Display) -> String {
    format!("{}: not a flowrun journal: {why}", path.display())
}

fn io_error(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

impl Replay {
    fn empty() -> Replay {
        Replay {
            first: empty_start(),
            last: empty_start(),
            segments: 0,
            jobs: Vec::new(),
            state: Vec::new(),
            end: None,
            notes: Vec::new(),
            tail: Tail::Clean,
            valid_len: 0,
            malformed: None,
            decoder: Decoder::new(),
        }
    }

    /// Reads the journal at `path`.
    pub fn read(path: &Path) -> Result<Replay, String> {
        let mut r = Replay::empty();
        r.follow(path)?;
        if r.segments == 0 {
            return Err(not_a_journal(path, "it holds no run"));
        }
        Ok(r)
    }

    /// Reads what was appended since the last read (a live run's progress); reads the journal
    /// anew when it shrank (a resumed host cut a torn tail).
    pub fn follow(&mut self, path: &Path) -> Result<(), String> {
        let mut file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        let len = file.metadata().map_err(|e| io_error(path, e))?.len();
        if len < self.valid_len {
            *self = Replay::empty();
        }
        if self.valid_len == 0 {
            let mut header = [0u8; FILE_HEADER_LEN];
            file.read_exact(&mut header)
                .map_err(|_| not_a_journal(path, "no journal header"))?;
            if &header[..8] != MAGIC {
                return Err(not_a_journal(path, "no journal header"));
            }
            let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
            if version != VERSION {
                return Err(not_a_journal(
                    path,
                    format!("format version {version}; this flowrun reads version {VERSION}"),
                ));
            }
            self.valid_len = FILE_HEADER_LEN as u64;
        }
        if len == self.valid_len || self.malformed.is_some() {
            return Ok(());
        }
        file.seek(SeekFrom::Start(self.valid_len))
            .map_err(|e| io_error(path, e))?;
        let mut body = Vec::with_capacity((len - self.valid_len) as usize);
        file.read_to_end(&mut body).map_err(|e| io_error(path, e))?;
        let (frames, tail) = codec::frames(&body, self.valid_len);
        let mut records = Vec::new();
        for (payload, end) in frames {
            records.clear();
            if let Err(m) = self.decoder.frame(payload, &mut records) {
                self.malformed = Some(format!(
                    "{}: a record at byte {} cannot be read ({}); what comes before it counts",
                    path.display(),
                    self.valid_len,
                    m.0
                ));
                self.tail = Tail::Torn {
                    at: self.valid_len,
                    bytes: len - self.valid_len,
                };
                return Ok(());
            }
            for r in records.drain(..) {
                self.apply(r);
            }
            self.valid_len = end;
        }
        self.tail = tail;
        Ok(())
    }

    fn job(&mut self, job: u32) -> Option<&mut JobState> {
        self.state.get_mut(job as usize)
    }

    fn apply(&mut self, r: Record) {
        match r {
            Record::RunStart(start) => {
                if self.segments == 0 {
                    self.first = start.clone();
                }
                self.segments += 1;
                self.state = vec![JobState::default(); start.jobs as usize];
                self.jobs = Vec::with_capacity(start.jobs as usize);
                self.end = None;
                self.notes.clear();
                self.last = start;
            }
            Record::Jobs { first, entries } => {
                if first as usize == self.jobs.len() {
                    self.jobs.extend(entries);
                }
            }
            Record::Queued { job, t } => {
                if let Some(s) = self.job(job) {
                    s.status = Status::Queued;
                    if s.record.queued_at == 0 {
                        s.record.queued_at = t;
                    }
                }
            }
            Record::Submitted { job, attempt, t } => {
                if let Some(s) = self.job(job) {
                    s.status = Status::Running;
                    s.started = false;
                    s.record.attempt = attempt;
                    s.record.started_at = t;
                    s.record.finished_at = 0;
                }
            }
            Record::Requeued { job } => {
                if let Some(s) = self.job(job) {
                    s.status = Status::Queued;
                    s.record.attempt = s.record.attempt.saturating_sub(1);
                    s.record.started_at = 0;
                }
            }
            Record::Started { job, t } => {
                if let Some(s) = self.job(job) {
                    s.started = true;
                    s.record.started_at = t;
                }
            }
            Record::NativeId { job, id } => {
                if let Some(s) = self.job(job) {
                    s.record.extra_mut().native_id = Some(id.into());
                }
            }
            Record::Ended {
                job,
                status,
                reason,
                record,
            } => {
                if let Some(s) = self.job(job) {
                    s.status = status;
                    s.reason = reason.map(Box::new);
                    s.record = record;
                    s.started = false;
                }
            }
            Record::AttemptEnded { job, attempt } => {
                if let Some(s) = self.job(job) {
                    s.record.begin_next_attempt(attempt);
                    s.status = Status::Queued;
                    s.started = false;
                }
            }
            Record::RunEnd { t, interrupted } => self.end = Some((t, interrupted)),
            Record::Note { text } => self.notes.push(text),
        }
    }

    /// Whether the last host finished the run.
    pub fn finished(&self) -> bool {
        self.end.is_some()
    }

    /// The number of jobs per status, indexed by [`Status::index`].
    pub fn counts(&self) -> [u64; 7] {
        let mut c = [0u64; 7];
        for s in &self.state {
            c[s.status.index()] += 1;
        }
        c
    }
}

impl crate::run::results::ResultsSource for Replay {
    fn flow(&self) -> &str {
        &self.first.flow
    }
    fn run_dir(&self) -> &str {
        &self.first.run_dir
    }
    fn times(&self) -> (i64, i64) {
        let end = self.end.map_or(self.last.started_us, |(t, _)| t);
        (self.first.started_us, end)
    }
    fn interrupted(&self) -> bool {
        self.end.is_some_and(|(_, i)| i.is_some())
    }
    fn len(&self) -> usize {
        self.state.len()
    }
    fn name(&self, i: usize) -> &str {
        &self.jobs[i].0
    }
    fn backend(&self, i: usize) -> &str {
        let b = self.jobs[i].2 as usize;
        self.last.backends.get(b).map_or("", |b| b.name.as_str())
    }
    fn outcome(&self, i: usize) -> (Status, Option<&Reason>) {
        let s = &self.state[i];
        (s.status, s.reason.as_deref())
    }
    fn record(&self, i: usize) -> &JobRecord {
        &self.state[i].record
    }
    fn resumes(&self) -> u32 {
        self.segments.saturating_sub(1)
    }
}
