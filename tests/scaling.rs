//! Scaling out on the brokers' own mechanisms: several ferry processes in
//! one Kafka consumer group, or one Redis consumer group, share the work.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::Duration;

use support::*;

fn received(f: &Ferry) -> u64 {
    let log = f.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("pipeline stopped"))
        .unwrap_or_else(|| panic!("no summary\n{log}"))
        .to_owned();
    line.split("received=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn config(source: &str, verify: &RedisServer) -> String {
    format!(
        "[[pipeline]]\nname = \"t\"\nsource = {source}\nbuffer = 32\n[[pipeline.sink]]\ntype = \"redis\"\nurl = \"{}\"\nwrite = \"set\"\nkey = \"order:{{order_id}}\"\nbatch_size = 20\n",
        verify.url()
    )
}

fn stop_both(a: &mut Ferry, b: &mut Ferry) -> (u64, u64) {
    for f in [&mut *a, &mut *b] {
        f.stop(Duration::from_secs(30));
    }
    (received(a), received(b))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_ferry_processes_in_one_kafka_group_split_the_partitions() {
    const N: u64 = 20_000;
    let kafka = Kafka::start();
    let topic = unique("scale");
    let group = unique("group");
    kafka.create_topic(&topic, 4).await;
    let verify = RedisServer::start();
    let source = format!(
        r#"{{ type = "kafka", brokers = "{}", topics = ["{topic}"], group = "{group}", options = {{ "session.timeout.ms" = "6000" }} }}"#,
        kafka.brokers
    );
    let mut a = Ferry::start(&config(&source, &verify));
    let mut b = Ferry::start(&config(&source, &verify));
    for f in [&a, &b] {
        wait_until(Duration::from_secs(60), "a share of the partitions", || {
            f.log()
                .lines()
                .any(|l| l.contains("kafka partitions assigned") && l.contains(&topic))
        });
    }
    kafka.produce_orders(&topic, 1..N + 1).await;
    wait_until(Duration::from_secs(120), "every order", || {
        verify.dbsize() == N
    });
    let (ra, rb) = stop_both(&mut a, &mut b);
    println!("kafka consumer group: {ra} + {rb} records for {N} orders");
    assert!(ra > 0 && rb > 0, "both processes consumed: {ra} and {rb}");
    assert!(ra + rb >= N);
}

#[test]
fn two_ferry_consumers_in_one_redis_group_split_the_stream() {
    const N: u64 = 5_000;
    let source_redis = RedisServer::start();
    let verify = RedisServer::start();
    let source = |consumer: &str| {
        format!(
            r#"{{ type = "redis-stream", url = "{}", streams = ["orders"], group = "g", consumer = "{consumer}", block = "100ms", batch_size = 20 }}"#,
            source_redis.url()
        )
    };
    let mut a = Ferry::start(&config(&source("a"), &verify));
    let mut b = Ferry::start(&config(&source("b"), &verify));
    for f in [&a, &b] {
        wait_until(Duration::from_secs(30), "the consumer", || {
            f.log().contains("pipeline running")
        });
    }
    let mut conn = source_redis.conn();
    for chunk in (1..=N).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for n in chunk {
            pipe.cmd("XADD")
                .arg("orders")
                .arg("*")
                .arg("payload")
                .arg(ferry::connectors::generate::order(*n))
                .ignore();
        }
        pipe.exec(&mut conn).unwrap();
    }
    wait_until(Duration::from_secs(60), "every order", || {
        verify.dbsize() == N
    });
    let (ra, rb) = stop_both(&mut a, &mut b);
    println!("redis consumer group: {ra} + {rb} entries for {N} orders");
    assert!(ra > 0 && rb > 0, "both consumers read: {ra} and {rb}");
    assert_eq!(ra + rb, N, "each entry went to one consumer");
}
