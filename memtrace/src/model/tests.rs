//! Deterministic model tests: synthetic samples at explicit instants (`t0 + n s`).
use memtrace_common::{COMM_LEN, EventHeader, kind};

use super::*;
use crate::cgroup::{MemoryEvents, Psi, PsiLine};
use crate::node::{MemInfo, NodeIdentity, VmStat};
use memtrace_api::{
    CgroupMemoryStat, CgroupProcess, CgroupView, PipelineView, ProcessView, Rates, SCHEMA_VERSION,
    Snapshot,
};
use score::RECENT_OOM_WINDOW;
use std::time::UNIX_EPOCH;

const MIB: u64 = 1 << 20;
const POD: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e3d4c_5b6a_4978_8695_a4b3c2d1e0f9.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

fn wall(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "expected {expected}, got {actual}"
    );
}

fn info(pid: u32, comm: &str, cgroup: &str, start_ticks: u64) -> Option<Arc<ProcessInfo>> {
    Some(Arc::new(ProcessInfo {
        pid,
        comm: comm.to_owned(),
        cmdline: format!("{comm} --serve"),
        cgroup: Some(cgroup.to_owned()),
        start_ticks,
    }))
}

/// Stats with `minor` minor and `major` major faults (all user mode) and `anon` bytes of RSS.
fn stats(minor: u64, major: u64, anon: u64) -> ProcStats {
    let mut s = ProcStats {
        faults_user: minor + major,
        faults_major: major,
        ..ProcStats::default()
    };
    s.rss[rss_member::ANON] = anon;
    s
}

fn comm(name: &str) -> [u8; COMM_LEN] {
    let mut c = [0u8; COMM_LEN];
    c[..name.len()].copy_from_slice(name.as_bytes());
    c
}

fn header(kind: u32, pid: u32, name: &str) -> EventHeader {
    EventHeader {
        kind,
        pid,
        tid: pid,
        cpu: 0,
        ts_ns: 0,
        comm: comm(name),
    }
}

fn oom(trigger: u32, victim: u32, present: u32) -> Event {
    Event::Oom(OomEvent {
        header: header(kind::OOM, trigger, "trigger"),
        victim_pid: victim,
        victim_uid: 1000,
        total_vm_kb: 4096,
        anon_rss_kb: 2048,
        file_rss_kb: 16,
        shmem_rss_kb: 0,
        pgtables_kb: 8,
        oom_score_adj: 900,
        present,
        victim_comm: comm("victim"),
        ..OomEvent::default()
    })
}

fn exit(pid: u32, final_stats: ProcStats) -> Event {
    Event::Exit(ExitEvent {
        header: header(kind::EXIT, pid, "exiting"),
        stats: final_stats,
        tracked: 1,
        ..ExitEvent::default()
    })
}

fn memory(usage: u64, limit: Option<u64>, psi_some_avg10: Option<f64>) -> CgroupMemory {
    let line = |avg10| PsiLine {
        avg10,
        avg60: 1.0,
        avg300: 0.5,
        total_us: 1234,
    };
    CgroupMemory {
        version: 2,
        usage_bytes: Some(usage),
        limit_bytes: limit,
        swap_usage_bytes: None,
        pressure: psi_some_avg10.map(|a| Psi {
            some: line(a),
            full: Some(line(a / 2.0)),
        }),
        events: Some(MemoryEvents {
            oom_kill: 3,
            ..MemoryEvents::default()
        }),
        v1_oom_kill: None,
        v1_under_oom: None,
    }
}

fn node_sample(psi_some_avg10: f64) -> NodeSample {
    let totals = |avg10| PsiLine {
        avg10,
        avg60: 2.0,
        avg300: 1.0,
        total_us: 99,
    };
    NodeSample {
        identity: NodeIdentity {
            hostname: "node-1".to_owned(),
            boot_id: "boot".to_owned(),
            kernel_release: "6.8.0".to_owned(),
        },
        psi: Some(Psi {
            some: totals(psi_some_avg10),
            full: None,
        }),
        vmstat: VmStat {
            pgfault: 500,
            pgmajfault: 7,
            allocstall: 3,
            oom_kill: 1,
            workingset_refault: 11,
            ..VmStat::default()
        },
        meminfo: MemInfo {
            total: 8 << 30,
            free: 1 << 30,
            available: 2 << 30,
            buffers: 10 * MIB,
            cached: 100 * MIB,
            anon_pages: 3 << 30,
            ..MemInfo::default()
        },
        buddy: Vec::new(),
        fragmentation_order3: 0.25,
        fragmentation_order9: 0.75,
    }
}

fn pipeline() -> PipelineView {
    PipelineView {
        probes_attached: 12,
        events_received: 345,
        ..PipelineView::default()
    }
}

fn cgroup_view<'a>(snap: &'a Snapshot, path: &str) -> &'a CgroupView {
    snap.cgroups
        .iter()
        .find(|c| c.path == path)
        .unwrap_or_else(|| panic!("no cgroup {path} in {:?}", snap.cgroups))
}

fn process_view(snap: &Snapshot, pid: u32) -> &ProcessView {
    snap.processes
        .iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("no pid {pid}"))
}

#[test]
fn default_history_covers_flight_window() {
    let config = ModelConfig::default();
    assert_eq!(config.history_capacity(), 61);
    let fast = ModelConfig {
        sample_interval: Duration::from_millis(500),
        ..ModelConfig::default()
    };
    assert_eq!(fast.history_capacity(), 121);
    let zero = ModelConfig {
        sample_interval: Duration::ZERO,
        ..ModelConfig::default()
    };
    assert_eq!(zero.history_capacity(), MAX_HISTORY);
}

#[test]
fn rates_over_window() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    let who = info(10, "app", "/app.slice", 1);
    // 1000 minor + 5 major faults, 20 ms of reclaim stall and 1 MiB mmap'd per second.
    let tick = |n: u64| {
        let mut s = stats(1000 * n, 5 * n, MIB);
        s.reclaim_ns = 20_000_000 * n;
        s.mmap_bytes = MIB * n;
        s
    };
    for n in 0..10 {
        model.observe_processes(at(t0, n), &[(10, tick(n), who.clone())]);
    }
    let snap = model.snapshot(at(t0, 9), wall(9), pipeline());
    let p = process_view(&snap, 10);
    close(p.rates.faults_minor_per_sec, 1000.0);
    close(p.rates.faults_major_per_sec, 5.0);
    close(p.rates.reclaim_stall_seconds_per_sec, 0.02);
    close(p.rates.mmap_bytes_per_sec, MIB as f64);
    assert_eq!(p.counters.faults_minor, 9000);
    assert_eq!(p.rss_bytes, MIB);
    close(snap.rate_window_seconds, 10.0);

    // The rate follows the window: 30 more ticks at 3000/s, only those count after 10 s.
    for n in 10..40 {
        let mut s = tick(9);
        s.faults_user += 3000 * (n - 9);
        model.observe_processes(at(t0, n), &[(10, s, who.clone())]);
    }
    let snap = model.snapshot(at(t0, 39), wall(39), pipeline());
    close(process_view(&snap, 10).rates.faults_minor_per_sec, 3000.0);
    // Between ticks: the divisor is the time between the samples used, not the window.
    let snap = model.snapshot(
        at(t0, 39) + Duration::from_millis(500),
        wall(39),
        pipeline(),
    );
    close(process_view(&snap, 10).rates.faults_minor_per_sec, 3000.0);
    close(
        cgroup_view(&snap, "/app.slice").rates.faults_minor_per_sec,
        3000.0,
    );
}

