//! The trace's JSON lines against the contract: fixed events of every kind, a summary and a
//! losses line, rendered by the real (hand-tuned) renderers, must equal the golden fixture
//! `memtrace-api/tests/fixtures/trace-v1.jsonl` line for line, and each must deserialize into
//! `memtrace_api::trace::TraceLine` and serialize back unchanged (no field the types lack). The
//! API crate's own test checks the fixture against every field of the types, so a renamed,
//! removed or unlisted field fails one side or the other.
//!
//! After a deliberate, compatible change (a field added), regenerate the fixture with
//! `MEMTRACE_BLESS=1 cargo test -p memtrace --lib trace::golden` and review its diff.
use memtrace_api::trace::TraceLine;
use memtrace_common::{
    COMM_LEN, EventHeader, ExecEvent, ExitEvent, FILENAME_LEN, FaultEvent, MemSyscallEvent,
    OomEvent, ProcStats, ReclaimEvent, kind, proc_flag, rss_member,
};

use super::summary::{self, SummaryRow};
use crate::{
    events::{Event, render},
    pipeline::PipelineSnapshot,
    probes::KernelLosses,
};

const FIXTURE_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../memtrace-api/tests/fixtures/trace-v1.jsonl"
);

fn comm(name: &[u8]) -> [u8; COMM_LEN] {
    let mut comm = [0u8; COMM_LEN];
    comm[..name.len()].copy_from_slice(name);
    comm
}

fn header(kind: u32) -> EventHeader {
    EventHeader {
        kind,
        pid: 26042,
        tid: 26043,
        cpu: 1,
        ts_ns: 2_354_207_467_913,
        comm: comm(b"memtrace-worklo"),
    }
}

fn stats() -> ProcStats {
    let mut stats = ProcStats {
        faults_user: 17_000,
        faults_kernel: 534,
        faults_major: 5,
        mmap_calls: 40,
        mmap_bytes: 108 << 20,
        munmap_calls: 12,
        munmap_bytes: 556 << 10,
        brk_calls: 30,
        brk_grow_bytes: 2 << 20,
        brk_shrink_bytes: 128 << 10,
        mremap_calls: 2,
        mremap_grow_bytes: 4 << 20,
        mremap_shrink_bytes: 0,
        failed_calls: 1,
        reclaim_stalls: 45,
        reclaim_ns: 2_200_000,
        ..Default::default()
    };
    stats.rss[rss_member::ANON] = 63 << 20;
    stats.rss[rss_member::FILE] = 6 << 20;
    stats.rss[rss_member::SHMEM] = 4096;
    stats.rss[rss_member::SWAP] = 8192;
    stats
}

