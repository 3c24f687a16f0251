//! The watchdog process's code (see [`crate::spawn::watchdog`]): it runs in a fork of the
//! multi-threaded host, where only async-signal-safe work is allowed.
//!
//! **Before editing, read `docs/design/local-spawn.md`**: the rules of the spawn child apply
//! here too (raw system calls only, no allocation, no lock, no panicking path; the lints of
//! `fenced/mod.rs` fence this module). Memory beyond the stack comes from `mmap` directly.

use std::os::fd::RawFd;

use syscalls::{syscall, Sysno};

use super::raw::{default_signal_actions, exit, sleep_ms, unblock_signals};
use crate::spawn::watchdog::{OP_BYE, OP_JOB_ENDED, OP_JOB_STARTED, RECORD_LEN};

/// The longest tag needle (`-<pid>.<instance>-`).
pub(in crate::spawn) const NEEDLE_MAX: usize = 48;
/// The environment entry that tags a job's processes.
const TAG_PREFIX: &[u8] = b"FLOWRUN_JOB_TAG=";
/// Kill rounds after the host died: each kills what it finds, and the watchdog exits after
/// the first round (past the second) that finds nothing.
const KILL_ROUNDS: u32 = 25;
const ROUND_PAUSE_MS: u64 = 40;

/// Everything the watchdog needs, prepared by the host before the fork.
pub(in crate::spawn) struct WatchdogArgs {
    /// The read end of the pipe (every other descriptor, the write end among them, is
    /// closed here).
    pub rx: RawFd,
    /// `cgroup.kill` of the backend's cgroup directory, or -1.
    pub cgroup_kill: RawFd,
    /// Another descriptor to keep open (the backend cgroup's lock), or -1.
    pub keep: RawFd,
    pub needle: [u8; NEEDLE_MAX],
    pub needle_len: usize,
    pub host_pid: libc::pid_t,
}

