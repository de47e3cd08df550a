//! The counter table: every per-process counter and memory gauge memtrace publishes, listed once.
//!
//! [`counter_table!`](crate::counter_table!) is the single source of truth. It generates the JSON [`Counters`] struct
//! (the contract), its aggregation ([`Counters::add`]) and the descriptor list
//! [`COUNTER_FIELDS`] here; the daemon invokes it again with its own callback macros to derive the
//! kernel-side arithmetic on `ProcStats` (sums, differences, the "is a later reading" check), the
//! conversion to [`Counters`], the sample histories and the Prometheus series. Nothing lists the
//! counters by hand anywhere else, so they cannot drift out of step by position.
//!
//! # A line of the table
//!
//! ```text
//! /// doc (becomes the field's documentation)
//! json_key: kind(source) family(F) history(yes|no) prom(metric "label value");
//! ```
//!
//! - `kind(source)`, which also fixes the JSON type and when the key is present:
//!   - `counter(field)`: a cumulative `ProcStats` field, always present (`u64`);
//!   - `mode_counter(field)`: a cumulative `ProcStats` field that only the fault hooks split
//!     (user / kernel mode); present only without the task sampler (`Option<u64>`);
//!   - `derived(method)`: computed by a `ProcStats` method from cumulative fields (`u64`);
//!   - `rss(MEMBER)`: a gauge, `ProcStats::rss[rss_member::MEMBER]` (`u64`);
//!   - `task_gauge(field)`: a gauge only the task sampler reads; present only with it
//!     (`Option<u64>`).
//! - `family(F)`: the probe [`Family`](crate::Family) without which nothing counts it (`any`: some
//!   family always does). Exporters omit such counters when `pipeline.families` lacks `F`.
//! - `history(yes)`: kept in each process's per-second sample history (rates, flight recordings).
//! - `prom(metric "value")`: its Prometheus series: the daemon's exporter defines `metric` (name,
//!   help, label name, unit) once; the value, if any, is this counter's value of that label.
//!   `prom()`: not exported as a metric.
//!
//! # Adding a counter
//!
//! Append the `u64` to `memtrace_common::ProcStats` and count it in the kernel, add one line here,
//! and add the key to the golden fixtures (`tests/fixtures/*.json`): the fixture test fails until
//! you do, on purpose (see the crate documentation for the compatibility rule). A reader of an
//! older daemon's JSON, which lacks the key, reads 0 (see [`Counters`]). For example, the madvise
//! byte counters of the mmap family, as a value of the existing `op` label:
//!
//! ```text
//! madvise_dontneed_bytes: counter(madvise_dontneed_bytes) family(Mmap) history(no) prom(mapped_bytes "madvise_dontneed");
//! ```
use serde::{Deserialize, Serialize};

