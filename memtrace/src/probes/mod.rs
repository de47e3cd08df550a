//! Loading and attaching the kernel programs.
//!
//! Programs are grouped in probe families (tasks, faults, mmap, rss, reclaim, oom, lifecycle),
//! each a [`ProbeFamily`] in [`families`] with one lifecycle, in the manner of retis:
//! [`ProbeFamily::plan`] (`can_run`) checks that the running kernel has the hooks, tracepoint
//! fields and BTF layouts the family needs (reading tracefs `format` files, which also yields the
//! field offsets handed to the programs), [`Probes::load`] attaches every family that can run
//! ([`ProbeFamily::attach`]) and records why the others could not, and dropping [`Probes`] (or
//! [`Probes::detach`]) detaches everything. A family the kernel lacks is reported and skipped;
//! the others run.
pub mod batch;
pub mod btf;
pub mod families;
mod hook;
mod plan;
mod report;
pub mod tasks;

use std::fmt;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, links::LinkError},
};
pub use btf::{BtfError, BtfLayouts};
pub use families::{DAEMON_FAMILIES, ProbeFamily, REPLACED_BY_TASKS, TRACE_FAMILIES};
pub(crate) use hook::with_causes;
pub use hook::{AttachError, Hook};
pub use memtrace_api::Family;
use memtrace_common::{COMM_LEN, Config, ProcStats, globals, kind, loss, maps};
pub use plan::{FamilyPlan, PlanContext, PlannedHook, ProbePlan, Role, Unusable};
pub use report::{AttachReport, FamilyStatus};

use crate::tracefs::Tracefs;

/// The eBPF object built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// What to load and how big to make it.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub config: Config,
    /// Families to attach (every hook family by default, as a live trace needs).
    pub families: Vec<Family>,
    /// Capacity of the per-process counter map (`PROC_STATS`).
    pub max_processes: u32,
    /// Size of the discrete-event ring buffer, bytes (power of two, ≥ page size).
    pub events_ring_bytes: u32,
    /// Size of the fault-event ring buffer, bytes (power of two, ≥ page size).
    pub fault_ring_bytes: u32,
    /// The kernel's BTF (struct layouts for the raw rss_stat hook).
    pub btf_path: std::path::PathBuf,
    /// The cgroup filesystem root (`/sys/fs/cgroup`): whether the memory controller is on a v1
    /// hierarchy decides which cgroup the kernel reports for exits and OOM kills.
    pub cgroup_root: std::path::PathBuf,
    /// The hierarchy id of the live trace's cgroup filter (see
    /// `memtrace_common::AttachOffsets::filter_root`), if it has one.
    pub filter_cgroup_root: Option<u32>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            config: Config {
                event_mask: 0,
                filter_flags: 0,
                fault_sample_every: 0,
                page_size: page_size(),
                mmap_min_bytes: u64::MAX,
                reclaim_min_ns: u64::MAX,
                flags: 0,
                reserved: 0,
            },
            families: TRACE_FAMILIES.to_vec(),
            max_processes: 32768,
            events_ring_bytes: 1 << 20,
            fault_ring_bytes: page_size(),
            btf_path: crate::preflight::KERNEL_BTF.into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            filter_cgroup_root: None,
        }
    }
}

/// The kernel's page size.
pub fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

/// Errors from loading the programs. Attach failures of single families are not errors: they are
/// reported in [`AttachReport`].
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "this memtrace binary has no eBPF object (it was built with AYA_BUILD_SKIP=1): rebuild with `cargo xtask build`"
    )]
    NoObject,
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("map {name} is missing from the eBPF object")]
    MissingMap { name: &'static str },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("no probe family could be attached:\n{report}")]
    NothingAttached { report: AttachReport },
    #[error("running the task iterator {program}: {source}")]
    TaskIterator {
        program: &'static str,
        #[source]
        source: TaskIteratorError,
    },
}

