//! Command templates: an argv as a TOML array, whose strings may hold placeholders such as
//! `{script}` or `{ids}`. A template is parsed and checked once, when the backend is created,
//! and expanded into an argv for each call; the argv goes to the program as it is, never
//! through a shell, so a value is always one argument (or, for `{ids}`, one argument per id).
//!
//! Syntax of one string: `{name}` is a placeholder, `{{` and `}}` are literal braces.
//! `{ids}` alone as a string becomes one argument per native id; `{ids:SEP}` anywhere in a
//! string becomes the ids joined by `SEP` (`"-j{ids:,}"` -> `-j1,2,3`). A nested array is an
//! *optional group*: its strings are left out when a placeholder in them has no value for the
//! job (`["--mem={memory_mb}M"]` for a job without a memory request), which is the only place
//! placeholders that may have no value are allowed.

use flowrun_plugin_api::PluginError;

/// A placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The job's script, which the engine writes into the job directory.
    Script,
    /// The job's log (`<job_dir>/output.log`).
    Log,
    /// The job's directory.
    JobDir,
    /// The job's working directory.
    Cwd,
    /// The run's tag as a scheduler job name (characters other than `[A-Za-z0-9._-]` become
    /// `_`); every native job of the run carries it.
    RunTag,
    /// The flowrun job's name.
    Name,
    /// The CPUs the job asks for (at least 1).
    Cpus,
    /// The memory the job asks for, in MiB (optional).
    MemoryMb,
    /// The job's time limit in whole seconds, rounded up (optional).
    TimeoutS,
    /// The job's time limit in whole minutes, rounded up, at least 1 (optional).
    TimeoutMin,
    /// The user flowrun runs as.
    User,
    /// The native ids a call is about (status, cancel, final status).
    Ids,
}

/// Every placeholder by its name.
const NAMES: &[(&str, Var)] = &[
    ("script", Var::Script),
    ("log", Var::Log),
    ("job_dir", Var::JobDir),
    ("cwd", Var::Cwd),
    ("run_tag", Var::RunTag),
    ("name", Var::Name),
    ("cpus", Var::Cpus),
    ("memory_mb", Var::MemoryMb),
    ("timeout_s", Var::TimeoutS),
    ("timeout_min", Var::TimeoutMin),
    ("user", Var::User),
    ("ids", Var::Ids),
];

impl Var {
    fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .expect("every placeholder has a name")
    }

    /// Whether a job may have no value for it (so it may appear only in an optional group).
    fn optional(self) -> bool {
        matches!(self, Var::MemoryMb | Var::TimeoutS | Var::TimeoutMin)
    }
}

/// The placeholders of a job's submission.
pub const SUBMIT_VARS: &[Var] = &[
    Var::Script,
    Var::Log,
    Var::JobDir,
    Var::Cwd,
    Var::RunTag,
    Var::Name,
    Var::Cpus,
    Var::MemoryMb,
    Var::TimeoutS,
    Var::TimeoutMin,
    Var::User,
];
/// The placeholders of a query about native ids (status, final status).
pub const ID_CALL_VARS: &[Var] = &[Var::Ids, Var::RunTag, Var::User];
/// The placeholders of a cancel by id.
pub const CANCEL_VARS: &[Var] = &[Var::Ids, Var::User];
/// The placeholders of a call about the whole run (cancelling it by name).
pub const RUN_CALL_VARS: &[Var] = &[Var::RunTag, Var::User];

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Var(Var),
    /// `{ids}` (no separator: the whole string, one argument per id) or `{ids:SEP}`.
    Ids(Option<String>),
}

#[derive(Debug, Clone, PartialEq)]
struct Word(Vec<Piece>);

impl Word {
    fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        self.0.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(*v),
            Piece::Ids(_) => Some(Var::Ids),
            Piece::Text(_) => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Element {
    Word(Word),
    /// Left out when one of its placeholders has no value.
    Group(Vec<Word>),
}

/// A parsed, checked command template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    elements: Vec<Element>,
}

/// Splits one template string into text and placeholders.
fn parse_word(text: &str, allowed: &[Var]) -> Result<Word, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        literal.push_str(&rest[..i]);
        let brace = rest.as_bytes()[i];
        let after = &rest[i + 1..];
        if after.as_bytes().first() == Some(&brace) {
            literal.push(brace as char);
            rest = &after[1..];
            continue;
        }
        if brace == b'}' {
            return Err(format!(
                "{text:?} has a `}}` that closes nothing (write `}}}}` for a literal brace)"
            ));
        }
        let end = after.find('}').ok_or_else(|| {
            format!("{text:?} has a `{{` that is never closed (write `{{{{` for a literal brace)")
        })?;
        let name = &after[..end];
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        pieces.push(match name.split_once(':') {
            Some(("ids", separator)) => Piece::Ids(Some(separator.to_string())),
            _ if name == "ids" => Piece::Ids(None),
            _ => {
                let var = NAMES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| {
                        format!(
                            "{text:?}: unknown placeholder {{{name}}}; this key's placeholders are {}",
                            list(allowed)
                        )
                    })?;
                Piece::Var(var)
            }
        });
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    let word = Word(pieces);
    for var in word.vars() {
        if !allowed.contains(&var) {
            return Err(format!(
                "{text:?}: {{{}}} cannot be used here; this key's placeholders are {}",
                var.name(),
                list(allowed)
            ));
        }
    }
    if let [_, _, ..] = word.0[..] {
        if word.0.contains(&Piece::Ids(None)) {
            return Err(format!(
                "{text:?}: {{ids}} stands for one argument per id, so it must be a whole \
                 string; inside a longer one, give a separator: {{ids:,}}"
            ));
        }
    }
    Ok(word)
}

