//! Loading the `memtrace-sites` object and its two probe families, each with one lifecycle in
//! the manner of retis (`can_run → attach → detach`, as `crate::probes::families`):
//! [`FaultSampler`] (the perf software event `PAGE_FAULTS` on every CPU) and [`Growth`] (the
//! mmap, brk and mremap syscall tracepoints). The fault sampler is required; growth is reported
//! and skipped where the kernel lacks it.
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, StackTraceMap},
    programs::{
        PerfEvent, ProgramError, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::online_cpus,
};
use memtrace_common::sites::{
    SiteCounts, SiteKey, SitesConfig, sites_flag, sites_maps, sites_programs, sites_stat, target,
};

use super::capture::KernelStats;
use crate::probes::btf::{BtfError, KernelBtf};
use crate::probes::with_causes;
use crate::tracefs::Tracefs;

/// The object built by `build.rs`.
static SITES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace-sites"));

/// Which processes the kernel counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// These tgids.
    Pids(Vec<u32>),
    /// The memory cgroups with these ids (a cgroup and its descendants; more added later with
    /// [`SitesProbes::add_cgroups`]).
    Cgroups(Vec<u64>),
    /// Every process but memtrace.
    All,
}

/// What to load.
#[derive(Clone, Debug)]
pub struct SitesOptions {
    pub target: Target,
    /// One page fault in this many (per CPU) runs the sampling program.
    pub fault_period: u64,
    pub kernel_stacks: bool,
    pub btf_path: std::path::PathBuf,
    pub cgroup_root: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SitesError {
    #[error(
        "this memtrace binary has no memtrace-sites eBPF object (it was built with AYA_BUILD_SKIP=1): rebuild with `cargo xtask build`"
    )]
    NoObject,
    #[error(
        "memtrace profile needs the kernel's BTF (CONFIG_DEBUG_INFO_BTF=y) to read registers and cgroups: {0}"
    )]
    NoBtf(#[source] BtfError),
    #[error("loading the memtrace-sites eBPF object failed: {}", with_causes(.0))]
    Load(#[source] aya::EbpfError),
    #[error("program {program} is missing from the memtrace-sites object")]
    MissingProgram { program: &'static str },
    #[error("{family}: {program}: {}", with_causes(.source))]
    Program {
        family: &'static str,
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "no perf events: the perf software event PAGE_FAULTS could not be opened on CPU {cpu} ({}); memtrace profile samples page faults with it (is perf_event_open allowed? kernel.perf_event_paranoid, seccomp)",
        with_causes(.source)
    )]
    NoPerfEvents {
        cpu: u32,
        #[source]
        source: ProgramError,
    },
    #[error("reading {path}: {source}")]
    OnlineCpus {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// What the families' checks read.
pub struct PlanContext<'a> {
    pub tracefs: &'a Tracefs,
    pub options: &'a SitesOptions,
}

/// One probe family of the sites object.
pub trait SitesFamily: Sync {
    fn name(&self) -> &'static str;
    /// Whether a failure to run stops the profile (else it is a warning).
    fn required(&self) -> bool;
    /// `can_run`: why this kernel cannot run the family, if it cannot.
    fn can_run(&self, ctx: &PlanContext<'_>) -> Result<(), String>;
    fn attach(&self, ebpf: &mut Ebpf, options: &SitesOptions) -> Result<(), SitesError>;
    /// Detach and unload the family's programs.
    fn detach(&self, ebpf: &mut Ebpf);
}

/// Sampled page faults.
pub struct FaultSampler;

impl SitesFamily for FaultSampler {
    fn name(&self) -> &'static str {
        "page-fault sampler"
    }

    fn required(&self) -> bool {
        true
    }

    fn can_run(&self, _ctx: &PlanContext<'_>) -> Result<(), String> {
        // Whether perf_event_open is allowed is only known by trying: `attach` says why not.
        Ok(())
    }

    fn attach(&self, ebpf: &mut Ebpf, options: &SitesOptions) -> Result<(), SitesError> {
        let program = sites_programs::FAULT_SAMPLE;
        let failed = |source| SitesError::Program {
            family: self.name(),
            program,
            source,
        };
        let perf: &mut PerfEvent = ebpf
            .program_mut(program)
            .ok_or(SitesError::MissingProgram { program })?
            .try_into()
            .map_err(failed)?;
        perf.load().map_err(failed)?;
        let cpus =
            online_cpus().map_err(|(path, source)| SitesError::OnlineCpus { path, source })?;
        for cpu in cpus {
            perf.attach(
                PerfEventConfig::Software(SoftwareEvent::PageFaults),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Period(options.fault_period),
                false,
            )
            .map_err(|source| SitesError::NoPerfEvents { cpu, source })?;
        }
        Ok(())
    }

    fn detach(&self, ebpf: &mut Ebpf) {
        if let Some(Ok(perf)) = ebpf
            .program_mut(sites_programs::FAULT_SAMPLE)
            .map(<&mut PerfEvent>::try_from)
            && let Err(err) = perf.unload()
        {
            tracing::warn!("unloading {}: {err}", sites_programs::FAULT_SAMPLE);
        }
    }
}

/// mmap, brk and mremap growth.
pub struct Growth;

/// The growth hooks: (program, tracepoint).
const GROWTH_HOOKS: [(&str, &str); 4] = [
    (sites_programs::MMAP_EXIT, "sys_exit_mmap"),
    (sites_programs::MREMAP_EXIT, "sys_exit_mremap"),
    (sites_programs::BRK_ENTER, "sys_enter_brk"),
    (sites_programs::BRK_EXIT, "sys_exit_brk"),
];

impl SitesFamily for Growth {
    fn name(&self) -> &'static str {
        "mmap/brk/mremap growth"
    }

    fn required(&self) -> bool {
        false
    }

    fn can_run(&self, ctx: &PlanContext<'_>) -> Result<(), String> {
        match GROWTH_HOOKS
            .iter()
            .find(|(_, tp)| !ctx.tracefs.has_tracepoint("syscalls", tp))
        {
            Some((_, tp)) => Err(format!(
                "tracepoint syscalls:{tp} not found in {} (a kernel without CONFIG_FTRACE_SYSCALLS)",
                ctx.tracefs.root().display()
            )),
            None => Ok(()),
        }
    }

    fn attach(&self, ebpf: &mut Ebpf, _options: &SitesOptions) -> Result<(), SitesError> {
        for (program, tracepoint) in GROWTH_HOOKS {
            let failed = |source| SitesError::Program {
                family: self.name(),
                program,
                source,
            };
            let tp: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or(SitesError::MissingProgram { program })?
                .try_into()
                .map_err(failed)?;
            tp.load().map_err(failed)?;
            tp.attach("syscalls", tracepoint).map_err(failed)?;
        }
        Ok(())
    }

    fn detach(&self, ebpf: &mut Ebpf) {
        for (program, _) in GROWTH_HOOKS {
            if let Some(Ok(tp)) = ebpf.program_mut(program).map(<&mut TracePoint>::try_from)
                && let Err(err) = tp.unload()
            {
                tracing::warn!("unloading {program}: {err}");
            }
        }
    }
}

/// Every family, in attach order.
pub static FAMILIES: [&dyn SitesFamily; 2] = [&FaultSampler, &Growth];

/// The loaded object and the families attached. Dropping it detaches everything.
pub struct SitesProbes {
    ebpf: Ebpf,
    attached: Vec<&'static dyn SitesFamily>,
    /// Families that could not run, and why (for a warning).
    pub skipped: Vec<(&'static str, String)>,
}

impl SitesProbes {
    /// Load the object configured by `options` and attach every family that can run.
    pub fn load(tracefs: &Tracefs, options: &SitesOptions) -> Result<Self, SitesError> {
        if SITES_OBJECT.is_empty() {
            return Err(SitesError::NoObject);
        }
        let config = config(options)?;
        let mut ebpf = EbpfLoader::new()
            .override_global(sites_maps::SITES_CONFIG, &config, true)
            .load(SITES_OBJECT)
            .map_err(SitesError::Load)?;
        match &options.target {
            Target::Pids(pids) => insert_all(&mut ebpf, sites_maps::TARGET_PIDS, pids, 1u8)?,
            Target::Cgroups(ids) => insert_all(&mut ebpf, sites_maps::TARGET_CGROUPS, ids, 1u8)?,
            Target::All => {}
        }
        let ctx = PlanContext { tracefs, options };
        let mut probes = Self {
            ebpf,
            attached: Vec::new(),
            skipped: Vec::new(),
        };
        for family in FAMILIES {
            if let Err(why) = family.can_run(&ctx) {
                probes.skipped.push((family.name(), why));
                continue;
            }
            match family.attach(&mut probes.ebpf, options) {
                Ok(()) => probes.attached.push(family),
                Err(err) => {
                    family.detach(&mut probes.ebpf);
                    if family.required() {
                        return Err(err);
                    }
                    probes.skipped.push((family.name(), err.to_string()));
                }
            }
        }
        Ok(probes)
    }

    /// Add memory cgroup ids to the target (cgroups created under the target since).
    pub fn add_cgroups(&mut self, ids: &[u64]) -> Result<(), SitesError> {
        insert_all(&mut self.ebpf, sites_maps::TARGET_CGROUPS, ids, 1u8)
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, SitesError> {
        self.ebpf.map(name).ok_or(SitesError::Map {
            name,
            source: MapError::InvalidName {
                name: name.to_owned(),
            },
        })
    }

    /// Every site counted so far (cumulative). Entries that vanish while iterating are skipped.
    pub fn sites(&self) -> Result<Vec<(SiteKey, SiteCounts)>, SitesError> {
        let name = sites_maps::SITES;
        let map: BpfHashMap<&MapData, SiteKey, SiteCounts> = BpfHashMap::try_from(self.map(name)?)
            .map_err(|source| SitesError::Map { name, source })?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    /// A stack by id, leaf first; `None` if the kernel has none under that id.
    pub fn stack(&self, id: i32) -> Option<Vec<u64>> {
        let id = u32::try_from(id).ok()?;
        let map = StackTraceMap::try_from(self.map(sites_maps::SITE_STACKS).ok()?).ok()?;
        let trace = map.get(&id, 0).ok()?;
        Some(trace.frames().iter().map(|frame| frame.ip).collect())
    }

    /// The kernel's counters, summed over CPUs.
    pub fn kernel_stats(&self) -> Result<KernelStats, SitesError> {
        let name = sites_maps::SITES_STATS;
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map(name)?)
            .map_err(|source| SitesError::Map { name, source })?;
        let slot = |index: u32| -> Result<u64, SitesError> {
            let values = map
                .get(&index, 0)
                .map_err(|source| SitesError::Map { name, source })?;
            Ok(values.iter().sum())
        };
        Ok(KernelStats {
            fault_samples: slot(sites_stat::FAULT_SAMPLES)?,
            fault_samples_other: slot(sites_stat::FAULT_SAMPLES_OTHER)?,
            growth_calls: slot(sites_stat::GROWTH_CALLS)?,
            user_stack_collisions: slot(sites_stat::USER_STACK_COLLISIONS)?,
            user_stack_errors: slot(sites_stat::USER_STACK_ERRORS)?,
            kernel_stack_collisions: slot(sites_stat::KERNEL_STACK_COLLISIONS)?,
            kernel_stack_errors: slot(sites_stat::KERNEL_STACK_ERRORS)?,
            sites_full: slot(sites_stat::SITES_FULL)?,
            brk_inflight_full: slot(sites_stat::BRK_INFLIGHT_FULL)?,
        })
    }

    /// Detach every family, then unload the object.
    pub fn detach(mut self) {
        for family in std::mem::take(&mut self.attached) {
            family.detach(&mut self.ebpf);
        }
    }
}

/// The object's configuration: the target mode, and the kernel layouts its programs read.
fn config(options: &SitesOptions) -> Result<SitesConfig, SitesError> {
    let btf = KernelBtf::open(&options.btf_path).map_err(SitesError::NoBtf)?;
    let mut config = SitesConfig {
        target: match options.target {
            Target::Pids(_) => target::PIDS,
            Target::Cgroups(_) => target::CGROUP,
            Target::All => target::ALL,
        },
        flags: if options.kernel_stacks {
            sites_flag::KERNEL_STACKS
        } else {
            0
        },
        self_tgid: std::process::id(),
        page_size: crate::probes::page_size(),
        task_mm: btf
            .offset_of("task_struct", "mm")
            .map_err(SitesError::NoBtf)?,
        mm_brk: btf
            .offset_of("mm_struct", "brk")
            .map_err(SitesError::NoBtf)?,
        ..SitesConfig::DEFAULT
    };
    if matches!(options.target, Target::Cgroups(_)) {
        let v1 =
            crate::cgroup_ids::memory_hierarchy(&options.cgroup_root).is_some_and(|(_, v1)| v1);
        config.cgroup = btf
            .cgroup_layouts()
            .map_err(SitesError::NoBtf)?
            .for_hierarchy(v1);
    }
    Ok(config)
}

fn insert_all<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    keys: &[K],
    value: u8,
) -> Result<(), SitesError> {
    let map = ebpf.map_mut(name).ok_or(SitesError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    })?;
    let mut map: BpfHashMap<&mut MapData, K, u8> =
        BpfHashMap::try_from(map).map_err(|source| SitesError::Map { name, source })?;
    for key in keys {
        map.insert(key, value, 0)
            .map_err(|source| SitesError::Map { name, source })?;
    }
    Ok(())
}
