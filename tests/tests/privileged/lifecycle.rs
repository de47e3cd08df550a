//! Process lifecycle: pid churn leaves no kernel entries behind and every exit arrives.
use std::{collections::HashSet, time::Duration};

use memtrace::events::Event;
use memtrace_common::kind;
use memtrace_tests::{Tracer, Workload, require_root};

use crate::support::{mask, options, serial};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_churn_leaves_no_kernel_entries_and_every_exit_arrives() {
    require_root();
    let _serial = serial();
    let mut options = options(mask(&[kind::EXIT]));
    options.events_ring_bytes = 4 << 20;
    let mut tracer = Tracer::load(&options);
    const CHILDREN: usize = 5000;
    let mut workload = Workload::start(&["churn", &CHILDREN.to_string()]);
    // Read while the workload runs, as `trace` and the daemon do: a reader that stops for the
    // whole burst (seconds under an emulator) fills the bounded queue, and the pipeline drops
    // what follows (counted, asserted below).
    let run = tokio::task::spawn_blocking(move || {
        let r = workload.run();
        (workload, r)
    });
    let mut early = Vec::new();
    tokio::pin!(run);
    let (workload, r) = loop {
        tokio::select! {
            done = &mut run => break done.expect("workload thread"),
            Some(batch) = tracer.stream.batches.recv() => early.extend(batch),
        }
    };
    let children: HashSet<u32> = r["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|p| p.as_u64().expect("pid") as u32)
        .collect();
    assert_eq!(children.len(), CHILDREN);

    let exits_in = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e, Event::Exit(x) if children.contains(&x.header.pid)))
            .count()
    };
    let early_exits = exits_in(&early);
    let mut events = tracer
        .collect_until(Duration::from_secs(20), |events| {
            early_exits + exits_in(events) >= CHILDREN
        })
        .await;
    events.extend(early);
    let exits: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Exit(x) if children.contains(&x.header.pid) => Some(*x),
            _ => None,
        })
        .collect();
    let losses = tracer.probes.kernel_losses().expect("losses");
    assert_eq!(
        losses.ring_full[kind::EXIT as usize],
        0,
        "exit events lost in the kernel"
    );
    assert_eq!(
        tracer.stream.counters.snapshot().queue_drops,
        0,
        "events dropped by the pipeline (its consumer fell behind)"
    );
    assert_eq!(exits.len(), CHILDREN, "exit events for every child");
    // Each child dirtied a page: its final counters came with its exit.
    assert!(
        exits
            .iter()
            .all(|x| x.tracked == 1 && x.stats.faults_user >= 1),
        "exit events carry final counters"
    );
    // And no child left an entry behind in the kernel map.
    let live: HashSet<u32> = tracer
        .probes
        .all_process_stats()
        .expect("map")
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    let leaked: Vec<_> = children.iter().filter(|p| live.contains(p)).collect();
    assert!(
        leaked.is_empty(),
        "{} children still in PROC_STATS: {:?}",
        leaked.len(),
        &leaked[..leaked.len().min(10)]
    );
    assert_eq!(
        tracer
            .probes
            .kernel_losses()
            .expect("losses")
            .proc_stats_full,
        0
    );
    assert!(workload.finish().success());
}
