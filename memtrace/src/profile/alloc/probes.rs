//! The `memtrace-alloc` object's lifecycle, as retis runs a probe family: [`AllocProbes::can_run`]
//! (the allocator and the functions to probe, or why not), [`AllocProbes::attach`],
//! [`AllocProbes::detach`] (also on drop); and the readers of its maps. With `--duty-cycle` the
//! object stays loaded and its probes come and go: [`AllocProbes::detach_probes`] and
//! [`AllocProbes::attach_probes`] keep the maps.
use std::num::NonZeroU32;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{
        UProbe,
        uprobe::{UProbeLinkId, UProbeScope},
    },
};
use memtrace_common::alloc::{
    AllocConfig, OBJECT_UNIT, Outstanding, OutstandingKey, SAMPLE_TABLE_LEN, SAMPLE_THRESHOLDS,
    SAMPLE_X_MAX, SampleThresholds, StackCounts, StackKey, THRESHOLD_ALWAYS, flag, loss, names,
};

use super::allocator::{self, Allocator, AllocatorError};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace-alloc"));

/// The largest `--sample-rate`: weighted bytes are `size << 32 / threshold` in 64 bits, for
/// sizes below `SAMPLE_X_MAX` rates.
pub const MAX_SAMPLE_RATE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Allocator(#[from] AllocatorError),
    #[error("this memtrace was built without its eBPF objects (AYA_BUILD_SKIP)")]
    NoObject,
    #[error("loading the memtrace-alloc eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program {name} missing from the memtrace-alloc object")]
    MissingProgram { name: &'static str },
    #[error("map {name} missing from the memtrace-alloc object")]
    MissingMap { name: &'static str },
    #[error("loading program {name}: {source}")]
    Program {
        name: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching {function} in {path} (offset {offset:#x}): {source}")]
    Attach {
        function: String,
        path: String,
        offset: u64,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("--sample-rate must be between 1 byte and {} MiB", MAX_SAMPLE_RATE >> 20)]
    SampleRate,
}

/// What is counted and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// Every call (exact counts), else byte-sampled at `rate`.
    pub unsampled: bool,
    /// The mean bytes between samples.
    pub rate: u64,
    /// Allocation sites only: entry probes on the allocating functions, no free and no return
    /// probe (so no pointers, no in-use bytes, no leaks), for `--duty-cycle`.
    pub sites_only: bool,
}

/// What [`AllocProbes::can_run`] found: the process's allocator and the functions to probe.
#[derive(Debug)]
pub struct Plan {
    pub pid: u32,
    pub allocator: Allocator,
    pub config: AllocConfig,
    pub thresholds: Box<SampleThresholds>,
}

/// Map sizes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub sites: u32,
    pub outstanding: u32,
    pub ring_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sites: 65_536,
            outstanding: 262_144,
            ring_bytes: 8 << 20,
        }
    }
}

pub struct AllocProbes {
    ebpf: Ebpf,
    pub plan: Plan,
    /// The probes attached now, by program.
    links: Vec<(&'static str, UProbeLinkId)>,
}

/// `p * 2^32` for each bucket's upper end, `p = 1 - exp(-x)`.
pub fn thresholds() -> Box<SampleThresholds> {
    let mut table = Box::new([0u64; SAMPLE_TABLE_LEN]);
    for (i, slot) in table.iter_mut().enumerate() {
        #[expect(clippy::cast_precision_loss, reason = "small integers")]
        let x = (i + 1) as f64 * SAMPLE_X_MAX as f64 / SAMPLE_TABLE_LEN as f64;
        let p = -(-x).exp_m1();
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "p in (0, 1]: the product is in (0, 2^32]"
        )]
        let threshold = (p * THRESHOLD_ALWAYS as f64).ceil() as u64;
        *slot = threshold.clamp(1, THRESHOLD_ALWAYS);
    }
    table
}

/// The kernel configuration of `mode`.
pub fn config(pid: u32, mode: Mode) -> Result<AllocConfig, ProbeError> {
    let rate = mode.rate;
    if !(1..=MAX_SAMPLE_RATE).contains(&rate) {
        return Err(ProbeError::SampleRate);
    }
    let x_divisor = rate * SAMPLE_X_MAX;
    let mut flags = 0;
    if mode.unsampled {
        flags |= flag::UNSAMPLED;
    }
    if mode.sites_only {
        flags |= flag::SITES_ONLY;
    }
    Ok(AllocConfig {
        tgid: pid,
        flags,
        sample_rate: rate,
        x_divisor,
        linear_below: x_divisor / SAMPLE_TABLE_LEN as u64,
    })
}

/// Weighted objects (fixed point, [`OBJECT_UNIT`]) as a count.
pub fn objects(fixed: u64) -> i64 {
    i64::try_from(fixed.saturating_add(OBJECT_UNIT / 2) / OBJECT_UNIT).unwrap_or(i64::MAX)
}

