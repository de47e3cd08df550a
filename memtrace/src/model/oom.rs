//! The OOM record's account of a kill beyond the victim's own history: the sample at the kill
//! (completed by the victim's exit when it died first), the cgroup's other processes and
//! `memory.stat`, and records restored from an earlier run.
use std::time::Instant;

use memtrace_api::{CgroupMemoryStat, CgroupProcess, FlightSample, OomRecord};
use memtrace_common::{OomEvent, ProcStats, oom_field};

use super::history::{self, Sample};
use super::{MAX_OOM_CGROUP_PROCESSES, Model, rss_total};

/// An OOM record whose last flight sample waits for the victim's final counters.
#[derive(Clone, Copy, Debug)]
pub(super) struct AwaitingExit {
    /// The victim's last sample before the kill.
    pub(super) previous: Sample,
    pub(super) kill_at: Instant,
    /// The record's `timestamp_unix_ms`.
    pub(super) record_ms: u64,
}

impl Model {
    /// Ends `flight` at the kill when the victim was not sampled then (it died before the
    /// daemon's sample at the kill): RSS from the OOM event, counters from its exit if that came
    /// first, the cgroup's usage read at the kill. Returns the victim's last sample when its exit
    /// is still to come: its final counters then give the last moments' rates
    /// ([`Model::complete_kill_sample`]).
    pub(super) fn end_at_kill(
        &self,
        now: Instant,
        oom: &OomEvent,
        flight: &mut Vec<FlightSample>,
        cgroup: Option<&str>,
    ) -> Option<Sample> {
        let victim = self.process(now, oom.victim_pid)?;
        let previous = victim.history.back()?;
        if previous.at >= now {
            // Sampled at the kill already (the daemon ticks when a kill arrives), but the victim
            // may have been mid-teardown then (the OOM reaper frees its memory at once): its RSS
            // at the kill is what the kernel reported with the kill.
            if let Some(last) = flight.last_mut() {
                rss_at_kill(
                    oom,
                    &mut last.rss_anon_bytes,
                    &mut last.rss_file_bytes,
                    &mut last.rss_shmem_bytes,
                );
            }
            return None;
        }
        let exited = self
            .exited
            .get(&oom.victim_pid)
            .filter(|e| e.exit_seen && !self.live.contains_key(&oom.victim_pid));
        let mut at_kill = exited.map_or(
            Sample {
                at: now,
                ..previous
            },
            |e| Sample::new(now, &e.folded),
        );
        rss_at_kill(
            oom,
            &mut at_kill.rss_anon_bytes,
            &mut at_kill.rss_file_bytes,
            &mut at_kill.rss_shmem_bytes,
        );
        let usage = cgroup
            .and_then(|path| self.cgroups.get(path))
            .and_then(|cg| history::usage_near(&cg.usage, now, self.config.sample_interval));
        flight.push(history::kill_sample(&previous, &at_kill, usage));
        exited.is_none().then_some(previous)
    }

    /// The victim's exit came after its OOM record: its final counters give the rates of the
    /// record's last flight sample (from the last sample before the kill to the kill).
    pub(super) fn complete_kill_sample(
        &mut self,
        pid: u32,
        waiting: AwaitingExit,
        last: &ProcStats,
    ) {
        let Some(record) = self
            .ooms
            .iter_mut()
            .find(|r| r.victim_pid == pid && r.timestamp_unix_ms == waiting.record_ms)
        else {
            return;
        };
        let Some(final_sample) = record.flight_recording.last_mut() else {
            return;
        };
        let at_kill = Sample::new(waiting.kill_at, last);
        let completed = history::kill_sample(&waiting.previous, &at_kill, None);
        // RSS and usage stay as at the kill (the exit's are of a torn-down address space).
        final_sample.faults_minor_per_sec = completed.faults_minor_per_sec;
        final_sample.faults_major_per_sec = completed.faults_major_per_sec;
        final_sample.reclaim_stall_seconds_per_sec = completed.reclaim_stall_seconds_per_sec;
        self.completed_oom = Some((waiting.record_ms, pid));
    }

    /// The OOM record the last exit completed (its kill sample got the final rates), once.
    pub fn take_completed_oom(&mut self) -> Option<OomRecord> {
        let (ms, pid) = self.completed_oom.take()?;
        self.ooms
            .iter()
            .find(|r| r.victim_pid == pid && r.timestamp_unix_ms == ms)
            .cloned()
    }

    /// Live processes of `path` other than `victim`, largest RSS first, at most
    /// [`MAX_OOM_CGROUP_PROCESSES`]: who else was using the cgroup's memory at the kill.
    pub(super) fn cgroup_processes(&self, path: &str, victim: u32) -> Vec<CgroupProcess> {
        let mut out: Vec<CgroupProcess> = self
            .live
            .iter()
            .filter(|(pid, entry)| **pid != victim && entry.cgroup_key() == path)
            .map(|(pid, entry)| CgroupProcess {
                pid: *pid,
                comm: entry.comm().to_owned(),
                rss_bytes: rss_total(&entry.latest),
            })
            .collect();
        out.sort_unstable_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
        out.truncate(MAX_OOM_CGROUP_PROCESSES);
        out
    }

    /// The newest OOM record, if any.
    pub fn last_oom(&self) -> Option<&OomRecord> {
        self.ooms.front()
    }

    /// Completes the newest OOM record with its cgroup as read right after the kill: the usage
    /// (if read) and the `memory.stat` breakdown.
    pub fn complete_last_oom(&mut self, usage_bytes: Option<u64>, stat: Option<CgroupMemoryStat>) {
        if let Some(record) = self.ooms.front_mut() {
            if usage_bytes.is_some() {
                record.cgroup_usage_at_kill_bytes = usage_bytes;
            }
            record.cgroup_memory_stat = stat;
        }
    }

    /// OOM records kept from an earlier run (see `daemon::state`), any order: they join the
    /// history, newest first and bounded as always, so `/api/v1/oom` and
    /// `memtrace_oom_kills_total` carry on where the last run stopped.
    pub fn restore_ooms(&mut self, records: impl IntoIterator<Item = OomRecord>) {
        self.ooms.extend(records);
        self.ooms
            .make_contiguous()
            .sort_by_key(|record| std::cmp::Reverse(record.timestamp_unix_ms));
        self.ooms.truncate(self.config.max_oom_records);
    }
}

/// The RSS by type the kernel reported with the kill, where it reported it.
fn rss_at_kill(oom: &OomEvent, anon: &mut u64, file: &mut u64, shmem: &mut u64) {
    let present = |bit: u32| oom.present & bit != 0;
    if present(oom_field::ANON_RSS) {
        *anon = oom.anon_rss_kb.saturating_mul(1024);
    }
    if present(oom_field::FILE_RSS) {
        *file = oom.file_rss_kb.saturating_mul(1024);
    }
    if present(oom_field::SHMEM_RSS) {
        *shmem = oom.shmem_rss_kb.saturating_mul(1024);
    }
}
