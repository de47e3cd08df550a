//! Node-level memory figures: PSI, vmstat, meminfo, buddy-allocator fragmentation and node identity.
//!
//! These are what a memory-pressure daemon needs to tell "the node is short of memory" apart from
//! "one cgroup is misbehaving": PSI says whether tasks are actually *stalling* on memory, vmstat
//! says *why* (reclaim, compaction, refaults, swap), meminfo says how much headroom is left, and
//! buddyinfo says whether the free memory that exists is usable for higher-order allocations.
//!
//! [`NodeReader`] takes its procfs root in the constructor, so tests point it at fixture trees
//! instead of the live `/proc`. Everything returned is a raw cumulative sample; rates (faults per
//! second, PSI stall time per interval, ...) are computed by the consumer from two samples, which is
//! why [`NodeIdentity::boot_id`] is part of every sample: a changed boot id means every counter was
//! reset and no rate may be computed across the two samples.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Errors from reading node-level procfs files. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The file could not be read (absent, permission denied, not UTF-8, ...).
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A line of the file does not have the format the kernel documents.
    #[error("malformed {} line {line}: {reason}", path.display())]
    Parse {
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        reason: String,
    },
    /// The file parsed, but a field that every supported kernel emits is absent, which means the
    /// file is not what we think it is (wrong root, truncated read, ...).
    #[error("{} lacks required field {field:?}", path.display())]
    Missing { path: PathBuf, field: &'static str },
}

impl NodeError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            NodeError::Io { path, .. }
            | NodeError::Parse { path, .. }
            | NodeError::Missing { path, .. } => path,
        }
    }
}

/// Which machine and which boot a sample belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeIdentity {
    /// `<proc>/sys/kernel/hostname` (the UTS hostname of the reader's namespace).
    pub hostname: String,
    /// `<proc>/sys/kernel/random/boot_id`: a fresh UUID per boot. All counters below are cumulative
    /// since boot, so a consumer must not compute a rate between samples whose boot ids differ.
    pub boot_id: String,
    /// `<proc>/sys/kernel/osrelease` (`uname -r`). Counter availability differs between kernels
    /// (e.g. `workingset_refault` split into anon/file in 5.9), so it is kept with the sample.
    pub kernel_release: String,
}

pub use crate::psi::{Psi, PsiLine};

/// Cumulative event counters from `<proc>/vmstat` that explain memory pressure. A counter the
/// running kernel does not emit reads as 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VmStat {
    /// All page faults, minor and major: the baseline against which major faults are judged.
    pub pgfault: u64,
    /// Faults that had to wait for I/O. A rising rate means the working set no longer fits (file
    /// cache being evicted and read back, or swap-ins) and tasks block on disk.
    pub pgmajfault: u64,
    /// Pages scanned by direct reclaim, i.e. by the allocating task itself instead of kswapd: this
    /// latency is paid directly by the application.
    pub pgscan_direct: u64,
    /// Pages reclaimed by direct reclaim. `pgsteal_direct / pgscan_direct` is reclaim efficiency; a
    /// low ratio means the LRU is full of pages that cannot be freed.
    pub pgsteal_direct: u64,
    /// Pages scanned by kswapd. kswapd wakes when a zone falls below its low watermark, so any
    /// scanning here means free memory is already short.
    pub pgscan_kswapd: u64,
    /// Pages reclaimed by kswapd.
    pub pgsteal_kswapd: u64,
    /// Number of times an allocation entered direct reclaim (sum of the per-zone `allocstall_*`
    /// lines of kernels ≥ 4.8, or the single `allocstall` line of older ones).
    pub allocstall: u64,
    /// Allocations that had to compact memory synchronously because no free block of the requested
    /// order existed: the cost of fragmentation as paid by callers.
    pub compact_stall: u64,
    /// Direct compactions that failed to produce the block; high-order allocation then falls back
    /// (THP) or fails.
    pub compact_fail: u64,
    /// Direct compactions that produced the requested block.
    pub compact_success: u64,
    /// OOM kills, global and memcg (kernels ≥ 4.13).
    pub oom_kill: u64,
    /// Pages swapped in: each one is a major fault on anonymous memory.
    pub pswpin: u64,
    /// Pages swapped out: anonymous memory being pushed out under pressure.
    pub pswpout: u64,
    /// Refaults of recently evicted pages (sum of `workingset_refault_anon` and
    /// `workingset_refault_file` on kernels ≥ 5.9, or the single `workingset_refault` line). Pages
    /// evicted and needed again shortly after are the signature of thrashing, which plain fault
    /// counts cannot distinguish from cold reads.
    pub workingset_refault: u64,
    /// Transparent huge pages allocated at fault time.
    pub thp_fault_alloc: u64,
    /// THP faults that fell back to base pages, typically because no free order-9 block existed:
    /// fragmentation made visible.
    pub thp_fault_fallback: u64,
}

