//! Diagnostics: what is wrong with a flow, where, and what to do about it; and the report that
//! `flowrun check` prints for them.

use std::{borrow::Cow, fmt, ops::Range, path::Path, sync::Arc};

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use super::model::Location;

/// One problem found while loading a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is (file, line, column of the offending key or value), if anywhere.
    pub location: Option<Location>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
    /// How many bytes of source the problem spans from `location` (underlined in the report);
    /// 0 when only the position is known.
    pub span_len: usize,
    /// The source line at `location`, attached when loading fails (the report shows it).
    pub snippet: Option<SourceLine>,
}

/// A line of a flow file, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    /// 1-based line number.
    pub line: u32,
    /// The line without its ending, cut to a window around the problem when it is long.
    pub text: String,
    /// The bytes of `text` to underline.
    pub span: Range<usize>,
}

impl Diagnostic {
    /// A diagnostic at `location`.
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        Diagnostic {
            location: Some(location),
            message: message.into(),
            help: None,
            span_len: 0,
            snippet: None,
        }
    }

    /// A diagnostic that is about no place in particular.
    pub fn global(message: impl Into<String>) -> Self {
        Diagnostic {
            location: None,
            message: message.into(),
            help: None,
            span_len: 0,
            snippet: None,
        }
    }

    /// Adds (or replaces) the help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a help line if `help` is `Some`.
    pub fn with_opt_help(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    /// Sets how many bytes of source the problem spans.
    pub(super) fn with_span_len(mut self, len: usize) -> Self {
        self.span_len = len;
        self
    }
}

/// The first line of a diagnostic: `file:line:col: error: message` (users and scripts rely on it).
fn first_line(d: &Diagnostic) -> String {
    let message = printable(&d.message);
    match &d.location {
        Some(location) => format!("{}: error: {message}", fmt_location(location)),
        None => format!("error: {message}"),
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&first_line(self))?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {}", printable(help))?;
        }
        Ok(())
    }
}

/// At most this many diagnostics are printed in full by [`report`]; the rest are counted.
pub(super) const MAX_SHOWN: usize = 30;
/// Messages and help texts longer than this many characters are cut in the middle (a 1 MB key
/// is echoed as its start and end).
const MAX_TEXT_CHARS: usize = 300;
/// Source lines are cut to about this many characters on each side of the problem.
const SNIPPET_WINDOW_CHARS: usize = 160;

/// `text` cut to at most about `max` characters: its start and its end around a note of how
/// much was left out.
pub(super) fn shorten(text: &str, max: usize) -> Cow<'_, str> {
    let count = text.chars().count();
    if count <= max {
        return Cow::Borrowed(text);
    }
    let head = max * 2 / 3;
    let tail = max / 4;
    let head_end = text.char_indices().nth(head).map_or(text.len(), |(i, _)| i);
    let tail_start = text
        .char_indices()
        .nth(count - tail)
        .map_or(text.len(), |(i, _)| i);
    Cow::Owned(format!(
        "{}[... {} characters ...]{}",
        &text[..head_end],
        count - head - tail,
        &text[tail_start..]
    ))
}

/// A message or help text as printed: cut to [`MAX_TEXT_CHARS`], control characters (an ESC
/// from a key, a NUL) written as escapes so that they cannot reach the terminal.
fn printable(text: &str) -> Cow<'_, str> {
    printable_within(text, MAX_TEXT_CHARS)
}

/// `text` cut to about `max` characters (see [`shorten`]) with control characters written as
/// escapes (`\n`, `\u{1b}`): one line, safe to print.
pub(super) fn printable_within(text: &str, max: usize) -> Cow<'_, str> {
    let text = shorten(text, max);
    if !text.contains(char::is_control) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The report of a flow that failed to load: each diagnostic's first line, the source line
/// with the problem underlined when it is known, and the help; at most 30 of them,
/// then how many more there are and the total.
pub fn report(diags: &[Diagnostic]) -> String {
    let renderer = Renderer::plain();
    let mut out = String::new();
    for (i, d) in diags.iter().take(MAX_SHOWN).enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        out.push_str(&first_line(d));
        let help = d.help.as_deref().map(printable);
        match &d.snippet {
            Some(source) => {
                let mut group = Group::with_level(Level::ERROR).element(
                    Snippet::source(source.text.as_str())
                        .line_start(source.line as usize)
                        .annotation(AnnotationKind::Primary.span(source.span.clone())),
                );
                if let Some(help) = &help {
                    group = group.element(Level::HELP.message(help.as_ref()));
                }
                out.push('\n');
                out.push_str(renderer.render(&[group]).trim_end());
            }
            None => {
                if let Some(help) = &help {
                    out.push_str(&format!("\n  = help: {help}"));
                }
            }
        }
    }
    if diags.len() > MAX_SHOWN {
        out.push_str(&format!(
            "\n\n... and {} more errors (the first {MAX_SHOWN} are shown)",
            diags.len() - MAX_SHOWN
        ));
    }
    if diags.len() > 1 {
        out.push_str(&format!("\n{} errors", diags.len()));
    }
    out
}

impl std::error::Error for Diagnostic {}

/// `path:line:column`.
pub(super) fn fmt_location(location: &Location) -> String {
    format!(
        "{}:{}:{}",
        location.file.display(),
        location.line,
        location.column
    )
}

/// Turns byte offsets of one file into [`Location`]s.
pub(super) struct SourceMap<'s> {
    file: Arc<Path>,
    text: &'s str,
    line_starts: Vec<usize>,
}

