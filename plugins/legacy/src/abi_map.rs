//! Where the plugin meets flowrun's plugin ABI types: job specs in, submit answers and job
//! events out. The rest of the crate works with its own types ([`crate::protocol`]), so an ABI
//! change touches this file only.

use flowrun_plugin_api::{
    sdk::attrs_iter, Capabilities, CapabilityFlags, JobEvent, JobId, JobSpec, SubmitAnswer,
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
pub fn launch_request(job: &JobSpec) -> LaunchRequest {
    let s = |v: &flowrun_plugin_api::abi_stable::std_types::RString| v.to_string();
    LaunchRequest {
        id: job.id.0,
        name: s(&job.name),
        shell: job.command.shell,
        args: job.command.args.iter().map(s).collect(),
        env: attrs_iter(&job.env)
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        cwd: s(&job.cwd),
        job_dir: s(&job.job_dir),
        log_path: s(&job.log_path),
        run_dir: s(&job.run_dir),
        run_tag: s(&job.run_tag),
        timeout_ms: job.timeout_ms.into_option(),
        cpus: job.resources.cpus,
        memory_mb: job.resources.memory_mb.into_option(),
        attempt: job.attempt,
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
pub fn rejected(job: &JobSpec, why: &str) -> SubmitAnswer {
    SubmitAnswer::rejected(job.id, why)
}

/// Whether the host asks for an interactive job.
pub fn is_interactive(job: &JobSpec) -> bool {
    job.interactive
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
            let mut f = JobEvent::failed(id, reason.clone());
            f.exit_code = (*code).into();
            f
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
