//! The Kubernetes manifests under `deploy/kubernetes`, as the API server would read them: each
//! kustomization rendered by `kubectl kustomize`, every object read into its real API type (the
//! `k8s-openapi` types kube-rs uses; prometheus-operator's kinds from [`prometheus_operator`]),
//! with every field the type does not know reported (the API server's strict field validation,
//! which a plain deserialize silently skips) and every type error named by its path.
pub mod prometheus_operator;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use k8s_openapi::{
    Resource,
    api::{
        apps::v1::{DaemonSet, Deployment},
        core::v1::{Namespace, Secret, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The repository's root (this crate is `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `deploy/kubernetes`.
pub fn kubernetes_dir() -> PathBuf {
    workspace_root().join("deploy/kubernetes")
}

/// Every directory under `deploy/kubernetes` with a `kustomization.yaml`, sorted: the base and
/// each overlay, so a new overlay is checked without being listed anywhere.
pub fn kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        if dir.join("kustomization.yaml").is_file() {
            found.push(dir.to_path_buf());
        }
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(&kubernetes_dir(), &mut found);
    found.sort();
    found
}

/// `kubectl kustomize DIR`: the objects it would apply, as one multi-document YAML text.
/// Panics saying how to install kubectl when it is missing, and with kustomize's own words when
/// it refuses the kustomization.
pub fn kustomize(dir: &Path) -> String {
    let output = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubectl is not installed, and the manifests test renders deploy/kubernetes with \
             `kubectl kustomize`: install kubectl ≥ 1.27 (it embeds kustomize v5), e.g. the \
             `kubectl` package of the Kubernetes project's apt repository or of the Google \
             Cloud CLI's, then run the test again"
        ),
        Err(err) => panic!("running kubectl kustomize {}: {err}", dir.display()),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed ({}):\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kustomize writes UTF-8")
}

/// The objects of the kustomization in `dir` (under the repository), each with the file it came
/// from in its `source`: `deploy/kubernetes/base/daemonset.yaml (patched in
/// deploy/kubernetes/overlays/tls/kustomization.yaml)`. kustomize records both when asked
/// (`buildMetadata`); it is asked through a throw-away kustomization around `dir`, and the two
/// annotations are removed again, so the objects are what `kubectl apply -k dir` sends.
pub fn render(dir: &Path) -> Vec<Object> {
    let root = workspace_root();
    let wrapper = tempfile::tempdir().expect("temporary directory");
    // kustomize takes only relative resource paths: from the wrapper up to / and down to `dir`.
    let up = "../".repeat(wrapper.path().components().count() - 1);
    let dir = dir.canonicalize().expect("kustomization directory");
    let relative = format!("{up}{}", dir.display().to_string().trim_start_matches('/'));
    std::fs::write(
        wrapper.path().join("kustomization.yaml"),
        format!(
            "resources: [{relative:?}]\nbuildMetadata: [originAnnotations, transformerAnnotations]\n"
        ),
    )
    .expect("write the wrapper kustomization");
    let label = dir
        .strip_prefix(&root)
        .unwrap_or(&dir)
        .display()
        .to_string();
    let mut objects =
        parse_documents(&label, &kustomize(wrapper.path())).unwrap_or_else(|err| panic!("{err}"));
    // `../../work/memtrace/deploy/…` → `deploy/…`
    let from_repository = |path: &str| {
        let absolute = format!("/{}", path.trim_start_matches("../"));
        Path::new(&absolute)
            .strip_prefix(&root)
            .map_or(absolute.clone(), |p| p.display().to_string())
    };
    for object in &mut objects {
        let annotations = object.value.pointer_mut("/metadata/annotations");
        let Some(Value::Object(annotations)) = annotations else {
            continue;
        };
        let origin = annotations.remove("config.kubernetes.io/origin");
        let changes = annotations.remove("alpha.config.kubernetes.io/transformations");
        if annotations.is_empty() {
            object.value["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("annotations");
        }
        let yaml = |value: Option<Value>| -> Value {
            value
                .as_ref()
                .and_then(Value::as_str)
                .map(|text| serde_saphyr::from_str(text).expect("kustomize's annotation is YAML"))
                .unwrap_or(Value::Null)
        };
        let origin = yaml(origin);
        let file = origin
            .get("path")
            .or_else(|| origin.get("configuredIn"))
            .and_then(Value::as_str)
            .map_or_else(|| label.clone(), from_repository);
        let patched_in: BTreeSet<String> = yaml(changes)
            .as_array()
            .into_iter()
            .flatten()
            .filter(|change| change["configuredBy"]["kind"] == "PatchTransformer")
            .filter_map(|change| change["configuredIn"].as_str().map(from_repository))
            .collect();
        object.source = if patched_in.is_empty() {
            format!("{label}: {file}")
        } else {
            let patched_in: Vec<String> = patched_in.into_iter().collect();
            format!("{label}: {file} (patched in {})", patched_in.join(", "))
        };
    }
    objects
}

/// One object of a rendered kustomization (or of a fixture), as read from YAML.
#[derive(Debug, Clone)]
pub struct Object {
    /// Where it came from, for messages: the kustomization and file (see [`render`]), or a
    /// fixture's name.
    pub source: String,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub value: Value,
}

impl Object {
    /// `DaemonSet memtrace/memtrace`, as messages name it.
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{} {namespace}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// The object as its API type. Use after [`check`] (this one ignores unknown fields).
    pub fn typed<T: DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.value.clone())
            .unwrap_or_else(|err| panic!("{}: {}: {err}", self.source, self.id()))
    }
}

