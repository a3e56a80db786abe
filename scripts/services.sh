#!/usr/bin/env bash
# Throwaway PostgreSQL 15 and Redis on free loopback ports, for tests, benchmarks and developers.
#
#   services.sh start DIR        start both with their state in DIR (new or empty); write DIR/env
#   services.sh stop DIR [LOGS]  stop both, copy their logs into LOGS if given, delete DIR
#   services.sh up               start both in a temporary directory for `make services`; write var/services.env
#   services.sh down             stop what `up` started
#
# DIR/env holds `export` lines for DATABASE_URL and REDIS_URL (plus the ports), ready to source.
# Missing servers are installed from Debian's packages when running as root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_ROLE=postgres
PG_DATABASE=platform
MARKER=.platform-services
DEV_ENV_FILE="$ROOT/var/services.env"
READY_TIMEOUT=30

log() { echo "services: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

is_root() { [ "$(id -u)" = 0 ]; }

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

apt_install() {
	is_root || die "$1 is missing and only root can install it: apt-get install $*"
	log "installing $* from Debian's packages"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || die "apt-get update failed"
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

ensure_installed() {
	[ -x "$PG_BIN/initdb" ] || apt_install postgresql-15
	[ -x "$PG_BIN/initdb" ] || die "PostgreSQL 15 not found in $PG_BIN (set PG_BIN to its bin directory)"
	command -v redis-server >/dev/null || apt_install redis-server
	command -v redis-server >/dev/null || die "redis-server not found on PATH"
	command -v redis-cli >/dev/null || die "redis-cli not found on PATH (it comes with redis-server)"
}

# initdb refuses to run as root, so the server runs as an unprivileged system user.
pg_os_user() {
	if ! is_root; then
		id -un
	elif id postgres >/dev/null 2>&1; then
		echo postgres
	else
		id platformtest >/dev/null 2>&1 ||
			useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin platformtest ||
			die "could not create the system user platformtest for PostgreSQL"
		echo platformtest
	fi
}

as_pg_user() {
	if is_root; then
		(cd / && runuser -u "$PG_OS_USER" -- "$@")
	else
		"$@"
	fi
}

start_postgres() {
	local dir=$1 data=$1/pg/data log=$1/pg/postgres.log port attempt
	mkdir -p "$dir/pg"
	if is_root; then chown "$PG_OS_USER" "$dir/pg"; fi
	if ! as_pg_user "$PG_BIN/initdb" -D "$data" -U "$PG_ROLE" -A trust -E UTF8 --no-locale --no-sync \
		>"$dir/pg/initdb.log" 2>&1; then
		cat "$dir/pg/initdb.log" >&2
		die "initdb failed (as user $PG_OS_USER)"
	fi
	# Loopback only; durability is worthless for a server that is deleted after the run.
	cat >>"$data/postgresql.conf" <<-CONF
		listen_addresses = '127.0.0.1'
		unix_socket_directories = '$dir/pg'
		fsync = off
		synchronous_commit = off
		full_page_writes = off
		max_connections = 200
	CONF
	for attempt in 1 2 3; do
		port=$(free_port)
		# -w waits until the server accepts connections; a port taken meanwhile makes it fail.
		if as_pg_user "$PG_BIN/pg_ctl" -D "$data" -l "$log" -o "-p $port" -w -t "$READY_TIMEOUT" start >/dev/null; then
			"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t "$READY_TIMEOUT" ||
				die "PostgreSQL started but does not answer on 127.0.0.1:$port (log: $log)"
			"$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U "$PG_ROLE" "$PG_DATABASE" ||
				die "could not create database $PG_DATABASE"
			PG_PORT=$port
			return 0
		fi
		log "PostgreSQL did not start on port $port (attempt $attempt)"
	done
	tail -n 30 "$log" >&2 || true
	die "PostgreSQL did not start; log: $log"
}

start_redis() {
	local dir=$1 port attempt pid waited
	mkdir -p "$dir/redis"
	for attempt in 1 2 3; do
		port=$(free_port)
		rm -f "$dir/redis/redis.pid"
		redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
			--daemonize yes --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" \
			--dir "$dir/redis" || die "redis-server did not start (log: $dir/redis/redis.log)"
		for ((waited = 0; waited < READY_TIMEOUT * 10; waited++)); do
			if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
				REDIS_PORT=$port
				return 0
			fi
			pid=$(cat "$dir/redis/redis.pid" 2>/dev/null || true)
			# The daemon exits on its own when the port was taken meanwhile; stop waiting then.
			if [ "$waited" -gt 5 ] && { [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; }; then
				break
			fi
			sleep 0.1
		done
		stop_redis "$dir"
		log "Redis did not start on port $port (attempt $attempt)"
	done
	tail -n 30 "$dir/redis/redis.log" >&2 || true
	die "Redis did not start; log: $dir/redis/redis.log"
}

stop_postgres() {
	local data=$1/pg/data pid
	[ -f "$data/postmaster.pid" ] || return 0
	if ! as_pg_user "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 15 stop >/dev/null 2>&1; then
		as_pg_user "$PG_BIN/pg_ctl" -D "$data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
	fi
	pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		log "PostgreSQL (pid $pid) ignored pg_ctl stop; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
}

stop_redis() {
	local pidfile=$1/redis/redis.pid pid i
	[ -f "$pidfile" ] || return 0
	pid=$(cat "$pidfile" 2>/dev/null || true)
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "Redis (pid $pid) ignored SIGTERM; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$pidfile"
}

cmd_start() {
	local dir=${1:?usage: services.sh start DIR}
	mkdir -p "$dir"
	[ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
	dir=$(cd "$dir" && pwd)
	touch "$dir/$MARKER"
	# The server's user must reach its data directory inside DIR.
	chmod 755 "$dir"
	ensure_installed
	PG_OS_USER=$(pg_os_user)
	# Whatever got started is stopped again when a later step fails.
	trap "stop_redis '$dir'; stop_postgres '$dir'" EXIT
	start_postgres "$dir"
	start_redis "$dir"
	trap - EXIT
	cat >"$dir/env" <<-ENV
		export DATABASE_URL=postgres://$PG_ROLE@127.0.0.1:$PG_PORT/$PG_DATABASE
		export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
		export PG_PORT=$PG_PORT
		export REDIS_PORT=$REDIS_PORT
	ENV
	log "PostgreSQL on 127.0.0.1:$PG_PORT (database $PG_DATABASE), Redis on 127.0.0.1:$REDIS_PORT"
}

cmd_stop() {
	local dir=${1:?usage: services.sh stop DIR [LOGS]} logs=${2:-}
	[ -d "$dir" ] || return 0
	[ -f "$dir/$MARKER" ] || die "$dir was not made by services.sh start; not touching it"
	PG_OS_USER=$(pg_os_user)
	stop_redis "$dir"
	stop_postgres "$dir"
	if [ -n "$logs" ]; then
		mkdir -p "$logs"
		cp "$dir/pg/postgres.log" "$logs/postgres.log" 2>/dev/null || true
		cp "$dir/redis/redis.log" "$logs/redis.log" 2>/dev/null || true
	fi
	rm -rf "$dir"
}

cmd_up() {
	local dir
	if [ -f "$DEV_ENV_FILE" ]; then
		# shellcheck disable=SC1090
		dir=$(. "$DEV_ENV_FILE" && echo "${SERVICES_DIR:-}")
		if [ -n "$dir" ] && [ -f "$dir/pg/data/postmaster.pid" ]; then
			log "already running (make services-stop stops them)"
			cat "$DEV_ENV_FILE"
			return 0
		fi
		rm -f "$DEV_ENV_FILE"
	fi
	dir=$(mktemp -d "${TMPDIR:-/tmp}/platform-services.XXXXXX")
	cmd_start "$dir"
	mkdir -p "$(dirname "$DEV_ENV_FILE")"
	{
		cat "$dir/env"
		echo "export SERVICES_DIR=$dir"
	} >"$DEV_ENV_FILE"
	cat "$DEV_ENV_FILE"
	echo "# Use them in a shell with: . var/services.env   (stop them with: make services-stop)"
}

cmd_down() {
	local dir
	if [ ! -f "$DEV_ENV_FILE" ]; then
		log "nothing to stop ($DEV_ENV_FILE not found)"
		return 0
	fi
	# shellcheck disable=SC1090
	dir=$(. "$DEV_ENV_FILE" && echo "${SERVICES_DIR:-}")
	[ -n "$dir" ] && cmd_stop "$dir"
	rm -f "$DEV_ENV_FILE"
	log "stopped"
}

case "${1:-}" in
start) cmd_start "${@:2}" ;;
stop) cmd_stop "${@:2}" ;;
up) cmd_up ;;
down) cmd_down ;;
*)
	echo "usage: services.sh start DIR | stop DIR [LOGS] | up | down" >&2
	exit 2
	;;
esac
