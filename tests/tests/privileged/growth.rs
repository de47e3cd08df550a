//! Growth rates, leak hints and the reclaim-stall histogram of a live daemon, against what the
//! kernel says: a process growing at a known pace, and real memcg reclaim stalls before an OOM
//! kill.
use std::time::{Duration, Instant};

use memtrace_api::Snapshot;
use memtrace_api::workloads::WorkloadsResponse;
use memtrace_tests::{MemoryCgroup, Workload, require_root};

use crate::{
    daemon::{Daemon, get, samples},
    support::{oom_kill_in_cgroup, serial},
};

fn snapshot(daemon: &Daemon) -> Snapshot {
    let (status, body) = get(daemon.addr, "/api/v1/snapshot");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("snapshot JSON")
}

/// VmRSS of `pid` in bytes.
fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number");
    kib * 1024
}

/// The value of `name`'s series whose labels contain each of `labels` (`key="value"`).
fn metric(exposition: &str, name: &str, labels: &[String]) -> Option<f64> {
    samples(exposition, name)
        .into_iter()
        .find(|(l, _)| labels.iter().all(|want| l.contains(want.as_str())))
        .map(|(_, v)| v)
}

/// A process that grows ~2.5 MiB/s (256 KiB every 100 ms) under a daemon with a 2 s growth
/// window and a 6 s leak window: its growth is within 25 % of the rate measured from
/// `/proc/<pid>/status`, and it is hinted as leaking, in the snapshot, the workloads summary and
/// the metrics. The bound: the daemon measures over 2 s between 1 s ticks, the kernel's RSS
/// counters lag by their per-CPU batches, and the workload's pace jitters with the scheduler.
#[test]
fn a_steadily_growing_process_has_its_growth_rate_and_a_leak_hint() {
    require_root();
    let _serial = serial();
    let daemon = Daemon::start(&[
        "--growth-window",
        "2s",
        "--leak-window",
        "6s",
        "--leak-min-growth",
        "1MiB/s",
    ]);
    let cgroup = MemoryCgroup::new("memtrace-growth", 1 << 30);
    // slow-hog never ends by itself: killed when the test ends (dropped), passed or failed.
    let mut hog = Workload::start_in(&cgroup, &["slow-hog", "256", "100"]);
    let pid = hog.pid();
    hog.go();
    let started = Instant::now();
    let rss_at_start = vm_rss(pid);
    // A whole leak window and a tick or two.
    std::thread::sleep(Duration::from_secs(8));
    let deadline = Instant::now() + Duration::from_secs(15);
    let (process, real_rate) = loop {
        let snap = snapshot(&daemon);
        let real_rate = (vm_rss(pid) - rss_at_start) as f64 / started.elapsed().as_secs_f64();
        let process = snap
            .processes
            .into_iter()
            .find(|p| p.pid == pid)
            .expect("the hog is modelled");
        if process.leak_hint.is_some() || Instant::now() > deadline {
            break (process, real_rate);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        real_rate > 1.5 * (1 << 20) as f64,
        "the hog grew only {real_rate} B/s"
    );
    let growth = process
        .rss_growth_bytes_per_sec
        .expect("watched for more than the growth window");
    assert!(
        (growth - real_rate).abs() <= 0.25 * real_rate,
        "growth {growth:.0} B/s, /proc says {real_rate:.0} B/s"
    );
    let hint = process.leak_hint.expect("2.5 MiB/s for 8 s, never falling");
    assert_eq!(hint.window_seconds, 6.0);
    assert!(
        (hint.growth_bytes_per_sec - real_rate).abs() <= 0.25 * real_rate,
        "{hint:?}, /proc says {real_rate:.0} B/s"
    );
    assert!(hint.growth_bytes >= 6 << 20, "{hint:?}");

    // The workloads summary: its instance (the bare process) carries both.
    let (status, body) = get(daemon.addr, "/api/v1/workloads?history=0");
    assert_eq!(status, 200);
    let workloads: WorkloadsResponse = serde_json::from_str(&body).expect("workloads JSON");
    let instance = workloads
        .workloads
        .iter()
        .flat_map(|w| &w.instances)
        .find(|i| i.instance == format!("pid/{pid}"))
        .expect("the hog's instance");
    let instance_growth = instance.rss_growth_bytes_per_sec.expect("growth");
    assert!(
        (instance_growth - real_rate).abs() <= 0.25 * real_rate,
        "{instance_growth}"
    );
    assert!(instance.leak_hint.is_some(), "{instance:?}");

    // The metrics: its (comm, cgroup) series.
    let exposition = daemon.metrics();
    let labels = [
        format!("cgroup=\"{}\"", cgroup.path),
        "comm=\"memtrace-worklo\"".to_owned(),
    ];
    let exported = metric(
        &exposition,
        "memtrace_process_rss_growth_bytes_per_second",
        &labels,
    )
    .expect("a growth series");
    assert!(
        (exported - real_rate).abs() <= 0.25 * real_rate,
        "{exported}"
    );
    assert_eq!(
        metric(&exposition, "memtrace_process_leak_hint", &labels),
        Some(1.0)
    );
    let cgroup_growth = metric(
        &exposition,
        "memtrace_cgroup_rss_growth_bytes_per_second",
        &labels[..1],
    )
    .expect("the cgroup's growth");
    assert!(
        (cgroup_growth - real_rate).abs() <= 0.25 * real_rate,
        "{cgroup_growth}"
    );
    drop(hog);
}

/// Real memcg reclaim stalls (a hog in a 64 MiB cgroup, until the OOM killer ends it): the
/// cgroup's histogram, which keeps the dead hog's stalls, counts as many stalls as the daemon
/// reports (`_count` = `counters.reclaim_stalls`), sums their time (`_sum` = `reclaim_ns`), and
/// its buckets are cumulative up to `+Inf` = `_count`. Under emulation (6.1 in the kernel matrix)
/// the first tick to list the hog is often the one the daemon takes at the kill, when `/proc` no
/// longer names its cgroup: its exit's cgroup must then take all of it (it once lost them).
#[test]
fn real_reclaim_stalls_fill_the_cgroup_histogram() {
    require_root();
    let _serial = serial();
    let daemon = Daemon::start(&[]);
    let (pid, cgroup) = oom_kill_in_cgroup();
    let label = format!("cgroup=\"{}\"", cgroup.path);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let snap = snapshot(&daemon);
        let exposition = daemon.metrics();
        let view = snap.cgroups.iter().find(|c| c.path == cgroup.path);
        let count = metric(
            &exposition,
            "memtrace_cgroup_reclaim_stall_seconds_count",
            std::slice::from_ref(&label),
        );
        let sum = metric(
            &exposition,
            "memtrace_cgroup_reclaim_stall_seconds_sum",
            std::slice::from_ref(&label),
        );
        if let (Some(view), Some(count), Some(sum)) = (view, count, sum)
            && view.counters.reclaim_stalls > 0
            && count == view.counters.reclaim_stalls as f64
        {
            // The scrape and the snapshot were of one tick: compare them whole.
            let buckets = view.reclaim_stall_buckets.as_ref().expect("buckets");
            assert_eq!(buckets.iter().sum::<u64>(), view.counters.reclaim_stalls);
            let seconds = view.counters.reclaim_ns as f64 / 1e9;
            assert!(
                (sum - seconds).abs() <= seconds * 1e-9,
                "_sum {sum}, reclaim_ns {}",
                view.counters.reclaim_ns
            );
            let series = samples(&exposition, "memtrace_cgroup_reclaim_stall_seconds_bucket");
            let cumulative: Vec<f64> = series
                .iter()
                .filter(|(l, _)| l.contains(&label))
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(cumulative.len(), 16, "{series:?}");
            assert!(
                cumulative.windows(2).all(|w| w[0] <= w[1]),
                "{cumulative:?}"
            );
            assert_eq!(cumulative.last().copied(), Some(count), "+Inf is _count");
            let mut running = 0;
            for (i, n) in buckets.iter().take(15).enumerate() {
                running += n;
                assert_eq!(cumulative[i], running as f64, "bucket {i}");
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cgroup {} never showed its stalls: snapshot {:?}, _count {count:?}, _sum {sum:?}; \
             the hog's process {:?}; OOM victims (pid, cgroup, flight samples) {:?}; cgroups \
             with stalls {:?}; pipeline {:?}; memory.events {:?}",
            cgroup.path,
            view.map(|v| (v.counters.reclaim_stalls, v.reclaim_stall_buckets.clone())),
            snap.processes
                .iter()
                .find(|p| p.pid == pid)
                .map(|p| (&p.cgroup, p.counters.reclaim_stalls)),
            snap.recent_ooms
                .iter()
                .map(|o| (o.victim_pid, &o.victim_cgroup, o.flight_recording.len()))
                .collect::<Vec<_>>(),
            snap.cgroups
                .iter()
                .filter(|c| c.counters.reclaim_stalls > 0)
                .map(|c| (&c.path, c.counters.reclaim_stalls))
                .collect::<Vec<_>>(),
            snap.pipeline,
            std::fs::read_to_string(cgroup.dir.join("memory.events")),
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
