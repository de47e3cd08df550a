//! The daemon's state directory (`--state-dir`, default `/var/lib/memtrace`): OOM records with
//! their flight recordings, kept across restarts and crashes so a kill is not forgotten because
//! the daemon was restarted (or was itself killed) right after it.
//!
//! One file per record, `oom-<unix ms>-<victim pid>.json`, holding `{"format":"memtrace-oom",
//! "version":1,"record":{…}}` (the record as `/api/v1/oom` serves it). Each is written
//! crash-safely: to a temporary file in the same directory, fsync'd, renamed over its name, and
//! the directory fsync'd, so after a crash a record is either whole or absent.
//!
//! **Bound:** at most `max_records` files (the model's OOM record cap, 64) and none older than
//! the OOM retention; older and surplus files are deleted after each write and at start. A
//! record is a few KiB to ~30 KiB (61 flight samples, 20 processes), so the directory stays under
//! ~2 MiB; a file over [`MAX_FILE_BYTES`] is not read.
//!
//! Loading never stops the daemon: a corrupt, torn, foreign or future-version file is skipped
//! with one WARN line naming it; an unwritable directory is reported once and the daemon runs on
//! without persistence.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use memtrace_api::OomRecord;
use serde::{Deserialize, Serialize};

/// Version of the record files' envelope; a file with another is skipped.
pub const STATE_VERSION: u32 = 1;
/// What the envelope's `format` says: a file without it is not ours.
const FORMAT: &str = "memtrace-oom";
/// Files larger than this are not read (a record is at most a few tens of KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
const PREFIX: &str = "oom-";
const SUFFIX: &str = ".json";
/// Temporary files start with a dot and end so: left over by a crash mid-write, they are removed.
const TEMP_SUFFIX: &str = ".tmp";

#[derive(Serialize, Deserialize)]
struct Envelope<R> {
    format: String,
    version: u32,
    record: R,
}

/// The OOM history on disk. See the module documentation.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    max_records: usize,
    retention: Duration,
    /// Writes are attempted (false once the directory proved unusable and that was said).
    writable: bool,
}

impl StateDir {
    /// Opens (creating it if need be) `dir`, keeping at most `max_records` records, none older
    /// than `retention`. A directory that cannot be created or written is reported once (WARN)
    /// and the daemon runs on without persistence.
    pub fn open(dir: &Path, max_records: usize, retention: Duration) -> Self {
        let mut state = Self {
            dir: dir.to_path_buf(),
            max_records,
            retention,
            writable: true,
        };
        if let Err(err) = fs::create_dir_all(dir).and_then(|()| state.probe_write()) {
            state.disable(&err);
        }
        state
    }

    /// Whether records are being written.
    pub fn writable(&self) -> bool {
        self.writable
    }

    fn disable(&mut self, err: &io::Error) {
        if self.writable {
            tracing::warn!(
                "state directory {} is not writable ({err}): OOM history will not survive a \
                 restart (give the daemon a writable --state-dir, e.g. StateDirectory=memtrace)",
                self.dir.display()
            );
        }
        self.writable = false;
    }

    fn probe_write(&self) -> io::Result<()> {
        let probe = self
            .dir
            .join(format!(".probe-{}{TEMP_SUFFIX}", std::process::id()));
        File::create(&probe)?;
        fs::remove_file(&probe)
    }

