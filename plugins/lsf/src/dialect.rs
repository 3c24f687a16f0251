//! LSF's dialect for the cluster engine: bsub to submit (one job, or one array with a slot
//! limit), one `bjobs -o ... IDS` per poll interval for every job of the run, the job report
//! LSF writes into each job's directory for final states, usage and jobs bjobs has forgotten
//! (after CLEAN_PERIOD), bkill to cancel. The engine owns the policy; README.md says what the
//! user sees.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use flowrun_plugin_sdk::engine::{
    script, CommandOutput, Commands, Dialect, EngineDefaults, Job, JobContext, Judgement, Lookup,
    NativeStatus, Scope, Submission, SubmitError, Verdict,
};

use crate::{
    config::{LsfKeys, DEFAULTS},
    lsf::{self, StateClass, REPORT_FILE},
};

/// The LSF dialect.
pub struct Lsf {
    keys: LsfKeys,
}

impl Lsf {
    pub fn new(keys: LsfKeys) -> Lsf {
        Lsf { keys }
    }

    /// The bsub options every job of a shape shares (and so, its array key).
    fn shape_args(&self, job: &Job) -> Vec<String> {
        let mut args = Vec::new();
        // Whole minutes (LSF's resolution), rounded up.
        if let Some(minutes) = job.timeout_minutes() {
            args.extend(["-W".to_string(), minutes.to_string()]);
        }
        let cpus = job.cpus.max(1);
        if cpus > 1 {
            args.extend(["-n".to_string(), cpus.to_string()]);
        }
        // Units written out, so that LSF_UNIT_FOR_LIMITS (KB by default) does not matter.
        let mut rusage = Vec::new();
        if let Some(mb) = job.memory_mb {
            args.extend(["-M".to_string(), format!("{mb}MB")]);
            rusage.push(format!("mem={mb}MB"));
        }
        let mut named = job.named_resources.clone();
        named.sort();
        for (name, amount) in &named {
            if let Some(lsf_name) = self.keys.resource_map.get(name) {
                rusage.push(format!("{lsf_name}={amount}"));
            }
        }
        let mut request = Vec::new();
        if !rusage.is_empty() {
            request.push(format!("rusage[{}]", rusage.join(":")));
        }
        if cpus > 1 {
            request.push("span[hosts=1]".to_string()); // all its slots on one host
        }
        if !request.is_empty() {
            args.extend(["-R".to_string(), request.join(" ")]);
        }
        for (option, value) in [("-q", &self.keys.queue), ("-P", &self.keys.project)] {
            if let Some(v) = value {
                args.extend([option.to_string(), v.clone()]);
            }
        }
        args.extend(self.keys.bsub_args.iter().cloned());
        args
    }
}

/// A path for a bsub option, refused if LSF would rewrite it (`%J`, `%I`).
fn lsf_path(path: &Path) -> Result<String, SubmitError> {
    let text = path.to_string_lossy().into_owned();
    if text.contains("%J") || text.contains("%I") {
        return Err(SubmitError::Rejected(format!(
            "the path {text} holds %J or %I, which LSF would replace by the job id or index: \
             use another run or working directory"
        )));
    }
    Ok(text)
}

/// One `-oo` pattern names every element's report: `<links>/%I/lsf-report.txt`, where
/// `<links>/<index>` is a link to the element's job directory. Every job's report is then in
/// its own job directory, array element or not.
fn link_job_dirs(dispatcher: &Path, first_index: u32, jobs: &[Job]) -> Result<PathBuf, String> {
    let links = dispatcher.with_extension("jobs");
    std::fs::create_dir_all(&links)
        .map_err(|e| format!("cannot create {}: {e}", links.display()))?;
    for (i, job) in jobs.iter().enumerate() {
        let link = links.join((first_index as usize + i).to_string());
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&job.job_dir, &link)
            .map_err(|e| format!("cannot create the link {}: {e}", link.display()))?;
    }
    Ok(links)
}

