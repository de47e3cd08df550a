//! `GET /api/v1/workloads` from a real daemon: two instances of one workload, of different
//! sizes, each in its own memory cgroup; their RSS, a history that grows one point a second
//! (`--history-step 1s`), `?history=0`, and gzip when asked.
use std::{
    io::Read as _,
    net::SocketAddr,
    time::{Duration, Instant},
};

use memtrace_api::workloads::{InstanceSummary, WorkloadsResponse};
use memtrace_tests::{MemoryCgroup, Workload, page_size, require_root};

use crate::{daemon::Daemon, support::serial};

fn workloads(addr: SocketAddr, query: &str) -> WorkloadsResponse {
    let (status, body) = crate::daemon::get(addr, &format!("/api/v1/workloads{query}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|err| panic!("workloads JSON: {err}: {body}"))
}

/// The instance in `cgroup`, with its workload key.
fn instance_in<'a>(
    response: &'a WorkloadsResponse,
    cgroup: &MemoryCgroup,
) -> Option<(&'a str, &'a InstanceSummary)> {
    response.workloads.iter().find_map(|w| {
        w.instances
            .iter()
            .find(|i| i.cgroup.as_deref() == Some(cgroup.path.as_str()))
            .map(|i| (w.workload.as_str(), i))
    })
}

#[test]
fn workloads_endpoint_serves_instances_rss_history_and_gzip() {
    require_root();
    let _serial = serial();
    let page = page_size() as u64;
    let (small_pages, large_pages) = (4096u64, 12288u64);
    let small_cgroup = MemoryCgroup::new("memtrace-wl-small", 256 << 20);
    let large_cgroup = MemoryCgroup::new("memtrace-wl-large", 256 << 20);
    let mut small = Workload::start_in(&small_cgroup, &["touch-anon", &small_pages.to_string()]);
    let mut large = Workload::start_in(&large_cgroup, &["touch-anon", &large_pages.to_string()]);
    small.run();
    large.run();

    let daemon = Daemon::start(&["--history-step", "1s", "--history-points", "30"]);
    // Both seen with their RSS (the first tick after start may predate the touch).
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        let response = workloads(daemon.addr, "");
        let found = (
            instance_in(&response, &small_cgroup).map(|(_, i)| i.rss_anon_bytes),
            instance_in(&response, &large_cgroup).map(|(_, i)| i.rss_anon_bytes),
        );
        // Less what the kernel's RSS counters may hold back.
        let held_back = memtrace_tests::rss_counter_slack_pages();
        if matches!(found, (Some(s), Some(l))
            if s + held_back * page >= small_pages * page && l + held_back * page >= large_pages * page)
        {
            break response;
        }
        assert!(
            Instant::now() < deadline,
            "instances not served within 15 s: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(first.schema_version, 1);
    assert!(first.node.ready);
    assert_eq!(first.history.step_seconds, 1);
    assert_eq!(first.history.max_points, 30);
    assert!(!first.node.hostname.is_empty());
    assert!(first.node.mem_total_bytes > 0 && first.node.processes > 2);
    let (small_key, small_now) = instance_in(&first, &small_cgroup).unwrap();
    let (large_key, large_now) = instance_in(&first, &large_cgroup).unwrap();
    assert_eq!(small_key, large_key, "one workload, two instances");
    assert_ne!(small_now.instance, large_now.instance);
    let slack = 8 << 20;
    for (instance, pages) in [(small_now, small_pages), (large_now, large_pages)] {
        assert!(
            instance.rss_anon_bytes <= pages * page + slack,
            "{}: {} bytes for {pages} pages",
            instance.instance,
            instance.rss_anon_bytes
        );
        assert_eq!(instance.processes, 1);
        assert_eq!(instance.limit_bytes, Some(256 << 20));
        assert!(instance.started_unix_ms > 0);
    }
    assert!(
        large_now.rss_anon_bytes
            >= small_now.rss_anon_bytes + (large_pages - small_pages) * page / 2
    );

    // A point a second: three seconds later the history has grown by about three points.
    let before = instance_in(&first, &large_cgroup)
        .unwrap()
        .1
        .history
        .rss_anon_bytes
        .len();
    std::thread::sleep(Duration::from_secs(3));
    let later = workloads(daemon.addr, "");
    let (_, large_later) = instance_in(&later, &large_cgroup).unwrap();
    let history = &large_later.history;
    assert!(
        history.rss_anon_bytes.len() >= before + 2,
        "history did not grow: {before} → {}",
        history.rss_anon_bytes.len()
    );
    assert_eq!(history.rss_bytes.len(), history.rss_anon_bytes.len());
    let last = *history.rss_anon_bytes.last().unwrap();
    assert!(
        last.abs_diff(large_later.rss_anon_bytes) <= large_later.rss_anon_bytes / 500 + page,
        "the newest point ({last}) is the instance's RSS ({}) to 0.1 %",
        large_later.rss_anon_bytes
    );
    let now_s = later.timestamp_unix_ms / 1000;
    let end_s = history.start_unix_s + history.rss_bytes.len() as u64 - 1;
    assert!(
        now_s.abs_diff(end_s) <= 2,
        "points end now: {end_s} vs {now_s}"
    );

    // ?history=0: none; ?history=2: the last two points.
    let none = workloads(daemon.addr, "?history=0");
    assert!(
        instance_in(&none, &large_cgroup)
            .unwrap()
            .1
            .history
            .rss_bytes
            .is_empty()
    );
    let two = workloads(daemon.addr, "?history=2");
    assert_eq!(
        instance_in(&two, &large_cgroup)
            .unwrap()
            .1
            .history
            .rss_bytes
            .len(),
        2
    );

    // gzip when asked.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://{}/api/v1/workloads", daemon.addr))
        .header("Accept-Encoding", "gzip")
        .call()
        .expect("gzip request");
    assert_eq!(
        response
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap_or("")),
        Some("gzip")
    );
    let zipped = response.body_mut().read_to_vec().expect("body");
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut json)
        .expect("a gzip body");
    let read: WorkloadsResponse = serde_json::from_slice(&json).expect("JSON inside");
    assert!(instance_in(&read, &small_cgroup).is_some());
    assert!(
        zipped.len() < json.len(),
        "{} vs {}",
        zipped.len(),
        json.len()
    );

    let _ = small.finish();
    let _ = large.finish();
}
