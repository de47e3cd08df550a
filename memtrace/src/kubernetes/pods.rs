//! The pods of this node by uid, kept by a watch of their metadata
//! (`GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`, `PartialObjectMetadata`: no specs or
//! statuses cross the wire or stay in memory).
//!
//! The watch runs on its own task (kube's watcher: list, then watch from the list's
//! resourceVersion, relist on 410 Gone, exponential backoff on errors); lookups read a map behind
//! a lock held only to copy one entry, so sampling never waits on the API server.
use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PartialObjectMeta},
    runtime::{WatchStreamExt as _, watcher},
};

use super::{ApiServer, KubernetesError, Request};
use crate::workload::{Controller, PodLookup, PodMeta};

/// Pods kept at most. The kubelet runs 110 by default and rarely more than a few hundred; a
/// watch that returned more (a wrong selector) must not grow the daemon. Pods beyond are not
/// kept (their workloads fall back to the pod uid) and counted.
pub const MAX_PODS: usize = 4096;

/// The field selector of node `node`'s pods.
pub fn node_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// What the watch is doing, for logs and metrics.
#[derive(Debug, Default)]
pub struct WatchHealth {
    /// A full list, or a change after it, arrived since the last error.
    synced: AtomicBool,
    /// Errors of the watch (each followed by a retry with backoff).
    errors: AtomicU64,
    /// Pods not kept because [`MAX_PODS`] were.
    dropped: AtomicU64,
}

impl WatchHealth {
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// This node's pods by uid, kept current by a watch (see the module doc).
#[derive(Debug)]
pub struct PodWatch {
    node: String,
    pods: RwLock<HashMap<String, PodMeta>>,
    health: WatchHealth,
}

impl PodLookup for PodWatch {
    fn pod(&self, uid: &str) -> Option<PodMeta> {
        self.read().get(uid).cloned()
    }
}

impl PodWatch {
    /// Starts watching node `node`'s pods on a task of the current runtime; the task ends at
    /// the first event or retry after the last `Arc` is dropped.
    pub fn spawn(server: &ApiServer, node: &str) -> Arc<Self> {
        let watch = Arc::new(Self {
            node: node.to_owned(),
            pods: RwLock::new(HashMap::new()),
            health: WatchHealth::default(),
        });
        let weak = Arc::downgrade(&watch);
        let api: Api<PartialObjectMeta<Pod>> = Api::all(server.client.clone());
        let config = watcher::Config::default().fields(&node_selector(node));
        let mut events = watcher(api, config).default_backoff().boxed();
        tokio::spawn(async move {
            // A new list replaces the map only once complete: lookups meanwhile see the old one.
            let mut relist: Option<HashMap<String, PodMeta>> = None;
            while let Some(event) = events.next().await {
                let Some(watch) = weak.upgrade() else { break };
                match event {
                    Ok(event) => watch.apply(event, &mut relist),
                    Err(err) => watch.failed(&err),
                }
            }
        });
        watch
    }

    /// The node whose pods are watched.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn health(&self) -> &WatchHealth {
        &self.health
    }

    /// Pods known now.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, PodMeta>> {
        // A panic while holding the lock leaves a map that is still whole (inserts and removes
        // of owned values): keep serving it.
        self.pods
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, PodMeta>> {
        self.pods
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn apply(
        &self,
        event: watcher::Event<PartialObjectMeta<Pod>>,
        relist: &mut Option<HashMap<String, PodMeta>>,
    ) {
        match event {
            watcher::Event::Init => *relist = Some(HashMap::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(pods), Some((uid, meta))) = (relist.as_mut(), pod_meta(&pod.metadata))
                {
                    self.insert_bounded(pods, uid, meta);
                }
            }
            watcher::Event::InitDone => {
                if let Some(pods) = relist.take() {
                    let count = pods.len();
                    *self.write() = pods;
                    if !self.health.synced.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            "Kubernetes pod watch of node {}: in sync, {count} pods",
                            self.node
                        );
                    }
                }
            }
            watcher::Event::Apply(pod) => {
                if let Some((uid, meta)) = pod_meta(&pod.metadata) {
                    self.insert_bounded(&mut self.write(), uid, meta);
                }
                self.recovered();
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    self.write().remove(uid);
                }
                self.recovered();
            }
        }
    }

    /// A change arrived: a watch resumed after an error (without a relist) works again.
    fn recovered(&self) {
        if !self.health.synced.swap(true, Ordering::Relaxed) {
            tracing::info!("Kubernetes pod watch of node {}: working again", self.node);
        }
    }

    fn insert_bounded(&self, pods: &mut HashMap<String, PodMeta>, uid: String, meta: PodMeta) {
        if pods.len() >= MAX_PODS && !pods.contains_key(&uid) {
            if self.health.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    "Kubernetes pod watch of node {}: more than {MAX_PODS} pods; the rest are \
                     keyed by uid",
                    self.node
                );
            }
            return;
        }
        pods.insert(uid, meta);
    }

    /// A failed list or watch: kube retries it with backoff; say so when it starts failing,
    /// and once in a while after (every error would be one log line per backoff step).
    fn failed(&self, err: &watcher::Error) {
        let errors = self.health.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let was_synced = self.health.synced.swap(false, Ordering::Relaxed);
        if was_synced || errors == 1 || errors.is_power_of_two() {
            tracing::warn!(
                "Kubernetes pod watch of node {} failing ({errors} errors so far; retrying with \
                 backoff, known pods kept): {}",
                self.node,
                super::error_chain(err)
            );
        }
    }
}

/// The uid and what the workload key needs of a pod's metadata; `None` without a uid.
fn pod_meta(meta: &ObjectMeta) -> Option<(String, PodMeta)> {
    let uid = meta.uid.clone()?;
    let controller = meta.owner_references.as_ref().and_then(|owners| {
        owners
            .iter()
            .find(|owner| owner.controller == Some(true))
            .map(|owner| Controller {
                kind: owner.kind.clone(),
                name: owner.name.clone(),
            })
    });
    Some((
        uid,
        PodMeta {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            controller,
        },
    ))
}

/// One list of node `node`'s pods (one item at most): that the API server answers and the
/// service account may list pods. The number of pods of the node if the server counts them
/// (`remainingItemCount`), else the items returned.
pub async fn check_access(
    server: &ApiServer,
    node: &str,
    timeout: Duration,
) -> Result<usize, KubernetesError> {
    let request = Request {
        url: server.url.clone(),
        verb: "list",
        resource: "pods",
        group: "",
        scope: format!("cluster-wide (field selector {})", node_selector(node)),
    };
    let api: Api<Pod> = Api::all(server.client.clone());
    let params = ListParams::default().fields(&node_selector(node)).limit(1);
    let list = tokio::time::timeout(timeout, api.list_metadata(&params))
        .await
        .map_err(|_| request.timeout(timeout))?
        .map_err(|err| request.error(err))?;
    let remaining = list
        .metadata
        .remaining_item_count
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
    Ok(list.items.len() + remaining)
}
