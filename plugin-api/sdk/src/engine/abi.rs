//! The one place where the engine meets the host: a [`BackendImpl`] over an [`Engine`], turning
//! the SDK's views of the host's jobs into [`Job`]s and the engine's events into the SDK's
//! [`Event`]s.

use std::{path::PathBuf, sync::Arc};

use super::{
    command::{CommandRunner, ProcessRunner},
    config::EngineConfig,
    core::{EngineEvent, Update},
    dialect::{Dialect, Job, JobCommand, JobKey, Verdict},
    run::{Engine, EventSink},
};
use crate::{
    Answer, BackendImpl, Capabilities, CapabilityFlags, Command, ErrorKind, Event, Job as JobView,
    JobId, Jobs, PluginError, Sink,
};

/// A backend running `dialect` on the engine, with the real command runner. `kind` names the
/// engine's threads.
pub fn backend<D: Dialect>(
    kind: &str,
    dialect: D,
    config: EngineConfig,
    sink: Sink,
) -> Result<Box<dyn BackendImpl>, PluginError> {
    backend_with_runner(kind, dialect, config, sink, Arc::new(ProcessRunner))
}

/// [`backend`] with another command runner (a scheduler's commands on a remote host, or a
/// scripted scheduler in tests).
pub fn backend_with_runner<D: Dialect>(
    kind: &str,
    dialect: D,
    config: EngineConfig,
    sink: Sink,
    runner: Arc<dyn CommandRunner>,
) -> Result<Box<dyn BackendImpl>, PluginError> {
    let arrays = config.arrays && dialect.array_task_variable().is_some();
    let enforces_timeout = dialect.enforces_timeout();
    let scheduler = dialect.scheduler().to_string();
    let engine =
        Engine::start(kind, dialect, config, runner, Arc::new(SinkEvents(sink))).map_err(|e| {
            PluginError::new(
                ErrorKind::IO,
                format!("cannot start the {kind} backend's threads: {e}"),
            )
        })?;
    Ok(Box::new(ClusterBackend {
        engine,
        arrays,
        enforces_timeout,
        scheduler,
    }))
}

struct ClusterBackend<D: Dialect> {
    engine: Engine<D>,
    arrays: bool,
    enforces_timeout: bool,
    scheduler: String,
}

