use std::path::Path;
use std::time::{Duration, SystemTime};

use memtrace_api::{Snapshot, frame::Frame, workloads::WorkloadsResponse};

use super::store::{Store, StoreOptions, StoreThread};
use super::*;

const SNAPSHOT: &str = include_str!("../../../memtrace-api/tests/fixtures/snapshot-v1.json");
const WORKLOADS: &str = include_str!("../../../memtrace-api/tests/fixtures/workloads-v1.json");
const T0_MS: u64 = 1_795_314_670_000;

/// `count` frames one second apart of a node with `processes` processes (the API fixtures'
/// process repeated): RSS, counters and rates move each frame, processes restart now and then
/// (new pid), and an OOM kill appears halfway.
pub(crate) fn frames(count: u64, processes: u64) -> Vec<Frame> {
    let base: Snapshot = serde_json::from_str(SNAPSHOT).expect("snapshot fixture");
    let base_workloads: WorkloadsResponse =
        serde_json::from_str(WORKLOADS).expect("workloads fixture");
    let comms = ["java", "redis-server", "nginx", "postgres", "python3"];
    (0..count)
        .map(|t| {
            let now_ms = T0_MS + t * 1000;
            let mut snapshot = base.clone();
            snapshot.timestamp_unix_ms = now_ms;
            snapshot.timestamp = humantime::format_rfc3339_millis(
                SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms),
            )
            .to_string();
            let template = &base.processes[0];
            snapshot.processes = (0..processes)
                .map(|i| {
                    let mut process = template.clone();
                    let generation = (t + i) / 37;
                    process.pid = u32::try_from(1000 + i + 100_000 * generation).unwrap();
                    process.comm = comms[(i % 5) as usize].to_owned();
                    process.counters.faults_minor += i * t * 13;
                    process.counters.rss_anon_bytes = (64 << 20) + (i << 20) + t * 4096 * (i % 3);
                    process.rss_bytes = process.counters.rss_anon_bytes + (8 << 20);
                    process.rates.faults_minor_per_sec = (i * t) as f64 / 7.0;
                    process.pressure_score = ((i * 31 + t) % 1000) as f64 / 10.0;
                    process
                })
                .collect();
            snapshot.pipeline.events_received = t * 977;
            if t < count / 2 {
                snapshot.recent_ooms.clear();
            } else {
                snapshot.recent_ooms[0].timestamp_unix_ms = T0_MS + count / 2 * 1000;
            }
            let mut workloads = base_workloads.clone();
            workloads.timestamp_unix_ms = now_ms;
            workloads.node.processes = u32::try_from(processes).unwrap();
            for instance in workloads
                .workloads
                .iter_mut()
                .flat_map(|w| w.instances.iter_mut())
            {
                instance.rss_anon_bytes += t * 8192;
                instance.rates.faults_minor_per_sec += t as f64 / 3.0;
            }
            Frame {
                snapshot,
                // Some sources serve none: both forms are recorded.
                workloads: (t % 7 != 3).then_some(workloads),
            }
        })
        .collect()
}

