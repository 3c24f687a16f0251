//! Talking to Slurm: running its client commands with a time limit, and parsing their output.
//! Everything here is pure or a thin process wrapper, so the parsing is unit-tested on the
//! exact text Slurm 22.05 prints (see /work/shared/reference/clusters.md section 3).

use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// What one Slurm client command did.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// The exit code (-1 if it died of a signal or was timed out).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error, trimmed.
    pub stderr: String,
}

impl CommandOutput {
    /// Whether the command exited 0.
    pub fn ok(&self) -> bool {
        self.code == 0
    }
    /// A one-line description of a failure, for messages.
    pub fn failure(&self) -> String {
        let text = if self.stderr.is_empty() {
            self.stdout.trim()
        } else {
            self.stderr.as_str()
        };
        let text = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" / ");
        if text.is_empty() {
            format!("exit code {}", self.code)
        } else {
            text
        }
    }
}

/// Runs `program args`, killing it after `limit`. Slurm's clients have their own timeouts
/// (about 9 s when the controller is down), so the limit only guards against a hung client.
pub fn run(program: &str, args: &[String], limit: Duration) -> CommandOutput {
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return CommandOutput {
                code: -1,
                stdout: String::new(),
                stderr: format!("cannot run {program}: {e}"),
            };
        }
    };
    // Read both pipes on helper threads so a chatty command cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                timed_out = true;
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => break None,
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let mut stderr = err_reader.join().unwrap_or_default().trim().to_string();
    if timed_out {
        stderr = format!(
            "{program} did not answer within {}s (killed) {stderr}",
            limit.as_secs()
        );
    }
    CommandOutput {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Whether a failed Slurm command is worth retrying: the controller or the database is
/// unreachable or overloaded, rather than the request being wrong.
pub fn is_transient(out: &CommandOutput) -> bool {
    if out.code == -1 {
        // Timed out or killed by a signal.
        return true;
    }
    let text = format!("{} {}", out.stderr, out.stdout).to_ascii_lowercase();
    [
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
    ]
    .iter()
    .any(|m| text.contains(m))
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
}

/// Parses `N:M`.
pub fn parse_exit_code(text: &str) -> Option<(i32, i32)> {
    let (n, m) = text.trim().split_once(':')?;
    Some((n.trim().parse().ok()?, m.trim().parse().ok()?))
}

/// Parses `sacct -X -n -P -o JobID,State,ExitCode`.
pub fn parse_sacct(stdout: &str) -> Vec<FinalRow> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut parts = line.trim().split('|');
            let id = parts.next()?.trim();
            let state = parts.next()?.split_whitespace().next()?.to_string();
            let (exit_code, signal) = parse_exit_code(parts.next()?)?;
            is_trackable_id(id).then(|| FinalRow {
                id: id.into(),
                state,
                exit_code,
                signal,
                reason: String::new(),
            })
        })
        .collect()
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

/// How a job ended, in the backend's terms (turned into a `JobEvent` by the caller).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Exited with this status.
    Exited(i32),
    /// Died of this signal.
    Signaled(i32),
    /// Failed for this reason (exit code attached when known).
    Failed(String, Option<i32>),
    /// Cancelled because flowrun asked.
    Killed,
}

/// Maps a final state (plus exit code when known) to an outcome.
/// `killed_by_us`: flowrun asked Slurm to cancel this job. `log_missing`: the job's output file
/// does not exist, which with `0:53` means Slurm could not open it.
pub fn outcome(
    state: &str,
    exit: Option<(i32, i32)>,
    killed_by_us: bool,
    log_path: &str,
    log_missing: bool,
) -> Outcome {
    match state {
        "COMPLETED" => Outcome::Exited(0),
        "FAILED" => match exit {
            Some((0, 53)) if log_missing => Outcome::Failed(
                format!(
                    "Slurm could not open the job's output file {log_path} (exit 0:53, no log written): \
                     does its directory exist and is it writable on the compute node?"
                ),
                None,
            ),
            Some((0, m)) if m != 0 => Outcome::Signaled(m),
            Some((n, _)) if n != 0 => Outcome::Exited(n),
            Some(_) => Outcome::Failed("Slurm reported FAILED with exit code 0:0".into(), Some(0)),
            None => Outcome::Failed("Slurm reported FAILED (exit code unknown)".into(), None),
        },
        "CANCELLED" if killed_by_us => Outcome::Killed,
        "CANCELLED" => Outcome::Failed("cancelled outside flowrun".into(), None),
        "TIMEOUT" => Outcome::Failed("Slurm time limit".into(), None),
        "DEADLINE" if killed_by_us => Outcome::Killed,
        other => Outcome::Failed(format!("Slurm {other}"), exit.map(|e| e.0)),
    }
}

