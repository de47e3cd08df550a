//! Reclaim stalls: direct and memcg reclaim, from the `vmscan` begin/end tracepoints.
use std::sync::Arc;

use memtrace_api::Family;
use memtrace_common::{FIELD_ABSENT, Offsets, ReclaimOffsets};

use super::ProbeFamily;
use crate::{
    probes::{
        hook::Hook,
        plan::{PlanContext, PlannedHook, Unusable},
    },
    tracefs::{Tracefs, TracefsError},
};

pub struct Reclaim;

/// A begin/end pair of reclaim tracepoints and their programs.
struct Pair {
    begin: &'static str,
    end: &'static str,
    begin_program: &'static str,
    end_program: &'static str,
}

const DIRECT: Pair = Pair {
    begin: "mm_vmscan_direct_reclaim_begin",
    end: "mm_vmscan_direct_reclaim_end",
    begin_program: "direct_reclaim_begin",
    end_program: "direct_reclaim_end",
};

const MEMCG: Pair = Pair {
    begin: "mm_vmscan_memcg_reclaim_begin",
    end: "mm_vmscan_memcg_reclaim_end",
    begin_program: "memcg_reclaim_begin",
    end_program: "memcg_reclaim_end",
};

impl Pair {
    /// The fields the programs read: `[order, gfp_flags, nr_reclaimed, gfp_flags' size]`.
    /// `order` is what the begin program needs; only the direct pair must have it (memcg's is
    /// compared).
    fn fields(&self, tracefs: &Tracefs, order_required: bool) -> Result<[u32; 4], TracefsError> {
        let begin = tracefs.format("vmscan", self.begin)?;
        let end = tracefs.format("vmscan", self.end)?;
        // An `unsigned long` since Linux 5.x; a `gfp_t` before (5.10 has it).
        let (gfp_flags, gfp_flags_size) = match begin.offset_of("gfp_flags", 8) {
            Ok(offset) => (offset, 8),
            Err(_) => match begin.offset_of("gfp_flags", 4) {
                Ok(offset) => (offset, 4),
                Err(_) => (FIELD_ABSENT, 0),
            },
        };
        Ok([
            if order_required {
                begin.offset_of("order", 4)?
            } else {
                begin.offset_or_absent("order", 4)
            },
            gfp_flags,
            end.offset_or_absent("nr_reclaimed", 8),
            gfp_flags_size,
        ])
    }

    /// End first: a begin without its end would fill the in-flight map.
    fn hooks(&self, unusable: &Option<Arc<Unusable>>) -> [PlannedHook; 2] {
        let planned = |program, name| PlannedHook {
            hook: Hook::Tracepoint {
                program,
                category: "vmscan",
                name,
            },
            required: false,
            unusable: unusable.clone(),
        };
        [
            planned(self.end_program, self.end),
            planned(self.begin_program, self.begin),
        ]
    }
}

impl ProbeFamily for Reclaim {
    fn id(&self) -> Family {
        Family::Reclaim
    }

    /// Both pairs are optional, but the family stands only if one of them works.
    fn plan(&self, ctx: &PlanContext<'_>, offsets: &mut Offsets) -> Vec<PlannedHook> {
        let (direct, direct_unusable) = match DIRECT.fields(ctx.tracefs, true) {
            Ok(fields @ [order, gfp_flags, nr_reclaimed, gfp_flags_size]) => {
                offsets.reclaim = ReclaimOffsets {
                    begin_order: order,
                    begin_gfp_flags: gfp_flags,
                    end_nr_reclaimed: nr_reclaimed,
                    begin_gfp_flags_size: gfp_flags_size,
                };
                (Some(fields), None)
            }
            Err(err) => (None, Some(Arc::new(Unusable::from(err)))),
        };
        // memcg reclaim shares the programs' offsets: usable only with the same layout.
        let memcg_unusable = match MEMCG.fields(ctx.tracefs, false) {
            Ok(memcg) if direct == Some(memcg) => None,
            Ok(_) => Some(Arc::new(Unusable::MemcgRecordsDiffer)),
            Err(err) => Some(Arc::new(err.into())),
        };
        let mut planned: Vec<PlannedHook> = DIRECT
            .hooks(&direct_unusable)
            .into_iter()
            .chain(MEMCG.hooks(&memcg_unusable))
            .collect();
        if direct_unusable.is_some() && memcg_unusable.is_some() {
            planned.iter_mut().for_each(|p| p.required = true);
        }
        planned
    }
}
