//! The probes loaded in this process: the daemon's model without its HTTP server
//! ([`crate::daemon::start_local`]), asked for its snapshot at each refresh, and for its
//! workloads view too while a view needs it.
use memtrace_api::cluster::NodeFailure;

use super::{Fleet, NodeFrame};
use memtrace_api::frame::Frame;

use crate::daemon::{DaemonError, LocalDaemon, LocalError, Settings};

/// How the node is named in failures and the header.
pub const TARGET: &str = "local";

pub struct Local {
    daemon: LocalDaemon,
    /// Take the workloads view too (see [`super::SourceCommand::Workloads`]).
    workloads: bool,
}

impl Local {
    /// Load the probes and start the model (fails, saying why, without the privileges).
    pub async fn start(settings: &Settings) -> Result<Self, DaemonError> {
        Ok(Self {
            daemon: crate::daemon::start_local(settings).await?,
            workloads: false,
        })
    }

    /// Whether frames carry the workloads view from now on; true when they did not until now.
    pub fn want_workloads(&mut self, wanted: bool) -> bool {
        let newly = wanted && !self.workloads;
        self.workloads = wanted;
        newly
    }

    /// The model's frame: its snapshot, and its workloads view of the same tick when wanted.
    async fn frame(&self) -> Result<Frame, LocalError> {
        if self.workloads {
            return self.daemon.frame().await;
        }
        let snapshot = self.daemon.snapshot().await?;
        Ok(Frame {
            snapshot: std::sync::Arc::unwrap_or_clone(snapshot),
            workloads: None,
        })
    }

    /// Pre-flight findings and probe families that did not attach, to show once.
    pub fn warnings(&self) -> &[String] {
        &self.daemon.warnings
    }

    pub async fn fetch(&mut self) -> Fleet {
        match self.frame().await {
            Ok(frame) => Fleet {
                nodes: vec![NodeFrame {
                    target: TARGET.to_owned(),
                    frame,
                    detailed: true,
                }],
                ..Fleet::default()
            },
            Err(err) => Fleet {
                failures: vec![NodeFailure {
                    target: TARGET.to_owned(),
                    node: None,
                    error: err.to_string(),
                    elapsed_seconds: 0.0,
                }],
                ..Fleet::default()
            },
        }
    }

    pub async fn stop(self) {
        self.daemon.stop().await;
    }
}
