//! Where the host puts things in a run directory, for plugins that point at them (an observer
//! linking to a job's directory or log) to name them exactly as the host does.

use std::{
    borrow::Cow,
    path::{Component, Path, PathBuf},
};

use sha2::{Digest, Sha256};

/// The longest file name most file systems take (NAME_MAX).
const NAME_MAX: usize = 255;

/// How much of a long encoded name is kept before its hash.
const LONG_NAME_PREFIX: usize = 200;

/// A job or flow name as one path component, one-to-one: `/`, `%`, control bytes and a
/// leading `.` become `%XX` (so no name is `.`, `..`, hidden or a path, and `a/b` and `a_b`
/// stay apart); a result longer than NAME_MAX keeps a prefix and appends `%~` and a hash of the
/// whole name (`%~` never appears in an encoding otherwise).
pub fn job_dir_name(name: &str) -> Cow<'_, str> {
    let escape =
        |i: usize, b: u8| b == b'/' || b == b'%' || b < 0x20 || b == 0x7f || (i == 0 && b == b'.');
    let bytes = name.as_bytes();
    if name.is_empty() {
        return Cow::Borrowed("%~");
    }
    let encoded: Cow<'_, str> = if !bytes.iter().enumerate().any(|(i, &b)| escape(i, b)) {
        Cow::Borrowed(name)
    } else {
        let mut s = String::with_capacity(name.len() + 8);
        for (i, ch) in name.char_indices() {
            match u8::try_from(ch) {
                Ok(b) if escape(i, b) => s.push_str(&format!("%{b:02X}")),
                _ => s.push(ch),
            }
        }
        Cow::Owned(s)
    };
    if encoded.len() <= NAME_MAX {
        return encoded;
    }
    // Cut at a character boundary that does not split a %XX triple.
    let mut cut = LONG_NAME_PREFIX;
    while !encoded.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &encoded[..cut];
    let tail = head.len().saturating_sub(2);
    if let Some(p) = head.as_bytes()[tail..].iter().position(|&b| b == b'%') {
        cut = tail + p;
    }
    let hash = Sha256::digest(name.as_bytes());
    Cow::Owned(format!("{}%~{}", &encoded[..cut], hex::encode(&hash[..16])))
}

/// The log's file name in a job directory (attempt 1).
pub const LOG_NAME: &str = "output.log";

/// The log of attempt `attempt` in its job directory: [`LOG_NAME`] for the first (and for a
/// job that never ran), `output.attempt-N.log` for a retry, so that every attempt keeps its
/// own log.
pub fn log_name(attempt: u32) -> Cow<'static, str> {
    match attempt {
        0 | 1 => LOG_NAME.into(),
        n => format!("output.attempt-{n}.log").into(),
    }
}

/// The files the host keeps at the top of a run directory: the run's record, its journal
/// (what `--resume` reads) and the lock.
pub const HOST_FILES: [&str; 3] = ["results.json", "journal", ".flowrun.lock"];

/// The directory of the job directories, inside the run directory.
pub const JOBS_DIR: &str = "jobs";

/// What of the host's a plugin would replace or write into by writing `path` (a file, or the
/// root of a plugin's own directories) in or near run directory `run_dir`, if anything: one of
/// [`HOST_FILES`], or [`JOBS_DIR`] for anything in the job directories. A report configured
/// as `path = "results.json"` would otherwise replace the run's record with itself. Symlinks
/// in the part of `path` that exists are followed, except in its last component (which an
/// atomic write replaces rather than follows).
pub fn host_owned(run_dir: &Path, path: &Path) -> Option<&'static str> {
    let run_dir = std::fs::canonicalize(run_dir).ok()?;
    let path = resolve_existing(path)?;
    let mut inside = path.strip_prefix(&run_dir).ok()?.components();
    let first = inside.next()?.as_os_str();
    if first == JOBS_DIR {
        return Some(JOBS_DIR);
    }
    let only = inside.next().is_none();
    HOST_FILES.into_iter().find(|f| only && first == *f)
}

