//! memtrace's published contract: the JSON the daemon serves (`/api/v1/snapshot`,
//! `/api/v1/oom`) and every client (`memtrace oom`, `memtrace cluster`, `memtrace top`) reads.
//!
//! Compatibility rule: within a [`SCHEMA_VERSION`], fields are only ever **added** (readers must
//! ignore fields they do not know; writers may omit `Option` fields). Removing or renaming a
//! field, or changing its meaning or unit, bumps the version.
mod family;
pub mod snapshot;
pub mod trace;

pub use family::{Family, UnknownFamily};
pub use snapshot::*;