#[test]
fn single_sample_has_zero_rates() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    model.observe_processes(t0, &[(7, stats(5000, 50, 0), None)]);
    let snap = model.snapshot(t0, wall(0), pipeline());
    let p = process_view(&snap, 7);
    assert_eq!(p.rates, Rates::default());
    assert_eq!(p.comm, "?");
    assert_eq!(p.cgroup, None);
    assert_eq!(cgroup_view(&snap, "/").processes, 1);
}

#[test]
fn pid_reuse_resets_history() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    let old = info(20, "old", "/a", 100);
    for n in 0..5 {
        model.observe_processes(at(t0, n), &[(20, stats(10_000 * n, 0, 0), old.clone())]);
    }
    // Same pid, counters backwards, identity unknown this tick: a new process.
    model.observe_processes(at(t0, 5), &[(20, stats(100, 0, 0), None)]);
    let snap = model.snapshot(at(t0, 5), wall(5), pipeline());
    let p = process_view(&snap, 20);
    assert_eq!(p.rates, Rates::default(), "history restarted");
    assert_eq!(p.counters.faults_minor, 100);
    assert_eq!(p.comm, "?", "the old identity is not carried over");
    // The old process's 40000 faults stay with its cgroup.
    assert_eq!(cgroup_view(&snap, "/a").counters.faults_minor, 40_000);
    assert_eq!(cgroup_view(&snap, "/a").processes, 0);

    model.observe_processes(at(t0, 6), &[(20, stats(300, 0, 0), None)]);
    let snap = model.snapshot(at(t0, 6), wall(6), pipeline());
    close(process_view(&snap, 20).rates.faults_minor_per_sec, 200.0);

    // A different start time also means a new process, even with counters going up.
    model.observe_processes(at(t0, 7), &[(20, stats(500, 0, 0), info(20, "x", "/b", 1))]);
    model.observe_processes(at(t0, 8), &[(20, stats(600, 0, 0), info(20, "y", "/b", 2))]);
    let snap = model.snapshot(at(t0, 8), wall(8), pipeline());
    let p = process_view(&snap, 20);
    assert_eq!((p.comm.as_str(), p.rates), ("y", Rates::default()));
    // Its cgroup, unknown until t7, was learnt there (not a move): all its 500 faults are in
    // "/b", plus the 600 of the process with the newer start.
    assert_eq!(cgroup_view(&snap, "/b").counters.faults_minor, 500 + 600);
    assert_eq!(model.cgroup_paths(), ["/b"]);
}

/// `--cmdline`: by default the snapshot reveals no command line (the field stays, empty);
/// `comm-only` the command without its arguments; `full` everything.
#[test]
fn cmdline_reveals_what_its_mode_allows() {
    let t0 = Instant::now();
    let cmdline = "/usr/bin/app --serve --db-password=hunter2";
    let shown = |mode: Option<CmdlineMode>| {
        let mut model = Model::new(ModelConfig {
            cmdline: mode.unwrap_or_default(),
            ..ModelConfig::default()
        });
        let identity = Arc::new(ProcessInfo {
            cmdline: cmdline.to_owned(),
            ..(*info(31, "app", "/u", 5).expect("info")).clone()
        });
        model.observe_processes(t0, &[(31, stats(1, 0, 0), Some(identity))]);
        let snap = model.snapshot(at(t0, 1), wall(1), pipeline());
        process_view(&snap, 31).cmdline.clone()
    };
    assert_eq!(shown(None), "", "off by default");
    assert_eq!(shown(Some(CmdlineMode::Off)), "");
    assert_eq!(shown(Some(CmdlineMode::CommOnly)), "/usr/bin/app");
    assert_eq!(shown(Some(CmdlineMode::Full)), cmdline);
}

#[test]
fn identity_unknown_keeps_previous_and_exec_refreshes_comm() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig {
        cmdline: CmdlineMode::Full,
        ..ModelConfig::default()
    });
    model.observe_processes(t0, &[(30, stats(1, 0, 0), info(30, "bash", "/u", 5))]);
    model.observe_processes(at(t0, 1), &[(30, stats(2, 0, 0), None)]);
    let snap = model.snapshot(at(t0, 1), wall(1), pipeline());
    let p = process_view(&snap, 30);
    assert_eq!((p.comm.as_str(), p.cgroup.as_deref()), ("bash", Some("/u")));
    assert_eq!(p.cmdline, "bash --serve");

    let exec = Event::Exec(memtrace_common::ExecEvent {
        header: header(kind::EXEC, 30, "postgres"),
        old_pid: 30,
        filename_len: 0,
        filename: [0; memtrace_common::FILENAME_LEN],
    });
    model.observe_event(at(t0, 1), wall(1), &exec);
    // The identity cache still says bash; the exec is newer.
    model.observe_processes(
        at(t0, 2),
        &[(30, stats(3, 0, 0), info(30, "bash", "/u", 5))],
    );
    let snap = model.snapshot(at(t0, 2), wall(2), pipeline());
    assert_eq!(process_view(&snap, 30).comm, "postgres");
}

