//! The daemon's model of memory pressure (per process, per cgroup, per node).
//!
//! Raw cumulative kernel counters go in (one [`Model::observe_processes`] tick per
//! `sample_interval`, plus ring-buffer events, cgroup and node readings); rates, rollups and
//! scores are derived when a [`Snapshot`](memtrace_api::Snapshot) is taken and never stored. Time is passed in by the
//! caller, never read here, so the model is deterministic under test.
//!
//! Memory is bounded everywhere: each process and cgroup keeps a fixed-size ring of samples
//! ([`ModelConfig::history_capacity`] entries, ≈ 61); exited processes are kept for
//! `exited_grace` and at most `max_exited` of them; cgroups without live processes disappear
//! unless OOM-killed within `oom_label_retention`; OOM records are capped at `max_oom_records`.
//! The number of live processes is bounded by the caller's input (the kernel's `PROC_STATS` map).
//!
//! With a [`ModelConfig::scope`] (`--cgroup-root`) the model holds only the processes in that
//! cgroup subtree: a process that moves out leaves the model (what it did inside stays counted
//! in its cgroup and the node totals), one that moves in is counted from then on, and the exits
//! and OOM kills of processes outside are not counted.
pub mod growth;
mod history;
pub mod instance_history;
mod oom;
mod scope;
pub mod score;
mod views;
pub mod workloads;
pub use scope::{CgroupRoot, CgroupRootError};
pub use views::CmdlineMode;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use memtrace_common::{ExitEvent, OomEvent, ProcStats, oom_field, rss_member};

use crate::PidMap;
use crate::cgroup::{CgroupIdentity, CgroupMemory};
use crate::counters::{add_counters, counters_json, dominates, sub_counters};
use crate::events::{Event, comm_str};
use crate::node::NodeSample;
use crate::procfs::ProcessInfo;
use crate::workload::Identifier;
use growth::{GrowthConfig, LeakTracker};
use history::{Ring, Sample, SampleHistory};
use memtrace_api::{Counters, OomRecord, OwnerView};
use oom::AwaitingExit;
use views::{owner_view, unix_ms};

/// Cgroup of processes whose cgroup is unknown.
const ROOT_CGROUP: &str = "/";
/// Comm of a process we know nothing about.
const UNKNOWN_COMM: &str = "?";
/// Upper bound on a history ring, whatever the configured windows (an hour at 1 s).
const MAX_HISTORY: usize = 3600;
/// Processes of the victim's cgroup listed in an OOM record at most (the largest by RSS).
pub const MAX_OOM_CGROUP_PROCESSES: usize = 20;

/// Tuning of the [`Model`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// Window over which rates are computed (10 s).
    pub rate_window: Duration,
    /// History kept before an OOM kill for its flight recording (60 s).
    pub flight_window: Duration,
    /// Pace at which the daemon calls [`Model::observe_processes`] (1 s); sizes the rings.
    pub sample_interval: Duration,
    /// OOM records kept; the oldest is dropped beyond this (64).
    pub max_oom_records: usize,
    /// How long an exited process's history is kept (10 s), so an OOM event that arrives after
    /// the victim vanished from a tick (or after its exit event) still gets a flight recording.
    pub exited_grace: Duration,
    /// How long a cgroup without live processes stays listed after an OOM kill in it (1 h), so
    /// the kill stays attributable to it in snapshots.
    pub oom_label_retention: Duration,
    /// Exited processes kept at most during their grace (2048): a fork storm must not grow the
    /// model without bound. Beyond it, the earliest exited are forgotten first.
    pub max_exited: usize,
    /// What snapshots show of each process's command line.
    pub cmdline: CmdlineMode,
    /// `--cgroup-root`: only processes in this cgroup subtree are modelled (`None`: all).
    pub scope: Option<CgroupRoot>,
    /// `--node-name`, carried in snapshots.
    pub node_name: Option<String>,
    /// `--growth-window`, `--leak-window`, `--leak-min-growth` (see [`growth`]).
    pub growth: GrowthConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            rate_window: Duration::from_secs(10),
            flight_window: Duration::from_secs(60),
            sample_interval: Duration::from_secs(1),
            max_oom_records: 64,
            exited_grace: Duration::from_secs(10),
            oom_label_retention: Duration::from_secs(3600),
            max_exited: 2048,
            cmdline: CmdlineMode::default(),
            scope: None,
            node_name: None,
            growth: GrowthConfig::default(),
        }
    }
}

