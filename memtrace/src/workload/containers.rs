//! Container names from the container runtime's own state on the host, for workload keys of
//! containers outside Kubernetes (a pod's containers are named by the pod).
//!
//! The cgroup path gives only a container's id; its name and image are in the runtime's state
//! directory, read under the daemon's `--host-root`:
//!
//! - docker: `/var/lib/docker/containers/<id>/config.v2.json` (`Name`, `Config.Image`, and the
//!   `com.docker.compose.{project,service}` labels);
//! - podman (rootful): `/var/lib/containers/storage/overlay-containers/containers.json`
//!   (`names`, and the image name in `metadata`).
//!
//! Other runtimes, other data roots and rootless podman are not read: their containers are
//! named by their comm. Reads are bounded (a file over [`MAX_STATE_BYTES`] is not parsed) and
//! each container is looked up once: the answer, found or not, is cached, at most
//! [`MAX_CACHED`] containers (the cache starts over beyond that).
use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

/// Largest runtime state file parsed: a docker `config.v2.json` is a few KiB, podman's
/// `containers.json` about 1 KiB per container.
pub const MAX_STATE_BYTES: u64 = 4 << 20;
/// Containers whose names are cached at most.
pub const MAX_CACHED: usize = 4096;

const DOCKER_CONTAINERS: &str = "var/lib/docker/containers";
const PODMAN_CONTAINERS: &str = "var/lib/containers/storage/overlay-containers/containers.json";

/// What the runtime says of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerName {
    /// The container's name (`docker run --name`), without docker's leading `/`.
    pub name: Option<String>,
    pub image: Option<String>,
    /// `(project, service)` of a docker compose service: its replicas are one workload.
    pub compose: Option<(String, String)>,
}

