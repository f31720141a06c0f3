//! The behaviours every source and every sink must show, written once.
//!
//! Source tests read from the kit's system into a verification Redis
//! (`SET order:{order_id}`), whose command counters reveal duplicates.
//! Sink tests feed the kit's sink from ferry's `generate` source (or, for
//! invalid input, from a Redis list) and read back what arrived.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferry::connectors::generate::order;
use nix::sys::signal::Signal;

use crate::kits::{Guarantee, SinkKit, SourceKit};
use crate::support::*;

const WAIT: Duration = Duration::from_secs(90);

fn orders(ids: std::ops::Range<u64>) -> Vec<String> {
    ids.map(order).collect()
}

/// Order ids found in payloads.
fn ids(payloads: &[String]) -> BTreeSet<u64> {
    payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter_map(|v| v["order_id"].as_u64())
        .collect()
}

fn dead_letter_table(url: &str) -> String {
    format!(
        "[pipeline.dead_letter]\ntype = \"redis\"\nurl = \"{url}\"\nwrite = \"xadd\"\nkey = \"dead\"\n"
    )
}

/// A pipeline from the kit's source into the verification Redis. Small
/// batches keep the flow slow enough for a stop to land mid-stream.
fn source_pipeline(source: &str, verify: &RedisServer, dead_letter: bool) -> String {
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
        url = verify.url(),
        dl = if dead_letter {
            dead_letter_table(&verify.url())
        } else {
            String::new()
        },
    )
}

fn start_ferry<K: SourceKit>(config: &str) -> Ferry {
    let ferry = Ferry::start(config);
    wait_until(WAIT, K::READY, || ferry.log().contains(K::READY));
    ferry
}

fn stop(ferry: &mut Ferry) {
    ferry.signal(Signal::SIGTERM);
    ferry.wait_success(Duration::from_secs(30));
}

fn orders_in(verify: &RedisServer) -> u64 {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("order:*")
        .query(&mut verify.conn())
        .unwrap();
    keys.len() as u64
}