impl ModelConfig {
    /// Entries in every history ring: enough to span the longest of the rate, flight and growth
    /// windows at `sample_interval`, both ends included (61 with the defaults), at most 3600.
    pub fn history_capacity(&self) -> usize {
        let span = self
            .rate_window
            .max(self.flight_window)
            .max(self.growth.window)
            .as_secs_f64();
        let step = self.sample_interval.as_secs_f64();
        if step <= 0.0 {
            return MAX_HISTORY;
        }
        // Float-to-int `as` saturates; a tiny epsilon keeps 60.000000001 from becoming 62.
        let intervals = (span / step - 1e-9).ceil().max(1.0) as usize;
        intervals.saturating_add(1).min(MAX_HISTORY)
    }
}

fn rss_total(s: &ProcStats) -> u64 {
    s.rss[rss_member::ANON]
        .saturating_add(s.rss[rss_member::FILE])
        .saturating_add(s.rss[rss_member::SHMEM])
}

// ---- state ------------------------------------------------------------------------------------

/// A counter base (see [`ProcessEntry::cgroup_base`]): zero for almost every process, so it is
/// boxed only when it is not, which keeps 200 bytes per process out of the common case.
#[derive(Clone, Debug, Default)]
struct Base(Option<Box<ProcStats>>);

impl Base {
    fn set(&mut self, base: &ProcStats) {
        self.0 = (*base != ProcStats::default()).then(|| Box::new(*base));
    }

    /// `counters − base` on the cumulative counters, saturating; gauges zero.
    fn since(&self, counters: &ProcStats) -> ProcStats {
        match &self.0 {
            Some(base) => sub_counters(counters, base),
            None => sub_counters(counters, &ProcStats::default()),
        }
    }
}

/// One process (thread group) the model tracks.
#[derive(Clone, Debug)]
struct ProcessEntry {
    /// Last known identity (kept when a tick does not know it).
    info: Option<Arc<ProcessInfo>>,
    /// Comm from an exec event, newer than `info` (the identity cache may predate the exec).
    exec_comm: Option<String>,
    /// The cgroup the kernel reported at the process's exit: it wins over `info`'s (read from
    /// `/proc` earlier, or never).
    kernel_cgroup: Option<String>,
    latest: ProcStats,
    /// Bounded history of samples, oldest first.
    history: SampleHistory,
    /// Part of `latest` already folded into its cgroup's exited totals (after moving between
    /// cgroups, or being revived from the exited list): the cgroup counts `latest − cgroup_base`.
    cgroup_base: Base,
    /// The same for the node-wide totals.
    node_base: Base,
    /// The last [`Model::observe_processes`] tick that listed it.
    seen: u64,
    oom_kills_as_victim: u64,
    oom_kills_as_trigger: u64,
    /// Downsampled RSS over the leak window, and whether it looks like a leak.
    leak: LeakTracker,
}

impl ProcessEntry {
    fn new(
        now: Instant,
        stats: &ProcStats,
        info: Option<&Arc<ProcessInfo>>,
        capacity: usize,
    ) -> Self {
        Self {
            info: info.cloned(),
            exec_comm: None,
            kernel_cgroup: None,
            latest: *stats,
            history: SampleHistory::new(capacity, Sample::new(now, stats)),
            cgroup_base: Base::default(),
            node_base: Base::default(),
            seen: 0,
            oom_kills_as_victim: 0,
            oom_kills_as_trigger: 0,
            leak: LeakTracker::new(now, rss_total(stats)),
        }
    }

    /// The cgroup as known, `None` if it is not.
    fn cgroup(&self) -> Option<&str> {
        self.kernel_cgroup
            .as_deref()
            .or_else(|| self.info.as_ref().and_then(|i| i.cgroup.as_deref()))
    }

    /// The cgroup it is rolled up into.
    fn cgroup_key(&self) -> &str {
        self.cgroup().unwrap_or(ROOT_CGROUP)
    }

    fn comm(&self) -> &str {
        self.exec_comm
            .as_deref()
            .or(self.info.as_ref().map(|i| i.comm.as_str()))
            .unwrap_or(UNKNOWN_COMM)
    }

    fn start_ticks(&self) -> Option<u64> {
        self.info.as_ref().map(|i| i.start_ticks)
    }
}

