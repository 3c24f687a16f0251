//! Helpers for a dialect's final records (the scheduler's accounting): how far back a query
//! must look, and the figures accounting prints.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Local, LocalResult, TimeZone};
use parking_lot::Mutex;

/// How much earlier than flowrun's clock says a record's times may read, for execution hosts
/// whose clocks run behind the submit host's.
pub const CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(60);

/// When each native job was last known not to have started: a lower bound of the start (and
/// end) time of every accounting record it can get. An accounting query that asks only for
/// records from the earliest bound of the jobs it looks up (`qacct -b`) then reads the few
/// records of the last moments instead of every record of the run, and loses none: a job's
/// record is written after it ends, however late, but never carries a time before the job
/// was last seen waiting.
#[derive(Debug, Default)]
pub struct StartBounds {
    waiting_at: Mutex<HashMap<String, SystemTime>>,
}

impl StartBounds {
    /// Notes that the jobs `ids` had not started at `at`: a time taken before the submission
    /// that created them returned, or before the snapshot that showed them waiting was asked.
    pub fn waiting<'a>(&self, ids: impl IntoIterator<Item = &'a str>, at: SystemTime) {
        let mut map = self.waiting_at.lock();
        for id in ids {
            map.insert(id.to_string(), at);
        }
    }

    /// The time from which records of `ids` must be read (the earliest bound, less
    /// [`CLOCK_SKEW_MARGIN`]); `None` when one of them was never noted (a job this process did
    /// not submit): then every record must be read.
    pub fn earliest(&self, ids: &[String]) -> Option<SystemTime> {
        let map = self.waiting_at.lock();
        let earliest = ids.iter().map(|id| map.get(id).copied()).min()??;
        earliest.checked_sub(CLOCK_SKEW_MARGIN)
    }

    /// Forgets jobs whose final record was read.
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut map = self.waiting_at.lock();
        for id in ids {
            map.remove(id);
        }
    }
}

/// `time` as the local wall-clock time `CCYYMMDDhhmm.SS`, the format of `touch -t`, `qacct -b`
/// and PBS's `-a`, never later than `time`: in the hour a change from summer time repeats,
/// one hour earlier, so that the wall time cannot be read as the later of its two instants.
pub fn posix_local_time(time: SystemTime) -> String {
    let mut wall = DateTime::<Local>::from(time).naive_local();
    if !matches!(Local.from_local_datetime(&wall), LocalResult::Single(_)) {
        wall -= chrono::Duration::hours(1);
    }
    wall.format("%Y%m%d%H%M.%S").to_string()
}

/// A size as accounting prints it (`4.531KB`, `309.746MB`, `1.5 GB`, `7105 MBytes`, `0.000B`,
/// `221120K`, `1024`), in bytes: units are 1024-based, and a bare number counts `bare_unit`
/// bytes (sacct's MaxRSS is in KiB), or is no size when `bare_unit` is `None`. `None` for
/// anything else (`-`, an empty field).
pub fn parse_size(text: &str, bare_unit: Option<f64>) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let unit = text[split..].to_ascii_uppercase();
    let power = match unit.trim_end_matches("BYTES").trim_end_matches('B') {
        "" if unit.is_empty() => return Some(finite(&text[..split])? * bare_unit?),
        "" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        _ => return None,
    };
    finite(&text[..split]).map(|n| n * 1024f64.powi(power))
}

/// The task indices of a list of ranges as Grid Engine and PBS print a job array's tasks:
/// `4`, `4-20:1`, `5,6`, `1-9:2,12` (`FIRST-LAST:STEP`, comma-separated). A part that is no
/// range is left out.
pub fn index_list(text: &str) -> Vec<u32> {
    let mut indices = Vec::new();
    for part in text.split(',') {
        let (range, step) = part.split_once(':').unwrap_or((part, "1"));
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        if let (Ok(first), Ok(last), Ok(step)) = (
            first.trim().parse::<u32>(),
            last.trim().parse::<u32>(),
            step.trim().parse::<usize>(),
        ) {
            indices.extend((first..=last).step_by(step.max(1)));
        }
    }
    indices
}

fn finite(number: &str) -> Option<f64> {
    let n: f64 = number.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_the_earliest_wait_less_the_margin_and_unknown_ids_read_everything() {
        let bounds = StartBounds::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        bounds.waiting(["1", "2"], t0);
        bounds.waiting(["2"], t0 + Duration::from_secs(30));
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            bounds.earliest(&ids(&["2"])),
            Some(t0 + Duration::from_secs(30) - CLOCK_SKEW_MARGIN)
        );
        assert_eq!(
            bounds.earliest(&ids(&["1", "2"])),
            Some(t0 - CLOCK_SKEW_MARGIN)
        );
        assert_eq!(bounds.earliest(&ids(&["2", "3"])), None);
        bounds.forget(["1"]);
        assert_eq!(bounds.earliest(&ids(&["1"])), None);
    }

    #[test]
    fn local_times_in_touch_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_114_172);
        let text = posix_local_time(t);
        assert_eq!((text.len(), &text[12..13]), (15, "."), "{text}");
        let local = DateTime::<Local>::from(t);
        assert_eq!(text, local.format("%Y%m%d%H%M.%S").to_string());
    }

    #[test]
    fn index_lists() {
        assert_eq!(index_list("4"), [4]);
        assert_eq!(index_list("3-6:1"), [3, 4, 5, 6]);
        assert_eq!(index_list("5,6"), [5, 6]);
        assert_eq!(index_list("1-9:4,12"), [1, 5, 9, 12]);
        assert_eq!(index_list("x,2-1,7"), [7]);
    }

    #[test]
    fn sizes_in_bytes() {
        assert_eq!(parse_size("0.000B", Some(1.0)), Some(0.0));
        assert_eq!(parse_size("4.5KB", Some(1.0)), Some(4.5 * 1024.0));
        assert_eq!(parse_size("1.5 GB", Some(1.0)), Some(1.5 * 1024f64.powi(3)));
        assert_eq!(
            parse_size("7105 MBytes", Some(1.0)),
            Some(7105.0 * 1024f64.powi(2))
        );
        assert_eq!(parse_size("221120K", Some(1.0)), Some(221_120.0 * 1024.0));
        assert_eq!(parse_size("2t", Some(1.0)), Some(2.0 * 1024f64.powi(4)));
        assert_eq!(parse_size("1024", Some(1024.0)), Some(1024.0 * 1024.0));
        assert_eq!(parse_size("1024", None), None);
        for bad in ["", "-", "3 parsecs", "-1K", "NaN"] {
            assert_eq!(parse_size(bad, Some(1.0)), None, "{bad}");
        }
    }
}
