//! `memtrace daemon --kubernetes on` as a DaemonSet starts it, against a stand-in API server on
//! loopback reached through a kubeconfig (the library's tests cover the watch itself against a
//! fuller fake): without a configuration or permission the daemon refuses to start and says
//! why; with them it watches its node's pods and serves.
use std::{
    io::{BufRead, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use memtrace_tests::{memtrace_bin, require_root};

use crate::support::serial;

const NODE: &str = "node-test";

/// A stand-in API server: answers each request line with `answer(request_line)`, a whole HTTP
/// response (`None`: send the head of a streamed body and keep the connection open, as a watch
/// does); records the request lines.
struct StandIn {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl StandIn {
    fn start(answer: fn(&str) -> Option<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for connection in listener.incoming().map_while(Result::ok) {
                let mut reader = BufReader::new(connection);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // The rest of the head (requests here have no body).
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                seen.lock().expect("lock").push(line.trim().to_owned());
                let mut connection = reader.into_inner();
                match answer(&line) {
                    Some(response) => {
                        let _ = connection.write_all(response.as_bytes());
                    }
                    None => {
                        let _ = connection.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                              transfer-encoding: chunked\r\n\r\n",
                        );
                        held.push(connection);
                    }
                }
            }
        });
        Self { addr, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

fn response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A kubeconfig for the stand-in, in `dir`.
fn kubeconfig(dir: &Path, server: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters: [{{name: test, cluster: {{server: 'http://{server}'}}}}]\n\
             users: [{{name: test, user: {{token: test-token}}}}]\n\
             contexts: [{{name: test, context: {{cluster: test, user: test, namespace: monitoring}}}}]\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

/// `memtrace daemon --kubernetes on` with `KUBECONFIG` = `config` (none: no kubeconfig at all),
/// outside a cluster, on node [`NODE`].
fn daemon(config: Option<&Path>, home: &Path) -> Command {
    let mut command = Command::new(memtrace_bin());
    command
        .args(["daemon", "--kubernetes", "on", "--listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(home)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBECONFIG")
        .env("HOME", home)
        .env("NODE_NAME", NODE)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(config) = config {
        command.env("KUBECONFIG", config);
    }
    command
}

/// Runs `command` to its end (at most 30 s): its exit success and stderr.
fn run_to_end(command: &mut Command) -> (bool, String) {
    let mut child = command.spawn().expect("spawn memtrace daemon");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut stderr)
                .expect("read stderr");
            return (status.success(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kubernetes_on_without_a_configuration_does_not_start() {
    let home = tempfile::tempdir().expect("tempdir");
    let (success, stderr) = run_to_end(&mut daemon(None, home.path()));
    assert!(!success, "{stderr}");
    assert!(
        stderr.contains(
            "--kubernetes on: no Kubernetes configuration (not in a cluster: \
             KUBERNETES_SERVICE_HOST unset or no service-account token"
        ),
        "{stderr}"
    );
}

#[test]
fn kubernetes_on_without_rbac_does_not_start_and_names_the_permission() {
    let server = StandIn::start(|_| {
        Some(response(
            "403 Forbidden",
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden: User \"system:serviceaccount:monitoring:memtrace\" cannot list resource \"pods\" in API group \"\" at the cluster scope","reason":"Forbidden","details":{"kind":"pods"},"code":403}"#,
        ))
    });
    let home = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(home.path(), server.addr);
    let (success, stderr) = run_to_end(&mut daemon(Some(&config), home.path()));
    assert!(!success, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the service account needs RBAC permission `list` on `pods` cluster-wide (field \
             selector spec.nodeName={NODE})"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("the server said: pods is forbidden: User"),
        "the API server's own words: {stderr}"
    );
    let requests = server.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /api/v1/pods?")
            && r.contains("fieldSelector=spec.nodeName%3Dnode-test")),
        "{requests:?}"
    );
}

#[test]
fn kubernetes_on_watches_its_nodes_pods_and_serves() {
    require_root();
    let _serial = serial();
    let server = StandIn::start(|line| {
        if line.contains("watch=true") {
            return None;
        }
        Some(response(
            "200 OK",
            r#"{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadataList","metadata":{"resourceVersion":"7"},"items":[{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadata","metadata":{"name":"redis-0","namespace":"db","uid":"0c1f7d2a-1111-4222-8333-944455556666","resourceVersion":"7","ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"redis","uid":"u","controller":true}]}}]}"#,
        ))
    });
    let home = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(home.path(), server.addr);
    let mut child = daemon(Some(&config), home.path())
        .spawn()
        .expect("spawn memtrace daemon");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (lines, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    let wanted = [
        format!("Kubernetes metadata on: watching the pods of node {NODE}"),
        format!("Kubernetes pod watch of node {NODE}: in sync, 1 pods"),
        "serving on http://".to_owned(),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !wanted
        .iter()
        .all(|w| seen.iter().any(|l: &String| l.contains(w.as_str())))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("not all of {wanted:?} logged within 20 s: {seen:#?}");
            }
        }
    }
    let serving = seen
        .iter()
        .find_map(|l| l.split("serving on http://").nth(1))
        .expect("address")
        .trim()
        .to_owned();
    let mut stream = TcpStream::connect(&serving).expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // SAFETY: signalling our own, not yet reaped, child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();

    let requests = server.requests();
    let watches: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains("watch=true"))
        .collect();
    assert!(!watches.is_empty(), "{requests:?}");
    assert!(
        watches[0].contains("resourceVersion=7"),
        "the watch starts where the list ended: {requests:?}"
    );
    assert!(
        requests.iter().all(|r| r.starts_with("GET /api/v1/pods?")
            && r.contains("fieldSelector=spec.nodeName%3Dnode-test")),
        "{requests:?}"
    );
}
