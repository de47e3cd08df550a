//! Entry points for the cargo-fuzz targets in `fuzz/` (`cargo xtask fuzz`): the `/proc` readers'
//! private parsers, taking the file's text instead of a path to read. Not part of memtrace's API
//! (hidden from its documentation); each is a one-line call of the parser the reader uses.
use std::path::Path;

use crate::{node, procfs};

/// `/proc/<pid>/stat`.
pub fn proc_stat(bytes: &[u8]) -> Result<procfs::ProcStat, procfs::ProcParseError> {
    procfs::parse_stat(bytes)
}

/// `/proc/<pid>/cgroup`.
pub fn proc_cgroups(text: &[u8]) -> Result<procfs::ProcCgroups, procfs::ProcParseError> {
    procfs::parse_cgroups(text)
}

/// `/proc/<pid>/status` (its RSS and swap lines).
pub fn proc_status_rss(text: &str) -> Result<procfs::RssBreakdown, procfs::ProcParseError> {
    procfs::parse_status_rss(text)
}

/// `/proc/meminfo`.
pub fn node_meminfo(text: &str) -> Result<node::MemInfo, node::NodeError> {
    node::parse_meminfo(Path::new("meminfo"), text)
}

/// `/proc/vmstat`.
pub fn node_vmstat(text: &str) -> Result<node::VmStat, node::NodeError> {
    node::parse_vmstat(Path::new("vmstat"), text)
}

/// `/proc/buddyinfo`.
pub fn node_buddyinfo(text: &str) -> Result<Vec<node::BuddyZone>, node::NodeError> {
    node::parse_buddyinfo(Path::new("buddyinfo"), text)
}

/// `/proc/pressure/memory`, read strictly as the node reader does (cgroups use
/// [`crate::psi::parse`] with [`crate::psi::Lines::Lenient`], which is public).
pub fn node_psi(text: &str) -> Result<crate::psi::Psi, node::NodeError> {
    node::parse_psi(Path::new("pressure/memory"), text)
}
