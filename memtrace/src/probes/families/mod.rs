//! The probe families, one module each beside its kernel half of the same name in
//! `memtrace-ebpf`, each one [`ProbeFamily`] with the lifecycle of retis's probes:
//! [`ProbeFamily::plan`] (`can_run`: the hooks, whether this kernel has what they need, the
//! offsets their programs read), [`ProbeFamily::attach`], [`ProbeFamily::detach`].
//!
//! A new family is one module implementing [`ProbeFamily`], one line in [`REGISTRY`] and one
//! [`Family`] variant.
use aya::Ebpf;
use memtrace_api::Family;
use memtrace_common::Offsets;

use super::{
    FamilyStatus,
    hook::{self, Hook},
    plan::{FamilyPlan, PlanContext, PlannedHook},
};

pub mod faults;
pub mod lifecycle;
pub mod mmap;
pub mod oom;
pub mod reclaim;
pub mod rss;
pub mod tasks;

/// Every family, in the order planned and attached: a family comes before those it
/// [replaces](ProbeFamily::replaces), since whether it attached decides theirs.
pub static REGISTRY: [&dyn ProbeFamily; 7] = [
    &tasks::Tasks,
    &faults::Faults,
    &mmap::Mmap,
    &rss::Rss,
    &reclaim::Reclaim,
    &oom::Oom,
    &lifecycle::Lifecycle,
];

/// What a live trace attaches: every hook, for exact per-event streams.
pub const TRACE_FAMILIES: [Family; 6] = [
    Family::Faults,
    Family::Mmap,
    Family::Rss,
    Family::Reclaim,
    Family::Oom,
    Family::Lifecycle,
];

/// What the daemon attaches by default: the task sampler instead of the per-fault hooks
/// (which [`super::Probes::load`] attaches instead if the sampler cannot run), and no
/// mmap-family hooks (`daemon --mmap-calls` adds them).
pub const DAEMON_FAMILIES: [Family; 4] = [
    Family::Tasks,
    Family::Reclaim,
    Family::Oom,
    Family::Lifecycle,
];

/// The hook families the task sampler replaces.
pub const REPLACED_BY_TASKS: [Family; 2] = [Family::Faults, Family::Rss];

/// One probe family: its hooks and programs, what it needs of the kernel, and its offsets.
pub trait ProbeFamily: Sync {
    fn id(&self) -> Family;

    /// Families this one stands in for: when it is requested they are planned too, and attached
    /// instead if it does not attach.
    fn replaces(&self) -> &'static [Family] {
        &[]
    }

    /// `can_run`: the family's hooks in attach order, each marked unusable where this kernel
    /// lacks a tracepoint, a field or a BTF layout it needs; fills the family's part of
    /// `offsets`.
    fn plan(&self, ctx: &PlanContext<'_>, offsets: &mut Offsets) -> Vec<PlannedHook>;

    /// Load and attach the planned hooks in order. Optional hooks that fail are reported; a
    /// required one that fails detaches the hooks attached before it.
    fn attach(
        &self,
        plan: &FamilyPlan,
        ebpf: &mut Ebpf,
        kernel_btf: Option<&aya::Btf>,
    ) -> FamilyStatus {
        plan.attach_each(
            ebpf,
            |ebpf, planned| hook::attach_hook(ebpf, planned, kernel_btf),
            |ebpf, attached| self.detach(attached, ebpf),
        )
    }

    /// Detach and unload `hooks` (dropping [`super::Probes`] detaches every family at once).
    fn detach(&self, hooks: &[&Hook], ebpf: &mut Ebpf) {
        for hook in hooks {
            hook::unload(ebpf, hook.program());
        }
    }
}
