//! The probes loaded in this process: the daemon's model without its HTTP server
//! ([`crate::daemon::start_local`]), asked for a frame at each refresh.
use memtrace_api::cluster::NodeFailure;

use super::{Fleet, NodeFrame};
use crate::daemon::{DaemonError, LocalDaemon, Settings};

/// How the node is named in failures and the header.
pub const TARGET: &str = "local";

pub struct Local {
    daemon: LocalDaemon,
}

impl Local {
    /// Load the probes and start the model (fails, saying why, without the privileges).
    pub async fn start(settings: &Settings) -> Result<Self, DaemonError> {
        Ok(Self {
            daemon: crate::daemon::start_local(settings).await?,
        })
    }

    /// Pre-flight findings and probe families that did not attach, to show once.
    pub fn warnings(&self) -> &[String] {
        &self.daemon.warnings
    }

    pub async fn fetch(&mut self) -> Fleet {
        match self.daemon.frame().await {
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
