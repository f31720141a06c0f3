#!/usr/bin/env bash
# Sets up everything ferry's demo and tests need, on a fresh Debian machine or
# on one where some of it already runs. Idempotent: what is installed is not
# reinstalled, what is running is left alone (never restarted), and only what
# is missing is started.
#
#   Redis     127.0.0.1:6379   Debian package redis-server
#   RabbitMQ  127.0.0.1:5672   Debian package rabbitmq-server
#   Kafka     127.0.0.1:9092   tansu 0.6.0, a Kafka-compatible broker built from
#                              crates.io once and kept in ~/.cargo/bin
#
# Environment: FERRY_KAFKA_PORT (9092), FERRY_DEV_DIR (where the broker keeps
# its data and logs; ~/.local/share/ferry-dev).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAFKA_PORT=${FERRY_KAFKA_PORT:-9092}
DEV_DIR=${FERRY_DEV_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/ferry-dev}
TANSU_VERSION=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages given that are not installed yet.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]} (Debian packages)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    for _ in $(seq $((secs * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up within ${secs}s"
}

ensure_build_tools() {
    # librdkafka is compiled from source by the rdkafka crate.
    local need=()
    command -v cc >/dev/null || need+=(gcc libc6-dev)
    command -v make >/dev/null || need+=(make)
    command -v perl >/dev/null || need+=(perl)
    command -v python3 >/dev/null || need+=(python3)
    [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
    # librdkafka's TLS and SCRAM (OpenSSL) and its OIDC token fetch (libcurl),
    # found with pkg-config; see ARCHITECTURE.md, "TLS and authentication".
    # openssl and socat: the TLS tests make certificates and terminate TLS
    # in front of the test broker.
    apt_install pkg-config libssl-dev libcurl4-openssl-dev openssl socat
    command -v cargo >/dev/null || die "cargo is not installed; install Rust from https://rustup.rs"
}

ensure_redis() {
    if command -v redis-cli >/dev/null && [ "$(redis-cli -p 6379 ping 2>/dev/null)" = PONG ]; then
        say "redis: running on 127.0.0.1:6379"
    else
        apt_install redis-server redis-tools
        if port_open 6379; then die "port 6379 is taken by something that does not answer PING"; fi
        mkdir -p "$DEV_DIR/redis"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --dir "$DEV_DIR/redis" --logfile "$DEV_DIR/redis/redis.log"
        wait_for 20 "redis" sh -c '[ "$(redis-cli -p 6379 ping)" = PONG ]'
        say "redis: started on 127.0.0.1:6379"
    fi
}

ensure_rabbitmq() {
    if port_open 5672; then
        say "rabbitmq: running on 127.0.0.1:5672"
        return
    fi
    apt_install rabbitmq-server
    say "rabbitmq: starting"
    as_root rabbitmq-server -detached
    wait_for 90 "rabbitmq" as_root rabbitmqctl -q await_startup
    wait_for 30 "rabbitmq port 5672" port_open 5672
    say "rabbitmq: started on 127.0.0.1:5672"
}

ensure_tansu() {
    if command -v tansu >/dev/null && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
        return
    fi
    ensure_build_tools
    say "kafka: building tansu $TANSU_VERSION once (about 15 minutes; kept in ~/.cargo/bin)"
    cargo install "tansu@$TANSU_VERSION" --locked --features dynostore,libsql --quiet
}

ensure_kafka() {
    if python3 "$here/kafka_probe.py" 127.0.0.1 "$KAFKA_PORT"; then
        say "kafka: a broker answers on 127.0.0.1:$KAFKA_PORT"
        return
    fi
    if port_open "$KAFKA_PORT"; then
        die "port $KAFKA_PORT is taken by something that is not a Kafka broker; set FERRY_KAFKA_PORT to a free port"
    fi
    ensure_tansu
    mkdir -p "$DEV_DIR/kafka"
    # tansu resolves sqlite:// paths against its working directory.
    (cd "$DEV_DIR/kafka" && setsid nohup tansu broker \
        --storage-engine sqlite://tansu.db \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        >>tansu.log 2>&1 </dev/null &)
    wait_for 30 "kafka (tansu, log: $DEV_DIR/kafka/tansu.log)" \
        python3 "$here/kafka_probe.py" 127.0.0.1 "$KAFKA_PORT"
    say "kafka: tansu started on 127.0.0.1:$KAFKA_PORT (data: $DEV_DIR/kafka)"
}

ensure_build_tools
ensure_redis
ensure_rabbitmq
ensure_kafka
