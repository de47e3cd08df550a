//! The daemon's HTTP endpoint: `/metrics` for Prometheus, the JSON API, health and readiness.
//!
//! Views of the model are built on demand: a handler sends a [`Request`] to the daemon, which owns
//! the model, and awaits the reply. Building a snapshot of 10,000 processes every interval whether
//! or not anyone asks was most of an idle daemon's CPU time; the owner builds one only when asked
//! and keeps it until its next sampling tick, so concurrent scrapes share one build. Rendering
//! and serialization happen here, on the server's threads, never in the model's loop.
//!
//! The server is bounded ([`Limits`]), because any local user can connect: at most
//! `max_connections` at once (beyond them the longest-idle one is closed, see [`Connections`]), a
//! request head of at most [`MAX_REQUEST_HEAD`] bytes that must arrive within `header_timeout`
//! (from connect, or from the previous response: idle keep-alive connections close then too), and
//! a deadline per request (also for a client that stops reading its response). Without these,
//! ~1,000 idle connections used up the file descriptors the task sampler needs, and 500
//! never-finished 380 KB headers got the daemon OOM-killed.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request as HttpRequest, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{oneshot, watch};

use super::prometheus::{self as prom, BuildInfo, ExportConfig, HttpStats};
use crate::daemon::{Readiness, Request};
use crate::web::server::WebServer;
use memtrace_api::{NotFound, OomRecord, OomResponse, SCHEMA_VERSION};

/// Bytes a connection may buffer for one request head (request line and headers; our requests
/// have no body). hyper's smallest read buffer; 8 KiB is also what most servers allow per header
/// line. Per-connection memory is bounded by it, so the connections' total is
/// `max_connections` × 8 KiB plus hyper's fixed state (~1 MiB at the default cap).
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Headers per request at most (answered with 431 beyond).
const MAX_HEADERS: usize = 32;

/// After a failed accept (e.g. EMFILE), wait this long before the next: the error repeats until
/// a descriptor is free, and retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// File descriptors kept free for everything but client connections: the probes' programs, maps
/// and links (~60), the task iterator's link and seq file each tick, the /proc and /sys readers,
/// the ring buffers' epoll, the runtime, the log: 43 open at rest (2 CPUs, default families),
/// a few more during a tick. 512 leaves room for larger machines and more families.
pub const FD_RESERVE: u64 = 512;

/// How the server protects the daemon from its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open client connections at most; beyond, the longest-idle one (or, if all are handling a
    /// request, the new one) is closed and counted.
    pub max_connections: usize,
    /// Time a client has to send a whole request head, from connect or from the previous
    /// response (so also the keep-alive idle timeout). Slowloris clients are dropped after it.
    pub header_timeout: Duration,
    /// Deadline of one request's handling (503 after it), and the longest a response may wait
    /// for the client to read any of it (the connection is dropped then).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The server's connections, counted for `memtrace_http_*`. Over the cap, the connection idle
/// longest (waiting for a request head: connected and silent, sending one slowly, or kept alive
/// between requests) is closed to make room: a client holding many silent connections cannot
/// lock Prometheus out. Only when every connection is in a handler is the new one closed.
#[derive(Debug, Default)]
pub struct Connections {
    open: std::sync::Mutex<std::collections::HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    rejected: AtomicU64,
}

/// One open connection as the cap sees it.
#[derive(Debug, Default)]
struct Connection {
    /// A request is being handled.
    busy: std::sync::atomic::AtomicBool,
    /// When it last became idle (connected or answered), as [`Connections::now`].
    idle_since: AtomicU64,
    /// Tells its task to close it.
    evict: tokio::sync::Notify,
}

