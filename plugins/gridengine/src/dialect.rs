//! Grid Engine's dialect for the cluster engine: what the engine needs that is Grid Engine's.
//! README.md says what the user sees; docs/plugin-authoring.md walks through this file.

use std::{
    collections::HashSet,
    time::{Duration, SystemTime},
};

use flowrun_plugin_sdk::engine::{
    records::{posix_local_time, StartBounds},
    script::{self, exit_status_path, ScriptOptions},
    CommandOutput, Commands, Dialect, Job, JobContext, Judgement, Lookup, NativeStatus, Scope,
    Submission, SubmitError, Verdict,
};
use parking_lot::Mutex;

use crate::{texts, Keys};

/// Where the job's script writes its command's exit status (see `job_script`), per attempt.
const EXIT_STATUS_FILE: &str = "gridengine-exit-status";
/// Grid Engine reschedules a job that exits 99 and holds one that exits 100 in error.
const RESERVED_EXIT_CODES: [i32; 2] = [99, 100];

pub struct GridEngine {
    keys: Keys,
    /// Ids qdel deleted while they were pending: they leave no accounting record.
    deleted_pending: Mutex<HashSet<String>>,
    /// When each job was last seen waiting: qacct is asked only for records from then on.
    waiting: StartBounds,
}

impl GridEngine {
    pub fn new(keys: Keys) -> GridEngine {
        let deleted_pending = Mutex::default();
        GridEngine {
            keys,
            deleted_pending,
            waiting: StartBounds::default(),
        }
    }

    /// qdel of ids or names. It exits 1 when one does not exist (any more): that one is done
    /// too.
    fn qdel(&self, cmd: &Commands, what: &[String]) -> Result<(), CommandOutput> {
        let out = cmd.run("qdel", what);
        let (deleted, all_done) = texts::parse_qdel(&out);
        self.deleted_pending.lock().extend(deleted);
        (out.ok() || (out.code() == Some(1) && all_done))
            .then_some(())
            .ok_or(out)
    }

    /// The qsub options that come from the job's limits and the backend's keys.
    fn limits(&self, job: &Job) -> Vec<String> {
        let (k, cpus) = (&self.keys, job.cpus.max(1));
        let mut args = Vec::new();
        if let Some(secs) = job.timeout_secs() {
            args.extend(["-l".into(), format!("h_rt={secs}")]);
        }
        if cpus > 1 {
            let pe = k.parallel_environment.as_deref().unwrap_or("smp");
            args.extend(["-pe".into(), pe.into(), cpus.to_string()]);
        }
        let memory = k.memory_resource.as_deref().unwrap_or("h_vmem");
        if let (Some(mb), false) = (job.memory_mb, memory.is_empty()) {
            // per slot, as Grid Engine counts memory
            args.extend([
                "-l".into(),
                format!("{memory}={}M", mb.div_ceil(u64::from(cpus))),
            ]);
        }
        for (flag, value) in [("-q", &k.queue), ("-P", &k.project)] {
            args.extend(value.iter().flat_map(|v| [flag.to_string(), v.clone()]));
        }
        args.extend(k.qsub_args.iter().cloned());
        args
    }
}

impl Dialect for GridEngine {
    fn scheduler(&self) -> &str {
        "Grid Engine"
    }

    fn script_name(&self) -> &str {
        "gridengine-job.sh"
    }

    fn job_script(&self, job: &Job, _in_array: bool) -> Result<String, String> {
        // The script opens the log itself (Grid Engine appends to -o files, and a log must be
        // fresh), and keeps 99 and 100 from Grid Engine: their real status is in the file.
        let options = ScriptOptions {
            redirect_to_log: true,
            exit_status_file: Some(exit_status_path(job, EXIT_STATUS_FILE)),
            reserved_exit_codes: RESERVED_EXIT_CODES.to_vec(),
            ..ScriptOptions::new("flowrun's Grid Engine backend")
        };
        script::job_script(job, &options)
    }

    fn array_task_variable(&self) -> Option<&str> {
        Some("SGE_TASK_ID")
    }

    fn array_dir_name(&self) -> &str {
        "gridengine-arrays"
    }

    fn commands(&self) -> &[&str] {
        &["qsub", "qstat", "qacct", "qdel"]
    }

    fn submit(&self, cmd: &Commands, unit: &Submission) -> Result<Vec<String>, SubmitError> {
        for job in &unit.jobs {
            script::remove_stale(&exit_status_path(job, EXIT_STATUS_FILE), "exit status file")?;
        }
        let first = &unit.jobs[0];
        // Grid Engine's own messages go beside the job (or the array's dispatcher).
        let output = match &unit.array {
            None => first.job_dir.join("gridengine.out"),
            Some(plan) => plan.dir.clone(),
        };
        let output = output.to_string_lossy().into_owned();
        if output.contains([':', ',', '$']) {
            return Err(SubmitError::Rejected(format!(
                "qsub -o would read ':', ',' or '$' in {output} as a host, a list or a variable"
            )));
        }
        let wd = unit.workdir().to_string_lossy().into_owned();
        let mut args: Vec<String> = ["-terse", "-N", &unit.name, "-S", "/bin/bash", "-b", "n"]
            .into_iter()
            .chain(["-o", &output, "-j", "y", "-wd", &wd])
            .map(String::from)
            .collect();
        args.extend(self.limits(first));
        if let Some((first_index, last)) = unit.index_range() {
            args.extend(["-t".into(), format!("{first_index}-{last}")]);
            if let Some(limit) = unit.array.as_ref().and_then(|plan| plan.slot_limit) {
                args.extend(["-tc".into(), limit.to_string()]);
            }
        }
        args.push(unit.script().to_string_lossy().into_owned());
        let before = SystemTime::now();
        let id = cmd.submit("qsub", &args, |out| texts::parse_qsub_id(&out.stdout))?;
        let ids = unit.native_ids(&id, |id, task| format!("{id}.{task}"));
        self.waiting.waiting(ids.iter().map(String::as_str), before);
        Ok(ids)
    }

