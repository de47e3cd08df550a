//! memtrace's kernel programs, one module per probe family (`faults`, `mmap`, `rss`, `reclaim`,
//! `oom`, `lifecycle`, `tasks`) over the shared `maps` and `helpers`.
//!
//! Hot signals (page faults, RSS updates) only bump counters in `PROC_STATS`; discrete events
//! (mmap-family calls over a size threshold, reclaim stalls, OOM kills, exec, exit) go through the
//! `EVENTS` ring buffer, and sampled per-fault events through `FAULT_EVENTS` only while a live
//! trace asks for them. Every failed ring reserve and every failed map insert is counted in
//! `LOSSES`, so nothing is lost silently.
//!
//! Tracepoint record layouts are not hard-coded: the loader parses each tracepoint's tracefs
//! `format` and passes the field offsets in the read-only global `OFFSETS`. `CONFIG` is read-only
//! too, so the verifier sees constants and prunes disabled features (e.g. the fault stream)
//! from the hot path entirely.
//!
//! Userspace attaches programs by their function names and opens maps by their static names:
//! both are the contract with `memtrace/src/probes` and must not change.
#![no_std]
#![no_main]
// `AtomicU64::fetch_add` is not offered for the BPF target (it lacks compare-and-swap), but the
// instruction we need, BPF_ATOMIC|BPF_ADD, is exactly what the intrinsic lowers to. The eBPF crate is
// built with RUSTC_BOOTSTRAP=1 already (for `-Z build-std`).
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "atomic_xadd: see above")]
#![warn(clippy::pedantic)]
#![expect(
    clippy::inline_always,
    reason = "BPF: a call is a BPF-to-BPF call the verifier walks separately and that cannot \
              pass map-value or context pointers as freely; helpers are inlined into each program"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand each program its context by value"
)]

mod faults;
mod helpers;
mod lifecycle;
mod maps;
mod mmap;
mod oom;
mod reclaim;
mod rss;
mod tasks;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
