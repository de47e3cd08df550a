//! OOM kills: victim, size, trigger, and the victim's cgroup.
use std::time::{Duration, Instant};

use memtrace::events::Event;
use memtrace_api::OomResponse;
use memtrace_common::kind;
use memtrace_tests::{MemoryCgroup, Tracer, Workload, require_root};

use crate::{
    daemon::{Daemon, get},
    support::{mask, oom_kill_in_cgroup, options, serial},
};

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

/// A victim that is not the trigger and is reaped the moment it dies, so its /proc entry is gone
/// before the daemon reads the event (as a short-lived victim's is): the record still names the
/// victim's own cgroup, which the kernel hook read at the kill — not the trigger's, not none.
#[test]
fn a_reaped_victim_that_is_not_the_trigger_keeps_its_own_cgroup() {
    require_root();
    let _serial = serial();
    let daemon = Daemon::start(&[]);
    // Declared parent first: children are dropped (removed) before it.
    let parent = MemoryCgroup::new("memtrace-victim-oom", 64 << 20);
    let victim_cgroup = parent.child("victim");
    let trigger_cgroup = parent.child("trigger");

    let mut holder = Workload::start_in(&victim_cgroup, &["reaped-victim", "40"]);
    let victim = u32::try_from(holder.run()["victim"].as_u64().expect("victim pid")).unwrap();
    // 40 MiB more next to it: the parent's 64 MiB limit is hit, the victim (oom_score_adj 1000,
    // the highest badness there is) is killed to make room, and the trigger completes.
    let mut trigger = Workload::start_in(&trigger_cgroup, &["touch-anon", "10240"]);
    let trigger_pid = trigger.pid();
    // The trigger normally completes; where the victim's memory is freed slower than the
    // trigger faults (Linux 7.3 under qemu's emulator), the kernel kills the trigger too, right
    // after. Either way the victim's record is what this test is about. (`oom_score_adj` -1000
    // would spare the trigger, but needs CAP_SYS_RESOURCE, which these machines do not grant.)
    let completed = trigger.try_run().is_some();
    // A trigger that completed did so after the victim was reaped; one killed too may end
    // before its parent reaps the victim, so that is waited for.
    let reaped_by = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{victim}")).exists() {
        assert!(
            Instant::now() < reaped_by,
            "the victim {victim} was not killed and reaped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    let oom = loop {
        let (status, body) = get(daemon.addr, "/api/v1/oom");
        assert_eq!(status, 200, "{body}");
        let response: OomResponse = serde_json::from_str(&body).expect("OomResponse");
        if let Some(oom) = response.ooms.into_iter().find(|o| o.victim_pid == victim) {
            break oom;
        }
        assert!(
            Instant::now() < deadline,
            "the kill of {victim} was not recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(oom.trigger_pid, trigger_pid, "{oom:#?}");
    assert_eq!(
        oom.victim_cgroup.as_deref(),
        Some(victim_cgroup.path.as_str()),
        "{oom:#?}"
    );
    assert_eq!(oom.victim_comm, "memtrace-worklo", "{oom:#?}");
    eprintln!("the trigger {trigger_pid} completed: {completed}");
    drop(trigger);
    drop(holder);
}
