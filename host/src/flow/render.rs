//! Text renderings of a loaded flow: the plan that `flowrun run --dry-run` prints and the
//! Graphviz graph of `flowrun graph`.
//!
//! The plan is for reading: one line per job with what it runs, then an indented line for each
//! setting that differs from the default. Every line is bounded, whatever the flow: a job that
//! needs a 100,000-job glob lists a few names and counts the rest, and long commands and
//! patterns are cut (the graph, which is for tools, keeps every edge).

use std::fmt::Write as _;

use super::{
    diag::printable_within,
    model::{Command, Flow, Job, RetryOn, When},
};

/// At most this many names of a job's `needs` are listed; the rest are counted.
const MAX_NEEDS_SHOWN: usize = 8;
/// Commands, patterns and other values are cut to this many characters.
const MAX_VALUE_CHARS: usize = 200;

/// `text` on one line, cut to [`MAX_VALUE_CHARS`]: line breaks and other control characters
/// are written as escapes (a multi-line `cmd` stays one line of the plan).
fn one_line(text: &str) -> String {
    printable_within(text, MAX_VALUE_CHARS).into_owned()
}

/// "1 job", "2 jobs".
fn jobs_count(n: usize) -> String {
    if n == 1 {
        "1 job".to_string()
    } else {
        format!("{n} jobs")
    }
}

/// `a, b, c`, or `a, b, ... and 92 more (100 jobs)` for long lists.
fn needs_line(flow: &Flow, job: &Job) -> String {
    let names = job
        .needs
        .iter()
        .take(MAX_NEEDS_SHOWN)
        .map(|&d| flow.jobs[d as usize].name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if job.needs.len() <= MAX_NEEDS_SHOWN {
        names
    } else {
        format!(
            "{names}, ... and {} more ({})",
            job.needs.len() - MAX_NEEDS_SHOWN,
            jobs_count(job.needs.len())
        )
    }
}

fn resources_line(flow: &Flow, job: &Job) -> Option<String> {
    if job.cpus == 1 && job.memory_mb.is_none() && job.resources.is_empty() {
        return None;
    }
    let mut parts = vec![format!("cpus {}", job.cpus)];
    if let Some(mb) = job.memory_mb {
        parts.push(format!("memory {mb} MiB"));
    }
    for &(id, amount) in &job.resources {
        parts.push(format!("{} {amount}", flow.resources[id as usize].0));
    }
    Some(parts.join(", "))
}

/// `2 on exit_code, lost, backoff 30s (doubling)`, for a job with `retries`.
fn retries_line(job: &Job) -> Option<String> {
    if job.retries == 0 {
        return None;
    }
    let on = if job.retry_on == RetryOn::ANY {
        "any failure".to_string()
    } else {
        let kinds = RetryOn::KINDS.iter().filter(|k| job.retry_on.covers(k));
        kinds.copied().collect::<Vec<_>>().join(", ")
    };
    let mut line = format!("{} on {on}", job.retries);
    if !job.retry_backoff.is_zero() {
        let backoff = humantime::format_duration(job.retry_backoff);
        line.push_str(&format!(", backoff {backoff} (doubling)"));
    }
    Some(line)
}

/// Patterns as written, each in backquotes.
fn patterns_line<'a>(sources: impl Iterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = sources.map(|p| format!("`{p}`")).collect();
    one_line(&quoted.join(" "))
}

/// The expanded plan: every job with its backend, command and non-default settings, then the
/// number of jobs per backend. Nothing is started.
pub fn plan(flow: &Flow) -> String {
    let mut s = String::new();
    for job in &flow.jobs {
        let cmd = match &job.cmd {
            Command::Shell(c) => one_line(c),
            Command::Argv(v) => one_line(&format!("{v:?}")),
        };
        let priority = if job.priority == 0 {
            String::new()
        } else {
            format!(", priority {}", job.priority)
        };
        let _ = writeln!(
            s,
            "{}  [backend {}{priority}]  {cmd}",
            job.name, flow.backends[job.backend].name
        );
        let mut detail = |key: &str, value: &str| {
            let _ = writeln!(s, "    {key}: {value}");
        };
        if !job.needs.is_empty() {
            detail("needs", &needs_line(flow, job));
        }
        match job.when {
            When::AllPassed => {}
            When::AnyPassed => detail("when", "any-passed"),
            When::Always => detail("when", "always"),
        }
        if let Some(resources) = resources_line(flow, job) {
            detail("resources", &resources);
        }
        if let Some((_, written)) = &job.timeout {
            detail("timeout", &one_line(written));
        }
        if let Some(retries) = retries_line(job) {
            detail("retries", &retries);
        }
        if let Some(patterns) = &job.patterns {
            if !patterns.pass.is_empty() {
                detail(
                    "pass",
                    &patterns_line(patterns.pass.iter().map(|r| r.as_str())),
                );
            }
            if !patterns.fail_sources.is_empty() {
                detail(
                    "fail",
                    &patterns_line(patterns.fail_sources.iter().map(String::as_str)),
                );
            }
        }
        if let Some(cwd) = &job.cwd {
            detail("cwd", &one_line(&cwd.display().to_string()));
        }
        if !job.env.is_empty() {
            let env: Vec<String> = job.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            detail("env", &one_line(&env.join(" ")));
        }
        if !job.attrs.is_empty() {
            let attrs: Vec<String> = job.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            detail("attrs", &one_line(&attrs.join(" ")));
        }
        if job.interactive {
            detail("interactive", "yes (holds the terminal)");
        }
    }
    let mut per_backend = vec![0usize; flow.backends.len()];
    for job in &flow.jobs {
        per_backend[job.backend] += 1;
    }
    let on: Vec<String> = flow
        .backends
        .iter()
        .zip(&per_backend)
        .filter(|(_, &n)| n > 0)
        .map(|(b, n)| format!("{n} on {}", b.name))
        .collect();
    let _ = writeln!(s, "{}: {}", jobs_count(flow.jobs.len()), on.join(", "));
    s
}

/// The flow as a Graphviz DOT digraph (edges from a dependency to its dependent).
pub fn graph(flow: &Flow) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut s = format!("digraph {} {{\n  rankdir=LR;\n", q(&flow.name));
    for job in &flow.jobs {
        let _ = writeln!(s, "  {};", q(&job.name));
    }
    for job in &flow.jobs {
        for &d in &job.needs {
            let _ = writeln!(
                s,
                "  {} -> {};",
                q(&flow.jobs[d as usize].name),
                q(&job.name)
            );
        }
    }
    s.push_str("}\n");
    s
}