fn write(path: &Path, frames: &[Frame], key_interval: u32) {
    let mut writer = RecordWriter::create(
        path,
        WriterOptions {
            key_interval,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    for frame in frames {
        writer.append(frame).unwrap();
    }
    writer.finish().unwrap();
}

fn read_bytes(bytes: &[u8]) -> Result<Recording, RecordError> {
    Reader::from_bytes(Path::new("r.mtr"), bytes.to_vec()).map(Recording::read)
}

#[test]
fn frames_round_trip_compactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.mtr");
    let input = frames(150, 200);
    write(&path, &input, DEFAULT_KEY_INTERVAL);
    let recording = Recording::open(&path).unwrap();
    assert!(recording.damage().is_empty(), "{:?}", recording.damage());
    assert_eq!(recording.frames().len(), input.len());
    // Frame by frame, so a difference names its frame.
    for (read, written) in recording.frames().iter().zip(&input) {
        assert_eq!(read, written, "frame at {}", written.timestamp_unix_ms());
    }
    let json: usize = input
        .iter()
        .map(|f| serde_json::to_vec(f).unwrap().len())
        .sum();
    let file = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(
        file * 20 < json,
        "{file} bytes on disk for {json} bytes of JSON: not delta-compressed"
    );
    // The borrowed form the daemon writes is the frame's own JSON.
    let frame = &input[1];
    let mut writer = RecordWriter::create(&path, WriterOptions::default()).unwrap();
    writer
        .append_parts(&frame.snapshot, frame.workloads.as_ref())
        .unwrap();
    writer.finish().unwrap();
    assert_eq!(
        Recording::open(&path).unwrap().frames(),
        std::slice::from_ref(frame)
    );
}

#[test]
fn a_recording_cut_at_any_byte_keeps_every_frame_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.mtr");
    let input = frames(7, 3);
    // Key frames at 0, 3 and 6: cuts fall in key and delta records alike.
    write(&path, &input, 3);
    let bytes = std::fs::read(&path).unwrap();
    let reader = Reader::from_bytes(&path, bytes.clone()).unwrap();
    let ends: Vec<usize> = reader
        .entries()
        .iter()
        .map(|e| e.offset as usize + e.header.record_len())
        .collect();
    assert_eq!(ends.len(), input.len());
    assert_eq!(*ends.last().unwrap(), bytes.len());
    for cut in 0..=bytes.len() {
        let recording = read_bytes(&bytes[..cut]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let whole = ends.iter().filter(|end| **end <= cut).count();
        assert_eq!(recording.frames(), &input[..whole], "cut at {cut}");
        let at_boundary = cut == format::FILE_HEADER_LEN || ends.contains(&cut);
        if at_boundary {
            assert!(recording.damage().is_empty(), "cut {cut}");
        } else {
            assert_eq!(recording.damage().len(), 1, "cut {cut}");
            assert!(recording.damage()[0].is_torn_tail(), "cut {cut}");
        }
    }
    let torn = read_bytes(&bytes[..ends[2] + 10]).unwrap();
    assert_eq!(
        torn.damage()[0].to_string(),
        format!(
            "r.mtr: offset {}: the last 10 bytes are not a whole record (the file ends inside a \
             record: a write cut short by a crash, or damage); ignored, every frame before is read",
            ends[2]
        )
    );
}

#[test]
fn a_flipped_byte_anywhere_loses_only_its_frames_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.mtr");
    let input = frames(7, 3);
    write(&path, &input, 3);
    let bytes = std::fs::read(&path).unwrap();
    let entries = Reader::from_bytes(&path, bytes.clone())
        .unwrap()
        .entries()
        .to_vec();
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x04;
        let recording = match read_bytes(&bad) {
            Ok(recording) => recording,
            Err(err) => {
                assert!(at < format::FILE_HEADER_LEN, "byte {at}: {err}");
                let message = err.to_string();
                assert!(message.starts_with("r.mtr: offset "), "{message}");
                assert!(!message.contains('\n'));
                continue;
            }
        };
        // Never a frame that was not written, never out of order.
        let mut written = input.iter();
        for frame in recording.frames() {
            assert!(
                written.any(|w| w == frame),
                "byte {at}: a frame not written"
            );
        }
        let record = entries
            .iter()
            .rposition(|e| e.offset as usize <= at)
            .expect("past the header");
        // A damaged delta loses itself; a damaged key frame its chunk (up to the next key).
        let lost = if entries[record].header.is_key() {
            entries[record + 1..]
                .iter()
                .take_while(|e| !e.header.is_key())
                .count()
                + 1
        } else {
            1
        };
        assert_eq!(
            recording.frames().len(),
            input.len() - lost,
            "byte {at}: {:?}",
            recording.damage()
        );
        let first = &recording.damage()[0];
        assert_eq!(first.offset, entries[record].offset, "byte {at}");
        assert!(first.to_string().starts_with("r.mtr: offset "));
    }
}

