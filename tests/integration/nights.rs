//! Nights that survive (issue 15): the journal a run writes as it goes, what another shell
//! reads of it (`flowrun status`), results after the host is SIGKILLed, and `--resume`.

use std::{
    path::Path,
    process::Child,
    time::{Duration, Instant},
};

use flowrun_tests::{collect, flowrun, send_signal, start_flow, wait_until, Run};
use serde_json::Value;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `flowrun status RUN_DIR --json`, parsed.
fn status_json(home: &Path, run_dir: &Path) -> Value {
    let o = flowrun(home)
        .arg("status")
        .arg(run_dir)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[allow(dead_code)] // used by the resume tests below
/// How many times job `name` ran (each run appends one line to its marker file).
fn executions(marks: &Path, name: &str) -> usize {
    std::fs::read_to_string(marks.join(name))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Five quick jobs, a slow one (it sleeps unless `resumed` exists) and one after it. Every job
/// appends a line to its marker file in `marks` when it runs.
fn crash_flow(marks: &Path) -> String {
    let m = marks.display();
    let mut s = String::from("[flow]\nname = \"nights\"\n");
    for i in 1..=5 {
        s.push_str(&format!(
            "[[job]]\nname = \"q{i}\"\ncmd = \"echo ran >> {m}/q{i}\"\n"
        ));
    }
    s.push_str(&format!(
        "[[job]]\nname = \"slow\"\ncmd = \"echo ran >> {m}/slow; echo $$ > {m}/slow.pid; test -e {m}/resumed || exec sleep 120\"\n"
    ));
    s.push_str(&format!(
        "[[job]]\nname = \"after\"\nneeds = [\"slow\"]\ncmd = \"echo ran >> {m}/after\"\n"
    ));
    s
}

/// Starts the crash flow, waits until the quick jobs passed in the journal and the slow one
/// runs, then SIGKILLs flowrun. Returns the marks directory.
fn run_and_kill(dir: &Path) -> std::path::PathBuf {
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let child: Child = start_flow(dir, &crash_flow(&marks), &["-q"]);
    let out = dir.join("out");
    wait_until(
        Duration::from_secs(60),
        "the quick jobs passed in the journal",
        || {
            out.join("journal").exists()
                && marks.join("slow.pid").exists()
                && status_json(dir, &out)["counts"]["passed"] == 5
        },
    );
    let live = status_json(dir, &out);
    assert_eq!(live["host_alive"], true, "{live}");
    assert_eq!(live["finished"], false, "{live}");
    send_signal(&child, libc::SIGKILL);
    let crashed: Run = collect(child.wait_with_output().unwrap(), &out);
    assert_eq!(crashed.code, -1, "{crashed:#?}");
    marks
}

#[test]
fn after_a_sigkill_of_flowrun_the_journal_keeps_every_verdict_and_no_job_is_left() {
    let dir = tempdir();
    let marks = run_and_kill(dir.path());
    let out = dir.path().join("out");
    // The local job dies with its host (the backend's watchdog).
    let pid: i32 = std::fs::read_to_string(marks.join("slow.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t = Instant::now();
    wait_until(
        Duration::from_secs(5),
        "the slow job to die with flowrun",
        || !pid_alive(pid),
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    let st = status_json(dir.path(), &out);
    assert_eq!(st["host_alive"], false, "{st}");
    assert_eq!(st["finished"], false, "{st}");
    assert_eq!(st["counts"]["passed"], 5, "{st}");
    assert_eq!(st["counts"]["running"], 1, "{st}");
    assert_eq!(st["counts"]["scheduled"], 1, "{st}");
    let running: Vec<&Value> = st["jobs"].as_array().unwrap().iter().collect();
    assert_eq!(running.len(), 1, "{st}");
    assert_eq!(running[0]["name"], "slow");
    // The text form says the same, and names the way on.
    let o = flowrun(dir.path())
        .arg("status")
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("passed 5"), "{text}");
    assert!(text.contains("running  slow"), "{text}");
    assert!(text.contains("--resume"), "{text}");
}

#[test]
fn a_journal_cut_inside_its_last_record_is_read_up_to_the_cut() {
    let dir = tempdir();
    run_and_kill(dir.path());
    let out = dir.path().join("out");
    let journal = out.join("journal");
    let before = status_json(dir.path(), &out);
    // A torn write: garbage that looks like the start of a frame.
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 9, 9]);
    std::fs::write(&journal, &bytes).unwrap();
    let after = status_json(dir.path(), &out);
    assert_eq!(after["torn_tail"], true, "{after}");
    assert_eq!(after["counts"], before["counts"], "{after}");
}

#[test]
fn status_of_a_finished_run_reports_it_finished_with_its_failures() {
    let dir = tempdir();
    let flow = "[flow]\nname = \"done\"\n[[job]]\nname = \"ok\"\ncmd = \"true\"\n[[job]]\nname = \"bad\"\ncmd = \"exit 3\"\n";
    let child = start_flow(dir.path(), flow, &["-q"]);
    let run = collect(child.wait_with_output().unwrap(), &dir.path().join("out"));
    assert_eq!(run.code, 1, "{run:#?}");
    let st = status_json(dir.path(), &run.out);
    assert_eq!(st["finished"], true, "{st}");
    assert_eq!(st["host_alive"], false, "{st}");
    assert_eq!(st["counts"]["passed"], 1);
    assert_eq!(st["counts"]["failed"], 1);
    assert_eq!(st["jobs"][0]["name"], "bad");
    assert_eq!(st["jobs"][0]["reason_kind"], "exit_code");
    let o = flowrun(dir.path())
        .arg("status")
        .arg(&run.out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("finished"), "{text}");
    assert!(text.contains("failed   bad: exit code 3"), "{text}");
}
