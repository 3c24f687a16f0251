//! Appending to the journal with group commit.
//!
//! Records are encoded into one buffer, the current frame. [`Journal::flush`] writes the frame
//! with one `write` (into the page cache: it survives a crash of the process) and the run loop
//! calls it after every batch of events and before every plugin call, so that whatever a
//! plugin does to the process, what happened before the call is on its way to disk. A syncer
//! thread makes it durable (`fdatasync`, surviving a machine crash) at most every
//! [`SYNC_EVERY`], when something was written, off the loop's thread; [`Journal::finish`]
//! syncs once more at the end.
//!
//! A write that fails (a full disk) stops the journal for good, with one warning: a frame
//! that is not whole would hide every later one from a reader, so nothing follows it.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use parking_lot::{Condvar, Mutex};

use super::{
    codec::{self, FILE_HEADER_LEN, MAGIC, VERSION},
    record::{Encoder, RunStart},
};
use crate::{
    run::records::{Attempt, JobRecord},
    sched::{Interrupt, Reason, Status},
};

/// The journal's file name in the run directory.
pub const JOURNAL_FILE: &str = "journal";

/// The most time between two syncs while something is written.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);

/// A frame grows at most this large before it is written, whatever the loop does.
const MAX_PENDING: usize = 8 << 20;

/// Job-table entries per record (the table of a million jobs is about 40 MB).
const JOBS_PER_RECORD: usize = 1 << 16;

#[derive(Default)]
struct SyncState {
    dirty: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<SyncState>,
    wake: Condvar,
    syncs: AtomicU64,
}

/// What the journal did, for `flowrun -v` and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JournalStats {
    /// Frames written (one `write` each).
    pub frames: u64,
    /// Bytes written.
    pub bytes: u64,
    /// `fdatasync` calls, including the last.
    pub syncs: u64,
}

/// The journal of a run, open for appending.
pub struct Journal {
    path: PathBuf,
    file: Arc<File>,
    buf: Vec<u8>,
    enc: Encoder,
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
    error: Option<String>,
    frames: u64,
    bytes: u64,
}

fn open_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.append(true).custom_flags(libc::O_CLOEXEC);
    o
}

