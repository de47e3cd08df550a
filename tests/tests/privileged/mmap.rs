//! The mmap family: events and counters with exact sizes (madvise: counters only).
use std::time::Duration;

use memtrace::events::Event;
use memtrace_common::kind;
use memtrace_tests::{Tracer, Workload, require_root};

use crate::support::{mask, options, serial};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mmap_family_events_and_counters_carry_exact_sizes() {
    require_root();
    let _serial = serial();
    let mut tracer = Tracer::load(&options(mask(&[
        kind::MMAP,
        kind::MUNMAP,
        kind::BRK,
        kind::MREMAP,
    ])));
    let mut workload = Workload::start(&["syscalls"]);
    let pid = workload.pid();
    // Let start-up (dynamic loader, std runtime) settle, then take the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = tracer
        .probes
        .process_stats(pid)
        .expect("map")
        .expect("tracked");
    let r = workload.run();
    let after = tracer
        .probes
        .process_stats(pid)
        .expect("map")
        .expect("tracked");

    let u = |key: &str| r[key].as_u64().unwrap_or_else(|| panic!("{key} in {r}"));
    // Counters: only successful calls, page-aligned sizes.
    assert_eq!(
        after.mmap_calls - before.mmap_calls,
        2,
        "two successful mmaps"
    );
    assert_eq!(
        after.mmap_bytes - before.mmap_bytes,
        (3 << 20) + (2 << 20),
        "mmap bytes: 3 MiB + 2 MiB"
    );
    assert_eq!(after.munmap_calls - before.munmap_calls, 1);
    assert_eq!(after.munmap_bytes - before.munmap_bytes, 1 << 20);
    assert_eq!(after.brk_grow_bytes - before.brk_grow_bytes, 256 << 10);
    assert_eq!(after.brk_shrink_bytes - before.brk_shrink_bytes, 64 << 10);
    assert_eq!(after.mremap_calls - before.mremap_calls, 1);
    assert_eq!(after.mremap_grow_bytes - before.mremap_grow_bytes, 2 << 20);
    assert_eq!(
        after.failed_calls - before.failed_calls,
        2,
        "the failed mmap and munmap"
    );
    // madvise: successful MADV_DONTNEED and MADV_FREE only, by page-aligned length.
    assert_eq!(
        after.madvise_dontneed_bytes - before.madvise_dontneed_bytes,
        u("madvise_dontneed_len"),
        "MADV_DONTNEED bytes"
    );
    assert_eq!(
        after.madvise_free_bytes - before.madvise_free_bytes,
        u("madvise_free_len"),
        "MADV_FREE bytes, rounded up to a page"
    );

    // Events: exactly those calls, with those sizes and addresses.
    let events = tracer
        .collect_until(Duration::from_secs(5), |events| {
            events.iter().any(|e| matches!(e, Event::MemSyscall(m) if m.header.pid == pid && m.header.kind == kind::MREMAP))
                && events.iter().filter(|e| matches!(e, Event::MemSyscall(m) if m.header.pid == pid && m.header.kind == kind::MUNMAP && m.ret < 0)).count() == 1
        })
        .await;
    let mine: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::MemSyscall(m) if m.header.pid == pid => Some(*m),
            _ => None,
        })
        .collect();
    let find = |k: u32, pred: &dyn Fn(&memtrace_common::MemSyscallEvent) -> bool| {
        mine.iter()
            .find(|m| m.header.kind == k && pred(m))
            .copied()
            .unwrap_or_else(|| panic!("no {k} event matching in {mine:#?}"))
    };
    let mmap = find(kind::MMAP, &|m| m.len == 3 << 20);
    assert_eq!(mmap.addr, u("mmap_addr"));
    assert!(mmap.ret >= 0 && mmap.fd == -1);
    let munmap = find(kind::MUNMAP, &|m| m.ret == 0 && m.addr == u("munmap_addr"));
    assert_eq!(munmap.len, 1 << 20);
    let grow = find(kind::BRK, &|m| m.grew == 1 && m.addr == u("brk1"));
    assert_eq!((grow.old_addr, grow.len), (u("brk0"), 256 << 10));
    let shrink = find(kind::BRK, &|m| m.grew == 0 && m.addr == u("brk2"));
    assert_eq!((shrink.old_addr, shrink.len), (u("brk1"), 64 << 10));
    let mremap = find(kind::MREMAP, &|_| true);
    assert_eq!(
        (mremap.old_addr, mremap.old_len, mremap.addr, mremap.len),
        (u("mremap_old"), 2 << 20, u("mremap_new"), 4 << 20)
    );
    let failed = find(kind::MMAP, &|m| m.len == 5 << 20);
    assert_eq!(
        failed.ret,
        -i64::from(libc::EINVAL),
        "the failed mmap reports its errno"
    );
    let failed_unmap = find(kind::MUNMAP, &|m| m.ret < 0);
    assert_eq!(failed_unmap.ret, -i64::from(libc::EINVAL));
    assert!(workload.finish().success());
}