/// A victim whose anon RSS climbs 10 MiB per tick for 70 s, then vanishes from the ticks; the
/// OOM event arrives 2 s later, within the exited grace.
#[test]
fn absent_victim_oom_within_grace_gets_flight_recording() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    let victim = info(40, "hog", POD, 7);
    let bystander = info(41, "sidecar", POD, 8);
    for n in 0..70 {
        let mut s = stats(1000 * n, 2 * n, 10 * MIB * (n + 1));
        s.rss[rss_member::FILE] = MIB;
        s.reclaim_ns = 50_000_000 * n;
        model.observe_processes(
            at(t0, n),
            &[
                (40, s, victim.clone()),
                (41, stats(n, 0, MIB), bystander.clone()),
            ],
        );
        model.observe_cgroup(
            at(t0, n),
            POD,
            memory(12 * MIB * (n + 1), Some(1 << 30), None),
        );
    }
    assert_eq!(model.process_count(), 2);
    model.observe_processes(at(t0, 70), &[(41, stats(70, 0, MIB), bystander.clone())]);
    assert_eq!(
        model.process_count(),
        1,
        "the absent victim left the live list"
    );

    let present = oom_field::COMM | oom_field::ANON_RSS | oom_field::UID;
    model.observe_event(at(t0, 71), wall(71), &oom(41, 40, present));

    let records = model.oom_records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!((r.victim_pid, r.victim_comm.as_str()), (40, "victim"));
    assert_eq!((r.trigger_pid, r.trigger_comm.as_str()), (41, "trigger"));
    assert_eq!(r.victim_cgroup.as_deref(), Some(POD));
    assert_eq!(r.victim_owner.runtime.as_deref(), Some("containerd"));
    assert_eq!(r.victim_owner.qos.as_deref(), Some("Burstable"));
    assert_eq!(
        r.victim_owner.pod_uid.as_deref(),
        Some("1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9")
    );
    assert_eq!(r.anon_rss_bytes, Some(2048 * 1024));
    assert_eq!(r.uid, Some(1000));
    assert_eq!((r.file_rss_bytes, r.total_vm_bytes), (None, None));
    assert_eq!((r.pgtables_bytes, r.oom_score_adj), (None, None));
    assert_eq!(r.cgroup_limit_bytes, Some(1 << 30));
    assert_eq!(r.timestamp, "2023-11-14T22:14:31.000Z");
    assert_eq!(r.timestamp_unix_ms, (1_700_000_000 + 71) * 1000);

    // Samples at t = 11..=69 are within 60 s of the kill at t = 71, then one at the kill (the
    // victim was gone by then: its RSS from the OOM event).
    let flight = &r.flight_recording;
    assert_eq!(flight.len(), 60);
    assert!(flight.len() <= 61);
    close(flight[0].offset_seconds, -60.0);
    close(flight[58].offset_seconds, -2.0);
    close(flight[59].offset_seconds, 0.0);
    assert_eq!(flight[59].rss_anon_bytes, 2048 * 1024, "the OOM event's");
    assert_eq!(
        flight[59].rss_file_bytes, MIB,
        "not reported: the last known"
    );
    for pair in flight[..59].windows(2) {
        assert!(pair[0].offset_seconds < pair[1].offset_seconds);
        assert!(
            pair[0].rss_anon_bytes < pair[1].rss_anon_bytes,
            "RSS climbs"
        );
        assert!(pair[1].offset_seconds <= 0.0);
    }
    assert_eq!(flight[58].rss_anon_bytes, 700 * MIB);
    assert_eq!(flight[58].rss_file_bytes, MIB);
    // The first sample's rates come from the sample before the window.
    close(flight[0].faults_minor_per_sec, 1000.0);
    close(flight[0].faults_major_per_sec, 2.0);
    close(flight[30].reclaim_stall_seconds_per_sec, 0.05);
    assert_eq!(flight[0].cgroup_usage_bytes, Some(12 * MIB * 12));
    assert_eq!(flight[58].cgroup_usage_bytes, Some(12 * MIB * 70));

    // Counted on both processes and the cgroup; the snapshot omits the flight recording.
    let snap = model.snapshot(at(t0, 71), wall(71), pipeline());
    assert_eq!(process_view(&snap, 41).oom_kills_as_trigger, 1);
    assert_eq!(cgroup_view(&snap, POD).oom_kills, 1);
    assert_eq!(cgroup_view(&snap, POD).kernel_oom_kills, Some(3));
    assert_eq!(snap.recent_ooms.len(), 1);
    assert!(snap.recent_ooms[0].flight_recording.is_empty());
    assert_eq!(snap.recent_ooms[0].victim_pid, 40);
}

#[test]
fn oom_after_grace_or_for_unknown_victim_has_no_history() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    for n in 0..5 {
        model.observe_processes(at(t0, n), &[(50, stats(n, 0, MIB), info(50, "a", "/x", 1))]);
    }
    model.observe_processes(at(t0, 5), &[]);
    // 11 s after it vanished: past the 10 s grace.
    model.observe_event(at(t0, 16), wall(16), &oom(1, 50, 0));
    model.observe_event(at(t0, 17), wall(17), &oom(1, 999, oom_field::COMM));
    let records = model.oom_records();
    assert_eq!(records.len(), 2);
    assert_eq!((records[0].victim_pid, records[1].victim_pid), (999, 50));
    assert_eq!(records[0].victim_comm, "victim");
    assert_eq!(records[1].victim_comm, "?");
    for r in &records {
        assert_eq!(r.victim_cgroup, None);
        assert_eq!(r.victim_owner, OwnerView::default());
        assert!(r.flight_recording.is_empty());
        assert_eq!((r.anon_rss_bytes, r.cgroup_limit_bytes), (None, None));
    }
}

#[test]
fn cgroup_counters_stay_monotonic_when_a_member_exits() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    let (a, b) = (info(60, "a", "/svc", 1), info(61, "b", "/svc", 2));
    for n in 0..3 {
        model.observe_processes(
            at(t0, n),
            &[
                (60, stats(100 * n, n, MIB), a.clone()),
                (61, stats(10 * n, 0, 2 * MIB), b.clone()),
            ],
        );
    }
    let minor = |model: &Model, secs| {
        let snap = model.snapshot(at(t0, secs), wall(secs), pipeline());
        let cg = cgroup_view(&snap, "/svc").clone();
        (cg.counters.faults_minor, cg.processes, cg.rss_bytes)
    };
    assert_eq!(minor(&model, 2), (200 + 20, 2, 3 * MIB));

    // 60 exits with more faults than the last tick showed; it is then absent from the kernel
    // map, but one stale read still includes it.
    model.observe_event(at(t0, 2), wall(2), &exit(60, stats(250, 2, 0)));
    assert_eq!(minor(&model, 2), (250 + 20, 1, 2 * MIB));
    assert_eq!(model.process_count(), 1);
    model.observe_processes(
        at(t0, 3),
        &[
            (60, stats(200, 2, MIB), a.clone()),
            (61, stats(30, 0, 2 * MIB), b.clone()),
        ],
    );
    assert_eq!(
        model.process_count(),
        1,
        "stale read of the dead process ignored"
    );
    assert_eq!(minor(&model, 3), (250 + 30, 1, 2 * MIB));

    // 61 vanishes first; its exit event (with 5 more faults) comes later and adds only those.
    model.observe_processes(at(t0, 4), &[]);
    assert_eq!(minor(&model, 4), (250 + 30, 0, 0));
    model.observe_event(at(t0, 5), wall(5), &exit(61, stats(35, 0, 0)));
    assert_eq!(minor(&model, 5), (250 + 35, 0, 0));
    assert_eq!(model.node_counters().faults_minor, 285);

    // A process never seen live only reaches the node totals.
    model.observe_event(at(t0, 5), wall(5), &exit(62, stats(1000, 0, 0)));
    assert_eq!(model.node_counters().faults_minor, 1285);
    assert_eq!(minor(&model, 5).0, 285);
}

#[test]
fn missing_from_one_tick_then_back_is_not_double_counted() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    let a = info(70, "a", "/svc", 1);
    model.observe_processes(t0, &[(70, stats(100, 0, 0), a.clone())]);
    model.observe_processes(at(t0, 1), &[]);
    model.observe_processes(at(t0, 2), &[(70, stats(300, 0, 0), a.clone())]);
    let snap = model.snapshot(at(t0, 2), wall(2), pipeline());
    assert_eq!(cgroup_view(&snap, "/svc").counters.faults_minor, 300);
    // Its history survived: (300 − 100) / 2 s.
    close(process_view(&snap, 70).rates.faults_minor_per_sec, 100.0);
    assert_eq!(model.node_counters().faults_minor, 300);
}

