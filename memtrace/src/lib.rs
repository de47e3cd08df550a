//! memtrace: eBPF kernel memory tracer (library half; the binary is a thin CLI over it).
pub mod cgroup;
pub mod procfs;
pub mod tracefs;
pub mod node;
