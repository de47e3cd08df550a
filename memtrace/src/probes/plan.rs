//! Planning, each family's `can_run`: which hooks every requested family would attach on this
//! kernel, which of them the kernel lacks and why, and the offsets handed to the programs.
//!
//! Planning reads tracefs `format` files through a [`Tracefs`] root and takes what the kernel's
//! BTF says as a value ([`BtfLayouts`]), so it runs without root or eBPF, against fixture trees
//! in the tests. All families are planned before the object is loaded: their offsets are one
//! read-only global of the object.
use std::sync::Arc;

use memtrace_common::{FIELD_ABSENT, Offsets, SyscallEnterOffsets};

use super::{
    AttachReport, FamilyStatus,
    btf::{BtfError, BtfLayouts},
    families::{self, ProbeFamily},
    hook::{AttachError, Hook},
};
use crate::tracefs::{Tracefs, TracefsError, TracepointFormat};
use memtrace_api::Family;

/// What planning knows of the kernel.
#[derive(Clone, Copy, Debug)]
pub struct PlanContext<'a> {
    pub tracefs: &'a Tracefs,
    pub btf: &'a BtfLayouts,
    /// The live trace's filter (`memtrace_common::filter`): some hooks are only needed with it.
    pub filter_flags: u32,
    /// Whether a program can read a syscall's arguments from the task's saved registers (x86-64:
    /// the layout of `struct pt_regs` is known), given BTF.
    pub syscall_args_in_regs: bool,
}

impl<'a> PlanContext<'a> {
    /// The context on this machine's architecture.
    pub fn new(tracefs: &'a Tracefs, btf: &'a BtfLayouts, filter_flags: u32) -> Self {
        Self {
            tracefs,
            btf,
            filter_flags,
            syscall_args_in_regs: cfg!(target_arch = "x86_64"),
        }
    }
}

/// Why this kernel cannot run a hook (found before anything is loaded).
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    /// A tracepoint, its format file or one of its fields.
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    /// A struct layout from the kernel's BTF.
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("this kernel has no BPF task iterator (Linux 5.8+)")]
    NoTaskIterator,
    #[error("tracepoint {category}:{name} not in this kernel")]
    NoTracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// Syscall exit programs share one `ret` offset; a kernel where they differ would be misread.
    #[error("syscalls:{exit} has `ret` at offset {ret}, others at {shared}")]
    ExitRetDiffers {
        exit: &'static str,
        ret: u32,
        shared: u32,
    },
    /// The memcg reclaim programs share the direct reclaim programs' offsets.
    #[error("memcg reclaim records differ from direct reclaim's")]
    MemcgRecordsDiffer,
    /// A hook that needs BTF, replaced by a slower one that needs none.
    #[error("{source}; using the {instead}, which costs more per fault")]
    SlowerWithoutBtf {
        #[source]
        source: BtfError,
        instead: &'static str,
    },
}

impl Unusable {
    /// Why a hook on the tracepoint `category:name` cannot run, if it cannot: the kernel lacks
    /// it ([`Unusable::NoTracepoint`]), or tracefs may not be examined by this process (a
    /// missing privilege, named as such: never "not in this kernel").
    pub fn tracepoint(
        tracefs: &Tracefs,
        category: &'static str,
        name: &'static str,
    ) -> Option<Self> {
        match tracefs.tracepoint(category, name) {
            Ok(_) => None,
            Err(TracefsError::TracepointMissing { .. }) => {
                Some(Self::NoTracepoint { category, name })
            }
            Err(other) => Some(Self::Tracefs(other)),
        }
    }

    /// Whether a missing privilege, not the kernel, is the cause.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::Tracefs(e) if e.is_permission_denied())
    }
}