    /// The records kept from earlier runs within the retention at `now`, newest first, at most
    /// `max_records`. Stale and surplus files are deleted; unreadable ones are skipped with a
    /// WARN each.
    pub fn load(&self, now: SystemTime) -> Vec<OomRecord> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                // Torn by a crash before its rename: the record it held was never complete.
                let _ = fs::remove_file(&path);
                continue;
            }
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            match read_record(&path) {
                Ok(record) => records.push((path, record)),
                Err(reason) => {
                    tracing::warn!("state directory: skipping {}: {reason}", path.display())
                }
            }
        }
        records.sort_by_key(|(_, record)| std::cmp::Reverse(record.timestamp_unix_ms));
        let oldest = unix_ms(now).saturating_sub(millis(self.retention));
        let mut kept = Vec::new();
        for (path, record) in records {
            if kept.len() < self.max_records && record.timestamp_unix_ms >= oldest {
                kept.push(record);
            } else if self.writable {
                let _ = fs::remove_file(&path);
            }
        }
        kept
    }

    /// Writes `record` crash-safely, then deletes the files beyond the bound. A failure is
    /// reported once; later ones stay quiet (the first said persistence is off).
    pub fn save(&mut self, record: &OomRecord, now: SystemTime) {
        if !self.writable {
            return;
        }
        let name = format!(
            "{PREFIX}{:013}-{}{SUFFIX}",
            record.timestamp_unix_ms, record.victim_pid
        );
        match self.write_atomically(&name, record) {
            Ok(()) => self.prune(now),
            Err(err) => self.disable(&err),
        }
    }

    /// Deletes record files beyond the bound, judged by their names (no file is read: a storm
    /// of kills must not re-parse the directory on each).
    fn prune(&self, now: SystemTime) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut named: Vec<(u64, PathBuf)> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let ms = name
                    .to_str()?
                    .strip_prefix(PREFIX)?
                    .strip_suffix(SUFFIX)?
                    .split_once('-')?
                    .0
                    .parse()
                    .ok()?;
                Some((ms, entry.path()))
            })
            .collect();
        named.sort_by_key(|(ms, _)| std::cmp::Reverse(*ms));
        let oldest = unix_ms(now).saturating_sub(millis(self.retention));
        for (i, (ms, path)) in named.iter().enumerate() {
            if i >= self.max_records || *ms < oldest {
                let _ = fs::remove_file(path);
            }
        }
    }

    fn write_atomically(&self, name: &str, record: &OomRecord) -> io::Result<()> {
        let envelope = Envelope {
            format: FORMAT.to_owned(),
            version: STATE_VERSION,
            record,
        };
        let bytes = serde_json::to_vec(&envelope).map_err(io::Error::other)?;
        let temp = self.dir.join(format!(".{name}{TEMP_SUFFIX}"));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&temp, self.dir.join(name))?;
            // The rename is durable once the directory is.
            File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }
}

