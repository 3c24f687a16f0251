//! The command-template dialect of the cluster engine: every call the engine asks of a
//! dialect is one of the backend table's templates, every answer is read with its regexes, and
//! every native state means what the state table says. The engine owns the policy (rates,
//! retries, grace windows, kills, shutdown).
//!
//! Exit statuses come from the job itself: the job's script writes the command's exit status
//! into `<job_dir>/command-exit-status.<attempt>`, and a job that ended without its status in
//! the status query's row (or that left the queue, as Grid Engine's and PBS's jobs do when
//! they end) is judged from that file, read outside the engine's lock. Only jobs the file
//! does not explain (killed by the scheduler, or by a signal) are asked about with
//! `final_status`.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use flowrun_plugin_sdk::{
    engine::{
        script, CommandOutput, Commands, Dialect, Exit, Job, JobContext, Judgement, Lookup,
        NativeStatus, Scope, Source, Submission, SubmitError, Verdict,
    },
    PluginError,
};
use parking_lot::Mutex;
use regex::Regex;

use crate::{
    config::{CommandKeys, LogWriter},
    pattern::Category,
    template::{Template, Var},
};

/// The state of a record row that says only that nothing is known: the job left the queue,
/// and neither its exit status file nor `final_status` tells how it ended. (A NUL never comes
/// out of a regex over a scheduler's text, so it cannot clash with a native state.)
const NO_RECORD: &str = "\0no record";
/// The state of a row read from the exit status file when no snapshot showed a final state.
const FROM_FILE: &str = "\0exit status file";

/// Where the job's script writes the command's exit status: `command-exit-status.<attempt>`
/// in the job directory.
pub fn exit_status_path(job: &Job) -> PathBuf {
    script::exit_status_path(job, "command-exit-status")
}

/// The command-template dialect.
pub struct CommandDialect {
    keys: CommandKeys,
    /// The user flowrun runs as, for `{user}`.
    user: Option<String>,
    /// Native ids whose snapshot showed them ended (`done` or `failed`) without an exit
    /// status: the state and reason seen, so that the exit status read later is judged
    /// with them.
    awaiting: Mutex<HashMap<String, (String, String)>>,
    /// State names the table does not list that were seen (each is warned about once).
    unlisted: Mutex<HashSet<String>>,
}

/// The name of the user flowrun runs as.
fn current_user() -> Result<String, String> {
    match nix::unistd::User::from_uid(nix::unistd::getuid()) {
        Ok(Some(user)) => Ok(user.name),
        _ => std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| "cannot find the name of the user flowrun runs as".to_string()),
    }
}

/// A command that could not be made from its template, as a failed command (it cannot
/// happen for the placeholders `config` allows; this keeps a mistake from panicking).
fn unexpandable(template: &Template, why: String) -> CommandOutput {
    CommandOutput {
        program: template.program_hint(),
        exit: Exit::NotStarted {
            error: why,
            permanent: true,
        },
        stdout: String::new(),
        stderr: String::new(),
    }
}

/// `STATE`, or `STATE: REASON` when the row has a reason of its own.
fn described(row: &NativeStatus) -> String {
    if row.reason.is_empty() || row.reason == row.state {
        row.state.clone()
    } else {
        format!("{}: {}", row.state, row.reason)
    }
}

impl CommandDialect {
    pub fn new(keys: CommandKeys) -> Result<CommandDialect, PluginError> {
        let uses_user = [Some(&keys.submit), Some(&keys.status), Some(&keys.cancel)]
            .into_iter()
            .chain([
                keys.cancel_all.as_ref(),
                keys.final_status.as_ref().map(|q| &q.command),
            ])
            .flatten()
            .any(|t| t.uses(Var::User));
        let user = if uses_user {
            Some(current_user().map_err(PluginError::other)?)
        } else {
            None
        };
        Ok(CommandDialect {
            keys,
            user,
            awaiting: Mutex::new(HashMap::new()),
            unlisted: Mutex::new(HashSet::new()),
        })
    }