/// `--time` in whole minutes (Slurm's resolution), rounded up, at least 1.
pub fn time_limit_minutes(timeout_ms: u64) -> u64 {
    timeout_ms.div_ceil(60_000).max(1)
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
        let text = "2|FAILED|3:0\n3|FAILED|0:9\n4|FAILED|0:53\n5|CANCELLED by 0|0:0\n7_1|FAILED|1:0\n8_[1-1000]|PENDING|0:0\n";
        let rows = parse_sacct(text);
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows[0],
            FinalRow {
                id: "2".into(),
                state: "FAILED".into(),
                exit_code: 3,
                signal: 0,
                reason: "".into()
            }
        );
        assert_eq!((rows[2].exit_code, rows[2].signal), (0, 53));
        assert_eq!(rows[3].state, "CANCELLED");
        assert_eq!(rows[4].id, "7_1");
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
        assert_eq!(o("COMPLETED", Some((0, 0)), false), Outcome::Exited(0));
        assert_eq!(o("FAILED", Some((3, 0)), false), Outcome::Exited(3));
        assert_eq!(o("FAILED", Some((0, 9)), false), Outcome::Signaled(9));
        assert_eq!(o("CANCELLED", None, true), Outcome::Killed);
        assert_eq!(
            o("CANCELLED", None, false),
            Outcome::Failed("cancelled outside flowrun".into(), None)
        );
        assert_eq!(
            o("TIMEOUT", Some((0, 0)), false),
            Outcome::Failed("Slurm time limit".into(), None)
        );
        assert_eq!(
            o("OUT_OF_MEMORY", Some((0, 125)), false),
            Outcome::Failed("Slurm OUT_OF_MEMORY".into(), Some(0))
        );
        assert_eq!(
            o("NODE_FAIL", None, true),
            Outcome::Failed("Slurm NODE_FAIL".into(), None)
        );
        match outcome("FAILED", Some((0, 53)), false, "/x/output.log", true) {
            Outcome::Failed(why, _) => assert!(
                why.contains("/x/output.log") && why.contains("0:53"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        // 0:53 with the log present is an ordinary signal death.
        assert_eq!(
            outcome("FAILED", Some((0, 53)), false, "/x", false),
            Outcome::Signaled(53)
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
        let fail = |code, err: &str| CommandOutput {
            code,
            stdout: String::new(),
            stderr: err.into(),
        };
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
    fn time_limits_round_up_to_minutes() {
        assert_eq!(time_limit_minutes(1), 1);
        assert_eq!(time_limit_minutes(60_000), 1);
        assert_eq!(time_limit_minutes(60_001), 2);
        assert_eq!(time_limit_minutes(30 * 60_000), 30);
    }

    #[test]
    fn output_paths_escape_patterns() {
        assert_eq!(output_pattern("/r/100%/out.log"), "/r/100%%/out.log");
    }

    #[test]
    fn run_reports_code_and_output() {
        let out = run(
            "sh",
            &["-c".into(), "echo hi; echo oops >&2; exit 4".into()],
            Duration::from_secs(10),
        );
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (4, "hi\n", "oops")
        );
        let out = run("sleep", &["5".into()], Duration::from_millis(100));
        assert_eq!(out.code, -1);
        assert!(is_transient(&out));
        let out = run("/nonexistent/sbatch", &[], Duration::from_secs(1));
        assert!(out.stderr.contains("cannot run"));
    }
}
