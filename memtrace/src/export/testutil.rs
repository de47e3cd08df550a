//! Hand-built snapshots and a tiny exposition parser for the export tests.
use std::collections::BTreeMap;

use memtrace_api::{
    CgroupView, Counters, Family, FamilySet, FlightSample, NodeIdentityView, NodeMemoryView,
    OomRecord, OwnerView, PipelineView, ProcessView, PsiView, Rates, SCHEMA_VERSION, Snapshot,
};

pub const NOW_MS: u64 = 1_750_000_000_000;
pub const POD_UID: &str = "3f2a9c1e-6b7d-4e8a-9f10-2b3c4d5e6f70";
pub const CONTAINER_ID: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904aaaa0000bbbb1111cccc2222";

pub fn pod_cgroup() -> String {
    format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/\
         cri-containerd-{CONTAINER_ID}.scope",
        POD_UID.replace('-', "_")
    )
}

pub fn pod_owner() -> OwnerView {
    OwnerView {
        container_id: Some(CONTAINER_ID.to_owned()),
        runtime: Some("containerd".to_owned()),
        pod_uid: Some(POD_UID.to_owned()),
        qos: Some("Burstable".to_owned()),
        systemd_unit: None,
    }
}

/// A process with counters derived from `seed` (so sums are checkable).
pub fn process(pid: u32, comm: &str, cgroup: Option<&str>, score: f64, seed: u64) -> ProcessView {
    ProcessView {
        pid,
        comm: comm.to_owned(),
        cmdline: format!("/usr/bin/{comm} --flag"),
        cgroup: cgroup.map(str::to_owned),
        owner: OwnerView::default(),
        workload: Some(comm.to_owned()),
        workload_kind: Some(memtrace_api::workloads::WorkloadKind::Comm),
        instance: Some(format!("pid/{pid}")),
        counters: Counters {
            faults_minor: 1000 * seed,
            faults_major: seed,
            mmap_bytes: 4096 * seed,
            munmap_bytes: 2048 * seed,
            brk_grow_bytes: 8192 * seed,
            brk_shrink_bytes: 4096,
            mremap_grow_bytes: 3 * seed,
            mremap_shrink_bytes: 1,
            reclaim_stalls: seed % 7,
            reclaim_ns: 1_500_000 * seed,
            rss_anon_bytes: 1 << 20,
            rss_file_bytes: 2 << 20,
            rss_shmem_bytes: 4096,
            swap_bytes: seed * 4096,
            vm_bytes: Some(seed << 20),
            ..Counters::default()
        },
        rates: Rates {
            faults_minor_per_sec: seed as f64,
            faults_major_per_sec: 0.5,
            ..Rates::default()
        },
        rss_bytes: (3 << 20) + 4096,
        pressure_score: score,
        ..ProcessView::default()
    }
}

/// `n` (≤ 1600) processes with distinct comms and distinct scores (multiples of 1/16, exact in
/// binary and in JSON), in 40 cgroups.
pub fn many_processes(n: u32) -> Vec<ProcessView> {
    (0..n)
        .map(|i| {
            let cg = format!("/system.slice/svc{}.service", i % 40);
            process(
                1000 + i,
                &format!("w{i:04}"),
                Some(&cg),
                f64::from(i) / 16.0,
                u64::from(i) + 1,
            )
        })
        .collect()
}

pub fn cgroup(path: &str, score: f64, limit: Option<u64>, psi: bool) -> CgroupView {
    CgroupView {
        path: path.to_owned(),
        owner: OwnerView::default(),
        workload: None,
        processes: 3,
        counters: Counters {
            faults_minor: 5000,
            faults_major: 12,
            reclaim_ns: 250_000_000,
            ..Counters::default()
        },
        rates: Rates::default(),
        rss_bytes: 64 << 20,
        rss_growth_bytes_per_sec: None,
        reclaim_stall_buckets: None,
        usage_bytes: Some(80 << 20),
        limit_bytes: limit,
        psi: psi.then_some(PsiView {
            some_avg10: 1.5,
            some_avg60: 0.7,
            some_total_us: 2_500_000,
            full_avg10: Some(0.5),
            full_avg60: Some(0.2),
            full_total_us: Some(1_000_000),
        }),
        kernel_oom_kills: Some(0),
        oom_kills: 0,
        pressure_score: score,
    }
}

pub fn oom(comm: &str, cgroup: Option<&str>, owner: OwnerView, age_ms: u64) -> OomRecord {
    OomRecord {
        timestamp: "2025-06-15T15:06:40Z".to_owned(),
        timestamp_unix_ms: NOW_MS - age_ms,
        victim_pid: 4242,
        victim_comm: comm.to_owned(),
        victim_cgroup: cgroup.map(str::to_owned),
        victim_owner: owner,
        trigger_pid: 4243,
        trigger_comm: "java".to_owned(),
        anon_rss_bytes: Some(500 << 20),
        file_rss_bytes: Some(1 << 20),
        shmem_rss_bytes: Some(0),
        total_vm_bytes: Some(2 << 30),
        pgtables_bytes: Some(1 << 20),
        uid: Some(1000),
        oom_score_adj: Some(985),
        cgroup_limit_bytes: Some(512 << 20),
        flight_recording: (0..3)
            .map(|i| FlightSample {
                offset_seconds: -(i as f64),
                rss_anon_bytes: (500 - i) << 20,
                cgroup_usage_bytes: Some(510 << 20),
                ..FlightSample::default()
            })
            .collect(),
        ..OomRecord::default()
    }
}

