//! The model as the v1 schema: [`Model::snapshot`] and the conversions of readings to views.
use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use memtrace_common::ProcStats;

use super::score::{RECENT_OOM_WINDOW, ScoreInputs, pressure_score};
use super::{Model, rss_total};
use super::{growth, history};
use crate::cgroup;
use crate::counters::{add_counters, counters_json};
use crate::node::NodeSample;
use crate::workload::WorkloadId;
use memtrace_api::{
    CgroupView, NodeIdentityView, NodeMemoryView, OomRecord, OwnerView, PipelineView, ProcessView,
    PsiView, Rates, SCHEMA_VERSION, Snapshot,
};

/// A value's serde spelling (the cgroup module's enums serialize as Kubernetes and runtimes
/// spell them), so the JSON matches whatever `cgroup` declares.
fn serde_name<T: serde::Serialize>(value: &T) -> Option<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

/// What the API reveals of a process's command line (`--cmdline`). Arguments carry secrets
/// (`--db-password=…`) and the API answers anyone who can reach it, so the default reveals
/// nothing; the JSON field stays (schema v1 removes no field) and is then empty.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum CmdlineMode {
    /// Empty: the process is named by `comm`, `cgroup` and `owner`.
    #[default]
    Off,
    /// The command without its arguments (`argv[0]`, e.g. `/usr/bin/python3`).
    CommOnly,
    /// Everything, arguments included.
    Full,
}

impl CmdlineMode {
    /// `cmdline` (argv joined by spaces, as the procfs reader keeps it) as this mode shows it.
    pub fn reveal(self, cmdline: &str) -> String {
        match self {
            Self::Off => String::new(),
            // The reader joins argv with spaces, so an argv[0] with a space in it (a
            // setproctitle-style title: `postgres: user db 10.0.0.1`) is cut at its first
            // space: less than the command, never more.
            Self::CommOnly => cmdline.split(' ').next().unwrap_or_default().to_owned(),
            Self::Full => cmdline.to_owned(),
        }
    }
}

pub(super) fn owner_view(path: &str) -> OwnerView {
    let id = cgroup::identify(path);
    OwnerView {
        container_id: id.container_id,
        runtime: id.runtime.as_ref().and_then(serde_name),
        pod_uid: id.pod_uid,
        qos: id.qos.as_ref().and_then(serde_name),
        systemd_unit: id.systemd_unit,
    }
}

