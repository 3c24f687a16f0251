//! The writer of results.json (the schema is documented in docs/results.md) and its fast
//! timestamps.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use super::records::JobRecord;
use crate::sched::{Reason, Status};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with microseconds, e.g. `2026-11-22T21:54:41.123456Z`.
pub fn rfc3339_us(us: i64) -> String {
    let mut buf = [0u8; TS_LEN];
    Timestamps::default().format(us, &mut buf).to_string()
}

/// A second since the epoch and its `YYYY-MM-DDTHH:MM:SS.` text.
type CachedSecond = (i64, [u8; 20]);

const TS_LEN: usize = "2026-11-22T21:54:41.123456Z".len();

/// Formats many timestamps fast: a results.json of a million jobs holds three million of them,
/// and they fall into few distinct seconds, so the calendar part (done by the `time` crate) is
/// computed once per second and only the microseconds are formatted per call.
#[derive(Default)]
pub struct Timestamps {
    /// A few recent seconds: a job's queued, started and finished times alternate between
    /// the run's start and the moment it ran.
    cached: [std::cell::Cell<Option<CachedSecond>>; 4],
}

impl Timestamps {
    /// Formats `us` (µs since the epoch) into `buf`.
    pub fn format<'b>(&self, us: i64, buf: &'b mut [u8; TS_LEN]) -> &'b str {
        let (secs, micros) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000));
        let slot = &self.cached[secs.rem_euclid(4) as usize];
        let prefix = match slot.get() {
            Some((s, p)) if s == secs => p,
            _ => {
                let mut p = [b'0'; 20];
                if let Ok(t) = time::OffsetDateTime::from_unix_timestamp(secs) {
                    let text = format!(
                        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                        t.year(),
                        t.month() as u8,
                        t.day(),
                        t.hour(),
                        t.minute(),
                        t.second()
                    );
                    p.copy_from_slice(&text.as_bytes()[..20]);
                }
                slot.set(Some((secs, p)));
                p
            }
        };
        buf[..20].copy_from_slice(&prefix);
        let mut m = micros;
        for i in (20..26).rev() {
            buf[i] = b'0' + (m % 10) as u8;
            m /= 10;
        }
        buf[26] = b'Z';
        std::str::from_utf8(buf).expect("ASCII")
    }
}

/// A timestamp field of results.json: null when it never happened.
struct Ts<'a>(i64, &'a Timestamps);

impl Serialize for Ts<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 > 0 {
            let mut buf = [0u8; TS_LEN];
            s.serialize_str(self.1.format(self.0, &mut buf))
        } else {
            s.serialize_none()
        }
    }
}

/// A reason, serialised through its `Display` without an intermediate string.
struct ReasonText<'a>(Option<&'a Reason>);

impl Serialize for ReasonText<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(r) => s.collect_str(r),
            None => s.serialize_str(""),
        }
    }
}

#[derive(Serialize)]
struct Counts {
    passed: u64,
    failed: u64,
    killed: u64,
    skipped: u64,
}

#[derive(Serialize)]
struct JobOut<'a> {
    name: &'a str,
    status: &'static str,
    reason: ReasonText<'a>,
    reason_kind: Option<&'static str>,
    backend: &'a str,
    attempt: u32,
    exit_code: Option<i32>,
    queued_at: Ts<'a>,
    started_at: Ts<'a>,
    finished_at: Ts<'a>,
    duration_s: Option<f64>,
    cpu_s: Option<f64>,
    max_rss_mb: Option<f64>,
    native_id: Option<&'a str>,
    log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_context: Option<&'a [String]>,
    /// The verdict comes from this earlier run's evidence, not from this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    reused_from: Option<&'a str>,
    /// Passed after a failed attempt.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    flaky: bool,
    /// The attempts before the last (which the job's own fields describe), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attempts: Vec<AttemptOut<'a>>,
}

