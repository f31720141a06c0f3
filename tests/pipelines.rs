//! Pipelines end to end: retries that give up into the dead-letter sink,
//! unmatched messages, chaining one pipeline into another, and steps that
//! split messages.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::Duration;

use ferry::connectors::generate::order;
use support::*;

#[test]
fn a_write_that_keeps_failing_goes_to_the_dead_letter_sink_after_the_configured_attempts() {
    let dead = RedisServer::start();
    let down = free_port(); // nothing listens there
    let config = format!(
        r#"
[[pipeline]]
name = "t"
source = {{ type = "generate", count = 5 }}
[pipeline.dead_letter]
type = "redis"
url = "{dl}"
write = "xadd"
key = "dead"
[[pipeline.sink]]
type = "redis"
url = "redis://127.0.0.1:{down}"
write = "set"
key = "order:{{order_id}}"
timeout = "1s"
retry = {{ attempts = 3, initial = "50ms", max = "200ms" }}
"#,
        dl = dead.url()
    );
    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(60));
    let entries = dead.xrange("dead");
    assert_eq!(entries.len(), 5, "{}", ferry.log());
    for e in &entries {
        assert_eq!(
            e.get::<String>("header.ferry.attempts").as_deref(),
            Some("3")
        );
        let error: String = e.get("header.ferry.error").unwrap();
        assert!(error.contains("gave up after 3 attempts"), "{error}");
        assert!(
            e.get::<String>("header.ferry.sink")
                .unwrap()
                .contains("redis set")
        );
    }
}

#[test]
fn unmatched_messages_are_dead_lettered_unless_dropped_on_purpose() {
    let redis = RedisServer::start();
    let pipeline = |name: &str, unmatched: &str| {
        format!(
            r#"
[[pipeline]]
name = "{name}"
source = {{ type = "generate", count = 10 }}
{unmatched}
[pipeline.dead_letter]
type = "redis"
url = "{url}"
write = "xadd"
key = "dead:{name}"
[[pipeline.route]]
when = '.items > 3'
sinks = ["big"]
[[pipeline.sink]]
name = "big"
type = "redis"
url = "{url}"
write = "sadd"
key = "big:{name}"
member = "{{order_id}}"
"#,
            url = redis.url()
        )
    };
    let config = pipeline("strict", "") + &pipeline("lenient", "unmatched = \"drop\"");
    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(60));
    // items = n % 5 + 1: orders 3, 4, 8, 9 have more than 3.
    for name in ["strict", "lenient"] {
        let big: Vec<u64> = redis::cmd("SMEMBERS")
            .arg(format!("big:{name}"))
            .query(&mut redis.conn())
            .unwrap();
        let mut big = big;
        big.sort();
        assert_eq!(big, [3, 4, 8, 9], "{name}");
    }
    let dead = redis.xrange("dead:strict");
    assert_eq!(dead.len(), 6);
    assert!(
        dead[0]
            .get::<String>("header.ferry.error")
            .unwrap()
            .contains("no route matched")
    );
    assert!(redis.xrange("dead:lenient").is_empty());
    assert!(ferry.log().contains("dropped=6"), "{}", ferry.log());
}

#[test]
fn one_pipeline_consumes_the_output_of_another_and_steps_split_messages() {
    let redis = RedisServer::start();
    let config = format!(
        r#"
# Orders are generated, enriched and put on a stream...
[[pipeline]]
name = "intake"
source = {{ type = "generate", count = 20 }}
[[pipeline.step]]
map = '. as $o | . + {{lines: [range(.items) | {{line: ., order_id: $o.order_id}}]}}'
[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "xadd"
key = "orders"

# ...which the next pipeline consumes, one message per order line.
[[pipeline]]
name = "lines"
source = {{ type = "redis-stream", url = "{url}", streams = ["orders"], group = "lines", block = "200ms" }}
[[pipeline.step]]
map = '.lines[]'
[[pipeline.step]]
key = '"\(.order_id)-\(.line)"'
[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "set"
key = "line:{{key}}"
"#,
        url = redis.url()
    );
    let mut ferry = Ferry::start(&config);
    let expected: usize = (1..=20u64).map(|n| (n % 5 + 1) as usize).sum();
    let lines = || -> usize {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("line:*")
            .query(&mut redis.conn())
            .unwrap();
        keys.len()
    };
    wait_until(Duration::from_secs(60), "every order line", || {
        lines() == expected
    });
    ferry.stop(Duration::from_secs(20));
    let v = redis.get("line:7-2").unwrap();
    assert_eq!(v, r#"{"line":2,"order_id":7}"#);
    let _ = order(1);
}
