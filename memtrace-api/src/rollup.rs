//! Top-N rollups of a snapshot: rank rows, keep the first N, fold the rest into one `~other` row.
//!
//! A node runs thousands of processes; a display or an exposition can afford a few dozen rows.
//! [`rollup`] is the one algorithm (group rows with the same key, rank, cap, fold the rest), and
//! [`Row`] is what a kind of row supplies: its key, its ranking and how two rows fold into one.
//! The rows here cover workloads ([`workloads`]: processes with the same comm in the same
//! cgroup), cgroups ([`cgroups`]) and OOM victims ([`oom_workloads`]), all built from the API's
//! views, so the daemon's exporter and a client of many daemons roll up alike.
use std::cmp::Ordering;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use crate::{CgroupView, Counters, OomRecord, ProcessView};

/// Label (comm, cgroup) of the row that aggregates everything outside the top N.
pub const OTHER: &str = "~other";

/// A row of a rolled-up table.
pub trait Row: Sized {
    /// Rows with equal keys are one row (folded).
    type Key: Eq + Hash;

    fn key(&self) -> Self::Key;

    /// `Less`: `self` ranks before `other`. Must be a total order on rows of distinct keys.
    fn rank(&self, other: &Self) -> Ordering;

    /// Fold `other` into `self` (a row of the same key, or one going into `~other`).
    fn absorb(&mut self, other: &Self);

    /// The empty `~other` row, before any row is folded into it.
    fn other() -> Self;
}

/// The first rows by rank, and the fold of all the others (`None` if there were none).
#[derive(Clone, Debug, PartialEq)]
pub struct RolledUp<R> {
    pub top: Vec<R>,
    pub other: Option<R>,
}

impl<R> RolledUp<R> {
    /// The top rows in rank order, then `~other`.
    pub fn rows(&self) -> impl Iterator<Item = &R> {
        self.top.iter().chain(self.other.iter())
    }
}

/// Rows with the same key folded into one (the first keeps its labels), in no particular order.
pub fn group<R: Row>(rows: impl IntoIterator<Item = R>) -> Vec<R> {
    let mut by_key: HashMap<R::Key, R> = HashMap::new();
    for row in rows {
        match by_key.entry(row.key()) {
            Entry::Occupied(mut e) => e.get_mut().absorb(&row),
            Entry::Vacant(e) => {
                e.insert(row);
            }
        }
    }
    by_key.into_values().collect()
}

/// `rows` (distinct keys) ranked, the first `n` kept and the rest folded into `~other`.
pub fn top_n<R: Row>(mut rows: Vec<R>, n: usize) -> RolledUp<R> {
    rows.sort_by(R::rank);
    let rest = rows.split_off(n.min(rows.len()));
    let other = (!rest.is_empty()).then(|| {
        let mut other = R::other();
        rest.iter().for_each(|r| other.absorb(r));
        other
    });
    RolledUp { top: rows, other }
}

/// [`top_n`], except that rows for which `pinned` holds are never folded: they are kept after
/// the first `n` (in rank order), so at most `n` + the pinned rows have their own row. This is
/// what `--pin` promises: a pinned workload's sum over nodes is complete.
pub fn top_n_pinned<R: Row>(
    mut rows: Vec<R>,
    n: usize,
    pinned: impl Fn(&R) -> bool,
) -> RolledUp<R> {
    rows.sort_by(R::rank);
    let mut top = Vec::with_capacity(n.min(rows.len()));
    let mut other: Option<R> = None;
    for (i, row) in rows.into_iter().enumerate() {
        if i < n || pinned(&row) {
            top.push(row);
        } else {
            other.get_or_insert_with(R::other).absorb(&row);
        }
    }
    RolledUp { top, other }
}

/// [`group`], then [`top_n`].
pub fn rollup<R: Row>(rows: impl IntoIterator<Item = R>, n: usize) -> RolledUp<R> {
    top_n(group(rows), n)
}

/// A 0–100 pressure score as ranked and shown: NaN (a bug upstream) would poison `max` and
/// `topk`, so it counts as 0.
pub fn clamp_score(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 100.0) }
}

