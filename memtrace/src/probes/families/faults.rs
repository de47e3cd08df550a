//! Page faults: user and kernel faults from the x86 `exceptions` raw tracepoints, major faults
//! from a perf software event.
use aya::programs::perf_event::SoftwareEvent;
use memtrace_api::Family;
use memtrace_common::Offsets;

use super::ProbeFamily;
use crate::probes::{
    hook::Hook,
    plan::{PlanContext, PlannedHook, Unusable},
};

pub struct Faults;

/// A raw tracepoint in `exceptions`, usable if the kernel has it (raw tracepoints read no
/// record, so no fields are checked).
fn exception(ctx: &PlanContext<'_>, name: &'static str, required: bool) -> PlannedHook {
    const CATEGORY: &str = "exceptions";
    PlannedHook::new(
        Hook::RawTracepoint {
            program: name,
            category: CATEGORY,
            name,
        },
        required,
        Unusable::tracepoint(ctx.tracefs, CATEGORY, name),
    )
}

impl ProbeFamily for Faults {
    fn id(&self) -> Family {
        Family::Faults
    }

    fn plan(&self, ctx: &PlanContext<'_>, _offsets: &mut Offsets) -> Vec<PlannedHook> {
        vec![
            exception(ctx, "page_fault_user", true),
            exception(ctx, "page_fault_kernel", false),
            PlannedHook::new(
                Hook::PerfSoftware {
                    program: "fault_major",
                    event: SoftwareEvent::PageFaultsMaj,
                    label: "PAGE_FAULTS_MAJ",
                },
                false,
                None,
            ),
        ]
    }
}
