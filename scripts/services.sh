#!/usr/bin/env bash
# Make the services the tests talk to present, running and usable; idempotent.
#
#   MariaDB, PostgreSQL, Redis: install Debian's package when the server is missing, start the
#   server when it does not answer, wait until it is healthy, check the test credentials and
#   create the databases the tests expect.
#   etcd: installed only; tests start their own etcd on free ports (tests/support/etcd.py).
#   chromium: installed only (Debian's), for the admin UI tests driven by Playwright.
#
# Where the services are: the same DTMX_TEST_* variables tests/support/services.py reads
# (DTMX_TEST_MYSQL_HOST/PORT/USER/PASSWORD, DTMX_TEST_PG_HOST/PORT/USER/PASSWORD,
# DTMX_TEST_REDIS_URL). A service on a host other than this one is only checked, never
# installed or started.
#
# Credentials: the tests connect as MariaDB root with an empty password and as PostgreSQL
# `postgres` with trust auth over 127.0.0.1. A server this script installed itself (a fresh
# machine) is configured that way. A server that was already there and does not accept those
# credentials is left untouched and the script stops with a hint, unless
# DTMX_TEST_CONFIGURE_SERVICES=1 allows configuring it the same way.
set -euo pipefail

# Daemons started here must not inherit the caller's open files: run under `flock`, a
# database server would hold the lock for as long as it lives.
for fd_path in /proc/$$/fd/*; do
  fd=${fd_path##*/}
  if [[ $fd =~ ^[0-9]+$ ]] && (( fd > 2 && fd != 255 )); then  # 255: bash reads this script
    eval "exec $fd>&-" 2>/dev/null || true
  fi
done

MYSQL_HOST=${DTMX_TEST_MYSQL_HOST:-127.0.0.1}
MYSQL_PORT=${DTMX_TEST_MYSQL_PORT:-3306}
MYSQL_USER=${DTMX_TEST_MYSQL_USER:-root}
MYSQL_PASSWORD=${DTMX_TEST_MYSQL_PASSWORD:-}
PG_HOST=${DTMX_TEST_PG_HOST:-127.0.0.1}
PG_PORT=${DTMX_TEST_PG_PORT:-5432}
PG_USER=${DTMX_TEST_PG_USER:-postgres}
PG_PASSWORD=${DTMX_TEST_PG_PASSWORD:-}
REDIS_URL=${DTMX_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
MYSQL_DATABASES=(dtm dtm_barrier dtmx_test_store)

# Marks the servers this script installed: only those (or any, with the opt-in) get configured.
STATE_DIR=/var/lib/dtmx-test-services
WAIT_SECONDS=${DTMX_TEST_SERVICE_WAIT:-60}

export DEBIAN_FRONTEND=noninteractive
# A cluster that pg_createcluster makes takes its encoding from the locale: UTF8, not SQL_ASCII.
export LANG=${LANG:-C.UTF-8}
if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo -n); fi

log() { printf '%s\n' "$*"; }
die() { printf 'services.sh: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
is_local() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 || $1 == "[::1]" ]]; }