/// A rate or ratio as ranked and shown: never NaN or negative.
pub fn non_negative(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.max(0.0) }
}

/// The pressure ranking: score descending, then fault rate descending, then key ascending.
fn by_pressure<K: Ord>(a: (f64, f64, K), b: (f64, f64, K)) -> Ordering {
    b.0.total_cmp(&a.0)
        .then(b.1.total_cmp(&a.1))
        .then(a.2.cmp(&b.2))
}

fn or_empty(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// The live processes of one (comm, cgroup), or the `~other` aggregate of workloads.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadRow<'a> {
    pub comm: &'a str,
    /// `""` when unknown.
    pub cgroup: &'a str,
    /// The workload key ([`ProcessView::workload`]), `""` when unknown. A function of the comm
    /// and the cgroup, so it adds no series: processes of one row share it.
    pub workload: &'a str,
    pub pod_uid: &'a str,
    pub container_id: &'a str,
    /// Summed (see [`Counters::add`]).
    pub counters: Counters,
    /// Maximum over the processes ([`clamp_score`]ed).
    pub score: f64,
    /// Sum of the major + minor fault rates (the ranking's tie-break).
    pub fault_rate: f64,
    pub processes: u64,
}

impl<'a> WorkloadRow<'a> {
    pub fn from_process(p: &'a ProcessView) -> Self {
        Self {
            comm: &p.comm,
            cgroup: or_empty(&p.cgroup),
            workload: or_empty(&p.workload),
            pod_uid: or_empty(&p.owner.pod_uid),
            container_id: or_empty(&p.owner.container_id),
            counters: p.counters,
            score: clamp_score(p.pressure_score),
            fault_rate: non_negative(p.rates.faults_major_per_sec + p.rates.faults_minor_per_sec),
            processes: 1,
        }
    }
}

impl<'a> Row for WorkloadRow<'a> {
    type Key = (&'a str, &'a str);

    fn key(&self) -> Self::Key {
        (self.comm, self.cgroup)
    }

    fn rank(&self, other: &Self) -> Ordering {
        by_pressure(
            (self.score, self.fault_rate, self.key()),
            (other.score, other.fault_rate, other.key()),
        )
    }

    fn absorb(&mut self, o: &Self) {
        self.counters.add(&o.counters);
        self.score = self.score.max(o.score);
        self.fault_rate += o.fault_rate;
        self.processes = self.processes.saturating_add(o.processes);
    }

    fn other() -> Self {
        Self {
            comm: OTHER,
            cgroup: OTHER,
            workload: OTHER,
            pod_uid: "",
            container_id: "",
            counters: Counters::zero_sum(),
            score: 0.0,
            fault_rate: 0.0,
            processes: 0,
        }
    }
}

/// Workloads (processes with the same comm in the same cgroup, counters summed, the highest
/// score), ranked by pressure; the first `top` kept.
pub fn workloads(processes: &[ProcessView], top: usize) -> RolledUp<WorkloadRow<'_>> {
    rollup(processes.iter().map(WorkloadRow::from_process), top)
}

/// [`workloads`], where a workload whose key is `pinned` is never folded into `~other`.
pub fn workloads_pinned<'a>(
    processes: &'a [ProcessView],
    top: usize,
    pinned: impl Fn(&str) -> bool,
) -> RolledUp<WorkloadRow<'a>> {
    let rows = group(processes.iter().map(WorkloadRow::from_process));
    top_n_pinned(rows, top, |w| !w.workload.is_empty() && pinned(w.workload))
}

/// One cgroup, or the `~other` aggregate of cgroups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupRow<'a> {
    pub path: &'a str,
    pub pod_uid: &'a str,
    pub container_id: &'a str,
    pub qos: &'a str,
    pub processes: u64,
    pub counters: Counters,
    pub rss_bytes: u64,
    /// Summed over the rows that know it.
    pub usage_bytes: Option<u64>,
    /// Never summed (a sum of limits is not a limit): `None` for `~other`.
    pub limit_bytes: Option<u64>,
    pub psi_some_us: Option<u64>,
    pub psi_full_us: Option<u64>,
    pub score: f64,
    pub fault_rate: f64,
}