/// One record file, or why it is not one.
fn read_record(path: &Path) -> Result<OomRecord, String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if !(name.starts_with(PREFIX) && name.ends_with(SUFFIX)) {
        return Err("not a memtrace OOM record (foreign file)".to_owned());
    }
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let envelope: Envelope<serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|e| format!("corrupt: {e}"))?;
    if envelope.format != FORMAT {
        return Err(format!("format {:?}, not {FORMAT:?}", envelope.format));
    }
    if envelope.version != STATE_VERSION {
        return Err(format!(
            "version {} (this memtrace reads {STATE_VERSION})",
            envelope.version
        ));
    }
    serde_json::from_value(envelope.record).map_err(|e| format!("corrupt record: {e}"))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use memtrace_api::{CgroupProcess, FlightSample};

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const T: u64 = 1_795_314_665_123;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(T)
    }

    fn record(pid: u32, age_ms: u64) -> OomRecord {
        OomRecord {
            timestamp: "2026-11-24T02:31:05.123Z".to_owned(),
            timestamp_unix_ms: T - age_ms,
            victim_pid: pid,
            victim_comm: "hog".to_owned(),
            victim_cgroup: Some("/demo".to_owned()),
            anon_rss_bytes: Some(63 << 20),
            flight_recording: vec![
                FlightSample {
                    offset_seconds: -1.0,
                    rss_anon_bytes: 32 << 20,
                    ..FlightSample::default()
                },
                FlightSample {
                    offset_seconds: 0.0,
                    rss_anon_bytes: 63 << 20,
                    reclaim_stall_seconds_per_sec: 0.04,
                    ..FlightSample::default()
                },
            ],
            cgroup_processes: vec![CgroupProcess {
                pid: pid + 1,
                comm: "child".to_owned(),
                rss_bytes: 9 << 20,
            }],
            ..OomRecord::default()
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn records_round_trip_with_their_flight_recordings() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = StateDir::open(dir.path(), 64, HOUR);
        assert!(state.writable());
        let (a, b) = (record(10, 2000), record(20, 1000));
        state.save(&a, now());
        state.save(&b, now());
        assert_eq!(files(dir.path()).len(), 2, "{:?}", files(dir.path()));
        let loaded = StateDir::open(dir.path(), 64, HOUR).load(now());
        assert_eq!(loaded, vec![b, a], "newest first, exactly as saved");
    }

    #[test]
    fn the_directory_is_bounded_by_count_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = StateDir::open(dir.path(), 3, HOUR);
        for pid in 1..=5u32 {
            state.save(&record(pid, u64::from(10 - pid) * 1000), now());
        }
        assert_eq!(files(dir.path()).len(), 3, "{:?}", files(dir.path()));
        let pids: Vec<u32> = state.load(now()).iter().map(|r| r.victim_pid).collect();
        assert_eq!(pids, [5, 4, 3]);
        // An hour and a bit later every record is past the retention: loaded as none, deleted.
        let later = now() + HOUR + Duration::from_secs(10);
        assert!(state.load(later).is_empty());
        assert!(files(dir.path()).is_empty());
    }

    #[test]
    fn torn_corrupt_foreign_and_future_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = StateDir::open(dir.path(), 64, HOUR);
        let good = record(7, 500);
        state.save(&good, now());
        let path = |name: &str| dir.path().join(name);
        // A crash mid-write leaves the temporary file, never a half-written record.
        fs::write(path(".oom-0000000000001-3.json.tmp"), b"{\"format\":\"memt").unwrap();
        // A record file cut short (a disk that lied about fsync), and one of zeros.
        let whole = fs::read(path(&files(dir.path())[0])).unwrap();
        fs::write(path("oom-0000000000002-4.json"), &whole[..whole.len() / 2]).unwrap();
        fs::write(path("oom-0000000000003-5.json"), vec![0u8; 64]).unwrap();
        // Someone else's files, a future version, and an oversized file.
        fs::write(path("notes.txt"), b"hello").unwrap();
        fs::write(
            path("oom-0000000000004-6.json"),
            br#"{"format":"something-else","version":1,"record":{}}"#,
        )
        .unwrap();
        fs::write(
            path("oom-0000000000005-7.json"),
            br#"{"format":"memtrace-oom","version":2,"record":{}}"#,
        )
        .unwrap();
        fs::write(
            path("oom-0000000000006-8.json"),
            vec![b' '; MAX_FILE_BYTES as usize + 1],
        )
        .unwrap();
        fs::create_dir(path("oom-0000000000007-9.json")).unwrap();

        let loaded = StateDir::open(dir.path(), 64, HOUR).load(now());
        assert_eq!(loaded, vec![good]);
        assert!(
            !files(dir.path()).iter().any(|f| f.ends_with(TEMP_SUFFIX)),
            "the torn temporary file is removed"
        );
        assert!(
            files(dir.path()).contains(&"notes.txt".to_owned()),
            "a foreign file is left alone"
        );
        for bad in ["", "x"] {
            assert!(read_record(&path(bad)).is_err());
        }
    }

    #[test]
    fn an_unwritable_directory_disables_persistence_and_the_daemon_runs_on() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the directory should be: creating it fails even for root.
        let blocked = dir.path().join("file");
        fs::write(&blocked, b"").unwrap();
        let mut state = StateDir::open(&blocked.join("state"), 64, HOUR);
        assert!(!state.writable());
        state.save(&record(1, 0), now());
        assert!(state.load(now()).is_empty());
    }
}
