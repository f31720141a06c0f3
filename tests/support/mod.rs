//! Shared test tooling: real services, the real `ferry` binary.
//!
//! - Kafka: the broker at `FERRY_TEST_KAFKA_BROKERS` (scripts/test.sh starts
//!   one); every test uses its own topics and groups.
//!   (kafka.rs, with the private tansu broker).
//! - Redis: a throwaway `redis-server` per test on a free port, so tests can
//!   pause or kill it and count the commands it executed (redis.rs).
//! - ferry: the binary cargo built, run as a child process with a config
//!   file, so that tests can signal it, kill it and measure its memory
//!   (ferry.rs).
//! - RabbitMQ: a vhost per test on the shared server (amqp.rs).
//! - faults: a TCP proxy between ferry and a server that cuts connections,
//!   refuses them, delays traffic and loses replies (faults.rs).
#![allow(dead_code)]

mod amqp;
pub mod faults;
mod ferry;
mod kafka;
mod redis;
pub mod topology;

#[allow(unused_imports)]
pub use self::ferry::*;
#[allow(unused_imports)]
pub use self::redis::*;
#[allow(unused_imports)]
pub use amqp::*;
#[allow(unused_imports)]
pub use faults::{Proxy, Trigger};
#[allow(unused_imports)]
pub use kafka::*;

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(
        "{prefix}-{}-{now}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port: (status, body), or `None` while nothing
/// listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// What a run delivered of the orders it sent: every order id is counted
/// once as delivered, every further copy as a duplicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
}

impl Tally {
    /// `received`: the order id of every copy that arrived, for orders
    /// `1..=sent`.
    pub fn of(sent: u64, received: impl IntoIterator<Item = u64>) -> Tally {
        let mut seen = vec![0u32; sent as usize + 1];
        let mut duplicated = 0;
        let mut foreign = 0;
        for id in received {
            match seen.get_mut(id as usize).filter(|_| id > 0) {
                Some(n) => {
                    *n += 1;
                    if *n > 1 {
                        duplicated += 1;
                    }
                }
                None => foreign += 1,
            }
        }
        assert_eq!(foreign, 0, "order ids outside 1..={sent} arrived");
        let delivered = seen[1..].iter().filter(|n| **n > 0).count() as u64;
        Tally {
            sent,
            delivered,
            lost: sent - delivered,
            duplicated,
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, delivered {}, lost {}, duplicated {}",
            self.sent, self.delivered, self.lost, self.duplicated
        )
    }
}

/// The order id in a payload (`{"order_id": N, ...}`).
pub fn order_id(payload: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()?
        .get("order_id")?
        .as_u64()
}

/// Polls `check` until it is true, or panics after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
