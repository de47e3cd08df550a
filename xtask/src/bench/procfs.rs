//! What the benchmarks read from `/proc` (and the bpf syscall): CPU time, memory, process counts,
//! and the in-kernel run time of memtrace's programs.
use std::fs;

use anyhow::{Context as _, Result};

pub(super) fn clk_tck() -> f64 {
    // SAFETY: no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU time of a process in nanoseconds: the sum of its threads' run time from
/// `/proc/<pid>/task/*/schedstat` (nanosecond precision, unlike utime/stime's clock ticks);
/// falls back to utime + stime when schedstat is unavailable.
pub(super) fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0u64;
    let mut found = false;
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            if let Some(ns) = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                total += ns;
                found = true;
            }
        }
    }
    if found {
        return Ok(total);
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `after` starts at field 3.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(((utime + stime) as f64 / clk_tck() * 1e9) as u64)
}

/// A `Vm…:` line of /proc/<pid>/status, in KiB.
pub(super) fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// Processes (thread-group leaders) on the system.
pub(super) fn process_count() -> usize {
    fs::read_dir("/proc").map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .count()
    })
}

/// Kernel scheduling entities (threads) in use, from /proc/loadavg.
pub(super) fn thread_count() -> usize {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
        .unwrap_or(0)
}

pub(super) fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

#[derive(Clone, Debug)]
pub(super) struct ProgStat {
    pub(super) id: u32,
    pub(super) prog_type: u32,
    pub(super) run_time_ns: u64,
    pub(super) run_cnt: u64,
}

/// BPF programs held open by `pid`, from the fdinfo of its fds (deduplicated by id).
pub(super) fn prog_stats(pid: u32) -> Result<Vec<ProgStat>> {
    let mut stats: Vec<ProgStat> = Vec::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |key: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        let (Some(prog_type), Some(id)) = (field("prog_type"), field("prog_id")) else {
            continue;
        };
        if stats.iter().any(|s| s.id == id as u32) {
            continue;
        }
        stats.push(ProgStat {
            id: id as u32,
            prog_type: prog_type as u32,
            run_time_ns: field("run_time_ns").unwrap_or(0),
            run_cnt: field("run_cnt").unwrap_or(0),
        });
    }
    Ok(stats)
}

/// The program's name (the kernel keeps 15 characters), via the bpf syscall.
pub(super) fn prog_name(id: u32) -> Option<String> {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // union bpf_attr for GET_FD_BY_ID: { u32 prog_id; u32 next_id; u32 open_flags; }.
    let mut attr = [0u64; 16];
    attr[0] = u64::from(id);
    // SAFETY: attr is a zeroed bpf_attr of the size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return None;
    }
    // struct bpf_prog_info: name[16] at byte offset 64.
    let mut info = [0u64; 64];
    let mut attr = [0u64; 16];
    // { u32 bpf_fd; u32 info_len; u64 info; } (little endian).
    attr[0] = (fd as u64 & 0xffff_ffff) | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: attr points at a buffer of info_len bytes that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    // SAFETY: closing the fd the kernel just gave us.
    unsafe { libc::close(fd as libc::c_int) };
    if rc < 0 {
        return None;
    }
    let bytes: Vec<u8> = info[8..10].iter().flat_map(|w| w.to_le_bytes()).collect();
    let name: Vec<u8> = bytes.into_iter().take_while(|&b| b != 0).collect();
    Some(String::from_utf8_lossy(&name).into_owned())
}

pub(super) fn prog_type_name(t: u32) -> String {
    match t {
        2 => "kprobe".to_owned(),
        5 => "tracepoint".to_owned(),
        7 => "perf_event".to_owned(),
        17 => "raw_tracepoint".to_owned(),
        26 => "tracing".to_owned(),
        other => format!("type {other}"),
    }
}
