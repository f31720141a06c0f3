//! The scenarios a sink can opt into (main.rs lists which kit runs which).
//! Each feeds the kit's sink from ferry's `generate` source (or, for
//! invalid input, from a Redis list) and reads back what arrived.

use std::time::{Duration, Instant};

use ferry::connectors::generate::order;

use crate::common::*;
use crate::sink_kits::SinkKit;
use crate::support::*;

fn generate_pipeline(count: u64, rate: Option<u64>, sink: &str) -> String {
    let rate = rate.map(|r| format!(", rate = {r}")).unwrap_or_default();
    format!(
        "[[pipeline]]\nname = \"conformance\"\nsource = {{ type = \"generate\", count = {count}{rate} }}\n[[pipeline.sink]]\n{sink}"
    )
}

/// Every message the sink is given arrives, unchanged.
pub async fn receives_every_message<K: SinkKit>(name: &str) {
    const N: u64 = 2_000;
    let kit = K::start().await;
    let mut ferry = Ferry::start(&generate_pipeline(N, None, &kit.sink(false)));
    ferry.wait_success(WAIT);
    let received = kit.received().await;
    assert_eq!(ids(&received), (1..N + 1).collect(), "{name}");
    for p in &received {
        let n = serde_json::from_str::<serde_json::Value>(p).unwrap()["order_id"]
            .as_u64()
            .unwrap();
        assert_eq!(p, &order(n), "{name}: payload unchanged");
    }
}

/// A message the sink cannot take goes to the dead-letter sink; the rest
/// arrive.
pub async fn sends_invalid_input_to_the_dead_letter_sink<K: SinkKit>(name: &str) {
    let kit = K::start().await;
    let feed = RedisServer::start();
    let mut conn = feed.conn();
    let mut input = orders(1..51);
    input.insert(25, "this is not an order".to_owned());
    for p in &input {
        let _: () = redis::cmd("LPUSH")
            .arg("in")
            .arg(p)
            .query(&mut conn)
            .unwrap();
    }
    let config = format!(
        "[[pipeline]]\nname = \"conformance\"\nsource = {{ type = \"redis-list\", url = \"{url}\", list = \"in\", block = \"200ms\" }}\n{dl}\n[[pipeline.sink]]\n{sink}",
        url = feed.url(),
        dl = dead_letter_table(&feed.url()),
        sink = kit.sink(true),
    );
    let mut ferry = Ferry::start(&config);
    let dead_letters = || -> u64 {
        redis::cmd("XLEN")
            .arg("dead")
            .query(&mut feed.conn())
            .unwrap()
    };
    wait_until(WAIT, "the dead letter", || dead_letters() == 1);
    let mut received = Vec::new();
    let deadline = Instant::now() + WAIT;
    while ids(&received).len() < 50 && Instant::now() < deadline {
        received = kit.received().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(&mut ferry);
    assert_eq!(
        ids(&received),
        (1..51).collect(),
        "{name}: every valid order arrived"
    );
    let left: u64 = redis::cmd("LLEN")
        .arg("in")
        .query(&mut feed.conn())
        .unwrap();
    assert_eq!(left, 0, "{name}: the source list is consumed");
}

/// The broker restarts mid-stream (or drops every connection): writes are
/// retried until they land; nothing is lost.
pub async fn survives_a_broker_restart<K: SinkKit>(name: &str) {
    const N: u64 = 3_000;
    let mut kit = K::start().await;
    let mut ferry = Ferry::start(&generate_pipeline(N, Some(1_000), &kit.sink(false)));
    let deadline = Instant::now() + WAIT;
    while ids(&kit.received().await).len() < 500 {
        assert!(
            Instant::now() < deadline,
            "{name}: nothing arrives\n{}",
            ferry.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restarted = Instant::now();
    kit.restart_broker().await;
    ferry.wait_success(WAIT);
    let received = kit.received().await;
    assert_eq!(ids(&received), (1..N + 1).collect(), "{name}: nothing lost");
    let retried = ferry.log().matches("retrying in").count();
    println!(
        "conformance {name}: broker restart: every message arrived ({} copies for {N}); \
         {retried} retried writes; finished {:.1}s after the restart",
        received.len(),
        restarted.elapsed().as_secs_f64()
    );
}

/// While ferry writes, the reply to one write is lost (the system took
/// the write), then every connection is cut, then connections are refused
/// for a while. Every message arrives; the copies are printed.
pub async fn survives_connection_cuts_mid_write<K: SinkKit>(name: &str) {
    const N: u64 = 3_000;
    let kit = K::start().await;
    let mut ferry = Ferry::start(&generate_pipeline(N, Some(500), &kit.sink(false)));
    let proxy = kit.proxy();
    let mut faults = Vec::new();
    arrived(&kit, 100).await;
    let write = K::write_request();
    let before = proxy.dropped_replies();
    proxy.drop_reply_to(write.clone());
    assert!(
        proxy.wait_dropped(before, WAIT),
        "{name}: no {write:?} to lose the reply of\n{}",
        ferry.log()
    );
    faults.push(format!("lost the reply to {write:?}"));
    let n = arrived(&kit, N as usize / 3).await;
    faults.push(format!("cut {} connections at {n}", proxy.cut()));
    let n = arrived(&kit, 2 * N as usize / 3).await;
    proxy.outage(Duration::from_secs(2));
    faults.push(format!("a 2s outage at {n}"));
    ferry.wait_success(WAIT);
    let received = kit.received().await;
    let tally = Tally::of(N, received.iter().filter_map(|p| order_id(p.as_bytes())));
    let retried = ferry.log().matches("retrying in").count();
    println!(
        "conformance {name}: connection cuts mid-write ({}): {tally}; {retried} retried writes",
        faults.join("; ")
    );
    assert_eq!(tally.lost, 0, "{name}: nothing lost\n{}", ferry.log());
}

/// Waits until at least `at_least` distinct orders arrived; how many did.
async fn arrived<K: SinkKit>(kit: &K, at_least: usize) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = ids(&kit.received().await).len();
        if n >= at_least {
            return n;
        }
        assert!(Instant::now() < deadline, "only {n} arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
