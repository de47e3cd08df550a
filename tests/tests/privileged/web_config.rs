//! `--web-config-file` on a real daemon: HTTPS with client certificates and basic auth, asked by
//! memtrace's own client and scraped by a real Prometheus with `scheme: https`, `tls_config` and
//! `basic_auth` (the config a Prometheus user writes for any exporter).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use memtrace::web::client::ClientOptions;
use memtrace_tests::{memtrace_bin, require_root};

use crate::support::{serial, spawn_daemon};

/// A CA and, signed by it, a server certificate for 127.0.0.1 and a client certificate.
fn pki(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "memtrace test CA");
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
}

/// A `memtrace daemon` with `--web-config-file`, stopped with SIGTERM on drop.
struct SecuredDaemon {
    child: Child,
    addr: SocketAddr,
    _state: tempfile::TempDir,
}

impl SecuredDaemon {
    fn start(web_config: &Path) -> Self {
        let state = tempfile::tempdir().expect("state");
        let mut command = Command::new(memtrace_bin());
        command
            .args(["daemon", "--listen", "127.0.0.1:0", "--interval", "1s"])
            .arg("--state-dir")
            .arg(state.path())
            .arg("--web-config-file")
            .arg(web_config);
        let (child, serving) = spawn_daemon(command);
        assert!(
            serving.starts_with("https://") && serving.ends_with(" (basic auth)"),
            "{serving}"
        );
        let addr = serving
            .trim_start_matches("https://")
            .trim_end_matches(" (basic auth)")
            .parse()
            .expect("address");
        Self {
            child,
            addr,
            _state: state,
        }
    }
}

impl Drop for SecuredDaemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Client options with the test PKI's CA, and optionally its client certificate and a password.
fn client(dir: &Path, cert: bool, password_file: Option<PathBuf>) -> ClientOptions {
    ClientOptions {
        ca_file: Some(dir.join("ca.pem")),
        cert_file: cert.then(|| dir.join("client.pem")),
        key_file: cert.then(|| dir.join("client.key")),
        username: password_file.as_ref().map(|_| "prometheus".to_owned()),
        password_file,
        insecure_skip_verify: false,
    }
}

/// GET `path`: the body, or the client's one-line error.
fn get(options: &ClientOptions, addr: SocketAddr, path: &str) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = options
            .build(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let response = options
            .get(&client, &addr.to_string(), path)
            .await
            .map_err(|e| e.to_string())?;
        response.text().await.map_err(|e| e.to_string())
    })
}

