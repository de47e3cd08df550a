//! Which daemons `memtrace cluster` asks: targets given by hand (`--nodes`, `--nodes-file`) or
//! discovered (`--dns`, `--prometheus`), merged and deduplicated.
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use reqwest::Url;
use serde::Deserialize;

use crate::daemon::DEFAULT_LISTEN;

/// The port a target without one is reached at: the daemon's default `--listen` port.
pub fn default_port() -> u16 {
    DEFAULT_LISTEN
        .parse::<SocketAddr>()
        .map_or(9847, |addr| addr.port())
}

/// Where the targets come from (any combination; the union is asked).
#[derive(Args, Clone, Debug, Default)]
pub struct TargetArgs {
    /// Daemons to ask: host:port, host (port 9847), or an http:// or https:// URL;
    /// comma-separated or repeated.
    #[arg(long, value_name = "HOST:PORT,…", value_delimiter = ',')]
    pub nodes: Vec<String>,

    /// A file of targets, one per line (same forms as --nodes); blank lines and # comments are
    /// skipped.
    #[arg(long, value_name = "FILE")]
    pub nodes_file: Option<PathBuf>,

    /// Every A/AAAA record of NAME, at PORT (e.g. the headless Service of the DaemonSet:
    /// memtrace.memtrace.svc.cluster.local:9847); repeatable.
    #[arg(long, value_name = "NAME:PORT")]
    pub dns: Vec<String>,

    /// The active targets of a Prometheus server (GET URL/api/v1/targets?state=active) whose
    /// job is --job.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,

    /// The Prometheus job that scrapes the daemons (with --prometheus).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "memtrace",
        requires = "prometheus"
    )]
    pub job: String,

    /// The ready endpoints of the memtrace Service's EndpointSlices: `[NAMESPACE/]SERVICE[:PORT]`
    /// (default `memtrace`, in the configuration's namespace, its only port). Uses the
    /// in-cluster configuration or the kubeconfig; needs `list` on endpointslices
    /// (README "Kubernetes metadata").
    #[arg(
        long,
        value_name = "[NAMESPACE/]SERVICE[:PORT]",
        num_args = 0..=1,
        default_missing_value = "memtrace"
    )]
    pub kubernetes: Option<String>,

    /// Recordings (`memtrace record`, a file of `memtrace daemon --record-dir`, or such a
    /// directory: its files as one timeline) read as if each were a node, for a post-mortem: its
    /// frame at --at, no daemon asked. A recording without a frame in the 5 minutes before --at
    /// counts as a node that did not answer.
    #[arg(long, value_name = "FILE|DIR", num_args = 1.., conflicts_with_all = ["nodes", "nodes_file", "dns", "prometheus", "kubernetes"])]
    pub recordings: Vec<PathBuf>,

    /// The instant to look at in recordings (--recordings; `memtrace top --replay`): RFC 3339
    /// (2026-11-30T03:12:00Z, UTC), a time of day in UTC on the first frame's day (03:12,
    /// 03:12:30), -5m before the end, +90s after the start, or Unix seconds [default: cluster:
    /// where the newest recording ends; top: its first frame].
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub at: Option<String>,
}

/// `--kubernetes [NAMESPACE/]SERVICE[:PORT]` as (namespace, service, port name).
pub fn parse_service(spec: &str) -> (Option<&str>, &str, Option<&str>) {
    let (namespace, rest) = match spec.split_once('/') {
        Some((namespace, rest)) => (Some(namespace), rest),
        None => (None, spec),
    };
    let (service, port) = match rest.split_once(':') {
        Some((service, port)) => (service, Some(port)),
        None => (rest, None),
    };
    (namespace, service, port)
}

/// A daemon to ask.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// As the user gave it (or as discovery found it): what reports name it by.
    pub spec: String,
    /// Where its API lives (`scheme://host:port/`, with a path prefix if the URL had one).
    pub base: Url,
}

/// Why the targets could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target '{spec}': {why}")]
    Invalid { spec: String, why: String },
    #[error("reading --nodes-file {}: {source}", path.display())]
    NodesFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--dns {name}: {why}")]
    Dns { name: String, why: String },
    #[error("--prometheus {url}: {why}")]
    Prometheus { url: String, why: String },
    #[error("--kubernetes {service}: {source}")]
    Kubernetes {
        service: String,
        #[source]
        source: Box<crate::kubernetes::KubernetesError>,
    },
    #[error(
        "no targets: give --nodes, --nodes-file, --dns, --prometheus, --kubernetes or \
         --recordings (see memtrace cluster --help)"
    )]
    None,
    #[error("--recordings is read by cluster top, nodes, oom and diagnose, not served")]
    RecordingsServed,
    #[error(
        "--at picks an instant of recordings: give --recordings FILE… (memtrace top: --replay FILE)"
    )]
    AtWithoutRecordings,
}

