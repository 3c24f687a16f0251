//! What a backend says back: [`Answer`]s to a submit batch, [`Event`]s through the [`Sink`].

use std::sync::Arc;

use flowrun_plugin_abi::{
    self as abi,
    abi_stable::std_types::{ROption, RString, Tuple2},
};

use crate::{EndKind, JobEventKind, JobId, Pairs, SubmitAnswerKind};

/// Attribute keys of job events that the host understands (contract between backends and the
/// host; any other key is carried along and ignored).
pub mod attrs {
    /// A log file the backend wrote instead of, or besides, the job's `log_path`; may repeat.
    pub const LOG: &str = "log";
    /// `"1"` on STARTED of a job that holds the terminal.
    pub const INTERACTIVE: &str = "interactive";
    /// The cluster's id of the job (on STARTED or FINISHED).
    pub const NATIVE_ID: &str = "native_id";
    /// FINISHED: user+system CPU seconds of the job's whole process tree, decimal.
    pub const CPU_S: &str = "cpu_s";
    /// FINISHED: peak memory of the job's process tree in MiB, decimal.
    pub const MAX_RSS_MB: &str = "max_rss_mb";
    /// FINISHED: where `cpu_s` and `max_rss_mb` come from (`cgroup`, `rusage`, `sacct`, ...).
    pub const USAGE_SOURCE: &str = "usage_source";
}

/// The answer to one job of a submit batch. `submit` returns one per job, in the batch's order.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer(abi::SubmitAnswer);

impl Answer {
    /// The backend took the job and will report how it ends.
    #[inline]
    pub fn accepted(id: JobId) -> Self {
        Answer(abi::SubmitAnswer::accepted(id))
    }

    /// The backend cannot take the job now; the host offers it again later, with backoff.
    #[inline]
    pub fn busy(id: JobId) -> Self {
        Answer(abi::SubmitAnswer::busy(id))
    }

    /// The backend refuses the job, which fails with `why`.
    #[inline]
    pub fn rejected(id: JobId, why: impl Into<String>) -> Self {
        Answer(abi::SubmitAnswer::rejected(id, why.into()))
    }

    /// The job answered.
    #[inline]
    pub fn id(&self) -> JobId {
        self.0.id
    }

    /// Accepted, busy or rejected.
    #[inline]
    pub fn kind(&self) -> SubmitAnswerKind {
        self.0.kind
    }

    /// Why, for a rejection.
    #[inline]
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The ABI answer.
    #[inline]
    pub fn into_abi(self) -> abi::SubmitAnswer {
        self.0
    }

    /// Wraps an ABI answer.
    #[inline]
    pub fn from_abi(answer: abi::SubmitAnswer) -> Self {
        Answer(answer)
    }
}

/// A job's state change, built by a backend and read by the test kit.
#[derive(Clone, Debug, PartialEq)]
pub struct Event(abi::JobEvent);

impl Event {
    /// The job started running (for a cluster: it left the queue).
    #[inline]
    pub fn started(id: JobId) -> Self {
        Event(abi::JobEvent::started(id))
    }

    /// The backend's scheduler took the job as `native_id` (not a start): lets the host
    /// re-attach a job still pending after a crash of the host. See
    /// [`JobEventKind::SUBMITTED`].
    #[inline]
    pub fn submitted(id: JobId, native_id: impl Into<String>) -> Self {
        Event(abi::JobEvent::submitted(id, native_id))
    }

    /// The job's process exited with `code`; the host judges it (0 passes).
    #[inline]
    pub fn exited(id: JobId, code: i32) -> Self {
        Event(abi::JobEvent::exited(id, code))
    }

    /// The job's process died of `signal`.
    #[inline]
    pub fn signaled(id: JobId, signal: i32) -> Self {
        Event(abi::JobEvent::signaled(id, signal))
    }

    /// The backend judged the job failed, for `reason` ("Slurm time limit", "command not
    /// found: simv").
    #[inline]
    pub fn failed(id: JobId, reason: impl Into<String>) -> Self {
        Event(abi::JobEvent::failed(id, reason.into()))
    }

    /// The job was killed because the host asked for it.
    #[inline]
    pub fn killed(id: JobId) -> Self {
        Event(abi::JobEvent::killed(id))
    }

    /// The backend lost track of the job; it fails with `why`.
    #[inline]
    pub fn lost(id: JobId, why: impl Into<String>) -> Self {
        Event(abi::JobEvent::lost(id, why.into()))
    }

    /// Sets the reason (for FINISHED: extra detail such as "Slurm TIMEOUT").
    #[inline]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.0.reason = RString::from(reason.into());
        self
    }

    /// Sets the exit code (for example on a FAILED end whose process did exit).
    #[inline]
    pub fn with_exit_code(mut self, code: i32) -> Self {
        self.0.exit_code = ROption::RSome(code);
        self
    }

    /// Sets the signal (for example on a KILLED end whose process died of one).
    #[inline]
    pub fn with_signal(mut self, signal: i32) -> Self {
        self.0.signal = ROption::RSome(signal);
        self
    }

    /// Adds an attribute; [`attrs`] lists the keys the host reads.
    #[inline]
    pub fn with_attr(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0
            .attrs
            .push(Tuple2(RString::from(key), RString::from(value.into())));
        self
    }

    /// The job.
    #[inline]
    pub fn id(&self) -> JobId {
        self.0.id
    }

    /// Started, finished or lost.
    #[inline]
    pub fn kind(&self) -> JobEventKind {
        self.0.kind
    }

    /// For FINISHED: how the job ended.
    #[inline]
    pub fn end(&self) -> EndKind {
        self.0.end
    }

    /// Whether this event ends the job (FINISHED or LOST).
    #[inline]
    pub fn is_end(&self) -> bool {
        matches!(self.0.kind, JobEventKind::FINISHED | JobEventKind::LOST)
    }

    /// The exit code, when known.
    #[inline]
    pub fn exit_code(&self) -> Option<i32> {
        self.0.exit_code.into_option()
    }

    /// The signal, when the job died of one.
    #[inline]
    pub fn signal(&self) -> Option<i32> {
        self.0.signal.into_option()
    }

    /// The reason or detail (empty when none).
    #[inline]
    pub fn reason(&self) -> &str {
        &self.0.reason
    }

    /// The attributes, in order.
    #[inline]
    pub fn attrs(&self) -> Pairs<'_> {
        Pairs::from_abi(self.0.attrs.as_slice())
    }

    /// The first value of attribute `key`.
    #[inline]
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs().get(key)
    }

    /// The ABI event.
    #[inline]
    pub fn into_abi(self) -> abi::JobEvent {
        self.0
    }

    /// Wraps an ABI event (the test kit reads events this way).
    #[inline]
    pub fn from_abi(event: abi::JobEvent) -> Self {
        Event(event)
    }
}

/// The host's event sink: cheap to clone, callable from any thread, never blocks.
#[derive(Clone)]
pub struct Sink(Arc<abi::EventSinkBox>);

impl Sink {
    /// Wraps the host's sink (the SDK's entry points and the test kit do).
    #[inline]
    pub fn from_abi(sink: abi::EventSinkBox) -> Self {
        Sink(Arc::new(sink))
    }

    /// Reports an event.
    #[inline]
    pub fn emit(&self, event: Event) {
        self.0.emit(event.0)
    }
}
