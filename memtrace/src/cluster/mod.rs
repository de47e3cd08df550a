//! `memtrace cluster`: a stateless fan-out over the daemons' `GET /api/v1/workloads`, the merged
//! views and the diagnostics.
//!
//! `targets` says whom to ask, `fanout` asks them (one [`fanout::Round`]: answers and a
//! [`memtrace_api::cluster::Coverage`] that states every node that did not answer), `views`
//! merges a round into the views of `memtrace_api::cluster` (pure functions), `render` prints
//! them, `relay` serves them continuously (`cluster serve`); `recordings` makes a round of
//! recordings instead of daemons (`--recordings`, a post-mortem).
pub mod diagnose;
pub mod fanout;
pub mod recordings;
pub mod relay;
pub mod render;
pub mod targets;
pub mod views;

#[cfg(test)]
mod tests;
