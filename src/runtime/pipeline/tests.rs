//! Unit tests of `pipeline.rs`.

//! `hand_over`: how one source message and its acknowledgement are
//! split across the messages steps make of it, the routes and the sinks.

use std::path::Path;
use std::sync::mpsc as std_mpsc;

use super::*;
use crate::ack::Outcome;
use crate::config::Config;
use crate::runtime::router::ORIGIN_HEADER;

const SINKS: &str = r#"
[[pipeline.sink]]
name = "db"
type = "redis"
url = "redis://x"
write = "set"
key = "{key}"
sync = true
[[pipeline.sink]]
name = "mail"
type = "redis"
url = "redis://x"
write = "xadd"
key = "mail"
[[pipeline.sink]]
name = "crm"
type = "redis"
url = "redis://x"
write = "xadd"
key = "crm"
"#;

/// A router for one pipeline with `extra` (steps, routes) and three
/// sinks, the first of them a two-way sync sink.
fn router(extra: &str) -> Router {
    let text = format!(
        "origin = \"site-a\"\n[[pipeline]]\nname = \"p\"\nsource = {{ type = \"generate\" }}\n{extra}\n{SINKS}"
    );
    let config =
        Config::parse(&text, Path::new("t.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"));
    Router::new(&config, &config.pipelines[0])
}

struct Harness {
    senders: Vec<mpsc::Sender<Delivery>>,
    receivers: Vec<mpsc::Receiver<Delivery>>,
    dead_tx: mpsc::Sender<Delivery>,
    dead_rx: mpsc::Receiver<Delivery>,
    stats: Arc<Stats>,
    stop: CancellationToken,
}

impl Harness {
    fn new() -> Self {
        let (senders, receivers) = (0..3).map(|_| mpsc::channel(16)).unzip();
        let (dead_tx, dead_rx) = mpsc::channel(16);
        Self {
            senders,
            receivers,
            dead_tx,
            dead_rx,
            stats: Arc::new(Stats::new("p")),
            stop: CancellationToken::new(),
        }
    }

    /// Hands `message` over and returns the receiver of its source outcome.
    async fn hand(
        &self,
        router: &Router,
        message: Message,
        unmatched: Unmatched,
    ) -> std_mpsc::Receiver<Outcome> {
        let (tx, rx) = std_mpsc::channel();
        let ack = Ack::new(move |o| {
            tx.send(o).ok();
        });
        let rejections = Rejections::DeadLetterSink(self.dead_tx.clone());
        let out = Outlets {
            pipeline: "p",
            sinks: &self.senders,
            rejections: &rejections,
            unmatched,
            stop: &self.stop,
            stats: &self.stats,
        };
        hand_over(message, ack, None, router, &out).await.unwrap();
        rx
    }

    /// Everything waiting for each sink.
    fn taken(&mut self) -> Vec<Vec<Delivery>> {
        self.receivers
            .iter_mut()
            .map(|rx| std::iter::from_fn(|| rx.try_recv().ok()).collect())
            .collect()
    }
}

#[tokio::test]
async fn one_ack_is_split_once_per_sink_and_completes_when_the_last_one_is_done() {
    let router = router("");
    let mut h = Harness::new();
    let outcome = h
        .hand(&router, Message::from_payload("{}"), Unmatched::DeadLetter)
        .await;
    let mut taken: Vec<Delivery> = h.taken().into_iter().flatten().collect();
    assert_eq!(taken.len(), 3, "one delivery per sink");
    let last = taken.pop().unwrap();
    for d in taken {
        d.ack.delivered();
    }
    assert!(outcome.try_recv().is_err(), "one sink still writing");
    last.ack.delivered();
    assert_eq!(outcome.try_recv(), Ok(Outcome::Delivered));
    assert!(outcome.try_recv().is_err(), "exactly once");
}

#[tokio::test]
async fn messages_a_step_makes_share_the_ack_and_are_numbered_by_part() {
    let routes = r#"
[[pipeline.step]]
map = '.items[]'
[[pipeline.route]]
when = '.big'
sinks = ["mail", "crm"]
[[pipeline.route]]
otherwise = true
sinks = ["db"]
"#;
    let router = router(routes);
    let mut h = Harness::new();
    let message = Message::from_payload(r#"{"items":[{"big":true},{"big":false}]}"#);
    let outcome = h.hand(&router, message, Unmatched::DeadLetter).await;
    let taken = h.taken();
    let counts: Vec<usize> = taken.iter().map(Vec::len).collect();
    assert_eq!(
        counts,
        [1, 1, 1],
        "db gets the small item, mail and crm the big one"
    );
    assert_eq!(taken[0][0].message.part, 1);
    assert_eq!(taken[1][0].message.part, 0);
    let mut all: Vec<Delivery> = taken.into_iter().flatten().collect();
    all.pop().unwrap().ack.complete(Outcome::Failed);
    for d in all {
        d.ack.delivered();
    }
    assert_eq!(
        outcome.try_recv(),
        Ok(Outcome::Failed),
        "one failed part fails the source message"
    );
}

#[tokio::test]
async fn an_unmatched_message_goes_to_the_dead_letter_sink_or_is_dropped_on_purpose() {
    let routes = "[[pipeline.route]]\nwhen = '.a'\nsinks = [\"db\", \"mail\", \"crm\"]";
    let router = router(routes);
    let mut h = Harness::new();
    let outcome = h
        .hand(&router, Message::from_payload("{}"), Unmatched::DeadLetter)
        .await;
    let dead = h.dead_rx.try_recv().expect("dead-lettered");
    let reason = dead.message.headers.get("ferry.error").unwrap().clone();
    assert_eq!(&reason[..], b"no route matched the message");
    assert!(
        outcome.try_recv().is_err(),
        "until the dead letter is written"
    );
    dead.ack.delivered();
    assert_eq!(outcome.try_recv(), Ok(Outcome::Delivered));

    let outcome = h
        .hand(&router, Message::from_payload("{}"), Unmatched::Drop)
        .await;
    assert_eq!(outcome.try_recv(), Ok(Outcome::Delivered));
    assert!(h.dead_rx.try_recv().is_err());
    assert_eq!(h.stats.dropped.get(), 1);
}

#[tokio::test]
async fn a_filtered_message_is_acknowledged_at_once_and_reaches_no_sink() {
    let router = router("[[pipeline.step]]\nfilter = '.keep'");
    let mut h = Harness::new();
    let outcome = h
        .hand(&router, Message::from_payload("{}"), Unmatched::DeadLetter)
        .await;
    assert_eq!(outcome.try_recv(), Ok(Outcome::Delivered));
    assert!(h.taken().iter().all(Vec::is_empty));
}

#[tokio::test]
async fn an_echo_reaches_only_the_sync_sink_and_counts_as_dropped() {
    let router = router("");
    let mut h = Harness::new();
    let mut echo = Message::from_payload("{}");
    echo.headers.set(ORIGIN_HEADER, "site-a");
    let outcome = h.hand(&router, echo, Unmatched::DeadLetter).await;
    let taken = h.taken();
    let counts: Vec<usize> = taken.iter().map(Vec::len).collect();
    assert_eq!(counts, [1, 0, 0]);
    assert!(taken[0][0].message.echo);
    assert_eq!(h.stats.dropped.get(), 1);
    for d in taken.into_iter().flatten() {
        d.ack.delivered();
    }
    assert_eq!(outcome.try_recv(), Ok(Outcome::Delivered));
}