impl<'s> SourceMap<'s> {
    pub(super) fn new(file: Arc<Path>, text: &'s str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceMap {
            file,
            text,
            line_starts,
        }
    }

    /// The file's text.
    pub(super) fn text(&self) -> &'s str {
        self.text
    }

    /// The source line at `location` with `span_len` bytes from there underlined, cut to a
    /// window around the problem when the line is long.
    pub(super) fn snippet(&self, location: &Location, span_len: usize) -> Option<SourceLine> {
        let index = (location.line as usize).checked_sub(1)?;
        let start = *self.line_starts.get(index)?;
        let end = self
            .line_starts
            .get(index + 1)
            .map_or(self.text.len(), |&next| next - 1);
        let line = self.text.get(start..end)?.trim_end_matches('\r');
        // The column counts characters from 1.
        let at = line
            .char_indices()
            .nth((location.column as usize).saturating_sub(1))
            .map_or(line.len(), |(i, _)| i);
        let span_len = if span_len == 0 {
            token_len(&line[at..])
        } else {
            span_len
        };
        let mut span_end = at + span_len.min(line.len() - at);
        while !line.is_char_boundary(span_end) {
            span_end += 1;
        }
        let window_start = line[..at]
            .char_indices()
            .rev()
            .nth(SNIPPET_WINDOW_CHARS)
            .map_or(0, |(i, _)| i);
        let window_end = line[span_end..]
            .char_indices()
            .nth(SNIPPET_WINDOW_CHARS)
            .map_or(line.len(), |(i, _)| span_end + i);
        let mut text = String::new();
        let mut shift = 0;
        if window_start > 0 {
            text.push_str("...");
            shift = 3;
        }
        text.push_str(&line[window_start..window_end]);
        if window_end < line.len() {
            text.push_str("...");
        }
        let span = at - window_start + shift..span_end - window_start + shift;
        Some(SourceLine {
            line: location.line,
            text,
            span,
        })
    }

    /// The location of byte `offset` (clamped to the text); columns count characters.
    pub(super) fn location(&self, offset: usize) -> Location {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let start = self.line_starts[line];
        let column = self.text[start..offset].chars().count() + 1;
        Location {
            file: self.file.clone(),
            line: line as u32 + 1,
            column: column as u32,
        }
    }
}

/// The length of the TOML token at the start of `rest`, for diagnostics that know only where a
/// problem starts: a quoted string, a `[table]` or `[[array]]` header, or a bare word or number.
fn token_len(rest: &str) -> usize {
    let mut chars = rest.char_indices();
    match chars.next() {
        None => 0,
        Some((_, quote @ ('"' | '\''))) => {
            let mut escaped = false;
            for (i, c) in chars {
                if c == quote && !escaped {
                    return i + 1;
                }
                escaped = quote == '"' && c == '\\' && !escaped;
            }
            rest.len()
        }
        Some((_, '[')) => match rest.find(']') {
            Some(close) => close + rest[close..].chars().take_while(|&c| c == ']').count(),
            None => rest.len(),
        },
        Some(_) => rest
            .find(|c: char| c.is_whitespace() || matches!(c, '=' | ',' | ']' | '}'))
            .unwrap_or(rest.len())
            .max(1),
    }
}

/// The candidate most similar to `word` (for "did you mean"), if any is close enough.
///
/// A typo rarely changes a word's first letter, while a different word often differs in just
/// that (`gpus` is not a misspelt `cpus`): a candidate starting with another letter must be a
/// much closer match.
pub(super) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let first = |s: &str| s.chars().next().map(|c| c.to_lowercase().next());
    let mut best: Option<(f64, &str)> = None;
    let word_len = word.chars().count();
    for candidate in candidates {
        let candidate_len = candidate.chars().count();
        let longest = word_len.max(candidate_len).max(1);
        // At least the length difference in edits: too far for either test below (this also
        // keeps a 1 MB key from costing seconds of edit distance).
        if word_len.abs_diff(candidate_len) * 5 > longest * 2 {
            continue;
        }
        let edits = strsim::osa_distance(word, candidate);
        let score = 1.0 - edits as f64 / longest as f64;
        let close = if first(word) == first(candidate) {
            score >= 0.6 || strsim::jaro_winkler(word, candidate) >= 0.9
        } else {
            score >= 0.8
        };
        if close && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// Up to `max` candidates nearest to `word` by edit distance (close enough to be a typo).
pub(super) fn nearest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    max: usize,
) -> Vec<String> {
    let limit = (word.chars().count() / 3).max(2);
    let mut found: Vec<(usize, &str)> = Vec::new();
    for candidate in candidates {
        // Cheap length filter first: the distance is at least the length difference.
        if candidate.len().abs_diff(word.len()) > limit * 4 {
            continue;
        }
        let distance = strsim::osa_distance(word, candidate);
        if distance <= limit {
            found.push((distance, candidate));
        }
    }
    found.sort();
    found.dedup_by(|a, b| a.1 == b.1);
    found
        .into_iter()
        .take(max)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// `a`, `a` or `b`, `a`, `b` or `c`, each in backquotes.
pub(super) fn one_of(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("`{s}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

/// A "did you mean" help text, if there is a suggestion.
pub(super) fn did_you_mean_help(suggestions: &[String]) -> Option<String> {
    if suggestions.is_empty() {
        None
    } else {
        Some(format!("did you mean {}?", one_of(suggestions)))
    }
}
