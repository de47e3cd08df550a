//! The container image run as the DaemonSet runs it: the image `cargo xtask image` builds (from
//! the debug binary), started by podman with exactly the security context, host mounts, args and
//! env of `deploy/kubernetes/base`'s DaemonSet, as rendered by `kubectl kustomize` and read into
//! the Kubernetes API types. Every field of the pod spec, container, security contexts, volumes
//! and mounts is either translated into a podman argument or named here as not about the
//! container's privileges or mounts (scheduling, API access); anything else fails the test, so
//! it follows the manifest rather than a copy of it.
//!
//! Where podman differs from a Kubernetes runtime (CRI) by default, the difference is undone and
//! said why at the place it is done: capabilities, rlimits, tmpfs on a read-only root.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{
        Container, EnvVar, PodSecurityContext, PodSpec, Probe, SecurityContext, Volume, VolumeMount,
    },
};
use memtrace_api::Snapshot;
use memtrace_tests::{MemoryCgroup, Workload, memtrace_bin, page_size, require_root, workload_bin};

use crate::{
    daemon::{get, samples},
    privileges::{expected_kept, thread_privileges},
    support::serial,
};

/// The image the DaemonSet names, as `cargo xtask image` tags it by default.
const MANIFEST_IMAGE: &str = concat!("memtrace:", env!("CARGO_PKG_VERSION"));
/// The test's own tag for the same Containerfile with the debug binary: a user's
/// `memtrace:<version>` (built from release) is left alone.
const TEST_IMAGE: &str = concat!("localhost/memtrace-test:", env!("CARGO_PKG_VERSION"));
/// Pages the workload outside the container touches: one minor fault each, resident after.
const PAGES: u64 = 25_000;
/// Its name (and comm), unique on the host, to find it in `/metrics`.
const WORKLOAD_COMM: &str = "ctr-workload";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `kubectl kustomize deploy/kubernetes/base`, its DaemonSet.
fn rendered_daemonset() -> DaemonSet {
    let out = Command::new("kubectl")
        .args(["kustomize", "deploy/kubernetes/base"])
        .current_dir(workspace_root())
        .output()
        .expect("kubectl (with kustomize) on PATH");
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).expect("UTF-8 manifests");
    let objects: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&rendered).expect("rendered YAML");
    let mut daemonsets = objects
        .into_iter()
        .filter(|object| object["kind"] == "DaemonSet");
    let daemonset = daemonsets.next().expect("a DaemonSet in the base");
    assert!(daemonsets.next().is_none(), "one DaemonSet in the base");
    serde_json::from_value(daemonset).expect("the DaemonSet as k8s-openapi's type")
}

/// What the manifest says, as podman arguments and what the test checks itself.
struct Translated {
    /// `podman run` options (before the image).
    options: Vec<String>,
    /// The container's arguments (after the image).
    args: Vec<String>,
    /// containers.conf for this run: the capability bounding set.
    containers_conf: String,
    /// The manifest's capability additions as a `CapBnd` mask.
    bounding: u64,
    uid: u32,
    gid: u32,
    /// The node name given through the downward API.
    node_name: String,
    /// `(kind, path, container port)` of each HTTP probe.
    probes: Vec<(&'static str, String, u16)>,
    /// The container port published (on loopback).
    port: u16,
}

/// Fails the test on a field this translation does not handle.
fn untranslated(what: &str, value: &impl std::fmt::Debug) -> ! {
    panic!(
        "the DaemonSet sets {what} = {value:?}, which tests/privileged/container.rs does not \
         translate into podman: translate it there (or say why it does not matter to a container's \
         privileges and mounts)"
    )
}

fn none<T: std::fmt::Debug>(what: &str, value: &Option<T>) {
    if let Some(value) = value {
        untranslated(what, value);
    }
}

/// This machine's hostname: the node name a kubelet registers by default.
fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned()
}

