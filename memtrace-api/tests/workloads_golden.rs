//! The golden fixture of `GET /api/v1/workloads` (v1) is the contract, as the snapshot's is: the
//! types read it and write exactly its set of keys, unknown fields are ignored and optional ones
//! may be omitted.

use memtrace_api::workloads::{
    HistorySpec, InstanceHistory, InstanceSummary, NodeSummary, OomKill, OomKillCounts, OomScope,
    WORKLOADS_SCHEMA_VERSION, WorkloadKind, WorkloadSummary, WorkloadsResponse,
};
use memtrace_api::{Family, FamilySet, LeakHint, PsiView, Rates};
use serde_json::Value;

mod support;
use support::{assert_same_key_paths, key_paths, retain_paths};

const WORKLOADS: &str = include_str!("fixtures/workloads-v1.json");

fn fixture() -> Value {
    serde_json::from_str(WORKLOADS).expect("fixture is JSON")
}

/// Every field set, no `..Default::default()`: a new field must be filled in here.
fn full_response() -> WorkloadsResponse {
    WorkloadsResponse {
        schema_version: WORKLOADS_SCHEMA_VERSION,
        node: NodeSummary {
            name: "node-a".to_owned(),
            hostname: "node-a.example.internal".to_owned(),
            boot_id: "2e6d5a3c-97f1-4c0e-9d8b-5f1a2b3c4d5e".to_owned(),
            kernel_release: "6.8.0-45-generic".to_owned(),
            memtrace_version: "0.1.0".to_owned(),
            cgroup_root: Some("/kubepods.slice".to_owned()),
            ready: true,
            families: FamilySet::from([Family::Tasks, Family::Oom]),
            mem_total_bytes: 16 << 30,
            mem_available_bytes: 3 << 30,
            swap_total_bytes: 2 << 30,
            swap_free_bytes: 1 << 30,
            psi: Some(PsiView {
                some_avg10: 3.0,
                some_avg60: 1.0,
                some_total_us: 48_000_000,
                full_avg10: Some(1.0),
                full_avg60: Some(0.5),
                full_total_us: Some(12_000_000),
            }),
            fragmentation_index_order3: 0.12,
            fragmentation_index_order9: 0.93,
            reclaim_stall_seconds_per_sec: 0.02,
            pressure_score: 62.5,
            processes: 304,
        },
        timestamp_unix_ms: 1_795_314_670_000,
        rate_window_seconds: 10.0,
        history: HistorySpec {
            step_seconds: 60,
            max_points: 360,
            max_instances: Some(4096),
            evicted_instances: Some(0),
        },
        workloads: vec![WorkloadSummary {
            workload: "shop/Deployment/redis-cache".to_owned(),
            kind: WorkloadKind::Kubernetes,
            pinned: true,
            instances: vec![InstanceSummary {
                instance: "redis-cache-7d4b9c8f6d-x2k9p".to_owned(),
                started_unix_ms: 1_795_310_000_000,
                cgroup: Some("/kubepods.slice/x.scope".to_owned()),
                processes: 2,
                rss_anon_bytes: 1 << 30,
                rss_file_bytes: 8 << 20,
                rss_shmem_bytes: 4096,
                swap_bytes: 0,
                rates: Rates {
                    faults_minor_per_sec: 8000.0,
                    faults_major_per_sec: 1.5,
                    mmap_bytes_per_sec: 4096.0,
                    munmap_bytes_per_sec: 4096.0,
                    brk_grow_bytes_per_sec: 4096.0,
                    reclaim_stall_seconds_per_sec: 0.01,
                },
                pressure_score: 62.5,
                limit_bytes: Some(2 << 30),
                oom_kills: OomKillCounts {
                    memcg: 1,
                    global: 0,
                },
                history: InstanceHistory {
                    start_unix_s: 1_795_314_540,
                    rss_anon_bytes: vec![1 << 30],
                    rss_bytes: vec![1 << 30],
                    reclaim_stall_seconds_per_sec: vec![0.0],
                },
                rss_growth_bytes_per_sec: Some(17_476.25),
                leak_hint: Some(LeakHint {
                    since_unix_ms: 1_795_313_940_000,
                    window_seconds: 600.0,
                    growth_bytes_per_sec: 15_291.75,
                    growth_bytes: 10 << 20,
                }),
            }],
            omitted_instances: Some(2),
        }],
        omitted_workloads: 3,
        ooms: vec![OomKill {
            timestamp_unix_ms: 1_795_314_665_123,
            workload: "shop/Deployment/redis-cache".to_owned(),
            instance: "redis-cache-7d4b9c8f6d-q8w2m".to_owned(),
            victim_pid: 48_213,
            victim_comm: "redis-server".to_owned(),
            victim_cgroup: Some("/kubepods.slice/y.scope".to_owned()),
            scope: OomScope::Memcg,
            rss_bytes: Some(2_143_289_344),
            cgroup_limit_bytes: Some(2 << 30),
        }],
    }
}

