//! The golden fixtures of schema v1 are the contract (see the crate documentation): the types
//! must read them, and must write exactly their set of keys.

use memtrace_api::workloads::WorkloadKind;
use memtrace_api::{
    CgroupMemoryStat, CgroupProcess, CgroupView, Counters, Family, FamilySet, FlightSample,
    LeakHint, NodeIdentityView, NodeMemoryView, OomRecord, OomResponse, OwnerView, PipelineView,
    ProcessView, PsiView, Rates, RecordingView, SCHEMA_VERSION, Snapshot,
};
use serde_json::Value;

mod support;
use support::{assert_same_key_paths, key_paths, retain_paths};

const SNAPSHOT: &str = include_str!("fixtures/snapshot-v1.json");
const OOMS: &str = include_str!("fixtures/oom-v1.json");

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

// ---- fully populated models: no `..Default::default()`, so a new field must be filled in here ---

fn owner() -> OwnerView {
    OwnerView {
        container_id: Some("4b825dc642cb".to_owned()),
        runtime: Some("containerd".to_owned()),
        pod_uid: Some("3f2a9c1e-6b7d-4e8a-9f10-2b3c4d5e6f70".to_owned()),
        qos: Some("Burstable".to_owned()),
        systemd_unit: Some("cri-containerd-4b825dc642cb.scope".to_owned()),
    }
}

fn psi() -> PsiView {
    PsiView {
        some_avg10: 3.0,
        some_avg60: 1.0,
        some_total_us: 48_000_000,
        full_avg10: Some(1.0),
        full_avg60: Some(0.5),
        full_total_us: Some(12_000_000),
    }
}

fn rates() -> Rates {
    Rates {
        faults_minor_per_sec: 8000.0,
        faults_major_per_sec: 1.5,
        mmap_bytes_per_sec: 4096.0,
        munmap_bytes_per_sec: 4096.0,
        brk_grow_bytes_per_sec: 4096.0,
        reclaim_stall_seconds_per_sec: 0.01,
    }
}

/// Every counter of the table, known (a line added to the table shows up here by itself).
fn counters() -> Counters {
    Counters::from_fn(|_| 4096)
}

fn oom_record() -> OomRecord {
    OomRecord {
        timestamp: "2026-11-24T02:31:05.123Z".to_owned(),
        timestamp_unix_ms: 1_795_314_665_123,
        victim_pid: 48_213,
        victim_comm: "java".to_owned(),
        victim_cgroup: Some("/kubepods.slice/x.scope".to_owned()),
        victim_owner: owner(),
        victim_workload: Some("shop/Deployment/orders".to_owned()),
        trigger_pid: 48_240,
        trigger_comm: "java".to_owned(),
        anon_rss_bytes: Some(1 << 30),
        file_rss_bytes: Some(1 << 20),
        shmem_rss_bytes: Some(1 << 12),
        total_vm_bytes: Some(6 << 30),
        pgtables_bytes: Some(4 << 20),
        uid: Some(1000),
        oom_score_adj: Some(985),
        cgroup_limit_bytes: Some(3 << 29),
        flight_recording: vec![FlightSample {
            offset_seconds: -1.0,
            rss_anon_bytes: 1 << 30,
            rss_file_bytes: 1 << 20,
            rss_shmem_bytes: 1 << 12,
            faults_minor_per_sec: 27_000.0,
            faults_major_per_sec: 9.0,
            reclaim_stall_seconds_per_sec: 0.6,
            cgroup_usage_bytes: Some(3 << 29),
        }],
        cgroup_usage_at_kill_bytes: Some(3 << 29),
        cgroup_memory_stat: Some(CgroupMemoryStat {
            version: 2,
            anon_bytes: Some(1 << 30),
            file_bytes: Some(1 << 28),
            shmem_bytes: Some(1 << 12),
            file_mapped_bytes: Some(1 << 27),
            kernel_bytes: Some(1 << 24),
            kernel_stack_bytes: Some(1 << 21),
            pagetables_bytes: Some(4 << 20),
            slab_bytes: Some(1 << 23),
            sock_bytes: Some(1 << 20),
            swap_bytes: Some(0),
            lru_anon_bytes: Some(1 << 30),
            lru_file_bytes: Some(1 << 28),
            unevictable_bytes: Some(0),
        }),
        cgroup_processes: vec![CgroupProcess {
            pid: 48_240,
            comm: "java".to_owned(),
            rss_bytes: 12 << 20,
        }],
    }
}

