//! The unwinder on the input the kernel sends (registers and a copy of the stack from sp),
//! taken here from userspace: a C fixture built without frame pointers spins at a known depth;
//! the test stops it with ptrace, reads its registers and stack, unwinds and symbolizes.
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::*;
use crate::profile::capture::{Capture, CaptureStats, CapturedStack, SampleType};
use crate::profile::symbolize::{FrameKind, Symbolizer};

const SOURCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/profile/testdata/unwind_fixture.c"
);

/// The chain the fixture spins in, leaf first.
const CHAIN: [&str; 6] = [
    "spin_here",
    "chain_d",
    "chain_c",
    "chain_b",
    "chain_a",
    "main",
];

/// Stack bytes copied from sp, as a collector's snapshot would be (bounded by the mapping).
const SNAPSHOT_BYTES: u64 = 16 * 1024;

fn gcc(args: &[&str], output: &Path) {
    let status = Command::new("gcc")
        .args(args)
        .arg("-o")
        .arg(output)
        .status()
        .expect("gcc runs (TEST_APT_PACKAGES has it)");
    assert!(status.success(), "gcc {args:?} failed");
}

/// The fixture in one piece, without frame pointers.
fn build_without_frame_pointers(dir: &Path) -> PathBuf {
    let binary = dir.join("no-fp");
    gcc(&["-O2", "-g", "-fomit-frame-pointer", SOURCE], &binary);
    binary
}

/// The leaf with `.eh_frame`, its callers with frame pointers and no unwind tables.
fn build_callers_with_frame_pointers_only(dir: &Path) -> PathBuf {
    let (spin, chain, binary) = (
        dir.join("spin.o"),
        dir.join("chain.o"),
        dir.join("fp-callers"),
    );
    gcc(&["-O2", "-g", "-c", "-DSPIN_PART", SOURCE], &spin);
    let chain_flags = [
        "-O2",
        "-g",
        "-c",
        "-DCHAIN_PART",
        "-fno-omit-frame-pointer",
        "-fno-asynchronous-unwind-tables",
        "-fno-unwind-tables",
        SOURCE,
    ];
    gcc(&chain_flags, &chain);
    gcc(&[spin.to_str().unwrap(), chain.to_str().unwrap()], &binary);
    binary
}

/// The fixture, spinning in `spin_here`.
struct Spinning(Child);

impl Spinning {
    fn start(binary: &Path) -> Self {
        let mut child = Command::new(binary).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let spins = line
            .strip_prefix("ready 0x")
            .and_then(|address| u64::from_str_radix(address.trim(), 16).ok())
            .unwrap_or_else(|| panic!("the fixture said {line:?}"));
        // Once the counter moves the thread is in spin_here's loop, and stays there.
        let mem = File::open(format!("/proc/{}/mem", child.id())).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut counter = [0; 8];
        while u64::from_ne_bytes(counter) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the fixture never spun"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
            mem.read_exact_at(&mut counter, spins).unwrap();
        }
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Stops the thread with ptrace, copies its registers and the stack from sp (as far as the
    /// stack mapping goes, at most [`SNAPSHOT_BYTES`]), and lets it run again.
    fn snapshot(&self) -> (UserRegs, Vec<u8>) {
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        // SAFETY: PTRACE_ATTACH takes no pointers; waitpid writes to a local.
        unsafe {
            assert_eq!(
                libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0),
                0,
                "{}",
                std::io::Error::last_os_error()
            );
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, libc::__WALL), pid);
            assert!(libc::WIFSTOPPED(status));
        }
        // SAFETY: user_regs_struct is plain data; PTRACE_GETREGS fills it whole.
        let raw = unsafe {
            let mut raw: libc::user_regs_struct = std::mem::zeroed();
            let result = libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut raw as *mut _);
            assert_eq!(result, 0, "{}", std::io::Error::last_os_error());
            raw
        };
        let regs = UserRegs {
            ip: raw.rip,
            sp: raw.rsp,
            bp: raw.rbp,
        };
        let stack_end = stack_mapping_end(self.pid(), regs.sp);
        let length = (stack_end - regs.sp).min(SNAPSHOT_BYTES);
        let mut stack = vec![0; usize::try_from(length).unwrap()];
        let mem = File::open(format!("/proc/{pid}/mem")).unwrap();
        mem.read_exact_at(&mut stack, regs.sp).unwrap();
        // SAFETY: PTRACE_DETACH takes no pointers.
        unsafe {
            assert_eq!(libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0), 0);
        }
        (regs, stack)
    }
}

