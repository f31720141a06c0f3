#!/usr/bin/env bash
# Soak: every at-least-once source (kafka, redis-stream, redis-list, amqp)
# through 20 SIGKILLs of ferry and 5 connection faults, and the exactly_once
# paths (kafka -> redis, redis-stream -> redis), in release mode. Prints
# sent / delivered / lost / duplicated per path (tests/soak.rs).
#
#   scripts/soak.sh                                  # 20,000 messages per path
#   FERRY_SOAK_MESSAGES=1000000 scripts/soak.sh      # the full soak (hours)
#   scripts/soak.sh soak_redis_list                  # one path
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh
echo "[soak] ${FERRY_SOAK_MESSAGES:-20000} messages per path" >&2
# One path at a time: each starts its own brokers and several ferry processes.
cargo test --release --test soak -- --ignored --nocapture --test-threads=1 "$@"
