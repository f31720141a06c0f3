#!/usr/bin/env bash
# The demo: sets up what is missing (scripts/setup.sh), then runs the job people
# hand-write today — Kafka orders cached in Redis as `demo:order:{order_id}` —
# and prints what ferry moved.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh
echo "[demo] building ferry (release)" >&2
cargo build --release --quiet
ferry=target/release/ferry

echo
echo "== 1. a shop produces 10,000 orders to the Kafka topic demo-orders"
$ferry run examples/demo/generate-orders.toml
echo
echo "== 2. ferry moves them into Redis as demo:order:{order_id}"
$ferry run examples/demo/orders-to-redis.toml
echo
echo "== 3. what is in Redis now"
count=$(redis-cli --scan --pattern 'demo:order:*' | wc -l)
echo "keys demo:order:*  : $count"
for id in 1 2 10000; do
    printf 'GET demo:order:%-6s: %s\n' "$id" "$(redis-cli GET "demo:order:$id")"
done
echo "dead letters       : $(redis-cli XLEN demo:dead-letters)"
echo
echo "Run it again: ferry resumes from its committed offsets and moves only the new orders."
