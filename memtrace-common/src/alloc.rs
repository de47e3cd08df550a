//! Types of the allocator profiler (`memtrace-alloc` eBPF object) shared with userspace.
//!
//! The kernel half keeps, per allocation site, exact (unsampled mode) or weighted (sampled mode)
//! counters in `ALLOC_STACKS`, every live allocation it took in `ALLOC_OUTSTANDING`, and sends
//! one [`AllocSample`] with a user-stack snapshot per sampled allocation (sampled mode) or per
//! new site (unsampled mode) for userspace to unwind from `.eh_frame`.

/// Bytes of user stack copied from `sp` into an [`AllocSample`]. 16 KiB holds the frames of the
/// deep C and C++ servers this is for (frames of 100 to 300 bytes: 50 to 150 frames) while one
/// record stays small enough for a ring of a few MiB to absorb bursts; where less stack exists
/// above `sp` (a thread's first frames) the program retries with halves down to 512 bytes.
pub const STACK_COPY: usize = 16 * 1024;

/// Entries of [`SAMPLE_THRESHOLDS`]: `1 - exp(-x)` for `x = size / rate` in `[0, SAMPLE_X_MAX)`.
pub const SAMPLE_TABLE_LEN: usize = 1024;
/// `x` past which every allocation is taken (`exp(-24) * 2^32 < 1`).
pub const SAMPLE_X_MAX: u64 = 24;
/// A threshold that takes every allocation (`prandom_u32 < 2^32`).
pub const THRESHOLD_ALWAYS: u64 = 1 << 32;

/// Map and global names, the contract between the object and `memtrace/src/profile/alloc`.
pub mod names {
    pub const CONFIG: &str = "ALLOC_CONFIG";
    pub const STACKS: &str = "ALLOC_STACKS";
    pub const STACK_TRACES: &str = "ALLOC_STACK_TRACES";
    pub const OUTSTANDING: &str = "ALLOC_OUTSTANDING";
    pub const INFLIGHT: &str = "ALLOC_INFLIGHT";
    pub const SAMPLES: &str = "ALLOC_SAMPLES";
    pub const LOSSES: &str = "ALLOC_LOSSES";
    /// An array of one `u32`: non-zero while `--duty-cycle` pauses between bursts.
    pub const PAUSED: &str = "ALLOC_PAUSED";
}

/// Bits of [`AllocConfig::flags`].
pub mod flag {
    /// Every call is taken (exact counts); otherwise byte-based sampling.
    pub const UNSAMPLED: u32 = 1 << 0;
    /// Allocation sites only (`--duty-cycle`): the entry probes count each taken allocation on
    /// its site at once; there is no return or free probe, so no pointer, no outstanding
    /// allocation and no in-use bytes.
    pub const SITES_ONLY: u32 = 1 << 1;
}

/// Indexes of `ALLOC_LOSSES` (a per-CPU array of `u64`). Not all are losses in every mode: in
/// sampled mode most frees are of allocations that were not taken, so [`loss::FREE_UNKNOWN`] is
/// expected there.
pub mod loss {
    /// A sample record could not be reserved (ring full): the site keeps its counts, the
    /// snapshot for deep unwinding is lost.
    pub const RING_FULL: u32 = 0;
    /// `ALLOC_OUTSTANDING` was full: the allocation is counted but its free cannot be matched.
    pub const OUTSTANDING_FULL: u32 = 1;
    /// `ALLOC_STACKS` was full: the allocation was not counted at all.
    pub const STACKS_FULL: u32 = 2;
    /// `bpf_get_stackid` failed (stack map full or a collision with `BPF_F_FAST_STACK_CMP`
    /// off): the site is keyed by its leaf only.
    pub const STACK_ID: u32 = 3;
    /// A free of a pointer not in `ALLOC_OUTSTANDING` (allocated before attaching, not sampled,
    /// or dropped when the map was full).
    pub const FREE_UNKNOWN: u32 = 4;
    /// `ALLOC_INFLIGHT` (call entry → return, per thread) was full.
    pub const INFLIGHT_FULL: u32 = 5;
    /// A call entry found its thread's previous call still in flight (an allocator calling
    /// another, as glibc's realloc(NULL, n) does malloc): the inner call is attributed to the
    /// outer call's caller. Not a loss.
    pub const NESTED: u32 = 6;
    /// Allocations taken (not a loss; the denominator).
    pub const TAKEN: u32 = 7;
    /// Frees matched to an outstanding allocation (not a loss).
    pub const FREES_MATCHED: u32 = 8;
    pub const SLOTS: u32 = 16;
}

