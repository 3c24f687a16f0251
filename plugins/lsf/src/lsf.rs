//! Talking to LSF: the text its commands print, parsed, and what its states and termination
//! reasons mean. Everything here is pure, unit-tested on the texts of the project's research
//! notes (IBM's LSF 10.1 documentation, the Lava sources, outputs of real LSF 10.1 clusters
//! published in other tools' tests), which the LSF emulator of `tests/cluster/lsf-emu` prints.

use flowrun_plugin_sdk::engine::{records::parse_size, CommandOutput, Usage, Verdict};

/// The file in each job's directory that LSF writes its job report into (`bsub -oo`). The job's
/// own output goes to its log, which the job's script opens itself, so the report is never in
/// the log the host judges.
pub const REPORT_FILE: &str = "lsf-report.txt";

/// The `bjobs -o` fields the backend reads, in order.
pub const BJOBS_FORMAT: &str = "jobid jobindex stat exit_code exit_reason delimiter='|'";

/// Whether a failed LSF command is worth retrying: mbatchd is unreachable or busy, rather than
/// the request being wrong.
pub fn is_transient(out: &CommandOutput) -> bool {
    out.mentions_any(&[
        "connection refused",
        "batch system daemon not responding",
        "still trying",
        "pending job threshold reached",
        "temporarily unavailable",
        "timed out",
        "lim is down",
        "try again",
        "try later",
    ])
}

/// The job id in bsub's output: `Job <1234> is submitted to [default ]queue <normal>.` on any
/// line, after whatever a site's esub printed (on either stream).
pub fn parse_bsub_id(out: &CommandOutput) -> Option<String> {
    out.stdout
        .lines()
        .chain(out.stderr.lines())
        .find_map(|line| {
            let rest = line.trim().strip_prefix("Job <")?;
            let (id, tail) = rest.split_once('>')?;
            let digits = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
            (digits && tail.starts_with(" is submitted to ")).then(|| id.to_string())
        })
}

/// The native id of a job or array element: `123`, or `123[4]` (LSF's own notation, which
/// bkill takes).
pub fn native_id(job_id: &str, index: u32) -> String {
    if index == 0 {
        job_id.to_string()
    } else {
        format!("{job_id}[{index}]")
    }
}

/// The job id of a native id: `123[4]` -> `123`.
pub fn base_id(native_id: &str) -> &str {
    native_id.split('[').next().unwrap_or(native_id)
}

/// One row of `bjobs -noheader -o "jobid jobindex stat exit_code exit_reason delimiter='|'"`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    /// `123` or `123[4]`.
    pub id: String,
    /// `RUN`, `DONE`, `EXIT`, ...
    pub stat: String,
    /// Empty for DONE and unfinished jobs (`-` in the text).
    pub exit_code: Option<i32>,
    /// Such as `TERM_OWNER: job killed by owner`; empty if none.
    pub exit_reason: String,
}

/// Parses bjobs rows; lines that are not rows are skipped.
pub fn parse_bjobs(stdout: &str) -> Vec<JobRow> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut f = line.trim().splitn(5, '|').map(str::trim);
            let (id, index, stat) = (f.next()?, f.next()?, f.next()?);
            let exit_code = f.next().unwrap_or("-");
            let reason = f.next().unwrap_or("-");
            let index: u32 = index.parse().ok()?;
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || stat.is_empty() {
                return None;
            }
            Some(JobRow {
                id: native_id(id, index),
                stat: stat.to_string(),
                exit_code: exit_code.parse().ok(),
                exit_reason: if reason == "-" { "" } else { reason }.to_string(),
            })
        })
        .collect()
}

/// Whether every line on stderr is one of bjobs' `Job <123> is not found` (a job mbatchd has
/// forgotten, after CLEAN_PERIOD): then its exit status (255 when it found none of the ids)
/// does not mean the query failed.
pub fn only_not_found(stderr: &str) -> bool {
    let mut lines = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut any = false;
    let all = lines.all(|l| {
        any = true;
        l.starts_with("Job <") && l.ends_with("> is not found")
    });
    any && all
}

/// Whether bkill failed only for jobs that are over: every line on stderr is `Job <123>: Job
/// has already finished` or `Job <123>: No matching job found` (forgotten after CLEAN_PERIOD).
pub fn bkill_only_ended(stderr: &str) -> bool {
    let mut lines = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut any = false;
    let all = lines.all(|l| {
        any = true;
        l.starts_with("Job <")
            && (l.ends_with(">: Job has already finished")
                || l.ends_with(">: No matching job found"))
    });
    any && all
}

