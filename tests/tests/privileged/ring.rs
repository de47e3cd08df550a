//! The fault stream through the ring buffer: complete, sampled, and losses accounted.
use std::time::Duration;

use memtrace::events::Event;
use memtrace_common::{filter, kind};
use memtrace_tests::{Tracer, Workload, require_root};

use crate::support::{mask, options, serial};

/// `trace --faults`: every fault of the filtered process is streamed with its address and
/// cause; with `--sample N` one in N per CPU; either way delivered + dropped = produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_stream_is_complete_sampled_and_accounted() {
    require_root();
    let _serial = serial();
    for sample in [1u32, 10] {
        let mut options = options(mask(&[kind::FAULT]));
        options.config.fault_sample_every = sample;
        options.config.filter_flags = filter::COMMS;
        options.fault_ring_bytes = 16 << 20;
        let mut tracer = Tracer::load(&options);
        tracer
            .probes
            .add_filter_comms(&["memtrace-worklo".to_owned()])
            .expect("comm filter");
        let mut workload = Workload::start(&["touch-anon", "20000"]);
        let pid = workload.pid();
        let r = workload.run();
        let base = r["addr"].as_u64().expect("addr");
        let stats = tracer
            .probes
            .process_stats(pid)
            .expect("map")
            .expect("tracked");
        let faults = stats.faults_user + stats.faults_kernel;
        let events = tracer
            .collect_until(Duration::from_secs(2), |_| false)
            .await;
        let mine: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Fault(f) if f.header.pid == pid => Some(*f),
                _ => None,
            })
            .collect();
        let dropped =
            tracer.probes.kernel_losses().expect("losses").ring_full[kind::FAULT as usize];
        assert_eq!(
            dropped, 0,
            "sample {sample}: a 16 MiB ring should not overflow"
        );
        let in_region = mine
            .iter()
            .filter(|f| (base..base + 20_000 * 4096).contains(&f.address))
            .collect::<Vec<_>>();
        // The touched pages: user-mode write faults on not-present pages, by an instruction in
        // the workload's executable mappings, under its comm.
        assert!(
            in_region
                .iter()
                .all(|f| f.user == 1 && f.error_code & 0x6 == 0x6),
            "sample {sample}"
        );
        let text = executable_ranges(pid);
        for f in &in_region {
            assert!(
                text.iter().any(|r| r.contains(&f.ip)),
                "ip {:#x} outside the workload's code {text:x?}",
                f.ip
            );
            assert_eq!(
                memtrace::events::comm_str(&f.header.comm),
                "memtrace-worklo"
            );
        }
        if sample == 1 {
            assert_eq!(in_region.len(), 20_000, "one event per touched page");
            // The few faults the child took between fork and exec ran under the test's own
            // comm, which the comm filter rightly excludes.
            let unstreamed = faults - mine.len() as u64;
            assert!(
                unstreamed <= 8,
                "{unstreamed} of {faults} faults not streamed"
            );
        } else {
            // One in N per CPU: the per-CPU remainders make it at most one short per CPU.
            let expected = faults / u64::from(sample);
            let cpus = memtrace_tests::online_cpus() as u64;
            assert!(
                (expected.saturating_sub(cpus)..=expected + cpus).contains(&(mine.len() as u64)),
                "sample {sample}: {} events for {faults} faults",
                mine.len()
            );
        }
        assert!(workload.finish().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflowing_a_tiny_ring_loses_nothing_silently() {
    require_root();
    let _serial = serial();
    let mut options = options(mask(&[kind::MMAP]));
    // One page: ~39 mmap records fit.
    options.events_ring_bytes = memtrace::probes::page_size();
    options.config.filter_flags = filter::COMMS;
    // Nobody reads the ring during the burst (a live reader can keep up with it), so it must
    // overflow; reading starts after.
    let tracefs = memtrace::tracefs::Tracefs::discover().expect("tracefs");
    let mut probes = memtrace::probes::Probes::load(&tracefs, &options).expect("load probes");
    probes
        .add_filter_comms(&["memtrace-worklo".to_owned()])
        .expect("comm filter");
    const MMAPS: usize = 2000;
    let mut workload = Workload::start(&["burst", &MMAPS.to_string(), "65536"]);
    let pid = workload.pid();
    workload.run();
    let mut tracer = Tracer::from_probes(probes);
    // Produced: every mmap the workload made (start-up included), as the kernel counted them.
    let stats = tracer
        .probes
        .process_stats(pid)
        .expect("map")
        .expect("tracked");
    assert_eq!(stats.failed_calls, 0);
    let produced = stats.mmap_calls;
    assert!(produced >= MMAPS as u64);
    let events = tracer
        .collect_until(Duration::from_secs(3), |_| false) // drain everything that made it
        .await;
    let delivered = events.iter().filter(|e| matches!(e, Event::MemSyscall(m) if m.header.pid == pid && m.header.kind == kind::MMAP)).count() as u64;
    let dropped = tracer.probes.kernel_losses().expect("losses").ring_full[kind::MMAP as usize];
    assert!(
        dropped > 0,
        "a one-page ring should have overflowed ({delivered} delivered)"
    );
    assert!(delivered > 0);
    assert_eq!(
        delivered + dropped,
        produced,
        "delivered {delivered} + dropped {dropped} != produced {produced}"
    );
    assert_eq!(tracer.stream.counters.snapshot().queue_drops, 0);
    assert!(workload.finish().success());
}

/// The executable mappings of `pid`, from `/proc/<pid>/maps`.
fn executable_ranges(pid: u32) -> Vec<std::ops::Range<u64>> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("maps")
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|p| p.contains('x'))
        })
        .map(|line| {
            let (start, end) = line
                .split_whitespace()
                .next()
                .unwrap()
                .split_once('-')
                .unwrap();
            u64::from_str_radix(start, 16).unwrap()..u64::from_str_radix(end, 16).unwrap()
        })
        .collect()
}
