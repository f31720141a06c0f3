//! What the scenarios share: pipelines into a verification Redis, starting
//! and stopping ferry, and reading back the orders that arrived.

use std::time::{Duration, Instant};

use ferry::connectors::generate::order;

use crate::kits::SourceKit;
use crate::support::*;

pub const WAIT: Duration = Duration::from_secs(90);

pub fn orders(ids: std::ops::Range<u64>) -> Vec<String> {
    ids.map(order).collect()
}

/// Order ids found in payloads.
pub fn ids(payloads: &[String]) -> std::collections::BTreeSet<u64> {
    payloads
        .iter()
        .filter_map(|p| order_id(p.as_bytes()))
        .collect()
}

pub fn dead_letter_table(url: &str) -> String {
    format!(
        "[pipeline.dead_letter]\ntype = \"redis\"\nurl = \"{url}\"\nwrite = \"xadd\"\nkey = \"dead\"\n"
    )
}

/// A pipeline from the kit's source into the verification Redis. Small
/// batches keep the flow slow enough for a stop to land mid-stream.
pub fn source_pipeline(source: &str, verify: &RedisServer, dead_letter: bool) -> String {
    source_pipeline_to(source, &verify.url(), dead_letter)
}

/// [`source_pipeline`] into the Redis at `url`.
pub fn source_pipeline_to(source: &str, url: &str, dead_letter: bool) -> String {
    format!(
        r#"
[[pipeline]]
name = "conformance"
source = {source}
buffer = 64
{dl}
[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "set"
key = "order:{{order_id}}"
batch_size = 50
"#,
        dl = if dead_letter {
            dead_letter_table(url)
        } else {
            String::new()
        },
    )
}

pub fn start_ferry<K: SourceKit>(config: &str) -> Ferry {
    start_ferry_with::<K>(config, &[])
}

pub fn start_ferry_with<K: SourceKit>(config: &str, args: &[&str]) -> Ferry {
    let ferry = Ferry::start_with(config, args);
    wait_until(WAIT, K::READY, || ferry.log().contains(K::READY));
    ferry
}

pub fn stop(ferry: &mut Ferry) {
    ferry.stop(Duration::from_secs(30));
}

/// Distinct orders written to the verification Redis (`SET order:N`).
pub fn orders_in(verify: &RedisServer) -> u64 {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("order:*")
        .query(&mut verify.conn())
        .unwrap();
    keys.len() as u64
}

/// What arrived in the verification Redis of orders `1..=sent`, written
/// with `SET`: the command counter reveals the copies.
pub fn tally_of_sets(verify: &RedisServer, sent: u64) -> Tally {
    let delivered = orders_in(verify);
    Tally {
        sent,
        delivered,
        lost: sent - delivered,
        duplicated: verify.calls("set").saturating_sub(delivered),
    }
}

pub fn assert_orders(verify: &RedisServer, ids: std::ops::Range<u64>) {
    let mut conn = verify.conn();
    for n in ids {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("order:{n}"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(v.as_deref(), Some(order(n).as_str()), "order {n}");
    }
}

/// A proxy in front of the verification Redis that delays every read and
/// write by `DELAY`: a batch of 50 then takes 40ms, so a backlog of 20,000
/// takes about 16s to flow, and faults injected meanwhile land mid-stream
/// however fast the source is.
pub fn slowed(verify: &RedisServer) -> Proxy {
    const DELAY: Duration = Duration::from_millis(20);
    let proxy = Proxy::start(&format!("127.0.0.1:{}", verify.port));
    proxy.delay(DELAY);
    proxy
}

/// `/ready` on `port` answers 200.
pub fn is_ready(port: u16) -> bool {
    http_get(port, "/ready").is_some_and(|(status, _)| status == 200)
}

/// Polls `value` until it has not changed for `quiet`, or `timeout`
/// passed; returns the last value.
pub fn settled<T: PartialEq + Copy>(
    timeout: Duration,
    quiet: Duration,
    mut value: impl FnMut() -> T,
) -> T {
    let start = Instant::now();
    let mut last = value();
    let mut since = Instant::now();
    while start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(200));
        let now = value();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}