/// A process that left the live set, kept for `exited_grace`.
#[derive(Clone, Debug)]
struct ExitedEntry {
    process: ProcessEntry,
    exited_at: Instant,
    /// Absolute counters already folded into the exited totals.
    folded: ProcStats,
    /// Its exit event was seen (the counters in `folded` are final).
    exit_seen: bool,
}

#[derive(Clone, Debug)]
struct CgroupEntry {
    owner: OwnerView,
    /// Who owns it, parsed from the path once (the workload rules read it).
    identity: CgroupIdentity,
    /// Totals of processes that left this cgroup (exited or moved out), so the cgroup's
    /// cumulative counters never go backwards.
    exited: ProcStats,
    memory: Option<CgroupMemory>,
    /// Bounded ring of (time, usage bytes), for flight recordings.
    usage: Ring<(Instant, u64)>,
    /// Bounded ring of (time, RSS of its live processes), one per tick: its growth.
    rss: Ring<(Instant, u64)>,
    oom_kills: u64,
    last_oom: Option<Instant>,
}

impl CgroupEntry {
    fn new(path: &str, capacity: usize) -> Self {
        Self {
            owner: owner_view(path),
            identity: crate::cgroup::identify(path),
            exited: ProcStats::default(),
            memory: None,
            usage: Ring::new(capacity),
            rss: Ring::new(capacity),
            oom_kills: 0,
            last_oom: None,
        }
    }

    fn oom_within(&self, now: Instant, window: Duration) -> bool {
        self.last_oom
            .is_some_and(|t| now.saturating_duration_since(t) <= window)
    }
}

/// Adds a cgroup entry unless there is one; whether it did.
fn insert_cgroup(cgroups: &mut HashMap<String, CgroupEntry>, path: &str, capacity: usize) -> bool {
    if cgroups.contains_key(path) {
        return false;
    }
    cgroups.insert(path.to_owned(), CgroupEntry::new(path, capacity));
    true
}

/// The memory-pressure model. See the module documentation.
#[derive(Debug)]
pub struct Model {
    config: ModelConfig,
    capacity: usize,
    live: PidMap<ProcessEntry>,
    exited: PidMap<ExitedEntry>,
    cgroups: HashMap<String, CgroupEntry>,
    node: Option<NodeSample>,
    /// Counters of every process that exited (including ones never seen live), node-wide.
    node_exited: ProcStats,
    /// Newest first, at most `max_oom_records`.
    ooms: VecDeque<OomRecord>,
    /// [`Model::observe_processes`] calls so far (stamps [`ProcessEntry::seen`]).
    tick: u64,
    /// A cgroup may have lost its last process since the last [`Model::prune`] sweep.
    cgroups_dirty: bool,
    /// The last sweep kept a cgroup only for a recent OOM kill: sweep again, it may expire.
    oom_retained: bool,
    /// OOM victims that died before the daemon's sample at the kill: their exit's final counters
    /// complete the record's last flight sample. Dropped after `exited_grace`.
    awaiting_exit: PidMap<AwaitingExit>,
    /// The OOM record an exit just completed (its timestamp and victim), to persist again.
    completed_oom: Option<(u64, u32)>,
    /// Names each process's workload in snapshots.
    identifier: Identifier,
    /// Processes outside the scope in the last tick, with that tick: one that shows up inside
    /// later moved in, and is counted from there (not from its start).
    outside: PidMap<u64>,
}

impl Model {
    pub fn new(config: ModelConfig) -> Self {
        let capacity = config.history_capacity();
        Self {
            config,
            capacity,
            live: HashMap::default(),
            exited: HashMap::default(),
            cgroups: HashMap::new(),
            node: None,
            node_exited: ProcStats::default(),
            ooms: VecDeque::new(),
            tick: 0,
            cgroups_dirty: false,
            oom_retained: false,
            awaiting_exit: HashMap::default(),
            completed_oom: None,
            identifier: Identifier::default(),
            outside: HashMap::default(),
        }
    }

    /// Names workloads with `identifier` (Kubernetes metadata, container names) from now on.
    #[must_use]
    pub fn with_identifier(mut self, identifier: Identifier) -> Self {
        self.identifier = identifier;
        self
    }

    /// Whether cgroup `path` is in the model's scope.
    fn in_scope(&self, path: &str) -> bool {
        self.config
            .scope
            .as_ref()
            .is_none_or(|root| root.holds(path))
    }