/// The watchdog: waits for the host's end, then kills. Never returns.
pub(in crate::spawn) fn run(a: &WatchdogArgs) -> ! {
    // Default actions for every signal (the host's handlers are not ours to run), then its
    // own session, away from the terminal's signals and the host's process group.
    default_signal_actions();
    // SAFETY: no memory arguments.
    let _ = unsafe { syscall!(Sysno::setsid) };
    let name = b"flowrun-watchdog\0";
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    let _ = unsafe { syscall!(Sysno::prctl, libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    // SAFETY: a static NUL-terminated path.
    if let Ok(null) = unsafe {
        syscall!(
            Sysno::openat,
            libc::AT_FDCWD,
            c"/dev/null".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC
        )
    } {
        for target in 0..3 {
            // SAFETY: no memory arguments.
            let _ = unsafe { syscall!(Sysno::dup3, null, target, 0) };
        }
    }
    close_all_but(&[a.rx, a.cgroup_kill, a.keep]);
    unblock_signals();

    let mut table = PidTable::new();
    let mut buf = [0u8; 4096];
    let mut pending = [0u8; RECORD_LEN];
    let mut pending_len: usize = 0;
    loop {
        // SAFETY: reads into a local buffer of the given length.
        let n = match unsafe { syscall!(Sysno::read, a.rx, buf.as_mut_ptr(), buf.len()) } {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.into_raw() == libc::EINTR => continue,
            Err(_) => break,
        };
        for &byte in buf.get(..n).unwrap_or(&[]) {
            if let Some(slot) = pending.get_mut(pending_len) {
                *slot = byte;
                pending_len = pending_len.saturating_add(1);
            }
            if pending_len == RECORD_LEN {
                pending_len = 0;
                let (op, pid) = decode(&pending);
                match op {
                    OP_JOB_STARTED => table.add(pid),
                    OP_JOB_ENDED => table.remove(pid),
                    OP_BYE => exit(0),
                    _ => {}
                }
            }
        }
    }
    // The host is gone without saying goodbye.
    let needle = a.needle.get(..a.needle_len).unwrap_or(&[]);
    let mut round: u32 = 0;
    while round < KILL_ROUNDS {
        if a.cgroup_kill >= 0 {
            // SAFETY: writes one byte from a static string.
            let _ = unsafe { syscall!(Sysno::write, a.cgroup_kill, b"1".as_ptr(), 1) };
        }
        for &pgid in table.pids() {
            // SAFETY: no memory arguments.
            let _ = unsafe { syscall!(Sysno::kill, pgid.wrapping_neg(), libc::SIGKILL) };
        }
        let found = scan_and_kill(&table, needle, a.host_pid);
        if found == 0 && round >= 1 {
            break;
        }
        sleep_ms(ROUND_PAUSE_MS);
        round = round.saturating_add(1);
    }
    exit(0)
}

fn decode(record: &[u8; RECORD_LEN]) -> (u32, libc::pid_t) {
    let [a, b, c, d, e, f, g, h] = *record;
    (
        u32::from_le_bytes([a, b, c, d]),
        i32::from_le_bytes([e, f, g, h]),
    )
}

/// Closes every descriptor but 0, 1, 2 and `keep` (entries of -1 are ignored).
fn close_all_but(keep: &[RawFd]) {
    let mut from: u32 = 3;
    loop {
        // The lowest kept fd at or above `from`.
        let next = keep
            .iter()
            .filter_map(|&fd| u32::try_from(fd).ok())
            .filter(|&fd| fd >= from)
            .min();
        let Some(next) = next else {
            // SAFETY: no memory arguments.
            if unsafe { syscall!(Sysno::close_range, from, u32::MAX, 0) }.is_err() {
                // Before Linux 5.9: one by one, as far as a usual limit.
                let mut fd = from;
                while fd < 65_536 {
                    // SAFETY: no memory arguments.
                    let _ = unsafe { syscall!(Sysno::close, fd) };
                    fd = fd.saturating_add(1);
                }
            }
            return;
        };
        if next > from {
            // SAFETY: no memory arguments.
            let _ = unsafe { syscall!(Sysno::close_range, from, next.saturating_sub(1), 0) };
        }
        from = next.saturating_add(1);
    }
}

/// The process groups the host announced, in memory from `mmap` (no allocator here).
struct PidTable {
    ptr: *mut libc::pid_t,
    cap: usize,
    len: usize,
}

impl PidTable {
    fn new() -> PidTable {
        PidTable {
            ptr: std::ptr::null_mut(),
            cap: 0,
            len: 0,
        }
    }

    fn pids(&self) -> &[libc::pid_t] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: `len <= cap` initialised entries at `ptr`, mapped by `grow`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn pids_mut(&mut self) -> &mut [libc::pid_t] {
        if self.ptr.is_null() {
            return &mut [];
        }
        // SAFETY: as in `pids`, and `&mut self` is the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn add(&mut self, pid: libc::pid_t) {
        if self.len == self.cap && !self.grow() {
            return; // out of memory: the /proc scan by tag remains
        }
        // SAFETY: `len < cap` after `grow`: inside the mapping.
        unsafe { self.ptr.add(self.len).write(pid) };
        self.len = self.len.saturating_add(1);
    }

    fn remove(&mut self, pid: libc::pid_t) {
        let len = self.len;
        let pids = self.pids_mut();
        if let Some(i) = pids.iter().position(|&p| p == pid) {
            pids.swap(i, len.saturating_sub(1));
            self.len = len.saturating_sub(1);
        }
    }

    /// Doubles the mapping (16,384 entries first).
    fn grow(&mut self) -> bool {
        let entry = std::mem::size_of::<libc::pid_t>();
        let new_cap = if self.cap == 0 {
            16_384
        } else {
            self.cap.saturating_mul(2)
        };
        let Some(new_bytes) = new_cap.checked_mul(entry) else {
            return false;
        };
        // SAFETY: a fresh anonymous mapping, or a remap of ours (the old entries move with it).
        let mapped = unsafe {
            if self.ptr.is_null() {
                syscall!(
                    Sysno::mmap,
                    0,
                    new_bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    usize::MAX, // fd -1
                    0
                )
            } else {
                syscall!(
                    Sysno::mremap,
                    self.ptr,
                    self.cap.saturating_mul(entry),
                    new_bytes,
                    libc::MREMAP_MAYMOVE
                )
            }
        };
        match mapped {
            Ok(addr) => {
                self.ptr = addr as *mut libc::pid_t;
                self.cap = new_cap;
                true
            }
            Err(_) => false,
        }
    }
}

/// One pass over /proc: SIGKILL to every process in one of the table's sessions or process
/// groups, or carrying a tag that ends with `needle` and a job id. Returns how many.
fn scan_and_kill(table: &PidTable, needle: &[u8], host_pid: libc::pid_t) -> usize {
    // SAFETY: getpid has no arguments.
    let me = unsafe { syscall!(Sysno::getpid) }.map_or(0, |p| p as libc::pid_t);
    // SAFETY: a static NUL-terminated path.
    let Ok(dir) = (unsafe {
        syscall!(
            Sysno::openat,
            libc::AT_FDCWD,
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC
        )
    }) else {
        return 0;
    };
    let mut killed: usize = 0;
    let mut entries = [0u8; 16 * 1024];
    loop {
        // SAFETY: fills a local buffer of the given length with dirents.
        let n = match unsafe {
            syscall!(Sysno::getdents64, dir, entries.as_mut_ptr(), entries.len())
        } {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut at: usize = 0;
        while at < n {
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
            let reclen = entries
                .get(at.saturating_add(16)..at.saturating_add(18))
                .map_or(0, |b| {
                    u16::from_ne_bytes([
                        b.first().copied().unwrap_or(0),
                        b.get(1).copied().unwrap_or(0),
                    ]) as usize
                });
            if reclen == 0 {
                break;
            }
            let name = entries
                .get(at.saturating_add(19)..at.saturating_add(reclen).min(n))
                .unwrap_or(&[]);
            at = at.saturating_add(reclen);
            let Some(pid) = parse_pid(name) else {
                continue;
            };
            if pid == me || pid == host_pid {
                continue;
            }
            if belongs(pid, table, needle) {
                // SAFETY: no memory arguments.
                let _ = unsafe { syscall!(Sysno::kill, pid, libc::SIGKILL) };
                killed = killed.saturating_add(1);
            }
        }
    }
    // SAFETY: closes our own descriptor.
    let _ = unsafe { syscall!(Sysno::close, dir) };
    killed
}

/// A /proc entry name (NUL-terminated) as a pid.
fn parse_pid(name: &[u8]) -> Option<libc::pid_t> {
    let mut pid: libc::pid_t = 0;
    let mut digits: u32 = 0;
    for &b in name {
        if b == 0 {
            break;
        }
        if !b.is_ascii_digit() {
            return None;
        }
        pid = pid
            .checked_mul(10)?
            .checked_add(libc::pid_t::from(b.wrapping_sub(b'0')))?;
        digits = digits.saturating_add(1);
    }
    (digits > 0).then_some(pid)
}

/// `/proc/<pid>/<file>\0` in `buf`.
fn proc_path<'b>(buf: &'b mut [u8; 64], pid: libc::pid_t, file: &[u8]) -> Option<&'b [u8]> {
    let mut digits = [0u8; 12];
    let mut n = pid;
    let mut len: usize = 0;
    loop {
        let d = n.checked_rem(10)?;
        *digits.get_mut(len)? = b'0'.wrapping_add(u8::try_from(d).ok()?);
        len = len.saturating_add(1);
        n = n.checked_div(10)?;
        if n == 0 {
            break;
        }
    }
    let mut at: usize = 0;
    let mut put = |b: u8| -> Option<()> {
        *buf.get_mut(at)? = b;
        at = at.saturating_add(1);
        Some(())
    };
    for &b in b"/proc/" {
        put(b)?;
    }
    for &b in digits.get(..len)?.iter().rev() {
        put(b)?;
    }
    put(b'/')?;
    for &b in file {
        put(b)?;
    }
    put(0)?;
    let end = at;
    buf.get(..end)
}

/// Reads as much of a /proc file as fits into `out`; the length read.
fn read_small(path: &[u8], out: &mut [u8]) -> Option<usize> {
    // SAFETY: `path` is NUL-terminated (built by proc_path).
    let fd = unsafe {
        syscall!(
            Sysno::openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC
        )
    }
    .ok()?;
    // SAFETY: reads into the caller's buffer of the given length.
    let n = unsafe { syscall!(Sysno::read, fd, out.as_mut_ptr(), out.len()) };
    // SAFETY: closes our own descriptor.
    let _ = unsafe { syscall!(Sysno::close, fd) };
    n.ok()
}

/// Whether `pid` is live and in a table session or process group, or tagged.
fn belongs(pid: libc::pid_t, table: &PidTable, needle: &[u8]) -> bool {
    let mut path = [0u8; 64];
    let mut stat = [0u8; 1024];
    let Some(p) = proc_path(&mut path, pid, b"stat") else {
        return false;
    };
    let Some(n) = read_small(p, &mut stat) else {
        return false;
    };
    let Some((state, pgrp, session)) = parse_stat(stat.get(..n).unwrap_or(&[])) else {
        return false;
    };
    if state == b'Z' || state == b'X' {
        return false;
    }
    let pids = table.pids();
    if pids.contains(&pgrp) || pids.contains(&session) {
        return true;
    }
    let Some(p) = proc_path(&mut path, pid, b"environ") else {
        return false;
    };
    environ_has_tag(p, needle)
}

/// State, process group and session from the text of /proc/<pid>/stat.
fn parse_stat(text: &[u8]) -> Option<(u8, libc::pid_t, libc::pid_t)> {
    // The command name is in parentheses and may contain anything: parse after the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = text.get(close.checked_add(2)?..)?;
    let mut fields = rest.split(|&b| b == b' ');
    let state = *fields.next()?.first()?;
    let _ppid = fields.next()?;
    let pgrp = parse_pid(fields.next()?)?;
    let session = parse_pid(fields.next()?)?;
    Some((state, pgrp, session))
}

/// Streams /proc/<pid>/environ through a [`TagMatcher`].
fn environ_has_tag(path: &[u8], needle: &[u8]) -> bool {
    // SAFETY: `path` is NUL-terminated (built by proc_path).
    let Ok(fd) = (unsafe {
        syscall!(
            Sysno::openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC
        )
    }) else {
        return false;
    };
    let mut matcher = TagMatcher::new(needle);
    let mut chunk = [0u8; 8192];
    let mut found = false;
    loop {
        // SAFETY: reads into a local buffer of the given length.
        match unsafe { syscall!(Sysno::read, fd, chunk.as_mut_ptr(), chunk.len()) } {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if matcher.feed(chunk.get(..n).unwrap_or(&[])) {
                    found = true;
                    break;
                }
            }
        }
    }
    // SAFETY: closes our own descriptor.
    let _ = unsafe { syscall!(Sysno::close, fd) };
    found || matcher.finish()
}