/// A node running a Kubernetes pod, systemd services, odd comms, and 300 more processes than the
/// default top N; with a recent OOM of a container that is gone and an old one.
pub fn realistic() -> (Snapshot, Vec<OomRecord>) {
    let pod = pod_cgroup();
    let mut processes = many_processes(300);
    let mut java = process(1, "java", Some(&pod), 97.5, 90);
    java.owner = pod_owner();
    let mut java2 = process(2, "java", Some(&pod), 60.0, 10);
    java2.owner = pod_owner();
    processes.push(java);
    processes.push(java2);
    processes.push(process(3, "we\"ird\\comm\nx", None, 99.0, 3));
    processes.push(process(4, "kworker/u8:2", None, f64::NAN, 1));
    processes.sort_by(|a, b| b.pressure_score.total_cmp(&a.pressure_score));

    let mut pod_cg = cgroup(&pod, 88.0, Some(512 << 20), true);
    pod_cg.owner = pod_owner();
    let mut cgroups = vec![
        pod_cg,
        cgroup("/system.slice/sshd.service", 1.0, None, true),
        cgroup(
            "/user.slice/user-1000.slice/session-2.scope",
            0.0,
            None,
            false,
        ),
    ];
    cgroups.extend((0..250).map(|i| {
        cgroup(
            &format!("/system.slice/svc{i}.service"),
            f64::from(i % 50),
            Some(1 << 30),
            i % 2 == 0,
        )
    }));

    let gone_pod = OwnerView {
        container_id: Some("deadbeef".repeat(8)),
        pod_uid: Some("0d0e0a0d-0000-4000-8000-000000000001".to_owned()),
        ..OwnerView::default()
    };
    let ooms = vec![
        oom(
            "stress-ng",
            Some("/kubepods.slice/gone.scope"),
            gone_pod,
            10 * 60 * 1000,
        ),
        oom(
            "oldkill",
            Some("/system.slice/old.service"),
            OwnerView::default(),
            2 * 3600 * 1000,
        ),
    ];

    let snapshot = Snapshot {
        schema_version: SCHEMA_VERSION,
        node: NodeIdentityView {
            name: Some("node-1".to_owned()),
            hostname: "node-1".to_owned(),
            boot_id: "b0b0b0b0-1111-2222-3333-444444444444".to_owned(),
            kernel_release: "6.8.0-45-generic".to_owned(),
        },
        timestamp: "2025-06-15T15:06:40Z".to_owned(),
        timestamp_unix_ms: NOW_MS,
        rate_window_seconds: 10.0,
        processes,
        cgroups,
        node_memory: NodeMemoryView {
            psi: Some(PsiView {
                some_avg10: 2.5,
                some_avg60: 1.0,
                some_total_us: 12_000_000,
                full_avg10: Some(0.75),
                full_avg60: Some(0.25),
                full_total_us: Some(3_000_000),
            }),
            mem_total_bytes: 16 << 30,
            mem_available_bytes: 3 << 30,
            mem_free_bytes: 1 << 30,
            swap_total_bytes: 2 << 30,
            swap_free_bytes: 1 << 30,
            anon_bytes: 9 << 30,
            page_cache_bytes: 4 << 30,
            fragmentation_index_order3: 0.12,
            fragmentation_index_order9: 0.93,
            pgfault_total: 9_000_000,
            pgmajfault_total: 4_000,
            allocstall_total: 17,
            compact_stall_total: 5,
            compact_fail_total: 2,
            oom_kill_total: 3,
            pgscan_direct_total: 100_000,
            workingset_refault_total: 77_000,
        },
        recent_ooms: Vec::new(),
        pipeline: PipelineView {
            families: FamilySet::from([
                Family::Tasks,
                Family::Mmap,
                Family::Reclaim,
                Family::Oom,
                Family::Lifecycle,
            ]),
            probes_attached: 11,
            probes_failed: 1,
            tracked_processes: 304,
            events_received: 1_234_567,
            lost_kernel_ring_full: 3,
            lost_kernel_map_full: 0,
            lost_userspace_queue: 1,
            lost_decode: 0,
            recording: Some(memtrace_api::RecordingView {
                frames_written: 3_600,
                write_errors: 2,
                frames_dropped: 1,
            }),
        },
    };
    (snapshot, ooms)
}

/// One sample line of an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Parse the sample lines of a text exposition (comments skipped), unescaping label values.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let name_end = line.find(['{', ' ']).expect("sample line has a name");
            let name = line[..name_end].to_owned();
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(r) = rest.strip_prefix('{') {
                let mut chars = r.char_indices().peekable();
                loop {
                    let (start, c) = chars.next().expect("unterminated label set");
                    if c == '}' {
                        rest = &r[start + 1..];
                        break;
                    }
                    if c == ',' {
                        continue;
                    }
                    let mut key = String::from(c);
                    for (_, c) in chars.by_ref() {
                        if c == '=' {
                            break;
                        }
                        key.push(c);
                    }
                    assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                    let mut value = String::new();
                    while let Some((_, c)) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => match chars.next().map(|x| x.1) {
                                Some('n') => value.push('\n'),
                                Some(c) => value.push(c),
                                None => panic!("dangling escape in {line}"),
                            },
                            c => value.push(c),
                        }
                    }
                    assert!(
                        labels.insert(key, value).is_none(),
                        "duplicate label: {line}"
                    );
                }
            }
            let value = rest
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            Sample {
                name,
                labels,
                value,
            }
        })
        .collect()
}
