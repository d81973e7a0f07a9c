#!/usr/bin/env bash
# A private Docker engine for the container tests: install, start, stop, status.
#
# The engine never touches the host's networking: dockerd runs with --bridge=none and with iptables,
# IP forwarding and masquerading off, so it creates no bridge and no NAT rules. Builds therefore use
# `--network host` and containers run with `--network none`. Everything it owns (data root, exec
# root, pid file, socket, log) lives under one state directory, so it never collides with a system
# engine and it can be stopped by PID.
#
# Usage: scripts/docker-engine.sh install|start|stop|status|env
#   start prints `export DOCKER_HOST=unix://...` on stdout (eval it); messages go to stderr.
#
# Environment:
#   YMIR_DOCKER_STATE          state directory (default /var/lib/ymir-template-docker)
#   YMIR_DOCKERD               dockerd binary (default /usr/sbin/dockerd from Debian's docker.io,
#                              else the dockerd on PATH)
#   YMIR_DOCKER_CLI            docker client (default /usr/bin/docker: Debian's 20.10 client has the
#                              classic BuildKit builder built in; newer clients need buildx for it)
#   YMIR_DOCKER_START_TIMEOUT  seconds to wait for the engine to answer (default 60)
#   YMIR_DOCKER_BUILD_CACHE    build cache kept between runs (default 8GB)
set -euo pipefail

STATE_DIR="${YMIR_DOCKER_STATE:-/var/lib/ymir-template-docker}"
# Debian installs /usr/sbin/dockerd; other packagings put it on PATH elsewhere.
DOCKERD="${YMIR_DOCKERD:-$(command -v /usr/sbin/dockerd dockerd 2>/dev/null | head -n 1 || true)}"
DOCKERD="${DOCKERD:-/usr/sbin/dockerd}"
DOCKER="${YMIR_DOCKER_CLI:-/usr/bin/docker}"
START_TIMEOUT="${YMIR_DOCKER_START_TIMEOUT:-60}"

DATA_ROOT="$STATE_DIR/data"
EXEC_ROOT="$STATE_DIR/run"
PIDFILE="$STATE_DIR/dockerd.pid"
SOCKET="$STATE_DIR/docker.sock"
LOGFILE="$STATE_DIR/dockerd.log"
CONFIG_FILE="$STATE_DIR/daemon.json"

