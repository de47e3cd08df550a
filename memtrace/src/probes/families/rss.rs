//! Resident memory by type (file, anon, swap entries, shmem), from `kmem:rss_stat`.
use memtrace_api::Family;
use memtrace_common::Offsets;

use super::ProbeFamily;
use crate::{
    probes::{
        btf::RssLayout,
        hook::Hook,
        plan::{PlanContext, PlannedHook, Unusable},
    },
    tracefs::TracefsError,
};

const RAW: Hook = Hook::RawTracepoint {
    program: "rss_stat_raw",
    category: "kmem",
    name: "rss_stat",
};
const CLASSIC: Hook = Hook::tracepoint("kmem", "rss_stat");

pub struct Rss;

/// Where the raw hook (and the task sampler) find a process's RSS counters.
pub(super) fn set_layout(offsets: &mut Offsets, layout: &RssLayout) {
    offsets.rss.task_mm = layout.task_mm;
    offsets.rss.mm_rss_stat = layout.mm_rss_stat;
    offsets.rss.counter_size = layout.counter_size;
    offsets.rss.counter_count = layout.counter_count;
    offsets.rss.flags = layout.flags;
}

impl ProbeFamily for Rss {
    fn id(&self) -> Family {
        Family::Rss
    }

    /// The raw tracepoint with BTF offsets when the kernel has BTF; else the classic tracepoint
    /// (reported as a partial attach, since it costs several times more per fault).
    fn plan(&self, ctx: &PlanContext<'_>, offsets: &mut Offsets) -> Vec<PlannedHook> {
        let reason = match &ctx.btf.rss {
            Ok(layout) => {
                let unusable = Unusable::tracepoint(ctx.tracefs, "kmem", "rss_stat");
                if unusable.is_none() {
                    set_layout(offsets, layout);
                }
                return vec![PlannedHook::new(RAW, true, unusable)];
            }
            Err(reason) => reason,
        };
        let classic =
            ctx.tracefs
                .format("kmem", "rss_stat")
                .and_then(|format| -> Result<(), TracefsError> {
                    let fields = [
                        format.offset_of("mm_id", 4)?,
                        format.offset_of("curr", 4)?,
                        format.offset_of("member", 4)?,
                        format.offset_of("size", 8)?,
                    ];
                    let rss = &mut offsets.rss;
                    [rss.mm_id, rss.curr, rss.member, rss.size] = fields;
                    Ok(())
                });
        vec![
            PlannedHook::checked(CLASSIC, true, classic),
            PlannedHook::new(
                RAW,
                false,
                Some(Unusable::SlowerWithoutBtf {
                    source: reason.clone(),
                    instead: "classic tracepoint",
                }),
            ),
        ]
    }
}