/// Finds, in a stream of NUL-separated `NAME=value` entries, a `FLOWRUN_JOB_TAG` whose value
/// ends with the needle followed by one or more digits (the job id).
pub(in crate::spawn) struct TagMatcher<'n> {
    needle: &'n [u8],
    /// Bytes of the current entry seen so far.
    at: usize,
    /// Whether the entry so far matches [`TAG_PREFIX`].
    prefix_ok: bool,
    /// The last bytes of the current entry's value.
    tail: [u8; 64],
    tail_len: usize,
}

impl<'n> TagMatcher<'n> {
    pub(in crate::spawn) fn new(needle: &'n [u8]) -> TagMatcher<'n> {
        TagMatcher {
            needle,
            at: 0,
            prefix_ok: true,
            tail: [0; 64],
            tail_len: 0,
        }
    }

    /// Feeds bytes; true once a matching entry ended.
    pub(in crate::spawn) fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            if b == 0 {
                if self.finish() {
                    return true;
                }
                continue;
            }
            match TAG_PREFIX.get(self.at) {
                Some(&p) => self.prefix_ok &= p == b,
                None if self.prefix_ok => {
                    if self.tail_len == self.tail.len() {
                        self.tail.copy_within(1.., 0);
                        if let Some(last) = self.tail.last_mut() {
                            *last = b;
                        }
                    } else if let Some(slot) = self.tail.get_mut(self.tail_len) {
                        *slot = b;
                        self.tail_len = self.tail_len.saturating_add(1);
                    }
                }
                None => {}
            }
            self.at = self.at.saturating_add(1);
        }
        false
    }

    /// Ends the current entry: whether it matched. Resets for the next one.
    pub(in crate::spawn) fn finish(&mut self) -> bool {
        let whole_prefix = self.at >= TAG_PREFIX.len() && self.prefix_ok;
        let tail = self.tail.get(..self.tail_len).unwrap_or(&[]);
        let digits = tail.iter().rev().take_while(|b| b.is_ascii_digit()).count();
        let before = tail.get(..tail.len().saturating_sub(digits)).unwrap_or(&[]);
        let matched =
            whole_prefix && digits > 0 && !self.needle.is_empty() && before.ends_with(self.needle);
        self.at = 0;
        self.prefix_ok = true;
        self.tail_len = 0;
        matched
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    fn matches(environ: &[u8], needle: &[u8]) -> bool {
        // Fed in pieces of every size, to cross the chunk boundaries.
        let results: Vec<bool> = (1..=environ.len())
            .map(|step| {
                let mut m = TagMatcher::new(needle);
                let hit = environ.chunks(step).any(|c| m.feed(c));
                hit || m.finish()
            })
            .collect();
        assert!(results.iter().all(|&r| r == results[0]), "{results:?}");
        results[0]
    }

    #[test]
    fn the_tag_matcher_finds_exactly_this_backends_tags() {
        let needle = b"-4242.0-";
        assert!(matches(
            b"A=1\0FLOWRUN_JOB_TAG=run-x-4242.0-17\0B=2\0",
            needle
        ));
        // Last entry without a trailing NUL.
        assert!(matches(b"A=1\0FLOWRUN_JOB_TAG=r-4242.0-3", needle));
        // Another backend instance, another flowrun, no job id, another variable.
        assert!(!matches(b"FLOWRUN_JOB_TAG=run-4242.1-17\0", needle));
        assert!(!matches(b"FLOWRUN_JOB_TAG=run-14242.0-17\0", b"-14243.0-"));
        assert!(!matches(b"FLOWRUN_JOB_TAG=run-4242.0-\0", needle));
        assert!(!matches(b"XFLOWRUN_JOB_TAG=run-4242.0-17\0", needle));
        assert!(!matches(b"OTHER=FLOWRUN_JOB_TAG=run-4242.0-17\0", needle));
        // A long run tag before it.
        let mut long = b"FLOWRUN_JOB_TAG=".to_vec();
        long.extend(std::iter::repeat_n(b'r', 500));
        long.extend_from_slice(b"-4242.0-99\0");
        assert!(matches(&long, needle));
    }

    #[test]
    fn proc_paths_and_stat_lines_parse() {
        let mut buf = [0u8; 64];
        assert_eq!(
            proc_path(&mut buf, 1234, b"stat").unwrap(),
            b"/proc/1234/stat\0"
        );
        assert_eq!(
            proc_path(&mut buf, 7, b"environ").unwrap(),
            b"/proc/7/environ\0"
        );
        assert_eq!(
            parse_stat(b"77 (a b) c)) S 1 70 69 0 -1"),
            Some((b'S', 70, 69))
        );
        assert_eq!(parse_pid(b"123\0junk"), Some(123));
        assert_eq!(parse_pid(b"self\0"), None);
        let mut t = PidTable::new();
        for p in 1..40_000 {
            t.add(p);
        }
        t.remove(5);
        assert_eq!(t.pids().len(), 39_998);
        assert!(!t.pids().contains(&5));
    }
}
