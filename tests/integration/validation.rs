//! Every class of flow error, through `flowrun check` and `flowrun run`: exit code 2, the file,
//! line and column, what is wrong and what to do; nothing starts; several errors in one go.

use flowrun_tests::{flowrun, run_flow};

/// (what, flow text, expected `flow.toml:LINE:` prefix, expected substrings)
const CASES: &[(&str, &str, &str, &[&str])] = &[
    ("toml syntax", "[[job]\nname = \"a\"\n", "flow.toml:1:", &["error:"]),
    ("unknown key", "[[job]]\nname = \"a\"\ncmd = \"true\"\nneeds_ = [\"b\"]\n", "flow.toml:4:", &["needs_", "needs"]),
    (
        "duplicate name after expansion",
        "[[job]]\nname = \"sim-1\"\ncmd = \"true\"\n[[job]]\nname = \"sim-{n}\"\ncmd = \"true\"\nmatrix = { n = [1, 2] }\n",
        "flow.toml:",
        &["sim-1", "duplicate"],
    ),
    ("missing dependency", "[[job]]\nname = \"build\"\ncmd = \"true\"\n[[job]]\nname = \"sim\"\ncmd = \"true\"\nneeds = [\"biuld\"]\n", "flow.toml:7:", &["biuld", "build"]),
    (
        "cycle",
        "[[job]]\nname = \"a\"\ncmd = \"true\"\nneeds = [\"c\"]\n[[job]]\nname = \"b\"\ncmd = \"true\"\nneeds = [\"a\"]\n[[job]]\nname = \"c\"\ncmd = \"true\"\nneeds = [\"b\"]\n",
        "flow.toml:",
        &["cycle", " -> "],
    ),
    ("unknown backend", "[[job]]\nname = \"a\"\ncmd = \"true\"\nbackend = \"slrum\"\n", "flow.toml:4:", &["slrum"]),
    ("unknown observer kind", "[observers.x]\nkind = \"junitt\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\n", "flow.toml:", &["junitt"]),
    ("invalid regex", "[[job]]\nname = \"a\"\ncmd = \"true\"\nfail_patterns = [\"UVM_(ERROR\"]\n", "flow.toml:4:", &["UVM_(ERROR"]),
    ("resource larger than exists", "[resources]\nlic = 2\n[[job]]\nname = \"a\"\ncmd = \"true\"\nresources = { lic = 3 }\n", "flow.toml:6:", &["lic"]),
    ("undeclared resource", "[[job]]\nname = \"a\"\ncmd = \"true\"\nresources = { lics = 1 }\n", "flow.toml:4:", &["lics"]),
    ("matrix name misses a variable", "[[job]]\nname = \"sim-{t}\"\ncmd = \"true\"\nmatrix = { t = [\"a\"], seed = [1, 2] }\n", "flow.toml:", &["seed"]),
    ("unknown template variable", "[[job]]\nname = \"a\"\ncmd = \"echo {nope}\"\n", "flow.toml:3:", &["nope"]),
    ("invalid duration", "[[job]]\nname = \"a\"\ncmd = \"true\"\ntimeout = \"30 minuts\"\n", "flow.toml:4:", &["30 minuts"]),
    ("invalid when", "[[job]]\nname = \"a\"\ncmd = \"true\"\nwhen = \"sometimes\"\n", "flow.toml:4:", &["sometimes", "all-passed"]),
    ("include loop", "[flow]\ninclude = [\"flow.toml\"]\n[[job]]\nname = \"a\"\ncmd = \"true\"\n", "flow.toml:2:", &["include"]),
    ("missing include", "[flow]\ninclude = [\"nope.toml\"]\n", "flow.toml:2:", &["nope.toml"]),
];

#[test]
fn every_flow_error_names_file_line_and_exits_2() {
    for (what, text, at, needles) in CASES {
        assert_refused(what, text, at, needles);
    }
}

