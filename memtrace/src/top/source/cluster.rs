//! The fleet (`--nodes …`, the targets and discovery of `memtrace cluster`): every node's
//! workloads summary through the fan-out at each refresh, and the snapshot of the one node
//! drilled into.
use std::time::Duration;

use memtrace_api::client::SNAPSHOT_PATH;
use memtrace_api::cluster::NodeFailure;
use memtrace_api::frame::Frame;
use memtrace_api::workloads::WorkloadsResponse;
use memtrace_api::{NodeIdentityView, NodeMemoryView, Snapshot};

use super::{Fleet, NodeFrame};
use crate::cluster::fanout::{FanoutArgs, describe_request_error, fan_out};
use crate::cluster::targets::{Target, TargetArgs, TargetError, discover};
use crate::web::client::{ClientError, ClientOptions};

pub struct ClusterSource {
    targets: Vec<Target>,
    fanout: FanoutArgs,
    options: ClientOptions,
    client: reqwest::Client,
    /// The target drilled into (its spec).
    focus: Option<String>,
}

/// Why the fleet cannot be asked at all.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Targets(#[from] TargetError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl ClusterSource {
    /// The targets of `args` (discovered now), asked with `fanout`'s bounds.
    pub async fn new(
        args: &TargetArgs,
        mut fanout: FanoutArgs,
        options: ClientOptions,
    ) -> Result<Self, ClusterError> {
        let mut targets = discover(args, fanout.timeout).await?;
        if options.scheme() == "https" {
            targets.iter_mut().for_each(Target::prefer_https);
        }
        // The detail pane shows the last hour of each instance.
        fanout.history = fanout.history.min(Duration::from_secs(3600));
        Ok(Self {
            client: options.build(fanout.timeout)?,
            targets,
            fanout,
            options,
            focus: None,
        })
    }

    pub fn focus(&mut self, target: Option<String>) {
        self.focus = target;
    }

    /// One round over the fleet, and the snapshot of the node drilled into. `refocused`: the
    /// focus just changed, so the history starts anew.
    pub async fn fetch(&mut self, refocused: bool) -> Fleet {
        let round = fan_out(&self.client, &self.targets, &self.fanout, None).await;
        let mut fleet = Fleet {
            failures: round.coverage.failures,
            restart: refocused.then(Vec::new),
            ..Fleet::default()
        };
        for answer in round.answers {
            let detailed = self.focus.as_deref() == Some(answer.target.as_str());
            let mut node = NodeFrame {
                frame: summary_frame(answer.summary),
                target: answer.target,
                detailed: false,
            };
            if detailed {
                match self.snapshot(&node.target).await {
                    Ok(snapshot) => {
                        node.frame.snapshot = snapshot;
                        node.detailed = true;
                    }
                    Err(error) => fleet.failures.push(NodeFailure {
                        target: node.target.clone(),
                        node: Some(node.frame.node_name().to_owned()),
                        error,
                        elapsed_seconds: 0.0,
                    }),
                }
            }
            fleet.nodes.push(node);
        }
        fleet
    }

    async fn snapshot(&self, spec: &str) -> Result<Snapshot, String> {
        let Some(target) = self.targets.iter().find(|target| target.spec == spec) else {
            return Err("no longer a target".to_owned());
        };
        let url = target
            .base
            .join(SNAPSHOT_PATH.trim_start_matches('/'))
            .map_err(|err| err.to_string())?;
        let response = self.client.get(url.clone()).send().await.map_err(|err| {
            format!(
                "{url}: {}",
                describe_request_error(&err, self.fanout.timeout)
            )
        })?;
        let response = self
            .options
            .check(response, url.as_str())
            .map_err(|err| err.to_string())?;
        let body = response.bytes().await.map_err(|err| {
            format!(
                "{url}: {}",
                describe_request_error(&err, self.fanout.timeout)
            )
        })?;
        serde_json::from_slice(&body)
            .map_err(|err| format!("{url} did not answer with the snapshot schema: {err}"))
    }
}

/// A frame of what a node's summary says (no processes, no cgroups): the node's identity and
/// memory in the snapshot's terms, the summary itself as the workloads.
pub fn summary_frame(summary: WorkloadsResponse) -> Frame {
    let node = &summary.node;
    let snapshot = Snapshot {
        schema_version: memtrace_api::SCHEMA_VERSION,
        node: NodeIdentityView {
            name: Some(node.name.clone()),
            hostname: node.hostname.clone(),
            boot_id: node.boot_id.clone(),
            kernel_release: node.kernel_release.clone(),
        },
        timestamp_unix_ms: summary.timestamp_unix_ms,
        rate_window_seconds: summary.rate_window_seconds,
        node_memory: NodeMemoryView {
            psi: node.psi,
            mem_total_bytes: node.mem_total_bytes,
            mem_available_bytes: node.mem_available_bytes,
            swap_total_bytes: node.swap_total_bytes,
            swap_free_bytes: node.swap_free_bytes,
            fragmentation_index_order3: node.fragmentation_index_order3,
            fragmentation_index_order9: node.fragmentation_index_order9,
            ..NodeMemoryView::default()
        },
        ..Snapshot::default()
    };
    Frame {
        snapshot,
        workloads: Some(summary),
    }
}