/// Invokes `$callback!` with the counter table (see the [module documentation](self)).
///
/// Order matters only for the JSON key order and the history's encoding; JSON readers match keys
/// by name.
#[macro_export]
macro_rules! counter_table {
    ($callback:ident) => {
        $callback! {
            /// Minor faults: user + kernel − major.
            faults_minor: derived(faults_minor) family(any) history(yes) prom(page_faults "minor");
            faults_major: counter(faults_major) family(any) history(yes) prom(page_faults "major");
            /// Faults taken in user / kernel mode: only with the fault hooks (a live trace, or the
            /// daemon without BTF). Absent when the counts come from the kernel's per-task
            /// counters, which do not split them.
            faults_user: mode_counter(faults_user) family(any) history(no) prom();
            faults_kernel: mode_counter(faults_kernel) family(any) history(no) prom();
            mmap_calls: counter(mmap_calls) family(Mmap) history(no) prom();
            mmap_bytes: counter(mmap_bytes) family(Mmap) history(yes) prom(mapped_bytes "mmap");
            munmap_calls: counter(munmap_calls) family(Mmap) history(no) prom();
            munmap_bytes: counter(munmap_bytes) family(Mmap) history(yes) prom(mapped_bytes "munmap");
            brk_calls: counter(brk_calls) family(Mmap) history(no) prom();
            brk_grow_bytes: counter(brk_grow_bytes) family(Mmap) history(yes) prom(mapped_bytes "brk_grow");
            brk_shrink_bytes: counter(brk_shrink_bytes) family(Mmap) history(no) prom(mapped_bytes "brk_shrink");
            mremap_calls: counter(mremap_calls) family(Mmap) history(no) prom();
            mremap_grow_bytes: counter(mremap_grow_bytes) family(Mmap) history(no) prom(mapped_bytes "mremap_grow");
            mremap_shrink_bytes: counter(mremap_shrink_bytes) family(Mmap) history(no) prom(mapped_bytes "mremap_shrink");
            /// mmap-family calls that returned an error (not counted in the byte counters).
            failed_calls: counter(failed_calls) family(Mmap) history(no) prom();
            /// Bytes handed back with `madvise(MADV_DONTNEED)` / `madvise(MADV_FREE)` (successful
            /// calls, page-aligned): how allocators and GC runtimes return memory without munmap.
            madvise_dontneed_bytes: counter(madvise_dontneed_bytes) family(Mmap) history(no) prom(madvised_bytes "dontneed");
            madvise_free_bytes: counter(madvise_free_bytes) family(Mmap) history(no) prom(madvised_bytes "free");
            reclaim_stalls: counter(reclaim_stalls) family(any) history(no) prom(reclaim_stalls);
            reclaim_ns: counter(reclaim_ns) family(any) history(yes) prom(reclaim_stall_seconds);
            rss_anon_bytes: rss(ANON) family(any) history(yes) prom(rss "anon");
            rss_file_bytes: rss(FILE) family(any) history(yes) prom(rss "file");
            rss_shmem_bytes: rss(SHMEM) family(any) history(yes) prom(rss "shmem");
            swap_bytes: rss(SWAP) family(any) history(no) prom(rss "swap");
            /// Virtual memory size (`mm->total_vm`): only from the kernel's per-task counters (the
            /// daemon's task sampler), absent otherwise.
            vm_bytes: task_gauge(vm_bytes) family(any) history(no) prom(virtual_memory);
        }
    };
}

/// The JSON type of a counter of the given kind.
#[doc(hidden)]
#[macro_export]
macro_rules! __counter_json_type {
    (counter) => { u64 };
    (derived) => { u64 };
    (rss) => { u64 };
    (mode_counter) => { ::core::option::Option<u64> };
    (task_gauge) => { ::core::option::Option<u64> };
}

/// What a counter is (see the [module documentation](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    /// Cumulative, always present.
    Counter,
    /// Cumulative, present only with the fault hooks.
    ModeCounter,
    /// Cumulative, derived from other counters.
    Derived,
    /// A gauge of resident (or swapped) memory.
    Rss,
    /// A gauge present only with the task sampler.
    TaskGauge,
}

