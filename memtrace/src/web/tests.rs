//! A real server (`export::http::serve_router`) with a web config, asked by the real client
//! (`web::client`): TLS, client certificates, basic auth, headers, reload, errors.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing;

use super::client::ClientOptions;
use super::server::WebServer;
use crate::export::http::{Connections, Limits, serve_router};

/// A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate signed by it,
/// as PEM files in `dir`.
pub(crate) struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("memtrace test CA {name}"),
        );
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        for (leaf, sans) in [("server", vec!["127.0.0.1".to_owned()]), ("client", vec![])] {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(sans).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("memtrace test {leaf}"));
            let cert = params.signed_by(&key, &ca).expect("sign");
            std::fs::write(dir.join(format!("{leaf}.pem")), cert.pem()).expect("write");
            std::fs::write(dir.join(format!("{leaf}.key")), key.serialize_pem()).expect("write");
        }
        Self { dir }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Serves `/data` and `/healthz` with the web config at `path`; the address.
async fn serve(web: Arc<WebServer>, limits: Limits) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/data", routing::get(|| async { "data" }))
        .route("/healthz", routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve_router(
        listener,
        app,
        Arc::new(Connections::default()),
        limits,
        web,
        std::future::pending(),
    ));
    addr
}

fn options(pki: &Pki, password: Option<&Path>, client_cert: bool) -> ClientOptions {
    ClientOptions {
        ca_file: Some(pki.file("ca.pem")),
        cert_file: client_cert.then(|| pki.file("client.pem")),
        key_file: client_cert.then(|| pki.file("client.key")),
        username: password.map(|_| "prometheus".to_owned()),
        password_file: password.map(Path::to_path_buf),
        insecure_skip_verify: false,
    }
}

async fn get(
    options: &ClientOptions,
    addr: std::net::SocketAddr,
    path: &str,
) -> Result<String, String> {
    let client = options
        .build(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let response = options
        .get(&client, &addr.to_string(), path)
        .await
        .map_err(|e| e.to_string())?;
    response.text().await.map_err(|e| e.to_string())
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("web.yml");
    std::fs::write(&path, text).expect("write");
    path
}

#[tokio::test]
async fn https_with_client_certificates_and_basic_auth() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(tmp.path(), "a");
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let path = write_config(
        tmp.path(),
        &format!(
            "tls_server_config:
  cert_file: a/server.pem
  key_file: a/server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: a/ca.pem
http_server_config:
  headers:
    X-Frame-Options: deny
basic_auth_users:
  prometheus: {hash}
"
        ),
    );
    let web = Arc::new(WebServer::load(&path).expect("loads"));
    assert!(web.tls_enabled() && web.basic_auth());
    let addr = serve(Arc::clone(&web), Limits::default()).await;
    let good = tmp.path().join("password");
    std::fs::write(&good, "s3cret\n").expect("write");
    let bad = tmp.path().join("wrong");
    std::fs::write(&bad, "guess").expect("write");

    // Everything right: served, with the configured header.
    let options_ok = options(&pki, Some(&good), true);
    let client = options_ok.build(Duration::from_secs(5)).expect("client");
    let response = options_ok
        .get(&client, &addr.to_string(), "/data")
        .await
        .expect("served");
    assert_eq!(response.headers()["x-frame-options"], "deny");
    assert_eq!(response.text().await.expect("body"), "data");
    // Cached: the second scrape costs no bcrypt.
    assert_eq!(get(&options_ok, addr, "/data").await.as_deref(), Ok("data"));
    assert_eq!(web.cached_checks(), 1);

    let target = addr.to_string();
    assert_eq!(
        get(&options(&pki, Some(&bad), true), addr, "/data").await,
        Err(format!(
            "401 Unauthorized from {target}: wrong username or password"
        ))
    );
    let err = get(&options(&pki, None, true), addr, "/data")
        .await
        .unwrap_err();
    assert!(
        err.starts_with(&format!(
            "401 Unauthorized from {target}: it asks for a username"
        )),
        "{err}"
    );
    // Health probes need no password (but the connection still needs its certificate).
    assert_eq!(
        get(&options(&pki, None, true), addr, "/healthz")
            .await
            .as_deref(),
        Ok("ok")
    );
    let err = get(&options(&pki, Some(&good), false), addr, "/data")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        format!(
            "{target} requires a client certificate (its client_auth_type): give --cert-file \
             and --key-file"
        )
    );
    // A server certificate from a CA the client does not know.
    let other = Pki::new(tmp.path(), "other");
    let mut untrusting = options(&pki, Some(&good), true);
    untrusting.ca_file = Some(other.file("ca.pem"));
    let err = get(&untrusting, addr, "/data").await.unwrap_err();
    assert!(
        err.starts_with(&format!("{target}: its TLS certificate is not trusted")),
        "{err}"
    );
    // A client certificate from another CA.
    let mut stranger = options(&pki, Some(&good), true);
    stranger.cert_file = Some(other.file("client.pem"));
    stranger.key_file = Some(other.file("client.key"));
    let err = get(&stranger, addr, "/data").await.unwrap_err();
    assert!(
        err.starts_with(&format!("{target} refused our client certificate")),
        "{err}"
    );
    // Plain HTTP to a TLS server: an error, not a hang.
    let mut plain = options(&pki, Some(&good), true);
    plain.ca_file = None;
    plain.cert_file = None;
    plain.key_file = None;
    let err = get(&plain, addr, "/data").await.unwrap_err();
    assert!(err.starts_with(&format!("{target}: ")), "{err}");
}

