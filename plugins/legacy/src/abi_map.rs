//! Where the plugin meets flowrun's plugin SDK: job views in, submit answers and job events
//! out. The rest of the crate works with its own types ([`crate::protocol`]), so an SDK change
//! touches this file only.

use flowrun_plugin_sdk::{
    Answer as SubmitAnswer, Capabilities, CapabilityFlags, Command, Event as JobEvent, Job, JobId,
};

use crate::protocol::{Answer, End, Ended, LaunchRequest};

/// Jobs per submit at most. A batch is launched one job after another, within a time budget
/// after which the rest is answered busy; a small batch keeps what the host builds, and the
/// worker decodes, in vain for such jobs small (a launch takes a millisecond or more).
const MAX_BATCH: u32 = 64;

/// What the backend can do: batches (a launch batch is one message to the worker). Not
/// `ENFORCES_TIMEOUT`: the host's timeout kills through the launcher's `kill`. No cap on
/// running jobs by default (a flow sets `max_parallel`).
pub fn capabilities() -> Capabilities {
    Capabilities {
        flags: CapabilityFlags::BATCH_SUBMIT | CapabilityFlags::BATCH_KILL,
        default_max_parallel: 0,
        max_batch: MAX_BATCH,
    }
}

/// A job spec as the worker needs it.
pub fn launch_request(job: Job<'_>) -> LaunchRequest {
    let (shell, args) = match job.command() {
        Command::Shell(script) => (true, vec![script.to_string()]),
        Command::Argv(args) => (false, args.iter().map(str::to_string).collect()),
    };
    LaunchRequest {
        id: job.id().0,
        name: job.name().to_string(),
        shell,
        args,
        env: job.env().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: job.cwd().to_string(),
        job_dir: job.job_dir().to_string(),
        log_path: job.log_path().to_string(),
        run_dir: job.run_dir().to_string(),
        run_tag: job.run_tag().to_string(),
        // Saturating: a limit beyond u64 milliseconds is no limit in practice.
        timeout_ms: job
            .timeout()
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        cpus: job.resources().cpus(),
        memory_mb: job.resources().memory_mb(),
        attempt: job.attempt(),
    }
}

/// The answer the host gets for one launch.
pub fn submit_answer(id: u64, answer: &Answer) -> SubmitAnswer {
    match answer {
        Answer::Started(_) => SubmitAnswer::accepted(JobId(id)),
        Answer::Busy => SubmitAnswer::busy(JobId(id)),
        Answer::Failed(why) => SubmitAnswer::rejected(JobId(id), why.clone()),
    }
}

/// The job refused without asking the launcher.
pub fn rejected(job: Job<'_>, why: &str) -> SubmitAnswer {
    SubmitAnswer::rejected(job.id(), why)
}

/// Whether the host asks for an interactive job.
pub fn is_interactive(job: Job<'_>) -> bool {
    job.interactive()
}

/// The STARTED event of a job the launcher started.
pub fn started(id: u64, native_id: Option<&str>) -> JobEvent {
    let e = JobEvent::started(JobId(id));
    match native_id {
        Some(n) => e.with_attr("native_id", n),
        None => e,
    }
}

/// The event of a job that ended.
pub fn ended(e: &Ended, native_id: Option<&str>) -> JobEvent {
    let id = JobId(e.id);
    let mut event = match &e.end {
        End::Exited(code) => JobEvent::exited(id, *code),
        End::Signaled(sig) => JobEvent::signaled(id, *sig),
        End::Failed { reason, code } => {
            let f = JobEvent::failed(id, reason.clone());
            match code {
                Some(code) => f.with_exit_code(*code),
                None => f,
            }
        }
        End::Killed => JobEvent::killed(id),
        End::Lost(why) => JobEvent::lost(id, why.clone()),
    };
    let mut usage = false;
    if let Some(cpu) = e.usage.cpu_s {
        event = event.with_attr("cpu_s", format!("{cpu:.3}"));
        usage = true;
    }
    if let Some(rss) = e.usage.max_rss_mb {
        event = event.with_attr("max_rss_mb", format!("{rss:.1}"));
        usage = true;
    }
    if usage {
        event = event.with_attr("usage_source", "launcher");
    }
    match native_id {
        Some(n) => event.with_attr("native_id", n),
        None => event,
    }
}

/// The event of a job whose worker went away.
pub fn lost(id: u64, why: &str) -> JobEvent {
    JobEvent::lost(JobId(id), why)
}
