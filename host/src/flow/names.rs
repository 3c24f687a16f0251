//! What job names, flow names and environment variable names may be.
//!
//! A job name becomes a directory under `jobs/`, a value of `FLOWRUN_JOB_NAME`, a line of the
//! summary and a glob target; a flow name becomes a directory under `flowrun-out/`. So both are
//! refused here, at load, when they could only fail (or do harm) at run time: a NUL cannot be in
//! a path or an environment variable, `.` and `..` are not directories of their own, a name over
//! 255 bytes is not a file name on Linux, and control characters would reach the terminal.
//! `/` stays allowed in job names (`ip/dma/build`): the run maps job names to directories
//! one-to-one.

/// The longest name in bytes: `NAME_MAX` of Linux file systems.
pub(super) const MAX_NAME_BYTES: usize = 255;

/// What a job name may be, for help texts.
pub(super) const JOB_NAME_RULE: &str = "a job name is 1 to 255 bytes, not `.` or `..`, without spaces, control characters or the glob characters * ? [ ]";

/// What a flow name may be, for help texts.
pub(super) const FLOW_NAME_RULE: &str = "a flow name is 1 to 255 bytes, not `.` or `..`, without `/`, spaces, control characters, braces or the glob characters * ? [ ]";

/// The first character of `name` that `forbidden` refuses, described.
fn bad_char(name: &str, forbidden: impl Fn(char) -> bool) -> Option<String> {
    let c = name.chars().find(|&c| forbidden(c))?;
    Some(match c {
        '\0' => "it contains a NUL byte".to_string(),
        '\n' => "it contains a newline".to_string(),
        ' ' => "it contains a space".to_string(),
        c if c.is_control() => format!("it contains the control character U+{:04X}", c as u32),
        c if c.is_whitespace() => format!("it contains the white space U+{:04X}", c as u32),
        c => format!("it contains `{c}`"),
    })
}

/// The problems names of both kinds share: empty, `.` or `..`, too long.
fn shape_problem(name: &str) -> Option<String> {
    match name {
        "" => Some("it is empty".to_string()),
        "." | ".." => Some("`.` and `..` name directories that already exist".to_string()),
        _ if name.len() > MAX_NAME_BYTES => Some(format!(
            "it is {} bytes long, more than {MAX_NAME_BYTES}",
            name.len()
        )),
        _ => None,
    }
}

/// Why `name` cannot be a job name (after expansion), if it cannot.
pub(super) fn job_name_problem(name: &str) -> Option<String> {
    shape_problem(name).or_else(|| {
        bad_char(name, |c| {
            c.is_whitespace() || c.is_control() || matches!(c, '*' | '?' | '[' | ']')
        })
    })
}

/// Why `name` cannot be a flow name, if it cannot.
pub(super) fn flow_name_problem(name: &str) -> Option<String> {
    shape_problem(name).or_else(|| {
        bad_char(name, |c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '/' | '*' | '?' | '[' | ']' | '{' | '}')
        })
    })
}

/// Why `name`, a file's stem, cannot name the flow's output directory, if it cannot: only what
/// is unsafe as a directory (`.`, `..`, control characters) is refused, so that `my flow.toml`
/// keeps working as a root flow (its included jobs' names are checked on their own).
pub(super) fn stem_problem(name: &str) -> Option<String> {
    shape_problem(name).or_else(|| bad_char(name, |c| c.is_control() || c == '/'))
}

/// Why `name` cannot be the name of an environment variable, if it cannot: `execve` takes
/// `NAME=value` strings, so a name cannot be empty or hold `=` or NUL.
pub(super) fn env_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.contains('=') {
        Some("it contains `=`")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names() {
        for good in [
            "build",
            "sim-1",
            "ip/dma/build",
            "a.b",
            "...",
            "日本",
            "x".repeat(255).as_str(),
        ] {
            assert_eq!(job_name_problem(good), None, "{good:?}");
        }
        for (bad, why) in [
            ("", "empty"),
            (".", "`.` and `..`"),
            ("..", "`.` and `..`"),
            ("a\0b", "NUL"),
            ("a\nb", "newline"),
            ("a b", "space"),
            ("a\u{1b}[31m", "U+001B"),
            ("a\u{a0}b", "white space U+00A0"),
            ("a*", "`*`"),
            ("a]", "`]`"),
        ] {
            let problem = job_name_problem(bad).unwrap_or_default();
            assert!(problem.contains(why), "{bad:?}: {problem}");
        }
        let long = "x".repeat(256);
        assert!(job_name_problem(&long).unwrap().contains("256 bytes"));
        // 86 three-byte characters: 258 bytes.
        assert!(job_name_problem(&"語".repeat(86)).is_some());
    }

    #[test]
    fn flow_names() {
        assert_eq!(flow_name_problem("nightly"), None);
        assert_eq!(flow_name_problem("ip.dma"), None);
        for bad in ["", ".", "..", "a/b", "../x", "a\0", "a b", "{x}", "a*"] {
            assert!(flow_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn stems() {
        assert_eq!(stem_problem("my flow"), None);
        assert!(stem_problem(".").is_some());
        assert!(stem_problem("a\u{1b}").is_some());
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name_problem("CC"), None);
        assert_eq!(env_name_problem("lower.dots-ok"), None);
        assert_eq!(env_name_problem(""), Some("it is empty"));
        assert_eq!(env_name_problem("A=B"), Some("it contains `=`"));
        assert_eq!(env_name_problem("A\0"), Some("it contains a NUL byte"));
    }
}
