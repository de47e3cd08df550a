//! `GET /api/v1/workloads`: a snapshot grouped by workload and instance
//! ([`crate::workload::Identifier`]), with each instance's history and the OOM kills by scope.
//!
//! Pure: built from a [`Snapshot`], the [`InstanceHistories`] and what the daemon knows of
//! itself ([`NodeContext`]), so tests feed it values.
//!
//! **Bounds.** At most [`MAX_WORKLOADS`] workloads are listed, highest pressure first (ties:
//! larger RSS, then the key); pinned ones (`--pin`) always are, beyond the cap too. The others
//! are counted in `omitted_workloads`. Each lists at most [`MAX_INSTANCES_PER_WORKLOAD`]
//! instances, the hottest, the rest counted in its `omitted_instances`. Rates are rounded to 4 significant digits and scores to
//! 2 decimals: precision nobody reads costs bytes on every node of a fan-out.
//!
//! **OOM scope** ([`oom_scope`]): the kernel does not say in the `oom:mark_victim` event whether
//! a cgroup limit or the node ran out, so it is inferred from the victim's cgroup as read at the
//! kill: see the function for the rule and its limits.
use std::collections::HashMap;
use std::time::Duration;

use memtrace_api::workloads::{
    InstanceSummary, NodeSummary, OomKill, OomKillCounts, OomScope, WORKLOADS_SCHEMA_VERSION,
    WorkloadSummary, WorkloadsResponse,
};
use memtrace_api::{LeakHint, OomRecord, ProcessView, PsiView, Rates, Snapshot};

use super::history::add_rates;
use super::instance_history::{InstanceHistories, InstanceReading, round_significant};
use crate::cgroup::{self, CgroupIdentity, CgroupMemory};
use crate::workload::{Identifier, WorkloadId};

/// Workloads listed at most (pinned ones come on top of it).
pub const MAX_WORKLOADS: usize = 100;
/// Instances listed per workload at most (the hottest).
pub const MAX_INSTANCES_PER_WORKLOAD: usize = 100;

/// Usage at the kill, as a share of the victim cgroup's limit, from which the kill counts as the
/// cgroup's (memcg) rather than the node's.
pub const MEMCG_USAGE_SHARE: f64 = 0.9;

/// What the daemon knows of itself that a snapshot does not carry.
pub struct NodeContext<'a> {
    /// `--node-name` (the hostname until it is given).
    pub name: &'a str,
    pub memtrace_version: &'a str,
    pub ready: bool,
    /// `--cgroup-root`, when the model is limited to a subtree.
    pub cgroup_root: Option<&'a str>,
    /// That cgroup's memory, read now (its limit stands for the node's RAM).
    pub root_memory: Option<&'a CgroupMemory>,
    /// `--pin`: workloads always listed.
    pub pinned: &'a dyn Fn(&str) -> bool,
}

/// One running instance: its identity and its processes in the snapshot.
#[derive(Debug)]
pub struct InstanceGroup<'a> {
    pub id: WorkloadId,
    pub processes: Vec<&'a ProcessView>,
    pub summary: InstanceSummary,
}

/// The snapshot's processes grouped into instances, highest pressure first (ties: larger RSS,
/// then the instance name): the order the history's instance cap ranks them in.
pub fn group<'a>(snapshot: &'a Snapshot, identifier: &Identifier) -> Vec<InstanceGroup<'a>> {
    let mut owners: HashMap<&str, CgroupIdentity> = HashMap::new();
    let mut groups: HashMap<(String, String), InstanceGroup<'a>> = HashMap::new();
    let limits: HashMap<&str, Option<u64>> = snapshot
        .cgroups
        .iter()
        .map(|c| (c.path.as_str(), c.limit_bytes))
        .collect();
    for process in &snapshot.processes {
        let cgroup = process.cgroup.as_deref();
        let owner = owners
            .entry(cgroup.unwrap_or("/"))
            .or_insert_with(|| cgroup.map(cgroup::identify).unwrap_or_default());
        let id = identifier.identify(process.pid, &process.comm, cgroup, owner);
        let group = groups
            .entry((id.key.clone(), id.instance.clone()))
            .or_insert_with(|| InstanceGroup {
                summary: InstanceSummary {
                    instance: id.instance.clone(),
                    cgroup: process.cgroup.clone(),
                    limit_bytes: cgroup.and_then(|c| limits.get(c).copied().flatten()),
                    ..InstanceSummary::default()
                },
                id,
                processes: Vec::new(),
            });
        let summary = &mut group.summary;
        summary.processes += 1;
        let counters = &process.counters;
        summary.rss_anon_bytes = summary
            .rss_anon_bytes
            .saturating_add(counters.rss_anon_bytes);
        summary.rss_file_bytes = summary
            .rss_file_bytes
            .saturating_add(counters.rss_file_bytes);
        summary.rss_shmem_bytes = summary
            .rss_shmem_bytes
            .saturating_add(counters.rss_shmem_bytes);
        summary.swap_bytes = summary.swap_bytes.saturating_add(counters.swap_bytes);
        add_rates(&mut summary.rates, &process.rates);
        summary.pressure_score = summary.pressure_score.max(process.pressure_score);
        add_growth(summary, process);
        group.processes.push(process);
    }
    let mut groups: Vec<InstanceGroup<'a>> = groups.into_values().collect();
    groups.sort_by(|a, b| {
        b.summary
            .pressure_score
            .total_cmp(&a.summary.pressure_score)
            .then_with(|| rss(&b.summary).cmp(&rss(&a.summary)))
            .then_with(|| a.summary.instance.cmp(&b.summary.instance))
    });
    groups
}