impl CounterKind {
    /// Only grows over a process's life (a Prometheus counter, a rate makes sense).
    pub const fn is_cumulative(self) -> bool {
        matches!(self, Self::Counter | Self::ModeCounter | Self::Derived)
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __counter_kind {
    (counter) => {
        $crate::CounterKind::Counter
    };
    (mode_counter) => {
        $crate::CounterKind::ModeCounter
    };
    (derived) => {
        $crate::CounterKind::Derived
    };
    (rss) => {
        $crate::CounterKind::Rss
    };
    (task_gauge) => {
        $crate::CounterKind::TaskGauge
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __counter_family {
    (any) => {
        ::core::option::Option::None
    };
    ($family:ident) => {
        ::core::option::Option::Some($crate::Family::$family)
    };
}

/// One line of the table, as data.
#[derive(Clone, Copy, Debug)]
pub struct CounterField {
    /// The JSON key.
    pub key: &'static str,
    pub kind: CounterKind,
    /// The probe family without which nothing counts it (`None`: always counted).
    pub family: Option<crate::Family>,
    /// Its value, `None` where it is absent.
    pub get: fn(&Counters) -> Option<u64>,
}

/// Whether a field is left out of the JSON (serde's `skip_serializing_if`): a `u64` never is,
/// an `Option` when it is `None`.
#[doc(hidden)]
pub trait Presence {
    fn is_absent(&self) -> bool;
    fn value(&self) -> Option<u64>;
    /// `self + other`: `None` unless both are known.
    fn sum(self, other: Self) -> Self;
    /// The start of a sum: 0, known.
    fn zero() -> Self;
    fn from_u64(v: u64) -> Self;
}

impl Presence for u64 {
    fn is_absent(&self) -> bool {
        false
    }
    fn value(&self) -> Option<u64> {
        Some(*self)
    }
    fn sum(self, other: Self) -> Self {
        self.saturating_add(other)
    }
    fn zero() -> Self {
        0
    }
    fn from_u64(v: u64) -> Self {
        v
    }
}

impl Presence for Option<u64> {
    fn is_absent(&self) -> bool {
        self.is_none()
    }
    fn value(&self) -> Option<u64> {
        *self
    }
    fn sum(self, other: Self) -> Self {
        self.zip(other).map(|(a, b)| a.saturating_add(b))
    }
    fn zero() -> Self {
        Some(0)
    }
    fn from_u64(v: u64) -> Self {
        Some(v)
    }
}

macro_rules! define_counters {
    ($(
        $(#[$doc:meta])*
        $key:ident : $kind:ident ( $src:ident ) family ( $family:ident ) history ( $history:ident )
            prom ( $($metric:ident $($label:literal)?)? ) ;
    )*) => {
        /// A process's (or a sum of processes') cumulative kernel counters and memory gauges:
        /// minor faults derived, RSS by type. Generated from [`counter_table!`](crate::counter_table!).
        ///
        /// A key missing when reading (a daemon older than the table line) reads as 0 or absent:
        /// that daemon did not count it.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct Counters {
            $(
                $(#[$doc])*
                #[serde(skip_serializing_if = "Presence::is_absent")]
                pub $key: $crate::__counter_json_type!($kind),
            )*
        }

        /// Every line of [`counter_table!`](crate::counter_table!), in table order.
        pub const COUNTER_FIELDS: &[CounterField] = &[
            $(
                CounterField {
                    key: stringify!($key),
                    kind: $crate::__counter_kind!($kind),
                    family: $crate::__counter_family!($family),
                    get: |c| Presence::value(&c.$key),
                },
            )*
        ];

        impl Counters {
            /// The start of a sum: every field 0 and known (an optional one stays known until a
            /// part without it is added).
            pub fn zero_sum() -> Self {
                Self { $( $key: Presence::zero(), )* }
            }

            /// `self += other`, field by field (saturating); an optional field is known for the
            /// sum only if it is known for every part.
            pub fn add(&mut self, other: &Counters) {
                $( self.$key = Presence::sum(self.$key, other.$key); )*
            }

            /// Every field present, set to `value(key)` (tests, fixtures, examples).
            pub fn from_fn(mut value: impl FnMut(&'static str) -> u64) -> Self {
                Self { $( $key: Presence::from_u64(value(stringify!($key))), )* }
            }
        }
    };
}

counter_table!(define_counters);

impl Counters {
    /// The sum of `parts` (see [`Counters::add`]); [`Counters::zero_sum`] for none.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a Counters>) -> Counters {
        let mut total = Counters::zero_sum();
        for part in parts {
            total.add(part);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_keys_are_the_json_keys_in_order() {
        let full = Counters::from_fn(|_| 1);
        let json = serde_json::to_value(full).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let table: Vec<&str> = COUNTER_FIELDS.iter().map(|f| f.key).collect();
        let mut sorted = table.clone();
        sorted.sort_unstable();
        // serde_json without preserve_order sorts keys.
        assert_eq!(keys, sorted);
        for field in COUNTER_FIELDS {
            assert_eq!((field.get)(&full), Some(1), "{}", field.key);
        }
    }

    #[test]
    fn optional_fields_are_absent_when_unknown_and_sum_only_when_always_known() {
        let default = serde_json::to_value(Counters::default()).unwrap();
        for field in COUNTER_FIELDS {
            let present = default.get(field.key).is_some();
            let optional = matches!(
                field.kind,
                CounterKind::ModeCounter | CounterKind::TaskGauge
            );
            assert_eq!(present, !optional, "{}", field.key);
        }
        let known = Counters::from_fn(|_| 2);
        let mut sum = Counters::sum([&known, &known]);
        assert_eq!(sum, Counters::from_fn(|_| 4));
        sum.add(&Counters::default());
        for field in COUNTER_FIELDS {
            let expected = (!matches!(
                field.kind,
                CounterKind::ModeCounter | CounterKind::TaskGauge
            ))
            .then_some(4);
            assert_eq!((field.get)(&sum), expected, "{}", field.key);
        }
        let saturated = Counters::sum([&Counters::from_fn(|_| u64::MAX), &known]);
        assert_eq!(saturated, Counters::from_fn(|_| u64::MAX));
        assert_eq!(Counters::sum([]), Counters::zero_sum());
    }
}
