//! The journal on its own: every record round-trips, a torn or corrupt tail is ignored (and cut
//! before a new segment is appended), and the syncer keeps to its interval.

use std::{sync::Arc, time::Duration};

use super::{
    codec::{self, Tail},
    record::{Decoder, Encoder, Mode, Record},
    writer::{Journal, JOURNAL_FILE},
    BackendInfo, Replay, RunStart,
};
use crate::{
    backend::Usage,
    outcome::FailMatch,
    run::records::{Attempt, Extra, JobRecord},
    sched::{DependencyEnd, Interrupt, Reason, Status},
};

fn start(segment: u32, jobs: u32) -> RunStart {
    RunStart {
        segment,
        mode: if segment == 0 {
            Mode::New
        } else {
            Mode::Resume
        },
        started_us: 1_800_000_000_000_000 + i64::from(segment) * 1_000_000,
        pid: 42,
        supervisor_pid: 41,
        flow: "f".into(),
        flow_file: "/x/f.toml".into(),
        run_dir: "/x/out".into(),
        run_tag: "flowrun-f-42".into(),
        flow_hash: [7; 16],
        jobs,
        backends: vec![BackendInfo {
            name: "local".into(),
            kind: "local".into(),
        }],
    }
}

fn every_reason() -> Vec<Reason> {
    vec![
        Reason::ExitCode(-3),
        Reason::Signal {
            signal: 11,
            shell_exit: Some(139),
        },
        Reason::Signal {
            signal: 9,
            shell_exit: None,
        },
        Reason::FailPattern {
            line: 120,
            text: "UVM_ERROR".into(),
        },
        Reason::PassMissing {
            pattern: "^OK$".into(),
        },
        Reason::LogUnreadable("gone".into()),
        Reason::Backend("Slurm time limit".into()),
        Reason::Timeout("30m".into()),
        Reason::Dependency {
            ended: DependencyEnd::Killed,
            job: "build".into(),
        },
        Reason::NoDependencyPassed("a, b".into()),
        Reason::InterruptedRunning(Interrupt::Sigterm),
        Reason::InterruptedQueued(Interrupt::Sighup),
        Reason::InterruptedWaiting(Interrupt::Sigint),
        Reason::Rejected {
            backend: "b".into(),
            error: "no".into(),
        },
        Reason::Lost {
            backend: "b".into(),
            why: "node died".into(),
        },
        Reason::KillUnconfirmed {
            backend: "b".into(),
            waited: Duration::from_secs(35),
            kill: Box::new(Reason::Timeout("1s".into())),
        },
        Reason::Killed("killed by the backend".into()),
        Reason::Stopped(3),
        Reason::Crashed("flowrun crashed: the run's process died of SIGSEGV".into()),
    ]
}

fn full_record(base: i64) -> JobRecord {
    JobRecord {
        queued_at: base + 5,
        started_at: base + 10,
        finished_at: base + 2_000_000,
        exit_code: Some(3),
        attempt: 2,
        has_dir: true,
        extra: Some(Box::new(Extra {
            fail: Some(FailMatch {
                line: 4,
                text: "bad".into(),
                context: vec!["next".into()],
            }),
            logs: vec!["/x/out/jobs/a/other.log".into()],
            native_id: Some(Arc::from("1234_5")),
            usage: Usage {
                cpu_s: Some(1.25),
                max_rss_mb: Some(80.5),
                source: Some("cgroup".into()),
            },
            detail: Some("node7".into()),
            earlier: vec![Attempt {
                status: Status::Failed,
                reason: Some(Reason::Lost {
                    backend: "slurm".into(),
                    why: "NODE_FAIL".into(),
                }),
                record: JobRecord {
                    queued_at: base + 5,
                    started_at: base - 100,
                    finished_at: base + 1,
                    attempt: 1,
                    has_dir: true,
                    ..Default::default()
                },
            }],
            reused_from: Some("/x/old (run t)".into()),
        })),
    }
}

