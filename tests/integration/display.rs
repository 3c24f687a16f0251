//! The built-in status display through the real CLI: on a pseudo-terminal (the live line, its
//! width, its pauses, colour and its absence) and without one (the lines a CI log gets), and the
//! summary. Needs `cargo build --workspace` first.

use std::time::Duration;

use flowrun_tests::{is_progress_line, live_frames, run_flow, strip_escapes, PtyRun, Terminal};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

const WAIT: Duration = Duration::from_secs(60);

/// A flow with a long-running job among many quick ones, and one failure.
const BUSY_FLOW: &str = r#"
[flow]
name = "busy"
[backends.local]
kind = "local"
max_parallel = 4
[[job]]
name = "a-long-running-job"
cmd = "sleep 1.5"
[[job]]
name = "quick-{i}"
matrix = { i = { range = [1, 40] } }
cmd = "sleep 0.05"
[[job]]
name = "broken"
cmd = "sleep 0.3; echo about to fail; exit 3"
"#;

fn write_flow(dir: &std::path::Path, text: &str) {
    std::fs::write(dir.join("flow.toml"), text).unwrap();
}

/// `flowrun run` of `flow` on an 80x24 terminal, in a new directory (kept alive by the result).
fn run_on_pty(flow: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, PtyRun) {
    let dir = tempdir();
    write_flow(dir.path(), flow);
    let pty = PtyRun::start(
        dir.path(),
        &["run", "flow.toml", "--out", "out"],
        80,
        24,
        env,
    );
    (dir, pty)
}

#[test]
fn display_tty_line_fits_the_terminal_and_names_running_jobs() {
    for cols in [80usize, 50] {
        let dir = tempdir();
        write_flow(dir.path(), BUSY_FLOW);
        // -v: log lines are written while the live line is up; they must not mix.
        let pty = PtyRun::start(
            dir.path(),
            &["-v", "run", "flow.toml", "--out", "out"],
            cols as u16,
            24,
            &[],
        );
        let (code, out, secs) = pty.wait(WAIT);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(code, 1, "{text}");
        let frames = live_frames(&out);
        assert!(!frames.is_empty(), "no live line was drawn:\n{text}");
        for f in &frames {
            let w = f.trim_end().chars().count();
            assert!(
                w < cols,
                "a {w}-column frame on a {cols}-column terminal: {f:?}"
            );
        }
        assert!(
            // Cut on the narrow terminal, whole on the 80-column one.
            frames.iter().any(|f| f.contains(if cols >= 80 {
                "a-long-running-job"
            } else {
                "a-long-r"
            })),
            "the running job is never named:\n{frames:#?}"
        );
        assert!(frames.iter().any(|f| f.contains(" running")), "{frames:#?}");
        // At most ten redraws a second, however many events (an unchanged line is not redrawn).
        assert!(
            (frames.len() as f64) <= secs * 10.0 + 2.0,
            "{} frames in {secs:.1} s",
            frames.len()
        );
        // Replayed on a terminal of that width: nothing wrapped while the line was live, and no
        // leftover of it anywhere on the screen.
        let term = Terminal::replay(cols, &out);
        let lines = term.lines();
        assert!(
            !lines.iter().any(|l| is_progress_line(l)),
            "a status line was left behind:\n{}",
            lines.join("\n")
        );
        let wrapped: Vec<&String> = term
            .wrapped
            .iter()
            .filter(|l| is_progress_line(l))
            .collect();
        assert!(wrapped.is_empty(), "a status line wrapped: {wrapped:#?}");
        for l in lines.iter().filter(|l| l.contains("INFO")) {
            assert!(
                !l.contains("% |") && !l.contains("running,"),
                "mixed: {l:?}"
            );
        }
        // The failure got its own line as it happened, above the live line.
        assert!(
            lines
                .iter()
                .any(|l| l.contains("FAILED  broken") && l.contains("exit code 3")),
            "{}",
            lines.join("\n")
        );
    }
}

#[test]
fn display_stands_aside_while_an_interactive_job_holds_the_terminal() {
    let (_dir, mut pty) = run_on_pty(
        r#"
[flow]
name = "inter"
[backends.local]
kind = "local"
max_parallel = 2
[[job]]
name = "ask"
interactive = true
cmd = "printf 'name? '; read line; echo \"got:$line\""
[[job]]
name = "background-job"
cmd = "sleep 5"
"#,
        &[],
    );
    let prompt = pty.wait_for("name? ", WAIT);
    // The background job runs all along: a display that did not stand aside would redraw now.
    std::thread::sleep(Duration::from_millis(800));
    let during = pty.output();
    assert!(
        live_frames(&during[prompt..]).is_empty(),
        "the live line was drawn while the job held the terminal:\n{:?}",
        strip_escapes(&during[prompt..])
    );
    pty.type_in(b"flowrun-user\n");
    let answered = pty.output().len();
    let (code, out, _) = pty.wait(WAIT);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("got:flowrun-user"), "{text}");
    // The prompt was not wiped: nothing overwrote it before the answer.
    let term = Terminal::replay(80, &during);
    assert!(
        term.lines().iter().any(|l| l.starts_with("name?")),
        "{:#?}",
        term.lines()
    );
    // And it came back once the terminal was free, naming the job still running.
    let after = live_frames(&out[answered..]);
    assert!(
        after.iter().any(|f| f.contains("background-job")),
        "the live line did not come back:\n{text}"
    );
}