/// The keyword of an exit reason: `TERM_OWNER: job killed by owner` -> `TERM_OWNER`.
pub fn reason_keyword(reason: &str) -> &str {
    reason.split(':').next().unwrap_or("").trim()
}

/// Where an LSF job state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateClass {
    /// PEND, PSUSP (held), WAIT, PROV.
    Queued,
    /// RUN, and states this backend does not know (a job is never ended on a state it cannot
    /// read).
    Running,
    /// USUSP, SSUSP: the reason for the user.
    Suspended(&'static str),
    /// UNKWN: mbatchd lost contact with the execution host; the job may be running.
    Unknown,
    /// DONE, POST_DONE.
    Done,
    /// EXIT: the exit code and reason say how.
    Exit,
    /// ZOMBI: LSF gave the job up (killed while UNKWN, or forced).
    Zombie,
    /// POST_ERR: the job ended, and its post-execution processing failed.
    PostError,
}

/// Classifies a STAT.
pub fn classify(stat: &str) -> StateClass {
    match stat {
        "PEND" | "PSUSP" | "WAIT" | "PROV" => StateClass::Queued,
        "USUSP" => StateClass::Suspended("suspended by its owner or an administrator (USUSP)"),
        "SSUSP" => {
            StateClass::Suspended("suspended by LSF (SSUSP: load, a preemption or a window)")
        }
        "UNKWN" => StateClass::Unknown,
        "DONE" | "POST_DONE" => StateClass::Done,
        "EXIT" => StateClass::Exit,
        "ZOMBI" => StateClass::Zombie,
        "POST_ERR" => StateClass::PostError,
        _ => StateClass::Running,
    }
}

fn failed(reason: impl Into<String>, exit_code: Option<i32>, ran: bool) -> Verdict {
    Verdict::Failed {
        reason: reason.into(),
        exit_code,
        ran,
    }
}

/// The verdict of an EXIT job, from its exit code (or the signal that ended it, as only the
/// job report says) and its exit reason; `None` when neither says anything (the report may).
/// `killed_by_us`: flowrun asked LSF to kill the job.
pub fn exit_verdict(
    exit_code: Option<i32>,
    signal: Option<i32>,
    reason: &str,
    killed_by_us: bool,
) -> Option<Verdict> {
    let ran = exit_code.is_some() || signal.is_some();
    Some(match reason_keyword(reason) {
        // bkill: by its owner (flowrun runs as the owner), by an administrator, or forced (-r)
        "TERM_OWNER" | "TERM_ADMIN" | "TERM_FORCE_OWNER" | "TERM_FORCE_ADMIN" if killed_by_us => {
            Verdict::Killed
        }
        "TERM_OWNER" | "TERM_ADMIN" | "TERM_FORCE_OWNER" | "TERM_FORCE_ADMIN" => {
            failed("killed outside flowrun", exit_code, ran)
        }
        "TERM_RUNLIMIT" => failed("LSF run limit", exit_code, true),
        "TERM_MEMLIMIT" => failed("LSF memory limit", exit_code, true),
        "TERM_CPULIMIT" => failed("LSF CPU time limit", exit_code, true),
        "TERM_CWD_NOTEXIST" => failed(
            "LSF could not enter the job's working directory on the execution host \
             (TERM_CWD_NOTEXIST)",
            None,
            false,
        ),
        "" => match (exit_code, signal) {
            (Some(0), _) => failed("LSF reported EXIT with exit code 0", Some(0), true),
            (Some(n), _) => Verdict::Exited(n),
            (None, Some(s)) => Verdict::Signaled(s),
            (None, None) => return None,
        },
        _ => failed(format!("LSF {}", reason.trim()), exit_code, ran),
    })
}

/// A job report LSF wrote into the `-o` file when the job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The job of the `Subject:` line: `123` or `123[4]`.
    pub id: String,
    /// `Done` (rather than `Exited`).
    pub done: bool,
    /// From `Exited with exit code N.`
    pub exit_code: Option<i32>,
    /// From `Exited with signal termination: NAME.` (newer LSF versions)
    pub signal: Option<i32>,
    /// The `TERM_...: description.` line, if any, without its final period.
    pub reason: String,
    /// `CPU time` and `Max Memory` of the resource usage summary.
    pub usage: Usage,
}

