//! `--node-name`: the name the fleet knows this node by (the `node` label of
//! `memtrace_node_info`, `node.name` in the snapshot, the node of every cross-node finding).
use std::ffi::OsString;

/// Longest node name: a DNS name, as Kubernetes node names are.
pub const MAX_NODE_NAME_BYTES: usize = 253;

/// Environment variable a Kubernetes DaemonSet sets from the downward API
/// (`fieldRef: spec.nodeName`).
pub const NODE_NAME_ENV: &str = "NODE_NAME";

/// A node name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--node-name {name:?} (from {source_name}) {reason}")]
pub struct NodeNameError {
    pub name: String,
    /// Where it came from: the flag or config key, `$NODE_NAME`, or the hostname.
    pub source_name: &'static str,
    pub reason: &'static str,
}

/// The node name: `given` (flag or config key), else `env` (`$NODE_NAME`, when set and not
/// empty), else the hostname; validated.
pub fn resolve(given: Option<&str>, env: Option<OsString>) -> Result<String, NodeNameError> {
    let env = env.filter(|v| !v.is_empty());
    let (name, source_name) = match (given, env) {
        (Some(name), _) => (name.to_owned(), "--node-name"),
        (None, Some(env)) => match env.into_string() {
            Ok(name) => (name, "$NODE_NAME"),
            Err(raw) => {
                return Err(NodeNameError {
                    name: raw.to_string_lossy().into_owned(),
                    source_name: "$NODE_NAME",
                    reason: "is not UTF-8",
                });
            }
        },
        (None, None) => (hostname(), "the hostname"),
    };
    validate(&name).map_err(|reason| NodeNameError {
        name: name.clone(),
        source_name,
        reason,
    })?;
    Ok(name)
}

fn validate(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        return Err("is empty: give the node's name, e.g. --node-name node-a");
    }
    if name.len() > MAX_NODE_NAME_BYTES {
        return Err("is longer than 253 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    Ok(())
}

/// This machine's hostname (`gethostname(2)`), empty when it cannot be read.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it (or
    // truncates, which the search for NUL below tolerates).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_then_env_then_hostname() {
        assert_eq!(
            resolve(Some("node-a"), Some("node-b".into())).unwrap(),
            "node-a"
        );
        assert_eq!(resolve(None, Some("node-b".into())).unwrap(), "node-b");
        let host = hostname();
        assert!(!host.is_empty());
        assert_eq!(resolve(None, None).unwrap(), host);
        assert_eq!(
            resolve(None, Some("".into())).unwrap(),
            host,
            "empty is unset"
        );
    }

    #[test]
    fn bad_names_are_clear_errors() {
        let err = resolve(Some(""), None).unwrap_err().to_string();
        assert_eq!(
            err,
            "--node-name \"\" (from --node-name) is empty: give the node's name, e.g. --node-name node-a"
        );
        let long = "a".repeat(254);
        assert!(resolve(Some(&long), None).is_err());
        assert!(resolve(Some(&"a".repeat(253)), None).is_ok());
        let err = resolve(None, Some("bad\nname".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(from $NODE_NAME) contains control characters"),
            "{err}"
        );
        use std::os::unix::ffi::OsStringExt as _;
        let err = resolve(None, Some(OsString::from_vec(vec![0xff]))).unwrap_err();
        assert_eq!(err.reason, "is not UTF-8");
    }
}