#[tokio::test]
async fn certificates_are_reloaded_when_they_change() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = Pki::new(tmp.path(), "first");
    let second = Pki::new(tmp.path(), "second");
    let live = tmp.path().join("live");
    std::fs::create_dir(&live).expect("mkdir");
    for f in ["server.pem", "server.key"] {
        std::fs::copy(first.file(f), live.join(f)).expect("copy");
    }
    let path = write_config(
        tmp.path(),
        "tls_server_config:\n  cert_file: live/server.pem\n  key_file: live/server.key\n",
    );
    let web = Arc::new(WebServer::load(&path).expect("loads"));
    let addr = serve(web, Limits::default()).await;
    let trusts = |pki: &Pki| ClientOptions {
        ca_file: Some(pki.file("ca.pem")),
        ..ClientOptions::default()
    };
    assert_eq!(
        get(&trusts(&first), addr, "/data").await.as_deref(),
        Ok("data")
    );
    // A half-done rotation (new certificate, old key) keeps serving the old pair.
    std::fs::copy(second.file("server.pem"), live.join("server.pem")).expect("copy");
    assert_eq!(
        get(&trusts(&first), addr, "/data").await.as_deref(),
        Ok("data")
    );
    // The rotation completed: the new certificate is served without a restart.
    std::fs::copy(second.file("server.key"), live.join("server.key")).expect("copy");
    assert_eq!(
        get(&trusts(&second), addr, "/data").await.as_deref(),
        Ok("data")
    );
    assert!(get(&trusts(&first), addr, "/data").await.is_err());
    // Users added to the file apply to the next request.
    let hash = bcrypt::hash("pw", 4).expect("hash");
    std::fs::write(
        &path,
        format!(
            "tls_server_config:\n  cert_file: live/server.pem\n  key_file: live/server.key\nbasic_auth_users:\n  u: {hash}\n"
        ),
    )
    .expect("write");
    let err = get(&trusts(&second), addr, "/data").await.unwrap_err();
    assert!(err.starts_with("401 Unauthorized"), "{err}");
}