#[test]
fn every_record_round_trips() {
    let s = start(0, 3);
    let base = s.started_us;
    let mut enc = Encoder::new(0);
    let mut buf = Vec::new();
    enc.run_start(&mut buf, &s);
    let names = [
        ("a", [1u8; 16], 0u32),
        ("b/c", [2; 16], 0),
        ("é", [3; 16], 0),
        ("éa", [4; 16], 0),
        ("è", [5; 16], 1),
        ("", [6; 16], 0),
        ("sim-10", [7; 16], 0),
        ("sim-11", [8; 16], 0),
    ];
    enc.jobs(&mut buf, 0, names.iter().map(|(n, h, b)| (*n, h, *b)));
    enc.queued(&mut buf, 0, base + 1);
    enc.submitted(&mut buf, 0, 1, base + 2);
    enc.requeued(&mut buf, 0);
    enc.started(&mut buf, 1, base - 7);
    enc.native_id(&mut buf, 1, "999");
    let reasons = every_reason();
    for r in &reasons {
        enc.ended(&mut buf, 2, Status::Failed, Some(r), &JobRecord::default());
    }
    enc.ended(&mut buf, 0, Status::Passed, None, &full_record(base));
    let attempt = Attempt {
        status: Status::Killed,
        reason: Some(Reason::Timeout("1s".into())),
        record: JobRecord {
            attempt: 1,
            ..Default::default()
        },
    };
    enc.attempt_ended(&mut buf, 1, &attempt);
    enc.run_end(&mut buf, base + 9, Some(Interrupt::Sighup));
    enc.note(&mut buf, "backend plugin crashed");

    let mut out = Vec::new();
    Decoder::new().frame(&buf, &mut out).unwrap();
    let mut expected = vec![
        Record::RunStart(s.clone()),
        Record::Jobs {
            first: 0,
            entries: names
                .iter()
                .map(|(n, h, b)| (n.to_string(), *h, *b))
                .collect(),
        },
        Record::Queued {
            job: 0,
            t: base + 1,
        },
        Record::Submitted {
            job: 0,
            attempt: 1,
            t: base + 2,
        },
        Record::Requeued { job: 0 },
        Record::Started {
            job: 1,
            t: base - 7,
        },
        Record::NativeId {
            job: 1,
            id: "999".into(),
        },
    ];
    for r in reasons {
        expected.push(Record::Ended {
            job: 2,
            status: Status::Failed,
            reason: Some(r),
            record: JobRecord::default(),
        });
    }
    expected.push(Record::Ended {
        job: 0,
        status: Status::Passed,
        reason: None,
        record: full_record(base),
    });
    expected.push(Record::AttemptEnded { job: 1, attempt });
    expected.push(Record::RunEnd {
        t: base + 9,
        interrupted: Some(Interrupt::Sighup),
    });
    expected.push(Record::Note {
        text: "backend plugin crashed".into(),
    });
    assert_eq!(out.len(), expected.len());
    for (got, want) in out.iter().zip(&expected) {
        assert_eq!(got, want);
    }
}

fn write_run(dir: &std::path::Path) -> std::path::PathBuf {
    let s = start(0, 2);
    let base = s.started_us;
    let table = [("a", [1u8; 16], 0u32), ("b", [2; 16], 0)];
    let mut j = Journal::create(dir, &s, table.iter().map(|(n, h, b)| (*n, h, *b))).unwrap();
    j.queued(0, base + 1);
    j.queued(1, base + 1);
    j.submitted(0, 1, base + 2);
    j.flush();
    j.started(0, base + 3);
    j.native_id(0, "77");
    j.flush();
    let rec = JobRecord {
        queued_at: base + 1,
        started_at: base + 3,
        finished_at: base + 4,
        exit_code: Some(0),
        attempt: 1,
        has_dir: true,
        extra: None,
    };
    j.ended(0, Status::Passed, None, &rec);
    j.flush();
    let path = j.path().to_path_buf();
    let (stats, error) = j.finish();
    assert_eq!(error, None);
    assert_eq!(stats.frames, 4);
    path
}

#[test]
fn a_journal_reads_back_as_the_jobs_states() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_run(dir.path());
    let r = Replay::read(&path).unwrap();
    assert_eq!(r.segments, 1);
    assert_eq!(r.tail, Tail::Clean);
    assert_eq!(r.valid_len, std::fs::metadata(&path).unwrap().len());
    assert_eq!(r.jobs[1].0, "b");
    assert_eq!(r.state[0].status, Status::Passed);
    assert_eq!(r.state[0].record.exit_code, Some(0));
    assert_eq!(r.state[1].status, Status::Queued);
    assert!(!r.finished());
}

