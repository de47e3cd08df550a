//! memtrace: eBPF kernel memory tracer. The library holds everything; `main.rs` is the CLI.
//!
//! Modules, one concern each: `probes` (load/attach the kernel programs), `events` (decode ring
//! records), `pipeline` (rings → bounded channel), `tracefs`/`procfs`/`cgroup`/`node` (readers of
//! kernel files, each rooted at a path so tests use fixture trees; `host` says where those
//! paths are), `psi` (the one pressure-stall format), `preflight` (privileges and kernel
//! facilities), `daemon` (the model's owner: sampling, events, views for the HTTP endpoint),
//! `trace` (the live trace), `kubernetes` (pod metadata and peer discovery from the API server), `cli` (one file per verb: argument parsing).
pub mod cgroup;
pub mod cgroup_ids;
pub mod cli;
pub mod cluster;
pub mod counters;
pub mod daemon;
pub mod escape;
pub mod events;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod kubernetes;
pub mod logging;
pub mod model;
pub mod node;
pub mod pipeline;
pub mod preflight;
pub mod probes;
pub mod procfs;
pub mod profile;
pub mod psi;
pub mod record;
pub mod top;
pub mod trace;
pub mod tracefs;
pub mod units;
pub mod web;
pub mod workload;

/// Maps keyed by pid, touched for every process every tick: a fast non-cryptographic hash (pids
/// are small kernel-assigned integers, not keys an attacker picks to collide).
pub type PidMap<V> = std::collections::HashMap<u32, V, foldhash::fast::RandomState>;
