//! The maps, the target filter and the one way every hook counts a site.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

#[cfg(bpf_target_arch = "x86_64")]
use aya_ebpf::bindings::pt_regs;
use aya_ebpf::{
    Global,
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{bpf_get_current_comm, bpf_get_current_task_btf, bpf_probe_read_user},
    macros::map,
    maps::{HashMap, PerCpuArray, StackTrace},
    programs::tracing::StackIdContext,
};
use memtrace_common::{
    FIELD_ABSENT,
    sites::{NO_STACK, SiteCounts, SiteKey, SitesConfig, sites_flag, sites_stat, target},
};

const EEXIST: i32 = 17;

/// Read-only: the verifier sees constants and keeps only the target mode in use.
#[unsafe(no_mangle)]
pub static SITES_CONFIG: Global<SitesConfig> = Global::new(SitesConfig::DEFAULT);

/// Site → counts. Full: new sites are lost (counted), existing ones keep counting.
#[map]
pub static SITES: HashMap<SiteKey, SiteCounts> = HashMap::with_max_entries(65_536, 0);
/// User and kernel stacks by id (`bpf_get_stackid`), deduplicated by the kernel.
#[map]
pub static SITE_STACKS: StackTrace = StackTrace::with_max_entries(16_384, 0);
/// Counters indexed by `sites_stat`.
#[map]
pub static SITES_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(sites_stat::SLOTS, 0);
/// `target::PIDS`: the profiled tgids.
#[map]
pub static TARGET_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);
/// `target::CGROUP`: the memory cgroup ids profiled (the cgroup and its descendants).
#[map]
pub static TARGET_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);
/// A brk call in progress (`pid_tgid`) → the break before it.
#[map]
pub static BRK_INFLIGHT: HashMap<u64, u64> = HashMap::with_max_entries(8192, 0);

#[inline(always)]
pub fn count(slot: u32) {
    if let Some(counter) = SITES_STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot; these programs do not nest on one CPU.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn add(counter: *mut u64, value: u64) {
    // SAFETY: `counter` points into a map value; atomic because threads of one process count
    // at one site from several CPUs.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value) };
}

/// The tgid half of a `pid_tgid`.
#[inline(always)]
pub const fn tgid_of(pid_tgid: u64) -> u32 {
    (pid_tgid >> 32) as u32
}

/// Whether the current task (of process `tgid`) is profiled.
#[inline(always)]
pub fn profiled(config: &SitesConfig, tgid: u32) -> bool {
    if tgid == 0 {
        return false;
    }
    match config.target {
        target::PIDS => TARGET_PIDS.get_ptr(tgid).is_some(),
        target::CGROUP => {
            let id = current_cgroup_id(config);
            id != 0 && TARGET_CGROUPS.get_ptr(id).is_some()
        }
        _ => tgid != config.self_tgid,
    }
}

/// A field of a BTF-typed kernel object: a plain load the verifier checks against the type and
/// the JIT makes fault-safe (see `memtrace-ebpf`'s `helpers::load_btf`).
#[inline(always)]
pub fn load_btf<T: Copy>(addr: u64) -> T {
    // SAFETY: see above; the verifier refuses the program rather than allow a bad access.
    unsafe { core::ptr::read_volatile(addr as *const T) }
}

/// The current task as a BTF pointer.
#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_task_btf() as u64 }
}

/// The current task's memory cgroup id, as `memtrace-ebpf`'s `helpers::task_cgroup_id` reads
/// it (`bpf_get_current_cgroup_id` sees only the unified hierarchy, whose root every task of a
/// hybrid host is in); 0 when a link is NULL.
#[inline(always)]
fn current_cgroup_id(config: &SitesConfig) -> u64 {
    let c = config.cgroup;
    if c.task_cgroups == FIELD_ABSENT {
        return 0;
    }
    let cset: u64 = load_btf(current_task() + u64::from(c.task_cgroups));
    if cset == 0 {
        return 0;
    }
    let mut cgroup: u64 = load_btf(cset + u64::from(c.cset_link));
    if c.css_cgroup != FIELD_ABSENT {
        if cgroup == 0 {
            return 0;
        }
        cgroup = load_btf(cgroup + u64::from(c.css_cgroup));
    }
    if cgroup == 0 {
        return 0;
    }
    let kn: u64 = load_btf(cgroup + u64::from(c.cgroup_kn));
    if kn == 0 {
        return 0;
    }
    load_btf(kn + u64::from(c.kn_id))
}