    /// Whether a process of a tick is in scope: by the cgroup it is in now, else the one last
    /// known (a failed read must not drop a process), else not (without a scope, always).
    fn sample_in_scope(&self, pid: u32, info: Option<&Arc<ProcessInfo>>) -> bool {
        let Some(root) = &self.config.scope else {
            return true;
        };
        info.and_then(|i| i.cgroup.as_deref())
            .or_else(|| self.live.get(&pid).and_then(ProcessEntry::cgroup))
            .is_some_and(|path| root.holds(path))
    }

    /// A live process moved out of scope: what it did until the last tick stays counted in its
    /// cgroup and the node totals, and the model forgets it.
    fn leave_scope(&mut self, pid: u32) {
        let Some(entry) = self.live.remove(&pid) else {
            return;
        };
        if let Some(cg) = self.cgroups.get_mut(entry.cgroup_key()) {
            add_counters(&mut cg.exited, &entry.cgroup_base.since(&entry.latest));
        }
        add_counters(&mut self.node_exited, &entry.node_base.since(&entry.latest));
        self.cgroups_dirty = true;
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// One sampling tick: all live processes' kernel counters with their identity (`None` =
    /// unknown: keep counting, comm "?" unless known before). A tracked process missing from the
    /// tick is gone (its exit event may come later, or never): it moves to the exited list.
    pub fn observe_processes(
        &mut self,
        now: Instant,
        samples: &[(u32, ProcStats, Option<Arc<ProcessInfo>>)],
    ) {
        self.tick += 1;
        let tick = self.tick;
        for (pid, stats, info) in samples {
            if !self.sample_in_scope(*pid, info.as_ref()) {
                self.leave_scope(*pid);
                self.outside.insert(*pid, tick);
                continue;
            }
            let moved_in = self.outside.remove(pid).is_some();
            let new = moved_in && !self.live.contains_key(pid);
            self.observe_process(now, *pid, stats, info.as_ref());
            if new && let Some(entry) = self.live.get_mut(pid) {
                // Counted from its arrival: what it did before was outside.
                entry.cgroup_base.set(stats);
                entry.node_base.set(stats);
            }
        }
        if self.config.scope.is_some() {
            self.outside.retain(|_, seen| *seen == tick);
        }
        let gone: Vec<u32> = self
            .live
            .iter()
            .filter(|(_, entry)| entry.seen != tick)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            if let Some(entry) = self.live.remove(&pid) {
                self.retire(now, pid, entry, None, false);
            }
        }
        self.prune(now);
        self.record_cgroup_rss(now);
    }

    /// Each cgroup's RSS (its live processes' sum) at this tick, for its growth.
    fn record_cgroup_rss(&mut self, now: Instant) {
        let mut sums: HashMap<&str, u64> = HashMap::with_capacity(self.cgroups.len());
        for entry in self.live.values() {
            let sum = sums.entry(entry.cgroup_key()).or_default();
            *sum = sum.saturating_add(rss_total(&entry.latest));
        }
        for (path, cg) in &mut self.cgroups {
            cg.rss
                .push((now, sums.get(path.as_str()).copied().unwrap_or(0)));
        }
    }

