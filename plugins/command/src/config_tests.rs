//! The backend table's checks: the examples of README.md parse, and every mistake the README
//! lists is an error that names its key.

use std::time::Duration;

use crate::config::{self, LogWriter};

const README: &str = include_str!("../README.md");

/// The backend table of the README's example `name` (the block after `# example: NAME`), as
/// the host hands it to the plugin: without `kind`.
pub fn readme_example(name: &str) -> String {
    let marker = format!("# example: {name}\n");
    let start = README.find(&marker).expect("the README has the example") + marker.len();
    let block = &README[start..start + README[start..].find("```").expect("the block ends")];
    let doc: toml::Table = toml::from_str(block).expect("the example is TOML");
    let backends = doc["backends"].as_table().expect("a [backends] table");
    assert_eq!(backends.len(), 1, "one backend per example");
    let mut table = backends
        .values()
        .next()
        .unwrap()
        .as_table()
        .unwrap()
        .clone();
    assert_eq!(
        table
            .remove("kind")
            .and_then(|k| k.as_str().map(String::from))
            .as_deref(),
        Some("command")
    );
    toml::to_string(&table).unwrap()
}

/// The Grid Engine example with `changes` applied: (key, TOML value), `None` removes the key.
fn sge_with(changes: &[(&str, Option<&str>)]) -> String {
    let mut table: toml::Table = toml::from_str(&readme_example("gridengine")).unwrap();
    for (key, value) in changes {
        match value {
            Some(v) => {
                let parsed: toml::Table = toml::from_str(&format!("v = {v}")).unwrap();
                table.insert(key.to_string(), parsed["v"].clone());
            }
            None => {
                table.remove(*key);
            }
        }
    }
    toml::to_string(&table).unwrap()
}

fn error(changes: &[(&str, Option<&str>)]) -> String {
    config::parse(&sge_with(changes))
        .map(|_| ())
        .expect_err("must be refused")
        .message
        .to_string()
}

#[test]
fn the_readme_examples_parse() {
    for name in ["slurm", "gridengine", "lsf", "pbs"] {
        let (engine, keys) = config::parse(&readme_example(name))
            .unwrap_or_else(|e| panic!("README example {name}: {e}"));
        assert_eq!(keys.log_writer, LogWriter::Script, "{name}");
        assert!(engine.poll_interval >= Duration::from_secs(5), "{name}");
    }
    let (_, sge) = config::parse(&readme_example("gridengine")).unwrap();
    assert_eq!(sge.scheduler, "Grid Engine");
    assert_eq!(sge.reserved_exit_codes, [99, 100]);
    assert!(sge.final_status.is_some() && sge.cancel_all.is_some());
}

#[test]
fn the_defaults() {
    let (engine, keys) = config::parse(
        r#"submit = ["qsub", "{script}"]
submit_id = '^(\d+)'
status = ["qstat"]
status_line = '^(?P<id>\d+) (?P<state>\w+)'
states = { running = ["r"] }
cancel = ["qdel", "{ids}"]"#,
    )
    .unwrap();
    assert_eq!(engine.poll_interval, Duration::from_secs(10));
    assert_eq!(keys.scheduler, "qsub", "named after the submit program");
    assert!(keys
        .transient
        .is_match("qstat: Connection refused by server"));
    assert!(keys
        .transient
        .is_match("error: UNABLE TO CONTACT the controller"));
    assert!(!keys.transient.is_match("qsub: invalid option -- 'x'"));
    assert!(keys.cancel_all.is_none() && keys.final_status.is_none());
}

