//! The `[backends.NAME]` table of a `kind = "command"` backend: the cluster engine's keys
//! (`docs/engine.md`) plus the templates, regexes and state table of README.md, each checked
//! here so that a mistake is an error naming its key when the backend is created.

use flowrun_plugin_api::{
    engine::{self, EngineConfig, EngineDefaults},
    PluginError,
};
use regex::Regex;

use crate::{
    pattern::{self, IdPattern, RowPattern, States},
    template::{Template, Var, CANCEL_VARS, ID_CALL_VARS, RUN_CALL_VARS, SUBMIT_VARS},
};

/// The backend's own keys (beside the engine's).
const KEYS: &[&str] = &[
    "scheduler",
    "submit",
    "submit_id",
    "status",
    "status_line",
    "status_record",
    "status_ok",
    "states",
    "cancel",
    "cancel_ok",
    "cancel_all",
    "final_status",
    "final_status_line",
    "final_status_record",
    "final_status_ok",
    "transient",
    "log_writer",
    "reserved_exit_codes",
];

/// Failures worth retrying when the table has no `transient`: words any client prints when it
/// cannot reach its server, whatever the scheduler.
pub const DEFAULT_TRANSIENT: &str = r"(?i)connection refused|connection reset|connection timed out|timed out|try again|temporarily unavailable|unable to contact|not responding|unreachable|no route to host|broken pipe";

/// Who writes the job's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogWriter {
    /// The job's script sends the command's output to `{log}` itself; the scheduler's own
    /// output option points elsewhere. The log then holds the job's output alone, whatever
    /// the scheduler appends to its output files (LSF's report, PBS's epilogue).
    Script,
    /// The scheduler writes `{log}` (the submit template passes it, as `-o {log}`).
    Scheduler,
}

/// A query of final states, for jobs the status query no longer shows.
#[derive(Debug, Clone)]
pub struct FinalQuery {
    pub command: Template,
    pub rows: RowPattern,
    pub ok: Option<Regex>,
}

/// The backend's own keys, checked.
#[derive(Debug, Clone)]
pub struct CommandKeys {
    pub scheduler: String,
    pub submit: Template,
    pub submit_id: IdPattern,
    pub status: Template,
    pub status_rows: RowPattern,
    pub status_ok: Option<Regex>,
    pub states: States,
    pub cancel: Template,
    pub cancel_ok: Option<Regex>,
    pub cancel_all: Option<Template>,
    pub final_status: Option<FinalQuery>,
    pub transient: Regex,
    pub log_writer: LogWriter,
    pub reserved_exit_codes: Vec<i32>,
}

fn missing(key: &str, example: &str) -> PluginError {
    PluginError::config(key, format!("is missing: {example}"))
}

fn text<'a>(table: &'a toml::Table, key: &str) -> Result<Option<&'a str>, PluginError> {
    match table.get(key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| {
            PluginError::config(key, format!("must be a string, not {}", v.type_str()))
        }),
    }
}

/// One of two keys (`NAME_line`, `NAME_record`) giving a row regex.
fn row_pattern(
    table: &toml::Table,
    line_key: &str,
    record_key: &str,
) -> Result<Option<RowPattern>, PluginError> {
    match (text(table, line_key)?, text(table, record_key)?) {
        (Some(_), Some(_)) => Err(PluginError::config(
            record_key,
            format!(
                "give `{line_key}` (a regex matched on each line) or `{record_key}` (matched \
                 over the whole output), not both"
            ),
        )),
        (Some(line), None) => RowPattern::parse(line_key, line, true).map(Some),
        (None, Some(record)) => RowPattern::parse(record_key, record, false).map(Some),
        (None, None) => Ok(None),
    }
}

fn message(table: &toml::Table, key: &str) -> Result<Option<Regex>, PluginError> {
    text(table, key)?
        .map(|t| pattern::message(key, t))
        .transpose()
}

