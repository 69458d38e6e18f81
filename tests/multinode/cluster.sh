#!/usr/bin/env bash
# tests/multinode/cluster.sh — a throwaway cluster of 2 to 9 "nodes" on this one machine, for
# running dring across nodes for real: each node is a network namespace with its own address on a
# private bridge and its own hostname (a UTS namespace per process started on it), with the other
# nodes' names in its /etc/hosts; one munged and slurmctld in the root namespace (on the bridge
# address), one slurmd per node; an rsh agent and a host file so that `mpirun` starts ranks on the
# nodes over TCP without ssh. Every file is in DIR. Needs root. Guide: docs/multinode.md.
#   start DIR [--nodes N]   build the cluster (default 2 nodes); prints `. DIR/env.sh`
#   stop DIR                stop its jobs and daemons, remove the namespaces and the bridge
#                           (also after a start that failed half way)
#   exec DIR NODE CMD...    run CMD on NODE (in its namespace, under its hostname, TMPDIR of its own)
# Exit status 77 when this machine cannot do it (not root, no network namespaces, no SLURM/munge).
# Usage: tests/multinode/cluster.sh start|stop DIR [--nodes N] | exec DIR NODE CMD...
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
action=${1:?usage: cluster.sh start|stop DIR [--nodes N] | exec DIR NODE CMD...}
dir=${2:?usage: cluster.sh start|stop DIR [--nodes N] | exec DIR NODE CMD...}
shift 2
self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")

# The cluster's names, from DIR/cluster.vars (written before anything is created, so that stop
# can undo a start that failed half way): id, subnet (a.b.c), nodes.
load() {
  [ -f "$dir/cluster.vars" ] || return 1
  # shellcheck source=/dev/null
  . "$dir/cluster.vars"
  bridge=dmn${id}br
}
ns_of() { echo "dmn${id}-$1"; }           # namespace of node NAME
node_names() { local i; for i in $(seq "$nodes"); do echo "node$i"; done; }

stop_pids() {  # stop_pids PID...: TERM to all, up to 10 s for them to end, then KILL
  local pid alive
  kill "$@" 2>/dev/null || true
  for _ in $(seq 50); do
    alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && return 0
    sleep 0.2
  done
  kill -9 "$@" 2>/dev/null || true
}

stop() {
  load || return 0
  local name ns group pids
  if [ -f "$dir/ctld.bgpid" ] && kill -0 "$(cat "$dir/ctld.bgpid")" 2>/dev/null; then
    SLURM_CONF=$dir/slurm.conf scancel --quiet --partition=nodes 2>/dev/null || true
    for _ in $(seq 50); do
      [ -z "$(SLURM_CONF=$dir/slurm.conf squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  # The slurmds together, then slurmctld, then munged (by the process ids recorded at start).
  for group in "$(node_names)" ctld munged; do
    pids=()
    for name in $group; do
      [ -f "$dir/$name.bgpid" ] && pids+=("$(cat "$dir/$name.bgpid")")
    done
    [ "${#pids[@]}" -gt 0 ] && stop_pids "${pids[@]}"
    for name in $group; do rm -f "$dir/$name.bgpid"; done
  done
  for name in $(node_names); do
    ns=$(ns_of "$name")
    if [ -e "/run/netns/$ns" ]; then
      # Whatever still runs on the node (a step daemon, an orted): all of it was started here.
      mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null || true)
      [ "${#pids[@]}" -gt 0 ] && stop_pids "${pids[@]}"
      ip netns del "$ns" 2>/dev/null || true
    fi
    ip link del "dmn${id}${name#node}" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
}

skip() { echo "SKIP: $*" >&2; exit 77; }

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