fn translate(daemonset: &DaemonSet, scratch: &Path) -> Translated {
    let spec = daemonset.spec.as_ref().expect("DaemonSet spec");
    let pod = spec.template.spec.as_ref().expect("pod template spec");
    let PodSpec {
        containers,
        host_pid,
        host_network,
        host_ipc,
        host_users,
        security_context: pod_security,
        volumes,
        init_containers,
        ephemeral_containers,
        share_process_namespace,
        runtime_class_name,
        os,
        resources: pod_resources,
        // Scheduling, placement and API access: none of them is a privilege of the container or
        // a mount (the ServiceAccount token would be one, but there is no API server here and
        // the daemon runs with `--kubernetes=auto`, off outside a pod).
        active_deadline_seconds: _,
        affinity: _,
        automount_service_account_token: _,
        dns_config: _,
        dns_policy: _,
        enable_service_links: _,
        host_aliases: _,
        hostname: _,
        image_pull_secrets: _,
        node_name: _,
        node_selector: _,
        overhead: _,
        preemption_policy: _,
        priority: _,
        priority_class_name: _,
        readiness_gates: _,
        resource_claims: _,
        restart_policy: _,
        scheduler_name: _,
        scheduling_gates: _,
        service_account: _,
        service_account_name: _,
        set_hostname_as_fqdn: _,
        subdomain: _,
        termination_grace_period_seconds: _,
        tolerations: _,
        topology_spread_constraints: _,
    } = pod;
    for (what, value) in [
        ("initContainers", init_containers.as_ref().map(Vec::len)),
        (
            "ephemeralContainers",
            ephemeral_containers.as_ref().map(Vec::len),
        ),
    ] {
        if value.is_some_and(|n| n > 0) {
            untranslated(what, &value);
        }
    }
    none("shareProcessNamespace", share_process_namespace);
    none("runtimeClassName", runtime_class_name);
    none("os", os);
    none("resources (pod-level)", pod_resources);
    if host_users == &Some(false) {
        untranslated("hostUsers (a user namespace)", host_users);
    }
    let [container] = containers.as_slice() else {
        untranslated("containers (one expected)", &containers.len());
    };

    let mut options = vec![format!(
        "--name=memtrace-container-test-{}",
        std::process::id()
    )];
    if host_pid == &Some(true) {
        options.push("--pid=host".into());
    }
    if host_ipc == &Some(true) {
        options.push("--ipc=host".into());
    }
    // A pod's own network namespace (podman's bridge), the port published on loopback below:
    // the daemon listens where the manifest says, reached as a Service would reach it.
    if host_network == &Some(true) {
        untranslated("hostNetwork", host_network);
    }

    let pod_security = pod_security.clone().unwrap_or_default();
    let PodSecurityContext {
        fs_group,
        run_as_group: pod_run_as_group,
        run_as_non_root: pod_run_as_non_root,
        run_as_user: pod_run_as_user,
        seccomp_profile: pod_seccomp,
        supplemental_groups,
        // Only how often the kubelet re-chowns volumes to fsGroup: the result is the same.
        fs_group_change_policy: _,
        app_armor_profile,
        se_linux_change_policy,
        se_linux_options,
        supplemental_groups_policy,
        sysctls,
        windows_options,
    } = pod_security;
    none("securityContext.appArmorProfile", &app_armor_profile);
    none(
        "securityContext.seLinuxChangePolicy",
        &se_linux_change_policy,
    );
    none("securityContext.seLinuxOptions", &se_linux_options);
    none(
        "securityContext.supplementalGroupsPolicy",
        &supplemental_groups_policy,
    );
    none("securityContext.sysctls", &sysctls);
    none("securityContext.windowsOptions", &windows_options);
    // The kubelet adds fsGroup and supplementalGroups to the process's groups.
    for group in fs_group.iter().chain(supplemental_groups.iter().flatten()) {
        options.push(format!("--group-add={group}"));
    }

    let Container {
        args,
        command,
        env,
        env_from,
        image,
        image_pull_policy,
        liveness_probe,
        readiness_probe,
        startup_probe,
        ports,
        resources,
        security_context,
        volume_mounts,
        volume_devices,
        lifecycle,
        stdin,
        stdin_once,
        tty,
        working_dir,
        restart_policy,
        // The container's name (podman's is unique per test run), where the kubelet keeps its
        // termination message, and how a resize restarts it: nothing the process sees.
        name: _,
        termination_message_path: _,
        termination_message_policy: _,
        resize_policy: _,
    } = container;
    none("volumeDevices", volume_devices);
    none("lifecycle", lifecycle);
    none("stdin", stdin);
    none("stdinOnce", stdin_once);
    none("tty", tty);
    none("workingDir", working_dir);
    none("restartPolicy (a sidecar)", restart_policy);
    none("envFrom", env_from);
    assert_eq!(
        image.as_deref(),
        Some(MANIFEST_IMAGE),
        "the DaemonSet must run the image `cargo xtask image` builds"
    );
    match image_pull_policy.as_deref() {
        // The image is local (no registry here): never pulled.
        Some("IfNotPresent" | "Never") => options.push("--pull=never".into()),
        other => untranslated("imagePullPolicy", &other),
    }
    if let Some(command) = command {
        options.push(format!(
            "--entrypoint={}",
            serde_json::to_string(command).expect("JSON")
        ));
    }

    let node_name = node_name();
    for EnvVar {
        name,
        value,
        value_from,
    } in env.iter().flatten()
    {
        let value = match (value, value_from) {
            (Some(value), None) => value.clone(),
            (None, Some(source)) => match &source.field_ref {
                Some(field)
                    if field.field_path == "spec.nodeName"
                        && source.config_map_key_ref.is_none()
                        && source.resource_field_ref.is_none()
                        && source.secret_key_ref.is_none() =>
                {
                    node_name.clone()
                }
                _ => untranslated(&format!("env {name}"), source),
            },
            other => untranslated(&format!("env {name}"), &other),
        };
        options.push(format!("--env={name}={value}"));
    }

    let mut named_ports = BTreeMap::new();
    let mut published = None;
    for port in ports.iter().flatten() {
        if port.host_port.is_some() || port.host_ip.is_some() {
            untranslated("ports[].hostPort/hostIP", port);
        }
        if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
            untranslated("ports[].protocol", &port.protocol);
        }
        let number = u16::try_from(port.container_port).expect("port number");
        // On loopback, a free port: nothing outside this machine reaches it, and two runs (or a
        // host daemon on 9847) do not collide.
        options.push(format!("--publish=127.0.0.1::{number}"));
        if let Some(name) = &port.name {
            named_ports.insert(name.clone(), number);
        }
        published.get_or_insert(number);
    }
    let port = published.expect("the DaemonSet publishes its HTTP port");
    let mut probes = Vec::new();
    for (kind, probe) in [
        ("liveness", liveness_probe),
        ("readiness", readiness_probe),
        ("startup", startup_probe),
    ] {
        if let Some(probe) = probe {
            probes.push(http_probe(kind, probe, &named_ports));
        }
    }

    if let Some(resources) = resources {
        // Requests only place the pod; limits bound the container.
        for (name, quantity) in resources.limits.iter().flatten() {
            match name.as_str() {
                "memory" => options.push(format!("--memory={}", bytes(&quantity.0))),
                "cpu" => options.push(format!("--cpus={}", cores(&quantity.0))),
                _ => untranslated(&format!("resources.limits.{name}"), quantity),
            }
        }
        none("resources.claims", &resources.claims);
    }

    let security = security_context.clone().unwrap_or_default();
    let SecurityContext {
        allow_privilege_escalation,
        capabilities,
        privileged,
        proc_mount,
        read_only_root_filesystem,
        run_as_group,
        run_as_non_root,
        run_as_user,
        seccomp_profile,
        app_armor_profile,
        se_linux_options,
        windows_options,
    } = security;
    none("securityContext.appArmorProfile", &app_armor_profile);
    none("securityContext.seLinuxOptions", &se_linux_options);
    none("securityContext.windowsOptions", &windows_options);
    if privileged == Some(true) {
        untranslated("securityContext.privileged", &privileged);
    }
    if proc_mount.as_deref().is_some_and(|m| m != "Default") {
        untranslated("securityContext.procMount", &proc_mount);
    }
    // The container's fields override the pod's.
    let uid = run_as_user
        .or(pod_run_as_user)
        .expect("runAsUser (the image's USER would do, but the DaemonSet names it)");
    let gid = run_as_group.or(pod_run_as_group).unwrap_or(uid);
    if run_as_non_root.or(pod_run_as_non_root) == Some(true) {
        assert_ne!(uid, 0, "runAsNonRoot with runAsUser 0");
    }
    options.push(format!("--user={uid}:{gid}"));
    if allow_privilege_escalation == Some(false) {
        options.push("--security-opt=no-new-privileges".into());
    }
    if read_only_root_filesystem == Some(true) {
        options.push("--read-only".into());
        // podman mounts tmpfs on /tmp, /var/tmp and /run of a read-only root; a CRI runtime
        // does not.
        options.push("--read-only-tmpfs=false".into());
    }
    // Unset is what the kubelet's --seccomp-default turns into RuntimeDefault: the DaemonSet
    // must work there too. podman's default profile is containers-common's, CRI-O's
    // RuntimeDefault.
    match seccomp_profile
        .or(pod_seccomp)
        .map(|profile| (profile.type_, profile.localhost_profile))
    {
        None => {}
        Some((kind, None)) if kind == "RuntimeDefault" => {}
        Some((kind, None)) if kind == "Unconfined" => {
            options.push("--security-opt=seccomp=unconfined".into());
        }
        other => untranslated("securityContext.seccompProfile", &other),
    }

    // Capabilities. A CRI runtime gives a non-root process none of them: `add` only widens the
    // bounding set, and the image's binary gains them from its file capabilities at exec. podman
    // (4.3) also puts `--cap-add`ed capabilities in a non-root process's ambient set, which would
    // grant them even to a binary that lost its file capabilities; its default capability list,
    // given in containers.conf, is the bounding set alone, as the CRI's.
    let capabilities = capabilities.unwrap_or_default();
    let dropped = capabilities.drop.unwrap_or_default();
    if dropped != ["ALL"] {
        untranslated(
            "capabilities.drop (anything but [ALL]: the runtime's default set)",
            &dropped,
        );
    }
    let added = capabilities.add.unwrap_or_default();
    let containers_conf = format!(
        "[containers]\ndefault_capabilities = [{}]\n",
        added
            .iter()
            .map(|name| format!("\"{name}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let bounding = added
        .iter()
        .fold(0, |mask, name| mask | capability_bit(name));

    let volumes: BTreeMap<&str, &Volume> = volumes
        .iter()
        .flatten()
        .map(|volume| (volume.name.as_str(), volume))
        .collect();
    for mount in volume_mounts.iter().flatten() {
        let volume = volumes
            .get(mount.name.as_str())
            .unwrap_or_else(|| panic!("volumeMount {} names no volume", mount.name));
        options.push(mount_option(mount, volume, fs_group, scratch));
    }

    Translated {
        options,
        args: args.clone().unwrap_or_default(),
        containers_conf,
        bounding,
        uid: u32::try_from(uid).expect("uid"),
        gid: u32::try_from(gid).expect("gid"),
        node_name,
        probes,
        port,
    }
}

/// An `httpGet` probe on a named or numbered container port.
fn http_probe(
    kind: &'static str,
    probe: &Probe,
    named_ports: &BTreeMap<String, u16>,
) -> (&'static str, String, u16) {
    let Some(get) = &probe.http_get else {
        untranslated(&format!("{kind}Probe (not httpGet)"), probe);
    };
    if get.host.is_some() || get.http_headers.is_some() || get.scheme.as_deref() == Some("HTTPS") {
        untranslated(&format!("{kind}Probe.httpGet"), get);
    }
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let port = match &get.port {
        IntOrString::Int(number) => u16::try_from(*number).expect("port"),
        IntOrString::String(name) => *named_ports
            .get(name)
            .unwrap_or_else(|| panic!("{kind}Probe names port {name}, which is not declared")),
    };
    (kind, get.path.clone().unwrap_or_else(|| "/".into()), port)
}

/// One volume mount as a podman `--volume`/`--mount`.
fn mount_option(
    mount: &VolumeMount,
    volume: &Volume,
    fs_group: Option<i64>,
    scratch: &Path,
) -> String {
    let VolumeMount {
        mount_path,
        mount_propagation,
        name,
        read_only,
        recursive_read_only,
        sub_path,
        sub_path_expr,
    } = mount;
    none("volumeMounts[].subPath", sub_path);
    none("volumeMounts[].subPathExpr", sub_path_expr);
    // Without recursiveReadOnly a read-only hostPath's submounts stay as they are, as podman's
    // `ro` leaves them.
    if recursive_read_only
        .as_deref()
        .is_some_and(|r| r != "Disabled")
    {
        untranslated("volumeMounts[].recursiveReadOnly", recursive_read_only);
    }
    let propagation = match mount_propagation.as_deref() {
        None | Some("None") => "rprivate",
        Some("HostToContainer") => "rslave",
        Some("Bidirectional") => "rshared",
        other => untranslated("volumeMounts[].mountPropagation", &other),
    };
    let access = if read_only == &Some(true) { "ro" } else { "rw" };

    let Volume {
        host_path,
        empty_dir,
        name: _,
        ..
    } = volume;
    let source = match (host_path, empty_dir) {
        (Some(host_path), None) => {
            let path = Path::new(&host_path.path);
            match host_path.type_.as_deref() {
                None | Some("") => {}
                Some("Directory") => assert!(path.is_dir(), "hostPath {} missing", path.display()),
                Some("DirectoryOrCreate") => std::fs::create_dir_all(path).expect("hostPath"),
                other => untranslated(&format!("volume {name} hostPath.type"), &other),
            }
            path.to_path_buf()
        }
        (None, Some(empty_dir)) => {
            if empty_dir.medium.as_deref().is_some_and(|m| !m.is_empty()) {
                untranslated(&format!("volume {name} emptyDir.medium"), &empty_dir.medium);
            }
            // A directory on the node's disk, as the kubelet makes one: mode 0777, and with
            // fsGroup group-owned by it with the setgid bit. Its sizeLimit is enforced by
            // evicting the pod, not by the mount.
            let dir = scratch.join(name);
            std::fs::create_dir(&dir).expect("emptyDir");
            let mut mode = 0o777;
            if let Some(group) = fs_group {
                let group = u32::try_from(group).expect("fsGroup");
                std::os::unix::fs::chown(&dir, Some(0), Some(group)).expect("chown emptyDir");
                mode |= 0o2000;
            }
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
            dir
        }
        _ => untranslated(
            &format!("volume {name} (only hostPath and emptyDir)"),
            volume,
        ),
    };
    // podman binds recursively by default, as CRI runtimes bind a hostPath.
    format!(
        "--volume={}:{mount_path}:{access},{propagation}",
        source.display()
    )
}

/// A Kubernetes quantity of bytes (`256Mi`, `1G`, `1000`) in bytes.
fn bytes(quantity: &str) -> u64 {
    let split = quantity
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| untranslated("quantity", &quantity));
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => untranslated("memory quantity", &quantity),
    };
    number * factor
}

