//! deploy/kubernetes, checked without a cluster (none exists here): every kustomization rendered
//! by `kubectl kustomize` and read into the real Kubernetes API types with unknown fields as
//! errors (`memtrace_tests::manifests`), then the properties the deployment promises: least
//! privilege, probes, resources, the DaemonSet's exact capabilities and read-only host mounts,
//! arguments memtrace's own command line accepts, the overlays' scrape and TLS wiring, and the
//! PrometheusRule generated from deploy/prometheus/memtrace-rules.yml. Needs no root.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::OnceLock,
};

use clap::Parser as _;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{Container, PodSpec, PodTemplateSpec, Secret, Service},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use memtrace::{
    cluster::targets::parse_service,
    web::config::{ClientAuthType, WebConfigFile},
};
use memtrace_tests::manifests::{
    self, Object, check, kubernetes_dir, kustomizations,
    prometheus_operator::{PrometheusRule, Scheme, ServiceMonitor},
    prometheus_rule_yaml, workspace_root,
};
use serde_json::Value;

const OVERLAYS: [&str; 3] = ["prometheus-operator", "scrape-annotations", "tls"];

/// One rendered kustomization: its directory (relative to the repository) and its objects.
struct Rendered {
    dir: String,
    objects: Vec<Object>,
}

impl Rendered {
    fn all_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Object> + 'a {
        self.objects
            .iter()
            .filter(move |object| object.kind == kind)
    }

    fn one<T: serde::de::DeserializeOwned>(&self, kind: &str, name: &str) -> T {
        self.all_of(kind)
            .find(|object| object.name == name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.dir))
            .typed()
    }

    fn daemonset(&self) -> DaemonSet {
        self.one("DaemonSet", "memtrace")
    }

    fn deployment(&self) -> Deployment {
        self.one("Deployment", "memtrace-cluster")
    }
}

/// Every kustomization, rendered and parsed (not yet checked against the types), once for all
/// the tests of this binary.
fn render_all() -> &'static [Rendered] {
    static RENDERED: OnceLock<Vec<Rendered>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let root = workspace_root();
        kustomizations()
            .into_iter()
            .map(|dir| Rendered {
                dir: dir
                    .strip_prefix(&root)
                    .expect("under the repository")
                    .display()
                    .to_string(),
                objects: manifests::render(&dir),
            })
            .collect()
    })
}

fn render(relative: &str) -> &'static Rendered {
    render_all()
        .iter()
        .find(|rendered| rendered.dir == format!("deploy/kubernetes/{relative}"))
        .unwrap_or_else(|| panic!("no kustomization deploy/kubernetes/{relative}"))
}

fn pod_spec(template: &PodTemplateSpec) -> &PodSpec {
    template.spec.as_ref().expect("pod template has a spec")
}

fn containers_of(rendered: &Rendered) -> Vec<(String, PodSpec, Container)> {
    let daemonset = rendered.daemonset();
    let deployment = rendered.deployment();
    let pods = [
        ("DaemonSet memtrace", daemonset.spec.expect("spec").template),
        (
            "Deployment memtrace-cluster",
            deployment.spec.expect("spec").template,
        ),
    ];
    pods.into_iter()
        .flat_map(|(owner, template)| {
            let spec = pod_spec(&template).clone();
            spec.containers
                .clone()
                .into_iter()
                .map(move |container| (owner.to_owned(), spec.clone(), container))
        })
        .collect()
}

#[test]
fn every_kustomization_renders_into_the_real_api_types_with_no_unknown_field() {
    let rendered = render_all();
    let dirs: BTreeSet<&str> = rendered.iter().map(|r| r.dir.as_str()).collect();
    let expected: BTreeSet<String> = std::iter::once("deploy/kubernetes/base".to_owned())
        .chain(OVERLAYS.map(|o| format!("deploy/kubernetes/overlays/{o}")))
        .collect();
    assert_eq!(
        dirs,
        expected.iter().map(String::as_str).collect(),
        "the kustomizations under deploy/kubernetes"
    );
    let mut problems = String::new();
    let mut checked = 0;
    for rendered in rendered {
        assert!(
            !rendered.objects.is_empty(),
            "{}: renders nothing",
            rendered.dir
        );
        for object in &rendered.objects {
            match check(object) {
                Ok(()) => checked += 1,
                Err(err) => problems.push_str(&err),
            }
            assert_eq!(
                object.namespace.as_deref(),
                (!matches!(
                    object.kind.as_str(),
                    "Namespace" | "ClusterRole" | "ClusterRoleBinding"
                ))
                .then_some("memtrace"),
                "{}: {}: every namespaced object lands in memtrace",
                rendered.dir,
                object.id()
            );
        }
    }
    assert!(
        problems.is_empty(),
        "manifests the API server would refuse:\n{problems}"
    );
    // base 11 objects; prometheus-operator +3, scrape-annotations +0, tls +4 (its Secret).
    assert_eq!(checked, 11 + 14 + 11 + 15, "objects checked");
}

