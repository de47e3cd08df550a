//! The daemon's HTTP endpoint: `/metrics` for Prometheus, the JSON API, health and readiness.
//!
//! Views of the model are built on demand: a handler sends a [`Request`] to the daemon, which owns
//! the model, and awaits the reply. Building a snapshot of 10,000 processes every interval whether
//! or not anyone asks was most of an idle daemon's CPU time; the owner builds one only when asked
//! and keeps it until its next sampling tick, so concurrent scrapes share one build. Rendering
//! and serialization happen here, on the server's threads, never in the model's loop.
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::sync::oneshot;

use super::prometheus::{self as prom, BuildInfo, ExportConfig};
use crate::daemon::{Readiness, Request};
use memtrace_api::{NotFound, OomRecord, OomResponse, SCHEMA_VERSION};

/// Shared by all handlers.
#[derive(Debug)]
pub struct AppState {
    /// To the model's owner. A closed channel (or a dropped reply) means it has stopped.
    pub requests: tokio::sync::mpsc::Sender<Request>,
    /// Served by `/readyz`.
    pub readiness: Readiness,
    pub export: ExportConfig,
    pub build: BuildInfo,
}

/// The routes, for the 404 body.
const ROUTES: [&str; 5] = [
    "/metrics",
    "/api/v1/snapshot",
    "/api/v1/oom",
    "/healthz",
    "/readyz",
];

const JSON: &str = "application/json";

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(ROUTES[0], get(metrics))
        .route(ROUTES[1], get(snapshot))
        .route(ROUTES[2], get(oom))
        .route(ROUTES[3], get(healthz))
        .route(ROUTES[4], get(readyz))
        .fallback(not_found)
        .with_state(state)
}

