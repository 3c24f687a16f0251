//! Reading what the scheduler prints: the regexes of the backend table (the native id in the
//! submission's output, the rows of a status or final-status query, messages) and the state
//! table that says what each native state name means. Everything is compiled and checked
//! when the backend is created.
//!
//! Every regex is compiled in multi-line mode: `^` and `$` match at the start and end of each
//! line (so `'^(\d+)'` finds an id on any line, after a site's banner lines).

use std::collections::HashMap;

use flowrun_plugin_api::{engine::NativeStatus, PluginError};
use regex::{Regex, RegexBuilder};

fn compile(key: &str, text: &str) -> Result<Regex, PluginError> {
    RegexBuilder::new(text)
        .multi_line(true)
        .build()
        .map_err(|e| {
            let detail = e.to_string();
            // The regex crate's message is a multi-line picture of the pattern: keep its
            // last line, which says what is wrong.
            let what = detail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid")
                .trim()
                .trim_start_matches("error: ");
            PluginError::config(key, format!("{text:?} is not a valid regex: {what}"))
        })
}

/// A regex for messages (`transient`, `cancel_ok`, `status_ok`, ...).
pub fn message(key: &str, text: &str) -> Result<Regex, PluginError> {
    compile(key, text)
}

/// `submit_id`: where the native id is in the submission's standard output.
#[derive(Debug, Clone)]
pub struct IdPattern {
    regex: Regex,
    /// The group holding the id: `id` if named, else the first.
    group: Option<&'static str>,
}

impl IdPattern {
    pub fn parse(key: &str, text: &str) -> Result<IdPattern, PluginError> {
        let regex = compile(key, text)?;
        let named = regex.capture_names().flatten().any(|n| n == "id");
        if !named && regex.captures_len() < 2 {
            return Err(PluginError::config(
                key,
                format!(
                    "{text:?} has no capture group: put the native id in (?P<id>...) or in the \
                     first group, such as '^(\\d+)'"
                ),
            ));
        }
        Ok(IdPattern {
            regex,
            group: named.then_some("id"),
        })
    }

    /// The first id in `text`, if any.
    pub fn find(&self, text: &str) -> Option<String> {
        let captures = self.regex.captures(text)?;
        let id = match self.group {
            Some(name) => captures.name(name),
            None => captures.get(1),
        }?;
        let id = id.as_str().trim();
        (!id.is_empty()).then(|| id.to_string())
    }
}

/// The named groups a row regex may have.
const ROW_GROUPS: &[&str] = &["id", "state", "exit", "reason"];

/// How the rows of a query are found in its output.
#[derive(Debug, Clone)]
pub struct RowPattern {
    regex: Regex,
    /// Matched against each line (`*_line`), or repeatedly over the whole output
    /// (`*_record`, for formats that spread a job over several lines).
    per_line: bool,
}

impl RowPattern {
    pub fn parse(key: &str, text: &str, per_line: bool) -> Result<RowPattern, PluginError> {
        let regex = compile(key, text)?;
        let names: Vec<&str> = regex.capture_names().flatten().collect();
        for required in ["id", "state"] {
            if !names.contains(&required) {
                return Err(PluginError::config(
                    key,
                    format!(
                        "{text:?} has no group named `{required}`: write (?P<{required}>...) \
                         around the job's {}",
                        if required == "id" {
                            "native id"
                        } else {
                            "state"
                        }
                    ),
                ));
            }
        }
        if let Some(other) = names.iter().find(|n| !ROW_GROUPS.contains(n)) {
            return Err(PluginError::config(
                key,
                format!(
                    "{text:?} has a group named `{other}`, which is not read: the groups are \
                     `id`, `state` and the optional `exit` (the exit status) and `reason`"
                ),
            ));
        }
        Ok(RowPattern { regex, per_line })
    }

    /// The rows in a query's output. A row without an id is skipped; an `exit` that is not a
    /// number (`-`, empty) is unknown.
    pub fn rows(&self, text: &str) -> Vec<NativeStatus> {
        let row = |c: regex::Captures| -> Option<NativeStatus> {
            let group = |name: &str| c.name(name).map_or("", |m| m.as_str().trim());
            let id = group("id");
            if id.is_empty() {
                return None;
            }
            Some(NativeStatus {
                id: id.to_string(),
                state: group("state").to_string(),
                reason: group("reason").to_string(),
                exit_code: group("exit").parse().ok(),
                ..Default::default()
            })
        };
        if self.per_line {
            text.lines()
                .filter_map(|line| self.regex.captures(line).and_then(row))
                .collect()
        } else {
            self.regex.captures_iter(text).filter_map(row).collect()
        }
    }
}

