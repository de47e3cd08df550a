//! `memtrace cluster --kubernetes`: the daemons to ask, from the EndpointSlices of the memtrace
//! Service (`discovery.k8s.io/v1`, label `kubernetes.io/service-name=<service>`), as
//! Prometheus' `endpointslice` service discovery and Hubble Relay find their peers.
use std::collections::BTreeSet;

use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use kube::{Api, api::ListParams};

use super::{ApiServer, KubernetesError, KubernetesMode, Request};

/// The label EndpointSlices carry naming their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One daemon to ask.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// `host:port` (`[v6]:port` for IPv6).
    pub address: String,
    /// The node the endpoint's pod runs on, where the slice says.
    pub node_name: Option<String>,
}

/// The ready endpoints of Service `service` in `namespace` (`None`: the configuration's
/// namespace, the pod's own in a cluster), on its port named `port_name` (`None`: its only
/// port), as `host:port`, sorted. The configuration is the in-cluster one or the kubeconfig.
pub async fn discover_endpoints(
    namespace: Option<&str>,
    service: &str,
    port_name: Option<&str>,
) -> Result<Vec<String>, KubernetesError> {
    let config = super::config_for(KubernetesMode::On)
        .await?
        .expect("`on` always has a configuration or fails");
    let server = ApiServer::new(config)?;
    let endpoints = discover(&server, namespace, service, port_name).await?;
    Ok(endpoints.into_iter().map(|e| e.address).collect())
}

/// [`discover_endpoints`] through `server`, with each endpoint's node. An endpoint whose
/// `conditions.ready` is false is left out (unset counts as ready, as the API defines it); one in
/// several slices (while they are rebalanced) is listed once.
pub async fn discover(
    server: &ApiServer,
    namespace: Option<&str>,
    service: &str,
    port_name: Option<&str>,
) -> Result<Vec<Endpoint>, KubernetesError> {
    let namespace = namespace.unwrap_or(server.client.default_namespace());
    let request = Request {
        url: server.url.clone(),
        verb: "list",
        resource: "endpointslices",
        group: " (group discovery.k8s.io)",
        scope: format!("in namespace {namespace}"),
    };
    let api: Api<EndpointSlice> = Api::namespaced(server.client.clone(), namespace);
    let params = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
    let slices = api
        .list(&params)
        .await
        .map_err(|err| request.error(err))?
        .items;
    let mut found = BTreeSet::new();
    let mut ports_seen = BTreeSet::new();
    for slice in &slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        ports_seen.extend(ports.iter().map(port_label));
        let Some(port) = pick_port(ports, port_name) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                found.insert(Endpoint {
                    address: host_port(&slice.address_type, address, port),
                    node_name: endpoint.node_name.clone(),
                });
            }
        }
    }
    if found.is_empty() && !ports_seen.is_empty() && !slices.iter().any(|s| has_port(s, port_name))
    {
        return Err(KubernetesError::NoSuchPort {
            service: format!("{namespace}/{service}"),
            wanted: port_name.map_or_else(|| "its only port".to_owned(), |p| format!("`{p}`")),
            ports: ports_seen.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    Ok(found.into_iter().collect())
}

fn has_port(slice: &EndpointSlice, port_name: Option<&str>) -> bool {
    pick_port(slice.ports.as_deref().unwrap_or_default(), port_name).is_some()
}

/// The port number named `name` (`None`: the only one).
fn pick_port(ports: &[EndpointPort], name: Option<&str>) -> Option<u16> {
    let port = match name {
        Some(name) => ports
            .iter()
            .find(|p| p.name.as_deref().unwrap_or_default() == name)?,
        None => match ports {
            [only] => only,
            _ => return None,
        },
    };
    port.port.and_then(|n| u16::try_from(n).ok())
}

fn port_label(port: &EndpointPort) -> String {
    let number = port.port.map_or_else(|| "?".to_owned(), |n| n.to_string());
    match port.name.as_deref() {
        Some(name) if !name.is_empty() => format!("{name}={number}"),
        _ => format!("(unnamed)={number}"),
    }
}

fn host_port(address_type: &str, address: &str, port: u16) -> String {
    if address_type == "IPv6" || address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_port_with_v6_in_brackets() {
        assert_eq!(host_port("IPv4", "10.0.0.7", 9847), "10.0.0.7:9847");
        assert_eq!(host_port("IPv6", "fd00::7", 9847), "[fd00::7]:9847");
        assert_eq!(
            host_port("FQDN", "memtrace-0.memtrace.monitoring.svc", 9847),
            "memtrace-0.memtrace.monitoring.svc:9847"
        );
    }

    #[test]
    fn the_port_is_the_named_one_or_the_only_one() {
        let port = |name: Option<&str>, number| EndpointPort {
            name: name.map(str::to_owned),
            port: Some(number),
            ..EndpointPort::default()
        };
        let two = [port(Some("http"), 9847), port(Some("debug"), 6060)];
        assert_eq!(pick_port(&two, Some("http")), Some(9847));
        assert_eq!(pick_port(&two, Some("debug")), Some(6060));
        assert_eq!(pick_port(&two, None), None, "which of two is not guessed");
        assert_eq!(pick_port(&two, Some("metrics")), None);
        let unnamed = [port(None, 9847)];
        assert_eq!(pick_port(&unnamed, None), Some(9847));
        assert_eq!(pick_port(&unnamed, Some("")), Some(9847));
    }
}