/// The report's source name in FINISHED events.
pub const REPORT_SOURCE: &str = "lsf-report";

/// Parses the last job report in `text` (LSF 10.1's layout: `Sender:`, `Subject: Job ID:
/// <name> in cluster <c> Done|Exited`, ..., the `# LSBATCH: User input` block between two lines
/// of 60 dashes, then the verdict lines and `Resource usage summary:`). The verdict lines are
/// read only after the block, which holds the job's command: its text cannot pass for them.
pub fn parse_report(text: &str) -> Option<Report> {
    let start = text.rfind("Sender: LSF System")?;
    let mut lines = text[start..].lines();
    let subject = lines.find_map(|l| l.strip_prefix("Subject: Job "))?;
    let (id, _) = subject.split_once(':')?;
    let done = match subject.trim_end().rsplit(' ').next()? {
        "Done" => true,
        "Exited" => false,
        _ => return None,
    };
    let dashes = "-".repeat(60);
    lines.find(|l| l.trim() == "# LSBATCH: User input")?;
    lines.find(|l| l.trim_end() == dashes)?;
    let mut report = Report {
        id: id.trim().to_string(),
        done,
        exit_code: None,
        signal: None,
        reason: String::new(),
        usage: Usage {
            cpu_s: None,
            max_rss_mb: None,
            source: REPORT_SOURCE,
        },
    };
    let mut verdict_seen = false;
    for line in lines.by_ref() {
        let line = line.trim();
        if line == "Resource usage summary:" {
            break;
        }
        if line.starts_with("TERM_") {
            report.reason = line.trim_end_matches('.').to_string();
        } else if line == "Successfully completed." {
            verdict_seen = done;
        } else if let Some(code) = line
            .strip_prefix("Exited with exit code ")
            .and_then(|r| r.strip_suffix('.'))
        {
            report.exit_code = code.parse().ok();
            verdict_seen = !done && report.exit_code.is_some();
        } else if let Some(name) = line
            .strip_prefix("Exited with signal termination: ")
            .and_then(|r| r.strip_suffix('.'))
        {
            report.signal = signal_number(name);
            verdict_seen = !done;
        }
    }
    if !verdict_seen {
        return None;
    }
    for line in lines {
        let Some((label, value)) = line.split_once(" :") else {
            if line.trim() == "The output (if any) follows:" {
                break;
            }
            continue;
        };
        match label.trim() {
            "CPU time" => {
                report.usage.cpu_s = value.trim().strip_suffix("sec.").and_then(|n| {
                    n.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite() && *v >= 0.0)
                })
            }
            "Max Memory" => report.usage.max_rss_mb = memory_mb(value),
            _ => {}
        }
    }
    Some(report)
}

/// `12 MB`, `1.5 GB`, `512 KB` (LSF writes the unit of LSF_UNIT_FOR_LIMITS) in MiB; `-`:
/// unknown.
fn memory_mb(text: &str) -> Option<f64> {
    Some(parse_size(text, None)? / (1024.0 * 1024.0))
}

