//! `memtrace daemon` as an SRE runs it: scraped by a real Prometheus, checked by promtool,
//! bounded under 1,000 processes, and its OOM flight recorder fed by a real OOM kill.
use std::{
    collections::HashSet,
    io::Write,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_api::{Family, OomRecord, Snapshot};
use memtrace_tests::{MemoryCgroup, Workload, cgroup::Layout, memtrace_bin, require_root};

use crate::{
    prometheus::{Prometheus, Setup},
    support::{serial, spawn_daemon},
};

/// A running `memtrace daemon`, stopped with SIGTERM on drop.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// Its `--state-dir` unless the test gives one: never the host's /var/lib/memtrace.
    _state: Option<tempfile::TempDir>,
}

impl Daemon {
    pub(crate) fn start(extra: &[&str]) -> Self {
        let state =
            (!extra.contains(&"--state-dir")).then(|| tempfile::tempdir().expect("state tempdir"));
        let state_args: Vec<&std::ffi::OsStr> = match &state {
            Some(dir) => vec!["--state-dir".as_ref(), dir.path().as_os_str()],
            None => Vec::new(),
        };
        let mut command = Command::new(memtrace_bin());
        command
            .args(["daemon", "--listen", "127.0.0.1:0", "--interval", "1s"])
            .args(state_args)
            .args(extra);
        let (child, serving) = spawn_daemon(command);
        let addr: SocketAddr = serving
            .trim_start_matches("http://")
            .parse()
            .expect("address");
        let daemon = Self {
            child,
            addr,
            _state: state,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(daemon.addr, "/readyz").0 != 200 {
            assert!(Instant::now() < deadline, "daemon not ready within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    pub(crate) fn metrics(&self) -> String {
        let (status, body) = get(self.addr, "/metrics");
        assert_eq!(status, 200);
        body
    }
}

impl Daemon {
    /// SIGKILL, as a crash or the OOM killer would: no shutdown code runs.
    pub(crate) fn crash(mut self) {
        // SAFETY: signalling our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: signalling our own child, still running (not reaped).
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    match agent.get(&format!("http://{addr}{path}")).call() {
        Ok(mut response) => (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(_) => (0, String::new()),
    }
}

/// Sample lines of one metric family: (labels, value).
pub(crate) fn samples(exposition: &str, name: &str) -> Vec<(String, f64)> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric == name).then(|| (labels.to_owned(), value.parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

#[test]
fn real_prometheus_sees_a_workloads_faults_and_a_real_oom_kill() {
    require_root();
    let _serial = serial();
    let daemon = Daemon::start(&[]);
    let prometheus = Prometheus::start(&Setup {
        targets: vec![daemon.addr.to_string()],
        ..Setup::default()
    });

    // A known workload: 30,000 fresh pages.
    let mut workload = Workload::start(&["touch-anon", "30000"]);
    let before = prometheus
        .query(r#"memtrace_process_page_faults_total{comm="memtrace-worklo",type="minor"}"#);
    workload.run();
    let after = prometheus.wait_for(
        r#"memtrace_process_page_faults_total{comm="memtrace-worklo",type="minor"}"#,
        Duration::from_secs(20),
        |r| r.iter().any(|(_, v)| *v >= 30_000.0),
    );
    // Its virtual size covers the 30,000 pages it mapped (while it is alive, idle).
    prometheus.wait_for(
        r#"memtrace_process_virtual_memory_bytes{comm="memtrace-worklo"}"#,
        Duration::from_secs(20),
        |r| r.iter().any(|(_, v)| *v >= 30_000.0 * 4096.0),
    );
    let before_max = before.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let after_max = after.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    assert!(
        after_max >= before_max + 30_000.0,
        "fault counter rose by {} (before {before_max})",
        after_max - before_max
    );
    assert!(workload.finish().success());

    // A real OOM kill in a 64 MiB memory cgroup, slow enough for the flight recorder to see it.
    let cgroup = MemoryCgroup::new("memtrace-prom-oom", 64 << 20);
    // Another process of the cgroup, holding 8 MiB: the record must list it.
    let mut companion = Workload::start_in(&cgroup, &["touch-anon", "2048"]);
    companion.run();
    let companion_pid = companion.pid();
    let mut hog = Workload::start_in(&cgroup, &["slow-hog", "2048", "150"]);
    let victim = hog.pid();
    hog.go();
    let status = hog.finish();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "not OOM-killed: {status:?}"
    );

    let query = format!(
        r#"memtrace_oom_kills_total{{comm="memtrace-worklo",cgroup="{}"}}"#,
        cgroup.path
    );
    let kills = prometheus.wait_for(&query, Duration::from_secs(20), |r| {
        r.iter().any(|(_, v)| *v >= 1.0)
    });
    let (labels, _) = &kills[0];
    assert_eq!(labels["comm"], "memtrace-worklo");
    assert_eq!(labels["cgroup"], cgroup.path.as_str());
    // The OOM stays visible after the victim (and soon its cgroup) is gone.
    assert!(
        prometheus
            .query(r#"memtrace_node_oom_kills_total"#)
            .iter()
            .any(|(_, v)| *v >= 1.0)
    );

    // The flight recording: the victim's RSS climbing in the seconds before the kill.
    let (status, body) = get(daemon.addr, "/api/v1/oom");
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&body).expect("oom JSON");
    assert_eq!(body["schema_version"], 1);
    let ooms: Vec<OomRecord> =
        serde_json::from_value(body["ooms"].clone()).expect("OomRecord schema");
    let oom = ooms
        .iter()
        .find(|o| o.victim_pid == victim)
        .unwrap_or_else(|| panic!("victim {victim} not in {ooms:#?}"));
    assert_eq!(oom.victim_cgroup.as_deref(), Some(cgroup.path.as_str()));
    assert_eq!(oom.cgroup_limit_bytes, Some(64 << 20));
    let rss: Vec<u64> = oom
        .flight_recording
        .iter()
        .map(|s| s.rss_anon_bytes)
        .collect();
    assert!(rss.len() >= 3, "flight recording too short: {rss:?}");
    assert!(
        rss.windows(2).all(|w| w[0] <= w[1]),
        "RSS not climbing: {rss:?}"
    );
    assert!(rss.last() > rss.first(), "RSS not climbing: {rss:?}");
    assert!(oom.flight_recording.iter().all(|s| s.offset_seconds <= 0.0));
    // It ends at the kill, not up to an interval before it.
    let last = oom.flight_recording.last().expect("flight recording");
    assert!(last.offset_seconds >= -0.1, "ends at {last:?}");
    // The cgroup at the kill: what its usage was made of, and its other process.
    let usage = oom
        .cgroup_usage_at_kill_bytes
        .expect("cgroup usage at the kill");
    let stat = oom.cgroup_memory_stat.expect("memory.stat at the kill");
    assert_eq!(stat.version, Layout::host().version());
    // The LRU lists, not the mapped pages: the victim is being torn down as the daemon reads.
    let parts = stat.lru_anon_bytes.expect("anon LRU")
        + stat.lru_file_bytes.expect("file LRU")
        + stat.unevictable_bytes.expect("unevictable")
        + stat.kernel_bytes.expect("kmem");
    assert!(
        parts.abs_diff(usage) <= (usage / 10).max(4 << 20),
        "memory.stat sums to {parts}, usage {usage}: {stat:?}"
    );
    let listed = oom
        .cgroup_processes
        .iter()
        .find(|p| p.pid == companion_pid)
        .unwrap_or_else(|| {
            panic!(
                "companion {companion_pid} not in {:?}",
                oom.cgroup_processes
            )
        });
    assert!(listed.rss_bytes >= 8 << 20, "{listed:?}");
    assert!(oom.cgroup_processes.iter().all(|p| p.pid != victim));
    let _companion = companion.finish();

    // `memtrace oom` prints it for a human.
    let out = Command::new(memtrace_bin())
        .args(["oom", "--url", &format!("http://{}", daemon.addr)])
        .output()
        .expect("memtrace oom");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "victim   {victim} (memtrace-worklo)  cgroup {}",
            cgroup.path
        )),
        "{text}"
    );
    assert!(text.contains("before the kill"), "{text}");
    assert!(text.contains("cgroup at the kill"), "{text}");
}

#[test]
fn promtool_accepts_a_live_scrape_and_the_snapshot_round_trips() {
    require_root();
    let _serial = serial();
    // By default no mmap-family hook: the call counters are not exported (not even as zeros)
    // and the virtual size is. `--mmap-calls` adds the five syscall hooks and their counters.
    // The raw OOM hook exists where the kernel passes it the victim's task (6.8, and Debian's
    // 6.1 by a backport): its BTF says.
    let raw_oom = f64::from(u8::from(
        memtrace::probes::btf::KernelBtf::open(std::path::Path::new(
            memtrace::preflight::KERNEL_BTF,
        ))
        .expect("kernel BTF")
        .raw_tracepoint_takes_task("mark_victim"),
    ));
    for (flags, attached, calls) in [
        (&[][..], 8.0 + raw_oom, false),
        (&["--mmap-calls"][..], 13.0 + raw_oom, true),
    ] {
        let daemon = Daemon::start(flags);
        std::thread::sleep(Duration::from_millis(1500)); // a tick with rates
        let metrics = daemon.metrics();
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (Debian package `prometheus`; cargo xtask test installs it)");
        promtool
            .stdin
            .take()
            .expect("stdin")
            .write_all(metrics.as_bytes())
            .expect("feed promtool");
        let out = promtool.wait_with_output().expect("promtool");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "promtool check metrics {flags:?}: {report}"
        );
        for family in [
            "memtrace_process_page_faults_total",
            "memtrace_process_virtual_memory_bytes",
            "memtrace_node_memory_available_bytes",
            "memtrace_probes",
            "memtrace_build_info",
        ] {
            assert!(!samples(&metrics, family).is_empty(), "{family} missing");
        }
        assert_eq!(
            !samples(&metrics, "memtrace_process_mapped_bytes_total").is_empty(),
            calls,
            "mmap-family call counters {flags:?}"
        );
        assert_eq!(
            !samples(&metrics, "memtrace_process_madvised_bytes_total").is_empty(),
            calls,
            "madvise counters {flags:?}"
        );
        let probes = samples(&metrics, "memtrace_probes");
        let state = |s: &str| {
            probes
                .iter()
                .filter(|(l, _)| l.contains(s))
                .map(|(_, v)| *v)
                .sum::<f64>()
        };
        // With BTF on x86-64: the task iterator, 4 reclaim, oom (its tracepoint and, from Linux
        // 6.8, the raw hook reading the victim's cgroup), exit, exec (and with
        // --mmap-calls 5 exit-only syscall hooks: mmap, munmap, brk, mremap, madvise); no
        // fault-path hook. None may fail here.
        assert_eq!(
            state("attached"),
            attached,
            "probes attached {flags:?}: {probes:?}"
        );
        assert_eq!(state("failed"), 0.0, "probes failed: {probes:?}");
        if calls {
            continue;
        }

        let (status, body) = get(daemon.addr, "/api/v1/snapshot");
        assert_eq!(status, 200);
        let snapshot: Snapshot =
            serde_json::from_str(&body).expect("snapshot matches the v1 schema");
        assert_eq!(snapshot.schema_version, 1);
        assert!(!snapshot.node.boot_id.is_empty() && !snapshot.node.kernel_release.is_empty());
        assert!(!snapshot.processes.is_empty());
        assert_eq!(
            snapshot.pipeline.families.iter().collect::<Vec<_>>(),
            [
                Family::Tasks,
                Family::Reclaim,
                Family::Oom,
                Family::Lifecycle
            ],
            "what is counted is in the snapshot"
        );
        assert!(
            snapshot
                .processes
                .iter()
                .all(|p| p.counters.vm_bytes.is_some()),
            "every process has its virtual size"
        );
        let original: serde_json::Value = serde_json::from_str(&body).expect("json");
        let reencoded = serde_json::to_value(&snapshot).expect("serialize");
        assert_eq!(
            original["processes"].as_array().map(Vec::len),
            reencoded["processes"].as_array().map(Vec::len)
        );
        assert_eq!(original["node"], reencoded["node"]);
        assert_eq!(original["pipeline"], reencoded["pipeline"]);
        assert_eq!(get(daemon.addr, "/healthz"), (200, "ok".to_owned()));
        assert_eq!(get(daemon.addr, "/nope").0, 404);
    }
}

#[test]
fn a_thousand_processes_stay_within_the_series_bound_and_leave_when_gone() {
    require_root();
    let _serial = serial();
    const TOP: usize = 50;
    let daemon = Daemon::start(&["--top", &TOP.to_string()]);
    let mut idle = Workload::start(&["idle", "1000"]);
    let r = idle.run();
    let children: HashSet<u64> = r["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter_map(|p| p.as_u64())
        .collect();
    assert_eq!(children.len(), 1000);

    // Wait until the daemon's model holds them all.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = get(daemon.addr, "/api/v1/snapshot");
        let snapshot: Snapshot = serde_json::from_str(&body).expect("snapshot");
        let seen = snapshot
            .processes
            .iter()
            .filter(|p| children.contains(&u64::from(p.pid)))
            .count();
        if seen == 1000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemon saw {seen} of 1000 children"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let metrics = daemon.metrics();
    let faults = samples(&metrics, "memtrace_process_page_faults_total");
    let minor: Vec<_> = faults
        .iter()
        .filter(|(l, _)| l.contains(r#"type="minor""#))
        .collect();
    assert!(
        minor.len() <= TOP + 1,
        "{} workload series for minor faults (bound {})",
        minor.len(),
        TOP + 1
    );
    assert!(
        minor.iter().any(|(l, _)| l.contains(r#"comm="~other""#)),
        "no ~other aggregate"
    );
    let idle_series = minor
        .iter()
        .filter(|(l, _)| l.contains(r#"comm="idle-"#))
        .count();
    assert!(idle_series <= TOP, "{idle_series} idle-* series");
    assert!(
        metrics
            .lines()
            .all(|l| l.starts_with('#') || !l.contains("pid=")),
        "a pid label leaked"
    );
    let exported = samples(&metrics, "memtrace_exported_series")[0].1 as usize;
    let lines = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert_eq!(exported, lines, "exported_series must count the exposition");
    // The README's bound without --mmap-calls: 32 × (top + 1) + 29 × (max-cgroups + 1) + 29
    // (default max-cgroups 200): per workload 11 series, its OOM counter, growth, leak hint and
    // the 18 of its stall histogram; per cgroup 10, growth and its histogram's 18.
    let bound = 32 * (TOP + 1) + 29 * (200 + 1) + 29;
    assert!(
        exported <= bound,
        "{exported} series exceed the documented bound {bound}"
    );

    // They exit: their series leave within two sampling intervals.
    assert!(idle.finish().success());
    std::thread::sleep(Duration::from_millis(2_500));
    let metrics = daemon.metrics();
    let left = samples(&metrics, "memtrace_process_page_faults_total")
        .iter()
        .filter(|(l, _)| l.contains(r#"comm="idle-"#))
        .count();
    assert_eq!(left, 0, "series of exited processes still exported");
}
