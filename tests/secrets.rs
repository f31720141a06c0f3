//! Secrets never show: a pipeline with a Redis ACL password from the
//! environment, a password in a Redis URL, and a Kafka SCRAM password from
//! a file runs at `debug` log level with `--http`, and none of the secrets
//! appears in its log, in `ferry check` and `ferry check --connect`
//! output, in `/metrics` or in `/ready`.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod secure;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use secure::{Certs, SecureKafka, TlsRedis, ferry};
use support::{free_port, wait_until};

const REDIS_SECRET: &str = "redis-Secret-4711";
const URL_SECRET: &str = "url-Secret-0815";
const KAFKA_SECRET: &str = "kafka-Secret-1234";

fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [REDIS_SECRET, URL_SECRET, KAFKA_SECRET] {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

#[test]
fn no_secret_appears_in_logs_check_output_metrics_or_readiness() {
    let certs = Certs::make();
    let redis = TlsRedis::start(&certs, false);
    redis.acl_user("ferry", REDIS_SECRET, &["~*", "+@all"]);
    redis.acl_user("legacy", URL_SECRET, &["~*", "+@all"]);
    let kafka = SecureKafka::start(&[("ferry", KAFKA_SECRET, "scram256")], None);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("kafka-password");
    std::fs::write(&secret_file, format!("{KAFKA_SECRET}\n")).unwrap();
    let config = format!(
        r#"
[[pipeline]]
name = "secrets"
source = {{ type = "generate", count = 60, rate = 20 }}

[[pipeline.sink]]
type = "redis"
url = "redis://127.0.0.1:{port}"
username = "ferry"
password = "${{REDIS_PW}}"
write = "set"
key = "order:{{order_id}}"

[[pipeline.sink]]
type = "redis"
url = "redis://legacy:{URL_SECRET}@127.0.0.1:{port}/1"
write = "set"
key = "order:{{order_id}}"

[[pipeline.sink]]
type = "kafka"
brokers = "{brokers}"
topic = "orders"
create_topic = {{ partitions = 1 }}
sasl = {{ mechanism = "SCRAM-SHA-256", username = "ferry", password = "${{file:{file}}}" }}
"#,
        port = redis.port,
        brokers = kafka.brokers(),
        file = secret_file.display(),
    );
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, &config).unwrap();
    let env = [("REDIS_PW", REDIS_SECRET)];

    let (code, stdout, stderr) = ferry(&["check", path.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{stderr}");
    assert_no_secret("ferry check", &(stdout + &stderr));
    let (code, stdout, stderr) = ferry(&["check", "--connect", path.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("redis://legacy:<redacted>@127.0.0.1"),
        "{stdout}"
    );
    assert_no_secret("ferry check --connect", &(stdout + &stderr));

    let http = free_port();
    let log = dir.path().join("ferry.log");
    let mut child = Command::new(support::ferry_bin())
        .args([
            "run",
            path.to_str().unwrap(),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .args(["--log", "trace"])
        .env("REDIS_PW", REDIS_SECRET)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut scraped = String::new();
    wait_until(Duration::from_secs(30), "metrics and readiness", || match (
        get(http, "/metrics"),
        get(http, "/ready"),
    ) {
        (Some(m), Some(r)) if m.contains("secrets") => {
            scraped = m + &r;
            true
        }
        _ => false,
    });
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "ran at trace level:\n{log}"
    );
    assert_eq!(
        redis.get("order:60"),
        Some(ferry::connectors::generate::order(60))
    );
    assert_no_secret("the debug log", &log);
    assert_no_secret("/metrics and /ready", &scraped);
}
