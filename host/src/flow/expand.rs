//! `{var}` templates and matrix expansion.

use std::fmt::Write as _;

/// A string with `{var}` placeholders, parsed once per `[[job]]` and expanded per matrix entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    /// Index into the matrix's variables.
    Var(usize),
}

/// Whether `name` is a valid matrix variable name.
pub(super) fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TemplateError {
    UnknownVar(String),
    Unclosed,
    UnmatchedClose,
    BadVarName(String),
}

impl Template {
    /// Parses `text` against the matrix variables `vars`.
    #[cfg(test)]
    pub(super) fn parse(text: &str, vars: &[String]) -> Result<Template, TemplateError> {
        Self::parse_at(text, vars).map_err(|(e, _)| e)
    }

    /// Parses `text` against the matrix variables `vars`; an error comes with the byte offset
    /// of the offending brace in `text`.
    pub(super) fn parse_at(
        text: &str,
        vars: &[String],
    ) -> Result<Template, (TemplateError, usize)> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            let at = text.len() - rest.len() + i;
            lit.push_str(&rest[..i]);
            let brace = rest.as_bytes()[i];
            let after = &rest[i + 1..];
            if after.as_bytes().first() == Some(&brace) {
                lit.push(brace as char);
                rest = &after[1..];
                continue;
            }
            if brace == b'}' {
                return Err((TemplateError::UnmatchedClose, at));
            }
            let Some(end) = after.find(['}', '{']) else {
                return Err((TemplateError::Unclosed, at));
            };
            if after.as_bytes()[end] == b'{' {
                return Err((TemplateError::Unclosed, at));
            }
            let name = &after[..end];
            if !is_var_name(name) {
                return Err((TemplateError::BadVarName(name.to_string()), at));
            }
            let Some(index) = vars.iter().position(|v| v == name) else {
                return Err((TemplateError::UnknownVar(name.to_string()), at));
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Var(index));
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() || parts.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// The text, if the template has no variables.
    pub(super) fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// Whether the template uses variable `index`.
    pub(super) fn uses(&self, index: usize) -> bool {
        self.parts.contains(&Part::Var(index))
    }

    /// The length of the expansion with `values`.
    fn expanded_len(&self, values: &[String]) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.len(),
                Part::Var(i) => values[*i].len(),
            })
            .sum()
    }

    /// Appends the expansion with `values` (one per matrix variable) to `out`.
    pub(super) fn expand_into(&self, values: &[String], out: &mut String) {
        out.reserve(self.expanded_len(values));
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(i) => out.push_str(&values[*i]),
            }
        }
    }

    /// The expansion with `values`.
    pub(super) fn expand(&self, values: &[String]) -> String {
        if let Some(s) = self.as_literal() {
            return s.to_string();
        }
        let mut out = String::with_capacity(self.expanded_len(values));
        self.expand_into(values, &mut out);
        out
    }
}

/// The values one matrix variable takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Axis {
    List(Vec<String>),
    /// Inclusive.
    Range(i64, i64),
}

impl Axis {
    /// How many values: a range over all of `i64` has 2^64, one more than `u64` holds.
    pub(super) fn count(&self) -> u128 {
        match self {
            Axis::List(values) => values.len() as u128,
            // A range is never empty (first <= last is checked): no underflow.
            Axis::Range(a, b) => (*b as i128 - *a as i128 + 1) as u128,
        }
    }

    fn len(&self) -> u64 {
        u64::try_from(self.count()).unwrap_or(u64::MAX)
    }

    fn write(&self, index: u64, out: &mut String) {
        out.clear();
        match self {
            Axis::List(values) => out.push_str(&values[index as usize]),
            Axis::Range(a, _) => {
                let _ = write!(out, "{}", *a as i128 + index as i128);
            }
        }
    }
}

/// A job's matrix: variables in the order written; no variables = one plain job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Matrix {
    pub(super) vars: Vec<String>,
    pub(super) axes: Vec<Axis>,
}

impl Matrix {
    /// How many jobs the matrix expands to, exactly up to `u128::MAX` (then saturated).
    pub(super) fn count(&self) -> u128 {
        self.axes
            .iter()
            .fold(1u128, |n, a| n.saturating_mul(a.count()))
    }

