//! The pod watch and the discovery against [`FakeApiServer`]: kube's real client and watcher,
//! over HTTP on loopback, answered as the API server answers.
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::fake::{FakeApiServer, endpoint_slice, pod};
use super::*;
use crate::workload::{Controller, PodMeta};

const NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(10);

/// Polls `condition` until it holds or [`WAIT`] passes.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn server(fake: &FakeApiServer) -> ApiServer {
    ApiServer::new(fake.config()).expect("a client")
}

#[tokio::test]
async fn the_watch_follows_this_nodes_pods_by_uid() {
    let fake = FakeApiServer::start().await;
    fake.apply(pod(
        "uid-web",
        "shop",
        "web-7d9f8b6c5d-x2x9q",
        Some(("ReplicaSet", "web-7d9f8b6c5d")),
        NODE,
    ));
    fake.apply(pod("uid-bare", "default", "debug", None, NODE));
    fake.apply(pod(
        "uid-elsewhere",
        "shop",
        "web-7d9f8b6c5d-aaaaa",
        Some(("ReplicaSet", "web-7d9f8b6c5d")),
        "node-b",
    ));
    let watch = watch_pods(&server(&fake), KubernetesMode::On, NODE, WAIT)
        .await
        .expect("the check lists pods");

    eventually("the initial list", || watch.health().synced()).await;
    assert_eq!(
        watch.pod("uid-web"),
        Some(PodMeta {
            namespace: "shop".to_owned(),
            name: "web-7d9f8b6c5d-x2x9q".to_owned(),
            controller: Some(Controller {
                kind: "ReplicaSet".to_owned(),
                name: "web-7d9f8b6c5d".to_owned(),
            }),
        }),
        "a ReplicaSet's pod names its ReplicaSet (the key strips the hash)"
    );
    assert_eq!(
        watch.pod("uid-bare"),
        Some(PodMeta {
            namespace: "default".to_owned(),
            name: "debug".to_owned(),
            controller: None,
        })
    );
    assert_eq!(watch.pod("uid-elsewhere"), None, "another node's pod");
    assert_eq!(watch.len(), 2);

    // Added, modified and deleted while watching.
    fake.apply(pod(
        "uid-db",
        "shop",
        "redis-0",
        Some(("StatefulSet", "redis")),
        NODE,
    ));
    eventually("ADDED", || watch.pod("uid-db").is_some()).await;
    assert_eq!(
        watch.pod("uid-db").unwrap().controller,
        Some(Controller {
            kind: "StatefulSet".to_owned(),
            name: "redis".to_owned()
        })
    );
    fake.apply(pod(
        "uid-bare",
        "default",
        "debug",
        Some(("Job", "debug-run")),
        NODE,
    ));
    eventually("MODIFIED", || {
        watch
            .pod("uid-bare")
            .and_then(|p| p.controller)
            .map(|c| c.kind)
            == Some("Job".to_owned())
    })
    .await;
    fake.delete("uid-web");
    eventually("DELETED", || watch.pod("uid-web").is_none()).await;
    assert_eq!(watch.len(), 2);
    assert_eq!(watch.health().errors(), 0);

    // Every request asked for this node's pods only, and for their metadata only.
    let seen = fake.seen();
    let watches = seen
        .iter()
        .filter(|s| s.query.get("watch").is_some_and(|w| w == "true"))
        .count();
    assert!(watches >= 1, "a watch was opened: {seen:?}");
    assert!(seen.len() >= 3, "check, list, watch: {seen:?}");
    for request in &seen {
        assert_eq!(request.path, "/api/v1/pods");
        assert_eq!(
            request.query.get("fieldSelector").map(String::as_str),
            Some("spec.nodeName=node-a"),
            "{request:?}"
        );
        assert!(
            request.accept.contains("as=PartialObjectMetadata"),
            "metadata only: {request:?}"
        );
    }
}

const FORBIDDEN_PODS: &str = "pods is forbidden: User \"system:serviceaccount:monitoring:memtrace\" \
     cannot list resource \"pods\" in API group \"\" at the cluster scope";

#[tokio::test]
async fn missing_rbac_names_the_permission() {
    let fake = FakeApiServer::start().await;
    fake.refuse(StatusCode::FORBIDDEN, FORBIDDEN_PODS);
    let err = watch_pods(&server(&fake), KubernetesMode::On, NODE, WAIT)
        .await
        .expect_err("on: refused is an error");
    assert!(
        matches!(
            err,
            KubernetesError::Forbidden {
                verb: "list",
                resource: "pods",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the Kubernetes API server at {url} refused to list pods cluster-wide (field \
             selector spec.nodeName=node-a): the service account needs RBAC permission `list` \
             on `pods` cluster-wide (field selector spec.nodeName=node-a) (README \"Kubernetes \
             metadata\"); the server said: {FORBIDDEN_PODS}",
            url = fake.url
        )
    );

    // auto: the daemon starts; the watch keeps failing, counted, and lookups answer nothing.
    let watch = watch_pods(&server(&fake), KubernetesMode::Auto, NODE, WAIT)
        .await
        .expect("auto: refused is a warning");
    eventually("the watch's errors are counted", || {
        watch.health().errors() >= 1
    })
    .await;
    assert!(!watch.health().synced());
    assert!(watch.pod("uid-web").is_none());

    // Granted later: the watch recovers by itself (kube's backoff retries it).
    fake.apply(pod("uid-web", "shop", "web", None, NODE));
    fake.refuse_nothing();
    eventually("recovered after the grant", || {
        watch.pod("uid-web").is_some()
    })
    .await;
    assert!(watch.health().synced());
}

#[tokio::test]
async fn an_unreachable_or_silent_server_is_a_clear_error() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let config = kube::Config::new(url.parse().unwrap());
    let err = watch_pods(
        &ApiServer::new(config).unwrap(),
        KubernetesMode::On,
        NODE,
        WAIT,
    )
    .await
    .expect_err("nothing answers");
    assert!(
        matches!(err, KubernetesError::Unreachable { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("cannot reach the Kubernetes API server at {url} to list pods")
    );
    let chain = error_chain(&err);
    assert!(
        chain.to_lowercase().contains("connect"),
        "the cause is said: {chain}"
    );

    // A server that accepts and never answers: the start-up check gives up in time.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            open.push(connection);
        }
    });
    let config = kube::Config::new(url.parse().unwrap());
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let err = watch_pods(
        &ApiServer::new(config).unwrap(),
        KubernetesMode::On,
        NODE,
        timeout,
    )
    .await
    .expect_err("no answer");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        err.to_string(),
        format!("the Kubernetes API server at {url} did not answer within 300ms to list pods")
    );
    held.abort();
}

