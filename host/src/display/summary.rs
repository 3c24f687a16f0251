//! The end-of-run summary, cause first: the failed jobs with their logs' last lines (as nextest
//! shows the output of failing tests), then the totals, then the reasons, grouped, failed before
//! killed before skipped, each with the names of its jobs, then the results path. Bounded
//! whatever the run: a few jobs' logs, a few lines of names per reason, 30 reasons.

use std::{fmt::Write as _, sync::Arc};

use super::{
    format::{self, count, paint, seconds, status_style, Style},
    state::{EndedJob, Progress, Top},
    tail::Tail,
};
use crate::sched::Status;

/// Reasons listed; the rest are counted.
pub const MAX_REASONS: usize = 30;
/// Lines of job names under each reason.
pub const NAME_LINES: usize = 3;
/// Lines of each failed job's log.
pub const TAIL_LINES: usize = 10;

/// The jobs whose logs the summary shows, failed first, each in the order it ended.
pub fn jobs_with_logs(p: &Progress) -> Vec<&EndedJob> {
    let mut v: Vec<&EndedJob> = p.ended.iter().collect();
    v.sort_by_key(|e| e.status != Status::Failed);
    v
}

/// The summary's text. `tails` holds the log tail of each of [`jobs_with_logs`], in that order
/// (`None`: the job has no log). `width` is the terminal's (or the plain output's) width.
pub fn render(p: &Progress, tails: &[Option<Tail>], width: usize, colour: bool) -> String {
    let mut out = String::new();
    let width = width.max(40);

    // 1. The failed (then killed) jobs with the end of their logs.
    let with_logs = jobs_with_logs(p);
    for (job, tail) in with_logs
        .iter()
        .zip(tails.iter().chain(std::iter::repeat(&None)))
    {
        let word = job.status.name().to_ascii_uppercase();
        let _ = writeln!(
            out,
            "{} {}: {}",
            paint(&word, status_style(job.status), colour),
            job.name,
            job.reason
        );
        match (&job.log, tail) {
            (Some(log), Some(Tail::Lines(lines))) if lines.is_empty() => {
                let _ = writeln!(out, "  log: {} (empty)", log.display());
            }
            (Some(log), Some(Tail::Lines(lines))) => {
                let _ = writeln!(out, "  log: {} (last lines)", log.display());
                for l in lines {
                    let _ = writeln!(out, "  {} {l}", paint("|", Style::Dim, colour));
                }
            }
            (Some(log), Some(Tail::Unreadable(why))) => {
                let _ = writeln!(out, "  log: {} (cannot read it: {why})", log.display());
            }
            (Some(log), None) => {
                let _ = writeln!(out, "  log: {}", log.display());
            }
            (None, _) => {
                let _ = writeln!(out, "  (no log)");
            }
        }
    }
    if p.ended_not_shown > 0 {
        let n = p.ended_not_shown;
        let _ = writeln!(
            out,
            "... and {n} more failed or killed {}; results.json has every log path",
            if n == 1 { "job" } else { "jobs" }
        );
    }
    if !out.is_empty() {
        out.push('\n');
    }

    // 2. The totals.
    let s = p.finished.clone().unwrap_or_default();
    let total = s.passed + s.failed + s.killed + s.skipped;
    let interrupted = match (s.interrupted, p.signal) {
        (true, Some(sig)) => format!(" (interrupted by {sig})"),
        (true, None) => " (interrupted)".to_string(),
        _ => String::new(),
    };
    let mut totals = format!("{} passed", s.passed);
    for (n, st) in [
        (s.failed, Status::Failed),
        (s.killed, Status::Killed),
        (s.skipped, Status::Skipped),
    ] {
        let text = format!("{n} {}", st.name());
        let style = if n > 0 {
            status_style(st)
        } else {
            Style::Plain
        };
        let _ = write!(totals, ", {}", paint(&text, style, colour));
    }
    let _ = writeln!(
        out,
        "flow {}: {} in {}{interrupted}: {totals}",
        p.flow,
        count(total, "job"),
        seconds(s.duration_s),
    );

    // Passes that need a second look (a job that passed only on a retry) or that this run did
    // not see (carried over from an earlier run).
    if s.flaky > 0 {
        let more = match s.flaky.saturating_sub(s.flaky_names.len() as u64) {
            0 => String::new(),
            n => format!(", ... {n} more"),
        };
        let line = format!(
            "flaky: {} job(s) passed after a failed attempt ({}{more})",
            s.flaky,
            s.flaky_names.join(", ")
        );
        let _ = writeln!(out, "{}", format::truncate(&line, width));
    }
    if s.reused > 0 {
        let _ = writeln!(
            out,
            "reused: {} job(s) passed in an earlier run with the same definition and were not rerun",
            s.reused
        );
    }

    // 3. The reasons, cause first.
    let groups = p.sorted_groups();
    if !groups.is_empty() {
        let _ = writeln!(out, "{:<8} {:>6}  reason", "status", "count");
    }
    // The table is an overview: its reasons fit the width; the lines above have them whole.
    let reason_width = width.saturating_sub(18).max(40);
    for g in groups.iter().take(MAX_REASONS) {
        let word = format!("{:<8}", g.status.name());
        let _ = writeln!(
            out,
            "{} {:>6}  {}",
            paint(&word, status_style(g.status), colour),
            g.count,
            format::truncate(&g.reason, reason_width)
        );
        for l in name_lines(&g.names, g.count, width.saturating_sub(18)) {
            let _ = writeln!(out, "{:17}{l}", "");
        }
    }
    if groups.len() > MAX_REASONS {
        let rest: u64 = groups[MAX_REASONS..].iter().map(|g| g.count).sum();
        let _ = writeln!(
            out,
            "... {} more reasons ({}); results.json has them all",
            groups.len() - MAX_REASONS,
            count(rest, "job")
        );
    }
    let ungrouped = p.ungrouped.done();
    if ungrouped > 0 {
        let _ = writeln!(
            out,
            "... and {} with yet other reasons; results.json has them all",
            count(ungrouped, "job")
        );
    }

    // 4. Where the time, CPU and memory went (issue 14: what to look at first when a run is
    // slow or a machine runs out of memory), and where the results are.
    top_line(&mut out, "slowest", &p.slowest, 0.05, seconds, width);
    top_line(&mut out, "most CPU", &p.most_cpu, 0.05, seconds, width);
    top_line(
        &mut out,
        "most memory",
        &p.most_memory,
        0.1,
        mebibytes,
        width,
    );
    if p.finished.is_some() {
        match &s.results_error {
            None => {
                let _ = writeln!(out, "results: {}", s.results_path.display());
            }
            // This summary is then the only record of the run: say so, where results.json
            // would be named.
            Some(why) => {
                let _ = writeln!(
                    out,
                    "results: {}: {}: {why}; the summary above is all that is left of this run",
                    paint("NOT WRITTEN", Style::Bad, colour),
                    s.results_path.display()
                );
            }
        }
    }
    out
}

