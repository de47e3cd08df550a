//! `/proc` readers that enrich kernel events (which only carry pid/tid/comm) with a process's
//! identity: command line, cgroup, start time and memory counters.
//!
//! Processes come and go between the kernel event and our read, so a vanished process is its own
//! error variant ([`ProcError::ProcessGone`]): it is the normal outcome of a race, not a fault to
//! log. The root is a constructor argument so tests point it at fixture trees.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Errors from reading `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process exited (or its pid was never valid) before or while we read it: ENOENT or
    /// ESRCH on `/proc/<pid>/...`. Expected under churn; callers usually just drop the lookup.
    #[error("process {pid} is gone")]
    ProcessGone { pid: u32 },
    /// Any other I/O failure (permissions, a missing `/proc` root, ...): a real problem.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file was read but its content is not in the format the kernel documents.
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: ProcParseError,
    },
}

/// What is wrong with a `/proc/<pid>` file's content (see [`ProcError::Parse`] for which file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcParseError {
    #[error("no '(' before comm")]
    NoOpenParen,
    #[error("no ')' after comm")]
    NoCloseParen,
    #[error("pid {text:?}: {source}")]
    Pid {
        text: String,
        #[source]
        source: std::num::ParseIntError,
    },
    /// proc(5) numbers stat fields from 1; the fields after comm start at 3.
    #[error("missing field {field} (only {present} after comm)")]
    MissingField { field: usize, present: usize },
    #[error("field {field} {text:?}: {source}")]
    Field {
        field: usize,
        text: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("state {text:?} is not one char")]
    State { text: String },
    #[error("ppid: {source}")]
    Ppid {
        #[source]
        source: std::num::TryFromIntError,
    },
    #[error("line {line:?} is not id:controllers:path")]
    CgroupLine { line: String },
    #[error("{key}: {value:?} is not '<n> kB'")]
    Kib { key: &'static str, value: String },
}

/// Fields of `/proc/<pid>/stat` (see proc(5)) that memtrace reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcStat {
    pub pid: u32,
    /// Task name as the kernel stores it (at most 15 bytes); may contain spaces and parentheses.
    pub comm: String,
    /// R, S, D, Z, T, t, X, I, ...
    pub state: char,
    pub ppid: u32,
    pub minflt: u64,
    pub majflt: u64,
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub num_threads: u64,
    /// Clock ticks after boot the process started; with the pid it identifies a process instance.
    pub starttime_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
    /// The task's `PF_*` flags (proc(5) field 9); see [`ProcStat::exiting`].
    #[serde(skip)]
    pub flags: u64,
}

/// `PF_EXITING` (include/linux/sched.h): the task is in `do_exit`.
const PF_EXITING: u64 = 0x4;

impl ProcStat {
    /// Whether the task is already exiting. Its `/proc/<pid>/cgroup` then shows `/` for every
    /// v1 hierarchy (the kernel's `proc_cgroup_show`), whatever cgroup it was in.
    pub fn exiting(&self) -> bool {
        self.flags & PF_EXITING != 0
    }
}

/// Parsed `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProcCgroups {
    /// Path in the unified (v2) hierarchy, from the `0::<path>` line.
    pub unified: Option<String>,
    /// v1 controller → path. A line `4:cpu,cpuacct:/x` yields both `cpu` and `cpuacct`; named
    /// hierarchies keep their `name=systemd` key as-is.
    pub v1: BTreeMap<String, String>,
}

impl ProcCgroups {
    /// The cgroup that governs memory: the v1 `memory` controller's path if present (hybrid hosts),
    /// else the unified (v2) path.
    ///
    /// On hybrid hosts the unified hierarchy exists but has no memory controller, so its path says
    /// nothing about which limit applies; the v1 one does.
    pub fn memory_path(&self) -> Option<&str> {
        self.v1
            .get("memory")
            .or(self.unified.as_ref())
            .map(String::as_str)
    }
}

/// Resident memory from `/proc/<pid>/status`, in bytes.
///
/// `None` means the kernel did not print the line: kernel threads and zombies have no mm, and
/// kernels before 4.5 lack the `Rss*` split. Reporting 0 there would be a made-up value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RssBreakdown {
    pub vm_rss_bytes: Option<u64>,
    pub rss_anon_bytes: Option<u64>,
    pub rss_file_bytes: Option<u64>,
    pub rss_shmem_bytes: Option<u64>,
    pub vm_swap_bytes: Option<u64>,
}