impl ContainerName {
    /// The workload key: the compose service as `project/service`, else the name, else the
    /// image.
    pub fn key(&self) -> String {
        match (&self.compose, &self.name, &self.image) {
            (Some((project, service)), _, _) => format!("{project}/{service}"),
            (None, Some(name), _) => name.clone(),
            (None, None, Some(image)) => image.clone(),
            (None, None, None) => String::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.key().is_empty()
    }
}

/// Container names by container id, read from the runtimes' state under a root and cached.
#[derive(Clone)]
pub struct ContainerNames {
    root: PathBuf,
    cache: Arc<Mutex<HashMap<String, Option<ContainerName>>>>,
}

impl std::fmt::Debug for ContainerNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerNames")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl ContainerNames {
    /// The runtimes' state under `root` (`/`, or the daemon's `--host-root`).
    pub fn under(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            cache: Arc::default(),
        }
    }

    /// The name of container `id` (64 hex digits, as [`crate::cgroup::identify`] gives it),
    /// `None` when no runtime here knows it.
    pub fn lookup(&self, id: &str) -> Option<ContainerName> {
        if let Ok(cache) = self.cache.lock()
            && let Some(known) = cache.get(id)
        {
            return known.clone();
        }
        let found = self
            .docker(id)
            .or_else(|| self.podman(id))
            .filter(|n| !n.is_empty());
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(id.to_owned(), found.clone());
        }
        found
    }

    fn docker(&self, id: &str) -> Option<ContainerName> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Config {
            #[serde(default)]
            name: String,
            #[serde(default)]
            config: Option<Inner>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Inner {
            #[serde(default)]
            image: String,
            #[serde(default)]
            labels: Option<HashMap<String, String>>,
        }
        // Only a well-formed id reaches the path: nothing else can name another file.
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = self
            .root
            .join(DOCKER_CONTAINERS)
            .join(id)
            .join("config.v2.json");
        let config: Config = serde_json::from_slice(&read_bounded(&path)?).ok()?;
        let inner = config.config;
        let labels = inner.as_ref().and_then(|c| c.labels.as_ref());
        let label = |key: &str| labels.and_then(|l| l.get(key)).filter(|v| !v.is_empty());
        let compose = label("com.docker.compose.project")
            .zip(label("com.docker.compose.service"))
            .map(|(p, s)| (p.clone(), s.clone()));
        Some(ContainerName {
            name: non_empty(config.name.trim_start_matches('/')),
            image: inner.and_then(|c| non_empty(&c.image)),
            compose,
        })
    }

    fn podman(&self, id: &str) -> Option<ContainerName> {
        #[derive(Deserialize)]
        struct Entry {
            id: String,
            #[serde(default)]
            names: Vec<String>,
            /// A JSON document in a string.
            #[serde(default)]
            metadata: String,
        }
        #[derive(Deserialize)]
        struct Metadata {
            #[serde(rename = "image-name", default)]
            image_name: String,
        }
        let entries: Vec<Entry> =
            serde_json::from_slice(&read_bounded(&self.root.join(PODMAN_CONTAINERS))?).ok()?;
        let entry = entries.into_iter().find(|e| e.id == id)?;
        let image = serde_json::from_str::<Metadata>(&entry.metadata)
            .ok()
            .and_then(|m| non_empty(&m.image_name));
        Some(ContainerName {
            name: entry.names.first().and_then(|n| non_empty(n)),
            image,
            compose: None,
        })
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The file's bytes, `None` when it is missing, unreadable, not a regular file or larger than
/// [`MAX_STATE_BYTES`].
fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    (bytes.len() as u64 <= MAX_STATE_BYTES).then_some(bytes)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const ID: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904aaaa0000bbbb1111cccc2222";
    const OTHER: &str = "9b825dc642cb6eb9a060e54bf8d69288fbee4904aaaa0000bbbb1111cccc2222";

    /// Writes docker's state file of container `id` under `root`.
    pub(crate) fn docker_config(root: &Path, id: &str, json: &str) {
        let dir = root.join(DOCKER_CONTAINERS).join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.v2.json"), json).unwrap();
    }

    #[test]
    fn docker_names_compose_services_and_images() {
        let root = tempfile::tempdir().unwrap();
        let names = ContainerNames::under(root.path());
        docker_config(
            root.path(),
            ID,
            r#"{"ID":"x","Name":"/shop-cache-2","Config":{"Image":"redis:7.2","Labels":{"com.docker.compose.project":"shop","com.docker.compose.service":"cache"}},"State":{"Running":true}}"#,
        );
        let found = names.lookup(ID).unwrap();
        assert_eq!(found.name.as_deref(), Some("shop-cache-2"));
        assert_eq!(found.image.as_deref(), Some("redis:7.2"));
        assert_eq!(
            found.key(),
            "shop/cache",
            "replicas of a compose service are one"
        );
        docker_config(
            root.path(),
            OTHER,
            r#"{"Name":"","Config":{"Image":"memcached:1.6","Labels":null}}"#,
        );
        assert_eq!(names.lookup(OTHER).unwrap().key(), "memcached:1.6");
    }

    #[test]
    fn podman_names_come_from_containers_json() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(PODMAN_CONTAINERS);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            format!(
                r#"[{{"id":"{OTHER}","names":["other"],"metadata":"{{}}"}},{{"id":"{ID}","names":["web"],"image":"abc","layer":"def","metadata":"{{\"image-name\":\"docker.io/library/nginx:latest\",\"name\":\"web\"}}","created":"2026-11-30T03:00:00Z"}}]"#
            ),
        )
        .unwrap();
        let found = ContainerNames::under(root.path()).lookup(ID).unwrap();
        assert_eq!(found.key(), "web");
        assert_eq!(
            found.image.as_deref(),
            Some("docker.io/library/nginx:latest")
        );
    }

    #[test]
    fn unknown_garbage_and_huge_state_are_no_name_and_answers_are_cached() {
        let root = tempfile::tempdir().unwrap();
        let names = ContainerNames::under(root.path());
        assert_eq!(names.lookup(ID), None, "no runtime state at all");
        // Cached: a later file is not read for this id (the runtime wrote it before starting
        // the container, so a container seen without one has none).
        docker_config(root.path(), ID, r#"{"Name":"/late"}"#);
        assert_eq!(names.lookup(ID), None);
        assert_eq!(
            ContainerNames::under(root.path()).lookup(ID).unwrap().key(),
            "late"
        );
        docker_config(root.path(), OTHER, "not json");
        assert_eq!(names.lookup(OTHER), None);
        let big = format!(
            r#"{{"Name":"/big","Pad":"{}"}}"#,
            "x".repeat(MAX_STATE_BYTES as usize)
        );
        docker_config(root.path(), OTHER, &big);
        assert_eq!(ContainerNames::under(root.path()).lookup(OTHER), None);
        assert_eq!(names.lookup("../../etc"), None, "not an id");
    }

    #[test]
    fn the_cache_is_bounded() {
        let root = tempfile::tempdir().unwrap();
        let names = ContainerNames::under(root.path());
        for i in 0..MAX_CACHED + 10 {
            names.lookup(&format!("{i:064x}"));
        }
        assert!(names.cache.lock().unwrap().len() <= MAX_CACHED);
    }
}
