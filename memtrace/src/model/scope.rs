//! `--cgroup-root`: the cgroup subtree the model is limited to.
use std::fmt;

/// A cgroup path (as in `/proc/<pid>/cgroup`, the memory controller's hierarchy on hybrid
/// hosts) whose subtree is the model's scope: the cgroup itself and every cgroup below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupRoot(String);

/// Why a `--cgroup-root` is not a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--cgroup-root {path:?} {reason}")]
pub struct CgroupRootError {
    pub path: String,
    pub reason: &'static str,
}

impl CgroupRoot {
    /// `path` normalised: absolute, no trailing `/`, no `.` or `..` components.
    pub fn new(path: &str) -> Result<Self, CgroupRootError> {
        let err = |reason| CgroupRootError {
            path: path.to_owned(),
            reason,
        };
        if !path.starts_with('/') {
            return Err(err(
                "is not absolute: give the path as in /proc/<pid>/cgroup, e.g. /kubepods",
            ));
        }
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if components.iter().any(|c| *c == "." || *c == "..") {
            return Err(err("must not contain . or .. components"));
        }
        if path.chars().any(char::is_control) {
            return Err(err("contains control characters"));
        }
        Ok(Self(format!("/{}", components.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether cgroup `path` is this cgroup or below it.
    pub fn holds(&self, path: &str) -> bool {
        if self.0 == "/" {
            return true;
        }
        match path.strip_prefix(self.0.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

impl fmt::Display for CgroupRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_holds_itself_and_its_subtree_only() {
        let root = CgroupRoot::new("/kubepods/").unwrap();
        assert_eq!(root.as_str(), "/kubepods");
        assert!(root.holds("/kubepods"));
        assert!(root.holds("/kubepods/burstable/pod1/abc"));
        assert!(
            !root.holds("/kubepods-besteffort"),
            "a sibling sharing the prefix"
        );
        assert!(!root.holds("/system.slice/kubepods"));
        assert!(!root.holds("/"));
        let all = CgroupRoot::new("//").unwrap();
        assert_eq!(all.as_str(), "/");
        assert!(all.holds("/anything") && all.holds("/"));
    }

    #[test]
    fn bad_roots_are_clear_errors() {
        let err = CgroupRoot::new("kubepods").unwrap_err().to_string();
        assert!(
            err.starts_with("--cgroup-root \"kubepods\" is not absolute"),
            "{err}"
        );
        assert!(CgroupRoot::new("/a/../b").is_err());
        assert!(CgroupRoot::new("/a\nb").is_err());
    }
}