#[test]
fn foreign_and_future_files_are_refused_naming_file_and_offset() {
    let err = read_bytes(b"{\"snapshot\":{}}\n").unwrap_err().to_string();
    assert_eq!(
        err,
        "r.mtr: offset 0: not a memtrace recording (it starts with \"{\"snapsh\", a recording \
         with \\x89MTREC\\r\\n)"
    );
    let mut future = format::file_header().to_vec();
    future[8] = 2;
    assert_eq!(
        read_bytes(&future).unwrap_err().to_string(),
        "r.mtr: offset 8: recording format version 2; this memtrace reads version 1"
    );
    let empty = read_bytes(&[]).unwrap();
    assert!(empty.frames().is_empty());
    assert_eq!(
        empty.damage()[0].to_string(),
        "r.mtr: offset 0: the file ends inside its header (0 of 16 bytes): no frame was written"
    );
    let missing = Recording::open(Path::new("/nonexistent/r.mtr")).unwrap_err();
    assert_eq!(missing.to_string(), "reading recording /nonexistent/r.mtr");
}

#[test]
fn index_at_picks_the_frame_at_or_before() {
    let recording = Recording::from_frames(frames(5, 1));
    assert_eq!(
        recording.index_at(0),
        Some(0),
        "before the first: the first"
    );
    assert_eq!(recording.index_at(T0_MS), Some(0));
    assert_eq!(recording.index_at(T0_MS + 1999), Some(1));
    assert_eq!(recording.index_at(T0_MS + 2000), Some(2));
    assert_eq!(recording.index_at(u64::MAX), Some(4));
    assert_eq!(Recording::default().index_at(T0_MS), None);
}

fn store_options(dir: &Path, max_bytes: u64) -> StoreOptions {
    StoreOptions {
        dir: dir.to_owned(),
        max_bytes,
        max_age: Duration::from_secs(24 * 3600),
        history: Duration::from_secs(7200),
        writer: WriterOptions {
            key_interval: 5,
            ..WriterOptions::default()
        },
    }
}

fn store_bytes(dir: &Path) -> u64 {
    store::recordings(dir)
        .unwrap()
        .iter()
        .map(|f| f.bytes)
        .sum()
}

#[test]
fn the_store_rolls_hourly_and_stays_within_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let input = frames(200, 20);
    let start = SystemTime::now();
    // The files' times are real, the frames' ten minutes apart: no age bound in this test.
    let options = StoreOptions {
        max_age: Duration::from_secs(10 * 365 * 24 * 3600),
        ..store_options(dir.path(), 64 << 10)
    };
    let mut store = Store::open(options, start).unwrap();
    // Another file in the directory is not the store's: never removed.
    std::fs::write(dir.path().join("notes.txt"), "keep").unwrap();
    let mut largest_record = 0;
    for (i, frame) in input.iter().enumerate() {
        // Ten minutes a frame: a new file every six.
        let now = start + Duration::from_secs(600 * i as u64);
        let before = store_bytes(dir.path());
        store
            .append_parts(&frame.snapshot, frame.workloads.as_ref(), now)
            .unwrap();
        largest_record = largest_record.max(store_bytes(dir.path()).saturating_sub(before));
        assert!(
            store_bytes(dir.path()) <= (64 << 10) + largest_record,
            "frame {i}: {} bytes",
            store_bytes(dir.path())
        );
    }
    store.finish().unwrap();
    let files = store::recordings(dir.path()).unwrap();
    assert!(files.len() > 1, "rolled over");
    assert!(dir.path().join("notes.txt").exists());
    // What is kept is the newest frames, in whole files, each readable on its own.
    let kept: Vec<Frame> = files
        .iter()
        .flat_map(|f| Recording::open(&f.path).unwrap().frames().to_vec())
        .collect();
    assert!(kept.len() >= 6, "{}", kept.len());
    assert_eq!(kept, input[input.len() - kept.len()..]);
}