/// A Kubernetes CPU quantity (`500m`, `2`) in cores.
fn cores(quantity: &str) -> f64 {
    match quantity.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().expect("millicores") / 1000.0,
        None => quantity.parse().expect("cores"),
    }
}

/// A capability's bit in `/proc/<pid>/status` masks (linux/capability.h).
fn capability_bit(name: &str) -> u64 {
    let number = match name {
        "DAC_READ_SEARCH" => 2,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => untranslated("capabilities.add (a capability this test knows)", &other),
    };
    1 << number
}

/// A podman container of the image running as the DaemonSet would run it, its log collected;
/// removed on drop.
struct Running {
    name: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl Running {
    fn start(translated: &Translated, scratch: &Path) -> Self {
        let conf = scratch.join("containers.conf");
        std::fs::write(&conf, &translated.containers_conf).expect("containers.conf");
        let name = translated.options[0]
            .strip_prefix("--name=")
            .expect("name first")
            .to_owned();
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", &conf)
            // crun refuses a cgroup v1 host whose unified hierarchy holds a controller (this
            // one's holds hugetlb); runc runs it.
            .args(["--runtime", "runc", "run"])
            .args(rlimits())
            .args(&translated.options)
            .arg(TEST_IMAGE)
            .args(&translated.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("podman");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains("serving on ") {
                    let _ = tx.send(());
                }
                lines.lock().expect("log").push(line);
            }
        });
        let serving = rx.recv_timeout(Duration::from_secs(30));
        let mut container = Self {
            name,
            child,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        assert!(
            serving.is_ok(),
            "the daemon did not start serving in the container: {command:?}\n{}",
            container.log()
        );
        let published = podman(&["port", &container.name, &format!("{}/tcp", translated.port)]);
        container.addr = published
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .unwrap_or_else(|| panic!("podman port: {published:?}"));
        container
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// The container's process as the host sees it.
    fn host_pid(&self) -> u32 {
        podman(&["inspect", "--format", "{{.State.Pid}}", &self.name])
            .trim()
            .parse()
            .expect("pid")
    }

    fn wait_ready(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = get(self.addr, path);
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} answered {status} for 30 s: {body}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "5", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman").args(args).output().expect("podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DaemonSet sets no rlimits: a CRI runtime passes on its own. podman as root asks for
/// RLIMIT_NOFILE 1048576 instead, which needs CAP_SYS_RESOURCE (this machine's root lacks it),
/// and its RLIMIT_NPROC may not exceed what podman runs with (it lowers its own to
/// kernel.pid_max): this test's own limits, within those.
fn rlimits() -> [String; 4] {
    let hard = |resource| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit to fill.
        assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
        limit.rlim_max
    };
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("pid_max")
        .trim()
        .parse()
        .expect("pid_max");
    let nofile = hard(libc::RLIMIT_NOFILE);
    let nproc = hard(libc::RLIMIT_NPROC).min(pid_max);
    [
        "--ulimit".into(),
        format!("nofile={nofile}:{nofile}"),
        "--ulimit".into(),
        format!("nproc={nproc}:{nproc}"),
    ]
}

/// `cargo xtask image` with the already built debug binary, under the test's tag.
fn build_test_image() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["xtask", "image", "--binary"])
        .arg(memtrace_bin())
        .args(["--tag", TEST_IMAGE])
        .current_dir(workspace_root())
        .status()
        .expect("cargo xtask image");
    assert!(status.success(), "cargo xtask image failed: {status}");
}

