//! Nights that survive (issue 15): the journal a run writes as it goes, what another shell
//! reads of it (`flowrun status`), results after the host is SIGKILLed, and `--resume`.

use std::{
    path::Path,
    process::Child,
    time::{Duration, Instant},
};

use flowrun_tests::{collect, flowrun, send_signal, start_flow, status_json, wait_until, Run};
use serde_json::Value;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// How many times job `name` ran (each run appends one line to its marker file).
fn executions(marks: &Path, name: &str) -> usize {
    std::fs::read_to_string(marks.join(name))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// A scratch directory and its `marks` directory, for [`executions`].
fn with_marks() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempdir();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    (dir, marks)
}

fn pid_alive(pid: i32) -> bool {
    // As kill(pid, 0) would say (a zombie counts), without unsafe code in the test binary.
    Path::new(&format!("/proc/{pid}")).exists()
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
    // The text form of the live run: counts, the running job, the host alive.
    let o = flowrun(dir).arg("status").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("passed 5"), "{text}");
    assert!(text.contains("running  slow"), "{text}");
    assert!(
        text.contains(&format!("host pid {} alive", live["host_pid"])),
        "{text}"
    );
    assert!(
        !text.contains("--resume"),
        "a live run needs no resume: {text}"
    );
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
    assert!(
        text.contains("was running  slow  [local] when its host stopped"),
        "nobody runs the job now that its host is gone: {text}"
    );
    assert!(text.contains("--resume"), "{text}");
}