log() {
    printf 'docker-engine: %s\n' "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# The PID recorded in the pid file if that process is still a dockerd, else nothing.
engine_pid() {
    local pid comm
    [ -f "$PIDFILE" ] || return 0
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    comm="$(ps -p "$pid" -o comm= 2>/dev/null || true)"
    if [ "$comm" = "dockerd" ]; then
        printf '%s\n' "$pid"
    fi
}

engine_answers() {
    DOCKER_HOST="unix://$SOCKET" "$DOCKER" info >/dev/null 2>&1
}

cmd_install() {
    local missing=()
    command -v "$DOCKERD" >/dev/null 2>&1 || missing+=(docker.io)
    [ -x "$DOCKER" ] || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
    if [ "${#missing[@]}" -eq 0 ]; then
        log "docker.io and debootstrap are installed"
        return 0
    fi
    # The package's maintainer scripts would start the system dockerd with default networking
    # (a docker0 bridge). A policy-rc.d that denies every service start prevents that.
    local policy=/usr/sbin/policy-rc.d created_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        created_policy=1
    fi
    log "installing ${missing[*]} (services are not started)"
    local status=0
    {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends docker.io debootstrap debian-archive-keyring >&2
    } || status=$?
    if [ -n "$created_policy" ]; then
        as_root rm -f "$policy"
    fi
    return "$status"
}

cmd_start() {
    local pid
    pid="$(engine_pid)"
    if [ -n "$pid" ] && engine_answers; then
        log "already running (pid $pid)"
        cmd_env
        return 0
    fi
    if [ -n "$pid" ]; then
        die "dockerd (pid $pid) runs but does not answer on $SOCKET; run '$0 stop' first"
    fi
    [ -x "$DOCKERD" ] || die "$DOCKERD not found; run '$0 install' first"
    # A unix socket path is limited to 107 bytes; containerd's socket sits deepest.
    if [ "${#EXEC_ROOT}" -gt 70 ]; then
        die "YMIR_DOCKER_STATE is too long for unix sockets: $STATE_DIR"
    fi
    as_root mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
    # A config file of our own, so that /etc/docker/daemon.json cannot add networks; it only bounds
    # the build cache that repeated test runs leave behind.
    printf '{"builder": {"gc": {"enabled": true, "defaultKeepStorage": "%s"}}}\n' \
        "${YMIR_DOCKER_BUILD_CACHE:-8GB}" | as_root tee "$CONFIG_FILE" >/dev/null
    as_root rm -f "$PIDFILE" "$SOCKET"
    log "starting dockerd (state $STATE_DIR, log $LOGFILE)"
    # setsid: the engine must not receive the terminal's or the test runner's signals.
    as_root setsid "$DOCKERD" \
        --config-file "$CONFIG_FILE" \
        --data-root "$DATA_ROOT" \
        --exec-root "$EXEC_ROOT" \
        --pidfile "$PIDFILE" \
        --host "unix://$SOCKET" \
        --bridge=none \
        --iptables=false \
        --ip-forward=false \
        --ip-masq=false \
        </dev/null >>"$LOGFILE" 2>&1 &
    local waited=0
    until engine_answers; do
        if [ "$waited" -ge "$START_TIMEOUT" ]; then
            log "dockerd did not answer within ${START_TIMEOUT}s; last log lines:"
            tail -n 30 "$LOGFILE" >&2 || true
            cmd_stop || true
            exit 1
        fi
        if [ -z "$(engine_pid)" ] && [ "$waited" -ge 5 ]; then
            log "dockerd exited; last log lines:"
            tail -n 30 "$LOGFILE" >&2 || true
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "running (pid $(engine_pid))"
    cmd_env
}

# Signal a process by PID and wait for it to end; SIGKILL after the grace period.
stop_pid() {
    local pid="$1" grace="$2" waited=0
    as_root kill -TERM "$pid" 2>/dev/null || return 0
    while as_root kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge "$grace" ]; then
            log "pid $pid did not stop within ${grace}s; killing it"
            as_root kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            return 0
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

cmd_stop() {
    local pid
    pid="$(engine_pid)"
    if [ -z "$pid" ]; then
        log "not running"
    else
        log "stopping dockerd (pid $pid)"
        stop_pid "$pid" 60
    fi
    # dockerd stops the containerd it started; if dockerd had to be killed, containerd is left.
    local cpidfile="$EXEC_ROOT/containerd/containerd.pid" cpid
    if [ -f "$cpidfile" ]; then
        cpid="$(cat "$cpidfile" 2>/dev/null || true)"
        if [[ "$cpid" =~ ^[0-9]+$ ]] && [ "$(ps -p "$cpid" -o comm= 2>/dev/null || true)" = "containerd" ]; then
            log "stopping the engine's containerd (pid $cpid)"
            stop_pid "$cpid" 30
        fi
    fi
    as_root rm -f "$PIDFILE" "$SOCKET"
}

cmd_status() {
    local pid
    pid="$(engine_pid)"
    if [ -n "$pid" ] && engine_answers; then
        echo "running pid=$pid socket=$SOCKET"
        DOCKER_HOST="unix://$SOCKET" "$DOCKER" info --format \
            'server={{.ServerVersion}} storage={{.Driver}} root={{.DockerRootDir}} images={{.Images}} containers={{.Containers}}'
    elif [ -n "$pid" ]; then
        echo "starting-or-broken pid=$pid socket=$SOCKET"
        return 1
    else
        echo "stopped"
        return 3
    fi
}

cmd_env() {
    printf 'export DOCKER_HOST=unix://%s\n' "$SOCKET"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*)
    echo "usage: $0 install|start|stop|status|env" >&2
    exit 2
    ;;
esac
