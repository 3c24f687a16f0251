//! The terminal the display writes to (stderr): what it may do there, how wide it is, and the
//! one lock every writer of stderr takes, so that a log line never lands in the middle of the
//! live status line and the live line never overwrites a log line.
//!
//! The live line is drawn without escape sequences: a carriage return, the line, and spaces over
//! whatever the previous line left. The line is always narrower than the terminal, so it never
//! wraps, and a carriage return always brings the cursor back to its start. That works the same
//! on every terminal, with `NO_COLOR`, and over a serial console; escape sequences are used only
//! for colour, and only where colour is allowed.

use std::{
    io::{IsTerminal, Write},
    sync::atomic::{AtomicBool, Ordering},
};

use parking_lot::{Mutex, MutexGuard};

/// What the display may do on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// stderr is a terminal that can be redrawn in place: draw the live line.
    pub live: bool,
    /// Escape sequences for colour are allowed.
    pub colour: bool,
}

impl Caps {
    /// Decides from the facts: stderr is a terminal, `$TERM`, and `$NO_COLOR` (set and not
    /// empty, as no-color.org defines it). A `dumb` terminal gets plain lines, as without a
    /// terminal: it may not even honour a carriage return.
    pub fn decide(stderr_is_tty: bool, term: Option<&str>, no_color: Option<&str>) -> Caps {
        let dumb = matches!(term, Some("dumb"));
        let live = stderr_is_tty && !dumb;
        Caps {
            live,
            colour: live && no_color.is_none_or(str::is_empty),
        }
    }

    /// The capabilities of this process's stderr.
    pub fn detect() -> Caps {
        Caps::decide(
            std::io::stderr().is_terminal(),
            std::env::var("TERM").ok().as_deref(),
            std::env::var("NO_COLOR").ok().as_deref(),
        )
    }
}

/// The width to format plain (non-terminal) output for: `$COLUMNS` if set, else this. Wide
/// enough for CI logs, which do not wrap.
pub const PLAIN_WIDTH: usize = 100;

/// The width of the terminal on stderr, read each time (terminals get resized): the terminal's
/// own size, else `$COLUMNS`, else 80 (a pseudo-terminal nobody sized reports 0 columns).
pub fn terminal_width() -> usize {
    match terminal_size::terminal_size_of(std::io::stderr()) {
        Some((terminal_size::Width(w), _)) if w > 0 => w as usize,
        _ => columns_env().unwrap_or(80),
    }
}

/// `$COLUMNS`, when it is a sensible number.
pub fn columns_env() -> Option<usize> {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c >= 20)
}

/// What is on the screen's last line, guarded by [`SCREEN`].
struct Screen {
    /// Columns of the live line now on the screen (0: none).
    live_width: usize,
    /// Its text, so that an unchanged line is not written again.
    live_text: String,
    /// An interactive job holds the terminal: nothing may be drawn until it gives it back.
    held: bool,
}

/// Every write to stderr by the display and by the log subscriber goes through this lock.
static SCREEN: Mutex<Screen> = parking_lot::const_mutex(Screen {
    live_width: 0,
    live_text: String::new(),
    held: false,
});

/// Whether a live line may be on the screen at all; lets log lines skip the lock's bookkeeping
/// when no display draws one.
static LIVE_IN_USE: AtomicBool = AtomicBool::new(false);

/// The characters that blank `width` columns of the current line and return to its start.
fn blank(out: &mut String, width: usize) {
    if width > 0 {
        out.push('\r');
        out.extend(std::iter::repeat_n(' ', width));
        out.push('\r');
    }
}

/// Exclusive access to stderr for one burst of output.
pub struct ScreenGuard {
    screen: MutexGuard<'static, Screen>,
    out: String,
}

/// Takes the screen.
pub fn screen() -> ScreenGuard {
    ScreenGuard {
        screen: SCREEN.lock(),
        out: String::new(),
    }
}

impl ScreenGuard {
    /// Removes the live line, if one is drawn.
    pub fn clear_live(&mut self) {
        blank(&mut self.out, self.screen.live_width);
        self.screen.live_width = 0;
    }

    /// Prints text that ends with a newline, above (in place of) the live line.
    pub fn print(&mut self, text: &str) {
        self.clear_live();
        self.out.push_str(text);
    }

    /// Draws the live line over the previous one. `text` holds `width` visible columns, fewer
    /// than the terminal's (the caller truncates), and no newline. Does nothing while an
    /// interactive job holds the terminal.
    pub fn draw_live(&mut self, text: &str, width: usize) {
        if self.screen.held || (self.screen.live_width > 0 && self.screen.live_text == text) {
            return;
        }
        LIVE_IN_USE.store(true, Ordering::Relaxed);
        self.out.push('\r');
        self.out.push_str(text);
        let leftover = self.screen.live_width.saturating_sub(width);
        self.out.extend(std::iter::repeat_n(' ', leftover));
        // The cursor stays after the padding (already blank); the next draw starts with a
        // carriage return.
        self.screen.live_width = width;
        self.screen.live_text.clear();
        self.screen.live_text.push_str(text);
    }

    /// An interactive job takes the terminal (`true`) or gives it back (`false`). Taking it
    /// clears the live line at once, before the job can print its first prompt.
    pub fn set_held(&mut self, held: bool) {
        if held {
            self.clear_live();
        }
        self.screen.held = held;
    }
}

impl Drop for ScreenGuard {
    fn drop(&mut self) {
        if !self.out.is_empty() {
            let mut err = std::io::stderr().lock();
            // Nothing sensible can be done about a broken stderr; the run goes on.
            let _ = err.write_all(self.out.as_bytes());
            let _ = err.flush();
        }
    }
}

/// The writer of flowrun's log lines (`tracing`): takes the screen, removes the live line, then
/// writes the log line; the display redraws its line at its next tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

/// One log line being written, holding the screen.
pub struct LogLine {
    screen: Option<ScreenGuard>,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        let screen = LIVE_IN_USE.load(Ordering::Relaxed).then(|| {
            let mut s = screen();
            s.clear_live();
            s
        });
        LogLine { screen }
    }
}

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.screen {
            // The screen guard writes once, when dropped; log lines are UTF-8 text.
            Some(s) => {
                s.out.push_str(&String::from_utf8_lossy(buf));
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &self.screen {
            Some(_) => Ok(()),
            None => std::io::stderr().flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_terminal_that_is_not_dumb_gets_the_live_line() {
        let live = |tty, term| Caps::decide(tty, term, None).live;
        assert!(live(true, Some("xterm-256color")));
        assert!(live(true, None));
        assert!(!live(true, Some("dumb")));
        assert!(!live(false, Some("xterm")));
    }

    #[test]
    fn colour_needs_a_live_terminal_and_no_no_color() {
        let colour = |tty, term, nc| Caps::decide(tty, term, nc).colour;
        assert!(colour(true, Some("xterm"), None));
        assert!(
            colour(true, Some("xterm"), Some("")),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour(true, Some("xterm"), Some("1")));
        assert!(!colour(true, Some("dumb"), None));
        assert!(!colour(false, Some("xterm"), None));
    }

    #[test]
    fn blanking_returns_to_the_start_of_the_line_without_escape_sequences() {
        let mut s = String::new();
        blank(&mut s, 3);
        assert_eq!(s, "\r   \r");
        let mut none = String::new();
        blank(&mut none, 0);
        assert_eq!(none, "");
    }
}
