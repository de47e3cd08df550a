//! Reading the task sampler (`task_sampler`, a BPF task iterator): each process's faults, RSS
//! and virtual size from the kernel's own per-task counters, and its hook counters, once per
//! sampling tick.
//!
//! This is how the daemon counts faults without a program on the fault path. The kernel already
//! keeps `min_flt`/`maj_flt` per thread (plus the total of reaped threads in `signal`) and RSS per
//! mm; one pass of the iterator copies them out for every task, which costs the daemon about as
//! much as reading one `/proc/<pid>/stat` per hundred processes. The counts are what
//! `/proc/<pid>/stat` shows; the price is resolution (one value per tick, and the last faults of
//! a process come with its exit event, see [`TaskSampler::complete_exit`]).
use std::io::{self, Read};

use memtrace_common::{ExitEvent, ProcStats, TaskSample, proc_flag, rss_member, task_sample_flag};

use crate::PidMap;

/// Bytes asked for per `read()` of the iterator (the kernel fills at most its seq buffer, 8
/// pages, per call).
const READ_CHUNK: usize = 64 * 1024;
const RECORD: usize = size_of::<TaskSample>();
/// The process's hook counters after a record with [`task_sample_flag::HOOK_STATS`].
const HOOK_STATS: usize = size_of::<ProcStats>();

/// One process's counters from one pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskTotals {
    pub faults_minor: u64,
    pub faults_major: u64,
    /// RSS in pages by [`rss_member`].
    pub rss_pages: [u64; rss_member::COUNT],
    /// The mm's address (0: none seen).
    pub mm: u64,
    /// Virtual size in pages (`mm->total_vm`).
    pub vm_pages: u64,
    /// Process start (monotonic ns); 0 if the pass did not see its leader.
    pub start_time_ns: u64,
    /// The hook counters (mmap family, reclaim) from `PROC_STATS`, as the leader's record
    /// carried them; zero if it has none (no such call yet).
    pub hooks: ProcStats,
}

impl TaskTotals {
    /// Write these counters into `stats` (faults as `faults_user`, see
    /// [`proc_flag::TASK_COUNTERS`]; RSS in bytes).
    pub fn apply(&self, stats: &mut ProcStats, page_size: u64) {
        stats.faults_user = self.faults_minor + self.faults_major;
        stats.faults_kernel = 0;
        stats.faults_major = self.faults_major;
        for (bytes, pages) in stats.rss.iter_mut().zip(self.rss_pages) {
            *bytes = pages.saturating_mul(page_size);
        }
        stats.mm_key = self.mm;
        stats.vm_bytes = self.vm_pages.saturating_mul(page_size);
        stats.flags |= proc_flag::TASK_COUNTERS;
    }

    /// Every counter of the process: the hook counters with these applied.
    pub fn stats(&self, page_size: u64) -> ProcStats {
        let mut stats = self.hooks;
        self.apply(&mut stats, page_size);
        stats
    }
}

/// Sums the iterator's per-thread records into per-process totals and keeps each process's fault
/// counts monotonic across passes: a thread that is exiting is briefly in neither its own count
/// nor the group's (see `task_sampler`), and the daemon's model reads a counter going backwards
/// as a new process.
#[derive(Debug, Default)]
pub struct TaskSampler {
    buf: Vec<u8>,
    pass: PidMap<TaskTotals>,
    /// The previous pass's totals (after clamping), by tgid.
    last: PidMap<TaskTotals>,
    /// Records read in the last pass.
    pub records: usize,
}

impl TaskSampler {
    /// Read one pass from `source` (the file from [`super::Probes::task_iterator`], or a
    /// fixture) and return every process's totals, by tgid.
    pub fn read(&mut self, mut source: impl Read) -> io::Result<&PidMap<TaskTotals>> {
        self.pass.clear();
        self.buf.clear();
        self.records = 0;
        let mut filled = 0;
        loop {
            if self.buf.len() < filled + READ_CHUNK {
                self.buf.resize(filled + READ_CHUNK, 0);
            }
            let n = match source.read(&mut self.buf[filled..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            filled += n;
            let used = parse_records(&self.buf[..filled], &mut self.pass, &mut self.records);
            // Keep a partial record for the next read.
            self.buf.copy_within(used..filled, 0);
            filled -= used;
        }
        if filled != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("task iterator ended inside a record ({filled} bytes left over)"),
            ));
        }
        for (tgid, totals) in &mut self.pass {
            if let Some(prev) = self.last.get(tgid)
                && same_process(prev, totals)
            {
                totals.faults_minor = totals.faults_minor.max(prev.faults_minor);
                totals.faults_major = totals.faults_major.max(prev.faults_major);
            }
        }
        std::mem::swap(&mut self.pass, &mut self.last);
        // Do not keep a large pass's buffer between ticks.
        self.buf.truncate(READ_CHUNK);
        self.buf.shrink_to(READ_CHUNK);
        Ok(&self.last)
    }

    /// Final counters for a process's exit event: the kernel's count at the exit of its last
    /// thread, never below what the last pass reported (a thread exiting at that same instant
    /// can be missing from it). Sets `tracked`: the counts are known even for a process no pass
    /// saw. Events without task counters (no BTF) are left as they are.
    pub fn complete_exit(&mut self, exit: &mut ExitEvent) {
        let last = self.last.remove(&exit.header.pid);
        if exit.task_counters == 0 {
            return;
        }
        let mut totals = TaskTotals {
            faults_minor: exit.task_faults_minor,
            faults_major: exit.task_faults_major,
            ..TaskTotals::default()
        };
        if let Some(prev) = last {
            totals.faults_minor = totals.faults_minor.max(prev.faults_minor);
            totals.faults_major = totals.faults_major.max(prev.faults_major);
        }
        let rss = exit.stats.rss;
        totals.apply(&mut exit.stats, 1);
        exit.stats.rss = rss;
        exit.tracked = 1;
    }
}

