//! prometheus-operator's `monitoring.coreos.com/v1` ServiceMonitor and PrometheusRule, which
//! `k8s-openapi` does not have: the part of each that memtrace's manifests use, field names and
//! types as in the operator's CRD schema (pkg/apis/monitoring/v1: `ServiceMonitorSpec`,
//! `Endpoint`, `SafeTLSConfig`, `BasicAuth`, `PrometheusRuleSpec`, `RuleGroup`, `Rule`).
//! Every struct denies unknown fields, so a field outside this subset fails the check instead of
//! passing unread: add it here, from the CRD, when a manifest needs it. No crates.io package ships
//! the CRD schema (npm's @kubernetes-models/prometheus-operator ships compiled validators,
//! PyPI's cloudcoil-models-prometheus-operator pydantic models; kube-custom-resources-rs needs
//! kube 0.x).
use std::collections::BTreeMap;

use k8s_openapi::{
    NamespaceResourceScope, Resource,
    api::core::v1::{ConfigMapKeySelector, SecretKeySelector},
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use serde::Deserialize;

macro_rules! resource {
    ($type:ty, $kind:literal, $plural:literal) => {
        impl Resource for $type {
            const API_VERSION: &'static str = "monitoring.coreos.com/v1";
            const GROUP: &'static str = "monitoring.coreos.com";
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = NamespaceResourceScope;
        }
    };
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitor {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceMonitorSpec,
}
resource!(ServiceMonitor, "ServiceMonitor", "servicemonitors");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    pub selector: LabelSelector,
    pub namespace_selector: Option<NamespaceSelector>,
    pub endpoints: Vec<Endpoint>,
    pub job_label: Option<String>,
    pub target_labels: Option<Vec<String>>,
    pub pod_target_labels: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceSelector {
    pub any: Option<bool>,
    pub match_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Endpoint {
    pub port: Option<String>,
    pub path: Option<String>,
    pub scheme: Option<Scheme>,
    pub interval: Option<String>,
    pub scrape_timeout: Option<String>,
    pub honor_labels: Option<bool>,
    pub tls_config: Option<TlsConfig>,
    pub basic_auth: Option<BasicAuth>,
    pub relabelings: Option<Vec<RelabelConfig>>,
    pub metric_relabelings: Option<Vec<RelabelConfig>>,
}

/// The CRD's enum (`http`, `https`; newer operators accept the upper-case forms too).
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub enum Scheme {
    #[serde(rename = "http", alias = "HTTP")]
    Http,
    #[serde(rename = "https", alias = "HTTPS")]
    Https,
}

/// A `SecretOrConfigMap`: a key of a Secret or ConfigMap in the ServiceMonitor's namespace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretOrConfigMap {
    pub secret: Option<SecretKeySelector>,
    pub config_map: Option<ConfigMapKeySelector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    pub ca: Option<SecretOrConfigMap>,
    pub cert: Option<SecretOrConfigMap>,
    pub key_secret: Option<SecretKeySelector>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BasicAuth {
    pub username: SecretKeySelector,
    pub password: SecretKeySelector,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RelabelConfig {
    pub source_labels: Option<Vec<String>>,
    pub separator: Option<String>,
    pub target_label: Option<String>,
    pub regex: Option<String>,
    pub modulus: Option<u64>,
    pub replacement: Option<String>,
    pub action: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusRule {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PrometheusRuleSpec,
}
resource!(PrometheusRule, "PrometheusRule", "prometheusrules");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusRuleSpec {
    pub groups: Vec<RuleGroup>,
}

/// Prometheus' rule group, with the operator's (snake_case, as in a rules file) field names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    pub name: String,
    pub interval: Option<String>,
    pub query_offset: Option<String>,
    pub limit: Option<u64>,
    pub labels: Option<BTreeMap<String, String>>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub record: Option<String>,
    pub alert: Option<String>,
    pub expr: String,
    pub r#for: Option<String>,
    pub keep_firing_for: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}