/// What results.json is written from: the live run (the core's statuses and the ledger) or a
/// journal read back (the supervisor after a crash). Both hold the same [`JobRecord`]s.
pub trait ResultsSource {
    /// The flow's name.
    fn flow(&self) -> &str;
    /// The run directory as text (default log paths are built from it).
    fn run_dir(&self) -> &str;
    /// The run's start and end, µs since the epoch.
    fn times(&self) -> (i64, i64);
    /// The signal that interrupted the run, if one did.
    fn interrupted(&self) -> bool;
    /// How many jobs.
    fn len(&self) -> usize;
    /// Whether there are no jobs.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Job `i`'s name.
    fn name(&self, i: usize) -> &str;
    /// The name of job `i`'s backend instance.
    fn backend(&self, i: usize) -> &str;
    /// Job `i`'s final status and reason.
    fn outcome(&self, i: usize) -> (Status, Option<&Reason>);
    /// What was recorded of job `i`.
    fn record(&self, i: usize) -> &JobRecord;
    /// How many times the run was resumed (`--resume`).
    fn resumes(&self) -> u32 {
        0
    }
}

/// The default log of job `name` in the run directory `run_dir` (attempt 1).
pub fn default_log(run_dir: &str, name: &str) -> String {
    attempt_log(run_dir, name, 1)
}

/// The default log of attempt `attempt` of job `name`.
pub fn attempt_log(run_dir: &str, name: &str, attempt: u32) -> String {
    let mut s = String::with_capacity(run_dir.len() + name.len() + 30);
    s.push_str(run_dir);
    s.push_str("/jobs/");
    s.push_str(&super::outdir::job_dir_name(name));
    s.push('/');
    s.push_str(&super::drive::log_name(attempt));
    s
}

/// One earlier attempt in results.json.
#[derive(Serialize)]
struct AttemptOut<'a> {
    attempt: u32,
    status: &'static str,
    reason: ReasonText<'a>,
    reason_kind: Option<&'static str>,
    exit_code: Option<i32>,
    started_at: Ts<'a>,
    finished_at: Ts<'a>,
    log: Option<String>,
}

/// Writes `<dir>/results.json` with the SDK's atomic write, as every file others read while
/// flowrun runs (the registry, reports): a temporary file of a fresh name beside it, synced,
/// renamed over it, mode 0644. A reader (`status --watch`, a CI job) sees the old file or the
/// new one; on failure the temporary file is removed and nothing half-written is left.
pub fn write_results(dir: &Path, input: &dyn ResultsSource) -> std::io::Result<PathBuf> {
    let path = dir.join("results.json");
    flowrun_plugin_sdk::fs::write_atomically_with(&path, 0o644, |file| write_to(file, input))?;
    Ok(path)
}