#[tokio::test]
async fn discovery_lists_the_ready_endpoints_of_the_service() {
    let fake = FakeApiServer::start().await;
    let ports = [("http", 9847), ("debug", 6060)];
    fake.add_slice(endpoint_slice(
        "monitoring",
        "memtrace",
        "memtrace-abcde",
        "IPv4",
        &ports,
        &[
            ("10.0.1.7", Some(true), Some("node-a")),
            ("10.0.2.7", Some(false), Some("node-b")),
            ("10.0.3.7", None, Some("node-c")),
        ],
    ));
    // Rebalancing: one endpoint in two slices.
    fake.add_slice(endpoint_slice(
        "monitoring",
        "memtrace",
        "memtrace-fghij",
        "IPv4",
        &ports,
        &[
            ("10.0.1.7", Some(true), Some("node-a")),
            ("10.0.4.7", Some(true), None),
        ],
    ));
    fake.add_slice(endpoint_slice(
        "monitoring",
        "memtrace",
        "memtrace-v6",
        "IPv6",
        &ports,
        &[("fd00::5", Some(true), Some("node-e"))],
    ));
    // Another Service's, and memtrace's of another namespace.
    fake.add_slice(endpoint_slice(
        "monitoring",
        "grafana",
        "grafana-xyz",
        "IPv4",
        &[("http", 3000)],
        &[("10.0.9.9", Some(true), Some("node-a"))],
    ));
    fake.add_slice(endpoint_slice(
        "staging",
        "memtrace",
        "memtrace-stg",
        "IPv4",
        &ports,
        &[("10.1.0.1", Some(true), Some("node-z"))],
    ));
    let server = server(&fake);

    let found = discover(&server, None, "memtrace", Some("http"))
        .await
        .unwrap();
    let endpoint = |address: &str, node: Option<&str>| Endpoint {
        address: address.to_owned(),
        node_name: node.map(str::to_owned),
    };
    assert_eq!(
        found,
        vec![
            endpoint("10.0.1.7:9847", Some("node-a")),
            endpoint("10.0.3.7:9847", Some("node-c")),
            endpoint("10.0.4.7:9847", None),
            endpoint("[fd00::5]:9847", Some("node-e")),
        ],
        "ready (or unset) only, once each, the configuration's namespace"
    );
    let debug = discover(&server, Some("monitoring"), "memtrace", Some("debug"))
        .await
        .unwrap();
    assert_eq!(debug[0], endpoint("10.0.1.7:6060", Some("node-a")));
    let staging = discover(&server, Some("staging"), "memtrace", Some("http"))
        .await
        .unwrap();
    assert_eq!(staging, vec![endpoint("10.1.0.1:9847", Some("node-z"))]);
    assert!(
        discover(&server, None, "absent", Some("http"))
            .await
            .unwrap()
            .is_empty(),
        "a Service without slices has no endpoints"
    );

    let err = discover(&server, None, "memtrace", Some("metrics"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Service monitoring/memtrace has no port `metrics` (its EndpointSlices have: \
         debug=6060, http=9847)"
    );
    let err = discover(&server, None, "memtrace", None).await.unwrap_err();
    assert!(
        err.to_string().contains("has no port its only port"),
        "two ports, none named: {err}"
    );

    let selectors: Vec<String> = fake
        .seen()
        .iter()
        .map(|s| s.query.get("labelSelector").cloned().unwrap_or_default())
        .collect();
    assert_eq!(selectors.len(), 6, "one list per discovery");
    assert!(
        selectors[..3]
            .iter()
            .chain(&selectors[4..])
            .all(|s| s == "kubernetes.io/service-name=memtrace"),
        "{selectors:?}"
    );
    assert_eq!(selectors[3], "kubernetes.io/service-name=absent");

    fake.refuse(
        StatusCode::FORBIDDEN,
        "endpointslices.discovery.k8s.io is forbidden: User \
         \"system:serviceaccount:monitoring:memtrace\" cannot list resource \"endpointslices\" \
         in API group \"discovery.k8s.io\" in the namespace \"monitoring\"",
    );
    let err = discover(&server, None, "memtrace", Some("http"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "the Kubernetes API server at {} refused to list endpointslices in namespace \
             monitoring: the service account needs RBAC permission `list` on `endpointslices` \
             (group discovery.k8s.io) in namespace monitoring",
            fake.url
        )),
        "{err}"
    );
}
