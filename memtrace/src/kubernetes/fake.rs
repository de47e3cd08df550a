//! A fake Kubernetes API server on loopback for the tests: it answers the requests memtrace
//! makes as the real one does (lists with a `resourceVersion`, `PartialObjectMetadata` when
//! asked for by `Accept`, watch streams of `ADDED`/`MODIFIED`/`DELETED` lines, `Status` bodies
//! for errors) and records every request.
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use tokio::sync::watch;

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub query: HashMap<String, String>,
    pub accept: String,
}

#[derive(Default)]
struct Objects {
    /// Pods by uid (full `Pod` objects).
    pods: BTreeMap<String, Value>,
    /// Watch events so far: (resourceVersion, type, pod).
    events: Vec<(u64, &'static str, Value)>,
    resource_version: u64,
    slices: Vec<Value>,
    /// Answer every request with this status (`Status` body) instead.
    refuse: Option<(StatusCode, String)>,
}

#[derive(Clone)]
struct Shared {
    objects: Arc<Mutex<Objects>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Bumped on every event, waking the open watches.
    changed: watch::Sender<u64>,
}

/// The fake server; it stops when dropped.
pub struct FakeApiServer {
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let shared = Shared {
            objects: Arc::default(),
            seen: Arc::default(),
            changed: watch::channel(0).0,
        };
        let app = Router::new()
            .route("/api/v1/pods", get(pods))
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                get(endpoint_slices),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/"),
            shared,
            task,
        }
    }

    /// A kube configuration pointing at this server, as an in-cluster one points at the real.
    pub fn config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.default_namespace = "monitoring".to_owned();
        config
    }

    /// Adds (or replaces) a pod, as an `ADDED` (or `MODIFIED`) event.
    pub fn apply(&self, pod: Value) {
        let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
        let mut objects = self.shared.objects.lock().unwrap();
        let kind = if objects.pods.contains_key(&uid) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        objects.pods.insert(uid, pod.clone());
        Self::event(&mut objects, kind, pod);
        drop(objects);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Deletes a pod, as a `DELETED` event.
    pub fn delete(&self, uid: &str) {
        let mut objects = self.shared.objects.lock().unwrap();
        let pod = objects.pods.remove(uid).expect("a pod to delete");
        Self::event(&mut objects, "DELETED", pod);
        drop(objects);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    fn event(objects: &mut Objects, kind: &'static str, mut pod: Value) {
        objects.resource_version += 1;
        let rv = objects.resource_version;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        objects.events.push((rv, kind, pod));
    }

    pub fn add_slice(&self, slice: Value) {
        self.shared.objects.lock().unwrap().slices.push(slice);
    }

    /// Answer everything with `status` and the API server's `Status` message `message`.
    pub fn refuse(&self, status: StatusCode, message: &str) {
        self.shared.objects.lock().unwrap().refuse = Some((status, message.to_owned()));
    }

    /// Answer normally again.
    pub fn refuse_nothing(&self) {
        self.shared.objects.lock().unwrap().refuse = None;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

/// A pod of node `node` as the API server serves it; `owner` is its controlling owner reference.
pub fn pod(
    uid: &str,
    namespace: &str,
    name: &str,
    owner: Option<(&str, &str)>,
    node: &str,
) -> Value {
    let owners: Vec<Value> = owner
        .map(|(kind, owner_name)| {
            json!({
                "apiVersion": if kind == "ReplicaSet" || kind == "StatefulSet" { "apps/v1" } else { "batch/v1" },
                "kind": kind,
                "name": owner_name,
                "uid": format!("{uid}-owner"),
                "controller": true,
                "blockOwnerDeletion": true,
            })
        })
        .into_iter()
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": "1",
            "creationTimestamp": "2026-11-30T03:00:00Z",
            "labels": {"app": name},
            "ownerReferences": owners,
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "redis:7"}],
        },
        "status": {"phase": "Running", "qosClass": "Burstable"},
    })
}

/// `pod` as `PartialObjectMetadata` when the client asked for metadata only.
fn as_served(pod: &Value, metadata_only: bool) -> Value {
    if metadata_only {
        json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": pod["metadata"],
        })
    } else {
        pod.clone()
    }
}

fn record(shared: &Shared, path: &str, query: &HashMap<String, String>, headers: &HeaderMap) {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    shared.seen.lock().unwrap().push(Seen {
        path: path.to_owned(),
        query: query.clone(),
        accept,
    });
}

