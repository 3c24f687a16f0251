//! The `html`, `trace` and `status-dirs` observers in real runs through the CLI, on the local
//! and fake backends at once, with failures (exit codes, fail patterns), a timeout, a skip and
//! an interrupted run; each observer checked against the run's results.json; observers that
//! fail (an unwritable path, a panic) report one line and change nothing; and the report
//! rendered by a real headless Chromium.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use flowrun_tests::{collect, flowrun, privileged, run_flow, Run};
use serde_json::Value;

/// Jobs on two backends with every kind of ending; `OBSERVERS` goes in front.
const MIXED: &str = r#"
[flow]
name = "mixed"

[backends.local]
kind = "local"
max_parallel = 3

[backends.fake]
kind = "fake"
durations = { "fake-slow-*" = "300ms" }
outcomes = { "fake-bad-*" = "fail" }

[[job]]
name = "build"
cmd = "echo building; sleep 0.3"

[[job]]
name = "sim-{seed}"
matrix = { seed = { range = [1, 6] } }
cmd = "echo seed {seed}; sleep 0.2; if [ $(({seed} % 2)) -eq 0 ]; then echo 'UVM_ERROR bad crc at 0x{seed}f00'; echo after the error; fi"
needs = ["build"]
fail_patterns = ["^UVM_ERROR"]

[[job]]
name = "crash/{n}"
matrix = { n = [1, 2] }
cmd = "echo about to fail; exit 3"

[[job]]
name = "hang"
cmd = "sleep 30"
timeout = "500ms"

[[job]]
name = "fake-slow-{n}"
matrix = { n = [1, 2, 3] }
cmd = "true"
backend = "fake"

[[job]]
name = "fake-bad-{n}"
matrix = { n = [1, 2] }
cmd = "true"
backend = "fake"

[[job]]
name = "nightly/report"
cmd = "true"
needs = ["sim-2"]
"#;

const ALL_OBSERVERS: &str = r#"
[observers.report]
kind = "html"
[observers.trace]
kind = "trace"
[observers.links]
kind = "status-dirs"
"#;

fn jobs(run: &Run) -> &[Value] {
    run.results["jobs"]
        .as_array()
        .expect("results.json has jobs")
}

/// The data document embedded in an html report.
fn report_data(path: &Path) -> Value {
    let page = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let marker = r#"<script type="application/json" id="flowrun-data">"#;
    let start = page.find(marker).expect("the report embeds its data") + marker.len();
    let len = page[start..]
        .find("</script>")
        .expect("the data element ends");
    serde_json::from_str(&page[start..start + len]).expect("the embedded data is JSON")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The trace's complete events of jobs, by job name (the host track's events left out).
fn trace_jobs(trace: &Value) -> BTreeMap<String, Vec<&Value>> {
    let mut by_job: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in trace["traceEvents"].as_array().expect("traceEvents") {
        if e["ph"] == "X" && e["pid"] != 1 {
            by_job
                .entry(e["name"].as_str().unwrap().to_string())
                .or_default()
                .push(e);
        }
    }
    by_job
}