#[test]
fn moving_between_cgroups_keeps_both_monotonic() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    let stay = info(81, "stay", "/old", 1);
    model.observe_processes(
        t0,
        &[
            (80, stats(100, 0, 0), info(80, "a", "/old", 1)),
            (81, stats(1, 0, 0), stay.clone()),
        ],
    );
    model.observe_processes(
        at(t0, 1),
        &[
            (80, stats(150, 0, 0), info(80, "a", "/new", 1)),
            (81, stats(2, 0, 0), stay.clone()),
        ],
    );
    let snap = model.snapshot(at(t0, 1), wall(1), pipeline());
    // What 80 did in /old stays there; /new counts only what it did since the move.
    assert_eq!(cgroup_view(&snap, "/old").counters.faults_minor, 100 + 2);
    assert_eq!(cgroup_view(&snap, "/old").processes, 1);
    assert_eq!(cgroup_view(&snap, "/new").counters.faults_minor, 50);
    assert_eq!(process_view(&snap, 80).counters.faults_minor, 150);
    // Once /old has no process left (and no OOM kill), it is no longer listed.
    model.observe_processes(
        at(t0, 2),
        &[(80, stats(160, 0, 0), info(80, "a", "/new", 1))],
    );
    model.observe_processes(
        at(t0, 20),
        &[(80, stats(170, 0, 0), info(80, "a", "/new", 1))],
    );
    assert_eq!(model.cgroup_paths(), ["/new"]);
}

#[test]
fn snapshot_scores_use_cgroup_limit_psi_and_recent_oom() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    model.observe_node(node_sample(5.0));
    // /limited: 50 major faults/s, 75% of its limit, its own PSI 12.5.
    // /unlimited: 50 major faults/s, no limit, no PSI of its own (node PSI 5 → 3 points).
    for n in 0..=10 {
        model.observe_processes(
            at(t0, n),
            &[
                (90, stats(0, 50 * n, 0), info(90, "l", "/limited", 1)),
                (91, stats(0, 50 * n, 0), info(91, "u", "/unlimited", 1)),
                (92, stats(0, 0, 0), info(92, "idle", "/idle", 1)),
            ],
        );
    }
    model.observe_cgroup(at(t0, 10), "/limited", memory(750, Some(1000), Some(12.5)));
    model.observe_cgroup(at(t0, 10), "/unlimited", memory(1 << 40, None, None));
    let snap = model.snapshot(at(t0, 10), wall(10), pipeline());
    // 12.5 (major) + 12.5 (usage) + 7.5 (PSI)
    close(process_view(&snap, 90).pressure_score, 32.5);
    close(cgroup_view(&snap, "/limited").pressure_score, 32.5);
    // 12.5 (major) + 0 (unlimited) + 3 (node PSI)
    close(process_view(&snap, 91).pressure_score, 15.5);
    close(cgroup_view(&snap, "/unlimited").pressure_score, 15.5);
    close(process_view(&snap, 92).pressure_score, 3.0);
    let limited = cgroup_view(&snap, "/limited");
    assert_eq!(limited.limit_bytes, Some(1000));
    assert_eq!(limited.psi.map(|p| p.some_avg10), Some(12.5));
    assert_eq!(cgroup_view(&snap, "/unlimited").limit_bytes, None);

    // An OOM kill in /unlimited adds 10 points for 5 minutes.
    model.observe_event(at(t0, 10), wall(10), &oom(91, 91, 0));
    let snap = model.snapshot(at(t0, 10), wall(10), pipeline());
    close(process_view(&snap, 91).pressure_score, 25.5);
    close(cgroup_view(&snap, "/unlimited").pressure_score, 25.5);
    assert_eq!(process_view(&snap, 91).oom_kills_as_victim, 1);
    assert_eq!(process_view(&snap, 91).oom_kills_as_trigger, 1);
    let later = at(t0, 10) + RECENT_OOM_WINDOW + Duration::from_secs(1);
    let snap = model.snapshot(later, wall(400), pipeline());
    // Rates are over the last 10 s before `later`: no samples, so only the cgroup terms remain.
    close(cgroup_view(&snap, "/unlimited").pressure_score, 3.0);
}

#[test]
fn snapshot_is_sorted_by_score() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    for n in 0..=10 {
        model.observe_processes(
            at(t0, n),
            &[
                (1, stats(0, 10 * n, 0), info(1, "low", "/low", 1)),
                (2, stats(0, 90 * n, 0), info(2, "high", "/high", 1)),
                (3, stats(0, 40 * n, 0), info(3, "mid", "/mid", 1)),
                (4, stats(0, 40 * n, 0), info(4, "mid2", "/mid", 1)),
            ],
        );
    }
    let snap = model.snapshot(at(t0, 10), wall(10), pipeline());
    let pids: Vec<u32> = snap.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [2, 3, 4, 1], "ties broken by pid");
    let scores: Vec<f64> = snap.processes.iter().map(|p| p.pressure_score).collect();
    assert_eq!(scores, [22.5, 10.0, 10.0, 2.5]);
    let paths: Vec<&str> = snap.cgroups.iter().map(|c| c.path.as_str()).collect();
    // /mid sums its two members: 80/s → 20 points.
    assert_eq!(paths, ["/high", "/mid", "/low"]);
    close(snap.cgroups[1].pressure_score, 20.0);
    assert_eq!(snap.cgroups[1].processes, 2);
}

#[test]
fn snapshot_json_round_trip() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    model.observe_node(node_sample(1.5));
    for n in 0..3 {
        model.observe_processes(
            at(t0, n),
            &[(5, stats(7 * n, n, MIB), info(5, "db", POD, 1))],
        );
    }
    model.observe_cgroup(at(t0, 2), POD, memory(3 * MIB, Some(8 * MIB), Some(0.5)));
    model.observe_event(at(t0, 2), wall(2), &oom(5, 5, oom_field::ANON_RSS));
    let snap = model.snapshot(at(t0, 2), wall(2), pipeline());
    assert_eq!(snap.schema_version, SCHEMA_VERSION);
    assert_eq!(snap.node.hostname, "node-1");
    assert_eq!(snap.node_memory.page_cache_bytes, 110 * MIB);
    assert_eq!(snap.node_memory.anon_bytes, 3 << 30);
    assert_eq!(snap.node_memory.pgmajfault_total, 7);
    assert_eq!(snap.node_memory.psi.map(|p| p.some_avg10), Some(1.5));
    close(snap.node_memory.fragmentation_index_order9, 0.75);
    assert_eq!(snap.pipeline, pipeline());
    assert_eq!(snap.timestamp, "2023-11-14T22:13:22.000Z");

    let json = serde_json::to_string(&snap).unwrap();
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snap);
    let records = model.oom_records();
    assert_eq!(records[0].flight_recording.len(), 3);
    let json = serde_json::to_string(&records).unwrap();
    let back: Vec<OomRecord> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, records);
}