/// Selected fields of `<proc>/meminfo`. Sizes are in **bytes** (the kernel reports kB, meaning
/// KiB); the two `hugepages_*` fields are page counts, as in the kernel. A field the running kernel
/// does not emit reads as 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemInfo {
    /// `MemTotal`: usable RAM.
    pub total: u64,
    /// `MemFree`: completely unused RAM; low by design on a healthy node, so not a pressure signal
    /// on its own.
    pub free: u64,
    /// `MemAvailable`: the kernel's estimate of memory obtainable without swapping — the headroom
    /// figure to alert on (0 on kernels < 3.14, which lack it).
    pub available: u64,
    /// `Buffers`: block-device cache.
    pub buffers: u64,
    /// `Cached`: page cache (includes `Shmem`, which cannot be dropped without swap).
    pub cached: u64,
    /// `SwapTotal`.
    pub swap_total: u64,
    /// `SwapFree`.
    pub swap_free: u64,
    /// `AnonPages`: anonymous memory mapped into page tables; reclaimable only by swapping.
    pub anon_pages: u64,
    /// `Shmem`: tmpfs and shared anonymous memory; looks like cache but behaves like anon.
    pub shmem: u64,
    /// `SReclaimable`: slab caches (dentries, inodes) the shrinkers can free.
    pub slab_reclaimable: u64,
    /// `SUnreclaim`: slab that cannot be freed under pressure; growth here is a kernel-side leak
    /// suspect.
    pub slab_unreclaimable: u64,
    /// `PageTables`.
    pub page_tables: u64,
    /// `Committed_AS`: memory promised to processes; above `total + swap_total` the node relies on
    /// overcommit and an OOM becomes a matter of time if the promises are called in.
    pub committed_as: u64,
    /// `Dirty`: page cache waiting to be written back; cannot be reclaimed until it is.
    pub dirty: u64,
    /// `Writeback`: pages under write-back right now.
    pub writeback: u64,
    /// `HugePages_Total`: size of the default-size hugetlb pool, in **pages**. This memory is
    /// unavailable to everything but hugetlb users.
    pub hugepages_total: u64,
    /// `HugePages_Free`: unused pages in that pool, in **pages**.
    pub hugepages_free: u64,
    /// `Hugepagesize`: the default hugetlb page size, in bytes.
    pub hugepage_size: u64,
}

/// One line of `<proc>/buddyinfo`: free blocks per order in one zone of one NUMA node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BuddyZone {
    /// NUMA node id.
    pub node: u32,
    /// Zone name (`DMA`, `DMA32`, `Normal`, `Movable`, ...).
    pub zone: String,
    /// Number of free blocks of 2^order pages; index = order.
    pub free_blocks: Vec<u64>,
}

impl BuddyZone {
    /// Free memory in this zone, in pages: `Σ 2^order · free_blocks[order]`.
    pub fn free_pages(&self) -> u64 {
        self.free_and_suitable(0).0
    }

    /// Unusable free space index (Gorman & Whitcroft) for allocations of `order`: the fraction of
    /// free memory that is in blocks too small to satisfy a 2^order-page request. 0 = no
    /// fragmentation for that order, 1 = fully fragmented (or no free memory).
    /// F_u(j) = (TotalFree − Σ_{i≥j} 2^i·k_i) / TotalFree.
    ///
    /// This is the index the kernel shows in `debugfs/extfrag/unusable_index`; computing it from
    /// buddyinfo avoids needing debugfs. Free memory alone says nothing about whether a THP or a
    /// large slab can be allocated, this does.
    pub fn unusable_index(&self, order: u32) -> f64 {
        let (total, suitable) = self.free_and_suitable(order);
        unusable_ratio(total, suitable)
    }

    /// (all free pages, free pages in blocks of at least `order`).
    fn free_and_suitable(&self, order: u32) -> (u64, u64) {
        let first_suitable = usize::try_from(order).unwrap_or(usize::MAX);
        self.free_blocks
            .iter()
            .enumerate()
            .fold((0u64, 0u64), |(total, suitable), (i, &count)| {
                let pages = block_pages(i, count);
                let suitable = if i >= first_suitable {
                    suitable.saturating_add(pages)
                } else {
                    suitable
                };
                (total.saturating_add(pages), suitable)
            })
    }
}

