//! Pure text formatting for the display: widths, truncation, durations, the estimate of the time
//! left, the live line and the per-job lines. No clock, no terminal: everything is a value in,
//! a string out, so the unit tests pin it without processes.

use std::{borrow::Cow, time::Duration};

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::sched::Status;

/// Where a cut text ends.
pub const ELLIPSIS: char = '…';

/// The columns `s` takes on a terminal.
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `s` cut to at most `max` columns, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if width(s) <= max {
        return Cow::Borrowed(s);
    }
    if max == 0 {
        return Cow::Borrowed("");
    }
    let mut out = String::with_capacity(max + 3);
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > max - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push(ELLIPSIS);
    Cow::Owned(out)
}

/// `1 job`, `2 jobs`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A clock reading for the live line: `00:07`, `12:34`, `1:02:03`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

/// A duration for the summary: `0.4s`, `12.3s`, `4m05s`, `2h03m`.
pub fn seconds(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "?".into();
    }
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let whole = s as u64;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, whole / 60 % 60)
    }
}

/// The estimate of the time left: the run so far, scaled by the jobs still to end. Unknown until
/// a job has ended. A skipped job ends at no cost, so a cascade of skips makes the estimate
/// drop, as it should: there is less left to run.
pub fn eta(elapsed: Duration, done: u64, total: u64) -> Option<Duration> {
    if done == 0 || total == 0 {
        return None;
    }
    let left = total.saturating_sub(done);
    Some(elapsed.mul_f64(left as f64 / done as f64))
}

/// Jobs per status, indexed by [`Status::index`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts(pub [u64; 7]);

impl Counts {
    /// The count of a status.
    pub fn get(&self, s: Status) -> u64 {
        self.0[s.index()]
    }
    /// Moves one job from `old` to `new`.
    pub fn shift(&mut self, old: Status, new: Status) {
        let o = &mut self.0[old.index()];
        *o = o.saturating_sub(1);
        self.0[new.index()] += 1;
    }
    /// Jobs in a terminal status.
    pub fn done(&self) -> u64 {
        self.get(Status::Passed)
            + self.get(Status::Failed)
            + self.get(Status::Killed)
            + self.get(Status::Skipped)
    }
}

/// How a piece of text is coloured where colour is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// As is.
    Plain,
    /// A failure: red, bold.
    Bad,
    /// A kill: yellow, bold.
    Warn,
    /// Secondary: dim.
    Dim,
}

/// The style of a status word.
pub fn status_style(s: Status) -> Style {
    match s {
        Status::Failed => Style::Bad,
        Status::Killed => Style::Warn,
        Status::Skipped => Style::Dim,
        _ => Style::Plain,
    }
}

/// `text` in `style`, with escape sequences only when `colour`.
pub fn paint(text: &str, style: Style, colour: bool) -> Cow<'_, str> {
    let code = match style {
        _ if !colour => return Cow::Borrowed(text),
        Style::Plain => return Cow::Borrowed(text),
        Style::Bad => "1;31",
        Style::Warn => "1;33",
        Style::Dim => "2",
    };
    Cow::Owned(format!("\x1b[{code}m{text}\x1b[0m"))
}

/// A line made of styled pieces, measured without its escape sequences.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Line {
    pieces: Vec<(String, Style)>,
    width: usize,
    /// Never cut to the terminal's width (a notice the user must read whole).
    pub whole: bool,
}

impl Line {
    /// Appends a piece.
    pub fn push(&mut self, text: impl Into<String>, style: Style) {
        let text = text.into();
        self.width += width(&text);
        self.pieces.push((text, style));
    }
    /// Its visible width.
    pub fn width(&self) -> usize {
        self.width
    }
    /// The text without styles.
    #[cfg(test)]
    pub fn plain(&self) -> String {
        self.pieces.iter().map(|p| p.0.as_str()).collect()
    }
    /// The text, coloured when `colour`.
    pub fn render(&self, colour: bool) -> String {
        self.pieces
            .iter()
            .map(|(t, s)| paint(t, *s, colour))
            .collect()
    }
    /// Cuts the line to `max` columns, the last piece ending in `…`.
    pub fn truncate(&mut self, max: usize) {
        if self.width <= max || self.whole {
            return;
        }
        let mut used = 0;
        let mut keep = Vec::new();
        for (text, style) in std::mem::take(&mut self.pieces) {
            let w = width(&text);
            if used + w <= max.saturating_sub(1) {
                used += w;
                keep.push((text, style));
            } else {
                let cut = truncate(&text, max - used).into_owned();
                used += width(&cut);
                keep.push((cut, style));
                break;
            }
        }
        self.pieces = keep;
        self.width = used;
    }
}

