//! The LSF emulator of `tests/cluster/lsf-emu/` (built from IBM's documentation and the Lava
//! sources; it is not LSF). Golden tests pin every text it prints, byte for byte, to the
//! documented formats (only time stamps and resource figures are left open, each to its exact
//! shape); behaviour tests check what the LSF backend's tests rely on: slots, array slot
//! limits, run and memory limits, the kill sequence, CLEAN_PERIOD, outages, injected failures,
//! odd states. Unprivileged: they need only python3. Each test has its own emulated cluster
//! and ends by stopping it and checking that nothing of its jobs is left running.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use flowrun_tests::{wait_until, workspace_root};
use regex::Regex;

fn emu_bin() -> PathBuf {
    workspace_root().join("tests/cluster/lsf-emu/bin")
}

/// The host name every test gives its emulated cluster (the HOST knob), so that outputs are
/// the same on every machine.
const HOST: &str = "lsf-emu-host-long";
/// HOST cut to the 11 characters of the FROM_HOST and EXEC_HOST columns.
const HOST11: &str = "lsf-emu-hos";

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// One emulated cluster: a state directory (LSF_EMU_DIR) and a work directory for the jobs'
/// files, both in a temporary directory. Dropping it stops the cluster.
struct Emu {
    dir: tempfile::TempDir,
    stopped: bool,
}

impl Emu {
    fn new(knobs: &[(&str, &str)]) -> Emu {
        let emu = Emu {
            dir: tempfile::tempdir().expect("temporary directory"),
            stopped: false,
        };
        emu.ctl(&["set", "HOST", HOST]);
        for (key, value) in knobs {
            emu.ctl(&["set", key, value]);
        }
        emu
    }