impl Journal {
    /// Creates `<run_dir>/journal` for a new run: the file header, the segment's start and the
    /// job table (name, definition hash, backend per job), written at once.
    pub fn create<'a>(
        run_dir: &Path,
        start: &RunStart,
        jobs: impl ExactSizeIterator<Item = (&'a str, &'a [u8; 16], u32)>,
    ) -> std::io::Result<Journal> {
        let path = run_dir.join(JOURNAL_FILE);
        // Written under another name, then linked into place: the journal appears whole, with
        // its header and job table, so `flowrun status` of a run that is just starting never
        // reads an empty file as "not a flowrun journal" (it did, in a test). The link fails
        // if a journal exists, as creating it did.
        let staging = run_dir.join(format!(".{JOURNAL_FILE}.{}.new", std::process::id()));
        let mut file = open_options().create_new(true).open(&staging)?;
        let mut header = Vec::with_capacity(FILE_HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        if let Err(e) = file.write_all(&header) {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
        let mut j = Journal::over(path.clone(), file, start.started_us);
        j.begin(start, jobs);
        let linked = match std::fs::hard_link(&staging, &path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                // A file system without hard links: a rename is as atomic, and the run
                // directory's lock already keeps any other run out.
                std::fs::rename(&staging, &path)
            }
            other => other,
        };
        let _ = std::fs::remove_file(&staging);
        linked?;
        Ok(j)
    }

    /// Opens an existing journal to continue its run (`--resume`): drops what follows its last
    /// intact frame (`valid_len`: a torn record must not hide the new ones), then starts a new
    /// segment.
    pub fn reopen<'a>(
        path: &Path,
        valid_len: u64,
        start: &RunStart,
        jobs: impl ExactSizeIterator<Item = (&'a str, &'a [u8; 16], u32)>,
    ) -> std::io::Result<Journal> {
        let file = open_options().read(true).open(path)?;
        if file.metadata()?.len() > valid_len {
            file.set_len(valid_len)?;
        }
        let mut j = Journal::over(path.to_path_buf(), file, start.started_us);
        j.begin(start, jobs);
        Ok(j)
    }

    /// Opens an existing journal to add the supervisor's closing records (after the worker
    /// died). No segment starts: the records continue the last one, whose start time is
    /// `base_us`.
    pub fn append_to(path: &Path, valid_len: u64, base_us: i64) -> std::io::Result<Journal> {
        let file = open_options().read(true).open(path)?;
        if file.metadata()?.len() > valid_len {
            file.set_len(valid_len)?;
        }
        Ok(Journal::over(path.to_path_buf(), file, base_us))
    }

    fn over(path: PathBuf, file: File, base_us: i64) -> Journal {
        let file = Arc::new(file);
        let shared = Arc::new(Shared {
            state: Mutex::new(SyncState::default()),
            wake: Condvar::new(),
            syncs: AtomicU64::new(0),
        });
        let syncer = {
            let (file, shared) = (file.clone(), shared.clone());
            std::thread::Builder::new()
                .name("journal-sync".into())
                .spawn(move || sync_loop(&file, &shared))
                .map_err(|e| {
                    tracing::warn!("journal: no syncer thread ({e}); syncing at the end only")
                })
                .ok()
        };
        let mut buf = Vec::with_capacity(1 << 16);
        codec::open_frame(&mut buf);
        Journal {
            path,
            file,
            buf,
            enc: Encoder::new(base_us),
            shared,
            syncer,
            error: None,
            frames: 0,
            bytes: 0,
        }
    }

    fn begin<'a>(
        &mut self,
        start: &RunStart,
        jobs: impl ExactSizeIterator<Item = (&'a str, &'a [u8; 16], u32)>,
    ) {
        self.enc.run_start(&mut self.buf, start);
        let mut jobs = jobs;
        let total = jobs.len();
        // About what the table takes (a name, a hash, a backend per job), so that a million
        // jobs' table is not copied over and over as the buffer grows.
        self.buf.reserve(total * 32);
        let mut first = 0;
        while first < total {
            let n = (total - first).min(JOBS_PER_RECORD);
            self.enc
                .jobs(&mut self.buf, first as u32, jobs.by_ref().take(n));
            first += n;
        }
        self.flush();
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[inline]
    fn pending(&mut self) {
        if self.buf.len() >= MAX_PENDING {
            self.flush();
        }
    }

    /// The job became ready.
    #[inline]
    pub fn queued(&mut self, job: u32, t: i64) {
        self.enc.queued(&mut self.buf, job, t);
        self.pending();
    }

    /// The job was handed to its backend.
    #[inline]
    pub fn submitted(&mut self, job: u32, attempt: u32, t: i64) {
        self.enc.submitted(&mut self.buf, job, attempt, t);
        self.pending();
    }

    /// The backend was busy: the submission did not happen.
    #[inline]
    pub fn requeued(&mut self, job: u32) {
        self.enc.requeued(&mut self.buf, job);
        self.pending();
    }

    /// The backend started the job.
    #[inline]
    pub fn started(&mut self, job: u32, t: i64) {
        self.enc.started(&mut self.buf, job, t);
        self.pending();
    }

    /// The job's native id.
    pub fn native_id(&mut self, job: u32, id: &str) {
        self.enc.native_id(&mut self.buf, job, id);
        self.pending();
    }

    /// The job ended for good.
    #[inline]
    pub fn ended(&mut self, job: u32, status: Status, reason: Option<&Reason>, rec: &JobRecord) {
        self.enc.ended(&mut self.buf, job, status, reason, rec);
        self.pending();
    }

    /// An attempt ended; the job runs again.
    pub fn attempt_ended(&mut self, job: u32, attempt: &Attempt) {
        self.enc.attempt_ended(&mut self.buf, job, attempt);
        self.pending();
    }

    /// A note for the record.
    pub fn note(&mut self, text: &str) {
        self.enc.note(&mut self.buf, text);
        self.pending();
    }

    /// The segment ended.
    pub fn run_end(&mut self, t: i64, interrupted: Option<Interrupt>) {
        self.enc.run_end(&mut self.buf, t, interrupted);
    }

    /// Writes the records so far as one frame (one `write`), if there are any.
    pub fn flush(&mut self) {
        if codec::frame_is_empty(&self.buf) {
            return;
        }
        if self.error.is_none() {
            codec::seal_frame(&mut self.buf);
            match (&*self.file).write_all(&self.buf) {
                Ok(()) => {
                    self.frames += 1;
                    self.bytes += self.buf.len() as u64;
                    let mut st = self.shared.state.lock();
                    if !st.dirty {
                        st.dirty = true;
                        self.shared.wake.notify_one();
                    }
                }
                Err(e) => {
                    let text = format!("{}: {e}", self.path.display());
                    tracing::warn!(
                        "journal: cannot write {text}; the run goes on without it (results.json is still written at the end)"
                    );
                    self.error = Some(text);
                }
            }
        }
        self.buf.clear();
        codec::open_frame(&mut self.buf);
        self.enc.frame_start();
    }

    /// Writes what is left, syncs, and closes. Returns the error that stopped the journal, if
    /// one did.
    pub fn finish(mut self) -> (JournalStats, Option<String>) {
        self.flush();
        if let Some(t) = self.syncer.take() {
            self.shared.state.lock().stop = true;
            self.shared.wake.notify_one();
            let _ = t.join();
        }
        if self.error.is_none() {
            match self.file.sync_data() {
                Ok(()) => {
                    self.shared.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.error = Some(format!("{}: {e}", self.path.display())),
            }
        }
        let stats = JournalStats {
            frames: self.frames,
            bytes: self.bytes,
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        };
        (stats, self.error.take())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Some(t) = self.syncer.take() {
            self.shared.state.lock().stop = true;
            self.shared.wake.notify_one();
            let _ = t.join();
        }
    }
}

fn sync_loop(file: &File, shared: &Shared) {
    loop {
        {
            let mut st = shared.state.lock();
            while !st.dirty && !st.stop {
                shared.wake.wait(&mut st);
            }
            if st.stop {
                return; // `finish` syncs for the last time
            }
            st.dirty = false;
        }
        if file.sync_data().is_ok() {
            shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        // At most one sync per SYNC_EVERY: what is written meanwhile waits for the next one.
        let until = Instant::now() + SYNC_EVERY;
        let mut st = shared.state.lock();
        while !st.stop && Instant::now() < until {
            shared.wake.wait_until(&mut st, until);
        }
    }
}