/// Process names of the trace by pid.
fn trace_processes(trace: &Value) -> BTreeMap<u64, String> {
    trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Checks status-dirs' links against results.json: each job's link sits in the directory of
/// its final status, is relative, and leads into the job's directory.
fn check_links(run: &Run) {
    // A job's link is named as the host names its directory (`nightly/report` lives in
    // `jobs/nightly%2Freport`), so the link of every job that ran leads to its own log.
    let dir_name = |name: &str| flowrun_plugin_sdk::run_dir::job_dir_name(name).into_owned();
    let root = run.out.join("by-status");
    for status in ["running", "passed", "failed", "killed", "skipped"] {
        let listed: Vec<String> = std::fs::read_dir(root.join(status))
            .unwrap_or_else(|e| panic!("by-status/{status}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut listed = listed;
        listed.sort();
        let mut want: Vec<String> = jobs(run)
            .iter()
            .filter(|j| j["status"] == status)
            .map(|j| dir_name(j["name"].as_str().unwrap()))
            .collect();
        want.sort();
        assert_eq!(listed, want, "by-status/{status}");
    }
    for job in jobs(run) {
        let name = job["name"].as_str().unwrap();
        let link = root
            .join(job["status"].as_str().unwrap())
            .join(dir_name(name));
        let target = std::fs::read_link(&link).unwrap();
        assert!(
            target.is_relative(),
            "{}: {}",
            link.display(),
            target.display()
        );
        assert_eq!(target, Path::new("../../jobs").join(dir_name(name)));
        if let Some(log) = job["log"].as_str() {
            assert_eq!(
                Path::new(log).parent().unwrap(),
                run.out.join("jobs").join(dir_name(name)),
                "{name}: the host's job directory"
            );
            assert_eq!(
                std::fs::read(link.join("output.log")).unwrap(),
                std::fs::read(log).unwrap(),
                "{name}: the link leads to the job's log"
            );
        }
    }
}

/// Checks the trace against results.json: one complete event per job that ran, on a process
/// named after its backend, with the same status, exit code and duration; no two events of one
/// slot overlap; the run is on the host track.
fn check_trace(run: &Run, trace: &Value) {
    let by_job = trace_jobs(trace);
    let processes = trace_processes(trace);
    for job in jobs(run) {
        let name = job["name"].as_str().unwrap();
        let Some(duration) = job["duration_s"].as_f64() else {
            assert!(!by_job.contains_key(name), "{name} never ran: no event");
            continue;
        };
        let events = &by_job[name];
        assert_eq!(events.len(), 1, "{name}: one attempt, one event");
        let e = events[0];
        assert_eq!(e["cat"], job["status"], "{name}");
        assert_eq!(e["args"]["status"], job["status"], "{name}");
        assert_eq!(e["args"]["reason"], job["reason"], "{name}");
        assert_eq!(e["args"]["exit_code"], job["exit_code"], "{name}");
        assert_eq!(e["args"]["duration_s"], job["duration_s"], "{name}");
        assert_eq!(e["args"]["attempt"], 1, "{name}");
        let span_s = e["dur"].as_f64().unwrap() / 1e6;
        assert!(
            (span_s - duration).abs() < 1e-5,
            "{name}: span {span_s} s vs {duration} s"
        );
        let pid = e["pid"].as_u64().unwrap();
        assert_eq!(
            processes[&pid],
            format!("backend {}", job["backend"].as_str().unwrap())
        );
        // What the backends could not measure is null, never a made-up figure.
        for key in ["cpu_s", "max_rss_mb"] {
            let v = &e["args"][key];
            assert!(
                v.is_null() || v.as_f64().is_some_and(|x| x >= 0.0),
                "{name}: {key} = {v}"
            );
        }
    }
    let mut slots: BTreeMap<(u64, u64), Vec<(i64, i64)>> = BTreeMap::new();
    for e in by_job.values().flatten() {
        let ts = e["ts"].as_i64().unwrap();
        let key = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        slots
            .entry(key)
            .or_default()
            .push((ts, ts + e["dur"].as_i64().unwrap()));
    }
    for (slot, mut spans) in slots {
        spans.sort();
        for w in spans.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "slot {slot:?}: {:?} overlaps {:?}",
                w[0],
                w[1]
            );
        }
    }
    assert!(
        trace["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["pid"] == 1
                && e["ph"] == "X"
                && e["name"] == format!("run {}", run.results["flow"].as_str().unwrap())),
        "the run itself is on the host track"
    );
}

/// Checks the html report's data against results.json.
fn check_report_data(run: &Run, data: &Value) {
    assert_eq!(data["finished"], true);
    assert_eq!(data["interrupted"], run.results["interrupted"]);
    let names = data["jobs"]["name"].as_array().unwrap();
    assert_eq!(names.len(), jobs(run).len());
    let statuses = data["statuses"].as_array().unwrap();
    for (i, job) in jobs(run).iter().enumerate() {
        assert_eq!(names[i], job["name"]);
        let code = data["jobs"]["status"][i].as_u64().unwrap() as usize;
        assert_eq!(statuses[code], job["status"], "{}", job["name"]);
        let reason = data["jobs"]["reason"][i].as_u64().unwrap() as usize;
        assert_eq!(data["reasons"][reason], job["reason"], "{}", job["name"]);
    }
    for status in ["passed", "failed", "killed", "skipped"] {
        let code = statuses.iter().position(|s| s == status).unwrap();
        assert_eq!(
            data["counts"][code], run.results["counts"][status],
            "{status}"
        );
    }
    // Every job that did not pass is in exactly one bucket.
    let mut bucketed: Vec<u64> = data["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| {
            b["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j.as_u64().unwrap())
        })
        .collect();
    bucketed.sort();
    let not_passed: Vec<u64> = jobs(run)
        .iter()
        .enumerate()
        .filter(|(_, j)| j["status"] != "passed")
        .map(|(i, _)| i as u64)
        .collect();
    assert_eq!(bucketed, not_passed);
}

fn mixed_run(dir: &Path) -> Run {
    let run = run_flow(dir, &format!("{ALL_OBSERVERS}{MIXED}"), &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        !run.stderr.contains("observer"),
        "no observer complained: {}",
        run.stderr
    );
    run
}

#[test]
fn a_mixed_run_feeds_every_observer_in_agreement_with_results_json() {
    let dir = tempfile::tempdir().unwrap();
    let run = mixed_run(dir.path());
    assert_eq!(run.status("hang"), "killed");
    assert_eq!(run.status("nightly/report"), "skipped");
    assert_eq!(run.status("fake-bad-1"), "failed");

    check_links(&run);
    check_trace(&run, &read_json(&run.out.join("trace.json")));
    let data = report_data(&run.out.join("report.html"));
    check_report_data(&run, &data);
    let buckets: Vec<(String, u64)> = data["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["key"].as_str().unwrap().to_string(),
                b["jobs"].as_array().unwrap().len() as u64,
            )
        })
        .collect();
    assert_eq!(
        buckets,
        [
            ("exit code #".to_string(), 4),
            (
                "fail pattern matched at line #: UVM_ERROR bad crc at <hex>".to_string(),
                3
            ),
            ("timed out after #ms".to_string(), 1),
            ("dependency failed: sim-#".to_string(), 1),
        ]
    );
    // The fail-pattern jobs show the matched line and what follows it, read from their logs.
    let sim2 = data["jobs"]["name"]
        .as_array()
        .unwrap()
        .iter()
        .position(|n| n == "sim-2")
        .unwrap();
    let context = &data["contexts"][sim2.to_string()];
    assert_eq!(context["first_line"], 2);
    assert_eq!(
        context["lines"],
        serde_json::json!(["UVM_ERROR bad crc at 0x2f00", "after the error"])
    );
    // Logs are linked relative to the report; the fake backend's jobs have none.
    assert_eq!(data["logBase"], "jobs/");
    let fake_bad = data["jobs"]["name"]
        .as_array()
        .unwrap()
        .iter()
        .position(|n| n == "fake-bad-1")
        .unwrap();
    assert_eq!(data["logs"][fake_bad.to_string()], Value::Null);
    // A local job's log is at the default place (`logBase + name + "/output.log"`) unless the
    // host encodes its name for its directory: then the report lists its real path.
    let fake = data["backends"]
        .as_array()
        .unwrap()
        .iter()
        .position(|b| b == "fake")
        .unwrap();
    for (k, link) in data["logs"].as_object().unwrap() {
        let i: usize = k.parse().unwrap();
        if data["jobs"]["backend"][i] == fake {
            continue;
        }
        let name = data["jobs"]["name"][i].as_str().unwrap();
        assert!(name.contains('/'), "{name}'s log is listed: {link}");
        assert_eq!(
            link.as_str().unwrap(),
            format!("jobs/{}/output.log", name.replace('/', "%2F")),
            "{name}"
        );
    }
}

