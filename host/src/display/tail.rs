//! The last lines of a job's log, for the summary, read so that no log can hang or flood it: a
//! regular file only (a FIFO or `/dev/zero` is refused, never read), opened without blocking,
//! at most a fixed number of bytes from its end, each line made printable and cut.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use super::format::{truncate, ELLIPSIS};

/// How much of a log's end is read: enough for a screenful of long lines.
pub const TAIL_BYTES: u64 = 16 * 1024;

/// What the summary shows of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The last lines, printable, cut.
    Lines(Vec<String>),
    /// The log could not be read, and why.
    Unreadable(String),
}

/// The last `lines` lines of the log at `path`, each cut to `max_width` columns.
pub fn read_tail(path: &Path, lines: usize, max_width: usize) -> Tail {
    match read_end(path) {
        Ok((bytes, from_start)) => Tail::Lines(last_lines(&bytes, from_start, lines, max_width)),
        Err(why) => Tail::Unreadable(why),
    }
}

/// The file's last [`TAIL_BYTES`], and whether they start at its beginning.
fn read_end(path: &Path) -> Result<(Vec<u8>, bool), String> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let len = meta.len();
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    // Bounded by the size seen now: a log still being written cannot keep us reading.
    Read::take(&mut f as &mut File, len - start)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok((bytes, start == 0))
}

/// The last `n` complete lines of `bytes`; the first line is dropped when the bytes start in
/// the middle of the file (it is most likely a part of a line).
fn last_lines(bytes: &[u8], from_start: bool, n: usize, max_width: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut all: Vec<&str> = text.split('\n').collect();
    if all.last() == Some(&"") {
        all.pop();
    }
    if !from_start && all.len() > 1 {
        all.remove(0);
    }
    let skip = all.len().saturating_sub(n);
    all[skip..]
        .iter()
        .map(|l| printable(l, max_width))
        .collect()
}

/// A log line as a terminal would show it, made safe to print: what a carriage return would
/// overwrite is dropped, escape sequences (colours, cursor moves) are removed, other control
/// characters become `?`, tabs a space; then it is cut to `max_width` columns.
pub fn printable(line: &str, max_width: usize) -> String {
    let line = line.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
    let mut out = String::with_capacity(line.len().min(max_width * 4));
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.peek() {
                // CSI: parameters and intermediates, then one final byte in @..~.
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC \).
                Some(']') => {
                    chars.next();
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => out.push('?'),
            },
            '\t' => out.push(' '),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
        // A 64 KiB line need not be cleaned whole to be cut.
        if out.len() > max_width * 4 + 8 {
            let mut cut = truncate(&out, max_width).into_owned();
            if !cut.ends_with(ELLIPSIS) {
                cut.push(ELLIPSIS);
            }
            return truncate(&cut, max_width).into_owned();
        }
    }
    truncate(&out, max_width).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_last_lines_of_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let want: Vec<String> = (21..=30).map(|i| format!("line {i}")).collect();
        assert_eq!(read_tail(&p, 10, 80), Tail::Lines(want));
        std::fs::write(&p, "").unwrap();
        assert_eq!(read_tail(&p, 10, 80), Tail::Lines(vec![]));
        std::fs::write(&p, "no newline at the end").unwrap();
        assert_eq!(
            read_tail(&p, 10, 80),
            Tail::Lines(vec!["no newline at the end".into()])
        );
    }

    #[test]
    fn a_huge_log_is_read_from_its_end_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut f = File::create(&p).unwrap();
        // 4 MiB of one line without a newline, then the end the user needs.
        f.write_all(&vec![b'x'; 4 << 20]).unwrap();
        f.write_all(b"\nsecond to last\nUVM_FATAL the end\n")
            .unwrap();
        drop(f);
        let Tail::Lines(lines) = read_tail(&p, 10, 60) else {
            panic!("unreadable")
        };
        assert_eq!(lines, vec!["second to last", "UVM_FATAL the end"]);
    }

    #[test]
    fn a_fifo_or_a_device_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Would block forever without O_NONBLOCK and the regular-file check.
        assert_eq!(
            read_tail(&fifo, 10, 80),
            Tail::Unreadable("not a regular file".into())
        );
        assert_eq!(
            read_tail(Path::new("/dev/zero"), 10, 80),
            Tail::Unreadable("not a regular file".into())
        );
        assert!(matches!(
            read_tail(&dir.path().join("missing"), 10, 80),
            Tail::Unreadable(_)
        ));
    }

    #[test]
    fn log_lines_are_made_printable_and_cut() {
        assert_eq!(printable("\x1b[1;31mERROR\x1b[0m: boom", 80), "ERROR: boom");
        assert_eq!(printable("10%\r50%\r100%", 80), "100%");
        assert_eq!(printable("done\r", 80), "done");
        assert_eq!(printable("a\tb\x07c\x1b]0;title\x07d", 80), "a b?cd");
        assert_eq!(printable("bell\x1bX", 80), "bell?X");
        assert_eq!(
            printable(&"y".repeat(65_536), 20),
            format!("{}…", "y".repeat(19))
        );
        assert_eq!(printable("short", 20), "short");
    }
}