impl Target {
    /// `host:port`, `host` (default port), `[v6]:port`, a bare IPv6 address, or an http(s) URL.
    pub fn parse(spec: &str) -> Result<Self, TargetError> {
        let spec = spec.trim();
        let invalid = |why: String| TargetError::Invalid {
            spec: spec.to_owned(),
            why,
        };
        if spec.is_empty() {
            return Err(invalid("empty".to_owned()));
        }
        let mut base = if spec.contains("://") {
            let url = Url::parse(spec).map_err(|e| invalid(e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(format!(
                    "scheme {} is not http or https",
                    url.scheme()
                )));
            }
            url
        } else {
            let authority = match spec.parse::<IpAddr>() {
                Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
                _ => spec.to_owned(),
            };
            if authority.contains('/') {
                return Err(invalid(
                    "a path needs a URL (http://host:port/path)".to_owned(),
                ));
            }
            let mut url =
                Url::parse(&format!("http://{authority}/")).map_err(|e| invalid(e.to_string()))?;
            if url.port().is_none() {
                url.set_port(Some(default_port()))
                    .map_err(|()| invalid("cannot carry a port".to_owned()))?;
            }
            url
        };
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host".to_owned()));
        }
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            spec: spec.to_owned(),
            base,
        })
    }

    /// Speak HTTPS to a target given without a scheme (`host:port`), as with any TLS client
    /// option; a URL keeps the scheme it was given.
    pub fn prefer_https(&mut self) {
        if !self.spec.contains("://") {
            let _ = self.base.set_scheme("https");
        }
    }

    /// Its `GET /api/v1/workloads?history=…` URL.
    pub fn workloads_url(&self, history: Duration) -> Url {
        let mut url = self
            .base
            .join("api/v1/workloads")
            .unwrap_or_else(|_| self.base.clone());
        // `0` is the contract's spelling of "no history".
        let history = match history.as_secs() {
            0 => "0".to_owned(),
            secs => format!("{secs}s"),
        };
        url.query_pairs_mut().append_pair("history", &history);
        url
    }
}

/// The lines of a `--nodes-file`: one target each, blank lines and `#` comments skipped.
pub fn parse_nodes_file(text: &str) -> Vec<&str> {
    text.lines()
        .map(|line| {
            line.split_once('#')
                .map_or(line, |(before, _)| before)
                .trim()
        })
        .filter(|line| !line.is_empty())
        .collect()
}

/// Every target of `args`, in the order given (`--nodes`, `--nodes-file`, `--dns`,
/// `--prometheus`), each once: two specs are the same target when their URLs are equal.
pub async fn discover(args: &TargetArgs, timeout: Duration) -> Result<Vec<Target>, TargetError> {
    // The views read recordings before asking anyone (`cluster::recordings`); what reaches here
    // with them is the relay.
    if !args.recordings.is_empty() {
        return Err(TargetError::RecordingsServed);
    }
    if args.at.is_some() {
        return Err(TargetError::AtWithoutRecordings);
    }
    let mut specs: Vec<String> = args.nodes.clone();
    if let Some(path) = &args.nodes_file {
        let text = read_nodes_file(path)?;
        specs.extend(parse_nodes_file(&text).into_iter().map(str::to_owned));
    }
    let mut targets = specs
        .iter()
        .map(|spec| Target::parse(spec))
        .collect::<Result<Vec<_>, _>>()?;
    for name in &args.dns {
        targets.extend(resolve_dns(name).await?);
    }
    if let Some(url) = &args.prometheus {
        targets.extend(prometheus_targets(url, &args.job, timeout).await?);
    }
    if let Some(spec) = &args.kubernetes {
        let (namespace, service, port) = parse_service(spec);
        let found = crate::kubernetes::discover_endpoints(namespace, service, port)
            .await
            .map_err(|source| TargetError::Kubernetes {
                service: spec.clone(),
                source: Box::new(source),
            })?;
        for address in found {
            targets.push(Target::parse(&address)?);
        }
    }
    let mut seen = HashSet::new();
    targets.retain(|target| seen.insert(target.base.clone()));
    if targets.is_empty() {
        return Err(TargetError::None);
    }
    Ok(targets)
}

fn read_nodes_file(path: &Path) -> Result<String, TargetError> {
    std::fs::read_to_string(path).map_err(|source| TargetError::NodesFile {
        path: path.to_owned(),
        source,
    })
}

/// Every address `NAME:PORT` resolves to (the system resolver asks for A and AAAA), sorted.
async fn resolve_dns(name: &str) -> Result<Vec<Target>, TargetError> {
    let dns_error = |why: String| TargetError::Dns {
        name: name.to_owned(),
        why,
    };
    if name
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(dns_error("expected NAME:PORT".to_owned()));
    }
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(name)
        .await
        .map_err(|e| dns_error(e.to_string()))?
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(dns_error("no A or AAAA records".to_owned()));
    }
    addrs
        .into_iter()
        .map(|addr| Target::parse(&addr.to_string()))
        .collect()
}