#[test]
fn a_journal_cut_inside_its_last_record_is_read_up_to_the_cut_and_resumes() {
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
    // The resumed host cuts the torn bytes off before it appends: its records are readable.
    std::fs::write(dir.path().join("marks/resumed"), "").unwrap();
    let run = resume(dir.path(), &["--resume", "out"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(executions(&dir.path().join("marks"), "q1"), 1);
    let st = status_json(dir.path(), &out);
    assert_eq!(st["torn_tail"], false, "{st}");
    assert_eq!(st["counts"]["passed"], 7, "{st}");
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

/// `flowrun status --watch --json` follows a running run from another process: it prints the
/// counts again as jobs end (here each job waits for a go file the test writes only once the
/// watcher has shown the previous pass), and exits 0 by itself once the run has ended.
#[test]
fn status_watch_follows_a_running_run_and_exits_when_it_ends() {
    let (dir, marks) = with_marks();
    let m = marks.display();
    let mut flow = String::from("[flow]\nname = \"watched\"\n");
    for i in 1..=3 {
        flow.push_str(&format!(
            "[[job]]\nname = \"w{i}\"\ncmd = \"while ! test -e {m}/go{i}; do sleep 0.05; done\"\n"
        ));
    }
    let run = start_flow(dir.path(), &flow, &["-q"]);
    let out = dir.path().join("out");
    wait_until(Duration::from_secs(60), "the journal", || {
        out.join("journal").exists()
    });
    let mut watcher = flowrun(dir.path())
        .args(["status", "--watch", "--json"])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let stdout = watcher.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).expect("one JSON object a line");
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let next_passed = |want: u64, seen: &mut Vec<Value>| loop {
        let v = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no status with {want} passed: {e}; seen {seen:?}"));
        let passed = v["counts"]["passed"].as_u64().unwrap();
        assert!(passed <= want, "{v}");
        seen.push(v);
        if passed == want {
            return;
        }
    };
    next_passed(0, &mut seen);
    for i in 1..=3 {
        std::fs::write(marks.join(format!("go{i}")), "").unwrap();
        next_passed(i, &mut seen);
    }
    let status = watcher.wait().unwrap();
    reader.join().unwrap();
    while let Ok(v) = rx.try_recv() {
        seen.push(v);
    }
    assert_eq!(status.code(), Some(0), "the watcher ends with the run");
    let last = seen.last().unwrap();
    assert_eq!(last["finished"], true, "{last}");
    assert_eq!(last["counts"]["passed"], 3, "{last}");
    // The counts it printed changed as the run went on, and never went back.
    let passed: Vec<u64> = seen
        .iter()
        .map(|v| v["counts"]["passed"].as_u64().unwrap())
        .collect();
    assert!(passed.windows(2).all(|w| w[0] <= w[1]), "{passed:?}");
    for want in 0..=3 {
        assert!(passed.contains(&want), "{passed:?}");
    }
    let done = collect(run.wait_with_output().unwrap(), &out);
    assert_eq!(done.code, 0, "{done:#?}");
}

// --- --resume -------------------------------------------------------------------------------

fn resume(dir: &Path, args: &[&str]) -> Run {
    let o = flowrun(dir)
        .args(["run", "flow.toml", "-q"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    collect(o, &dir.join("out"))
}

#[test]
fn resume_after_a_sigkill_reruns_only_what_did_not_pass_and_ends_like_an_uninterrupted_run() {
    let dir = tempdir();
    let marks = run_and_kill(dir.path());
    std::fs::write(marks.join("resumed"), "").unwrap();
    // --dry-run --resume lists what would run, and runs nothing.
    let plan = flowrun(dir.path())
        .args(["run", "flow.toml", "--dry-run", "--resume", "out"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(0), "{text}");
    assert!(
        text.contains("5 of 7 jobs passed there unchanged"),
        "{text}"
    );
    assert!(text.contains("  slow\n  after\n"), "{text}");
    assert_eq!(executions(&marks, "slow"), 1);

    let run = resume(dir.path(), &["--resume", "out"]);
    assert_eq!(run.code, 0, "{run:#?}");
    for i in 1..=5 {
        let name = format!("q{i}");
        assert_eq!(executions(&marks, &name), 1, "{name} ran again");
        let from = run.job(&name)["reused_from"].as_str().unwrap_or("");
        assert!(from.contains("/out (run flowrun-nights-"), "{name}: {from}");
    }
    assert_eq!(executions(&marks, "slow"), 2);
    assert_eq!(executions(&marks, "after"), 1);
    assert!(run.job("slow")["reused_from"].is_null(), "{run:#?}");
    assert_eq!(run.results["resumes"], 1);
    assert!(run.stderr.contains("reused: 5 job(s)"), "{}", run.stderr);
    // The same flow, uninterrupted, ends the same way.
    let full = flowrun(dir.path())
        .args(["run", "flow.toml", "-q", "--out", "full"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let full = collect(full, &dir.path().join("full"));
    assert_eq!(full.code, 0, "{full:#?}");
    let verdicts = |r: &Run| -> Vec<(String, String)> {
        r.results["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| (j["name"].to_string(), j["status"].to_string()))
            .collect()
    };
    assert_eq!(verdicts(&run), verdicts(&full));
    assert_eq!(run.results["counts"], full.results["counts"]);
    // The journal now holds both hosts; status reads the whole.
    let st = status_json(dir.path(), &run.out);
    assert_eq!(st["segments"], 2, "{st}");
    assert_eq!(st["finished"], true, "{st}");
    assert_eq!(st["counts"]["passed"], 7, "{st}");
}

fn chain_flow(marks: &Path, b_cmd: &str) -> String {
    let m = marks.display();
    format!(
        "[flow]\nname = \"chain\"\n\
         [[job]]\nname = \"a\"\ncmd = \"echo ran >> {m}/a\"\n\
         [[job]]\nname = \"b\"\nneeds = [\"a\"]\ncmd = \"echo ran >> {m}/b; {b_cmd}\"\n\
         [[job]]\nname = \"c\"\nneeds = [\"b\"]\ncmd = \"echo ran >> {m}/c\"\n\
         [[job]]\nname = \"d\"\ncmd = \"echo ran >> {m}/d\"\n"
    )
}

#[test]
fn a_changed_job_definition_reruns_that_job_and_its_dependents_only() {
    let dir = tempdir();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let first = flowrun_tests::run_flow(dir.path(), &chain_flow(&marks, "true"), &["-q"]);
    assert_eq!(first.code, 0, "{first:#?}");
    std::fs::write(
        dir.path().join("flow.toml"),
        chain_flow(&marks, "echo changed"),
    )
    .unwrap();
    let run = resume(dir.path(), &["--resume", "out"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let ran: Vec<usize> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| executions(&marks, n))
        .collect();
    assert_eq!(ran, [1, 2, 2, 1]);
    assert!(run.job("a")["reused_from"].is_string());
    assert!(run.job("c")["reused_from"].is_null());
}

#[test]
fn rerun_failed_runs_exactly_the_failures_and_their_dependents_in_a_new_directory() {
    let dir = tempdir();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let m = marks.display();
    let mut flow = String::from("[flow]\nname = \"rerun\"\n");
    for i in 0..40 {
        // Jobs 7 and 23 fail until `fixed` exists; each has a dependent.
        let check = if i == 7 || i == 23 {
            format!("; test -e {m}/fixed")
        } else {
            String::new()
        };
        flow.push_str(&format!(
            "[[job]]\nname = \"j{i}\"\ncmd = \"echo ran >> {m}/j{i}{check}\"\n"
        ));
    }
    for i in [7, 23] {
        flow.push_str(&format!(
            "[[job]]\nname = \"after{i}\"\nneeds = [\"j{i}\"]\ncmd = \"echo ran >> {m}/after{i}\"\n"
        ));
    }
    let first = flowrun_tests::run_flow(dir.path(), &flow, &["-q", "-j", "8"]);
    assert_eq!(first.code, 1, "{first:#?}");
    assert_eq!(first.status("after7"), "skipped");
    std::fs::write(marks.join("fixed"), "").unwrap();
    let o = flowrun(dir.path())
        .args([
            "run",
            "flow.toml",
            "-q",
            "--out",
            "again",
            "--rerun-failed",
            "out",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let again = collect(o, &dir.path().join("again"));
    assert_eq!(again.code, 0, "{again:#?}");
    for i in 0..40 {
        let want = if i == 7 || i == 23 { 2 } else { 1 };
        assert_eq!(executions(&marks, &format!("j{i}")), want, "j{i}");
    }
    assert_eq!(executions(&marks, "after7"), 1);
    assert_eq!(executions(&marks, "after23"), 1);
    // The passes carried over point at the first run's evidence.
    let j0 = again.job("j0");
    assert!(
        j0["reused_from"].as_str().unwrap().contains("/out (run"),
        "{j0}"
    );
    assert!(
        j0["log"].as_str().unwrap().contains("/out/jobs/j0/"),
        "{j0}"
    );
    assert_eq!(again.results["resumes"], 0);
    // The first run is untouched.
    let st = status_json(dir.path(), &dir.path().join("out"));
    assert_eq!(st["counts"]["failed"], 2, "{st}");
}

/// A job whose first attempt failed runs its second when flowrun is SIGKILLed; `--resume`
/// goes on with attempt 2 (not 1: its log and FLOWRUN_ATTEMPT say so), with only the retries it
/// has left, and results.json lists the attempt of the first host with those of the second.
#[test]
fn retries_continue_across_a_resume_with_every_attempt_recorded() {
    let (dir, marks) = with_marks();
    let m = marks.display();
    // Every attempt fails (the second, once resumed), a fifth execution would pass. With
    // retries = 2 the job fails after attempt 3; a resume that forgot the retry used before
    // the kill would run a fourth attempt, and pass.
    let flow = format!(
        "[flow]\nname = \"resumed-retry\"\n\
         [[job]]\nname = \"flaky\"\nretries = 2\nretry_on = \"exit_code\"\n\
         cmd = \"echo $FLOWRUN_ATTEMPT >> {m}/flaky; echo attempt $FLOWRUN_ATTEMPT; \
                n=$(wc -l < {m}/flaky); [ $n -eq 1 ] && exit 1; \
                test -e {m}/resumed || exec sleep 120; [ $n -ge 5 ]\"\n\
         [[job]]\nname = \"dep\"\nneeds = [\"flaky\"]\ncmd = \"echo ran >> {m}/dep\"\n"
    );
    let child: Child = start_flow(dir.path(), &flow, &["-q"]);
    let out = dir.path().join("out");
    wait_until(Duration::from_secs(60), "the second attempt runs", || {
        executions(&marks, "flaky") == 2
    });
    send_signal(&child, libc::SIGKILL);
    child.wait_with_output().unwrap();
    std::fs::write(marks.join("resumed"), "").unwrap();
    let run = resume(dir.path(), &["--resume", "out"]);
    assert_eq!(run.code, 1, "{run:#?}");
    // FLOWRUN_ATTEMPT of every execution: 1 and 2 before the kill; 2 again (it died with its
    // host, without a verdict) and 3 after.
    let attempts = std::fs::read_to_string(marks.join("flaky")).unwrap();
    assert_eq!(attempts.lines().collect::<Vec<_>>(), ["1", "2", "2", "3"]);
    let job = run.job("flaky");
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_u64()),
        (Some("failed"), Some(3)),
        "{job}"
    );
    let earlier = job["attempts"].as_array().unwrap();
    let summary: Vec<_> = earlier
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64(),
                a["status"].as_str(),
                a["reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Some(1), Some("failed"), Some("exit code 1")),
            (Some(2), Some("failed"), Some("exit code 1"))
        ],
        "{job}"
    );
    assert!(earlier[0]["log"].as_str().unwrap().ends_with("/output.log"));
    assert!(job["log"]
        .as_str()
        .unwrap()
        .ends_with("/output.attempt-3.log"));
    // Each attempt's log is its own (attempt 1's survived the resume).
    let jobdir = out.join("jobs/flaky");
    let log = |f: &str| std::fs::read_to_string(jobdir.join(f)).unwrap();
    assert_eq!(log("output.log").trim(), "attempt 1");
    assert_eq!(log("output.attempt-3.log").trim(), "attempt 3");
    assert_eq!(run.status("dep"), "skipped");
    assert_eq!(executions(&marks, "dep"), 0);
    assert_eq!(run.results["resumes"], 1);
}

/// 1,000 local jobs, 10 of which fail (until a file exists) and each of those 10 has a
/// dependent: `--rerun-failed` runs exactly those 20, each once; the 980 passes are reused.
#[test]
fn rerun_failed_of_a_1000_job_run_with_10_failures_runs_exactly_them_and_their_dependents() {
    let (dir, marks) = with_marks();
    let m = marks.display();
    let failing = |i: usize| i % 7 == 0 && i < 70;
    let mut flow = String::from("[flow]\nname = \"thousand\"\n");
    for i in 0..900 {
        let check = if failing(i) {
            format!("; test -e {m}/fixed")
        } else {
            String::new()
        };
        flow.push_str(&format!(
            "[[job]]\nname = \"t{i}\"\ncmd = \"echo t{i} >> {m}/all{check}\"\n"
        ));
    }
    for i in 0..100 {
        flow.push_str(&format!(
            "[[job]]\nname = \"d{i}\"\nneeds = [\"t{i}\"]\ncmd = \"echo d{i} >> {m}/all\"\n"
        ));
    }
    let ran = || -> std::collections::HashMap<String, usize> {
        let text = std::fs::read_to_string(marks.join("all")).unwrap();
        let mut n = std::collections::HashMap::new();
        for name in text.lines() {
            *n.entry(name.to_string()).or_insert(0) += 1;
        }
        n
    };
    let first = flowrun_tests::run_flow(dir.path(), &flow, &["-q", "-j", "8"]);
    assert_eq!(first.code, 1, "{first:#?}");
    assert_eq!(
        first.results["counts"]["failed"], 10,
        "{}",
        first.results["counts"]
    );
    assert_eq!(
        first.results["counts"]["skipped"], 10,
        "{}",
        first.results["counts"]
    );
    assert_eq!(ran().values().sum::<usize>(), 990);
    std::fs::write(marks.join("fixed"), "").unwrap();
    std::fs::remove_file(marks.join("all")).unwrap();
    let again = run_in(dir.path(), "again", "--out again --rerun-failed out -j 8");
    assert_eq!(again.code, 0, "{again:#?}");
    let mut want: Vec<String> = (0..70)
        .filter(|&i| failing(i))
        .flat_map(|i| [format!("t{i}"), format!("d{i}")])
        .collect();
    want.sort();
    let runs = ran();
    let mut got: Vec<String> = runs.keys().cloned().collect();
    got.sort();
    assert_eq!(got, want);
    assert!(runs.values().all(|&n| n == 1), "{runs:?}");
    assert_eq!(again.results["counts"]["passed"], 1000);
    let reused = again.results["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["reused_from"].is_string())
        .count();
    assert_eq!(reused, 980);
}

// --- --no-deps ------------------------------------------------------------------------------

/// `a` passes; `b` fails while `marks/b_fails` exists; `c` needs `a`, `d` needs `b`. Every job
/// appends a line to its marker file when it runs.
fn no_deps_flow(marks: &Path) -> String {
    let m = marks.display();
    format!(
        "[flow]\nname = \"nodeps\"\n\
         [[job]]\nname = \"a\"\ncmd = \"echo ran >> {m}/a\"\n\
         [[job]]\nname = \"b\"\ncmd = \"echo ran >> {m}/b; test ! -e {m}/b_fails\"\n\
         [[job]]\nname = \"c\"\nneeds = [\"a\"]\ncmd = \"echo ran >> {m}/c\"\n\
         [[job]]\nname = \"d\"\nneeds = [\"b\"]\ncmd = \"echo ran >> {m}/d\"\n"
    )
}

/// `flowrun ARGS` in `dir` (`args` split at spaces).
fn flowrun_in(dir: &Path, args: &str) -> std::process::Output {
    flowrun(dir)
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .unwrap()
}

/// `flowrun run flow.toml -q ARGS` in `dir` (`args` split at spaces), the results read from
/// `dir/OUT`.
fn run_in(dir: &Path, out: &str, args: &str) -> Run {
    let o = flowrun_in(dir, &format!("run flow.toml -q {args}"));
    collect(o, &dir.join(out))
}

#[test]
fn only_with_no_deps_runs_just_the_named_jobs_taking_their_dependencies_last_results() {
    let (dir, marks) = with_marks();
    std::fs::write(marks.join("b_fails"), "").unwrap();
    std::fs::write(dir.path().join("flow.toml"), no_deps_flow(&marks)).unwrap();
    // The first run (the flow's `latest`): b fails, d is skipped.
    let first = run_in(dir.path(), "flowrun-out/nodeps/latest", "");
    assert_eq!(first.code, 1, "{first:#?}");
    assert_eq!(first.status("d"), "skipped");
    // --dry-run says what would run and what would be taken as given, and runs nothing.
    let plan = flowrun_in(
        dir.path(),
        "run flow.toml --dry-run --only c --only d --no-deps",
    );
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(0), "{text}");
    assert!(
        text.contains("2 needed job(s) not run, their ends taken from there:\n  a (passed)\n  b (failed: exit code 1)\n2 would run:\n  c\n  d\n"),
        "{text}"
    );
    assert_eq!(executions(&marks, "c"), 1);
    // b would pass now, but --no-deps takes its last result as given: it does not run, and d,
    // which needs it, is skipped for it; c runs again on a's earlier pass.
    std::fs::remove_file(marks.join("b_fails")).unwrap();
    let args = "--out two --only c --only d --no-deps";
    let two = run_in(dir.path(), "two", args);
    assert_eq!(two.code, 1, "{two:#?}");
    assert_eq!(
        ["a", "b", "c", "d"].map(|j| executions(&marks, j)),
        [1, 1, 2, 0]
    );
    let first_dir = dir
        .path()
        .join("flowrun-out/nodeps/latest")
        .canonicalize()
        .unwrap();
    for (job, status) in [("a", "passed"), ("b", "failed")] {
        let rec = two.job(job);
        assert_eq!(rec["status"], status, "{rec}");
        let from = rec["reused_from"].as_str().unwrap();
        assert!(from.starts_with(&*first_dir.to_string_lossy()), "{rec}");
    }
    assert_eq!(two.job("b")["reason"], "exit code 1");
    assert_eq!(two.status("c"), "passed");
    assert!(two.job("c")["reused_from"].is_null(), "c ran in this run");
    let d = two.job("d");
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("skipped"), Some("dependency failed: b")),
        "{d}"
    );
    // Naming b too runs it, and then d.
    let args = "--out three --only b --only d --no-deps";
    let three = run_in(dir.path(), "three", args);
    assert_eq!(three.code, 0, "{three:#?}");
    assert_eq!(
        ["a", "b", "c", "d"].map(|j| executions(&marks, j)),
        [1, 2, 2, 1]
    );
}

#[test]
fn rerun_failed_with_no_deps_reruns_the_named_failures_on_their_dependencies_earlier_passes() {
    let (dir, marks) = with_marks();
    let m = marks.display();
    // a passes; b needs a and fails until `fixed` exists; c needs b.
    let flow = format!(
        "[flow]\nname = \"nodeps\"\n\
         [[job]]\nname = \"a\"\ncmd = \"echo ran >> {m}/a\"\n\
         [[job]]\nname = \"b\"\nneeds = [\"a\"]\ncmd = \"echo ran >> {m}/b; test -e {m}/fixed\"\n\
         [[job]]\nname = \"c\"\nneeds = [\"b\"]\ncmd = \"echo ran >> {m}/c\"\n"
    );
    let first = flowrun_tests::run_flow(dir.path(), &flow, &["-q"]);
    assert_eq!(first.code, 1, "{first:#?}");
    std::fs::write(marks.join("fixed"), "").unwrap();
    let args = "--out again --rerun-failed out --only b --no-deps";
    let again = run_in(dir.path(), "again", args);
    assert_eq!(again.code, 0, "{again:#?}");
    // Only b ran; c is not selected (nor needed), a's pass was taken from the first run.
    assert_eq!(["a", "b", "c"].map(|j| executions(&marks, j)), [1, 2, 0]);
    assert_eq!(again.status("b"), "passed");
    assert!(again.job("a")["reused_from"].as_str().is_some());
    assert!(again.results["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["name"] != "c"));
}

#[test]
fn no_deps_refuses_a_dependency_with_no_result_to_take_naming_it() {
    let (dir, marks) = with_marks();
    let flow = no_deps_flow(&marks);
    let first = flowrun_tests::run_flow(dir.path(), &flow, &["-q"]);
    assert_eq!(first.code, 0, "{first:#?}");
    // b changed since: its earlier pass says nothing of what it does now.
    let changed = flow.replace("test ! -e", "test ! -f");
    std::fs::write(dir.path().join("flow.toml"), changed).unwrap();
    let args = "--out two --rerun-failed out --only d --no-deps";
    let two = run_in(dir.path(), "two", args);
    assert_eq!(two.code, 2, "{two:#?}");
    assert!(
        two.stderr.contains("`b` changed since") && two.stderr.contains("add them to --only"),
        "{}",
        two.stderr
    );
    assert!(
        !dir.path().join("two").exists(),
        "no run directory for a refused run"
    );
    assert_eq!(executions(&marks, "d"), 1);
    // --no-deps needs --only.
    let o = flowrun_in(dir.path(), "run flow.toml --no-deps");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--only"));
}

// --- retries --------------------------------------------------------------------------------

/// `flaky` fails its first two attempts and passes the third; `dep` needs it and fails if it
/// starts before that third attempt ended.
fn flaky_flow(marks: &Path, retries: &str) -> String {
    let m = marks.display();
    format!(
        "[flow]\nname = \"retry\"\n\
         [[job]]\nname = \"flaky\"\n{retries}\n\
         cmd = \"n=$(cat {m}/flaky 2>/dev/null | wc -l); echo ran >> {m}/flaky; echo attempt $FLOWRUN_ATTEMPT; [ $n -ge 2 ]\"\n\
         [[job]]\nname = \"dep\"\nneeds = [\"flaky\"]\n\
         cmd = \"echo ran >> {m}/dep; test $(cat {m}/flaky | wc -l) -eq 3\"\n"
    )
}

#[test]
fn a_job_that_fails_twice_then_passes_with_two_retries_passes_flaky_with_every_attempt_kept() {
    let dir = tempdir();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let flow = flaky_flow(&marks, "retries = 2\nretry_on = [\"exit_code\"]");
    let run = flowrun_tests::run_flow(dir.path(), &flow, &["-q"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(executions(&marks, "flaky"), 3);
    // The dependent started once, after the last attempt (it checks).
    assert_eq!(executions(&marks, "dep"), 1);
    assert_eq!(run.status("dep"), "passed");
    let job = run.job("flaky");
    assert_eq!(job["status"], "passed", "{job}");
    assert_eq!(job["flaky"], true, "{job}");
    assert_eq!(job["attempt"], 3, "{job}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], i as u64 + 1, "{a}");
        assert_eq!(a["status"], "failed", "{a}");
        assert_eq!(a["reason"], "exit code 1", "{a}");
    }
    // Each attempt its own log, with its own FLOWRUN_ATTEMPT.
    let jobdir = run.out.join("jobs/flaky");
    let logs = [
        ("output.log", "attempt 1"),
        ("output.attempt-2.log", "attempt 2"),
        ("output.attempt-3.log", "attempt 3"),
    ];
    for (file, text) in logs {
        let log = std::fs::read_to_string(jobdir.join(file)).unwrap();
        assert_eq!(log.trim(), text, "{file}");
    }
    assert!(attempts[0]["log"]
        .as_str()
        .unwrap()
        .ends_with("/output.log"));
    assert!(attempts[1]["log"]
        .as_str()
        .unwrap()
        .ends_with("/output.attempt-2.log"));
    assert!(job["log"]
        .as_str()
        .unwrap()
        .ends_with("/output.attempt-3.log"));
    assert!(run.job("dep")["flaky"].is_null());
    assert!(
        run.stderr
            .contains("flaky: 1 job(s) passed after a failed attempt (flaky)"),
        "{}",
        run.stderr
    );
}

/// The status display through the CLI (plain output): each retried attempt gets a RETRY line,
/// the job is counted once (no progress line ever counts more jobs done than the run has, or
/// more running than `-j`), and the summary counts two passes, not failures.
#[test]
fn the_display_shows_each_retry_and_counts_the_retried_job_once() {
    let dir = tempdir();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let flow = flaky_flow(&marks, "retries = 2\nretry_on = [\"exit_code\"]");
    let run = flowrun_tests::run_flow(dir.path(), &flow, &["--status-interval", "0"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let err = &run.stderr;
    let summary_at = err.find("\nflow retry:").expect("a summary");
    let live = &err[..summary_at];
    for attempt in [1, 2] {
        let line = live
            .lines()
            .filter(|l| l.contains("] RETRY   flaky ("))
            .nth(attempt - 1)
            .unwrap_or_else(|| panic!("no RETRY line for attempt {attempt}: {err}"));
        assert!(
            line.ends_with(&format!("attempt {attempt}: exit code 1")),
            "{line}"
        );
    }
    assert_eq!(live.matches("] RETRY ").count(), 2, "{err}");
    assert!(
        !live.contains("FAILED"),
        "a retried attempt is no failure: {err}"
    );
    let progress: Vec<&str> = live
        .lines()
        .filter(|l| flowrun_tests::is_progress_line(l))
        .collect();
    assert!(!progress.is_empty(), "{err}");
    for l in &progress {
        let frac = l.split("] ").nth(1).unwrap().split(' ').next().unwrap();
        let (done, total) = frac.split_once('/').unwrap();
        assert_eq!(total, "2", "{l}");
        assert!(done.parse::<u32>().unwrap() <= 2, "{l}");
        assert!(
            !l.contains(" 2 running"),
            "one job can run at a time here: {l}"
        );
    }
    assert!(
        err[summary_at..].contains("2 jobs in ")
            && err[summary_at..].contains(": 2 passed, 0 failed"),
        "{err}"
    );
    assert!(
        err.contains("flaky: 1 job(s) passed after a failed attempt (flaky)"),
        "{err}"
    );
}

#[test]
fn with_one_retry_the_job_fails_with_both_attempts_recorded_and_its_dependent_skipped() {
    let dir = tempdir();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let flow = flaky_flow(&marks, "retries = 1\nretry_on = [\"any\"]");
    let run = flowrun_tests::run_flow(dir.path(), &flow, &["-q"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(executions(&marks, "flaky"), 2);
    assert_eq!(executions(&marks, "dep"), 0);
    let job = run.job("flaky");
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempt"], 2, "{job}");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "{job}");
    assert!(job["flaky"].is_null(), "{job}");
    assert_eq!(run.status("dep"), "skipped");
}

/// `retry_backoff` (a `[flow]` default here): the second attempt starts at least the backoff
/// after the first ended, the third at least twice the backoff after the second.
#[test]
fn retry_backoff_delays_each_retry_doubling_from_the_flow_default() {
    let (dir, marks) = with_marks();
    let m = marks.display();
    let flow = format!(
        "[flow]\nname = \"backoff\"\nretry_backoff = \"400ms\"\n\
         [[job]]\nname = \"flaky\"\nretries = 2\nretry_on = \"exit_code\"\n\
         cmd = \"date +%s%N >> {m}/start; n=$(wc -l < {m}/start); date +%s%N >> {m}/end; [ $n -ge 3 ]\"\n"
    );
    let run = flowrun_tests::run_flow(dir.path(), &flow, &["-q"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let times = |file: &str| -> Vec<u128> {
        std::fs::read_to_string(marks.join(file))
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    };
    let (start, end) = (times("start"), times("end"));
    assert_eq!((start.len(), end.len()), (3, 3), "{start:?} {end:?}");
    let ms = |ns: u128| ns / 1_000_000;
    assert!(
        ms(start[1] - end[0]) >= 400,
        "retry 1 after {} ms",
        ms(start[1] - end[0])
    );
    assert!(
        ms(start[2] - end[1]) >= 800,
        "retry 2 after {} ms",
        ms(start[2] - end[1])
    );
    let job = run.job("flaky");
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_u64()),
        (Some("passed"), Some(3))
    );
    assert_eq!(job["flaky"], true, "{job}");
}

#[test]
fn a_bad_retry_backoff_is_invalid_input_at_its_file_and_line() {
    let dir = tempdir();
    let flow = "[flow]\nname = \"bad-backoff\"\nretry_backoff = 30\n\
                [[job]]\nname = \"a\"\ncmd = \"true\"\nretries = 1\nretry_backoff = \"2h\"\n";
    std::fs::write(dir.path().join("flow.toml"), flow).unwrap();
    let o = flowrun_in(dir.path(), "check flow.toml");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("flow.toml:3:17: error: `flow.retry_backoff` must be a duration string"),
        "{err}"
    );
    assert!(err.contains("write `retry_backoff = \"30s\"`"), "{err}");
    assert!(
        err.contains("flow.toml:8:17: error: `retry_backoff` \"2h\" is too long"),
        "{err}"
    );
}

#[test]
fn by_default_retries_cover_lost_and_killed_jobs_not_exit_codes() {
    let dir = tempdir();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let run = flowrun_tests::run_flow(dir.path(), &flaky_flow(&marks, "retries = 2"), &["-q"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(executions(&marks, "flaky"), 1);
    assert_eq!(run.job("flaky")["attempt"], 1);
}

#[test]
fn an_unknown_retry_on_kind_is_invalid_input_naming_the_kinds() {
    let dir = tempdir();
    let flow =
        "[flow]\nname = \"r\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\nretry_on = [\"exitcode\"]\n";
    let run = flowrun_tests::run_flow(dir.path(), flow, &["-q"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("invalid `retry_on` entry \"exitcode\""),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("exit_code"), "{}", run.stderr);
}

// --- stop early -----------------------------------------------------------------------------

#[test]
fn fail_fast_kills_what_runs_and_starts_nothing_more() {
    let dir = tempdir();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let m = marks.display();
    let mut flow = format!(
        "[flow]\nname = \"ff\"\n\
         [[job]]\nname = \"slow\"\ncmd = \"echo ran >> {m}/slow; exec sleep 60\"\n\
         [[job]]\nname = \"bad\"\ncmd = \"sleep 0.5; exit 1\"\n\
         [[job]]\nname = \"dep\"\nneeds = [\"slow\"]\ncmd = \"echo ran >> {m}/dep\"\n"
    );
    for i in 1..=4 {
        flow.push_str(&format!(
            "[[job]]\nname = \"q{i}\"\ncmd = \"echo ran >> {m}/q{i}\"\n"
        ));
    }
    let t = Instant::now();
    let run = flowrun_tests::run_flow(dir.path(), &flow, &["-q", "-j", "2", "--fail-fast"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the slow job was not killed"
    );
    assert_eq!(run.status("bad"), "failed");
    assert_eq!(run.status("slow"), "killed", "{run:#?}");
    assert_eq!(run.reason("slow"), "stopped after 1 failure");
    assert_eq!(run.job("slow")["reason_kind"], "stopped");
    assert_eq!(run.status("dep"), "skipped");
    assert_eq!(run.reason("dep"), "stopped after 1 failure");
    for i in 1..=4 {
        let name = format!("q{i}");
        assert_eq!(run.status(&name), "killed", "{name}");
        assert_eq!(run.reason(&name), "stopped after 1 failure", "{name}");
        assert_eq!(executions(&marks, &name), 0, "{name} started");
    }
}

/// The status display after `--fail-fast` (plain output): the failure that stopped the run is
/// shown with its log; the jobs killed and skipped because of the stop are one group each in
/// the summary, under the reason that says so, and get no log tail.
#[test]
fn the_display_groups_the_jobs_a_stop_ended_under_the_failure_that_stopped_the_run() {
    let dir = tempdir();
    let mut flow = String::from(
        "[flow]\nname = \"ff\"\n\
         [[job]]\nname = \"slow\"\ncmd = \"exec sleep 60\"\n\
         [[job]]\nname = \"bad\"\ncmd = \"echo broken; sleep 0.5; exit 1\"\n\
         [[job]]\nname = \"dep\"\nneeds = [\"slow\"]\ncmd = \"true\"\n",
    );
    for i in 1..=3 {
        flow.push_str(&format!("[[job]]\nname = \"q{i}\"\ncmd = \"true\"\n"));
    }
    let run = flowrun_tests::run_flow(dir.path(), &flow, &["-j", "2", "--fail-fast"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let err = &run.stderr;
    let summary_at = err.find("\nflow ff:").expect("a summary");
    let (before, summary) = err.split_at(summary_at);
    // Only the failure gets its log tail above the totals.
    assert!(before.contains("FAILED bad: exit code 1"), "{err}");
    assert!(before.contains("| broken"), "{err}");
    assert!(!before.contains("KILLED slow:"), "{err}");
    assert!(
        summary.contains(": 0 passed, 1 failed, 4 killed, 1 skipped"),
        "{summary}"
    );
    let rows: Vec<&str> = summary
        .lines()
        .filter(|l| l.contains("stopped after 1 failure"))
        .collect();
    assert_eq!(
        rows.len(),
        2,
        "one row for the kills, one for the skips: {summary}"
    );
    assert!(rows.iter().any(|l| l.starts_with("killed")), "{summary}");
    assert!(rows.iter().any(|l| l.starts_with("skipped")), "{summary}");
}

fn max_fail_flow(marks: &Path) -> String {
    let m = marks.display();
    let mut flow = format!(
        "[flow]\nname = \"mf\"\n\
         [[job]]\nname = \"w\"\ncmd = \"sleep 4; echo ran >> {m}/w\"\n"
    );
    for i in 1..=5 {
        flow.push_str(&format!(
            "[[job]]\nname = \"f{i}\"\ncmd = \"echo ran >> {m}/f{i}; exit 1\"\n"
        ));
    }
    flow
}

#[test]
fn max_fail_3_with_wait_lets_the_running_job_finish_and_starts_no_fourth_failure() {
    let dir = tempdir();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let args = ["-q", "-j", "2", "--max-fail", "3", "--wait"];
    let run = flowrun_tests::run_flow(dir.path(), &max_fail_flow(&marks), &args);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("w"), "passed", "{run:#?}");
    for i in 1..=3 {
        assert_eq!(run.status(&format!("f{i}")), "failed");
    }
    for i in 4..=5 {
        let name = format!("f{i}");
        assert_eq!(run.status(&name), "killed", "{name}");
        assert_eq!(run.reason(&name), "stopped after 3 failures");
        assert_eq!(executions(&marks, &name), 0, "{name} started");
    }
}

#[test]
fn max_fail_3_without_wait_kills_the_running_job() {
    let dir = tempdir();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let args = ["-q", "-j", "2", "--max-fail", "3"];
    let run = flowrun_tests::run_flow(dir.path(), &max_fail_flow(&marks), &args);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.status("w"), "killed", "{run:#?}");
    assert_eq!(run.reason("w"), "stopped after 3 failures");
    assert_eq!(executions(&marks, "w"), 0);
}

#[test]
fn sigkill_mid_run_with_200_fake_and_20_local_jobs_then_resume_reruns_no_passed_job() {
    let dir = tempdir();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let m = marks.display();
    let flow = format!(
        "[flow]\nname = \"mixed\"\n\
         [backends.fk]\nkind = \"fake\"\nduration = \"40ms\"\nmax_parallel = 4\n\
         [[job]]\nname = \"f-{{i}}\"\nbackend = \"fk\"\ncmd = \"true\"\nmatrix = {{ i = {{ range = [1, 200] }} }}\n\
         [[job]]\nname = \"quick-{{i}}\"\ncmd = \"echo ran >> {m}/quick-{{i}}\"\nmatrix = {{ i = {{ range = [1, 10] }} }}\n\
         [[job]]\nname = \"slow-{{i}}\"\ncmd = \"echo ran >> {m}/slow-{{i}}; test -e {m}/resumed || exec sleep 60\"\nmatrix = {{ i = {{ range = [1, 10] }} }}\n"
    );
    let child = start_flow(dir.path(), &flow, &["-q", "-j", "30"]);
    let out = dir.path().join("out");
    wait_until(
        Duration::from_secs(60),
        "local jobs passed and fake jobs under way",
        || {
            out.join("journal").exists() && {
                let st = status_json(dir.path(), &out);
                st["counts"]["passed"].as_u64().unwrap_or(0) >= 30
                    && (1..=10).all(|i| marks.join(format!("slow-{i}")).exists())
            }
        },
    );
    send_signal(&child, libc::SIGKILL);
    let crashed = collect(child.wait_with_output().unwrap(), &out);
    assert_eq!(crashed.code, -1);
    let st = status_json(dir.path(), &out);
    let passed_before = st["counts"]["passed"].as_u64().unwrap();
    assert!(passed_before < 220, "the run was not cut short: {st}");
    assert!(st["counts"]["running"].as_u64().unwrap() >= 10, "{st}");

    std::fs::write(marks.join("resumed"), "").unwrap();
    let run = resume(dir.path(), &["--resume", "out"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let jobs = run.results["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 220);
    let reused = jobs.iter().filter(|j| j["reused_from"].is_string()).count() as u64;
    assert_eq!(
        reused, passed_before,
        "every pass before the crash, and only those, carried over"
    );
    for i in 1..=10 {
        assert_eq!(
            executions(&marks, &format!("quick-{i}")),
            1,
            "quick-{i} reran"
        );
        assert_eq!(executions(&marks, &format!("slow-{i}")), 2, "slow-{i}");
    }
    // The same as an uninterrupted run.
    let o = flowrun(dir.path())
        .args(["run", "flow.toml", "-q", "-j", "30", "--out", "full"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let full = collect(o, &dir.path().join("full"));
    assert_eq!(full.code, 0, "{full:#?}");
    assert_eq!(run.results["counts"], full.results["counts"]);
}

/// `a` fails until `fixed` exists; `report` (`when = "always"`) runs after it, whatever its end,
/// and passes either way, writing what it saw.
fn always_flow(marks: &Path) -> String {
    let m = marks.display();
    format!(
        "[flow]\nname = \"always\"\n\
         [[job]]\nname = \"a\"\ncmd = \"echo ran >> {m}/a; test -e {m}/fixed\"\n\
         [[job]]\nname = \"report\"\nneeds = [\"a\"]\nwhen = \"always\"\n\
         cmd = \"echo ran >> {m}/report; if test -e {m}/fixed; then echo a-good; else echo a-bad; fi\"\n"
    )
}

#[test]
fn an_always_job_that_passed_after_a_failure_runs_again_after_its_rerun_dependency() {
    // Both --rerun-failed and --resume, given no RUN_DIR (the flow's `latest`, the documented
    // default: the flag alone was refused as "a value is required").
    for how in ["--rerun-failed", "--resume"] {
        let (dir, marks) = with_marks();
        std::fs::write(dir.path().join("flow.toml"), always_flow(&marks)).unwrap();
        let first = flowrun_in(dir.path(), "run flow.toml -q");
        assert_eq!(first.status.code(), Some(1), "{first:?}");
        std::fs::write(marks.join("fixed"), "").unwrap();
        let again = flowrun_in(dir.path(), &format!("run flow.toml -q {how}"));
        assert_eq!(again.status.code(), Some(0), "{how}: {again:?}");
        // The report ran after the rerun of `a`: its verdict is of this run's `a`, not of the
        // failure it had seen before.
        assert_eq!(executions(&marks, "a"), 2, "{how}");
        assert_eq!(executions(&marks, "report"), 2, "{how}");
        let latest = dir.path().join("flowrun-out/always/latest");
        let results: Value =
            serde_json::from_str(&std::fs::read_to_string(latest.join("results.json")).unwrap())
                .unwrap();
        let report = results["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "report")
            .unwrap();
        assert_eq!(report["status"], "passed", "{how}: {results:#}");
        assert!(report["reused_from"].is_null(), "{how}: {report}");
        let log = std::fs::read_to_string(report["log"].as_str().unwrap()).unwrap();
        assert_eq!(log.trim(), "a-good", "{how}");
    }
}

#[test]
fn resume_with_only_is_refused_and_leaves_the_run_as_it_was() {
    // In place, --only would rewrite the run's results with the selected jobs alone: the
    // failure of `c` vanished, status said every job passed, and the next --resume reran `a`.
    let (dir, marks) = with_marks();
    let m = marks.display();
    let flow = format!(
        "[flow]\nname = \"only\"\n\
         [[job]]\nname = \"a\"\ncmd = \"echo ran >> {m}/a\"\n\
         [[job]]\nname = \"b\"\ncmd = \"echo ran >> {m}/b; test -e {m}/fixed\"\n\
         [[job]]\nname = \"c\"\ncmd = \"echo ran >> {m}/c; false\"\n"
    );
    let first = flowrun_tests::run_flow(dir.path(), &flow, &["-q"]);
    assert_eq!(first.code, 1, "{first:#?}");
    std::fs::write(marks.join("fixed"), "").unwrap();
    let o = flowrun_in(dir.path(), "run flow.toml -q --resume out --only b");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--resume") && err.contains("--only"), "{err}");
    assert_eq!(executions(&marks, "b"), 1, "nothing ran");
    let st = status_json(dir.path(), &dir.path().join("out"));
    assert_eq!(st["counts"]["passed"], 1, "{st}");
    assert_eq!(st["counts"]["failed"], 2, "{st}");
    // The way to run only `b` again: a new directory, the rest of the run's results kept.
    let again = run_in(
        dir.path(),
        "again",
        "--out again --rerun-failed out --only b",
    );
    assert_eq!(again.code, 0, "{again:#?}");
    assert_eq!(executions(&marks, "b"), 2);
    assert_eq!(executions(&marks, "a"), 1);
}

#[test]
fn a_second_resume_of_a_run_being_resumed_is_refused_naming_the_first() {
    let dir = tempdir();
    let marks = run_and_kill(dir.path());
    let slow_pid = || std::fs::read_to_string(marks.join("slow.pid")).unwrap_or_default();
    let killed_pid = slow_pid();
    // The first --resume holds the run while its slow job runs again.
    let first = flowrun(dir.path())
        .args(["run", "flow.toml", "-q", "--resume", "out"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "the slow job to run again", || {
        executions(&marks, "slow") == 2 && slow_pid() != killed_pid && slow_pid().ends_with('\n')
    });
    let second = resume(dir.path(), &["--resume", "out"]);
    assert_eq!(second.code, 2, "{second:#?}");
    assert!(
        second.stderr.contains(&format!(
            "another flowrun (pid {}) is running into this output directory; wait for it\n",
            first.id()
        )),
        "{}",
        second.stderr
    );
    flowrun_tests::signal_pid(slow_pid().trim().parse().unwrap(), 15);
    let out = first.wait_with_output().unwrap();
    let run = collect(out, &dir.path().join("out"));
    // The first resume went on unharmed; the refused one ran nothing.
    assert_eq!(executions(&marks, "slow"), 2);
    assert_eq!(executions(&marks, "q1"), 1);
    assert_eq!(run.status("q1"), "passed", "{run:#?}");
}

#[test]
fn resume_refuses_a_journal_it_cannot_trust_with_exit_2_and_touches_nothing() {
    let (dir, marks) = with_marks();
    let first = flowrun_tests::run_flow(dir.path(), &chain_flow(&marks, "true"), &["-q"]);
    assert_eq!(first.code, 0, "{first:#?}");
    let out = dir.path().join("out");
    let journal = std::fs::read(out.join("journal")).unwrap();
    let results = std::fs::read(out.join("results.json")).unwrap();
    let refused = |what: &str, want: &str| {
        let run = resume(dir.path(), &["--resume", "out"]);
        assert_eq!(run.code, 2, "{what}: {run:#?}");
        assert!(run.stderr.contains(want), "{what}: {}", run.stderr);
        assert_eq!(
            std::fs::read(out.join("results.json")).unwrap(),
            results,
            "{what}: results.json untouched"
        );
        assert_eq!(executions(&marks, "a"), 1, "{what}: nothing ran");
    };
    // A journal of format 1 (an older flowrun's).
    let mut old = journal.clone();
    old[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(out.join("journal"), &old).unwrap();
    refused(
        "format 1",
        "not a flowrun journal: format version 1; this flowrun reads version 2; the run cannot \
         be continued (it was run without a journal, by a flowrun of another journal format",
    );
    // Not a journal at all, and an empty one.
    std::fs::write(out.join("journal"), b"garbage that is not a journal").unwrap();
    refused("garbage", "not a flowrun journal: no journal header");
    std::fs::write(out.join("journal"), b"").unwrap();
    refused("empty", "not a flowrun journal: no journal header");
    // Another flow's run.
    std::fs::write(out.join("journal"), &journal).unwrap();
    let other = chain_flow(&marks, "true").replace("name = \"chain\"", "name = \"other\"");
    assert_ne!(other, chain_flow(&marks, "true"));
    std::fs::write(dir.path().join("flow.toml"), other).unwrap();
    refused(
        "another flow",
        "it holds a run of flow `chain`, not `other`",
    );
}

/// `--resume` of a run whose journal cannot be written is refused with exit 2 before anything
/// runs, naming the journal and what to do (it ran on without recording: `flowrun status`
/// then showed the earlier host's unfinished run, and a later `--resume` redid the work).
#[test]
fn resume_refuses_a_journal_it_cannot_write_with_exit_2_and_runs_nothing() {
    let (dir, marks) = with_marks();
    let first = flowrun_tests::run_flow(dir.path(), &chain_flow(&marks, "exit 3"), &["-q"]);
    assert_eq!(first.code, 1, "{first:#?}");
    let out = dir.path().join("out");
    let journal = out.join("journal");
    let results = std::fs::read(out.join("results.json")).unwrap();
    let before = executions(&marks, "b");
    // Root writes through file modes; an immutable file it cannot.
    let root = flowrun_tests::is_root();
    let lock = |on: bool| {
        if root {
            let flag = if on { "+i" } else { "-i" };
            let ok = std::process::Command::new("chattr")
                .arg(flag)
                .arg(&journal)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chattr {flag} {}", journal.display());
        } else {
            use std::os::unix::fs::PermissionsExt;
            let mode = if on { 0o444 } else { 0o644 };
            std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    lock(true);
    let run = resume(dir.path(), &["--resume", "out"]);
    lock(false);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .contains("cannot write the journal of the run to continue")
            && run.stderr.contains("--rerun-failed"),
        "{}",
        run.stderr
    );
    assert_eq!(
        executions(&marks, "b"),
        before,
        "nothing ran (b failed, so a resume reruns it)"
    );
    assert_eq!(std::fs::read(out.join("results.json")).unwrap(), results);
}
