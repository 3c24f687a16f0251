//! The command line: parses arguments, runs a command, maps every error to its documented exit
//! code (see [`crate::errors`]).

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::{
    errors::{Error, EXIT_INVALID_INPUT, EXIT_JOBS_FAILED, EXIT_PASSED},
    flow::{self, Flow, LoadOptions},
    observe::Phases,
    plugins::{self, PluginSet, Scope},
    run::{self, RunOptions},
};

fn version() -> &'static str {
    Box::leak(
        format!(
            "{} (plugin API {})",
            env!("CARGO_PKG_VERSION"),
            flowrun_plugin_api::PLUGIN_API_VERSION
        )
        .into_boxed_str(),
    )
}

/// flowrun: run a DAG of jobs described in a flow file, on local processes or a cluster.
#[derive(Parser, Debug)]
#[command(name = "flowrun", version = version(), about, propagate_version = true)]
struct Cli {
    /// More log output from flowrun and its plugins (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Internal: this process is the worker of a supervising `flowrun run` (see
    /// `crate::supervise`), which reads what it reports from this fd.
    #[arg(long, hide = true, global = true)]
    supervisor_fd: Option<i32>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a flow.
    Run(RunArgs),
    /// Validate a flow, and every backend and observer config it uses, without running
    /// anything.
    Check {
        /// The flow file.
        flow: PathBuf,
    },
    /// Print the flow's dependency graph as Graphviz DOT.
    Graph {
        /// The flow file.
        flow: PathBuf,
    },
    /// Show a running or finished run from its journal (counts, running jobs, failures, whether
    /// the host is alive). Reads only.
    Status {
        /// The run directory (default: the `latest` run under flowrun-out, when there is one).
        run_dir: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Print again every second until the run ends or its host is gone.
        #[arg(long)]
        watch: bool,
    },
    /// Manage plugins.
    #[command(subcommand)]
    Plugins(PluginsCmd),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The flow file.
    flow: PathBuf,
    /// The output directory (default: flowrun-out/<flow>/<timestamp>, with a `latest` link).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run N jobs at once across all backends (overrides [flow] max_parallel and raises a
    /// backend's default cap; a backend's own max_parallel in the flow still wins).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
    /// How long the host waits beyond a backend's own deadline (its kill_grace after a kill,
    /// the timeout of a backend that enforces timeouts) before it gives up on a job
    /// ("lost ... did not report after kill"). Default 30s.
    #[arg(long, value_name = "DURATION", value_parser = parse_margin)]
    kill_margin: Option<std::time::Duration>,
    /// Run every job on this backend instance or kind.
    #[arg(long)]
    backend: Option<String>,
    /// Run only the jobs matching GLOB (and what they need); repeatable.
    #[arg(long, value_name = "GLOB")]
    only: Vec<String>,
    /// Add an observer of this kind (with an empty config); repeatable.
    #[arg(long, value_name = "KIND")]
    observer: Vec<String>,
    /// Print the expanded plan and start nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print only the summary.
    #[arg(short, long)]
    quiet: bool,
    /// Continue an earlier run in place (default: the flow's `latest`): jobs that passed there
    /// with an unchanged definition are not rerun; the rest runs. With --dry-run, lists what
    /// would run.
    #[arg(long, value_name = "RUN_DIR", num_args = 0..=1, default_missing_value = "",
          conflicts_with_all = ["out", "rerun_failed"])]
    resume: Option<PathBuf>,
    /// A new run in which the jobs that passed in RUN_DIR (default: the flow's `latest`) with an
    /// unchanged definition count as passed without running; everything else runs.
    #[arg(long, value_name = "RUN_DIR", num_args = 0..=1, default_missing_value = "")]
    rerun_failed: Option<PathBuf>,
    /// Stop at the first failure: start nothing more, kill what runs (--max-fail 1).
    #[arg(long, conflicts_with = "max_fail")]
    fail_fast: bool,
    /// Once N jobs failed (after their retries), start nothing more and kill what runs; the
    /// rest is reported killed or skipped, "stopped after N failures".
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_fail: Option<u32>,
    /// With --fail-fast or --max-fail: let the running jobs finish instead of killing them.
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand, Debug)]
enum PluginsCmd {
    /// List the plugins on the search path, with the kinds they offer; shows shadowed ones.
    List {
        /// Machine-readable output.
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
    /// Re-hash and re-check every installed plugin; exit 1 if any fails.
    Verify,
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                EXIT_INVALID_INPUT
            } else {
                EXIT_PASSED
            };
        }
    };
    init_logging(cli.verbose);
    match cli.supervisor_fd {
        Some(fd) => crate::supervise::worker_init(fd),
        None if supervised(&cli.command) => return crate::supervise::supervise(),
        None => {}
    }
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", e.render());
            e.exit_code()
        }
    }
}

