#!/usr/bin/env bash
# Local services for the cluster tests (`make services`, `pytest -m cluster`): a single-node SLURM cluster (munge,
# slurmctld, slurmd) and a PostgreSQL 15 server for Optuna studies, all on this machine, localhost only.
#
#   scripts/services.sh up       install slurm-wlm, munge, postgresql if missing (apt-get, as root), start everything,
#                                wait until the node is idle and PostgreSQL accepts connections; prints the study URL
#   scripts/services.sh down     stop what `up` started and remove its state folder
#   scripts/services.sh status   what runs (exit 0: everything up, 1: not)
#
# State, spool, logs and pid files live in $MMREP_SERVICES_DIR (default /tmp/mmrep-services); /etc/slurm/slurm.conf
# is written by `up` (so srun/sbatch work from any shell) and restored by `down` when one existed before.
# PostgreSQL listens on 127.0.0.1:$MMREP_POSTGRES_PORT (55432) only, its socket in the state folder; database `optuna`.
# Exit codes: 0 ok, 1 a service did not start (its log is named), 3 the packages are missing and cannot be installed
# (or not root): one line says why.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"   # munged, slurmctld, slurmd
DIR=${MMREP_SERVICES_DIR:-/tmp/mmrep-services}
DIR=${DIR%/}
PG_PORT=${MMREP_POSTGRES_PORT:-55432}
PG_DB=optuna
PG_URL="postgresql://postgres@127.0.0.1:${PG_PORT}/${PG_DB}"
PG_BIN=/usr/lib/postgresql/15/bin
SLURM_CONF=/etc/slurm/slurm.conf
MARK="# written by mmrep scripts/services.sh"
LOCK="${DIR}.lock"   # beside the folder: `down` removes the folder
NODE=$(hostname -s)
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)   # nproc obeys OMP_NUM_THREADS (set in test workers)

say() { echo "services: $*"; }
die() { echo "services: error: $*" >&2; exit "${2:-1}"; }

# --- state -----------------------------------------------------------------------------------------------------------
running() {   # running PID: alive and not a zombie (PID 1 here may not reap the daemons it inherits)
    kill -0 "$1" 2>/dev/null && ! grep -q '^[^)]*) Z' "/proc/$1/stat" 2>/dev/null
}
pid_alive() { [ -s "$1" ] && running "$(cat "$1")"; }
munge_ok() { command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
ours_conf() { [ -f "$SLURM_CONF" ] && grep -qF "$MARK" "$SLURM_CONF"; }
node_state() { sinfo -h -N -o '%T' 2>/dev/null; }
node_ready() { node_state | grep -qxE 'idle|mixed|allocated'; }
slurm_ok() {   # our daemons run and the node is not down (it may be busy: jobs running, completing, ...)
    local state
    ours_conf && pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid" && state=$(node_state) \
        && [ -n "$state" ] && ! grep -qiE 'down|drain|fail|unknown|\*' <<<"$state"
}
pg_ok() { [ -x "$PG_BIN/pg_isready" ] && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d "$PG_DB" -U postgres; }
wait_for() {   # wait_for SECONDS WHAT COMMAND...: poll every 0.2 s
    local seconds=$1 what=$2; shift 2
    local end=$((SECONDS + seconds))
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.2
    done
}

# --- install ---------------------------------------------------------------------------------------------------------
have_packages() {
    command -v munged >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v srun >/dev/null && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ]
}

install_packages() {
    have_packages && return 0
    local why=""
    if [ "$(id -u)" != 0 ]; then
        why="not root"
    elif ! command -v apt-get >/dev/null; then
        why="no apt-get on this machine"
    else
        say "installing slurm-wlm, munge, postgresql with apt-get (about a minute) ..."
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >"$DIR.apt.log" 2>&1 || true   # stale lists may still do
        if ! apt-get install -y -qq --no-install-recommends slurm-wlm munge postgresql >>"$DIR.apt.log" 2>&1; then
            why="apt-get install failed (see $DIR.apt.log)"
        fi
    fi
    have_packages && return 0
    echo "services: cannot install slurm-wlm, munge and postgresql (${why:-packages still missing after apt-get}): install them as root (Debian/Ubuntu: apt-get install slurm-wlm munge postgresql) and retry" >&2
    exit 3
}

