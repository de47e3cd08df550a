use std::io::Write as _;

use memtrace_api::workloads::WorkloadKind;
use memtrace_api::{CgroupMemoryStat, CgroupView, FlightSample, Snapshot};

use super::*;

const MIB: u64 = 1 << 20;

fn process(pid: u32, comm: &str, cgroup: &str, anon: u64, score: f64) -> ProcessView {
    let mut p = ProcessView {
        pid,
        comm: comm.to_owned(),
        cgroup: Some(cgroup.to_owned()),
        pressure_score: score,
        rss_bytes: anon + MIB,
        ..ProcessView::default()
    };
    p.counters.rss_anon_bytes = anon;
    p.counters.rss_file_bytes = MIB;
    p.counters.reclaim_ns = u64::from(pid) * 1_000;
    p.rates.faults_minor_per_sec = 1234.5678;
    p.rates.reclaim_stall_seconds_per_sec = 0.01;
    p
}

fn snapshot(processes: Vec<ProcessView>) -> Snapshot {
    let mut snapshot = Snapshot {
        timestamp_unix_ms: 1_800_000_000_000,
        rate_window_seconds: 10.0,
        processes,
        cgroups: vec![CgroupView {
            path: "/redis".to_owned(),
            limit_bytes: Some(512 * MIB),
            ..CgroupView::default()
        }],
        ..Snapshot::default()
    };
    snapshot.node.hostname = "node-a".to_owned();
    snapshot.node_memory.mem_total_bytes = 8 << 30;
    snapshot.node_memory.mem_available_bytes = 6 << 30;
    snapshot
}

fn context<'a>(pinned: &'a dyn Fn(&str) -> bool) -> NodeContext<'a> {
    NodeContext {
        name: "node-a",
        memtrace_version: "0.1.0",
        ready: true,
        cgroup_root: None,
        root_memory: None,
        pinned,
    }
}

fn no_pins(_: &str) -> bool {
    false
}

#[test]
fn processes_group_into_workloads_and_instances_by_the_identifier() {
    let snapshot = snapshot(vec![
        process(10, "redis-server", "/redis", 300 * MIB, 20.0),
        process(11, "redis-server", "/redis", 100 * MIB, 5.0),
        process(20, "bash", "/", 2 * MIB, 0.0),
    ]);
    let identifier = Identifier::default();
    let mut histories = InstanceHistories::new(Duration::from_secs(1), 10);
    histories.record(1_799_999_999_000, &readings(&group(&snapshot, &identifier)));
    let response = summarize(
        &snapshot,
        &identifier,
        &histories,
        &context(&no_pins),
        Duration::from_secs(3600),
    );
    assert_eq!(response.schema_version, WORKLOADS_SCHEMA_VERSION);
    let keys: Vec<&str> = response
        .workloads
        .iter()
        .map(|w| w.workload.as_str())
        .collect();
    assert_eq!(keys, ["redis-server", "bash"], "by pressure");
    let redis = &response.workloads[0];
    assert_eq!(redis.kind, WorkloadKind::Comm);
    let instances: Vec<(&str, u64)> = redis
        .instances
        .iter()
        .map(|i| (i.instance.as_str(), i.rss_anon_bytes))
        .collect();
    assert_eq!(
        instances,
        [("pid/10", 300 * MIB), ("pid/11", 100 * MIB)],
        "one instance per process with the placeholder identity, hottest first"
    );
    let hot = &redis.instances[0];
    assert_eq!(hot.cgroup.as_deref(), Some("/redis"));
    assert_eq!(hot.limit_bytes, Some(512 * MIB));
    assert_eq!((hot.processes, hot.rss_file_bytes), (1, MIB));
    assert_eq!(hot.pressure_score, 20.0);
    assert_eq!(
        hot.rates.faults_minor_per_sec, 1235.0,
        "4 significant digits"
    );
    assert_eq!(
        hot.started_unix_ms, 1_799_999_999_000,
        "first seen by the history"
    );
    assert_eq!(hot.history.rss_anon_bytes, vec![300 * MIB]);
    assert_eq!(response.workloads[1].instances[0].limit_bytes, None);
    assert_eq!(response.node.name, "node-a");
    assert_eq!(response.node.processes, 3);
    assert_eq!(response.node.pressure_score, 20.0);
    assert_eq!(response.node.reclaim_stall_seconds_per_sec, 0.03);
    assert_eq!(response.node.mem_total_bytes, 8 << 30);
    assert_eq!(response.omitted_workloads, 0);
}