fn assert_orders(verify: &RedisServer, ids: std::ops::Range<u64>) {
    let mut conn = verify.conn();
    for n in ids {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("order:{n}"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(v.as_deref(), Some(order(n).as_str()), "order {n}");
    }
}

pub async fn source_delivers_and_acknowledges<K: SourceKit>(name: &str) {
    const N: u64 = 300;
    let kit = K::start().await;
    let verify = RedisServer::start();
    let config = source_pipeline(&kit.source(), &verify, false);
    if !K::LIVE_ONLY {
        kit.put(&orders(1..N + 1)).await;
    }
    let mut ferry = start_ferry::<K>(&config);
    if K::LIVE_ONLY {
        kit.put(&orders(1..N + 1)).await;
    }
    wait_until(WAIT, "every order", || orders_in(&verify) == N);
    stop(&mut ferry);
    assert_orders(&verify, 1..N + 1);
    assert_eq!(
        kit.outstanding().await,
        0,
        "{name}: everything acknowledged\n{}",
        ferry.log()
    );
}

/// Stops ferry mid-stream with `signal`, starts it again, and checks that
/// nothing was lost; prints how many orders were written twice.
async fn source_resumes<K: SourceKit>(name: &str, signal: Signal) {
    const N: u64 = 20_000;
    let what = if signal == Signal::SIGKILL {
        "crash (SIGKILL)"
    } else {
        "restart (SIGTERM)"
    };
    if K::GUARANTEE == Guarantee::AtMostOnce {
        println!(
            "conformance {name}: {what}: not applicable, the source is at-most-once by nature"
        );
        return;
    }
    let kit = K::start().await;
    let verify = RedisServer::start();
    let config = source_pipeline(&kit.source(), &verify, false);
    kit.put(&orders(1..N + 1)).await;
    let mut first = start_ferry::<K>(&config);
    wait_until(WAIT, "a quarter of the orders", || {
        orders_in(&verify) >= N / 4
    });
    first.signal(signal);
    first
        .wait_timeout(Duration::from_secs(30))
        .expect("ferry stops");
    let at_stop = orders_in(&verify);
    if signal == Signal::SIGKILL {
        std::thread::sleep(K::RESTART_DELAY);
    }
    let mut second = start_ferry::<K>(&config);
    wait_until(WAIT, "every order after the restart", || {
        orders_in(&verify) == N
    });
    stop(&mut second);
    assert_orders(&verify, 1..N + 1);
    if K::GUARANTEE == Guarantee::AtLeastOnce {
        assert_eq!(
            kit.outstanding().await,
            0,
            "{name}: everything acknowledged"
        );
    }
    let duplicates = verify.calls("set") - N;
    println!(
        "conformance {name}: {what} with {at_stop} of {N} orders written: no loss; {duplicates} written twice"
    );
}

pub async fn source_resumes_after_a_graceful_restart<K: SourceKit>(name: &str) {
    source_resumes::<K>(name, Signal::SIGTERM).await;
}

pub async fn source_resumes_after_a_crash<K: SourceKit>(name: &str) {
    source_resumes::<K>(name, Signal::SIGKILL).await;
}

pub async fn source_sends_invalid_input_to_the_dead_letter_sink<K: SourceKit>(name: &str) {
    let kit = K::start().await;
    let verify = RedisServer::start();
    let config = source_pipeline(&kit.source(), &verify, true);
    let mut input = orders(1..11);
    input.push("this is not an order".to_owned());
    input.extend(orders(11..21));
    if !K::LIVE_ONLY {
        kit.put(&input).await;
    }
    let mut ferry = start_ferry::<K>(&config);
    if K::LIVE_ONLY {
        kit.put(&input).await;
    }
    let dead_letters = || -> u64 {
        redis::cmd("XLEN")
            .arg("dead")
            .query(&mut verify.conn())
            .unwrap()
    };
    wait_until(WAIT, "valid orders and the dead letter", || {
        orders_in(&verify) == 20 && dead_letters() == 1
    });
    stop(&mut ferry);
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("dead")
        .arg("-")
        .arg("+")
        .query(&mut verify.conn())
        .unwrap();
    let entry = &entries.ids[0];
    let payload: String = entry.get("payload").unwrap();
    let error: String = entry.get("header.ferry.error").unwrap();
    assert_eq!(payload, "this is not an order");
    assert!(error.contains("not valid JSON"), "{name}: {error}");
    assert_eq!(
        kit.outstanding().await,
        0,
        "{name}: the dead-lettered message is acknowledged too"
    );
}

pub async fn source_survives_a_broker_restart<K: SourceKit>(name: &str) {
    const HALF: u64 = 500;
    let mut kit = K::start().await;
    let verify = RedisServer::start();
    let config = source_pipeline(&kit.source(), &verify, false);
    if !K::LIVE_ONLY {
        kit.put(&orders(1..HALF + 1)).await;
    }
    let mut ferry = start_ferry::<K>(&config);
    if K::LIVE_ONLY {
        kit.put(&orders(1..HALF + 1)).await;
    }
    wait_until(WAIT, "the first half", || orders_in(&verify) == HALF);
    let restarted = Instant::now();
    kit.restart_broker().await;
    if K::LIVE_ONLY {
        wait_until(WAIT, "the source to subscribe again", || {
            ferry.log().matches(K::READY).count() >= 2
        });
    }
    kit.put(&orders(HALF + 1..2 * HALF + 1)).await;
    wait_until(WAIT, "the second half after the broker restart", || {
        orders_in(&verify) == 2 * HALF
    });
    println!(
        "conformance {name}: broker restart: ferry reconnected and delivered the rest within {:.1}s",
        restarted.elapsed().as_secs_f64()
    );
    stop(&mut ferry);
    assert_orders(&verify, 1..2 * HALF + 1);
    if K::GUARANTEE == Guarantee::AtLeastOnce {
        assert_eq!(
            kit.outstanding().await,
            0,
            "{name}: everything acknowledged"
        );
    }
}

// ------------------------------------------------------------------ sinks

fn generate_pipeline(count: u64, rate: Option<u64>, sink: &str) -> String {
    let rate = rate.map(|r| format!(", rate = {r}")).unwrap_or_default();
    format!(
        "[[pipeline]]\nname = \"conformance\"\nsource = {{ type = \"generate\", count = {count}{rate} }}\n[[pipeline.sink]]\n{sink}"
    )
}

pub async fn sink_receives_every_message<K: SinkKit>(name: &str) {
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

pub async fn sink_sends_invalid_input_to_the_dead_letter_sink<K: SinkKit>(name: &str) {
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

pub async fn sink_survives_a_broker_restart<K: SinkKit>(name: &str) {
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
