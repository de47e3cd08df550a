//! RSS by type. `curr` says whether the mm is the current task's; otherwise (reclaim, the OOM
//! reaper, migration) the owner is found through `MM_OWNER`, and entries are never created, so a
//! process tearing down its mm after exit cannot resurrect its entry.
//!
//! `kmem:rss_stat` fires on every RSS counter change, i.e. on nearly every page fault, so it is as
//! hot as the fault hook. The raw-tracepoint variant (`rss_stat_raw`, used when vmlinux BTF gives
//! the struct layout) skips the kernel's trace-record marshalling (hashing the mm pointer, reading
//! the counter, filling a perf buffer) and reads the one counter it needs itself. The classic
//! variant (`rss_stat`) is the fallback for kernels without BTF.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use memtrace_common::{ProcStats, loss, rss_flag, rss_member};

use crate::{
    helpers::{count_loss, current, field, stats_entry},
    maps::{CONFIG, MM_OWNER, PROC_STATS, RSS_LAST, offset},
};

/// See `rss_stat_raw`: at most this many consecutive updates of one (mm, type) on one CPU are
/// folded into one.
const RSS_SAMPLE_EVERY: u64 = 32;

/// `RSS_LAST`'s value: the last (mm, type) updated on this CPU and how many updates since were
/// skipped.
#[repr(C)]
pub struct RssLast {
    mm: u64,
    member: u64,
    skipped: u64,
}

/// Store `bytes` as the RSS of type `member` in a process's counters.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "`member` is masked below `rss_member::COUNT`"
)]
fn set_rss(stats: *mut ProcStats, member: u64, bytes: u64) {
    // The mask (COUNT is 4) is a bound the verifier can see whatever the compiler makes of the
    // callers' checks; an index it cannot bound is refused as an unbounded map-value access.
    let index = member as usize & (rss_member::COUNT - 1);
    // SAFETY: map value pointer; `index` < COUNT.
    unsafe { *(&raw mut (*stats).rss).cast::<u64>().add(index) = bytes };
}

/// RSS in bytes from a counter in pages (`percpu_counter_read_positive`: negative reads as 0).
#[inline(always)]
fn pages_to_bytes(pages: i64) -> u64 {
    pages.max(0).cast_unsigned() * u64::from(CONFIG.load().page_size)
}

/// Forget that `mm_key` belongs to `tgid` (its mm changed, or it exited), unless another
/// process owns that key by now.
#[inline(always)]
pub fn release_mm_owner(mm_key: u64, tgid: u32) {
    if mm_key != 0
        // SAFETY: map value pointer.
        && MM_OWNER.get_ptr(mm_key).is_some_and(|owner| unsafe { *owner } == tgid)
    {
        let _ = MM_OWNER.remove(mm_key);
    }
}

/// Record `bytes` as the RSS of type `member` of the mm identified by `mm_key`.
#[inline(always)]
fn rss_update(mm_key: u64, curr: bool, member: u64, bytes: u64) {
    if member >= rss_member::COUNT as u64 {
        return;
    }
    let (stats, tgid) = if curr {
        let (_, tgid) = current();
        (stats_entry(tgid), tgid)
    } else {
        match MM_OWNER.get_ptr(mm_key) {
            // SAFETY: map value pointer.
            Some(owner) => {
                let owner = unsafe { *owner };
                (PROC_STATS.get_ptr_mut(owner), owner)
            }
            None => return,
        }
    };
    let Some(stats) = stats else {
        return;
    };
    set_rss(stats, member, bytes);
    // SAFETY (block): map value pointer.
    unsafe {
        if curr && (*stats).mm_key != mm_key {
            release_mm_owner((*stats).mm_key, tgid);
            if MM_OWNER.insert(mm_key, tgid, 0).is_err() {
                count_loss(loss::MAP_MM_OWNER);
            }
            (*stats).mm_key = mm_key;
        }
    }
}

#[tracepoint(category = "kmem", name = "rss_stat")]
pub fn rss_stat(ctx: TracePointContext) -> u32 {
    let offsets = offset!(rss);
    let (Some(mm_id), Some(curr), Some(member), Some(size)) = (
        field::<u32>(&ctx, offsets.mm_id),
        field::<u32>(&ctx, offsets.curr),
        field::<i32>(&ctx, offsets.member),
        field::<i64>(&ctx, offsets.size),
    ) else {
        return 0;
    };
    rss_update(
        u64::from(mm_id),
        curr != 0,
        // A negative member is out of range as a u64 too.
        i64::from(member).cast_unsigned(),
        size.max(0).cast_unsigned(),
    );
    0
}

/// `TP_PROTO(struct mm_struct *mm, int member)`: the same value the classic record carries
/// (`percpu_counter_read_positive(&mm->rss_stat[member])` pages), read directly.
#[raw_tracepoint(tracepoint = "rss_stat")]
pub fn rss_stat_raw(ctx: RawTracePointContext) -> i32 {
    let o = offset!(rss);
    let mm: u64 = ctx.arg(0);
    let member: u64 = ctx.arg(1);
    if member >= rss_member::COUNT as u64 || mm == 0 {
        return 0;
    }
    // During a burst of changes to one (mm, type) on one CPU (a process faulting in memory),
    // record one in RSS_SAMPLE_EVERY. The value recorded is `percpu_counter_read`, which the
    // kernel itself lets lag the true RSS by up to a per-CPU batch (dozens of pages per CPU), so
    // this adds error of the same order, and a skipped call costs a per-CPU array slot instead
    // of a hash lookup and a kernel read. The first change of a burst is always recorded.
    // Before Linux 6.2 (atomic counters) every call already carries a thread's batch of up to 64
    // faults: thinning those would lag by thousands of pages, and they are rare enough to keep.
    if o.flags & rss_flag::ATOMIC_COUNTERS == 0
        && let Some(last) = RSS_LAST.get_ptr_mut(0)
    {
        // SAFETY: per-CPU slot; programs do not nest on one CPU for this hook.
        unsafe {
            if (*last).mm == mm && (*last).member == member {
                (*last).skipped += 1;
                if (*last).skipped < RSS_SAMPLE_EVERY {
                    return 0;
                }
            }
            (*last).mm = mm;
            (*last).member = member;
            (*last).skipped = 0;
        }
    }
    // SAFETY (block): kernel pointers read through checked `bpf_probe_read_kernel`, at offsets
    // from this kernel's BTF.
    let (bytes, current_mm) = unsafe {
        let counter = mm
            + u64::from(o.mm_rss_stat)
            + member * u64::from(o.counter_size)
            + u64::from(o.counter_count);
        let Ok(count) = bpf_probe_read_kernel(counter as *const i64) else {
            return 0;
        };
        let bytes = pages_to_bytes(count);
        // Fast path (nearly every call: a process faulting in its own memory): the mm is the
        // one already recorded for the current process, so `current->mm` need not be read.
        let (_, tgid) = current();
        if let Some(stats) = PROC_STATS.get_ptr_mut(tgid)
            && (*stats).mm_key == mm
        {
            set_rss(stats, member, bytes);
            return 0;
        }
        let task = bpf_get_current_task();
        let current_mm =
            bpf_probe_read_kernel((task + u64::from(o.task_mm)) as *const u64).unwrap_or(0);
        (bytes, current_mm)
    };
    rss_update(mm, current_mm == mm, member, bytes);
    0
}
