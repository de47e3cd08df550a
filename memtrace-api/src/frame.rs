//! One node at one instant: what `memtrace top` shows and `memtrace record` stores.
//!
//! A frame bundles the two views a daemon serves of the same model state, so that a client that
//! shows or keeps them (a live view, a recording, a replay, a post-mortem `memtrace cluster` over
//! recordings) has per-process detail ([`Snapshot`]) and the per-workload summary with its
//! instance histories ([`WorkloadsResponse`]) of one moment, not of two.
//!
//! Same compatibility rule as the snapshot (see the crate documentation).
use serde::{Deserialize, Serialize};

use crate::{Snapshot, workloads::WorkloadsResponse};

/// One node's state at `snapshot.timestamp_unix_ms`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub snapshot: Snapshot,
    /// Absent where the source serves no workloads view (a daemon older than `cluster`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workloads: Option<WorkloadsResponse>,
}

impl Frame {
    /// When the frame was taken (the snapshot's time).
    pub fn timestamp_unix_ms(&self) -> u64 {
        self.snapshot.timestamp_unix_ms
    }

    /// The name the fleet knows the node by (`--node-name`), else its hostname.
    pub fn node_name(&self) -> &str {
        self.snapshot
            .node
            .name
            .as_deref()
            .unwrap_or(&self.snapshot.node.hostname)
    }
}