/// Serve until `shutdown` completes, then finish in-flight requests and return.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics and the API");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The owner's answer to `request`, or a 503 if it has stopped (the daemon is shutting down).
async fn ask<T>(
    state: &AppState,
    request: impl FnOnce(oneshot::Sender<T>) -> Request,
) -> Result<T, Response> {
    let (reply, answer) = oneshot::channel();
    let stopped = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
            .into_response()
    };
    state
        .requests
        .send(request(reply))
        .await
        .map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn json_response<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, JSON)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "serializing a JSON response failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "serialization failed\n").into_response()
        }
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let p = match ask(&state, Request::Metrics).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    match prom::try_render(
        &p.snapshot,
        &p.ooms,
        &state.export,
        &state.build,
        now_unix_ms(),
    ) {
        Ok(body) => ([(header::CONTENT_TYPE, prom::CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            // A 500 makes the scrape fail (`up` = 0) instead of silently exporting nothing.
            tracing::error!(error = %e, "rendering /metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering metrics failed\n",
            )
                .into_response()
        }
    }
}

async fn snapshot(State(state): State<Arc<AppState>>) -> Response {
    match ask(&state, Request::Snapshot).await {
        Ok(snapshot) => json_response(&*snapshot),
        Err(response) => response,
    }
}

async fn oom(State(state): State<Arc<AppState>>) -> Response {
    let ooms = match ask(&state, Request::Ooms).await {
        Ok(ooms) => ooms,
        Err(response) => return response,
    };
    let mut ooms: Vec<OomRecord> = ooms.to_vec();
    // Newest first; stable, so equal timestamps keep the history's order.
    ooms.sort_by_key(|o| std::cmp::Reverse(o.timestamp_unix_ms));
    json_response(&OomResponse {
        schema_version: SCHEMA_VERSION,
        ooms,
    })
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.readiness.ready.load(Ordering::Acquire) {
        return "ready".into_response();
    }
    let reason = state
        .readiness
        .reason
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let body = if reason.is_empty() {
        "not ready".to_owned()
    } else {
        format!("not ready: {reason}")
    };
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn not_found() -> Response {
    let mut r = json_response(&NotFound {
        error: "not found".to_owned(),
        routes: ROUTES.map(str::to_owned).to_vec(),
    });
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::daemon::Published;
    use crate::export::testutil::{self, realistic};
    use memtrace_api::Snapshot;

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// One HTTP/1.1 request on a fresh connection, read to EOF (`Connection: close`).
    async fn request(addr: std::net::SocketAddr, method: &str, target: &str) -> Reply {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("send request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read response");
        let raw = String::from_utf8(raw).expect("UTF-8 response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
        let mut lines = head.split("\r\n");
        let status = lines.next().expect("status line");
        let status = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (k, v) = l.split_once(':').expect("header line");
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let reply = Reply {
            status,
            headers,
            body: body.to_owned(),
        };
        assert!(
            reply.header("transfer-encoding").is_none(),
            "bodies have a known length"
        );
        if method != "HEAD" {
            let len: usize = reply
                .header("content-length")
                .expect("content-length")
                .parse()
                .expect("numeric content-length");
            assert_eq!(len, reply.body.len(), "{target}");
        }
        reply
    }

    #[tokio::test]
    async fn serves_every_route() {
        let (mut snapshot, mut ooms) = realistic();
        // JSON has no NaN (serde_json writes null); the model never publishes one.
        snapshot.processes.retain(|p| !p.pressure_score.is_nan());
        // /metrics measures the OOM retention against the wall clock.
        let mut newest = testutil::oom("newest", None, Default::default(), 0);
        newest.timestamp_unix_ms = now_unix_ms() - 1000;
        ooms.push(newest);
        // Stands in for the daemon loop: answers with whatever was last "published".
        let (publish, published) = tokio::sync::watch::channel(Published::default());
        let (requests, mut queue) = tokio::sync::mpsc::channel::<Request>(8);
        let owner = tokio::spawn(async move {
            while let Some(request) = queue.recv().await {
                let p = published.borrow().clone();
                match request {
                    Request::Snapshot(reply) => drop(reply.send(p.snapshot)),
                    Request::Ooms(reply) => drop(reply.send(p.ooms)),
                    Request::Metrics(reply) => drop(reply.send(p)),
                }
            }
        });
        let state = Arc::new(AppState {
            requests,
            readiness: Readiness::not_yet("attaching probes"),
            export: ExportConfig::default(),
            build: BuildInfo {
                version: "0.1.0",
                kernel: "6.8.0-45-generic".to_owned(),
            },
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::clone(&state), async {
            let _ = stopped.await;
        }));

        // Not ready yet, with the reason; alive regardless.
        let r = request(addr, "GET", "/readyz").await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, "not ready: attaching probes")
        );
        let r = request(addr, "GET", "/healthz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));

        publish
            .send(Published {
                snapshot: Arc::new(snapshot.clone()),
                ooms: Arc::new(ooms.clone()),
            })
            .expect("publish");
        state.readiness.ready.store(true, Ordering::Release);
        let r = request(addr, "GET", "/readyz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ready"));

        let r = request(addr, "GET", "/metrics?debug=1&x").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(
            r.body.contains(
                "\nmemtrace_build_info{kernel=\"6.8.0-45-generic\",version=\"0.1.0\"} 1\n"
            )
        );
        assert!(
            testutil::parse(&r.body)
                .iter()
                .any(|s| s.name == "memtrace_oom_kills_total" && s.label("comm") == "newest"),
            "rendered from the published OOMs"
        );

        let r = request(addr, "GET", "/api/v1/snapshot?pretty=true").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let back: Snapshot = serde_json::from_str(&r.body).expect("snapshot JSON");
        assert_eq!(back, snapshot);

        let r = request(addr, "GET", "/api/v1/oom").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("oom JSON");
        assert_eq!(v["schema_version"], 1);
        let list: Vec<OomRecord> = serde_json::from_value(v["ooms"].clone()).expect("OOM records");
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].victim_comm, "newest");
        assert!(
            list.windows(2)
                .all(|w| w[0].timestamp_unix_ms >= w[1].timestamp_unix_ms)
        );
        assert_eq!(list[0].flight_recording.len(), 3, "with flight recordings");

        for target in ["/", "/metric", "/api/v1/snapshots", "/api/v2/oom?x=1"] {
            let r = request(addr, "GET", target).await;
            assert_eq!(r.status, 404, "{target}");
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert!(!r.body.contains('\n'), "one line");
            let v: serde_json::Value = serde_json::from_str(&r.body).expect("404 JSON");
            assert_eq!(v["error"], "not found");
            assert_eq!(v["routes"].as_array().map(Vec::len), Some(5));
        }

        let r = request(addr, "HEAD", "/healthz").await;
        assert_eq!(r.status, 200);

        // Not ready again (e.g. shutting down): 503 with the new reason.
        *state.readiness.reason.lock().expect("lock") = "shutting down".to_owned();
        state.readiness.ready.store(false, Ordering::Release);
        let r = request(addr, "GET", "/readyz").await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, "not ready: shutting down")
        );

        // The model's owner gone (shutting down): 503, not a hang.
        owner.abort();
        let _ = owner.await;
        for target in ["/metrics", "/api/v1/snapshot", "/api/v1/oom"] {
            let r = request(addr, "GET", target).await;
            assert_eq!(r.status, 503, "{target}");
        }

        stop.send(()).expect("stop");
        server
            .await
            .expect("server task")
            .expect("graceful shutdown");
    }
}
