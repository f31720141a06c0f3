//! `ferry check --connect`: a good config passes part by part; each kind of
//! broken one fails with the part named and the fix, and exits non-zero.
//! RabbitMQ is the shared node (a vhost of the test's own; a wrong password
//! only fails a login), Redis and Kafka are private servers.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod secure;
mod support;

use secure::check_connect;
use support::{RabbitVhost, RedisServer, TansuServer};

fn pipeline(source: &str, sink: &str) -> String {
    format!("[[pipeline]]\nname = \"p\"\nsource = {source}\n[[pipeline.sink]]\n{sink}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_config_passes_every_part_and_writes_nothing() {
    let kafka = TansuServer::start();
    support::create_topic_at(&kafka.brokers(), "orders", 3).await;
    let redis = RedisServer::start();
    let vhost = RabbitVhost::create();
    vhost.declare_queue("out").await;
    let config = pipeline(
        &format!(
            "{{ type = \"kafka\", brokers = \"{}\", topics = [\"orders\"], group = \"g\" }}",
            kafka.brokers()
        ),
        &format!(
            "type = \"redis\"\nurl = \"{}\"\nwrite = \"set\"\nkey = \"order:{{order_id}}\"\n\
             [[pipeline.sink]]\ntype = \"amqp\"\nurl = \"{}\"\nrouting_key = \"out\"",
            redis.url(),
            vhost.url()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = check_connect(dir.path(), &config);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("topic `orders`: 3 partitions"), "{stdout}");
    assert!(stdout.contains("consumer group `g`: readable"), "{stdout}");
    assert!(stdout.contains("queue `out` exists"), "{stdout}");
    assert!(stdout.contains("3 parts checked, 0 failed"), "{stdout}");
    assert!(
        stdout.contains("amqp://guest:<redacted>@127.0.0.1"),
        "{stdout}"
    );
    assert_eq!(redis.dbsize(), 0, "nothing written");
    assert_eq!(
        support::committed_at(&kafka.brokers(), "g", "orders", 3),
        vec![-1, -1, -1],
        "nothing committed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_rabbitmq_password_and_a_missing_queue_fail_with_their_fixes() {
    let vhost = RabbitVhost::create();
    let wrong = vhost
        .url()
        .replace("guest:guest@", "guest:not-the-password@");
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(
        &format!("{{ type = \"amqp\", url = \"{wrong}\", queue = \"in\" }}"),
        &format!(
            "type = \"amqp\"\nurl = \"{}\"\nrouting_key = \"missing\"",
            vhost.url()
        ),
    );
    let (code, stdout, _) = check_connect(dir.path(), &config);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("FAILED: pipeline `p` source (amqp queue `in`)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fix: RabbitMQ refused the login"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAILED: pipeline `p` sink (amqp queue missing)"),
        "{stdout}"
    );
    assert!(stdout.contains("add it to `declare.queues`"), "{stdout}");
    assert!(!stdout.contains("not-the-password"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_group_and_keyspace_notifications_are_each_reported() {
    let kafka = TansuServer::start();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}",
        pipeline(
            &format!(
                "{{ type = \"kafka\", brokers = \"{}\", topics = [\"absent\"], group = \"g\" }}",
                kafka.brokers()
            ),
            &format!(
                "type = \"redis\"\nurl = \"{}\"\nwrite = \"set\"\nkey = \"k\"",
                redis.url()
            ),
        ),
        pipeline(
            &format!(
                "{{ type = \"redis-keyspace\", url = \"{}\", pattern = \"user:*\" }}",
                redis.url()
            ),
            &format!(
                "type = \"kafka\"\nbrokers = \"{}\"\ntopic = \"also-absent\"",
                kafka.brokers()
            ),
        )
        .replace("name = \"p\"", "name = \"q\""),
    );
    let (code, stdout, stderr) = check_connect(dir.path(), &config);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("topic `absent` does not exist"), "{stdout}");
    assert!(
        stdout.contains("topic `also-absent` does not exist"),
        "{stdout}"
    );
    assert!(stdout.contains("create_topic"), "{stdout}");
    assert!(stdout.contains("no keyspace notifications"), "{stdout}");
    assert!(
        stdout.contains("CONFIG SET notify-keyspace-events KA"),
        "{stdout}"
    );
    assert!(stdout.contains("4 parts checked, 3 failed"), "{stdout}");
}