/// The signal of `strsignal`'s text, as LSF prints it after `signal termination:`.
fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "Hangup" => 1,
        "Interrupt" => 2,
        "Quit" => 3,
        "Aborted" => 6,
        "Killed" => 9,
        "Segmentation fault" => 11,
        "Terminated" => 15,
        "User defined signal 1" => 10,
        "User defined signal 2" => 12,
        "CPU time limit exceeded" => 24,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(code: i32, stdout: &str, stderr: &str) -> CommandOutput {
        CommandOutput::exited("bsub", code, stdout, stderr)
    }

    #[test]
    fn bsub_ids_after_esub_lines_on_either_stream() {
        // Real LSF 10.1 output with a site's esub lines (submitit's tests).
        let banner = "Memory reservation is (MB): 1024\nMemory Limit is (MB): 1024\n\n\
                      ===Your total amount of memory reservation for this job is (MB): 1024 ===\n\n";
        let line = "Job <301828> is submitted to default queue <short>.\n";
        assert_eq!(
            parse_bsub_id(&out(0, &format!("{banner}{line}"), "")).as_deref(),
            Some("301828")
        );
        assert_eq!(
            parse_bsub_id(&out(0, line, banner)).as_deref(),
            Some("301828")
        );
        assert_eq!(
            parse_bsub_id(&out(
                0,
                "Job <12345678> is submitted to queue <normal>.\n",
                ""
            ))
            .as_deref(),
            Some("12345678")
        );
        assert_eq!(
            parse_bsub_id(&out(255, "", "nosuch: No such queue. Job not submitted.")),
            None
        );
        assert_eq!(parse_bsub_id(&out(0, "Job <x1> is submitted", "")), None);
    }

    #[test]
    fn bjobs_rows_with_array_elements_and_empty_fields() {
        // bjobs -noheader -o "jobid jobindex stat exit_code exit_reason delimiter='|'"
        let text = "12345678|0|DONE|-|-\n301970|2|RUN|-|-\n301970|3|EXIT|130|TERM_OWNER: job killed by owner\n\
                    7|0|EXIT|-|TERM_OWNER: job killed by owner\nJOBID|JOBINDEX|STAT|EXIT_CODE|EXIT_REASON\n";
        let rows = parse_bjobs(text);
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert_eq!(
            rows[0],
            JobRow {
                id: "12345678".into(),
                stat: "DONE".into(),
                exit_code: None,
                exit_reason: "".into()
            }
        );
        assert_eq!(rows[1].id, "301970[2]");
        assert_eq!(
            (rows[2].exit_code, rows[2].exit_reason.as_str()),
            (Some(130), "TERM_OWNER: job killed by owner")
        );
        assert_eq!(base_id("301970[3]"), "301970");
        assert_eq!(base_id("7"), "7");
    }

    #[test]
    fn not_found_and_already_finished_are_not_failures() {
        assert!(only_not_found(
            "Job <123> is not found\nJob <124[2]> is not found\n"
        ));
        assert!(!only_not_found(""));
        assert!(!only_not_found(
            "Job <123> is not found\nConnection refused by server\n"
        ));
        assert!(bkill_only_ended(
            "Job <5>: Job has already finished\nJob <6[2]>: No matching job found\n"
        ));
        assert!(!bkill_only_ended("Job <5>: Connection refused by server\n"));
        assert!(!bkill_only_ended(""));
    }

    #[test]
    fn transient_failures_are_mbatchd_being_away() {
        assert!(is_transient(&out(
            255,
            "",
            "Connection refused by server. Job not submitted."
        )));
        assert!(is_transient(&out(
            255,
            "",
            "batch system daemon not responding ... still trying"
        )));
        assert!(is_transient(&out(
            255,
            "",
            "Pending job threshold reached. Job not submitted."
        )));
        for permanent in [
            "nosuch: No such queue. Job not submitted.",
            "Bad resource requirement syntax. Job not submitted.",
            "Too many processors requested. Job not submitted.",
            "Request aborted by esub. Job not submitted.",
        ] {
            assert!(!is_transient(&out(255, "", permanent)), "{permanent}");
        }
    }

    #[test]
    fn states_and_exit_reasons_follow_the_issue() {
        assert_eq!(classify("PEND"), StateClass::Queued);
        assert_eq!(classify("PSUSP"), StateClass::Queued);
        assert_eq!(classify("WAIT"), StateClass::Queued);
        assert_eq!(classify("PROV"), StateClass::Queued);
        assert_eq!(classify("RUN"), StateClass::Running);
        assert_eq!(classify("SOMETHING_NEW"), StateClass::Running);
        assert!(matches!(classify("USUSP"), StateClass::Suspended(_)));
        assert!(matches!(classify("SSUSP"), StateClass::Suspended(_)));
        assert_eq!(classify("UNKWN"), StateClass::Unknown);
        assert_eq!(classify("DONE"), StateClass::Done);
        assert_eq!(classify("EXIT"), StateClass::Exit);
        assert_eq!(classify("ZOMBI"), StateClass::Zombie);
        let f = |reason: &str, code, ran| Verdict::Failed {
            reason: reason.into(),
            exit_code: code,
            ran,
        };
        let v = |code, reason, ours| exit_verdict(code, None, reason, ours);
        assert_eq!(v(Some(3), "", false), Some(Verdict::Exited(3)));
        assert_eq!(v(Some(3), "", true), Some(Verdict::Exited(3)));
        assert_eq!(v(None, "", false), None);
        assert_eq!(
            v(
                Some(140),
                "TERM_RUNLIMIT: job killed after reaching LSF run time limit",
                false
            ),
            Some(f("LSF run limit", Some(140), true))
        );
        assert_eq!(
            v(
                Some(137),
                "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit",
                false
            ),
            Some(f("LSF memory limit", Some(137), true))
        );
        assert_eq!(
            v(Some(130), "TERM_OWNER: job killed by owner", true),
            Some(Verdict::Killed)
        );
        assert_eq!(v(None, "TERM_OWNER", true), Some(Verdict::Killed));
        assert_eq!(
            v(Some(130), "TERM_OWNER: job killed by owner", false),
            Some(f("killed outside flowrun", Some(130), true))
        );
        assert_eq!(
            v(
                None,
                "TERM_ADMIN: job killed by root or LSF administrator",
                false
            ),
            Some(f("killed outside flowrun", None, false))
        );
        assert_eq!(
            v(
                None,
                "TERM_ZOMBIE: job exited while LSF is not available",
                false
            ),
            Some(f(
                "LSF TERM_ZOMBIE: job exited while LSF is not available",
                None,
                false
            ))
        );
        assert_eq!(
            exit_verdict(None, Some(9), "", false),
            Some(Verdict::Signaled(9))
        );
    }

    /// A report as the emulator writes it (the layout of real LSF 10.1 reports).
    const REPORT: &str = "Sender: LSF System <lsfadmin@node7>
