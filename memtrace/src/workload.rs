//! Workload identity: the key that names the same workload on every node (see
//! [`memtrace_api::workloads::WorkloadKind`]) and the instance that names one running copy of it
//! on this node.
//!
//! The rules, most specific first (README, "Workload identity"):
//!
//! 1. **Kubernetes** (the cgroup path names a pod): with the pod's metadata from a [`PodLookup`],
//!    `namespace/Kind/name` of its controller — a ReplicaSet's pod-template hash stripped to its
//!    Deployment, a Job of a CronJob to its CronJob, StatefulSet, DaemonSet and others as they
//!    are — or `namespace/Pod/name` for a pod without a controller; instance: the pod's name.
//!    Without metadata, `pod/<uid>` with the uid as instance.
//! 2. **Containers** outside Kubernetes (the cgroup path names a container): the container's
//!    name as its runtime knows it (a docker compose service as `project/service`), else its
//!    image, read from the runtime's own state under the host root ([`ContainerNames`]);
//!    instance: the short (12-digit) container id. A container whose name is not known falls
//!    through to the comm.
//! 3. **systemd services**: the innermost `.service` unit (`redis-server.service`; the
//!    instances of a template, `redis-server@6379.service` and `@6380`, are one workload
//!    `redis-server@.service`: shards or replicas of one program), except the per-user manager
//!    `user@<uid>.service`; scopes (sessions, `init.scope`, container and `systemd-run --scope`
//!    scopes) are not workloads. Instance: the unit.
//! 4. Otherwise the process's **comm**, instance `pid/<pid>`.
//!
//! A key depends only on the comm and the cgroup (and on what the API server and the container
//! runtime say of that cgroup), so processes with the same comm in the same cgroup always share
//! it: as a Prometheus label it adds no series.
use std::sync::Arc;

use memtrace_api::workloads::WorkloadKind;

use crate::cgroup::CgroupIdentity;

mod containers;
pub use containers::{ContainerName, ContainerNames};

/// A process's workload and instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadId {
    /// Same string on every node the workload runs on.
    pub key: String,
    pub kind: WorkloadKind,
    /// Unique on this node while the instance lives (pod, container, unit, or `pid/<pid>`).
    pub instance: String,
}

impl WorkloadId {
    /// Rule 4: a process whose cgroup names no workload is its comm.
    pub fn of_comm(pid: u32, comm: &str) -> Self {
        Self {
            key: comm.to_owned(),
            kind: WorkloadKind::Comm,
            instance: format!("pid/{pid}"),
        }
    }
}

/// What the API server says about a pod (only what the workload key needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    /// The pod's controlling owner reference (`ownerReferences[controller=true]`).
    pub controller: Option<Controller>,
}

/// A controller owning a pod: `kind` as Kubernetes spells it (`ReplicaSet`, `StatefulSet`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controller {
    pub kind: String,
    pub name: String,
}

/// Pod metadata by pod uid (the Kubernetes watcher implements it).
pub trait PodLookup: Send + Sync {
    fn pod(&self, uid: &str) -> Option<PodMeta>;
}

/// Derives [`WorkloadId`]s, with Kubernetes metadata when a [`PodLookup`] is given and container
/// names when [`Identifier::with_containers`] is.
#[derive(Clone, Default)]
pub struct Identifier {
    pods: Option<Arc<dyn PodLookup>>,
    containers: Option<ContainerNames>,
}

impl std::fmt::Debug for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identifier")
            .field("kubernetes", &self.pods.is_some())
            .field("containers", &self.containers)
            .finish()
    }
}

/// `--pin REGEX` (repeatable): workloads whose key matches one of the patterns, anchored at both
/// ends, always get their own series and summary rows (never folded into `~other`), so sums over
/// nodes are complete.
#[derive(Clone, Debug, Default)]
pub struct Pins {
    patterns: Vec<String>,
    set: Option<regex::RegexSet>,
}

/// A `--pin` that is not a regular expression.
#[derive(Debug, thiserror::Error)]
#[error("invalid --pin {pattern:?}: {reason}")]
pub struct PinError {
    pub pattern: String,
    pub reason: String,
}

