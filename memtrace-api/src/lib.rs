//! memtrace's published contract: the JSON the daemon serves (`/api/v1/snapshot`,
//! `/api/v1/oom`) and every client (`memtrace oom`, `memtrace cluster`, `memtrace top`) reads,
//! the counter table it is built from ([`counter_table!`]), the top-N rollup clients and the
//! daemon's exporter share ([`rollup`]), and, with the `client` feature, a small blocking client
//! ([`client::Client`]).
//!
//! serde only: no aya, no async runtime, no privileges.
//!
//! # Compatibility rule
//!
//! Within a [`SCHEMA_VERSION`], fields are only ever **added**:
//!
//! - readers ignore fields (and probe family names) they do not know, and read a field an older
//!   writer did not have as absent (`Option`) or, for a counter, 0;
//! - writers may omit `Option` fields (and do, when the value is unknown);
//! - removing or renaming a field, or changing its type, meaning or unit, bumps the version.
//!
//! The golden fixtures `tests/fixtures/snapshot-v1.json` and `tests/fixtures/oom-v1.json` are the
//! contract: every field present, realistic values. The tests check both ways that the types and
//! the fixtures agree, key path by key path: a removed or renamed field fails, and so does an added
//! one until the fixture is updated.
//!
//! To add a field: a counter is one line of [`counter_table!`]; any other field is an `Option`
//! with `#[serde(skip_serializing_if = "Option::is_none", default)]` (so an older daemon's JSON,
//! which lacks it, still reads), documented with when it is absent. Then add it with a realistic
//! value to the fixture(s) that contain its type.
#[cfg(feature = "client")]
pub mod client;
pub mod cluster;
pub mod counters;
pub mod diagnose;
mod family;
pub mod frame;
pub mod rollup;
pub mod snapshot;
pub mod trace;
pub mod workloads;

#[doc(hidden)]
pub use counters::Presence;
pub use counters::{COUNTER_FIELDS, CounterField, CounterKind, Counters};
pub use family::{Family, FamilySet, UnknownFamily};
pub use snapshot::*;
