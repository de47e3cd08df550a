//! The kernel side of the counter table ([`memtrace_api::counter_table!`]): arithmetic on the
//! raw cumulative [`ProcStats`] and its conversion to the JSON [`Counters`], generated from the
//! table so that a counter added there is summed, differenced, compared and published without
//! another edit here.
use memtrace_api::Counters;
use memtrace_common::{ProcStats, proc_flag, rss_member};

/// `$body` for the kinds that are a cumulative `ProcStats` field (`counter`, `mode_counter`),
/// `$else` (default: nothing) for the others.
macro_rules! if_cumulative_field {
    (counter { $($body:tt)* } $({ $($else:tt)* })?) => { $($body)* };
    (mode_counter { $($body:tt)* } $({ $($else:tt)* })?) => { $($body)* };
    ($other:ident { $($body:tt)* } $({ $($else:tt)* })?) => { $($($else)*)? };
}

/// A table line's raw value in a [`ProcStats`] (`mode_counter` and `task_gauge` regardless of
/// whether they mean anything for this reading).
macro_rules! proc_stats_value {
    (counter, $s:ident, $src:ident) => {
        $s.$src
    };
    (mode_counter, $s:ident, $src:ident) => {
        $s.$src
    };
    (task_gauge, $s:ident, $src:ident) => {
        $s.$src
    };
    (derived, $s:ident, $src:ident) => {
        $s.$src()
    };
    (rss, $s:ident, $src:ident) => {
        $s.rss[rss_member::$src]
    };
}
pub(crate) use proc_stats_value;

/// A table line's JSON value: the optional kinds only where the reading has them.
macro_rules! json_value {
    (mode_counter, $s:ident, $src:ident, $task:ident) => {
        (!$task).then_some($s.$src)
    };
    (task_gauge, $s:ident, $src:ident, $task:ident) => {
        $task.then_some($s.$src)
    };
    ($kind:ident, $s:ident, $src:ident, $task:ident) => {
        proc_stats_value!($kind, $s, $src)
    };
}

/// Sets what a table line reads in a [`ProcStats`] (nothing for a derived line).
#[cfg(test)]
macro_rules! set_source {
    (derived, $s:ident, $src:ident, $v:expr) => {
        let _ = $v;
    };
    (rss, $s:ident, $src:ident, $v:expr) => {
        $s.rss[rss_member::$src] = $v;
    };
    ($kind:ident, $s:ident, $src:ident, $v:expr) => {
        $s.$src = $v;
    };
}