#[test]
fn the_store_removes_recordings_older_than_its_age() {
    let dir = tempfile::tempdir().unwrap();
    let input = frames(3, 2);
    let now = SystemTime::now();
    let mut store = Store::open(store_options(dir.path(), 1 << 30), now).unwrap();
    store
        .append_parts(&input[0].snapshot, input[0].workloads.as_ref(), now)
        .unwrap();
    // Two hours later: a new file (the first is closed, written an hour or more before).
    let later = now + Duration::from_secs(2 * 3600);
    store
        .append_parts(&input[1].snapshot, input[1].workloads.as_ref(), later)
        .unwrap();
    assert_eq!(store::recordings(dir.path()).unwrap().len(), 2);
    // A day and a bit after the first file was last written: it goes, the current one stays.
    let next_day = now + Duration::from_secs(24 * 3600 + 3 * 3600);
    store
        .append_parts(&input[2].snapshot, input[2].workloads.as_ref(), next_day)
        .unwrap();
    store.finish().unwrap();
    let files = store::recordings(dir.path()).unwrap();
    let frames: Vec<u64> = files
        .iter()
        .flat_map(|f| Recording::open(&f.path).unwrap().frames().to_vec())
        .map(|f| f.timestamp_unix_ms())
        .collect();
    assert_eq!(
        frames,
        [input[2].timestamp_unix_ms()],
        "older files removed"
    );
}

#[test]
fn the_store_thread_writes_what_it_is_handed_and_counts_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = frames(4, 5);
    let store = Store::open(store_options(dir.path(), 1 << 30), SystemTime::now()).unwrap();
    let thread = StoreThread::spawn(store).unwrap();
    let stats = thread.stats();
    for frame in &input {
        thread.record(
            std::sync::Arc::new(frame.snapshot.clone()),
            frame.workloads.clone().map(std::sync::Arc::new),
        );
        // The queue holds four: pace the test so none is dropped.
        std::thread::sleep(Duration::from_millis(20));
    }
    thread.finish();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(stats.frames.load(Relaxed), 4);
    assert_eq!(stats.write_errors.load(Relaxed), 0);
    let files = store::recordings(dir.path()).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(Recording::open(&files[0].path).unwrap().frames(), input);

    // A directory that disappears: each frame is an error, counted, and the thread runs on.
    let gone = tempfile::tempdir().unwrap();
    let store = Store::open(store_options(gone.path(), 1 << 30), SystemTime::now()).unwrap();
    let thread = StoreThread::spawn(store).unwrap();
    let stats = thread.stats();
    std::fs::remove_dir(gone.path()).unwrap();
    for frame in &input[..2] {
        thread.record(std::sync::Arc::new(frame.snapshot.clone()), None);
        std::thread::sleep(Duration::from_millis(20));
    }
    thread.finish();
    assert_eq!(stats.write_errors.load(Relaxed), 2);
    assert_eq!(stats.frames.load(Relaxed), 0);
}

#[test]
fn times_are_absolute_or_relative_to_the_recording() {
    let (first, last) = (T0_MS, T0_MS + 600_000);
    assert_eq!(resolve_time("-5m", first, last), Ok(last - 300_000));
    assert_eq!(resolve_time("+90s", first, last), Ok(first + 90_000));
    assert_eq!(resolve_time("+1500ms", first, last), Ok(first + 1500));
    assert_eq!(
        resolve_time("2026-11-30T03:12:00Z", first, last),
        Ok(1_796_008_320_000)
    );
    assert_eq!(
        resolve_time("2026-11-30 03:12:00.250", first, last),
        Ok(1_796_008_320_250)
    );
    // A time of day is on the first frame's day (UTC); Unix seconds are absolute.
    let day = first - first % 86_400_000;
    assert_eq!(resolve_time("03:12", first, last), Ok(day + 11_520_000));
    assert_eq!(resolve_time("03:12:04", first, last), Ok(day + 11_524_000));
    assert_eq!(
        resolve_time("1796008324", first, last),
        Ok(1_796_008_324_000)
    );
    assert!(resolve_time("25:00", first, last).is_err());
    let err = resolve_time("yesterday", first, last).unwrap_err();
    assert!(err.starts_with("invalid time 'yesterday' ("), "{err}");
    assert!(resolve_time("-soon", first, last).is_err());
}