    fn status(&self, cmd: &Commands, scope: &Scope) -> Result<Vec<NativeStatus>, CommandOutput> {
        let before = SystemTime::now();
        let out = cmd.run("qstat", &["-xml".to_string()]).checked()?;
        let rows = texts::parse_qstat_xml(&out.stdout, &scope.names)
            .map_err(|stderr| CommandOutput { stderr, ..out })?;
        // `q`: queued, not yet dispatched (qw, hqw, Rq, Eqw).
        let waiting = rows.iter().filter(|(_, state)| state.contains('q'));
        self.waiting
            .waiting(waiting.map(|(id, _)| id.as_str()), before);
        let row = |(id, state)| NativeStatus::new(id, state);
        Ok(rows.into_iter().map(row).collect())
    }

    fn judge(&self, s: &NativeStatus, cx: &JobContext) -> Judgement {
        let (state, id) = (s.state.as_str(), &s.id);
        let failed = |reason: String, ran| Verdict::Failed {
            reason,
            exit_code: s.exit_code,
            ran,
        };
        Judgement::Final(match state {
            // Final records: a job qdel deleted while pending, the status the script kept from
            // Grid Engine, qacct's record.
            "deleted" if cx.kill_requested => Verdict::Killed,
            "deleted" => failed("deleted outside flowrun before it started".into(), false),
            "exited" => Verdict::Exited(s.exit_code.unwrap_or(-1)),
            "finished" => match (texts::failed_code(&s.reason), s.exit_code) {
                (Some(0), Some(code)) => Verdict::Exited(code),
                (Some(100), _) if cx.kill_requested => Verdict::Killed,
                (Some(100), Some(137)) => failed("killed outside flowrun".into(), true),
                (Some(37), _) => failed(format!("Grid Engine limit (failed {})", s.reason), true),
                (code, status) => {
                    let status =
                        status.map_or("no exit status".into(), |c| format!("exit status {c}"));
                    let reason = format!("Grid Engine: failed {} ({status})", s.reason);
                    failed(reason, code.is_some_and(|c| c >= 100))
                }
            },
            // qstat's states
            _ if state.contains('E') => {
                return Judgement::Stuck(format!(
                    "Grid Engine holds job {id} in error state {state}: it cannot start (see \
                     `qstat -j {id}` for why, such as a file or directory it cannot open)"
                ))
            }
            _ if state.contains(['s', 'S', 'T']) => {
                return Judgement::Suspended(format!("suspended by Grid Engine (state {state})"))
            }
            _ if state.contains(['r', 't', 'd']) => return Judgement::Running,
            _ => return Judgement::Queued,
        })
    }

    fn looks_up(&self, why: Lookup) -> bool {
        // qstat never shows an end: every job is resolved once it left the queue.
        why == Lookup::Vanished
    }

    fn record_in_job_files(&self, job: &Job, native_id: &str) -> Option<NativeStatus> {
        let code = script::read_exit_status(&exit_status_path(job, EXIT_STATUS_FILE))?;
        RESERVED_EXIT_CODES.contains(&code).then(|| NativeStatus {
            exit_code: Some(code),
            ..NativeStatus::new(native_id, "exited")
        })
    }

    fn final_records(
        &self,
        cmd: &Commands,
        scope: &Scope,
        ids: &[String],
    ) -> Result<Vec<NativeStatus>, CommandOutput> {
        // By name: one call for the whole run (qacct takes one id or one name), for the records
        // that ended since the earliest time one of `ids` was seen waiting (-E: by end time).
        let since = (self.waiting.earliest(ids))
            .map(|time| ["-E".to_string(), "-b".into(), posix_local_time(time)]);
        let mut rows = Vec::new();
        for name in &scope.names {
            let mut args = vec!["-j".to_string(), name.clone()];
            args.extend(since.iter().flatten().cloned());
            let out = cmd.run("qacct", &args);
            if !out.ok() && !out.stderr.ends_with(" not found") {
                return Err(out);
            }
            rows.extend(texts::parse_qacct(&out.stdout));
        }
        let found = rows.iter().filter(|r| ids.contains(&r.id));
        self.waiting.forget(found.map(|r| r.id.as_str()));
        let mut deleted = self.deleted_pending.lock();
        for id in ids {
            if deleted.remove(id) && !rows.iter().any(|r| &r.id == id) {
                rows.push(NativeStatus::new(id, "deleted"));
            }
        }
        Ok(rows)
    }

    fn cancel(&self, cmd: &Commands, ids: &[String]) -> Result<(), CommandOutput> {
        self.qdel(cmd, ids)
    }

    fn cancel_all(&self, cmd: &Commands, scope: &Scope) -> Result<(), CommandOutput> {
        scope
            .names
            .iter()
            .try_for_each(|name| self.qdel(cmd, std::slice::from_ref(name)))
    }

    fn is_transient(&self, out: &CommandOutput) -> bool {
        texts::is_transient(out)
    }

    fn vanished_reason(&self, native_id: &str, waited: Duration) -> String {
        format!(
            "Grid Engine job {native_id} left the queue and qacct has no record of it after {}s \
             (was it deleted before it started?)",
            waited.as_secs()
        )
    }
}