/// With none of its file capabilities in the bounding set (as the `cluster serve` Deployment
/// runs it) the binary still executes: the kernel refuses a `+ep` binary it cannot fully grant,
/// not a `+p` one.
fn runs_without_capabilities() {
    let mut command = Command::new("podman");
    command
        .args([
            "--runtime",
            "runc",
            "run",
            "--rm",
            "--cap-drop=ALL",
            "--read-only",
        ])
        .args(rlimits())
        .args([TEST_IMAGE, "--version"]);
    let out = command.output().expect("podman");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        concat!("memtrace ", env!("CARGO_PKG_VERSION"))
    );
}

/// `RssAnon` of a live process, bytes (`/proc/<pid>/status`).
fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon");
    kib << 10
}

/// The image under exactly the DaemonSet's security context and mounts: every probe family
/// attaches without `--allow-degraded`, the daemon runs as the manifest's user with the
/// capabilities its binary's file capabilities gave it dropped after attach, and `/metrics`
/// reports a workload started outside the container with its faults and RSS.
#[test]
fn image_under_the_daemonsets_security_context_attaches_everything_and_sees_the_host() {
    require_root();
    let _serial = serial();
    let daemonset = rendered_daemonset();
    let scratch = tempfile::tempdir().expect("scratch");
    let translated = translate(&daemonset, scratch.path());
    assert!(
        !translated.args.iter().any(|a| a.contains("allow-degraded")),
        "the DaemonSet must not accept a degraded daemon: {:?}",
        translated.args
    );
    build_test_image();
    runs_without_capabilities();

    // Started outside the container, in a cgroup of its own, before the daemon.
    let cgroup = MemoryCgroup::new("memtrace-container", 1 << 30);
    let link = scratch.path().join(WORKLOAD_COMM);
    std::os::unix::fs::symlink(workload_bin(), &link).expect("link the workload");
    let mut workload =
        Workload::start_program_in(&link, &cgroup.dir, &["touch-anon", &PAGES.to_string()]);

    let container = Running::start(&translated, scratch.path());
    let readiness = translated
        .probes
        .iter()
        .find(|(kind, ..)| *kind == "readiness")
        .expect("a readiness probe");
    assert_eq!(
        readiness.2, translated.port,
        "readiness on the published port"
    );
    container.wait_ready(&readiness.1);
    for (kind, path, _) in &translated.probes {
        let (status, body) = get(container.addr, path);
        assert_eq!(status, 200, "{kind} probe {path}: {body}");
    }

    // Every family the daemon asks for attached whole, as the log and the snapshot say.
    let log = container.log();
    for family in memtrace::probes::DAEMON_FAMILIES {
        assert!(
            log.contains(&format!("probe family {family}: attached ")),
            "{family} not attached:\n{log}"
        );
    }
    assert!(
        !log.contains("NOT attached") && !log.contains(", without "),
        "a family or hook missing:\n{log}"
    );
    let (_, body) = get(container.addr, "/api/v1/snapshot");
    let snapshot: Snapshot = serde_json::from_str(&body).expect("snapshot");
    for family in memtrace::probes::DAEMON_FAMILIES {
        assert!(
            snapshot.pipeline.families.contains(family),
            "{family} not in the snapshot's families"
        );
    }
    assert_eq!(
        snapshot.node.name.as_deref(),
        Some(translated.node_name.as_str()),
        "NODE_NAME from the downward API"
    );

    // The process, seen from the host: the manifest's user, nothing given by the runtime (the
    // capabilities came from the binary), and after attach nothing kept, no_new_privs set, the
    // bounding set the manifest's.
    let effective = podman(&[
        "inspect",
        "--format",
        "{{json .EffectiveCaps}}",
        &container.name,
    ]);
    assert!(
        matches!(effective.trim(), "null" | "[]"),
        "the runtime gave the process capabilities itself: {effective}"
    );
    let pid = container.host_pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let ids = |field: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .expect(field)
            .split_whitespace()
            .map(|id| id.parse().expect("id"))
            .collect()
    };
    assert_eq!(ids("Uid:"), [translated.uid; 4], "{status}");
    assert_eq!(ids("Gid:"), [translated.gid; 4], "{status}");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .expect("comm")
            .trim(),
        "memtrace"
    );
    let kept = expected_kept();
    let threads = thread_privileges(pid);
    assert!(threads.len() > 1, "the runtime's threads too: {threads:?}");
    for thread in &threads {
        assert_eq!(
            *thread,
            (0, kept, kept, translated.bounding, 0, true),
            "(CapInh, CapPrm, CapEff, CapBnd, CapAmb, NoNewPrivs) of every thread: {threads:?}"
        );
    }

    // The host's workload, with its faults and RSS.
    let results = workload.run();
    assert_eq!(results["pages"], PAGES);
    let workload_pid = workload.pid();
    let series = |metrics: &str, name: &str, kind: &str| -> Option<f64> {
        samples(metrics, name)
            .into_iter()
            .find(|(labels, _)| {
                labels.contains(&format!("comm=\"{WORKLOAD_COMM}\""))
                    && labels.contains(&format!("cgroup=\"{}\"", cgroup.path))
                    && labels.contains(&format!("type=\"{kind}\""))
            })
            .map(|(_, value)| value)
    };
    let page = page_size() as u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (faults, anon) = loop {
        let (status, metrics) = get(container.addr, "/metrics");
        assert_eq!(status, 200);
        let faults = series(&metrics, "memtrace_process_page_faults_total", "minor");
        let anon = series(&metrics, "memtrace_process_rss_bytes", "anon");
        if let (Some(faults), Some(anon)) = (faults, anon)
            && faults >= PAGES as f64
            // The kernel's per-CPU RSS counters may hold back a batch of pages per CPU.
            && anon + (memtrace_tests::rss_counter_slack_pages() * page) as f64
                >= (PAGES * page) as f64
        {
            break (faults as u64, anon as u64);
        }
        assert!(
            Instant::now() < deadline,
            "the workload's faults and RSS not in /metrics within 20 s: {faults:?} {anon:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // No more than the kernel counts for it (read after the scrape, the workload idle since).
    let (minor, _) = memtrace_tests::proc_faults(workload_pid);
    assert!(
        faults <= minor,
        "{faults} faults exported, the kernel counts {minor}"
    );
    let kernel_anon = rss_anon(workload_pid);
    assert!(
        anon <= kernel_anon + (1 << 20),
        "{anon} B anonymous RSS exported, the kernel counts {kernel_anon} B"
    );
    workload.finish();
    drop(container);
}