    /// Replaces the name `{user}` stands for.
    #[cfg(test)]
    pub fn set_user_for_tests(&mut self, name: &str) {
        self.user = Some(name.to_string());
    }

    /// The argv of a call about the run (`status`, `cancel`, `final_status`, `cancel_all`).
    fn call(
        &self,
        template: &Template,
        scope_names: &[String],
        ids: &[String],
    ) -> Result<Vec<String>, CommandOutput> {
        let names = scope_names.join(",");
        let value = |var: Var| match var {
            Var::RunTag => Some(names.clone()),
            Var::User => self.user.clone(),
            _ => None,
        };
        template
            .expand(&value, ids)
            .map_err(|why| unexpandable(template, why))
    }

    /// Runs a query; a failure whose output matches `ok` still answered (its rows count).
    fn query(
        &self,
        cmd: &Commands,
        argv: &[String],
        ok: Option<&Regex>,
    ) -> Result<CommandOutput, CommandOutput> {
        let out = cmd.run(&argv[0], &argv[1..]);
        let answered = out.code().is_some() && ok.is_some_and(|re| re.is_match(&out.text()));
        if out.ok() || answered {
            Ok(out)
        } else {
            Err(out)
        }
    }

    /// Runs a cancel; a failure is fine when it matches `cancel_ok` (the job had ended) and is
    /// not transient.
    fn cancel_with(&self, cmd: &Commands, argv: &[String]) -> Result<(), CommandOutput> {
        let out = cmd.run(&argv[0], &argv[1..]);
        let gone = out.code().is_some()
            && !self.is_transient(&out)
            && self
                .keys
                .cancel_ok
                .as_ref()
                .is_some_and(|re| re.is_match(&out.text()));
        if out.ok() || gone {
            Ok(())
        } else {
            Err(out)
        }
    }

    /// The verdict of a job that ended in `category`, with the exit status `exit` if known.
    fn ended(
        &self,
        category: Category,
        row: &NativeStatus,
        exit: Option<i32>,
        cx: &JobContext,
    ) -> Verdict {
        let sched = &self.keys.scheduler;
        let state = if row.state == FROM_FILE {
            "ended".to_string()
        } else {
            described(row)
        };
        let verdict = match (category, exit) {
            (Category::Done, Some(code)) => Verdict::Exited(code),
            (Category::Failed, Some(code)) if code != 0 => Verdict::Exited(code),
            (Category::Failed, Some(0)) => Verdict::Failed {
                reason: format!("{sched} reported {state} although the job's command exited 0"),
                exit_code: Some(0),
                ran: true,
            },
            (Category::Cancelled, _) => Verdict::Failed {
                reason: format!("cancelled outside flowrun ({sched} reported {state})"),
                exit_code: exit,
                ran: cx.started,
            },
            (Category::Timeout, _) => Verdict::Failed {
                reason: format!("{sched} time limit ({state})"),
                exit_code: exit,
                ran: true,
            },
            (_, _) => Verdict::Failed {
                reason: format!("{sched} reported {state}, and the job's exit status is unknown"),
                exit_code: None,
                ran: true,
            },
        };
        // A job flowrun asked to cancel that did not pass ended because of that request.
        if cx.kill_requested && verdict != Verdict::Exited(0) {
            Verdict::Killed
        } else {
            verdict
        }
    }

    /// Logs a state the table does not list, once per name.
    fn unlisted(&self, row: &NativeStatus) {
        if self.unlisted.lock().insert(row.state.clone()) {
            tracing::warn!(
                "{} job {} is in state {:?}, which `states` does not list: it counts as pending \
                 until it shows a listed state or leaves the queue",
                self.keys.scheduler,
                row.id,
                row.state
            );
        }
    }
}

impl Dialect for CommandDialect {
    fn scheduler(&self) -> &str {
        &self.keys.scheduler
    }

    /// The scheduler enforces time limits only when the submission passes them; otherwise
    /// the host kills a job that runs past its timeout.
    fn enforces_timeout(&self) -> bool {
        self.keys.submit.uses(Var::TimeoutS) || self.keys.submit.uses(Var::TimeoutMin)
    }

