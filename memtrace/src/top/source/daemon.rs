//! A running daemon (`--url`): its `/api/v1/snapshot` at each refresh, and its
//! `/api/v1/workloads` too while a view needs it ([`DaemonSource::want_workloads`]), through the
//! client of every command that talks to daemons (TLS, basic auth: [`ClientOptions`]).
//!
//! The instances' histories in the workloads view change once per the daemon's history step (a
//! minute by default), and were most of the view's bytes (60 points × 3 columns × each
//! instance): they are asked for once a step, and the refreshes in between ask for none
//! (`?history=0`) and carry the last ones over (`Histories`).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use memtrace_api::Snapshot;
use memtrace_api::client::SNAPSHOT_PATH;
use memtrace_api::cluster::NodeFailure;
use memtrace_api::frame::Frame;
use memtrace_api::workloads::{InstanceHistory, WorkloadsResponse};

use super::{Fleet, NodeFrame};
use crate::cluster::fanout::{decode, describe_request_error};
use crate::web::client::{ClientError, ClientOptions, RequestError, explain};

/// The instance history asked for (the daemon's own step, 60 s by default: 60 points).
const WORKLOADS_PATH: &str = "/api/v1/workloads?history=1h";
/// The same without the histories, between two steps.
const WORKLOADS_LIGHT_PATH: &str = "/api/v1/workloads?history=0";

/// The instances' histories of the last workloads view fetched with them.
struct Histories {
    at: Instant,
    /// The daemon's history step: they change no sooner.
    step: Duration,
    /// By workload, then instance.
    of: HashMap<String, HashMap<String, InstanceHistory>>,
}

impl Histories {
    fn of(workloads: &WorkloadsResponse) -> Self {
        let of = workloads
            .workloads
            .iter()
            .map(|w| {
                let instances = w
                    .instances
                    .iter()
                    .map(|i| (i.instance.clone(), i.history.clone()))
                    .collect();
                (w.workload.clone(), instances)
            })
            .collect();
        Self {
            at: Instant::now(),
            step: Duration::from_secs(u64::from(workloads.history.step_seconds.max(1))),
            of,
        }
    }

    fn stale(&self) -> bool {
        self.at.elapsed() >= self.step
    }

    /// Give the instances of `workloads` that came without a history their last one.
    fn fill(&self, workloads: &mut WorkloadsResponse) {
        for w in &mut workloads.workloads {
            let Some(instances) = self.of.get(&w.workload) else {
                continue;
            };
            for i in &mut w.instances {
                if i.history.rss_bytes.is_empty()
                    && let Some(history) = instances.get(&i.instance)
                {
                    i.history = history.clone();
                }
            }
        }
    }
}

pub struct DaemonSource {
    options: ClientOptions,
    client: reqwest::Client,
    /// As given (`host:port` or a URL).
    target: String,
    timeout: Duration,
    /// Fetch the workloads view too.
    workloads: bool,
    histories: Option<Histories>,
    /// The bodies read, kept from one refresh to the next: a fresh 9 MiB buffer each second
    /// (10,000 processes) was as much of `top`'s time in the kernel's page faults as in copying.
    bodies: [Vec<u8>; 2],
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
            histories: None,
            bodies: Default::default(),
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
    pub async fn frame(&mut self) -> Result<Frame, String> {
        let with_histories = self.histories.as_ref().is_none_or(Histories::stale);
        let [mut snapshot_body, mut workloads_body] = std::mem::take(&mut self.bodies);
        let this = &*self;
        let workloads = async {
            if !this.workloads {
                return None;
            }
            let path = if with_histories {
                WORKLOADS_PATH
            } else {
                WORKLOADS_LIGHT_PATH
            };
            Some(this.get(path, &mut workloads_body).await)
        };
        let (snapshot, workloads) =
            tokio::join!(this.get(SNAPSHOT_PATH, &mut snapshot_body), workloads);
        let snapshot = snapshot.and_then(|()| {
            serde_json::from_slice::<Snapshot>(&snapshot_body).map_err(|err| {
                format!(
                    "{} did not answer with the snapshot schema: {err}",
                    this.options.url(&this.target, SNAPSHOT_PATH)
                )
            })
        });
        let mut workloads: Option<WorkloadsResponse> = workloads
            .and_then(Result::ok)
            .and_then(|()| decode(&workloads_body).ok());
        self.bodies = [snapshot_body, workloads_body];
        let snapshot = snapshot?;
        if let Some(workloads) = &mut workloads {
            if with_histories {
                self.histories = Some(Histories::of(workloads));
            } else if let Some(histories) = &self.histories {
                histories.fill(workloads);
            }
        }
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

    /// The body at `path` into `body`, or one line naming the URL and what went wrong.
    async fn get(&self, path: &str, body: &mut Vec<u8>) -> Result<(), String> {
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
        let mut response = self
            .options
            .check(response, &url)
            .map_err(|err| err.to_string())?;
        body.clear();
        let read_error =
            |err: reqwest::Error| format!("{url}: {}", describe_request_error(&err, self.timeout));
        while let Some(chunk) = response.chunk().await.map_err(read_error)? {
            body.extend_from_slice(&chunk);
        }
        Ok(())
    }
}