#[test]
fn the_observer_option_puts_each_file_at_its_default_place() {
    let dir = tempfile::tempdir().unwrap();
    let flow = "[flow]\nname = \"defaults\"\ndefault_backend = \"fake\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\n";
    let run = run_flow(
        dir.path(),
        flow,
        &[
            "--observer",
            "html",
            "--observer",
            "trace",
            "--observer",
            "status-dirs",
        ],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.out.join("report.html").is_file());
    assert!(run.out.join("trace.json").is_file());
    assert!(
        std::fs::symlink_metadata(run.out.join("by-status/passed/a"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

// ---------------------------------------------------------------------------------------------
// An interrupted run
// ---------------------------------------------------------------------------------------------

const INTERRUPTED: &str = r#"
[flow]
name = "interrupted"

[backends.local]
kind = "local"
max_parallel = 2

[backends.fake]
kind = "fake"
durations = { "fake-long" = "1h" }

[[job]]
name = "long-{n}"
matrix = { n = [1, 2, 3] }
cmd = "sleep 60"

[[job]]
name = "after"
cmd = "true"
needs = ["long-1"]

[[job]]
name = "fake-long"
cmd = "true"
backend = "fake"

[[job]]
name = "quick"
cmd = "true"
backend = "fake"
"#;

/// Every attempt of a retried job is its own event in the trace, with the status, reason,
/// exit code and log results.json gives that attempt (its `attempts` list, then the job's own
/// fields for the last one); an earlier attempt used to show no reason and no exit code. The
/// html report's timeline has each retried attempt's own reason too.
#[test]
fn retried_attempts_in_the_trace_agree_with_results_json() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_flow(
        dir.path(),
        r#"
[observers.trace]
kind = "trace"

[observers.report]
kind = "html"

[flow]
name = "retries"

[[job]]
name = "flaky"
cmd = "echo try $FLOWRUN_ATTEMPT; [ $FLOWRUN_ATTEMPT -ge 3 ] || exit $((4 + FLOWRUN_ATTEMPT))"
retries = 3
retry_on = "exit_code"

[[job]]
name = "always"
cmd = "echo UVM_ERROR attempt $FLOWRUN_ATTEMPT"
fail_patterns = ["^UVM_ERROR"]
retries = 1
retry_on = "fail_pattern"
"#,
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    let trace = read_json(&run.out.join("trace.json"));
    let by_job = trace_jobs(&trace);
    for job in jobs(&run) {
        let name = job["name"].as_str().unwrap();
        let mut expected: Vec<&Value> = job["attempts"].as_array().unwrap().iter().collect();
        expected.push(job);
        let events = &by_job[name];
        assert_eq!(events.len(), expected.len(), "{name}: {events:#?}");
        for (e, want) in events.iter().zip(&expected) {
            let n = &want["attempt"];
            assert_eq!(e["args"]["attempt"], *n, "{name}");
            for key in ["reason", "reason_kind", "exit_code", "log"] {
                assert_eq!(e["args"][key], want[key], "{name} attempt {n}: {key}");
            }
            if want["status"] == job["status"] && n == &job["attempt"] {
                assert_eq!(e["args"]["status"], job["status"], "{name}");
            } else {
                assert_eq!(e["args"]["status"], "retried", "{name} attempt {n}");
            }
        }
    }
    assert_eq!(run.job("flaky")["attempts"][1]["exit_code"], 6, "{run:#?}");

    // The report's timeline says why each retried attempt ended (its own reason), and gives
    // the last attempt none of its own (the job's reason is its).
    let data = report_data(&run.out.join("report.html"));
    let attempts = &data["attempts"];
    for a in 0..attempts["job"].as_array().unwrap().len() {
        let i = attempts["job"][a].as_u64().unwrap() as usize;
        let job = run.job(data["jobs"]["name"][i].as_str().unwrap());
        let n = attempts["n"][a].as_u64().unwrap();
        let reason = &data["reasons"][attempts["reason"][a].as_u64().unwrap() as usize];
        if n == job["attempt"].as_u64().unwrap() {
            assert_eq!(reason, "", "the last attempt's reason is the job's");
        } else {
            assert_eq!(
                *reason,
                job["attempts"][n as usize - 1]["reason"],
                "attempt {n}"
            );
        }
    }
}

fn start(dir: &Path, flow: &str) -> Child {
    let path = dir.join("flow.toml");
    std::fs::write(&path, flow).unwrap();
    flowrun(dir)
        .arg("run")
        .arg(&path)
        .arg("--out")
        .arg(dir.join("out"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flowrun")
}

/// Waits until the status-dirs observer shows `n` running jobs.
fn wait_running_links(out: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let count = std::fs::read_dir(out.join("by-status/running")).map_or(0, |rd| rd.count());
        if count >= n {
            return;
        }
        assert!(Instant::now() < deadline, "jobs never showed as running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// status-dirs clears only the links an earlier run left, never what else is in a status
/// directory: a `path` pointing at a directory a user keeps files in (a `failed/` of notes)
/// lost them all to a recursive delete at the run's start.
#[test]
fn status_dirs_remove_only_old_links_from_an_existing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("triage");
    std::fs::create_dir_all(mine.join("failed/notes")).unwrap();
    std::fs::write(mine.join("failed/notes/dma.txt"), "look at the crc").unwrap();
    std::fs::write(mine.join("failed/README"), "mine").unwrap();
    std::fs::create_dir_all(mine.join("passed")).unwrap();
    std::os::unix::fs::symlink("../../jobs/old", mine.join("passed/old")).unwrap();
    let run = run_flow(
        dir.path(),
        &format!(
            r#"
[observers.links]
kind = "status-dirs"
path = "{}"

[flow]
name = "keep"

[[job]]
name = "bad"
cmd = "exit 1"

[[job]]
name = "good"
cmd = "true"
"#,
            mine.display()
        ),
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(!run.stderr.contains("observer"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(mine.join("failed/notes/dma.txt"))
            .ok()
            .as_deref(),
        Some("look at the crc"),
        "the user's file survives"
    );
    assert!(
        mine.join("failed/README").is_file(),
        "the user's file survives"
    );
    assert!(
        std::fs::symlink_metadata(mine.join("passed/old")).is_err(),
        "an earlier run's link is gone"
    );
    let link = |status: &str, job: &str| std::fs::read_link(mine.join(status).join(job)).ok();
    assert!(link("failed", "bad").is_some(), "bad is linked in failed/");
    assert!(
        link("passed", "good").is_some(),
        "good is linked in passed/"
    );
}

/// An observer configured to write over the host's own files (results.json, the journal, the
/// job directories) refuses in one line and leaves them alone: `path = "results.json"` had
/// the report replace the run's record.
#[test]
fn observers_never_write_over_the_hosts_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_flow(
        dir.path(),
        r#"
[observers.report]
kind = "html"
path = "results.json"

[observers.trace]
kind = "trace"
path = "./journal"

[observers.links]
kind = "status-dirs"
path = "jobs"

[observers.junit]
kind = "junit"
path = "jobs/bad/output.log"

[flow]
name = "overwrite"

[[job]]
name = "bad"
cmd = "echo the evidence; exit 3"
"#,
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.status("bad"),
        "failed",
        "results.json is the run's: {run:#?}"
    );
    assert_eq!(run.reason("bad"), "exit code 3");
    let journal = std::fs::read(run.out.join("journal")).unwrap();
    assert!(!journal.starts_with(b"{"), "the journal is not the trace");
    let log = std::fs::read_to_string(run.out.join("jobs/bad/output.log")).unwrap();
    assert_eq!(log, "the evidence\n");
    assert!(
        !run.out.join("jobs/running").exists(),
        "no status dirs in jobs/"
    );
    for (name, owned) in [
        ("report", "results.json"),
        ("trace", "journal"),
        ("links", "jobs"),
        ("junit", "jobs"),
    ] {
        let lines: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with(&format!("flowrun: observer {name}: ")))
            .collect();
        assert_eq!(lines.len(), 1, "{name}: one line\n{}", run.stderr);
        assert!(
            lines[0].contains(&format!("it is the run's {owned}, which flowrun writes")),
            "{}",
            lines[0]
        );
    }
}

/// A job that leaves a FIFO where its log was does not hang the html observer (which reads a
/// failed job's log for its context): the report is finished at the run's end, and no
/// observer has anything to say. The report's last write used to wait for a writer forever,
/// and the host gave up on it after 30 s.
#[test]
fn a_fifo_left_as_a_log_does_not_hang_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_flow(
        dir.path(),
        r#"
[observers.report]
kind = "html"

[flow]
name = "fifo"

[[job]]
name = "evil"
cmd = "rm -f \"$FLOWRUN_JOB_DIR/output.log\"; mkfifo \"$FLOWRUN_JOB_DIR/output.log\"; exit 1"
"#,
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.reason("evil"), "exit code 1");
    assert!(!run.stderr.contains("observer"), "{}", run.stderr);
    let data = report_data(&run.out.join("report.html"));
    assert_eq!(data["finished"], true);
}

/// The log link the report's script gives job `i` (`logOf` in report.js).
fn report_log_link(data: &Value, i: usize) -> Option<String> {
    match data["logs"].get(i.to_string()) {
        Some(link) => link.as_str().map(str::to_string),
        None => Some(format!(
            "{}{}/output.log",
            data["logBase"].as_str().unwrap(),
            data["jobs"]["name"][i].as_str().unwrap()
        )),
    }
}

/// While a job runs, the report links to the log it is writing: in the directory the host
/// names after it (`ip/dma` in `ip%2Fdma`) and, for a retry, to that attempt's log. Both
/// links led to files that did not exist.
#[test]
fn a_report_written_mid_run_links_running_jobs_to_their_logs() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let wait = format!(
        "i=0; while [ ! -e '{}' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
        release.display()
    );
    let flow = format!(
        r#"
[observers.report]
kind = "html"
refresh = "100ms"

[flow]
name = "midrun"

[[job]]
name = "ip/dma"
cmd = "echo started; {wait}"

[[job]]
name = "again"
cmd = "[ $FLOWRUN_ATTEMPT -ge 2 ] || exit 1; echo second; {wait}"
retries = 1
retry_on = "exit_code"
"#
    );
    let child = start(dir.path(), &flow);
    let out = dir.path().join("out");
    let report = out.join("report.html");
    let running = |data: &Value, name: &str, attempts: u64| {
        let names = data["jobs"]["name"].as_array().unwrap();
        let i = names.iter().position(|n| n == name).unwrap();
        let status = data["jobs"]["status"][i].as_u64().unwrap() as usize;
        (data["statuses"][status] == "running" && data["jobs"]["attempts"][i] == attempts)
            .then_some(i)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (data, dma, again) = loop {
        if let Some(data) = std::fs::read_to_string(&report)
            .ok()
            .filter(|page| page.contains("flowrun-data"))
            .map(|_| report_data(&report))
        {
            if let (Some(dma), Some(again)) =
                (running(&data, "ip/dma", 1), running(&data, "again", 2))
            {
                break (data, dma, again);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the report never showed both jobs running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let links = [dma, again].map(|i| report_log_link(&data, i));
    let exist = links
        .clone()
        .map(|l| l.is_some_and(|l| out.join(l).is_file()));
    // The jobs end before anything is checked, so that a failed check leaves nothing running.
    std::fs::write(&release, "").unwrap();
    let run = collect(child.wait_with_output().unwrap(), &out);
    assert_eq!(run.code, 0, "{run:#?}");
    let expected = [
        "jobs/ip%2Fdma/output.log",
        "jobs/again/output.attempt-2.log",
    ];
    assert_eq!(
        links,
        expected.map(|l| Some(l.to_string())),
        "{:#}",
        data["logs"]
    );
    assert_eq!(exist, [true, true], "{links:?}");
}

#[test]
fn an_interrupted_run_leaves_every_observer_agreeing_with_results_json() {
    let dir = tempfile::tempdir().unwrap();
    let child = start(dir.path(), &format!("{ALL_OBSERVERS}{INTERRUPTED}"));
    let out = dir.path().join("out");
    // long-1, long-2 and fake-long run; quick is done.
    wait_running_links(&out, 3);
    flowrun_tests::send_signal(&child, libc::SIGINT);
    let run = collect(child.wait_with_output().unwrap(), &out);
    assert_eq!(run.code, 130, "{run:#?}");
    assert_eq!(run.reason("long-1"), "killed by SIGINT while running");
    assert_eq!(run.reason("long-3"), "killed while queued");
    assert_eq!(run.status("after"), "skipped");
    assert_eq!(run.status("fake-long"), "killed");
    assert_eq!(run.status("quick"), "passed");
    assert!(!run.stderr.contains("observer"), "{}", run.stderr);

    check_links(&run);
    let trace = read_json(&out.join("trace.json"));
    check_trace(&run, &trace);
    assert_eq!(trace["otherData"]["interrupted"], true);
    assert!(trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["ph"] == "i" && e["name"] == "SIGINT"));
    let data = report_data(&out.join("report.html"));
    check_report_data(&run, &data);
    assert_eq!(data["signal"], "SIGINT");
}

// ---------------------------------------------------------------------------------------------
// Observers that fail
// ---------------------------------------------------------------------------------------------

/// One passing job and one failing job, on the fake backend.
const SMALL: &str = "[flow]\nname = \"small\"\ndefault_backend = \"fake\"\n[backends.fake]\nkind = \"fake\"\noutcomes = { \"bad\" = \"fail\" }\n[[job]]\nname = \"good\"\ncmd = \"true\"\n[[job]]\nname = \"bad\"\ncmd = \"true\"\n";

fn statuses(run: &Run) -> Vec<(String, String, String)> {
    jobs(run)
        .iter()
        .map(|j| {
            (
                j["name"].to_string(),
                j["status"].to_string(),
                j["reason"].to_string(),
            )
        })
        .collect()
}

/// Runs SMALL with one observer of `kind` configured by `config` (and `env`), and checks that
/// the run ends as it does without the observer and that stderr says so in exactly one line
/// naming the observer, which contains `says`.
fn check_failing_observer(kind: &str, config: &str, env: Option<(&str, &str)>, says: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("baseline")).unwrap();
    let baseline = run_flow(&dir.path().join("baseline"), SMALL, &[]);
    std::fs::create_dir_all(dir.path().join("broken")).unwrap();
    std::fs::write(dir.path().join("broken/blocker"), "not a directory").unwrap();
    let flow_path = dir.path().join("broken/flow.toml");
    std::fs::write(
        &flow_path,
        format!("[observers.watch]\nkind = \"{kind}\"\n{config}\n{SMALL}"),
    )
    .unwrap();
    let out = dir.path().join("broken/out");
    let mut cmd = flowrun(dir.path());
    cmd.arg("run").arg(&flow_path).arg("--out").arg(&out);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let run = collect(cmd.output().unwrap(), &out);
    assert_eq!(
        run.code, baseline.code,
        "{kind}: the exit code is the run's\n{run:#?}"
    );
    assert_eq!(run.code, 1);
    assert_eq!(
        statuses(&run),
        statuses(&baseline),
        "{kind}: the verdicts are untouched"
    );
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("watch") || l.contains(kind))
        .collect();
    assert_eq!(lines.len(), 1, "{kind}: one line\n{}", run.stderr);
    assert!(lines[0].contains("observer watch"), "{kind}: {}", lines[0]);
    assert!(lines[0].contains(says), "{kind}: {}", lines[0]);
    assert!(
        !run.stderr
            .lines()
            .any(|l| l.contains("panicked") && !l.contains("observer watch")),
        "{kind}: no panic report besides that line\n{}",
        run.stderr
    );
}

fn blocked_path_config(dir_relative: &str) -> String {
    format!("path = \"{dir_relative}\"")
}

#[test]
fn an_unwritable_html_report_is_one_line_and_changes_nothing() {
    check_failing_observer(
        "html",
        &blocked_path_config("../blocker/report.html"),
        None,
        "html: cannot write",
    );
}

#[test]
fn an_unwritable_trace_is_one_line_and_changes_nothing() {
    check_failing_observer(
        "trace",
        &blocked_path_config("../blocker/trace.json"),
        None,
        "trace: cannot write",
    );
}

#[test]
fn unwritable_status_dirs_are_one_line_and_change_nothing() {
    check_failing_observer(
        "status-dirs",
        &blocked_path_config("../blocker/by-status"),
        None,
        "status-dirs: cannot",
    );
}

#[test]
fn a_panicking_observer_is_one_line_and_changes_nothing() {
    for kind in ["html", "trace", "status-dirs"] {
        check_failing_observer(
            kind,
            "",
            Some(("FLOWRUN_OBSERVER_FAULT", kind)),
            "stopped at an internal error",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The report in a real browser
// ---------------------------------------------------------------------------------------------

/// The Chromium binary: `$FLOWRUN_CHROMIUM`, else the first of the usual names on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLOWRUN_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
}

/// Runs headless Chromium on `url` with `args`, in a fresh profile; returns its stdout. Killed
/// (and the test failed) if it takes over two minutes.
fn headless(browser: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium failed: {status}");
            return reader.join().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The values of attribute `attr` of the elements whose opening tag contains `tag_has`.
/// A URL path with its `%XX` escapes decoded (as a browser resolves a relative link).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn attr_values(dom: &str, tag_has: &str, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(p) = rest.find(tag_has) {
        let tag_start = rest[..p].rfind('<').unwrap_or(0);
        let tag_end = p + rest[p..].find('>').unwrap_or(rest.len() - p);
        let tag = &rest[tag_start..tag_end];
        let key = format!(" {attr}=\"");
        if let Some(a) = tag.find(&key) {
            let v = &tag[a + key.len()..];
            out.push(v[..v.find('"').unwrap()].to_string());
        }
        rest = &rest[tag_end..];
    }
    out
}

#[test]
fn the_report_renders_in_headless_chromium() {
    if !privileged("headless Chromium (tests/run-all installs Debian's chromium)") {
        return;
    }
    let browser =
        chromium().expect("no chromium on PATH: install Debian's `chromium` (tests/run-all does)");
    let dir = tempfile::tempdir().unwrap();
    let run = mixed_run(dir.path());
    let url = format!("file://{}", run.out.join("report.html").display());
    let dom = headless(
        &browser,
        &dir.path().join("profile-1"),
        &url,
        &["--dump-dom"],
    );
    assert!(
        dom.contains("data-ready=\"1\""),
        "the script ran to its end:\n{dom}"
    );

    // The buckets, with their counts.
    let keys = attr_values(&dom, "class=\"bucket ", "data-key");
    let counts = attr_values(&dom, "class=\"bucket ", "data-count");
    assert_eq!(
        keys.iter()
            .zip(&counts)
            .map(|(k, c)| format!("{c} {k}"))
            .collect::<Vec<_>>(),
        [
            "4 exit code #",
            "3 fail pattern matched at line #: UVM_ERROR bad crc at &lt;hex&gt;",
            "1 timed out after #ms",
            "1 dependency failed: sim-#",
        ]
    );
    // The timeline's bars (the canvas's text twin), one per job that ran, coloured by status.
    let ran: Vec<&Value> = jobs(&run)
        .iter()
        .filter(|j| !j["started_at"].is_null())
        .collect();
    assert_eq!(
        attr_values(&dom, "id=\"timeline\"", "data-bars"),
        [ran.len().to_string()]
    );
    let bars = &dom[dom.find("<ol id=\"timeline-bars\">").expect("the bar list")..];
    let bars = &bars[..bars.find("</ol>").expect("the bar list ends")];
    let bar_jobs = attr_values(bars, "<li data-job", "data-job");
    assert_eq!(bar_jobs.len(), ran.len());
    for job in &ran {
        let name = job["name"].as_str().unwrap();
        let at = bars.find(&format!(
            "<li data-job=\"{name}\" data-status=\"{}\"",
            job["status"].as_str().unwrap()
        ));
        assert!(at.is_some(), "a {} bar for {name}", job["status"]);
    }
    assert!(
        !bar_jobs.iter().any(|n| n == "nightly/report"),
        "the skipped job has no bar"
    );
    // Every log link leads to a file, for job names the host encodes in their directory's
    // name too (`crash/1` lives in `jobs/crash%2F1`, so its link holds `crash%252F1`).
    let links: Vec<String> = attr_values(&dom, "href=\"", "href")
        .into_iter()
        .filter(|h| h.ends_with("output.log"))
        .collect();
    assert!(
        links.iter().any(|h| h.contains("crash%252F")),
        "a link to a slashed job's log: {links:?}"
    );
    for link in &links {
        let path = run.out.join(percent_decode(link));
        assert!(
            path.is_file(),
            "the link {link} leads to {}",
            path.display()
        );
    }
    // The table's rows, in the flow's order, with their statuses.
    let row_jobs = attr_values(&dom, "role=\"row\" data-job", "data-job");
    let row_statuses = attr_values(&dom, "role=\"row\" data-job", "data-status");
    let want: Vec<String> = jobs(&run)
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect();
    let want_statuses: Vec<String> = jobs(&run)
        .iter()
        .map(|j| j["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(row_jobs, want);
    assert_eq!(row_statuses, want_statuses);

    // Resource use over time: at most 3 jobs ran at once on local (its cap), and it got there.
    let peaks: Vec<(String, String)> = attr_values(&dom, "class=\"chart\"", "data-series")
        .into_iter()
        .zip(attr_values(&dom, "class=\"chart\"", "data-peak"))
        .collect();
    assert!(
        peaks.contains(&("jobs running on local".into(), "3".into())),
        "{peaks:?}"
    );
    let fake_peak = peaks
        .iter()
        .find(|(s, _)| s == "jobs running on fake")
        .expect("a fake chart");
    assert!(fake_peak.1.parse::<u32>().unwrap() >= 3, "{peaks:?}");

    // Filtering and sorting, set from the URL's fragment.
    let dom = headless(
        &browser,
        &dir.path().join("profile-2"),
        &format!("{url}#status=failed&sort=name&dir=desc"),
        &["--dump-dom"],
    );
    let mut failed: Vec<String> = jobs(&run)
        .iter()
        .filter(|j| j["status"] == "failed")
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect();
    failed.sort();
    failed.reverse();
    assert_eq!(
        attr_values(&dom, "role=\"row\" data-job", "data-job"),
        failed
    );

    // A screenshot that shows the timeline's green and red bars.
    let shot = dir.path().join("shot.png");
    headless(
        &browser,
        &dir.path().join("profile-3"),
        &url,
        &[
            "--window-size=1280,1800",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let (width, height, pixels) = decode_png(&shot);
    assert!(width >= 1000 && height >= 1000, "{width}x{height}");
    let near = |rgb: [u8; 3]| {
        pixels
            .chunks_exact(3)
            .filter(|p| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 8))
            .count()
    };
    let white = near([255, 255, 255]);
    assert!(white < pixels.len() / 3, "the screenshot is not blank");
    assert!(
        near([0x2e, 0x9d, 0x4f]) > 2000,
        "passed bars are drawn in green"
    );
    assert!(
        near([0xd9, 0x3a, 0x3a]) > 500,
        "failed bars are drawn in red"
    );
}

/// Width, height and RGB bytes of a PNG.
fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("the screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a sane size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    assert!(
        info.bit_depth == png::BitDepth::Eight && channels >= 3,
        "{info:?}"
    );
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, rgb)
}