/// One hook of a family, whether the family needs it, and why not if this kernel cannot run it.
#[derive(Clone, Debug)]
pub struct PlannedHook {
    pub hook: Hook,
    /// Without it the family does not run; an optional hook that fails is reported and skipped.
    pub required: bool,
    /// `Some`: the kernel lacks what this hook needs. Shared by hooks that fail for one reason.
    pub unusable: Option<Arc<Unusable>>,
}

impl PlannedHook {
    pub fn new(hook: Hook, required: bool, unusable: Option<Unusable>) -> Self {
        Self {
            hook,
            required,
            unusable: unusable.map(Arc::new),
        }
    }

    /// A hook that is usable if `check` passed.
    pub fn checked<E: Into<Unusable>>(hook: Hook, required: bool, check: Result<(), E>) -> Self {
        Self::new(hook, required, check.err().map(Into::into))
    }

    /// How a hook that is not attached is listed: `label (reason)`.
    pub fn missing(&self, reason: &dyn std::fmt::Display) -> String {
        format!("{} ({reason})", self.hook.label())
    }
}

/// Why a family is planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Requested,
    /// Not requested, but attached instead of the requested family it stands in for if that one
    /// does not attach (see [`ProbeFamily::replaces`]).
    FallbackFor(Family),
}

/// One family's hooks on this kernel.
#[derive(Clone)]
pub struct FamilyPlan {
    pub family: &'static dyn ProbeFamily,
    pub role: Role,
    /// In attach order.
    pub hooks: Vec<PlannedHook>,
}

impl std::fmt::Debug for FamilyPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FamilyPlan")
            .field("family", &self.id())
            .field("role", &self.role)
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl FamilyPlan {
    pub fn id(&self) -> Family {
        self.family.id()
    }

    /// Why the family cannot run at all (a required hook is unusable), as the report says it:
    /// `label: reason`.
    pub fn skip_reason(&self) -> Option<String> {
        self.hooks.iter().find_map(|planned| {
            let reason = planned.unusable.as_ref().filter(|_| planned.required)?;
            Some(format!("{}: {reason}", planned.hook.label()))
        })
    }

    /// The hooks that would be attached, by label.
    pub fn usable_labels(&self) -> Vec<String> {
        self.hooks
            .iter()
            .filter(|planned| planned.unusable.is_none())
            .map(|planned| planned.hook.label())
            .collect()
    }

    /// Attach the planned hooks in order with `attach_one`: optional hooks that fail are
    /// reported; a required one that fails makes the family skipped, after `detach` of the
    /// hooks attached before it. (The lifecycle of [`ProbeFamily::attach`] with the kernel
    /// calls given, so it is tested without a kernel; `target` is what they act on.)
    pub fn attach_each<T: ?Sized>(
        &self,
        target: &mut T,
        mut attach_one: impl FnMut(&mut T, &Hook) -> Result<(), AttachError>,
        detach: impl FnOnce(&mut T, &[&Hook]),
    ) -> FamilyStatus {
        if let Some(reason) = self.skip_reason() {
            return FamilyStatus::Skipped { reason };
        }
        let mut attached: Vec<&Hook> = Vec::new();
        let mut missing = Vec::new();
        for planned in &self.hooks {
            if let Some(reason) = &planned.unusable {
                missing.push(planned.missing(reason));
                continue;
            }
            match attach_one(target, &planned.hook) {
                Ok(()) => attached.push(&planned.hook),
                Err(err) if planned.required => {
                    detach(target, &attached);
                    return FamilyStatus::Skipped {
                        reason: format!("{}: {err}", planned.hook.label()),
                    };
                }
                Err(err) => missing.push(planned.missing(&err)),
            }
        }
        let hooks = attached.iter().map(|hook| hook.label()).collect();
        if missing.is_empty() {
            FamilyStatus::Attached { hooks }
        } else {
            FamilyStatus::Partial { hooks, missing }
        }
    }

    /// The optional hooks this kernel cannot run, as the report lists them.
    pub fn missing(&self) -> Vec<String> {
        self.hooks
            .iter()
            .filter_map(|planned| Some(planned.missing(planned.unusable.as_ref()?)))
            .collect()
    }
}