/// Pages held by `count` free blocks of order `order`, saturating instead of overflowing.
fn block_pages(order: usize, count: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    u32::try_from(order)
        .ok()
        .and_then(|o| 1u64.checked_shl(o))
        .map_or(u64::MAX, |block| block.saturating_mul(count))
}

fn unusable_ratio(total: u64, suitable: u64) -> f64 {
    if total == 0 {
        // Same convention as the kernel's unusable_free_index(): no free memory is maximally
        // unusable.
        return 1.0;
    }
    total.saturating_sub(suitable) as f64 / total as f64
}

/// Node-wide unusable free space index over all `zones` (sums before dividing — not an average of
/// ratios, so a nearly empty DMA zone cannot outweigh a large Normal zone). See
/// [`BuddyZone::unusable_index`]. An empty slice has no free memory and yields 1.
pub fn unusable_index(zones: &[BuddyZone], order: u32) -> f64 {
    let (total, suitable) = zones.iter().fold((0u64, 0u64), |(t, s), zone| {
        let (zt, zs) = zone.free_and_suitable(order);
        (t.saturating_add(zt), s.saturating_add(zs))
    });
    unusable_ratio(total, suitable)
}

/// Everything [`NodeReader`] reads, taken in one pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeSample {
    pub identity: NodeIdentity,
    /// `None` if the kernel has no PSI (< 4.20, `CONFIG_PSI=n`, or booted with `psi=0`).
    pub psi: Option<Psi>,
    pub vmstat: VmStat,
    pub meminfo: MemInfo,
    pub buddy: Vec<BuddyZone>,
    /// Node-wide [`unusable_index`] at order 3 (32 KiB with 4 KiB pages, a common kernel
    /// allocation order: kernel stacks, network buffers, slab pages).
    pub fragmentation_order3: f64,
    /// Node-wide [`unusable_index`] at order 9 (2 MiB THP on x86-64 with 4 KiB pages).
    pub fragmentation_order9: f64,
}

/// Reads node-level memory figures from a procfs tree rooted at `proc_root`.
#[derive(Clone, Debug)]
pub struct NodeReader {
    proc_root: PathBuf,
}

impl NodeReader {
    /// `proc_root` is normally `/proc`; tests pass a fixture tree laid out the same way.
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
        }
    }

    /// The procfs root this reader was built with.
    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.proc_root.join(relative)
    }

    /// Hostname, boot id and kernel release.
    pub fn identity(&self) -> Result<NodeIdentity, NodeError> {
        let hostname = read_trimmed(&self.path("sys/kernel/hostname"))?;
        let boot_id_path = self.path("sys/kernel/random/boot_id");
        let boot_id = read_trimmed(&boot_id_path)?;
        if boot_id.is_empty() {
            // Rate computation relies on it to detect reboots; an empty id would silently match
            // another empty id.
            return Err(NodeError::Missing {
                path: boot_id_path,
                field: "boot_id",
            });
        }
        let kernel_release = read_trimmed(&self.path("sys/kernel/osrelease"))?;
        Ok(NodeIdentity {
            hostname,
            boot_id,
            kernel_release,
        })
    }

    /// `<proc>/pressure/memory`. `Ok(None)` if PSI is unavailable (the file is absent), `Err` if
    /// the file exists but cannot be read or parsed.
    pub fn psi_memory(&self) -> Result<Option<Psi>, NodeError> {
        let path = self.path("pressure/memory");
        match fs::read_to_string(&path) {
            Ok(text) => parse_psi(&path, &text).map(Some),
            // Absent: kernel < 4.20, CONFIG_PSI=n, or psi=0 (the kernel then skips creating
            // /proc/pressure). EOPNOTSUPP is what PSI files return when PSI is compiled in but
            // disabled; treat it the same way.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                Ok(None)
            }
            Err(source) => Err(NodeError::Io { path, source }),
        }
    }

    /// `<proc>/vmstat`.
    pub fn vmstat(&self) -> Result<VmStat, NodeError> {
        let path = self.path("vmstat");
        let text = read(&path)?;
        parse_vmstat(&path, &text)
    }

    /// `<proc>/meminfo`.
    pub fn meminfo(&self) -> Result<MemInfo, NodeError> {
        let path = self.path("meminfo");
        let text = read(&path)?;
        parse_meminfo(&path, &text)
    }

    /// `<proc>/buddyinfo`, one entry per (NUMA node, zone) in file order.
    pub fn buddyinfo(&self) -> Result<Vec<BuddyZone>, NodeError> {
        let path = self.path("buddyinfo");
        let text = read(&path)?;
        parse_buddyinfo(&path, &text)
    }

    /// All of the above plus the derived fragmentation indices. PSI being unavailable is `None`,
    /// not an error; every other file is required.
    pub fn sample(&self) -> Result<NodeSample, NodeError> {
        let identity = self.identity()?;
        let psi = self.psi_memory()?;
        let vmstat = self.vmstat()?;
        let meminfo = self.meminfo()?;
        let buddy = self.buddyinfo()?;
        let fragmentation_order3 = unusable_index(&buddy, 3);
        let fragmentation_order9 = unusable_index(&buddy, 9);
        Ok(NodeSample {
            identity,
            psi,
            vmstat,
            meminfo,
            buddy,
            fragmentation_order3,
            fragmentation_order9,
        })
    }
}

