//! Rendering events as aligned text columns or JSON lines.
//!
//! Both renderers write into a caller-owned buffer: in a live trace at a million events per
//! second, a `String` or `serde_json::Value` per event would dominate the cost.
use std::{
    cell::Cell,
    fmt::Write as _,
    io,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use memtrace_common::{
    ExitEvent, FaultEvent, MemSyscallEvent, OomEvent, ReclaimEvent, kind, oom_field, rss_member,
};
use serde::{Serialize, Serializer};

use super::{
    Event, FAULT_ERROR_CODE_NAMES, FlagName, MMAP_FLAG_NAMES, MREMAP_FLAG_NAMES, PROT_NAMES,
    comm_str, flag_names, kind_name,
};
use crate::{escape::terminal, units::human_bytes};

/// Column header of the text output.
pub const TEXT_HEADER: &str = "TIME          PID      COMM             EVENT    DETAILS";

/// Converts `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock time.
#[derive(Clone, Debug)]
pub struct Clock {
    /// Wall-clock nanoseconds since the epoch minus monotonic nanoseconds, sampled once.
    offset_ns: i128,
    /// The last second [`Clock::rfc3339_nanos`] formatted, and its `YYYY-MM-DDTHH:MM:SS`:
    /// consecutive events share their second, and formatting a date was a tenth of the cost of
    /// a JSON line at a million lines a second.
    second: Cell<(u64, [u8; 19])>,
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`
const RFC3339_NANOS_LEN: usize = 30;

fn monotonic_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Clock {
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        Self::with_offset(wall - monotonic_ns())
    }

    /// A clock where wall time = monotonic time + `offset_ns`.
    pub fn with_offset(offset_ns: i128) -> Self {
        Self {
            offset_ns,
            second: Cell::new((u64::MAX, [0; 19])),
        }
    }

    fn wall_ns(&self, monotonic_ns: u64) -> u64 {
        (i128::from(monotonic_ns) + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64
    }

    /// CLOCK_MONOTONIC now, in the kernel's `ts_ns` terms (for lines that are not events).
    pub fn monotonic_now_ns() -> u64 {
        monotonic_ns().clamp(0, i128::from(u64::MAX)) as u64
    }

    pub fn wall(&self, monotonic_ns: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.wall_ns(monotonic_ns))
    }

    /// `monotonic_ns` as RFC 3339 UTC with nanoseconds, as `humantime::format_rfc3339_nanos`
    /// writes it (`2026-11-24T05:14:00.123456789Z`).
    pub fn rfc3339_nanos(&self, monotonic_ns: u64) -> Rfc3339Nanos {
        let ns = self.wall_ns(monotonic_ns);
        let (sec, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
        let (cached, mut prefix) = self.second.get();
        if cached != sec {
            let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(sec))
                .to_string();
            prefix.copy_from_slice(&whole.as_bytes()[..19]);
            self.second.set((sec, prefix));
        }
        let mut out = [0u8; RFC3339_NANOS_LEN];
        out[..19].copy_from_slice(&prefix);
        out[19] = b'.';
        let mut rest = frac;
        for digit in out[20..29].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out[29] = b'Z';
        Rfc3339Nanos(out)
    }
}

/// A timestamp from [`Clock::rfc3339_nanos`] (ASCII).
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339Nanos([u8; RFC3339_NANOS_LEN]);

impl Rfc3339Nanos {
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Serialize for Rfc3339Nanos {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// `rw-` for mmap `prot`.
fn prot_str(prot: u32) -> String {
    let bit = |mask: i32, c: char| if prot & mask as u32 != 0 { c } else { '-' };
    [
        bit(libc::PROT_READ, 'r'),
        bit(libc::PROT_WRITE, 'w'),
        bit(libc::PROT_EXEC, 'x'),
    ]
    .iter()
    .collect()
}

/// `private|anonymous|populate` for mmap `flags`.
fn map_flags_str(flags: u32) -> String {
    const NAMES: [(i32, &str); 9] = [
        (libc::MAP_SHARED, "shared"),
        (libc::MAP_PRIVATE, "private"),
        (libc::MAP_FIXED, "fixed"),
        (libc::MAP_ANONYMOUS, "anonymous"),
        (libc::MAP_NORESERVE, "noreserve"),
        (libc::MAP_POPULATE, "populate"),
        (libc::MAP_HUGETLB, "hugetlb"),
        (libc::MAP_STACK, "stack"),
        (libc::MAP_LOCKED, "locked"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| flags & *bit as u32 != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        format!("{flags:#x}")
    } else {
        names.join("|")
    }
}

/// x86 page-fault error code bits, as words.
fn fault_cause(error_code: u64) -> &'static str {
    let present = error_code & 1 != 0;
    let write = error_code & 2 != 0;
    let fetch = error_code & 16 != 0;
    match (present, write, fetch) {
        (false, _, true) => "exec, not-present",
        (true, _, true) => "exec, protection",
        (false, true, _) => "write, not-present",
        (true, true, _) => "write, protection",
        (false, false, _) => "read, not-present",
        (true, false, _) => "read, protection",
    }
}

fn errno_str(ret: i64) -> String {
    io::Error::from_raw_os_error((-ret) as i32).to_string()
}

/// A run of identical events shown as one line (see `crate::trace::collapse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repeat {
    /// Events in the run, the first included (at least 2).
    pub count: u64,
    /// When the last one happened (CLOCK_MONOTONIC, as `ts_ns`).
    pub last_ts_ns: u64,
    /// Bytes (mmap family) or stall nanoseconds (reclaim) of them all.
    pub total: u64,
}

/// The columns every text line starts with: time, pid, comm, event.
fn text_columns(out: &mut String, clock: &Clock, event: &Event) {
    let h = event.header();
    let time = humantime::format_rfc3339_millis(clock.wall(h.ts_ns)).to_string();
    // `2026-11-24T01:52:03.123Z` → `01:52:03.123`
    let time = time.get(11..23).unwrap_or(&time);
    let _ = write!(
        out,
        "{time:<13} {:<8} {:<16} {:<8} ",
        h.pid,
        terminal(&comm_str(&h.comm)),
        kind_name(h.kind)
    );
}

/// Text line for a run of identical events (no trailing newline), appended to `out`: the first
/// one's time, `count × size` and what they share; one event is [`text`]'s line.
pub fn text_run(
    out: &mut String,
    clock: &Clock,
    event: &Event,
    cgroup: Option<&str>,
    repeat: Repeat,
) {
    if repeat.count < 2 {
        return text(out, clock, event, cgroup);
    }
    text_columns(out, clock, event);
    let n = repeat.count;
    match event {
        Event::MemSyscall(e) => {
            let failed = (-4095..0).contains(&e.ret);
            match e.header.kind {
                kind::MMAP => {
                    let _ = write!(
                        out,
                        "{n} × len={} ({}) prot={} flags={} fd={}",
                        human_bytes(e.len),
                        human_bytes(repeat.total),
                        prot_str(e.prot),
                        map_flags_str(e.flags),
                        e.fd
                    );
                }
                kind::BRK if e.old_addr == 0 => {
                    let _ = write!(out, "{n} × brk (previous break unknown)");
                }
                kind::BRK => {
                    let sign = if e.grew != 0 { '+' } else { '-' };
                    let _ = write!(
                        out,
                        "{n} × {sign}{} ({sign}{})",
                        human_bytes(e.len),
                        human_bytes(repeat.total)
                    );
                }
                kind::MREMAP => {
                    let _ = write!(
                        out,
                        "{n} × {} -> {}",
                        human_bytes(e.old_len),
                        human_bytes(e.len)
                    );
                }
                _ => {
                    let _ = write!(
                        out,
                        "{n} × len={} ({})",
                        human_bytes(e.len),
                        human_bytes(repeat.total)
                    );
                }
            }
            if failed {
                let _ = write!(out, " FAILED: {}", errno_str(e.ret));
            }
        }
        Event::Fault(e) => {
            let _ = write!(
                out,
                "{n} × error={:#x} ({}, {} mode)",
                e.error_code,
                fault_cause(e.error_code),
                if e.user != 0 { "user" } else { "kernel" }
            );
        }
        Event::Reclaim(e) => {
            let _ = write!(
                out,
                "{n} × stall, {:.3}ms in all, order={} {}",
                repeat.total as f64 / 1e6,
                e.order,
                if e.memcg != 0 {
                    "memcg (cgroup limit)"
                } else {
                    "direct (global)"
                }
            );
        }
        // Never collapsed: shown as they are.
        Event::Oom(_) | Event::Exec(_) | Event::Exit(_) => {
            out.clear();
            return text(out, clock, event, cgroup);
        }
    }
    let span = repeat.last_ts_ns.saturating_sub(event.header().ts_ns);
    let _ = write!(out, " in {:.3}s", span as f64 / 1e9);
    if let Some(cgroup) = cgroup {
        let _ = write!(out, " cgroup={}", terminal(cgroup));
    }
}

/// Text line for one event (no trailing newline), appended to `out`.
pub fn text(out: &mut String, clock: &Clock, event: &Event, cgroup: Option<&str>) {
    let h = event.header();
    text_columns(out, clock, event);
    match event {
        Event::Fault(e) => fault_text(out, e),
        Event::MemSyscall(e) => mem_text(out, e),
        Event::Reclaim(e) => reclaim_text(out, e),
        Event::Oom(e) => oom_text(out, e),
        Event::Exec(e) => {
            let len = (e.filename_len as usize).min(e.filename.len());
            let name = String::from_utf8_lossy(&e.filename[..len]);
            let name = name.trim_end_matches('\0');
            let _ = write!(out, "filename={}", terminal(name));
            if e.old_pid != h.pid {
                let _ = write!(out, " old_pid={}", e.old_pid);
            }
        }
        Event::Exit(e) => exit_text(out, e),
    }
    if let Some(cgroup) = cgroup {
        let _ = write!(out, " cgroup={}", terminal(cgroup));
    }
}

fn fault_text(out: &mut String, e: &FaultEvent) {
    let _ = write!(
        out,
        "addr={:#x} ip={:#x} error={:#x} ({}, {} mode)",
        e.address,
        e.ip,
        e.error_code,
        fault_cause(e.error_code),
        if e.user != 0 { "user" } else { "kernel" }
    );
}

fn mem_text(out: &mut String, e: &MemSyscallEvent) {
    let failed = (-4095..0).contains(&e.ret);
    match e.header.kind {
        kind::MMAP => {
            let _ = write!(
                out,
                "addr={:#x} len={} prot={} flags={} fd={}",
                e.addr,
                human_bytes(e.len),
                prot_str(e.prot),
                map_flags_str(e.flags),
                e.fd
            );
        }
        kind::MUNMAP => {
            let _ = write!(out, "addr={:#x} len={}", e.addr, human_bytes(e.len));
        }
        kind::BRK => {
            if failed {
                let _ = write!(
                    out,
                    "brk={:#x} change={} refused",
                    e.addr,
                    human_bytes(e.len)
                );
            } else if e.old_addr == 0 {
                // The first brk seen since the trace attached: the old break is not known (the
                // kernel never reports 0 as a break), so neither is the change.
                let _ = write!(out, "brk=? -> {:#x} (previous break unknown)", e.addr);
            } else {
                let sign = if e.grew != 0 { '+' } else { '-' };
                let _ = write!(
                    out,
                    "brk={:#x} -> {:#x} ({sign}{})",
                    e.old_addr,
                    e.addr,
                    human_bytes(e.len)
                );
            }
        }
        _ => {
            let _ = write!(
                out,
                "old={:#x} ({}) new={:#x} ({})",
                e.old_addr,
                human_bytes(e.old_len),
                e.addr,
                human_bytes(e.len)
            );
        }
    }
    if failed {
        let _ = write!(out, " FAILED: {}", errno_str(e.ret));
    }
}

fn reclaim_text(out: &mut String, e: &ReclaimEvent) {
    let _ = write!(
        out,
        "stall={:.3}ms reclaimed={} pages order={} {}",
        e.duration_ns as f64 / 1e6,
        e.nr_reclaimed,
        e.order,
        if e.memcg != 0 {
            "memcg (cgroup limit)"
        } else {
            "direct (global)"
        }
    );
}

fn oom_text(out: &mut String, e: &OomEvent) {
    let _ = write!(
        out,
        "victim={} ({})",
        e.victim_pid,
        terminal(&comm_str(&e.victim_comm))
    );
    // Saturating, as the model converts them: the values are the kernel's, not ours.
    let kb =
        |bit: u32, kib: u64| (e.present & bit != 0).then(|| human_bytes(kib.saturating_mul(1024)));
    for (name, value) in [
        ("anon_rss", kb(oom_field::ANON_RSS, e.anon_rss_kb)),
        ("file_rss", kb(oom_field::FILE_RSS, e.file_rss_kb)),
        ("shmem_rss", kb(oom_field::SHMEM_RSS, e.shmem_rss_kb)),
        ("total_vm", kb(oom_field::TOTAL_VM, e.total_vm_kb)),
        ("pgtables", kb(oom_field::PGTABLES, e.pgtables_kb)),
    ] {
        if let Some(value) = value {
            let _ = write!(out, " {name}={value}");
        }
    }
    if e.present & oom_field::UID != 0 {
        let _ = write!(out, " uid={}", e.victim_uid);
    }
    if e.present & oom_field::OOM_SCORE_ADJ != 0 {
        let _ = write!(out, " oom_score_adj={}", e.oom_score_adj);
    }
    let _ = write!(
        out,
        " trigger={} ({})",
        e.header.pid,
        terminal(&comm_str(&e.header.comm))
    );
}

fn exit_text(out: &mut String, e: &ExitEvent) {
    let s = &e.stats;
    let _ = write!(
        out,
        "minflt={} majflt={} mmap={} munmap={} brk+={} reclaim={}/{:.1}ms rss_anon={} rss_file={}",
        s.faults_minor(),
        s.faults_major,
        human_bytes(s.mmap_bytes),
        human_bytes(s.munmap_bytes),
        human_bytes(s.brk_grow_bytes),
        s.reclaim_stalls,
        s.reclaim_ns as f64 / 1e6,
        human_bytes(s.rss[rss_member::ANON]),
        human_bytes(s.rss[rss_member::FILE]),
    );
}

/// `0x7f00…` written into `buf` (no allocation: every fault line carries two).
fn hex(value: u64, buf: &mut [u8; 18]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - value.leading_zeros() as usize).div_ceil(4).max(1);
    buf[0] = b'0';
    buf[1] = b'x';
    for (i, slot) in buf[2..2 + digits].iter_mut().enumerate() {
        *slot = DIGITS[((value >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    // Only ASCII was written.
    std::str::from_utf8(&buf[..2 + digits]).unwrap_or_default()
}

/// One JSON object written field by field into a byte buffer. Keys, numbers, hex forms and flag
/// names are ASCII this module chooses and are written as they are; only text from the kernel
/// (comm, cgroup, file name) goes through serde_json's escaping. At a million fault lines a
/// second, escaping every key and generated value was most of the cost of a line.
struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    /// `"key":` (keys are identifiers: nothing to escape).
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !std::mem::take(&mut self.empty) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    /// A value serde_json writes: numbers, and strings that need escaping.
    fn value<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> serde_json::Result<()> {
        serde_json::to_writer(self.key(key), value)
    }

    fn bool(&mut self, key: &str, value: bool) {
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.key(key).extend_from_slice(text);
    }

    /// A string known to need no escaping.
    fn ascii(&mut self, key: &str, value: &str) {
        let out = self.key(key);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    }

    /// A comm, straight from its NUL-padded bytes.
    fn comm(&mut self, key: &str, comm: &[u8; 16]) -> serde_json::Result<()> {
        let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        self.value(key, &*String::from_utf8_lossy(&comm[..end]))
    }

    /// An address: `key` as a number and `hex_key`, its `0x…` form.
    fn address(&mut self, key: &str, hex_key: &str, value: u64) -> serde_json::Result<()> {
        self.value(key, &value)?;
        self.ascii(hex_key, hex(value, &mut [0; 18]));
        Ok(())
    }

    /// A flag word: `key` raw and `names_key`, the names of its set bits, then the bits without
    /// a name as one `0x…` value.
    fn flags(
        &mut self,
        key: &str,
        names_key: &str,
        value: u64,
        table: &'static [FlagName],
    ) -> serde_json::Result<()> {
        self.value(key, &value)?;
        let (names, rest) = flag_names(value, table);
        let out = self.key(names_key);
        out.push(b'[');
        let mut push = |i: usize, word: &str| {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(word.as_bytes());
            out.push(b'"');
        };
        let mut count = 0;
        for name in names {
            push(count, name);
            count += 1;
        }
        if rest != 0 {
            push(count, hex(rest, &mut [0; 18]));
        }
        self.out.push(b']');
        Ok(())
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// Serialize one event as a JSON object (no trailing newline) into `out`: the fields every event
/// line starts with, then its kind's, as `memtrace_api::trace::{FaultLine, MmapLine, …}` declare
/// them (the golden fixture test holds the two together).
pub fn json(
    out: &mut Vec<u8>,
    clock: &Clock,
    event: &Event,
    cgroup: Option<&str>,
) -> serde_json::Result<()> {
    json_run(out, clock, event, cgroup, None)
}

/// [`json`], for a run of identical events (`--collapse`): the first one's object with
/// `events` (how many) and `last_ts`/`last_ts_ns` (when the last one happened) added.
pub fn json_run(
    out: &mut Vec<u8>,
    clock: &Clock,
    event: &Event,
    cgroup: Option<&str>,
    repeat: Option<Repeat>,
) -> serde_json::Result<()> {
    let h = event.header();
    let mut line = JsonObject::new(out);
    line.ascii("ts", clock.rfc3339_nanos(h.ts_ns).as_str());
    // CLOCK_MONOTONIC nanoseconds, as the kernel stamped it.
    line.value("ts_ns", &h.ts_ns)?;
    line.ascii("kind", kind_name(h.kind));
    line.value("pid", &h.pid)?;
    line.value("tid", &h.tid)?;
    line.comm("comm", &h.comm)?;
    line.value("cpu", &h.cpu)?;
    if let Some(cgroup) = cgroup {
        line.value("cgroup", cgroup)?;
    }
    let failed = |ret: i64| (-4095..0).contains(&ret);
    match event {
        Event::Fault(e) => {
            line.address("addr", "addr_hex", e.address)?;
            line.address("ip", "ip_hex", e.ip)?;
            line.flags(
                "error_code",
                "error_code_names",
                e.error_code,
                FAULT_ERROR_CODE_NAMES,
            )?;
            line.bool("user", e.user != 0);
        }
        Event::MemSyscall(e) => match e.header.kind {
            kind::MMAP => {
                line.address("addr", "addr_hex", e.addr)?;
                line.value("len", &e.len)?;
                line.flags("prot", "prot_names", e.prot.into(), PROT_NAMES)?;
                line.flags("flags", "flags_names", e.flags.into(), MMAP_FLAG_NAMES)?;
                line.value("fd", &e.fd)?;
                line.value("ret", &e.ret)?;
                line.bool("failed", failed(e.ret));
            }
            kind::MUNMAP => {
                line.address("addr", "addr_hex", e.addr)?;
                line.value("len", &e.len)?;
                line.value("ret", &e.ret)?;
                line.bool("failed", failed(e.ret));
            }
            kind::BRK => {
                // An unknown old break (the first brk since attach) is omitted, with the change.
                let known = e.old_addr != 0;
                if known {
                    line.address("old_addr", "old_addr_hex", e.old_addr)?;
                }
                line.address("new_addr", "new_addr_hex", e.addr)?;
                if known {
                    line.value("len", &e.len)?;
                    line.bool("grew", e.grew != 0);
                }
                line.value("ret", &e.ret)?;
                line.bool("failed", failed(e.ret));
            }
            _ => {
                line.address("old_addr", "old_addr_hex", e.old_addr)?;
                line.value("old_len", &e.old_len)?;
                line.address("new_addr", "new_addr_hex", e.addr)?;
                line.value("new_len", &e.len)?;
                // mremap's flags travel in the record's `prot` slot.
                line.flags("flags", "flags_names", e.prot.into(), MREMAP_FLAG_NAMES)?;
                line.value("ret", &e.ret)?;
                line.bool("failed", failed(e.ret));
            }
        },
        Event::Reclaim(e) => {
            line.value("duration_ns", &e.duration_ns)?;
            line.value("reclaimed_pages", &e.nr_reclaimed)?;
            line.value("order", &e.order)?;
            line.value("gfp_flags", &e.gfp_flags)?;
            line.bool("memcg", e.memcg != 0);
        }
        Event::Oom(e) => {
            line.value("victim_pid", &e.victim_pid)?;
            line.comm("victim_comm", &e.victim_comm)?;
            if e.present & oom_field::UID != 0 {
                line.value("uid", &e.victim_uid)?;
            }
            // The tracepoint reports KiB; the contract is bytes. Absent fields are omitted.
            for (name, bit, kib) in [
                ("total_vm_bytes", oom_field::TOTAL_VM, e.total_vm_kb),
                ("anon_rss_bytes", oom_field::ANON_RSS, e.anon_rss_kb),
                ("file_rss_bytes", oom_field::FILE_RSS, e.file_rss_kb),
                ("shmem_rss_bytes", oom_field::SHMEM_RSS, e.shmem_rss_kb),
                ("pgtables_bytes", oom_field::PGTABLES, e.pgtables_kb),
            ] {
                if e.present & bit != 0 {
                    line.value(name, &kib.saturating_mul(1024))?;
                }
            }
            if e.present & oom_field::OOM_SCORE_ADJ != 0 {
                line.value("oom_score_adj", &e.oom_score_adj)?;
            }
            line.value("trigger_pid", &e.header.pid)?;
            line.comm("trigger_comm", &e.header.comm)?;
        }
        Event::Exec(e) => {
            let len = (e.filename_len as usize).min(e.filename.len());
            let filename = String::from_utf8_lossy(&e.filename[..len]);
            line.value("filename", filename.trim_end_matches('\0'))?;
            line.value("old_pid", &e.old_pid)?;
        }
        Event::Exit(e) => {
            line.bool("tracked", e.tracked != 0);
            line.value("counters", &super::counters_json(&e.stats))?;
        }
    }
    let collapsible = !matches!(event, Event::Oom(_) | Event::Exec(_) | Event::Exit(_));
    if let Some(repeat) = repeat.filter(|r| r.count > 1 && collapsible) {
        line.value("events", &repeat.count)?;
        line.ascii("last_ts", clock.rfc3339_nanos(repeat.last_ts_ns).as_str());
        line.value("last_ts_ns", &repeat.last_ts_ns)?;
    }
    line.end();
    Ok(())
}

#[cfg(test)]
mod tests {
    use memtrace_common::{COMM_LEN, EventHeader};

    use super::*;

    fn header(kind: u32) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..6].copy_from_slice(b"memhog");
        EventHeader {
            kind,
            pid: 4242,
            tid: 4243,
            cpu: 0,
            ts_ns: 1_000_000_000,
            comm,
        }
    }

    #[test]
    fn timestamps_match_humantime_across_second_boundaries() {
        let clock = Clock::with_offset(1_700_000_000_999_999_000);
        // Monotonic instants either side of wall-clock second boundaries, out of order too:
        // the cached second must never leak into another second.
        for mono in [
            0,
            999,
            1_000,
            1_001,
            5_000_000_000,
            4_999_999_999,
            1_000,
            86_400_000_000_000,
        ] {
            assert_eq!(
                clock.rfc3339_nanos(mono).as_str(),
                humantime::format_rfc3339_nanos(clock.wall(mono)).to_string(),
                "monotonic {mono}"
            );
        }
    }

    /// Issue 10 C: the first brk after attach has no known previous break; it is shown as
    /// unknown, not as a move from 0 by "-0 B".
    #[test]
    fn a_brk_with_an_unknown_previous_break_says_so() {
        let clock = Clock::with_offset(1_700_000_000_000_000_000);
        let event = Event::MemSyscall(MemSyscallEvent {
            header: header(kind::BRK),
            addr: 0x1df_5000,
            ret: 0x1df_5000,
            ..Default::default()
        });
        let mut line = String::new();
        text(&mut line, &clock, &event, None);
        assert!(
            line.ends_with("brk      brk=? -> 0x1df5000 (previous break unknown)"),
            "{line}"
        );
        let mut buf = Vec::new();
        json(&mut buf, &clock, &event, None).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(value["new_addr"], 0x1df_5000);
        for absent in ["old_addr", "old_addr_hex", "len", "grew"] {
            assert!(value.get(absent).is_none(), "{absent} in {value}");
        }
        // The published line type reads it (found by the event_decode fuzz target when it
        // did not: those fields were required).
        let line: memtrace_api::trace::TraceLine =
            serde_json::from_slice(&buf).expect("a brk line of the v1 contract");
        match line {
            memtrace_api::trace::TraceLine::Brk(brk) => {
                assert_eq!((brk.old_addr, brk.len, brk.grew), (None, None, None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mmap_text_and_json() {
        let clock = Clock::with_offset(1_700_000_000_000_000_000);
        let event = Event::MemSyscall(MemSyscallEvent {
            header: header(kind::MMAP),
            addr: 0x7f00_0000_0000,
            len: 1 << 20,
            prot: (libc::PROT_READ | libc::PROT_WRITE) as u32,
            flags: (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
            fd: -1,
            ret: 0x7f00_0000_0000,
            ..Default::default()
        });
        let mut line = String::new();
        text(&mut line, &clock, &event, Some("/test"));
        assert!(
            line.ends_with("4242     memhog           mmap     addr=0x7f0000000000 len=1.0 MiB prot=rw- flags=private|anonymous fd=-1 cgroup=/test"),
            "{line}"
        );
        let mut buf = Vec::new();
        json(&mut buf, &clock, &event, None).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(value["kind"], "mmap");
        assert_eq!(value["pid"], 4242);
        assert_eq!(value["comm"], "memhog");
        assert_eq!(value["len"], 1 << 20);
        assert_eq!(value["failed"], false);
        assert_eq!(value["addr"], 0x7f00_0000_0000_u64);
        assert_eq!(value["addr_hex"], "0x7f0000000000");
        assert_eq!(value["prot"], 3);
        assert_eq!(value["prot_names"], serde_json::json!(["read", "write"]));
        assert_eq!(value["flags"], 0x22);
        assert_eq!(
            value["flags_names"],
            serde_json::json!(["private", "anonymous"])
        );
        assert_eq!(value["ts"], "2023-11-14T22:13:21.000000000Z");
    }

    #[test]
    fn failed_mmap_says_why() {
        let event = Event::MemSyscall(MemSyscallEvent {
            header: header(kind::MMAP),
            len: 1 << 40,
            ret: -12,
            fd: -1,
            ..Default::default()
        });
        let mut line = String::new();
        text(&mut line, &Clock::new(), &event, None);
        assert!(line.contains("FAILED: Cannot allocate memory"), "{line}");
    }

    #[test]
    fn oom_json_has_victim_and_trigger_and_only_present_fields() {
        let mut victim_comm = [0u8; COMM_LEN];
        victim_comm[..3].copy_from_slice(b"hog");
        let event = Event::Oom(OomEvent {
            header: header(kind::OOM),
            victim_pid: 99,
            victim_comm,
            anon_rss_kb: 1000,
            present: oom_field::ANON_RSS | oom_field::COMM,
            ..Default::default()
        });
        let mut buf = Vec::new();
        json(&mut buf, &Clock::new(), &event, Some("/oomtest")).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(value["victim_pid"], 99);
        assert_eq!(value["victim_comm"], "hog");
        assert_eq!(
            value["anon_rss_bytes"],
            1000 * 1024,
            "KiB from the kernel, bytes out"
        );
        assert_eq!(value["trigger_pid"], 4242);
        assert_eq!(value["trigger_comm"], "memhog");
        assert_eq!(value["cgroup"], "/oomtest");
        assert!(
            value.get("file_rss_bytes").is_none() && value.get("uid").is_none(),
            "absent fields are omitted: {value}"
        );
    }

    /// Found by the `event_decode` fuzz target: KiB near `u64::MAX / 1024` in an OOM record
    /// overflowed the conversion to bytes in both renderings.
    #[test]
    fn oom_sizes_from_the_kernel_saturate() {
        let event = Event::Oom(OomEvent {
            header: header(kind::OOM),
            victim_pid: 99,
            anon_rss_kb: u64::MAX / 512,
            total_vm_kb: 3,
            present: oom_field::ANON_RSS | oom_field::TOTAL_VM,
            ..Default::default()
        });
        let mut line = String::new();
        text(&mut line, &Clock::new(), &event, None);
        assert!(
            line.contains("anon_rss=16.0 EiB total_vm=3.0 KiB"),
            "{line}"
        );
        let mut buf = Vec::new();
        json(&mut buf, &Clock::new(), &event, None).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(value["anon_rss_bytes"], u64::MAX);
        assert_eq!(value["total_vm_bytes"], 3 * 1024);
    }

    #[test]
    fn kernel_text_is_escaped_and_unnamed_flag_bits_kept() {
        let mut comm = [0u8; COMM_LEN];
        comm[..6].copy_from_slice(b"a\"b\\c\n");
        let event = Event::MemSyscall(MemSyscallEvent {
            header: EventHeader {
                comm,
                ..header(kind::MMAP)
            },
            prot: 0x10 | libc::PROT_READ as u32,
            flags: 0x5,
            ..Default::default()
        });
        let mut buf = Vec::new();
        json(
            &mut buf,
            &Clock::new(),
            &event,
            Some("/a \"quoted\" cgroup"),
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(value["comm"], "a\"b\\c\n");
        assert_eq!(value["cgroup"], "/a \"quoted\" cgroup");
        assert_eq!(value["prot_names"], serde_json::json!(["read", "0x10"]));
        assert_eq!(value["flags_names"], serde_json::json!(["0x5"]));
    }

    #[test]
    fn hex_matches_the_standard_formatting() {
        for value in [0, 1, 0xf, 0x10, 0x7f00_0000_0000, u64::MAX, 1 << 63] {
            assert_eq!(hex(value, &mut [0; 18]), format!("{value:#x}"));
        }
    }

    #[test]
    fn fault_json_decodes_the_error_code_and_keeps_it_raw() {
        let event = Event::Fault(FaultEvent {
            header: header(kind::FAULT),
            address: 0x7f46_d3fa_d000,
            ip: 0x55da_713c_d7bc,
            error_code: 0x8006,
            user: 1,
            reserved: 0,
        });
        let mut buf = Vec::new();
        json(&mut buf, &Clock::new(), &event, None).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(value["addr"], 0x7f46_d3fa_d000_u64);
        assert_eq!(value["addr_hex"], "0x7f46d3fad000");
        assert_eq!(value["ip_hex"], "0x55da713cd7bc");
        assert_eq!(value["error_code"], 0x8006);
        assert_eq!(
            value["error_code_names"],
            serde_json::json!(["write", "user", "sgx"])
        );
        assert_eq!(value["user"], true);
        assert!(value.get("cgroup").is_none());
    }

    #[test]
    fn fault_cause_words() {
        assert_eq!(fault_cause(0x6), "write, not-present");
        assert_eq!(fault_cause(0x14), "exec, not-present");
        assert_eq!(fault_cause(0x7), "write, protection");
    }

    #[test]
    fn text_lines_escape_what_processes_and_cgroups_name_themselves() {
        let clock = Clock::with_offset(1_700_000_000_000_000_000);
        let comm = |name: &[u8]| {
            let mut comm = [0u8; COMM_LEN];
            comm[..name.len()].copy_from_slice(name);
            comm
        };
        let mut trigger = header(kind::OOM);
        trigger.comm = comm(b"x\n# TYPE y");
        let oom = Event::Oom(OomEvent {
            header: trigger,
            victim_pid: 99,
            victim_comm: comm(b"\x1b[31mred"),
            present: oom_field::COMM,
            ..Default::default()
        });
        let mut exec_header = header(kind::EXEC);
        exec_header.comm = comm(b"\x1b]0;pwned\x07");
        let mut exec = memtrace_common::ExecEvent {
            header: exec_header,
            old_pid: 4242,
            filename_len: 0,
            filename: [0; memtrace_common::FILENAME_LEN],
        };
        let filename = b"/tmp/a\rb";
        exec.filename[..filename.len()].copy_from_slice(filename);
        exec.filename_len = filename.len() as u32;
        let exec = Event::Exec(exec);
        for (event, expected) in [
            (
                &oom,
                "4242     x\\n# TYPE y      oom      victim=99 (\\e[31mred) trigger=4242 (x\\n# TYPE y) cgroup=/a\\nb\\e",
            ),
            (
                &exec,
                "4242     \\e]0;pwned\\x07   exec     filename=/tmp/a\\rb cgroup=/a\\nb\\e",
            ),
        ] {
            let mut line = String::new();
            text(&mut line, &clock, event, Some("/a\nb\u{1b}"));
            assert!(line.ends_with(expected), "{line:?}");
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
    }
}
