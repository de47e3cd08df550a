//! Runs of identical events shown as one line: memcached filling its cache mmaps 1 MiB slab
//! after 1 MiB slab (2,048 identical lines for 2 GiB), an allocator growing the break in equal
//! steps. Identical: the same process and name, kind and shape (size, protection, flags, fd,
//! error; a fault's cause; a stall's order and kind), whatever the addresses.
//!
//! A run is held while it grows and written once it ends: when its process does something
//! else of the same kind (an mmap of another size ends a run of mmaps; the munmap after each
//! mmap of an allocate-free loop does not, so the loop shows as two lines, `N × mmap` and
//! `N × munmap`), when it has been idle for [`IDLE`], or at [`MAX_AGE`] so a steady stream
//! still shows as it goes (a line per second at most). Events that never repeat (OOM kills,
//! exec, exit) end every pending run first, so they keep their place in time.
use std::time::{Duration, Instant};

use memtrace_common::{COMM_LEN, kind};

use crate::events::Event;

/// A run no longer extended for this long is written.
pub const IDLE: Duration = Duration::from_millis(100);
/// A run this old is written even while it grows (the next event starts another).
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// Processes with a run pending at once; one more writes the oldest.
const MAX_PENDING: usize = 64;

/// What makes two events identical.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RunKey {
    pid: u32,
    comm: [u8; COMM_LEN],
    kind: u32,
    shape: [u64; 5],
}

fn errno(ret: i64) -> u64 {
    if (-4095..0).contains(&ret) {
        ret.unsigned_abs()
    } else {
        0
    }
}

/// The key of an event that may repeat; `None` for those shown one by one.
fn key(event: &Event) -> Option<RunKey> {
    let shape = match event {
        Event::Fault(e) => [e.error_code, u64::from(e.user), 0, 0, 0],
        Event::MemSyscall(e) => [
            e.len,
            // For mremap, its flags.
            u64::from(e.prot),
            u64::from(e.flags) | (u64::from(e.grew) << 32),
            // The old length (mremap); whether the old break was known (brk).
            match e.header.kind {
                kind::MREMAP => e.old_len,
                kind::BRK => u64::from(e.old_addr == 0),
                _ => 0,
            },
            (u64::from(e.fd as u32) << 16) | errno(e.ret),
        ],
        Event::Reclaim(e) => [e.order as u64, u64::from(e.memcg), 0, 0, 0],
        Event::Oom(_) | Event::Exec(_) | Event::Exit(_) => return None,
    };
    let header = event.header();
    Some(RunKey {
        pid: header.pid,
        comm: header.comm,
        kind: header.kind,
        shape,
    })
}

/// One line's worth of events: the first one as it came, and how many followed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub first: Event,
    pub cgroup: Option<String>,
    /// Events in the run, the first included.
    pub count: u64,
    /// The kernel's timestamp of the last one.
    pub last_ts_ns: u64,
    /// Bytes (the mmap family) or stall nanoseconds (reclaim) of all of them.
    pub total: u64,
    key: Option<RunKey>,
    started: Instant,
    extended: Instant,
}

/// What one event adds to a run's total.
fn amount(event: &Event) -> u64 {
    match event {
        Event::MemSyscall(e) => e.len,
        Event::Reclaim(e) => e.duration_ns,
        _ => 0,
    }
}

impl Run {
    fn new(event: &Event, cgroup: Option<&str>, key: Option<RunKey>, now: Instant) -> Self {
        Self {
            first: *event,
            cgroup: cgroup.map(str::to_owned),
            count: 1,
            last_ts_ns: event.header().ts_ns,
            total: amount(event),
            key,
            started: now,
            extended: now,
        }
    }

    fn extend(&mut self, event: &Event, now: Instant) {
        self.count += 1;
        self.last_ts_ns = self.last_ts_ns.max(event.header().ts_ns);
        self.total = self.total.saturating_add(amount(event));
        self.extended = now;
    }

    fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.extended) >= IDLE
            || now.saturating_duration_since(self.started) >= MAX_AGE
    }
}

