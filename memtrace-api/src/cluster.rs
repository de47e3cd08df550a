//! What `memtrace cluster` prints with `-o json` and `memtrace cluster serve` serves: the merged
//! views of a fleet's daemons and the diagnostics' findings.
//!
//! Every view carries its [`Coverage`]: which nodes answered and why the others did not, so a
//! partial result is always stated, never silent.
use serde::{Deserialize, Serialize};

/// Version of the cluster views' schema.
pub const CLUSTER_SCHEMA_VERSION: u32 = 1;

/// Which of the asked nodes answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Targets asked.
    pub asked: u32,
    /// Targets that answered with a summary memtrace could read.
    pub answered: u32,
    /// One entry per target that did not, in target order.
    pub failures: Vec<NodeFailure>,
}

/// A target that did not answer usefully, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFailure {
    /// The target as given (`host:port` or URL).
    pub target: String,
    /// The node's name, when it is known (from an earlier answer or the discovery).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub node: Option<String>,
    /// One line: what went wrong, e.g. `connection refused`, `timed out after 2.0 s`,
    /// `unsupported schema_version 7 (this memtrace reads 1)`.
    pub error: String,
    /// How long the attempt took before it was given up.
    pub elapsed_seconds: f64,
}
