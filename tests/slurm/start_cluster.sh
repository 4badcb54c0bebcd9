#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this host, for tests/test_slurm.py and CI.
#
# Installs Debian's munge, slurmctld, slurmd and slurm-client where they are missing,
# writes /etc/slurm/slurm.conf (one node: this host; one partition: `debug`, the
# default), starts munged, slurmctld and slurmd as plain daemons (no systemd, no
# cgroups: proctrack/linuxproc and task/none work in a container) and waits until
# `srun hostname` runs. Safe to run again: daemons already running are kept.
#
# No accounting database: finished jobs stay visible to `squeue --states=all` for
# MinJobAge seconds, which is what the executor plugin's `squeue` status command reads.
#
# Exit status: 0 the cluster is up; 3 SLURM is not installed and cannot be installed
# here (not root, no apt-get, apt refused), so callers may skip; anything else: the
# cluster did not start (the output says why).
#
# Environment: FF_SLURM_DIR (default /var/spool/forbidden-facts-slurm) holds the
# state, spool, pid and log files.
set -euo pipefail

DIR=${FF_SLURM_DIR:-/var/spool/forbidden-facts-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# Written by forbidden-facts tests/slurm/start_cluster.sh; removed by stop_cluster.sh."
HOST=$(hostname -s)
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "start_cluster: $*"; }

# --- 1. packages -------------------------------------------------------------------
missing=()
[ -x /usr/sbin/munged ] || missing+=(munge)
[ -x /usr/sbin/slurmctld ] || missing+=(slurmctld)
[ -x /usr/sbin/slurmd ] || missing+=(slurmd)
command -v srun >/dev/null || missing+=(slurm-client)
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "cannot install ${missing[*]}: needs root and apt-get"
    exit 3
  fi
  t0=$EPOCHREALTIME
  export DEBIAN_FRONTEND=noninteractive
  # Containers usually forbid package scripts to start services (policy-rc.d); where
  # nothing forbids it, do so for this install: the daemons are started below.
  policy_added=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  apt_log=$(mktemp)
  apt_install() { apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1; }
  ok=1
  apt_install || { apt-get update -qq >>"$apt_log" 2>&1 && apt_install; } || ok=
  [ -z "$policy_added" ] || rm -f /usr/sbin/policy-rc.d
  if [ -z "$ok" ]; then
    tail -n 20 "$apt_log"
    log "apt-get could not install ${missing[*]}"
    exit 3
  fi
  rm -f "$apt_log"
  log "installed ${missing[*]} in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s"
fi

if [ "$(id -u)" != 0 ]; then
  log "SLURM is installed, but starting its daemons needs root"
  exit 3
fi

# --- 2. configuration --------------------------------------------------------------
if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
  log "$CONF exists and was not written by this script; not touching a real cluster"
  exit 1
fi
cpus=$(nproc)
total_mb=$(free -m | awk '/^Mem:/ {print $2}')
# Leave room for the OS and the daemons; slurmd refuses a node claiming more than it has.
mem_mb=$((total_mb - total_mb / 10 - 512))
mkdir -p "$DIR/ctld" "$DIR/d" /etc/slurm
new=$(mktemp)
cat >"$new" <<EOF
$MARK
ClusterName=forbidden-facts-ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: track processes by their parent, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# Finished jobs stay in squeue --states=all this long (the plugin's squeue status check).
MinJobAge=900
KillWait=10
InactiveLimit=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ -e "$CONF" ] && ! cmp -s "$new" "$CONF"; then
  log "configuration changed: restarting the SLURM daemons"
  "$(dirname "$0")/stop_cluster.sh" --keep-config >/dev/null || true
fi
mv "$new" "$CONF"
chmod 644 "$CONF"

# --- 3. daemons --------------------------------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
fi
if ! alive /run/munge/munged.pid; then
  runuser -u munge -- /usr/sbin/munged
  touch "$DIR/munged.ours" # stop_cluster.sh stops only a munged started here
fi
if ! alive "$DIR/slurmctld.pid"; then
  /usr/sbin/slurmctld
fi
if ! alive "$DIR/slurmd.pid"; then
  /usr/sbin/slurmd -N "$HOST"
fi

# --- 4. wait until a job runs -------------------------------------------------------
state=
for _ in $(seq 60); do
  state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
  case "$state" in
    idle | mix | alloc | comp) break ;;
    down* | drain* | drng*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
case "$state" in
  idle | mix | alloc | comp) ;;
  *)
    log "node $HOST is '${state:-not reported}' after 60 s"
    tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" 2>/dev/null || true
    exit 1
    ;;
esac
if ! out=$(timeout 60 srun -N1 -n1 -t 1 hostname 2>&1) || [ "$out" != "$HOST" ]; then
  log "srun hostname failed: $out"
  tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" 2>/dev/null || true
  exit 1
fi
log "cluster up: node $HOST ($cpus CPUs, $mem_mb MB), partition debug, logs in $DIR"