# wait_for SECONDS COMMAND...: poll COMMAND every 0.2 s until it succeeds or time runs out.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# --- installing --------------------------------------------------------------------------
APT_UPDATED=0
POLICY_RC_ADDED=0
cleanup() {
  if ((POLICY_RC_ADDED)); then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

apt_install() {
  local out
  out=$(mktemp)
  # Keep the packages' maintainer scripts from starting services: with no init system they
  # fail or leave a daemon on a default port; this script starts each server itself.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_ADDED=1
  fi
  if ((APT_UPDATED == 0)); then
    # A failed update is not the end: the lists (and packages) already here may do.
    "${SUDO[@]}" apt-get -q -o DPkg::Lock::Timeout=300 update >"$out" 2>&1 \
      || { tail -n 5 "$out" >&2; log "services.sh: apt-get update failed; trying the lists here"; }
    APT_UPDATED=1
  fi
  "${SUDO[@]}" apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends "$@" \
    >"$out" 2>&1 || { tail -n 40 "$out" >&2; die "apt-get install $* failed"; }
  rm -f "$out"
}

mark_installed() { "${SUDO[@]}" mkdir -p "$STATE_DIR" && "${SUDO[@]}" touch "$STATE_DIR/$1"; }
may_configure() { [[ ${DTMX_TEST_CONFIGURE_SERVICES:-0} == 1 || -e $STATE_DIR/$1 ]]; }

# --- MariaDB -----------------------------------------------------------------------------
mysql_q() {
  MYSQL_PWD=$MYSQL_PASSWORD mysql --protocol=tcp -h "$MYSQL_HOST" -P "$MYSQL_PORT" \
    -u "$MYSQL_USER" --connect-timeout=3 -N -B -e "$1"
}
mysql_alive() {
  # Exit status 0 whenever the server answers, even with "access denied".
  mysqladmin --protocol=tcp -h "$MYSQL_HOST" -P "$MYSQL_PORT" --connect-timeout=2 ping
}

setup_mariadb() {
  local note=running
  if is_local "$MYSQL_HOST"; then
    if [[ ! -x /usr/sbin/mariadbd ]] || ! have mysqladmin || ! have mysql; then
      apt_install mariadb-server mariadb-client
      mark_installed mariadb
      note=installed
    fi
    if ! mysql_alive >/dev/null 2>&1; then
      "${SUDO[@]}" mkdir -p /run/mysqld /var/log/mysql
      "${SUDO[@]}" chown mysql:mysql /run/mysqld
      # --user: Debian's stock config leaves `user` commented out and mariadbd refuses root.
      "${SUDO[@]}" start-stop-daemon --start --oknodo --background \
        --output /var/log/mysql/dtmx-services.log --exec /usr/sbin/mariadbd -- --user=mysql
      [[ $note == installed ]] || note=started
    fi
  else
    note=remote
  fi
  wait_for "$WAIT_SECONDS" mysql_alive \
    || die "MariaDB at $MYSQL_HOST:$MYSQL_PORT does not answer (see /var/log/mysql)"

  if ! mysql_q 'SELECT 1' >/dev/null 2>&1; then
    if is_local "$MYSQL_HOST" && [[ $MYSQL_USER == root && -z $MYSQL_PASSWORD ]] \
      && may_configure mariadb; then
      # A fresh Debian install lets root in only through the unix socket; open TCP from
      # 127.0.0.1 with an empty password, as on the project's machines.
      "${SUDO[@]}" mysql -u root <<'SQL' >/dev/null
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
      note="$note, configured root over TCP"
    fi
    mysql_q 'SELECT 1' >/dev/null 2>&1 || die "MariaDB at $MYSQL_HOST:$MYSQL_PORT refuses user \
'$MYSQL_USER' with the given password: set DTMX_TEST_MYSQL_USER/PASSWORD, or run with \
DTMX_TEST_CONFIGURE_SERVICES=1 to let root in over TCP with an empty password"
  fi
  local db
  for db in "${MYSQL_DATABASES[@]}"; do
    mysql_q "CREATE DATABASE IF NOT EXISTS \`$db\`"
  done
  log "mariadb:    ok  $MYSQL_HOST:$MYSQL_PORT ($note; databases ${MYSQL_DATABASES[*]})"
}

# --- PostgreSQL --------------------------------------------------------------------------
pg_q() {
  PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=3 psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" \
    -d postgres -w -X -q -t -A -c "$1"
}
pg_alive() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2; }

# The cluster to use: the one already on the port, else the newest version's `main`.
pg_cluster() {
  local line
  line=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p {print $1, $2; exit}')
  if [[ -z $line ]]; then
    line=$(pg_lsclusters -h 2>/dev/null | awk '$2 == "main" {print $1, $2}' | sort -V | tail -n 1)
  fi
  printf '%s\n' "$line"
}

