//! Slurm's dialect for the cluster engine: sbatch to submit (one job, or one `--array`), one
//! `squeue --name <run tag>` per poll interval for every job of the run, `sacct` (or, without
//! accounting, `scontrol show job`) for exit codes, resource usage and jobs squeue dropped,
//! `scancel` to cancel. The engine owns the policy (rates, retries, grace windows, arrays,
//! kills, shutdown); README.md says what the user sees.

use std::{collections::BTreeSet, path::Path, time::Duration};

use flowrun_plugin_sdk::engine::{
    CommandOutput, Commands, Dialect, EngineDefaults, Job, JobContext, Judgement, Lookup,
    NativeStatus, Scope, Source, Submission, SubmitError, Verdict,
};
use parking_lot::Mutex;

use crate::{
    config::{SlurmKeys, DEFAULTS},
    slurm::{self, StateClass},
};

/// Whether `sacct` works on this cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accounting {
    Unknown,
    Works,
    /// "Slurm accounting storage is disabled": use scontrol, and never call sacct again.
    Disabled,
}

/// The Slurm dialect.
pub struct Slurm {
    keys: SlurmKeys,
    accounting: Mutex<Accounting>,
}

impl Slurm {
    pub fn new(keys: SlurmKeys) -> Slurm {
        Slurm {
            keys,
            accounting: Mutex::new(Accounting::Unknown),
        }
    }

    fn accounting(&self) -> Accounting {
        *self.accounting.lock()
    }

    /// The sbatch options shared by every job of a shape (and so, its array key).
    fn shape_args(&self, job: &Job, name: &str) -> Vec<String> {
        let k = &self.keys;
        let mut args = vec!["--parsable".to_string(), format!("--job-name={name}")];
        args.push(
            if k.requeue {
                "--requeue"
            } else {
                "--no-requeue"
            }
            .into(),
        );
        // Whole minutes (Slurm's resolution), rounded up.
        if let Some(minutes) = job.timeout_minutes() {
            args.push(format!("--time={minutes}"));
        }
        args.push(format!("--cpus-per-task={}", job.cpus.max(1)));
        if let Some(mb) = job.memory_mb {
            args.push(format!("--mem={mb}M"));
        }
        for (option, value) in [
            ("--partition", &k.partition),
            ("--account", &k.account),
            ("--qos", &k.qos),
        ] {
            if let Some(v) = value {
                args.push(format!("{option}={v}"));
            }
        }
        args.extend(k.sbatch_args.iter().cloned());
        args
    }

    /// Without accounting only the controller knows, and only for MinJobAge after the end: one
    /// scontrol call, for one job (array) id or for all jobs.
    fn scontrol_records(
        &self,
        cmd: &Commands,
        scope: &Scope,
        ids: &[String],
    ) -> Result<Vec<NativeStatus>, CommandOutput> {
        let bases: BTreeSet<&str> = ids
            .iter()
            .map(|n| n.split('_').next().unwrap_or(n))
            .collect();
        let mut args = vec!["show".to_string(), "job".into(), "-o".into()];
        if let (1, Some(base)) = (bases.len(), bases.first()) {
            args.push(base.to_string());
        }
        let out = cmd.run("scontrol", &args).checked()?;
        Ok(rows(slurm::parse_scontrol(&out.stdout, &scope.names)))
    }
}

fn rows(finals: Vec<slurm::FinalRow>) -> Vec<NativeStatus> {
    finals
        .into_iter()
        .map(|r| NativeStatus {
            id: r.id,
            state: r.state,
            reason: r.reason,
            exit_code: Some(r.exit_code),
            signal: Some(r.signal),
            usage: r.usage,
        })
        .collect()
}

impl Dialect for Slurm {
    fn scheduler(&self) -> &str {
        "Slurm"
    }

    fn defaults() -> EngineDefaults {
        DEFAULTS
    }

    fn script_name(&self) -> &str {
        "slurm-job.sh"
    }

    fn array_task_variable(&self) -> Option<&str> {
        Some("SLURM_ARRAY_TASK_ID")
    }

    fn array_first_index(&self) -> u32 {
        0
    }

    fn array_dir_name(&self) -> &str {
        "slurm-arrays"
    }

    fn shape(&self, job: &Job) -> String {
        // Jobs that would get the same sbatch options share an array (Slurm rounds time
        // limits up to minutes, so 61 s and 90 s do).
        self.shape_args(job, "").join("\u{1f}")
    }

    fn commands(&self) -> &[&str] {
        &["sbatch", "squeue", "sacct", "scontrol", "scancel"]
    }

    fn submit(&self, cmd: &Commands, unit: &Submission) -> Result<Vec<String>, SubmitError> {
        let first = &unit.jobs[0];
        let mut args = self.shape_args(first, &unit.name);
        match &unit.array {
            None => {
                args.push(format!(
                    "--output={}",
                    slurm::output_pattern(&first.log_path.to_string_lossy())
                ));
                args.push(format!("--chdir={}", first.cwd.display()));
                args.push(unit.scripts[0].to_string_lossy().into_owned());
            }
            Some(plan) => {
                // Each member writes its own log; Slurm's own per-task messages (such as
                // "CANCELLED DUE TO TIME LIMIT") go beside the dispatcher.
                let last = plan.first_index as usize + unit.jobs.len() - 1;
                let limit = plan.slot_limit.map(|l| format!("%{l}")).unwrap_or_default();
                args.push(format!("--array={}-{last}{limit}", plan.first_index));
                args.push(format!(
                    "--output={}/%A_%a.out",
                    slurm::output_pattern(&plan.dir.to_string_lossy())
                ));
                args.push(format!("--chdir={}", first.run_dir.display()));
                args.push(plan.dispatcher.to_string_lossy().into_owned());
            }
        }
        let id = cmd.submit("sbatch", &args, |out| slurm::parse_sbatch_id(&out.stdout))?;
        Ok(match &unit.array {
            None => vec![id],
            // Members are tracked and cancelled by their JobID (123_4), never the raw id.
            Some(plan) => (0..unit.jobs.len())
                .map(|i| format!("{id}_{}", plan.first_index as usize + i))
                .collect(),
        })
    }

