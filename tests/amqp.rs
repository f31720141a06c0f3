//! RabbitMQ behaviours beyond the conformance suite: native dead-lettering,
//! unroutable messages, competing consumers.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::Duration;

use ferry::connectors::generate::order;
use support::*;

fn set_orders(url: &str) -> String {
    format!("type = \"redis\"\nurl = \"{url}\"\nwrite = \"set\"\nkey = \"order:{{order_id}}\"\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_dead_letter_sink_a_rejected_message_goes_to_the_queues_dead_letter_exchange() {
    let vhost = RabbitVhost::create();
    let verify = RedisServer::start();
    let config = format!(
        r#"
[[pipeline]]
name = "t"
[pipeline.source]
type = "amqp"
url = "{url}"
queue = "orders"
rejected = "dead-letter"
declare = {{ exchanges = [{{ name = "dlx", kind = "fanout" }}], queues = [{{ name = "orders", dead_letter_exchange = "dlx" }}, {{ name = "orders.dead" }}], bindings = [{{ queue = "orders.dead", exchange = "dlx" }}] }}
[[pipeline.sink]]
{sink}"#,
        url = vhost.url(),
        sink = set_orders(&verify.url())
    );
    let mut ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(30), "the consumer", || {
        ferry.log().contains("amqp source consuming")
    });
    vhost
        .publish("orders", &[order(1), "not an order".to_owned(), order(2)])
        .await;
    wait_until(Duration::from_secs(30), "the valid orders", || {
        verify.dbsize() == 2
    });
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead.extend(vhost.drain("orders.dead").await);
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ferry.stop(Duration::from_secs(10));
    assert_eq!(dead, vec![b"not an order".to_vec()]);
    assert_eq!(vhost.queue_len("orders").await, 0);
    assert!(ferry.log().contains("rejected to the source"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unroutable_message_is_dead_lettered_instead_of_vanishing() {
    let vhost = RabbitVhost::create();
    let feed = RedisServer::start();
    let mut conn = feed.conn();
    let _: () = redis::cmd("RPUSH")
        .arg("in")
        .arg(&[order(1), order(2)])
        .query(&mut conn)
        .unwrap();
    let config = format!(
        r#"
[[pipeline]]
name = "t"
source = {{ type = "redis-list", url = "{feed}", list = "in", block = "200ms" }}
[pipeline.dead_letter]
type = "redis"
url = "{feed}"
write = "xadd"
key = "dead"
[[pipeline.sink]]
type = "amqp"
url = "{url}"
exchange = "shop"
routing_key = "order.{{order_id}}"
declare = {{ exchanges = [{{ name = "shop", kind = "topic" }}], queues = [{{ name = "odd" }}], bindings = [{{ queue = "odd", exchange = "shop", routing_key = "order.1" }}] }}
"#,
        feed = feed.url(),
        url = vhost.url()
    );
    let mut ferry = Ferry::start(&config);
    let dead = || -> u64 {
        redis::cmd("XLEN")
            .arg("dead")
            .query(&mut feed.conn())
            .unwrap()
    };
    wait_until(Duration::from_secs(30), "the unroutable order", || {
        dead() == 1
    });
    ferry.stop(Duration::from_secs(10));
    assert_eq!(vhost.drain("odd").await, vec![order(1).into_bytes()]);
    let error: String = feed.xrange("dead")[0].get("header.ferry.error").unwrap();
    assert!(error.contains("unroutable"), "{error}");
    assert!(error.contains("order.2"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn several_ferry_processes_share_one_queue_as_competing_consumers() {
    const N: u64 = 4_000;
    let vhost = RabbitVhost::create();
    vhost.declare_queue("orders").await;
    let verify = RedisServer::start();
    let config = format!(
        "[[pipeline]]\nname = \"t\"\nsource = {{ type = \"amqp\", url = \"{}\", queue = \"orders\", prefetch = 20 }}\nbuffer = 16\n[[pipeline.sink]]\n{}batch_size = 10\n",
        vhost.url(),
        set_orders(&verify.url())
    );
    let mut a = Ferry::start(&config);
    let mut b = Ferry::start(&config);
    for f in [&a, &b] {
        wait_until(Duration::from_secs(30), "both consumers", || {
            f.log().contains("amqp source consuming")
        });
    }
    let payloads: Vec<String> = (1..=N).map(order).collect();
    vhost.publish("orders", &payloads).await;
    wait_until(Duration::from_secs(60), "every order", || {
        verify.dbsize() == N
    });
    for f in [&mut a, &mut b] {
        f.stop(Duration::from_secs(10));
    }
    let received = |f: &Ferry| -> u64 {
        let log = f.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("pipeline stopped"))
            .unwrap()
            .to_owned();
        let n = line
            .split("received=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        n.parse().unwrap()
    };
    let (ra, rb) = (received(&a), received(&b));
    println!("competing consumers: {ra} + {rb} of {N} orders");
    assert!(
        ra > 0 && rb > 0,
        "both processes took a share: {ra} and {rb}"
    );
    assert_eq!(ra + rb, N, "each message went to one of them");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_rejected_requeue_a_message_no_sink_takes_stays_in_the_queue() {
    let vhost = RabbitVhost::create();
    vhost.declare_queue("orders").await;
    let verify = RedisServer::start();
    let config = format!(
        "[[pipeline]]\nname = \"t\"\nsource = {{ type = \"amqp\", url = \"{}\", queue = \"orders\", rejected = \"requeue\" }}\n[[pipeline.sink]]\n{}",
        vhost.url(),
        set_orders(&verify.url())
    );
    let mut ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(30), "the consumer", || {
        ferry.log().contains("amqp source consuming")
    });
    vhost
        .publish("orders", &[order(1), "not an order".to_owned()])
        .await;
    wait_until(Duration::from_secs(30), "the valid order", || {
        verify.dbsize() == 1
    });
    wait_until(
        Duration::from_secs(30),
        "the invalid one to come back",
        || ferry.log().matches("rejected to the source").count() >= 2,
    );
    // It comes back about once a second, not in a loop as fast as
    // RabbitMQ can redeliver it.
    let before = ferry.log().matches("rejected to the source").count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = ferry.log().matches("rejected to the source").count() - before;
    assert!((1..=6).contains(&during), "{during} rejections in 3s");
    ferry.stop(Duration::from_secs(10));
    assert_eq!(
        vhost.drain("orders").await,
        vec![b"not an order".to_vec()],
        "still queued, not lost"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_drain_until_the_end_takes_every_ready_message_and_stops() {
    let vhost = RabbitVhost::create();
    vhost.declare_queue("orders").await;
    let orders: Vec<String> = (1..=300).map(order).collect();
    vhost.publish("orders", &orders).await;
    let verify = RedisServer::start();
    let config = format!(
        "[[pipeline]]\nname = \"t\"\nsource = {{ type = \"amqp\", url = \"{}\", queue = \"orders\", prefetch = 50, until = \"end\" }}\n[[pipeline.sink]]\n{}",
        vhost.url(),
        set_orders(&verify.url())
    );
    let mut ferry = Ferry::start(&config);
    let status = tokio::task::spawn_blocking(move || {
        let status = ferry.wait_timeout(Duration::from_secs(30));
        (status, ferry.log())
    })
    .await
    .unwrap();
    let (status, log) = status;
    assert!(status.is_some_and(|s| s.success()), "{log}");
    assert!(log.contains("a job of 300 messages"), "{log}");
    assert_eq!(verify.dbsize(), 300);
    assert_eq!(vhost.queue_len("orders").await, 0, "all acknowledged");
}