impl Connections {
    pub fn stats(&self) -> HttpStats {
        HttpStats {
            connections: self.lock().len() as u64,
            connections_rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A process-wide monotonic clock in ns (ordering only).
    fn now() -> u64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let start = *START.get_or_init(std::time::Instant::now);
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Registers a new connection, evicting the longest-idle one if `max` are open; `None` (and
    /// counted) if all of them are busy.
    fn admit(&self, max: usize) -> Option<(u64, Arc<Connection>)> {
        let mut open = self.lock();
        if open.len() >= max {
            let victim = open
                .iter()
                .filter(|(_, c)| !c.busy.load(Ordering::Acquire))
                .min_by_key(|(_, c)| c.idle_since.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            self.rejected.fetch_add(1, Ordering::Relaxed);
            let evicted = open.remove(&victim?)?;
            evicted.evict.notify_one();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection::default());
        connection.idle_since.store(Self::now(), Ordering::Relaxed);
        open.insert(id, Arc::clone(&connection));
        Some((id, connection))
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// Marks a connection busy while a request is handled.
struct Busy(Arc<Connection>);

impl Busy {
    fn start(connection: &Arc<Connection>) -> Self {
        connection.busy.store(true, Ordering::Release);
        Self(Arc::clone(connection))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .idle_since
            .store(Connections::now(), Ordering::Relaxed);
        self.0.busy.store(false, Ordering::Release);
    }
}

/// Fails a write that makes no progress for `limit`: a client that stops reading its response
/// is dropped, with the response it pinned in memory.
struct WriteStall<T> {
    io: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteStall<T> {
    fn check<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Why the descriptor budget cannot hold the connection cap.
#[derive(Debug, thiserror::Error)]
pub enum FdBudgetError {
    #[error("reading or raising RLIMIT_NOFILE")]
    Rlimit(#[source] std::io::Error),
    #[error(
        "--max-connections {max_connections} leaves too few file descriptors: the limit is \
         {limit} (RLIMIT_NOFILE, hard limit {hard}) and {FD_RESERVE} are kept for the probes and \
         readers; lower --max-connections or raise LimitNOFILE"
    )]
    TooFew {
        max_connections: usize,
        limit: u64,
        hard: u64,
    },
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (systemd's default soft limit is 1,024,
/// the hard one 524,288) and checks that `max_connections` + [`FD_RESERVE`] fit under it, so
/// clients can never take the descriptors the task sampler needs. Returns the new soft limit.
pub fn reserve_fds(max_connections: usize) -> Result<u64, FdBudgetError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return Err(FdBudgetError::Rlimit(std::io::Error::last_os_error()));
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } != 0 {
            return Err(FdBudgetError::Rlimit(std::io::Error::last_os_error()));
        }
        limit = raised;
    }
    if (max_connections as u64).saturating_add(FD_RESERVE) > limit.rlim_cur {
        return Err(FdBudgetError::TooFew {
            max_connections,
            limit: limit.rlim_cur,
            hard: limit.rlim_max,
        });
    }
    Ok(limit.rlim_cur)
}

/// Shared by all handlers.
#[derive(Debug)]
pub struct AppState {
    /// To the model's owner. A closed channel (or a dropped reply) means it has stopped.
    pub requests: tokio::sync::mpsc::Sender<Request>,
    /// Served by `/readyz`.
    pub readiness: Readiness,
    pub export: ExportConfig,
    pub build: BuildInfo,
    /// Maintained by [`serve`], exported by `/metrics`.
    pub connections: Connections,
}

#[cfg(test)]
impl AppState {
    /// A state for tests: requests go to `requests`, not ready yet ("testing"), default export
    /// settings, version 0.1.0 on an unnamed kernel.
    pub(crate) fn for_tests(requests: tokio::sync::mpsc::Sender<Request>) -> Self {
        Self {
            requests,
            readiness: Readiness::not_yet("testing"),
            export: ExportConfig::default(),
            build: BuildInfo {
                version: "0.1.0",
                kernel: String::new(),
            },
            connections: Connections::default(),
        }
    }
}

/// The routes, for the 404 body.
const ROUTES: [&str; 6] = [
    "/metrics",
    "/api/v1/snapshot",
    "/api/v1/oom",
    "/healthz",
    "/readyz",
    "/api/v1/workloads",
];

const JSON: &str = "application/json";

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(ROUTES[0], get(metrics))
        .route(ROUTES[1], get(snapshot))
        .route(ROUTES[2], get(oom))
        .route(ROUTES[3], get(healthz))
        .route(ROUTES[4], get(readyz))
        .route(ROUTES[5], super::workloads::route())
        .fallback(not_found)
        .with_state(state)
}

/// Serve within `limits` until `shutdown` completes, then finish in-flight requests and return.
/// Plain HTTP without authentication; [`serve_secured`] applies a web config.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_secured(
        listener,
        state,
        limits,
        Arc::new(WebServer::plain()),
        shutdown,
    )
    .await
}

/// [`serve`] with the TLS, basic authentication and headers of `web` (`--web-config-file`).
pub async fn serve_secured(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    limits: Limits,
    web: Arc<WebServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(Arc::clone(&state));
    serve_router(listener, app, state, limits, web, shutdown).await
}

impl AsRef<Connections> for AppState {
    fn as_ref(&self) -> &Connections {
        &self.connections
    }
}

impl AsRef<Self> for Connections {
    fn as_ref(&self) -> &Self {
        self
    }
}

/// Serves any `app` (e.g. `memtrace cluster serve`'s) within `limits`, with `web`'s transport
/// security and authentication, counting connections in `connections`, until `shutdown`.
/// A TLS handshake happens on an admitted connection, so it counts against the cap, and must
/// finish within `limits.header_timeout`.
pub async fn serve_router<C: AsRef<Connections> + Send + Sync + 'static>(
    listener: tokio::net::TcpListener,
    app: Router,
    connections_of: Arc<C>,
    limits: Limits,
    web: Arc<WebServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, ?limits, scheme = web.scheme(), "serving /metrics and the API");
    }
    let app = app
        .layer(middleware::from_fn_with_state(
            Arc::clone(&web),
            crate::web::server::authenticate,
        ))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            deadline,
        ));
    let service = TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .max_headers(MAX_HEADERS);
    // Closed when the server stops: connections then finish gracefully.
    let (stop_connections, stopping) = watch::channel(());
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!("http: accept failed: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Over the cap with every connection busy: closed at once, counted.
        let Some((id, connection)) = (*connections_of).as_ref().admit(limits.max_connections)
        else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let tracked = Arc::clone(&connection);
        let handler = hyper::service::service_fn(move |request| {
            let busy = Busy::start(&tracked);
            let response = hyper::service::Service::call(&service, request);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        });
        let mut stopping = stopping.clone();
        let connections_of = Arc::clone(&connections_of);
        let web = Arc::clone(&web);
        let http = http.clone();
        connections.spawn(async move {
            // The TLS handshake, bounded like a request head; an evicted or stopping connection
            // gives up on it.
            let handshake = tokio::time::timeout(limits.header_timeout, web.accept(stream));
            let stream = tokio::select! {
                accepted = handshake => match accepted {
                    Ok(Ok(stream)) => Some(stream),
                    Ok(Err(err)) => {
                        tracing::debug!("http: TLS handshake failed: {err}");
                        None
                    }
                    Err(_) => None,
                },
                () = connection.evict.notified() => None,
                _ = stopping.changed() => None,
            };
            if let Some(stream) = stream {
                let stream = WriteStall {
                    io: stream,
                    limit: limits.request_timeout,
                    stalled: None,
                };
                let served = http.serve_connection(TokioIo::new(stream), handler);
                tokio::pin!(served);
                tokio::select! {
                    // Errors are the client's (timeouts, resets, malformed requests): hyper has
                    // answered what can be answered.
                    _ = served.as_mut() => {}
                    // Evicted for a new connection: dropped, which closes the socket.
                    () = connection.evict.notified() => {}
                    _ = stopping.changed() => {
                        served.as_mut().graceful_shutdown();
                        let _ = served.await;
                    }
                }
            }
            (*connections_of).as_ref().remove(id);
        });
    }
    drop(stop_connections);
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Answers 503 to a request not handled within `limit`.
async fn deadline(State(limit): State<Duration>, request: HttpRequest, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "request deadline exceeded\n",
        )
            .into_response(),
    }
}