#[test]
fn processes_of_one_instance_are_summed() {
    // Whatever the identity rules, processes of one (key, instance) are one instance: the
    // placeholder names instances by pid, so two entries with one pid stand for them.
    let snapshot = snapshot(vec![
        process(10, "redis-server", "/redis", 300 * MIB, 20.0),
        process(10, "redis-server", "/redis", 100 * MIB, 50.0),
    ]);
    let groups = group(&snapshot, &Identifier::default());
    assert_eq!(groups.len(), 1);
    let summary = &groups[0].summary;
    assert_eq!(summary.processes, 2);
    assert_eq!(summary.rss_anon_bytes, 400 * MIB);
    assert_eq!(summary.pressure_score, 50.0, "the highest of its processes");
    assert!((summary.rates.reclaim_stall_seconds_per_sec - 0.02).abs() < 1e-12);
    let readings = readings(&groups);
    assert_eq!(readings[0].pids, [10, 10]);
    assert_eq!(readings[0].rss_bytes, 402 * MIB);
    assert_eq!(readings[0].reclaim_ns, 20_000);
}

#[test]
fn workloads_are_capped_but_pinned_ones_always_listed() {
    let processes = (0..MAX_WORKLOADS as u32 + 20)
        .map(|i| {
            process(
                1000 + i,
                &format!("w{i:03}"),
                "/",
                MIB,
                100.0 - f64::from(i) * 0.5,
            )
        })
        .collect();
    let snapshot = snapshot(processes);
    let pinned = |key: &str| key == "w119";
    let response = summarize(
        &snapshot,
        &Identifier::default(),
        &InstanceHistories::new(Duration::from_secs(60), 10),
        &context(&pinned),
        Duration::ZERO,
    );
    assert_eq!(response.workloads.len(), MAX_WORKLOADS + 1);
    assert_eq!(response.omitted_workloads, 19);
    assert_eq!(response.workloads[0].workload, "w000");
    let last = response.workloads.last().unwrap();
    assert_eq!((last.workload.as_str(), last.pinned), ("w119", true));
    assert!(!response.workloads[0].pinned);
    assert!(last.instances[0].history.rss_bytes.is_empty());
    assert_eq!(last.omitted_instances, None);

    // One workload of many instances: the hottest are listed, the rest counted.
    let processes = (0..MAX_INSTANCES_PER_WORKLOAD as u32 + 5)
        .map(|i| process(1000 + i, "worker", "/", MIB, f64::from(i)))
        .collect();
    let response = summarize(
        &self::snapshot(processes),
        &Identifier::default(),
        &InstanceHistories::new(Duration::from_secs(60), 10),
        &context(&no_pins),
        Duration::ZERO,
    );
    let worker = &response.workloads[0];
    assert_eq!(worker.instances.len(), MAX_INSTANCES_PER_WORKLOAD);
    assert_eq!(worker.omitted_instances, Some(5));
    assert_eq!(worker.instances[0].instance, "pid/1104", "hottest first");
}

fn kill(cgroup: Option<&str>, limit: Option<u64>, usage: Option<u64>) -> OomRecord {
    OomRecord {
        timestamp_unix_ms: 1_800_000_000_000,
        victim_pid: 77,
        victim_comm: "redis-server".to_owned(),
        victim_cgroup: cgroup.map(str::to_owned),
        cgroup_limit_bytes: limit,
        cgroup_usage_at_kill_bytes: usage,
        ..OomRecord::default()
    }
}

#[test]
fn oom_scope_memcg_when_the_victims_cgroup_was_at_its_limit() {
    let limit = Some(64 * MIB);
    // Usage read right after the kill, memory already freed; the flight recording saw the peak.
    let mut record = kill(Some("/redis"), limit, Some(10 * MIB));
    assert_eq!(oom_scope(&record, None), OomScope::Global);
    record.flight_recording = vec![FlightSample {
        cgroup_usage_bytes: Some(63 * MIB),
        ..FlightSample::default()
    }];
    assert_eq!(oom_scope(&record, None), OomScope::Memcg);
    // memory.stat's LRUs still hold the victim's pages.
    let mut record = kill(Some("/redis"), limit, Some(10 * MIB));
    record.cgroup_memory_stat = Some(CgroupMemoryStat {
        lru_anon_bytes: Some(60 * MIB),
        lru_file_bytes: Some(MIB),
        kernel_bytes: Some(MIB),
        ..CgroupMemoryStat::default()
    });
    assert_eq!(oom_scope(&record, None), OomScope::Memcg);
    // The victim's own RSS at the kill.
    let mut record = kill(Some("/redis"), limit, None);
    record.anon_rss_bytes = Some(62 * MIB);
    record.file_rss_bytes = Some(MIB);
    record.shmem_rss_bytes = Some(0);
    assert_eq!(oom_scope(&record, None), OomScope::Memcg);
}

