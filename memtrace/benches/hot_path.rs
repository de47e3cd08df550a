//! Hot-path micro-benchmarks: what memtrace does in userspace per ring-buffer record and per
//! sampling tick. Run by `cargo xtask bench` (as `cargo bench -p memtrace --bench hot_path --
//! --quick`), or directly: `cargo bench -p memtrace --bench hot_path`.
use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use memtrace::{
    events::{
        Event,
        render::{self, Clock},
    },
    model::{Model, ModelConfig},
    procfs::ProcessInfo,
};
use memtrace_common::{
    COMM_LEN, EventHeader, ExitEvent, FaultEvent, MemSyscallEvent, ProcStats, kind,
};

/// The bytes of a `#[repr(C)]` record, as the ring buffer hands them over.
fn bytes_of<T>(value: &T) -> Vec<u8> {
    // SAFETY: a plain-old-data record viewed as bytes for its own size.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

fn header(kind: u32, pid: u32) -> EventHeader {
    let mut comm = [0u8; COMM_LEN];
    comm[..12].copy_from_slice(b"bench-faults");
    EventHeader {
        kind,
        pid,
        tid: pid,
        cpu: 1,
        ts_ns: 1_234_567_890_123,
        comm,
    }
}

fn mmap_record() -> Vec<u8> {
    bytes_of(&MemSyscallEvent {
        header: header(kind::MMAP, 4242),
        addr: 0,
        len: 128 << 20,
        ret: 0x7f12_3456_0000,
        prot: 3,
        flags: 0x22,
        fd: -1,
        ..Default::default()
    })
}

fn exit_record(pid: u32) -> Vec<u8> {
    bytes_of(&ExitEvent {
        header: header(kind::EXIT, pid),
        stats: ProcStats {
            faults_user: 655_360,
            faults_kernel: 12,
            faults_major: 1,
            mmap_calls: 20,
            mmap_bytes: 20 * (128 << 20),
            munmap_calls: 20,
            munmap_bytes: 20 * (128 << 20),
            ..Default::default()
        },
        tracked: 1,
        ..ExitEvent::default()
    })
}

fn fault_record() -> Vec<u8> {
    bytes_of(&FaultEvent {
        header: header(kind::FAULT, 4242),
        address: 0x7f12_3456_7000,
        ip: 0x5555_5555_1234,
        error_code: 6,
        user: 1,
        reserved: 0,
    })
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    for (name, record) in [
        ("mmap", mmap_record()),
        ("exit", exit_record(4242)),
        ("fault", fault_record()),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| Event::decode(black_box(&record)).expect("valid record"))
        });
    }
    g.finish();
}

fn render(c: &mut Criterion) {
    let clock = Clock::new();
    let fault = Event::decode(&fault_record()).expect("valid fault");
    let mmap = Event::decode(&mmap_record()).expect("valid mmap");
    let mut g = c.benchmark_group("render");
    g.throughput(Throughput::Elements(1));
    let mut json = Vec::with_capacity(512);
    g.bench_function("json_fault", |b| {
        b.iter(|| {
            json.clear();
            render::json(&mut json, &clock, black_box(&fault), None).expect("serializable");
            json.len()
        })
    });
    g.bench_function("json_mmap", |b| {
        b.iter(|| {
            json.clear();
            render::json(&mut json, &clock, black_box(&mmap), None).expect("serializable");
            json.len()
        })
    });
    let mut text = String::with_capacity(256);
    g.bench_function("text_fault", |b| {
        b.iter(|| {
            text.clear();
            render::text(&mut text, &clock, black_box(&fault), None);
            text.len()
        })
    });
    g.finish();
}

fn model(c: &mut Criterion) {
    const PROCESSES: u32 = 10_000;
    let mut g = c.benchmark_group("model");
    g.throughput(Throughput::Elements(1));
    // An exit event for a process the model never saw live: node totals only.
    let exit = Event::decode(&exit_record(999_999)).expect("valid exit");
    let wall = SystemTime::now();
    g.bench_function("observe_event_exit", |b| {
        b.iter_batched_ref(
            || Model::new(ModelConfig::default()),
            |m| m.observe_event(Instant::now(), wall, black_box(&exit)),
            BatchSize::SmallInput,
        )
    });
    // One sampling tick of 10,000 live processes (per-process cost via the throughput).
    let samples: Vec<(u32, ProcStats, Option<Arc<ProcessInfo>>)> = (1..=PROCESSES)
        .map(|pid| {
            let info = ProcessInfo {
                pid,
                comm: format!("worker-{}", pid % 97),
                cmdline: format!("/usr/bin/worker --id {pid}"),
                cgroup: Some(format!("/system.slice/worker-{}.service", pid % 50)),
                start_ticks: u64::from(pid),
            };
            let stats = ProcStats {
                faults_user: u64::from(pid) * 10,
                ..Default::default()
            };
            (pid, stats, Some(Arc::new(info)))
        })
        .collect();
    g.throughput(Throughput::Elements(u64::from(PROCESSES)));
    let mut m = Model::new(ModelConfig::default());
    let mut now = Instant::now();
    m.observe_processes(now, &samples);
    g.bench_function("observe_processes_10k_tick", |b| {
        b.iter(|| {
            now += Duration::from_secs(1);
            m.observe_processes(now, black_box(&samples));
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = decode, render, model
}
criterion_main!(benches);