/// What a native state (or reason) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Waiting to run.
    Pending,
    /// Running (or winding down).
    Running,
    /// Started and paused; counts as running.
    Suspended,
    /// Waiting for something that will never come without an admin (the request exceeds the
    /// cluster, the job is held in error): cancelled and failed after `lost_after`.
    Stuck,
    /// The scheduler does not know where the job stands (lost contact with its host): lost
    /// if it stays so for `lost_after`.
    Unknown,
    /// Ended: the exit status decides (0 passes).
    Done,
    /// Ended in failure: never passes; the exit status is reported when known.
    Failed,
    /// Ended because it was cancelled: killed when flowrun cancelled it, else failed.
    Cancelled,
    /// Ended at its time limit: failed.
    Timeout,
}

/// The keys of the state table, in the order the README lists them.
const CATEGORIES: &[(&str, Category)] = &[
    ("pending", Category::Pending),
    ("running", Category::Running),
    ("suspended", Category::Suspended),
    ("stuck", Category::Stuck),
    ("unknown", Category::Unknown),
    ("done", Category::Done),
    ("failed", Category::Failed),
    ("cancelled", Category::Cancelled),
    ("timeout", Category::Timeout),
];

impl Category {
    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Category::Done | Category::Failed | Category::Cancelled | Category::Timeout
        )
    }
}

