//! `ferry test`: the retail example's unit tests pass without any broker,
//! and a changed expectation fails with a message that says what differs.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::process::Command;

use support::ferry_bin;

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn ferry_test(path: &str) -> (Option<i32>, String) {
    let out = Command::new(ferry_bin())
        .args(["test", path])
        // No broker is reachable at these addresses: nothing may connect.
        .env("KAFKA_BROKERS", "127.0.0.1:1")
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("AMQP_URL", "amqp://127.0.0.1:1/%2f")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn the_retail_example_passes_its_tests_without_brokers() {
    let (code, out) = ferry_test(&example("retail.toml"));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("ok    a payment goes to the order database"),
        "{out}"
    );
    assert!(out.contains("6 passed, 0 failed"), "{out}");
}

#[test]
fn a_changed_expectation_fails_and_says_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example("retail.toml"), dir.path().join("retail.toml")).unwrap();
    let tests = std::fs::read_to_string(example("retail.tests.toml")).unwrap();
    // The first test expects the order database to hold a refund instead.
    let changed = tests.replacen(
        r#"sink = "orders-db"
key = "order:o1"
json = { type = "payment", order_id = "o1", amount = 120.5, status = "paid""#,
        r#"sink = "orders-db"
key = "order:o1"
json = { type = "payment", order_id = "o1", amount = 120.5, status = "refunded""#,
        1,
    );
    assert_ne!(changed, tests, "the expectation was changed");
    let path = dir.path().join("retail.tests.toml");
    std::fs::write(&path, changed).unwrap();

    let (code, out) = ferry_test(path.to_str().unwrap());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL  a payment goes to the order database, the emails and the CRM"),
        "{out}"
    );
    assert!(
        out.contains("sink `orders-db`, message 1: payload differs:")
            && out.contains(".status: expected \"refunded\", got \"paid\""),
        "{out}"
    );
    assert!(out.contains("5 passed, 1 failed"), "{out}");
}

#[test]
fn a_changed_route_fails_the_tests_that_depend_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(example("retail.toml")).unwrap();
    // Web-log events now go nowhere.
    let changed = config.replace(
        r#"when = '.type == "weblog"'"#,
        r#"when = '.type == "web-log"'"#,
    );
    assert_ne!(changed, config);
    std::fs::write(dir.path().join("retail.toml"), changed).unwrap();
    std::fs::copy(
        example("retail.tests.toml"),
        dir.path().join("retail.tests.toml"),
    )
    .unwrap();

    let (code, out) = ferry_test(dir.path().join("retail.toml").to_str().unwrap());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL  web-log events go to the web-log database only"),
        "{out}"
    );
    assert!(
        out.contains("sink `weblog-db`: expected 2 message(s), got 0"),
        "{out}"
    );
    assert!(
        out.contains("dead letters: expected 0, got 2")
            && out.contains("input 1: no route matched the message"),
        "{out}"
    );
}
