//! OOM kills: victim, size and trigger.
use std::time::Duration;

use memtrace::events::Event;
use memtrace_common::kind;
use memtrace_tests::{Tracer, require_root};

use crate::support::{mask, oom_kill_in_cgroup, options, serial};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_kill_names_victim_size_and_trigger() {
    require_root();
    let _serial = serial();
    let mut tracer = Tracer::load(&options(mask(&[kind::OOM])));
    let (pid, _cgroup) = oom_kill_in_cgroup();
    let events = tracer
        .collect_until(Duration::from_secs(10), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::Oom(o) if o.victim_pid == pid))
        })
        .await;
    let oom = events
        .iter()
        .find_map(|e| match e {
            Event::Oom(o) if o.victim_pid == pid => Some(*o),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no OOM event for victim {pid}; got {events:?}"));
    assert_eq!(
        memtrace::events::comm_str(&oom.victim_comm),
        "memtrace-worklo"
    );
    let anon = oom.anon_rss_kb * 1024;
    assert!(
        (48 << 20..=(64 << 20) + (4 << 20)).contains(&anon),
        "anon_rss {anon} not near the 64 MiB limit"
    );
    // The hog's own allocation invoked the OOM killer: it is also the trigger.
    assert_eq!(oom.header.pid, pid, "trigger pid");
    assert_eq!(
        memtrace::events::comm_str(&oom.header.comm),
        "memtrace-worklo"
    );
    assert!(oom.total_vm_kb * 1024 >= anon);
    assert_eq!(
        oom.present & memtrace_common::oom_field::ANON_RSS,
        memtrace_common::oom_field::ANON_RSS
    );
}
