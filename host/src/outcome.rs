//! Deciding a job's outcome from its log: fail patterns (any match fails the job) and pass
//! patterns (each must match some line).
//!
//! Logs are streamed line by line through a bounded buffer, so multi-gigabyte logs are fine;
//! lines longer than [`MAX_LINE_BYTES`] are matched on their first [`MAX_LINE_BYTES`] bytes.

use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
};

use crate::flow::Patterns;

/// Lines are cut to this many bytes before matching (the rest of the line is skipped).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How many lines after a fail match are kept as context.
pub const CONTEXT_LINES: usize = 4;

/// What the log says about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogVerdict {
    /// No fail pattern matched and every pass pattern did (or there are no patterns).
    Clean,
    /// A fail pattern matched: the first matching line of the logs.
    FailMatched {
        /// 1-based line number, within the log file where it matched.
        line: u64,
        /// The matching line (without its line ending).
        text: String,
        /// Up to [`CONTEXT_LINES`] lines that follow it.
        context: Vec<String>,
        /// The source of the (first, in declaration order) fail pattern that matched the line.
        pattern: String,
    },
    /// No fail pattern matched, but this pass pattern (the first one in declaration order that
    /// never matched) matched no line.
    PassMissing {
        /// The pattern's source.
        pattern: String,
    },
    /// A log could not be read: "cannot read log PATH: ...".
    Unreadable(String),
}

/// Scans the job's logs, in order, against `patterns`.
///
/// The first fail match (first file, first line) wins; pass patterns may match in any of the
/// files. With no patterns at all, the logs are not read and the verdict is [`LogVerdict::Clean`].
pub fn scan_logs(paths: &[PathBuf], patterns: &Patterns) -> LogVerdict {
    if patterns.is_empty() {
        return LogVerdict::Clean;
    }
    let mut pass_matched = vec![false; patterns.pass.len()];
    let mut pass_left = patterns.pass.len();
    for path in paths {
        match scan_one(path, patterns, &mut pass_matched, &mut pass_left) {
            Ok(None) => {}
            Ok(Some(verdict)) => return verdict,
            Err(e) => {
                return LogVerdict::Unreadable(format!("cannot read log {}: {e}", path.display()))
            }
        }
    }
    match pass_matched.iter().position(|m| !m) {
        Some(i) => LogVerdict::PassMissing {
            pattern: patterns.pass[i].as_str().to_string(),
        },
        None => LogVerdict::Clean,
    }
}

/// Scans one file; `Some(verdict)` on a fail match.
fn scan_one(
    path: &Path,
    patterns: &Patterns,
    pass_matched: &mut [bool],
    pass_left: &mut usize,
) -> io::Result<Option<LogVerdict>> {
    let mut reader = LineReader::new(BufReader::with_capacity(256 * 1024, File::open(path)?));
    let check_fail = !patterns.fail.is_empty();
    let mut number = 0u64;
    while reader.next_line()? {
        number += 1;
        let line = String::from_utf8_lossy(reader.line());
        if check_fail && patterns.fail.is_match(&line) {
            let index = patterns.fail.matches(&line).iter().next().unwrap_or(0);
            let text = line.into_owned();
            let mut context = Vec::with_capacity(CONTEXT_LINES);
            while context.len() < CONTEXT_LINES && reader.next_line()? {
                context.push(String::from_utf8_lossy(reader.line()).into_owned());
            }
            let pattern = patterns
                .fail_sources
                .get(index)
                .cloned()
                .unwrap_or_default();
            return Ok(Some(LogVerdict::FailMatched {
                line: number,
                text,
                context,
                pattern,
            }));
        }
        if *pass_left > 0 {
            for (regex, matched) in patterns.pass.iter().zip(pass_matched.iter_mut()) {
                if !*matched && regex.is_match(&line) {
                    *matched = true;
                    *pass_left -= 1;
                }
            }
        }
        if !check_fail && *pass_left == 0 {
            break; // Nothing left to look for.
        }
    }
    Ok(None)
}

