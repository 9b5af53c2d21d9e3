#!/usr/bin/env bash
# A real one-node Slurm cluster for the `slurm` tests: munge, slurmdbd on a MariaDB (submitit reads job
# states from accounting), slurmctld, slurmd. Idempotent: what already runs is left alone. Needs root
# and apt (Debian's slurm-wlm); without them it says why and exits 0, and the slurm tests skip.
#   .ci/slurm.sh          install (if needed) and start
#   .ci/slurm.sh stop     stop what it started, in reverse order
set -uo pipefail

STATE=${SYNPRO_SLURM_STATE:-/var/lib/synpro-slurm}
DB_PORT=${SYNPRO_SLURM_DB_PORT:-3307}
HOST=$(hostname -s)

say() { echo "slurm.sh: $*"; }
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "${1:-start}" = stop ]; then
  for pid in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid "$STATE/mariadb.pid"; do
    running "$pid" && kill "$(cat "$pid")" && say "stopped $(basename "$pid" .pid)"
  done
  exit 0
fi

if [ "$(id -u)" != 0 ]; then say "not root: no Slurm here (the slurm tests will skip)"; exit 0; fi

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt/dpkg (a parallel CI step) instead of giving up on its lock at once.
  APT="apt-get -o DPkg::Lock::Timeout=300"
  { $APT install -y -qq --no-install-recommends slurmctld slurmd slurmdbd slurm-client munge >/dev/null 2>&1 ||
    { $APT update -qq >/dev/null 2>&1 &&
      $APT install -y -qq --no-install-recommends slurmctld slurmd slurmdbd slurm-client munge >/dev/null 2>&1; }; } ||
    { say "could not install Slurm with apt (the slurm tests will skip)"; exit 0; }
fi
command -v mariadbd >/dev/null || apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends mariadb-server >/dev/null 2>&1 ||
  { say "no MariaDB for Slurm's accounting (the slurm tests will skip)"; exit 0; }

mkdir -p "$STATE" /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
chown munge:munge /run/munge 2>/dev/null || true

# munge: the package made the key
if ! pgrep -u munge -x munged >/dev/null; then
  [ -f /etc/munge/munge.key ] || { mungekey -c 2>/dev/null || /usr/sbin/create-munge-key -f 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  su -s /bin/sh munge -c "/usr/sbin/munged" || { say "munged did not start"; exit 0; }
fi

# a private MariaDB for accounting (leaves any system one alone)
if ! running "$STATE/mariadb.pid"; then
  if [ ! -d "$STATE/mysql/mysql" ]; then
    mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql" --skip-test-db \
      --auth-root-authentication-method=normal >/dev/null 2>&1 ||
      { say "mariadb-install-db failed"; exit 0; }
  fi
  nohup mariadbd --no-defaults --user=root --datadir="$STATE/mysql" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --socket="$STATE/mariadb.sock" --pid-file="$STATE/mariadb.pid" >"$STATE/mariadb.log" 2>&1 &
  for _ in $(seq 50); do mariadb-admin --no-defaults -uroot --socket="$STATE/mariadb.sock" ping >/dev/null 2>&1 && break; sleep 0.2; done
fi
# slurmdbd logs in over TCP as root without a password
mariadb --no-defaults -uroot --socket="$STATE/mariadb.sock" -e "ALTER USER root@localhost IDENTIFIED BY '';
  CREATE USER IF NOT EXISTS root@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO root@'127.0.0.1';" >/dev/null 2>&1 ||
  { say "cannot reach the accounting MariaDB (see $STATE/mariadb.log)"; exit 0; }

CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
EOF
chmod 600 /etc/slurm/slurmdbd.conf
cat >/etc/slurm/slurm.conf <<EOF
ClusterName=synpro
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobRequeue=1
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

if ! running /run/slurmdbd.pid; then slurmdbd || { say "slurmdbd did not start (see /var/log/slurm/slurmdbd.log)"; exit 0; }; fi
for _ in $(seq 50); do timeout 3 sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
timeout 5 sacctmgr -n list cluster format=cluster 2>/dev/null | grep -qw synpro ||
  timeout 10 sacctmgr -i add cluster synpro >/dev/null 2>&1
if ! running /run/slurmctld.pid; then slurmctld || { say "slurmctld did not start (see /var/log/slurm/slurmctld.log)"; exit 0; }; fi
if ! running /run/slurmd.pid; then slurmd || { say "slurmd did not start (see /var/log/slurm/slurmd.log)"; exit 0; }; fi
for _ in $(seq 60); do
  case "$(timeout 3 sinfo -h -o %T 2>/dev/null)" in idle*|mix*|alloc*) say "up: $(sinfo -h -o '%P %D %T %c CPUs')"; exit 0;; esac
  sleep 0.2
done
say "the node did not become idle: $(timeout 3 sinfo -h -o %T 2>&1) (the slurm tests will skip)"
exit 0
