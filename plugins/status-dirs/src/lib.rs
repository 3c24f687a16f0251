//! The `status-dirs` observer: `<run dir>/by-status/{running,passed,failed,killed,skipped}/JOB`
//! symbolic links to each job's directory, moved from one status directory to the next as the
//! job's status changes (DVSim's LogManager). See README.md.
//!
//! Cost: one `symlinkat` or `renameat` per status a job settles in, on directory descriptors
//! opened once (the kernel resolves one name per call), and a hash lookup per event. A job's
//! `running` link appears once it has run for [`RUNNING_LINK_DELAY`]: a shorter job is linked
//! once, straight into its final directory, which saves the rename that costs most of the
//! observer's time on ext4 (benches/observers.py).
#![forbid(unsafe_code)]

use std::{
    collections::VecDeque,
    fs::File,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use flowrun_observer_kit::{
    refuse_host_files, relative_path, resolve_in_run_dir, Contained, Ticker,
};
use flowrun_plugin_sdk::{
    run_dir::job_dir_name, ErrorKind, JobStatus, ObserverImpl, PluginError, RunEvent, RunEventKind,
    RunEvents,
};
use nix::{
    errno::Errno,
    fcntl::renameat,
    unistd::{symlinkat, unlinkat, UnlinkatFlags},
};
use rustc_hash::FxHashMap;

flowrun_plugin_sdk::export_plugin!(name = "status-dirs", version = env!("CARGO_PKG_VERSION"));
flowrun_plugin_sdk::register_observer!(
    kind = "status-dirs",
    description = "keeps by-status/{running,passed,failed,killed,skipped}/JOB links to each job's directory (config: path, default \"by-status\" in the run directory)",
    create = create
);

/// The status directories, in the order of [`Slot`].
const DIRS: [&str; 5] = ["running", "passed", "failed", "killed", "skipped"];

/// Where a job's link is: an index into [`DIRS`], or [`NO_LINK`].
type Slot = u8;
const NO_LINK: Slot = u8::MAX;

/// The slot of `running/`.
const RUNNING: Slot = 0;

fn slot_of(status: JobStatus) -> Slot {
    match status {
        JobStatus::RUNNING => RUNNING,
        JobStatus::PASSED => 1,
        JobStatus::FAILED => 2,
        JobStatus::KILLED => 3,
        JobStatus::SKIPPED => 4,
        _ => NO_LINK, // scheduled, queued (a retry waiting), or a status added later
    }
}

/// Creates the observer from its TOML config (`path`, optional).
pub fn create(config: &str) -> Result<Box<dyn ObserverImpl>, PluginError> {
    let path = flowrun_observer_kit::config::path_only(config, "by-status")?;
    let state = Arc::new(Contained::new("status-dirs", StatusDirs::new(path)));
    let timer = {
        let state = state.clone();
        Ticker::start("status-dirs-running", RUNNING_LINK_DELAY / 4, move || {
            state.with(|s| s.link_long_runners(Instant::now()));
        })?
    };
    Ok(Box::new(StatusDirsObserver { state, timer }))
}

/// How long a job runs before its `running` link appears.
pub const RUNNING_LINK_DELAY: Duration = Duration::from_secs(1);

struct StatusDirsObserver {
    state: Arc<Contained<StatusDirs>>,
    /// Links jobs that have run for [`RUNNING_LINK_DELAY`] into `running/`.
    timer: Ticker,
}

impl ObserverImpl for StatusDirsObserver {
    fn on_events(&self, events: RunEvents<'_>) {
        self.state.on_events(|s| s.apply(events));
    }

    fn finish(&self) -> Result<(), PluginError> {
        self.timer.stop();
        self.state.finish(|s| match s.error.take() {
            Some(e) => Err(PluginError::new(ErrorKind::IO, e)),
            None if s.dirs.is_none() => Err(PluginError::other(
                "status-dirs: the run never started (no RUN_STARTED event), so no links were made",
            )),
            None => Ok(()),
        })
    }
}

/// One job: its status as the events tell, and where its link is. The link's target is
/// built when the link is made (see [`StatusDirs::target`]) rather than kept per job.
struct JobLinks {
    /// The link's file name: the job's directory name.
    dir_name: Box<str>,
    status: JobStatus,
    linked: Slot,
}

/// The open status directories.
struct Dirs {
    /// Their parent, for messages.
    root: PathBuf,
    fds: Vec<File>,
}

/// The state behind the observer.
pub struct StatusDirs {
    configured: PathBuf,
    dirs: Option<Dirs>,
    /// The run's `jobs` directory as seen from a status directory (`../../jobs`).
    jobs_from_status_dir: String,
    jobs: Vec<JobLinks>,
    /// Fx rather than SipHash: the lookup of the job an event names was the observer's largest
    /// cost after the kernel's (benches/observers.py, perf), and names are not adversarial.
    by_name: FxHashMap<Box<str>, u32>,
    /// The target of the link being made, reused.
    target: String,
    /// Jobs whose link must move at the end of the current batch, in the order they changed;
    /// `queued_flag` marks the ones already listed.
    changed: Vec<u32>,
    queued_flag: Vec<bool>,
    /// Jobs that started running, with when this observer saw it, oldest first: their
    /// `running` link waits for [`RUNNING_LINK_DELAY`].
    started: VecDeque<(u32, Instant)>,
    signal: Option<String>,
    /// The first error; once set, the observer does nothing more and `finish` reports it.
    error: Option<String>,
}

/// Removes the links an earlier run left in status directory `dir`: they would lie about this
/// run. Only links: whatever else is there (a user's notes, when `path` names a directory
/// that already held some) is not the observer's to delete.
fn remove_links(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_symlink() {
            match std::fs::remove_file(entry.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

impl StatusDirs {
    fn new(configured: PathBuf) -> Self {
        StatusDirs {
            configured,
            dirs: None,
            jobs_from_status_dir: String::new(),
            jobs: Vec::new(),
            by_name: FxHashMap::default(),
            target: String::new(),
            changed: Vec::new(),
            queued_flag: Vec::new(),
            started: VecDeque::new(),
            signal: None,
            error: None,
        }
    }

    /// Takes one batch into account; the links move once per job, at the end of the batch.
    pub fn apply<'e>(&mut self, events: impl IntoIterator<Item = RunEvent<'e>>) {
        if self.error.is_some() {
            return;
        }
        for event in events {
            match event.kind() {
                RunEventKind::RUN_STARTED => {
                    if let Err(e) = self.start(event) {
                        self.error = Some(e);
                        return;
                    }
                }
                RunEventKind::JOB_STATUS => {
                    let i = self.job(event.job());
                    let job = &mut self.jobs[i as usize];
                    job.status = event.new_status();
                    if !self.queued_flag[i as usize] {
                        self.queued_flag[i as usize] = true;
                        self.changed.push(i);
                    }
                }
                RunEventKind::KILL_SIGNAL => self.signal = Some(event.signal().to_string()),
                RunEventKind::RUN_FINISHED => {
                    let interrupted =
                        self.signal.is_some() || event.summary().is_some_and(|s| s.interrupted);
                    if interrupted {
                        self.settle_interrupted();
                    }
                }
                _ => {}
            }
        }
        if let Err(e) = self.move_links() {
            self.error = Some(e);
        }
    }

    /// Creates the status directories (removing an earlier run's links from them) and opens them.
    fn start(&mut self, event: RunEvent<'_>) -> Result<(), String> {
        let run_dir = PathBuf::from(event.run_dir());
        let root = resolve_in_run_dir(&run_dir, &self.configured);
        let io = |what: &str, path: &Path, e: std::io::Error| {
            format!("status-dirs: cannot {what} {}: {e}", path.display())
        };
        refuse_host_files(&run_dir, &root).map_err(|e| io("use", &root, e))?;
        let mut fds = Vec::with_capacity(DIRS.len());
        for name in DIRS {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
            remove_links(&dir).map_err(|e| io("clear", &dir, e))?;
            let fd = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_DIRECTORY)
                .open(&dir)
                .map_err(|e| io("open", &dir, e))?;
            fds.push(fd);
        }
        self.jobs_from_status_dir = relative_path(&root.join(DIRS[0]), &run_dir.join("jobs"))
            .to_string_lossy()
            .into_owned();
        self.dirs = Some(Dirs { root, fds });
        let jobs = event.jobs();
        self.jobs.reserve(jobs.len());
        self.queued_flag.reserve(jobs.len());
        self.by_name.reserve(jobs.len());
        for job in jobs {
            self.job(job.name);
        }
        Ok(())
    }

    fn job(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let i = self.jobs.len() as u32;
        self.jobs.push(JobLinks {
            dir_name: job_dir_name(name).into(),
            status: JobStatus::SCHEDULED,
            linked: NO_LINK,
        });
        self.queued_flag.push(false);
        self.by_name.insert(name.into(), i);
        i
    }

    /// The host's rule for jobs left without a final status by an abandoned run.
    fn settle_interrupted(&mut self) {
        for i in 0..self.jobs.len() {
            let job = &mut self.jobs[i];
            job.status = match job.status {
                s if s.is_terminal() => continue,
                JobStatus::RUNNING | JobStatus::QUEUED => JobStatus::KILLED,
                _ => JobStatus::SKIPPED,
            };
            if !self.queued_flag[i] {
                self.queued_flag[i] = true;
                self.changed.push(i as u32);
            }
        }
    }

    /// Links the jobs that started at least [`RUNNING_LINK_DELAY`] before `now` and still run
    /// without a link. Each job is looked at once per start, so this is O(1) per event.
    pub fn link_long_runners(&mut self, now: Instant) {
        if self.error.is_some() {
            return;
        }
        let Some(dirs) = &self.dirs else { return };
        while let Some(&(i, since)) = self.started.front() {
            if now.duration_since(since) < RUNNING_LINK_DELAY {
                break;
            }
            self.started.pop_front();
            let job = &mut self.jobs[i as usize];
            if job.status != JobStatus::RUNNING || job.linked != NO_LINK {
                continue; // it ended (and was linked where it ended), or is linked already
            }
            let target = target(&mut self.target, &self.jobs_from_status_dir, &job.dir_name);
            if let Err(e) = link(target, &dirs.fds[usize::from(RUNNING)], &job.dir_name) {
                self.error = Some(link_error(dirs, &job.dir_name, RUNNING, e));
                return;
            }
            job.linked = RUNNING;
        }
    }

    fn move_links(&mut self) -> Result<(), String> {
        let changed = std::mem::take(&mut self.changed);
        let Some(dirs) = &self.dirs else {
            // Events before RUN_STARTED: nothing to link into yet.
            for &i in &changed {
                self.queued_flag[i as usize] = false;
            }
            return Ok(());
        };
        // One clock reading per batch: a batch is delivered at once, so its starts are as old.
        let mut now = None;
        for &i in &changed {
            self.queued_flag[i as usize] = false;
            let job = &mut self.jobs[i as usize];
            let wanted = slot_of(job.status);
            if wanted == job.linked {
                continue;
            }
            if wanted == RUNNING && job.linked == NO_LINK {
                let since = *now.get_or_insert_with(Instant::now);
                self.started.push_back((i, since));
                continue;
            }
            let name = &*job.dir_name;
            let result = match (job.linked, wanted) {
                (NO_LINK, to) => {
                    let target = target(&mut self.target, &self.jobs_from_status_dir, name);
                    link(target, &dirs.fds[usize::from(to)], name)
                }
                (from, NO_LINK) => unlinkat(
                    &dirs.fds[usize::from(from)],
                    name,
                    UnlinkatFlags::NoRemoveDir,
                ),
                (from, to) => renameat(
                    &dirs.fds[usize::from(from)],
                    name,
                    &dirs.fds[usize::from(to)],
                    name,
                ),
            };
            if let Err(e) = result {
                return Err(link_error(dirs, name, wanted, e));
            }
            job.linked = wanted;
        }
        self.changed = changed;
        self.changed.clear();
        Ok(())
    }
}

fn link_error(dirs: &Dirs, name: &str, to: Slot, e: Errno) -> String {
    let to = DIRS.get(usize::from(to)).copied().unwrap_or("(none)");
    format!(
        "status-dirs: cannot link {name} into {}: {e}",
        dirs.root.join(to).display()
    )
}

/// The target of the link of the job whose directory is `dir_name`, written into `buffer`.
fn target<'b>(buffer: &'b mut String, jobs_from_status_dir: &str, dir_name: &str) -> &'b str {
    buffer.clear();
    buffer.push_str(jobs_from_status_dir);
    buffer.push('/');
    buffer.push_str(dir_name);
    buffer
}

/// Creates the link, replacing a stale one of the same name.
fn link(target: &str, dir: &File, name: &str) -> nix::Result<()> {
    match symlinkat(target, dir, name) {
        Err(Errno::EEXIST) => {
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
            symlinkat(target, dir, name)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests;