/// The owner's answer to `request`, or a 503 if it has stopped (the daemon is shutting down).
pub(super) async fn ask<T>(
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

pub(super) fn json_response<T: Serialize>(value: &T) -> Response {
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
    match prom::try_render_served(
        &p.snapshot,
        &p.ooms,
        &state.export,
        &state.build,
        state.connections.stats(),
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
                    // Served in `export::workloads`' own tests.
                    Request::Workloads(reply) => drop(reply),
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
            connections: Connections::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Arc::clone(&state),
            Limits::default(),
            async {
                let _ = stopped.await;
            },
        ));

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
        // The server's own series: this connection is open, none was turned away.
        assert!(
            r.body.contains("\nmemtrace_http_connections 1\n"),
            "{}",
            r.body
        );
        assert!(
            r.body
                .contains("\nmemtrace_http_connections_rejected_total 0\n")
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
            assert_eq!(v["routes"].as_array().map(Vec::len), Some(6));
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

    /// A server within `limits` whose model owner never answers (requests queue unread).
    async fn bounded_server(
        limits: Limits,
    ) -> (
        std::net::SocketAddr,
        Arc<AppState>,
        tokio::sync::mpsc::Receiver<Request>,
    ) {
        let (requests, queue) = tokio::sync::mpsc::channel::<Request>(8);
        let state = Arc::new(AppState::for_tests(requests));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(serve(
            listener,
            Arc::clone(&state),
            limits,
            std::future::pending(),
        ));
        (addr, state, queue)
    }

    /// Reads until the server closes the connection; what it sent, and how long that took.
    async fn until_closed(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
        let started = std::time::Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(limit, s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => panic!("still open after {limit:?}"),
            }
        }
        (
            String::from_utf8_lossy(&got).into_owned(),
            started.elapsed(),
        )
    }

    #[tokio::test]
    async fn connections_over_the_cap_evict_the_longest_idle() {
        let (addr, state, _queue) = bounded_server(Limits {
            max_connections: 4,
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
        })
        .await;
        let mut silent = Vec::new();
        for _ in 0..8 {
            silent.push(TcpStream::connect(addr).await.expect("connect"));
            // Distinct idle times, in connection order.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Served although 8 silent connections came first.
        let r = request(addr, "GET", "/healthz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        // The five oldest were closed, one for each connection over the cap, the newest kept.
        for s in &mut silent[..5] {
            let (sent, _) = until_closed(s, Duration::from_secs(2)).await;
            assert_eq!(sent, "", "closed without a word");
        }
        for s in &mut silent[5..] {
            let mut buf = [0u8; 1];
            assert!(
                tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf))
                    .await
                    .is_err(),
                "still open"
            );
        }
        let stats = state.connections.stats();
        assert_eq!(stats.connections_rejected, 5);
        assert!(stats.connections <= 4, "{stats:?}");
        drop(silent);
    }

    #[tokio::test]
    async fn slow_large_and_stuck_requests_are_cut_short() {
        let limits = Limits {
            max_connections: 16,
            header_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(300),
        };
        let (addr, _state, _queue) = bounded_server(limits).await;

        // Silent: closed after the header timeout.
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let (_, took) = until_closed(&mut s, Duration::from_secs(3)).await;
        assert!(
            took < Duration::from_secs(2),
            "silent connection closed after {took:?}"
        );

        // Slowloris: a header line every 50 ms never makes a whole head in time.
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let started = std::time::Instant::now();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("send");
        for _ in 0..40 {
            if s.write_all(b"X-Slow: a\r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, _) = until_closed(&mut s, Duration::from_secs(3)).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(2500),
            "slowloris held {took:?}"
        );

        // A head over the limit: 431, closed; the server did not buffer it.
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(4 * MAX_REQUEST_HEAD)
        );
        let _ = s.write_all(head.as_bytes()).await;
        let (sent, _) = until_closed(&mut s, Duration::from_secs(3)).await;
        assert!(sent.starts_with("HTTP/1.1 431 "), "{sent:?}");

        // A handler that does not finish (the owner never answers): 503 at the deadline.
        let started = std::time::Instant::now();
        let r = request(addr, "GET", "/metrics").await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, "request deadline exceeded\n")
        );
        assert!(started.elapsed() >= limits.request_timeout);

        // An ordinary request still gets its answer.
        let r = request(addr, "GET", "/healthz").await;
        assert_eq!(r.status, 200);
    }

    #[test]
    fn the_descriptor_budget_holds_the_cap_and_the_reserve() {
        let limit = reserve_fds(1).expect("one connection fits");
        assert!(limit > FD_RESERVE, "{limit}");
        let mut rlimit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into our struct.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut rlimit) },
            0
        );
        assert_eq!(rlimit.rlim_cur, rlimit.rlim_max, "soft raised to hard");
        let too_many = usize::try_from(limit - FD_RESERVE + 1).expect("fits");
        let err = reserve_fds(too_many).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("--max-connections {too_many} leaves too few")),
            "{err}"
        );
        reserve_fds(too_many - 1).expect("exactly at the limit");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped() {
        let (addr, _state, mut queue) = bounded_server(Limits {
            max_connections: 4,
            header_timeout: Duration::from_secs(5),
            // Long enough to serialize the response on a busy machine, short against the pause.
            request_timeout: Duration::from_millis(800),
        })
        .await;
        // A response far larger than the sockets' buffers (loopback's reach a few MiB).
        let snapshot = Arc::new(Snapshot {
            processes: testutil::many_processes(30_000),
            ..Snapshot::default()
        });
        tokio::spawn(async move {
            while let Some(request) = queue.recv().await {
                if let Request::Snapshot(reply) = request {
                    let _ = reply.send(Arc::clone(&snapshot));
                }
            }
        });
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /api/v1/snapshot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        // Reads the first bytes (the response is being written), then nothing for a while, then
        // everything it can.
        let mut buf = vec![0u8; 1 << 16];
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("a response within 30 s")
            .expect("read");
        let mut got = buf[..n].to_vec();
        tokio::time::sleep(Duration::from_secs(2)).await;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => panic!("neither finished nor dropped"),
            }
        }
        let text = String::from_utf8_lossy(&got);
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        assert!(
            body.len() < length,
            "dropped mid-response: {} of {length} bytes",
            body.len()
        );
    }
}
