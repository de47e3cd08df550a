//! `memtrace cluster`: a stateless fan-out over the daemons' `GET /api/v1/workloads`, the merged
//! views and the diagnostics.
pub mod diagnose;