/// Reader for a procfs mount (`/proc` in production, a fixture tree in tests).
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The procfs root this reader was built with.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Pids of all processes (thread-group leaders), ascending. Only numeric directories count:
    /// `/proc` also holds `self`, `sys`, `meminfo`, ...
    pub fn pids(&self) -> Result<Vec<u32>, ProcError> {
        let io_err = |source| ProcError::Io {
            path: self.root.clone(),
            source,
        };
        let mut pids = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A process that exits mid-listing makes file_type fail; it is simply not listed.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.push(pid);
            }
        }
        pids.sort_unstable();
        Ok(pids)
    }

    /// Task name from `/proc/<pid>/comm`, without the trailing newline.
    pub fn comm(&self, pid: u32) -> Result<String, ProcError> {
        let bytes = self.read(pid, "comm")?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
    }

    /// Command line with NUL separators turned into spaces, trimmed, and cut at a char boundary to
    /// at most `max_len` bytes; a cut line gets a trailing `…` (so it may be up to 3 bytes longer)
    /// so readers know it is incomplete. Empty for kernel threads and zombies.
    pub fn cmdline(&self, pid: u32, max_len: usize) -> Result<String, ProcError> {
        let bytes = self.read(pid, "cmdline")?;
        let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
        Ok(truncate_with_ellipsis(text.trim(), max_len))
    }

    /// Parses `/proc/<pid>/stat`.
    pub fn stat(&self, pid: u32) -> Result<ProcStat, ProcError> {
        let bytes = self.read(pid, "stat")?;
        parse_stat(&bytes).map_err(|source| ProcError::Parse {
            path: self.pid_path(pid, "stat"),
            source,
        })
    }

    /// Parses `/proc/<pid>/cgroup`. Paths are escaped losslessly ([`crate::escape::escape_bytes`]):
    /// directory names are bytes, and two that differ only in invalid UTF-8 are two cgroups.
    pub fn cgroups(&self, pid: u32) -> Result<ProcCgroups, ProcError> {
        let bytes = self.read(pid, "cgroup")?;
        parse_cgroups(&bytes).map_err(|source| ProcError::Parse {
            path: self.pid_path(pid, "cgroup"),
            source,
        })
    }

    /// RSS split and swap from `/proc/<pid>/status`.
    pub fn status_rss(&self, pid: u32) -> Result<RssBreakdown, ProcError> {
        let bytes = self.read(pid, "status")?;
        parse_status_rss(&String::from_utf8_lossy(&bytes)).map_err(|source| ProcError::Parse {
            path: self.pid_path(pid, "status"),
            source,
        })
    }

    /// Whether `/proc/<pid>` exists right now (it may be gone by the time the caller acts).
    pub fn exists(&self, pid: u32) -> bool {
        fs::metadata(self.root.join(pid.to_string())).is_ok_and(|m| m.is_dir())
    }

    fn pid_path(&self, pid: u32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    /// Reads a whole `/proc/<pid>/<file>`, mapping "no such process" to [`ProcError::ProcessGone`].
    fn read(&self, pid: u32, file: &str) -> Result<Vec<u8>, ProcError> {
        let path = self.pid_path(pid, file);
        fs::read(&path).map_err(|source| {
            let gone = source.kind() == io::ErrorKind::NotFound
                || source.raw_os_error() == Some(libc::ESRCH);
            // A missing root is a misconfiguration, not thousands of vanished processes.
            if gone && self.root.is_dir() {
                ProcError::ProcessGone { pid }
            } else {
                ProcError::Io { path, source }
            }
        })
    }
}

/// Cuts `s` to at most `max_len` bytes at a char boundary, appending `…` if anything was cut.
fn truncate_with_ellipsis(s: &str, max_len: usize) -> String {
    if s.len() <= max_len {
        return s.to_owned();
    }
    let mut end = max_len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].trim_end().to_owned();
    out.push('…');
    out
}

/// Parses a stat line. The comm field is parenthesised but may itself contain spaces and `)`
/// (a task can name itself anything), so the fields after it start at the LAST `)`.
pub(crate) fn parse_stat(bytes: &[u8]) -> Result<ProcStat, ProcParseError> {
    let open = bytes
        .iter()
        .position(|&b| b == b'(')
        .ok_or(ProcParseError::NoOpenParen)?;
    let close = bytes
        .iter()
        .rposition(|&b| b == b')')
        .filter(|&c| c > open)
        .ok_or(ProcParseError::NoCloseParen)?;
    let pid_text = String::from_utf8_lossy(&bytes[..open]);
    let pid = pid_text
        .trim()
        .parse::<u32>()
        .map_err(|source| ProcParseError::Pid {
            text: pid_text.trim().to_owned(),
            source,
        })?;
    let comm = String::from_utf8_lossy(&bytes[open + 1..close]).into_owned();
    let rest = String::from_utf8_lossy(&bytes[close + 1..]);
    // `fields[0]` is proc(5) field 3 (state); field N is `fields[N - 3]`.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Result<&str, ProcParseError> {
        fields
            .get(n - 3)
            .copied()
            .ok_or(ProcParseError::MissingField {
                field: n,
                present: fields.len(),
            })
    };
    let num = |n: usize| -> Result<u64, ProcParseError> {
        let text = field(n)?;
        text.parse::<u64>().map_err(|source| ProcParseError::Field {
            field: n,
            text: text.to_owned(),
            source,
        })
    };
    let mut state_chars = field(3)?.chars();
    let state = match (state_chars.next(), state_chars.next()) {
        (Some(c), None) => c,
        _ => {
            return Err(ProcParseError::State {
                text: field(3)?.to_owned(),
            });
        }
    };
    let ppid = u32::try_from(num(4)?).map_err(|source| ProcParseError::Ppid { source })?;
    Ok(ProcStat {
        pid,
        comm,
        state,
        ppid,
        minflt: num(10)?,
        majflt: num(12)?,
        utime_ticks: num(14)?,
        stime_ticks: num(15)?,
        num_threads: num(20)?,
        starttime_ticks: num(22)?,
        vsize_bytes: num(23)?,
        rss_pages: num(24)?,
        flags: num(9)?,
    })
}

