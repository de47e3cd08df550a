//! mmap-churn benchmark workload for `cargo xtask bench` (benchmark 2), plus an idle-population
//! mode for the daemon-footprint and scrape benchmarks (4 and 5).
//!
//! Default mode: `--iters N` times (default 200,000), mmap 64 KiB anonymous, write one byte to
//! its first page, munmap. The loop is timed (`Instant`, plus the thread's CPU clock). Prints
//! one JSON line: `{"iterations":N,"wall_ns":…,"cpu_ns":…,"ns_per_iter":…,"cpu_ns_per_iter":…}`.
//!
//! `--idle N [--pages P]`: fork N children that each dirty P pages (default 4) of a fresh mapping
//! and then sleep in `pause()`. Prints `ready N` once every child has touched its pages, then
//! waits for stdin to close (or a line), kills the children and reaps them. Children die with
//! the parent (PR_SET_PDEATHSIG), so a SIGKILL of the parent cleans up too.
use memtrace_tests::{map_anon, page_size, thread_cpu_ns};
use std::{
    io::{BufRead as _, Write as _},
    ptr,
    time::Instant,
};

const CHUNK: usize = 64 << 10;

enum Mode {
    Churn { iters: usize },
    Idle { children: usize, pages: usize },
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("bench-mmap: {problem}");
    }
    eprintln!("usage: bench-mmap [--iters N (200000)] | --idle N [--pages P (4)]");
    std::process::exit(if problem.is_empty() { 0 } else { 2 });
}

fn parse_args() -> Mode {
    let mut iters = 200_000;
    let mut idle = None;
    let mut pages = 4;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .unwrap_or_else(|| usage(&format!("{name} needs a positive integer")))
        };
        match arg.as_str() {
            "--iters" => iters = value("--iters"),
            "--idle" => idle = Some(value("--idle")),
            "--pages" => pages = value("--pages"),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    match idle {
        Some(children) => Mode::Idle { children, pages },
        None => Mode::Churn { iters },
    }
}

fn churn(iters: usize) {
    let cpu_before = thread_cpu_ns();
    let started = Instant::now();
    for _ in 0..iters {
        let base = map_anon(CHUNK);
        assert!(!base.is_null(), "mmap: {}", std::io::Error::last_os_error());
        // SAFETY: first byte of the mapping.
        unsafe { base.write_volatile(1) };
        // SAFETY: unmapping what we mapped.
        let rc = unsafe { libc::munmap(base.cast(), CHUNK) };
        assert_eq!(rc, 0, "munmap: {}", std::io::Error::last_os_error());
    }
    let wall_ns = started.elapsed().as_nanos() as u64;
    let cpu_ns = thread_cpu_ns() - cpu_before;
    let n = iters as f64;
    println!(
        "{{\"iterations\":{iters},\"wall_ns\":{wall_ns},\"cpu_ns\":{cpu_ns},\"ns_per_iter\":{:.2},\"cpu_ns_per_iter\":{:.2}}}",
        wall_ns as f64 / n,
        cpu_ns as f64 / n
    );
}

/// The child's whole life: async-signal-safe calls only (we are a fork of the parent).
fn idle_child(parent: libc::pid_t, ready_fd: libc::c_int, pages: usize) -> ! {
    // SAFETY (block): plain syscalls on our own process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        for fd in 0..3 {
            libc::close(fd);
        }
        let page = page_size();
        let base = map_anon(pages * page);
        if !base.is_null() {
            for i in 0..pages {
                base.add(i * page).write_volatile(1);
            }
        }
        libc::write(ready_fd, [1u8].as_ptr().cast(), 1);
        libc::close(ready_fd);
        loop {
            libc::pause();
        }
    }
}

fn idle(children: usize, pages: usize) {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: valid pointer to two ints.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe: {}", std::io::Error::last_os_error());
    let (read_fd, write_fd) = (fds[0], fds[1]);
    // SAFETY: no preconditions.
    let parent = unsafe { libc::getpid() };
    let mut pids: Vec<libc::pid_t> = Vec::with_capacity(children);
    let mut failure = None;
    for _ in 0..children {
        // SAFETY: single-threaded process; the child only makes async-signal-safe calls.
        match unsafe { libc::fork() } {
            -1 => {
                failure = Some(std::io::Error::last_os_error());
                break;
            }
            0 => {
                // SAFETY: our copy of the read end.
                unsafe { libc::close(read_fd) };
                idle_child(parent, write_fd, pages)
            }
            pid => pids.push(pid),
        }
    }
    // SAFETY: our own fd; children keep their copies until they have written.
    unsafe { libc::close(write_fd) };
    let mut seen = 0;
    let mut buf = [0u8; 4096];
    while seen < pids.len() {
        // SAFETY: valid buffer.
        let n = unsafe { libc::read(read_fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break; // every child gone or errored: report what we have
        }
        seen += n as usize;
    }
    if let Some(err) = &failure {
        eprintln!(
            "bench-mmap: fork failed after {} children: {err}",
            pids.len()
        );
    }
    println!("ready {seen}");
    let _ = std::io::stdout().flush();
    // Hold them until the harness closes our stdin (or writes a line).
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    for &pid in &pids {
        // SAFETY: our own children.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in &pids {
        // SAFETY: reaping our own children.
        unsafe { libc::waitpid(pid, ptr::null_mut(), 0) };
    }
    if failure.is_some() {
        std::process::exit(1);
    }
}

fn main() {
    match parse_args() {
        Mode::Churn { iters } => churn(iters),
        Mode::Idle { children, pages } => idle(children, pages),
    }
}