impl<'a> CgroupRow<'a> {
    pub fn from_view(c: &'a CgroupView) -> Self {
        Self {
            path: &c.path,
            pod_uid: or_empty(&c.owner.pod_uid),
            container_id: or_empty(&c.owner.container_id),
            qos: or_empty(&c.owner.qos),
            processes: u64::from(c.processes),
            counters: c.counters,
            rss_bytes: c.rss_bytes,
            usage_bytes: c.usage_bytes,
            limit_bytes: c.limit_bytes,
            psi_some_us: c.psi.map(|p| p.some_total_us),
            psi_full_us: c.psi.and_then(|p| p.full_total_us),
            score: clamp_score(c.pressure_score),
            fault_rate: non_negative(c.rates.faults_major_per_sec)
                + non_negative(c.rates.faults_minor_per_sec),
        }
    }
}

fn add_known(acc: Option<u64>, v: Option<u64>) -> Option<u64> {
    match (acc, v) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, b) => a.or(b),
    }
}

impl<'a> Row for CgroupRow<'a> {
    type Key = &'a str;

    fn key(&self) -> Self::Key {
        self.path
    }

    fn rank(&self, other: &Self) -> Ordering {
        by_pressure(
            (self.score, self.fault_rate, self.path),
            (other.score, other.fault_rate, other.path),
        )
    }

    /// Sums everything but the limit.
    fn absorb(&mut self, o: &Self) {
        self.processes = self.processes.saturating_add(o.processes);
        self.counters.add(&o.counters);
        self.rss_bytes = self.rss_bytes.saturating_add(o.rss_bytes);
        self.usage_bytes = add_known(self.usage_bytes, o.usage_bytes);
        self.psi_some_us = add_known(self.psi_some_us, o.psi_some_us);
        self.psi_full_us = add_known(self.psi_full_us, o.psi_full_us);
        self.score = self.score.max(o.score);
        self.fault_rate += o.fault_rate;
    }

    fn other() -> Self {
        Self {
            path: OTHER,
            counters: Counters::zero_sum(),
            ..Self::default()
        }
    }
}

/// Cgroups ranked by pressure, the first `max` kept (duplicate paths, which a well-formed
/// snapshot does not have, are folded rather than listed twice).
pub fn cgroups(views: &[CgroupView], max: usize) -> RolledUp<CgroupRow<'_>> {
    rollup(views.iter().map(CgroupRow::from_view), max)
}

/// The OOM kills of one victim workload, or the `~other` aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomRow<'a> {
    pub comm: &'a str,
    pub cgroup: &'a str,
    /// The victim's workload key, `""` when unknown (a function of comm and cgroup).
    pub workload: &'a str,
    pub pod_uid: &'a str,
    pub container_id: &'a str,
    pub kills: u64,
    /// Time of the newest kill (Unix ms).
    pub newest_unix_ms: u64,
}

impl<'a> OomRow<'a> {
    pub fn from_record(o: &'a OomRecord) -> Self {
        Self {
            comm: &o.victim_comm,
            cgroup: or_empty(&o.victim_cgroup),
            workload: or_empty(&o.victim_workload),
            pod_uid: or_empty(&o.victim_owner.pod_uid),
            container_id: or_empty(&o.victim_owner.container_id),
            kills: 1,
            newest_unix_ms: o.timestamp_unix_ms,
        }
    }
}

impl<'a> Row for OomRow<'a> {
    type Key = (&'a str, &'a str, &'a str, &'a str);

    fn key(&self) -> Self::Key {
        (self.comm, self.cgroup, self.pod_uid, self.container_id)
    }

    /// Most recent kill first.
    fn rank(&self, other: &Self) -> Ordering {
        other
            .newest_unix_ms
            .cmp(&self.newest_unix_ms)
            .then_with(|| self.key().cmp(&other.key()))
    }

    fn absorb(&mut self, o: &Self) {
        self.kills = self.kills.saturating_add(o.kills);
        self.newest_unix_ms = self.newest_unix_ms.max(o.newest_unix_ms);
    }