    fn observe_process(
        &mut self,
        now: Instant,
        pid: u32,
        stats: &ProcStats,
        info: Option<&Arc<ProcessInfo>>,
    ) {
        let start = info.map(|i| i.start_ticks);
        let same_start =
            |known: Option<u64>| !matches!((start, known), (Some(a), Some(b)) if a != b);
        if !self.live.contains_key(&pid)
            && let Some(exited) = self.exited.get(&pid)
            && same_start(exited.process.start_ticks())
        {
            if exited.exit_seen {
                // Read from the kernel map before the exit removed it, handled after the exit
                // event: the dead process, not a new one. (One never seen live, known only by
                // its exit, cannot be read afterwards: this pid is a new process.)
                if exited.process.seen != 0 && dominates(&exited.folded, stats) {
                    return;
                }
            } else if dominates(stats, &exited.folded)
                && let Some(exited) = self.exited.remove(&pid)
            {
                // Missing from one tick but not dead: it comes back, with what was folded on its
                // retirement as the base so no counter is counted twice.
                let mut entry = exited.process;
                entry.cgroup_base.set(&exited.folded);
                entry.node_base.set(&exited.folded);
                self.ensure_cgroup(entry.cgroup_key());
                self.live.insert(pid, entry);
                self.cgroups_dirty = true;
            }
        }

        let growth_tolerance = self.config.sample_interval / 2;
        // Updated in place: this runs for every process every tick.
        let Some(entry) = self.live.get_mut(&pid) else {
            self.insert_live(now, pid, stats, info);
            return;
        };
        if !same_start(entry.start_ticks()) || !dominates(stats, &entry.latest) {
            // Pid reuse: the old process is gone (counters cannot go backwards).
            if let Some(old) = self.live.remove(&pid) {
                self.retire(now, pid, old, None, false);
            }
            self.insert_live(now, pid, stats, info);
            return;
        }
        entry.seen = self.tick;
        if let Some(info) = info {
            let new_key = info.cgroup.as_deref().unwrap_or(ROOT_CGROUP);
            if new_key != entry.cgroup_key() {
                // Moved: what it did so far stays with the old cgroup. (A cgroup known at last,
                // where none was, is no move: all of it was there.)
                if entry.cgroup().is_some() {
                    let moved = entry.cgroup_base.since(&entry.latest);
                    if let Some(old) = self.cgroups.get_mut(entry.cgroup_key()) {
                        add_counters(&mut old.exited, &moved);
                    }
                    entry.cgroup_base.set(&entry.latest);
                }
                entry.info = Some(Arc::clone(info));
                insert_cgroup(&mut self.cgroups, entry.cgroup_key(), self.capacity);
                self.cgroups_dirty = true;
            } else if !entry
                .info
                .as_ref()
                .is_some_and(|known| Arc::ptr_eq(known, info))
            {
                entry.info = Some(Arc::clone(info));
            }
        }
        // The cgroup entry exists: it was made when the process arrived in it, and cgroups in
        // use are never pruned.
        entry.latest = *stats;
        entry.history.push(Sample::new(now, stats));
        entry
            .leak
            .observe(now, rss_total(stats), &self.config.growth, growth_tolerance);
    }

    /// A new live process, seen in this tick.
    fn insert_live(
        &mut self,
        now: Instant,
        pid: u32,
        stats: &ProcStats,
        info: Option<&Arc<ProcessInfo>>,
    ) {
        let mut entry = ProcessEntry::new(now, stats, info, self.capacity);
        entry.seen = self.tick;
        self.ensure_cgroup(entry.cgroup_key());
        self.live.insert(pid, entry);
    }

    fn ensure_cgroup(&mut self, path: &str) {
        if insert_cgroup(&mut self.cgroups, path, self.capacity) {
            self.cgroups_dirty = true;
        }
    }

    /// Moves a process to the exited list, folding its counters (`last`, else its latest) into
    /// its cgroup's and the node's exited totals.
    fn retire(
        &mut self,
        now: Instant,
        pid: u32,
        entry: ProcessEntry,
        last: Option<ProcStats>,
        exit_seen: bool,
    ) {
        let last = last.unwrap_or(entry.latest);
        // It may replace an exited entry of the same pid (reused), the last user of its cgroup.
        self.cgroups_dirty = true;
        if let Some(cg) = self.cgroups.get_mut(entry.cgroup_key()) {
            add_counters(&mut cg.exited, &entry.cgroup_base.since(&last));
        }
        add_counters(&mut self.node_exited, &entry.node_base.since(&last));
        self.exited.insert(
            pid,
            ExitedEntry {
                process: entry,
                exited_at: now,
                folded: last,
                exit_seen,
            },
        );
        while self.exited.len() > self.config.max_exited {
            let Some(oldest) = self
                .exited
                .iter()
                .min_by_key(|(_, e)| e.exited_at)
                .map(|(pid, _)| *pid)
            else {
                break;
            };
            self.exited.remove(&oldest);
        }
    }

    /// Drops exited processes past their grace and cgroups with no process left and no recent
    /// OOM kill.
    ///
    /// Which cgroups are in use changes only when a process moves or an exited one is dropped,
    /// and an OOM kill's retention only ends with time: without either, the sweep (a hash of
    /// every process's cgroup path) is skipped.
    fn prune(&mut self, now: Instant) {
        let grace = self.config.exited_grace;
        self.awaiting_exit
            .retain(|_, w| now.saturating_duration_since(w.kill_at) <= grace);
        let exited = self.exited.len();
        self.exited
            .retain(|_, e| now.saturating_duration_since(e.exited_at) <= grace);
        if self.exited.len() != exited {
            self.cgroups_dirty = true;
        }
        if !self.cgroups_dirty && !self.oom_retained {
            return;
        }
        let in_use: HashSet<&str> = self
            .live
            .values()
            .chain(self.exited.values().map(|e| &e.process))
            .map(ProcessEntry::cgroup_key)
            .collect();
        let retention = self.config.oom_label_retention;
        let mut oom_retained = false;
        self.cgroups.retain(|path, cg| {
            if in_use.contains(path.as_str()) {
                return true;
            }
            let keep = cg.oom_within(now, retention);
            oom_retained |= keep;
            keep
        });
        self.oom_retained = oom_retained;
        self.cgroups_dirty = false;
    }

