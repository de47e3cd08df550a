//! Types of the growth-site profiler (`memtrace-sites` eBPF object) shared with userspace.
//!
//! The object counts, in the kernel, by site: every sampled page fault and every mmap/brk/mremap
//! growth adds to the [`SiteCounts`] of its [`SiteKey`] (process, kind, stack ids, exact leaf),
//! so nothing is sent per event; userspace reads the `SITES` hash and the `SITE_STACKS` stack
//! map when it reports.

use crate::{COMM_LEN, CgroupOffsets};

/// [`SiteKey::kind`]: what grew memory at the site.
pub mod site_kind {
    /// A sampled page fault (perf software event `PAGE_FAULTS`, one in `fault_period`).
    pub const FAULT: u32 = 0;
    /// A successful mmap: its page-aligned length.
    pub const MMAP: u32 = 1;
    /// A brk that moved the break up: the bytes it grew.
    pub const BRK: u32 = 2;
    /// A successful mremap that grew a mapping: new minus old page-aligned length.
    pub const MREMAP: u32 = 3;
    /// One past the largest kind.
    pub const COUNT: u32 = 4;
}

/// [`SitesConfig::target`]: which processes are profiled.
pub mod target {
    /// Every process but memtrace itself ([`super::SitesConfig::self_tgid`]).
    pub const ALL: u32 = 0;
    /// The tgids in `TARGET_PIDS`.
    pub const PIDS: u32 = 1;
    /// Tasks whose memory cgroup id (read through [`super::SitesConfig::cgroup`]) is in
    /// `TARGET_CGROUPS`: the cgroup and its descendants, kept up to date by userspace.
    pub const CGROUP: u32 = 2;
}

/// Bits of [`SitesConfig::flags`].
pub mod sites_flag {
    /// Also take the kernel stack of each sample.
    pub const KERNEL_STACKS: u32 = 1;
}

/// Indexes of the per-CPU `SITES_STATS` counters: samples taken and every loss.
pub mod sites_stat {
    /// Page-fault samples of the target (the perf event fired for a profiled task).
    pub const FAULT_SAMPLES: u32 = 0;
    /// Growth calls of the target counted (mmap, brk, mremap).
    pub const GROWTH_CALLS: u32 = 1;
    /// `bpf_get_stackid` found its bucket taken by another stack (`-EEXIST`): the sample is
    /// kept with its exact leaf and no deeper user stack.
    pub const USER_STACK_COLLISIONS: u32 = 2;
    /// `bpf_get_stackid` failed otherwise for the user stack (`-EFAULT`: nothing to walk,
    /// `-ENOMEM`…).
    pub const USER_STACK_ERRORS: u32 = 3;
    pub const KERNEL_STACK_COLLISIONS: u32 = 4;
    pub const KERNEL_STACK_ERRORS: u32 = 5;
    /// `SITES` was full: the sample is lost.
    pub const SITES_FULL: u32 = 6;
    /// `BRK_INFLIGHT` was full: a brk call's growth is lost.
    pub const BRK_INFLIGHT_FULL: u32 = 7;
    /// The perf event fired for a task outside the target (the cost of a system-wide counter).
    pub const FAULT_SAMPLES_OTHER: u32 = 8;
    /// Number of slots.
    pub const SLOTS: u32 = 9;
}

/// Map and global names, shared so userspace opens exactly what the kernel side declares.
pub mod sites_maps {
    pub const SITES: &str = "SITES";
    pub const SITE_STACKS: &str = "SITE_STACKS";
    pub const SITES_STATS: &str = "SITES_STATS";
    pub const TARGET_PIDS: &str = "TARGET_PIDS";
    pub const TARGET_CGROUPS: &str = "TARGET_CGROUPS";
    pub const BRK_INFLIGHT: &str = "BRK_INFLIGHT";
    /// The read-only global holding [`super::SitesConfig`].
    pub const SITES_CONFIG: &str = "SITES_CONFIG";
}

/// Program names: the contract with the loader.
pub mod sites_programs {
    pub const FAULT_SAMPLE: &str = "sites_fault_sample";
    pub const MMAP_EXIT: &str = "sites_mmap_exit";
    pub const BRK_ENTER: &str = "sites_brk_enter";
    pub const BRK_EXIT: &str = "sites_brk_exit";
    pub const MREMAP_EXIT: &str = "sites_mremap_exit";
}

/// A `bpf_get_stackid` result that is no stack id: the user or kernel stack is absent (not asked
/// for, or the call failed, counted in `SITES_STATS`).
pub const NO_STACK: i32 = -1;

/// The read-only configuration of the object (a global the loader overrides).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SitesConfig {
    /// A [`target`] value.
    pub target: u32,
    /// [`sites_flag`] bits.
    pub flags: u32,
    /// memtrace's own tgid, never profiled with [`target::ALL`].
    pub self_tgid: u32,
    pub page_size: u32,
    /// `task_struct.mm` (from vmlinux BTF): the brk programs read `mm->brk` at entry.
    pub task_mm: u32,
    /// `mm_struct.brk`.
    pub mm_brk: u32,
    /// The way to a task's memory cgroup id (see [`CgroupOffsets`]), for [`target::CGROUP`].
    pub cgroup: CgroupOffsets,
}
const _: () = assert!(size_of::<SitesConfig>() == 6 * 4 + 24);

impl SitesConfig {
    pub const DEFAULT: Self = Self {
        target: target::ALL,
        flags: 0,
        self_tgid: 0,
        page_size: 4096,
        task_mm: crate::FIELD_ABSENT,
        mm_brk: crate::FIELD_ABSENT,
        cgroup: CgroupOffsets::ABSENT,
    };
}

/// One site: a process, what it did, and where. Keyed by the exact leaf too, because a
/// frame-pointer walk (`bpf_get_stackid`) loses the caller of a function built without frame
/// pointers: `ip` is the faulting instruction (a fault) or the instruction after the `syscall`
/// in the libc wrapper (a growth call, or a fault taken in the kernel during a syscall), and
/// `caller` the return address at the user stack pointer there (the wrappers are leaves that
/// build no frame, so it is the wrapper's caller); 0 for a fault taken in user mode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SiteKey {
    pub tgid: u32,
    /// A [`site_kind`] value.
    pub kind: u32,
    /// Stack id in `SITE_STACKS`, or [`NO_STACK`].
    pub user_stack_id: i32,
    /// Stack id in `SITE_STACKS`, or [`NO_STACK`] (not asked for, or a user-mode fault, whose
    /// kernel path is always the page-fault handler).
    pub kernel_stack_id: i32,
    pub ip: u64,
    pub caller: u64,
}
const _: () = assert!(size_of::<SiteKey>() == 4 * 4 + 2 * 8);

/// What happened at one site.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteCounts {
    /// Samples (faults) or calls (growth).
    pub events: u64,
    /// Bytes of address space the growth calls added (0 for faults: userspace estimates).
    pub bytes: u64,
    /// The process's name when the site was first seen.
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<SiteCounts>() == 2 * 8 + COMM_LEN);

#[cfg(feature = "user")]
mod pod {
    use super::{SiteCounts, SiteKey, SitesConfig};

    // SAFETY: `repr(C)`, integers and byte arrays only, no padding (sizes asserted above).
    unsafe impl aya::Pod for SitesConfig {}
    unsafe impl aya::Pod for SiteKey {}
    unsafe impl aya::Pod for SiteCounts {}
}