start() {
  local nodes_wanted=2
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes) nodes_wanted=${2:?--nodes N}; shift 2 ;;
      *) echo "cluster: error: unknown option $1" >&2; exit 2 ;;
    esac
  done
  if ! [[ "$nodes_wanted" =~ ^[2-9]$ ]]; then
    echo "cluster: error: --nodes $nodes_wanted: give 2 to 9" >&2
    exit 2
  fi
  [ "$(id -u)" -eq 0 ] || skip "a multi-node cluster of namespaces needs root"
  local b
  for b in ip unshare munged munge slurmctld slurmd sbatch srun squeue scancel sinfo mpirun; do
    command -v "$b" >/dev/null 2>&1 || skip "$b not found (launch/install-deps.sh slurm-wlm munge)"
  done
  [ -f "$dir/cluster.vars" ] && { echo "cluster: error: $dir already holds a cluster; stop it first" >&2; exit 1; }
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  chmod 755 "$dir"
  local up=$dir
  while [ "$up" != / ]; do  # munged wants its socket reachable by everyone
    up=$(dirname "$up")
    if [ "$(( 0$(stat -c %a "$up") & 01 ))" -eq 0 ]; then
      echo "cluster: error: $up is not searchable by others (chmod o+x), so munged refuses its socket" >&2
      exit 1
    fi
  done

  # Names unique to this cluster (several may run at once): an id for the namespaces and links,
  # and a private /24 in 10.213.0.0/16 that no route of this machine uses yet.
  local try
  id=$(printf '%04x' $((RANDOM % 65536)))
  for try in $(seq 50); do
    subnet=10.213.$((RANDOM % 250 + 1))
    grep -q "^${subnet//./\\.}\." <<<"$(ip -4 route show)" || break  # not `ip | grep -q`: SIGPIPE under pipefail
    [ "$try" -eq 50 ] && { echo "cluster: error: no free /24 in 10.213.0.0/16" >&2; exit 1; }
  done
  nodes=$nodes_wanted
  printf 'id=%s\nsubnet=%s\nnodes=%s\n' "$id" "$subnet" "$nodes" >"$dir/cluster.vars"
  load
  trap 'status=$?; [ "$status" -eq 0 ] || stop' EXIT  # a start that fails undoes itself

  # The network: a bridge with the controller's address .254, a veth pair per node.
  if ! ip netns add "$(ns_of node1)" 2>"$dir/netns.err"; then
    skip "cannot create a network namespace ($(head -1 "$dir/netns.err"))"
  fi
  if ! nsenter --net="/run/netns/$(ns_of node1)" -- unshare --uts --mount true 2>"$dir/netns.err"; then
    skip "cannot create UTS and mount namespaces ($(head -1 "$dir/netns.err"))"
  fi
  ip link add "$bridge" type bridge
  ip addr add "$subnet.254/24" dev "$bridge"
  ip link set "$bridge" up
  local i name ns hosts
  hosts=$(printf '127.0.0.1 localhost\n%s.254 %s\n' "$subnet" "$(hostname -s)"
          for i in $(seq "$nodes"); do echo "$subnet.$i node$i"; done)
  printf '%s\n' "$hosts" >"$dir/hosts"
  for i in $(seq "$nodes"); do
    name=node$i
    ns=$(ns_of "$name")
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    ip link add "dmn${id}$i" type veth peer name eth0 netns "$ns"
    ip link set "dmn${id}$i" master "$bridge" up
    ip -n "$ns" addr add "$subnet.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    mkdir -p "$dir/tmp/$name" "$dir/spool/$name"
  done

  # mpirun without ssh: the rsh agent runs Open MPI's daemon on the node named by its first argument.
  cat >"$dir/agent.sh" <<EOF
#!/bin/sh
# Open MPI's rsh agent for this cluster: agent.sh NODE COMMAND... (a shell command line, as ssh takes).
node=\$1
shift
exec "$self" exec "$dir" "\$node" /bin/sh -c "\$*"
EOF
  chmod 755 "$dir/agent.sh"
  : >"$dir/hostfile"
  for i in $(seq "$nodes"); do echo "node$i slots=2" >>"$dir/hostfile"; done
  cat >"$dir/env.sh" <<EOF