/// `8 running, 430 passed, 12 failed`: running and passed always, the others when not zero.
/// `brief`: only running, failed and killed (what a narrow terminal must still show; the
/// passes and skips are in the done count).
fn counts_pieces(line: &mut Line, c: &Counts, brief: bool) {
    line.push(format!("{} running", c.get(Status::Running)), Style::Plain);
    if !brief {
        line.push(format!(", {} passed", c.get(Status::Passed)), Style::Plain);
    }
    for s in [Status::Failed, Status::Killed, Status::Skipped] {
        let n = c.get(s);
        if n > 0 && !(brief && s == Status::Skipped) {
            line.push(", ", Style::Plain);
            line.push(format!("{n} {}", s.name()), status_style(s));
        }
    }
}

/// What the live line and the periodic plain line show.
#[derive(Debug, Clone, Copy)]
pub struct ProgressView<'a> {
    /// Since the run started.
    pub elapsed: Duration,
    /// Jobs in the run.
    pub total: u64,
    /// Per status.
    pub counts: &'a Counts,
    /// Names of running jobs, the longest-running first (maybe only some of them).
    pub running: &'a [&'a str],
}

/// The progress line: `[00:12] 450/1000 45% ETA 00:15 | 8 running, 430 passed, 12 failed |
/// sim-io-19, sim-dma-3, +6`, in at most `max` columns. The names fill what the rest leaves;
/// where the first name would not fit, the line gives up, in turn, the estimate, the counts of
/// passes and skips, and the percent; then the names are cut, then the line.
pub fn progress_line(v: &ProgressView<'_>, max: usize) -> Line {
    let done = v.counts.done();
    let pct = (done * 100).checked_div(v.total).unwrap_or(100);
    let eta = eta(v.elapsed, done, v.total).map(|d| format!(" ETA {}", clock(d)));
    let running = v.counts.get(Status::Running) as usize;
    // Room for the first name (or a useful part of it) and the count of the others.
    let first_name = match v.running.first() {
        Some(n) => {
            let others = running.saturating_sub(1);
            let more = if others > 0 { 3 + digits(others) } else { 0 };
            3 + width(n).min(8) + more
        }
        None => 0,
    };
    // (with the estimate, all counts, the percent), from the fullest to the barest.
    const LEVELS: [(bool, bool, bool); 4] = [
        (true, false, true),
        (false, false, true),
        (false, true, true),
        (false, true, false),
    ];
    let build = |(with_eta, brief, with_pct): (bool, bool, bool)| {
        let mut line = Line::default();
        line.push(
            format!("[{}] {done}/{}", clock(v.elapsed), v.total),
            Style::Plain,
        );
        if with_pct {
            line.push(format!(" {pct}%"), Style::Plain);
        }
        if with_eta {
            match &eta {
                Some(eta) => line.push(eta.clone(), Style::Plain),
                None => return None,
            }
        }
        line.push(" | ", Style::Plain);
        counts_pieces(&mut line, v.counts, brief);
        Some(line)
    };
    let mut line = LEVELS
        .iter()
        .filter_map(|&l| build(l))
        .find(|l| l.width() + first_name <= max)
        .or_else(|| build(LEVELS[3]))
        .unwrap_or_default();
    if !v.running.is_empty() && line.width() + 3 < max {
        let names = names_fitting(v.running, running, max - line.width() - 3);
        if !names.is_empty() {
            line.push(" | ", Style::Plain);
            line.push(names, Style::Plain);
        }
    }
    line.truncate(max);
    line
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

/// As many of `names` as fit in `room` columns, comma-separated, then `+N` for the rest of
/// `total`. The first name is cut rather than left out when there is room for a useful part.
pub fn names_fitting(names: &[&str], total: usize, room: usize) -> String {
    let total = total.max(names.len());
    let mut out = String::new();
    let mut used = 0;
    for (i, name) in names.iter().enumerate() {
        let rest = total.saturating_sub(i + 1);
        let more = if rest > 0 {
            format!(", +{rest}")
        } else {
            String::new()
        };
        let sep = if i == 0 { 0 } else { 2 };
        let w = width(name);
        if used + sep + w + width(&more) <= room {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(name);
            used += sep + w;
            continue;
        }
        let left = total - i;
        if i == 0 {
            // Not even one whole name: a cut one says more than a bare count.
            let tail = if left > 1 {
                format!(", +{}", left - 1)
            } else {
                String::new()
            };
            let avail = room.saturating_sub(width(&tail));
            if avail >= 8 {
                return format!("{}{tail}", truncate(name, avail));
            }
            return if room >= width(&format!("+{left}")) {
                format!("+{left}")
            } else {
                String::new()
            };
        }
        out.push_str(&format!(", +{left}"));
        return out;
    }
    if names.len() < total {
        out.push_str(&format!(", +{}", total - names.len()));
    }
    out
}

/// The line printed when a job ends without passing: `[00:12] FAILED  sim-dma-1 (1.2s): exit
/// code 3`, cut to `max` columns.
pub fn job_end_line(
    elapsed: Duration,
    status: Status,
    name: &str,
    duration_s: Option<f64>,
    reason: &str,
    max: usize,
) -> Line {
    let word = status.name().to_ascii_uppercase();
    job_line(
        elapsed,
        (&word, status_style(status)),
        name,
        duration_s,
        reason,
        max,
    )
}

/// The line printed when an attempt of a job failed and the job is queued for another
/// (`retries`): `[00:12] RETRY   sim-dma-1 (1.2s): attempt 1: exit code 3`.
pub fn retry_line(
    elapsed: Duration,
    name: &str,
    attempt: u32,
    duration_s: Option<f64>,
    reason: &str,
    max: usize,
) -> Line {
    let reason = format!("attempt {attempt}: {reason}");
    job_line(
        elapsed,
        ("RETRY", Style::Warn),
        name,
        duration_s,
        &reason,
        max,
    )
}

fn job_line(
    elapsed: Duration,
    (word, style): (&str, Style),
    name: &str,
    duration_s: Option<f64>,
    reason: &str,
    max: usize,
) -> Line {
    let mut line = Line::default();
    line.push(format!("[{}] ", clock(elapsed)), Style::Plain);
    line.push(format!("{word:<7}"), style);
    line.push(format!(" {name}"), Style::Plain);
    if let Some(d) = duration_s {
        line.push(format!(" ({})", seconds(d)), Style::Plain);
    }
    if !reason.is_empty() {
        line.push(format!(": {}", one_line(reason)), Style::Plain);
    }
    line.truncate(max);
    line
}

/// The text on one line: control characters (newlines, escape sequences) shown as `?`.
pub fn one_line(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(running: u64, passed: u64, failed: u64, killed: u64, skipped: u64) -> Counts {
        let mut c = Counts::default();
        c.0[Status::Running.index()] = running;
        c.0[Status::Passed.index()] = passed;
        c.0[Status::Failed.index()] = failed;
        c.0[Status::Killed.index()] = killed;
        c.0[Status::Skipped.index()] = skipped;
        c
    }

    #[test]
    fn truncation_counts_columns_not_bytes() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcdef", 1), "…");
        assert_eq!(truncate("abcdef", 0), "");
        // Two columns per CJK character; an emoji is two as well.
        assert_eq!(width("日本語"), 6);
        assert_eq!(truncate("日本語テスト", 7), "日本語…");
        assert!(width(&truncate("日本語テスト", 7)) <= 7);
        assert_eq!(truncate("héllo wörld", 6), "héllo…");
    }

    #[test]
    fn plurals_say_one_job() {
        assert_eq!(count(1, "job"), "1 job");
        assert_eq!(count(0, "job"), "0 jobs");
        assert_eq!(count(2, "job"), "2 jobs");
    }

    #[test]
    fn clocks_and_durations() {
        assert_eq!(clock(Duration::from_millis(7_900)), "00:07");
        assert_eq!(clock(Duration::from_secs(754)), "12:34");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(seconds(0.04), "0.0s");
        assert_eq!(seconds(12.34), "12.3s");
        assert_eq!(seconds(245.0), "4m05s");
        assert_eq!(seconds(7380.0), "2h03m");
        assert_eq!(seconds(f64::NAN), "?");
    }

    #[test]
    fn the_estimate_scales_the_time_so_far_by_what_is_left() {
        let s = Duration::from_secs;
        assert_eq!(eta(s(10), 0, 100), None, "nothing ended: no estimate");
        assert_eq!(eta(s(10), 25, 100), Some(s(30)));
        assert_eq!(eta(s(10), 50, 100), Some(s(10)));
        assert_eq!(eta(s(10), 100, 100), Some(s(0)));
        assert_eq!(eta(s(10), 5, 0), None);
    }

    #[test]
    fn the_live_line_shows_counts_percent_eta_and_names() {
        let c = counts(3, 40, 2, 0, 5);
        let v = ProgressView {
            elapsed: Duration::from_secs(12),
            total: 100,
            counts: &c,
            running: &["sim-io-19", "sim-dma-3", "build"],
        };
        let line = progress_line(&v, 119);
        assert_eq!(
            line.plain(),
            "[00:12] 47/100 47% ETA 00:13 | 3 running, 40 passed, 2 failed, 5 skipped | \
             sim-io-19, sim-dma-3, build"
        );
    }

    #[test]
    fn the_live_line_never_reaches_the_last_column() {
        let c = counts(40, 123_456, 7_890, 12, 345_678);
        let names: Vec<String> = (0..40)
            .map(|i| format!("a-rather-long-job-name-{i}"))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for max in [10, 20, 40, 59, 79, 119, 199] {
            let v = ProgressView {
                elapsed: Duration::from_secs(3 * 3600 + 17),
                total: 1_000_000,
                counts: &c,
                running: &names,
            };
            let line = progress_line(&v, max);
            assert!(line.width() <= max, "{max}: {:?}", line.plain());
            assert_eq!(width(&line.plain()), line.width());
        }
        // 79 columns (an 80-column terminal): the names give way before the counts.
        let v = ProgressView {
            elapsed: Duration::from_secs(5),
            total: 1_000_000,
            counts: &c,
            running: &names,
        };
        let l = progress_line(&v, 79).plain();
        assert_eq!(
            l, "[00:05] 477036/1000000 47% | 40 running, 7890 failed, 12 killed | a-rathe…, +39",
            "an 80-column terminal: failures and a running job before passes and skips"
        );
        // With fewer counts to show, the estimate goes before the first name would.
        let c = counts(40, 123_456, 0, 0, 0);
        let v = ProgressView { counts: &c, ..v };
        let l = progress_line(&v, 79).plain();
        assert_eq!(
            l,
            "[00:05] 123456/1000000 12% | 40 running, 123456 passed | a-rather-long-jo…, +39"
        );
        let l = progress_line(&v, 39).plain();
        assert_eq!(l, "[00:05] 123456/1000000 | 40 running");
        let c = counts(40, 12, 0, 0, 0);
        let v = ProgressView {
            total: 100,
            counts: &c,
            ..v
        };
        let l = progress_line(&v, 49).plain();
        assert_eq!(l, "[00:05] 12/100 12% | 40 running | a-rather-…, +39");
    }

    #[test]
    fn names_fill_the_room_then_count_the_rest() {
        let n = ["alpha", "beta", "gamma"];
        assert_eq!(names_fitting(&n, 3, 100), "alpha, beta, gamma");
        assert_eq!(names_fitting(&n, 3, 17), "alpha, beta, +1");
        assert_eq!(names_fitting(&n, 5, 100), "alpha, beta, gamma, +2");
        assert_eq!(names_fitting(&n, 3, 9), "alpha, +2");
        assert_eq!(
            names_fitting(&["a-very-long-job-name-indeed"], 1, 12),
            "a-very-long…"
        );
        assert_eq!(
            names_fitting(&["a-very-long-job-name-indeed", "b"], 2, 14),
            "a-very-lo…, +1"
        );
        assert_eq!(names_fitting(&["a-very-long-job-name"], 4, 5), "+4");
        assert_eq!(names_fitting(&["a-very-long-job-name"], 4, 1), "");
        for room in 0..40 {
            let s = names_fitting(&n, 9, room);
            assert!(width(&s) <= room, "{room}: {s}");
        }
    }

    #[test]
    fn job_end_lines_are_one_line_and_cut() {
        let l = job_end_line(
            Duration::from_secs(75),
            Status::Failed,
            "sim-dma-1",
            Some(1.25),
            "fail pattern matched at line 3: UVM_ERROR\x1b[31m boom\nmore",
            200,
        );
        assert_eq!(
            l.plain(),
            "[01:15] FAILED  sim-dma-1 (1.2s): fail pattern matched at line 3: UVM_ERROR?[31m boom?more"
        );
        let long = "x".repeat(65_536);
        let l = job_end_line(Duration::ZERO, Status::Killed, "t", None, &long, 79);
        assert_eq!(l.width(), 79);
        assert!(l.plain().ends_with('…'));
        assert!(l.plain().starts_with("[00:00] KILLED  t: xxx"));
    }

    #[test]
    fn colour_only_when_allowed() {
        let mut l = Line::default();
        l.push("2 failed", Style::Bad);
        assert_eq!(l.render(false), "2 failed");
        assert_eq!(l.render(true), "\x1b[1;31m2 failed\x1b[0m");
        assert_eq!(l.width(), 8);
    }
}
