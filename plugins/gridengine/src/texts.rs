//! What Grid Engine's commands print (Son of Grid Engine 8.1.9, as measured on the test
//! cluster: the project's research notes, gridengine.md), parsed. Pure, and unit-tested on
//! those texts.

use std::collections::BTreeMap;

use flowrun_plugin_sdk::engine::{
    records::{index_list, parse_size},
    CommandOutput, NativeStatus, Usage,
};

/// Whether a failed command is worth retrying: qmaster is down, hung or busy.
pub fn is_transient(out: &CommandOutput) -> bool {
    out.mentions_any(&[
        "unable to send message to qmaster",
        "unable to contact qmaster",
        "commlib error",
        "got send error",
        "connection refused",
        "failed receiving gdi request",
        "timeout",
    ])
}

/// The job id `qsub -terse` prints: `123`, or `123.1-5:1` for an array.
pub fn parse_qsub_id(stdout: &str) -> Option<String> {
    let id = stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())?
        .split('.')
        .next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_string())
}

/// `qstat -xml` as `(native id, state)` rows of the jobs named one of `names`: running tasks
/// come one per `<job_list>`, pending ones as a range in `<tasks>`; a plain job has none.
pub fn parse_qstat_xml(xml: &str, names: &[String]) -> Result<Vec<(String, String)>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("qstat -xml: {e}"))?;
    let mut rows = Vec::new();
    for list in doc.descendants().filter(|n| n.has_tag_name("job_list")) {
        let field = |tag: &str| {
            list.children()
                .find(|c| c.has_tag_name(tag))
                .and_then(|c| c.text())
                .unwrap_or("")
                .trim()
        };
        if !names.iter().any(|n| n == field("JB_name")) {
            continue;
        }
        let (id, state) = (field("JB_job_number"), field("state").to_string());
        match list.children().find(|c| c.has_tag_name("tasks")) {
            None => rows.push((id.to_string(), state)),
            Some(tasks) => rows.extend(
                index_list(tasks.text().unwrap_or(""))
                    .into_iter()
                    .map(|t| (format!("{id}.{t}"), state.clone())),
            ),
        }
    }
    Ok(rows)
}

/// `qacct -j NAME` as final records, one per job or task (a job retried has several records:
/// the last counts), in id order. `state` is `finished`, `reason` qacct's `failed` field (`0`, `100 :
/// assumedly after job`), `exit_code` its `exit_status`; usage: `cpu` (seconds) and `ru_maxrss`
/// as peak memory. qacct prints ru_maxrss, a figure in KB, as if it were bytes (`308.012KB` for
/// 308 MiB), so the "bytes" it shows are KiB.
pub fn parse_qacct(stdout: &str) -> Vec<NativeStatus> {
    let mut rows = BTreeMap::new();
    for record in stdout.split("\n=====").filter(|r| r.contains("jobnumber")) {
        let field = |key: &str| {
            record.lines().find_map(|l| {
                let (k, v) = l.split_once(char::is_whitespace)?;
                (k == key).then(|| v.trim())
            })
        };
        let (Some(job), Some(failed), Some(status)) =
            (field("jobnumber"), field("failed"), field("exit_status"))
        else {
            continue;
        };
        let id = match field("taskid") {
            Some(t) if t != "undefined" => format!("{job}.{t}"),
            _ => job.to_string(),
        };
        let row = NativeStatus {
            reason: failed.to_string(),
            exit_code: status
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok()),
            usage: Some(Usage {
                cpu_s: field("cpu").and_then(|c| c.trim_end_matches('s').parse().ok()),
                max_rss_mb: field("ru_maxrss")
                    .and_then(|t| parse_size(t, Some(1.0)))
                    .map(|kib| kib / 1024.0),
                source: "qacct",
            }),
            ..NativeStatus::new(&id, "finished")
        };
        rows.insert(id, row);
    }
    rows.into_values().collect()
}

/// The number of qacct's `failed` field: `100 : assumedly after job` -> 100.
pub fn failed_code(reason: &str) -> Option<u32> {
    reason.split(':').next()?.trim().parse().ok()
}

