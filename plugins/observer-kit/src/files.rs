//! Files an observer writes next to a run: replaced atomically, linked relatively.

use std::{
    io::{self, BufWriter, Write},
    path::{Component, Path, PathBuf},
};

/// Writes a report through `fill` with the SDK's atomic write (a temporary file beside `path`,
/// synced, renamed over it, mode 0644): a reader (a browser reloading the report, a CI job)
/// sees the old file or the new one, never half of one. What this adds for reports: missing
/// parent directories are created (a configured `path` may name a new subdirectory), and the
/// renderers' many small writes are buffered.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    flowrun_plugin_sdk::fs::write_atomically_with(path, 0o644, |file| {
        let mut out = BufWriter::with_capacity(1 << 16, file);
        fill(&mut out)?;
        out.flush()
    })
}

/// The configured `path` of an output file: relative paths are relative to the run directory.
pub fn resolve_in_run_dir(run_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        run_dir.join(path)
    }
}

/// Refuses an output `path` that would replace or write into what the host keeps in the run
/// directory (results.json, the journal, the job directories): an observer must never change
/// the run's record. The error reads after "cannot write PATH: ".
pub fn refuse_host_files(run_dir: &Path, path: &Path) -> io::Result<()> {
    match flowrun_plugin_sdk::run_dir::host_owned(run_dir, path) {
        None => Ok(()),
        Some(owned) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("it is the run's {owned}, which flowrun writes: choose another `path`"),
        )),
    }
}

/// The path that leads from directory `from` to `to`, for links that keep working when the run
/// directory is moved or archived. Both should be absolute; `.` components are ignored. If
/// either is relative, or `from` has `..` components that cannot be resolved lexically, `to`
/// is returned as it is.
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    if !from.is_absolute() || !to.is_absolute() {
        return to.to_path_buf();
    }
    let (Some(from_parts), Some(to_parts)) = (plain_components(from), plain_components(to)) else {
        return to.to_path_buf();
    };
    let common = from_parts
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel = PathBuf::new();
    for _ in common..from_parts.len() {
        rel.push("..");
    }
    for part in &to_parts[common..] {
        rel.push(part.as_os_str());
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    rel
}

/// `p`'s components without `.`, or `None` if it has `..` (not resolvable without the disk).
fn plain_components(p: &Path) -> Option<Vec<Component<'_>>> {
    let parts: Vec<Component<'_>> = p
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    parts
        .iter()
        .all(|c| !matches!(c, Component::ParentDir))
        .then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_out_of_the_source_and_into_the_target() {
        let rel = |a: &str, b: &str| relative_path(Path::new(a), Path::new(b));
        assert_eq!(
            rel("/r/by-status/passed", "/r/jobs/a"),
            Path::new("../../jobs/a")
        );
        assert_eq!(
            rel("/r", "/r/jobs/a/output.log"),
            Path::new("jobs/a/output.log")
        );
        assert_eq!(rel("/r/./x", "/r/y"), Path::new("../y"));
        assert_eq!(rel("/r", "/r"), Path::new("."));
        assert_eq!(rel("/a/b", "/c"), Path::new("../../c"));
        // Nothing lexical can be done with these: the target as given.
        assert_eq!(rel("r", "/r/y"), Path::new("/r/y"));
        assert_eq!(rel("/r/../x", "/r/y"), Path::new("/r/y"));
    }

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/report.txt");
        write_atomically(&path, |w| w.write_all(b"one")).unwrap();
        write_atomically(&path, |w| w.write_all(b"two")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["report.txt"]);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.txt");
        write_atomically(&path, |w| w.write_all(b"old")).unwrap();
        let err = write_atomically(&path, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("renderer failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "renderer failed");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
