//! The scenarios a source can opt into, one per guarantee (main.rs lists
//! which kit runs which). Each reads from the kit's system into a
//! verification Redis (`SET order:{order_id}`), whose command counters
//! reveal duplicates, and prints what it measured.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::common::*;
use crate::kits::{GroupKit, SourceKit};
use crate::support::*;

/// Every message arrives, and is acknowledged.
pub async fn delivers_and_acknowledges<K: SourceKit>(name: &str) {
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
async fn resumes<K: SourceKit>(name: &str, signal: Signal) {
    const N: u64 = 20_000;
    let what = if signal == Signal::SIGKILL {
        "crash (SIGKILL)"
    } else {
        "restart (SIGTERM)"
    };
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
    assert_eq!(
        kit.outstanding().await,
        0,
        "{name}: everything acknowledged"
    );
    println!(
        "conformance {name}: {what} with {at_stop} of {N} orders written: {}",
        tally_of_sets(&verify, N)
    );
}

/// SIGTERM mid-stream, then a restart: nothing lost.
pub async fn resumes_after_a_graceful_restart_without_loss<K: SourceKit>(name: &str) {
    resumes::<K>(name, Signal::SIGTERM).await;
}

/// SIGKILL mid-stream, then a restart: nothing lost.
pub async fn resumes_after_a_crash_without_loss<K: SourceKit>(name: &str) {
    resumes::<K>(name, Signal::SIGKILL).await;
}

/// A message no sink can take goes to the dead-letter sink, and the source
/// acknowledges it once it is there.
pub async fn sends_invalid_input_to_the_dead_letter_sink<K: SourceKit>(name: &str) {
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
    let entries = verify.xrange("dead");
    let entry = &entries[0];
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

/// The broker restarts (or drops every connection): ferry reconnects and
/// delivers what comes after.
pub async fn survives_a_broker_restart<K: SourceKit>(name: &str) {
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
    assert_eq!(
        kit.outstanding().await,
        0,
        "{name}: everything acknowledged"
    );
}

/// While a backlog flows, the reply to one read is lost (the system
/// executed it: a list moved elements, a stream delivered entries to this
/// consumer), then every connection is cut, then connections are refused
/// for a while. The running ferry, without a restart, delivers everything.
///
/// A pub/sub source has no backlog: messages published while it is
/// subscribed arrive, through cuts and outages; those published while it
/// is not are lost by nature and not published here.
pub async fn survives_connection_cuts_mid_read<K: SourceKit>(name: &str) {
    if K::LIVE_ONLY {
        return live_source_survives_connection_cuts::<K>(name).await;
    }
    const N: u64 = 20_000;
    let kit = K::start().await;
    let verify = RedisServer::start();
    let slow = slowed(&verify);
    let url = format!("redis://{}", slow.addr());
    let config = source_pipeline_to(&kit.source(), &url, false);
    kit.put(&orders(1..N + 1)).await;
    let mut ferry = start_ferry::<K>(&config);
    let proxy = kit.proxy();
    let mut faults = Vec::new();
    if let Some(read) = K::read_request() {
        wait_until(WAIT, "the first orders", || orders_in(&verify) > 0);
        let before = proxy.dropped_replies();
        proxy.drop_reply_to(read.clone());
        assert!(
            proxy.wait_dropped(before, WAIT),
            "{name}: no {read:?} to lose the reply of\n{}",
            ferry.log()
        );
        faults.push(format!(
            "lost the reply to {read:?} with {} of {N} written",
            orders_in(&verify)
        ));
    }
    until_or_log(&ferry, "a third of the orders", || {
        orders_in(&verify) >= N / 3
    });
    let cut = proxy.cut();
    faults.push(format!(
        "cut {cut} connections with {} written",
        orders_in(&verify)
    ));
    until_or_log(&ferry, "two thirds of the orders", || {
        orders_in(&verify) >= 2 * N / 3
    });
    proxy.outage(Duration::from_secs(2));
    faults.push(format!("a 2s outage with {} written", orders_in(&verify)));
    let deadline = Instant::now() + WAIT;
    while orders_in(&verify) < N && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let tally = tally_of_sets(&verify, N);
    println!(
        "conformance {name}: connection cuts mid-read ({}): {tally}",
        faults.join("; ")
    );
    assert_eq!(
        tally.lost,
        0,
        "{name}: every order arrives without a restart\n{}",
        ferry.log()
    );
    // Acknowledgements trail the writes (Kafka commits every few seconds):
    // give them the time a loaded machine needs before stopping, so that
    // the check below is about what ferry acknowledged, not about how long
    // the shutdown's drain may take.
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && kit.outstanding().await > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(&mut ferry);
    assert_orders(&verify, 1..N + 1);
    assert_eq!(
        kit.outstanding().await,
        0,
        "{name}: everything acknowledged"
    );
}

async fn live_source_survives_connection_cuts<K: SourceKit>(name: &str) {
    const PART: u64 = 300;
    let kit = K::start().await;
    let verify = RedisServer::start();
    let config = source_pipeline(&kit.source(), &verify, false);
    let mut ferry = start_ferry::<K>(&config);
    let proxy = kit.proxy();
    let mut sent = 0;
    for (round, fault) in ["a cut", "a 2s outage"].into_iter().enumerate() {
        kit.put(&orders(sent + 1..sent + PART + 1)).await;
        sent += PART;
        wait_until(WAIT, "the orders published while subscribed", || {
            orders_in(&verify) == sent
        });
        match round {
            0 => {
                proxy.cut();
            }
            _ => proxy.outage(Duration::from_secs(2)),
        }
        wait_until(
            WAIT,
            &format!("the source to subscribe again after {fault}"),
            || ferry.log().matches(K::READY).count() >= round + 2,
        );
    }
    kit.put(&orders(sent + 1..sent + PART + 1)).await;
    sent += PART;
    wait_until(WAIT, "the orders published after the outage", || {
        orders_in(&verify) == sent
    });
    println!(
        "conformance {name}: connection cuts mid-read (a cut, a 2s outage; nothing published \
         while unsubscribed): {}",
        tally_of_sets(&verify, sent)
    );
    stop(&mut ferry);
    assert_orders(&verify, 1..sent + 1);
}

/// Health follows what ferry observes: during an outage `/ready` says 503,
/// and once a read works again it says 200, without waiting for a message.
pub async fn is_ready_again_once_a_read_works<K: SourceKit>(name: &str) {
    const N: u64 = 20;
    let kit = K::start().await;
    let verify = RedisServer::start();
    let config = source_pipeline(&kit.source(), &verify, false);
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    if !K::LIVE_ONLY {
        kit.put(&orders(1..N + 1)).await;
    }
    let mut ferry = start_ferry_with::<K>(&config, &["--http", &http]);
    if K::LIVE_ONLY {
        kit.put(&orders(1..N + 1)).await;
    }
    wait_until(WAIT, "the orders", || orders_in(&verify) == N);
    wait_until(WAIT, "/ready to say 200", || is_ready(port));
    let proxy = kit.proxy();
    proxy.outage(Duration::from_secs(5));
    let cut = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "/ready to say 503 during the outage",
        || !is_ready(port),
    );
    let not_ready = cut.elapsed();
    // No message is sent from here on.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_ready(port) {
        assert!(
            Instant::now() < deadline,
            "{name}: still not ready a minute after the outage ended: {:?}\n{}",
            http_get(port, "/ready"),
            ferry.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "conformance {name}: a 5s outage: not ready after {:.1}s, ready again {:.1}s after it began, \
         with no message since",
        not_ready.as_secs_f64(),
        cut.elapsed().as_secs_f64()
    );
    stop(&mut ferry);
}

/// Several ferry processes consume one group (a Kafka consumer group, a
/// Redis Stream consumer group, RabbitMQ competing consumers) while
/// replies are lost and connections cut. Nothing is lost; with a position
/// in the source, a Redis sink with `exactly_once` writes nothing twice.
pub async fn several_consumers_in_one_group<K: GroupKit>(name: &str) {
    const N: u64 = 20_000;
    const MEMBERS: usize = 3;
    let kit = K::start().await;
    let verify = RedisServer::start();
    let slow = slowed(&verify);
    let exactly_once = if K::EXACTLY_ONCE {
        "exactly_once = true\n"
    } else {
        ""
    };
    let config = |n: usize| {
        format!(
            r#"
[[pipeline]]
name = "conformance"
source = {source}
buffer = 64

[[pipeline.sink]]
type = "redis"
url = "redis://{slow}"
write = "rpush"
key = "received"
batch_size = 50
{exactly_once}"#,
            source = kit.member(n),
            slow = slow.addr(),
        )
    };
    let mut members: Vec<Ferry> = (0..MEMBERS).map(|n| start_ferry::<K>(&config(n))).collect();
    kit.put(&orders(1..N + 1)).await;
    let received = || -> u64 {
        redis::cmd("LLEN")
            .arg("received")
            .query(&mut verify.conn())
            .unwrap()
    };
    let proxy = kit.proxy();
    let mut faults = Vec::new();
    // Faults land at a tenth, a fifth and three tenths of the orders, or
    // once nothing arrives for 5s (entries skipped by mistake never do).
    let reach = |target: u64| {
        let deadline = Instant::now() + WAIT;
        let (mut last, mut since) = (received(), Instant::now());
        while last < target && since.elapsed() < Duration::from_secs(5) && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
            let now = received();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
    };
    if let Some(read) = K::read_request() {
        reach(N / 10);
        let before = proxy.dropped_replies();
        proxy.drop_reply_to(read.clone());
        if proxy.wait_dropped(before, Duration::from_secs(30)) {
            faults.push(format!("lost the reply to {read:?} at {}", received()));
        } else {
            proxy.disarm();
        }
    }
    reach(N / 5);
    faults.push(format!("cut {} connections at {}", proxy.cut(), received()));
    reach(3 * N / 10);
    proxy.outage(Duration::from_secs(2));
    faults.push(format!("a 2s outage at {}", received()));
    // Until everything is acknowledged (only after it was written, or
    // skipped by mistake) and nothing more arrives.
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && kit.outstanding().await > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settled(Duration::from_secs(30), Duration::from_secs(3), received);
    for m in &mut members {
        stop(m);
    }
    let tally = Tally::of(N, order_ids_in_list(&mut verify.conn(), "received"));
    println!(
        "conformance {name}: {MEMBERS} consumers in one group{} ({}): {tally}",
        if K::EXACTLY_ONCE {
            " into a Redis sink with exactly_once"
        } else {
            ""
        },
        faults.join("; ")
    );
    assert_eq!(
        tally.lost,
        0,
        "{name}: nothing lost ({tally})\n{}",
        members[0].log()
    );
    if K::EXACTLY_ONCE {
        assert_eq!(
            tally.duplicated, 0,
            "{name}: nothing written twice ({tally})"
        );
    }
    let outstanding = kit.outstanding().await;
    if outstanding > 0 {
        for (i, m) in members.iter().enumerate() {
            let log = m.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("--- member {i}'s log ends:\n{}", tail.join("\n"));
        }
    }
    assert_eq!(outstanding, 0, "{name}: everything acknowledged");
}

/// Checkpoint capture: acknowledgements that arrive out of order never
/// acknowledge past a message that is not confirmed.
///
/// One order in ten goes to a sink whose Redis is unreachable (through a
/// proxy that refuses connections), the others to a sink that writes at
/// once, so confirmations arrive for the orders around each stalled one.
/// ferry is killed then: the system must still hold as unacknowledged at
/// least every order that was not written. A second ferry, with both sinks
/// reachable, delivers them all.
pub async fn never_acknowledges_past_an_unconfirmed_message<K: SourceKit>(name: &str) {
    const N: u64 = 2_000;
    let kit = K::start().await;
    let verify = RedisServer::start();
    let stalled = Proxy::start(&format!("127.0.0.1:{}", verify.port));
    stalled.refuse_for(Duration::from_secs(600));
    let config = format!(
        r#"
[[pipeline]]
name = "conformance"
source = {source}
buffer = 64

[[pipeline.route]]
when = '.order_id % 10 == 5'
sinks = ["stalled"]

[[pipeline.route]]
otherwise = true
sinks = ["direct"]

[[pipeline.sink]]
name = "direct"
type = "redis"
url = "{url}"
write = "set"
key = "order:{{order_id}}"
batch_size = 10

[[pipeline.sink]]
name = "stalled"
type = "redis"
url = "redis://{stalled}"
write = "set"
key = "order:{{order_id}}"
batch_size = 10
"#,
        source = kit.source(),
        url = verify.url(),
        stalled = stalled.addr(),
    );
    kit.put(&orders(1..N + 1)).await;
    let mut first = start_ferry::<K>(&config);
    wait_until(WAIT, "the orders that are not stalled", || {
        orders_in(&verify) >= 10
    });
    // The read loop waits for room for the stalled orders: the flow stops.
    let written = settled(WAIT, Duration::from_secs(2), || orders_in(&verify));
    first.signal(Signal::SIGKILL);
    first
        .wait_timeout(Duration::from_secs(30))
        .expect("ferry stops");
    let unconfirmed = N - written;
    // RabbitMQ requeues the deliveries of a closed connection; give it a moment.
    let mut outstanding = kit.outstanding().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while outstanding < unconfirmed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        outstanding = kit.outstanding().await;
    }
    println!(
        "conformance {name}: acknowledgements out of order: {written} orders confirmed around \
         stalled ones (order 5, 15, 25...); after SIGKILL {} of {N} acknowledged, {outstanding} \
         held for redelivery",
        N - outstanding
    );
    assert!(
        outstanding >= unconfirmed,
        "{name}: {} acknowledged but only {written} confirmed\n{}",
        N - outstanding,
        first.log()
    );
    stalled.refuse_for(Duration::ZERO);
    std::thread::sleep(K::RESTART_DELAY);
    let mut second = start_ferry::<K>(&config);
    wait_until(WAIT, "every order after the restart", || {
        orders_in(&verify) == N
    });
    stop(&mut second);
    assert_orders(&verify, 1..N + 1);
    assert_eq!(
        kit.outstanding().await,
        0,
        "{name}: everything acknowledged"
    );
}

/// [`wait_until`], with the end of ferry's log when it times out.
fn until_or_log(ferry: &Ferry, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > WAIT {
            let log = ferry.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "timed out after {WAIT:?} waiting for {what}; ferry's log ends:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