/// One event of each kind, every optional field present.
fn events() -> Vec<Event> {
    let mut filename = [0u8; FILENAME_LEN];
    filename[..14].copy_from_slice(b"/usr/bin/true\0");
    vec![
        Event::Fault(FaultEvent {
            header: header(kind::FAULT),
            address: 0x7f46_d3fa_d000,
            ip: 0x55da_713c_d7bc,
            error_code: 0x6,
            user: 1,
            reserved: 0,
        }),
        Event::MemSyscall(MemSyscallEvent {
            header: header(kind::MMAP),
            addr: 0x7f13_de4f_8000,
            len: 1 << 20,
            prot: (libc::PROT_READ | libc::PROT_WRITE) as u32,
            flags: (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
            fd: -1,
            ret: 0x7f13_de4f_8000,
            ..Default::default()
        }),
        Event::MemSyscall(MemSyscallEvent {
            header: header(kind::MUNMAP),
            addr: 0x7f13_de4f_8000,
            len: 1 << 20,
            ..Default::default()
        }),
        Event::MemSyscall(MemSyscallEvent {
            header: header(kind::BRK),
            old_addr: 0x55da_7200_0000,
            addr: 0x55da_7202_1000,
            len: 0x21000,
            grew: 1,
            ret: 0x55da_7202_1000,
            ..Default::default()
        }),
        Event::MemSyscall(MemSyscallEvent {
            header: header(kind::MREMAP),
            old_addr: 0x7ffb_6a80_0000,
            old_len: 2 << 20,
            addr: 0x7ffb_6a40_0000,
            len: 4 << 20,
            prot: libc::MREMAP_MAYMOVE as u32,
            ret: 0x7ffb_6a40_0000,
            ..Default::default()
        }),
        Event::Reclaim(ReclaimEvent {
            header: header(kind::RECLAIM),
            duration_ns: 1_250_000,
            nr_reclaimed: 32,
            gfp_flags: 0x400cc0,
            order: 0,
            memcg: 1,
        }),
        Event::Oom(OomEvent {
            header: EventHeader {
                comm: comm(b"python3"),
                ..header(kind::OOM)
            },
            victim_pid: 29929,
            victim_comm: comm(b"python3"),
            victim_uid: 1000,
            total_vm_kb: 75_160,
            anon_rss_kb: 65_331,
            file_rss_kb: 6_553,
            shmem_rss_kb: 0,
            pgtables_kb: 188,
            oom_score_adj: 0,
            present: u32::MAX,
            ..OomEvent::default()
        }),
        Event::Exec(ExecEvent {
            header: header(kind::EXEC),
            old_pid: 26042,
            filename_len: 14,
            filename,
        }),
        Event::Exit(ExitEvent {
            header: header(kind::EXIT),
            stats: stats(),
            tracked: 1,
            ..Default::default()
        }),
    ]
}

/// The renderer's lines for [`events`], a one-row summary and the losses line.
fn rendered() -> Vec<String> {
    let clock = render::Clock::with_offset(1_764_000_000_000_000_000);
    let cgroup = Some("/demo");
    let mut lines: Vec<String> = events()
        .iter()
        .map(|event| {
            // As `--collapse` writes a run of three (the kinds that never repeat ignore it).
            let repeat = render::Repeat {
                count: 3,
                last_ts_ns: event.header().ts_ns + 2_000_000,
                total: 3 << 20,
            };
            let mut buf = Vec::new();
            render::json_run(&mut buf, &clock, event, cgroup, Some(repeat)).expect("serializable");
            String::from_utf8(buf).expect("UTF-8")
        })
        .collect();
    // The other form of the counters: from the kernel's per-task counters (virtual size, no
    // user/kernel split), as a process started before the trace may have.
    let row = SummaryRow {
        pid: 29929,
        comm: "python3".to_owned(),
        cgroup: Some("/demo".to_owned()),
        exited: true,
        stats: ProcStats {
            flags: proc_flag::TASK_COUNTERS,
            vm_bytes: 73 << 20,
            ..stats()
        },
    };
    let mut losses = KernelLosses::default();
    losses.ring_full[kind::FAULT as usize] = 7;
    losses.proc_stats_full = 1;
    let pipeline = PipelineSnapshot {
        decoded: 240,
        decode_errors: 1,
        delivered: 231,
        queue_drops: 8,
    };
    // A row of `--by comm`, growing.
    let keys = super::Keys::new(super::GroupBy::Comm, crate::workload::Identifier::new(None));
    let (mut rows, _) = keys.group(vec![row], 1);
    rows[0].rss_growth_bytes_per_sec = Some(1_048_576.0);
    let mut buf = Vec::new();
    summary::json(
        &mut buf,
        &clock,
        2_360_000_000_000,
        super::GroupBy::Comm,
        &rows,
        &losses,
        &pipeline,
        11,
    )
    .expect("serializable");
    lines.extend(
        String::from_utf8(buf)
            .expect("UTF-8")
            .lines()
            .map(str::to_owned),
    );
    lines
}

#[test]
fn rendered_lines_match_the_golden_fixture() {
    let lines = rendered();
    if std::env::var_os("MEMTRACE_BLESS").is_some() {
        std::fs::write(FIXTURE_PATH, lines.join("\n") + "\n").expect("write the fixture");
    }
    let fixture = std::fs::read_to_string(FIXTURE_PATH).expect("read the fixture");
    let fixture: Vec<&str> = fixture.lines().collect();
    assert_eq!(
        lines.len(),
        fixture.len(),
        "one fixture line per rendered line"
    );
    for (line, expected) in lines.iter().zip(fixture) {
        let value: serde_json::Value = serde_json::from_str(line).expect("rendered JSON");
        let expected: serde_json::Value = serde_json::from_str(expected).expect("fixture JSON");
        assert_eq!(
            value, expected,
            "the renderer and the fixture disagree (a renamed, added or removed field?)"
        );
    }
}

#[test]
fn rendered_lines_deserialize_into_the_contract_and_back_unchanged() {
    let mut kinds = Vec::new();
    for line in rendered() {
        let value: serde_json::Value = serde_json::from_str(&line).expect("rendered JSON");
        let typed: TraceLine = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{line} does not fit TraceLine: {e}"));
        assert_eq!(value["kind"], typed.kind(), "{line}");
        // A field the type does not know would be dropped here; a changed value would differ.
        assert_eq!(
            serde_json::to_value(&typed).expect("serializable"),
            value,
            "{line}"
        );
        kinds.push(typed.kind());
    }
    assert_eq!(
        kinds,
        [
            "fault", "mmap", "munmap", "brk", "mremap", "reclaim", "oom", "exec", "exit",
            "summary", "losses"
        ],
        "every kind of line"
    );
}

#[test]
fn every_event_kind_is_covered() {
    let covered: Vec<u32> = events().iter().map(Event::kind).collect();
    let all: Vec<u32> = crate::events::KIND_NAMES.iter().map(|(_, k)| *k).collect();
    assert_eq!(covered, all);
}
