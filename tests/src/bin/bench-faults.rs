//! Fault-path benchmark workload for `cargo xtask bench` (benchmarks 1 and 3).
//!
//! Maps `--mib` MiB (default 128) of anonymous private memory, writes one byte per page (one
//! minor fault each), unmaps it; `--iters` times (default 20: 655,360 faults with 4 KiB pages).
//! Only the touching loops are timed (`Instant`, plus the thread's CPU clock, which does not
//! count time spent preempted by other processes). Prints one JSON line:
//!
//! `{"faults":655360,"expected_faults":655360,"wall_ns":…,"cpu_ns":…,"ns_per_fault":…,"cpu_ns_per_fault":…}`
//!
//! `faults` is the kernel's own count (`getrusage` minor faults over the touching loops).
//!
//! With `--read` it reads one byte per page instead: each fault maps the shared zero page, with
//! no page to allocate and clear, so faults come about three times faster (benchmark 3 uses it
//! to produce fault events faster than one core can write-fault).
//!
//! Usage: `bench-faults [--iters K] [--mib M] [--read]`
use memtrace_tests::{map_anon, page_size, thread_cpu_ns};
use std::time::Instant;

fn minor_faults() -> u64 {
    // SAFETY: all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_minflt as u64
}

fn parse_args() -> (usize, usize, bool) {
    let mut iters = 20;
    let mut mib = 128;
    let mut read = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{name} needs a positive integer")))
        };
        match arg.as_str() {
            "--iters" => iters = value("--iters"),
            "--mib" => mib = value("--mib"),
            "--read" => read = true,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if iters == 0 || mib == 0 {
        usage("--iters and --mib must be positive");
    }
    (iters, mib, read)
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("bench-faults: {problem}");
    }
    eprintln!("usage: bench-faults [--iters K (20)] [--mib M (128)] [--read]");
    std::process::exit(if problem.is_empty() { 0 } else { 2 });
}

fn main() {
    let (iters, mib, read) = parse_args();
    let page = page_size();
    let len = mib << 20;
    let pages = len / page;
    let mut wall_ns = 0u64;
    let mut cpu_ns = 0u64;
    let mut faults = 0u64;
    for _ in 0..iters {
        let addr: *mut libc::c_void = map_anon(len).cast();
        // One fault per 4 KiB page, whatever the THP setting.
        // SAFETY: advice on our own mapping.
        unsafe { libc::madvise(addr, len, libc::MADV_NOHUGEPAGE) };
        let base = addr.cast::<u8>();

        let faults_before = minor_faults();
        let cpu_before = thread_cpu_ns();
        let started = Instant::now();
        if read {
            let mut sum = 0u8;
            for i in 0..pages {
                // SAFETY: inside the mapping.
                sum = sum.wrapping_add(unsafe { base.add(i * page).read_volatile() });
            }
            std::hint::black_box(sum);
        } else {
            for i in 0..pages {
                // SAFETY: inside the mapping.
                unsafe { base.add(i * page).write_volatile(1) };
            }
        }
        wall_ns += started.elapsed().as_nanos() as u64;
        cpu_ns += thread_cpu_ns() - cpu_before;
        faults += minor_faults() - faults_before;

        // SAFETY: unmapping what we mapped.
        let rc = unsafe { libc::munmap(addr, len) };
        assert_eq!(rc, 0, "munmap: {}", std::io::Error::last_os_error());
    }
    let expected = (pages * iters) as u64;
    let n = faults.max(1) as f64;
    println!(
        "{{\"faults\":{faults},\"expected_faults\":{expected},\"wall_ns\":{wall_ns},\"cpu_ns\":{cpu_ns},\"ns_per_fault\":{:.2},\"cpu_ns_per_fault\":{:.2}}}",
        wall_ns as f64 / n,
        cpu_ns as f64 / n
    );
}
