//! `<job_dir>/cmd.sh`: a script that reproduces a job by hand.

use flowrun_plugin_sdk::{Command, Job as JobSpec};

use crate::spawn::REMOVED_VARS;

/// Quotes `s` for a POSIX shell (shlex). The job's strings cannot hold NUL bytes (the spawn
/// refuses them first), so quoting cannot fail; a NUL would be dropped.
pub fn shell_quote(s: &str) -> String {
    match shlex::try_quote(s) {
        Ok(q) => q.into_owned(),
        Err(_) => shlex::try_quote(&s.replace('\0', ""))
            .map(|q| q.into_owned())
            .unwrap_or_default(),
    }
}

fn is_shell_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The text of cmd.sh for `spec` (its `env` holds the host's FLOWRUN_* variables).
pub fn render(spec: JobSpec<'_>) -> String {
    let mut s = String::with_capacity(512);
    s.push_str("#!/bin/sh\n");
    s.push_str(&format!(
        "# Reproduces flowrun job {} (attempt {}) as the local backend ran it.\n\
         # The host's environment is inherited; output goes to the terminal here.\n",
        spec.name(),
        spec.attempt()
    ));
    s.push_str(&format!("cd {} || exit 1\n", shell_quote(spec.cwd())));
    s.push_str(&format!("unset {}\n", REMOVED_VARS.join(" ")));
    // Names a shell cannot export go through env(1) on the exec line.
    let mut env_prefix = String::new();
    for (k, v) in spec.env() {
        if is_shell_name(k) {
            s.push_str(&format!("export {k}={}\n", shell_quote(v)));
        } else {
            env_prefix.push_str(&format!("{} ", shell_quote(&format!("{k}={v}"))));
        }
    }
    s.push_str("exec ");
    if !env_prefix.is_empty() {
        s.push_str("env ");
        s.push_str(&env_prefix);
    }
    match spec.command() {
        Command::Shell(script) => {
            s.push_str("/bin/sh -c ");
            s.push_str(&shell_quote(script));
        }
        Command::Argv(args) => {
            let argv: Vec<String> = args.iter().map(shell_quote).collect();
            s.push_str(&argv.join(" "));
        }
    }
    s.push('\n');
    s
}
