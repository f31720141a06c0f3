#!/usr/bin/env bash
# The whole test suite: sets up the real services (scripts/setup.sh), checks
# formatting and lints, then runs unit and integration tests against Redis,
# RabbitMQ and a Kafka-compatible broker.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh
export FERRY_TEST_KAFKA_BROKERS=${FERRY_TEST_KAFKA_BROKERS:-127.0.0.1:${FERRY_KAFKA_PORT:-9092}}

echo "[test] cargo fmt --check" >&2
cargo fmt --all -- --check
echo "[test] cargo clippy" >&2
cargo clippy --all-targets --quiet -- -D warnings
echo "[test] cargo test" >&2
# Integration tests print measurements (rates, duplicates, memory): show them.
cargo test --all-targets -- --nocapture "$@"
