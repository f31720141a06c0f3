#!/usr/bin/env bash
# The route benchmark with a peer beside ferry: mq-bridge-app (Rust), run on
# the same data in the same run, for the routes it supports (Kafka, RabbitMQ
# and Redis streams with XADD). Its rows are added to the same table.
#
#   scripts/bench-peer.sh [--full] [bench options]
#
# mq-bridge-app is built from crates.io, at run time, into a directory
# outside this repository (FERRY_BENCH_PEER_ROOT, default
# ~/.cache/ferry-bench/mq-bridge-app-1.3.0); nothing of it is kept here.
# The first build takes 10-30 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

version=1.3.0
root=${FERRY_BENCH_PEER_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-bench/mq-bridge-app-$version}
bin="$root/bin/mq-bridge-app"
if [ ! -x "$bin" ]; then
    echo "[bench-peer] building mq-bridge-app $version into $root" >&2
    # Only the endpoints the benchmark uses (its UI needs `http`), with the
    # allocator its default build ships (mimalloc). The build directory is
    # kept beside it, so an interrupted build resumes.
    CARGO_TARGET_DIR="$root/build" cargo install mq-bridge-app --version "$version" \
        --locked --root "$root" \
        --no-default-features --features kafka,amqp,redis-streams,http,mimalloc
fi
exec scripts/bench.sh --peer "$bin" "$@"