/// The read-only global `ALLOC_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocConfig {
    /// The profiled process: programs of other processes (a fork child that hit an inherited
    /// breakpoint before the kernel removed it) return at once.
    pub tgid: u32,
    /// [`flag`] bits.
    pub flags: u32,
    /// The mean bytes between samples (`--sample-rate`).
    pub sample_rate: u64,
    /// `x = size * SAMPLE_TABLE_LEN / x_divisor` indexes [`SAMPLE_THRESHOLDS`]:
    /// `x_divisor = rate * SAMPLE_X_MAX`.
    pub x_divisor: u64,
    /// Below `linear_below` bytes (the table's first bucket) `p = size / rate` is used instead
    /// of the table (`1 - exp(-x)` and `x` differ by under 1.2 % there).
    pub linear_below: u64,
}
const _: () = assert!(size_of::<AllocConfig>() == 2 * 4 + 3 * 8);

/// The read-only global `ALLOC_THRESHOLDS`: entry `i` is `p * 2^32` for the upper end of
/// bucket `i`, `p = 1 - exp(-x)`. A sample is taken when `prandom_u32() < threshold`.
pub type SampleThresholds = [u64; SAMPLE_TABLE_LEN];
pub const SAMPLE_THRESHOLDS: &str = "ALLOC_THRESHOLDS";

/// The probability threshold (`p * 2^32`) the kernel uses for an allocation of `size` bytes:
/// the one place both halves compute it (userspace weights each sample by `2^32 / threshold`).
/// `table(i)` reads entry `i` of [`SAMPLE_THRESHOLDS`] (the kernel reads it volatile: a
/// read-only global the compiler must not fold to its initial zeros).
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "BPF: one copy per program, no BPF-to-BPF call"
)]
pub fn threshold_for(config: &AllocConfig, table: impl Fn(usize) -> u64, size: u64) -> u64 {
    if config.flags & flag::UNSAMPLED != 0 {
        return THRESHOLD_ALWAYS;
    }
    // Never zero once configured; checked so that no division can panic (in BPF a panic path
    // is an unreachable end the verifier rejects).
    if config.sample_rate == 0 || config.x_divisor == 0 {
        return THRESHOLD_ALWAYS;
    }
    if size < config.linear_below {
        // p = size / rate, at least one in 2^32.
        let threshold = (size << 32) / config.sample_rate;
        return if threshold == 0 { 1 } else { threshold };
    }
    // `size >= x_divisor` is `index >= SAMPLE_TABLE_LEN`, checked first so the product cannot
    // overflow (and needs no 128-bit multiply, which BPF lacks).
    if size >= config.x_divisor {
        return THRESHOLD_ALWAYS;
    }
    let index = size * SAMPLE_TABLE_LEN as u64 / config.x_divisor;
    #[expect(clippy::cast_possible_truncation, reason = "below SAMPLE_TABLE_LEN")]
    table(index as usize)
}

/// A site: the caller's return address (the exact leaf, read at the allocator's first
/// instruction where `*(u64 *)sp` is it) and the kernel's frame-pointer stack id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackKey {
    pub return_address: u64,
    /// `bpf_get_stackid(BPF_F_USER_STACK)` into `ALLOC_STACK_TRACES`, or [`NO_STACK_ID`].
    pub stack_id: u32,
    pub reserved: u32,
}
const _: () = assert!(size_of::<StackKey>() == 8 + 2 * 4);
pub const NO_STACK_ID: u32 = u32::MAX;