/// `check` of `text` exits 2 with the location `at` and every one of `needles`, without a panic;
/// `run` refuses the same flow before starting anything.
fn assert_refused(what: &str, text: &str, at: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("flow.toml");
    std::fs::write(&flow, text).unwrap();
    let (code, err) = check_within(dir.path(), &flow, 20);
    assert_eq!(code, 2, "{what}: exit code; stderr:\n{err}");
    assert!(
        err.contains(at),
        "{what}: expected a location {at}... in:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "{what}: expected {n:?} in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{what}: {err}");
    let run = run_flow(dir.path(), text, &[]);
    assert_eq!(run.code, 2, "{what}: {run:#?}");
    assert!(run.results.is_null(), "{what}: nothing may run");
}

#[test]
fn several_errors_are_reported_in_one_go() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[job]]\nname = \"a\"\ncmd = \"true\"\ntimeout = \"soon\"\n[[job]]\nname = \"b\"\ncmd = \"true\"\nneeds = [\"zzz\"]\nfail_patterns = [\"(\"]\n";
    std::fs::write(dir.path().join("flow.toml"), text).unwrap();
    let o = flowrun(dir.path())
        .arg("check")
        .arg(dir.path().join("flow.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    for (line, what) in [
        ("flow.toml:4:", "soon"),
        ("flow.toml:8:", "zzz"),
        ("flow.toml:9:", "("),
    ] {
        assert!(
            err.contains(line) && err.contains(what),
            "expected {line} {what} in:\n{err}"
        );
    }
}

#[test]
fn includes_merge_into_one_dag_with_prefixed_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ip")).unwrap();
    std::fs::write(
        dir.path().join("ip/dma.toml"),
        "[flow]\nname = \"dma\"\n[[job]]\nname = \"build\"\ncmd = \"true\"\n[[job]]\nname = \"sim\"\ncmd = \"true\"\nneeds = [\"build\"]\n",
    )
    .unwrap();
    let text = "[flow]\ninclude = [\"ip/dma.toml\"]\ndefault_backend = \"fake\"\n[[job]]\nname = \"report\"\ncmd = \"true\"\nneeds = [\"dma.*\"]\n";
    let run = run_flow(dir.path(), text, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    for n in ["dma.build", "dma.sim", "report"] {
        assert_eq!(run.status(n), "passed");
    }
}

/// Runs `flowrun check FLOW` with a deadline: a check that blocks (on a FIFO, say) fails the test
/// instead of hanging it. Returns the exit code and stderr.
fn check_within(home: &std::path::Path, flow: &std::path::Path, secs: u64) -> (i32, String) {
    use std::io::Read;
    let mut child = flowrun(home)
        .arg("check")
        .arg(flow)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`flowrun check {}` still runs after {secs} s",
                flow.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), err)
}