#[test]
fn oom_records_are_bounded_newest_first() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig {
        max_oom_records: 3,
        ..ModelConfig::default()
    });
    for victim in 1..=5u32 {
        model.observe_event(at(t0, u64::from(victim)), wall(0), &oom(1, victim, 0));
    }
    let victims: Vec<u32> = model.oom_records().iter().map(|r| r.victim_pid).collect();
    assert_eq!(victims, [5, 4, 3]);
    let snap = model.snapshot(at(t0, 6), wall(6), pipeline());
    assert_eq!(snap.recent_ooms.len(), 3);
}

#[test]
fn cgroups_expire_after_retention() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig {
        oom_label_retention: Duration::from_secs(100),
        ..ModelConfig::default()
    });
    model.observe_processes(
        t0,
        &[
            (1, stats(1, 0, 0), info(1, "a", "/quiet", 1)),
            (2, stats(1, 0, 0), info(2, "b", "/killed", 1)),
        ],
    );
    model.observe_event(t0, wall(0), &oom(2, 2, 0));
    assert_eq!(model.cgroup_paths(), ["/killed", "/quiet"]);
    // Both processes gone; kept during the exited grace.
    model.observe_processes(at(t0, 1), &[]);
    assert_eq!(model.cgroup_paths(), ["/killed", "/quiet"]);
    // After the grace only the OOM-killed cgroup stays, until the retention runs out.
    model.observe_processes(at(t0, 20), &[]);
    assert_eq!(model.cgroup_paths(), ["/killed"]);
    let snap = model.snapshot(at(t0, 20), wall(20), pipeline());
    assert_eq!(snap.cgroups.len(), 1);
    assert_eq!(
        (snap.cgroups[0].oom_kills, snap.cgroups[0].processes),
        (1, 0)
    );
    model.observe_processes(at(t0, 100), &[]);
    assert_eq!(model.cgroup_paths(), ["/killed"]);
    model.observe_processes(at(t0, 101), &[]);
    assert!(model.cgroup_paths().is_empty());
    assert!(
        model
            .snapshot(at(t0, 101), wall(101), pipeline())
            .cgroups
            .is_empty()
    );
    // Readings for untracked cgroups are ignored.
    model.observe_cgroup(at(t0, 101), "/quiet", memory(1, None, None));
    assert!(model.cgroup_paths().is_empty());
}

#[test]
fn exited_list_is_bounded() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig {
        max_exited: 2,
        ..ModelConfig::default()
    });
    for pid in 1..=4u32 {
        model.observe_processes(at(t0, u64::from(pid)), &[(pid, stats(1, 0, MIB), None)]);
    }
    // Pids 1..=3 retired at t = 2, 3, 4; only the 2 most recent are kept.
    assert_eq!(model.exited.len(), 2);
    assert!(model.exited.contains_key(&2) && model.exited.contains_key(&3));
    assert_eq!(model.live[&4].history.len(), 1);
}

/// The daemon samples again when a kill arrives (a tick between ticks): the flight recording
/// then ends at the kill, with the rates of its last fraction of a second, and the record lists
/// the cgroup's usage and its other processes at that moment.
#[test]
fn kill_sample_ends_the_flight_recording_at_the_kill() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    let victim = info(60, "hog", "/demo", 1);
    let child = info(61, "hog-child", "/demo", 2);
    let elsewhere = info(62, "other", "/elsewhere", 3);
    let tick = |model: &mut Model, when: Instant, reclaim_ns: u64, anon: u64, usage: u64| {
        let mut s = stats(100, 0, anon);
        s.reclaim_ns = reclaim_ns;
        model.observe_processes(
            when,
            &[
                (60, s, victim.clone()),
                (61, stats(5, 0, 90 * MIB), child.clone()),
                (62, stats(5, 0, 300 * MIB), elsewhere.clone()),
            ],
        );
        model.observe_cgroup(when, "/demo", memory(usage, Some(200 * MIB), None));
    };
    tick(&mut model, at(t0, 0), 0, 10 * MIB, 150 * MIB);
    tick(&mut model, at(t0, 1), 0, 60 * MIB, 190 * MIB);
    // The kill, 0.7 s after the last regular tick: 32 ms of reclaim stalls happened since.
    let kill = at(t0, 1) + Duration::from_millis(700);
    tick(&mut model, kill, 32_000_000, 99 * MIB, 199 * MIB);
    model.observe_event(kill, wall(2), &oom(60, 60, 0));

    let record = &model.oom_records()[0];
    let last = record.flight_recording.last().expect("a flight recording");
    close(last.offset_seconds, 0.0);
    close(last.reclaim_stall_seconds_per_sec, 0.032 / 0.7);
    assert_eq!(last.rss_anon_bytes, 99 * MIB);
    assert_eq!(last.cgroup_usage_bytes, Some(199 * MIB));
    close(record.flight_recording[1].offset_seconds, -0.7);
    close(
        record.flight_recording[1].reclaim_stall_seconds_per_sec,
        0.0,
    );
    assert_eq!(record.cgroup_usage_at_kill_bytes, Some(199 * MIB));
    assert_eq!(
        record.cgroup_processes,
        vec![CgroupProcess {
            pid: 61,
            comm: "hog-child".to_owned(),
            rss_bytes: 90 * MIB,
        }],
        "the cgroup's other process, not the victim, not another cgroup's"
    );
    assert_eq!(
        record.cgroup_memory_stat, None,
        "read by the daemon afterwards"
    );

    let stat = CgroupMemoryStat {
        version: 1,
        anon_bytes: Some(190 * MIB),
        file_bytes: Some(9 * MIB),
        ..CgroupMemoryStat::default()
    };
    model.complete_last_oom(Some(199 * MIB + 4096), Some(stat));
    let record = &model.oom_records()[0];
    assert_eq!(record.cgroup_memory_stat, Some(stat));
    assert_eq!(record.cgroup_usage_at_kill_bytes, Some(199 * MIB + 4096));
    let snap = model.snapshot(kill, wall(2), pipeline());
    assert_eq!(snap.recent_ooms[0].cgroup_memory_stat, Some(stat));
}

/// The kill tick can catch the victim mid-teardown (the OOM reaper frees its memory at once):
/// the recording's last RSS is then the kernel's report with the kill, not the emptied count.
#[test]
fn a_victim_torn_down_at_the_kill_tick_keeps_the_kills_rss() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    let victim = info(60, "hog", "/demo", 1);
    model.observe_processes(at(t0, 0), &[(60, stats(100, 0, 10 * MIB), victim.clone())]);
    model.observe_processes(at(t0, 1), &[(60, stats(900, 0, 60 * MIB), victim.clone())]);
    let kill = at(t0, 1) + Duration::from_millis(700);
    model.observe_processes(kill, &[(60, stats(1000, 0, 0), victim)]);
    let rss = oom_field::ANON_RSS | oom_field::FILE_RSS | oom_field::SHMEM_RSS;
    model.observe_event(kill, wall(2), &oom(60, 60, rss));
    let record = &model.oom_records()[0];
    let last = record.flight_recording.last().expect("a flight recording");
    close(last.offset_seconds, 0.0);
    assert_eq!(last.rss_anon_bytes, 2048 * 1024, "the OOM event's anon RSS");
    assert_eq!(last.rss_file_bytes, 16 * 1024, "the OOM event's file RSS");
}

