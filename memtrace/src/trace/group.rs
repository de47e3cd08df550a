//! `--by`: the summary per process, or summed per comm, cgroup or workload (a parallel build's
//! forty `cc1` rows are one), and each row's RSS growth from the trace's successive samples.
use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use memtrace_common::{ProcStats, rss_member};

use super::summary::SummaryRow;
use crate::{
    cgroup,
    workload::{Identifier, WorkloadId},
};

/// What one summary row stands for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// One row per process.
    #[default]
    Pid,
    /// Processes of one name (as in /proc/PID/comm).
    Comm,
    /// Processes of one cgroup (the memory controller's, on cgroup v1).
    Cgroup,
    /// Processes of one workload, keyed as the daemon keys them (pod's controller, container,
    /// systemd service, else comm; pods as `pod/<uid>`: the trace asks no API server).
    Workload,
}

impl GroupBy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pid => "pid",
            Self::Comm => "comm",
            Self::Cgroup => "cgroup",
            Self::Workload => "workload",
        }
    }
}

/// One row of the summary: a process, or a group of them.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupRow {
    /// The pid, comm, cgroup or workload key.
    pub key: String,
    /// The first process of the group (most page faults) and its name and cgroup.
    pub pid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub processes: u32,
    /// Processes that ended during the trace (their counters are final).
    pub exited: u32,
    /// The processes still running: the row's RSS is theirs.
    pub live_pids: Vec<u32>,
    /// Counters summed over the processes; RSS see [`GroupRow::live_pids`] (when every process
    /// has exited, the largest RSS one of them had at its exit).
    pub stats: ProcStats,
    pub rss_growth_bytes_per_sec: Option<f64>,
}

impl GroupRow {
    pub fn all_exited(&self) -> bool {
        self.live_pids.is_empty()
    }

    /// Anon + file + shmem: what growth is measured on.
    pub fn rss_bytes(&self) -> u64 {
        let rss = &self.stats.rss;
        rss[rss_member::ANON]
            .saturating_add(rss[rss_member::FILE])
            .saturating_add(rss[rss_member::SHMEM])
    }

    fn faults(&self) -> u64 {
        self.stats
            .faults_user
            .saturating_add(self.stats.faults_kernel)
    }
}

/// Sums `b` into `a`: every counter, RSS included.
fn add(a: &mut ProcStats, b: &ProcStats) {
    for (x, y) in [
        (&mut a.faults_user, b.faults_user),
        (&mut a.faults_kernel, b.faults_kernel),
        (&mut a.faults_major, b.faults_major),
        (&mut a.mmap_calls, b.mmap_calls),
        (&mut a.mmap_bytes, b.mmap_bytes),
        (&mut a.munmap_calls, b.munmap_calls),
        (&mut a.munmap_bytes, b.munmap_bytes),
        (&mut a.brk_calls, b.brk_calls),
        (&mut a.brk_grow_bytes, b.brk_grow_bytes),
        (&mut a.brk_shrink_bytes, b.brk_shrink_bytes),
        (&mut a.mremap_calls, b.mremap_calls),
        (&mut a.mremap_grow_bytes, b.mremap_grow_bytes),
        (&mut a.mremap_shrink_bytes, b.mremap_shrink_bytes),
        (&mut a.failed_calls, b.failed_calls),
        (&mut a.reclaim_stalls, b.reclaim_stalls),
        (&mut a.reclaim_ns, b.reclaim_ns),
        (&mut a.vm_bytes, b.vm_bytes),
        (&mut a.madvise_dontneed_bytes, b.madvise_dontneed_bytes),
        (&mut a.madvise_free_bytes, b.madvise_free_bytes),
    ] {
        *x = x.saturating_add(y);
    }
    for (x, y) in a.rss.iter_mut().zip(b.rss) {
        *x = x.saturating_add(y);
    }
    // How the counters were kept (`proc_flag`), e.g. from the task sampler, without the
    // user/kernel split of faults.
    a.flags |= b.flags;
}

/// The key of a process under `by`.
pub struct Keys {
    by: GroupBy,
    workloads: Identifier,
}

impl Keys {
    pub fn new(by: GroupBy, workloads: Identifier) -> Self {
        Self { by, workloads }
    }

    pub fn by(&self) -> GroupBy {
        self.by
    }

