//! Recording a live daemon and replaying it: `memtrace record` until Ctrl-C, the daemon's own
//! `--record-dir`, a crash mid-recording, and `memtrace replay` on what was written.
use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use memtrace::record::{Recording, store};
use memtrace_api::{Snapshot, frame::Frame};
use memtrace_tests::{Workload, memtrace_bin, require_root};

use crate::{
    daemon::{Daemon, get},
    support::serial,
};

/// The snapshots `daemon` serves over `duration`, asked five times a second, by timestamp (each
/// tick's snapshot is built once and served to every request until the next tick).
fn poll_snapshots(daemon: &Daemon, duration: Duration) -> BTreeMap<u64, Snapshot> {
    let mut served = BTreeMap::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let (status, body) = get(daemon.addr, "/api/v1/snapshot");
        assert_eq!(status, 200);
        let snapshot: Snapshot = serde_json::from_str(&body).expect("snapshot");
        served.insert(snapshot.timestamp_unix_ms, snapshot);
        std::thread::sleep(Duration::from_millis(200));
    }
    served
}

/// Every frame's snapshot is one the daemon served (the same, field for field), frames are
/// strictly in time order, each with its workloads view of the same instant.
fn assert_frames_are_served_snapshots(frames: &[Frame], served: &BTreeMap<u64, Snapshot>) {
    assert!(frames.len() >= 3, "{} frames", frames.len());
    for pair in frames.windows(2) {
        assert!(pair[0].timestamp_unix_ms() < pair[1].timestamp_unix_ms());
    }
    let mut matched = 0;
    for frame in frames {
        let workloads = frame.workloads.as_ref().expect("workloads recorded");
        assert_eq!(workloads.timestamp_unix_ms, frame.timestamp_unix_ms());
        if let Some(snapshot) = served.get(&frame.timestamp_unix_ms()) {
            assert_eq!(&frame.snapshot, snapshot, "frame at {}", snapshot.timestamp);
            matched += 1;
        }
    }
    // The poll covers the recording but for its first and last tick.
    assert!(
        matched + 2 >= frames.len(),
        "{matched} of {} frames were served snapshots ({} served)",
        frames.len(),
        served.len()
    );
    // The machine's processes, not an empty model: this test's own among them.
    let me = std::process::id();
    assert!(
        frames[0].snapshot.processes.iter().any(|p| p.pid == me),
        "pid {me} not among the {} processes recorded",
        frames[0].snapshot.processes.len()
    );
}

fn replay_json(file: &Path, at: &str) -> Frame {
    let output = Command::new(memtrace_bin())
        .args(["replay", file.to_str().unwrap(), "--at", at, "-o", "json"])
        .output()
        .expect("memtrace replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a frame")
}

#[test]
fn record_until_ctrl_c_replays_the_snapshots_the_daemon_served() {
    require_root();
    let _serial = serial();
    let daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.mtr");
    let record = Command::new(memtrace_bin())
        .args(["record", "-o", file.to_str().unwrap()])
        .args(["--url", &daemon.addr.to_string(), "--interval", "500ms"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("memtrace record");
    let served = poll_snapshots(&daemon, Duration::from_secs(5));
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(record.id() as i32, libc::SIGINT) };
    let output = record.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.starts_with("memtrace record: "), "{stderr}");

    let recording = Recording::open(&file).unwrap();
    assert!(recording.damage().is_empty(), "{:?}", recording.damage());
    let frames = recording.frames();
    assert_frames_are_served_snapshots(frames, &served);
    // Frames one daemon tick apart: a 500 ms interval records no tick twice.
    assert!(frames.len() <= 7, "{} frames in ~5 s", frames.len());

    // The command line picks the same frames: the second by its offset from the first, the
    // last by default of an offset from the end.
    let second = format!(
        "+{}ms",
        frames[1].timestamp_unix_ms() - frames[0].timestamp_unix_ms()
    );
    for (at, expected) in [
        (second.as_str(), &frames[1]),
        ("-0s", frames.last().unwrap()),
    ] {
        let replayed = replay_json(&file, at);
        assert_eq!(
            replayed.timestamp_unix_ms(),
            expected.timestamp_unix_ms(),
            "--at {at}"
        );
        assert!(replayed == *expected, "--at {at}: the frame differs");
    }
}