fn list(vars: &[Var]) -> String {
    vars.iter()
        .map(|v| format!("{{{}}}", v.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn string_of(value: &toml::Value, what: &str) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{what} must be a string, not {}", value.type_str()))
}

impl Template {
    /// Parses and checks the template of `key`, which may use the placeholders `allowed`.
    pub fn parse(key: &str, value: &toml::Value, allowed: &[Var]) -> Result<Template, PluginError> {
        Self::parse_inner(value, allowed).map_err(|e| PluginError::config(key, e))
    }

    fn parse_inner(value: &toml::Value, allowed: &[Var]) -> Result<Template, String> {
        let items = value.as_array().ok_or_else(|| {
            format!(
                "must be an array of strings (a program and its arguments), not {}",
                value.type_str()
            )
        })?;
        let mut elements = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let what = format!("element {}", i + 1);
            let element = match item {
                toml::Value::Array(_) if i == 0 => {
                    return Err("the first element is the program: a string, not a group".into());
                }
                toml::Value::Array(group) => {
                    if group.is_empty() {
                        return Err(format!("{what} is an empty optional group"));
                    }
                    let mut words = Vec::with_capacity(group.len());
                    for member in group {
                        let text = string_of(member, &format!("every string of {what}"))?;
                        words.push(parse_word(&text, allowed)?);
                    }
                    let vars: Vec<Var> = words.iter().flat_map(Word::vars).collect();
                    if vars.contains(&Var::Ids) {
                        return Err(format!(
                            "{what}: {{ids}} always has a value; it cannot be in an optional group"
                        ));
                    }
                    if !vars.iter().any(|v| v.optional()) {
                        return Err(format!(
                            "{what} is an optional group without a placeholder that may have no \
                             value ({}), so it would always be included: write its strings \
                             without the brackets",
                            list(&[Var::MemoryMb, Var::TimeoutS, Var::TimeoutMin])
                        ));
                    }
                    Element::Group(words)
                }
                other => {
                    let text = string_of(other, &what)?;
                    let word = parse_word(&text, allowed)?;
                    if let Some(var) = word.vars().find(|v| v.optional()) {
                        return Err(format!(
                            "{text:?}: {{{name}}} has no value for a job without one, so it \
                             must be in an optional group such as [{text:?}], left out then",
                            name = var.name()
                        ));
                    }
                    if i == 0 && (word.0.is_empty() || word.vars().any(|v| v == Var::Ids)) {
                        return Err("the first element must name the program".into());
                    }
                    Element::Word(word)
                }
            };
            elements.push(element);
        }
        if elements.is_empty() {
            return Err("must name a program (the array is empty)".into());
        }
        Ok(Template { elements })
    }

    /// Whether the template uses `var` anywhere.
    pub fn uses(&self, var: Var) -> bool {
        self.elements.iter().any(|e| match e {
            Element::Word(w) => w.vars().any(|v| v == var),
            Element::Group(ws) => ws.iter().any(|w| w.vars().any(|v| v == var)),
        })
    }

    /// The program's name as written, for messages (its first element, placeholders shown).
    pub fn program_hint(&self) -> String {
        match &self.elements[0] {
            Element::Word(w) => {
                w.0.iter()
                    .map(|p| match p {
                        Piece::Text(t) => t.clone(),
                        Piece::Var(v) => format!("{{{}}}", v.name()),
                        Piece::Ids(_) => "{ids}".into(),
                    })
                    .collect()
            }
            Element::Group(_) => unreachable!("parse refuses a group first"),
        }
    }

    /// The argv for one call: `value` gives each placeholder's value (`None`: the job has
    /// none), `ids` the native ids. An error means a value is missing where it is required,
    /// which `parse` rules out for the placeholders of each key.
    pub fn expand(
        &self,
        value: &dyn Fn(Var) -> Option<String>,
        ids: &[String],
    ) -> Result<Vec<String>, String> {
        let word = |w: &Word, argv: &mut Vec<String>| -> Option<()> {
            if let [Piece::Ids(None)] = w.0[..] {
                argv.extend(ids.iter().cloned());
                return Some(());
            }
            let mut text = String::new();
            for piece in &w.0 {
                match piece {
                    Piece::Text(t) => text.push_str(t),
                    Piece::Var(v) => text.push_str(&value(*v)?),
                    Piece::Ids(separator) => {
                        text.push_str(&ids.join(separator.as_deref().unwrap_or(",")))
                    }
                }
            }
            argv.push(text);
            Some(())
        };
        let mut argv = Vec::new();
        for element in &self.elements {
            match element {
                Element::Word(w) => word(w, &mut argv).ok_or_else(|| {
                    format!(
                        "a placeholder of {:?} has no value",
                        Template {
                            elements: vec![Element::Word(w.clone())]
                        }
                        .program_hint()
                    )
                })?,
                Element::Group(ws) => {
                    let mut group = Vec::new();
                    if ws.iter().all(|w| word(w, &mut group).is_some()) {
                        argv.extend(group);
                    }
                }
            }
        }
        Ok(argv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str, allowed: &[Var]) -> Result<Template, String> {
        let value: toml::Table = toml::from_str(&format!("t = {text}")).unwrap();
        Template::parse("t", &value["t"], allowed).map_err(|e| e.message.to_string())
    }

    fn values(var: Var) -> Option<String> {
        match var {
            Var::Script => Some("/r/jobs/a b/command-job.sh".into()),
            Var::RunTag => Some("flowrun-x-1".into()),
            Var::Cpus => Some("2".into()),
            Var::TimeoutS => Some("90".into()),
            Var::MemoryMb | Var::TimeoutMin => None,
            _ => Some("v".into()),
        }
    }

    #[test]
    fn placeholders_become_whole_arguments_and_groups_drop_out() {
        let t = template(
            r#"["qsub", "-N", "{run_tag}", "-l", "slots={cpus}", ["-l", "h_rt={timeout_s}"],
                ["--mem={memory_mb}M"], "{{literal}}", "{script}"]"#,
            SUBMIT_VARS,
        )
        .unwrap();
        assert_eq!(
            t.expand(&values, &[]).unwrap(),
            [
                "qsub",
                "-N",
                "flowrun-x-1",
                "-l",
                "slots=2",
                "-l",
                "h_rt=90",
                "{literal}",
                "/r/jobs/a b/command-job.sh"
            ]
        );
        assert!(t.uses(Var::Script) && !t.uses(Var::Log));
        assert_eq!(t.program_hint(), "qsub");
    }

    #[test]
    fn ids_expand_to_one_argument_each_or_joined() {
        let t = template(
            r#"["sacct", "-j", "{ids:,}", "{ids}", "x{ids:+}y"]"#,
            ID_CALL_VARS,
        )
        .unwrap();
        let ids = ["1".to_string(), "2".into()];
        assert_eq!(
            t.expand(&values, &ids).unwrap(),
            ["sacct", "-j", "1,2", "1", "2", "x1+2y"]
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, allowed, wanted) in [
            (
                r#"["qsub", "{scritp}"]"#,
                SUBMIT_VARS,
                "unknown placeholder {scritp}",
            ),
            (
                r#"["qsub", "{ids}"]"#,
                SUBMIT_VARS,
                "{ids} cannot be used here",
            ),
            (
                r#"["qdel", "{script}"]"#,
                ID_CALL_VARS,
                "{script} cannot be used here",
            ),
            (r#"["qdel", "-j{ids}"]"#, ID_CALL_VARS, "give a separator"),
            (
                r#"["qsub", "--mem={memory_mb}"]"#,
                SUBMIT_VARS,
                "optional group",
            ),
            (
                r#"["qsub", ["-V"]]"#,
                SUBMIT_VARS,
                "would always be included",
            ),
            (r#"["qsub", []]"#, SUBMIT_VARS, "empty optional group"),
            (
                r#"["qdel", ["{ids}"]]"#,
                ID_CALL_VARS,
                "cannot be in an optional group",
            ),
            (
                r#"[["qsub"]]"#,
                SUBMIT_VARS,
                "the first element is the program",
            ),
            (r#"["{ids}"]"#, ID_CALL_VARS, "must name the program"),
            (r#"[]"#, SUBMIT_VARS, "must name a program"),
            (r#""qsub x""#, SUBMIT_VARS, "must be an array"),
            (r#"["qsub", 3]"#, SUBMIT_VARS, "element 2 must be a string"),
            (r#"["qsub", "a}b"]"#, SUBMIT_VARS, "closes nothing"),
            (r#"["qsub", "a{b"]"#, SUBMIT_VARS, "never closed"),
        ] {
            let e = template(text, allowed).unwrap_err();
            assert!(e.starts_with("`t`: "), "{text}: {e}");
            assert!(e.contains(wanted), "{text}: {e}");
        }
    }
}
