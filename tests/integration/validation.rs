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
        let dir = tempfile::tempdir().unwrap();
        let flow = dir.path().join("flow.toml");
        std::fs::write(&flow, text).unwrap();
        let o = flowrun(dir.path())
            .arg("check")
            .arg(&flow)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{what}: exit code; stderr:\n{err}"
        );
        assert!(
            err.contains(at),
            "{what}: expected a location {at}... in:\n{err}"
        );
        for n in *needles {
            assert!(err.contains(n), "{what}: expected {n:?} in:\n{err}");
        }
        assert!(!err.contains("panicked"), "{what}: {err}");
        // `run` refuses the same flow before starting anything.
        let run = run_flow(dir.path(), text, &[]);
        assert_eq!(run.code, 2, "{what}: {run:#?}");
        assert!(run.results.is_null(), "{what}: nothing may run");
    }
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