# --- munge -----------------------------------------------------------------------------------------------------------
start_munge() {
    if munge_ok; then return 0; fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge "$DIR/munge"
    chown munge:munge /run/munge "$DIR/munge"
    chmod 755 /run/munge
    chmod 700 "$DIR/munge"
    su -s /bin/sh munge -c "munged --pid-file=$DIR/munge/munged.pid --log-file=$DIR/munge/munged.log --seed-file=$DIR/munge/munged.seed" \
        </dev/null >/dev/null 2>&1 9>&- || die "munged did not start (log: $DIR/munge/munged.log)"
    touch "$DIR/started.munged"
    wait_for 10 munge munge_ok || die "munge does not answer (log: $DIR/munge/munged.log)"
}

# --- SLURM -----------------------------------------------------------------------------------------------------------
write_slurm_conf() {
    mkdir -p /etc/slurm "$DIR/slurmctld" "$DIR/slurmd"
    if [ -f "$SLURM_CONF" ] && ! ours_conf && [ ! -f "$SLURM_CONF.mmrep-saved" ]; then
        mv "$SLURM_CONF" "$SLURM_CONF.mmrep-saved"
        say "kept the existing $SLURM_CONF as $SLURM_CONF.mmrep-saved (down restores it)"
    fi
    local mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 3 / 4 ))
    [ "$mem" -gt 8000 ] && mem=8000
    cat >"$SLURM_CONF.tmp" <<EOF
$MARK: a single-node cluster on localhost; state in $DIR
ClusterName=mmrep
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MessageTimeout=10
KillWait=30
InactiveLimit=0
MinJobAge=300
StateSaveLocation=$DIR/slurmctld
SlurmdSpoolDir=$DIR/slurmd
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$SLURM_CONF.tmp" "$SLURM_CONF"
}

start_slurm() {
    if slurm_ok; then return 0; fi
    stop_slurm   # a half-started cluster (e.g. slurmd died): start afresh
    write_slurm_conf
    slurmctld -i </dev/null >/dev/null 2>&1 9>&- || die "slurmctld did not start (log: $DIR/slurmctld.log)"
    touch "$DIR/started.slurmctld"
    wait_for 20 slurmctld scontrol ping >/dev/null 2>&1 || die "slurmctld does not answer (log: $DIR/slurmctld.log)"
    slurmd -N "$NODE" </dev/null >/dev/null 2>&1 9>&- || die "slurmd did not start (log: $DIR/slurmd.log)"
    touch "$DIR/started.slurmd"
    if ! wait_for 30 "node idle" node_ready; then
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        wait_for 10 "node idle" node_ready \
            || die "node $NODE is not idle: $(sinfo -h -N -o '%T %E' 2>&1) (logs: $DIR/slurmctld.log, $DIR/slurmd.log)"
    fi
}