/// What qdel's output says of each id: the ids it deleted while they were pending (which
/// leaves no accounting record), and whether every line is a success or an id that does not
/// exist (any more).
pub fn parse_qdel(out: &CommandOutput) -> (Vec<String>, bool) {
    let mut deleted_pending = Vec::new();
    let mut all_done = true;
    for line in out.stdout.lines().chain(out.stderr.lines()).map(str::trim) {
        let deleted = line.split_once(" has deleted job-array task ");
        if let Some((_, id)) = deleted.or_else(|| line.split_once(" has deleted job ")) {
            deleted_pending.push(id.to_string());
        } else if !(line.is_empty()
            || line.contains(" for deletion")
            || line.ends_with(" does not exist"))
        {
            all_done = false;
        }
    }
    (deleted_pending, all_done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qsub_ids() {
        assert_eq!(parse_qsub_id("21\n").as_deref(), Some("21"));
        assert_eq!(parse_qsub_id("22.1-3:1\n").as_deref(), Some("22"));
        assert_eq!(
            parse_qsub_id("Your job 3 (\"x\") has been submitted\n"),
            None
        );
        assert_eq!(parse_qsub_id(""), None);
    }

    #[test]
    fn qstat_xml_rows_per_task_of_the_runs_names() {
        // As SGE 8.1.9 printed it on the test cluster (an array with -tc 2, a held job, another
        // run's job).
        let xml = r#"<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>23</JB_job_number>
      <JAT_prio>0.50000</JAT_prio>
      <JB_name>tag</JB_name>
      <JB_owner>root</JB_owner>
      <state>r</state>
      <JAT_start_time>2026-12-01T12:41:07</JAT_start_time>
      <queue_name>all.q@vm</queue_name>
      <slots>1</slots>
      <tasks>1</tasks>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>23</JB_job_number>
      <JB_name>tag</JB_name>
      <state>qw</state>
      <tasks>3-6:1</tasks>
    </job_list>
    <job_list state="pending">
      <JB_job_number>24</JB_job_number>
      <JB_name>tag</JB_name>
      <state>hqw</state>
    </job_list>
    <job_list state="pending">
      <JB_job_number>25</JB_job_number>
      <JB_name>other</JB_name>
      <state>qw</state>
    </job_list>
  </job_info>
</job_info>"#;
        let rows = parse_qstat_xml(xml, &["tag".to_string()]).unwrap();
        let want: Vec<(String, String)> = [
            ("23.1", "r"),
            ("23.3", "qw"),
            ("23.4", "qw"),
            ("23.5", "qw"),
            ("23.6", "qw"),
            ("24", "hqw"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(rows, want);
        assert!(parse_qstat_xml("<job_info>", &[]).is_err());
    }

    #[test]
    fn qacct_records_with_tasks_usage_and_retries() {
        let record = |job: &str, task: &str, failed: &str, status: &str| {
            format!(
                "==============================================================\n\
                 qname        all.q               \njobname      tag                 \n\
                 jobnumber    {job}                  \ntaskid       {task}\n\
                 failed       {failed}    \nexit_status  {status}                   \n\
                 ru_wallclock 0s\nru_maxrss    308.012KB\ncpu          1.512s\nmaxvmem      309.746MB\n"
            )
        };
        let text = [
            record("21", "undefined", "0", "3"),
            record(
                "23",
                "1",
                "100 : assumedly after job",
                "137                  (Killed)",
            ),
            record("30", "undefined", "25  : rescheduling", "99"),
            record("30", "undefined", "0", "0"),
        ]
        .concat();
        let rows = parse_qacct(&text);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!((rows[0].id.as_str(), rows[0].exit_code), ("21", Some(3)));
        let usage = rows[0].usage.unwrap();
        assert_eq!(usage.cpu_s, Some(1.512));
        assert!((usage.max_rss_mb.unwrap() - 308.012).abs() < 1e-9);
        assert_eq!(
            (
                rows[1].id.as_str(),
                rows[1].exit_code,
                failed_code(&rows[1].reason)
            ),
            ("23.1", Some(137), Some(100))
        );
        assert_eq!((rows[2].id.as_str(), rows[2].reason.as_str()), ("30", "0"));
    }

    #[test]
    fn qdel_says_what_was_pending_and_what_is_gone() {
        let out = CommandOutput::exited(
            "qdel",
            1,
            "root has registered the job-array task 23.1 for deletion\n\
             root has deleted job-array task 23.4\nroot has deleted job 24\n",
            "denied: job \"999999\" does not exist",
        );
        assert_eq!(parse_qdel(&out), (vec!["23.4".into(), "24".into()], true));
        let by_name = CommandOutput::exited(
            "qdel",
            1,
            "The job flowrun-x of user(s) root does not exist\n",
            "",
        );
        assert_eq!(parse_qdel(&by_name), (vec![], true));
        let down = CommandOutput::exited(
            "qdel",
            1,
            "",
            "error: commlib error: got select error (Connection refused)\n\
             unable to send message to qmaster using port 6444 on host \"vm\": got send error",
        );
        assert!(!parse_qdel(&down).1);
        assert!(is_transient(&down));
        let bad = CommandOutput::exited(
            "qsub",
            1,
            "",
            "Unable to run job: unknown resource \"foo\"\nExiting.",
        );
        assert!(!is_transient(&bad));
    }
}
