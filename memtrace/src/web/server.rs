//! The web config applied to a server: TLS on accepted connections, basic authentication and
//! extra headers on requests, and the file re-read when it or a file it names changes.
//!
//! [`WebServer`] is shared by the daemon (`export::http::serve`) and any other server memtrace
//! runs (`memtrace cluster serve` calls [`crate::export::http::serve_router`] with one).
//!
//! - **Reload.** Like exporter-toolkit, which re-reads the file on every request, certificate
//!   rotation needs no restart: before each handshake and each request the file and the
//!   certificate, key and CA files it names are `stat`ed (a few µs), and re-read when one changed
//!   (size, mtime or inode: a Kubernetes Secret's symlink swap too). A file that no longer loads
//!   is logged once and the previous configuration stays. Turning TLS on or off needs a restart,
//!   as in exporter-toolkit.
//! - **bcrypt** is slow by design (~70 ms at cost 10): successful and failed checks are cached by
//!   SHA-256 of user, hash and password (at most [`AUTH_CACHE`] entries), as exporter-toolkit
//!   does, so a scrape every second costs one hash, and hashes run one at a time off the
//!   runtime's threads. An unknown user is checked against a dummy hash of the same cost, so
//!   timing does not tell which users exist.
//! - **Health probes.** `/healthz` and `/readyz` need no password (exporter-toolkit asks for it on
//!   every path): a kubelet probe cannot send one without writing it into the pod spec, and they
//!   reveal only whether the daemon runs and why it is not ready. TLS and client certificates
//!   still apply to them, being per connection.
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::config::{self, WebConfigError, WebConfigFile};
use super::tls;

/// Cached credential checks at most.
pub const AUTH_CACHE: usize = 100;

/// Paths served without basic authentication (see the module documentation).
pub const UNAUTHENTICATED_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// What one version of the file configures.
#[derive(Debug)]
struct Active {
    tls: Option<Arc<rustls::ServerConfig>>,
    users: BTreeMap<String, String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The files besides the config itself it was read from.
    files: Vec<PathBuf>,
}

impl Active {
    fn load(path: &Path) -> Result<Self, WebConfigError> {
        Self::from_config(path, config::load(path)?)
    }

    fn from_config(path: &Path, config: WebConfigFile) -> Result<Self, WebConfigError> {
        let tls = match &config.tls_server_config {
            Some(t) if t.is_enabled() => Some(tls::server_config(path, t)?),
            _ => None,
        };
        let headers = config
            .http_server_config
            .iter()
            .filter_map(|h| h.headers.as_ref())
            .flatten()
            .filter_map(|(name, value)| {
                // Both checked by `config::WebConfigFile::parse`.
                Some((
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        Ok(Self {
            tls,
            files: config.files(),
            users: config.basic_auth_users.unwrap_or_default(),
            headers,
        })
    }
}

/// Size, modification time and inode of a file, or `None` if it cannot be read: a change in any
/// means the file was replaced or rewritten.
type Stamp = Option<(u64, i64, i64, u64)>;

fn stamps(files: impl IntoIterator<Item = impl AsRef<Path>>) -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    files
        .into_iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
        })
        .collect()
}

/// A server's transport security and authentication; [`WebServer::plain`] has none.
#[derive(Debug)]
pub struct WebServer {
    /// The web config file; `None`: plain HTTP, no authentication.
    path: Option<PathBuf>,
    /// Fixed at start (a change needs a restart).
    tls: bool,
    active: RwLock<Arc<Active>>,
    /// Of the file and the files it names, at the last (successful or failed) load.
    seen: Mutex<Vec<Stamp>>,
    /// SHA-256(user, hash, password) → the check's outcome.
    checked: Mutex<HashMap<[u8; 32], bool>>,
    /// One bcrypt at a time: a flood of wrong passwords takes one core, not all.
    bcrypt: tokio::sync::Mutex<()>,
    /// Checked for unknown users, of the first user's cost.
    dummy_hash: Option<String>,
}

impl WebServer {
    /// Plain HTTP, no authentication: the default.
    pub fn plain() -> Self {
        Self {
            path: None,
            tls: false,
            active: RwLock::new(Arc::new(Active {
                tls: None,
                users: BTreeMap::new(),
                headers: Vec::new(),
                files: Vec::new(),
            })),
            seen: Mutex::new(Vec::new()),
            checked: Mutex::new(HashMap::new()),
            bcrypt: tokio::sync::Mutex::new(()),
            dummy_hash: None,
        }
    }

