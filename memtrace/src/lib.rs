//! memtrace: eBPF kernel memory tracer. The library holds everything; `main.rs` is the CLI.
//!
//! Modules, one concern each: `probes` (load/attach the kernel programs), `events` (decode ring
//! records), `pipeline` (rings → bounded channel), `tracefs`/`procfs`/`cgroup`/`node` (readers of
//! kernel files, each rooted at a path so tests use fixture trees; `host` says where those
//! paths are), `preflight` (privileges and
//! kernel facilities), `trace` (the live trace), `cli` (one file per verb).
pub mod cgroup;
pub mod cli;
pub mod events;
pub mod export;
pub mod host;
pub mod logging;
pub mod model;
pub mod node;
pub mod pipeline;
pub mod preflight;
pub mod probes;
pub mod procfs;
pub mod trace;
pub mod tracefs;
pub mod units;

/// Maps keyed by pid, touched for every process every tick: a fast non-cryptographic hash (pids
/// are small kernel-assigned integers, not keys an attacker picks to collide).
pub type PidMap<V> = std::collections::HashMap<u32, V, foldhash::fast::RandomState>;