#[test]
fn the_cgroup_processes_of_a_kill_are_bounded_largest_first() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    let samples: Vec<_> = (1..=50u32)
        .map(|pid| {
            (
                pid,
                stats(0, 0, u64::from(pid) * MIB),
                info(pid, "worker", "/big", u64::from(pid)),
            )
        })
        .collect();
    model.observe_processes(t0, &samples);
    model.observe_event(t0, wall(0), &oom(50, 50, 0));
    let listed: Vec<u32> = model.oom_records()[0]
        .cgroup_processes
        .iter()
        .map(|p| p.pid)
        .collect();
    assert_eq!(listed, (30..=49).rev().collect::<Vec<_>>());
}

#[test]
fn restored_ooms_join_the_history_newest_first_and_bounded() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig {
        max_oom_records: 3,
        ..ModelConfig::default()
    });
    model.observe_event(t0, wall(100), &oom(1, 7, 0));
    let old = |pid: u32, secs: u64| OomRecord {
        victim_pid: pid,
        timestamp_unix_ms: (1_700_000_000 + secs) * 1000,
        ..OomRecord::default()
    };
    model.restore_ooms([old(3, 30), old(5, 50), old(4, 40)]);
    let victims: Vec<u32> = model.oom_records().iter().map(|r| r.victim_pid).collect();
    assert_eq!(victims, [7, 5, 4]);
}

/// The victim died before the daemon's sample at the kill (the usual case: the OOM event reaches
/// the daemon after the victim is gone): the record still ends at the kill, with the OOM event's
/// RSS, and the victim's exit, arriving after the record, gives the last moments' rates.
#[test]
fn a_victim_gone_before_the_kill_sample_gets_its_final_rates_from_its_exit() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    let victim = info(70, "hog", "/demo", 1);
    for n in 0..3 {
        let mut s = stats(1000 * n, 0, 10 * MIB * (n + 1));
        s.reclaim_ns = 0;
        model.observe_processes(at(t0, n), &[(70, s, victim.clone())]);
        model.observe_cgroup(
            at(t0, n),
            "/demo",
            memory(20 * MIB * (n + 1), Some(64 * MIB), None),
        );
    }
    // The kill at 2.7 s; the daemon's sample then no longer finds the victim.
    let kill = at(t0, 2) + Duration::from_millis(700);
    model.observe_processes(kill, &[]);
    model.observe_cgroup(kill, "/demo", memory(63 * MIB, Some(64 * MIB), None));
    model.observe_event(kill, wall(3), &oom(70, 70, oom_field::ANON_RSS));
    let last = *model.oom_records()[0].flight_recording.last().unwrap();
    close(last.offset_seconds, 0.0);
    assert_eq!(last.rss_anon_bytes, 2048 * 1024);
    assert_eq!(last.cgroup_usage_bytes, Some(63 * MIB));
    close(last.reclaim_stall_seconds_per_sec, 0.0);
    assert!(model.take_completed_oom().is_none());

    // Its exit: 195 stalls, 32 ms of reclaim since the last sample, 700 more faults.
    let mut final_stats = stats(2700, 0, 0);
    final_stats.reclaim_ns = 32_000_000;
    model.observe_event(
        kill + Duration::from_millis(5),
        wall(3),
        &exit(70, final_stats),
    );
    let record = model
        .take_completed_oom()
        .expect("the exit completed the record");
    let last = *record.flight_recording.last().unwrap();
    close(last.reclaim_stall_seconds_per_sec, 0.032 / 0.7);
    close(last.faults_minor_per_sec, 700.0 / 0.7);
    assert_eq!(last.rss_anon_bytes, 2048 * 1024, "RSS stays as at the kill");
    assert_eq!(model.oom_records()[0], record);
    assert!(model.take_completed_oom().is_none(), "once");
}

/// Issue 10 A and load defect 2: the cgroup the kernel reports at the event wins. A process never
/// seen live is counted in it; one last read from /proc elsewhere keeps what it did there; an
/// OOM victim never seen is attributed to it; a new process reusing such a pid is not mistaken
/// for the dead one.
#[test]
fn the_kernels_cgroup_attributes_exits_and_oom_victims() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    model.observe_processes(
        at(t0, 0),
        &[(70, stats(100, 0, MIB), info(70, "a", "/old", 1))],
    );
    model.observe_event_in(
        at(t0, 1),
        wall(1),
        &exit(71, stats(40, 1, 0)),
        Some("/build"),
    );
    model.observe_event_in(
        at(t0, 1),
        wall(1),
        &exit(70, stats(130, 0, 0)),
        Some("/new"),
    );
    let snap = model.snapshot(at(t0, 1), wall(1), pipeline());
    assert_eq!(cgroup_view(&snap, "/build").counters.faults_minor, 40);
    assert_eq!(cgroup_view(&snap, "/build").counters.faults_major, 1);
    assert_eq!(cgroup_view(&snap, "/old").counters.faults_minor, 100);
    assert_eq!(cgroup_view(&snap, "/new").counters.faults_minor, 30);
    assert_eq!(model.node_counters().faults_minor, 170);

    model.observe_event_in(at(t0, 1), wall(1), &oom(73, 72, 0), Some("/build"));
    assert_eq!(
        model.oom_records()[0].victim_cgroup.as_deref(),
        Some("/build")
    );

    // Pid 71 reused by a new process with fewer faults: it is live, not the dead one.
    model.observe_processes(
        at(t0, 2),
        &[(71, stats(5, 0, MIB), info(71, "b", "/build", 9))],
    );
    assert_eq!(model.process_count(), 1);
}

/// A process first listed by a tick that could not read its identity (it was already exiting:
/// the daemon ticks when an OOM kill arrives) was rolled up into the root; its exit names its
/// cgroup, and everything it did is counted there, none left in the root (which is pruned with
/// what it held). 6.1 in the kernel matrix lost a killed hog's reclaim stalls this way.
#[test]
fn a_process_of_unknown_cgroup_is_counted_whole_in_the_one_its_exit_names() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    let mut at_kill = stats(100, 0, MIB);
    at_kill.reclaim_stalls = 35;
    model.observe_processes(at(t0, 0), &[(80, at_kill, None)]);
    let mut last = stats(101, 0, 0);
    last.reclaim_stalls = 35;
    model.observe_event_in(at(t0, 0), wall(0), &exit(80, last), Some("/job"));
    let snap = model.snapshot(at(t0, 0), wall(0), pipeline());
    let job = cgroup_view(&snap, "/job");
    assert_eq!(job.counters.reclaim_stalls, 35);
    assert_eq!(job.counters.faults_minor, 101);
    assert!(
        snap.cgroups
            .iter()
            .filter(|c| c.path != "/job")
            .all(|c| c.counters.reclaim_stalls == 0 && c.counters.faults_minor == 0),
        "{:?}",
        snap.cgroups
    );
    assert_eq!(model.node_counters().reclaim_stalls, 35);
}