/// The objects of a multi-document YAML text. Each must be a mapping with `apiVersion`, `kind`
/// and `metadata.name`; empty documents are skipped.
pub fn parse_documents(source: &str, yaml: &str) -> Result<Vec<Object>, String> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(yaml).map_err(|err| format!("{source}: not YAML: {err}"))?;
    documents
        .into_iter()
        .filter(|document| !document.is_null())
        .enumerate()
        .map(|(index, mut value)| {
            unwrap_secret_data(&mut value);
            let text = |pointer: &str| value.pointer(pointer).and_then(Value::as_str);
            let required = |pointer: &str| {
                text(pointer)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{source}: document {index}: no string at {pointer}"))
            };
            Ok(Object {
                source: source.to_owned(),
                api_version: required("/apiVersion")?,
                kind: required("/kind")?,
                namespace: text("/metadata/namespace").map(str::to_owned),
                name: required("/metadata/name")?,
                value,
            })
        })
        .collect()
}

/// kustomize's secretGenerator writes long `data` values as base64 broken into lines, which the
/// API server takes (Go's base64 decoder skips line breaks) and k8s-openapi's `ByteString` does
/// not: join them, as the API server would read them.
fn unwrap_secret_data(value: &mut Value) {
    if value.get("kind").and_then(Value::as_str) != Some("Secret") {
        return;
    }
    if let Some(data) = value.get_mut("data").and_then(Value::as_object_mut) {
        for encoded in data.values_mut() {
            if let Value::String(text) = encoded {
                text.retain(|c| c != '\n' && c != '\r');
            }
        }
    }
}

/// A kind this checker knows, with the check that reads an object into its type.
struct Kind {
    api_version: &'static str,
    kind: &'static str,
    check: fn(&Value) -> Result<(), Vec<String>>,
}

fn kind<T: Resource + DeserializeOwned>() -> Kind {
    Kind {
        api_version: T::API_VERSION,
        kind: T::KIND,
        check: |value| strict::<T>(value).map(drop),
    }
}