#[test]
fn prometheus_rule_is_generated_from_the_rules_file_and_carries_its_groups() {
    let rules_path = workspace_root().join("deploy/prometheus/memtrace-rules.yml");
    let rules_text = std::fs::read_to_string(&rules_path).expect("memtrace-rules.yml");
    let generated = prometheus_rule_yaml(&rules_text).expect("generate");
    let path = kubernetes_dir().join("overlays/prometheus-operator/prometheusrule.yaml");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != generated {
        std::fs::write(&path, &generated).expect("write prometheusrule.yaml");
        panic!(
            "{} was not generated from deploy/prometheus/memtrace-rules.yml: rewritten now; \
             review and commit it, and run the test again",
            path.display()
        );
    }
    // The rendered object's groups are the rules file's, value for value.
    for overlay in ["overlays/prometheus-operator", "overlays/tls"] {
        let rendered = render(overlay);
        let rule = rendered
            .all_of("PrometheusRule")
            .find(|object| object.name == "memtrace")
            .expect("PrometheusRule memtrace");
        let file: Value = serde_saphyr::from_str(&rules_text).expect("rules file is YAML");
        assert_eq!(rule.value["spec"]["groups"], file["groups"], "{overlay}");
        let typed: PrometheusRule = manifests::strict(&rule.value).expect("typed PrometheusRule");
        let alerts = typed
            .spec
            .groups
            .iter()
            .flat_map(|group| &group.rules)
            .filter(|rule| rule.alert.is_some())
            .count();
        assert_eq!(alerts, 8, "the README's eight alerts");
    }
}

#[test]
fn nothing_is_privileged() {
    fn privileged_paths(value: &Value, path: &str, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    if key == "privileged" && value == &Value::Bool(true) {
                        found.push(format!("{path}.{key}"));
                    }
                    privileged_paths(value, &format!("{path}.{key}"), found);
                }
            }
            Value::Array(items) => {
                for (index, value) in items.iter().enumerate() {
                    privileged_paths(value, &format!("{path}[{index}]"), found);
                }
            }
            _ => {}
        }
    }
    for rendered in render_all() {
        let mut found = Vec::new();
        for object in &rendered.objects {
            privileged_paths(
                &object.value,
                &format!("{}: {}", rendered.dir, object.id()),
                &mut found,
            );
        }
        assert!(found.is_empty(), "privileged: true at {found:?}");
        for (owner, spec, _) in containers_of(rendered) {
            assert_ne!(
                spec.host_network,
                Some(true),
                "{}: {owner}: hostNetwork",
                rendered.dir
            );
            assert_ne!(
                spec.host_ipc,
                Some(true),
                "{}: {owner}: hostIPC",
                rendered.dir
            );
        }
    }
}