/// Why one pass of the task sampler could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TaskIteratorError {
    #[error("the program is missing from the eBPF object")]
    MissingProgram,
    #[error("{0}")]
    Program(#[source] ProgramError),
    #[error("{0}")]
    Link(#[source] LinkError),
}

/// Kernel-side loss counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelLosses {
    /// Ring-buffer reserve failures by event kind (index = `memtrace_common::kind`).
    pub ring_full: [u64; kind::COUNT as usize],
    pub proc_stats_full: u64,
    pub syscall_inflight_full: u64,
    pub reclaim_inflight_full: u64,
    pub mm_owner_full: u64,
    pub filter_pids_full: u64,
}

impl KernelLosses {
    pub fn ring_total(&self) -> u64 {
        self.ring_full.iter().sum()
    }

    pub fn map_total(&self) -> u64 {
        self.proc_stats_full
            + self.syscall_inflight_full
            + self.reclaim_inflight_full
            + self.mm_owner_full
            + self.filter_pids_full
    }
}

/// The loaded, attached programs and their maps. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    report: AttachReport,
}

impl fmt::Debug for Probes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probes")
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl Probes {
    /// Read tracepoint formats and the kernel's BTF, load the object with the resulting
    /// offsets and `options`, and attach every requested family that can run.
    pub fn load(tracefs: &Tracefs, options: &ProbeOptions) -> Result<Self, ProbeError> {
        if EBPF_OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        // Struct layouts for programs that read kernel memory (the task sampler, the raw
        // rss_stat hook, syscall arguments from saved registers): from the running kernel's
        // BTF; without BTF, slower hooks that need none are used instead.
        let layouts = BtfLayouts::read(&options.btf_path);
        let context = PlanContext::new(tracefs, &layouts, options.config.filter_flags);
        let mut plan = ProbePlan::new(&context, &options.families);
        // Exit and OOM events carry the cgroup the kernel knows at the event: the memory
        // controller's on a v1 (or hybrid) host, the default hierarchy's on a unified one.
        match &layouts.cgroup {
            Ok(cgroup) => {
                let v1 = crate::cgroup_ids::memory_hierarchy(&options.cgroup_root)
                    .is_some_and(|(_, v1)| v1);
                plan.offsets.cgroup = cgroup.for_hierarchy(v1);
            }
            Err(err) => tracing::debug!("no cgroup ids in events: {err}"),
        }
        if let Some(root) = options.filter_cgroup_root {
            plan.offsets.attach.filter_root = root;
        }
        // The task iterator is loaded against a BTF function id: aya needs its own parse of the
        // kernel's BTF for that, which the loader then reuses for the object.
        let aya_btf = if plan.needs_kernel_btf() {
            match aya::Btf::parse_file(&options.btf_path, aya::Endianness::default()) {
                Ok(btf) => Some(btf),
                Err(err) => {
                    tracing::warn!("parsing {}: {err}", options.btf_path.display());
                    None
                }
            }
        } else {
            None
        };
        let config = options.config;
        let mut loader = EbpfLoader::new();
        if let Some(btf) = &aya_btf {
            loader.btf(Some(btf));
        }
        let mut ebpf = loader
            .override_global(globals::CONFIG, &config, true)
            .override_global(globals::OFFSETS, &plan.offsets, true)
            .map_max_entries(maps::PROC_STATS, options.max_processes)
            .map_max_entries(maps::MM_OWNER, options.max_processes)
            .map_max_entries(maps::EVENTS, options.events_ring_bytes)
            .map_max_entries(maps::FAULT_EVENTS, options.fault_ring_bytes)
            .load(EBPF_OBJECT)
            .map_err(ProbeError::Load)?;

        // aya-log: only present when a program logs; absence is not an error.
        match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => crate::logging::spawn_ebpf_logger(logger),
            Err(err) => tracing::debug!("eBPF logger not started: {err}"),
        }

        let report =
            plan.attach_with(|planned| planned.family.attach(planned, &mut ebpf, aya_btf.as_ref()));
        drop(aya_btf);
        if !report.any_attached() {
            return Err(ProbeError::NothingAttached { report });
        }
        Ok(Self { ebpf, report })
    }

    pub fn report(&self) -> &AttachReport {
        &self.report
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, ProbeError> {
        self.ebpf.map(name).ok_or(ProbeError::MissingMap { name })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, ProbeError> {
        self.ebpf
            .map_mut(name)
            .ok_or(ProbeError::MissingMap { name })
    }

    /// The per-process counter map, read-only.
    fn proc_stats_map(&self) -> Result<BpfHashMap<&MapData, u32, ProcStats>, ProbeError> {
        BpfHashMap::try_from(self.map(maps::PROC_STATS)?).map_err(|source| ProbeError::Map {
            name: maps::PROC_STATS,
            source,
        })
    }

    /// Counters of one live process, if the kernel tracks it.
    pub fn process_stats(&self, tgid: u32) -> Result<Option<ProcStats>, ProbeError> {
        match self.proc_stats_map()?.get(&tgid, 0) {
            Ok(stats) => Ok(Some(stats)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(ProbeError::Map {
                name: maps::PROC_STATS,
                source,
            }),
        }
    }

    /// Counters of every process the kernel tracks, key by key (two syscalls per entry; the
    /// daemon reads in batches through [`Probes::process_stats_fd`]). Entries that vanish while
    /// iterating (the process exited) are skipped.
    pub fn all_process_stats(&self) -> Result<Vec<(u32, ProcStats)>, ProbeError> {
        Ok(self
            .proc_stats_map()?
            .iter()
            .filter_map(Result::ok)
            .collect())
    }

    /// The `PROC_STATS` map's descriptor, for [`batch::ProcStatsReader`] / [`batch::lookup_all`].
    pub fn process_stats_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, ProbeError> {
        batch::map_fd(self.map(maps::PROC_STATS)?).ok_or(ProbeError::MissingMap {
            name: maps::PROC_STATS,
        })
    }

    /// Number of entries in `PROC_STATS`.
    pub fn tracked_processes(&self) -> Result<usize, ProbeError> {
        Ok(self.proc_stats_map()?.keys().filter(Result::is_ok).count())
    }

    /// Completes an OOM event with the victim's cgroup as the kernel knew it at the kill (the
    /// raw `mark_victim` hook, where the kernel passes the victim's task), unless the event
    /// carries it already (the victim was the trigger). Without it the victim's cgroup is looked
    /// up in /proc, where a victim reaped in the meantime is gone.
    pub fn complete_oom(&mut self, event: &mut crate::events::Event) {
        let crate::events::Event::Oom(oom) = event else {
            return;
        };
        if oom.victim_cgroup_id != 0 {
            return;
        }
        let Some(map) = self.ebpf.map_mut(maps::OOM_VICTIM_CGROUPS) else {
            return;
        };
        let Ok(mut victims) = BpfHashMap::<_, u32, u64>::try_from(map) else {
            return;
        };
        if let Ok(cgroup_id) = victims.get(&oom.victim_pid, 0) {
            oom.victim_cgroup_id = cgroup_id;
            // Read once: a later kill of a process that reuses the pid writes its own.
            let _ = victims.remove(&oom.victim_pid);
        }
    }

    /// Kernel loss counters, summed over CPUs.
    pub fn kernel_losses(&self) -> Result<KernelLosses, ProbeError> {
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map(maps::LOSSES)?)
            .map_err(|source| ProbeError::Map {
                name: maps::LOSSES,
                source,
            })?;
        let slot = |index: u32| -> Result<u64, ProbeError> {
            let values = map.get(&index, 0).map_err(|source| ProbeError::Map {
                name: maps::LOSSES,
                source,
            })?;
            Ok(values.iter().sum())
        };
        let mut losses = KernelLosses::default();
        for k in 0..kind::COUNT {
            losses.ring_full[k as usize] = slot(k)?;
        }
        losses.proc_stats_full = slot(loss::MAP_PROC_STATS)?;
        losses.syscall_inflight_full = slot(loss::MAP_SYSCALL_INFLIGHT)?;
        losses.reclaim_inflight_full = slot(loss::MAP_RECLAIM_INFLIGHT)?;
        losses.mm_owner_full = slot(loss::MAP_MM_OWNER)?;
        losses.filter_pids_full = slot(loss::MAP_FILTER_PIDS)?;
        Ok(losses)
    }

    /// Add tgids to the live-trace pid filter (effective when the config has `filter::PIDS`).
    pub fn add_filter_pids(&mut self, pids: &[u32]) -> Result<(), ProbeError> {
        let mut map: BpfHashMap<&mut MapData, u32, u8> =
            BpfHashMap::try_from(self.map_mut(maps::FILTER_PIDS)?).map_err(|source| {
                ProbeError::Map {
                    name: maps::FILTER_PIDS,
                    source,
                }
            })?;
        for pid in pids {
            map.insert(pid, 1, 0).map_err(|source| ProbeError::Map {
                name: maps::FILTER_PIDS,
                source,
            })?;
        }
        Ok(())
    }

    /// Add cgroup ids (of the hierarchy given as `ProbeOptions::filter_cgroup_root`) to the
    /// live-trace cgroup filter: tasks moved into them join the pid filter at the move.
    pub fn add_filter_cgroups(&mut self, ids: &[u64]) -> Result<(), ProbeError> {
        let mut map: BpfHashMap<&mut MapData, u64, u8> =
            BpfHashMap::try_from(self.map_mut(maps::FILTER_CGROUPS)?).map_err(|source| {
                ProbeError::Map {
                    name: maps::FILTER_CGROUPS,
                    source,
                }
            })?;
        for id in ids {
            map.insert(id, 1, 0).map_err(|source| ProbeError::Map {
                name: maps::FILTER_CGROUPS,
                source,
            })?;
        }
        Ok(())
    }

    /// Set the live-trace comm filter (effective with `filter::COMMS`). Names longer than the
    /// kernel's 15 characters are cut as the kernel cuts them.
    pub fn add_filter_comms(&mut self, comms: &[String]) -> Result<(), ProbeError> {
        let mut map: BpfHashMap<&mut MapData, [u8; COMM_LEN], u8> =
            BpfHashMap::try_from(self.map_mut(maps::FILTER_COMMS)?).map_err(|source| {
                ProbeError::Map {
                    name: maps::FILTER_COMMS,
                    source,
                }
            })?;
        for comm in comms {
            map.insert(comm_key(comm), 1, 0)
                .map_err(|source| ProbeError::Map {
                    name: maps::FILTER_COMMS,
                    source,
                })?;
        }
        Ok(())
    }

    /// One pass of the task sampler: a file whose reads yield a [`memtrace_common::TaskSample`]
    /// per task (see [`tasks::TaskSampler`]). `None` if [`Family::Tasks`] is not attached. Each
    /// pass is a new iterator link: the kernel runs the program while the file is read.
    pub fn task_iterator(&mut self) -> Result<Option<std::fs::File>, ProbeError> {
        if !self.report.attached(Family::Tasks) {
            return Ok(None);
        }
        let program = families::tasks::PROGRAM;
        let failed = |source| ProbeError::TaskIterator { program, source };
        let iter: &mut aya::programs::Iter = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| failed(TaskIteratorError::MissingProgram))?
            .try_into()
            .map_err(|err| failed(TaskIteratorError::Program(err)))?;
        let link = iter
            .attach()
            .and_then(|id| iter.take_link(id))
            .map_err(|err| failed(TaskIteratorError::Program(err)))?;
        link.into_file()
            .map(Some)
            .map_err(|err| failed(TaskIteratorError::Link(err)))
    }

    /// Take the two ring buffers (discrete events, fault events) for reading.
    pub fn take_rings(&mut self) -> Result<(RingBuf<MapData>, RingBuf<MapData>), ProbeError> {
        let mut take = |name: &'static str| -> Result<RingBuf<MapData>, ProbeError> {
            let map = self
                .ebpf
                .take_map(name)
                .ok_or(ProbeError::MissingMap { name })?;
            RingBuf::try_from(map).map_err(|source| ProbeError::Map { name, source })
        };
        Ok((take(maps::EVENTS)?, take(maps::FAULT_EVENTS)?))
    }

    /// Detach and unload everything (also what `Drop` does).
    pub fn detach(self) {
        drop(self);
    }
}

/// A comm as the kernel stores it: at most 15 bytes, NUL-padded to 16.
pub fn comm_key(comm: &str) -> [u8; COMM_LEN] {
    let mut key = [0u8; COMM_LEN];
    let bytes = comm.as_bytes();
    let len = bytes.len().min(COMM_LEN - 1);
    key[..len].copy_from_slice(&bytes[..len]);
    key
}