/// Every kind the manifests may contain. Another kind is an error (add it here with its type).
fn known_kinds() -> [Kind; 12] {
    [
        kind::<Namespace>(),
        kind::<ServiceAccount>(),
        kind::<Secret>(),
        kind::<Service>(),
        kind::<ClusterRole>(),
        kind::<ClusterRoleBinding>(),
        kind::<Role>(),
        kind::<RoleBinding>(),
        kind::<DaemonSet>(),
        kind::<Deployment>(),
        kind::<prometheus_operator::ServiceMonitor>(),
        kind::<prometheus_operator::PrometheusRule>(),
    ]
}

/// Reads `object` into the type of its `apiVersion` and `kind`. The error lists every problem,
/// each a line naming the source, the object and the field path:
/// `deploy/kubernetes/base: DaemonSet memtrace/memtrace: unknown field
/// spec.template.spec.containers[0].securityContext.readOnlyRootFilesytem`.
pub fn check(object: &Object) -> Result<(), String> {
    let kinds = known_kinds();
    let Some(known) = kinds
        .iter()
        .find(|known| known.api_version == object.api_version && known.kind == object.kind)
    else {
        let names: Vec<String> = kinds
            .iter()
            .map(|known| format!("{} {}", known.api_version, known.kind))
            .collect();
        return Err(format!(
            "{}: {}: apiVersion {} kind {} is not a kind this check knows (one of: {})",
            object.source,
            object.id(),
            object.api_version,
            object.kind,
            names.join(", ")
        ));
    };
    (known.check)(&object.value).map_err(|problems| {
        problems.iter().fold(String::new(), |mut text, problem| {
            let _ = writeln!(text, "{}: {}: {problem}", object.source, object.id());
            text
        })
    })
}

/// Deserializes `value` as `T`, failing on every field `T` ignores (serde skips unknown fields
/// unless a type denies them, and k8s-openapi's types do not) and on a type error, each named by
/// its path (`spec.template.spec.containers[0].ports[0].containerPort: invalid type: …`).
pub fn strict<T: DeserializeOwned>(value: &Value) -> Result<T, Vec<String>> {
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| {
        unknown.push(format!("unknown field {}", field_path(&path)));
    };
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut note));
    match result {
        Ok(typed) if unknown.is_empty() => Ok(typed),
        Ok(_) => Err(unknown),
        Err(err) => {
            unknown.push(format!("{}: {}", err.path(), err.inner()));
            Err(unknown)
        }
    }
}

/// `spec.containers[0].name`: serde_path_to_error's notation, without serde_ignored's `?` for
/// each `Option` on the way.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        P::Map { parent, key } => match field_path(parent) {
            parent if parent.is_empty() => key.clone(),
            parent => format!("{parent}.{key}"),
        },
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            field_path(parent)
        }
    }
}

/// The PrometheusRule of the prometheus-operator overlay, generated from the text of
/// `deploy/prometheus/memtrace-rules.yml`: its `groups:` block, comments and all, under `spec:`.
/// Indenting every line alike keeps each block scalar's content (PromQL) byte for byte.
pub fn prometheus_rule_yaml(rules_file: &str) -> Result<String, String> {
    let start = rules_file
        .lines()
        .position(|line| line == "groups:")
        .ok_or("memtrace-rules.yml has no top-level `groups:` line")?;
    let mut out = String::from(
        "# GENERATED from deploy/prometheus/memtrace-rules.yml (the one source of memtrace's \
         rules) by\n# tests/tests/manifests.rs: edit that file, then run\n#   cargo test -p \
         memtrace-tests --test manifests\n# which rewrites this one when it differs (and fails \
         once, so that the change is seen).\napiVersion: monitoring.coreos.com/v1\nkind: \
         PrometheusRule\nmetadata:\n  name: memtrace\n  labels:\n    app.kubernetes.io/name: \
         memtrace\nspec:\n",
    );
    for line in rules_file.lines().skip(start) {
        if !line.is_empty() {
            out.push_str("  ");
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}