    fn status(&self, cmd: &Commands, scope: &Scope) -> Result<Vec<NativeStatus>, CommandOutput> {
        let args = [
            "-h",
            "-r",
            "-t",
            "all",
            "-o",
            slurm::SQUEUE_FORMAT,
            &format!("--name={}", scope.names.join(",")),
        ]
        .map(String::from);
        let out = cmd.run("squeue", &args).checked()?;
        Ok(slurm::parse_squeue(&out.stdout)
            .into_iter()
            .map(|r| NativeStatus {
                id: r.id,
                state: r.state,
                reason: r.reason,
                ..Default::default()
            })
            .collect())
    }

    fn judge(&self, status: &NativeStatus, cx: &JobContext) -> Judgement {
        let state = status.state.as_str();
        let log_path = cx.job.log_path.to_string_lossy();
        match (slurm::classify(state), cx.source) {
            (StateClass::Queued, Source::Snapshot) if slurm::never_runs(&status.reason) => {
                // Slurm accepted a request it can never satisfy (for example more CPUs than
                // any node has): it would pend forever.
                Judgement::Stuck(format!(
                    "Slurm will never start this job: it is PENDING with reason {} \
                     (the request exceeds what the partition offers: check cpus, memory, \
                     time limit and partition)",
                    status.reason
                ))
            }
            (StateClass::Queued, _) => Judgement::Queued,
            (StateClass::Running, _) => Judgement::Running,
            (StateClass::Final, Source::Snapshot) if slurm::needs_exit_code(state) => {
                Judgement::FinalNeedsRecord {
                    fallback: Verdict::failed(format!(
                        "Slurm reported {state} ({}), exit code unknown",
                        status.reason
                    )),
                }
            }
            (StateClass::Final, source) => {
                let exit = match (source, status.exit_code, status.signal) {
                    (Source::Record, Some(n), Some(m)) => Some((n, m)),
                    _ => None,
                };
                let log_missing = state == "FAILED" && !Path::new(&*log_path).exists();
                Judgement::Final(slurm::outcome(
                    state,
                    exit,
                    cx.kill_requested,
                    &log_path,
                    log_missing,
                ))
            }
        }
    }

    fn looks_up(&self, why: Lookup) -> bool {
        match why {
            // The exit code of a FAILED job: from sacct, or else from scontrol.
            Lookup::Verdict => true,
            // Usage, and jobs squeue dropped, are only in the accounting database.
            Lookup::Usage | Lookup::Vanished => self.accounting() != Accounting::Disabled,
        }
    }

    fn final_records(
        &self,
        cmd: &Commands,
        scope: &Scope,
        ids: &[String],
    ) -> Result<Vec<NativeStatus>, CommandOutput> {
        if self.accounting() != Accounting::Disabled {
            // Only the jobs asked about (with -j, sacct looks back to the epoch): a query by
            // the run's name would return, and make us parse, every job of the run each time.
            let args = [
                "-n".to_string(),
                "-P".into(),
                "-o".into(),
                slurm::SACCT_FORMAT.into(),
                "-j".into(),
                ids.join(","),
            ];
            let out = cmd.run("sacct", &args);
            if out.ok() {
                *self.accounting.lock() = Accounting::Works;
                return Ok(rows(slurm::parse_sacct(&out.stdout)));
            }
            if !out.text().contains("accounting storage is disabled") {
                return Err(out);
            }
            tracing::info!(
                "Slurm accounting is disabled: exit codes come from scontrol from now on"
            );
            *self.accounting.lock() = Accounting::Disabled;
        }
        self.scontrol_records(cmd, scope, ids)
    }

    fn cancel(&self, cmd: &Commands, ids: &[String]) -> Result<(), CommandOutput> {
        // scancel is quiet and exits 0 for unknown or finished ids, so a failure means the
        // controller did not get the request.
        cmd.run("scancel", ids).checked().map(drop)
    }

    fn cancel_all(&self, cmd: &Commands, scope: &Scope) -> Result<(), CommandOutput> {
        cmd.run("scancel", &[format!("--name={}", scope.names.join(","))])
            .checked()
            .map(drop)
    }

    fn is_transient(&self, out: &CommandOutput) -> bool {
        slurm::is_transient(out)
    }

    fn vanished_reason(&self, native_id: &str, waited: Duration) -> String {
        if self.accounting() == Accounting::Disabled {
            format!(
                "Slurm job {native_id} vanished from squeue and accounting is disabled, \
                 so how it ended is unknown"
            )
        } else {
            format!(
                "Slurm job {native_id} vanished from squeue and sacct has no final state \
                 for it after {}s",
                waited.as_secs()
            )
        }
    }

    fn leftover_reason(&self, native_id: &str, waited: Duration) -> String {
        format!(
            "Slurm job {native_id} was cancelled but did not leave the queue within {}s; \
             check `squeue -j {native_id}`",
            waited.as_secs()
        )
    }

    fn stats(&self) -> Vec<(String, String)> {
        let accounting = match self.accounting() {
            Accounting::Works => "works",
            Accounting::Disabled => "disabled",
            Accounting::Unknown => "unknown",
        };
        vec![("accounting".into(), format!("\"{accounting}\""))]
    }
}
