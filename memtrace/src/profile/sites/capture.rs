//! The kernel's counts by site → a [`Capture`]: one row per stack, values per kind, and the
//! stats a report must state (samples, truncated stacks, depth histogram, every loss).
//!
//! Pure: the maps are read by [`super::probes`]; this takes their contents, so it is tested
//! with hand-made sites.
use std::collections::HashMap;

use memtrace_common::sites::{NO_STACK, SiteCounts, SiteKey, site_kind};

use crate::profile::{Capture, CaptureStats, CapturedStack, SampleType, StackEnd};

/// The value columns, in [`Capture::sample_types`] order.
pub const SAMPLE_TYPES: [SampleType; 5] = [
    SampleType {
        name: "page_faults",
        unit: "count",
    },
    SampleType {
        name: "first_touch_bytes",
        unit: "bytes",
    },
    SampleType {
        name: "mmap_bytes",
        unit: "bytes",
    },
    SampleType {
        name: "brk_bytes",
        unit: "bytes",
    },
    SampleType {
        name: "mremap_bytes",
        unit: "bytes",
    },
];
const PAGE_FAULTS: usize = 0;
const FIRST_TOUCH_BYTES: usize = 1;
/// Flame graphs and the text list sort by first-touch bytes: what RSS grew by.
pub const DEFAULT_SAMPLE_TYPE: usize = FIRST_TOUCH_BYTES;

/// The column of a growth kind's bytes.
fn growth_column(kind: u32) -> Option<usize> {
    match kind {
        site_kind::MMAP => Some(2),
        site_kind::BRK => Some(3),
        site_kind::MREMAP => Some(4),
        _ => None,
    }
}

/// The kernel's stack depth limit (`PERF_MAX_STACK_DEPTH`, and `kernel.perf_event_max_stack`'s
/// default): a stack this deep was cut.
pub const MAX_STACK_DEPTH: usize = 127;

/// The kernel's loss and sample counters (`memtrace_common::sites::sites_stat`), summed over
/// CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub fault_samples: u64,
    pub fault_samples_other: u64,
    pub growth_calls: u64,
    pub user_stack_collisions: u64,
    pub user_stack_errors: u64,
    pub kernel_stack_collisions: u64,
    pub kernel_stack_errors: u64,
    pub sites_full: u64,
    pub brk_inflight_full: u64,
}

/// How the capture was taken, for its header.
#[derive(Clone, Debug)]
pub struct CaptureInfo {
    pub target: String,
    pub fault_period: u64,
    pub page_size: u64,
    pub started_unix_ms: u64,
    pub duration_ms: u64,
}

/// Where a stack came from in the stack map: its frames, leaf first, or why there are none.
pub type StackLookup<'a> = dyn Fn(i32) -> Option<Vec<u64>> + 'a;

/// The user stack of one site: the exact leaf, the wrapper's caller for growth calls, then the
/// frame-pointer walk's return addresses (its first entry is the leaf again).
fn user_frames(key: &SiteKey, walked: Option<&[u64]>) -> (Vec<u64>, StackEnd) {
    let mut frames = vec![key.ip];
    if key.caller != 0 {
        frames.push(key.caller);
    }
    let Some(walked) = walked else {
        let why = if key.user_stack_id == NO_STACK {
            "the user stack was lost (stack map collision or error, counted in lost)"
        } else {
            "the user stack was evicted from the stack map"
        };
        return (frames, StackEnd::Other(why.to_owned()));
    };
    let rest = match walked.split_first() {
        Some((&first, rest)) if first == key.ip => rest,
        _ => walked,
    };
    let rest = match rest.split_first() {
        Some((&first, rest)) if key.caller != 0 && first == key.caller => rest,
        _ => rest,
    };
    frames.extend_from_slice(rest);
    let end = if walked.len() >= MAX_STACK_DEPTH {
        StackEnd::DepthLimit
    } else {
        StackEnd::FramePointers
    };
    (frames, end)
}

/// The process name of a site, as the kernel saw it first.
fn comm_of(counts: &SiteCounts) -> String {
    let end = counts
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(counts.comm.len());
    String::from_utf8_lossy(&counts.comm[..end]).into_owned()
}

/// A capture and, per stack, how many events (fault samples, growth calls) it holds: what the
/// stats count, recomputed when a stack's end is restated ([`Sites::restate_ends`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Sites {
    pub capture: Capture,
    /// `events[i]`: the events of `capture.stacks[i]`.
    pub events: Vec<u64>,
}