    /// Discrete events from the ring buffer. Exit: the final counters are folded into the
    /// cgroup's and node's exited totals and the process moves to the exited list; Oom: an
    /// [`OomRecord`] with its flight recording; Exec: the comm is refreshed. Others are ignored
    /// (their effect is in the counters already).
    pub fn observe_event(&mut self, now: Instant, wall: SystemTime, event: &Event) {
        self.observe_event_in(now, wall, event, None);
    }

    /// [`Model::observe_event`] with the cgroup the kernel reported for the event's subject (the
    /// exiting process, the OOM victim), resolved to its path: it wins over what `/proc` said,
    /// and it is the only cgroup known of a process that lived too short to be sampled.
    pub fn observe_event_in(
        &mut self,
        now: Instant,
        wall: SystemTime,
        event: &Event,
        cgroup: Option<&str>,
    ) {
        match event {
            Event::Exit(exit) => self.observe_exit(now, exit, cgroup),
            Event::Oom(oom) => self.observe_oom(now, wall, oom, cgroup),
            Event::Exec(exec) => {
                if let Some(entry) = self.live.get_mut(&exec.header.pid) {
                    let comm = comm_str(&exec.header.comm);
                    if !comm.is_empty() {
                        entry.exec_comm = Some(comm);
                    }
                }
            }
            Event::Fault(_) | Event::MemSyscall(_) | Event::Reclaim(_) => {}
        }
    }

    fn observe_exit(&mut self, now: Instant, exit: &ExitEvent, cgroup: Option<&str>) {
        let pid = exit.header.pid;
        // Untracked: the kernel had no counters for it, the final ones mean nothing.
        let last = (exit.tracked != 0).then_some(exit.stats);
        if let Some(waiting) = self.awaiting_exit.remove(&pid)
            && let Some(last) = &last
        {
            self.complete_kill_sample(pid, waiting, last);
        }
        // An exited entry still waiting for its exit event comes first: if a live entry has the
        // same pid too, it is a newer process reusing the pid.
        if let Some(exited) = self.exited.get_mut(&pid)
            && !exited.exit_seen
            && last.is_none_or(|s| dominates(&s, &exited.folded))
        {
            if let Some(last) = last {
                let delta = sub_counters(&last, &exited.folded);
                if let Some(cg) = self.cgroups.get_mut(exited.process.cgroup_key()) {
                    add_counters(&mut cg.exited, &delta);
                }
                add_counters(&mut self.node_exited, &delta);
                exited.folded = last;
            }
            exited.exit_seen = true;
            return;
        }
        if let Some(entry) = self.live.get(&pid)
            && last.is_none_or(|s| dominates(&s, &entry.latest))
            && let Some(mut entry) = self.live.remove(&pid)
        {
            if let Some(path) = cgroup
                && !self.in_scope(path)
            {
                // Moved out of scope just before exiting: counted until the last tick.
                self.live.insert(pid, entry);
                self.leave_scope(pid);
                return;
            }
            if let Some(path) = cgroup
                && path != entry.cgroup_key()
            {
                if entry.cgroup().is_some() {
                    // In another cgroup than last read from /proc: what it did until the last
                    // tick stays with that one (as for a move seen by a tick), the rest goes to
                    // this.
                    let moved = entry.cgroup_base.since(&entry.latest);
                    if let Some(old) = self.cgroups.get_mut(entry.cgroup_key()) {
                        add_counters(&mut old.exited, &moved);
                    }
                    entry.cgroup_base.set(&entry.latest);
                }
                // Else its cgroup was never known (the ticks that listed it could not read
                // /proc, as for a process already exiting when first listed): all it did was
                // in the kernel's, not the root's that it was rolled up into meanwhile.
                entry.kernel_cgroup = Some(path.to_owned());
                self.ensure_cgroup(path);
            }
            self.retire(now, pid, entry, last, true);
            return;
        }
        let Some(last) = last else {
            return;
        };
        if self.config.scope.is_some() && !cgroup.is_some_and(|path| self.in_scope(path)) {
            // Never seen in scope, and not (or not known to be) in it at its exit.
            return;
        }
        match cgroup {
            // Never seen live (too short-lived for a tick), but the kernel named its cgroup: it
            // is counted there, and listed as exited (which keeps the cgroup for the grace).
            Some(path) => {
                let mut entry = ProcessEntry::new(now, &ProcStats::default(), None, self.capacity);
                entry.kernel_cgroup = Some(path.to_owned());
                let comm = comm_str(&exit.header.comm);
                entry.exec_comm = (!comm.is_empty()).then_some(comm);
                self.ensure_cgroup(path);
                self.retire(now, pid, entry, Some(last), true);
            }
            // Only the node totals know it.
            None => add_counters(&mut self.node_exited, &last),
        }
    }