fn write_to(file: &mut File, input: &dyn ResultsSource) -> std::io::Result<()> {
    let mut counts = Counts {
        passed: 0,
        failed: 0,
        killed: 0,
        skipped: 0,
    };
    let n = input.len();
    for i in 0..n {
        match input.outcome(i).0 {
            Status::Passed => counts.passed += 1,
            Status::Failed => counts.failed += 1,
            Status::Killed => counts.killed += 1,
            Status::Skipped => counts.skipped += 1,
            _ => {}
        }
    }
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let stamps = Timestamps::default();
    let ts = |us: i64| Ts(us, &stamps);
    let (started_us, finished_us) = input.times();
    write!(
        w,
        "{{\n  \"flow\": {},\n  \"started_at\": {},\n  \"finished_at\": {},\n  \"interrupted\": {},\n  \"resumes\": {},\n  \"counts\": {},\n  \"jobs\": [",
        serde_json::to_string(input.flow())?,
        serde_json::to_string(&ts(started_us))?,
        serde_json::to_string(&ts(finished_us))?,
        input.interrupted(),
        input.resumes(),
        serde_json::to_string(&counts)?,
    )?;
    let run_dir = input.run_dir();
    for i in 0..n {
        let (status, reason) = input.outcome(i);
        let name = input.name(i);
        let r = input.record(i);
        let extra = r.extra.as_deref();
        let log = match extra.and_then(|x| x.logs.first()) {
            Some(first) => Some(first.to_string_lossy().into_owned()),
            None if r.has_dir => Some(attempt_log(run_dir, name, r.attempt)),
            None => None,
        };
        let fail = extra.and_then(|x| x.fail.as_ref());
        let out = JobOut {
            name,
            status: status.name(),
            reason: ReasonText(reason),
            reason_kind: reason.map(Reason::kind),
            backend: input.backend(i),
            attempt: r.attempt,
            exit_code: r.exit_code,
            queued_at: ts(r.queued_at),
            started_at: ts(r.started_at),
            finished_at: ts(r.finished_at),
            duration_s: r.duration_s(),
            cpu_s: extra.and_then(|x| x.usage.cpu_s),
            max_rss_mb: extra.and_then(|x| x.usage.max_rss_mb),
            native_id: extra.and_then(|x| x.native_id.as_deref()),
            log,
            detail: extra.and_then(|x| x.detail.as_deref()),
            fail_line: fail.map(|f| f.line),
            fail_text: fail.map(|f| f.text.as_str()),
            fail_context: fail.map(|f| f.context.as_slice()),
            reused_from: extra.and_then(|x| x.reused_from.as_deref()),
            flaky: status == Status::Passed && !r.earlier().is_empty(),
            attempts: r
                .earlier()
                .iter()
                .map(|a| AttemptOut {
                    attempt: a.record.attempt,
                    status: a.status.name(),
                    reason: ReasonText(a.reason.as_ref()),
                    reason_kind: a.reason.as_ref().map(Reason::kind),
                    exit_code: a.record.exit_code,
                    started_at: ts(a.record.started_at),
                    finished_at: ts(a.record.finished_at),
                    log: match a.record.extra.as_deref().and_then(|x| x.logs.first()) {
                        Some(first) => Some(first.to_string_lossy().into_owned()),
                        None if a.record.has_dir => {
                            Some(attempt_log(run_dir, name, a.record.attempt))
                        }
                        None => None,
                    },
                })
                .collect(),
        };
        w.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
        serde_json::to_writer(&mut w, &out)?;
    }
    w.write_all(b"\n  ]\n}\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_us(1_795_391_681_123_456),
            "2026-11-22T23:54:41.123456Z"
        );
        assert_eq!(
            rfc3339_us(1_795_391_681_000_007),
            "2026-11-22T23:54:41.000007Z"
        );
    }

    /// A finished run of one passed job.
    struct OneJob(JobRecord);

    impl ResultsSource for OneJob {
        fn flow(&self) -> &str {
            "f"
        }
        fn run_dir(&self) -> &str {
            "/nowhere"
        }
        fn times(&self) -> (i64, i64) {
            (1, 2)
        }
        fn interrupted(&self) -> bool {
            false
        }
        fn len(&self) -> usize {
            1
        }
        fn name(&self, _: usize) -> &str {
            "a"
        }
        fn backend(&self, _: usize) -> &str {
            "local"
        }
        fn outcome(&self, _: usize) -> (Status, Option<&Reason>) {
            (Status::Passed, None)
        }
        fn record(&self, _: usize) -> &JobRecord {
            &self.0
        }
    }

    /// A temporary name left in the run directory (by a crash, or planted as a link) must not
    /// decide where results.json's bytes go: the old writer's fixed `.results.json.tmp` was
    /// opened with `File::create`, which follows a link and overwrote the file it named.
    #[test]
    fn results_json_is_replaced_atomically_without_following_a_stale_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::os::unix::fs::symlink(&victim, run.join(".results.json.tmp")).unwrap();
        std::fs::write(run.join("results.json"), "old").unwrap();

        let path = write_results(&run, &OneJob(JobRecord::default())).unwrap();

        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["jobs"][0]["name"], "a");
        assert_eq!(v["counts"]["passed"], 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let mut names: Vec<_> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".results.json.tmp", "results.json"],
            "no temporary left"
        );
    }

    /// A write that fails (here the rename, over a directory in results.json's place) leaves
    /// no temporary file behind and what was in the place untouched.
    #[test]
    fn a_failed_results_write_leaves_no_temporary_file() {
        let run = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(run.path().join("results.json/inside")).unwrap();
        assert!(write_results(run.path(), &OneJob(JobRecord::default())).is_err());
        let names: Vec<_> = std::fs::read_dir(run.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["results.json"]);
        assert!(run.path().join("results.json/inside").is_dir());
    }
}