fn read(path: &Path) -> Result<String, NodeError> {
    fs::read_to_string(path).map_err(|source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_trimmed(path: &Path) -> Result<String, NodeError> {
    Ok(read(path)?.trim().to_owned())
}

fn parse_error(path: &Path, line: usize, reason: impl Into<String>) -> NodeError {
    NodeError::Parse {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

fn parse_u64(path: &Path, line: usize, key: &str, value: &str) -> Result<u64, NodeError> {
    value
        .parse::<u64>()
        .map_err(|e| parse_error(path, line, format!("{key}: {value:?} is not a count: {e}")))
}

/// `<proc>/pressure/memory`, strictly: a line that is not PSI means the file is not what we think
/// it is (wrong root, truncated read).
pub(crate) fn parse_psi(path: &Path, text: &str) -> Result<Psi, NodeError> {
    crate::psi::parse(text, crate::psi::Lines::Strict).map_err(|err| match err.line() {
        Some(line) => parse_error(path, line, err.to_string()),
        None => NodeError::Missing {
            path: path.to_path_buf(),
            field: "some",
        },
    })
}

fn vmstat_field<'a>(stat: &'a mut VmStat, name: &str) -> Option<&'a mut u64> {
    Some(match name {
        "pgfault" => &mut stat.pgfault,
        "pgmajfault" => &mut stat.pgmajfault,
        "pgscan_direct" => &mut stat.pgscan_direct,
        "pgsteal_direct" => &mut stat.pgsteal_direct,
        "pgscan_kswapd" => &mut stat.pgscan_kswapd,
        "pgsteal_kswapd" => &mut stat.pgsteal_kswapd,
        // Per-zone since 4.8, a single line before.
        n if n == "allocstall" || n.starts_with("allocstall_") => &mut stat.allocstall,
        "compact_stall" => &mut stat.compact_stall,
        "compact_fail" => &mut stat.compact_fail,
        "compact_success" => &mut stat.compact_success,
        "oom_kill" => &mut stat.oom_kill,
        "pswpin" => &mut stat.pswpin,
        "pswpout" => &mut stat.pswpout,
        // Split into anon/file in 5.9; the kernel never emits both forms.
        "workingset_refault" | "workingset_refault_anon" | "workingset_refault_file" => {
            &mut stat.workingset_refault
        }
        "thp_fault_alloc" => &mut stat.thp_fault_alloc,
        "thp_fault_fallback" => &mut stat.thp_fault_fallback,
        _ => return None,
    })
}

/// Parses `name value` lines. Counters we do not track are skipped unparsed (the kernel adds and
/// renames them often); counters we track must be valid. `pgfault` has been present in every
/// kernel with /proc/vmstat, so its absence means this is not a vmstat file.
pub(crate) fn parse_vmstat(path: &Path, text: &str) -> Result<VmStat, NodeError> {
    let mut stat = VmStat::default();
    let mut saw_pgfault = false;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else {
            continue;
        };
        saw_pgfault |= name == "pgfault";
        let Some(field) = vmstat_field(&mut stat, name) else {
            continue;
        };
        let (Some(value), None) = (fields.next(), fields.next()) else {
            return Err(parse_error(
                path,
                line_no,
                format!("expected \"{name} <count>\""),
            ));
        };
        *field = field.saturating_add(parse_u64(path, line_no, name, value)?);
    }
    if !saw_pgfault {
        return Err(NodeError::Missing {
            path: path.to_path_buf(),
            field: "pgfault",
        });
    }
    Ok(stat)
}

fn meminfo_field<'a>(info: &'a mut MemInfo, key: &str) -> Option<&'a mut u64> {
    Some(match key {
        "MemTotal" => &mut info.total,
        "MemFree" => &mut info.free,
        "MemAvailable" => &mut info.available,
        "Buffers" => &mut info.buffers,
        "Cached" => &mut info.cached,
        "SwapTotal" => &mut info.swap_total,
        "SwapFree" => &mut info.swap_free,
        "AnonPages" => &mut info.anon_pages,
        "Shmem" => &mut info.shmem,
        "SReclaimable" => &mut info.slab_reclaimable,
        "SUnreclaim" => &mut info.slab_unreclaimable,
        "PageTables" => &mut info.page_tables,
        "Committed_AS" => &mut info.committed_as,
        "Dirty" => &mut info.dirty,
        "Writeback" => &mut info.writeback,
        "HugePages_Total" => &mut info.hugepages_total,
        "HugePages_Free" => &mut info.hugepages_free,
        "Hugepagesize" => &mut info.hugepage_size,
        _ => return None,
    })
}