impl Sites {
    /// Each stack's end as `end` says (e.g. `Complete` once its outermost frame is known to be
    /// a thread's first), and the truncation count again.
    pub fn restate_ends(&mut self, end: impl Fn(usize, &StackEnd) -> StackEnd) {
        for (i, stack) in self.capture.stacks.iter_mut().enumerate() {
            stack.user_end = end(i, &stack.user_end);
        }
        let lost = std::mem::take(&mut self.capture.stats.lost);
        self.capture.stats = stats_of(&self.capture.stacks, &self.events, lost);
    }
}

/// Samples, truncated stacks and the depth histogram of `stacks` (with `events` each).
fn stats_of(stacks: &[CapturedStack], events: &[u64], lost: Vec<(String, u64)>) -> CaptureStats {
    let mut stats = CaptureStats {
        lost,
        ..CaptureStats::default()
    };
    for (stack, &events) in stacks.iter().zip(events) {
        stats.samples += events;
        if stack.user_end.is_truncated() {
            stats.truncated_stacks += events;
        }
        *stats.depth_histogram.entry(stack.user.len()).or_default() += events;
    }
    stats
}

/// One row per (process, user stack, kernel stack), its values summed over the sites that walk
/// to it.
pub fn build(
    info: &CaptureInfo,
    sites: &[(SiteKey, SiteCounts)],
    stacks: &StackLookup<'_>,
    kernel: &KernelStats,
) -> Sites {
    let period = i64::try_from(info.fault_period).unwrap_or(i64::MAX);
    let page = i64::try_from(info.page_size).unwrap_or(4096);
    let mut rows: HashMap<RowKey, (CapturedStack, u64)> = HashMap::new();
    for (key, counts) in sites {
        let walked = (key.user_stack_id != NO_STACK)
            .then(|| stacks(key.user_stack_id))
            .flatten();
        let (user, user_end) = user_frames(key, walked.as_deref());
        let kernel_frames = if key.kernel_stack_id == NO_STACK {
            Vec::new()
        } else {
            stacks(key.kernel_stack_id).unwrap_or_default()
        };
        let events = i64::try_from(counts.events).unwrap_or(i64::MAX);
        let mut values = vec![0i64; SAMPLE_TYPES.len()];
        if key.kind == site_kind::FAULT {
            values[PAGE_FAULTS] = events.saturating_mul(period);
            values[FIRST_TOUCH_BYTES] = values[PAGE_FAULTS].saturating_mul(page);
        } else if let Some(column) = growth_column(key.kind) {
            values[column] = i64::try_from(counts.bytes).unwrap_or(i64::MAX);
        } else {
            continue;
        }
        let (row, row_events) = rows
            .entry((key.tgid, user.clone(), kernel_frames.clone()))
            .or_insert_with(|| {
                (
                    CapturedStack {
                        pid: key.tgid,
                        comm: comm_of(counts),
                        user,
                        user_end,
                        kernel: kernel_frames,
                        values: vec![0; SAMPLE_TYPES.len()],
                        labels: Vec::new(),
                    },
                    0,
                )
            });
        *row_events += counts.events;
        for (sum, value) in row.values.iter_mut().zip(values) {
            *sum = sum.saturating_add(value);
        }
    }
    let lost = vec![
        (
            "user stack map collisions".to_owned(),
            kernel.user_stack_collisions,
        ),
        ("user stack errors".to_owned(), kernel.user_stack_errors),
        (
            "kernel stack map collisions".to_owned(),
            kernel.kernel_stack_collisions,
        ),
        ("kernel stack errors".to_owned(), kernel.kernel_stack_errors),
        ("sites map full".to_owned(), kernel.sites_full),
        (
            "brk in-flight map full".to_owned(),
            kernel.brk_inflight_full,
        ),
    ];
    let mut rows: Vec<(CapturedStack, u64)> = rows.into_values().collect();
    rows.sort_by(|(a, _), (b, _)| {
        b.values[DEFAULT_SAMPLE_TYPE]
            .cmp(&a.values[DEFAULT_SAMPLE_TYPE])
            .then_with(|| {
                b.values
                    .iter()
                    .sum::<i64>()
                    .cmp(&a.values.iter().sum::<i64>())
            })
            .then_with(|| a.pid.cmp(&b.pid))
            .then_with(|| a.user.cmp(&b.user))
    });
    let (stacks, events): (Vec<CapturedStack>, Vec<u64>) = rows.into_iter().unzip();
    let stats = stats_of(&stacks, &events, lost);
    Sites {
        capture: Capture {
            target: info.target.clone(),
            sampling: sampling(info.fault_period),
            sample_types: SAMPLE_TYPES.to_vec(),
            default_sample_type: DEFAULT_SAMPLE_TYPE,
            stacks,
            stats,
            started_unix_ms: info.started_unix_ms,
            duration_ms: info.duration_ms,
        },
        events,
    }
}