/// Whether this command runs under a supervising parent: a `run` that runs jobs.
fn supervised(cmd: &Cmd) -> bool {
    matches!(cmd, Cmd::Run(args) if !args.dry_run) && crate::supervise::enabled()
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWRUN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Loads a flow, reading plugin manifests only if the cheap catalog is not enough.
fn load_flow(path: &Path, plugins: &mut PluginSet, opts: &LoadOptions) -> Result<Flow, Error> {
    let catalog = plugins.catalog(false);
    match flow::load(path, &catalog, opts) {
        Ok(f) => Ok(f),
        Err(_) => {
            // Scanned plugins may offer kinds not named after them: read their manifests and
            // report the errors of that, complete, catalog.
            let full = plugins.catalog(true);
            flow::load(path, &full, opts).map_err(Error::Flow)
        }
    }
}

fn parse_margin(text: &str) -> Result<std::time::Duration, String> {
    flow::parse_duration(text)
}

fn dispatch(cmd: Cmd) -> Result<i32, Error> {
    match cmd {
        Cmd::Run(args) => {
            let mut plugins = PluginSet::discover();
            let opts = LoadOptions {
                backend_override: args.backend.clone(),
            };
            let t = std::time::Instant::now();
            let load_start = run::results::now_us();
            let mut flow = load_flow(&args.flow, &mut plugins, &opts)?;
            if !args.only.is_empty() {
                flow = flow::select(flow, &args.only).map_err(Error::Flow)?;
            }
            let load = ("load", load_start, run::results::now_us());
            tracing::info!(
                "flow loaded: {} jobs in {:.3} s",
                flow.jobs.len(),
                t.elapsed().as_secs_f64()
            );
            let nonempty = |p: PathBuf| (!p.as_os_str().is_empty()).then_some(p);
            let continue_from = match (args.resume, args.rerun_failed) {
                (Some(d), _) => Some(run::resume::Continue::Resume(nonempty(d))),
                (None, Some(d)) => Some(run::resume::Continue::RerunFailed(nonempty(d))),
                (None, None) => None,
            };
            if let (true, Some(c)) = (args.dry_run, &continue_from) {
                run::check(&flow, &mut plugins, &args.observer)?;
                print!("{}", run::resume::plan(&flow, c)?);
                return Ok(EXIT_PASSED);
            }
            if args.dry_run {
                run::check(&flow, &mut plugins, &args.observer)?;
                print!("{}", flow::render::plan(&flow));
                return Ok(EXIT_PASSED);
            }
            let report = run::run(
                flow,
                &mut plugins,
                &RunOptions {
                    out: args.out,
                    max_parallel: args.jobs,
                    observers: args.observer,
                    quiet: args.quiet,
                    kill_margin: args.kill_margin,
                    phases: Phases(vec![load]),
                    continue_from,
                    max_fail: if args.fail_fast {
                        Some(1)
                    } else {
                        args.max_fail
                    },
                    max_fail_wait: args.wait,
                },
            )?;
            Ok(report.exit_code)
        }
        Cmd::Check { flow } => {
            let mut plugins = PluginSet::discover();
            let f = load_flow(&flow, &mut plugins, &LoadOptions::default())?;
            run::check(&f, &mut plugins, &[])?;
            println!(
                "{}: ok: flow {} with {} jobs",
                flow.display(),
                f.name,
                f.jobs.len()
            );
            Ok(EXIT_PASSED)
        }
        Cmd::Graph { flow } => {
            let mut plugins = PluginSet::discover();
            let f = load_flow(&flow, &mut plugins, &LoadOptions::default())?;
            print!("{}", flow::render::graph(&f));
            Ok(EXIT_PASSED)
        }
        Cmd::Status {
            run_dir,
            json,
            watch,
        } => crate::journal::status::status(run_dir.as_deref(), json, watch),
        Cmd::Plugins(p) => plugins_cmd(p),
    }
}

fn plugins_cmd(cmd: PluginsCmd) -> Result<i32, Error> {
    match cmd {
        PluginsCmd::List { json } => {
            let mut set = PluginSet::discover();
            let rows = plugins::list(&mut set);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).expect("rows serialise")
                );
            } else {
                for r in &rows {
                    let kinds: Vec<String> = r
                        .backends
                        .iter()
                        .map(|k| format!("backend {}", k.0))
                        .chain(r.observers.iter().map(|k| format!("observer {}", k.0)))
                        .collect();
                    let state = match (&r.error, r.shadowed) {
                        (Some(e), _) => format!("  BROKEN: {e}"),
                        (None, true) => {
                            "  (shadowed by an earlier plugin of the same name)".to_string()
                        }
                        _ => String::new(),
                    };
                    println!(
                        "{:<12} {:<8} api {:<7} {:<8} {}  [{}]{}",
                        r.name,
                        r.version,
                        r.api_version,
                        format!("{:?}", r.source).to_lowercase(),
                        r.path.display(),
                        kinds.join(", "),
                        state
                    );
                }
                for w in &set.warnings {
                    eprintln!("warning: {w}");
                }
            }
            Ok(EXIT_PASSED)
        }
        PluginsCmd::Info { name } => {
            let mut set = PluginSet::discover();
            let rows = plugins::list(&mut set);
            let mut found = false;
            for r in rows.iter().filter(|r| r.name == name) {
                found = true;
                println!("name:        {}", r.name);
                println!("version:     {}", r.version);
                println!("plugin API:  {}", r.api_version);
                println!("file:        {}", r.path.display());
                println!(
                    "source:      {:?}{}",
                    r.source,
                    if r.shadowed { " (shadowed)" } else { "" }
                );
                if let Some(s) = &r.sha256 {
                    println!("sha256:      {s}");
                }
                if let Some(t) = &r.installed_at {
                    println!("installed:   {t}");
                }
                for (k, d) in &r.backends {
                    println!("backend:     {k}  {d}");
                }
                for (k, d) in &r.observers {
                    println!("observer:    {k}  {d}");
                }
                if let Some(e) = &r.error {
                    println!("error:       {e}");
                }
                println!();
            }
            if !found {
                return Err(Error::Registry(format!(
                    "no plugin named `{name}` on the search path; `flowrun plugins list` shows them"
                )));
            }
            Ok(EXIT_PASSED)
        }
        PluginsCmd::Install {
            file,
            user: _,
            site,
        } => {
            let scope = if site { Scope::Site } else { Scope::User };
            let e = plugins::install(&file, scope)?;
            println!(
                "installed plugin {} {} (plugin API {}) offering [{}] into {}",
                e.name,
                e.version,
                e.api_version,
                e.backends
                    .iter()
                    .chain(e.observers.iter())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                match scope {
                    Scope::User => plugins::registry::user_dir(),
                    Scope::Site => plugins::registry::site_dir(),
                }
                .display()
            );
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
            let dir = plugins::remove(&name, scope)?;
            println!("removed plugin {name} from {}", dir.display());
            Ok(EXIT_PASSED)
        }
        PluginsCmd::Verify => {
            let set = PluginSet::discover();
            let mut failed = 0;
            let mut checked = 0;
            for c in set.candidates().iter().filter(|c| c.entry.is_some()) {
                checked += 1;
                match plugins::load_checked(&c.path, c.entry.as_ref()) {
                    Ok(p) => println!("ok      {} {} {}", p.name, p.version, c.path.display()),
                    Err(e) => {
                        failed += 1;
                        println!("FAILED  {}: {e}", c.name);
                    }
                }
            }
            for w in &set.warnings {
                failed += 1;
                println!("FAILED  {w}");
            }
            println!("{checked} installed plugin(s) checked, {failed} failed");
            if failed > 0 {
                return Ok(EXIT_JOBS_FAILED);
            }
            Ok(EXIT_PASSED)
        }
    }
}