#[test]
fn the_daemonset_has_exactly_its_capabilities_and_reads_the_host_read_only() {
    for rendered in render_all() {
        let dir = &rendered.dir;
        let daemonset = rendered.daemonset();
        let spec = daemonset.spec.expect("spec");
        let pod = pod_spec(&spec.template);
        assert_eq!(
            pod.host_pid,
            Some(true),
            "{dir}: hostPID (every /proc/<pid> of the node)"
        );
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("memtrace"),
            "{dir}"
        );
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-node-critical"),
            "{dir}: priorityClassName"
        );
        let tolerates_everything = pod.tolerations.iter().flatten().any(|toleration| {
            toleration.operator.as_deref() == Some("Exists")
                && toleration.key.is_none()
                && toleration.effect.is_none()
        });
        assert!(
            tolerates_everything,
            "{dir}: a toleration of every taint (runs on every node)"
        );
        assert_eq!(
            spec.update_strategy.and_then(|s| s.type_).as_deref(),
            Some("RollingUpdate"),
            "{dir}: updateStrategy"
        );
        let [container] = pod.containers.as_slice() else {
            panic!("{dir}: one container");
        };
        let context = container
            .security_context
            .as_ref()
            .expect("securityContext");
        let capabilities = context.capabilities.as_ref().expect("capabilities");
        let set = |list: &Option<Vec<String>>| -> BTreeSet<String> {
            list.iter().flatten().cloned().collect()
        };
        assert_eq!(
            set(&capabilities.add),
            ["BPF", "DAC_READ_SEARCH", "PERFMON"]
                .map(String::from)
                .into(),
            "{dir}: the capabilities added, exactly (README, \"Reliability, limits and privileges\")"
        );
        assert_eq!(
            set(&capabilities.drop),
            ["ALL".to_owned()].into(),
            "{dir}: drop ALL"
        );
        assert_eq!(
            context.read_only_root_filesystem,
            Some(true),
            "{dir}: read-only root"
        );
        let non_root = context.run_as_non_root.or(pod
            .security_context
            .as_ref()
            .and_then(|c| c.run_as_non_root));
        assert_eq!(non_root, Some(true), "{dir}: runAsNonRoot");

        // Every host path is mounted read-only, each at least where --host-root=/host looks for
        // it (a second mount elsewhere, read-only too, is allowed: aya reads tracepoint ids
        // under /sys/kernel/tracing whatever the host root).
        let host_volumes: BTreeMap<&str, &str> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| Some((v.name.as_str(), v.host_path.as_ref()?.path.as_str())))
            .collect();
        let expected: BTreeSet<&str> = [
            "/proc",
            "/sys/fs/cgroup",
            "/sys/kernel/tracing",
            "/sys/kernel",
        ]
        .into();
        assert_eq!(
            host_volumes.values().copied().collect::<BTreeSet<_>>(),
            expected,
            "{dir}: the host paths"
        );
        let mounts: Vec<_> = container.volume_mounts.iter().flatten().collect();
        for mount in &mounts {
            if let Some(host_path) = host_volumes.get(mount.name.as_str()) {
                assert_eq!(
                    mount.read_only,
                    Some(true),
                    "{dir}: {host_path} at {} is read-only",
                    mount.mount_path
                );
            }
        }
        for (name, host_path) in &host_volumes {
            assert!(
                mounts
                    .iter()
                    .any(|m| m.name == *name && m.mount_path == format!("/host{host_path}")),
                "{dir}: {host_path} is mounted at /host{host_path} (--host-root=/host)"
            );
        }

        let node_name = container
            .env
            .iter()
            .flatten()
            .find(|env| env.name == "NODE_NAME")
            .unwrap_or_else(|| panic!("{dir}: NODE_NAME"));
        let field = node_name
            .value_from
            .as_ref()
            .and_then(|from| from.field_ref.as_ref())
            .map(|field| field.field_path.as_str());
        assert_eq!(
            field,
            Some("spec.nodeName"),
            "{dir}: NODE_NAME from the downward API"
        );
    }
}

#[test]
fn every_container_has_probes_resources_and_a_locked_down_context() {
    for rendered in render_all() {
        let dir = &rendered.dir;
        let containers = containers_of(rendered);
        assert_eq!(containers.len(), 2, "{dir}: the daemon and the relay");
        for (owner, pod, container) in containers {
            let at = format!("{dir}: {owner}: container {}", container.name);
            let ports: BTreeSet<&str> = container
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.name.as_deref())
                .collect();
            for (what, probe) in [
                ("liveness", &container.liveness_probe),
                ("readiness", &container.readiness_probe),
            ] {
                let probe = probe
                    .as_ref()
                    .unwrap_or_else(|| panic!("{at}: {what} probe"));
                let get = probe
                    .http_get
                    .as_ref()
                    .unwrap_or_else(|| panic!("{at}: {what} httpGet"));
                let port = serde_json::to_value(&get.port).expect("port");
                assert!(
                    port.as_str().is_some_and(|name| ports.contains(name)),
                    "{at}: {what} probe on a named port of the container, not {port}"
                );
                let path = get.path.as_deref().unwrap_or_default();
                assert!(
                    ["/healthz", "/readyz"].contains(&path),
                    "{at}: {what} probe on {path}: only /healthz and /readyz need no password"
                );
            }
            let resources = container
                .resources
                .as_ref()
                .unwrap_or_else(|| panic!("{at}: resources"));
            let requests = resources.requests.clone().unwrap_or_default();
            let limits = resources.limits.clone().unwrap_or_default();
            for name in ["cpu", "memory"] {
                assert!(requests.contains_key(name), "{at}: requests.{name}");
            }
            assert!(limits.contains_key("memory"), "{at}: limits.memory");
            let context = container
                .security_context
                .as_ref()
                .unwrap_or_else(|| panic!("{at}"));
            assert_eq!(
                context.read_only_root_filesystem,
                Some(true),
                "{at}: read-only root"
            );
            let dropped = context.capabilities.as_ref().and_then(|c| c.drop.clone());
            assert_eq!(dropped, Some(vec!["ALL".to_owned()]), "{at}: drop ALL");
            let non_root = context.run_as_non_root.or(pod
                .security_context
                .as_ref()
                .and_then(|c| c.run_as_non_root));
            assert_eq!(non_root, Some(true), "{at}: runAsNonRoot");
            if owner.starts_with("Deployment") {
                assert_eq!(context.allow_privilege_escalation, Some(false), "{at}");
                assert_eq!(
                    context.capabilities.as_ref().and_then(|c| c.add.clone()),
                    None,
                    "{at}"
                );
            }
        }
    }
}