macro_rules! proc_stats_side {
    ($(
        $(#[$doc:meta])*
        $key:ident : $kind:ident ( $src:ident ) family ( $family:ident ) history ( $history:ident )
            prom ( $($metric:ident $($label:literal)?)? ) ;
    )*) => {
        /// `acc += delta` on the cumulative counters (gauges of `acc` untouched).
        pub fn add_counters(acc: &mut ProcStats, delta: &ProcStats) {
            $( if_cumulative_field!($kind { acc.$src = acc.$src.saturating_add(delta.$src); }); )*
            // The reclaim-stall histogram is cumulative too (not a table line: one array).
            for (sum, add) in acc.reclaim_hist.iter_mut().zip(delta.reclaim_hist) {
                *sum = sum.saturating_add(add);
            }
            // A sum that includes per-task counts has no user/kernel split either.
            acc.flags |= delta.flags;
        }

        /// `a − b` on the cumulative counters, saturating; gauges zero, `a`'s flags.
        pub fn sub_counters(a: &ProcStats, b: &ProcStats) -> ProcStats {
            let mut out = ProcStats {
                flags: a.flags,
                ..ProcStats::default()
            };
            $( if_cumulative_field!($kind { out.$src = a.$src.saturating_sub(b.$src); }); )*
            for ((out, a), b) in out.reclaim_hist.iter_mut().zip(a.reclaim_hist).zip(b.reclaim_hist) {
                *out = a.saturating_sub(b);
            }
            out
        }

        /// Every cumulative counter of `a` is ≥ that of `b`: `a` can be a later reading of `b`'s
        /// process.
        pub fn dominates(a: &ProcStats, b: &ProcStats) -> bool {
            true $( && if_cumulative_field!($kind { a.$src >= b.$src } { true }) )*
        }

        /// Stats with every field a table line reads set to `value(key)` (derived lines are
        /// computed, not set), the rest zero.
        #[cfg(test)]
        pub(crate) fn stats_from_fn(mut value: impl FnMut(&'static str) -> u64) -> ProcStats {
            let mut s = ProcStats::default();
            $( set_source!($kind, s, $src, value(stringify!($key))); )*
            s
        }

        /// The JSON form of a process's (or a sum's) kernel counters: the fault-mode split only
        /// from the fault hooks, the virtual size only from the task sampler.
        pub fn counters_json(s: &ProcStats) -> Counters {
            let task = s.flags & proc_flag::TASK_COUNTERS != 0;
            Counters {
                $( $key: json_value!($kind, s, $src, task), )*
            }
        }
    };
}

memtrace_api::counter_table!(proc_stats_side);

#[cfg(test)]
mod tests {
    use memtrace_api::{COUNTER_FIELDS, CounterKind};

    use super::*;

    /// A distinct non-zero value per table key, growing with `base`.
    fn value(base: u64, key: &str) -> u64 {
        let i = COUNTER_FIELDS
            .iter()
            .position(|f| f.key == key)
            .expect("a key") as u64;
        base * (i + 1) + i + 1
    }

    /// Stats with every field the table reads distinct and non-zero.
    fn distinct(base: u64) -> ProcStats {
        stats_from_fn(|key| value(base, key))
    }

    #[test]
    fn arithmetic_covers_every_cumulative_field_and_no_gauge() {
        let (a, b) = (distinct(1000), distinct(10));
        let mut sum = a;
        add_counters(&mut sum, &b);
        let diff = sub_counters(&sum, &b);
        assert!(dominates(&sum, &a) && dominates(&a, &b) && !dominates(&b, &a));
        let json = |s: &ProcStats, task: bool| {
            counters_json(&ProcStats {
                flags: if task { proc_flag::TASK_COUNTERS } else { 0 },
                ..*s
            })
        };
        let mut checked = 0;
        for task in [false, true] {
            let (ja, jb) = (json(&a, task), json(&b, task));
            let (jsum, jdiff) = (json(&sum, task), json(&diff, task));
            for field in COUNTER_FIELDS {
                let get = |c: &Counters| (field.get)(c);
                let Some(x) = get(&ja) else {
                    continue;
                };
                let y = get(&jb).expect("known for both");
                if field.kind.is_cumulative() {
                    assert_eq!(get(&jsum), Some(x + y), "{} summed", field.key);
                    assert_eq!(get(&jdiff), Some(x), "{} differenced", field.key);
                } else {
                    assert_eq!(get(&jsum), Some(x), "{}: a sum keeps the gauges", field.key);
                    assert_eq!(get(&jdiff), Some(0), "{}: a difference has none", field.key);
                }
                checked += 1;
            }
        }
        assert_eq!(
            checked,
            2 * COUNTER_FIELDS.len() - 3,
            "all but the optional ones, twice"
        );
        // One counter lower: not a later reading. One gauge lower: still one (RSS may fall).
        for field in COUNTER_FIELDS {
            let lower = stats_from_fn(|key| {
                if key == field.key {
                    0
                } else {
                    value(1000, key)
                }
            });
            let later = dominates(&lower, &a);
            match field.kind {
                CounterKind::Counter | CounterKind::ModeCounter => {
                    assert!(!later, "{}", field.key);
                }
                // Not stored: the fields it is derived from are.
                CounterKind::Derived => assert_eq!(lower, a),
                CounterKind::Rss | CounterKind::TaskGauge => assert!(later, "{}", field.key),
            }
        }
        let mut task = a;
        task.flags = proc_flag::TASK_COUNTERS;
        add_counters(&mut sum, &task);
        assert_eq!(sum.flags, proc_flag::TASK_COUNTERS, "flags are or-ed");
    }

    #[test]
    fn json_presence_follows_the_source() {
        let stats = distinct(0);
        let hooks = counters_json(&stats);
        assert_eq!(
            hooks.faults_minor,
            stats.faults_user + stats.faults_kernel - stats.faults_major
        );
        assert_eq!(
            (hooks.faults_user, hooks.faults_kernel),
            (Some(stats.faults_user), Some(stats.faults_kernel))
        );
        assert_eq!(hooks.vm_bytes, None);
        assert_eq!(hooks.rss_anon_bytes, stats.rss[rss_member::ANON]);
        assert_eq!(hooks.rss_file_bytes, stats.rss[rss_member::FILE]);
        assert_eq!(hooks.rss_shmem_bytes, stats.rss[rss_member::SHMEM]);
        assert_eq!(hooks.swap_bytes, stats.rss[rss_member::SWAP]);
        let task = counters_json(&ProcStats {
            flags: proc_flag::TASK_COUNTERS,
            ..stats
        });
        assert_eq!((task.faults_user, task.faults_kernel), (None, None));
        assert_eq!(task.vm_bytes, Some(stats.vm_bytes));
    }
}
