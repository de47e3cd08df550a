//! A small blocking client of a daemon's JSON API (feature `client`).
//!
//! ```no_run
//! let daemon = memtrace_api::client::Client::new("localhost:9847");
//! let snapshot = daemon.snapshot()?;
//! println!("{} processes on {}", snapshot.processes.len(), snapshot.node.hostname);
//! # Ok::<_, memtrace_api::client::ClientError>(())
//! ```
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::{OomResponse, Snapshot};

/// Path of the snapshot (schema v1).
pub const SNAPSHOT_PATH: &str = "/api/v1/snapshot";
/// Path of the OOM history with flight recordings.
pub const OOM_PATH: &str = "/api/v1/oom";

/// The whole request, connection included, must finish within this by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting must succeed within this by default (a dead node should not stall a fleet scan).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest body read: a snapshot of the daemon's maximum of tracked processes fits many times.
const MAX_BODY_BYTES: u64 = 256 << 20;

/// Why a request to a daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused, DNS, timeout, TLS, a malformed URL.
    #[error("cannot reach the memtrace daemon at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// An answer, but not a success.
    #[error("{url} answered HTTP status {status}")]
    Status { url: String, status: u16 },
    /// A success whose body is not the expected JSON (or broke off).
    #[error("{url} did not answer with the {schema} schema")]
    Decode {
        url: String,
        schema: &'static str,
        #[source]
        source: Box<ureq::Error>,
    },
}

impl ClientError {
    /// The URL the request went to.
    pub fn url(&self) -> &str {
        match self {
            Self::Unreachable { url, .. } | Self::Status { url, .. } | Self::Decode { url, .. } => {
                url
            }
        }
    }
}

/// A daemon's API at one base URL.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

/// `base` with a scheme (`http://` unless it has one) and no trailing slash.
fn normalize(base: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    if base.contains("://") {
        base.to_owned()
    } else {
        format!("http://{base}")
    }
}

impl Client {
    /// A client of the daemon at `base_url` (`http://host:port`, or `host:port`), with the
    /// default timeouts.
    pub fn new(base_url: &str) -> Self {
        Self::with_timeouts(base_url, DEFAULT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT)
    }

    /// [`Client::new`] with a timeout for each whole request and one for connecting.
    pub fn with_timeouts(base_url: &str, timeout: Duration, connect: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(connect))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: normalize(base_url),
            agent,
        }
    }

    /// The base URL requests go to (with its scheme, without a trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /api/v1/snapshot`.
    pub fn snapshot(&self) -> Result<Snapshot, ClientError> {
        self.get_json(SNAPSHOT_PATH, "snapshot")
    }

    /// `GET /api/v1/oom`: the OOM history, newest first, with flight recordings.
    pub fn ooms(&self) -> Result<OomResponse, ClientError> {
        self.get_json(OOM_PATH, "OOM")
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        schema: &'static str,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut response = match self.agent.get(&url).call() {
            Ok(response) => response,
            Err(source) => {
                return Err(ClientError::Unreachable {
                    url,
                    source: Box::new(source),
                });
            }
        };
        let status = response.status();
        if !status.is_success() {
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
            });
        }
        response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_json()
            .map_err(|source| ClientError::Decode {
                url,
                schema,
                source: Box::new(source),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    const SNAPSHOT: &str = include_str!("../tests/fixtures/snapshot-v1.json");
    const OOMS: &str = include_str!("../tests/fixtures/oom-v1.json");

    /// A one-thread HTTP server answering each request for a known path with its canned body
    /// (404 otherwise), for `requests` requests. Returns its `host:port`.
    fn serve(routes: Vec<(&'static str, u16, &'static str)>, requests: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = routes
                    .iter()
                    .find(|(p, _, _)| *p == path)
                    .map_or((404, "{}"), |(_, status, body)| (*status, *body));
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        addr
    }

    #[test]
    fn reads_the_snapshot_and_the_oom_history() {
        let addr = serve(
            vec![(SNAPSHOT_PATH, 200, SNAPSHOT), (OOM_PATH, 200, OOMS)],
            2,
        );
        // Without a scheme, and with a trailing slash.
        let client = Client::new(&format!("{addr}/"));
        assert_eq!(client.base_url(), format!("http://{addr}"));
        let snapshot = client.snapshot().unwrap();
        assert_eq!(
            snapshot,
            serde_json::from_str::<Snapshot>(SNAPSHOT).unwrap()
        );
        assert!(!snapshot.processes.is_empty());
        let ooms = client.ooms().unwrap();
        assert_eq!(ooms, serde_json::from_str::<OomResponse>(OOMS).unwrap());
        assert!(!ooms.ooms[0].flight_recording.is_empty());
    }

    #[test]
    fn garbage_and_errors_name_the_url() {
        let addr = serve(vec![(OOM_PATH, 200, "<html>not json</html>")], 2);
        let client = Client::new(&format!("http://{addr}"));
        let err = client.ooms().unwrap_err();
        assert!(
            matches!(err, ClientError::Decode { schema: "OOM", .. }),
            "{err:?}"
        );
        assert_eq!(err.url(), format!("http://{addr}{OOM_PATH}"));
        assert_eq!(
            err.to_string(),
            format!("http://{addr}{OOM_PATH} did not answer with the OOM schema")
        );
        let err = client.snapshot().unwrap_err();
        assert!(
            matches!(err, ClientError::Status { status: 404, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(SNAPSHOT_PATH), "{err}");
    }

    #[test]
    fn connection_refused_is_unreachable() {
        // A port that was just free: nothing listens there any more.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let client = Client::new(&addr.to_string());
        let err = client.snapshot().unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("cannot reach the memtrace daemon at http://{addr}{SNAPSHOT_PATH}")
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "the cause is kept"
        );
    }
}