/// Parses and checks the TOML text of the backend table.
pub fn parse(text_of_table: &str) -> Result<(EngineConfig, CommandKeys), PluginError> {
    let (engine, table): (EngineConfig, toml::Table) =
        engine::parse_config(text_of_table, &EngineDefaults::STANDARD)?;
    if let Some(unknown) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(PluginError::config(
            unknown,
            format!(
                "is not a key of the command backend; its keys are {}, and the cluster \
                 engine's: {}",
                KEYS.join(", "),
                engine::ENGINE_KEYS.join(", ")
            ),
        ));
    }
    // The engine's `arrays` would be silently ignored: one template submits one job.
    if engine.arrays {
        return Err(PluginError::config(
            "arrays",
            "the command backend submits one job per `submit` call, never arrays: remove \
             `arrays = true`",
        ));
    }
    let template = |key: &str, vars: &[Var]| -> Result<Option<Template>, PluginError> {
        table
            .get(key)
            .map(|v| Template::parse(key, v, vars))
            .transpose()
    };

    let submit = template("submit", SUBMIT_VARS)?.ok_or_else(|| {
        missing(
            "submit",
            "the command that submits one job's script, such as \
             [\"qsub\", \"-N\", \"{run_tag}\", \"-o\", \"{job_dir}/scheduler.out\", \"{script}\"]",
        )
    })?;
    if !submit.uses(Var::Script) {
        return Err(PluginError::config(
            "submit",
            "never passes {script}, the job's script: the scheduler would not run the job",
        ));
    }
    let log_writer = match text(&table, "log_writer")? {
        None | Some("script") => LogWriter::Script,
        Some("scheduler") => LogWriter::Scheduler,
        Some(other) => {
            return Err(PluginError::config(
                "log_writer",
                format!("{other:?} is neither \"script\" nor \"scheduler\""),
            ))
        }
    };
    match (log_writer, submit.uses(Var::Log)) {
        (LogWriter::Script, true) => {
            return Err(PluginError::config(
                "submit",
                "passes {log}, which the job's script writes itself (log_writer = \"script\", \
                 the default): send the scheduler's output elsewhere, such as \
                 \"{job_dir}/scheduler.out\", or set log_writer = \"scheduler\"",
            ))
        }
        (LogWriter::Scheduler, false) => {
            return Err(PluginError::config(
                "submit",
                "never passes {log}, though log_writer = \"scheduler\" says the scheduler \
                 writes it (as in \"-o\", \"{log}\")",
            ))
        }
        _ => {}
    }
    let submit_id = IdPattern::parse(
        "submit_id",
        text(&table, "submit_id")?.ok_or_else(|| {
            missing(
                "submit_id",
                "a regex finding the native id in the submission's output, such as '^(\\d+)'",
            )
        })?,
    )?;

    let status = template("status", ID_CALL_VARS)?.ok_or_else(|| {
        missing(
            "status",
            "the one command that shows every job of the run, such as [\"qstat\", \"-u\", \"{user}\"]",
        )
    })?;
    let status_rows = row_pattern(&table, "status_line", "status_record")?.ok_or_else(|| {
        missing(
            "status_line",
            "a regex reading one job's row of the status output, with groups `id` and `state`",
        )
    })?;
    let status_ok = message(&table, "status_ok")?;
    let states = States::parse(table.get("states").ok_or_else(|| {
        missing(
            "states",
            "what each native state means, such as { pending = [\"qw\"], running = [\"r\"] }",
        )
    })?)?;

    let cancel = template("cancel", CANCEL_VARS)?.ok_or_else(|| {
        missing(
            "cancel",
            "the command that cancels jobs by id, such as [\"qdel\", \"{ids}\"]",
        )
    })?;
    if !cancel.uses(Var::Ids) {
        return Err(PluginError::config(
            "cancel",
            "never passes {ids}, the jobs to cancel",
        ));
    }
    let cancel_ok = message(&table, "cancel_ok")?;
    let cancel_all = template("cancel_all", RUN_CALL_VARS)?;
    if let Some(all) = &cancel_all {
        if !all.uses(Var::RunTag) {
            return Err(PluginError::config(
                "cancel_all",
                "never passes {run_tag}: it must cancel this run's jobs, by their name",
            ));
        }
    }
    for (key, by_name) in [
        (
            "cancel_all",
            cancel_all.as_ref().is_some_and(|t| t.uses(Var::RunTag)),
        ),
        ("status", status.uses(Var::RunTag)),
    ] {
        if by_name && !submit.uses(Var::RunTag) {
            return Err(PluginError::config(
                "submit",
                format!(
                    "never passes {{run_tag}} as the job's name, but `{key}` finds the run's \
                     jobs by it"
                ),
            ));
        }
    }

    let final_command = template("final_status", ID_CALL_VARS)?;
    let final_rows = row_pattern(&table, "final_status_line", "final_status_record")?;
    let final_ok = message(&table, "final_status_ok")?;
    let final_status = match (final_command, final_rows) {
        (Some(command), Some(rows)) => Some(FinalQuery {
            command,
            rows,
            ok: final_ok,
        }),
        (Some(_), None) => {
            return Err(missing(
                "final_status_line",
                "`final_status` needs a regex for its rows (or `final_status_record`)",
            ))
        }
        (None, Some(_)) => {
            return Err(PluginError::config(
                "final_status",
                "is missing, but a regex for its rows is given",
            ))
        }
        (None, None) if final_ok.is_some() => {
            return Err(PluginError::config(
                "final_status_ok",
                "is given without `final_status`",
            ))
        }
        (None, None) => None,
    };

    let transient = pattern::message(
        "transient",
        text(&table, "transient")?.unwrap_or(DEFAULT_TRANSIENT),
    )?;
    let scheduler = match text(&table, "scheduler")? {
        Some(name) if name.trim().is_empty() => {
            return Err(PluginError::config("scheduler", "must not be empty"))
        }
        Some(name) => name.to_string(),
        None => submit.program_hint(),
    };
    let reserved_exit_codes = match table.get("reserved_exit_codes") {
        None => Vec::new(),
        Some(value) => {
            let bad = || {
                PluginError::config(
                    "reserved_exit_codes",
                    "must be a list of exit statuses from 1 to 255, such as [99, 100]",
                )
            };
            let list = value.as_array().ok_or_else(bad)?;
            list.iter()
                .map(|v| match v.as_integer() {
                    Some(n @ 1..=255) => Ok(n as i32),
                    _ => Err(bad()),
                })
                .collect::<Result<Vec<i32>, PluginError>>()?
        }
    };
    Ok((
        engine,
        CommandKeys {
            scheduler,
            submit,
            submit_id,
            status,
            status_rows,
            status_ok,
            states,
            cancel,
            cancel_ok,
            cancel_all,
            final_status,
            transient,
            log_writer,
            reserved_exit_codes,
        },
    ))
}
