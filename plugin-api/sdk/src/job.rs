//! Borrowed views of the jobs the host submits: plain `&str`, `Option<Duration>` and iterators
//! of pairs over the ABI's `JobSpec`, at no cost (each accessor reads one field).

use std::time::Duration;

use flowrun_plugin_abi::{
    self as abi,
    abi_stable::std_types::{RString, Tuple2},
};

use crate::JobId;

/// The batch of jobs one `submit` call offers, in order. Borrowed for the call: keep a job
/// beyond it with [`Job::to_owned`].
#[derive(Clone, Copy)]
pub struct Jobs<'a> {
    specs: &'a [abi::JobSpec],
}

impl<'a> Jobs<'a> {
    /// Views the host's specs. The SDK's ABI adapter and the test kit build batches with it.
    #[inline]
    pub fn from_abi(specs: &'a [abi::JobSpec]) -> Self {
        Jobs { specs }
    }

    /// How many jobs.
    #[inline]
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether the batch is empty (the host never sends an empty one).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Job `index`, if there is one.
    #[inline]
    pub fn get(&self, index: usize) -> Option<Job<'a>> {
        self.specs.get(index).map(|spec| Job { spec })
    }

    /// The jobs, in order.
    #[inline]
    pub fn iter(&self) -> JobsIter<'a> {
        JobsIter(self.specs.iter())
    }
}

impl<'a> IntoIterator for Jobs<'a> {
    type Item = Job<'a>;
    type IntoIter = JobsIter<'a>;
    #[inline]
    fn into_iter(self) -> JobsIter<'a> {
        self.iter()
    }
}

impl std::fmt::Debug for Jobs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The iterator of [`Jobs`].
#[derive(Clone)]
pub struct JobsIter<'a>(std::slice::Iter<'a, abi::JobSpec>);

impl<'a> Iterator for JobsIter<'a> {
    type Item = Job<'a>;
    #[inline]
    fn next(&mut self) -> Option<Job<'a>> {
        self.0.next().map(|spec| Job { spec })
    }
    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for JobsIter<'_> {}

impl DoubleEndedIterator for JobsIter<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|spec| Job { spec })
    }
}

/// One job: everything a backend needs to run it. Paths are absolute and valid UTF-8 (the
/// host's contract), given as `&str` so that they serve as paths, environment values and
/// script text alike.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    spec: &'a abi::JobSpec,
}

impl<'a> Job<'a> {
    /// The host's id for the job in this run; events and answers refer to it.
    #[inline]
    pub fn id(&self) -> JobId {
        self.spec.id
    }

    /// The job's expanded name, unique in the run.
    #[inline]
    pub fn name(&self) -> &'a str {
        &self.spec.name
    }

    /// The command: a shell string for `/bin/sh -c`, or an argv to run directly.
    #[inline]
    pub fn command(&self) -> Command<'a> {
        let args = self.spec.command.args.as_slice();
        if self.spec.command.shell {
            Command::Shell(args.first().map_or("", |s| s.as_str()))
        } else {
            Command::Argv(Args(args))
        }
    }

    /// The directory to run in. It exists unless the user's `cwd` names a missing directory
    /// (report that as a failure of the job), or it is the job directory of a backend that
    /// declares [`crate::CapabilityFlags::CREATES_JOB_DIR`].
    #[inline]
    pub fn cwd(&self) -> &'a str {
        &self.spec.cwd
    }

    /// Variables to set on top of the backend's base environment, in order. They include the
    /// job environment of flowrun's contract (`FLOWRUN_JOB_NAME`, `FLOWRUN_JOB_DIR`,
    /// `FLOWRUN_RUN_DIR`, `FLOWRUN_ATTEMPT`, `FLOWRUN_RUN_TAG`): pass them all on.
    #[inline]
    pub fn env(&self) -> Pairs<'a> {
        Pairs(self.spec.env.as_slice())
    }

    /// The job's private directory: created by the host, or by the backend when it declares
    /// [`crate::CapabilityFlags::CREATES_JOB_DIR`].
    #[inline]
    pub fn job_dir(&self) -> &'a str {
        &self.spec.job_dir
    }

    /// Where the job's combined stdout and stderr go. Create or truncate it when the job
    /// starts, never append: a log is this attempt's evidence alone.
    #[inline]
    pub fn log_path(&self) -> &'a str {
        &self.spec.log_path
    }

    /// The run's output directory.
    #[inline]
    pub fn run_dir(&self) -> &'a str {
        &self.spec.run_dir
    }

    /// The run's tag: unique per run, usable as a cluster job name.
    #[inline]
    pub fn run_tag(&self) -> &'a str {
        &self.spec.run_tag
    }

    /// The job's time limit, if any. Only a backend that declares
    /// [`crate::CapabilityFlags::ENFORCES_TIMEOUT`] acts on it; otherwise the host kills the
    /// job when it expires.
    #[inline]
    pub fn timeout(&self) -> Option<Duration> {
        self.spec
            .timeout_ms
            .into_option()
            .map(Duration::from_millis)
    }

    /// What the job asks for.
    #[inline]
    pub fn resources(&self) -> Resources<'a> {
        Resources(&self.spec.resources)
    }

    /// Whether the job needs the user's terminal.
    #[inline]
    pub fn interactive(&self) -> bool {
        self.spec.interactive
    }

    /// Which attempt this is, from 1.
    #[inline]
    pub fn attempt(&self) -> u32 {
        self.spec.attempt
    }

    /// Free-form attributes from the flow.
    #[inline]
    pub fn attrs(&self) -> Pairs<'a> {
        Pairs(self.spec.attrs.as_slice())
    }

    /// The value of attribute `key`, if present.
    #[inline]
    pub fn attr(&self, key: &str) -> Option<&'a str> {
        self.attrs().get(key)
    }

    /// An owned copy, to keep beyond the `submit` call.
    #[inline]
    pub fn to_owned(&self) -> OwnedJob {
        OwnedJob(self.spec.clone())
    }

    /// The ABI spec behind the view.
    #[inline]
    pub fn as_abi(&self) -> &'a abi::JobSpec {
        self.spec
    }
}