/// Parses `Key:   value [kB]` lines. `kB` values are converted to bytes, unit-less values (the
/// hugepage counts) are kept as they are. Unknown keys are skipped; `MemTotal` is required.
pub(crate) fn parse_meminfo(path: &Path, text: &str) -> Result<MemInfo, NodeError> {
    let mut info = MemInfo::default();
    let mut saw_total = false;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        saw_total |= key == "MemTotal";
        let Some(field) = meminfo_field(&mut info, key) else {
            continue;
        };
        let mut tokens = rest.split_whitespace();
        let (Some(value), unit, None) = (tokens.next(), tokens.next(), tokens.next()) else {
            return Err(parse_error(
                path,
                line_no,
                format!("expected \"{key}: <n> [kB]\""),
            ));
        };
        let value = parse_u64(path, line_no, key, value)?;
        *field = match unit {
            None => value,
            Some("kB") => value.checked_mul(1024).ok_or_else(|| {
                parse_error(path, line_no, format!("{key}: {value} kB overflows"))
            })?,
            Some(other) => {
                return Err(parse_error(
                    path,
                    line_no,
                    format!("{key}: unknown unit {other:?}"),
                ));
            }
        };
    }
    if !saw_total {
        return Err(NodeError::Missing {
            path: path.to_path_buf(),
            field: "MemTotal",
        });
    }
    Ok(info)
}

