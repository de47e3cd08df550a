//! Reclaim stalls: global direct reclaim and memory-cgroup (limit) reclaim, begin → end.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use memtrace_common::{ReclaimEvent, ReclaimStart, config_flag, kind, loss, reclaim_bucket};

use crate::{
    helpers::{
        add, count_loss, current, emit, events_wakeup, field, filter_pass, header_with_comm,
        stats_entry,
    },
    maps::{CONFIG, EVENTS, RECLAIM_INFLIGHT, offset},
};

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_begin")]
pub fn direct_reclaim_begin(ctx: TracePointContext) -> u32 {
    on_reclaim_begin(&ctx, 0);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_reclaim_begin(ctx: TracePointContext) -> u32 {
    on_reclaim_begin(&ctx, 1);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_end")]
pub fn direct_reclaim_end(ctx: TracePointContext) -> u32 {
    on_reclaim_end(&ctx);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_reclaim_end(ctx: TracePointContext) -> u32 {
    on_reclaim_end(&ctx);
    0
}

#[inline(always)]
fn on_reclaim_begin(ctx: &TracePointContext, memcg: u32) {
    let offsets = offset!(reclaim);
    let (pid_tgid, _) = current();
    let start = ReclaimStart {
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        gfp_flags: if offsets.begin_gfp_flags_size == 4 {
            field::<u32>(ctx, offsets.begin_gfp_flags).map(u64::from)
        } else {
            field::<u64>(ctx, offsets.begin_gfp_flags)
        }
        .unwrap_or(0),
        order: field::<i32>(ctx, offsets.begin_order).unwrap_or(-1),
        memcg,
    };
    if RECLAIM_INFLIGHT.insert(pid_tgid, start, 0).is_err() {
        count_loss(loss::MAP_RECLAIM_INFLIGHT);
    }
}

#[inline(always)]
fn on_reclaim_end(ctx: &TracePointContext) {
    let (pid_tgid, tgid) = current();
    let Some(start) = RECLAIM_INFLIGHT.get_ptr(pid_tgid) else {
        return;
    };
    // SAFETY: map value pointer, copied before removal.
    let start = unsafe { *start };
    let _ = RECLAIM_INFLIGHT.remove(pid_tgid);
    // SAFETY: helper without preconditions.
    let duration_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(start.ts_ns);
    let config = CONFIG.load();
    if let Some(stats) = stats_entry(tgid) {
        // SAFETY: map value pointer.
        unsafe {
            add(&raw mut (*stats).reclaim_stalls, 1);
            add(&raw mut (*stats).reclaim_ns, duration_ns);
        }
        // A read-only flag: without it (a live trace) the verifier prunes the bucketing.
        if config.flags & config_flag::RECLAIM_HISTOGRAM != 0 {
            let slot = reclaim_bucket::slot(duration_ns);
            if slot < reclaim_bucket::COUNT {
                // SAFETY: map value pointer; `slot` is within the array (checked, so the
                // verifier sees the bound too).
                unsafe {
                    let buckets = (&raw mut (*stats).reclaim_hist).cast::<u64>();
                    add(buckets.add(slot), 1);
                }
            }
        }
    }
    if config.wants(kind::RECLAIM)
        && duration_ns >= config.reclaim_min_ns
        && let Some(comm) = filter_pass(&config, tgid)
    {
        let nr_reclaimed = field::<u64>(ctx, offset!(reclaim.end_nr_reclaimed)).unwrap_or(0);
        emit(
            &EVENTS,
            kind::RECLAIM,
            ReclaimEvent {
                header: header_with_comm(kind::RECLAIM, pid_tgid, comm),
                duration_ns,
                nr_reclaimed,
                gfp_flags: start.gfp_flags,
                order: start.order,
                memcg: start.memcg,
            },
            events_wakeup(),
        );
    }
}
