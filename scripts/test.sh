#!/usr/bin/env bash
# The whole test suite: sets up the real services (scripts/setup.sh), checks
# formatting, lints (Cargo.toml [lints]) and doc links, then runs unit and integration tests against Redis,
# RabbitMQ and a Kafka-compatible broker.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh
# Tests start a private Kafka-compatible broker each (tansu, built by
# setup.sh), unless FERRY_TEST_KAFKA_BROKERS names one to use instead.

echo "[test] cargo fmt --check" >&2
cargo fmt --all -- --check
echo "[test] cargo clippy" >&2
cargo clippy --all-targets --quiet -- -D warnings
# Cargo.toml's [lints] deny broken doc links; rustdoc reports them as
# warnings of its own, made errors here.
echo "[test] cargo doc" >&2
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --quiet
echo "[test] cargo test" >&2
# Integration tests print measurements (rates, duplicates, memory): show them.
# Benchmarks are built by clippy above and run with `cargo bench`.
cargo test --lib --bins --tests -- --nocapture "$@"
