//! AMQP header tables reach steps and sinks as plain JSON: RabbitMQ's own
//! `x-death` header, as a dead-lettered message carries it.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_x_death_header_reads_as_plain_json() {
    let vhost = RabbitVhost::create();
    vhost.declare_queue("dead").await;
    // Messages in `work` expire at once and are dead-lettered to `dead`.
    let (_conn, ch) = vhost.channel().await;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from("dead")),
    );
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(0));
    ch.queue_declare("work".into(), Default::default(), args)
        .await
        .unwrap();
    vhost
        .publish("work", &[r#"{"order_id": 1}"#.to_owned()])
        .await;

    let redis = RedisServer::start();
    let config = format!(
        r#"
[[pipeline]]
name = "deaths"
source = {{ type = "amqp", url = "{}", queue = "dead" }}

[[pipeline.step]]
map = '$headers["x-death"] | fromjson'

[[pipeline.sink]]
type = "redis"
url = "{}"
write = "set"
key = "death"
"#,
        vhost.url(),
        redis.url()
    );
    let ferry = Ferry::start(&config);
    wait_until(
        Duration::from_secs(30),
        "the dead letter to be copied",
        || redis.get("death").is_some(),
    );
    let death: serde_json::Value = serde_json::from_str(&redis.get("death").unwrap()).unwrap();
    assert_eq!(death["count"], 1, "{death}\n{}", ferry.log());
    assert_eq!(death["queue"], "work", "{death}");
    assert_eq!(death["reason"], "expired", "{death}");
    assert_eq!(
        death["routing-keys"],
        serde_json::json!(["work"]),
        "{death}"
    );
    assert!(death["time"].is_number(), "{death}");
}