pub(super) fn unix_ms(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Model {
    fn node_psi_some_avg10(&self) -> Option<f64> {
        self.node
            .as_ref()
            .and_then(|n| n.psi.as_ref())
            .map(|p| p.some.avg10)
    }

    /// Score inputs a cgroup contributes (usage, limit, PSI with node fallback, recent OOM).
    fn cgroup_score_inputs(&self, now: Instant, path: &str) -> ScoreInputs {
        let cg = self.cgroups.get(path);
        let memory = cg.and_then(|c| c.memory.as_ref());
        ScoreInputs {
            usage_bytes: memory.and_then(|m| m.usage_bytes),
            limit_bytes: memory.and_then(|m| m.limit_bytes),
            psi_some_avg10: memory
                .and_then(|m| m.pressure.map(|p| p.some.avg10))
                .or_else(|| self.node_psi_some_avg10()),
            recent_oom: cg.is_some_and(|c| c.oom_within(now, RECENT_OOM_WINDOW)),
            ..ScoreInputs::default()
        }
    }

    /// The whole model as the v1 schema: rates derived at `now`, processes and cgroups sorted by
    /// pressure score (highest first), OOM records newest first without flight recordings.
    pub fn snapshot(&self, now: Instant, wall: SystemTime, pipeline: PipelineView) -> Snapshot {
        struct Rollup {
            processes: u32,
            counters: ProcStats,
            rates: Rates,
        }
        let window = self.config.rate_window;
        let growth_config = &self.config.growth;
        let tolerance = self.config.sample_interval / 2;
        // The workload a cgroup names by itself, once per cgroup (every live process's cgroup
        // has an entry); processes of the others are named by their comm.
        let owner_workloads: HashMap<&str, WorkloadId> = self
            .cgroups
            .iter()
            .filter_map(|(path, cg)| {
                let workload = self.identifier.identify_owner(&cg.identity)?;
                Some((path.as_str(), workload))
            })
            .collect();
        let mut rollups: HashMap<&str, Rollup> = HashMap::new();
        let mut processes = Vec::with_capacity(self.live.len());
        for (&pid, entry) in &self.live {
            let rates = history::window_rates(&entry.history, now, window);
            let key = entry.cgroup_key();
            let rollup = rollups.entry(key).or_insert_with(|| Rollup {
                processes: 0,
                counters: ProcStats::default(),
                rates: Rates::default(),
            });
            rollup.processes += 1;
            add_counters(
                &mut rollup.counters,
                &entry.cgroup_base.since(&entry.latest),
            );
            for (sum, rss) in rollup.counters.rss.iter_mut().zip(entry.latest.rss) {
                *sum = sum.saturating_add(rss);
            }
            history::add_rates(&mut rollup.rates, &rates);

            let score = pressure_score(&ScoreInputs {
                major_faults_per_sec: rates.faults_major_per_sec,
                reclaim_stall_seconds_per_sec: rates.reclaim_stall_seconds_per_sec,
                ..self.cgroup_score_inputs(now, key)
            });
            let workload = owner_workloads
                .get(key)
                .cloned()
                .unwrap_or_else(|| WorkloadId::of_comm(pid, entry.comm()));
            processes.push(ProcessView {
                pid,
                comm: entry.comm().to_owned(),
                workload: Some(workload.key),
                workload_kind: Some(workload.kind),
                instance: Some(workload.instance),
                cmdline: entry
                    .info
                    .as_ref()
                    .map(|i| self.config.cmdline.reveal(&i.cmdline))
                    .unwrap_or_default(),
                cgroup: entry.cgroup().map(str::to_owned),
                owner: self
                    .cgroups
                    .get(key)
                    .map(|c| c.owner.clone())
                    .unwrap_or_default(),
                counters: counters_json(&entry.latest),
                rates,
                rss_bytes: rss_total(&entry.latest),
                pressure_score: score,
                oom_kills_as_victim: entry.oom_kills_as_victim,
                oom_kills_as_trigger: entry.oom_kills_as_trigger,
                rss_growth_bytes_per_sec: entry.history.back().and_then(|newest| {
                    growth::growth(
                        entry.history.iter().map(|s| (s.at, sample_rss(&s))),
                        (newest.at, sample_rss(&newest)),
                        growth_config.window,
                        tolerance,
                    )
                }),
                leak_hint: entry
                    .leak
                    .hint(now, wall, rss_total(&entry.latest), growth_config),
                reclaim_stall_buckets: stall_buckets(&entry.latest),
            });
        }
        processes.sort_by(|a, b| {
            b.pressure_score
                .total_cmp(&a.pressure_score)
                .then(a.pid.cmp(&b.pid))
        });

        let mut cgroups = Vec::with_capacity(self.cgroups.len());
        for (path, cg) in &self.cgroups {
            let rollup = rollups.get(path.as_str());
            let mut counters = cg.exited;
            let mut rates = Rates::default();
            if let Some(r) = rollup {
                add_counters(&mut counters, &r.counters);
                counters.rss = r.counters.rss;
                rates = r.rates;
            }
            let memory = cg.memory.as_ref();
            cgroups.push(CgroupView {
                path: path.clone(),
                owner: cg.owner.clone(),
                workload: owner_workloads.get(path.as_str()).map(|w| w.key.clone()),
                processes: rollup.map_or(0, |r| r.processes),
                counters: counters_json(&counters),
                rates,
                rss_bytes: rss_total(&counters),
                usage_bytes: memory.and_then(|m| m.usage_bytes),
                limit_bytes: memory.and_then(|m| m.limit_bytes),
                psi: memory.and_then(|m| m.pressure.as_ref()).map(PsiView::from),
                kernel_oom_kills: memory
                    .and_then(|m| m.events.map(|e| e.oom_kill).or(m.v1_oom_kill)),
                oom_kills: cg.oom_kills,
                pressure_score: pressure_score(&ScoreInputs {
                    major_faults_per_sec: rates.faults_major_per_sec,
                    reclaim_stall_seconds_per_sec: rates.reclaim_stall_seconds_per_sec,
                    ..self.cgroup_score_inputs(now, path)
                }),
                rss_growth_bytes_per_sec: cg.rss.iter().next_back().and_then(|newest| {
                    growth::growth(
                        cg.rss.iter().copied(),
                        *newest,
                        growth_config.window,
                        tolerance,
                    )
                }),
                reclaim_stall_buckets: stall_buckets(&counters),
            });
        }
        cgroups.sort_by(|a, b| {
            b.pressure_score
                .total_cmp(&a.pressure_score)
                .then_with(|| a.path.cmp(&b.path))
        });

        Snapshot {
            schema_version: SCHEMA_VERSION,
            node: self
                .node
                .as_ref()
                .map(|n| NodeIdentityView {
                    name: self.config.node_name.clone(),
                    hostname: n.identity.hostname.clone(),
                    boot_id: n.identity.boot_id.clone(),
                    kernel_release: n.identity.kernel_release.clone(),
                })
                .unwrap_or_else(|| NodeIdentityView {
                    name: self.config.node_name.clone(),
                    ..NodeIdentityView::default()
                }),
            timestamp: humantime::format_rfc3339_millis(wall).to_string(),
            timestamp_unix_ms: unix_ms(wall),
            rate_window_seconds: window.as_secs_f64(),
            processes,
            cgroups,
            node_memory: self.node.as_ref().map(node_memory_view).unwrap_or_default(),
            recent_ooms: self
                .ooms
                .iter()
                .map(|r| OomRecord {
                    flight_recording: Vec::new(),
                    ..r.clone()
                })
                .collect(),
            pipeline,
        }
    }
}

/// anon + file + shmem of a history sample.
fn sample_rss(s: &history::Sample) -> u64 {
    s.rss_anon_bytes
        .saturating_add(s.rss_file_bytes)
        .saturating_add(s.rss_shmem_bytes)
}

/// The reclaim-stall histogram as the API has it: absent when nothing stalled.
fn stall_buckets(s: &ProcStats) -> Option<Vec<u64>> {
    s.reclaim_hist
        .iter()
        .any(|n| *n != 0)
        .then(|| s.reclaim_hist.to_vec())
}

fn node_memory_view(n: &NodeSample) -> NodeMemoryView {
    NodeMemoryView {
        psi: n.psi.as_ref().map(PsiView::from),
        mem_total_bytes: n.meminfo.total,
        mem_available_bytes: n.meminfo.available,
        mem_free_bytes: n.meminfo.free,
        swap_total_bytes: n.meminfo.swap_total,
        swap_free_bytes: n.meminfo.swap_free,
        anon_bytes: n.meminfo.anon_pages,
        page_cache_bytes: n.meminfo.cached.saturating_add(n.meminfo.buffers),
        fragmentation_index_order3: n.fragmentation_order3,
        fragmentation_index_order9: n.fragmentation_order9,
        pgfault_total: n.vmstat.pgfault,
        pgmajfault_total: n.vmstat.pgmajfault,
        allocstall_total: n.vmstat.allocstall,
        compact_stall_total: n.vmstat.compact_stall,
        compact_fail_total: n.vmstat.compact_fail,
        oom_kill_total: n.vmstat.oom_kill,
        pgscan_direct_total: n.vmstat.pgscan_direct,
        workingset_refault_total: n.vmstat.workingset_refault,
    }
}