/// The current task's user registers as the kernel saved them at entry (syscall or fault):
/// (`ip`, `sp`, `ax`). At a syscall's exit `ax` holds its return value.
#[inline(always)]
#[cfg(bpf_target_arch = "x86_64")]
pub fn user_regs() -> UserRegs {
    // SAFETY: `bpf_task_pt_regs` returns a BTF-typed pointer to the current task's user
    // register frame: the verifier checks these loads against `struct pt_regs`.
    unsafe {
        let regs =
            aya_ebpf::helpers::bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        UserRegs {
            ip: (*regs).rip,
            sp: (*regs).rsp,
            ax: (*regs).rax,
            args: [(*regs).rdi, (*regs).rsi, (*regs).rdx],
        }
    }
}

#[inline(always)]
#[cfg(not(bpf_target_arch = "x86_64"))]
pub fn user_regs() -> UserRegs {
    UserRegs::default()
}

/// What the programs use of the user register frame.
#[derive(Clone, Copy, Default)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    /// The return value, at a syscall's exit.
    pub ax: u64,
    /// The first three syscall arguments.
    pub args: [u64; 3],
}

/// The word at the user stack pointer: at a call into a leaf that built no frame (libc's
/// syscall wrappers), the return address into its caller. 0 if unreadable.
#[inline(always)]
pub fn return_address_at(sp: u64) -> u64 {
    // SAFETY: checked read of user memory.
    unsafe { bpf_probe_read_user(sp as *const u64) }.unwrap_or(0)
}

/// A stack id from `SITE_STACKS`, or `NO_STACK` with the failure counted.
#[inline(always)]
fn stack_id<C: StackIdContext>(ctx: &C, flags: u64, collisions: u32, errors: u32) -> i32 {
    match ctx.get_stackid(&SITE_STACKS, flags) {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "stack ids are below the map's max_entries"
        )]
        Ok(id) => id as i32,
        Err(err) => {
            count(if err == -EEXIST { collisions } else { errors });
            NO_STACK
        }
    }
}

/// What one hook hands to [`record`].
pub struct Site {
    pub tgid: u32,
    pub kind: u32,
    pub ip: u64,
    pub caller: u64,
    pub bytes: u64,
    /// Whether a kernel stack says something here (a fault taken in kernel mode, a syscall).
    pub kernel_stack: bool,
}

/// Count one event at its site: the stacks (user, and kernel if asked), then the key's counts.
#[inline(always)]
pub fn record<C: StackIdContext>(ctx: &C, config: &SitesConfig, site: &Site) {
    let user_stack_id = stack_id(
        ctx,
        u64::from(BPF_F_USER_STACK),
        sites_stat::USER_STACK_COLLISIONS,
        sites_stat::USER_STACK_ERRORS,
    );
    let kernel_stack_id = if site.kernel_stack && config.flags & sites_flag::KERNEL_STACKS != 0 {
        stack_id(
            ctx,
            0,
            sites_stat::KERNEL_STACK_COLLISIONS,
            sites_stat::KERNEL_STACK_ERRORS,
        )
    } else {
        NO_STACK
    };
    let key = SiteKey {
        tgid: site.tgid,
        kind: site.kind,
        user_stack_id,
        kernel_stack_id,
        ip: site.ip,
        caller: site.caller,
    };
    if add_to(&key, site.bytes) {
        return;
    }
    let counts = SiteCounts {
        events: 1,
        bytes: site.bytes,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    match SITES.insert(key, counts, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        // Another CPU created it first.
        Err(err) if err == -EEXIST => {
            add_to(&key, site.bytes);
        }
        Err(_) => count(sites_stat::SITES_FULL),
    }
}

/// Add one event of `bytes` to an existing site; `false` if there is none.
#[inline(always)]
fn add_to(key: &SiteKey, bytes: u64) -> bool {
    let Some(counts) = SITES.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: map value pointer.
    unsafe {
        add(&raw mut (*counts).events, 1);
        if bytes != 0 {
            add(&raw mut (*counts).bytes, bytes);
        }
    }
    true
}