impl Drop for Spinning {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stack_mapping_end(pid: u32, sp: u64) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .find_map(|line| {
            let (start, rest) = line.split_once('-')?;
            let end = rest.split_whitespace().next()?;
            let (start, end) = (
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            );
            (start..end).contains(&sp).then_some(end)
        })
        .expect("sp is in a mapping")
}

/// The function names of `addresses` (leaf first), through the symbolizer.
fn function_names(pid: u32, addresses: &[u64]) -> Vec<String> {
    let capture = Capture {
        target: format!("pid {pid}"),
        sampling: "one snapshot".to_owned(),
        sample_types: vec![SampleType {
            name: "samples",
            unit: "count",
        }],
        default_sample_type: 0,
        stacks: vec![CapturedStack {
            pid,
            comm: "unwind-fixture".to_owned(),
            user: addresses.to_vec(),
            user_end: StackEnd::Complete,
            kernel: vec![],
            values: vec![1],
            labels: vec![],
        }],
        stats: CaptureStats::default(),
        started_unix_ms: 0,
        duration_ms: 0,
    };
    let profile = Symbolizer::new().symbolize(&capture).unwrap();
    profile.stacks[0]
        .frames
        .iter()
        .filter(|frame| frame.kind == FrameKind::User && !frame.inlined)
        .map(|frame| frame.display_name())
        .collect()
}

fn assert_whole_chain(binary: &Path) {
    let spinning = Spinning::start(binary);
    let (regs, stack) = spinning.snapshot();
    let (addresses, end) = Unwinder::new().unwind(spinning.pid(), regs, &stack, 64);
    let names = function_names(spinning.pid(), &addresses);
    assert_eq!(addresses[0], regs.ip, "the leaf is the instruction pointer");
    assert_eq!(names[..CHAIN.len()], CHAIN, "{names:?}");
    assert_eq!(end, StackEnd::Complete, "{names:?}");
    assert_eq!(
        names.last().map(String::as_str),
        Some("_start"),
        "{names:?}"
    );
}

#[test]
fn a_binary_without_frame_pointers_unwinds_from_eh_frame() {
    let dir = tempfile::tempdir().unwrap();
    assert_whole_chain(&build_without_frame_pointers(dir.path()));
}

/// framehop walks a return address that no `.eh_frame` entry covers by frame pointers (a leaf
/// without one it takes for a stub that just returns, so the leaf here has unwind tables).
#[test]
fn callers_without_unwind_tables_fall_back_to_frame_pointers() {
    let dir = tempfile::tempdir().unwrap();
    assert_whole_chain(&build_callers_with_frame_pointers_only(dir.path()));
}

#[test]
fn the_walk_ends_where_the_snapshot_or_the_depth_limit_does() {
    let dir = tempfile::tempdir().unwrap();
    let spinning = Spinning::start(&build_without_frame_pointers(dir.path()));
    let (regs, stack) = spinning.snapshot();
    let mut unwinder = Unwinder::new();

    let (addresses, end) = unwinder.unwind(spinning.pid(), regs, &stack, 3);
    assert_eq!(end, StackEnd::DepthLimit);
    assert_eq!(function_names(spinning.pid(), &addresses), CHAIN[..3]);

    // spin_here's frame holds 64 bytes of locals: 16 bytes of stack do not reach its caller.
    let (addresses, end) = unwinder.unwind(spinning.pid(), regs, &stack[..16], 64);
    assert_eq!(end, StackEnd::SnapshotEnd);
    assert_eq!(addresses, [regs.ip]);

    assert_eq!(
        unwinder.unwind(spinning.pid(), regs, &stack, 0),
        (vec![], StackEnd::DepthLimit)
    );
}

#[test]
fn an_address_without_unwind_information_ends_the_walk_and_keeps_its_frame() {
    let dir = tempfile::tempdir().unwrap();
    let spinning = Spinning::start(&build_without_frame_pointers(dir.path()));
    let (regs, stack) = spinning.snapshot();
    // The stack itself is no code: as a JIT's or an anonymous mapping's address would be.
    let anonymous = UserRegs {
        ip: regs.sp,
        ..regs
    };
    let (addresses, end) = Unwinder::new().unwind(spinning.pid(), anonymous, &stack, 64);
    assert_eq!(addresses, [regs.sp]);
    assert_eq!(end, StackEnd::NoUnwindInfo { address: regs.sp });
}

#[test]
fn unwinder_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Unwinder>();
}