/// A row of a capture: (pid, user frames, kernel frames).
pub type RowKey = (u32, Vec<u64>, Vec<u64>);

/// What a row held at the last live report: its values and events.
pub type Seen = HashMap<RowKey, (Vec<i64>, u64)>;

/// `now` less `last` (each row as the previous report saw it): the rows that grew, with what
/// they grew by, their stats; and what to subtract next time.
pub fn since(last: &Seen, now: &Sites) -> (Sites, Seen) {
    let mut next = HashMap::with_capacity(now.capture.stacks.len());
    let mut stacks = Vec::new();
    let mut events = Vec::new();
    for (stack, &now_events) in now.capture.stacks.iter().zip(&now.events) {
        let key = (stack.pid, stack.user.clone(), stack.kernel.clone());
        let (values, grew_by): (Vec<i64>, u64) = match last.get(&key) {
            Some((before, before_events)) => (
                stack
                    .values
                    .iter()
                    .zip(before.iter().chain(std::iter::repeat(&0)))
                    .map(|(now, before)| now - before)
                    .collect(),
                now_events.saturating_sub(*before_events),
            ),
            None => (stack.values.clone(), now_events),
        };
        next.insert(key, (stack.values.clone(), now_events));
        if values.iter().any(|&v| v != 0) {
            stacks.push(CapturedStack {
                values,
                ..stack.clone()
            });
            events.push(grew_by);
        }
    }
    let stats = stats_of(&stacks, &events, now.capture.stats.lost.clone());
    let delta = Sites {
        capture: Capture {
            stacks,
            stats,
            ..now.capture.clone()
        },
        events,
    };
    (delta, next)
}