fn exact_rules(rules: &[PolicyRule]) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
    rules
        .iter()
        .map(|rule| {
            assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
            (
                rule.api_groups.clone().unwrap_or_default(),
                rule.resources.clone().unwrap_or_default(),
                rule.verbs.clone(),
            )
        })
        .collect()
}

#[test]
fn rbac_grants_exactly_what_each_job_uses() {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    for rendered in render_all() {
        let dir = &rendered.dir;
        for object in rendered
            .objects
            .iter()
            .filter(|o| o.api_version.starts_with("rbac."))
        {
            assert!(
                !object.value.to_string().contains("\"*\""),
                "{dir}: {}: a wildcard",
                object.id()
            );
        }
        let cluster_roles: Vec<ClusterRole> =
            rendered.all_of("ClusterRole").map(Object::typed).collect();
        let [pods] = cluster_roles.as_slice() else {
            panic!("{dir}: one ClusterRole");
        };
        assert_eq!(
            exact_rules(pods.rules.as_deref().unwrap_or_default()),
            [(
                strings(&[""]),
                strings(&["pods"]),
                strings(&["get", "list", "watch"])
            )],
            "{dir}: ClusterRole memtrace"
        );
        let roles: Vec<Role> = rendered.all_of("Role").map(Object::typed).collect();
        let [discovery] = roles.as_slice() else {
            panic!("{dir}: one Role");
        };
        assert_eq!(
            exact_rules(discovery.rules.as_deref().unwrap_or_default()),
            [(
                strings(&["discovery.k8s.io"]),
                strings(&["endpointslices"]),
                strings(&["list"])
            )],
            "{dir}: Role memtrace-discovery"
        );

        // Each binding gives its role to exactly the account of the workload that uses it.
        let subjects = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
            subjects
                .iter()
                .flatten()
                .map(|s| (s.kind.clone(), s.name.clone(), s.namespace.clone()))
                .collect::<Vec<_>>()
        };
        let account = |name: &str| {
            vec![(
                "ServiceAccount".to_owned(),
                name.to_owned(),
                Some("memtrace".to_owned()),
            )]
        };
        let binding: ClusterRoleBinding = rendered.one("ClusterRoleBinding", "memtrace");
        assert_eq!(
            (
                binding.role_ref.kind.as_str(),
                binding.role_ref.name.as_str()
            ),
            ("ClusterRole", pods.metadata.name.as_deref().expect("name"))
        );
        assert_eq!(subjects(&binding.subjects), account("memtrace"), "{dir}");
        let binding: RoleBinding = rendered.one("RoleBinding", "memtrace-discovery");
        assert_eq!(
            (
                binding.role_ref.kind.as_str(),
                binding.role_ref.name.as_str()
            ),
            ("Role", discovery.metadata.name.as_deref().expect("name"))
        );
        assert_eq!(
            subjects(&binding.subjects),
            account("memtrace-cluster"),
            "{dir}"
        );
        for name in ["memtrace", "memtrace-cluster"] {
            assert!(
                rendered.all_of("ServiceAccount").any(|o| o.name == name),
                "{dir}: ServiceAccount {name}"
            );
        }
        let deployment = rendered.deployment();
        let pod = pod_spec(&deployment.spec.as_ref().expect("spec").template);
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("memtrace-cluster"),
            "{dir}"
        );
    }
}

