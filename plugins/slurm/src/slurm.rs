//! Talking to Slurm: the text its client commands print, parsed; the states they report,
//! classified. Everything here is pure, so it is unit-tested on the exact text Slurm 22.05
//! prints (the project's research notes, clusters.md section 3).

use flowrun_plugin_sdk::engine::{records::parse_size, CommandOutput, Usage, Verdict};

/// Whether a failed Slurm command is worth retrying: the controller or the database is
/// unreachable or overloaded, rather than the request being wrong.
pub fn is_transient(out: &CommandOutput) -> bool {
    out.mentions_any(&[
        "unable to contact slurm controller",
        "socket timed out",
        "slurm temporarily unable",
        "resource temporarily unavailable",
        "connection refused",
        "connection reset",
        "try again",
        "too many pending jobs",
        "rpc rate limit",
        "problem talking to the database",
        "zero bytes were transmitted or received",
        "slurmctld is not responding",
        "communication connection failure",
    ])
}

/// The job id printed by `sbatch --parsable`: `123` or `123;cluster`.
pub fn parse_sbatch_id(stdout: &str) -> Option<String> {
    let line = stdout.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let id = line.split(';').next()?.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_string())
}

/// Whether `id` is a job id we track: `123` or an array member `123_4`.
pub fn is_trackable_id(id: &str) -> bool {
    let (base, task) = match id.split_once('_') {
        Some((b, t)) => (b, Some(t)),
        None => (id, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(base) && task.is_none_or(digits)
}

/// One line of `squeue -h -r -t all -o '%i|%T|%r'`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    /// `123` or `123_4`.
    pub id: String,
    /// The long state, such as `RUNNING`.
    pub state: String,
    /// The reason, such as `Resources` or `JobLaunchFailure`.
    pub reason: String,
}

/// The squeue format the monitor uses.
pub const SQUEUE_FORMAT: &str = "%i|%T|%r";

/// Parses squeue output; lines that are not a trackable id (pending ranges `123_[1-5]`) are
/// skipped.
pub fn parse_squeue(stdout: &str) -> Vec<QueueRow> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(3, '|');
            let id = parts.next()?.trim();
            let state = parts.next()?.trim();
            let reason = parts.next().unwrap_or("").trim();
            is_trackable_id(id).then(|| QueueRow {
                id: id.into(),
                state: state.into(),
                reason: reason.into(),
            })
        })
        .collect()
}

/// A job's final record from sacct or scontrol.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalRow {
    /// `123` or `123_4` (never the raw id of an array member).
    pub id: String,
    /// The long state, split at the first space (`CANCELLED by 0` -> `CANCELLED`).
    pub state: String,
    /// `N` of `N:M`: the batch script's exit status.
    pub exit_code: i32,
    /// `M` of `N:M`: the signal that killed it, 0 if none.
    pub signal: i32,
    /// The reason (scontrol only).
    pub reason: String,
    /// CPU time and peak memory (sacct only).
    pub usage: Option<Usage>,
}

/// Parses `N:M`.
pub fn parse_exit_code(text: &str) -> Option<(i32, i32)> {
    let (n, m) = text.trim().split_once(':')?;
    Some((n.trim().parse().ok()?, m.trim().parse().ok()?))
}

/// The sacct fields the backend reads, in order: one line per job, then one per step
/// (`123.batch`, `123.extern`), where only the steps carry MaxRSS.
pub const SACCT_FORMAT: &str = "JobID,State,ExitCode,TotalCPU,MaxRSS";

/// Parses `sacct -n -P -o JobID,State,ExitCode,TotalCPU,MaxRSS` (without `-X`): state and exit
/// code from each job's own line, TotalCPU too (the sum over its steps), MaxRSS the largest
/// of its steps'.
pub fn parse_sacct(stdout: &str) -> Vec<FinalRow> {
    let mut rows: Vec<FinalRow> = Vec::new();
    let mut peak_kib: std::collections::HashMap<String, f64> = Default::default();
    for line in stdout.lines() {
        let parts: Vec<&str> = line.trim().split('|').map(str::trim).collect();
        let [id, state, exit, total_cpu, max_rss, ..] = parts[..] else {
            continue;
        };
        if let Some((job, _step)) = id.split_once('.') {
            if let Some(kib) = parse_memory_kib(max_rss) {
                let peak = peak_kib.entry(job.to_string()).or_insert(0.0);
                *peak = peak.max(kib);
            }
            continue;
        }
        let (Some(state), Some((exit_code, signal))) =
            (state.split_whitespace().next(), parse_exit_code(exit))
        else {
            continue;
        };
        if !is_trackable_id(id) {
            continue; // a pending range such as 8_[1-1000]
        }
        if let Some(kib) = parse_memory_kib(max_rss) {
            peak_kib.insert(id.to_string(), kib);
        }
        rows.push(FinalRow {
            id: id.into(),
            state: state.to_string(),
            exit_code,
            signal,
            reason: String::new(),
            usage: Some(Usage {
                cpu_s: parse_cpu_time(total_cpu),
                max_rss_mb: None,
                source: "sacct",
            }),
        });
    }
    for row in &mut rows {
        if let (Some(usage), Some(kib)) = (&mut row.usage, peak_kib.get(&row.id)) {
            usage.max_rss_mb = Some(kib / 1024.0);
        }
    }
    rows
}