setup_postgres() {
  local note=running cluster ver name
  if is_local "$PG_HOST"; then
    if ! have pg_isready || ! have pg_ctlcluster || ! have psql \
      || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
      apt_install postgresql postgresql-client
      mark_installed postgresql
      note=installed
    fi
    if ! pg_alive; then
      cluster=$(pg_cluster)
      if [[ -z $cluster ]]; then
        ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
        "${SUDO[@]}" pg_createcluster --port "$PG_PORT" "$ver" main >/dev/null
        cluster="$ver main"
      fi
      read -r ver name <<<"$cluster"
      "${SUDO[@]}" mkdir -p /run/postgresql
      "${SUDO[@]}" chown postgres:postgres /run/postgresql
      "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start
      [[ $note == installed ]] || note=started
    fi
  else
    note=remote
  fi
  wait_for "$WAIT_SECONDS" pg_alive \
    || die "PostgreSQL at $PG_HOST:$PG_PORT does not answer (see /var/log/postgresql)"

  if ! pg_q 'SELECT 1' >/dev/null 2>&1; then
    if is_local "$PG_HOST" && [[ $PG_USER == postgres && -z $PG_PASSWORD ]] \
      && may_configure postgresql; then
      # A fresh Debian cluster asks for a password over TCP (scram) and `postgres` has none:
      # trust local TCP for this test cluster, first so it wins over the stock lines.
      read -r ver name <<<"$(pg_cluster)"
      local hba=/etc/postgresql/$ver/$name/pg_hba.conf
      if ! grep -q 'dtmx scripts/services.sh' "$hba"; then
        "${SUDO[@]}" sed -i '1i # added by dtmx scripts/services.sh: tests connect over TCP without a password\
host all all 127.0.0.1/32 trust\
host all all ::1/128 trust' "$hba"
      fi
      "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload
      wait_for 10 pg_q 'SELECT 1' || true
      note="$note, trust on 127.0.0.1"
    fi
    pg_q 'SELECT 1' >/dev/null 2>&1 || die "PostgreSQL at $PG_HOST:$PG_PORT refuses user \
'$PG_USER' without a working password: set DTMX_TEST_PG_USER/PASSWORD, or run with \
DTMX_TEST_CONFIGURE_SERVICES=1 to trust 127.0.0.1 in the local cluster"
  fi
  # The XA tests prepare transactions (PREPARE TRANSACTION), which PostgreSQL refuses while
  # max_prepared_transactions is 0, its default. The setting needs a restart: set it once with
  # ALTER SYSTEM (postgresql.auto.conf) and restart the local cluster; a later run sees it set.
  if [[ $(pg_q 'SHOW max_prepared_transactions') == 0 ]]; then
    if is_local "$PG_HOST"; then
      read -r ver name <<<"$(pg_cluster)"
      pg_q 'ALTER SYSTEM SET max_prepared_transactions = 50'
      "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" restart
      wait_for "$WAIT_SECONDS" pg_q 'SELECT 1' || die "PostgreSQL did not come back after restart"
      note="$note, max_prepared_transactions set to 50 and restarted"
    else
      log "postgresql: max_prepared_transactions is 0 on $PG_HOST: the XA tests on PostgreSQL will skip"
    fi
  fi
  log "postgresql: ok  $PG_HOST:$PG_PORT ($note)"
}

# --- Redis -------------------------------------------------------------------------------
redis_alive() { [[ $(redis-cli -u "$REDIS_URL" ping 2>/dev/null) == PONG ]]; }

setup_redis() {
  local note=running host port rest
  # redis://[user:pass@]host[:port][/db]
  rest=${REDIS_URL#*://}; rest=${rest##*@}; rest=${rest%%/*}
  host=${rest%:*}; port=${rest##*:}
  [[ $rest == *:* ]] || port=6379
  if is_local "$host"; then
    if ! have redis-server || ! have redis-cli; then
      apt_install redis-server redis-tools
      mark_installed redis
      note=installed
    fi
    if ! redis_alive; then
      "${SUDO[@]}" mkdir -p /var/lib/redis /var/log/redis
      "${SUDO[@]}" redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
      [[ $note == installed ]] || note=started
    fi
  else
    note=remote
  fi
  wait_for "$WAIT_SECONDS" redis_alive || die "Redis at $REDIS_URL does not answer PING"
  log "redis:      ok  $REDIS_URL ($note)"
}

# --- etcd --------------------------------------------------------------------------------
setup_etcd() {
  local note=present
  if ! have etcd || ! have etcdctl; then
    apt_install etcd-server etcd-client
    note=installed
  fi
  log "etcd:       ok  $(etcd --version 2>/dev/null | head -n 1) ($note; tests start their own)"
}

# --- chromium ----------------------------------------------------------------------------
# The admin UI tests drive Debian's chromium through Playwright (never `playwright install`).
setup_chromium() {
  local note=present
  if ! have chromium; then
    apt_install chromium
    note=installed
  fi
  log "chromium:   ok  $(chromium --version 2>/dev/null | head -n 1) ($note)"
}

setup_mariadb
setup_postgres
setup_redis
setup_etcd
setup_chromium
