#!/usr/bin/env bash
# The route benchmark (benches/routes): every route at 100 B, 1 KB and 10 KB
# beside the plain clients of its endpoints, CPU per message, peak RSS,
# latency at half of the saturation rate, memory with a backlog behind a
# paused sink. Prints a table and writes target/ferry-bench/routes-*.{txt,json,svg}.
#
#   scripts/bench.sh                 # quick (a few minutes)
#   scripts/bench.sh --full          # the full run (3 repeats, 1,000,000 backlog)
#   scripts/bench.sh --routes kafka->redis --sizes 1024 --only throughput
#
# Needs what scripts/setup.sh installs (redis-server, RabbitMQ, tansu); it
# starts private brokers itself. Never part of CI: speed fails nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh
echo "[bench] load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec cargo bench --bench routes -- "$@"