fn full_snapshot() -> Snapshot {
    Snapshot {
        schema_version: SCHEMA_VERSION,
        node: NodeIdentityView {
            name: Some("node-7".to_owned()),
            hostname: "node-7".to_owned(),
            boot_id: "2e6d5a3c-97f1-4c0e-9d8b-5f1a2b3c4d5e".to_owned(),
            kernel_release: "6.8.0-45-generic".to_owned(),
        },
        timestamp: "2026-11-24T02:31:10.000Z".to_owned(),
        timestamp_unix_ms: 1_795_314_670_000,
        rate_window_seconds: 10.0,
        processes: vec![ProcessView {
            pid: 48_213,
            comm: "java".to_owned(),
            cmdline: "java -jar /app/orders.jar".to_owned(),
            cgroup: Some("/kubepods.slice/x.scope".to_owned()),
            owner: owner(),
            workload: Some("shop/Deployment/orders".to_owned()),
            workload_kind: Some(WorkloadKind::Kubernetes),
            instance: Some("orders-7d9f8b6c5d-x2k4q".to_owned()),
            counters: counters(),
            rates: rates(),
            rss_bytes: 1 << 30,
            pressure_score: 87.5,
            oom_kills_as_victim: 1,
            oom_kills_as_trigger: 1,
            rss_growth_bytes_per_sec: Some(34_952.5),
            leak_hint: Some(LeakHint {
                since_unix_ms: 1_795_313_940_000,
                window_seconds: 600.0,
                growth_bytes_per_sec: 30_583.5,
                growth_bytes: 21 << 20,
            }),
            reclaim_stall_buckets: Some(vec![0, 2, 3, 4, 2, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        }],
        cgroups: vec![CgroupView {
            path: "/kubepods.slice/x.scope".to_owned(),
            owner: owner(),
            workload: Some("shop/Deployment/orders".to_owned()),
            processes: 3,
            counters: counters(),
            rates: rates(),
            rss_bytes: 1 << 30,
            usage_bytes: Some(1 << 30),
            limit_bytes: Some(3 << 29),
            psi: Some(psi()),
            kernel_oom_kills: Some(1),
            oom_kills: 1,
            pressure_score: 91.25,
            rss_growth_bytes_per_sec: Some(34_952.5),
            reclaim_stall_buckets: Some(vec![0, 5, 9, 12, 7, 4, 2, 1, 1, 1, 0, 0, 0, 0, 0, 0]),
        }],
        node_memory: NodeMemoryView {
            psi: Some(psi()),
            mem_total_bytes: 16 << 30,
            mem_available_bytes: 3 << 30,
            mem_free_bytes: 1 << 29,
            swap_total_bytes: 2 << 30,
            swap_free_bytes: 1 << 30,
            anon_bytes: 9 << 30,
            page_cache_bytes: 4 << 30,
            fragmentation_index_order3: 0.12,
            fragmentation_index_order9: 0.93,
            pgfault_total: 912_345_678,
            pgmajfault_total: 40_213,
            allocstall_total: 17,
            compact_stall_total: 5,
            compact_fail_total: 2,
            oom_kill_total: 3,
            pgscan_direct_total: 100_234,
            workingset_refault_total: 77_012,
        },
        recent_ooms: vec![oom_record()],
        pipeline: PipelineView {
            families: FamilySet::from([Family::Tasks, Family::Mmap, Family::Oom]),
            probes_attached: 11,
            probes_failed: 0,
            tracked_processes: 304,
            events_received: 1_234_567,
            lost_kernel_ring_full: 3,
            lost_kernel_map_full: 0,
            lost_userspace_queue: 1,
            lost_decode: 0,
            recording: Some(RecordingView {
                frames_written: 3_600,
                write_errors: 2,
                frames_dropped: 1,
            }),
        },
    }
}

fn full_ooms() -> OomResponse {
    OomResponse {
        schema_version: SCHEMA_VERSION,
        ooms: vec![oom_record()],
    }
}

/// The smallest snapshot with one element in each array: every `Option` `None`.
fn minimal_snapshot() -> Snapshot {
    Snapshot {
        processes: vec![ProcessView::default()],
        cgroups: vec![CgroupView::default()],
        recent_ooms: vec![OomRecord {
            flight_recording: vec![FlightSample::default()],
            cgroup_memory_stat: Some(CgroupMemoryStat::default()),
            cgroup_processes: vec![CgroupProcess::default()],
            ..OomRecord::default()
        }],
        ..Snapshot::default()
    }
}

// ---- the tests ----------------------------------------------------------------------------------

#[test]
fn fixtures_deserialize_and_round_trip_exactly() {
    let snapshot: Snapshot = serde_json::from_str(SNAPSHOT).expect("snapshot-v1.json reads");
    assert_eq!(snapshot.schema_version, SCHEMA_VERSION);
    assert_eq!(serde_json::to_value(&snapshot).unwrap(), fixture(SNAPSHOT));
    let ooms: OomResponse = serde_json::from_str(OOMS).expect("oom-v1.json reads");
    assert_eq!(ooms.schema_version, SCHEMA_VERSION);
    assert_eq!(serde_json::to_value(&ooms).unwrap(), fixture(OOMS));
}

#[test]
fn a_fully_populated_model_writes_exactly_the_fixtures_keys() {
    let golden = assert_same_key_paths(
        &serde_json::to_value(full_snapshot()).unwrap(),
        &fixture(SNAPSHOT),
        "snapshot-v1.json",
    );
    assert_eq!(
        key_paths(&serde_json::to_value(full_ooms()).unwrap()),
        key_paths(&fixture(OOMS))
    );
    assert!(golden.contains("processes[].counters.faults_minor"));
    assert!(golden.len() > 150, "{}", golden.len());
}

#[test]
fn unknown_fields_are_ignored() {
    let mut value = fixture(SNAPSHOT);
    value["from_the_future"] = Value::from(1);
    value["processes"][0]["counters"]["madvise_hugepage_bytes"] = Value::from(4096);
    value["pipeline"]["families"]
        .as_array_mut()
        .unwrap()
        .push(Value::from("stacks"));
    value["node_memory"]["psi"]["some_avg300"] = Value::from(0.5);
    let read: Snapshot = serde_json::from_value(value).expect("a newer writer's snapshot reads");
    assert_eq!(read, serde_json::from_str::<Snapshot>(SNAPSHOT).unwrap());

    // An older daemon, before a counter was added to the table: the counter reads as 0.
    let mut value = fixture(SNAPSHOT);
    let counters = value["processes"][0]["counters"].as_object_mut().unwrap();
    assert!(counters.remove("failed_calls").is_some());
    let read: Snapshot = serde_json::from_value(value).expect("an older writer's snapshot reads");
    assert_eq!(read.processes[0].counters.failed_calls, 0);
    assert_eq!(read.processes[0].counters.mmap_calls, 4211);

    let mut value = fixture(OOMS);
    value["ooms"][0]["victim_stack"] = Value::from("do_page_fault");
    let read: OomResponse = serde_json::from_value(value).unwrap();
    assert_eq!(read, serde_json::from_str::<OomResponse>(OOMS).unwrap());
}

#[test]
fn optional_fields_may_be_omitted() {
    let required = key_paths(&serde_json::to_value(minimal_snapshot()).unwrap());
    let mut value = fixture(SNAPSHOT);
    retain_paths(&mut value, "", &required);
    let removed = key_paths(&fixture(SNAPSHOT)).len() - key_paths(&value).len();
    assert!(removed >= 30, "only {removed} optional keys");
    let read: Snapshot = serde_json::from_value(value).expect("a snapshot without options reads");
    let p = &read.processes[0];
    assert_eq!((p.cgroup.as_deref(), p.counters.vm_bytes), (None, None));
    assert_eq!(p.counters.faults_user, None);
    assert_eq!(p.owner, OwnerView::default());
    assert_eq!(read.cgroups[0].psi, None);
    assert_eq!(read.recent_ooms[0].uid, None);
    assert_eq!(
        read.recent_ooms[0].flight_recording[0].cgroup_usage_bytes,
        None
    );
    assert_eq!(
        p.counters.faults_minor, 1_843_921,
        "required values are kept"
    );
}
