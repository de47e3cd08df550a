//! Process lifecycle: exit (the end of a process's counters), exec (its new name), and fork
//! (only to follow a filtered process's children).
use memtrace_api::Family;
use memtrace_common::{FIELD_ABSENT, Offsets, filter};

use super::ProbeFamily;
use crate::{
    probes::{
        hook::Hook,
        plan::{PlanContext, PlannedHook, data_loc_or_absent},
    },
    tracefs::TracefsError,
};

pub struct Lifecycle;

impl ProbeFamily for Lifecycle {
    fn id(&self) -> Family {
        Family::Lifecycle
    }

    fn plan(&self, ctx: &PlanContext<'_>, offsets: &mut Offsets) -> Vec<PlannedHook> {
        let sched = |name| ctx.tracefs.format("sched", name);
        let exit = sched("sched_process_exit").and_then(|format| -> Result<(), TracefsError> {
            offsets.sched.exit_pid = format.offset_of("pid", 4)?;
            offsets.sched.exit_group_dead = format.offset_or_absent("group_dead", 1);
            Ok(())
        });
        // Without `group_dead` the exit hook tells a process's end from `signal->live` (see
        // `memtrace_common::TaskOffsets::signal_live`), or without BTF from the leader's exit.
        if offsets.sched.exit_group_dead == FIELD_ABSENT
            && let Ok(task) = &ctx.btf.task
        {
            let t = &mut offsets.task;
            t.task_signal = task.task_signal;
            t.signal_live = task.signal_live;
            t.task_group_leader = task.task_group_leader;
            t.task_start_time = task.task_start_time;
        }
        let exec = sched("sched_process_exec").and_then(|format| -> Result<(), TracefsError> {
            offsets.sched.exec_old_pid = format.offset_of("old_pid", 4)?;
            offsets.sched.exec_filename = data_loc_or_absent(&format, "filename");
            Ok(())
        });
        let mut planned = vec![
            PlannedHook::checked(Hook::tracepoint("sched", "sched_process_exit"), true, exit),
            PlannedHook::checked(Hook::tracepoint("sched", "sched_process_exec"), false, exec),
        ];
        // Fork following is only needed (and only paid for) when a filter asks for it.
        if ctx.filter_flags & filter::FOLLOW_FORKS != 0 {
            let fork = sched("sched_process_fork").and_then(|format| -> Result<(), TracefsError> {
                offsets.sched.fork_parent_pid = format.offset_of("parent_pid", 4)?;
                offsets.sched.fork_child_pid = format.offset_of("child_pid", 4)?;
                Ok(())
            });
            planned.push(PlannedHook::checked(
                Hook::tracepoint("sched", "sched_process_fork"),
                true,
                fork,
            ));
            // A task moved into the filtered cgroup is followed from the move (without it, from
            // the trace's next rescan of the cgroup).
            let attach = ctx.tracefs.format("cgroup", "cgroup_attach_task").and_then(
                |format| -> Result<(), TracefsError> {
                    offsets.attach.dst_root = format.offset_of("dst_root", 4)?;
                    offsets.attach.dst_id = format.offset_of("dst_id", 8)?;
                    offsets.attach.pid = format.offset_of("pid", 4)?;
                    Ok(())
                },
            );
            planned.push(PlannedHook::checked(
                Hook::tracepoint("cgroup", "cgroup_attach_task"),
                false,
                attach,
            ));
        }
        planned
    }
}
