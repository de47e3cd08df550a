//! Workloads with known memory behaviour, driven by the privileged tests.
//!
//! Protocol: the workload prints `ready` when set up, waits for a `go` line on stdin, does its
//! work, prints one JSON line of results, then waits for stdin to close before exiting, so the
//! test can read `/proc/<pid>/stat` and the kernel maps while the process is still alive.
//! Results are formatted into a buffer allocated before `go`, so that the measured phase does
//! not call malloc (which could move the program break or mmap behind the test's back).
use memtrace_tests::{map_anon, page_size};
use std::{
    fmt::Write as _,
    io::{BufRead, Write},
    ptr,
};

fn wait_for(line: &str) {
    let mut input = String::with_capacity(64);
    loop {
        input.clear();
        match std::io::stdin().lock().read_line(&mut input) {
            Ok(0) => return,
            Ok(_) if input.trim() == line => return,
            Ok(_) => {}
            Err(err) => panic!("reading stdin: {err}"),
        }
    }
}

fn ready() {
    println!("ready");
    std::io::stdout().flush().expect("flush");
}

fn finish(results: &str) {
    println!("{results}");
    std::io::stdout().flush().expect("flush");
    // Stay alive until the test is done looking at us.
    wait_for("\u{0}never");
}

/// Touch `pages` fresh anonymous pages: exactly one minor fault each.
fn touch_anon(pages: usize) {
    let mut out = String::with_capacity(256);
    let page = page_size();
    ready();
    wait_for("go");
    let base = map_anon(pages * page);
    for i in 0..pages {
        // SAFETY: inside the mapping.
        unsafe { base.add(i * page).write_volatile(1) };
    }
    let _ = write!(out, "{{\"pages\":{pages},\"addr\":{}}}", base as usize);
    finish(&out);
}

/// `threads` threads each touch `pages` fresh pages: all but the last exit (and are reaped,
/// moving their counts into the process's), the last stays until the process exits, so the
/// process ends with `exit_group` killing a thread that faulted.
fn threads(threads: usize, pages: usize) {
    let mut out = String::with_capacity(256);
    ready();
    wait_for("go");
    let touch = move || {
        let page = page_size();
        let base = map_anon(pages * page);
        for i in 0..pages {
            // SAFETY: inside the mapping.
            unsafe { base.add(i * page).write_volatile(1) };
        }
    };
    for _ in 1..threads {
        std::thread::spawn(touch).join().expect("thread");
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        touch();
        done_tx.send(()).expect("send");
        loop {
            std::thread::park();
        }
    });
    done_rx.recv().expect("last thread");
    let _ = write!(
        out,
        "{{\"threads\":{threads},\"pages\":{}}}",
        threads * pages
    );
    finish(&out);
}

/// Read a file through mmap after dropping it from the page cache: major faults.
fn major_file(path: &str) {
    let mut out = String::with_capacity(256);
    let file = std::fs::File::open(path).expect("open");
    let len = file.metadata().expect("stat").len() as usize;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    ready();
    wait_for("go");
    // SAFETY: valid fd; whole-file advice.
    let rc = unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "fadvise");
    // SAFETY: read-only shared mapping of an open file.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let base: *const u8 = addr.cast();
    let mut sum = 0u64;
    for i in (0..len).step_by(page_size()) {
        // SAFETY: inside the mapping.
        sum += u64::from(unsafe { base.add(i).read_volatile() });
    }
    let _ = write!(out, "{{\"len\":{len},\"sum\":{sum}}}");
    finish(&out);
}

