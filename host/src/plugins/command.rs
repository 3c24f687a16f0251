//! `flowrun plugins ...`: the subcommands and what they print.

use std::path::PathBuf;

use clap::Subcommand;

use super::{ListRow, PluginSet, Scope};
use crate::{
    cli::{print_err, print_out},
    errors::{Error, EXIT_JOBS_FAILED, EXIT_PASSED},
};

/// The `flowrun plugins` subcommands.
#[derive(Subcommand, Debug)]
pub enum PluginsCmd {
    /// List the plugins on the search path, with the kinds they offer; shows shadowed ones.
    List {
        /// Machine-readable output (a JSON array of objects).
        #[arg(long)]
        json: bool,
    },
    /// Show one plugin.
    Info {
        /// The plugin's name.
        name: String,
    },
    /// Validate a plugin library and install it (default: into the user directory).
    Install {
        /// The library (`.so`).
        file: PathBuf,
        /// Into the user's directory ($XDG_DATA_HOME/flowrun/plugins).
        #[arg(long, conflicts_with = "site")]
        user: bool,
        /// Into the site's directory ($FLOWRUN_SITE_PLUGIN_DIR or /usr/local/lib/flowrun/plugins).
        #[arg(long)]
        site: bool,
    },
    /// Remove an installed plugin.
    Remove {
        /// The plugin's name.
        name: String,
        /// From the user's directory only.
        #[arg(long, conflicts_with = "site")]
        user: bool,
        /// From the site's directory only.
        #[arg(long)]
        site: bool,
    },
    /// Re-hash, re-check and load (in a child process) every installed plugin; exit 1 if any
    /// fails.
    Verify,
}

/// Runs a `flowrun plugins` subcommand; returns the exit code.
pub fn run(cmd: PluginsCmd) -> Result<i32, Error> {
    match cmd {
        PluginsCmd::List { json } => {
            let mut set = PluginSet::discover()?;
            let rows = super::list(&mut set);
            if json {
                print_out(format_args!(
                    "{}\n",
                    serde_json::to_string_pretty(&rows).expect("rows serialise")
                ));
            } else {
                print_out(render_list(&rows));
            }
            Ok(EXIT_PASSED)
        }
        PluginsCmd::Info { name } => {
            let mut set = PluginSet::discover()?;
            let rows: Vec<ListRow> = super::list(&mut set)
                .into_iter()
                .filter(|r| r.name == name)
                .collect();
            if rows.is_empty() {
                return Err(Error::Registry(format!(
                    "no plugin named `{}` on the search path; `flowrun plugins list` shows them",
                    super::shown(&name)
                )));
            }
            for r in &rows {
                print_out(render_info(r));
            }
            Ok(EXIT_PASSED)
        }
        PluginsCmd::Install {
            file,
            user: _,
            site,
        } => {
            let scope = if site { Scope::Site } else { Scope::User };
            let (e, dir) = super::install(&file, scope)?;
            print_out(format_args!(
                "installed plugin {} {} (plugin API {}) offering [{}] into {}\n",
                e.name,
                e.version,
                e.api_version,
                e.backends
                    .iter()
                    .chain(e.observers.iter())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                dir.display()
            ));
            for line in kind_conflicts(&e.name, &dir.join(&e.file))? {
                print_err(format_args!("{line}\n"));
            }
            Ok(EXIT_PASSED)
        }
        PluginsCmd::Remove { name, user, site } => {
            let scope = if site {
                Some(Scope::Site)
            } else if user {
                Some(Scope::User)
            } else {
                None
            };
            let dir = super::remove(&name, scope)?;
            print_out(format_args!(
                "removed plugin {name} from {}\n",
                dir.display()
            ));
            Ok(EXIT_PASSED)
        }
        PluginsCmd::Verify => {
            let set = PluginSet::discover()?;
            let results = super::verify(&set);
            let failed = results.iter().filter(|v| v.result.is_err()).count();
            for v in &results {
                match &v.result {
                    Ok(version) => print_out(format_args!(
                        "ok      {} {version} {}\n",
                        v.name,
                        v.path.display()
                    )),
                    Err(e) => print_out(format_args!("FAILED  {}: {e}\n", v.name)),
                }
            }
            print_out(format_args!(
                "{} installed plugin(s) checked, {failed} failed\n",
                results.len()
            ));
            Ok(if failed > 0 {
                EXIT_JOBS_FAILED
            } else {
                EXIT_PASSED
            })
        }
    }
}

/// What `install` says when the plugin just installed as `name` at `path` offers a kind that
/// another plugin offers too: which of them a flow gets (the first on the search path). A
/// silent change of who serves `local` would change how every flow runs.
fn kind_conflicts(name: &str, path: &std::path::Path) -> Result<Vec<String>, Error> {
    let mut set = PluginSet::discover()?;
    let rows = super::list(&mut set);
    let mut lines = Vec::new();
    if let Some(mine) = rows.iter().find(|r| r.path == path) {
        for t in &mine.kinds_taken {
            lines.push(format!(
                "warning: flows naming {} kind `{}` keep getting plugin {}, which comes earlier on the search path (`flowrun plugins list`)",
                t.role, t.kind, t.served_by
            ));
        }
    }
    for r in rows.iter().filter(|r| r.name != name) {
        for t in r.kinds_taken.iter().filter(|t| t.served_by == name) {
            lines.push(format!(
                "warning: flows naming {} kind `{}` now get plugin {name} instead of plugin {} ({} {})",
                t.role,
                t.kind,
                r.name,
                r.source.as_str(),
                r.path.display()
            ));
        }
    }
    Ok(lines)
}

