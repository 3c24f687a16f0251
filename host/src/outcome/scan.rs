//! Scanning a job's logs for its fail patterns (any match fails the job) and pass patterns
//! (each must match some line).
//!
//! Logs are streamed line by line through a bounded buffer, so multi-gigabyte logs are fine;
//! lines longer than [`MAX_LINE_BYTES`] are matched on their first [`MAX_LINE_BYTES`] bytes.
//! Only regular files are read (a FIFO would block, `/dev/zero` never ends), each up to the
//! size it had when the scan began (a process that escaped the job may keep writing), and the
//! whole scan stops at a time limit: a scan always ends, and a log that could not be judged
//! fails the job rather than pass it.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read},
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::flow::Patterns;

/// Lines are cut to this many bytes before matching (the rest of the line is skipped).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How many lines after a fail match are kept as context.
pub const CONTEXT_LINES: usize = 4;

/// How long the scan of one job's logs may take before the job fails "cannot read log: the
/// scan did not finish within 10m" (a 2 GiB log takes seconds).
pub const SCAN_TIME_LIMIT: Duration = Duration::from_secs(600);

/// How many lines are read between two looks at the clock.
const LINES_PER_CLOCK_READ: u64 = 4096;

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
    /// A log could not be judged: why, without the path (the reasons of many jobs group).
    Unreadable(String),
}

/// Scans the job's logs, in order, against `patterns`, for at most `time_limit`.
///
/// The first fail match (first file, first line) wins; pass patterns may match in any of the
/// files. With no patterns at all, the logs are not read and the verdict is [`LogVerdict::Clean`].
pub fn scan_logs(paths: &[PathBuf], patterns: &Patterns, time_limit: Duration) -> LogVerdict {
    if patterns.is_empty() {
        return LogVerdict::Clean;
    }
    let deadline = Instant::now().checked_add(time_limit);
    let mut pass_matched = vec![false; patterns.pass.len()];
    let mut pass_left = patterns.pass.len();
    for path in paths {
        let mut scan = Scan {
            patterns,
            pass_matched: &mut pass_matched,
            pass_left: &mut pass_left,
            deadline,
            time_limit,
        };
        match scan.one(path) {
            Ok(None) => {}
            Ok(Some(verdict)) => return verdict,
            Err(why) => return LogVerdict::Unreadable(why),
        }
    }
    match pass_matched.iter().position(|m| !m) {
        Some(i) => LogVerdict::PassMissing {
            pattern: patterns.pass[i].as_str().to_string(),
        },
        None => LogVerdict::Clean,
    }
}

/// Opens a log for reading without blocking on a FIFO, and refuses anything but a regular
/// file. Returns the file and its size now.
fn open_regular(path: &Path) -> Result<(File, u64), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let t = meta.file_type();
    if !t.is_file() {
        let what = if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_dir() {
            "a directory"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(format!("not a regular file ({what})"));
    }
    Ok((file, meta.len()))
}

/// One scan's state across the job's log files.
struct Scan<'a> {
    patterns: &'a Patterns,
    pass_matched: &'a mut [bool],
    pass_left: &'a mut usize,
    deadline: Option<Instant>,
    time_limit: Duration,
}

