//! OOM kills, from `oom:mark_victim`.
use memtrace_api::Family;
use memtrace_common::{Offsets, OomOffsets};

use super::ProbeFamily;
use crate::{
    probes::{
        hook::Hook,
        plan::{PlanContext, PlannedHook, data_loc_or_absent},
    },
    tracefs::TracefsError,
};

pub struct Oom;

impl ProbeFamily for Oom {
    fn id(&self) -> Family {
        Family::Oom
    }

    /// Only the victim's pid is required: every other field came and went across kernel
    /// versions (5.4 has none of them).
    fn plan(&self, ctx: &PlanContext<'_>, offsets: &mut Offsets) -> Vec<PlannedHook> {
        let checked = ctx.tracefs.format("oom", "mark_victim").and_then(
            |format| -> Result<(), TracefsError> {
                offsets.oom = OomOffsets {
                    pid: format.offset_of("pid", 4)?,
                    comm: data_loc_or_absent(&format, "comm"),
                    total_vm: format.offset_or_absent("total_vm", 8),
                    anon_rss: format.offset_or_absent("anon_rss", 8),
                    file_rss: format.offset_or_absent("file_rss", 8),
                    shmem_rss: format.offset_or_absent("shmem_rss", 8),
                    uid: format.offset_or_absent("uid", 4),
                    pgtables: format.offset_or_absent("pgtables", 8),
                    oom_score_adj: format.offset_or_absent("oom_score_adj", 2),
                    reserved: 0,
                };
                Ok(())
            },
        );
        vec![PlannedHook::checked(
            Hook::Tracepoint {
                program: "oom_mark_victim",
                category: "oom",
                name: "mark_victim",
            },
            true,
            checked,
        )]
    }
}