/// `states`: native state names (and reasons) by what they mean.
#[derive(Debug, Clone, Default)]
pub struct States(HashMap<String, (Category, &'static str)>);

impl States {
    pub fn parse(value: &toml::Value) -> Result<States, PluginError> {
        let table = value.as_table().ok_or_else(|| {
            PluginError::config(
                "states",
                format!(
                    "must be a table of lists of state names, such as \
                     {{ pending = [\"qw\"], running = [\"r\"] }}, not {}",
                    value.type_str()
                ),
            )
        })?;
        let mut states = HashMap::new();
        for (key, names) in table {
            let Some(&(category_key, category)) = CATEGORIES.iter().find(|(k, _)| k == key) else {
                return Err(PluginError::config(
                    &format!("states.{key}"),
                    format!(
                        "is not a kind of state; the kinds are {}",
                        CATEGORIES
                            .iter()
                            .map(|(k, _)| *k)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            let at = format!("states.{key}");
            let names = names.as_array().ok_or_else(|| {
                PluginError::config(&at, "must be a list of state names, such as [\"R\"]")
            })?;
            for name in names {
                let name = name
                    .as_str()
                    .ok_or_else(|| PluginError::config(&at, "state names are strings"))?;
                if name.trim().is_empty() || name.trim() != name {
                    return Err(PluginError::config(
                        &at,
                        format!("{name:?} is not a state name (empty, or spaces around it)"),
                    ));
                }
                if let Some((_, first)) = states.insert(name.to_string(), (category, category_key))
                {
                    return Err(PluginError::config(
                        "states",
                        format!(
                            "{name:?} is listed twice (under `{first}` and `{category_key}`): \
                             a state means one thing"
                        ),
                    ));
                }
            }
        }
        if states.is_empty() {
            return Err(PluginError::config(
                "states",
                "lists no state: give at least the pending and running ones",
            ));
        }
        Ok(States(states))
    }

    /// What a row means: its `reason` when the table lists it (LSF's `TERM_RUNLIMIT` under a
    /// plain `EXIT`), else its state. `None`: the table lists neither.
    pub fn of(&self, row: &NativeStatus) -> Option<Category> {
        [row.reason.as_str(), row.state.as_str()]
            .iter()
            .filter(|name| !name.is_empty())
            .find_map(|name| self.0.get(*name))
            .map(|(category, _)| *category)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_after_banner_lines() {
        let lsf = IdPattern::parse("submit_id", r"^Job <(?P<id>\d+)> is submitted").unwrap();
        let out = "Memory reservation is (MB): 1024\n\nJob <12345678> is submitted to default queue <normal>.\n";
        assert_eq!(lsf.find(out).as_deref(), Some("12345678"));
        let sge = IdPattern::parse("submit_id", r"^(\d+)").unwrap();
        assert_eq!(sge.find("4.1-5:1\n").as_deref(), Some("4"));
        assert_eq!(sge.find("Your job 4 has been submitted\n"), None);
    }

    #[test]
    fn rows_per_line_and_per_record() {
        let lines = RowPattern::parse(
            "status_line",
            r"^(?P<id>\d+)\|(?P<state>\w+)\|(?P<exit>[^|]*)\|(?P<reason>\w*)",
            true,
        )
        .unwrap();
        let rows = lines.rows("7|DONE|-|\n8|EXIT|3|\nnot a row\n9|EXIT|130|TERM_OWNER\n");
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].id.as_str(), rows[0].exit_code), ("7", None));
        assert_eq!(
            (rows[1].state.as_str(), rows[1].exit_code),
            ("EXIT", Some(3))
        );
        assert_eq!(rows[2].reason, "TERM_OWNER");
        let records = RowPattern::parse(
            "final_status_record",
            r"(?s)^jobnumber\s+(?P<id>\d+)$.*?^failed\s+(?P<state>\d+).*?^exit_status\s+(?P<exit>\d+)",
            false,
        )
        .unwrap();
        let qacct = "==============================================================\n\
                     jobname      a\njobnumber    12\ntaskid       undefined\n\
                     failed       37  : qmaster enforced h_rt, h_cpu, or h_vmem limit\n\
                     exit_status  137                  (Killed)\n\
                     ==============================================================\n\
                     jobname      b\njobnumber    13\nfailed       0    \nexit_status  3\n";
        let rows = records.rows(qacct);
        assert_eq!(
            rows.iter()
                .map(|r| (r.id.as_str(), r.state.as_str(), r.exit_code))
                .collect::<Vec<_>>(),
            [("12", "37", Some(137)), ("13", "0", Some(3))]
        );
    }

    #[test]
    fn row_regexes_need_id_and_state_and_nothing_unread() {
        let e = |text| {
            RowPattern::parse("status_line", text, true)
                .unwrap_err()
                .message
        };
        assert!(e(r"^(\d+) (?P<state>\w+)").contains("no group named `id`"));
        assert!(e(r"^(?P<id>\d+)").contains("no group named `state`"));
        assert!(e(r"^(?P<id>\d+) (?P<state>\w+) (?P<exitcode>\d+)").contains("`exitcode`"));
        assert!(e(r"^(?P<id>\d+").contains("not a valid regex"));
        let e = IdPattern::parse("submit_id", r"^\d+").unwrap_err().message;
        assert!(
            e.starts_with("`submit_id`: ") && e.contains("no capture group"),
            "{e}"
        );
    }

    fn states(text: &str) -> Result<States, String> {
        let value: toml::Table = toml::from_str(&format!("states = {text}")).unwrap();
        States::parse(&value["states"]).map_err(|e| e.message.to_string())
    }

    #[test]
    fn the_state_table_means_one_thing_per_name() {
        let s = states(r#"{ pending = ["qw"], running = ["r"], failed = ["EXIT"], timeout = ["TERM_RUNLIMIT"] }"#)
            .unwrap();
        let row = |state: &str, reason: &str| NativeStatus {
            state: state.into(),
            reason: reason.into(),
            ..Default::default()
        };
        assert_eq!(s.of(&row("r", "")), Some(Category::Running));
        assert_eq!(s.of(&row("EXIT", "TERM_RUNLIMIT")), Some(Category::Timeout));
        assert_eq!(s.of(&row("EXIT", "TERM_OWNER")), Some(Category::Failed));
        assert_eq!(s.of(&row("Rr", "")), None);
        for (text, wanted) in [
            (
                r#"{ running = ["r"], done = ["r"] }"#,
                "\"r\" is listed twice (under `",
            ),
            (r#"{ running = ["r", "r"] }"#, "listed twice"),
            (
                r#"{ finished = ["C"] }"#,
                "`states.finished`: is not a kind of state",
            ),
            (r#"{ running = "r" }"#, "`states.running`: must be a list"),
            (r#"{ running = [""] }"#, "is not a state name"),
            (r#"{ running = [1] }"#, "state names are strings"),
            (r#"{}"#, "lists no state"),
            (r#"["r"]"#, "must be a table"),
        ] {
            let e = states(text).unwrap_err();
            assert!(e.contains(wanted), "{text}: {e}");
        }
    }
}
