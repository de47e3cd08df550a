//! Kubernetes metadata, the standard way for a DaemonSet: kube-rs against the API server with the
//! pod's service account.
//!
//! Two uses, each with its own module: [`pods`] watches the pods of this node (field selector
//! `spec.nodeName=<node>`, metadata only) so the workload key can name a pod's controller
//! ([`crate::workload::PodLookup`]); [`discovery`] lists the ready endpoints of the memtrace
//! Service for `memtrace cluster --kubernetes`. Both are optional: without the API server the
//! daemon still knows each process's pod uid from its cgroup path ([`crate::cgroup::identify`]).
//!
//! RBAC (README "Kubernetes metadata"): `get`, `list`, `watch` on `pods` cluster-wide (a
//! ClusterRole: the field selector narrows what is sent, not what must be allowed), and `list`
//! on `endpointslices` (group `discovery.k8s.io`) in the memtrace namespace for discovery.
use std::{path::Path, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use crate::workload::PodLookup;

pub mod discovery;
pub mod pods;

pub use self::discovery::{Endpoint, discover, discover_endpoints};
pub use self::pods::{PodWatch, WatchHealth};

/// Where a pod's service account token is mounted (with `KUBERNETES_SERVICE_HOST`, the sign of
/// running in a cluster).
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// How long the start-up check of the pod watch's permission may take: the daemon starts
/// without metadata (`auto`) or fails clearly (`on`) rather than wait on the API server.
pub const STARTUP_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// `--kubernetes`: whether the daemon reads pod metadata from the API server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KubernetesMode {
    /// On when running in a cluster (`KUBERNETES_SERVICE_HOST` set and a service-account token
    /// mounted), off otherwise.
    #[default]
    Auto,
    /// Required: the daemon does not start without a Kubernetes configuration (in-cluster, or
    /// a kubeconfig) and permission to watch this node's pods.
    On,
    /// Never: workloads of pods are keyed by the pod uid of their cgroup path.
    Off,
}

/// What talking to the API server can fail with; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error(
        "--kubernetes on: no Kubernetes configuration (not in a cluster: KUBERNETES_SERVICE_HOST \
         unset or no service-account token at {SERVICE_ACCOUNT_TOKEN}; and no kubeconfig)"
    )]
    NoConfig(#[source] kube::config::InferConfigError),
    #[error("in-cluster Kubernetes configuration unusable")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("building the Kubernetes client for {url}")]
    Client {
        url: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the Kubernetes API server at {url} refused to {verb} {resource} {scope}: the service \
         account needs RBAC permission `{verb}` on `{resource}`{group} {scope} (README \
         \"Kubernetes metadata\"); the server said: {message}"
    )]
    Forbidden {
        url: String,
        verb: &'static str,
        resource: &'static str,
        /// ` (group discovery.k8s.io)` or empty for the core group.
        group: &'static str,
        /// `cluster-wide` or `in namespace <ns>`.
        scope: String,
        message: String,
    },
    #[error(
        "the Kubernetes API server at {url} rejected the credentials (401) to {verb} {resource}: \
         {message}"
    )]
    Unauthorized {
        url: String,
        verb: &'static str,
        resource: &'static str,
        message: String,
    },
    #[error("the Kubernetes API server at {url} answered {code} to {verb} {resource}: {message}")]
    Api {
        url: String,
        verb: &'static str,
        resource: &'static str,
        code: u16,
        message: String,
    },
    #[error("cannot reach the Kubernetes API server at {url} to {verb} {resource}")]
    Unreachable {
        url: String,
        verb: &'static str,
        resource: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("Service {service} has no port {wanted} (its EndpointSlices have: {ports})")]
    NoSuchPort {
        service: String,
        wanted: String,
        ports: String,
    },
    #[error(
        "the Kubernetes API server at {url} did not answer within {timeout:?} to {verb} {resource}"
    )]
    Timeout {
        url: String,
        verb: &'static str,
        resource: &'static str,
        timeout: Duration,
    },
}

/// One request of ours, for naming it in errors (`list pods cluster-wide`).
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub url: String,
    pub verb: &'static str,
    pub resource: &'static str,
    pub group: &'static str,
    pub scope: String,
}

impl Request {
    /// `error` of this request, told apart by what the user has to fix.
    pub(crate) fn error(&self, error: kube::Error) -> KubernetesError {
        let Self {
            url,
            verb,
            resource,
            group,
            scope,
        } = self.clone();
        match error {
            kube::Error::Api(status) if status.code == 403 => KubernetesError::Forbidden {
                url,
                verb,
                resource,
                group,
                scope,
                message: status.message,
            },
            kube::Error::Api(status) if status.code == 401 => KubernetesError::Unauthorized {
                url,
                verb,
                resource,
                message: status.message,
            },
            kube::Error::Api(status) => KubernetesError::Api {
                url,
                verb,
                resource,
                code: status.code,
                message: status.message,
            },
            source => KubernetesError::Unreachable {
                url,
                verb,
                resource,
                source,
            },
        }
    }

    pub(crate) fn timeout(&self, timeout: Duration) -> KubernetesError {
        KubernetesError::Timeout {
            url: self.url.clone(),
            verb: self.verb,
            resource: self.resource,
            timeout,
        }
    }
}

