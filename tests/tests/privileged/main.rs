//! Privileged integration tests: memtrace's real eBPF programs in the running kernel, checked
//! against the kernel's own accounting. One test binary (aya's convention) with a module per
//! feature; run as root by `cargo xtask test`. Without root every test fails (never skips).
#![expect(
    clippy::await_holding_lock,
    reason = "SERIAL orders whole tests, each on its own runtime: holding it across awaits is the point"
)]

mod cgroups;
mod cli;
mod cluster_e2e;
mod container;
mod daemon;
mod daemon_limits;
mod faults;
mod fleet;
mod grafana;
mod growth;
mod kubernetes;
mod lifecycle;
mod mmap;
mod oom;
mod persist;
mod privileges;
mod profile_alloc;
mod profile_sites;
mod prometheus;
mod record;
mod ring;
mod rss;
mod scope;
mod support;
mod systemd;
mod tasks;
mod top;
mod trace;
mod web_config;
mod workloads;