/// Whether `selector` selects pods labelled `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn template_labels(template: &PodTemplateSpec) -> BTreeMap<String, String> {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

#[test]
fn services_and_service_monitors_select_their_pods_and_ports() {
    for rendered in render_all() {
        let dir = &rendered.dir;
        let daemon_labels = template_labels(&rendered.daemonset().spec.expect("spec").template);
        let relay_labels = template_labels(&rendered.deployment().spec.expect("spec").template);
        for (name, labels, port, headless) in [
            ("memtrace", &daemon_labels, 9847, true),
            ("memtrace-cluster", &relay_labels, 9848, false),
        ] {
            let service: Service = rendered.one("Service", name);
            let spec = service.spec.expect("spec");
            assert!(
                selects(&spec.selector.clone().unwrap_or_default(), labels),
                "{dir}: Service {name} selects its pods"
            );
            assert!(
                !selects(
                    &spec.selector.clone().unwrap_or_default(),
                    if headless {
                        &relay_labels
                    } else {
                        &daemon_labels
                    }
                ),
                "{dir}: Service {name} selects only its own pods"
            );
            assert_eq!(
                spec.cluster_ip.as_deref() == Some("None"),
                headless,
                "{dir}: {name}"
            );
            let ports = spec.ports.unwrap_or_default();
            let [service_port] = ports.as_slice() else {
                panic!("{dir}: Service {name} has one port");
            };
            assert_eq!(
                (service_port.name.as_deref(), service_port.port),
                (Some("http"), port),
                "{dir}: Service {name}: port name http"
            );
        }
        for object in rendered.all_of("ServiceMonitor") {
            let monitor: ServiceMonitor = object.typed();
            let service: Service = rendered.one("Service", &object.name);
            let service_labels = service.metadata.labels.clone().unwrap_or_default();
            let selector = monitor
                .spec
                .selector
                .match_labels
                .clone()
                .unwrap_or_default();
            assert!(
                selects(&selector, &service_labels),
                "{dir}: {} selects its Service",
                object.id()
            );
            let other = if object.name == "memtrace" {
                "memtrace-cluster"
            } else {
                "memtrace"
            };
            let other: Service = rendered.one("Service", other);
            assert!(
                !selects(&selector, &other.metadata.labels.unwrap_or_default()),
                "{dir}: {} selects one Service",
                object.id()
            );
            let port_names: Vec<Option<String>> = service
                .spec
                .expect("spec")
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.name)
                .collect();
            for endpoint in &monitor.spec.endpoints {
                assert!(
                    port_names.contains(&endpoint.port),
                    "{dir}: {}: endpoint port",
                    object.id()
                );
                assert_eq!(endpoint.path.as_deref(), Some("/metrics"));
            }
        }
    }
}

/// Kubernetes' `$(VAR)` expansion of `args` from the container's env, with placeholders.
fn expand(arg: &str, container: &Container) -> String {
    container
        .env
        .iter()
        .flatten()
        .fold(arg.to_owned(), |arg, env| {
            arg.replace(
                &format!("$({})", env.name),
                &format!("example-{}", env.name.to_lowercase()),
            )
        })
}