/// One of each mmap-family call with known sizes, plus calls that fail.
fn syscalls() {
    let mut out = String::with_capacity(1024);
    let page = page_size();
    ready();
    wait_for("go");
    // mmap 3 MiB, then munmap its first 1 MiB.
    let map = map_anon(3 << 20);
    // SAFETY: unmapping part of our own mapping.
    assert_eq!(unsafe { libc::munmap(map.cast(), 1 << 20) }, 0);
    // brk: query, then grow by 256 KiB, then shrink by 64 KiB (raw syscalls: the libc wrappers cache).
    // SAFETY: brk syscalls on our own break.
    let brk0 = unsafe { libc::syscall(libc::SYS_brk, 0) } as usize;
    let brk1 = unsafe { libc::syscall(libc::SYS_brk, brk0 + (256 << 10)) } as usize;
    let brk2 = unsafe { libc::syscall(libc::SYS_brk, brk1 - (64 << 10)) } as usize;
    // mremap 2 MiB → 4 MiB.
    let old = map_anon(2 << 20);
    // SAFETY: remapping our own mapping.
    let new = unsafe { libc::mremap(old.cast(), 2 << 20, 4 << 20, libc::MREMAP_MAYMOVE) };
    assert_ne!(new, libc::MAP_FAILED);
    // Failures: mmap with no MAP_PRIVATE/MAP_SHARED (EINVAL), munmap of an unaligned address (EINVAL).
    // SAFETY: both calls fail without side effects.
    let bad = unsafe {
        libc::mmap(
            ptr::null_mut(),
            5 << 20,
            libc::PROT_READ,
            libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_eq!(bad, libc::MAP_FAILED);
    let bad_unmap = unsafe { libc::munmap(map.add(1).cast(), page) };
    assert_eq!(bad_unmap, -1);
    // madvise on the 2 MiB left of the first mapping: MADV_DONTNEED on 1 MiB, MADV_FREE on half a
    // MiB and one byte (the kernel rounds the length up to a page), then two that are not
    // counted: MADV_WILLNEED, and MADV_DONTNEED at an unaligned address (EINVAL).
    // SAFETY: advice on our own mapping; the failing call has no effect.
    unsafe {
        let rest = map.add(1 << 20);
        assert_eq!(libc::madvise(rest.cast(), 1 << 20, libc::MADV_DONTNEED), 0);
        let free = rest.add(1 << 20);
        assert_eq!(
            libc::madvise(free.cast(), (512 << 10) + 1, libc::MADV_FREE),
            0
        );
        assert_eq!(libc::madvise(rest.cast(), page, libc::MADV_WILLNEED), 0);
        assert_eq!(
            libc::madvise(rest.add(1).cast(), page, libc::MADV_DONTNEED),
            -1
        );
    }
    let _ = write!(
        out,
        "{{\"mmap_addr\":{},\"mmap_len\":{},\"munmap_addr\":{},\"munmap_len\":{},\"brk0\":{brk0},\"brk1\":{brk1},\"brk2\":{brk2},\"mremap_old\":{},\"mremap_new\":{},\"mremap_old_len\":{},\"mremap_new_len\":{},\"failed_mmap_len\":{},\"madvise_dontneed_len\":{},\"madvise_free_len\":{}}}",
        map as usize,
        3 << 20,
        map as usize,
        1 << 20,
        old as usize,
        new as usize,
        2 << 20,
        4 << 20,
        5 << 20,
        1 << 20,
        (512 << 10) + page,
    );
    finish(&out);
}

/// Allocate and touch memory until the OOM killer ends us.
fn hog() -> ! {
    ready();
    wait_for("go");
    let page = page_size();
    loop {
        let chunk = map_anon(1 << 20);
        for i in (0..(1 << 20)).step_by(page) {
            // SAFETY: inside the mapping.
            unsafe { chunk.add(i).write_volatile(1) };
        }
    }
}

/// Like `hog`, but `step_kib` at a time every `delay_ms`: slow enough for a 1 s sampler to watch
/// the RSS climb before the kill.
fn slow_hog(step_kib: usize, delay_ms: u64) -> ! {
    ready();
    wait_for("go");
    let page = page_size();
    loop {
        let chunk = map_anon(step_kib << 10);
        for i in (0..(step_kib << 10)).step_by(page) {
            // SAFETY: inside the mapping.
            unsafe { chunk.add(i).write_volatile(1) };
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    }
}

/// Fork `n` children named `idle-<i>` that each dirty a few pages, then sleep until the parent
/// is told to finish (they die with it: PR_SET_PDEATHSIG). Prints their pids.
fn idle(n: usize) {
    let mut out = String::with_capacity(n * 8 + 64);
    let mut pids = Vec::with_capacity(n);
    ready();
    wait_for("go");
    for i in 0..n {
        let name = format!("idle-{i}\0");
        // SAFETY: the child only touches memory, renames itself and sleeps.
        match unsafe { libc::fork() } {
            0 => unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::prctl(libc::PR_SET_NAME, name.as_ptr());
                let mem = map_anon(4 * page_size());
                for p in 0..4 {
                    mem.add(p * page_size()).write_volatile(1);
                }
                loop {
                    libc::pause();
                }
            },
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            pid => pids.push(pid),
        }
    }
    write_children(&mut out, &pids);
    println!("{out}");
    std::io::stdout().flush().expect("flush");
    wait_for("\u{0}never");
    for &pid in &pids {
        // SAFETY: our own children.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}

/// `{"children":[pid,…]}` into `out` (pre-allocated by the caller: no malloc while measured).
fn write_children(out: &mut String, pids: &[libc::pid_t]) {
    out.push_str("{\"children\":[");
    for (i, pid) in pids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{pid}");
    }
    out.push_str("]}");
}

/// Fork `n` children that each dirty a page and exit at once; prints their pids.
fn churn(n: usize) {
    let mut out = String::with_capacity(n * 8 + 64);
    let mut pids = Vec::with_capacity(n);
    let scratch = map_anon(page_size());
    ready();
    wait_for("go");
    for _ in 0..n {
        // SAFETY: the child only writes to memory and calls _exit.
        match unsafe { libc::fork() } {
            0 => unsafe {
                scratch.write_volatile(2); // a copy-on-write fault in the child
                libc::_exit(0);
            },
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            pid => pids.push(pid),
        }
    }
    for &pid in &pids {
        let mut status = 0;
        // SAFETY: reaping our own children.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    write_children(&mut out, &pids);
    finish(&out);
}

/// `n` mmap+munmap pairs of `len` bytes as fast as possible.
fn burst(n: usize, len: usize) {
    let mut out = String::with_capacity(128);
    ready();
    wait_for("go");
    for _ in 0..n {
        let addr = map_anon(len);
        // SAFETY: our own mapping.
        unsafe { libc::munmap(addr.cast(), len) };
    }
    let _ = write!(out, "{{\"mmaps\":{n}}}");
    finish(&out);
}

/// No protocol, for bursts of short processes: touch `pages` fresh pages, start a thread named
/// `short-helper` that touches as many, then end the leader thread alone (the process lives on
/// as its helper), and the helper ends the process: the last thread to exit is not the leader.
fn short(pages: usize) -> ! {
    let touch = move || {
        let page = page_size();
        let base = map_anon(pages * page);
        for i in 0..pages {
            // SAFETY: inside the mapping.
            unsafe { base.add(i * page).write_volatile(1) };
        }
    };
    touch();
    std::thread::Builder::new()
        .name("short-helper".to_owned())
        .spawn(move || {
            touch();
            std::thread::sleep(std::time::Duration::from_millis(2));
            // SAFETY: ends the process; nothing is left to clean up.
            unsafe { libc::_exit(0) }
        })
        .expect("spawn helper");
    // SAFETY: ends only this (the leader) thread; the helper ends the process.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    unreachable!("the leader thread exited")
}

/// No protocol, like a program starting up: `n` anonymous mappings of `first + i` pages each
/// (`i` = 0..n, lengths a test can recognise), then a short life (100 ms) and exit.
fn map_regions(n: usize, first: usize) {
    for i in 0..n {
        map_anon((first + i) * page_size());
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
}

/// No protocol: allocate and touch 1 MiB at a time at once, until the OOM killer ends it.
fn hog_now() -> ! {
    let page = page_size();
    loop {
        let chunk = map_anon(1 << 20);
        for i in (0..(1 << 20)).step_by(page) {
            // SAFETY: inside the mapping.
            unsafe { chunk.add(i).write_volatile(1) };
        }
    }
}

/// A process that is OOM-killed without being the trigger, and gone at once: forks a child that
/// makes itself the preferred victim (`oom_score_adj` 1000), touches `mib` MiB and sleeps; the
/// parent ignores SIGCHLD, so the kernel reaps the child the moment it dies and its /proc entry
/// vanishes with it (as a short-lived victim's does). Prints the child's pid, then waits for
/// stdin to close (the child dies with it if still alive: PR_SET_PDEATHSIG).
fn reaped_victim(mib: usize) {
    let mut out = String::with_capacity(64);
    ready();
    wait_for("go");
    let mut ready_pipe = [0; 2];
    // SAFETY: plain syscalls; the child only writes its score, touches memory, signals and sleeps.
    unsafe {
        assert_eq!(libc::pipe(ready_pipe.as_mut_ptr()), 0, "pipe");
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        match libc::fork() {
            0 => {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let adj = std::fs::write("/proc/self/oom_score_adj", "1000");
                assert!(adj.is_ok(), "oom_score_adj: {adj:?}");
                let page = page_size();
                let mem = map_anon(mib << 20);
                for i in (0..(mib << 20)).step_by(page) {
                    mem.add(i).write_volatile(1);
                }
                libc::write(ready_pipe[1], b"1".as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            pid => {
                let mut byte = 0u8;
                assert_eq!(
                    libc::read(ready_pipe[0], (&raw mut byte).cast(), 1),
                    1,
                    "the victim child did not get ready"
                );
                let _ = write!(out, "{{\"victim\":{pid}}}");
            }
        }
    }
    finish(&out);
}

/// Read `path` with read(2) over and over, never exiting: a file larger than the memory its
/// cgroup can get keeps refilling the page cache, so every pass allocates (and, at a cgroup
/// limit, stalls in reclaim).
fn reread(path: &str) -> ! {
    use std::io::{Read as _, Seek as _};
    let mut file = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    ready();
    wait_for("go");
    loop {
        if file.read(&mut buf).expect("read") == 0 {
            file.rewind().expect("rewind");
        }
    }
}

/// Rewrite `path` in place, 1 MiB at a time, over and over, never syncing: its page cache is
/// dirty, so reclaim in a memory cgroup at its limit has to wait for writeback (cgroup v1 has no
/// per-cgroup dirty throttling): long reclaim stalls, whatever the CPU load.
fn rewrite(path: &str) -> ! {
    use std::io::{Seek as _, SeekFrom, Write as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    let len = file.metadata().expect("stat").len();
    let chunk = vec![0x5au8; 1 << 20];
    ready();
    wait_for("go");
    let mut at = 0;
    loop {
        if at + chunk.len() as u64 > len {
            at = 0;
            file.seek(SeekFrom::Start(0)).expect("rewind");
        }
        file.write_all(&chunk).expect("write");
        at += chunk.len() as u64;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> usize {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("argument {i} missing or not a number: {args:?}"))
    };
    match args.get(1).map(String::as_str) {
        Some("touch-anon") => touch_anon(arg(2)),
        Some("threads") => threads(arg(2), arg(3)),
        Some("major-file") => major_file(args.get(2).expect("path")),
        Some("syscalls") => syscalls(),
        Some("hog") => hog(),
        Some("slow-hog") => slow_hog(arg(2), arg(3) as u64),
        Some("idle") => idle(arg(2)),
        Some("churn") => churn(arg(2)),
        Some("burst") => burst(arg(2), arg(3)),
        Some("short") => short(arg(2)),
        Some("hog-now") => hog_now(),
        Some("reaped-victim") => reaped_victim(arg(2)),
        Some("map-regions") => map_regions(arg(2), arg(3)),
        Some("reread") => reread(args.get(2).expect("path")),
        Some("rewrite") => rewrite(args.get(2).expect("path")),
        other => {
            eprintln!(
                "usage: memtrace-workload touch-anon N | major-file PATH | syscalls | hog | slow-hog STEP_KIB DELAY_MS | idle N | churn N | burst N LEN | short PAGES | hog-now | map-regions N FIRST_PAGES | reread PATH (got {other:?})"
            );
            std::process::exit(2);
        }
    }
}