/// `path` made absolute with its existing parent directories resolved (symlinks, `..`), its
/// last component and whatever does not exist yet appended as written.
fn resolve_existing(path: &Path) -> Option<PathBuf> {
    let mut pending: Vec<Component<'_>> = vec![path.components().next_back()?];
    let mut dir = path.parent()?;
    let mut resolved = loop {
        if let Ok(real) = std::fs::canonicalize(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            break real;
        }
        pending.push(dir.components().next_back()?);
        dir = dir.parent()?;
    };
    for part in pending.into_iter().rev() {
        match part {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(name) => resolved.push(name),
            _ => {}
        }
    }
    Some(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_dir_names_are_one_to_one_single_components() {
        let names = [
            "a/b",
            "a_b",
            "a%2Fb",
            ".",
            "..",
            ".hidden",
            "x.y",
            "",
            "tab\there",
            "nl\nx",
            "caf\u{e9}",
            "%",
            "a%",
        ];
        let mut seen = std::collections::HashSet::new();
        for n in names {
            let d = job_dir_name(n).into_owned();
            assert!(
                !d.is_empty() && d != "." && d != ".." && !d.contains('/'),
                "{n:?} -> {d:?}"
            );
            assert!(!d.starts_with('.'), "{n:?} -> {d:?}");
            assert!(!d.bytes().any(|b| b < 0x20), "{n:?} -> {d:?}");
            assert!(seen.insert(d.clone()), "{n:?} collides as {d:?}");
        }
        assert_eq!(job_dir_name("sim-dma-3"), "sim-dma-3");
        assert!(matches!(job_dir_name("sim-dma-3"), Cow::Borrowed(_)));
        assert_eq!(job_dir_name("a/b"), "a%2Fb");
        assert_eq!(job_dir_name(".."), "%2E.");
        assert_eq!(job_dir_name("caf\u{e9}/x"), "caf\u{e9}%2Fx");
    }

    #[test]
    fn long_names_keep_a_prefix_and_a_hash_within_name_max() {
        let a = "x".repeat(300);
        let b = format!("{}y", "x".repeat(299));
        let slashes = "/".repeat(100);
        for n in [&a, &b, &slashes] {
            let d = job_dir_name(n);
            assert!(d.len() <= NAME_MAX, "{} bytes", d.len());
            assert!(d.contains("%~"));
        }
        assert_ne!(job_dir_name(&a), job_dir_name(&b));
        // The cut never splits an escape: every % is followed by two hex digits or by ~.
        let d = job_dir_name(&slashes);
        let body = d.split("%~").next().unwrap();
        assert!(
            body.len() % 3 == 0 && body.chars().all(|c| "%2F".contains(c)),
            "{d}"
        );
        // At the limit, a name is kept as it is.
        let n = "z".repeat(NAME_MAX);
        assert_eq!(job_dir_name(&n), n);
    }

    #[test]
    fn host_owned_names_the_hosts_files_however_they_are_reached() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("jobs/a")).unwrap();
        std::os::unix::fs::symlink(&run, dir.path().join("alias")).unwrap();
        let owned = |p: &str| host_owned(&run, &dir.path().join(p));
        assert_eq!(owned("run/results.json"), Some("results.json"));
        assert_eq!(owned("run/./journal"), Some("journal"));
        assert_eq!(owned("run/jobs/../results.json"), Some("results.json"));
        assert_eq!(owned("alias/results.json"), Some("results.json"));
        assert_eq!(owned("run/jobs"), Some("jobs"));
        assert_eq!(owned("run/jobs/a/report.html"), Some("jobs"));
        assert_eq!(owned("run/jobs/new/deeper/x"), Some("jobs"));
        assert_eq!(owned("run/report.html"), None);
        assert_eq!(owned("run/by-status"), None);
        assert_eq!(owned("run/sub/results.json"), None);
        assert_eq!(owned("elsewhere/results.json"), None);
        assert_eq!(owned("run"), None);
    }
}
