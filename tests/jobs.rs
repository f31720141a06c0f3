//! One-off jobs (`until = "end"`) leave nothing half done behind.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::Duration;

use redis::Commands;
use support::*;

#[test]
fn a_short_stream_job_with_trim_deletes_what_it_acknowledged_before_it_exits() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    for id in 1..=5 {
        let _: String = conn
            .xadd(
                "orders",
                "*",
                &[("payload", ferry::connectors::generate::order(id))],
            )
            .unwrap();
    }
    let config = format!(
        r#"
[[pipeline]]
name = "job"
source = {{ type = "redis-stream", url = "{url}", streams = ["orders"], group = "g", until = "end", trim = true }}

[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "set"
key = "order:{{order_id}}"
"#,
        url = redis.url()
    );
    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(30));
    for id in 1..=5 {
        assert!(redis.get(&format!("order:{id}")).is_some(), "order {id}");
    }
    let left: u64 = conn.xlen("orders").unwrap();
    assert_eq!(left, 0, "{}", ferry.log());
}
