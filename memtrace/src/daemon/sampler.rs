//! One sampling tick: the kernel's per-process counters with the processes' identities, the
//! node, and the cgroups in use, folded into the model. Every file is read under the host's
//! paths ([`HostPaths`]), so a containerised daemon reads the host's and tests read fixtures.
use std::{sync::Arc, time::Instant};

use memtrace_common::{ExitEvent, ProcStats};

use crate::{
    cgroup::CgroupFs,
    cgroup_ids::CgroupIds,
    events::Event,
    host::HostPaths,
    model::Model,
    node::NodeReader,
    probes::{ProbeError, Probes, batch::ProcStatsReader, page_size, tasks::TaskSampler},
    procfs::{ProcFs, ProcessCache, ProcessInfo},
};

/// Why a tick's per-process counters could not be read (the tick is then skipped).
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("opening the task iterator: {0}")]
    TaskIterator(#[source] ProbeError),
    #[error("task sampler: {0}")]
    TaskSampler(#[source] std::io::Error),
    #[error("PROC_STATS: {0}")]
    ProcStatsMap(#[source] ProbeError),
    #[error("reading PROC_STATS: {0}")]
    ProcStatsRead(#[source] std::io::Error),
}

/// Reads of a killed cgroup's usage and `memory.stat` at most, until its usage holds still.
const KILL_READ_ATTEMPTS: u32 = 10;
/// Usage change between two reads that counts as holding still.
const KILL_READ_STILL_BYTES: u64 = 256 << 10;

/// The readers and the buffers kept between ticks (10,000 processes need 2 MB of them).
pub struct Sampler {
    cache: ProcessCache,
    node: NodeReader,
    cgroups: CgroupFs,
    /// Cgroup ids of exit and OOM events to paths.
    cgroup_ids: CgroupIds,
    stats_reader: ProcStatsReader,
    stats: Vec<(u32, ProcStats)>,
    tasks: TaskSampler,
    samples: Vec<(u32, ProcStats, Option<Arc<ProcessInfo>>)>,
}

impl Sampler {
    /// Readers of `host`'s `/proc` and cgroup filesystem; at most `max_processes` identities
    /// are cached.
    pub fn new(host: &HostPaths, max_processes: usize) -> Self {
        Self {
            cache: ProcessCache::new(ProcFs::new(&host.proc), max_processes),
            node: NodeReader::new(&host.proc),
            cgroups: CgroupFs::new(&host.cgroup),
            cgroup_ids: CgroupIds::new(&host.cgroup),
            stats_reader: ProcStatsReader::default(),
            stats: Vec::new(),
            tasks: TaskSampler::default(),
            samples: Vec::new(),
        }
    }

    /// A process's identity, read now if not cached. Identity must be read while the process
    /// still exists: an OOM victim's cgroup is looked up on its kill, before its exit empties
    /// `/proc/<pid>`.
    pub fn identify(&mut self, pid: u32, now: Instant) -> Option<Arc<ProcessInfo>> {
        self.cache.get_trusted(pid, now)
    }

    /// Forgets a process's identity (it exited, or exec'd into another program).
    pub fn forget(&mut self, pid: u32) {
        self.cache.invalidate(pid);
    }

    /// The cgroup the kernel reported for `event`'s subject (an exit's process, an OOM kill's
    /// victim), as a path, for [`Model::observe_event_in`]. An OOM victim's cgroup is tracked
    /// and its memory (the limit) read now: it may be new to the model, and gone by the next
    /// tick.
    pub fn event_cgroup(
        &mut self,
        model: &mut Model,
        event: &Event,
        now: Instant,
    ) -> Option<String> {
        let id = match event {
            Event::Exit(exit) => exit.cgroup_id,
            Event::Oom(oom) => oom.victim_cgroup_id,
            _ => return None,
        };
        let path = self.cgroup_ids.path(id)?.to_owned();
        if let Event::Oom(_) = event {
            model.track_cgroup(&path);
            if let Ok(memory) = self.cgroups.memory(&path) {
                model.observe_cgroup(now, &path, memory);
            }
        }
        Some(path)
    }

    /// Completes an exit event with the task sampler's last counters for the process.
    pub fn complete_exit(&mut self, exit: &mut ExitEvent) {
        self.tasks.complete_exit(exit);
    }

    /// One tick: processes (the kernel counters with identities), the node, then the cgroups the model
    /// knows of.
    pub fn tick(&mut self, model: &mut Model, probes: &mut Probes, now: Instant) {
        // A tick without complete counters is skipped: half of them would read as processes
        // whose counters went backwards.
        match self.read_processes(probes, now) {
            Ok(()) => {
                model.observe_processes(now, &self.samples);
                // Identities are shared with the cache; do not keep them alive past the tick.
                self.samples.clear();
            }
            Err(err) => tracing::warn!("reading per-process counters: {err}"),
        }
        self.observe_host(model, now);
    }

    /// Completes the newest OOM record with its cgroup read now, right after the kill: the
    /// usage and the `memory.stat` breakdown (what the memory was, beyond the victim's RSS).
    pub fn describe_kill(&mut self, model: &mut Model) {
        let Some(path) = model.last_oom().and_then(|r| r.victim_cgroup.clone()) else {
            return;
        };
        // The victim's memory is being freed as we read (the OOM reaper, its exit): a usage read
        // apart from memory.stat would not add up. Read the usage on both sides of memory.stat
        // until it holds still (a few ms at most, once per kill).
        let usage = |cgroups: &CgroupFs| cgroups.memory(&path).ok().and_then(|m| m.usage_bytes);
        let mut attempt = 0;
        let (usage, stat) = loop {
            let before = usage(&self.cgroups);
            let stat = self
                .cgroups
                .memory_stat(&path)
                .inspect_err(|err| tracing::debug!("memory.stat of {path}: {err}"))
                .ok();
            let after = usage(&self.cgroups);
            attempt += 1;
            let still = match (before, after) {
                (Some(b), Some(a)) => b.abs_diff(a) <= KILL_READ_STILL_BYTES,
                _ => true,
            };
            if still || attempt == KILL_READ_ATTEMPTS {
                break (after, stat);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        model.complete_last_oom(usage, stat);
    }

    /// The node and the cgroups in use: the files under the host's paths.
    pub fn observe_host(&mut self, model: &mut Model, now: Instant) {
        match self.node.sample() {
            Ok(sample) => model.observe_node(sample),
            Err(err) => tracing::debug!("node sample: {err}"),
        }
        for path in model.cgroup_paths() {
            match self.cgroups.memory(&path) {
                Ok(memory) => model.observe_cgroup(now, &path, memory),
                Err(err) => tracing::debug!("cgroup {path}: {err}"),
            }
        }
    }

    /// The kernel's counters into `self.samples`, each with its process's identity.
    ///
    /// With the task sampler, the processes are those it finds (every user process), and one
    /// pass carries all their counters: faults and RSS from the kernel's task counters, the hook
    /// counters (mmap family, reclaim) from `PROC_STATS`. Without it they are `PROC_STATS`'s
    /// entries, read in batches: at 10,000 processes, key-by-key reading is 20,000 syscalls a
    /// tick.
    fn read_processes(&mut self, probes: &mut Probes, now: Instant) -> Result<(), SampleError> {
        self.samples.clear();
        let pass_started = Instant::now();
        let iterator = probes.task_iterator().map_err(SampleError::TaskIterator)?;
        if let Some(file) = iterator {
            let totals = self.tasks.read(file).map_err(SampleError::TaskSampler);
            tracing::debug!(
                processes = totals.as_ref().ok().map(|t| t.len()),
                elapsed_us = pass_started.elapsed().as_micros() as u64,
                "task sampler pass"
            );
            let page = u64::from(page_size());
            let cache = &mut self.cache;
            self.samples.extend(
                totals?
                    .iter()
                    .map(|(&pid, totals)| (pid, totals.stats(page), cache.get_trusted(pid, now))),
            );
            return Ok(());
        }
        let fd = probes
            .process_stats_fd()
            .map_err(SampleError::ProcStatsMap)?;
        self.stats_reader
            .read(fd, &mut self.stats)
            .map_err(SampleError::ProcStatsRead)?;
        let cache = &mut self.cache;
        self.samples.extend(
            self.stats
                .iter()
                .map(|&(pid, stats)| (pid, stats, cache.get_trusted(pid, now))),
        );
        Ok(())
    }
}
