//! From the kernel's maps and sample records to a [`Capture`]: one stack per site (unwound from
//! the site's first stack snapshot, or the kernel's frame-pointer walk where none arrived), the
//! site's counters as values, leak suspects from the outstanding map, and every loss.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use memtrace_common::alloc::{AllocSample, NO_STACK_ID, Outstanding, StackCounts, StackKey, loss};

use super::duty::Coverage;
use super::probes::{AllocProbes, ProbeError, objects};
use crate::profile::{
    Capture, CaptureStats, CapturedStack, SampleType, StackEnd,
    unwind::{Unwinder, UserRegs},
};

/// Frames unwound per stack.
pub const MAX_DEPTH: usize = 127;

/// One site's stack as recovered from a snapshot.
#[derive(Clone, Debug)]
struct Unwound {
    frames: Vec<u64>,
    end: StackEnd,
}

/// What a report shows: every allocation site, or the leak suspects only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Sites,
    /// Outstanding allocations older than this, by site.
    Leaks {
        min_age: Duration,
    },
    /// In-use bytes gained since the previous snapshot, by site (live mode).
    Growth,
}

/// The per-site state the collector keeps between reads.
pub struct Collector {
    pid: u32,
    comm: String,
    target: String,
    sampling: String,
    unwinder: Unwinder,
    unwound: HashMap<StackKey, Unwound>,
    /// Records whose stack was already known (sampled mode: most).
    pub records: u64,
    /// In-use bytes per site at the previous growth snapshot.
    previous_in_use: HashMap<StackKey, i64>,
    pub started_unix_ms: u64,
    started: std::time::Instant,
}

impl Collector {
    pub fn new(pid: u32, comm: String, sampling: String) -> Self {
        Self {
            pid,
            target: format!("pid {pid} ({comm})"),
            comm,
            sampling,
            unwinder: Unwinder::new(),
            unwound: HashMap::new(),
            records: 0,
            previous_in_use: HashMap::new(),
            started_unix_ms: unix_ms(),
            started: std::time::Instant::now(),
        }
    }

