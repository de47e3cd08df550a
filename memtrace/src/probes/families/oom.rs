//! OOM kills, from `oom:mark_victim` (and, where the kernel passes the victim's task to raw
//! hooks, the victim's cgroup at the kill).
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
        let tracepoint = PlannedHook::checked(
            Hook::Tracepoint {
                program: "oom_mark_victim",
                category: "oom",
                name: "mark_victim",
            },
            true,
            checked,
        );
        // The record names the victim only by pid, and a victim that is not the trigger may be
        // reaped before /proc is read. Where the kernel passes raw hooks the victim's task
        // (Linux 6.8+) and BTF gives the way to its cgroup, a raw hook attached first reads it
        // into OOM_VICTIM_CGROUPS. Elsewhere it is not planned (nothing is missing: that is
        // what the kernel offers) and such a victim is attributed from /proc.
        match (&ctx.btf.task, &ctx.btf.cgroup) {
            (Ok(task), Ok(_)) if ctx.btf.oom_victim_task => {
                offsets.task.task_pid = task.task_pid;
                let victim_task = Hook::RawTracepoint {
                    program: "oom_mark_victim_task",
                    category: "oom",
                    name: "mark_victim",
                };
                vec![PlannedHook::new(victim_task, false, None), tracepoint]
            }
            _ => vec![tracepoint],
        }
    }
}