stop_pids() {   # stop_pids PID...: SIGTERM, SIGKILL after 10 s; then wait (<= 5 s) until PID 1 has reaped them,
    local pids=("$@") pid    # so that `pgrep -x slurmctld` finds nothing once `down` returns
    [ ${#pids[@]} -gt 0 ] || return 0
    kill "${pids[@]}" 2>/dev/null || true
    alive() { for pid in "${pids[@]}"; do running "$pid" && return 0; done; return 1; }
    gone() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 1; done; return 0; }
    wait_for 10 "daemons to stop" eval '! alive' || { kill -9 "${pids[@]}" 2>/dev/null || true; }
    wait_for 5 "daemons to be reaped" gone || true
}

slurm_pids() {   # slurmd, slurmctld (pid files; by name when ours wrote slurm.conf: a state folder removed by hand)
    local file p
    for file in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do pid_alive "$file" && cat "$file"; done
    if ours_conf; then
        for p in $(pgrep -x slurmd || true) $(pgrep -x slurmctld || true) $(pgrep -x slurmstepd || true); do
            running "$p" && echo "$p"
        done
    fi
    return 0
}

cancel_jobs() {   # this cluster's jobs first: their steps would outlive slurmd
    if pid_alive "$DIR/slurmctld.pid" && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
        scancel --quiet -u root >/dev/null 2>&1 || true
        wait_for 15 "jobs to end" sh -c '! pgrep -x slurmstepd >/dev/null' || true
    fi
}

stop_slurm() { cancel_jobs; stop_pids $(slurm_pids | sort -u); }

restore_slurm_conf() {
    if [ -f "$SLURM_CONF.mmrep-saved" ]; then
        mv -f "$SLURM_CONF.mmrep-saved" "$SLURM_CONF"
        say "restored the earlier $SLURM_CONF"
    fi
}

# --- PostgreSQL ------------------------------------------------------------------------------------------------------
pg() { su -s /bin/sh postgres -c "$*"; }

start_postgres() {
    if pg_ok; then return 0; fi
    local data="$DIR/postgres/data"
    mkdir -p "$DIR/postgres"
    chown postgres:postgres "$DIR/postgres"
    chmod 700 "$DIR/postgres"
    if [ ! -s "$data/PG_VERSION" ]; then
        pg "$PG_BIN/initdb -D '$data' -A trust -U postgres --no-sync >'$DIR/postgres/initdb.log' 2>&1" \
            || die "initdb failed (log: $DIR/postgres/initdb.log)"
    fi
    pg "$PG_BIN/pg_ctl -D '$data' -l '$DIR/postgres/postgres.log' -w -t 30 \
        -o \"-c listen_addresses=127.0.0.1 -p $PG_PORT -k '$DIR/postgres' -c fsync=off\" start" </dev/null >/dev/null 2>&1 9>&- \
        || die "PostgreSQL did not start (log: $DIR/postgres/postgres.log)"
    touch "$DIR/started.postgres"
    wait_for 30 postgres "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres \
        || die "PostgreSQL does not accept connections (log: $DIR/postgres/postgres.log)"
    if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc "select 1 from pg_database where datname='$PG_DB'" | grep -q 1; then
        psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "create database $PG_DB" >/dev/null \
            || die "cannot create database $PG_DB"
    fi
    wait_for 10 postgres pg_ok || die "database $PG_DB does not accept connections"
}

postgres_pid() {   # the postmaster (first line of postmaster.pid)
    local pid
    pid=$(head -1 "$DIR/postgres/data/postmaster.pid" 2>/dev/null || true)
    [ -n "$pid" ] && running "$pid" && echo "$pid"
    return 0
}

# --- commands --------------------------------------------------------------------------------------------------------
up() {
    if slurm_ok && pg_ok; then
        say "already up: SLURM node $NODE $(node_state), PostgreSQL on 127.0.0.1:$PG_PORT"
        echo "$PG_URL"
        return 0
    fi
    install_packages
    if [ "$(id -u)" != 0 ]; then
        echo "services: the daemons need root (munged as munge, slurmctld/slurmd as root, PostgreSQL as postgres): run as root" >&2
        exit 3
    fi
    mkdir -p "$DIR"
    chmod 755 "$DIR"   # PostgreSQL (user postgres) keeps its data in a subfolder
    start_munge
    start_slurm
    start_postgres
    say "up: SLURM node $NODE ($CPUS CPUs, partition debug), PostgreSQL on 127.0.0.1:$PG_PORT (state in $DIR)"
    echo "$PG_URL"
}

down() {
    [ -d "$DIR" ] || ours_conf || { say "nothing to stop"; return 0; }
    # everything at once (SIGTERM: slurmd/slurmctld save state, postgres does a fast shutdown), then wait
    local slurm pg munged=""
    slurm=$(echo $(slurm_pids | sort -u))
    pg=$(postgres_pid)
    [ -f "$DIR/started.munged" ] && munged=$(pid_alive "$DIR/munge/munged.pid" && cat "$DIR/munge/munged.pid" || true)
    [ -n "$slurm" ] && cancel_jobs
    stop_pids $(slurm_pids | sort -u) $pg $munged
    [ -n "$slurm" ] && say "stopped slurmd, slurmctld ($slurm)"
    [ -n "$pg" ] && say "stopped PostgreSQL ($pg)"
    [ -n "$munged" ] && say "stopped munged ($munged)"
    restore_slurm_conf
    rm -rf "$DIR"
    say "down"
}

status() {
    local rc=0
    if pid_alive "$DIR/munge/munged.pid" || munge_ok; then say "munge: running"; else say "munge: stopped"; rc=1; fi
    if pid_alive "$DIR/slurmctld.pid"; then say "slurmctld: running (pid $(cat "$DIR/slurmctld.pid"))"; else say "slurmctld: stopped"; rc=1; fi
    if pid_alive "$DIR/slurmd.pid"; then
        say "slurmd: running (pid $(cat "$DIR/slurmd.pid")), node $NODE $(node_state || echo '?')"
    else say "slurmd: stopped"; rc=1; fi
    if pg_ok; then say "postgres: accepting connections at $PG_URL"; else say "postgres: stopped"; rc=1; fi
    return $rc
}

cmd=${1:-}
case "$cmd" in
    up|down)
        mkdir -p "$(dirname "$DIR")"
        exec 9>"$LOCK"
        flock 9   # one up/down at a time (parallel test workers)
        "$cmd"
        ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