/// Parses `hierarchy-id:controllers:path` lines. The path is everything after the second `:`
/// (paths may contain `:`), kept as the bytes it is and escaped losslessly. The kernel appends
/// ` (deleted)` to a v2 path whose cgroup was removed; it is stripped so the path stays usable
/// as a lookup key.
pub(crate) fn parse_cgroups(text: &[u8]) -> Result<ProcCgroups, ProcParseError> {
    let mut out = ProcCgroups::default();
    for line in text
        .split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
    {
        let mut parts = line.splitn(3, |&b| b == b':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ProcParseError::CgroupLine {
                line: crate::escape::escape_bytes(line),
            });
        };
        let (id, controllers) = (
            String::from_utf8_lossy(id),
            String::from_utf8_lossy(controllers),
        );
        let path = crate::escape::escape_bytes(path.strip_suffix(b" (deleted)").unwrap_or(path));
        if id == "0" && controllers.is_empty() {
            out.unified = Some(path);
        } else {
            for controller in controllers.split(',').filter(|c| !c.is_empty()) {
                out.v1.insert(controller.to_owned(), path.clone());
            }
        }
    }
    Ok(out)
}

pub(crate) fn parse_status_rss(text: &str) -> Result<RssBreakdown, ProcParseError> {
    let mut out = RssBreakdown::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (slot, key) = match key {
            "VmRSS" => (&mut out.vm_rss_bytes, "VmRSS"),
            "RssAnon" => (&mut out.rss_anon_bytes, "RssAnon"),
            "RssFile" => (&mut out.rss_file_bytes, "RssFile"),
            "RssShmem" => (&mut out.rss_shmem_bytes, "RssShmem"),
            "VmSwap" => (&mut out.vm_swap_bytes, "VmSwap"),
            _ => continue,
        };
        let kib = value
            .trim()
            .strip_suffix(" kB")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .ok_or_else(|| ProcParseError::Kib {
                key,
                value: value.trim().to_owned(),
            })?;
        *slot = Some(kib.saturating_mul(1024));
    }
    Ok(out)
}

/// Identity of one process instance, as attached to exported events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub cmdline: String,
    /// [`ProcCgroups::memory_path`].
    pub cgroup: Option<String>,
    /// With `pid`, this distinguishes a process from a later one that reuses its pid.
    pub start_ticks: u64,
}

/// Bytes of command line kept per cached process: enough to tell workers apart, small enough that
/// a full cache of JVM-style command lines stays a few MiB.
pub const CACHE_CMDLINE_MAX_LEN: usize = 512;

struct CacheEntry {
    info: Arc<ProcessInfo>,
    /// Value of `ProcessCache::clock` at the last hit; smallest = least recently used.
    last_used: u64,
    /// When the identity was read: trusted hits re-read it after [`TRUSTED_TTL`].
    read_at: Instant,
}

/// How long [`ProcessCache::get_trusted`] serves an identity without re-reading it. Exec and
/// exit invalidate at once; this bounds staleness for what no event announces: a process moved
/// to another cgroup by writing its pid to `cgroup.procs`. At 10,000 processes it costs ~330
/// identity reads per second.
pub const TRUSTED_TTL: Duration = Duration::from_secs(30);

/// Per-pid identity cache so a hot event loop does not re-read /proc for every event.
///
/// Bounded (capacity given), evicts least-recently-used; an entry is keyed by pid AND the process
/// start time so a recycled pid is never given a dead process's identity. To make "never" hold
/// without a start time in the event, a hit still reads `/proc/<pid>/stat` (one small file) and
/// compares start times; what a hit saves is the cmdline and cgroup reads and their parsing. Exec
/// keeps the start time but changes comm/cmdline, so callers [`invalidate`](Self::invalidate) on
/// exec (and on exit, to free the slot early).
pub struct ProcessCache {
    procfs: ProcFs,
    capacity: usize,
    clock: u64,
    entries: crate::PidMap<CacheEntry>,
}

