//! The daemon's rolling store (`--record-dir`): recordings of one hour at most each, the oldest
//! removed to keep the directory within `--record-max-bytes` and `--record-max-age`. Frames are
//! written by a thread of their own ([`StoreThread`]): the daemon's loop hands over the views it
//! built for the tick and never waits on the disk.
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, SystemTime},
};

use memtrace_api::{Snapshot, workloads::WorkloadsResponse};

use super::{RecordWriter, WriteError, WriterOptions};

/// Defaults of `--record-max-bytes` and `--record-max-age`.
pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3 * 24 * 3600);

/// A file is closed and the next one started after this long…
pub const MAX_FILE_AGE: Duration = Duration::from_secs(3600);
/// …or when it reaches this fraction of `--record-max-bytes`, so that removing the oldest file
/// never takes more than an eighth of the store.
const FILES_PER_BUDGET: u64 = 8;

/// Recordings in the directory are named `memtrace-<UTC start>.mtr`; nothing else there is
/// touched.
const PREFIX: &str = "memtrace-";
const SUFFIX: &str = ".mtr";

/// Frames waiting for the writer at most; beyond them a frame is dropped (and counted).
const QUEUE: usize = 4;

#[derive(Clone, Debug, PartialEq)]
pub struct StoreOptions {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub max_age: Duration,
    /// Workload history kept in each frame (what `memtrace cluster`'s fan-out asks by default).
    pub history: Duration,
    pub writer: WriterOptions,
}

/// Why the store cannot start.
#[derive(Debug, thiserror::Error)]
#[error("--record-dir {}: {what}", dir.display())]
pub struct StoreError {
    pub dir: PathBuf,
    pub what: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// The directory of recordings and the file being written.
pub struct Store {
    options: StoreOptions,
    current: Option<(RecordWriter, SystemTime)>,
}

impl Store {
    /// Creates the directory if needed and removes what is beyond the bounds already.
    pub fn open(options: StoreOptions, now: SystemTime) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&options.dir).map_err(|source| StoreError {
            dir: options.dir.clone(),
            what: "creating",
            source,
        })?;
        let store = Self {
            options,
            current: None,
        };
        // Listing it now finds an unreadable directory at start, not at the first frame.
        recordings(&store.options.dir).map_err(|source| StoreError {
            dir: store.options.dir.clone(),
            what: "listing",
            source,
        })?;
        store.prune(now, 0);
        Ok(store)
    }

    /// Appends the frame, starting a new file when the current one is an hour old or an eighth
    /// of the budget; then removes the oldest files beyond the bounds.
    pub fn append_parts(
        &mut self,
        snapshot: &Snapshot,
        workloads: Option<&WorkloadsResponse>,
        now: SystemTime,
    ) -> Result<(), WriteError> {
        let file_budget = (self.options.max_bytes / FILES_PER_BUDGET).max(1);
        let full = self.current.as_ref().is_some_and(|(writer, opened)| {
            writer.bytes() >= file_budget
                || now.duration_since(*opened).unwrap_or_default() >= MAX_FILE_AGE
        });
        if full && let Some((writer, _)) = self.current.take() {
            writer.finish()?;
        }
        let (writer, _) = match &mut self.current {
            Some(current) => current,
            None => {
                // Room for the new file, so the directory stays within the budget as it grows.
                self.prune(now, file_budget);
                let path = new_file(&self.options.dir, now);
                let writer = RecordWriter::create(&path, self.options.writer)?;
                self.current.insert((writer, now))
            }
        };
        writer.append_parts(snapshot, workloads)
    }

    /// Removes the oldest recordings while the directory holds more than `max_bytes - reserve`,
    /// and every one last written before `max_age` ago. Never the file being written.
    fn prune(&self, now: SystemTime, reserve: u64) {
        let budget = self.options.max_bytes.saturating_sub(reserve);
        let Ok(mut files) = recordings(&self.options.dir) else {
            return;
        };
        let current = self.current.as_ref().map(|(writer, _)| writer.path());
        files.retain(|file| Some(file.path.as_path()) != current);
        let mut total: u64 = files.iter().map(|file| file.bytes).sum::<u64>()
            + self
                .current
                .as_ref()
                .map_or(0, |(writer, _)| writer.bytes());
        for file in files {
            let old = now.duration_since(file.modified).unwrap_or_default() > self.options.max_age;
            if total <= budget && !old {
                continue;
            }
            match std::fs::remove_file(&file.path) {
                Ok(()) => total = total.saturating_sub(file.bytes),
                Err(err) => {
                    tracing::warn!("recording store: removing {}: {err}", file.path.display())
                }
            }
        }
    }

    /// Closes the file being written (synced).
    pub fn finish(mut self) -> Result<(), WriteError> {
        match self.current.take() {
            Some((writer, _)) => writer.finish(),
            None => Ok(()),
        }
    }
}