/// The runs pending, oldest first.
#[derive(Debug, Default)]
pub struct Collapser {
    pending: Vec<Run>,
}

impl Collapser {
    /// One shown event at `now`; runs that end with it are appended to `out` in the order they
    /// are to be written (with the event itself, if it does not repeat).
    pub fn offer(&mut self, event: &Event, cgroup: Option<&str>, now: Instant, out: &mut Vec<Run>) {
        let Some(key) = key(event) else {
            out.append(&mut self.pending);
            out.push(Run::new(event, cgroup, None, now));
            return;
        };
        if let Some(run) = self.pending.iter_mut().find(|run| run.key == Some(key)) {
            // The cgroup is part of the process's identity, not of the key: a process moved to
            // another cgroup mid-run keeps the run (the line shows where it started).
            run.extend(event, now);
            return;
        }
        if let Some(i) = self.pending.iter().position(|run| {
            run.key
                .is_some_and(|k| (k.pid, k.kind) == (key.pid, key.kind))
        }) {
            out.push(self.pending.remove(i));
        }
        if self.pending.len() >= MAX_PENDING {
            out.push(self.pending.remove(0));
        }
        self.pending.push(Run::new(event, cgroup, Some(key), now));
    }

    /// Runs idle or old enough at `now`, appended to `out`.
    pub fn due(&mut self, now: Instant, out: &mut Vec<Run>) {
        if self.pending.iter().any(|run| run.due(now)) {
            let (due, keep) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|run| run.due(now));
            self.pending = keep;
            out.extend::<Vec<Run>>(due);
        }
    }

    /// Every pending run (before a summary, and at the end).
    pub fn flush(&mut self, out: &mut Vec<Run>) {
        out.append(&mut self.pending);
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::{EventHeader, MemSyscallEvent, OomEvent};

    use super::*;

    fn comm(name: &[u8]) -> [u8; COMM_LEN] {
        let mut comm = [0u8; COMM_LEN];
        comm[..name.len()].copy_from_slice(name);
        comm
    }

    fn mmap(pid: u32, len: u64, ts_ns: u64) -> Event {
        Event::MemSyscall(MemSyscallEvent {
            header: EventHeader {
                kind: kind::MMAP,
                pid,
                tid: pid,
                ts_ns,
                comm: comm(b"memcached"),
                ..Default::default()
            },
            addr: 0x7f00_0000_0000 + ts_ns * 4096,
            ret: (0x7f00_0000_0000 + ts_ns * 4096) as i64,
            len,
            prot: 3,
            flags: 0x22,
            fd: -1,
            ..Default::default()
        })
    }

    fn summary(runs: &[Run]) -> Vec<(u32, u64, u64)> {
        runs.iter()
            .map(|r| (r.first.header().pid, r.count, r.total))
            .collect()
    }

    #[test]
    fn identical_mmaps_at_other_addresses_are_one_run() {
        let t0 = Instant::now();
        let mut collapser = Collapser::default();
        let mut out = Vec::new();
        for i in 0..2048 {
            collapser.offer(&mmap(7, 1 << 20, i), None, t0, &mut out);
        }
        assert!(out.is_empty(), "held while it grows: {out:?}");
        collapser.flush(&mut out);
        assert_eq!(summary(&out), [(7, 2048, 2048 << 20)]);
        assert_eq!(out[0].first, mmap(7, 1 << 20, 0), "the first as it came");
        assert_eq!(out[0].last_ts_ns, 2047);
    }

    fn munmap(pid: u32, len: u64, ts_ns: u64) -> Event {
        let Event::MemSyscall(mut e) = mmap(pid, len, ts_ns) else {
            unreachable!()
        };
        e.header.kind = kind::MUNMAP;
        e.ret = 0;
        Event::MemSyscall(e)
    }

    #[test]
    fn an_allocate_free_loop_is_a_run_of_each_kind() {
        let t0 = Instant::now();
        let mut collapser = Collapser::default();
        let mut out = Vec::new();
        for i in 0..100 {
            collapser.offer(&mmap(7, 1 << 20, 2 * i), None, t0, &mut out);
            collapser.offer(&munmap(7, 1 << 20, 2 * i + 1), None, t0, &mut out);
        }
        collapser.flush(&mut out);
        let runs: Vec<(u32, u64)> = out.iter().map(|r| (r.first.kind(), r.count)).collect();
        assert_eq!(runs, [(kind::MMAP, 100), (kind::MUNMAP, 100)]);
    }

    #[test]
    fn something_different_from_the_same_process_ends_its_run_only() {
        let t0 = Instant::now();
        let mut collapser = Collapser::default();
        let mut out = Vec::new();
        collapser.offer(&mmap(7, 1 << 20, 1), None, t0, &mut out);
        collapser.offer(&mmap(8, 1 << 20, 2), None, t0, &mut out);
        collapser.offer(&mmap(7, 1 << 20, 3), None, t0, &mut out);
        collapser.offer(&mmap(8, 1 << 20, 4), None, t0, &mut out);
        assert!(out.is_empty(), "interleaved processes keep their runs");
        collapser.offer(&mmap(7, 2 << 20, 5), None, t0, &mut out);
        assert_eq!(summary(&out), [(7, 2, 2 << 20)]);
        out.clear();
        collapser.flush(&mut out);
        assert_eq!(summary(&out), [(8, 2, 2 << 20), (7, 1, 2 << 20)]);
    }

    #[test]
    fn events_that_never_repeat_write_the_pending_runs_first() {
        let t0 = Instant::now();
        let mut collapser = Collapser::default();
        let mut out = Vec::new();
        let oom = Event::Oom(OomEvent {
            header: EventHeader {
                kind: kind::OOM,
                pid: 9,
                ..Default::default()
            },
            ..Default::default()
        });
        collapser.offer(&mmap(7, 1 << 20, 1), None, t0, &mut out);
        collapser.offer(&oom, Some("/x"), t0, &mut out);
        collapser.offer(&oom, Some("/x"), t0, &mut out);
        assert_eq!(summary(&out), [(7, 1, 1 << 20), (9, 1, 0), (9, 1, 0)]);
        assert_eq!(out[1].cgroup.as_deref(), Some("/x"));
        assert!(collapser.is_empty());
    }

    #[test]
    fn runs_are_written_when_idle_or_old_so_the_view_stays_live() {
        let t0 = Instant::now();
        let mut collapser = Collapser::default();
        let mut out = Vec::new();
        collapser.offer(&mmap(7, 1 << 20, 1), None, t0, &mut out);
        collapser.due(t0 + IDLE / 2, &mut out);
        assert!(out.is_empty());
        collapser.due(t0 + IDLE, &mut out);
        assert_eq!(summary(&out), [(7, 1, 1 << 20)], "idle");
        // A steady stream, one event every IDLE / 2: written at MAX_AGE, then a new run.
        out.clear();
        let mut now = t0;
        let mut ts = 0;
        while now < t0 + MAX_AGE + IDLE {
            collapser.offer(&mmap(8, 4096, ts), None, now, &mut out);
            collapser.due(now, &mut out);
            now += IDLE / 2;
            ts += 1;
        }
        collapser.flush(&mut out);
        let counts: Vec<u64> = out.iter().map(|r| r.count).collect();
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert_eq!(counts.iter().sum::<u64>(), ts);
    }

    #[test]
    fn failed_calls_and_other_flags_are_not_the_same_event() {
        let ok = mmap(7, 1 << 20, 1);
        let Event::MemSyscall(mut failed) = ok else {
            unreachable!()
        };
        failed.ret = -12;
        let Event::MemSyscall(mut shared) = ok else {
            unreachable!()
        };
        shared.flags = 0x21;
        assert_ne!(key(&ok), key(&Event::MemSyscall(failed)));
        assert_ne!(key(&ok), key(&Event::MemSyscall(shared)));
        assert_eq!(key(&ok), key(&mmap(7, 1 << 20, 99)));
    }
}