/// The sampling, in words.
pub fn sampling(period: u64) -> String {
    let every = if period == 1 {
        "every page fault".to_owned()
    } else {
        format!("one page fault in {period} per CPU (counts are samples × {period})")
    };
    format!("{every}; every mmap/brk/mremap that grew the address space")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn histogram(pairs: &[(usize, u64)]) -> BTreeMap<usize, u64> {
        pairs.iter().copied().collect()
    }

    fn info(period: u64) -> CaptureInfo {
        CaptureInfo {
            target: "pid 42 (x)".into(),
            fault_period: period,
            page_size: 4096,
            started_unix_ms: 1,
            duration_ms: 2,
        }
    }

    fn counts(events: u64, bytes: u64) -> SiteCounts {
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"touch");
        SiteCounts {
            events,
            bytes,
            comm,
        }
    }

    fn key(kind: u32, stack: i32, ip: u64, caller: u64) -> SiteKey {
        SiteKey {
            tgid: 42,
            kind,
            user_stack_id: stack,
            kernel_stack_id: NO_STACK,
            ip,
            caller,
        }
    }

    #[test]
    fn faults_are_weighted_by_the_period_and_growth_by_bytes() {
        let sites = [
            (key(site_kind::FAULT, 1, 0x100, 0), counts(3, 0)),
            (key(site_kind::MMAP, 2, 0x900, 0x200), counts(2, 8192)),
        ];
        let stacks = |id: i32| match id {
            1 => Some(vec![0x100, 0x300, 0x400]),
            // The wrapper's frame-pointer walk: the wrapper's ip, then the caller's caller.
            2 => Some(vec![0x900, 0x500]),
            _ => None,
        };
        let capture = build(&info(1000), &sites, &stacks, &KernelStats::default()).capture;
        assert_eq!(capture.default_sample_type, 1);
        let fault = &capture.stacks[0];
        assert_eq!(fault.user, vec![0x100, 0x300, 0x400]);
        assert_eq!(fault.values, vec![3000, 3000 * 4096, 0, 0, 0]);
        assert_eq!(fault.comm, "touch");
        let mmap = &capture.stacks[1];
        assert_eq!(mmap.user, vec![0x900, 0x200, 0x500]);
        assert_eq!(mmap.values, vec![0, 0, 8192, 0, 0]);
        assert_eq!(capture.stats.samples, 5);
        assert_eq!(capture.stats.truncated_stacks, 5);
        assert_eq!(capture.stats.depth_histogram, histogram(&[(3, 5)]));
    }

    #[test]
    fn a_lost_stack_keeps_its_exact_leaf_and_says_why() {
        let sites = [(key(site_kind::BRK, NO_STACK, 0x900, 0x200), counts(1, 4096))];
        let capture = build(&info(1), &sites, &|_| None, &KernelStats::default()).capture;
        let row = &capture.stacks[0];
        assert_eq!(row.user, vec![0x900, 0x200]);
        assert!(matches!(&row.user_end, StackEnd::Other(why) if why.contains("collision")));
        assert_eq!(row.values[3], 4096);
    }

    #[test]
    fn sites_walking_to_one_stack_are_one_row_and_a_full_walk_is_a_depth_limit() {
        let deep: Vec<u64> = (0..MAX_STACK_DEPTH as u64).map(|i| 0x1000 + i).collect();
        let sites = [
            (key(site_kind::FAULT, 7, 0x1000, 0), counts(1, 0)),
            (key(site_kind::FAULT, 7, 0x1000, 0), counts(2, 0)),
        ];
        let capture = build(
            &info(10),
            &sites,
            &|_| Some(deep.clone()),
            &KernelStats::default(),
        )
        .capture;
        assert_eq!(capture.stacks.len(), 1);
        assert_eq!(capture.stacks[0].values[0], 30);
        assert_eq!(capture.stacks[0].user_end, StackEnd::DepthLimit);
        assert_eq!(
            capture.stats.depth_histogram,
            histogram(&[(MAX_STACK_DEPTH, 3)])
        );
    }

    #[test]
    fn a_live_report_shows_the_growth_since_the_last() {
        let stacks = |_| Some(vec![0x100]);
        let first = build(
            &info(10),
            &[(key(site_kind::FAULT, 1, 0x100, 0), counts(2, 0))],
            &stacks,
            &KernelStats::default(),
        );
        let (delta, last) = since(&HashMap::new(), &first);
        assert_eq!(delta.capture.stacks[0].values[0], 20);
        assert_eq!(delta.capture.stats.samples, 2);
        let second = build(
            &info(10),
            &[
                (key(site_kind::FAULT, 1, 0x100, 0), counts(5, 0)),
                (key(site_kind::MMAP, 2, 0x900, 0), counts(1, 4096)),
            ],
            &stacks,
            &KernelStats::default(),
        );
        let (delta, _) = since(&last, &second);
        assert_eq!(delta.capture.stacks.len(), 2);
        let fault = delta
            .capture
            .stacks
            .iter()
            .position(|s| s.user == vec![0x100])
            .unwrap();
        assert_eq!(delta.capture.stacks[fault].values[0], 30);
        assert_eq!(delta.events[fault], 3);
        assert_eq!(delta.capture.stats.samples, 4);
        let (unchanged, _) = since(&since(&HashMap::new(), &second).1, &second);
        assert!(unchanged.capture.stacks.is_empty());
        assert_eq!(unchanged.capture.stats.samples, 0);
    }

    #[test]
    fn a_stack_restated_complete_is_no_longer_counted_truncated() {
        let sites = [
            (key(site_kind::FAULT, 1, 0x100, 0), counts(3, 0)),
            (key(site_kind::FAULT, 2, 0x200, 0), counts(1, 0)),
        ];
        let stacks = |id: i32| {
            Some(if id == 1 {
                vec![0x100, 0x300]
            } else {
                vec![0x200]
            })
        };
        let mut sites = build(&info(1), &sites, &stacks, &KernelStats::default());
        assert_eq!(sites.capture.stats.truncated_stacks, 4);
        let deep = sites
            .capture
            .stacks
            .iter()
            .position(|s| s.user.len() == 2)
            .unwrap();
        sites.restate_ends(|i, end| {
            if i == deep {
                StackEnd::Complete
            } else {
                end.clone()
            }
        });
        assert_eq!(sites.capture.stacks[deep].user_end, StackEnd::Complete);
        assert_eq!(sites.capture.stats.truncated_stacks, 1);
        assert_eq!(sites.capture.stats.samples, 4);
        assert_eq!(sites.capture.stats.lost.len(), 6);
    }

    #[test]
    fn every_loss_is_named_even_when_zero() {
        let kernel = KernelStats {
            user_stack_collisions: 4,
            sites_full: 1,
            ..KernelStats::default()
        };
        let capture = build(&info(1), &[], &|_| None, &kernel).capture;
        assert!(
            capture
                .stats
                .lost
                .contains(&("user stack map collisions".into(), 4))
        );
        assert!(capture.stats.lost.contains(&("sites map full".into(), 1)));
        assert_eq!(capture.stats.lost.len(), 6);
    }
}
