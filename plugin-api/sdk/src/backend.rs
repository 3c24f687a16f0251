//! The backend trait an author implements, and its guarded adapter to the ABI trait.

use flowrun_plugin_abi::{
    self as abi,
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RSlice, RString, RVec},
    },
};

use crate::{guard, Answer, Capabilities, Event, JobId, Jobs, PluginError, Sink};

/// A runtime backend, in plain Rust. Every method but `shutdown` must return promptly: do the
/// work on your own threads or runtime and report through the [`Sink`].
pub trait BackendImpl: Send + Sync + 'static {
    /// What the backend can do.
    fn capabilities(&self) -> Capabilities;
    /// Answers each job of the batch, in order: accepted, busy or rejected. The jobs are
    /// borrowed for the call (keep one with [`crate::Job::to_owned`]), so that the SDK can offer
    /// them again one by one if the batch panics, without copying every batch up front.
    fn submit(&self, jobs: Jobs<'_>) -> Vec<Answer>;
    /// Kills accepted jobs; each still ends with one FINISHED event. Unknown or ended ids are
    /// ignored.
    fn kill(&self, ids: &[JobId]);
    /// Kills what still runs, waits for it, releases everything. May block.
    fn shutdown(&self);
    /// Diagnostic counters as TOML text (`status_queries = 12`).
    fn stats(&self) -> String {
        String::new()
    }
    /// Takes over jobs an earlier host of the same run submitted (`flowrun run --resume` after
    /// the host died): `native_ids[i]` is the id this backend reported for `jobs[i]`. Answer
    /// each, in order: accepted (the job is tracked to its end and reported through the
    /// [`Sink`] as if this instance had submitted it; one that already ended is resolved from
    /// the backend's records) or rejected ("cannot re-attach": the host submits it afresh).
    /// Declare [`CapabilityFlags::REATTACH`](crate::CapabilityFlags::REATTACH) when you
    /// implement it; the default refuses every job.
    fn reattach(&self, jobs: Jobs<'_>, native_ids: &[&str]) -> Vec<Answer> {
        let _ = native_ids;
        jobs.iter()
            .map(|j| Answer::rejected(j.id(), "this backend cannot re-attach jobs"))
            .collect()
    }
}

/// Creates a backend from its TOML config text (the flow's table without `kind` and
/// `max_parallel`), reporting into `sink`.
pub type BackendFactory = fn(config: &str, sink: Sink) -> Result<Box<dyn BackendImpl>, PluginError>;

/// A backend kind, registered with [`crate::register_backend!`].
pub struct BackendKind {
    /// The kind's name, as flows write it.
    pub name: &'static str,
    /// One line for `flowrun plugins list`.
    pub description: &'static str,
    /// The constructor.
    pub create: BackendFactory,
    /// This kind's record of the identity note. Referring to it keeps the linker from
    /// discarding the record (the registration itself is reachable from `.init_array`).
    #[doc(hidden)]
    pub note: &'static [u8],
}

inventory::collect!(BackendKind);

/// Adapts a [`BackendImpl`] to the ABI trait, guarding every call.
struct GuardedBackend {
    inner: Box<dyn BackendImpl>,
    sink: Sink,
}

/// The answers to `jobs`, in the ABI's form. The conversion reuses the vector's allocation
/// (`Answer` wraps the ABI answer, so the collect happens in place).
fn answers_to_abi(answers: Vec<Answer>) -> RVec<abi::SubmitAnswer> {
    answers
        .into_iter()
        .map(Answer::into_abi)
        .collect::<Vec<_>>()
        .into()
}

impl abi::Backend for GuardedBackend {
    fn capabilities(&self) -> Capabilities {
        guard(|| self.inner.capabilities()).unwrap_or_else(|e| {
            tracing::error!("capabilities(): {e}");
            Capabilities::default()
        })
    }

    fn submit(&self, specs: RVec<abi::JobSpec>) -> RVec<abi::SubmitAnswer> {
        let specs = specs.as_slice();
        match guard(|| self.inner.submit(Jobs::from_abi(specs))) {
            Ok(answers) if answers.len() == specs.len() => answers_to_abi(answers),
            Ok(answers) => {
                let why = format!(
                    "plugin bug: submit answered {} times for {} jobs",
                    answers.len(),
                    specs.len()
                );
                specs
                    .iter()
                    .map(|spec| abi::SubmitAnswer::rejected(spec.id, why.clone()))
                    .collect()
            }
            Err(e) if specs.len() == 1 => {
                RVec::from(vec![abi::SubmitAnswer::rejected(specs[0].id, e.message)])
            }
            Err(_) => {
                // One job of the batch made the plugin panic: offer the jobs one at a time so
                // that only the job(s) that panic fail. A job the plugin had already taken
                // before the panic may be offered twice; the host ignores duplicate events.
                specs
                    .iter()
                    .map(|spec| {
                        let one = Jobs::from_abi(std::slice::from_ref(spec));
                        match guard(|| self.inner.submit(one)) {
                            Ok(mut a) if a.len() == 1 => a.remove(0).into_abi(),
                            Ok(_) => abi::SubmitAnswer::rejected(
                                spec.id,
                                "plugin bug: submit answered wrongly",
                            ),
                            Err(e) => abi::SubmitAnswer::rejected(spec.id, e.message),
                        }
                    })
                    .collect()
            }
        }
    }

    fn kill(&self, ids: RSlice<'_, JobId>) {
        if let Err(e) = guard(|| self.inner.kill(ids.as_slice())) {
            // The jobs' fate is unknown now: report them lost rather than leave the host waiting.
            for id in ids.iter() {
                self.sink
                    .emit(Event::lost(*id, format!("kill failed: {e}")));
            }
        }
    }

    fn shutdown(&self) {
        if let Err(e) = guard(|| self.inner.shutdown()) {
            tracing::error!("shutdown(): {e}");
        }
    }

    // @@since-0.1.1-begin (the ABI-compatibility test builds a plugin without this method)
    fn stats(&self) -> RString {
        guard(|| self.inner.stats()).unwrap_or_default().into()
    }
    // @@since-0.1.1-end
    // @@since-0.1.3-begin (the ABI-compatibility test builds a plugin without this method)
    fn reattach(&self, specs: RVec<abi::JobSpec>, ids: RVec<RString>) -> RVec<abi::SubmitAnswer> {
        let specs = specs.as_slice();
        let ids: Vec<&str> = ids.iter().map(RString::as_str).collect();
        let refuse_all = |why: &str| -> RVec<abi::SubmitAnswer> {
            specs
                .iter()
                .map(|spec| abi::SubmitAnswer::rejected(spec.id, why))
                .collect()
        };
        if ids.len() != specs.len() {
            return refuse_all("host bug: reattach got a native id count unlike the job count");
        }
        match guard(|| self.inner.reattach(Jobs::from_abi(specs), &ids)) {
            Ok(answers) if answers.len() == specs.len() => answers_to_abi(answers),
            Ok(_) => refuse_all("plugin bug: reattach answered the wrong number of times"),
            // Refusing is always safe: the host submits the jobs afresh.
            Err(e) => refuse_all(&e.message),
        }
    }
    // @@since-0.1.3-end
}

/// Wraps a plain backend into the ABI object the host receives. Used by the export macros and
/// by the test kit.
pub fn backend_to_abi(inner: Box<dyn BackendImpl>, sink: Sink) -> abi::BackendBox {
    abi::Backend_TO::from_value(GuardedBackend { inner, sink }, TD_Opaque)
}