/// Every planned family, in registry order, and the offsets for the object.
#[derive(Clone, Debug)]
pub struct ProbePlan {
    pub offsets: Offsets,
    pub families: Vec<FamilyPlan>,
}

impl ProbePlan {
    /// `can_run` for each of `requested`, and for the families that stand in for them (see
    /// [`ProbeFamily::replaces`]).
    pub fn new(ctx: &PlanContext<'_>, requested: &[Family]) -> Self {
        let mut offsets = Offsets::ABSENT;
        offsets.helpers = ctx.btf.helpers;
        // Every family's programs read the comm; with BTF they load it from the task directly
        // (the exit hook the thread-group leader's, through `group_leader`) where the kernel has
        // `bpf_get_current_task_btf` (`helpers`).
        if let Ok(task) = &ctx.btf.task {
            offsets.task.task_comm = task.task_comm;
            offsets.task.task_group_leader = task.task_group_leader;
        }
        let mut families = Vec::new();
        for family in families::REGISTRY {
            let id = family.id();
            let role = if requested.contains(&id) {
                Role::Requested
            } else if let Some(replacer) = families::REGISTRY
                .iter()
                .find(|r| requested.contains(&r.id()) && r.replaces().contains(&id))
            {
                Role::FallbackFor(replacer.id())
            } else {
                continue;
            };
            let hooks = family.plan(ctx, &mut offsets);
            families.push(FamilyPlan {
                family,
                role,
                hooks,
            });
        }
        Self { offsets, families }
    }

    pub fn family(&self, id: Family) -> Option<&FamilyPlan> {
        self.families.iter().find(|plan| plan.id() == id)
    }

    /// Whether loading needs aya's own parse of the kernel's BTF (a usable task iterator is
    /// loaded against a BTF function id).
    pub fn needs_kernel_btf(&self) -> bool {
        self.families.iter().flat_map(|f| &f.hooks).any(|planned| {
            planned.unusable.is_none() && matches!(planned.hook, Hook::TaskIterator { .. })
        })
    }

    /// Attach the planned families in registry order with `attach`: each requested one, and
    /// each fallback whose requested family did not attach. Every family has a line in the
    /// report.
    pub fn attach_with(&self, mut attach: impl FnMut(&FamilyPlan) -> FamilyStatus) -> AttachReport {
        let mut report = AttachReport::default();
        for id in Family::ALL {
            report.families.insert(id, FamilyStatus::Disabled);
        }
        for plan in &self.families {
            let status = match plan.role {
                Role::Requested => attach(plan),
                // The registry orders a family before those it replaces.
                Role::FallbackFor(replacer) if !report.attached(replacer) => {
                    tracing::warn!(
                        "the {replacer} family is unavailable: attaching the {} hooks instead \
                         (they cost on every page fault)",
                        plan.id()
                    );
                    attach(plan)
                }
                Role::FallbackFor(_) => FamilyStatus::Disabled,
            };
            report.families.insert(plan.id(), status);
        }
        report
    }
}

/// Offsets of a syscall entry record's named arguments (each a `unsigned long`, 8 bytes).
pub fn syscall_args(
    format: &TracepointFormat,
    names: &[&str],
) -> Result<SyscallEnterOffsets, TracefsError> {
    let mut offsets = SyscallEnterOffsets {
        args: [FIELD_ABSENT; 6],
    };
    for (slot, name) in offsets.args.iter_mut().zip(names) {
        *slot = format.offset_of(name, 8)?;
    }
    Ok(offsets)
}

/// The offset of a `__data_loc` field, or absent if the field is missing or not one.
pub fn data_loc_or_absent(format: &TracepointFormat, name: &str) -> u32 {
    match format.field(name) {
        Some(field) if field.data_loc => field.offset,
        _ => FIELD_ABSENT,
    }
}

#[cfg(test)]
mod tests;