/// Reads lines into one reusable buffer, capped at [`MAX_LINE_BYTES`], without the line ending.
struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: Vec::with_capacity(1024),
        }
    }

    fn line(&self) -> &[u8] {
        &self.buf
    }

    /// Reads the next line; `false` at the end of the input.
    fn next_line(&mut self) -> io::Result<bool> {
        self.buf.clear();
        let mut any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                break;
            }
            any = true;
            let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            let room = MAX_LINE_BYTES - self.buf.len();
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.inner.consume(used);
            if done {
                break;
            }
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write, sync::Arc};

    use regex::{Regex, RegexSet};

    use super::*;

    fn patterns(pass: &[&str], fail: &[&str]) -> Arc<Patterns> {
        Arc::new(Patterns {
            pass: pass.iter().map(|p| Regex::new(p).unwrap()).collect(),
            fail: RegexSet::new(fail).unwrap(),
            fail_sources: fail.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn log(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn clean_when_pass_matches_and_no_fail() {
        let dir = tempfile::tempdir().unwrap();
        let p = log(dir.path(), "a.log", b"start\nall good\nTEST PASSED\n");
        let verdict = scan_logs(&[p], &patterns(&["^TEST PASSED$"], &["^UVM_(ERROR|FATAL)"]));
        assert_eq!(verdict, LogVerdict::Clean);
    }

    #[test]
    fn first_fail_match_wins_with_context() {
        let dir = tempfile::tempdir().unwrap();
        let p = log(
            dir.path(),
            "a.log",
            b"l1\nl2\nUVM_FATAL @ 10: dead\nc1\r\nc2\nc3\nc4\nc5\nUVM_ERROR later\n",
        );
        let verdict = scan_logs(
            &[p],
            &patterns(&["^TEST PASSED$"], &["^UVM_ERROR", "^UVM_FATAL"]),
        );
        assert_eq!(
            verdict,
            LogVerdict::FailMatched {
                line: 3,
                text: "UVM_FATAL @ 10: dead".into(),
                context: vec!["c1".into(), "c2".into(), "c3".into(), "c4".into()],
                pattern: "^UVM_FATAL".into(),
            }
        );
    }

    #[test]
    fn lowest_pattern_index_names_a_line_matching_several() {
        let dir = tempfile::tempdir().unwrap();
        let p = log(dir.path(), "a.log", b"ok\nError: UVM_ERROR\n");
        let verdict = scan_logs(&[p], &patterns(&[], &["UVM_ERROR", "Error"]));
        match verdict {
            LogVerdict::FailMatched {
                line,
                pattern,
                context,
                ..
            } => {
                assert_eq!((line, pattern.as_str()), (2, "UVM_ERROR"));
                assert!(context.is_empty());
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn fail_beats_missing_pass_and_context_is_short_at_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = log(dir.path(), "a.log", b"a\nERROR x\nb");
        match scan_logs(&[p], &patterns(&["never"], &["ERROR"])) {
            LogVerdict::FailMatched {
                line,
                text,
                context,
                ..
            } => {
                assert_eq!((line, text.as_str()), (2, "ERROR x"));
                assert_eq!(context, ["b"]);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn first_missing_pass_pattern_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = log(dir.path(), "a.log", b"phase one done\n");
        let verdict = scan_logs(
            &[p],
            &patterns(&["phase one", "phase two", "phase three"], &["ERROR"]),
        );
        assert_eq!(
            verdict,
            LogVerdict::PassMissing {
                pattern: "phase two".into()
            }
        );
    }

    #[test]
    fn pass_patterns_may_match_in_any_log_and_fail_line_is_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path(), "out.log", b"phase one\n");
        let b = log(dir.path(), "err.log", b"phase two\n");
        let pats = patterns(&["phase one", "phase two"], &["FAIL"]);
        assert_eq!(scan_logs(&[a.clone(), b.clone()], &pats), LogVerdict::Clean);
        let c = log(dir.path(), "c.log", b"x\nFAIL here\n");
        match scan_logs(&[a, b, c], &pats) {
            LogVerdict::FailMatched { line, .. } => assert_eq!(line, 2),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn missing_log_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.log");
        match scan_logs(std::slice::from_ref(&missing), &patterns(&["x"], &[])) {
            LogVerdict::Unreadable(message) => {
                assert!(
                    message.starts_with(&format!("cannot read log {}: ", missing.display())),
                    "{message}"
                );
            }
            v => panic!("{v:?}"),
        }
        // With no patterns, logs are not read at all.
        assert_eq!(
            scan_logs(&[missing], &patterns(&[], &[])),
            LogVerdict::Clean
        );
    }

    #[test]
    fn invalid_utf8_is_lossy_and_crlf_is_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let p = log(
            dir.path(),
            "a.log",
            b"\xff\xfe bad bytes\r\nERROR \xc3\x28 here\r\n",
        );
        match scan_logs(&[p], &patterns(&["bad bytes$"], &["^ERROR .* here$"])) {
            LogVerdict::FailMatched { line, text, .. } => {
                assert_eq!(line, 2);
                assert_eq!(text, "ERROR \u{fffd}( here");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn very_long_lines_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = Vec::new();
        text.extend_from_slice(b"START ");
        text.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE_BYTES));
        text.extend_from_slice(b" TAIL_ERROR\nnext\nERROR real\n");
        let p = log(dir.path(), "a.log", &text);
        match scan_logs(&[p], &patterns(&["^START x+$"], &["ERROR"])) {
            LogVerdict::FailMatched { line, text, .. } => {
                // The error beyond the cap on line 1 is not seen; line numbering continues.
                assert_eq!((line, text.as_str()), (3, "ERROR real"));
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn large_log_streams() {
        // 200 MB in release builds; smaller in debug builds, where regex matching is slow.
        let target: u64 = if cfg!(debug_assertions) {
            24 << 20
        } else {
            200 << 20
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let mut out = std::io::BufWriter::new(File::create(&path).unwrap());
        let mut written = 0u64;
        let mut lines = 0u64;
        while written < target {
            let line = format!("UVM_INFO @ {lines}: sequence item {lines} sent, all fine so far\n");
            out.write_all(line.as_bytes()).unwrap();
            written += line.len() as u64;
            lines += 1;
            if lines == 1000 {
                out.write_all(b"TEST PASSED\n").unwrap();
                lines += 1;
            }
        }
        out.write_all(b"UVM_ERROR @ end: scoreboard mismatch\nsummary 1\n")
            .unwrap();
        out.flush().unwrap();
        drop(out);
        match scan_logs(
            std::slice::from_ref(&path),
            &patterns(&["^TEST PASSED$"], &["^UVM_(ERROR|FATAL)"]),
        ) {
            LogVerdict::FailMatched {
                line,
                text,
                context,
                ..
            } => {
                assert_eq!(line, lines + 1);
                assert_eq!(text, "UVM_ERROR @ end: scoreboard mismatch");
                assert_eq!(context, ["summary 1"]);
            }
            v => panic!("{v:?}"),
        }
        let verdict = scan_logs(
            &[path],
            &patterns(&["^TEST PASSED$", "^UVM_ERROR @ end"], &["^UVM_FATAL"]),
        );
        assert_eq!(verdict, LogVerdict::Clean);
    }
}