#[test]
fn records_another_writer_appends_to_the_segment_read_back_with_their_exact_times() {
    // The supervisor continues a dead worker's segment with a writer of its own: its frames
    // must decode knowing only the segment's start, whatever the worker's frames held.
    let dir = tempfile::tempdir().unwrap();
    let path = write_run(dir.path());
    let r = Replay::read(&path).unwrap();
    let base = r.last.started_us;
    let mut j = Journal::append_to(&path, r.valid_len, base).unwrap();
    let rec = JobRecord {
        queued_at: base + 1,
        started_at: base + 2_500_000,
        finished_at: base + 2_400_000,
        exit_code: Some(-3),
        attempt: 7,
        has_dir: false,
        extra: None,
    };
    j.ended(
        1,
        Status::Killed,
        Some(&Reason::Killed("gone".into())),
        &rec,
    );
    j.note("the worker died");
    let (_, error) = j.finish();
    assert_eq!(error, None);
    let r = Replay::read(&path).unwrap();
    assert_eq!(r.tail, Tail::Clean);
    assert_eq!(r.state[0].status, Status::Passed);
    assert_eq!(r.state[0].record.finished_at, base + 4);
    assert_eq!(r.state[1].status, Status::Killed);
    assert_eq!(r.state[1].record, rec);
    assert_eq!(r.notes, ["the worker died"]);
}

#[test]
fn status_changes_of_neighbouring_jobs_at_one_moment_take_a_few_bytes_each() {
    // What keeps a million-job journal small: distances, not absolute times and indices.
    let s = start(0, 4000);
    let base = s.started_us;
    let mut enc = Encoder::new(base);
    let mut buf = Vec::new();
    enc.run_start(&mut buf, &s);
    let before = buf.len();
    let t = base + 90_000_000; // 90 s into the run: 4 bytes as an absolute offset
    for job in 2000..3000 {
        enc.queued(&mut buf, job, t);
    }
    assert!(
        buf.len() - before <= 1000 * 3 + 8,
        "{} bytes",
        buf.len() - before
    );
    let rec = JobRecord {
        queued_at: t,
        started_at: t + 40,
        finished_at: t + 90,
        exit_code: Some(0),
        attempt: 1,
        has_dir: true,
        extra: None,
    };
    let before = buf.len();
    for job in 2000..3000 {
        enc.ended(&mut buf, job, Status::Passed, None, &rec);
    }
    assert!(
        buf.len() - before <= 1000 * 11 + 8,
        "{} bytes",
        buf.len() - before
    );
    let mut out = Vec::new();
    Decoder::new().frame(&buf, &mut out).unwrap();
    assert_eq!(out.len(), 2001);
    assert_eq!(out[1000], Record::Queued { job: 2999, t });
    assert_eq!(
        out[2000],
        Record::Ended {
            job: 2999,
            status: Status::Passed,
            reason: None,
            record: rec
        }
    );
}

#[test]
fn the_flow_hash_hashed_in_chunks_is_the_hash_of_the_whole_encoding() {
    use super::codec::Put;
    let names: Vec<String> = (0..20_000).map(|i| format!("job-{i}")).collect();
    let hashes: Vec<[u8; 16]> = (0..20_000u32).map(|i| [(i % 251) as u8; 16]).collect();
    let mut whole = Vec::new();
    whole.put_str("f");
    whole.put_u64(names.len() as u64);
    for (n, h) in names.iter().zip(&hashes) {
        whole.put_str(n);
        whole.put_bytes(h);
    }
    let chunked = super::hash::flow_hash_of("f", names.iter().map(String::as_str).zip(&hashes));
    assert_eq!(chunked, xxhash_rust::xxh3::xxh3_128(&whole).to_le_bytes());
}