/// Compiled size allowed per pattern: a pin is a name or a short alternation, not a program.
const PIN_SIZE_LIMIT: usize = 1 << 20;

impl Pins {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PinError> {
        let patterns: Vec<String> = patterns.iter().map(|p| p.as_ref().to_owned()).collect();
        for pattern in &patterns {
            regex::RegexBuilder::new(&anchored(pattern))
                .size_limit(PIN_SIZE_LIMIT)
                .build()
                .map_err(|err| PinError {
                    pattern: pattern.clone(),
                    reason: err
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                })?;
        }
        let set = (!patterns.is_empty())
            .then(|| {
                regex::RegexSetBuilder::new(patterns.iter().map(|p| anchored(p)))
                    .size_limit(PIN_SIZE_LIMIT.saturating_mul(patterns.len()))
                    .build()
            })
            .transpose()
            .map_err(|err| PinError {
                pattern: patterns.join(" "),
                reason: err.to_string(),
            })?;
        Ok(Self { patterns, set })
    }

    /// Whether workload `key` is pinned.
    pub fn matches(&self, key: &str) -> bool {
        self.set.as_ref().is_some_and(|set| set.is_match(key))
    }

    /// The patterns as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

impl PartialEq for Pins {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for Pins {}

/// Characters of a pod-template hash (Kubernetes' `rand.SafeEncodeString` alphabet: no vowels,
/// no digits that read as letters).
const SAFE_ENCODE_ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";

impl Identifier {
    pub fn new(pods: Option<Arc<dyn PodLookup>>) -> Self {
        Self {
            pods,
            containers: None,
        }
    }

    /// Also names containers outside Kubernetes from their runtime's state (see
    /// [`ContainerNames`]).
    #[must_use]
    pub fn with_containers(mut self, containers: ContainerNames) -> Self {
        self.containers = Some(containers);
        self
    }

    /// The workload of process `pid` named `comm` in cgroup `cgroup` owned by `owner`.
    pub fn identify(
        &self,
        pid: u32,
        comm: &str,
        _cgroup: Option<&str>,
        owner: &CgroupIdentity,
    ) -> WorkloadId {
        self.identify_owner(owner)
            .unwrap_or_else(|| WorkloadId::of_comm(pid, comm))
    }

    /// The workload a cgroup names by itself (rules 1–3), `None` when only its processes' comms
    /// can (rule 4). Every process of the cgroup has this workload.
    pub fn identify_owner(&self, owner: &CgroupIdentity) -> Option<WorkloadId> {
        if let Some(uid) = &owner.pod_uid {
            return Some(self.kubernetes(uid));
        }
        if let Some(id) = &owner.container_id
            && let Some(name) = self.containers.as_ref().and_then(|c| c.lookup(id))
        {
            return Some(WorkloadId {
                key: name.key(),
                kind: WorkloadKind::Container,
                instance: short_container_id(id).to_owned(),
            });
        }
        let unit = owner.systemd_unit.as_deref()?;
        is_service_workload(unit).then(|| WorkloadId {
            key: template_of(unit),
            kind: WorkloadKind::Systemd,
            instance: unit.to_owned(),
        })
    }

