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

/// The `<testcase>` of job `name` in the report `doc` (its `text`, for the message).
fn testcase<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
    name: &str,
    text: &str,
) -> roxmltree::Node<'a, 'i> {
    doc.descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
        .unwrap_or_else(|| panic!("no testcase {name}:\n{text}"))
}

/// The `tests`, `failures`, `errors` and `skipped` counts of the report's `<testsuite>`.
fn suite_counts<'a>(doc: &'a roxmltree::Document<'_>) -> [&'a str; 4] {
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a <testsuite>");
    ["tests", "failures", "errors", "skipped"].map(|a| attr(suite, a))
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
    assert_eq!(suite_counts(&doc), ["4", "1", "1", "1"], "{text}");
    let case = |name: &str| testcase(&doc, name, &text);
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

/// `flaky` fails its first two attempts and passes its third; `bad` fails both of its.
#[test]
fn retried_attempts_are_flaky_failures_of_a_job_that_passed_and_rerun_failures_of_one_that_did_not()
{
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let m = marks.display();
    let flow = format!(
        "[flow]\nname = \"junit-flaky\"\nretry_on = \"exit_code\"\n\
         [[job]]\nname = \"flaky\"\nretries = 2\n\
         cmd = \"echo ran >> {m}/flaky; echo attempt $FLOWRUN_ATTEMPT; [ $(wc -l < {m}/flaky) -ge 3 ]\"\n\
         [[job]]\nname = \"bad\"\nretries = 1\ncmd = \"exit 3\"\n"
    );
    let run = run_flow(dir.path(), &flow, &["--observer", "junit"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let path = run.out.join("junit.xml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc =
        roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("invalid XML ({e}):\n{text}"));
    // A flaky pass is a pass: retried attempts count as neither failures nor errors.
    assert_eq!(suite_counts(&doc), ["2", "1", "0", "0"], "{text}");
    let case = |name: &str| testcase(&doc, name, &text);
    let tags = |name: &str| -> Vec<String> {
        case(name)
            .children()
            .filter(|n| n.is_element())
            .map(|n| n.tag_name().name().to_string())
            .collect()
    };
    assert_eq!(
        tags("flaky"),
        ["flakyFailure", "flakyFailure", "system-out"],
        "{text}"
    );
    let flaky: Vec<_> = case("flaky")
        .children()
        .filter(|n| n.has_tag_name("flakyFailure"))
        .collect();
    let jobdir = run.out.join("jobs/flaky");
    for (attempt, log) in flaky.iter().zip(["output.log", "output.attempt-2.log"]) {
        assert_eq!(attr(*attempt, "message"), "exit code 1", "{text}");
        assert_eq!(attr(*attempt, "type"), "failed", "{text}");
        let body: String = attempt
            .descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect();
        assert!(body.contains("exit code: 1"), "{text}");
        let out = attempt
            .children()
            .find(|n| n.has_tag_name("system-out"))
            .and_then(|n| n.text())
            .unwrap_or_else(|| panic!("no <system-out> in a flakyFailure:\n{text}"));
        assert_eq!(
            out,
            format!("log: {}", jobdir.join(log).display()),
            "{text}"
        );
    }
    // The case's own output is the last attempt's log.
    let own = case("flaky")
        .children()
        .find(|n| n.has_tag_name("system-out"))
        .and_then(|n| n.text())
        .unwrap();
    assert_eq!(
        own,
        format!("log: {}", jobdir.join("output.attempt-3.log").display())
    );
    // A job that never passed: its last attempt is the failure, the earlier one a rerun.
    assert_eq!(
        tags("bad"),
        ["failure", "rerunFailure", "system-out"],
        "{text}"
    );
    let rerun = case("bad")
        .children()
        .find(|n| n.has_tag_name("rerunFailure"))
        .unwrap();
    assert_eq!(attr(rerun, "message"), "exit code 3", "{text}");
}

/// U+FFFE and U+FFFF are valid UTF-8 but no character of XML 1.0: a job name or a fail line
/// holding them must not make the whole report unreadable to a CI's XML parser. The report
/// parses, and the failure is still there, the characters replaced by U+FFFD.
#[test]
fn junit_report_stays_well_formed_with_xml_nonchars_in_names_and_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_flow(
        dir.path(),
        "[flow]\nname = \"nonchars\"\n\n[[job]]\nname = \"odd-\u{fffe}\"\n\
         cmd = \"printf 'UVM_ERROR bad \\\\357\\\\277\\\\276 and \\\\357\\\\277\\\\277 end\\\\n'\"\n\
         fail_patterns = [\"^UVM_ERROR\"]\n",
        &["--observer", "junit"],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.reason("odd-\u{fffe}"),
        "fail pattern matched at line 1: UVM_ERROR bad \u{fffe} and \u{ffff} end",
        "{run:#?}"
    );
    let path = run.out.join("junit.xml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("junit.xml is not well-formed: {e}\n{text}"));
    let case = testcase(&doc, "odd-\u{fffd}", &text);
    let failure = case
        .children()
        .find(|n| n.has_tag_name("failure"))
        .unwrap_or_else(|| panic!("no <failure>:\n{text}"));
    assert_eq!(
        attr(failure, "message"),
        "fail pattern matched at line 1: UVM_ERROR bad \u{fffd} and \u{fffd} end"
    );
}

/// A failing line of 64 KiB (the host keeps that much of it) goes into the report cut to its
/// first 4 KiB: 20,000 such failures would otherwise make a report of over a gigabyte that CI
/// has to parse. The message (the reason, cut by the host) and the cut body both name it.
#[test]
fn a_64_kib_fail_line_is_cut_in_the_junit_report() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_flow(
        dir.path(),
        "[flow]\nname = \"long\"\n\n[[job]]\nname = \"long\"\n\
         cmd = \"printf 'UVM_ERROR '; head -c 70000 /dev/zero | tr '\\\\0' x; echo\"\n\
         fail_patterns = [\"^UVM_ERROR\"]\n",
        &["--observer", "junit"],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    let fail_text = run.job("long")["fail_text"].as_str().unwrap().to_string();
    assert!(fail_text.len() > 60_000, "results.json keeps the long line");
    let text = std::fs::read_to_string(run.out.join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let case = testcase(&doc, "long", &text);
    let failure = case.children().find(|n| n.has_tag_name("failure")).unwrap();
    let body = failure.text().unwrap_or("");
    assert!(
        body.contains(&fail_text[..4000]),
        "the body has the line's start: {}",
        &body[..body.len().min(300)]
    );
    assert!(body.len() < 4300, "the body is cut: {} bytes", body.len());
    assert!(
        body.contains("cut: the line has"),
        "{}",
        &body[body.len() - 200..]
    );
    assert!(
        text.len() < 10_000,
        "the whole report: {} bytes",
        text.len()
    );
}