/// The same when a later tick reads the cgroup: an identity learnt is not a move.
#[test]
fn a_cgroup_learnt_late_is_not_a_move() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig::default());
    model.observe_processes(at(t0, 0), &[(81, stats(10, 0, MIB), None)]);
    model.observe_processes(
        at(t0, 1),
        &[(81, stats(20, 0, MIB), info(81, "app", "/app", 3))],
    );
    model.observe_event_in(at(t0, 2), wall(2), &exit(81, stats(25, 0, 0)), Some("/app"));
    let snap = model.snapshot(at(t0, 2), wall(2), pipeline());
    assert_eq!(cgroup_view(&snap, "/app").counters.faults_minor, 25);
    assert!(
        snap.cgroups
            .iter()
            .filter(|c| c.path != "/app")
            .all(|c| c.counters.faults_minor == 0),
        "{:?}",
        snap.cgroups
    );
}

fn scoped(root: &str) -> Model {
    Model::new(ModelConfig {
        scope: Some(CgroupRoot::new(root).unwrap()),
        node_name: Some("node-a".to_owned()),
        ..ModelConfig::default()
    })
}

#[test]
fn a_cgroup_root_keeps_only_its_subtree() {
    let t0 = Instant::now();
    let mut model = scoped("/node-a");
    model.observe_processes(
        at(t0, 0),
        &[
            (10, stats(100, 0, MIB), info(10, "inside", "/node-a/app", 1)),
            (11, stats(100, 0, MIB), info(11, "top", "/node-a", 1)),
            (
                20,
                stats(500, 0, MIB),
                info(20, "outside", "/node-b/app", 1),
            ),
            (21, stats(500, 0, MIB), info(21, "prefix", "/node-ab", 1)),
            // Its cgroup unknown: not known to be inside.
            (22, stats(500, 0, MIB), None),
        ],
    );
    let snap = model.snapshot(at(t0, 0), wall(0), pipeline());
    let mut pids: Vec<u32> = snap.processes.iter().map(|p| p.pid).collect();
    pids.sort_unstable();
    assert_eq!(pids, [10, 11]);
    assert_eq!(model.cgroup_paths(), ["/node-a", "/node-a/app"]);
    assert_eq!(snap.node.name.as_deref(), Some("node-a"));
    assert_eq!(model.node_counters().faults_minor, 200);

    // Exits and OOM kills outside are not counted; inside they are.
    model.observe_event_in(
        at(t0, 1),
        wall(1),
        &exit(20, stats(600, 0, 0)),
        Some("/node-b/app"),
    );
    model.observe_event_in(
        at(t0, 1),
        wall(1),
        &exit(30, stats(50, 0, 0)),
        Some("/node-b"),
    );
    model.observe_event_in(at(t0, 1), wall(1), &exit(31, stats(50, 0, 0)), None);
    model.observe_event_in(at(t0, 1), wall(1), &oom(20, 21, 0), Some("/node-ab"));
    model.observe_event_in(at(t0, 1), wall(1), &oom(20, 40, 0), None);
    assert!(model.oom_records().is_empty(), "{:?}", model.oom_records());
    model.track_cgroup("/node-b/app");
    assert_eq!(model.cgroup_paths(), ["/node-a", "/node-a/app"]);
    assert_eq!(model.node_counters().faults_minor, 200);
    model.observe_event_in(
        at(t0, 1),
        wall(1),
        &exit(32, stats(7, 0, 0)),
        Some("/node-a/job"),
    );
    model.observe_event_in(at(t0, 1), wall(1), &oom(10, 10, 0), Some("/node-a/app"));
    assert_eq!(model.oom_records().len(), 1);
    assert_eq!(model.node_counters().faults_minor, 207);
}

#[test]
fn processes_moving_in_and_out_of_scope_count_only_while_inside() {
    let t0 = Instant::now();
    let mut model = scoped("/node-a");
    model.observe_processes(
        at(t0, 0),
        &[
            (10, stats(100, 0, 0), info(10, "leaver", "/node-a/app", 1)),
            (20, stats(1000, 0, 0), info(20, "joiner", "/elsewhere", 1)),
        ],
    );
    model.observe_processes(
        at(t0, 1),
        &[
            (10, stats(150, 0, 0), info(10, "leaver", "/elsewhere", 1)),
            (20, stats(1010, 0, 0), info(20, "joiner", "/node-a/app", 1)),
        ],
    );
    let snap = model.snapshot(at(t0, 1), wall(1), pipeline());
    let pids: Vec<u32> = snap.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [20]);
    // 10's 100 faults inside stay with its cgroup; 20 counts from its arrival (0 so far).
    assert_eq!(cgroup_view(&snap, "/node-a/app").counters.faults_minor, 100);
    assert_eq!(model.node_counters().faults_minor, 100);
    model.observe_processes(
        at(t0, 2),
        &[
            (10, stats(170, 0, 0), info(10, "leaver", "/elsewhere", 1)),
            (20, stats(1030, 0, 0), info(20, "joiner", "/node-a/app", 1)),
        ],
    );
    let snap = model.snapshot(at(t0, 2), wall(2), pipeline());
    assert_eq!(cgroup_view(&snap, "/node-a/app").counters.faults_minor, 120);
    assert_eq!(model.node_counters().faults_minor, 120);
    // The leaver's exit outside is not counted; the joiner's inside is, from its arrival.
    model.observe_event_in(
        at(t0, 3),
        wall(3),
        &exit(10, stats(180, 0, 0)),
        Some("/elsewhere"),
    );
    model.observe_event_in(
        at(t0, 3),
        wall(3),
        &exit(20, stats(1040, 0, 0)),
        Some("/node-a/app"),
    );
    assert_eq!(model.node_counters().faults_minor, 130);
    // A live process whose exit says it left just before: counted until the last tick.
    model.observe_processes(
        at(t0, 4),
        &[(30, stats(10, 0, 0), info(30, "late", "/node-a/app", 1))],
    );
    model.observe_event_in(
        at(t0, 5),
        wall(5),
        &exit(30, stats(99, 0, 0)),
        Some("/elsewhere"),
    );
    assert_eq!(model.process_count(), 0);
    assert_eq!(model.node_counters().faults_minor, 140);
}