    /// The live or (within grace) exited entry of a pid, live first.
    fn process(&self, now: Instant, pid: u32) -> Option<&ProcessEntry> {
        let grace = self.config.exited_grace;
        self.live.get(&pid).or_else(|| {
            self.exited
                .get(&pid)
                .filter(|e| now.saturating_duration_since(e.exited_at) <= grace)
                .map(|e| &e.process)
        })
    }

    /// [`Model::process`], mutable.
    fn process_mut(&mut self, now: Instant, pid: u32) -> Option<&mut ProcessEntry> {
        let grace = self.config.exited_grace;
        match self.live.get_mut(&pid) {
            Some(entry) => Some(entry),
            None => self
                .exited
                .get_mut(&pid)
                .filter(|e| now.saturating_duration_since(e.exited_at) <= grace)
                .map(|e| &mut e.process),
        }
    }

    fn observe_oom(
        &mut self,
        now: Instant,
        wall: SystemTime,
        oom: &OomEvent,
        kernel_cgroup: Option<&str>,
    ) {
        let present = |bit: u32| oom.present & bit != 0;
        let bytes = |bit: u32, kb: u64| present(bit).then(|| kb.saturating_mul(1024));

        // The kernel's, else what the model knows of the victim.
        let mut victim_cgroup = kernel_cgroup.map(str::to_owned);
        let mut victim_comm = present(oom_field::COMM)
            .then(|| comm_str(&oom.victim_comm))
            .filter(|c| !c.is_empty());
        let mut flight = Vec::new();
        if let Some(victim) = self.process(now, oom.victim_pid) {
            victim_cgroup = victim_cgroup.or_else(|| victim.cgroup().map(str::to_owned));
            victim_comm = victim_comm.or_else(|| Some(victim.comm().to_owned()));
            let usage = victim_cgroup
                .as_deref()
                .and_then(|path| self.cgroups.get(path))
                .map(|cg| &cg.usage);
            flight = history::flight_recording(
                &victim.history,
                usage,
                now,
                self.config.flight_window,
                self.config.sample_interval,
            );
        }
        if self.config.scope.is_some()
            && !victim_cgroup.as_deref().is_some_and(|p| self.in_scope(p))
        {
            // A kill outside the scope (or of a victim not known to be inside) is not counted.
            return;
        }
        let awaiting = self.end_at_kill(now, oom, &mut flight, victim_cgroup.as_deref());
        if let Some(victim) = self.process_mut(now, oom.victim_pid) {
            victim.oom_kills_as_victim += 1;
        }
        if let Some(trigger) = self.process_mut(now, oom.header.pid) {
            trigger.oom_kills_as_trigger += 1;
        }
        let mut cgroup_limit_bytes = None;
        let mut cgroup_usage_at_kill_bytes = None;
        let mut victim_owner = OwnerView::default();
        let mut cgroup_processes = Vec::new();
        if let Some(path) = victim_cgroup.as_deref() {
            self.ensure_cgroup(path);
            cgroup_processes = self.cgroup_processes(path, oom.victim_pid);
            if let Some(cg) = self.cgroups.get_mut(path) {
                cg.oom_kills += 1;
                cg.last_oom = Some(now);
                self.cgroups_dirty = true;
                cgroup_limit_bytes = cg.memory.and_then(|m| m.limit_bytes);
                // The daemon reads the cgroup when the kill arrives (see
                // `Model::complete_last_oom`); until then the latest reading.
                cgroup_usage_at_kill_bytes = cg.memory.and_then(|m| m.usage_bytes);
                victim_owner = cg.owner.clone();
            }
        }

        let victim_comm = victim_comm.unwrap_or_else(|| UNKNOWN_COMM.to_owned());
        let victim_workload = self.workload_of(
            oom.victim_pid,
            &victim_comm,
            victim_cgroup.as_deref().unwrap_or(ROOT_CGROUP),
        );
        let record = OomRecord {
            timestamp: humantime::format_rfc3339_millis(wall).to_string(),
            timestamp_unix_ms: unix_ms(wall),
            victim_pid: oom.victim_pid,
            victim_comm,
            victim_cgroup,
            victim_owner,
            victim_workload: Some(victim_workload.key),
            trigger_pid: oom.header.pid,
            trigger_comm: comm_str(&oom.header.comm),
            anon_rss_bytes: bytes(oom_field::ANON_RSS, oom.anon_rss_kb),
            file_rss_bytes: bytes(oom_field::FILE_RSS, oom.file_rss_kb),
            shmem_rss_bytes: bytes(oom_field::SHMEM_RSS, oom.shmem_rss_kb),
            total_vm_bytes: bytes(oom_field::TOTAL_VM, oom.total_vm_kb),
            pgtables_bytes: bytes(oom_field::PGTABLES, oom.pgtables_kb),
            uid: present(oom_field::UID).then_some(oom.victim_uid),
            oom_score_adj: present(oom_field::OOM_SCORE_ADJ).then_some(oom.oom_score_adj),
            cgroup_limit_bytes,
            flight_recording: flight,
            cgroup_usage_at_kill_bytes,
            cgroup_memory_stat: None,
            cgroup_processes,
        };
        if let Some(previous) = awaiting {
            self.awaiting_exit.insert(
                oom.victim_pid,
                AwaitingExit {
                    previous,
                    kill_at: now,
                    record_ms: record.timestamp_unix_ms,
                },
            );
        }
        self.ooms.push_front(record);
        self.ooms.truncate(self.config.max_oom_records);
    }