/// What could only fail at run time (or do harm there) is refused by `check`: exit 2, file and
/// line, and `run` starts nothing. (what, flow text, expected `flow.toml:LINE:`, substrings);
/// `{LONG}` stands for a 256-byte name.
const RUN_TIME_FAILURES: &[(&str, &str, &str, &[&str])] = &[
    ("job named ..", "[[job]]\nname = \"..\"\ncmd = \"true\"\n", "flow.toml:2:8:", &["invalid job name \"..\""]),
    ("job named .", "[[job]]\nname = \".\"\ncmd = \"true\"\n", "flow.toml:2:8:", &["invalid job name \".\""]),
    ("job name over 255 bytes", "[[job]]\nname = \"{LONG}\"\ncmd = \"true\"\n", "flow.toml:2:8:", &["256 bytes long"]),
    ("job name with a newline", "[[job]]\nname = \"a\\nb\"\ncmd = \"true\"\n", "flow.toml:2:8:", &["newline"]),
    ("job name with NUL", "[[job]]\nname = \"a\\u0000\"\ncmd = \"true\"\n", "flow.toml:2:8:", &["NUL"]),
    ("job name .. from a matrix value", "[[job]]\nname = \"{d}\"\ncmd = \"true\"\nmatrix = { d = [\"a\", \"..\"] }\n", "flow.toml:2:8:", &["invalid job name \"..\""]),
    ("empty job name from a matrix value", "[[job]]\nname = \"{d}\"\ncmd = \"true\"\nmatrix = { d = [\"a\", \"\"] }\n", "flow.toml:2:8:", &["it is empty"]),
    ("flow named ..", "[flow]\nname = \"..\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\n", "flow.toml:2:8:", &["invalid flow name \"..\""]),
    ("flow name with /", "[flow]\nname = \"../x\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\n", "flow.toml:2:8:", &["invalid flow name", "`/`"]),
    ("empty flow name", "[flow]\nname = \"\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\n", "flow.toml:2:8:", &["it is empty"]),
    ("flow name with NUL", "[flow]\nname = \"a\\u0000\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\n", "flow.toml:2:8:", &["NUL"]),
    ("matrix count wraps", "[[job]]\nname = \"a-{x}\"\ncmd = \"true\"\nmatrix = { x = { range = [-9223372036854775808, 9223372036854775807] } }\n", "flow.toml:4:10:", &["2^64 or more jobs", "10,000,000"]),
    ("matrix over the limit", "[[job]]\nname = \"a-{x}-{y}\"\ncmd = \"true\"\nmatrix = { x = { range = [1, 10000] }, y = { range = [1, 4000] } }\n", "flow.toml:4:10:", &["40,000,000 jobs"]),
    ("timeout beyond the host's clock", "[[job]]\nname = \"a\"\ncmd = \"true\"\ntimeout = \"18446744073709551615s\"\n", "flow.toml:4:11:", &["at most 100 years"]),
    ("timeout as a number", "[[job]]\nname = \"a\"\ncmd = \"true\"\ntimeout = 30\n", "flow.toml:4:11:", &["\"30s\""]),
    ("NUL in cmd", "[[job]]\nname = \"a\"\ncmd = \"echo \\u0000\"\n", "flow.toml:3:", &["`cmd` contains a NUL byte"]),
    ("NUL in cwd", "[[job]]\nname = \"a\"\ncmd = \"true\"\ncwd = \"x\\u0000\"\n", "flow.toml:4:", &["`cwd` contains a NUL byte"]),
    ("NUL in an env value", "[[job]]\nname = \"a\"\ncmd = \"true\"\nenv = { A = \"\\u0000\" }\n", "flow.toml:4:", &["`env.A` contains a NUL byte"]),
    ("NUL in a matrix value", "[[job]]\nname = \"a-{v}\"\ncmd = \"true\"\nmatrix = { v = [\"\\u0000\"] }\n", "flow.toml:4:", &["NUL byte"]),
    ("env name with =", "[[job]]\nname = \"a\"\ncmd = \"true\"\nenv = { \"A=B\" = \"1\" }\n", "flow.toml:4:9:", &["it contains `=`"]),
    ("empty env name", "[[job]]\nname = \"a\"\ncmd = \"true\"\nenv = { \"\" = \"1\" }\n", "flow.toml:4:9:", &["it is empty"]),
    ("env name with NUL", "[[job]]\nname = \"a\"\ncmd = \"true\"\nenv = { \"A\\u0000\" = \"1\" }\n", "flow.toml:4:9:", &["NUL"]),
    ("empty cmd", "[[job]]\nname = \"a\"\ncmd = \"\"\n", "flow.toml:3:7:", &["`cmd` is empty"]),
    ("white-space cmd", "[[job]]\nname = \"a\"\ncmd = \"   \"\n", "flow.toml:3:7:", &["`cmd` is empty"]),
    ("empty program", "[[job]]\nname = \"a\"\ncmd = [\"\"]\n", "flow.toml:3:8:", &["the program"]),
    ("empty needs entry", "[[job]]\nname = \"a\"\ncmd = \"true\"\nneeds = [\"\"]\n", "flow.toml:4:10:", &["empty entry"]),
    ("empty flow", "", "flow.toml:1:1:", &["the flow has no jobs"]),
    ("comments only", "# todo\n", "flow.toml:1:1:", &["the flow has no jobs"]),
];