/// Add every whole record in `buf` to `pass`; returns the bytes used (the rest is the start of
/// a record the next read completes).
fn parse_records(buf: &[u8], pass: &mut PidMap<TaskTotals>, records: &mut usize) -> usize {
    let mut at = 0;
    while let Some(record) = buf.get(at..at + RECORD) {
        // SAFETY: `record` is exactly one `TaskSample` of plain integers (Pod).
        let sample = unsafe { record.as_ptr().cast::<TaskSample>().read_unaligned() };
        let hooks = if sample.flags & task_sample_flag::HOOK_STATS != 0 {
            let Some(stats) = buf.get(at + RECORD..at + RECORD + HOOK_STATS) else {
                break;
            };
            // SAFETY: exactly one `ProcStats` of plain integers (Pod).
            Some(unsafe { stats.as_ptr().cast::<ProcStats>().read_unaligned() })
        } else {
            None
        };
        add_sample(pass, &sample, hooks);
        *records += 1;
        at += RECORD + if hooks.is_some() { HOOK_STATS } else { 0 };
    }
    at
}

fn add_sample(pass: &mut PidMap<TaskTotals>, s: &TaskSample, hooks: Option<ProcStats>) {
    let totals = pass.entry(s.tgid).or_default();
    if let Some(hooks) = hooks {
        totals.hooks = hooks;
    }
    totals.faults_minor += s.min_flt + s.group_min_flt;
    totals.faults_major += s.maj_flt + s.group_maj_flt;
    if s.tid == s.tgid {
        totals.start_time_ns = s.start_time_ns;
    }
    if s.mm != 0 && totals.mm == 0 {
        totals.mm = s.mm;
        totals.rss_pages = s.rss_pages;
        totals.vm_pages = s.total_vm_pages;
    }
}