/// Instant query of a plain-HTTP Prometheus on loopback: the values of the result vector.
fn query(prometheus: SocketAddr, promql: &str) -> Vec<f64> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let Ok(mut response) = agent
        .get(&format!("http://{prometheus}/api/v1/query"))
        .query("query", promql)
        .call()
    else {
        return Vec::new();
    };
    let body: serde_json::Value = response.body_mut().read_json().expect("query JSON");
    body["data"]["result"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .filter_map(|r| r["value"][1].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn https_client_certificates_and_basic_auth_on_a_real_daemon_and_prometheus() {
    require_root();
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    pki(d);
    let hash = bcrypt::hash("scrape-secret", 6).expect("hash");
    let web = d.join("web.yml");
    // Relative paths: resolved against the file's directory, as exporter-toolkit does.
    std::fs::write(
        &web,
        format!(
            "tls_server_config:
  cert_file: server.pem
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.pem
basic_auth_users:
  prometheus: {hash}
"
        ),
    )
    .expect("write web.yml");
    let password = d.join("password");
    std::fs::write(&password, "scrape-secret\n").expect("write");
    let wrong = d.join("wrong");
    std::fs::write(&wrong, "guess").expect("write");

    let daemon = SecuredDaemon::start(&web);
    let addr = daemon.addr;
    // Ready (health probes need no password, but a client certificate like every connection).
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&client(d, true, None), addr, "/readyz").as_deref() != Ok("ready") {
        assert!(Instant::now() < deadline, "daemon not ready within 15 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    let metrics = get(&client(d, true, Some(password.clone())), addr, "/metrics")
        .expect("an authenticated HTTPS scrape");
    assert!(metrics.contains("\nmemtrace_build_info{"), "{metrics}");
    assert_eq!(
        get(&client(d, true, Some(wrong.clone())), addr, "/metrics"),
        Err(format!(
            "401 Unauthorized from {addr}: wrong username or password"
        ))
    );
    let err = get(&client(d, true, None), addr, "/api/v1/snapshot").unwrap_err();
    assert!(
        err.starts_with(&format!(
            "401 Unauthorized from {addr}: it asks for a username"
        )),
        "{err}"
    );
    assert_eq!(
        get(&client(d, false, Some(password.clone())), addr, "/metrics"),
        Err(format!(
            "{addr} requires a client certificate (its client_auth_type): give --cert-file and \
             --key-file"
        ))
    );
    // Plain HTTP is not served on the TLS port.
    let (status, _) = crate::daemon::get(addr, "/metrics");
    assert_eq!(status, 0, "no plain-HTTP answer");

    // `memtrace cluster` fans out to it with the matching client options, and says per node
    // what is wrong when they do not match.
    let cluster = |extra: &[&str]| {
        let output = Command::new(memtrace_bin())
            .args([
                "cluster",
                "nodes",
                "-o",
                "json",
                "--nodes",
                &addr.to_string(),
            ])
            .arg("--ca-file")
            .arg(d.join("ca.pem"))
            .args(extra)
            .output()
            .expect("run memtrace cluster");
        let view: memtrace_api::cluster::NodesView = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| {
                panic!(
                    "cluster nodes -o json: {err}: {}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        (output.status.code(), view.coverage)
    };
    let (cert, key) = (d.join("client.pem"), d.join("client.key"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (right, wrong) = (password.to_str().unwrap(), wrong.to_str().unwrap());
    let credentials = ["--username", "prometheus", "--password-file"];
    let (code, coverage) = cluster(
        &[
            &["--cert-file", cert, "--key-file", key][..],
            &credentials,
            &[right],
        ]
        .concat(),
    );
    assert_eq!((code, coverage.answered), (Some(0), 1), "{coverage:?}");
    let (code, coverage) = cluster(
        &[
            &["--cert-file", cert, "--key-file", key][..],
            &credentials,
            &[wrong],
        ]
        .concat(),
    );
    assert_eq!((code, coverage.answered), (Some(4), 0), "{coverage:?}");
    assert!(
        coverage.failures[0]
            .error
            .contains("wrong username or password"),
        "{coverage:?}"
    );
    let (code, coverage) = cluster(&[&credentials[..], &[right]].concat());
    assert_eq!(code, Some(4), "{coverage:?}");
    assert!(
        coverage.failures[0]
            .error
            .contains("requires a client certificate"),
        "{coverage:?}"
    );

    // A real Prometheus scrapes it with the config it would use for any exporter.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = d.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:
  scrape_interval: 1s
scrape_configs:
  - job_name: memtrace
    scheme: https
    tls_config:
      ca_file: {ca}
      cert_file: {cert}
      key_file: {key}
    basic_auth:
      username: prometheus
      password_file: {password}
    static_configs:
      - targets: ['{addr}']
  - job_name: memtrace-wrong-password
    scheme: https
    tls_config:
      ca_file: {ca}
      cert_file: {cert}
      key_file: {key}
    basic_auth:
      username: prometheus
      password: guess
    static_configs:
      - targets: ['{addr}']
",
            ca = d.join("ca.pem").display(),
            cert = d.join("client.pem").display(),
            key = d.join("client.key").display(),
            password = password.display(),
        ),
    )
    .expect("write prometheus.yml");
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", d.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run prometheus (Debian package `prometheus`; cargo xtask test installs it)");
    let prometheus_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (up, rejected) = loop {
        let up = query(prometheus_addr, "up{job=\"memtrace\"}");
        let rejected = query(prometheus_addr, "up{job=\"memtrace-wrong-password\"}");
        if up == [1.0] && rejected == [0.0] {
            break (up, rejected);
        }
        if Instant::now() > deadline {
            break (up, rejected);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let series = query(
        prometheus_addr,
        "count({job=\"memtrace\", __name__=~\"memtrace_.*\"})",
    );
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(
        up,
        [1.0],
        "Prometheus scrapes the daemon over HTTPS with basic auth"
    );
    assert_eq!(rejected, [0.0], "a wrong password fails the scrape");
    assert!(series.first().is_some_and(|n| *n > 10.0), "{series:?}");
}

#[test]
fn a_bad_web_config_stops_the_daemon_naming_the_file() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n",
    )
    .expect("write");
    let output = Command::new(memtrace_bin())
        .args(["daemon", "--listen", "127.0.0.1:0", "--web-config-file"])
        .arg(&web)
        .stdin(Stdio::null())
        .output()
        .expect("run memtrace daemon");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "web config file {}: cert_file {}: ",
            web.display(),
            dir.path().join("missing.pem").display()
        )),
        "{stderr}"
    );
    std::fs::write(&web, "basic_auth_users:\n  alice: hunter2\n").expect("write");
    let output = Command::new(memtrace_bin())
        .args(["daemon", "--listen", "127.0.0.1:0", "--web-config-file"])
        .arg(&web)
        .stdin(Stdio::null())
        .output()
        .expect("run memtrace daemon");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("basic_auth_users.alice: not a bcrypt hash"),
        "{stderr}"
    );
}
