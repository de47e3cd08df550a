//! A running daemon (`--url`): its `/api/v1/snapshot` at each refresh, and its
//! `/api/v1/workloads` too while a view needs it ([`DaemonSource::want_workloads`]), through the
//! client of every command that talks to daemons (TLS, basic auth: [`ClientOptions`]).
use std::time::Duration;

use memtrace_api::Snapshot;
use memtrace_api::client::SNAPSHOT_PATH;
use memtrace_api::cluster::NodeFailure;
use memtrace_api::frame::Frame;
use memtrace_api::workloads::WorkloadsResponse;

use super::{Fleet, NodeFrame};
use crate::cluster::fanout::{decode, describe_request_error};
use crate::web::client::{ClientError, ClientOptions, RequestError, explain};

/// The instance history asked for (the daemon's own step, 60 s by default: 60 points).
const WORKLOADS_PATH: &str = "/api/v1/workloads?history=1h";

pub struct DaemonSource {
    options: ClientOptions,
    client: reqwest::Client,
    /// As given (`host:port` or a URL).
    target: String,
    timeout: Duration,
    /// Fetch the workloads view too.
    workloads: bool,
}

impl DaemonSource {
    pub fn new(
        target: &str,
        options: ClientOptions,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            client: options.build(timeout)?,
            options,
            target: target.to_owned(),
            timeout,
            workloads: false,
        })
    }

    /// Whether frames carry the workloads view from now on (not at first: the processes view
    /// needs none of it); true when it was not fetched until now.
    pub fn want_workloads(&mut self, wanted: bool) -> bool {
        let newly = wanted && !self.workloads;
        self.workloads = wanted;
        newly
    }

    /// The daemon's frame, or why there is none (the snapshot is needed; the workloads view is
    /// not: a daemon older than it still shows processes and cgroups).
    pub async fn frame(&self) -> Result<Frame, String> {
        let workloads = async {
            if self.workloads {
                Some(self.get(WORKLOADS_PATH).await)
            } else {
                None
            }
        };
        let (snapshot, workloads) = tokio::join!(self.get(SNAPSHOT_PATH), workloads);
        let snapshot: Snapshot = serde_json::from_slice(&snapshot?).map_err(|err| {
            format!(
                "{} did not answer with the snapshot schema: {err}",
                self.options.url(&self.target, SNAPSHOT_PATH)
            )
        })?;
        let workloads: Option<WorkloadsResponse> = workloads
            .and_then(Result::ok)
            .and_then(|body| decode(&body).ok());
        Ok(Frame {
            snapshot,
            workloads,
        })
    }

    pub async fn fetch(&mut self) -> Fleet {
        match self.frame().await {
            Ok(frame) => Fleet {
                nodes: vec![NodeFrame {
                    target: self.target.clone(),
                    frame,
                    detailed: true,
                }],
                ..Fleet::default()
            },
            Err(error) => Fleet {
                failures: vec![NodeFailure {
                    target: self.target.clone(),
                    node: None,
                    error,
                    elapsed_seconds: 0.0,
                }],
                ..Fleet::default()
            },
        }
    }

    /// The body at `path`, or one line naming the URL and what went wrong.
    async fn get(&self, path: &str) -> Result<bytes::Bytes, String> {
        let url = self.options.url(&self.target, path);
        let response = match self.client.get(&url).send().await {
            Ok(response) => response,
            Err(err) => {
                return Err(match explain(&err, &self.target) {
                    RequestError::Other { .. } => {
                        format!(
                            "cannot reach the memtrace daemon at {url}: {}",
                            describe_request_error(&err, self.timeout)
                        )
                    }
                    tls => tls.to_string(),
                });
            }
        };
        let response = self
            .options
            .check(response, &url)
            .map_err(|err| err.to_string())?;
        response
            .bytes()
            .await
            .map_err(|err| format!("{url}: {}", describe_request_error(&err, self.timeout)))
    }
}
