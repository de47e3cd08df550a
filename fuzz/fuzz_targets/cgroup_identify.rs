//! Cgroup paths as in `/proc/<pid>/cgroup`: any process can name its cgroup (almost) anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::cgroup::identify;

fuzz_target!(|path: &str| {
    let id = identify(path);
    // What identify reports is taken from the path, never made up.
    if let Some(container) = &id.container_id {
        assert!(
            path.contains(container.as_str()),
            "container id not in {path:?}"
        );
    }
    if let Some(unit) = &id.systemd_unit {
        assert!(path.contains(unit.as_str()), "unit not in {path:?}");
    }
    if id.pod_uid.is_some() {
        assert!(id.qos.is_some(), "a pod without a QoS class in {path:?}");
    }
});