#[test]
fn snapshots_name_workloads() {
    let t0 = Instant::now();
    let mut model = Model::new(ModelConfig {
        node_name: Some("node-a".to_owned()),
        ..ModelConfig::default()
    });
    let pod_uid = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9";
    model.observe_processes(
        at(t0, 0),
        &[
            (
                10,
                stats(1, 0, MIB),
                info(10, "redis-server", "/system.slice/redis-server.service", 1),
            ),
            (
                11,
                stats(1, 0, MIB),
                info(11, "redis-check", "/system.slice/redis-server.service", 1),
            ),
            (
                12,
                stats(1, 0, MIB),
                info(12, "bash", "/user.slice/user-0.slice/session-1.scope", 1),
            ),
            (13, stats(1, 0, MIB), info(13, "java", POD, 1)),
        ],
    );
    let snap = model.snapshot(at(t0, 0), wall(0), pipeline());
    let workload = |pid| {
        let p = process_view(&snap, pid);
        (
            p.workload.as_deref().unwrap(),
            p.workload_kind.unwrap(),
            p.instance.as_deref().unwrap(),
        )
    };
    use memtrace_api::workloads::WorkloadKind::*;
    let unit = "redis-server.service";
    assert_eq!(workload(10), (unit, Systemd, unit));
    assert_eq!(workload(11), (unit, Systemd, unit), "one workload per unit");
    assert_eq!(workload(12), ("bash", Comm, "pid/12"));
    let pod_key = format!("pod/{pod_uid}");
    assert_eq!(workload(13), (pod_key.as_str(), Kubernetes, pod_uid));
    let cgroup = cgroup_view(&snap, "/system.slice/redis-server.service");
    assert_eq!(cgroup.workload.as_deref(), Some(unit));
    assert_eq!(
        cgroup_view(&snap, "/user.slice/user-0.slice/session-1.scope").workload,
        None
    );
    assert_eq!(snap.node.name.as_deref(), Some("node-a"));
    // An OOM victim is named like its process.
    model.observe_event_in(at(t0, 1), wall(1), &oom(10, 10, 0), None);
    assert_eq!(
        model.oom_records()[0].victim_workload.as_deref(),
        Some(unit)
    );
}

/// A model with a 60 s growth window and a 10 min leak window (≥ 1 MiB/min).
fn growth_model() -> Model {
    Model::new(ModelConfig::default())
}

#[test]
fn growth_is_absent_before_a_whole_window_then_the_slope_per_process_cgroup_and_instance() {
    let mut model = growth_model();
    let t0 = Instant::now();
    let grows = |s: u64| stats(0, 0, 100 * MIB + s * 2 * MIB / 60);
    let flat = stats(0, 0, 40 * MIB);
    for s in 0..=59 {
        model.observe_processes(
            at(t0, s),
            &[
                (1, grows(s), info(1, "leaky", "/app.slice", 1)),
                (2, flat, info(2, "steady", "/app.slice", 2)),
            ],
        );
    }
    let snap = model.snapshot(at(t0, 59), wall(59), pipeline());
    assert_eq!(
        process_view(&snap, 1).rss_growth_bytes_per_sec,
        None,
        "59 s watched"
    );
    assert_eq!(
        cgroup_view(&snap, "/app.slice").rss_growth_bytes_per_sec,
        None
    );
    for s in 60..=900 {
        model.observe_processes(
            at(t0, s),
            &[
                (1, grows(s), info(1, "leaky", "/app.slice", 1)),
                (2, flat, info(2, "steady", "/app.slice", 2)),
            ],
        );
    }
    let snap = model.snapshot(at(t0, 900), wall(900), pipeline());
    let leaky = process_view(&snap, 1);
    let expected = 2.0 * MIB as f64 / 60.0;
    let growth = leaky.rss_growth_bytes_per_sec.expect("a whole window");
    assert!((growth - expected).abs() < 1.0, "{growth}");
    let hint = leaky.leak_hint.expect("10 min of 2 MiB/min");
    assert!(
        (hint.growth_bytes_per_sec - expected).abs() < expected * 0.01,
        "{hint:?}"
    );
    assert_eq!(
        hint.since_unix_ms,
        unix_ms(wall(0)),
        "growing since it was first seen"
    );
    assert_eq!(hint.window_seconds, 600.0);
    let steady = process_view(&snap, 2);
    assert_eq!(
        steady.rss_growth_bytes_per_sec,
        Some(0.0),
        "flat: zero, present"
    );
    assert_eq!(steady.leak_hint, None);
    let cgroup = cgroup_view(&snap, "/app.slice")
        .rss_growth_bytes_per_sec
        .expect("a whole window");
    assert!((cgroup - expected).abs() < 1.0, "{cgroup}");

    // The workloads summary: the instance of the leaky process carries its growth and hint.
    let groups = workloads::group(&snap, &crate::workload::Identifier::default());
    let instance = groups
        .iter()
        .find(|g| g.processes.iter().any(|p| p.pid == 1))
        .map(|g| &g.summary)
        .expect("an instance");
    assert_eq!(
        instance.rss_growth_bytes_per_sec,
        leaky.rss_growth_bytes_per_sec
    );
    assert_eq!(instance.leak_hint, leaky.leak_hint);

    // A fall of 10 MiB clears the hint at once; growth goes on being reported.
    let fallen = |s: u64| stats(0, 0, 100 * MIB + s * 2 * MIB / 60 - 10 * MIB);
    for s in 901..=960 {
        model.observe_processes(
            at(t0, s),
            &[(1, fallen(s), info(1, "leaky", "/app.slice", 1))],
        );
    }
    let snap = model.snapshot(at(t0, 960), wall(960), pipeline());
    let leaky = process_view(&snap, 1);
    assert_eq!(leaky.leak_hint, None, "a fall resets the hint");
    assert!(leaky.rss_growth_bytes_per_sec.is_some());
}

#[test]
fn reclaim_stall_buckets_survive_the_exit_in_the_cgroup() {
    let mut model = growth_model();
    let t0 = Instant::now();
    let mut s = stats(0, 0, MIB);
    s.reclaim_stalls = 3;
    s.reclaim_ns = 3_000_000;
    s.reclaim_hist[0] = 1;
    s.reclaim_hist[5] = 2;
    model.observe_processes(at(t0, 0), &[(1, s, info(1, "a", "/app.slice", 1))]);
    let snap = model.snapshot(at(t0, 0), wall(0), pipeline());
    let mut expected = vec![0; 16];
    expected[0] = 1;
    expected[5] = 2;
    assert_eq!(
        process_view(&snap, 1).reclaim_stall_buckets,
        Some(expected.clone())
    );
    assert_eq!(
        cgroup_view(&snap, "/app.slice").reclaim_stall_buckets,
        Some(expected.clone())
    );
    // It stalls once more (over 1 s) and exits: the cgroup keeps every bucket.
    let mut last = s;
    last.reclaim_stalls = 4;
    last.reclaim_hist[15] = 1;
    model.observe_event(at(t0, 1), wall(1), &exit(1, last));
    model.observe_processes(
        at(t0, 2),
        &[(2, stats(0, 0, MIB), info(2, "b", "/app.slice", 2))],
    );
    let snap = model.snapshot(at(t0, 2), wall(2), pipeline());
    expected[15] = 1;
    let cgroup = cgroup_view(&snap, "/app.slice");
    assert_eq!(cgroup.reclaim_stall_buckets, Some(expected));
    assert_eq!(cgroup.counters.reclaim_stalls, 4);
    assert_eq!(
        process_view(&snap, 2).reclaim_stall_buckets,
        None,
        "never stalled"
    );
}