    /// One ring record: the site's stack, unwound from its snapshot the first time it is seen.
    pub fn record(&mut self, bytes: &[u8]) {
        if bytes.len() < size_of::<AllocSample>() {
            return;
        }
        // SAFETY: `AllocSample` is plain integers and bytes (any bit pattern is valid); the
        // length is checked above and the read is unaligned.
        let sample: AllocSample =
            unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<AllocSample>()) };
        self.records += 1;
        if self.unwound.contains_key(&sample.stack) {
            return;
        }
        let len = (sample.stack_len as usize).min(sample.stack_bytes.len());
        let regs = UserRegs {
            ip: sample.ip,
            sp: sample.sp,
            bp: sample.bp,
        };
        let (mut frames, end) =
            self.unwinder
                .unwind(sample.tgid, regs, &sample.stack_bytes[..len], MAX_DEPTH);
        // The unwinder's leaf is the return address; the site is the call before it.
        match frames.first_mut() {
            Some(leaf) if *leaf == sample.ip => *leaf = sample.ip.saturating_sub(1),
            _ => frames.insert(0, sample.ip.saturating_sub(1)),
        }
        self.unwound.insert(sample.stack, Unwound { frames, end });
    }

    /// The user stack of a site: its unwound snapshot, else the kernel's frame-pointer walk
    /// (which stops at the first function built without frame pointers), else the leaf alone.
    fn stack_of(&self, probes: &AllocProbes, key: &StackKey) -> (Vec<u64>, StackEnd) {
        if let Some(unwound) = self.unwound.get(key) {
            return (unwound.frames.clone(), unwound.end.clone());
        }
        let leaf = key.return_address.saturating_sub(1);
        let walked = (key.stack_id != NO_STACK_ID)
            .then(|| probes.stack_trace(key.stack_id))
            .flatten();
        match walked {
            Some(frames) => {
                // The kernel's walk starts at the probe's own address: the return address at the
                // return probe, the allocator's first instruction at an entry probe (sites only).
                let rest = frames.into_iter().skip(1).take(MAX_DEPTH - 1);
                (
                    std::iter::once(leaf).chain(rest).collect(),
                    StackEnd::FramePointers,
                )
            }
            None => (
                vec![leaf],
                StackEnd::Other(
                    "no stack snapshot and no frame-pointer stack for this site".into(),
                ),
            ),
        }
    }

    /// A capture of `view` from the kernel's maps now. With `--duty-cycle` (`coverage`: how long
    /// the probes were attached), the allocation sites only.
    pub fn capture(
        &mut self,
        probes: &AllocProbes,
        view: View,
        coverage: Option<&Coverage>,
    ) -> Result<Capture, ProbeError> {
        let sites = probes.sites()?;
        let counters = probes.counters()?;
        let (sample_types, per_site) = match view {
            _ if probes.sites_only() => (
                vec![
                    sample_type("alloc_space", "bytes"),
                    sample_type("alloc_objects", "count"),
                ],
                allocated_values(&sites),
            ),
            View::Sites => (
                vec![
                    sample_type("alloc_space", "bytes"),
                    sample_type("alloc_objects", "count"),
                    sample_type("inuse_space", "bytes"),
                    sample_type("inuse_objects", "count"),
                ],
                site_values(&sites),
            ),
            View::Leaks { min_age } => (
                vec![
                    sample_type("inuse_space", "bytes"),
                    sample_type("inuse_objects", "count"),
                ],
                leak_values(&probes.outstanding()?, self.pid, min_age, monotonic_ns()),
            ),
            View::Growth => {
                let now: HashMap<StackKey, i64> = sites
                    .iter()
                    .map(|(key, counts)| (*key, in_use_bytes(counts)))
                    .collect();
                let values = now
                    .iter()
                    .filter_map(|(key, in_use)| {
                        let growth = in_use - self.previous_in_use.get(key).copied().unwrap_or(0);
                        (growth != 0).then(|| (*key, (vec![growth, *in_use], Vec::new())))
                    })
                    .collect();
                self.previous_in_use = now;
                (
                    vec![
                        sample_type("inuse_growth", "bytes"),
                        sample_type("inuse_space", "bytes"),
                    ],
                    values,
                )
            }
        };
        let samples_per_site: HashMap<StackKey, u64> = sites
            .iter()
            .map(|(key, counts)| (*key, counts.samples))
            .collect();
        let mut stats = CaptureStats::default();
        let mut stacks = Vec::with_capacity(per_site.len());
        for (key, (values, labels)) in per_site {
            let (user, user_end) = self.stack_of(probes, &key);
            let stack = CapturedStack {
                pid: self.pid,
                comm: self.comm.clone(),
                user,
                user_end,
                kernel: Vec::new(),
                values,
                labels,
            };
            stats.record(&stack, samples_per_site.get(&key).copied().unwrap_or(0));
            stacks.push(stack);
        }
        stats.lost = losses(&counters, self.sampling.starts_with("every"));
        let sampling = match coverage {
            Some(coverage) => format!("{}; {}", self.sampling, coverage.describe()),
            None => self.sampling.clone(),
        };
        Ok(Capture {
            target: self.target.clone(),
            sampling,
            sample_types,
            default_sample_type: 0,
            stacks,
            stats,
            started_unix_ms: self.started_unix_ms,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

type SiteValues = BTreeMap<StackKey, (Vec<i64>, Vec<(&'static str, i64)>)>;

fn sample_type(name: &'static str, unit: &'static str) -> SampleType {
    SampleType { name, unit }
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn in_use_bytes(counts: &StackCounts) -> i64 {
    signed(counts.alloc_bytes.saturating_sub(counts.free_bytes))
}

fn site_values(sites: &[(StackKey, StackCounts)]) -> SiteValues {
    sites
        .iter()
        .map(|(key, counts)| {
            let values = vec![
                signed(counts.alloc_bytes),
                objects(counts.alloc_objects),
                in_use_bytes(counts),
                objects(counts.alloc_objects.saturating_sub(counts.free_objects)),
            ];
            (*key, (values, Vec::new()))
        })
        .collect()
}

/// Sites only: bytes and objects allocated.
fn allocated_values(sites: &[(StackKey, StackCounts)]) -> SiteValues {
    sites
        .iter()
        .map(|(key, counts)| {
            let values = vec![signed(counts.alloc_bytes), objects(counts.alloc_objects)];
            (*key, (values, Vec::new()))
        })
        .collect()
}

/// Outstanding allocations of `pid` older than `min_age`, by site: bytes, objects and the
/// oldest one's age.
fn leak_values(
    outstanding: &[(memtrace_common::alloc::OutstandingKey, Outstanding)],
    pid: u32,
    min_age: Duration,
    now_ns: u64,
) -> SiteValues {
    let min_age_ns = u64::try_from(min_age.as_nanos()).unwrap_or(u64::MAX);
    let mut by_site: BTreeMap<StackKey, (u64, u64, u64)> = BTreeMap::new();
    for (key, allocation) in outstanding {
        let age = now_ns.saturating_sub(allocation.ts_ns);
        if key.tgid != pid || age < min_age_ns {
            continue;
        }
        let site = by_site.entry(allocation.stack).or_default();
        site.0 += allocation.weighted_bytes;
        site.1 += allocation.weighted_objects;
        site.2 = site.2.max(age);
    }
    by_site
        .into_iter()
        .map(|(key, (bytes, fixed_objects, oldest_ns))| {
            let values = vec![signed(bytes), objects(fixed_objects)];
            let labels = vec![("oldest_age_ms", signed(oldest_ns / 1_000_000))];
            (key, (values, labels))
        })
        .collect()
}

/// Every counter of `ALLOC_LOSSES` that is a loss, named. In sampled mode most frees are of
/// allocations not taken, so unknown frees are not a loss there and are left out.
fn losses(counters: &[u64], unsampled: bool) -> Vec<(String, u64)> {
    let mut out = vec![
        ("ring buffer full (stack snapshots)", loss::RING_FULL),
        ("outstanding map full", loss::OUTSTANDING_FULL),
        ("site map full (allocations not counted)", loss::STACKS_FULL),
        (
            "stack id failed (stack map full or hash collision: site keyed by its leaf)",
            loss::STACK_ID,
        ),
        ("in-flight call map full", loss::INFLIGHT_FULL),
    ];
    if unsampled {
        out.push((
            "frees of unknown pointers (allocated before attaching, or not tracked)",
            loss::FREE_UNKNOWN,
        ));
    }
    out.into_iter()
        .map(|(name, slot)| (name.to_owned(), counters[slot as usize]))
        .collect()
}

/// `CLOCK_MONOTONIC` in ns, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use memtrace_common::alloc::{OBJECT_UNIT, OutstandingKey};

    use super::*;

    fn key(return_address: u64) -> StackKey {
        StackKey {
            return_address,
            stack_id: 1,
            reserved: 0,
        }
    }

    #[test]
    fn leaks_are_the_old_outstanding_allocations_of_the_process_by_site() {
        let alloc = |site, size, ts_ns| Outstanding {
            stack: key(site),
            size,
            weighted_bytes: size,
            weighted_objects: OBJECT_UNIT,
            ts_ns,
        };
        let ours = |pointer| OutstandingKey {
            tgid: 7,
            reserved: 0,
            pointer,
        };
        let outstanding = vec![
            (ours(1), alloc(0x10, 100, 1_000_000_000)),
            (ours(2), alloc(0x10, 50, 2_000_000_000)),
            // Too young.
            (ours(3), alloc(0x10, 999, 9_500_000_000)),
            (ours(4), alloc(0x20, 8, 3_000_000_000)),
            // Another process.
            (
                OutstandingKey {
                    tgid: 8,
                    reserved: 0,
                    pointer: 5,
                },
                alloc(0x20, 1_000, 0),
            ),
        ];
        let got = leak_values(&outstanding, 7, Duration::from_secs(1), 10_000_000_000);
        assert_eq!(got[&key(0x10)].0, vec![150, 2]);
        assert_eq!(got[&key(0x10)].1, vec![("oldest_age_ms", 9_000)]);
        assert_eq!(got[&key(0x20)].0, vec![8, 1]);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn sites_show_allocated_and_in_use() {
        let counts = StackCounts {
            alloc_bytes: 300,
            alloc_objects: 3 * OBJECT_UNIT,
            free_bytes: 100,
            free_objects: OBJECT_UNIT,
            samples: 3,
        };
        let got = site_values(&[(key(1), counts)]);
        assert_eq!(got[&key(1)].0, vec![300, 3, 200, 2]);
    }

    #[test]
    fn sites_only_show_what_was_allocated() {
        let counts = StackCounts {
            alloc_bytes: 300,
            alloc_objects: 3 * OBJECT_UNIT,
            free_bytes: 0,
            free_objects: 0,
            samples: 3,
        };
        let got = allocated_values(&[(key(1), counts)]);
        assert_eq!(got[&key(1)].0, vec![300, 3]);
    }
}