/// An instance's growth is the sum of its processes' (those watched for a whole growth window;
/// absent when none was), and its leak hint the sum of its processes' hints (the earliest
/// `since`): a hint of an instance says which of its processes leak, not that their sum does.
fn add_growth(summary: &mut InstanceSummary, process: &ProcessView) {
    if let Some(growth) = process.rss_growth_bytes_per_sec {
        *summary.rss_growth_bytes_per_sec.get_or_insert(0.0) += growth;
    }
    if let Some(hint) = process.leak_hint {
        summary.leak_hint = Some(match summary.leak_hint {
            None => hint,
            Some(sum) => LeakHint {
                since_unix_ms: sum.since_unix_ms.min(hint.since_unix_ms),
                window_seconds: sum.window_seconds.max(hint.window_seconds),
                growth_bytes_per_sec: sum.growth_bytes_per_sec + hint.growth_bytes_per_sec,
                growth_bytes: sum.growth_bytes.saturating_add(hint.growth_bytes),
            },
        });
    }
}

fn rss(instance: &InstanceSummary) -> u64 {
    instance
        .rss_anon_bytes
        .saturating_add(instance.rss_file_bytes)
        .saturating_add(instance.rss_shmem_bytes)
}

fn round_rates(rates: &Rates) -> Rates {
    let r = |v: f64| round_significant(v, 4);
    Rates {
        faults_minor_per_sec: r(rates.faults_minor_per_sec),
        faults_major_per_sec: r(rates.faults_major_per_sec),
        mmap_bytes_per_sec: r(rates.mmap_bytes_per_sec),
        munmap_bytes_per_sec: r(rates.munmap_bytes_per_sec),
        brk_grow_bytes_per_sec: r(rates.brk_grow_bytes_per_sec),
        reclaim_stall_seconds_per_sec: r(rates.reclaim_stall_seconds_per_sec),
    }
}

fn round_score(score: f64) -> f64 {
    (score * 100.0).round() / 100.0
}