    /// The workload of process `pid` named `comm` in cgroup `path` (see [`crate::workload`]).
    fn workload_of(&self, pid: u32, comm: &str, path: &str) -> crate::workload::WorkloadId {
        let parsed;
        let identity = match self.cgroups.get(path) {
            Some(cg) => &cg.identity,
            None => {
                parsed = crate::cgroup::identify(path);
                &parsed
            }
        };
        self.identifier.identify(pid, comm, Some(path), identity)
    }

    /// The latest node-wide reading (replaces the previous one).
    pub fn observe_node(&mut self, sample: NodeSample) {
        self.node = Some(sample);
    }

    /// Tracks `path` (if not yet): a cgroup known from a kernel event, whose memory reading
    /// [`Model::observe_cgroup`] then takes at once.
    pub fn track_cgroup(&mut self, path: &str) {
        if self.in_scope(path) {
            self.ensure_cgroup(path);
        }
    }

    /// The latest memory reading of a cgroup. Paths the model does not track (see
    /// [`Model::cgroup_paths`]) are ignored, so a caller cannot grow the model.
    pub fn observe_cgroup(&mut self, now: Instant, path: &str, memory: CgroupMemory) {
        if let Some(cg) = self.cgroups.get_mut(path) {
            if let Some(usage) = memory.usage_bytes {
                cg.usage.push((now, usage));
            }
            cg.memory = Some(memory);
        }
    }

    /// Cgroups the daemon should read memory files for: those with live (or just exited)
    /// processes, plus recently OOM-killed ones. Sorted.
    pub fn cgroup_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self.cgroups.keys().cloned().collect();
        paths.sort();
        paths
    }

    /// Live processes.
    pub fn process_count(&self) -> usize {
        self.live.len()
    }

    /// Cumulative counters of every process seen on this node, live or exited (never goes
    /// backwards).
    pub fn node_counters(&self) -> Counters {
        let mut total = self.node_exited;
        for entry in self.live.values() {
            add_counters(&mut total, &entry.node_base.since(&entry.latest));
        }
        let mut json = counters_json(&total);
        json.vm_bytes = None; // a gauge of live processes, not a cumulative counter
        json
    }

    /// OOM records, newest first, with their flight recordings.
    pub fn oom_records(&self) -> Vec<OomRecord> {
        self.ooms.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests;
