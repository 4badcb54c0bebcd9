#!/usr/bin/env bash
# Stop the cluster that start_cluster.sh started: cancel its jobs, stop slurmd and
# slurmctld (and munged, if start_cluster.sh started it) by their pid files, and
# remove the slurm.conf it wrote (kept with --keep-config). Packages stay installed.
set -uo pipefail

DIR=${FF_SLURM_DIR:-/var/spool/forbidden-facts-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# Written by forbidden-facts tests/slurm/start_cluster.sh; removed by stop_cluster.sh."
export PATH="$PATH:/usr/sbin:/sbin"

stop() {
  local pidfile=$1 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
  kill -TERM "$pid"
  for _ in $(seq 30); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "stop_cluster: stopped $pidfile ($pid)"; return 0; }
    sleep 1
  done
  echo "stop_cluster: $pidfile ($pid) still running after 30 s" >&2
  return 1
}

if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
  echo "stop_cluster: $CONF was not written by start_cluster.sh; leaving it alone" >&2
  exit 1
fi
rc=0
if [ -s "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
  scancel --full --quiet --partition=debug 2>/dev/null || true
fi
stop "$DIR/slurmd.pid" || rc=1
stop "$DIR/slurmctld.pid" || rc=1
if [ -e "$DIR/munged.ours" ]; then
  stop /run/munge/munged.pid || rc=1
  rm -f "$DIR/munged.ours"
fi
if [ "${1:-}" != "--keep-config" ] && [ -e "$CONF" ]; then
  rm -f "$CONF"
fi
exit $rc