    fn work(&self) -> &Path {
        self.dir.path()
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    /// An emulator command found as a user finds it: its directory first on PATH.
    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(name);
        c.env(
            "PATH",
            format!(
                "{}:{}",
                emu_bin().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("LSF_EMU_DIR", self.state())
        .env_remove("LSB_NTRIES")
        .current_dir(self.work())
        .stdin(Stdio::null());
        // Knobs in the test's own environment would override the cluster's file.
        for (key, _) in std::env::vars() {
            if key.starts_with("LSF_EMU_") && key != "LSF_EMU_DIR" {
                c.env_remove(key);
            }
        }
        c
    }

    fn run_with(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        input: Option<&str>,
    ) -> Out {
        let mut c = self.command(name);
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        if input.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().unwrap_or_else(|e| panic!("run {name}: {e}"));
        if let Some(text) = input {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn run(&self, name: &str, args: &[&str]) -> Out {
        self.run_with(name, args, &[], None)
    }

    fn ctl(&self, args: &[&str]) -> Out {
        let out = self.run("lsf-emu-ctl", args);
        assert_eq!(out.code, 0, "lsf-emu-ctl {args:?}: {out:?}");
        out
    }

    /// Submits and returns the job id from bsub's last line.
    fn bsub(&self, args: &[&str]) -> u64 {
        let out = self.run("bsub", args);
        assert_eq!(out.code, 0, "bsub {args:?}: {out:?}");
        submitted_id(&out.stdout)
    }

    /// `bjobs -noheader -o "jobid jobindex stat exit_code exit_reason delimiter='|'" SPEC`:
    /// one row per job or element, split at `|`.
    fn rows(&self, spec: &str) -> Vec<Vec<String>> {
        let out = self.run(
            "bjobs",
            &[
                "-noheader",
                "-o",
                "jobid jobindex stat exit_code exit_reason delimiter='|'",
                spec,
            ],
        );
        out.stdout
            .lines()
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect()
    }

    /// The STAT of a plain job (or one element given as `ID[INDEX]`).
    fn stat(&self, spec: &str) -> String {
        self.rows(spec)
            .first()
            .map(|r| r[2].clone())
            .unwrap_or_default()
    }

    fn wait_stat(&self, spec: &str, wanted: &[&str], limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(row) = self.rows(spec).into_iter().next() {
                if wanted.contains(&row[2].as_str()) {
                    return row;
                }
            }
            assert!(
                Instant::now() < deadline,
                "job {spec} not in {wanted:?} after {limit:?}: {:?}",
                self.rows(spec)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pids bjobs lists for a running job.
    fn pids(&self, spec: &str) -> Vec<u32> {
        let out = self.run("bjobs", &["-noheader", "-o", "pids", spec]);
        out.stdout
            .trim()
            .split(',')
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Stops the cluster and checks that it is all gone: the stop succeeded (it fails when a
    /// job process survives) and the daemon is not running.
    fn stop(mut self) {
        self.stopped = true;
        let out = self.run("lsf-emu-ctl", &["stop"]);
        assert_eq!(out.code, 0, "lsf-emu-ctl stop: {out:?}");
        let status = self.ctl(&["status"]).stdout;
        assert!(
            status.contains("daemon: not running"),
            "the daemon outlived stop: {status}"
        );
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.command("lsf-emu-ctl").arg("stop").output();
        }
    }
}

fn submitted_id(stdout: &str) -> u64 {
    let re = Regex::new(r"^Job <(\d+)> is submitted to (default )?queue <[^>]*>\.$").unwrap();
    let last = stdout.lines().last().unwrap_or_default();
    re.captures(last)
        .unwrap_or_else(|| panic!("no submission line in {stdout:?}"))[1]
        .parse()
        .unwrap()
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn home() -> String {
    let uid = Command::new("id").arg("-u").output().unwrap();
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    let entry = Command::new("getent")
        .args(["passwd", &uid])
        .output()
        .unwrap();
    String::from_utf8_lossy(&entry.stdout)
        .trim()
        .split(':')
        .nth(5)
        .unwrap_or_default()
        .to_string()
}

/// Asserts that ACTUAL is TEMPLATE byte for byte, except for the placeholders: `{CTIME}` a
/// ctime(3) time (`Tue Dec  1 10:57:17 2026`), `{SHORT}` bjobs' short time (`Dec  1 10:57`),
/// `{SECS}` seconds with two decimals, `{INT}` a whole number, `{USAGE}` a resource figure of
/// the job report (`-`, `12`, `3 MB`, `3.25 MB`).
fn assert_golden(actual: &str, template: &str) {
    let placeholder = Regex::new(r"\{(CTIME|SHORT|SECS|INT|USAGE)\}").unwrap();
    let mut pattern = String::from("^");
    let mut last = 0;
    for m in placeholder.find_iter(template) {
        pattern.push_str(&regex::escape(&template[last..m.start()]));
        pattern.push_str(match m.as_str() {
            "{CTIME}" => r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d \d{4}",
            "{SHORT}" => r"[A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d",
            "{SECS}" => r"\d+\.\d\d",
            "{INT}" => r"\d+",
            _ => r"(-|\d+|\d+ MB|\d+\.\d\d MB)",
        });
        last = m.end();
    }
    pattern.push_str(&regex::escape(&template[last..]));
    pattern.push('$');
    let re = Regex::new(&pattern).unwrap();
    if !re.is_match(actual) {
        let first_difference = actual
            .lines()
            .zip(template.lines())
            .position(|(a, t)| {
                !Regex::new(&format!("^{}$", line_pattern(t)))
                    .unwrap()
                    .is_match(a)
            })
            .map(|i| i + 1);
        panic!(
            "output differs from the golden text (first differing line: {first_difference:?})\n\
             --- actual ---\n{actual}\n--- golden ---\n{template}\n--- end ---"
        );
    }
}

/// A line of a golden text as a pattern in which each placeholder matches anything: to point
/// at the first line that differs.
fn line_pattern(line: &str) -> String {
    let escaped = regex::escape(line);
    Regex::new(r"\\\{(CTIME|SHORT|SECS|INT|USAGE)\\\}")
        .unwrap()
        .replace_all(&escaped, ".*")
        .into_owned()
}

/// The job report's header block, up to and including the resource usage summary.
fn report(
    spec: &str,
    name: &str,
    done: bool,
    queue: &str,
    cwd: &Path,
    command: &str,
    ending: &str,
) -> String {
    let (user, home) = (user(), home());
    format!(
        "Sender: LSF System <lsfadmin@{HOST}>\n\
         Subject: Job {spec}: <{name}> in cluster <emu> {state}\n\
         \n\
         Job <{name}> was submitted from host <{HOST}> by user <{user}> in cluster <emu> at {{CTIME}}\n\
         Job was executed on host(s) <{HOST}>, in queue <{queue}>, as user <{user}> in cluster <emu> at {{CTIME}}\n\
         <{home}> was used as the home directory.\n\
         <{cwd}> was used as the working directory.\n\
         Started at {{CTIME}}\n\
         Terminated at {{CTIME}}\n\
         Results reported at {{CTIME}}\n\
         \n\
         Your job looked like:\n\
         \n\
         ------------------------------------------------------------\n\
         # LSBATCH: User input\n\
         {command}\n\
         ------------------------------------------------------------\n\
         \n\
         {ending}\
         \n\
         Resource usage summary:\n\
         \n    CPU time :                                   {{SECS}} sec.\n\
         \x20   Max Memory :                                 {{USAGE}}\n\
         \x20   Average Memory :                             {{USAGE}}\n\
         \x20   Total Requested Memory :                     -\n\
         \x20   Delta Memory :                               -\n\
         \x20   Max Swap :                                   -\n\
         \x20   Max Processes :                              {{USAGE}}\n\
         \x20   Max Threads :                                {{USAGE}}\n\
         \x20   Run time :                                   {{INT}} sec.\n\
         \x20   Turnaround time :                            {{INT}} sec.\n\
         \n",
        state = if done { "Done" } else { "Exited" },
        cwd = cwd.display(),
    )
}

// --- golden texts --------------------------------------------------------------------------

const BANNER: &str = "Memory reservation is (MB): 1024\nMemory Limit is (MB): 1024\n\n\
                      ===Your total amount of memory reservation for this job is (MB): 1024 ===\n\n";

#[test]
fn bsub_prints_esub_banner_lines_before_the_submission_line_with_8_digit_ids() {
    let emu = Emu::new(&[
        ("FIRST_JOB_ID", "12345678"),
        // the knob's value ends with one `\n`: the banner's last line is empty
        (
            "BANNER",
            &BANNER.strip_suffix('\n').unwrap().replace('\n', "\\n"),
        ),
    ]);
    let out = emu.run("bsub", &["-H", "true"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!("{BANNER}Job <12345678> is submitted to default queue <normal>.\n")
    );
    assert_eq!(out.stderr, "");
    let out = emu.run("bsub", &["-H", "-q", "short", "true"]);
    assert_eq!(
        out.stdout,
        format!("{BANNER}Job <12345679> is submitted to queue <short>.\n")
    );
    emu.ctl(&["set", "BANNER_STREAM", "stderr"]);
    let out = emu.run("bsub", &["-H", "true"]);
    assert_eq!(
        out.stdout,
        "Job <12345680> is submitted to default queue <normal>.\n"
    );
    assert_eq!(out.stderr, BANNER);
    emu.stop();
}

#[test]
fn bsub_refuses_bad_submissions_with_lava_messages_and_exit_255() {
    let emu = Emu::new(&[("SLOTS", "4")]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["-q", "nosuch", "true"],
            "nosuch: No such queue. Job not submitted.\n",
        ),
        (
            &["-n", "5", "true"],
            "Too many processors requested. Job not submitted.\n",
        ),
        (
            &["-R", "rusage[mem=", "true"],
            "Bad resource requirement syntax. Job not submitted.\n",
        ),
        (
            &["-R", "bogus[x]", "true"],
            "Bad resource requirement syntax. Job not submitted.\n",
        ),
        (
            &["-J", "a[1-2000]", "true"],
            "Job array index too large. Job not submitted.\n",
        ),
        (
            &["-J", "a[3-1]", "true"],
            "Job array index error. Job not submitted.\n",
        ),
        (&["-J", "a]b", "true"], "Bad job name. Job not submitted.\n"),
    ];
    for (args, message) in cases {
        let out = emu.run("bsub", args);
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (255, "", *message),
            "bsub {args:?}"
        );
    }
    let out = emu.run_with("bsub", &[], &[], Some("\n\n"));
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (255, "Empty job. Job not submitted.\n")
    );
    let out = emu.run("bjobs", &["-a"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "", "No job found\n")
    );
    emu.stop();
}

#[test]
fn bjobs_default_and_wide_formats_follow_lava_columns() {
    let emu = Emu::new(&[("SLOTS", "4"), ("FIRST_JOB_ID", "12345678")]);
    let running = emu.bsub(&["-J", "regression_smoke", "-n", "3", "sleep 30"]);
    let pending = emu.bsub(&["-J", "pending", "-n", "2", "sleep 30"]);
    emu.wait_stat(&running.to_string(), &["RUN"], Duration::from_secs(20));
    let user7 = format!("{:<7.7}", user());
    let under_exec_host = " ".repeat(45);
    let out = emu.run("bjobs", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_golden(
        &out.stdout,
        &format!(
            "JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME\n\
             2345678 {user7} RUN   normal     {HOST11} {HOST11} *ion_smoke {{SHORT}}\n\
             {under_exec_host}{HOST}\n\
             {under_exec_host}{HOST}\n\
             2345679 {user7} PEND  normal     {HOST11}             pending    {{SHORT}}\n"
        ),
    );
    let out = emu.run("bjobs", &["-w", &pending.to_string(), &running.to_string()]);
    let user = user();
    assert_golden(
        &out.stdout,
        &format!(
            "JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME\n\
             12345678 {user:<7} RUN   normal     {HOST} {HOST}:{HOST}:{HOST} regression_smoke {{SHORT}}\n\
             12345679 {user:<7} PEND  normal     {HOST}    -        pending    {{SHORT}}\n"
        ),
    );
    emu.ctl(&["set", "LSB_JOBID_DISP_LENGTH", "10"]);
    let out = emu.run("bjobs", &["-noheader", &pending.to_string()]);
    assert_golden(
        &out.stdout,
        &format!("12345679   {user7} PEND  normal     {HOST11}             pending    {{SHORT}}\n"),
    );
    let out = emu.run("bjobs", &[&pending.to_string()]);
    assert!(out.stdout.starts_with("JOBID      USER    STAT"), "{out:?}");
    emu.stop();
}

#[test]
fn bjobs_custom_format_and_json_pin_lsf_10_output() {
    let emu = Emu::new(&[("FIRST_JOB_ID", "101")]);
    let failing = emu.bsub(&["-J", "failing", "exit 3"]);
    let passing = emu.bsub(&["-J", "passing", "true"]);
    let array = emu.bsub(&["-J", "arr[1-2]", "exit $LSB_JOBINDEX"]);
    for spec in [
        failing.to_string(),
        passing.to_string(),
        format!("{array}[1]"),
        format!("{array}[2]"),
    ] {
        emu.wait_stat(&spec, &["DONE", "EXIT"], Duration::from_secs(20));
    }
    let ids = [failing.to_string(), passing.to_string(), array.to_string()];
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let format = "jobid jobindex stat exit_code exit_reason job_name delimiter='|'";
    let out = emu.run("bjobs", &[&["-o", format][..], &ids].concat());
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "JOBID|JOBINDEX|STAT|EXIT_CODE|EXIT_REASON|JOB_NAME\n\
         101|0|EXIT|3|-|failing\n\
         102|0|DONE|-|-|passing\n\
         103|1|EXIT|1|-|arr[1]\n\
         103|2|EXIT|2|-|arr[2]\n"
    );
    let out = emu.run(
        "bjobs",
        &["-noheader", "-o", "jobid:3 stat:-6 job_name:5", "101"],
    );
    assert_eq!(out.stdout, "101   EXIT *ling\n");
    let out = emu.run(
        "bjobs",
        &[
            "-o",
            "id stat exit_code exit_reason sub_cwd",
            "-json",
            "101",
            "102",
        ],
    );
    let cwd = emu.work().display().to_string().replace('/', "\\/");
    assert_eq!(
        out.stdout,
        format!(
            "{{\n  \"COMMAND\":\"bjobs\",\n  \"JOBS\":2,\n  \"RECORDS\":[\n    {{\n\
             \x20     \"JOBID\":\"101\",\n      \"STAT\":\"EXIT\",\n      \"EXIT_CODE\":\"3\",\n\
             \x20     \"EXIT_REASON\":\"\",\n      \"SUB_CWD\":\"{cwd}\"\n    }},\n    {{\n\
             \x20     \"JOBID\":\"102\",\n      \"STAT\":\"DONE\",\n      \"EXIT_CODE\":\"\",\n\
             \x20     \"EXIT_REASON\":\"\",\n      \"SUB_CWD\":\"{cwd}\"\n    }}\n  ]\n}}\n"
        )
    );
    let out = emu.run("bjobs", &["-o", "jobid", "-json", "-noheader", "101"]);
    assert_eq!((out.code, out.stdout.as_str()), (255, ""));
    emu.stop();
}

#[test]
fn bjobs_messages_and_exit_codes_follow_lsb_bjobs_consistent_exit_code() {
    let emu = Emu::new(&[]);
    let out = emu.run("bjobs", &[]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "", "No unfinished job found\n")
    );
    let out = emu.run("bjobs", &["-d"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (0, "No DONE/EXIT job found\n")
    );
    let out = emu.run("bjobs", &["999"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (255, "", "Job <999> is not found\n")
    );
    let held = emu.bsub(&["-H", "-J", "held", "true"]).to_string();
    let out = emu.run("bjobs", &["-noheader", "-o", "jobid stat", &held, "999"]);
    assert_eq!(
        (out.code, out.stdout.clone(), out.stderr.as_str()),
        (0, format!("{held} PSUSP\n"), "Job <999> is not found\n")
    );
    let out = emu.run(
        "bjobs",
        &["-noheader", "-o", "jobid stat", &format!("{held}[3]")],
    );
    assert_eq!(
        (out.code, out.stderr.clone()),
        (255, format!("Job <{held}[3]> is not found\n"))
    );
    emu.ctl(&["set", "LSB_BJOBS_CONSISTENT_EXIT_CODE", "Y"]);
    let out = emu.run("bjobs", &["-noheader", "-o", "jobid stat", &held, "999"]);
    assert_eq!(
        (out.code, out.stdout.clone()),
        (255, format!("{held} PSUSP\n"))
    );
    let out = emu.run("bkill", &[&held]);
    assert_eq!(out.code, 0);
    let out = emu.run("bjobs", &[]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (255, "No unfinished job found\n")
    );
    emu.stop();
}

#[test]
fn bkill_bstop_bresume_print_lava_messages_and_exit_255_unless_all_succeed() {
    let emu = Emu::new(&[]);
    let held = emu.bsub(&["-H", "true"]).to_string();
    let running = emu.bsub(&["sleep 30"]).to_string();
    let finished = emu.bsub(&["true"]).to_string();
    let array = emu.bsub(&["-J", "a[1-2]", "sleep 30"]).to_string();
    emu.wait_stat(&running, &["RUN"], Duration::from_secs(20));
    emu.wait_stat(&finished, &["DONE"], Duration::from_secs(20));

    let out = emu.run("bkill", &[]);
    assert_eq!(out.code, 255);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "Job ID or one of '-m', '-u' '-q' and '-J' must be specified.\n\
         Usage: bkill [-h] [-V] [-l] [-m host_name] [-q queue_name]\n\
         \x20              [-u user_name | -u all] [0] [-r | -s sigval] [-J job_name] \n\
         \x20              [jobId | \"jobId[index_list]\"]...\n"
    );
    let out = emu.run("bkill", &["-s", "USR1", &held]);
    assert_eq!(
        (out.code, out.stderr.clone()),
        (255, format!("Job <{held}>: Job has not started yet\n"))
    );
    let out = emu.run("bstop", &[&running]);
    assert_eq!(
        (out.code, out.stdout.clone()),
        (0, format!("Job <{running}> is being stopped\n"))
    );
    let out = emu.run("bresume", &[&running]);
    assert_eq!(
        (out.code, out.stdout.clone()),
        (0, format!("Job <{running}> is being resumed\n"))
    );
    // a signal the job survives
    let out = emu.run("bkill", &["-s", "CONT", &running]);
    assert_eq!(
        (out.code, out.stdout.clone()),
        (0, format!("Job <{running}> is being signaled\n"))
    );
    // a pending job ends at once, without an exit code
    let out = emu.run("bkill", &[&held]);
    assert_eq!(
        (out.code, out.stdout.clone(), out.stderr.as_str()),
        (0, format!("Job <{held}> is being terminated\n"), "")
    );
    assert_eq!(
        emu.rows(&held)[0][2..],
        ["EXIT", "-", "TERM_OWNER: job killed by owner"]
    );
    let element = format!("{array}[2]");
    let out = emu.run("bkill", &[&element]);
    assert_eq!(
        out.stdout,
        format!("Job <{element}> is being terminated\n"),
        "{out:?}"
    );
    let out = emu.run("bkill", &[&finished, "99999", &running]);
    assert_eq!(out.code, 255);
    assert_eq!(out.stdout, format!("Job <{running}> is being terminated\n"));
    assert_eq!(
        out.stderr,
        format!("Job <{finished}>: Job has already finished\nJob <99999>: No matching job found\n")
    );
    emu.stop();
}

#[test]
fn job_report_is_appended_to_the_output_file_as_lsf_writes_it() {
    let emu = Emu::new(&[]);
    std::fs::write(emu.path("appended.out"), "previous run\n").unwrap();
    std::fs::write(emu.path("overwritten.out"), "previous run\n").unwrap();
    let done = emu.bsub(&[
        "-J",
        "rep-done",
        "-o",
        "appended.out",
        "echo hello; echo to-stderr >&2",
    ]);
    let exited = emu.bsub(&[
        "-J",
        "rep-exit",
        "-oo",
        "overwritten.out",
        "-e",
        "exit.err",
        "echo out; echo err >&2; exit 7",
    ]);
    emu.wait_stat(&done.to_string(), &["DONE"], Duration::from_secs(20));
    emu.wait_stat(&exited.to_string(), &["EXIT"], Duration::from_secs(20));
    let cwd = emu.work();
    assert_golden(
        &emu.read("appended.out"),
        &format!(
            "previous run\n{}The output (if any) follows:\n\nhello\nto-stderr\n",
            report(
                &done.to_string(),
                "rep-done",
                true,
                "normal",
                cwd,
                "echo hello; echo to-stderr >&2",
                "Successfully completed.\n"
            )
        ),
    );
    assert_golden(
        &emu.read("overwritten.out"),
        &format!(
            "{}The output (if any) follows:\n\nout\n\n\nPS:\n\nRead file <{}> for stderr output of this job.\n\n",
            report(&exited.to_string(), "rep-exit", false, "normal", cwd, "echo out; echo err >&2; exit 7", "Exited with exit code 7.\n"),
            emu.path("exit.err").display()
        ),
    );
    assert_eq!(emu.read("exit.err"), "err\n");
    emu.stop();
}

#[test]
fn job_report_for_run_limit_array_elements_and_direct_output() {
    let emu = Emu::new(&[
        ("RUNLIMIT_SECONDS_PER_MINUTE", "1"),
        ("JOB_TERMINATE_INTERVAL", "1"),
    ]);
    let limited = emu.bsub(&["-J", "limited", "-W", "2", "-o", "limited.out", "sleep 30"]);
    let array = emu.bsub(&[
        "-J",
        "rep[1-2]",
        "-o",
        "rep.%J.%I.out",
        "echo index $LSB_JOBINDEX",
    ]);
    let row = emu.wait_stat(&limited.to_string(), &["EXIT"], Duration::from_secs(30));
    assert_eq!(
        row[3..],
        [
            "140",
            "TERM_RUNLIMIT: job killed after reaching LSF run time limit"
        ]
    );
    let cwd = emu.work();
    assert_golden(
        &emu.read("limited.out"),
        &format!(
            "{}The output (if any) follows:\n\n",
            report(&limited.to_string(), "limited", false, "normal", cwd, "sleep 30",
                   "TERM_RUNLIMIT: job killed after reaching LSF run time limit.\nExited with exit code 140.\n")
        ),
    );
    let run_time: u64 = Regex::new(r"Run time : +(\d+) sec")
        .unwrap()
        .captures(&emu.read("limited.out"))
        .expect("a run time in the report")[1]
        .parse()
        .unwrap();
    assert!(
        (2..10).contains(&run_time),
        "-W 2 (2 s minutes) ended the job after {run_time} s"
    );
    emu.wait_stat(&format!("{array}[2]"), &["DONE"], Duration::from_secs(20));
    assert_golden(
        &emu.read(&format!("rep.{array}.2.out")),
        &format!(
            "{}The output (if any) follows:\n\nindex 2\n",
            report(
                &format!("{array}[2]"),
                "rep[1-2]",
                true,
                "normal",
                cwd,
                "echo index $LSB_JOBINDEX",
                "Successfully completed.\n"
            )
        ),
    );
    // LSB_STDOUT_DIRECT=Y: the job writes the file itself; the report follows a separator
    emu.ctl(&["set", "LSB_STDOUT_DIRECT", "Y"]);
    let direct = emu.bsub(&[
        "-J",
        "direct",
        "-q",
        "short",
        "-o",
        "direct.out",
        "echo early",
    ]);
    emu.wait_stat(&direct.to_string(), &["DONE"], Duration::from_secs(20));
    assert_golden(
        &emu.read("direct.out"),
        &format!(
            "early\n\n------------------------------------------------------------\n{}The output (if any) is above this job summary.\n\n",
            report(&direct.to_string(), "direct", true, "short", cwd, "echo early", "Successfully completed.\n")
        ),
    );
    emu.stop();
}

// --- behaviour ------------------------------------------------------------------------------

#[test]
fn slots_keep_jobs_pending_and_arrays_respect_their_slot_limit() {
    let emu = Emu::new(&[("SLOTS", "3")]);
    // long enough elements that the polling below (slow on a busy machine) sees them run
    let array = emu.bsub(&[
        "-J",
        "lim[1-4]%2",
        "-o",
        "lim.%I.out",
        "sleep 3; echo $LSB_JOBINDEX",
    ]);
    let plain = emu.bsub(&["sleep 3"]);
    let wide = emu.bsub(&["-n", "3", "true"]);
    let (mut most_elements, mut wide_waited) = (0, false);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let out = emu.run(
            "bjobs",
            &["-a", "-noheader", "-o", "jobid stat slots delimiter='|'"],
        );
        let rows: Vec<Vec<&str>> = out.stdout.lines().map(|l| l.split('|').collect()).collect();
        let running = |r: &&Vec<&str>| r[1] == "RUN";
        let slots: u32 = rows
            .iter()
            .filter(running)
            .map(|r| r[2].parse::<u32>().unwrap())
            .sum();
        assert!(slots <= 3, "more slots in use than the host has: {rows:?}");
        let elements = rows
            .iter()
            .filter(running)
            .filter(|r| r[0] == array.to_string())
            .count();
        assert!(
            elements <= 2,
            "the array ran more than 2 elements at once: {rows:?}"
        );
        most_elements = most_elements.max(elements);
        if rows
            .iter()
            .any(|r| r[0] == wide.to_string() && r[1] == "PEND")
            && slots > 0
        {
            wide_waited = true;
        }
        if rows.len() == 6 && rows.iter().all(|r| r[1] == "DONE") {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish: {rows:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        most_elements, 2,
        "the slot limit was never reached: the elements ran one by one"
    );
    assert!(wide_waited, "the 3-slot job never waited for the others");
    for i in 1..=4 {
        assert!(emu
            .read(&format!("lim.{i}.out"))
            .ends_with(&format!("follows:\n\n{i}\n")));
    }
    assert_eq!(emu.stat(&plain.to_string()), "DONE");
    emu.stop();
}

#[test]
fn memory_limit_ends_the_job_with_term_memlimit() {
    let emu = Emu::new(&[("LSF_UNIT_FOR_LIMITS", "MB")]);
    let job = emu.bsub(&[
        "-M",
        "40",
        "-o",
        "mem.out",
        "python3 -c 'import time; x = bytearray(300 * 1024 * 1024); time.sleep(30)'",
    ]);
    let row = emu.wait_stat(&job.to_string(), &["EXIT", "DONE"], Duration::from_secs(30));
    assert_eq!(
        row[2..],
        [
            "EXIT",
            "137",
            "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit"
        ]
    );
    let report = emu.read("mem.out");
    assert!(report.contains("\nTERM_MEMLIMIT: job killed after reaching LSF memory usage limit.\nExited with exit code 137.\n"), "{report}");
    emu.stop();
}

#[test]
fn bkill_sends_int_term_kill_job_terminate_interval_apart() {
    let emu = Emu::new(&[("JOB_TERMINATE_INTERVAL", "1")]);
    // the job's own shell traps INT and TERM: only the SIGKILL ends it
    let script = "trap 'echo INT $(date +%s.%N) >> signals' INT; \
                  trap 'echo TERM $(date +%s.%N) >> signals' TERM; \
                  echo started > signals; while :; do sleep 0.1; done";
    let job = emu.bsub(&["-o", "k.out", script]).to_string();
    wait_until(Duration::from_secs(20), "the job to start", || {
        emu.path("signals").exists()
    });
    let killed_at = Instant::now();
    let out = emu.run("bkill", &[&job]);
    assert_eq!(out.stdout, format!("Job <{job}> is being terminated\n"));
    let row = emu.wait_stat(&job, &["EXIT"], Duration::from_secs(30));
    let took = killed_at.elapsed();
    assert_eq!(row[3..], ["137", "TERM_OWNER: job killed by owner"]);
    let signals = emu.read("signals");
    let times: Vec<f64> = signals
        .lines()
        .skip(1)
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    let names: Vec<&str> = signals
        .lines()
        .skip(1)
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(names, ["INT", "TERM"], "{signals}");
    let gap = times[1] - times[0];
    assert!(
        (0.7..5.0).contains(&gap),
        "INT and TERM {gap} s apart, not JOB_TERMINATE_INTERVAL (1 s)"
    );
    assert!(
        took >= Duration::from_millis(1500),
        "SIGKILL came before the second interval: {took:?}"
    );
    emu.stop();
}

#[test]
fn clean_period_forgets_finished_jobs_but_not_their_report() {
    let emu = Emu::new(&[("CLEAN_PERIOD", "10")]);
    let job = emu.bsub(&["-o", "c.out", "true"]).to_string();
    emu.wait_stat(&job, &["DONE"], Duration::from_secs(20));
    wait_until(Duration::from_secs(30), "bjobs to forget the job", || {
        emu.rows(&job).is_empty()
    });
    let out = emu.run("bjobs", &[&job]);
    assert_eq!(
        (out.code, out.stderr.clone()),
        (255, format!("Job <{job}> is not found\n"))
    );
    let out = emu.run("bkill", &[&job]);
    assert_eq!(
        (out.code, out.stderr.clone()),
        (255, format!("Job <{job}>: No matching job found\n"))
    );
    assert!(emu.read("c.out").contains("\nSuccessfully completed.\n"));
    emu.stop();
}

#[test]
fn new_jobs_are_briefly_not_found() {
    let emu = Emu::new(&[("NOT_FOUND_AFTER_SUBMIT", "6")]);
    let job = emu.bsub(&["sleep 1"]).to_string();
    let out = emu.run("bjobs", &[&job]);
    assert_eq!(
        (out.code, out.stderr.clone()),
        (255, format!("Job <{job}> is not found\n"))
    );
    emu.wait_stat(&job, &["RUN", "DONE"], Duration::from_secs(20));
    emu.stop();
}

#[test]
fn mbatchd_outage_makes_clients_retry_then_fail_or_block_while_jobs_run_on() {
    let emu = Emu::new(&[("LSB_API_CONNTIMEOUT", "0.2")]);
    let job = emu.bsub(&["sleep 4"]).to_string();
    emu.wait_stat(&job, &["RUN"], Duration::from_secs(20));
    emu.ctl(&["outage", "30"]);
    let retry = "batch system daemon not responding ... still trying\n";
    let one_try = [("LSB_NTRIES", "1")];
    let out = emu.run_with("bsub", &["true"], &one_try, None);
    assert_eq!((out.code, out.stdout.as_str()), (255, ""));
    assert_eq!(
        out.stderr,
        format!("{retry}Connection refused by server. Job not submitted.\n")
    );
    let out = emu.run_with("bjobs", &[&job], &one_try, None);
    assert_eq!(
        (out.code, out.stdout.clone(), out.stderr.clone()),
        (
            255,
            String::new(),
            format!("{retry}Connection refused by server\n")
        )
    );
    let out = emu.run_with("bkill", &[&job], &[("LSB_NTRIES", "0")], None);
    assert_eq!(
        (out.code, out.stderr.clone()),
        (255, format!("Job <{job}>: Connection refused by server\n"))
    );
    // the job finished meanwhile; once mbatchd is back, bjobs says so
    emu.ctl(&["outage", "off"]);
    emu.wait_stat(&job, &["DONE"], Duration::from_secs(20));
    // Without LSB_NTRIES a client retries until mbatchd answers, and a hung mbatchd blocks
    // its clients, silent. The test ends each outage itself: timed ones race a busy machine.
    for (mode, env, stderr_is_retries) in [("down", &[][..], true), ("hang", &one_try[..], false)] {
        emu.ctl(&["outage", "600", &format!("--{mode}")]);
        let err_path = emu.path(&format!("bjobs-{mode}.err"));
        let mut bjobs = emu.command("bjobs");
        bjobs
            .args(["-noheader", "-o", "stat", &job])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err_path).unwrap());
        let mut child = bjobs.spawn().unwrap();
        if stderr_is_retries {
            wait_until(Duration::from_secs(30), "bjobs to retry", || {
                std::fs::read_to_string(&err_path)
                    .unwrap_or_default()
                    .starts_with(retry)
            });
        } else {
            std::thread::sleep(Duration::from_secs(2));
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "bjobs gave up during a {mode} outage"
        );
        emu.ctl(&["outage", "off"]);
        let out = child.wait_with_output().unwrap();
        let stderr = std::fs::read_to_string(&err_path).unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).as_ref()
            ),
            (Some(0), "DONE\n")
        );
        if stderr_is_retries {
            assert!(stderr.lines().all(|l| l == retry.trim_end()), "{stderr}");
        } else {
            assert_eq!(stderr, "");
        }
    }
    emu.stop();
}

#[test]
fn injected_failures_exit_255_without_output() {
    let emu = Emu::new(&[]);
    emu.ctl(&["fail-next", "bsub"]);
    let out = emu.run("bsub", &["-J", "first", "true"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (255, "", "")
    );
    emu.ctl(&["fail-next", "bsub", "--after-submit"]);
    let out = emu.run("bsub", &["-J", "second", "true"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (255, "", "")
    );
    emu.ctl(&["fail-next", "bjobs", "2"]);
    for _ in 0..2 {
        let out = emu.run("bjobs", &["-a"]);
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (255, "", "")
        );
    }
    // the lost reply did submit "second"; "first" never was
    let out = emu.run("bjobs", &["-a", "-noheader", "-o", "job_name"]);
    assert_eq!(out.stdout, "second\n");
    emu.stop();
}

/// The state letter of /proc/PID/stat (R, S, T for stopped, ...).
fn process_state(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(") ")
        .next()
        .unwrap_or_default()
        .chars()
        .take(1)
        .collect()
}

#[test]
fn unkwn_zombi_and_suspended_states_show_and_act_like_lsf() {
    let emu = Emu::new(&[]);
    let job = emu.bsub(&["sleep 60"]).to_string();
    emu.wait_stat(&job, &["RUN"], Duration::from_secs(20));
    let pids = emu.pids(&job);
    assert!(!pids.is_empty());
    // the display windows are long, and ended by the test: short ones race a busy machine
    emu.ctl(&["unkwn", &job, "600"]);
    assert_eq!(emu.stat(&job), "UNKWN");
    emu.ctl(&["clear", &job]);
    assert_eq!(emu.stat(&job), "RUN");

    emu.ctl(&["ssusp", &job]);
    emu.wait_stat(&job, &["SSUSP"], Duration::from_secs(10));
    wait_until(Duration::from_secs(5), "the job to stop", || {
        pids.iter().all(|&p| process_state(p) == "T")
    });
    emu.ctl(&["resume", &job]);
    emu.wait_stat(&job, &["RUN"], Duration::from_secs(10));
    wait_until(Duration::from_secs(5), "the job to go on", || {
        pids.iter().all(|&p| process_state(p) != "T")
    });
    emu.run("bstop", &[&job]);
    emu.wait_stat(&job, &["USUSP"], Duration::from_secs(10));
    emu.run("bresume", &[&job]);
    emu.wait_stat(&job, &["RUN"], Duration::from_secs(10));

    emu.ctl(&["zombi", &job, "600"]);
    assert_eq!(emu.stat(&job), "ZOMBI");
    wait_until(
        Duration::from_secs(10),
        "the job's processes to die",
        || {
            pids.iter()
                .all(|&p| matches!(process_state(p).as_str(), "" | "Z"))
        },
    );
    emu.ctl(&["clear", &job]);
    let row = emu.wait_stat(&job, &["EXIT"], Duration::from_secs(10));
    assert_eq!(
        row[3..],
        ["137", "TERM_ZOMBIE: job exited while LSF is not available"]
    );
    emu.stop();
}

#[test]
fn dash_j_names_an_array_by_its_own_name() {
    // IBM: an array and its elements are referenced by the array's name. flowrun's LSF
    // backend names every job of a run, arrays too, after the run, and sweeps the run by name.
    let emu = Emu::new(&[]);
    let array = emu.bsub(&["-J", "sweep[1-3]%1", "-o", "/dev/null", "sleep 60"]);
    let single = emu.bsub(&["-J", "sweep", "-o", "/dev/null", "sleep 60"]);
    let other = emu.bsub(&["-J", "sweeper", "-o", "/dev/null", "sleep 60"]);
    let out = emu.run(
        "bjobs",
        &["-noheader", "-o", "jobid jobindex", "-J", "sweep"],
    );
    let mut rows: Vec<&str> = out.stdout.lines().collect();
    rows.sort_unstable();
    let mut want = vec![
        format!("{array} 1"),
        format!("{array} 2"),
        format!("{array} 3"),
        format!("{single} 0"),
    ];
    want.sort_unstable();
    assert_eq!(rows, want, "{out:?}");
    let out = emu.run("bkill", &["-J", "sweep", "0"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!("Job <{array}> is being terminated\nJob <{single}> is being terminated\n")
    );
    for spec in [format!("{array}[3]"), single.to_string()] {
        emu.wait_stat(&spec, &["EXIT"], Duration::from_secs(30));
    }
    assert_eq!(emu.stat(&other.to_string()), "RUN");
    emu.stop();
}

#[test]
fn held_jobs_wait_in_psusp_until_resumed() {
    let emu = Emu::new(&[]);
    let job = emu.bsub(&["-H", "-o", "held.out", "echo ran"]).to_string();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(emu.stat(&job), "PSUSP");
    assert!(!emu.path("held.out").exists(), "a held job ran");
    emu.run("bresume", &[&job]);
    emu.wait_stat(&job, &["DONE"], Duration::from_secs(20));
    assert!(emu.read("held.out").ends_with("follows:\n\nran\n"));
    emu.stop();
}

#[test]
fn jobs_get_the_lsf_environment_working_directory_and_output_paths() {
    let emu = Emu::new(&[]);
    std::fs::create_dir(emu.path("wd")).unwrap();
    let env = "echo $LSB_JOBID $LSB_JOBINDEX $LSB_JOBNAME $LSB_QUEUE $LSB_DJOB_NUMPROC $(pwd)";
    let job = emu.bsub(&[
        "-J",
        "envjob",
        "-q",
        "long",
        "-n",
        "2",
        "-cwd",
        "wd",
        "-oo",
        "out.%J.%I",
        env,
    ]);
    let array = emu.bsub(&["-J", "envarr[2-3]", "-oo", "arr.%J.%I", env]);
    // a script on stdin: its #BSUB lines are options
    let script = "#!/bin/sh\n#BSUB -J fromstdin\n#BSUB -oo stdin.out\necho script $LSB_JOBNAME\n";
    let out = emu.run_with("bsub", &[], &[], Some(script));
    let stdin_job = submitted_id(&out.stdout);
    let missing = emu.bsub(&["-cwd", "no/such/dir", "true"]);
    for spec in [
        job.to_string(),
        format!("{array}[3]"),
        stdin_job.to_string(),
        missing.to_string(),
    ] {
        emu.wait_stat(&spec, &["DONE", "EXIT"], Duration::from_secs(20));
    }
    let wd = emu.path("wd").display().to_string();
    assert!(
        std::fs::read_to_string(emu.path(&format!("wd/out.{job}.0")))
            .unwrap()
            .ends_with(&format!("follows:\n\n{job} 0 envjob long 2 {wd}\n"))
    );
    assert!(emu.read(&format!("arr.{array}.3")).ends_with(&format!(
        "follows:\n\n{array} 3 envarr[3] normal 1 {}\n",
        emu.work().display()
    )));
    let stdin_out = emu.read("stdin.out");
    assert!(
        stdin_out.contains(&format!("Subject: Job {stdin_job}: <fromstdin>")),
        "{stdin_out}"
    );
    assert!(
        stdin_out.contains("# LSBATCH: User input\n#!/bin/sh\n#BSUB -J fromstdin\n"),
        "{stdin_out}"
    );
    assert!(
        stdin_out.ends_with("follows:\n\nscript fromstdin\n"),
        "{stdin_out}"
    );
    assert_eq!(emu.rows(&missing.to_string())[0][2..], ["EXIT", "-",
        "TERM_CWD_NOTEXIST: current working directory is not accessible or does not exist on the execution host"]);
    emu.stop();
}

#[test]
fn stop_leaves_no_job_process_and_the_daemon_leaves_when_idle() {
    let emu = Emu::new(&[("IDLE_EXIT", "0.5")]);
    let job = emu
        .bsub(&["sleep 300 & (sleep 300 &); sleep 300"])
        .to_string();
    emu.wait_stat(&job, &["RUN"], Duration::from_secs(20));
    wait_until(Duration::from_secs(10), "the job's three sleeps", || {
        emu.pids(&job).len() >= 4
    });
    let pids = emu.pids(&job);
    let out = emu.run("lsf-emu-ctl", &["stop"]);
    assert_eq!(out.code, 0, "{out:?}");
    for pid in &pids {
        let state = process_state(*pid);
        assert!(
            state.is_empty() || state == "Z",
            "job process {pid} survived stop ({state})"
        );
    }
    assert_eq!(emu.rows(&job)[0][2], "EXIT");
    // started again by the next bsub, the daemon leaves by itself once the cluster is idle
    let job = emu.bsub(&["true"]).to_string();
    emu.wait_stat(&job, &["DONE"], Duration::from_secs(20));
    wait_until(Duration::from_secs(10), "the idle daemon to exit", || {
        emu.ctl(&["status"]).stdout.contains("daemon: not running")
    });
    emu.stop();
}