impl ProcessCache {
    /// A cache holding at most `capacity` processes (at least 1).
    pub fn new(procfs: ProcFs, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            procfs,
            capacity,
            clock: 0,
            entries: crate::PidMap::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    /// Identity of the process currently running as `pid`, read from /proc on a miss. `None` if
    /// the process is gone; other read failures are logged at debug level and also give `None`,
    /// since enrichment is best-effort and must not stop the event loop.
    pub fn get(&mut self, pid: u32) -> Option<Arc<ProcessInfo>> {
        self.clock += 1;
        let stat = match self.procfs.stat(pid) {
            Ok(stat) => stat,
            Err(err) => {
                self.entries.remove(&pid);
                log_unexpected(pid, &err);
                return None;
            }
        };
        if let Some(entry) = self.entries.get_mut(&pid) {
            if entry.info.start_ticks == stat.starttime_ticks {
                entry.last_used = self.clock;
                return Some(Arc::clone(&entry.info));
            }
            // Same pid, different start time: the pid was recycled.
            self.entries.remove(&pid);
        }
        let info = match self.read_info(pid, stat) {
            Ok(Some(info)) => Arc::new(info),
            Ok(None) => return None,
            Err(err) => {
                log_unexpected(pid, &err);
                return None;
            }
        };
        if self.entries.len() >= self.capacity {
            self.evict_oldest();
        }
        self.entries.insert(
            pid,
            CacheEntry {
                info: Arc::clone(&info),
                last_used: self.clock,
                read_at: Instant::now(),
            },
        );
        Some(info)
    }

    /// Like [`get`](Self::get), but a hit is returned without re-reading `/proc/<pid>/stat`.
    ///
    /// For callers that see every exec and exit (the daemon's event stream) and invalidate on
    /// them: pid reuse then cannot go unnoticed, and a sampling tick over 10,000 processes costs
    /// no /proc reads at all. Also answers for a process that has just exited, which is what an
    /// OOM victim's enrichment needs.
    /// `now` is the caller's clock reading (one per tick, not one per process).
    pub fn get_trusted(&mut self, pid: u32, now: Instant) -> Option<Arc<ProcessInfo>> {
        self.clock += 1;
        match self.entries.get_mut(&pid) {
            Some(entry) if now.saturating_duration_since(entry.read_at) < TRUSTED_TTL => {
                entry.last_used = self.clock;
                return Some(Arc::clone(&entry.info));
            }
            // Too old: read it again (a process gone by now keeps its last identity).
            Some(_) => {
                let stale = self.entries.remove(&pid).map(|entry| entry.info);
                return self.get(pid).or(stale);
            }
            None => {}
        }
        self.get(pid)
    }

    /// Forgets `pid` (call on exec, which changes comm/cmdline, and on exit).
    pub fn invalidate(&mut self, pid: u32) {
        self.entries.remove(&pid);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads cmdline and cgroup for the process `stat` describes. `Ok(None)` if the process exited
    /// (or the pid was recycled) while we read: the files may then belong to another process, so
    /// stat is read again and must show the same start time.
    fn read_info(&self, pid: u32, stat: ProcStat) -> Result<Option<ProcessInfo>, ProcError> {
        let result = (|| {
            let cmdline = self.procfs.cmdline(pid, CACHE_CMDLINE_MAX_LEN)?;
            let cgroups = self.procfs.cgroups(pid)?;
            let again = self.procfs.stat(pid)?;
            Ok((cmdline, cgroups, again))
        })();
        let (cmdline, cgroups, again) = match result {
            Ok(parts) => parts,
            Err(ProcError::ProcessGone { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        if again.starttime_ticks != stat.starttime_ticks {
            return Ok(None);
        }
        // An exiting task's v1 paths all read `/`: its cgroup is unknown, not the root (the
        // model then takes the one its exit event names). The unified path stays right.
        let cgroup = if (stat.exiting() || again.exiting()) && cgroups.v1.contains_key("memory") {
            None
        } else {
            cgroups.memory_path().map(str::to_owned)
        };
        Ok(Some(ProcessInfo {
            pid,
            // stat's comm is the same task->comm as /proc/<pid>/comm; reusing it saves a read.
            comm: stat.comm,
            cmdline,
            cgroup,
            start_ticks: stat.starttime_ticks,
        }))
    }

    /// Drops the least recently used ~10% (at least one) so a full cache does not pay an O(n)
    /// scan on every miss.
    fn evict_oldest(&mut self) {
        let count = (self.capacity / 10).max(1).min(self.entries.len());
        if count == 0 {
            return;
        }
        let mut ages: Vec<(u64, u32)> = self
            .entries
            .iter()
            .map(|(&pid, e)| (e.last_used, pid))
            .collect();
        ages.select_nth_unstable(count - 1);
        for &(_, pid) in &ages[..count] {
            self.entries.remove(&pid);
        }
    }
}

fn log_unexpected(pid: u32, err: &ProcError) {
    if matches!(err, ProcError::ProcessGone { .. }) {
        tracing::trace!(pid, "process gone before its identity was read");
    } else {
        tracing::debug!(pid, error = %err, "process identity lookup failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc");

    /// A real `sleep 60` captured from a hybrid (v1 memory + v2) host.
    const REAL_PID: u32 = 12143;
    const GONE_PID: u32 = 999_999;

    fn fixture() -> ProcFs {
        ProcFs::new(FIXTURES)
    }

    #[test]
    fn pids_lists_numeric_dirs_only() {
        // `self` (symlink), `sys`, `meminfo` and the regular file `77` are skipped.
        assert_eq!(fixture().pids().unwrap(), vec![2, 1234, 3000, REAL_PID]);
    }

    #[test]
    fn stat_parses_comm_with_spaces_and_parens() {
        let stat = fixture().stat(1234).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                pid: 1234,
                comm: "my (weird) proc".into(),
                state: 'S',
                ppid: 1,
                minflt: 5821,
                majflt: 12,
                utime_ticks: 150,
                stime_ticks: 37,
                num_threads: 4,
                starttime_ticks: 987_654,
                vsize_bytes: 123_456_789,
                rss_pages: 2048,
                flags: 4_194_560,
            }
        );
    }

    #[test]
    fn stat_of_real_captured_process() {
        let stat = fixture().stat(REAL_PID).unwrap();
        assert_eq!(stat.pid, REAL_PID);
        assert_eq!(stat.comm, "sleep");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 12138);
        assert_eq!(stat.minflt, 132);
        assert_eq!(stat.majflt, 0);
        assert_eq!(stat.num_threads, 1);
        assert_eq!(stat.starttime_ticks, 89046);
        assert_eq!(stat.vsize_bytes, 2_990_080);
        assert_eq!(stat.rss_pages, 415);
    }

    #[test]
    fn stat_rejects_malformed_lines() {
        assert!(parse_stat(b"12 (no close paren R 1").is_err());
        let message = |bytes: &[u8]| parse_stat(bytes).unwrap_err().to_string();
        assert!(message(b"x (a) R 1").contains("pid"));
        assert!(message(b"12 (a) R 1 2").contains("missing field"));
        assert!(message(b"12 (a) RR 1").contains("state"));
        assert!(matches!(
            parse_stat(b"12 (a) R 1 2"),
            Err(ProcParseError::MissingField {
                field: 10,
                present: 3
            })
        ));
    }

    #[test]
    fn comm_is_trimmed() {
        assert_eq!(fixture().comm(1234).unwrap(), "my (weird) proc");
        assert_eq!(fixture().comm(2).unwrap(), "kthreadd");
    }

    #[test]
    fn cmdline_turns_nuls_into_spaces() {
        let procfs = fixture();
        assert_eq!(
            procfs.cmdline(1234, 4096).unwrap(),
            "/usr/bin/weird --flag value with space"
        );
        assert_eq!(procfs.cmdline(REAL_PID, 4096).unwrap(), "sleep 60");
        assert_eq!(procfs.cmdline(2, 4096).unwrap(), "", "kernel thread");
    }

    #[test]
    fn cmdline_truncates_at_char_boundary() {
        let procfs = fixture();
        let full = "java -Dname=größe -jar /opt/app/service.jar";
        // Trailing NULs are trimmed; exactly fitting is not a cut.
        assert_eq!(procfs.cmdline(3000, full.len()).unwrap(), full);
        // Byte 15 is inside 'ö' (bytes 14..16): back off to 14.
        assert_eq!(procfs.cmdline(3000, 15).unwrap(), "java -Dname=gr…");
        assert_eq!(procfs.cmdline(3000, 16).unwrap(), "java -Dname=grö…");
        // A cut right after a separator does not leave a dangling space.
        assert_eq!(procfs.cmdline(3000, 5).unwrap(), "java…");
        assert_eq!(procfs.cmdline(3000, 0).unwrap(), "…");
    }

    #[test]
    fn cgroups_of_hybrid_host() {
        let cgroups = fixture().cgroups(1234).unwrap();
        assert_eq!(
            cgroups.unified.as_deref(),
            Some("/system.slice/weird.service")
        );
        let v1: Vec<(&str, &str)> = cgroups
            .v1
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let unit = "/system.slice/weird.service";
        assert_eq!(
            v1,
            vec![
                ("cpu", unit),
                ("cpuacct", unit),
                ("memory", unit),
                ("name=systemd", unit),
                ("pids", unit),
            ]
        );
    }

    #[test]
    fn memory_path_prefers_v1_memory_controller() {
        // Real capture: v1 memory is in a different group than the (unused) unified one.
        let real = fixture().cgroups(REAL_PID).unwrap();
        assert_eq!(real.unified.as_deref(), Some("/"));
        assert_eq!(
            real.memory_path(),
            Some("/process_api/705143ec50b41d7137253d3eeaa5b6f6")
        );
        assert_eq!(real.v1.get("name=systemd").map(String::as_str), Some("/"));
        // Pure v2 host: the unified path.
        let v2 = fixture().cgroups(3000).unwrap();
        assert!(v2.v1.is_empty());
        assert!(v2.memory_path().unwrap().ends_with("a4b.scope"));
        assert_eq!(ProcCgroups::default().memory_path(), None);
    }

    #[test]
    fn cgroups_strip_deleted_marker_and_reject_garbage() {
        let parsed = parse_cgroups(b"0::/system.slice/gone.service (deleted)\n").unwrap();
        assert_eq!(
            parsed.unified.as_deref(),
            Some("/system.slice/gone.service")
        );
        // Paths may contain ':'.
        let colon = parse_cgroups(b"5:memory:/a:b\n").unwrap();
        assert_eq!(colon.v1.get("memory").map(String::as_str), Some("/a:b"));
        assert!(
            parse_cgroups(b"garbage\n")
                .unwrap_err()
                .to_string()
                .contains("garbage")
        );
    }

    #[test]
    fn non_utf8_cgroup_paths_stay_distinct_and_lossless() {
        let tmp = tempfile::tempdir().unwrap();
        for (pid, path) in [
            (10, &b"/rel_\xff\xfe"[..]),
            (11, b"/rel_\xfe\xff"),
            (12, b"/a\\b"),
        ] {
            let dir = tmp.path().join(pid.to_string());
            fs::create_dir(&dir).unwrap();
            let mut file = b"12:memory:".to_vec();
            file.extend_from_slice(path);
            file.extend_from_slice(b"\n0::/\n");
            fs::write(dir.join("cgroup"), file).unwrap();
        }
        let procfs = ProcFs::new(tmp.path());
        let path = |pid| {
            procfs
                .cgroups(pid)
                .unwrap()
                .memory_path()
                .unwrap()
                .to_owned()
        };
        assert_eq!(path(10), "/rel_\\xff\\xfe");
        assert_eq!(path(11), "/rel_\\xfe\\xff");
        assert_eq!(path(12), "/a\\\\b", "a backslash is doubled");
        for (pid, raw) in [
            (10, &b"/rel_\xff\xfe"[..]),
            (11, b"/rel_\xfe\xff"),
            (12, b"/a\\b"),
        ] {
            assert_eq!(crate::escape::unescape_bytes(&path(pid)), raw);
        }
    }

    #[test]
    fn status_rss_in_bytes() {
        assert_eq!(
            fixture().status_rss(1234).unwrap(),
            RssBreakdown {
                vm_rss_bytes: Some(8192 * 1024),
                rss_anon_bytes: Some(5120 * 1024),
                rss_file_bytes: Some(2560 * 1024),
                rss_shmem_bytes: Some(512 * 1024),
                vm_swap_bytes: Some(256 * 1024),
            }
        );
        // A kernel thread has no mm: nothing reported rather than zeros.
        assert_eq!(fixture().status_rss(2).unwrap(), RssBreakdown::default());
        assert!(
            parse_status_rss("VmRSS:\t12 MB\n")
                .unwrap_err()
                .to_string()
                .contains("VmRSS")
        );
    }

    #[test]
    fn missing_pid_is_process_gone() {
        let procfs = fixture();
        let gone = |r: Result<(), ProcError>| {
            assert!(
                matches!(r, Err(ProcError::ProcessGone { pid: GONE_PID })),
                "{r:?}"
            );
        };
        gone(procfs.stat(GONE_PID).map(drop));
        gone(procfs.comm(GONE_PID).map(drop));
        gone(procfs.cmdline(GONE_PID, 10).map(drop));
        gone(procfs.cgroups(GONE_PID).map(drop));
        gone(procfs.status_rss(GONE_PID).map(drop));
        assert!(!procfs.exists(GONE_PID));
        assert!(procfs.exists(1234));
        assert!(!procfs.exists(77), "a regular file is not a process");
    }

    #[test]
    fn missing_root_is_io_error_not_process_gone() {
        let procfs = ProcFs::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nope"));
        assert!(matches!(procfs.stat(1), Err(ProcError::Io { .. })));
        assert!(matches!(procfs.pids(), Err(ProcError::Io { .. })));
    }

    #[test]
    fn live_proc_self() {
        let procfs = ProcFs::new("/proc");
        let pid = std::process::id();
        let stat = procfs.stat(pid).unwrap();
        let comm = procfs.comm(pid).unwrap();
        assert_eq!(stat.pid, pid);
        assert_eq!(stat.comm, comm);
        assert!(!comm.is_empty());
        assert!(
            stat.minflt > 0,
            "a running test binary has faulted pages in"
        );
        assert!(stat.num_threads >= 1);
        assert!(stat.starttime_ticks > 0);
        assert!(stat.vsize_bytes > 0 && stat.rss_pages > 0);
        assert!(procfs.cmdline(pid, 4096).unwrap().contains("memtrace"));
        assert!(procfs.status_rss(pid).unwrap().vm_rss_bytes.unwrap() > 0);
        assert!(procfs.cgroups(pid).unwrap().memory_path().is_some());
        assert!(procfs.pids().unwrap().contains(&pid));
    }

    /// Writes a minimal `/proc/<pid>` for the cache tests.
    fn write_proc(root: &Path, pid: u32, comm: &str, start: u64, cmdline: &str) {
        let dir = root.join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        let stat = format!(
            "{pid} ({comm}) S 1 {pid} {pid} 0 -1 0 10 0 0 0 1 1 0 0 20 0 1 0 {start} 4096 1\n"
        );
        fs::write(dir.join("stat"), stat).unwrap();
        fs::write(dir.join("cmdline"), cmdline.replace(' ', "\0")).unwrap();
        fs::write(dir.join("cgroup"), "0::/system.slice/app.service\n").unwrap();
    }

    #[test]
    fn cache_hit_skips_reads_until_invalidated() {
        let tmp = tempfile::tempdir().unwrap();
        write_proc(tmp.path(), 42, "app", 100, "app --v1");
        let mut cache = ProcessCache::new(ProcFs::new(tmp.path()), 8);
        let first = cache.get(42).unwrap();
        assert_eq!(
            *first,
            ProcessInfo {
                pid: 42,
                comm: "app".into(),
                cmdline: "app --v1".into(),
                cgroup: Some("/system.slice/app.service".into()),
                start_ticks: 100,
            }
        );
        // Same process (same start time): served from the cache, cmdline is not re-read.
        write_proc(tmp.path(), 42, "app", 100, "app --v2");
        let second = cache.get(42).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(second.cmdline, "app --v1");
        // After exec the caller invalidates and the new cmdline is read.
        cache.invalidate(42);
        assert!(cache.is_empty());
        assert_eq!(cache.get(42).unwrap().cmdline, "app --v2");
        assert_eq!(cache.len(), 1);
    }

    /// A task in `do_exit` shows `/` for its v1 hierarchies: that is not its cgroup. Its unified
    /// path is still right.
    #[test]
    fn an_exiting_tasks_v1_cgroup_is_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        let stat_of = |pid: u32, flags: u64| {
            format!(
                "{pid} (hog) R 1 {pid} {pid} 0 -1 {flags} 10 0 0 0 1 1 0 0 20 0 1 0 100 4096 1\n"
            )
        };
        for (pid, flags, cgroup) in [
            (50, 0x4, "11:memory:/\n0::/user.slice\n"),
            (51, 0x0, "11:memory:/\n0::/user.slice\n"),
            (52, 0x4, "0::/job.slice\n"),
        ] {
            let dir = tmp.path().join(pid.to_string());
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("stat"), stat_of(pid, flags)).unwrap();
            fs::write(dir.join("cmdline"), "hog").unwrap();
            fs::write(dir.join("cgroup"), cgroup).unwrap();
        }
        let mut cache = ProcessCache::new(ProcFs::new(tmp.path()), 8);
        assert_eq!(cache.get(50).unwrap().cgroup, None, "exiting, v1");
        assert_eq!(
            cache.get(51).unwrap().cgroup.as_deref(),
            Some("/"),
            "the real root"
        );
        assert_eq!(
            cache.get(52).unwrap().cgroup.as_deref(),
            Some("/job.slice"),
            "v2"
        );
    }

    #[test]
    fn cache_rereads_recycled_pid() {
        let tmp = tempfile::tempdir().unwrap();
        write_proc(tmp.path(), 42, "old", 100, "old-daemon");
        let mut cache = ProcessCache::new(ProcFs::new(tmp.path()), 8);
        assert_eq!(cache.get(42).unwrap().comm, "old");
        // The old process exited and pid 42 was reused: same pid, later start time.
        write_proc(tmp.path(), 42, "new", 200, "new-job --x");
        let info = cache.get(42).unwrap();
        assert_eq!(info.comm, "new");
        assert_eq!(info.cmdline, "new-job --x");
        assert_eq!(info.start_ticks, 200);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn cache_forgets_gone_process() {
        let tmp = tempfile::tempdir().unwrap();
        write_proc(tmp.path(), 42, "app", 100, "app");
        let mut cache = ProcessCache::new(ProcFs::new(tmp.path()), 8);
        assert!(cache.get(42).is_some());
        fs::remove_dir_all(tmp.path().join("42")).unwrap();
        assert_eq!(cache.get(42), None);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.get(GONE_PID), None);
    }

    #[test]
    fn trusted_hits_answer_without_proc_until_invalidated() {
        let tmp = tempfile::tempdir().unwrap();
        write_proc(tmp.path(), 42, "app", 100, "app");
        let mut cache = ProcessCache::new(ProcFs::new(tmp.path()), 16);
        let now = Instant::now();
        let first = cache.get_trusted(42, now).expect("process present");
        fs::remove_dir_all(tmp.path().join("42")).unwrap();
        let hit = cache
            .get_trusted(42, now)
            .expect("trusted hit needs no /proc");
        assert!(Arc::ptr_eq(&first, &hit));
        assert!(
            cache.get(42).is_none(),
            "the validating get notices the process is gone"
        );
        cache.invalidate(42);
        assert!(
            cache.get_trusted(42, now).is_none(),
            "after invalidation the process is gone"
        );
    }

    #[test]
    fn trusted_identities_are_read_again_after_their_ttl() {
        let tmp = tempfile::tempdir().unwrap();
        write_proc(tmp.path(), 42, "app", 100, "app");
        let mut cache = ProcessCache::new(ProcFs::new(tmp.path()), 16);
        let now = Instant::now();
        let first = cache.get_trusted(42, now).expect("process present");
        // Moved to another cgroup: no event announces that.
        fs::write(tmp.path().join("42/cgroup"), "0::/moved.slice\n").unwrap();
        let before = cache.get_trusted(42, now + TRUSTED_TTL / 2).unwrap();
        assert!(
            Arc::ptr_eq(&first, &before),
            "within the TTL: the cached identity"
        );
        // (`read_at` is the real clock at the read, a little after `now`.)
        let after = cache.get_trusted(42, now + TRUSTED_TTL * 2).unwrap();
        assert_eq!(
            after.cgroup.as_deref(),
            Some("/moved.slice"),
            "after the TTL: read again"
        );
    }

    #[test]
    fn cache_is_bounded_and_evicts_least_recently_used() {
        let tmp = tempfile::tempdir().unwrap();
        for pid in 1..=11 {
            write_proc(tmp.path(), pid, "w", 7, "before");
        }
        let mut cache = ProcessCache::new(ProcFs::new(tmp.path()), 10);
        for pid in 1..=10 {
            assert!(cache.get(pid).is_some());
        }
        assert_eq!(cache.len(), 10);
        // Touch pid 1 so pid 2 becomes the least recently used, then overflow by one.
        assert!(cache.get(1).is_some());
        assert!(cache.get(11).is_some());
        assert_eq!(cache.len(), 10);
        // Which entries survived shows in whether a changed cmdline is seen.
        for pid in 1..=11 {
            write_proc(tmp.path(), pid, "w", 7, "after");
        }
        assert_eq!(
            cache.get(1).unwrap().cmdline,
            "before",
            "recently used: kept"
        );
        assert_eq!(cache.get(3).unwrap().cmdline, "before");
        assert_eq!(
            cache.get(2).unwrap().cmdline,
            "after",
            "LRU: evicted, re-read"
        );
        assert_eq!(cache.len(), 10);
    }

    #[test]
    fn cache_evicts_a_tenth_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        for pid in 1..=250 {
            write_proc(tmp.path(), pid, "w", 7, "x");
        }
        let mut cache = ProcessCache::new(ProcFs::new(tmp.path()), 100);
        for pid in 1..=101 {
            assert!(cache.get(pid).is_some());
            assert!(cache.len() <= 100);
        }
        assert_eq!(
            cache.len(),
            91,
            "10 oldest evicted, then the new one inserted"
        );
        for pid in 102..=250 {
            assert!(cache.get(pid).is_some());
            assert!(cache.len() <= 100);
        }
        // Capacity 0 is treated as 1 rather than a cache that cannot hold its own insert.
        let mut tiny = ProcessCache::new(ProcFs::new(tmp.path()), 0);
        assert!(tiny.get(1).is_some() && tiny.get(2).is_some());
        assert_eq!(tiny.len(), 1);
    }
}