impl Scan<'_> {
    fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Scans one file; `Some(verdict)` on a fail match.
    fn one(&mut self, path: &Path) -> Result<Option<LogVerdict>, String> {
        let (file, size) = open_regular(path)?;
        let mut reader = LineReader::new(BufReader::with_capacity(256 * 1024, file.take(size)));
        let io_error = |e: io::Error| e.to_string();
        let patterns = self.patterns;
        let check_fail = !patterns.fail.is_empty();
        let mut number = 0u64;
        while reader.next_line().map_err(io_error)? {
            number += 1;
            if number % LINES_PER_CLOCK_READ == 0 && self.out_of_time() {
                return Err(format!(
                    "the scan did not finish within {}",
                    humantime::format_duration(self.time_limit)
                ));
            }
            let line = String::from_utf8_lossy(reader.line());
            if check_fail && patterns.fail.is_match(&line) {
                let index = patterns.fail.matches(&line).iter().next().unwrap_or(0);
                let text = line.into_owned();
                let mut context = Vec::with_capacity(CONTEXT_LINES);
                while context.len() < CONTEXT_LINES && reader.next_line().map_err(io_error)? {
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
            if *self.pass_left > 0 {
                for (regex, matched) in patterns.pass.iter().zip(self.pass_matched.iter_mut()) {
                    if !*matched && regex.is_match(&line) {
                        *matched = true;
                        *self.pass_left -= 1;
                    }
                }
            }
            if !check_fail && *self.pass_left == 0 {
                break; // Nothing left to look for.
            }
        }
        Ok(None)
    }
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

    fn scan(paths: &[PathBuf], patterns: &Patterns) -> LogVerdict {
        scan_logs(paths, patterns, SCAN_TIME_LIMIT)
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
        let verdict = scan(&[p], &patterns(&["^TEST PASSED$"], &["^UVM_(ERROR|FATAL)"]));
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
        let verdict = scan(
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
        let verdict = scan(&[p], &patterns(&[], &["UVM_ERROR", "Error"]));
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
        match scan(&[p], &patterns(&["never"], &["ERROR"])) {
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
        let verdict = scan(
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
        assert_eq!(scan(&[a.clone(), b.clone()], &pats), LogVerdict::Clean);
        let c = log(dir.path(), "c.log", b"x\nFAIL here\n");
        match scan(&[a, b, c], &pats) {
            LogVerdict::FailMatched { line, .. } => assert_eq!(line, 2),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn missing_log_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.log");
        match scan(std::slice::from_ref(&missing), &patterns(&["x"], &[])) {
            LogVerdict::Unreadable(message) => {
                // The path is the job's `log`, not part of the reason: reasons group.
                assert_eq!(message, "No such file or directory (os error 2)");
            }
            v => panic!("{v:?}"),
        }
        // With no patterns, logs are not read at all.
        assert_eq!(scan(&[missing], &patterns(&[], &[])), LogVerdict::Clean);
    }

    #[test]
    fn invalid_utf8_is_lossy_and_crlf_is_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let p = log(
            dir.path(),
            "a.log",
            b"\xff\xfe bad bytes\r\nERROR \xc3\x28 here\r\n",
        );
        match scan(&[p], &patterns(&["bad bytes$"], &["^ERROR .* here$"])) {
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
        match scan(&[p], &patterns(&["^START x+$"], &["ERROR"])) {
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
        match scan(
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
        let verdict = scan(
            &[path],
            &patterns(&["^TEST PASSED$", "^UVM_ERROR @ end"], &["^UVM_FATAL"]),
        );
        assert_eq!(verdict, LogVerdict::Clean);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("output.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Nobody writes to the FIFO: opening it to read would block forever.
        assert_eq!(
            scan(&[fifo], &patterns(&["PASS"], &[])),
            LogVerdict::Unreadable("not a regular file (a FIFO)".into())
        );
    }

    #[test]
    fn a_link_to_dev_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("output.log");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert_eq!(
            scan(&[link], &patterns(&[], &["ERROR"])),
            LogVerdict::Unreadable("not a regular file (a character device)".into())
        );
    }

    /// Whether this process has `path` open on some descriptor (as the scanner does).
    fn opened_by_this_process(path: &Path) -> bool {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
    }

    #[test]
    fn a_log_is_read_up_to_its_size_when_the_scan_began() {
        let dir = tempfile::tempdir().unwrap();
        let line = format!("{}\n", "x".repeat(4095));
        let p = dir.path().join("a.log");
        // A writer that escaped the job appends far faster than lines are matched: a scan to
        // the end of the file would never end. It starts once the scanner has the file open,
        // so that how late the scanner thread got the CPU does not decide how much there is
        // to read (on a loaded machine that made the scan itself run out of time). A scan that
        // ends before it is seen holding the file proves nothing: try again with a longer log.
        let mut lines = 64;
        let rx = loop {
            std::fs::write(&p, line.repeat(lines)).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let scanned = p.clone();
            std::thread::spawn(move || {
                let _ = tx.send(scan(&[scanned], &patterns(&["^never$"], &[])));
            });
            let seen_open = loop {
                if opened_by_this_process(&p) {
                    break true;
                }
                if rx.try_recv().is_ok() {
                    break false;
                }
                std::thread::yield_now();
            };
            if seen_open {
                break rx;
            }
            assert!(lines < 32_768, "never saw the scanner hold the log open");
            lines *= 8;
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
                let chunk = line.repeat(16);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    f.write_all(chunk.as_bytes()).unwrap();
                }
            })
        };
        let verdict = rx.recv_timeout(Duration::from_secs(60));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert_eq!(
            verdict.expect("the scan ended"),
            LogVerdict::PassMissing {
                pattern: "^never$".into()
            }
        );
    }

    #[test]
    fn a_scan_past_its_time_limit_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let text = "fine\n".repeat(3 * LINES_PER_CLOCK_READ as usize);
        let p = log(dir.path(), "a.log", text.as_bytes());
        assert_eq!(
            scan_logs(&[p], &patterns(&["never"], &["ERROR"]), Duration::ZERO),
            LogVerdict::Unreadable("the scan did not finish within 0s".into())
        );
    }
}