/// Parses sacct's CPU times: `[DD-][HH:]MM:SS[.mmm]`, such as `00:00.654`, `01:02:03` or
/// `2-01:02:03`. Empty: unknown.
pub fn parse_cpu_time(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (days, clock) = match text.split_once('-') {
        Some((d, rest)) => (d.parse::<f64>().ok()?, rest),
        None => (0.0, text),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let (h, m, s) = match parts[..] {
        [m, s] => ("0", m, s),
        [h, m, s] => (h, m, s),
        _ => return None,
    };
    let (h, m, s): (f64, f64, f64) = (h.parse().ok()?, m.parse().ok()?, s.parse().ok()?);
    Some(((days * 24.0 + h) * 60.0 + m) * 60.0 + s)
}

/// Parses sacct's memory figures, in KiB: `221120K`, `1.50M`, `2G`; a bare number is KiB
/// (sacct's base unit for MaxRSS). Empty: unknown.
pub fn parse_memory_kib(text: &str) -> Option<f64> {
    Some(parse_size(text, Some(1024.0))? / 1024.0)
}

/// Parses `scontrol show job -o` (one job per line, `Key=Value` words), keeping the jobs
/// named one of `job_names`. The fields used all come before the first free-text path of a record,
/// so spaces in paths do not disturb them.
pub fn parse_scontrol(stdout: &str, job_names: &[String]) -> Vec<FinalRow> {
    stdout
        .lines()
        .filter_map(|line| {
            let field = |key: &str| {
                line.split(' ')
                    .find_map(|word| word.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            };
            let name = field("JobName")?;
            if !job_names.iter().any(|n| n == name) {
                return None;
            }
            let id = match (field("ArrayJobId"), field("ArrayTaskId")) {
                (Some(base), Some(task)) => format!("{base}_{task}"),
                _ => field("JobId")?.to_string(),
            };
            let (exit_code, signal) = parse_exit_code(field("ExitCode")?)?;
            let state = field("JobState")?.to_string();
            is_trackable_id(&id).then(|| FinalRow {
                id,
                state,
                exit_code,
                signal,
                reason: field("Reason").unwrap_or("").to_string(),
                usage: None,
            })
        })
        .collect()
}

/// Where a Slurm job state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateClass {
    /// Waiting to run (PENDING, CONFIGURING, REQUEUED, ...).
    Queued,
    /// Running or winding down (RUNNING, COMPLETING, SUSPENDED, ...).
    Running,
    /// Ended: COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, ...
    Final,
}

/// Classifies a long state name. Unknown names count as running: a job is never ended on a
/// state we cannot read.
pub fn classify(state: &str) -> StateClass {
    match state {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
        | "RESV_DEL_HOLD" => StateClass::Queued,
        "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "OUT_OF_MEMORY" | "NODE_FAIL"
        | "BOOT_FAIL" | "PREEMPTED" | "DEADLINE" | "REVOKED" | "SPECIAL_EXIT" => StateClass::Final,
        _ => StateClass::Running,
    }
}

/// Whether a pending reason means Slurm will never start the job without an admin changing
/// the configuration: the request exceeds the partition's limits, or a dependency failed.
pub fn never_runs(reason: &str) -> bool {
    matches!(
        reason,
        "PartitionConfig"
            | "PartitionNodeLimit"
            | "PartitionTimeLimit"
            | "DependencyNeverSatisfied"
            | "BadConstraints"
    )
}

/// Whether a final state needs the exit code (`N:M`) to be reported: only FAILED does.
pub fn needs_exit_code(state: &str) -> bool {
    state == "FAILED"
}

/// A failure for a job that ran.
fn failed(reason: String, exit_code: Option<i32>) -> Verdict {
    Verdict::Failed {
        reason,
        exit_code,
        ran: true,
    }
}

/// Maps a final state (plus exit code when known) to a verdict.
/// `killed_by_us`: flowrun asked Slurm to cancel this job. `log_missing`: the job's output file
/// does not exist, which with `0:53` means Slurm could not open it.
pub fn outcome(
    state: &str,
    exit: Option<(i32, i32)>,
    killed_by_us: bool,
    log_path: &str,
    log_missing: bool,
) -> Verdict {
    match state {
        "COMPLETED" => Verdict::Exited(0),
        "FAILED" => match exit {
            Some((0, 53)) if log_missing => failed(
                format!(
                    "Slurm could not open the job's output file {log_path} (exit 0:53, no log written): \
                     does its directory exist and is it writable on the compute node?"
                ),
                None,
            ),
            Some((0, m)) if m != 0 => Verdict::Signaled(m),
            Some((n, _)) if n != 0 => Verdict::Exited(n),
            Some(_) => failed("Slurm reported FAILED with exit code 0:0".into(), Some(0)),
            None => failed("Slurm reported FAILED (exit code unknown)".into(), None),
        },
        "CANCELLED" if killed_by_us => Verdict::Killed,
        // Cancelled while pending or running: whether it ran is not known from the state.
        "CANCELLED" => Verdict::Failed {
            reason: "cancelled outside flowrun".into(),
            exit_code: None,
            ran: false,
        },
        "TIMEOUT" => failed("Slurm time limit".into(), None),
        "DEADLINE" if killed_by_us => Verdict::Killed,
        other => failed(format!("Slurm {other}"), exit.map(|e| e.0)),
    }
}

/// Escapes a path for sbatch's `--output`, where `%` starts a pattern and `\` disables them.
pub fn output_pattern(path: &str) -> String {
    path.replace('\\', "\\\\").replace('%', "%%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_ids() {
        assert_eq!(parse_sbatch_id("1183\n").as_deref(), Some("1183"));
        assert_eq!(parse_sbatch_id("1183;local\n").as_deref(), Some("1183"));
        assert_eq!(parse_sbatch_id("Submitted batch job 5\n"), None);
        assert_eq!(parse_sbatch_id(""), None);
    }

    #[test]
    fn squeue_rows_keep_members_and_skip_ranges() {
        let text = "5|CANCELLED|None\n7_0|COMPLETED|None\n7_[3-9]|PENDING|Resources\n4|FAILED|JobLaunchFailure\n";
        let rows = parse_squeue(text);
        assert_eq!(
            rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["5", "7_0", "4"]
        );
        assert_eq!(rows[2].reason, "JobLaunchFailure");
    }

    #[test]
    fn sacct_rows_as_printed_by_22_05() {
        // Lines as sacct -n -P -o JobID,State,ExitCode,TotalCPU,MaxRSS printed them on the
        // test cluster (jobs 2-5 and 7_1 trimmed to their job lines).
        let text = "2|FAILED|3:0|00:00.010|\n3|FAILED|0:9||\n4|FAILED|0:53||\n5|CANCELLED by 0|0:0||\n\
                    7_1|FAILED|1:0|01:02.500|\n7_1.batch|FAILED|1:0|01:02.500|221120K\n7_1.extern|COMPLETED|0:0|00:00:00|1024K\n\
                    8_[1-1000]|PENDING|0:0||\n9|COMPLETED|0:0|1-00:00:01|\n";
        let rows = parse_sacct(text);
        assert_eq!(rows.len(), 6);
        assert_eq!(
            rows[0],
            FinalRow {
                id: "2".into(),
                state: "FAILED".into(),
                exit_code: 3,
                signal: 0,
                reason: "".into(),
                usage: Some(Usage {
                    cpu_s: Some(0.01),
                    max_rss_mb: None,
                    source: "sacct"
                }),
            }
        );
        assert_eq!((rows[2].exit_code, rows[2].signal), (0, 53));
        assert_eq!(rows[3].state, "CANCELLED");
        assert_eq!(rows[1].usage.unwrap().cpu_s, None);
        assert_eq!(rows[4].id, "7_1");
        assert_eq!(
            rows[4].usage,
            Some(Usage {
                cpu_s: Some(62.5),
                max_rss_mb: Some(215.9375),
                source: "sacct"
            })
        );
        assert_eq!(rows[5].usage.unwrap().cpu_s, Some(86401.0));
    }

    #[test]
    fn cpu_times_and_memory_sizes() {
        assert_eq!(parse_cpu_time("00:00.654"), Some(0.654));
        assert_eq!(parse_cpu_time("01:02:03"), Some(3723.0));
        assert_eq!(parse_cpu_time("2-00:00:00"), Some(172800.0));
        assert_eq!(parse_cpu_time(""), None);
        assert_eq!(parse_cpu_time("soon"), None);
        assert_eq!(parse_memory_kib("221120K"), Some(221120.0));
        assert_eq!(parse_memory_kib("1.5M"), Some(1536.0));
        assert_eq!(parse_memory_kib("2G"), Some(2097152.0));
        assert_eq!(parse_memory_kib("0"), Some(0.0));
        assert_eq!(parse_memory_kib(""), None);
        assert_eq!(parse_memory_kib("lots"), None);
    }

    #[test]
    fn scontrol_rows_use_the_array_member_id() {
        let text = "JobId=9 ArrayJobId=7 ArrayTaskId=1 JobName=tag UserId=root(0) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=1:0 RunTime=00:00:00 WorkDir=/a b/c\n\
                    JobId=2 JobName=tag UserId=root(0) JobState=FAILED Reason=JobLaunchFailure ExitCode=0:53 WorkDir=/tmp\n\
                    JobId=3 JobName=other JobState=COMPLETED Reason=None ExitCode=0:0\n\
                    JobId=10 ArrayJobId=10 ArrayTaskId=2-5 JobName=tag JobState=PENDING Reason=None ExitCode=0:0\n";
        let rows = parse_scontrol(text, &["tag".to_string()]);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].id.as_str(), rows[0].exit_code), ("7_1", 1));
        assert_eq!(
            (rows[1].id.as_str(), rows[1].signal, rows[1].reason.as_str()),
            ("2", 53, "JobLaunchFailure")
        );
    }

    #[test]
    fn state_mapping_follows_the_issue() {
        let o = |state, exit, ours| outcome(state, exit, ours, "/x/output.log", false);
        let f = |reason: &str, code| Verdict::Failed {
            reason: reason.into(),
            exit_code: code,
            ran: true,
        };
        assert_eq!(o("COMPLETED", Some((0, 0)), false), Verdict::Exited(0));
        assert_eq!(o("FAILED", Some((3, 0)), false), Verdict::Exited(3));
        assert_eq!(o("FAILED", Some((0, 9)), false), Verdict::Signaled(9));
        assert_eq!(o("CANCELLED", None, true), Verdict::Killed);
        assert_eq!(
            o("CANCELLED", None, false),
            Verdict::Failed {
                reason: "cancelled outside flowrun".into(),
                exit_code: None,
                ran: false
            }
        );
        assert_eq!(
            o("TIMEOUT", Some((0, 0)), false),
            f("Slurm time limit", None)
        );
        assert_eq!(
            o("OUT_OF_MEMORY", Some((0, 125)), false),
            f("Slurm OUT_OF_MEMORY", Some(0))
        );
        assert_eq!(o("NODE_FAIL", None, true), f("Slurm NODE_FAIL", None));
        match outcome("FAILED", Some((0, 53)), false, "/x/output.log", true) {
            Verdict::Failed { reason, .. } => assert!(
                reason.contains("/x/output.log") && reason.contains("0:53"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // 0:53 with the log present is an ordinary signal death.
        assert_eq!(
            outcome("FAILED", Some((0, 53)), false, "/x", false),
            Verdict::Signaled(53)
        );
        for s in ["PENDING", "CONFIGURING", "REQUEUED"] {
            assert_eq!(classify(s), StateClass::Queued);
        }
        for s in ["RUNNING", "COMPLETING", "SUSPENDED", "SOMETHING_NEW"] {
            assert_eq!(classify(s), StateClass::Running);
        }
        for s in [
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "OUT_OF_MEMORY",
            "NODE_FAIL",
            "BOOT_FAIL",
            "PREEMPTED",
            "DEADLINE",
        ] {
            assert_eq!(classify(s), StateClass::Final);
        }
    }

    #[test]
    fn transient_failures() {
        let fail = |code, err: &str| CommandOutput::exited("sbatch", code, "", err);
        assert!(is_transient(&fail(1, "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)")));
        assert!(is_transient(&fail(
            1,
            "slurm_load_jobs error: Socket timed out on send/recv operation"
        )));
        assert!(!is_transient(&fail(
            1,
            "sbatch: error: Batch job submission failed: Invalid partition name specified"
        )));
        assert!(!is_transient(&fail(
            255,
            "sbatch: unrecognized option '--bogus'"
        )));
    }

    #[test]
    fn output_paths_escape_patterns() {
        assert_eq!(output_pattern("/r/100%/out.log"), "/r/100%%/out.log");
    }
}
