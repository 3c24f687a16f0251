//! Diagnostics: what is wrong with a flow, where, and what to do about it.

use std::{fmt, path::Path, sync::Arc};

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
}

impl Diagnostic {
    /// A diagnostic at `location`.
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        Diagnostic {
            location: Some(location),
            message: message.into(),
            help: None,
        }
    }

    /// A diagnostic that is about no place in particular.
    pub fn global(message: impl Into<String>) -> Self {
        Diagnostic {
            location: None,
            message: message.into(),
            help: None,
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
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            write!(f, "{}: ", fmt_location(location))?;
        }
        write!(f, "error: {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
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

/// The candidate most similar to `word` (for "did you mean"), if any is close enough.
pub(super) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        let edits = strsim::osa_distance(word, candidate);
        let longest = word.chars().count().max(candidate.chars().count()).max(1);
        let score = 1.0 - edits as f64 / longest as f64;
        let close = score >= 0.6 || strsim::jaro_winkler(word, candidate) >= 0.9;
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