impl Dialect for Lsf {
    fn scheduler(&self) -> &str {
        "LSF"
    }

    fn defaults() -> EngineDefaults {
        DEFAULTS
    }

    fn script_name(&self) -> &str {
        "lsf-job.sh"
    }

    fn job_script(&self, job: &Job, _in_array: bool) -> Result<String, String> {
        // The script writes the job's output to its log itself: LSF writes its job report into
        // the -o file, which must not be read (nor counted in line numbers) as the job's.
        script::job_script(
            job,
            &script::ScriptOptions {
                redirect_to_log: true,
                ..script::ScriptOptions::new("flowrun's LSF backend")
            },
        )
    }

    fn array_task_variable(&self) -> Option<&str> {
        Some("LSB_JOBINDEX")
    }

    fn array_dir_name(&self) -> &str {
        "lsf-arrays"
    }

    fn shape(&self, job: &Job) -> String {
        self.shape_args(job).join("\u{1f}")
    }

    fn commands(&self) -> &[&str] {
        &["bsub", "bjobs", "bkill"]
    }

    fn submit(&self, cmd: &Commands, unit: &Submission) -> Result<Vec<String>, SubmitError> {
        let first = &unit.jobs[0];
        for job in &unit.jobs {
            script::remove_stale(&job.job_dir.join(REPORT_FILE), "LSF job report")?;
        }
        let (name, report) = match &unit.array {
            None => (
                unit.name.clone(),
                lsf_path(&first.job_dir.join(REPORT_FILE))?,
            ),
            Some(plan) => {
                let last = plan.first_index + unit.jobs.len() as u32 - 1;
                let limit = plan.slot_limit.map(|l| format!("%{l}")).unwrap_or_default();
                let links = link_job_dirs(&plan.dispatcher, plan.first_index, &unit.jobs)
                    .map_err(SubmitError::Rejected)?;
                (
                    format!("{}[{}-{last}]{limit}", unit.name, plan.first_index),
                    format!("{}/%I/{REPORT_FILE}", lsf_path(&links)?),
                )
            }
        };
        let mut args = vec![
            "-J".to_string(),
            name,
            "-oo".into(),
            report,
            "-cwd".into(),
            lsf_path(unit.workdir())?,
        ];
        args.extend(self.shape_args(first));
        // LSF runs the command line with /bin/sh; the script is bash.
        let script =
            script::quote(&unit.script().to_string_lossy()).map_err(SubmitError::Rejected)?;
        args.push(format!("/bin/bash {script}"));
        let out = cmd.run("bsub", &args);
        if !out.ok() {
            // Exit 255 without a word is what a dropped connection (ssh, a wrapper) gives: the
            // job may have been submitted all the same.
            if out.code() == Some(255) && out.text().trim().is_empty() {
                return Err(SubmitError::Ambiguous(out));
            }
            return Err(SubmitError::Command(out));
        }
        let id = lsf::parse_bsub_id(&out).ok_or_else(|| {
            SubmitError::Rejected(format!(
                "cannot read a job id in bsub's output {:?}",
                out.text().trim()
            ))
        })?;
        Ok(unit.native_ids(&id, lsf::native_id))
    }

    fn status(&self, cmd: &Commands, scope: &Scope) -> Result<Vec<NativeStatus>, CommandOutput> {
        // By id: bjobs shows the jobs named by id in any state mbatchd still holds, and an
        // array's id shows all its elements.
        let mut ids: Vec<&str> = scope.ids.iter().map(|id| lsf::base_id(id)).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![
            "-noheader".to_string(),
            "-o".into(),
            lsf::BJOBS_FORMAT.into(),
        ];
        args.extend(ids.iter().map(|id| id.to_string()));
        let out = cmd.run("bjobs", &args);
        if !out.ok() && !lsf::only_not_found(&out.stderr) {
            return Err(out);
        }
        Ok(lsf::parse_bjobs(&out.stdout)
            .into_iter()
            .map(|r| NativeStatus {
                id: r.id,
                state: r.stat,
                reason: r.exit_reason,
                exit_code: r.exit_code,
                ..Default::default()
            })
            .collect())
    }