#[test]
fn oom_scope_global_when_nothing_but_the_node_could_run_out() {
    // No limit (read: the usage is known).
    assert_eq!(
        oom_scope(&kill(Some("/batch"), None, Some(900 * MIB)), None),
        OomScope::Global
    );
    // A limit with room to spare.
    assert_eq!(
        oom_scope(&kill(Some("/batch"), Some(4 << 30), Some(900 * MIB)), None),
        OomScope::Global
    );
    // The scope root stands for the node: its limit is the node's RAM.
    assert_eq!(
        oom_scope(
            &kill(Some("/node-a/"), Some(256 * MIB), Some(256 * MIB)),
            Some("/node-a")
        ),
        OomScope::Global
    );
    assert_eq!(
        oom_scope(
            &kill(Some("/node-a/redis"), Some(64 * MIB), Some(64 * MIB)),
            Some("/node-a")
        ),
        OomScope::Memcg,
        "a limited cgroup below the root is still its own"
    );
}

#[test]
fn oom_scope_unknown_without_the_cgroup_or_its_reading() {
    assert_eq!(oom_scope(&kill(None, None, None), None), OomScope::Unknown);
    assert_eq!(
        oom_scope(&kill(Some("/x"), None, None), None),
        OomScope::Unknown
    );
}