impl std::fmt::Debug for Job<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id().0)
            .field("name", &self.name())
            .field("command", &self.command())
            .field("cwd", &self.cwd())
            .field("log_path", &self.log_path())
            .field("attempt", &self.attempt())
            .finish_non_exhaustive()
    }
}

/// A job kept beyond the `submit` call that offered it.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedJob(abi::JobSpec);

impl OwnedJob {
    /// The job's view.
    #[inline]
    pub fn job(&self) -> Job<'_> {
        Job { spec: &self.0 }
    }

    /// The job's id.
    #[inline]
    pub fn id(&self) -> JobId {
        self.0.id
    }

    /// Wraps an ABI spec (the test kit builds jobs this way).
    #[inline]
    pub fn from_abi(spec: abi::JobSpec) -> Self {
        OwnedJob(spec)
    }

    /// The ABI spec.
    #[inline]
    pub fn as_abi(&self) -> &abi::JobSpec {
        &self.0
    }

    /// The ABI spec, mutably (the test kit's job builder edits it).
    #[inline]
    pub fn as_abi_mut(&mut self) -> &mut abi::JobSpec {
        &mut self.0
    }

    /// The ABI spec, by value.
    #[inline]
    pub fn into_abi(self) -> abi::JobSpec {
        self.0
    }
}

/// How a job's command is given.
#[derive(Clone, Copy, Debug)]
pub enum Command<'a> {
    /// One string, to run with `/bin/sh -c`.
    Shell(&'a str),
    /// The argv, to run directly (never empty: the host checks).
    Argv(Args<'a>),
}

/// The argv of a job.
#[derive(Clone, Copy)]
pub struct Args<'a>(&'a [RString]);

impl<'a> Args<'a> {
    /// How many arguments, the program included.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The program.
    #[inline]
    pub fn program(&self) -> Option<&'a str> {
        self.get(0)
    }

    /// Argument `index` (0 is the program).
    #[inline]
    pub fn get(&self, index: usize) -> Option<&'a str> {
        self.0.get(index).map(|s| s.as_str())
    }

    /// Every argument, the program first.
    #[inline]
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a str> + Clone + 'a {
        self.0.iter().map(|s| s.as_str())
    }
}

impl std::fmt::Debug for Args<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Key/value pairs (environment variables, attributes), in order.
#[derive(Clone)]
pub struct Pairs<'a>(&'a [Tuple2<RString, RString>]);

impl<'a> Pairs<'a> {
    /// Views ABI pairs.
    #[inline]
    pub fn from_abi(pairs: &'a [Tuple2<RString, RString>]) -> Self {
        Pairs(pairs)
    }

    /// The value of the first pair named `key`.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|p| p.0.as_str() == key)
            .map(|p| p.1.as_str())
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some((first.0.as_str(), first.1.as_str()))
    }
    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.0.len(), Some(self.0.len()))
    }
}

impl ExactSizeIterator for Pairs<'_> {}

impl std::fmt::Debug for Pairs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// What a job asks for.
#[derive(Clone, Copy)]
pub struct Resources<'a>(&'a abi::Resources);

impl<'a> Resources<'a> {
    /// CPUs (at least 1).
    #[inline]
    pub fn cpus(&self) -> u32 {
        self.0.cpus
    }

    /// Memory in MiB, when given.
    #[inline]
    pub fn memory_mb(&self) -> Option<u64> {
        self.0.memory_mb.into_option()
    }

    /// Named counted resources (licenses, ...), as the flow's `[resources]` declares them.
    #[inline]
    pub fn named(&self) -> NamedResources<'a> {
        NamedResources(self.0.named.as_slice())
    }
}

impl std::fmt::Debug for Resources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("cpus", &self.cpus())
            .field("memory_mb", &self.memory_mb())
            .field("named", &self.named())
            .finish()
    }
}

/// Named resources and their amounts.
#[derive(Clone)]
pub struct NamedResources<'a>(&'a [Tuple2<RString, u64>]);

impl<'a> Iterator for NamedResources<'a> {
    type Item = (&'a str, u64);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some((first.0.as_str(), first.1))
    }
    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.0.len(), Some(self.0.len()))
    }
}

impl ExactSizeIterator for NamedResources<'_> {}

impl std::fmt::Debug for NamedResources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}