    fn judge(&self, status: &NativeStatus, cx: &JobContext) -> Judgement {
        let id = &status.id;
        match lsf::classify(&status.state) {
            StateClass::Queued => Judgement::Queued,
            StateClass::Running => Judgement::Running,
            StateClass::Suspended(why) => Judgement::Suspended(why.into()),
            StateClass::Unknown => Judgement::Unknown(format!(
                "LSF showed job {id} as UNKWN (mbatchd lost contact with its execution host) for \
                 longer than lost_after; it may still be running there: check `bjobs -l {id}`"
            )),
            StateClass::Done => Judgement::Final(Verdict::Exited(0)),
            StateClass::Exit => match lsf::exit_verdict(
                status.exit_code,
                status.signal,
                &status.reason,
                cx.kill_requested,
            ) {
                Some(verdict) => Judgement::Final(verdict),
                None => Judgement::FinalNeedsRecord {
                    fallback: Verdict::failed("LSF reported EXIT without an exit code or reason"),
                },
            },
            StateClass::Zombie if cx.kill_requested => Judgement::Final(Verdict::Killed),
            StateClass::Zombie => Judgement::Final(Verdict::Failed {
                reason: "LSF lost contact with the job's execution host and gave the job up \
                         (ZOMBI)"
                    .into(),
                exit_code: None,
                ran: cx.started,
            }),
            StateClass::PostError => Judgement::Final(Verdict::Failed {
                reason: "LSF post-execution processing failed (POST_ERR)".into(),
                exit_code: status.exit_code,
                ran: true,
            }),
        }
    }

    fn looks_up(&self, _why: Lookup) -> bool {
        // The job report has the usage, the exit code bjobs may lack, and the end of a job
        // bjobs has forgotten.
        true
    }

    fn record_in_job_files(&self, job: &Job, native_id: &str) -> Option<NativeStatus> {
        let text = std::fs::read_to_string(job.job_dir.join(REPORT_FILE)).ok()?;
        let report = lsf::parse_report(&text).filter(|r| r.id == native_id)?;
        Some(NativeStatus {
            id: report.id,
            state: if report.done { "DONE" } else { "EXIT" }.into(),
            reason: report.reason,
            exit_code: report.exit_code,
            signal: report.signal,
            usage: Some(report.usage),
        })
    }

    fn cancel(&self, cmd: &Commands, ids: &[String]) -> Result<(), CommandOutput> {
        // bkill exits 255 if any job was not signalled; a job that has ended (or that LSF has
        // forgotten) counts as cancelled.
        let out = cmd.run("bkill", ids);
        if out.ok() || lsf::bkill_only_ended(&out.stderr) {
            Ok(())
        } else {
            Err(out)
        }
    }

    fn cancel_all(&self, cmd: &Commands, scope: &Scope) -> Result<(), CommandOutput> {
        // `0` with -J: every job of that name (without it, bkill -J kills only the last one).
        for name in &scope.names {
            let out = cmd.run("bkill", &["-J".to_string(), name.clone(), "0".into()]);
            if !out.ok() && !lsf::bkill_only_ended(&out.stderr) {
                return Err(out);
            }
        }
        Ok(())
    }

    fn is_transient(&self, out: &CommandOutput) -> bool {
        lsf::is_transient(out)
    }

    fn vanished_reason(&self, native_id: &str, waited: Duration) -> String {
        format!(
            "LSF job {native_id} is no longer known to bjobs (LSF forgets finished jobs after \
             CLEAN_PERIOD) and no job report of it ({REPORT_FILE} in its job directory) was \
             found within {}s",
            waited.as_secs()
        )
    }

    fn leftover_reason(&self, native_id: &str, waited: Duration) -> String {
        format!(
            "LSF job {native_id} was killed but did not end within {}s; check `bjobs -l \
             {native_id}`",
            waited.as_secs()
        )
    }
}