#[tokio::test]
async fn any_client_certificate_policies_ask_without_verifying() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(tmp.path(), "a");
    let stranger = Pki::new(tmp.path(), "stranger");
    let mut client = ClientOptions {
        ca_file: Some(pki.file("ca.pem")),
        ..ClientOptions::default()
    };
    let config = |policy: &str| {
        format!(
            "tls_server_config:\n  cert_file: a/server.pem\n  key_file: a/server.key\n  client_auth_type: {policy}\n"
        )
    };
    let path = write_config(tmp.path(), &config("RequireAnyClientCert"));
    let addr = serve(
        Arc::new(WebServer::load(&path).expect("loads")),
        Limits::default(),
    )
    .await;
    let err = get(&client, addr, "/data").await.unwrap_err();
    assert!(err.contains("requires a client certificate"), "{err}");
    client.cert_file = Some(stranger.file("client.pem"));
    client.key_file = Some(stranger.file("client.key"));
    assert_eq!(get(&client, addr, "/data").await.as_deref(), Ok("data"));

    let path = write_config(tmp.path(), &config("RequestClientCert"));
    let addr = serve(
        Arc::new(WebServer::load(&path).expect("loads")),
        Limits::default(),
    )
    .await;
    assert_eq!(get(&client, addr, "/data").await.as_deref(), Ok("data"));
    client.cert_file = None;
    client.key_file = None;
    assert_eq!(get(&client, addr, "/data").await.as_deref(), Ok("data"));
}

#[tokio::test]
async fn a_silent_tls_client_is_dropped_at_the_header_timeout() {
    use tokio::io::AsyncReadExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    let _pki = Pki::new(tmp.path(), "a");
    let path = write_config(
        tmp.path(),
        "tls_server_config:\n  cert_file: a/server.pem\n  key_file: a/server.key\n",
    );
    let addr = serve(
        Arc::new(WebServer::load(&path).expect("loads")),
        Limits {
            max_connections: 4,
            header_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(5),
        },
    )
    .await;
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .expect("closed within 3 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn bad_certificate_files_stop_the_start_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = Pki::new(tmp.path(), "a");
    let b = Pki::new(tmp.path(), "b");
    let err = |text: &str| {
        WebServer::load(&write_config(tmp.path(), text))
            .unwrap_err()
            .to_string()
    };
    let missing = err("tls_server_config:\n  cert_file: nope.pem\n  key_file: a/server.key\n");
    assert!(
        missing.contains(&format!(
            "cert_file {}: ",
            tmp.path().join("nope.pem").display()
        )),
        "{missing}"
    );
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let not_pem = err("tls_server_config:\n  cert_file: garbage.pem\n  key_file: a/server.key\n");
    assert!(
        not_pem.contains("garbage.pem: ") && not_pem.contains("no certificate"),
        "{not_pem}"
    );
    let not_key = err("tls_server_config:\n  cert_file: a/server.pem\n  key_file: garbage.pem\n");
    assert!(
        not_key.contains("key_file") && not_key.contains("garbage.pem"),
        "{not_key}"
    );
    let mismatch = err("tls_server_config:\n  cert_file: a/server.pem\n  key_file: b/server.key\n");
    assert!(
        mismatch.contains(&a.file("server.pem").display().to_string())
            && mismatch.contains("do not go together"),
        "{mismatch}"
    );
    let _ = b;
    let ca = err(
        "tls_server_config:\n  cert_file: a/server.pem\n  key_file: a/server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: garbage.pem\n",
    );
    assert!(
        ca.contains("client_ca_file") && ca.contains("garbage.pem"),
        "{ca}"
    );
    let suites = err(
        "tls_server_config:\n  cert_file: a/server.pem\n  key_file: a/server.key\n  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
    );
    assert!(
        suites.contains("TLS_RSA_WITH_RC4_128_SHA is not supported"),
        "{suites}"
    );
    let curves = err(
        "tls_server_config:\n  cert_file: a/server.pem\n  key_file: a/server.key\n  curve_preferences: [CurveP521]\n",
    );
    assert!(curves.contains("CurveP521 is not supported"), "{curves}");
    // The supported ones build.
    WebServer::load(&write_config(
        tmp.path(),
        "tls_server_config:\n  cert_file: a/server.pem\n  key_file: a/server.key\n  min_version: TLS13\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [X25519, CurveP256, CurveP384]\n  prefer_server_cipher_suites: false\n",
    ))
    .expect("supported options build");
}