/// Without --url, `memtrace record` runs the daemon's model itself: a process touching 40 MiB is
/// in the frames with that RSS, each frame with its workloads view, one a second.
#[test]
fn record_without_a_daemon_loads_the_probes_itself() {
    require_root();
    let _serial = serial();
    let mut workload = Workload::start(&["touch-anon", "10240"]);
    workload.go();
    let pid = workload.pid();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.mtr");
    let output = Command::new(memtrace_bin())
        .args(["record", "-o", file.to_str().unwrap(), "--duration", "4s"])
        .stdin(Stdio::null())
        .output()
        .expect("memtrace record");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("memtrace record: "), "{stderr}");
    let recording = Recording::open(&file).unwrap();
    assert!(recording.damage().is_empty(), "{:?}", recording.damage());
    let frames = recording.frames();
    // One a second over 4 s: the first at start, then each tick.
    assert!((4..=6).contains(&frames.len()), "{} frames", frames.len());
    for pair in frames.windows(2) {
        assert!(pair[0].timestamp_unix_ms() < pair[1].timestamp_unix_ms());
    }
    let last = frames.last().unwrap();
    assert!(last.workloads.is_some(), "the workloads view is recorded");
    let process = last
        .snapshot
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .expect("the workload is in the recording");
    assert!(
        process.counters.rss_anon_bytes >= 40 << 20,
        "{} anon bytes",
        process.counters.rss_anon_bytes
    );
    drop(workload);
}

#[test]
fn the_daemon_records_each_tick_and_a_crash_loses_nothing_written() {
    require_root();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let record_dir = dir.path().join("recordings");
    let args = ["--record-dir", record_dir.to_str().unwrap()];
    let daemon = Daemon::start(&args);
    let served = poll_snapshots(&daemon, Duration::from_secs(5));
    drop(daemon); // SIGTERM: the queued frames are written and the file synced.
    let files = store::recordings(&record_dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    let recording = Recording::open(&files[0].path).unwrap();
    assert!(recording.damage().is_empty(), "{:?}", recording.damage());
    assert_frames_are_served_snapshots(recording.frames(), &served);
    // One frame a tick: every served snapshot was recorded.
    for timestamp in served.keys() {
        assert!(
            recording
                .index_at(*timestamp)
                .is_some_and(|i| { recording.frames()[i].timestamp_unix_ms() == *timestamp }),
            "snapshot of {timestamp} not recorded"
        );
    }
    // The store's counts, in the snapshots it served: rising, no errors, and no more frames
    // than the file holds.
    let counts: Vec<_> = served
        .values()
        .map(|snapshot| snapshot.pipeline.recording.expect("pipeline.recording"))
        .collect();
    assert!(
        counts
            .windows(2)
            .all(|w| w[0].frames_written <= w[1].frames_written),
        "{counts:?}"
    );
    let last = counts.last().expect("snapshots were served");
    assert!(last.frames_written >= 1, "{counts:?}");
    assert_eq!(
        (last.write_errors, last.frames_dropped),
        (0, 0),
        "{counts:?}"
    );
    assert!(last.frames_written <= recording.frames().len() as u64);

    // Killed mid-recording (SIGKILL, as the OOM killer would): a second file, every frame in it
    // readable, at worst a torn last record.
    let daemon = Daemon::start(&args);
    std::thread::sleep(Duration::from_secs(4));
    daemon.crash();
    let files = store::recordings(&record_dir).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    let crashed = Recording::open(&files[1].path).unwrap();
    assert!(
        crashed.damage().iter().all(|d| d.is_torn_tail()),
        "{:?}",
        crashed.damage()
    );
    assert!(
        crashed.frames().len() >= 2,
        "{} frames before the crash",
        crashed.frames().len()
    );
}
