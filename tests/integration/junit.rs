//! The `junit` observer in a real run: a flow's `[observers.*]` table or `--observer junit`
//! produces a well-formed JUnit report whose counts match results.json.

use flowrun_tests::run_flow;

const JOBS: &str = r#"
[backends.fake]
kind = "fake"
durations = { "slow" = "1h" }
[backends.fake.outcomes]
"bad" = "fail"

[[job]]
name = "good"
cmd = "true"

[[job]]
name = "bad"
cmd = "true"

[[job]]
name = "after_bad"
cmd = "true"
needs = ["bad"]

[[job]]
name = "slow"
cmd = "true"
timeout = "200ms"
"#;

fn attr<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> &'a str {
    node.attribute(name)
        .unwrap_or_else(|| panic!("<{}> lacks {name}", node.tag_name().name()))
}

/// Checks the report at `path` against the run of [`JOBS`].
fn check_report(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc =
        roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("invalid XML ({e}):\n{text}"));
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a <testsuite>");
    assert_eq!(attr(suite, "name"), "junit-e2e");
    // failures = failed jobs, errors = killed jobs, skipped = skipped jobs.
    assert_eq!(
        ["tests", "failures", "errors", "skipped"].map(|a| attr(suite, a)),
        ["4", "1", "1", "1"],
        "{text}"
    );
    let case = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
            .unwrap_or_else(|| panic!("no testcase {name}:\n{text}"))
    };
    let has = |name: &str, tag: &str| case(name).children().any(|n| n.has_tag_name(tag));
    assert_eq!(attr(case("good"), "classname"), "junit-e2e.fake");
    assert!(!has("good", "failure") && !has("good", "error") && !has("good", "skipped"));
    let failure = case("bad")
        .children()
        .find(|n| n.has_tag_name("failure"))
        .expect("<failure>");
    assert_eq!(attr(failure, "message"), "exit code 1");
    assert!(has("slow", "error"));
    let skipped = case("after_bad")
        .children()
        .find(|n| n.has_tag_name("skipped"))
        .expect("<skipped>");
    assert_eq!(attr(skipped, "message"), "dependency failed: bad");
}

#[test]
fn an_observers_table_writes_the_report_relative_to_the_run_dir() {
    let dir = tempfile::tempdir().unwrap();
    let flow = format!(
        "[flow]\nname = \"junit-e2e\"\ndefault_backend = \"fake\"\n\n[observers.ci]\nkind = \"junit\"\npath = \"reports/junit.xml\"\n{JOBS}"
    );
    let run = run_flow(dir.path(), &flow, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    check_report(&run.out.join("reports/junit.xml"));
}

#[test]
fn the_observer_option_writes_junit_xml_into_the_run_dir() {
    let dir = tempfile::tempdir().unwrap();
    let flow = format!("[flow]\nname = \"junit-e2e\"\ndefault_backend = \"fake\"\n{JOBS}");
    let run = run_flow(dir.path(), &flow, &["--observer", "junit"]);
    assert_eq!(run.code, 1, "{run:#?}");
    check_report(&run.out.join("junit.xml"));
}

#[test]
fn a_bad_junit_config_is_invalid_input_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let flow = format!(
        "[flow]\nname = \"junit-e2e\"\ndefault_backend = \"fake\"\n\n[observers.ci]\nkind = \"junit\"\npth = \"x.xml\"\n{JOBS}"
    );
    let run = run_flow(dir.path(), &flow, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("pth"), "{}", run.stderr);
}