/// A recording in the store's directory.
#[derive(Debug)]
pub struct StoredFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub modified: SystemTime,
}

/// The store's recordings in `dir`, the least recently written first.
pub fn recordings(dir: &Path) -> std::io::Result<Vec<StoredFile>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(PREFIX) || !name.ends_with(SUFFIX) {
            continue;
        }
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if metadata.is_file() {
            files.push(StoredFile {
                path: entry.path(),
                bytes: metadata.len(),
                modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
    }
    files.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.path.cmp(&b.path)));
    Ok(files)
}

/// `memtrace-20261130T031200Z.mtr` (a suffix `-N` when that name is taken).
fn new_file(dir: &Path, now: SystemTime) -> PathBuf {
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let mut path = dir.join(format!("{PREFIX}{stamp}{SUFFIX}"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{PREFIX}{stamp}-{n}{SUFFIX}"));
        n += 1;
    }
    path
}

/// What the store thread has done: in the snapshot's pipeline view and the metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub frames: AtomicU64,
    pub write_errors: AtomicU64,
    /// Frames dropped because the writer was still busy with earlier ones.
    pub dropped: AtomicU64,
}

impl StoreStats {
    pub fn view(&self) -> memtrace_api::RecordingView {
        memtrace_api::RecordingView {
            frames_written: self.frames.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            frames_dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

type Job = (Arc<Snapshot>, Option<Arc<WorkloadsResponse>>);

/// The store on a thread of its own, fed over a bounded channel.
pub struct StoreThread {
    jobs: Option<mpsc::SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<StoreStats>,
}

impl StoreThread {
    pub fn spawn(mut store: Store) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        let stats = Arc::new(StoreStats::default());
        let counted = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("memtrace-record".to_owned())
            .spawn(move || {
                for (snapshot, workloads) in queue {
                    let workloads = workloads.map(|workloads| {
                        let mut trimmed = (*workloads).clone();
                        crate::model::workloads::limit_history(&mut trimmed, store.options.history);
                        trimmed
                    });
                    match store.append_parts(&snapshot, workloads.as_ref(), SystemTime::now()) {
                        Ok(()) => {
                            counted.frames.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            let errors = counted.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
                            // Every error counts; the log says the first ones and then fewer
                            // and fewer (1, 2, 4, 8…), so a full disk does not flood it.
                            if errors.is_power_of_two() {
                                tracing::warn!(
                                    "recording store: {err:#} ({errors} write errors so far; \
                                     the daemon runs on)"
                                );
                            }
                        }
                    }
                }
                if let Err(err) = store.finish() {
                    counted.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("recording store: closing: {err:#}");
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
            stats,
        })
    }

    /// Hands the tick's views to the writer; never blocks (a busy writer drops the frame, counted).
    pub fn record(&self, snapshot: Arc<Snapshot>, workloads: Option<Arc<WorkloadsResponse>>) {
        let Some(jobs) = &self.jobs else { return };
        if let Err(mpsc::TrySendError::Full(_)) = jobs.try_send((snapshot, workloads)) {
            let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!("recording store: the disk is behind, {dropped} frames dropped");
            }
        }
    }

    pub fn stats(&self) -> Arc<StoreStats> {
        Arc::clone(&self.stats)
    }

    /// Writes what is queued, closes the file and waits for the thread.
    pub fn finish(mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