    /// How many jobs the matrix expands to, saturated at `u64::MAX`.
    pub(super) fn len(&self) -> u64 {
        u64::try_from(self.count()).unwrap_or(u64::MAX)
    }

    /// Calls `f` with the variables' values for every combination, the first variable varying
    /// slowest. `f` gets the running index too.
    pub(super) fn for_each(&self, mut f: impl FnMut(u64, &[String])) {
        let total = self.len();
        if total == 0 {
            return;
        }
        let mut counters = vec![0u64; self.axes.len()];
        let mut values: Vec<String> = vec![String::new(); self.axes.len()];
        for (i, axis) in self.axes.iter().enumerate() {
            axis.write(0, &mut values[i]);
        }
        for n in 0..total {
            f(n, &values);
            // Odometer step: the last variable varies fastest.
            for i in (0..self.axes.len()).rev() {
                counters[i] += 1;
                if counters[i] < self.axes[i].len() {
                    self.axes[i].write(counters[i], &mut values[i]);
                    break;
                }
                counters[i] = 0;
                self.axes[i].write(0, &mut values[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn literal_and_escapes() {
        let t = Template::parse("a {{b}} c", &[]).unwrap();
        assert_eq!(t.as_literal(), Some("a {b} c"));
        assert_eq!(Template::parse("", &[]).unwrap().as_literal(), Some(""));
        assert_eq!(
            Template::parse("${{HOME}}", &[]).unwrap().expand(&[]),
            "${HOME}"
        );
    }

    #[test]
    fn variables_expand() {
        let v = vars(&["test", "seed"]);
        let t = Template::parse("sim-{test}-{seed}.{{x}}", &v).unwrap();
        assert!(t.uses(0) && t.uses(1));
        assert_eq!(t.expand(&vars(&["dma", "7"])), "sim-dma-7.{x}");
        let t = Template::parse("{seed}", &v).unwrap();
        assert!(!t.uses(0));
        assert_eq!(t.expand(&vars(&["a", "3"])), "3");
    }

    #[test]
    fn template_errors() {
        let v = vars(&["test"]);
        assert_eq!(
            Template::parse("{nope}", &v),
            Err(TemplateError::UnknownVar("nope".into()))
        );
        assert_eq!(Template::parse("a {test", &v), Err(TemplateError::Unclosed));
        assert_eq!(
            Template::parse("a {te{st}", &v),
            Err(TemplateError::Unclosed)
        );
        assert_eq!(
            Template::parse("a }", &v),
            Err(TemplateError::UnmatchedClose)
        );
        assert_eq!(
            Template::parse("{a b}", &v),
            Err(TemplateError::BadVarName("a b".into()))
        );
        assert_eq!(
            Template::parse("{}", &v),
            Err(TemplateError::BadVarName("".into()))
        );
    }

    #[test]
    fn matrix_order_and_ranges() {
        let m = Matrix {
            vars: vars(&["t", "s"]),
            axes: vec![Axis::List(vars(&["a", "b"])), Axis::Range(-1, 1)],
        };
        assert_eq!(m.len(), 6);
        let mut seen = Vec::new();
        m.for_each(|n, v| seen.push(format!("{n}:{}{}", v[0], v[1])));
        assert_eq!(seen, ["0:a-1", "1:a0", "2:a1", "3:b-1", "4:b0", "5:b1"]);
        let empty = Matrix::default();
        let mut count = 0;
        empty.for_each(|_, v| {
            assert!(v.is_empty());
            count += 1
        });
        assert_eq!(count, 1);
    }

    #[test]
    fn counts_do_not_wrap() {
        let all = Axis::Range(i64::MIN, i64::MAX);
        assert_eq!(all.count(), 1u128 << 64);
        let m = Matrix {
            vars: vars(&["a"]),
            axes: vec![all.clone()],
        };
        // 2^64 used to wrap to 0 jobs.
        assert_eq!(m.len(), u64::MAX);
        let m = Matrix {
            vars: vars(&["a", "b", "c"]),
            axes: vec![all.clone(), all.clone(), all],
        };
        assert_eq!(m.count(), u128::MAX);
        assert_eq!(m.len(), u64::MAX);
    }
}
