//! What `GET /api/v1/workloads` is built from besides the snapshot: the workload identifier,
//! the per-instance history (a point recorded once per `--history-step`, from the snapshot of
//! that tick), the node's name, the cgroup root and the pins.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memtrace_api::Snapshot;
use memtrace_api::workloads::WorkloadsResponse;

use super::Settings;
use crate::cgroup::CgroupFs;
use crate::model::instance_history::InstanceHistories;
use crate::model::workloads::{self, NodeContext};
use crate::workload::Identifier;

/// Pins (`--pin`): whether a workload key is always listed.
pub type Pins = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// The daemon's side of `GET /api/v1/workloads`.
pub struct WorkloadsSource {
    identifier: Identifier,
    histories: InstanceHistories,
    /// `--node-name`; `None`: the hostname.
    node_name: Option<String>,
    /// `--cgroup-root`, and the reader of its memory files.
    cgroup_root: Option<String>,
    cgroups: CgroupFs,
    pins: Pins,
}

impl std::fmt::Debug for WorkloadsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadsSource")
            .field("identifier", &self.identifier)
            .field("instances", &self.histories.len())
            .field("node_name", &self.node_name)
            .field("cgroup_root", &self.cgroup_root)
            .finish_non_exhaustive()
    }
}

impl WorkloadsSource {
    /// With the history resolution of `settings`, no pins, no cgroup root, the hostname as the
    /// node's name and the identifier without Kubernetes metadata.
    pub fn new(settings: &Settings) -> Self {
        Self {
            identifier: Identifier::default(),
            histories: InstanceHistories::new(settings.history_step, settings.history_points),
            node_name: None,
            cgroup_root: None,
            cgroups: CgroupFs::new(&settings.host.cgroup),
            pins: Box::new(|_| false),
        }
    }

    #[must_use]
    pub fn with_identifier(mut self, identifier: Identifier) -> Self {
        self.identifier = identifier;
        self
    }

    #[must_use]
    pub fn with_node_name(mut self, name: String) -> Self {
        self.node_name = Some(name);
        self
    }

    /// The model is limited to this cgroup subtree; its limit stands for the node's RAM.
    #[must_use]
    pub fn with_cgroup_root(mut self, root: String) -> Self {
        self.cgroup_root = Some(root);
        self
    }

    #[must_use]
    pub fn with_pins(mut self, pins: Pins) -> Self {
        self.pins = pins;
        self
    }

    /// Whether a history point is due now.
    pub fn due(&self, wall: SystemTime) -> bool {
        self.histories.due(unix_ms(wall))
    }

    /// Records a history point from `snapshot` (taken at this tick).
    pub fn record(&mut self, snapshot: &Snapshot, wall: SystemTime) {
        let groups = workloads::group(snapshot, &self.identifier);
        self.histories
            .record(unix_ms(wall), &workloads::readings(&groups));
    }

    /// The response with all the history kept (`ready` is filled in by the handler, which
    /// serves the readiness).
    pub fn build(&self, snapshot: &Snapshot) -> WorkloadsResponse {
        let root_memory = self
            .cgroup_root
            .as_deref()
            .and_then(|root| self.cgroups.memory(root).ok());
        let ctx = NodeContext {
            name: self.node_name.as_deref().unwrap_or(&snapshot.node.hostname),
            memtrace_version: env!("CARGO_PKG_VERSION"),
            ready: false,
            cgroup_root: self.cgroup_root.as_deref(),
            root_memory: root_memory.as_ref(),
            pinned: &*self.pins,
        };
        workloads::summarize(
            snapshot,
            &self.identifier,
            &self.histories,
            &ctx,
            Duration::MAX,
        )
    }
}

fn unix_ms(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