/// One element in each array, every `Option` `None`.
fn minimal_response() -> WorkloadsResponse {
    WorkloadsResponse {
        workloads: vec![WorkloadSummary {
            instances: vec![InstanceSummary::default()],
            ..WorkloadSummary::default()
        }],
        ooms: vec![OomKill::default()],
        ..WorkloadsResponse::default()
    }
}

#[test]
fn the_fixture_reads_and_round_trips_exactly() {
    let read: WorkloadsResponse = serde_json::from_str(WORKLOADS).expect("workloads-v1.json");
    assert_eq!(read.schema_version, WORKLOADS_SCHEMA_VERSION);
    assert_eq!(read.workloads[0].kind, WorkloadKind::Kubernetes);
    assert_eq!(read.ooms[0].scope, OomScope::Memcg);
    assert_eq!(read.workloads[0].instances[0].history.rss_bytes.len(), 3);
    assert_eq!(serde_json::to_value(&read).unwrap(), fixture());
}

#[test]
fn a_fully_populated_response_writes_exactly_the_fixtures_keys() {
    let golden = assert_same_key_paths(
        &serde_json::to_value(full_response()).unwrap(),
        &fixture(),
        "workloads-v1.json",
    );
    assert!(golden.contains("workloads[].instances[].history.rss_anon_bytes"));
    assert!(golden.len() > 60, "{}", golden.len());
}

#[test]
fn unknown_fields_are_ignored() {
    let mut value = fixture();
    value["from_the_future"] = Value::from(1);
    value["node"]["numa_nodes"] = Value::from(2);
    value["workloads"][0]["instances"][0]["history"]["swap_bytes"] = Value::from(vec![0, 0, 0]);
    value["workloads"][0]["instances"][0]["rates"]["faults_huge_per_sec"] = Value::from(1.0);
    value["ooms"][0]["constraint"] = Value::from("CONSTRAINT_MEMCG");
    let read: WorkloadsResponse =
        serde_json::from_value(value).expect("a newer writer's response reads");
    assert_eq!(read, serde_json::from_str(WORKLOADS).unwrap());
}

#[test]
fn optional_fields_may_be_omitted() {
    let required = key_paths(&serde_json::to_value(minimal_response()).unwrap());
    let mut value = fixture();
    retain_paths(&mut value, "", &required);
    let removed = key_paths(&fixture()).len() - key_paths(&value).len();
    assert!(removed >= 14, "only {removed} optional keys");
    let read: WorkloadsResponse =
        serde_json::from_value(value).expect("a response without options reads");
    assert_eq!(read.node.cgroup_root, None);
    assert_eq!(read.node.psi, None);
    assert_eq!(read.history.max_instances, None);
    let instance = &read.workloads[0].instances[0];
    assert_eq!(
        (instance.cgroup.as_deref(), instance.limit_bytes),
        (None, None)
    );
    assert_eq!(read.ooms[0].rss_bytes, None);
    assert_eq!(instance.rss_anon_bytes, 1 << 30, "required values are kept");
    // An older daemon without `pinned` or `families`.
    let mut value = fixture();
    value["workloads"][0]
        .as_object_mut()
        .unwrap()
        .remove("pinned");
    value["node"].as_object_mut().unwrap().remove("families");
    let read: WorkloadsResponse = serde_json::from_value(value).unwrap();
    assert!(!read.workloads[0].pinned);
    assert_eq!(read.node.families, FamilySet::default());
}