fn kinds_of(r: &ListRow) -> String {
    let kinds: Vec<String> = r
        .backends
        .iter()
        .map(|k| format!("backend {}", k.name))
        .chain(r.observers.iter().map(|k| format!("observer {}", k.name)))
        .collect();
    if kinds.is_empty() {
        "-".into()
    } else {
        kinds.join(", ")
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// The table of `flowrun plugins list`: a header row, one row per plugin in search order, its
/// problem (if any) after the file.
pub fn render_list(rows: &[ListRow]) -> String {
    let header = ["NAME", "VERSION", "API", "SOURCE", "KINDS", "FILE"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                or_dash(&r.name).to_string(),
                or_dash(&r.version).to_string(),
                or_dash(&r.api_version).to_string(),
                r.source.as_str().to_string(),
                kinds_of(r),
                r.path.display().to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str], state: &str| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        if !state.is_empty() {
            s.push_str("  ");
            s.push_str(state);
        }
        s.push('\n');
        s
    };
    let mut out = line(&header, "");
    for (r, row) in rows.iter().zip(&cells) {
        let state = match (&r.error, r.shadowed) {
            (Some(e), _) => format!("BROKEN: {e}"),
            (None, true) => "(shadowed by the plugin of the same name above)".to_string(),
            (None, false) => taken_kinds(r),
        };
        let row: Vec<&str> = row.iter().map(String::as_str).collect();
        out.push_str(&line(&row, &state));
    }
    out
}

/// What `list` says of a row whose kinds earlier plugins serve: `(backend local is served by
/// plugin evil above)`.
fn taken_kinds(r: &ListRow) -> String {
    if r.kinds_taken.is_empty() {
        return String::new();
    }
    let each: Vec<String> = (r.kinds_taken.iter())
        .map(|t| format!("{} {} is served by plugin {}", t.role, t.kind, t.served_by))
        .collect();
    format!("({} above)", each.join(", "))
}

/// One plugin as `flowrun plugins info` prints it.
pub fn render_info(r: &ListRow) -> String {
    let mut s = String::new();
    let mut field = |k: &str, v: &str| s.push_str(&format!("{k:<12} {v}\n"));
    field("name:", &r.name);
    field("version:", or_dash(&r.version));
    field("plugin API:", or_dash(&r.api_version));
    field("file:", &r.path.display().to_string());
    field(
        "source:",
        &format!(
            "{}{}",
            r.source.as_str(),
            if r.shadowed { " (shadowed)" } else { "" }
        ),
    );
    field("identified:", r.identified_by.unwrap_or("-"));
    if let Some(sha) = &r.sha256 {
        field("sha256:", sha);
    }
    if let Some(t) = &r.installed_at {
        field("installed:", t);
    }
    for k in &r.backends {
        field(
            "backend:",
            format!("{}  {}", k.name, k.description).trim_end(),
        );
    }
    for k in &r.observers {
        field(
            "observer:",
            format!("{}  {}", k.name, k.description).trim_end(),
        );
    }
    for t in &r.kinds_taken {
        field(
            "not served:",
            &format!(
                "{} {}: plugin {} comes first on the search path and serves it",
                t.role, t.kind, t.served_by
            ),
        );
    }
    if let Some(e) = &r.error {
        field("error:", e);
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::registry::DirKind;

    /// A row for the rendering tests.
    fn row(name: &str, source: DirKind, error: Option<&str>, shadowed: bool) -> ListRow {
        ListRow {
            name: name.into(),
            version: "0.1.0".into(),
            api_version: "0.1.2".into(),
            path: PathBuf::from(format!("/p/libflowrun_plugin_{name}.so")),
            source,
            identified_by: Some("note"),
            backends: vec![crate::plugins::KindRow {
                name: name.into(),
                description: "d".into(),
            }],
            observers: Vec::new(),
            shadowed,
            kinds_taken: Vec::new(),
            error: error.map(String::from),
            sha256: None,
            installed_at: None,
        }
    }

    #[test]
    fn a_kind_served_by_an_earlier_plugin_of_another_name_is_marked_where_it_is_not() {
        let mut rows = [
            row("evil", DirKind::User, None, false),
            row("local", DirKind::Bundled, None, false),
            row("local", DirKind::Site, None, true),
        ];
        rows[0].backends[0].name = "local".into();
        crate::plugins::mark_taken_kinds(&mut rows);
        assert!(rows[0].kinds_taken.is_empty());
        assert!(
            rows[2].kinds_taken.is_empty(),
            "a shadowed row says only that"
        );
        let out = render_list(&rows);
        assert_eq!(
            out.lines().nth(2).unwrap(),
            "local  0.1.0    0.1.2  bundled  backend local  /p/libflowrun_plugin_local.so  \
             (backend local is served by plugin evil above)"
        );
        assert!(render_info(&rows[1]).contains(
            "not served:  backend local: plugin evil comes first on the search path and serves it"
        ));
    }

    #[test]
    fn the_list_is_a_table_with_a_header_and_problems_after_the_file() {
        let rows = [
            row("local", DirKind::Bundled, None, false),
            row("site-wrapper", DirKind::User, Some("refused"), false),
            row("local", DirKind::Site, None, true),
        ];
        assert_eq!(
            render_list(&rows),
            "NAME          VERSION  API    SOURCE   KINDS                 FILE\n\
             local         0.1.0    0.1.2  bundled  backend local         /p/libflowrun_plugin_local.so\n\
             site-wrapper  0.1.0    0.1.2  user     backend site-wrapper  /p/libflowrun_plugin_site-wrapper.so  BROKEN: refused\n\
             local         0.1.0    0.1.2  site     backend local         /p/libflowrun_plugin_local.so  (shadowed by the plugin of the same name above)\n"
        );
    }
}