    pub fn key(&self, row: &SummaryRow) -> String {
        match self.by {
            GroupBy::Pid => row.pid.to_string(),
            GroupBy::Comm => row.comm.clone(),
            GroupBy::Cgroup => row.cgroup.clone().unwrap_or_else(|| "?".to_owned()),
            GroupBy::Workload => {
                let owner = cgroup::identify(row.cgroup.as_deref().unwrap_or(""));
                self.workloads
                    .identify_owner(&owner)
                    .unwrap_or_else(|| WorkloadId::of_comm(row.pid, &row.comm))
                    .key
            }
        }
    }

    /// `rows` (one per process) grouped, the groups ranked by page faults, then bytes mapped,
    /// then reclaim stalls (whichever the trace counts), the first `top` of them, and how many
    /// groups there were.
    pub fn group(&self, rows: Vec<SummaryRow>, top: usize) -> (Vec<GroupRow>, usize) {
        let mut groups: Vec<GroupRow> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        // The faults of each group's first process, and the largest RSS at exit of its
        // processes (a sum of RSS at different instants would be no RSS the group ever had).
        let mut first_faults: Vec<u64> = Vec::new();
        let mut exit_rss: Vec<[u64; rss_member::COUNT]> = Vec::new();
        for row in rows {
            let key = self.key(&row);
            let i = *index.entry(key.clone()).or_insert_with(|| {
                groups.push(GroupRow {
                    key,
                    pid: row.pid,
                    comm: row.comm.clone(),
                    cgroup: row.cgroup.clone(),
                    processes: 0,
                    exited: 0,
                    live_pids: Vec::new(),
                    stats: ProcStats::default(),
                    rss_growth_bytes_per_sec: None,
                });
                first_faults.push(0);
                exit_rss.push([0; rss_member::COUNT]);
                groups.len() - 1
            });
            let group = &mut groups[i];
            let row_faults = row
                .stats
                .faults_user
                .saturating_add(row.stats.faults_kernel);
            if row_faults > first_faults[i] {
                first_faults[i] = row_faults;
                (group.pid, group.comm, group.cgroup) =
                    (row.pid, row.comm.clone(), row.cgroup.clone());
            }
            group.processes += 1;
            if row.exited {
                group.exited += 1;
                let total = |rss: &[u64; rss_member::COUNT]| -> u64 { rss.iter().sum() };
                if total(&row.stats.rss) > total(&exit_rss[i]) {
                    exit_rss[i] = row.stats.rss;
                }
            } else {
                group.live_pids.push(row.pid);
            }
            add(&mut group.stats, &row.stats);
        }
        // RSS: of the processes still running (read later); the largest at exit when none is.
        for (group, exit_rss) in groups.iter_mut().zip(exit_rss) {
            group.stats.rss = if group.all_exited() {
                exit_rss
            } else {
                [0; rss_member::COUNT]
            };
        }
        let total = groups.len();
        groups.sort_by_key(|g| {
            std::cmp::Reverse((g.faults(), g.stats.mmap_bytes, g.stats.reclaim_ns))
        });
        groups.truncate(top);
        (groups, total)
    }
}

/// Samples closer together than this give no rate (noise, not growth).
const MIN_SPAN: Duration = Duration::from_millis(900);

/// RSS growth per row from the trace's samples (every summary, and one a second while a
/// summary is to come): the change over its window ([`crate::trace::GROWTH_WINDOW`]), per
/// second. No rate before a row has two samples at least 0.9 s apart.
#[derive(Debug)]
pub struct Growth {
    window: Duration,
    samples: HashMap<String, VecDeque<(Instant, u64)>>,
}

