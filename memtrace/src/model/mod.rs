//! The daemon's model of memory pressure (per process, per cgroup, per node).
pub mod snapshot;
