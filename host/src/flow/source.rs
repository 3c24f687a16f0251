//! Reading one flow file from disk without ever blocking or running out of memory on something
//! that is not a flow file.
//!
//! `include` can name anything: a FIFO (opening it for reading blocks until a writer comes, which
//! may be never), `/dev/zero` (reads never end), a directory, a 10 GB log. So the file is opened
//! with `O_NONBLOCK` (an open that cannot wait for a writer), then judged by `fstat` on the open
//! descriptor (no window between a check and the read), and read with a size cap. Only the root
//! file named on the command line may be a pipe (`flowrun check /dev/stdin`, `<(generate)`):
//! the user asked for it, and waiting for its writer is what they expect.

use std::{
    fmt,
    fs::OpenOptions,
    io::Read,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

/// The largest flow file flowrun reads. A `[[job]]` table costs about 2.6 KB of memory while the
/// TOML is parsed: a file this big holds 1.1 million hand-written jobs and `check` peaks at
/// 2.8 GiB (docs/benchmarks.md). Bigger flows are written as matrices.
pub(super) const MAX_FLOW_FILE_BYTES: u64 = 64 << 20;

/// Why a flow file could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// It is not a regular file (the text says what it is: "a FIFO", "a directory", ...).
    NotRegular(&'static str),
    /// It is larger than [`MAX_FLOW_FILE_BYTES`] (the size read or reported).
    TooLarge(u64),
    /// It is not UTF-8: the first bad byte, at a 1-based line and column (in characters); the
    /// text up to there and after it, with replacement characters, is kept for the message.
    NotUtf8 {
        byte: u8,
        line: u32,
        column: u32,
        lossy: String,
    },
    /// Opening or reading failed.
    Io(std::io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NotRegular(what) => write!(f, "it is {what}, not a regular file"),
            ReadError::TooLarge(size) => write!(
                f,
                "it is larger than the limit of {} MiB ({} bytes or more)",
                MAX_FLOW_FILE_BYTES >> 20,
                size
            ),
            ReadError::NotUtf8 {
                byte, line, column, ..
            } => write!(
                f,
                "it is not UTF-8 text: byte 0x{byte:02X} at line {line}, column {column}"
            ),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// What kind of file `file_type` is, when it is not a regular file.
fn describe(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads the flow file at `path`. `allow_pipe`: a FIFO or pipe is read (blocking until its
/// writer closes it); otherwise only regular files are.
pub(super) fn read_flow_file(path: &Path, allow_pipe: bool) -> Result<String, ReadError> {
    // A pipe the user named is opened the ordinary way: the open waits for its writer, and its
    // data is read to the end. Anything else is opened non-blocking, so that a FIFO that took
    // the path's place since the `stat` cannot block the open either.
    let pipe = allow_pipe
        && std::fs::metadata(path)
            .map_err(ReadError::Io)?
            .file_type()
            .is_fifo();
    let flags = if pipe {
        libc::O_NOCTTY
    } else {
        libc::O_NONBLOCK | libc::O_NOCTTY
    };
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(ReadError::Io)?;
    // Judged on the open descriptor: what is read is what was checked.
    let meta = file.metadata().map_err(ReadError::Io)?;
    let file_type = meta.file_type();
    let mut capacity = 0;
    if file_type.is_file() {
        if meta.len() > MAX_FLOW_FILE_BYTES {
            return Err(ReadError::TooLarge(meta.len()));
        }
        capacity = meta.len() as usize;
    } else if !(pipe && file_type.is_fifo()) {
        return Err(ReadError::NotRegular(describe(file_type)));
    }
    let mut bytes = Vec::with_capacity(capacity);
    // One byte over the cap tells "too large" from "exactly at the cap" (the file may also grow
    // between the fstat and the read).
    (&mut file)
        .take(MAX_FLOW_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FLOW_FILE_BYTES {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| not_utf8(e.into_bytes()))
}

/// Where the first invalid byte of `bytes` is.
fn not_utf8(bytes: Vec<u8>) -> ReadError {
    let valid_up_to = match std::str::from_utf8(&bytes) {
        Ok(_) => bytes.len(),
        Err(e) => e.valid_up_to(),
    };
    // `valid_up_to` is in bounds: it is where the valid prefix ends.
    let valid = std::str::from_utf8(&bytes[..valid_up_to]).unwrap_or_default();
    let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
    let line = valid.matches('\n').count() + 1;
    let column = valid[line_start..].chars().count() + 1;
    ReadError::NotUtf8 {
        byte: bytes.get(valid_up_to).copied().unwrap_or(0),
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
        lossy: String::from_utf8_lossy(&bytes).into_owned(),
    }
}
