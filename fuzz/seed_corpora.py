#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs from the project's fixtures into fuzz/seeds/<target>/.

The kept corpora (fuzz/corpus/<target>/) are these seeds plus what the fuzzers found, minimized
with `cargo fuzz cmin`; rerun this only to re-seed after the fixtures change.
"""
import glob
import hashlib
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")
FIX = os.path.join(ROOT, "memtrace", "tests", "fixtures")
API = os.path.join(ROOT, "memtrace-api", "tests", "fixtures")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# Ring records: each kind at its struct size (memtrace-common's size asserts), with a comm.
HEADER = 4 * 4 + 8 + 16
SIZES = {1: HEADER + 32, 2: HEADER + 56, 3: HEADER + 56, 4: HEADER + 56, 5: HEADER + 56,
         6: HEADER + 32, 7: HEADER + 8 + 40 + 8 + 16, 8: HEADER + 8 + 96,
         9: HEADER + 208 + 24}
for kind, size in SIZES.items():
    header = struct.pack("<IIIIQ16s", kind, 4242, 4243, 1, 2354207467913, b"workload")
    body = bytearray(size - HEADER)
    if kind == 8:  # exec: old_pid, filename_len, filename
        body[:4 + 4 + 9] = struct.pack("<II", 4242, 9) + b"/bin/true"
    put("event_decode", header + bytes(body))

for path in glob.glob(os.path.join(FIX, "tracefs", "*", "events", "*", "*", "format")):
    put("tracefs_format", read(path))

for path in glob.glob(os.path.join(FIX, "**", "*"), recursive=True):
    if os.path.isfile(path) and ("/proc/" in path or path.endswith("cgroup")):
        put("proc_sys_text", read(path))
for path in glob.glob(os.path.join(FIX, "**", "memory.pressure"), recursive=True):
    put("proc_sys_text", read(path))

# Cgroup paths: every /proc/<pid>/cgroup path of the fixtures, and every fixture cgroup directory.
for path in glob.glob(os.path.join(FIX, "proc", "*", "cgroup")):
    for line in read(path).decode().splitlines():
        put("cgroup_identify", line.split(":", 2)[-1])
for layout in ("v1/memory", "v2", "unified-only/unified"):
    base = os.path.join(FIX, "cgroup", layout)
    for d, _, _ in os.walk(base):
        put("cgroup_identify", "/" + os.path.relpath(d, base).lstrip("."))

# Cgroup memory files: NUL-separated, v1 files then v2 files (see the target), per fixture cgroup.
V1 = ["memory.oom_control", "memory.stat", "memory.usage_in_bytes", "memory.limit_in_bytes"]
V2 = ["memory.max", "memory.current", "memory.swap.current", "memory.pressure", "memory.events"]
v1_dirs = [d for d, _, files in os.walk(os.path.join(FIX, "cgroup", "v1", "memory")) if files]
v2_dirs = [d for d, _, files in os.walk(os.path.join(FIX, "cgroup", "v2")) if "memory.max" in files]
for v1, v2 in zip(v1_dirs, v2_dirs * len(v1_dirs)):
    pieces = [read(os.path.join(v1, f)) if os.path.exists(os.path.join(v1, f)) else b"" for f in V1]
    pieces += [read(os.path.join(v2, f)) if os.path.exists(os.path.join(v2, f)) else b"" for f in V2]
    put("cgroup_memory_files", b"\0".join(pieces))

put("daemon_config", read(os.path.join(ROOT, "deploy", "daemon.toml")))
put("daemon_config", 'listen = "0.0.0.0:9000"\ntop = 7\nmax_cgroups = 9\ninterval = "2s"\n'
    'rate_window = "20s"\nmax_processes = 4096\noom_retention = "2h"\nmmap_calls = true\n'
    'host_root = "/host"\n')

for name in ("snapshot-v1.json", "oom-v1.json"):
    put("api_json", read(os.path.join(API, name)))
for line in read(os.path.join(API, "trace-v1.jsonl")).splitlines():
    put("api_json", line)