# Generated by tests/multinode/cluster.sh: the clients' view of the cluster in $dir.
export SLURM_CONF=$dir/slurm.conf
export PATH=\$PATH:/usr/sbin
# Open MPI: start daemons through the agent, keep its TCP traffic on the bridge's subnet (inside a
# node that is its eth0 anyway; this also holds for a run from the root namespace).
export OMPI_MCA_plm_rsh_agent=$dir/agent.sh
export OMPI_MCA_oob_tcp_if_include=$subnet.0/24
export OMPI_MCA_btl_tcp_if_include=$subnet.0/24
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
EOF

  # munged (one key, one socket for every node: the file system is shared).
  mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
  chmod 700 "$dir/munge"
  head -c 1024 /dev/urandom >"$dir/munge/munge.key"
  chmod 400 "$dir/munge/munge.key"
  local socket=$dir/munge.socket
  munged -F --socket="$socket" --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
    --seed-file="$dir/munge/munged.seed" --log-file="$dir/log/munged.log" >"$dir/log/munged.out" 2>&1 &
  echo $! >"$dir/munged.bgpid"
  for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.2; done
  if ! munge -S "$socket" -n </dev/null | unmunge -S "$socket" >/dev/null 2>&1; then
    echo "cluster: error: munged did not start; see $dir/log/munged.out" >&2
    exit 1
  fi

  # SLURM: slurmctld in the root namespace on the bridge address, slurmd on every node. Whatever a
  # node keeps in files has a folder per node (%n): spool, TmpFS (where PMIx puts its per-step
  # folders, one name on every node). The first job id is random so that two clusters on this
  # machine never share a job's scratch names.
  local ctld_port
  ctld_port=$(free_port)
  {
    cat <<EOF
# Generated by tests/multinode/cluster.sh: $nodes nodes on $subnet.0/24, everything under $dir.
ClusterName=dringmn
SlurmctldHost=$(hostname -s)($subnet.254)
SlurmctldPort=$ctld_port
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
TmpFS=$dir/tmp/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/spool/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
FirstJobId=$((RANDOM * 10 + 1000))
SlurmctldTimeout=30
SlurmdTimeout=30
EOF
    for i in $(seq "$nodes"); do
      echo "NodeName=node$i NodeAddr=$subnet.$i CPUs=$(nproc) State=UNKNOWN"
    done
    echo "PartitionName=nodes Nodes=node[1-$nodes] Default=YES MaxTime=INFINITE State=UP"
  } >"$dir/slurm.conf"
  export SLURM_CONF=$dir/slurm.conf
  slurmctld -D -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 &
  echo $! >"$dir/ctld.bgpid"
  for i in $(seq "$nodes"); do
    "$self" exec "$dir" "node$i" slurmd -D -f "$SLURM_CONF" -N "node$i" >"$dir/log/slurmd-node$i.out" 2>&1 &
    echo $! >"$dir/node$i.bgpid"
  done
  local up_nodes=0
  for _ in $(seq 150); do
    up_nodes=$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)
    [ "$up_nodes" -eq "$nodes" ] && break
    sleep 0.2
  done
  if [ "$up_nodes" -ne "$nodes" ]; then
    echo "cluster: error: $up_nodes of the $nodes nodes came up idle in 30 s; see $dir/log/" >&2
    sinfo -N >&2 2>/dev/null || true
    tail -5 "$dir/log/slurmctld.log" "$dir/log"/slurmd-node*.log >&2 2>/dev/null || true
    exit 1
  fi
  # Node to node over the bridge, by name: node1 reaches every other node's slurmd.
  for i in $(seq 2 "$nodes"); do
    if ! "$self" exec "$dir" node1 /usr/bin/python3 -c \
        'import socket, sys; socket.create_connection((sys.argv[1], 6818), 5).close()' "node$i" 2>"$dir/connect.err"; then
      echo "cluster: error: node1 cannot reach node$i ($subnet.$i) over the bridge: $(tail -1 "$dir/connect.err")" >&2
      exit 1
    fi
  done
  trap - EXIT
  echo ". $dir/env.sh"
}

run_on() {  # run_on NODE CMD...: exec CMD in NODE's namespace with its hostname
  local node=${1:?usage: cluster.sh exec DIR NODE CMD...}
  shift
  [ $# -gt 0 ] || { echo "usage: cluster.sh exec DIR NODE CMD..." >&2; exit 2; }
  load || { echo "cluster: error: no cluster in $dir" >&2; exit 2; }
  local ns
  ns=$(ns_of "$node")
  [ -e "/run/netns/$ns" ] || { echo "cluster: error: no node '$node' in $dir" >&2; exit 2; }
  # Not `ip netns exec`: it remounts /sys, which hides the cgroup file system slurmd needs. A
  # mount namespace of its own instead, for the cluster's /etc/hosts. nsenter and unshare exec
  # without forking, so the caller's process id becomes CMD's.
  exec nsenter --net="/run/netns/$ns" -- unshare --uts --mount --propagation private \
    /bin/sh -c 'mount --bind "$1" /etc/hosts && hostname "$0" && shift && exec "$@"' "$node" "$dir/hosts" \
    env TMPDIR="$dir/tmp/$node" "$@"
}

case "$action" in
  start) start "$@" ;;
  stop) stop ;;
  exec) run_on "$@" ;;
  *) echo "usage: cluster.sh start|stop DIR [--nodes N] | exec DIR NODE CMD..." >&2; exit 2 ;;
esac