/// `ALLOC_STACKS` values. Sampled mode weights each sample by `1/p`: bytes by
/// `size * 2^32 / threshold`, objects in units of 2^-16 ([`OBJECT_UNIT`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCounts {
    pub alloc_bytes: u64,
    /// Objects × [`OBJECT_UNIT`].
    pub alloc_objects: u64,
    pub free_bytes: u64,
    /// Objects × [`OBJECT_UNIT`].
    pub free_objects: u64,
    /// Allocations actually taken at this site (unweighted).
    pub samples: u64,
}
const _: () = assert!(size_of::<StackCounts>() == 5 * 8);
/// Fixed-point unit of object counts (sampled objects weigh `2^16 * 2^32 / threshold`).
pub const OBJECT_UNIT: u64 = 1 << 16;

/// `ALLOC_OUTSTANDING` keys: a live allocation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OutstandingKey {
    pub tgid: u32,
    pub reserved: u32,
    pub pointer: u64,
}
const _: () = assert!(size_of::<OutstandingKey>() == 4 + 4 + 8);

/// `ALLOC_OUTSTANDING` values.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outstanding {
    pub stack: StackKey,
    /// Requested bytes.
    pub size: u64,
    /// Weighted bytes and objects added to the site (removed again by the free).
    pub weighted_bytes: u64,
    pub weighted_objects: u64,
    /// `bpf_ktime_get_ns()` at the allocation (`CLOCK_MONOTONIC`).
    pub ts_ns: u64,
}
const _: () = assert!(size_of::<Outstanding>() == size_of::<StackKey>() + 4 * 8);

/// Kinds of call, [`Inflight::kind`].
pub mod call {
    pub const MALLOC: u32 = 0;
    /// realloc family: `old` is freed when the call returns non-null (or the size was 0).
    pub const REALLOC: u32 = 1;
    /// `posix_memalign`: the pointer is read from `memptr` (`old`) when it returns 0.
    pub const POSIX_MEMALIGN: u32 = 2;
}

/// `ALLOC_INFLIGHT` values (key: the thread's `pid_tgid`): what the entry probe saw. With
/// [`flag::SITES_ONLY`], only a `realloc(NULL, n)` is kept, until the thread's next allocator
/// entry: glibc's realloc jumps to malloc for it (same return address, same size), and that
/// malloc is not counted a second time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflight {
    pub size: u64,
    /// realloc's old pointer, `posix_memalign`'s `memptr`.
    pub old: u64,
    pub return_address: u64,
    /// `p * 2^32` ([`threshold_for`]); 0: not taken (sampled mode), only the old pointer of a
    /// realloc matters.
    pub threshold: u64,
    pub kind: u32,
    pub reserved: u32,
}
const _: () = assert!(size_of::<Inflight>() == 4 * 8 + 2 * 4);

/// `ALLOC_SAMPLES` ring records: one sampled allocation (sampled mode) or the first allocation
/// of a new site (unsampled mode), with the registers as the caller has them after the return
/// (taken at the return, or at the entry with the return address popped) and `stack_len` bytes
/// of the stack from `sp`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocSample {
    pub tgid: u32,
    pub tid: u32,
    pub stack: StackKey,
    /// 0 with [`flag::SITES_ONLY`] (the entry probe cannot know it).
    pub pointer: u64,
    pub size: u64,
    pub threshold: u64,
    pub ts_ns: u64,
    /// Registers as the caller sees them after the call: `ip` is the return address.
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Bytes of [`Self::stack`] copied (0 if none could be).
    pub stack_len: u32,
    /// 1: the record opens a new site (unsampled mode's first call of it).
    pub new_site: u32,
    pub stack_bytes: [u8; STACK_COPY],
}
const _: () =
    assert!(size_of::<AllocSample>() == 2 * 4 + size_of::<StackKey>() + 7 * 8 + 2 * 4 + STACK_COPY);

#[cfg(feature = "user")]
mod pod {
    use super::{
        AllocConfig, AllocSample, Inflight, Outstanding, OutstandingKey, StackCounts, StackKey,
    };
    // SAFETY: `#[repr(C)]`, integers and byte arrays only, no padding (asserted above).
    unsafe impl aya::Pod for AllocConfig {}
    unsafe impl aya::Pod for StackKey {}
    unsafe impl aya::Pod for StackCounts {}
    unsafe impl aya::Pod for OutstandingKey {}
    unsafe impl aya::Pod for Outstanding {}
    unsafe impl aya::Pod for Inflight {}
    unsafe impl aya::Pod for AllocSample {}
}