/// The host's job (the SDK's view of it) as the engine's plain, owned job.
pub fn job_from_spec(spec: JobView<'_>) -> Job {
    let resources = spec.resources();
    Job {
        key: JobKey(spec.id().0),
        name: spec.name().to_string(),
        command: match spec.command() {
            Command::Shell(script) => JobCommand::Shell(script.to_string()),
            Command::Argv(args) => JobCommand::Argv(args.iter().map(str::to_string).collect()),
        },
        cwd: PathBuf::from(spec.cwd()),
        env: spec
            .env()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        job_dir: PathBuf::from(spec.job_dir()),
        log_path: PathBuf::from(spec.log_path()),
        run_dir: PathBuf::from(spec.run_dir()),
        run_tag: spec.run_tag().to_string(),
        timeout: spec.timeout(),
        cpus: resources.cpus().max(1),
        memory_mb: resources.memory_mb(),
        named_resources: resources
            .named()
            .map(|(name, amount)| (name.to_string(), amount))
            .collect(),
        attempt: spec.attempt(),
        attrs: spec
            .attrs()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The engine's event as the host's (the SDK's [`Event`], which the [`Sink`] sends across the
/// ABI).
pub fn event_to_abi(event: EngineEvent) -> Event {
    let id = JobId(event.job.0);
    match event.update {
        Update::Started { native_id } => Event::started(id).with_attr("native_id", native_id),
        Update::Finished {
            verdict,
            native_id,
            usage,
        } => {
            let mut e = match verdict {
                Verdict::Exited(code) => Event::exited(id, code),
                Verdict::Signaled(signal) => Event::signaled(id, signal),
                Verdict::Failed {
                    reason, exit_code, ..
                } => {
                    let e = Event::failed(id, reason);
                    match exit_code {
                        Some(code) => e.with_exit_code(code),
                        None => e,
                    }
                }
                Verdict::Killed => Event::killed(id),
            };
            if let Some(n) = native_id {
                e = e.with_attr("native_id", n);
            }
            if let Some(u) = usage {
                if let Some(cpu) = u.cpu_s {
                    e = e.with_attr("cpu_s", cpu.to_string());
                }
                if let Some(rss) = u.max_rss_mb {
                    e = e.with_attr("max_rss_mb", rss.to_string());
                }
                if u.cpu_s.is_some() || u.max_rss_mb.is_some() {
                    e = e.with_attr("usage_source", u.source);
                }
            }
            e
        }
        Update::Lost { reason, native_id } => {
            let mut e = Event::lost(id, reason);
            if let Some(n) = native_id {
                e = e.with_attr("native_id", n);
            }
            e
        }
    }
}

struct SinkEvents(Sink);

impl EventSink for SinkEvents {
    fn emit(&self, event: EngineEvent) {
        self.0.emit(event_to_abi(event));
    }
    fn submitted(&self, job: JobKey, native_id: &str) {
        self.0.emit(Event::submitted(JobId(job.0), native_id));
    }
}

impl<D: Dialect> BackendImpl for ClusterBackend<D> {
    fn capabilities(&self) -> Capabilities {
        // Every dialect can re-attach: a job is tracked by its native id alone, through the
        // same snapshot and final records as one this instance submitted.
        let mut flags =
            CapabilityFlags::BATCH_SUBMIT | CapabilityFlags::BATCH_KILL | CapabilityFlags::REATTACH;
        if self.enforces_timeout {
            flags = flags | CapabilityFlags::ENFORCES_TIMEOUT;
        }
        if self.arrays {
            flags = flags | CapabilityFlags::ARRAYS;
        }
        // No cap by default: the scheduler queues what it cannot run yet. Sites set
        // max_parallel.
        Capabilities {
            flags,
            default_max_parallel: 0,
            max_batch: 0,
        }
    }

    fn submit(&self, specs: Jobs<'_>) -> Vec<Answer> {
        let mut answers: Vec<Option<Answer>> = vec![None; specs.len()];
        let mut jobs = Vec::with_capacity(specs.len());
        let mut positions = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            if spec.interactive() {
                answers[i] = Some(Answer::rejected(
                    spec.id(),
                    format!(
                        "the {} backend cannot run interactive jobs (they need your terminal); \
                         use a local backend for this job",
                        self.scheduler
                    ),
                ));
            } else {
                positions.push((i, spec.id()));
                jobs.push(job_from_spec(spec));
            }
        }
        for ((i, id), result) in positions.into_iter().zip(self.engine.submit(jobs)) {
            answers[i] = Some(match result {
                Ok(()) => Answer::accepted(id),
                Err(why) => Answer::rejected(id, why),
            });
        }
        answers
            .into_iter()
            .zip(specs)
            .map(|(a, spec)| {
                a.unwrap_or_else(|| Answer::rejected(spec.id(), "internal error: unanswered"))
            })
            .collect()
    }

    fn reattach(&self, specs: Jobs<'_>, native_ids: &[&str]) -> Vec<Answer> {
        let jobs = specs
            .iter()
            .zip(native_ids)
            .map(|(spec, id)| (job_from_spec(spec), id.to_string()))
            .collect();
        specs
            .iter()
            .zip(self.engine.adopt(jobs))
            .map(|(spec, result)| match result {
                Ok(()) => Answer::accepted(spec.id()),
                Err(why) => Answer::rejected(spec.id(), why),
            })
            .collect()
    }

    fn kill(&self, ids: &[JobId]) {
        let keys: Vec<JobKey> = ids.iter().map(|id| JobKey(id.0)).collect();
        self.engine.kill(&keys);
    }

    fn shutdown(&self) {
        self.engine.shutdown();
    }

    fn stats(&self) -> String {
        self.engine.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Usage;
    use crate::{
        abi::{
            abi_stable::std_types::{ROption, RString, RVec, Tuple2},
            CommandSpec, JobSpec, Resources,
        },
        EndKind, JobEventKind,
    };
    use std::time::Duration;

    #[test]
    fn specs_become_plain_jobs() {
        let spec = JobSpec {
            id: JobId(7),
            name: "a".into(),
            command: CommandSpec {
                shell: false,
                args: RVec::from(vec![RString::from("echo"), RString::from("x y")]),
            },
            cwd: "/c".into(),
            env: RVec::from(vec![Tuple2(RString::from("K"), RString::from("v"))]),
            job_dir: "/r/jobs/a".into(),
            log_path: "/r/jobs/a/output.log".into(),
            run_dir: "/r".into(),
            run_tag: "flowrun-t-1".into(),
            timeout_ms: ROption::RSome(1500),
            resources: Resources {
                cpus: 0,
                memory_mb: ROption::RSome(64),
                named: RVec::from(vec![Tuple2(RString::from("lic"), 2)]),
            },
            interactive: false,
            attempt: 2,
            attrs: RVec::new(),
        };
        let job = job_from_spec(Jobs::from_abi(std::slice::from_ref(&spec)).get(0).unwrap());
        assert_eq!(job.key, JobKey(7));
        assert_eq!(
            job.command,
            JobCommand::Argv(vec!["echo".into(), "x y".into()])
        );
        assert_eq!(job.env, vec![("K".to_string(), "v".to_string())]);
        assert_eq!(job.timeout, Some(Duration::from_millis(1500)));
        assert_eq!((job.cpus, job.memory_mb), (1, Some(64)));
        assert_eq!(job.named_resources, vec![("lic".to_string(), 2)]);
    }

    #[test]
    fn finished_events_carry_ids_and_usage() {
        let e = event_to_abi(EngineEvent {
            job: JobKey(3),
            update: Update::Finished {
                verdict: Verdict::Failed {
                    reason: "Slurm time limit".into(),
                    exit_code: Some(5),
                    ran: true,
                },
                native_id: Some("12_3".into()),
                usage: Some(Usage {
                    cpu_s: Some(1.25),
                    max_rss_mb: Some(215.9375),
                    source: "sacct",
                }),
            },
        });
        assert_eq!(
            (e.kind(), e.end()),
            (JobEventKind::FINISHED, EndKind::FAILED)
        );
        assert_eq!(e.exit_code(), Some(5));
        assert_eq!(e.attr("native_id"), Some("12_3"));
        assert_eq!(e.attr("cpu_s"), Some("1.25"));
        assert_eq!(e.attr("max_rss_mb"), Some("215.9375"));
        assert_eq!(e.attr("usage_source"), Some("sacct"));
        let e = event_to_abi(EngineEvent {
            job: JobKey(3),
            update: Update::Finished {
                verdict: Verdict::Exited(0),
                native_id: None,
                usage: Some(Usage {
                    cpu_s: None,
                    max_rss_mb: None,
                    source: "sacct",
                }),
            },
        });
        assert_eq!(e.attrs().len(), 0, "{e:?}");
    }
}
