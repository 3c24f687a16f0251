//! The command line: parses arguments, runs a command, maps every error to its documented exit
//! code (see [`crate::errors`]).

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::{
    errors::{Error, EXIT_INVALID_INPUT, EXIT_PASSED},
    flow::{self, Flow, LoadOptions},
    observe::Phases,
    plugins::{self, PluginSet},
    run::{self, RunOptions},
};

fn version() -> &'static str {
    Box::leak(
        format!(
            "{} (plugin API {})",
            env!("CARGO_PKG_VERSION"),
            flowrun_plugin_abi::PLUGIN_API_VERSION
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
    /// `crate::supervise`), which listens for what it reports on this abstract socket name.
    #[arg(long, hide = true, global = true)]
    supervisor_socket: Option<String>,
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
    Plugins(plugins::command::PluginsCmd),
    /// Loads a plugin library and reports what it is (flowrun runs itself so, in a child
    /// process, to judge a library that could crash or hang).
    #[command(name = "__probe-plugin", hide = true)]
    ProbePlugin {
        /// The library.
        path: PathBuf,
    },
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
    /// would run. Not with --only: the run's results would keep only the selected jobs (use
    /// --rerun-failed --only GLOB, a new directory).
    // `Option<Option<_>>`: the flag alone is `Some(None)`. (A `default_missing_value = ""`
    // never reached the code: clap refuses an empty path, so the flag alone was an error.)
    #[arg(long, value_name = "RUN_DIR", num_args = 0..=1,
          conflicts_with_all = ["out", "rerun_failed", "only"])]
    resume: Option<Option<PathBuf>>,
    /// A new run in which the jobs that passed in RUN_DIR (default: the flow's `latest`) with an
    /// unchanged definition count as passed without running; everything else runs.
    #[arg(long, value_name = "RUN_DIR", num_args = 0..=1)]
    rerun_failed: Option<Option<PathBuf>>,
    /// With --only: run only the jobs the globs name, not what they need; each needed job's end
    /// in an earlier run (the --rerun-failed RUN_DIR, else the flow's `latest`) is taken as
    /// given: a pass releases its dependents, a failure skips them.
    #[arg(long, requires = "only", conflicts_with = "resume")]
    no_deps: bool,
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
    /// Without a terminal (CI logs, pipes): print a progress line this often, such as 30s or
    /// 2m; 0 prints one whenever the counts change. [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_status_interval)]
    status_interval: Option<std::time::Duration>,
}

/// `--status-interval`: a duration (`10s`, `500ms`, `2m`), or a bare number of seconds.
fn parse_status_interval(text: &str) -> Result<std::time::Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(secs) => Ok(std::time::Duration::from_secs(secs)),
        Err(_) => flow::parse_duration(text),
    }
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
    match &cli.supervisor_socket {
        Some(name) => crate::supervise::worker_init(name),
        None if supervised(&cli.command) => return crate::supervise::supervise(),
        None => {}
    }
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            print_err(format_args!("{}\n", e.render()));
            e.exit_code()
        }
    }
}

/// Writes a command's output to stdout. A reader that went away (`flowrun plugins list --json |
/// head -c 100`: a broken pipe) ends the output, not the command: `print!` would panic and
/// exit 101 with a backtrace.
pub(crate) fn print_out(text: impl std::fmt::Display) {
    use std::io::Write;
    let _ = write!(std::io::stdout().lock(), "{text}");
}

/// As [`print_out`], for stderr.
pub(crate) fn print_err(text: impl std::fmt::Display) {
    use std::io::Write;
    let _ = write!(std::io::stderr().lock(), "{text}");
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
    // Log lines share stderr with the status display: its writer takes the line out of their way.
    let ansi = crate::display::Caps::detect().colour;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::display::LogWriter)
        .with_ansi(ansi)
        .try_init();
}

/// Loads a flow, reading plugin manifests only if the cheap catalog is not enough.
fn load_flow(path: &Path, plugins: &mut PluginSet, opts: &LoadOptions) -> Result<Flow, Error> {
    let catalog = plugins.catalog(false);
    match flow::load(path, &catalog, opts) {
        Ok(f) => Ok(f),
        Err(_) => {
            // Plugins without an identity note may offer kinds not named after them: probe them
            // and report the errors of that, complete, catalog.
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
            let mut plugins = PluginSet::discover()?;
            let opts = LoadOptions {
                backend_override: args.backend.clone(),
            };
            let t = std::time::Instant::now();
            let load_start = run::results::now_us();
            let mut flow = load_flow(&args.flow, &mut plugins, &opts)?;
            let mut no_deps: Option<Vec<u32>> = None;
            if !args.only.is_empty() {
                let (selected, named) =
                    flow::select_named(flow, &args.only).map_err(Error::Flow)?;
                flow = selected;
                no_deps = args.no_deps.then(|| {
                    let needed_only = named.iter().enumerate().filter(|(_, n)| !**n);
                    needed_only.map(|(j, _)| j as u32).collect()
                });
            }
            let load = ("load", load_start, run::results::now_us());
            tracing::info!(
                "flow loaded: {} jobs in {:.3} s",
                flow.jobs.len(),
                t.elapsed().as_secs_f64()
            );
            let continue_from = match (args.resume, args.rerun_failed) {
                (Some(d), _) => Some(run::resume::Continue::Resume(d)),
                (None, Some(d)) => Some(run::resume::Continue::RerunFailed(d)),
                (None, None) => None,
            };
            if let (true, Some(given)) = (args.dry_run, &no_deps) {
                run::check(&flow, &mut plugins, &args.observer)?;
                print_out(run::resume::plan_no_deps(&flow, &continue_from, given)?);
                return Ok(EXIT_PASSED);
            }
            if let (true, Some(c)) = (args.dry_run, &continue_from) {
                run::check(&flow, &mut plugins, &args.observer)?;
                print_out(run::resume::plan(&flow, c)?);
                return Ok(EXIT_PASSED);
            }
            if args.dry_run {
                run::check(&flow, &mut plugins, &args.observer)?;
                print_out(flow::render::plan(&flow));
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
                    no_deps,
                    max_fail: if args.fail_fast {
                        Some(1)
                    } else {
                        args.max_fail
                    },
                    max_fail_wait: args.wait,
                    status_interval: args.status_interval,
                },
            )?;
            Ok(report.exit_code)
        }
        Cmd::Check { flow } => {
            let mut plugins = PluginSet::discover()?;
            let f = load_flow(&flow, &mut plugins, &LoadOptions::default())?;
            run::check(&f, &mut plugins, &[])?;
            print_out(format_args!(
                "{}: ok: flow {} with {} jobs\n",
                flow.display(),
                f.name,
                f.jobs.len()
            ));
            Ok(EXIT_PASSED)
        }
        Cmd::Graph { flow } => {
            let mut plugins = PluginSet::discover()?;
            let f = load_flow(&flow, &mut plugins, &LoadOptions::default())?;
            print_out(flow::render::graph(&f));
            Ok(EXIT_PASSED)
        }
        Cmd::Plugins(p) => plugins::command::run(p),
        Cmd::ProbePlugin { path } => Ok(plugins::probe::child_main(&path)),
        Cmd::Status {
            run_dir,
            json,
            watch,
        } => crate::journal::status::status(run_dir.as_deref(), json, watch),
    }
}