    fn kubernetes(&self, uid: &str) -> WorkloadId {
        let Some(pod) = self.pods.as_ref().and_then(|p| p.pod(uid)) else {
            return WorkloadId {
                key: format!("pod/{uid}"),
                kind: WorkloadKind::Kubernetes,
                instance: uid.to_owned(),
            };
        };
        let (kind, name) = match &pod.controller {
            Some(c) => controller_workload(c),
            None => ("Pod", pod.name.as_str()),
        };
        WorkloadId {
            key: format!("{}/{kind}/{name}", pod.namespace),
            kind: WorkloadKind::Kubernetes,
            instance: pod.name,
        }
    }
}

/// The controller a workload is named after: a ReplicaSet named `<deployment>-<pod-template
/// hash>` stands for its Deployment, a Job named `<cronjob>-<scheduled minute>` for its CronJob;
/// every other controller for itself.
fn controller_workload(c: &Controller) -> (&str, &str) {
    let parent = |suffix_ok: fn(&str) -> bool| {
        c.name
            .rsplit_once('-')
            .filter(|(base, suffix)| !base.is_empty() && suffix_ok(suffix))
            .map(|(base, _)| base)
    };
    match c.kind.as_str() {
        "ReplicaSet" => match parent(is_pod_template_hash) {
            Some(deployment) => ("Deployment", deployment),
            None => ("ReplicaSet", &c.name),
        },
        "Job" => match parent(is_cronjob_schedule) {
            Some(cronjob) => ("CronJob", cronjob),
            None => ("Job", &c.name),
        },
        kind => (kind, &c.name),
    }
}

/// A Deployment's pod-template hash: a 32-bit FNV hash in the safe alphabet, 1 to 10 characters
/// (6 or more in practice; shorter suffixes are taken for part of a hand-written name).
fn is_pod_template_hash(s: &str) -> bool {
    (6..=10).contains(&s.len()) && s.chars().all(|c| SAFE_ENCODE_ALPHABET.contains(c))
}

/// The CronJob controller names its Jobs `<cronjob>-<scheduled time in minutes since the epoch>`
/// (8 digits since 1960s' end, so at least 8).
fn is_cronjob_schedule(s: &str) -> bool {
    s.len() >= 8 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A systemd unit that is a workload: a service other than a user's service manager. Scopes
/// group processes started elsewhere (sessions, containers, `systemd-run --scope`, `init.scope`)
/// and say nothing of what runs in them.
fn is_service_workload(unit: &str) -> bool {
    unit.ends_with(".service")
        && !unit.starts_with("user@")
        && !unit.starts_with("user-runtime-dir@")
}

/// A template instance's template (`redis-server@6380.service` → `redis-server@.service`): the
/// instances of one template on a host are copies of one program (shards, replicas), so they are
/// one workload's instances, and a hot one shows as skew. Any other unit is its own workload.
fn template_of(unit: &str) -> String {
    match unit.split_once('@') {
        Some((template, _)) => format!("{template}@.service"),
        None => unit.to_owned(),
    }
}

/// The 12-digit form `docker ps` and `crictl ps` show.
fn short_container_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::identify;

    const ID: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904aaaa0000bbbb1111cccc2222";
    const UID: &str = "3f2a9c1e-6b7d-4e8a-9f10-2b3c4d5e6f70";
    const UID_: &str = "3f2a9c1e_6b7d_4e8a_9f10_2b3c4d5e6f70";

    struct Pods(Vec<(&'static str, PodMeta)>);

    impl PodLookup for Pods {
        fn pod(&self, uid: &str) -> Option<PodMeta> {
            self.0
                .iter()
                .find(|(u, _)| *u == uid)
                .map(|(_, m)| m.clone())
        }
    }

    fn pod(name: &str, controller: Option<(&str, &str)>) -> PodMeta {
        PodMeta {
            namespace: "shop".to_owned(),
            name: name.to_owned(),
            controller: controller.map(|(kind, name)| Controller {
                kind: kind.to_owned(),
                name: name.to_owned(),
            }),
        }
    }

    fn with_pod(meta: PodMeta) -> Identifier {
        Identifier::new(Some(Arc::new(Pods(vec![(UID, meta)]))))
    }

    fn id_of(identifier: &Identifier, pid: u32, comm: &str, path: &str) -> WorkloadId {
        identifier.identify(pid, comm, Some(path), &identify(path))
    }

    fn expect(key: &str, kind: WorkloadKind, instance: &str) -> WorkloadId {
        WorkloadId {
            key: key.to_owned(),
            kind,
            instance: instance.to_owned(),
        }
    }

    /// The same pod's container under both kubelet cgroup drivers, containerd and CRI-O, and
    /// the pod level itself.
    fn pod_paths() -> Vec<String> {
        vec![
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            format!("/kubepods/pod{UID}/crio-{ID}"),
            format!("/kubepods/burstable/pod{UID}"),
            format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ),
        ]
    }

    #[test]
    fn kubernetes_controllers_name_the_workload() {
        use WorkloadKind::Kubernetes;
        let cases = [
            (
                pod(
                    "orders-7d9f8b6c5d-x2k4q",
                    Some(("ReplicaSet", "orders-7d9f8b6c5d")),
                ),
                expect(
                    "shop/Deployment/orders",
                    Kubernetes,
                    "orders-7d9f8b6c5d-x2k4q",
                ),
            ),
            // A hyphenated Deployment name keeps its hyphens.
            (
                pod(
                    "cart-api-5c6b7f9d8-abcde",
                    Some(("ReplicaSet", "cart-api-5c6b7f9d8")),
                ),
                expect(
                    "shop/Deployment/cart-api",
                    Kubernetes,
                    "cart-api-5c6b7f9d8-abcde",
                ),
            ),
            // A ReplicaSet not made by a Deployment (no hash suffix) stays itself.
            (
                pod("legacy-rs-q8w2z", Some(("ReplicaSet", "legacy-rs"))),
                expect("shop/ReplicaSet/legacy-rs", Kubernetes, "legacy-rs-q8w2z"),
            ),
            (
                pod("redis-2", Some(("StatefulSet", "redis"))),
                expect("shop/StatefulSet/redis", Kubernetes, "redis-2"),
            ),
            (
                pod("node-exporter-7xk2p", Some(("DaemonSet", "node-exporter"))),
                expect(
                    "shop/DaemonSet/node-exporter",
                    Kubernetes,
                    "node-exporter-7xk2p",
                ),
            ),
            (
                pod("report-29145600-h7x2k", Some(("Job", "report-29145600"))),
                expect("shop/CronJob/report", Kubernetes, "report-29145600-h7x2k"),
            ),
            (
                pod("migrate-db-5vq9t", Some(("Job", "migrate-db"))),
                expect("shop/Job/migrate-db", Kubernetes, "migrate-db-5vq9t"),
            ),
            (
                pod("debug", None),
                expect("shop/Pod/debug", Kubernetes, "debug"),
            ),
        ];
        for (meta, expected) in cases {
            let identifier = with_pod(meta);
            for path in pod_paths() {
                assert_eq!(id_of(&identifier, 42, "java", &path), expected, "{path}");
            }
        }
    }

    #[test]
    fn a_pod_without_metadata_is_its_uid() {
        let expected = expect(&format!("pod/{UID}"), WorkloadKind::Kubernetes, UID);
        for identifier in [Identifier::new(None), with_pod(pod("x", None))] {
            let other_uid = pod_paths()[0].replace(UID_, "0f2a9c1e_6b7d_4e8a_9f10_2b3c4d5e6f70");
            if identifier.pods.is_none() {
                for path in pod_paths() {
                    assert_eq!(id_of(&identifier, 7, "java", &path), expected, "{path}");
                }
            } else {
                // The watcher does not know this pod (yet).
                let id = id_of(&identifier, 7, "java", &other_uid);
                assert_eq!(id.key, "pod/0f2a9c1e-6b7d-4e8a-9f10-2b3c4d5e6f70");
            }
        }
        // Static pods carry a 32-digit hash instead of a UUID.
        let hash = "5cb8c8a3a8e4f8b7d9e0c1a2b3c4d5e6";
        let id = id_of(
            &Identifier::new(None),
            7,
            "etcd",
            &format!("/kubepods/burstable/pod{hash}/{ID}"),
        );
        assert_eq!(id.key, format!("pod/{hash}"));
    }

    #[test]
    fn systemd_services_are_workloads_and_scopes_are_not() {
        use WorkloadKind::{Comm, Systemd};
        let none = Identifier::new(None);
        let cases = [
            (
                "/system.slice/redis-server.service",
                expect("redis-server.service", Systemd, "redis-server.service"),
            ),
            (
                "/system.slice/system-redis\\x2dserver.slice/redis-server@6380.service",
                expect(
                    "redis-server@.service",
                    Systemd,
                    "redis-server@6380.service",
                ),
            ),
            // A user's own service, under their service manager.
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/syncthing.service",
                expect("syncthing.service", Systemd, "syncthing.service"),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service",
                expect("bash", Comm, "pid/99"),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/init.scope",
                expect("bash", Comm, "pid/99"),
            ),
            (
                "/user.slice/user-1000.slice/session-2.scope",
                expect("bash", Comm, "pid/99"),
            ),
            ("/init.scope", expect("bash", Comm, "pid/99")),
            (
                "/system.slice/run-r3f1c2d.scope",
                expect("bash", Comm, "pid/99"),
            ),
            ("/", expect("bash", Comm, "pid/99")),
            ("/demo", expect("bash", Comm, "pid/99")),
        ];
        for (path, expected) in cases {
            assert_eq!(id_of(&none, 99, "bash", path), expected, "{path}");
        }
        // No cgroup known at all.
        assert_eq!(
            none.identify(99, "bash", None, &CgroupIdentity::default()),
            expect("bash", Comm, "pid/99")
        );
    }

    #[test]
    fn containers_are_named_by_their_runtime_else_by_comm() {
        use WorkloadKind::{Comm, Container};
        let root = tempfile::tempdir().unwrap();
        containers::tests::docker_config(
            root.path(),
            ID,
            r#"{"Name":"/cache","Config":{"Image":"redis:7.2","Labels":{}}}"#,
        );
        let identifier = Identifier::new(None).with_containers(ContainerNames::under(root.path()));
        let expected = expect("cache", Container, "4b825dc642cb");
        for path in [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
        ] {
            assert_eq!(
                id_of(&identifier, 5, "redis-server", &path),
                expected,
                "{path}"
            );
        }
        // Unknown to the runtime (or another runtime's): the comm.
        let unknown = ID.replace("4b82", "9b82");
        assert_eq!(
            id_of(
                &identifier,
                5,
                "redis-server",
                &format!("/docker/{unknown}")
            ),
            expect("redis-server", Comm, "pid/5")
        );
        // Without the runtime's state the comm, even under a service-looking scope.
        assert_eq!(
            id_of(
                &Identifier::new(None),
                5,
                "redis-server",
                &format!("/system.slice/docker-{ID}.scope")
            ),
            expect("redis-server", Comm, "pid/5")
        );
        // A pod's container is the pod's, whatever the runtime says.
        let path = format!("/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(
            id_of(&identifier, 5, "redis-server", &path).kind,
            WorkloadKind::Kubernetes
        );
    }

    #[test]
    fn pins_match_whole_workload_keys() {
        let pins = Pins::new(&["redis-server\\.service", "shop/Deployment/.*"]).unwrap();
        assert!(pins.matches("redis-server.service"));
        assert!(pins.matches("shop/Deployment/orders"));
        assert!(
            !pins.matches("redis-server.service.bak"),
            "anchored at the end"
        );
        assert!(
            !pins.matches("x-redis-server.service"),
            "anchored at the start"
        );
        assert!(
            !pins.matches("redis-serverXservice"),
            "the escaped dot is a dot"
        );
        // An alternation is anchored as a whole, not just its first branch.
        let alt = Pins::new(&["a|b"]).unwrap();
        assert!(alt.matches("b") && !alt.matches("ab") && !alt.matches("bc"));
        assert!(!Pins::default().matches("anything"));
        let err = Pins::new(&["ok", "(unclosed"]).unwrap_err().to_string();
        assert!(err.starts_with("invalid --pin \"(unclosed\": "), "{err}");
        assert!(err.contains("unclosed group"), "{err}");
        assert_eq!(Pins::new(&["a"]).unwrap(), Pins::new(&["a"]).unwrap());
    }

    #[test]
    fn hashes_and_schedules_are_recognised_strictly() {
        assert!(is_pod_template_hash("7d9f8b6c5d"));
        assert!(is_pod_template_hash("5c6b7f9d8"));
        assert!(
            !is_pod_template_hash("backend"),
            "vowels are not in the alphabet"
        );
        assert!(!is_pod_template_hash("v2"), "too short");
        assert!(!is_pod_template_hash("7D9F8B6C5D"));
        assert!(is_cronjob_schedule("29145600"));
        assert!(!is_cronjob_schedule("2914"));
        assert!(!is_cronjob_schedule("2914560x"));
        // A name that is all suffix has no parent to strip to.
        let c = Controller {
            kind: "ReplicaSet".to_owned(),
            name: "-7d9f8b6c5d".to_owned(),
        };
        assert_eq!(controller_workload(&c), ("ReplicaSet", "-7d9f8b6c5d"));
    }
}