Subject: Job 12345678[3]: <flowrun-t-1[1-10]%2> in cluster <emu> Exited

Job <flowrun-t-1[1-10]%2> was submitted from host <node7> by user <me> in cluster <emu> at Thu Dec  2 17:36:28 2021
Job was executed on host(s) <node7>, in queue <normal>, as user <me> in cluster <emu> at Thu Dec  2 17:36:28 2021
</home/me> was used as the home directory.
</r> was used as the working directory.
Started at Thu Dec  2 17:36:28 2021
Terminated at Thu Dec  2 17:36:30 2021
Results reported at Thu Dec  2 17:36:30 2021

Your job looked like:

------------------------------------------------------------
# LSBATCH: User input
echo Successfully completed.; echo Exited with exit code 0.
------------------------------------------------------------

TERM_RUNLIMIT: job killed after reaching LSF run time limit.
Exited with exit code 140.

Resource usage summary:

    CPU time :                                   72461.66 sec.
    Max Memory :                                 7105 MB
    Average Memory :                             3.00 MB
    Run time :                                   2 sec.

The output (if any) follows:

Successfully completed.
";

    #[test]
    fn reports_give_the_verdict_and_usage_not_the_jobs_own_words() {
        let r = parse_report(REPORT).unwrap();
        assert_eq!(
            r,
            Report {
                id: "12345678[3]".into(),
                done: false,
                exit_code: Some(140),
                signal: None,
                reason: "TERM_RUNLIMIT: job killed after reaching LSF run time limit".into(),
                usage: Usage {
                    cpu_s: Some(72461.66),
                    max_rss_mb: Some(7105.0),
                    source: REPORT_SOURCE
                },
            }
        );
        let done = REPORT
            .replace("Exited\n", "Done\n")
            .replace(
                "TERM_RUNLIMIT: job killed after reaching LSF run time limit.\nExited with exit code 140.",
                "Successfully completed.",
            )
            .replace("7105 MB", "-");
        let r = parse_report(&done).unwrap();
        assert!(r.done && r.exit_code.is_none() && r.reason.is_empty());
        assert_eq!(r.usage.max_rss_mb, None);
        // With LSB_STDOUT_DIRECT=Y the report follows a separator, after any output.
        let direct = format!("flowrun: cannot open the log\n\n{}\n{done}", "-".repeat(60));
        assert!(parse_report(&direct).unwrap().done);
        let signalled = REPORT.replace(
            "TERM_RUNLIMIT: job killed after reaching LSF run time limit.\nExited with exit code 140.",
            "Exited with signal termination: Killed.",
        );
        assert_eq!(parse_report(&signalled).unwrap().signal, Some(9));
        // A report cut short (still being written) says nothing.
        assert_eq!(
            parse_report(&REPORT[..REPORT.find("TERM_RUNLIMIT").unwrap()]),
            None
        );
        assert_eq!(parse_report("hello\n"), None);
        let gb = REPORT.replace("7105 MB", "1.5 GB");
        assert_eq!(parse_report(&gb).unwrap().usage.max_rss_mb, Some(1536.0));
    }
}
