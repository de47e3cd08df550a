use std::io::Read as _;

use memtrace_api::workloads::{
    InstanceHistory, InstanceSummary, WorkloadSummary, WorkloadsResponse,
};

use super::*;
use crate::export::http::{Limits, serve};

fn built() -> WorkloadsResponse {
    let mut response = WorkloadsResponse::default();
    response.history.step_seconds = 60;
    response.workloads = vec![WorkloadSummary {
        workload: "redis-server".to_owned(),
        instances: vec![InstanceSummary {
            instance: "pid/10".to_owned(),
            rss_anon_bytes: 300 << 20,
            history: InstanceHistory {
                start_unix_s: 600,
                rss_anon_bytes: (1..=180).map(|m| m << 20).collect(),
                rss_bytes: (1..=180).map(|m| (m + 1) << 20).collect(),
                reclaim_stall_seconds_per_sec: vec![0.0; 180],
            },
            ..InstanceSummary::default()
        }],
        ..WorkloadSummary::default()
    }];
    response
}

/// A server whose model owner answers every workloads request with [`built`].
async fn server() -> (std::net::SocketAddr, Arc<AppState>) {
    let (requests, mut queue) = tokio::sync::mpsc::channel::<Request>(8);
    tokio::spawn(async move {
        let built = Arc::new(built());
        while let Some(request) = queue.recv().await {
            if let Request::Workloads(reply) = request {
                let _ = reply.send(Arc::clone(&built));
            }
        }
    });
    let state = Arc::new(AppState::for_tests(requests));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        Arc::clone(&state),
        Limits::default(),
        std::future::pending(),
    ));
    (addr, state)
}

fn client() -> reqwest::Client {
    // Decompression off: the test sees the bytes on the wire.
    reqwest::Client::builder().no_gzip().build().unwrap()
}

async fn get_json(
    addr: std::net::SocketAddr,
    query: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = client()
        .get(format!("http://{addr}/api/v1/workloads{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers().get("content-encoding"), None);
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn points(value: &serde_json::Value) -> (u64, usize) {
    let history = &value["workloads"][0]["instances"][0]["history"];
    (
        history["start_unix_s"].as_u64().unwrap(),
        history["rss_bytes"].as_array().map_or(0, Vec::len),
    )
}

#[tokio::test]
async fn history_query_selects_how_much_is_sent() {
    let (addr, state) = server().await;
    let (status, body) = get_json(addr, "").await;
    assert_eq!(status, 200);
    assert_eq!(points(&body), (600 + 60 * 60, 120), "2 h by default");
    assert_eq!(body["node"]["ready"], false, "the served readiness");
    state.readiness.ready.store(true, Ordering::Release);
    let (_, body) = get_json(addr, "?history=10m").await;
    assert_eq!(points(&body), (600 + 170 * 60, 10));
    assert_eq!(body["node"]["ready"], true);
    let (_, body) = get_json(addr, "?history=600").await;
    assert_eq!(points(&body), (600 + 170 * 60, 10), "bare seconds");
    let (_, body) = get_json(addr, "?history=0").await;
    let history = &body["workloads"][0]["instances"][0]["history"];
    assert_eq!(history["rss_bytes"], serde_json::json!([]), "none");
    let (_, body) = get_json(addr, "?history=30d&other=1").await;
    assert_eq!(points(&body).1, 180, "all that is kept");
    let (status, body) = get_json(addr, "?history=soon").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("history: invalid duration 'soon'"),
        "{body}"
    );
}

#[tokio::test]
async fn gzip_when_the_client_accepts_it() {
    let (addr, _) = server().await;
    let url = format!("http://{addr}/api/v1/workloads");
    let plain = client().get(&url).send().await.unwrap();
    assert_eq!(plain.headers().get("content-encoding"), None);
    let plain = plain.bytes().await.unwrap();
    let zipped = client()
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.status(), 200);
    assert_eq!(zipped.headers().get("content-encoding").unwrap(), "gzip");
    assert_eq!(
        zipped.headers().get("content-type").unwrap(),
        "application/json"
    );
    let zipped = zipped.bytes().await.unwrap();
    assert!(
        zipped.len() * 3 < plain.len(),
        "{} vs {}",
        zipped.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
    let read: WorkloadsResponse = serde_json::from_slice(&unzipped).unwrap();
    assert_eq!(read.workloads[0].workload, "redis-server");
    // Other routes are not compressed (their bytes stay as they were).
    let metrics = client()
        .get(format!("http://{addr}/healthz"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.headers().get("content-encoding"), None);
}