#[test]
fn display_stands_aside_after_ctrl_c() {
    let (_dir, mut pty) = run_on_pty(
        r#"
[flow]
name = "stop"
[backends.local]
kind = "local"
max_parallel = 2
kill_grace = "500ms"
[[job]]
name = "sleeper-{i}"
matrix = { i = { range = [1, 2] } }
cmd = "trap '' INT; sleep 30"
"#,
        &[],
    );
    pty.wait_for("2 running", WAIT);
    pty.type_in(b"\x03");
    let notice = pty.wait_for("starting nothing more", WAIT);
    let (code, out, _) = pty.wait(WAIT);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(code, 130, "{text}");
    assert!(
        text.contains(
            "flowrun: SIGINT: starting nothing more but `when = \"always\"` jobs, killing 2 \
             running jobs; SIGINT again to exit at once"
        ),
        "{text}"
    );
    assert!(
        live_frames(&out[notice..]).is_empty(),
        "the live line was drawn after the kill signal:\n{text}"
    );
    assert!(text.contains("(interrupted by SIGINT)"), "{text}");
    // The kills were the signal's doing: no log tails for them.
    assert!(!text.contains("(last lines)"), "{text}");
}

/// The flow of the non-terminal tests: a failure, the skip it causes, a timeout, passes, and a
/// job slow enough for periodic lines.
const MIXED_FLOW: &str = r#"
[flow]
name = "mixed"
[backends.local]
kind = "local"
max_parallel = 4
[[job]]
name = "fine-{i}"
matrix = { i = { range = [1, 3] } }
cmd = "true"
[[job]]
name = "bad"
cmd = "sleep 0.2; exit 2"
[[job]]
name = "needs-bad"
cmd = "true"
needs = ["bad"]
[[job]]
name = "hang"
cmd = "sleep 30"
timeout = "500ms"
[[job]]
name = "slow"
cmd = "sleep 1.6"
"#;