#[test]
fn arguments_are_what_memtrace_accepts() {
    for rendered in render_all() {
        let dir = &rendered.dir;
        for (owner, _, container) in containers_of(rendered) {
            let args: Vec<String> = container
                .args
                .iter()
                .flatten()
                .map(|arg| expand(arg, &container))
                .collect();
            assert!(
                container.command.is_none(),
                "{dir}: {owner}: the image's entrypoint runs"
            );
            assert!(
                !args.iter().any(|a| a.contains("$(")),
                "{dir}: {owner}: unexpanded {args:?}"
            );
            let parsed = memtrace::cli::Cli::try_parse_from(
                std::iter::once("memtrace".to_owned()).chain(args.iter().cloned()),
            );
            if let Err(err) = parsed {
                panic!(
                    "{dir}: {owner}: memtrace refuses {args:?}: {}",
                    err.render()
                );
            }
            let listen = args
                .iter()
                .find_map(|a| a.strip_prefix("--listen="))
                .unwrap_or_else(|| panic!("{dir}: {owner}: --listen=ADDR"));
            let port = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some("http"));
            assert_eq!(
                Some(format!(
                    "0.0.0.0:{}",
                    port.expect("port http").container_port
                ))
                .as_deref(),
                Some(listen),
                "{dir}: {owner}: listens on its http port"
            );
            if owner.starts_with("Deployment") {
                assert_eq!(args[..2], ["cluster", "serve"], "{dir}");
                // The relay discovers the daemons through a Service of its own namespace that
                // selects the DaemonSet's pods, on a port of that name (as memtrace reads it).
                let spec = args
                    .iter()
                    .find_map(|a| a.strip_prefix("--kubernetes="))
                    .unwrap_or_else(|| panic!("{dir}: --kubernetes=SERVICE:PORT in {args:?}"));
                let (namespace, service, port) = parse_service(spec);
                assert!(
                    matches!(namespace, None | Some("memtrace")),
                    "{dir}: {spec}"
                );
                let service: Service = rendered.one("Service", service);
                let service = service.spec.expect("spec");
                let daemon_pods =
                    template_labels(&rendered.daemonset().spec.expect("spec").template);
                assert!(
                    selects(&service.selector.unwrap_or_default(), &daemon_pods),
                    "{dir}: --kubernetes={spec} names the daemons' Service"
                );
                let port_names: Vec<Option<String>> = service
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| p.name)
                    .collect();
                assert!(
                    port_names.contains(&port.map(str::to_owned)),
                    "{dir}: --kubernetes={spec}: a port of that name"
                );
            } else {
                assert_eq!(args[0], "daemon", "{dir}");
                assert!(
                    args.contains(&"--host-root=/host".to_owned()),
                    "{dir}: {args:?}"
                );
            }
        }
    }
}

#[test]
fn scrape_annotations_name_each_metrics_port() {
    let rendered = render("overlays/scrape-annotations");
    for (owner, template, port) in [
        (
            "DaemonSet",
            rendered.daemonset().spec.expect("spec").template,
            "9847",
        ),
        (
            "Deployment",
            rendered.deployment().spec.expect("spec").template,
            "9848",
        ),
    ] {
        let annotations = template
            .metadata
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        let get = |key: &str| annotations.get(key).map(String::as_str);
        assert_eq!(get("prometheus.io/scrape"), Some("true"), "{owner}");
        assert_eq!(get("prometheus.io/port"), Some(port), "{owner}");
        assert_eq!(get("prometheus.io/path"), Some("/metrics"), "{owner}");
    }
    assert!(
        rendered.all_of("ServiceMonitor").next().is_none(),
        "no operator objects"
    );
    let operator = render("overlays/prometheus-operator");
    for owner in ["DaemonSet", "Deployment"] {
        let object = operator.all_of(owner).next().expect(owner);
        assert!(
            object
                .value
                .pointer("/spec/template/metadata/annotations")
                .is_none(),
            "prometheus-operator overlay: {owner} carries no scrape annotations (no double scrape)"
        );
    }
}

