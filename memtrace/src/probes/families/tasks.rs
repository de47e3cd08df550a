//! The task sampler: faults, RSS and virtual size of every task from the kernel's own counters,
//! read by a BPF task iterator once per tick (reading its output: [`crate::probes::tasks`]).
use memtrace_api::Family;
use memtrace_common::Offsets;

use super::{ProbeFamily, REPLACED_BY_TASKS, rss};
use crate::probes::{
    hook::Hook,
    plan::{PlanContext, PlannedHook, Unusable},
};

/// The iterator program, run once per [`crate::probes::Probes::task_iterator`].
pub const PROGRAM: &str = "task_sampler";

pub struct Tasks;

impl ProbeFamily for Tasks {
    fn id(&self) -> Family {
        Family::Tasks
    }

    fn replaces(&self) -> &'static [Family] {
        &REPLACED_BY_TASKS
    }

    /// Needs the task and RSS layouts from BTF, and the iterator itself (Linux 5.8+).
    fn plan(&self, ctx: &PlanContext<'_>, offsets: &mut Offsets) -> Vec<PlannedHook> {
        let btf = ctx.btf;
        let unusable = match (&btf.rss, &btf.task, btf.task_iterator) {
            (Ok(layout), Ok(task), true) => {
                offsets.task = *task;
                rss::set_layout(offsets, layout);
                None
            }
            (Err(reason), _, _) | (_, Err(reason), _) => Some(Unusable::Btf(reason.clone())),
            (_, _, false) => Some(Unusable::NoTaskIterator),
        };
        vec![PlannedHook::new(
            Hook::TaskIterator { program: PROGRAM },
            true,
            unusable,
        )]
    }
}