#[test]
fn display_without_a_tty_prints_each_job_that_did_not_pass_and_periodic_lines() {
    let dir = tempdir();
    let run = run_flow(dir.path(), MIXED_FLOW, &["--status-interval", "300ms"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let err = &run.stderr;
    assert!(!err.contains('\x1b'), "escape sequences in a pipe: {err:?}");
    assert!(!err.contains('\r'), "carriage returns in a pipe: {err:?}");
    let summary_at = err.find("\nflow mixed:").expect("a summary");
    let live: Vec<&str> = err[..summary_at].lines().collect();
    let job_lines: Vec<&str> = live
        .iter()
        .copied()
        .filter(|l| !is_progress_line(l) && l.starts_with('['))
        .collect();
    let count = |what: &str| job_lines.iter().filter(|l| l.contains(what)).count();
    assert_eq!(count("] FAILED  bad ("), 1, "{err}");
    assert_eq!(
        count("] SKIPPED needs-bad: dependency failed: bad"),
        1,
        "{err}"
    );
    assert_eq!(count("] KILLED  hang ("), 1, "{err}");
    assert_eq!(
        job_lines.len(),
        3,
        "one line per job that did not pass: {job_lines:#?}"
    );
    assert!(
        !err[..summary_at].contains("fine-1"),
        "passed jobs get no line: {err}"
    );
    let periodic = live.iter().filter(|l| is_progress_line(l)).count();
    assert!(
        periodic >= 2,
        "{periodic} periodic lines in a 1.6 s run:\n{err}"
    );
}

#[test]
fn display_status_interval_zero_prints_a_line_per_change_and_the_default_none_in_a_short_run() {
    let flow = r#"
[flow]
name = "steps"
[[job]]
name = "one"
cmd = "sleep 0.2"
[[job]]
name = "two"
cmd = "sleep 0.2"
needs = ["one"]
[[job]]
name = "three"
cmd = "sleep 0.2"
needs = ["two"]
"#;
    let dir = tempdir();
    let run = run_flow(dir.path(), flow, &["--status-interval", "0"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let lines: Vec<&str> = run.stderr.lines().filter(|l| is_progress_line(l)).collect();
    for want in [
        "0/3 0% | 1 running, 0 passed | one",
        "1/3 33%",
        "2/3 66%",
        "3/3 100%",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "no line with {want:?}: {lines:#?}"
        );
    }
    let counts = |l: &str| l.split_once("] ").map(|x| x.1.to_string());
    for w in lines.windows(2) {
        assert_ne!(counts(w[0]), counts(w[1]), "a line without a change");
    }

    let dir = tempdir();
    let run = run_flow(dir.path(), flow, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        !run.stderr.lines().any(is_progress_line),
        "the default interval is 10 s: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("flow steps: 3 jobs in "),
        "{}",
        run.stderr
    );
}

#[test]
fn display_quiet_prints_only_the_summary() {
    let dir = tempdir();
    let run = run_flow(dir.path(), MIXED_FLOW, &["-q", "--status-interval", "0"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.starts_with("FAILED bad: exit code 2\n"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.lines().any(is_progress_line), "{}", run.stderr);
    assert!(!run.stderr.contains("] FAILED"), "{}", run.stderr);
}

#[test]
fn display_dumb_terminals_and_no_color_get_no_escape_sequences() {
    let flow = r#"
[flow]
name = "esc"
[[job]]
name = "fails"
cmd = "sleep 0.4; exit 1"
"#;
    let start = |env: &[(&str, &str)]| {
        let (_dir, pty) = run_on_pty(flow, env);
        let (code, out, _) = pty.wait(WAIT);
        assert_eq!(code, 1, "{}", String::from_utf8_lossy(&out));
        out
    };
    // The control: a colour terminal gets colour.
    let colour = start(&[]);
    assert!(
        colour.contains(&0x1b),
        "{}",
        String::from_utf8_lossy(&colour)
    );

    let no_color = start(&[("NO_COLOR", "1")]);
    let text = String::from_utf8_lossy(&no_color);
    assert!(!no_color.contains(&0x1b), "ESC with NO_COLOR: {text:?}");
    assert!(
        !live_frames(&no_color).is_empty(),
        "still a live line: {text:?}"
    );
    assert!(text.contains("FAILED fails: exit code 1"), "{text}");

    let dumb = start(&[("TERM", "dumb")]);
    let text = String::from_utf8_lossy(&dumb);
    assert!(!dumb.contains(&0x1b), "ESC on a dumb terminal: {text:?}");
    // Plain lines only: every carriage return is the terminal's own, before a newline.
    assert!(
        text.match_indices('\r')
            .all(|(i, _)| text[i + 1..].starts_with('\n')),
        "a redraw on a dumb terminal: {text:?}"
    );
    assert!(text.contains("] FAILED  fails ("), "{text}");
}

#[test]
fn display_summary_puts_the_cause_first_with_the_end_of_each_failed_log() {
    let dir = tempdir();
    let flow = r#"
[flow]
name = "causes"
[backends.local]
kind = "local"
max_parallel = 4
[[job]]
name = "build"
cmd = "for i in $(seq 1 30); do echo build line $i; done; exit 1"
[[job]]
name = "test-{n}"
matrix = { n = { range = [1, 12] } }
cmd = "true"
needs = ["build"]
[[job]]
name = "hang"
cmd = "echo waiting forever; sleep 30"
timeout = "400ms"
[[job]]
name = "lint"
cmd = "true"
"#;
    let run = run_flow(dir.path(), flow, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    let err = &run.stderr;
    let at = |s: &str| err.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{err}"));
    // The failed job and its log's last ten lines, then the killed one.
    let build = at("FAILED build: exit code 1\n");
    let log = run.out.join("jobs/build/output.log");
    at(&format!("  log: {} (last lines)\n", log.display()));
    for i in 21..=30 {
        at(&format!("  | build line {i}\n"));
    }
    assert!(
        !err.contains("| build line 20\n"),
        "more than ten lines: {err}"
    );
    let hang = at("KILLED hang: timed out after 400ms\n");
    at("  | waiting forever\n");
    assert!(build < hang, "{err}");
    // The totals, then the reasons: failed before killed before skipped, although the skips
    // are the most numerous; their names are not cut to three.
    let totals = at("flow causes: 15 jobs in ");
    let failed = at("\nfailed        1  exit code 1\n");
    let killed = at("\nkilled        1  timed out after 400ms\n");
    let skipped = at("\nskipped      12  dependency failed: build\n");
    assert!(
        hang < totals && totals < failed && failed < killed && killed < skipped,
        "{err}"
    );
    at("test-1, test-2, test-3, test-4, test-5");
    assert!(
        err.ends_with(&format!(
            "results: {}\n",
            run.out.join("results.json").display()
        )),
        "{err}"
    );
}

#[test]
fn display_status_interval_rejects_what_is_not_a_duration() {
    let dir = tempdir();
    let run = run_flow(
        dir.path(),
        "[[job]]\nname = \"a\"\ncmd = \"true\"\n",
        &["--status-interval", "soon"],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("--status-interval") && run.stderr.contains("soon"),
        "{}",
        run.stderr
    );
    assert!(run.results.is_null(), "nothing ran");
}