#[test]
fn tls_overlay_serves_https_with_basic_auth_and_its_probes_still_work() {
    let rendered = render("overlays/tls");
    let web_config_path = "/etc/memtrace/web/web-config.yml";
    for (owner, pod, container) in containers_of(rendered) {
        let at = format!("{owner}: container {}", container.name);
        let args = container.args.clone().unwrap_or_default();
        assert!(
            args.contains(&format!("--web-config-file={web_config_path}")),
            "{at}: --web-config-file in {args:?}"
        );
        // Both Secrets are mounted read-only where web-config.yml says.
        for (volume, secret, dir) in [
            ("web-config", "memtrace-web-config", "/etc/memtrace/web"),
            ("tls", "memtrace-tls", "/etc/memtrace/tls"),
        ] {
            let source = pod
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == volume)
                .and_then(|v| v.secret.as_ref())
                .unwrap_or_else(|| panic!("{at}: volume {volume} from a Secret"));
            assert_eq!(source.secret_name.as_deref(), Some(secret), "{at}");
            let mount = container
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == volume)
                .unwrap_or_else(|| panic!("{at}: {volume} mounted"));
            assert_eq!(
                (mount.mount_path.as_str(), mount.read_only),
                (dir, Some(true)),
                "{at}"
            );
        }
        for probe in [
            &container.liveness_probe,
            &container.readiness_probe,
            &container.startup_probe,
        ]
        .into_iter()
        .flatten()
        {
            let get = probe.http_get.as_ref().expect("httpGet");
            assert_eq!(
                get.scheme.as_deref(),
                Some("HTTPS"),
                "{at}: probes speak TLS"
            );
        }
    }
    let relay_args = rendered
        .deployment()
        .spec
        .expect("spec")
        .template
        .spec
        .expect("spec")
        .containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(
        relay_args.contains(&"--ca-file=/etc/memtrace/tls/ca.crt".to_owned()),
        "{relay_args:?}"
    );

    for object in rendered.all_of("ServiceMonitor") {
        let monitor: ServiceMonitor = object.typed();
        for endpoint in &monitor.spec.endpoints {
            assert_eq!(endpoint.scheme, Some(Scheme::Https), "{}", object.id());
            let tls = endpoint.tls_config.as_ref().expect("tlsConfig");
            let ca = tls
                .ca
                .as_ref()
                .and_then(|ca| ca.secret.as_ref())
                .expect("tlsConfig.ca");
            assert_eq!(
                (ca.name.as_str(), ca.key.as_str()),
                ("memtrace-tls", "ca.crt")
            );
            assert_eq!(
                tls.server_name.as_deref(),
                Some(format!("{}.memtrace.svc", object.name).as_str()),
                "{}: pods are scraped by IP, verified under the Service's name",
                object.id()
            );
            assert_ne!(tls.insecure_skip_verify, Some(true));
            let auth = endpoint.basic_auth.as_ref().expect("basicAuth");
            assert_eq!(auth.username.name, "memtrace-client-auth");
            assert_eq!(auth.password.name, "memtrace-client-auth");
        }
    }

    // The web config in the Secret is the overlay's file, memtrace refuses it until its
    // placeholder hash is replaced, and then takes it; it does not require client certificates,
    // which the kubelet's httpGet probes cannot present.
    let secret = rendered
        .all_of("Secret")
        .find(|o| o.name == "memtrace-web-config")
        .expect("Secret memtrace-web-config");
    let file_path = kubernetes_dir().join("overlays/tls/web-config.yml");
    let file = std::fs::read_to_string(&file_path).expect("web-config.yml");
    let data = secret.typed::<Secret>().data.unwrap_or_default();
    let content = data.get("web-config.yml").expect("key web-config.yml");
    assert_eq!(content.0, file.as_bytes(), "the Secret is the file");
    let path = Path::new(web_config_path);
    let refused = WebConfigFile::parse(path, &file).expect_err("the placeholder is no bcrypt hash");
    assert!(
        refused.to_string().contains("basic_auth_users.prometheus"),
        "{refused}"
    );
    let hash = bcrypt::hash("example", 4).expect("bcrypt");
    let config = WebConfigFile::parse(path, &file.replace("REPLACE-WITH-A-BCRYPT-HASH", &hash))
        .unwrap_or_else(|err| panic!("{}: {err}", file_path.display()));
    let tls = config.tls_server_config.expect("tls_server_config");
    assert!(
        !matches!(
            tls.client_auth_type,
            Some(ClientAuthType::RequireAnyClientCert | ClientAuthType::RequireAndVerifyClientCert)
        ),
        "httpGet probes send no client certificate"
    );
    for file in [tls.cert_file, tls.key_file, tls.client_ca_file] {
        let file = file.expect("a file of Secret memtrace-tls");
        assert!(file.starts_with("/etc/memtrace/tls"), "{}", file.display());
    }
}

/// deploy/README.md names every file under deploy/ (or a directory holding it, written with its
/// trailing slash, for parts documented in their own directory).
#[test]
fn deploy_readme_lists_every_file() {
    fn files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read deploy/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files(&path, found);
            } else {
                found.push(path);
            }
        }
    }
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("deploy/README.md")).expect("deploy/README.md");
    let listed = |path: &str| readme.contains(&format!("`{path}`"));
    let mut found = Vec::new();
    files(&root.join("deploy"), &mut found);
    let missing: Vec<String> = found
        .iter()
        .map(|path| {
            path.strip_prefix(&root)
                .expect("under root")
                .display()
                .to_string()
        })
        .filter(|path| path != "deploy/README.md")
        .filter(|path| {
            // The directories between deploy/ and the file: deploy/container/, …
            let mut dirs = Path::new(path)
                .ancestors()
                .skip(1)
                .filter(|dir| dir.starts_with("deploy") && *dir != Path::new("deploy"));
            !listed(path) && !dirs.any(|dir| listed(&format!("{}/", dir.display())))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/README.md does not list {missing:?}"
    );
}