#[test]
fn every_mistake_names_its_key() {
    for (changes, wanted) in [
        (vec![("submit", None)], "`submit`: is missing"),
        (vec![("submit_id", None)], "`submit_id`: is missing"),
        (vec![("status", None)], "`status`: is missing"),
        (vec![("status_line", None)], "`status_line`: is missing"),
        (vec![("states", None)], "`states`: is missing"),
        (vec![("cancel", None)], "`cancel`: is missing"),
        (
            vec![("submit", Some(r#"["qsub", "-N", "{run_tag}", "{scirpt}"]"#))],
            "`submit`: \"{scirpt}\": unknown placeholder {scirpt}",
        ),
        (
            vec![("submit", Some(r#"["qsub", "-N", "{run_tag}", "job.sh"]"#))],
            "`submit`: never passes {script}",
        ),
        (
            vec![(
                "submit",
                Some(r#"["qsub", "-N", "{run_tag}", "-l", "h_rt={timeout_s}", "{script}"]"#),
            )],
            "`submit`: \"h_rt={timeout_s}\": {timeout_s} has no value",
        ),
        (
            vec![(
                "submit",
                Some(r#"["qsub", "-N", "{run_tag}", "-o", "{log}", "{script}"]"#),
            )],
            "`submit`: passes {log}, which the job's script writes itself",
        ),
        (
            vec![("log_writer", Some("\"scheduler\""))],
            "`submit`: never passes {log}",
        ),
        (
            vec![("log_writer", Some("\"nobody\""))],
            "`log_writer`: \"nobody\" is neither",
        ),
        (
            vec![("submit", Some(r#"["qsub", "{script}"]"#))],
            "`submit`: never passes {run_tag} as the job's name, but `cancel_all`",
        ),
        (
            vec![
                ("submit", Some(r#"["qsub", "{script}"]"#)),
                ("cancel_all", None),
                ("status", Some(r#"["qstat", "-N", "{run_tag}"]"#)),
            ],
            "but `status` finds the run's jobs by it",
        ),
        (
            vec![("submit_id", Some(r#"'^\d+'"#))],
            "`submit_id`: \"^\\\\d+\" has no capture group",
        ),
        (
            vec![("submit_id", Some(r#"'^(\d+'"#))],
            "`submit_id`: \"^(\\\\d+\" is not a valid regex",
        ),
        (
            vec![("status_line", Some(r#"'^(\d+)\s+(?P<state>\w+)'"#))],
            "`status_line`: \"^(\\\\d+)\\\\s+(?P<state>\\\\w+)\" has no group named `id`",
        ),
        (
            vec![("status_line", Some(r#"'^(?P<id>\d+)'"#))],
            "has no group named `state`",
        ),
        (
            vec![(
                "status_line",
                Some(r#"'^(?P<id>\d+) (?P<state>\w+) (?P<code>\d+)'"#),
            )],
            "has a group named `code`, which is not read",
        ),
        (
            vec![("status_record", Some(r#"'(?P<id>\d+) (?P<state>\w+)'"#))],
            "`status_record`: give `status_line`",
        ),
        (
            vec![("status", Some(r#"["qstat", "-j{ids}"]"#))],
            "`status`: \"-j{ids}\": {ids} stands for one argument per id",
        ),
        (
            vec![("status", Some(r#"["qstat", "{script}"]"#))],
            "`status`: \"{script}\": {script} cannot be used here",
        ),
        (
            vec![("cancel", Some(r#"["qdel", "-u", "{user}"]"#))],
            "`cancel`: never passes {ids}",
        ),
        (
            vec![("cancel", Some(r#"["qdel", "{run_tag}", "{ids}"]"#))],
            "`cancel`: \"{run_tag}\": {run_tag} cannot be used here",
        ),
        (
            vec![("cancel_all", Some(r#"["qdel", "-u", "{user}"]"#))],
            "`cancel_all`: never passes {run_tag}",
        ),
        (
            vec![("arrays", Some("true"))],
            "`arrays`: the command backend submits one job per `submit` call",
        ),
        (
            vec![("cancel_ok", Some("'(unclosed'"))],
            "`cancel_ok`: \"(unclosed\" is not a valid regex",
        ),
        (
            vec![("transient", Some("3"))],
            "`transient`: must be a string",
        ),
        (
            vec![("states", Some(r#"{ running = ["r"], pending = ["r"] }"#))],
            "`states`: \"r\" is listed twice",
        ),
        (
            vec![("states", Some(r#"{ finished = ["C"] }"#))],
            "`states.finished`: is not a kind of state",
        ),
        (
            vec![("final_status_record", None)],
            "`final_status_line`: is missing: `final_status` needs a regex",
        ),
        (
            vec![("final_status", None)],
            "`final_status`: is missing, but a regex for its rows is given",
        ),
        (
            vec![("final_status", None), ("final_status_record", None)],
            "`final_status_ok`: is given without `final_status`",
        ),
        (
            vec![("reserved_exit_codes", Some("[0]"))],
            "`reserved_exit_codes`: must be a list of exit statuses from 1 to 255",
        ),
        (
            vec![("scheduler", Some("\" \""))],
            "`scheduler`: must not be empty",
        ),
        (
            vec![("sumbit", Some(r#"["qsub"]"#))],
            "`sumbit`: is not a key of the command backend",
        ),
        (
            vec![("poll_interval", Some("\"soon\""))],
            "`poll_interval`: invalid duration",
        ),
    ] {
        let e = error(&changes);
        assert!(
            e.contains(wanted),
            "{changes:?}:\n  got  {e}\n  want {wanted}"
        );
    }
}