impl Growth {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            samples: HashMap::new(),
        }
    }

    /// Records `rss_bytes` for `key` at `now`; the growth per second since the oldest sample
    /// still in the window.
    pub fn observe(&mut self, key: &str, now: Instant, rss_bytes: u64) -> Option<f64> {
        let samples = self.samples.entry(key.to_owned()).or_default();
        while samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > self.window)
        {
            samples.pop_front();
        }
        samples.push_back((now, rss_bytes));
        let (then, old) = *samples.front()?;
        let span = now.saturating_duration_since(then);
        (span >= MIN_SPAN).then(|| (rss_bytes as f64 - old as f64) / span.as_secs_f64())
    }

    /// Forgets rows not sampled within the window (processes gone, groups emptied).
    pub fn sweep(&mut self, now: Instant) {
        self.samples.retain(|_, samples| {
            samples
                .back()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) <= self.window)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, comm: &str, cgroup: Option<&str>, faults: u64, exited: bool) -> SummaryRow {
        let mut stats = ProcStats {
            faults_user: faults,
            mmap_bytes: 1 << 20,
            ..Default::default()
        };
        stats.rss[rss_member::ANON] = 4 << 20;
        SummaryRow {
            pid,
            comm: comm.to_owned(),
            cgroup: cgroup.map(str::to_owned),
            exited,
            stats,
        }
    }

    fn keys(by: GroupBy) -> Keys {
        Keys::new(by, Identifier::new(None))
    }

    #[test]
    fn by_comm_sums_a_parallel_builds_compilers_into_one_row() {
        let mut rows: Vec<SummaryRow> = (0..20)
            .map(|i| row(100 + i, "cc1", None, 1700 + u64::from(i), true))
            .collect();
        rows.push(row(7, "make", None, 900, false));
        rows.push(row(8, "cc1", None, 10, false));
        let (groups, total) = keys(GroupBy::Comm).group(rows, 10);
        assert_eq!(total, 2);
        let cc1 = &groups[0];
        assert_eq!(
            (cc1.key.as_str(), cc1.processes, cc1.exited),
            ("cc1", 21, 20)
        );
        assert_eq!(
            cc1.stats.faults_user,
            (0..20).map(|i| 1700 + i).sum::<u64>() + 10
        );
        assert_eq!(cc1.stats.mmap_bytes, 21 << 20);
        assert_eq!(cc1.live_pids, [8]);
        assert_eq!(cc1.pid, 119, "the first process: most faults");
        assert_eq!(
            cc1.rss_bytes(),
            0,
            "a group's RSS is its running processes' (read later), not a sum of exits"
        );
        assert_eq!(groups[1].key, "make");
    }

    #[test]
    fn a_group_whose_processes_all_exited_keeps_the_largest_rss_at_exit() {
        let mut rows = vec![
            row(1, "sh", Some("/a"), 5, true),
            row(2, "sh", Some("/a"), 6, true),
        ];
        rows[1].stats.rss[rss_member::ANON] = 8 << 20;
        let (groups, _) = keys(GroupBy::Cgroup).group(rows, 10);
        assert_eq!(groups.len(), 1);
        assert!(groups[0].all_exited());
        assert_eq!(groups[0].rss_bytes(), 8 << 20);
        assert_eq!(groups[0].key, "/a");
    }

    #[test]
    fn by_pid_is_one_row_per_process_ranked_and_cut_to_top() {
        let rows = vec![
            row(1, "a", None, 5, false),
            row(2, "a", None, 50, false),
            row(3, "b", None, 7, true),
        ];
        let (groups, total) = keys(GroupBy::Pid).group(rows, 2);
        let ranked: Vec<(&str, u32)> = groups.iter().map(|g| (g.key.as_str(), g.pid)).collect();
        assert_eq!(ranked, [("2", 2), ("3", 3)]);
        assert_eq!(total, 3);
    }

    #[test]
    fn by_workload_uses_the_daemons_keys() {
        let rows = vec![
            row(
                1,
                "redis-server",
                Some("/system.slice/redis-server@6379.service"),
                5,
                false,
            ),
            row(
                2,
                "redis-server",
                Some("/system.slice/redis-server@6380.service"),
                6,
                false,
            ),
            row(
                3,
                "bash",
                Some("/user.slice/user-0.slice/session-1.scope"),
                1,
                false,
            ),
        ];
        let (groups, _) = keys(GroupBy::Workload).group(rows, 10);
        let keys: Vec<(&str, u32)> = groups
            .iter()
            .map(|g| (g.key.as_str(), g.processes))
            .collect();
        assert_eq!(keys, [("redis-server@.service", 2), ("bash", 1)]);
    }

    #[test]
    fn growth_needs_two_samples_apart_and_forgets_old_ones() {
        let t0 = Instant::now();
        let mut growth = Growth::new(Duration::from_secs(10));
        assert_eq!(growth.observe("a", t0, 100 << 20), None, "one sample");
        assert_eq!(
            growth.observe("a", t0 + Duration::from_millis(100), 101 << 20),
            None,
            "too close"
        );
        let rate = growth
            .observe("a", t0 + Duration::from_secs(2), 102 << 20)
            .unwrap();
        assert!((rate - f64::from(1 << 20)).abs() < 1.0, "{rate}");
        // Past the window, the rate is over the last ten seconds only.
        let rate = growth
            .observe("a", t0 + Duration::from_secs(12), 92 << 20)
            .unwrap();
        assert!((rate - -f64::from(1 << 20)).abs() < 1.0, "{rate}");
        growth.sweep(t0 + Duration::from_secs(30));
        assert_eq!(
            growth.observe("a", t0 + Duration::from_secs(30), 1),
            None,
            "forgotten"
        );
    }
}