fn refused(shared: &Shared) -> Option<Response> {
    let (status, message) = shared.objects.lock().unwrap().refuse.clone()?;
    let reason = status
        .canonical_reason()
        .unwrap_or_default()
        .replace(' ', "");
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": status.as_u16(),
    });
    Some((status, axum::Json(body)).into_response())
}

fn field_selector_matches(query: &HashMap<String, String>, pod: &Value) -> bool {
    match query.get("fieldSelector").map(String::as_str) {
        None | Some("") => true,
        Some(selector) => selector.split(',').all(|term| match term.split_once('=') {
            Some(("spec.nodeName", node)) => pod["spec"]["nodeName"] == node,
            _ => panic!("the fake serves no field selector {term:?}"),
        }),
    }
}

async fn pods(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    record(&shared, "/api/v1/pods", &query, &headers);
    if let Some(refusal) = refused(&shared) {
        return refusal;
    }
    let metadata_only = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=PartialObjectMetadata"));
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        return watch_stream(shared, query, from, metadata_only);
    }
    let objects = shared.objects.lock().unwrap();
    let items: Vec<Value> = objects
        .pods
        .values()
        .filter(|pod| field_selector_matches(&query, pod))
        .map(|pod| as_served(pod, metadata_only))
        .collect();
    let kind = if metadata_only {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList"})
    } else {
        json!({"apiVersion": "v1", "kind": "PodList"})
    };
    let mut list = kind;
    list["metadata"] = json!({"resourceVersion": objects.resource_version.to_string()});
    list["items"] = Value::Array(items);
    axum::Json(list).into_response()
}

/// The events after resourceVersion `from`, one JSON object a line, then each new one as it
/// happens, until the client goes away.
fn watch_stream(
    shared: Shared,
    query: HashMap<String, String>,
    from: u64,
    metadata_only: bool,
) -> Response {
    let changed = shared.changed.subscribe();
    let lines = futures::stream::unfold(
        (shared, changed, from),
        move |(shared, mut changed, mut cursor)| {
            let query = query.clone();
            async move {
                loop {
                    let chunk: String = {
                        let objects = shared.objects.lock().unwrap();
                        objects
                            .events
                            .iter()
                            .filter(|(rv, _, pod)| {
                                *rv > cursor && field_selector_matches(&query, pod)
                            })
                            .map(|(_, kind, pod)| {
                                let event =
                                    json!({"type": kind, "object": as_served(pod, metadata_only)});
                                format!("{event}\n")
                            })
                            .collect()
                    };
                    cursor = shared.objects.lock().unwrap().resource_version;
                    if !chunk.is_empty() {
                        let bytes = Ok::<_, std::io::Error>(Bytes::from(chunk));
                        return Some((bytes, (shared, changed, cursor)));
                    }
                    changed.changed().await.ok()?;
                }
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(lines))
        .unwrap()
}

async fn endpoint_slices(
    State(shared): State<Shared>,
    Path(namespace): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices");
    record(&shared, &path, &query, &headers);
    if let Some(refusal) = refused(&shared) {
        return refusal;
    }
    let wanted = query
        .get("labelSelector")
        .and_then(|selector| selector.strip_prefix("kubernetes.io/service-name="))
        .map(str::to_owned);
    let objects = shared.objects.lock().unwrap();
    let items: Vec<Value> = objects
        .slices
        .iter()
        .filter(|slice| slice["metadata"]["namespace"] == namespace.as_str())
        .filter(|slice| {
            wanted.as_deref().is_none_or(|service| {
                slice["metadata"]["labels"]["kubernetes.io/service-name"] == service
            })
        })
        .cloned()
        .collect();
    axum::Json(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSliceList",
        "metadata": {"resourceVersion": objects.resource_version.to_string()},
        "items": items,
    }))
    .into_response()
}

/// An EndpointSlice of Service `service` in `namespace` as the EndpointSlice controller writes
/// it; `endpoints` are (address, ready, node).
pub fn endpoint_slice(
    namespace: &str,
    service: &str,
    name: &str,
    address_type: &str,
    ports: &[(&str, i32)],
    endpoints: &[(&str, Option<bool>, Option<&str>)],
) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(address, ready, node)| {
            let mut endpoint = json!({
                "addresses": [address],
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": format!("memtrace-{address}")},
            });
            if let Some(ready) = ready {
                endpoint["conditions"] =
                    json!({"ready": ready, "serving": ready, "terminating": false});
            }
            if let Some(node) = node {
                endpoint["nodeName"] = json!(node);
            }
            endpoint
        })
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port_name, port)| json!({"name": port_name, "port": port, "protocol": "TCP"}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports,
    })
}