    fn other() -> Self {
        Self {
            comm: OTHER,
            cgroup: OTHER,
            workload: OTHER,
            pod_uid: "",
            container_id: "",
            kills: 0,
            newest_unix_ms: 0,
        }
    }
}

/// Victim workloads whose newest kill is at most `retention_ms` before `now_unix_ms` (a kill
/// stamped after `now`, a clock step, counts as recent), most recent first; the first `top`
/// kept. Each counts all of its kills in `ooms`.
pub fn oom_workloads(
    ooms: &[OomRecord],
    retention_ms: u64,
    now_unix_ms: u64,
    top: usize,
) -> RolledUp<OomRow<'_>> {
    oom_workloads_pinned(ooms, retention_ms, now_unix_ms, top, |_| false)
}

/// [`oom_workloads`], where a victim workload whose key is `pinned` is never folded into
/// `~other` (it still leaves after the retention).
pub fn oom_workloads_pinned<'a>(
    ooms: &'a [OomRecord],
    retention_ms: u64,
    now_unix_ms: u64,
    top: usize,
    pinned: impl Fn(&str) -> bool,
) -> RolledUp<OomRow<'a>> {
    let mut rows = group(ooms.iter().map(OomRow::from_record));
    rows.retain(|r| now_unix_ms.saturating_sub(r.newest_unix_ms) <= retention_ms);
    top_n_pinned(rows, top, |r| !r.workload.is_empty() && pinned(r.workload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OwnerView, Rates};

    fn process(pid: u32, comm: &str, cgroup: &str, score: f64, minor: u64) -> ProcessView {
        ProcessView {
            pid,
            comm: comm.to_owned(),
            cgroup: Some(cgroup.to_owned()),
            counters: Counters {
                faults_minor: minor,
                vm_bytes: Some(1),
                ..Counters::default()
            },
            rates: Rates {
                faults_minor_per_sec: minor as f64,
                ..Rates::default()
            },
            pressure_score: score,
            ..ProcessView::default()
        }
    }

    #[test]
    fn workloads_group_rank_cap_and_fold() {
        let processes = vec![
            process(1, "a", "/x", 10.0, 1),
            process(2, "a", "/x", 30.0, 2),
            process(3, "b", "/x", 30.0, 50),
            process(4, "c", "/y", f64::NAN, 7),
            process(5, "d", "/y", 5.0, 9),
            process(6, "a", "/y", 200.0, 0),
        ];
        let r = workloads(&processes, 2);
        let top: Vec<(&str, &str, f64, u64)> = r
            .top
            .iter()
            .map(|w| (w.comm, w.cgroup, w.score, w.processes))
            .collect();
        // Score 100 (clamped) first; then b and a tie at 30, b has the higher fault rate.
        assert_eq!(top, [("a", "/y", 100.0, 1), ("b", "/x", 30.0, 1)]);
        let other = r.other.as_ref().unwrap();
        assert_eq!(
            (other.comm, other.cgroup, other.processes),
            (OTHER, OTHER, 4)
        );
        assert_eq!(other.counters.faults_minor, 1 + 2 + 7 + 9);
        assert_eq!(other.counters.vm_bytes, Some(4));
        assert_eq!(other.score, 30.0, "the maximum; NaN counts as 0");
        assert_eq!(r.rows().count(), 3);

        let all = workloads(&processes, 10);
        assert!(all.other.is_none());
        assert_eq!(all.top.len(), 5);
        // Equal scores and rates: by key.
        let tied = [process(1, "z", "/", 1.0, 0), process(2, "m", "/", 1.0, 0)];
        let names: Vec<&str> = workloads(&tied, 5).top.iter().map(|w| w.comm).collect();
        assert_eq!(names, ["m", "z"]);
    }

    #[test]
    fn pinned_workloads_are_never_folded_into_other() {
        let with_workload = |pid, comm: &str, score, workload: &str| ProcessView {
            workload: Some(workload.to_owned()),
            ..process(pid, comm, "/x", score, 1)
        };
        let processes = vec![
            with_workload(1, "a", 90.0, "a"),
            with_workload(2, "b", 80.0, "b"),
            with_workload(3, "redis-server", 1.0, "redis-server.service"),
            with_workload(4, "c", 50.0, "c"),
            with_workload(5, "redis-server", 2.0, "redis-server.service"),
        ];
        let pinned = |key: &str| key == "redis-server.service";
        let r = workloads_pinned(&processes, 1, pinned);
        let top: Vec<(&str, u64)> = r.top.iter().map(|w| (w.workload, w.processes)).collect();
        assert_eq!(top, [("a", 1), ("redis-server.service", 2)]);
        let other = r.other.as_ref().unwrap();
        assert_eq!((other.workload, other.processes), (OTHER, 2), "b and c");
        // Unpinned, the same workload falls into ~other.
        let plain = workloads(&processes, 1);
        assert_eq!(plain.top.len(), 1);
        assert_eq!(plain.other.as_ref().unwrap().processes, 4);
        // Pinning never drops a row of the top N, nor adds an empty ~other.
        let all = workloads_pinned(&processes, 10, pinned);
        assert_eq!(all.top.len(), 4);
        assert!(all.other.is_none());

        let record = |comm: &str, workload: &str, at: u64| OomRecord {
            victim_comm: comm.to_owned(),
            victim_workload: Some(workload.to_owned()),
            timestamp_unix_ms: at,
            ..OomRecord::default()
        };
        let ooms = [
            record("a", "a", 9_000),
            record("redis-server", "redis-server.service", 1_000),
            record("b", "b", 8_000),
        ];
        let r = oom_workloads_pinned(&ooms, u64::MAX, 10_000, 1, pinned);
        let top: Vec<&str> = r.top.iter().map(|o| o.workload).collect();
        assert_eq!(top, ["a", "redis-server.service"]);
        assert_eq!(r.other.map(|o| o.kills), Some(1));
    }

    #[test]
    fn cgroups_keep_limits_only_for_their_own_rows() {
        let view = |path: &str, score: f64, usage: Option<u64>| CgroupView {
            path: path.to_owned(),
            owner: OwnerView::default(),
            processes: 2,
            rss_bytes: 10,
            usage_bytes: usage,
            limit_bytes: Some(100),
            pressure_score: score,
            ..CgroupView::default()
        };
        let views = [
            view("/a", 50.0, Some(1)),
            view("/b", 40.0, None),
            view("/c", 30.0, Some(5)),
            view("/a", 0.0, Some(2)),
        ];
        let r = cgroups(&views, 1);
        assert_eq!(r.top.len(), 1);
        let a = &r.top[0];
        assert_eq!((a.path, a.processes, a.usage_bytes), ("/a", 4, Some(3)));
        assert_eq!(a.limit_bytes, Some(100));
        let other = r.other.unwrap();
        assert_eq!(other.path, OTHER);
        assert_eq!(
            other.usage_bytes,
            Some(5),
            "summed over the rows that know it"
        );
        assert_eq!(other.limit_bytes, None);
        assert_eq!(
            (other.processes, other.rss_bytes, other.score),
            (4, 20, 40.0)
        );
    }

    #[test]
    fn oom_workloads_keep_the_recent_ones_newest_first() {
        let record = |comm: &str, at: u64| OomRecord {
            victim_comm: comm.to_owned(),
            timestamp_unix_ms: at,
            ..OomRecord::default()
        };
        let ooms = [
            record("old", 1_000),
            record("a", 9_000),
            record("b", 8_000),
            record("old", 2_000),
            record("c", 7_000),
            record("future", 20_000),
        ];
        let r = oom_workloads(&ooms, 5_000, 10_000, 2);
        let top: Vec<(&str, u64)> = r.top.iter().map(|o| (o.comm, o.kills)).collect();
        assert_eq!(top, [("future", 1), ("a", 1)]);
        assert_eq!(r.other.map(|o| (o.comm, o.kills)), Some((OTHER, 2)));
        let all = oom_workloads(&ooms, u64::MAX, 10_000, 10);
        assert!(all.top.iter().any(|o| o.comm == "old" && o.kills == 2));
    }
}
