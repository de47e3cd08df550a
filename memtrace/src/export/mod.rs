//! Exporting the model: Prometheus metrics and the JSON API.
//!
//! `prometheus` renders one snapshot as a bounded-cardinality text exposition; `http` serves it,
//! the JSON snapshot and OOM history, and health/readiness; `workloads` the per-workload summary.
pub mod http;
pub mod prometheus;
pub mod workloads;

#[cfg(test)]
mod testutil;

pub use self::http::{AppState, router, serve};
pub use self::prometheus::{BuildInfo, ExportConfig, render};