#[test]
fn what_can_only_fail_at_run_time_is_refused_by_check() {
    for (what, text, at, needles) in RUN_TIME_FAILURES {
        assert_refused(what, &text.replace("{LONG}", &"x".repeat(256)), at, needles);
    }
}

#[test]
fn a_flow_named_dotdot_writes_nothing_and_keeps_a_file_named_latest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flow.toml"),
        "[flow]\nname = \"..\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("latest"), "precious data\n").unwrap();
    let o = flowrun(dir.path())
        .current_dir(dir.path())
        .args(["run", "flow.toml", "-q"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("latest")).unwrap(),
        "precious data\n"
    );
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 2, "nothing but the flow and `latest`");
}

#[test]
fn includes_of_a_fifo_dev_zero_or_a_directory_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("fifo"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    for (target, why) in [
        ("fifo", "it is a FIFO (named pipe), not a regular file"),
        ("/dev/zero", "it is a character device, not a regular file"),
        ("sub", "it is a directory, not a regular file"),
    ] {
        let flow = dir.path().join("flow.toml");
        std::fs::write(
            &flow,
            format!("[flow]\ninclude = [\"{target}\"]\n[[job]]\nname = \"a\"\ncmd = \"true\"\n"),
        )
        .unwrap();
        let (code, err) = check_within(dir.path(), &flow, 20);
        assert_eq!(code, 2, "{target}: {err}");
        assert!(
            err.contains("flow.toml:2:12:") && err.contains(why),
            "{target}: {err}"
        );
    }
}

#[test]
fn a_file_that_is_not_a_flow_gives_a_short_report() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("flow.toml");
    std::fs::write(
        &flow,
        "[flow]\ninclude = [\"/etc/passwd\"]\n[[job]]\nname = \"a\"\ncmd = \"true\"\n",
    )
    .unwrap();
    let (code, err) = check_within(dir.path(), &flow, 20);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/etc/passwd:1:"), "{err}");
    let errors = err.matches(": error: ").count();
    assert!(errors <= 6, "{errors} errors:\n{err}");
}

#[test]
fn invalid_utf8_names_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("flow.toml");
    std::fs::write(&flow, b"[[job]]\nname = \"a\"\ncmd = \"echo caf\xe9\"\n").unwrap();
    let (code, err) = check_within(dir.path(), &flow, 20);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("flow.toml:3:16: error: the file is not UTF-8 text: byte 0xE9"),
        "{err}"
    );
}

#[test]
fn ten_thousand_errors_and_a_megabyte_key_give_a_bounded_report() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("flow.toml");
    let text: String = (0..10_000)
        .map(|i| format!("[[job]]\nname = \"j{i}\"\ncmd = \"\"\n"))
        .collect();
    std::fs::write(&flow, text).unwrap();
    let (code, err) = check_within(dir.path(), &flow, 60);
    assert_eq!(code, 2);
    assert!(err.lines().count() < 400, "{} lines", err.lines().count());
    assert!(err.contains("... and 9970 more errors"), "{err}");
    assert!(err.trim_end().ends_with("10000 errors"), "{err}");

    let key = "k".repeat(1 << 20);
    std::fs::write(
        &flow,
        format!("[[job]]\nname = \"a\"\ncmd = \"true\"\n{key} = 1\n"),
    )
    .unwrap();
    let (code, err) = check_within(dir.path(), &flow, 60);
    assert_eq!(code, 2);
    assert!(
        err.contains("flow.toml:4:1: error: unknown key `kkk"),
        "{err}"
    );
    assert!(err.len() < 4000, "{} bytes of messages", err.len());
}

