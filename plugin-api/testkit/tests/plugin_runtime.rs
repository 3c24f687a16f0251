//! The SDK's plugin runtime never leaves a job hanging: a job whose task panics, or whose task
//! the runtime drops at shutdown before it finished, is reported lost.

use std::time::Duration;

use flowrun_plugin_sdk::{JobEventKind, JobId, PluginRuntime};
use flowrun_plugin_testkit::FakeHost;

#[test]
fn a_job_task_that_panics_or_is_dropped_unfinished_is_reported_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = FakeHost::new(dir.path());
    let rt = PluginRuntime::new("runtime-test", 1).unwrap();
    rt.spawn_job(&host.sink(), JobId(1), async { panic!("deliberate") });
    let e = host.next_event(Duration::from_secs(10)).expect("an event");
    assert_eq!((e.id(), e.kind()), (JobId(1), JobEventKind::LOST));
    assert_eq!(e.reason(), "plugin panicked: deliberate");

    // A task that never ends, dropped by the runtime's shutdown.
    rt.spawn_job(&host.sink(), JobId(2), std::future::pending());
    rt.shutdown_timeout(Duration::from_secs(1));
    let e = host.next_event(Duration::from_secs(10)).expect("an event");
    assert_eq!((e.id(), e.kind()), (JobId(2), JobEventKind::LOST));
    assert_eq!(
        e.reason(),
        "the plugin's runtime stopped before the job ended"
    );
    assert!(
        host.next_event(Duration::from_millis(200)).is_none(),
        "one end per job"
    );
}