/// The part of Prometheus' `/api/v1/targets` answer discovery reads.
#[derive(Debug, Deserialize)]
struct TargetsAnswer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<TargetsData>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetsData {
    #[serde(default)]
    active_targets: Vec<ActiveTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActiveTarget {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    scrape_pool: String,
    scrape_url: String,
}

/// The daemons Prometheus scrapes as `job`: each active target's scrape URL without its path.
async fn prometheus_targets(
    url: &str,
    job: &str,
    timeout: Duration,
) -> Result<Vec<Target>, TargetError> {
    let prometheus_error = |why: String| TargetError::Prometheus {
        url: url.to_owned(),
        why,
    };
    let base = Target::parse(url).map_err(|e| prometheus_error(e.to_string()))?;
    let mut query = base
        .base
        .join("api/v1/targets")
        .map_err(|e| prometheus_error(e.to_string()))?;
    query.query_pairs_mut().append_pair("state", "active");
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| prometheus_error(e.to_string()))?;
    let response = client
        .get(query)
        .send()
        .await
        .map_err(|e| prometheus_error(super::fanout::describe_request_error(&e, timeout)))?;
    let status = response.status();
    let answer: TargetsAnswer = response
        .json()
        .await
        .map_err(|e| prometheus_error(format!("HTTP {status}, not a targets answer: {e}")))?;
    if answer.status != "success" {
        return Err(prometheus_error(
            answer.error.unwrap_or_else(|| answer.status.clone()),
        ));
    }
    let active = answer.data.map(|d| d.active_targets).unwrap_or_default();
    let mut targets = Vec::new();
    for target in active.iter().filter(|t| {
        t.labels
            .get("job")
            .map_or(t.scrape_pool == job, |j| j == job)
    }) {
        let mut scraped = Url::parse(&target.scrape_url)
            .map_err(|e| prometheus_error(format!("scrape URL {}: {e}", target.scrape_url)))?;
        scraped.set_path("/");
        scraped.set_query(None);
        let spec = match (scraped.scheme(), scraped.host_str(), scraped.port()) {
            ("http", Some(host), Some(port)) => format!("{host}:{port}"),
            _ => scraped.to_string(),
        };
        targets.push(Target::parse(&spec)?);
    }
    if targets.is_empty() {
        return Err(prometheus_error(format!(
            "no active targets of job \"{job}\" ({} active in all)",
            active.len()
        )));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_forms() {
        let t = |spec: &str| Target::parse(spec).map(|t| t.base.to_string());
        assert_eq!(t("10.0.0.1:9000").unwrap(), "http://10.0.0.1:9000/");
        assert_eq!(t("node-a").unwrap(), "http://node-a:9847/");
        assert_eq!(t("::1").unwrap(), "http://[::1]:9847/");
        assert_eq!(t("[::1]:1234").unwrap(), "http://[::1]:1234/");
        assert_eq!(
            t("https://a.example:8443/memtrace").unwrap(),
            "https://a.example:8443/memtrace/"
        );
        assert!(t("ftp://a").is_err());
        assert!(t("").is_err());
        assert!(t("a:b:c").is_err());
        assert!(t("a:99999").is_err());
        let target = Target::parse("https://a.example:8443/memtrace").unwrap();
        assert_eq!(
            target.workloads_url(Duration::from_secs(7200)).as_str(),
            "https://a.example:8443/memtrace/api/v1/workloads?history=7200s"
        );
    }

    #[test]
    fn nodes_file_skips_comments_and_blanks() {
        let text = "# the fleet\nnode-a:9847\n\n  node-b   # rack 2\n#node-c\n";
        assert_eq!(parse_nodes_file(text), ["node-a:9847", "node-b"]);
    }

    #[tokio::test]
    async fn sources_merge_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nodes");
        std::fs::write(&file, "127.0.0.1:9847\n127.0.0.2 # b\n").unwrap();
        let args = TargetArgs {
            nodes: vec!["127.0.0.1".to_owned(), "http://127.0.0.1:9847".to_owned()],
            nodes_file: Some(file),
            dns: vec!["localhost:9847".to_owned()],
            ..TargetArgs::default()
        };
        let targets = discover(&args, Duration::from_secs(1)).await.unwrap();
        let bases: Vec<String> = targets.iter().map(|t| t.base.to_string()).collect();
        assert_eq!(
            bases[..2],
            ["http://127.0.0.1:9847/", "http://127.0.0.2:9847/"]
        );
        assert_eq!(bases.len(), HashSet::<&String>::from_iter(&bases).len());
        // localhost resolves to 127.0.0.1 (already there) and perhaps ::1.
        assert!(bases.len() <= 3, "{bases:?}");
        assert_eq!(targets[0].spec, "127.0.0.1");

        let missing = TargetArgs {
            nodes_file: Some(dir.path().join("absent")),
            ..TargetArgs::default()
        };
        let err = discover(&missing, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("reading --nodes-file"), "{err}");
        assert_eq!(parse_service("memtrace"), (None, "memtrace", None));
        assert_eq!(
            parse_service("monitoring/memtrace:metrics"),
            (Some("monitoring"), "memtrace", Some("metrics"))
        );
        let none = discover(&TargetArgs::default(), Duration::from_secs(1)).await;
        assert!(matches!(none, Err(TargetError::None)));
        let bad_dns = TargetArgs {
            dns: vec!["localhost".to_owned()],
            ..TargetArgs::default()
        };
        let err = discover(&bad_dns, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("expected NAME:PORT"), "{err}");
    }
}