/// Parses `Node N, zone NAME c0 c1 ... cK` lines (usually 11 orders, but any non-zero count is
/// accepted: MAX_ORDER depends on architecture and config).
pub(crate) fn parse_buddyinfo(path: &Path, text: &str) -> Result<Vec<BuddyZone>, NodeError> {
    let mut zones = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        let bad = |reason: &str| parse_error(path, line_no, reason);
        if first != "Node" {
            return Err(bad("expected \"Node\""));
        }
        let node = fields
            .next()
            .and_then(|n| n.strip_suffix(','))
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| bad("expected \"<node id>,\" after \"Node\""))?;
        if fields.next() != Some("zone") {
            return Err(bad("expected \"zone\""));
        }
        let zone = fields.next().ok_or_else(|| bad("missing zone name"))?;
        let free_blocks = fields
            .map(|count| parse_u64(path, line_no, zone, count))
            .collect::<Result<Vec<_>, _>>()?;
        if free_blocks.is_empty() {
            return Err(bad("no free-block counts"));
        }
        zones.push(BuddyZone {
            node,
            zone: zone.to_owned(),
            free_blocks,
        });
    }
    if zones.is_empty() {
        return Err(NodeError::Missing {
            path: path.to_path_buf(),
            field: "zone",
        });
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node/live/proc");
    const FRAGMENTED: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/node/fragmented/proc"
    );
    const GARBAGE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/node/garbage/proc"
    );

    const KIB: u64 = 1024;

    fn zone(free_blocks: &[u64]) -> BuddyZone {
        BuddyZone {
            node: 0,
            zone: "Normal".to_owned(),
            free_blocks: free_blocks.to_vec(),
        }
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-9,
            "expected {expected}, got {actual}"
        );
    }

    #[test]
    fn live_fixture_identity() {
        let id = NodeReader::new(LIVE).identity().unwrap();
        assert_eq!(
            id,
            NodeIdentity {
                hostname: "vm".to_owned(),
                boot_id: "36070e99-6ce2-43ad-9ce7-d63cfb46d467".to_owned(),
                kernel_release: "6.18.44-fc-v669".to_owned(),
            }
        );
    }

    #[test]
    fn live_fixture_psi_has_some_and_full() {
        let psi = NodeReader::new(LIVE).psi_memory().unwrap().unwrap();
        let idle = PsiLine::default();
        assert_eq!(psi.some, idle);
        assert_eq!(psi.full, Some(idle));
    }

    #[test]
    fn psi_parses_values() {
        let text = "some avg10=12.34 avg60=5.67 avg300=1.00 total=123456789\n\
                    full avg10=3.21 avg60=1.09 avg300=0.25 total=23456789\n";
        let psi = parse_psi(Path::new("mem"), text).unwrap();
        assert_eq!(
            psi,
            Psi {
                some: PsiLine {
                    avg10: 12.34,
                    avg60: 5.67,
                    avg300: 1.0,
                    total_us: 123_456_789
                },
                full: Some(PsiLine {
                    avg10: 3.21,
                    avg60: 1.09,
                    avg300: 0.25,
                    total_us: 23_456_789
                }),
            }
        );
        let some_only = parse_psi(
            Path::new("mem"),
            "some avg10=0.50 avg60=0.10 avg300=0.02 total=42\n",
        );
        assert_eq!(some_only.unwrap().full, None);
    }

    #[test]
    fn psi_absent_is_none() {
        assert_eq!(NodeReader::new(FRAGMENTED).psi_memory().unwrap(), None);
    }

    #[test]
    fn garbage_psi_is_error_naming_path() {
        let err = NodeReader::new(GARBAGE).psi_memory().unwrap_err();
        let path = Path::new(GARBAGE).join("pressure/memory");
        assert_eq!(err.path(), path);
        assert!(matches!(err, NodeError::Parse { line: 1, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
        assert!(msg.contains("banana"), "{msg}");
    }

    #[test]
    fn psi_rejects_missing_some_and_unknown_lines() {
        let p = Path::new("mem");
        assert!(matches!(
            parse_psi(p, "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
            Err(NodeError::Missing { field: "some", .. })
        ));
        assert!(matches!(parse_psi(p, ""), Err(NodeError::Missing { .. })));
        assert!(matches!(
            parse_psi(p, "some avg10=0.00 avg60=0.00 total=0\n"),
            Err(NodeError::Parse { line: 1, .. })
        ));
        assert!(matches!(
            parse_psi(
                p,
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nhalf x=1\n"
            ),
            Err(NodeError::Parse { line: 2, .. })
        ));
    }

    #[test]
    fn live_fixture_vmstat() {
        let vm = NodeReader::new(LIVE).vmstat().unwrap();
        assert_eq!(vm.pgfault, 4_616_155);
        assert_eq!(vm.pgmajfault, 1082);
        // workingset_refault_anon 0 + workingset_refault_file 278252
        assert_eq!(vm.workingset_refault, 278_252);
        assert_eq!(vm.allocstall, 0);
        assert_eq!(vm.pgscan_direct, 0);
        assert_eq!(vm.oom_kill, 0);
    }

    #[test]
    fn old_kernel_vmstat_sums_allocstall_and_single_refault_line() {
        let vm = NodeReader::new(FRAGMENTED).vmstat().unwrap();
        assert_eq!(
            vm,
            VmStat {
                pgfault: 73_512_345,
                pgmajfault: 45_678,
                pgscan_direct: 600_000,
                pgsteal_direct: 250_000,
                pgscan_kswapd: 4_500_000,
                pgsteal_kswapd: 3_000_000,
                allocstall: 7 + 1234 + 56,
                compact_stall: 812,
                compact_fail: 790,
                compact_success: 22,
                oom_kill: 3,
                pswpin: 120_034,
                pswpout: 450_067,
                workingset_refault: 987_654,
                thp_fault_alloc: 1500,
                thp_fault_fallback: 6400,
            }
        );
    }

    #[test]
    fn vmstat_errors() {
        let p = Path::new("vmstat");
        assert!(matches!(
            parse_vmstat(p, "pgfault 1\npgmajfault x\n"),
            Err(NodeError::Parse { line: 2, .. })
        ));
        assert!(matches!(
            parse_vmstat(p, "nr_free_pages 5\n"),
            Err(NodeError::Missing {
                field: "pgfault",
                ..
            })
        ));
        let missing_lines = parse_vmstat(p, "pgfault 9\nallocstall 4\n").unwrap();
        assert_eq!((missing_lines.pgfault, missing_lines.allocstall), (9, 4));
        assert_eq!(missing_lines.thp_fault_alloc, 0);
    }

    #[test]
    fn live_fixture_meminfo_in_bytes() {
        let mi = NodeReader::new(LIVE).meminfo().unwrap();
        assert_eq!(mi.total, 24_684_084 * KIB);
        assert_eq!(mi.free, 23_779_740 * KIB);
        assert_eq!(mi.available, 24_348_768 * KIB);
        assert_eq!(mi.cached, 758_580 * KIB);
        assert_eq!(mi.slab_unreclaimable, 21_676 * KIB);
        assert_eq!(mi.committed_as, 58_296 * KIB);
        assert_eq!(mi.hugepage_size, 2 * 1024 * 1024);
        assert_eq!(mi.swap_total, 0);
    }

    #[test]
    fn fragmented_meminfo_all_fields() {
        let mi = NodeReader::new(FRAGMENTED).meminfo().unwrap();
        assert_eq!(
            mi,
            MemInfo {
                total: 8_167_848 * KIB,
                free: 13_060 * KIB,
                available: 91_224 * KIB,
                buffers: 1532 * KIB,
                cached: 120_344 * KIB,
                swap_total: 2_097_148 * KIB,
                swap_free: 65_536 * KIB,
                anon_pages: 7_512_300 * KIB,
                shmem: 65_432 * KIB,
                slab_reclaimable: 60_000 * KIB,
                slab_unreclaimable: 120_000 * KIB,
                page_tables: 40_960 * KIB,
                committed_as: 11_534_336 * KIB,
                dirty: 4096 * KIB,
                writeback: 512 * KIB,
                hugepages_total: 16,
                hugepages_free: 4,
                hugepage_size: 2048 * KIB,
            }
        );
    }

    #[test]
    fn meminfo_errors() {
        let p = Path::new("meminfo");
        assert!(matches!(
            parse_meminfo(p, "MemTotal: 10 MB\n"),
            Err(NodeError::Parse { line: 1, .. })
        ));
        assert!(matches!(
            parse_meminfo(p, "MemFree: 10 kB\n"),
            Err(NodeError::Missing {
                field: "MemTotal",
                ..
            })
        ));
        let err = NodeReader::new(GARBAGE).meminfo().unwrap_err();
        assert_eq!(err.path(), Path::new(GARBAGE).join("meminfo"));
        assert!(
            matches!(&err, NodeError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn live_fixture_buddyinfo() {
        let zones = NodeReader::new(LIVE).buddyinfo().unwrap();
        let names: Vec<_> = zones.iter().map(|z| (z.node, z.zone.as_str())).collect();
        assert_eq!(names, [(0, "DMA"), (0, "DMA32"), (0, "Normal")]);
        assert_eq!(zones[0].free_blocks, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3]);
        assert_eq!(
            zones[2].free_blocks,
            [11753, 11387, 5834, 2962, 1377, 722, 286, 119, 41, 11, 87]
        );
        // DMA: 256 + 512 + 3·1024
        assert_eq!(zones[0].free_pages(), 3840);
        assert_eq!(zones[1].free_pages(), 772_915);
        assert_eq!(zones[2].free_pages(), 265_447);
        // DMA at order 9: only the single order-8 block (256 pages) is too small.
        assert_close(zones[0].unusable_index(9), 256.0 / 3840.0);
        // Node-wide: (1042202 − 869376) / 1042202.
        assert_close(unusable_index(&zones, 9), 172_826.0 / 1_042_202.0);
    }

    #[test]
    fn unusable_index_small_zone_by_hand() {
        // 4 single pages + 2 pairs + 1 quad = 4 + 4 + 4 = 12 free pages.
        let z = zone(&[4, 2, 1]);
        assert_eq!(z.free_pages(), 12);
        assert_close(z.unusable_index(0), 0.0);
        assert_close(z.unusable_index(1), 4.0 / 12.0);
        assert_close(z.unusable_index(2), 8.0 / 12.0);
        // Beyond the largest order present nothing is usable.
        assert_close(z.unusable_index(3), 1.0);
        assert_close(z.unusable_index(40), 1.0);
        // No free memory at all counts as fully fragmented.
        assert_close(zone(&[0, 0, 0]).unusable_index(0), 1.0);
        assert_close(unusable_index(&[], 3), 1.0);
    }

    #[test]
    fn node_wide_index_sums_before_dividing() {
        // A: 24 pages all in order-3 blocks (index 0); B: 8 single pages (index 1).
        let zones = [zone(&[0, 0, 0, 3]), zone(&[8])];
        assert_close(zones[0].unusable_index(3), 0.0);
        assert_close(zones[1].unusable_index(3), 1.0);
        // (32 − 24) / 32, not the mean of ratios (0.5).
        assert_close(unusable_index(&zones, 3), 0.25);
    }

    #[test]
    fn block_pages_saturates() {
        assert_eq!(block_pages(64, 1), u64::MAX);
        assert_eq!(block_pages(64, 0), 0);
        assert_eq!(block_pages(63, 2), u64::MAX);
        assert_eq!(block_pages(10, 3), 3072);
    }

    #[test]
    fn buddyinfo_rejects_garbage() {
        let p = Path::new("buddyinfo");
        let ok = parse_buddyinfo(p, "Node 2, zone Movable 5 1\n").unwrap();
        assert_eq!(
            ok,
            [BuddyZone {
                node: 2,
                zone: "Movable".to_owned(),
                free_blocks: vec![5, 1]
            }]
        );
        for bad in [
            "Node 0, zone DMA 1 x\n",
            "Node 0 zone DMA 1\n",
            "Node 0, area DMA 1\n",
            "Node 0, zone DMA\n",
            "Nodes 0, zone DMA 1\n",
        ] {
            assert!(
                matches!(
                    parse_buddyinfo(p, bad),
                    Err(NodeError::Parse { line: 1, .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_buddyinfo(p, "\n"),
            Err(NodeError::Missing { field: "zone", .. })
        ));
    }

    #[test]
    fn fragmented_sample() {
        let s = NodeReader::new(FRAGMENTED).sample().unwrap();
        assert_eq!(s.identity.hostname, "frag-node-07");
        assert_eq!(s.identity.boot_id, "0f1e2d3c-4b5a-4697-8887-a9b8c7d6e5f4");
        assert_eq!(s.identity.kernel_release, "5.4.0-150-generic");
        assert_eq!(s.psi, None);
        assert_eq!(s.buddy.len(), 4);
        assert_eq!(s.buddy[3].node, 1);
        // Free pages: DMA 3+2, DMA32 100+100, Normal 2000+1000, node 1 Normal 40+20 = 3265.
        let total: u64 = s.buddy.iter().map(BuddyZone::free_pages).sum();
        assert_eq!(total, 3265);
        // Nothing above order 1 is free: exactly fully fragmented for THP and order 3.
        assert_eq!(s.fragmentation_order9, 1.0);
        assert_eq!(s.fragmentation_order3, 1.0);
        // Order 1: only the order-0 pages (3+100+2000+40 = 2143) are unusable.
        assert_close(unusable_index(&s.buddy, 1), 2143.0 / 3265.0);
        assert_close(s.buddy[0].unusable_index(1), 3.0 / 5.0);
        assert_close(unusable_index(&s.buddy, 0), 0.0);
        assert_eq!(s.vmstat.allocstall, 1297);
        assert_eq!(s.meminfo.hugepages_total, 16);
    }

    #[test]
    fn live_fixture_sample_serializes() {
        let s = NodeReader::new(LIVE).sample().unwrap();
        assert!(s.psi.is_some());
        assert_close(s.fragmentation_order9, 172_826.0 / 1_042_202.0);
        // (1042202 − 984320) / 1042202
        assert_close(s.fragmentation_order3, 57_882.0 / 1_042_202.0);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["meminfo"]["total"], 24_684_084 * KIB);
        assert_eq!(json["identity"]["hostname"], "vm");
        assert_eq!(json["buddy"][0]["free_blocks"][10], 3);
    }

    #[test]
    fn live_proc() {
        let reader = NodeReader::new("/proc");
        let mi = reader.meminfo().unwrap();
        assert!(mi.total > 0);
        let vm = reader.vmstat().unwrap();
        assert!(vm.pgfault > 0);
        let zones = reader.buddyinfo().unwrap();
        assert!(zones.iter().map(BuddyZone::free_pages).sum::<u64>() > 0);
        assert!(!reader.identity().unwrap().boot_id.is_empty());
    }
}