    fn script_name(&self) -> &str {
        "command-job.sh"
    }

    fn job_script(&self, job: &Job, in_array: bool) -> Result<String, String> {
        script::job_script(
            job,
            &script::ScriptOptions {
                generator: format!("flowrun's command backend ({})", self.keys.scheduler),
                redirect_to_log: in_array || self.keys.log_writer == LogWriter::Script,
                exit_status_file: Some(exit_status_path(job)),
                reserved_exit_codes: self.keys.reserved_exit_codes.clone(),
            },
        )
    }

    fn submit(&self, cmd: &Commands, unit: &Submission) -> Result<Vec<String>, SubmitError> {
        let (Some(job), Some(script), None) =
            (unit.jobs.first(), unit.scripts.first(), &unit.array)
        else {
            return Err(SubmitError::Rejected(
                "the command backend submits one job at a time".into(),
            ));
        };
        // Nothing of an earlier submission of this job directory may be read as this one's;
        // the log is fresh (the scheduler may append to it).
        script::remove_stale(&exit_status_path(job), "exit status file")?;
        std::fs::File::create(&job.log_path).map_err(|e| {
            SubmitError::Rejected(format!(
                "cannot create the log {}: {e}",
                job.log_path.display()
            ))
        })?;
        // Some schedulers run the script as a command (LSF): it must be executable.
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).map_err(|e| {
            SubmitError::Rejected(format!("cannot make {} executable: {e}", script.display()))
        })?;
        let path = |p: &Path| Some(p.to_string_lossy().into_owned());
        let value = |var: Var| match var {
            Var::Script => path(script),
            Var::Log => path(&job.log_path),
            Var::JobDir => path(&job.job_dir),
            Var::Cwd => path(&job.cwd),
            Var::RunTag => Some(unit.name.clone()),
            Var::Name => Some(job.name.clone()),
            Var::Cpus => Some(job.cpus.max(1).to_string()),
            Var::MemoryMb => job.memory_mb.map(|m| m.to_string()),
            Var::TimeoutS => job.timeout_secs().map(|s| s.to_string()),
            Var::TimeoutMin => job.timeout_minutes().map(|m| m.to_string()),
            Var::User => self.user.clone(),
            Var::Ids => None,
        };
        let argv = self
            .keys
            .submit
            .expand(&value, &[])
            .map_err(SubmitError::Rejected)?;
        let out = cmd
            .run(&argv[0], &argv[1..])
            .checked()
            .map_err(SubmitError::Command)?;
        let id = self.keys.submit_id.find(&out.stdout).ok_or_else(|| {
            SubmitError::Rejected(format!(
                "cannot find a job id in what {} printed ({:?}): check `submit_id`",
                argv[0],
                out.stdout.trim()
            ))
        })?;
        Ok(vec![id])
    }

    fn status(&self, cmd: &Commands, scope: &Scope) -> Result<Vec<NativeStatus>, CommandOutput> {
        let argv = self.call(&self.keys.status, &scope.names, &scope.ids)?;
        let out = self.query(cmd, &argv, self.keys.status_ok.as_ref())?;
        Ok(self.keys.status_rows.rows(&out.stdout))
    }

    fn judge(&self, row: &NativeStatus, cx: &JobContext) -> Judgement {
        let sched = &self.keys.scheduler;
        if cx.source == Source::Record {
            if row.state == NO_RECORD {
                return if cx.kill_requested {
                    // It left the queue after flowrun cancelled it.
                    self.awaiting.lock().remove(&row.id);
                    Judgement::Final(Verdict::Killed)
                } else {
                    Judgement::Queued
                };
            }
            let category = if row.state == FROM_FILE {
                Some(Category::Done)
            } else {
                self.keys.states.of(row)
            };
            return match category {
                Some(category) if category.is_final() => {
                    self.awaiting.lock().remove(&row.id);
                    Judgement::Final(self.ended(category, row, row.exit_code, cx))
                }
                Some(_) => Judgement::Queued,
                None => {
                    self.unlisted(row);
                    Judgement::Queued
                }
            };
        }
        let Some(category) = self.keys.states.of(row) else {
            self.unlisted(row);
            return Judgement::Queued;
        };
        match category {
            Category::Pending => Judgement::Queued,
            Category::Running | Category::Suspended => Judgement::Running,
            Category::Stuck => Judgement::Stuck(format!(
                "{sched} will never start this job: it is {} (listed under `states.stuck`)",
                described(row)
            )),
            Category::Unknown => Judgement::Unknown(format!(
                "{sched} showed job {} as {} (listed under `states.unknown`) for longer than \
                 lost_after",
                row.id,
                described(row)
            )),
            Category::Done | Category::Failed if row.exit_code.is_none() => {
                // The exit status is in the job's file (or the final-status query).
                self.awaiting
                    .lock()
                    .insert(row.id.clone(), (row.state.clone(), row.reason.clone()));
                let mut fallback = self.ended(category, row, None, cx);
                if let Verdict::Failed { reason, .. } = &mut fallback {
                    reason.push_str(&format!(
                        " (its script wrote no {} in time)",
                        exit_status_path(cx.job).display()
                    ));
                }
                Judgement::FinalNeedsRecord { fallback }
            }
            category => Judgement::Final(self.ended(category, row, row.exit_code, cx)),
        }
    }

    fn looks_up(&self, why: Lookup) -> bool {
        // Verdicts and vanished jobs: the exit status file, then `final_status`. There is no
        // source of resource usage.
        why != Lookup::Usage
    }

    fn record_in_job_files(&self, job: &Job, native_id: &str) -> Option<NativeStatus> {
        let code = script::read_exit_status(&exit_status_path(job))?;
        let (state, reason) = self
            .awaiting
            .lock()
            .get(native_id)
            .cloned()
            .unwrap_or_else(|| (FROM_FILE.to_string(), String::new()));
        Some(NativeStatus {
            id: native_id.to_string(),
            state,
            reason,
            exit_code: Some(code),
            ..Default::default()
        })
    }

    fn final_records(
        &self,
        cmd: &Commands,
        scope: &Scope,
        ids: &[String],
    ) -> Result<Vec<NativeStatus>, CommandOutput> {
        let mut rows = Vec::new();
        if let Some(query) = &self.keys.final_status {
            let argv = self.call(&query.command, &scope.names, ids)?;
            let out = self.query(cmd, &argv, query.ok.as_ref())?;
            rows = query.rows.rows(&out.stdout);
        }
        let known: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
        rows.extend(
            ids.iter()
                .filter(|id| !known.contains(*id))
                .map(|id| NativeStatus {
                    id: id.clone(),
                    state: NO_RECORD.into(),
                    ..Default::default()
                }),
        );
        Ok(rows)
    }

    fn cancel(&self, cmd: &Commands, ids: &[String]) -> Result<(), CommandOutput> {
        let argv = self.call(&self.keys.cancel, &[], ids)?;
        self.cancel_with(cmd, &argv)
    }

    fn cancel_all(&self, cmd: &Commands, scope: &Scope) -> Result<(), CommandOutput> {
        match &self.keys.cancel_all {
            Some(template) => {
                let argv = self.call(template, &scope.names, &[])?;
                self.cancel_with(cmd, &argv)
            }
            None => Ok(()),
        }
    }

    fn is_transient(&self, out: &CommandOutput) -> bool {
        self.keys.transient.is_match(&out.text())
    }

    fn vanished_reason(&self, native_id: &str, waited: Duration) -> String {
        let why = if self.keys.final_status.is_some() {
            format!(
                "neither an exit status from its script nor `final_status` told how it ended \
                 within {}s",
                waited.as_secs()
            )
        } else {
            format!(
                "its script wrote no exit status within {}s, and there is no `final_status` \
                 to ask",
                waited.as_secs()
            )
        };
        format!(
            "{} job {native_id} left the queue, but {why} (killed by the scheduler, by a \
             signal, or from outside flowrun?)",
            self.keys.scheduler
        )
    }
}
