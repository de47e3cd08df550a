//! `memtrace-sites`: where processes grow memory, counted in the kernel by stack, for
//! `memtrace profile -p PID | --cgroup PATH | --all`.
//!
//! Two kinds of hooks add to one hash of sites (`SITES`, key `memtrace_common::sites::SiteKey`):
//! - `faults`: a perf software event `PAGE_FAULTS` on every CPU with a sample period: its
//!   program runs once per period of the CPU's faults, for whichever task faulted;
//! - `growth`: the exit of mmap, brk and mremap (and brk's entry, for the old break), weighted by
//!   the bytes the call added to the address space.
//!
//! Nothing goes through a ring buffer: userspace reads the counts and the stack map when it
//! reports. Every lost stack and every full map is counted in `SITES_STATS`.
#![no_std]
#![no_main]
// See `src/main.rs`: the atomic add the verifier accepts is the `atomic_xadd` intrinsic.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "atomic_xadd: see above")]
#![warn(clippy::pedantic)]
#![expect(
    clippy::inline_always,
    reason = "BPF: helpers are inlined into each program (see src/main.rs)"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand each program its context by value"
)]

mod faults;
mod growth;
mod site;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