/// What the history records of each instance, in the groups' order.
pub fn readings(groups: &[InstanceGroup<'_>]) -> Vec<InstanceReading> {
    groups
        .iter()
        .map(|group| {
            let mut pids: Vec<u32> = group.processes.iter().map(|p| p.pid).collect();
            pids.sort_unstable();
            InstanceReading {
                instance: group.summary.instance.clone(),
                pids,
                rss_anon_bytes: group.summary.rss_anon_bytes,
                rss_bytes: rss(&group.summary),
                reclaim_ns: group
                    .processes
                    .iter()
                    .map(|p| p.counters.reclaim_ns)
                    .fold(0, u64::saturating_add),
            }
        })
        .collect()
}

/// Whether an OOM kill was its cgroup's (the cgroup reached its limit) or the node's.
///
/// The rule, from what the daemon read of the victim's cgroup at the kill:
/// - the victim's cgroup is unknown, or its memory was never read: [`OomScope::Unknown`];
/// - it is `--cgroup-root` itself (which stands for the node), or it has no limit:
///   [`OomScope::Global`] (only the node, or the scope root, could run out);
/// - its peak usage at the kill — the largest of the usage read right after it, the last
///   seconds of the flight recording, the LRU + kernel sum of `memory.stat`, and the victim's
///   own RSS — reached [`MEMCG_USAGE_SHARE`] (90 %) of its limit: [`OomScope::Memcg`];
/// - else [`OomScope::Global`]: the cgroup had room, so the node ran out.
///
/// Limits: only the victim's own cgroup is read, so a kill forced by an ancestor's limit (a pod
/// slice limiting its containers) counts as global unless the victim's cgroup was itself near
/// its own limit; a global OOM that strikes a cgroup already at 90 % counts as memcg. The
/// kernel's own word (`constraint=CONSTRAINT_MEMCG` in the log, v2 `memory.events` `oom`) is
/// not used: the log is not a stable interface and needs privileges the daemon dropped.
pub fn oom_scope(record: &OomRecord, cgroup_root: Option<&str>) -> OomScope {
    let Some(cgroup) = record.victim_cgroup.as_deref() else {
        return OomScope::Unknown;
    };
    if cgroup_root.is_some_and(|root| root.trim_end_matches('/') == cgroup.trim_end_matches('/')) {
        return OomScope::Global;
    }
    let peak = [
        record.cgroup_usage_at_kill_bytes,
        record
            .flight_recording
            .iter()
            .filter_map(|s| s.cgroup_usage_bytes)
            .max(),
        record.cgroup_memory_stat.as_ref().and_then(|stat| {
            Some(
                stat.lru_anon_bytes?
                    .saturating_add(stat.lru_file_bytes?)
                    .saturating_add(stat.unevictable_bytes.unwrap_or(0))
                    .saturating_add(stat.kernel_bytes.unwrap_or(0)),
            )
        }),
        [
            record.anon_rss_bytes,
            record.file_rss_bytes,
            record.shmem_rss_bytes,
        ]
        .into_iter()
        .try_fold(0u64, |sum, part| Some(sum.saturating_add(part?))),
    ]
    .into_iter()
    .flatten()
    .max();
    match (record.cgroup_limit_bytes, record.cgroup_usage_at_kill_bytes) {
        (None, None) => OomScope::Unknown,
        (None, Some(_)) => OomScope::Global,
        (Some(limit), _) => match peak {
            Some(peak) if peak as f64 >= MEMCG_USAGE_SHARE * limit as f64 => OomScope::Memcg,
            Some(_) => OomScope::Global,
            None => OomScope::Unknown,
        },
    }
}

/// The OOM kills of `snapshot`, newest first, with their workload, instance and scope.
pub fn oom_kills(snapshot: &Snapshot, identifier: &Identifier, ctx: &NodeContext) -> Vec<OomKill> {
    let mut kills: Vec<OomKill> = snapshot
        .recent_ooms
        .iter()
        .map(|record| {
            let cgroup = record.victim_cgroup.as_deref();
            let owner = cgroup.map(cgroup::identify).unwrap_or_default();
            let id = identifier.identify(record.victim_pid, &record.victim_comm, cgroup, &owner);
            let rss = [
                record.anon_rss_bytes,
                record.file_rss_bytes,
                record.shmem_rss_bytes,
            ]
            .into_iter()
            .try_fold(0u64, |sum, part| Some(sum.saturating_add(part?)));
            OomKill {
                timestamp_unix_ms: record.timestamp_unix_ms,
                workload: id.key,
                instance: id.instance,
                victim_pid: record.victim_pid,
                victim_comm: record.victim_comm.clone(),
                victim_cgroup: record.victim_cgroup.clone(),
                scope: oom_scope(record, ctx.cgroup_root),
                rss_bytes: rss,
                cgroup_limit_bytes: record.cgroup_limit_bytes,
            }
        })
        .collect();
    kills.sort_by_key(|k| std::cmp::Reverse(k.timestamp_unix_ms));
    kills
}

fn node_summary(snapshot: &Snapshot, ctx: &NodeContext) -> NodeSummary {
    let memory = &snapshot.node_memory;
    let mut node = NodeSummary {
        name: ctx.name.to_owned(),
        hostname: snapshot.node.hostname.clone(),
        boot_id: snapshot.node.boot_id.clone(),
        kernel_release: snapshot.node.kernel_release.clone(),
        memtrace_version: ctx.memtrace_version.to_owned(),
        cgroup_root: ctx.cgroup_root.map(str::to_owned),
        ready: ctx.ready,
        families: snapshot.pipeline.families,
        mem_total_bytes: memory.mem_total_bytes,
        mem_available_bytes: memory.mem_available_bytes,
        swap_total_bytes: memory.swap_total_bytes,
        swap_free_bytes: memory.swap_free_bytes,
        psi: memory.psi,
        fragmentation_index_order3: memory.fragmentation_index_order3,
        fragmentation_index_order9: memory.fragmentation_index_order9,
        reclaim_stall_seconds_per_sec: round_significant(
            snapshot
                .processes
                .iter()
                .map(|p| p.rates.reclaim_stall_seconds_per_sec)
                .sum(),
            4,
        ),
        pressure_score: round_score(
            snapshot
                .processes
                .iter()
                .map(|p| p.pressure_score)
                .fold(0.0, f64::max),
        ),
        processes: u32::try_from(snapshot.processes.len()).unwrap_or(u32::MAX),
    };
    // The scope root's limit stands for the node's RAM.
    if let Some(root) = ctx.root_memory
        && let (Some(limit), Some(usage)) = (root.limit_bytes, root.usage_bytes)
    {
        node.mem_total_bytes = limit;
        node.mem_available_bytes = limit.saturating_sub(usage);
        if let Some(pressure) = &root.pressure {
            node.psi = Some(PsiView::from(pressure));
        }
    }
    node
}

/// The response, with each instance's history over the last `history` (the daemon builds it
/// with all of it, and trims per request with [`limit_history`]).
pub fn summarize(
    snapshot: &Snapshot,
    identifier: &Identifier,
    histories: &InstanceHistories,
    ctx: &NodeContext,
    history: Duration,
) -> WorkloadsResponse {
    let ooms = oom_kills(snapshot, identifier, ctx);
    let mut workloads: Vec<WorkloadSummary> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for group in group(snapshot, identifier) {
        let mut instance = group.summary;
        instance.rates = round_rates(&instance.rates);
        instance.rss_growth_bytes_per_sec = instance
            .rss_growth_bytes_per_sec
            .map(|g| round_significant(g, 4));
        if let Some(hint) = &mut instance.leak_hint {
            hint.growth_bytes_per_sec = round_significant(hint.growth_bytes_per_sec, 4);
        }
        instance.pressure_score = round_score(instance.pressure_score);
        instance.started_unix_ms = histories
            .started_unix_ms(&instance.instance)
            .unwrap_or(snapshot.timestamp_unix_ms);
        instance.history = histories.history(&instance.instance, history);
        instance.oom_kills = ooms
            .iter()
            .filter(|k| k.workload == group.id.key && k.instance == instance.instance)
            .fold(OomKillCounts::default(), |mut counts, kill| {
                match kill.scope {
                    OomScope::Memcg => counts.memcg += 1,
                    OomScope::Global => counts.global += 1,
                    OomScope::Unknown => {}
                }
                counts
            });
        let slot = *index.entry(group.id.key.clone()).or_insert_with(|| {
            workloads.push(WorkloadSummary {
                pinned: (ctx.pinned)(&group.id.key),
                workload: group.id.key.clone(),
                kind: group.id.kind,
                instances: Vec::new(),
                omitted_instances: None,
            });
            workloads.len() - 1
        });
        // Groups come highest pressure first, so a workload's first instance is its hottest and
        // `workloads` is already ordered by pressure (then RSS, then key).
        let workload = &mut workloads[slot];
        if workload.instances.len() < MAX_INSTANCES_PER_WORKLOAD {
            workload.instances.push(instance);
        } else {
            *workload.omitted_instances.get_or_insert(0) += 1;
        }
    }
    let (mut listed, mut rest): (Vec<_>, Vec<_>) = workloads
        .into_iter()
        .enumerate()
        .partition(|(rank, w)| *rank < MAX_WORKLOADS || w.pinned);
    rest.retain(|(_, w)| !w.pinned);
    listed.sort_by_key(|(rank, _)| *rank);
    WorkloadsResponse {
        schema_version: WORKLOADS_SCHEMA_VERSION,
        node: node_summary(snapshot, ctx),
        timestamp_unix_ms: snapshot.timestamp_unix_ms,
        rate_window_seconds: snapshot.rate_window_seconds,
        history: histories.spec(),
        workloads: listed.into_iter().map(|(_, w)| w).collect(),
        omitted_workloads: u32::try_from(rest.len()).unwrap_or(u32::MAX),
        ooms,
    }
}

/// Keeps only the last `span` of every instance's history (`?history=`).
pub fn limit_history(response: &mut WorkloadsResponse, span: Duration) {
    let step = u64::from(response.history.step_seconds.max(1));
    let wanted = usize::try_from(span.as_secs().div_ceil(step)).unwrap_or(usize::MAX);
    for instance in response
        .workloads
        .iter_mut()
        .flat_map(|w| w.instances.iter_mut())
    {
        let history = &mut instance.history;
        let len = history.rss_bytes.len();
        let skip = len - wanted.min(len);
        if skip == len {
            *history = Default::default();
            continue;
        }
        history.start_unix_s += skip as u64 * step;
        history.rss_anon_bytes.drain(..skip);
        history.rss_bytes.drain(..skip);
        history.reclaim_stall_seconds_per_sec.drain(..skip);
    }
}

#[cfg(test)]
mod tests;