/// One "label: job value, job value, ..." line of `top`'s jobs whose value is at least `min` (a job
/// that used nothing measurable is not worth naming), when there are at least two of them (one
/// job is no ranking).
fn top_line(
    out: &mut String,
    label: &str,
    top: &Top,
    min: f64,
    value: fn(f64) -> String,
    width: usize,
) {
    let list: Vec<String> = top
        .0
        .iter()
        .filter(|(v, _)| *v >= min)
        .map(|(v, name)| format!("{name} {}", value(*v)))
        .collect();
    if list.len() > 1 {
        let room = width.saturating_sub(label.len() + 2);
        let _ = writeln!(out, "{label}: {}", format::truncate(&list.join(", "), room));
    }
}

/// A memory size given in MiB, in MiB or GiB.
fn mebibytes(mb: f64) -> String {
    if mb >= 1024.0 {
        format!("{:.1} GiB", mb / 1024.0)
    } else if mb >= 10.0 {
        format!("{mb:.0} MiB")
    } else {
        format!("{mb:.1} MiB")
    }
}

/// The names of a group's jobs on at most [`NAME_LINES`] lines of `width` columns, then how
/// many more there are.
pub fn name_lines(names: &[Arc<str>], total: u64, width: usize) -> Vec<String> {
    let width = width.max(20);
    let total = total.max(names.len() as u64);
    let more = |n: u64| format!("... {n} more");
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut i = 0;
    while i < names.len() {
        let name = format::truncate(&names[i], width - 2);
        let left_after = total - i as u64 - 1;
        let on_last_line = lines.len() + 1 == NAME_LINES;
        // Room to keep after the name: for the count of the rest where it will be written,
        // else for the comma that ends the line.
        let after = match left_after {
            0 => 0,
            n if on_last_line || i + 1 == names.len() => 2 + format::width(&more(n)),
            _ => 1,
        };
        let sep = if line.is_empty() { 0 } else { 2 };
        if format::width(&line) + sep + format::width(&name) + after <= width {
            if sep > 0 {
                line.push_str(", ");
            }
            line.push_str(&name);
            i += 1;
            continue;
        }
        if on_last_line || line.is_empty() {
            let rest = more(total - i as u64);
            if line.is_empty() {
                line = rest;
            } else {
                let _ = write!(line, ", {rest}");
            }
            lines.push(line);
            return lines;
        }
        line.push(',');
        lines.push(std::mem::take(&mut line));
    }
    let shown = names.len() as u64;
    if total > shown && line.is_empty() {
        line = more(total - shown);
    } else if total > shown {
        let _ = write!(line, ", {}", more(total - shown));
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::super::state::{tests::*, JobLines};
    use super::*;
    use crate::observe::{RunEvent, Summary};

    fn finished(p: &mut Progress, duration_s: f64, interrupted: bool) {
        let c = p.counts;
        p.apply(&RunEvent::RunFinished {
            time_us: 0,
            summary: Summary {
                passed: c.get(Status::Passed),
                failed: c.get(Status::Failed),
                killed: c.get(Status::Killed),
                skipped: c.get(Status::Skipped),
                interrupted,
                duration_s,
                results_path: "/runs/r1/results.json".into(),
                results_error: None,
                ..Summary::default()
            },
            phases: Default::default(),
        });
    }

    fn lines(n: usize) -> Option<Tail> {
        Some(Tail::Lines((1..=n).map(|i| format!("line {i}")).collect()))
    }

    #[test]
    fn one_passed_job() {
        let mut p = Progress::new(JobLines::NotPassed, false, 100);
        p.apply(&started(&["only"]));
        p.apply(&ended("only", Status::Passed, "", 0.2, Some(0.2)));
        finished(&mut p, 0.25, false);
        insta::assert_snapshot!(render(&p, &[], 80, false));
    }

    /// The cause comes first: a build failure above the killed test above the skips it caused,
    /// even though the skips are more numerous; each failed job with the end of its log.
    #[test]
    fn cause_first_with_log_tails() {
        let mut p = Progress::new(JobLines::NotPassed, false, 100);
        let names: Vec<String> = (1..=24).map(|i| format!("sim-dma-{i}")).collect();
        let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
        all.extend(["build-noassert", "lint", "slow", "sim-smoke-1"]);
        p.apply(&started(&all));
        p.apply(&ended("lint", Status::Passed, "", 0.4, Some(0.4)));
        p.apply(&ended(
            "build-noassert",
            Status::Failed,
            "fail pattern matched at line 12: Error-[SE] Syntax error",
            3.0,
            Some(2.9),
        ));
        p.apply(&ended(
            "sim-smoke-1",
            Status::Failed,
            "exit code 3",
            4.0,
            Some(1.0),
        ));
        p.apply(&ended(
            "slow",
            Status::Killed,
            "timed out after 1500ms",
            4.5,
            Some(1.5),
        ));
        for n in &names {
            p.apply(&ended(
                n,
                Status::Skipped,
                "dependency failed: build-noassert",
                4.5,
                None,
            ));
        }
        finished(&mut p, 4.5, false);
        let tails = [lines(3), Some(Tail::Lines(vec![])), lines(10)];
        insta::assert_snapshot!(render(&p, &tails, 80, false));
    }

    /// Issue 14 §1 and issue 10 item 13: the jobs that took the most time, CPU and memory, and
    /// a results.json that could not be written, said where the results path would be.
    #[test]
    fn top_usage_and_results_not_written() {
        let mut p = Progress::new(JobLines::NotPassed, false, 100);
        let jobs = ["compile", "sim-a", "sim-b", "lint", "fails"];
        p.apply(&started(&jobs));
        for (i, (job, wall, cpu, mem)) in [
            ("compile", 12.0, 95.5, 3100.0),
            ("sim-a", 40.0, 39.0, 850.0),
            ("sim-b", 35.0, 30.0, 9.5),
            ("lint", 0.3, 0.01, 0.05),
        ]
        .into_iter()
        .enumerate()
        {
            let RunEvent::JobStatus(mut e) = ended(job, Status::Passed, "", i as f64, Some(wall))
            else {
                unreachable!()
            };
            e.cpu_s = Some(cpu);
            e.max_rss_mb = Some(mem);
            p.apply(&RunEvent::JobStatus(e));
        }
        p.apply(&ended(
            "fails",
            Status::Failed,
            "exit code 3",
            5.0,
            Some(0.01),
        ));
        let c = p.counts;
        p.apply(&RunEvent::RunFinished {
            time_us: 0,
            summary: Summary {
                passed: c.get(Status::Passed),
                failed: c.get(Status::Failed),
                duration_s: 88.0,
                results_path: "/full/out/results.json".into(),
                results_error: Some("No space left on device (os error 28)".into()),
                ..Summary::default()
            },
            phases: Default::default(),
        });
        let text = render(&p, &[lines(1)], 100, false);
        assert!(
            text.contains("results: NOT WRITTEN: /full/out/results.json: No space left"),
            "{text}"
        );
        insta::assert_snapshot!(text);
    }

    /// Jobs that passed only on a retry, and passes carried over from an earlier run
    /// (`--resume`), get a line each under the totals.
    #[test]
    fn flaky_and_reused_lines() {
        let mut p = Progress::new(JobLines::NotPassed, false, 100);
        let names: Vec<String> = (1..=7).map(|i| format!("sim-{i}")).collect();
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        p.apply(&started(&all));
        for n in &names {
            p.apply(&ended(n, Status::Passed, "", 1.0, Some(1.0)));
        }
        let c = p.counts;
        p.apply(&RunEvent::RunFinished {
            time_us: 0,
            summary: Summary {
                passed: c.get(Status::Passed),
                duration_s: 3.0,
                results_path: "/runs/r1/results.json".into(),
                flaky: 6,
                flaky_names: names[..Summary::FLAKY_NAMES].to_vec(),
                reused: 1,
                ..Summary::default()
            },
            phases: Default::default(),
        });
        let text = render(&p, &[], 100, false);
        assert!(
            text.contains(
                "flaky: 6 job(s) passed after a failed attempt (sim-1, sim-2, sim-3, sim-4, sim-5, ... 1 more)"
            ),
            "{text}"
        );
        insta::assert_snapshot!(text);
        // Without either, neither line.
        let mut p = Progress::new(JobLines::NotPassed, false, 100);
        p.apply(&started(&["only"]));
        p.apply(&ended("only", Status::Passed, "", 0.2, Some(0.2)));
        finished(&mut p, 0.25, false);
        let text = render(&p, &[], 80, false);
        assert!(
            !text.contains("flaky:") && !text.contains("reused:"),
            "{text}"
        );
    }

    /// Wider terminals show more names per reason.
    #[test]
    fn names_use_the_width_there_is() {
        let mut p = Progress::new(JobLines::NotPassed, false, 100);
        p.apply(&started(&[]));
        for i in 1..=60 {
            p.apply(&ended(
                &format!("test-{i}"),
                Status::Skipped,
                "dependency failed: build",
                1.0,
                None,
            ));
        }
        finished(&mut p, 1.0, false);
        insta::assert_snapshot!("names_80", render(&p, &[], 80, false));
        insta::assert_snapshot!("names_160", render(&p, &[], 160, false));
    }

    /// An interrupted run, a 64 KiB fail line, an unreadable log and a job without one.
    #[test]
    fn interrupted_with_long_and_odd_reasons() {
        let mut p = Progress::new(JobLines::NotPassed, false, 100);
        p.apply(&started(&["big", "fifo", "remote", "w1", "w2"]));
        let huge = format!(
            "fail pattern matched at line 7: UVM_ERROR {}",
            "x".repeat(65_536)
        );
        p.apply(&ended("big", Status::Failed, &huge, 1.0, Some(1.0)));
        p.apply(&ended(
            "fifo",
            Status::Failed,
            "exit code 1",
            1.0,
            Some(1.0),
        ));
        let RunEvent::JobStatus(mut remote) =
            ended("remote", Status::Failed, "lost: node down", 1.0, None)
        else {
            unreachable!()
        };
        remote.log = None;
        p.apply(&RunEvent::JobStatus(remote));
        p.apply(&RunEvent::KillSignal {
            time_us: 0,
            signal: "SIGINT",
        });
        for w in ["w1", "w2"] {
            p.apply(&ended(
                w,
                Status::Killed,
                "killed by SIGINT while running",
                2.0,
                None,
            ));
        }
        finished(&mut p, 2.0, true);
        let tails = [
            lines(1),
            Some(Tail::Unreadable("not a regular file".into())),
            None,
        ];
        let text = render(&p, &tails, 80, false);
        assert!(text.lines().all(|l| format::width(l) <= 300), "{text}");
        insta::assert_snapshot!(text);
    }

    #[test]
    fn many_failures_are_bounded() {
        let mut p = Progress::new(JobLines::NotPassed, false, 100);
        p.apply(&started(&[]));
        for i in 0..500 {
            p.apply(&ended(
                &format!("t{i}"),
                Status::Failed,
                &format!("fail pattern matched at line {i}: mismatch"),
                1.0,
                Some(1.0),
            ));
        }
        finished(&mut p, 1.0, false);
        let tails: Vec<Option<Tail>> = (0..10).map(|_| lines(10)).collect();
        let text = render(&p, &tails, 80, false);
        // 10 logs of 12 lines, the reasons table, a few more lines: not 500 of anything.
        assert!(
            text.lines().count() < 10 * 12 + MAX_REASONS * 2 + 10,
            "{text}"
        );
        assert!(
            text.contains("... and 490 more failed or killed jobs"),
            "{text}"
        );
        assert!(text.contains("... 470 more reasons (470 jobs)"), "{text}");
    }

    #[test]
    fn name_lines_wrap_then_count() {
        let names: Vec<Arc<str>> = (1..=12).map(|i| format!("job-{i}").into()).collect();
        assert_eq!(name_lines(&names[..2], 2, 40), vec!["job-1, job-2"]);
        assert_eq!(
            name_lines(&names, 12, 24),
            vec![
                "job-1, job-2, job-3,",
                "job-4, job-5, job-6,",
                "job-7, job-8, ... 4 more"
            ]
        );
        assert_eq!(
            name_lines(&names[..3], 40, 100),
            vec!["job-1, job-2, job-3, ... 37 more"]
        );
        for w in 20..60 {
            for l in name_lines(&names, 500, w) {
                assert!(format::width(&l) <= w, "{w}: {l}");
            }
        }
    }
}