impl AllocProbes {
    /// `can_run`: the allocator of `pid` and what to probe in it, or why it cannot be profiled.
    pub fn can_run(proc_root: &std::path::Path, pid: u32, mode: Mode) -> Result<Plan, ProbeError> {
        if OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        let config = config(pid, mode)?;
        let allocator = allocator::find(proc_root, pid)?;
        Ok(Plan {
            pid,
            allocator,
            config,
            thresholds: thresholds(),
        })
    }

    /// Load the object and attach an entry probe to each function (and the return probe to each
    /// that returns a pointer), for the planned process only.
    pub fn attach(plan: Plan, limits: Limits) -> Result<Self, ProbeError> {
        let mut probes = Self::load(plan, limits)?;
        probes.attach_probes()?;
        Ok(probes)
    }

    /// Load the object and its programs, attached to nothing yet.
    pub fn load(plan: Plan, limits: Limits) -> Result<Self, ProbeError> {
        let ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &plan.config, true)
            .override_global(SAMPLE_THRESHOLDS, &*plan.thresholds, true)
            .map_max_entries(names::STACKS, limits.sites)
            .map_max_entries(names::OUTSTANDING, limits.outstanding)
            .map_max_entries(names::SAMPLES, limits.ring_bytes)
            .load(OBJECT)
            .map_err(|err| ProbeError::Load(Box::new(err)))?;
        let mut probes = Self {
            ebpf,
            plan,
            links: Vec::new(),
        };
        let mut programs: Vec<&'static str> = probes.probes().map(|(_, name)| name).collect();
        programs.sort_unstable();
        programs.dedup();
        for name in programs {
            program(&mut probes.ebpf, name)?
                .load()
                .map_err(|source| ProbeError::Program {
                    name,
                    source: Box::new(source),
                })?;
        }
        Ok(probes)
    }

    /// Whether only allocation sites are counted (entry probes only).
    pub fn sites_only(&self) -> bool {
        self.plan.config.flags & flag::SITES_ONLY != 0
    }

    /// Every (function, program) to attach: each function's entry probe, and the return probe of
    /// each that returns a pointer; sites only, the allocating functions' entries alone.
    fn probes(&self) -> impl Iterator<Item = (&allocator::Function, &'static str)> {
        let sites_only = self.sites_only();
        self.plan
            .allocator
            .functions
            .iter()
            .filter(move |f| !sites_only || f.entry.allocates())
            .flat_map(move |f| {
                let ret = (!sites_only && f.entry.allocates()).then_some((f, "alloc_return"));
                std::iter::once((f, f.entry.program())).chain(ret)
            })
    }

    /// Attach every probe (after [`Self::detach_probes`], again).
    pub fn attach_probes(&mut self) -> Result<(), ProbeError> {
        if !self.links.is_empty() {
            return Ok(());
        }
        let scope =
            UProbeScope::OneProcess(NonZeroU32::new(self.plan.pid).unwrap_or(NonZeroU32::MIN));
        let targets: Vec<(allocator::Function, &'static str)> =
            self.probes().map(|(f, name)| (f.clone(), name)).collect();
        for (function, name) in targets {
            let attached = program(&mut self.ebpf, name)?
                .attach(function.offset, &self.plan.allocator.path, scope)
                .map_err(|source| ProbeError::Attach {
                    function: function.name.clone(),
                    path: self.plan.allocator.mapped_path.display().to_string(),
                    offset: function.offset,
                    source: Box::new(source),
                });
            match attached {
                Ok(link) => self.links.push((name, link)),
                Err(err) => {
                    self.detach_probes();
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Pause or resume counting (sites only), the probes attached or not.
    pub fn set_paused(&mut self, paused: bool) -> Result<(), ProbeError> {
        let name = names::PAUSED;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(ProbeError::MissingMap { name })?;
        let mut array: Array<&mut MapData, u32> =
            Array::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        array
            .set(0, u32::from(paused), 0)
            .map_err(|source| ProbeError::Map { name, source })
    }

    /// Detach every probe, keeping the object and its maps. Returns at once, the probes detached
    /// on a thread in the order they were attached (malloc first, the busiest). Detaching a uprobe
    /// removes its breakpoint, then waits out an RCU grace period with a kernel-wide mutex held
    /// (about 65 ms on 6.18), so the probes go one after the other, and attaching again waits for
    /// the last of them. Pause counting first ([`Self::set_paused`]).
    pub fn detach_probes(&mut self) {
        let mut links = Vec::new();
        for (name, link) in std::mem::take(&mut self.links) {
            if let Ok(link) = program(&mut self.ebpf, name).and_then(|program| {
                program
                    .take_link(link)
                    .map_err(|source| ProbeError::Program {
                        name,
                        source: Box::new(source),
                    })
            }) {
                links.push(link);
            }
        }
        let detach = std::thread::Builder::new()
            .name("memtrace-detach".into())
            .spawn(move || drop(links));
        // No thread to be had: `links` was dropped with the closure, detached here.
        if let Err(err) = detach {
            tracing::debug!("detaching the allocator probes on this thread: {err}");
        }
    }

    /// Detach every probe (the object is unloaded with it).
    pub fn detach(self) {
        drop(self.ebpf);
    }

    pub fn samples(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map(names::SAMPLES)
            .ok_or(ProbeError::MissingMap {
                name: names::SAMPLES,
            })?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: names::SAMPLES,
            source,
        })
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, ProbeError> {
        self.ebpf.map(name).ok_or(ProbeError::MissingMap { name })
    }

    /// Every site's counters.
    pub fn sites(&self) -> Result<Vec<(StackKey, StackCounts)>, ProbeError> {
        let name = names::STACKS;
        let map: BpfHashMap<&MapData, StackKey, StackCounts> =
            BpfHashMap::try_from(self.map(name)?)
                .map_err(|source| ProbeError::Map { name, source })?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    /// Every outstanding allocation.
    pub fn outstanding(&self) -> Result<Vec<(OutstandingKey, Outstanding)>, ProbeError> {
        let name = names::OUTSTANDING;
        let map: BpfHashMap<&MapData, OutstandingKey, Outstanding> =
            BpfHashMap::try_from(self.map(name)?)
                .map_err(|source| ProbeError::Map { name, source })?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    /// The frame-pointer stack of a site (leaf first), as the kernel walked it.
    pub fn stack_trace(&self, id: u32) -> Option<Vec<u64>> {
        let map: StackTraceMap<&MapData> =
            StackTraceMap::try_from(self.map(names::STACK_TRACES).ok()?).ok()?;
        let trace = map.get(&id, 0).ok()?;
        Some(trace.frames().iter().map(|frame| frame.ip).collect())
    }

    /// The counters of `ALLOC_LOSSES`, summed over CPUs.
    pub fn counters(&self) -> Result<[u64; loss::SLOTS as usize], ProbeError> {
        let name = names::LOSSES;
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map(name)?)
            .map_err(|source| ProbeError::Map { name, source })?;
        let mut out = [0u64; loss::SLOTS as usize];
        for (slot, total) in out.iter_mut().enumerate() {
            #[expect(clippy::cast_possible_truncation, reason = "SLOTS is small")]
            if let Ok(values) = map.get(&(slot as u32), 0) {
                *total = values.iter().sum();
            }
        }
        Ok(out)
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, ProbeError> {
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram { name })?
        .try_into()
        .map_err(|source| ProbeError::Program {
            name,
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use memtrace_common::alloc::threshold_for;

    use super::*;

    #[test]
    fn the_table_is_one_minus_exp_and_small_sizes_are_linear() {
        let config = config(1, sampled(512 << 10)).unwrap();
        let table = thresholds();
        let p = |size: u64| {
            #[expect(clippy::cast_precision_loss, reason = "a ratio")]
            let p = threshold_for(&config, |i| table[i], size) as f64 / THRESHOLD_ALWAYS as f64;
            p
        };
        // Linear below the first bucket: 64 bytes at 512 KiB is 1/8192.
        assert!((p(64) - 64.0 / 524_288.0).abs() < 1e-9, "{}", p(64));
        // 512 KiB: about 1 - 1/e (the bucket's upper end, within one bucket of 24/1024).
        let expected = 1.0 - (-1.0f64).exp();
        assert!((p(512 << 10) - expected).abs() < 0.01, "{}", p(512 << 10));
        // Past 24 rates: always.
        assert_eq!(
            threshold_for(&config, |i| table[i], 13 << 20),
            THRESHOLD_ALWAYS
        );
        assert!(p(1) > 0.0);
    }

    #[test]
    fn unsampled_takes_everything_with_weight_one() {
        let config = config(
            1,
            Mode {
                unsampled: true,
                ..sampled(512 << 10)
            },
        )
        .unwrap();
        let table = thresholds();
        assert_eq!(threshold_for(&config, |i| table[i], 1), THRESHOLD_ALWAYS);
        assert_eq!(objects(3 * OBJECT_UNIT), 3);
    }

    #[test]
    fn rates_beyond_the_fixed_point_range_are_refused() {
        assert!(config(1, sampled(0)).is_err());
        assert!(config(1, sampled(MAX_SAMPLE_RATE + 1)).is_err());
    }

    #[test]
    fn the_mode_is_the_kernels_flags() {
        let flags = |mode| config(1, mode).unwrap().flags;
        assert_eq!(flags(sampled(1)), 0);
        let every_site = Mode {
            unsampled: true,
            sites_only: true,
            rate: 1,
        };
        assert_eq!(flags(every_site), flag::UNSAMPLED | flag::SITES_ONLY);
    }

    fn sampled(rate: u64) -> Mode {
        Mode {
            unsampled: false,
            rate,
            sites_only: false,
        }
    }
}
