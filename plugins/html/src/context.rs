//! The lines of a failed job's log that the report shows under its bucket entry: for a
//! fail-pattern match, the matched line and the 4 after it (what results.json calls
//! `fail_context`); otherwise the log's last 10 lines, where a crash or an exit usually says
//! why. Read once, when the job's final status arrives (the host has finished with the log by
//! then), within fixed bounds so that a huge log or a huge run cannot blow the report up.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    path::Path,
};

/// Lines after a fail-pattern match, as results.json's `fail_context`.
const AFTER_MATCH: usize = 4;
/// Lines of the log's tail otherwise.
const TAIL_LINES: usize = 10;
/// How far into a log the matched line is looked for.
const MAX_SCAN_BYTES: u64 = 64 << 20;
/// How much of a log's end is read for its tail.
const TAIL_BYTES: u64 = 8 << 10;
/// Longest line kept, in characters.
const MAX_LINE_CHARS: usize = 300;

/// Lines shown for one job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Context {
    /// The 1-based number of the first line, when known.
    pub first_line: Option<u64>,
    /// The lines, cleaned for display.
    pub lines: Vec<String>,
}

impl Context {
    /// An estimate of the bytes it adds to the report.
    pub fn weight(&self) -> usize {
        self.lines.iter().map(|l| l.len() + 4).sum::<usize>() + 16
    }
}

/// Reads the context of a job whose log is `log`; `fail_line` is the matched line, if any.
/// `None` when the log cannot be read or holds nothing to show.
pub fn read(log: &Path, fail_line: Option<u64>) -> Option<Context> {
    // A job can put anything at its log's path: a FIFO nobody writes to would block the read
    // (and with it the observer) for good.
    let file = flowrun_plugin_sdk::fs::open_regular_file(log).ok()?;
    let context = match fail_line {
        Some(n) if n >= 1 => after_match(file, n),
        _ => tail(file),
    }?;
    (!context.lines.is_empty()).then_some(context)
}

fn after_match(file: File, line: u64) -> Option<Context> {
    let mut reader = BufReader::new(file.take(MAX_SCAN_BYTES));
    let mut buf = Vec::new();
    let mut number = 0u64;
    let mut lines = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).ok()? == 0 {
            break;
        }
        number += 1;
        if number >= line {
            lines.push(clean(&buf));
            if lines.len() > AFTER_MATCH {
                break;
            }
        }
    }
    Some(Context {
        first_line: Some(line),
        lines,
    })
}

fn tail(mut file: File) -> Option<Context> {
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut bytes).ok()?;
    let mut text: &[u8] = &bytes;
    if start > 0 {
        // The first line read is cut: drop it.
        let cut = text
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |p| p + 1);
        text = &text[cut..];
    }
    if text.last() == Some(&b'\n') {
        text = &text[..text.len() - 1];
    }
    if text.is_empty() {
        return Some(Context {
            first_line: None,
            lines: Vec::new(),
        });
    }
    let all: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let keep = &all[all.len().saturating_sub(TAIL_LINES)..];
    Some(Context {
        first_line: None,
        lines: keep.iter().map(|l| clean(l)).collect(),
    })
}

/// A log line as text to show: lossy UTF-8, no line ending, terminal colour codes removed,
/// other control characters as `?`, at most [`MAX_LINE_CHARS`] characters.
fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\n', '\r']);
    let mut out = String::with_capacity(text.len().min(MAX_LINE_CHARS + 3));
    let mut chars = text.chars().peekable();
    let mut kept = 0;
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences (colours, cursor moves): ESC [ params final-byte.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        if kept == MAX_LINE_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() && c != '\t' { '?' } else { c });
        kept += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn a_pattern_match_shows_the_line_and_the_four_after_it() {
        let f = log("a\nb\nUVM_ERROR bad\nc\nd\ne\nf\ng\n");
        let c = read(f.path(), Some(3)).unwrap();
        assert_eq!(c.first_line, Some(3));
        assert_eq!(c.lines, ["UVM_ERROR bad", "c", "d", "e", "f"]);
        // A match near the end shows what there is.
        let c = read(f.path(), Some(7)).unwrap();
        assert_eq!(c.lines, ["f", "g"]);
    }

    #[test]
    fn other_failures_show_the_last_ten_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let c = read(log(&text).path(), None).unwrap();
        assert_eq!(c.first_line, None);
        let want: Vec<String> = (21..=30).map(|i| format!("line {i}")).collect();
        assert_eq!(c.lines, want);
        assert_eq!(read(log("").path(), None), None);
        assert_eq!(read(Path::new("/nonexistent/x.log"), None), None);
    }

    #[test]
    fn the_tail_of_a_large_log_is_read_from_its_end() {
        let text = format!("{}\nlast words\n", "x".repeat(100_000));
        let c = read(log(&text).path(), None).unwrap();
        assert_eq!(c.lines, ["last words"], "the cut first line is dropped");
    }

    #[test]
    fn lines_are_cleaned_for_display() {
        let long = "y".repeat(400);
        let f = log(&format!("\u{1b}[31mred\u{1b}[0m text\u{7}\r\n{long}\n"));
        let c = read(f.path(), Some(1)).unwrap();
        assert_eq!(c.lines[0], "red text?");
        assert_eq!(c.lines[1].chars().count(), MAX_LINE_CHARS + 1);
        assert!(c.lines[1].ends_with('…'));
    }
}