#[test]
fn dry_run_is_bounded_and_shows_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let flow = "[[job]]\nname = \"mid-{i}\"\ncmd = \"true\"\nmatrix = { i = { range = [1, 20000] } }\n[[job]]\nname = \"sink\"\ncmd = \"true\"\nneeds = [\"mid-*\"]\nwhen = \"always\"\ntimeout = \"10m\"\nresources = { cpus = 2 }\nfail_patterns = [\"ERROR\"]\n";
    let run = run_flow(dir.path(), flow, &["--dry-run", "--backend", "fake"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.results.is_null());
    let longest = run.stdout.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 300, "a line of {longest} bytes");
    for line in [
        "sink  [backend fake]  true",
        "    needs: mid-1, mid-2, mid-3, mid-4, mid-5, mid-6, mid-7, mid-8, ... and 19992 more (20000 jobs)",
        "    when: always",
        "    resources: cpus 2",
        "    timeout: 10m",
        "    fail: `ERROR`",
        "20001 jobs: 20001 on fake",
    ] {
        assert!(
            run.stdout.lines().any(|l| l == line),
            "no line {line:?} in the plan"
        );
    }
}

/// The text of `flowrun check` errors, pinned: the first line `file:line:col: error:`, the source
/// line with the problem underlined, the help. (snapshot name, flow file bytes)
const SNAPSHOTS: &[(&str, &[u8])] = &[
    ("unknown_key", b"[[job]]\nname = \"a\"\ncmd = \"true\"\nnedds = [\"b\"]\n"),
    ("missing_dependency", b"[[job]]\nname = \"build\"\ncmd = \"true\"\n[[job]]\nname = \"sim\"\ncmd = \"true\"\nneeds = [\"biuld\"]\n"),
    ("toml_syntax", b"[[job]\nname = \"a\"\n"),
    ("invalid_duration", b"[[job]]\nname = \"a\"\ncmd = \"true\"\ntimeout = \"soon\"\n"),
    ("timeout_number", b"[[job]]\nname = \"a\"\ncmd = \"true\"\ntimeout = 30\n"),
    ("timeout_too_long", b"[[job]]\nname = \"a\"\ncmd = \"true\"\ntimeout = \"18446744073709551615s\"\n"),
    ("job_name_dotdot_from_matrix", b"[[job]]\nname = \"{d}\"\ncmd = \"true\"\nmatrix = { d = [\"a\", \"..\", \".\"] }\n"),
    ("flow_name_escapes", b"[flow]\nname = \"../x\"\n[[job]]\nname = \"a\"\ncmd = \"true\"\n"),
    ("matrix_overflow", b"[[job]]\nname = \"a-{x}\"\ncmd = \"true\"\nmatrix = { x = { range = [-9223372036854775808, 9223372036854775807] } }\n"),
    ("run_time_failures", b"[[job]]\nname = \"a\"\ncmd = \"\"\nneeds = [\"\"]\nenv = { \"A=B\" = \"1\", C = \"x\\u0000\" }\n"),
    ("unknown_resource_gpus", b"[[job]]\nname = \"a\"\ncmd = \"true\"\nresources = { gpus = 1 }\n"),
    ("cycle", b"[[job]]\nname = \"a\"\ncmd = \"true\"\nneeds = [\"b\"]\n[[job]]\nname = \"b\"\ncmd = \"true\"\nneeds = [\"a\"]\n"),
    ("empty_flow", b""),
    ("not_utf8", b"[[job]]\nname = \"caf\xe9\"\ncmd = \"true\"\n"),
];

#[test]
fn check_error_texts_are_pinned() {
    for (name, text) in SNAPSHOTS {
        let dir = tempfile::tempdir().unwrap();
        let flow = dir.path().join("flow.toml");
        std::fs::write(&flow, text).unwrap();
        let (code, err) = check_within(dir.path(), &flow, 20);
        assert_eq!(code, 2, "{name}: {err}");
        let err = err.replace(&dir.path().display().to_string(), "[DIR]");
        insta::assert_snapshot!(*name, err);
    }
}