/// Two passes' totals of one tgid are the same process unless both know its start time and it
/// differs (the pid was reused).
fn same_process(a: &TaskTotals, b: &TaskTotals) -> bool {
    a.start_time_ns == 0 || b.start_time_ns == 0 || a.start_time_ns == b.start_time_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tgid: u32, tid: u32, min: u64, maj: u64) -> TaskSample {
        TaskSample {
            tgid,
            tid,
            min_flt: min,
            maj_flt: maj,
            start_time_ns: if tid == tgid {
                1000 + u64::from(tgid)
            } else {
                0
            },
            mm: 0xffff_0000 + u64::from(tgid),
            rss_pages: [1, 2, 3, 4],
            ..TaskSample::default()
        }
    }

    fn bytes(samples: &[TaskSample]) -> Vec<u8> {
        samples
            .iter()
            .flat_map(|s| {
                // SAFETY: plain integers, no padding (asserted in memtrace-common).
                unsafe { std::slice::from_raw_parts((s as *const TaskSample).cast::<u8>(), RECORD) }
                    .to_vec()
            })
            .collect()
    }

    /// Delivers its bytes in reads of at most `step` bytes, splitting records like a seq file can.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn threads_and_reaped_threads_sum_per_process() {
        let mut leader = sample(10, 10, 100, 1);
        leader.group_min_flt = 50; // threads already reaped
        leader.group_maj_flt = 2;
        let data = bytes(&[leader, sample(10, 11, 30, 0), sample(20, 20, 7, 0)]);
        let mut sampler = TaskSampler::default();
        let totals = sampler
            .read(Trickle {
                data,
                at: 0,
                step: 37, // not a multiple of a record
            })
            .unwrap();
        assert_eq!(totals.len(), 2);
        assert_eq!(totals[&10].faults_minor, 180);
        assert_eq!(totals[&10].faults_major, 3);
        assert_eq!(totals[&10].start_time_ns, 1010);
        assert_eq!(totals[&10].rss_pages, [1, 2, 3, 4]);
        assert_eq!(totals[&20].faults_minor, 7);
        assert_eq!(sampler.records, 3);
    }

    #[test]
    fn a_leaders_hook_counters_come_with_its_record() {
        let mut leader = sample(10, 10, 100, 1);
        leader.flags = task_sample_flag::HOOK_STATS;
        let hooks = ProcStats {
            mmap_calls: 7,
            mmap_bytes: 7 << 20,
            reclaim_ns: 55,
            faults_user: 999, // replaced by the task counters
            ..ProcStats::default()
        };
        let mut data = bytes(&[leader]);
        // SAFETY: plain integers, no padding (asserted in memtrace-common).
        data.extend_from_slice(unsafe {
            std::slice::from_raw_parts((&raw const hooks).cast::<u8>(), HOOK_STATS)
        });
        data.extend(bytes(&[sample(10, 11, 30, 0), sample(20, 20, 7, 0)]));
        // Every split point, including inside the counters that follow a record.
        for step in [1, 37, RECORD, RECORD + 1, RECORD + HOOK_STATS - 1] {
            let mut sampler = TaskSampler::default();
            let totals = sampler
                .read(Trickle {
                    data: data.clone(),
                    at: 0,
                    step,
                })
                .unwrap();
            let stats = totals[&10].stats(4096);
            assert_eq!(stats.mmap_calls, 7, "step {step}");
            assert_eq!(stats.mmap_bytes, 7 << 20);
            assert_eq!(stats.reclaim_ns, 55);
            assert_eq!(stats.faults_user, 131, "faults from the task counters");
            assert_eq!(stats.rss[0], 4096, "RSS from the task counters, in bytes");
            assert_ne!(stats.flags & proc_flag::TASK_COUNTERS, 0);
            assert_eq!(totals[&20].stats(4096).mmap_calls, 0, "no entry: zero");
            assert_eq!(sampler.records, 3, "step {step}");
        }

        // A record that announces counters the stream does not hold is truncated.
        let err = TaskSampler::default()
            .read(&data[..RECORD + HOOK_STATS - 8])
            .unwrap_err();
        assert!(err.to_string().contains("ended inside a record"), "{err}");
    }

    #[test]
    fn counts_never_go_backwards_for_one_process_but_reset_for_a_new_one() {
        let mut sampler = TaskSampler::default();
        sampler
            .read(bytes(&[sample(10, 10, 100, 0), sample(10, 11, 40, 0)]).as_slice())
            .unwrap();
        // Thread 11 is exiting: in neither its own count nor the group's for this pass.
        let totals = sampler
            .read(bytes(&[sample(10, 10, 105, 0)]).as_slice())
            .unwrap();
        assert_eq!(totals[&10].faults_minor, 140);
        // Then it is folded into the group's count.
        let mut leader = sample(10, 10, 106, 0);
        leader.group_min_flt = 40;
        let totals = sampler.read(bytes(&[leader]).as_slice()).unwrap();
        assert_eq!(totals[&10].faults_minor, 146);
        // Pid 10 reused by a new process (another start time): its own, lower, count.
        let mut reused = sample(10, 10, 3, 0);
        reused.start_time_ns = 99_999;
        let totals = sampler.read(bytes(&[reused]).as_slice()).unwrap();
        assert_eq!(totals[&10].faults_minor, 3);
    }

    #[test]
    fn exit_counts_are_final_and_never_below_the_last_pass() {
        let mut sampler = TaskSampler::default();
        sampler
            .read(bytes(&[sample(10, 10, 500, 5)]).as_slice())
            .unwrap();
        let mut exit = ExitEvent {
            task_counters: 1,
            task_faults_minor: 490, // a thread exiting at the same instant was missed
            task_faults_major: 6,
            ..ExitEvent::default()
        };
        exit.header.pid = 10;
        exit.stats.mmap_calls = 3;
        exit.stats.rss = [4096, 0, 0, 0];
        sampler.complete_exit(&mut exit);
        assert_eq!(exit.tracked, 1);
        assert_eq!(exit.stats.faults_minor(), 500);
        assert_eq!(exit.stats.faults_major, 6);
        assert_eq!(exit.stats.mmap_calls, 3, "hook counters are kept");
        assert_eq!(exit.stats.rss, [4096, 0, 0, 0], "gauges are kept");
        assert_ne!(exit.stats.flags & proc_flag::TASK_COUNTERS, 0);

        // Without task counters (no BTF) the event is left alone.
        let mut plain = ExitEvent::default();
        plain.header.pid = 11;
        let before = plain;
        sampler.complete_exit(&mut plain);
        assert_eq!(plain, before);
    }

    #[test]
    fn a_truncated_record_is_an_error() {
        let mut data = bytes(&[sample(10, 10, 1, 0)]);
        data.truncate(RECORD - 8);
        let err = TaskSampler::default().read(data.as_slice()).unwrap_err();
        assert!(err.to_string().contains("ended inside a record"), "{err}");
    }
}
