//! The one place where the engine meets the ABI: a [`BackendImpl`] over an [`Engine`], turning
//! the host's job specs into [`Job`]s and the engine's events into the host's events.

use std::{path::PathBuf, sync::Arc, time::Duration};

use super::{
    command::{CommandRunner, ProcessRunner},
    config::EngineConfig,
    core::{EngineEvent, Update},
    dialect::{Dialect, Job, JobCommand, JobKey, Verdict},
    run::{Engine, EventSink},
};
use crate::{
    sdk::{BackendImpl, Sink},
    Capabilities, CapabilityFlags, ErrorKind, JobEvent, JobId, JobSpec, PluginError, SubmitAnswer,
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

/// The host's job spec as the engine's plain job.
pub fn job_from_spec(spec: &JobSpec) -> Job {
    let args: Vec<String> = spec.command.args.iter().map(|a| a.to_string()).collect();
    Job {
        key: JobKey(spec.id.0),
        name: spec.name.to_string(),
        command: if spec.command.shell {
            JobCommand::Shell(args.into_iter().next().unwrap_or_default())
        } else {
            JobCommand::Argv(args)
        },
        cwd: PathBuf::from(spec.cwd.as_str()),
        env: spec
            .env
            .iter()
            .map(|kv| (kv.0.to_string(), kv.1.to_string()))
            .collect(),
        job_dir: PathBuf::from(spec.job_dir.as_str()),
        log_path: PathBuf::from(spec.log_path.as_str()),
        run_dir: PathBuf::from(spec.run_dir.as_str()),
        run_tag: spec.run_tag.to_string(),
        timeout: spec.timeout_ms.into_option().map(Duration::from_millis),
        cpus: spec.resources.cpus.max(1),
        memory_mb: spec.resources.memory_mb.into_option(),
        named_resources: spec
            .resources
            .named
            .iter()
            .map(|kv| (kv.0.to_string(), kv.1))
            .collect(),
        attempt: spec.attempt,
        attrs: spec
            .attrs
            .iter()
            .map(|kv| (kv.0.to_string(), kv.1.to_string()))
            .collect(),
    }
}

/// The engine's event as the host's.
pub fn event_to_abi(event: EngineEvent) -> JobEvent {
    let id = JobId(event.job.0);
    match event.update {
        Update::Started { native_id } => JobEvent::started(id).with_attr("native_id", native_id),
        Update::Finished {
            verdict,
            native_id,
            usage,
        } => {
            let mut e = match verdict {
                Verdict::Exited(code) => JobEvent::exited(id, code),
                Verdict::Signaled(signal) => JobEvent::signaled(id, signal),
                Verdict::Failed {
                    reason, exit_code, ..
                } => {
                    let mut e = JobEvent::failed(id, reason);
                    e.exit_code = exit_code.into();
                    e
                }
                Verdict::Killed => JobEvent::killed(id),
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
            let mut e = JobEvent::lost(id, reason);
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
}

impl<D: Dialect> BackendImpl for ClusterBackend<D> {
    fn capabilities(&self) -> Capabilities {
        let mut flags = CapabilityFlags::BATCH_SUBMIT | CapabilityFlags::BATCH_KILL;
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

    fn submit(&self, specs: &[JobSpec]) -> Vec<SubmitAnswer> {
        let mut answers: Vec<Option<SubmitAnswer>> = vec![None; specs.len()];
        let mut jobs = Vec::with_capacity(specs.len());
        let mut positions = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            if spec.interactive {
                answers[i] = Some(SubmitAnswer::rejected(
                    spec.id,
                    format!(
                        "the {} backend cannot run interactive jobs (they need your terminal); \
                         use a local backend for this job",
                        self.scheduler
                    ),
                ));
            } else {
                jobs.push(job_from_spec(spec));
                positions.push(i);
            }
        }
        for (i, result) in positions.into_iter().zip(self.engine.submit(jobs)) {
            let id = specs[i].id;
            answers[i] = Some(match result {
                Ok(()) => SubmitAnswer::accepted(id),
                Err(why) => SubmitAnswer::rejected(id, why),
            });
        }
        answers
            .into_iter()
            .zip(specs)
            .map(|(a, spec)| {
                a.unwrap_or_else(|| SubmitAnswer::rejected(spec.id, "internal error: unanswered"))
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
        abi_stable::std_types::{ROption, RString, RVec, Tuple2},
        CommandSpec, EndKind, JobEventKind, Resources,
    };

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
        let job = job_from_spec(&spec);
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

    fn attr<'a>(e: &'a JobEvent, key: &str) -> Option<&'a str> {
        e.attrs
            .iter()
            .find(|a| a.0.as_str() == key)
            .map(|a| a.1.as_str())
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
        assert_eq!((e.kind, e.end), (JobEventKind::FINISHED, EndKind::FAILED));
        assert_eq!(e.exit_code, ROption::RSome(5));
        assert_eq!(attr(&e, "native_id"), Some("12_3"));
        assert_eq!(attr(&e, "cpu_s"), Some("1.25"));
        assert_eq!(attr(&e, "max_rss_mb"), Some("215.9375"));
        assert_eq!(attr(&e, "usage_source"), Some("sacct"));
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
        assert_eq!(e.attrs.len(), 0, "{e:?}");
    }
}
