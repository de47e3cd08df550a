#!/bin/sh
# What `cargo xtask vm-test` runs on each kernel: in a VM, and natively for this host's row.
# Usage: plan.sh BIN_DIR RESULTS_DIR. BIN_DIR holds memtrace, memtrace-workload, the privileged
# test binary `privileged`, `skip.txt` (tests not run here, one per line, with why) and
# `only.txt` (name filters of `--tests`, one per line; empty: all), and for
# --bench also xtask and release/ (release builds of memtrace, bench-faults and bench-mmap). Every step writes its output and its exit
# status to RESULTS_DIR; this script itself always exits 0 (the host judges the results).
set -u
BIN=$1
R=$2
mkdir -p "$R"
export MEMTRACE_BIN="$BIN/memtrace" MEMTRACE_WORKLOAD_BIN="$BIN/memtrace-workload" RUST_BACKTRACE=1
step() { echo "== $(date -u +%T) $*"; }

step facts
release=$(uname -r)
config=""
for c in "/boot/config-$release" "/lib/modules/$release/config"; do
    [ -r "$c" ] && config=$c && break
done
kconfig() { [ -n "$config" ] && grep -m1 "^$1=" "$config" | cut -d= -f2; }
tracefs=/sys/kernel/tracing
[ -e $tracefs/README ] || mount -t tracefs tracefs $tracefs 2>/dev/null
{
    echo "release=$release"
    echo "btf=$([ -r /sys/kernel/btf/vmlinux ] && echo yes || echo no)"
    echo "kprobe_events=$([ -e $tracefs/kprobe_events ] && echo yes || echo no)"
    echo "config_kprobes=$(kconfig CONFIG_KPROBES)"
    echo "config_fentry=$(kconfig CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS)"
    echo "config_bpf_lsm=$(kconfig CONFIG_BPF_LSM)"
    echo "cgroup_fs=$(stat -fc %T /sys/fs/cgroup)"
    echo "perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid)"
    echo "thp=$(sed 's/.*\[\(.*\)\].*/\1/' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
    echo "pid1=$(cat /proc/1/comm)"
} > "$R/facts.env"
cat "$R/facts.env"

step memtrace check
"$BIN/memtrace" check --json > "$R/check.json" 2> "$R/check.err"
echo $? > "$R/check.rc"
cat "$R/check.err"

step "memtrace trace (5 s)"
timeout 120 "$BIN/memtrace" trace --duration 5s > "$R/trace.out" 2> "$R/trace.err"
echo $? > "$R/trace.rc"

step "memtrace daemon (scrape once)"
"$BIN/memtrace" daemon --listen 127.0.0.1:19848 --allow-degraded > "$R/daemon.log" 2>&1 &
daemon=$!
ready=no
i=0
while [ $i -lt 120 ]; do
    if curl -sf http://127.0.0.1:19848/readyz > /dev/null 2>&1; then ready=yes; break; fi
    kill -0 $daemon 2>/dev/null || break
    sleep 1
    i=$((i + 1))
done
sleep 3
curl -sf http://127.0.0.1:19848/metrics > "$R/metrics.txt" 2>> "$R/daemon.log"
metrics_rc=$?
echo "ready=$ready" > "$R/daemon.env"
echo "metrics_rc=$metrics_rc" >> "$R/daemon.env"
kill -TERM $daemon 2>/dev/null
wait $daemon
echo "exit=$?" >> "$R/daemon.env"

step privileged tests
# As deploy/systemd/60-memtrace.conf and the README's install steps do: Debian's default 3
# refuses perf_event_open to a non-root memtrace, which some tests run (facts.env has the default).
sysctl -qw kernel.perf_event_paranoid=2
skips=""
while read -r name _; do
    case "$name" in ''|'#'*) continue ;; esac
    skips="$skips --skip $name"
done < "$BIN/skip.txt"
# `vm-test --tests`: name filters, one per line (none: every test).
only=""
[ -r "$BIN/only.txt" ] && only=$(cat "$BIN/only.txt")
# shellcheck disable=SC2086 # one word per --skip and per filter
"$BIN/privileged" --test-threads=1 --include-ignored $skips $only > "$R/tests.log" 2>&1
echo $? > "$R/tests.rc"
grep '^test result' "$R/tests.log"

if [ -x "$BIN/xtask" ]; then
    step "benchmarks 1, 2 and 11"
    "$BIN/xtask" bench --only 1,2,11 --bin-dir "$BIN/release" --runs "${BENCH_RUNS:-3}" \
        --fault-iters "${BENCH_FAULT_ITERS:-5}" --mmap-iters "${BENCH_MMAP_ITERS:-20000}" \
        --output "$R/bench.md" --json "$R/bench.json" > "$R/bench.log" 2>&1
    echo $? > "$R/bench.rc"
fi
step done
exit 0
