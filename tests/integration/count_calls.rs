//! `tests/cluster/count-calls`, the shims that count scheduler command calls for the
//! "at most one status call per poll interval" tests: each call is logged with its arguments
//! and the real command runs unchanged. Unprivileged.

use std::process::Command;

use flowrun_tests::workspace_root;

fn count_calls(args: &[&str]) -> String {
    let out = Command::new(workspace_root().join("tests/cluster/count-calls"))
        .args(args)
        .output()
        .expect("run count-calls");
    assert!(
        out.status.success(),
        "count-calls {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn count_calls_logs_every_call_and_runs_the_real_command_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let shims = tmp.path().join("shims");
    let printed = count_calls(&[shims.to_str().unwrap(), "env", "sh"]);
    assert_eq!(printed.trim(), shims.display().to_string());
    let path = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    // output, arguments with spaces and the exit status are the real command's
    let out = run(
        "env",
        &["A=two words", "sh", "-c", "printf '%s\\n' \"$A\"; exit 3"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "two words\n");
    assert_eq!(out.status.code(), Some(3));
    for _ in 0..3 {
        assert!(run("sh", &["-c", "true"]).status.success());
    }
    let log = std::fs::read_to_string(shims.join("calls.log")).unwrap();
    let calls: Vec<(f64, String)> = log
        .lines()
        .map(|l| {
            let (time, call) = l.split_once(' ').unwrap();
            (time.parse().unwrap(), call.to_string())
        })
        .collect();
    // env ran sh by name: found first on PATH, that call went through the sh shim too
    assert_eq!(
        calls.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(),
        [
            "env A=two words sh -c printf '%s\\n' \"$A\"; exit 3",
            "sh -c printf '%s\\n' \"$A\"; exit 3",
            "sh -c true",
            "sh -c true",
            "sh -c true",
        ]
    );
    assert!(
        calls.windows(2).all(|w| w[0].0 <= w[1].0),
        "times out of order: {log}"
    );
    // --report: the count, and the most calls within any window
    assert_eq!(
        count_calls(&["--report", shims.to_str().unwrap(), "sh", "3600"]),
        "4 4\n"
    );
    assert_eq!(
        count_calls(&["--report", shims.to_str().unwrap(), "sh", "0.000001"]),
        "4 1\n"
    );
    assert_eq!(
        count_calls(&["--report", shims.to_str().unwrap(), "env"]),
        "1 1\n"
    );
    assert_eq!(
        count_calls(&["--report", shims.to_str().unwrap(), "bjobs"]),
        "0 0\n"
    );
}