/// Whether this process runs in a pod: the API server's address in the environment and a
/// service-account token mounted at `token`.
pub fn in_cluster(service_host: Option<&str>, token: &Path) -> bool {
    service_host.is_some_and(|host| !host.is_empty()) && token.is_file()
}

/// A client of one API server, with the server's address for messages (kube's client does not
/// say it).
#[derive(Clone)]
pub struct ApiServer {
    pub client: kube::Client,
    pub url: String,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").field("url", &self.url).finish()
    }
}

impl ApiServer {
    /// A client for `config` (no request is made yet).
    pub fn new(config: kube::Config) -> Result<Self, KubernetesError> {
        let url = config.cluster_url.to_string();
        match kube::Client::try_from(config) {
            Ok(client) => Ok(Self { client, url }),
            Err(source) => Err(KubernetesError::Client { url, source }),
        }
    }
}

/// `error` and its sources on one line, for logs.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // kube's errors repeat their source in their own message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The configuration `mode` asks for: `None` when metadata is off (or `auto` outside a cluster).
/// `on` takes the in-cluster configuration or, outside a cluster, the kubeconfig (`KUBECONFIG`
/// or `~/.kube/config`), as kubectl does.
pub async fn config_for(mode: KubernetesMode) -> Result<Option<kube::Config>, KubernetesError> {
    let in_cluster = in_cluster(
        std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
        Path::new(SERVICE_ACCOUNT_TOKEN),
    );
    match mode {
        KubernetesMode::Off => Ok(None),
        KubernetesMode::Auto if !in_cluster => Ok(None),
        KubernetesMode::Auto => kube::Config::incluster()
            .map(Some)
            .map_err(KubernetesError::InCluster),
        KubernetesMode::On => kube::Config::infer()
            .await
            .map(Some)
            .map_err(KubernetesError::NoConfig),
    }
}

/// Pod metadata of node `node_name` for the workload key, as `mode` asks: `None` when off (or
/// `auto` outside a cluster). Checks that this node's pods may be listed: with `on` at once, and
/// a refusal (RBAC), an unreachable server or one that does not answer within
/// [`STARTUP_CHECK_TIMEOUT`] is the error; with `auto` in the background, logged, while the
/// watch retries with backoff. The watch runs on its own task; lookups never wait for it.
pub async fn pod_lookup(
    mode: KubernetesMode,
    node_name: &str,
) -> Result<Option<Arc<dyn PodLookup>>, KubernetesError> {
    let Some(config) = config_for(mode).await? else {
        tracing::info!("Kubernetes metadata off (--kubernetes {mode:?}): pods keyed by uid");
        return Ok(None);
    };
    let server = ApiServer::new(config)?;
    let watch: Arc<dyn PodLookup> =
        watch_pods(&server, mode, node_name, STARTUP_CHECK_TIMEOUT).await?;
    Ok(Some(watch))
}

/// [`pod_lookup`] through `server`: the start-up check, within `timeout`, then the watch.
pub async fn watch_pods(
    server: &ApiServer,
    mode: KubernetesMode,
    node_name: &str,
    timeout: Duration,
) -> Result<Arc<PodWatch>, KubernetesError> {
    if mode == KubernetesMode::On {
        let pods = pods::check_access(server, node_name, timeout).await?;
        tracing::info!(
            "Kubernetes metadata on: watching the pods of node {node_name} on {} ({pods} now)",
            server.url
        );
    } else {
        // `auto` starts at once; the check only says early and clearly what is wrong.
        let (server, node) = (server.clone(), node_name.to_owned());
        tokio::spawn(async move {
            match pods::check_access(&server, &node, timeout).await {
                Ok(pods) => tracing::info!(
                    "Kubernetes metadata on: watching the pods of node {node} on {} ({pods} now)",
                    server.url
                ),
                Err(err) => tracing::warn!(
                    "Kubernetes metadata: {}; the watch retries with backoff, pods keyed by uid \
                     until it succeeds",
                    error_chain(&err)
                ),
            }
        });
    }
    Ok(PodWatch::spawn(server, node_name))
}

#[cfg(test)]
mod api_tests;
#[cfg(test)]
pub(crate) mod fake;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_needs_both_the_service_host_and_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        assert!(!in_cluster(Some("10.96.0.1"), &token), "no token");
        std::fs::write(&token, "t").unwrap();
        assert!(in_cluster(Some("10.96.0.1"), &token));
        assert!(!in_cluster(None, &token), "no KUBERNETES_SERVICE_HOST");
        assert!(!in_cluster(Some(""), &token));
        assert!(!in_cluster(Some("10.96.0.1"), dir.path()), "a directory");
    }

    #[tokio::test]
    async fn off_is_no_lookup_without_asking_anyone() {
        assert!(config_for(KubernetesMode::Off).await.unwrap().is_none());
        assert!(
            pod_lookup(KubernetesMode::Off, "node-a")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn modes_parse_as_flag_and_config_value() {
        use clap::ValueEnum as _;
        for (text, mode) in [
            ("auto", KubernetesMode::Auto),
            ("on", KubernetesMode::On),
            ("off", KubernetesMode::Off),
        ] {
            assert_eq!(KubernetesMode::from_str(text, false).unwrap(), mode);
            let value: toml::Value = toml::Value::try_from(mode).unwrap();
            assert_eq!(value.as_str(), Some(text));
        }
        assert_eq!(KubernetesMode::default(), KubernetesMode::Auto);
    }
}