#[test]
fn kills_count_on_their_instance_by_scope_and_are_listed_newest_first() {
    let mut snapshot = snapshot(vec![process(77, "redis-server", "/redis", 10 * MIB, 1.0)]);
    let mut old = kill(Some("/redis"), Some(64 * MIB), Some(64 * MIB));
    old.timestamp_unix_ms -= 60_000;
    let mut global = kill(Some("/redis"), Some(64 * MIB), Some(MIB));
    global.anon_rss_bytes = Some(MIB);
    global.file_rss_bytes = Some(0);
    global.shmem_rss_bytes = Some(0);
    let mut other = kill(Some("/redis"), None, Some(MIB));
    other.victim_pid = 78;
    snapshot.recent_ooms = vec![old, global, other];
    let response = summarize(
        &snapshot,
        &Identifier::default(),
        &InstanceHistories::new(Duration::from_secs(60), 10),
        &context(&no_pins),
        Duration::ZERO,
    );
    let counts = response.workloads[0].instances[0].oom_kills;
    assert_eq!(
        counts,
        OomKillCounts {
            memcg: 1,
            global: 1
        }
    );
    let listed: Vec<(u64, &str, OomScope, Option<u64>)> = response
        .ooms
        .iter()
        .map(|k| {
            (
                k.timestamp_unix_ms,
                k.instance.as_str(),
                k.scope,
                k.rss_bytes,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (1_800_000_000_000, "pid/77", OomScope::Global, Some(MIB)),
            (1_800_000_000_000, "pid/78", OomScope::Global, None),
            (1_799_999_940_000, "pid/77", OomScope::Memcg, None),
        ]
    );
    assert_eq!(response.ooms[0].workload, "redis-server");
}

#[test]
fn a_cgroup_root_with_a_limit_stands_for_the_nodes_memory() {
    let snapshot = snapshot(vec![process(1, "a", "/node-a/x", MIB, 0.0)]);
    let root = CgroupMemory {
        version: 1,
        usage_bytes: Some(100 * MIB),
        limit_bytes: Some(256 * MIB),
        swap_usage_bytes: None,
        pressure: None,
        events: None,
        v1_oom_kill: None,
        v1_under_oom: None,
    };
    let ctx = NodeContext {
        cgroup_root: Some("/node-a"),
        root_memory: Some(&root),
        ..context(&no_pins)
    };
    let histories = InstanceHistories::new(Duration::from_secs(60), 10);
    let response = summarize(
        &snapshot,
        &Identifier::default(),
        &histories,
        &ctx,
        Duration::ZERO,
    );
    assert_eq!(response.node.cgroup_root.as_deref(), Some("/node-a"));
    assert_eq!(response.node.mem_total_bytes, 256 * MIB);
    assert_eq!(response.node.mem_available_bytes, 156 * MIB);
    // Unlimited: the node's own figures.
    let unlimited = CgroupMemory {
        limit_bytes: None,
        ..root
    };
    let ctx = NodeContext {
        root_memory: Some(&unlimited),
        ..ctx
    };
    let response = summarize(
        &snapshot,
        &Identifier::default(),
        &histories,
        &ctx,
        Duration::ZERO,
    );
    assert_eq!(response.node.mem_total_bytes, 8 << 30);
}

#[test]
fn limit_history_keeps_the_newest_points() {
    let snapshot = snapshot(vec![process(1, "a", "/", MIB, 0.0)]);
    let identifier = Identifier::default();
    let mut histories = InstanceHistories::new(Duration::from_secs(60), 100);
    for minute in 0..10u64 {
        let mut s = snapshot.clone();
        s.processes[0].counters.rss_anon_bytes = (minute + 1) * MIB;
        histories.record(minute * 60_000, &readings(&group(&s, &identifier)));
    }
    let mut response = summarize(
        &snapshot,
        &identifier,
        &histories,
        &context(&no_pins),
        Duration::from_secs(86_400),
    );
    assert_eq!(
        response.workloads[0].instances[0].history.rss_bytes.len(),
        10
    );
    limit_history(&mut response, Duration::from_secs(150));
    let history = &response.workloads[0].instances[0].history;
    assert_eq!(history.rss_anon_bytes, vec![8 * MIB, 9 * MIB, 10 * MIB]);
    assert_eq!(history.start_unix_s, 7 * 60);
    assert_eq!(history.reclaim_stall_seconds_per_sec.len(), 3);
    limit_history(&mut response, Duration::ZERO);
    assert_eq!(
        response.workloads[0].instances[0].history,
        Default::default()
    );
}

/// Deterministic noise (no rand dependency): a 64-bit LCG.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// A realistic node: 50 workloads, 150 instances (3 each), 2 h of one-minute history. Most are
/// steady with a few pages of jitter, one in ten leaks 30 MiB/h, one in five has reclaim stalls;
/// every field the daemon fills is filled.
fn realistic_node() -> WorkloadsResponse {
    let mut noise = Noise(42);
    let identifier = Identifier::default();
    let mut histories = InstanceHistories::new(Duration::from_secs(60), 360);
    let base_ms = 1_800_000_000_000u64;
    let node = |minute: u64, noise: &mut Noise| {
        let mut processes = Vec::new();
        for w in 0..50u32 {
            for i in 0..3u32 {
                let pid = 10_000 + w * 10 + i;
                let base = (u64::from(w) * 37 % 900 + 20) * MIB;
                let leak = if w % 10 == 3 { minute * MIB / 2 } else { 0 };
                let jitter = (noise.next() % 4) * 4096;
                let mut p = process(
                    pid,
                    &format!("service-{w:02}"),
                    &format!("/system.slice/service-{w:02}@{i}.service"),
                    base + leak + jitter,
                    (noise.next() % 10_000) as f64 / 100.0,
                );
                p.counters.reclaim_ns = if w % 5 == 0 {
                    minute * 60 * 1_000_000 * (noise.next() % 50)
                } else {
                    0
                };
                p.rates.faults_minor_per_sec = (noise.next() % 100_000) as f64 / 7.0;
                p.rates.faults_major_per_sec = (noise.next() % 1000) as f64 / 13.0;
                p.rates.reclaim_stall_seconds_per_sec = (noise.next() % 1000) as f64 / 30_000.0;
                processes.push(p);
            }
        }
        let mut s = snapshot(processes);
        s.timestamp_unix_ms = base_ms + minute * 60_000;
        s
    };
    for minute in 0..=120 {
        let s = node(minute, &mut noise);
        histories.record(s.timestamp_unix_ms, &readings(&group(&s, &identifier)));
    }
    let mut s = node(120, &mut noise);
    s.recent_ooms = (0..5)
        .map(|i| {
            let mut k = kill(
                Some("/system.slice/service-03@1.service"),
                Some(512 * MIB),
                Some(510 * MIB),
            );
            k.timestamp_unix_ms -= i * 1000;
            k
        })
        .collect();
    summarize(
        &s,
        &identifier,
        &histories,
        &context(&no_pins),
        Duration::from_secs(7200),
    )
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

/// Target of issue 11: a node's summary costs a fan-out at most 32 KiB on the wire.
#[test]
fn a_realistic_node_summary_is_at_most_32_kib_gzipped() {
    let response = realistic_node();
    let instances: usize = response.workloads.iter().map(|w| w.instances.len()).sum();
    assert_eq!((response.workloads.len(), instances), (50, 150));
    let history = &response.workloads[0].instances[0].history;
    assert_eq!(history.rss_bytes.len(), 120, "2 h of one-minute points");
    let body = serde_json::to_vec(&response).unwrap();
    let compressed = gzip(&body);
    eprintln!(
        "realistic node (50 workloads, 150 instances, 2 h at 1 min): {} bytes JSON, {} bytes gzip",
        body.len(),
        compressed.len()
    );
    assert!(
        compressed.len() <= 32 * 1024,
        "{} bytes gzipped ({} raw)",
        compressed.len(),
        body.len()
    );
}