#[test]
fn a_torn_last_frame_is_ignored_at_every_cut_and_cut_off_before_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_run(dir.path());
    let whole = std::fs::read(&path).unwrap();
    let full = Replay::read(&path).unwrap();
    // The frames' ends: a cut inside the last frame keeps the three before it.
    let (frames, _) = codec::frames(&whole[codec::FILE_HEADER_LEN..], 12);
    let third_end = frames[2].1 as usize;
    for cut in third_end + 1..whole.len() {
        std::fs::write(&path, &whole[..cut]).unwrap();
        let r = Replay::read(&path).unwrap();
        assert_eq!(
            r.tail,
            Tail::Torn {
                at: third_end as u64,
                bytes: (cut - third_end) as u64
            },
            "cut at {cut}"
        );
        assert_eq!(r.valid_len, third_end as u64);
        // The job's end was in the torn frame: it is still running, with its native id.
        assert_eq!(r.state[0].status, Status::Running);
        assert!(r.state[0].started);
        assert_eq!(
            r.state[0]
                .record
                .extra
                .as_ref()
                .unwrap()
                .native_id
                .as_deref(),
            Some("77")
        );
    }
    // A resumed host cuts the torn tail before it appends: its records are read.
    let cut = whole.len() - 3;
    std::fs::write(&path, &whole[..cut]).unwrap();
    let torn = Replay::read(&path).unwrap();
    let s = start(1, 2);
    let table = [("a", [1u8; 16], 0u32), ("b", [2; 16], 0)];
    let mut j = Journal::reopen(
        &path,
        torn.valid_len,
        &s,
        table.iter().map(|(n, h, b)| (*n, h, *b)),
    )
    .unwrap();
    j.queued(1, s.started_us + 1);
    j.run_end(s.started_us + 2, None);
    j.finish();
    let r = Replay::read(&path).unwrap();
    assert_eq!(r.tail, Tail::Clean);
    assert_eq!(r.segments, 2);
    assert_eq!(r.first.started_us, full.first.started_us);
    assert_eq!(r.last.segment, 1);
    assert!(r.finished());
    // A corrupt byte in the middle stops the reading there: what came before counts.
    let mut bad = std::fs::read(&path).unwrap();
    bad[frames[1].1 as usize + 10] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let r = Replay::read(&path).unwrap();
    assert!(matches!(r.tail, Tail::Torn { .. }));
    assert_eq!(r.segments, 1);
}

#[test]
fn following_a_growing_journal_reads_only_what_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(0, 1);
    let table = [("a", [1u8; 16], 0u32)];
    let mut j = Journal::create(dir.path(), &s, table.iter().map(|(n, h, b)| (*n, h, *b))).unwrap();
    let path = j.path().to_path_buf();
    let mut r = Replay::read(&path).unwrap();
    assert_eq!(r.state[0].status, Status::Scheduled);
    j.queued(0, s.started_us + 1);
    j.flush();
    r.follow(&path).unwrap();
    assert_eq!(r.state[0].status, Status::Queued);
    j.submitted(0, 1, s.started_us + 2);
    // Written in part only (as a live host may be caught mid-write): nothing changes yet.
    j.flush();
    let len = std::fs::metadata(&path).unwrap().len();
    let whole = std::fs::read(&path).unwrap();
    let copy = dir.path().join("copy");
    std::fs::write(&copy, &whole[..len as usize - 2]).unwrap();
    let mut c = Replay::read(&copy).unwrap();
    assert_eq!(c.state[0].status, Status::Queued);
    std::fs::write(&copy, &whole).unwrap();
    c.follow(&copy).unwrap();
    assert_eq!(c.state[0].status, Status::Running);
    j.finish();
}

#[test]
fn the_syncer_syncs_at_most_every_interval_and_once_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(0, 1);
    let table = [("a", [1u8; 16], 0u32)];
    let mut j = Journal::create(dir.path(), &s, table.iter().map(|(n, h, b)| (*n, h, *b))).unwrap();
    let t = std::time::Instant::now();
    let mut writes = 0u64;
    while t.elapsed() < Duration::from_millis(350) {
        j.queued(0, s.started_us + 1);
        j.flush();
        writes += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    let (stats, error) = j.finish();
    let elapsed = t.elapsed();
    assert_eq!(error, None);
    assert_eq!(
        stats.frames,
        writes + 1,
        "one write per flush (plus the start)"
    );
    // At most one sync per interval while writing, plus the last one.
    let bound = elapsed.as_millis() as u64 / super::SYNC_EVERY.as_millis() as u64 + 2;
    assert!(
        stats.syncs >= 1 && stats.syncs <= bound,
        "{} syncs in {elapsed:?} for {writes} writes",
        stats.syncs
    );
}

#[test]
fn a_new_journal_appears_whole_and_never_replaces_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(0, 1);
    let table = [("a", [1u8; 16], 0u32)];
    let j = Journal::create(dir.path(), &s, table.iter().map(|(n, h, b)| (*n, h, *b))).unwrap();
    // The moment it exists it has its header and its job table: a reader finds the run.
    let r = Replay::read(j.path()).unwrap();
    assert_eq!(r.state.len(), 1);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        [JOURNAL_FILE],
        "nothing else is left in the run directory"
    );
    let before = std::fs::read(j.path()).unwrap();
    let err = Journal::create(dir.path(), &s, table.iter().map(|(n, h, b)| (*n, h, *b)))
        .err()
        .expect("a second journal in the same directory is refused");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(j.path()).unwrap(), before);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
