#!/bin/bash
# Start redis-server in a memory cgroup limited to LIMIT (v1), then fill it until the kernel
# OOM-kills it. Usage: redis-oom.sh start|fill|stop
set -u
CG=/sys/fs/cgroup/memory/demo-redis
PORT=${PORT:-6390}
LIMIT=${LIMIT:-256M}
case "$1" in
start)
  mkdir -p $CG
  echo 0 > $CG/memory.swappiness 2>/dev/null || true
  echo $LIMIT > $CG/memory.limit_in_bytes
  # the shell joins the cgroup, then execs redis: it starts inside
  bash -c "echo \$\$ > $CG/cgroup.procs; exec redis-server --port $PORT --save '' --appendonly no --daemonize no --enable-debug-command local" >/tmp/demo-redis.log 2>&1 &
  sleep 1; redis-cli -p $PORT ping ;;
fill)
  # grow steadily (~8 MiB/s) so top shows the growth before the kill
  for i in $(seq 1 200); do
    redis-cli -p $PORT DEBUG POPULATE 20000 "k$i" 400 >/dev/null 2>&1 || { echo "redis gone at step $i"; break; }
    sleep 1
  done ;;
stop)
  redis-cli -p $PORT shutdown nosave >/dev/null 2>&1; sleep 1
  rmdir $CG 2>/dev/null; true ;;
esac
