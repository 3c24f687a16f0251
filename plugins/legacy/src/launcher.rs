//! The C launcher as the poller sees it: return codes turned into outcomes, messages into
//! one-line reasons, and the job's log created empty before each launch (a backend's logs are
//! fresh, whatever the launcher does with the file).

use std::fs::OpenOptions;

use crate::{
    engine::{Launched, Launcher, Polled},
    protocol::{End, LaunchRequest, Usage},
    sys::launcher_abi::{self as abi, CJob, JobHandle, LauncherLibrary},
};

/// A message made one line, or a stand-in when the launcher gave none.
fn one_line(message: Option<String>, none: &str) -> String {
    match message {
        Some(m) if !m.trim().is_empty() => m.split_whitespace().collect::<Vec<_>>().join(" "),
        _ => none.to_string(),
    }
}

impl Launcher for LauncherLibrary {
    type Job = JobHandle;

    fn launch(&mut self, job: &LaunchRequest) -> Launched<JobHandle> {
        let cjob = match CJob::new(job) {
            Ok(c) => c,
            Err(why) => return Launched::Failed(format!("launch failed: {why}")),
        };
        if let Err(e) = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&job.log_path)
        {
            return Launched::Failed(format!(
                "launch failed: cannot create the log {}: {e}",
                job.log_path
            ));
        }
        let r = LauncherLibrary::launch(self, &cjob);
        match (r.code, r.job) {
            (abi::OK, Some(handle)) => Launched::Started(handle, r.native_id),
            (abi::OK, None) => Launched::Failed(
                "launch failed: the launcher answered OK without a job handle".into(),
            ),
            (abi::BUSY, _) => Launched::Busy,
            (abi::ERROR, _) => Launched::Failed(format!(
                "launch failed: {}",
                one_line(r.error, "the launcher gave no reason")
            )),
            // Not a code of the header: whatever the launcher meant, the job is failed, and a
            // job it may have started anyway is killed, so that nothing runs unobserved.
            (code, handle) => {
                if let Some(mut handle) = handle {
                    let _ = LauncherLibrary::kill(self, &mut handle);
                    self.free_job(handle);
                }
                Launched::Failed(format!(
                    "launch failed: the launcher answered {code}, which is none of OK (0), \
                     BUSY (1) and ERROR (-1){}",
                    r.error
                        .map(|e| format!(": {}", one_line(Some(e), "")))
                        .unwrap_or_default()
                ))
            }
        }
    }

    fn poll(&mut self, job: &mut JobHandle) -> Polled {
        let r = LauncherLibrary::poll(self, job);
        if r.code == abi::ERROR {
            return Polled::Error(one_line(r.message, "the launcher gave no reason"));
        }
        if r.code != abi::OK {
            return Polled::Error(format!(
                "the launcher answered {}, which is neither OK (0) nor ERROR (-1)",
                r.code
            ));
        }
        let usage = Usage {
            cpu_s: r.cpu_s,
            max_rss_mb: r.max_rss_mb,
        };
        let end = match r.state {
            abi::RUNNING => return Polled::Running,
            abi::EXITED => End::Exited(r.value),
            abi::SIGNALED => End::Signaled(r.value),
            abi::FAILED => End::Failed {
                reason: one_line(
                    r.message,
                    "the launcher reported a failure without a reason",
                ),
                code: (r.value >= 0).then_some(r.value),
            },
            other => {
                return Polled::Error(format!("the launcher answered the unknown state {other}"))
            }
        };
        Polled::Ended(end, usage)
    }

    fn kill(&mut self, job: &mut JobHandle) -> Result<(), String> {
        LauncherLibrary::kill(self, job).map_err(|e| one_line(e, "the launcher gave no reason"))
    }

    fn free(&mut self, job: JobHandle) {
        self.free_job(job)
    }
}
