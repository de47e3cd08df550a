//! What a collector hands to reporting: raw stacks (addresses) with their values.
//!
//! The collectors ([`super::sites`], [`super::alloc`]) fill it; [`super::symbolize`] turns the
//! addresses into frames while the process still runs; [`super::report`] writes it out. Values
//! are columns like pprof's sample types: `alloc_space` bytes, `inuse_objects`, page faults…

/// One value column: its name and unit, as pprof names them (`alloc_space`/`bytes`,
/// `inuse_objects`/`count`, `page_faults`/`count`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleType {
    pub name: &'static str,
    pub unit: &'static str,
}

/// Why a user stack ends where it does: said in every report, never shown as wrong frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackEnd {
    /// Unwound to the thread's first frame.
    Complete,
    /// The depth limit of the capture was reached.
    DepthLimit,
    /// The stack snapshot copied from the kernel ended before the next frame.
    SnapshotEnd,
    /// No unwind information for this address (a stripped binary without `.eh_frame`, JIT code,
    /// an anonymous mapping): the frame is kept, the walk stops.
    NoUnwindInfo { address: u64 },
    /// Frame-pointer walk only (the kernel's `bpf_get_stackid`), which stops at the first frame
    /// built without frame pointers.
    FramePointers,
    /// Anything else, said in words.
    Other(String),
}

impl StackEnd {
    /// The snake_case name reports use (`complete`, `no_unwind_info`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::DepthLimit => "depth_limit",
            Self::SnapshotEnd => "snapshot_end",
            Self::NoUnwindInfo { .. } => "no_unwind_info",
            Self::FramePointers => "frame_pointers",
            Self::Other(_) => "other",
        }
    }

    /// What the name leaves out: the address without unwind information, or the words of
    /// [`StackEnd::Other`].
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::NoUnwindInfo { address } => {
                Some(format!("no unwind information at {address:#x}"))
            }
            Self::Other(words) => Some(words.clone()),
            _ => None,
        }
    }

    /// Whether the stack may miss outer frames.
    pub fn is_truncated(&self) -> bool {
        !matches!(self, Self::Complete)
    }
}

/// One stack and its values (same order as [`Capture::sample_types`]).
#[derive(Clone, Debug, PartialEq)]
pub struct CapturedStack {
    pub pid: u32,
    /// The process name, for reports over several processes.
    pub comm: String,
    /// User addresses, leaf first. The leaf is the exact site (the faulting or calling
    /// instruction's address); the others are return addresses, as captured (the symbolizer
    /// looks up `address - 1` for those, so a call at the end of a function is not attributed
    /// to the next one).
    pub user: Vec<u64>,
    pub user_end: StackEnd,
    /// Kernel addresses, leaf first (empty when not captured).
    pub kernel: Vec<u64>,
    pub values: Vec<i64>,
    /// Numeric labels (pprof `num_label`s) such as the oldest outstanding allocation's age:
    /// shown as columns in text and JSON, not summed.
    pub labels: Vec<(&'static str, i64)>,
}

/// Counts a report must state: how many samples, how many had truncated stacks, how deep the
/// stacks went, and every loss.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaptureStats {
    pub samples: u64,
    pub truncated_stacks: u64,
    /// Stack depth (user frames) → samples.
    pub depth_histogram: std::collections::BTreeMap<usize, u64>,
    /// Named loss counters (kernel map full, ring buffer full, stack map collisions…): drops
    /// are data.
    pub lost: Vec<(String, u64)>,
}

impl CaptureStats {
    /// Counts `samples` samples taken with `stack`: its user depth, and whether it is truncated.
    pub fn record(&mut self, stack: &CapturedStack, samples: u64) {
        self.samples += samples;
        if stack.user_end.is_truncated() {
            self.truncated_stacks += samples;
        }
        *self.depth_histogram.entry(stack.user.len()).or_default() += samples;
    }
}

/// A collector's result over an interval or the whole run.
#[derive(Clone, Debug, PartialEq)]
pub struct Capture {
    /// What was profiled, for the report's title: `pid 1234 (redis-server)`, `cgroup /x`, `all`.
    pub target: String,
    /// How samples were taken, in words: `every 1,000th page fault`, `byte-sampled, mean one
    /// per 512 KiB`, `every call`.
    pub sampling: String,
    pub sample_types: Vec<SampleType>,
    /// The column flame graphs and the text top list sort by.
    pub default_sample_type: usize,
    pub stacks: Vec<CapturedStack>,
    pub stats: CaptureStats,
    pub started_unix_ms: u64,
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_samples_depths_and_truncated_stacks() {
        let stack = |depth: usize, user_end| CapturedStack {
            pid: 1,
            comm: "x".to_owned(),
            user: vec![0x1000; depth],
            user_end,
            kernel: vec![],
            values: vec![1],
            labels: vec![],
        };
        let mut stats = CaptureStats::default();
        stats.record(&stack(4, StackEnd::Complete), 10);
        stats.record(&stack(4, StackEnd::Complete), 5);
        stats.record(&stack(1, StackEnd::SnapshotEnd), 2);
        assert_eq!(stats.samples, 17);
        assert_eq!(stats.truncated_stacks, 2);
        assert_eq!(
            stats.depth_histogram,
            std::collections::BTreeMap::from([(1, 2), (4, 15)])
        );
    }
}