    /// Reads `path` and every file it names: any error (unknown key, bad hash, unreadable or
    /// mismatched certificate and key) names the file and the key, and the server does not start.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let active = Active::load(path)?;
        let seen = stamps(std::iter::once(path).chain(active.files.iter().map(PathBuf::as_path)));
        let dummy_hash = active
            .users
            .values()
            .next()
            .and_then(|h| h.parse::<bcrypt::HashParts>().ok())
            .and_then(|h| bcrypt::hash("memtrace: no such user", h.get_cost()).ok());
        Ok(Self {
            path: Some(path.to_path_buf()),
            tls: active.tls.is_some(),
            active: RwLock::new(Arc::new(active)),
            seen: Mutex::new(seen),
            checked: Mutex::new(HashMap::new()),
            bcrypt: tokio::sync::Mutex::new(()),
            dummy_hash,
        })
    }

    /// `Some(file)`: [`WebServer::load`]; `None`: [`WebServer::plain`].
    pub fn from_flag(path: Option<&Path>) -> Result<Self, WebConfigError> {
        path.map_or_else(|| Ok(Self::plain()), Self::load)
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls
    }

    /// `https` or `http`, for logs and URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// Whether requests need a user name and password.
    pub fn basic_auth(&self) -> bool {
        !self.active().users.is_empty()
    }

    fn active(&self) -> Arc<Active> {
        Arc::clone(&self.active.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Re-reads the file if it or a file it names changed since the last look.
    pub fn refresh(&self) {
        let Some(path) = &self.path else {
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let files = self.active().files.clone();
        let now = stamps(std::iter::once(path).chain(files.iter()));
        if *seen == now {
            return;
        }
        *seen = now;
        match Active::load(path) {
            Ok(active) if active.tls.is_some() != self.tls => tracing::warn!(
                "web config {} {} TLS now: restart memtrace to turn TLS on or off; keeping the \
                 previous configuration",
                path.display(),
                if self.tls { "turns off" } else { "turns on" }
            ),
            Ok(active) => {
                *seen = stamps(std::iter::once(path).chain(active.files.iter()));
                *self.active.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(active);
                self.checked
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
                tracing::info!("web config {} changed: reloaded", path.display());
            }
            Err(err) => tracing::warn!("{err}; keeping the previous web configuration"),
        }
    }

    /// The connection as the server reads it: after a TLS handshake when TLS is on. The caller
    /// bounds the time it takes.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<Stream> {
        if !self.tls {
            return Ok(Stream::Plain(stream));
        }
        self.refresh();
        let Some(config) = self.active().tls.clone() else {
            return Err(io::Error::other("TLS configuration missing"));
        };
        let stream = tokio_rustls::TlsAcceptor::from(config)
            .accept(stream)
            .await?;
        Ok(Stream::Tls(Box::new(stream)))
    }

    /// Whether the request's `Authorization: Basic` credentials are a configured user's.
    async fn check(&self, active: &Active, headers: &HeaderMap) -> bool {
        let Some((user, password)) = basic_credentials(headers) else {
            return false;
        };
        let (hash, known) = match (active.users.get(&user), &self.dummy_hash) {
            (Some(hash), _) => (hash.clone(), true),
            (None, Some(dummy)) => (dummy.clone(), false),
            (None, None) => return false,
        };
        let key = cache_key(&user, &hash, &password);
        let cached = || {
            self.checked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .copied()
        };
        if let Some(ok) = cached() {
            return ok && known;
        }
        let _one_at_a_time = self.bcrypt.lock().await;
        // Checked while this request waited, e.g. by a concurrent scrape.
        if let Some(ok) = cached() {
            return ok && known;
        }
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|verified| verified.unwrap_or(false));
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        if checked.len() >= AUTH_CACHE {
            // Arbitrary entries (the map's order is randomly seeded), a tenth at once.
            let evict: Vec<[u8; 32]> = checked.keys().take(AUTH_CACHE / 10).copied().collect();
            for k in evict {
                checked.remove(&k);
            }
        }
        checked.insert(key, ok);
        ok && known
    }

    /// Entries in the credential cache (for tests and debugging).
    pub fn cached_checks(&self) -> usize {
        self.checked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn cache_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
    for part in [user, hash, password] {
        context.update(&(part.len() as u64).to_le_bytes());
        context.update(part.as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

/// User and password of an `Authorization: Basic …` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Middleware: basic authentication (when users are configured) and the configured headers on
/// every response, 401s included.
pub async fn authenticate(
    State(web): State<Arc<WebServer>>,
    request: Request,
    next: Next,
) -> Response {
    web.refresh();
    let active = web.active();
    let open = active.users.is_empty() || UNAUTHENTICATED_PATHS.contains(&request.uri().path());
    let mut response = if open || web.check(&active, request.headers()).await {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic")],
            "Unauthorized\n",
        )
            .into_response()
    };
    for (name, value) in &active.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// An accepted connection, plain or TLS.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
